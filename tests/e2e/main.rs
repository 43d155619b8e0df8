//! End-to-end tests: each function's real binary under a local Lambda
//! Runtime API, reading its token through aws-sdk-secretsmanager from moto
//! server, against the Supabase stand-in. Build the binaries first with
//! `cargo build --workspace --bins`; `tests/scripts/test-all.sh` does both.

mod api_definition;
mod audit;
mod bad_inputs;
mod contract;
mod faults;
mod lifecycle;
mod policies;
mod routes;
mod secret_store;
mod signature;
mod support;
mod token;
