//! In-process cost of one warm invocation's handler, beside a bare forward of
//! the same request: no Lambda runtime, no added latency, one thread.
//!
//! Run: `cargo run --release -p jit-guard-tests --example handler_cost > /dev/null`.
//! The function's JSON log lines go to stdout and the figures to stderr.
//! `ITERATIONS` sets the timed rounds per operation (default 3000) and
//! `ONLY` one action's name, for example `ONLY=UpdateJitAccess` under `perf record`.
//!
//! Caches stay warm here. In the benchmark, each warm invocation follows at
//! least 20 ms (the stand-in's added latency) of other processes running,
//! and the same code took several times longer there.

use std::time::{Duration, Instant};

use jit_guard::Action;
use jit_guard::event::HttpEvent;
use lambda_runtime::{Context, LambdaEvent};
use jit_guard_tests::stand_in::StandIn;
use jit_guard_tests::workload::{self, PROJECT, TOKEN};

/// Returns the middle of the samples (the upper middle for an even count).
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let iterations = match std::env::var("ITERATIONS") {
        Err(_) => 3000,
        Ok(value) => match value.trim().parse::<usize>() {
            Ok(iterations) if iterations > 0 => iterations,
            _ => panic!("ITERATIONS={value:?} is not a positive whole number"),
        },
    };
    let only = std::env::var("ONLY").ok();
    let stand_in = StandIn::start(TOKEN).await;
    let base = stand_in.url();
    // SAFETY: no other thread reads the environment yet. The stand-in reads none,
    // and the function's configuration is read below.
    unsafe {
        std::env::set_var("SUPABASE_API_URL", &base);
        std::env::set_var("SUPABASE_ACCESS_TOKEN", TOKEN);
    }
    jit_guard::lambda::init_tracing();
    let (app, _config) = jit_guard::lambda::build_app().await.expect("init");
    let client = jit_guard_tests::http_client();

    let jit = format!("/v1/projects/{PROJECT}/database/jit");
    let operations = [
        (Action::GetProject, "GET", format!("/v1/projects/{PROJECT}"), None),
        (Action::ListProjects, "GET", "/v1/projects".to_owned(), None),
        (Action::UpdateJitAccess, "PUT", jit.clone(), Some(workload::update_body())),
        (Action::ListJitAccess, "GET", format!("{jit}/list"), None),
    ];
    for (action, method, path, body) in operations {
        if only.as_deref().is_some_and(|only| only != action.to_string()) {
            continue;
        }
        let event = workload::rest_event(method, &path, body.as_deref()).to_string();
        let (mut handled, mut forwarded) = (Vec::new(), Vec::new());
        for round in 0..iterations + 50 {
            let started = Instant::now();
            let request: HttpEvent = serde_json::from_str(&event).expect("a REST API event");
            let response = {
                let _logs = jit_guard::logs::batch();
                app.handle(action, LambdaEvent::new(request, Context::default())).await
            };
            let handle = started.elapsed();
            assert!((200..300).contains(&response.status()), "{action}: {}", response.status());

            // The bare forward decodes the event too, as `forward-function` does.
            let started = Instant::now();
            let _request: HttpEvent = serde_json::from_str(&event).expect("a REST API event");
            let mut call = client.request(method.parse().unwrap(), format!("{base}{path}")).bearer_auth(TOKEN);
            if let Some(body) = &body {
                call = call.header("content-type", "application/json").body(body.clone());
            }
            let text = call.send().await.expect("the stand-in answers").text().await.expect("a body");
            std::hint::black_box(text);
            let forward = started.elapsed();
            if round >= 50 {
                handled.push(handle);
                forwarded.push(forward);
            }
        }
        let (handle, forward) = (median(handled), median(forwarded));
        eprintln!(
            "{action}: handler {} µs, bare forward {} µs, guard adds {} µs (medians of {iterations})",
            handle.as_micros(),
            forward.as_micros(),
            handle.as_micros() as i64 - forward.as_micros() as i64
        );
    }
}
