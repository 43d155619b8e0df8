//! Configuration, read once from the environment at init.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `SUPABASE_API_URL` | base URL of the Management API; `http` only for loopback hosts | `https://api.supabase.com` |
//! | `SUPABASE_TOKEN_SECRET_ID` | Secrets Manager secret ARN or name holding the token | none |
//! | `SUPABASE_TOKEN_TTL_SECONDS` | seconds before the token secret is read again; a failed read keeps the cached token | 900 |
//! | `SUPABASE_ACCESS_TOKEN` | the token itself, for local runs, used only without a secret id | none |
//! | `SUPABASE_CONNECT_TIMEOUT_MS` | connect timeout to Supabase, milliseconds | 3000 |
//! | `SUPABASE_TIMEOUT_MS` | total timeout of one Supabase call, milliseconds | 10000 |
//! | `SUPABASE_MAX_RETRIES` | retries of a Supabase call after 5xx, connection errors or 429, 0 to 5 | 2 |
//! | `JIT_GUARD_FACTS_TTL_SECONDS` | seconds a looked-up project or member list is reused; 0 turns the cache off | 30 |
//! | `PERSONA_SIGNING_SECRET_ID` | secret holding Persona's signing secret; when set, every request must carry a valid `Persona-Signature` | none |
//! | `PERSONA_SIGNATURE_TOLERANCE_SECONDS` | maximum age of a signature's timestamp, either way | 300 |
//! | `JIT_GUARD_SETTLE_MS` | wait before a grant or role revocation reads its write back to catch a concurrent write, milliseconds | 200 |
//! | `JIT_GUARD_SWEEP_MODE` | `report` records what the sweep finds; `remove` also removes it | `report` |
//! | `JIT_GUARD_POLICY_DIR` | folder with `schema.cedarschema` and `policies.cedar` replacing the compiled-in defaults | none |

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::sweep::SweepMode;
use crate::token::AccessToken;

const DEFAULT_API_URL: &str = "https://api.supabase.com";
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 3_000;
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_FACTS_TTL_SECONDS: u64 = 30;
const DEFAULT_MAX_RETRIES: u32 = 2;
/// A Supabase write usually completes well within this, so a concurrent write shows up by the read-back.
const DEFAULT_SETTLE_MS: u64 = 200;
/// Five minutes: room for clock skew and a retry, short enough to limit replays.
const DEFAULT_SIGNATURE_TOLERANCE_SECONDS: u64 = 300;
/// Rotation is also caught by the re-read after a 401; the TTL bounds how long a revoked token is used.
const DEFAULT_TOKEN_TTL_SECONDS: u64 = 900;
/// More retries than this would spend a Lambda's whole time budget on one failing call.
const MAX_RETRIES: u32 = 5;
/// A project's status or a member's MFA can change; an hour bounds how stale a decision's facts get.
const MAX_FACTS_TTL_SECONDS: u64 = 3_600;
/// Upper bound of both timeouts: API Gateway stops waiting for a Lambda after 29 seconds.
const MAX_TIMEOUT_MS: u64 = 29_000;

/// A setting that is missing or malformed, with the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl ConfigError {
    fn new(variable: &'static str, message: impl Into<String>) -> Self {
        Self { variable, message: message.into() }
    }
}

/// Source of the Supabase access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    SecretsManager { secret_id: String },
    /// `SUPABASE_ACCESS_TOKEN`, for local runs only.
    Environment(AccessToken),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub supabase_api_url: Url,
    pub token_source: TokenSource,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub policy_dir: Option<PathBuf>,
    pub facts_ttl: Duration,
    pub max_retries: u32,
    pub token_ttl: Duration,
    /// Secret id of Persona's signing secret; `None` turns signature checks off.
    pub signing_secret_id: Option<String>,
    pub signature_tolerance: Duration,
    pub sweep_mode: SweepMode,
    pub settle: Duration,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, which returns a variable's value.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let non_empty = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());

        let supabase_api_url = parse_api_url(non_empty("SUPABASE_API_URL").as_deref().unwrap_or(DEFAULT_API_URL))?;

        let token_source = match (non_empty("SUPABASE_TOKEN_SECRET_ID"), non_empty("SUPABASE_ACCESS_TOKEN")) {
            (Some(secret_id), _) => {
                TokenSource::SecretsManager { secret_id: parse_secret_id("SUPABASE_TOKEN_SECRET_ID", &secret_id)? }
            }
            (None, Some(token)) => TokenSource::Environment(AccessToken::parse(token.trim()).ok_or_else(|| {
                ConfigError::new("SUPABASE_ACCESS_TOKEN", "contains whitespace or control characters; set the bare token")
            })?),
            (None, None) => {
                return Err(ConfigError::new(
                    "SUPABASE_TOKEN_SECRET_ID",
                    "is not set; set it to the ARN or name of the Secrets Manager secret holding the Supabase access token (or, for local runs only, set SUPABASE_ACCESS_TOKEN)",
                ));
            }
        };

        let connect_timeout = parse_millis(&lookup, "SUPABASE_CONNECT_TIMEOUT_MS", DEFAULT_CONNECT_TIMEOUT_MS)?;
        let request_timeout = parse_millis(&lookup, "SUPABASE_TIMEOUT_MS", DEFAULT_TIMEOUT_MS)?;
        let policy_dir = non_empty("JIT_GUARD_POLICY_DIR").map(PathBuf::from);
        let facts_ttl = parse_facts_ttl(non_empty("JIT_GUARD_FACTS_TTL_SECONDS"))?;
        let max_retries = match non_empty("SUPABASE_MAX_RETRIES") {
            None => DEFAULT_MAX_RETRIES,
            Some(value) => value.trim().parse::<u32>().ok().filter(|retries| *retries <= MAX_RETRIES).ok_or_else(|| {
                ConfigError::new("SUPABASE_MAX_RETRIES", format!("{value:?} is not a whole number from 0 to {MAX_RETRIES}"))
            })?,
        };

        let token_ttl = match non_empty("SUPABASE_TOKEN_TTL_SECONDS") {
            None => Duration::from_secs(DEFAULT_TOKEN_TTL_SECONDS),
            Some(value) => value.trim().parse::<u64>().ok().filter(|seconds| (1..=86_400).contains(seconds)).map(Duration::from_secs).ok_or_else(|| {
                ConfigError::new("SUPABASE_TOKEN_TTL_SECONDS", format!("{value:?} is not a whole number of seconds from 1 to 86400"))
            })?,
        };

        let signing_secret_id = match non_empty("PERSONA_SIGNING_SECRET_ID") {
            Some(secret_id) => Some(parse_secret_id("PERSONA_SIGNING_SECRET_ID", &secret_id)?),
            None => None,
        };
        let signature_tolerance = match non_empty("PERSONA_SIGNATURE_TOLERANCE_SECONDS") {
            None => Duration::from_secs(DEFAULT_SIGNATURE_TOLERANCE_SECONDS),
            Some(value) => value.trim().parse::<u64>().ok().filter(|seconds| (1..=3_600).contains(seconds)).map(Duration::from_secs).ok_or_else(|| {
                ConfigError::new("PERSONA_SIGNATURE_TOLERANCE_SECONDS", format!("{value:?} is not a whole number of seconds from 1 to 3600"))
            })?,
        };

        let sweep_mode = match non_empty("JIT_GUARD_SWEEP_MODE").as_deref().map(str::trim) {
            None | Some("report") => SweepMode::Report,
            Some("remove") => SweepMode::Remove,
            Some(other) => {
                return Err(ConfigError::new("JIT_GUARD_SWEEP_MODE", format!("{other:?} is not report or remove")));
            }
        };

        let settle = match non_empty("JIT_GUARD_SETTLE_MS") {
            None => Duration::from_millis(DEFAULT_SETTLE_MS),
            Some(value) => value.trim().parse::<u64>().ok().filter(|millis| *millis <= 5_000).map(Duration::from_millis).ok_or_else(|| {
                ConfigError::new("JIT_GUARD_SETTLE_MS", format!("{value:?} is not a whole number of milliseconds from 0 to 5000"))
            })?,
        };

        Ok(Self {
            settle,
            sweep_mode,
            signing_secret_id,
            signature_tolerance,
            supabase_api_url,
            token_source,
            connect_timeout,
            request_timeout,
            policy_dir,
            facts_ttl,
            max_retries,
            token_ttl,
        })
    }
}

fn parse_api_url(value: &str) -> Result<Url, ConfigError> {
    let variable = "SUPABASE_API_URL";
    let url = Url::parse(value.trim())
        .map_err(|_| ConfigError::new(variable, format!("{value:?} is not a URL; set it such as {DEFAULT_API_URL}")))?;
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(variable, "must not contain credentials, a query or a fragment; set the base URL only"));
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(address)) => IpAddr::V4(address).is_loopback(),
        Some(url::Host::Ipv6(address)) => IpAddr::V6(address).is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        // Plain HTTP would send the token in clear text, so it is limited to local stand-ins.
        "http" if loopback => Ok(url),
        "http" => Err(ConfigError::new(variable, "must use https; plain http is allowed only for localhost and loopback addresses")),
        scheme => Err(ConfigError::new(variable, format!("has scheme {scheme:?}; use https"))),
    }
}

fn parse_secret_id(variable: &'static str, value: &str) -> Result<String, ConfigError> {
    let value = value.trim();
    // Secret names use letters, digits and /_+=.@-; ARNs add ':'. The limit is Secrets Manager's.
    let valid = value.len() <= 2048
        && value.chars().all(|character| character.is_ascii_alphanumeric() || "/_+=.@-:".contains(character));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(ConfigError::new(variable, "must be a secret ARN or name of at most 2048 characters from letters, digits and /_+=.@-:"))
    }
}

fn parse_facts_ttl(value: Option<String>) -> Result<Duration, ConfigError> {
    let Some(value) = value else {
        return Ok(Duration::from_secs(DEFAULT_FACTS_TTL_SECONDS));
    };
    match value.trim().parse::<u64>() {
        Ok(seconds) if seconds <= MAX_FACTS_TTL_SECONDS => Ok(Duration::from_secs(seconds)),
        _ => Err(ConfigError::new(
            "JIT_GUARD_FACTS_TTL_SECONDS",
            format!("{value:?} is not a whole number of seconds from 0 to {MAX_FACTS_TTL_SECONDS}"),
        )),
    }
}

fn parse_millis(lookup: &impl Fn(&str) -> Option<String>, variable: &'static str, default: u64) -> Result<Duration, ConfigError> {
    let Some(value) = lookup(variable).filter(|value| !value.trim().is_empty()) else {
        return Ok(Duration::from_millis(default));
    };
    match value.trim().parse::<u64>() {
        Ok(millis) if (1..=MAX_TIMEOUT_MS).contains(&millis) => Ok(Duration::from_millis(millis)),
        _ => Err(ConfigError::new(
            variable,
            format!("{value:?} is not a whole number of milliseconds from 1 to {MAX_TIMEOUT_MS}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn secret_id_wins_over_environment_token() {
        let config = config(&[("SUPABASE_TOKEN_SECRET_ID", "jit/supabase"), ("SUPABASE_ACCESS_TOKEN", "sbp_x")]).unwrap();
        assert_eq!(config.token_source, TokenSource::SecretsManager { secret_id: "jit/supabase".into() });
        assert_eq!(config.supabase_api_url.as_str(), "https://api.supabase.com/");
        assert_eq!(config.request_timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS));
    }

    #[test]
    fn missing_token_names_variable() {
        let error = config(&[]).unwrap_err();
        assert_eq!(error.variable, "SUPABASE_TOKEN_SECRET_ID");
        assert!(error.message.contains("SUPABASE_ACCESS_TOKEN"));
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let token = ("SUPABASE_ACCESS_TOKEN", "sbp_x");
        assert!(config(&[token, ("SUPABASE_API_URL", "http://127.0.0.1:8787")]).is_ok());
        assert!(config(&[token, ("SUPABASE_API_URL", "http://localhost:8787")]).is_ok());
        assert!(config(&[token, ("SUPABASE_API_URL", "http://[::1]:8787")]).is_ok());
        let error = config(&[token, ("SUPABASE_API_URL", "http://api.supabase.com")]).unwrap_err();
        assert_eq!(error.variable, "SUPABASE_API_URL");
        assert!(config(&[token, ("SUPABASE_API_URL", "ftp://x")]).is_err());
        assert!(config(&[token, ("SUPABASE_API_URL", "https://user:pw@x")]).is_err());
    }

    #[test]
    fn malformed_timeout_names_variable() {
        let error = config(&[("SUPABASE_ACCESS_TOKEN", "sbp_x"), ("SUPABASE_TIMEOUT_MS", "10s")]).unwrap_err();
        assert_eq!(error.variable, "SUPABASE_TIMEOUT_MS");
        assert!(config(&[("SUPABASE_ACCESS_TOKEN", "sbp_x"), ("SUPABASE_TIMEOUT_MS", "0")]).is_err());
    }

    #[test]
    fn malformed_secret_id_rejected() {
        let error = config(&[("SUPABASE_TOKEN_SECRET_ID", "bad id with spaces")]).unwrap_err();
        assert_eq!(error.variable, "SUPABASE_TOKEN_SECRET_ID");
    }
}
