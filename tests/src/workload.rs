//! The requests that the benchmark and the handler cost example send: the
//! same token, project, users and update body, as API Gateway REST API
//! events from one IAM caller.

use serde_json::{Value, json};

use crate::events::{self, Caller, EventSpec};

/// The Supabase access token that moto server and the stand-in are seeded with.
pub const TOKEN: &str = "sbp_bench0f1e2d3c4b5a69788796a5b4c3d2e1f0";
/// A project reference in the stand-in's default seed.
pub const PROJECT: &str = "abcdefghijklmnopqrst";
/// The organization that owns [`PROJECT`].
pub const ORGANIZATION: &str = "acme-security";
/// A member whose mapping revoke-jit-access removes.
pub const BOB: &str = "22222222-2222-4222-8222-222222222222";
/// A member whose mapping update-jit-access sets.
pub const CAROL: &str = "33333333-3333-4333-8333-333333333333";

/// Returns the body of an update for [`CAROL`]: one role that expires in
/// four hours, with one IPv4 and one IPv6 network.
pub fn update_body() -> String {
    json!({
        "user_id": CAROL,
        "roles": [{ "role": "jit_readonly", "expires_at": in_four_hours(), "allowed_networks": networks() }],
    })
    .to_string()
}

/// Returns the body of a grant for [`CAROL`]: `supabase_read_only_user` for
/// four hours, from the same two networks as [`update_body`].
pub fn grant_body() -> String {
    json!({
        "user_id": CAROL, "role": "supabase_read_only_user", "expires_at": in_four_hours(), "allowed_networks": networks(),
    })
    .to_string()
}

/// Returns the Unix time four hours from now, in seconds.
fn in_four_hours() -> i64 {
    chrono::Utc::now().timestamp() + 4 * 3600
}

/// Returns the allowed networks of the benchmark's writes: one IPv4 and one IPv6 range.
fn networks() -> Value {
    json!({ "allowed_cidrs": [{ "cidr": "10.20.0.0/16" }], "allowed_cidrs_v6": [{ "cidr": "fd00:20::/64" }] })
}

/// Returns the project references in the stand-in's default seed, in its listing order.
pub fn seed_projects() -> Vec<String> {
    let seed = crate::stand_in::load_seed(&crate::stand_in::StandIn::seed_path()).expect("the default seed loads");
    let projects = seed["projects"].as_array().expect("the seed lists projects");
    projects.iter().map(|project| project["ref"].as_str().expect("each seeded project has a ref").to_owned()).collect()
}

/// Returns an API Gateway REST API event, as the SAM template deploys the
/// functions, from the benchmark's IAM caller.
pub fn rest_event(method: &'static str, path: &str, body: Option<&str>) -> Value {
    let mut spec = EventSpec::new(method, path).caller(Caller::IamUser("arn:aws:iam::123456789012:role/benchmark".into()));
    if let Some(body) = body {
        spec = spec.body(body).header("content-type", "application/json");
    }
    events::rest_v1(&spec)
}
