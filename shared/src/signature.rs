//! Verification of Persona's signed requests.
//!
//! Persona signs each request with the header
//! `Persona-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`.
//! During a key rotation it sends several `v1` values, one per secret; a
//! request is accepted when any of them matches any secret we hold. The
//! timestamp must be within the tolerance window, so a captured request
//! cannot be replayed later.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Mutex;

use crate::token::{SecretStore, TokenError};

/// Header Persona sends; HTTP header names are case-insensitive.
pub const SIGNATURE_HEADER: &str = "persona-signature";

/// Cause of a rejected request signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Persona-Signature header is missing")]
    Missing,
    #[error("the Persona-Signature header is malformed")]
    Malformed,
    #[error("the Persona-Signature timestamp is outside the tolerance window")]
    Stale,
    #[error("no Persona-Signature v1 value matches")]
    Mismatch,
}

impl SignatureError {
    pub fn detail(&self) -> &'static str {
        match self {
            SignatureError::Missing => "The Persona-Signature header is missing; sign the request with the shared signing secret.",
            SignatureError::Malformed => {
                "The Persona-Signature header must read t=<unix seconds>,v1=<hex HMAC-SHA256 of \"t.body\">."
            }
            SignatureError::Stale => {
                "The Persona-Signature timestamp is too far from now; check the sender's clock and do not replay requests."
            }
            SignatureError::Mismatch => {
                "No Persona-Signature v1 value matches; sign the exact body with the current signing secret."
            }
        }
    }
}

/// Checks request signatures with secrets read from the secret store.
pub struct SignatureVerifier {
    secret_id: String,
    store: Box<dyn SecretStore>,
    tolerance: Duration,
    secrets: Mutex<Option<Vec<Vec<u8>>>>,
}

impl SignatureVerifier {
    pub fn new(secret_id: String, store: Box<dyn SecretStore>, tolerance: Duration) -> Self {
        Self { secret_id, store, tolerance, secrets: Mutex::new(None) }
    }

    /// Verifies `header` over `body` at `now` (Unix seconds). After a mismatch
    /// the secret is read again once, in case it was rotated.
    pub async fn verify(&self, header: Option<&str>, body: &[u8], now: i64) -> Result<(), VerifyError> {
        let header = header.ok_or(VerifyError::Signature(SignatureError::Missing))?;
        let (timestamp, signatures) = parse_header(header).map_err(VerifyError::Signature)?;
        if now.abs_diff(timestamp) > self.tolerance.as_secs() {
            return Err(VerifyError::Signature(SignatureError::Stale));
        }

        let mut cached = self.secrets.lock().await;
        let secrets = match cached.as_ref() {
            Some(secrets) => secrets.clone(),
            None => self.read_secrets().await?,
        };
        *cached = Some(secrets.clone());
        if matches_any(&secrets, timestamp, body, &signatures) {
            return Ok(());
        }

        let fresh = self.read_secrets().await?;
        if fresh != secrets {
            tracing::info!(secret_id = %self.secret_id, "signing secret changed, checking again");
            *cached = Some(fresh.clone());
            if matches_any(&fresh, timestamp, body, &signatures) {
                return Ok(());
            }
        }
        Err(VerifyError::Signature(SignatureError::Mismatch))
    }

    /// Reads the secrets: a bare string, or JSON with `signing_secret` or a `signing_secrets` list.
    async fn read_secrets(&self) -> Result<Vec<Vec<u8>>, VerifyError> {
        let secret_id = self.secret_id.clone();
        let text = crate::token::read_secret_string(self.store.as_ref(), &self.secret_id).await.map_err(|failure| {
            VerifyError::Secret(TokenError::SecretStore { secret_id: secret_id.clone(), failure })
        })?;
        let invalid = |reason| VerifyError::Secret(TokenError::InvalidSecret { secret_id: secret_id.clone(), reason });
        let trimmed = text.trim();
        let secrets: Vec<String> = if trimmed.starts_with('{') {
            let value: serde_json::Value = serde_json::from_str(trimmed)
                .map_err(|_| invalid("the secret string starts with '{' but is not valid JSON"))?;
            match (value.get("signing_secret"), value.get("signing_secrets")) {
                (Some(serde_json::Value::String(secret)), _) => vec![secret.clone()],
                (_, Some(serde_json::Value::Array(list))) => {
                    list.iter().filter_map(|secret| secret.as_str().map(str::to_owned)).collect()
                }
                _ => return Err(invalid("the JSON has no signing_secret string or signing_secrets list")),
            }
        } else {
            vec![trimmed.to_owned()]
        };
        if secrets.is_empty() || secrets.iter().any(String::is_empty) {
            return Err(invalid("a signing secret is empty"));
        }
        Ok(secrets.into_iter().map(String::into_bytes).collect())
    }
}

/// Cause of a failed verification: the signature, or the secret behind it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Signature(SignatureError),
    #[error(transparent)]
    Secret(TokenError),
}

/// Splits `t=…,v1=…[,v1=…]` into the timestamp and the decoded signatures.
fn parse_header(header: &str) -> Result<(i64, Vec<Vec<u8>>), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part.trim().split_once('=').ok_or(SignatureError::Malformed)?;
        match key {
            "t" if timestamp.is_none() => timestamp = Some(value.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            "v1" => signatures.push(decode_hex(value).ok_or(SignatureError::Malformed)?),
            // Other schemes may appear in later versions of the header; they are ignored.
            _ if key != "t" => {}
            _ => return Err(SignatureError::Malformed),
        }
    }
    match timestamp {
        Some(timestamp) if !signatures.is_empty() => Ok((timestamp, signatures)),
        _ => Err(SignatureError::Malformed),
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    // A SHA-256 MAC is 32 bytes.
    if text.len() != 64 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(text.get(index..index + 2)?, 16).ok())
        .collect()
}

/// Compares in constant time through `Mac::verify_slice`.
fn matches_any(secrets: &[Vec<u8>], timestamp: i64, body: &[u8], signatures: &[Vec<u8>]) -> bool {
    secrets.iter().any(|secret| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            return false;
        };
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        signatures.iter().any(|signature| mac.clone().verify_slice(signature).is_ok())
    })
}

/// Computes the `v1` value for a body, as Persona does; used by tests and local tools.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::SecretFuture;

    struct FixedStore(std::sync::Mutex<Vec<String>>);

    impl SecretStore for FixedStore {
        fn secret_string<'a>(&'a self, _secret_id: &'a str) -> SecretFuture<'a> {
            let mut values = self.0.lock().unwrap();
            let value = if values.len() > 1 { values.remove(0) } else { values[0].clone() };
            Box::pin(async move { Ok(value) })
        }
    }

    fn verifier(values: &[&str]) -> SignatureVerifier {
        let store = FixedStore(std::sync::Mutex::new(values.iter().map(|value| value.to_string()).collect()));
        SignatureVerifier::new("persona/signing".into(), Box::new(store), Duration::from_secs(300))
    }

    const NOW: i64 = 1_800_000_000;
    const BODY: &[u8] = br#"{"role":"jit_readonly","rhost":"10.1.2.3"}"#;

    #[tokio::test]
    async fn valid_signature_is_accepted() {
        let header = format!("t={NOW},v1={}", sign(b"whsec_one", NOW, BODY));
        assert!(verifier(&["whsec_one"]).verify(Some(&header), BODY, NOW + 10).await.is_ok());
    }

    #[tokio::test]
    async fn any_of_several_v1_values_matches() {
        let header = format!("t={NOW},v1={},v1={}", sign(b"whsec_old", NOW, BODY), sign(b"whsec_new", NOW, BODY));
        assert!(verifier(&["whsec_new"]).verify(Some(&header), BODY, NOW).await.is_ok());
    }

    #[tokio::test]
    async fn tampered_body_is_rejected() {
        let header = format!("t={NOW},v1={}", sign(b"whsec_one", NOW, BODY));
        let error = verifier(&["whsec_one"]).verify(Some(&header), b"{}", NOW).await.unwrap_err();
        assert!(matches!(error, VerifyError::Signature(SignatureError::Mismatch)));
    }

    #[tokio::test]
    async fn stale_timestamp_is_rejected() {
        let header = format!("t={NOW},v1={}", sign(b"whsec_one", NOW, BODY));
        let error = verifier(&["whsec_one"]).verify(Some(&header), BODY, NOW + 301).await.unwrap_err();
        assert!(matches!(error, VerifyError::Signature(SignatureError::Stale)));
    }

    #[tokio::test]
    async fn rotated_secret_is_read_again() {
        let header = format!("t={NOW},v1={}", sign(b"whsec_new", NOW, BODY));
        let verifier = verifier(&["whsec_old", r#"{"signing_secrets":["whsec_new","whsec_old"]}"#]);
        assert!(verifier.verify(Some(&header), BODY, NOW).await.is_ok());
    }

    #[tokio::test]
    async fn malformed_headers_are_rejected() {
        let verifier = verifier(&["whsec_one"]);
        for header in ["", "t=1", "v1=00", "t=abc,v1=00", &format!("t={NOW},v1=xyz"), &format!("t={NOW},t={NOW},v1={}", "0".repeat(64))] {
            let error = verifier.verify(Some(header), BODY, NOW).await.unwrap_err();
            assert!(matches!(error, VerifyError::Signature(SignatureError::Malformed)), "header {header:?}");
        }
        let error = verifier.verify(None, BODY, NOW).await.unwrap_err();
        assert!(matches!(error, VerifyError::Signature(SignatureError::Missing)));
    }
}
