//! How every triggerd binary logs. When stderr is connected to the journal
//! (`JOURNAL_STREAM` names stderr's device and inode, as `systemd.exec(5)` describes), events
//! go to journald over its native protocol, each tracing field a journal field of the same
//! name upper-cased (`rule` → `RULE=`), so `journalctl -u triggerd RULE=etc-changed` finds a
//! rule's lines. Otherwise they are lines on stderr, coloured only when stderr is a terminal.

use std::io::IsTerminal;
use std::os::fd::AsRawFd;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the global logger; `filter_env` names the variable holding the filter (default
/// `info`), `identifier` is the journal's `SYSLOG_IDENTIFIER`.
pub fn init(filter_env: &str, identifier: &str) {
    let filter = || EnvFilter::try_from_env(filter_env).unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_the_journal(std::env::var("JOURNAL_STREAM").ok().as_deref()) {
        match tracing_journald::layer() {
            Ok(journal) => {
                let journal = journal
                    .with_field_prefix(None)
                    .with_syslog_identifier(identifier.to_string());
                tracing_subscriber::registry()
                    .with(filter())
                    .with(journal)
                    .init();
                return;
            }
            // The stream still reaches the journal: plain lines, without times it adds itself.
            Err(_) => {
                tracing_subscriber::fmt()
                    .with_env_filter(filter())
                    .with_writer(std::io::stderr)
                    .with_ansi(false)
                    .with_target(false)
                    .without_time()
                    .init();
                return;
            }
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// Whether `journal_stream` (`DEVICE:INODE`) is the file stderr is open on. A variable
/// inherited by a process whose stderr was redirected elsewhere does not count.
fn stderr_is_the_journal(journal_stream: Option<&str>) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    stderr_identity().is_some_and(|(d, i)| d == dev && i == ino)
}

/// Device and inode of the file on fd 2.
fn stderr_identity() -> Option<(u64, u64)> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat(2) writes at most one `stat` into the buffer we own.
    if unsafe { libc::fstat(std::io::stderr().as_raw_fd(), stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat(2) succeeded, so it initialised the whole `stat`.
    let stat = unsafe { stat.assume_init() };
    Some((stat.st_dev, stat.st_ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_stream_stderr_is_open_on_counts() {
        let (dev, ino) = stderr_identity().expect("fstat of stderr");
        assert!(stderr_is_the_journal(Some(&format!("{dev}:{ino}"))));
        assert!(!stderr_is_the_journal(Some(&format!("{dev}:{}", ino + 1))));
        assert!(!stderr_is_the_journal(Some("garbage")));
        assert!(!stderr_is_the_journal(None));
    }
}
