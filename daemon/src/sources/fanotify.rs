//! The fanotify source (`[[watch]]` and facron lines): one notification group (FID mode) for
//! every watch and a second group for permission rules, both read without blocking from the
//! tokio reactor. The permission group is read by a task of its own: a notification rule that
//! blocks on its full queue must never leave an open waiting unread, least of all one by the
//! very action the queue waits for. Marks follow the bindings as a diff, so a reload never
//! drops the marks of unchanged rules; marks that fail (a path that does not exist yet) are
//! retried until they succeed, and marks whose path was replaced (an editor's rename-over)
//! are placed again. `mount_only` rules get a group of their own (mount marks), so an event
//! there always came through the marked mount; paths fanotify refuses go to inotify
//! (`fallback.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::unix::{AsyncFd, AsyncFdReadyMutGuard};
use tokio::io::Interest;
use triggerd_watch::{
    EventMask, MarkError, MarkScope, MarkSpec, PermissionGate, PermissionRequest, WatchError,
    WatchEvent, Watcher,
};

use super::fallback::{self, InotifySide, Trouble};
use super::poll::{remote_kind, Polls};
use super::rescan::Rescans;
use super::{watch_groups, BoxFuture, Emitter, EventSource, SourceContext};
use crate::config::{Rule, Trigger, WatchBackend, WatchTrigger};
use crate::dispatch::SourceState;
use crate::event::Event;
use triggerd_support::lock;

const RETRY_EVERY: Duration = Duration::from_secs(2);

/// The marks a set of rules asks for: notification marks and permission marks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Marks {
    pub notify: Vec<MarkSpec>,
    pub permission: Vec<MarkSpec>,
    /// `mount_only` rules (their own group).
    pub mount: Vec<MarkSpec>,
    /// `backend = "inotify"` rules.
    pub inotify: Vec<MarkSpec>,
    /// Notification specs that must not fall back to inotify (`backend = "fanotify"`).
    pub fanotify_only: HashSet<u64>,
}

/// The watch rules now bound, by the id their specs carry. A name keeps its id for the
/// daemon's life, so an event queued before a reload finds its rule by name, or nothing.
#[derive(Debug, Default)]
struct Bound {
    ids: HashMap<String, u64>,
    /// The bound rules (shared with the config), by the spec id their marks carry.
    rules: HashMap<u64, Arc<Rule>>,
}

type SharedBound = Arc<Mutex<Bound>>;

impl Bound {
    /// Binds `rules` and returns the marks they ask for.
    fn bind(&mut self, rules: &[Arc<Rule>]) -> Marks {
        let mut marks = Marks::default();
        self.rules.clear();
        for rule in rules {
            let Trigger::Watch(w) = &rule.def.trigger else {
                continue;
            };
            if w.poll.is_some() {
                // Served by `poll.rs`, without a mark.
                continue;
            }
            let next = self.ids.len() as u64;
            let id = *self.ids.entry(rule.name.clone()).or_insert(next);
            self.rules.insert(id, Arc::clone(rule));
            let mut mask = w.events;
            if w.children && !w.recursive {
                mask = mask.union(EventMask::EVENT_ON_CHILD);
            }
            let scope = if w.recursive {
                MarkScope::Filesystem
            } else {
                MarkScope::Inode
            };
            let mut spec = MarkSpec::new(id, w.path.clone(), scope, mask);
            spec.follow = w.follow;
            spec.mount_only = w.mount_only;
            if w.backend == WatchBackend::Fanotify {
                marks.fanotify_only.insert(id);
            }
            if w.is_permission() {
                marks.permission.push(spec);
            } else if w.mount_only {
                marks.mount.push(spec);
            } else if w.backend == WatchBackend::Inotify {
                marks.inotify.push(spec);
            } else {
                marks.notify.push(spec);
            }
        }
        marks
    }

    fn rule(&self, id: u64) -> Option<(&String, &WatchTrigger)> {
        let rule = self.rules.get(&id)?;
        match &rule.def.trigger {
            Trigger::Watch(w) => Some((&rule.name, w)),
            _ => None,
        }
    }
}

/// What `triggerd check` warns about: each watch rule whose path cannot be marked now, with
/// why and whether the daemon would keep trying. Marks are tried on throwaway groups (so
/// this needs the daemon's privileges); an error creating them is the one warning.
pub fn probe(rules: &[Arc<Rule>]) -> Vec<(String, String)> {
    let mut bound = Bound::default();
    let marks = bound.bind(rules);
    let notify = Watcher::new().and_then(|mut w| w.set_marks(&marks.notify));
    let mount = Watcher::new().and_then(|mut w| w.set_marks(&marks.mount));
    let permission = PermissionGate::new().and_then(|mut g| g.set_marks(&marks.permission));
    let inotify = triggerd_watch::InotifyWatcher::new().map(|mut w| w.set_specs(&marks.inotify));
    let specs: HashMap<u64, &MarkSpec> = marks.notify.iter().map(|s| (s.id, s)).collect();
    let mut warnings = Vec::new();
    for result in [notify, mount, permission, inotify] {
        match result {
            Ok(errors) => warnings.extend(errors.into_iter().map(|e| {
                let name = bound
                    .rule(e.spec)
                    .map(|(n, _)| n.clone())
                    .unwrap_or_default();
                let fallback = specs
                    .get(&e.spec)
                    .filter(|_| e.is_unsupported() && !marks.fanotify_only.contains(&e.spec));
                let why = match fallback {
                    Some(spec) => fallback::probe(spec, &e.error.to_string()),
                    None if e.is_unsupported() || e.is_permanent() => {
                        format!("cannot be watched: {}", e.error)
                    }
                    None => format!("not watchable yet (the daemon retries): {}", e.error),
                };
                (name, why)
            })),
            Err(e) => warnings.push((String::new(), format!("cannot try the marks: {e}"))),
        }
    }
    for rule in rules {
        if let Trigger::Watch(w) = &rule.def.trigger {
            if let Some(kind) = remote_kind(&w.path).filter(|_| w.poll.is_none()) {
                warnings.push((
                    rule.name.clone(),
                    format!("on {kind}: other hosts' changes are not seen; set `poll = \"2s\"`"),
                ));
            }
        }
    }
    warnings
}

/// The backend name `status` shows for a spec.
fn backend_of(spec: &MarkSpec, on_inotify: &HashSet<u64>) -> &'static str {
    match spec.scope {
        _ if on_inotify.contains(&spec.id) => "inotify",
        _ if spec.mount_only => "fanotify-mount",
        MarkScope::Filesystem => "fanotify-fs",
        MarkScope::Inode => "fanotify-inode",
    }
}

/// What `status` shows about the source.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WatchStatus {
    pub events: u64,
    pub overflows: u64,
    pub permission_requests: u64,
    /// Paths whose mark failed, with why; retried every few seconds.
    pub failing_marks: BTreeMap<String, String>,
    /// The inotify backend: events read, queue overflows, watches held, and watches
    /// refused because `fs.inotify.max_user_watches` was reached.
    #[serde(default)]
    pub inotify_events: u64,
    #[serde(default)]
    pub inotify_overflows: u64,
    #[serde(default)]
    pub inotify_watches: u64,
    #[serde(default)]
    pub inotify_refused: u64,
    /// Watch rules refused now: their mark failed (out of marks or fds, a path that does not
    /// exist yet); each is logged when its reason changes (at most `MAX_LOGGED` per pass).
    #[serde(default)]
    pub refused_marks: u64,
}

/// Refused marks logged one by one per pass; the rest are summed up in one line.
const MAX_LOGGED: usize = 20;

/// The fanotify groups own their fd for their whole life and never swap it.
pub(super) trait OwnsGroupFd: AsRawFd {}
impl OwnsGroupFd for Watcher {}
impl OwnsGroupFd for GateFd {}

/// The permission gate, shared by the task that reads it and the source that sets its marks.
type SharedGate = Arc<Mutex<PermissionGate>>;

/// The permission group's fd, for readiness; it holds the gate, so the fd stays open.
struct GateFd(SharedGate, RawFd);

impl GateFd {
    fn new(gate: SharedGate) -> Self {
        let fd = lock(&gate).as_raw_fd();
        Self(gate, fd)
    }
}

impl AsRawFd for GateFd {
    fn as_raw_fd(&self) -> RawFd {
        self.1
    }
}

pub(super) fn register<T: OwnsGroupFd>(group: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `OwnsGroupFd` types hold their fd open, unchanged, until they are dropped, and
    // the AsyncFd owns the group, so the fd outlives the registration.
    unsafe { AsyncFd::register_with_interest(group, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

pub struct FanotifySource {
    status: Arc<Mutex<WatchStatus>>,
    groups: Option<(AsyncFd<Watcher>, Option<AsyncFd<GateFd>>)>,
    /// Where the notification groups' session files live (`watch_groups`).
    session_dir: PathBuf,
}

impl FanotifySource {
    /// `status` is shared with the control socket; `session_dir` holds the groups' session
    /// files (a directory under /run: they mean nothing after a reboot).
    pub fn new(status: Arc<Mutex<WatchStatus>>, session_dir: PathBuf) -> Self {
        Self {
            status,
            groups: None,
            session_dir,
        }
    }
}

impl EventSource for FanotifySource {
    fn kind(&self) -> &'static str {
        "watch"
    }

    fn describe(&self) -> &'static str {
        "fanotify marks on real paths: notification events and permission gates"
    }

    fn prepare(&mut self) -> Result<(), String> {
        let watcher = watch_groups::open(watch_groups::NOTIFY, &self.session_dir)
            .map_err(|e| e.to_string())?;
        let notify = register(watcher).map_err(|e| format!("fanotify group: {e}"))?;
        let gate = PermissionGate::new()
            .map_err(|e| e.to_string())
            .and_then(|mut gate| {
                gate.set_exempt_descendants(true);
                register(GateFd::new(Arc::new(Mutex::new(gate)))).map_err(|e| e.to_string())
            });
        let permission = match gate {
            Ok(gate) => Some(gate),
            Err(e) => {
                tracing::warn!("permission events unavailable: {e}");
                None
            }
        };
        self.groups = Some((notify, permission));
        Ok(())
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture {
        Box::pin(async move {
            let Some((notify, permission)) = self.groups else {
                tracing::error!("fanotify source run without prepare");
                return;
            };
            let delivery = Delivery {
                emitter: ctx.emitter.clone(),
                status: self.status,
                bound: SharedBound::default(),
                rescans: Rescans::default(),
                polls: Polls::default(),
            };
            let gate = permission.as_ref().map(|fd| Arc::clone(&fd.get_ref().0));
            let gate_task = permission.map(|fd| {
                tokio::spawn(serve_permission(fd, delivery.clone(), ctx.shutdown.clone()))
            });
            // A mount group a predecessor left keeps its queued events: adopted at once.
            let mount = watch_groups::inherited(watch_groups::MOUNT)
                .then(|| mount_group(&self.session_dir))
                .flatten();
            let mut source = Source {
                notify,
                mount,
                session_dir: self.session_dir,
                inotify: InotifySide::default(),
                permission: gate,
                delivery,
                marks: Marks::default(),
                errors: Vec::new(),
                failing: false,
            };
            source.run(ctx).await;
            if crate::handover::handing_over() {
                watch_groups::keep(watch_groups::NOTIFY, source.notify.get_ref());
                if let Some(mount) = &source.mount {
                    watch_groups::keep(watch_groups::MOUNT, mount.get_ref());
                }
            }
            if let Some(task) = gate_task {
                let _ = task.await;
            }
        })
    }
}

struct Source {
    notify: AsyncFd<Watcher>,
    /// The group of `mount_only` rules, made when the first one is bound.
    mount: Option<AsyncFd<Watcher>>,
    session_dir: PathBuf,
    /// The inotify backend, made when the first rule needs it.
    inotify: InotifySide,
    permission: Option<SharedGate>,
    delivery: Delivery,
    marks: Marks,
    /// The marks of `marks` that failed: (spec id, path, why, retrying helps).
    errors: Vec<Trouble>,
    failing: bool,
}

/// Turns what the groups read into dispatcher calls (apart from the groups, so both can be
/// borrowed at once).
#[derive(Clone)]
pub(super) struct Delivery {
    pub emitter: Emitter,
    pub status: Arc<Mutex<WatchStatus>>,
    bound: SharedBound,
    /// The state of the watches that rescan after an overflow.
    rescans: Rescans,
    /// The watches served by polling (`poll`), which have no mark.
    polls: Polls,
}

/// The group of `mount_only` rules (adopted or new), registered with the reactor.
fn mount_group(session_dir: &std::path::Path) -> Option<AsyncFd<Watcher>> {
    watch_groups::open(watch_groups::MOUNT, session_dir)
        .map_err(|e| e.to_string())
        .and_then(|w| register(w).map_err(|e| e.to_string()))
        .map_err(|e| tracing::error!("fanotify group for mount marks: {e}"))
        .ok()
}

/// Reads one ready group with `read` (which says: drained, marks went stale); true when its
/// marks went stale.
async fn on_ready<T: AsRawFd>(
    ready: std::io::Result<AsyncFdReadyMutGuard<'_, T>>,
    what: &str,
    read: impl AsyncFnOnce(&mut T) -> (bool, bool),
) -> bool {
    match ready {
        Ok(mut guard) => {
            let (drained, stale) = read(guard.get_inner_mut()).await;
            if drained {
                guard.clear_ready();
            }
            stale
        }
        Err(e) => {
            tracing::error!("{what}: {e}");
            false
        }
    }
}

/// Readiness of a group that may not exist yet (then never ready).
async fn ready_of<T: AsRawFd>(
    fd: &mut Option<AsyncFd<T>>,
) -> std::io::Result<AsyncFdReadyMutGuard<'_, T>> {
    match fd {
        Some(fd) => fd.readable_mut().await,
        None => std::future::pending().await,
    }
}

impl Source {
    async fn run(&mut self, mut ctx: SourceContext) {
        let mut retry = tokio::time::interval(RETRY_EVERY);
        let mut events = Vec::with_capacity(1024);
        let bindings = ctx.bindings.borrow_and_update().clone();
        self.bind(&bindings.rules);
        ctx.applied(bindings.generation);
        loop {
            tokio::select! {
                ready = self.notify.readable_mut() => {
                    let (delivery, events) = (&mut self.delivery, &mut events);
                    if on_ready(ready, "fanotify", async |w| delivery.read_notify(w, events).await).await {
                        self.reapply();
                    }
                }
                ready = ready_of(&mut self.mount) => {
                    let (delivery, events) = (&mut self.delivery, &mut events);
                    if on_ready(ready, "fanotify (mount marks)", async |w| delivery.read_notify(w, events).await).await {
                        self.reapply();
                    }
                }
                ready = ready_of(&mut self.inotify.group) => {
                    let (delivery, events, ids) = (&mut self.delivery, &mut events, &self.inotify.ids);
                    if on_ready(ready, "inotify", async |g| fallback::read(g, delivery, ids, events).await).await {
                        self.reapply();
                    }
                }
                changed = ctx.bindings.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let bindings = ctx.bindings.borrow_and_update().clone();
                    self.bind(&bindings.rules);
                    ctx.applied(bindings.generation);
                }
                _ = retry.tick(), if self.failing => self.reapply(),
                _ = ctx.shutdown.changed() => break,
            }
        }
    }

    /// Places the current marks again (retries, or an object a spec named went away).
    fn reapply(&mut self) {
        let marks = self.marks.clone();
        self.apply(marks);
    }

    fn bind(&mut self, rules: &[Arc<Rule>]) {
        let marks = lock(&self.delivery.bound).bind(rules);
        self.delivery.rescans.bind(rules, &self.delivery.emitter);
        self.delivery.polls.bind(rules, &self.delivery.emitter);
        if marks == self.marks && !marks.notify.is_empty() {
            // Nothing to mark differently: only rules with a new runtime learn their state.
            let errors = std::mem::take(&mut self.errors);
            self.report(&marks, &errors);
            self.errors = errors;
            return;
        }
        self.apply(marks);
    }

    fn apply(&mut self, marks: Marks) {
        let mut errors: Vec<Trouble> = Vec::new();
        let mut collect =
            |result: Result<Vec<MarkError>, WatchError>, specs: &[MarkSpec]| match result {
                Ok(failed) => failed,
                Err(e) => {
                    errors.extend(
                        specs
                            .iter()
                            .map(|s| (s.id, s.path.clone(), e.to_string(), true)),
                    );
                    Vec::new()
                }
            };
        let mut failed = collect(
            self.notify.get_mut().set_marks(&marks.notify),
            &marks.notify,
        );
        if !marks.mount.is_empty() && self.mount.is_none() {
            self.mount = mount_group(&self.session_dir);
        }
        if let Some(mount) = &mut self.mount {
            failed.extend(collect(
                mount.get_mut().set_marks(&marks.mount),
                &marks.mount,
            ));
        }
        let permission = match &self.permission {
            Some(gate) => collect(lock(gate).set_marks(&marks.permission), &marks.permission),
            None => Vec::new(),
        };
        // Paths fanotify refuses for good go to inotify, unless the rule wants fanotify only.
        let by_id: HashMap<u64, &MarkSpec> = marks.notify.iter().map(|s| (s.id, s)).collect();
        let mut inotify_specs = marks.inotify.clone();
        let mut fell_back = HashMap::new();
        for e in failed.into_iter().chain(permission) {
            match by_id.get(&e.spec) {
                Some(spec) if e.is_unsupported() && !marks.fanotify_only.contains(&e.spec) => {
                    fell_back.insert(e.spec, e.error.to_string());
                    inotify_specs.push((*spec).clone());
                }
                _ => {
                    let transient = !e.is_unsupported();
                    errors.push((e.spec, e.path, e.error.to_string(), transient));
                }
            }
        }
        if self.permission.is_none() {
            let why = "permission events are unavailable on this host";
            errors.extend(
                marks
                    .permission
                    .iter()
                    .map(|s| (s.id, s.path.clone(), why.to_string(), false)),
            );
        }
        let status = &self.delivery.status;
        errors.extend(self.inotify.apply(&inotify_specs, &fell_back, status));
        self.report(&marks, &errors);
        let mut status = lock(&self.delivery.status);
        let mut failing = BTreeMap::new();
        let mut retry = false;
        let (mut logged, mut unlogged) = (0, 0);
        status.refused_marks = errors.len() as u64;
        for (_, path, why, transient) in &errors {
            let path = path.display().to_string();
            if status.failing_marks.get(&path) != Some(why) {
                if logged >= MAX_LOGGED {
                    unlogged += 1;
                } else if *transient {
                    tracing::warn!(path = %path, "cannot watch yet (retrying): {why}");
                } else {
                    tracing::error!(path = %path, "cannot watch: {why}");
                }
                logged += 1;
            }
            retry |= transient;
            failing.insert(path, why.clone());
        }
        if unlogged > 0 {
            tracing::error!(
                refused = errors.len(),
                "{unlogged} more watches cannot be marked now (see `triggerctl status`)"
            );
        }
        for path in status
            .failing_marks
            .keys()
            .filter(|p| !failing.contains_key(*p))
        {
            tracing::info!(path = %path, "now watched");
        }
        self.failing = retry;
        status.failing_marks = failing;
        self.marks = marks;
        self.errors = errors;
    }

    /// Tells each rule's status how it is watched, or why it is not.
    fn report(&self, marks: &Marks, errors: &[Trouble]) {
        let bound = lock(&self.delivery.bound);
        let trouble: HashMap<u64, String> = errors
            .iter()
            .map(|(id, _, why, transient)| {
                let state = if *transient {
                    format!("waiting: {why}; next try in {}s", RETRY_EVERY.as_secs())
                } else {
                    format!("failed: {why}")
                };
                (*id, state)
            })
            .collect();
        let specs = marks.notify.iter().chain(&marks.permission);
        for spec in specs.chain(&marks.mount).chain(&marks.inotify) {
            if let Some((name, _)) = bound.rule(spec.id) {
                let state = SourceState {
                    backend: Some(backend_of(spec, &self.inotify.ids)),
                    trouble: trouble.get(&spec.id).cloned(),
                };
                self.delivery.emitter.set_source_state(name, state);
            }
        }
    }
}

/// Reads the permission group until shutdown. Closing the group (the last holder of the gate
/// drops it) lets the kernel allow whatever is still pending.
async fn serve_permission(
    fd: AsyncFd<GateFd>,
    delivery: Delivery,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut requests = Vec::new();
    loop {
        tokio::select! {
            ready = fd.readable() => match ready {
                Ok(mut guard) => {
                    if delivery.read_permission(&fd.get_ref().0, &mut requests) {
                        guard.clear_ready();
                    }
                }
                Err(e) => {
                    tracing::error!("fanotify permission group: {e}");
                    return;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

impl Delivery {
    /// Reads a bounded batch and dispatches it; returns (drained, marks went stale).
    async fn read_notify(
        &mut self,
        watcher: &mut Watcher,
        events: &mut Vec<WatchEvent>,
    ) -> (bool, bool) {
        events.clear();
        let drained = match watcher.read_events(events) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => {
                tracing::error!("fanotify read: {e}");
                true
            }
        };
        let overflows = watcher.overflows();
        let stale = watcher.marks_stale();
        {
            let mut status = lock(&self.status);
            status.events += events.len() as u64;
            status.overflows = overflows;
        }
        for event in events.drain(..) {
            let Some(id) = event.spec else {
                self.overflow(|_| true, "fanotify").await;
                continue;
            };
            let pid = Some(event.pid);
            self.deliver(id, event, pid).await;
        }
        (drained, stale)
    }

    /// Hands one event of spec `id` to its rule, if the rule wants its kinds.
    pub(super) async fn deliver(&self, id: u64, event: WatchEvent, pid: Option<i32>) {
        tracing::trace!(spec = id, path = ?event.path, mask = %event.mask, ?pid, "watch event");
        let name = match lock(&self.bound).rule(id) {
            Some((name, w))
                if !w.is_permission()
                    && w.accepts(event.mask)
                    && w.filter.admits(&w.path, &event.path) =>
            {
                name.clone()
            }
            _ => return,
        };
        let event = self.emitter.event(event.path, event.mask, pid, Vec::new());
        self.emitter.fire(&name, event).await;
    }

    /// A kernel queue (`queue`: fanotify or inotify) overflowed: events may be lost for
    /// every watch it serves (`serves`, by spec id). Counted for each, and the rules that
    /// asked for `overflow` fire.
    pub(super) async fn overflow(&self, serves: impl Fn(u64) -> bool, queue: &str) {
        tracing::warn!("{queue} queue overflow: events were lost");
        let rules: Vec<(String, bool)> = {
            let bound = lock(&self.bound);
            bound
                .rules
                .keys()
                .filter(|id| serves(**id))
                .filter_map(|id| bound.rule(*id))
                .map(|(name, w)| (name.clone(), w.events.contains(EventMask::OVERFLOW)))
                .collect()
        };
        for (name, asked) in rules {
            self.emitter.overflowed(&name);
            self.rescans.overflowed(&name, &self.emitter);
            if asked {
                let event =
                    self.emitter
                        .event(PathBuf::new(), EventMask::OVERFLOW, Some(0), Vec::new());
                self.emitter.fire(&name, event).await;
            }
        }
    }

    /// Hands each request to the dispatcher; true when the group had nothing more to give.
    fn read_permission(&self, gate: &SharedGate, out: &mut Vec<PermissionRequest>) -> bool {
        out.clear();
        let read = lock(gate).read_requests(out);
        let drained = match read {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => {
                tracing::error!("fanotify permission read: {e}");
                true
            }
        };
        lock(&self.status).permission_requests += out.len() as u64;
        for request in out.drain(..) {
            let targets: Vec<(String, Event)> = {
                let bound = lock(&self.bound);
                request
                    .specs
                    .iter()
                    .filter_map(|(id, path)| {
                        let (name, w) = bound.rule(*id)?;
                        let wanted = w.is_permission()
                            && w.accepts(request.mask)
                            && w.filter.admits(&w.path, path);
                        wanted.then(|| {
                            let event = self.emitter.event(
                                path.clone(),
                                request.mask,
                                Some(request.pid),
                                Vec::new(),
                            );
                            (name.clone(), event)
                        })
                    })
                    .collect()
            };
            self.emitter.decide_permission(request, targets);
        }
        drained
    }
}
