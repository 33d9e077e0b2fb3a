//! The validated model of the two tables that connect a host to the broker: `[broker]` (where
//! `send` actions go, through the durable spool, and the credentials every connection uses)
//! and `[[service]]` (a service this host serves as a worker, with its plugins). Parsing and
//! checks live in `validate::remote`; the runtime that uses them in `crate::remote`.

use std::path::PathBuf;
use std::time::Duration;

pub use triggerd_remote::{FullPolicy, Mechanism, SyncPolicy};

/// `[broker]`: one broker per host. Changing it takes effect at the next restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSettings {
    /// ZeroMQ endpoint, `tcp://host:port` or `ipc:///path`; or NATS servers,
    /// `nats://host:port` (several separated by commas), which selects JetStream.
    pub endpoint: String,
    /// How connections are secured. Unset: `curve` with a `server_key`, else `plain` with an
    /// `identity`, else `none`.
    pub security: Mechanism,
    /// The broker's CURVE public key (Z85), with `security = "curve"`.
    pub server_key: Option<String>,
    /// This host's CURVE secret key file (`triggerd keygen` writes it); default
    /// `<state_dir>/secret.key`.
    pub secret_key: PathBuf,
    /// Identity for PLAIN authentication (with `token`).
    pub identity: Option<String>,
    /// A file holding the token (secrets never live in the config itself).
    pub token: Option<PathBuf>,
    /// The spool directory: events for the broker wait here through outages and restarts.
    pub spool: PathBuf,
    /// Upper bound of the spool on disk, in bytes.
    pub spool_max: u64,
    /// What a `send` does when the spool holds `spool_max`.
    pub when_full: FullPolicy,
    /// When spooled events are forced to disk.
    pub sync: SyncPolicy,
    /// Heartbeat interval of this host's workers.
    pub heartbeat: Duration,
    /// Deadline every forwarded event carries; an event without an answer by then is resent.
    pub timeout: Duration,
    /// Events sent and not yet answered at once; 1 delivers strictly in order, one at a time.
    pub window: usize,
    /// `sync_triggers`: the mount also shows this host's team's trigger catalog, kept in sync
    /// with the broker (ZeroMQ endpoints only).
    pub sync_triggers: bool,
    /// NATS only: a `.creds` file, an nkey seed file, a CA file for TLS.
    pub creds: Option<PathBuf>,
    pub nkey: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
}

/// Defaults of `[broker]` keys.
pub const DEFAULT_SPOOL_MAX: u64 = 1024 * 1024 * 1024;
pub const DEFAULT_SYNC: Duration = Duration::from_millis(100);
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(2500);
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_CAPACITY: u32 = 16;
pub const DEFAULT_WINDOW: usize = 1024;

/// `[[service]]`: this host serves `name` with a worker. Every plugin configured here is
/// available to requests (a request may name one); `plugin` is used when a request names none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSettings {
    pub name: String,
    /// The default plugin: `echo`, `command`, `append`, `forward` or an external plugin.
    pub plugin: String,
    /// The `command` plugin's argv (absolute program, no shell); payload on stdin.
    pub exec: Option<Vec<String>>,
    /// The `append` plugin's file: one line per payload.
    pub file: Option<PathBuf>,
    /// The `forward` plugin's target service.
    pub forward: Option<String>,
    /// Where external plugins (executables speaking JSON lines) are looked up by name.
    pub plugin_dir: Option<PathBuf>,
    /// The user (uid, gid) `command` and external plugins run as; `None`: the daemon's.
    pub user: Option<(u32, u32)>,
    /// Requests this worker holds at once.
    pub capacity: u32,
}
