//! Memory bounded in bytes where unprivileged writers reach the daemon: `nobody` writing
//! 2 GiB into a world-writable trigger whose action is slow, and `nobody` holding 400 open
//! handles each with a 1 MiB partial line. The daemon's resident memory (VmRSS) stays within
//! the documented budget plus a small constant, the writer is told (EAGAIN, ENOSPC, ENFILE),
//! every refused byte and open is counted in `status`, and an honest user is served after.
//!
//! The writer is this test binary run again as `nobody` (the `writer_process` test, which
//! does nothing unless `BOUNDED_WRITER` is set): no external tool is needed.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::{rss, sh, wait_for, Daemon, KillOnDrop, DEADLINE};

const MIB: u64 = 1 << 20;
/// Resident memory the daemon may gain beyond its configured budget: FUSE request buffers,
/// allocator slack, the action's pipes.
const SLACK: u64 = 48 * MIB;
const NOBODY: u32 = 65534;

/// Samples the daemon's VmRSS until dropped; `peak` is the highest seen.
struct RssWatch {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start(pid: i32) -> Self {
        let (peak, stop) = (
            Arc::new(AtomicU64::new(rss(pid))),
            Arc::new(AtomicBool::new(false)),
        );
        let (p, s) = (Arc::clone(&peak), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss(pid), Ordering::Relaxed);
                // A sampling period, not a wait for anything.
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        Self {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts this binary as `nobody` in writer mode (std drops root's supplementary groups
/// with the uid); its report is one line on stdout.
fn writer(args: &str) -> KillOnDrop {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "writer_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BOUNDED_WRITER", args)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("writer as nobody");
    KillOnDrop(child)
}

/// The writer's `REPORT k=v ...` line, as numbers by key.
fn report(w: &mut KillOnDrop) -> std::collections::HashMap<String, u64> {
    let out = w.0.stdout.as_mut().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    // libtest may print `test writer_process ... ` on the same line first.
    let line = lines
        .find_map(|l| {
            let l = l.ok()?;
            Some(l[l.find("REPORT ")? + "REPORT ".len()..].to_string())
        })
        .expect("the writer's report");
    line.split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("number")))
        .collect()
}

/// Writer mode: `flood PATH TOTAL CHUNK` writes TOTAL bytes in CHUNK writes into one handle;
/// `partial PATH HANDLES BYTES CHUNK` opens HANDLES handles and writes BYTES without a
/// newline into each, in CHUNK writes, stopping a handle at its first refusal. Each reports
/// what was taken and refused, then (partial) holds its handles until stdin closes.
#[test]
fn writer_process() {
    let Ok(args) = std::env::var("BOUNDED_WRITER") else {
        return;
    };
    let args: Vec<&str> = args.split(' ').collect();
    let num = |i: usize| args[i].parse::<usize>().expect("number");
    let errno = |e: &std::io::Error| e.raw_os_error().unwrap_or(0);
    // Page-aligned, so a write of up to 1 MiB is one FUSE request (never cut in two, of
    // which the second could be refused after the first was taken).
    let mut storage = vec![b'x'; (2 << 20) + 4096];
    let offset = storage.as_ptr().align_offset(4096);
    let aligned = &mut storage[offset..offset + (2 << 20)];
    match args[0] {
        "flood" => {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .open(args[1])
                .expect("open");
            let (total, chunk) = (num(2), num(3));
            let buf = &aligned[..chunk];
            let (mut ok, mut refused, mut eagain) = (0, 0, 0);
            while ok + refused < total {
                match f.write(buf) {
                    Ok(n) => {
                        assert_eq!(n, chunk, "split = \"write\" takes a write whole");
                        ok += n;
                    }
                    Err(e) if errno(&e) == libc::EAGAIN => {
                        eagain += 1;
                        refused += chunk;
                    }
                    Err(e) => panic!("write: {e}"),
                }
            }
            println!("REPORT ok={ok} refused={refused} eagain={eagain}");
        }
        "partial" => {
            let (handles, bytes, chunk) = (num(2), num(3), num(4));
            let (mut files, mut enfile) = (Vec::new(), 0);
            for _ in 0..handles {
                match fs::OpenOptions::new().write(true).open(args[1]) {
                    Ok(f) => files.push(f),
                    Err(e) if errno(&e) == libc::ENFILE => enfile += 1,
                    Err(e) => panic!("open: {e}"),
                }
            }
            let buf = &aligned[..chunk];
            let (mut ok, mut refused, mut enospc) = (0, 0, 0);
            for f in &mut files {
                let mut written = 0;
                while written < bytes {
                    let n = chunk.min(bytes - written);
                    match f.write(&buf[..n]) {
                        Ok(got) => written += got,
                        Err(e) if errno(&e) == libc::ENOSPC => {
                            enospc += 1;
                            refused += n;
                            break;
                        }
                        Err(e) => panic!("write: {e}"),
                    }
                }
                ok += written;
            }
            println!(
                "REPORT opened={} enfile={enfile} ok={ok} refused={refused} enospc={enospc}",
                files.len()
            );
            std::io::stdout().flush().unwrap();
            let _ = std::io::stdin().read(&mut [0]);
            drop(files);
        }
        other => panic!("unknown writer mode {other}"),
    }
}

const HONEST: &str = "[[trigger]]\nname = \"honest\"\nfile = \"honest\"\nexec = [\"{record}\", \"{out}/honest\"]\n\n";

/// An honest root writer is still served: its write becomes a run.
fn honest_user_is_served(daemon: &mut Daemon) {
    sh(&format!(
        "echo hello > {}",
        daemon.path("fs/honest").display()
    ));
    wait_for("the honest run", DEADLINE, || {
        (daemon.rule("honest").fired == 1).then_some(())
    });
    daemon.assert_alive();
}

#[test]
fn two_gib_from_nobody_into_a_slow_rule_stay_within_queue_bytes() {
    const QUEUE_BYTES: u64 = 8 * MIB;
    let mut daemon = Daemon::start(&format!(
        "[[trigger]]\nname = \"flood\"\nfile = \"flood\"\nmode = \"0666\"\nqueue_wait = \"5ms\"\n\
         max_running = 1\nqueue_bytes = {QUEUE_BYTES}\nexec = [\"/bin/sleep\", \"600\"]\n\n{HONEST}"
    ));
    let pid = daemon.pid();
    let before = rss(pid);
    let watch = RssWatch::start(pid);
    let total = 2048 * MIB;
    let path = daemon.path("fs/flood");
    let mut w = writer(&format!("flood {} {total} {MIB}", path.display()));
    let got = report(&mut w);
    assert!(w.wait_exit("the writer", DEADLINE).success());
    let peak = watch.peak();
    drop(watch);
    eprintln!("flood: VmRSS {before} -> peak {peak} bytes; writer {got:?}");
    let (ok, refused) = (got["ok"], got["refused"]);
    assert_eq!(ok + refused, total);
    assert!(got["eagain"] > 0 && ok > 0, "{got:?}");
    let status = daemon.status();
    let t = &status.triggers["flood"];
    assert_eq!((t.bytes, t.refused_bytes), (total, refused), "{t:?}");
    let rule = daemon.rule("flood");
    assert_eq!(rule.refused_bytes, refused, "{rule:?}");
    assert!(rule.queued_bytes <= QUEUE_BYTES, "{rule:?}");
    assert!(
        peak <= before + QUEUE_BYTES + SLACK,
        "VmRSS went from {before} to {peak} bytes (budget {QUEUE_BYTES} + {SLACK})"
    );
    honest_user_is_served(&mut daemon);
}

#[test]
fn four_hundred_partial_lines_from_nobody_are_bounded_in_handles_and_bytes() {
    const PARTIAL_BYTES: u64 = 8 * MIB;
    let mut daemon = Daemon::start(&format!(
        "[[trigger]]\nname = \"partial\"\nfile = \"partial\"\nsplit = \"line\"\nmode = \"0666\"\n\
         max_open = 64\npartial_bytes = {PARTIAL_BYTES}\nexec = [\"/bin/true\"]\n\n{HONEST}"
    ));
    let pid = daemon.pid();
    let before = rss(pid);
    let watch = RssWatch::start(pid);
    let path = daemon.path("fs/partial");
    let line = MIB - 1;
    let mut w = writer(&format!(
        "partial {} 400 {line} {}",
        path.display(),
        64 << 10
    ));
    let got = report(&mut w);
    // The handles are still open, each holding what it was allowed.
    let status = daemon.status();
    let t = status.triggers["partial"].clone();
    let peak = watch.peak();
    drop(watch);
    eprintln!("partial: VmRSS {before} -> peak {peak} bytes; writer {got:?}");
    assert_eq!((got["opened"], got["enfile"]), (64, 336), "{got:?}");
    assert_eq!((t.open, t.refused_opens), (64, 336), "{t:?}");
    // Eight whole lines of 1 MiB - 1 fit; the next chunk would pass the budget.
    assert_eq!(t.partial_bytes, got["ok"], "{t:?} {got:?}");
    assert!(t.partial_bytes <= PARTIAL_BYTES && t.partial_bytes > PARTIAL_BYTES - MIB);
    assert!(got["enospc"] > 0, "{got:?}");
    assert_eq!(t.refused_bytes, got["refused"], "{t:?}");
    assert!(
        peak <= before + PARTIAL_BYTES + SLACK,
        "VmRSS went from {before} to {peak} bytes (budget {PARTIAL_BYTES} + {SLACK})"
    );
    drop(w.0.stdin.take());
    assert!(w.wait_exit("the writer", DEADLINE).success());
    wait_for("the handles to close", DEADLINE, || {
        (daemon.status().triggers["partial"].open == 0).then_some(())
    });
    honest_user_is_served(&mut daemon);
}
