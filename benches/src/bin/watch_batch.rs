//! A burst of new files below a watch: how long until a command has handled every one, with
//! `batch` (one run gets all the paths on stdin) against the baseline of the same rule without
//! it (one run per file), both measured in the same run on the same daemon. The figure is the
//! ratio of the two wall times, and the number of runs each took.
//!
//! Run: `cargo build --release -p triggerd && cargo run --release -p triggerd-benches --bin
//! watch_batch` (TRIGGERD_BIN overrides target/release/triggerd; FILES the burst size).

use std::fs;
use std::time::{Duration, Instant};

use anyhow::Result;
use triggerd_benches::{count_lines, spawn_daemon, triggerd_bin, wait_until};

const LIMIT: Duration = Duration::from_secs(600);

fn main() -> Result<()> {
    let files: usize = std::env::var("FILES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000);
    let triggerd = triggerd_bin()?;
    fs::create_dir_all("/var/tmp/triggerd-bench")?;
    let work = tempfile::tempdir_in("/var/tmp/triggerd-bench")?;
    let dir = work.path();
    for sub in ["each", "batched"] {
        fs::create_dir(dir.join(sub))?;
    }
    // Each run appends the paths it was given to LOG and one line to RUNS.
    let config = format!(
        "[daemon]\ncontrol = \"{0}/control.sock\"\nstate_dir = \"{0}/state\"\nfs_mount = \"{0}/fs\"\n\n\
         [[watch]]\nname = \"each\"\npath = \"{0}/each\"\nevents = [\"close_write\"]\nmax_running = 8\n\
         exec = [\"/bin/sh\", \"-c\", \"echo \\\"$1\\\" >> {0}/each.log; echo >> {0}/each.runs\", \"sh\", \"$$\"]\n\n\
         [[watch]]\nname = \"batched\"\npath = \"{0}/batched\"\nevents = [\"close_write\"]\nbatch = \"50ms\"\n\
         exec = [\"/bin/sh\", \"-c\", \"cat >> {0}/batched.log; echo >> {0}/batched.runs\"]\n",
        dir.display()
    );
    let conf = dir.join("triggerd.conf");
    fs::write(&conf, config)?;
    let _daemon = spawn_daemon(&triggerd, &conf)?;
    wait_until("the control socket", LIMIT, || {
        dir.join("control.sock").exists()
    })?;
    // One file each until both rules have run once: the marks are in place.
    for rule in ["each", "batched"] {
        fs::write(dir.join(rule).join("probe"), "x")?;
        let log = dir.join(format!("{rule}.log"));
        wait_until("the probe", LIMIT, || count_lines(&log) >= 1)?;
    }

    let mut results = Vec::new();
    for rule in ["each", "batched"] {
        let log = dir.join(format!("{rule}.log"));
        let start = Instant::now();
        for i in 0..files {
            fs::write(dir.join(rule).join(format!("f{i}")), "x")?;
        }
        wait_until("every file handled", LIMIT, || count_lines(&log) > files)?;
        let took = start.elapsed();
        let runs = count_lines(&dir.join(format!("{rule}.runs"))) - 1;
        println!(
            "{rule:>8}: {files} files handled in {:8.1} ms, {runs} runs",
            took.as_secs_f64() * 1e3
        );
        results.push(took);
    }
    println!(
        "ratio (one run per file / batch = \"50ms\"): {:.1}x",
        results[0].as_secs_f64() / results[1].as_secs_f64()
    );
    Ok(())
}
