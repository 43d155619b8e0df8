//! Secrets Manager faults that moto server does not produce (access denied,
//! throttling, an outage after the first read), played by a small local
//! endpoint that speaks the service's JSON protocol to the real AWS SDK.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::json;

use crate::support::*;

/// One answer of the fake endpoint.
#[derive(Clone, Copy)]
enum Answer {
    Secret,
    /// A service error with this `__type`, as AWS JSON 1.1 sends it.
    Error(u16, &'static str),
}

struct FakeSecretsManager {
    address: SocketAddr,
    /// Answers still to play; the last one repeats.
    answers: Arc<Mutex<Vec<Answer>>>,
    calls: Arc<Mutex<usize>>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeSecretsManager {
    async fn start(answers: Vec<Answer>) -> FakeSecretsManager {
        let answers = Arc::new(Mutex::new(answers));
        let calls = Arc::new(Mutex::new(0));
        let (state_answers, state_calls) = (answers.clone(), calls.clone());
        let app = axum::Router::new().route(
            "/",
            post(move |headers: HeaderMap| {
                let answers = state_answers.clone();
                let calls = state_calls.clone();
                async move {
                    assert_eq!(headers["x-amz-target"], "secretsmanager.GetSecretValue");
                    *calls.lock().unwrap() += 1;
                    let answer = {
                        let mut answers = answers.lock().unwrap();
                        if answers.len() > 1 { answers.remove(0) } else { answers[0] }
                    };
                    match answer {
                        Answer::Secret => (
                            StatusCode::OK,
                            json!({
                                "ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:jit-guard/fake-AbCdEf",
                                "Name": "jit-guard/fake", "SecretString": TOKEN,
                                "VersionId": "00000000-0000-4000-8000-000000000001", "CreatedDate": 1.7e9,
                            })
                            .to_string(),
                        )
                            .into_response(),
                        Answer::Error(status, kind) => (
                            StatusCode::from_u16(status).unwrap(),
                            [("x-amzn-errortype", kind)],
                            json!({ "__type": kind, "message": "played by the test" }).to_string(),
                        )
                            .into_response(),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeSecretsManager { address, answers, calls, server }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    fn calls(&self) -> usize {
        *self.calls.lock().unwrap()
    }
}

impl Drop for FakeSecretsManager {
    fn drop(&mut self) {
        self.server.abort();
        self.answers.lock().unwrap().clear();
    }
}

#[tokio::test]
async fn access_denied_and_throttling_are_503() {
    let mut harness = Harness::start().await;
    let cases = [
        (Answer::Error(400, "AccessDeniedException"), "access was denied"),
        (Answer::Error(400, "ThrottlingException"), "throttled"),
    ];
    for (answer, detail) in cases {
        let fake = FakeSecretsManager::start(vec![answer]).await;
        let endpoint = fake.endpoint();
        let extra = [("AWS_ENDPOINT_URL", endpoint.as_str()), ("SUPABASE_TOKEN_SECRET_ID", "jit-guard/fake")];
        let projects = harness.spawn("list-projects", &extra).await;
        let response = harness.invoke(projects, url_event("GET", "/v1/projects", None)).await;
        assert_eq!(response.status, 503, "{detail}: {}", response.body_text);
        assert_eq!(response.body["code"], "token_unavailable");
        let text = response.body["detail"].as_str().unwrap();
        assert!(text.contains(detail), "{text}");
        assert!(text.contains("jit-guard/fake"), "{text}");
        assert!(fake.calls() >= 1);
    }
    assert_eq!(harness.stand_in.request_count(), 0);
}

#[tokio::test]
async fn outage_after_first_read_keeps_cached_token() {
    let mut harness = Harness::start().await;
    let fake = FakeSecretsManager::start(vec![Answer::Secret, Answer::Error(500, "InternalServiceError")]).await;
    let endpoint = fake.endpoint();
    let extra = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("SUPABASE_TOKEN_SECRET_ID", "jit-guard/fake"),
        ("SUPABASE_TOKEN_TTL_SECONDS", "1"),
        ("AWS_MAX_ATTEMPTS", "1"),
    ];
    let projects = harness.spawn("list-projects", &extra).await;
    let response = harness.invoke(projects, url_event("GET", "/v1/projects", None)).await;
    assert_eq!(response.status, 200, "{}", response.body_text);

    // The cached token is now older than its TTL, and every further read fails.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let response = harness.invoke(projects, url_event("GET", "/v1/projects", None)).await;
    assert_eq!(response.status, 200, "the cached token keeps serving: {}", response.body_text);
    assert_eq!(fake.calls(), 2, "the expired cache was read again once");
    let logs = harness.process(projects).log_lines().join("\n");
    assert!(logs.contains("keeping the cached token"), "{logs}");
}
