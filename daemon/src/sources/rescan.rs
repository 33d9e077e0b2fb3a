//! `on_overflow = "rescan"`: a watch that asks for it keeps the last known state of its tree
//! (size, mtime, ctime per file), taken when the rule is bound; after a queue overflow it walks
//! the tree again and fires for every file that is new or whose size or mtime changed since,
//! counted as `rescanned`. A file whose ctime is after the previous walk began is fired too
//! (changed while that walk ran, its event may be lost with the walk holding its new state),
//! so nothing changed during an overflow goes unreported; a file may be reported twice,
//! never not at all.
//!
//! Only rules that ask for it hold state (`tree::Snapshot`, bounded in files: past the bound
//! a file is reported at every rescan: more runs, never a loss). Walks run on the
//! blocking pool, one at a time per rule; an overflow during a walk asks for one more.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use triggerd_support::lock;
use triggerd_watch::EventMask;

use super::tree::{Change, Snapshot};
use super::Emitter;
use crate::config::{OnOverflow, Rule, Trigger};

/// How far before a walk's start a change still counts as "during the walk": file times come
/// from the kernel's coarse clock, which lags the one `SystemTime::now` reads.
const CLOCK_SLACK: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Tracked {
    rule: Arc<Rule>,
    /// `None` until the first walk finished.
    snapshot: Mutex<Option<Snapshot>>,
    walking: AtomicBool,
    again: AtomicBool,
    /// The rule was unbound: a walk in flight ends without firing.
    gone: AtomicBool,
}

/// The watches that rescan, by rule name.
#[derive(Debug, Clone, Default)]
pub(super) struct Rescans {
    tracked: Arc<Mutex<HashMap<String, Arc<Tracked>>>>,
}

impl Rescans {
    /// Follows the bound rules: a new or changed rescan rule takes its first snapshot, a rule
    /// that no longer rescans drops its state.
    pub fn bind(&self, rules: &[Arc<Rule>], emitter: &Emitter) {
        let mut tracked = lock(&self.tracked);
        let mut keep = HashMap::new();
        for rule in rules {
            let Trigger::Watch(w) = &rule.def.trigger else {
                continue;
            };
            if w.on_overflow != OnOverflow::Rescan {
                continue;
            }
            let entry = match tracked.remove(&rule.name) {
                Some(t) if t.rule.def == rule.def => t,
                old => {
                    if let Some(old) = old {
                        old.gone.store(true, Ordering::Relaxed);
                    }
                    let t = Arc::new(Tracked {
                        rule: Arc::clone(rule),
                        snapshot: Mutex::new(None),
                        walking: AtomicBool::new(false),
                        again: AtomicBool::new(false),
                        gone: AtomicBool::new(false),
                    });
                    walk_soon(&t, emitter.clone());
                    t
                }
            };
            keep.insert(rule.name.clone(), entry);
        }
        for old in tracked.values() {
            old.gone.store(true, Ordering::Relaxed);
        }
        *tracked = keep;
    }

    /// A queue overflowed for rule `name`: rescan it if it asked for that.
    pub fn overflowed(&self, name: &str, emitter: &Emitter) {
        if let Some(t) = lock(&self.tracked).get(name) {
            walk_soon(t, emitter.clone());
        }
    }
}

/// Starts a walk of `t`'s tree, or asks the running one for another after it.
fn walk_soon(t: &Arc<Tracked>, emitter: Emitter) {
    t.again.store(true, Ordering::Release);
    if t.walking.swap(true, Ordering::AcqRel) {
        return;
    }
    let t = Arc::clone(t);
    tokio::spawn(async move {
        loop {
            while t.again.swap(false, Ordering::AcqRel) {
                if t.gone.load(Ordering::Relaxed) {
                    break;
                }
                let walker = Arc::clone(&t);
                match tokio::task::spawn_blocking(move || walker.walk()).await {
                    Ok(changed) => fire(&t, changed, &emitter).await,
                    Err(e) => tracing::error!(rule = %t.rule.name, "rescan failed: {e}"),
                }
            }
            t.walking.store(false, Ordering::Release);
            // An overflow that came after the loop's last look but before `walking` dropped
            // found a walk running and left it to this one.
            if !t.again.load(Ordering::Acquire) || t.walking.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    });
}

/// Fires the rule once per changed file, as an event of the first kind the rule asks for
/// that a rescan can report, with the field `rescan=1`.
async fn fire(t: &Tracked, changed: Vec<PathBuf>, emitter: &Emitter) {
    let Trigger::Watch(w) = &t.rule.def.trigger else {
        return;
    };
    let kind = OnOverflow::KINDS
        .into_iter()
        .find(|k| w.events.contains(*k))
        .unwrap_or(EventMask::CLOSE_WRITE);
    if !changed.is_empty() {
        tracing::info!(rule = %t.rule.name, changed = changed.len(), "rescanned after a queue overflow");
    }
    let rule = emitter.rule(&t.rule.name);
    for path in changed {
        if t.gone.load(Ordering::Relaxed) {
            return;
        }
        let mut event = emitter.event(path, kind, None, Vec::new());
        event.fields.push(("rescan".into(), "1".into()));
        if let Some(rule) = &rule {
            rule.counters.rescanned.fetch_add(1, Ordering::Relaxed);
        }
        emitter.fire(&t.rule.name, event).await;
    }
}

impl Tracked {
    /// Walks the tree, keeps what it saw, and returns the files to report (none on the
    /// first walk: there is nothing to compare with).
    fn walk(&self) -> Vec<PathBuf> {
        let Trigger::Watch(w) = &self.rule.def.trigger else {
            return Vec::new();
        };
        let now = Snapshot::take(w);
        let mut snapshot = lock(&self.snapshot);
        let changed = match snapshot.as_ref() {
            None => Vec::new(),
            Some(old) => {
                let during = old.started - CLOCK_SLACK.as_nanos() as i128;
                let mut changed: Vec<PathBuf> = now
                    .changes(old)
                    .into_iter()
                    .filter(|(_, c)| matches!(c, Change::New | Change::Content))
                    .map(|(path, _)| path)
                    .collect();
                changed.extend(
                    now.files
                        .iter()
                        // Not already counted: same size and mtime as before.
                        .filter(|(path, &(size, mtime, ctime))| {
                            ctime >= during
                                && old
                                    .files
                                    .get(*path)
                                    .is_some_and(|o| o.0 == size && o.1 == mtime)
                        })
                        .map(|(path, _)| path.clone()),
                );
                changed
            }
        };
        *snapshot = Some(now);
        changed
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn tracked(dir: &Path) -> Tracked {
        let text = format!(
            "[[watch]]\nname = \"r\"\npath = \"{}\"\nevents = \"close_write\"\nrecursive = true\n\
             on_overflow = \"rescan\"\nexclude = [\"**/*.skip\"]\nexec = [\"/bin/true\"]\n",
            dir.display()
        );
        let config = crate::config::parse(Path::new("test.conf"), &text).unwrap();
        Tracked {
            rule: Arc::clone(&config.rules[0]),
            snapshot: Mutex::new(None),
            walking: AtomicBool::new(false),
            again: AtomicBool::new(false),
            gone: AtomicBool::new(false),
        }
    }

    #[test]
    fn a_rescan_reports_new_and_changed_files_and_those_changed_during_the_last_walk() {
        let dir = tempfile::tempdir().unwrap();
        let p = |rel: &str| dir.path().join(rel);
        std::fs::create_dir(p("sub")).unwrap();
        std::fs::write(p("old"), "1").unwrap();
        std::fs::write(p("sub/same"), "1").unwrap();
        let t = tracked(dir.path());
        // When the last walk started decides what counts as changed since it began: a start
        // in the future leaves only the comparison of states, one long ago takes every file.
        const FUTURE: i128 = i128::MAX / 2;
        let walked_at = |t: &Tracked, at: i128| lock(&t.snapshot).as_mut().unwrap().started = at;
        let sorted = |mut v: Vec<PathBuf>| {
            v.sort();
            v
        };
        assert!(t.walk().is_empty(), "the first walk only takes the state");
        walked_at(&t, FUTURE);
        std::fs::write(p("old"), "22").unwrap();
        std::fs::write(p("sub/new"), "x").unwrap();
        std::fs::write(p("sub/x.skip"), "x").unwrap();
        assert_eq!(sorted(t.walk()), [p("old"), p("sub/new")]);
        walked_at(&t, FUTURE);
        assert!(t.walk().is_empty(), "nothing changed since");
        walked_at(&t, 0);
        assert_eq!(
            sorted(t.walk()),
            [p("old"), p("sub/new"), p("sub/same")],
            "changed since the last walk began: reported again"
        );
    }
}
