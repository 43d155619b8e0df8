//! What the operations need from a Lambda event: the route's path
//! parameters, the body, the caller that API Gateway authenticated, and the
//! request ids.
//!
//! API Gateway REST (v1) and HTTP API (v2) events carry `pathParameters`;
//! function URL events and `cargo lambda watch` do not, so the parameters are
//! then matched from the raw path.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::error::{Error, FieldError};
use crate::event::{HttpEvent, PayloadVersion, RequestContext};

/// Largest request body accepted, in bytes. A full update with the maximum
/// roles and networks stays well under it.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A route: HTTP method and path template with `{name}` parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub template: &'static str,
    /// Whether the route writes, and so accepts `?dry_run=true`.
    pub mutating: bool,
}

/// The authenticated caller, the Cedar principal of every decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(String);

impl Caller {
    pub const ANONYMOUS: &'static str = "anonymous";

    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// One invocation, reduced to what the operations read.
#[derive(Debug, Clone)]
pub struct Call {
    pub path_parameters: HashMap<String, String>,
    pub body: Vec<u8>,
    pub caller: Caller,
    /// The Lambda request id.
    pub request_id: Option<String>,
    /// The API Gateway request id, when the event came through API Gateway.
    pub api_request_id: Option<String>,
    /// `?dry_run=true`: decide and report, but send no write.
    pub dry_run: bool,
    /// The `Persona-Signature` header, when present.
    pub signature: Option<String>,
}

impl Call {
    pub fn path_parameter(&self, name: &str) -> &str {
        self.path_parameters.get(name).map_or("", String::as_str)
    }
}

/// Reads the route's parameters, body and caller from `event`. `request_id`
/// is the Lambda request id.
pub fn read_call(event: HttpEvent, route: Route, request_id: Option<String>) -> Result<Call, Error> {
    let Some(version) = event.version() else {
        let message = "is missing, and so is requestContext.http.method: invoke this function through API Gateway or a function URL";
        return Err(Error::InvalidRequest(vec![FieldError::new("httpMethod", message)]));
    };
    let method = event.method();
    let path = event.path();
    if method != route.method {
        return Err(Error::RouteNotFound { method: method.to_owned(), path: path.to_owned() });
    }
    let path_parameters = path_parameters(&event, route, path)
        .ok_or_else(|| Error::RouteNotFound { method: method.to_owned(), path: path.to_owned() })?;
    let dry_run = dry_run(&event, route)?;
    let (caller, api_request_id) = caller_and_request_id(version, &event.request_context);
    let signature = event.signature().map(str::to_owned);

    let base64 = event.is_base64_encoded.unwrap_or(false);
    let body = match event.body {
        None => Vec::new(),
        Some(text) if !base64 => text.into_bytes(),
        Some(text) => BASE64.decode(text.trim()).map_err(|_| {
            Error::InvalidRequest(vec![FieldError::new("body", "is invalid base64 although isBase64Encoded is true: send the JSON body as text")])
        })?,
    };
    if body.len() > MAX_BODY_BYTES {
        return Err(Error::PayloadTooLarge { size: body.len(), limit: MAX_BODY_BYTES });
    }
    Ok(Call { path_parameters, body, caller, request_id, api_request_id, dry_run, signature })
}

/// Reads `?dry_run=`, which only mutating routes accept.
fn dry_run(event: &HttpEvent, route: Route) -> Result<bool, Error> {
    let invalid = |message: &str| Error::InvalidRequest(vec![FieldError::new("dry_run", message)]);
    let Some(value) = event.query_parameter("dry_run") else {
        return Ok(false);
    };
    match value {
        "true" if route.mutating => Ok(true),
        "false" => Ok(false),
        "true" => Err(invalid("applies only to the routes that write role mappings; remove it")),
        _ => Err(invalid("must be true or false")),
    }
}

fn path_parameters(event: &HttpEvent, route: Route, path: &str) -> Option<HashMap<String, String>> {
    let names: Vec<&str> = route
        .template
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|rest| rest.strip_suffix('}')))
        .collect();
    if let Some(given) = &event.path_parameters
        && names.iter().all(|name| given.contains_key(*name))
    {
        return Some(names.iter().map(|name| (name.to_string(), given[*name].clone())).collect());
    }
    match_template(route.template, path)
}

/// Matches `path` against `template`, allowing a prefix before it such as an
/// API Gateway stage (`/prod/v1/projects/...`).
pub fn match_template(template: &str, path: &str) -> Option<HashMap<String, String>> {
    let template_segments: Vec<&str> = template.trim_matches('/').split('/').collect();
    let path_segments: Vec<&str> = path.trim_end_matches('/').trim_start_matches('/').split('/').collect();
    if path_segments.len() < template_segments.len() {
        return None;
    }
    let tail = &path_segments[path_segments.len() - template_segments.len()..];

    let mut parameters = HashMap::new();
    for (expected, actual) in template_segments.iter().zip(tail) {
        match expected.strip_prefix('{').and_then(|rest| rest.strip_suffix('}')) {
            Some(name) => {
                parameters.insert(name.to_owned(), (*actual).to_owned());
            }
            None if expected == actual => {}
            None => return None,
        }
    }
    Some(parameters)
}

/// Derives the caller from the request context: an IAM ARN first, then a
/// Lambda authorizer's principal, a JWT subject, an API key id, else `anonymous`.
fn caller_and_request_id(version: PayloadVersion, context: &RequestContext) -> (Caller, Option<String>) {
    let authorizer = context.authorizer.as_ref();
    let caller = match version {
        PayloadVersion::V1 => {
            let identity = context.identity.as_ref();
            // REST events keep the authorizer's output flat, and a Cognito
            // user pool authorizer puts the token's claims under `claims`.
            let authorizer_principal = authorizer.and_then(|authorizer| authorizer.principal_id.0.clone());
            let jwt_subject = authorizer.and_then(|authorizer| authorizer.claims.as_ref()).and_then(|claims| claims.sub.0.clone());
            non_empty(identity.and_then(|identity| identity.user_arn.clone()))
                .or_else(|| authorizer_principal.map(|principal| format!("authorizer:{principal}")))
                .or_else(|| jwt_subject.map(|subject| format!("jwt:{subject}")))
                .or_else(|| non_empty(identity.and_then(|identity| identity.api_key_id.clone())).map(|key| format!("api-key:{key}")))
        }
        PayloadVersion::V2 => authorizer.and_then(|authorizer| {
            let iam = non_empty(authorizer.iam.as_ref().and_then(|iam| iam.user_arn.clone()));
            let lambda_principal = authorizer
                .lambda
                .as_ref()
                .and_then(|lambda| lambda.principal_id.0.clone())
                .map(|principal| format!("authorizer:{principal}"));
            let jwt = authorizer
                .jwt
                .as_ref()
                .and_then(|jwt| jwt.claims.as_ref())
                .and_then(|claims| claims.sub.0.clone())
                .map(|sub| format!("jwt:{sub}"));
            iam.or(lambda_principal).or(jwt)
        }),
    };
    (Caller(caller.unwrap_or_else(|| Caller::ANONYMOUS.to_owned())), context.request_id.clone())
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|text| !text.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REVOKE: Route =
        Route { method: "DELETE", template: "/v1/projects/{ref}/database/jit/{user_id}", mutating: true };

    #[test]
    fn template_matches_with_stage_prefix() {
        let parameters = match_template(REVOKE.template, "/prod/v1/projects/abc/database/jit/u-1").unwrap();
        assert_eq!(parameters["ref"], "abc");
        assert_eq!(parameters["user_id"], "u-1");
    }

    #[test]
    fn template_rejects_other_routes() {
        assert!(match_template(REVOKE.template, "/v1/projects/abc/database/jit").is_none());
        assert!(match_template(REVOKE.template, "/v1/projects/abc/database/jitx/u").is_none());
        assert!(match_template("/v1/projects/{ref}", "/v1/projects/abc/database/jit/list").is_none());
    }

    fn event_caller(event: serde_json::Value) -> (String, Option<String>) {
        let event: HttpEvent = serde_json::from_value(event).unwrap();
        let (caller, request_id) = caller_and_request_id(event.version().unwrap(), &event.request_context);
        (caller.0, request_id)
    }

    fn read(event: serde_json::Value) -> Result<Call, Error> {
        read_call(serde_json::from_value(event).unwrap(), REVOKE, Some("lambda-1".into()))
    }

    #[test]
    fn base64_body_is_decoded() {
        let call = read(serde_json::json!({
            "httpMethod": "DELETE", "path": "/v1/projects/abc/database/jit/u-1",
            "body": "eyJhIjoxfQ==", "isBase64Encoded": true
        }))
        .unwrap();
        assert_eq!(call.body, br#"{"a":1}"#);
        assert_eq!(call.request_id.as_deref(), Some("lambda-1"));
        assert_eq!(call.path_parameter("user_id"), "u-1");
    }

    #[test]
    fn invalid_base64_body_names_the_field() {
        let error = read(serde_json::json!({
            "httpMethod": "DELETE", "path": "/v1/projects/abc/database/jit/u-1",
            "body": "not base64!", "isBase64Encoded": true
        }))
        .unwrap_err();
        let Error::InvalidRequest(fields) = error else { panic!("expected an invalid request, got {error:?}") };
        assert_eq!(fields[0].field, "body");
    }

    #[test]
    fn non_http_event_is_rejected() {
        let error = read(serde_json::json!({"source": "aws.events", "detail": {}})).unwrap_err();
        let Error::InvalidRequest(fields) = error else { panic!("expected an invalid request, got {error:?}") };
        assert_eq!(fields[0].field, "httpMethod");
    }

    #[test]
    fn rest_v1_iam_caller() {
        let event = serde_json::json!({
            "resource": "/v1/projects", "path": "/v1/projects", "httpMethod": "GET", "headers": {},
            "requestContext": { "requestId": "gw-1", "httpMethod": "GET", "resourcePath": "/v1/projects",
                "identity": { "userArn": "arn:aws:iam::123456789012:user/ops", "apiKeyId": "key-1" } },
            "body": null, "isBase64Encoded": false
        });
        assert_eq!(event_caller(event), ("arn:aws:iam::123456789012:user/ops".into(), Some("gw-1".into())));
    }

    #[test]
    fn rest_v1_api_key_caller() {
        let event = serde_json::json!({
            "resource": "/v1/projects", "path": "/v1/projects", "httpMethod": "GET", "headers": {},
            "requestContext": { "httpMethod": "GET", "resourcePath": "/v1/projects", "identity": { "apiKeyId": "key-1" } },
            "body": null, "isBase64Encoded": false
        });
        assert_eq!(event_caller(event).0, "api-key:key-1");
    }

    #[test]
    fn http_v2_jwt_caller() {
        let event = serde_json::json!({
            "version": "2.0", "routeKey": "GET /v1/projects", "rawPath": "/v1/projects", "rawQueryString": "",
            "headers": {}, "requestContext": { "requestId": "gw-2", "http": { "method": "GET", "path": "/v1/projects" },
                "authorizer": { "jwt": { "claims": { "sub": "user-7" }, "scopes": [] } } },
            "isBase64Encoded": false
        });
        assert_eq!(event_caller(event), ("jwt:user-7".into(), Some("gw-2".into())));
    }

    #[test]
    fn http_v2_iam_caller() {
        let event = serde_json::json!({
            "version": "2.0", "routeKey": "GET /v1/projects", "rawPath": "/v1/projects", "rawQueryString": "",
            "headers": {}, "requestContext": { "http": { "method": "GET", "path": "/v1/projects" },
                "authorizer": { "iam": { "userArn": "arn:aws:sts::123456789012:assumed-role/persona/session" } } },
            "isBase64Encoded": false
        });
        assert_eq!(event_caller(event).0, "arn:aws:sts::123456789012:assumed-role/persona/session");
    }

    #[test]
    fn http_v2_lambda_authorizer_caller() {
        let event = serde_json::json!({
            "version": "2.0", "routeKey": "GET /v1/projects", "rawPath": "/v1/projects", "rawQueryString": "",
            "headers": {}, "requestContext": { "http": { "method": "GET", "path": "/v1/projects" },
                "authorizer": { "lambda": { "principalId": "workflow-9" } } },
            "isBase64Encoded": false
        });
        assert_eq!(event_caller(event).0, "authorizer:workflow-9");
    }

    #[test]
    fn rest_v1_authorizer_principal_caller() {
        let event = serde_json::json!({
            "resource": "/v1/projects", "path": "/v1/projects", "httpMethod": "GET", "headers": {},
            "requestContext": { "httpMethod": "GET", "resourcePath": "/v1/projects",
                "identity": {}, "authorizer": { "principalId": "workflow-3" } },
            "body": null, "isBase64Encoded": false
        });
        assert_eq!(event_caller(event).0, "authorizer:workflow-3");
    }

    #[test]
    fn rest_v1_cognito_claims_caller() {
        let event = serde_json::json!({
            "resource": "/v1/projects", "path": "/v1/projects", "httpMethod": "GET", "headers": {},
            "requestContext": { "httpMethod": "GET", "resourcePath": "/v1/projects",
                "identity": {}, "authorizer": { "claims": { "sub": "user-11" } } },
            "body": null, "isBase64Encoded": false
        });
        assert_eq!(event_caller(event).0, "jwt:user-11");
    }

    #[test]
    fn function_url_without_auth_is_anonymous() {
        let event = serde_json::json!({
            "version": "2.0", "routeKey": "$default", "rawPath": "/v1/projects", "rawQueryString": "",
            "headers": {}, "requestContext": { "http": { "method": "GET", "path": "/v1/projects" } },
            "isBase64Encoded": false
        });
        assert_eq!(event_caller(event).0, "anonymous");
    }
}
