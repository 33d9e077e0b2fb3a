//! Forwarder: drains a [`Spool`] to the broker with at-least-once semantics. Every record is
//! sent with request id `origin << 64 | sequence`, stable across retries and restarts, so
//! workers (and anyone downstream) drop duplicates by id. A record is acknowledged in the
//! spool only when its FINAL arrived and every record before it is done too, so after a crash
//! or a broker outage delivery resumes at the first record not known to be delivered.
//! Records are sent in spool order with up to `window` in flight (window 1 gives strictly
//! serial delivery); a record with no FINAL after `retry_after` is sent again, and so is one
//! the broker could not place on any worker (status 69) or gave up on at its deadline (status
//! 124): waiting in a queue, or held by a worker that may have died, it may never have run.
//! A worker answers a repeat of an id it has run with status 0, so the retry converges. Any
//! other FINAL, whatever its status, counts as delivered (`failed` counts non-zero statuses).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::client::{Client, ClientError, ClientOptions, Event};
use crate::ext::{STATUS_BUSY, STATUS_TIMEOUT, STATUS_UNAVAILABLE};
use crate::replies::{Replies, ReplyHook};
use crate::spool::{Spool, SpoolError, SpoolStats};

/// How long an event the broker refused as busy (75) waits before it is sent again.
const BUSY_PAUSE: Duration = Duration::from_secs(1);

/// Forwarder settings.
#[derive(Debug, Clone)]
pub struct ForwarderOptions {
    /// Broker endpoint.
    pub endpoint: String,
    /// Authentication for the connection.
    pub client: ClientOptions,
    /// Records in flight at once.
    pub window: usize,
    /// Timeout each request carries (the broker answers 69/124 when it passes).
    pub request_timeout: Duration,
    /// Silence after which a record is sent again.
    pub retry_after: Duration,
}

impl ForwarderOptions {
    /// Defaults: window 1024, 30 s request timeout, retry after 31 s.
    pub fn new(endpoint: &str) -> ForwarderOptions {
        ForwarderOptions {
            endpoint: endpoint.to_string(),
            client: ClientOptions::default(),
            window: 1024,
            request_timeout: Duration::from_secs(30),
            retry_after: Duration::from_secs(31),
        }
    }
}

/// Forwarder failures.
#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The connection failed to set up.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Service or plugin name longer than 255 bytes.
    #[error("service or plugin name too long")]
    NameTooLong,
    /// The forwarder thread is gone.
    #[error("forwarder stopped")]
    Stopped,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwarderStats {
    /// Records whose FINAL arrived.
    pub delivered: u64,
    /// Of those, FINALs with a non-zero status.
    pub failed: u64,
    /// Records sent again.
    pub resent: u64,
    /// The spool's counters.
    pub spool: SpoolStats,
}

/// What a forwarder thread shares with those who submit events: the spool behind a lock, the
/// stop flag and the delivery counters. Every transport's forwarder is built on it.
pub struct SpoolFront {
    spool: Mutex<Spool>,
    pub stop: AtomicBool,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub resent: AtomicU64,
    /// Hooks of records whose answer goes back to their sender.
    pub replies: Replies,
}

impl SpoolFront {
    pub fn new(spool: Spool) -> SpoolFront {
        SpoolFront {
            spool: Mutex::new(spool),
            stop: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            resent: AtomicU64::new(0),
            replies: Replies::default(),
        }
    }

    pub fn spool(&self) -> MutexGuard<'_, Spool> {
        // A panic elsewhere must not stop delivery: the spool's state is consistent between calls.
        self.spool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Spools one event for `service` (and `plugin`, empty for the service's default);
    /// returns its sequence number. Fails when the spool is full under the reject policy.
    pub fn append(
        &self,
        service: &str,
        plugin: &str,
        payload: &[u8],
    ) -> Result<u64, ForwarderError> {
        self.append_hooked(service, plugin, payload, None)
    }

    /// Like [`SpoolFront::append`], and `hook` (if any) gets the record's answer. The hook
    /// is registered under the spool's lock, so the forwarder cannot read the record before.
    pub fn append_hooked(
        &self,
        service: &str,
        plugin: &str,
        payload: &[u8],
        hook: Option<ReplyHook>,
    ) -> Result<u64, ForwarderError> {
        let record = encode_record(service, plugin, payload)?;
        let mut spool = self.spool();
        let seq = spool.append(&record)?;
        if let Some(hook) = hook {
            self.replies.expect(seq, hook);
        }
        drop(spool);
        Ok(seq)
    }

    /// The counters and the spool's.
    pub fn stats(&self) -> ForwarderStats {
        ForwarderStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            resent: self.resent.load(Ordering::Relaxed),
            spool: self.spool().stats(),
        }
    }
}

/// Sends spooled records to the broker from a thread of its own.
pub struct Forwarder {
    shared: Arc<SpoolFront>,
    thread: Option<JoinHandle<Result<(), ForwarderError>>>,
}

/// A spool record: service and plugin names (each ≤ 255 bytes) in front of the payload.
/// Other transports' forwarders share the format, so one spool serves either.
pub fn encode_record(
    service: &str,
    plugin: &str,
    payload: &[u8],
) -> Result<Vec<u8>, ForwarderError> {
    let (s, p) = (service.as_bytes(), plugin.as_bytes());
    if s.len() > 255 || p.len() > 255 {
        return Err(ForwarderError::NameTooLong);
    }
    let mut record = Vec::with_capacity(2 + s.len() + p.len() + payload.len());
    record.push(s.len() as u8);
    record.extend_from_slice(s);
    record.push(p.len() as u8);
    record.extend_from_slice(p);
    record.extend_from_slice(payload);
    Ok(record)
}

/// Splits a record into service, plugin and payload; `None` if malformed.
pub fn decode_record(record: &[u8]) -> Option<(&str, &str, &[u8])> {
    let s_len = *record.first()? as usize;
    let service = record.get(1..1 + s_len)?;
    let p_len = *record.get(1 + s_len)? as usize;
    let plugin = record.get(2 + s_len..2 + s_len + p_len)?;
    let payload = record.get(2 + s_len + p_len..)?;
    Some((
        std::str::from_utf8(service).ok()?,
        std::str::from_utf8(plugin).ok()?,
        payload,
    ))
}

impl Forwarder {
    /// Starts draining `spool` to the broker.
    pub fn start(spool: Spool, options: ForwarderOptions) -> Result<Forwarder, ForwarderError> {
        let client = Client::connect(&options.endpoint, options.client.clone())?;
        let shared = Arc::new(SpoolFront::new(spool));
        let inner = shared.clone();
        let thread = std::thread::Builder::new()
            .name("forwarder".into())
            .spawn(move || drain(&inner, client, &options))
            .map_err(|e| {
                ForwarderError::Spool(SpoolError::Io {
                    path: Default::default(),
                    source: e,
                })
            })?;
        Ok(Forwarder {
            shared,
            thread: Some(thread),
        })
    }

    /// Spools one event for `service` (and `plugin`, empty for the service's default);
    /// returns its sequence number. Fails when the spool is full under the reject policy.
    pub fn submit(
        &self,
        service: &str,
        plugin: &str,
        payload: &[u8],
    ) -> Result<u64, ForwarderError> {
        self.submit_hooked(service, plugin, payload, None)
    }

    /// Like [`Forwarder::submit`]; `hook` gets the answer (see [`crate::replies`]).
    pub fn submit_hooked(
        &self,
        service: &str,
        plugin: &str,
        payload: &[u8],
        hook: Option<ReplyHook>,
    ) -> Result<u64, ForwarderError> {
        if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
            return Err(ForwarderError::Stopped);
        }
        self.shared.append_hooked(service, plugin, payload, hook)
    }

    /// Current counters.
    pub fn stats(&self) -> ForwarderStats {
        self.shared.stats()
    }

    /// Stops the thread; undelivered records stay in the spool for next time.
    pub fn stop(mut self) -> Result<(), ForwarderError> {
        self.halt()
    }

    fn halt(&mut self) -> Result<(), ForwarderError> {
        self.shared.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ForwarderError::Stopped),
            None => Ok(()),
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Err(e) = self.halt() {
            tracing::error!("forwarder: {e}");
        }
    }
}

struct Flight {
    sent: Instant,
    record: Vec<u8>,
}

fn send(
    client: &mut Client,
    origin: u64,
    seq: u64,
    record: &[u8],
    timeout: Duration,
) -> Result<(), ClientError> {
    let id = (u128::from(origin) << 64) | u128::from(seq);
    match decode_record(record) {
        Some((service, plugin, payload)) => client
            .send(service, plugin, Some(id), Some(timeout), &[payload])
            .map(|_| ()),
        None => Ok(()),
    }
}

fn drain(
    shared: &SpoolFront,
    mut client: Client,
    options: &ForwarderOptions,
) -> Result<(), ForwarderError> {
    let origin = shared.spool().origin();
    let window = options.window.max(1);
    let mut in_flight: BTreeMap<u64, Flight> = BTreeMap::new();
    let mut last_warning: Option<Instant> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let room = window - in_flight.len();
        if room > 0 {
            let batch = shared.spool().read(room)?;
            let now = Instant::now();
            for (seq, record) in batch {
                if decode_record(&record).is_none() {
                    tracing::error!(seq, "spool record is malformed; skipped");
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                send(&mut client, origin, seq, &record, options.request_timeout)?;
                in_flight.insert(seq, Flight { sent: now, record });
            }
        }
        let mut wait = Duration::from_millis(5);
        for _ in 0..window {
            let Some(event) = client.recv(wait)? else {
                break;
            };
            wait = Duration::ZERO;
            let reply = match event {
                Event::Final(reply) => reply,
                Event::Partial { id, body } => {
                    if (id >> 64) as u64 == origin && in_flight.contains_key(&(id as u64)) {
                        shared.replies.partial(id as u64, &body);
                    }
                    continue;
                }
            };
            if (reply.id >> 64) as u64 != origin {
                continue;
            }
            let seq = reply.id as u64;
            if reply.status == STATUS_UNAVAILABLE || reply.status == STATUS_TIMEOUT {
                if let Some(flight) = in_flight.get_mut(&seq) {
                    flight.sent = Instant::now() - options.retry_after;
                }
            } else if reply.status == STATUS_BUSY {
                // The broker is at its byte bound: resend after a pause, not at once.
                if let Some(flight) = in_flight.get_mut(&seq) {
                    let pause = BUSY_PAUSE.min(options.retry_after);
                    flight.sent = Instant::now() + pause - options.retry_after;
                }
            } else if in_flight.remove(&seq).is_some() {
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                shared.replies.done(seq, reply.status, &reply.body);
                if reply.status != 0 {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        {
            let mut spool = shared.spool();
            let upto = in_flight
                .keys()
                .next()
                .copied()
                .unwrap_or_else(|| spool.read_position());
            // A full or failing disk must not stop delivery: the ack is kept in memory and
            // persisted on a later tick (a crash meanwhile only re-sends, de-duplicated).
            if let Err(e) = spool.ack(upto).and_then(|()| spool.tick()) {
                let now = Instant::now();
                if last_warning.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                    last_warning = Some(now);
                    tracing::warn!("forwarder: {e}");
                }
            }
        }
        let now = Instant::now();
        for (&seq, flight) in in_flight.iter_mut() {
            if now.duration_since(flight.sent) >= options.retry_after {
                send(
                    &mut client,
                    origin,
                    seq,
                    &flight.record,
                    options.request_timeout,
                )?;
                flight.sent = now;
                shared.resent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_rejected() {
        let record = encode_record("svc", "append", b"payload").expect("encode");
        assert_eq!(
            decode_record(&record),
            Some(("svc", "append", &b"payload"[..]))
        );
        assert_eq!(decode_record(&[]), None);
        assert_eq!(decode_record(&[10, b'a']), None);
        assert!(encode_record(&"x".repeat(300), "", b"").is_err());
    }
}
