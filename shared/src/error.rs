//! The one error type of a request and its one mapping to an HTTP response.
//!
//! Every failure a caller can see is a variant here. [`Error::into_response`]
//! is the only place that turns a failure into a status and an
//! `application/problem+json` body (RFC 9457). Bodies carry fixed, reviewed
//! text: no upstream body, no Rust error text and no token ever reaches them.

use serde::Serialize;
use serde_json::json;

use crate::event::HttpResponse;
use crate::policy::Denial;
use crate::signature::SignatureError;
use crate::supabase::UpstreamError;
use crate::token::TokenError;

/// Prefix of the `type` URI of every problem document; the stable code follows it.
const PROBLEM_TYPE_BASE: &str = "urn:supabase-jit-guard:problem:";

/// One invalid part of a request: which field and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Location of the field, as a path (`ref`, `roles[0].expires_at`) or `body`.
    pub field: String,
    /// The problem with the value and what to send instead.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// A failed request, one variant per cause a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {} field error(s)", .0.len())]
    InvalidRequest(Vec<FieldError>),

    #[error("request body is {size} bytes, over the limit of {limit}")]
    PayloadTooLarge { size: usize, limit: usize },

    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },

    #[error("access denied by policy")]
    PolicyDenied { action: &'static str, denials: Vec<Denial> },

    /// Supabase responded that the token's user may not assume the role from the remote host.
    #[error("Supabase did not grant JIT access")]
    JitAccessNotGranted,

    #[error(transparent)]
    Upstream(#[from] UpstreamError),

    #[error(transparent)]
    Token(#[from] TokenError),

    /// The role list kept changing under concurrent writes.
    #[error("concurrent changes to the role list")]
    ConcurrentChange,

    #[error("the user does not hold the role")]
    RoleNotGranted,

    #[error("invalid request signature: {0}")]
    InvalidSignature(SignatureError),

    #[error("signing secret unavailable: {0}")]
    SigningSecret(TokenError),
}

impl Error {
    /// Stable machine-readable code, for workflows to branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "invalid_request",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::RouteNotFound { .. } => "route_not_found",
            Error::PolicyDenied { .. } => "policy_denied",
            Error::JitAccessNotGranted => "jit_access_not_granted",
            Error::Upstream(upstream) => upstream.code(),
            Error::Token(_) => "token_unavailable",
            Error::InvalidSignature(_) => "invalid_signature",
            Error::ConcurrentChange => "concurrent_change",
            Error::RoleNotGranted => "role_not_granted",
            Error::SigningSecret(_) => "signing_secret_unavailable",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Error::InvalidRequest(_) => 400,
            Error::PayloadTooLarge { .. } => 413,
            Error::RouteNotFound { .. } => 404,
            Error::PolicyDenied { .. } => 403,
            Error::JitAccessNotGranted => 403,
            Error::Upstream(upstream) => upstream.status(),
            Error::Token(_) => 503,
            Error::InvalidSignature(_) => 401,
            Error::ConcurrentChange => 409,
            Error::RoleNotGranted => 404,
            Error::SigningSecret(_) => 503,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "Invalid request",
            Error::PayloadTooLarge { .. } => "Request body too large",
            Error::RouteNotFound { .. } => "Route not found",
            Error::PolicyDenied { .. } => "Denied by policy",
            Error::JitAccessNotGranted => "JIT access not granted",
            Error::Upstream(upstream) => upstream.title(),
            Error::Token(_) => "Supabase access token unavailable",
            Error::InvalidSignature(_) => "Invalid request signature",
            Error::ConcurrentChange => "Concurrent change",
            Error::RoleNotGranted => "Role not granted",
            Error::SigningSecret(_) => "Signing secret unavailable",
        }
    }

    fn detail(&self) -> String {
        match self {
            Error::InvalidRequest(errors) => {
                let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
                format!("Fix these fields and send the request again: {}.", fields.join(", "))
            }
            Error::PayloadTooLarge { limit, .. } => {
                format!("The request body must be at most {limit} bytes.")
            }
            Error::RouteNotFound { method, path } => {
                format!("This function does not serve {method} {path}. Check the method and the path.")
            }
            Error::PolicyDenied { action, .. } => {
                format!("The guardrail policies deny {action} for this request; see `denials` for each reason.")
            }
            Error::JitAccessNotGranted => {
                "Supabase has no current JIT mapping that lets the token's user assume this role from this remote host.".to_owned()
            }
            Error::Upstream(upstream) => upstream.detail(),
            Error::Token(error) => error.detail(),
            Error::InvalidSignature(error) => error.detail().to_owned(),
            Error::ConcurrentChange => {
                "Other writes kept changing this user's role list; send the request again.".to_owned()
            }
            Error::RoleNotGranted => "The user has no mapping for this role on this project; check the role and user id.".to_owned(),
            Error::SigningSecret(error) => error.detail(),
        }
    }

    /// Seconds the caller should wait before retrying, when known.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Error::Upstream(UpstreamError::RateLimited { retry_after_seconds }) => Some(*retry_after_seconds),
            _ => None,
        }
    }

    /// Builds the `application/problem+json` response for this error.
    pub fn into_response(self, request_id: Option<&str>) -> HttpResponse {
        let status = self.status();
        let code = self.code();
        let mut problem = json!({
            "type": format!("{PROBLEM_TYPE_BASE}{code}"),
            "title": self.title(),
            "status": status,
            "detail": self.detail(),
            "code": code,
        });
        if let Some(request_id) = request_id {
            problem["request_id"] = json!(request_id);
        }
        match &self {
            Error::InvalidRequest(errors) => problem["errors"] = json!(errors),
            Error::PolicyDenied { denials, .. } => {
                let mut policy_ids: Vec<&str> =
                    denials.iter().flat_map(|denial| denial.policy_ids.iter().map(String::as_str)).collect();
                policy_ids.sort_unstable();
                policy_ids.dedup();
                problem["policy_ids"] = json!(policy_ids);
                problem["denials"] = json!(denials);
            }
            _ => {}
        }

        let response = HttpResponse::json(status, "application/problem+json", problem.to_string());
        match self.retry_after() {
            Some(seconds) => response.with_header("retry-after", seconds.to_string()),
            None => response,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_json(response: &HttpResponse) -> serde_json::Value {
        serde_json::from_str(response.body().expect("a body")).unwrap()
    }

    #[test]
    fn invalid_request_lists_fields() {
        let error = Error::InvalidRequest(vec![
            FieldError::new("ref", "must be 20 lowercase letters"),
            FieldError::new("roles[0].role", "is missing"),
        ]);
        let response = error.into_response(Some("req-1"));
        assert_eq!(response.status(), 400);
        assert_eq!(response.header("content-type"), Some("application/problem+json"));
        let body = body_json(&response);
        assert_eq!(body["code"], "invalid_request");
        assert_eq!(body["status"], 400);
        assert_eq!(body["request_id"], "req-1");
        assert_eq!(body["errors"][1]["field"], "roles[0].role");
        assert!(body["detail"].as_str().unwrap().contains("ref, roles[0].role"));
    }

    #[test]
    fn rate_limited_sets_retry_after() {
        let error = Error::Upstream(UpstreamError::RateLimited { retry_after_seconds: 17 });
        let response = error.into_response(None);
        assert_eq!(response.status(), 429);
        assert_eq!(response.header("retry-after"), Some("17"));
    }
}
