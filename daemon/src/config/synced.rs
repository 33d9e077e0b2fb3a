//! Synced triggers (`[broker] sync_triggers = true`): the entries of this host's team's
//! trigger catalog become `[[trigger]]` rules with a `send` action, next to the local ones,
//! so they share the trigger tree, the spool, the counters and `status` with them. The
//! catalog comes from the network (or from a cache another process could have written), so
//! every entry is checked again here; a bad one is skipped and counted.
//!
//! Collisions: **local wins**. A synced entry whose path is a local trigger's, or lies below
//! one, or has a local trigger below it, is left out (logged, counted in `status`), so a
//! broker can never take over a file this host's own config defines.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use triggerd_remote::broker::CatalogEntry;

use super::{Action, Config, FileTrigger, Policy, Rule, RuleDef, SendAction, Split, Trigger};

/// The prefix of a synced rule's name; the rest is its path.
pub const SYNCED_PREFIX: &str = "catalog:";
/// Where synced rules say they come from (`status`, messages).
pub const SYNCED_ORIGIN: &str = "<broker catalog>";

/// What merging a catalog left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged {
    /// Paths a local trigger holds (local wins).
    pub collisions: Vec<String>,
    /// Entries refused as malformed.
    pub invalid: usize,
}

fn file_trigger(entry: &CatalogEntry) -> Option<FileTrigger> {
    triggerd_fusefs::check_trigger_path(&entry.path).ok()?;
    let split = match entry.split.as_str() {
        "write" => Split::Write,
        "line" => Split::Line,
        _ => return None,
    };
    let gid = entry
        .group
        .as_deref()
        .and_then(|g| nix::unistd::Group::from_name(g).ok().flatten())
        .map_or(0, |g| g.gid.as_raw());
    Some(FileTrigger {
        file: entry.path.clone(),
        split,
        mode: entry.mode & 0o777,
        uid: 0,
        gid,
        max_open: 64,
        partial_bytes: 16 << 20,
        queue_wait: Duration::from_secs(1),
    })
}

impl Rule {
    /// Whether the rule comes from the broker's catalog.
    pub fn is_synced(&self) -> bool {
        self.origin.as_deref() == Some(Path::new(SYNCED_ORIGIN))
    }
}

impl Config {
    /// Replaces the synced rules with `entries` (live triggers; directories and tombstones
    /// are ignored here), local triggers winning every collision.
    pub fn merge_catalog(&mut self, entries: &[CatalogEntry]) -> Merged {
        self.rules.retain(|r| !r.is_synced());
        let local: HashSet<&str> = self
            .rules
            .iter()
            .filter_map(|r| match &r.def.trigger {
                Trigger::File(f) => Some(f.file.as_str()),
                _ => None,
            })
            .collect();
        let local_dirs: HashSet<&str> = local
            .iter()
            .flat_map(|f| f.match_indices('/').map(|(i, _)| &f[..i]))
            .collect();
        let names: HashSet<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
        let origin: Arc<Path> = Arc::from(Path::new(SYNCED_ORIGIN));
        let policy = Arc::new(Policy::default());
        let mut merged = Merged::default();
        let mut synced = Vec::new();
        for entry in entries.iter().filter(|e| !e.dir && !e.deleted) {
            let name = format!("{SYNCED_PREFIX}{}", entry.path);
            let Some(trigger) = file_trigger(entry).filter(|_| entry.validate().is_ok()) else {
                merged.invalid += 1;
                continue;
            };
            // Set lookups, O(depth): the path itself or one of its ancestors is a local
            // trigger, or a local trigger lies below it (it is a local directory).
            let path = entry.path.as_str();
            let clash = local_dirs.contains(path)
                || local.contains(path)
                || path
                    .match_indices('/')
                    .any(|(i, _)| local.contains(&path[..i]))
                || names.contains(name.as_str());
            if clash {
                merged.collisions.push(entry.path.clone());
                continue;
            }
            synced.push(Arc::new(Rule {
                name,
                line: 0,
                origin: Some(Arc::clone(&origin)),
                def: RuleDef {
                    trigger: Trigger::File(trigger),
                    action: Action::Send(SendAction {
                        service: entry.service.clone(),
                        plugin: entry.plugin.clone(),
                    }),
                    policy: Arc::clone(&policy),
                },
            }));
        }
        self.rules.extend(synced);
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_triggers_win_and_bad_entries_are_skipped() {
        let text = "[broker]\nendpoint = \"ipc:///tmp/x\"\nsync_triggers = true\n\n\
                    [[trigger]]\nfile = \"weather/local\"\nexec = [\"/bin/true\"]\n";
        let mut config = super::super::parse(Path::new("t.conf"), text).expect("config");
        let entries = vec![
            CatalogEntry::trigger("weather/rpi/station1", "demo"),
            CatalogEntry::trigger("weather/local", "demo"),
            CatalogEntry::trigger("weather/local/below", "demo"),
            CatalogEntry::trigger("weather", "demo"),
            CatalogEntry::trigger("../escape", "demo"),
        ];
        let merged = config.merge_catalog(&entries);
        assert_eq!(
            merged.collisions,
            ["weather/local", "weather/local/below", "weather"]
        );
        assert_eq!(merged.invalid, 1);
        let synced: Vec<&str> = config
            .rules
            .iter()
            .filter(|r| r.is_synced())
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(synced, ["catalog:weather/rpi/station1"]);
        // Merging again replaces, never duplicates.
        config.merge_catalog(&entries[..1]);
        assert_eq!(config.rules.len(), 2);
    }
}
