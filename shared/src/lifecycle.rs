//! The grant lifecycle: adding one role and removing one role without
//! disturbing the user's other roles.
//!
//! Supabase's update replaces a user's whole role list and offers no
//! conditional write. So both operations read the list, change one entry and
//! write the result, and they guard against a concurrent writer twice. Just
//! before the write they read the list again and start over if it changed.
//! After the write they wait, read the list back, and write again if another
//! writer's list replaced their change.
//!
//! NOTE: Supabase's API has no conditional write, so a writer that lands
//! after the read-back can still replace this change. The read-back narrows
//! that window to the settle time but does not close it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::audit::AuditRecord;
use crate::error::Error;
use crate::event::HttpResponse;
use crate::operations::{App, both, passed_on, user_role_context};
use crate::policy::{Action, Resource};
use crate::request::Call;
use crate::supabase::ManagementApi;
use crate::validate::{ProjectRef, RoleGrant, RoleName, UserId, parse_grant_body};

/// Attempts of read, merge and write before giving up with a conflict.
const MAX_ATTEMPTS: usize = 3;

impl<M: ManagementApi> App<M> {
    pub(crate) async fn grant_jit_access(
        &self,
        call: &Call,
        audit: &mut Option<AuditRecord>,
    ) -> Result<HttpResponse, Error> {
        let now = (self.clock)();
        let (project_ref, request) =
            both(ProjectRef::parse("ref", call.path_parameter("ref")), parse_grant_body(&call.body, now))?;

        let project = self.facts.project(&self.supabase, &project_ref).await?;
        let target_user = self.facts.target_user(&self.supabase, &project.organization_slug, &request.user_id).await?;

        let entry = request.grant.to_entry();
        for attempt in 1..=MAX_ATTEMPTS {
            let current = self.user_roles(&project_ref, &request.user_id).await?;
            let mut merged: Vec<Value> =
                current.iter().filter(|existing| existing["role"] != entry["role"]).cloned().collect();
            merged.push(entry.clone());

            // The whole merged list is what Supabase will hold, so every pair of it is decided.
            let grants: Vec<RoleGrant> = merged.iter().filter_map(RoleGrant::from_mapping).collect();
            if grants.len() != merged.len() {
                tracing::error!(project_ref = %project_ref, user_id = %request.user_id, "an existing role entry cannot be read");
                return Err(Error::Upstream(crate::supabase::UpstreamError::MalformedResponse {
                    operation: "list-jit-access",
                }));
            }
            let verdict = self.decide_grants(
                call,
                Action::GrantJitAccess,
                &project,
                &target_user,
                &request.user_id,
                &grants,
                now,
            );
            let body = json!({ "user_id": request.user_id.as_str(), "roles": merged });
            let record = self.write_record(
                call,
                Action::GrantJitAccess,
                project_ref.as_str(),
                &project.organization_slug,
                request.user_id.as_str(),
                body.clone(),
            );
            if call.dry_run {
                return Ok(self.dry_run_report(Action::GrantJitAccess, verdict, body, record, audit));
            }
            self.require_allow(call, Action::GrantJitAccess, verdict, record, audit)?;

            if self.user_roles(&project_ref, &request.user_id).await? != current {
                tracing::warn!(project_ref = %project_ref, user_id = %request.user_id, attempt, "roles changed before the write, merging again");
                continue;
            }
            let response = self.supabase.update_jit_access(&project_ref, &body).await?;
            settle(self.settle).await;
            let written = self.user_roles(&project_ref, &request.user_id).await?;
            if written.iter().any(|existing| same_grant(existing, &entry)) {
                return Ok(passed_on(response, audit));
            }
            tracing::warn!(project_ref = %project_ref, user_id = %request.user_id, attempt, "a concurrent write replaced the grant, merging again");
        }
        Err(Error::ConcurrentChange)
    }

    pub(crate) async fn revoke_jit_role(
        &self,
        call: &Call,
        audit: &mut Option<AuditRecord>,
    ) -> Result<HttpResponse, Error> {
        let parsed = (
            ProjectRef::parse("ref", call.path_parameter("ref")),
            UserId::parse("user_id", call.path_parameter("user_id")),
            RoleName::parse("role", call.path_parameter("role")),
        );
        let (project_ref, user_id, role) = match parsed {
            (Ok(project_ref), Ok(user_id), Ok(role)) => (project_ref, user_id, role),
            (project_ref, user_id, role) => {
                let errors = [project_ref.err(), user_id.err(), role.err()].into_iter().flatten().collect();
                return Err(Error::InvalidRequest(errors));
            }
        };

        let context = user_role_context(user_id.as_str(), role.as_str(), None);
        for attempt in 1..=MAX_ATTEMPTS {
            let current = self.user_roles(&project_ref, &user_id).await?;
            if !current.iter().any(|existing| existing["role"] == role.as_str()) {
                return Err(Error::RoleNotGranted);
            }
            let remaining: Vec<Value> =
                current.iter().filter(|existing| existing["role"] != role.as_str()).cloned().collect();
            let body = json!({ "user_id": user_id.as_str(), "roles": remaining });

            let mut record = self.audit_record(call, Action::RevokeJitRole);
            record.project_ref = Some(project_ref.to_string());
            record.target_user = Some(user_id.to_string());
            record.request = body.clone();
            let resource = Resource::Project(project_ref.as_str());
            let verdict = self.decide_one(call, Action::RevokeJitRole, resource, context.clone(), None);
            if call.dry_run {
                return Ok(self.dry_run_report(Action::RevokeJitRole, verdict, body, record, audit));
            }
            self.require_allow(call, Action::RevokeJitRole, verdict, record, audit)?;

            if self.user_roles(&project_ref, &user_id).await? != current {
                tracing::warn!(project_ref = %project_ref, user_id = %user_id, attempt, "roles changed before the write, removing again");
                continue;
            }
            // An empty role list is written as a removal of the user's mappings.
            let response = if remaining.is_empty() {
                self.supabase.revoke_jit_access(&project_ref, &user_id).await?
            } else {
                self.supabase.update_jit_access(&project_ref, &body).await?
            };
            settle(self.settle).await;
            let written = self.user_roles(&project_ref, &user_id).await?;
            if !written.iter().any(|existing| existing["role"] == role.as_str()) {
                return Ok(passed_on(response, audit));
            }
            tracing::warn!(project_ref = %project_ref, user_id = %user_id, attempt, "a concurrent write restored the role, removing again");
        }
        Err(Error::ConcurrentChange)
    }

    /// Reads one user's current role entries, as Supabase returned them.
    async fn user_roles(&self, project_ref: &ProjectRef, user_id: &UserId) -> Result<Vec<Value>, Error> {
        let response = self.supabase.list_jit_access(project_ref).await?;
        let items = response.body["items"].as_array().cloned().unwrap_or_default();
        let roles = items
            .iter()
            .find(|item| item["user_id"].as_str().is_some_and(|id| id.eq_ignore_ascii_case(user_id.as_str())))
            .and_then(|item| item["user_roles"].as_array().cloned())
            .unwrap_or_default();
        Ok(roles)
    }
}

/// Waits `time` before a write is read back. A zero time skips the timer:
/// Tokio rounds each deadline up to its next 1 ms tick, so a zero sleep
/// would still wait for that tick and the wake-up after it.
async fn settle(time: Duration) {
    if !time.is_zero() {
        tokio::time::sleep(time).await;
    }
}

/// Tells whether a returned entry carries this grant: the same role and expiry.
/// Other fields are not compared, because Supabase may add defaults to them.
fn same_grant(existing: &Value, entry: &Value) -> bool {
    existing["role"] == entry["role"] && existing["expires_at"].as_f64() == entry["expires_at"].as_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn settle_zero_skips_timer_tick() {
        // Off a tick boundary, a zero sleep would wait for Tokio's next tick.
        tokio::time::advance(Duration::from_micros(500)).await;
        let started = tokio::time::Instant::now();
        settle(Duration::ZERO).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        settle(Duration::from_millis(200)).await;
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}
