//! The audit record: one JSON line on stdout per access decision, allow or
//! deny, dry-run or not, written after the upstream call so it carries the
//! outcome. It contains ids and the normalized request, never the token.

use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::request::Call;

/// The record of one decision; `audit_record` is the key log queries filter on.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub audit_record: &'static str,
    pub time: String,
    pub caller: String,
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_slug: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_user: Option<String>,
    /// The request after validation, as it would be sent to Supabase.
    pub request: Value,
    /// `allow` or `deny`.
    pub decision: &'static str,
    pub policy_ids: Vec<String>,
    pub policy_set_hash: String,
    pub dry_run: bool,
    pub request_id: Option<String>,
    pub api_request_id: Option<String>,
    /// Status Supabase returned for the call this decision allowed; absent when no call was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    /// Error code when the call failed without a status, such as a timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_error: Option<&'static str>,
}

impl AuditRecord {
    pub fn new(call: &Call, action: &'static str, policy_set_hash: &str) -> Self {
        Self {
            audit_record: "access_decision",
            time: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            caller: call.caller.to_string(),
            action,
            project_ref: None,
            organization_slug: None,
            target_user: None,
            request: Value::Object(Default::default()),
            decision: "deny",
            policy_ids: Vec::new(),
            policy_set_hash: policy_set_hash.to_owned(),
            dry_run: call.dry_run,
            request_id: call.request_id.clone(),
            api_request_id: call.api_request_id.clone(),
            upstream_status: None,
            upstream_error: None,
        }
    }

    /// Writes the record as one line on stdout, where Lambda sends it to CloudWatch Logs.
    pub fn emit(&self) {
        let Ok(mut line) = serde_json::to_vec(self) else {
            tracing::error!(action = self.action, "audit record could not be serialized");
            return;
        };
        line.push(b'\n');
        if crate::logs::write_lines(&line).is_err() {
            tracing::error!(action = self.action, "audit record could not be written");
        }
    }
}
