//! A second upstream: Stoplight Prism mocking Supabase's official OpenAPI
//! document. Prism checks every request against the document, returns 422
//! for one that breaks it, and builds the responses to valid ones from the
//! document's examples. Every function binary runs against it.
//!
//! Prism comes from `tests/scripts/tools.sh` (`ensure_prism`), which
//! `test-all.sh` runs. Without it, or without the document, the test prints
//! why and passes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jit_guard_tests::child::{OutputLines, free_port, spawn_drained};
use jit_guard_tests::spec::{SPEC_PATH, Spec};
use serde_json::json;
use tokio::process::{Child, Command};

use super::assert_valid_as_documented;
use crate::support::*;

/// Prism parses the whole document before it listens, which takes a few
/// seconds on a 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Attempts at a free port: another process may take it between the probe and Prism's bind.
const START_ATTEMPTS: usize = 3;

/// The guardrails that need facts Prism's examples cannot supply; see
/// [`every_route_against_prism`].
const FACT_POLICIES: [&str; 3] = [
    "project-is-healthy",
    "target-user-has-mfa",
    "target-user-is-member",
];

/// A running `prism mock`, killed through its child handle on drop.
struct Prism {
    child: Child,
    port: u16,
    logs: OutputLines,
}

impl Prism {
    /// Starts `prism mock` on 127.0.0.1 with a free port and waits until it responds.
    ///
    /// # Panics
    /// When Prism does not respond within [`START_TIMEOUT`] in [`START_ATTEMPTS`] attempts.
    async fn start(executable: &Path) -> Prism {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Prism::start_once(executable).await {
                Ok(prism) => return prism,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "prism ({}) did not start in {START_ATTEMPTS} attempts:\n{}",
            executable.display(),
            failures.join("\n")
        );
    }

    async fn start_once(executable: &Path) -> Result<Prism, String> {
        let port = free_port()?;
        let mut command = Command::new(executable);
        command.args(["mock", SPEC_PATH, "-h", "127.0.0.1", "-p", &port.to_string()]);
        let (child, logs) = spawn_drained(&mut command, executable)?;
        let mut prism = Prism { child, port, logs };
        prism.wait_until_ready().await?;
        Ok(prism)
    }

    /// Waits until Prism responds to an HTTP request, or fails when it exits or times out.
    async fn wait_until_ready(&mut self) -> Result<(), String> {
        let client = http_client();
        let url = format!("{}/v1/projects", self.url());
        let limit = Instant::now() + START_TIMEOUT;
        while Instant::now() < limit {
            if client.get(&url).bearer_auth(TOKEN).send().await.is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "prism on port {} exited with {status}:\n{}",
                    self.port,
                    self.log_lines().join("\n")
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!(
            "prism on port {} did not respond within {START_TIMEOUT:?}:\n{}",
            self.port,
            self.log_lines().join("\n")
        ))
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_lines(&self) -> Vec<String> {
        self.logs.lines()
    }

    /// Returns each request Prism received, as "method path", and whether it
    /// passed Prism's validation. Prism logs a request as
    /// `[HTTP SERVER] get /v1/projects ℹ  info      Request received`, then
    /// one `[VALIDATOR]` line saying whether the request passed.
    fn validated_requests(&self) -> Vec<(String, bool)> {
        let mut requests: Vec<(String, Option<bool>)> = Vec::new();
        for line in self.log_lines() {
            if let Some(rest) = line.split("[HTTP SERVER] ").nth(1)
                && line.contains("Request received")
            {
                let request = rest
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                requests.push((request, None));
            } else if line.contains("[VALIDATOR]")
                && let Some((_, passed)) =
                    requests.last_mut().filter(|(_, passed)| passed.is_none())
            {
                if line.contains("passed the validation rules") {
                    *passed = Some(true);
                } else if line.contains("did not pass the validation rules") {
                    *passed = Some(false);
                }
            }
        }
        requests
            .into_iter()
            .map(|(request, passed)| (request, passed == Some(true)))
            .collect()
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        // kill_on_drop covers this too; killing here stops Prism before the harness goes.
        if let Err(error) = self.child.start_kill() {
            eprintln!("stopping prism on port {} failed: {error}", self.port);
        }
    }
}

fn http_client() -> reqwest::Client {
    jit_guard_tests::http_client_builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a plain HTTP client builds")
}

/// Finds the `prism` executable: env `PRISM`, else
/// `node/node_modules/.bin/prism` in `JIT_GUARD_TOOLS` (default
/// `$HOME/.cache/jit-guard`), else `prism` on `PATH`. Returns why when none exists.
///
/// # Panics
/// When `PRISM` is set but names no file, because that is a broken setup, not a missing tool.
fn prism_path() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("PRISM") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "PRISM is {}, which is not a file: unset it or point it at prism",
            path.display()
        );
        return Ok(path);
    }
    let tools_dir = std::env::var_os("JIT_GUARD_TOOLS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/jit-guard"))
        });
    let installed = tools_dir.map(|dir| dir.join("node/node_modules/.bin/prism"));
    if let Some(installed) = installed.as_ref().filter(|path| path.is_file()) {
        return Ok(installed.clone());
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("prism"))
        .find(|candidate| candidate.is_file());
    on_path.ok_or_else(|| {
        let looked = installed
            .map(|path| format!("{}, ", path.display()))
            .unwrap_or_default();
        format!(
            "prism is not installed (PRISM is unset; looked in {looked}and on PATH); \
             tests/scripts/test-all.sh installs it with npm"
        )
    })
}

/// Returns the text of the shipped policies without [`FACT_POLICIES`].
fn policies_without_fact_guardrails() -> String {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/policies.cedar");
    let text = std::fs::read_to_string(&shipped).expect("the shipped policies are readable");
    // Each policy, with its comment, is one block between blank lines.
    let blocks: Vec<&str> = text.split("\n\n").collect();
    let kept: Vec<&str> = blocks
        .iter()
        .copied()
        .filter(|block| {
            !FACT_POLICIES
                .iter()
                .any(|id| block.contains(&format!("@id(\"{id}\")")))
        })
        .collect();
    assert_eq!(
        blocks.len() - kept.len(),
        FACT_POLICIES.len(),
        "each fact guardrail is one block of {}",
        shipped.display()
    );
    kept.join("\n\n")
}

/// Runs all seven functions against Prism, each through a valid request.
///
/// Six routes succeed with the shipped policies. `update-jit-access` cannot:
/// it first looks up the project and the organization's members, and Prism
/// responds from the document's examples. The document gives `status` no
/// example, so Prism 5 serves the first enum value, `INACTIVE`, and member
/// `user_id` has neither example nor format, so Prism serves `"string"`,
/// which no UUID user can match. Prism's dynamic mode (`-d`) would serve a
/// random status and random text, which cannot match either. The guardrails
/// then deny the grant, as they must for an inactive project and a
/// non-member. The test asserts exactly that denial, then sends the update
/// again with the shipped policies minus those three fact guardrails, so the
/// PUT reaches Prism and passes its checks.
#[tokio::test]
async fn every_route_against_prism() {
    let Some(spec) = Spec::official_or_skip("the Prism check") else {
        return;
    };
    let executable = match prism_path() {
        Ok(executable) => executable,
        Err(reason) => {
            println!("{reason}; the Prism check skipped");
            return;
        }
    };
    let prism = Prism::start(&executable).await;
    let mut harness = Harness::start().await;
    let prism_url = prism.url();
    let upstream = [("SUPABASE_API_URL", prism_url.as_str())];
    let jit = format!("/v1/projects/{PROJECT}/database/jit");
    let update = update_body(
        CAROL,
        "jit_readonly",
        Some(hours_from_now(1)),
        "allowed_cidrs",
        "10.20.0.0/16",
    );

    // Prism's own check is on: a body with `user_roles` in place of `roles` gets 422.
    let rejected = http_client()
        .put(format!("{prism_url}{jit}"))
        .bearer_auth(TOKEN)
        .json(&json!({ "user_id": CAROL, "user_roles": [{ "role": "jit_readonly" }] }))
        .send()
        .await
        .expect("prism responds");
    assert_eq!(
        rejected.status().as_u16(),
        422,
        "prism must reject a body that breaks the document"
    );

    let cases: [(&str, &'static str, String, Option<String>, &str); 6] = [
        (
            "list-organization-members",
            "GET",
            format!("/v1/organizations/{ORGANIZATION}/members"),
            None,
            "v1-list-organization-members",
        ),
        (
            "list-projects",
            "GET",
            "/v1/projects".into(),
            None,
            "v1-list-all-projects",
        ),
        (
            "get-project",
            "GET",
            format!("/v1/projects/{PROJECT}"),
            None,
            "v1-get-project",
        ),
        (
            "authorize-jit-access",
            "POST",
            jit.clone(),
            Some(r#"{"role":"jit_readonly","rhost":"10.1.2.3"}"#.into()),
            "v1-authorize-jit-access",
        ),
        (
            "list-jit-access",
            "GET",
            format!("{jit}/list"),
            None,
            "v1-list-jit-access",
        ),
        (
            "revoke-jit-access",
            "DELETE",
            format!("{jit}/{BOB}"),
            None,
            "",
        ),
    ];
    let mut organization_slug = String::new();
    for (name, method, path, body, operation) in cases {
        let handle = harness.spawn(name, &upstream).await;
        let response = harness
            .invoke(handle, url_event(method, &path, body.as_deref()))
            .await;
        assert!(
            (200..300).contains(&response.status),
            "{name} against prism: {} {}",
            response.status,
            response.body_text
        );
        if operation.is_empty() {
            assert_eq!(
                response.body_text, "",
                "{name}: the document defines no body"
            );
        } else {
            assert_valid_as_documented(&spec, operation, &response.body);
        }
        if name == "get-project" {
            organization_slug = response.body["organization_slug"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
    }

    // The shipped policies deny the update on Prism's example facts.
    let denied_update = harness.spawn("update-jit-access", &upstream).await;
    let response = harness
        .invoke(denied_update, url_event("PUT", &jit, Some(&update)))
        .await;
    assert_eq!(response.status, 403, "{}", response.body_text);
    assert_eq!(response.body["code"], "policy_denied");
    assert_eq!(
        response.body["policy_ids"],
        json!(FACT_POLICIES),
        "{}",
        response.body_text
    );

    let policies = policy_dir(&policies_without_fact_guardrails());
    let policy_path = policies.path().to_string_lossy().into_owned();
    let extra = [upstream[0], ("JIT_GUARD_POLICY_DIR", policy_path.as_str())];
    let allowed_update = harness.spawn("update-jit-access", &extra).await;
    let response = harness
        .invoke(allowed_update, url_event("PUT", &jit, Some(&update)))
        .await;
    assert!(
        (200..300).contains(&response.status),
        "update against prism: {} {}",
        response.status,
        response.body_text
    );
    assert_valid_as_documented(&spec, "v1-update-jit-access", &response.body);

    // Every request the functions sent reached Prism and passed its checks.
    // They follow the readiness probe and the 422 control above.
    let requests = prism.validated_requests();
    let control = requests
        .iter()
        .position(|(_, passed)| !passed)
        .expect("prism logged the rejected control request");
    let sent = &requests[control + 1..];
    let expected = [
        format!("get /v1/organizations/{ORGANIZATION}/members"),
        "get /v1/projects".to_owned(),
        format!("get /v1/projects/{PROJECT}"),
        format!("get /v1/projects/{PROJECT}"),
        format!("post {jit}"),
        format!("get {jit}/list"),
        format!("delete {jit}/{BOB}"),
        format!("get /v1/projects/{PROJECT}"),
        format!("get /v1/organizations/{organization_slug}/members"),
        format!("get /v1/projects/{PROJECT}"),
        format!("get /v1/organizations/{organization_slug}/members"),
        format!("put {jit}"),
    ];
    let received: Vec<&str> = sent.iter().map(|(request, _)| request.as_str()).collect();
    assert_eq!(
        received,
        expected,
        "prism's log:\n{}",
        prism.log_lines().join("\n")
    );
    for (request, passed) in sent {
        assert!(
            passed,
            "prism rejected {request}:\n{}",
            prism.log_lines().join("\n")
        );
    }
    harness.assert_token_never_leaked();
}
