//! A writer doing one 200-byte write(2) every 100 µs into a trigger file (opened once, kept
//! open, as nginx keeps its access log) across `triggerctl reexec`: the longest write(2)
//! stall and the number of failed writes over the exec. Baseline in the same run: the same
//! writer into a tmpfs file for as long. Target: 0 failed, longest stall ≤ 250 ms.
//!
//! Run as root: `cargo build --release -p triggerd -p triggerd-benches &&
//! target/release/restart_stall` (TRIGGERD_BIN overrides the daemon's path; triggerctl is
//! taken from the same directory).

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use triggerd_benches::{triggerd_bin, wait_until};

const ROUNDS: usize = 3;
const PERIOD: Duration = Duration::from_micros(100);
const PAYLOAD: [u8; 200] = [b'x'; 200];

/// What one writer saw: writes, failed writes, the longest single write(2).
struct Seen {
    writes: u64,
    failed: u64,
    longest: Duration,
}

/// Writes every PERIOD through one open `path` until `stop`.
fn write_paced(path: &Path, stop: &AtomicBool) -> Result<Seen> {
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    let mut seen = Seen {
        writes: 0,
        failed: 0,
        longest: Duration::ZERO,
    };
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        if file.write_all(&PAYLOAD).is_err() {
            seen.failed += 1;
        }
        seen.longest = seen.longest.max(start.elapsed());
        seen.writes += 1;
        next += PERIOD;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    Ok(seen)
}

/// Runs the writer on `path` for `before`, calls `during`, runs `after` more.
fn run_writer(path: &Path, during: impl FnOnce() -> Result<()>) -> Result<Seen> {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (path, stop) = (path.to_path_buf(), Arc::clone(&stop));
        std::thread::spawn(move || write_paced(&path, &stop))
    };
    std::thread::sleep(Duration::from_millis(500));
    during()?;
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))?
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let triggerd = triggerd_bin()?;
    let triggerctl = triggerd.with_file_name("triggerctl");
    let scratch = tempfile::tempdir_in("/tmp")?;
    let socket = scratch.path().join("control.sock");
    let config = scratch.path().join("triggerd.conf");
    let mount = scratch.path().join("fs");
    // One event per write; the rule runs one short action at a time and drops the rest, so
    // not every write spawns a process (a re-exec waits for running actions).
    std::fs::write(
        &config,
        format!(
            "[daemon]\ncontrol = \"{}\"\nstate_dir = \"{}\"\nfs_mount = \"{}\"\n\n[[trigger]]\nname = \"log\"\nfile = \"log\"\nmode = \"0666\"\nmax_running = 1\non_busy = \"drop\"\nexec = [\"/bin/true\"]\n",
            socket.display(),
            scratch.path().join("state").display(),
            mount.display()
        ),
    )?;
    let _daemon = triggerd_benches::spawn_daemon(&triggerd, &config)?;
    let file = mount.join("log");
    wait_until("the trigger file", Duration::from_secs(20), || {
        file.exists()
    })?;
    let reexec = || -> Result<()> {
        let out = Command::new(&triggerctl)
            .arg("--socket")
            .arg(&socket)
            .arg("reexec")
            .output()
            .context("triggerctl reexec")?;
        if !out.status.success() {
            bail!(
                "triggerctl reexec: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };

    let shm = tempfile::tempdir_in("/dev/shm")?;
    let plain = shm.path().join("log");
    std::fs::write(&plain, b"")?;
    let (mut fuse_longest, mut base_longest) = (Vec::new(), Vec::new());
    let mut failed = 0;
    for round in 0..ROUNDS {
        let fuse = run_writer(&file, reexec)?;
        let base = run_writer(&plain, || Ok(()))?;
        std::fs::write(&plain, b"")?;
        println!(
            "round {round}: trigger file across reexec: {} writes, {} failed, longest {:.2} ms; tmpfs: {} writes, longest {:.2} ms",
            fuse.writes,
            fuse.failed,
            ms(fuse.longest),
            base.writes,
            ms(base.longest)
        );
        failed += fuse.failed;
        fuse_longest.push(ms(fuse.longest));
        base_longest.push(ms(base.longest));
    }
    let (fuse, base) = (median(fuse_longest), median(base_longest));
    println!(
        "restart_stall: median longest write(2) across triggerctl reexec {fuse:.2} ms, tmpfs {base:.2} ms (ratio {:.1}x); failed writes {failed} (target: 0 failed, ≤ 250 ms)",
        fuse / base.max(1e-3)
    );
    Ok(())
}
