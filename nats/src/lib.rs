//! triggerd's second transport: services on a NATS JetStream cluster instead of the ZeroMQ
//! broker, chosen by a `nats://` `[broker] endpoint`. Each service is one work-queue stream
//! ([`service`]: its algorithm and limits live in the stream's own configuration), the host's
//! durable spool drains into it ([`forwarder`]), workers pull from durable consumers and run
//! the same plugins as MDP workers ([`worker`]), and [`client`] makes one request with its
//! output streamed back. Subjects and headers, the contract any NATS client can use, are in
//! [`wire`] and `docs/nats.md`.

#![warn(missing_docs, unreachable_pub)]

pub mod client;
pub mod forwarder;
pub mod service;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wire;
pub mod worker;

use std::path::PathBuf;
use std::time::Duration;

pub use client::{request, Final};
pub use forwarder::NatsForwarder;
pub use service::{Algorithm, ServiceConfig};
pub use worker::{NatsWorker, NatsWorkerStats};

/// The `nats://` scheme that selects this transport in `[broker] endpoint`.
pub const SCHEME: &str = "nats://";

/// The scheme of a NATS server that requires TLS.
pub const TLS_SCHEME: &str = "tls://";

/// True when `endpoint` names NATS servers (`nats://HOST:PORT` or `tls://HOST:PORT`, several
/// separated by commas).
pub fn is_nats(endpoint: &str) -> bool {
    endpoint.starts_with(SCHEME) || endpoint.starts_with(TLS_SCHEME)
}

/// The server URLs of a `nats://a:4222,nats://b:4222` endpoint; `None` when one is not
/// `nats://HOST:PORT` (or `tls://`).
pub fn servers(endpoint: &str) -> Option<Vec<String>> {
    let urls: Vec<String> = endpoint.split(',').map(|s| s.trim().to_string()).collect();
    let ok = urls.iter().all(|u| {
        let rest = u
            .strip_prefix(SCHEME)
            .or_else(|| u.strip_prefix(TLS_SCHEME));
        rest.is_some_and(|r| !r.is_empty() && !r.contains(|c: char| c.is_whitespace() || c == '/'))
    });
    (ok && !urls.is_empty()).then_some(urls)
}

/// How to reach and authenticate to the NATS servers. Secrets are read from files at
/// connect time; none lives in the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsOptions {
    /// Server URLs (the cluster's seed list; others are learnt from the servers).
    pub servers: Vec<String>,
    /// Connection name shown by the servers (`[broker] identity` or the host name).
    pub name: String,
    /// User and password (the password read from a file by the caller).
    pub user_password: Option<(String, String)>,
    /// A `.creds` file (user JWT and nkey seed), as `nsc` writes it.
    pub creds: Option<PathBuf>,
    /// A file holding an nkey seed (`SU...`).
    pub nkey: Option<PathBuf>,
    /// CA certificate(s) to verify the servers' TLS certificates; implies TLS.
    pub tls_ca: Option<PathBuf>,
}

/// NATS transport failures.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// A credentials file could not be read.
    #[error("{path}: {source}")]
    Credentials {
        /// The `.creds` or nkey seed file named in the options.
        path: PathBuf,
        /// Why reading it failed.
        source: std::io::Error,
    },
    /// The connection could not be set up.
    #[error("connect: {0}")]
    Connect(#[from] async_nats::ConnectError),
    /// JetStream refused or failed an operation.
    #[error("jetstream: {0}")]
    JetStream(String),
    /// The service name cannot become a subject and stream name.
    #[error("service name `{0}` is too long for NATS")]
    Name(String),
    /// No final reply within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] triggerd_remote::SpoolError),
    /// A thread or runtime could not start, or stopped.
    #[error("{0}")]
    Runtime(String),
}

impl NatsError {
    pub(crate) fn js(e: impl std::fmt::Display) -> NatsError {
        NatsError::JetStream(e.to_string())
    }
}

/// How long a connection attempt may take before it is retried in the background.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to the servers. Returns at once even when none is up: the client keeps retrying
/// (and reconnecting after a failure) in the background, and requests made meanwhile fail
/// with a timeout.
pub async fn connect(options: &NatsOptions) -> Result<async_nats::Client, NatsError> {
    let mut connect = match &options.creds {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|source| NatsError::Credentials {
                path: path.clone(),
                source,
            })?,
        None => async_nats::ConnectOptions::new(),
    };
    if let Some(path) = &options.nkey {
        let seed = std::fs::read_to_string(path).map_err(|source| NatsError::Credentials {
            path: path.clone(),
            source,
        })?;
        connect = connect.nkey(seed.trim().to_string());
    }
    if let Some((user, password)) = &options.user_password {
        connect = connect.user_and_password(user.clone(), password.clone());
    }
    if let Some(ca) = &options.tls_ca {
        connect = connect.add_root_certificates(ca.clone()).require_tls(true);
    }
    if !options.name.is_empty() {
        connect = connect.name(&options.name);
    }
    let servers: Vec<async_nats::ServerAddr> = options
        .servers
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .map_err(|e: std::io::Error| NatsError::Runtime(format!("server address: {e}")))?;
    Ok(connect
        .connection_timeout(CONNECT_TIMEOUT)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempt| {
            Duration::from_millis((100u64 << attempt.min(5)).min(2000))
        })
        .connect(servers)
        .await?)
}

/// A single-threaded runtime for a transport thread (forwarder, worker, `triggerctl send`).
pub fn runtime() -> Result<tokio::runtime::Runtime, NatsError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| NatsError::Runtime(format!("tokio runtime: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_lists_of_nats_urls() {
        assert!(is_nats("nats://127.0.0.1:4222"));
        assert!(is_nats("tls://127.0.0.1:4222"));
        assert!(!is_nats("tcp://127.0.0.1:5555"));
        assert_eq!(
            servers("nats://a:1, nats://b:2").expect("two"),
            vec!["nats://a:1".to_string(), "nats://b:2".to_string()]
        );
        assert!(servers("nats://a:1,tcp://b:2").is_none());
        assert!(servers("nats://").is_none());
        assert!(servers("nats://a b:1").is_none());
    }
}
