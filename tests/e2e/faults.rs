//! Upstream faults through the real binaries: each one ends in a defined
//! status, retries happen only where they are safe, and nothing panics.

use std::time::{Duration, Instant};

use jit_guard_tests::stand_in::Fault;

use crate::support::*;

const GET_PROJECT: (&str, &str) = ("GET", "/v1/projects/{ref}");
const LIST_PROJECTS: (&str, &str) = ("GET", "/v1/projects");
const UPDATE: (&str, &str) = ("PUT", "/v1/projects/{ref}/database/jit");

fn project_path() -> String {
    format!("/v1/projects/{PROJECT}")
}

#[tokio::test]
async fn server_error_is_retried_then_succeeds() {
    let mut harness = Harness::start().await;
    let project = harness.spawn("get-project", &[]).await;
    harness.stand_in.inject(GET_PROJECT.0, GET_PROJECT.1, Fault::Status { status: 503, body: None }, Some(2));
    let response = harness.invoke(project, url_event("GET", &project_path(), None)).await;
    assert_eq!(response.status, 200, "{}", response.body_text);
    assert_eq!(harness.stand_in.request_count(), 3, "two failed attempts and one success");
}

#[tokio::test]
async fn persistent_server_error_is_502() {
    let mut harness = Harness::start().await;
    let project = harness.spawn("get-project", &[]).await;
    harness.stand_in.inject(GET_PROJECT.0, GET_PROJECT.1, Fault::Status { status: 500, body: Some("secret stack trace".into()) }, None);
    let response = harness.invoke(project, url_event("GET", &project_path(), None)).await;
    assert_eq!(response.status, 502);
    assert_eq!(response.body["code"], "upstream_error");
    assert!(!response.body_text.contains("stack trace"), "no upstream body reaches the caller");
    assert_eq!(harness.stand_in.request_count(), 3, "the first attempt and two retries");
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let mut harness = Harness::start().await;
    let update = harness.spawn("update-jit-access", &[]).await;
    harness.stand_in.inject(UPDATE.0, UPDATE.1, Fault::Status { status: 422, body: None }, None);
    let body = update_body(CAROL, "jit_readonly", Some(hours_from_now(1)), "allowed_cidrs", "10.20.0.0/16");
    let path = format!("/v1/projects/{PROJECT}/database/jit");
    let response = harness.invoke(update, url_event("PUT", &path, Some(&body))).await;
    assert_eq!(response.status, 502);
    assert_eq!(response.body["code"], "upstream_rejected");
    assert_eq!(harness.upstream_calls("PUT"), 1);
}

#[tokio::test]
async fn dropped_connection_is_retried() {
    let mut harness = Harness::start().await;
    let projects = harness.spawn("list-projects", &[]).await;
    harness.stand_in.inject(LIST_PROJECTS.0, LIST_PROJECTS.1, Fault::DropConnection, Some(1));
    let response = harness.invoke(projects, url_event("GET", "/v1/projects", None)).await;
    assert_eq!(response.status, 200, "{}", response.body_text);

    harness.stand_in.inject(LIST_PROJECTS.0, LIST_PROJECTS.1, Fault::DropConnection, None);
    let response = harness.invoke(projects, url_event("GET", "/v1/projects", None)).await;
    assert_eq!(response.status, 502);
    assert_eq!(response.body["code"], "upstream_unavailable");
}

#[tokio::test]
async fn malformed_bodies_are_502() {
    let mut harness = Harness::start().await;
    let projects = harness.spawn("list-projects", &[]).await;
    for fault in [Fault::MalformedBody, Fault::WrongShape] {
        harness.stand_in.inject(LIST_PROJECTS.0, LIST_PROJECTS.1, fault, Some(1));
        let response = harness.invoke(projects, url_event("GET", "/v1/projects", None)).await;
        assert_eq!(response.status, 502, "{}", response.body_text);
        assert_eq!(response.body["code"], "upstream_malformed_response");
    }
}

#[tokio::test]
async fn slow_upstream_times_out() {
    let mut harness = Harness::start().await;
    let project = harness.spawn("get-project", &[("SUPABASE_TIMEOUT_MS", "300"), ("SUPABASE_MAX_RETRIES", "0")]).await;
    harness.stand_in.inject(GET_PROJECT.0, GET_PROJECT.1, Fault::Delay(Duration::from_secs(3)), None);
    let started = Instant::now();
    let response = harness.invoke(project, url_event("GET", &project_path(), None)).await;
    assert_eq!(response.status, 504, "{}", response.body_text);
    assert_eq!(response.body["code"], "upstream_timeout");
    assert!(started.elapsed() < Duration::from_secs(3), "the timeout cut the wait short");
}

#[tokio::test]
async fn rate_limit_within_deadline_is_waited_out() {
    let mut harness = Harness::start().await;
    let projects = harness.spawn("list-projects", &[]).await;
    harness.stand_in.inject(LIST_PROJECTS.0, LIST_PROJECTS.1, Fault::RateLimited { reset_seconds: 1 }, Some(1));
    let started = Instant::now();
    let response = harness.invoke(projects, url_event("GET", "/v1/projects", None)).await;
    assert_eq!(response.status, 200, "{}", response.body_text);
    assert!(started.elapsed() >= Duration::from_secs(1), "the reset was waited out");
    assert_eq!(harness.stand_in.request_count(), 2);
}

#[tokio::test]
async fn rate_limit_past_deadline_is_429() {
    let mut harness = Harness::start().await;
    let projects = harness.spawn("list-projects", &[]).await;
    harness.stand_in.inject(LIST_PROJECTS.0, LIST_PROJECTS.1, Fault::RateLimited { reset_seconds: 45 }, None);
    let response = harness.invoke(projects, url_event("GET", "/v1/projects", None)).await;
    assert_eq!(response.status, 429);
    assert_eq!(response.body["code"], "upstream_rate_limited");
    assert_eq!(response.headers["retry-after"], "45");
    assert_eq!(harness.stand_in.request_count(), 1, "a wait past the deadline is not attempted");
}

#[tokio::test]
async fn unreachable_supabase_is_502() {
    let mut harness = Harness::start().await;
    // Port 9 (discard) on loopback has no listener here, so the connection is refused.
    let projects = harness.spawn("list-projects", &[("SUPABASE_API_URL", "http://127.0.0.1:9")]).await;
    let response = harness.invoke(projects, url_event("GET", "/v1/projects", None)).await;
    assert_eq!(response.status, 502);
    assert_eq!(response.body["code"], "upstream_unavailable");
}

#[tokio::test]
async fn faulted_lookup_blocks_the_write() {
    let mut harness = Harness::start().await;
    let update = harness.spawn("update-jit-access", &[]).await;
    harness.stand_in.inject(GET_PROJECT.0, GET_PROJECT.1, Fault::MalformedBody, None);
    let body = update_body(CAROL, "jit_readonly", Some(hours_from_now(1)), "allowed_cidrs", "10.20.0.0/16");
    let path = format!("/v1/projects/{PROJECT}/database/jit");
    let response = harness.invoke(update, url_event("PUT", &path, Some(&body))).await;
    assert_eq!(response.status, 502);
    assert_eq!(harness.upstream_calls("PUT"), 0, "no write without the project's facts");
}

/// One warm process, 1,000 invocations of good, bad and faulted calls.
#[tokio::test]
async fn thousand_invocations_stay_steady() {
    let mut harness = Harness::start().await;
    let project = harness.spawn("get-project", &[("SUPABASE_MAX_RETRIES", "0")]).await;
    let pid = harness.process(project).pid();
    let mut rss_samples = Vec::new();
    for index in 0..1000 {
        let (path, expected) = match index % 5 {
            0 | 1 => (project_path(), 200),
            2 => ("/v1/projects/not-a-ref".to_owned(), 400),
            3 => (format!("/v1/projects/{UNKNOWN_PROJECT}"), 404),
            _ => {
                harness.stand_in.inject(GET_PROJECT.0, GET_PROJECT.1, Fault::Status { status: 503, body: None }, Some(1));
                (project_path(), 502)
            }
        };
        let response = harness.invoke(project, url_event("GET", &path, None)).await;
        assert_eq!(response.status, expected, "invocation {index}: {}", response.body_text);
        if index % 100 == 99 {
            rss_samples.push(harness.process(project).peak_rss_kib().expect("the process is alive"));
        }
    }
    assert_eq!(harness.process(project).pid(), pid, "the same process served every invocation");
    let panics = harness.function_logs().iter().filter(|line| line.contains("panicked")).count();
    assert_eq!(panics, 0);
    println!("peak RSS in KiB after each 100 invocations: {rss_samples:?}");
    let first = rss_samples[0];
    let last = *rss_samples.last().unwrap();
    assert!(last <= first + 2048, "peak RSS grew from {first} KiB to {last} KiB");
}
