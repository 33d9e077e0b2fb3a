//! `triggerd-broker trigger ...`: the trigger catalog's admin verbs. Like every admin verb
//! they write the broker's store; the running broker notices the new sequence number within
//! 25 ms and pushes the change to every subscribed host.

use clap::Subcommand;
use triggerd_remote::broker::{CatalogChange, CatalogEntry, Store};

use super::usage;

#[derive(Subcommand)]
pub enum TriggerAction {
    /// Define a trigger file: a write to it on any host of the team is sent to SERVICE.
    Add {
        path: String,
        #[arg(long)]
        team: String,
        #[arg(long)]
        service: String,
        #[arg(long)]
        plugin: Option<String>,
        /// Deadline of each write's request, e.g. 10s.
        #[arg(long)]
        timeout: Option<String>,
        /// `write` (one message per write) or `line`.
        #[arg(long, default_value = "write")]
        split: String,
        /// Octal permission bits.
        #[arg(long, default_value = "0620")]
        mode: String,
        /// The group owning the file on each host.
        #[arg(long)]
        group: Option<String>,
    },
    /// Create an empty directory.
    Mkdir {
        path: String,
        #[arg(long)]
        team: String,
    },
    /// Move a trigger, or a directory with everything below it.
    Mv {
        from: String,
        to: String,
        #[arg(long)]
        team: String,
    },
    /// Change a trigger's permission bits (octal).
    Chmod {
        path: String,
        mode: String,
        #[arg(long)]
        team: String,
    },
    /// Remove a trigger, or a directory with everything below it.
    Remove {
        path: String,
        #[arg(long)]
        team: String,
    },
    /// List a team's catalog.
    List {
        #[arg(long)]
        team: String,
        #[arg(long)]
        json: bool,
    },
}

fn mode(text: &str) -> anyhow::Result<u32> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .map_err(|e| usage(format!("mode {text:?}: {e}")))
}

pub fn run(store: &Store, action: TriggerAction) -> anyhow::Result<()> {
    let (team, change) = match action {
        TriggerAction::List { team, json } => return list(store, &team, json),
        TriggerAction::Add {
            path,
            team,
            service,
            plugin,
            timeout,
            split,
            mode: m,
            group,
        } => {
            let timeout_ms = timeout
                .map(|t| humantime::parse_duration(&t))
                .transpose()
                .map_err(|e| usage(format!("--timeout: {e}")))?
                .map(|t| t.as_millis() as u64);
            let entry = CatalogEntry {
                plugin,
                timeout_ms,
                split,
                mode: mode(&m)?,
                group,
                ..CatalogEntry::trigger(&path, &service)
            };
            (team, CatalogChange::Add { entry })
        }
        TriggerAction::Mkdir { path, team } => (team, CatalogChange::Mkdir { path }),
        TriggerAction::Mv { from, to, team } => (team, CatalogChange::Mv { from, to }),
        TriggerAction::Chmod {
            path,
            mode: m,
            team,
        } => (
            team,
            CatalogChange::Chmod {
                path,
                mode: mode(&m)?,
            },
        ),
        TriggerAction::Remove { path, team } => (team, CatalogChange::Remove { path }),
    };
    let seq = store.catalog_apply(&team, &change)?;
    eprintln!("catalog of team {team} at change {seq}");
    Ok(())
}

fn list(store: &Store, team: &str, json: bool) -> anyhow::Result<()> {
    let (seq, entries) = store.catalog_snapshot(team)?;
    if json {
        let value = serde_json::json!({ "seq": seq, "entries": entries });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "{:<40} {:<16} {:<10} {:<8} {:<6} {:<5} SEQ",
        "PATH", "SERVICE", "PLUGIN", "TIMEOUT", "SPLIT", "MODE"
    );
    for e in entries {
        let timeout = e.timeout_ms.map_or("-".into(), |t| format!("{t}ms"));
        let (service, split) = match e.dir {
            true => ("(directory)", "-"),
            false => (e.service.as_str(), e.split.as_str()),
        };
        println!(
            "{:<40} {:<16} {:<10} {:<8} {:<6} {:04o}  {}",
            e.path,
            service,
            e.plugin.as_deref().unwrap_or("-"),
            timeout,
            split,
            e.mode,
            e.seq
        );
    }
    Ok(())
}
