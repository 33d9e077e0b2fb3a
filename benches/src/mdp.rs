//! What the MDP benchmarks share: the load driver (a window of outstanding requests,
//! optionally paced), median figures (req/s, p50, p99), the raw DEALER↔ROUTER echo baseline
//! with or without CURVE, and brokers secured with each mechanism.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use triggerd_remote::broker::{Role, Store, DEFAULT_TEAM};
use triggerd_remote::security::encode_key;
use triggerd_remote::{Credentials, KeyPair, Mechanism};

use crate::JoinOnDrop;

/// How long a receive may wait before the request counts as lost.
pub const LOST: Duration = Duration::from_secs(10);

pub const PAYLOAD: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[derive(Clone, Copy, Default)]
pub struct Figures {
    pub rate: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

pub fn figures(n: usize, elapsed: Duration, mut latencies: Vec<Duration>) -> Figures {
    latencies.sort();
    Figures {
        rate: n as f64 / elapsed.as_secs_f64(),
        p50_us: percentile(&latencies, 0.5),
        p99_us: percentile(&latencies, 0.99),
    }
}

pub fn median(runs: &[Figures]) -> Figures {
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
pub struct Load {
    pub requests: usize,
    pub window: usize,
    pub rate: Option<f64>,
}

/// Drives `load` through `send(index)` / `recv() -> Option<index>`.
pub fn drive(
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

/// A raw DEALER↔ROUTER echo over TCP on loopback, with CURVE when `curve` holds the server's
/// key pair and the client's credentials (no ZAP handler: every key is accepted), the baseline
/// for what the broker adds.
pub fn raw_echo(load: Load, curve: Option<&(KeyPair, Credentials)>) -> Figures {
    let ctx = zmq::Context::new();
    let router = ctx.socket(zmq::ROUTER).expect("router");
    if let Some((server, _)) = curve {
        router.set_curve_server(true).expect("curve server");
        router.set_curve_secretkey(&server.secret).expect("key");
    }
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
    let _guard = JoinOnDrop(stop, vec![echo]);
    let dealer = ctx.socket(zmq::DEALER).expect("dealer");
    if let Some((_, client)) = curve {
        client.apply(&dealer).expect("curve client");
    }
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

/// A broker secured with `security`, and the credentials its worker and client use.
pub struct SecureBroker {
    pub endpoint: String,
    pub guard: JoinOnDrop,
    pub worker: Credentials,
    pub client: Credentials,
    /// The server's key pair and a client's credentials for the raw echo with CURVE.
    pub raw_curve: Option<(KeyPair, Credentials)>,
}

/// Starts a broker in `dir` with `security` (`none` or `curve`; CURVE identities registered).
pub fn secure_broker(dir: &std::path::Path, security: Mechanism) -> std::io::Result<SecureBroker> {
    if security != Mechanism::Curve {
        let (endpoint, guard) = crate::start_broker_with(dir, security)?;
        let none = Credentials::None;
        return Ok(SecureBroker {
            endpoint,
            guard,
            worker: none.clone(),
            client: none,
            raw_curve: None,
        });
    }
    let keys = |_| KeyPair::generate().map_err(std::io::Error::other);
    let (server, worker, client) = (keys(0)?, keys(1)?, keys(2)?);
    server
        .save(&dir.join("secret.key"))
        .map_err(std::io::Error::other)?;
    let store = Store::open(&dir.join("store.db")).map_err(std::io::Error::other)?;
    for (role, name, pair) in [(Role::Worker, "w", &worker), (Role::Client, "c", &client)] {
        store
            .add_key_identity(role, name, &encode_key(&pair.public), DEFAULT_TEAM)
            .map_err(std::io::Error::other)?;
    }
    let (endpoint, guard) = crate::start_broker_with(dir, security)?;
    let creds = |host: &KeyPair| Credentials::Curve {
        server: server.public,
        host: host.clone(),
    };
    Ok(SecureBroker {
        endpoint,
        guard,
        worker: creds(&worker),
        client: creds(&client),
        raw_curve: Some((server.clone(), creds(&client))),
    })
}
