//! The systemd notify protocol (`Type=notify`) through the `sd-notify` crate: READY,
//! RELOADING, STOPPING, STATUS and WATCHDOG, and the file descriptor store (`FDSTORE=1` with a
//! name) that keeps kernel objects across a restart of the service. Without `$NOTIFY_SOCKET`
//! every call is a no-op, so the daemon runs the same in a terminal, a test or under systemd.
//! [`job`] tells a SIGTERM of `systemctl restart` from one of `systemctl stop`.

pub mod job;

use std::os::fd::BorrowedFd;
use std::time::Duration;

use sd_notify::NotifyState;

/// Sends one notification (`"READY=1\nSTATUS=..."`); errors are logged, never fatal.
pub fn notify(state: &str) {
    if let Err(e) = sd_notify::notify(&[NotifyState::Custom(state)]) {
        tracing::warn!("systemd notify failed: {e}");
    }
}

/// `RELOADING=1` must carry the monotonic time for `Type=notify-reload`; harmless otherwise.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    if let Err(e) = sd_notify::notify(&states) {
        tracing::warn!("systemd notify failed: {e}");
    }
}

/// Whether a service manager listens (`$NOTIFY_SOCKET` is set).
pub fn managed() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Hands `fd` to the service manager's fd store under `name` (systemd keeps one copy of an
/// object however often it is sent, and drops it when it reports POLLHUP/POLLERR). The unit
/// needs `FileDescriptorStoreMax=`. Errors are logged: without the store a restart only
/// loses what it lost before.
pub fn store_fd(name: &str, fd: BorrowedFd<'_>) {
    if !managed() {
        return;
    }
    let states = [NotifyState::FdStore, NotifyState::FdName(name)];
    match sd_notify::notify_with_fds(&states, &[fd]) {
        Ok(()) => tracing::debug!(name, "descriptor kept in the service manager's fd store"),
        Err(e) => tracing::warn!(name, "systemd fd store refused: {e}"),
    }
}

/// Asks the service manager to drop what its fd store keeps under `name` (`FDSTOREREMOVE=1`).
pub fn remove_fd(name: &str) {
    if !managed() {
        return;
    }
    let states = [NotifyState::FdStoreRemove, NotifyState::FdName(name)];
    if let Err(e) = sd_notify::notify(&states) {
        tracing::warn!(name, "systemd fd store removal refused: {e}");
    }
}

/// The interval at which to send `WATCHDOG=1`, when systemd asked for it (half its timeout).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
