//! The product against Supabase's official OpenAPI document: every request
//! the functions send to the stand-in is checked against it, and responses
//! that the document allows, or that newer Supabase versions send, reach the
//! caller intact. The document is read at run time; without it the checks
//! print why and pass.

// The Prism run gets its own file; declaring it here keeps main.rs at one
// contract module.
#[path = "prism.rs"]
mod prism;

use jit_guard_tests::spec::{Spec, Strictness};
use jit_guard_tests::stand_in::{Fault, StandIn, load_seed};
use serde_json::{Value, json};

use crate::support::*;

const ALICE: &str = "11111111-1111-4111-8111-111111111111";
/// Holds a JIT mapping on the project without being a member of its organization.
const OUTSIDER: &str = "66666666-6666-4666-8666-666666666666";
const JIT_ROUTE: &str = "/v1/projects/{ref}/database/jit";

fn jit_path() -> String {
    format!("/v1/projects/{PROJECT}/database/jit")
}

/// Sends `GET path` straight to the stand-in, so a test can compare what the
/// stand-in served with what a function passed on.
async fn served(harness: &Harness, path: &str) -> Value {
    let response = jit_guard_tests::http_client()
        .get(format!("{}{path}", harness.stand_in.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the stand-in responds on loopback");
    assert_eq!(
        response.status().as_u16(),
        200,
        "GET {path} on the stand-in"
    );
    response.json().await.expect("the stand-in serves JSON")
}

#[tokio::test]
async fn every_route_request_matches_spec() {
    let mut harness = Harness::start().await;
    let jit = jit_path();

    let members = harness.spawn("list-organization-members", &[]).await;
    let path = format!("/v1/organizations/{ORGANIZATION}/members");
    let response = harness
        .invoke(
            members,
            rest_event("GET", &path, &[("slug", ORGANIZATION)], None),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body_text);

    let projects = harness.spawn("list-projects", &[]).await;
    let response = harness
        .invoke(projects, rest_event("GET", "/v1/projects", &[], None))
        .await;
    assert_eq!(response.status, 200, "{}", response.body_text);

    let project = harness.spawn("get-project", &[]).await;
    let path = format!("/v1/projects/{PROJECT}");
    let response = harness
        .invoke(project, rest_event("GET", &path, &[("ref", PROJECT)], None))
        .await;
    assert_eq!(response.status, 200, "{}", response.body_text);

    let authorize = harness.spawn("authorize-jit-access", &[]).await;
    for rhost in ["10.1.2.3", "fd00::7"] {
        let body = json!({ "role": "supabase_read_only_user", "rhost": rhost }).to_string();
        let response = harness
            .invoke(
                authorize,
                rest_event("POST", &jit, &[("ref", PROJECT)], Some(&body)),
            )
            .await;
        assert_eq!(response.status, 200, "{rhost}: {}", response.body_text);
    }

    // Several roles, both CIDR families, branches_only, and expires_at as
    // RFC 3339 text, which the function must send as Unix seconds.
    let update = harness.spawn("update-jit-access", &[]).await;
    let in_two_hours = chrono::Utc::now() + chrono::Duration::hours(2);
    let body = json!({
        "user_id": CAROL,
        "roles": [
            {
                "role": "jit_readonly",
                "expires_at": in_two_hours.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "allowed_networks": {
                    "allowed_cidrs": [{ "cidr": "10.20.0.0/16" }],
                    "allowed_cidrs_v6": [{ "cidr": "fd00:10::/64" }]
                },
                "branches_only": true
            },
            {
                "role": "supabase_read_only_user",
                "expires_at": hours_from_now(1),
                "allowed_networks": { "allowed_cidrs": [{ "cidr": "192.168.7.0/24" }] }
            }
        ]
    })
    .to_string();
    let response = harness
        .invoke(
            update,
            rest_event("PUT", &jit, &[("ref", PROJECT)], Some(&body)),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body_text);

    // A dry run sends no write; a retried write is checked each time it is sent.
    let dry_run = harness
        .invoke(
            update,
            url_event("PUT", &format!("{jit}?dry_run=true"), Some(&body)),
        )
        .await;
    assert_eq!(dry_run.status, 200, "{}", dry_run.body_text);
    harness.stand_in.inject(
        "PUT",
        JIT_ROUTE,
        Fault::Status {
            status: 503,
            body: None,
        },
        Some(1),
    );
    let retried = harness
        .invoke(update, url_event("PUT", &jit, Some(&body)))
        .await;
    assert_eq!(retried.status, 200, "{}", retried.body_text);

    let list = harness.spawn("list-jit-access", &[]).await;
    let path = format!("{jit}/list");
    let response = harness
        .invoke(list, rest_event("GET", &path, &[("ref", PROJECT)], None))
        .await;
    assert_eq!(response.status, 200, "{}", response.body_text);

    let revoke = harness.spawn("revoke-jit-access", &[]).await;
    let path = format!("{jit}/{BOB}");
    let parameters = [("ref", PROJECT), ("user_id", BOB)];
    let response = harness
        .invoke(revoke, rest_event("DELETE", &path, &parameters, None))
        .await;
    assert_eq!(response.status, 200, "{}", response.body_text);

    let puts: Vec<Value> = harness
        .stand_in
        .requests()
        .into_iter()
        .filter(|request| request.method == "PUT")
        .map(|request| request.body.expect("an update has a body"))
        .collect();
    assert_eq!(
        puts.len(),
        3,
        "the update, then the write that got 503 and its retry"
    );
    for sent in &puts {
        assert_eq!(
            sent["roles"][0]["expires_at"],
            in_two_hours.timestamp(),
            "{sent}"
        );
        assert!(sent.get("user_roles").is_none(), "{sent}");
    }
    harness.assert_requests_match_spec();
}

#[tokio::test]
async fn every_route_through_function_urls_matches_spec() {
    let mut harness = Harness::start().await;
    let jit = jit_path();
    let update = update_body(
        CAROL,
        "jit_readonly",
        Some(hours_from_now(1)),
        "allowed_cidrs",
        "10.20.0.0/16",
    );
    let cases: [(&str, &'static str, String, Option<String>); 7] = [
        (
            "list-organization-members",
            "GET",
            format!("/v1/organizations/{ORGANIZATION}/members"),
            None,
        ),
        ("list-projects", "GET", "/v1/projects".into(), None),
        (
            "get-project",
            "GET",
            format!("/v1/projects/{PROJECT}"),
            None,
        ),
        (
            "authorize-jit-access",
            "POST",
            jit.clone(),
            Some(r#"{"role":"supabase_read_only_user","rhost":"10.9.8.7"}"#.into()),
        ),
        ("update-jit-access", "PUT", jit.clone(), Some(update)),
        ("list-jit-access", "GET", format!("{jit}/list"), None),
        ("revoke-jit-access", "DELETE", format!("{jit}/{BOB}"), None),
    ];

    for (name, method, path, body) in cases {
        let handle = harness.spawn(name, &[]).await;
        let response = harness
            .invoke(handle, url_event(method, &path, body.as_deref()))
            .await;
        assert_eq!(response.status, 200, "{name}: {}", response.body_text);
    }

    assert_eq!(
        harness.stand_in.request_count(),
        10,
        "seven calls and three lookups"
    );
    harness.assert_requests_match_spec();
}

/// Nulls the document allows and the fields it marks deprecated, served from
/// the stand-in's seed, reach the caller as Supabase sent them.
#[tokio::test]
async fn nulls_and_deprecated_fields_reach_caller() {
    let mut seed = load_seed(&StandIn::seed_path()).expect("the seed loads");
    // `id` and `organization_id` are deprecated in favour of `ref` and
    // `organization_slug`; values of their own show they are passed on as sent.
    seed["projects"][0]["id"] = json!("legacy-project-id-0007");
    seed["projects"][0]["organization_id"] = json!("legacy-organization-id-0042");
    // Carol has no email (optional) and avatar_url null (nullable, but required).
    seed["organizations"][0]["members"][2]
        .as_object_mut()
        .expect("carol is an object")
        .remove("email");
    // A mapping of a user outside the organization is listed with primary_email null.
    seed["jit"][PROJECT]["users"]
        .as_array_mut()
        .expect("the seed lists users")
        .push(json!({ "user_id": OUTSIDER, "user_roles": [{ "role": "jit_readonly", "expires_at": 4102444800i64 }] }));
    let mut harness = Harness::start_with_seed(seed).await;

    let members_path = format!("/v1/organizations/{ORGANIZATION}/members");
    let project_path = format!("/v1/projects/{PROJECT}");
    let list_path = format!("{}/list", jit_path());
    let cases = [
        ("list-organization-members", members_path.clone()),
        ("list-projects", "/v1/projects".to_owned()),
        ("get-project", project_path.clone()),
        ("list-jit-access", list_path.clone()),
    ];
    let mut passed_on = Vec::new();
    for (name, path) in &cases {
        let handle = harness.spawn(name, &[]).await;
        let response = harness.invoke(handle, url_event("GET", path, None)).await;
        assert_eq!(response.status, 200, "{name}: {}", response.body_text);
        assert_eq!(
            response.body,
            served(&harness, path).await,
            "{name} changed the body"
        );
        passed_on.push(response.body);
    }

    let carol = passed_on[0]
        .as_array()
        .unwrap()
        .iter()
        .find(|member| member["user_id"] == CAROL)
        .unwrap();
    assert!(carol.get("email").is_none(), "{carol}");
    assert!(carol["avatar_url"].is_null(), "{carol}");
    assert_eq!(passed_on[1][0]["id"], "legacy-project-id-0007");
    assert_eq!(
        passed_on[1][0]["organization_id"],
        "legacy-organization-id-0042"
    );
    assert_eq!(passed_on[2]["id"], "legacy-project-id-0007");
    assert_eq!(
        passed_on[2]["organization_id"],
        "legacy-organization-id-0042"
    );
    let items = passed_on[3]["items"].as_array().unwrap();
    let invite = items
        .iter()
        .find(|item| item["user_id"].is_null())
        .expect("the invite is listed");
    assert!(
        invite["expires_at"].is_string(),
        "an invite's expires_at is text: {invite}"
    );
    let outsider = items
        .iter()
        .find(|item| item["user_id"] == OUTSIDER)
        .expect("the outsider is listed");
    assert!(outsider["primary_email"].is_null(), "{outsider}");

    if let Some(spec) = Spec::official_or_skip("the response check of the seeded bodies") {
        let operations = [
            "v1-list-organization-members",
            "v1-list-all-projects",
            "v1-get-project",
            "v1-list-jit-access",
        ];
        for (operation, body) in operations.into_iter().zip(&passed_on) {
            assert_valid_as_documented(&spec, operation, body);
        }
    }
    harness.assert_requests_match_spec();
}

/// Fields the document does not list, and deprecated fields left out, as a
/// newer Supabase may send them: each response is played by the stand-in as
/// a 200 with that exact body, and must reach the caller unchanged.
#[tokio::test]
async fn extra_fields_reach_caller() {
    let mut harness = Harness::start().await;
    let expires_at = hours_from_now(1);
    let jit = jit_path();
    let members = json!([{
        "user_id": ALICE, "user_name": "alice", "email": "alice@example.com", "role_name": "Owner",
        "mfa_enabled": true, "avatar_url": null,
        "sso_provider": { "name": "okta", "enforced": true }
    }]);
    let project = json!({
        "id": PROJECT, "ref": PROJECT, "organization_id": ORGANIZATION, "organization_slug": ORGANIZATION,
        "name": "acme-production", "region": "eu-central-1", "created_at": "2025-01-15T09:30:00.000Z",
        "status": "ACTIVE_HEALTHY",
        "database": {
            "host": "db.abcdefghijklmnopqrst.supabase.co", "version": "17.4.1.054", "postgres_engine": "17",
            "release_channel": "ga", "read_replicas": []
        },
        "compute_size": "micro", "labels": { "team": "security" }
    });
    // A project without the deprecated fields, as a later version may send it.
    let mut without_deprecated = project.clone();
    let object = without_deprecated.as_object_mut().unwrap();
    object.remove("id");
    object.remove("organization_id");
    let authorize = json!({
        "user_id": ALICE,
        "user_role": { "role": "supabase_read_only_user", "expires_at": 4102444800i64, "granted_by": "workflow" },
        "decision_id": "d-1"
    });
    let update = json!({
        "user_id": CAROL,
        "user_roles": [{
            "role": "jit_readonly", "expires_at": expires_at,
            "allowed_networks": { "allowed_cidrs": [{ "cidr": "10.20.0.0/16", "label": "office" }] },
            "created_at": "2026-01-01T00:00:00Z"
        }],
        "etag": "v2"
    });
    let list = json!({
        "items": [
            {
                "user_id": CAROL, "primary_email": null, "invite_id": null, "expires_at": null,
                "user_roles": [{ "role": "jit_readonly", "expires_at": expires_at, "approved": true }],
                "last_used_at": "2026-01-02T00:00:00Z"
            },
            {
                "user_id": null, "primary_email": "dave@example.com",
                "invite_id": "55555555-5555-4555-8555-555555555555", "expires_at": "2099-12-31T00:00:00.000Z",
                "user_roles": [{ "role": "supabase_read_only_user" }], "invited_by": ALICE
            }
        ],
        "next_cursor": null
    });
    let update_request = update_body(
        CAROL,
        "jit_readonly",
        Some(expires_at),
        "allowed_cidrs",
        "10.20.0.0/16",
    );
    let authorize_request = r#"{"role":"supabase_read_only_user","rhost":"10.1.2.3"}"#.to_owned();
    let cases = [
        (
            "list-organization-members",
            "GET",
            "/v1/organizations/{slug}/members",
            format!("/v1/organizations/{ORGANIZATION}/members"),
            None,
            &members,
            "v1-list-organization-members",
        ),
        (
            "list-projects",
            "GET",
            "/v1/projects",
            "/v1/projects".to_owned(),
            None,
            &json!([project.clone()]),
            "v1-list-all-projects",
        ),
        (
            "get-project",
            "GET",
            "/v1/projects/{ref}",
            format!("/v1/projects/{PROJECT}"),
            None,
            &project,
            "v1-get-project",
        ),
        (
            "get-project",
            "GET",
            "/v1/projects/{ref}",
            format!("/v1/projects/{PROJECT}"),
            None,
            &without_deprecated,
            "",
        ),
        (
            "authorize-jit-access",
            "POST",
            JIT_ROUTE,
            jit.clone(),
            Some(authorize_request.clone()),
            &authorize,
            "v1-authorize-jit-access",
        ),
        (
            "update-jit-access",
            "PUT",
            JIT_ROUTE,
            jit.clone(),
            Some(update_request),
            &update,
            "v1-update-jit-access",
        ),
        (
            "list-jit-access",
            "GET",
            "/v1/projects/{ref}/database/jit/list",
            format!("{jit}/list"),
            None,
            &list,
            "v1-list-jit-access",
        ),
    ];

    let spec = Spec::official_or_skip("the response check of the extra-field bodies");
    for (name, method, route, path, body, served_body, operation) in cases {
        // Every body except the one without deprecated fields is one the document allows.
        if let (Some(spec), false) = (&spec, operation.is_empty()) {
            assert_valid_as_documented(spec, operation, served_body);
        }
        let handle = harness.spawn(name, &[]).await;
        let fault = Fault::Status {
            status: 200,
            body: Some(served_body.to_string()),
        };
        harness.stand_in.inject(method, route, fault, Some(1));
        let response = harness
            .invoke(handle, url_event(method, &path, body.as_deref()))
            .await;
        assert_eq!(response.status, 200, "{name}: {}", response.body_text);
        assert_eq!(&response.body, served_body, "{name} changed the body");
    }

    // The project lookup of a JIT call decodes a project without deprecated fields too.
    let handle = harness.spawn("authorize-jit-access", &[]).await;
    let fault = Fault::Status {
        status: 200,
        body: Some(without_deprecated.to_string()),
    };
    harness
        .stand_in
        .inject("GET", "/v1/projects/{ref}", fault, Some(1));
    let response = harness
        .invoke(handle, url_event("POST", &jit, Some(&authorize_request)))
        .await;
    assert_eq!(response.status, 200, "{}", response.body_text);
    assert_eq!(
        response.body["user_role"]["role"],
        "supabase_read_only_user"
    );
    harness.assert_requests_match_spec();
}

fn assert_valid_as_documented(spec: &Spec, operation: &str, body: &Value) {
    let validator = spec
        .response_validator(operation, "200", Strictness::AsDocumented)
        .unwrap_or_else(|error| panic!("{error}"))
        .unwrap_or_else(|| panic!("{operation} has no JSON body"));
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{operation} body {body} breaks the document: {errors:#?}"
    );
}
