//! A local stand-in for the seven Supabase Management API v1 routes the
//! functions call, with in-memory state and a log of every request.
//!
//! Routes and response shapes follow the Management API's OpenAPI document:
//! - `GET    /v1/organizations/{slug}/members`
//! - `GET    /v1/projects`
//! - `GET    /v1/projects/{ref}`
//! - `POST   /v1/projects/{ref}/database/jit` (authorize)
//! - `PUT    /v1/projects/{ref}/database/jit` (update one user's roles)
//! - `GET    /v1/projects/{ref}/database/jit/list`
//! - `DELETE /v1/projects/{ref}/database/jit/{user_id}`
//!
//! Every request needs `Authorization: Bearer <token>` with the token the
//! stand-in was started with, or [`StandIn::set_token`] set later. Errors
//! carry a JSON body `{"message": "..."}`. Request bodies are checked more
//! strictly than the OpenAPI schemas require, so a client mistake fails loudly
//! here: unknown fields are rejected at every level, `null` is rejected where
//! the schema has no `nullable`, CIDRs must parse, `rhost` must be an IP
//! address and `Content-Type` must be `application/json`.
//!
//! Failures can be injected per route with [`StandIn::inject`]: an error
//! status, a delay, a body that is not JSON or has the wrong shape, a dropped
//! connection or a rate limit. A fault is chosen when the request arrives,
//! before the token check, and never changes state. [`StandIn::set_latency`]
//! delays every response by a fixed time.
//!
//! [`StandIn::validate_against_spec`] checks every request against the
//! operation of Supabase's OpenAPI document that it targets, and records
//! each failure in [`StandIn::spec_violations`] without changing the response.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path as FsPath, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::serve::{IncomingStream, Listener};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::spec::{RequestToCheck, Spec};

/// Maximum request body the stand-in reads. The bodies of these routes are a few hundred bytes.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// One request as the stand-in received it. Headers are not kept, so the
/// access token never reaches the log.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Raw query string without the `?`.
    pub query: Option<String>,
    /// The body parsed as JSON, or the body as a JSON string when it is not
    /// JSON. `None` for an empty body.
    pub body: Option<Value>,
    /// Whether an `Authorization` header was present, whatever its value.
    pub authorized: bool,
    /// The injected fault played for this request, as [`Fault`]'s `Display`
    /// names it ("status 503", "drop connection"). `None` for a normal response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

/// A request that breaks Supabase's OpenAPI document, recorded while
/// [`StandIn::validate_against_spec`] is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpecViolation {
    pub method: String,
    /// The path as sent, still percent-encoded.
    pub path: String,
    /// What failed, e.g. `body: "roles" is a required property`.
    pub problem: String,
}

impl fmt::Display for SpecViolation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}: {}", self.method, self.path, self.problem)
    }
}

/// A failure the stand-in plays instead of (or before) its normal answer.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answers with this status and JSON body {"message": ...} (or the given raw body).
    ///
    /// Without `body` the message is the status's reason phrase. A raw body
    /// is sent as given, labeled `application/json` when it parses as JSON
    /// and `text/plain` otherwise. The status must be from 200 to 599.
    Status { status: u16, body: Option<String> },
    /// Waits this long, then answers normally.
    Delay(Duration),
    /// Answers 200 with a body that is not JSON (e.g. "<html>upstream proxy error</html>") and Content-Type text/html.
    MalformedBody,
    /// Answers 200 with valid JSON of the wrong shape (e.g. an object where the route returns an array, or `{"unexpected": true}` where an object with required fields is expected).
    ///
    /// Every route responds with `{"unexpected": true}`. That is an object
    /// where the two list routes return arrays, and an object without any
    /// required field where the others return objects or, for delete, an empty body.
    WrongShape,
    /// Closes the TCP connection without sending any response bytes (the client must see a connection error, not a status).
    DropConnection,
    /// Answers 429 with header `X-RateLimit-Reset: <seconds>` (seconds until the window resets, as Supabase sends it) and no Retry-After, plus `X-RateLimit-Limit: 120` and `X-RateLimit-Remaining: 0`.
    RateLimited { reset_seconds: u64 },
}

impl fmt::Display for Fault {
    /// Formats the name that [`RecordedRequest::fault`] records.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Status { status, .. } => write!(formatter, "status {status}"),
            Fault::Delay(delay) => write!(formatter, "delay {delay:?}"),
            Fault::MalformedBody => formatter.write_str("malformed body"),
            Fault::WrongShape => formatter.write_str("wrong shape"),
            Fault::DropConnection => formatter.write_str("drop connection"),
            Fault::RateLimited { reset_seconds } => {
                write!(formatter, "rate limited, reset in {reset_seconds} s")
            }
        }
    }
}

/// Why the stand-in could not start: the message names the value and the fix.
#[derive(Debug, Clone)]
pub struct StartError(String);

impl fmt::Display for StartError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// Where and how to serve. The default is an OS-assigned port on 127.0.0.1
/// without printing requests.
#[derive(Debug, Clone)]
pub struct Options {
    /// Must be a loopback address.
    pub address: SocketAddr,
    /// Print each [`RecordedRequest`] to stdout as one JSON line.
    pub print_requests: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            address: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            print_requests: false,
        }
    }
}

/// A running stand-in. Dropping it stops the server: idle connections close
/// and the listener is released.
///
/// NOTE: the server is a task on the caller's Tokio runtime. A test that
/// blocks that runtime's thread, for example with `std::process::Command::output`
/// on a current-thread runtime, stalls the stand-in too, so use `tokio::process`.
pub struct StandIn {
    address: SocketAddr,
    app: App,
    shutdown: Option<oneshot::Sender<()>>,
}

impl StandIn {
    /// Starts on 127.0.0.1 with an OS-assigned port, seeded from
    /// `tests/fixtures/seed.json`.
    ///
    /// # Panics
    /// When the seed file is missing or invalid, or no port can be bound.
    pub async fn start(token: &str) -> StandIn {
        let seed = load_seed(&Self::seed_path()).unwrap_or_else(|error| panic!("{error}"));
        Self::start_with_seed(token, seed).await
    }

    /// Starts on 127.0.0.1 with an OS-assigned port and the given seed, in
    /// the format of `tests/fixtures/seed.json`.
    ///
    /// # Panics
    /// When the seed is invalid or no port can be bound.
    pub async fn start_with_seed(token: &str, seed: Value) -> StandIn {
        Self::start_with_options(token, seed, Options::default())
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Starts with explicit options. Rejects a non-loopback address, an empty
    /// token and an invalid seed.
    pub async fn start_with_options(
        token: &str,
        seed: Value,
        options: Options,
    ) -> Result<StandIn, StartError> {
        if !options.address.ip().is_loopback() {
            return Err(StartError(format!(
                "address {} is not a loopback address: the stand-in serves on 127.0.0.1 or ::1 only",
                options.address.ip()
            )));
        }
        if token.is_empty() {
            return Err(StartError(
                "the access token is empty: pass the token clients send as 'Authorization: Bearer <token>'".into(),
            ));
        }
        let seed: Seed = serde_json::from_value(seed)
            .map_err(|error| StartError(format!("invalid stand-in seed: {error}")))?;
        let state = ServerState::from_seed(token, seed).map_err(StartError)?;

        let listener = TcpListener::bind(options.address).await.map_err(|error| {
            StartError(format!(
                "could not listen on {}: {error}. Choose another port.",
                options.address
            ))
        })?;
        let address = listener
            .local_addr()
            .map_err(|error| StartError(format!("could not read the bound address: {error}")))?;

        let app = App {
            state: Arc::new(Mutex::new(state)),
            print_requests: options.print_requests,
        };
        let (shutdown, shutdown_signal) = oneshot::channel::<()>();
        // Each connection carries a switch that Fault::DropConnection flips.
        // The handler reaches it through ConnectInfo.
        let service = router(app.clone()).into_make_service_with_connect_info::<ConnectionSwitch>();
        let listener = SwitchedListener(listener);
        tokio::spawn(async move {
            let serving = axum::serve(listener, service).with_graceful_shutdown(async move {
                // A dropped sender also means stop.
                let _ = shutdown_signal.await;
            });
            if let Err(error) = serving.await {
                eprintln!("supabase stand-in on {address} stopped with an error: {error}");
            }
        });

        Ok(StandIn {
            address,
            app,
            shutdown: Some(shutdown),
        })
    }

    /// Returns the base URL, `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Returns the bound socket address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Returns a copy of the request log, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.app.lock().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.app.lock().requests.len()
    }

    pub fn clear_requests(&self) {
        self.app.lock().requests.clear();
    }

    /// Checks every request from now on against the operation of `spec` it
    /// targets: the method and path, the path parameters, the Content-Type
    /// and the JSON body. Each failure is recorded in
    /// [`StandIn::spec_violations`]. The response stays the same.
    pub fn validate_against_spec(&self, spec: Arc<Spec>) {
        self.app.lock().spec = Some(spec);
    }

    /// Returns whether [`StandIn::validate_against_spec`] is on.
    pub fn validates_against_spec(&self) -> bool {
        self.app.lock().spec.is_some()
    }

    /// Returns every recorded spec violation, oldest first.
    pub fn spec_violations(&self) -> Vec<SpecViolation> {
        self.app.lock().spec_violations.clone()
    }

    /// Replaces the expected access token, as a token rotation would: the old
    /// token gets 401 from the next request on.
    ///
    /// # Panics
    /// When `token` is empty, because `Authorization: Bearer ` would then pass.
    pub fn set_token(&self, token: &str) {
        assert!(
            !token.is_empty(),
            "set_token needs a non-empty access token"
        );
        self.app.lock().token = token.to_owned();
    }

    /// Plays `fault` for requests whose method and route template match, e.g. ("GET", "/v1/projects/{ref}") or ("PUT", "/v1/projects/{ref}/database/jit"); `times: Some(n)` plays it for the next n matching requests only, `None` for every one until cleared. Several faults may be queued for one route; they are played in order.
    ///
    /// The method is case-insensitive. A fault is played whatever the token,
    /// and is recorded in [`RecordedRequest::fault`]. `Some(0)` queues nothing.
    /// A fault with `None` stays first in its route's queue, so faults
    /// queued after it on that route never play. [`StandIn::clear_faults`]
    /// removes them all.
    ///
    /// # Panics
    /// When the method and route are not one of the seven routes, and the
    /// message then lists them. When a [`Fault::Status`] status is outside 200 to 599.
    pub fn inject(&self, method: &str, route: &str, fault: Fault, times: Option<usize>) {
        let method = method.to_ascii_uppercase();
        let Some(&(method, route)) = ROUTES
            .iter()
            .find(|(known_method, known_route)| *known_method == method && *known_route == route)
        else {
            let valid: Vec<String> = ROUTES
                .iter()
                .map(|(method, route)| format!("{method} {route}"))
                .collect();
            panic!(
                "inject: {method} {route} is not a stand-in route. Use the method and route template of one of: {}",
                valid.join(", ")
            );
        };
        if let Fault::Status { status, .. } = &fault {
            assert!(
                (200..=599).contains(status),
                "inject: status {status} is outside 200 to 599; a fault needs a final HTTP status"
            );
        }
        if times == Some(0) {
            return;
        }
        self.app.lock().faults.push(InjectedFault {
            method,
            route,
            fault,
            remaining: times,
        });
    }

    /// Removes every injected fault, so requests get normal responses again.
    pub fn clear_faults(&self) {
        self.app.lock().faults.clear();
    }

    /// Adds a fixed latency before every answer (for benchmarks), Duration::ZERO to remove.
    ///
    /// The wait starts once the request body has been read and recorded, and
    /// comes before any [`Fault::Delay`].
    pub fn set_latency(&self, latency: Duration) {
        self.app.lock().latency = latency;
    }

    /// Returns the absolute path of `tests/fixtures/seed.json`.
    pub fn seed_path() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/seed.json"))
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The send fails only when the server has already stopped.
            let _ = shutdown.send(());
        }
    }
}

/// Reads a seed file in the format of `tests/fixtures/seed.json`.
pub fn load_seed(path: &FsPath) -> Result<Value, StartError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        StartError(format!(
            "could not read the stand-in seed {}: {error}",
            path.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|error| {
        StartError(format!(
            "the stand-in seed {} is not valid JSON: {error}",
            path.display()
        ))
    })
}

// ---------------------------------------------------------------------------
// Seed and state
// ---------------------------------------------------------------------------

/// The seed file: organizations with members, projects, and JIT mappings per
/// project ref.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Seed {
    /// The user the access token belongs to. Authorize checks this user's mappings.
    token_user_id: Uuid,
    organizations: Vec<Organization>,
    projects: Vec<Project>,
    #[serde(default)]
    jit: BTreeMap<String, ProjectJit>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Organization {
    slug: String,
    members: Vec<Member>,
}

/// `V1OrganizationMemberResponse`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Member {
    user_id: Uuid,
    user_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    role_name: String,
    mfa_enabled: bool,
    /// Always serialized, as `null` when absent: the schema requires it.
    avatar_url: Option<String>,
}

/// `V1ProjectWithDatabaseResponse`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Project {
    id: String,
    #[serde(rename = "ref")]
    project_ref: String,
    organization_id: String,
    organization_slug: String,
    name: String,
    region: String,
    /// ISO 8601 timestamp.
    created_at: String,
    status: String,
    database: Database,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Database {
    host: String,
    version: String,
    postgres_engine: String,
    release_channel: String,
}

/// The JIT state of one project: users with role mappings, and pending invites.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectJit {
    #[serde(default)]
    users: Vec<JitUser>,
    #[serde(default)]
    invites: Vec<JitInvite>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct JitUser {
    user_id: Uuid,
    user_roles: Vec<UserRole>,
}

/// A pending invite: listed with `user_id: null` until the invitee signs up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct JitInvite {
    invite_id: Uuid,
    primary_email: String,
    /// The invite's expiry as an ISO 8601 string, unlike a role's Unix seconds.
    expires_at: String,
    user_roles: Vec<UserRole>,
}

/// One role mapping, the item of `user_roles` and of the update body's `roles`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRole {
    role: String,
    /// Unix seconds. Kept as the JSON number the client sent, so an integer
    /// comes back as an integer.
    #[serde(
        default,
        deserialize_with = "non_null",
        skip_serializing_if = "Option::is_none"
    )]
    expires_at: Option<serde_json::Number>,
    #[serde(
        default,
        deserialize_with = "non_null",
        skip_serializing_if = "Option::is_none"
    )]
    allowed_networks: Option<AllowedNetworks>,
    #[serde(
        default,
        deserialize_with = "non_null",
        skip_serializing_if = "Option::is_none"
    )]
    branches_only: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowedNetworks {
    #[serde(
        default,
        deserialize_with = "non_null",
        skip_serializing_if = "Option::is_none"
    )]
    allowed_cidrs: Option<Vec<Cidr>>,
    #[serde(
        default,
        deserialize_with = "non_null",
        skip_serializing_if = "Option::is_none"
    )]
    allowed_cidrs_v6: Option<Vec<Cidr>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cidr {
    cidr: String,
}

/// Deserializes an optional field that may be absent but not `null`: the
/// schemas declare these fields without `nullable`.
fn non_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

struct ServerState {
    token: String,
    token_user_id: Uuid,
    organizations: Vec<Organization>,
    projects: Vec<Project>,
    /// Keyed by project ref. Every known project has an entry.
    jit: BTreeMap<String, ProjectJit>,
    requests: Vec<RecordedRequest>,
    /// Injected faults in the order they were queued.
    faults: Vec<InjectedFault>,
    /// Added before every response. Zero means none.
    latency: Duration,
    /// The document requests are checked against, when checking is on.
    spec: Option<Arc<Spec>>,
    spec_violations: Vec<SpecViolation>,
}

/// A fault queued for one route.
struct InjectedFault {
    method: &'static str,
    route: &'static str,
    fault: Fault,
    /// Requests left to fault, never `Some(0)`. `None` faults every request.
    remaining: Option<usize>,
}

impl ServerState {
    fn from_seed(token: &str, seed: Seed) -> Result<ServerState, String> {
        for organization in &seed.organizations {
            if !is_valid_slug(&organization.slug) {
                return Err(format!(
                    "seed organization slug {:?} is invalid: use letters, digits, '_' and '-'",
                    organization.slug
                ));
            }
        }
        for project in &seed.projects {
            if !is_valid_ref(&project.project_ref) {
                return Err(format!(
                    "seed project ref {:?} is invalid: a ref is exactly 20 lowercase letters",
                    project.project_ref
                ));
            }
            if !seed
                .organizations
                .iter()
                .any(|o| o.slug == project.organization_slug)
            {
                return Err(format!(
                    "seed project {} names organization {:?}, which the seed does not define",
                    project.project_ref, project.organization_slug
                ));
            }
        }

        let mut jit: BTreeMap<String, ProjectJit> = seed
            .projects
            .iter()
            .map(|project| (project.project_ref.clone(), ProjectJit::default()))
            .collect();
        for (project_ref, project_jit) in seed.jit {
            let Some(slot) = jit.get_mut(&project_ref) else {
                return Err(format!(
                    "seed JIT mappings name project {project_ref:?}, which the seed does not define"
                ));
            };
            let roles = project_jit
                .users
                .iter()
                .flat_map(|user| &user.user_roles)
                .chain(
                    project_jit
                        .invites
                        .iter()
                        .flat_map(|invite| &invite.user_roles),
                );
            for role in roles {
                validate_role(role)
                    .map_err(|error| format!("seed JIT mapping on {project_ref}: {error}"))?;
            }
            *slot = project_jit;
        }

        Ok(ServerState {
            token: token.to_owned(),
            token_user_id: seed.token_user_id,
            organizations: seed.organizations,
            projects: seed.projects,
            jit,
            requests: Vec::new(),
            faults: Vec::new(),
            latency: Duration::ZERO,
            spec: None,
            spec_violations: Vec::new(),
        })
    }

    /// Takes the fault to play for one request on `method` and `route`: the
    /// first one queued for that route, which loses one of its remaining plays.
    fn take_fault(&mut self, method: &str, route: &str) -> Option<Fault> {
        let index = self
            .faults
            .iter()
            .position(|queued| queued.method == method && queued.route == route)?;
        let queued = &mut self.faults[index];
        let fault = queued.fault.clone();
        if let Some(remaining) = &mut queued.remaining {
            *remaining -= 1;
            if *remaining == 0 {
                self.faults.remove(index);
            }
        }
        Some(fault)
    }

    fn project(&self, project_ref: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.project_ref == project_ref)
    }

    /// Returns the email of `user_id` in the organization that owns the project,
    /// the list's `primary_email`.
    fn member_email(&self, project: &Project, user_id: Uuid) -> Option<String> {
        self.organizations
            .iter()
            .find(|o| o.slug == project.organization_slug)?
            .members
            .iter()
            .find(|m| m.user_id == user_id)?
            .email
            .clone()
    }
}

fn is_valid_ref(project_ref: &str) -> bool {
    project_ref.len() == 20 && project_ref.bytes().all(|b| b.is_ascii_lowercase())
}

/// Matches `^[\w-]+$` with ASCII word characters.
fn is_valid_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks what serde cannot: a non-empty role name, and CIDRs that parse in
/// the family of their list.
fn validate_role(role: &UserRole) -> Result<(), String> {
    if role.role.is_empty() {
        return Err("a role name is empty: 'role' needs at least one character".into());
    }
    let Some(networks) = &role.allowed_networks else {
        return Ok(());
    };
    for (list, cidrs, want_v4) in [
        ("allowed_cidrs", &networks.allowed_cidrs, true),
        ("allowed_cidrs_v6", &networks.allowed_cidrs_v6, false),
    ] {
        for cidr in cidrs.iter().flatten() {
            let parsed: IpNet = cidr.cidr.parse().map_err(|_| {
                format!(
                    "{list} entry {:?} of role {:?} is not a CIDR such as 203.0.113.0/24 or 2001:db8::/32",
                    cidr.cidr, role.role
                )
            })?;
            if matches!(parsed, IpNet::V4(_)) != want_v4 {
                let family = if want_v4 { "IPv4" } else { "IPv6" };
                return Err(format!(
                    "{list} entry {:?} of role {:?} is not an {family} CIDR",
                    cidr.cidr, role.role
                ));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct App {
    state: Arc<Mutex<ServerState>>,
    print_requests: bool,
}

impl App {
    /// Locks the state. A handler that panicked left the state consistent,
    /// because every change is a single assignment, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, ServerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

const MEMBERS_ROUTE: &str = "/v1/organizations/{slug}/members";
const PROJECTS_ROUTE: &str = "/v1/projects";
const PROJECT_ROUTE: &str = "/v1/projects/{ref}";
const JIT_ROUTE: &str = "/v1/projects/{ref}/database/jit";
const JIT_LIST_ROUTE: &str = "/v1/projects/{ref}/database/jit/list";
const JIT_USER_ROUTE: &str = "/v1/projects/{ref}/database/jit/{user_id}";

/// The method and route template of each route served. The templates are
/// also the router's paths, so a request's `MatchedPath` names its route.
const ROUTES: [(&str, &str); 7] = [
    ("GET", MEMBERS_ROUTE),
    ("GET", PROJECTS_ROUTE),
    ("GET", PROJECT_ROUTE),
    ("POST", JIT_ROUTE),
    ("PUT", JIT_ROUTE),
    ("GET", JIT_LIST_ROUTE),
    ("DELETE", JIT_USER_ROUTE),
];

/// A TCP listener whose connections can each be cut by the handler serving
/// them. axum::serve owns each connection's hyper task, so a handler ends its
/// connection without a response by making the stream fail.
struct SwitchedListener(TcpListener);

impl Listener for SwitchedListener {
    type Io = SwitchedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, address) = Listener::accept(&mut self.0).await;
        let stream = SwitchedStream {
            stream,
            cut: Arc::default(),
        };
        (stream, address)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A TCP stream that fails every read and write once `cut` is set. hyper
/// then abandons the connection and drops the stream, which closes the
/// socket with no response bytes sent.
struct SwitchedStream {
    stream: TcpStream,
    cut: Arc<AtomicBool>,
}

impl SwitchedStream {
    fn check(&self) -> io::Result<()> {
        if self.cut.load(Ordering::Acquire) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection cut by an injected fault",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for SwitchedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.stream).poll_read(context, buffer)
    }
}

impl AsyncWrite for SwitchedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.stream).poll_write(context, buffer)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.stream).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.stream).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.stream).poll_shutdown(context)
    }
}

/// The handler's end of one connection's switch, found in the request's
/// `ConnectInfo`.
#[derive(Clone)]
struct ConnectionSwitch(Arc<AtomicBool>);

impl ConnectionSwitch {
    /// Makes the connection fail before the response is written.
    fn cut(&self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Connected<IncomingStream<'_, SwitchedListener>> for ConnectionSwitch {
    fn connect_info(stream: IncomingStream<'_, SwitchedListener>) -> Self {
        ConnectionSwitch(Arc::clone(&stream.io().cut))
    }
}

fn router(app: App) -> Router {
    Router::new()
        .route(MEMBERS_ROUTE, get(list_organization_members))
        .route(PROJECTS_ROUTE, get(list_projects))
        .route(PROJECT_ROUTE, get(get_project))
        .route(
            JIT_ROUTE,
            axum::routing::post(authorize_jit_access).put(update_jit_access),
        )
        .route(JIT_LIST_ROUTE, get(list_jit_access))
        .route(JIT_USER_ROUTE, delete(delete_jit_access))
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(
            app.clone(),
            record_and_authenticate,
        ))
        .with_state(app)
}

/// An error response: the status and the `message` of its JSON body.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    fn project_not_found(project_ref: &str) -> ApiError {
        ApiError::not_found(format!("project {project_ref} not found"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "message": self.message }))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// Waits until `deadline` on a blocking thread, whose sleep overshoots by
/// tens of microseconds. Tokio's timer rounds a deadline up to the next
/// millisecond, which would make a fixed latency anything up to 1 ms longer
/// and tie it to the timer's ticks.
async fn sleep_until_precisely(deadline: std::time::Instant) {
    let slept = tokio::task::spawn_blocking(move || {
        std::thread::sleep(deadline.saturating_duration_since(std::time::Instant::now()));
    })
    .await;
    if slept.is_err() {
        // The blocking pool is shutting down; the coarser timer still waits.
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// Logs the request, waits out any latency, plays an injected fault, then
/// lets the request through only with the expected bearer token.
///
/// The fault is chosen and recorded as the request arrives, before the token
/// is checked. Every fault but `Delay` responds without reaching a handler,
/// so a faulted request never changes state.
async fn record_and_authenticate(
    State(app): State<App>,
    request: Request,
    next: Next,
) -> ApiResult {
    let arrived = std::time::Instant::now();
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|error| {
            ApiError::bad_request(format!(
                "could not read the request body (at most {MAX_BODY_BYTES} bytes): {error}"
            ))
        })?;

    // The router's paths are the ROUTES templates. The fallback has no
    // MatchedPath, and a method the route does not serve matches no entry.
    let route = parts.extensions.get::<MatchedPath>().and_then(|matched| {
        ROUTES
            .iter()
            .find(|(method, route)| parts.method == *method && matched.as_str() == *route)
    });
    let authorization = parts.headers.get(header::AUTHORIZATION);
    let violations = check_against_spec(&app, &parts, &bytes);
    let mut recorded = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        body: body_as_json(&bytes),
        authorized: authorization.is_some(),
        fault: None,
    };
    let (fault, latency) = {
        let mut state = app.lock();
        let fault = route.and_then(|(method, route)| state.take_fault(method, route));
        recorded.fault = fault.as_ref().map(Fault::to_string);
        if app.print_requests {
            match serde_json::to_string(&recorded) {
                Ok(line) => println!("{line}"),
                Err(error) => eprintln!("could not print a recorded request: {error}"),
            }
        }
        state.requests.push(recorded);
        state.spec_violations.extend(violations);
        (fault, state.latency)
    };

    if !latency.is_zero() {
        sleep_until_precisely(arrived + latency).await;
    }
    match fault {
        None => {}
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(fault) => {
            let switch = parts
                .extensions
                .get::<ConnectInfo<ConnectionSwitch>>()
                .map(|ConnectInfo(switch)| switch);
            return Ok(fault_response(fault, switch));
        }
    }

    // Checked after the waits, so a token rotated meanwhile already applies.
    let presented = authorization
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token);
    let accepted = presented == Some(app.lock().token.as_str());
    if !accepted {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized"));
    }

    Ok(next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await)
}

/// Checks a request against the document when checking is on. The check
/// runs outside the state lock, because the first request of an operation
/// compiles its validators.
fn check_against_spec(
    app: &App,
    parts: &axum::http::request::Parts,
    body: &Bytes,
) -> Vec<SpecViolation> {
    let Some(spec) = app.lock().spec.clone() else {
        return Vec::new();
    };
    let method = parts.method.as_str();
    let path = parts.uri.path();
    let request = RequestToCheck {
        method,
        path,
        query: parts.uri.query(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok()),
        body,
    };
    spec.check_request(&request)
        .into_iter()
        .map(|problem| SpecViolation {
            method: method.to_owned(),
            path: path.to_owned(),
            problem,
        })
        .collect()
}

/// Builds the response for every fault except `Delay`, whose request gets the normal response.
fn fault_response(fault: Fault, switch: Option<&ConnectionSwitch>) -> Response {
    match fault {
        Fault::Status { status, body } => {
            // inject accepts only 200 to 599, which all parse.
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let Some(body) = body else {
                let message = status
                    .canonical_reason()
                    .map_or_else(|| format!("status {}", status.as_u16()), str::to_owned);
                return ApiError::new(status, message).into_response();
            };
            let content_type = if serde_json::from_str::<Value>(&body).is_ok() {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Fault::MalformedBody => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<html>upstream proxy error</html>",
        )
            .into_response(),
        Fault::WrongShape => axum::Json(json!({ "unexpected": true })).into_response(),
        Fault::DropConnection => {
            // Every connection comes through SwitchedListener, which gives
            // each request its switch.
            switch
                .expect("the stand-in serves every connection through SwitchedListener")
                .cut();
            // hyper fails to write this and drops the connection.
            // NOTE: a client that sent `Expect: 100-continue` has already
            // received `100 Continue`, because the body is read before the
            // fault is chosen. reqwest does not send that header.
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Fault::RateLimited { reset_seconds } => {
            let mut response =
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
            let headers = response.headers_mut();
            headers.insert("x-ratelimit-limit", HeaderValue::from_static("120"));
            headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            headers.insert("x-ratelimit-reset", HeaderValue::from(reset_seconds));
            response
        }
        Fault::Delay(_) => unreachable!("a delay answers normally after its wait"),
    }
}

/// Returns the token of an `Authorization: Bearer <token>` value. The scheme
/// is case-insensitive as in RFC 7235.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn body_as_json(bytes: &Bytes) -> Option<Value> {
    if bytes.is_empty() {
        return None;
    }
    Some(
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
    )
}

/// Rejects a project ref that is not 20 lowercase letters with 400.
fn check_ref(project_ref: &str) -> Result<(), ApiError> {
    if is_valid_ref(project_ref) {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "invalid project ref {project_ref:?}: a ref is exactly 20 lowercase letters"
    )))
}

fn parse_user_id(user_id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(user_id).map_err(|_| {
        ApiError::bad_request(format!("invalid user_id {user_id:?}: send the user's UUID"))
    })
}

/// Parses a JSON request body into `T`, or returns 400 with the parser's
/// message, which names the field, when it does not fit.
fn parse_body<T: for<'de> Deserialize<'de>>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !is_json {
        return Err(ApiError::bad_request(
            "missing or wrong Content-Type: send the body as JSON with 'Content-Type: application/json'",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(format!("invalid request body: {error}")))
}

async fn unknown_route(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "route {} {} not found: the stand-in serves only the seven Management API routes JIT Guard calls",
        request.method(),
        request.uri().path()
    ))
}

async fn list_organization_members(State(app): State<App>, Path(slug): Path<String>) -> ApiResult {
    if !is_valid_slug(&slug) {
        return Err(ApiError::bad_request(format!(
            "invalid organization slug {slug:?}: use letters, digits, '_' and '-'"
        )));
    }
    let state = app.lock();
    let organization = state
        .organizations
        .iter()
        .find(|o| o.slug == slug)
        .ok_or_else(|| ApiError::not_found(format!("organization {slug} not found")))?;
    Ok(axum::Json(&organization.members).into_response())
}

async fn list_projects(State(app): State<App>) -> Response {
    axum::Json(&app.lock().projects).into_response()
}

async fn get_project(State(app): State<App>, Path(project_ref): Path<String>) -> ApiResult {
    check_ref(&project_ref)?;
    let state = app.lock();
    let project = state
        .project(&project_ref)
        .ok_or_else(|| ApiError::project_not_found(&project_ref))?;
    Ok(axum::Json(project).into_response())
}

/// `AuthorizeJitAccessBody`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizeBody {
    role: String,
    rhost: String,
}

/// Allows the token's user to assume `role` from `rhost` when a mapping for
/// that role exists, has not expired and lists a network containing `rhost`.
async fn authorize_jit_access(
    State(app): State<App>,
    Path(project_ref): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    check_ref(&project_ref)?;
    let request: AuthorizeBody = parse_body(&headers, &body)?;
    if request.role.is_empty() {
        return Err(ApiError::bad_request(
            "'role' is empty: name the database role to assume",
        ));
    }
    let rhost: IpAddr = request.rhost.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid rhost {:?}: send the client's IPv4 or IPv6 address",
            request.rhost
        ))
    })?;

    let state = app.lock();
    let project_jit = state
        .jit
        .get(&project_ref)
        .ok_or_else(|| ApiError::project_not_found(&project_ref))?;
    let user_id = state.token_user_id;
    let user = project_jit
        .users
        .iter()
        .find(|u| u.user_id == user_id)
        .ok_or_else(|| {
            ApiError::forbidden(format!(
                "user {user_id} has no JIT access on project {project_ref}"
            ))
        })?;

    let now = chrono::Utc::now().timestamp() as f64;
    let mut denial = format!(
        "user {user_id} has no mapping for role {:?} on project {project_ref}",
        request.role
    );
    // Several mappings may name the same role, and any one that passes allows.
    for user_role in user.user_roles.iter().filter(|r| r.role == request.role) {
        match check_mapping(user_role, rhost, now) {
            Ok(()) => {
                return Ok(
                    axum::Json(json!({ "user_id": user_id, "user_role": user_role }))
                        .into_response(),
                );
            }
            Err(reason) => denial = reason,
        }
    }
    Err(ApiError::forbidden(denial))
}

/// Checks expiry (`expires_at` in Unix seconds, when present) and the network.
/// A role without `allowed_networks` allows any address; a role with
/// `allowed_networks` allows only the listed CIDRs, so an empty object allows none.
fn check_mapping(user_role: &UserRole, rhost: IpAddr, now: f64) -> Result<(), String> {
    if let Some(expires_at) = user_role
        .expires_at
        .as_ref()
        .and_then(serde_json::Number::as_f64)
    {
        if expires_at <= now {
            return Err(format!(
                "the mapping for role {:?} expired at {expires_at} (Unix seconds)",
                user_role.role
            ));
        }
    }
    let Some(networks) = &user_role.allowed_networks else {
        return Ok(());
    };
    // An IPv4-mapped IPv6 address is matched as the IPv4 address it carries.
    let rhost = rhost.to_canonical();
    let inside = [&networks.allowed_cidrs, &networks.allowed_cidrs_v6]
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|cidr| cidr.cidr.parse::<IpNet>().ok())
        .any(|network| network.contains(&rhost));
    if inside {
        Ok(())
    } else {
        Err(format!(
            "rhost {rhost} is outside the allowed networks of role {:?}",
            user_role.role
        ))
    }
}

/// `UpdateJitAccessBody`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    user_id: String,
    roles: Vec<UserRole>,
}

/// Replaces the whole role list of one user on the project.
async fn update_jit_access(
    State(app): State<App>,
    Path(project_ref): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    check_ref(&project_ref)?;
    let request: UpdateBody = parse_body(&headers, &body)?;
    let user_id = parse_user_id(&request.user_id)?;
    for role in &request.roles {
        validate_role(role).map_err(ApiError::bad_request)?;
    }

    let mut state = app.lock();
    let project_jit = state
        .jit
        .get_mut(&project_ref)
        .ok_or_else(|| ApiError::project_not_found(&project_ref))?;
    match project_jit.users.iter_mut().find(|u| u.user_id == user_id) {
        Some(user) => user.user_roles = request.roles.clone(),
        None => project_jit.users.push(JitUser {
            user_id,
            user_roles: request.roles.clone(),
        }),
    }
    Ok(axum::Json(json!({ "user_id": user_id, "user_roles": request.roles })).into_response())
}

async fn list_jit_access(State(app): State<App>, Path(project_ref): Path<String>) -> ApiResult {
    check_ref(&project_ref)?;
    let state = app.lock();
    let (Some(project), Some(project_jit)) =
        (state.project(&project_ref), state.jit.get(&project_ref))
    else {
        return Err(ApiError::project_not_found(&project_ref));
    };

    let users = project_jit.users.iter().map(|user| {
        json!({
            "user_id": user.user_id,
            "primary_email": state.member_email(project, user.user_id),
            "invite_id": null,
            "expires_at": null,
            "user_roles": user.user_roles,
        })
    });
    let invites = project_jit.invites.iter().map(|invite| {
        json!({
            "user_id": null,
            "primary_email": invite.primary_email,
            "invite_id": invite.invite_id,
            "expires_at": invite.expires_at,
            "user_roles": invite.user_roles,
        })
    });
    let items: Vec<Value> = users.chain(invites).collect();
    Ok(axum::Json(json!({ "items": items })).into_response())
}

/// Removes all mappings of one user on the project and returns 200 with an empty body.
async fn delete_jit_access(
    State(app): State<App>,
    Path((project_ref, user_id)): Path<(String, String)>,
) -> ApiResult {
    check_ref(&project_ref)?;
    let user_id = parse_user_id(&user_id)?;

    let mut state = app.lock();
    let project_jit = state
        .jit
        .get_mut(&project_ref)
        .ok_or_else(|| ApiError::project_not_found(&project_ref))?;
    let before = project_jit.users.len();
    project_jit.users.retain(|u| u.user_id != user_id);
    if project_jit.users.len() == before {
        return Err(ApiError::not_found(format!(
            "user {user_id} has no JIT mappings on project {project_ref}"
        )));
    }
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Strictness;

    const TOKEN: &str = "sbp_test_token_0001";
    const FIRST_REF: &str = "abcdefghijklmnopqrst";
    const INACTIVE_REF: &str = "bcdefghijklmnopqrstu";
    const OTHER_ORG_REF: &str = "zyxwvutsrqponmlkjihg";
    const UNKNOWN_REF: &str = "qqqqqqqqqqqqqqqqqqqq";
    const ALICE: &str = "11111111-1111-4111-8111-111111111111";
    const BOB: &str = "22222222-2222-4222-8222-222222222222";
    const CAROL: &str = "33333333-3333-4333-8333-333333333333";
    const FAR_FUTURE: i64 = 4102444800;

    /// One response: the status and the body, parsed as JSON unless empty.
    #[derive(Debug)]
    struct Reply {
        status: u16,
        text: String,
    }

    impl Reply {
        fn json(&self) -> Value {
            serde_json::from_str(&self.text).unwrap_or_else(|error| {
                panic!("response body {:?} is not JSON: {error}", self.text)
            })
        }

        fn message(&self) -> String {
            self.json()["message"]
                .as_str()
                .unwrap_or_else(|| panic!("error body {:?} has no string 'message'", self.text))
                .to_owned()
        }
    }

    async fn call(stand_in: &StandIn, method: &str, path: &str, body: Option<Value>) -> Reply {
        call_with_token(stand_in, method, path, body, Some(TOKEN)).await
    }

    async fn call_with_token(
        stand_in: &StandIn,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("valid HTTP method");
        let mut request =
            crate::http_client().request(method, format!("{}{path}", stand_in.url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("stand-in responds on loopback");
        let status = response.status().as_u16();
        let text = response.text().await.expect("response body readable");
        Reply { status, text }
    }

    fn jit_path(project_ref: &str) -> String {
        format!("/v1/projects/{project_ref}/database/jit")
    }

    fn list_item<'a>(list: &'a Value, user_id: &str) -> Option<&'a Value> {
        list["items"]
            .as_array()
            .expect("items is an array")
            .iter()
            .find(|item| item["user_id"] == user_id)
    }

    fn seed_with_token_user(user_id: &str) -> Value {
        let mut seed = load_seed(&StandIn::seed_path()).expect("seed file loads");
        seed["token_user_id"] = json!(user_id);
        seed
    }

    #[test]
    fn seed_path_points_at_fixture() {
        let path = StandIn::seed_path();

        assert!(path.is_absolute(), "{} is not absolute", path.display());
        assert!(path.is_file(), "{} does not exist", path.display());
    }

    #[tokio::test]
    async fn members_lists_organization() {
        let stand_in = StandIn::start(TOKEN).await;

        let reply = call(
            &stand_in,
            "GET",
            "/v1/organizations/acme-security/members",
            None,
        )
        .await;

        assert_eq!(reply.status, 200, "{}", reply.text);
        let members = reply.json();
        let members = members.as_array().expect("members is an array");
        assert!(members.len() >= 3, "{members:?}");
        assert!(members.iter().any(|m| m["mfa_enabled"] == false));
        let without_avatar = members
            .iter()
            .find(|m| m["avatar_url"].is_null())
            .expect("one member has avatar_url null");
        assert!(
            without_avatar
                .as_object()
                .expect("member is an object")
                .contains_key("avatar_url"),
            "avatar_url must be present as null, not omitted"
        );
        assert_eq!(members[0]["user_id"], ALICE);
    }

    #[tokio::test]
    async fn members_unknown_or_invalid_slug() {
        let stand_in = StandIn::start(TOKEN).await;

        let unknown = call(
            &stand_in,
            "GET",
            "/v1/organizations/no-such-org/members",
            None,
        )
        .await;
        let invalid = call(
            &stand_in,
            "GET",
            "/v1/organizations/acme%20security/members",
            None,
        )
        .await;

        assert_eq!(unknown.status, 404, "{}", unknown.text);
        assert!(
            unknown.message().contains("no-such-org"),
            "{}",
            unknown.text
        );
        assert_eq!(invalid.status, 400, "{}", invalid.text);
    }

    #[tokio::test]
    async fn projects_lists_all() {
        let stand_in = StandIn::start(TOKEN).await;

        let reply = call(&stand_in, "GET", "/v1/projects", None).await;

        assert_eq!(reply.status, 200, "{}", reply.text);
        let projects = reply.json();
        let refs: Vec<&str> = projects
            .as_array()
            .expect("projects is an array")
            .iter()
            .map(|p| p["ref"].as_str().expect("ref is a string"))
            .collect();
        assert_eq!(refs, [FIRST_REF, INACTIVE_REF, OTHER_ORG_REF]);
        assert_eq!(projects[0]["status"], "ACTIVE_HEALTHY");
        assert_eq!(projects[0]["organization_slug"], "acme-security");
        assert_eq!(projects[1]["status"], "INACTIVE");
        assert_ne!(projects[2]["organization_slug"], "acme-security");
    }

    #[tokio::test]
    async fn project_get_by_ref() {
        let stand_in = StandIn::start(TOKEN).await;

        let reply = call(&stand_in, "GET", &format!("/v1/projects/{FIRST_REF}"), None).await;

        assert_eq!(reply.status, 200, "{}", reply.text);
        let project = reply.json();
        assert_eq!(project["ref"], FIRST_REF);
        assert_eq!(
            project["database"]["host"],
            format!("db.{FIRST_REF}.supabase.co")
        );
    }

    #[tokio::test]
    async fn project_unknown_ref_is_404() {
        let stand_in = StandIn::start(TOKEN).await;

        for path in [
            format!("/v1/projects/{UNKNOWN_REF}"),
            format!("/v1/projects/{UNKNOWN_REF}/database/jit/list"),
            format!("/v1/projects/{UNKNOWN_REF}/database/jit/{ALICE}"),
        ] {
            let method = if path.ends_with(ALICE) {
                "DELETE"
            } else {
                "GET"
            };
            let reply = call(&stand_in, method, &path, None).await;
            assert_eq!(reply.status, 404, "{method} {path}: {}", reply.text);
            assert!(reply.message().contains(UNKNOWN_REF), "{}", reply.text);
        }
    }

    #[tokio::test]
    async fn project_invalid_ref_is_400() {
        let stand_in = StandIn::start(TOKEN).await;

        for bad_ref in [
            "ABCDEFGHIJKLMNOPQRST",
            "abcdefghij",
            "abcdefghijklmnopqrs1",
            "abcdefghijklmnopqrstu",
        ] {
            let reply = call(&stand_in, "GET", &format!("/v1/projects/{bad_ref}"), None).await;
            assert_eq!(reply.status, 400, "ref {bad_ref}: {}", reply.text);
            assert!(reply.message().contains(bad_ref), "{}", reply.text);
        }
    }

    #[tokio::test]
    async fn auth_missing_or_wrong_token_is_401() {
        let stand_in = StandIn::start(TOKEN).await;

        let missing = call_with_token(&stand_in, "GET", "/v1/projects", None, None).await;
        let wrong = call_with_token(&stand_in, "GET", "/v1/projects", None, Some("other")).await;
        let unknown_route = call_with_token(&stand_in, "GET", "/v1/nothing", None, None).await;

        for reply in [&missing, &wrong, &unknown_route] {
            assert_eq!(reply.status, 401, "{}", reply.text);
            assert_eq!(reply.json(), json!({ "message": "Unauthorized" }));
        }
    }

    #[tokio::test]
    async fn auth_scheme_is_case_insensitive() {
        let stand_in = StandIn::start(TOKEN).await;

        let response = crate::http_client()
            .get(format!("{}/v1/projects", stand_in.url()))
            .header("Authorization", format!("bearer {TOKEN}"))
            .send()
            .await
            .expect("stand-in responds");

        assert_eq!(response.status().as_u16(), 200);
    }

    #[tokio::test]
    async fn auth_token_rotation() {
        let stand_in = StandIn::start(TOKEN).await;

        stand_in.set_token("rotated-token");
        let old = call_with_token(&stand_in, "GET", "/v1/projects", None, Some(TOKEN)).await;
        let new = call_with_token(
            &stand_in,
            "GET",
            "/v1/projects",
            None,
            Some("rotated-token"),
        )
        .await;

        assert_eq!(old.status, 401, "{}", old.text);
        assert_eq!(new.status, 200, "{}", new.text);
    }

    #[tokio::test]
    async fn unknown_route_is_404_json() {
        let stand_in = StandIn::start(TOKEN).await;

        let reply = call(&stand_in, "GET", "/v1/nothing", None).await;

        assert_eq!(reply.status, 404, "{}", reply.text);
        assert!(reply.message().contains("/v1/nothing"), "{}", reply.text);
    }

    #[tokio::test]
    async fn list_jit_shows_users_and_invite() {
        let stand_in = StandIn::start(TOKEN).await;

        let reply = call(
            &stand_in,
            "GET",
            &format!("{}/list", jit_path(FIRST_REF)),
            None,
        )
        .await;

        assert_eq!(reply.status, 200, "{}", reply.text);
        let list = reply.json();
        let alice = list_item(&list, ALICE).expect("alice is listed");
        assert_eq!(alice["primary_email"], "alice@example.com");
        assert!(alice["invite_id"].is_null());
        assert!(alice["expires_at"].is_null());
        assert_eq!(alice["user_roles"][0]["role"], "postgres");
        assert_eq!(
            alice["user_roles"][0]["expires_at"].as_i64(),
            Some(FAR_FUTURE)
        );
        assert_eq!(
            alice["user_roles"][0]["allowed_networks"]["allowed_cidrs_v6"][0]["cidr"],
            "2001:db8::/32"
        );
        assert!(list_item(&list, BOB).is_some(), "bob is listed");

        let invite = list["items"]
            .as_array()
            .expect("items is an array")
            .iter()
            .find(|item| item["user_id"].is_null())
            .expect("the pending invite is listed with user_id null");
        assert_eq!(invite["primary_email"], "dave@example.com");
        assert!(invite["invite_id"].is_string());
        assert!(invite["expires_at"].is_string());
    }

    #[tokio::test]
    async fn list_jit_empty_for_project_without_mappings() {
        let stand_in = StandIn::start(TOKEN).await;

        let reply = call(
            &stand_in,
            "GET",
            &format!("{}/list", jit_path(INACTIVE_REF)),
            None,
        )
        .await;

        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json(), json!({ "items": [] }));
    }

    #[tokio::test]
    async fn update_replaces_role_list() {
        let stand_in = StandIn::start(TOKEN).await;
        let roles = json!([{
            "role": "supabase_read_only_user",
            "expires_at": 4102444800i64,
            "allowed_networks": { "allowed_cidrs": [{ "cidr": "192.0.2.0/24" }] },
            "branches_only": true
        }]);

        let reply = call(
            &stand_in,
            "PUT",
            &jit_path(FIRST_REF),
            Some(json!({ "user_id": ALICE, "roles": roles })),
        )
        .await;
        let list = call(
            &stand_in,
            "GET",
            &format!("{}/list", jit_path(FIRST_REF)),
            None,
        )
        .await;

        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(
            reply.json(),
            json!({ "user_id": ALICE, "user_roles": roles })
        );
        let alice = list_item(&list.json(), ALICE)
            .cloned()
            .expect("alice is listed");
        assert_eq!(alice["user_roles"], roles, "the old roles must be gone");
        assert!(
            list_item(&list.json(), BOB).is_some(),
            "bob's mappings are untouched"
        );
    }

    #[tokio::test]
    async fn update_adds_new_user() {
        let stand_in = StandIn::start(TOKEN).await;
        let roles = json!([{ "role": "postgres" }]);

        let reply = call(
            &stand_in,
            "PUT",
            &jit_path(FIRST_REF),
            Some(json!({ "user_id": CAROL, "roles": roles })),
        )
        .await;
        let list = call(
            &stand_in,
            "GET",
            &format!("{}/list", jit_path(FIRST_REF)),
            None,
        )
        .await;

        assert_eq!(reply.status, 200, "{}", reply.text);
        let carol = list_item(&list.json(), CAROL)
            .cloned()
            .expect("carol is listed");
        assert_eq!(carol["user_roles"], roles);
        assert_eq!(carol["primary_email"], "carol@example.com");
    }

    #[tokio::test]
    async fn update_rejects_invalid_bodies() {
        let stand_in = StandIn::start(TOKEN).await;
        let cases = [
            (
                "response field name",
                json!({ "user_id": ALICE, "user_roles": [{ "role": "postgres" }] }),
            ),
            (
                "extra field",
                json!({ "user_id": ALICE, "roles": [], "comment": "x" }),
            ),
            ("missing roles", json!({ "user_id": ALICE })),
            (
                "user_id not a uuid",
                json!({ "user_id": "alice", "roles": [] }),
            ),
            (
                "empty role",
                json!({ "user_id": ALICE, "roles": [{ "role": "" }] }),
            ),
            (
                "string expires_at",
                json!({ "user_id": ALICE, "roles": [{ "role": "postgres", "expires_at": "2099-01-01" }] }),
            ),
            (
                "null expires_at",
                json!({ "user_id": ALICE, "roles": [{ "role": "postgres", "expires_at": null }] }),
            ),
            (
                "unknown role field",
                json!({ "user_id": ALICE, "roles": [{ "role": "postgres", "ttl": 60 }] }),
            ),
            (
                "cidr without prefix",
                json!({ "user_id": ALICE, "roles": [{ "role": "postgres", "allowed_networks": { "allowed_cidrs": [{ "cidr": "not-a-cidr" }] } }] }),
            ),
            (
                "IPv6 cidr in v4 list",
                json!({ "user_id": ALICE, "roles": [{ "role": "postgres", "allowed_networks": { "allowed_cidrs": [{ "cidr": "2001:db8::/32" }] } }] }),
            ),
            (
                "branches_only not bool",
                json!({ "user_id": ALICE, "roles": [{ "role": "postgres", "branches_only": "yes" }] }),
            ),
        ];

        for (case, body) in cases {
            let reply = call(&stand_in, "PUT", &jit_path(FIRST_REF), Some(body)).await;
            assert_eq!(reply.status, 400, "{case}: {}", reply.text);
            assert!(!reply.message().is_empty(), "{case}: empty message");
        }
        let list = call(
            &stand_in,
            "GET",
            &format!("{}/list", jit_path(FIRST_REF)),
            None,
        )
        .await;
        let alice = list_item(&list.json(), ALICE)
            .cloned()
            .expect("alice is listed");
        assert_eq!(
            alice["user_roles"].as_array().map(Vec::len),
            Some(3),
            "rejected bodies changed state"
        );
    }

    #[tokio::test]
    async fn update_names_unknown_field() {
        let stand_in = StandIn::start(TOKEN).await;

        let reply = call(
            &stand_in,
            "PUT",
            &jit_path(FIRST_REF),
            Some(json!({ "user_id": ALICE, "user_roles": [] })),
        )
        .await;

        assert_eq!(reply.status, 400, "{}", reply.text);
        assert!(reply.message().contains("user_roles"), "{}", reply.text);
    }

    #[tokio::test]
    async fn update_requires_json_content_type() {
        let stand_in = StandIn::start(TOKEN).await;

        let response = crate::http_client()
            .put(format!("{}{}", stand_in.url(), jit_path(FIRST_REF)))
            .bearer_auth(TOKEN)
            .body(json!({ "user_id": ALICE, "roles": [] }).to_string())
            .send()
            .await
            .expect("stand-in responds");

        assert_eq!(response.status().as_u16(), 400);
    }

    #[tokio::test]
    async fn update_unknown_ref_is_404() {
        let stand_in = StandIn::start(TOKEN).await;

        let reply = call(
            &stand_in,
            "PUT",
            &jit_path(UNKNOWN_REF),
            Some(json!({ "user_id": ALICE, "roles": [] })),
        )
        .await;

        assert_eq!(reply.status, 404, "{}", reply.text);
    }

    async fn authorize(stand_in: &StandIn, project_ref: &str, role: &str, rhost: &str) -> Reply {
        call(
            stand_in,
            "POST",
            &jit_path(project_ref),
            Some(json!({ "role": role, "rhost": rhost })),
        )
        .await
    }

    #[tokio::test]
    async fn authorize_allows_mapped_role() {
        let stand_in = StandIn::start(TOKEN).await;
        let cases = [
            ("postgres", "203.0.113.10"),
            ("postgres", "2001:db8::42"),
            ("postgres", "::ffff:203.0.113.10"),
            // This role has no allowed_networks, so any address is allowed.
            ("supabase_read_only_user", "192.0.2.200"),
        ];

        for (role, rhost) in cases {
            let reply = authorize(&stand_in, FIRST_REF, role, rhost).await;
            assert_eq!(reply.status, 200, "{role} from {rhost}: {}", reply.text);
            let body = reply.json();
            assert_eq!(body["user_id"], ALICE);
            assert_eq!(body["user_role"]["role"], role);
            assert_eq!(body["user_role"]["expires_at"].as_i64(), Some(FAR_FUTURE));
        }
    }

    #[tokio::test]
    async fn authorize_denies_with_403() {
        let stand_in = StandIn::start(TOKEN).await;
        let cases = [
            (FIRST_REF, "postgres", "198.51.100.7", "outside"),
            (FIRST_REF, "postgres", "2001:db9::1", "outside"),
            (FIRST_REF, "service_role", "203.0.113.10", "no mapping"),
            (FIRST_REF, "supabase_admin", "203.0.113.10", "expired"),
            (INACTIVE_REF, "postgres", "203.0.113.10", "no JIT access"),
        ];

        for (project_ref, role, rhost, reason) in cases {
            let reply = authorize(&stand_in, project_ref, role, rhost).await;
            assert_eq!(
                reply.status, 403,
                "{role} from {rhost} on {project_ref}: {}",
                reply.text
            );
            assert!(
                reply.message().contains(reason),
                "expected {reason:?} in {}",
                reply.text
            );
        }
    }

    #[tokio::test]
    async fn authorize_checks_token_user() {
        let stand_in = StandIn::start_with_seed(TOKEN, seed_with_token_user(CAROL)).await;

        let reply = authorize(&stand_in, FIRST_REF, "postgres", "203.0.113.10").await;

        assert_eq!(reply.status, 403, "{}", reply.text);
        assert!(reply.message().contains(CAROL), "{}", reply.text);
    }

    #[tokio::test]
    async fn authorize_follows_update() {
        let stand_in = StandIn::start(TOKEN).await;

        let before = authorize(&stand_in, FIRST_REF, "postgres", "192.0.2.1").await;
        let update = call(
            &stand_in,
            "PUT",
            &jit_path(FIRST_REF),
            Some(json!({ "user_id": ALICE, "roles": [{ "role": "postgres", "allowed_networks": { "allowed_cidrs": [{ "cidr": "192.0.2.0/24" }] } }] })),
        )
        .await;
        let after = authorize(&stand_in, FIRST_REF, "postgres", "192.0.2.1").await;
        let old_network = authorize(&stand_in, FIRST_REF, "postgres", "203.0.113.10").await;

        assert_eq!(before.status, 403, "{}", before.text);
        assert_eq!(update.status, 200, "{}", update.text);
        assert_eq!(after.status, 200, "{}", after.text);
        assert_eq!(old_network.status, 403, "{}", old_network.text);
    }

    #[tokio::test]
    async fn authorize_rejects_invalid_bodies() {
        let stand_in = StandIn::start(TOKEN).await;
        let cases = [
            json!({ "role": "postgres" }),
            json!({ "role": "", "rhost": "203.0.113.10" }),
            json!({ "role": "postgres", "rhost": "not an address" }),
            json!({ "role": "postgres", "rhost": "203.0.113.10", "extra": 1 }),
        ];

        for body in cases {
            let reply = call(&stand_in, "POST", &jit_path(FIRST_REF), Some(body.clone())).await;
            assert_eq!(reply.status, 400, "{body}: {}", reply.text);
        }
        let unknown = authorize(&stand_in, UNKNOWN_REF, "postgres", "203.0.113.10").await;
        assert_eq!(unknown.status, 404, "{}", unknown.text);
    }

    #[tokio::test]
    async fn delete_removes_user() {
        let stand_in = StandIn::start(TOKEN).await;
        let path = format!("{}/{BOB}", jit_path(FIRST_REF));

        let first = call(&stand_in, "DELETE", &path, None).await;
        let second = call(&stand_in, "DELETE", &path, None).await;
        let list = call(
            &stand_in,
            "GET",
            &format!("{}/list", jit_path(FIRST_REF)),
            None,
        )
        .await;

        assert_eq!(first.status, 200, "{}", first.text);
        assert_eq!(first.text, "", "delete answers with an empty body");
        assert_eq!(second.status, 404, "{}", second.text);
        assert!(
            list_item(&list.json(), BOB).is_none(),
            "bob is still listed"
        );
        assert!(
            list_item(&list.json(), ALICE).is_some(),
            "alice was removed too"
        );
    }

    #[tokio::test]
    async fn delete_invalid_user_id_is_400() {
        let stand_in = StandIn::start(TOKEN).await;

        let reply = call(
            &stand_in,
            "DELETE",
            &format!("{}/not-a-uuid", jit_path(FIRST_REF)),
            None,
        )
        .await;

        assert_eq!(reply.status, 400, "{}", reply.text);
    }

    #[tokio::test]
    async fn request_log_records_without_token() {
        let stand_in = StandIn::start(TOKEN).await;
        let body = json!({ "role": "postgres", "rhost": "203.0.113.10" });

        call_with_token(&stand_in, "GET", "/v1/projects?limit=5", None, None).await;
        call(&stand_in, "POST", &jit_path(FIRST_REF), Some(body.clone())).await;

        let requests = stand_in.requests();
        assert_eq!(stand_in.request_count(), 2);
        assert_eq!(requests[0].method, "GET");
        assert_eq!(requests[0].path, "/v1/projects");
        assert_eq!(requests[0].query.as_deref(), Some("limit=5"));
        assert_eq!(requests[0].body, None);
        assert!(!requests[0].authorized);
        assert_eq!(requests[1].method, "POST");
        assert_eq!(requests[1].path, jit_path(FIRST_REF));
        assert_eq!(requests[1].query, None);
        assert_eq!(requests[1].body, Some(body));
        assert!(requests[1].authorized);
        let serialized = serde_json::to_string(&requests).expect("log serializes");
        assert!(
            !serialized.contains(TOKEN),
            "the token leaked into the log: {serialized}"
        );

        stand_in.clear_requests();
        assert_eq!(stand_in.request_count(), 0);
    }

    #[tokio::test]
    async fn request_log_keeps_non_json_body() {
        let stand_in = StandIn::start(TOKEN).await;

        crate::http_client()
            .put(format!("{}{}", stand_in.url(), jit_path(FIRST_REF)))
            .bearer_auth(TOKEN)
            .body("not json")
            .send()
            .await
            .expect("stand-in responds");

        assert_eq!(stand_in.requests()[0].body, Some(json!("not json")));
    }

    #[tokio::test]
    async fn drop_stops_server() {
        let stand_in = StandIn::start(TOKEN).await;
        let address = stand_in.address();
        assert_eq!(
            call(&stand_in, "GET", "/v1/projects", None).await.status,
            200
        );

        drop(stand_in);

        // Graceful shutdown runs on the server task, so give it a moment.
        let mut refused = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(address).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(refused, "{address} still accepts connections after drop");
    }

    #[tokio::test]
    async fn start_rejects_bad_options_and_seeds() {
        let seed = load_seed(&StandIn::seed_path()).expect("seed file loads");
        let public = Options {
            address: "0.0.0.0:0".parse().expect("valid address"),
            print_requests: false,
        };
        let mut bad_ref = seed.clone();
        bad_ref["projects"][0]["ref"] = json!("ABC");
        let mut unknown_org = seed.clone();
        unknown_org["projects"][0]["organization_slug"] = json!("nobody");
        let mut bad_cidr = seed.clone();
        bad_cidr["jit"][FIRST_REF]["users"][0]["user_roles"][0]["allowed_networks"]["allowed_cidrs"]
            [0]["cidr"] = json!("203.0.113.0");

        let cases = [
            ("public address", TOKEN, seed.clone(), public, "loopback"),
            ("empty token", "", seed.clone(), Options::default(), "token"),
            ("bad ref", TOKEN, bad_ref, Options::default(), "ABC"),
            (
                "unknown org",
                TOKEN,
                unknown_org,
                Options::default(),
                "nobody",
            ),
            (
                "bad cidr",
                TOKEN,
                bad_cidr,
                Options::default(),
                "203.0.113.0",
            ),
        ];
        for (case, token, seed, options, expected) in cases {
            match StandIn::start_with_options(token, seed, options).await {
                Ok(_) => panic!("{case}: the stand-in started"),
                Err(error) => assert!(error.to_string().contains(expected), "{case}: {error}"),
            }
        }
    }

    // -----------------------------------------------------------------------
    // Responses against the Management API's OpenAPI document
    // -----------------------------------------------------------------------

    /// Builds the validator of the 200 response of `operation_id` with every
    /// object closed, so a field the document does not list fails. Returns
    /// `None` when that response has no JSON body.
    fn response_validator(spec: &Spec, operation_id: &str) -> Option<Arc<jsonschema::Validator>> {
        spec.response_validator(operation_id, "200", Strictness::ClosedObjects)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn assert_matches_spec(spec: &Spec, operation_id: &str, reply: &Reply) {
        assert_eq!(reply.status, 200, "{operation_id}: {}", reply.text);
        match response_validator(spec, operation_id) {
            Some(validator) => {
                let body = reply.json();
                let errors: Vec<String> = validator
                    .iter_errors(&body)
                    .map(|error| format!("{error} at {}", error.instance_path()))
                    .collect();
                assert!(
                    errors.is_empty(),
                    "{operation_id} response {body} breaks the schema: {errors:#?}"
                );
            }
            None => assert_eq!(
                reply.text, "",
                "{operation_id} defines no body, so the response must be empty"
            ),
        }
    }

    #[tokio::test]
    async fn responses_match_openapi_schemas() {
        let Some(spec) = Spec::official_or_skip("the response schema check") else {
            return;
        };
        let stand_in = StandIn::start(TOKEN).await;

        for slug in ["acme-security", "globex-labs"] {
            let reply = call(
                &stand_in,
                "GET",
                &format!("/v1/organizations/{slug}/members"),
                None,
            )
            .await;
            assert_matches_spec(&spec, "v1-list-organization-members", &reply);
        }

        let reply = call(&stand_in, "GET", "/v1/projects", None).await;
        assert_matches_spec(&spec, "v1-list-all-projects", &reply);

        for project_ref in [FIRST_REF, INACTIVE_REF, OTHER_ORG_REF] {
            let reply = call(
                &stand_in,
                "GET",
                &format!("/v1/projects/{project_ref}"),
                None,
            )
            .await;
            assert_matches_spec(&spec, "v1-get-project", &reply);
        }

        for (role, rhost) in [
            ("postgres", "2001:db8::1"),
            ("supabase_read_only_user", "192.0.2.1"),
        ] {
            let reply = authorize(&stand_in, FIRST_REF, role, rhost).await;
            assert_matches_spec(&spec, "v1-authorize-jit-access", &reply);
        }

        let list = call(
            &stand_in,
            "GET",
            &format!("{}/list", jit_path(FIRST_REF)),
            None,
        )
        .await;
        assert_matches_spec(&spec, "v1-list-jit-access", &list);

        let update_body = json!({
            "user_id": CAROL,
            "roles": [
                {
                    "role": "postgres",
                    "expires_at": 4102444800i64,
                    "allowed_networks": {
                        "allowed_cidrs": [{ "cidr": "192.0.2.0/24" }],
                        "allowed_cidrs_v6": [{ "cidr": "2001:db8::/48" }]
                    },
                    "branches_only": false
                },
                { "role": "supabase_read_only_user", "expires_at": 4102444800.5 },
                { "role": "supabase_etl_admin" }
            ]
        });
        let reply = call(&stand_in, "PUT", &jit_path(FIRST_REF), Some(update_body)).await;
        assert_matches_spec(&spec, "v1-update-jit-access", &reply);

        // A user added by update has no seeded list entry of its own.
        let list = call(
            &stand_in,
            "GET",
            &format!("{}/list", jit_path(FIRST_REF)),
            None,
        )
        .await;
        assert_matches_spec(&spec, "v1-list-jit-access", &list);
        let empty_list = call(
            &stand_in,
            "GET",
            &format!("{}/list", jit_path(INACTIVE_REF)),
            None,
        )
        .await;
        assert_matches_spec(&spec, "v1-list-jit-access", &empty_list);

        let reply = call(
            &stand_in,
            "DELETE",
            &format!("{}/{BOB}", jit_path(FIRST_REF)),
            None,
        )
        .await;
        assert_matches_spec(&spec, "v1-delete-jit-access", &reply);
    }

    /// The check above is only worth something if the converted schemas
    /// reject what the document forbids.
    #[test]
    fn converted_schemas_reject_wrong_shapes() {
        let Some(spec) = Spec::official_or_skip("the response schema check") else {
            return;
        };
        let member = json!({
            "user_id": ALICE, "user_name": "alice", "role_name": "Owner", "mfa_enabled": true, "avatar_url": null
        });
        let members =
            response_validator(&spec, "v1-list-organization-members").expect("members has a body");
        let list = response_validator(&spec, "v1-list-jit-access").expect("list has a body");
        let update = response_validator(&spec, "v1-update-jit-access").expect("update has a body");

        assert!(
            members.is_valid(&json!([member])),
            "nullable avatar_url must accept null"
        );
        let mut without_avatar = member.clone();
        without_avatar
            .as_object_mut()
            .expect("object")
            .remove("avatar_url");
        assert!(
            !members.is_valid(&json!([without_avatar])),
            "avatar_url is required"
        );
        let mut extra = member.clone();
        extra["invented"] = json!(1);
        assert!(
            !members.is_valid(&json!([extra])),
            "fields outside the document must fail"
        );

        let item = json!({
            "user_id": ALICE, "primary_email": null, "invite_id": null, "expires_at": null,
            "user_roles": [{ "role": "postgres", "expires_at": FAR_FUTURE }]
        });
        assert!(list.is_valid(&json!({ "items": [item] })));
        let mut bad_uuid = item.clone();
        bad_uuid["user_id"] = json!("alice");
        assert!(
            !list.is_valid(&json!({ "items": [bad_uuid] })),
            "format uuid must be asserted"
        );
        let mut string_expiry = item.clone();
        string_expiry["user_roles"][0]["expires_at"] = json!("4102444800");
        assert!(
            !list.is_valid(&json!({ "items": [string_expiry] })),
            "role expires_at is a number"
        );

        assert!(
            !update.is_valid(&json!({ "user_id": ALICE, "roles": [] })),
            "the response field is user_roles"
        );
    }

    // -----------------------------------------------------------------------
    // Requests against the Management API's OpenAPI document
    // -----------------------------------------------------------------------

    /// Starts a stand-in that checks requests against the official document,
    /// or returns `None` when the document is absent.
    async fn start_validating(check: &str) -> Option<StandIn> {
        let spec = Spec::official_or_skip(check)?;
        let stand_in = StandIn::start(TOKEN).await;
        stand_in.validate_against_spec(spec);
        Some(stand_in)
    }

    #[tokio::test]
    async fn spec_mode_passes_valid_requests() {
        let Some(stand_in) = start_validating("the request check").await else {
            return;
        };
        let update = json!({ "user_id": CAROL, "roles": [{ "role": "jit_readonly", "expires_at": FAR_FUTURE }] });

        let replies = [
            call(
                &stand_in,
                "GET",
                "/v1/organizations/acme-security/members",
                None,
            )
            .await,
            call(&stand_in, "GET", "/v1/projects", None).await,
            call(&stand_in, "GET", &format!("/v1/projects/{FIRST_REF}"), None).await,
            authorize(&stand_in, FIRST_REF, "postgres", "203.0.113.10").await,
            call(&stand_in, "PUT", &jit_path(FIRST_REF), Some(update)).await,
            call(
                &stand_in,
                "GET",
                &format!("{}/list", jit_path(FIRST_REF)),
                None,
            )
            .await,
            call(
                &stand_in,
                "DELETE",
                &format!("{}/{BOB}", jit_path(FIRST_REF)),
                None,
            )
            .await,
        ];

        for reply in &replies {
            assert_eq!(reply.status, 200, "{}", reply.text);
        }
        assert!(stand_in.validates_against_spec());
        assert_eq!(stand_in.spec_violations(), []);
    }

    #[tokio::test]
    async fn spec_mode_records_user_roles_body() {
        let Some(stand_in) = start_validating("the request check").await else {
            return;
        };
        let body = json!({ "user_id": CAROL, "user_roles": [{ "role": "jit_readonly" }] });

        call(&stand_in, "PUT", &jit_path(FIRST_REF), Some(body)).await;

        let violations = stand_in.spec_violations();
        assert_eq!(violations.len(), 1, "{violations:#?}");
        assert_eq!(violations[0].method, "PUT");
        assert_eq!(violations[0].path, jit_path(FIRST_REF));
        assert_eq!(
            violations[0].problem,
            "body: \"roles\" is a required property"
        );
    }

    #[tokio::test]
    async fn spec_mode_records_nineteen_letter_ref() {
        let Some(stand_in) = start_validating("the request check").await else {
            return;
        };
        let short_ref = &FIRST_REF[..19];

        call(&stand_in, "GET", &format!("/v1/projects/{short_ref}"), None).await;

        let violations = stand_in.spec_violations();
        assert_eq!(violations.len(), 1, "{violations:#?}");
        assert_eq!(violations[0].path, format!("/v1/projects/{short_ref}"));
        assert_eq!(
            violations[0].problem,
            format!("path parameter ref: {short_ref:?} is shorter than 20 characters")
        );
    }

    #[tokio::test]
    async fn spec_mode_records_string_expires_at() {
        let Some(stand_in) = start_validating("the request check").await else {
            return;
        };
        let body = json!({ "user_id": CAROL, "roles": [{ "role": "jit_readonly", "expires_at": "4102444800" }] });

        call(&stand_in, "PUT", &jit_path(FIRST_REF), Some(body)).await;

        let violations = stand_in.spec_violations();
        assert_eq!(violations.len(), 1, "{violations:#?}");
        assert!(
            violations[0]
                .problem
                .starts_with("body/roles/0/expires_at:"),
            "{}",
            violations[0]
        );
        assert!(
            violations[0].problem.contains("\"number\""),
            "{}",
            violations[0]
        );
    }

    #[tokio::test]
    async fn spec_mode_records_unknown_route_and_faulted_requests() {
        let Some(stand_in) = start_validating("the request check").await else {
            return;
        };
        stand_in.inject("GET", PROJECT_ROUTE, status_fault(503), Some(1));

        call(&stand_in, "GET", "/v1/nothing", None).await;
        call(&stand_in, "GET", "/v1/projects/abcdefghijklmnopqrs1", None).await;

        let problems: Vec<String> = stand_in
            .spec_violations()
            .into_iter()
            .map(|violation| violation.problem)
            .collect();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].contains("no path of the spec matches /v1/nothing"),
            "{problems:#?}"
        );
        assert!(
            problems[1].starts_with("path parameter ref"),
            "{problems:#?}"
        );
    }

    #[tokio::test]
    async fn spec_mode_is_off_by_default() {
        let stand_in = StandIn::start(TOKEN).await;

        call(&stand_in, "GET", "/v1/projects/short", None).await;

        assert!(!stand_in.validates_against_spec());
        assert_eq!(stand_in.spec_violations(), []);
    }

    // -----------------------------------------------------------------------
    // Injected faults and latency
    // -----------------------------------------------------------------------

    /// Sends one request on a fresh client, so no pooled connection carries
    /// over between requests, and returns the response or the client error.
    async fn send(
        stand_in: &StandIn,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("valid HTTP method");
        let mut request =
            crate::http_client().request(method, format!("{}{path}", stand_in.url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await
    }

    fn header_of(response: &reqwest::Response, name: &str) -> Option<String> {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().expect("ASCII header").to_owned())
    }

    /// Returns a path that the route template `route` matches.
    fn concrete_path(route: &str) -> String {
        route
            .replace("{slug}", "acme-security")
            .replace("{ref}", FIRST_REF)
            .replace("{user_id}", BOB)
    }

    fn status_fault(status: u16) -> Fault {
        Fault::Status { status, body: None }
    }

    /// Sends a raw HTTP/1.1 request over TCP and returns what came back before
    /// the server closed the connection, or the read error.
    async fn raw_exchange(stand_in: &StandIn, path: &str) -> io::Result<Vec<u8>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let mut stream = TcpStream::connect(stand_in.address()).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n",
            stand_in.address()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received))
            .await
            .expect("the stand-in closes the connection within 5 s")?;
        Ok(received)
    }

    fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| {
                payload
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
            })
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn fault_status_message_or_raw_body() {
        let stand_in = StandIn::start(TOKEN).await;
        let path = concrete_path(PROJECT_ROUTE);
        stand_in.inject("GET", PROJECT_ROUTE, status_fault(503), Some(1));
        let json_body = r#"{"message":"database is restarting"}"#;
        stand_in.inject(
            "GET",
            PROJECT_ROUTE,
            Fault::Status {
                status: 500,
                body: Some(json_body.into()),
            },
            Some(1),
        );
        stand_in.inject(
            "GET",
            PROJECT_ROUTE,
            Fault::Status {
                status: 502,
                body: Some("Bad Gateway from the proxy".into()),
            },
            Some(1),
        );

        let default_message = call(&stand_in, "GET", &path, None).await;
        let json_raw = send(&stand_in, "GET", &path, None, Some(TOKEN))
            .await
            .expect("a status fault gives a response");
        let json_raw_type = header_of(&json_raw, "content-type");
        let json_raw_status = json_raw.status().as_u16();
        let json_raw_text = json_raw.text().await.expect("body readable");
        let text_raw = send(&stand_in, "GET", &path, None, Some(TOKEN))
            .await
            .expect("a status fault gives a response");
        let text_raw_type = header_of(&text_raw, "content-type");
        let text_raw_status = text_raw.status().as_u16();
        let text_raw_text = text_raw.text().await.expect("body readable");
        let normal = call(&stand_in, "GET", &path, None).await;

        assert_eq!(default_message.status, 503, "{}", default_message.text);
        assert_eq!(
            default_message.json(),
            json!({ "message": "Service Unavailable" })
        );
        assert_eq!(json_raw_status, 500);
        assert_eq!(json_raw_text, json_body);
        assert_eq!(json_raw_type.as_deref(), Some("application/json"));
        assert_eq!(text_raw_status, 502);
        assert_eq!(text_raw_text, "Bad Gateway from the proxy");
        assert!(
            text_raw_type
                .as_deref()
                .is_some_and(|value| value.starts_with("text/plain")),
            "{text_raw_type:?}"
        );
        assert_eq!(normal.status, 200, "{}", normal.text);
        assert_eq!(normal.json()["ref"], FIRST_REF);
    }

    #[tokio::test]
    async fn fault_malformed_body_is_html() {
        let stand_in = StandIn::start(TOKEN).await;
        stand_in.inject("GET", PROJECTS_ROUTE, Fault::MalformedBody, Some(1));

        let response = send(&stand_in, "GET", PROJECTS_ROUTE, None, Some(TOKEN))
            .await
            .expect("a malformed body is still a response");
        let status = response.status().as_u16();
        let content_type = header_of(&response, "content-type");
        let text = response.text().await.expect("body readable");

        assert_eq!(status, 200);
        assert!(
            content_type
                .as_deref()
                .is_some_and(|value| value.starts_with("text/html")),
            "{content_type:?}"
        );
        assert_eq!(text, "<html>upstream proxy error</html>");
        assert!(serde_json::from_str::<Value>(&text).is_err());
    }

    #[tokio::test]
    async fn fault_wrong_shape_unexpected_object() {
        let stand_in = StandIn::start(TOKEN).await;
        stand_in.inject("GET", PROJECTS_ROUTE, Fault::WrongShape, Some(1));
        stand_in.inject("GET", PROJECT_ROUTE, Fault::WrongShape, Some(1));

        let list = call(&stand_in, "GET", PROJECTS_ROUTE, None).await;
        let project = call(&stand_in, "GET", &concrete_path(PROJECT_ROUTE), None).await;
        let normal_list = call(&stand_in, "GET", PROJECTS_ROUTE, None).await;

        assert_eq!(list.status, 200, "{}", list.text);
        assert_eq!(
            list.json(),
            json!({ "unexpected": true }),
            "an object where the route returns an array"
        );
        assert_eq!(project.status, 200, "{}", project.text);
        assert_eq!(project.json(), json!({ "unexpected": true }));
        assert!(normal_list.json().is_array(), "{}", normal_list.text);
    }

    #[tokio::test]
    async fn fault_rate_limited_sends_reset_headers() {
        let stand_in = StandIn::start(TOKEN).await;
        stand_in.inject(
            "POST",
            JIT_ROUTE,
            Fault::RateLimited { reset_seconds: 37 },
            Some(1),
        );

        let response = send(
            &stand_in,
            "POST",
            &jit_path(FIRST_REF),
            Some(json!({ "role": "postgres", "rhost": "203.0.113.10" })),
            Some(TOKEN),
        )
        .await
        .expect("a rate limit is a response");

        assert_eq!(response.status().as_u16(), 429);
        assert_eq!(
            header_of(&response, "x-ratelimit-reset").as_deref(),
            Some("37")
        );
        assert_eq!(
            header_of(&response, "x-ratelimit-limit").as_deref(),
            Some("120")
        );
        assert_eq!(
            header_of(&response, "x-ratelimit-remaining").as_deref(),
            Some("0")
        );
        assert_eq!(header_of(&response, "retry-after"), None);
        let body: Value = response.json().await.expect("a JSON error body");
        assert!(body["message"].is_string(), "{body}");
    }

    #[tokio::test]
    async fn fault_drop_connection_sends_no_bytes() {
        let stand_in = StandIn::start(TOKEN).await;
        let path = concrete_path(PROJECT_ROUTE);
        stand_in.inject("GET", PROJECT_ROUTE, Fault::DropConnection, Some(1));

        let dropped = raw_exchange(&stand_in, &path).await;
        let normal = raw_exchange(&stand_in, &path)
            .await
            .expect("the next connection gets a response");

        match dropped {
            Ok(bytes) => assert!(
                bytes.is_empty(),
                "expected EOF without bytes, got {:?}",
                String::from_utf8_lossy(&bytes)
            ),
            Err(error) => assert!(
                matches!(
                    error.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ),
                "expected EOF or a reset, got {error}"
            ),
        }
        assert!(
            normal.starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&normal)
        );
        assert_eq!(
            stand_in.requests()[0].fault.as_deref(),
            Some("drop connection")
        );
        assert_eq!(stand_in.requests()[1].fault, None);
    }

    #[tokio::test]
    async fn fault_drop_connection_client_error() {
        let stand_in = StandIn::start(TOKEN).await;
        let path = concrete_path(PROJECT_ROUTE);
        stand_in.inject("GET", PROJECT_ROUTE, Fault::DropConnection, Some(1));

        let error = send(&stand_in, "GET", &path, None, Some(TOKEN))
            .await
            .expect_err("a dropped connection gives no response");
        let normal = call(&stand_in, "GET", &path, None).await;

        assert!(error.status().is_none(), "{error:?}");
        assert!(
            error.is_connect() || error.is_request(),
            "expected a connection or request error, got {error:?}"
        );
        assert_eq!(normal.status, 200, "{}", normal.text);
        assert_eq!(
            stand_in.request_count(),
            2,
            "the client must not have retried"
        );
    }

    #[tokio::test]
    async fn fault_times_counts_down_then_normal() {
        let stand_in = StandIn::start(TOKEN).await;
        stand_in.inject("GET", PROJECTS_ROUTE, status_fault(503), Some(2));

        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(call(&stand_in, "GET", PROJECTS_ROUTE, None).await.status);
        }

        assert_eq!(statuses, [503, 503, 200, 200]);
    }

    #[tokio::test]
    async fn faults_play_in_queue_order() {
        let stand_in = StandIn::start(TOKEN).await;
        stand_in.inject("GET", PROJECTS_ROUTE, status_fault(503), Some(2));
        stand_in.inject(
            "GET",
            PROJECTS_ROUTE,
            Fault::RateLimited { reset_seconds: 5 },
            Some(1),
        );
        stand_in.inject("GET", PROJECTS_ROUTE, status_fault(500), Some(1));
        // Queues nothing.
        stand_in.inject("GET", PROJECTS_ROUTE, status_fault(404), Some(0));

        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(call(&stand_in, "GET", PROJECTS_ROUTE, None).await.status);
        }

        assert_eq!(statuses, [503, 503, 429, 500, 200]);
    }

    #[tokio::test]
    async fn fault_without_times_plays_until_cleared() {
        let stand_in = StandIn::start(TOKEN).await;
        stand_in.inject("GET", PROJECTS_ROUTE, status_fault(500), None);
        stand_in.inject("GET", PROJECT_ROUTE, status_fault(502), Some(10));

        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(call(&stand_in, "GET", PROJECTS_ROUTE, None).await.status);
        }
        stand_in.clear_faults();
        let after_list = call(&stand_in, "GET", PROJECTS_ROUTE, None).await;
        let after_project = call(&stand_in, "GET", &concrete_path(PROJECT_ROUTE), None).await;

        assert_eq!(statuses, [500, 500, 500]);
        assert_eq!(after_list.status, 200, "{}", after_list.text);
        assert_eq!(after_project.status, 200, "{}", after_project.text);
    }

    #[tokio::test]
    async fn fault_matches_method_and_route_only() {
        let stand_in = StandIn::start(TOKEN).await;
        stand_in.inject("GET", PROJECT_ROUTE, status_fault(503), None);
        stand_in.inject("post", JIT_ROUTE, status_fault(502), None);

        let projects = call(&stand_in, "GET", PROJECTS_ROUTE, None).await;
        let project = call(&stand_in, "GET", &concrete_path(PROJECT_ROUTE), None).await;
        let list = call(&stand_in, "GET", &concrete_path(JIT_LIST_ROUTE), None).await;
        let authorize_reply = authorize(&stand_in, FIRST_REF, "postgres", "203.0.113.10").await;
        let update = call(
            &stand_in,
            "PUT",
            &jit_path(FIRST_REF),
            Some(json!({ "user_id": CAROL, "roles": [{ "role": "postgres" }] })),
        )
        .await;
        let unknown = call(&stand_in, "GET", "/v1/nothing", None).await;

        assert_eq!(projects.status, 200, "{}", projects.text);
        assert_eq!(project.status, 503, "{}", project.text);
        assert_eq!(list.status, 200, "{}", list.text);
        assert_eq!(authorize_reply.status, 502, "{}", authorize_reply.text);
        assert_eq!(update.status, 200, "{}", update.text);
        assert_eq!(unknown.status, 404, "{}", unknown.text);
    }

    #[tokio::test]
    async fn fault_reaches_every_route() {
        let stand_in = StandIn::start(TOKEN).await;

        for (method, route) in ROUTES {
            stand_in.inject(method, route, status_fault(503), Some(1));
            let path = concrete_path(route);
            let reply = call(&stand_in, method, &path, None).await;
            assert_eq!(reply.status, 503, "{method} {path}: {}", reply.text);
        }
        let recorded: Vec<Option<String>> = stand_in
            .requests()
            .into_iter()
            .map(|request| request.fault)
            .collect();
        assert_eq!(recorded, vec![Some("status 503".to_owned()); ROUTES.len()]);
    }

    #[tokio::test]
    async fn fault_plays_before_token_check() {
        let stand_in = StandIn::start(TOKEN).await;
        stand_in.inject("GET", PROJECTS_ROUTE, status_fault(503), Some(1));

        let faulted = call_with_token(&stand_in, "GET", PROJECTS_ROUTE, None, None).await;
        let unfaulted = call_with_token(&stand_in, "GET", PROJECTS_ROUTE, None, None).await;

        assert_eq!(faulted.status, 503, "{}", faulted.text);
        assert_eq!(unfaulted.status, 401, "{}", unfaulted.text);
        let requests = stand_in.requests();
        assert!(!requests[0].authorized);
        assert_eq!(requests[0].fault.as_deref(), Some("status 503"));
        assert_eq!(requests[1].fault, None);
    }

    #[tokio::test]
    async fn faulted_put_leaves_state_unchanged() {
        let stand_in = StandIn::start(TOKEN).await;
        let faults = [
            status_fault(500),
            Fault::MalformedBody,
            Fault::WrongShape,
            Fault::DropConnection,
            Fault::RateLimited { reset_seconds: 60 },
        ];
        for fault in faults.clone() {
            stand_in.inject("PUT", JIT_ROUTE, fault, Some(1));
        }
        let update = json!({ "user_id": ALICE, "roles": [{ "role": "postgres" }] });

        for fault in &faults {
            let outcome = send(
                &stand_in,
                "PUT",
                &jit_path(FIRST_REF),
                Some(update.clone()),
                Some(TOKEN),
            )
            .await;
            match fault {
                Fault::DropConnection => assert!(outcome.is_err(), "{outcome:?}"),
                _ => assert!(outcome.is_ok(), "{fault}: {outcome:?}"),
            }
        }
        let list = call(
            &stand_in,
            "GET",
            &format!("{}/list", jit_path(FIRST_REF)),
            None,
        )
        .await;
        let applied = call(&stand_in, "PUT", &jit_path(FIRST_REF), Some(update)).await;

        let alice = list_item(&list.json(), ALICE)
            .cloned()
            .expect("alice is listed");
        assert_eq!(
            alice["user_roles"].as_array().map(Vec::len),
            Some(3),
            "a faulted PUT changed state: {alice}"
        );
        assert_eq!(
            applied.status, 200,
            "the same body unfaulted is valid: {}",
            applied.text
        );
        let recorded: Vec<Option<String>> = stand_in
            .requests()
            .into_iter()
            .map(|request| request.fault)
            .collect();
        assert_eq!(
            recorded,
            [
                Some("status 500".to_owned()),
                Some("malformed body".to_owned()),
                Some("wrong shape".to_owned()),
                Some("drop connection".to_owned()),
                Some("rate limited, reset in 60 s".to_owned()),
                None,
                None,
            ]
        );
    }

    #[tokio::test]
    async fn fault_delay_does_not_block_others() {
        let stand_in = StandIn::start(TOKEN).await;
        let delay = Duration::from_millis(1500);
        stand_in.inject("GET", PROJECT_ROUTE, Fault::Delay(delay), Some(1));
        let url = format!("{}{}", stand_in.url(), concrete_path(PROJECT_ROUTE));

        let started = std::time::Instant::now();
        let delayed = tokio::spawn(async move {
            let response = crate::http_client()
                .get(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("the delayed request gets a response");
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("a JSON project");
            (status, body, started.elapsed())
        });
        // Wait until the delayed request has arrived, so the next one overlaps it.
        while stand_in.request_count() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let other = call(&stand_in, "GET", PROJECTS_ROUTE, None).await;
        let delayed_done_first = delayed.is_finished();
        let (status, body, elapsed) = delayed.await.expect("the delayed request task ran");

        assert_eq!(other.status, 200, "{}", other.text);
        assert!(
            !delayed_done_first,
            "the other request waited for the delayed one"
        );
        assert_eq!(status, 200);
        assert_eq!(body["ref"], FIRST_REF);
        assert!(elapsed >= delay, "answered after {elapsed:?}");
        assert_eq!(stand_in.requests()[0].fault.as_deref(), Some("delay 1.5s"));
    }

    #[tokio::test]
    async fn latency_delays_responses_until_removed() {
        let stand_in = StandIn::start(TOKEN).await;
        let latency = Duration::from_millis(400);

        stand_in.set_latency(latency);
        let started = std::time::Instant::now();
        let slow = call(&stand_in, "GET", PROJECTS_ROUTE, None).await;
        let slow_elapsed = started.elapsed();
        let started = std::time::Instant::now();
        let unauthorized = call_with_token(&stand_in, "GET", PROJECTS_ROUTE, None, None).await;
        let unauthorized_elapsed = started.elapsed();
        stand_in.set_latency(Duration::ZERO);
        let started = std::time::Instant::now();
        let fast = call(&stand_in, "GET", PROJECTS_ROUTE, None).await;
        let fast_elapsed = started.elapsed();

        assert_eq!(slow.status, 200, "{}", slow.text);
        assert!(slow_elapsed >= latency, "answered after {slow_elapsed:?}");
        assert_eq!(unauthorized.status, 401, "{}", unauthorized.text);
        assert!(
            unauthorized_elapsed >= latency,
            "answered after {unauthorized_elapsed:?}"
        );
        assert_eq!(fast.status, 200, "{}", fast.text);
        assert!(
            fast_elapsed < latency,
            "still delayed after removal: {fast_elapsed:?}"
        );
    }

    #[test]
    fn fault_display_names() {
        let cases = [
            (status_fault(503), "status 503"),
            (Fault::Delay(Duration::from_millis(250)), "delay 250ms"),
            (Fault::MalformedBody, "malformed body"),
            (Fault::WrongShape, "wrong shape"),
            (Fault::DropConnection, "drop connection"),
            (
                Fault::RateLimited { reset_seconds: 30 },
                "rate limited, reset in 30 s",
            ),
        ];

        for (fault, name) in cases {
            assert_eq!(fault.to_string(), name);
        }
    }

    #[tokio::test]
    async fn inject_rejects_unknown_routes_and_statuses() {
        let stand_in = StandIn::start(TOKEN).await;
        let attempt = |method: &'static str, route: &'static str, fault: Fault| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                stand_in.inject(method, route, fault, None)
            }))
            .map_err(panic_message)
        };

        let concrete = attempt(
            "GET",
            "/v1/projects/abcdefghijklmnopqrst",
            status_fault(503),
        );
        let wrong_method = attempt("GET", JIT_ROUTE, status_fault(503));
        let not_final = attempt("GET", PROJECTS_ROUTE, status_fault(101));
        let too_large = attempt("GET", PROJECTS_ROUTE, status_fault(600));

        let message = concrete.expect_err("a concrete path is not a route template");
        for (method, route) in ROUTES {
            assert!(
                message.contains(&format!("{method} {route}")),
                "{method} {route} missing from: {message}"
            );
        }
        assert!(
            wrong_method
                .expect_err("JIT_ROUTE takes POST and PUT only")
                .contains("GET /v1/projects/{ref}/database/jit is not")
        );
        assert!(not_final.expect_err("101 is not final").contains("101"));
        assert!(too_large.expect_err("600 is no status").contains("600"));
        assert_eq!(
            call(&stand_in, "GET", PROJECTS_ROUTE, None).await.status,
            200,
            "a rejected inject queues nothing"
        );
    }
}
