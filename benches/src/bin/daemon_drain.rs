//! The whole daemon drains a fanotify backlog: 100,000 `close_write` events queued while
//! triggerd is stopped (SIGSTOP), then timed from SIGCONT until its status has counted them
//! all — read, parse, resolve, match and admit (the rule is busy and drops, so no process is
//! spawned per event). Baseline in the same run, on the same backlog: a raw C fanotify read
//! loop (`benches/c/fanotify_drain.c`). Target: triggerd ≥ 50 % of the C loop.
//!
//! Then the same drain with `triggerctl events` readers attached (every event is offered to
//! the live feed): one that never reads (its buffer fills, records are dropped and counted)
//! and one that reads every line, each as a ratio against the drain without readers in this
//! run. Target: the stuck reader costs nothing measurable (≥ 0.90).
//!
//! Run as root: `cargo build --release -p triggerd -p triggerd-benches &&
//! target/release/daemon_drain` (TRIGGERD_BIN overrides the daemon's path).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use triggerd_benches::{compile_c, triggerd_bin, wait_until, QueueLimit, StopOnDrop};

const EVENTS: usize = 100_000;
const ROUNDS: usize = 3;

fn main() -> Result<()> {
    let triggerd = triggerd_bin()?;
    let scratch = tempfile::tempdir_in(if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    })?;
    let dir = scratch.path().join("in");
    std::fs::create_dir(&dir)?;
    let c_loop = scratch.path().join("fanotify_drain");
    compile_c("fanotify_drain", &c_loop)?;
    let socket = scratch.path().join("control.sock");
    let config = scratch.path().join("triggerd.conf");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ncontrol = \"{}\"\nstate_dir = \"{}\"\n\n[[watch]]\nname = \"drain\"\npath = \"{}\"\nevents = \"close_write\"\nmax_running = 1\non_busy = \"drop\"\nexec = [\"/bin/sleep\", \"3600\"]\n",
            socket.display(),
            scratch.path().join("state").display(),
            dir.display()
        ),
    )?;

    let limit = QueueLimit::raise(EVENTS * 2 + 1024)?;
    let mut c = StopOnDrop(
        Command::new(&c_loop)
            .arg(&dir)
            .arg(triggerd_watch::READ_BUFFER_LEN.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let mut c_in = c.0.stdin.take().context("stdin")?;
    let mut c_out = BufReader::new(c.0.stdout.take().context("stdout")?);
    let mut line = String::new();
    c_out.read_line(&mut line)?;
    let daemon = StopOnDrop(
        Command::new(&triggerd)
            .arg("--config")
            .arg(&config)
            .env("TRIGGERD_LOG", "error")
            .stderr(Stdio::null())
            .spawn()?,
    );
    let pid = daemon.0.id() as i32;
    wait_until("the daemon", Duration::from_secs(20), || {
        status(&socket).is_some()
    })?;
    drop(limit);

    let mut rates = Vec::new();
    let mut alone = Vec::new();
    for round in 0..ROUNDS {
        let daemon_rate = drain(&socket, pid, &dir, &format!("r{round}"))?;
        alone.push(daemon_rate);
        let (records, ns) = c_drain(&mut c_in, &mut c_out)?;
        let c_rate = records as f64 / (ns as f64 / 1e9);
        println!(
            "round {round}: triggerd {daemon_rate:>10.0} events/s   C read loop {c_rate:>10.0} records/s ({records})   ratio {:.2}",
            daemon_rate / c_rate
        );
        rates.push(daemon_rate / c_rate);
        c_drain(&mut c_in, &mut c_out)?;
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "median ratio triggerd / C loop = {:.2} (target ≥ 0.50)",
        rates[rates.len() / 2]
    );
    alone.sort_by(f64::total_cmp);
    let alone = alone[alone.len() / 2];
    for reading in [false, true] {
        let reader = events_reader(&socket, reading)?;
        let mut with = Vec::new();
        for round in 0..ROUNDS {
            with.push(drain(&socket, pid, &dir, &format!("e{reading}{round}"))?);
        }
        // Ends the reading thread's clone too.
        let _ = reader.shutdown(std::net::Shutdown::Both);
        with.sort_by(f64::total_cmp);
        let median = with[with.len() / 2];
        let who = if reading { "a reading" } else { "a stuck" };
        println!(
            "with {who} events reader: {median:>10.0} events/s, ratio to no reader {:.2}{}",
            median / alone,
            if reading { "" } else { " (target ≥ 0.90)" }
        );
    }
    Ok(())
}

/// Queues `EVENTS` events while the daemon is stopped, then times how fast it counts them
/// all; leaves the directory empty.
fn drain(socket: &Path, pid: i32, dir: &Path, tag: &str) -> Result<f64> {
    // Asked before stopping it: a stopped daemon does not answer.
    let before = status(socket).unwrap_or(0);
    signal(pid, libc::SIGSTOP);
    for i in 0..EVENTS {
        std::fs::write(dir.join(format!("{tag}-{i}")), b"")?;
    }
    let start = Instant::now();
    signal(pid, libc::SIGCONT);
    wait_until("the daemon", Duration::from_secs(120), || {
        status(socket).is_some_and(|n| n >= before + EVENTS as u64)
    })?;
    let rate = EVENTS as f64 / start.elapsed().as_secs_f64();
    for entry in std::fs::read_dir(dir)? {
        std::fs::remove_file(entry?.path())?;
    }
    Ok(rate)
}

/// A `triggerctl events` reader on the control socket: one that never reads, or a thread
/// that reads and discards every line. Shutting the socket down ends both.
fn events_reader(socket: &Path, reading: bool) -> Result<std::os::unix::net::UnixStream> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.write_all(b"{\"verb\":\"events\"}\n")?;
    if reading {
        let mut lines = BufReader::new(stream.try_clone()?);
        std::thread::spawn(move || {
            let mut line = String::new();
            while matches!(lines.read_line(&mut line), Ok(n) if n > 0) {
                line.clear();
            }
        });
    }
    Ok(stream)
}

fn c_drain(input: &mut ChildStdin, output: &mut BufReader<ChildStdout>) -> Result<(u64, u64)> {
    writeln!(input, "go")?;
    let mut line = String::new();
    output.read_line(&mut line)?;
    let mut fields = line.split_whitespace().map(str::parse::<u64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(records)), Some(Ok(ns))) => Ok((records, ns.max(1))),
        _ => bail!("C loop said {line:?}"),
    }
}

/// Events the daemon has read so far, from its control socket.
fn status(socket: &Path) -> Option<u64> {
    use std::os::unix::net::UnixStream;
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.write_all(b"{\"verb\":\"status\"}\n").ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    let value: serde_json::Value = serde_json::from_str(&line).ok()?;
    value["status"]["watch"]["events"].as_u64()
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) on a child we spawned and still own.
    unsafe { libc::kill(pid, signal) };
}
