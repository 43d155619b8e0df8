//! moto server as the Secrets Manager endpoint of a test.
//!
//! [`MotoServer::start`] runs `moto_server` on 127.0.0.1 with moto's request recorder on:
//! moto appends every API request it receives (headers and body) to a JSON-lines file
//! of this server's own, and [`MotoServer::secretsmanager_calls`] reads the
//! `X-Amz-Target` of each line back. That is how [`MotoServer::get_secret_value_count`]
//! counts what a function really sent.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::Child;

use crate::child::{OutputLines, clean_command, free_port, spawn_drained};

/// Region moto is addressed in; also what [`MotoServer::aws_env`] gives the functions.
pub const REGION: &str = "us-east-1";

/// How long [`MotoServer::start`] waits for moto to respond.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts at a free port: another process may take the port between our probe and moto's bind.
const START_ATTEMPTS: usize = 3;

/// A running `moto_server` child, killed on drop.
pub struct MotoServer {
    child: Child,
    port: u16,
    recording: PathBuf,
    logs: OutputLines,
    http: reqwest::Client,
}

impl MotoServer {
    /// Starts `moto_server` on 127.0.0.1 with a free port and waits (at most 10 s)
    /// until it responds.
    ///
    /// The executable is env `MOTO_SERVER`, else `venv/bin/moto_server` in
    /// `JIT_GUARD_TOOLS` (default `$HOME/.cache/jit-guard`), else `moto_server` on `PATH`.
    ///
    /// # Panics
    /// When moto_server is not installed (with how to install it), or does not start.
    pub async fn start() -> MotoServer {
        let executable = moto_server_path();
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(&executable).await {
                Ok(server) => return server,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "moto_server ({}) did not start in {START_ATTEMPTS} attempts:\n{}",
            executable.display(),
            failures.join("\n")
        );
    }

    async fn start_once(executable: &Path) -> Result<MotoServer, String> {
        let port = free_port()?;
        let recording = std::env::temp_dir().join(format!(
            "jit-guard-moto-{}.jsonl",
            uuid::Uuid::new_v4().simple()
        ));

        let mut command = clean_command(executable);
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .env("MOTO_ENABLE_RECORDING", "true")
            .env("MOTO_RECORDER_FILEPATH", &recording);
        let (child, logs) = spawn_drained(&mut command, executable)?;

        let mut server = MotoServer {
            child,
            port,
            recording,
            logs,
            http: crate::http_client_builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a plain HTTP client builds"),
        };
        server.wait_until_ready().await?;
        Ok(server)
    }

    async fn wait_until_ready(&mut self) -> Result<(), String> {
        let url = format!("{}/moto-api/data.json", self.endpoint());
        let limit = Instant::now() + START_TIMEOUT;
        let mut child_exited = false;
        while Instant::now() < limit {
            if let Ok(response) = self.http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                child_exited = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Give the log readers a moment to pick up why it failed.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state = if child_exited {
            "exited"
        } else {
            "did not respond within 10 s"
        };
        Err(format!(
            "moto_server on port {} {state}; its output:\n{}",
            self.port,
            self.log_lines().join("\n")
        ))
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a secret with a string value and returns its ARN.
    ///
    /// # Panics
    /// When moto rejects the request (for example, the name already exists).
    pub async fn create_secret(&self, name: &str, secret_string: &str) -> String {
        let created = self
            .call(
                "CreateSecret",
                json!({
                    "Name": name,
                    "SecretString": secret_string,
                    "ClientRequestToken": uuid::Uuid::new_v4().to_string(),
                }),
            )
            .await;
        created["ARN"]
            .as_str()
            .unwrap_or_else(|| panic!("moto CreateSecret for {name} returned no ARN: {created}"))
            .to_owned()
    }

    /// Stores a new current value for a secret (a rotation): the new version gets
    /// `AWSCURRENT` and the old one `AWSPREVIOUS`.
    ///
    /// # Panics
    /// When moto rejects the request (for example, no secret has that id).
    pub async fn put_secret_value(&self, secret_id: &str, secret_string: &str) {
        self.call(
            "PutSecretValue",
            json!({
                "SecretId": secret_id,
                "SecretString": secret_string,
                "ClientRequestToken": uuid::Uuid::new_v4().to_string(),
            }),
        )
        .await;
    }

    /// Calls a Secrets Manager action on this moto and returns its JSON response.
    ///
    /// The request has the shape the AWS SDK sends (AWS JSON 1.1, `X-Amz-Target`).
    /// Its `Authorization` header carries a SigV4 credential scope and a dummy
    /// signature: moto reads the service and region from the scope and does not
    /// check signatures.
    ///
    /// # Panics
    /// When moto returns a status other than 2xx.
    pub async fn call(&self, action: &str, body: Value) -> Value {
        let date = chrono::Utc::now();
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential=test/{}/{REGION}/secretsmanager/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={}",
            date.format("%Y%m%d"),
            "0".repeat(64)
        );
        let response = self
            .http
            .post(format!("{}/", self.endpoint()))
            .header("X-Amz-Target", format!("secretsmanager.{action}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .header("X-Amz-Date", date.format("%Y%m%dT%H%M%SZ").to_string())
            .header("Authorization", authorization)
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "moto {action} request to {} failed: {error}",
                    self.endpoint()
                )
            });
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            panic!("moto {action} failed with {status}: {text}");
        }
        serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("moto {action} returned invalid JSON ({error}): {text}"))
    }

    /// Returns the Secrets Manager actions moto received so far, in order (`GetSecretValue`, ...),
    /// including those this struct sent itself (`CreateSecret`, `PutSecretValue`).
    pub fn secretsmanager_calls(&self) -> Vec<String> {
        // moto appends one JSON object per request and closes the file after each,
        // so every complete line is a whole request.
        let recording = std::fs::read_to_string(&self.recording).unwrap_or_default();
        recording
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter_map(|entry| {
                let headers = entry.get("headers")?.as_object()?;
                let target = headers
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case("x-amz-target"))?
                    .1
                    .as_str()?;
                target.strip_prefix("secretsmanager.").map(str::to_owned)
            })
            .collect()
    }

    /// Counts the `GetSecretValue` calls moto received so far.
    pub fn get_secret_value_count(&self) -> usize {
        self.secretsmanager_calls()
            .iter()
            .filter(|action| *action == "GetSecretValue")
            .count()
    }

    /// Returns the env pairs a function needs to reach this moto with the AWS SDK.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }

    /// Returns every line moto_server printed so far (its request log among them).
    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lines()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // Kills our own child by its pid; tokio reaps it in the background.
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.recording);
    }
}

/// Finds the moto_server executable, as described on [`MotoServer::start`].
fn moto_server_path() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "MOTO_SERVER is {}, which is not a file: unset it or point it at moto_server",
            path.display()
        );
        return path;
    }
    let tools_dir = std::env::var_os("JIT_GUARD_TOOLS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/jit-guard"))
        });
    if let Some(tools_dir) = tools_dir {
        let in_venv = tools_dir.join("venv/bin/moto_server");
        if in_venv.is_file() {
            return in_venv;
        }
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("moto_server"))
        .find(|candidate| candidate.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "moto_server not found (env MOTO_SERVER, ~/.cache/jit-guard/venv/bin, PATH): run \
             tests/scripts/test-all.sh once, which installs it with pip install 'moto[server]', \
             or set MOTO_SERVER to its path"
        )
    })
}

/// Asks the OS for a port that is free on 127.0.0.1 at the moment of the call.
#[cfg(test)]
mod tests {
    use super::*;

    /// GetSecretValue as any client would send it, without going through `call`.
    async fn get_secret_value(moto: &MotoServer, secret_id: &str) -> reqwest::Response {
        crate::http_client()
            .post(format!("{}/", moto.endpoint()))
            .header("X-Amz-Target", "secretsmanager.GetSecretValue")
            .header("Content-Type", "application/x-amz-json-1.1")
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/secretsmanager/aws4_request, \
                 SignedHeaders=host, Signature=00",
            )
            .body(json!({ "SecretId": secret_id }).to_string())
            .send()
            .await
            .expect("moto responds")
    }

    #[tokio::test]
    async fn create_secret_reads_back_and_counts() {
        let moto = MotoServer::start().await;
        assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
        let env: std::collections::HashMap<String, String> = moto.aws_env().into_iter().collect();
        assert_eq!(env["AWS_ENDPOINT_URL"], moto.endpoint());
        assert_eq!(env["AWS_REGION"], "us-east-1");
        assert_eq!(env["AWS_ACCESS_KEY_ID"], "test");
        assert_eq!(env["AWS_SECRET_ACCESS_KEY"], "test");
        assert_eq!(env["AWS_EC2_METADATA_DISABLED"], "true");
        let arn = moto
            .create_secret("jit-guard/supabase-token", "sbp_first")
            .await;
        assert!(
            arn.starts_with("arn:aws:secretsmanager:us-east-1:"),
            "ARN {arn}"
        );
        assert!(
            arn.contains(":secret:jit-guard/supabase-token-"),
            "ARN {arn}"
        );
        assert_eq!(moto.get_secret_value_count(), 0, "creating is not reading");

        let response = get_secret_value(&moto, "jit-guard/supabase-token").await;
        assert_eq!(response.status(), 200);
        let secret: Value = response.json().await.unwrap();
        assert_eq!(secret["SecretString"], "sbp_first");
        assert_eq!(secret["ARN"], arn.as_str());
        assert_eq!(moto.get_secret_value_count(), 1);

        get_secret_value(&moto, &arn).await;
        assert_eq!(moto.get_secret_value_count(), 2, "by ARN counts too");
        assert_eq!(
            moto.secretsmanager_calls(),
            ["CreateSecret", "GetSecretValue", "GetSecretValue"]
        );
    }

    #[tokio::test]
    async fn put_secret_value_replaces_current() {
        let moto = MotoServer::start().await;
        moto.create_secret("token", "old").await;
        moto.put_secret_value("token", "new").await;
        let secret: Value = get_secret_value(&moto, "token").await.json().await.unwrap();
        assert_eq!(secret["SecretString"], "new");
        assert_eq!(secret["VersionStages"], json!(["AWSCURRENT"]));
    }

    #[tokio::test]
    async fn get_missing_secret_counts_and_fails() {
        let moto = MotoServer::start().await;
        let response = get_secret_value(&moto, "no-such-secret").await;
        // Real Secrets Manager returns 400 and moto 5.2.5 returns 404. The SDK reads `__type`.
        assert!(
            response.status().is_client_error(),
            "status {}",
            response.status()
        );
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["__type"], "ResourceNotFoundException");
        assert_eq!(
            moto.get_secret_value_count(),
            1,
            "a refused call was still received"
        );
    }

    #[tokio::test]
    async fn servers_independent_and_drop_stops() {
        let first = MotoServer::start().await;
        let second = MotoServer::start().await;
        assert_ne!(first.port(), second.port());
        first.create_secret("only-in-first", "x").await;
        let elsewhere: Value = get_secret_value(&second, "only-in-first")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(elsewhere["__type"], "ResourceNotFoundException");

        let endpoint = first.endpoint();
        drop(first);
        // SIGKILL is asynchronous: poll until the port stops accepting requests.
        let limit = Instant::now() + Duration::from_secs(5);
        let client = crate::http_client();
        loop {
            let responded = client
                .get(format!("{endpoint}/moto-api/data.json"))
                .send()
                .await
                .is_ok();
            if !responded {
                break;
            }
            assert!(
                Instant::now() < limit,
                "moto on {endpoint} still responds 5 s after drop"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
