//! The default guardrails through the real update and authorize binaries:
//! allowed grants reach Supabase, denied ones do not, and broken policies
//! stop every function at init.

use jit_guard_tests::runtime_api::Outcome;

use crate::support::*;

/// One update request and the policies expected to deny it, if any.
struct PolicyCase {
    name: &'static str,
    project: &'static str,
    body: String,
    denied_by: &'static [&'static str],
}

fn update_cases() -> Vec<PolicyCase> {
    let two_hours = Some(hours_from_now(2));
    vec![
        PolicyCase {
            name: "listed role, IPv4 range, 2 hours",
            project: PROJECT,
            body: update_body(CAROL, "jit_readonly", two_hours, "allowed_cidrs", "10.20.0.0/16"),
            denied_by: &[],
        },
        PolicyCase {
            name: "listed role, IPv6 range, 2 hours",
            project: PROJECT,
            body: update_body(CAROL, "jit_readonly", two_hours, "allowed_cidrs_v6", "2001:db8:42::/48"),
            denied_by: &[],
        },
        PolicyCase {
            name: "write role on a production project",
            project: PROJECT,
            body: update_body(CAROL, "jit_support", two_hours, "allowed_cidrs", "10.20.0.0/16"),
            denied_by: &["production-read-only-roles"],
        },
        PolicyCase {
            name: "member without MFA",
            project: PROJECT,
            body: update_body(BOB, "jit_readonly", two_hours, "allowed_cidrs", "10.20.0.0/16"),
            denied_by: &["target-user-has-mfa"],
        },
        PolicyCase {
            name: "user outside the organization",
            project: PROJECT,
            body: update_body(ERIN, "jit_readonly", two_hours, "allowed_cidrs", "10.20.0.0/16"),
            denied_by: &["target-user-has-mfa", "target-user-is-member"],
        },
        PolicyCase {
            name: "INACTIVE project",
            project: INACTIVE_PROJECT,
            body: update_body(CAROL, "jit_readonly", two_hours, "allowed_cidrs", "10.20.0.0/16"),
            denied_by: &["project-is-healthy"],
        },
        PolicyCase {
            name: "superuser role",
            project: PROJECT,
            body: update_body(CAROL, "postgres", two_hours, "allowed_cidrs", "10.20.0.0/16"),
            denied_by: &["deny-superuser-roles", "production-read-only-roles", "roles-allow-list"],
        },
        PolicyCase {
            name: "unlisted role",
            project: PROJECT,
            body: update_body(CAROL, "analyst", two_hours, "allowed_cidrs", "10.20.0.0/16"),
            denied_by: &["production-read-only-roles", "roles-allow-list"],
        },
        PolicyCase {
            name: "no expiry",
            project: PROJECT,
            body: update_body(CAROL, "jit_readonly", None, "allowed_cidrs", "10.20.0.0/16"),
            denied_by: &["expiry-required"],
        },
        PolicyCase {
            name: "9 hours",
            project: PROJECT,
            body: update_body(CAROL, "jit_readonly", Some(hours_from_now(9)), "allowed_cidrs", "10.20.0.0/16"),
            denied_by: &["expiry-at-most-8-hours"],
        },
        PolicyCase {
            name: "IPv4 range outside the permitted ones",
            project: PROJECT,
            body: update_body(CAROL, "jit_readonly", two_hours, "allowed_cidrs", "198.51.100.0/24"),
            denied_by: &["networks-within-permitted-ranges"],
        },
        PolicyCase {
            name: "IPv6 range outside the permitted ones",
            project: PROJECT,
            body: update_body(CAROL, "jit_readonly", two_hours, "allowed_cidrs_v6", "2001:db9::/32"),
            denied_by: &["networks-within-permitted-ranges"],
        },
        PolicyCase {
            name: "open IPv4 range",
            project: PROJECT,
            body: update_body(CAROL, "jit_readonly", two_hours, "allowed_cidrs", "0.0.0.0/0"),
            denied_by: &["deny-open-ranges", "networks-within-permitted-ranges"],
        },
        PolicyCase {
            name: "open IPv6 range",
            project: PROJECT,
            body: update_body(CAROL, "jit_readonly", two_hours, "allowed_cidrs_v6", "::/0"),
            denied_by: &["deny-open-ranges", "networks-within-permitted-ranges"],
        },
    ]
}

#[tokio::test]
async fn update_guardrails_decide_before_supabase() {
    let mut harness = Harness::start().await;
    let update = harness.spawn("update-jit-access", &[]).await;

    for case in update_cases() {
        let path = format!("/v1/projects/{}/database/jit", case.project);
        let before = harness.upstream_calls("PUT");
        let response =
            harness.invoke(update, rest_event("PUT", &path, &[("ref", case.project)], Some(&case.body))).await;
        let sent = harness.upstream_calls("PUT") - before;
        if case.denied_by.is_empty() {
            assert_eq!(response.status, 200, "{}: {}", case.name, response.body_text);
            assert_eq!(sent, 1, "{}: one upstream call", case.name);
        } else {
            assert_eq!(response.status, 403, "{}: {}", case.name, response.body_text);
            assert_eq!(response.body["code"], "policy_denied", "{}", case.name);
            assert_eq!(response.body["policy_ids"], serde_json::json!(case.denied_by), "{}", case.name);
            assert_eq!(sent, 0, "{}: nothing sent", case.name);
        }
    }

    let decisions = harness.decision_logs();
    assert_eq!(decisions.len(), update_cases().len(), "one decision log line per request");
    let denied = decisions.iter().filter(|decision| decision["decision"] == "deny").count();
    assert_eq!(denied, 12);
    for decision in &decisions {
        assert_eq!(decision["caller"], CALLER_ARN);
        assert_eq!(decision["action"], "UpdateJitAccess");
        assert!(decision["project_ref"].is_string(), "project ref is logged: {decision}");
        assert!(decision["target_user"].is_string(), "target user is logged: {decision}");
        assert!(decision["policy_ids"].is_string(), "policy ids are logged: {decision}");
    }
    harness.assert_token_never_leaked();
}

#[tokio::test]
async fn authorize_guardrails_check_remote_host() {
    let mut harness = Harness::start().await;
    let authorize = harness.spawn("authorize-jit-access", &[]).await;
    let path = format!("/v1/projects/{PROJECT}/database/jit");
    let cases = [
        (r#"{"role":"supabase_read_only_user","rhost":"192.168.1.20"}"#, 200),
        (r#"{"role":"supabase_read_only_user","rhost":"fd12::20"}"#, 200),
        (r#"{"role":"supabase_read_only_user","rhost":"198.51.100.20"}"#, 403),
        (r#"{"role":"supabase_read_only_user","rhost":"2001:db9::20"}"#, 403),
        (r#"{"role":"postgres","rhost":"10.0.0.20"}"#, 403),
    ];
    for (body, status) in cases {
        let before = harness.upstream_calls("POST");
        let response = harness.invoke(authorize, url_event("POST", &path, Some(body))).await;
        assert_eq!(response.status, status, "{body}: {}", response.body_text);
        let sent = harness.upstream_calls("POST") - before;
        assert_eq!(sent, usize::from(status == 200), "{body}: upstream calls");
    }
}

#[tokio::test]
async fn broken_policy_fails_closed_at_init() {
    let mut harness = Harness::start().await;
    let broken = policy_dir("@id(\"half\")\npermit (principal, action, resource) when { context.role == };\n");
    let unknown_attribute = policy_dir(
        "@id(\"typo\")\nforbid (principal, action == JitGuard::Action::\"UpdateJitAccess\", resource)\nwhen { context.expiry > 0 };\n",
    );
    let path = format!("/v1/projects/{PROJECT}/database/jit");

    for directory in [&broken, &unknown_attribute] {
        let policy_dir = directory.path().to_str().unwrap();
        for (function, method, body) in [
            ("update-jit-access", "PUT", update_body(CAROL, "jit_readonly", Some(hours_from_now(1)), "allowed_cidrs", "10.20.0.0/16")),
            ("authorize-jit-access", "POST", r#"{"role":"supabase_read_only_user","rhost":"10.1.2.3"}"#.to_owned()),
        ] {
            let handle = harness.spawn(function, &[("JIT_GUARD_POLICY_DIR", policy_dir)]).await;
            let outcome = harness.invoke_raw(handle, url_event(method, &path, Some(&body))).await;
            assert!(
                matches!(outcome, Outcome::InitError(_) | Outcome::Exited(_)),
                "{function} must not serve with broken policies, got {outcome:?}"
            );
            let logs = harness.process(handle).log_lines().join("\n");
            assert!(logs.contains("policies.cedar:"), "the init error names the file and line: {logs}");
        }
    }
    assert_eq!(harness.stand_in.request_count(), 0);
}

#[tokio::test]
async fn lookups_are_cached_per_container() {
    let mut harness = Harness::start().await;
    let update = harness.spawn("update-jit-access", &[]).await;
    let path = format!("/v1/projects/{PROJECT}/database/jit");
    for _ in 0..5 {
        let body = update_body(CAROL, "jit_readonly", Some(hours_from_now(2)), "allowed_cidrs", "10.20.0.0/16");
        let response = harness.invoke(update, url_event("PUT", &path, Some(&body))).await;
        assert_eq!(response.status, 200, "{}", response.body_text);
    }
    assert_eq!(harness.upstream_calls("PUT"), 5);
    assert_eq!(harness.upstream_calls("GET"), 2, "one project and one member lookup: {:?}", harness.stand_in.requests());
}
