//! One provider's supervisor: starts the process, says `init` and `add`s the active rules,
//! turns its `fire` lines into events and `disable` into a disabled rule, keeps it in step
//! with the rules it should serve (`add`/`remove` as they change), and restarts it with
//! back-off when it exits. Everything a provider says is bounded and counted.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use triggerd_watch::EventMask;

use super::process::{Incoming, LineCounters, Process, ProcessError};
use super::protocol::{self, FromProvider, ToProvider};
use super::Providers;
use crate::config::ProviderSettings;
use crate::sources::Emitter;
use crate::throttle::Throttle;

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A provider that ran this long before exiting starts again after the shortest back-off.
const STABLE: Duration = Duration::from_secs(10);
/// How long a provider gets between `shutdown` and the kill of its process group.
const GRACE: Duration = Duration::from_secs(2);
/// Event ids remembered per rule for de-duplication (at most 256 bytes each).
const RECENT_IDS: usize = 1024;

/// What a provider should be doing: its settings and the rules it serves now.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub settings: ProviderSettings,
    /// Active rules and their params.
    pub rules: BTreeMap<String, serde_json::Value>,
    /// Rules bound to it, active or not (for status).
    pub bound: usize,
}

/// `triggerctl providers`, one row.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProviderStatus {
    /// `running`, `starting`, `restarting in …: why`, `idle (no rules)`.
    pub state: String,
    pub pid: Option<u32>,
    pub restarts: u64,
    /// Rules bound to it, and how many of them it serves now (not paused or disabled).
    pub rules: usize,
    pub active: usize,
    pub fires: u64,
    /// Lines refused: malformed, past a bound, too long, or for a rule it does not serve.
    pub refused: u64,
    pub duplicates: u64,
    pub last_error: Option<String>,
}

impl ProviderStatus {
    pub fn idle() -> Self {
        Self {
            state: "idle (no rules)".into(),
            ..Self::default()
        }
    }
}

pub struct Supervisor {
    name: String,
    emitter: Emitter,
    status: Providers,
    state_dir: PathBuf,
    counters: Arc<LineCounters>,
    recent: HashMap<String, RecentIds>,
    log: Throttle,
}

/// Why the serving of one process ended.
enum End {
    /// Asked to stop (no rules left, or the daemon stops).
    Stop,
    /// Its settings changed: start the new one at once.
    Replace,
    /// It exited or failed on its own.
    Failed(String),
}

impl Supervisor {
    pub fn new(name: String, emitter: Emitter, status: Providers, daemon_state: PathBuf) -> Self {
        let state_dir = super::state_dir(&daemon_state, &name);
        Self {
            name,
            emitter,
            status,
            state_dir,
            counters: Arc::default(),
            recent: HashMap::new(),
            log: Throttle::default(),
        }
    }

    pub async fn run(
        mut self,
        mut orders: watch::Receiver<Option<Desired>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let Some(desired) = orders.borrow_and_update().clone() else {
                break;
            };
            let started = Instant::now();
            let why = match self.start(&desired) {
                Ok(process) => {
                    match self
                        .serve(process, desired, &mut orders, &mut shutdown)
                        .await
                    {
                        End::Stop => break,
                        End::Replace => {
                            backoff = MIN_BACKOFF;
                            continue;
                        }
                        End::Failed(why) => why,
                    }
                }
                Err(e) => e.to_string(),
            };
            if started.elapsed() >= STABLE {
                backoff = MIN_BACKOFF;
            }
            tracing::warn!(provider = %self.name, "{why}; starting again in {backoff:?}");
            self.update(|s| {
                s.restarts += 1;
                s.pid = None;
                s.state = format!(
                    "restarting in {}: {why}",
                    humantime::format_duration(backoff)
                );
                s.last_error = Some(why);
            });
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => break,
                changed = orders.changed() => if changed.is_err() { break },
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        // A provider no longer run is listed by the source (idle), not here.
    }

    fn start(&self, desired: &Desired) -> Result<Process, ProcessError> {
        self.update(|s| {
            s.state = "starting".into();
            s.rules = desired.bound;
        });
        prepare_state_dir(&self.state_dir, desired.settings.user);
        Process::start(
            &desired.settings,
            &self.state_dir,
            Arc::clone(&self.counters),
        )
    }

    /// Serves one process until it ends or is no longer wanted as it is.
    async fn serve(
        &mut self,
        mut process: Process,
        mut desired: Desired,
        orders: &mut watch::Receiver<Option<Desired>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        if let Err(why) = self.init(&mut process, &desired.settings).await {
            process.stop(GRACE).await;
            return End::Failed(why);
        }
        let mut added = BTreeMap::new();
        if let Err(e) = sync(&mut process, &desired.rules, &mut added).await {
            process.stop(GRACE).await;
            return End::Failed(e.to_string());
        }
        let pid = process.child.id();
        self.update(|s| {
            s.state = "running".into();
            s.pid = pid;
            s.active = added.len();
        });
        tracing::info!(provider = %self.name, pid, rules = added.len(), "provider running");
        loop {
            tokio::select! {
                incoming = process.incoming.recv() => match incoming {
                    Some(incoming) => self.handle(incoming, &added).await,
                    None => return End::Failed(exit(&mut process).await),
                },
                exited = process.child.wait() => {
                    process.kill();
                    // Lines written before the exit are still served (bounded: a helper that
                    // left the process group may hold the pipe open).
                    let _ = tokio::time::timeout(GRACE, async {
                        while let Some(incoming) = process.incoming.recv().await {
                            self.handle(incoming, &added).await;
                        }
                    })
                    .await;
                    return End::Failed(describe_exit(exited));
                }
                changed = orders.changed() => {
                    let next = orders.borrow_and_update().clone();
                    match next {
                        Some(next) if changed.is_ok() && next.settings == desired.settings => {
                            if let Err(e) = sync(&mut process, &next.rules, &mut added).await {
                                process.stop(GRACE).await;
                                return End::Failed(e.to_string());
                            }
                            self.recent.retain(|rule, _| added.contains_key(rule));
                            self.update(|s| {
                                s.rules = next.bound;
                                s.active = added.len();
                            });
                            desired = next;
                        }
                        Some(_) if changed.is_ok() => {
                            tracing::info!(provider = %self.name, "settings changed: restarting it");
                            process.stop(GRACE).await;
                            return End::Replace;
                        }
                        _ => {
                            process.stop(GRACE).await;
                            return End::Stop;
                        }
                    }
                }
                _ = shutdown.changed() => {
                    process.stop(GRACE).await;
                    return End::Stop;
                }
            }
        }
    }

    /// `init` and its `ready`, within the provider's `validate_timeout`.
    async fn init(
        &mut self,
        process: &mut Process,
        settings: &ProviderSettings,
    ) -> Result<(), String> {
        let init = ToProvider::Init {
            version: protocol::VERSION,
            provider: &settings.name,
            config: &settings.config,
            state_dir: &self.state_dir,
        };
        process.send(&init).await.map_err(|e| e.to_string())?;
        let deadline = Instant::now() + settings.validate_timeout;
        loop {
            let incoming = tokio::time::timeout_at(deadline, process.incoming.recv()).await;
            match incoming {
                Ok(Some(Incoming::Message(FromProvider::Ready { version }))) => {
                    return if version == protocol::VERSION {
                        Ok(())
                    } else {
                        Err(format!(
                            "speaks protocol version {version}, not {}",
                            protocol::VERSION
                        ))
                    };
                }
                Ok(Some(Incoming::Message(FromProvider::Error { message }))) => {
                    return Err(format!("init refused: {}", protocol::clean(&message)))
                }
                Ok(Some(other)) => self.refuse(&format!("before ready: {other:?}")),
                Ok(None) => return Err(exit(process).await),
                Err(_) => return Err("no `ready` after `init`".into()),
            }
        }
    }

    async fn handle(&mut self, incoming: Incoming, added: &BTreeMap<String, serde_json::Value>) {
        let fire = match incoming {
            Incoming::Message(FromProvider::Fire(fire)) => fire,
            Incoming::Message(FromProvider::Disable { rule, reason }) => {
                if added.contains_key(&rule) {
                    let reason = format!("provider: {}", protocol::clean(&reason));
                    tracing::warn!(provider = %self.name, rule = %rule, "{reason}");
                    self.emitter.disable(&rule, reason);
                } else {
                    self.refuse_counted(&format!(
                        "disable for a rule it does not serve: {}",
                        protocol::clean(&rule)
                    ));
                }
                return;
            }
            // Answers that only mean something during start or validation.
            Incoming::Message(_) => return,
            Incoming::Refused(why) => return self.refuse(&why.to_string()),
            Incoming::TooLong(n) => return self.refuse(&format!("a line of {n} bytes (max_line)")),
        };
        if !added.contains_key(&fire.rule) {
            return self.refuse_counted(&format!(
                "fire for a rule it does not serve: {}",
                protocol::clean(&fire.rule)
            ));
        }
        let rule = fire.rule.clone();
        let checked = match fire.check() {
            Ok(c) => c,
            Err(why) => return self.refuse_counted(&why.to_string()),
        };
        if let Some(id) = &checked.id {
            if !self.recent.entry(rule.clone()).or_default().insert(id) {
                self.update(|s| s.duplicates += 1);
                return;
            }
        }
        let subject = checked.subject.unwrap_or_else(|| self.name.clone());
        let mut event = self
            .emitter
            .event(subject.into(), EventMask::EMPTY, None, checked.payload);
        event.fields = checked.fields;
        self.emitter.fire(&rule, event).await;
        self.update(|s| s.fires += 1);
    }

    /// A line already counted by the reader: only logged (rate-limited).
    fn refuse(&self, why: &str) {
        self.update(|s| s.refused = self.counters.refused.load(Ordering::Relaxed));
        if self.log.ready() {
            tracing::warn!(provider = %self.name, refused = self.counters.refused.load(Ordering::Relaxed), "line refused: {why}");
        }
    }

    /// A well-formed line refused here: counted, then logged.
    fn refuse_counted(&self, why: &str) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        self.refuse(why);
    }

    fn update(&self, change: impl FnOnce(&mut ProviderStatus)) {
        let mut all = self.status.lock().unwrap_or_else(|p| p.into_inner());
        change(all.entry(self.name.clone()).or_default());
    }
}

/// Brings the provider's rules to `want`: `remove` what went or changed, `add` what is new.
async fn sync(
    process: &mut Process,
    want: &BTreeMap<String, serde_json::Value>,
    added: &mut BTreeMap<String, serde_json::Value>,
) -> Result<(), ProcessError> {
    let stale: Vec<String> = added
        .iter()
        .filter(|(rule, params)| want.get(*rule) != Some(*params))
        .map(|(rule, _)| rule.clone())
        .collect();
    for rule in stale {
        process.send(&ToProvider::Remove { rule: &rule }).await?;
        added.remove(&rule);
    }
    for (rule, params) in want {
        if !added.contains_key(rule) {
            process.send(&ToProvider::Add { rule, params }).await?;
            added.insert(rule.clone(), params.clone());
        }
    }
    Ok(())
}

/// Its output ended: wait (briefly) for the exit status.
async fn exit(process: &mut Process) -> String {
    match tokio::time::timeout(GRACE, process.child.wait()).await {
        Ok(status) => describe_exit(status),
        Err(_) => {
            process.kill();
            let _ = process.child.wait().await;
            "closed its output; killed".into()
        }
    }
}

fn describe_exit(status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (_, Some(signal)) => format!("killed by signal {signal}"),
            _ => "exited".into(),
        },
        Err(e) => format!("cannot wait for it: {e}"),
    }
}

/// The state directory exists, is private, and belongs to the user the provider runs as.
fn prepare_state_dir(dir: &std::path::Path, user: Option<(u32, u32)>) {
    use std::os::unix::fs::PermissionsExt;
    let made = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .and_then(|()| match user {
            Some((uid, gid)) => std::os::unix::fs::chown(dir, Some(uid), Some(gid)),
            None => Ok(()),
        });
    if let Err(e) = made {
        tracing::warn!(dir = %dir.display(), "provider state directory: {e}");
    }
}

/// The last ids seen for one rule, oldest first.
#[derive(Default)]
struct RecentIds {
    order: VecDeque<String>,
    seen: HashSet<String>,
}

impl RecentIds {
    /// False when `id` was seen recently.
    fn insert(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == RECENT_IDS {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.order.push_back(id.to_string());
        self.seen.insert(id.to_string());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_remember_a_bounded_window() {
        let mut recent = RecentIds::default();
        assert!(recent.insert("a"));
        assert!(!recent.insert("a"));
        for i in 0..RECENT_IDS {
            assert!(recent.insert(&i.to_string()));
        }
        assert!(recent.insert("a"), "forgotten after RECENT_IDS others");
        assert_eq!(recent.order.len(), RECENT_IDS);
    }
}
