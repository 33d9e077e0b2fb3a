//! 10,000 timers due in the same second: how late each action starts after its scheduled
//! instant, against a baseline measured in the same run — the same 10,000 processes started
//! by a plain loop at one instant, i.e. how late this machine is at spawning them at all.
//! Every process is the tiny C `stamp`, which logs the time it started. The daemon's own
//! share (timer wake-up to hand-over of the last fire) is read from its `timer pass` line.
//!
//! Run: `cargo build --release -p triggerd && cargo run --release -p triggerd-benches --bin
//! timer_burst` (TRIGGERD_BIN overrides target/release/triggerd; TIMERS the count).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use triggerd_benches::{compile_c, count_lines, percentile, triggerd_bin, wait_until, StopOnDrop};

/// Seconds between the daemon being up and the instant its timers are due.
const LEAD: u64 = 3;

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Sleeps until the wall clock reads `at_ns`.
fn sleep_until(at_ns: i128) {
    let left = at_ns - now_ns();
    if left > 0 {
        std::thread::sleep(Duration::from_nanos(left as u64));
    }
}

fn main() -> Result<()> {
    let timers: usize = std::env::var("TIMERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let triggerd = triggerd_bin()?;
    fs::create_dir_all("/var/tmp/triggerd-bench")?;
    let work = tempfile::tempdir_in("/var/tmp/triggerd-bench")?;
    let dir = work.path().to_path_buf();
    let stamp = dir.join("stamp");
    compile_c("stamp", &stamp)?;

    // Baseline: the same processes, started by a plain loop at one instant.
    let baseline_log = dir.join("baseline.log");
    let due = (now_ns() / 1_000_000_000 + 2) * 1_000_000_000;
    sleep_until(due);
    let mut children = Vec::with_capacity(timers);
    for i in 0..timers {
        let child = Command::new(&stamp)
            .arg(&baseline_log)
            .arg(format!("t{i:05}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        children.push(child);
    }
    for mut child in children {
        child.wait()?;
    }
    let baseline = lateness_ms(&baseline_log, due);

    // The same timers with every rule paused: each fire is dispatched (and skipped) but no
    // process starts, so this is the daemon's own share.
    let dispatch_only = run_daemon(&triggerd, &dir.join("paused"), &stamp, timers, true)?;
    let with_actions = run_daemon(&triggerd, &dir.join("actions"), &stamp, timers, false)?;
    let fired = &with_actions.lateness;

    println!(
        "{timers} timers due at the same second (triggerd check: {:.2?}, start-up: {:.2?})",
        with_actions.check, with_actions.startup
    );
    print_row("triggerd action start", fired, timers);
    print_row("baseline plain spawn ", &baseline, timers);
    for (p, name) in [(50.0, "p50"), (99.0, "p99")] {
        if let (Some(t), Some(b)) = (percentile(fired, p), percentile(&baseline, p)) {
            println!("  {name} ratio triggerd/baseline = {:.2}", t / b);
        }
    }
    if let Some(p99) = percentile(fired, 99.0) {
        let verdict = if p99 <= 100.0 { "met" } else { "missed" };
        println!("  target p99 ≤ 100 ms after the scheduled time: {verdict} ({p99:.1} ms)");
    }
    if let Some(first) = with_actions.refused.first() {
        println!(
            "  {} actions could not start, e.g.: {first}",
            with_actions.refused.len()
        );
    }
    for (what, run) in [
        ("rules paused, no process started", &dispatch_only),
        ("with the actions above", &with_actions),
    ] {
        println!("daemon hand-over, {what} (timer wake-up → each fire handed to its rule):");
        for (fires, first, last) in &run.passes {
            println!(
                "  {fires} fires: first {:.3} ms late, last {:.3} ms late",
                *first as f64 / 1e3,
                *last as f64 / 1e3
            );
        }
    }
    Ok(())
}

struct DaemonRun {
    check: Duration,
    startup: Duration,
    /// Action start − scheduled time, ms, sorted.
    lateness: Vec<f64>,
    /// Log lines of actions that could not start.
    refused: Vec<String>,
    /// (fires, first µs late, last µs late) of each timer pass.
    passes: Vec<(u64, u64, u64)>,
}

/// Runs a daemon in `dir` with `timers` one-shot timers anchored at the same whole second
/// (paused through its state dir when `paused`), until every action ran or 120 s passed.
fn run_daemon(
    triggerd: &Path,
    dir: &Path,
    stamp: &Path,
    timers: usize,
    paused: bool,
) -> Result<DaemonRun> {
    fs::create_dir_all(dir.join("state"))?;
    if paused {
        let states: Vec<String> = (0..timers)
            .map(|i| format!("\"t{i:05}\": {{\"paused\": true}}"))
            .collect();
        fs::write(
            dir.join("state/rules.json"),
            format!("{{{}}}", states.join(",")),
        )?;
    }
    let config = dir.join("triggerd.conf");
    let log = dir.join("triggerd.log");
    let actions = dir.join("actions.log");
    // Reading the config dominates start-up: time `triggerd check` on the same text first and
    // leave the daemon twice that, plus LEAD, before the timers are due.
    write_config(
        &config,
        dir,
        stamp,
        &actions,
        timers,
        now_ns() / 1_000_000_000,
    )?;
    let checking = Instant::now();
    let checked = Command::new(triggerd).arg("check").arg(&config).output()?;
    if !checked.status.success() {
        bail!(
            "config refused: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
    }
    let check = checking.elapsed();
    let due_secs = now_ns() / 1_000_000_000 + 2 * check.as_secs() as i128 + LEAD as i128 + 1;
    write_config(&config, dir, stamp, &actions, timers, due_secs)?;
    let started = Instant::now();
    let daemon = StopOnDrop(
        Command::new(triggerd)
            .arg("--config")
            .arg(&config)
            .env("TRIGGERD_LOG", "warn,triggerd::sources::timer=debug")
            .env("NO_COLOR", "1")
            .stderr(fs::File::create(&log)?)
            .spawn()?,
    );
    let socket = dir.join("control.sock");
    wait_until("the control socket", Duration::from_secs(120), || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    })?;
    let startup = started.elapsed();
    let due = due_secs * 1_000_000_000;
    if now_ns() > due - 1_000_000_000 {
        bail!("triggerd took {startup:?} to start with {timers} timers: raise LEAD");
    }
    let limit = Duration::from_secs(120) + Duration::from_nanos((due - now_ns()).max(0) as u64);
    if paused {
        sleep_until(due);
        wait_until("the timer pass", limit, || {
            fs::read_to_string(&log).is_ok_and(|t| t.contains("timer pass"))
        })?;
    } else {
        // On timeout, what did start is still reported.
        let _ = wait_until("every timer's action", limit, || {
            count_lines(&actions) >= timers
        });
    }
    drop(daemon);
    let log_text = fs::read_to_string(&log).unwrap_or_default();
    let lines: Vec<String> = log_text.lines().map(strip_ansi).collect();
    Ok(DaemonRun {
        check,
        startup,
        lateness: lateness_ms(&actions, due),
        refused: lines
            .iter()
            .filter(|l| l.contains("cannot start"))
            .cloned()
            .collect(),
        passes: lines
            .iter()
            .filter(|l| l.contains("timer pass"))
            .filter_map(|l| {
                let field = |key: &str| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix(&format!("{key}=")))
                        .and_then(|v| v.parse::<u64>().ok())
                };
                Some((
                    field("fires")?,
                    field("first_late_us")?,
                    field("last_late_us")?,
                ))
            })
            .collect(),
    })
}

fn write_config(
    config: &Path,
    dir: &Path,
    stamp: &Path,
    actions: &Path,
    timers: usize,
    due_secs: i128,
) -> Result<()> {
    let start = chrono_free_rfc3339(due_secs)?;
    let mut text = format!(
        "[daemon]\ncontrol = \"{0}/control.sock\"\nstate_dir = \"{0}/state\"\n\n",
        dir.display()
    );
    for i in 0..timers {
        text += &format!(
            "[[timer]]\nname = \"t{i:05}\"\nevery = \"1h\"\nstart = \"{start}\"\nonce = true\nexec = [\"{}\", \"{}\", \"$#\"]\n\n",
            stamp.display(),
            actions.display()
        );
    }
    fs::write(config, text).context("write config")
}

/// `due_secs` (Unix seconds) as RFC 3339 UTC, via date(1) to keep the benches' dependencies
/// as they are.
fn chrono_free_rfc3339(due_secs: i128) -> Result<String> {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{due_secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()?;
    if !out.status.success() {
        bail!("date failed");
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// The text of a log line without terminal colour sequences (ESC [ ... m).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Milliseconds from `due_ns` to each logged start, sorted.
fn lateness_ms(log: &Path, due_ns: i128) -> Vec<f64> {
    let text = fs::read_to_string(log).unwrap_or_default();
    let mut out: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            let started: i128 = l.split_once(' ')?.1.parse().ok()?;
            Some((started - due_ns) as f64 / 1e6)
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

fn print_row(who: &str, sorted: &[f64], expected: usize) {
    match (
        percentile(sorted, 50.0),
        percentile(sorted, 99.0),
        sorted.last(),
    ) {
        (Some(p50), Some(p99), Some(max)) => println!(
            "  {who}: p50 {p50:.1} ms  p99 {p99:.1} ms  max {max:.1} ms  ({} of {expected} started)",
            sorted.len()
        ),
        _ => println!("  {who}: nothing started"),
    }
}
