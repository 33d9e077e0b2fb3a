//! A spool on a small tmpfs filled to ENOSPC while the broker is down: every event is either
//! accepted (its `send` run succeeds) or refused (the run fails, counted as a spool error);
//! after a restart with the broker back, every accepted event reaches the worker once and no
//! refused one does.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::common::{wait_for, Daemon, DEADLINE};
use super::harness::{broker_table, central_log_host, fire, lines_of, remote_status, Broker};

/// A tmpfs of `size` mounted at `at`; lazily unmounted on drop (even under a running daemon).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).expect("mountpoint");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .expect("mount");
        assert!(status.success(), "mount tmpfs at {}", at.display());
        Self(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_events_and_every_accepted_one_arrives_once_after_restart() {
    let mut broker = Broker::start(false);
    broker.pause();
    let mut sender = Daemon::create(&format!(
        "{}\n[[watch]]\nname = \"ship\"\npath = \"{{dir}}\"\nevents = \"close_write\"\nsend = \"central\"\n",
        broker_table(&broker, "")
    ));
    let _disk = Tmpfs::mount(&sender.path("spool"), "96k");
    sender.launch();

    let (mut accepted, mut refused) = (Vec::new(), 0);
    for i in 0..400 {
        if refused == 3 {
            break;
        }
        let payload = format!("{i:04}-{}", "x".repeat(3000));
        fire(&sender, "ship", &payload);
        let spool = wait_for("the event to be spooled or refused", DEADLINE, || {
            let f = remote_status(&mut sender).forwarder?;
            (f.spooled + f.errors == i + 1).then_some(f)
        });
        if spool.spooled as usize > accepted.len() {
            accepted.push(payload);
        } else {
            refused += 1;
        }
    }
    assert_eq!(refused, 3, "the tmpfs never filled");
    assert!(!accepted.is_empty());
    wait_for("refused runs counted as failed", DEADLINE, || {
        (sender.rule("ship").failed == 3).then_some(())
    });

    assert_eq!(sender.stop(), Some(0), "log:\n{}", sender.log_text());
    broker.resume();
    let worker = central_log_host(&broker, "");
    sender.launch();
    let log = worker.path("central.log");
    wait_for("every accepted event at the worker", DEADLINE, || {
        let pending = remote_status(&mut sender).forwarder?.pending;
        (pending == 0 && lines_of(&log).len() >= accepted.len()).then_some(())
    });
    let mut delivered = lines_of(&log);
    delivered.sort();
    assert_eq!(
        delivered, accepted,
        "each accepted event once, no refused one"
    );
    sender.assert_alive();
}
