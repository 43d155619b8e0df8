//! A tiny Lambda function for testing the local Runtime API in `runtime_api`.
//!
//! It returns its event unchanged, except for a few control fields that
//! exercise the paths a real function can take:
//! - `"panic": true` panics inside the handler (lambda_runtime reports it on `/error`).
//! - `"fail": "message"` returns an `Err` from the handler.
//! - `"exit": code` ends the process in the middle of the invocation.
//! - `"sleep_ms": n` waits n milliseconds before responding.
//! - `"log": "line"` prints the line on stdout and on stderr before responding.
//! - `"show_env": true` returns the process environment instead of the event.
//! - `"stream": ["chunk", ...]` returns a streamed HTTP response made of the chunks;
//!   with `"stream_abort": true` the stream fails after its chunks.
//!
//! With env `ECHO_FUNCTION_FAIL_INIT=message` and `AWS_LAMBDA_INITIALIZATION_TYPE=snap-start`,
//! init fails: lambda_runtime itself posts `/runtime/init/error` and the process exits.

use lambda_runtime::streaming::{Body, channel};
use lambda_runtime::{
    Error, FunctionResponse, LambdaEvent, MetadataPrelude, Runtime, SnapStartResource,
    StreamResponse, layers, service_fn,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

type EchoResponse = FunctionResponse<Value, Body>;

async fn handle(event: LambdaEvent<Value>) -> Result<EchoResponse, Error> {
    let payload = event.payload;

    if let Some(line) = payload.get("log").and_then(Value::as_str) {
        println!("{line}");
        eprintln!("{line}");
    }
    if let Some(ms) = payload.get("sleep_ms").and_then(Value::as_u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if payload.get("panic") == Some(&Value::Bool(true)) {
        panic!("echo-function was asked to panic");
    }
    if let Some(message) = payload.get("fail").and_then(Value::as_str) {
        return Err(message.into());
    }
    if let Some(code) = payload.get("exit").and_then(Value::as_i64) {
        std::process::exit(i32::try_from(code).unwrap_or(1));
    }
    if payload.get("show_env") == Some(&Value::Bool(true)) {
        let env: serde_json::Map<String, Value> = std::env::vars()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        return Ok(FunctionResponse::BufferedResponse(json!({ "env": env })));
    }
    if let Some(chunks) = payload.get("stream").and_then(Value::as_array) {
        let chunks: Vec<String> = chunks
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        let abort = payload.get("stream_abort") == Some(&Value::Bool(true));
        return Ok(FunctionResponse::StreamingResponse(streamed(chunks, abort)));
    }
    Ok(FunctionResponse::BufferedResponse(payload))
}

/// Builds a streamed HTTP response (status 200, text/plain) whose body is `chunks` in order.
fn streamed(chunks: Vec<String>, abort: bool) -> StreamResponse<Body> {
    let (mut sender, body) = channel();
    tokio::spawn(async move {
        for chunk in chunks {
            if sender.send_data(chunk.into()).await.is_err() {
                return;
            }
        }
        if abort {
            sender.abort();
        }
    });
    let mut metadata_prelude = MetadataPrelude::default();
    metadata_prelude.headers.insert(
        "content-type",
        "text/plain".parse().expect("static header value"),
    );
    StreamResponse {
        metadata_prelude,
        stream: body,
    }
}

/// A SnapStart resource whose `before_snapshot` hook fails, so that lambda_runtime
/// reports an init error the way it does in a real execution environment.
struct FailingInit(String);

impl SnapStartResource for FailingInit {
    fn before_snapshot(&self) -> lambda_runtime::BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move { Err(self.0.clone().into()) })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    // Same layering as `lambda_runtime::run`, plus the optional failing resource.
    let mut runtime = Runtime::new(service_fn(handle));
    if let Ok(message) = std::env::var("ECHO_FUNCTION_FAIL_INIT") {
        runtime = runtime.register_snapstart_resource(Arc::new(FailingInit(message)));
    }
    runtime.layer(layers::TracingLayer::new()).run().await
}
