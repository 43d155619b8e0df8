//! Validated request values: each type can only be built from input that
//! Supabase's Management API accepts, so nothing invalid is ever sent.
//!
//! Parsers collect every [`FieldError`] of a request instead of stopping at
//! the first, so a caller can fix all fields in one round trip.

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::FieldError;

/// Maximum length of a Postgres identifier in bytes (NAMEDATALEN - 1).
const MAX_ROLE_BYTES: usize = 63;

/// Unix seconds from which a timestamp is taken for milliseconds: 10^12 seconds
/// is the year 33658, while 10^12 milliseconds is September 2001.
const MILLISECONDS_THRESHOLD: i64 = 1_000_000_000_000;

/// Maximum number of role entries in one update; Postgres users rarely hold
/// more than a handful of JIT roles, and the cap bounds the policy work.
pub const MAX_ROLES: usize = 20;

/// Maximum number of CIDRs per address family in one role entry.
pub const MAX_CIDRS: usize = 50;

/// Project ref: exactly 20 lowercase ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ProjectRef(String);

impl ProjectRef {
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
        if value.len() == 20 && value.bytes().all(|byte| byte.is_ascii_lowercase()) {
            Ok(Self(value.to_owned()))
        } else {
            Err(FieldError::new(
                field,
                format!(
                    "must be a project ref of exactly 20 lowercase letters (a-z), got {} characters; copy it from the project's URL",
                    value.chars().count()
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectRef {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Organization slug: ASCII letters, digits, `_` and `-`, as the spec's `^[\w-]+$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct OrganizationSlug(String);

impl OrganizationSlug {
    /// Maximum slug length. Supabase slugs are far shorter, and the bound keeps log lines short.
    const MAX_LENGTH: usize = 64;

    pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
        let valid_characters =
            value.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
        if !value.is_empty() && value.len() <= Self::MAX_LENGTH && valid_characters {
            Ok(Self(value.to_owned()))
        } else {
            Err(FieldError::new(
                field,
                format!(
                    "must be an organization slug of 1 to {} characters from a-z, A-Z, 0-9, '_' and '-'",
                    Self::MAX_LENGTH
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrganizationSlug {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Supabase user id: a UUID, kept in its lowercase hyphenated form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
        // Only the hyphenated 36-character form: uuid also accepts braces, URNs and
        // bare hex, which Supabase does not document for user ids.
        match uuid::Uuid::try_parse(value) {
            Ok(uuid) if value.len() == 36 => Ok(Self(uuid.hyphenated().to_string())),
            _ => Err(FieldError::new(
                field,
                "must be a user id in UUID form, such as 55555555-5555-4555-8555-555555555555",
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Postgres role name: 1 to 63 bytes with no quote, NUL or other control character.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RoleName(String);

impl RoleName {
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
        if value.is_empty() || value.len() > MAX_ROLE_BYTES {
            return Err(FieldError::new(
                field,
                format!("must be a Postgres role name of 1 to {MAX_ROLE_BYTES} bytes, got {} bytes", value.len()),
            ));
        }
        if value.chars().any(|character| character == '"' || character == '\'' || character.is_control()) {
            return Err(FieldError::new(
                field,
                "must be a Postgres role name without quotes, NUL or control characters",
            ));
        }
        if value.chars().any(is_invisible) {
            return Err(FieldError::new(
                field,
                "contains an invisible or direction-changing character; type the role name in plain text",
            ));
        }
        if value.trim() != value {
            return Err(FieldError::new(field, "must not start or end with whitespace"));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Tells whether a character is invisible or reorders text: zero-width
/// characters, bidirectional controls and the byte order mark. Postgres
/// accepts them in role names, but in an audit log or an approval they would
/// make one role look like another.
fn is_invisible(character: char) -> bool {
    matches!(character, '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// Parses a remote host: one IPv4 or IPv6 address, without prefix or zone id.
pub fn parse_remote_host(field: &str, value: &str) -> Result<IpAddr, FieldError> {
    let address: IpAddr = value.parse().map_err(|_| {
        FieldError::new(field, "must be one IPv4 or IPv6 address, such as 203.0.113.10 or 2001:db8::10")
    })?;
    if let IpAddr::V6(v6) = address
        && let Some(v4) = v6.to_ipv4_mapped()
    {
        return Err(FieldError::new(
            field,
            format!("is an IPv4-mapped IPv6 address; send the IPv4 address {v4} instead"),
        ));
    }
    Ok(address)
}

/// Parses one CIDR of the given family, rejecting host bits with the canonical network.
fn parse_cidr(field: &str, value: &str, family: Family) -> Result<IpNet, FieldError> {
    let network: IpNet = value.parse().map_err(|_| {
        let example = match family {
            Family::V4 => "203.0.113.0/24",
            Family::V6 => "2001:db8::/32",
        };
        if value.parse::<IpAddr>().is_ok() {
            FieldError::new(field, format!("is an address, not a CIDR; add the prefix length, such as {example}"))
        } else {
            FieldError::new(field, format!("must be an {} CIDR such as {example}", family.name()))
        }
    })?;

    match (family, network) {
        (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_)) => {}
        (Family::V4, IpNet::V6(_)) => {
            return Err(FieldError::new(field, "is an IPv6 CIDR; move it to allowed_cidrs_v6"));
        }
        (Family::V6, IpNet::V4(_)) => {
            return Err(FieldError::new(field, "is an IPv4 CIDR; move it to allowed_cidrs"));
        }
    }
    if let IpNet::V6(v6) = network
        && v6.addr().to_ipv4_mapped().is_some()
        && v6.prefix_len() >= 96
    {
        return Err(FieldError::new(
            field,
            "is an IPv4-mapped IPv6 range; send the IPv4 CIDR in allowed_cidrs instead",
        ));
    }
    // ipnet accepts "010.1.0.0/16" as 10.1.0.0/16, while inet_aton-style
    // parsers read a leading zero as octal; only the canonical text is accepted.
    if let IpNet::V4(v4) = network
        && v4.trunc() == v4
        && v4.to_string() != value
    {
        return Err(FieldError::new(field, format!("is not in canonical form; write it as {v4}")));
    }
    if network.trunc() != network {
        return Err(FieldError::new(
            field,
            format!("has host bits set; the network is {}", network.trunc()),
        ));
    }
    Ok(network)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// The body of authorize-jit-access after validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthorizeJitAccess {
    pub role: RoleName,
    pub rhost: IpAddr,
}

/// One role entry of update-jit-access after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleGrant {
    pub role: RoleName,
    /// Unix seconds, always in the future when validated.
    pub expires_at: Option<i64>,
    pub allowed_cidrs: Vec<Ipv4Net>,
    pub allowed_cidrs_v6: Vec<Ipv6Net>,
    /// Whether the request named any network: without one, Supabase allows every address.
    pub has_allowed_networks: bool,
    pub branches_only: Option<bool>,
}

impl RoleGrant {
    /// Networks the grant opens, each (0.0.0.0/0 and ::/0) when none is given.
    pub fn networks(&self) -> Vec<IpNet> {
        let mut networks: Vec<IpNet> = self.allowed_cidrs.iter().copied().map(IpNet::V4).collect();
        networks.extend(self.allowed_cidrs_v6.iter().copied().map(IpNet::V6));
        if networks.is_empty() {
            networks.push(IpNet::V4(Ipv4Net::default()));
            networks.push(IpNet::V6(Ipv6Net::default()));
        }
        networks
    }
}

/// The body of update-jit-access after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateJitAccess {
    pub user_id: UserId,
    pub roles: Vec<RoleGrant>,
}

impl RoleGrant {
    /// Builds the role entry in the spec's shape: `{role, expires_at?, allowed_networks?, branches_only?}`.
    pub fn to_entry(&self) -> Value {
        let mut entry = Map::new();
        entry.insert("role".into(), Value::from(self.role.as_str()));
        if let Some(expires_at) = self.expires_at {
            entry.insert("expires_at".into(), Value::from(expires_at));
        }
        if self.has_allowed_networks {
            let mut networks = Map::new();
            if !self.allowed_cidrs.is_empty() {
                let cidrs = self.allowed_cidrs.iter().map(|cidr| serde_json::json!({ "cidr": cidr.to_string() }));
                networks.insert("allowed_cidrs".into(), Value::Array(cidrs.collect()));
            }
            if !self.allowed_cidrs_v6.is_empty() {
                let cidrs = self.allowed_cidrs_v6.iter().map(|cidr| serde_json::json!({ "cidr": cidr.to_string() }));
                networks.insert("allowed_cidrs_v6".into(), Value::Array(cidrs.collect()));
            }
            entry.insert("allowed_networks".into(), Value::Object(networks));
        }
        if let Some(branches_only) = self.branches_only {
            entry.insert("branches_only".into(), Value::Bool(branches_only));
        }
        Value::Object(entry)
    }

    /// Reads a role entry Supabase returned. Leniently: unknown fields are
    /// ignored and a past expiry is kept, because the entry already exists.
    /// Returns `None` when the role or a network cannot be read, since such an
    /// entry cannot be decided and so cannot be carried into a new write.
    pub fn from_mapping(entry: &Value) -> Option<RoleGrant> {
        let role = RoleName::parse("role", entry.get("role")?.as_str()?).ok()?;
        let expires_at = match entry.get("expires_at") {
            None | Some(Value::Null) => None,
            Some(value) => Some(value.as_i64().or_else(|| value.as_f64().map(|seconds| seconds as i64))?),
        };
        let networks = entry.get("allowed_networks").filter(|networks| !networks.is_null());
        let read = |key: &str| -> Option<Vec<IpNet>> {
            match networks.and_then(|networks| networks.get(key)) {
                None | Some(Value::Null) => Some(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| item.get("cidr")?.as_str()?.parse::<IpNet>().ok().map(|network| network.trunc()))
                    .collect(),
                Some(_) => None,
            }
        };
        let mut allowed_cidrs = Vec::new();
        let mut allowed_cidrs_v6 = Vec::new();
        for network in read("allowed_cidrs")?.into_iter().chain(read("allowed_cidrs_v6")?) {
            match network {
                IpNet::V4(v4) => allowed_cidrs.push(v4),
                IpNet::V6(v6) => allowed_cidrs_v6.push(v6),
            }
        }
        let has_allowed_networks = !allowed_cidrs.is_empty() || !allowed_cidrs_v6.is_empty();
        let branches_only = entry.get("branches_only").and_then(Value::as_bool);
        Some(RoleGrant { role, expires_at, allowed_cidrs, allowed_cidrs_v6, has_allowed_networks, branches_only })
    }
}

impl UpdateJitAccess {
    /// Builds the upstream body in the spec's `UpdateJitAccessBody` shape.
    pub fn to_upstream_body(&self) -> Value {
        let roles: Vec<Value> = self.roles.iter().map(RoleGrant::to_entry).collect();
        serde_json::json!({ "user_id": self.user_id.as_str(), "roles": roles })
    }
}

/// The body of grant-jit-access after validation: one role entry for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantJitAccess {
    pub user_id: UserId,
    pub grant: RoleGrant,
}

/// Validates the body of grant-jit-access: `user_id` plus the fields of one role entry.
pub fn parse_grant_body(body: &[u8], now: DateTime<Utc>) -> Result<GrantJitAccess, Vec<FieldError>> {
    let mut object = parse_json_object(body).map_err(|error| vec![error])?;
    let mut errors = Vec::new();
    let user_id = required_string(&object, "user_id", "user_id", &mut errors)
        .and_then(|text| UserId::parse("user_id", text).map_err(|error| errors.push(error)).ok());
    object.remove("user_id");
    let known = ["user_id", "role", "expires_at", "allowed_networks", "branches_only"];
    for key in object.keys() {
        if !known.contains(&key.as_str()) {
            errors.push(FieldError::new(
                join_path("", key),
                format!("is not a known field; the accepted fields are {}", known.join(", ")),
            ));
        }
    }
    object.retain(|key, _| known.contains(&key.as_str()));
    let grant = parse_role_grant(&Value::Object(object), "", now, &mut errors);

    match (user_id, grant) {
        (Some(user_id), Some(grant)) if errors.is_empty() => Ok(GrantJitAccess { user_id, grant }),
        _ => Err(errors),
    }
}

/// Parses a JSON request body into an object, or reports why it is not one.
pub fn parse_json_object(body: &[u8]) -> Result<Map<String, Value>, FieldError> {
    if body.is_empty() {
        return Err(FieldError::new("body", "is empty; send a JSON object"));
    }
    let text = std::str::from_utf8(body).map_err(|_| FieldError::new("body", "is not valid UTF-8"))?;
    let value: Value = crate::json::from_str_unique_keys(text)
        .map_err(|error| FieldError::new("body", format!("is not valid JSON: {error}")))?;
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(FieldError::new("body", "must be a JSON object")),
    }
}

/// Reports every key of `object` that is not in `known`.
fn reject_unknown_keys(object: &Map<String, Value>, known: &[&str], prefix: &str, errors: &mut Vec<FieldError>) {
    for key in object.keys() {
        if !known.contains(&key.as_str()) {
            errors.push(FieldError::new(
                join_path(prefix, key),
                format!("is not a known field; the accepted fields are {}", known.join(", ")),
            ));
        }
    }
}

/// Builds a field path; an empty key is written `""` so the path still names it.
fn join_path(prefix: &str, key: &str) -> String {
    let key = if key.is_empty() { "\"\"" } else { key };
    if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") }
}

fn required_string<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<&'a str> {
    match object.get(key) {
        Some(Value::String(text)) => Some(text),
        Some(_) => {
            errors.push(FieldError::new(path, "must be a string"));
            None
        }
        None => {
            errors.push(FieldError::new(path, "is missing"));
            None
        }
    }
}

/// Validates the body of authorize-jit-access: `{role, rhost}`.
pub fn parse_authorize_body(body: &[u8]) -> Result<AuthorizeJitAccess, Vec<FieldError>> {
    let object = parse_json_object(body).map_err(|error| vec![error])?;
    let mut errors = Vec::new();
    reject_unknown_keys(&object, &["role", "rhost"], "", &mut errors);

    let role = required_string(&object, "role", "role", &mut errors)
        .and_then(|text| RoleName::parse("role", text).map_err(|error| errors.push(error)).ok());
    let rhost = required_string(&object, "rhost", "rhost", &mut errors)
        .and_then(|text| parse_remote_host("rhost", text).map_err(|error| errors.push(error)).ok());

    match (role, rhost) {
        (Some(role), Some(rhost)) if errors.is_empty() => Ok(AuthorizeJitAccess { role, rhost }),
        _ => Err(errors),
    }
}

/// Validates the body of update-jit-access against `now`.
pub fn parse_update_body(body: &[u8], now: DateTime<Utc>) -> Result<UpdateJitAccess, Vec<FieldError>> {
    let object = parse_json_object(body).map_err(|error| vec![error])?;
    let mut errors = Vec::new();
    if object.contains_key("user_roles") {
        errors.push(FieldError::new(
            "user_roles",
            "is the response field name; send the role list as `roles`",
        ));
    }
    let known = ["user_id", "roles"];
    for key in object.keys().filter(|key| key.as_str() != "user_roles") {
        if !known.contains(&key.as_str()) {
            errors.push(FieldError::new(
                join_path("", key),
                format!("is not a known field; the accepted fields are {}", known.join(", ")),
            ));
        }
    }

    let user_id = required_string(&object, "user_id", "user_id", &mut errors)
        .and_then(|text| UserId::parse("user_id", text).map_err(|error| errors.push(error)).ok());

    let mut roles = Vec::new();
    match object.get("roles") {
        None => errors.push(FieldError::new("roles", "is missing; send at least one role entry")),
        Some(Value::Array(entries)) if entries.is_empty() => errors.push(FieldError::new(
            "roles",
            "must contain at least one role entry; to remove every role, use revoke-jit-access",
        )),
        Some(Value::Array(entries)) if entries.len() > MAX_ROLES => errors.push(FieldError::new(
            "roles",
            format!("has {} entries; send at most {MAX_ROLES}", entries.len()),
        )),
        Some(Value::Array(entries)) => {
            for (index, entry) in entries.iter().enumerate() {
                if let Some(grant) = parse_role_grant(entry, &format!("roles[{index}]"), now, &mut errors) {
                    roles.push(grant);
                }
            }
            let mut seen = std::collections::HashSet::new();
            for (index, grant) in roles.iter().enumerate() {
                if !seen.insert(grant.role.as_str()) {
                    errors.push(FieldError::new(
                        format!("roles[{index}].role"),
                        format!("repeats the role {}; list each role once", grant.role),
                    ));
                }
            }
        }
        Some(_) => errors.push(FieldError::new("roles", "must be an array of role entries")),
    }

    match user_id {
        Some(user_id) if errors.is_empty() => Ok(UpdateJitAccess { user_id, roles }),
        _ => Err(errors),
    }
}

fn parse_role_grant(entry: &Value, path: &str, now: DateTime<Utc>, errors: &mut Vec<FieldError>) -> Option<RoleGrant> {
    let Value::Object(object) = entry else {
        errors.push(FieldError::new(path, "must be an object with at least `role`"));
        return None;
    };
    let errors_before = errors.len();
    reject_unknown_keys(object, &["role", "expires_at", "allowed_networks", "branches_only"], path, errors);

    let role_path = join_path(path, "role");
    let role = required_string(object, "role", &role_path, errors)
        .and_then(|text| RoleName::parse(&role_path, text).map_err(|error| errors.push(error)).ok());

    let expires_path = join_path(path, "expires_at");
    let expires_at = match object.get("expires_at") {
        None | Some(Value::Null) => None,
        Some(value) => parse_expires_at(&expires_path, value, now).map_err(|error| errors.push(error)).ok(),
    };

    let branches_only = match object.get("branches_only") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(flag)) => Some(*flag),
        Some(_) => {
            errors.push(FieldError::new(join_path(path, "branches_only"), "must be true or false"));
            None
        }
    };

    let networks_path = join_path(path, "allowed_networks");
    let mut allowed_cidrs = Vec::new();
    let mut allowed_cidrs_v6 = Vec::new();
    let mut has_allowed_networks = false;
    match object.get("allowed_networks") {
        None | Some(Value::Null) => {}
        Some(Value::Object(networks)) => {
            reject_unknown_keys(networks, &["allowed_cidrs", "allowed_cidrs_v6"], &networks_path, errors);
            allowed_cidrs = parse_cidr_list(networks, "allowed_cidrs", &networks_path, Family::V4, errors)
                .into_iter()
                .filter_map(|network| match network {
                    IpNet::V4(v4) => Some(v4),
                    IpNet::V6(_) => None,
                })
                .collect();
            allowed_cidrs_v6 = parse_cidr_list(networks, "allowed_cidrs_v6", &networks_path, Family::V6, errors)
                .into_iter()
                .filter_map(|network| match network {
                    IpNet::V6(v6) => Some(v6),
                    IpNet::V4(_) => None,
                })
                .collect();
            has_allowed_networks = !allowed_cidrs.is_empty() || !allowed_cidrs_v6.is_empty();
        }
        Some(_) => errors.push(FieldError::new(
            networks_path,
            "must be an object with allowed_cidrs and/or allowed_cidrs_v6",
        )),
    }

    if errors.len() != errors_before {
        return None;
    }
    Some(RoleGrant { role: role?, expires_at, allowed_cidrs, allowed_cidrs_v6, has_allowed_networks, branches_only })
}

fn parse_cidr_list(
    networks: &Map<String, Value>,
    key: &str,
    prefix: &str,
    family: Family,
    errors: &mut Vec<FieldError>,
) -> Vec<IpNet> {
    let path = join_path(prefix, key);
    let entries = match networks.get(key) {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(entries)) => entries,
        Some(_) => {
            errors.push(FieldError::new(path, "must be an array of {\"cidr\": \"...\"} objects"));
            return Vec::new();
        }
    };
    if entries.len() > MAX_CIDRS {
        errors.push(FieldError::new(path, format!("has {} entries; send at most {MAX_CIDRS}", entries.len())));
        return Vec::new();
    }

    let mut parsed = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let entry_path = format!("{path}[{index}]");
        let Value::Object(object) = entry else {
            errors.push(FieldError::new(entry_path, "must be an object {\"cidr\": \"...\"}"));
            continue;
        };
        reject_unknown_keys(object, &["cidr"], &entry_path, errors);
        let cidr_path = join_path(&entry_path, "cidr");
        if let Some(text) = required_string(object, "cidr", &cidr_path, errors) {
            match parse_cidr(&cidr_path, text, family) {
                Ok(network) if parsed.contains(&network) => {
                    errors.push(FieldError::new(cidr_path, format!("repeats {network}; list each network once")));
                }
                Ok(network) => parsed.push(network),
                Err(error) => errors.push(error),
            }
        }
    }
    parsed
}

/// Parses `expires_at`: whole Unix seconds or an RFC 3339 string, in the future.
pub fn parse_expires_at(field: &str, value: &Value, now: DateTime<Utc>) -> Result<i64, FieldError> {
    let seconds = match value {
        Value::Number(number) => match number.as_i64() {
            Some(seconds) => seconds,
            None if number.is_f64() => {
                return Err(FieldError::new(field, "must be whole Unix seconds, without a fraction"));
            }
            None => return Err(FieldError::new(field, "is out of range; send Unix seconds")),
        },
        Value::String(text) => DateTime::parse_from_rfc3339(text)
            .map(|time| time.timestamp())
            .map_err(|_| {
                FieldError::new(field, "must be Unix seconds or an RFC 3339 time such as 2026-01-31T18:00:00Z")
            })?,
        _ => {
            return Err(FieldError::new(field, "must be Unix seconds (a number) or an RFC 3339 string"));
        }
    };

    if seconds >= MILLISECONDS_THRESHOLD {
        return Err(FieldError::new(
            field,
            format!("{seconds} looks like milliseconds; send Unix seconds ({})", seconds / 1000),
        ));
    }
    if seconds <= now.timestamp() {
        return Err(FieldError::new(
            field,
            format!("must be in the future; it is {seconds} and now is {}", now.timestamp()),
        ));
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).unwrap()
    }

    fn update(body: &str) -> Result<UpdateJitAccess, Vec<FieldError>> {
        parse_update_body(body.as_bytes(), now())
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|error| error.field.as_str()).collect()
    }

    const USER: &str = "55555555-5555-4555-8555-555555555555";

    #[test]
    fn project_ref_needs_twenty_letters() {
        assert!(ProjectRef::parse("ref", "abcdefghijklmnopqrst").is_ok());
        assert!(ProjectRef::parse("ref", "abcdefghijklmnopqrs").is_err());
        assert!(ProjectRef::parse("ref", "Abcdefghijklmnopqrst").is_err());
        assert!(ProjectRef::parse("ref", "abcdefghijklmnopqrs1").is_err());
        assert!(ProjectRef::parse("ref", "..%2f..%2fabcdefghij").is_err());
    }

    #[test]
    fn slug_rejects_path_characters() {
        assert!(OrganizationSlug::parse("slug", "acme-corp_1").is_ok());
        assert!(OrganizationSlug::parse("slug", "acme/corp").is_err());
        assert!(OrganizationSlug::parse("slug", "").is_err());
        assert!(OrganizationSlug::parse("slug", "acmé").is_err());
    }

    #[test]
    fn user_id_needs_hyphenated_uuid() {
        assert_eq!(UserId::parse("user_id", &USER.to_uppercase()).unwrap().as_str(), USER);
        assert!(UserId::parse("user_id", "55555555555545558555555555555555").is_err());
        assert!(UserId::parse("user_id", "not-a-uuid").is_err());
    }

    #[test]
    fn role_name_limits() {
        assert!(RoleName::parse("role", "supabase_read_only_user").is_ok());
        assert!(RoleName::parse("role", &"r".repeat(63)).is_ok());
        assert!(RoleName::parse("role", &"r".repeat(64)).is_err());
        assert!(RoleName::parse("role", "").is_err());
        assert!(RoleName::parse("role", "bad\"role").is_err());
        assert!(RoleName::parse("role", "bad\0role").is_err());
        assert!(RoleName::parse("role", " padded").is_err());
        assert!(RoleName::parse("role", "postgres\u{200b}").is_err());
        assert!(RoleName::parse("role", "jit\u{202e}readonly").is_err());
        assert!(RoleName::parse("role", "\u{feff}jit_readonly").is_err());
    }

    #[test]
    fn remote_host_rejects_mapped_and_zones() {
        assert!(parse_remote_host("rhost", "203.0.113.10").is_ok());
        assert!(parse_remote_host("rhost", "2001:db8::10").is_ok());
        assert!(parse_remote_host("rhost", "fe80::1%eth0").is_err());
        assert!(parse_remote_host("rhost", "203.0.113.0/24").is_err());
        let mapped = parse_remote_host("rhost", "::ffff:203.0.113.10").unwrap_err();
        assert!(mapped.message.contains("203.0.113.10"));
    }

    #[test]
    fn update_accepts_full_entry() {
        let body = format!(
            r#"{{"user_id":"{USER}","roles":[{{"role":"jit_readonly","expires_at":{},
            "allowed_networks":{{"allowed_cidrs":[{{"cidr":"10.1.0.0/16"}}],"allowed_cidrs_v6":[{{"cidr":"2001:DB8::/32"}}]}},
            "branches_only":false}}]}}"#,
            now().timestamp() + 3600
        );
        let request = update(&body).unwrap();
        let upstream = request.to_upstream_body();
        assert_eq!(upstream["roles"][0]["expires_at"], now().timestamp() + 3600);
        assert_eq!(upstream["roles"][0]["allowed_networks"]["allowed_cidrs_v6"][0]["cidr"], "2001:db8::/32");
        assert_eq!(upstream["roles"][0]["branches_only"], false);
        assert!(upstream.get("user_roles").is_none());
    }

    #[test]
    fn update_rejects_user_roles_field() {
        let errors = update(&format!(r#"{{"user_id":"{USER}","user_roles":[{{"role":"a"}}]}}"#)).unwrap_err();
        assert_eq!(fields(&errors), vec!["user_roles", "roles"]);
    }

    #[test]
    fn update_converts_rfc3339_expiry() {
        let body = format!(r#"{{"user_id":"{USER}","roles":[{{"role":"a","expires_at":"2026-12-04T13:00:00Z"}}]}}"#);
        assert_eq!(update(&body).unwrap().roles[0].expires_at, Some(now().timestamp() + 3600));
    }

    #[test]
    fn update_rejects_millisecond_expiry() {
        let millis = (now().timestamp() + 3600) * 1000;
        let body = format!(r#"{{"user_id":"{USER}","roles":[{{"role":"a","expires_at":{millis}}}]}}"#);
        let errors = update(&body).unwrap_err();
        assert_eq!(fields(&errors), vec!["roles[0].expires_at"]);
        assert!(errors[0].message.contains("milliseconds"));
    }

    #[test]
    fn update_rejects_past_and_fractional_expiry() {
        for expires_at in ["1", "-5", "1.5", "\"tomorrow\"", "true"] {
            let body = format!(r#"{{"user_id":"{USER}","roles":[{{"role":"a","expires_at":{expires_at}}}]}}"#);
            let errors = update(&body).unwrap_err();
            assert_eq!(fields(&errors), vec!["roles[0].expires_at"], "expires_at {expires_at}");
        }
    }

    #[test]
    fn cidr_host_bits_show_network() {
        let body = format!(
            r#"{{"user_id":"{USER}","roles":[{{"role":"a","allowed_networks":{{"allowed_cidrs":[{{"cidr":"10.1.2.3/16"}}]}}}}]}}"#
        );
        let errors = update(&body).unwrap_err();
        assert_eq!(fields(&errors), vec!["roles[0].allowed_networks.allowed_cidrs[0].cidr"]);
        assert!(errors[0].message.contains("10.1.0.0/16"));
    }

    #[test]
    fn cidr_leading_zeros_rejected() {
        for cidr in ["010.1.0.0/16", "10.1.0.0/016", "10.01.0.0/16"] {
            let body = format!(
                r#"{{"user_id":"{USER}","roles":[{{"role":"a","allowed_networks":{{"allowed_cidrs":[{{"cidr":"{cidr}"}}]}}}}]}}"#
            );
            let errors = update(&body).unwrap_err();
            assert_eq!(fields(&errors), vec!["roles[0].allowed_networks.allowed_cidrs[0].cidr"], "cidr {cidr}");
        }
    }

    #[test]
    fn cidr_family_must_match_list() {
        let body = format!(
            r#"{{"user_id":"{USER}","roles":[{{"role":"a","allowed_networks":{{"allowed_cidrs":[{{"cidr":"2001:db8::/32"}}],"allowed_cidrs_v6":[{{"cidr":"10.0.0.0/8"}}]}}}}]}}"#
        );
        let errors = update(&body).unwrap_err();
        assert!(errors[0].message.contains("allowed_cidrs_v6"));
        assert!(errors[1].message.contains("allowed_cidrs"));
    }

    #[test]
    fn update_rejects_duplicate_roles() {
        let body = format!(r#"{{"user_id":"{USER}","roles":[{{"role":"a"}},{{"role":"b"}},{{"role":"a"}}]}}"#);
        assert_eq!(fields(&update(&body).unwrap_err()), vec!["roles[2].role"]);
    }

    #[test]
    fn update_collects_every_error() {
        let body = r#"{"user_id":"x","roles":[{"role":"","extra":1}],"note":"hi"}"#;
        let errors = update(body).unwrap_err();
        let mut names = fields(&errors);
        names.sort_unstable();
        assert_eq!(names, vec!["note", "roles[0].extra", "roles[0].role", "user_id"]);
    }

    #[test]
    fn grant_body_names_entry_fields() {
        let expires_at = now().timestamp() + 3600;
        let body = format!(r#"{{"user_id":"{USER}","role":"jit_readonly","expires_at":{expires_at}}}"#);
        let grant = parse_grant_body(body.as_bytes(), now()).unwrap();
        assert_eq!(grant.grant.to_entry(), serde_json::json!({"role": "jit_readonly", "expires_at": expires_at}));

        let errors = parse_grant_body(br#"{"user_id":"x","expires_at":"soon","roles":[]}"#, now()).unwrap_err();
        let mut names = fields(&errors);
        names.sort_unstable();
        assert_eq!(names, vec!["expires_at", "role", "roles", "user_id"]);
    }

    #[test]
    fn mapping_keeps_past_expiry_and_networks() {
        let entry = serde_json::json!({
            "role": "jit_readonly", "expires_at": 1000, "extra": true,
            "allowed_networks": { "allowed_cidrs": [{ "cidr": "10.0.0.0/8" }], "allowed_cidrs_v6": null },
        });
        let grant = RoleGrant::from_mapping(&entry).unwrap();
        assert_eq!(grant.expires_at, Some(1000));
        assert_eq!(grant.allowed_cidrs.len(), 1);
        assert!(RoleGrant::from_mapping(&serde_json::json!({"role": 5})).is_none());
        let broken = serde_json::json!({"role": "a", "allowed_networks": {"allowed_cidrs": [{"cidr": "nope"}]}});
        assert!(RoleGrant::from_mapping(&broken).is_none());
    }

    #[test]
    fn entry_without_networks_opens_everything() {
        let body = format!(r#"{{"user_id":"{USER}","roles":[{{"role":"a"}}]}}"#);
        let networks = update(&body).unwrap().roles[0].networks();
        let rendered: Vec<String> = networks.iter().map(ToString::to_string).collect();
        assert_eq!(rendered, vec!["0.0.0.0/0", "::/0"]);
    }
}
