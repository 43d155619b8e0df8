//! Lambda events as API Gateway and Lambda function URLs send them.
//!
//! One [`EventSpec`] describes an HTTP request; [`rest_v1`], [`http_v2`] and
//! [`function_url`] turn it into the JSON event each front door delivers:
//! - [`rest_v1`]: API Gateway REST API, Lambda proxy integration (payload 1.0), stage `prod`.
//! - [`http_v2`]: API Gateway HTTP API, payload format 2.0, stage `$default`.
//! - [`function_url`]: Lambda function URL (payload 2.0 shape, no `pathParameters`).
//!
//! The shapes follow the events AWS documents and the fixtures of `aws_lambda_events`,
//! and `lambda_http::request::from_str` parses every one of them. Request ids and
//! times are fresh for each event.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD as BASE64_URL};
use serde_json::{Map, Value, json};

/// Account that owns the API and the function.
pub const ACCOUNT_ID: &str = "123456789012";
pub const REGION: &str = "us-east-1";
/// REST API stage; lambda_http puts it in front of the path (`/prod/v1/...`).
pub const REST_STAGE: &str = "prod";
/// API id of both API Gateway APIs (10 lowercase letters and digits, like a real one).
pub const API_ID: &str = "a1b2c3d4e5";
/// Function URL id (32 lowercase letters and digits, like a real one).
pub const FUNCTION_URL_ID: &str = "k4jx7qe2rhwlmzyb3dgfnca5osvt6pui";
/// Client address shown in the events (TEST-NET-3, documentation only; nothing connects to it).
pub const SOURCE_IP: &str = "203.0.113.10";
pub const USER_AGENT: &str = "jit-guard-tests";

/// Who calls, and how the front door authenticated them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No authentication (an open route or a function URL with auth type NONE).
    Anonymous,
    /// SigV4-signed by an IAM principal with this ARN
    /// (`arn:aws:iam::ACCOUNT:user/NAME` or `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`).
    IamUser(String),
    /// A REST API key with this key id (REST APIs only).
    ApiKey(String),
    /// A JWT with this `sub` claim: a Cognito user pool authorizer (REST) or a JWT
    /// authorizer (HTTP API).
    JwtSubject(String),
    /// A Lambda authorizer that returned this principal id.
    LambdaAuthorizerPrincipal(String),
}

/// One HTTP request, before a front door turns it into an event.
#[derive(Debug, Clone)]
pub struct EventSpec {
    pub method: &'static str,
    /// Path without the stage, e.g. `/v1/projects/abcdefghijklmnopqrst`.
    pub path: String,
    /// Route parameters in route order, e.g. `[("ref", "abcdefghijklmnopqrst")]`. The route
    /// template (`resource`, `routeKey`) is the path with each parameter's value replaced
    /// by `{name}`. Function URLs have no routes and ignore these.
    pub path_parameters: Option<Vec<(String, String)>>,
    /// Decoded query pairs; a name may repeat.
    pub query: Option<Vec<(String, String)>>,
    pub body: Option<String>,
    /// Deliver `body` base64-encoded with `isBase64Encoded: true`, as API Gateway does for
    /// binary media types; the function decodes it back to the same bytes.
    pub base64: bool,
    pub caller: Caller,
    /// Extra headers; they replace default headers of the same name (any case),
    /// and a name may repeat.
    pub headers: Vec<(String, String)>,
}

impl EventSpec {
    /// Creates a request with no parameters, query, body or extra headers, from an anonymous caller.
    pub fn new(method: &'static str, path: impl Into<String>) -> EventSpec {
        EventSpec {
            method,
            path: path.into(),
            path_parameters: None,
            query: None,
            body: None,
            base64: false,
            caller: Caller::Anonymous,
            headers: Vec::new(),
        }
    }

    pub fn path_parameter(mut self, name: &str, value: &str) -> EventSpec {
        self.path_parameters
            .get_or_insert_with(Vec::new)
            .push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn query_parameter(mut self, name: &str, value: &str) -> EventSpec {
        self.query
            .get_or_insert_with(Vec::new)
            .push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<String>) -> EventSpec {
        self.body = Some(body.into());
        self
    }

    /// Sets the body to compact JSON (the default `Content-Type` with a body is `application/json`).
    pub fn json_body(self, body: &Value) -> EventSpec {
        self.body(body.to_string())
    }

    pub fn base64(mut self, base64: bool) -> EventSpec {
        self.base64 = base64;
        self
    }

    pub fn caller(mut self, caller: Caller) -> EventSpec {
        self.caller = caller;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> EventSpec {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Returns the route template: the path with each path parameter's value replaced by `{name}`.
    pub fn route(&self) -> String {
        let Some(parameters) = &self.path_parameters else {
            return self.path.clone();
        };
        self.path
            .split('/')
            .map(
                |segment| match parameters.iter().find(|(_, value)| value == segment) {
                    Some((name, _)) if !segment.is_empty() => format!("{{{name}}}"),
                    _ => segment.to_owned(),
                },
            )
            .collect::<Vec<_>>()
            .join("/")
    }

    fn event_body(&self) -> Value {
        match &self.body {
            None => Value::Null,
            Some(body) if self.base64 => Value::String(BASE64.encode(body)),
            Some(body) => Value::String(body.clone()),
        }
    }
}

/// Builds an API Gateway REST API proxy event (payload 1.0), stage [`REST_STAGE`].
///
/// The caller lands where API Gateway puts it: IAM in `requestContext.identity`
/// (`userArn`, `user`, `caller`, `accountId`, `accessKey`), an API key in
/// `identity.apiKeyId` (and `apiKey`), a JWT subject in `requestContext.authorizer.claims.sub`
/// (Cognito user pool authorizer), a Lambda authorizer's principal in
/// `requestContext.authorizer.principalId`.
pub fn rest_v1(spec: &EventSpec) -> Value {
    let now = chrono::Utc::now();
    let domain = format!("{API_ID}.execute-api.{REGION}.amazonaws.com");
    let resource = spec.route();

    let mut headers = vec![
        ("Accept".to_owned(), "application/json".to_owned()),
        ("Host".to_owned(), domain.clone()),
        ("User-Agent".to_owned(), USER_AGENT.to_owned()),
        ("X-Amzn-Trace-Id".to_owned(), trace_header(now)),
        ("X-Forwarded-For".to_owned(), SOURCE_IP.to_owned()),
        ("X-Forwarded-Port".to_owned(), "443".to_owned()),
        ("X-Forwarded-Proto".to_owned(), "https".to_owned()),
    ];
    if spec.body.is_some() {
        headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
    }

    let mut identity = json!({
        "cognitoIdentityPoolId": null,
        "accountId": null,
        "cognitoIdentityId": null,
        "caller": null,
        "sourceIp": SOURCE_IP,
        "principalOrgId": null,
        "accessKey": null,
        "cognitoAuthenticationType": null,
        "cognitoAuthenticationProvider": null,
        "userArn": null,
        "userAgent": USER_AGENT,
        "user": null,
        "apiKey": null,
        "apiKeyId": null,
    });
    let mut authorizer = None;
    match &spec.caller {
        Caller::Anonymous => {}
        Caller::IamUser(arn) => {
            let principal = IamPrincipal::from_arn(arn);
            identity["accountId"] = json!(principal.account_id);
            identity["caller"] = json!(principal.user_id);
            identity["user"] = json!(principal.user_id);
            identity["userArn"] = json!(arn);
            identity["accessKey"] = json!(principal.access_key);
            headers.push((
                "Authorization".to_owned(),
                principal.authorization(now, "execute-api"),
            ));
            headers.push((
                "X-Amz-Date".to_owned(),
                now.format("%Y%m%dT%H%M%SZ").to_string(),
            ));
        }
        Caller::ApiKey(key_id) => {
            let key = api_key_value(key_id);
            identity["apiKey"] = json!(key);
            identity["apiKeyId"] = json!(key_id);
            headers.push(("x-api-key".to_owned(), key));
        }
        Caller::JwtSubject(subject) => {
            let claims = jwt_claims(subject, now);
            // A Cognito user pool authorizer reads the raw token from Authorization.
            headers.push(("Authorization".to_owned(), unsigned_jwt(&claims)));
            authorizer = Some(json!({ "claims": claims }));
        }
        Caller::LambdaAuthorizerPrincipal(principal) => {
            headers.push((
                "Authorization".to_owned(),
                format!("Bearer token-for-{principal}"),
            ));
            authorizer = Some(json!({ "principalId": principal, "integrationLatency": 0 }));
        }
    }
    let headers = merge_headers(headers, &spec.headers);

    let mut request_context = json!({
        "resourceId": "x1y2z3",
        "resourcePath": resource,
        "httpMethod": spec.method,
        "extendedRequestId": extended_request_id(),
        "requestTime": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
        "path": format!("/{REST_STAGE}{}", spec.path),
        "accountId": ACCOUNT_ID,
        "protocol": "HTTP/1.1",
        "stage": REST_STAGE,
        "domainPrefix": API_ID,
        "requestTimeEpoch": now.timestamp_millis(),
        "requestId": uuid::Uuid::new_v4().to_string(),
        "identity": identity,
        "domainName": domain,
        "apiId": API_ID,
    });
    if let Some(authorizer) = authorizer {
        request_context["authorizer"] = authorizer;
    }

    json!({
        "resource": resource,
        "path": spec.path,
        "httpMethod": spec.method,
        "headers": single_value_map(&headers),
        "multiValueHeaders": multi_value_map(&headers),
        "queryStringParameters": spec.query.as_ref().map(|query| single_value_map(query)),
        "multiValueQueryStringParameters": spec.query.as_ref().map(|query| multi_value_map(query)),
        "pathParameters": spec.path_parameters.as_ref().map(|parameters| single_value_map(parameters)),
        "stageVariables": null,
        "requestContext": request_context,
        "body": spec.event_body(),
        "isBase64Encoded": spec.base64 && spec.body.is_some(),
    })
}

/// Builds an API Gateway HTTP API event, payload format 2.0, stage `$default`.
///
/// IAM lands in `requestContext.authorizer.iam` (`userArn`, ...), a JWT subject in
/// `requestContext.authorizer.jwt.claims.sub`, a Lambda authorizer's principal in
/// `requestContext.authorizer.lambda.principalId` (its context, which HTTP APIs pass whole).
///
/// # Panics
/// For [`Caller::ApiKey`]: HTTP APIs have no API keys.
pub fn http_v2(spec: &EventSpec) -> Value {
    let domain = format!("{API_ID}.execute-api.{REGION}.amazonaws.com");
    let authorizer = match &spec.caller {
        Caller::Anonymous => None,
        Caller::IamUser(arn) => {
            Some(json!({ "iam": IamPrincipal::from_arn(arn).v2_description(arn) }))
        }
        Caller::ApiKey(key_id) => panic!(
            "Caller::ApiKey({key_id}) cannot reach an HTTP API: HTTP APIs have no API keys; use rest_v1"
        ),
        Caller::JwtSubject(subject) => Some(json!({
            "jwt": { "claims": jwt_claims(subject, chrono::Utc::now()), "scopes": null }
        })),
        Caller::LambdaAuthorizerPrincipal(principal) => {
            Some(json!({ "lambda": { "principalId": principal } }))
        }
    };
    let route_key = format!("{} {}", spec.method, spec.route());
    payload_v2(
        spec, &domain, API_ID, &route_key, ACCOUNT_ID, authorizer, true,
    )
}

/// Builds a Lambda function URL event (payload 2.0 shape).
///
/// `requestContext.domainName` is `<url-id>.lambda-url.us-east-1.on.aws`; there is never a
/// `pathParameters`. An IAM caller lands in `requestContext.authorizer.iam` (auth type
/// `AWS_IAM`); an anonymous caller has no authorizer and account `anonymous` (auth type `NONE`).
///
/// # Panics
/// For any other caller: function URLs support only `AWS_IAM` and `NONE` auth.
pub fn function_url(spec: &EventSpec) -> Value {
    let domain = format!("{FUNCTION_URL_ID}.lambda-url.{REGION}.on.aws");
    let (authorizer, account_id) = match &spec.caller {
        Caller::Anonymous => (None, "anonymous".to_owned()),
        Caller::IamUser(arn) => {
            let principal = IamPrincipal::from_arn(arn);
            let iam = principal.v2_description(arn);
            (Some(json!({ "iam": iam })), principal.account_id)
        }
        other => panic!(
            "{other:?} cannot reach a function URL: function URLs support only AWS_IAM \
             (Caller::IamUser) and NONE (Caller::Anonymous) auth"
        ),
    };
    payload_v2(
        spec,
        &domain,
        FUNCTION_URL_ID,
        "$default",
        &account_id,
        authorizer,
        false,
    )
}

/// Builds the payload 2.0 event shared by HTTP APIs and function URLs.
fn payload_v2(
    spec: &EventSpec,
    domain: &str,
    api_id: &str,
    route_key: &str,
    account_id: &str,
    authorizer: Option<Value>,
    with_path_parameters: bool,
) -> Value {
    let now = chrono::Utc::now();
    let mut headers = vec![
        ("accept".to_owned(), "application/json".to_owned()),
        ("host".to_owned(), domain.to_owned()),
        ("user-agent".to_owned(), USER_AGENT.to_owned()),
        ("x-amzn-trace-id".to_owned(), trace_header(now)),
        ("x-forwarded-for".to_owned(), SOURCE_IP.to_owned()),
        ("x-forwarded-port".to_owned(), "443".to_owned()),
        ("x-forwarded-proto".to_owned(), "https".to_owned()),
    ];
    if spec.body.is_some() {
        headers.push(("content-type".to_owned(), "application/json".to_owned()));
    }
    match &spec.caller {
        Caller::IamUser(arn) => {
            let service = if with_path_parameters {
                "execute-api"
            } else {
                "lambda"
            };
            headers.push((
                "authorization".to_owned(),
                IamPrincipal::from_arn(arn).authorization(now, service),
            ));
            headers.push((
                "x-amz-date".to_owned(),
                now.format("%Y%m%dT%H%M%SZ").to_string(),
            ));
        }
        Caller::JwtSubject(subject) => {
            let token = unsigned_jwt(&jwt_claims(subject, now));
            headers.push(("authorization".to_owned(), format!("Bearer {token}")));
        }
        Caller::LambdaAuthorizerPrincipal(principal) => {
            headers.push((
                "authorization".to_owned(),
                format!("Bearer token-for-{principal}"),
            ));
        }
        Caller::Anonymous | Caller::ApiKey(_) => {}
    }
    // Payload 2.0 has lowercase header names, repeated values joined with commas,
    // and cookies moved out of the headers into `cookies`.
    let lowered: Vec<(String, String)> = spec
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
        .collect();
    let merged = merge_headers(headers, &lowered);
    let cookies: Vec<String> = merged
        .iter()
        .filter(|(name, _)| name == "cookie")
        .flat_map(|(_, value)| value.split(';').map(|cookie| cookie.trim().to_owned()))
        .filter(|cookie| !cookie.is_empty())
        .collect();
    let without_cookies: Vec<(String, String)> = merged
        .into_iter()
        .filter(|(name, _)| name != "cookie")
        .collect();

    let mut request_context = json!({
        "accountId": account_id,
        "apiId": api_id,
        "domainName": domain,
        "domainPrefix": api_id,
        "http": {
            "method": spec.method,
            "path": spec.path,
            "protocol": "HTTP/1.1",
            "sourceIp": SOURCE_IP,
            "userAgent": USER_AGENT,
        },
        "requestId": uuid::Uuid::new_v4().to_string(),
        "routeKey": route_key,
        "stage": "$default",
        "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
        "timeEpoch": now.timestamp_millis(),
    });
    if let Some(authorizer) = authorizer {
        request_context["authorizer"] = authorizer;
    }

    let mut event = Map::new();
    event.insert("version".to_owned(), json!("2.0"));
    event.insert("routeKey".to_owned(), json!(route_key));
    event.insert("rawPath".to_owned(), json!(spec.path));
    event.insert(
        "rawQueryString".to_owned(),
        json!(raw_query_string(spec.query.as_deref())),
    );
    if !cookies.is_empty() {
        event.insert("cookies".to_owned(), json!(cookies));
    }
    event.insert("headers".to_owned(), joined_value_map(&without_cookies));
    if let Some(query) = &spec.query {
        event.insert("queryStringParameters".to_owned(), joined_value_map(query));
    }
    if with_path_parameters && let Some(parameters) = &spec.path_parameters {
        event.insert("pathParameters".to_owned(), single_value_map(parameters));
    }
    event.insert("requestContext".to_owned(), request_context);
    if spec.body.is_some() {
        event.insert("body".to_owned(), spec.event_body());
    }
    event.insert(
        "isBase64Encoded".to_owned(),
        json!(spec.base64 && spec.body.is_some()),
    );
    Value::Object(event)
}

/// What API Gateway and Lambda report about an IAM caller, made up from its ARN.
struct IamPrincipal {
    account_id: String,
    /// `AIDA...` for a user, `AROA...:session` for an assumed role, as in `identity.user`.
    user_id: String,
    access_key: String,
}

impl IamPrincipal {
    fn from_arn(arn: &str) -> IamPrincipal {
        let account_id = arn
            .split(':')
            .nth(4)
            .filter(|account| account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or(ACCOUNT_ID)
            .to_owned();
        // Stable ids derived from the ARN, so one ARN always gets the same ids.
        let suffix = format!("{:016X}", fnv1a(arn.as_bytes()));
        let user_id = match arn.split_once(":assumed-role/") {
            Some((_, role_and_session)) => {
                let session = role_and_session.rsplit('/').next().unwrap_or("session");
                format!("AROA{suffix}:{session}")
            }
            None => format!("AIDA{suffix}"),
        };
        IamPrincipal {
            account_id,
            user_id,
            access_key: format!("ASIA{suffix}"),
        }
    }

    /// `requestContext.authorizer.iam` of payload 2.0.
    fn v2_description(&self, arn: &str) -> Value {
        json!({
            "accessKey": self.access_key,
            "accountId": self.account_id,
            "callerId": self.user_id,
            "cognitoIdentity": null,
            "principalOrgId": null,
            "userArn": arn,
            "userId": self.user_id,
        })
    }

    /// Formats a SigV4 `Authorization` header as the client sent it. The signature is a
    /// placeholder, because the front door checks it before the function runs.
    fn authorization(&self, now: chrono::DateTime<chrono::Utc>, service: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{}/{REGION}/{service}/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature={}",
            self.access_key,
            now.format("%Y%m%d"),
            "0".repeat(64)
        )
    }
}

/// Builds the claims a JWT authorizer passes on. HTTP APIs and Cognito deliver every claim as a string.
fn jwt_claims(subject: &str, now: chrono::DateTime<chrono::Utc>) -> Value {
    let issued = now.timestamp();
    json!({
        "sub": subject,
        "iss": format!("https://cognito-idp.{REGION}.amazonaws.com/{REGION}_jitguard"),
        "client_id": "jitguardtestsclient",
        "token_use": "access",
        "scope": "openid",
        "iat": issued.to_string(),
        "exp": (issued + 3600).to_string(),
    })
}

/// Encodes a JWT with the given claims and a placeholder signature, because the authorizer checks it.
fn unsigned_jwt(claims: &Value) -> String {
    let header = json!({ "alg": "RS256", "kid": "jit-guard-tests", "typ": "JWT" });
    format!(
        "{}.{}.{}",
        BASE64_URL.encode(header.to_string()),
        BASE64_URL.encode(claims.to_string()),
        BASE64_URL.encode("not-signed")
    )
}

/// Derives a key value for a key id, because REST events carry both.
fn api_key_value(key_id: &str) -> String {
    format!("{key_id}-value-{:016x}", fnv1a(key_id.as_bytes()))
}

/// Creates the X-Ray header API Gateway adds: `Root=1-<epoch seconds hex>-<24 hex>`.
fn trace_header(now: chrono::DateTime<chrono::Utc>) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("Root=1-{:08x}-{}", now.timestamp(), &random[..24])
}

fn extended_request_id() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{}=", &random[..15])
}

/// Merges headers, defaults first and then `extra`. A name in `extra` (any case) drops the defaults of that name.
fn merge_headers(
    defaults: Vec<(String, String)>,
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    let mut merged: Vec<(String, String)> = defaults
        .into_iter()
        .filter(|(name, _)| {
            !extra
                .iter()
                .any(|(given, _)| given.eq_ignore_ascii_case(name))
        })
        .collect();
    merged.extend(extra.iter().cloned());
    merged
}

/// Collects `{name: last value}`, as in payload 1.0 `headers` and `queryStringParameters`.
fn single_value_map(pairs: &[(String, String)]) -> Value {
    let mut map = Map::new();
    for (name, value) in pairs {
        map.insert(name.clone(), json!(value));
    }
    Value::Object(map)
}

/// Collects `{name: [values]}`, as in payload 1.0 `multiValueHeaders` and `multiValueQueryStringParameters`.
fn multi_value_map(pairs: &[(String, String)]) -> Value {
    let mut map = Map::new();
    for (name, value) in pairs {
        let values = map.entry(name.clone()).or_insert_with(|| json!([]));
        values
            .as_array_mut()
            .expect("built as an array")
            .push(json!(value));
    }
    Value::Object(map)
}

/// Collects `{name: "v1,v2"}`, as in payload 2.0 `headers` and `queryStringParameters`.
fn joined_value_map(pairs: &[(String, String)]) -> Value {
    let mut map = Map::new();
    for (name, value) in pairs {
        match map.get_mut(name) {
            Some(Value::String(joined)) => {
                joined.push(',');
                joined.push_str(value);
            }
            _ => {
                map.insert(name.clone(), json!(value));
            }
        }
    }
    Value::Object(map)
}

/// Encodes the query as the client sent it: percent-encoded, in order.
fn raw_query_string(query: Option<&[(String, String)]>) -> String {
    query
        .unwrap_or_default()
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Hashes with 64-bit FNV-1a, a small stable hash for made-up ids.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Builds the EventBridge scheduled event that starts the sweep, as the
/// SAM template's schedule sends it.
pub fn scheduled() -> Value {
    json!({
        "version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": ACCOUNT_ID, "time": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "region": REGION, "resources": [format!("arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/jit-guard-sweep")], "detail": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::request::RequestContext;
    use lambda_http::{Body, RequestExt};
    use std::path::PathBuf;

    const PROJECT_REF: &str = "abcdefghijklmnopqrst";
    const IAM_ARN: &str = "arn:aws:iam::123456789012:user/jit-operator";

    fn parse(event: &Value) -> lambda_http::Request {
        lambda_http::request::from_str(&event.to_string())
            .unwrap_or_else(|error| panic!("lambda_http rejected the event ({error}): {event:#}"))
    }

    fn body_text(request: &lambda_http::Request) -> String {
        match request.body() {
            Body::Empty => String::new(),
            Body::Text(text) => text.clone(),
            Body::Binary(bytes) => String::from_utf8(bytes.clone()).expect("UTF-8 test bodies"),
            _ => panic!("unknown lambda_http body kind"),
        }
    }

    fn update_jit_access_spec() -> EventSpec {
        EventSpec::new("PUT", format!("/v1/projects/{PROJECT_REF}/database/jit"))
            .path_parameter("ref", PROJECT_REF)
            // A literal, so the sample keeps the field order a client would send.
            .body(
                r#"{"user_id":"55555555-5555-4555-8555-555555555555","roles":[{"role":"jit_readonly","expires_at":4102444800,"allowed_networks":{"allowed_cidrs":[{"cidr":"10.20.0.0/16"}]}}]}"#,
            )
            .caller(Caller::IamUser("arn:aws:iam::123456789012:user/jit-admin".to_owned()))
    }

    fn get_project_spec() -> EventSpec {
        EventSpec::new("GET", format!("/v1/projects/{PROJECT_REF}"))
            .path_parameter("ref", PROJECT_REF)
            .caller(Caller::IamUser(IAM_ARN.to_owned()))
    }

    /// Checks what every format must deliver: method, path, body, query and headers.
    fn assert_request_matches(spec: &EventSpec, event: &Value, stage_prefix: &str) {
        let request = parse(event);
        assert_eq!(request.method().as_str(), spec.method);
        assert_eq!(request.raw_http_path(), spec.path);
        assert_eq!(request.uri().path(), format!("{stage_prefix}{}", spec.path));
        assert_eq!(body_text(&request), spec.body.clone().unwrap_or_default());
        let query = request.query_string_parameters();
        for (name, value) in spec.query.iter().flatten() {
            let all = query.all(name).unwrap_or_default();
            assert!(
                all.contains(&value.as_str()),
                "query {name}={value} missing, got {all:?}"
            );
        }
        for (name, value) in &spec.headers {
            if name.eq_ignore_ascii_case("cookie") {
                continue;
            }
            let got: Vec<_> = request.headers().get_all(name.as_str()).iter().collect();
            assert!(
                got.iter()
                    .any(|v| v.to_str().unwrap().split(',').any(|part| part == value)),
                "header {name}: {value} missing, got {got:?}"
            );
        }
    }

    fn full_spec(caller: Caller) -> EventSpec {
        EventSpec::new("POST", format!("/v1/projects/{PROJECT_REF}/database/jit"))
            .path_parameter("ref", PROJECT_REF)
            .query_parameter("role", "jit readonly")
            .query_parameter("role", "jit&admin")
            .query_parameter("limit", "10")
            .json_body(&json!({ "user_id": "u1" }))
            .header("X-Request-Source", "unit-test")
            .caller(caller)
    }

    /// Derives the caller from lambda_http's request context, as the bundle did
    /// before it decoded events itself: the reference for the comparison below.
    fn lambda_http_caller(request: &lambda_http::Request) -> (String, Option<String>) {
        let non_empty = |value: Option<String>| value.filter(|text| !text.is_empty());
        match request.request_context_ref() {
            Some(RequestContext::ApiGatewayV1(context)) => {
                let authorizer = &context.authorizer.fields;
                let principal = authorizer.get("principalId").and_then(|value| value.as_str());
                let subject = authorizer.get("claims").and_then(|claims| claims.get("sub")).and_then(|sub| sub.as_str());
                let caller = non_empty(context.identity.user_arn.clone())
                    .or_else(|| principal.map(|principal| format!("authorizer:{principal}")))
                    .or_else(|| subject.map(|subject| format!("jwt:{subject}")))
                    .or_else(|| non_empty(context.identity.api_key_id.clone()).map(|key| format!("api-key:{key}")));
                (caller.unwrap_or_else(|| "anonymous".to_owned()), context.request_id.clone())
            }
            Some(RequestContext::ApiGatewayV2(context)) => {
                let caller = context.authorizer.as_ref().and_then(|authorizer| {
                    let iam = authorizer.iam.as_ref().and_then(|iam| non_empty(iam.user_arn.clone()));
                    let principal = authorizer
                        .fields
                        .get("principalId")
                        .and_then(|value| value.as_str())
                        .map(|principal| format!("authorizer:{principal}"));
                    let jwt = authorizer.jwt.as_ref().and_then(|jwt| jwt.claims.get("sub")).map(|sub| format!("jwt:{sub}"));
                    iam.or(principal).or(jwt)
                });
                (caller.unwrap_or_else(|| "anonymous".to_owned()), context.request_id.clone())
            }
            other => panic!("not an API Gateway context: {other:?}"),
        }
    }

    /// The bundle decodes only the fields it reads. On every kind of event
    /// and caller, it must read what lambda_http reads from the whole event.
    #[test]
    fn event_decoding_matches_lambda_http() {
        use jit_guard::event::HttpEvent;
        use jit_guard::request::{Route, read_call};

        let route = Route { method: "POST", template: "/v1/projects/{ref}/database/jit", mutating: true };
        let callers = [
            Caller::Anonymous,
            Caller::IamUser(IAM_ARN.to_owned()),
            Caller::IamUser("arn:aws:sts::210987654321:assumed-role/JitOperator/alice".to_owned()),
            Caller::ApiKey("k7yq2w1abc".to_owned()),
            Caller::JwtSubject("sub-123".to_owned()),
            Caller::LambdaAuthorizerPrincipal("principal-9".to_owned()),
        ];
        let mut compared = 0;
        for caller in callers {
            for (dry_run, signature, base64) in
                [(None, None, false), (Some("true"), Some("t=1,v1=ab"), true), (Some("false"), Some("t=2,v1=cd"), false)]
            {
                let mut spec = full_spec(caller.clone()).base64(base64);
                if let Some(value) = dry_run {
                    spec = spec.query_parameter("dry_run", value);
                }
                if let Some(value) = signature {
                    spec = spec.header("Persona-Signature", value);
                }
                let mut events = vec![rest_v1(&spec)];
                if caller != Caller::ApiKey("k7yq2w1abc".to_owned()) {
                    events.push(http_v2(&spec));
                }
                if matches!(caller, Caller::Anonymous | Caller::IamUser(_)) {
                    events.push(function_url(&spec));
                }
                // `cargo lambda watch` sends payload 2.0 events with a top-level `httpMethod` too.
                let mut watch = function_url(&EventSpec { caller: Caller::Anonymous, ..spec.clone() });
                watch["httpMethod"] = json!(spec.method);
                events.push(watch);
                for event in events {
                    let reference = parse(&event);
                    let call = read_call(serde_json::from_value::<HttpEvent>(event.clone()).unwrap(), route, None)
                        .unwrap_or_else(|error| panic!("{error}: {event:#}"));
                    let (caller, api_request_id) = lambda_http_caller(&reference);
                    assert_eq!(call.caller.as_str(), caller, "{event:#}");
                    assert_eq!(call.api_request_id, api_request_id);
                    assert_eq!(call.path_parameter("ref"), PROJECT_REF);
                    assert_eq!(String::from_utf8(call.body.clone()).unwrap(), body_text(&reference));
                    let reference_dry_run = reference.query_string_parameters_ref().and_then(|query| query.first("dry_run"));
                    assert_eq!(call.dry_run, reference_dry_run == Some("true"));
                    let reference_signature = reference.headers().get("persona-signature").map(|value| value.to_str().unwrap());
                    assert_eq!(call.signature.as_deref(), reference_signature);
                    assert_eq!(call.signature.as_deref(), signature);
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 3 * (6 + 5 + 3 + 6));
    }

    /// `cargo lambda watch` reads a function's response as aws_lambda_events'
    /// `ApiGatewayV2httpResponse`. These types follow API Gateway's response shapes.
    #[test]
    fn responses_decode_as_aws_types() {
        use jit_guard::event::{HttpResponse, PayloadVersion};
        use lambda_http::aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayV2httpResponse};

        let response = HttpResponse::json(429, "application/problem+json", r#"{"code":"x"}"#.into())
            .with_header("retry-after", "17".into());
        let rest = serde_json::to_value(response.clone().for_payload(Some(PayloadVersion::V1))).unwrap();
        let rest: ApiGatewayProxyResponse = serde_json::from_value(rest).unwrap();
        assert_eq!(rest.status_code, 429);
        assert_eq!(rest.headers["retry-after"], "17");

        let v2 = serde_json::to_value(response.for_payload(Some(PayloadVersion::V2))).unwrap();
        let http_api: ApiGatewayV2httpResponse = serde_json::from_value(v2).unwrap();
        assert_eq!(http_api.headers["content-type"], "application/problem+json");
        assert_eq!(http_api.body, Some(lambda_http::Body::Text(r#"{"code":"x"}"#.into())));
    }

    #[test]
    fn rest_v1_parses_to_given_request() {
        for caller in [
            Caller::Anonymous,
            Caller::IamUser(IAM_ARN.to_owned()),
            Caller::ApiKey("k7yq2w1abc".to_owned()),
            Caller::JwtSubject("sub-123".to_owned()),
            Caller::LambdaAuthorizerPrincipal("principal-9".to_owned()),
        ] {
            let spec = full_spec(caller);
            let event = rest_v1(&spec);
            assert_request_matches(&spec, &event, "/prod");
            assert_eq!(event["resource"], "/v1/projects/{ref}/database/jit");
            assert_eq!(event["requestContext"]["stage"], "prod");
            assert!(
                event["requestContext"]["requestId"]
                    .as_str()
                    .is_some_and(|id| !id.is_empty())
            );
            let request = parse(&event);
            assert_eq!(request.path_parameters().first("ref"), Some(PROJECT_REF));
            assert!(matches!(
                request.request_context(),
                RequestContext::ApiGatewayV1(_)
            ));
        }
    }

    #[test]
    fn rest_v1_caller_placement() {
        let iam = rest_v1(&full_spec(Caller::IamUser(IAM_ARN.to_owned())));
        let RequestContext::ApiGatewayV1(context) = parse(&iam).request_context() else {
            panic!("not a REST event");
        };
        assert_eq!(context.identity.user_arn.as_deref(), Some(IAM_ARN));
        assert_eq!(context.identity.account_id.as_deref(), Some("123456789012"));
        assert!(
            context
                .identity
                .user
                .as_deref()
                .unwrap()
                .starts_with("AIDA")
        );

        let key = rest_v1(&full_spec(Caller::ApiKey("k7yq2w1abc".to_owned())));
        let RequestContext::ApiGatewayV1(context) = parse(&key).request_context() else {
            panic!("not a REST event");
        };
        assert_eq!(context.identity.api_key_id.as_deref(), Some("k7yq2w1abc"));
        assert_eq!(context.identity.user_arn, None);

        let jwt = rest_v1(&full_spec(Caller::JwtSubject("sub-123".to_owned())));
        let RequestContext::ApiGatewayV1(context) = parse(&jwt).request_context() else {
            panic!("not a REST event");
        };
        assert_eq!(context.authorizer.fields["claims"]["sub"], "sub-123");

        let lambda = rest_v1(&full_spec(Caller::LambdaAuthorizerPrincipal(
            "principal-9".to_owned(),
        )));
        let RequestContext::ApiGatewayV1(context) = parse(&lambda).request_context() else {
            panic!("not a REST event");
        };
        assert_eq!(context.authorizer.fields["principalId"], "principal-9");

        let anonymous = rest_v1(&full_spec(Caller::Anonymous));
        assert_eq!(
            anonymous["requestContext"]["identity"]["userArn"],
            Value::Null
        );
        assert!(anonymous["requestContext"].get("authorizer").is_none());
    }

    #[test]
    fn http_v2_parses_to_given_request() {
        for caller in [
            Caller::Anonymous,
            Caller::IamUser(IAM_ARN.to_owned()),
            Caller::JwtSubject("sub-123".to_owned()),
            Caller::LambdaAuthorizerPrincipal("principal-9".to_owned()),
        ] {
            let spec = full_spec(caller);
            let event = http_v2(&spec);
            assert_request_matches(&spec, &event, "");
            assert_eq!(event["routeKey"], "POST /v1/projects/{ref}/database/jit");
            assert_eq!(
                event["rawQueryString"],
                "role=jit%20readonly&role=jit%26admin&limit=10"
            );
            let request = parse(&event);
            assert_eq!(request.path_parameters().first("ref"), Some(PROJECT_REF));
            assert!(matches!(
                request.request_context(),
                RequestContext::ApiGatewayV2(_)
            ));
        }
    }

    #[test]
    fn http_v2_caller_placement() {
        let context = |caller: Caller| {
            let RequestContext::ApiGatewayV2(context) =
                parse(&http_v2(&full_spec(caller))).request_context()
            else {
                panic!("not an HTTP API event");
            };
            context
        };
        let iam = context(Caller::IamUser(IAM_ARN.to_owned()))
            .authorizer
            .unwrap()
            .iam
            .unwrap();
        assert_eq!(iam.user_arn.as_deref(), Some(IAM_ARN));
        assert_eq!(iam.account_id.as_deref(), Some("123456789012"));

        let jwt = context(Caller::JwtSubject("sub-123".to_owned()))
            .authorizer
            .unwrap()
            .jwt
            .unwrap();
        assert_eq!(jwt.claims["sub"], "sub-123");

        let lambda = context(Caller::LambdaAuthorizerPrincipal("principal-9".to_owned()))
            .authorizer
            .unwrap();
        assert_eq!(lambda.fields["principalId"], "principal-9");

        assert!(context(Caller::Anonymous).authorizer.is_none());
    }

    #[test]
    #[should_panic(expected = "HTTP APIs have no API keys")]
    fn http_v2_api_key_caller_panics() {
        http_v2(&full_spec(Caller::ApiKey("k7yq2w1abc".to_owned())));
    }

    #[test]
    fn function_url_parses_to_given_request() {
        for caller in [Caller::Anonymous, Caller::IamUser(IAM_ARN.to_owned())] {
            let spec = full_spec(caller.clone());
            let event = function_url(&spec);
            assert_request_matches(&spec, &event, "");
            assert!(
                event.get("pathParameters").is_none(),
                "function URLs have no path parameters"
            );
            assert_eq!(event["routeKey"], "$default");
            let RequestContext::ApiGatewayV2(context) = parse(&event).request_context() else {
                panic!("lambda_http reads function URL events as payload 2.0");
            };
            assert_eq!(
                context.domain_name.as_deref(),
                Some("k4jx7qe2rhwlmzyb3dgfnca5osvt6pui.lambda-url.us-east-1.on.aws")
            );
            match caller {
                Caller::IamUser(arn) => {
                    assert_eq!(context.authorizer.unwrap().iam.unwrap().user_arn, Some(arn));
                    assert_eq!(context.account_id.as_deref(), Some("123456789012"));
                }
                _ => {
                    assert!(context.authorizer.is_none());
                    assert_eq!(context.account_id.as_deref(), Some("anonymous"));
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "function URLs support only AWS_IAM")]
    fn function_url_jwt_caller_panics() {
        function_url(&full_spec(Caller::JwtSubject("sub-123".to_owned())));
    }

    #[test]
    fn base64_body_decodes_to_same_bytes() {
        let spec = EventSpec::new("POST", "/v1/upload")
            .body("raw \u{e9} bytes")
            .base64(true);
        for event in [rest_v1(&spec), http_v2(&spec), function_url(&spec)] {
            assert_eq!(event["isBase64Encoded"], true);
            assert_eq!(body_text(&parse(&event)), "raw \u{e9} bytes");
        }
    }

    #[test]
    fn empty_request_parses_as_empty() {
        let spec = EventSpec::new("GET", "/v1/projects");
        for (event, prefix) in [
            (rest_v1(&spec), "/prod"),
            (http_v2(&spec), ""),
            (function_url(&spec), ""),
        ] {
            assert_request_matches(&spec, &event, prefix);
            let request = parse(&event);
            assert!(matches!(request.body(), Body::Empty));
            assert!(request.query_string_parameters().is_empty());
            assert!(request.headers().get("content-type").is_none());
        }
    }

    #[test]
    fn payload_v2_cookies_leave_headers() {
        let spec = EventSpec::new("GET", "/v1/projects").header("Cookie", "a=1; b=2");
        let event = http_v2(&spec);
        assert_eq!(event["cookies"], json!(["a=1", "b=2"]));
        assert!(event["headers"].get("cookie").is_none());
        assert_eq!(
            parse(&event).headers()["cookie"],
            "a=1; b=2",
            "lambda_http restores the header"
        );
    }

    #[test]
    fn headers_replace_defaults_any_case() {
        let spec = EventSpec::new("GET", "/v1/projects").header("user-agent", "custom/1.0");
        let rest = rest_v1(&spec);
        assert_eq!(rest["headers"]["user-agent"], "custom/1.0");
        assert!(rest["headers"].get("User-Agent").is_none());
        assert_eq!(http_v2(&spec)["headers"]["user-agent"], "custom/1.0");
    }

    #[test]
    fn rest_v1_assumed_role_user_id() {
        let arn = "arn:aws:sts::210987654321:assumed-role/JitOperator/alice";
        let event =
            rest_v1(&EventSpec::new("GET", "/v1/projects").caller(Caller::IamUser(arn.to_owned())));
        let identity = &event["requestContext"]["identity"];
        assert_eq!(identity["accountId"], "210987654321");
        assert!(identity["user"].as_str().unwrap().starts_with("AROA"));
        assert!(identity["user"].as_str().unwrap().ends_with(":alice"));
    }

    fn events_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("events")
    }

    /// Replaces what differs between two builds of the same event (ids, times, signatures).
    fn without_volatile_fields(value: &Value) -> Value {
        const VOLATILE: [&str; 11] = [
            "requestId",
            "extendedRequestId",
            "requestTime",
            "requestTimeEpoch",
            "time",
            "timeEpoch",
            "x-amzn-trace-id",
            "authorization",
            "x-amz-date",
            "exp",
            "iat",
        ];
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(key, value)| {
                        let value = if VOLATILE.iter().any(|name| key.eq_ignore_ascii_case(name)) {
                            json!("<varies>")
                        } else {
                            without_volatile_fields(value)
                        };
                        (key.clone(), value)
                    })
                    .collect(),
            ),
            Value::Array(items) => {
                Value::Array(items.iter().map(without_volatile_fields).collect())
            }
            other => other.clone(),
        }
    }

    /// The sample events in tests/events are this module's output; `JIT_GUARD_WRITE_EVENTS=1`
    /// rewrites them after a format change.
    #[test]
    fn sample_events_match_builders() {
        let samples = [
            (
                "update-jit-access.rest-v1.json",
                rest_v1(&update_jit_access_spec()),
                update_jit_access_spec(),
                "/prod",
            ),
            (
                "get-project.http-v2.json",
                http_v2(&get_project_spec()),
                get_project_spec(),
                "",
            ),
        ];
        for (file, built, spec, prefix) in samples {
            let path = events_dir().join(file);
            if std::env::var_os("JIT_GUARD_WRITE_EVENTS").is_some() {
                let text = serde_json::to_string_pretty(&built).unwrap() + "\n";
                std::fs::write(&path, text)
                    .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
            }
            let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
                panic!(
                    "cannot read {}: {error}; run with JIT_GUARD_WRITE_EVENTS=1 to write it",
                    path.display()
                )
            });
            let saved: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                without_volatile_fields(&saved),
                without_volatile_fields(&built),
                "{file} differs from the builder's output; run with JIT_GUARD_WRITE_EVENTS=1 to rewrite it"
            );
            assert_request_matches(&spec, &saved, prefix);
            assert_eq!(
                parse(&saved).path_parameters().first("ref"),
                Some(PROJECT_REF)
            );
        }
    }
}
