//! fanotify drain and set-up benchmark.
//!
//! 1. Drain: a backlog of 100,000 `close_write` events (distinct files in one directory) is
//!    queued at once into two groups marking the same directory the same way: triggerd's
//!    `Watcher` and a raw C read loop (benches/c/fanotify_drain.c, compiled now with `cc`).
//!    Each drains its copy; records/s of both and their ratio are printed (median of rounds).
//! 2. Set-up: `Watcher::set_marks` of one Filesystem mark on a tree of 100,000 directories,
//!    vs `inotifywait -r` on the same tree (time until it prints "Watches established").
//!
//! Needs root, `cc` and `inotifywait` (inotify-tools). Raises fs.fanotify.max_queued_events
//! while the groups are created and restores it.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use triggerd_benches::QueueLimit;
use triggerd_watch::{EventMask, MarkScope, MarkSpec, Watcher, READ_BUFFER_LEN};

const EVENTS: usize = 100_000;
const DRAIN_ROUNDS: usize = 5;
const TREE_DIRS: usize = 100_000;
const SETUP_ROUNDS: usize = 3;

/// The C baseline process, driven line by line.
struct CLoop {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl CLoop {
    fn start(binary: &Path, dir: &Path) -> Result<CLoop> {
        let mut child = Command::new(binary)
            .arg(dir)
            .arg(READ_BUFFER_LEN.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("C loop said {line:?}");
        }
        Ok(CLoop {
            child,
            stdin,
            stdout,
        })
    }

    /// Drains its queue; returns (records, elapsed).
    fn drain(&mut self) -> Result<(usize, Duration)> {
        writeln!(self.stdin, "go")?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let mut words = line.split_whitespace();
        let records: usize = words.next().context("records")?.parse()?;
        let nanos: u64 = words.next().context("nanoseconds")?.parse()?;
        Ok((records, Duration::from_nanos(nanos)))
    }
}

impl Drop for CLoop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn compile_baseline(out_dir: &Path) -> Result<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("c/fanotify_drain.c");
    let binary = out_dir.join("fanotify_drain_c");
    let status = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()?;
    if !status.success() {
        bail!("cc failed on {source:?}");
    }
    Ok(binary)
}

fn drain_watcher(watcher: &mut Watcher) -> Result<(usize, Duration)> {
    let mut events = Vec::with_capacity(64 * 1024);
    let mut total = 0;
    let start = Instant::now();
    loop {
        let n = watcher.read_events(&mut events)?;
        if n == 0 {
            break;
        }
        total += n;
        events.clear();
    }
    Ok((total, start.elapsed()))
}

/// Queues one close_write per file (open for writing, close; no data written).
fn touch_all(files: &[PathBuf]) -> Result<()> {
    for file in files {
        drop(File::options().write(true).open(file)?);
    }
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn drain_benchmark(scratch: &Path) -> Result<()> {
    let dir = scratch.join("drain");
    std::fs::create_dir(&dir)?;
    let files: Vec<PathBuf> = (0..EVENTS).map(|i| dir.join(format!("f{i:06}"))).collect();
    for file in &files {
        File::create(file)?;
    }
    let binary = compile_baseline(scratch)?;
    let (mut watcher, mut c_loop) = {
        let _limit = QueueLimit::raise(EVENTS * 3)?;
        let watcher = Watcher::new()?;
        let c_loop = CLoop::start(&binary, &dir)?;
        (watcher, c_loop)
    };
    let spec = MarkSpec::new(
        0,
        dir.clone(),
        MarkScope::Inode,
        EventMask::CLOSE_WRITE | EventMask::EVENT_ON_CHILD,
    );
    let errors = watcher.set_marks(&[spec])?;
    if !errors.is_empty() {
        bail!("marking failed: {errors:?}");
    }
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..DRAIN_ROUNDS {
        touch_all(&files)?;
        // alternate who drains first, so neither always meets a warmer cache
        let (rust, c) = if round % 2 == 0 {
            let rust = drain_watcher(&mut watcher)?;
            (rust, c_loop.drain()?)
        } else {
            let c = c_loop.drain()?;
            (drain_watcher(&mut watcher)?, c)
        };
        if rust.0 != EVENTS || c.0 != EVENTS || watcher.overflows() != 0 {
            bail!(
                "round {round}: triggerd {} events, C {} records (want {EVENTS})",
                rust.0,
                c.0
            );
        }
        let rate = |(n, t): (usize, Duration)| n as f64 / t.as_secs_f64();
        println!(
            "  round {round}: triggerd {:>9.0} events/s ({:?}), C {:>9.0} records/s ({:?})",
            rate(rust),
            rust.1,
            rate(c),
            c.1
        );
        ours.push(rate(rust));
        theirs.push(rate(c));
    }
    let (ours, theirs) = (median(ours), median(theirs));
    println!("drain {EVENTS} close_write events, median of {DRAIN_ROUNDS} rounds:");
    println!("  triggerd Watcher::read_events  {ours:>10.0} events/s (paths resolved)");
    println!("  raw C fanotify read loop       {theirs:>10.0} records/s");
    println!(
        "  RATIO triggerd / C = {:.2} (target >= 0.50)",
        ours / theirs
    );
    Ok(())
}

fn make_tree(root: &Path) -> Result<()> {
    let per_level = (TREE_DIRS as f64).sqrt().ceil() as usize;
    let mut made = 0;
    'outer: for i in 0..per_level {
        let top = root.join(format!("d{i:04}"));
        std::fs::create_dir(&top)?;
        made += 1;
        for j in 0..per_level {
            if made >= TREE_DIRS {
                break 'outer;
            }
            std::fs::create_dir(top.join(format!("e{j:04}")))?;
            made += 1;
        }
    }
    Ok(())
}

fn inotifywait_setup(tree: &Path) -> Result<Duration> {
    let start = Instant::now();
    let mut child = Command::new("inotifywait")
        .args(["-r", "-m", "-e", "close_write"])
        .arg(tree)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("inotifywait (Debian package inotify-tools)")?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut established = None;
    for line in BufReader::new(stderr).lines() {
        if line?.contains("Watches established") {
            established = Some(start.elapsed());
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    established.context("inotifywait never established its watches")
}

fn setup_benchmark(scratch: &Path) -> Result<()> {
    let tree = scratch.join("tree");
    std::fs::create_dir(&tree)?;
    let made = Instant::now();
    make_tree(&tree)?;
    println!(
        "set-up on a tree of {TREE_DIRS} directories (made in {:?}):",
        made.elapsed()
    );
    let spec = MarkSpec::new(
        0,
        tree.clone(),
        MarkScope::Filesystem,
        EventMask::CLOSE_WRITE | EventMask::CREATE,
    );
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..SETUP_ROUNDS {
        let mut watcher = Watcher::new()?;
        let start = Instant::now();
        let errors = watcher.set_marks(std::slice::from_ref(&spec))?;
        ours.push(start.elapsed().as_secs_f64());
        if !errors.is_empty() {
            bail!("marking failed: {errors:?}");
        }
        theirs.push(inotifywait_setup(&tree)?.as_secs_f64());
    }
    let (ours, theirs) = (median(ours), median(theirs));
    println!(
        "  triggerd set_marks (one filesystem mark) {:>10.3} ms",
        ours * 1e3
    );
    println!(
        "  inotifywait -r (Watches established)     {:>10.3} ms",
        theirs * 1e3
    );
    println!(
        "  RATIO inotifywait / triggerd = {:.0}x faster (target > 100x, < 10 ms)",
        theirs / ours
    );
    Ok(())
}

/// Scratch space: tmpfs when /dev/shm is one (creating and removing 200,000 entries there
/// takes seconds, not minutes, on a loaded disk), else the default temp dir.
fn scratch_dir() -> Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("triggerd-bench-fanotify");
    let shm = Path::new("/dev/shm");
    let on_tmpfs = nix::sys::statfs::statfs(shm)
        .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        .unwrap_or(false);
    let dir = if on_tmpfs {
        builder.tempdir_in(shm)?
    } else {
        builder.tempdir()?
    };
    println!("scratch directory {:?}", dir.path());
    Ok(dir)
}

fn main() -> Result<()> {
    let scratch = scratch_dir()?;
    let started = Instant::now();
    drain_benchmark(scratch.path())?;
    setup_benchmark(scratch.path())?;
    let cleanup = Instant::now();
    drop(scratch);
    println!(
        "total {:?} (clean-up {:?})",
        started.elapsed(),
        cleanup.elapsed()
    );
    Ok(())
}
