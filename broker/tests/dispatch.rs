//! Service algorithms, fail-over and timeouts against the real broker: roundrobin spreads
//! evenly, serial never overlaps and keeps arrival order, mirror reaches every worker, a
//! worker killed with SIGKILL mid-request costs the client nothing but time, and a slow
//! service answers with status 124 at its timeout.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use triggerd_remote::worker::{Outcome, Plugin, PluginRequest};
use triggerd_remote::{Client, Event, Worker};

const T: Duration = Duration::from_secs(30);

fn broker(dir: &std::path::Path) -> Broker {
    Broker::start_in(
        dir,
        "tcp://127.0.0.1:*",
        "auth = false\nheartbeat = \"100ms\"",
    )
}

/// Names the worker that served the request.
struct Named(String);

impl Plugin for Named {
    fn call(&self, _request: &PluginRequest, _partial: &mut dyn FnMut(Vec<u8>)) -> Outcome {
        Outcome {
            status: 0,
            body: vec![self.0.clone().into_bytes()],
        }
    }
    fn inline(&self) -> bool {
        true
    }
}

fn named_workers(endpoint: &str, service: &str, n: usize, capacity: u32) -> Vec<WorkerThread> {
    (0..n)
        .map(|i| {
            let mut options = fast_worker(endpoint, service);
            options.capacity = capacity;
            options.default_plugin = "named".into();
            let mut worker = Worker::new(options);
            worker.add_plugin("named", Arc::new(Named(format!("w{i}"))));
            WorkerThread::start(worker)
        })
        .collect()
}

#[test]
fn roundrobin_spreads_evenly_over_three_workers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path());
    let _workers = named_workers(&broker.endpoint, "rr", 3, 1);
    let mut client = Client::connect(&broker.endpoint, Default::default()).expect("client");
    // Until every worker has registered, the rotation cannot include it.
    let mut seen = std::collections::HashSet::new();
    poll(T, || {
        let reply = client.request("rr", "", b"warm", T, |_| {}).ok()?;
        seen.insert(reply.body.concat());
        (seen.len() == 3).then_some(())
    })
    .expect("all three workers registered");
    let mut counts = std::collections::HashMap::new();
    for i in 0..1000 {
        let reply = client
            .request("rr", "", format!("{i}").as_bytes(), T, |_| {})
            .expect("reply");
        *counts
            .entry(String::from_utf8_lossy(&reply.body.concat()).into_owned())
            .or_insert(0) += 1;
    }
    let mut values: Vec<i32> = counts.values().copied().collect();
    values.sort();
    assert_eq!(values, vec![333, 333, 334], "{counts:?}");
}

/// Records how many requests run at once and in which order they start.
struct Recorder {
    running: AtomicUsize,
    peak: AtomicUsize,
    order: Mutex<Vec<Vec<u8>>>,
}

impl Plugin for Recorder {
    fn call(&self, request: &PluginRequest, _partial: &mut dyn FnMut(Vec<u8>)) -> Outcome {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        if let Ok(mut order) = self.order.lock() {
            order.push(request.payload.clone());
        }
        // Long enough that overlapping dispatch would be caught.
        std::thread::sleep(Duration::from_millis(2));
        self.running.fetch_sub(1, Ordering::SeqCst);
        Outcome {
            status: 0,
            body: Vec::new(),
        }
    }
}

fn run_recorded(service_algorithm: Option<&str>) -> (usize, Vec<Vec<u8>>) {
    let dir = tempfile::tempdir().expect("tempdir");
    Broker::configure(
        dir.path(),
        "tcp://127.0.0.1:*",
        "auth = false\nheartbeat = \"100ms\"",
    );
    if let Some(algorithm) = service_algorithm {
        admin(
            dir.path(),
            &["service", "set", "rec", "--algorithm", algorithm],
        );
    }
    let broker = Broker::start(dir.path());
    let recorder = Arc::new(Recorder {
        running: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        order: Mutex::default(),
    });
    let _workers: Vec<WorkerThread> = (0..3)
        .map(|_| {
            let mut options = fast_worker(&broker.endpoint, "rec");
            options.capacity = 4;
            options.default_plugin = "rec".into();
            let mut worker = Worker::new(options);
            worker.add_plugin("rec", recorder.clone());
            WorkerThread::start(worker)
        })
        .collect();
    wait_service_up(&broker.endpoint, "rec", Default::default());
    let mut client = Client::connect(&broker.endpoint, Default::default()).expect("client");
    let sent: Vec<Vec<u8>> = (0..150).map(|i| format!("{i:04}").into_bytes()).collect();
    for payload in &sent {
        client
            .send("rec", "", None, Some(T), &[payload])
            .expect("send");
    }
    let mut finals = 0;
    while finals < sent.len() {
        match client.recv(T).expect("recv") {
            Some(Event::Final(reply)) => {
                assert_eq!(reply.status, 0);
                finals += 1;
            }
            Some(Event::Partial { .. }) => {}
            None => panic!("only {finals} replies"),
        }
    }
    let order = recorder.order.lock().expect("lock").clone();
    (recorder.peak.load(Ordering::SeqCst), order)
}

#[test]
fn serial_never_overlaps_and_keeps_arrival_order() {
    let (peak, order) = run_recorded(Some("serial"));
    assert_eq!(peak, 1);
    let expected: Vec<Vec<u8>> = (0..150).map(|i| format!("{i:04}").into_bytes()).collect();
    assert_eq!(order, expected);
}

#[test]
fn roundrobin_with_capacity_does_overlap() {
    // The control for the serial test: the same workload without `serial` runs in parallel.
    let (peak, order) = run_recorded(None);
    assert!(peak > 1, "peak {peak}");
    assert_eq!(order.len(), 150);
}

#[test]
fn mirror_reaches_every_worker_then_one_final() {
    let dir = tempfile::tempdir().expect("tempdir");
    Broker::configure(
        dir.path(),
        "tcp://127.0.0.1:*",
        "auth = false\nheartbeat = \"100ms\"",
    );
    admin(
        dir.path(),
        &["service", "set", "mir", "--algorithm", "mirror"],
    );
    let broker = Broker::start(dir.path());
    let _workers = named_workers(&broker.endpoint, "mir", 3, 1);
    let mut client = Client::connect(&broker.endpoint, Default::default()).expect("client");
    poll(T, || {
        let mut parts = Vec::new();
        client
            .request("mir", "", b"warm", T, |b| parts.push(b.concat()))
            .ok()?;
        (parts.len() == 3).then_some(())
    })
    .expect("three workers registered");
    for i in 0..50 {
        let mut parts = Vec::new();
        let reply = client
            .request("mir", "", format!("{i}").as_bytes(), T, |b| {
                parts.push(b.concat())
            })
            .expect("reply");
        parts.sort();
        assert_eq!(parts, vec![b"w0".to_vec(), b"w1".to_vec(), b"w2".to_vec()]);
        assert_eq!(reply.status, 0);
        assert!(reply.body.is_empty());
    }
    // Exactly one FINAL per request: nothing else is pending.
    assert_eq!(client.recv(Duration::from_millis(300)).expect("recv"), None);
}

#[test]
fn killed_worker_request_fails_over_with_exactly_one_final() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker(dir.path());
    let mut hung = python_peer(&["hang1", &broker.endpoint, "fo", "100"], &[]);
    wait_service_up(&broker.endpoint, "fo", Default::default());
    let mut client = Client::connect(&broker.endpoint, Default::default()).expect("client");
    let id = client
        .send("fo", "", None, Some(T), &[b"precious"])
        .expect("send");
    assert_eq!(
        hung.line(T).as_deref(),
        Some("REQ precious"),
        "the hanging worker holds the request"
    );
    let survivor = named_workers(&broker.endpoint, "fo", 1, 1);
    hung.kill(); // SIGKILL
    let mut finals = Vec::new();
    while let Some(event) = client.recv(Duration::from_secs(3)).expect("recv") {
        if let Event::Final(reply) = event {
            finals.push(reply);
        }
    }
    assert_eq!(finals.len(), 1, "{finals:?}");
    assert_eq!(finals[0].id, id);
    assert_eq!(finals[0].body, vec![b"w0".to_vec()]);
    assert!(broker.log().contains("re-dispatched"), "{}", broker.log());
    drop(survivor);
}

#[test]
fn slow_service_times_out_with_status_124() {
    let dir = tempfile::tempdir().expect("tempdir");
    Broker::configure(
        dir.path(),
        "tcp://127.0.0.1:*",
        "auth = false\nheartbeat = \"100ms\"",
    );
    admin(
        dir.path(),
        &["service", "set", "slow", "--timeout", "300ms"],
    );
    let broker = Broker::start(dir.path());
    let mut options = fast_worker(&broker.endpoint, "slow");
    options.default_plugin = "command".into();
    let mut worker = Worker::new(options);
    worker.add_plugin(
        "command",
        Arc::new(triggerd_remote::worker::Command::new(vec![
            "sleep".into(),
            "20".into(),
        ])),
    );
    let _worker = WorkerThread::start(worker);
    wait_service_up(&broker.endpoint, "slow", Default::default());
    let mut client = Client::connect(&broker.endpoint, Default::default()).expect("client");
    let started = std::time::Instant::now();
    let reply = client.request("slow", "", b"", T, |_| {}).expect("reply");
    assert_eq!(reply.status, 124);
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn a_fast_heartbeating_worker_stays_connected_to_a_slow_heartbeating_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start_in(
        dir.path(),
        "tcp://127.0.0.1:*",
        "auth = false\nheartbeat = \"2s\"",
    );
    let worker = WorkerThread::start(Worker::new(fast_worker(&broker.endpoint, "hb")));
    wait_service_up(&broker.endpoint, "hb", Default::default());
    // The worker gives up after 3 × 100 ms of silence; the broker must heartbeat it that often.
    let reconnected = poll(Duration::from_millis(1500), || {
        (worker.stats.connections.load(Ordering::Relaxed) > 1).then_some(())
    });
    assert!(
        reconnected.is_none(),
        "the worker lost the broker while idle"
    );
}
