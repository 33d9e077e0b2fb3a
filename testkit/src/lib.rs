//! What the tests of every crate, the end-to-end tests and the benchmarks share: polling a
//! condition until a deadline (never a fixed sleep: the pause between polls grows from 1 ms
//! to 50 ms, so a fast condition is seen at once and a slow one costs little), and guards
//! that end a child process on every way out of a test, a panic included.
#![warn(missing_docs, unreachable_pub)]

use std::process::Child;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or `None` once `limit` has passed (after one last
/// look).
pub fn poll<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Polls `check` until it returns `Some`; panics naming `what` once `limit` has passed.
pub fn wait_for<T>(what: &str, limit: Duration, check: impl FnMut() -> Option<T>) -> T {
    match poll(limit, check) {
        Some(value) => value,
        None => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Polls `cond` until it holds; whether it did before `limit` passed.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    poll(limit, || cond().then_some(())).is_some()
}

/// A child process killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Waits up to `limit` for the child's exit status; panics naming `what` past it (and
    /// the child is then killed by the drop).
    pub fn wait_exit(&mut self, what: &str, limit: Duration) -> std::process::ExitStatus {
        let child = &mut self.0;
        wait_for(what, limit, || child.try_wait().ok().flatten())
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A daemon asked to stop (SIGTERM) when dropped, so that it unmounts its trigger files and
/// removes its marks (a killed one leaves a dead mount behind); killed if it is still there
/// after [`STOP_GRACE`].
#[derive(Debug)]
pub struct StopOnDrop(pub Child);

/// How long a [`StopOnDrop`] daemon may take to stop.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        // Once reaped, its pid may be another process's: signal only a child not yet waited for.
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok() {
            let child = &mut self.0;
            if wait_until(STOP_GRACE, || matches!(child.try_wait(), Ok(Some(_)))) {
                return;
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn poll_returns_the_first_value_and_gives_up_at_the_deadline() {
        let mut calls = 0;
        assert_eq!(
            poll(Duration::from_secs(5), || {
                calls += 1;
                (calls == 3).then_some(calls)
            }),
            Some(3)
        );
        let started = Instant::now();
        assert_eq!(poll(Duration::from_millis(30), || None::<()>), None);
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert!(wait_until(Duration::from_secs(1), || true));
    }

    #[test]
    #[should_panic(expected = "waiting for nothing")]
    fn wait_for_names_what_it_waited_for() {
        wait_for("nothing", Duration::from_millis(1), || None::<()>);
    }

    #[test]
    fn the_guards_end_their_child() {
        let sleeper = Command::new("sleep").arg("30").spawn().expect("sleep");
        let pid = sleeper.id();
        drop(KillOnDrop(sleeper));
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
        let sleeper = Command::new("sleep").arg("30").spawn().expect("sleep");
        let pid = sleeper.id();
        drop(StopOnDrop(sleeper));
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
