//! Supervising a started child, the same way for the daemon's actions and the workers'
//! plugins: the child leads its own process group; its payload is written to stdin from a
//! task of its own (a child that never reads cannot block anyone); stdout and stderr are read
//! line by line, each line bounded, and handed over as they come; past the deadline the whole
//! group is killed. The group is signalled only while its leader is unreaped: once the leader
//! is reaped the id may belong to an unrelated process. When the leader exits, output still
//! buffered is read for a short grace period and the run ends, even if a process the child
//! left behind holds the pipes open.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Longest line handed over; a longer one is cut, the rest following as further lines.
pub const MAX_LINE: usize = 64 * 1024;

/// The status a run that was killed at its deadline reports (as `timeout(1)` does).
pub const TIMED_OUT_STATUS: i32 = 124;

/// How long output is still read after the leader exited.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Lines in flight between the pipe readers and the caller: a child that writes faster than
/// the caller takes its lines waits on its pipe instead of filling the parent's memory.
const LINES_IN_FLIGHT: usize = 64;

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stream {
    /// The child's standard output.
    Stdout,
    /// The child's standard error.
    Stderr,
}

/// How a supervised run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The leader exited with this code.
    Code(i32),
    /// The leader was killed by this signal (not by the supervisor).
    Signal(i32),
    /// The deadline passed; the supervisor killed the group.
    TimedOut,
}

impl Exit {
    /// Whether the run exited with status 0.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }

    /// The run as one status number, as a shell reports it: the code, 128 + a signal, or
    /// [`TIMED_OUT_STATUS`].
    pub fn status(self) -> i32 {
        match self {
            Exit::Code(code) => code,
            Exit::Signal(signal) => 128 + signal,
            Exit::TimedOut => TIMED_OUT_STATUS,
        }
    }
}

/// A started run's process group (its id is the leader's pid), for whoever must be able to
/// kill it from outside (a daemon stopping, a rule removed).
#[derive(Debug, Clone)]
pub struct Group {
    /// The process group id.
    pub pgid: i32,
    /// Set as soon as the leader is reaped; from then on the group is no longer ours.
    reaped: Arc<AtomicBool>,
}

impl Group {
    /// The group led by `pgid`, whose leader is not reaped yet.
    pub fn new(pgid: i32) -> Group {
        Group {
            pgid,
            reaped: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Kills the whole group while its leader is unreaped (a zombie leader keeps the id from
    /// being reused); a run that has already been reaped is left alone.
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

/// What to run a prepared command with.
#[derive(Debug, Default)]
pub struct Run {
    /// Written to the child's stdin; empty: stdin is `/dev/null`.
    pub stdin: Vec<u8>,
    /// Kill the group when the run has not ended by then; `None`: no limit.
    pub timeout: Option<Duration>,
}

/// Starts `command` (already [`prepare`](crate::prepare)d, program and arguments set) in its
/// own process group and supervises it to the end. `started` is given the group as soon as it
/// exists; `on_line` every output line, with its newline when it had one. An error means the
/// child could not be started.
pub async fn supervise(
    mut command: std::process::Command,
    run: Run,
    started: impl FnOnce(Group),
    mut on_line: impl FnMut(Stream, Vec<u8>),
) -> std::io::Result<Exit> {
    command
        .stdin(if run.stdin.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(false);
    let mut child = command.spawn()?;
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return Err(std::io::Error::other("the child vanished at start"));
    };
    let group = Group::new(pid);
    started(group.clone());

    if let Some(mut input) = child.stdin.take() {
        let payload = run.stdin;
        tokio::spawn(async move {
            // A command that does not read its stdin closes the pipe: not an error.
            let _ = input.write_all(&payload).await;
        });
    }
    let (lines_tx, mut lines) = mpsc::channel(LINES_IN_FLIGHT);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(out, Stream::Stdout, lines_tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(err, Stream::Stderr, lines_tx.clone()));
    }
    drop(lines_tx);

    let deadline = run.timeout.map(|t| tokio::time::Instant::now() + t);
    let expired = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);
    let mut output_open = true;
    let waited = loop {
        tokio::select! {
            status = child.wait() => break Some(status),
            line = lines.recv(), if output_open => match line {
                Some((stream, line)) => on_line(stream, line),
                None => output_open = false,
            },
            () = &mut expired => break None,
        }
    };
    let exit = match waited {
        Some(status) => {
            group.mark_reaped();
            let status = status?;
            match (status.code(), status.signal()) {
                (Some(code), _) => Exit::Code(code),
                (None, Some(signal)) => Exit::Signal(signal),
                (None, None) => Exit::Code(-1),
            }
        }
        None => {
            group.kill();
            let _ = child.wait().await;
            group.mark_reaped();
            Exit::TimedOut
        }
    };
    // What the child wrote before it ended is still handed over, within a bound: a process
    // it left behind may hold the pipes open for ever.
    let grace = tokio::time::sleep(OUTPUT_GRACE);
    tokio::pin!(grace);
    while output_open {
        tokio::select! {
            line = lines.recv() => match line {
                Some((stream, line)) => on_line(stream, line),
                None => output_open = false,
            },
            () = &mut grace => break,
        }
    }
    Ok(exit)
}

/// [`supervise`] for a caller on a plain thread (a worker's plugin): the same supervision,
/// driven by a runtime of its own for the length of the run.
pub fn supervise_blocking(
    command: std::process::Command,
    run: Run,
    on_line: impl FnMut(Stream, Vec<u8>),
) -> std::io::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(supervise(command, run, |_| {}, on_line))
}

/// Reads `pipe` line by line (each at most [`MAX_LINE`] bytes) into `lines` until it closes
/// or nobody takes lines any more.
async fn pump(
    pipe: impl AsyncRead + Unpin,
    stream: Stream,
    lines: mpsc::Sender<(Stream, Vec<u8>)>,
) {
    let mut reader = BufReader::new(pipe);
    loop {
        let mut line = Vec::new();
        match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if lines.send((stream, line)).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn sh(script: &str) -> std::process::Command {
        let mut command = std::process::Command::new("/bin/sh");
        command.args(["-c", script]);
        command
    }

    fn collect(script: &str, run: Run) -> (Exit, Vec<(Stream, Vec<u8>)>) {
        let mut lines = Vec::new();
        let exit = supervise_blocking(sh(script), run, |s, l| lines.push((s, l))).expect("run");
        (exit, lines)
    }

    #[test]
    fn hands_over_both_streams_and_the_exit_code() {
        let (exit, mut lines) = collect(
            "cat; echo err >&2; printf tail; exit 3",
            Run {
                stdin: b"a\nb\n".to_vec(),
                timeout: Some(Duration::from_secs(30)),
            },
        );
        assert_eq!(exit, Exit::Code(3));
        assert_eq!(exit.status(), 3);
        lines.sort();
        assert_eq!(
            lines,
            vec![
                (Stream::Stdout, b"a\n".to_vec()),
                (Stream::Stdout, b"b\n".to_vec()),
                (Stream::Stdout, b"tail".to_vec()),
                (Stream::Stderr, b"err\n".to_vec()),
            ]
        );
    }

    #[test]
    fn a_signal_exit_is_reported_as_such_and_as_a_shell_status() {
        let (exit, _) = collect("kill -TERM $$", Run::default());
        assert_eq!(exit, Exit::Signal(libc::SIGTERM));
        assert_eq!(exit.status(), 128 + libc::SIGTERM);
    }

    #[test]
    fn a_long_line_is_cut_into_bounded_pieces() {
        let (_, lines) = collect(
            &format!("head -c {} /dev/zero", MAX_LINE * 2 + 5),
            Run::default(),
        );
        let sizes: Vec<usize> = lines.iter().map(|(_, l)| l.len()).collect();
        assert_eq!(sizes, vec![MAX_LINE, MAX_LINE, 5]);
    }

    #[test]
    fn the_deadline_kills_the_group_with_a_grandchild_holding_the_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("grandchild.pid");
        let started = Instant::now();
        let (exit, _) = collect(
            &format!("sleep 300 & echo $! > '{}'; wait", pid_file.display()),
            Run {
                timeout: Some(Duration::from_millis(500)),
                ..Run::default()
            },
        );
        assert_eq!(exit, Exit::TimedOut);
        assert_eq!(exit.status(), TIMED_OUT_STATUS);
        assert!(started.elapsed() < Duration::from_secs(20));
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        // Killed: gone, or a zombie waiting for its reaper.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                break;
            }
            assert!(Instant::now() < deadline, "grandchild {pid} alive: {stat}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_leftover_process_holding_the_pipes_does_not_hold_the_run() {
        let started = Instant::now();
        let (exit, lines) = collect(
            "echo before; sleep 300 & exit 0",
            Run {
                timeout: Some(Duration::from_secs(120)),
                ..Run::default()
            },
        );
        assert_eq!(exit, Exit::Code(0));
        assert_eq!(lines, vec![(Stream::Stdout, b"before\n".to_vec())]);
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn a_missing_program_is_an_error() {
        let result = supervise_blocking(
            std::process::Command::new("/nonexistent/program"),
            Run::default(),
            |_, _| {},
        );
        assert!(result.is_err());
    }

    /// Whether `pid` is dead or has a SIGKILL pending: right after kill(2) returns one of
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

    #[test]
    fn a_reaped_group_is_no_longer_signalled() {
        let mut handed = None;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let exit = runtime
            .block_on(supervise(
                std::process::Command::new("/bin/true"),
                Run::default(),
                |g| handed = Some(g),
                |_, _| {},
            ))
            .expect("run");
        assert_eq!(exit, Exit::Code(0));
        let finished = handed.expect("started was called");
        // A live group standing for whoever gets the finished run's id next.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("sleep");
        Group {
            pgid: other.id() as i32,
            ..finished
        }
        .kill();
        let alive = !killed_or_dying(other.id());
        Group::new(other.id() as i32).kill();
        let status = other.wait().expect("wait");
        assert!(alive, "a finished run's kill reached another group");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
