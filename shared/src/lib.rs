//! Supabase JIT Guard: the library every Lambda function of the bundle uses.
//!
//! A function validates its request, asks the Cedar guardrails for a
//! decision, and only then calls the Supabase Management API with a token read
//! from AWS Secrets Manager.
//!
//! # Layout
//! - [`config`]: environment settings, read once at init.
//! - [`event`]: the API Gateway and function URL events and responses, as JSON.
//! - [`request`]: path parameters, body and caller from a Lambda event.
//! - [`validate`]: validated ids, roles, networks, expiry and request bodies.
//! - [`json`]: JSON parsing that rejects duplicate keys.
//! - [`policy`]: the Cedar schema and policies, and decisions.
//! - [`facts`]: project and membership lookups for decisions, cached per container.
//! - [`audit`]: the audit record of every decision.
//! - [`logs`]: log lines on stdout, one write per invocation.
//! - [`signature`]: verification of Persona's signed requests.
//! - [`token`]: the access token from Secrets Manager, cached and refreshed.
//! - [`supabase`]: the Management API port and its reqwest adapter.
//! - [`operations`]: the operations as steps.
//! - [`lifecycle`]: granting and revoking one role without losing the others.
//! - [`sweep`]: the scheduled sweep of expired and out-of-policy mappings.
//! - [`error`]: the request error type and its one mapping to problem+json.
//! - [`lambda`]: init and the Lambda event loop.

pub mod audit;
pub mod config;
pub mod error;
pub mod event;
pub mod facts;
pub mod json;
pub mod lambda;
pub mod lifecycle;
pub mod logs;
pub mod operations;
pub mod policy;
pub mod request;
pub mod signature;
mod source_line;
pub mod supabase;
pub mod sweep;
pub mod tls;
pub mod token;
pub mod validate;

pub use lambda::run;

/// mimalloc serves the many small, short-lived allocations of a Cedar
/// decision faster than glibc's allocator. Declared here, it is the
/// allocator of every binary that links this library.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub use policy::Action;
