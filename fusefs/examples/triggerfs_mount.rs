//! Mounts a trigger filesystem with a counting sink and waits: used by the crash test (killed
//! with SIGKILL while mounted) and by `benches/nginx_access_log.sh` (reports lines received).
//!
//! Usage: `triggerfs_mount MOUNTPOINT STATE_DIR FILE[:line|:write] ...`
//! `TRIGGERFS_THREADS` sets the number of FUSE threads (default 2); `TRIGGERFS_STALL=KEY`
//! makes the sink hold every message of that trigger forever (a request read and never
//! answered, for the take-over tests). Prints `ready` once mounted. Each `stats` line on stdin
//! prints one line per trigger (`KEY events=N drops=N writes=N bytes=N`) and then `end`;
//! `device` prints `device FD`, the number of the connection's /dev/fuse descriptor. End of
//! stdin unmounts and exits.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Duration;

use triggerd_fusefs::{Message, MessageSink, MountOptions, Split, TriggerFs, TriggerSpec};

/// Accepts everything (but the stalled trigger's messages); the filesystem's own counters
/// tell how many messages arrived.
struct CountingSink {
    stall: Option<String>,
}

impl MessageSink for CountingSink {
    fn offer(&self, msg: Message, _wait: Duration) -> bool {
        if self.stall.as_deref() == Some(&*msg.trigger) {
            loop {
                std::thread::park();
            }
        }
        drop(msg);
        true
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mountpoint, state_dir, files @ ..] = args.as_slice() else {
        eprintln!("usage: triggerfs_mount MOUNTPOINT STATE_DIR FILE[:line|:write] ...");
        std::process::exit(2);
    };
    let specs = files
        .iter()
        .map(|f| {
            let (file, split) = match f.rsplit_once(':') {
                Some((file, "line")) => (file, Split::Line),
                Some((file, "write")) => (file, Split::Write),
                _ => (f.as_str(), Split::Write),
            };
            TriggerSpec {
                file: file.to_string(),
                split,
                mode: 0o666,
                uid: 0,
                gid: 0,
                limits: Default::default(),
            }
        })
        .collect();
    let mut opts = MountOptions::new(mountpoint, state_dir);
    if let Some(threads) = std::env::var("TRIGGERFS_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
    {
        opts.threads = threads;
    }
    let sink = CountingSink {
        stall: std::env::var("TRIGGERFS_STALL").ok(),
    };
    let fs = TriggerFs::mount(opts, specs, Arc::new(sink))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim() == "device" {
            use std::os::fd::AsRawFd;
            writeln!(out, "device {}", fs.device().as_raw_fd())?;
            out.flush()?;
        }
        if line.trim() == "stats" {
            for s in fs.stats() {
                writeln!(
                    out,
                    "{} events={} drops={} writes={} bytes={}",
                    s.trigger, s.events, s.drops, s.writes, s.bytes
                )?;
            }
            writeln!(out, "end")?;
            out.flush()?;
        }
    }
    fs.unmount()?;
    Ok(())
}
