//! What `triggerctl status` shows about the broker side: the spool and forwarder counters,
//! and each served service's worker counters (part of the control socket's contract).

use std::fmt;

use serde::{Deserialize, Serialize};
use triggerd_remote::ForwarderStats;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoteStatus {
    /// The broker endpoint, when a `[broker]` is configured.
    pub broker: Option<String>,
    pub forwarder: Option<ForwarderStatus>,
    pub services: Vec<ServiceStatus>,
    /// The synced trigger catalog (`sync_triggers = true`).
    #[serde(default)]
    pub catalog: Option<super::catalog::CatalogStatus>,
}

/// Events sent through the spool since the daemon started (`pending`/`bytes`: now).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ForwarderStatus {
    /// Events put in the spool.
    pub spooled: u64,
    /// Refused: the spool was full (`when_full = "reject"`).
    pub rejected: u64,
    /// Deleted undelivered to make room (`when_full = "drop_oldest"`).
    pub dropped: u64,
    /// In the spool, not yet acknowledged by the broker.
    pub pending: u64,
    pub bytes: u64,
    /// Refused because the disk failed the append (ENOSPC, EIO); rolled back, the run failed.
    #[serde(default)]
    pub errors: u64,
    /// Skipped on reading: the record failed its checksum.
    #[serde(default)]
    pub corrupt: u64,
    /// Answered by a worker (`failed`: with a non-zero status).
    pub delivered: u64,
    pub failed: u64,
    /// Sent again after no answer within `[broker] timeout`.
    pub resent: u64,
}

impl From<ForwarderStats> for ForwarderStatus {
    fn from(s: ForwarderStats) -> Self {
        Self {
            spooled: s.spool.appended,
            rejected: s.spool.rejected,
            dropped: s.spool.dropped,
            pending: s.spool.pending,
            bytes: s.spool.bytes,
            errors: s.spool.errors,
            corrupt: s.spool.corrupt,
            delivered: s.delivered,
            failed: s.failed,
            resent: s.resent,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceStatus {
    pub name: String,
    /// The default plugin.
    pub plugin: String,
    /// Requests given to a plugin.
    pub served: u64,
    /// Requests seen before (answered without running the plugin again).
    pub duplicates: u64,
    /// Connections to the broker (1 + reconnects).
    pub connections: u64,
    /// JetStream: requests moved to the dead-letter subject after `max_deliver` deliveries.
    #[serde(default)]
    pub dead_letters: u64,
    pub running: bool,
}

impl fmt::Display for RemoteStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(endpoint) = &self.broker {
            write!(f, "broker {endpoint}")?;
            if let Some(s) = &self.forwarder {
                write!(
                    f,
                    ": spool {} pending ({} bytes), {} spooled, {} rejected, {} dropped, \
                     {} errors, {} corrupt; {} delivered, {} failed, {} resent",
                    s.pending,
                    s.bytes,
                    s.spooled,
                    s.rejected,
                    s.dropped,
                    s.errors,
                    s.corrupt,
                    s.delivered,
                    s.failed,
                    s.resent
                )?;
            }
            writeln!(f)?;
        }
        for s in &self.services {
            writeln!(
                f,
                "service {} ({}): {} served, {} duplicates, {} connections, {} dead letters{}",
                s.name,
                s.plugin,
                s.served,
                s.duplicates,
                s.connections,
                s.dead_letters,
                if s.running { "" } else { ", stopped" }
            )?;
        }
        Ok(())
    }
}
