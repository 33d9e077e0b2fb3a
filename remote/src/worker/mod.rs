//! The worker role: connects out to the broker (MDP/0.2 with triggerd's hello), serves one
//! service with plugins, heartbeats both ways, and reconnects with exponential back-off
//! (Paranoid Pirate, 1 s … 32 s by default) whenever the broker goes silent or says
//! DISCONNECT, so a broker restart needs no manual action. Requests whose id was seen
//! recently are answered without running the plugin again (at-least-once delivery upstream,
//! at-most-once execution within the de-duplication window). Quick plugins run on the socket
//! thread; blocking ones each get a thread, whose output comes back over an inproc socket.

mod external;
pub mod plugins;
mod process;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use external::{valid_plugin_name, External};
pub use plugins::{Append, Command, Echo, Forward, Outcome, Plugin, PluginRequest};

use crate::codec::{send_frames, Direction, Frame, Message, ReplyKind, Version};
use crate::ext::{self, ReplyHeader, WorkerHello};
use crate::security::Credentials;

/// Exit status when the requested plugin does not exist here.
pub const STATUS_NO_PLUGIN: i32 = 127;
/// How many request ids the worker remembers for de-duplication.
const DEDUP_WINDOW: usize = 100_000;
/// Plugin deadline when a request carries none (it came from outside a triggerd broker).
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How a worker connects and behaves.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Broker endpoint.
    pub endpoint: String,
    /// Service this worker serves.
    pub service: String,
    /// What the connection presents to the broker (CURVE keys, a PLAIN token, or nothing).
    pub credentials: Credentials,
    /// Heartbeat interval (announced to the broker).
    pub heartbeat: Duration,
    /// Heartbeats the broker may miss before the worker reconnects.
    pub liveness: u32,
    /// Requests held at once (announced to the broker).
    pub capacity: u32,
    /// First reconnect delay; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Plugin used when a request names none.
    pub default_plugin: String,
    /// Directory of external plugins, if any.
    pub plugin_dir: Option<PathBuf>,
    /// The user (uid, gid) external plugins run as; `None`: the worker's own.
    pub plugin_user: Option<(u32, u32)>,
}

impl WorkerOptions {
    /// Defaults: 2.5 s heartbeat, liveness 3, capacity 16, back-off 1 s … 32 s, `echo`.
    pub fn new(endpoint: &str, service: &str) -> WorkerOptions {
        WorkerOptions {
            endpoint: endpoint.to_string(),
            service: service.to_string(),
            credentials: Credentials::None,
            heartbeat: Duration::from_millis(2500),
            liveness: 3,
            capacity: 16,
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(32),
            default_plugin: "echo".to_string(),
            plugin_dir: None,
            plugin_user: None,
        }
    }
}

/// Worker failures (only setup errors: network trouble is retried, not reported).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// ZeroMQ failed.
    #[error("zmq: {0}")]
    Zmq(#[from] zmq::Error),
}

/// Counters of a running worker.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Requests given to a plugin.
    pub served: AtomicU64,
    /// Requests answered from the de-duplication window.
    pub duplicates: AtomicU64,
    /// Connections opened to the broker (1 + reconnects).
    pub connections: AtomicU64,
}

/// A worker for one service.
pub struct Worker {
    options: WorkerOptions,
    plugins: HashMap<String, Arc<dyn Plugin>>,
    stats: Arc<WorkerStats>,
}

/// The request ids a worker has run lately (at-most-once execution within the window).
#[derive(Default)]
pub struct Dedup {
    order: VecDeque<u128>,
    seen: HashSet<u128>,
}

impl Dedup {
    /// Records `id`; false when it was already seen (id 0 means "no id" and is never a dup).
    pub fn first_time(&mut self, id: u128) -> bool {
        if id == 0 {
            return true;
        }
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > DEDUP_WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

fn reply_frames(
    address: &[u8],
    id: u128,
    kind: ReplyKind,
    status: i32,
    body: Vec<Frame>,
) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(body.len() + 1);
    frames.push(ReplyHeader { id, status }.encode());
    frames.extend(body);
    Message::WorkerReply {
        version: Version::V2,
        kind,
        address: address.to_vec(),
        body: frames,
    }
    .into_frames()
}

impl Worker {
    /// A worker with the `echo` plugin; add others with [`Worker::add_plugin`].
    pub fn new(options: WorkerOptions) -> Worker {
        let mut plugins: HashMap<String, Arc<dyn Plugin>> = HashMap::new();
        plugins.insert("echo".into(), Arc::new(Echo));
        Worker {
            options,
            plugins,
            stats: Arc::default(),
        }
    }

    /// Makes `plugin` available under `name`.
    pub fn add_plugin(&mut self, name: &str, plugin: Arc<dyn Plugin>) {
        self.plugins.insert(name.to_string(), plugin);
    }

    /// The worker's counters.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// The worker's settings.
    pub fn options(&self) -> &WorkerOptions {
        &self.options
    }

    /// The plugin serving `name` (the default one for an empty name), built-in or external.
    pub fn resolve(&self, name: &str) -> Option<Arc<dyn Plugin>> {
        let name = if name.is_empty() {
            self.options.default_plugin.as_str()
        } else {
            name
        };
        if let Some(p) = self.plugins.get(name) {
            return Some(p.clone());
        }
        let dir = self.options.plugin_dir.as_ref()?;
        External::find(dir, name, self.options.plugin_user).map(|p| Arc::new(p) as Arc<dyn Plugin>)
    }

    fn connect(&self, ctx: &zmq::Context) -> Result<zmq::Socket, zmq::Error> {
        let o = &self.options;
        let socket = o.credentials.dealer(ctx)?;
        socket.connect(&o.endpoint)?;
        let hello = WorkerHello {
            capacity: o.capacity.max(1),
            heartbeat_ms: o.heartbeat.as_millis() as u32,
        };
        let ready = Message::Ready {
            version: Version::V2,
            service: o.service.as_bytes().to_vec(),
            extra: vec![hello.encode()],
        };
        send_frames(&socket, None, ready.into_frames(), 0)?;
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        Ok(socket)
    }

    /// Serves until `shutdown` becomes true, then says DISCONNECT.
    pub fn run(&self, shutdown: &AtomicBool) -> Result<(), WorkerError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let ctx = zmq::Context::new();
        let jobs_endpoint = format!(
            "inproc://triggerd-worker-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let jobs = ctx.socket(zmq::PULL)?;
        jobs.bind(&jobs_endpoint)?;
        let mut dedup = Dedup::default();
        let mut backoff = self.options.reconnect_min;
        let heartbeat = self.options.heartbeat;
        let silence_limit = heartbeat * self.options.liveness.max(1);
        let tick = (heartbeat / 4).clamp(Duration::from_millis(1), Duration::from_millis(100));
        while !shutdown.load(Ordering::Relaxed) {
            let socket = self.connect(&ctx)?;
            let mut last_heard = Instant::now();
            let mut last_sent = Instant::now();
            let reconnect = loop {
                if shutdown.load(Ordering::Relaxed) {
                    let bye = Message::Disconnect {
                        version: Version::V2,
                    }
                    .into_frames();
                    let _ = send_frames(&socket, None, bye, zmq::DONTWAIT);
                    return Ok(());
                }
                let mut items = [
                    socket.as_poll_item(zmq::POLLIN),
                    jobs.as_poll_item(zmq::POLLIN),
                ];
                match zmq::poll(&mut items, tick.as_millis() as i64) {
                    Ok(_) | Err(zmq::Error::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
                let (from_broker, from_jobs) = (items[0].is_readable(), items[1].is_readable());
                if from_jobs {
                    while let Ok(frames) = jobs.recv_multipart(zmq::DONTWAIT) {
                        send_frames(&socket, None, frames, 0)?;
                        last_sent = Instant::now();
                    }
                }
                if from_broker {
                    let mut told_to_leave = false;
                    while let Ok(frames) = socket.recv_multipart(zmq::DONTWAIT) {
                        match Message::decode_owned(frames, Direction::FromBroker) {
                            Ok(Message::WorkerRequest { address, body, .. }) => {
                                last_heard = Instant::now();
                                backoff = self.options.reconnect_min;
                                if self.serve(
                                    &socket,
                                    &ctx,
                                    &jobs_endpoint,
                                    &mut dedup,
                                    address,
                                    body,
                                )? {
                                    last_sent = Instant::now();
                                }
                            }
                            Ok(Message::Heartbeat { .. }) => {
                                last_heard = Instant::now();
                                backoff = self.options.reconnect_min;
                            }
                            Ok(Message::Disconnect { .. }) => told_to_leave = true,
                            Ok(other) => tracing::warn!("worker: unexpected {other:?}"),
                            Err(e) => tracing::warn!("worker: malformed message from broker: {e}"),
                        }
                    }
                    if told_to_leave {
                        break "the broker said DISCONNECT";
                    }
                }
                let now = Instant::now();
                if now.duration_since(last_heard) > silence_limit {
                    break "the broker is silent";
                }
                if now.duration_since(last_sent) >= heartbeat {
                    send_frames(
                        &socket,
                        None,
                        Message::Heartbeat {
                            version: Version::V2,
                        }
                        .into_frames(),
                        0,
                    )?;
                    last_sent = now;
                }
            };
            tracing::info!(service = %self.options.service, "reconnecting in {backoff:?}: {reconnect}");
            drop(socket);
            let until = Instant::now() + backoff;
            while Instant::now() < until && !shutdown.load(Ordering::Relaxed) {
                std::thread::sleep(tick.min(until.saturating_duration_since(Instant::now())));
            }
            backoff = (backoff * 2).min(self.options.reconnect_max);
        }
        Ok(())
    }

    /// Handles one request; returns whether something was sent on `socket` already.
    fn serve(
        &self,
        socket: &zmq::Socket,
        ctx: &zmq::Context,
        jobs_endpoint: &str,
        dedup: &mut Dedup,
        address: Frame,
        body: Vec<Frame>,
    ) -> Result<bool, WorkerError> {
        let (header, rest) = ext::split_request(&body);
        let id = header.as_ref().map_or(0, |h| h.id);
        if !dedup.first_time(id) {
            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            send_frames(
                socket,
                None,
                reply_frames(&address, id, ReplyKind::Final, 0, Vec::new()),
                0,
            )?;
            return Ok(true);
        }
        let field = header.as_ref().map(|h| h.plugin.as_str()).unwrap_or("");
        let (plugin_name, hops) = ext::split_hops(field);
        let Some(plugin) = self.resolve(plugin_name) else {
            let message = format!("no plugin {plugin_name:?} here").into_bytes();
            send_frames(
                socket,
                None,
                reply_frames(
                    &address,
                    id,
                    ReplyKind::Final,
                    STATUS_NO_PLUGIN,
                    vec![message],
                ),
                0,
            )?;
            return Ok(true);
        };
        self.stats.served.fetch_add(1, Ordering::Relaxed);
        let request = PluginRequest {
            id,
            service: self.options.service.clone(),
            payload: rest.concat(),
            timeout: match header.as_ref().map_or(0, |h| h.timeout_ms) {
                0 => DEFAULT_PLUGIN_TIMEOUT,
                ms => Duration::from_millis(ms.into()),
            },
            hops,
        };
        if plugin.inline() {
            let mut sent: Result<(), zmq::Error> = Ok(());
            let outcome = plugin.call(&request, &mut |line| {
                if sent.is_ok() {
                    sent = send_frames(
                        socket,
                        None,
                        reply_frames(&address, id, ReplyKind::Partial, 0, vec![line]),
                        0,
                    );
                }
            });
            sent?;
            send_frames(
                socket,
                None,
                reply_frames(&address, id, ReplyKind::Final, outcome.status, outcome.body),
                0,
            )?;
            return Ok(true);
        }
        let out = ctx.socket(zmq::PUSH)?;
        out.connect(jobs_endpoint)?;
        std::thread::spawn(move || {
            let outcome = plugin.call(&request, &mut |line| {
                let _ = send_frames(
                    &out,
                    None,
                    reply_frames(&address, id, ReplyKind::Partial, 0, vec![line]),
                    0,
                );
            });
            let _ = send_frames(
                &out,
                None,
                reply_frames(&address, id, ReplyKind::Final, outcome.status, outcome.body),
                0,
            );
        });
        Ok(false)
    }
}
