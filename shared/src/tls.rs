//! Trust roots of the bundle's two HTTPS clients: the Supabase client and the
//! AWS SDK's. Both trust the Mozilla root program's certificates compiled into
//! the binary (the `webpki-root-certs` crate) instead of reading the system's
//! certificate files. Reading and parsing those files took several
//! milliseconds of every cold start, once per client.
//!
//! Both use ring as rustls's crypto provider: linking one crypto library
//! instead of ring and aws-lc keeps each zipped bootstrap under 5 MB.
//!
//! NOTE: a certificate authority added to the system store, such as a
//! TLS-inspecting proxy's, is not trusted. Lambda reaches Supabase and
//! Secrets Manager directly, and both use public certificates.

use std::fmt::Write;

use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use base64::Engine;

/// Makes ring the process's rustls crypto provider, which reqwest's
/// `rustls-no-provider` build needs before it builds a client. Calling it
/// again is harmless.
pub fn install_crypto_provider() {
    // An error means a provider is installed already, which is what is needed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Returns the compiled-in roots for reqwest.
pub fn reqwest_roots() -> Vec<reqwest::Certificate> {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .filter_map(|certificate| reqwest::Certificate::from_der(certificate).ok())
        .collect()
}

/// Builds the AWS SDK's HTTPS client, which trusts the compiled-in roots only.
pub fn aws_http_client() -> aws_sdk_secretsmanager::config::SharedHttpClient {
    // The SDK takes extra roots as PEM text.
    let mut pem = String::new();
    for certificate in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let encoded = base64::engine::general_purpose::STANDARD.encode(certificate);
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in encoded.as_bytes().chunks(64) {
            // Base64 output is ASCII, so every chunk is valid UTF-8.
            let _ = writeln!(pem, "{}", std::str::from_utf8(line).unwrap_or_default());
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    let trust_store = TrustStore::empty().with_native_roots(false).with_pem_certificate(pem.into_bytes());
    let builder = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring));
    match TlsContext::builder().with_trust_store(trust_store).build() {
        Ok(context) => builder.tls_context(context).build_https(),
        Err(error) => {
            // Building a context from a trust store does not fail today; if it
            // ever does, the SDK's default roots still verify every peer.
            tracing::warn!(error = %error, "compiled-in trust roots rejected, using the system's");
            builder.build_https()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_compiled_in_root_is_usable() {
        assert!(webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() > 100);
        assert_eq!(reqwest_roots().len(), webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
    }
}
