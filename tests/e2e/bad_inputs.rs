//! Bad input through the real binaries: each case is a 4xx naming the field,
//! and the stand-in's request log shows that nothing reached Supabase.

use std::collections::HashMap;

use crate::support::*;

/// One malformed request and the field its error must name.
struct Case {
    function: &'static str,
    method: &'static str,
    path: String,
    body: Option<String>,
    status: u16,
    field: &'static str,
}

fn case(function: &'static str, method: &'static str, path: &str, body: Option<&str>, field: &'static str) -> Case {
    Case { function, method, path: path.to_owned(), body: body.map(str::to_owned), status: 400, field }
}

fn cases() -> Vec<Case> {
    let jit = format!("/v1/projects/{PROJECT}/database/jit");
    let later = hours_from_now(2);
    let role = |entry: &str| format!(r#"{{"user_id":"{CAROL}","roles":[{entry}]}}"#);
    let networks = |networks: &str| role(&format!(r#"{{"role":"jit_readonly","expires_at":{later},"allowed_networks":{networks}}}"#));

    let mut cases = vec![
        // Path parameters.
        case("get-project", "GET", "/v1/projects/abcdefghijklmnopqrs", None, "ref"),
        case("get-project", "GET", "/v1/projects/abcdefghijklmnopqrstu", None, "ref"),
        case("get-project", "GET", "/v1/projects/ABCDEFGHIJKLMNOPQRST", None, "ref"),
        case("get-project", "GET", "/v1/projects/abcdefghij0123456789", None, "ref"),
        case("get-project", "GET", "/v1/projects/..%2F..%2Fv1%2Fprojects", None, "ref"),
        case("get-project", "GET", "/v1/projects/abcdefghijklmnopqrs%C3%A9", None, "ref"),
        case("list-jit-access", "GET", "/v1/projects/abc/database/jit/list", None, "ref"),
        case("list-organization-members", "GET", "/v1/organizations/acme%2Fsecurity/members", None, "slug"),
        case("list-organization-members", "GET", "/v1/organizations/acme.security/members", None, "slug"),
        case("list-organization-members", "GET", "/v1/organizations/%D0%B0cme/members", None, "slug"),
        case("revoke-jit-access", "DELETE", &format!("{jit}/not-a-uuid"), None, "user_id"),
        case("revoke-jit-access", "DELETE", &format!("{jit}/..%2F..%2Fsecrets"), None, "user_id"),
        case("revoke-jit-access", "DELETE", &format!("{jit}/33333333333343338333333333333333"), None, "user_id"),
        case("revoke-jit-access", "DELETE", &format!("/v1/projects/short/database/jit/{CAROL}"), None, "ref"),
        // authorize-jit-access bodies.
        case("authorize-jit-access", "POST", &jit, None, "body"),
        case("authorize-jit-access", "POST", &jit, Some("not json"), "body"),
        case("authorize-jit-access", "POST", &jit, Some("[]"), "body"),
        case("authorize-jit-access", "POST", &jit, Some(r#"{"rhost":"10.1.2.3"}"#), "role"),
        case("authorize-jit-access", "POST", &jit, Some(r#"{"role":"jit_readonly"}"#), "rhost"),
        case("authorize-jit-access", "POST", &jit, Some(r#"{"role":"","rhost":"10.1.2.3"}"#), "role"),
        case("authorize-jit-access", "POST", &jit, Some(r#"{"role":7,"rhost":"10.1.2.3"}"#), "role"),
        case("authorize-jit-access", "POST", &jit, Some(r#"{"role":"jit\"x","rhost":"10.1.2.3"}"#), "role"),
        case("authorize-jit-access", "POST", &jit, Some(r#"{"role":"jit\u0000x","rhost":"10.1.2.3"}"#), "role"),
        case("authorize-jit-access", "POST", &jit, Some(r#"{"role":"jit_readonly","rhost":"10.1.2"}"#), "rhost"),
        case("authorize-jit-access", "POST", &jit, Some(r#"{"role":"jit_readonly","rhost":"10.1.2.0/24"}"#), "rhost"),
        case("authorize-jit-access", "POST", &jit, Some(r#"{"role":"jit_readonly","rhost":"fe80::1%eth0"}"#), "rhost"),
        case("authorize-jit-access", "POST", &jit, Some(r#"{"role":"jit_readonly","rhost":"::ffff:10.1.2.3"}"#), "rhost"),
        case("authorize-jit-access", "POST", &jit, Some(r#"{"role":"jit_readonly","rhost":"db.example.com"}"#), "rhost"),
        case("authorize-jit-access", "POST", &jit, Some(r#"{"role":"jit_readonly","rhost":"10.1.2.3","user":"x"}"#), "user"),
        case(
            "authorize-jit-access",
            "POST",
            &jit,
            Some(r#"{"role":"jit_readonly","role":"postgres","rhost":"10.1.2.3"}"#),
            "body",
        ),
        // update-jit-access bodies.
        case("update-jit-access", "PUT", &jit, Some(r#"{"roles":[{"role":"jit_readonly"}]}"#), "user_id"),
        case("update-jit-access", "PUT", &jit, Some(&format!(r#"{{"user_id":"{CAROL}"}}"#)), "roles"),
        case("update-jit-access", "PUT", &jit, Some(&format!(r#"{{"user_id":"{CAROL}","roles":[]}}"#)), "roles"),
        case("update-jit-access", "PUT", &jit, Some(&format!(r#"{{"user_id":"{CAROL}","roles":{{}}}}"#)), "roles"),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&format!(r#"{{"user_id":"{CAROL}","user_roles":[{{"role":"jit_readonly"}}]}}"#)),
            "user_roles",
        ),
        case("update-jit-access", "PUT", &jit, Some(&role(r#"{"expires_at":1}"#)), "roles[0].role"),
        case("update-jit-access", "PUT", &jit, Some(&role(r#""jit_readonly""#)), "roles[0]"),
        case("update-jit-access", "PUT", &jit, Some(&role(&format!(r#"{{"role":"{}"}}"#, "r".repeat(64)))), "roles[0].role"),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&role(&format!(r#"{{"role":"jit_readonly","expires_at":{}}}"#, later * 1000))),
            "roles[0].expires_at",
        ),
        case("update-jit-access", "PUT", &jit, Some(&role(r#"{"role":"jit_readonly","expires_at":1000}"#)), "roles[0].expires_at"),
        case("update-jit-access", "PUT", &jit, Some(&role(r#"{"role":"jit_readonly","expires_at":-60}"#)), "roles[0].expires_at"),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&role(&format!(r#"{{"role":"jit_readonly","expires_at":{later}.5}}"#))),
            "roles[0].expires_at",
        ),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&role(r#"{"role":"jit_readonly","expires_at":"next friday"}"#)),
            "roles[0].expires_at",
        ),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&role(r#"{"role":"jit_readonly","branches_only":"yes"}"#)),
            "roles[0].branches_only",
        ),
        case("update-jit-access", "PUT", &jit, Some(&role(r#"{"role":"jit_readonly","ttl":3600}"#)), "roles[0].ttl"),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&role(r#"{"role":"jit_readonly"},{"role":"jit_readonly"}"#)),
            "roles[1].role",
        ),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&networks(r#"{"allowed_cidrs":[{"cidr":"10.1.2.3/16"}]}"#)),
            "roles[0].allowed_networks.allowed_cidrs[0].cidr",
        ),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&networks(r#"{"allowed_cidrs":[{"cidr":"2001:db8::/32"}]}"#)),
            "roles[0].allowed_networks.allowed_cidrs[0].cidr",
        ),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&networks(r#"{"allowed_cidrs_v6":[{"cidr":"10.0.0.0/8"}]}"#)),
            "roles[0].allowed_networks.allowed_cidrs_v6[0].cidr",
        ),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&networks(r#"{"allowed_cidrs":[{"cidr":"10.1.2.3"}]}"#)),
            "roles[0].allowed_networks.allowed_cidrs[0].cidr",
        ),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&networks(r#"{"allowed_cidrs":[{"cidr":"10.0.0.0/33"}]}"#)),
            "roles[0].allowed_networks.allowed_cidrs[0].cidr",
        ),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&networks(r#"{"allowed_cidrs_v6":[{"cidr":"::ffff:10.0.0.0/104"}]}"#)),
            "roles[0].allowed_networks.allowed_cidrs_v6[0].cidr",
        ),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&networks(r#"{"allowed_cidrs":["10.0.0.0/8"]}"#)),
            "roles[0].allowed_networks.allowed_cidrs[0]",
        ),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&networks(r#"{"allowed_ips":[{"cidr":"10.0.0.0/8"}]}"#)),
            "roles[0].allowed_networks.allowed_ips",
        ),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&networks(r#"{"allowed_cidrs":[{"cidr":"10.0.0.0/8"},{"cidr":"10.0.0.0/8"}]}"#)),
            "roles[0].allowed_networks.allowed_cidrs[1].cidr",
        ),
        case("update-jit-access", "PUT", &jit, Some(&networks(r#""10.0.0.0/8""#)), "roles[0].allowed_networks"),
    ];

    // Oversized body: rejected before parsing with 413.
    let huge = format!(r#"{{"user_id":"{CAROL}","roles":[{{"role":"{}"}}]}}"#, "x".repeat(70_000));
    cases.push(Case { function: "update-jit-access", method: "PUT", path: jit.clone(), body: Some(huge), status: 413, field: "" });
    // Too many role entries.
    let many: Vec<String> = (0..21).map(|index| format!(r#"{{"role":"jit_{index}"}}"#)).collect();
    cases.push(case("update-jit-access", "PUT", &jit, Some(&role(&many.join(","))), "roles"));
    cases
}

#[tokio::test]
async fn bad_inputs_rejected_without_upstream_calls() {
    let mut harness = Harness::start().await;
    let cases = cases();
    assert!(cases.len() >= 40, "the table has {} cases", cases.len());

    let mut handles = HashMap::new();
    for case in &cases {
        if !handles.contains_key(case.function) {
            let handle = harness.spawn(case.function, &[]).await;
            handles.insert(case.function, handle);
        }
    }

    for case in &cases {
        let event = url_event(case.method, &case.path, case.body.as_deref());
        let response = harness.invoke(handles[case.function], event).await;
        let label = format!("{} {} {:?}", case.method, case.path, case.body.as_deref().map(|body| &body[..body.len().min(120)]));
        assert_eq!(response.status, case.status, "status of {label}: {}", response.body_text);
        if case.status == 400 {
            assert_eq!(response.body["code"], "invalid_request", "code of {label}");
            assert!(
                response.error_fields().iter().any(|field| field == case.field),
                "{label}: expected field {:?} in {:?}",
                case.field,
                response.error_fields()
            );
        } else {
            assert_eq!(response.body["code"], "payload_too_large", "code of {label}");
        }
    }

    assert_eq!(harness.stand_in.request_count(), 0, "requests reached Supabase: {:?}", harness.stand_in.requests());
    harness.assert_token_never_leaked();
}
