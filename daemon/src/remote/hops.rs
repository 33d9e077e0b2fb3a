//! The loop guard of chains (a service's plugin writing to another trigger file, as triggerFS
//! users chain services). Every request carries how many requests led to it; a worker runs
//! its plugin with `TRIGGERD_HOPS` = that count + 1, and every process the plugin starts
//! inherits it. A trigger-file write by a process whose environment holds `TRIGGERD_HOPS=N`
//! becomes a request with N hops; one with N >= [`MAX_HOPS`] is refused (the rule's run
//! fails, counted and logged), so a chain that loops stops after [`MAX_HOPS`] requests.
//! A writer can lie about its environment: this stops accidents, it is not a trust boundary.

use crate::event::Event;
pub use triggerd_remote::ext::MAX_HOPS;

/// The event field that carries the count from the trigger-file source to the outbox.
pub const FIELD: &str = "hops";
/// Bytes of a process's environment read to find the count.
const MAX_ENVIRON: u64 = 256 * 1024;

/// `TRIGGERD_HOPS` in the environment of process `pid`, when set (and not 0).
pub fn of_process(pid: i32) -> Option<u8> {
    use std::io::Read;
    let file = std::fs::File::open(format!("/proc/{pid}/environ")).ok()?;
    let mut environ = Vec::new();
    file.take(MAX_ENVIRON).read_to_end(&mut environ).ok()?;
    let value = environ
        .split(|&b| b == 0)
        .find_map(|var| var.strip_prefix(b"TRIGGERD_HOPS="))?;
    let hops: u64 = std::str::from_utf8(value).ok()?.trim().parse().ok()?;
    (hops > 0).then(|| hops.min(u64::from(u8::MAX)) as u8)
}

/// The event's count; an error when it is at the limit (the loop guard).
pub fn of_event(event: &Event) -> Result<u8, String> {
    let hops = event
        .fields
        .iter()
        .find(|(name, _)| name == FIELD)
        .and_then(|(_, v)| v.parse::<u8>().ok())
        .unwrap_or(0);
    if hops >= MAX_HOPS {
        return Err(format!(
            "loop guard: the writer is {hops} requests deep in a chain (limit {MAX_HOPS})"
        ));
    }
    Ok(hops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_read_from_a_process_environment() {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("5")
            .env_clear()
            .env("TRIGGERD_HOPS", "3")
            .spawn()
            .expect("sleep");
        // Until the child has exec'd, /proc shows the environment it was forked with.
        let pid = child.id() as i32;
        let hops = triggerd_testkit::poll(std::time::Duration::from_secs(10), || of_process(pid));
        assert_eq!(hops, Some(3));
        let _ = child.kill();
        let _ = child.wait();
        use triggerd_remote::ext::{split_hops, with_hops};
        assert_eq!(split_hops(&with_hops("command", 3)), ("command", 3));
        assert_eq!(split_hops(&with_hops("command", 0)), ("command", 0));
    }
}
