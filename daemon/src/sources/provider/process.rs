//! One provider process: started clean (the same `triggerd_spawn` start as every action) in
//! its own process group, its stdout read as bounded lines into parsed messages on a small
//! channel (so a provider that writes faster than rules take events is slowed by its own
//! pipe, never buffered without bound), its stderr logged under its name at a bounded rate.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use super::protocol::{self, FromProvider, Refusal, ToProvider};
use crate::config::ProviderSettings;
use crate::throttle::Throttle;

/// Parsed lines waiting for the supervisor; small, so that back-pressure reaches the pipe.
const INCOMING: usize = 64;
/// Lines of stderr logged per second at most; the rest are counted.
const STDERR_LINES_PER_SECOND: u64 = 20;
/// How long a provider may take to read what triggerd writes it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A line the provider wrote, as the supervisor sees it.
#[derive(Debug)]
pub enum Incoming {
    Message(FromProvider),
    Refused(Refusal),
    TooLong(usize),
}

/// Counts shared by a provider's readers and its status.
#[derive(Debug, Default)]
pub struct LineCounters {
    /// Lines refused: malformed, past a bound, or too long.
    pub refused: AtomicU64,
    pub stderr_suppressed: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot prepare the provider's start: {0}")]
    Prepare(#[from] triggerd_spawn::SpawnError),
    #[error("cannot start {program}: {source}")]
    Start {
        program: String,
        source: std::io::Error,
    },
    #[error("the provider does not read its input: {0}")]
    Write(std::io::Error),
}

pub struct Process {
    pub child: Child,
    stdin: Option<ChildStdin>,
    pub incoming: mpsc::Receiver<Incoming>,
}

impl Process {
    pub fn start(
        settings: &ProviderSettings,
        state_dir: &Path,
        counters: Arc<LineCounters>,
    ) -> Result<Self, ProcessError> {
        let mut argv = settings.exec.iter();
        let program = argv.next().cloned().unwrap_or_default();
        let mut command = std::process::Command::new(&program);
        command.args(argv);
        let spec = triggerd_spawn::Spec {
            user: settings.user,
            env: vec![
                ("TRIGGERD_PROVIDER".into(), settings.name.clone().into()),
                ("TRIGGERD_STATE_DIR".into(), state_dir.into()),
            ],
            chdir: None,
        };
        triggerd_spawn::prepare(&mut command, &spec)?;
        let mut command = Command::from(command);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| ProcessError::Start {
            program: program.to_string_lossy().into_owned(),
            source,
        })?;
        let stdin = child.stdin.take();
        let (tx, incoming) = mpsc::channel(INCOMING);
        if let Some(stdout) = child.stdout.take() {
            let reader = BufReader::new(stdout);
            tokio::spawn(read_messages(
                reader,
                settings.max_line,
                tx,
                Arc::clone(&counters),
            ));
        }
        if let Some(stderr) = child.stderr.take() {
            let name = settings.name.clone();
            tokio::spawn(log_stderr(
                BufReader::new(stderr),
                name,
                settings.max_line,
                counters,
            ));
        }
        Ok(Self {
            child,
            stdin,
            incoming,
        })
    }

    /// Writes one message; a provider that does not take it within `WRITE_TIMEOUT` is wedged.
    pub async fn send(&mut self, message: &ToProvider<'_>) -> Result<(), ProcessError> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(ProcessError::Write(std::io::ErrorKind::BrokenPipe.into()));
        };
        let line = message.line();
        match tokio::time::timeout(WRITE_TIMEOUT, stdin.write_all(&line)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ProcessError::Write(e)),
            Err(_) => Err(ProcessError::Write(std::io::ErrorKind::TimedOut.into())),
        }
    }

    /// Asks it to stop (`shutdown`, then end of input), waits up to `grace`, then kills its
    /// whole process group.
    pub async fn stop(mut self, grace: Duration) {
        let _ = self.send(&ToProvider::Shutdown).await;
        self.stdin = None;
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            self.kill();
            let _ = self.child.wait().await;
        }
    }

    /// Kills the provider's process group (its helpers too).
    pub fn kill(&mut self) {
        if let Some(pid) = self.child.id() {
            let group = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Parses stdout line by line until end of file or until the supervisor is gone.
async fn read_messages(
    mut reader: impl AsyncBufRead + Unpin,
    max_line: usize,
    tx: mpsc::Sender<Incoming>,
    counters: Arc<LineCounters>,
) {
    let mut line = Vec::new();
    loop {
        let incoming = match read_bounded_line(&mut reader, &mut line, max_line).await {
            Ok(Line::End) | Err(_) => return,
            Ok(Line::TooLong(n)) => Incoming::TooLong(n),
            Ok(Line::Whole) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Line::Whole) => match protocol::parse(&line) {
                Ok(message) => Incoming::Message(message),
                Err(refusal) => Incoming::Refused(refusal),
            },
        };
        if !matches!(incoming, Incoming::Message(_)) {
            counters.refused.fetch_add(1, Ordering::Relaxed);
        }
        if tx.send(incoming).await.is_err() {
            return;
        }
    }
}

async fn log_stderr(
    mut reader: impl AsyncBufRead + Unpin,
    provider: String,
    max_line: usize,
    counters: Arc<LineCounters>,
) {
    let mut line = Vec::new();
    let throttle = Throttle::default();
    let mut this_second = 0;
    loop {
        let text = match read_bounded_line(&mut reader, &mut line, max_line).await {
            Ok(Line::End) | Err(_) => return,
            Ok(Line::TooLong(n)) => format!("({n} bytes on one line, not shown)"),
            Ok(Line::Whole) => protocol::clean(&String::from_utf8_lossy(&line)),
        };
        if throttle.ready() {
            this_second = 0;
        }
        this_second += 1;
        if this_second <= STDERR_LINES_PER_SECOND {
            tracing::warn!(provider = %provider, "{text}");
        } else {
            counters.stderr_suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What one read produced.
#[derive(Debug, PartialEq)]
enum Line {
    /// `line` holds a whole line (without its newline; a last line without one counts).
    Whole,
    /// A line longer than the bound went by, discarded as it was read: this many bytes.
    TooLong(usize),
    End,
}

/// Reads one line into `line` keeping at most `max` bytes of it in memory.
async fn read_bounded_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    line.clear();
    let mut skipped = 0usize;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (skipped, line.is_empty()) {
                (0, true) => Line::End,
                (0, false) => Line::Whole,
                (n, _) => Line::TooLong(n),
            });
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1),
            None => (available, available.len()),
        };
        let end_of_line = done > chunk.len();
        if skipped > 0 || line.len() + chunk.len() > max {
            skipped += line.len() + chunk.len();
            line.clear();
        } else {
            line.extend_from_slice(chunk);
        }
        reader.consume(done);
        if end_of_line {
            return Ok(if skipped > 0 {
                Line::TooLong(skipped)
            } else {
                Line::Whole
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lines_are_skipped_without_being_held() {
        let mut input = b"short\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100_000));
        input.extend(b"\nnext\nlast");
        // A small buffer, so the long line arrives in many reads.
        let mut reader = BufReader::with_capacity(16, &input[..]);
        let mut line = Vec::new();
        let mut got = Vec::new();
        loop {
            match read_bounded_line(&mut reader, &mut line, 64)
                .await
                .expect("read")
            {
                Line::End => break,
                Line::TooLong(n) => got.push(format!("too long {n}")),
                Line::Whole => got.push(String::from_utf8(line.clone()).expect("utf8")),
            }
            assert!(line.capacity() <= 128, "the long line was held");
        }
        assert_eq!(got, ["short", "too long 100000", "next", "last"]);
    }
}
