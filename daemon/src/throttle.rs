//! Rate-limited logging: a `Throttle` says yes at most once a second, so input that is
//! refused in bulk costs one log line a second, never a line per refusal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[derive(Debug)]
pub struct Throttle {
    epoch: Instant,
    /// Second (since `epoch`) of the last yes; `u64::MAX` before the first.
    last: AtomicU64,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            last: AtomicU64::new(u64::MAX),
        }
    }
}

impl Throttle {
    /// True for the first call in each second.
    pub fn ready(&self) -> bool {
        let second = self.epoch.elapsed().as_secs();
        self.last.swap(second, Ordering::Relaxed) != second
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn says_yes_once_per_second() {
        let t = super::Throttle::default();
        assert!(t.ready());
        assert!(!t.ready());
    }
}
