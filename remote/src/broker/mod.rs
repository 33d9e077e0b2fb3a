//! The Majordomo broker behind `triggerd-broker`: configuration, socket setup and the main
//! loop. One ROUTER socket (bound to every configured endpoint) speaks MDP/0.1, MDP/0.2 and
//! MMI to clients and workers, secured by CURVE (the broker's key pair), PLAIN or nothing; the
//! dispatch state machine and team checks live in `engine`, identities, teams and service
//! settings in `store`, authentication in `zap`, the bounds on connections still
//! authenticating in `handshakes`, refusal counters and their rate-limited log in `refusals`.
//! [`run`] returns when `shutdown` is set, after telling every worker to DISCONNECT.

mod engine;
mod handshakes;
mod memory;
mod metrics;
mod refusals;
pub mod store;
mod zap;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

pub use engine::catalog::{Pong, Snapshot, Update, CATALOG_SERVICE};
pub use memory::return_large_frames_to_the_kernel;
pub use store::MAX_ENTRIES as MAX_ENTRIES_PER_TEAM;
pub use store::{
    Access, Algorithm, CatalogChange, CatalogEntry, IdentityInfo, Peer, Role, ServiceOverview,
    ServiceSettings, Store, StoreError, DEFAULT_TEAM,
};

use crate::security::{KeyPair, Mechanism, SecurityError};

/// How often the broker looks for catalog changes made by the admin verbs.
const CATALOG_POLL: Duration = Duration::from_millis(25);

/// Broker configuration (the `--config` TOML file; every key optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Endpoints the ROUTER socket binds, e.g. `tcp://0.0.0.0:5555`.
    pub bind: Vec<String>,
    /// SQLite store with identities and service settings.
    pub store: PathBuf,
    /// Heartbeat interval towards workers.
    #[serde(deserialize_with = "duration")]
    pub heartbeat: Duration,
    /// Heartbeats a worker may miss before it is dropped.
    pub liveness: u32,
    /// Largest accepted frame in bytes (ZMQ_MAXMSGSIZE); larger ones drop the connection.
    pub max_message: i64,
    /// How peers connect: `curve`, `plain` (cleartext tokens) or `none`. Unset: `curve` when
    /// `secret_key` exists, else `plain` (or `none` with `auth = false`), so a broker from
    /// before CURVE keeps working until its key pair is generated.
    pub security: Option<Mechanism>,
    /// The broker's CURVE secret key file (`triggerd-broker keygen` writes it, 0600, and its
    /// public half next to it as `<secret_key>.pub`).
    pub secret_key: PathBuf,
    /// Legacy switch: `false` means `security = "none"` when `security` is unset.
    pub auth: bool,
    /// Request timeout for services without their own.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Where to write the bound endpoints (one per line) once listening.
    pub endpoint_file: Option<PathBuf>,
    /// Where to write the metrics endpoint's bound address (one line) once listening.
    pub metrics_file: Option<PathBuf>,
    /// Bytes of requests (queued or at a worker) the broker holds for all clients together.
    pub queue_bytes: u64,
    /// Bytes of requests the broker holds for one connection (ROUTER routing identity); also
    /// the largest message it reads whole.
    pub client_queue_bytes: u64,
    /// Connections whose handshake (with `auth`, PLAIN and ZAP) is not done, in total.
    pub max_handshakes: u32,
    /// The same, per peer IP address.
    pub handshakes_per_address: u32,
    /// A connection whose handshake is not done by then is closed.
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    /// `IP:PORT` of the Prometheus endpoint (port 0: any free port); none when unset.
    pub metrics: Option<String>,
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            bind: vec!["tcp://0.0.0.0:5555".into()],
            store: PathBuf::from("/var/lib/triggerd-broker/store.db"),
            security: None,
            secret_key: PathBuf::from("/var/lib/triggerd-broker/secret.key"),
            heartbeat: Duration::from_millis(2500),
            liveness: 3,
            max_message: 16 * 1024 * 1024,
            auth: true,
            timeout: Duration::from_secs(30),
            endpoint_file: None,
            metrics_file: None,
            queue_bytes: 256 * 1024 * 1024,
            client_queue_bytes: 64 * 1024 * 1024,
            max_handshakes: 256,
            handshakes_per_address: 32,
            handshake_timeout: Duration::from_secs(30),
            metrics: None,
        }
    }
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

impl BrokerConfig {
    /// The mechanism in effect (see `security`).
    pub fn mechanism(&self) -> Mechanism {
        match self.security {
            Some(m) => m,
            None if !self.auth => Mechanism::None,
            None if self.secret_key.exists() => Mechanism::Curve,
            None => Mechanism::Plain,
        }
    }

    /// Parses a TOML configuration.
    pub fn from_toml(text: &str) -> Result<BrokerConfig, BrokerError> {
        let config: BrokerConfig =
            toml::from_str(text).map_err(|e| BrokerError::Config(e.to_string()))?;
        if config.bind.is_empty() {
            return Err(BrokerError::Config("`bind` lists no endpoint".into()));
        }
        if config.heartbeat.is_zero() || config.liveness == 0 {
            return Err(BrokerError::Config(
                "`heartbeat` and `liveness` must be positive".into(),
            ));
        }
        let positive = [
            ("queue_bytes", config.queue_bytes),
            ("client_queue_bytes", config.client_queue_bytes),
            ("max_handshakes", config.max_handshakes.into()),
            (
                "handshakes_per_address",
                config.handshakes_per_address.into(),
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(BrokerError::Config(format!("`{key}` must be positive")));
        }
        if config.handshake_timeout.is_zero()
            || config.handshake_timeout.as_millis() > i32::MAX as u128
        {
            return Err(BrokerError::Config(
                "`handshake_timeout` must be positive (and under 24 days)".into(),
            ));
        }
        if config.max_handshakes > i32::MAX as u32
            || config.handshakes_per_address > i32::MAX as u32
        {
            return Err(BrokerError::Config(
                "`max_handshakes` and `handshakes_per_address` must be below 2^31".into(),
            ));
        }
        if let Some(address) = &config.metrics {
            triggerd_metrics::parse_address(address)
                .map_err(|e| BrokerError::Config(e.to_string()))?;
        }
        Ok(config)
    }
}

/// Broker failures.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Bad configuration.
    #[error("config: {0}")]
    Config(String),
    /// ZeroMQ failed.
    #[error("zmq: {0}")]
    Zmq(#[from] zmq::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// I/O failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The metrics endpoint cannot start.
    #[error(transparent)]
    Metrics(#[from] triggerd_metrics::MetricsError),
    /// CURVE is missing or the key pair cannot be loaded.
    #[error(transparent)]
    Security(#[from] SecurityError),
}

/// The broker's key pair for `security = "curve"`, with a hint when the file is missing.
fn server_keys(config: &BrokerConfig) -> Result<KeyPair, BrokerError> {
    crate::security::curve_available()?;
    KeyPair::load(&config.secret_key).map_err(|e| match e {
        SecurityError::File(path, io) if io.kind() == std::io::ErrorKind::NotFound => {
            BrokerError::Config(format!(
                "secret_key {}: no such file; create the broker's key pair with \
                 `triggerd-broker keygen`",
                path.display()
            ))
        }
        other => other.into(),
    })
}

/// Runs the broker until `shutdown` becomes true.
pub fn run(config: &BrokerConfig, shutdown: &AtomicBool) -> Result<(), BrokerError> {
    let mechanism = config.mechanism();
    let keys = match mechanism {
        Mechanism::Curve => Some(server_keys(config)?),
        _ => None,
    };
    let auth = mechanism != Mechanism::None;
    let ctx = zmq::Context::new();
    let _zap = if auth {
        Some(zap::ZapHandler::start(
            &ctx,
            config.store.clone(),
            mechanism,
        )?)
    } else {
        None
    };
    let store = Store::open(&config.store)?;
    let mut socket = ctx.socket(zmq::ROUTER)?;
    socket.set_linger(0)?;
    socket.set_maxmsgsize(config.max_message)?;
    // ROUTER silently drops on a full pipe; a deep queue keeps pipelined clients lossless.
    socket.set_sndhwm(1_000_000)?;
    socket.set_rcvhwm(1_000_000)?;
    match &keys {
        Some(keys) => {
            socket.set_curve_server(true)?;
            socket.set_curve_secretkey(&keys.secret)?;
        }
        None if auth => socket.set_plain_server(true)?,
        None => {}
    }
    if auth {
        socket.set_zap_domain("triggerd")?;
    }
    if mechanism == Mechanism::Plain {
        tracing::warn!("security = \"plain\": tokens and payloads cross the network in cleartext");
    }
    tracing::info!(security = mechanism.as_str(), "broker security");
    socket.set_handshake_ivl(config.handshake_timeout.as_millis() as i32)?;
    handshakes::bound(
        &mut socket,
        config.max_handshakes as i32,
        config.handshakes_per_address as i32,
    )?;
    let monitor_endpoint = format!("inproc://triggerd-broker-monitor-{}", std::process::id());
    let events = zmq::SocketEvent::DISCONNECTED as i32
        | zmq::SocketEvent::ACCEPT_FAILED as i32
        | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32
        | zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as i32
        | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32;
    socket.monitor(&monitor_endpoint, events)?;
    let monitor = ctx.socket(zmq::PAIR)?;
    monitor.connect(&monitor_endpoint)?;
    let mut endpoints = Vec::new();
    for endpoint in &config.bind {
        socket.bind(endpoint)?;
        let bound = socket
            .get_last_endpoint()?
            .unwrap_or_else(|_| endpoint.clone());
        tracing::info!("listening on {bound}");
        endpoints.push(bound);
    }
    if let Some(path) = &config.endpoint_file {
        triggerd_support::write_atomically(path, (endpoints.join("\n") + "\n").as_bytes())?;
    }
    let mut engine = engine::Engine::new(socket, store, config, auth);
    engine.reload_settings();
    let metrics = config.metrics.as_deref().map(metrics::start).transpose()?;
    if let Some((endpoint, published)) = &metrics {
        *triggerd_support::lock(published) = engine.snapshot();
        if let Some(path) = &config.metrics_file {
            let line = format!("{}\n", endpoint.address());
            triggerd_support::write_atomically(path, line.as_bytes())?;
        }
    }
    let tick = (config.heartbeat / 4).clamp(Duration::from_millis(5), Duration::from_millis(50));
    let mut next_tick = Instant::now();
    let mut next_settings = Instant::now() + Duration::from_secs(1);
    // Admin verbs write the store: a catalog change reaches subscribers within this.
    let mut next_catalog = Instant::now();
    while !shutdown.load(Ordering::Relaxed) {
        let wait = next_tick
            .min(next_catalog)
            .saturating_duration_since(Instant::now());
        let mut items = [
            engine.socket().as_poll_item(zmq::POLLIN),
            monitor.as_poll_item(zmq::POLLIN),
        ];
        match zmq::poll(&mut items, wait.as_millis() as i64) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let (peers_ready, monitor_ready) = (items[0].is_readable(), items[1].is_readable());
        if peers_ready {
            engine.drain()?;
        }
        if monitor_ready {
            count_monitor_events(&monitor, &mut engine);
        }
        let now = Instant::now();
        if now >= next_tick {
            engine.housekeeping(now);
            next_tick = now + tick;
        }
        if now >= next_catalog {
            engine.push_catalog();
            next_catalog = now + CATALOG_POLL;
        }
        if now >= next_settings {
            engine.reload_settings();
            engine.record_loads();
            if let Some((_, published)) = &metrics {
                *triggerd_support::lock(published) = engine.snapshot();
            }
            next_settings = now + Duration::from_secs(1);
        }
    }
    engine.disconnect_all();
    Ok(())
}

/// Counts (and logs, rate-limited) what the socket monitor reports: connections closed,
/// refused at once past the handshake bounds, or failing their handshake.
fn count_monitor_events(monitor: &zmq::Socket, engine: &mut engine::Engine) {
    use refusals::Refusal;
    while let Ok(frames) = monitor.recv_multipart(zmq::DONTWAIT) {
        let (Some(event), Some(addr)) = (frames.first(), frames.get(1)) else {
            continue;
        };
        let (Some(code), Some(value)) = (
            event.get(..2).map(|b| u16::from_le_bytes([b[0], b[1]])),
            event
                .get(2..6)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ) else {
            continue;
        };
        let endpoint = String::from_utf8_lossy(addr).into_owned();
        let (kind, why) = match zmq::SocketEvent::from_raw(code) {
            zmq::SocketEvent::DISCONNECTED => (Refusal::Closed, "closed"),
            zmq::SocketEvent::ACCEPT_FAILED if handshakes::refused(value) => {
                (Refusal::Handshakes, handshakes::reason(value))
            }
            zmq::SocketEvent::ACCEPT_FAILED => (Refusal::Handshake, "accept failed"),
            zmq::SocketEvent::HANDSHAKE_FAILED_AUTH => {
                (Refusal::Handshake, "authentication failed")
            }
            zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL => {
                (Refusal::Handshake, "ZMTP protocol error")
            }
            _ => (
                Refusal::Handshake,
                "no detail (e.g. `handshake_timeout` passed)",
            ),
        };
        engine.refused(kind, || format!("endpoint {endpoint}: {why}"));
    }
}

/// Process-wide flag set by SIGTERM/SIGINT for the binaries.
pub fn shutdown_on_signals() -> Result<&'static AtomicBool, BrokerError> {
    static FLAG: std::sync::OnceLock<std::sync::Arc<AtomicBool>> = std::sync::OnceLock::new();
    let flag = FLAG.get_or_init(|| std::sync::Arc::new(AtomicBool::new(false)));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, flag.clone())?;
    }
    Ok(flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_key_takes_an_ip_and_port_only() {
        let config = BrokerConfig::from_toml("metrics = \"127.0.0.1:0\"").expect("valid");
        assert_eq!(config.metrics.as_deref(), Some("127.0.0.1:0"));
        let error = BrokerConfig::from_toml("metrics = \"localhost\"").expect_err("no port");
        assert!(error.to_string().contains("expected IP:PORT"), "{error}");
        assert!(
            BrokerConfig::from_toml("metric = \"127.0.0.1:1\"").is_err(),
            "unknown key"
        );
    }
}
