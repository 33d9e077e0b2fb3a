//! The inotify backend against the fanotify backend on the same ext4 directory, in one run
//! (one daemon at a time, the same streams): close() → command start latency (p50, p99) and
//! a burst of 20,000 files (how many fired, and how long until the last command started).
//! The backend is forced with the `backend` key of `[[watch]]`; both daemons run the same
//! tiny C program (`stamp`) that logs the time it started.
//!
//! Run as root: `cargo run --release -p triggerd-benches --bin watch_backends`
//! (set TRIGGERD_BIN, default target/release/triggerd). The directory is under /var/tmp,
//! which must be ext4 (the root filesystem here).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};
use triggerd_benches::{
    compile_c, count_lines, latencies, now_ns, paced_stream, percentile, settle, triggerd_bin,
    wait_until,
};

const PACED_FILES: usize = 1_000;
const PACED_RATE: u64 = 500;
const BURST_FILES: usize = 20_000;
const BACKENDS: [&str; 2] = ["fanotify", "inotify"];

/// One backend's figures: latencies (ms, sorted), burst runs, ms from the burst's start to
/// its last command start.
struct Figures {
    latency: Vec<f64>,
    fired: usize,
    burst_ms: f64,
}

fn main() -> Result<()> {
    let triggerd = triggerd_bin()?;
    fs::create_dir_all("/var/tmp/triggerd-bench")?;
    let fs_type = Command::new("stat")
        .args(["-f", "-c", "%T", "/var/tmp/triggerd-bench"])
        .output()?;
    let fs_type = String::from_utf8_lossy(&fs_type.stdout).trim().to_string();
    if fs_type != "ext2/ext3" {
        bail!("/var/tmp is {fs_type}, not ext4");
    }
    let work = tempfile::tempdir_in("/var/tmp/triggerd-bench")?;
    let dir = work.path();
    let stamp = dir.join("stamp");
    compile_c("stamp", &stamp)?;
    let watched = dir.join("watched");
    let mut results = Vec::new();
    for backend in BACKENDS {
        // the same directory for both, emptied in between
        let _ = fs::remove_dir_all(&watched);
        fs::create_dir(&watched)?;
        let (paced, burst) = (
            dir.join(format!("{backend}-paced.log")),
            dir.join(format!("{backend}-burst.log")),
        );
        let config = dir.join(format!("{backend}.conf"));
        fs::write(
            &config,
            format!(
                "[daemon]\ncontrol = \"{0}/control.sock\"\nstate_dir = \"{0}/state\"\nfs_mount = \"{0}/fs\"\n\n\
                 [[watch]]\nname = \"paced\"\npath = \"{1}/paced\"\nevents = \"close_write\"\nbackend = \"{2}\"\nmax_running = 64\nexec = [\"{3}\", \"{4}\", \"$#\"]\n\n\
                 [[watch]]\nname = \"burst\"\npath = \"{1}/burst\"\nevents = \"close_write\"\nbackend = \"{2}\"\nmax_running = 64\nexec = [\"{3}\", \"{5}\", \"$#\"]\n",
                dir.display(),
                watched.display(),
                backend,
                stamp.display(),
                paced.display(),
                burst.display()
            ),
        )?;
        fs::create_dir(watched.join("paced"))?;
        fs::create_dir(watched.join("burst"))?;
        let _daemon = triggerd_benches::spawn_daemon(&triggerd, &config)?;
        let probe = watched.join("paced/probe");
        wait_until(
            &format!("{backend} to fire"),
            Duration::from_secs(20),
            || {
                fs::write(&probe, b"p").ok();
                count_lines(&paced) > 0
            },
        )?;
        let _ = fs::remove_file(&paced);
        let closed = paced_stream(&watched.join("paced"), PACED_FILES, PACED_RATE)?;
        let _ = wait_until("paced runs", Duration::from_secs(60), || {
            latencies(&paced, &closed).len() >= PACED_FILES
        });
        let latency = latencies(&paced, &closed);
        let start = now_ns();
        for i in 0..BURST_FILES {
            fs::write(watched.join(format!("burst/b{i:06}")), b"x")?;
        }
        settle(std::slice::from_ref(&burst), Duration::from_secs(180));
        let last = last_start(&burst);
        results.push(Figures {
            latency,
            fired: count_lines(&burst),
            burst_ms: last.map_or(f64::NAN, |l| (l - start) as f64 / 1e6),
        });
    }
    println!("close() → command start, {PACED_FILES} files at {PACED_RATE}/s, same ext4 directory, one daemon at a time:");
    for (backend, f) in BACKENDS.iter().zip(&results) {
        match (percentile(&f.latency, 50.0), percentile(&f.latency, 99.0)) {
            (Some(p50), Some(p99)) => println!(
                "  {backend:<8}: p50 {p50:.3} ms  p99 {p99:.3} ms  ({} of {PACED_FILES} fired)",
                f.latency.len()
            ),
            _ => println!("  {backend:<8}: nothing fired"),
        }
    }
    let (fan, ino) = (&results[0], &results[1]);
    for p in [50.0, 99.0] {
        if let (Some(i), Some(f)) = (percentile(&ino.latency, p), percentile(&fan.latency, p)) {
            println!("  p{p} ratio inotify/fanotify = {:.2}", i / f);
        }
    }
    println!("burst of {BURST_FILES} files:");
    for (backend, f) in BACKENDS.iter().zip(&results) {
        println!(
            "  {backend:<8}: fired {} (lost {}), last command started {:.0} ms after the burst began",
            f.fired,
            BURST_FILES - f.fired.min(BURST_FILES),
            f.burst_ms
        );
    }
    println!(
        "  burst time ratio inotify/fanotify = {:.2}",
        ino.burst_ms / fan.burst_ms
    );
    Ok(())
}

/// The latest start time `stamp` logged.
fn last_start(log: &Path) -> Option<i128> {
    let text = fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|l| l.split_once(' ')?.1.parse::<i128>().ok())
        .max()
}
