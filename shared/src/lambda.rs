//! Init and the Lambda event loop: what every function's `main` calls.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lambda_runtime::{LambdaEvent, service_fn};
use tokio::sync::oneshot;
use tracing_subscriber::filter::{LevelFilter, filter_fn};
use tracing_subscriber::prelude::*;

use crate::config::{Config, ConfigError, TokenSource};
use crate::event::HttpEvent;
use crate::logs::LogWriter;
use crate::operations::App;
use crate::policy::{Action, Guard, PolicyLoadError};
use crate::supabase::{ClientSettings, SupabaseClient};
use crate::signature::SignatureVerifier;
use crate::token::{AwsSecretStore, TokenProvider};

/// Cause of a failed init. Init stops, so no request is served.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("invalid policies: {0}")]
    Policy(#[from] PolicyLoadError),
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("the policy load thread stopped without a result")]
    PolicyThread,
}

/// Sets up JSON logs on stdout. The level comes from `JIT_GUARD_LOG_LEVEL`,
/// else Lambda's `AWS_LAMBDA_LOG_LEVEL`, else `info`.
pub fn init_tracing() {
    let level = std::env::var("JIT_GUARD_LOG_LEVEL")
        .or_else(|_| std::env::var("AWS_LAMBDA_LOG_LEVEL"))
        .unwrap_or_else(|_| "info".to_owned())
        .to_lowercase();
    // Lambda's own levels include FATAL, which is an error here.
    let level = if level == "fatal" { "error".to_owned() } else { level };
    let level = level.parse::<LevelFilter>().unwrap_or(LevelFilter::INFO);
    // Spans are never printed (no current span, no span list), so they are
    // turned off: lambda_runtime opens one per invocation, and recording it
    // would format its fields into a string on every call.
    // The filter's result is cached per call site, and the hint lets
    // disabled levels skip even that lookup.
    let filter = filter_fn(move |metadata| metadata.is_event() && *metadata.level() <= level).with_max_level_hint(level);
    let logs = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .without_time()
        .with_writer(LogWriter)
        .with_filter(filter);
    tracing_subscriber::registry().with(logs).init();
}

/// How long init waits for the token read. During an outage the SDK's
/// retries would hold init for seconds, and the first request reads again
/// anyway.
const TOKEN_READ_LIMIT: Duration = Duration::from_secs(1);

/// Builds the application from the environment: configuration, policies, token source and client.
///
/// The policy load runs on its own thread, beside the client set-up and the
/// token read. In a new process the load took 2.5 to 4 ms in the benchmark
/// (x86_64), because Cedar builds its lexers on first use. The clients took
/// 0.5 to 0.8 ms in most starts.
///
/// The token is read during init, so the first request does not wait for
/// it. When that read fails, the failure is logged and the first request
/// reads again.
pub async fn build_app() -> Result<(App<SupabaseClient>, Config), InitError> {
    let started = Instant::now();
    let config = Config::from_env()?;
    let config_us = started.elapsed().as_micros() as u64;

    let policies = spawn_policy_load(config.policy_dir.clone());

    let clients_started = Instant::now();
    let tokens = match &config.token_source {
        TokenSource::SecretsManager { secret_id } => {
            TokenProvider::secret(secret_id.clone(), Box::new(AwsSecretStore::from_environment().await), config.token_ttl)
        }
        TokenSource::Environment(token) => {
            tracing::warn!("the Supabase access token comes from SUPABASE_ACCESS_TOKEN; use SUPABASE_TOKEN_SECRET_ID outside local runs");
            TokenProvider::Environment(token.clone())
        }
    };
    let settings = ClientSettings {
        base_url: config.supabase_api_url.clone(),
        connect_timeout: config.connect_timeout,
        request_timeout: config.request_timeout,
        max_retries: config.max_retries,
    };
    let supabase = SupabaseClient::new(&settings, tokens)?;
    let clients_us = clients_started.elapsed().as_micros() as u64;

    let token_read = async {
        // A failed or cut-off read leaves the cache empty, so the first request reads again.
        match tokio::time::timeout(TOKEN_READ_LIMIT, supabase.tokens().token()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "reading the token during init failed; the first request reads it again");
            }
            Err(_) => {
                tracing::warn!(limit_ms = TOKEN_READ_LIMIT.as_millis() as u64, "the token read took too long for init; the first request reads it");
            }
        }
        Instant::now()
    };
    let policies_loaded = async {
        let loaded = match policies {
            Some(receiver) => receiver.await.map_err(|_| InitError::PolicyThread),
            None => Ok(load_policies(config.policy_dir.as_deref())),
        };
        (loaded, Instant::now())
    };
    let (token_ready, (loaded, policies_ready)) = tokio::join!(token_read, policies_loaded);
    let (guard, policy_elapsed) = loaded?;
    let guard = guard?;
    // How long init waited for the token once everything else was ready: the
    // part of the secret read that the policy load did not hide.
    let token_wait_us = token_ready.saturating_duration_since(policies_ready).as_micros() as u64;

    tracing::info!(
        config_us,
        policy_us = policy_elapsed.as_micros() as u64,
        clients_us,
        token_wait_us,
        init_us = started.elapsed().as_micros() as u64,
        policies = guard.policy_count(),
        supabase_api_url = %config.supabase_api_url,
        "init complete"
    );
    let mut app = App::new(guard, supabase, config.facts_ttl).with_settle(config.settle);
    if let Some(secret_id) = &config.signing_secret_id {
        let store = Box::new(AwsSecretStore::from_environment().await);
        app = app.with_signature_verifier(SignatureVerifier::new(secret_id.clone(), store, config.signature_tolerance));
    } else {
        tracing::warn!("PERSONA_SIGNING_SECRET_ID is not set, so requests are not checked for a Persona signature");
    }
    Ok((app, config))
}

/// A policy load and its duration.
type LoadedPolicies = (Result<Guard, PolicyLoadError>, Duration);

fn load_policies(directory: Option<&Path>) -> LoadedPolicies {
    let started = Instant::now();
    let guard = match directory {
        Some(directory) => Guard::from_directory(directory),
        None => Guard::from_defaults(),
    };
    (guard, started.elapsed())
}

/// Starts loading the policies on a new thread; `None` when no thread could be started.
fn spawn_policy_load(directory: Option<PathBuf>) -> Option<oneshot::Receiver<LoadedPolicies>> {
    let (sender, receiver) = oneshot::channel();
    let spawned = std::thread::Builder::new().name("policy-load".into()).spawn(move || {
        // The receiver is only gone when init has failed already.
        let _ = sender.send(load_policies(directory.as_deref()));
    });
    spawned.ok().map(|_| receiver)
}

/// Runs the function for `action` until the Lambda runtime stops it.
pub async fn run(action: Action) -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let app = match build_app().await {
        Ok((app, _config)) => app,
        Err(error) => {
            tracing::error!(action = %action, error = %error, "init failed");
            return Err(error.into());
        }
    };
    // The app lives as long as the process, so a leaked reference spares an Arc per call.
    let app: &'static App<SupabaseClient> = Box::leak(Box::new(app));
    let handler = service_fn(move |event: LambdaEvent<HttpEvent>| async move {
        Ok::<_, Infallible>(app.handle(action, event).await)
    });
    // The same as lambda_runtime::run (lambda_runtime 1.5), plus an outer
    // layer whose future ends after the response is posted.
    lambda_runtime::Runtime::new(handler)
        .layer(lambda_runtime::layers::TracingLayer::new())
        .layer(BatchLogsLayer)
        .run()
        .await
}

/// Keeps each invocation's log lines until its response has been posted to
/// the Runtime API, then writes them with one `write`. Each write to
/// stdout's pipe wakes the process that reads it, and that reader can take
/// the CPU from the function. After the response, the write no longer
/// delays the caller. It still counts toward the invocation's duration and
/// timeout. Lambda's execution environment documentation says the runtime
/// marks an invocation complete by requesting the next event, and that
/// Lambda freezes the environment only after that. lambda_runtime sends
/// that request after this layer's future completes, so the write comes first.
struct BatchLogsLayer;

impl<S> lambda_runtime::tower::Layer<S> for BatchLogsLayer {
    type Service = BatchLogs<S>;

    fn layer(&self, inner: S) -> BatchLogs<S> {
        BatchLogs(inner)
    }
}

struct BatchLogs<S>(S);

impl<S> lambda_runtime::Service<lambda_runtime::LambdaInvocation> for BatchLogs<S>
where
    S: lambda_runtime::Service<lambda_runtime::LambdaInvocation, Response = ()>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<(), S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(context)
    }

    fn call(&mut self, invocation: lambda_runtime::LambdaInvocation) -> Self::Future {
        // The batch opens before the inner service starts. Its lines are written
        // when the future completes (after the response is posted) or is dropped.
        let logs = crate::logs::batch();
        let posted = self.0.call(invocation);
        Box::pin(async move {
            let result = posted.await;
            drop(logs);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::tests::writes;
    use lambda_runtime::tower::{Layer as _, Service as _, service_fn};
    use lambda_runtime::{Error, LambdaInvocation};

    fn invocation() -> LambdaInvocation {
        let (parts, ()) = http::Response::new(()).into_parts();
        LambdaInvocation { parts, body: Default::default(), context: Default::default() }
    }

    #[tokio::test]
    async fn batch_logs_write_after_response() {
        // A stand-in for lambda_runtime's chain, whose future ends once the response is posted.
        let inner = service_fn(|_: LambdaInvocation| async {
            crate::logs::write_lines(b"access decision\n").unwrap();
            assert!(writes().is_empty(), "a line reached stdout before the response was posted");
            Ok::<(), Error>(())
        });
        BatchLogsLayer.layer(inner).call(invocation()).await.unwrap();
        assert_eq!(writes(), [b"access decision\n".to_vec()]);
    }

    #[tokio::test]
    async fn batch_logs_write_when_posting_fails() {
        let inner = service_fn(|_: LambdaInvocation| async {
            crate::logs::write_lines(b"upstream failed\n").unwrap();
            Err::<(), Error>("the Runtime API refused the response".into())
        });
        let posted = BatchLogsLayer.layer(inner).call(invocation()).await;
        assert!(posted.is_err());
        assert_eq!(writes(), [b"upstream failed\n".to_vec()]);
    }
}
