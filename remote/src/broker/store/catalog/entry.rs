//! What the trigger catalog is made of, as stored, snapshotted, pushed and cached: an entry
//! (a trigger or an empty directory, or a tombstone), a change, and the checks every entry
//! passes at the broker and again on each host (a catalog arrives from the network).

use serde::{Deserialize, Serialize};

use super::super::{valid_name, StoreError};

/// Longest catalog path in bytes (each component at most 255, as in a file system).
pub const MAX_PATH: usize = 1024;
/// Most entries (live ones, directories included) one team's catalog may hold.
pub const MAX_ENTRIES: usize = 100_000;

/// One catalog entry, as stored, snapshotted and pushed (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// Relative path below a host's mount, components separated by `/`.
    pub path: String,
    /// An (otherwise empty) directory rather than a trigger.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dir: bool,
    /// The service a write is sent to (empty for a directory).
    #[serde(default)]
    pub service: String,
    /// The plugin the worker runs (the service's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// The deadline each write carries, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// `write` (one message per write) or `line`.
    #[serde(default = "default_split")]
    pub split: String,
    /// The file's permission bits.
    #[serde(default = "default_mode")]
    pub mode: u32,
    /// The group owning the file on each host (resolved there; unknown: root's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// A tombstone: the path was removed (or moved away) at `seq`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// The change that last touched it.
    #[serde(default)]
    pub seq: u64,
}

fn default_split() -> String {
    "write".into()
}

fn default_mode() -> u32 {
    0o620
}

impl CatalogEntry {
    /// A trigger at `path` sent to `service`, with the defaults.
    pub fn trigger(path: &str, service: &str) -> CatalogEntry {
        CatalogEntry {
            path: path.to_string(),
            dir: false,
            service: service.to_string(),
            plugin: None,
            timeout_ms: None,
            split: default_split(),
            mode: default_mode(),
            group: None,
            deleted: false,
            seq: 0,
        }
    }

    /// Checks everything a host will rely on; the same check runs on each host, because a
    /// catalog arrives from the network.
    pub fn validate(&self) -> Result<(), StoreError> {
        valid_path(&self.path)?;
        if !self.dir && !self.deleted {
            valid_name(&self.service)?;
        }
        if let Some(plugin) = &self.plugin {
            valid_name(plugin)?;
        }
        if let Some(group) = &self.group {
            valid_name(group)?;
        }
        if self.split != "write" && self.split != "line" {
            return Err(StoreError::Invalid(format!(
                "split {:?}: use write or line",
                self.split
            )));
        }
        if self.mode & !0o777 != 0 {
            return Err(StoreError::Invalid(format!(
                "mode {:o}: above 0777",
                self.mode
            )));
        }
        Ok(())
    }
}

/// A relative path of 1..=1024 bytes whose components are 1..=255 bytes, not `.` or `..`,
/// without NUL or control characters.
pub fn valid_path(path: &str) -> Result<(), StoreError> {
    let bad = |why: &str| Err(StoreError::Invalid(format!("path {path:?}: {why}")));
    if path.is_empty() || path.len() > MAX_PATH {
        return bad("must be 1-1024 bytes");
    }
    if path.bytes().any(|b| b.is_ascii_control()) {
        return bad("control characters");
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.len() > 255 {
            return bad("each component must be 1-255 bytes, not . or ..");
        }
    }
    Ok(())
}

/// What one change does; the unit the admin verbs and hosts' change requests share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum CatalogChange {
    /// Adds (or replaces) a trigger.
    Add { entry: CatalogEntry },
    /// Adds an empty directory.
    Mkdir { path: String },
    /// Moves a trigger or a directory (with everything below it).
    Mv { from: String, to: String },
    /// Changes a trigger's permission bits.
    Chmod { path: String, mode: u32 },
    /// Removes a trigger, or a directory with everything below it.
    Remove { path: String },
}
