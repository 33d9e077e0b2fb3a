//! The webhook source (`[[webhook]]`), and the worked example of a source: it binds one TCP
//! listener per distinct `listen` address, routes `POST path` to its rule, and hands the body
//! over as the payload. Every caller is hostile until proven otherwise: at most `per_peer`
//! connections per peer address (more are answered 429 and closed at once) and
//! `MAX_CONNECTIONS` in all, the head must arrive within `header_timeout` (16 KiB at most)
//! and the body within `body_timeout` (`max_body` at most), and with a `secret` the body must
//! carry a valid `X-Hub-Signature-256`. Refusals are counted per listener (and per rule once
//! the route is known) and logged at most once a second.

mod request;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::{BoxFuture, Emitter, EventSource, SourceContext};
use crate::config::{Rule, Secret, Trigger};
use crate::throttle::Throttle;
use triggerd_support::lock;

/// Connections served at once, over all listeners: a peer that opens many and sends nothing
/// holds at most this many of the daemon's descriptors (the rest wait in the kernel's
/// backlog), so actions and the control socket keep theirs.
const MAX_CONNECTIONS: usize = 256;
/// Pause after a failed accept (e.g. EMFILE), which would otherwise fail again at once.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Where a request for one (address, path) goes.
#[derive(Debug, Clone)]
struct Route {
    rule: String,
    max_body: usize,
    body_timeout: Duration,
    secret: Option<Secret>,
}

/// What holds for a whole listener: the strictest value among the rules sharing it.
#[derive(Debug, Clone, Copy)]
struct Limits {
    per_peer: usize,
    header_timeout: Duration,
}

#[derive(Debug, Default)]
struct Table {
    routes: HashMap<(SocketAddr, String), Route>,
    limits: HashMap<SocketAddr, Limits>,
}

type Shared = Arc<RwLock<Table>>;

/// Counters of one listener, since it was first bound.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    accepted: AtomicU64,
    per_peer_refused: AtomicU64,
    timed_out: AtomicU64,
    unauthorized: AtomicU64,
    log: Throttle,
}

/// What `status` shows per webhook listener.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WebhookStatus {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed at once (429): their peer already held `per_peer`.
    pub per_peer_refused: u64,
    /// Requests cut off by `header_timeout` or `body_timeout` (408).
    pub timed_out: u64,
    /// Requests whose signature was missing or wrong (401).
    pub unauthorized: u64,
}

/// The listeners' counters by address, shared with the control socket.
pub type Webhooks = Arc<Mutex<BTreeMap<SocketAddr, Arc<ListenerCounters>>>>;

pub fn webhook_status(webhooks: &Webhooks) -> BTreeMap<String, WebhookStatus> {
    let all = webhooks.lock().unwrap_or_else(|p| p.into_inner());
    all.iter()
        .map(|(addr, c)| {
            let status = WebhookStatus {
                accepted: c.accepted.load(Ordering::Relaxed),
                per_peer_refused: c.per_peer_refused.load(Ordering::Relaxed),
                timed_out: c.timed_out.load(Ordering::Relaxed),
                unauthorized: c.unauthorized.load(Ordering::Relaxed),
            };
            (addr.to_string(), status)
        })
        .collect()
}

#[derive(Default)]
pub struct WebhookSource {
    webhooks: Webhooks,
}

impl WebhookSource {
    pub fn new(webhooks: Webhooks) -> Self {
        Self { webhooks }
    }
}

impl EventSource for WebhookSource {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn describe(&self) -> &'static str {
        "HTTP POST on a local address fires the rule with the body as payload"
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture {
        Box::pin(run(ctx, self.webhooks))
    }
}

async fn run(mut ctx: SourceContext, webhooks: Webhooks) {
    let table: Shared = Arc::default();
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut listeners: HashMap<SocketAddr, JoinHandle<()>> = HashMap::new();
    loop {
        let bindings = ctx.bindings.borrow_and_update().clone();
        let wanted = apply(&bindings.rules, &table);
        listeners.retain(|addr, task| {
            let keep = wanted.contains(addr);
            if !keep {
                task.abort();
                lock(&webhooks).remove(addr);
            }
            keep
        });
        for addr in wanted {
            if listeners.contains_key(&addr) {
                continue;
            }
            match TcpListener::bind(addr).await {
                Ok(socket) => {
                    tracing::info!(%addr, "webhook listening");
                    let counters = Arc::new(ListenerCounters::default());
                    lock(&webhooks).insert(addr, Arc::clone(&counters));
                    let listener = Listener {
                        addr,
                        table: Arc::clone(&table),
                        connections: Arc::clone(&connections),
                        peers: Arc::default(),
                        counters,
                        emitter: ctx.emitter.clone(),
                    };
                    listeners.insert(addr, tokio::spawn(listener.accept(socket)));
                }
                Err(e) => tracing::error!(%addr, "webhook cannot listen: {e}"),
            }
        }
        ctx.applied(bindings.generation);
        tokio::select! {
            changed = ctx.bindings.changed() => if changed.is_err() { break },
            _ = ctx.shutdown.changed() => break,
        }
    }
    for (_, task) in listeners {
        task.abort();
    }
}

/// Makes the table match `rules`; returns the addresses to listen on.
fn apply(rules: &[Arc<Rule>], table: &Shared) -> Vec<SocketAddr> {
    let mut next = Table::default();
    for rule in rules {
        let Trigger::Webhook(w) = &rule.def.trigger else {
            continue;
        };
        let route = Route {
            rule: rule.name.clone(),
            max_body: w.max_body,
            body_timeout: w.body_timeout,
            secret: w.secret.clone(),
        };
        next.routes.insert((w.listen, w.path.clone()), route);
        let limits = next.limits.entry(w.listen).or_insert(Limits {
            per_peer: w.per_peer,
            header_timeout: w.header_timeout,
        });
        limits.per_peer = limits.per_peer.min(w.per_peer);
        limits.header_timeout = limits.header_timeout.min(w.header_timeout);
    }
    let wanted = next.limits.keys().copied().collect();
    *table.write().unwrap_or_else(|p| p.into_inner()) = next;
    wanted
}

/// One bound address and what its connections share.
struct Listener {
    addr: SocketAddr,
    table: Shared,
    connections: Arc<Semaphore>,
    /// Open connections per peer address.
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    counters: Arc<ListenerCounters>,
    emitter: Emitter,
}

impl Listener {
    async fn accept(self, socket: TcpListener) {
        let this = Arc::new(self);
        loop {
            // The semaphore is never closed.
            let Ok(permit) = Arc::clone(&this.connections).acquire_owned().await else {
                return;
            };
            let (stream, peer) = match socket.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(addr = %this.addr, "webhook accept: {e}");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            };
            this.counters.accepted.fetch_add(1, Ordering::Relaxed);
            let limits = this.limits();
            let Some(slot) = PeerSlot::take(&this.peers, peer.ip(), limits.per_peer) else {
                let refused = this
                    .counters
                    .per_peer_refused
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                if this.counters.log.ready() {
                    tracing::warn!(addr = %this.addr, peer = %peer.ip(), refused,
                        "webhook: peer holds {} connections already: refused", limits.per_peer);
                }
                // Never waits: a peer that does not read its answer costs nothing.
                let _ = stream.try_write(request::TOO_MANY);
                continue;
            };
            let this = Arc::clone(&this);
            tokio::spawn(async move {
                let _held = (permit, slot);
                let outcome = request::serve(stream, &this, limits.header_timeout).await;
                if outcome.status >= 400 {
                    this.refused(peer, outcome);
                }
            });
        }
    }

    fn limits(&self) -> Limits {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        table.limits.get(&self.addr).copied().unwrap_or(Limits {
            per_peer: 1,
            header_timeout: Duration::from_secs(1),
        })
    }

    fn route(&self, path: &str) -> Option<Route> {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        table.routes.get(&(self.addr, path.to_string())).cloned()
    }

    /// Counts a refused request where it belongs and logs it (at most once a second).
    fn refused(&self, peer: SocketAddr, outcome: request::Outcome) {
        let counter = match outcome.status {
            401 => Some(&self.counters.unauthorized),
            408 => Some(&self.counters.timed_out),
            _ => None,
        };
        let count = counter.map(|c| c.fetch_add(1, Ordering::Relaxed) + 1);
        if let Some(rule) = outcome.rule.as_deref().and_then(|r| self.emitter.rule(r)) {
            rule.counters.refused.fetch_add(1, Ordering::Relaxed);
        }
        if count.is_some() && self.counters.log.ready() {
            tracing::warn!(addr = %self.addr, peer = %peer.ip(), status = outcome.status, count,
                "webhook request refused: {}", outcome.reason);
        } else {
            tracing::debug!(addr = %self.addr, peer = %peer.ip(), status = outcome.status,
                "webhook request refused: {}", outcome.reason);
        }
    }
}

/// One of a peer's connections; given back when dropped.
struct PeerSlot {
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PeerSlot {
    fn take(peers: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, limit: usize) -> Option<Self> {
        let mut all = lock(peers);
        let held = all.entry(ip).or_insert(0);
        if *held >= limit {
            return None;
        }
        *held += 1;
        Some(Self {
            peers: Arc::clone(peers),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut all = lock(&self.peers);
        if let Some(held) = all.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                all.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_its_slots_back() {
        let peers = Arc::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = PeerSlot::take(&peers, ip, 2).expect("first");
        let _b = PeerSlot::take(&peers, ip, 2).expect("second");
        assert!(PeerSlot::take(&peers, ip, 2).is_none());
        assert!(PeerSlot::take(&peers, "127.0.0.2".parse().unwrap(), 2).is_some());
        drop(a);
        assert!(PeerSlot::take(&peers, ip, 2).is_some());
    }
}
