//! Paused and disabled rules, kept by rule name in `state_dir/rules.json` so that they survive
//! a reload and a restart. Written atomically (temp file + rename); a missing or unreadable
//! file starts everything enabled and says so in the log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuleState {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Disabled>,
}

impl RuleState {
    /// Whether events are acted on.
    pub fn active(&self) -> bool {
        !self.paused && self.disabled.is_none()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Disabled {
    pub reason: String,
    /// Seconds since the Unix epoch.
    pub since: u64,
}

#[derive(Debug, Default)]
pub struct Lifecycle {
    file: Option<PathBuf>,
    states: Mutex<BTreeMap<String, RuleState>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot save rule states to {path}: {source}")]
pub struct SaveError {
    path: String,
    source: std::io::Error,
}

impl Lifecycle {
    /// Loads `dir/rules.json` (absent = all enabled); later changes are saved there.
    pub fn load(dir: &Path) -> Self {
        let file = dir.join("rules.json");
        let states = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %file.display(), "rule states unreadable, starting all enabled: {e}");
                BTreeMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(file = %file.display(), "rule states unreadable, starting all enabled: {e}");
                BTreeMap::new()
            }
        };
        Self {
            file: Some(file),
            states: Mutex::new(states),
        }
    }

    pub fn get(&self, rule: &str) -> RuleState {
        self.lock().get(rule).cloned().unwrap_or_default()
    }

    /// Changes one rule's state and saves the whole set.
    pub fn update(
        &self,
        rule: &str,
        change: impl FnOnce(&mut RuleState),
    ) -> Result<RuleState, SaveError> {
        let mut states = self.lock();
        let mut state = states.get(rule).cloned().unwrap_or_default();
        change(&mut state);
        if state == RuleState::default() {
            states.remove(rule);
        } else {
            states.insert(rule.to_string(), state.clone());
        }
        self.save(&states)?;
        Ok(state)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RuleState>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, states: &BTreeMap<String, RuleState>) -> Result<(), SaveError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let err = |source| SaveError {
            path: file.display().to_string(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(states).map_err(|e| err(std::io::Error::other(e)))?;
        triggerd_support::write_atomically(file, &bytes).map_err(err)
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
