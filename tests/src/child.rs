//! Helper processes the tests start (moto server, Prism, function binaries):
//! a free loopback port, an environment cleared of the caller's settings,
//! and output drained into memory, because a full pipe would block the child.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// Returns a port on 127.0.0.1 that was free a moment ago. Another process
/// may take it before the child binds it, so callers retry a failed start.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|probe| probe.local_addr())
        .map(|address| address.port())
        .map_err(|error| format!("no free port on 127.0.0.1: {error}"))
}

/// Returns a command for `executable` whose environment holds only `PATH`
/// and `HOME` of this process, so that no AWS setting of the caller leaks in.
pub fn clean_command(executable: &Path) -> Command {
    let mut command = Command::new(executable);
    command.env_clear();
    for name in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
}

/// The output lines of a child, stdout and stderr in the order they were read.
#[derive(Clone, Default)]
pub struct OutputLines(Arc<Mutex<Vec<String>>>);

impl OutputLines {
    /// Returns the lines read so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn push(&self, line: String) {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(line);
    }
}

/// Spawns `command` with stdin closed, stdout and stderr piped and read into
/// [`OutputLines`] all the time, and the child killed when it is dropped.
pub fn spawn_drained(command: &mut Command, executable: &Path) -> Result<(Child, OutputLines), String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot run {}: {error}", executable.display()))?;
    let output = OutputLines::default();
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(collect_lines(stdout, output.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(collect_lines(stderr, output.clone()));
    }
    Ok((child, output))
}

/// Reads `stream` line by line into `output` until it ends. Bytes that are
/// not UTF-8 are replaced, so one bad byte does not stop the reading.
async fn collect_lines(stream: impl AsyncRead + Unpin, output: OutputLines) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => output.push(String::from_utf8_lossy(&line).trim_end().to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits until `output` has `count` lines, at most a second.
    async fn wait_for_lines(output: &OutputLines, count: usize) -> Vec<String> {
        for _ in 0..100 {
            if output.lines().len() >= count {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        output.lines()
    }

    #[tokio::test]
    async fn both_streams_are_read_and_bad_bytes_replaced() {
        let shell = Path::new("/bin/sh");
        let mut command = clean_command(shell);
        command.args(["-c", "echo out; echo err >&2; printf 'bad \\377\\n'"]);
        let (mut child, output) = spawn_drained(&mut command, shell).unwrap();
        child.wait().await.unwrap();
        let mut lines = wait_for_lines(&output, 3).await;
        lines.sort();
        assert_eq!(lines, ["bad \u{fffd}", "err", "out"]);
    }

    #[tokio::test]
    async fn clean_command_keeps_path_and_home_only() {
        let env = Path::new("/usr/bin/env");
        let mut command = clean_command(env);
        command.env("JIT_GUARD_CHILD_TEST", "kept");
        let (mut child, output) = spawn_drained(&mut command, env).unwrap();
        child.wait().await.unwrap();
        let lines = wait_for_lines(&output, 3).await;
        let mut names: Vec<&str> = lines.iter().filter_map(|line| line.split('=').next()).collect();
        names.sort();
        assert!(lines.contains(&"JIT_GUARD_CHILD_TEST=kept".to_owned()), "{lines:?}");
        assert!(names.iter().all(|name| ["HOME", "JIT_GUARD_CHILD_TEST", "PATH"].contains(name)), "{lines:?}");
    }

    #[test]
    fn free_port_can_be_bound() {
        let port = free_port().unwrap();
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
}
