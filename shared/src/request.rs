//! What the operations need from a Lambda event: the route's path
//! parameters, the body, the caller that API Gateway authenticated, and the
//! request ids.
//!
//! API Gateway REST (v1) and HTTP API (v2) events carry `pathParameters`;
//! function URL events and `cargo lambda watch` do not, so the parameters are
//! then matched from the raw path.

use std::collections::HashMap;
use std::fmt;

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt};

use crate::error::{Error, FieldError};

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

/// Reads the route's parameters, body and caller from `request`.
pub fn read_call(request: &Request, route: Route) -> Result<Call, Error> {
    let method = request.method().as_str();
    let path = request.raw_http_path();
    if method != route.method {
        return Err(Error::RouteNotFound { method: method.to_owned(), path: path.to_owned() });
    }
    let path_parameters = path_parameters(request, route, path)
        .ok_or_else(|| Error::RouteNotFound { method: method.to_owned(), path: path.to_owned() })?;

    let body = match request.body() {
        Body::Empty => Vec::new(),
        Body::Text(text) => text.as_bytes().to_vec(),
        Body::Binary(bytes) => bytes.clone(),
        _ => Vec::new(),
    };
    if body.len() > MAX_BODY_BYTES {
        return Err(Error::PayloadTooLarge { size: body.len(), limit: MAX_BODY_BYTES });
    }

    let dry_run = dry_run(request, route)?;
    let (caller, api_request_id) = caller_and_request_id(request.request_context_ref());
    let request_id = request.lambda_context_ref().map(|context| context.request_id.clone());
    let signature = request
        .headers()
        .get(crate::signature::SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    Ok(Call { path_parameters, body, caller, request_id, api_request_id, dry_run, signature })
}

/// Reads `?dry_run=`, which only mutating routes accept.
fn dry_run(request: &Request, route: Route) -> Result<bool, Error> {
    let invalid = |message: &str| Error::InvalidRequest(vec![FieldError::new("dry_run", message)]);
    let Some(value) = request.query_string_parameters_ref().and_then(|query| query.first("dry_run")) else {
        return Ok(false);
    };
    match value {
        "true" if route.mutating => Ok(true),
        "false" => Ok(false),
        "true" => Err(invalid("applies only to the routes that write role mappings; remove it")),
        _ => Err(invalid("must be true or false")),
    }
}

fn path_parameters(request: &Request, route: Route, path: &str) -> Option<HashMap<String, String>> {
    let names: Vec<&str> = route
        .template
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|rest| rest.strip_suffix('}')))
        .collect();
    if let Some(given) = request.path_parameters_ref()
        && names.iter().all(|name| given.first(name).is_some())
    {
        return Some(names.iter().map(|name| (name.to_string(), given.first(name).unwrap_or("").to_owned())).collect());
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
fn caller_and_request_id(context: Option<&RequestContext>) -> (Caller, Option<String>) {
    let mut caller = None;
    let mut request_id = None;
    match context {
        Some(RequestContext::ApiGatewayV1(context)) => {
            request_id = context.request_id.clone();
            // REST events keep the authorizer's output as a flat map.
            let authorizer = &context.authorizer.fields;
            let authorizer_principal = authorizer.get("principalId").and_then(|value| value.as_str());
            // A Cognito user pool authorizer puts the token's claims under `claims`.
            let jwt_subject = authorizer.get("claims").and_then(|claims| claims.get("sub")).and_then(|sub| sub.as_str());
            caller = non_empty(context.identity.user_arn.clone())
                .or_else(|| authorizer_principal.map(|principal| format!("authorizer:{principal}")))
                .or_else(|| jwt_subject.map(|subject| format!("jwt:{subject}")))
                .or_else(|| non_empty(context.identity.api_key_id.clone()).map(|key| format!("api-key:{key}")));
        }
        Some(RequestContext::ApiGatewayV2(context)) => {
            request_id = context.request_id.clone();
            if let Some(authorizer) = &context.authorizer {
                let iam = authorizer.iam.as_ref().and_then(|iam| non_empty(iam.user_arn.clone()));
                let lambda_principal = authorizer
                    .fields
                    .get("principalId")
                    .and_then(|value| value.as_str())
                    .map(|principal| format!("authorizer:{principal}"));
                let jwt = authorizer.jwt.as_ref().and_then(|jwt| jwt.claims.get("sub")).map(|sub| format!("jwt:{sub}"));
                caller = iam.or(lambda_principal).or(jwt);
            }
        }
        _ => {}
    }
    (Caller(caller.unwrap_or_else(|| Caller::ANONYMOUS.to_owned())), request_id)
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
        let request = lambda_http::request::from_str(&event.to_string()).unwrap();
        let (caller, request_id) = caller_and_request_id(request.request_context_ref());
        (caller.0, request_id)
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
