//! The daemon's side of the broker: with a `[broker]`, `send` actions go into the durable
//! spool and a forwarder thread drains it to the broker (the dispatcher's [`Outbox`]); each
//! `[[service]]` runs a worker thread serving that service with its plugins. A reload applies
//! `[[service]]` changes (changed or removed services stop, new ones start); `[broker]`
//! changes wait for a restart, because the spool and the connections are built from it.
//! `triggerctl send` (the client verb) is in [`send`]; the counters `status` shows in
//! [`status`]. A `nats://` endpoint puts the same roles on JetStream ([`nats`]) instead.

mod answers;
pub mod catalog;
pub mod catalog_change;
pub mod catalog_sync;
mod drain;
pub mod hops;
pub mod nats;
pub mod send;
pub mod status;

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::fcntl::{Flock, FlockArg};
use triggerd_remote::security::{self, KeyPair, SecurityError};
use triggerd_remote::worker::{Append, Command, Forward, WorkerStats};
use triggerd_remote::{Client, ClientOptions, Spool, SpoolOptions, Worker, WorkerOptions};

use crate::config::{BrokerSettings, Config, ServiceSettings};
use crate::dispatch::Outbox;
use crate::event::Event;
pub use answers::{Answer, Answers};
use drain::Drain;
pub use status::{ForwarderStatus, RemoteStatus, ServiceStatus};
use triggerd_remote::Mechanism;
use triggerd_support::lock;

/// A spool segment is closed at this size (or an eighth of `spool_max` when smaller), so
/// delivered events free disk space soon.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

/// What every connection to the broker presents (CURVE keys or a PLAIN token), read once at
/// start: the secret key and the token never live in the config itself.
#[derive(Clone, Default)]
pub struct Credentials(pub triggerd_remote::Credentials);

impl Credentials {
    /// The PLAIN identity and token (a NATS user and password), if these are PLAIN.
    pub fn user_password(&self) -> Option<(String, String)> {
        match &self.0 {
            triggerd_remote::Credentials::Plain { identity, token } => {
                Some((identity.clone(), token.clone()))
            }
            _ => None,
        }
    }

    /// The credentials `[broker]` configures.
    pub fn load(broker: &BrokerSettings) -> Result<Credentials, String> {
        match broker.security {
            Mechanism::Curve => {
                let server = broker.server_key.as_deref().unwrap_or_default();
                Self::curve(server, &broker.secret_key)
            }
            Mechanism::Plain => Self::read(broker.identity.clone(), broker.token.as_deref()),
            Mechanism::None => Ok(Credentials::default()),
        }
    }

    /// CURVE with the broker's public key `server` (Z85) and this host's `secret_key` file.
    pub fn curve(server: &str, secret_key: &Path) -> Result<Credentials, String> {
        let server = security::decode_key(server).map_err(|e| format!("server_key: {e}"))?;
        let host = KeyPair::load(secret_key).map_err(|e| match e {
            SecurityError::File(path, io) if io.kind() == std::io::ErrorKind::NotFound => format!(
                "secret_key {}: no such file; create this host's key pair with `triggerd \
                 keygen` and register its public key at the broker",
                path.display()
            ),
            other => format!("secret_key: {other}"),
        })?;
        Ok(Credentials(triggerd_remote::Credentials::Curve {
            server,
            host,
        }))
    }

    /// PLAIN with the token read from `token_file` (trailing blanks and newline dropped);
    /// no credentials without an identity.
    pub fn read(
        identity: Option<String>,
        token_file: Option<&Path>,
    ) -> Result<Credentials, String> {
        let (Some(identity), Some(path)) = (identity, token_file) else {
            return Ok(Credentials::default());
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("token {}: {e}", path.display()))?;
        let token = text.trim().to_string();
        if token.is_empty() {
            return Err(format!("token {}: the file is empty", path.display()));
        }
        Ok(Credentials(triggerd_remote::Credentials::Plain {
            identity,
            token,
        }))
    }

    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            credentials: self.0.clone(),
            retries: 0,
        }
    }
}

/// The bytes a `send` forwards: the event's payload, or, for an event that has none (a
/// fanotify event, a timer tick, an empty message), its subject: the path, the schedule, the
/// trigger file or channel.
pub fn payload_of(event: &Event) -> &[u8] {
    if event.payload.is_empty() {
        event.subject.as_os_str().as_bytes()
    } else {
        &event.payload
    }
}

/// Takes the spool directory's `lock` file (released when the process exits).
fn lock_spool(dir: &Path) -> Result<Flock<File>, String> {
    let failed = |e: &dyn std::fmt::Display| format!("[broker] spool {}: {e}", dir.display());
    triggerd_support::private_dir(dir).map_err(|e| failed(&e))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .mode(0o600)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(|e| failed(&e))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            failed(&"in use by another triggerd")
        } else {
            failed(&errno)
        }
    })
}

/// `send` actions put events into the spool; the forwarder delivers them. An event with a
/// reply side (a trigger file) gets the service's answer back there.
struct SpoolOutbox {
    forwarder: Drain,
    answers: Arc<Answers>,
}

impl Outbox for SpoolOutbox {
    fn submit(&self, service: &str, plugin: Option<&str>, event: &Event) -> Result<(), String> {
        let payload = payload_of(event);
        let plugin = match (&self.forwarder, hops::of_event(event)?) {
            // The count rides in the plugin field of MDP requests (JetStream: not carried).
            (Drain::Broker(_), n) => triggerd_remote::ext::with_hops(plugin.unwrap_or(""), n),
            (Drain::Nats(_), _) => plugin.unwrap_or("").to_string(),
        };
        let hook = event.reply.clone().map(|reply| {
            let answers = Arc::clone(&self.answers);
            let subject = event.subject.to_string_lossy().into_owned();
            Box::new(move |status: i32, output: &[u8]| {
                (reply.0)(output);
                answers.record(&subject, status);
            }) as triggerd_remote::replies::ReplyHook
        });
        self.forwarder
            .submit(service, &plugin, payload, hook)
            .map(|_| ())
    }
}

/// A worker thread serving one `[[service]]`.
struct RunningService {
    settings: ServiceSettings,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    stats: Arc<WorkerStats>,
    /// JetStream workers only: requests moved to the dead-letter subject.
    dead_letters: Option<Arc<triggerd_nats::NatsWorkerStats>>,
}

/// Everything remote the daemon runs.
pub struct Remote {
    /// The `[broker]` the daemon started with (a reload does not change it).
    broker: Option<BrokerSettings>,
    credentials: Credentials,
    outbox: Mutex<Option<Arc<SpoolOutbox>>>,
    services: Mutex<Vec<RunningService>>,
    /// Held while the spool is in use: two writers would interleave their records.
    _spool_lock: Option<Flock<File>>,
}

impl Remote {
    /// Opens the spool and starts the forwarder (with a `[broker]`) and the workers.
    pub fn start(config: &Config) -> Result<Remote, String> {
        let Some(broker) = &config.broker else {
            return Ok(Remote {
                broker: None,
                credentials: Credentials::default(),
                outbox: Mutex::default(),
                services: Mutex::default(),
                _spool_lock: None,
            });
        };
        let credentials = Credentials::load(broker).map_err(|e| format!("[broker] {e}"))?;
        let spool_lock = lock_spool(&broker.spool)?;
        let spool = Spool::open(SpoolOptions {
            dir: broker.spool.clone(),
            segment_bytes: SEGMENT_BYTES.min(broker.spool_max / 8).max(4096),
            max_bytes: broker.spool_max,
            sync: broker.sync,
            full: broker.when_full,
        })
        .map_err(|e| format!("[broker] spool: {e}"))?;
        let pending = spool.stats().pending;
        let forwarder = Drain::start(broker, &credentials, spool)?;
        tracing::info!(
            endpoint = %broker.endpoint,
            spool = %broker.spool.display(),
            pending,
            "forwarding `send` actions to the broker"
        );
        let remote = Remote {
            broker: Some(broker.clone()),
            credentials,
            outbox: Mutex::new(Some(Arc::new(SpoolOutbox {
                forwarder,
                answers: Arc::default(),
            }))),
            services: Mutex::default(),
            _spool_lock: Some(spool_lock),
        };
        remote.apply_services(&config.services)?;
        Ok(remote)
    }

    /// The last answer each trigger file got from a service, by trigger path.
    pub fn answers(&self) -> std::collections::BTreeMap<String, Answer> {
        lock(&self.outbox)
            .as_ref()
            .map(|o| o.answers.snapshot())
            .unwrap_or_default()
    }

    /// Where the dispatcher's `send` actions go.
    pub fn outbox(&self) -> Option<Arc<dyn Outbox>> {
        lock(&self.outbox)
            .as_ref()
            .map(|o| Arc::clone(o) as Arc<dyn Outbox>)
    }

    /// Applies a reloaded config: services follow it (blocking until removed workers are gone);
    /// a changed `[broker]` waits for a restart.
    pub fn reload(&self, config: &Config) {
        if config.broker != self.broker {
            tracing::warn!("[broker] settings changed: they take effect at the next restart");
        }
        if self.broker.is_none() {
            return;
        }
        if let Err(e) = self.apply_services(&config.services) {
            tracing::error!("[[service]]: {e}");
        }
    }

    /// Stops workers whose service is gone or changed, and starts the new ones. Returns once
    /// the stopped ones are gone (a worker notices within a tenth of a second), so a service
    /// removed by a reload is no longer served when the reload is done.
    fn apply_services(&self, wanted: &[ServiceSettings]) -> Result<(), String> {
        let Some(broker) = &self.broker else {
            return Ok(());
        };
        let mut running = lock(&self.services);
        let (kept, gone): (Vec<_>, Vec<_>) = running
            .drain(..)
            .partition(|r| wanted.contains(&r.settings));
        *running = kept;
        for service in &gone {
            tracing::info!(service = %service.settings.name, "stopping worker");
            service.stop.store(true, Ordering::Relaxed);
        }
        for service in gone {
            let _ = service.thread.join();
        }
        let mut first_error = None;
        for settings in wanted {
            if running.iter().any(|r| &r.settings == settings) {
                continue;
            }
            match self.start_worker(broker, settings) {
                Ok(service) => running.push(service),
                Err(e) => {
                    tracing::error!(service = %settings.name, "{e}");
                    first_error.get_or_insert(format!("service {}: {e}", settings.name));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn start_worker(
        &self,
        broker: &BrokerSettings,
        settings: &ServiceSettings,
    ) -> Result<RunningService, String> {
        let mut options = WorkerOptions::new(&broker.endpoint, &settings.name);
        options.credentials = self.credentials.0.clone();
        options.heartbeat = broker.heartbeat;
        options.capacity = settings.capacity;
        options.default_plugin = settings.plugin.clone();
        options.plugin_dir = settings.plugin_dir.clone();
        options.plugin_user = settings.user;
        let mut worker = Worker::new(options);
        if let Some(argv) = &settings.exec {
            let command = Command::new(argv.clone()).as_user(settings.user);
            worker.add_plugin("command", Arc::new(command));
        }
        if let Some(file) = &settings.file {
            let append =
                Append::open(file.clone()).map_err(|e| format!("{}: {e}", file.display()))?;
            worker.add_plugin("append", Arc::new(append));
        }
        if settings.forward.is_some() && nats::is_nats(broker) {
            return Err("the forward plugin needs a ZeroMQ broker endpoint".into());
        }
        if let Some(target) = &settings.forward {
            let client = Client::connect(&broker.endpoint, self.credentials.client_options())
                .map_err(|e| format!("forward: {e}"))?;
            worker.add_plugin(
                "forward",
                Arc::new(Forward::new(client, target.clone(), String::new())),
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stats = worker.stats();
        let flag = Arc::clone(&stop);
        let name = settings.name.clone();
        let (run, dead_letters) = nats::runner(broker, &self.credentials, worker)?;
        let thread = std::thread::Builder::new()
            .name(format!("worker {name}"))
            .spawn(move || {
                if let Err(e) = run(&flag) {
                    tracing::error!(service = %name, "worker stopped: {e}");
                }
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        tracing::info!(service = %settings.name, plugin = %settings.plugin, "serving");
        Ok(RunningService {
            settings: settings.clone(),
            stop,
            thread,
            stats,
            dead_letters,
        })
    }

    /// Stops the workers (each says DISCONNECT) and the forwarder; undelivered events stay
    /// in the spool for the next start. Blocks briefly: call it off the async threads.
    pub fn shutdown(&self) {
        let services: Vec<RunningService> = lock(&self.services).drain(..).collect();
        for service in &services {
            service.stop.store(true, Ordering::Relaxed);
        }
        for service in services {
            let _ = service.thread.join();
        }
        // The dispatcher holds the outbox too; dropping the last handle stops the forwarder.
        if let Some(outbox) = lock(&self.outbox).take() {
            match Arc::try_unwrap(outbox) {
                Ok(outbox) => {
                    if let Err(e) = outbox.forwarder.stop() {
                        tracing::error!("forwarder: {e}");
                    }
                }
                Err(_) => tracing::debug!("forwarder stops when its last user is gone"),
            }
        }
    }

    /// Counters for `triggerctl status`.
    pub fn status(&self) -> RemoteStatus {
        let forwarder = lock(&self.outbox)
            .as_ref()
            .map(|o| ForwarderStatus::from(o.forwarder.stats()));
        let services = lock(&self.services)
            .iter()
            .map(|s| ServiceStatus {
                name: s.settings.name.clone(),
                plugin: s.settings.plugin.clone(),
                served: s.stats.served.load(Ordering::Relaxed),
                duplicates: s.stats.duplicates.load(Ordering::Relaxed),
                connections: s.stats.connections.load(Ordering::Relaxed),
                dead_letters: s
                    .dead_letters
                    .as_ref()
                    .map_or(0, |d| d.dead_letters.load(Ordering::Relaxed)),
                running: !s.thread.is_finished(),
            })
            .collect();
        RemoteStatus {
            broker: self.broker.as_ref().map(|b| b.endpoint.clone()),
            forwarder,
            services,
            catalog: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spool_is_locked_by_one_holder_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = dir.path().join("spool");
        let first = lock_spool(&spool).expect("first lock");
        let second = lock_spool(&spool).expect_err("second lock");
        assert!(second.contains("in use by another triggerd"), "{second}");
        drop(first);
        lock_spool(&spool).expect("free again");
    }

    #[test]
    fn an_event_without_payload_sends_its_subject() {
        let mut event = Event {
            id: 1,
            source: crate::event::SourceKind::Fanotify,
            subject: "/srv/in/a b\n.csv".into(),
            mask: triggerd_watch::EventMask::CLOSE_WRITE,
            pid: None,
            time: std::time::SystemTime::now(),
            payload: Vec::new(),
            reply: None,
            fields: Vec::new(),
            batch: None,
        };
        assert_eq!(payload_of(&event), b"/srv/in/a b\n.csv");
        event.payload = b"line".to_vec();
        assert_eq!(payload_of(&event), b"line");
    }
}
