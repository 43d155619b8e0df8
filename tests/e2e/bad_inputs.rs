//! Bad input through the real binaries: each case is a 4xx naming the field,
//! and the stand-in's request log shows that nothing reached Supabase.

use std::collections::HashMap;

use base64::Engine;
use jit_guard_tests::events::{self, Caller, EventSpec};

use crate::support::*;

/// One malformed request and the field its error must name.
struct Case {
    function: &'static str,
    method: &'static str,
    path: String,
    body: Option<Vec<u8>>,
    /// Deliver the body base64-encoded, as API Gateway does for binary media types.
    base64: bool,
    status: u16,
    field: &'static str,
}

fn case(function: &'static str, method: &'static str, path: &str, body: Option<&str>, field: &'static str) -> Case {
    let body = body.map(|body| body.as_bytes().to_vec());
    Case { function, method, path: path.to_owned(), body, base64: false, status: 400, field }
}

fn base64_case(function: &'static str, method: &'static str, path: &str, body: &[u8], field: &'static str) -> Case {
    Case { function, method, path: path.to_owned(), body: Some(body.to_vec()), base64: true, status: 400, field }
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
    cases.push(Case {
        function: "update-jit-access",
        method: "PUT",
        path: jit.clone(),
        body: Some(huge.into_bytes()),
        base64: false,
        status: 413,
        field: "",
    });
    // Too many role entries.
    let many: Vec<String> = (0..21).map(|index| format!(r#"{{"role":"jit_{index}"}}"#)).collect();
    cases.push(case("update-jit-access", "PUT", &jit, Some(&role(&many.join(","))), "roles"));
    let cidrs: Vec<String> = (0..51).map(|index| format!(r#"{{"cidr":"10.{index}.0.0/16"}}"#)).collect();
    let too_many = networks(&format!(r#"{{"allowed_cidrs":[{}]}}"#, cidrs.join(",")));
    cases.push(case("update-jit-access", "PUT", &jit, Some(&too_many), "roles[0].allowed_networks.allowed_cidrs"));

    cases.extend([
        // Unicode look-alikes: Cyrillic а, fullwidth letters and digits.
        case("get-project", "GET", "/v1/projects/%D0%B0bcdefghijklmnopqrs", None, "ref"),
        case("list-organization-members", "GET", "/v1/organizations/%EF%BD%81cme/members", None, "slug"),
        case("revoke-jit-access", "DELETE", &format!("{jit}/%EF%BC%93333333-3333-4333-8333-333333333333"), None, "user_id"),
        case("authorize-jit-access", "POST", &jit, Some(r#"{"role":"jit_readonly","rhost":"１０.1.2.3"}"#), "rhost"),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&networks(r#"{"allowed_cidrs":[{"cidr":"10.0.0.0/８"}]}"#)),
            "roles[0].allowed_networks.allowed_cidrs[0].cidr",
        ),
        // More path shapes.
        case("get-project", "GET", "/v1/projects/abcdefghijklmnopqrst.", None, "ref"),
        case("get-project", "GET", "/v1/projects/%00bcdefghijklmnopqrst", None, "ref"),
        case("list-organization-members", "GET", &format!("/v1/organizations/{}/members", "a".repeat(65)), None, "slug"),
        case("revoke-jit-access", "DELETE", &format!("{jit}/{{33333333-3333-4333-8333-333333333333}}"), None, "user_id"),
        // Bodies that are not a JSON object.
        case("authorize-jit-access", "POST", &jit, Some(r#""hello""#), "body"),
        case("authorize-jit-access", "POST", &jit, Some("null"), "body"),
        case("authorize-jit-access", "POST", &jit, Some("\u{feff}{\"role\":\"jit_readonly\",\"rhost\":\"10.1.2.3\"}"), "body"),
        case("update-jit-access", "PUT", &jit, Some(&format!("{}{}", "[".repeat(40), "]".repeat(40))), "body"),
        base64_case("authorize-jit-access", "POST", &jit, b"not json", "body"),
        base64_case("authorize-jit-access", "POST", &jit, b"{\"role\":\"jit_readonly\",\"rhost\":\"\xff\xfe\"}", "body"),
        base64_case("authorize-jit-access", "POST", &jit, br#"{"role":"jit_readonly","rhost":"10.1.2.3","rhost":"10.9.9.9"}"#, "body"),
        base64_case("authorize-jit-access", "POST", &jit, br#"{"role":"jit_readonly\u0000","rhost":"10.1.2.3"}"#, "role"),
        // Field values.
        case("authorize-jit-access", "POST", &jit, Some(r#"{"role":"jit\nreadonly","rhost":"10.1.2.3"}"#), "role"),
        case("authorize-jit-access", "POST", &jit, Some(r#"{"role":"jit'readonly","rhost":"10.1.2.3"}"#), "role"),
        case("authorize-jit-access", "POST", &jit, Some(r#"{"role":"jit_readonly","rhost":"10.1.2.3:5432"}"#), "rhost"),
        case("authorize-jit-access", "POST", &jit, Some(r#"{"role":"jit_readonly","rhost":""}"#), "rhost"),
        case("authorize-jit-access", "POST", &jit, Some(r#"{"role":"jit_readonly","rhost":"0x0a.1.2.3"}"#), "rhost"),
        case("update-jit-access", "PUT", &jit, Some(r#"{"user_id":5,"roles":[{"role":"jit_readonly"}]}"#), "user_id"),
        case("update-jit-access", "PUT", &jit, Some(&role("null")), "roles[0]"),
        case("update-jit-access", "PUT", &jit, Some(&role(r#"{"role":"jit_readonly","branches_only":1}"#)), "roles[0].branches_only"),
        case("update-jit-access", "PUT", &jit, Some(&role(r#"{"role":"jit_readonly","expires_at":1e10}"#)), "roles[0].expires_at"),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&role(r#"{"role":"jit_readonly","expires_at":99999999999999999999}"#)),
            "roles[0].expires_at",
        ),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&role(r#"{"role":"jit_readonly","expires_at":"2026-13-01T00:00:00Z"}"#)),
            "roles[0].expires_at",
        ),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&networks(r#"{"allowed_cidrs_v6":[{"cidr":"fe80::%eth0/64"}]}"#)),
            "roles[0].allowed_networks.allowed_cidrs_v6[0].cidr",
        ),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&networks(r#"{"allowed_cidrs":[{"cidr":"010.1.0.0/16"}]}"#)),
            "roles[0].allowed_networks.allowed_cidrs[0].cidr",
        ),
        case(
            "update-jit-access",
            "PUT",
            &jit,
            Some(&networks(r#"{"allowed_cidrs":[{"cidr":null}]}"#)),
            "roles[0].allowed_networks.allowed_cidrs[0].cidr",
        ),
    ]);
    cases
}

#[tokio::test]
async fn bad_inputs_rejected_without_upstream_calls() {
    let mut harness = Harness::start().await;
    let cases = cases();
    assert!(cases.len() >= 80, "the table has {} cases", cases.len());

    let mut handles = HashMap::new();
    for case in &cases {
        if !handles.contains_key(case.function) {
            let handle = harness.spawn(case.function, &[]).await;
            handles.insert(case.function, handle);
        }
    }

    for case in &cases {
        let mut spec = EventSpec::new(case.method, &case.path).caller(Caller::IamUser(CALLER_ARN.into()));
        if let Some(body) = &case.body
            && !case.base64
        {
            spec = spec.body(String::from_utf8(body.clone()).unwrap()).header("content-type", "application/json");
        }
        let mut event = events::function_url(&spec);
        if let (Some(body), true) = (&case.body, case.base64) {
            // Set here because the event builder takes text, and these bytes need not be UTF-8.
            event["body"] = base64::engine::general_purpose::STANDARD.encode(body).into();
            event["isBase64Encoded"] = true.into();
        }
        let response = harness.invoke(handles[case.function], event).await;
        let shown = case.body.as_ref().map(|body| String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned());
        let label = format!("{} {} {shown:?}", case.method, case.path);
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
