//! Persona signed requests, checked before Cedar and Supabase.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::support::*;

const SIGNING_SECRET: &str = "whsec_e2e_5c1f0a9b8d7e6f5a4b3c2d1e";

/// Signs as Persona does: hex HMAC-SHA256 of "t.body", computed here independently of the library.
fn persona_signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    mac.finalize().into_bytes().iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test]
async fn signed_requests_only_when_enabled() {
    let mut harness = Harness::start().await;
    let secret_arn = harness.moto.create_secret("jit-guard/persona-signing", SIGNING_SECRET).await;
    let authorize = harness.spawn("authorize-jit-access", &[("PERSONA_SIGNING_SECRET_ID", &secret_arn)]).await;
    let path = format!("/v1/projects/{PROJECT}/database/jit");
    let body = r#"{"role":"supabase_read_only_user","rhost":"10.1.2.3"}"#;
    let now = chrono::Utc::now().timestamp();

    let signed = |timestamp: i64, signatures: &[String]| {
        let mut header = format!("t={timestamp}");
        for signature in signatures {
            header.push_str(&format!(",v1={signature}"));
        }
        signed_url_event("POST", &path, body, &header)
    };
    let good = persona_signature(SIGNING_SECRET, now, body);
    let other = persona_signature("whsec_some_other_key", now, body);

    let cases = [
        ("unsigned", url_event("POST", &path, Some(body)), 401),
        ("wrong secret", signed(now, std::slice::from_ref(&other)), 401),
        ("ten minutes old", signed(now - 600, &[persona_signature(SIGNING_SECRET, now - 600, body)]), 401),
        ("garbled header", signed_url_event("POST", &path, body, "t=now,v1=zz"), 401),
        ("valid", signed(now, std::slice::from_ref(&good)), 200),
        ("rotation with two v1 values", signed(now, &[other, good]), 200),
    ];
    for (name, event, status) in cases {
        let before = harness.stand_in.request_count();
        let decisions_before = harness.decision_logs().len();
        let response = harness.invoke(authorize, event).await;
        assert_eq!(response.status, status, "{name}: {}", response.body_text);
        if status == 401 {
            assert_eq!(response.body["code"], "invalid_signature", "{name}");
            assert_eq!(harness.stand_in.request_count(), before, "{name}: nothing reached Supabase");
            assert_eq!(harness.decision_logs().len(), decisions_before, "{name}: Cedar was not asked");
        }
    }
    for line in harness.function_logs() {
        assert!(!line.contains(SIGNING_SECRET), "a log line contains the signing secret: {line}");
    }
}
