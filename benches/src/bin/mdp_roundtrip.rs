//! Round trips client → broker → worker → client through triggerd's Majordomo broker, with 1
//! and 4 workers, synchronous, pipelined and paced at 10,000 req/s, against a raw ZeroMQ
//! DEALER↔ROUTER echo measured in the same run; then events/s through the spool forwarder.
//! Each figure is the median of several runs; ratios are broker / raw echo. Last, the same
//! synchronous and pipelined loads with `security = "none"` and `"curve"`, each against the
//! raw echo with the same mechanism, and CURVE's cost as the curve / none ratio.
//!
//! Run: `cargo run --release -p triggerd-benches --bin mdp_roundtrip [-- --quick] [--security]`
//! (`--security`: only the none / curve comparison).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use triggerd_benches::mdp::{drive, median, raw_echo, secure_broker, Figures, Load, PAYLOAD};
use triggerd_benches::JoinOnDrop;
use triggerd_remote::{
    Client, ClientOptions, Credentials, Event, Forwarder, ForwarderOptions, KeyPair, Mechanism,
    Spool, SpoolOptions, Worker, WorkerOptions,
};

struct Rig {
    endpoint: String,
    client: ClientOptions,
    raw_curve: Option<(KeyPair, Credentials)>,
    _dir: tempfile::TempDir,
    _broker: JoinOnDrop,
    _workers: JoinOnDrop,
}

fn rig(workers: usize, security: Mechanism) -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = secure_broker(dir.path(), security).expect("broker");
    let endpoint = broker.endpoint.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..workers {
        let mut options = WorkerOptions::new(&endpoint, "echo");
        options.capacity = 256;
        options.credentials = broker.worker.clone();
        let worker = Worker::new(options);
        let flag = stop.clone();
        threads.push(std::thread::spawn(move || {
            worker.run(&flag).expect("worker")
        }));
    }
    let rig = Rig {
        endpoint,
        client: ClientOptions {
            credentials: broker.client.clone(),
            retries: 0,
        },
        raw_curve: broker.raw_curve.clone(),
        _dir: dir,
        _broker: broker.guard,
        _workers: JoinOnDrop(stop, threads),
    };
    let mut client = Client::connect(&rig.endpoint, rig.client.clone()).expect("client");
    // Wait until every worker has registered: a round of requests reaches them all.
    client
        .request("echo", "", PAYLOAD, Duration::from_secs(30), |_| {})
        .expect("warm-up");
    std::thread::sleep(Duration::from_millis(200));
    rig
}

fn through_broker(rig: &Rig, load: Load) -> Figures {
    let mut client = Client::connect(&rig.endpoint, rig.client.clone()).expect("client");
    let base = client.next_id();
    let client = std::cell::RefCell::new(client);
    drive(
        load,
        |i| {
            client
                .borrow_mut()
                .send("echo", "", Some(base + 1 + i as u128), None, &[PAYLOAD])
                .expect("send");
        },
        |wait| match client.borrow_mut().recv(wait).expect("recv")? {
            Event::Final(reply) => Some((reply.id - base - 1) as usize),
            Event::Partial { .. } => None,
        },
    )
}

fn forwarder_rate(rig: &Rig, events: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spool_options = SpoolOptions::new(dir.path());
    spool_options.max_bytes = 4 << 30;
    let spool = Spool::open(spool_options).expect("spool");
    let mut options = ForwarderOptions::new(&rig.endpoint);
    options.window = 2048;
    let forwarder = Forwarder::start(spool, options).expect("forwarder");
    let start = Instant::now();
    for _ in 0..events {
        forwarder.submit("echo", "", PAYLOAD).expect("submit");
    }
    while forwarder.stats().delivered < events as u64 {
        std::thread::sleep(Duration::from_millis(1));
    }
    events as f64 / start.elapsed().as_secs_f64()
}

fn line(name: &str, broker: Figures, raw: Figures) {
    println!(
        "{name:<28} broker {:>9.0} req/s p50 {:>7.1} us p99 {:>7.1} us | raw {:>9.0} req/s p50 {:>6.1} us p99 {:>6.1} us | RATIO {:.2}",
        broker.rate,
        broker.p50_us,
        broker.p99_us,
        raw.rate,
        raw.p50_us,
        raw.p99_us,
        broker.rate / raw.rate
    );
    println!(
        "{:<28} p99 RATIO broker/raw {:.2}",
        "",
        broker.p99_us / raw.p99_us
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 1 } else { 3 };
    let scale = if quick { 10 } else { 1 };
    let loads = [
        (
            "synchronous",
            Load {
                requests: 20_000 / scale,
                window: 1,
                rate: None,
            },
        ),
        (
            "pipelined (window 1000)",
            Load {
                requests: 300_000 / scale,
                window: 1000,
                rate: None,
            },
        ),
        (
            "paced 10,000 req/s",
            Load {
                requests: 30_000 / scale,
                window: 1000,
                rate: Some(10_000.0),
            },
        ),
    ];
    println!("median of {runs} runs, {} byte payload", PAYLOAD.len());
    let only_security = std::env::args().any(|a| a == "--security");
    for workers in [1, 4].into_iter().filter(|_| !only_security) {
        let rig = rig(workers, Mechanism::None);
        for (name, load) in loads {
            let mut broker_runs = Vec::new();
            let mut raw_runs = Vec::new();
            for _ in 0..runs {
                raw_runs.push(raw_echo(load, None));
                broker_runs.push(through_broker(&rig, load));
            }
            line(
                &format!("{workers} worker(s), {name}"),
                median(&broker_runs),
                median(&raw_runs),
            );
        }
        if workers == 4 {
            let events = 300_000 / scale;
            let pipelined = median(
                &(0..runs)
                    .map(|_| through_broker(&rig, loads[1].1))
                    .collect::<Vec<_>>(),
            );
            let rates: Vec<Figures> = (0..runs)
                .map(|_| Figures {
                    rate: forwarder_rate(&rig, events),
                    ..Figures::default()
                })
                .collect();
            let rate = median(&rates).rate;
            println!(
                "forwarder via spool, 4 workers: {rate:>9.0} events/s | pipelined client {:>9.0} req/s | RATIO {:.2}",
                pipelined.rate,
                rate / pipelined.rate
            );
        }
    }
    security(runs, &loads[..2]);
}

/// CURVE against none: the broker and the raw echo with each mechanism, one worker.
fn security(runs: usize, loads: &[(&str, Load)]) {
    let rigs = [Mechanism::None, Mechanism::Curve].map(|m| (m, rig(1, m)));
    for (name, load) in loads {
        let mut by_mechanism = Vec::new();
        for (mechanism, rig) in &rigs {
            let mut broker_runs = Vec::new();
            let mut raw_runs = Vec::new();
            for _ in 0..runs {
                raw_runs.push(raw_echo(*load, rig.raw_curve.as_ref()));
                broker_runs.push(through_broker(rig, *load));
            }
            let (broker, raw) = (median(&broker_runs), median(&raw_runs));
            line(
                &format!("security {}, {name}", mechanism.as_str()),
                broker,
                raw,
            );
            by_mechanism.push((broker, raw));
        }
        let [(none, raw_none), (curve, raw_curve)] = by_mechanism[..] else {
            unreachable!("two mechanisms")
        };
        println!(
            "CURVE cost, {name}: broker curve/none RATIO {:.2} (p99 {:.2}) | raw curve/none RATIO {:.2}",
            curve.rate / none.rate,
            curve.p99_us / none.p99_us,
            raw_curve.rate / raw_none.rate
        );
    }
}
