//! The seven operations. Each reads as the same steps: validate the input,
//! decide with Cedar, call Supabase, respond. A write reaches Supabase only
//! after every Cedar decision for it is an allow.

use std::net::IpAddr;

use chrono::{DateTime, SecondsFormat, Utc};
use http::header::CONTENT_TYPE;
use ipnet::IpNet;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use crate::error::{Error, FieldError};
use crate::policy::{Action, Decision, Denial, Guard, Resource};
use crate::request::{Call, Route, read_call};
use crate::supabase::{ManagementApi, UpstreamError, UpstreamResponse};
use crate::validate::{
    OrganizationSlug, ProjectRef, UserId, parse_authorize_body, parse_update_body,
};

/// The route each operation serves; the same paths as Supabase's Management API v1.
pub fn route(action: Action) -> Route {
    let (method, template) = match action {
        Action::ListOrganizationMembers => ("GET", "/v1/organizations/{slug}/members"),
        Action::ListProjects => ("GET", "/v1/projects"),
        Action::GetProject => ("GET", "/v1/projects/{ref}"),
        Action::AuthorizeJitAccess => ("POST", "/v1/projects/{ref}/database/jit"),
        Action::UpdateJitAccess => ("PUT", "/v1/projects/{ref}/database/jit"),
        Action::ListJitAccess => ("GET", "/v1/projects/{ref}/database/jit/list"),
        Action::RevokeJitAccess => ("DELETE", "/v1/projects/{ref}/database/jit/{user_id}"),
    };
    Route { method, template }
}

/// Everything an invocation needs, built once per container.
pub struct App<M> {
    guard: Guard,
    supabase: M,
    clock: fn() -> DateTime<Utc>,
}

impl<M: ManagementApi> App<M> {
    pub fn new(guard: Guard, supabase: M) -> Self {
        Self { guard, supabase, clock: Utc::now }
    }

    /// Replaces the clock, for tests of expiry rules.
    pub fn with_clock(mut self, clock: fn() -> DateTime<Utc>) -> Self {
        self.clock = clock;
        self
    }

    /// Serves one Lambda event for `action`; every failure becomes a problem response.
    pub async fn handle(&self, action: Action, request: Request) -> Response<Body> {
        let call = match read_call(&request, route(action)) {
            Ok(call) => call,
            Err(error) => {
                tracing::warn!(action = %action, code = error.code(), "request rejected before parsing");
                return error.into_response(None);
            }
        };

        match self.dispatch(action, &call).await {
            Ok(response) => response,
            Err(error) => {
                let status = error.status();
                if status >= 500 {
                    tracing::error!(action = %action, caller = %call.caller, status, code = error.code(), "request failed");
                } else {
                    tracing::warn!(action = %action, caller = %call.caller, status, code = error.code(), "request rejected");
                }
                error.into_response(call.request_id.as_deref())
            }
        }
    }

    async fn dispatch(&self, action: Action, call: &Call) -> Result<Response<Body>, Error> {
        match action {
            Action::ListOrganizationMembers => self.list_organization_members(call).await,
            Action::ListProjects => self.list_projects(call).await,
            Action::GetProject => self.get_project(call).await,
            Action::AuthorizeJitAccess => self.authorize_jit_access(call).await,
            Action::UpdateJitAccess => self.update_jit_access(call).await,
            Action::ListJitAccess => self.list_jit_access(call).await,
            Action::RevokeJitAccess => self.revoke_jit_access(call).await,
        }
    }

    async fn list_organization_members(&self, call: &Call) -> Result<Response<Body>, Error> {
        let slug = OrganizationSlug::parse("slug", call.path_parameter("slug")).map_err(invalid)?;

        self.require_allow(call, Action::ListOrganizationMembers, Resource::Organization(slug.as_str()), json!({}))?;

        let response = self.supabase.list_organization_members(&slug).await?;
        Ok(json_response(response))
    }

    async fn list_projects(&self, call: &Call) -> Result<Response<Body>, Error> {
        self.require_allow(call, Action::ListProjects, Resource::Account, json!({}))?;

        let response = self.supabase.list_projects().await?;
        Ok(json_response(response))
    }

    async fn get_project(&self, call: &Call) -> Result<Response<Body>, Error> {
        let project_ref = ProjectRef::parse("ref", call.path_parameter("ref")).map_err(invalid)?;

        self.require_allow(call, Action::GetProject, Resource::Project(project_ref.as_str()), json!({}))?;

        let response = self.supabase.get_project(&project_ref).await?;
        Ok(json_response(response))
    }

    async fn list_jit_access(&self, call: &Call) -> Result<Response<Body>, Error> {
        let project_ref = ProjectRef::parse("ref", call.path_parameter("ref")).map_err(invalid)?;

        self.require_allow(call, Action::ListJitAccess, Resource::Project(project_ref.as_str()), json!({}))?;

        let response = self.supabase.list_jit_access(&project_ref).await?;
        Ok(json_response(response))
    }

    async fn revoke_jit_access(&self, call: &Call) -> Result<Response<Body>, Error> {
        let project_ref = ProjectRef::parse("ref", call.path_parameter("ref"));
        let user_id = UserId::parse("user_id", call.path_parameter("user_id"));
        let (project_ref, user_id) = match (project_ref, user_id) {
            (Ok(project_ref), Ok(user_id)) => (project_ref, user_id),
            (project_ref, user_id) => {
                let errors = [project_ref.err(), user_id.err()].into_iter().flatten().collect();
                return Err(Error::InvalidRequest(errors));
            }
        };

        let context = json!({ "user_id": user_id.as_str() });
        self.require_allow(call, Action::RevokeJitAccess, Resource::Project(project_ref.as_str()), context)?;

        let response = self.supabase.revoke_jit_access(&project_ref, &user_id).await?;
        Ok(json_response(response))
    }

    async fn authorize_jit_access(&self, call: &Call) -> Result<Response<Body>, Error> {
        let project_ref = ProjectRef::parse("ref", call.path_parameter("ref"));
        let body = parse_authorize_body(&call.body);
        let (project_ref, request) = match (project_ref, body) {
            (Ok(project_ref), Ok(request)) => (project_ref, request),
            (project_ref, body) => {
                let mut errors: Vec<FieldError> = project_ref.err().into_iter().collect();
                errors.extend(body.err().unwrap_or_default());
                return Err(Error::InvalidRequest(errors));
            }
        };

        let network = IpNet::from(request.rhost);
        let context = json!({
            "role": request.role.as_str(),
            "network": cedar_ip(&network),
            "network_prefix_length": network.prefix_len(),
            "now": cedar_datetime((self.clock)()),
        });
        self.require_allow(call, Action::AuthorizeJitAccess, Resource::Project(project_ref.as_str()), context)?;

        // For this route a 403 is Supabase's answer to the check, not a token problem.
        let response = match self.supabase.authorize_jit_access(&project_ref, &request).await {
            Err(UpstreamError::Forbidden) => return Err(Error::JitAccessNotGranted),
            result => result?,
        };
        Ok(json_response(response))
    }

    async fn update_jit_access(&self, call: &Call) -> Result<Response<Body>, Error> {
        let now = (self.clock)();
        let project_ref = ProjectRef::parse("ref", call.path_parameter("ref"));
        let body = parse_update_body(&call.body, now);
        let (project_ref, request) = match (project_ref, body) {
            (Ok(project_ref), Ok(request)) => (project_ref, request),
            (project_ref, body) => {
                let mut errors: Vec<FieldError> = project_ref.err().into_iter().collect();
                errors.extend(body.err().unwrap_or_default());
                return Err(Error::InvalidRequest(errors));
            }
        };

        // Every (role, network) pair is its own decision, so a policy sees one
        // network at a time and a deny names the exact pair.
        let resource = Resource::Project(project_ref.as_str());
        let mut denials = Vec::new();
        let mut allow_policy_ids = Vec::new();
        for grant in &request.roles {
            for network in grant.networks() {
                let mut context = json!({
                    "user_id": request.user_id.as_str(),
                    "role": grant.role.as_str(),
                    "network": cedar_ip(&network),
                    "network_prefix_length": network.prefix_len(),
                    "now": cedar_datetime(now),
                    "branches_only": grant.branches_only.unwrap_or(false),
                });
                if let Some(expires_at) = grant.expires_at.and_then(|seconds| DateTime::from_timestamp(seconds, 0)) {
                    context["expires_at"] = cedar_datetime(expires_at);
                }
                let decision = self.guard.decide(call.caller.as_str(), Action::UpdateJitAccess, resource, context);
                if decision.allowed {
                    allow_policy_ids.extend(decision.policy_ids);
                } else {
                    denials.push(Denial {
                        role: Some(grant.role.to_string()),
                        network: Some(network.to_string()),
                        policy_ids: decision.policy_ids,
                        reasons: decision.reasons,
                    });
                }
            }
        }

        let policy_ids = if denials.is_empty() {
            allow_policy_ids
        } else {
            denials.iter().flat_map(|denial| denial.policy_ids.clone()).collect()
        };
        log_decision(call, Action::UpdateJitAccess, project_ref.as_str(), Some(&request.user_id), denials.is_empty(), policy_ids);
        if !denials.is_empty() {
            return Err(Error::PolicyDenied { action: Action::UpdateJitAccess.name(), denials });
        }

        let response = self.supabase.update_jit_access(&project_ref, &request).await?;
        Ok(json_response(response))
    }

    /// Decides one request and fails with the deny's policies unless allowed.
    fn require_allow(&self, call: &Call, action: Action, resource: Resource<'_>, context: Value) -> Result<(), Error> {
        let Decision { allowed, policy_ids, reasons } = self.guard.decide(call.caller.as_str(), action, resource, context);
        let resource_id = match resource {
            Resource::Account => "",
            Resource::Organization(id) | Resource::Project(id) => id,
        };
        log_decision(call, action, resource_id, None, allowed, policy_ids.clone());
        if allowed {
            return Ok(());
        }
        Err(Error::PolicyDenied { action: action.name(), denials: vec![Denial { role: None, network: None, policy_ids, reasons }] })
    }
}

/// Writes the one log line of an access decision.
fn log_decision(call: &Call, action: Action, resource: &str, target_user: Option<&UserId>, allowed: bool, mut policy_ids: Vec<String>) {
    policy_ids.sort_unstable();
    policy_ids.dedup();
    tracing::info!(
        caller = %call.caller,
        action = %action,
        resource,
        target_user = target_user.map(UserId::as_str),
        decision = if allowed { "allow" } else { "deny" },
        policy_ids = ?policy_ids,
        request_id = call.request_id.as_deref(),
        api_request_id = call.api_request_id.as_deref(),
        "access decision"
    );
}

fn invalid(error: FieldError) -> Error {
    Error::InvalidRequest(vec![error])
}

/// A Cedar `ip` extension value in the JSON context format.
fn cedar_ip(network: &IpNet) -> Value {
    let text = match network {
        // Single addresses go as plain addresses, which Cedar treats as /32 or /128.
        IpNet::V4(v4) if v4.prefix_len() == 32 => IpAddr::V4(v4.addr()).to_string(),
        IpNet::V6(v6) if v6.prefix_len() == 128 => IpAddr::V6(v6.addr()).to_string(),
        _ => network.to_string(),
    };
    json!({ "__extn": { "fn": "ip", "arg": text } })
}

/// A Cedar `datetime` extension value, in whole seconds UTC.
fn cedar_datetime(time: DateTime<Utc>) -> Value {
    json!({ "__extn": { "fn": "datetime", "arg": time.to_rfc3339_opts(SecondsFormat::Secs, true) } })
}

fn json_response(response: UpstreamResponse) -> Response<Body> {
    let builder = Response::builder().status(response.status);
    let built = if response.body.is_null() {
        builder.body(Body::Empty)
    } else {
        builder.header(CONTENT_TYPE, "application/json").body(Body::Text(response.body.to_string()))
    };
    built.unwrap_or_else(|_| Response::new(Body::Empty))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{AuthorizeJitAccess, UpdateJitAccess};
    use std::sync::Mutex;

    /// Records every call and returns an empty success.
    #[derive(Default)]
    struct RecordingApi {
        calls: Mutex<Vec<String>>,
    }

    impl RecordingApi {
        fn record(&self, call: String) -> Result<UpstreamResponse, UpstreamError> {
            self.calls.lock().unwrap().push(call);
            Ok(UpstreamResponse { status: 200, body: json!({ "user_roles": [] }) })
        }
    }

    impl ManagementApi for RecordingApi {
        async fn list_organization_members(&self, slug: &OrganizationSlug) -> Result<UpstreamResponse, UpstreamError> {
            self.record(format!("members {slug}"))
        }
        async fn list_projects(&self) -> Result<UpstreamResponse, UpstreamError> {
            self.record("projects".into())
        }
        async fn get_project(&self, project_ref: &ProjectRef) -> Result<UpstreamResponse, UpstreamError> {
            self.record(format!("project {project_ref}"))
        }
        async fn authorize_jit_access(&self, project_ref: &ProjectRef, request: &AuthorizeJitAccess) -> Result<UpstreamResponse, UpstreamError> {
            self.record(format!("authorize {project_ref} {}", request.role))
        }
        async fn update_jit_access(&self, project_ref: &ProjectRef, request: &UpdateJitAccess) -> Result<UpstreamResponse, UpstreamError> {
            self.record(format!("update {project_ref} {}", request.to_upstream_body()))
        }
        async fn list_jit_access(&self, project_ref: &ProjectRef) -> Result<UpstreamResponse, UpstreamError> {
            self.record(format!("list {project_ref}"))
        }
        async fn revoke_jit_access(&self, project_ref: &ProjectRef, user_id: &UserId) -> Result<UpstreamResponse, UpstreamError> {
            self.record(format!("revoke {project_ref} {user_id}"))
        }
    }

    const PROJECT: &str = "abcdefghijklmnopqrst";
    const USER: &str = "55555555-5555-4555-8555-555555555555";

    fn fixed_now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn app() -> App<RecordingApi> {
        App::new(Guard::from_defaults().unwrap(), RecordingApi::default()).with_clock(fixed_now)
    }

    fn function_url_event(method: &str, path: &str, body: Option<&str>) -> Request {
        let event = json!({
            "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
            "headers": { "content-type": "application/json" },
            "requestContext": { "http": { "method": method, "path": path } },
            "body": body, "isBase64Encoded": false
        });
        lambda_http::request::from_str(&event.to_string()).unwrap()
    }

    fn body_json(response: &Response<Body>) -> Value {
        match response.body() {
            Body::Text(text) => serde_json::from_str(text).unwrap(),
            _ => Value::Null,
        }
    }

    fn update_body(role: &str, hours: i64, cidr: &str) -> String {
        let expires_at = fixed_now().timestamp() + hours * 3600;
        format!(
            r#"{{"user_id":"{USER}","roles":[{{"role":"{role}","expires_at":{expires_at},"allowed_networks":{{"allowed_cidrs":[{{"cidr":"{cidr}"}}]}}}}]}}"#
        )
    }

    async fn update(app: &App<RecordingApi>, body: &str) -> Response<Body> {
        let path = format!("/v1/projects/{PROJECT}/database/jit");
        app.handle(Action::UpdateJitAccess, function_url_event("PUT", &path, Some(body))).await
    }

    #[tokio::test]
    async fn update_allowed_reaches_supabase() {
        let app = app();
        let response = update(&app, &update_body("jit_readonly", 2, "10.20.0.0/16")).await;
        assert_eq!(response.status(), 200);
        let calls = app.supabase.calls.lock().unwrap();
        assert_eq!(calls.len(), 1);
        assert!(calls[0].contains("\"roles\""));
    }

    #[tokio::test]
    async fn update_denied_for_superuser_role() {
        let app = app();
        let response = update(&app, &update_body("postgres", 2, "10.20.0.0/16")).await;
        assert_eq!(response.status(), 403);
        let body = body_json(&response);
        assert_eq!(body["code"], "policy_denied");
        assert_eq!(body["denials"][0]["role"], "postgres");
        assert!(body["policy_ids"].as_array().unwrap().contains(&json!("deny-superuser-roles")));
        assert!(app.supabase.calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn update_denied_for_long_expiry() {
        let app = app();
        let response = update(&app, &update_body("jit_readonly", 9, "10.20.0.0/16")).await;
        assert_eq!(response.status(), 403);
        assert_eq!(body_json(&response)["policy_ids"], json!(["expiry-at-most-8-hours"]));
        assert!(app.supabase.calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn update_without_networks_is_open_and_denied() {
        let app = app();
        let expires_at = fixed_now().timestamp() + 3600;
        let body = format!(r#"{{"user_id":"{USER}","roles":[{{"role":"jit_readonly","expires_at":{expires_at}}}]}}"#);
        let response = update(&app, &body).await;
        assert_eq!(response.status(), 403);
        let denials = body_json(&response)["denials"].clone();
        assert_eq!(denials[0]["network"], "0.0.0.0/0");
        assert_eq!(denials[1]["network"], "::/0");
        assert!(denials[0]["policy_ids"].as_array().unwrap().contains(&json!("deny-open-ranges")));
    }

    #[tokio::test]
    async fn update_invalid_body_sends_nothing() {
        let app = app();
        let response = update(&app, r#"{"user_id":"nope","roles":[]}"#).await;
        assert_eq!(response.status(), 400);
        let body = body_json(&response);
        let fields: Vec<&str> = body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(fields, vec!["user_id", "roles"]);
        assert!(app.supabase.calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn authorize_outside_ranges_denied() {
        let app = app();
        let path = format!("/v1/projects/{PROJECT}/database/jit");
        let event = function_url_event("POST", &path, Some(r#"{"role":"jit_readonly","rhost":"198.51.100.7"}"#));
        let response = app.handle(Action::AuthorizeJitAccess, event).await;
        assert_eq!(response.status(), 403);
        assert_eq!(body_json(&response)["policy_ids"], json!(["networks-within-permitted-ranges"]));
    }

    #[tokio::test]
    async fn authorize_inside_ranges_allowed() {
        let app = app();
        let path = format!("/v1/projects/{PROJECT}/database/jit");
        let event = function_url_event("POST", &path, Some(r#"{"role":"jit_readonly","rhost":"fd00::5"}"#));
        let response = app.handle(Action::AuthorizeJitAccess, event).await;
        assert_eq!(response.status(), 200);
    }

    #[tokio::test]
    async fn wrong_method_is_not_found() {
        let app = app();
        let event = function_url_event("POST", &format!("/v1/projects/{PROJECT}"), None);
        let response = app.handle(Action::GetProject, event).await;
        assert_eq!(response.status(), 404);
        assert_eq!(body_json(&response)["code"], "route_not_found");
    }

    #[tokio::test]
    async fn revoke_reports_both_bad_ids() {
        let app = app();
        let event = function_url_event("DELETE", "/v1/projects/short/database/jit/not-a-uuid", None);
        let response = app.handle(Action::RevokeJitAccess, event).await;
        assert_eq!(response.status(), 400);
        let body = body_json(&response);
        assert_eq!(body["errors"][0]["field"], "ref");
        assert_eq!(body["errors"][1]["field"], "user_id");
    }
}
