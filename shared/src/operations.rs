//! The seven operations. Each reads as the same steps: validate the input,
//! look up the facts a JIT decision needs, decide with Cedar, call Supabase,
//! respond. A write reaches Supabase only after every Cedar decision for it
//! is an allow, and never in a dry run.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use ipnet::IpNet;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

use crate::audit::AuditRecord;
use crate::error::{Error, FieldError};
use crate::event::{HttpEvent, HttpResponse};
use crate::facts::{FactCache, ProjectFacts, TargetUser};
use crate::policy::{Action, Decision, Denial, Fact, Facts, Guard, Resource};
use crate::request::{Call, Route, read_call};
use crate::signature::{SignatureVerifier, VerifyError};
use crate::supabase::{DEADLINE, ManagementApi, UpstreamError, UpstreamResponse};
use crate::validate::{OrganizationSlug, ProjectRef, RoleGrant, RoleName, UserId, parse_authorize_body, parse_update_body};

/// Default wait before a grant or role revocation reads its write back; the
/// configured value replaces it at init.
const DEFAULT_SETTLE: Duration = Duration::from_millis(200);

/// Returns the route each operation serves: the same paths as Supabase's Management API v1,
/// plus the grant lifecycle routes. The sweep runs on a schedule and has no route.
pub fn route(action: Action) -> Option<Route> {
    let (method, template, mutating) = match action {
        Action::ListOrganizationMembers => ("GET", "/v1/organizations/{slug}/members", false),
        Action::ListProjects => ("GET", "/v1/projects", false),
        Action::GetProject => ("GET", "/v1/projects/{ref}", false),
        Action::AuthorizeJitAccess => ("POST", "/v1/projects/{ref}/database/jit", false),
        Action::UpdateJitAccess => ("PUT", "/v1/projects/{ref}/database/jit", true),
        Action::ListJitAccess => ("GET", "/v1/projects/{ref}/database/jit/list", false),
        Action::RevokeJitAccess => ("DELETE", "/v1/projects/{ref}/database/jit/{user_id}", true),
        Action::GrantJitAccess => ("POST", "/v1/projects/{ref}/database/jit/grants", true),
        Action::RevokeJitRole => ("DELETE", "/v1/projects/{ref}/database/jit/{user_id}/roles/{role}", true),
        Action::SweepJitAccess => return None,
    };
    Some(Route { method, template, mutating })
}

/// Everything an invocation needs, built once per container.
pub struct App<M> {
    pub(crate) guard: Guard,
    pub(crate) supabase: M,
    pub(crate) facts: FactCache,
    signatures: Option<SignatureVerifier>,
    pub(crate) clock: fn() -> DateTime<Utc>,
    /// Wait before reading a write back to check that no concurrent write replaced it.
    pub(crate) settle: Duration,
}

/// The outcome of deciding every part of a request.
pub(crate) struct Verdict {
    pub(crate) allowed: bool,
    pub(crate) policy_ids: Vec<String>,
    pub(crate) denials: Vec<Denial>,
}

impl<M: ManagementApi> App<M> {
    /// Builds the app; looked-up project and member facts are reused for `facts_ttl`.
    pub fn new(guard: Guard, supabase: M, facts_ttl: Duration) -> Self {
        Self {
            guard,
            supabase,
            facts: FactCache::new(facts_ttl),
            signatures: None,
            clock: Utc::now,
            settle: DEFAULT_SETTLE,
        }
    }

    /// Sets the wait before a grant or role revocation reads its write back.
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// Requires every request to carry a valid Persona signature.
    pub fn with_signature_verifier(mut self, verifier: SignatureVerifier) -> Self {
        self.signatures = Some(verifier);
        self
    }

    /// Replaces the clock, for tests of expiry rules.
    pub fn with_clock(mut self, clock: fn() -> DateTime<Utc>) -> Self {
        self.clock = clock;
        self
    }

    /// Serves one Lambda event for `action`; every failure becomes a problem response.
    pub async fn handle(&self, action: Action, event: LambdaEvent<HttpEvent>) -> HttpResponse {
        let version = event.payload.version();
        self.respond(action, event).await.for_payload(version)
    }

    async fn respond(&self, action: Action, event: LambdaEvent<HttpEvent>) -> HttpResponse {
        let LambdaEvent { payload: event, context } = event;
        let Some(route) = route(action) else {
            let error = Error::RouteNotFound { method: event.method().to_owned(), path: event.path().to_owned() };
            return error.into_response(None);
        };
        let request_id = Some(context.request_id.clone()).filter(|id| !id.is_empty());
        let call = match read_call(event, route, request_id) {
            Ok(call) => call,
            Err(error) => {
                tracing::warn!(action = %action, code = error.code(), "request rejected before parsing");
                return error.into_response(None);
            }
        };

        // An unsigned or wrongly signed request reaches neither Cedar nor Supabase.
        if let Some(verifier) = &self.signatures
            && let Err(error) = verifier.verify(call.signature.as_deref(), &call.body, (self.clock)().timestamp()).await
        {
            let error = match error {
                VerifyError::Signature(signature) => Error::InvalidSignature(signature),
                VerifyError::Secret(secret) => Error::SigningSecret(secret),
            };
            tracing::warn!(action = %action, caller = %call.caller, code = error.code(), error = %error, "request signature rejected");
            return error.into_response(call.request_id.as_deref());
        }

        let mut audit = None;
        let deadline = lambda_deadline(&context);
        let result = DEADLINE.scope(deadline, self.dispatch(action, &call, &mut audit)).await;
        if let Some(mut record) = audit {
            if let Err(Error::Upstream(upstream)) = &result {
                record.upstream_status = upstream.upstream_status();
                if record.upstream_status.is_none() {
                    record.upstream_error = Some(upstream.code());
                }
            }
            record.emit();
        }

        match result {
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

    async fn dispatch(&self, action: Action, call: &Call, audit: &mut Option<AuditRecord>) -> Result<HttpResponse, Error> {
        match action {
            Action::ListOrganizationMembers => self.list_organization_members(call, audit).await,
            Action::ListProjects => self.list_projects(call, audit).await,
            Action::GetProject => self.get_project(call, audit).await,
            Action::AuthorizeJitAccess => self.authorize_jit_access(call, audit).await,
            Action::UpdateJitAccess => self.update_jit_access(call, audit).await,
            Action::ListJitAccess => self.list_jit_access(call, audit).await,
            Action::RevokeJitAccess => self.revoke_jit_access(call, audit).await,
            Action::GrantJitAccess => self.grant_jit_access(call, audit).await,
            Action::RevokeJitRole => self.revoke_jit_role(call, audit).await,
            Action::SweepJitAccess => {
                Err(Error::RouteNotFound { method: "scheduled".into(), path: "sweep-jit-access".into() })
            }
        }
    }

    async fn list_organization_members(&self, call: &Call, audit: &mut Option<AuditRecord>) -> Result<HttpResponse, Error> {
        let slug = OrganizationSlug::parse("slug", call.path_parameter("slug")).map_err(invalid)?;

        let mut record = self.audit_record(call, Action::ListOrganizationMembers);
        record.organization_slug = Some(slug.to_string());
        let verdict = self.decide_one(call, Action::ListOrganizationMembers, Resource::Organization(slug.as_str()), Facts::new(), None);
        self.require_allow(call, Action::ListOrganizationMembers, verdict, record, audit)?;

        let response = self.supabase.list_organization_members(&slug).await?;
        Ok(passed_on(response, audit))
    }

    async fn list_projects(&self, call: &Call, audit: &mut Option<AuditRecord>) -> Result<HttpResponse, Error> {
        let record = self.audit_record(call, Action::ListProjects);
        let verdict = self.decide_one(call, Action::ListProjects, Resource::Account, Facts::new(), None);
        self.require_allow(call, Action::ListProjects, verdict, record, audit)?;

        let response = self.supabase.list_projects().await?;
        Ok(passed_on(response, audit))
    }

    async fn get_project(&self, call: &Call, audit: &mut Option<AuditRecord>) -> Result<HttpResponse, Error> {
        let project_ref = ProjectRef::parse("ref", call.path_parameter("ref")).map_err(invalid)?;

        let mut record = self.audit_record(call, Action::GetProject);
        record.project_ref = Some(project_ref.to_string());
        let verdict = self.decide_one(call, Action::GetProject, Resource::Project(project_ref.as_str()), Facts::new(), None);
        self.require_allow(call, Action::GetProject, verdict, record, audit)?;

        let response = self.supabase.get_project(&project_ref).await?;
        Ok(passed_on(response, audit))
    }

    async fn list_jit_access(&self, call: &Call, audit: &mut Option<AuditRecord>) -> Result<HttpResponse, Error> {
        let project_ref = ProjectRef::parse("ref", call.path_parameter("ref")).map_err(invalid)?;

        let mut record = self.audit_record(call, Action::ListJitAccess);
        record.project_ref = Some(project_ref.to_string());
        let verdict = self.decide_one(call, Action::ListJitAccess, Resource::Project(project_ref.as_str()), Facts::new(), None);
        self.require_allow(call, Action::ListJitAccess, verdict, record, audit)?;

        let response = self.supabase.list_jit_access(&project_ref).await?;
        Ok(passed_on(response, audit))
    }

    async fn revoke_jit_access(&self, call: &Call, audit: &mut Option<AuditRecord>) -> Result<HttpResponse, Error> {
        let project_ref = ProjectRef::parse("ref", call.path_parameter("ref"));
        let user_id = UserId::parse("user_id", call.path_parameter("user_id"));
        let (project_ref, user_id) = match (project_ref, user_id) {
            (Ok(project_ref), Ok(user_id)) => (project_ref, user_id),
            (project_ref, user_id) => {
                let errors = [project_ref.err(), user_id.err()].into_iter().flatten().collect();
                return Err(Error::InvalidRequest(errors));
            }
        };

        let normalized = json!({ "user_id": user_id.as_str() });
        let mut record = self.audit_record(call, Action::RevokeJitAccess);
        record.project_ref = Some(project_ref.to_string());
        record.target_user = Some(user_id.to_string());
        record.request = normalized.clone();
        let context = user_context(user_id.as_str());
        let verdict = self.decide_one(call, Action::RevokeJitAccess, Resource::Project(project_ref.as_str()), context, None);
        if call.dry_run {
            return Ok(self.dry_run_report(Action::RevokeJitAccess, verdict, normalized, record, audit));
        }
        self.require_allow(call, Action::RevokeJitAccess, verdict, record, audit)?;

        let response = self.supabase.revoke_jit_access(&project_ref, &user_id).await?;
        Ok(passed_on(response, audit))
    }

    async fn authorize_jit_access(&self, call: &Call, audit: &mut Option<AuditRecord>) -> Result<HttpResponse, Error> {
        let (project_ref, request) =
            both(ProjectRef::parse("ref", call.path_parameter("ref")), parse_authorize_body(&call.body))?;

        let project = self.facts.project(&self.supabase, &project_ref).await?;

        let context = authorize_context(&request.role, request.rhost, (self.clock)());
        let mut record = self.audit_record(call, Action::AuthorizeJitAccess);
        record.project_ref = Some(project_ref.to_string());
        record.organization_slug = Some(project.organization_slug.clone());
        record.request = json!({ "role": request.role.as_str(), "rhost": request.rhost.to_string() });
        let resource = Resource::Project(project_ref.as_str());
        let verdict = self.decide_one(call, Action::AuthorizeJitAccess, resource, context, Some(&project));
        self.require_allow(call, Action::AuthorizeJitAccess, verdict, record, audit)?;

        // For this route a 403 is Supabase's result of the check, not a token problem.
        let response = match self.supabase.authorize_jit_access(&project_ref, &request).await {
            Err(UpstreamError::Forbidden) => {
                if let Some(record) = audit.as_mut() {
                    record.upstream_status = Some(403);
                }
                return Err(Error::JitAccessNotGranted);
            }
            result => result?,
        };
        Ok(passed_on(response, audit))
    }

    async fn update_jit_access(&self, call: &Call, audit: &mut Option<AuditRecord>) -> Result<HttpResponse, Error> {
        let now = (self.clock)();
        let (project_ref, request) =
            both(ProjectRef::parse("ref", call.path_parameter("ref")), parse_update_body(&call.body, now))?;

        let project = self.facts.project(&self.supabase, &project_ref).await?;
        let target_user = self.facts.target_user(&self.supabase, &project.organization_slug, &request.user_id).await?;

        let verdict = self.decide_grants(call, Action::UpdateJitAccess, &project, &target_user, &request.user_id, &request.roles, now);
        let normalized = request.to_upstream_body();
        let record = self.write_record(
            call,
            Action::UpdateJitAccess,
            project_ref.as_str(),
            &project.organization_slug,
            request.user_id.as_str(),
            normalized.clone(),
        );
        if call.dry_run {
            return Ok(self.dry_run_report(Action::UpdateJitAccess, verdict, normalized, record, audit));
        }
        self.require_allow(call, Action::UpdateJitAccess, verdict, record, audit)?;

        let response = self.supabase.update_jit_access(&project_ref, &normalized).await?;
        Ok(passed_on(response, audit))
    }

    /// Decides every (role, network) pair of a role list as `action`, so a
    /// policy evaluates one network at a time and a deny names the exact pair.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn decide_grants(
        &self,
        call: &Call,
        action: Action,
        project: &ProjectFacts,
        target_user: &TargetUser,
        user_id: &UserId,
        grants: &[RoleGrant],
        now: DateTime<Utc>,
    ) -> Verdict {
        let entities = self.guard.entities(Some(project));
        let resource = Resource::Project(&project.project_ref);
        let (pairs, contexts) = grant_contexts(user_id, grants, target_user, now);
        let decisions = self.guard.decide_each(call.caller.as_str(), action, resource, &contexts, &entities);

        let mut denials = Vec::new();
        let mut allow_policy_ids = Vec::new();
        for ((grant, network), decision) in pairs.into_iter().zip(decisions) {
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

        let allowed = denials.is_empty();
        let mut policy_ids: Vec<String> = if allowed {
            allow_policy_ids
        } else {
            denials.iter().flat_map(|denial| denial.policy_ids.clone()).collect()
        };
        policy_ids.sort_unstable();
        policy_ids.dedup();
        Verdict { allowed, policy_ids, denials }
    }

    /// Decides one request on a typed context. The context is not checked
    /// against the schema on each call; each context builder is checked by a
    /// unit test instead, as for [`Guard::decide_each`].
    pub(crate) fn decide_one(
        &self,
        call: &Call,
        action: Action,
        resource: Resource<'_>,
        context: Facts,
        project: Option<&ProjectFacts>,
    ) -> Verdict {
        let entities = self.guard.entities(project);
        let decision = self.guard.decide_each(call.caller.as_str(), action, resource, std::slice::from_ref(&context), &entities).pop();
        // One context gives one decision; an empty result would count as a deny.
        let Decision { allowed, mut policy_ids, reasons } =
            decision.unwrap_or(Decision { allowed: false, policy_ids: Vec::new(), reasons: Vec::new() });
        policy_ids.sort_unstable();
        let denials = if allowed {
            Vec::new()
        } else {
            vec![Denial { role: None, network: None, policy_ids: policy_ids.clone(), reasons }]
        };
        Verdict { allowed, policy_ids, denials }
    }

    pub(crate) fn audit_record(&self, call: &Call, action: Action) -> AuditRecord {
        AuditRecord::new(call, action.name(), self.guard.policy_set_hash())
    }

    /// Starts the audit record of a write to one user's mappings in one project.
    pub(crate) fn write_record(
        &self,
        call: &Call,
        action: Action,
        project_ref: &str,
        organization_slug: &str,
        user_id: &str,
        request: Value,
    ) -> AuditRecord {
        let mut record = self.audit_record(call, action);
        record.project_ref = Some(project_ref.to_owned());
        record.organization_slug = Some(organization_slug.to_owned());
        record.target_user = Some(user_id.to_owned());
        record.request = request;
        record
    }

    /// Logs the decision, keeps its audit record, and fails unless it is an allow.
    pub(crate) fn require_allow(
        &self,
        call: &Call,
        action: Action,
        verdict: Verdict,
        mut record: AuditRecord,
        audit: &mut Option<AuditRecord>,
    ) -> Result<(), Error> {
        log_decision(call, action, &record, &verdict);
        record.decision = if verdict.allowed { "allow" } else { "deny" };
        record.policy_ids = verdict.policy_ids;
        *audit = Some(record);
        if verdict.allowed {
            return Ok(());
        }
        Err(Error::PolicyDenied { action: action.name(), denials: verdict.denials })
    }

    /// Reports what a mutating request would do, sending nothing to Supabase.
    pub(crate) fn dry_run_report(
        &self,
        action: Action,
        verdict: Verdict,
        normalized: Value,
        mut record: AuditRecord,
        audit: &mut Option<AuditRecord>,
    ) -> HttpResponse {
        let decision = if verdict.allowed { "allow" } else { "deny" };
        record.decision = decision;
        record.policy_ids = verdict.policy_ids.clone();
        tracing::info!(
            caller = %record.caller,
            action = %action,
            project_ref = record.project_ref.as_deref(),
            target_user = record.target_user.as_deref(),
            decision,
            policy_ids = ?verdict.policy_ids,
            dry_run = true,
            "access decision"
        );
        *audit = Some(record);
        let report = json!({
            "dry_run": true,
            "action": action.name(),
            "decision": decision,
            "policy_ids": verdict.policy_ids,
            "request": normalized,
            "denials": verdict.denials,
        });
        json_response(UpstreamResponse { status: 200, body: report })
    }
}

/// Finds the instant the invocation must respond by, from the Lambda context.
/// A deadline that is missing or already past is not a real Lambda deadline:
/// `cargo lambda watch` sends a relative 600000 ms, which reads as 1970. Then
/// a minute from now is used, and the call timeouts still bound each call.
fn lambda_deadline(context: &Context) -> Instant {
    let left = context.deadline().duration_since(SystemTime::now()).unwrap_or(FALLBACK_TIME_LEFT);
    Instant::now() + left
}

/// Time left assumed when the event carries no usable deadline.
const FALLBACK_TIME_LEFT: Duration = Duration::from_secs(60);

/// Writes the one log line of an access decision.
fn log_decision(call: &Call, action: Action, record: &AuditRecord, verdict: &Verdict) {
    tracing::info!(
        caller = %call.caller,
        action = %action,
        project_ref = record.project_ref.as_deref(),
        organization_slug = record.organization_slug.as_deref(),
        target_user = record.target_user.as_deref(),
        decision = if verdict.allowed { "allow" } else { "deny" },
        policy_ids = ?verdict.policy_ids,
        request_id = call.request_id.as_deref(),
        api_request_id = call.api_request_id.as_deref(),
        "access decision"
    );
}

pub(crate) fn invalid(error: FieldError) -> Error {
    Error::InvalidRequest(vec![error])
}

/// Pairs a parsed path parameter with a parsed body, or lists the field errors of both.
pub(crate) fn both<A, B>(first: Result<A, FieldError>, second: Result<B, Vec<FieldError>>) -> Result<(A, B), Error> {
    match (first, second) {
        (Ok(first), Ok(second)) => Ok((first, second)),
        (first, second) => {
            let mut errors: Vec<FieldError> = first.err().into_iter().collect();
            errors.extend(second.err().unwrap_or_default());
            Err(Error::InvalidRequest(errors))
        }
    }
}

/// Returns the text Cedar's `ip()` reads for a network.
fn cedar_ip_text(network: &IpNet) -> String {
    match network {
        // Single addresses go as plain addresses, which Cedar treats as /32 or /128.
        IpNet::V4(v4) if v4.prefix_len() == 32 => IpAddr::V4(v4.addr()).to_string(),
        IpNet::V6(v6) if v6.prefix_len() == 128 => IpAddr::V6(v6.addr()).to_string(),
        _ => network.to_string(),
    }
}

/// Formats a time as RFC 3339 text in whole seconds UTC, as Cedar's `datetime()` reads it.
fn datetime_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Builds the context of every (role, network) pair of a write, each of the
/// `JitGrant` schema type, and returns the pairs beside their contexts. The
/// values the pairs share are built once.
pub fn grant_contexts<'g>(
    user_id: &UserId,
    grants: &'g [RoleGrant],
    target_user: &TargetUser,
    now: DateTime<Utc>,
) -> (Vec<(&'g RoleGrant, IpNet)>, Vec<Facts>) {
    let user_id = Fact::String(user_id.as_str().to_owned());
    let now_fact = Fact::DateTime(datetime_text(now));
    let target_user = target_user.to_fact();
    let mut pairs = Vec::new();
    let mut contexts = Vec::new();
    for grant in grants {
        let role = Fact::String(grant.role.to_string());
        let branches_only = Fact::Bool(grant.branches_only.unwrap_or(false));
        let expiry = grant.expires_at.and_then(|seconds| DateTime::from_timestamp(seconds, 0)).map(|expires_at| {
            (Fact::DateTime(datetime_text(expires_at)), Fact::Duration(format!("{}s", (expires_at - now).num_seconds())))
        });
        for network in grant.networks() {
            let mut context = Vec::with_capacity(9);
            context.push(("user_id", user_id.clone()));
            context.push(("role", role.clone()));
            context.push(("network", Fact::Ip(cedar_ip_text(&network))));
            context.push(("network_prefix_length", Fact::Long(i64::from(network.prefix_len()))));
            context.push(("now", now_fact.clone()));
            context.push(("branches_only", branches_only.clone()));
            context.push(("target_user", target_user.clone()));
            if let Some((expires_at, expires_in)) = &expiry {
                context.push(("expires_at", expires_at.clone()));
                context.push(("expires_in", expires_in.clone()));
            }
            pairs.push((grant, network));
            contexts.push(context);
        }
    }
    (pairs, contexts)
}

/// Builds the context of an authorize check: the role, and the remote host
/// as a single-address range.
pub fn authorize_context(role: &RoleName, rhost: IpAddr, now: DateTime<Utc>) -> Facts {
    let network = IpNet::from(rhost);
    vec![
        ("role", Fact::String(role.to_string())),
        ("network", Fact::Ip(cedar_ip_text(&network))),
        ("network_prefix_length", Fact::Long(i64::from(network.prefix_len()))),
        ("now", Fact::DateTime(datetime_text(now))),
    ]
}

/// Builds the context naming one user, as revoke-jit-access decides it.
pub(crate) fn user_context(user_id: &str) -> Facts {
    vec![("user_id", Fact::String(user_id.to_owned()))]
}

/// Builds the context naming one user and one of their roles, as
/// revoke-jit-role and the sweep decide it; the sweep adds its reason.
pub(crate) fn user_role_context(user_id: &str, role: &str, reason: Option<&str>) -> Facts {
    let mut context = user_context(user_id);
    context.push(("role", Fact::String(role.to_owned())));
    if let Some(reason) = reason {
        context.push(("reason", Fact::String(reason.to_owned())));
    }
    context
}

/// Passes Supabase's response on and notes its status in the audit record.
pub(crate) fn passed_on(response: UpstreamResponse, audit: &mut Option<AuditRecord>) -> HttpResponse {
    if let Some(record) = audit.as_mut() {
        record.upstream_status = Some(response.status);
    }
    json_response(response)
}

pub(crate) fn json_response(response: UpstreamResponse) -> HttpResponse {
    if response.body.is_null() {
        HttpResponse::empty(response.status)
    } else {
        HttpResponse::json(response.status, "application/json", response.body.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::AuthorizeJitAccess;
    use std::sync::Mutex;

    /// Records every call and returns an empty success.
    #[derive(Default)]
    struct RecordingApi {
        calls: Mutex<Vec<String>>,
    }

    impl RecordingApi {
        fn record(&self, call: String) -> Result<UpstreamResponse, UpstreamError> {
            self.record_with(call, json!({ "user_roles": [] }))
        }

        fn record_with(&self, call: String, body: Value) -> Result<UpstreamResponse, UpstreamError> {
            self.calls.lock().unwrap().push(call);
            Ok(UpstreamResponse { status: 200, body })
        }

        /// Calls other than the project and member lookups.
        fn operation_calls(&self) -> Vec<String> {
            let calls = self.calls.lock().unwrap();
            calls.iter().filter(|call| !call.starts_with("project ") && !call.starts_with("members ")).cloned().collect()
        }
    }

    impl ManagementApi for RecordingApi {
        async fn list_organization_members(&self, slug: &OrganizationSlug) -> Result<UpstreamResponse, UpstreamError> {
            self.record_with(format!("members {slug}"), json!([{ "user_id": USER, "role_name": "Developer", "mfa_enabled": true }]))
        }
        async fn list_projects(&self) -> Result<UpstreamResponse, UpstreamError> {
            self.record("projects".into())
        }
        async fn get_project(&self, project_ref: &ProjectRef) -> Result<UpstreamResponse, UpstreamError> {
            let body = json!({
                "ref": project_ref.as_str(), "name": "acme-staging", "region": "eu-central-1",
                "status": "ACTIVE_HEALTHY", "organization_slug": "acme",
            });
            self.record_with(format!("project {project_ref}"), body)
        }
        async fn authorize_jit_access(&self, project_ref: &ProjectRef, request: &AuthorizeJitAccess) -> Result<UpstreamResponse, UpstreamError> {
            self.record(format!("authorize {project_ref} {}", request.role))
        }
        async fn update_jit_access(&self, project_ref: &ProjectRef, body: &Value) -> Result<UpstreamResponse, UpstreamError> {
            self.record(format!("update {project_ref} {body}"))
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

    /// The typed contexts of writes skip the per-request schema check, so
    /// their builder is checked against the schema here, with and without
    /// an expiry and for members and outsiders.
    #[test]
    fn grant_contexts_match_the_schema() {
        let guard = Guard::from_defaults().unwrap();
        let body = br#"{"user_id":"7c3e0f7a-9d4b-4e2a-8f1c-2b5d6e7f8a9b","roles":[
            {"role":"jit_readonly","expires_at":1800003600,"allowed_networks":{"allowed_cidrs":[{"cidr":"10.1.0.0/16"}],"allowed_cidrs_v6":[{"cidr":"fd00::/64"}]}},
            {"role":"jit_support"}]}"#;
        let update = parse_update_body(body, fixed_now()).unwrap();
        let member = TargetUser { is_member: true, role_name: Some("Developer".into()), mfa_enabled: Some(true) };
        let outsider = TargetUser { is_member: false, role_name: None, mfa_enabled: None };
        let mut checked = 0;
        for target_user in [&member, &outsider] {
            let (_, contexts) = grant_contexts(&update.user_id, &update.roles, target_user, fixed_now());
            for context in &contexts {
                for action in [Action::UpdateJitAccess, Action::GrantJitAccess] {
                    assert_eq!(guard.check_context(action, context), Ok(()), "{action} {context:?}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 16);
    }

    /// Returns each single-decision action with a context its operation builds.
    fn single_decision_contexts() -> Vec<(Action, Facts)> {
        let role = RoleName::parse("role", "jit_readonly").unwrap();
        vec![
            (Action::ListOrganizationMembers, Facts::new()),
            (Action::ListProjects, Facts::new()),
            (Action::GetProject, Facts::new()),
            (Action::ListJitAccess, Facts::new()),
            (Action::AuthorizeJitAccess, authorize_context(&role, "10.1.2.3".parse().unwrap(), fixed_now())),
            (Action::AuthorizeJitAccess, authorize_context(&role, "fd00::7".parse().unwrap(), fixed_now())),
            (Action::RevokeJitAccess, user_context(USER)),
            (Action::RevokeJitRole, user_role_context(USER, "jit_readonly", None)),
            (Action::SweepJitAccess, user_role_context(USER, "jit_readonly", Some("expired"))),
        ]
    }

    /// Single decisions skip the per-request schema check too, so each of
    /// their context builders is checked against its action's context type.
    #[test]
    fn single_decision_contexts_match_the_schema() {
        let guard = Guard::from_defaults().unwrap();
        for (action, context) in &single_decision_contexts() {
            assert_eq!(guard.check_context(*action, context), Ok(()), "{action} {context:?}");
        }

        // A missing attribute is caught, so the check above can fail.
        assert!(guard.check_context(Action::SweepJitAccess, &user_role_context(USER, "jit_readonly", None)).is_err());
    }

    /// The typed path, which evaluates only the policies scoped to the
    /// action, decides as the schema-checked JSON path does: with the shipped
    /// policies, and with policies scoped to any action.
    #[test]
    fn single_decisions_match_the_json_path() {
        let extra = format!(
            "{}\n{}",
            crate::policy::DEFAULT_POLICIES,
            r#"@id("any-forbid") forbid (principal, action, resource) when { context has role && context.role == "jit_readonly" };
            @id("any-permit") permit (principal, action, resource) when { context has user_id };"#
        );
        let shipped = Guard::from_defaults().unwrap();
        let extended = Guard::from_sources("schema", crate::policy::DEFAULT_SCHEMA, "policies", &extra).unwrap();
        let sorted = |mut decision: Decision| {
            decision.policy_ids.sort();
            decision.reasons.sort();
            decision
        };

        for guard in [&shipped, &extended] {
            for (action, context) in &single_decision_contexts() {
                let resource = match action {
                    Action::ListOrganizationMembers => Resource::Organization("acme"),
                    Action::ListProjects => Resource::Account,
                    _ => Resource::Project(PROJECT),
                };
                let entities = guard.entities(None);
                let typed = guard.decide_each("caller", *action, resource, std::slice::from_ref(context), &entities);
                let json = guard.decide("caller", *action, resource, crate::policy::facts_to_json(context), &entities);
                assert_eq!(typed.len(), 1, "{action}");
                assert_eq!(sorted(typed[0].clone()), sorted(json), "{action} {context:?}");
            }
        }
    }

    fn fixed_now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn app() -> App<RecordingApi> {
        App::new(Guard::from_defaults().unwrap(), RecordingApi::default(), Duration::from_secs(30)).with_clock(fixed_now)
    }

    fn function_url_event(method: &str, path_and_query: &str, body: Option<&str>) -> LambdaEvent<HttpEvent> {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let parameters: serde_json::Map<String, Value> = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(name, value)| (name.to_owned(), Value::from(value)))
            .collect();
        let event = json!({
            "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
            "queryStringParameters": parameters,
            "headers": { "content-type": "application/json" },
            "requestContext": { "http": { "method": method, "path": path } },
            "body": body, "isBase64Encoded": false
        });
        LambdaEvent::new(serde_json::from_value(event).unwrap(), Context::default())
    }

    fn body_json(response: &HttpResponse) -> Value {
        response.body().map_or(Value::Null, |text| serde_json::from_str(text).unwrap())
    }

    fn update_body(role: &str, hours: i64, cidr: &str) -> String {
        let expires_at = fixed_now().timestamp() + hours * 3600;
        format!(
            r#"{{"user_id":"{USER}","roles":[{{"role":"{role}","expires_at":{expires_at},"allowed_networks":{{"allowed_cidrs":[{{"cidr":"{cidr}"}}]}}}}]}}"#
        )
    }

    async fn update(app: &App<RecordingApi>, body: &str) -> HttpResponse {
        let path = format!("/v1/projects/{PROJECT}/database/jit");
        app.handle(Action::UpdateJitAccess, function_url_event("PUT", &path, Some(body))).await
    }

    #[tokio::test]
    async fn update_allowed_reaches_supabase() {
        let app = app();
        let response = update(&app, &update_body("jit_readonly", 2, "10.20.0.0/16")).await;
        assert_eq!(response.status(), 200);
        let calls = app.supabase.calls.lock().unwrap();
        assert_eq!(calls.len(), 3, "project, members, update: {calls:?}");
        assert!(calls[2].contains("\"roles\""));
    }

    #[tokio::test]
    async fn facts_are_cached_between_calls() {
        let app = app();
        for _ in 0..3 {
            let response = update(&app, &update_body("jit_readonly", 2, "10.20.0.0/16")).await;
            assert_eq!(response.status(), 200);
        }
        let calls = app.supabase.calls.lock().unwrap();
        assert_eq!(calls.iter().filter(|call| call.starts_with("project ")).count(), 1);
        assert_eq!(calls.iter().filter(|call| call.starts_with("members ")).count(), 1);
    }

    #[tokio::test]
    async fn dry_run_reports_without_writing() {
        let app = app();
        let path = format!("/v1/projects/{PROJECT}/database/jit?dry_run=true");
        let event = function_url_event("PUT", &path, Some(&update_body("postgres", 2, "0.0.0.0/0")));
        let response = app.handle(Action::UpdateJitAccess, event).await;
        assert_eq!(response.status(), 200);
        let body = body_json(&response);
        assert_eq!(body["dry_run"], true);
        assert_eq!(body["decision"], "deny");
        assert_eq!(body["request"]["roles"][0]["role"], "postgres");
        assert_eq!(body["denials"][0]["network"], "0.0.0.0/0");
        assert!(app.supabase.operation_calls().is_empty());
    }

    #[tokio::test]
    async fn dry_run_rejected_on_reads() {
        let app = app();
        let event = function_url_event("GET", &format!("/v1/projects/{PROJECT}?dry_run=true"), None);
        let response = app.handle(Action::GetProject, event).await;
        assert_eq!(response.status(), 400);
        assert_eq!(body_json(&response)["errors"][0]["field"], "dry_run");
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
        assert!(app.supabase.operation_calls().is_empty());
    }

    #[tokio::test]
    async fn update_denied_for_long_expiry() {
        let app = app();
        let response = update(&app, &update_body("jit_readonly", 9, "10.20.0.0/16")).await;
        assert_eq!(response.status(), 403);
        assert_eq!(body_json(&response)["policy_ids"], json!(["expiry-at-most-8-hours"]));
        assert!(app.supabase.operation_calls().is_empty());
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

    #[test]
    fn past_deadline_falls_back_to_a_minute() {
        let mut context = lambda_runtime::Context::default();
        // cargo lambda watch sends 600000, a relative time that reads as January 1970.
        context.deadline = 600_000;
        let left = lambda_deadline(&context).saturating_duration_since(Instant::now());
        assert!(left > Duration::from_secs(59), "{left:?}");

        let mut context = lambda_runtime::Context::default();
        let in_five_seconds = SystemTime::now() + Duration::from_secs(5);
        context.deadline = in_five_seconds.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64;
        let left = lambda_deadline(&context).saturating_duration_since(Instant::now());
        assert!(left <= Duration::from_secs(5), "{left:?}");
        assert!(left > Duration::from_secs(3), "{left:?}");
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
