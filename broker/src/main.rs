//! `triggerd-broker`: runs the Majordomo broker, or administers its store and key pair
//! (`admin`).

mod admin;
mod catalog;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use triggerd_remote::broker::{self, BrokerConfig};

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
    command: Option<admin::Command>,
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
        Some(command) => admin::run(&config, command),
        None => broker::shutdown_on_signals()
            .map_err(anyhow::Error::from)
            .and_then(|flag| Ok(broker::run(&config, flag)?)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("triggerd-broker: {e:#}");
            // A bad config (a missing key pair, no CURVE in this build) would only fail again
            // when restarted: 2, like a usage error, which the unit does not restart.
            let config_error = matches!(
                e.downcast_ref::<broker::BrokerError>(),
                Some(broker::BrokerError::Config(_) | broker::BrokerError::Security(_))
            );
            if e.downcast_ref::<Usage>().is_some() || config_error {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
