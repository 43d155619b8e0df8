//! The scheduled sweep: finds every JIT role mapping that is expired, has no
//! expiry, or no longer passes the current write policies, records each one,
//! and, unless configured to report only, removes it.
//!
//! It runs from an EventBridge schedule, not behind API Gateway, so its
//! event is ignored and its result is a JSON report. Every finding writes one
//! audit record whose action is `SweepJitAccess`.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::audit::AuditRecord;
use crate::operations::{App, user_role_context};
use crate::policy::{Action, Resource};
use crate::request::{Call, Caller};
use crate::supabase::{DEADLINE, ManagementApi};
use crate::validate::{ProjectRef, RoleGrant, UserId};

/// The Cedar principal of the sweep's decisions.
pub const SWEEP_CALLER: &str = "scheduled-sweep";

/// Sweep behaviour for a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepMode {
    /// Record findings only: the default, so a new deployment changes nothing.
    Report,
    /// Record findings and remove the mappings.
    Remove,
}

/// One mapping the sweep found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub project_ref: String,
    pub user_id: String,
    pub role: String,
    /// `expired`, `no_expiry` or `out_of_policy`.
    pub reason: &'static str,
    /// Ids of the policies that deny the mapping now, for `out_of_policy`.
    pub policy_ids: Vec<String>,
    /// `reported`, `removed`, `removal_denied` or `removal_failed`.
    pub outcome: &'static str,
}

/// The sweep's result.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub mode: &'static str,
    pub projects_checked: usize,
    pub mappings_checked: usize,
    pub findings: Vec<Finding>,
    /// Projects or users that could not be checked, with the error code.
    pub errors: Vec<String>,
}

impl<M: ManagementApi> App<M> {
    /// Runs one sweep over every project the token can see.
    pub async fn sweep(&self, mode: SweepMode) -> SweepReport {
        let started = Instant::now();
        let call = sweep_call();
        let now = (self.clock)();
        let mut report = SweepReport {
            mode: match mode {
                SweepMode::Report => "report",
                SweepMode::Remove => "remove",
            },
            projects_checked: 0,
            mappings_checked: 0,
            findings: Vec::new(),
            errors: Vec::new(),
        };

        let projects = match self.supabase.list_projects().await {
            Ok(response) => response.body.as_array().cloned().unwrap_or_default(),
            Err(error) => {
                tracing::error!(code = error.code(), "sweep could not list projects");
                report.errors.push(format!("list-projects: {}", error.code()));
                return report;
            }
        };
        for project in projects {
            let Some(project_ref) = project["ref"].as_str().and_then(|text| ProjectRef::parse("ref", text).ok()) else {
                report.errors.push("a project without a valid ref was skipped".into());
                continue;
            };
            report.projects_checked += 1;
            if let Err(error) = self.sweep_project(&call, &project_ref, mode, now, &mut report).await {
                tracing::error!(project_ref = %project_ref, code = error.code(), "sweep could not check a project");
                report.errors.push(format!("{project_ref}: {}", error.code()));
            }
        }

        tracing::info!(
            mode = report.mode,
            projects = report.projects_checked,
            mappings = report.mappings_checked,
            findings = report.findings.len(),
            errors = report.errors.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "sweep complete"
        );
        report
    }

    async fn sweep_project(
        &self,
        call: &Call,
        project_ref: &ProjectRef,
        mode: SweepMode,
        now: DateTime<Utc>,
        report: &mut SweepReport,
    ) -> Result<(), crate::supabase::UpstreamError> {
        let listing = self.supabase.list_jit_access(project_ref).await?;
        let items = listing.body["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            return Ok(());
        }
        let project = self.facts.project(&self.supabase, project_ref).await?;

        for item in items {
            // Pending invites have no user id yet and no mapping to remove.
            let Some(user_id) = item["user_id"].as_str().and_then(|text| UserId::parse("user_id", text).ok()) else {
                continue;
            };
            let roles = item["user_roles"].as_array().cloned().unwrap_or_default();
            let target_user = self.facts.target_user(&self.supabase, &project.organization_slug, &user_id).await?;

            let mut found = Vec::new();
            for entry in &roles {
                report.mappings_checked += 1;
                let role = entry["role"].as_str().unwrap_or_default().to_owned();
                let (reason, policy_ids) = match RoleGrant::from_mapping(entry) {
                    None => ("out_of_policy", Vec::new()),
                    Some(grant) if grant.expires_at.is_none() => ("no_expiry", Vec::new()),
                    Some(grant) if grant.expires_at.is_some_and(|seconds| seconds <= now.timestamp()) => {
                        ("expired", Vec::new())
                    }
                    Some(grant) => {
                        let verdict = self.decide_grants(
                            call,
                            Action::UpdateJitAccess,
                            &project,
                            &target_user,
                            &user_id,
                            std::slice::from_ref(&grant),
                            now,
                        );
                        if verdict.allowed {
                            continue;
                        }
                        ("out_of_policy", verdict.policy_ids)
                    }
                };
                found.push(Finding {
                    project_ref: project_ref.to_string(),
                    user_id: user_id.to_string(),
                    role,
                    reason,
                    policy_ids,
                    outcome: "reported",
                });
            }
            if found.is_empty() {
                continue;
            }

            let mut records: Vec<AuditRecord> = Vec::new();
            let mut removable = Vec::new();
            for finding in &mut found {
                let context = user_role_context(user_id.as_str(), &finding.role, Some(finding.reason));
                let verdict =
                    self.decide_one(call, Action::SweepJitAccess, Resource::Project(project_ref.as_str()), context, None);
                let request = json!({ "role": finding.role, "reason": finding.reason, "mode": report.mode });
                let mut record = self.write_record(
                    call,
                    Action::SweepJitAccess,
                    project_ref.as_str(),
                    &project.organization_slug,
                    user_id.as_str(),
                    request,
                );
                record.decision = if verdict.allowed { "allow" } else { "deny" };
                record.policy_ids = verdict.policy_ids;
                record.dry_run = mode == SweepMode::Report;
                tracing::warn!(
                    project_ref = %project_ref,
                    user_id = %user_id,
                    role = %finding.role,
                    reason = finding.reason,
                    "sweep finding"
                );
                if mode == SweepMode::Remove {
                    if verdict.allowed {
                        removable.push(finding.role.clone());
                    } else {
                        finding.outcome = "removal_denied";
                    }
                }
                records.push(record);
            }

            if !removable.is_empty() {
                let remaining: Vec<Value> = roles
                    .iter()
                    .filter(|entry| !removable.iter().any(|role| entry["role"] == role.as_str()))
                    .cloned()
                    .collect();
                let result = if remaining.is_empty() {
                    self.supabase.revoke_jit_access(project_ref, &user_id).await
                } else {
                    let body = json!({ "user_id": user_id.as_str(), "roles": remaining });
                    self.supabase.update_jit_access(project_ref, &body).await
                };
                let (status, outcome) = match &result {
                    Ok(response) => (Some(response.status), "removed"),
                    Err(error) => (error.upstream_status(), "removal_failed"),
                };
                for (finding, record) in found.iter_mut().zip(records.iter_mut()) {
                    if removable.contains(&finding.role) {
                        finding.outcome = outcome;
                        record.upstream_status = status;
                    }
                }
            }

            records.iter().for_each(AuditRecord::emit);
            report.findings.extend(found);
        }
        Ok(())
    }
}

fn sweep_call() -> Call {
    Call {
        path_parameters: Default::default(),
        body: Vec::new(),
        caller: Caller::new(SWEEP_CALLER),
        request_id: None,
        api_request_id: None,
        dry_run: false,
        signature: None,
    }
}

/// Runs the sweep function until the Lambda runtime stops it.
pub async fn run() -> Result<(), lambda_runtime::Error> {
    crate::lambda::init_tracing();
    let (app, config) = match crate::lambda::build_app().await {
        Ok(built) => built,
        Err(error) => {
            tracing::error!(error = %error, "init failed");
            return Err(error.into());
        }
    };
    let mode = config.sweep_mode;
    let app: &'static App<crate::supabase::SupabaseClient> = Box::leak(Box::new(app));
    lambda_runtime::run(lambda_runtime::service_fn(move |event: lambda_runtime::LambdaEvent<Value>| async move {
        let remaining = event
            .context
            .deadline()
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        let report = DEADLINE.scope(Instant::now() + remaining, app.sweep(mode)).await;
        Ok::<Value, lambda_runtime::Error>(serde_json::to_value(report).unwrap_or(Value::Null))
    }))
    .await
}
