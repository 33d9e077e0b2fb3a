//! The Majordomo broker behind `triggerd-broker`: configuration, socket setup and the main
//! loop. One ROUTER socket (bound to every configured endpoint) speaks MDP/0.1, MDP/0.2 and
//! MMI to clients and workers; the dispatch state machine lives in `engine`, identities and
//! service settings in `store`, authentication in `zap`. [`run`] returns when `shutdown` is
//! set, after telling every worker to DISCONNECT.

mod engine;
mod memory;
pub mod store;
mod zap;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

pub use memory::return_large_frames_to_the_kernel;
pub use store::{Algorithm, Role, ServiceOverview, ServiceSettings, Store, StoreError};

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
    /// Require PLAIN authentication against the store (ZAP).
    pub auth: bool,
    /// Request timeout for services without their own.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Where to write the bound endpoints (one per line) once listening.
    pub endpoint_file: Option<PathBuf>,
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            bind: vec!["tcp://0.0.0.0:5555".into()],
            store: PathBuf::from("/var/lib/triggerd-broker/store.db"),
            heartbeat: Duration::from_millis(2500),
            liveness: 3,
            max_message: 16 * 1024 * 1024,
            auth: true,
            timeout: Duration::from_secs(30),
            endpoint_file: None,
        }
    }
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

impl BrokerConfig {
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
}

/// Runs the broker until `shutdown` becomes true.
pub fn run(config: &BrokerConfig, shutdown: &AtomicBool) -> Result<(), BrokerError> {
    let ctx = zmq::Context::new();
    let _zap = if config.auth {
        Some(zap::ZapHandler::start(&ctx, config.store.clone())?)
    } else {
        None
    };
    let store = Store::open(&config.store)?;
    let socket = ctx.socket(zmq::ROUTER)?;
    socket.set_linger(0)?;
    socket.set_maxmsgsize(config.max_message)?;
    // ROUTER silently drops on a full pipe; a deep queue keeps pipelined clients lossless.
    socket.set_sndhwm(1_000_000)?;
    socket.set_rcvhwm(1_000_000)?;
    if config.auth {
        socket.set_plain_server(true)?;
        socket.set_zap_domain("triggerd")?;
    }
    let monitor_endpoint = format!("inproc://triggerd-broker-monitor-{}", std::process::id());
    let events = zmq::SocketEvent::DISCONNECTED as i32
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
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, endpoints.join("\n") + "\n")?;
        std::fs::rename(&tmp, path)?;
    }
    let mut engine = engine::Engine::new(socket, store, config);
    engine.reload_settings();
    let tick = (config.heartbeat / 4).clamp(Duration::from_millis(5), Duration::from_millis(50));
    let mut next_tick = Instant::now();
    let mut next_settings = Instant::now() + Duration::from_secs(1);
    while !shutdown.load(Ordering::Relaxed) {
        let wait = next_tick.saturating_duration_since(Instant::now());
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
            log_monitor_events(&monitor);
        }
        let now = Instant::now();
        if now >= next_tick {
            engine.housekeeping(now);
            next_tick = now + tick;
        }
        if now >= next_settings {
            engine.reload_settings();
            next_settings = now + Duration::from_secs(1);
        }
    }
    engine.disconnect_all();
    Ok(())
}

fn log_monitor_events(monitor: &zmq::Socket) {
    while let Ok(frames) = monitor.recv_multipart(zmq::DONTWAIT) {
        let (Some(event), Some(addr)) = (frames.first(), frames.get(1)) else {
            continue;
        };
        let Some(code) = event.get(..2).map(|b| u16::from_le_bytes([b[0], b[1]])) else {
            continue;
        };
        let peer = String::from_utf8_lossy(addr);
        // libzmq does not say why it closed a connection; an oversized frame is one reason.
        match zmq::SocketEvent::from_raw(code) {
            zmq::SocketEvent::DISCONNECTED => tracing::info!(
                endpoint = %peer,
                "connection closed (peer left, or refused: oversized frame, protocol error)"
            ),
            zmq::SocketEvent::HANDSHAKE_FAILED_AUTH => {
                tracing::warn!(endpoint = %peer, "refused: authentication failed")
            }
            zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL => {
                tracing::warn!(endpoint = %peer, "refused: ZMTP protocol error")
            }
            _ => tracing::warn!(endpoint = %peer, "refused: handshake failed"),
        }
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
