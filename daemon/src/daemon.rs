//! The daemon's life: prepare the sources, serve the control socket, turn reload and shutdown
//! commands into a config diff or an orderly stop. Signals reach this module as `Command`s on
//! a channel (the binary's signal thread sends them), so tests drive the same code without
//! signals.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::{self, Config};
use crate::control::{self, Reply, Request, Responder, Status};
use crate::dispatch::{Disabled, Dispatcher};
use crate::event::SourceKind;
use crate::remote::catalog::CatalogShared;
use crate::remote::Remote;
use crate::sources::channel::{channel_status, ChannelSource, Channels};
use crate::sources::fanotify::{FanotifySource, WatchStatus};
use crate::sources::file::{trigger_status, Mounted, TriggerFileSource};
use crate::sources::provider::{ProviderSource, Providers};
use crate::sources::syslog::SyslogSource;
use crate::sources::timer::TimerSource;
use crate::sources::webhook::{webhook_status, WebhookSource, Webhooks};
use crate::sources::{Bindings, Emitter, EventSource, SourceContext};
use crate::systemd;

mod catalog;
use triggerd_support::lock;
use triggerd_watch::EventMask;

/// How long a reload waits for the sources to put new bindings in place.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Read the config file again and apply it if it is valid.
    Reload,
    /// Stop taking events, let running actions finish (bounded), return.
    Shutdown,
    /// The broker's trigger catalog changed: merge it into the running config.
    Catalog,
    /// Like `Shutdown`, but the kernel objects (the trigger mount) are handed over, not
    /// ended, and the process image is replaced by the binary on disk (same pid).
    Reexec,
    /// `systemctl restart`: hand over as for `Reexec`, then exit; the kernel objects wait in
    /// systemd's fd store for the next process.
    Restart,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{source_kind} source: {message}")]
    Source {
        source_kind: &'static str,
        message: String,
    },
    #[error("control socket {path}: {source}")]
    Control {
        path: String,
        source: std::io::Error,
    },
    #[error("state_dir {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Remote(String),
    #[error(transparent)]
    Metrics(#[from] triggerd_metrics::MetricsError),
    #[error("re-exec failed: {0}")]
    Reexec(std::io::Error),
}

/// Every source the daemon knows; a new source is one more line here.
fn sources(shared: &Shared, config: &Config) -> Vec<(Box<dyn EventSource>, SourceKind)> {
    let mountpoint = config.daemon.fs_mount.clone();
    vec![
        (
            Box::new(TriggerFileSource::new(
                mountpoint,
                Arc::clone(&shared.triggers),
            )),
            SourceKind::TriggerFile,
        ),
        (
            Box::new(FanotifySource::new(
                Arc::clone(&shared.watch),
                session_dir(config),
            )),
            SourceKind::Fanotify,
        ),
        (
            Box::new(ChannelSource::new(Arc::clone(&shared.channels))),
            SourceKind::Channel,
        ),
        (Box::new(TimerSource), SourceKind::Timer),
        (
            Box::new(WebhookSource::new(Arc::clone(&shared.webhooks))),
            SourceKind::Webhook,
        ),
        (
            Box::new(ProviderSource::new(Arc::clone(&shared.providers))),
            SourceKind::Provider,
        ),
        (Box::new(SyslogSource), SourceKind::Syslog),
    ]
}

/// Where the session files of kernel objects kept across a restart live (they mean nothing
/// after a reboot): `session/` in the control socket's directory (`/run/triggerd/session` as
/// packaged), a directory of its own so that a watch on that directory never sees them.
fn session_dir(config: &Config) -> std::path::PathBuf {
    let control = &config.daemon.control;
    control
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("session")
}

/// A running source as the core sees it.
struct Bound {
    kind: &'static str,
    bindings: watch::Sender<Bindings>,
    applied: watch::Receiver<u64>,
}

/// What sources share with the control socket.
#[derive(Default)]
struct Shared {
    watch: Arc<Mutex<WatchStatus>>,
    channels: Channels,
    triggers: Mounted,
    webhooks: Webhooks,
    providers: Providers,
}

struct State {
    config: Mutex<Config>,
    reloads: Mutex<(u64, Option<String>)>,
    dispatcher: Arc<Dispatcher>,
    shared: Shared,
    ids: Arc<AtomicU64>,
    remote: Remote,
    /// Commands the control socket gives the main loop (`reexec`).
    commands: mpsc::UnboundedSender<Command>,
    /// The synced trigger catalog (`sync_triggers = true`).
    catalog: Option<Arc<CatalogShared>>,
    /// Where the metrics endpoint listens, once it does.
    metrics: std::sync::OnceLock<std::net::SocketAddr>,
}

impl Responder for State {
    fn subscribe(
        &self,
        rule: Option<String>,
    ) -> Result<crate::dispatch::feed::Subscription, crate::dispatch::feed::SubscribeError> {
        use crate::dispatch::feed::SubscribeError;
        if let Some(name) = rule
            .as_deref()
            .filter(|n| self.dispatcher.rule(n).is_none())
        {
            return Err(SubscribeError::NoSuchRule(name.to_string()));
        }
        self.dispatcher.feed().subscribe(rule)
    }

    fn answer(&self, request: Request) -> Reply {
        let d = &self.dispatcher;
        fn done<T>(r: Result<T, crate::dispatch::LifecycleError>, what: &str) -> Reply {
            match r {
                Ok(_) => Reply::Done(what.to_string()),
                Err(e) => Reply::Error(e.to_string()),
            }
        }
        match request {
            Request::Status => Reply::Status(Box::new(self.status(d.status()))),
            Request::Summary { filter } => {
                let rules = d.rules();
                match control::summary::summarize(rules.iter().map(|r| r.status()), &filter) {
                    Ok(summary) => {
                        let mut status = self.status(Vec::new());
                        if !filter.all {
                            status
                                .triggers
                                .retain(|_, t| t.drops + t.refused_bytes + t.refused_opens > 0);
                        }
                        Reply::Summary(Box::new((status, summary)))
                    }
                    Err(e) => Reply::Error(e.to_string()),
                }
            }
            Request::List => Reply::Rules(d.status()),
            Request::Show { rule } => match d.rule(&rule) {
                Some(r) => Reply::Rules(vec![r.status()]),
                None => Reply::Error(format!("no rule named `{rule}`")),
            },
            Request::Pause { rule } => done(d.set_state(&rule, |s| s.paused = true), "paused"),
            Request::Resume { rule } => done(d.set_state(&rule, |s| s.paused = false), "resumed"),
            Request::Disable { rule, reason } => done(
                d.set_state(&rule, |s| {
                    s.disabled = Some(Disabled {
                        reason: reason.unwrap_or_else(|| "admin".into()),
                        since: crate::dispatch::unix_now(),
                    })
                }),
                "disabled",
            ),
            Request::Enable { rule } => done(d.set_state(&rule, |s| s.disabled = None), "enabled"),
            Request::Fire { rule, data } => {
                let emitter =
                    Emitter::new(Arc::clone(d), Arc::clone(&self.ids), SourceKind::Manual);
                let subject = d
                    .rule(&rule)
                    .map(|r| r.rule.def.trigger.subject())
                    .unwrap_or_default();
                let event = emitter.event(
                    subject.into(),
                    EventMask::EMPTY,
                    None,
                    data.unwrap_or_default().into_bytes(),
                );
                done(d.fire(&rule, event), "fired")
            }
            // The control socket streams these itself (`Responder::subscribe`).
            Request::Events { .. } => Reply::Error("events: not a one-reply verb".into()),
            Request::Reexec => match self.commands.send(Command::Reexec) {
                Ok(()) => Reply::Done("re-executing".into()),
                Err(_) => Reply::Error("the daemon is stopping".into()),
            },
        }
    }
}

impl State {
    fn status(&self, rules: Vec<crate::dispatch::RuleStatus>) -> Status {
        // A summary asks without the rules: the synced triggers' rows still need theirs.
        let catalog = match (&self.catalog, rules.is_empty()) {
            (Some(_), true) => catalog::status(self, &self.dispatcher.status()),
            _ => catalog::status(self, &rules),
        };
        let (reloads, reload_error) = lock(&self.reloads).clone();
        Status {
            pid: std::process::id(),
            execs: crate::handover::execs(),
            config: lock(&self.config).file.display().to_string(),
            reloads,
            reload_error,
            rules,
            watch: lock(&self.shared.watch).clone(),
            channels: channel_status(&self.shared.channels),
            triggers: trigger_status(&self.shared.triggers),
            webhooks: webhook_status(&self.shared.webhooks),
            providers: lock(&self.shared.providers).clone(),
            remote: Box::new(crate::remote::RemoteStatus {
                catalog,
                ..self.remote.status()
            }),
            control_refused: control::refused(),
            fds: crate::fds::usage(),
            metrics: self.metrics.get().map(|a| a.to_string()),
            event_readers: self.dispatcher.feed().readers() as u64,
        }
    }
}

/// Runs the daemon on `config` until a `Shutdown` command (or the sender is dropped).
pub async fn run(
    mut config: Config,
    mut commands: mpsc::UnboundedReceiver<Command>,
) -> Result<(), DaemonError> {
    let control_path = config.daemon.control.clone();
    let control_error = |source| DaemonError::Control {
        path: control_path.display().to_string(),
        source,
    };
    control::ensure_no_other_instance(&control_path).map_err(control_error)?;
    crate::fds::raise_open_file_limit();
    // State (paused rules, timers, trigger files' modes) is root's alone: 0700.
    let state_dir = &config.daemon.state_dir;
    triggerd_support::private_dir(state_dir).map_err(|source| DaemonError::StateDir {
        path: state_dir.display().to_string(),
        source,
    })?;
    let catalog = catalog::open(&mut config);
    let dispatcher = Dispatcher::new(&config.daemon.state_dir);
    let shared = Shared::default();
    let ids = Arc::new(AtomicU64::new(0));
    let mut prepared = Vec::new();
    for (mut source, kind) in sources(&shared, &config) {
        source.prepare().map_err(|message| DaemonError::Source {
            source_kind: source.kind(),
            message,
        })?;
        prepared.push((source, kind));
    }
    validate_with(&prepared, &config).map_err(DaemonError::Config)?;
    crate::sources::provider::validate(&config, &Default::default())
        .await
        .map_err(|e| DaemonError::Config(e.to_string()))?;
    let applied = dispatcher.apply(&config);
    let remote = Remote::start(&config).map_err(DaemonError::Remote)?;
    dispatcher.set_outbox(remote.outbox());

    let (stop, stopped) = watch::channel(false);
    let mut bound = Vec::new();
    let mut tasks = Vec::new();
    for (source, kind) in prepared {
        let name = source.kind();
        let (bindings, receiver) = watch::channel(bindings_for(name, &config, 1));
        let emitter = Emitter::new(Arc::clone(&dispatcher), Arc::clone(&ids), kind);
        let (ctx, applied) = SourceContext::new(
            receiver,
            emitter,
            stopped.clone(),
            config.daemon.state_dir.clone(),
        );
        tasks.push(tokio::spawn(source.run(ctx)));
        bound.push(Bound {
            kind: name,
            bindings,
            applied,
        });
    }
    wait_applied(&mut bound, 1).await;
    crate::handover::close_untaken();

    let listener = control::bind(
        &control_path,
        config.daemon.control_mode,
        config.daemon.control_group,
    )
    .map_err(control_error)?;
    let control_group = config.daemon.control_group;
    let grace = config.daemon.shutdown_grace;
    let metrics_address = config.daemon.metrics.clone();
    tracing::info!(rules = config.rules.len(), config = %config.file.display(), "triggerd running");
    let (own_commands, mut own_receiver) = mpsc::unbounded_channel();
    let state = Arc::new(State {
        commands: own_commands.clone(),
        catalog,
        config: Mutex::new(config),
        reloads: Mutex::new((0, None)),
        dispatcher: Arc::clone(&dispatcher),
        shared,
        ids,
        remote,
        metrics: std::sync::OnceLock::new(),
    });
    let _metrics = start_metrics(&state, metrics_address.as_deref())?;
    let control_task = tokio::spawn(control::serve(
        listener,
        control_path,
        Arc::clone(&state) as Arc<dyn Responder>,
        control_group,
        stopped.clone(),
    ));
    let _sync = catalog::follow(&state, own_commands);
    systemd::notify("READY=1\nSTATUS=running");
    run_at_start(&state, &applied.run_at_start).await;
    triggerd_support::release_free_heap();

    let mut generation = 1;
    let mut watchdog = systemd::watchdog_interval().map(tokio::time::interval);
    let end = loop {
        let command = tokio::select! {
            c = commands.recv() => c.unwrap_or(Command::Shutdown),
            Some(c) = own_receiver.recv() => c,
            _ = tick(&mut watchdog) => {
                systemd::notify("WATCHDOG=1");
                continue;
            }
        };
        match command {
            Command::Reload => {
                generation += 1;
                reload(&state, &mut bound, generation).await;
            }
            Command::Catalog => {
                generation += 1;
                catalog::changed(&state, &mut bound, generation).await;
            }
            end => break end,
        }
    };

    if end == Command::Reexec {
        // The successor (same pid) says READY=1 again.
        systemd::reloading();
    } else {
        systemd::notify("STOPPING=1");
    }
    if end == Command::Shutdown {
        tracing::info!("stopping: no new events; waiting for running actions");
    } else {
        crate::handover::prepare_reexec();
        let triggers = &state.shared.triggers;
        tokio::task::block_in_place(|| crate::sources::file::park_for_reexec(triggers));
        tracing::info!(
            ?end,
            "handing over: no new events; waiting for running actions"
        );
    }
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let _ = control_task.await;
    dispatcher.drain(grace).await;
    dispatcher.set_outbox(None);
    let stopping = Arc::clone(&state);
    let _ = tokio::task::spawn_blocking(move || stopping.remote.shutdown()).await;
    if end == Command::Reexec {
        let error = crate::handover::reexec_now();
        return Err(DaemonError::Reexec(error));
    }
    if end == Command::Restart {
        tracing::info!("stopped for a restart: the trigger mount waits in the fd store");
    } else {
        tracing::info!("stopped");
    }
    Ok(())
}

/// Starts the Prometheus endpoint when `[daemon] metrics` asks; it stops when dropped.
fn start_metrics(
    state: &Arc<State>,
    address: Option<&str>,
) -> Result<Option<triggerd_metrics::Endpoint>, DaemonError> {
    let Some(address) = address else {
        return Ok(None);
    };
    let of = Arc::clone(state);
    let snapshot: crate::metrics::Snapshot = Arc::new(move || of.status(of.dispatcher.status()));
    let collector = Box::new(crate::metrics::StatusCollector(snapshot));
    let endpoint = triggerd_metrics::Endpoint::start(address, "triggerd", collector)?;
    let _ = state.metrics.set(endpoint.address());
    Ok(Some(endpoint))
}

fn bindings_for(kind: &str, config: &Config, generation: u64) -> Bindings {
    let rules = config
        .rules
        .iter()
        .filter(|r| r.def.trigger.kind() == kind)
        .cloned()
        .collect();
    Bindings {
        generation,
        rules: Arc::new(rules),
        providers: Arc::new(config.providers.clone()),
    }
}

/// Asks each source to check the rules it would serve; the first refusal names the rule.
fn validate_with(
    sources: &[(Box<dyn EventSource>, SourceKind)],
    config: &Config,
) -> Result<(), String> {
    for rule in &config.rules {
        let Some((source, _)) = sources
            .iter()
            .find(|(s, _)| s.kind() == rule.def.trigger.kind())
        else {
            return Err(format!(
                "{}: no source serves `{}` rules",
                rule.place(&config.file),
                rule.def.trigger.kind()
            ));
        };
        source
            .validate(rule)
            .map_err(|m| format!("{}: {}: {m}", rule.place(&config.file), rule.name))?;
    }
    Ok(())
}

/// Waits (bounded) until every source says the bindings of `generation` are in effect.
async fn wait_applied(bound: &mut [Bound], generation: u64) {
    for source in bound {
        let waited =
            tokio::time::timeout(APPLY_TIMEOUT, source.applied.wait_for(|g| *g >= generation))
                .await;
        if waited.is_err() {
            tracing::warn!(
                source = source.kind,
                "bindings not applied within {APPLY_TIMEOUT:?}"
            );
        }
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Fires each of `names` (rules that just started and ask for `run_at_start`) once, with an
/// empty payload, through the same path as their own events (a paused rule does not run).
async fn run_at_start(state: &State, names: &[String]) {
    if names.is_empty() {
        return;
    }
    let d = &state.dispatcher;
    let emitter = Emitter::new(Arc::clone(d), Arc::clone(&state.ids), SourceKind::Start);
    for name in names {
        let Some(rule) = d.rule(name) else { continue };
        let subject = rule.rule.def.trigger.subject();
        let event = emitter.event(subject.into(), EventMask::EMPTY, None, Vec::new());
        emitter.fire(name, event).await;
    }
}

/// Loads the config file again; a bad one is reported and the running config stays.
async fn reload(state: &State, bound: &mut [Bound], generation: u64) {
    systemd::reloading();
    let file = lock(&state.config).file.clone();
    let validators = sources(&state.shared, &lock(&state.config));
    let loaded = match config::load(&file)
        .map(|mut new| {
            catalog::merge(state, &mut new);
            new
        })
        .map_err(|e| e.to_string())
        .and_then(|new| validate_with(&validators, &new).map(|()| new))
    {
        Ok(new) => {
            let asked = crate::sources::provider::unchanged(&new, &lock(&state.config));
            crate::sources::provider::validate(&new, &asked)
                .await
                .map(|()| new)
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e),
    };
    apply_loaded(state, bound, generation, loaded, true).await;
}

/// Puts a loaded config in place (a refused one is reported, the running one stays).
/// `reload`: it comes from the file (counted in `reloads`); else from the trigger catalog.
async fn apply_loaded(
    state: &State,
    bound: &mut [Bound],
    generation: u64,
    loaded: Result<Config, String>,
    reload: bool,
) {
    let outcome = match loaded {
        Ok(mut new) => {
            new.share_unchanged(&lock(&state.config));
            let applied = state.dispatcher.apply(&new);
            state.remote.reload(&new);
            for source in bound.iter() {
                source
                    .bindings
                    .send_replace(bindings_for(source.kind, &new, generation));
            }
            wait_applied(bound, generation).await;
            run_at_start(state, &applied.run_at_start).await;
            tracing::info!(
                kept = applied.kept,
                added = applied.added,
                removed = applied.removed,
                "{}",
                if reload {
                    "config reloaded"
                } else {
                    "trigger catalog applied"
                }
            );
            if new.daemon != lock(&state.config).daemon {
                tracing::warn!("[daemon] settings changed: they take effect at the next restart");
            }
            *lock(&state.config) = new;
            None
        }
        Err(e) if !reload => {
            tracing::error!("trigger catalog not applied, the running rules stay:\n{e}");
            return;
        }
        Err(e) => {
            tracing::error!("reload refused, previous config keeps running:\n{e}");
            Some(e)
        }
    };
    if !reload {
        return;
    }
    let status = match &outcome {
        None => "STATUS=running".to_string(),
        Some(e) => format!(
            "STATUS=reload refused: {}",
            e.lines().next().unwrap_or_default()
        ),
    };
    {
        let mut reloads = lock(&state.reloads);
        reloads.0 += 1;
        reloads.1 = outcome;
    }
    // The old config and the parse's peak are gone (a refused config too).
    triggerd_support::release_free_heap();
    systemd::notify(&format!("READY=1\n{status}"));
}
