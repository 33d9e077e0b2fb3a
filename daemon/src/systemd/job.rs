//! Telling `systemctl restart` from `systemctl stop`: both send SIGTERM, so on SIGTERM the
//! daemon asks the service manager which job of its own unit is running. A `restart` job
//! (also what `try-restart` and `reload-or-restart` without reload become) reports its type
//! as `restart` while its stop half runs; anything else (`stop`, a shutdown of the system, no
//! job, no answer in time) is a stop. The question goes through `systemctl list-jobs`, which
//! as root talks to PID 1's private socket and so needs no D-Bus daemon.
//!
//! The unit is this process's own, read from `/proc/self/cgroup` (systemd puts each service
//! in a cgroup named after it), so a renamed or templated unit works too.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the answer may take; past it, SIGTERM is a stop (the safe reading).
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// At most this much of `systemctl`'s output is read.
const MAX_OUTPUT: u64 = 64 * 1024;

/// What a SIGTERM from the service manager means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// The unit is being restarted: keep the kernel objects in the fd store.
    Restart,
    /// Anything else: end everything.
    Stop,
}

/// Asks the service manager which job of this unit is running (see the module's doc).
pub fn pending() -> Pending {
    let Some(unit) = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| own_unit(&c))
    else {
        tracing::info!("SIGTERM: this process is in no service's cgroup: stopping");
        return Pending::Stop;
    };
    match list_jobs(&unit) {
        Ok(out) => {
            let pending = job_of(&out, &unit);
            tracing::info!(unit, ?pending, "SIGTERM: job of the unit");
            pending
        }
        Err(e) => {
            tracing::warn!(
                unit,
                "SIGTERM: cannot ask systemd for the unit's job ({e}): stopping"
            );
            Pending::Stop
        }
    }
}

/// The service unit in the unified (`0::`) line of `/proc/self/cgroup`, e.g.
/// `0::/system.slice/triggerd.service` → `triggerd.service`.
fn own_unit(cgroup: &str) -> Option<String> {
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    path.rsplit('/')
        .find(|c| c.ends_with(".service"))
        .filter(|u| u.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
}

/// `systemctl list-jobs --no-legend UNIT` lines are `JOB UNIT TYPE STATE`.
fn job_of(out: &str, unit: &str) -> Pending {
    let restart = out.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let _id = fields.next();
        fields.next() == Some(unit) && fields.next() == Some("restart")
    });
    if restart {
        Pending::Restart
    } else {
        Pending::Stop
    }
}

fn list_jobs(unit: &str) -> std::io::Result<String> {
    let mut child = Command::new("systemctl")
        .args([
            "list-jobs",
            "--no-legend",
            "--no-pager",
            "--plain",
            "--",
            unit,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + ASK_TIMEOUT;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!(
                "no answer within {ASK_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        stdout.take(MAX_OUTPUT).read_to_string(&mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_comes_from_the_unified_cgroup_line() {
        assert_eq!(
            own_unit("0::/system.slice/triggerd.service\n").as_deref(),
            Some("triggerd.service")
        );
        assert_eq!(
            own_unit("1:name=systemd:/x\n0::/system.slice/t@a.service/sub\n").as_deref(),
            Some("t@a.service")
        );
        assert_eq!(own_unit("0::/user.slice/session-1.scope\n"), None);
        assert_eq!(own_unit("0::/\n"), None);
    }

    #[test]
    fn only_a_restart_job_of_this_unit_is_a_restart() {
        let unit = "triggerd.service";
        assert_eq!(
            job_of("412 triggerd.service restart running\n", unit),
            Pending::Restart
        );
        assert_eq!(
            job_of("412 triggerd.service stop running\n", unit),
            Pending::Stop
        );
        assert_eq!(
            job_of("9 other.service restart running\n", unit),
            Pending::Stop
        );
        assert_eq!(job_of("", unit), Pending::Stop);
    }
}
