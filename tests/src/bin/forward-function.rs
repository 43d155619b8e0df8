//! A Lambda function that forwards each API Gateway request to an upstream
//! and returns the upstream's response, with nothing in between: no
//! validation, no policy decision, no log line.
//!
//! The benchmark runs it beside the real functions as a floor. It uses the
//! same runtime, event handling, HTTP library and allocator as they do (a
//! current-thread Tokio runtime, lambda_runtime with the bundle's event and
//! response types, reqwest, mimalloc), so what a
//! real function takes beyond it is what the guard adds. Unlike them, it
//! sets up no logging and forwards no query string.
//!
//! Environment: `FORWARD_UPSTREAM_URL` (for example `http://127.0.0.1:8787`)
//! and `FORWARD_TOKEN`, sent as `Authorization: Bearer <token>`.

use jit_guard::event::{HttpEvent, HttpResponse};
use lambda_runtime::{Error, LambdaEvent, service_fn};

struct Upstream {
    client: reqwest::Client,
    base: String,
    token: String,
}

async fn forward(upstream: &Upstream, event: HttpEvent) -> HttpResponse {
    // The path of a REST API event leaves out the stage.
    let url = format!("{}{}", upstream.base, event.path());
    let method = reqwest::Method::from_bytes(event.method().as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut call = upstream.client.request(method, url).bearer_auth(&upstream.token);
    if let Some(body) = event.body.filter(|body| !body.is_empty()) {
        call = call.header("content-type", "application/json").body(body);
    }
    let (status, text) = match call.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.text().await {
                Ok(text) => (status, text),
                Err(error) => (502, format!("reading the upstream response failed: {error}")),
            }
        }
        Err(error) => (502, format!("the upstream call failed: {error}")),
    };
    HttpResponse::json(status, "application/json", text)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let base = std::env::var("FORWARD_UPSTREAM_URL").map_err(|_| "set FORWARD_UPSTREAM_URL to the upstream's base URL")?;
    let token = std::env::var("FORWARD_TOKEN").map_err(|_| "set FORWARD_TOKEN to the upstream's bearer token")?;
    let upstream: &'static Upstream = Box::leak(Box::new(Upstream {
        client: jit_guard_tests::http_client(),
        base: base.trim_end_matches('/').to_owned(),
        token,
    }));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<HttpEvent>| async move {
        Ok::<_, Error>(forward(upstream, event.payload).await)
    }))
    .await
}
