//! The bundle's two HTTPS clients, the Supabase client and the AWS SDK's,
//! both on reqwest with one rustls configuration.
//!
//! Both trust the Mozilla root program's certificates compiled into the
//! binary (the `webpki-roots` crate), as trust anchors already parsed
//! into subject and key, instead of reading the system's certificate files.
//! Reading and parsing those files took several milliseconds of every cold
//! start, once per client. Whole certificates compiled in still had to be
//! parsed: measured in a new process on x86_64, about 0.35 ms for reqwest's
//! roots and 1.1 ms for the SDK's, which takes extra roots as PEM text.
//!
//! Both use ring as rustls's crypto provider: linking one crypto library
//! instead of ring and aws-lc keeps each zipped bootstrap under 5 MB.
//!
//! NOTE: a certificate authority added to the system store, such as a
//! TLS-inspecting proxy's, is not trusted. Lambda reaches Supabase and
//! Secrets Manager directly, and both use public certificates.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::Response as SdkResponse;
use aws_smithy_types::body::SdkBody;

/// Makes ring the process's rustls crypto provider, which a reqwest client
/// built without [`client_config`] needs (the tests' own clients). Calling it
/// again is harmless.
pub fn install_crypto_provider() {
    // An error means a provider is installed already, which is what is needed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Returns the rustls configuration of both clients: the compiled-in trust
/// anchors, TLS 1.2 and 1.3, and HTTP/2 or HTTP/1.1 by ALPN, as reqwest
/// offers them with its own TLS set-up.
pub fn client_config() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls's default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// Returns the AWS SDK's HTTP client: reqwest, with [`client_config`].
pub fn aws_http_client() -> SharedHttpClient {
    SharedHttpClient::new(ReqwestHttpClient::default())
}

/// The AWS SDK's [`HttpClient`] over reqwest. The SDK requests a connector
/// for its timeout settings. The bundle's SDK client makes one kind of call
/// (`GetSecretValue`) with one set of settings, so the connector is built
/// once, from the first settings requested.
#[derive(Debug, Default)]
struct ReqwestHttpClient {
    connector: OnceLock<SharedHttpConnector>,
}

impl HttpClient for ReqwestHttpClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, _components: &RuntimeComponents) -> SharedHttpConnector {
        self.connector.get_or_init(|| SharedHttpConnector::new(ReqwestConnector::new(settings))).clone()
    }
}

#[derive(Debug, Clone)]
struct ReqwestConnector {
    /// `None` when the client failed to build. Every call then fails as a connector error.
    client: Option<reqwest::Client>,
    read_timeout: Option<Duration>,
}

impl ReqwestConnector {
    fn new(settings: &HttpConnectorSettings) -> Self {
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(client_config())
            .redirect(reqwest::redirect::Policy::none());
        if let Some(timeout) = settings.connect_timeout() {
            builder = builder.connect_timeout(timeout);
        }
        let client = builder
            .build()
            .inspect_err(|error| tracing::error!(error = %error, "building the AWS SDK's HTTP client failed, so every Secrets Manager read fails"))
            .ok();
        Self { client, read_timeout: settings.read_timeout() }
    }

    async fn send(self, request: HttpRequest) -> Result<SdkResponse<SdkBody>, ConnectorError> {
        let client = self.client.ok_or_else(|| ConnectorError::other("the HTTP client failed to build; see the init log".into(), None))?;
        let (parts, body) = request.try_into_http1x().map_err(|error| ConnectorError::user(error.into()))?.into_parts();
        // The SDK's requests here (GetSecretValue) carry their JSON in memory.
        let body = body
            .bytes()
            .map(bytes::Bytes::copy_from_slice)
            .ok_or_else(|| ConnectorError::user("streaming request bodies are not supported".into()))?;
        let mut request = reqwest::Request::try_from(http::Request::from_parts(parts, body))
            .map_err(|error| ConnectorError::user(error.into()))?;
        // NOTE: reqwest bounds the whole request with this, connecting and
        // sending included, which is stricter than the SDK's read timeout.
        *request.timeout_mut() = self.read_timeout;

        let response = client.execute(request).await.map_err(connector_error)?;
        let mut converted = http::Response::builder().status(response.status()).version(response.version());
        if let Some(headers) = converted.headers_mut() {
            headers.extend(response.headers().iter().map(|(name, value)| (name.clone(), value.clone())));
        }
        let bytes = response.bytes().await.map_err(connector_error)?;
        let converted = converted.body(SdkBody::from(bytes)).map_err(|error| ConnectorError::other(error.into(), None))?;
        SdkResponse::try_from(converted).map_err(|error| ConnectorError::other(error.into(), None))
    }
}

impl HttpConnector for ReqwestConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let connector = self.clone();
        HttpConnectorFuture::new(async move { connector.send(request).await })
    }
}

/// Classifies a reqwest failure for the SDK's retry rules.
fn connector_error(error: reqwest::Error) -> ConnectorError {
    if error.is_timeout() {
        ConnectorError::timeout(error.into())
    } else if error.is_connect() || error.is_request() || error.is_body() {
        ConnectorError::io(error.into())
    } else {
        ConnectorError::other(error.into(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_in_anchors_are_present() {
        assert!(webpki_roots::TLS_SERVER_ROOTS.len() > 100);
    }

    #[test]
    fn config_offers_h2_and_http1() {
        assert_eq!(client_config().alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    #[test]
    fn reqwest_accepts_the_config() {
        // reqwest turns a configuration of another rustls version into a build error.
        assert!(reqwest::Client::builder().tls_backend_preconfigured(client_config()).build().is_ok());
    }
}
