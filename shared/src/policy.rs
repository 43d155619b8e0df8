//! Cedar guardrails: the policy set, strictly validated at init, and the
//! decision for one request.
//!
//! The default schema and policies under `policies/` are compiled into every
//! binary. `JIT_GUARD_POLICY_DIR` points at another folder holding
//! `schema.cedarschema` and `policies.cedar`, for local runs and tests.
//! Any error loading or validating them stops init, so no call goes out
//! under policies that were never checked.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex};

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision as CedarDecision, Entities, EntityUid, Policy, PolicyId, PolicySet, Request,
    RestrictedExpression, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::facts::ProjectFacts;
use crate::source_line::{line_of, line_of_diagnostic, message_with_help};

/// Default schema, compiled in.
pub(crate) const DEFAULT_SCHEMA: &str = include_str!("../../policies/schema.cedarschema");
/// Default policies, compiled in.
pub(crate) const DEFAULT_POLICIES: &str = include_str!("../../policies/policies.cedar");
/// The default schema in Cedar's JSON schema format, converted by the build script.
const DEFAULT_SCHEMA_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/schema.cedarschema.json"));

/// When a policy set is strictly validated against its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Validation {
    /// At load, as for policies read from files at init.
    AtLoad,
    /// Already done by the build script, which stops the build on an
    /// error: the compiled-in defaults cannot change after that.
    AtBuild,
}

/// The files a policy set was loaded from, for error messages and its hash.
#[derive(Clone, Copy)]
struct Sources<'a> {
    schema_file: &'a str,
    schema_text: &'a str,
    policies_file: &'a str,
    policies_text: &'a str,
}

pub const SCHEMA_FILE: &str = "schema.cedarschema";
pub const POLICIES_FILE: &str = "policies.cedar";

/// The operations of the bundle, one Cedar action each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    ListOrganizationMembers,
    ListProjects,
    GetProject,
    ListJitAccess,
    RevokeJitAccess,
    AuthorizeJitAccess,
    UpdateJitAccess,
    GrantJitAccess,
    RevokeJitRole,
    SweepJitAccess,
}

impl Action {
    pub const ALL: [Action; 10] = [
        Action::ListOrganizationMembers,
        Action::ListProjects,
        Action::GetProject,
        Action::ListJitAccess,
        Action::RevokeJitAccess,
        Action::AuthorizeJitAccess,
        Action::UpdateJitAccess,
        Action::GrantJitAccess,
        Action::RevokeJitRole,
        Action::SweepJitAccess,
    ];

    /// Returns the action's id in the Cedar schema.
    pub fn name(self) -> &'static str {
        match self {
            Action::ListOrganizationMembers => "ListOrganizationMembers",
            Action::ListProjects => "ListProjects",
            Action::GetProject => "GetProject",
            Action::ListJitAccess => "ListJitAccess",
            Action::RevokeJitAccess => "RevokeJitAccess",
            Action::AuthorizeJitAccess => "AuthorizeJitAccess",
            Action::UpdateJitAccess => "UpdateJitAccess",
            Action::GrantJitAccess => "GrantJitAccess",
            Action::RevokeJitRole => "RevokeJitRole",
            Action::SweepJitAccess => "SweepJitAccess",
        }
    }

    fn uid(self) -> EntityUid {
        entity_uid("Action", self.name())
    }
}

impl fmt::Display for Action {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// The resource of a decision, as a Cedar entity of the `JitGuard` namespace.
#[derive(Debug, Clone, Copy)]
pub enum Resource<'a> {
    /// The Supabase account behind the access token.
    Account,
    Organization(&'a str),
    Project(&'a str),
}

impl Resource<'_> {
    fn uid(&self) -> EntityUid {
        match self {
            Resource::Account => entity_uid("Account", "current"),
            Resource::Organization(slug) => entity_uid("Organization", slug),
            Resource::Project(project_ref) => entity_uid("Project", project_ref),
        }
    }
}

/// The entity types of the `JitGuard` namespace, parsed once per process,
/// because Cedar parses a type name with its full policy lexer on every call.
static ENTITY_TYPES: LazyLock<HashMap<&'static str, cedar_policy::EntityTypeName>> = LazyLock::new(|| {
    ["Action", "Caller", "Account", "Organization", "Project"]
        .into_iter()
        .map(|name| {
            let type_name = cedar_policy::EntityTypeName::from_str(&format!("JitGuard::{name}"))
                .expect("entity type names of the JitGuard namespace are valid Cedar names");
            (name, type_name)
        })
        .collect()
});

fn entity_uid(type_name: &'static str, id: &str) -> EntityUid {
    let type_name = ENTITY_TYPES.get(type_name).cloned().unwrap_or_else(|| {
        cedar_policy::EntityTypeName::from_str(&format!("JitGuard::{type_name}"))
            .expect("entity type names of the JitGuard namespace are valid Cedar names")
    });
    EntityUid::from_type_name_and_id(type_name, cedar_policy::EntityId::new(id))
}

/// The outcome of one Cedar decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Ids of the policies that decided: the permits for an allow, the forbids for a deny.
    pub policy_ids: Vec<String>,
    /// The `@reason` annotations of those policies, in the same order.
    pub reasons: Vec<String>,
}

/// A typed value of a Cedar context, built by the guard rather than parsed
/// from JSON. Extension values keep the text Cedar's constructor reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Fact {
    String(String),
    Long(i64),
    Bool(bool),
    /// An `ipaddr`: an address, or a range in CIDR notation.
    Ip(String),
    /// A `datetime`, as RFC 3339 text.
    DateTime(String),
    /// A `duration`, as Cedar duration text such as `14400s`.
    Duration(String),
    Record(Vec<(&'static str, Fact)>),
}

/// The attributes of one Cedar context, in a fixed order.
pub type Facts = Vec<(&'static str, Fact)>;

/// The names of Cedar's `ip`, `datetime` and `duration` constructors, parsed
/// once per process. `RestrictedExpression::new_ip` and its siblings parse
/// the function name on every call, about 2 µs each: most of what a context
/// costs to build. `None` if a name does not parse, which a test rules out;
/// the slower constructors are used then.
static EXTENSION_NAMES: LazyLock<Option<[cedar_policy_core::ast::Name; 3]>> = LazyLock::new(|| {
    let name = |text: &str| cedar_policy_core::ast::Name::parse_unqualified_name(text).ok();
    Some([name("ip")?, name("datetime")?, name("duration")?])
});

/// Builds a call of Cedar's extension constructor number `index` of
/// [`EXTENSION_NAMES`] on `text`.
fn extension_call(index: usize, text: &str) -> RestrictedExpression {
    match EXTENSION_NAMES.as_ref() {
        Some(names) => RestrictedExpression::from(cedar_policy_core::ast::RestrictedExpr::call_extension_fn(
            names[index].clone(),
            [cedar_policy_core::ast::RestrictedExpr::val(text.to_owned())],
        )),
        None => match index {
            0 => RestrictedExpression::new_ip(text),
            1 => RestrictedExpression::new_datetime(text),
            _ => RestrictedExpression::new_duration(text),
        },
    }
}

impl Fact {
    fn to_expression(&self) -> Result<RestrictedExpression, String> {
        Ok(match self {
            Fact::String(text) => RestrictedExpression::new_string(text.clone()),
            Fact::Long(number) => RestrictedExpression::new_long(*number),
            Fact::Bool(flag) => RestrictedExpression::new_bool(*flag),
            Fact::Ip(text) => extension_call(0, text),
            Fact::DateTime(text) => extension_call(1, text),
            Fact::Duration(text) => extension_call(2, text),
            Fact::Record(fields) => {
                let fields = fields
                    .iter()
                    .map(|(name, fact)| Ok(((*name).to_owned(), fact.to_expression()?)))
                    .collect::<Result<Vec<_>, String>>()?;
                RestrictedExpression::new_record(fields).map_err(|error| error.to_string())?
            }
        })
    }

    /// Returns the value in Cedar's JSON format, with `__extn` for extension values.
    pub fn to_json(&self) -> Value {
        let extension = |function: &str, text: &str| serde_json::json!({ "__extn": { "fn": function, "arg": text } });
        match self {
            Fact::String(text) => Value::from(text.as_str()),
            Fact::Long(number) => Value::from(*number),
            Fact::Bool(flag) => Value::from(*flag),
            Fact::Ip(text) => extension("ip", text),
            Fact::DateTime(text) => extension("datetime", text),
            Fact::Duration(text) => extension("duration", text),
            Fact::Record(fields) => facts_to_json(fields),
        }
    }
}

/// Returns a context in Cedar's JSON format.
pub fn facts_to_json(facts: &[(&'static str, Fact)]) -> Value {
    Value::Object(facts.iter().map(|(name, fact)| ((*name).to_owned(), fact.to_json())).collect())
}

/// Context attributes that one policy reads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reads {
    /// Only these attributes, through `context.name` or `context has name`.
    Attributes(BTreeSet<String>),
    /// The context as a whole, or in a way the analysis does not follow.
    Everything,
}

/// Policies that read the same kind of context attributes, so that a
/// decision over many contexts evaluates them once per distinct reading.
/// One evaluation of a group gives every satisfied forbid (a deny) or else
/// every satisfied permit (an allow). When it gives forbids, the satisfied
/// permits are not collected, but the decision of the context is then a
/// deny, which no permit changes.
struct Group {
    reads: Reads,
    /// Each policy's whole condition (scope and body), built once at load.
    /// Cedar's authorizer builds it again on every evaluation.
    conditions: Vec<Condition>,
    /// The same policies, for the unit tests that inspect the copies.
    #[cfg(test)]
    policies: PolicySet,
}

/// One policy of a group, as [`Guard::decide_each`] evaluates it.
struct Condition {
    id: String,
    forbid: bool,
    expression: cedar_policy_core::ast::Expr,
}

/// Outcome of one group on one reading: its satisfied forbids or its
/// satisfied permits, and whether any of its policies failed to evaluate.
#[derive(Debug, Clone)]
struct Outcome {
    forbids: Vec<String>,
    permits: Vec<String>,
    failed: bool,
}

/// Word-at-a-time hash (rustc's Fx hash) for the per-decision maps. Their
/// keys are short and built by the guard, so SipHash's resistance to
/// flooding is not needed, and SipHash is slower.
#[derive(Default)]
struct FastHasher(u64);

impl FastHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let mut word = [0u8; 8];
        word[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.add(u64::from_le_bytes(word));
    }

    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;

/// Attributes that a group reads from one context, in context order.
type Reading<'a> = Vec<(&'static str, &'a Fact)>;

/// One denied part of a request, as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denial {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    pub policy_ids: Vec<String>,
    pub reasons: Vec<String>,
}

/// Cause of a failed policy load.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    #[error("cannot read {path}: {source}; set JIT_GUARD_POLICY_DIR to a folder holding {SCHEMA_FILE} and {POLICIES_FILE}")]
    Read { path: String, source: std::io::Error },

    #[error("{file}:{line}: {message}")]
    Invalid { file: String, line: usize, message: String },
}

/// The loaded policy set with its schema, ready to decide requests.
pub struct Guard {
    policies: PolicySet,
    /// Each action with its policy groups.
    groups: Vec<(Action, Vec<Group>)>,
    /// The `@reason` annotation of each policy, by policy id.
    reasons: HashMap<String, String>,
    schema: Schema,
    action_entities: Arc<Entities>,
    /// The entity store of the last project decided on, with its facts.
    last_project: Mutex<Option<(ProjectFacts, Arc<Entities>)>>,
    authorizer: Authorizer,
    /// Hex sha256 of the schema text followed by the policy text.
    policy_set_hash: String,
}

impl fmt::Debug for Guard {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Guard").field("policies", &self.policies.policies().count()).finish()
    }
}

impl Guard {
    /// Loads the compiled-in default schema and policies.
    ///
    /// The schema is compiled in as Cedar's JSON schema format, which the
    /// build script converts from the text file. Cedar's text parsers build
    /// their lexer's state machine again on every parse, and the schema's
    /// parse made up more than half of a cold start's policy load. The JSON
    /// form carries no source positions, so when it fails to load, the text
    /// files are loaded instead, for an error that names the file and line.
    ///
    /// The build script validated these policies strictly against this
    /// schema, so the load does not validate them again. The validation took
    /// about 0.6 ms of a 1.4 ms load in a warm process (x86_64).
    pub fn from_defaults() -> Result<Self, PolicyLoadError> {
        Self::defaults(Validation::AtBuild)
    }

    /// Loads the compiled-in defaults as [`Guard::from_defaults`] does, and
    /// validates them strictly again, as a load from files does.
    pub fn from_defaults_validated() -> Result<Self, PolicyLoadError> {
        Self::defaults(Validation::AtLoad)
    }

    fn defaults(validation: Validation) -> Result<Self, PolicyLoadError> {
        let schema_file = format!("policies/{SCHEMA_FILE}");
        let policies_file = format!("policies/{POLICIES_FILE}");
        let source = Sources {
            schema_file: &schema_file,
            schema_text: DEFAULT_SCHEMA,
            policies_file: &policies_file,
            policies_text: DEFAULT_POLICIES,
        };
        match Schema::from_json_str(DEFAULT_SCHEMA_JSON) {
            Ok(schema) => Self::with_schema(&source, schema, validation),
            Err(error) => {
                // Both forms come from the same file, so the build script's output is wrong.
                tracing::warn!(error = %error, "the compiled-in JSON schema failed to load, loading its text instead; rebuild the bundle");
                Self::from_sources(&schema_file, DEFAULT_SCHEMA, &policies_file, DEFAULT_POLICIES)
            }
        }
    }

    /// Loads `schema.cedarschema` and `policies.cedar` from `directory`.
    pub fn from_directory(directory: &Path) -> Result<Self, PolicyLoadError> {
        let read = |name: &str| {
            let path = directory.join(name);
            std::fs::read_to_string(&path)
                .map(|text| (path.display().to_string(), text))
                .map_err(|source| PolicyLoadError::Read { path: path.display().to_string(), source })
        };
        let (schema_path, schema_text) = read(SCHEMA_FILE)?;
        let (policies_path, policies_text) = read(POLICIES_FILE)?;
        Self::from_sources(&schema_path, &schema_text, &policies_path, &policies_text)
    }

    /// Parses and strictly validates a schema and a policy set; each policy's
    /// `@id` annotation becomes its policy id.
    pub fn from_sources(
        schema_file: &str,
        schema_text: &str,
        policies_file: &str,
        policies_text: &str,
    ) -> Result<Self, PolicyLoadError> {
        let (schema, _warnings) = Schema::from_cedarschema_str(schema_text)
            .map_err(|error| invalid(schema_file, schema_text, &error))?;
        let source = Sources { schema_file, schema_text, policies_file, policies_text };
        Self::with_schema(&source, schema, Validation::AtLoad)
    }

    /// Parses the policies, validates them against `schema` unless the
    /// build did, and sorts them for decisions.
    fn with_schema(source: &Sources<'_>, schema: Schema, validation: Validation) -> Result<Self, PolicyLoadError> {
        let Sources { schema_file, schema_text, policies_file, policies_text } = *source;
        let parsed = PolicySet::from_str(policies_text).map_err(|error| invalid(policies_file, policies_text, &error))?;
        if parsed.templates().next().is_some() {
            return Err(PolicyLoadError::Invalid {
                file: policies_file.to_owned(),
                line: 1,
                message: "policy templates are not supported; write static policies".to_owned(),
            });
        }

        let mut policies = PolicySet::new();
        for (index, policy) in parsed.policies().enumerate() {
            let Some(id) = annotation(policy, "id") else {
                return Err(PolicyLoadError::Invalid {
                    file: policies_file.to_owned(),
                    line: 1,
                    message: format!(
                        "policy number {} has no @id(\"...\") annotation; give every policy a unique id",
                        index + 1
                    ),
                });
            };
            policies.add(policy.new_id(PolicyId::new(id))).map_err(|_| {
                let annotation = format!("@id(\"{id}\")");
                let second = policies_text.match_indices(&annotation).nth(1).map_or(0, |(offset, _)| offset);
                PolicyLoadError::Invalid {
                    file: policies_file.to_owned(),
                    line: line_of(policies_text, second),
                    message: format!("the policy id {id:?} is used twice; give every policy a unique @id"),
                }
            })?;
        }

        if validation == Validation::AtLoad {
            let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
            if let Some(error) = result.validation_errors().next() {
                return Err(invalid(policies_file, policies_text, error));
            }
        }

        let action_entities = schema.action_entities().map_err(|error| PolicyLoadError::Invalid {
            file: schema_file.to_owned(),
            line: 1,
            message: error.to_string(),
        })?;
        // Each action keeps only the policies whose action scope includes it:
        // the others can neither be satisfied nor fail for its requests. The
        // kept copies have no action scope, since it is true for every request
        // of that action. Cedar would otherwise look up the action's groups in
        // the entity store for each policy it evaluates.
        let unscoped: Vec<(&Policy, Policy)> = policies.policies().map(|policy| (policy, without_action_scope(policy))).collect();
        let groups = Action::ALL
            .iter()
            .map(|action| {
                let uid = action.uid();
                let applying = unscoped
                    .iter()
                    .filter(|(policy, _)| scope_includes(policy, &uid, &action_entities))
                    .map(|(_, copy)| copy);
                (*action, group_policies(applying))
            })
            .collect();
        let reasons = policies
            .policies()
            .map(|policy| {
                let reason = annotation(policy, "reason").unwrap_or("no @reason annotation");
                (policy.id().to_string(), reason.to_owned())
            })
            .collect();

        let mut hasher = Sha256::new();
        hasher.update(schema_text.as_bytes());
        hasher.update(policies_text.as_bytes());
        let policy_set_hash = hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect();
        Ok(Self {
            policies,
            groups,
            reasons,
            schema,
            action_entities: Arc::new(action_entities),
            last_project: Mutex::new(None),
            authorizer: Authorizer::new(),
            policy_set_hash,
        })
    }

    /// Hex sha256 of the schema and policy texts, naming the policy version in audit records.
    pub fn policy_set_hash(&self) -> &str {
        &self.policy_set_hash
    }

    /// Builds the entity store of one request: the schema's actions, plus the
    /// project inside its organization when it was looked up.
    pub fn entities(&self, project: Option<&ProjectFacts>) -> Arc<Entities> {
        let Some(project) = project else {
            return Arc::clone(&self.action_entities);
        };
        // The last project's store is kept: a container usually serves several
        // calls on one project, and its facts are cached for a while anyway.
        if let Ok(last) = self.last_project.lock()
            && let Some((facts, entities)) = last.as_ref()
            && facts == project
        {
            return Arc::clone(entities);
        }
        let organization = entity_uid("Organization", &project.organization_slug);
        let attributes = [
            ("name", &project.name),
            ("region", &project.region),
            ("status", &project.status),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), RestrictedExpression::new_string(value.clone())))
        .collect();
        let entities = cedar_policy::Entity::new(
            entity_uid("Project", &project.project_ref),
            attributes,
            [organization.clone()].into_iter().collect(),
        )
        .map_err(|error| error.to_string())
        .and_then(|project| {
            Entities::clone(&self.action_entities)
                // Not checked against the schema per call: the attributes are
                // strings, as the schema's Project type has them, which a test checks.
                .add_entities([project, cedar_policy::Entity::new_no_attrs(organization, Default::default())], None)
                .map_err(|error| error.to_string())
        });
        match entities {
            Ok(entities) => {
                let entities = Arc::new(entities);
                if let Ok(mut last) = self.last_project.lock() {
                    *last = Some((project.clone(), Arc::clone(&entities)));
                }
                entities
            }
            Err(error) => {
                // Without the project entity, policies reading its attributes error and deny.
                tracing::error!(project_ref = %project.project_ref, error = %error, "project entity does not match the schema");
                Arc::clone(&self.action_entities)
            }
        }
    }

    /// Checks a typed context against the schema's context type of `action`,
    /// as [`Guard::decide`] does for every JSON context.
    pub fn check_context(&self, action: Action, context: &[(&'static str, Fact)]) -> Result<(), String> {
        let action = action.uid();
        Context::from_json_value(facts_to_json(context), Some((&self.schema, &action)))
            .map(|_| ())
            .map_err(|error| error.to_string())
    }

    fn reason(&self, policy_id: &str) -> String {
        self.reasons.get(policy_id).map_or("no @reason annotation", String::as_str).to_owned()
    }

    /// Returns the policy groups of `action`. Every action has an entry, and
    /// an action without one would get no permit, so a deny.
    fn groups_of(&self, action: Action) -> &[Group] {
        self.groups.iter().find(|(known, _)| *known == action).map_or(&[], |(_, groups)| groups.as_slice())
    }

    /// Number of policies in the set.
    pub fn policy_count(&self) -> usize {
        self.policies.policies().count()
    }

    /// Decides one request. A request that cannot be built or a policy that
    /// fails to evaluate is a deny: the guard fails closed.
    pub fn decide(
        &self,
        caller: &str,
        action: Action,
        resource: Resource<'_>,
        context: Value,
        entities: &Entities,
    ) -> Decision {
        self.decide_uids(entity_uid("Caller", caller), action.uid(), resource.uid(), context, entities)
    }

    fn decide_uids(
        &self,
        principal: EntityUid,
        action: EntityUid,
        resource: EntityUid,
        context: Value,
        entities: &Entities,
    ) -> Decision {
        let request = Context::from_json_value(context, Some((&self.schema, &action)))
            .map_err(|error| error.to_string())
            .and_then(|context| {
                Request::new(principal, action.clone(), resource, context, Some(&self.schema))
                    .map_err(|error| error.to_string())
            });
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                tracing::error!(action = %action, error = %error, "policy request does not match the schema");
                return Decision { allowed: false, policy_ids: Vec::new(), reasons: Vec::new() };
            }
        };

        let response = self.authorizer.is_authorized(&request, &self.policies, entities);
        let errors: Vec<String> = response.diagnostics().errors().map(ToString::to_string).collect();
        let policy_ids: Vec<String> = response.diagnostics().reason().map(ToString::to_string).collect();
        if !errors.is_empty() {
            tracing::error!(action = %action, errors = ?errors, "policy evaluation failed, denying");
        }
        self.decision(response.decision() == CedarDecision::Allow, policy_ids, !errors.is_empty())
    }

    /// Builds a decision from Cedar's outcome and the ids of the policies that
    /// decided it. A failed evaluation is a deny, whatever Cedar decided.
    fn decision(&self, allowed: bool, policy_ids: Vec<String>, failed: bool) -> Decision {
        if failed {
            return Decision { allowed: false, policy_ids, reasons: vec!["a policy failed to evaluate".to_owned()] };
        }
        let reasons = policy_ids.iter().map(|id| self.reason(id)).collect();
        Decision { allowed, policy_ids, reasons }
    }

    /// Decides one request per context, with the same outcome as [`Guard::decide`]
    /// on each, but evaluates each policy once per distinct set of the context
    /// attributes it reads rather than once per context. An update of 4 roles
    /// and 6 networks is 24 contexts, and a policy that reads only `role` is
    /// then evaluated 4 times, not 24.
    ///
    /// Each policy's condition is built once at load and run by Cedar's
    /// evaluator. Cedar's authorizer would build every condition again and
    /// collect the results in maps on each call. The property test in
    /// `shared/tests/decision_properties.rs` compares the two paths.
    ///
    /// The contexts are not checked against the schema here: the callers
    /// build them from typed values, and a unit test checks each builder
    /// against the schema. A policy that reads a missing or mistyped attribute
    /// fails to evaluate, and the decision is then a deny.
    ///
    /// `entities` must hold the schema's actions, as every store from
    /// [`Guard::entities`] does: the policies of each action are evaluated
    /// without their action scope, which that action hierarchy decided once
    /// at load. With a store that lacks the action, every context is denied.
    pub fn decide_each(
        &self,
        caller: &str,
        action: Action,
        resource: Resource<'_>,
        contexts: &[Facts],
        entities: &Entities,
    ) -> Vec<Decision> {
        let principal = entity_uid("Caller", caller);
        let action_uid = action.uid();
        let resource_uid = resource.uid();
        if entities.get(&action_uid).is_none() {
            // Without the action's entity, the scope each copy left out could
            // have denied where the copy allows, so every context is denied.
            tracing::error!(action = %action, "the entity store lacks the schema's actions, denying");
            return contexts.iter().map(|_| self.decision(false, Vec::new(), true)).collect();
        }
        // Each distinct value is built and evaluated once per decision, because
        // Cedar's constructors for extension values parse the function name and
        // the extension functions parse their text on every call.
        let mut values: FastMap<&Fact, CedarValue> = FastMap::default();
        // Per group: each distinct reading with what the group did, an index
        // of them, and the last one used. Consecutive contexts often read the
        // same (the pairs of one role), which a comparison finds without hashing.
        let groups = self.groups_of(action);
        let mut results: Vec<Vec<(Reading<'_>, Outcome)>> = groups.iter().map(|_| Vec::new()).collect();
        let mut indexes: Vec<FastMap<Reading<'_>, usize>> = groups.iter().map(|_| FastMap::default()).collect();
        let mut last: Vec<Option<usize>> = vec![None; groups.len()];
        let mut reading: Reading<'_> = Vec::new();
        // The positions each group reads, worked out again only when a
        // context's attribute names differ from the previous context's.
        let mut layout: Vec<&'static str> = Vec::new();
        let mut positions: Vec<Vec<usize>> = groups.iter().map(|_| Vec::new()).collect();

        let mut decisions = Vec::with_capacity(contexts.len());
        for context in contexts {
            let same_layout = layout.len() == context.len()
                && layout.iter().zip(context).all(|(known, (name, _))| std::ptr::eq(*known, *name) || known == name);
            if !same_layout {
                layout = context.iter().map(|(name, _)| *name).collect();
                for (group, positions) in groups.iter().zip(&mut positions) {
                    *positions = (0..context.len())
                        .filter(|position| match &group.reads {
                            Reads::Attributes(names) => names.contains(context[*position].0),
                            Reads::Everything => true,
                        })
                        .collect();
                }
            }
            let mut forbids = Vec::new();
            let mut permits = Vec::new();
            let mut failed = false;
            for (index, group) in groups.iter().enumerate() {
                reading.clear();
                reading.extend(positions[index].iter().map(|position| (context[*position].0, &context[*position].1)));
                let slot = match last[index] {
                    Some(slot) if results[index][slot].0 == reading => slot,
                    _ => match indexes[index].get(&reading) {
                        Some(slot) => *slot,
                        None => {
                            let request = request(&principal, &action_uid, &resource_uid, &reading, &mut values);
                            let outcome = evaluate(group, request, entities);
                            results[index].push((reading.clone(), outcome));
                            indexes[index].insert(reading.clone(), results[index].len() - 1);
                            results[index].len() - 1
                        }
                    },
                };
                last[index] = Some(slot);
                let outcome = &results[index][slot].1;
                failed |= outcome.failed;
                forbids.extend(outcome.forbids.iter().cloned());
                permits.extend(outcome.permits.iter().cloned());
            }

            // Cedar's rule: a satisfied forbid denies, else a satisfied permit allows.
            let allowed = forbids.is_empty() && !permits.is_empty();
            let policy_ids = if !forbids.is_empty() {
                forbids
            } else if allowed {
                permits
            } else {
                Vec::new()
            };
            if failed {
                tracing::error!(action = %action, "policy evaluation failed, denying");
            }
            decisions.push(self.decision(allowed, policy_ids, failed));
        }
        decisions
    }
}

/// A context attribute's value in Cedar's evaluator.
type CedarValue = cedar_policy_core::ast::Value;

/// Builds the request of one reading, without checking it against the schema.
fn request<'a>(
    principal: &EntityUid,
    action: &EntityUid,
    resource: &EntityUid,
    reading: &Reading<'a>,
    values: &mut FastMap<&'a Fact, CedarValue>,
) -> Result<cedar_policy_core::ast::Request, String> {
    use cedar_policy_core::ast::{Context as CoreContext, EntityUIDEntry, Request as CoreRequest};
    use cedar_policy_core::evaluator::RestrictedEvaluator;
    use cedar_policy_core::extensions::Extensions;

    let mut attributes = std::collections::BTreeMap::new();
    for (name, fact) in reading {
        let value = match values.get(*fact) {
            Some(value) => value.clone(),
            None => {
                let expression = fact.to_expression()?;
                let value = RestrictedEvaluator::new(Extensions::all_available())
                    .interpret(expression.as_ref().as_borrowed())
                    .map_err(|error| error.to_string())?;
                values.insert(*fact, value.clone());
                value
            }
        };
        attributes.insert((*name).into(), value);
    }
    let known = |uid: &EntityUid| EntityUIDEntry::known(uid.as_ref().clone(), None);
    Ok(CoreRequest::new_unchecked(
        known(principal),
        known(action),
        known(resource),
        Some(CoreContext::Value(Arc::new(attributes))),
    ))
}

/// Evaluates one group on one request, with Cedar's rule for one policy set:
/// the satisfied forbids when there are any, else the satisfied permits. A
/// policy that fails to evaluate is left out, as Cedar's authorizer does, and
/// marks the outcome failed.
fn evaluate(group: &Group, request: Result<cedar_policy_core::ast::Request, String>, entities: &Entities) -> Outcome {
    use cedar_policy_core::ast::{Literal, SlotEnv, ValueKind};
    use cedar_policy_core::evaluator::Evaluator;
    use cedar_policy_core::extensions::Extensions;

    let request = match request {
        Ok(request) => request,
        Err(error) => {
            tracing::error!(error = %error, "building the policy request failed");
            return Outcome { forbids: Vec::new(), permits: Vec::new(), failed: true };
        }
    };
    let evaluator = Evaluator::new(request, entities.as_ref(), Extensions::all_available());
    // The guard rejects templates at load, so no condition has a slot to fill.
    let slots = SlotEnv::new();
    let (mut forbids, mut permits, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for condition in &group.conditions {
        match evaluator.interpret(&condition.expression, &slots).map(|value| value.value) {
            Ok(ValueKind::Lit(Literal::Bool(true))) if condition.forbid => forbids.push(condition.id.clone()),
            Ok(ValueKind::Lit(Literal::Bool(true))) => permits.push(condition.id.clone()),
            Ok(ValueKind::Lit(Literal::Bool(false))) => {}
            // A condition is an `&&` chain, which gives a boolean or an error. Anything else denies.
            Ok(other) => errors.push(format!("policy `{}` evaluated to {other}, not a boolean", condition.id)),
            Err(error) => errors.push(format!("error while evaluating policy `{}`: {error}", condition.id)),
        }
    }
    let failed = !errors.is_empty();
    if failed {
        tracing::error!(errors = ?errors, "policy evaluation failed");
    }
    if !forbids.is_empty() {
        // A satisfied forbid decides the reading, so its permits are not reported.
        permits.clear();
    }
    Outcome { forbids, permits, failed }
}

/// Sorts policies into groups by the context attributes they read.
fn group_policies<'a>(policies: impl Iterator<Item = &'a Policy>) -> Vec<Group> {
    // Policies are grouped by whether they read the role and whether they
    // read the network: the attributes that differ from pair to pair. The
    // other attributes differ at most from entry to entry, so a group
    // reading them is still evaluated about once per entry. Any grouping
    // decides the same; this one makes the fewest Cedar calls for a
    // typical update: one, one per role, and one per network.
    let mut groups: Vec<(Option<(bool, bool)>, Group)> = Vec::new();
    for policy in policies {
        let reads = context_reads(policy);
        let dimensions = match &reads {
            Reads::Attributes(names) => Some((
                names.contains("role"),
                names.contains("network") || names.contains("network_prefix_length"),
            )),
            Reads::Everything => None,
        };
        let index = match groups.iter().position(|(d, _)| *d == dimensions) {
            Some(index) => index,
            None => {
                let empty = Group {
                    reads: Reads::Attributes(BTreeSet::new()),
                    conditions: Vec::new(),
                    #[cfg(test)]
                    policies: PolicySet::new(),
                };
                groups.push((dimensions, empty));
                groups.len() - 1
            }
        };
        let group = &mut groups[index].1;
        group.reads = match (&group.reads, reads) {
            (Reads::Attributes(ours), Reads::Attributes(theirs)) => Reads::Attributes(ours.union(&theirs).cloned().collect()),
            _ => Reads::Everything,
        };
        // The ids are unique in `policies`, so they are unique in each group.
        #[cfg(test)]
        group.policies.add(policy.clone()).expect("policy ids are unique");
        let ast: &cedar_policy_core::ast::Policy = policy.as_ref();
        group.conditions.push(Condition {
            id: policy.id().to_string(),
            forbid: ast.effect() == cedar_policy_core::ast::Effect::Forbid,
            expression: ast.condition(),
        });
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

/// Returns whether a policy's action scope includes `action`: any action,
/// that action, or an action group that `action` belongs to.
fn scope_includes(policy: &Policy, action: &EntityUid, action_entities: &Entities) -> bool {
    let is_or_contains = |scope: &EntityUid| {
        scope == action || action_entities.ancestors(action).is_some_and(|mut groups| groups.any(|group| group == scope))
    };
    match policy.action_constraint() {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(scope) => &scope == action,
        ActionConstraint::In(scopes) => scopes.iter().any(is_or_contains),
    }
}

/// Returns a copy of `policy` whose action scope is any action. Only the
/// groups of an action that the original scope includes may hold the copy:
/// for their requests, both decide the same.
fn without_action_scope(policy: &Policy) -> Policy {
    use cedar_policy_core::ast::{ActionConstraint as Scope, StaticPolicy};

    let ast: &cedar_policy_core::ast::Policy = policy.as_ref();
    if !ast.is_static() || !matches!(ast.action_constraint(), Scope::In(_) | Scope::Eq(_)) {
        return policy.clone();
    }
    let copy = StaticPolicy::new(
        ast.id().clone(),
        ast.loc().cloned(),
        ast.annotations_arc().as_ref().clone(),
        ast.effect(),
        ast.principal_constraint(),
        Scope::any(),
        ast.resource_constraint(),
        ast.non_scope_constraints().cloned(),
    );
    // A static policy has no slots, so its copy is a valid static policy too.
    copy.map_or_else(|_| policy.clone(), Policy::from)
}

/// Finds the context attributes a policy reads: every `context.name` and
/// `context has name`. Any other use of `context` reads all of it. The walk
/// goes over the policy's parsed form, so nothing is parsed again.
fn context_reads(policy: &Policy) -> Reads {
    use cedar_policy_core::ast::{ExprKind, Var};

    let ast: &cedar_policy_core::ast::Policy = policy.as_ref();
    let Some(condition) = ast.non_scope_constraints() else {
        return Reads::Attributes(BTreeSet::new());
    };
    let is_context = |expression: &cedar_policy_core::ast::Expr| matches!(expression.expr_kind(), ExprKind::Var(Var::Context));
    let mut names = BTreeSet::new();
    let mut followed = 0;
    let mut uses = 0;
    for expression in condition.subexpressions() {
        match expression.expr_kind() {
            ExprKind::GetAttr { expr, attr } | ExprKind::HasAttr { expr, attr } if is_context(expr) => {
                names.insert(attr.to_string());
                followed += 1;
            }
            ExprKind::Var(Var::Context) => uses += 1,
            _ => {}
        }
    }
    if uses == followed { Reads::Attributes(names) } else { Reads::Everything }
}

/// Returns the value of one annotation. `Policy::annotation` parses the key
/// with the policy lexer on every call, but the iterator does not.
fn annotation<'a>(policy: &'a Policy, key: &str) -> Option<&'a str> {
    policy.annotations().find(|(name, _)| *name == key).map(|(_, value)| value)
}

fn invalid<E: Diagnostic + fmt::Display + ?Sized>(file: &str, text: &str, error: &E) -> PolicyLoadError {
    PolicyLoadError::Invalid { file: file.to_owned(), line: line_of_diagnostic(text, error), message: message_with_help(error) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn guard() -> Guard {
        Guard::from_defaults().unwrap()
    }

    fn no_entities() -> Arc<Entities> {
        guard().entities(None)
    }

    fn healthy_project() -> ProjectFacts {
        ProjectFacts {
            project_ref: "x".into(),
            name: "acme-staging".into(),
            region: "eu-central-1".into(),
            status: "ACTIVE_HEALTHY".into(),
            organization_slug: "acme".into(),
        }
    }

    fn ip(text: &str) -> Value {
        json!({ "__extn": { "fn": "ip", "arg": text } })
    }

    fn datetime(text: &str) -> Value {
        json!({ "__extn": { "fn": "datetime", "arg": text } })
    }

    #[test]
    fn defaults_load_and_validate() {
        assert_eq!(guard().policy_count(), 12);
        assert_eq!(guard().policy_set_hash().len(), 64);
    }

    #[test]
    fn defaults_match_with_and_without_validation() {
        let built = Guard::from_defaults().unwrap();
        let validated = Guard::from_defaults_validated().unwrap();
        let ids = |guard: &Guard| -> BTreeSet<String> { guard.policies.policies().map(|policy| policy.id().to_string()).collect() };
        assert_eq!(ids(&built), ids(&validated));
        assert_eq!(built.policy_set_hash(), validated.policy_set_hash());
    }

    #[test]
    fn compiled_forms_match_text_files() {
        let schema = Schema::from_json_str(DEFAULT_SCHEMA_JSON).expect("the build script's JSON schema loads");
        let source = Sources {
            schema_file: "schema",
            schema_text: DEFAULT_SCHEMA,
            policies_file: "policies",
            policies_text: DEFAULT_POLICIES,
        };
        let compiled = Guard::with_schema(&source, schema, Validation::AtLoad).expect("the policies validate against the JSON schema");
        let text = Guard::from_sources("schema", DEFAULT_SCHEMA, "policies", DEFAULT_POLICIES).unwrap();
        let policies = |guard: &Guard| -> BTreeMap<String, Value> {
            guard.policies.policies().map(|policy| (policy.id().to_string(), policy.to_json().unwrap())).collect()
        };
        assert_eq!(policies(&compiled), policies(&text));
        assert_eq!(compiled.reasons, text.reasons);
        assert_eq!(compiled.policy_set_hash(), text.policy_set_hash());
        assert_eq!(*compiled.action_entities, *text.action_entities);
        let groups = |guard: &Guard, action: Action| -> Vec<BTreeSet<String>> {
            let ids = |group: &Group| group.policies.policies().map(|policy| policy.id().to_string()).collect();
            guard.groups_of(action).iter().map(ids).collect()
        };
        for action in Action::ALL {
            assert_eq!(groups(&compiled, action), groups(&text, action), "{action}");
        }
        let entity_types = |guard: &Guard| -> BTreeSet<String> { guard.schema.entity_types().map(ToString::to_string).collect() };
        assert_eq!(entity_types(&compiled), entity_types(&text));
    }

    #[test]
    fn group_copies_drop_action_scope() {
        use cedar_policy_core::ast::ActionConstraint as Scope;

        let guard = guard();
        for action in Action::ALL {
            for group in guard.groups_of(action) {
                for policy in group.policies.policies() {
                    let ast: &cedar_policy_core::ast::Policy = policy.as_ref();
                    assert!(matches!(ast.action_constraint(), Scope::Any), "{action}: {}", policy.id());
                    let original = guard.policies.policy(policy.id()).expect("the copy keeps the policy id");
                    assert_eq!(policy.annotations().collect::<Vec<_>>(), original.annotations().collect::<Vec<_>>());
                    assert_eq!(policy.effect(), original.effect());
                }
            }
        }
    }

    #[test]
    fn store_without_actions_denies_all() {
        let guard = guard();
        let contexts = vec![crate::operations::user_context("7c3e0f7a-9d4b-4e2a-8f1c-2b5d6e7f8a9b")];
        let resource = Resource::Project("abcdefghijabcdefghij");
        let allowed = guard.decide_each("a", Action::RevokeJitAccess, resource, &contexts, &guard.entities(None));
        assert!(allowed[0].allowed, "{allowed:?}");
        let denied = guard.decide_each("a", Action::RevokeJitAccess, resource, &contexts, &Entities::empty());
        assert_eq!(denied.len(), 1);
        assert!(!denied[0].allowed, "{denied:?}");
    }

    #[test]
    fn reads_are_allowed() {
        let decision = guard().decide("arn:aws:iam::1:user/a", Action::GetProject, Resource::Project("x"), json!({}), &no_entities());
        assert!(decision.allowed);
        assert_eq!(decision.policy_ids, vec!["allow-read-and-revoke"]);
    }

    #[test]
    fn superuser_check_is_denied() {
        let context = json!({
            "role": "postgres", "network": ip("10.0.0.1/32"), "network_prefix_length": 32,
            "now": datetime("2026-12-04T12:00:00Z"),
        });
        let decision =
            guard().decide("anonymous", Action::AuthorizeJitAccess, Resource::Project("x"), context, &no_entities());
        assert!(!decision.allowed);
        let mut ids = decision.policy_ids.clone();
        ids.sort();
        assert_eq!(ids, vec!["deny-superuser-roles", "roles-allow-list"]);
    }

    #[test]
    fn expiry_cap_is_inclusive() {
        let decide = |expires_at: &str| {
            let context = json!({
                "user_id": "u", "role": "jit_readonly", "network": ip("10.1.0.0/16"),
                "network_prefix_length": 16, "expires_at": datetime(expires_at),
                "now": datetime("2026-12-04T12:00:00Z"), "branches_only": false,
                "target_user": { "is_member": true, "mfa_enabled": true },
            });
            let guard = guard();
            let entities = guard.entities(Some(&healthy_project()));
            guard.decide("anonymous", Action::UpdateJitAccess, Resource::Project("x"), context, &entities)
        };
        assert!(decide("2026-12-04T20:00:00Z").allowed);
        let over = decide("2026-12-04T20:00:01Z");
        assert!(!over.allowed);
        assert_eq!(over.policy_ids, vec!["expiry-at-most-8-hours"]);
    }

    #[test]
    fn context_not_matching_schema_denies() {
        let decision =
            guard().decide("anonymous", Action::UpdateJitAccess, Resource::Project("x"), json!({"role": 1}), &no_entities());
        assert!(!decision.allowed);
    }

    fn reads_of(text: &str) -> Reads {
        context_reads(&Policy::from_str(text).unwrap())
    }

    fn attributes(names: &[&str]) -> Reads {
        Reads::Attributes(names.iter().map(|name| (*name).to_owned()).collect())
    }

    #[test]
    fn reads_follow_attribute_access_and_has() {
        assert_eq!(reads_of("permit (principal, action, resource);"), attributes(&[]));
        assert_eq!(
            reads_of("forbid (principal, action, resource) when { context has expires_at && context.expires_at > context.now };"),
            attributes(&["expires_at", "now"])
        );
        assert_eq!(
            reads_of("forbid (principal, action, resource) unless { context.target_user.is_member };"),
            attributes(&["target_user"])
        );
    }

    #[test]
    fn whole_context_use_reads_everything() {
        assert_eq!(reads_of("forbid (principal, action, resource) when { context == {} };"), Reads::Everything);
        assert_eq!(reads_of("forbid (principal, action, resource) when { [context].contains(context) };"), Reads::Everything);
    }

    #[test]
    fn default_policies_form_three_groups() {
        let guard = guard();
        let of = |id: &str| {
            let groups = guard.groups_of(Action::UpdateJitAccess);
            let group = groups.iter().find(|group| group.policies.policy(&PolicyId::new(id)).is_some()).unwrap();
            group.reads.clone()
        };
        assert_eq!(of("roles-allow-list"), attributes(&["role"]));
        assert_eq!(of("networks-within-permitted-ranges"), attributes(&["network", "network_prefix_length"]));
        assert_eq!(of("expiry-at-most-8-hours"), attributes(&["expires_at", "now", "target_user"]));
        assert_eq!(of("project-is-healthy"), attributes(&["expires_at", "now", "target_user"]));
        assert_eq!(of("allow-jit-within-guardrails"), attributes(&["expires_at", "now", "target_user"]));
        assert_eq!(guard.groups_of(Action::UpdateJitAccess).len(), 3);
    }

    /// Each action keeps the policies whose scope names it, directly or
    /// through the WriteJitAccess group, and those with any action.
    #[test]
    fn actions_keep_the_policies_that_can_apply() {
        let guard = guard();
        let ids = |action: Action| {
            let mut ids: Vec<String> = guard
                .groups_of(action)
                .iter()
                .flat_map(|group| group.policies.policies().map(|policy| policy.id().to_string()))
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(Action::GetProject), ["allow-read-and-revoke"]);
        let update = ids(Action::UpdateJitAccess);
        assert!(update.contains(&"expiry-required".to_owned()), "{update:?}");
        assert!(!update.contains(&"allow-read-and-revoke".to_owned()), "{update:?}");
        assert_eq!(update, ids(Action::GrantJitAccess), "both are in WriteJitAccess");
        let total: usize = Action::ALL.iter().map(|action| ids(*action).len()).sum();
        assert!(total > guard.policy_count(), "a policy can apply to several actions");

        let any = Guard::from_sources(
            "schema",
            DEFAULT_SCHEMA,
            "policies",
            "@id(\"all\") permit (principal, action, resource);",
        )
        .unwrap();
        for action in Action::ALL {
            assert_eq!(any.groups_of(action).iter().map(|group| group.policies.policies().count()).sum::<usize>(), 1);
        }
    }

    #[test]
    fn extension_names_build_same_values() {
        assert!(EXTENSION_NAMES.is_some());
        let pairs = |ip: RestrictedExpression, datetime: RestrictedExpression, duration: RestrictedExpression| {
            Context::from_pairs([("a".to_owned(), ip), ("b".to_owned(), datetime), ("c".to_owned(), duration)])
                .unwrap()
                .to_string()
        };
        let built = pairs(extension_call(0, "10.1.0.0/16"), extension_call(1, "2026-12-04T12:00:00Z"), extension_call(2, "90s"));
        assert!(built.contains("10.1.0.0/16"), "{built}");
        assert!(built.contains("90s"), "{built}");
        assert_eq!(
            built,
            pairs(
                RestrictedExpression::new_ip("10.1.0.0/16"),
                RestrictedExpression::new_datetime("2026-12-04T12:00:00Z"),
                RestrictedExpression::new_duration("90s")
            )
        );
    }

    #[test]
    fn entity_store_follows_changed_project_facts() {
        let guard = guard();
        let healthy = healthy_project();
        let first = guard.entities(Some(&healthy));
        assert!(Arc::ptr_eq(&first, &guard.entities(Some(&healthy))));
        let inactive = ProjectFacts { status: "INACTIVE".into(), ..healthy_project() };
        let changed = guard.entities(Some(&inactive));
        assert!(!Arc::ptr_eq(&first, &changed));
        let contexts = vec![vec![
            ("user_id", Fact::String("u".into())),
            ("role", Fact::String("jit_readonly".into())),
            ("network", Fact::Ip("10.1.0.0/16".into())),
            ("network_prefix_length", Fact::Long(16)),
            ("now", Fact::DateTime("2026-12-04T12:00:00Z".into())),
            ("branches_only", Fact::Bool(false)),
            ("target_user", Fact::Record(vec![("is_member", Fact::Bool(true)), ("mfa_enabled", Fact::Bool(true))])),
            ("expires_at", Fact::DateTime("2026-12-04T13:00:00Z".into())),
        ]];
        let decide = |entities: &Entities| {
            guard.decide_each("anonymous", Action::UpdateJitAccess, Resource::Project("x"), &contexts, entities).remove(0)
        };
        assert!(decide(&first).allowed);
        assert_eq!(decide(&changed).policy_ids, vec!["project-is-healthy"]);
    }

    #[test]
    fn project_entities_match_the_schema() {
        let guard = guard();
        let entities = guard.entities(Some(&healthy_project()));
        let all: Vec<cedar_policy::Entity> = entities.iter().cloned().collect();
        assert_eq!(all.len(), guard.action_entities.iter().count() + 2);
        let checked = Entities::from_entities(all, Some(&guard.schema));
        assert!(checked.is_ok(), "{checked:?}");
    }

    #[test]
    fn mistyped_context_fails_closed() {
        let guard = guard();
        let contexts = vec![vec![("role", Fact::Long(1)), ("network", Fact::Ip("10.0.0.1".into()))]];
        let decisions = guard.decide_each("anonymous", Action::UpdateJitAccess, Resource::Project("x"), &contexts, &no_entities());
        assert!(!decisions[0].allowed);
        assert_eq!(decisions[0].reasons, vec!["a policy failed to evaluate"]);
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let policies = "@id(\"a\")\npermit (principal, action, resource);\n\n@id(\"b\")\nforbid (principal action, resource);\n";
        let error = Guard::from_sources("schema.cedarschema", DEFAULT_SCHEMA, "broken.cedar", policies).unwrap_err();
        let PolicyLoadError::Invalid { file, line, .. } = error else { panic!("unexpected {error:?}") };
        assert_eq!(file, "broken.cedar");
        assert_eq!(line, 5);
    }

    #[test]
    fn strict_validation_rejects_unknown_attribute() {
        let policies = "@id(\"a\")\npermit (principal, action == JitGuard::Action::\"GetProject\", resource)\nwhen { context.nope };\n";
        let error = Guard::from_sources("schema.cedarschema", DEFAULT_SCHEMA, "p.cedar", policies).unwrap_err();
        let PolicyLoadError::Invalid { line, message, .. } = error else { panic!("unexpected {error:?}") };
        assert_eq!(line, 3);
        assert!(message.contains("nope"), "{message}");
    }

    #[test]
    fn policy_without_id_is_rejected() {
        let policies = "permit (principal, action, resource);\n";
        let error = Guard::from_sources("schema.cedarschema", DEFAULT_SCHEMA, "p.cedar", policies).unwrap_err();
        assert!(error.to_string().contains("@id"));
    }

    #[test]
    fn duplicate_policy_id_is_rejected() {
        let policies = "@id(\"a\")\npermit (principal, action, resource);\n@id(\"a\")\npermit (principal, action, resource);\n";
        let error = Guard::from_sources("schema.cedarschema", DEFAULT_SCHEMA, "p.cedar", policies).unwrap_err();
        assert!(error.to_string().starts_with("p.cedar:3:"), "{error}");
        assert!(error.to_string().contains("used twice"));
    }

    /// Runs the decision cases of `policies/tests.json`, the file the Cedar CLI's
    /// `run-tests` also reads, through the same guard the functions use.
    #[test]
    fn decision_cases_match_expectations() {
        let cases: Vec<Value> =
            serde_json::from_str(include_str!("../../policies/tests.json")).expect("policies/tests.json is JSON");
        assert!(cases.len() >= 20, "expected at least 20 decision cases");
        let guard = guard();
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let request = &case["request"];
            let uid = |key: &str| EntityUid::from_str(request[key].as_str().unwrap()).unwrap();
            let entities = Entities::from_json_value(case["entities"].clone(), Some(&guard.schema))
                .unwrap_or_else(|error| panic!("invalid entities in case {name:?}: {error}"))
                .add_entities(guard.action_entities.iter().cloned(), Some(&guard.schema))
                .unwrap_or_else(|error| panic!("adding the schema's actions to the entities of case {name:?} failed: {error}"));
            let context = request["context"].clone();
            let decision = guard.decide_uids(uid("principal"), uid("action"), uid("resource"), context, &entities);
            assert_eq!(decision.allowed, case["decision"] == "allow", "decision of case {name:?}");
            let mut expected: Vec<String> =
                case["reason"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect();
            expected.sort();
            let mut actual = decision.policy_ids.clone();
            actual.sort();
            assert_eq!(actual, expected, "policy ids of case {name:?}");
        }
    }
}
