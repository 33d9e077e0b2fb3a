//! Round trips client → broker → worker → client through triggerd's Majordomo broker, with 1
//! and 4 workers, synchronous, pipelined and paced at 10,000 req/s, against a raw ZeroMQ
//! DEALER↔ROUTER echo measured in the same run; then events/s through the spool forwarder.
//! Each figure is the median of several runs; ratios are broker / raw echo.
//!
//! Run: `cargo run --release -p triggerd-benches --bin mdp_roundtrip [-- --quick]`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use triggerd_benches::{start_broker, StopOnDrop};
use triggerd_remote::{
    Client, Event, Forwarder, ForwarderOptions, Spool, SpoolOptions, Worker, WorkerOptions,
};

/// How long a receive may wait before the request counts as lost.
const LOST: Duration = Duration::from_secs(10);

const PAYLOAD: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[derive(Clone, Copy, Default)]
struct Figures {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn figures(n: usize, elapsed: Duration, mut latencies: Vec<Duration>) -> Figures {
    latencies.sort();
    Figures {
        rate: n as f64 / elapsed.as_secs_f64(),
        p50_us: percentile(&latencies, 0.5),
        p99_us: percentile(&latencies, 0.99),
    }
}

fn median(runs: &[Figures]) -> Figures {
    let pick = |f: fn(&Figures) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Figures {
        rate: pick(|f| f.rate),
        p50_us: pick(|f| f.p50_us),
        p99_us: pick(|f| f.p99_us),
    }
}

/// How requests are issued: `window` outstanding at most, optionally paced to `rate`/s.
#[derive(Clone, Copy)]
struct Load {
    requests: usize,
    window: usize,
    rate: Option<f64>,
}

/// Drives `load` through `send(index)` / `recv() -> Option<index>`.
fn drive(
    load: Load,
    mut send: impl FnMut(usize),
    mut recv: impl FnMut(Duration) -> Option<usize>,
) -> Figures {
    let mut sent_at = vec![None; load.requests];
    let mut latencies = Vec::with_capacity(load.requests);
    let (mut sent, mut done) = (0, 0);
    let start = Instant::now();
    while done < load.requests {
        while sent < load.requests && sent - done < load.window {
            if let Some(rate) = load.rate {
                let due = start + Duration::from_secs_f64(sent as f64 / rate);
                if Instant::now() < due {
                    break;
                }
            }
            sent_at[sent] = Some(Instant::now());
            send(sent);
            sent += 1;
        }
        // Paced: sleep in the poll until the next send is due, never spin (2 shared cores).
        let wait = match load.rate {
            Some(rate) if sent < load.requests && sent - done < load.window => {
                let due = start + Duration::from_secs_f64(sent as f64 / rate);
                due.saturating_duration_since(Instant::now())
            }
            _ => LOST,
        };
        let block = wait == LOST;
        match recv(wait) {
            Some(i) => {
                if let Some(t) = sent_at.get_mut(i).and_then(Option::take) {
                    latencies.push(t.elapsed());
                    done += 1;
                }
            }
            None if block => panic!("no reply within 10 s: {done} of {sent} sent answered"),
            None => {}
        }
    }
    figures(load.requests, start.elapsed(), latencies)
}

fn raw_echo(load: Load) -> Figures {
    let ctx = zmq::Context::new();
    let router = ctx.socket(zmq::ROUTER).expect("router");
    router.set_sndhwm(1_000_000).expect("hwm");
    router.set_rcvhwm(1_000_000).expect("hwm");
    router.bind("tcp://127.0.0.1:*").expect("bind");
    let endpoint = router.get_last_endpoint().expect("endpoint").expect("utf8");
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let echo = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            if router.poll(zmq::POLLIN, 50).unwrap_or(0) == 0 {
                continue;
            }
            while let Ok(frames) = router.recv_multipart(zmq::DONTWAIT) {
                let _ = router.send_multipart(frames, 0);
            }
        }
    });
    let _guard = StopOnDrop(stop, vec![echo]);
    let dealer = ctx.socket(zmq::DEALER).expect("dealer");
    dealer.set_sndhwm(1_000_000).expect("hwm");
    dealer.set_rcvhwm(1_000_000).expect("hwm");
    dealer.set_linger(0).expect("linger");
    dealer.connect(&endpoint).expect("connect");
    drive(
        load,
        |i| {
            dealer
                .send_multipart([&(i as u64).to_le_bytes()[..], PAYLOAD], 0)
                .expect("send")
        },
        |wait| {
            let frames = match dealer.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(_) => {
                    if dealer
                        .poll(zmq::POLLIN, wait.as_micros().div_ceil(1000) as i64)
                        .unwrap_or(0)
                        == 0
                    {
                        return None;
                    }
                    dealer.recv_multipart(zmq::DONTWAIT).ok()?
                }
            };
            Some(u64::from_le_bytes(frames.first()?.get(..8)?.try_into().ok()?) as usize)
        },
    )
}

struct Rig {
    endpoint: String,
    _dir: tempfile::TempDir,
    _broker: StopOnDrop,
    _workers: StopOnDrop,
}

fn rig(workers: usize) -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let (endpoint, broker) = start_broker(dir.path()).expect("broker");
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..workers {
        let mut options = WorkerOptions::new(&endpoint, "echo");
        options.capacity = 256;
        let worker = Worker::new(options);
        let flag = stop.clone();
        threads.push(std::thread::spawn(move || {
            worker.run(&flag).expect("worker")
        }));
    }
    let rig = Rig {
        endpoint,
        _dir: dir,
        _broker: broker,
        _workers: StopOnDrop(stop, threads),
    };
    let mut client = Client::connect(&rig.endpoint, Default::default()).expect("client");
    // Wait until every worker has registered: a round of requests reaches them all.
    client
        .request("echo", "", PAYLOAD, Duration::from_secs(30), |_| {})
        .expect("warm-up");
    std::thread::sleep(Duration::from_millis(200));
    rig
}

fn through_broker(rig: &Rig, load: Load) -> Figures {
    let mut client = Client::connect(&rig.endpoint, Default::default()).expect("client");
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
    for workers in [1, 4] {
        let rig = rig(workers);
        for (name, load) in loads {
            let mut broker_runs = Vec::new();
            let mut raw_runs = Vec::new();
            for _ in 0..runs {
                raw_runs.push(raw_echo(load));
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
}
