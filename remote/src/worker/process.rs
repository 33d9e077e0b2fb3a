//! Runs one child process for a plugin: argv (never a shell), payload written to stdin,
//! stdout and stderr read line by line and handed over as they arrive, SIGKILL when the
//! deadline passes. The child leads its own process group, and the kill takes the whole group:
//! a grandchild holding the output pipes open must not outlive the request. The exit status is
//! the child's code, or 128 + signal like a shell. The child starts clean
//! ([`triggerd_spawn`]): fds 0-2, the base environment plus `env`, umask 022, cwd `/`, and,
//! when the service names one, as another user (with that user's groups).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::ext::STATUS_TIMEOUT;

/// Longest line handed over; longer lines are cut (the rest follows as further lines).
const MAX_LINE: usize = 64 * 1024;

fn pump(stream: impl Read + Send + 'static, lines: mpsc::Sender<Vec<u8>>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        loop {
            let mut line = Vec::new();
            match (&mut reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)
            {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if lines.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// Runs `argv` with `env` added, as `user` (uid, gid; `None`: the worker's own), feeding
/// `stdin`; calls `on_line` for every output line. Returns the exit status, or
/// [`STATUS_TIMEOUT`] when it had to be killed.
pub(crate) fn run(
    argv: &[String],
    env: &[(&str, String)],
    user: Option<(u32, u32)>,
    stdin: &[u8],
    timeout: Duration,
    on_line: &mut dyn FnMut(Vec<u8>),
) -> std::io::Result<i32> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty argv"))?;
    let mut command = Command::new(program);
    let spec = triggerd_spawn::Spec {
        user,
        env: env.iter().map(|(k, v)| (k.into(), v.into())).collect(),
        ..triggerd_spawn::Spec::default()
    };
    triggerd_spawn::prepare(&mut command, &spec).map_err(std::io::Error::other)?;
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let deadline = Instant::now() + timeout;
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        pump(out, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        pump(err, tx.clone());
    }
    drop(tx);
    if let Some(mut input) = child.stdin.take() {
        let payload = stdin.to_vec();
        // A child that does not read its stdin must not block us: write from a thread.
        std::thread::spawn(move || {
            let _ = input.write_all(&payload);
        });
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => on_line(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => return Ok(kill_group(&mut child)),
        }
    }
    // Output is closed; the child is exiting (or closed its pipes): wait within the deadline.
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
        }
        if Instant::now() >= deadline {
            return Ok(kill_group(&mut child));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Kills the child's whole process group (its pid is the group id) and reaps the child.
fn kill_group(child: &mut Child) -> i32 {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    STATUS_TIMEOUT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn streams_lines_and_returns_exit_code() {
        let mut lines = Vec::new();
        let status = run(
            &sh("cat; echo err >&2; exit 3"),
            &[],
            None,
            b"a\nb\n",
            Duration::from_secs(10),
            &mut |l| lines.push(l),
        )
        .expect("run");
        assert_eq!(status, 3);
        lines.sort();
        assert_eq!(lines, vec![b"a".to_vec(), b"b".to_vec(), b"err".to_vec()]);
    }

    #[test]
    fn kills_on_timeout() {
        let started = Instant::now();
        let status = run(
            &sh("exec sleep 30"),
            &[],
            None,
            b"",
            Duration::from_millis(200),
            &mut |_| {},
        )
        .expect("run");
        assert_eq!(status, STATUS_TIMEOUT);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn timeout_kills_a_grandchild_holding_the_output_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("grandchild.pid");
        let script = format!("sleep 300 & echo $! > '{}'; wait", pid_file.display());
        let status = run(
            &sh(&script),
            &[],
            None,
            b"",
            Duration::from_secs(2),
            &mut |_| {},
        )
        .expect("run");
        assert_eq!(status, STATUS_TIMEOUT);
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        // Killed means gone or a zombie awaiting its reaper (init here, once sh is dead).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "grandchild {pid} still alive: {stat}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn missing_program_is_an_error() {
        assert!(run(
            &["/nonexistent/prog".into()],
            &[],
            None,
            b"",
            Duration::from_secs(1),
            &mut |_| {}
        )
        .is_err());
    }
}
