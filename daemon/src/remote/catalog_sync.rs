//! The thread that follows the broker's trigger catalog with the ZeroMQ guide's Clone
//! pattern over the host's own authenticated connection: snapshot from `mmi.catalog`, then
//! the sequence-numbered updates the broker pushes as PARTIAL replies to it. A ping each
//! second asks the broker the last number it sent; an update whose `prev` is not this host's
//! number, a ping answered with another number or not at all (3 s), or a refused ping make
//! it reconnect and re-snapshot. Each accepted change is cached and reported to the daemon.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;
use triggerd_remote::broker::{Pong, Snapshot, Update};
use triggerd_remote::client::Event;
use triggerd_remote::{Client, ClientOptions};
use triggerd_support::lock;

use super::catalog::{CatalogShared, MAX_MESSAGE};

/// The catalog service's name as a client asks for it.
const SERVICE: &str = "mmi.catalog";
/// How often the host pings, and how long an unanswered ping (or snapshot) is waited for.
const PING_EVERY: Duration = Duration::from_secs(1);
const ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// Pause between failed connection attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The running sync thread; stopped on drop.
pub struct CatalogSync {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CatalogSync {
    /// Follows the catalog at `endpoint`; `changed` is called after each accepted change.
    pub fn start(
        shared: Arc<CatalogShared>,
        endpoint: String,
        options: ClientOptions,
        changed: Box<dyn Fn() + Send>,
    ) -> Result<CatalogSync, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("catalog".into())
            .spawn(move || follow(&shared, &endpoint, &options, &*changed, &flag))
            .map_err(|e| format!("cannot start the catalog thread: {e}"))?;
        Ok(CatalogSync {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for CatalogSync {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Why a subscription ended.
enum Ended {
    Stopped,
    Resync(&'static str),
}

fn follow(
    shared: &CatalogShared,
    endpoint: &str,
    options: &ClientOptions,
    changed: &dyn Fn(),
    stop: &AtomicBool,
) {
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        if !first {
            shared.resyncs.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(RETRY_PAUSE);
        }
        first = false;
        // A fresh connection each time: the broker sees a new subscriber, nothing stale.
        let mut client = match Client::connect(endpoint, options.clone()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("catalog: {e}");
                continue;
            }
        };
        match subscribe(shared, &mut client, changed, stop) {
            Ended::Stopped => break,
            Ended::Resync(why) => {
                shared.synced.store(false, Ordering::Relaxed);
                tracing::info!("trigger catalog: {why}; snapshot again");
            }
        }
    }
    shared.synced.store(false, Ordering::Relaxed);
}

fn subscribe(
    shared: &CatalogShared,
    client: &mut Client,
    changed: &dyn Fn(),
    stop: &AtomicBool,
) -> Ended {
    let asked = Instant::now();
    let Ok(id) = client.send(SERVICE, "", None, Some(ANSWER_WITHIN), &[b"snapshot"]) else {
        return Ended::Resync("cannot send");
    };
    let deadline = Instant::now() + ANSWER_WITHIN;
    let snapshot = loop {
        if stop.load(Ordering::Relaxed) {
            return Ended::Stopped;
        }
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        match client.recv(wait) {
            Ok(Some(Event::Final(reply))) if reply.id == id => break reply,
            Ok(_) if Instant::now() < deadline => continue,
            _ => return Ended::Resync("no snapshot"),
        }
    };
    let Some(Snapshot { seq, entries }) = decode(shared, snapshot.status, &snapshot.body) else {
        return Ended::Resync("snapshot refused");
    };
    shared.snapshots.fetch_add(1, Ordering::Relaxed);
    let before = shared.entries();
    shared.accept(seq, entries);
    let took = asked.elapsed().as_millis() as u64;
    shared.snapshot_ms.store(took, Ordering::Relaxed);
    shared.synced.store(true, Ordering::Relaxed);
    let now = shared.entries();
    if now != before {
        changed();
    }
    shared.save();
    tracing::info!(
        seq,
        entries = now.len(),
        ms = took,
        "trigger catalog synced"
    );
    let mut ping: Option<(u128, Instant)> = None;
    let mut next_ping = Instant::now() + PING_EVERY;
    while !stop.load(Ordering::Relaxed) {
        let mut dirty = false;
        let mut wait = Duration::from_millis(100);
        loop {
            let event = match client.recv(wait) {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(_) => return Ended::Resync("connection failed"),
            };
            wait = Duration::ZERO;
            match event {
                Event::Partial { id: got, body } if got == id => {
                    let Some(update) = decode::<Update>(shared, 0, &body) else {
                        return Ended::Resync("malformed update");
                    };
                    if !shared.apply(update) {
                        return Ended::Resync("an update does not follow this host's number");
                    }
                    shared.updates.fetch_add(1, Ordering::Relaxed);
                    dirty = true;
                }
                Event::Final(reply) if ping.is_some_and(|(p, _)| p == reply.id) => {
                    ping = None;
                    let Some(pong) = decode::<Pong>(shared, reply.status, &reply.body) else {
                        return Ended::Resync("the broker forgot this subscriber");
                    };
                    if pong.seq != lock(&shared.known).seq {
                        return Ended::Resync("missed an update");
                    }
                }
                _ => {}
            }
        }
        if dirty {
            changed();
            shared.save();
        }
        let now = Instant::now();
        if let Some((_, sent)) = ping {
            if now.duration_since(sent) > ANSWER_WITHIN {
                return Ended::Resync("the broker does not answer");
            }
        } else if now >= next_ping {
            match client.send(SERVICE, "", None, Some(ANSWER_WITHIN), &[b"ping"]) {
                Ok(p) => ping = Some((p, now)),
                Err(_) => return Ended::Resync("cannot ping"),
            }
            next_ping = now + PING_EVERY;
        }
    }
    Ended::Stopped
}

/// The JSON in a successful reply's one frame, within the bounds; refusals counted.
fn decode<T: for<'de> Deserialize<'de>>(
    shared: &CatalogShared,
    status: i32,
    body: &[Vec<u8>],
) -> Option<T> {
    let frame = body
        .first()
        .filter(|f| status == 0 && f.len() <= MAX_MESSAGE);
    let value = frame.and_then(|f| serde_json::from_slice(f).ok());
    if value.is_none() && status == 0 {
        shared.refused.fetch_add(1, Ordering::Relaxed);
    }
    value
}
