//! The spool's drain into JetStream: the same at-least-once contract as the MDP forwarder,
//! with JetStream's acknowledgement as the point of delivery. Records are published in spool
//! order, up to `window` at once, each with `Nats-Msg-Id` = the event id (`origin << 64 |
//! sequence`, stable across retries and restarts), and leave the spool only when the stream
//! acknowledged them and every record before them. Any failure (no server, no quorum, a
//! timeout) rewinds to the first unacknowledged record and publishes again after a pause;
//! the stream's duplicate window drops what it already has and workers de-duplicate too.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::Publish};
use bytes::Bytes;
use tokio::sync::Notify;
use triggerd_remote::forwarder::{decode_record, SpoolFront};
use triggerd_remote::{ForwarderError, ForwarderStats, Spool};

use crate::{connect, runtime, service, wire, NatsError, NatsOptions};

/// Longest pause between attempts while JetStream is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Forwarder settings.
#[derive(Debug, Clone)]
pub struct NatsForwarderOptions {
    /// The servers to publish the spool into, and the credentials to use.
    pub nats: NatsOptions,
    /// Records published and not yet acknowledged at once.
    pub window: usize,
    /// How long to wait for JetStream's acknowledgement before publishing again.
    pub ack_timeout: Duration,
}

/// The spool and counters, and the bell a submit rings to wake the drain.
struct Shared {
    front: SpoolFront,
    wake: Notify,
}

impl std::ops::Deref for Shared {
    type Target = SpoolFront;
    fn deref(&self) -> &SpoolFront {
        &self.front
    }
}

/// Publishes spooled records to JetStream from a thread of its own.
pub struct NatsForwarder {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Result<(), NatsError>>>,
}

impl NatsForwarder {
    /// Starts draining `spool`; returns at once even when no server is reachable.
    pub fn start(spool: Spool, options: NatsForwarderOptions) -> Result<NatsForwarder, NatsError> {
        let shared = Arc::new(Shared {
            front: SpoolFront::new(spool),
            wake: Notify::new(),
        });
        let inner = Arc::clone(&shared);
        let rt = runtime()?;
        let thread = std::thread::Builder::new()
            .name("nats-forwarder".into())
            .spawn(move || rt.block_on(drain(&inner, &options)))
            .map_err(|e| NatsError::Runtime(format!("cannot start a thread: {e}")))?;
        Ok(NatsForwarder {
            shared,
            thread: Some(thread),
        })
    }

    /// Spools one event for `service` (`plugin` empty for the service's default); returns its
    /// sequence number. Fails when the spool is full under the reject policy.
    pub fn submit(
        &self,
        service: &str,
        plugin: &str,
        payload: &[u8],
    ) -> Result<u64, ForwarderError> {
        if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
            return Err(ForwarderError::Stopped);
        }
        let seq = self.shared.append(service, plugin, payload)?;
        self.shared.wake.notify_one();
        Ok(seq)
    }

    /// Current counters (`delivered`: acknowledged by JetStream).
    pub fn stats(&self) -> ForwarderStats {
        self.shared.stats()
    }

    /// Stops the thread; unacknowledged records stay in the spool for next time.
    pub fn stop(mut self) -> Result<(), NatsError> {
        self.halt()
    }

    fn halt(&mut self) -> Result<(), NatsError> {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(NatsError::Runtime("forwarder thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for NatsForwarder {
    fn drop(&mut self) {
        if let Err(e) = self.halt() {
            tracing::error!("nats forwarder: {e}");
        }
    }
}

/// Why a batch stopped: the sequence below which everything was acknowledged, and the cause.
struct Stalled {
    acked_upto: Option<u64>,
    error: NatsError,
}

async fn drain(shared: &Shared, options: &NatsForwarderOptions) -> Result<(), NatsError> {
    let client = connect(&options.nats).await?;
    let mut js = jetstream::new(client);
    js.set_timeout(options.ack_timeout);
    let origin = shared.spool().origin();
    let window = options.window.max(1);
    let mut known = HashSet::new();
    let mut backoff = Duration::from_millis(50);
    let mut last_warning: Option<Instant> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let batch = shared.spool().read(window)?;
        let Some(&(last, _)) = batch.last() else {
            let _ = shared.spool().tick();
            // A submit wakes the drain; the timeout bounds the spool's sync interval.
            let _ = tokio::time::timeout(Duration::from_millis(50), shared.wake.notified()).await;
            continue;
        };
        let acked_upto = match publish(shared, &js, origin, &batch, &mut known).await {
            Ok(()) => {
                backoff = Duration::from_millis(50);
                Some(last + 1)
            }
            Err(stalled) => {
                known.clear();
                let now = Instant::now();
                if last_warning.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(5)) {
                    last_warning = Some(now);
                    tracing::warn!(
                        "nats forwarder: {} (events wait in the spool)",
                        stalled.error
                    );
                }
                let resend = last + 1 - stalled.acked_upto.unwrap_or(batch[0].0);
                shared.resent.fetch_add(resend, Ordering::Relaxed);
                stalled.acked_upto
            }
        };
        let stalled = {
            let mut spool = shared.spool();
            if let Some(upto) = acked_upto {
                // A failing disk must not stop delivery: the ack stays in memory and is
                // persisted later (a crash meanwhile only re-sends, de-duplicated).
                if let Err(e) = spool.ack(upto).and_then(|()| spool.tick()) {
                    tracing::warn!("nats forwarder: {e}");
                }
            }
            let stalled = spool.read_position() > spool.acked();
            if stalled {
                spool.rewind();
            }
            stalled
        };
        if stalled {
            pause(shared, backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
    Ok(())
}

async fn pause(shared: &Shared, total: Duration) {
    let until = tokio::time::Instant::now() + total;
    while !shared.stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes a batch, then awaits the acknowledgements in order.
async fn publish(
    shared: &Shared,
    js: &jetstream::Context,
    origin: u64,
    batch: &[(u64, Vec<u8>)],
    known: &mut HashSet<String>,
) -> Result<(), Stalled> {
    let mut acks = Vec::with_capacity(batch.len());
    let stalled = |acked_upto, error| Stalled { acked_upto, error };
    for (seq, record) in batch {
        let Some((subject, message)) = message(origin, *seq, record) else {
            tracing::error!(
                seq,
                "spool record is malformed or its service name too long; skipped"
            );
            shared.failed.fetch_add(1, Ordering::Relaxed);
            acks.push((*seq, None));
            continue;
        };
        if !known.contains(&subject) {
            let (service, _, _) = decode_record(record).unwrap_or_default();
            service::ensure(js, service)
                .await
                .map_err(|e| stalled(None, e))?;
            known.insert(subject.clone());
        }
        let ack = js
            .send_publish(subject, message)
            .await
            .map_err(|e| stalled(None, NatsError::js(e)))?;
        acks.push((*seq, Some(ack)));
    }
    let mut acked_upto = None;
    for (seq, ack) in acks {
        if let Some(ack) = ack {
            ack.await
                .map_err(|e| stalled(acked_upto, NatsError::js(e)))?;
            shared.delivered.fetch_add(1, Ordering::Relaxed);
        }
        acked_upto = Some(seq + 1);
    }
    Ok(())
}

/// The subject and message of one spool record.
fn message(origin: u64, seq: u64, record: &[u8]) -> Option<(String, Publish)> {
    let (service, plugin, payload) = decode_record(record)?;
    let subject = wire::request_subject(service).ok()?;
    let id = (u128::from(origin) << 64) | u128::from(seq);
    let mut message = Publish::build()
        .payload(Bytes::copy_from_slice(payload))
        .message_id(wire::format_id(id));
    if !plugin.is_empty() {
        message = message.header(wire::PLUGIN, plugin);
    }
    Some((subject, message))
}
