//! The timer source (`[[timer]]`): every timer sits in one heap ordered by due time, so ten
//! thousand timers cost one wake-up per distinct instant. The last scheduled fire and the fire
//! count of each timer persist in `state_dir/timers.json`, which is what catch-up after
//! downtime, `max_fires` and `once` rely on across restarts.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use triggerd_watch::EventMask;

use super::{BoxFuture, EventSource, SourceContext};
use crate::config::{Catchup, Rule, TimerTrigger, Trigger};
use crate::schedule::{jitter_for, Compiled};

/// What is remembered of one timer across restarts.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct TimerRecord {
    /// The scheduled instant of the last fire, seconds since the Unix epoch.
    pub last: Option<f64>,
    pub fires: u64,
}

/// The scheduled instants a timer missed between `last` and `now` that it should still fire,
/// oldest first, according to `mode` (missed fires older than `window` are never caught up).
pub fn missed_fires(
    schedule: &Compiled,
    last: SystemTime,
    now: SystemTime,
    mode: Catchup,
    window: Duration,
) -> Vec<SystemTime> {
    if mode == Catchup::Skip {
        return Vec::new();
    }
    let horizon = now.checked_sub(window).unwrap_or(UNIX_EPOCH).max(last);
    let mut missed = Vec::new();
    // The window's edge is inclusive.
    let mut cursor = horizon
        .checked_sub(Duration::from_nanos(1))
        .unwrap_or(horizon);
    // Bounded: a tiny period over a long window must not stall the daemon.
    while let Some(t) = schedule.next_after(cursor) {
        if t > now || missed.len() >= 100_000 {
            break;
        }
        if t > last {
            missed.push(t);
        }
        cursor = t;
    }
    if mode == Catchup::Once {
        missed.drain(..missed.len().saturating_sub(1));
    }
    missed
}

struct Armed {
    rule: String,
    timer: TimerTrigger,
    schedule: Compiled,
    /// The scheduled instant of the next fire (without jitter).
    next: Option<SystemTime>,
    /// Caught-up instants still to fire, oldest first.
    backlog: Vec<SystemTime>,
}

impl Armed {
    fn due(&self) -> Option<SystemTime> {
        let jitter = self
            .timer
            .jitter
            .map_or(Duration::ZERO, |j| jitter_for(&self.rule, j));
        match self.backlog.first() {
            Some(_) => Some(UNIX_EPOCH),
            None => self.next.map(|t| t + jitter),
        }
    }
}

#[derive(Default)]
pub struct TimerSource;

impl EventSource for TimerSource {
    fn kind(&self) -> &'static str {
        "timer"
    }

    fn describe(&self) -> &'static str {
        "timers: every (phase-locked) and cron (time zones), with catch-up after downtime"
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture {
        Box::pin(run(ctx))
    }
}

async fn run(mut ctx: SourceContext) {
    let file = ctx.state_dir.join("timers.json");
    let mut records = load(&file);
    let mut armed: HashMap<String, Armed> = HashMap::new();
    let mut heap: BinaryHeap<Reverse<(SystemTime, String)>> = BinaryHeap::new();
    // Deliveries run in their own tasks, at most one per timer: a rule whose full queue says
    // `block` holds back its own timer, never the others.
    let mut deliveries: JoinSet<String> = JoinSet::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut first = true;
    loop {
        if first || ctx.bindings.has_changed().unwrap_or(false) {
            let bindings = ctx.bindings.borrow_and_update().clone();
            rearm(&bindings.rules, &mut armed, &records, first);
            first = false;
            heap = armed
                .values()
                .filter_map(|a| a.due().map(|d| Reverse((d, a.rule.clone()))))
                .collect();
            for a in armed.values() {
                ctx.emitter.set_next_fire(&a.rule, a.due());
            }
            ctx.applied(bindings.generation);
        }
        let wait = heap.peek().map(|Reverse((due, _))| {
            due.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        });
        tokio::select! {
            _ = sleep_or_forever(wait) => {}
            Some(done) = deliveries.join_next() => {
                // After a burst, reap every finished delivery in one go.
                let finished = std::iter::once(done).chain(std::iter::from_fn(|| deliveries.try_join_next()));
                for name in finished.flatten() {
                    in_flight.remove(&name);
                    // Caught-up fires held back by that delivery are due again (a timer
                    // without a backlog has its next tick in the heap already).
                    let held = armed.get(&name).filter(|a| !a.backlog.is_empty());
                    if let Some(due) = held.and_then(Armed::due) {
                        heap.push(Reverse((due, name)));
                    }
                }
                continue;
            }
            changed = ctx.bindings.changed() => {
                if changed.is_err() {
                    return;
                }
                // Re-read at the top of the loop.
                ctx.bindings.mark_changed();
                continue;
            }
            _ = ctx.shutdown.changed() => return,
        }
        let now = SystemTime::now();
        let mut fired_any = false;
        let mut lateness = Lateness::default();
        while let Some(Reverse((due, _))) = heap.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((due, name))) = heap.pop() else {
                break;
            };
            let Some(timer) = armed.get_mut(&name) else {
                continue;
            };
            // A stale heap entry (the timer was re-armed since) is skipped.
            if timer.due() != Some(due) {
                continue;
            }
            let record = records.entry(name.clone()).or_default();
            if in_flight.contains(&name) {
                if timer.backlog.is_empty() {
                    // The rule is still blocked on its previous fire: like a producer that
                    // blocks, the timer does not produce this tick. Caught-up fires wait for
                    // the delivery to finish instead (re-queued by `join_next` above).
                    tracing::debug!(rule = %name, "timer tick not fired: the rule's queue is full and blocks");
                    timer.next = next_fire(timer, now, record);
                    if let Some(next_due) = timer.due() {
                        heap.push(Reverse((next_due, name.clone())));
                    }
                    ctx.emitter.set_next_fire(&name, timer.due());
                }
                continue;
            }
            let scheduled = if timer.backlog.is_empty() {
                timer.next.take()
            } else {
                Some(timer.backlog.remove(0))
            };
            let Some(scheduled) = scheduled else { continue };
            record.last = Some(seconds(scheduled));
            record.fires += 1;
            fired_any = true;
            let mut event =
                ctx.emitter
                    .event(PathBuf::from(&name), EventMask::EMPTY, None, Vec::new());
            event.time = scheduled;
            if timer.backlog.is_empty() {
                lateness.handed_over(scheduled);
            }
            in_flight.insert(name.clone());
            let emitter = ctx.emitter.clone();
            let rule = name.clone();
            deliveries.spawn(async move {
                emitter.fire(&rule, event).await;
                rule
            });
            if timer.next.is_none() {
                timer.next = next_fire(timer, scheduled.max(now), record);
            }
            // With a backlog left, the timer is due again once this delivery is done.
            if timer.backlog.is_empty() {
                if let Some(next_due) = timer.due() {
                    heap.push(Reverse((next_due, name.clone())));
                }
            }
            ctx.emitter.set_next_fire(&name, timer.due());
        }
        if fired_any {
            save(&file, &records);
            lateness.log();
        }
    }
}

/// How late the scheduled fires of one pass were handed over for delivery (caught-up fires
/// are late by design and not counted): one debug line per pass, for the timer benchmark.
#[derive(Default)]
struct Lateness {
    fires: usize,
    first: Option<Duration>,
    last: Duration,
}

impl Lateness {
    fn handed_over(&mut self, scheduled: SystemTime) {
        let late = SystemTime::now()
            .duration_since(scheduled)
            .unwrap_or(Duration::ZERO);
        self.fires += 1;
        self.first.get_or_insert(late);
        self.last = late;
    }

    fn log(&self) {
        if let Some(first) = self.first {
            tracing::debug!(
                fires = self.fires,
                first_late_us = first.as_micros() as u64,
                last_late_us = self.last.as_micros() as u64,
                "timer pass"
            );
        }
    }
}

/// Arms timers for `rules`, keeping the schedule of those unchanged; on the first pass after
/// start, missed fires are queued according to each timer's `catchup`.
fn rearm(
    rules: &[Arc<Rule>],
    armed: &mut HashMap<String, Armed>,
    records: &BTreeMap<String, TimerRecord>,
    starting: bool,
) {
    let now = SystemTime::now();
    let mut next: HashMap<String, Armed> = HashMap::new();
    for rule in rules {
        let Trigger::Timer(timer) = &rule.def.trigger else {
            continue;
        };
        if let Some(existing) = armed.remove(&rule.name).filter(|a| a.timer == *timer) {
            next.insert(rule.name.clone(), existing);
            continue;
        }
        let schedule = Compiled::new(&timer.schedule, timer.start);
        let record = records.get(&rule.name).copied().unwrap_or_default();
        let mut armed_timer = Armed {
            rule: rule.name.clone(),
            timer: timer.clone(),
            schedule,
            next: None,
            backlog: Vec::new(),
        };
        if starting {
            if let Some(last) = record.last.map(from_seconds) {
                armed_timer.backlog = missed_fires(
                    &armed_timer.schedule,
                    last,
                    now,
                    timer.catchup,
                    timer.catchup_window,
                );
                if let Some(max) = timer.max_fires {
                    armed_timer
                        .backlog
                        .truncate(max.saturating_sub(record.fires) as usize);
                }
            }
        }
        let fires_after_backlog = TimerRecord {
            fires: record.fires + armed_timer.backlog.len() as u64,
            ..record
        };
        armed_timer.next = next_fire(&armed_timer, now, &fires_after_backlog);
        if !armed_timer.backlog.is_empty() {
            tracing::info!(rule = %rule.name, missed = armed_timer.backlog.len(), "catching up fires missed while stopped");
        }
        next.insert(rule.name.clone(), armed_timer);
    }
    *armed = next;
}

/// The next scheduled instant after `after`, within `start`/`stop` and `max_fires`.
fn next_fire(timer: &Armed, after: SystemTime, record: &TimerRecord) -> Option<SystemTime> {
    if timer.timer.max_fires.is_some_and(|max| record.fires >= max) {
        return None;
    }
    let from = match timer.timer.start {
        Some(start) if start > after => start - Duration::from_nanos(1),
        _ => after,
    };
    let next = timer.schedule.next_after(from)?;
    match timer.timer.stop {
        Some(stop) if next > stop => None,
        _ => Some(next),
    }
}

async fn sleep_or_forever(wait: Option<Duration>) {
    match wait {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn from_seconds(s: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(s.max(0.0))
}

fn load(file: &Path) -> BTreeMap<String, TimerRecord> {
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %file.display(), "timer state unreadable, no catch-up: {e}");
            BTreeMap::new()
        }),
        Err(_) => BTreeMap::new(),
    }
}

fn save(file: &Path, records: &BTreeMap<String, TimerRecord>) {
    let written = serde_json::to_vec(records)
        .map_err(std::io::Error::other)
        .and_then(|bytes| triggerd_support::write_atomically(file, &bytes));
    if let Err(e) = written {
        tracing::warn!(file = %file.display(), "cannot save timer state: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Schedule;

    fn every(minutes: u64) -> Compiled {
        Compiled::new(&Schedule::Every(Duration::from_secs(minutes * 60)), None)
    }

    fn t(minutes: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + minutes * 60)
    }

    // The clock is a parameter: downtime from minute 5 to minute 65 of a 10-minute timer.
    #[test]
    fn catch_up_modes_after_downtime() {
        let s = every(10);
        let day = Duration::from_secs(86_400);
        assert!(missed_fires(&s, t(5), t(65), Catchup::Skip, day).is_empty());
        assert_eq!(
            missed_fires(&s, t(5), t(65), Catchup::Once, day),
            vec![t(60)]
        );
        assert_eq!(
            missed_fires(&s, t(5), t(65), Catchup::All, day),
            vec![t(10), t(20), t(30), t(40), t(50), t(60)]
        );
        // Only what falls in the window is caught up.
        assert_eq!(
            missed_fires(&s, t(5), t(65), Catchup::All, Duration::from_secs(25 * 60)),
            vec![t(40), t(50), t(60)]
        );
        // Nothing missed.
        assert!(missed_fires(&s, t(61), t(65), Catchup::All, day).is_empty());
    }
}
