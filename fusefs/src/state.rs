//! The state file: runtime changes made through the mount (directories made with mkdir, trigger
//! files moved with mv, chmod/chown) kept as JSON in `STATE_DIR/fs-state.json`, so that they
//! survive a reload and a restart. Written atomically (temporary file, fsync, rename).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::tree::Attrs;
use crate::FsError;

/// File name of the state file inside the state directory.
pub const STATE_FILE: &str = "fs-state.json";
/// A state file larger than this is refused rather than read into memory.
const MAX_STATE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct State {
    /// Directories made or changed at runtime, by path relative to the mount.
    #[serde(default)]
    pub dirs: BTreeMap<String, Attrs>,
    /// Runtime changes of trigger files, by trigger key (the `file` of the spec).
    #[serde(default)]
    pub triggers: BTreeMap<String, TriggerState>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TriggerState {
    /// Where the file was moved to (absent: at its configured path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Mode and owner set at runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attrs: Option<AttrOverride>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttrOverride {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// What the config said when the change was made.
    pub config: Attrs,
}

pub(crate) struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub(crate) fn new(state_dir: &Path) -> Self {
        StateFile {
            path: state_dir.join(STATE_FILE),
        }
    }

    /// Reads the state; a missing file is an empty state.
    pub(crate) fn load(&self) -> Result<State, FsError> {
        let err = |source| FsError::State {
            path: self.path.clone(),
            source,
        };
        let bytes = match fs::metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(err(e)),
            Ok(meta) if meta.len() > MAX_STATE_BYTES => {
                return Err(err(std::io::Error::other("state file too large")))
            }
            Ok(_) => fs::read(&self.path).map_err(err)?,
        };
        serde_json::from_slice(&bytes).map_err(|e| err(std::io::Error::other(e)))
    }

    pub(crate) fn save(&self, state: &State) -> Result<(), FsError> {
        let err = |source| FsError::State {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
        let json = serde_json::to_vec_pretty(state).map_err(|e| err(std::io::Error::other(e)))?;
        // Root's alone (0600): it names users' trigger files and their modes.
        triggerd_support::write_atomically(&self.path, &json).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = StateFile::new(dir.path());
        assert_eq!(file.load().expect("missing is empty"), State::default());
        let mut state = State::default();
        let attrs = Attrs {
            mode: 0o700,
            uid: 1,
            gid: 2,
        };
        state.dirs.insert("a/b".into(), attrs);
        state.triggers.insert(
            "x/y".into(),
            TriggerState {
                path: Some("a/b/y".into()),
                attrs: Some(AttrOverride {
                    mode: 0o600,
                    uid: 3,
                    gid: 4,
                    config: attrs,
                }),
            },
        );
        file.save(&state).expect("save");
        assert_eq!(file.load().expect("load"), state);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(STATE_FILE), b"{\"dirs\": 3").expect("write");
        assert!(StateFile::new(dir.path()).load().is_err());
    }
}
