//! A Lambda function that forwards each API Gateway request to an upstream
//! and returns the upstream's response, with nothing in between: no
//! validation, no policy decision, no log line.
//!
//! The benchmark runs it beside the real functions as a floor. It uses the
//! same runtime, event handling, HTTP library and allocator as they do (a
//! current-thread Tokio runtime, lambda_http, reqwest, mimalloc), so what a
//! real function takes beyond it is what the guard adds. Unlike them, it
//! sets up no logging and forwards no query string.
//!
//! Environment: `FORWARD_UPSTREAM_URL` (for example `http://127.0.0.1:8787`)
//! and `FORWARD_TOKEN`, sent as `Authorization: Bearer <token>`.

use lambda_http::{Body, Error, Request, RequestExt, Response, service_fn};

struct Upstream {
    client: reqwest::Client,
    base: String,
    token: String,
}

async fn forward(upstream: &Upstream, request: Request) -> Response<Body> {
    // The raw path is the resource path, without the stage that lambda_http
    // puts before REST API paths.
    let url = format!("{}{}", upstream.base, request.raw_http_path());
    let mut call = upstream.client.request(request.method().clone(), url).bearer_auth(&upstream.token);
    let body = request.body().as_ref();
    if !body.is_empty() {
        call = call.header("content-type", "application/json").body(body.to_vec());
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
    let mut response = Response::new(Body::Text(text));
    *response.status_mut() = lambda_http::http::StatusCode::from_u16(status).unwrap_or(lambda_http::http::StatusCode::BAD_GATEWAY);
    response
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
    lambda_http::run(service_fn(move |request| async move { Ok::<_, Error>(forward(upstream, request).await) })).await
}
