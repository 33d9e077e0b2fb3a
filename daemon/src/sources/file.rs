//! The trigger-file source (`[[trigger]]`): a FUSE filesystem at `[daemon] fs_mount` whose
//! files turn every write (or line) into an event. The tree follows reloads without a
//! remount. A write is answered once its message is in the hand-off queue; when the daemon is
//! behind, the writer waits (bounded) and what is refused after that is counted per trigger.
//! A rule's command output becomes what reading the trigger file returns.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use triggerd_fusefs::{Message, MessageSink, MountOptions, Split, TriggerFs, TriggerSpec};
use triggerd_watch::EventMask;

use super::{BoxFuture, Emitter, EventSource, SourceContext};
use crate::config::{self, Rule, Trigger};
use crate::event::ReplyTo;

/// Messages in flight between FUSE threads and the dispatcher.
const HANDOFF: usize = 4096;
/// How long a writer may wait for room before its message is counted as dropped.
const QUEUE_WAIT: Duration = Duration::from_secs(1);

/// What `status` shows per trigger file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TriggerFileStatus {
    pub writes: u64,
    pub bytes: u64,
    pub events: u64,
    pub drops: u64,
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

/// Hands messages from FUSE threads to the async side, waiting at most the writer's bound.
struct Handoff {
    queue: mpsc::Sender<Message>,
    runtime: Handle,
}

impl MessageSink for Handoff {
    fn offer(&self, message: Message, wait: Duration) -> bool {
        match self.queue.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(message)) => {
                // FUSE threads are not runtime threads: blocking here holds only the writer.
                self.runtime
                    .block_on(self.queue.send_timeout(message, wait))
                    .is_ok()
            }
        }
    }
}

/// File key → rule name, as the current bindings say.
type Routes = Arc<RwLock<HashMap<String, String>>>;

async fn run(mut ctx: SourceContext, mountpoint: PathBuf, mounted: Mounted) {
    let routes: Routes = Arc::default();
    let (queue, mut incoming) = mpsc::channel::<Message>(HANDOFF);
    let handoff = Arc::new(Handoff {
        queue,
        runtime: Handle::current(),
    });
    let forward = {
        let (routes, emitter, mounted) = (
            Arc::clone(&routes),
            ctx.emitter.clone(),
            Arc::clone(&mounted),
        );
        tokio::spawn(async move {
            while let Some(message) = incoming.recv().await {
                deliver(message, &routes, &emitter, &mounted).await;
            }
        })
    };
    loop {
        let bindings = ctx.bindings.borrow_and_update().clone();
        let specs = apply_routes(&bindings.rules, &routes);
        let current = lock(&mounted).clone();
        match current {
            Some(fs) => {
                if let Err(e) = fs.update(specs) {
                    tracing::error!("trigger files not updated: {e}");
                }
            }
            None if !specs.is_empty() => {
                let mut options = MountOptions::new(&mountpoint, &ctx.state_dir);
                options.queue_wait = QUEUE_WAIT;
                let sink = Arc::clone(&handoff) as Arc<dyn MessageSink>;
                match tokio::task::block_in_place(|| TriggerFs::mount(options, specs, sink)) {
                    Ok(fs) => {
                        tracing::info!(mount = %mountpoint.display(), "trigger files mounted");
                        *lock(&mounted) = Some(Arc::new(fs));
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
    forward.abort();
    let fs = lock(&mounted).take();
    if let Some(fs) = fs.and_then(|fs| Arc::try_unwrap(fs).ok()) {
        if let Err(e) = tokio::task::block_in_place(|| fs.unmount()) {
            tracing::warn!("trigger files: {e}");
        }
    }
}

/// Records which rule each file key belongs to; returns the filesystem's specs.
fn apply_routes(rules: &[Rule], routes: &Routes) -> Vec<TriggerSpec> {
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
        });
    }
    *routes.write().unwrap_or_else(|p| p.into_inner()) = table;
    specs
}

async fn deliver(message: Message, routes: &Routes, emitter: &Emitter, mounted: &Mounted) {
    let key: &str = &message.trigger;
    let Some(rule) = routes
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(key)
        .cloned()
    else {
        tracing::debug!(trigger = key, "message for a trigger no longer configured");
        return;
    };
    let pid = i32::try_from(message.pid).ok();
    let mut event = emitter.event(PathBuf::from(key), EventMask::EMPTY, pid, message.payload);
    let replies = Arc::clone(mounted);
    let trigger = message.trigger.clone();
    event.reply = Some(ReplyTo(Arc::new(move |output: &[u8]| {
        if let Some(fs) = lock(&replies).as_ref() {
            fs.set_reply(&trigger, output);
        }
    })));
    emitter.fire(&rule, event).await;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
