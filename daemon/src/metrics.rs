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

/// A column that reads one field (`fired`, `1.writes`) of its row.
macro_rules! col {
    ($name:literal, $help:literal, $kind:ident, $($field:tt).+) => {
        ($name, $help, $kind, |row| row.$($field).+ as u64)
    };
}

#[rustfmt::skip] // one column per line
const RULE: [Column<RuleStatus>; 16] = [
    col!("rule_matched", "Events that matched the rule.", Counter, matched),
    col!("rule_fired", "Runs started.", Counter, fired),
    col!("rule_failed", "Runs that failed.", Counter, failed),
    col!("rule_dropped", "Events dropped (busy, full queue).", Counter, dropped),
    col!("rule_overflowed", "Source overflows seen by the rule.", Counter, overflowed),
    col!("rule_loops_suppressed", "Events caused by the rule's own runs.", Counter, loops_suppressed),
    col!("rule_skipped", "Events while paused or disabled.", Counter, skipped),
    col!("rule_retried", "Runs retried.", Counter, retried),
    col!("rule_dead_lettered", "Events given to dead_letter.", Counter, dead_lettered),
    col!("rule_coalesced", "Events merged into a queued one.", Counter, coalesced),
    col!("rule_refused", "Events refused before admission.", Counter, refused),
    col!("rule_refused_bytes", "Payload bytes refused or dropped.", Counter, refused_bytes),
    col!("rule_running", "Runs in progress.", Gauge, running),
    col!("rule_queued", "Events waiting in the rule's queue.", Gauge, queued),
    col!("rule_queued_bytes", "Payload bytes in the rule's queue.", Gauge, queued_bytes),
    ("rule_active", "1 when the rule acts on its events.", Gauge, |r| u64::from(r.state == "active")),
];

type Named<T> = (String, T);

#[rustfmt::skip] // one column per line
const CHANNEL: [Column<Named<ChannelStatus>>; 4] = [
    col!("channel_messages", "Messages read.", Counter, 1.messages),
    col!("channel_bytes", "Bytes read.", Counter, 1.bytes),
    col!("channel_full_ring_waits", "Publishers that found the ring full.", Counter, 1.full_ring_waits),
    col!("channel_quarantines", "Times the channel was quarantined.", Counter, 1.quarantines),
];

#[rustfmt::skip] // one column per line
const TRIGGER: [Column<Named<TriggerFileStatus>>; 7] = [
    col!("trigger_writes", "Writes into the trigger file.", Counter, 1.writes),
    col!("trigger_bytes", "Bytes written.", Counter, 1.bytes),
    col!("trigger_events", "Events made.", Counter, 1.events),
    col!("trigger_drops", "Events dropped.", Counter, 1.drops),
    col!("trigger_refused_bytes", "Bytes refused.", Counter, 1.refused_bytes),
    col!("trigger_refused_opens", "Opens refused.", Counter, 1.refused_opens),
    col!("trigger_open", "Open handles.", Gauge, 1.open),
];

#[rustfmt::skip] // one column per line
const WEBHOOK: [Column<Named<WebhookStatus>>; 4] = [
    col!("webhook_accepted", "Connections accepted.", Counter, 1.accepted),
    col!("webhook_per_peer_refused", "Connections over the per-peer bound.", Counter, 1.per_peer_refused),
    col!("webhook_timed_out", "Requests too slow.", Counter, 1.timed_out),
    col!("webhook_unauthorized", "Requests with a bad signature.", Counter, 1.unauthorized),
];

#[rustfmt::skip] // one column per line
const PROVIDER: [Column<Named<ProviderStatus>>; 4] = [
    col!("provider_restarts", "Provider process restarts.", Counter, 1.restarts),
    col!("provider_fires", "Events the provider fired.", Counter, 1.fires),
    col!("provider_refused", "Lines refused.", Counter, 1.refused),
    col!("provider_duplicates", "Duplicate fires dropped.", Counter, 1.duplicates),
];

#[rustfmt::skip] // one column per line
const SPOOL: [Column<ForwarderStatus>; 10] = [
    col!("spool_appended", "Events put in the spool.", Counter, spooled),
    col!("spool_rejected", "Events refused: spool full.", Counter, rejected),
    col!("spool_dropped", "Events deleted undelivered for room.", Counter, dropped),
    col!("spool_errors", "Appends the disk failed.", Counter, errors),
    col!("spool_corrupt", "Records skipped: bad checksum.", Counter, corrupt),
    col!("spool_pending", "Events not yet acknowledged.", Gauge, pending),
    col!("spool_bytes", "Bytes in the spool.", Gauge, bytes),
    col!("delivery_delivered", "Events answered by a worker.", Counter, delivered),
    col!("delivery_failed", "Events answered with a failure.", Counter, failed),
    col!("delivery_resent", "Events sent again after no answer.", Counter, resent),
];

#[rustfmt::skip] // one column per line
const SERVICE: [Column<ServiceStatus>; 5] = [
    col!("service_served", "Requests given to a plugin.", Counter, served),
    col!("service_duplicates", "Requests seen before.", Counter, duplicates),
    col!("service_connections", "Connections to the broker.", Counter, connections),
    col!("service_dead_letters", "Requests dead-lettered.", Counter, dead_letters),
    col!("service_running", "1 while the worker runs.", Gauge, running),
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
