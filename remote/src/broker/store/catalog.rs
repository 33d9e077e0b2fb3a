//! The trigger catalog: triggers (and directories) defined once at the broker, per team, that
//! appear as files in every subscribed host's mount. Every change (add, mkdir, mv, chmod,
//! remove) takes the next value of one store-wide sequence number and stamps the rows it
//! touches; a removed path stays as a tombstone row, so "every row with a sequence number
//! above N" is exactly the update a host at N is missing (the Clone pattern's updates). The
//! admin verbs write here; the running broker notices a new sequence number within 25 ms
//! and pushes the rows to its subscribers.

use rusqlite::{params, OptionalExtension, Row};

use super::{Store, StoreError};

mod entry;
pub use entry::{valid_path, CatalogChange, CatalogEntry, MAX_ENTRIES, MAX_PATH};

const COLUMNS: &str = "path, dir, service, plugin, timeout_ms, split, mode, grp, deleted, seq";

fn entry_of(row: &Row<'_>) -> rusqlite::Result<CatalogEntry> {
    Ok(CatalogEntry {
        path: row.get(0)?,
        dir: row.get(1)?,
        service: row.get(2)?,
        plugin: row.get(3)?,
        timeout_ms: row.get::<_, Option<i64>>(4)?.map(|t| t as u64),
        split: row.get(5)?,
        mode: row.get(6)?,
        group: row.get(7)?,
        deleted: row.get(8)?,
        seq: row.get::<_, i64>(9)? as u64,
    })
}

/// Whether `path` is `base` or below it.
fn within(path: &str, base: &str) -> bool {
    path == base || path.strip_prefix(base).is_some_and(|r| r.starts_with('/'))
}

impl Store {
    pub(super) fn create_catalog(&self) -> Result<(), StoreError> {
        self.conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS catalog (
                 team TEXT NOT NULL, path TEXT NOT NULL, dir INTEGER NOT NULL DEFAULT 0,
                 service TEXT NOT NULL DEFAULT '', plugin TEXT, timeout_ms INTEGER,
                 split TEXT NOT NULL DEFAULT 'write', mode INTEGER NOT NULL DEFAULT 400,
                 grp TEXT, deleted INTEGER NOT NULL DEFAULT 0, seq INTEGER NOT NULL,
                 PRIMARY KEY (team, path));
             CREATE INDEX IF NOT EXISTS catalog_by_seq ON catalog (seq);
             CREATE TABLE IF NOT EXISTS catalog_seq (id INTEGER PRIMARY KEY CHECK (id = 0),
                 seq INTEGER NOT NULL);
             INSERT OR IGNORE INTO catalog_seq (id, seq) VALUES (0, 0);",
        )?;
        Ok(())
    }

    /// The sequence number of the last change (0: none yet).
    pub fn catalog_seq(&self) -> Result<u64, StoreError> {
        let seq: i64 =
            self.conn
                .query_row("SELECT seq FROM catalog_seq WHERE id = 0", [], |r| r.get(0))?;
        Ok(seq as u64)
    }

    /// `team`'s live entries by path, and the sequence number they are complete up to.
    pub fn catalog_snapshot(&self, team: &str) -> Result<(u64, Vec<CatalogEntry>), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let seq = self.catalog_seq()?;
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM catalog WHERE team = ?1 AND deleted = 0 ORDER BY path"
        ))?;
        let rows = stmt.query_map(params![team], entry_of)?;
        let entries = rows.collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        tx.commit()?;
        Ok((seq, entries))
    }

    /// Every row (tombstones included) changed after `seq`, with its team, in change order.
    pub fn catalog_since(&self, seq: u64) -> Result<Vec<(String, CatalogEntry)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS}, team FROM catalog WHERE seq > ?1 ORDER BY seq, path"
        ))?;
        let rows = stmt.query_map(params![seq as i64], |r| Ok((r.get(10)?, entry_of(r)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn live_entry(&self, team: &str, path: &str) -> Result<Option<CatalogEntry>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM catalog WHERE team = ?1 AND path = ?2 AND deleted = 0"
                ),
                params![team, path],
                entry_of,
            )
            .optional()?)
    }

    /// `base` and every live entry below it; a range on the (team, path) key (`'0'` sorts
    /// right after `'/'`), so a bulk import stays linear.
    fn live_below(&self, team: &str, base: &str) -> Result<Vec<CatalogEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM catalog WHERE team = ?1 AND deleted = 0
               AND (path = ?2 OR (path >= ?2 || '/' AND path < ?2 || '0'))"
        ))?;
        let rows = stmt.query_map(params![team, base], entry_of)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn write_entry(&self, team: &str, e: &CatalogEntry, seq: u64) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO catalog
               (team, path, dir, service, plugin, timeout_ms, split, mode, grp, deleted, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                team,
                e.path,
                e.dir,
                e.service,
                e.plugin,
                e.timeout_ms.map(|t| t as i64),
                e.split,
                e.mode,
                e.group,
                e.deleted,
                seq as i64
            ],
        )?;
        Ok(())
    }

    fn bury(&self, team: &str, path: &str, seq: u64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE catalog SET deleted = 1, seq = ?3 WHERE team = ?1 AND path = ?2",
            params![team, path, seq as i64],
        )?;
        Ok(())
    }

    /// A trigger (not a directory) whose path is a proper prefix of `path`, if any: a file
    /// cannot have children.
    fn file_above(&self, team: &str, path: &str) -> Result<Option<String>, StoreError> {
        let mut prefix = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |s| s.1)
        {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if self.live_entry(team, &prefix)?.is_some_and(|e| !e.dir) {
                return Ok(Some(prefix));
            }
        }
        Ok(None)
    }

    /// Applies one change to `team`'s catalog in one transaction; returns its sequence number.
    pub fn catalog_apply(&self, team: &str, change: &CatalogChange) -> Result<u64, StoreError> {
        self.catalog_apply_all(team, std::slice::from_ref(change))
    }

    /// Applies `changes` in order as one change (one transaction, one sequence number): all
    /// or none. Bulk imports (a 10,000-trigger catalog) take one number, not 10,000.
    pub fn catalog_apply_all(
        &self,
        team: &str,
        changes: &[CatalogChange],
    ) -> Result<u64, StoreError> {
        self.require_team(team)?;
        let tx = self.conn.unchecked_transaction()?;
        let seq = self.catalog_seq()? + 1;
        let live: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM catalog WHERE team = ?1 AND deleted = 0",
            params![team],
            |r| r.get(0),
        )?;
        // Counted once, then kept up to date: a bulk import must not count per change.
        let mut live = live as usize;
        for change in changes {
            self.apply_one(team, change, seq, &mut live)?;
        }
        tx.execute(
            "UPDATE catalog_seq SET seq = ?1 WHERE id = 0",
            params![seq as i64],
        )?;
        tx.commit()?;
        Ok(seq)
    }

    fn apply_one(
        &self,
        team: &str,
        change: &CatalogChange,
        seq: u64,
        live: &mut usize,
    ) -> Result<(), StoreError> {
        let refuse = |why: String| Err(StoreError::Invalid(why));
        let new_path = match change {
            CatalogChange::Add { entry } => Some(entry.path.as_str()),
            CatalogChange::Mkdir { path } => Some(path.as_str()),
            _ => None,
        };
        if let Some(path) = new_path {
            if self.live_entry(team, path)?.is_none() {
                if *live >= MAX_ENTRIES {
                    return refuse(format!(
                        "team {team}: the catalog holds {MAX_ENTRIES} entries"
                    ));
                }
                *live += 1;
            }
        }
        match change {
            CatalogChange::Add { entry } => {
                let entry = CatalogEntry {
                    dir: false,
                    deleted: false,
                    ..entry.clone()
                };
                entry.validate()?;
                if let Some(file) = self.file_above(team, &entry.path)? {
                    return refuse(format!("{file} is a trigger, not a directory"));
                }
                if self.live_below(team, &entry.path)?.len() > 1
                    || self.live_entry(team, &entry.path)?.is_some_and(|e| e.dir)
                {
                    return refuse(format!("{} is a directory", entry.path));
                }
                self.write_entry(team, &entry, seq)?;
            }
            CatalogChange::Mkdir { path } => {
                valid_path(path)?;
                if let Some(file) = self.file_above(team, path)? {
                    return refuse(format!("{file} is a trigger, not a directory"));
                }
                if self.live_entry(team, path)?.is_some() {
                    return Err(StoreError::Exists(path.clone()));
                }
                let entry = CatalogEntry {
                    dir: true,
                    service: String::new(),
                    ..CatalogEntry::trigger(path, "")
                };
                self.write_entry(team, &entry, seq)?;
            }
            CatalogChange::Mv { from, to } => {
                valid_path(to)?;
                let moving = self.live_below(team, from)?;
                if moving.is_empty() {
                    return refuse(format!("no entry {from}"));
                }
                if within(to, from) {
                    return refuse(format!("{to} is inside {from}"));
                }
                if !self.live_below(team, to)?.is_empty() {
                    return Err(StoreError::Exists(to.clone()));
                }
                if let Some(file) = self.file_above(team, to)? {
                    return refuse(format!("{file} is a trigger, not a directory"));
                }
                for entry in moving {
                    self.bury(team, &entry.path, seq)?;
                    let path = format!("{to}{}", &entry.path[from.len()..]);
                    valid_path(&path)?;
                    self.write_entry(team, &CatalogEntry { path, ..entry }, seq)?;
                }
            }
            CatalogChange::Chmod { path, mode } => {
                let Some(entry) = self.live_entry(team, path)?.filter(|e| !e.dir) else {
                    return refuse(format!("no trigger {path}"));
                };
                let entry = CatalogEntry {
                    mode: *mode,
                    ..entry
                };
                entry.validate()?;
                self.write_entry(team, &entry, seq)?;
            }
            CatalogChange::Remove { path } => {
                let gone = self.live_below(team, path)?;
                if gone.is_empty() {
                    return refuse(format!("no entry {path}"));
                }
                *live = live.saturating_sub(gone.len());
                for entry in gone {
                    self.bury(team, &entry.path, seq)?;
                }
            }
        }
        Ok(())
    }

    /// Whether identity `name` may change its team's catalog (`identity add --catalog-admin`).
    pub fn is_catalog_admin(&self, name: &str) -> Result<bool, StoreError> {
        let admin: Option<bool> = self
            .conn
            .query_row(
                "SELECT catalog_admin FROM identities WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?;
        Ok(admin.unwrap_or(false))
    }

    /// Grants or takes back catalog administration.
    pub fn set_catalog_admin(&self, name: &str, admin: bool) -> Result<(), StoreError> {
        let changed = self.conn.execute(
            "UPDATE identities SET catalog_admin = ?2 WHERE name = ?1",
            params![name, admin],
        )?;
        match changed {
            0 => Err(StoreError::Invalid(format!("no identity named {name:?}"))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::store::DEFAULT_TEAM;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.db")).expect("open");
        (dir, store)
    }

    #[test]
    fn changes_take_sequence_numbers_and_leave_tombstones() {
        let (_dir, store) = store();
        let t = DEFAULT_TEAM;
        let add = |p: &str| CatalogChange::Add {
            entry: CatalogEntry::trigger(p, "demo"),
        };
        assert_eq!(
            store
                .catalog_apply(t, &add("weather/rpi/station1"))
                .expect("add"),
            1
        );
        assert_eq!(
            store
                .catalog_apply(t, &add("weather/rpi/station2"))
                .expect("add"),
            2
        );
        let mv = CatalogChange::Mv {
            from: "weather/rpi".into(),
            to: "weather/pi".into(),
        };
        assert_eq!(store.catalog_apply(t, &mv).expect("mv"), 3);
        let (seq, live) = store.catalog_snapshot(t).expect("snapshot");
        let paths: Vec<&str> = live.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            (seq, paths),
            (3, vec!["weather/pi/station1", "weather/pi/station2"])
        );
        let since = store.catalog_since(2).expect("since");
        assert_eq!(
            since.len(),
            4,
            "two tombstones and two new paths: {since:?}"
        );
        assert_eq!(since.iter().filter(|(_, e)| e.deleted).count(), 2);
        // A trigger cannot hold children, bad paths are refused, nothing is numbered for them.
        assert!(store
            .catalog_apply(t, &add("weather/pi/station1/x"))
            .is_err());
        assert!(store.catalog_apply(t, &add("../etc")).is_err());
        assert!(store.catalog_apply(t, &add("a//b")).is_err());
        assert_eq!(store.catalog_seq().expect("seq"), 3);
        let chmod = CatalogChange::Chmod {
            path: "weather/pi/station1".into(),
            mode: 0o600,
        };
        store.catalog_apply(t, &chmod).expect("chmod");
        let remove = CatalogChange::Remove {
            path: "weather".into(),
        };
        assert_eq!(store.catalog_apply(t, &remove).expect("remove"), 5);
        assert!(store.catalog_snapshot(t).expect("snapshot").1.is_empty());
        assert!(store
            .catalog_snapshot("other")
            .expect("snapshot")
            .1
            .is_empty());
    }
}
