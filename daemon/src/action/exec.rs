//! Running a command for an event: argv with tokens substituted, `TRIGGERD_*` in the
//! environment (a batch's size in `TRIGGERD_BATCH_COUNT`), stdin as the rule's `stdin` says
//! (`super::stdin`), its own process group (so a timeout or a restart kills everything it
//! started), optional uid/gid, stdout/stderr logged line by line under the rule's name. The
//! child starts clean ([`triggerd_spawn`]: fds 0-2, the base environment plus the rule's
//! `env`, the user's groups, umask 022, `/` or `chdir`). The child is always waited for, so it
//! never lingers as a zombie.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::substitute;
use crate::config::ExecAction;
use crate::event::Event;

/// The last stdout bytes kept per run (a trigger file's read side shows them).
const STDOUT_TAIL: usize = 64 * 1024;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutcome {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    SpawnFailed(String),
}

impl ExecOutcome {
    pub fn success(&self) -> bool {
        *self == ExecOutcome::Exited(0)
    }
}

/// A started run, as the dispatcher tracks it: its process group is its pid.
#[derive(Debug, Clone)]
pub struct Running {
    pub pgid: i32,
    /// Set as soon as the leader is reaped. From then on the group may be empty and its id
    /// handed to an unrelated process, so the group is no longer ours to signal.
    reaped: Arc<AtomicBool>,
}

impl Running {
    pub fn new(pgid: i32) -> Self {
        Self {
            pgid,
            reaped: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Kills the run's whole process group while its leader is unreaped (a zombie leader
    /// keeps the id from being reused); a run that has already exited is left alone.
    pub fn kill(&self) {
        if self.reaped.load(Ordering::Acquire) {
            return;
        }
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    fn mark_reaped(&self) {
        self.reaped.store(true, Ordering::Release);
    }
}

/// Runs `action` for `event`; `started` is told the process group as soon as it exists.
pub async fn run_exec(
    rule: &str,
    action: &ExecAction,
    timeout: Option<Duration>,
    event: &Event,
    started: impl FnOnce(Running),
) -> (ExecOutcome, Vec<u8>) {
    let input = super::stdin_input(action.stdin, event);
    let mut child =
        match build_command(rule, action, event, input.is_empty()).and_then(|mut c| c.spawn()) {
            Ok(child) => child,
            Err(e) => {
                let program = action
                    .argv
                    .first()
                    .map(|p| p.to_string_lossy().into_owned());
                let message = format!("{}: {e}", program.unwrap_or_default());
                tracing::warn!(rule, "cannot start: {message}");
                return (ExecOutcome::SpawnFailed(message), Vec::new());
            }
        };
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return (
            ExecOutcome::SpawnFailed("child vanished".into()),
            Vec::new(),
        );
    };
    let running = Running::new(pid);
    started(running.clone());

    if let Some(mut stdin) = child.stdin.take() {
        let input = input.into_owned();
        tokio::spawn(async move {
            // A command that does not read its stdin closes the pipe: not an error.
            let _ = stdin.write_all(&input).await;
        });
    }
    let stdout = child
        .stdout
        .take()
        .map(|out| tokio::spawn(log_lines(rule.to_owned(), "stdout", out)));
    let stderr = child
        .stderr
        .take()
        .map(|err| tokio::spawn(log_lines(rule.to_owned(), "stderr", err)));

    let waited = match timeout {
        Some(limit) => match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => Some(status),
            Err(_) => {
                running.kill();
                let _ = child.wait().await;
                None
            }
        },
        None => Some(child.wait().await),
    };
    running.mark_reaped();
    let outcome = match waited {
        None => ExecOutcome::TimedOut,
        Some(Ok(status)) => match (status.code(), status.signal()) {
            (Some(code), _) => ExecOutcome::Exited(code),
            (None, Some(signal)) => ExecOutcome::Signaled(signal),
            (None, None) => ExecOutcome::Exited(-1),
        },
        Some(Err(e)) => ExecOutcome::SpawnFailed(format!("wait: {e}")),
    };
    // Output may still be held open by a process the command left behind; do not wait for it
    // past a short bound.
    let mut tail = Vec::new();
    if let Some(task) = stdout {
        if let Ok(Ok(bytes)) = tokio::time::timeout(Duration::from_secs(1), task).await {
            tail = bytes;
        }
    }
    if let Some(task) = stderr {
        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    }
    log_outcome(rule, &outcome);
    (outcome, tail)
}

fn build_command(
    rule: &str,
    action: &ExecAction,
    event: &Event,
    no_input: bool,
) -> std::io::Result<Command> {
    let mut argv = action
        .argv
        .iter()
        .map(|arg| substitute(arg, event, &action.tokens));
    let program = argv.next().unwrap_or_default();
    let mut command = Command::new(program);
    command.args(argv);
    let spec = triggerd_spawn::Spec {
        user: match (action.user, action.group) {
            (None, None) => None,
            (uid, gid) => Some((
                uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw()),
                gid.unwrap_or_else(|| nix::unistd::getegid().as_raw()),
            )),
        },
        env: action.env.clone(),
        chdir: action.chdir.clone(),
    };
    triggerd_spawn::prepare(command.as_std_mut(), &spec).map_err(std::io::Error::other)?;
    if let Some(batch) = &event.batch {
        command.env("TRIGGERD_BATCH_COUNT", batch.entries.len().to_string());
        if batch.cut {
            command.env("TRIGGERD_BATCH_OVERFLOW", "1");
        }
    }
    let path = &event.subject;
    let since_epoch = event.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    command
        .env("TRIGGERD_RULE", rule)
        .env("TRIGGERD_SOURCE", event.source.as_str())
        .env("TRIGGERD_ID", event.id.to_string())
        .env("TRIGGERD_PATH", path.as_os_str())
        .env(
            "TRIGGERD_DIR",
            path.parent().map(|p| p.as_os_str()).unwrap_or_default(),
        )
        .env("TRIGGERD_NAME", path.file_name().unwrap_or_default())
        .env("TRIGGERD_EVENT", event.mask.to_string())
        .env("TRIGGERD_MASK", event.mask.bits().to_string())
        .env(
            "TRIGGERD_PID",
            event.pid.map(|p| p.to_string()).unwrap_or_default(),
        )
        .env(
            "TRIGGERD_TIME",
            format!(
                "{}.{:09}",
                since_epoch.as_secs(),
                since_epoch.subsec_nanos()
            ),
        )
        .envs(
            event
                .fields
                .iter()
                .map(|(k, v)| (format!("TRIGGERD_FIELD_{}", k.to_ascii_uppercase()), v)),
        )
        // Empty input needs no pipe (nor a task to feed it): /dev/null reads as empty.
        .stdin(if no_input {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    Ok(command)
}

/// Logs each line under the rule's name; returns the last `STDOUT_TAIL` bytes.
async fn log_lines(rule: String, stream: &'static str, pipe: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    let mut tail = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                tail.extend_from_slice(&line);
                if tail.len() > STDOUT_TAIL {
                    tail.drain(..tail.len() - STDOUT_TAIL);
                }
                let text = String::from_utf8_lossy(&line);
                tracing::info!(rule = %rule, stream, "{}", text.trim_end_matches('\n'));
            }
        }
    }
    tail
}

fn log_outcome(rule: &str, outcome: &ExecOutcome) {
    match outcome {
        ExecOutcome::Exited(0) => tracing::debug!(rule, "exited 0"),
        ExecOutcome::Exited(code) => tracing::warn!(rule, code, "exited with status {code}"),
        ExecOutcome::Signaled(signal) => tracing::warn!(rule, signal, "killed by signal {signal}"),
        ExecOutcome::TimedOut => tracing::warn!(rule, "timed out; process group killed"),
        ExecOutcome::SpawnFailed(m) => tracing::warn!(rule, "failed: {m}"),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::path::Path;

    use super::*;

    /// A process leading its own group, standing for whoever gets a finished run's id.
    fn group_leader() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("spawn sleep")
    }

    /// Whether `pid` is dead or has a SIGKILL pending: right after a kill(2) returns, one of
    /// the two holds, so no waiting is needed to tell.
    fn killed_or_dying(pid: u32) -> bool {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return true;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        let sigkill_pending = |mask: String| {
            u64::from_str_radix(&mask, 16).is_ok_and(|m| m & (1 << (libc::SIGKILL - 1)) != 0)
        };
        field("State:").starts_with(['Z', 'X'])
            || sigkill_pending(field("SigPnd:"))
            || sigkill_pending(field("ShdPnd:"))
    }

    #[tokio::test]
    async fn a_finished_run_no_longer_signals_the_group_id_it_had() {
        let config = crate::config::parse(
            Path::new("test.conf"),
            "[[watch]]\nname = \"r\"\npath = \"/tmp\"\nevents = \"close_write\"\nexec = [\"/bin/true\"]\n",
        )
        .expect("config");
        let crate::config::Action::Exec(action) = &config.rules[0].def.action else {
            panic!("an exec rule");
        };
        let event = Event {
            id: 1,
            source: crate::event::SourceKind::Manual,
            subject: "/tmp/x".into(),
            mask: triggerd_watch::EventMask::EMPTY,
            pid: None,
            time: std::time::SystemTime::now(),
            payload: Vec::new(),
            reply: None,
            fields: Vec::new(),
            batch: None,
        };
        let mut handed = None;
        let (outcome, _) = run_exec("r", action, None, &event, |r| handed = Some(r)).await;
        assert_eq!(outcome, ExecOutcome::Exited(0));
        let finished = handed.expect("started was called");

        let mut other = group_leader();
        let reused = Running {
            pgid: other.id() as i32,
            ..finished
        };
        reused.kill();
        let left_alone = !killed_or_dying(other.id());

        Running::new(other.id() as i32).kill();
        let status = other.wait().expect("wait");
        assert!(left_alone, "a finished run's kill reached another group");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "a live run is killed");
    }
}
