//! The last answer each trigger file's writes got from a remote service (time, status, how
//! many failed), for `triggerctl status`. Keyed by trigger path; bounded: past
//! [`MAX_TRIGGERS`] paths the table starts again (a reload may have removed triggers whose
//! entries would otherwise stay).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use triggerd_support::lock;

/// Trigger paths remembered at once.
pub const MAX_TRIGGERS: usize = 200_000;

/// What `status` shows of a trigger's answers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Answer {
    /// Seconds since the Unix epoch of the last answer.
    pub last: u64,
    /// Its exit status.
    pub status: i32,
    pub answers: u64,
    /// Answers with a non-zero status.
    pub failures: u64,
}

#[derive(Default)]
pub struct Answers(Mutex<HashMap<String, Answer>>);

impl Answers {
    pub fn record(&self, trigger: &str, status: i32) {
        let mut map = lock(&self.0);
        if map.len() >= MAX_TRIGGERS && !map.contains_key(trigger) {
            map.clear();
        }
        let entry = map.entry(trigger.to_string()).or_default();
        entry.last = crate::dispatch::unix_now();
        entry.status = status;
        entry.answers += 1;
        entry.failures += u64::from(status != 0);
    }

    pub fn snapshot(&self) -> BTreeMap<String, Answer> {
        lock(&self.0)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
