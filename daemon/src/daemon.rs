//! The daemon's life: start the sources and the control socket on a validated config, turn
//! reload and shutdown commands into a config diff or an orderly stop. Signals reach this
//! module as `Command`s on a channel (the binary's signal thread sends them), so tests drive
//! the same code without signals.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use crate::config::{self, Config};
use crate::control::{self, Responder, Status};
use crate::dispatch::Dispatcher;
use crate::sources::fanotify::{self, FanotifyHandle, Marks};
use crate::systemd;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Read the config file again and apply it if it is valid.
    Reload,
    /// Stop taking events, let running actions finish (bounded), return.
    Shutdown,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("fanotify: {0}")]
    Watch(#[from] crate::sources::fanotify::SourceError),
    #[error("control socket {path}: {source}")]
    Control {
        path: String,
        source: std::io::Error,
    },
}

struct State {
    config: Mutex<Config>,
    reloads: Mutex<(u64, Option<String>)>,
    dispatcher: Arc<Dispatcher>,
    watch: FanotifyHandle,
}

impl Responder for State {
    fn status(&self) -> Status {
        let (reloads, reload_error) = self
            .reloads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Status {
            pid: std::process::id(),
            config: self
                .config
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .file
                .display()
                .to_string(),
            reloads,
            reload_error,
            rules: self.dispatcher.status(),
            watch: self
                .watch
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// Runs the daemon on `config` until a `Shutdown` command (or the sender is dropped).
pub async fn run(
    config: Config,
    mut commands: mpsc::UnboundedReceiver<Command>,
) -> Result<(), DaemonError> {
    let dispatcher = Dispatcher::new();
    dispatcher.apply(&config);
    let (stop, stopped) = watch::channel(false);
    let (watch_handle, watch_loop) =
        fanotify::start(Arc::clone(&dispatcher), Marks::of(&config), stopped.clone())?;
    let watch_task = tokio::spawn(watch_loop);

    let control_path = config.daemon.control.clone();
    let listener = control::bind(&control_path, config.daemon.control_mode).map_err(|source| {
        DaemonError::Control {
            path: control_path.display().to_string(),
            source,
        }
    })?;
    let grace = config.daemon.shutdown_grace;
    tracing::info!(rules = config.rules.len(), config = %config.file.display(), "triggerd running");
    let state = Arc::new(State {
        config: Mutex::new(config),
        reloads: Mutex::new((0, None)),
        dispatcher: Arc::clone(&dispatcher),
        watch: watch_handle,
    });
    let control_task = tokio::spawn(control::serve(
        listener,
        control_path,
        Arc::clone(&state) as Arc<dyn Responder>,
        stopped.clone(),
    ));
    systemd::notify("READY=1\nSTATUS=running");

    let mut watchdog = systemd::watchdog_interval().map(tokio::time::interval);
    loop {
        let command = tokio::select! {
            c = commands.recv() => c.unwrap_or(Command::Shutdown),
            _ = tick(&mut watchdog) => {
                systemd::notify("WATCHDOG=1");
                continue;
            }
        };
        match command {
            Command::Reload => reload(&state).await,
            Command::Shutdown => break,
        }
    }

    systemd::notify("STOPPING=1");
    tracing::info!("stopping: no new events; waiting for running actions");
    let _ = stop.send(true);
    let _ = watch_task.await;
    let _ = control_task.await;
    dispatcher.drain(grace).await;
    tracing::info!("stopped");
    Ok(())
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Loads the config file again; a bad one is reported and the running config stays.
async fn reload(state: &State) {
    systemd::reloading();
    let file = state
        .config
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .file
        .clone();
    let outcome = match config::load(&file) {
        Ok(new) => {
            let applied = state.dispatcher.apply(&new);
            state.watch.set_marks(Marks::of(&new)).await;
            tracing::info!(
                kept = applied.kept,
                added = applied.added,
                removed = applied.removed,
                "config reloaded"
            );
            if new.daemon
                != state
                    .config
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .daemon
            {
                tracing::warn!("[daemon] settings changed: they take effect at the next restart");
            }
            *state.config.lock().unwrap_or_else(|p| p.into_inner()) = new;
            None
        }
        Err(e) => {
            tracing::error!("reload refused, previous config keeps running:\n{e}");
            Some(e.to_string())
        }
    };
    let status = match &outcome {
        None => "STATUS=running".to_string(),
        Some(e) => format!(
            "STATUS=reload refused: {}",
            e.lines().next().unwrap_or_default()
        ),
    };
    {
        let mut reloads = state.reloads.lock().unwrap_or_else(|p| p.into_inner());
        reloads.0 += 1;
        reloads.1 = outcome;
    }
    systemd::notify(&format!("READY=1\n{status}"));
}
