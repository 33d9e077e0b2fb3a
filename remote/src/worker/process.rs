//! Runs one child process for a plugin: argv (never a shell), payload on stdin, output lines
//! handed over as they arrive (stdout and stderr alike, without their newline), the whole
//! process group killed at the deadline. Supervision is [`triggerd_spawn::supervise`], the
//! same as the daemon's actions; the exit status is the child's code, 128 + a signal as a
//! shell reports it, or [`STATUS_TIMEOUT`](crate::ext::STATUS_TIMEOUT). The child starts clean ([`triggerd_spawn`]):
//! fds 0-2, the base environment plus `env`, umask 022, cwd `/`, and, when the service names
//! one, as another user (with that user's groups).

use std::process::Command;
use std::time::Duration;

/// Runs `argv` with `env` added, as `user` (uid, gid; `None`: the worker's own), feeding
/// `stdin`; calls `on_line` for every output line. Returns the exit status, or
/// [`STATUS_TIMEOUT`](crate::ext::STATUS_TIMEOUT) when it had to be killed.
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
    command.args(args);
    let run = triggerd_spawn::Run {
        stdin: stdin.to_vec(),
        timeout: Some(timeout),
    };
    let exit = triggerd_spawn::supervise_blocking(command, run, |_, mut line| {
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        on_line(line);
    })?;
    Ok(exit.status())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext::STATUS_TIMEOUT;

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
