//! `triggerd-broker`: runs the Majordomo broker, or administers its store.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use triggerd_remote::broker::{self, Algorithm, BrokerConfig, Role, Store};

#[derive(Parser)]
#[command(
    name = "triggerd-broker",
    version,
    about = "triggerd's Majordomo broker: services of workers for the hosts' events"
)]
struct Cli {
    /// Broker configuration (TOML).
    #[arg(long, default_value = "/etc/triggerd/broker.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Manage identities and their tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Manage services.
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create an identity and print its token (shown only once).
    Add { role: String, name: String },
    /// Remove an identity.
    Remove { name: String },
}

#[derive(Subcommand)]
enum ServiceAction {
    /// Set a service's algorithm and/or timeout.
    Set {
        name: String,
        #[arg(long)]
        algorithm: Option<String>,
        #[arg(long)]
        timeout: Option<String>,
    },
    /// List services with their settings.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// A bad argument: exits with 2 like a usage error.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    Usage(e.to_string()).into()
}

fn load_config(path: &PathBuf) -> anyhow::Result<BrokerConfig> {
    match std::fs::read_to_string(path) {
        Ok(text) => BrokerConfig::from_toml(&text).with_context(|| path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BrokerConfig::default()),
        Err(e) => Err(e).with_context(|| path.display().to_string()),
    }
}

fn admin(config: &BrokerConfig, command: Command) -> anyhow::Result<()> {
    let store = Store::open(&config.store)?;
    match command {
        Command::Token {
            action: TokenAction::Add { role, name },
        } => {
            let role: Role = role.parse().map_err(usage)?;
            println!("{}", store.add_identity(role, &name)?);
        }
        Command::Token {
            action: TokenAction::Remove { name },
        } => {
            if !store.remove_identity(&name)? {
                anyhow::bail!("no identity named {name:?}");
            }
        }
        Command::Service {
            action:
                ServiceAction::Set {
                    name,
                    algorithm,
                    timeout,
                },
        } => {
            let algorithm = algorithm
                .map(|a| a.parse::<Algorithm>())
                .transpose()
                .map_err(usage)?;
            let timeout: Option<Duration> = timeout
                .map(|t| humantime::parse_duration(&t))
                .transpose()
                .map_err(|e| usage(format!("--timeout: {e}")))?;
            store.set_service(&name, algorithm, timeout)?;
        }
        Command::Service {
            action: ServiceAction::List { json },
        } => {
            let services = store.service_overview()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&services)?);
            } else {
                println!(
                    "{:<24} {:<12} {:<10} WORKERS",
                    "SERVICE", "ALGORITHM", "TIMEOUT"
                );
                for s in services {
                    let timeout = s.settings.timeout.map_or("default".into(), |t| {
                        humantime::format_duration(t).to_string()
                    });
                    let workers = if s.workers.is_empty() {
                        "-".to_string()
                    } else {
                        s.workers.join(", ")
                    };
                    let (name, algorithm) = (&s.settings.name, s.settings.algorithm.as_str());
                    println!("{name:<24} {algorithm:<12} {timeout:<10} {workers}");
                }
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    if let Some(code) = triggerd_cli::generate::answer(<Cli as clap::CommandFactory>::command()) {
        return code;
    }
    triggerd_cli::logging::init("RUST_LOG", "triggerd-broker");
    let cli = Cli::parse();
    if !triggerd_remote::broker::return_large_frames_to_the_kernel() {
        tracing::warn!("allocator refused a fixed mmap threshold: large frames may stay resident");
    }
    let config = match load_config(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("triggerd-broker: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Some(command) => admin(&config, command),
        None => broker::shutdown_on_signals()
            .map_err(anyhow::Error::from)
            .and_then(|flag| Ok(broker::run(&config, flag)?)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("triggerd-broker: {e:#}");
            if e.downcast_ref::<Usage>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
