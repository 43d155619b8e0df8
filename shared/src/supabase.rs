//! The Supabase Management API v1: the [`ManagementApi`] port the operations
//! use, and [`SupabaseClient`], its adapter over reqwest.
//!
//! Responses are decoded leniently: the JSON is kept whole as a
//! `serde_json::Value`, so fields Supabase adds later reach the caller and
//! fields that turn null do not break decoding. Only the outer shape each
//! operation relies on is checked.

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use url::Url;

use crate::token::{AccessToken, TokenError, TokenProvider};
use crate::validate::{AuthorizeJitAccess, OrganizationSlug, ProjectRef, UserId};

/// Wait suggested to callers after a 429 without a usable `X-RateLimit-Reset`:
/// Supabase's limits are per minute.
const DEFAULT_RATE_LIMIT_WAIT_SECONDS: u64 = 60;

/// Cause of a failed Supabase call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("Supabase rejected the access token twice")]
    Unauthorized,
    #[error("Supabase forbade the call")]
    Forbidden,
    #[error("Supabase found no such resource")]
    NotFound,
    #[error("Supabase rate limit reached")]
    RateLimited { retry_after_seconds: u64 },
    #[error("Supabase rejected the request with status {status}")]
    Rejected { status: u16 },
    #[error("Supabase failed with status {status}")]
    ServerError { status: u16 },
    #[error("Supabase did not respond in time")]
    Timeout,
    #[error("Supabase could not be reached")]
    Unavailable,
    #[error("Supabase returned a malformed {operation} response")]
    MalformedResponse { operation: &'static str },
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl UpstreamError {
    pub fn code(&self) -> &'static str {
        match self {
            UpstreamError::Unauthorized => "upstream_unauthorized",
            UpstreamError::Forbidden => "upstream_forbidden",
            UpstreamError::NotFound => "not_found",
            UpstreamError::RateLimited { .. } => "upstream_rate_limited",
            UpstreamError::Rejected { .. } => "upstream_rejected",
            UpstreamError::ServerError { .. } => "upstream_error",
            UpstreamError::Timeout => "upstream_timeout",
            UpstreamError::Unavailable => "upstream_unavailable",
            UpstreamError::MalformedResponse { .. } => "upstream_malformed_response",
            UpstreamError::Token(_) => "token_unavailable",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            UpstreamError::NotFound => 404,
            UpstreamError::RateLimited { .. } => 429,
            UpstreamError::Timeout => 504,
            UpstreamError::Token(_) => 503,
            UpstreamError::Unauthorized
            | UpstreamError::Forbidden
            | UpstreamError::Rejected { .. }
            | UpstreamError::ServerError { .. }
            | UpstreamError::Unavailable
            | UpstreamError::MalformedResponse { .. } => 502,
        }
    }

    /// Returns the HTTP status Supabase returned, when the failure came with one.
    pub fn upstream_status(&self) -> Option<u16> {
        match self {
            UpstreamError::Unauthorized => Some(401),
            UpstreamError::Forbidden => Some(403),
            UpstreamError::NotFound => Some(404),
            UpstreamError::RateLimited { .. } => Some(429),
            UpstreamError::Rejected { status } | UpstreamError::ServerError { status } => Some(*status),
            UpstreamError::Timeout
            | UpstreamError::Unavailable
            | UpstreamError::MalformedResponse { .. }
            | UpstreamError::Token(_) => None,
        }
    }

    pub fn title(&self) -> &'static str {
        match self {
            UpstreamError::Unauthorized => "Supabase rejected the access token",
            UpstreamError::Forbidden => "Supabase forbade the call",
            UpstreamError::NotFound => "Not found",
            UpstreamError::RateLimited { .. } => "Supabase rate limit reached",
            UpstreamError::Rejected { .. } => "Supabase rejected the request",
            UpstreamError::ServerError { .. } => "Supabase failed",
            UpstreamError::Timeout => "Supabase timed out",
            UpstreamError::Unavailable => "Supabase unreachable",
            UpstreamError::MalformedResponse { .. } => "Malformed Supabase response",
            UpstreamError::Token(_) => "Supabase access token unavailable",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            UpstreamError::Unauthorized => {
                "Supabase rejected the access token, also after reading the secret again; store a valid token in the secret.".into()
            }
            UpstreamError::Forbidden => {
                "The access token lacks the permission for this call; give the token's user access to the project or organization.".into()
            }
            UpstreamError::NotFound => {
                "Supabase has no such project, organization or user for this token; check the ids in the path.".into()
            }
            UpstreamError::RateLimited { retry_after_seconds } => {
                format!("Supabase allows 120 requests a minute per endpoint; retry after {retry_after_seconds} seconds.")
            }
            UpstreamError::Rejected { status } => {
                format!("Supabase rejected the request with status {status}; see the function's log for its request id.")
            }
            UpstreamError::ServerError { status } => format!("Supabase failed with status {status}; retry later."),
            UpstreamError::Timeout => "Supabase did not respond in time; retry later.".into(),
            UpstreamError::Unavailable => "Supabase could not be reached; retry later.".into(),
            UpstreamError::MalformedResponse { operation } => {
                format!("Supabase returned a {operation} response that could not be decoded; see the function's log.")
            }
            UpstreamError::Token(error) => error.detail(),
        }
    }
}

/// A successful Supabase response: its status and decoded JSON (`Null` for an empty body).
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamResponse {
    pub status: u16,
    pub body: Value,
}

/// The Supabase Management API calls the bundle makes, one method per route.
pub trait ManagementApi: Send + Sync {
    fn list_organization_members(
        &self,
        slug: &OrganizationSlug,
    ) -> impl Future<Output = Result<UpstreamResponse, UpstreamError>> + Send;

    fn list_projects(&self) -> impl Future<Output = Result<UpstreamResponse, UpstreamError>> + Send;

    fn get_project(&self, project_ref: &ProjectRef)
    -> impl Future<Output = Result<UpstreamResponse, UpstreamError>> + Send;

    fn authorize_jit_access(
        &self,
        project_ref: &ProjectRef,
        request: &AuthorizeJitAccess,
    ) -> impl Future<Output = Result<UpstreamResponse, UpstreamError>> + Send;

    /// Replaces a user's role list; `body` has the spec's `UpdateJitAccessBody` shape.
    fn update_jit_access(
        &self,
        project_ref: &ProjectRef,
        body: &Value,
    ) -> impl Future<Output = Result<UpstreamResponse, UpstreamError>> + Send;

    fn list_jit_access(
        &self,
        project_ref: &ProjectRef,
    ) -> impl Future<Output = Result<UpstreamResponse, UpstreamError>> + Send;

    fn revoke_jit_access(
        &self,
        project_ref: &ProjectRef,
        user_id: &UserId,
    ) -> impl Future<Output = Result<UpstreamResponse, UpstreamError>> + Send;
}

/// Expected outer shape of a response body.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Array,
    /// An object with these keys present.
    Object(&'static [&'static str]),
    /// Any JSON, or an empty body.
    Anything,
}

/// Settings of the HTTP client.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub base_url: Url,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Retries after the first attempt, for 5xx responses, connection errors and waits on 429.
    pub max_retries: u32,
}

/// First retry delay; each further retry doubles it, up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Time kept back from the Lambda deadline to build and send the response.
const RESPONSE_MARGIN: Duration = Duration::from_millis(300);
/// Shortest attempt worth starting; below it the call fails as a timeout instead.
const MIN_ATTEMPT: Duration = Duration::from_millis(50);

tokio::task_local! {
    /// The instant the current invocation must have responded by, from the Lambda context.
    pub static DEADLINE: Instant;
}

/// Time left for outside calls (Supabase, Secrets Manager) in this
/// invocation, after the response margin; `None` outside an invocation.
pub(crate) fn remaining() -> Option<Duration> {
    DEADLINE.try_with(|deadline| deadline.saturating_duration_since(Instant::now()).saturating_sub(RESPONSE_MARGIN)).ok()
}

/// Capped exponential backoff with full jitter: a random wait up to the capped delay.
fn backoff(retry: u32) -> Duration {
    let capped = BASE_BACKOFF.saturating_mul(2u32.saturating_pow(retry)).min(MAX_BACKOFF);
    capped.mul_f64(fastrand::f64())
}

/// One attempt's result, before the retry decision.
enum Attempt {
    Done(reqwest::Response),
    Failed(UpstreamError),
}

/// The Supabase Management API over HTTPS.
pub struct SupabaseClient {
    http: reqwest::Client,
    /// Parsed once: each call only sets the path, instead of parsing a whole URL.
    base_url: Url,
    /// The base URL's path without its trailing slash, put before each call's path.
    base_path: String,
    tokens: TokenProvider,
    request_timeout: Duration,
    max_retries: u32,
}

impl SupabaseClient {
    pub fn new(settings: &ClientSettings, tokens: TokenProvider) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .user_agent(concat!("supabase-jit-guard/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured(crate::tls::client_config())
            .build()?;
        let base_url = settings.base_url.clone();
        let base_path = base_url.path().trim_end_matches('/').to_owned();
        Ok(Self {
            http,
            base_url,
            base_path,
            tokens,
            request_timeout: settings.request_timeout,
            max_retries: settings.max_retries,
        })
    }

    /// Returns the token source, so init can read the token ahead of the first call.
    pub fn tokens(&self) -> &TokenProvider {
        &self.tokens
    }

    /// Sends one call. Every call the bundle makes is idempotent (GET, PUT,
    /// DELETE and the read-only authorize POST), so 5xx responses and connection
    /// errors are retried with backoff, and a 429 is waited out when its reset
    /// fits in the invocation's remaining time. After a 401 the token secret
    /// is read again and the call retried once.
    async fn call(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<Value>,
        shape: Shape,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let mut token = self.tokens.token().await?;
        let mut refreshed = false;
        let mut retry = 0;
        let response = loop {
            let failure = match self.send(operation, &method, path, body.as_ref(), &token).await {
                Attempt::Done(response) if response.status() == StatusCode::UNAUTHORIZED && !refreshed => {
                    tracing::warn!(operation, "supabase rejected the access token, reading the secret again");
                    token = self.tokens.refresh(&token).await?;
                    refreshed = true;
                    continue;
                }
                Attempt::Done(response) if response.status() == StatusCode::UNAUTHORIZED => {
                    tracing::error!(operation, "supabase rejected the access token after a fresh read");
                    return Err(UpstreamError::Unauthorized);
                }
                Attempt::Done(response) if response.status().is_success() => break response,
                Attempt::Done(response) => classify_failure(operation, &response),
                Attempt::Failed(error) => error,
            };

            let wait = match &failure {
                UpstreamError::RateLimited { retry_after_seconds } => Duration::from_secs(*retry_after_seconds),
                UpstreamError::ServerError { .. } | UpstreamError::Unavailable => backoff(retry),
                _ => return Err(failure),
            };
            // Without a Lambda deadline (unit tests), the call timeout bounds the wait.
            let fits = wait + MIN_ATTEMPT <= remaining().unwrap_or(self.request_timeout);
            if retry >= self.max_retries || !fits {
                return Err(failure);
            }
            retry += 1;
            tracing::warn!(operation, retry, wait_ms = wait.as_millis() as u64, code = failure.code(), "retrying supabase call");
            tokio::time::sleep(wait).await;
        };

        let status = response.status();
        let bytes = response.bytes().await.map_err(|error| {
            tracing::error!(operation, error = %error, "reading the supabase response failed");
            if error.is_timeout() { UpstreamError::Timeout } else { UpstreamError::Unavailable }
        })?;
        let body = decode(operation, &bytes, shape)?;
        Ok(UpstreamResponse { status: status.as_u16(), body })
    }

    /// Sends one attempt, bounded by the call timeout and the invocation's remaining time.
    async fn send(
        &self,
        operation: &'static str,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        token: &AccessToken,
    ) -> Attempt {
        let timeout = match remaining() {
            Some(left) if left < MIN_ATTEMPT => {
                tracing::error!(operation, method = %method, path, "no time left in the invocation for a supabase call");
                return Attempt::Failed(UpstreamError::Timeout);
            }
            Some(left) => left.min(self.request_timeout),
            None => self.request_timeout,
        };
        let started = Instant::now();
        let mut url = self.base_url.clone();
        url.set_path(&format!("{}{path}", self.base_path));
        let mut request = self
            .http
            .request(method.clone(), url)
            .bearer_auth(token.expose())
            .timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let result = request.send().await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(response) => {
                tracing::info!(operation, method = %method, path, status = response.status().as_u16(), elapsed_ms, "supabase call");
                Attempt::Done(response)
            }
            Err(error) => {
                // reqwest errors name the URL, never the headers, so the token stays out.
                tracing::error!(operation, method = %method, path, elapsed_ms, error = %error, "supabase call failed");
                Attempt::Failed(if error.is_timeout() { UpstreamError::Timeout } else { UpstreamError::Unavailable })
            }
        }
    }
}

fn classify_failure(operation: &'static str, response: &reqwest::Response) -> UpstreamError {
    let status = response.status();
    let error = match status {
        StatusCode::FORBIDDEN => UpstreamError::Forbidden,
        StatusCode::NOT_FOUND => UpstreamError::NotFound,
        StatusCode::TOO_MANY_REQUESTS => {
            // Supabase sends the seconds until the window resets, and no Retry-After.
            let reset = response
                .headers()
                .get("x-ratelimit-reset")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<f64>().ok())
                .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
                .map(|seconds| seconds.ceil() as u64);
            UpstreamError::RateLimited { retry_after_seconds: reset.unwrap_or(DEFAULT_RATE_LIMIT_WAIT_SECONDS).max(1) }
        }
        status if status.is_server_error() => UpstreamError::ServerError { status: status.as_u16() },
        status => UpstreamError::Rejected { status: status.as_u16() },
    };
    let level_is_error = !matches!(error, UpstreamError::NotFound);
    if level_is_error {
        tracing::error!(operation, status = status.as_u16(), code = error.code(), "supabase call returned an error");
    } else {
        tracing::warn!(operation, status = status.as_u16(), "supabase found no such resource");
    }
    error
}

fn decode(operation: &'static str, bytes: &[u8], shape: Shape) -> Result<Value, UpstreamError> {
    let malformed = |reason: &str| {
        tracing::error!(operation, reason, body_bytes = bytes.len(), "supabase response is malformed");
        UpstreamError::MalformedResponse { operation }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return match shape {
            Shape::Anything => Ok(Value::Null),
            _ => Err(malformed("empty body")),
        };
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|_| malformed("not JSON"))?;
    match (shape, &value) {
        (Shape::Array, Value::Array(_)) | (Shape::Anything, _) => Ok(value),
        (Shape::Object(keys), Value::Object(object)) => match keys.iter().find(|key| !object.contains_key(**key)) {
            Some(_) => Err(malformed("a required field is missing")),
            None => Ok(value),
        },
        _ => Err(malformed("unexpected JSON type")),
    }
}

impl ManagementApi for SupabaseClient {
    async fn list_organization_members(&self, slug: &OrganizationSlug) -> Result<UpstreamResponse, UpstreamError> {
        let path = format!("/v1/organizations/{slug}/members");
        self.call("list-organization-members", Method::GET, &path, None, Shape::Array).await
    }

    async fn list_projects(&self) -> Result<UpstreamResponse, UpstreamError> {
        self.call("list-projects", Method::GET, "/v1/projects", None, Shape::Array).await
    }

    async fn get_project(&self, project_ref: &ProjectRef) -> Result<UpstreamResponse, UpstreamError> {
        let path = format!("/v1/projects/{project_ref}");
        self.call("get-project", Method::GET, &path, None, Shape::Object(&["ref"])).await
    }

    async fn authorize_jit_access(
        &self,
        project_ref: &ProjectRef,
        request: &AuthorizeJitAccess,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let path = format!("/v1/projects/{project_ref}/database/jit");
        let body = serde_json::json!({ "role": request.role.as_str(), "rhost": request.rhost.to_string() });
        self.call("authorize-jit-access", Method::POST, &path, Some(body), Shape::Object(&["user_role"])).await
    }

    async fn update_jit_access(&self, project_ref: &ProjectRef, body: &Value) -> Result<UpstreamResponse, UpstreamError> {
        let path = format!("/v1/projects/{project_ref}/database/jit");
        self.call("update-jit-access", Method::PUT, &path, Some(body.clone()), Shape::Object(&["user_roles"])).await
    }

    async fn list_jit_access(&self, project_ref: &ProjectRef) -> Result<UpstreamResponse, UpstreamError> {
        let path = format!("/v1/projects/{project_ref}/database/jit/list");
        self.call("list-jit-access", Method::GET, &path, None, Shape::Object(&["items"])).await
    }

    async fn revoke_jit_access(
        &self,
        project_ref: &ProjectRef,
        user_id: &UserId,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let path = format!("/v1/projects/{project_ref}/database/jit/{user_id}");
        self.call("revoke-jit-access", Method::DELETE, &path, None, Shape::Anything).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_keeps_unknown_and_null_fields() {
        let body = br#"{"ref":"abcdefghijklmnopqrst","brand_new":{"x":1},"organization_id":null}"#;
        let value = decode("get-project", body, Shape::Object(&["ref"])).unwrap();
        assert_eq!(value["brand_new"]["x"], 1);
        assert!(value["organization_id"].is_null());
    }

    #[test]
    fn decode_rejects_wrong_shapes() {
        assert!(decode("list-projects", b"{}", Shape::Array).is_err());
        assert!(decode("get-project", b"[]", Shape::Object(&["ref"])).is_err());
        assert!(decode("get-project", br#"{"name":"x"}"#, Shape::Object(&["ref"])).is_err());
        assert!(decode("list-projects", b"<html>", Shape::Array).is_err());
        assert!(decode("list-projects", b"", Shape::Array).is_err());
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        for retry in 0..20 {
            let wait = backoff(retry);
            assert!(wait <= MAX_BACKOFF, "retry {retry} waits {wait:?}");
            assert!(wait <= BASE_BACKOFF * 2u32.saturating_pow(retry), "retry {retry} waits {wait:?}");
        }
        let waits: std::collections::HashSet<Duration> = (0..20).map(|_| backoff(3)).collect();
        assert!(waits.len() > 1, "jitter varies the wait");
    }

    #[tokio::test]
    async fn remaining_time_follows_deadline() {
        assert_eq!(remaining(), None);
        let deadline = Instant::now() + Duration::from_secs(2);
        let left = DEADLINE.scope(deadline, async { remaining() }).await.unwrap();
        assert!(left <= Duration::from_secs(2) - RESPONSE_MARGIN);
        assert!(left > Duration::from_secs(1));
    }

    #[test]
    fn decode_allows_empty_revoke_body() {
        assert_eq!(decode("revoke-jit-access", b"", Shape::Anything).unwrap(), Value::Null);
    }
}
