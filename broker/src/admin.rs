//! The admin verbs of `triggerd-broker`: they act on the broker's own store (and key file),
//! never on a running broker, which rereads service settings every second and checks
//! identities at each connection. Every listing has `--json`. Run as root, they act as the
//! owner of the store's directory.

use std::time::Duration;

use clap::Subcommand;
use triggerd_remote::broker::{Algorithm, BrokerConfig, Role, Store, DEFAULT_TEAM};
use triggerd_remote::security::{public_path, KeyPair};

use super::catalog::TriggerAction;
use super::usage;

#[derive(Subcommand)]
pub enum Command {
    /// Create the broker's CURVE key pair at `secret_key` (0600) and print its public key.
    Keygen,
    /// Manage teams.
    Team {
        #[command(subcommand)]
        action: TeamAction,
    },
    /// Manage identities: CURVE public keys or PLAIN tokens.
    Identity {
        #[command(subcommand)]
        action: IdentityAction,
    },
    /// Manage token identities (the same as `identity add` without `--key`).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Manage services.
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Manage the trigger catalog: trigger files every host of a team shows.
    Trigger {
        #[command(subcommand)]
        action: TriggerAction,
    },
}

#[derive(Subcommand)]
pub enum TeamAction {
    /// Create a team.
    Add { name: String },
    /// Remove a team no identity or service belongs to.
    Remove { name: String },
    /// List teams.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum IdentityAction {
    /// Register an identity: with `--key`, by its host's CURVE public key; without, with a new
    /// token (printed once).
    Add {
        role: String,
        name: String,
        /// The host's public key (Z85, as `triggerd keygen` prints it; it may start with `-`).
        #[arg(long, allow_hyphen_values = true)]
        key: Option<String>,
        #[arg(long, default_value = DEFAULT_TEAM)]
        team: String,
        /// May change its team's trigger catalog (mkdir, mv, chmod in a host's mount).
        #[arg(long)]
        catalog_admin: bool,
    },
    /// Remove an identity.
    Remove { name: String },
    /// List identities (never tokens).
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum TokenAction {
    /// Create an identity and print its token (shown only once).
    Add {
        role: String,
        name: String,
        #[arg(long, default_value = DEFAULT_TEAM)]
        team: String,
    },
    /// Remove an identity.
    Remove { name: String },
}

#[derive(Subcommand)]
pub enum ServiceAction {
    /// Set a service's algorithm, timeout, team and visibility.
    Set {
        name: String,
        #[arg(long)]
        algorithm: Option<String>,
        #[arg(long)]
        timeout: Option<String>,
        /// The team owning it: only its workers may serve it.
        #[arg(long)]
        team: Option<String>,
        /// Every team may call it.
        #[arg(long, conflicts_with = "private")]
        public: bool,
        /// Only its team and the teams it is shared with may call it (the default).
        #[arg(long)]
        private: bool,
    },
    /// Let another team call a service.
    Share {
        name: String,
        #[arg(long = "with")]
        team: String,
    },
    /// Take a share back.
    Unshare {
        name: String,
        #[arg(long = "with")]
        team: String,
    },
    /// List services with their settings, team, visibility, shares, workers and load.
    List {
        #[arg(long)]
        json: bool,
    },
}

fn role(text: &str) -> anyhow::Result<Role> {
    text.parse().map_err(usage)
}

fn print_rows(header: &str, rows: impl IntoIterator<Item = String>) {
    println!("{header}");
    for row in rows {
        println!("{row}");
    }
}

/// Run as root, the verbs become the owner of the store's directory first (the broker's own
/// user, under the shipped unit), so every file they create stays readable by the broker.
fn become_state_owner(config: &BrokerConfig) -> anyhow::Result<()> {
    use nix::unistd::{Gid, Uid};
    use std::os::unix::fs::MetadataExt;
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let dir = config.store.parent().filter(|d| !d.as_os_str().is_empty());
    let Some(meta) = dir.and_then(|d| std::fs::metadata(d).ok()) else {
        return Ok(());
    };
    if meta.uid() == 0 {
        return Ok(());
    }
    nix::unistd::setgroups(&[])?;
    nix::unistd::setgid(Gid::from_raw(meta.gid()))?;
    nix::unistd::setuid(Uid::from_raw(meta.uid()))?;
    Ok(())
}

pub fn run(config: &BrokerConfig, command: Command) -> anyhow::Result<()> {
    become_state_owner(config)?;
    if let Command::Keygen = command {
        let pair = KeyPair::generate()?;
        pair.save(&config.secret_key)?;
        let public = triggerd_remote::security::encode_key(&pair.public);
        eprintln!(
            "secret key {} (keep it there), public key {}",
            config.secret_key.display(),
            public_path(&config.secret_key).display()
        );
        println!("{public}");
        return Ok(());
    }
    let store = Store::open(&config.store)?;
    match command {
        Command::Keygen => unreachable!("handled above"),
        Command::Team { action } => match action {
            TeamAction::Add { name } => store.add_team(&name)?,
            TeamAction::Remove { name } => {
                if !store.remove_team(&name)? {
                    anyhow::bail!("no team named {name:?}");
                }
            }
            TeamAction::List { json: true } => {
                println!("{}", serde_json::to_string_pretty(&store.teams()?)?)
            }
            TeamAction::List { json: false } => print_rows("TEAM", store.teams()?),
        },
        Command::Identity { action } => match action {
            IdentityAction::Add {
                role: r,
                name,
                key,
                team,
                catalog_admin,
            } => {
                match key {
                    Some(key) => store.add_key_identity(role(&r)?, &name, &key, &team)?,
                    None => println!("{}", store.add_identity(role(&r)?, &name, &team)?),
                }
                if catalog_admin {
                    store.set_catalog_admin(&name, true)?;
                }
            }
            IdentityAction::Remove { name } => remove_identity(&store, &name)?,
            IdentityAction::List { json: true } => {
                println!("{}", serde_json::to_string_pretty(&store.identities()?)?)
            }
            IdentityAction::List { json: false } => {
                let rows = store.identities()?.into_iter().map(|i| {
                    let auth = i.key.map_or("token".to_string(), |k| format!("key {k}"));
                    format!(
                        "{:<24} {:<7} {:<16} {auth}",
                        i.name,
                        i.role.as_str(),
                        i.team
                    )
                });
                print_rows(
                    &format!("{:<24} {:<7} {:<16} AUTH", "IDENTITY", "ROLE", "TEAM"),
                    rows,
                );
            }
        },
        Command::Token { action } => match action {
            TokenAction::Add {
                role: r,
                name,
                team,
            } => println!("{}", store.add_identity(role(&r)?, &name, &team)?),
            TokenAction::Remove { name } => remove_identity(&store, &name)?,
        },
        Command::Service { action } => service(&store, action)?,
        Command::Trigger { action } => super::catalog::run(&store, action)?,
    }
    Ok(())
}

fn remove_identity(store: &Store, name: &str) -> anyhow::Result<()> {
    if !store.remove_identity(name)? {
        anyhow::bail!("no identity named {name:?}");
    }
    Ok(())
}

fn service(store: &Store, action: ServiceAction) -> anyhow::Result<()> {
    match action {
        ServiceAction::Set {
            name,
            algorithm,
            timeout,
            team,
            public,
            private,
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
            let visibility = (public || private).then_some(public);
            if team.is_some() || visibility.is_some() {
                store.set_owner(&name, team.as_deref(), visibility)?;
            }
        }
        ServiceAction::Share { name, team } => store.share(&name, &team)?,
        ServiceAction::Unshare { name, team } => {
            if !store.unshare(&name, &team)? {
                anyhow::bail!("{name:?} is not shared with {team:?}");
            }
        }
        ServiceAction::List { json: true } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&store.service_overview()?)?
            )
        }
        ServiceAction::List { json: false } => {
            let rows = store.service_overview()?.into_iter().map(|s| {
                let t = &s.settings;
                let timeout = t.timeout.map_or("default".into(), |t| {
                    humantime::format_duration(t).to_string()
                });
                let list = |v: &[String]| match v.is_empty() {
                    true => "-".to_string(),
                    false => v.join(","),
                };
                let team = t.team.as_deref().unwrap_or("-");
                let seen = if t.public { "public" } else { "private" };
                format!(
                    "{:<24} {:<12} {:<10} {:<16} {:<8} {:<16} {:<5} {}",
                    t.name,
                    t.algorithm.as_str(),
                    timeout,
                    team,
                    seen,
                    list(&t.shares),
                    s.load,
                    list(&s.workers)
                )
            });
            let header = format!(
                "{:<24} {:<12} {:<10} {:<16} {:<8} {:<16} {:<5} WORKERS",
                "SERVICE", "ALGORITHM", "TIMEOUT", "TEAM", "VISIBLE", "SHARED WITH", "LOAD"
            );
            print_rows(&header, rows);
        }
    }
    Ok(())
}
