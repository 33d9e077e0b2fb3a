//! `[daemon] metrics`: the numbers `triggerctl status` shows, as Prometheus metrics. Nothing is
//! counted twice: each scrape takes the same [`Status`] snapshot the control socket answers
//! with (rule counters read atomically, each rule's lock held only to copy its queue sizes)
//! and writes it as families named `triggerd_*`, labelled by rule, source, file, channel,
//! webhook, provider or service.

use std::sync::Arc;

use triggerd_metrics::{Column, DescriptorEncoder, Families, Kind};

use crate::control::Status;
use crate::dispatch::RuleStatus;
use crate::remote::status::{ForwarderStatus, ServiceStatus};
use crate::sources::channel::ChannelStatus;
use crate::sources::file::TriggerFileStatus;
use crate::sources::provider::ProviderStatus;
use crate::sources::webhook::WebhookStatus;

use Kind::{Counter, Gauge};

/// Takes a status snapshot.
pub type Snapshot = Arc<dyn Fn() -> Status + Send + Sync>;

/// The collector the endpoint calls on each scrape.
pub struct StatusCollector(pub Snapshot);

impl std::fmt::Debug for StatusCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusCollector")
    }
}

impl triggerd_metrics::Collector for StatusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        encode(&(self.0)(), &mut Families::new(&mut encoder))
    }
}

const RULE: [Column<RuleStatus>; 16] = [
    (
        "rule_matched",
        "Events that matched the rule.",
        Counter,
        |r| r.matched,
    ),
    ("rule_fired", "Runs started.", Counter, |r| r.fired),
    ("rule_failed", "Runs that failed.", Counter, |r| r.failed),
    (
        "rule_dropped",
        "Events dropped (busy, full queue).",
        Counter,
        |r| r.dropped,
    ),
    (
        "rule_overflowed",
        "Source overflows seen by the rule.",
        Counter,
        |r| r.overflowed,
    ),
    (
        "rule_loops_suppressed",
        "Events caused by the rule's own runs.",
        Counter,
        |r| r.loops_suppressed,
    ),
    (
        "rule_skipped",
        "Events while paused or disabled.",
        Counter,
        |r| r.skipped,
    ),
    ("rule_retried", "Runs retried.", Counter, |r| r.retried),
    (
        "rule_dead_lettered",
        "Events given to dead_letter.",
        Counter,
        |r| r.dead_lettered,
    ),
    (
        "rule_coalesced",
        "Events merged into a queued one.",
        Counter,
        |r| r.coalesced,
    ),
    (
        "rule_refused",
        "Events refused before admission.",
        Counter,
        |r| r.refused,
    ),
    (
        "rule_refused_bytes",
        "Payload bytes refused or dropped.",
        Counter,
        |r| r.refused_bytes,
    ),
    ("rule_running", "Runs in progress.", Gauge, |r| r.running),
    (
        "rule_queued",
        "Events waiting in the rule's queue.",
        Gauge,
        |r| r.queued,
    ),
    (
        "rule_queued_bytes",
        "Payload bytes in the rule's queue.",
        Gauge,
        |r| r.queued_bytes,
    ),
    (
        "rule_active",
        "1 when the rule acts on its events.",
        Gauge,
        |r| u64::from(r.state == "active"),
    ),
];

type Named<T> = (String, T);

const CHANNEL: [Column<Named<ChannelStatus>>; 4] = [
    ("channel_messages", "Messages read.", Counter, |c| {
        c.1.messages
    }),
    ("channel_bytes", "Bytes read.", Counter, |c| c.1.bytes),
    (
        "channel_full_ring_waits",
        "Publishers that found the ring full.",
        Counter,
        |c| c.1.full_ring_waits,
    ),
    (
        "channel_quarantines",
        "Times the channel was quarantined.",
        Counter,
        |c| c.1.quarantines,
    ),
];

const TRIGGER: [Column<Named<TriggerFileStatus>>; 7] = [
    (
        "trigger_writes",
        "Writes into the trigger file.",
        Counter,
        |t| t.1.writes,
    ),
    ("trigger_bytes", "Bytes written.", Counter, |t| t.1.bytes),
    ("trigger_events", "Events made.", Counter, |t| t.1.events),
    ("trigger_drops", "Events dropped.", Counter, |t| t.1.drops),
    ("trigger_refused_bytes", "Bytes refused.", Counter, |t| {
        t.1.refused_bytes
    }),
    ("trigger_refused_opens", "Opens refused.", Counter, |t| {
        t.1.refused_opens
    }),
    ("trigger_open", "Open handles.", Gauge, |t| t.1.open),
];

const WEBHOOK: [Column<Named<WebhookStatus>>; 4] = [
    ("webhook_accepted", "Connections accepted.", Counter, |w| {
        w.1.accepted
    }),
    (
        "webhook_per_peer_refused",
        "Connections over the per-peer bound.",
        Counter,
        |w| w.1.per_peer_refused,
    ),
    ("webhook_timed_out", "Requests too slow.", Counter, |w| {
        w.1.timed_out
    }),
    (
        "webhook_unauthorized",
        "Requests with a bad signature.",
        Counter,
        |w| w.1.unauthorized,
    ),
];

const PROVIDER: [Column<Named<ProviderStatus>>; 4] = [
    (
        "provider_restarts",
        "Provider process restarts.",
        Counter,
        |p| p.1.restarts,
    ),
    (
        "provider_fires",
        "Events the provider fired.",
        Counter,
        |p| p.1.fires,
    ),
    ("provider_refused", "Lines refused.", Counter, |p| {
        p.1.refused
    }),
    (
        "provider_duplicates",
        "Duplicate fires dropped.",
        Counter,
        |p| p.1.duplicates,
    ),
];

const SPOOL: [Column<ForwarderStatus>; 10] = [
    ("spool_appended", "Events put in the spool.", Counter, |s| {
        s.spooled
    }),
    (
        "spool_rejected",
        "Events refused: spool full.",
        Counter,
        |s| s.rejected,
    ),
    (
        "spool_dropped",
        "Events deleted undelivered for room.",
        Counter,
        |s| s.dropped,
    ),
    ("spool_errors", "Appends the disk failed.", Counter, |s| {
        s.errors
    }),
    (
        "spool_corrupt",
        "Records skipped: bad checksum.",
        Counter,
        |s| s.corrupt,
    ),
    (
        "spool_pending",
        "Events not yet acknowledged.",
        Gauge,
        |s| s.pending,
    ),
    ("spool_bytes", "Bytes in the spool.", Gauge, |s| s.bytes),
    (
        "delivery_delivered",
        "Events answered by a worker.",
        Counter,
        |s| s.delivered,
    ),
    (
        "delivery_failed",
        "Events answered with a failure.",
        Counter,
        |s| s.failed,
    ),
    (
        "delivery_resent",
        "Events sent again after no answer.",
        Counter,
        |s| s.resent,
    ),
];

const SERVICE: [Column<ServiceStatus>; 5] = [
    (
        "service_served",
        "Requests given to a plugin.",
        Counter,
        |s| s.served,
    ),
    (
        "service_duplicates",
        "Requests seen before.",
        Counter,
        |s| s.duplicates,
    ),
    (
        "service_connections",
        "Connections to the broker.",
        Counter,
        |s| s.connections,
    ),
    (
        "service_dead_letters",
        "Requests dead-lettered.",
        Counter,
        |s| s.dead_letters,
    ),
    ("service_running", "1 while the worker runs.", Gauge, |s| {
        u64::from(s.running)
    }),
];

/// Writes one status snapshot.
pub fn encode(status: &Status, f: &mut Families<'_, '_>) -> std::fmt::Result {
    f.single("reloads", "Config reloads.", Counter, status.reloads)?;
    f.single(
        "reload_failed",
        "1 while the last reload was refused.",
        Gauge,
        u64::from(status.reload_error.is_some()),
    )?;
    f.single(
        "control_refused",
        "Control requests refused.",
        Counter,
        status.control_refused,
    )?;
    f.single("open_fds", "Descriptors open.", Gauge, status.fds.open)?;
    f.single("max_fds", "Descriptor limit.", Gauge, status.fds.limit)?;
    f.table(
        &["rule", "kind"],
        &status.rules,
        |r| vec![&r.name, &r.kind],
        &RULE,
    )?;
    let w = &status.watch;
    let sources = [
        ("fanotify", w.events, w.overflows, w.refused_marks),
        (
            "inotify",
            w.inotify_events,
            w.inotify_overflows,
            w.inotify_refused,
        ),
    ];
    f.table(
        &["source"],
        &sources,
        |s| vec![s.0],
        &[
            (
                "source_events",
                "Events read from the kernel.",
                Counter,
                |s| s.1,
            ),
            (
                "source_overflows",
                "Kernel queue overflows.",
                Counter,
                |s| s.2,
            ),
            (
                "source_refused_marks",
                "Watches the kernel refused.",
                Counter,
                |s| s.3,
            ),
        ],
    )?;
    f.single(
        "fanotify_permission_requests",
        "Permission requests answered.",
        Counter,
        w.permission_requests,
    )?;
    f.single(
        "watches_waiting",
        "Watched paths not marked yet.",
        Gauge,
        w.failing_marks.len() as u64,
    )?;
    named(f, "channel", &status.channels, &CHANNEL)?;
    named(f, "file", &status.triggers, &TRIGGER)?;
    named(f, "listen", &status.webhooks, &WEBHOOK)?;
    named(f, "provider", &status.providers, &PROVIDER)?;
    let spool: Vec<ForwarderStatus> = status.remote.forwarder.iter().cloned().collect();
    f.table(&[], &spool, |_| vec![], &SPOOL)?;
    f.table(
        &["service"],
        &status.remote.services,
        |s| vec![&s.name],
        &SERVICE,
    )
}

fn named<T: Clone>(
    f: &mut Families<'_, '_>,
    key: &'static str,
    map: &std::collections::BTreeMap<String, T>,
    columns: &[Column<Named<T>>],
) -> std::fmt::Result {
    let rows: Vec<Named<T>> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    f.table(&[key], &rows, |r| vec![r.0.as_str()], columns)
}
