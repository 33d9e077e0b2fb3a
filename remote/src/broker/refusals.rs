//! What the broker refuses, counted per kind and logged rate-limited: the first refusal of a
//! kind in an interval is logged at once with its detail, later ones only add to a count
//! that one summary line reports when the interval is over. A peer that is refused a million
//! times therefore costs a few log lines per interval, never one line per message.

use std::time::{Duration, Instant};

use serde::Serialize;

/// How often each kind of refusal may write a log line.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Every kind of refusal, with the reason its log lines give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A request or READY naming a service longer than 255 bytes.
    LongName,
    /// A service queue at its request count bound.
    QueueFull,
    /// A request past the connection's queued-bytes bound.
    ClientBytes,
    /// A request past the broker's queued-bytes bound.
    TotalBytes,
    /// A message larger than the connection's bound, discarded while received.
    Oversized,
    /// A message that is not MDP.
    Malformed,
    /// A message with more than 1024 frames.
    Frames,
    /// A READY the broker does not accept (twice, mmi.*, not a worker identity).
    Ready,
    /// A command out of place (e.g. a client sending a worker command).
    Unexpected,
    /// A reply from an unregistered worker, or with a foreign address.
    Reply,
    /// A connection closed at once: too many connections still authenticating.
    Handshakes,
    /// A handshake that failed (wrong token, protocol error, deadline passed).
    Handshake,
    /// A PLAIN user name and token the store does not know (seen by the ZAP handler).
    Token,
    /// A CURVE public key the store does not know (seen by the ZAP handler).
    Key,
    /// A READY for a service of another team.
    Foreign,
    /// A request for a service the client's team may not call.
    Forbidden,
    /// A request whose deadline passed (not a refusal of the peer, but as frequent).
    Timeout,
    /// A connection closed (the peer left, or libzmq refused an oversized frame or a
    /// protocol error; it does not say which).
    Closed,
}

const KINDS: usize = 18;

const ALL: [Refusal; KINDS] = [
    Refusal::LongName,
    Refusal::QueueFull,
    Refusal::ClientBytes,
    Refusal::TotalBytes,
    Refusal::Oversized,
    Refusal::Malformed,
    Refusal::Frames,
    Refusal::Ready,
    Refusal::Unexpected,
    Refusal::Reply,
    Refusal::Handshakes,
    Refusal::Handshake,
    Refusal::Token,
    Refusal::Key,
    Refusal::Foreign,
    Refusal::Forbidden,
    Refusal::Timeout,
    Refusal::Closed,
];

impl Refusal {
    /// The counter's name in the broker's status.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Refusal::LongName => "long_name",
            Refusal::QueueFull => "queue_full",
            Refusal::ClientBytes => "client_bytes",
            Refusal::TotalBytes => "total_bytes",
            Refusal::Oversized => "oversized",
            Refusal::Malformed => "malformed",
            Refusal::Frames => "frames",
            Refusal::Ready => "ready",
            Refusal::Unexpected => "unexpected",
            Refusal::Reply => "reply",
            Refusal::Handshakes => "handshakes",
            Refusal::Handshake => "handshake",
            Refusal::Token => "token",
            Refusal::Key => "key",
            Refusal::Foreign => "foreign_service",
            Refusal::Forbidden => "forbidden",
            Refusal::Timeout => "timed_out",
            Refusal::Closed => "closed",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Refusal::LongName => "refused: service name longer than 255 bytes",
            Refusal::QueueFull => "refused request: service queue full",
            Refusal::ClientBytes => "refused request: the connection's queued bytes are at `client_queue_bytes`",
            Refusal::TotalBytes => "refused request: the broker's queued bytes are at `queue_bytes`",
            Refusal::Oversized => "refused: message larger than `client_queue_bytes`",
            Refusal::Malformed => "refused malformed message",
            Refusal::Frames => "refused: more than 1024 frames in one message",
            Refusal::Ready => "refused READY",
            Refusal::Unexpected => "refused unexpected command",
            Refusal::Reply => "refused worker reply",
            Refusal::Handshakes => "refused connection: too many connections authenticating (`max_handshakes`, `handshakes_per_address`)",
            Refusal::Handshake => "refused connection: handshake failed",
            Refusal::Token => "refused: unknown identity or wrong token",
            Refusal::Key => "refused: unregistered CURVE key",
            Refusal::Foreign => "refused READY: the service belongs to another team",
            Refusal::Forbidden => "refused request: the service is not visible to the client's team",
            Refusal::Timeout => "request timed out",
            Refusal::Closed => "connection closed (peer left, or refused: oversized frame, protocol error)",
        }
    }

    fn index(self) -> usize {
        ALL.iter().position(|&k| k == self).unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Kind {
    total: u64,
    unlogged: u64,
    logged_at: Option<Instant>,
}

/// The detail of the last refusal of each kind not logged yet (for the summary line).
type Last = [Option<String>; KINDS];

/// Counters and log pacing for every kind of refusal.
#[derive(Debug)]
pub(crate) struct Refusals {
    kinds: [Kind; KINDS],
    last: Last,
    interval: Duration,
}

impl Default for Refusals {
    fn default() -> Refusals {
        Refusals::with_interval(LOG_INTERVAL)
    }
}

impl Refusals {
    pub(crate) fn with_interval(interval: Duration) -> Refusals {
        Refusals {
            kinds: [Kind::default(); KINDS],
            last: Default::default(),
            interval,
        }
    }

    /// Counts one refusal; logs it with `detail` unless its kind logged within the interval.
    /// Returns whether it was logged.
    pub(crate) fn refuse(&mut self, kind: Refusal, detail: impl FnOnce() -> String) -> bool {
        let now = Instant::now();
        let interval = self.interval;
        let k = &mut self.kinds[kind.index()];
        k.total += 1;
        if k.logged_at
            .is_some_and(|at| now.duration_since(at) < interval)
        {
            k.unlogged += 1;
            self.last[kind.index()] = Some(detail());
            return false;
        }
        k.logged_at = Some(now);
        log(kind, &format!("{} ({})", kind.reason(), detail()));
        true
    }

    /// Writes one summary line per kind whose interval is over with refusals not yet logged.
    pub(crate) fn flush(&mut self, now: Instant) {
        for kind in ALL {
            let k = &mut self.kinds[kind.index()];
            let due = k
                .logged_at
                .is_none_or(|at| now.duration_since(at) >= self.interval);
            if k.unlogged > 0 && due {
                let last = self.last[kind.index()].take().unwrap_or_default();
                let line = format!(
                    "{} ({} more in the last {}s; last: {last})",
                    kind.reason(),
                    k.unlogged,
                    self.interval.as_secs()
                );
                log(kind, &line);
                k.unlogged = 0;
                k.logged_at = Some(now);
            }
        }
    }

    /// Every counter by its status name (`Token` and `Key` are paced by the ZAP thread, and
    /// counted by the engine as `Handshake` through the socket monitor).
    pub(crate) fn counts(&self) -> Vec<(&'static str, u64)> {
        ALL.iter()
            .filter(|&&kind| !matches!(kind, Refusal::Token | Refusal::Key))
            .map(|&kind| (kind.name(), self.kinds[kind.index()].total))
            .collect()
    }

    /// The count of one kind.
    #[cfg(test)]
    pub(crate) fn count(&self, kind: Refusal) -> u64 {
        self.kinds[kind.index()].total
    }
}

fn log(kind: Refusal, line: &str) {
    match kind {
        Refusal::Timeout | Refusal::Closed => tracing::info!("{line}"),
        _ => tracing::warn!("{line}"),
    }
}

/// The broker's counters as `mmi.status` reports them (one JSON object).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Status {
    pub services: usize,
    pub workers: usize,
    pub requests: usize,
    pub queued_bytes: u64,
    pub clients_queued: usize,
    pub refused: std::collections::BTreeMap<&'static str, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_and_interval_with_a_count() {
        let mut r = Refusals::with_interval(Duration::from_secs(3600));
        assert!(r.refuse(Refusal::LongName, || "first".into()));
        for i in 0..999 {
            assert!(!r.refuse(Refusal::LongName, || format!("n{i}")));
        }
        assert!(r.refuse(Refusal::ClientBytes, || "other kind".into()));
        assert_eq!(r.count(Refusal::LongName), 1000);
        let now = Instant::now();
        r.flush(now);
        assert_eq!(r.kinds[Refusal::LongName.index()].unlogged, 999, "not due");
        r.flush(now + Duration::from_secs(3600));
        assert_eq!(r.kinds[Refusal::LongName.index()].unlogged, 0);
        assert_eq!(r.count(Refusal::LongName), 1000);
    }

    #[test]
    fn every_kind_has_its_own_counter() {
        let mut r = Refusals::default();
        for kind in ALL {
            r.refuse(kind, String::new);
        }
        let counts = r.counts();
        assert_eq!(counts.len(), KINDS - 2);
        assert!(counts.iter().all(|&(_, n)| n == 1));
        let names: std::collections::BTreeSet<_> = counts.iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), KINDS - 2);
    }
}
