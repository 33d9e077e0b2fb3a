//! JetStream against its own client and against the ZeroMQ broker, in one run.
//!
//! 1. Events/s forwarded by the whole daemon into a one-node and a three-node JetStream
//!    (R3 stream): a local program publishes into a `[[channel]]` whose rule says
//!    `send = "sink"`, timed until `status` counts every event acknowledged by JetStream.
//!    Baseline against the same servers: a raw `async-nats` JetStream publish loop with the
//!    same payloads, the same window of 1024 unacknowledged publishes and the same acks.
//!    Target (issue 13): daemon ≥ 50 % of the raw loop.
//! 2. Round trips (request → echo worker → final reply), one at a time: through JetStream
//!    (`triggerd_nats::request`, as `triggerctl send` makes them, to a `NatsWorker`) and through
//!    `triggerd-broker` (MDP client to an MDP echo worker), req/s and p50/p99.
//!
//! Run as root: `cargo build --release -p triggerd -p triggerd-benches &&
//! target/release/nats_forward [--quick]` (needs `nats-server`; TRIGGERD_BIN overrides the
//! daemon's path).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use async_nats::jetstream::{self, context::Publish};
use bytes::Bytes;
use triggerd_benches::send_daemon::SendDaemon;
use triggerd_benches::{percentile, start_broker, wait_until, JoinOnDrop};
use triggerd_nats::testing::Nats;
use triggerd_nats::{wire, NatsOptions, NatsWorker, ServiceConfig};
use triggerd_remote::{Client, ClientOptions, Worker, WorkerOptions};

const PAYLOAD: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const WINDOW: usize = 1024;
const LIMIT: Duration = Duration::from_secs(300);

fn options(nats: &Nats) -> NatsOptions {
    NatsOptions {
        servers: triggerd_nats::servers(&nats.endpoint()).unwrap_or_default(),
        name: "bench".into(),
        ..NatsOptions::default()
    }
}

/// Creates `service`'s stream with `replicas` copies.
fn prepare(nats: &Nats, service: &str, replicas: usize) -> Result<()> {
    let rt = triggerd_nats::runtime()?;
    let set = |c: &mut ServiceConfig| c.replicas = replicas;
    rt.block_on(triggerd_nats::service::configure(
        &options(nats),
        service,
        set,
        Duration::from_secs(30),
    ))?;
    Ok(())
}

/// The raw loop: `events` publishes, `WINDOW` at a time, each batch's acks awaited in order.
fn raw_rate(nats: &Nats, service: &str, events: usize, round: usize) -> Result<f64> {
    let rt = triggerd_nats::runtime()?;
    rt.block_on(async {
        let client = triggerd_nats::connect(&options(nats)).await?;
        let js = jetstream::new(client);
        let subject = wire::request_subject(service)?;
        let start = Instant::now();
        let mut sent = 0;
        while sent < events {
            let mut acks = Vec::with_capacity(WINDOW);
            for _ in 0..WINDOW.min(events - sent) {
                let id = wire::format_id(((round as u128) << 64) | sent as u128);
                let message = Publish::build()
                    .payload(Bytes::from_static(PAYLOAD))
                    .message_id(id);
                acks.push(js.send_publish(subject.clone(), message).await?);
                sent += 1;
            }
            for ack in acks {
                ack.await?;
            }
        }
        Ok(events as f64 / start.elapsed().as_secs_f64())
    })
}

/// The daemon: events/s from the first publish until status counts them all delivered.
fn daemon_rate(nats: &Nats, events: usize, round: usize) -> Result<f64> {
    let channel = format!("bench-nats-{}-{round}", std::process::id());
    let daemon = SendDaemon::start(&nats.endpoint(), &channel, "sink")?;
    let publisher = {
        let mut p = None;
        wait_until("the channel", LIMIT, || {
            p = triggerd_ipc::Publisher::connect(&channel).ok();
            p.is_some()
        })?;
        p.expect("publisher")
    };
    let start = Instant::now();
    for _ in 0..events {
        publisher.publish_timeout(PAYLOAD, LIMIT)?;
    }
    let mut last_poll = Instant::now();
    wait_until("the daemon's deliveries", LIMIT, || {
        // Status requests cost the daemon too: ask at most every 2 ms.
        if last_poll.elapsed() < Duration::from_millis(2) {
            return false;
        }
        last_poll = Instant::now();
        daemon.delivered().is_ok_and(|d| d >= events as u64)
    })?;
    Ok(events as f64 / start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn forward(label: &str, nats: &Nats, replicas: usize, events: usize, rounds: usize) -> Result<()> {
    prepare(nats, "sink", replicas)?;
    prepare(nats, "raw", replicas)?;
    let (mut raw, mut daemon) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        raw.push(raw_rate(nats, "raw", events, round)?);
        daemon.push(daemon_rate(nats, events, round)?);
    }
    let (raw, daemon) = (median(raw), median(daemon));
    println!(
        "forward into {label}, {events} events x {rounds} rounds (medians): daemon {daemon:.0} \
         events/s | raw async-nats publish loop {raw:.0} events/s | RATIO {:.2}",
        daemon / raw
    );
    Ok(())
}

/// req/s, p50 and p99 in µs of `n` sequential calls of `call`.
fn round_trips(n: usize, mut call: impl FnMut() -> Result<()>) -> Result<(f64, f64, f64)> {
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        call()?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    samples.sort_by(|a, b| a.total_cmp(b));
    let p = |q| percentile(&samples, q).unwrap_or(0.0);
    Ok((rate, p(50.0), p(99.0)))
}

fn jetstream_round_trips(nats: &Nats, n: usize) -> Result<(f64, f64, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let worker = NatsWorker::new(Worker::new(WorkerOptions::new("", "rt")), options(nats));
    let flag = stop.clone();
    let _worker = JoinOnDrop(
        stop,
        vec![std::thread::spawn(move || {
            worker.run(&flag).expect("worker")
        })],
    );
    let rt = triggerd_nats::runtime()?;
    let client = rt.block_on(triggerd_nats::connect(&options(nats)))?;
    let call = || -> Result<()> {
        let finals = rt.block_on(triggerd_nats::request(
            &client,
            "rt",
            "",
            PAYLOAD,
            Duration::from_secs(10),
            |_, _| {},
        ))?;
        if finals.first().map(|f| f.status) != Some(0) {
            bail!("no echo: {finals:?}");
        }
        Ok(())
    };
    // The first calls wait for the worker's consumer.
    for _ in 0..5 {
        call()?;
    }
    round_trips(n, call)
}

fn broker_round_trips(n: usize) -> Result<(f64, f64, f64)> {
    let dir = tempfile::tempdir()?;
    let (endpoint, _broker) = start_broker(dir.path())?;
    let stop = Arc::new(AtomicBool::new(false));
    let worker = Worker::new(WorkerOptions::new(&endpoint, "rt"));
    let flag = stop.clone();
    let _worker = JoinOnDrop(
        stop,
        vec![std::thread::spawn(move || {
            worker.run(&flag).expect("worker")
        })],
    );
    let mut client = Client::connect(&endpoint, ClientOptions::default())?;
    let mut call = || -> Result<()> {
        let reply = client.request("rt", "", PAYLOAD, Duration::from_secs(10), |_| {})?;
        if reply.status != 0 {
            bail!("status {}", reply.status);
        }
        Ok(())
    };
    for _ in 0..5 {
        call()?;
    }
    round_trips(n, call)
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (events, rounds, calls) = if quick {
        (10_000, 1, 500)
    } else {
        (100_000, 3, 5_000)
    };
    let root = std::env::temp_dir();
    let one = Nats::single(&root);
    forward("1-node JetStream", &one, 1, events, rounds)?;
    let (js, js50, js99) = jetstream_round_trips(&one, calls)?;
    let (mdp, mdp50, mdp99) = broker_round_trips(calls)?;
    println!(
        "round trip, {calls} sequential echo requests: JetStream {js:.0} req/s \
         (p50 {js50:.0} µs, p99 {js99:.0} µs) | ZeroMQ broker {mdp:.0} req/s \
         (p50 {mdp50:.0} µs, p99 {mdp99:.0} µs) | RATIO {:.2}",
        js / mdp
    );
    drop(one);
    let three = Nats::cluster(&root, 3);
    forward("3-node JetStream (R3)", &three, 3, events, rounds)?;
    Ok(())
}
