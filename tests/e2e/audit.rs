//! Dry runs and the audit record of every decision, through the real binaries.

use crate::support::*;

#[tokio::test]
async fn audit_records_for_allow_deny_and_dry_run() {
    let mut harness = Harness::start().await;
    let update = harness.spawn("update-jit-access", &[]).await;
    let path = format!("/v1/projects/{PROJECT}/database/jit");
    let expires_at = hours_from_now(2);

    let allowed = update_body(CAROL, "jit_readonly", Some(expires_at), "allowed_cidrs", "10.20.0.0/16");
    let response = harness.invoke(update, rest_event("PUT", &path, &[("ref", PROJECT)], Some(&allowed))).await;
    assert_eq!(response.status, 200, "{}", response.body_text);

    let denied = update_body(CAROL, "postgres", Some(expires_at), "allowed_cidrs_v6", "2001:db8:7::/48");
    let response = harness.invoke(update, rest_event("PUT", &path, &[("ref", PROJECT)], Some(&denied))).await;
    assert_eq!(response.status, 403, "{}", response.body_text);

    let dry_run_path = format!("{path}?dry_run=true");
    let response = harness.invoke(update, url_event("PUT", &dry_run_path, Some(&denied))).await;
    assert_eq!(response.status, 200, "{}", response.body_text);
    assert_eq!(response.body["dry_run"], true);
    assert_eq!(response.body["decision"], "deny");
    assert_eq!(response.body["request"]["roles"][0]["allowed_networks"]["allowed_cidrs_v6"][0]["cidr"], "2001:db8:7::/48");
    assert_eq!(response.body["denials"][0]["role"], "postgres");
    assert_eq!(response.body["denials"][0]["network"], "2001:db8:7::/48");
    assert!(response.body["denials"][0]["reasons"].as_array().unwrap().len() >= 2);
    assert_eq!(harness.upstream_calls("PUT"), 1, "only the allowed update was written");

    let records = harness.audit_records();
    assert_eq!(records.len(), 3, "one record per decision: {records:?}");
    let (allow, deny, dry_run) = (&records[0], &records[1], &records[2]);
    for record in &records {
        assert_eq!(record["caller"], CALLER_ARN);
        assert_eq!(record["action"], "UpdateJitAccess");
        assert_eq!(record["project_ref"], PROJECT);
        assert_eq!(record["organization_slug"], ORGANIZATION);
        assert_eq!(record["target_user"], CAROL);
        assert_eq!(record["policy_set_hash"].as_str().unwrap().len(), 64);
        assert!(record["request_id"].is_string(), "lambda request id: {record}");
        assert!(chrono::DateTime::parse_from_rfc3339(record["time"].as_str().unwrap()).is_ok());
    }

    assert_eq!(allow["decision"], "allow");
    assert_eq!(allow["dry_run"], false);
    assert_eq!(allow["policy_ids"], serde_json::json!(["allow-jit-within-guardrails"]));
    assert_eq!(allow["request"]["roles"][0]["expires_at"], expires_at);
    assert_eq!(allow["upstream_status"], 200);
    assert!(allow["api_request_id"].is_string(), "API Gateway request id: {allow}");

    assert_eq!(deny["decision"], "deny");
    assert_eq!(
        deny["policy_ids"],
        serde_json::json!(["deny-superuser-roles", "production-read-only-roles", "roles-allow-list"])
    );
    assert!(deny.get("upstream_status").is_none(), "no call was made: {deny}");

    assert_eq!(dry_run["decision"], "deny");
    assert_eq!(dry_run["dry_run"], true);
    assert!(dry_run.get("upstream_status").is_none(), "a dry run makes no call: {dry_run}");
    harness.assert_token_never_leaked();
}

#[tokio::test]
async fn revoke_dry_run_keeps_mapping() {
    let mut harness = Harness::start().await;
    let revoke = harness.spawn("revoke-jit-access", &[]).await;
    let path = format!("/v1/projects/{PROJECT}/database/jit/{BOB}?dry_run=true");
    let response = harness.invoke(revoke, url_event("DELETE", &path, None)).await;
    assert_eq!(response.status, 200, "{}", response.body_text);
    assert_eq!(response.body["decision"], "allow");
    assert_eq!(response.body["request"]["user_id"], BOB);
    assert_eq!(harness.stand_in.request_count(), 0);

    let records = harness.audit_records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["dry_run"], true);
    assert_eq!(records[0]["target_user"], BOB);
}
