//! `triggerd [--config FILE]` runs the daemon; `triggerd check [FILE]` validates a config;
//! `triggerd keygen` creates this host's CURVE key pair for the broker.
//! Exit codes: 0 ok, 1 runtime failure, 2 usage or config error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use tokio::sync::mpsc;
use triggerd::{config, Command};

const DEFAULT_CONFIG: &str = "/etc/triggerd.conf";

#[derive(Parser)]
#[command(
    version,
    about = "Per-host event daemon: watches, trigger files, channels, timers, webhooks and providers fire local actions or go to a broker"
)]
struct Cli {
    /// The config file.
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Verb>,
}

#[derive(Subcommand)]
enum Verb {
    /// Validate a config file and exit (non-zero with `file:line: message` when it is bad).
    Check { file: Option<PathBuf> },
    /// Create this host's CURVE key pair: the secret (0600) at `[broker] secret_key` (default
    /// `<state_dir>/secret.key`), its public half next to it as `.pub`, also printed, for the
    /// broker's admin (`triggerd-broker identity add ROLE NAME --key PUBLIC --team T`).
    Keygen {
        /// Write the secret key here instead.
        #[arg(long)]
        secret_key: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    if std::env::args().skip(1).eq(["--generate", "conf-man"]) {
        print!("{}", config_manual());
        return ExitCode::SUCCESS;
    }
    if let Some(code) = triggerd_cli::generate::answer(<Cli as clap::CommandFactory>::command()) {
        return code;
    }
    let cli = Cli::parse();
    triggerd_cli::logging::init("TRIGGERD_LOG", "triggerd");
    match cli.command {
        Some(Verb::Check { file }) => check(&file.unwrap_or(cli.config)),
        Some(Verb::Keygen { secret_key }) => keygen(&cli.config, secret_key),
        None => serve(&cli.config),
    }
}

fn keygen(config: &std::path::Path, secret_key: Option<PathBuf>) -> ExitCode {
    let path = secret_key.unwrap_or_else(|| match config::load(config) {
        Ok(c) => c
            .broker
            .map(|b| b.secret_key)
            .unwrap_or_else(|| c.daemon.state_dir.join("secret.key")),
        Err(_) => config::DaemonConfig::default().state_dir.join("secret.key"),
    });
    let made = triggerd_remote::KeyPair::generate().and_then(|pair| {
        pair.save(&path)?;
        Ok(pair)
    });
    match made {
        Ok(pair) => {
            let public = triggerd_remote::security::public_path(&path);
            eprintln!(
                "triggerd: secret key {} (never leaves this host), public key {}",
                path.display(),
                public.display()
            );
            println!("{}", triggerd_remote::security::encode_key(&pair.public));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("triggerd: keygen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `triggerd.conf(5)`: the README's configuration reference, which is its one source.
fn config_manual() -> String {
    let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
    triggerd_cli::manual::page(
        readme,
        "Configuration reference",
        "triggerd.conf",
        "5",
        "triggerd's configuration file",
    )
}

fn check(file: &std::path::Path) -> ExitCode {
    let asked = config::load(file).and_then(|config| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| config::ConfigError::Read {
                file: file.to_path_buf(),
                source,
            })?;
        runtime.block_on(triggerd::sources::provider::validate(
            &config,
            &Default::default(),
        ))?;
        Ok(config)
    });
    match asked {
        Ok(config) => {
            for (rule, why) in triggerd::sources::fanotify::probe(&config.rules) {
                let place = config
                    .rules
                    .iter()
                    .find(|r| r.name == rule)
                    .map_or_else(|| format!("{}:0", file.display()), |r| r.place(file));
                eprintln!("{place}: warning: rule `{rule}`: {why}");
            }
            println!("{}: ok ({} rules)", file.display(), config.rules.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn serve(file: &std::path::Path) -> ExitCode {
    // First: it changes the environment, which only a single-threaded process may do.
    triggerd::handover::take_inherited();
    let config = match config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let (commands, receiver) = mpsc::unbounded_channel();
    if let Err(e) = forward_signals(commands) {
        eprintln!("triggerd: cannot install signal handlers: {e}");
        return ExitCode::from(1);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("triggerd: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(triggerd::run(config, receiver)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// Signals become commands on a channel; the handler itself does no work.
fn forward_signals(commands: mpsc::UnboundedSender<Command>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGUSR1, SIGHUP, SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let command = match signal {
                    SIGUSR1 | SIGHUP => Command::Reload,
                    // systemd sends SIGTERM for a restart as for a stop: ask which it is.
                    SIGTERM if triggerd::systemd::managed() => {
                        match triggerd::systemd::job::pending() {
                            triggerd::systemd::job::Pending::Restart => Command::Restart,
                            triggerd::systemd::job::Pending::Stop => Command::Shutdown,
                        }
                    }
                    _ => Command::Shutdown,
                };
                if commands.send(command).is_err() {
                    break;
                }
            }
        })?;
    Ok(())
}
