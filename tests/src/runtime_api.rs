//! A local AWS Lambda Runtime API (version 2018-06-01) that runs one real function binary.
//!
//! [`FunctionProcess::spawn`] starts an HTTP server on 127.0.0.1 and the binary with
//! `AWS_LAMBDA_RUNTIME_API` pointing at it, the way the Lambda service starts a
//! custom runtime. The binary's own `lambda_runtime` then long-polls
//! `GET /2018-06-01/runtime/invocation/next` and posts each result to
//! `POST .../invocation/{id}/response` (buffered or streamed) or `.../{id}/error`.
//! Init failures arrive on `POST /2018-06-01/runtime/init/error`.
//!
//! Invocations run one at a time, as in a Lambda execution environment.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::net::TcpListener;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Account id used in the invoked function ARN; Lambda's documentation example account.
const ACCOUNT_ID: &str = "123456789012";

/// Set this env var (to anything) to copy every line the function prints to the test's stderr.
const SHOW_LOGS_ENV: &str = "JIT_GUARD_SHOW_FUNCTION_LOGS";

/// The end of one invocation, as the Lambda service would see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The function's response. For a buffered response this is the JSON it posted
    /// (for an HTTP function, an API Gateway proxy response `{statusCode, headers, body, isBase64Encoded}`).
    /// A streamed HTTP response is reassembled into the same shape, plus `cookies`.
    Response(Value),
    /// The function reported an error: the posted body (`{errorType, errorMessage}`),
    /// or `errorType` `Runtime.StreamError` for a stream that failed midway,
    /// or `errorType` `Sandbox.Timedout` when no response arrived within the timeout.
    Error(Value),
    /// The process posted an init error (and usually exited) before responding.
    InitError(Value),
    /// The process exited before responding, with this exit code (`None`: killed by a signal).
    Exited(Option<i32>),
}

/// One finished invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The `Lambda-Runtime-Aws-Request-Id` the function was given.
    pub request_id: String,
    pub outcome: Outcome,
    /// From the event being queued to the outcome; time spent waiting for an earlier
    /// invocation of the same process is not counted. It includes this
    /// server's own work around the function: serializing the event, handing
    /// it to the long-poll, reading the posted JSON and handing the outcome back.
    pub elapsed: Duration,
    /// The function's own time, measured as Lambda measures an invocation's
    /// duration: from handing out the event (the response to `GET .../next`)
    /// to having the whole posted response or error. `None` when neither arrived.
    pub duration: Option<Duration>,
    /// Instant the whole posted response or error arrived. `None` when neither did.
    pub responded_at: Option<Instant>,
}

/// A running function binary and the Runtime API server it talks to.
pub struct FunctionProcess {
    pid: u32,
    function_name: String,
    function_arn: String,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<QueuedEvent>,
    exit: watch::Receiver<Option<Option<i32>>>,
    logs: Arc<LogBuffer>,
    /// Sending (or dropping) this makes the watcher task kill the child.
    kill: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    /// Held for the length of an invocation: Lambda gives a runtime one event at a time.
    turn: tokio::sync::Mutex<()>,
    /// Whether `invoke` waits for the output to go quiet before returning.
    settle_logs: std::sync::atomic::AtomicBool,
}

/// An event waiting for the function's next `GET .../invocation/next`.
struct QueuedEvent {
    request_id: String,
    body: Vec<u8>,
    deadline_ms: u64,
    function_arn: String,
    trace_id: String,
}

/// State shared between the server handlers and [`FunctionProcess`].
struct Shared {
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<QueuedEvent>>,
    /// Invocations still waiting for their outcome, by request id.
    pending: Mutex<HashMap<String, Waiting>>,
    /// Every request id handed out, so that a late response gets 410 Gone instead of 400.
    issued: Mutex<HashSet<String>>,
    init_error: watch::Sender<Option<Value>>,
}

/// An invocation waiting for its outcome.
struct Waiting {
    outcome: oneshot::Sender<Delivered>,
    /// Instant `GET .../next` handed the event out.
    handed_out: Option<Instant>,
}

impl Waiting {
    fn new(outcome: oneshot::Sender<Delivered>) -> Self {
        Waiting { outcome, handed_out: None }
    }
}

/// An outcome the function posted, when it arrived, and its Lambda-style duration.
struct Delivered {
    outcome: Outcome,
    received: Instant,
    duration: Option<Duration>,
}

#[derive(Default)]
struct LogBuffer {
    lines: Mutex<Vec<String>>,
    /// Bytes read from stdout and stderr so far; lets `invoke` see when reading has caught up.
    bytes_read: AtomicU64,
}

impl FunctionProcess {
    /// Starts the Runtime API on 127.0.0.1 (port chosen by the OS) and spawns `binary`.
    ///
    /// The child's environment is cleared except `PATH` and `HOME`, then gets what
    /// Lambda sets for a custom runtime (`AWS_LAMBDA_RUNTIME_API`, `AWS_LAMBDA_FUNCTION_NAME`
    /// = the binary's file name, `AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128`,
    /// `AWS_LAMBDA_FUNCTION_VERSION=$LATEST`, log group and stream, `AWS_REGION` and
    /// `AWS_DEFAULT_REGION=us-east-1`), then `env`, whose pairs win over those defaults.
    pub async fn spawn(
        binary: &Path,
        env: &[(String, String)],
    ) -> std::io::Result<FunctionProcess> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;

        let (events, queue) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queue: tokio::sync::Mutex::new(queue),
            pending: Mutex::new(HashMap::new()),
            issued: Mutex::new(HashSet::new()),
            init_error: watch::channel(None).0,
        });
        let server = tokio::spawn(serve(listener, shared.clone()));

        let default_name = binary
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "function".to_owned());
        let mut vars = lambda_env(&default_name, &address.to_string());
        vars.extend(env.iter().cloned());
        let function_name = vars["AWS_LAMBDA_FUNCTION_NAME"].clone();
        let region = vars["AWS_REGION"].clone();
        let function_arn = format!("arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{function_name}");

        let mut command = crate::child::clean_command(binary);
        command
            .envs(&vars)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|error| {
            server.abort();
            std::io::Error::new(
                error.kind(),
                format!("cannot start function binary {}: {error}", binary.display()),
            )
        })?;
        let pid = child.id().expect("a just-spawned child has a pid");

        let logs = Arc::new(LogBuffer::default());
        let echo_prefix =
            std::env::var_os(SHOW_LOGS_ENV).map(|_| format!("[{function_name} {pid}]"));
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(collect_lines(stdout, logs.clone(), echo_prefix.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(collect_lines(stderr, logs.clone(), echo_prefix));
        }

        let (exit_tx, exit) = watch::channel(None);
        let (kill, kill_rx) = oneshot::channel();
        tokio::spawn(watch_child(child, kill_rx, exit_tx));

        Ok(FunctionProcess {
            pid,
            function_name,
            function_arn,
            shared,
            events,
            exit,
            logs,
            kill: Some(kill),
            server,
            turn: tokio::sync::Mutex::new(()),
            settle_logs: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Sends one event and waits for its outcome.
    ///
    /// The function gets `Lambda-Runtime-Deadline-Ms` = now + `timeout`. Without a response
    /// within `timeout`, the outcome is `Error` with `errorType` `Sandbox.Timedout`. The
    /// process keeps running, and its late response gets 410 Gone. If the process exits
    /// first, the outcome is `InitError` when it posted one, else `Exited`.
    /// Concurrent calls wait for each other.
    pub async fn invoke(&self, event: Value, timeout: Duration) -> Invocation {
        let _turn = self.turn.lock().await;
        let started = Instant::now();
        let request_id = uuid::Uuid::new_v4().to_string();

        if let Some(outcome) = self.exit_outcome() {
            return Invocation {
                request_id,
                outcome,
                elapsed: started.elapsed(),
                duration: None,
                responded_at: None,
            };
        }

        let (outcome_tx, outcome_rx) = oneshot::channel();
        self.shared
            .pending
            .lock()
            .unwrap()
            .insert(request_id.clone(), Waiting::new(outcome_tx));
        self.shared
            .issued
            .lock()
            .unwrap()
            .insert(request_id.clone());
        let body = serde_json::to_vec(&event).expect("a serde_json::Value always serializes");
        let queued = QueuedEvent {
            request_id: request_id.clone(),
            body,
            deadline_ms: epoch_ms(SystemTime::now() + timeout),
            function_arn: self.function_arn.clone(),
            trace_id: new_trace_id(),
        };
        // The receiver lives in `shared`, which this struct owns, so it cannot be gone.
        let _ = self.events.send(queued);

        let mut exit = self.exit.clone();
        let mut init_error = self.shared.init_error.subscribe();
        let (outcome, duration, responded_at) = tokio::select! {
            // Biased so that a response posted just before the process exits still counts.
            biased;
            posted = outcome_rx => match posted {
                Ok(Delivered { outcome, received, duration }) => (outcome, duration, Some(received)),
                Err(_) => (timed_out(timeout), None, None),
            },
            _ = init_error.wait_for(Option::is_some) => {
                (Outcome::InitError(self.shared.init_error.borrow().clone().unwrap_or(Value::Null)), None, None)
            }
            _ = exit.wait_for(Option::is_some) => {
                (self.exit_outcome().expect("the exit status was just published"), None, None)
            }
            _ = tokio::time::sleep(timeout) => (timed_out(timeout), None, None),
        };
        // A late response or a still-queued event for this id is now stale.
        self.shared.pending.lock().unwrap().remove(&request_id);
        let elapsed = started.elapsed();

        if self.settle_logs.load(Ordering::Relaxed) {
            self.settle_logs().await;
        }
        Invocation {
            request_id,
            outcome,
            elapsed,
            duration,
            responded_at,
        }
    }

    /// Turns off the wait for quiet output after each invocation, which adds
    /// about 20 ms per call; benchmarks turn it off, log assertions need it on.
    pub fn set_settle_logs(&self, settle: bool) {
        self.settle_logs.store(settle, Ordering::Relaxed);
    }

    /// Returns every line the process printed on stdout and stderr so far, in the order read.
    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lines.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Returns `AWS_LAMBDA_FUNCTION_NAME` as set for the process.
    pub fn function_name(&self) -> &str {
        &self.function_name
    }

    /// Returns `Some(exit code)` once the process has exited (`Some(None)` when a signal killed it).
    pub fn exit_status(&self) -> Option<Option<i32>> {
        *self.exit.borrow()
    }

    /// Peak resident set size of the child in KiB (`VmHWM` in /proc/PID/status);
    /// `None` once the process has exited.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        if self.exit_status().is_some() {
            return None;
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        // The line reads "VmHWM:     1234 kB".
        line.split_whitespace().nth(1)?.parse().ok()
    }

    fn exit_outcome(&self) -> Option<Outcome> {
        let code = (*self.exit.borrow())?;
        Some(match self.shared.init_error.borrow().clone() {
            Some(error) => Outcome::InitError(error),
            None => Outcome::Exited(code),
        })
    }

    /// Waits until the log readers have drained what the process wrote before responding.
    ///
    /// The bundle's functions write an invocation's log lines right after posting its
    /// response. This waits until the reader tasks find no new bytes for 20 ms (250 ms at
    /// most), so that `log_lines` called right after `invoke` returns them.
    async fn settle_logs(&self) {
        let limit = Instant::now() + Duration::from_millis(250);
        let mut seen = self.logs.bytes_read.load(Ordering::SeqCst);
        while Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = self.logs.bytes_read.load(Ordering::SeqCst);
            if now == seen {
                return;
            }
            seen = now;
        }
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        // The watcher task kills the child through its handle (so by its pid) and reaps it.
        // If the tokio runtime is already gone, the task is dropped with the child, and
        // `kill_on_drop` kills it then.
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        self.server.abort();
    }
}

/// Path of a workspace binary built by cargo: `<target>/<profile>/<name>`.
///
/// `<target>` is `CARGO_TARGET_DIR` (relative paths are taken from the workspace root)
/// or the workspace's `target`; `<profile>` is env `JIT_GUARD_PROFILE` or `debug`.
///
/// # Panics
/// When the binary is missing, with the command that builds it.
pub fn function_binary(name: &str) -> PathBuf {
    let workspace_root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace");
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root.join(dir),
        None => workspace_root.join("target"),
    };
    let profile = std::env::var("JIT_GUARD_PROFILE").unwrap_or_else(|_| "debug".to_owned());
    // Cargo writes the built-in `dev` and `test` profiles to `debug`, `bench` to `release`.
    let profile_dir = match profile.as_str() {
        "dev" | "test" => "debug",
        "bench" => "release",
        other => other,
    };
    let path = target_dir.join(profile_dir).join(name);
    if !path.is_file() {
        let build = match profile_dir {
            "debug" => "cargo build --workspace --bins".to_owned(),
            "release" => "cargo build --workspace --bins --release".to_owned(),
            other => format!("cargo build --workspace --bins --profile {other}"),
        };
        panic!(
            "function binary `{name}` not found at {}: run `{build}` in {} first",
            path.display(),
            workspace_root.display()
        );
    }
    path
}

/// Builds the environment Lambda gives a custom runtime, before the caller's pairs.
fn lambda_env(function_name: &str, runtime_api: &str) -> BTreeMap<String, String> {
    let log_stream = format!(
        "{}/[$LATEST]{}",
        chrono::Utc::now().format("%Y/%m/%d"),
        uuid::Uuid::new_v4().simple()
    );
    [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", function_name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{function_name}"),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", log_stream),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect()
}

fn timed_out(timeout: Duration) -> Outcome {
    Outcome::Error(json!({
        "errorType": "Sandbox.Timedout",
        "errorMessage": format!("Task timed out after {:.2} seconds", timeout.as_secs_f64()),
    }))
}

fn epoch_ms(time: SystemTime) -> u64 {
    let since_epoch = time
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since_epoch.as_millis()).expect("epoch milliseconds fit in u64")
}

/// Creates an X-Ray trace header in the format Lambda passes (`Root=1-<epoch hex>-<96 bits>`).
fn new_trace_id() -> String {
    let seconds = epoch_ms(SystemTime::now()) / 1000;
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "Root=1-{seconds:08x}-{};Parent={};Sampled=0",
        &random[..24],
        &random[16..]
    )
}

/// Waits for the child to exit, or kills it when asked, then publishes the exit code.
async fn watch_child(
    mut child: Child,
    kill: oneshot::Receiver<()>,
    exit: watch::Sender<Option<Option<i32>>>,
) {
    let status = tokio::select! {
        status = child.wait() => status,
        // Stop requested, or the owner is gone. Either way the child must not outlive it.
        _ = kill => {
            let _ = child.start_kill();
            child.wait().await
        }
    };
    let code = status.ok().and_then(|status| status.code());
    exit.send_replace(Some(code));
}

async fn collect_lines(
    stream: impl AsyncRead + Unpin,
    logs: Arc<LogBuffer>,
    echo_prefix: Option<String>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                while line
                    .last()
                    .is_some_and(|byte| *byte == b'\n' || *byte == b'\r')
                {
                    line.pop();
                }
                let text = String::from_utf8_lossy(&line).into_owned();
                if let Some(prefix) = &echo_prefix {
                    eprintln!("{prefix} {text}");
                }
                logs.lines.lock().unwrap().push(text);
                logs.bytes_read.fetch_add(read as u64, Ordering::SeqCst);
            }
        }
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(invocation_response),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(invocation_error),
        )
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .fallback(unknown_route)
        .with_state(shared);
    // Fails only if accepting connections fails for good, and the test then gets a timeout outcome.
    let _ = axum::serve(listener, app).await;
}

/// `GET /2018-06-01/runtime/invocation/next`: long-polls until an event is queued.
async fn next_invocation(State(shared): State<Arc<Shared>>) -> Response {
    let mut queue = shared.queue.lock().await;
    loop {
        let Some(event) = queue.recv().await else {
            return api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                "the runtime API is shutting down",
            );
        };
        let mut response = Response::new(Body::from(event.body));
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        for (name, value) in [
            ("lambda-runtime-aws-request-id", event.request_id.clone()),
            ("lambda-runtime-deadline-ms", event.deadline_ms.to_string()),
            ("lambda-runtime-invoked-function-arn", event.function_arn),
            ("lambda-runtime-trace-id", event.trace_id),
        ] {
            headers.insert(
                name,
                HeaderValue::from_str(&value).expect("generated header values are ASCII"),
            );
        }
        // Skip an event whose invocation already gave up waiting (timeout).
        // The duration starts here, once the response is ready to be written.
        match shared.pending.lock().unwrap().get_mut(&event.request_id) {
            Some(waiting) => waiting.handed_out = Some(Instant::now()),
            None => continue,
        }
        return response;
    }
}

/// `POST /2018-06-01/runtime/invocation/{id}/response`, buffered or streamed.
async fn invocation_response(
    State(shared): State<Arc<Shared>>,
    UrlPath(request_id): UrlPath<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(error) => {
            let message = format!("cannot read the response body: {error}");
            return api_error(StatusCode::BAD_REQUEST, "InvalidResponseBody", &message);
        }
    };
    // The duration ends once the whole body is here, before it is parsed.
    let received = Instant::now();
    let trailers = collected.trailers().cloned();
    let bytes = collected.to_bytes();
    let streaming = header_is(
        &parts.headers,
        "lambda-runtime-function-response-mode",
        "streaming",
    );
    let outcome = if streaming {
        streamed_outcome(&parts.headers, trailers.as_ref(), &bytes)
    } else {
        Outcome::Response(json_or_string(&bytes))
    };
    deliver(&shared, &request_id, outcome, received)
}

/// `POST /2018-06-01/runtime/invocation/{id}/error`.
async fn invocation_error(
    State(shared): State<Arc<Shared>>,
    UrlPath(request_id): UrlPath<String>,
    request: Request,
) -> Response {
    match request.into_body().collect().await {
        Ok(collected) => {
            let received = Instant::now();
            let outcome = Outcome::Error(json_or_string(&collected.to_bytes()));
            deliver(&shared, &request_id, outcome, received)
        }
        Err(error) => {
            let message = format!("cannot read the error body: {error}");
            api_error(StatusCode::BAD_REQUEST, "InvalidErrorBody", &message)
        }
    }
}

/// `POST /2018-06-01/runtime/init/error`.
async fn init_error(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    match request.into_body().collect().await {
        Ok(collected) => {
            shared
                .init_error
                .send_replace(Some(json_or_string(&collected.to_bytes())));
            accepted()
        }
        Err(error) => {
            let message = format!("cannot read the init error body: {error}");
            api_error(StatusCode::BAD_REQUEST, "InvalidErrorBody", &message)
        }
    }
}

async fn unknown_route(request: Request) -> Response {
    let message = format!(
        "no Runtime API route for {} {}",
        request.method(),
        request.uri()
    );
    api_error(StatusCode::NOT_FOUND, "UnknownRoute", &message)
}

/// Hands `outcome`, received at `received`, to the invocation waiting for it.
fn deliver(shared: &Shared, request_id: &str, outcome: Outcome, received: Instant) -> Response {
    let waiting = shared.pending.lock().unwrap().remove(request_id);
    match waiting {
        Some(waiting) => {
            let duration = waiting.handed_out.map(|handed_out| received.saturating_duration_since(handed_out));
            let _ = waiting.outcome.send(Delivered { outcome, received, duration });
            accepted()
        }
        None if shared.issued.lock().unwrap().contains(request_id) => api_error(
            StatusCode::GONE,
            "InvalidStateTransition",
            &format!("invocation {request_id} already ended (responded, timed out or abandoned)"),
        ),
        None => api_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            &format!("no invocation has request id {request_id}"),
        ),
    }
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, axum::Json(json!({ "status": "OK" }))).into_response()
}

fn api_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "errorType": error_type, "errorMessage": message })),
    )
        .into_response()
}

fn header_is(headers: &HeaderMap, name: &str, expected: &str) -> bool {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case(expected))
}

fn json_or_string(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Text lambda_runtime 1.5 writes into the body (not as HTTP trailers) when a stream fails.
const IN_BAND_ERROR_TYPE: &[u8] = b"Lambda-Runtime-Function-Error-Type: ";
const IN_BAND_ERROR_BODY: &str = "Lambda-Runtime-Function-Error-Body: ";

/// Turns a streamed response into an `Outcome`.
///
/// An HTTP integration stream (`application/vnd.awslambda.http-integration-response`)
/// is a JSON prelude `{statusCode, headers, cookies}`, eight NUL bytes, then the body;
/// it becomes `{statusCode, headers, cookies, body, isBase64Encoded}`. Any other
/// stream is taken whole, like a buffered response. A failure is reported either in
/// HTTP trailers or, as lambda_runtime 1.5 does, as trailer-like text at the body's end.
fn streamed_outcome(headers: &HeaderMap, trailers: Option<&HeaderMap>, bytes: &[u8]) -> Outcome {
    let trailer = |name: &str| {
        trailers
            .and_then(|map| map.get(name))
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let (mut bytes, mut error) = (bytes, None);
    if let Some(error_type) = trailer("lambda-runtime-function-error-type") {
        let body = trailer("lambda-runtime-function-error-body").unwrap_or_default();
        error = Some((error_type, body));
    } else if let Some(start) = find_last(bytes, IN_BAND_ERROR_TYPE) {
        let text = String::from_utf8_lossy(&bytes[start..]).into_owned();
        let mut lines = text.split("\r\n");
        let error_type = lines.next().unwrap_or_default()[IN_BAND_ERROR_TYPE.len()..].to_owned();
        let body = lines
            .find_map(|line| line.strip_prefix(IN_BAND_ERROR_BODY))
            .unwrap_or_default()
            .to_owned();
        error = Some((error_type, body));
        bytes = &bytes[..start];
    }

    let http_integration = header_is(
        headers,
        "content-type",
        "application/vnd.awslambda.http-integration-response",
    );
    let response = if http_integration {
        http_integration_response(bytes)
    } else {
        json_or_string(bytes)
    };

    match error {
        None => Outcome::Response(response),
        Some((error_type, encoded_body)) => {
            // The error body is base64 of the message; keep it as sent if it is not.
            let message = BASE64
                .decode(encoded_body.trim())
                .map(|decoded| String::from_utf8_lossy(&decoded).into_owned())
                .unwrap_or(encoded_body);
            Outcome::Error(json!({
                "errorType": error_type,
                "errorMessage": message,
                "partialResponse": response,
            }))
        }
    }
}

fn http_integration_response(bytes: &[u8]) -> Value {
    const DELIMITER: &[u8] = &[0; 8];
    let (prelude, body) = match bytes
        .windows(DELIMITER.len())
        .position(|window| window == DELIMITER)
    {
        Some(at) => (&bytes[..at], &bytes[at + DELIMITER.len()..]),
        // No delimiter: lambda_runtime always sends one, so treat it all as body.
        None => (&b"{}"[..], bytes),
    };
    let prelude = json_or_string(prelude);
    let (body, is_base64) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (BASE64.encode(body), true),
    };
    json!({
        "statusCode": prelude.get("statusCode").cloned().unwrap_or(json!(200)),
        "headers": prelude.get("headers").cloned().unwrap_or(json!({})),
        "cookies": prelude.get("cookies").cloned().unwrap_or(json!([])),
        "body": body,
        "isBase64Encoded": is_base64,
    })
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .rposition(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    async fn echo(env: &[(&str, &str)]) -> FunctionProcess {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        FunctionProcess::spawn(&function_binary("echo-function"), &env)
            .await
            .expect("echo-function starts")
    }

    fn response(invocation: &Invocation) -> &Value {
        match &invocation.outcome {
            Outcome::Response(value) => value,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    #[test]
    fn function_process_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<FunctionProcess>();
    }

    #[tokio::test]
    async fn invoke_returns_echoed_event() {
        let function = echo(&[]).await;
        let event = json!({ "hello": "world", "n": [1, 2, 3] });
        let invocation = function.invoke(event.clone(), TIMEOUT).await;
        assert_eq!(
            response(&invocation),
            &event,
            "logs: {:?}",
            function.log_lines()
        );
        assert!(uuid::Uuid::parse_str(&invocation.request_id).is_ok());
        assert!(invocation.elapsed < TIMEOUT);
    }

    #[tokio::test]
    async fn invoke_duration_covers_handler_sleep() {
        let function = echo(&[]).await;
        let invocation = function.invoke(json!({ "sleep_ms": 50 }), TIMEOUT).await;
        assert_eq!(response(&invocation), &json!({ "sleep_ms": 50 }));
        let duration = invocation.duration.expect("an answered invocation has a duration");
        assert!(duration >= Duration::from_millis(50), "the function slept 50 ms, duration {duration:?}");
        assert!(duration <= invocation.elapsed, "duration {duration:?} over elapsed {:?}", invocation.elapsed);
        assert!(invocation.responded_at.is_some_and(|at| at <= Instant::now()));
    }

    #[tokio::test]
    async fn invoke_sequence_reuses_one_process() {
        let function = echo(&[]).await;
        let pid = function.pid();
        let mut request_ids = HashSet::new();
        for n in 0..5 {
            let invocation = function.invoke(json!({ "n": n }), TIMEOUT).await;
            assert_eq!(response(&invocation), &json!({ "n": n }));
            request_ids.insert(invocation.request_id);
            assert_eq!(function.pid(), pid);
            assert_eq!(
                function.exit_status(),
                None,
                "the process must keep running"
            );
        }
        assert_eq!(
            request_ids.len(),
            5,
            "every invocation gets its own request id"
        );
    }

    #[tokio::test]
    async fn invoke_serializes_concurrent_calls() {
        let function = echo(&[]).await;
        let started = Instant::now();
        let (first, second) = tokio::join!(
            function.invoke(json!({ "call": 1, "sleep_ms": 200 }), TIMEOUT),
            function.invoke(json!({ "call": 2, "sleep_ms": 200 }), TIMEOUT),
        );
        assert_eq!(response(&first)["call"], 1);
        assert_eq!(response(&second)["call"], 2);
        // One after the other, so both sleeps add up.
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "took {:?}",
            started.elapsed()
        );
        assert!(
            second.elapsed < Duration::from_millis(400),
            "elapsed counts only its own turn"
        );
    }

    #[tokio::test]
    async fn invoke_panic_returns_error_then_serves() {
        let function = echo(&[]).await;
        let pid = function.pid();
        let invocation = function.invoke(json!({ "panic": true }), TIMEOUT).await;
        let Outcome::Error(error) = &invocation.outcome else {
            panic!("expected an error, got {:?}", invocation.outcome);
        };
        let message = error["errorMessage"].as_str().unwrap_or_default();
        assert!(
            message.contains("echo-function was asked to panic"),
            "error: {error}"
        );

        let after = function.invoke(json!({ "still": "alive" }), TIMEOUT).await;
        assert_eq!(response(&after), &json!({ "still": "alive" }));
        assert_eq!(function.pid(), pid);
    }

    #[tokio::test]
    async fn invoke_handler_error_returns_error() {
        let function = echo(&[]).await;
        let invocation = function
            .invoke(json!({ "fail": "no such project" }), TIMEOUT)
            .await;
        let Outcome::Error(error) = &invocation.outcome else {
            panic!("expected an error, got {:?}", invocation.outcome);
        };
        assert_eq!(error["errorMessage"], "no such project");
        assert!(error["errorType"].is_string(), "error: {error}");
    }

    #[tokio::test]
    async fn invoke_after_init_exit_returns_exited() {
        let function = FunctionProcess::spawn(Path::new("/bin/false"), &[])
            .await
            .expect("/bin/false starts");
        let invocation = function.invoke(json!({}), TIMEOUT).await;
        assert_eq!(invocation.outcome, Outcome::Exited(Some(1)));
        assert_eq!(
            function.peak_rss_kib(),
            None,
            "no memory figure once exited"
        );
    }

    #[tokio::test]
    async fn invoke_mid_invocation_exit_returns_exited() {
        let function = echo(&[]).await;
        let invocation = function.invoke(json!({ "exit": 3 }), TIMEOUT).await;
        assert_eq!(invocation.outcome, Outcome::Exited(Some(3)));
        let again = function.invoke(json!({}), TIMEOUT).await;
        assert_eq!(
            again.outcome,
            Outcome::Exited(Some(3)),
            "a dead process returns no response"
        );
    }

    #[tokio::test]
    async fn invoke_after_init_error_returns_init_error() {
        let function = echo(&[
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "snap-start"),
            ("ECHO_FUNCTION_FAIL_INIT", "cannot read the Supabase token"),
        ])
        .await;
        let invocation = function.invoke(json!({}), TIMEOUT).await;
        let Outcome::InitError(error) = &invocation.outcome else {
            panic!(
                "expected an init error, got {:?}; logs: {:?}",
                invocation.outcome,
                function.log_lines()
            );
        };
        assert_eq!(error["errorMessage"], "cannot read the Supabase token");
    }

    #[tokio::test]
    async fn spawn_missing_binary_names_path() {
        let missing = Path::new("/nonexistent/function-binary");
        let Err(error) = FunctionProcess::spawn(missing, &[]).await else {
            panic!("spawning a missing binary must fail");
        };
        assert!(
            error.to_string().contains("/nonexistent/function-binary"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn spawn_env_is_lambda_plus_caller() {
        let function = echo(&[
            ("SUPABASE_SECRET_ID", "jit-guard/token"),
            ("AWS_REGION", "eu-west-1"),
        ])
        .await;
        let invocation = function.invoke(json!({ "show_env": true }), TIMEOUT).await;
        let env = &response(&invocation)["env"];
        assert_eq!(env["SUPABASE_SECRET_ID"], "jit-guard/token");
        assert_eq!(env["AWS_REGION"], "eu-west-1", "the caller's pairs win");
        assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "echo-function");
        assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "128");
        assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "$LATEST");
        assert!(
            env["AWS_LAMBDA_RUNTIME_API"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:")
        );
        assert!(
            env["AWS_LAMBDA_LOG_STREAM_NAME"]
                .as_str()
                .unwrap()
                .contains("[$LATEST]")
        );
        assert_eq!(
            env["AWS_LAMBDA_LOG_GROUP_NAME"],
            "/aws/lambda/echo-function"
        );
        // Nothing of the test's own environment (CARGO_*, RUST_*, ...) may leak through.
        let allowed_prefixes = ["AWS_", "_X_AMZN_", "PATH", "HOME", "SUPABASE_SECRET_ID"];
        for key in env.as_object().unwrap().keys() {
            assert!(
                allowed_prefixes
                    .iter()
                    .any(|prefix| key.starts_with(prefix)),
                "unexpected env var {key}"
            );
        }
    }

    #[tokio::test]
    async fn next_sends_invocation_headers() {
        // The echo function cannot see its context, so check the headers on the wire instead.
        let (events, queue) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queue: tokio::sync::Mutex::new(queue),
            pending: Mutex::new(HashMap::new()),
            issued: Mutex::new(HashSet::new()),
            init_error: watch::channel(None).0,
        });
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, shared.clone()));

        let (outcome_tx, outcome_rx) = oneshot::channel();
        shared
            .pending
            .lock()
            .unwrap()
            .insert("id-1".to_owned(), Waiting::new(outcome_tx));
        shared.issued.lock().unwrap().insert("id-1".to_owned());
        let deadline_ms = epoch_ms(SystemTime::now() + TIMEOUT);
        events
            .send(QueuedEvent {
                request_id: "id-1".to_owned(),
                body: br#"{"a":1}"#.to_vec(),
                deadline_ms,
                function_arn: "arn:aws:lambda:us-east-1:123456789012:function:f".to_owned(),
                trace_id: new_trace_id(),
            })
            .unwrap();

        let client = crate::http_client();
        let base = format!("http://{address}/2018-06-01/runtime");
        let next = client
            .get(format!("{base}/invocation/next"))
            .send()
            .await
            .unwrap();
        assert_eq!(next.status(), 200);
        let headers = next.headers().clone();
        assert_eq!(headers["lambda-runtime-aws-request-id"], "id-1");
        assert_eq!(
            headers["lambda-runtime-deadline-ms"],
            deadline_ms.to_string().as_str()
        );
        assert_eq!(
            headers["lambda-runtime-invoked-function-arn"],
            "arn:aws:lambda:us-east-1:123456789012:function:f"
        );
        assert!(
            headers["lambda-runtime-trace-id"]
                .to_str()
                .unwrap()
                .starts_with("Root=1-")
        );
        assert_eq!(next.json::<Value>().await.unwrap(), json!({ "a": 1 }));

        let posted = client
            .post(format!("{base}/invocation/id-1/response"))
            .body("{\"ok\":true}")
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 202);
        let delivered = outcome_rx.await.unwrap();
        assert_eq!(delivered.outcome, Outcome::Response(json!({ "ok": true })));
        assert!(delivered.duration.is_some(), "an event handed out and answered has a duration");

        let again = client
            .post(format!("{base}/invocation/id-1/response"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 410, "a second response is stale");
        let unknown = client
            .post(format!("{base}/invocation/nope/response"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 400);
        server.abort();
    }

    #[tokio::test]
    async fn invoke_reassembles_streamed_response() {
        let function = echo(&[]).await;
        let invocation = function
            .invoke(json!({ "stream": ["hello, ", "world"] }), TIMEOUT)
            .await;
        let value = response(&invocation);
        assert_eq!(value["statusCode"], 200);
        assert_eq!(value["headers"]["content-type"], "text/plain");
        assert_eq!(value["body"], "hello, world");
        assert_eq!(value["isBase64Encoded"], false);
    }

    #[tokio::test]
    async fn invoke_stream_failure_returns_error() {
        let function = echo(&[]).await;
        let invocation = function
            .invoke(json!({ "stream": ["part"], "stream_abort": true }), TIMEOUT)
            .await;
        let Outcome::Error(error) = &invocation.outcome else {
            panic!("expected an error, got {:?}", invocation.outcome);
        };
        assert_eq!(error["errorType"], "Runtime.StreamError");
        assert_eq!(error["partialResponse"]["body"], "part");
        let after = function.invoke(json!({ "ok": 1 }), TIMEOUT).await;
        assert_eq!(response(&after), &json!({ "ok": 1 }));
    }

    #[tokio::test]
    async fn invoke_timeout_keeps_process_serving() {
        let function = echo(&[]).await;
        let slow = function
            .invoke(json!({ "sleep_ms": 1500 }), Duration::from_millis(300))
            .await;
        let Outcome::Error(error) = &slow.outcome else {
            panic!("expected a timeout, got {:?}", slow.outcome);
        };
        assert_eq!(error["errorType"], "Sandbox.Timedout");
        assert!(slow.elapsed < Duration::from_millis(1500));
        assert_eq!(slow.duration, None, "no response arrived, so there is no duration");
        assert_eq!(slow.responded_at, None);

        let next = function
            .invoke(json!({ "after": "timeout" }), TIMEOUT)
            .await;
        assert_eq!(response(&next), &json!({ "after": "timeout" }));
    }

    #[tokio::test]
    async fn log_lines_contain_stdout_and_stderr() {
        let function = echo(&[]).await;
        function
            .invoke(json!({ "log": "marker-7f3a" }), TIMEOUT)
            .await;
        let matching = function
            .log_lines()
            .into_iter()
            .filter(|line| line == "marker-7f3a")
            .count();
        assert_eq!(
            matching,
            2,
            "once from stdout, once from stderr: {:?}",
            function.log_lines()
        );
    }

    #[tokio::test]
    async fn peak_rss_present_while_running() {
        let function = echo(&[]).await;
        function.invoke(json!({}), TIMEOUT).await;
        let rss = function
            .peak_rss_kib()
            .expect("a running process has VmHWM");
        assert!(rss > 100, "peak RSS {rss} KiB is implausibly small");
        assert!(rss < 1024 * 1024, "peak RSS {rss} KiB is over 1 GiB");
    }

    #[tokio::test]
    async fn drop_kills_child() {
        let function = echo(&[]).await;
        let pid = function.pid();
        let mut exit = function.exit.clone();
        drop(function);
        tokio::time::timeout(TIMEOUT, exit.wait_for(Option::is_some))
            .await
            .expect("the child exits soon after drop")
            .expect("the watcher publishes the exit");
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is gone"
        );
    }

    #[test]
    fn function_binary_missing_names_build_command() {
        let panic = std::panic::catch_unwind(|| function_binary("no-such-function")).unwrap_err();
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("no-such-function"), "{message}");
        assert!(
            message.contains("cargo build --workspace --bins"),
            "{message}"
        );
    }
}
