//! The broker's `metrics = "IP:PORT"` endpoint: the `mmi.status` numbers (services, workers,
//! requests, queued bytes, refusals by kind) and each service's queue, as `triggerd_broker_*`
//! metrics. The single-threaded main loop publishes a [`Snapshot`] once a second into a slot
//! the endpoint's threads read, so a scrape never touches the engine (a value is at most a
//! second old).

use std::sync::{Arc, Mutex};

use triggerd_metrics::{Column, DescriptorEncoder, Families, Kind};

use super::refusals::Status;
use Kind::{Counter, Gauge};

/// Services shown one by one; the total is always in `triggerd_broker_services`.
pub(crate) const MAX_SERVICES: usize = 1000;

/// One service's queue as the engine sees it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServiceQueue {
    pub name: String,
    pub queued: u64,
    pub dispatched: u64,
    pub workers: u64,
}

/// What a scrape shows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    pub status: Status,
    pub services: Vec<ServiceQueue>,
}

/// The slot the main loop writes and scrapes read.
pub(crate) type Published = Arc<Mutex<Snapshot>>;

#[derive(Debug)]
pub(crate) struct BrokerCollector(pub Published);

const SERVICE: [Column<ServiceQueue>; 3] = [
    (
        "service_queued",
        "Requests waiting for a worker.",
        Gauge,
        |s| s.queued,
    ),
    (
        "service_dispatched",
        "Requests held by workers.",
        Gauge,
        |s| s.dispatched,
    ),
    (
        "service_workers",
        "Workers ready for the service.",
        Gauge,
        |s| s.workers,
    ),
];

impl triggerd_metrics::Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let snapshot = triggerd_support::lock(&self.0).clone();
        let s = &snapshot.status;
        let mut f = Families::new(&mut encoder);
        f.single("services", "Services known.", Gauge, s.services as u64)?;
        f.single("workers", "Workers connected.", Gauge, s.workers as u64)?;
        f.single(
            "requests",
            "Requests queued or at a worker.",
            Gauge,
            s.requests as u64,
        )?;
        f.single(
            "queued_bytes",
            "Bytes of live requests.",
            Gauge,
            s.queued_bytes,
        )?;
        f.single(
            "clients_queued",
            "Client connections with live requests.",
            Gauge,
            s.clients_queued as u64,
        )?;
        let refused: Vec<(&str, u64)> = s.refused.iter().map(|(k, v)| (*k, *v)).collect();
        f.table(
            &["kind"],
            &refused,
            |r| vec![r.0],
            &[(
                "refused",
                "Messages and connections refused.",
                Counter,
                |r| r.1,
            )],
        )?;
        f.table(
            &["service"],
            &snapshot.services,
            |s| vec![&s.name],
            &SERVICE,
        )
    }
}

/// Starts the endpoint at `address`; the returned slot is where the main loop publishes.
pub(crate) fn start(
    address: &str,
) -> Result<(triggerd_metrics::Endpoint, Published), triggerd_metrics::MetricsError> {
    let published = Published::default();
    let collector = Box::new(BrokerCollector(Arc::clone(&published)));
    let endpoint = triggerd_metrics::Endpoint::start(address, "triggerd_broker", collector)?;
    Ok((endpoint, published))
}
