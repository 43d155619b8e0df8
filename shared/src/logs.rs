//! Log output on stdout, where Lambda sends it to CloudWatch Logs.
//!
//! During an invocation the lines are kept in a buffer and written with one
//! `write` once its response has been posted to the Runtime API (a buffer
//! over 64 KiB is written early). Each write to stdout's pipe wakes the
//! process that reads it. In the benchmark,
//! that reader took the CPU from the function about once per two lines, in
//! the middle of the invocation. Outside an invocation (init, the sweep),
//! lines are written at once.
//!
//! NOTE: when Lambda stops an invocation at its timeout, the lines not yet
//! written are lost, the audit record among them. Every Supabase call and
//! Secrets Manager read ends 300 ms before the deadline so that the
//! invocation can still respond, and write its lines.

use std::cell::RefCell;
use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Above this many bytes, the buffer is written out early.
const BATCH_LIMIT: usize = 64 * 1024;

thread_local! {
    /// The lines of the invocation running on this thread; `None` outside one.
    /// The functions run on a current-thread Tokio runtime, so every task of
    /// an invocation writes here.
    static BATCH: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Writes complete log lines: batched during an invocation, else at once.
pub fn write_lines(bytes: &[u8]) -> io::Result<()> {
    let written = BATCH.with(|batch| {
        let mut batch = batch.borrow_mut();
        let buffer = batch.as_mut()?;
        if buffer.len() + bytes.len() > BATCH_LIMIT {
            let full = std::mem::take(buffer);
            // The new line is written even when the buffer's write failed.
            let written = write_stdout(&full);
            return Some(written.and(write_stdout(bytes)));
        }
        buffer.extend_from_slice(bytes);
        Some(Ok(()))
    });
    written.unwrap_or_else(|| write_stdout(bytes))
}

#[cfg(not(test))]
fn write_stdout(bytes: &[u8]) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mut stdout = io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()
}

/// Unit tests read what would have reached stdout, one entry per write.
#[cfg(test)]
fn write_stdout(bytes: &[u8]) -> io::Result<()> {
    if !bytes.is_empty() {
        tests::WRITES.with(|writes| writes.borrow_mut().push(bytes.to_vec()));
    }
    Ok(())
}

/// Keeps log lines until dropped, then writes them with one `write`. Drop
/// also runs when the handler panics, so its lines are not lost then.
#[must_use = "the lines are written when the batch is dropped"]
pub struct Batch {
    /// False when a batch was already open on this thread: that one writes.
    owner: bool,
}

/// Starts keeping this thread's log lines, until the returned batch is dropped.
///
/// Only on a current-thread Tokio runtime, where the invocation's tasks
/// stay on this thread. On any other runtime (or none) lines are written at
/// once. lambda_runtime's `Runtime::run` (1.5) handles one invocation at a
/// time, so a batch contains one invocation's lines.
pub fn batch() -> Batch {
    let current_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|runtime| runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
    if !current_thread {
        return Batch { owner: false };
    }
    BATCH.with(|batch| {
        let mut batch = batch.borrow_mut();
        if batch.is_some() {
            return Batch { owner: false };
        }
        *batch = Some(Vec::with_capacity(4096));
        Batch { owner: true }
    })
}

impl Drop for Batch {
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        if let Some(lines) = BATCH.with(|batch| batch.borrow_mut().take()) {
            // Nowhere is left to report a failed log write.
            let _ = write_stdout(&lines);
        }
    }
}

/// The `tracing-subscriber` writer for [`write_lines`]. The JSON formatter
/// writes each event as one whole line in a single call.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        write_lines(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    thread_local! {
        pub(super) static WRITES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    /// Returns the writes to stdout so far on this thread, and clears them.
    pub(crate) fn writes() -> Vec<Vec<u8>> {
        WRITES.with(|writes| std::mem::take(&mut *writes.borrow_mut()))
    }

    #[test]
    fn lines_outside_a_batch_are_written_at_once() {
        write_lines(b"init\n").unwrap();
        assert_eq!(writes(), [b"init\n".to_vec()]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn batch_on_multi_thread_runtime_writes_at_once() {
        let batch = batch();
        write_lines(b"moved task\n").unwrap();
        assert_eq!(writes(), [b"moved task\n".to_vec()]);
        drop(batch);
        assert!(writes().is_empty());
    }

    #[tokio::test]
    async fn batch_writes_its_lines_once_at_the_end() {
        let batch = batch();
        write_lines(b"first\n").unwrap();
        write_lines(b"second\n").unwrap();
        assert!(writes().is_empty());
        drop(batch);
        assert_eq!(writes(), [b"first\nsecond\n".to_vec()]);
    }

    #[tokio::test]
    async fn inner_batch_leaves_writing_to_outer() {
        let outer = batch();
        write_lines(b"one\n").unwrap();
        drop(batch());
        assert!(writes().is_empty(), "the inner batch wrote the outer's lines");
        write_lines(b"two\n").unwrap();
        drop(outer);
        assert_eq!(writes(), [b"one\ntwo\n".to_vec()]);
    }

    #[tokio::test]
    async fn full_batch_is_written_early() {
        let batch = batch();
        let long = vec![b'x'; BATCH_LIMIT - 1];
        write_lines(&long).unwrap();
        write_lines(b"over the limit\n").unwrap();
        write_lines(b"after\n").unwrap();
        assert_eq!(writes(), [long, b"over the limit\n".to_vec()]);
        drop(batch);
        assert_eq!(writes(), [b"after\n".to_vec()]);
    }

    #[tokio::test]
    async fn batch_is_written_when_a_panic_unwinds() {
        let unwound = std::panic::catch_unwind(|| {
            let _batch = batch();
            write_lines(b"before the panic\n").unwrap();
            panic!("handler failed");
        });
        assert!(unwound.is_err());
        assert_eq!(writes(), [b"before the panic\n".to_vec()]);
    }

    #[tokio::test]
    async fn tracing_events_go_through_the_batch() {
        let subscriber = tracing_subscriber::fmt().json().with_writer(LogWriter).without_time().finish();
        let batch = batch();
        tracing::subscriber::with_default(subscriber, || tracing::info!(decision = "allow", "access decision"));
        assert!(writes().is_empty());
        drop(batch);
        let written = writes();
        assert_eq!(written.len(), 1);
        let line: serde_json::Value = serde_json::from_slice(&written[0]).unwrap();
        assert_eq!(line["fields"]["message"], "access decision");
    }
}
