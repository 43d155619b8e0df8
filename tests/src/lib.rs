//! Test support for Supabase JIT Guard: local stand-ins for everything the
//! functions talk to, so the real binaries run end to end on loopback.
//!
//! # Layout
//! - [`stand_in`]: the Supabase Management API stand-in, in-memory state, request log.
//! - [`runtime_api`]: a Lambda Runtime API endpoint that runs a function binary.
//! - [`moto`]: moto server (Secrets Manager emulator) started and seeded for a test.
//! - [`events`]: API Gateway REST (v1), HTTP API (v2) and function URL events, and the sweep's scheduled event.
//! - [`workload`]: the requests of the benchmark and the handler cost example.

pub mod child;
pub mod events;
pub mod moto;
pub mod runtime_api;
pub mod spec;
pub mod stand_in;
pub mod workload;

/// Returns a reqwest client for test traffic. The workspace builds reqwest without
/// a built-in crypto provider (the functions pass reqwest a rustls configuration
/// with ring), so the provider is installed here before the first client is built.
pub fn http_client() -> reqwest::Client {
    http_client_builder().build().expect("a plain reqwest client always builds")
}

/// Returns a reqwest client builder, after installing the crypto provider.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    jit_guard::tls::install_crypto_provider();
    reqwest::Client::builder()
}
