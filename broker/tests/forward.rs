//! The spool-backed forwarder across a broker outage and a forwarder restart: 10,000 events
//! submitted, the broker killed mid-stream and the forwarder stopped, both started again
//! later on the same spool: every event arrives, none twice after de-duplication by id; and a
//! request the broker timed out before any worker took it is sent again, not lost.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use triggerd_remote::worker::{Outcome, Plugin, PluginRequest};
use triggerd_remote::{Forwarder, ForwarderOptions, Spool, SpoolOptions, Worker};

const EVENTS: usize = 10_000;

#[derive(Default)]
struct Sink {
    seen: Mutex<Vec<(u128, Vec<u8>)>>,
}

impl Plugin for Sink {
    fn call(&self, request: &PluginRequest, _partial: &mut dyn FnMut(Vec<u8>)) -> Outcome {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push((request.id, request.payload.clone()));
        }
        Outcome {
            status: 0,
            body: Vec::new(),
        }
    }
    fn inline(&self) -> bool {
        true
    }
}

impl Sink {
    fn unique_payloads(&self) -> usize {
        let seen = self.seen.lock().expect("lock");
        seen.iter()
            .map(|(_, p)| p.clone())
            .collect::<HashSet<_>>()
            .len()
    }
}

fn forwarder(spool_dir: &std::path::Path, endpoint: &str) -> Forwarder {
    windowed_forwarder(spool_dir, endpoint, 256)
}

fn windowed_forwarder(spool_dir: &std::path::Path, endpoint: &str, window: usize) -> Forwarder {
    let spool = Spool::open(SpoolOptions::new(spool_dir)).expect("spool");
    let mut options = ForwarderOptions::new(endpoint);
    options.window = window;
    options.request_timeout = Duration::from_secs(2);
    options.retry_after = Duration::from_secs(1);
    Forwarder::start(spool, options).expect("forwarder")
}

#[test]
fn events_survive_a_broker_outage_and_a_forwarder_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker_dir = dir.path().join("broker");
    let spool_dir = dir.path().join("spool");
    std::fs::create_dir_all(&broker_dir).expect("mkdir");
    // ipc:// keeps the same address across the restart.
    let bind = format!("ipc://{}", dir.path().join("broker.sock").display());
    let mut broker = Broker::start_in(&broker_dir, &bind, "auth = false\nheartbeat = \"100ms\"");
    let sink = Arc::new(Sink::default());
    let mut options = fast_worker(&broker.endpoint, "sink");
    options.default_plugin = "sink".into();
    let mut worker = Worker::new(options);
    worker.add_plugin("sink", sink.clone());
    let worker = WorkerThread::start(worker);

    let first = forwarder(&spool_dir, &broker.endpoint);
    for i in 0..EVENTS {
        first
            .submit("sink", "", format!("event-{i:05}").as_bytes())
            .expect("submit");
    }
    poll(Duration::from_secs(60), || {
        (sink.unique_payloads() >= 1000).then_some(())
    })
    .expect("delivery started");
    broker.process.kill(); // SIGKILL mid-stream
    let stats = first.stats();
    first.stop().expect("stop forwarder");
    let partial = sink.unique_payloads();
    eprintln!(
        "delivered before the outage: {partial}, spool pending: {}",
        stats.spool.pending
    );
    assert!(
        partial < EVENTS,
        "the outage came too late to matter ({partial} delivered)"
    );
    assert!(stats.spool.pending > 0);

    let _broker = Broker::start(&broker_dir);
    let second = forwarder(&spool_dir, &bind);
    poll(Duration::from_secs(120), || {
        (sink.unique_payloads() == EVENTS).then_some(())
    })
    .unwrap_or_else(|| panic!("only {} of {EVENTS} arrived", sink.unique_payloads()));
    poll(Duration::from_secs(30), || {
        (second.stats().spool.pending == 0).then_some(())
    })
    .expect("spool drained");

    let seen = sink.seen.lock().expect("lock").clone();
    let mut by_id: HashMap<u128, Vec<u8>> = HashMap::new();
    for (id, payload) in &seen {
        assert_ne!(*id, 0, "every event carries a request id");
        if let Some(previous) = by_id.insert(*id, payload.clone()) {
            assert_eq!(&previous, payload, "one id, one event");
        }
    }
    let mut payloads: Vec<&Vec<u8>> = by_id.values().collect();
    payloads.sort();
    payloads.dedup();
    assert_eq!(by_id.len(), EVENTS, "after de-duplication by id");
    assert_eq!(payloads.len(), EVENTS, "no event under two ids");
    // The worker's own de-duplication already kept repeats away from the plugin.
    assert_eq!(seen.len(), EVENTS, "duplicates reached the plugin");
    drop(second);
    drop(worker);
}

#[test]
fn window_one_delivers_in_spool_order_across_a_broker_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker_dir = dir.path().join("broker");
    std::fs::create_dir_all(&broker_dir).expect("mkdir");
    let bind = format!("ipc://{}", dir.path().join("broker.sock").display());
    let mut broker = Broker::start_in(&broker_dir, &bind, "auth = false\nheartbeat = \"100ms\"");
    let sink = Arc::new(Sink::default());
    let mut options = fast_worker(&broker.endpoint, "sink");
    options.default_plugin = "sink".into();
    let mut worker = Worker::new(options);
    worker.add_plugin("sink", sink.clone());
    let worker = WorkerThread::start(worker);
    let forwarder = windowed_forwarder(&dir.path().join("spool"), &bind, 1);
    for i in 0..500 {
        forwarder
            .submit("sink", "", format!("{i:03}").as_bytes())
            .expect("submit");
    }
    poll(Duration::from_secs(60), || {
        (sink.unique_payloads() >= 100).then_some(())
    })
    .expect("started");
    broker.process.kill();
    let _broker = Broker::start(&broker_dir);
    poll(Duration::from_secs(120), || {
        (sink.unique_payloads() == 500).then_some(())
    })
    .unwrap_or_else(|| panic!("only {} of 500 arrived", sink.unique_payloads()));
    let seen: Vec<Vec<u8>> = sink
        .seen
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    let expected: Vec<Vec<u8>> = (0..500).map(|i| format!("{i:03}").into_bytes()).collect();
    assert_eq!(seen, expected, "in order, each once");
    drop(forwarder);
    drop(worker);
}

#[test]
fn a_request_the_broker_timed_out_is_sent_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker_dir = dir.path().join("broker");
    std::fs::create_dir_all(&broker_dir).expect("mkdir");
    let bind = format!("ipc://{}", dir.path().join("broker.sock").display());
    let broker = Broker::start_in(&broker_dir, &bind, "auth = false\nheartbeat = \"100ms\"");
    let spool = Spool::open(SpoolOptions::new(dir.path().join("spool"))).expect("spool");
    let mut options = ForwarderOptions::new(&bind);
    options.request_timeout = Duration::from_millis(300);
    // Only the broker's timeout FINAL can cause a resend within this test.
    options.retry_after = Duration::from_secs(600);
    let forwarder = Forwarder::start(spool, options).expect("forwarder");
    for i in 0..20 {
        forwarder
            .submit("late", "", format!("{i}").as_bytes())
            .expect("submit");
    }
    // No worker serves "late" yet: every request waits in the broker's queue and times out.
    poll(Duration::from_secs(60), || {
        (forwarder.stats().resent >= 20).then_some(())
    })
    .unwrap_or_else(|| panic!("not resent: {:?}", forwarder.stats()));

    let sink = Arc::new(Sink::default());
    let mut worker_options = fast_worker(&broker.endpoint, "late");
    worker_options.default_plugin = "sink".into();
    let mut worker = Worker::new(worker_options);
    worker.add_plugin("sink", sink.clone());
    let worker = WorkerThread::start(worker);
    let stats = poll(Duration::from_secs(60), || {
        let stats = forwarder.stats();
        (stats.delivered == 20 && sink.unique_payloads() == 20).then_some(stats)
    })
    .unwrap_or_else(|| panic!("only {} of 20 arrived", sink.unique_payloads()));
    assert_eq!(stats.failed, 0, "{stats:?}");
    drop(forwarder);
    drop(worker);
}
