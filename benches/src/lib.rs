//! Shared helpers for the benchmark programs: guards that put the machine back as it was
//! (children killed, the fanotify queue sysctl restored, files removed) even when a benchmark
//! fails half-way, polling with a deadline, and the small statistics every program prints.

pub mod send_daemon;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

pub mod mdp;

const MAX_QUEUED: &str = "/proc/sys/fs/fanotify/max_queued_events";
/// Shared with the test suites, which change the same global sysctl.
const SYSCTL_LOCK: &str = "/tmp/triggerd-fanotify-sysctl.lock";

pub use triggerd_testkit::{KillOnDrop, StopOnDrop};

/// A file removed on drop.
pub struct Removed(pub PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Raises `max_queued_events` (for fanotify groups created while it lives, under the tests'
/// exclusive lock) and restores it on drop.
pub struct QueueLimit {
    old: String,
    _lock: Flock<File>,
}

impl QueueLimit {
    pub fn raise(value: usize) -> std::io::Result<QueueLimit> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(SYSCTL_LOCK)?;
        let lock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| std::io::Error::from(e))?;
        let old = std::fs::read_to_string(MAX_QUEUED)?;
        std::fs::write(MAX_QUEUED, value.to_string())?;
        Ok(QueueLimit { old, _lock: lock })
    }
}

impl Drop for QueueLimit {
    fn drop(&mut self) {
        let _ = std::fs::write(MAX_QUEUED, self.old.trim());
    }
}

/// Polls `done` every 2 ms until it holds, or fails naming `what` after `limit`. Finer than
/// the tests' polling on purpose: benchmarks time what they wait for.
pub fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> std::io::Result<()> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("timed out waiting for {what}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Lines in a log file (0 when it does not exist yet).
pub fn count_lines(log: &Path) -> usize {
    std::fs::read(log).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

/// The `p`th percentile of sorted samples (nearest rank), `None` when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted.get(i).copied()
}

/// The workspace root (benchmarks find `benches/c/` and `target/release/` from it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The daemon under test: `TRIGGERD_BIN`, or `target/release/triggerd`, which must exist.
pub fn triggerd_bin() -> std::io::Result<PathBuf> {
    let path = std::env::var_os("TRIGGERD_BIN").map_or_else(
        || workspace_root().join("target/release/triggerd"),
        PathBuf::from,
    );
    if path.exists() {
        Ok(path)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{} missing: cargo build --release -p triggerd",
                path.display()
            ),
        ))
    }
}

/// Compiles `benches/c/NAME.c` with `cc -O2` into `out`.
pub fn compile_c(name: &str, out: &Path) -> std::io::Result<()> {
    let status = std::process::Command::new("cc")
        .args(["-O2", "-o"])
        .arg(out)
        .arg(workspace_root().join(format!("benches/c/{name}.c")))
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "cc failed on benches/c/{name}.c"
        )))
    }
}

/// Threads that run until a shared flag is set; setting it and joining them happens on drop.
pub struct JoinOnDrop(
    pub std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub Vec<std::thread::JoinHandle<()>>,
);

impl Drop for JoinOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.1.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A `triggerd-broker` without authentication, in this process, on a loopback port chosen by
/// the kernel; returns its endpoint and the guard that stops it. Its store lives in `dir`.
pub fn start_broker(dir: &Path) -> std::io::Result<(String, JoinOnDrop)> {
    start_broker_with(dir, triggerd_remote::Mechanism::None)
}

/// [`start_broker`] with `security` (for CURVE, its key pair must be in `dir/secret.key`).
pub fn start_broker_with(
    dir: &Path,
    security: triggerd_remote::Mechanism,
) -> std::io::Result<(String, JoinOnDrop)> {
    use triggerd_remote::broker::{self, BrokerConfig};
    let endpoint_file = dir.join("endpoint");
    let config = BrokerConfig {
        bind: vec!["tcp://127.0.0.1:*".into()],
        store: dir.join("store.db"),
        security: Some(security),
        secret_key: dir.join("secret.key"),
        auth: security != triggerd_remote::Mechanism::None,
        endpoint_file: Some(endpoint_file.clone()),
        ..BrokerConfig::default()
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || broker::run(&config, &flag).expect("broker"));
    let guard = JoinOnDrop(stop, vec![thread]);
    let mut endpoint = None;
    wait_until("the broker's endpoint", Duration::from_secs(60), || {
        endpoint = std::fs::read_to_string(&endpoint_file)
            .ok()
            .and_then(|t| t.lines().next().map(String::from));
        endpoint.is_some()
    })?;
    Ok((endpoint.unwrap_or_default(), guard))
}

/// Nanoseconds since the Unix epoch (what `stamp` logs).
pub fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Writes `files` files named `fNNNNNN` at `rate` per second; returns when each close()
/// returned, by name.
pub fn paced_stream(
    dir: &Path,
    files: usize,
    rate: u64,
) -> std::io::Result<std::collections::HashMap<String, i128>> {
    let mut closed = std::collections::HashMap::new();
    let start = Instant::now();
    for i in 0..files {
        let due = start + Duration::from_nanos(i as u64 * 1_000_000_000 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let name = format!("f{i:06}");
        fs::write(dir.join(&name), b"x")?;
        closed.insert(name, now_ns());
    }
    Ok(closed)
}

/// Waits until no log grows for 3 s (or `limit`).
pub fn settle(logs: &[PathBuf], limit: Duration) {
    let start = Instant::now();
    let mut last = Vec::new();
    let mut still = Instant::now();
    while start.elapsed() < limit {
        let now: Vec<usize> = logs.iter().map(|l| count_lines(l)).collect();
        if now != last {
            last = now;
            still = Instant::now();
        } else if still.elapsed() > Duration::from_secs(3) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Milliseconds from close() to the command's start, per file logged.
pub fn latencies(log: &Path, closed: &std::collections::HashMap<String, i128>) -> Vec<f64> {
    let text = fs::read_to_string(log).unwrap_or_default();
    let mut out: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            let (name, ns) = l.split_once(' ')?;
            let started: i128 = ns.parse().ok()?;
            Some((started - closed.get(name)?) as f64 / 1e6)
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

/// Resident set size of process `pid` in KiB (0 when unknown).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Starts `triggerd --config CONFIG` quietly (warnings only, stderr dropped); killed on drop.
pub fn spawn_daemon(triggerd: &Path, config: &Path) -> std::io::Result<StopOnDrop> {
    std::process::Command::new(triggerd)
        .arg("--config")
        .arg(config)
        .env("TRIGGERD_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(StopOnDrop)
}
