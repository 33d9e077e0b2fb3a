//! The control socket: a Unix stream socket (root-only by default) speaking one JSON request
//! per line and one JSON reply per line. `triggerctl` is its client; the types here are the
//! contract between the two. Each connection's peer is checked ([`access`]), and at most
//! [`MAX_CONNECTIONS`] are served at once; what is refused is counted ([`refused`]).

pub mod access;
pub mod events;
pub mod reexec;
pub mod summary;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::dispatch::RuleStatus;
use crate::sources::channel::ChannelStatus;
use crate::sources::fanotify::WatchStatus;
use crate::sources::file::TriggerFileStatus;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "verb", rename_all = "lowercase")]
pub enum Request {
    Status,
    List,
    Show {
        rule: String,
    },
    Pause {
        rule: String,
    },
    Resume {
        rule: String,
    },
    Disable {
        rule: String,
        reason: Option<String>,
    },
    Enable {
        rule: String,
    },
    /// Runs the rule now, with `data` as the payload.
    Fire {
        rule: String,
        data: Option<String>,
    },
    /// The daemon's state with the rules a filter selects, summed up (`triggerctl status`).
    Summary {
        #[serde(default)]
        filter: summary::RuleFilter,
    },
    /// Replace the process with the binary on disk, same pid, handing the kernel objects over
    /// (`triggerctl reexec`).
    Reexec,
    /// Turns the connection into the live feed of events and runs (`triggerctl events`): one
    /// `Reply` line, then one [`crate::dispatch::feed::Record`] per line until either side ends.
    Events {
        #[serde(default)]
        rule: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub pid: u32,
    /// Times this process was re-executed in place (`triggerctl reexec`).
    #[serde(default)]
    pub execs: u64,
    pub config: String,
    pub reloads: u64,
    /// Why the last reload was refused, while the previous config keeps running.
    pub reload_error: Option<String>,
    pub rules: Vec<RuleStatus>,
    pub watch: WatchStatus,
    pub channels: std::collections::BTreeMap<String, ChannelStatus>,
    pub triggers: std::collections::BTreeMap<String, TriggerFileStatus>,
    /// Per webhook listener: connections and refused requests.
    #[serde(default)]
    pub webhooks: std::collections::BTreeMap<String, crate::sources::webhook::WebhookStatus>,
    /// The broker side: spool, forwarder, served services.
    #[serde(default)]
    pub remote: Box<crate::remote::RemoteStatus>,
    /// Event-source providers: state, restarts, rules, fires.
    #[serde(default)]
    pub providers: std::collections::BTreeMap<String, crate::sources::provider::ProviderStatus>,
    /// Control connections and requests refused (over the connection bound, or not allowed).
    #[serde(default)]
    pub control_refused: u64,
    /// Descriptors the daemon holds, and its limit.
    #[serde(default)]
    pub fds: crate::fds::FdUsage,
    /// Readers of the live feed now (`triggerctl events`).
    #[serde(default)]
    pub event_readers: u64,
    /// The address the Prometheus endpoint is bound to (`[daemon] metrics`), if it runs.
    #[serde(default)]
    pub metrics: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    Status(Box<Status>),
    /// `status` is the daemon's without its rules, and its trigger files only when asked for
    /// all or when they refused something.
    Summary(Box<(Status, summary::Summary)>),
    Rules(Vec<RuleStatus>),
    /// A verb that changes something succeeded; says what it did.
    Done(String),
    Error(String),
}

/// Produces the daemon's answers; implemented by the daemon's state.
pub trait Responder: Send + Sync + 'static {
    fn answer(&self, request: Request) -> Reply;
    /// A reader of the live feed, of one rule's records when `rule` is set.
    fn subscribe(
        &self,
        rule: Option<String>,
    ) -> Result<crate::dispatch::feed::Subscription, crate::dispatch::feed::SubscribeError>;
}

/// Fails when a live daemon answers on `path`. Checked before anything else starts: a second
/// instance would take over the socket, stack a mount on the trigger files and run every
/// action twice. A socket file nobody accepts on is stale and is replaced by `bind`.
pub fn ensure_no_other_instance(path: &Path) -> std::io::Result<()> {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another triggerd is running and answers on it",
        )),
        Err(_) => Ok(()),
    }
}

/// Connections served at once; more are refused (and counted) until one ends.
pub const MAX_CONNECTIONS: usize = 32;

static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Control connections and requests refused since start.
pub fn refused() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

/// Binds the socket (replacing a stale one) with `mode`, owned by `group` when given (so a
/// `control_mode` of 0660 lets that group connect).
pub fn bind(path: &Path, mode: u32, group: Option<u32>) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Serves connections until `shutdown`, then removes the socket file.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    responder: Arc<dyn Responder>,
    group: Option<u32>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        refuse("too many control connections");
                        continue;
                    };
                    let responder = Arc::clone(&responder);
                    tokio::spawn(async move {
                        answer(stream, responder, group).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of descriptors, typically: pause instead of spinning on the error.
                    tracing::warn!("control socket: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Longest request line accepted; a client cannot make the daemon buffer more.
const MAX_REQUEST: u64 = 64 * 1024;

/// Counts a refusal and logs it, at most once per second.
fn refuse(why: &str) {
    static LAST_LOG: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    REFUSED.fetch_add(1, Ordering::Relaxed);
    let mut last = LAST_LOG.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1)) {
        *last = Some(std::time::Instant::now());
        tracing::warn!(refused = refused(), "control socket: {why}");
    }
}

async fn answer(stream: UnixStream, responder: Arc<dyn Responder>, group: Option<u32>) {
    let peer = match access::Peer::of(&stream, group) {
        Ok(peer) => peer,
        Err(e) => {
            refuse(&format!("cannot identify the peer: {e}"));
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
    let mut line = String::new();
    while matches!(lines.read_line(&mut line).await, Ok(n) if n > 0) {
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Events { rule })
                if peer.refusal(&Request::Events { rule: None }).is_none() =>
            {
                let subscription = responder.subscribe(rule);
                if let Err(e @ crate::dispatch::feed::SubscribeError::TooMany) = &subscription {
                    refuse(&format!("events: {e}"));
                }
                events::stream(subscription, lines, write).await;
                return;
            }
            Ok(request) => match peer.refusal(&request) {
                None => responder.answer(request),
                Some(why) => {
                    refuse(&format!("{peer:?} peer refused: {request:?}"));
                    Reply::Error(why)
                }
            },
            Err(e) => Reply::Error(format!("bad request: {e}")),
        };
        line.clear();
        let Ok(mut text) = serde_json::to_string(&reply) else {
            break;
        };
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() {
            break;
        }
    }
}

/// Client side: one request, one reply.
pub async fn request(path: &Path, request: &Request) -> std::io::Result<Reply> {
    let stream = UnixStream::connect(path).await?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request).map_err(std::io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}
