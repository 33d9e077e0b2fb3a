//! The Prometheus endpoint that triggerd and triggerd-broker may serve (`metrics = "ADDR"`):
//! a small HTTP/1.x server on its own threads that answers `GET /metrics` with the text
//! exposition of a [`Collector`] (prometheus-client), and [`Families`], the helper collectors
//! use to write counters and gauges from a status snapshot taken at scrape time (no second
//! set of counters). The request is outside input: its head is bounded in bytes
//! ([`MAX_REQUEST`]) and time ([`REQUEST_TIMEOUT`]), at most [`MAX_CONNECTIONS`] are served
//! at once, and what is refused is counted (exposed as `PREFIX_metrics_refused_total`) and
//! logged at most once a second.

mod families;
mod http;

pub use families::{Column, Families, Kind, Label};
pub use http::{Endpoint, MAX_CONNECTIONS, MAX_REQUEST, REQUEST_TIMEOUT};
pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;

/// The endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "metrics address {0:?}: expected IP:PORT, e.g. 127.0.0.1:9464 (port 0: any free port)"
    )]
    Address(String),
    #[error("metrics {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("metrics {address}: cannot start its thread: {source}")]
    Thread {
        address: String,
        source: std::io::Error,
    },
}

/// Checks a `metrics` setting (`IP:PORT`) without binding it.
pub fn parse_address(text: &str) -> Result<std::net::SocketAddr, MetricsError> {
    text.parse()
        .map_err(|_| MetricsError::Address(text.to_string()))
}
