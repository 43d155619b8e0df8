//! The Supabase access token: where it comes from, how it is cached, and how
//! it is read again after rotation.
//!
//! The token is held in [`AccessToken`], whose `Debug` and `Display` print a
//! placeholder, so a stray `{:?}` cannot put it in a log or a response.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use tokio::sync::Mutex;

/// A Supabase personal access token or OAuth access token.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Arc<str>);

impl AccessToken {
    /// Checks that `value` can be sent as a bearer token: not empty, no whitespace or control characters.
    pub fn parse(value: &str) -> Option<Self> {
        let valid = !value.is_empty() && value.chars().all(|character| character.is_ascii_graphic());
        valid.then(|| Self(Arc::from(value)))
    }

    /// Returns the token text, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("AccessToken([redacted])")
    }
}

impl fmt::Display for AccessToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("[redacted]")
    }
}

/// Cause of a failed secret store read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretStoreFailure {
    NotFound,
    AccessDenied,
    Throttled,
    Unreachable,
    /// The secret exists but contains binary data or no current version.
    NoSecretString,
    /// The read did not finish within the invocation's remaining time.
    TimedOut,
    Other,
}

/// Cause of a missing access token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("secret {secret_id} could not be read: {failure:?}")]
    SecretStore { secret_id: String, failure: SecretStoreFailure },

    #[error("secret {secret_id} holds no usable token: {reason}")]
    InvalidSecret { secret_id: String, reason: &'static str },
}

impl TokenError {
    /// Text for the caller: names the secret and the fix, never its content.
    pub fn detail(&self) -> String {
        match self {
            TokenError::SecretStore { secret_id, failure } => {
                let fix = match failure {
                    SecretStoreFailure::NotFound => "it does not exist; create it or fix SUPABASE_TOKEN_SECRET_ID",
                    SecretStoreFailure::AccessDenied => {
                        "access was denied; grant secretsmanager:GetSecretValue on it to the function's role"
                    }
                    SecretStoreFailure::Throttled => "Secrets Manager throttled the request; retry shortly",
                    SecretStoreFailure::Unreachable => "Secrets Manager could not be reached; retry shortly",
                    SecretStoreFailure::NoSecretString => "it has no SecretString; store the token as a string",
                    SecretStoreFailure::TimedOut => {
                        "Secrets Manager did not answer within the invocation's remaining time; retry shortly"
                    }
                    SecretStoreFailure::Other => "Secrets Manager returned an error; see the function's log",
                };
                format!("The secret {secret_id} could not be read: {fix}.")
            }
            TokenError::InvalidSecret { secret_id, reason } => {
                format!("The secret {secret_id} contains no usable value ({reason}); see the README for its format.")
            }
        }
    }
}

/// Future returned by [`SecretStore`] methods.
pub type SecretFuture<'a> = Pin<Box<dyn Future<Output = Result<String, SecretStoreFailure>> + Send + 'a>>;

/// A store of secret strings, such as AWS Secrets Manager.
pub trait SecretStore: Send + Sync {
    /// Reads the current `SecretString` of `secret_id`.
    fn secret_string<'a>(&'a self, secret_id: &'a str) -> SecretFuture<'a>;
}

/// Reads `secret_id` from `store`, giving up when the invocation has no time
/// left, as a Supabase call does, so that the invocation can still respond.
/// Outside an invocation (init) only the store's own timeouts apply.
pub(crate) async fn read_secret_string(store: &dyn SecretStore, secret_id: &str) -> Result<String, SecretStoreFailure> {
    let read = store.secret_string(secret_id);
    match crate::supabase::remaining() {
        Some(left) => tokio::time::timeout(left, read).await.unwrap_or(Err(SecretStoreFailure::TimedOut)),
        None => read.await,
    }
}

/// AWS Secrets Manager through the AWS SDK, configured from the standard
/// AWS environment (so `AWS_ENDPOINT_URL` points it at an emulator).
pub struct AwsSecretStore {
    client: aws_sdk_secretsmanager::Client,
}

impl AwsSecretStore {
    pub async fn from_environment() -> Self {
        let config = aws_config::from_env().http_client(crate::tls::aws_http_client()).load().await;
        Self { client: aws_sdk_secretsmanager::Client::new(&config) }
    }
}

impl SecretStore for AwsSecretStore {
    fn secret_string<'a>(&'a self, secret_id: &'a str) -> SecretFuture<'a> {
        Box::pin(async move {
            let output = self.client.get_secret_value().secret_id(secret_id).send().await.map_err(|error| {
                let failure = classify_sdk_error(&error);
                tracing::error!(
                    secret_id = %secret_id,
                    failure = ?failure,
                    error = %aws_sdk_secretsmanager::error::DisplayErrorContext(&error),
                    "reading the token secret failed"
                );
                failure
            })?;
            output.secret_string.ok_or(SecretStoreFailure::NoSecretString)
        })
    }
}

fn classify_sdk_error<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> SecretStoreFailure {
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => SecretStoreFailure::Unreachable,
        SdkError::ServiceError(service) => match service.err().code() {
            Some("ResourceNotFoundException") => SecretStoreFailure::NotFound,
            Some("AccessDeniedException") => SecretStoreFailure::AccessDenied,
            Some("ThrottlingException") | Some("TooManyRequestsException") => SecretStoreFailure::Throttled,
            _ => SecretStoreFailure::Other,
        },
        _ => SecretStoreFailure::Other,
    }
}

/// Parses a secret string: the bare token, or JSON with an `access_token` field.
pub fn token_from_secret_string(secret_id: &str, secret: &str) -> Result<AccessToken, TokenError> {
    let invalid = |reason| TokenError::InvalidSecret { secret_id: secret_id.to_owned(), reason };
    let trimmed = secret.trim();
    if trimmed.is_empty() {
        return Err(invalid("the secret string is empty"));
    }
    if trimmed.starts_with('{') {
        let value: serde_json::Value =
            serde_json::from_str(trimmed).map_err(|_| invalid("the secret string starts with '{' but is not valid JSON"))?;
        let token = value
            .get("access_token")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| invalid("the JSON has no access_token string"))?;
        return AccessToken::parse(token).ok_or_else(|| invalid("access_token is empty or contains whitespace"));
    }
    AccessToken::parse(trimmed).ok_or_else(|| invalid("the token contains whitespace or control characters"))
}

/// Source of the access token, with its per-container cache.
pub enum TokenProvider {
    /// `SUPABASE_ACCESS_TOKEN`, for local runs.
    Environment(AccessToken),
    /// A Secrets Manager secret, read on first use, again once `ttl` has
    /// passed, and again after a 401.
    Secret { secret_id: String, store: Box<dyn SecretStore>, ttl: Duration, cached: Mutex<Option<(AccessToken, Instant)>> },
}

impl TokenProvider {
    pub fn secret(secret_id: String, store: Box<dyn SecretStore>, ttl: Duration) -> Self {
        TokenProvider::Secret { secret_id, store, ttl, cached: Mutex::new(None) }
    }

    /// Returns the cached token, reading the secret on first use or once the
    /// cache is older than its TTL. A failed read of an expired cache keeps
    /// the cached token, so a Secrets Manager outage does not stop a warm container.
    pub async fn token(&self) -> Result<AccessToken, TokenError> {
        match self {
            TokenProvider::Environment(token) => Ok(token.clone()),
            TokenProvider::Secret { secret_id, store, ttl, cached } => {
                // The lock is held across the read so concurrent first calls read the secret once.
                let mut cached = cached.lock().await;
                let stale = match cached.as_ref() {
                    Some((token, read_at)) if read_at.elapsed() < *ttl => return Ok(token.clone()),
                    Some((token, _)) => Some(token.clone()),
                    None => None,
                };
                match (read_token(store.as_ref(), secret_id).await, stale) {
                    (Ok(token), _) => {
                        *cached = Some((token.clone(), Instant::now()));
                        Ok(token)
                    }
                    (Err(error), Some(stale)) => {
                        tracing::warn!(secret_id = %secret_id, error = %error, "reading the token secret failed, keeping the cached token");
                        Ok(stale)
                    }
                    (Err(error), None) => Err(error),
                }
            }
        }
    }

    /// Reads the secret again after Supabase rejected `rejected`; another task
    /// may have refreshed it already, in which case its token is returned.
    pub async fn refresh(&self, rejected: &AccessToken) -> Result<AccessToken, TokenError> {
        match self {
            TokenProvider::Environment(token) => Ok(token.clone()),
            TokenProvider::Secret { secret_id, store, cached, .. } => {
                let mut cached = cached.lock().await;
                if let Some((token, _)) = cached.as_ref()
                    && token != rejected
                {
                    return Ok(token.clone());
                }
                let token = read_token(store.as_ref(), secret_id).await?;
                *cached = Some((token.clone(), Instant::now()));
                Ok(token)
            }
        }
    }
}

async fn read_token(store: &dyn SecretStore, secret_id: &str) -> Result<AccessToken, TokenError> {
    let started = std::time::Instant::now();
    let secret = read_secret_string(store, secret_id)
        .await
        .map_err(|failure| TokenError::SecretStore { secret_id: secret_id.to_owned(), failure })?;
    tracing::info!(secret_id = %secret_id, elapsed_us = started.elapsed().as_micros() as u64, "token secret read");
    token_from_secret_string(secret_id, &secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct FakeStore {
        values: std::sync::Mutex<Vec<Result<String, SecretStoreFailure>>>,
        reads: Arc<AtomicUsize>,
    }

    impl SecretStore for FakeStore {
        fn secret_string<'a>(&'a self, _secret_id: &'a str) -> SecretFuture<'a> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let next = self.values.lock().unwrap().remove(0);
            Box::pin(async move { next })
        }
    }

    fn provider(values: Vec<Result<String, SecretStoreFailure>>) -> (TokenProvider, Arc<AtomicUsize>) {
        let reads = Arc::new(AtomicUsize::new(0));
        let store = FakeStore { values: std::sync::Mutex::new(values), reads: reads.clone() };
        (TokenProvider::secret("jit/token".into(), Box::new(store), Duration::from_secs(900)), reads)
    }

    #[tokio::test]
    async fn expired_cache_survives_store_outage() {
        let reads = Arc::new(AtomicUsize::new(0));
        let values = vec![Ok("sbp_one".into()), Err(SecretStoreFailure::Unreachable), Ok("sbp_two".into())];
        let store = FakeStore { values: std::sync::Mutex::new(values), reads: reads.clone() };
        let provider = TokenProvider::secret("jit/token".into(), Box::new(store), Duration::ZERO);
        assert_eq!(provider.token().await.unwrap().expose(), "sbp_one");
        assert_eq!(provider.token().await.unwrap().expose(), "sbp_one", "outage keeps the cached token");
        assert_eq!(provider.token().await.unwrap().expose(), "sbp_two", "next read replaces it");
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }

    /// A store whose reads never finish in time.
    struct HangingStore;

    impl SecretStore for HangingStore {
        fn secret_string<'a>(&'a self, _secret_id: &'a str) -> SecretFuture<'a> {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok("sbp_late".to_owned())
            })
        }
    }

    #[tokio::test]
    async fn slow_read_stops_at_the_deadline() {
        let provider = TokenProvider::secret("jit/token".into(), Box::new(HangingStore), Duration::from_secs(900));
        // 350 ms to the deadline leaves 50 ms after the response margin.
        let deadline = Instant::now() + Duration::from_millis(350);
        let started = Instant::now();
        let result = crate::supabase::DEADLINE.scope(deadline, provider.token()).await;
        assert!(started.elapsed() < Duration::from_secs(2), "the read was not cut off: {:?}", started.elapsed());
        let Err(TokenError::SecretStore { secret_id, failure }) = result else {
            panic!("expected a timed-out read, got {result:?}");
        };
        assert_eq!(secret_id, "jit/token");
        assert_eq!(failure, SecretStoreFailure::TimedOut);
    }

    #[test]
    fn sdk_errors_are_classified() {
        use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
        use aws_sdk_secretsmanager::error::ErrorMetadata;
        let service_error = |code: &str| {
            let error = GetSecretValueError::generic(ErrorMetadata::builder().code(code).build());
            SdkError::<GetSecretValueError, ()>::service_error(error, ())
        };
        assert_eq!(classify_sdk_error(&service_error("ResourceNotFoundException")), SecretStoreFailure::NotFound);
        assert_eq!(classify_sdk_error(&service_error("AccessDeniedException")), SecretStoreFailure::AccessDenied);
        assert_eq!(classify_sdk_error(&service_error("ThrottlingException")), SecretStoreFailure::Throttled);
        assert_eq!(classify_sdk_error(&service_error("InternalServiceError")), SecretStoreFailure::Other);
    }

    #[test]
    fn token_debug_is_redacted() {
        let token = AccessToken::parse("sbp_secret").unwrap();
        assert_eq!(format!("{token:?} {token}"), "AccessToken([redacted]) [redacted]");
    }

    #[test]
    fn secret_string_forms() {
        assert_eq!(token_from_secret_string("s", " sbp_abc\n").unwrap().expose(), "sbp_abc");
        assert_eq!(token_from_secret_string("s", r#"{"access_token":"sbp_x"}"#).unwrap().expose(), "sbp_x");
        assert!(token_from_secret_string("s", "").is_err());
        assert!(token_from_secret_string("s", "{not json").is_err());
        assert!(token_from_secret_string("s", r#"{"token":"x"}"#).is_err());
        assert!(token_from_secret_string("s", "two words").is_err());
    }

    #[tokio::test]
    async fn token_is_cached_after_first_read() {
        let (provider, reads) = provider(vec![Ok("sbp_one".into())]);
        provider.token().await.unwrap();
        provider.token().await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn refresh_reads_rotated_secret() {
        let (provider, reads) = provider(vec![Ok("sbp_one".into()), Ok("sbp_two".into())]);
        let first = provider.token().await.unwrap();
        let second = provider.refresh(&first).await.unwrap();
        assert_eq!(second.expose(), "sbp_two");
        assert_eq!(provider.refresh(&first).await.unwrap().expose(), "sbp_two");
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn store_failure_names_secret() {
        let (provider, _) = provider(vec![Err(SecretStoreFailure::NotFound)]);
        let error = provider.token().await.unwrap_err();
        assert!(error.detail().contains("jit/token"));
        assert!(error.detail().contains("does not exist"));
    }
}
