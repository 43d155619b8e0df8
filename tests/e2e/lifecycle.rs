//! The grant lifecycle through the real binaries: merge-safe grants, racing
//! grants, revoking one role, and the scheduled sweep.

use std::time::Duration;

use jit_guard_tests::runtime_api::Outcome;
use jit_guard_tests::stand_in::Fault;
use serde_json::{Value, json};

use crate::support::*;

fn grants_path() -> String {
    format!("/v1/projects/{PROJECT}/database/jit/grants")
}

fn grant_body(user_id: &str, role: &str, hours: i64, cidr: &str) -> String {
    json!({
        "user_id": user_id, "role": role, "expires_at": hours_from_now(hours),
        "allowed_networks": { "allowed_cidrs": [{ "cidr": cidr }] },
    })
    .to_string()
}

/// Returns the names of the user's roles as the stand-in stores them.
async fn roles_of(harness: &Harness, user_id: &str) -> Vec<String> {
    let response = jit_guard_tests::http_client()
        .get(format!("{}/v1/projects/{PROJECT}/database/jit/list", harness.stand_in.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let listing: Value = response.json().await.unwrap();
    let mut roles: Vec<String> = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["user_id"] == user_id)
        .flat_map(|item| item["user_roles"].as_array().cloned().unwrap_or_default())
        .map(|entry| entry["role"].as_str().unwrap().to_owned())
        .collect();
    roles.sort();
    roles
}

#[tokio::test]
async fn grant_keeps_other_roles() {
    let mut harness = Harness::start().await;
    let grant = harness.spawn("grant-jit-access", &[("JIT_GUARD_SETTLE_MS", "0")]).await;

    let first = grant_body(CAROL, "jit_readonly", 2, "10.20.0.0/16");
    let response = harness.invoke(grant, url_event("POST", &grants_path(), Some(&first))).await;
    assert_eq!(response.status, 200, "{}", response.body_text);
    let second = grant_body(CAROL, "supabase_read_only_user", 1, "10.30.0.0/16");
    let response = harness.invoke(grant, url_event("POST", &grants_path(), Some(&second))).await;
    assert_eq!(response.status, 200, "{}", response.body_text);
    assert_eq!(roles_of(&harness, CAROL).await, vec!["jit_readonly", "supabase_read_only_user"]);

    // Extending a role replaces its entry instead of adding a second one.
    let extended = grant_body(CAROL, "jit_readonly", 4, "10.20.0.0/16");
    let response = harness.invoke(grant, url_event("POST", &grants_path(), Some(&extended))).await;
    assert_eq!(response.status, 200, "{}", response.body_text);
    assert_eq!(roles_of(&harness, CAROL).await, vec!["jit_readonly", "supabase_read_only_user"]);
    harness.assert_token_never_leaked();
}

#[tokio::test]
async fn grant_denied_or_dry_run_writes_nothing() {
    let mut harness = Harness::start().await;
    let grant = harness.spawn("grant-jit-access", &[("JIT_GUARD_SETTLE_MS", "0")]).await;

    let denied = grant_body(CAROL, "postgres", 2, "10.20.0.0/16");
    let response = harness.invoke(grant, url_event("POST", &grants_path(), Some(&denied))).await;
    assert_eq!(response.status, 403, "{}", response.body_text);
    assert_eq!(response.body["code"], "policy_denied");

    let allowed = grant_body(CAROL, "jit_readonly", 2, "10.20.0.0/16");
    let path = format!("{}?dry_run=true", grants_path());
    let response = harness.invoke(grant, url_event("POST", &path, Some(&allowed))).await;
    assert_eq!(response.status, 200, "{}", response.body_text);
    assert_eq!(response.body["dry_run"], true);
    assert_eq!(response.body["decision"], "allow");
    assert_eq!(response.body["request"]["roles"][0]["role"], "jit_readonly");

    let invalid = json!({ "user_id": CAROL, "roles": [] }).to_string();
    let response = harness.invoke(grant, url_event("POST", &grants_path(), Some(&invalid))).await;
    assert_eq!(response.status, 400);
    assert_eq!(harness.upstream_calls("PUT"), 0);

    let records = harness.audit_records();
    assert_eq!(records.len(), 2, "the deny and the dry run: {records:?}");
    assert!(records.iter().all(|record| record["action"] == "GrantJitAccess"));
}

#[tokio::test]
async fn racing_grants_keep_both_roles() {
    let mut harness = Harness::start().await;
    // The read-back waits longer than the delayed write takes, so each grant sees the other's write.
    let settle = [("JIT_GUARD_SETTLE_MS", "700")];
    let first = harness.spawn("grant-jit-access", &settle).await;
    let second = harness.spawn("grant-jit-access", &settle).await;
    // The first PUT to arrive is held back, so it lands after the other and replaces its list.
    harness.stand_in.inject("PUT", "/v1/projects/{ref}/database/jit", Fault::Delay(Duration::from_millis(400)), Some(1));

    let one = grant_body(CAROL, "jit_readonly", 2, "10.20.0.0/16");
    let two = grant_body(CAROL, "supabase_read_only_user", 2, "10.30.0.0/16");
    let (response_one, response_two) = tokio::join!(
        harness.invoke(first, url_event("POST", &grants_path(), Some(&one))),
        harness.invoke(second, url_event("POST", &grants_path(), Some(&two))),
    );
    assert_eq!(response_one.status, 200, "{}", response_one.body_text);
    assert_eq!(response_two.status, 200, "{}", response_two.body_text);
    assert_eq!(roles_of(&harness, CAROL).await, vec!["jit_readonly", "supabase_read_only_user"]);
    assert!(harness.upstream_calls("PUT") >= 3, "one grant wrote again after the race");
}

#[tokio::test]
async fn revoke_one_role_keeps_others() {
    let mut harness = Harness::start().await;
    let grant = harness.spawn("grant-jit-access", &[("JIT_GUARD_SETTLE_MS", "0")]).await;
    let revoke = harness.spawn("revoke-jit-role", &[("JIT_GUARD_SETTLE_MS", "0")]).await;
    for (role, cidr) in [("jit_readonly", "10.20.0.0/16"), ("supabase_read_only_user", "10.30.0.0/16")] {
        let response = harness.invoke(grant, url_event("POST", &grants_path(), Some(&grant_body(CAROL, role, 2, cidr)))).await;
        assert_eq!(response.status, 200, "{}", response.body_text);
    }

    let role_path = |role: &str| format!("/v1/projects/{PROJECT}/database/jit/{CAROL}/roles/{role}");
    let response = harness.invoke(revoke, url_event("DELETE", &role_path("jit_readonly"), None)).await;
    assert_eq!(response.status, 200, "{}", response.body_text);
    assert_eq!(roles_of(&harness, CAROL).await, vec!["supabase_read_only_user"]);

    let response = harness.invoke(revoke, url_event("DELETE", &role_path("jit_readonly"), None)).await;
    assert_eq!(response.status, 404);
    assert_eq!(response.body["code"], "role_not_granted");

    let dry_run = format!("{}?dry_run=true", role_path("supabase_read_only_user"));
    let response = harness.invoke(revoke, url_event("DELETE", &dry_run, None)).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body["request"]["roles"], json!([]));
    assert_eq!(roles_of(&harness, CAROL).await, vec!["supabase_read_only_user"]);

    // Removing the last role removes the user's mappings.
    let response = harness.invoke(revoke, url_event("DELETE", &role_path("supabase_read_only_user"), None)).await;
    assert_eq!(response.status, 200, "{}", response.body_text);
    assert!(roles_of(&harness, CAROL).await.is_empty());
    assert_eq!(harness.upstream_calls("DELETE"), 1);

    let response = harness.invoke(revoke, url_event("DELETE", &format!("/v1/projects/{PROJECT}/database/jit/{CAROL}/roles/bad\"role"), None)).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.error_fields(), vec!["role"]);
}

async fn run_sweep(harness: &mut Harness, mode: &str) -> Value {
    let sweep = harness.spawn("sweep-jit-access", &[("JIT_GUARD_SWEEP_MODE", mode)]).await;
    match harness.invoke_raw(sweep, jit_guard_tests::events::scheduled()).await {
        Outcome::Response(report) => report,
        other => panic!("the sweep did not answer: {other:?}\n{}", harness.process(sweep).log_lines().join("\n")),
    }
}

#[tokio::test]
async fn sweep_reports_without_removing() {
    let mut harness = Harness::start().await;
    let report = run_sweep(&mut harness, "report").await;
    assert_eq!(report["mode"], "report");
    assert!(report["projects_checked"].as_u64().unwrap() >= 3);
    let findings = report["findings"].as_array().unwrap();
    let reasons: Vec<(String, String)> = findings
        .iter()
        .map(|finding| (finding["role"].as_str().unwrap().to_owned(), finding["reason"].as_str().unwrap().to_owned()))
        .collect();
    // The seed gives alice an expired supabase_admin, and postgres grants that break the policies.
    assert!(reasons.contains(&("supabase_admin".into(), "expired".into())), "{reasons:?}");
    assert!(reasons.contains(&("postgres".into(), "out_of_policy".into())), "{reasons:?}");
    assert!(findings.iter().all(|finding| finding["outcome"] == "reported"));
    assert_eq!(harness.upstream_calls("PUT") + harness.upstream_calls("DELETE"), 0);

    let records = harness.audit_records();
    assert_eq!(records.len(), findings.len(), "one audit record per finding");
    assert!(records.iter().all(|record| record["action"] == "SweepJitAccess" && record["dry_run"] == true));
}

#[tokio::test]
async fn sweep_removes_in_remove_mode() {
    let mut harness = Harness::start().await;
    let report = run_sweep(&mut harness, "remove").await;
    let findings = report["findings"].as_array().unwrap();
    assert!(!findings.is_empty());
    assert!(findings.iter().all(|finding| finding["outcome"] == "removed"), "{findings:?}");

    let again = run_sweep(&mut harness, "report").await;
    assert_eq!(again["findings"], json!([]), "nothing is left to find");
    let records = harness.audit_records();
    assert!(records.iter().filter(|record| record["dry_run"] == false).all(|record| record["upstream_status"] == 200));
}
