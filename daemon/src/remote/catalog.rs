//! The host side of the trigger catalog (`[broker] sync_triggers = true`): the catalog as
//! this host knows it, its cache and its status; the thread that follows the broker is in
//! [`catalog_sync`](super::catalog_sync).
//!
//! Every catalog this host accepts is written to `<state_dir>/catalog.json` (crash-safe), so
//! a start without the broker shows the last tree it saw; it converges once the broker is
//! back. What the broker sends is bounded: one message at most [`MAX_MESSAGE`] bytes, at most
//! [`MAX_ENTRIES`] entries, each entry checked (a bad one is dropped and counted).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use triggerd_remote::broker::{CatalogEntry, Snapshot, Update, MAX_ENTRIES_PER_TEAM};
use triggerd_support::lock;

use super::catalog_change::MergedPaths;

/// Largest snapshot or update accepted, in bytes.
pub const MAX_MESSAGE: usize = 64 << 20;
/// Entries a host holds at most.
pub const MAX_ENTRIES: usize = MAX_ENTRIES_PER_TEAM;

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
pub(super) struct Known {
    pub(super) seq: u64,
    pub(super) entries: BTreeMap<String, CatalogEntry>,
}

/// What the sync thread shares with the daemon.
#[derive(Default)]
pub struct CatalogShared {
    pub(super) known: Mutex<Known>,
    pub(super) synced: AtomicBool,
    pub(super) snapshots: AtomicU64,
    pub(super) snapshot_ms: AtomicU64,
    pub(super) updates: AtomicU64,
    pub(super) resyncs: AtomicU64,
    pub(super) refused: AtomicU64,
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
    pub(super) fn accept(&self, seq: u64, entries: Vec<CatalogEntry>) -> (u64, usize) {
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
    pub(super) fn apply(&self, update: Update) -> bool {
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

    pub(super) fn save(&self) {
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
