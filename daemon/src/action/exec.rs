//! Running a command for an event: argv with tokens substituted, `TRIGGERD_*` in the
//! environment (a batch's size in `TRIGGERD_BATCH_COUNT`), stdin as the rule's `stdin` says
//! (`super::stdin`), stdout/stderr logged line by line under the rule's name.
//! The child starts clean ([`triggerd_spawn::prepare`]: fds 0-2, the base environment plus the
//! rule's `env`, the user's groups, umask 022, `/` or `chdir`) and is supervised as every
//! child of triggerd and its workers is ([`triggerd_spawn::supervise`]): its own process group
//! (so a timeout or a restart kills everything it started), bounded lines, always reaped.

use std::time::{Duration, UNIX_EPOCH};

use std::process::Command;
use triggerd_spawn::{Exit, Stream};

use super::substitute;
use crate::config::ExecAction;
use crate::event::Event;

/// A started run, as the dispatcher tracks it: its process group.
pub use triggerd_spawn::Group as Running;

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

impl From<Exit> for ExecOutcome {
    fn from(exit: Exit) -> ExecOutcome {
        match exit {
            Exit::Code(code) => ExecOutcome::Exited(code),
            Exit::Signal(signal) => ExecOutcome::Signaled(signal),
            Exit::TimedOut => ExecOutcome::TimedOut,
        }
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
    let mut tail = Vec::new();
    let supervised = match build_command(rule, action, event) {
        Ok(command) => {
            let run = triggerd_spawn::Run {
                stdin: super::stdin_input(action.stdin, event).into_owned(),
                timeout,
            };
            triggerd_spawn::supervise(command, run, started, |stream, line| {
                log_line(rule, stream, &line);
                if stream == Stream::Stdout {
                    keep_tail(&mut tail, &line);
                }
            })
            .await
        }
        Err(e) => Err(e),
    };
    let outcome = match supervised {
        Ok(exit) => ExecOutcome::from(exit),
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
    log_outcome(rule, &outcome);
    (outcome, tail)
}

fn build_command(rule: &str, action: &ExecAction, event: &Event) -> std::io::Result<Command> {
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
    triggerd_spawn::prepare(&mut command, &spec).map_err(std::io::Error::other)?;
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
        );
    Ok(command)
}

/// Logs one output line under the rule's name.
fn log_line(rule: &str, stream: Stream, line: &[u8]) {
    let stream = match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    };
    let text = String::from_utf8_lossy(line);
    tracing::info!(rule, stream, "{}", text.trim_end_matches('\n'));
}

/// Appends `line` to `tail`, keeping its last [`STDOUT_TAIL`] bytes.
fn keep_tail(tail: &mut Vec<u8>, line: &[u8]) {
    tail.extend_from_slice(line);
    if tail.len() > STDOUT_TAIL {
        tail.drain(..tail.len() - STDOUT_TAIL);
    }
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
    use std::path::Path;

    use super::*;

    fn exec_rule(argv: &str) -> ExecAction {
        let config = crate::config::parse(
            Path::new("test.conf"),
            &format!("[[watch]]\nname = \"r\"\npath = \"/tmp\"\nevents = \"close_write\"\nexec = {argv}\n"),
        )
        .expect("config");
        let crate::config::Action::Exec(action) = &config.rules[0].def.action else {
            panic!("an exec rule");
        };
        action.clone()
    }

    fn event(payload: &[u8]) -> Event {
        let mut event = Event::for_test("/tmp/x", triggerd_watch::EventMask::EMPTY);
        event.payload = payload.to_vec();
        event
    }

    #[tokio::test]
    async fn a_run_reports_its_exit_its_stdout_tail_and_its_group() {
        let action = exec_rule(r#"["/bin/sh", "-c", "cat; echo to-stderr >&2; exit 4"]"#);
        let mut handed = None;
        let (outcome, tail) = run_exec("r", &action, None, &event(b"payload\n"), |g| {
            handed = Some(g)
        })
        .await;
        assert_eq!(outcome, ExecOutcome::Exited(4));
        assert_eq!(tail, b"payload\n");
        assert!(handed.is_some_and(|g| g.pgid > 0));
    }

    #[tokio::test]
    async fn a_timeout_and_a_missing_program_are_reported_as_such() {
        let sleeper = exec_rule(r#"["/bin/sleep", "30"]"#);
        let limit = Some(Duration::from_millis(100));
        let (outcome, _) = run_exec("r", &sleeper, limit, &event(b""), |_| {}).await;
        assert_eq!(outcome, ExecOutcome::TimedOut);
        let missing = exec_rule(r#"["/nonexistent/program"]"#);
        let (outcome, _) = run_exec("r", &missing, None, &event(b""), |_| {}).await;
        assert!(
            matches!(outcome, ExecOutcome::SpawnFailed(_)),
            "{outcome:?}"
        );
    }
}
