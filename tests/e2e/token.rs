//! The access token from Secrets Manager (moto server): read once per
//! container, read again after rotation, and never printed.

use crate::support::*;

#[tokio::test]
async fn warm_invocations_read_the_secret_once() {
    let mut harness = Harness::start().await;
    let projects = harness.spawn("list-projects", &[]).await;
    for _ in 0..5 {
        let response = harness.invoke(projects, url_event("GET", "/v1/projects", None)).await;
        assert_eq!(response.status, 200, "{}", response.body_text);
    }
    assert_eq!(harness.moto.get_secret_value_count(), 1);
    harness.assert_token_never_leaked();
}

#[tokio::test]
async fn rotated_token_is_read_again_once() {
    let mut harness = Harness::start().await;
    let projects = harness.spawn("list-projects", &[]).await;
    let response = harness.invoke(projects, url_event("GET", "/v1/projects", None)).await;
    assert_eq!(response.status, 200);

    let rotated = "sbp_rotated0a1b2c3d4e5f60718293a4b5c6d7e8f9";
    harness.moto.put_secret_value(&harness.secret_arn, rotated).await;
    harness.stand_in.set_token(rotated);
    let response = harness.invoke(projects, url_event("GET", "/v1/projects", None)).await;
    assert_eq!(response.status, 200, "{}", response.body_text);
    assert_eq!(harness.moto.get_secret_value_count(), 2);

    for line in harness.function_logs() {
        assert!(!line.contains(rotated), "a log line contains the rotated token: {line}");
    }
    harness.assert_token_never_leaked();
}

#[tokio::test]
async fn missing_secret_is_503_naming_it() {
    let mut harness = Harness::start().await;
    let missing = "jit-guard/no-such-secret";
    let projects = harness.spawn("list-projects", &[("SUPABASE_TOKEN_SECRET_ID", missing)]).await;
    let response = harness.invoke(projects, url_event("GET", "/v1/projects", None)).await;
    assert_eq!(response.status, 503, "{}", response.body_text);
    assert_eq!(response.body["code"], "token_unavailable");
    assert!(response.body["detail"].as_str().unwrap().contains(missing));
    assert_eq!(harness.stand_in.request_count(), 0);
}

#[tokio::test]
async fn bare_token_secret_is_accepted() {
    let mut harness = Harness::start().await;
    let arn = harness.moto.create_secret("jit-guard/bare-token", TOKEN).await;
    let projects = harness.spawn("list-projects", &[("SUPABASE_TOKEN_SECRET_ID", &arn)]).await;
    let response = harness.invoke(projects, url_event("GET", "/v1/projects", None)).await;
    assert_eq!(response.status, 200, "{}", response.body_text);
}

#[tokio::test]
async fn missing_configuration_fails_init() {
    let mut harness = Harness::start().await;
    let projects = harness.spawn("list-projects", &[("SUPABASE_TOKEN_SECRET_ID", ""), ("SUPABASE_API_URL", "http://supabase.example.com")]).await;
    let outcome = harness.invoke_raw(projects, url_event("GET", "/v1/projects", None)).await;
    assert!(
        matches!(outcome, jit_guard_tests::runtime_api::Outcome::InitError(_) | jit_guard_tests::runtime_api::Outcome::Exited(_)),
        "got {outcome:?}"
    );
    let logs = harness.process(projects).log_lines().join("\n");
    assert!(logs.contains("SUPABASE_API_URL"), "init error names the variable: {logs}");
}

#[tokio::test]
async fn unusable_secret_values_are_503() {
    let mut harness = Harness::start().await;
    let cases = [
        ("jit-guard/not-json", "{\"access_token\": "),
        ("jit-guard/no-field", "{\"token\":\"sbp_x\"}"),
        ("jit-guard/blank", "   "),
        ("jit-guard/two-words", "sbp_one sbp_two"),
    ];
    for (name, value) in cases {
        let arn = harness.moto.create_secret(name, value).await;
        let projects = harness.spawn("list-projects", &[("SUPABASE_TOKEN_SECRET_ID", &arn)]).await;
        let response = harness.invoke(projects, url_event("GET", "/v1/projects", None)).await;
        assert_eq!(response.status, 503, "{name}: {}", response.body_text);
        assert_eq!(response.body["code"], "token_unavailable", "{name}");
        assert!(response.body["detail"].as_str().unwrap().contains(name), "{name}: detail names the secret");
    }
    assert_eq!(harness.stand_in.request_count(), 0);
}

#[tokio::test]
async fn unreachable_secrets_manager_is_503() {
    let mut harness = Harness::start().await;
    // Nothing listens on loopback port 9, so every Secrets Manager call fails to connect.
    let projects = harness
        .spawn("list-projects", &[("AWS_ENDPOINT_URL", "http://127.0.0.1:9"), ("AWS_MAX_ATTEMPTS", "1")])
        .await;
    let response = harness.invoke(projects, url_event("GET", "/v1/projects", None)).await;
    assert_eq!(response.status, 503, "{}", response.body_text);
    assert!(response.body["detail"].as_str().unwrap().contains("could not be reached"));
}
