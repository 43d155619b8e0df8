//! Benchmark of Supabase JIT Guard: what a caller pays for the guardrails.
//!
//! Runs every function's release binary under the local Lambda Runtime API
//! against the Supabase stand-in with a fixed added latency, side by side
//! with direct HTTP calls to the same stand-in, and prints a Markdown report.
//! Timings are compared as ratios inside one run, because machines here are
//! shared and noisy. Run it with `tests/scripts/benchmark.sh`.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use jit_guard::policy::{Action, Guard, Resource};
use jit_guard_tests::moto::MotoServer;
use jit_guard_tests::runtime_api::{FunctionProcess, Outcome, function_binary};
use jit_guard_tests::stand_in::StandIn;
use jit_guard_tests::workload::{self, BOB, CAROL, ORGANIZATION, PROJECT, TOKEN};
use serde_json::{Value, json};

/// Latency added to every stand-in response, in place of the network to
/// Supabase, unless `BENCHMARK_LATENCY_MS` sets another.
const UPSTREAM_LATENCY: Duration = Duration::from_millis(20);
const WARMUP: usize = 20;
const DEFAULT_ITERATIONS: usize = 1000;
const INVOKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Cold starts per function. The median is reported, with the slowest beside it.
const COLD_STARTS: usize = 5;

/// One operation to measure: the function, its event, the upstream calls a
/// workflow without the guard would make for it, and whether it needs a
/// fresh mapping first.
struct Operation {
    function: &'static str,
    event: Event,
    /// The calls the direct side makes, in order: the same calls the function
    /// makes upstream on a warm invocation. The benchmark checks that count.
    direct: Vec<DirectCall>,
    /// Revoking removes the mapping it targets, so it is put back (untimed) before each call.
    restore_mapping: bool,
}

/// What the function is invoked with.
enum Event {
    /// An API Gateway REST API request.
    Rest { method: &'static str, path: String, body: Option<String> },
    /// The sweep's EventBridge schedule.
    Scheduled,
}

/// One HTTP call to the stand-in.
struct DirectCall {
    method: &'static str,
    path: String,
    body: Option<String>,
}

impl DirectCall {
    fn new(method: &'static str, path: impl Into<String>, body: Option<String>) -> Self {
        DirectCall { method, path: path.into(), body }
    }
}

impl Operation {
    /// Builds an operation that is one Management API call: the direct side
    /// sends the request as it is, and `forward-function` can forward it.
    fn single(function: &'static str, method: &'static str, path: String, body: Option<String>) -> Self {
        let direct = vec![DirectCall::new(method, path.clone(), body.clone())];
        Operation { function, event: Event::Rest { method, path, body }, direct, restore_mapping: false }
    }

    /// Tells whether the forwarding floor applies: one upstream call that repeats the request.
    fn forwards(&self) -> bool {
        matches!(self.event, Event::Rest { .. }) && self.direct.len() == 1
    }
}

fn operations() -> Vec<Operation> {
    let jit = format!("/v1/projects/{PROJECT}/database/jit");
    let list = || DirectCall::new("GET", format!("{jit}/list"), None);
    let mut revoke = Operation::single("revoke-jit-access", "DELETE", format!("{jit}/{BOB}"), None);
    revoke.restore_mapping = true;
    vec![
        Operation::single("list-organization-members", "GET", format!("/v1/organizations/{ORGANIZATION}/members"), None),
        Operation::single("list-projects", "GET", "/v1/projects".into(), None),
        Operation::single("get-project", "GET", format!("/v1/projects/{PROJECT}"), None),
        Operation::single(
            "authorize-jit-access",
            "POST",
            jit.clone(),
            Some(json!({ "role": "supabase_read_only_user", "rhost": "10.1.2.3" }).to_string()),
        ),
        Operation::single("update-jit-access", "PUT", jit.clone(), Some(workload::update_body())),
        Operation::single("list-jit-access", "GET", format!("{jit}/list"), None),
        revoke,
        // A grant reads the user's roles, reads them again just before its
        // write, writes the merged list, and reads it back (JIT_GUARD_SETTLE_MS
        // is 0 here). Its decision covers every role of the merged list. The
        // direct PUT sends update-jit-access's body: one role where the grant writes two.
        Operation {
            function: "grant-jit-access",
            event: Event::Rest { method: "POST", path: format!("{jit}/grants"), body: Some(workload::grant_body()) },
            direct: vec![list(), list(), DirectCall::new("PUT", jit.clone(), Some(workload::update_body())), list()],
            restore_mapping: false,
        },
        // Revoking bob's only role removes his mapping: read, read again, delete, read back.
        Operation {
            function: "revoke-jit-role",
            event: Event::Rest { method: "DELETE", path: format!("{jit}/{BOB}/roles/jit_readonly"), body: None },
            direct: vec![list(), list(), DirectCall::new("DELETE", format!("{jit}/{BOB}"), None), list()],
            restore_mapping: true,
        },
        // The sweep in report mode lists the projects and each project's
        // mappings. The facts it needs beside them are cached when warm.
        Operation {
            function: "sweep-jit-access",
            event: Event::Scheduled,
            direct: std::iter::once(DirectCall::new("GET", "/v1/projects", None))
                .chain(workload::seed_projects().iter().map(|project| DirectCall::new("GET", format!("/v1/projects/{project}/database/jit/list"), None)))
                .collect(),
            restore_mapping: false,
        },
    ]
}

/// Returns the operations that `BENCHMARK_FUNCTIONS` names (a comma-separated
/// list of function names), or all of them when it is not set.
fn selected_operations() -> Vec<Operation> {
    let all = operations();
    let Ok(names) = std::env::var("BENCHMARK_FUNCTIONS") else {
        return all;
    };
    let names: Vec<&str> = names.split(',').map(str::trim).filter(|name| !name.is_empty()).collect();
    let known: Vec<&str> = all.iter().map(|operation| operation.function).collect();
    if let Some(unknown) = names.iter().find(|name| !known.contains(name)) {
        exit_with(&format!("BENCHMARK_FUNCTIONS names {unknown:?}; the benchmark measures {}", known.join(", ")));
    }
    if names.is_empty() {
        exit_with(&format!("BENCHMARK_FUNCTIONS is empty; name one or more of {}", known.join(", ")));
    }
    all.into_iter().filter(|operation| names.contains(&operation.function)).collect()
}

/// Reads the whole number in the environment variable `name`, or returns
/// `default` when it is not set. A value outside `accepted` ends the
/// benchmark with a message that it is not `expected`.
fn whole_number_from_env(name: &str, default: u64, accepted: std::ops::RangeInclusive<u64>, expected: &str) -> u64 {
    let Ok(value) = std::env::var(name) else {
        return default;
    };
    match value.trim().parse::<u64>() {
        Ok(number) if accepted.contains(&number) => number,
        _ => exit_with(&format!("{name}={value:?} is not {expected}")),
    }
}

/// Prints `message` and ends the benchmark with status 2, before anything has started.
fn exit_with(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2)
}

/// Percentile of sorted samples, nearest rank.
fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let rank = ((sorted.len() as f64) * fraction).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1000.0)
}

fn event(operation: &Operation) -> Value {
    match &operation.event {
        Event::Rest { method, path, body } => workload::rest_event(method, path, body.as_deref()),
        Event::Scheduled => jit_guard_tests::events::scheduled(),
    }
}

/// Returns the status of an API Gateway response. The sweep returns a
/// report instead, read as 200 when it checked at least one project without errors.
fn status_of(outcome: &Outcome) -> u16 {
    match outcome {
        Outcome::Response(response) if response.get("statusCode").is_some() => response["statusCode"].as_u64().unwrap_or(0) as u16,
        Outcome::Response(report) => {
            let checked = report["projects_checked"].as_u64().unwrap_or(0) > 0;
            let clean = report["errors"].as_array().is_some_and(Vec::is_empty);
            assert!(checked, "expected an API Gateway response or a sweep report that checked a project, got {report}");
            assert!(clean, "expected a sweep report without errors, got {report}");
            200
        }
        other => panic!("the function did not answer: {other:?}"),
    }
}

/// Makes the operation's upstream calls straight to the stand-in, in order,
/// as a workflow without the guard would. Returns the first non-2xx status,
/// or the last status.
async fn direct_call(client: &reqwest::Client, base: &str, operation: &Operation) -> u16 {
    let mut status = 0;
    for call in &operation.direct {
        let method = reqwest::Method::from_bytes(call.method.as_bytes()).expect("valid method");
        let mut request = client.request(method, format!("{base}{}", call.path)).bearer_auth(TOKEN);
        if let Some(body) = &call.body {
            request = request.header("content-type", "application/json").body(body.clone());
        }
        let response = request.send().await.expect("the stand-in answers");
        status = response.status().as_u16();
        response.bytes().await.expect("the stand-in sends a body");
        if status >= 300 {
            break;
        }
    }
    status
}

/// Times and upstream calls of one warm invocation.
struct Timed {
    /// The function's duration, as Lambda measures it: from the Runtime API
    /// handing out the event to the Runtime API having the whole response.
    duration: Duration,
    /// From queuing the event to reading the outcome: the duration plus the
    /// local Runtime API's own work around it.
    elapsed: Duration,
    /// The requests the stand-in received during the invocation.
    upstream_calls: usize,
}

/// Puts the mapping back when the operation needs it, invokes `process` once,
/// checks that it succeeded, and returns its times with the number of
/// requests the stand-in received meanwhile.
/// `label` goes before the function name in the failure message.
async fn timed_invocation(
    process: &FunctionProcess,
    operation: &Operation,
    stand_in: &StandIn,
    setup_client: &reqwest::Client,
    base: &str,
    label: &str,
) -> Timed {
    if operation.restore_mapping {
        restore_mapping(setup_client, base).await;
    }
    let calls_before = stand_in.request_count();
    let invocation = process.invoke(event(operation), INVOKE_TIMEOUT).await;
    let status = status_of(&invocation.outcome);
    assert!(status < 300, "{label}{} responded with {status}: {:?}", operation.function, invocation.outcome);
    let duration = invocation.duration.expect("an answered invocation has a duration");
    Timed { duration, elapsed: invocation.elapsed, upstream_calls: stand_in.request_count() - calls_before }
}

/// Puts bob's mapping back so that each revoke removes a real mapping.
async fn restore_mapping(client: &reqwest::Client, base: &str) {
    let body = json!({ "user_id": BOB, "roles": [{ "role": "jit_readonly", "expires_at": 4102444800i64 }] });
    let path = format!("{base}/v1/projects/{PROJECT}/database/jit");
    let response = client.put(path).bearer_auth(TOKEN).json(&body).send().await.expect("the stand-in answers");
    assert!(response.status().is_success(), "restoring the mapping failed: {}", response.status());
}

/// Reads a numeric log field from the first line carrying `message`.
fn log_field(lines: &[String], message: &str, field: &str) -> Option<u64> {
    lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|record| record["fields"]["message"] == message)
        .and_then(|record| record["fields"][field].as_u64())
}

fn zipped_size(binary: &Path) -> u64 {
    let bytes = std::fs::read(binary).expect("read the binary");
    let mut buffer = std::io::Cursor::new(Vec::new());
    let mut archive = zip::ZipWriter::new(&mut buffer);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o755);
    archive.start_file("bootstrap", options).expect("zip entry");
    archive.write_all(&bytes).expect("zip write");
    archive.finish().expect("zip finish");
    buffer.into_inner().len() as u64
}

/// Median time of one call of `work`, over `rounds` rounds.
fn median_time(rounds: usize, mut work: impl FnMut()) -> Duration {
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            work();
            started.elapsed()
        })
        .collect();
    samples.sort();
    percentile(&samples, 0.5)
}

/// Decision time of an update with 4 roles and 6 networks (3 IPv4, 3 IPv6):
/// 24 (role, network) pairs, from the parsed update to the 24 decisions, as
/// update-jit-access decides them. Each repetition starts with empty
/// per-decision maps, as every invocation does. The project's entity store
/// is kept from the previous repetition, as in a warm container.
fn large_update_decision(guard: &Guard) -> Duration {
    let project = jit_guard::facts::ProjectFacts {
        project_ref: PROJECT.into(),
        name: "acme-staging".into(),
        region: "eu-central-1".into(),
        status: "ACTIVE_HEALTHY".into(),
        organization_slug: ORGANIZATION.into(),
    };
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("a valid time");
    let networks = json!({
        "allowed_cidrs": [{ "cidr": "10.1.0.0/16" }, { "cidr": "10.2.0.0/16" }, { "cidr": "192.168.4.0/24" }],
        "allowed_cidrs_v6": [{ "cidr": "fd00:1::/64" }, { "cidr": "fd00:2::/64" }, { "cidr": "2001:db8:5::/48" }],
    });
    let roles: Vec<Value> = ["jit_readonly", "jit_support", "supabase_read_only_user", "analyst"]
        .iter()
        .map(|role| json!({ "role": role, "expires_at": 1_800_014_400, "allowed_networks": networks }))
        .collect();
    let body = json!({ "user_id": CAROL, "roles": roles }).to_string();
    let update = jit_guard::validate::parse_update_body(body.as_bytes(), now).expect("the benchmark update is valid");
    let target_user = jit_guard::facts::TargetUser { is_member: true, role_name: Some("Developer".into()), mfa_enabled: Some(true) };
    let pairs: usize = update.roles.iter().map(|grant| grant.networks().len()).sum();
    assert_eq!(pairs, 24, "the large update has 24 (role, network) pairs");
    if std::env::var("BENCHMARK_IN_PROCESS_ONLY").as_deref() == Ok("decision") {
        // The parts of the decision, for profiling.
        let entities = guard.entities(Some(&project));
        let (_, contexts) = jit_guard::operations::grant_contexts(&update.user_id, &update.roles, &target_user, now);
        let parts = [
            ("entities, kept", median_time(2000, || { std::hint::black_box(guard.entities(Some(&project))); })),
            ("contexts", median_time(2000, || {
                std::hint::black_box(jit_guard::operations::grant_contexts(&update.user_id, &update.roles, &target_user, now));
            })),
            ("decide_each", median_time(2000, || {
                std::hint::black_box(guard.decide_each("benchmark", Action::UpdateJitAccess, Resource::Project(PROJECT), &contexts, &entities));
            })),
        ];
        for (part, time) in parts {
            eprintln!("{part}: {} µs", time.as_micros());
        }
    }
    median_time(2000, || {
        let entities = guard.entities(Some(&project));
        let (_, contexts) = jit_guard::operations::grant_contexts(&update.user_id, &update.roles, &target_user, now);
        let decisions = guard.decide_each("benchmark", Action::UpdateJitAccess, Resource::Project(PROJECT), &contexts, &entities);
        std::hint::black_box(decisions);
    })
}

/// Returns the process's log lines once one of them contains `message`
/// (after 2 s, whatever it has printed).
async fn wait_for_log(process: &FunctionProcess, message: &str) -> Vec<String> {
    let limit = Instant::now() + Duration::from_secs(2);
    loop {
        let lines = process.log_lines();
        if lines.iter().any(|line| line.contains(message)) || Instant::now() >= limit {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Measures the time to build the entity store of a project the guard has
/// not seen last. The first decision on a project pays it on top.
fn entity_store_build() -> Duration {
    let guard = Guard::from_defaults().expect("default policies load");
    let mut number = 0u64;
    median_time(2000, || {
        number += 1;
        let project = jit_guard::facts::ProjectFacts {
            project_ref: format!("{number:0>20}"),
            name: "acme-staging".into(),
            region: "eu-central-1".into(),
            status: "ACTIVE_HEALTHY".into(),
            organization_slug: ORGANIZATION.into(),
        };
        std::hint::black_box(guard.entities(Some(&project)));
    })
}

/// Policy loads, and the large update's decision, all in this process.
struct InProcess {
    /// The load with strict validation, as a load from files makes it.
    policy_load: Duration,
    /// The load at a cold start, without the validation the build made.
    policy_load_built: Duration,
    decision: Duration,
}

fn in_process_figures() -> InProcess {
    let guard = Guard::from_defaults().expect("default policies load");
    if std::env::var("BENCHMARK_IN_PROCESS_ONLY").as_deref() == Ok("decision") {
        // For profiling the decision alone.
        return InProcess { policy_load: Duration::ZERO, policy_load_built: Duration::ZERO, decision: large_update_decision(&guard) };
    }
    let policy_load = median_time(200, || {
        std::hint::black_box(Guard::from_defaults_validated().expect("default policies load"));
    });
    let policy_load_built = median_time(200, || {
        std::hint::black_box(Guard::from_defaults().expect("default policies load"));
    });
    InProcess { policy_load, policy_load_built, decision: large_update_decision(&guard) }
}

/// Returns the CPU time a process's threads have used so far, from the
/// scheduler's per-thread nanosecond counters in /proc (Linux).
fn cpu_time(pid: u32) -> Duration {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let nanoseconds: u64 = threads
        .filter_map(Result::ok)
        .filter_map(|thread| std::fs::read_to_string(thread.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().next().and_then(|value| value.parse::<u64>().ok()))
        .sum();
    Duration::from_nanos(nanoseconds)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| info.lines().find(|line| line.starts_with("model name")).map(|line| line.split(':').nth(1).unwrap_or("").trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|cores| cores.get()).unwrap_or(0);
    format!("{} ({cores} cores, {})", cpu, std::env::consts::ARCH)
}

/// One operation's figures.
struct Figures {
    function: &'static str,
    /// The cold start with the median time without network.
    cold: ColdStart,
    /// The slowest cold start, without network.
    worst_cold: Duration,
    /// The function's warm duration, as Lambda measures it.
    function_p50: Duration,
    function_p99: Duration,
    /// The same invocations from queuing the event to reading the outcome.
    queued_p50: Duration,
    queued_p99: Duration,
    direct_p50: Duration,
    direct_p99: Duration,
    /// One direct upstream call's p50: the direct side's p50 over its call count.
    round_trip: Duration,
    /// The upstream calls of one warm invocation, and of the direct side.
    upstream_calls: usize,
    /// Warm invocations that made another number of upstream calls.
    other_calls: usize,
    /// The forwarding function's warm p50 and p99 for the same upstream call,
    /// for operations that are one call.
    forward: Option<(Duration, Duration)>,
    /// The function process's CPU time per warm invocation.
    cpu_per_invocation: Duration,
    /// The forwarding function's CPU time per warm invocation.
    forward_cpu_per_invocation: Option<Duration>,
    peak_rss_kib: u64,
    stripped_bytes: u64,
    zipped_bytes: u64,
    secret_reads_warm: usize,
}

/// Warm figures of echo-function: the cost of a Runtime API round trip.
struct RuntimeFloor {
    /// Duration p50 and p99 of reading an event and posting it back.
    duration: (Duration, Duration),
    /// P50 and p99 of the local Runtime API's own work around each
    /// invocation: queued to outcome, minus the duration.
    dispatch: (Duration, Duration),
}

/// Settings of one run, printed in the report's header.
struct RunSettings {
    iterations: usize,
    /// Latency the stand-in adds to each response.
    latency: Duration,
    /// Cargo profile of the measured function binaries.
    profile: String,
}

/// One cold start: spawn to first response, and the function's init log.
struct ColdStart {
    /// From spawning the process to the first response's arrival at the Runtime API.
    total: Duration,
    /// The upstream calls the first response waited for.
    upstream_calls: u32,
    init_us: u64,
    config_us: u64,
    policy_us: u64,
    clients_us: u64,
    /// The `GetSecretValue` call to moto server, made during init beside the policy load.
    secret_read_us: u64,
    /// The part of the secret read that init waited for once everything else was ready.
    token_wait_us: u64,
}

impl ColdStart {
    /// Returns the time to first response minus the upstream calls, each
    /// counted as `round_trip`: one direct call with the added latency.
    fn elapsed(&self, round_trip: Duration) -> Duration {
        self.total.saturating_sub(round_trip * self.upstream_calls)
    }

    /// Returns the cold start without its network calls: the upstream calls
    /// and the wait for the secret read.
    fn without_network(&self, round_trip: Duration) -> Duration {
        self.elapsed(round_trip).saturating_sub(Duration::from_micros(self.token_wait_us))
    }
}

/// Spawns the function, invokes it once, and returns the cold start with the running process.
async fn cold_start(
    operation: &Operation,
    binary: &Path,
    env: &[(String, String)],
    stand_in: &StandIn,
    client: &reqwest::Client,
    base: &str,
) -> (ColdStart, FunctionProcess) {
    if operation.restore_mapping {
        restore_mapping(client, base).await;
    }
    let calls_before = stand_in.request_count();
    let spawned = Instant::now();
    let process = FunctionProcess::spawn(binary, env).await.expect("spawn the function");
    // The wait for quiet logs after a response is off before the first
    // invocation, so that it is not counted in the cold start.
    process.set_settle_logs(false);
    let first = process.invoke(event(operation), INVOKE_TIMEOUT).await;
    // The first response counts from its arrival at the Runtime API, like the warm durations.
    let first_total = first.responded_at.map_or_else(|| spawned.elapsed(), |at| at.saturating_duration_since(spawned));
    status_of(&first.outcome);
    let upstream_calls = (stand_in.request_count() - calls_before) as u32;
    let lines = wait_for_log(&process, "token secret read").await;
    let field = |message, name| log_field(&lines, message, name).unwrap_or(0);
    let cold = ColdStart {
        total: first_total,
        upstream_calls,
        init_us: field("init complete", "init_us"),
        config_us: field("init complete", "config_us"),
        policy_us: field("init complete", "policy_us"),
        clients_us: field("init complete", "clients_us"),
        secret_read_us: field("token secret read", "elapsed_us"),
        token_wait_us: field("init complete", "token_wait_us"),
    };
    (cold, process)
}

#[tokio::main]
async fn main() {
    let iterations = whole_number_from_env("BENCHMARK_ITERATIONS", DEFAULT_ITERATIONS as u64, 1..=u64::MAX, "a positive whole number") as usize;
    if std::env::var_os("BENCHMARK_IN_PROCESS_ONLY").is_some() {
        // Only the in-process Cedar figures: no processes, servers or builds of other binaries.
        let figures = in_process_figures();
        println!(
            "policy load and strict validation {} µs (without the validation made at build {} µs); decision for 24 pairs {} µs; a new project's entity store {} µs",
            figures.policy_load.as_micros(),
            figures.policy_load_built.as_micros(),
            figures.decision.as_micros(),
            entity_store_build().as_micros()
        );
        return;
    }
    let latency = Duration::from_millis(whole_number_from_env(
        "BENCHMARK_LATENCY_MS",
        UPSTREAM_LATENCY.as_millis() as u64,
        1..=1000,
        "a whole number of milliseconds from 1 to 1000",
    ));
    let selected = selected_operations();
    let profile = std::env::var("JIT_GUARD_PROFILE").unwrap_or_else(|_| "debug".to_owned());
    if profile != "release" {
        eprintln!("JIT_GUARD_PROFILE is {profile:?}: the function binaries measured are not the release builds");
    }
    let moto = MotoServer::start().await;
    let secret_arn = moto.create_secret("jit-guard/benchmark-token", TOKEN).await;
    let stand_in = StandIn::start(TOKEN).await;
    stand_in.set_latency(latency);
    let base = stand_in.url();
    let client = jit_guard_tests::http_client();
    // Untimed set-up calls go through their own client, so that they do not
    // leave the direct calls' connection freshly used.
    let setup_client = jit_guard_tests::http_client();

    let mut env = moto.aws_env();
    env.push(("SUPABASE_API_URL".into(), base.clone()));
    env.push(("SUPABASE_TOKEN_SECRET_ID".into(), secret_arn));
    // Grants and role revocations read their write back after this wait for
    // concurrent writers (200 ms by default). The benchmark leaves it out, so
    // that their ratio is the guard's cost over the same upstream calls.
    env.push(("JIT_GUARD_SETTLE_MS".into(), "0".into()));

    // The forwarding floor: the functions' runtime and libraries with nothing but the upstream call.
    let forward_env = [("FORWARD_UPSTREAM_URL".to_owned(), base.clone()), ("FORWARD_TOKEN".to_owned(), TOKEN.to_owned())];
    let forward = FunctionProcess::spawn(&function_binary("forward-function"), &forward_env).await.expect("spawn forward-function");
    forward.set_settle_logs(false);

    let mut figures = Vec::new();
    for operation in selected {
        eprintln!("measuring {} ...", operation.function);
        let binary = function_binary(operation.function);

        // Cold start: spawn to first response, minus the upstream calls that
        // response waited for. Taken COLD_STARTS times; the median is reported.
        let mut colds = Vec::with_capacity(COLD_STARTS);
        let mut process = None;
        for _ in 0..COLD_STARTS {
            let (cold, spawned) = cold_start(&operation, &binary, &env, &stand_in, &setup_client, &base).await;
            colds.push(cold);
            process = Some(spawned);
        }
        let process = process.expect("at least one cold start");

        // Warm: the function, the direct calls and the forwarding function
        // alternate, so all three see the same machine load.
        let forward = operation.forwards().then_some(&forward);
        for _ in 0..WARMUP {
            timed_invocation(&process, &operation, &stand_in, &setup_client, &base, "").await;
            direct_call(&client, &base, &operation).await;
            if let Some(forward) = forward {
                timed_invocation(forward, &operation, &stand_in, &setup_client, &base, "forwarding ").await;
            }
        }
        let reads_before = moto.get_secret_value_count();
        let cpu_before = cpu_time(process.pid());
        let forward_cpu_before = forward.map(|forward| cpu_time(forward.pid()));
        let mut through_function = Vec::with_capacity(iterations);
        let mut queued_to_outcome = Vec::with_capacity(iterations);
        let mut direct = Vec::with_capacity(iterations);
        let mut forwarded = Vec::with_capacity(iterations);
        // Invocations that made other upstream calls than the direct side:
        // a facts cache refresh adds calls once per JIT_GUARD_FACTS_TTL_SECONDS.
        let mut other_calls = 0;
        for _ in 0..iterations {
            let timed = timed_invocation(&process, &operation, &stand_in, &setup_client, &base, "").await;
            through_function.push(timed.duration);
            queued_to_outcome.push(timed.elapsed);
            other_calls += usize::from(timed.upstream_calls != operation.direct.len());

            if operation.restore_mapping {
                restore_mapping(&setup_client, &base).await;
            }
            let started = Instant::now();
            let status = direct_call(&client, &base, &operation).await;
            assert!(status < 300, "direct {} answered {status}", operation.function);
            direct.push(started.elapsed());

            if let Some(forward) = forward {
                forwarded.push(timed_invocation(forward, &operation, &stand_in, &setup_client, &base, "forwarding ").await.duration);
            }
        }
        // The ratio compares like with like only when the function makes the direct side's calls.
        assert!(
            other_calls * 20 <= iterations,
            "{} made other upstream calls than the {} of the direct side in {other_calls} of {iterations} warm invocations",
            operation.function,
            operation.direct.len()
        );
        let secret_reads_warm = moto.get_secret_value_count() - reads_before;
        let cpu_per_invocation = cpu_time(process.pid()).saturating_sub(cpu_before) / iterations as u32;
        let forward_cpu_per_invocation = forward
            .zip(forward_cpu_before)
            .map(|(forward, before)| cpu_time(forward.pid()).saturating_sub(before) / iterations as u32);
        through_function.sort();
        queued_to_outcome.sort();
        direct.sort();
        forwarded.sort();

        // One upstream call's round trip, which the cold start subtracts per call it waited for.
        let round_trip = percentile(&direct, 0.5) / operation.direct.len() as u32;
        colds.sort_by_key(|cold| cold.without_network(round_trip));
        let worst_cold = colds.last().expect("at least one cold start").without_network(round_trip);
        let cold = colds.swap_remove(colds.len() / 2);

        let metadata = std::fs::metadata(&binary).expect("binary metadata");
        figures.push(Figures {
            function: operation.function,
            cold,
            worst_cold,
            function_p50: percentile(&through_function, 0.5),
            function_p99: percentile(&through_function, 0.99),
            queued_p50: percentile(&queued_to_outcome, 0.5),
            queued_p99: percentile(&queued_to_outcome, 0.99),
            direct_p50: percentile(&direct, 0.5),
            direct_p99: percentile(&direct, 0.99),
            round_trip,
            upstream_calls: operation.direct.len(),
            other_calls,
            forward: forward.map(|_| (percentile(&forwarded, 0.5), percentile(&forwarded, 0.99))),
            cpu_per_invocation,
            forward_cpu_per_invocation,
            peak_rss_kib: process.peak_rss_kib().unwrap_or(0),
            stripped_bytes: metadata.len(),
            zipped_bytes: zipped_size(&binary),
            secret_reads_warm,
        });
    }

    // The floor the harness itself adds: a function that only echoes its event.
    let echo = FunctionProcess::spawn(&function_binary("echo-function"), &[]).await.expect("spawn echo-function");
    echo.set_settle_logs(false);
    let mut floor: Vec<Duration> = Vec::with_capacity(iterations);
    let mut dispatch: Vec<Duration> = Vec::with_capacity(iterations);
    let sample = event(&operations()[2]);
    for _ in 0..WARMUP {
        echo.invoke(sample.clone(), INVOKE_TIMEOUT).await;
    }
    for _ in 0..iterations {
        let invocation = echo.invoke(sample.clone(), INVOKE_TIMEOUT).await;
        let duration = invocation.duration.expect("echo-function responded, so the invocation has a duration");
        floor.push(duration);
        dispatch.push(invocation.elapsed.saturating_sub(duration));
    }
    floor.sort();
    dispatch.sort();
    let floor = RuntimeFloor {
        duration: (percentile(&floor, 0.5), percentile(&floor, 0.99)),
        dispatch: (percentile(&dispatch, 0.5), percentile(&dispatch, 0.99)),
    };

    let in_process = in_process_figures();

    let entity_store = entity_store_build();
    let settings = RunSettings { iterations, latency, profile };
    print_report(&figures, &settings, &in_process, entity_store, floor);
}

fn print_report(
    figures: &[Figures],
    settings: &RunSettings,
    in_process: &InProcess,
    entity_store: Duration,
    floor: RuntimeFloor,
) {
    let InProcess { policy_load, policy_load_built, decision } = *in_process;
    let RunSettings { iterations, latency, profile } = settings;
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!("Run on {}, {}, with `tests/scripts/benchmark.sh` ({iterations} warm invocations per operation,", chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"), machine());
    println!(
        "stand-in latency {} ms per call, {profile} binaries for {}, JIT_GUARD_SETTLE_MS=0).",
        latency.as_millis(),
        std::env::consts::ARCH
    );
    println!();
    println!("Cold starts are the median of {COLD_STARTS} per function; the init columns belong to that median start.");
    println!("Warm times are the function's duration as Lambda measures it: from the Runtime API handing out the event to the Runtime API having the whole response. The last table adds the local Runtime API's own work around it.");
    println!();
    println!("| function | cold start ms | without network ms | slowest without network ms | init µs | config µs | policy load µs | clients µs | secret read µs | token wait µs | p50 ms (direct) | p99 ms (direct) | p50 ratio | p99 ratio | peak RSS MiB | stripped MiB | zipped MiB | Secrets Manager calls per {iterations} warm |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for figure in figures {
        let p50_ratio = figure.function_p50.as_secs_f64() / figure.direct_p50.as_secs_f64();
        let p99_ratio = figure.function_p99.as_secs_f64() / figure.direct_p99.as_secs_f64();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} ({}) | {:.3} | {:.3} | {:.1} | {:.1} | {:.2} | {} |",
            figure.function,
            ms(figure.cold.elapsed(figure.round_trip)),
            ms(figure.cold.without_network(figure.round_trip)),
            ms(figure.worst_cold),
            figure.cold.init_us,
            figure.cold.config_us,
            figure.cold.policy_us,
            figure.cold.clients_us,
            figure.cold.secret_read_us,
            figure.cold.token_wait_us,
            ms(figure.function_p50),
            ms(figure.direct_p50),
            ms(figure.function_p99),
            ms(figure.direct_p99),
            p50_ratio,
            p99_ratio,
            figure.peak_rss_kib as f64 / 1024.0,
            figure.stripped_bytes as f64 / 1_048_576.0,
            figure.zipped_bytes as f64 / 1_048_576.0,
            figure.secret_reads_warm,
        );
    }
    println!();
    println!("Warm figures beside the forwarding floor: `forward-function`, on the functions' runtime and libraries (a current-thread runtime, lambda_runtime with the bundle's event types, reqwest, mimalloc), sends the same upstream call with no validation, policy, logging or timeouts. What the guard adds is the function's p50 minus the floor's. The floor applies to the operations that are one upstream call; the others make several, and the direct side makes the same calls in the same order.");
    println!();
    println!("| function | upstream calls (invocations with another count) | p50 ratio | floor p50 ratio | guard adds at p50 µs | p99 ratio | floor p99 ratio | CPU µs per warm call | floor CPU µs per warm call | p50 / p99 ratio, queued to outcome |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for figure in figures {
        let ratio = |numerator: Duration, denominator: Duration| format!("{:.3}", numerator.as_secs_f64() / denominator.as_secs_f64());
        let floor = |value: &dyn Fn((Duration, Duration)) -> String| figure.forward.map(value).unwrap_or_else(|| "n/a".into());
        println!(
            "| {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            figure.function,
            figure.upstream_calls,
            figure.other_calls,
            ratio(figure.function_p50, figure.direct_p50),
            floor(&|(p50, _)| ratio(p50, figure.direct_p50)),
            floor(&|(p50, _)| format!("{:.0}", (figure.function_p50.as_secs_f64() - p50.as_secs_f64()) * 1e6)),
            ratio(figure.function_p99, figure.direct_p99),
            floor(&|(_, p99)| ratio(p99, figure.direct_p99)),
            figure.cpu_per_invocation.as_micros(),
            figure.forward_cpu_per_invocation.map_or_else(|| "n/a".into(), |cpu| cpu.as_micros().to_string()),
            ratio(figure.queued_p50, figure.direct_p50),
            ratio(figure.queued_p99, figure.direct_p99),
        );
    }
    println!();
    println!(
        "Runtime API floor (echo-function through the same local Runtime API, same event): duration p50 {} ms, p99 {} ms. The local Runtime API's own work around each invocation, left out of the durations: p50 {} ms, p99 {} ms.",
        ms(floor.duration.0),
        ms(floor.duration.1),
        ms(floor.dispatch.0),
        ms(floor.dispatch.1)
    );
    println!();
    println!(
        "In-process figures: policy load and strict validation {} µs (median of 200), {} µs without the validation, which the build makes for the compiled-in policies; decision for an update of 4 roles x 6 networks (24 pairs) {} µs (median of 2000, the project's entity store kept from the previous decision); building a new project's entity store, which the first decision on a project adds, {} µs.",
        policy_load.as_micros(),
        policy_load_built.as_micros(),
        decision.as_micros(),
        entity_store.as_micros()
    );
    println!();
    println!("| target | worst figure | verdict |");
    println!("|---|---|---|");
    let worst = |value: fn(&Figures) -> f64| figures.iter().map(value).fold(f64::MIN, f64::max);
    let p50 = worst(|figure| figure.function_p50.as_secs_f64() / figure.direct_p50.as_secs_f64());
    let p99 = worst(|figure| figure.function_p99.as_secs_f64() / figure.direct_p99.as_secs_f64());
    let cold = worst(|figure| figure.cold.without_network(figure.round_trip).as_secs_f64() * 1000.0);
    let rss = worst(|figure| figure.peak_rss_kib as f64 / 1024.0);
    let zipped = worst(|figure| figure.zipped_bytes as f64 / 1_048_576.0);
    let reads = figures.iter().map(|figure| figure.secret_reads_warm).max().unwrap_or(0);
    println!("| warm p50 ratio <= 1.02 | {p50:.3} | {} |", verdict(p50 <= 1.02));
    println!("| warm p99 ratio <= 1.05 | {p99:.3} | {} |", verdict(p99 <= 1.05));
    println!("| cold start <= 10 ms excluding network (median of {COLD_STARTS}) | {cold:.2} ms | {} |", verdict(cold <= 10.0));
    println!("| policy load and validation <= 2 ms | {:.2} ms | {} |", policy_load.as_secs_f64() * 1000.0, verdict(policy_load <= Duration::from_millis(2)));
    println!("| large update decision <= 100 µs | {} µs | {} |", decision.as_micros(), verdict(decision <= Duration::from_micros(100)));
    println!("| peak RSS <= 20 MB | {rss:.1} MiB | {} |", verdict(rss <= 20.0 * 1_000_000.0 / 1_048_576.0));
    println!("| zipped bootstrap <= 5 MB | {zipped:.2} MiB | {} |", verdict(zipped <= 5.0 * 1_000_000.0 / 1_048_576.0));
    println!("| zero Secrets Manager calls on warm invocations | {reads} | {} |", verdict(reads == 0));
}
