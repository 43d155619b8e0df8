//! Property tests of the request parser and validator in `jit_guard::validate`.
//!
//! 1. No input makes a parser panic, and every rejection lists field errors
//!    that each name a field and have a message.
//! 2. An accepted update body becomes an upstream body that the request schema
//!    of the official Management API spec accepts. That body also keeps the
//!    stronger facts the spec implies: whole seconds, canonical CIDRs in the
//!    list of their family, and `roles` as the list's name.
//! 3. Normalization is stable: the upstream body, parsed again with the same
//!    clock, is accepted and gives the same upstream body.
//!
//! Failing inputs that proptest found are kept as deterministic tests at the
//! end of the file, so no regression file is written beside it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use jit_guard::error::FieldError;
use jit_guard::json::from_str_unique_keys;
use jit_guard::validate::{
    MAX_CIDRS, MAX_ROLES, OrganizationSlug, ProjectRef, RoleName, UpdateJitAccess, UserId, parse_authorize_body,
    parse_expires_at, parse_json_object, parse_remote_host, parse_update_body,
};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::{Map, Value, json};

/// The official Management API spec. CI has it, but a fresh clone does not.
const SPEC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/supabase/management-api-v1.openapi.json");

/// Operation whose request body the upstream body must satisfy.
const UPDATE_OPERATION: &str = "v1-update-jit-access";

/// Component the update operation is expected to take as its request body.
const UPDATE_SCHEMA: &str = "UpdateJitAccessBody";

/// Unix seconds from which a number reads as milliseconds (year 33658 in seconds).
const MILLISECONDS_THRESHOLD: i64 = 1_000_000_000_000;

/// Latest Unix second an RFC 3339 text can hold: 9999-12-31T23:59:59Z.
const LAST_RFC3339_SECOND: i64 = 253_402_300_799;

/// Seconds in one day, the widest UTC offset an RFC 3339 text can carry (exclusive).
const DAY_SECONDS: i64 = 86_400;

/// Cases of each hostile-input property, four times proptest's default. Measured in debug on a
/// 2-core machine, the whole file runs in 2 to 3 seconds with it.
const HOSTILE_CASES: u32 = 1024;

/// Cases of each valid-body property, proptest's default.
const VALID_CASES: u32 = 256;

fn config(cases: u32) -> ProptestConfig {
    // No failure persistence: shrunk failures become deterministic tests below instead.
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------
// JSON as raw text: a tree whose objects are lists of pairs, so a key can repeat.
// ---------------------------------------------------------------------------

/// The members of a raw object, in order, repeats included.
type Pairs = Vec<(String, Raw)>;

#[derive(Debug, Clone)]
enum Raw {
    Null,
    Bool(bool),
    /// Number text as sent, which may be outside every Rust integer or float range.
    Number(String),
    /// A string value, JSON-escaped when rendered.
    Text(String),
    Array(Vec<Raw>),
    /// Pairs in order, so a repeated key stays repeated in the rendered text.
    Object(Pairs),
}

impl Raw {
    fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Raw::Null => out.push_str("null"),
            Raw::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
            Raw::Number(text) => out.push_str(text),
            Raw::Text(text) => out.push_str(&json_string(text)),
            Raw::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Raw::Object(pairs) => {
                out.push('{');
                for (index, (key, value)) in pairs.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    out.push_str(&json_string(key));
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }

    fn from_value(value: &Value) -> Raw {
        match value {
            Value::Null => Raw::Null,
            Value::Bool(flag) => Raw::Bool(*flag),
            Value::Number(number) => Raw::Number(number.to_string()),
            Value::String(text) => Raw::Text(text.clone()),
            Value::Array(items) => Raw::Array(items.iter().map(Raw::from_value).collect()),
            Value::Object(object) => {
                Raw::Object(object.iter().map(|(key, value)| (key.clone(), Raw::from_value(value))).collect())
            }
        }
    }

    /// Counts the non-empty objects of the tree, which [`Raw::change_object`] numbers depth-first.
    fn object_count(&self) -> usize {
        match self {
            Raw::Array(items) => items.iter().map(Raw::object_count).sum(),
            Raw::Object(pairs) => {
                usize::from(!pairs.is_empty()) + pairs.iter().map(|(_, value)| value.object_count()).sum::<usize>()
            }
            _ => 0,
        }
    }

    /// Applies `change` to the `target`-th non-empty object, counting as [`Raw::object_count`] does.
    fn change_object(&mut self, target: &mut usize, change: &dyn Fn(&mut Pairs)) -> bool {
        match self {
            Raw::Array(items) => items.iter_mut().any(|item| item.change_object(target, change)),
            Raw::Object(pairs) => {
                if !pairs.is_empty() {
                    if *target == 0 {
                        change(pairs);
                        return true;
                    }
                    *target -= 1;
                }
                pairs.iter_mut().any(|(_, value)| value.change_object(target, change))
            }
            _ => false,
        }
    }
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string always serializes")
}

/// Builds objects from `fields`, mostly with each key once. A repeated key stops parsing before
/// any field is checked, so only a tenth of the objects keep their repeats.
fn object_of(fields: impl Strategy<Value = (String, Raw)>, max_fields: usize) -> impl Strategy<Value = Raw> {
    (prop::collection::vec(fields, 0..=max_fields), prop::bool::weighted(0.1)).prop_map(|(pairs, keep_repeats)| {
        let mut seen = BTreeSet::new();
        Raw::Object(pairs.into_iter().filter(|(key, _)| keep_repeats || seen.insert(key.clone())).collect())
    })
}

// ---------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------

/// Strings at the validators' edges: quotes, NUL and control characters,
/// invisible and look-alike characters (Cyrillic letters, fullwidth digits),
/// and near misses of every accepted form.
const TRICKY_TEXT: &[&str] = &[
    "",
    " ",
    "\0",
    "\u{7f}",
    "\t",
    "\n",
    "postgres",
    "postgres\0",
    "post\"gres",
    "post'gres",
    " postgres",
    "postgres ",
    "\u{a0}postgres",
    "postgres\u{200b}",
    "\u{feff}postgres",
    "\u{202e}sergtsop",
    "p\u{43e}stgres",
    "\u{ff50}\u{ff4f}\u{ff53}\u{ff54}\u{ff47}\u{ff52}\u{ff45}\u{ff53}",
    "\u{1b}[31mred",
    "\u{d7ff}\u{e000}\u{10ffff}",
    "abcdefghijklmnopqrst",
    "\u{430}bcdefghijklmnopqrst",
    "ABCDEFGHIJKLMNOPQRST",
    "abcdefghijklmnopqrs",
    "abcdefghijklmnopqrstu",
    "..%2f..%2fabcdefghij",
    "acme-corp_1",
    "acme/corp",
    "acm\u{e9}",
    "55555555-5555-4555-8555-555555555555",
    "55555555-5555-4555-8555-55555555555\u{ff15}",
    "5555555\u{430}-5555-4555-8555-555555555555",
    "{55555555-5555-4555-8555-555555555555}",
    "urn:uuid:55555555-5555-4555-8555-555555555555",
    "55555555555545558555555555555555",
    "55555555-5555-4555-8555-5555555555555",
    "10.0.0.0/8",
    "\u{ff11}\u{ff10}.0.0.0/8",
    "10.0.0.0/08",
    "010.0.0.0/8",
    "10.0.0.1/8",
    "10.0.0.0/33",
    "10.0.0.0/-1",
    "10.0.0.0/",
    "10.0.0.0",
    "0.0.0.0/0",
    "::/0",
    "2001:db8::/32",
    "2001:DB8::/32",
    "2001:db8::1/32",
    "2001:db8::/129",
    "::ffff:10.0.0.0/104",
    "::ffff:0:0/96",
    "fe80::/10",
    "fe80::1%eth0",
    "fe80::%eth0/64",
    "::1",
    "::ffff:203.0.113.10",
    "203.0.113.10",
    "203.0.113.010",
    "2026-12-04T13:00:00Z",
    "2026-12-04t13:00:00z",
    "2026-12-04 13:00:00Z",
    "\u{ff12}\u{ff10}\u{ff12}\u{ff16}-12-04T13:00:00Z",
    "2026-12-04T13:00:00+24:00",
    "2026-12-04T13:00:00.999999999999Z",
    "2026-02-30T00:00:00Z",
    "2026-12-04T13:00:60Z",
    "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "1800000000",
    "true",
    "null",
];

/// Number texts past the edges of i64, u64 and f64, and whole numbers written as floats.
const TRICKY_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "0.0",
    "-0.0",
    "1e400",
    "-1e400",
    "1e-400",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "999999999999",
    "1000000000000",
    "4102444800",
    "4102444800.0",
    "4102444800e0",
    "4.1024448e9",
    "1.8e9",
];

/// Pieces that break the JSON grammar, spliced into otherwise valid bodies.
const BROKEN_PIECES: &[&str] = &[
    "NaN",
    "Infinity",
    "-Infinity",
    "01",
    "+1",
    ".5",
    "1.",
    "0x10",
    "\"\\ud800\"",
    "\"\\udfff\"",
    "\"\0\"",
    "\"\u{1f}\"",
    "\"\\x41\"",
    "'single'",
    "undefined",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    "/*c*/",
    "\u{feff}",
];

/// Field names of both request bodies, so generated objects reach the parsers' inner paths.
const FIELD_NAMES: &[&str] = &[
    "user_id",
    "roles",
    "user_roles",
    "role",
    "rhost",
    "expires_at",
    "allowed_networks",
    "allowed_cidrs",
    "allowed_cidrs_v6",
    "cidr",
    "branches_only",
];

/// Field names that look like real ones: Cyrillic letters, fullwidth letters and digits, hidden characters.
const LOOKALIKE_KEYS: &[&str] = &[
    "r\u{43e}le",
    "rol\u{435}",
    "\u{ff52}\u{ff4f}\u{ff4c}\u{ff45}",
    "Role",
    "ROLES",
    "role ",
    " role",
    "role\0",
    "user_id\u{200b}",
    "expires_at\0",
    "allowed_cidrs_v\u{ff16}",
    "branches_only\u{feff}",
];

/// Characters spliced into tricky text: Cyrillic а and о, fullwidth 0 and 5, zero-width space, NUL.
const INSERTED_CHARACTERS: &[char] = &['\u{430}', '\u{43e}', '\u{ff10}', '\u{ff15}', '\u{200b}', '\0'];

fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        3 => select(TRICKY_TEXT).prop_map(str::to_owned),
        2 => "[a-z_]{0,10}[\\x00-\\x1f\\x7f\"' ]{0,3}[a-z_]{0,10}",
        1 => "[a-z]{18,22}",
        1 => "[a-zA-Z0-9_-]{60,70}",
        1 => "[0-9a-fA-F-]{32,38}",
        1 => "[0-9./:a-fA-F%]{0,24}",
        2 => (select(TRICKY_TEXT), select(INSERTED_CHARACTERS), any::<Index>())
            .prop_map(|(base, inserted, at)| insert_char(base, inserted, at)),
    ]
}

/// Inserts `inserted` into `base` at a character boundary chosen by `at`.
fn insert_char(base: &str, inserted: char, at: Index) -> String {
    let boundaries: Vec<usize> = base.char_indices().map(|(offset, _)| offset).chain([base.len()]).collect();
    let offset = boundaries[at.index(boundaries.len())];
    let mut text = base.to_owned();
    text.insert(offset, inserted);
    text
}

fn hostile_number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|number| number.to_string()),
        any::<u64>().prop_map(|number| number.to_string()),
        (1_500_000_000_i64..2_000_000_000_000).prop_map(|number| number.to_string()),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |number| number.is_finite())
            .prop_map(|number| format!("{number:?}")),
        select(TRICKY_NUMBERS).prop_map(str::to_owned),
        "-?[1-9][0-9]{18,40}",
        "-?[1-9][0-9]{0,3}(\\.[0-9]{1,3})?[eE][+-]?[0-9]{1,4}",
    ]
}

fn hostile_key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => select(FIELD_NAMES).prop_map(str::to_owned),
        2 => select(LOOKALIKE_KEYS).prop_map(str::to_owned),
        // The empty key, which an error path must still name.
        1 => Just(String::new()),
        2 => hostile_text(),
    ]
}

/// Generates any JSON document made of hostile leaves, a few levels deep.
fn hostile_json() -> impl Strategy<Value = Raw> {
    let leaf = prop_oneof![
        1 => Just(Raw::Null),
        1 => any::<bool>().prop_map(Raw::Bool),
        3 => hostile_number().prop_map(Raw::Number),
        3 => hostile_text().prop_map(Raw::Text),
    ];
    leaf.prop_recursive(5, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Raw::Array),
            object_of((hostile_key(), inner), 4),
        ]
    })
}

/// Wraps `inner` in `depth` arrays or single-key objects, to cross the nesting limit.
fn nest(inner: Raw, depth: usize, objects: bool) -> Raw {
    (0..depth).fold(inner, |nested, level| {
        if objects && level % 2 == 0 {
            Raw::Object(vec![("roles".to_owned(), nested)])
        } else {
            Raw::Array(vec![nested])
        }
    })
}

fn uuid_text() -> impl Strategy<Value = String> {
    (any::<u128>(), any::<bool>()).prop_map(|(bits, upper)| {
        let text = uuid::Uuid::from_u128(bits).hyphenated().to_string();
        if upper { text.to_uppercase() } else { text }
    })
}

/// Generates an RFC 3339 text and the Unix second it names, from one of the `seconds`.
fn rfc3339_text(seconds: impl Strategy<Value = i64>) -> impl Strategy<Value = (String, i64)> {
    let offset_minutes = prop_oneof![Just(0_i32), -1439_i32..=1439];
    let format = select(&[SecondsFormat::Secs, SecondsFormat::Millis, SecondsFormat::Nanos, SecondsFormat::AutoSi][..]);
    (seconds, 0_u32..1_000_000_000, offset_minutes, format, any::<bool>()).prop_map(
        |(seconds, nanos, offset_minutes, format, use_z)| {
            let offset = FixedOffset::east_opt(offset_minutes * 60).expect("an offset under one day");
            let instant = DateTime::from_timestamp(seconds, nanos).expect("a second in chrono's range");
            (instant.with_timezone(&offset).to_rfc3339_opts(format, use_z), seconds)
        },
    )
}

fn any_cidr_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<u32>(), 0_u8..=40).prop_map(|(bits, prefix)| format!("{}/{prefix}", Ipv4Addr::from(bits))),
        (any::<u128>(), 0_u8..=140).prop_map(|(bits, prefix)| format!("{}/{prefix}", Ipv6Addr::from(bits))),
        ipv4_network().prop_map(|network| network.to_string()),
        ipv6_network().prop_map(|network| network.to_string()),
    ]
}

fn any_address_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u32>().prop_map(|bits| Ipv4Addr::from(bits).to_string()),
        any::<u128>().prop_map(|bits| Ipv6Addr::from(bits).to_string()),
        any::<u32>().prop_map(|bits| Ipv4Addr::from(bits).to_ipv6_mapped().to_string()),
        any::<u32>().prop_map(|bits| format!("::ffff:{}", Ipv4Addr::from(bits))),
    ]
}

/// Generates `valid`-shaped text, hostile text, or any JSON value.
fn text_or_hostile(valid: impl Strategy<Value = String> + 'static) -> BoxedStrategy<Raw> {
    prop_oneof![
        3 => valid.prop_map(Raw::Text),
        2 => hostile_text().prop_map(Raw::Text),
        1 => hostile_json(),
    ]
    .boxed()
}

fn hostile_expiry() -> BoxedStrategy<Raw> {
    prop_oneof![
        3 => hostile_number().prop_map(Raw::Number),
        2 => rfc3339_text(0_i64..=LAST_RFC3339_SECOND - DAY_SECONDS).prop_map(|(text, _)| Raw::Text(text)),
        1 => hostile_text().prop_map(Raw::Text),
        1 => hostile_json(),
    ]
    .boxed()
}

fn hostile_role_entry() -> BoxedStrategy<Raw> {
    let cidr_entry = prop_oneof![
        3 => text_or_hostile(any_cidr_text()).prop_map(|cidr| Raw::Object(vec![("cidr".to_owned(), cidr)])),
        1 => object_of((hostile_key(), hostile_json()), 2),
        1 => hostile_json(),
    ];
    let list = prop_oneof![
        3 => prop::collection::vec(cidr_entry, 0..5).prop_map(Raw::Array),
        1 => hostile_json(),
    ];
    let list_key = prop_oneof![
        3 => select(&["allowed_cidrs", "allowed_cidrs_v6"][..]).prop_map(str::to_owned),
        1 => hostile_key(),
    ];
    let networks = prop_oneof![
        3 => object_of((list_key, list), 3),
        1 => hostile_json(),
    ];
    let field = prop_oneof![
        3 => text_or_hostile("\\PC{1,16}").prop_map(|role| ("role".to_owned(), role)),
        2 => hostile_expiry().prop_map(|expiry| ("expires_at".to_owned(), expiry)),
        2 => networks.prop_map(|networks| ("allowed_networks".to_owned(), networks)),
        1 => prop_oneof![3 => any::<bool>().prop_map(Raw::Bool), 1 => hostile_json()]
            .prop_map(|flag| ("branches_only".to_owned(), flag)),
        1 => (hostile_key(), hostile_json()),
    ];
    object_of(field, 5).boxed()
}

/// Generates update bodies shaped like the real one, with hostile values at every level.
fn hostile_update_body() -> BoxedStrategy<Raw> {
    let roles = prop_oneof![
        6 => prop::collection::vec(hostile_role_entry(), 0..5).prop_map(Raw::Array),
        1 => prop::collection::vec(hostile_role_entry(), MAX_ROLES - 1..MAX_ROLES + 3).prop_map(Raw::Array),
        2 => hostile_json(),
    ];
    let field = prop_oneof![
        3 => text_or_hostile(uuid_text()).prop_map(|user_id| ("user_id".to_owned(), user_id)),
        3 => roles.prop_map(|roles| ("roles".to_owned(), roles)),
        1 => hostile_json().prop_map(|roles| ("user_roles".to_owned(), roles)),
        1 => (hostile_key(), hostile_json()),
    ];
    object_of(field, 4).boxed()
}

/// Generates authorize bodies shaped like the real one, with hostile values.
fn hostile_authorize_body() -> BoxedStrategy<Raw> {
    let field = prop_oneof![
        3 => text_or_hostile("\\PC{1,16}").prop_map(|role| ("role".to_owned(), role)),
        3 => text_or_hostile(any_address_text()).prop_map(|rhost| ("rhost".to_owned(), rhost)),
        1 => (hostile_key(), hostile_json()),
    ];
    object_of(field, 3).boxed()
}

/// Breaks the JSON grammar of `text` by cutting it short, splicing in `piece`, or replacing one byte.
fn broken(text: String, how: u8, at: Index, piece: &str, byte: u8) -> Vec<u8> {
    let mut bytes = text.into_bytes();
    let offset = at.index(bytes.len() + 1);
    match how % 3 {
        0 => bytes.truncate(offset),
        1 => {
            bytes.splice(offset..offset, piece.bytes());
        }
        _ if !bytes.is_empty() => {
            let last = bytes.len() - 1;
            bytes[offset.min(last)] = byte;
        }
        _ => bytes.push(byte),
    }
    bytes
}

/// Generates any request body: random bytes and text, hostile JSON, shaped bodies, and broken ones.
fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
    let shaped = prop_oneof![hostile_json(), hostile_update_body(), hostile_authorize_body()];
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..256),
        2 => any::<String>().prop_map(String::into_bytes),
        3 => hostile_json().prop_map(|raw| raw.render().into_bytes()),
        6 => hostile_update_body().prop_map(|raw| raw.render().into_bytes()),
        4 => hostile_authorize_body().prop_map(|raw| raw.render().into_bytes()),
        2 => (shaped, any::<u8>(), any::<Index>(), select(BROKEN_PIECES), any::<u8>())
            .prop_map(|(raw, how, at, piece, byte)| broken(raw.render(), how, at, piece, byte)),
        1 => (hostile_json(), 0_usize..24, any::<bool>())
            .prop_map(|(raw, depth, objects)| nest(raw, depth, objects).render().into_bytes()),
    ]
}

/// Generates a clock between 2020 and 2096.
fn any_now() -> impl Strategy<Value = DateTime<Utc>> {
    (1_600_000_000_i64..4_000_000_000).prop_map(|seconds| DateTime::from_timestamp(seconds, 0).expect("in range"))
}

/// Generates a clock anywhere in chrono's range, for the expiry parser alone.
fn wide_now() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        any_now(),
        (-8_000_000_000_000_i64..8_000_000_000_000)
            .prop_map(|seconds| DateTime::from_timestamp(seconds, 0).expect("in chrono's range")),
    ]
}

// ---------------------------------------------------------------------------
// Structurally valid update bodies, kept as what was sent so the upstream body can be predicted
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum ExpirySent {
    Absent,
    Null,
    Seconds(i64),
    Rfc3339 { text: String, seconds: i64 },
}

#[derive(Debug, Clone)]
enum ListSent {
    Absent,
    Null,
    /// Each CIDR as sent and the network it names.
    Cidrs(Vec<(String, IpNet)>),
}

#[derive(Debug, Clone)]
enum NetworksSent {
    Absent,
    Null,
    Lists { v4: ListSent, v6: ListSent },
}

#[derive(Debug, Clone)]
struct GrantSent {
    role: String,
    expiry: ExpirySent,
    networks: NetworksSent,
    /// `None` when the key is absent, and `Some(None)` when it is `null`.
    branches_only: Option<Option<bool>>,
}

#[derive(Debug, Clone)]
struct UpdateSent {
    now: DateTime<Utc>,
    user_id: String,
    grants: Vec<GrantSent>,
}

impl ListSent {
    fn networks(&self) -> &[(String, IpNet)] {
        match self {
            ListSent::Cidrs(cidrs) => cidrs,
            ListSent::Absent | ListSent::Null => &[],
        }
    }

    fn insert_into(&self, key: &str, object: &mut Map<String, Value>) {
        match self {
            ListSent::Absent => {}
            ListSent::Null => {
                object.insert(key.into(), Value::Null);
            }
            ListSent::Cidrs(cidrs) => {
                let entries = cidrs.iter().map(|(text, _)| json!({ "cidr": text })).collect();
                object.insert(key.into(), Value::Array(entries));
            }
        }
    }
}

impl UpdateSent {
    fn body(&self) -> Value {
        let roles: Vec<Value> = self
            .grants
            .iter()
            .map(|grant| {
                let mut entry = Map::new();
                entry.insert("role".into(), json!(grant.role));
                match &grant.expiry {
                    ExpirySent::Absent => {}
                    ExpirySent::Null => {
                        entry.insert("expires_at".into(), Value::Null);
                    }
                    ExpirySent::Seconds(seconds) => {
                        entry.insert("expires_at".into(), json!(seconds));
                    }
                    ExpirySent::Rfc3339 { text, .. } => {
                        entry.insert("expires_at".into(), json!(text));
                    }
                }
                match &grant.networks {
                    NetworksSent::Absent => {}
                    NetworksSent::Null => {
                        entry.insert("allowed_networks".into(), Value::Null);
                    }
                    NetworksSent::Lists { v4, v6 } => {
                        let mut networks = Map::new();
                        v4.insert_into("allowed_cidrs", &mut networks);
                        v6.insert_into("allowed_cidrs_v6", &mut networks);
                        entry.insert("allowed_networks".into(), Value::Object(networks));
                    }
                }
                if let Some(flag) = grant.branches_only {
                    entry.insert("branches_only".into(), json!(flag));
                }
                Value::Object(entry)
            })
            .collect();
        json!({ "user_id": self.user_id, "roles": roles })
    }

    /// Builds the upstream body the validator must send: canonical networks, seconds, and no nulls.
    fn expected_upstream(&self) -> Value {
        let roles: Vec<Value> = self
            .grants
            .iter()
            .map(|grant| {
                let mut entry = Map::new();
                entry.insert("role".into(), json!(grant.role));
                match &grant.expiry {
                    ExpirySent::Absent | ExpirySent::Null => {}
                    ExpirySent::Seconds(seconds) | ExpirySent::Rfc3339 { seconds, .. } => {
                        entry.insert("expires_at".into(), json!(seconds));
                    }
                }
                if let NetworksSent::Lists { v4, v6 } = &grant.networks {
                    let canonical = |list: &ListSent| -> Vec<Value> {
                        list.networks().iter().map(|(_, network)| json!({ "cidr": network.to_string() })).collect()
                    };
                    let mut networks = Map::new();
                    let (v4, v6) = (canonical(v4), canonical(v6));
                    if !v4.is_empty() {
                        networks.insert("allowed_cidrs".into(), Value::Array(v4));
                    }
                    if !v6.is_empty() {
                        networks.insert("allowed_cidrs_v6".into(), Value::Array(v6));
                    }
                    // The validator sends a grant that names no network without the key.
                    if !networks.is_empty() {
                        entry.insert("allowed_networks".into(), Value::Object(networks));
                    }
                }
                if let Some(Some(flag)) = grant.branches_only {
                    entry.insert("branches_only".into(), json!(flag));
                }
                Value::Object(entry)
            })
            .collect();
        json!({ "user_id": self.user_id.to_lowercase(), "roles": roles })
    }
}

/// Generates role names that Postgres and the validator accept, all within 63 bytes: plain identifiers,
/// well-known roles, and quoted-identifier names with inner spaces and non-ASCII letters.
fn role_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z_][a-z0-9_$]{0,62}",
        1 => select(&["postgres", "supabase_read_only_user", "jit_readonly", "anon", "authenticated", "service_role"][..])
            .prop_map(str::to_owned),
        1 => "[a-zA-Z_][a-zA-Z0-9 _.\u{e9}\u{fc}\u{65e5}-]{0,19}[a-z]",
    ]
}

fn ipv4_network() -> impl Strategy<Value = Ipv4Net> {
    (any::<u32>(), 0_u8..=32)
        .prop_map(|(bits, prefix)| Ipv4Net::new(Ipv4Addr::from(bits), prefix).expect("prefix at most 32").trunc())
}

fn ipv6_network() -> impl Strategy<Value = Ipv6Net> {
    let special = select(&["::/0", "::1/128", "fe80::/10", "2001:db8::/32", "64:ff9b::/96", "::/96", "fc00::/7"][..])
        .prop_map(|text| text.parse::<Ipv6Net>().expect("a valid network"));
    let random = (any::<u128>(), 0_u8..=128)
        .prop_map(|(bits, prefix)| Ipv6Net::new(Ipv6Addr::from(bits), prefix).expect("prefix at most 128").trunc());
    prop_oneof![1 => special, 4 => random]
        // The validator rejects IPv4-mapped ranges of /96 or longer and requests the IPv4 CIDR instead.
        .prop_filter("not an IPv4-mapped range", |network| {
            network.addr().to_ipv4_mapped().is_none() || network.prefix_len() < 96
        })
}

/// Spells an IPv6 network in one of three ways: canonical, upper case, or every group written out.
fn spell_ipv6(network: Ipv6Net, style: u8) -> String {
    match style % 3 {
        0 => network.to_string(),
        1 => network.to_string().to_uppercase(),
        _ => {
            let groups: Vec<String> = network.addr().segments().iter().map(|group| format!("{group:04x}")).collect();
            format!("{}/{}", groups.join(":"), network.prefix_len())
        }
    }
}

/// Drops repeated networks and keeps the first of each in order.
fn dedup<T: Ord + Copy>(networks: Vec<(T, u8)>) -> Vec<(T, u8)> {
    let mut seen = BTreeSet::new();
    networks.into_iter().filter(|(network, _)| seen.insert(*network)).collect()
}

fn list_sent(cidrs: impl Strategy<Value = Vec<(String, IpNet)>>) -> impl Strategy<Value = ListSent> {
    prop_oneof![1 => Just(ListSent::Absent), 1 => Just(ListSent::Null), 4 => cidrs.prop_map(ListSent::Cidrs)]
}

fn networks_sent() -> impl Strategy<Value = NetworksSent> {
    let v4 = prop::collection::vec((ipv4_network(), any::<u8>()), 0..=3).prop_map(|networks| {
        dedup(networks).into_iter().map(|(network, _)| (network.to_string(), IpNet::V4(network))).collect()
    });
    let v6 = prop::collection::vec((ipv6_network(), any::<u8>()), 0..=3).prop_map(|networks| {
        dedup(networks).into_iter().map(|(network, style)| (spell_ipv6(network, style), IpNet::V6(network))).collect()
    });
    prop_oneof![
        1 => Just(NetworksSent::Absent),
        1 => Just(NetworksSent::Null),
        4 => (list_sent(v4), list_sent(v6)).prop_map(|(v4, v6)| NetworksSent::Lists { v4, v6 }),
    ]
}

/// Generates an expiry after `now`: soon, within about two years, or up to the last second before milliseconds.
fn expiry_sent(now: i64) -> impl Strategy<Value = ExpirySent> {
    let latest = MILLISECONDS_THRESHOLD - 1;
    let seconds = prop_oneof![
        4 => (1_i64..=DAY_SECONDS * 800).prop_map(move |delta| now + delta),
        1 => Just(now + 1),
        1 => Just(latest),
        1 => (now + 1)..=latest,
    ];
    // RFC 3339 has four-digit years, so its instants end at year 9999, less a day for the offset.
    let text_seconds = prop_oneof![
        4 => (1_i64..=DAY_SECONDS * 800).prop_map(move |delta| now + delta),
        1 => Just(now + 1),
        1 => (now + 1)..=LAST_RFC3339_SECOND - DAY_SECONDS,
    ];
    prop_oneof![
        1 => Just(ExpirySent::Absent),
        1 => Just(ExpirySent::Null),
        3 => seconds.prop_map(ExpirySent::Seconds),
        3 => rfc3339_text(text_seconds).prop_map(|(text, seconds)| ExpirySent::Rfc3339 { text, seconds }),
    ]
}

fn grant_sent(role: String, now: i64) -> impl Strategy<Value = GrantSent> {
    let branches_only = prop_oneof![Just(None), Just(Some(None)), any::<bool>().prop_map(|flag| Some(Some(flag)))];
    (expiry_sent(now), networks_sent(), branches_only).prop_map(move |(expiry, networks, branches_only)| GrantSent {
        role: role.clone(),
        expiry,
        networks,
        branches_only,
    })
}

/// Generates a structurally valid update body: 1 to 5 distinct roles, each with optional fields.
fn update_sent() -> impl Strategy<Value = UpdateSent> {
    (any_now(), uuid_text(), prop::collection::btree_set(role_name(), 1..=5))
        .prop_flat_map(|(now, user_id, roles)| {
            let grants: Vec<_> = roles.into_iter().map(|role| grant_sent(role, now.timestamp())).collect();
            (Just(now), Just(user_id), grants.prop_shuffle())
        })
        .prop_map(|(now, user_id, grants)| UpdateSent { now, user_id, grants })
}

// ---------------------------------------------------------------------------
// Checks shared by the properties
// ---------------------------------------------------------------------------

/// Checks that a rejection lists at least one error and that each error has a message.
fn check_rejection(errors: &[FieldError]) -> Result<(), TestCaseError> {
    prop_assert!(!errors.is_empty(), "a rejection without any field error");
    for error in errors {
        prop_assert!(!error.message.trim().is_empty(), "an error without a message: {error:?}");
    }
    Ok(())
}

/// Checks that each error of a rejection names its field.
fn check_fields_named(errors: &[FieldError]) -> Result<(), TestCaseError> {
    for error in errors {
        prop_assert!(!error.field.is_empty(), "an error that names no field: {error:?}");
    }
    Ok(())
}

fn cidr_texts<'a>(networks: &'a Value, key: &str) -> Result<Vec<&'a str>, TestCaseError> {
    let Some(list) = networks.get(key) else { return Ok(Vec::new()) };
    let entries = list.as_array().ok_or_else(|| TestCaseError::fail(format!("{key} is not an array: {list}")))?;
    prop_assert!(!entries.is_empty(), "{key} is sent empty");
    prop_assert!(entries.len() <= MAX_CIDRS);
    entries
        .iter()
        .map(|entry| {
            let object = entry.as_object().filter(|object| object.len() == 1);
            object
                .and_then(|object| object.get("cidr"))
                .and_then(Value::as_str)
                .ok_or_else(|| TestCaseError::fail(format!("{key} entry is not {{\"cidr\": text}}: {entry}")))
        })
        .collect()
}

/// Checks the facts of any upstream body that the spec implies beyond its schema.
fn check_upstream_facts(upstream: &Value, now: DateTime<Utc>) -> Result<(), TestCaseError> {
    let top = upstream.as_object().ok_or_else(|| TestCaseError::fail("the upstream body is not an object"))?;
    let keys: BTreeSet<&str> = top.keys().map(String::as_str).collect();
    prop_assert_eq!(keys, BTreeSet::from(["roles", "user_id"]), "the role list is sent as `roles`, never `user_roles`");
    let user_id = top["user_id"].as_str().ok_or_else(|| TestCaseError::fail("user_id is not a string"))?;
    let canonical = uuid::Uuid::try_parse(user_id).map(|id| id.hyphenated().to_string()).ok();
    prop_assert_eq!(canonical.as_deref(), Some(user_id), "user_id is not a lowercase hyphenated UUID");

    let roles = top["roles"].as_array().ok_or_else(|| TestCaseError::fail("roles is not an array"))?;
    prop_assert!((1..=MAX_ROLES).contains(&roles.len()), "{} role entries", roles.len());
    let mut names = BTreeSet::new();
    for entry in roles {
        let entry =
            entry.as_object().ok_or_else(|| TestCaseError::fail(format!("a role entry is not an object: {entry}")))?;
        for key in entry.keys() {
            prop_assert!(
                ["role", "expires_at", "allowed_networks", "branches_only"].contains(&key.as_str()),
                "role entry key {key}"
            );
        }
        let role =
            entry.get("role").and_then(Value::as_str).ok_or_else(|| TestCaseError::fail("role is not a string"))?;
        prop_assert!(RoleName::parse("role", role).is_ok(), "role {role:?} is not a valid role name");
        prop_assert!(names.insert(role.to_owned()), "role {role:?} is sent twice");

        if let Some(expires_at) = entry.get("expires_at") {
            // Whole seconds as a JSON integer: never a string, a float or milliseconds.
            let seconds = expires_at
                .as_i64()
                .ok_or_else(|| TestCaseError::fail(format!("expires_at {expires_at} is not an integer")))?;
            prop_assert!(seconds > now.timestamp(), "expires_at {seconds} is not after now {}", now.timestamp());
            prop_assert!(seconds < MILLISECONDS_THRESHOLD, "expires_at {seconds} reads as milliseconds");
        }
        if let Some(flag) = entry.get("branches_only") {
            prop_assert!(flag.is_boolean(), "branches_only {flag}");
        }
        if let Some(networks) = entry.get("allowed_networks") {
            let object =
                networks.as_object().ok_or_else(|| TestCaseError::fail("allowed_networks is not an object"))?;
            for key in object.keys() {
                prop_assert!(
                    ["allowed_cidrs", "allowed_cidrs_v6"].contains(&key.as_str()),
                    "allowed_networks key {key}"
                );
            }
            let v4 = cidr_texts(networks, "allowed_cidrs")?;
            let v6 = cidr_texts(networks, "allowed_cidrs_v6")?;
            prop_assert!(!v4.is_empty() || !v6.is_empty(), "allowed_networks is sent without any network");
            for (texts, want_v4) in [(v4, true), (v6, false)] {
                let mut seen = BTreeSet::new();
                for text in texts {
                    let network: IpNet =
                        text.parse().map_err(|_| TestCaseError::fail(format!("cidr {text:?} is not a CIDR")))?;
                    prop_assert_eq!(
                        matches!(network, IpNet::V4(_)),
                        want_v4,
                        "cidr {} is in the list of the other family",
                        text
                    );
                    prop_assert_eq!(network.trunc(), network, "cidr {} has host bits set", text);
                    prop_assert_eq!(network.to_string(), text, "cidr is not in canonical form");
                    prop_assert!(seen.insert(network), "cidr {text} is sent twice");
                }
            }
        }
    }
    Ok(())
}

/// Checks that parsing the upstream body again with the same clock gives the same request.
fn check_stable(request: &UpdateJitAccess, now: DateTime<Utc>) -> Result<(), TestCaseError> {
    let upstream = request.to_upstream_body();
    let bytes = serde_json::to_vec(&upstream).expect("a JSON value always serializes");
    let again = parse_update_body(&bytes, now)
        .map_err(|errors| TestCaseError::fail(format!("the upstream body {upstream} is rejected: {errors:?}")))?;
    prop_assert_eq!(&again.to_upstream_body(), &upstream);
    prop_assert_eq!(&again, request);
    Ok(())
}

fn check_accepted(request: &UpdateJitAccess, now: DateTime<Utc>) -> Result<(), TestCaseError> {
    check_upstream_facts(&request.to_upstream_body(), now)?;
    check_stable(request, now)
}

fn update_body_bytes(sent: &UpdateSent) -> Vec<u8> {
    serde_json::to_vec(&sent.body()).expect("a JSON value always serializes")
}

// ---------------------------------------------------------------------------
// The official spec's request schema as JSON Schema 2020-12
// ---------------------------------------------------------------------------

/// Validators of the update operation's request body.
struct SpecSchemas {
    /// The request schema as the spec states it.
    stated: jsonschema::Validator,
    /// The same schema with every object closed to the properties it names:
    /// stricter than the spec, so the upstream body never carries a field Supabase does not define.
    closed: jsonschema::Validator,
}

/// Converts one OpenAPI 3.0 schema object to JSON Schema 2020-12. These are all the changes:
/// - `$ref: "#/components/schemas/X"` becomes `#/$defs/X`, where the caller embeds the components.
///   Keywords beside a `$ref` are kept. OpenAPI 3.0 ignores them, so keeping them can only add checks.
/// - `nullable: true` adds `"null"` to the `type` and the `enum` of the same object and is dropped.
///   An object with neither keyword stays as it is, so `null` must still pass its other keywords there.
/// - A boolean `exclusiveMinimum` or `exclusiveMaximum` that is true replaces `minimum` or `maximum`
///   by the numeric 2020-12 keyword with the same bound. A false one is dropped.
/// - `example` is dropped, because it only annotates.
/// - With `close`, each object schema that lists `properties` and sets no `additionalProperties`
///   gets `additionalProperties: false`.
///
/// Every other keyword is kept. `format` is asserted for the formats the jsonschema crate implements,
/// such as `uuid`, and ignored for the others. Keywords whose value is data (`enum`, `required`,
/// `default`) are copied without conversion, and so are the names under `properties`.
fn to_json_schema(schema: &Value, close: bool) -> Value {
    let Value::Object(object) = schema else { return schema.clone() };
    let mut converted = Map::new();
    for (keyword, value) in object {
        let value = match keyword.as_str() {
            "$ref" => {
                let target = value.as_str().expect("a $ref is a string");
                let name =
                    target.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {target}"));
                json!(format!("#/$defs/{name}"))
            }
            "nullable" | "example" => continue,
            "exclusiveMinimum" | "exclusiveMaximum" => {
                if let Value::Bool(exclusive) = value {
                    let bound = if keyword == "exclusiveMinimum" { "minimum" } else { "maximum" };
                    let limit = object.get(bound).unwrap_or_else(|| panic!("{keyword} without {bound}"));
                    if *exclusive {
                        converted.insert(keyword.clone(), limit.clone());
                    }
                    continue;
                }
                value.clone()
            }
            "minimum" | "maximum" => {
                let exclusive = if keyword == "minimum" { "exclusiveMinimum" } else { "exclusiveMaximum" };
                if object.get(exclusive) == Some(&Value::Bool(true)) {
                    continue;
                }
                value.clone()
            }
            "properties" | "patternProperties" => Value::Object(
                value
                    .as_object()
                    .expect("properties is an object")
                    .iter()
                    .map(|(name, property)| (name.clone(), to_json_schema(property, close)))
                    .collect(),
            ),
            "items" | "additionalProperties" | "not" => to_json_schema(value, close),
            "allOf" | "anyOf" | "oneOf" => Value::Array(
                value.as_array().expect("a list of schemas").iter().map(|item| to_json_schema(item, close)).collect(),
            ),
            _ => value.clone(),
        };
        converted.insert(keyword.clone(), value);
    }
    if object.get("nullable") == Some(&Value::Bool(true)) {
        match converted.get_mut("type") {
            Some(Value::String(single)) => {
                let single = single.clone();
                converted.insert("type".into(), json!([single, "null"]));
            }
            Some(Value::Array(types)) => types.push(json!("null")),
            _ => {}
        }
        if let Some(Value::Array(values)) = converted.get_mut("enum") {
            values.push(Value::Null);
        }
    }
    if close && converted.contains_key("properties") && !converted.contains_key("additionalProperties") {
        converted.insert("additionalProperties".into(), json!(false));
    }
    Value::Object(converted)
}

/// Adds to `found` every component that `schema` refers to, directly or through other components.
fn collect_components(schema: &Value, components: &Map<String, Value>, found: &mut BTreeMap<String, Value>) {
    match schema {
        Value::Object(object) => {
            if let Some(name) = object
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|target| target.strip_prefix("#/components/schemas/"))
                && !found.contains_key(name)
            {
                let component = components.get(name).unwrap_or_else(|| panic!("the spec has no component {name}"));
                found.insert(name.to_owned(), component.clone());
                collect_components(component, components, found);
            }
            object.values().for_each(|value| collect_components(value, components, found));
        }
        Value::Array(values) => values.iter().for_each(|value| collect_components(value, components, found)),
        _ => {}
    }
}

fn build_validator(request_schema: &Value, components: &BTreeMap<String, Value>, close: bool) -> jsonschema::Validator {
    let mut root = to_json_schema(request_schema, close);
    let definitions: Map<String, Value> =
        components.iter().map(|(name, component)| (name.clone(), to_json_schema(component, close))).collect();
    let object = root.as_object_mut().expect("a request schema is an object");
    object.insert("$schema".into(), json!("https://json-schema.org/draft/2020-12/schema"));
    object.insert("$defs".into(), Value::Object(definitions));
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|error| panic!("the converted request schema does not compile: {error}"))
}

/// Loads the update operation's request schema, or returns `None` when the spec file is absent.
fn spec_schemas() -> Option<SpecSchemas> {
    let Ok(text) = std::fs::read_to_string(SPEC_PATH) else {
        println!("the Management API OpenAPI spec is absent at {SPEC_PATH}; the request schema check is skipped");
        return None;
    };
    let spec: Value = serde_json::from_str(&text).expect("the spec is JSON");
    let operation = spec["paths"]
        .as_object()
        .expect("paths is an object")
        .values()
        .filter_map(Value::as_object)
        .flat_map(|methods| methods.values())
        .find(|operation| operation["operationId"] == UPDATE_OPERATION)
        .unwrap_or_else(|| panic!("the spec has no operation {UPDATE_OPERATION}"));
    let request_schema = operation
        .pointer("/requestBody/content/application~1json/schema")
        .unwrap_or_else(|| panic!("{UPDATE_OPERATION} has no JSON request body"));
    assert_eq!(
        request_schema["$ref"],
        format!("#/components/schemas/{UPDATE_SCHEMA}"),
        "{UPDATE_OPERATION} no longer takes {UPDATE_SCHEMA}"
    );
    let components = spec["components"]["schemas"].as_object().expect("components.schemas is an object");
    let mut found = BTreeMap::new();
    collect_components(request_schema, components, &mut found);
    Some(SpecSchemas {
        stated: build_validator(request_schema, &found, false),
        closed: build_validator(request_schema, &found, true),
    })
}

fn schema_errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator.iter_errors(instance).map(|error| format!("{error} at {}", error.instance_path())).collect()
}

// ---------------------------------------------------------------------------
// Property 1: no panic, and every rejection is well formed
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(HOSTILE_CASES))]

    #[test]
    fn update_parser_never_panics(body in hostile_body(), now in any_now()) {
        match parse_update_body(&body, now) {
            Ok(request) => check_accepted(&request, now)?,
            Err(errors) => check_rejection(&errors)?,
        }
    }

    #[test]
    fn authorize_parser_never_panics(body in hostile_body()) {
        match parse_authorize_body(&body) {
            Ok(request) => {
                prop_assert!(RoleName::parse("role", request.role.as_str()).is_ok());
                let is_mapped = matches!(request.rhost, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
                prop_assert!(!is_mapped, "an IPv4-mapped rhost {} is accepted", request.rhost);
            }
            Err(errors) => check_rejection(&errors)?,
        }
    }

    #[test]
    fn json_readers_never_panic(body in hostile_body()) {
        if let Err(error) = parse_json_object(&body) {
            prop_assert_eq!(error.field.as_str(), "body");
            prop_assert!(!error.message.is_empty());
        }
        if let Ok(text) = std::str::from_utf8(&body) {
            // The reader differs from serde_json only by rejecting repeated keys and deep nesting,
            // so serde_json reads whatever the reader accepts to the same value.
            if let Ok(value) = from_str_unique_keys(text) {
                prop_assert_eq!(Some(value), serde_json::from_str::<Value>(text).ok());
            }
        }
    }

    #[test]
    fn field_parsers_never_panic(text in hostile_text(), field in "[a-z_]{1,12}(\\[[0-9]\\]\\.[a-z_]{1,8})?") {
        let check_error = |error: &FieldError| -> Result<(), TestCaseError> {
            prop_assert_eq!(&error.field, &field, "an error about another field");
            prop_assert!(!error.message.trim().is_empty(), "an error without a message");
            Ok(())
        };

        match ProjectRef::parse(&field, &text) {
            Ok(project_ref) => prop_assert_eq!(project_ref.as_str(), text.as_str()),
            Err(error) => check_error(&error)?,
        }
        // The documented forms, checked both ways.
        let is_ref = text.len() == 20 && text.bytes().all(|byte| byte.is_ascii_lowercase());
        prop_assert_eq!(ProjectRef::parse(&field, &text).is_ok(), is_ref);

        match OrganizationSlug::parse(&field, &text) {
            Ok(slug) => prop_assert_eq!(slug.as_str(), text.as_str()),
            Err(error) => check_error(&error)?,
        }
        let is_slug = (1..=64).contains(&text.len())
            && text.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
        prop_assert_eq!(OrganizationSlug::parse(&field, &text).is_ok(), is_slug);

        match UserId::parse(&field, &text) {
            Ok(user_id) => prop_assert_eq!(user_id.as_str(), text.to_ascii_lowercase()),
            Err(error) => check_error(&error)?,
        }
        let is_hyphenated_uuid = text.len() == 36
            && text.bytes().enumerate().all(|(index, byte)| {
                if [8, 13, 18, 23].contains(&index) { byte == b'-' } else { byte.is_ascii_hexdigit() }
            });
        prop_assert_eq!(UserId::parse(&field, &text).is_ok(), is_hyphenated_uuid);

        match RoleName::parse(&field, &text) {
            Ok(role) => {
                prop_assert_eq!(role.as_str(), text.as_str());
                prop_assert!((1..=63).contains(&text.len()), "{} bytes", text.len());
                prop_assert!(!text.chars().any(|character| matches!(character, '"' | '\'') || character.is_control()));
                prop_assert_eq!(text.trim(), text.as_str());
            }
            Err(error) => check_error(&error)?,
        }

        match parse_remote_host(&field, &text) {
            Ok(address) => {
                prop_assert_eq!(Some(address), text.parse::<IpAddr>().ok());
                prop_assert!(!matches!(address, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()));
            }
            Err(error) => check_error(&error)?,
        }
    }

    #[test]
    fn field_parsers_accept_valid_forms(
        v4 in any::<u32>(),
        v6 in any::<u128>(),
        user_id in uuid_text(),
        role in role_name(),
        project_ref in "[a-z]{20}",
        slug in "[a-zA-Z0-9_-]{1,64}",
    ) {
        let v4 = Ipv4Addr::from(v4);
        prop_assert_eq!(parse_remote_host("rhost", &v4.to_string()).ok(), Some(IpAddr::V4(v4)));
        let v6 = Ipv6Addr::from(v6);
        if v6.to_ipv4_mapped().is_none() {
            prop_assert_eq!(parse_remote_host("rhost", &v6.to_string()).ok(), Some(IpAddr::V6(v6)));
        }
        prop_assert_eq!(UserId::parse("user_id", &user_id).map(|id| id.as_str().to_owned()).ok(), Some(user_id.to_lowercase()));
        prop_assert!(RoleName::parse("role", &role).is_ok(), "role {:?}", role);
        prop_assert!(ProjectRef::parse("ref", &project_ref).is_ok());
        prop_assert!(OrganizationSlug::parse("slug", &slug).is_ok());
    }

    #[test]
    fn expiry_parser_never_panics(raw in hostile_expiry(), now in wide_now()) {
        let Ok(value) = from_str_unique_keys(&raw.render()) else { return Ok(()) };
        match parse_expires_at("roles[0].expires_at", &value, now) {
            Ok(seconds) => {
                prop_assert!(seconds > now.timestamp(), "{} is not after {}", seconds, now.timestamp());
                prop_assert!(seconds < MILLISECONDS_THRESHOLD);
                prop_assert!(value.is_i64() || value.is_u64() || value.is_string(), "accepted {value}");
            }
            Err(error) => {
                prop_assert_eq!(error.field.as_str(), "roles[0].expires_at");
                prop_assert!(!error.message.is_empty());
            }
        }
    }
}

proptest! {
    #![proptest_config(config(HOSTILE_CASES))]

    /// Kept apart from the no-panic properties, so a failure here leaves those running.
    #[test]
    fn update_errors_name_a_field(body in hostile_body(), now in any_now()) {
        if let Err(errors) = parse_update_body(&body, now) {
            check_fields_named(&errors)?;
        }
    }

    #[test]
    fn authorize_errors_name_a_field(body in hostile_body()) {
        if let Err(errors) = parse_authorize_body(&body) {
            check_fields_named(&errors)?;
        }
    }
}

// ---------------------------------------------------------------------------
// Properties 2 and 3: accepted bodies become spec-valid, stable upstream bodies
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(VALID_CASES))]

    #[test]
    fn valid_bodies_give_predicted_upstream(sent in update_sent()) {
        let request = parse_update_body(&update_body_bytes(&sent), sent.now)
            .map_err(|errors| TestCaseError::fail(format!("a valid body {} is rejected: {errors:?}", sent.body())))?;
        let upstream = request.to_upstream_body();
        prop_assert_eq!(&upstream, &sent.expected_upstream());
        check_upstream_facts(&upstream, sent.now)?;
    }

    #[test]
    fn normalization_is_stable(sent in update_sent()) {
        if let Ok(request) = parse_update_body(&update_body_bytes(&sent), sent.now) {
            check_stable(&request, sent.now)?;
        }
    }

    #[test]
    fn duplicate_keys_are_rejected(sent in update_sent(), pick in any::<Index>(), value in hostile_json()) {
        let mut raw = Raw::from_value(&sent.body());
        let mut target = pick.index(raw.object_count());
        let repeat = move |pairs: &mut Pairs| {
            let key = pairs[0].0.clone();
            pairs.push((key, value.clone()));
        };
        prop_assert!(raw.change_object(&mut target, &repeat));
        let Err(errors) = parse_update_body(raw.render().as_bytes(), sent.now) else {
            return Err(TestCaseError::fail(format!("a body with a repeated key is accepted: {}", raw.render())));
        };
        prop_assert_eq!(errors.len(), 1);
        prop_assert_eq!(errors[0].field.as_str(), "body");
        prop_assert!(errors[0].message.contains("duplicate key"), "{}", errors[0].message);
    }

    #[test]
    fn lookalike_keys_are_rejected(sent in update_sent(), pick in any::<Index>()) {
        let mut raw = Raw::from_value(&sent.body());
        let mut target = pick.index(raw.object_count());
        let rename = |pairs: &mut Pairs| {
            let renamed = lookalike(&pairs[0].0);
            pairs[0].0 = renamed;
        };
        prop_assert!(raw.change_object(&mut target, &rename));
        let Err(errors) = parse_update_body(raw.render().as_bytes(), sent.now) else {
            return Err(TestCaseError::fail(format!("a body with a look-alike key is accepted: {}", raw.render())));
        };
        check_rejection(&errors)?;
        prop_assert!(
            errors.iter().any(|error| error.message.contains("not a known field")),
            "no error names the look-alike key: {:?}", errors
        );
    }
}

/// Swaps the first Latin letter of `key` that has a Cyrillic twin for that twin.
fn lookalike(key: &str) -> String {
    const TWINS: &[(char, char)] = &[
        ('a', '\u{430}'),
        ('c', '\u{441}'),
        ('e', '\u{435}'),
        ('i', '\u{456}'),
        ('o', '\u{43e}'),
        ('p', '\u{440}'),
        ('s', '\u{455}'),
        ('x', '\u{445}'),
        ('y', '\u{443}'),
    ];
    let mut swapped = false;
    let text: String = key
        .chars()
        .map(|character| match TWINS.iter().find(|(latin, _)| *latin == character) {
            Some((_, twin)) if !swapped => {
                swapped = true;
                *twin
            }
            _ => character,
        })
        .collect();
    assert!(swapped, "{key} has no letter with a Cyrillic twin");
    text
}

#[test]
fn accepted_bodies_match_spec_schema() {
    let Some(schemas) = spec_schemas() else { return };
    let mut runner = TestRunner::new(config(VALID_CASES));
    let result = runner.run(&update_sent(), |sent| {
        // A property above asserts that these bodies are accepted, so this one checks only accepted ones.
        let Ok(request) = parse_update_body(&update_body_bytes(&sent), sent.now) else { return Ok(()) };
        let upstream = request.to_upstream_body();
        let stated = schema_errors(&schemas.stated, &upstream);
        prop_assert!(stated.is_empty(), "the spec's {UPDATE_SCHEMA} rejects {upstream}: {stated:#?}");
        let closed = schema_errors(&schemas.closed, &upstream);
        prop_assert!(closed.is_empty(), "{upstream} carries a field {UPDATE_SCHEMA} does not define: {closed:#?}");
        check_upstream_facts(&upstream, sent.now)
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// The converted schema is not vacuous: it rejects bodies the spec rules out.
#[test]
fn converted_schema_rejects_invalid_bodies() {
    let Some(schemas) = spec_schemas() else { return };
    let user_id = "55555555-5555-4555-8555-555555555555";
    for (body, why) in [
        (json!({ "user_id": user_id }), "roles is required"),
        (json!({ "roles": [{ "role": "a" }] }), "user_id is required"),
        (json!({ "user_id": "not-a-uuid", "roles": [{ "role": "a" }] }), "user_id has the uuid format"),
        (json!({ "user_id": user_id, "roles": [{ "role": "" }] }), "role has at least one character"),
        (json!({ "user_id": user_id, "roles": [{}] }), "role is required"),
        (
            json!({ "user_id": user_id, "roles": [{ "role": "a", "expires_at": "1800000000" }] }),
            "expires_at is a number",
        ),
        (
            json!({ "user_id": user_id, "roles": [{ "role": "a", "branches_only": "false" }] }),
            "branches_only is a boolean",
        ),
        (
            json!({ "user_id": user_id, "roles": [{ "role": "a", "allowed_networks": { "allowed_cidrs": [{}] } }] }),
            "cidr is required",
        ),
    ] {
        assert!(!schemas.stated.is_valid(&body), "the converted schema accepts {body}, but {why}");
    }
    let extra = json!({ "user_id": user_id, "user_roles": [], "roles": [{ "role": "a" }] });
    assert!(!schemas.closed.is_valid(&extra), "the closed schema accepts an undefined field");
}

// ---------------------------------------------------------------------------
// Deterministic cases at the edges the properties explore
// ---------------------------------------------------------------------------

const USER: &str = "55555555-5555-4555-8555-555555555555";

fn fixed_now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_796_385_600, 0).expect("2026-12-04T12:00:00Z")
}

fn update(body: &str) -> Result<UpdateJitAccess, Vec<FieldError>> {
    parse_update_body(body.as_bytes(), fixed_now())
}

fn one_role(entry: &str) -> String {
    format!(r#"{{"user_id":"{USER}","roles":[{entry}]}}"#)
}

#[test]
fn deep_nesting_rejected_without_overflow() {
    let depth = 100_000;
    let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let errors = parse_update_body(body.as_bytes(), fixed_now()).map(|_| ()).unwrap_err();
    assert_eq!(errors[0].field, "body");
    let body = format!(r#"{}"x"{}"#, r#"{"roles":"#.repeat(depth), "}".repeat(depth));
    assert!(parse_authorize_body(body.as_bytes()).is_err());
}

#[test]
fn role_and_cidr_count_limits() {
    let roles = |count: usize| {
        let entries: Vec<String> = (0..count).map(|index| format!(r#"{{"role":"r{index}"}}"#)).collect();
        format!(r#"{{"user_id":"{USER}","roles":[{}]}}"#, entries.join(","))
    };
    assert!(update(&roles(MAX_ROLES)).is_ok());
    assert_eq!(update(&roles(MAX_ROLES + 1)).unwrap_err()[0].field, "roles");

    let cidrs = |count: usize| {
        let entries: Vec<String> = (0..count).map(|index| format!(r#"{{"cidr":"10.0.{index}.0/24"}}"#)).collect();
        one_role(&format!(r#"{{"role":"a","allowed_networks":{{"allowed_cidrs":[{}]}}}}"#, entries.join(",")))
    };
    assert!(update(&cidrs(MAX_CIDRS)).is_ok());
    assert_eq!(update(&cidrs(MAX_CIDRS + 1)).unwrap_err()[0].field, "roles[0].allowed_networks.allowed_cidrs");
}

#[test]
fn expiry_stops_before_milliseconds() {
    let last = MILLISECONDS_THRESHOLD - 1;
    let accepted = update(&one_role(&format!(r#"{{"role":"a","expires_at":{last}}}"#))).unwrap();
    assert_eq!(accepted.to_upstream_body()["roles"][0]["expires_at"], json!(last));
    let errors = update(&one_role(&format!(r#"{{"role":"a","expires_at":{MILLISECONDS_THRESHOLD}}}"#))).unwrap_err();
    assert!(errors[0].message.contains("milliseconds"), "{errors:?}");
}

#[test]
fn float_and_huge_expiry_rejected() {
    for expires_at in ["1900000000.0", "1.9e9", "1e400", "18446744073709551616", "-9223372036854775809"] {
        let result = update(&one_role(&format!(r#"{{"role":"a","expires_at":{expires_at}}}"#)));
        assert!(result.is_err(), "expires_at {expires_at} is accepted");
    }
}

#[test]
fn lookalike_characters_rejected() {
    for entry in [
        // Fullwidth digits in an RFC 3339 time and in a CIDR.
        r#"{"role":"a","expires_at":"２０２６-12-05T12:00:00Z"}"#,
        r#"{"role":"a","allowed_networks":{"allowed_cidrs":[{"cidr":"１０.0.0.0/8"}]}}"#,
        // Cyrillic о in the key `role`.
        r#"{"rоle":"a"}"#,
    ] {
        assert!(update(&one_role(entry)).is_err(), "{entry} is accepted");
    }
    // Cyrillic а in the user id.
    let body = r#"{"user_id":"5555555а-5555-4555-8555-555555555555","roles":[{"role":"a"}]}"#;
    assert_eq!(update(body).unwrap_err()[0].field, "user_id");
}

#[test]
fn noncanonical_input_sent_canonical() {
    let body = one_role(
        r#"{"role":"a","expires_at":"2026-12-05T12:00:00.750+01:00","allowed_networks":{"allowed_cidrs_v6":[{"cidr":"2001:0DB8:0000:0000:0000:0000:0000:0000/32"}]}}"#,
    );
    let request = update(&body).unwrap();
    let upstream = request.to_upstream_body();
    assert_eq!(upstream["roles"][0]["allowed_networks"]["allowed_cidrs_v6"][0]["cidr"], "2001:db8::/32");
    assert_eq!(upstream["roles"][0]["expires_at"], json!(fixed_now().timestamp() + 23 * 3600));
    let again = parse_update_body(&serde_json::to_vec(&upstream).unwrap(), fixed_now()).unwrap();
    assert_eq!(again.to_upstream_body(), upstream);
}

/// Found by `update_errors_name_a_field`: the error path of an unknown key at the top level is the
/// key alone, so an empty key once gave an error with an empty field.
#[test]
fn empty_key_errors_name_a_field() {
    let update_errors = update(r#"{"":null}"#).unwrap_err();
    let authorize_errors = parse_authorize_body(br#"{"":1,"role":"a","rhost":"203.0.113.10"}"#).unwrap_err();
    for error in update_errors.iter().chain(&authorize_errors) {
        assert!(!error.field.is_empty(), "an error that names no field: {error:?}");
    }
}
