//! The daemon's own file descriptors: the limit it runs under (raised to the hard limit at
//! start) and how many it holds, which `triggerctl status` shows. Watches hold none (marks
//! are kept by file handle, one mount fd per filesystem), so what is held is bounded by the
//! sources, the control connections and the running actions, never by the number of rules.

use serde::{Deserialize, Serialize};

/// Open descriptors now and the soft limit on them.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FdUsage {
    pub open: u64,
    pub limit: u64,
}

/// Actions each hold a few descriptors: use all the descriptors the hard limit allows (the
/// usual soft limit of 1024 would allow only a hundred or so actions at once).
pub fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
            }
        }
    }
}

/// What this process holds now (the entries of /proc/self/fd, less the one listing them).
pub fn usage() -> FdUsage {
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1) as u64);
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(0, |(soft, _)| soft);
    FdUsage { open, limit }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_an_fd_opened_and_closed() {
        let before = usage();
        assert!(
            before.open >= 3 && before.limit >= before.open,
            "{before:?}"
        );
        let file = std::fs::File::open("/proc/self/status").expect("open");
        let during = usage().open;
        drop(file);
        // Other test threads may open files too: only the direction is certain.
        assert!(during >= 1);
    }
}
