//! The trigger-file source (`[[trigger]]`): a FUSE filesystem at `[daemon] fs_mount` whose
//! files turn every write (or line) into an event. The tree follows reloads without a
//! remount. A write is answered once its message is in its rule's queue: there is no
//! hand-off queue in between, so what a writer can make the daemon hold is the rule's
//! `queue`/`queue_bytes` plus each trigger's `partial_bytes`. When the queue is full the
//! writer waits (`queue_wait`), then its write fails with EAGAIN, counted per trigger and per
//! rule. A rule's command output becomes what reading the trigger file returns.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use triggerd_fusefs::{
    Message, MessageSink, MountOptions, NamespaceChange, Split, TriggerFs, TriggerLimits,
    TriggerSpec,
};
use triggerd_watch::EventMask;

use super::{BoxFuture, Emitter, EventSource, SourceContext};
use crate::config::{self, Rule, Trigger};
use crate::dispatch::Delivery;
use crate::event::ReplyTo;
use crate::handover;
use triggerd_support::lock;

/// Test hook: a take-over behaves as on a kernel without FUSE_NOTIFY_RESEND (< 6.9).
pub const REFUSE_RESEND_ENV: &str = "TRIGGERD_TEST_REFUSE_RESEND";
/// How long a hand-over waits for writes in progress (each waits at most its `queue_wait`).
const HAND_OVER_WAIT: Duration = Duration::from_secs(10);

/// What `status` shows per trigger file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TriggerFileStatus {
    pub writes: u64,
    pub bytes: u64,
    pub events: u64,
    pub drops: u64,
    /// Bytes of writes refused (EAGAIN, ENOSPC) and opens refused (ENFILE).
    #[serde(default)]
    pub refused_bytes: u64,
    #[serde(default)]
    pub refused_opens: u64,
    /// Open handles now, and the bytes of partial lines they hold.
    #[serde(default)]
    pub open: u64,
    #[serde(default)]
    pub partial_bytes: u64,
}

/// The mounted filesystem, shared with the control socket for `status`.
pub type Mounted = Arc<Mutex<Option<Arc<TriggerFs>>>>;

pub fn trigger_status(mounted: &Mounted) -> BTreeMap<String, TriggerFileStatus> {
    let fs = mounted.lock().unwrap_or_else(|p| p.into_inner()).clone();
    fs.map(|fs| {
        fs.stats()
            .into_iter()
            .map(|s| {
                let status = TriggerFileStatus {
                    writes: s.writes,
                    bytes: s.bytes,
                    events: s.events,
                    drops: s.drops,
                    refused_bytes: s.refused_bytes,
                    refused_opens: s.refused_opens,
                    open: s.open,
                    partial_bytes: s.partial_bytes,
                };
                (s.trigger, status)
            })
            .collect()
    })
    .unwrap_or_default()
}

pub struct TriggerFileSource {
    mountpoint: PathBuf,
    mounted: Mounted,
}

impl TriggerFileSource {
    pub fn new(mountpoint: PathBuf, mounted: Mounted) -> Self {
        Self {
            mountpoint,
            mounted,
        }
    }
}

impl EventSource for TriggerFileSource {
    fn kind(&self) -> &'static str {
        "trigger"
    }

    fn describe(&self) -> &'static str {
        "trigger files (FUSE): every write to a file is a message"
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture {
        Box::pin(run(ctx, self.mountpoint, self.mounted))
    }
}

/// Hands messages from FUSE threads straight to their rule, waiting at most the writer's
/// bound for room in its queue.
struct Handoff {
    routes: Routes,
    emitter: Emitter,
    mounted: Mounted,
    runtime: Handle,
}

impl MessageSink for Handoff {
    fn offer(&self, message: Message, wait: Duration) -> bool {
        let Some((rule, event)) = event_of(message, &self.routes, &self.emitter, &self.mounted)
        else {
            return true;
        };
        // FUSE threads are not runtime threads: blocking here holds only the writer.
        let delivery = self
            .runtime
            .block_on(self.emitter.fire_waiting(&rule, event, wait));
        // Full or stopping: the write fails with EAGAIN (a re-exec parks writes before the
        // sources stop, so they reach the successor instead).
        matches!(delivery, Delivery::Taken | Delivery::NoRule)
    }

    fn namespace(&self, change: &NamespaceChange) -> Option<Result<(), i32>> {
        NAMESPACE_HOOK.get().and_then(|hook| hook(change))
    }
}

/// Decides namespace changes made in the mount before the tree applies them (the synced
/// trigger catalog's: they are changes at the broker). One per process, set once.
pub type NamespaceHook = Box<dyn Fn(&NamespaceChange) -> Option<Result<(), i32>> + Send + Sync>;
static NAMESPACE_HOOK: std::sync::OnceLock<NamespaceHook> = std::sync::OnceLock::new();

/// Installs the namespace hook (a second call is ignored).
pub fn set_namespace_hook(hook: NamespaceHook) {
    let _ = NAMESPACE_HOOK.set(hook);
}

/// File key → rule name, as the current bindings say.
type Routes = Arc<RwLock<HashMap<String, String>>>;

async fn run(mut ctx: SourceContext, mountpoint: PathBuf, mounted: Mounted) {
    let routes: Routes = Arc::default();
    let handoff = Arc::new(Handoff {
        routes: Arc::clone(&routes),
        emitter: ctx.emitter.clone(),
        mounted: Arc::clone(&mounted),
        runtime: Handle::current(),
    });
    // The specs the mounted tree follows: a reload that leaves them as they are rebuilds
    // nothing (50,000 files would otherwise be rebuilt and saved on every reload).
    let mut current_specs: Option<Vec<TriggerSpec>> = None;
    loop {
        let bindings = ctx.bindings.borrow_and_update().clone();
        let specs = apply_routes(&bindings.rules, &routes);
        let current = lock(&mounted).clone();
        match current {
            Some(_) if current_specs.as_ref() == Some(&specs) => {}
            Some(fs) => match fs.update(specs.clone()) {
                Ok(()) => current_specs = Some(specs),
                Err(e) => tracing::error!("trigger files not updated: {e}"),
            },
            None if !specs.is_empty() => {
                let sink = Arc::clone(&handoff) as Arc<dyn MessageSink>;
                let wanted = specs.clone();
                let options = mount_options(&mountpoint, &ctx.state_dir);
                match tokio::task::block_in_place(|| mount_or_adopt(options, specs, sink)) {
                    Ok(fs) => {
                        crate::systemd::store_fd(handover::FUSE, fs.device());
                        *lock(&mounted) = Some(Arc::new(fs));
                        current_specs = Some(wanted);
                    }
                    Err(e) => {
                        tracing::error!(mount = %mountpoint.display(), "cannot mount trigger files: {e}")
                    }
                }
            }
            None => {}
        }
        ctx.applied(bindings.generation);
        tokio::select! {
            changed = ctx.bindings.changed() => if changed.is_err() { break },
            _ = ctx.shutdown.changed() => break,
        }
    }
    let fs = lock(&mounted).take();
    if let Some(fs) = fs {
        if handover::handing_over() {
            tokio::task::block_in_place(|| hand_over(fs));
        } else if let Ok(fs) = Arc::try_unwrap(fs) {
            if let Err(e) = tokio::task::block_in_place(|| fs.unmount()) {
                tracing::warn!("trigger files: {e}");
            }
        }
    }
}

/// The mount's options; the session file lives next to the mountpoint (under /run in the
/// packaged config): it means nothing once the connection is gone.
fn mount_options(mountpoint: &Path, state_dir: &Path) -> MountOptions {
    let mut options = MountOptions::new(mountpoint, state_dir);
    let name = mountpoint.file_name().unwrap_or_default().to_string_lossy();
    options.session_file = mountpoint.with_file_name(format!("{name}.session.json"));
    options.simulate_no_resend = std::env::var_os(REFUSE_RESEND_ENV).is_some();
    options
}

/// Takes over the connection a predecessor handed over, or mounts afresh (also when the
/// take-over fails: the connection was then aborted and its writers got an error).
fn mount_or_adopt(
    options: MountOptions,
    specs: Vec<TriggerSpec>,
    sink: Arc<dyn MessageSink>,
) -> Result<TriggerFs, triggerd_fusefs::FsError> {
    let mountpoint = options.mountpoint.clone();
    if let Some(device) = handover::take(handover::FUSE) {
        let adopted = TriggerFs::adopt(options.clone(), specs.clone(), sink.clone(), device);
        match adopted {
            Ok(fs) => {
                tracing::info!(mount = %mountpoint.display(), "trigger files taken over from the previous process");
                return Ok(fs);
            }
            Err(e) => tracing::error!("{e}; mounting again"),
        }
    }
    let fs = TriggerFs::mount(options, specs, sink)?;
    tracing::info!(mount = %mountpoint.display(), "trigger files mounted");
    Ok(fs)
}

/// Before a re-exec stops the sources: parks trigger-file writes (the kernel keeps them for
/// the successor) while the dispatcher still takes events. Once the sources stop, an event is
/// no longer taken, so a write accepted in between would be answered and lost.
pub fn park_for_reexec(mounted: &Mounted) {
    let fs = lock(mounted).clone();
    if let Some(fs) = fs {
        if !fs.hand_over(HAND_OVER_WAIT) {
            tracing::warn!("trigger files: writes still in progress after {HAND_OVER_WAIT:?}; the successor gets them again");
        }
    }
}

/// Parks the connection's requests for the successor and leaves the mount in place.
fn hand_over(fs: Arc<TriggerFs>) {
    if !fs.hand_over(HAND_OVER_WAIT) {
        tracing::warn!("trigger files: writes still in progress after {HAND_OVER_WAIT:?}; the successor gets them again");
    }
    match fs.device().try_clone_to_owned() {
        Ok(device) => handover::keep(handover::FUSE, device),
        Err(e) => tracing::error!("trigger files: cannot keep the connection: {e}"),
    }
    match Arc::try_unwrap(fs) {
        Ok(fs) => fs.leave_mounted(),
        // A status request still holds it: its drop must not unmount either.
        Err(shared) => std::mem::forget(shared),
    }
}

/// Records which rule each file key belongs to; returns the filesystem's specs.
fn apply_routes(rules: &[Arc<Rule>], routes: &Routes) -> Vec<TriggerSpec> {
    let mut table = HashMap::new();
    let mut specs = Vec::new();
    for rule in rules {
        let Trigger::File(f) = &rule.def.trigger else {
            continue;
        };
        table.insert(f.file.clone(), rule.name.clone());
        specs.push(TriggerSpec {
            file: f.file.clone(),
            split: match f.split {
                config::Split::Write => Split::Write,
                config::Split::Line => Split::Line,
            },
            mode: f.mode,
            uid: f.uid,
            gid: f.gid,
            limits: TriggerLimits {
                max_open: f.max_open,
                partial_bytes: f.partial_bytes,
                queue_wait: Some(f.queue_wait),
            },
        });
    }
    *routes.write().unwrap_or_else(|p| p.into_inner()) = table;
    specs
}

/// The rule a message is for and its event (with the reply going back to the trigger file);
/// `None` for a trigger no longer configured.
fn event_of(
    message: Message,
    routes: &Routes,
    emitter: &Emitter,
    mounted: &Mounted,
) -> Option<(String, crate::event::Event)> {
    let key: &str = &message.trigger;
    let Some(rule) = routes
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(key)
        .cloned()
    else {
        tracing::debug!(trigger = key, "message for a trigger no longer configured");
        return None;
    };
    let pid = i32::try_from(message.pid).ok();
    let mut event = emitter.event(PathBuf::from(key), EventMask::EMPTY, pid, message.payload);
    if let Some(hops) = pid.and_then(crate::remote::hops::of_process) {
        event
            .fields
            .push((crate::remote::hops::FIELD.to_string(), hops.to_string()));
    }
    let replies = Arc::clone(mounted);
    let trigger = message.trigger.clone();
    event.reply = Some(ReplyTo(Arc::new(move |output: &[u8]| {
        if let Some(fs) = lock(&replies).as_ref() {
            fs.set_reply(&trigger, output);
        }
    })));
    Some((rule, event))
}
