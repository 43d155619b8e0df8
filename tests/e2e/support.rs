//! The end-to-end harness: moto server holding the token secret, the
//! Supabase stand-in, and function binaries under the local Runtime API.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use jit_guard_tests::events::{self, Caller, EventSpec};
use jit_guard_tests::moto::MotoServer;
use jit_guard_tests::runtime_api::{FunctionProcess, Outcome, function_binary};
use jit_guard_tests::spec::Spec;
use jit_guard_tests::stand_in::{StandIn, load_seed};
use serde_json::Value;

/// The access token the stand-in accepts; tests check it never leaks.
pub const TOKEN: &str = "sbp_e2e7c41d09a3f5b82e6d1c0f9a8b7e6d5c4b3a291f";
pub const SECRET_NAME: &str = "jit-guard/supabase-token";
pub const PROJECT: &str = "abcdefghijklmnopqrst";
pub const UNKNOWN_PROJECT: &str = "qqqqqqqqqqqqqqqqqqqq";
pub const ORGANIZATION: &str = "acme-security";
/// Seeded organization members: alice owns the token, bob (no MFA) and carol hold or receive grants.
pub const BOB: &str = "22222222-2222-4222-8222-222222222222";
pub const CAROL: &str = "33333333-3333-4333-8333-333333333333";
/// A member of another organization.
pub const ERIN: &str = "44444444-4444-4444-8444-444444444444";
/// An INACTIVE project of the same organization.
pub const INACTIVE_PROJECT: &str = "bcdefghijklmnopqrstu";
pub const CALLER_ARN: &str = "arn:aws:iam::123456789012:role/persona-workflows";

pub const INVOKE_TIMEOUT: Duration = Duration::from_secs(20);

/// An HTTP response as the function returned it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body_text: String,
    pub body: Value,
}

impl HttpResponse {
    /// Field names of a problem response's `errors` list.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| errors.iter().filter_map(|error| error["field"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }
}

pub struct Harness {
    pub moto: MotoServer,
    pub stand_in: StandIn,
    pub secret_arn: String,
    functions: Vec<FunctionProcess>,
    /// Every response body seen, for the token leak check.
    responses: std::sync::Mutex<Vec<String>>,
}

impl Harness {
    /// Starts moto with the token secret and the stand-in accepting the token,
    /// seeded from `tests/fixtures/seed.json`.
    pub async fn start() -> Harness {
        let seed = load_seed(&StandIn::seed_path()).unwrap_or_else(|error| panic!("{error}"));
        Harness::start_with_seed(seed).await
    }

    /// Starts like [`Harness::start`] with the stand-in serving `seed`. When
    /// Supabase's OpenAPI document is present, the stand-in checks every
    /// request the functions send against it.
    pub async fn start_with_seed(seed: Value) -> Harness {
        let moto = MotoServer::start().await;
        let secret_arn = moto.create_secret(SECRET_NAME, &format!("{{\"access_token\":\"{TOKEN}\"}}")).await;
        let stand_in = StandIn::start_with_seed(TOKEN, seed).await;
        if let Some(spec) = Spec::official() {
            stand_in.validate_against_spec(spec);
        }
        Harness { moto, stand_in, secret_arn, functions: Vec::new(), responses: Default::default() }
    }

    /// The environment a deployed function would have, pointed at the local stand-ins.
    pub fn function_env(&self) -> Vec<(String, String)> {
        let mut env = self.moto.aws_env();
        env.push(("SUPABASE_API_URL".into(), self.stand_in.url()));
        env.push(("SUPABASE_TOKEN_SECRET_ID".into(), self.secret_arn.clone()));
        env.push(("JIT_GUARD_LOG_LEVEL".into(), "debug".into()));
        env
    }

    /// Spawns the named function binary with the harness environment plus `extra`.
    pub async fn spawn(&mut self, name: &str, extra: &[(&str, &str)]) -> usize {
        let mut env = self.function_env();
        env.extend(extra.iter().map(|(key, value)| (key.to_string(), value.to_string())));
        let process = FunctionProcess::spawn(&function_binary(name), &env)
            .await
            .unwrap_or_else(|error| panic!("spawning {name} failed: {error}"));
        self.functions.push(process);
        self.functions.len() - 1
    }

    pub fn process(&self, handle: usize) -> &FunctionProcess {
        &self.functions[handle]
    }

    /// Invokes a function with a raw event and returns its outcome.
    pub async fn invoke_raw(&self, handle: usize, event: Value) -> Outcome {
        self.functions[handle].invoke(event, INVOKE_TIMEOUT).await.outcome
    }

    /// Invokes a function with an event and decodes its HTTP response.
    pub async fn invoke(&self, handle: usize, event: Value) -> HttpResponse {
        let outcome = self.invoke_raw(handle, event).await;
        let Outcome::Response(response) = outcome else {
            let logs = self.functions[handle].log_lines().join("\n");
            panic!("expected an HTTP response, got {outcome:?}; function log:\n{logs}");
        };
        let response = decode_response(&response);
        self.responses.lock().unwrap().push(response.body_text.clone());
        response
    }

    /// Returns every line the functions started so far have printed.
    pub fn function_logs(&self) -> Vec<String> {
        self.functions.iter().flat_map(FunctionProcess::log_lines).collect()
    }

    /// Fails when the token appears in any function log line, response or stand-in record.
    pub fn assert_token_never_leaked(&self) {
        for line in self.function_logs() {
            assert!(!line.contains(TOKEN), "a function log line contains the token: {line}");
        }
        for body in self.responses.lock().unwrap().iter() {
            assert!(!body.contains(TOKEN), "a response contains the token: {body}");
        }
    }

    /// Fails when a request the functions sent to the stand-in breaks
    /// Supabase's OpenAPI document, or when no request was checked. Prints
    /// why and passes when the document is absent.
    pub fn assert_requests_match_spec(&self) {
        if Spec::official_or_skip("the request check against the OpenAPI document").is_none() {
            return;
        }
        assert!(self.stand_in.validates_against_spec(), "the harness did not turn on the stand-in's spec check");
        assert!(self.stand_in.request_count() > 0, "no request reached the stand-in, so nothing was checked");
        let violations: Vec<String> = self.stand_in.spec_violations().iter().map(ToString::to_string).collect();
        assert!(violations.is_empty(), "requests break the OpenAPI document:\n{}", violations.join("\n"));
    }

    /// Counts the stand-in requests with this method; lookups are GETs, so
    /// `PUT`, `POST` and `DELETE` count the operation calls alone.
    pub fn upstream_calls(&self, method: &str) -> usize {
        self.stand_in.requests().iter().filter(|request| request.method == method).count()
    }

    /// Parses the audit records the functions printed.
    pub fn audit_records(&self) -> Vec<Value> {
        self.function_logs()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|record| record["audit_record"] == "access_decision")
            .collect()
    }

    /// Parses the log lines of access decisions.
    pub fn decision_logs(&self) -> Vec<Value> {
        self.function_logs()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|record| record["fields"]["message"] == "access decision")
            .map(|record| record["fields"].clone())
            .collect()
    }
}

/// Prints the requests that broke Supabase's OpenAPI document, without
/// failing, because a test may send them on purpose. Then saves every function
/// log line and response body of this harness under `JIT_GUARD_TRANSCRIPT_DIR`,
/// so the test script can scan the whole suite's output for secrets after
/// every test has run.
impl Drop for Harness {
    fn drop(&mut self) {
        for violation in self.stand_in.spec_violations() {
            eprintln!("request breaks the OpenAPI document: {violation}");
        }
        let Some(directory) = std::env::var_os("JIT_GUARD_TRANSCRIPT_DIR") else {
            return;
        };
        let mut transcript = self.function_logs();
        transcript.extend(self.responses.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().cloned());
        let name = format!("{}-{}.log", std::process::id(), uuid::Uuid::new_v4());
        if let Err(error) = std::fs::write(Path::new(&directory).join(name), transcript.join("\n")) {
            eprintln!("writing the transcript to {directory:?} failed: {error}");
        }
    }
}

fn decode_response(response: &Value) -> HttpResponse {
    let status = response["statusCode"].as_u64().expect("response has a statusCode") as u16;
    // REST (v1) responses carry their headers under multiValueHeaders, HTTP API (v2) under headers.
    let mut headers = HashMap::new();
    if let Some(multi) = response["multiValueHeaders"].as_object() {
        for (name, values) in multi {
            let first = values.as_array().and_then(|values| values.first()).and_then(Value::as_str);
            headers.insert(name.to_lowercase(), first.unwrap_or_default().to_owned());
        }
    }
    if let Some(single) = response["headers"].as_object() {
        for (name, value) in single {
            headers.insert(name.to_lowercase(), value.as_str().unwrap_or_default().to_owned());
        }
    }
    let raw = response["body"].as_str().unwrap_or_default();
    let body_text = if response["isBase64Encoded"] == true {
        let bytes = base64::engine::general_purpose::STANDARD.decode(raw).expect("base64 body");
        String::from_utf8(bytes).expect("UTF-8 body")
    } else {
        raw.to_owned()
    };
    let body = serde_json::from_str(&body_text).unwrap_or(Value::Null);
    HttpResponse { status, headers, body_text, body }
}

/// Builds a REST API (v1) event from the workflow's IAM role, with path parameters.
pub fn rest_event(method: &'static str, path: &str, parameters: &[(&str, &str)], body: Option<&str>) -> Value {
    let mut spec = EventSpec::new(method, path).caller(Caller::IamUser(CALLER_ARN.into()));
    for (name, value) in parameters {
        spec = spec.path_parameter(name, value);
    }
    if let Some(body) = body {
        spec = spec.body(body).header("content-type", "application/json");
    }
    events::rest_v1(&spec)
}

/// A function URL event: no path parameters, so the function matches the raw path.
/// A `?name=value` query on `path` becomes the event's query string.
pub fn url_event(method: &'static str, path: &str, body: Option<&str>) -> Value {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let mut spec = EventSpec::new(method, path).caller(Caller::IamUser(CALLER_ARN.into()));
    for (name, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
        spec = spec.query_parameter(name, value);
    }
    if let Some(body) = body {
        spec = spec.body(body).header("content-type", "application/json");
    }
    events::function_url(&spec)
}

/// A function URL event carrying a `Persona-Signature` header.
pub fn signed_url_event(method: &'static str, path: &str, body: &str, signature: &str) -> Value {
    let spec = EventSpec::new(method, path)
        .caller(Caller::IamUser(CALLER_ARN.into()))
        .body(body)
        .header("content-type", "application/json")
        .header("persona-signature", signature);
    events::function_url(&spec)
}

/// Unix seconds `hours` from now.
pub fn hours_from_now(hours: i64) -> i64 {
    chrono::Utc::now().timestamp() + hours * 3600
}

/// Builds an update body granting one role with one network.
pub fn update_body(user_id: &str, role: &str, expires_at: Option<i64>, network_key: &str, cidr: &str) -> String {
    let mut entry = serde_json::json!({
        "role": role,
        "allowed_networks": { network_key: [{ "cidr": cidr }] },
    });
    if let Some(expires_at) = expires_at {
        entry["expires_at"] = expires_at.into();
    }
    serde_json::json!({ "user_id": user_id, "roles": [entry] }).to_string()
}

/// Creates a folder with the default schema and the given policies, for `JIT_GUARD_POLICY_DIR`.
pub fn policy_dir(policies: &str) -> tempfile::TempDir {
    let directory = tempfile::tempdir().expect("temporary folder");
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/schema.cedarschema");
    std::fs::copy(&schema, directory.path().join("schema.cedarschema")).expect("copy the schema");
    std::fs::write(directory.path().join("policies.cedar"), policies).expect("write the policies");
    directory
}
