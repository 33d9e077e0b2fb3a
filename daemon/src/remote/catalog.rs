//! The host side of the trigger catalog (`[broker] sync_triggers = true`): a thread that
//! follows the broker's catalog with the ZeroMQ guide's Clone pattern over the host's own
//! authenticated connection: snapshot from `mmi.catalog`, then the sequence-numbered updates
//! the broker pushes as PARTIAL replies to it. A ping each second asks the broker the last
//! number it sent; an update whose `prev` is not this host's number, a ping answered with
//! another number or not at all (3 s), or a refused ping make it reconnect and re-snapshot.
//!
//! Every catalog this host accepts is written to `<state_dir>/catalog.json` (crash-safe), so
//! a start without the broker shows the last tree it saw; it converges once the broker is
//! back. What the broker sends is bounded: one message at most [`MAX_MESSAGE`] bytes, at most
//! [`MAX_ENTRIES`] entries, each entry checked (a bad one is dropped and counted).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use triggerd_remote::broker::{CatalogEntry, Pong, Snapshot, Update, MAX_ENTRIES_PER_TEAM};
use triggerd_remote::client::Event;
use triggerd_remote::{Client, ClientOptions};
use triggerd_support::lock;

use super::catalog_change::MergedPaths;

/// The catalog service's name as a client asks for it.
const SERVICE: &str = "mmi.catalog";
/// Largest snapshot or update accepted, in bytes.
pub const MAX_MESSAGE: usize = 64 << 20;
/// Entries a host holds at most.
pub const MAX_ENTRIES: usize = MAX_ENTRIES_PER_TEAM;
/// How often the host pings, and how long an unanswered ping (or snapshot) is waited for.
const PING_EVERY: Duration = Duration::from_secs(1);
const ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// Pause between failed connection attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What `status` shows about the catalog.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CatalogStatus {
    /// The sequence number this host's catalog is complete up to.
    pub seq: u64,
    /// Live triggers and directories.
    pub entries: u64,
    /// Connected and subscribed now.
    pub synced: bool,
    pub snapshots: u64,
    /// How long the last snapshot took, from asking to holding it (ms).
    #[serde(default)]
    pub snapshot_ms: u64,
    pub updates: u64,
    /// Gaps, missed pings and reconnects that led to a new snapshot.
    pub resyncs: u64,
    /// Entries or messages refused as malformed or over a bound.
    pub refused: u64,
    /// Synced paths left out because a local trigger holds them (local wins).
    pub collisions: u64,
    /// Every synced trigger this host serves.
    #[serde(default)]
    pub triggers: Vec<SyncedTrigger>,
}

/// A synced trigger as `status` lists it: where it comes from, where its writes go, and the
/// rule and trigger-file counters that concern it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyncedTrigger {
    pub path: String,
    /// `broker catalog`, or `local (wins over the catalog)` for a collision.
    pub origin: String,
    pub service: String,
    /// Writes to the file, events sent (spooled), failures (runs that could not be spooled
    /// and answers with a non-zero status).
    pub writes: u64,
    pub sends: u64,
    pub failures: u64,
    /// Seconds since the Unix epoch of the last answer, if any.
    pub last_reply: Option<u64>,
}

/// The catalog as this host knows it: entries by path, complete up to `seq`.
#[derive(Debug, Default)]
struct Known {
    seq: u64,
    entries: BTreeMap<String, CatalogEntry>,
}

/// What the sync thread shares with the daemon.
#[derive(Default)]
pub struct CatalogShared {
    known: Mutex<Known>,
    synced: AtomicBool,
    snapshots: AtomicU64,
    snapshot_ms: AtomicU64,
    updates: AtomicU64,
    resyncs: AtomicU64,
    refused: AtomicU64,
    pub collisions: AtomicU64,
    cache: PathBuf,
    /// The running config's trigger paths by side, for changes made in the mount.
    merged: Mutex<Arc<MergedPaths>>,
}

impl CatalogShared {
    /// Starts from the cache in `state_dir` (an unreadable or malformed cache is an empty
    /// catalog, logged).
    pub fn load(state_dir: &Path) -> Arc<CatalogShared> {
        let cache = state_dir.join("catalog.json");
        let shared = CatalogShared {
            cache,
            ..Default::default()
        };
        match read_cache(&shared.cache) {
            Ok(Some(snapshot)) => {
                let known = shared.accept(snapshot.seq, snapshot.entries);
                tracing::info!(
                    seq = known.0,
                    entries = known.1,
                    "trigger catalog from the cache"
                );
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(cache = %shared.cache.display(), "trigger catalog cache ignored: {e}")
            }
        }
        Arc::new(shared)
    }

    /// The running config's trigger paths by side.
    pub fn merged(&self) -> Arc<MergedPaths> {
        Arc::clone(&lock(&self.merged))
    }

    pub fn set_merged(&self, paths: MergedPaths) {
        *lock(&self.merged) = Arc::new(paths);
    }

    /// The live triggers and directories, by path.
    pub fn entries(&self) -> Vec<CatalogEntry> {
        lock(&self.known).entries.values().cloned().collect()
    }

    pub fn status(&self) -> CatalogStatus {
        let known = lock(&self.known);
        CatalogStatus {
            seq: known.seq,
            entries: known.entries.len() as u64,
            synced: self.synced.load(Ordering::Relaxed),
            snapshots: self.snapshots.load(Ordering::Relaxed),
            snapshot_ms: self.snapshot_ms.load(Ordering::Relaxed),
            updates: self.updates.load(Ordering::Relaxed),
            resyncs: self.resyncs.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            collisions: self.collisions.load(Ordering::Relaxed),
            triggers: Vec::new(),
        }
    }

    /// Replaces the catalog with a snapshot; returns (seq, entries kept).
    fn accept(&self, seq: u64, entries: Vec<CatalogEntry>) -> (u64, usize) {
        let mut map = BTreeMap::new();
        for entry in entries {
            self.insert(&mut map, entry);
        }
        let mut known = lock(&self.known);
        *known = Known { seq, entries: map };
        (seq, known.entries.len())
    }

    fn insert(&self, map: &mut BTreeMap<String, CatalogEntry>, entry: CatalogEntry) {
        let fits = map.len() < MAX_ENTRIES || map.contains_key(&entry.path);
        if entry.validate().is_err() || !fits {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        map.insert(entry.path.clone(), entry);
    }

    /// Applies an update; `false` when it does not follow this host's number (a gap).
    fn apply(&self, update: Update) -> bool {
        let mut known = lock(&self.known);
        if update.prev != known.seq {
            return false;
        }
        let mut map = std::mem::take(&mut known.entries);
        for entry in update.entries {
            match entry.deleted {
                true => {
                    map.remove(&entry.path);
                }
                false => self.insert(&mut map, entry),
            }
        }
        known.entries = map;
        known.seq = update.seq;
        true
    }

    fn save(&self) {
        let snapshot = {
            let known = lock(&self.known);
            Snapshot {
                seq: known.seq,
                entries: known.entries.values().cloned().collect(),
            }
        };
        let bytes = serde_json::to_vec(&snapshot).unwrap_or_default();
        if let Err(e) = triggerd_support::write_atomically(&self.cache, &bytes) {
            tracing::warn!(cache = %self.cache.display(), "trigger catalog not cached: {e}");
        }
    }
}

fn read_cache(path: &Path) -> Result<Option<Snapshot>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if bytes.len() > MAX_MESSAGE {
        return Err(format!("larger than {MAX_MESSAGE} bytes"));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| e.to_string())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_cache_is_an_empty_catalog_and_bad_entries_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("catalog.json"), b"{not json").expect("write");
        let shared = CatalogShared::load(dir.path());
        assert!(shared.entries().is_empty());
        let good = CatalogEntry::trigger("weather/rpi/station1", "demo");
        let bad = CatalogEntry::trigger("../escape", "demo");
        shared.accept(4, vec![good.clone(), bad]);
        assert_eq!(shared.status().refused, 1);
        // An update must follow this host's number; a gap is refused whole.
        let gap = Update {
            prev: 3,
            seq: 5,
            entries: Vec::new(),
        };
        assert!(!shared.apply(gap));
        let removal = Update {
            prev: 4,
            seq: 5,
            entries: vec![CatalogEntry {
                deleted: true,
                ..good
            }],
        };
        assert!(shared.apply(removal));
        shared.save();
        let reloaded = CatalogShared::load(dir.path());
        assert_eq!((reloaded.status().seq, reloaded.entries().len()), (5, 0));
    }
}
