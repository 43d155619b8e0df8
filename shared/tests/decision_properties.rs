//! Property test of `Guard::decide_each`, the decision over many contexts
//! that evaluates each policy once per distinct reading.
//!
//! For every list of contexts it must give the same decision, policy ids and
//! reasons as `Guard::decide` on each context alone. That path validates
//! each context against the schema and evaluates every policy.

use jit_guard::facts::ProjectFacts;
use jit_guard::policy::{Action, Decision, Fact, Facts, Guard, Resource, facts_to_json};
use proptest::prelude::*;
use proptest::sample::select;

const ROLES: [&str; 6] = ["jit_readonly", "jit_support", "supabase_read_only_user", "postgres", "analyst", "service_role"];

/// Networks with their prefix lengths, across both families, inside and
/// outside the permitted ranges, and the open ranges.
const NETWORKS: [(&str, i64); 9] = [
    ("10.1.0.0/16", 16),
    ("10.2.3.4", 32),
    ("192.168.4.0/24", 24),
    ("8.8.8.0/24", 24),
    ("0.0.0.0/0", 0),
    ("fd00:1::/64", 64),
    ("2001:db8:5::/48", 48),
    ("2606:4700::/32", 32),
    ("::/0", 0),
];

const NOW: &str = "2026-12-04T12:00:00Z";

/// Expiry as seconds after `NOW`. With `None`, the context has no `expires_at`.
fn expiry() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![Just(None), (-3_600i64..36_000).prop_map(Some), Just(Some(28_800)), Just(Some(28_801))]
}

fn target_user() -> impl Strategy<Value = Fact> {
    prop_oneof![
        Just(Fact::Record(vec![("is_member", Fact::Bool(false))])),
        any::<bool>().prop_map(|mfa| Fact::Record(vec![
            ("is_member", Fact::Bool(true)),
            ("role_name", Fact::String("Developer".into())),
            ("mfa_enabled", Fact::Bool(mfa)),
        ])),
    ]
}

fn grant_context(role: &str, network: (&str, i64), expires_in: Option<i64>, branches_only: bool, target_user: Fact) -> Facts {
    let mut context = vec![
        ("user_id", Fact::String("7c3e0f7a-9d4b-4e2a-8f1c-2b5d6e7f8a9b".into())),
        ("role", Fact::String(role.into())),
        ("network", Fact::Ip(network.0.into())),
        ("network_prefix_length", Fact::Long(network.1)),
        ("now", Fact::DateTime(NOW.into())),
        ("branches_only", Fact::Bool(branches_only)),
        ("target_user", target_user),
    ];
    if let Some(seconds) = expires_in {
        let now = chrono::DateTime::parse_from_rfc3339(NOW).unwrap();
        let expires_at = now + chrono::TimeDelta::seconds(seconds);
        context.push(("expires_at", Fact::DateTime(expires_at.to_utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))));
        context.push(("expires_in", Fact::Duration(format!("{seconds}s"))));
    }
    context
}

/// Generates an update: a few entries, each a role with an expiry and some networks.
fn update() -> impl Strategy<Value = Vec<Facts>> {
    let entry = (select(&ROLES[..]), expiry(), prop::collection::vec(select(&NETWORKS[..]), 1..4), any::<bool>());
    (prop::collection::vec(entry, 1..5), target_user()).prop_map(|(entries, target_user)| {
        entries
            .into_iter()
            .flat_map(|(role, expires_in, networks, branches_only)| {
                let target_user = target_user.clone();
                networks
                    .into_iter()
                    .map(move |network| grant_context(role, network, expires_in, branches_only, target_user.clone()))
            })
            .collect()
    })
}

fn project() -> impl Strategy<Value = ProjectFacts> {
    (select(&["acme-staging", "acme-prod"][..]), select(&["ACTIVE_HEALTHY", "INACTIVE"][..])).prop_map(|(name, status)| {
        ProjectFacts {
            project_ref: "abcdefghijklmnopqrst".into(),
            name: name.into(),
            region: "eu-central-1".into(),
            status: status.into(),
            organization_slug: "acme".into(),
        }
    })
}

/// Returns a decision with its policy ids and reasons in a fixed order.
fn sorted(decision: &Decision) -> (bool, Vec<String>, Vec<String>) {
    let mut policy_ids = decision.policy_ids.clone();
    policy_ids.sort();
    let mut reasons = decision.reasons.clone();
    reasons.sort();
    (decision.allowed, policy_ids, reasons)
}

/// Loads the default policies plus policies that read the role and the network
/// together, the whole context, and an attribute only some contexts have, so
/// that every kind of policy group is exercised.
fn extended_guard() -> Guard {
    let extra = r#"
@id("support-only-from-ten")
@reason("jit_support is granted on 10.0.0.0/8 only")
forbid (principal, action in JitGuard::Action::"WriteJitAccess", resource)
when { context.role == "jit_support" && !context.network.isInRange(ip("10.0.0.0/8")) };

@id("whole-context")
@reason("a whole-context rule")
forbid (principal, action in JitGuard::Action::"WriteJitAccess", resource)
when { context == context && context.branches_only };

@id("short-grants-from-anywhere")
@reason("a permit reading the expiry")
permit (principal, action in JitGuard::Action::"WriteJitAccess", resource)
when { context has expires_in && context.expires_in < duration("1h") };
"#;
    let policies = format!("{}\n{extra}", include_str!("../../policies/policies.cedar"));
    Guard::from_sources("schema.cedarschema", include_str!("../../policies/schema.cedarschema"), "policies.cedar", &policies)
        .expect("the extended policies load")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decide_each_matches_one_decision_per_context(
        contexts in update(),
        project in project(),
        action in select(&[Action::UpdateJitAccess, Action::GrantJitAccess][..]),
        extended in any::<bool>(),
    ) {
        let guard = if extended { extended_guard() } else { Guard::from_defaults().unwrap() };
        let entities = guard.entities(Some(&project));
        let resource = Resource::Project(&project.project_ref);
        let grouped = guard.decide_each("arn:aws:iam::1:user/a", action, resource, &contexts, &entities);
        prop_assert_eq!(grouped.len(), contexts.len());
        for (context, decision) in contexts.iter().zip(&grouped) {
            prop_assert!(guard.check_context(action, context).is_ok(), "{:?}", guard.check_context(action, context));
            let alone = guard.decide("arn:aws:iam::1:user/a", action, resource, facts_to_json(context), &entities);
            prop_assert_eq!(sorted(decision), sorted(&alone), "context {}", facts_to_json(context));
        }
    }
}

/// The property above must see allows and each kind of deny, or it proves little.
#[test]
fn generated_updates_reach_allows_and_denies() {
    let guard = Guard::from_defaults().unwrap();
    let project = ProjectFacts {
        project_ref: "abcdefghijklmnopqrst".into(),
        name: "acme-staging".into(),
        region: "eu-central-1".into(),
        status: "ACTIVE_HEALTHY".into(),
        organization_slug: "acme".into(),
    };
    let member = Fact::Record(vec![("is_member", Fact::Bool(true)), ("mfa_enabled", Fact::Bool(true))]);
    let contexts = vec![
        grant_context("jit_readonly", NETWORKS[0], Some(3_600), false, member.clone()),
        grant_context("postgres", NETWORKS[0], Some(3_600), false, member.clone()),
        grant_context("jit_readonly", NETWORKS[3], Some(3_600), false, member.clone()),
        grant_context("jit_readonly", NETWORKS[5], Some(28_801), false, member),
    ];
    let entities = guard.entities(Some(&project));
    let decisions =
        guard.decide_each("a", Action::UpdateJitAccess, Resource::Project(&project.project_ref), &contexts, &entities);
    assert!(decisions[0].allowed);
    assert_eq!(sorted(&decisions[1]).1, vec!["deny-superuser-roles", "roles-allow-list"]);
    assert_eq!(sorted(&decisions[2]).1, vec!["networks-within-permitted-ranges"]);
    assert_eq!(sorted(&decisions[3]).1, vec!["expiry-at-most-8-hours"]);
}
