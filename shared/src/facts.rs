//! Live facts for JIT decisions: the project (GET /v1/projects/{ref}) and the
//! target user's organization membership (GET /v1/organizations/{slug}/members),
//! cached per container so a burst of calls for one project costs one lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::policy::Fact;
use crate::supabase::{ManagementApi, UpstreamError};
use crate::validate::{OrganizationSlug, ProjectRef, UserId};

/// The project attributes the policies see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectFacts {
    pub project_ref: String,
    pub name: String,
    pub region: String,
    pub status: String,
    pub organization_slug: String,
}

/// The target user's membership in the project's organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUser {
    pub is_member: bool,
    pub role_name: Option<String>,
    pub mfa_enabled: Option<bool>,
}

impl TargetUser {
    /// Builds the Cedar record of the `TargetUser` schema type.
    pub fn to_fact(&self) -> Fact {
        let mut fields = vec![("is_member", Fact::Bool(self.is_member))];
        if let Some(role_name) = &self.role_name {
            fields.push(("role_name", Fact::String(role_name.clone())));
        }
        if let Some(mfa_enabled) = self.mfa_enabled {
            fields.push(("mfa_enabled", Fact::Bool(mfa_enabled)));
        }
        Fact::Record(fields)
    }
}

#[derive(Debug, Clone)]
struct Member {
    user_id: String,
    role_name: Option<String>,
    mfa_enabled: Option<bool>,
}

/// An organization's member list, with the instant it was looked up.
type MemberList = (Instant, Arc<Vec<Member>>);

/// Per-container cache of looked-up facts, each entry valid for `ttl`.
pub struct FactCache {
    ttl: Duration,
    projects: Mutex<HashMap<String, (Instant, ProjectFacts)>>,
    members: Mutex<HashMap<String, MemberList>>,
}

impl FactCache {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, projects: Mutex::default(), members: Mutex::default() }
    }

    /// Returns the project's facts, from the cache while fresh.
    pub async fn project<M: ManagementApi>(&self, api: &M, project_ref: &ProjectRef) -> Result<ProjectFacts, UpstreamError> {
        if let Some(facts) = fresh(&self.projects, project_ref.as_str(), self.ttl) {
            return Ok(facts);
        }
        let response = api.get_project(project_ref).await?;
        let facts = project_facts(project_ref, &response.body)?;
        store(&self.projects, project_ref.as_str(), facts.clone(), self.ttl);
        Ok(facts)
    }

    /// Returns the user's membership in the organization, from the cache while fresh.
    pub async fn target_user<M: ManagementApi>(
        &self,
        api: &M,
        organization_slug: &str,
        user_id: &UserId,
    ) -> Result<TargetUser, UpstreamError> {
        let members = match fresh(&self.members, organization_slug, self.ttl) {
            Some(members) => members,
            None => {
                let slug = OrganizationSlug::parse("organization_slug", organization_slug)
                    .map_err(|_| UpstreamError::MalformedResponse { operation: "get-project" })?;
                let response = api.list_organization_members(&slug).await?;
                let members = Arc::new(members_of(&response.body));
                store(&self.members, organization_slug, members.clone(), self.ttl);
                members
            }
        };
        let member = members.iter().find(|member| member.user_id.eq_ignore_ascii_case(user_id.as_str()));
        Ok(match member {
            Some(member) => {
                TargetUser { is_member: true, role_name: member.role_name.clone(), mfa_enabled: member.mfa_enabled }
            }
            None => TargetUser { is_member: false, role_name: None, mfa_enabled: None },
        })
    }
}

fn fresh<T: Clone>(cache: &Mutex<HashMap<String, (Instant, T)>>, key: &str, ttl: Duration) -> Option<T> {
    let cache = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    cache.get(key).filter(|(stored, _)| stored.elapsed() < ttl).map(|(_, value)| value.clone())
}

fn store<T>(cache: &Mutex<HashMap<String, (Instant, T)>>, key: &str, value: T, ttl: Duration) {
    if ttl.is_zero() {
        return;
    }
    let mut cache = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    cache.insert(key.to_owned(), (Instant::now(), value));
}

/// Reads the facts from a project response; only `organization_slug` is required,
/// because membership cannot be checked without it.
fn project_facts(project_ref: &ProjectRef, body: &Value) -> Result<ProjectFacts, UpstreamError> {
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    let Some(organization_slug) = text("organization_slug") else {
        tracing::error!(project_ref = %project_ref, "project response has no organization_slug");
        return Err(UpstreamError::MalformedResponse { operation: "get-project" });
    };
    Ok(ProjectFacts {
        project_ref: project_ref.to_string(),
        name: text("name").unwrap_or_default(),
        region: text("region").unwrap_or_default(),
        status: text("status").unwrap_or_else(|| "UNKNOWN".to_owned()),
        organization_slug,
    })
}

/// Reads the members leniently: entries without a `user_id` are skipped.
fn members_of(body: &Value) -> Vec<Member> {
    body.as_array()
        .map(|members| {
            members
                .iter()
                .filter_map(|member| {
                    Some(Member {
                        user_id: member.get("user_id")?.as_str()?.to_owned(),
                        role_name: member.get("role_name").and_then(Value::as_str).map(str::to_owned),
                        mfa_enabled: member.get("mfa_enabled").and_then(Value::as_bool),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn project_facts_tolerate_nulls() {
        let project_ref = ProjectRef::parse("ref", "abcdefghijklmnopqrst").unwrap();
        let facts = project_facts(&project_ref, &json!({"organization_slug": "acme", "name": null})).unwrap();
        assert_eq!(facts.name, "");
        assert_eq!(facts.status, "UNKNOWN");
        assert!(project_facts(&project_ref, &json!({"name": "x"})).is_err());
    }

    #[test]
    fn members_skip_entries_without_user_id() {
        let members = members_of(&json!([{"user_id": null}, {"user_id": "u", "mfa_enabled": true, "extra": 1}]));
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].mfa_enabled, Some(true));
    }

    #[test]
    fn target_user_context_omits_unknown_facts() {
        let outsider = TargetUser { is_member: false, role_name: None, mfa_enabled: None };
        assert_eq!(outsider.to_fact().to_json(), json!({"is_member": false}));
    }
}
