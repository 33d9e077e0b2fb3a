//! The shared-memory channel source (`[[channel]]`): one region per channel, each drained by
//! its own thread (adaptive spin, then asleep on the doorbell). Messages cross to the
//! dispatcher through a hand-off bounded in bytes (`handoff_bytes`); when the dispatcher is
//! behind, the thread waits, the ring fills, and publishers get "would block" —
//! back-pressure, never silent loss. A channel
//! whose region is damaged is quarantined (logged, counted) while the others run on.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use triggerd_ipc::{Channel, ChannelSpec, Stopper};
use triggerd_watch::EventMask;

use super::{BoxFuture, Emitter, EventSource, SourceContext};
use crate::config::{ChannelTrigger, Rule, Trigger};
use triggerd_support::lock;

/// What `status` shows per channel.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChannelStatus {
    pub messages: u64,
    pub bytes: u64,
    pub quarantines: u64,
    pub full_ring_waits: u64,
    pub quarantine: Option<String>,
}

/// The live channels, shared with the control socket for `status`.
pub type Channels = Arc<Mutex<HashMap<String, Arc<Channel>>>>;

pub fn channel_status(channels: &Channels) -> BTreeMap<String, ChannelStatus> {
    let channels = channels.lock().unwrap_or_else(|p| p.into_inner());
    channels
        .iter()
        .map(|(name, channel)| {
            let s = channel.stats();
            let status = ChannelStatus {
                messages: s.messages,
                bytes: s.bytes,
                quarantines: s.quarantines,
                full_ring_waits: s.full_ring_waits,
                quarantine: s.quarantine.map(|q| q.to_string()),
            };
            (name.clone(), status)
        })
        .collect()
}

pub struct ChannelSource {
    channels: Channels,
}

impl ChannelSource {
    pub fn new(channels: Channels) -> Self {
        Self { channels }
    }
}

impl EventSource for ChannelSource {
    fn kind(&self) -> &'static str {
        "channel"
    }

    fn describe(&self) -> &'static str {
        "shared-memory channels: local programs publish messages at memory speed"
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture {
        Box::pin(run(ctx, self.channels))
    }
}

/// One open channel and the thread draining it.
struct Open {
    spec: ChannelTrigger,
    stopper: Stopper,
    /// Bytes the hand-off may still take; closed to wake a thread waiting for room.
    budget: Arc<Semaphore>,
    thread: Option<JoinHandle<()>>,
    forward: tokio::task::JoinHandle<()>,
}

impl Open {
    /// Stops the thread; the hand-off is dropped first so a thread waiting on it wakes.
    fn close(mut self) {
        self.stopper.stop();
        self.budget.close();
        self.forward.abort();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn run(mut ctx: SourceContext, channels: Channels) {
    let mut open: HashMap<String, Open> = HashMap::new();
    loop {
        let bindings = ctx.bindings.borrow_and_update().clone();
        let wanted: HashMap<&str, &ChannelTrigger> = bindings
            .rules
            .iter()
            .filter_map(|r: &Arc<Rule>| match &r.def.trigger {
                Trigger::Channel(c) => Some((r.name.as_str(), c)),
                _ => None,
            })
            .collect();
        let stale: Vec<String> = open
            .iter()
            .filter(|(name, o)| wanted.get(name.as_str()) != Some(&&o.spec))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(o) = open.remove(&name) {
                tokio::task::block_in_place(|| o.close());
            }
            lock(&channels).remove(&name);
            tracing::info!(channel = %name, "channel closed");
        }
        for (name, spec) in wanted {
            if open.contains_key(name) {
                continue;
            }
            match start(name, spec, &ctx.emitter, &channels) {
                Ok(o) => {
                    open.insert(name.to_string(), o);
                }
                Err(e) => tracing::error!(channel = %name, "cannot open channel: {e}"),
            }
        }
        ctx.applied(bindings.generation);
        tokio::select! {
            changed = ctx.bindings.changed() => if changed.is_err() { break },
            _ = ctx.shutdown.changed() => break,
        }
    }
    tokio::task::block_in_place(|| {
        for (_, o) in open.drain() {
            o.close();
        }
    });
    lock(&channels).clear();
}

fn start(
    name: &str,
    spec: &ChannelTrigger,
    emitter: &Emitter,
    channels: &Channels,
) -> Result<Open, triggerd_ipc::IpcError> {
    let channel = Arc::new(Channel::create(&ChannelSpec {
        name: spec.name.clone(),
        capacity_bytes: spec.capacity,
        lanes: spec.lanes,
        uid: spec.uid,
        gid: spec.gid,
        mode: spec.mode,
    })?);
    // Every message holds permits for its bytes until its rule took it, so the hand-off
    // never holds more than `handoff_bytes` (one larger message passes alone).
    let budget = Arc::new(Semaphore::new(spec.handoff_bytes));
    let limit = u32::try_from(spec.handoff_bytes).unwrap_or(u32::MAX);
    let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<u8>, OwnedSemaphorePermit)>();
    let stopper = channel.stopper();
    let (runtime, room) = (tokio::runtime::Handle::current(), Arc::clone(&budget));
    let reader = Arc::clone(&channel);
    let thread_name = format!("channel-{name}");
    let thread = std::thread::Builder::new()
        .name(thread_name.chars().take(15).collect())
        .spawn(move || {
            // The consumer copies each message out of the hostile region before handing it over.
            let result = reader.run(|message| {
                let want = u32::try_from(message.len())
                    .unwrap_or(u32::MAX)
                    .clamp(1, limit);
                // Fails only once the channel is closing.
                if let Ok(permit) = runtime.block_on(Arc::clone(&room).acquire_many_owned(want)) {
                    let _ = tx.send((message.to_vec(), permit));
                }
            });
            if let Err(e) = result {
                tracing::error!(channel = %reader.name(), "channel stopped: {e}");
            }
        })
        .map_err(|e| triggerd_ipc::IpcError::Os {
            channel: name.to_string(),
            op: "spawn thread",
            source: e,
        })?;
    let rule = name.to_string();
    let emitter = emitter.clone();
    let forward = tokio::spawn(async move {
        while let Some((message, _permit)) = rx.recv().await {
            let event = emitter.event(PathBuf::from(&rule), EventMask::EMPTY, None, message);
            emitter.fire(&rule, event).await;
        }
    });
    lock(channels).insert(name.to_string(), channel);
    tracing::info!(channel = %name, mode = format!("{:o}", spec.mode), "channel open");
    Ok(Open {
        spec: spec.clone(),
        stopper,
        budget,
        thread: Some(thread),
        forward,
    })
}
