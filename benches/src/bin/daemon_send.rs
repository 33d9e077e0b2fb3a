//! Events/s forwarded by the whole daemon through its spool with the broker up: a local
//! program publishes 100,000 messages into a `[[channel]]` whose rule says `send = "sink"`;
//! timed from the first publish until `status` counts them all delivered (answered by an echo
//! worker through the broker). Baseline in the same run, against the same broker and worker:
//! the forwarder library alone (`Forwarder::submit` in a loop, no daemon). Target (issue 4):
//! ≥ 100,000 events/s; the RATIO says what the daemon's path (ring, dispatcher, rule, outbox)
//! costs on top of the spool.
//!
//! Run as root: `cargo build --release -p triggerd -p triggerd-benches &&
//! target/release/daemon_send [--quick]` (TRIGGERD_BIN overrides the daemon's path).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use triggerd_benches::send_daemon::SendDaemon;
use triggerd_benches::{start_broker, JoinOnDrop};
use triggerd_remote::{Forwarder, ForwarderOptions, Spool, SpoolOptions, Worker, WorkerOptions};

const PAYLOAD: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const LIMIT: Duration = Duration::from_secs(120);

/// A broker and one echo worker serving `sink`, in this process.
struct Rig {
    endpoint: String,
    _workers: JoinOnDrop,
    _broker: JoinOnDrop,
    _dir: tempfile::TempDir,
}

fn rig() -> Result<Rig> {
    let dir = tempfile::tempdir()?;
    let (endpoint, broker) = start_broker(dir.path())?;
    let mut options = WorkerOptions::new(&endpoint, "sink");
    options.capacity = 1024;
    let worker = Worker::new(options);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let workers = JoinOnDrop(
        stop,
        vec![std::thread::spawn(move || {
            worker.run(&flag).expect("worker")
        })],
    );
    Ok(Rig {
        endpoint,
        _workers: workers,
        _broker: broker,
        _dir: dir,
    })
}

fn wait<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The forwarder library alone: events/s from the first submit to the last answer.
fn library_rate(rig: &Rig, events: u64) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let spool = Spool::open(SpoolOptions::new(dir.path()))?;
    let forwarder = Forwarder::start(spool, ForwarderOptions::new(&rig.endpoint))?;
    let start = Instant::now();
    for _ in 0..events {
        forwarder.submit("sink", "", PAYLOAD)?;
    }
    wait("the library's deliveries", || {
        (forwarder.stats().delivered >= events).then_some(())
    })?;
    Ok(events as f64 / start.elapsed().as_secs_f64())
}

/// The daemon: events/s from the first publish until status counts them all delivered.
fn daemon_rate(rig: &Rig, events: u64, round: usize) -> Result<f64> {
    let channel = format!("bench-send-{}-{round}", std::process::id());
    let daemon = SendDaemon::start(&rig.endpoint, &channel, "sink")?;
    let publisher = wait("the channel", || {
        triggerd_ipc::Publisher::connect(&channel).ok()
    })?;
    let start = Instant::now();
    for _ in 0..events {
        publisher.publish_timeout(PAYLOAD, LIMIT)?;
    }
    let mut last_poll = Instant::now();
    wait("the daemon's deliveries", || {
        // Status requests cost the daemon too: ask at most every 2 ms.
        if last_poll.elapsed() < Duration::from_millis(2) {
            return None;
        }
        last_poll = Instant::now();
        (daemon.delivered().ok()? >= events).then_some(())
    })?;
    Ok(events as f64 / start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (events, rounds) = if quick { (10_000, 1) } else { (100_000, 3) };
    let rig = rig()?;
    let mut library = Vec::new();
    let mut daemon = Vec::new();
    for round in 0..rounds {
        library.push(library_rate(&rig, events)?);
        daemon.push(daemon_rate(&rig, events, round)?);
    }
    let (library, daemon) = (median(library), median(daemon));
    println!(
        "send through the spool, {events} events x {rounds} rounds (medians): \
         daemon {daemon:.0} events/s | forwarder library {library:.0} events/s | RATIO {:.2}",
        daemon / library
    );
    Ok(())
}
