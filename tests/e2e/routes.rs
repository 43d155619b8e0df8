//! Every route through its real binary, as API Gateway REST (v1), HTTP API
//! (v2) and function URL events: the happy path and an error each.

use jit_guard_tests::events::{self, Caller, EventSpec};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn every_route_happy_path_rest_v1() {
    let mut harness = Harness::start().await;

    let members = harness.spawn("list-organization-members", &[]).await;
    let path = format!("/v1/organizations/{ORGANIZATION}/members");
    let response = harness.invoke(members, rest_event("GET", &path, &[("slug", ORGANIZATION)], None)).await;
    assert_eq!(response.status, 200, "{}", response.body_text);
    assert_eq!(response.body.as_array().unwrap().len(), 3);
    // Nullable fields reach the caller as null.
    assert!(response.body.as_array().unwrap().iter().any(|member| member["avatar_url"].is_null()));

    let projects = harness.spawn("list-projects", &[]).await;
    let response = harness.invoke(projects, rest_event("GET", "/v1/projects", &[], None)).await;
    assert_eq!(response.status, 200, "{}", response.body_text);
    assert!(response.body.as_array().unwrap().iter().any(|project| project["ref"] == PROJECT));

    let project = harness.spawn("get-project", &[]).await;
    let path = format!("/v1/projects/{PROJECT}");
    let response = harness.invoke(project, rest_event("GET", &path, &[("ref", PROJECT)], None)).await;
    assert_eq!(response.status, 200, "{}", response.body_text);
    assert_eq!(response.headers["content-type"], "application/json");
    assert_eq!(response.body["ref"], PROJECT);
    assert_eq!(response.body["organization_slug"], ORGANIZATION);
    assert!(response.body["database"]["host"].is_string());

    let authorize = harness.spawn("authorize-jit-access", &[]).await;
    let path = format!("/v1/projects/{PROJECT}/database/jit");
    let body = r#"{"role":"supabase_read_only_user","rhost":"10.1.2.3"}"#;
    let response = harness.invoke(authorize, rest_event("POST", &path, &[("ref", PROJECT)], Some(body))).await;
    assert_eq!(response.status, 200, "{}", response.body_text);
    assert_eq!(response.body["user_role"]["role"], "supabase_read_only_user");

    let update = harness.spawn("update-jit-access", &[]).await;
    let expires_at = hours_from_now(2);
    let body = update_body(CAROL, "jit_readonly", Some(expires_at), "allowed_cidrs_v6", "fd00:10::/64");
    let response = harness.invoke(update, rest_event("PUT", &path, &[("ref", PROJECT)], Some(&body))).await;
    assert_eq!(response.status, 200, "{}", response.body_text);
    assert_eq!(response.body["user_roles"][0]["role"], "jit_readonly");
    assert_eq!(response.body["user_roles"][0]["expires_at"], expires_at);

    let list = harness.spawn("list-jit-access", &[]).await;
    let path = format!("/v1/projects/{PROJECT}/database/jit/list");
    let response = harness.invoke(list, rest_event("GET", &path, &[("ref", PROJECT)], None)).await;
    assert_eq!(response.status, 200, "{}", response.body_text);
    let items = response.body["items"].as_array().unwrap();
    let carol = items.iter().find(|item| item["user_id"] == CAROL).expect("carol's new mapping is listed");
    assert_eq!(carol["user_roles"][0]["allowed_networks"]["allowed_cidrs_v6"][0]["cidr"], "fd00:10::/64");
    // A pending invite has a null user_id and still reaches the caller.
    assert!(items.iter().any(|item| item["user_id"].is_null()));

    let revoke = harness.spawn("revoke-jit-access", &[]).await;
    let path = format!("/v1/projects/{PROJECT}/database/jit/{BOB}");
    let parameters = [("ref", PROJECT), ("user_id", BOB)];
    let response = harness.invoke(revoke, rest_event("DELETE", &path, &parameters, None)).await;
    assert_eq!(response.status, 200, "{}", response.body_text);

    let upstream: Vec<String> =
        harness.stand_in.requests().iter().map(|request| format!("{} {}", request.method, request.path)).collect();
    assert_eq!(
        upstream,
        vec![
            format!("GET /v1/organizations/{ORGANIZATION}/members"),
            "GET /v1/projects".to_owned(),
            format!("GET /v1/projects/{PROJECT}"),
            // authorize-jit-access looks the project up for its policies.
            format!("GET /v1/projects/{PROJECT}"),
            format!("POST /v1/projects/{PROJECT}/database/jit"),
            // update-jit-access also looks up the target user's membership.
            format!("GET /v1/projects/{PROJECT}"),
            format!("GET /v1/organizations/{ORGANIZATION}/members"),
            format!("PUT /v1/projects/{PROJECT}/database/jit"),
            format!("GET /v1/projects/{PROJECT}/database/jit/list"),
            format!("DELETE /v1/projects/{PROJECT}/database/jit/{BOB}"),
        ]
    );
    // The update went out in the spec's shape: `roles`, seconds, canonical CIDR.
    let sent = harness.stand_in.requests()[7].body.clone().unwrap();
    assert_eq!(sent["roles"][0]["expires_at"], expires_at);
    assert!(sent.get("user_roles").is_none());
    harness.assert_token_never_leaked();
}

#[tokio::test]
async fn every_route_through_function_urls() {
    let mut harness = Harness::start().await;
    let expires_at = hours_from_now(1);
    let update = update_body(CAROL, "jit_readonly", Some(expires_at), "allowed_cidrs", "10.20.0.0/16");
    let cases: [(&str, &'static str, String, Option<String>); 7] = [
        ("list-organization-members", "GET", format!("/v1/organizations/{ORGANIZATION}/members"), None),
        ("list-projects", "GET", "/v1/projects".into(), None),
        ("get-project", "GET", format!("/v1/projects/{PROJECT}"), None),
        (
            "authorize-jit-access",
            "POST",
            format!("/v1/projects/{PROJECT}/database/jit"),
            Some(r#"{"role":"supabase_read_only_user","rhost":"fd00::7"}"#.into()),
        ),
        ("update-jit-access", "PUT", format!("/v1/projects/{PROJECT}/database/jit"), Some(update)),
        ("list-jit-access", "GET", format!("/v1/projects/{PROJECT}/database/jit/list"), None),
        ("revoke-jit-access", "DELETE", format!("/v1/projects/{PROJECT}/database/jit/{BOB}"), None),
    ];
    for (name, method, path, body) in cases {
        let handle = harness.spawn(name, &[]).await;
        let response = harness.invoke(handle, url_event(method, &path, body.as_deref())).await;
        assert_eq!(response.status, 200, "{name}: {}", response.body_text);
    }
    // The seven calls, plus the lookups of authorize (project) and update (project, members).
    assert_eq!(harness.stand_in.request_count(), 10);
    harness.assert_token_never_leaked();
}

#[tokio::test]
async fn http_api_v2_events_are_served() {
    let mut harness = Harness::start().await;
    let project = harness.spawn("get-project", &[]).await;
    let spec = EventSpec::new("GET", format!("/v1/projects/{PROJECT}"))
        .path_parameter("ref", PROJECT)
        .caller(Caller::JwtSubject("workflow-7".into()));
    let response = harness.invoke(project, events::http_v2(&spec)).await;
    assert_eq!(response.status, 200, "{}", response.body_text);
    assert_eq!(response.body["ref"], PROJECT);

    let decision = harness.decision_logs().pop().expect("a decision log line");
    assert_eq!(decision["caller"], "jwt:workflow-7");
    assert_eq!(decision["action"], "GetProject");
    assert_eq!(decision["decision"], "allow");
}

#[tokio::test]
async fn every_route_error_case() {
    let mut harness = Harness::start().await;

    let members = harness.spawn("list-organization-members", &[]).await;
    let response = harness.invoke(members, url_event("GET", "/v1/organizations/no-such-org/members", None)).await;
    assert_eq!(response.status, 404);
    assert_eq!(response.body["code"], "not_found");

    let project = harness.spawn("get-project", &[]).await;
    let response = harness.invoke(project, url_event("GET", &format!("/v1/projects/{UNKNOWN_PROJECT}"), None)).await;
    assert_eq!(response.status, 404);
    assert_eq!(response.headers["content-type"], "application/problem+json");

    let list = harness.spawn("list-jit-access", &[]).await;
    let path = format!("/v1/projects/{UNKNOWN_PROJECT}/database/jit/list");
    let response = harness.invoke(list, url_event("GET", &path, None)).await;
    assert_eq!(response.status, 404);

    let revoke = harness.spawn("revoke-jit-access", &[]).await;
    let path = format!("/v1/projects/{PROJECT}/database/jit/{CAROL}");
    let response = harness.invoke(revoke, url_event("DELETE", &path, None)).await;
    assert_eq!(response.status, 404, "carol has no mapping before a grant: {}", response.body_text);

    // Supabase responds 403 when the token's user has no such mapping.
    let authorize = harness.spawn("authorize-jit-access", &[]).await;
    let path = format!("/v1/projects/{PROJECT}/database/jit");
    let body = r#"{"role":"jit_readonly","rhost":"10.1.2.3"}"#;
    let response = harness.invoke(authorize, url_event("POST", &path, Some(body))).await;
    assert_eq!(response.status, 403);
    assert_eq!(response.body["code"], "jit_access_not_granted");

    // A denied update sends no write.
    let update = harness.spawn("update-jit-access", &[]).await;
    let body = update_body(CAROL, "postgres", Some(hours_from_now(1)), "allowed_cidrs", "10.20.0.0/16");
    let response = harness.invoke(update, url_event("PUT", &path, Some(&body))).await;
    assert_eq!(response.status, 403);
    assert_eq!(harness.upstream_calls("PUT"), 0);

    // A token Supabase no longer accepts: the secret is read again once, then 502.
    let projects = harness.spawn("list-projects", &[]).await;
    harness.stand_in.set_token("sbp_rotated_elsewhere_and_not_in_the_secret");
    let response = harness.invoke(projects, url_event("GET", "/v1/projects", None)).await;
    assert_eq!(response.status, 502);
    assert_eq!(response.body["code"], "upstream_unauthorized");

    // The wrong method on a route is a 404 naming it.
    let response = harness.invoke(project, url_event("DELETE", &format!("/v1/projects/{PROJECT}"), None)).await;
    assert_eq!(response.status, 404);
    assert_eq!(response.body["code"], "route_not_found");
    harness.assert_token_never_leaked();
}

#[tokio::test]
async fn problem_body_has_rfc9457_members() {
    let mut harness = Harness::start().await;
    let project = harness.spawn("get-project", &[]).await;
    let response = harness.invoke(project, url_event("GET", "/v1/projects/short", None)).await;
    assert_eq!(response.status, 400);
    for member in ["type", "title", "status", "detail", "code", "errors"] {
        assert!(response.body.get(member).is_some(), "problem body lacks {member}: {}", response.body);
    }
    assert_eq!(response.body["status"], 400);
    assert_eq!(response.body["errors"], json!([{
        "field": "ref",
        "message": "must be a project ref of exactly 20 lowercase letters (a-z), got 5 characters; copy it from the project's URL"
    }]));
}
