//! The broker's dispatch state machine: services with their workers and queues, requests in
//! flight, heartbeats, liveness, timeouts and fail-over. Invariants: a request token is in at
//! most one place (a service queue, or held by the workers listed in `holders`); a worker's
//! `in_flight` lists exactly the tokens whose `holders` name it; the address frame a worker
//! sees is the request token (8 bytes), so replies from a worker that no longer holds the
//! request (it was declared dead, or the request timed out) are recognised and dropped.
//! READY and requests are admitted in `admission`, replies and dispatch are in `flow`, byte
//! bounds in `bounds`, team checks in `teams`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::refusals::{Refusal, Refusals};
use super::store::{Algorithm, Peer, ServiceSettings, Store};
use super::{BrokerConfig, BrokerError};
use crate::codec::{Direction, Frame, Message, Version};
use crate::ext::{self, RequestHeader, WorkerHello};

/// Longest frame count accepted in one message; the rest of a longer message is discarded.
const MAX_FRAMES: usize = 1024;
/// Requests waiting per service; beyond it clients get status 69 at once (memory bound).
const MAX_QUEUED: usize = 1_000_000;
/// Bytes of streamed output gathered for one MDP/0.1 client; the rest is dropped.
const MAX_GATHERED: usize = 16 * 1024 * 1024;
/// Messages handled per poll wake-up before housekeeping gets a turn.
const DRAIN_BATCH: usize = 4096;
/// Traffic after which an idle broker returns freed heap to the kernel (a cheap call).
const TRIM_AFTER_BYTES: u64 = 4 << 20;

mod admission;
mod bounds;
pub(super) mod catalog;
mod flow;
mod teams;

type Identity = Vec<u8>;

/// One message off the ROUTER: peer identity, ZAP user id (with auth), frames. An
/// `oversized` message kept only its first frames (up to the connection's byte bound).
struct Received {
    peer: Identity,
    user: Option<String>,
    frames: Vec<Frame>,
    oversized: bool,
}

struct Service {
    algorithm: Algorithm,
    timeout: Option<Duration>,
    workers: Vec<Identity>,
    cursor: usize,
    queue: VecDeque<u64>,
    dispatched: usize,
    /// Requests of this service that exist (queued or held); with no workers either, the
    /// entry is pruned, so the map is bounded by live requests and workers.
    live: usize,
}

struct Worker {
    service: Frame,
    version: Version,
    hello: Option<WorkerHello>,
    in_flight: Vec<u64>,
    /// `in_flight.len()` as last written to the store (for `service list`).
    recorded_load: usize,
    expiry: Instant,
    last_sent: Instant,
}

impl Worker {
    fn capacity(&self) -> usize {
        self.hello.map_or(1, |h| h.capacity as usize)
    }
    fn has_room(&self) -> bool {
        self.in_flight.len() < self.capacity()
    }
}

struct Request {
    client: Identity,
    /// The authenticated client (`None` without authentication).
    user: Option<Peer>,
    version: Version,
    service: Frame,
    header: Option<RequestHeader>,
    body: Vec<Frame>,
    deadline: Instant,
    holders: Vec<Identity>,
    status: i32,
    /// MDP/0.1 clients get one reply: streamed parts are gathered here.
    gathered: Vec<Frame>,
    gathered_bytes: usize,
    /// What this request counts against its client's and the broker's queued bytes.
    bytes: u64,
}

pub(crate) struct Engine {
    socket: zmq::Socket,
    store: Store,
    services: HashMap<Frame, Service>,
    settings: HashMap<String, ServiceSettings>,
    workers: HashMap<Identity, Worker>,
    requests: HashMap<u64, Request>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    next_token: u64,
    heartbeat: Duration,
    liveness: u32,
    default_timeout: Duration,
    auth: bool,
    refusals: Refusals,
    /// Bytes of live requests, in total and per client identity (entries at zero removed).
    queued_bytes: u64,
    client_bytes: HashMap<Identity, u64>,
    queue_bytes: u64,
    client_queue_bytes: u64,
    /// Frame bytes received since freed heap was last given back to the kernel.
    received_since_trim: u64,
    /// Catalog subscribers and what was pushed to them.
    catalog: catalog::CatalogState,
}

/// A peer-chosen name as it may appear in a log line: at most 64 bytes, control and non-ASCII
/// bytes escaped (`\x1b`, `\n`), so no name can inject escape codes or forge log lines.
fn shown(name: &[u8]) -> String {
    let head = &name[..name.len().min(64)];
    match name.len() > head.len() {
        true => format!("{}... ({} bytes)", head.escape_ascii(), name.len()),
        false => head.escape_ascii().to_string(),
    }
}

fn hex(id: &[u8]) -> String {
    id.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

impl Engine {
    pub(crate) fn new(
        socket: zmq::Socket,
        store: Store,
        config: &BrokerConfig,
        auth: bool,
    ) -> Engine {
        if let Err(e) = store.forget_worker(None) {
            tracing::warn!("cannot reset the live worker list: {e}");
        }
        Engine {
            socket,
            store,
            services: HashMap::new(),
            settings: HashMap::new(),
            workers: HashMap::new(),
            requests: HashMap::new(),
            deadlines: BinaryHeap::new(),
            next_token: 1,
            heartbeat: config.heartbeat,
            liveness: config.liveness,
            default_timeout: config.timeout,
            auth,
            refusals: Refusals::default(),
            queued_bytes: 0,
            client_bytes: HashMap::new(),
            queue_bytes: config.queue_bytes,
            client_queue_bytes: config.client_queue_bytes,
            received_since_trim: 0,
            catalog: catalog::CatalogState::default(),
        }
        .with_catalog_pushed()
    }

    pub(crate) fn socket(&self) -> &zmq::Socket {
        &self.socket
    }

    pub(crate) fn reload_settings(&mut self) {
        match self.store.services() {
            Ok(settings) => self.apply_settings(settings),
            Err(e) => tracing::warn!("cannot reload service settings: {e}"),
        }
    }

    fn apply_settings(&mut self, settings: Vec<ServiceSettings>) {
        self.settings = settings.into_iter().map(|s| (s.name.clone(), s)).collect();
        for (name, service) in &mut self.services {
            let stored = std::str::from_utf8(name)
                .ok()
                .and_then(|n| self.settings.get(n));
            service.algorithm = stored.map(|s| s.algorithm).unwrap_or_default();
            service.timeout = stored.and_then(|s| s.timeout);
        }
    }

    /// Receives and handles every message waiting on the socket (up to a batch).
    pub(crate) fn drain(&mut self) -> Result<(), BrokerError> {
        for _ in 0..DRAIN_BATCH {
            let Some(received) = self.receive()? else {
                self.trim_after_traffic();
                return Ok(());
            };
            if received.oversized {
                self.on_oversized(received.peer, received.frames);
                continue;
            }
            self.handle(received.peer, received.user, received.frames);
        }
        Ok(())
    }

    /// Once the socket is empty after a burst of traffic, gives the freed frames' memory
    /// back to the kernel: a flood must not leave the broker at its high water.
    fn trim_after_traffic(&mut self) {
        if self.received_since_trim >= TRIM_AFTER_BYTES {
            self.received_since_trim = 0;
            triggerd_support::release_free_heap();
        }
    }

    fn receive(&mut self) -> Result<Option<Received>, BrokerError> {
        let identity = match self.socket.recv_msg(zmq::DONTWAIT) {
            Ok(m) => m,
            Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut more = identity.get_more();
        let mut frames = Vec::new();
        let mut user = None;
        let (mut bytes, mut oversized, mut count) = (0u64, false, 0usize);
        while more {
            let mut part = self.socket.recv_msg(0)?;
            more = part.get_more();
            if frames.is_empty() && self.auth {
                user = part.gets("User-Id").map(str::to_string);
            }
            count += 1;
            bytes += part.len() as u64;
            self.received_since_trim += part.len() as u64;
            // The whole message is never held: past the bound only the first frames stay.
            oversized |= bytes > self.client_queue_bytes;
            if count <= MAX_FRAMES && !oversized {
                frames.push(part.to_vec());
            }
        }
        if count > MAX_FRAMES && !oversized {
            let peer = hex(&identity);
            self.refusals
                .refuse(Refusal::Frames, || format!("peer {peer}"));
            frames.clear();
        }
        Ok(Some(Received {
            peer: identity.to_vec(),
            user,
            frames,
            oversized,
        }))
    }

    fn send(&self, peer: &[u8], frames: Vec<Frame>) {
        if let Err(e) = crate::codec::send_frames(&self.socket, Some(peer), frames, zmq::DONTWAIT) {
            tracing::debug!(peer = %hex(peer), "send failed: {e}");
        }
    }

    fn send_worker(&mut self, peer: &[u8], msg: Message) {
        if let Some(w) = self.workers.get_mut(peer) {
            w.last_sent = Instant::now();
        }
        self.send(peer, msg.into_frames());
    }

    fn handle(&mut self, peer: Identity, user: Option<String>, frames: Vec<Frame>) {
        let user = user.as_deref().and_then(Peer::parse);
        let msg = match Message::decode_owned(frames, Direction::ToBroker) {
            Ok(m) => m,
            Err(e) => {
                let peer = hex(&peer);
                self.refusals
                    .refuse(Refusal::Malformed, || format!("peer {peer}: {e}"));
                return;
            }
        };
        match msg {
            Message::ClientRequest {
                version,
                service,
                body,
            } => self.on_request(peer, user, version, service, body),
            Message::Ready {
                version,
                service,
                extra,
            } => self.on_ready(peer, user.as_ref(), version, service, &extra),
            Message::WorkerReply {
                kind,
                address,
                body,
                ..
            } => self.on_reply(&peer, kind, &address, body),
            Message::Heartbeat { version } => match self.workers.get_mut(&peer) {
                Some(w) => {
                    w.expiry = Instant::now() + expiry_after(self.heartbeat, self.liveness, w.hello)
                }
                None => self.send(&peer, Message::Disconnect { version }.into_frames()),
            },
            Message::Disconnect { .. } => self.drop_worker(&peer, "disconnected"),
            other => {
                let name = kind_name(&other);
                let id = hex(&peer);
                self.refusals
                    .refuse(Refusal::Unexpected, || format!("peer {id}: {name}"));
                if self.workers.contains_key(&peer) {
                    let version = other.version();
                    self.send(&peer, Message::Disconnect { version }.into_frames());
                    self.drop_worker(&peer, "sent an unexpected command");
                }
            }
        }
    }

    fn expiry_for(&self, hello: Option<WorkerHello>) -> Duration {
        expiry_after(self.heartbeat, self.liveness, hello)
    }

    fn service_entry(&mut self, name: &[u8]) -> &mut Service {
        let settings = std::str::from_utf8(name)
            .ok()
            .and_then(|n| self.settings.get(n));
        self.services
            .entry(name.to_vec())
            .or_insert_with(|| Service {
                algorithm: settings.map(|s| s.algorithm).unwrap_or_default(),
                timeout: settings.and_then(|s| s.timeout),
                workers: Vec::new(),
                cursor: 0,
                queue: VecDeque::new(),
                dispatched: 0,
                live: 0,
            })
    }

    /// Heartbeats idle workers, drops silent ones and times out overdue requests.
    pub(crate) fn housekeeping(&mut self, now: Instant) {
        let mut dead = Vec::new();
        let mut idle = Vec::new();
        for (id, w) in &self.workers {
            if now >= w.expiry {
                dead.push(id.clone());
            } else if now.duration_since(w.last_sent) >= heartbeat_towards(self.heartbeat, w.hello)
            {
                idle.push((id.clone(), w.version));
            }
        }
        for id in dead {
            self.drop_worker(&id, "missed its heartbeats");
        }
        for (id, version) in idle {
            self.send_worker(&id, Message::Heartbeat { version });
        }
        while let Some(Reverse((deadline, token))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let Some(request) = self.requests.get(&token) else {
                continue;
            };
            let service = request.service.clone();
            let queued = request.holders.is_empty();
            let name = shown(&service);
            self.refusals.refuse(Refusal::Timeout, || {
                format!("token {token}, service {name}")
            });
            let body = if request.header.is_some() {
                Vec::new()
            } else {
                vec![b"timeout".to_vec()]
            };
            if queued {
                // Still queued: `finish` must not release a dispatch slot it never took.
                if let Some(s) = self.services.get_mut(&service) {
                    s.dispatched += 1;
                }
            }
            self.finish(token, body, ext::STATUS_TIMEOUT);
            self.dispatch(&service);
        }
        self.refusals.flush(now);
    }

    pub(crate) fn disconnect_all(&mut self) {
        let peers: Vec<(Identity, Version)> = self
            .workers
            .iter()
            .map(|(id, w)| (id.clone(), w.version))
            .collect();
        for (id, version) in peers {
            self.send(&id, Message::Disconnect { version }.into_frames());
        }
    }
}

/// How often to heartbeat a worker: a triggerd worker announced its own interval (and
/// judges the broker dead after `liveness` of them), so the shorter of both applies.
fn heartbeat_towards(broker: Duration, hello: Option<WorkerHello>) -> Duration {
    let theirs = hello.map_or(broker, |h| Duration::from_millis(h.heartbeat_ms.into()));
    broker.min(theirs).max(Duration::from_millis(1))
}

/// How long a worker may stay silent: the slower of both heartbeat intervals, `liveness` times.
fn expiry_after(heartbeat: Duration, liveness: u32, hello: Option<WorkerHello>) -> Duration {
    let theirs = hello.map_or(Duration::ZERO, |h| {
        Duration::from_millis(h.heartbeat_ms.into())
    });
    heartbeat.max(theirs) * liveness
}

fn kind_name(msg: &Message) -> &'static str {
    match msg {
        Message::ClientRequest { .. } => "client REQUEST",
        Message::ClientReply { .. } => "client REPLY",
        Message::Ready { .. } => "READY",
        Message::WorkerRequest { .. } => "worker REQUEST",
        Message::WorkerReply { .. } => "worker REPLY",
        Message::Heartbeat { .. } => "HEARTBEAT",
        Message::Disconnect { .. } => "DISCONNECT",
    }
}
