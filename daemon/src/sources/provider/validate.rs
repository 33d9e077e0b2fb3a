//! Asking providers whether a config's `[[source]]` rules make sense, before the config is
//! accepted (`triggerd check`, start and every reload): a short-lived process per provider
//! gets `init` and one `validate` per rule, bounded by the provider's `validate_timeout`;
//! `invalid` answers and silence become problems with the config file and line.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::process::{Incoming, LineCounters, Process};
use super::protocol::{self, FromProvider, ToProvider};
use crate::config::{Config, ConfigError, Problem, ProviderSettings, Rule, Trigger};

/// How long a validating provider gets to exit after `shutdown`.
const GRACE: Duration = Duration::from_millis(200);

/// Providers of `config` that `running` already has with the same settings and the same rules
/// and params: their answers are known, so a reload does not ask them again.
pub fn unchanged(config: &Config, running: &Config) -> HashSet<String> {
    config
        .providers
        .iter()
        .filter(|p| {
            running.providers.contains(p)
                && same_rules(&rules_of(running, &p.name), &rules_of(config, &p.name))
        })
        .map(|p| p.name.clone())
        .collect()
}

/// Refuses `config` when a provider refuses one of its rules or does not answer in time;
/// the providers named in `known` are taken as answered.
pub async fn validate(config: &Config, known: &HashSet<String>) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    for provider in &config.providers {
        let rules = rules_of(config, &provider.name);
        if rules.is_empty() || known.contains(&provider.name) {
            continue;
        }
        let state_dir = super::state_dir(&config.daemon.state_dir, &provider.name);
        ask(provider, &state_dir, &rules, &mut problems).await;
    }
    if problems.is_empty() {
        Ok(())
    } else {
        problems.sort_by_key(|p| p.line);
        Err(ConfigError::invalid(&config.file, problems))
    }
}

/// The rules bound to `provider`, in config order.
fn rules_of<'c>(config: &'c Config, provider: &str) -> Vec<&'c Rule> {
    config
        .rules
        .iter()
        .filter(|r| matches!(&r.def.trigger, Trigger::Provider(t) if t.provider == provider))
        .map(|r| &**r)
        .collect()
}

/// Same names with the same params (what `validate` is asked about).
fn same_rules(a: &[&Rule], b: &[&Rule]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.name == y.name && x.def.trigger == y.def.trigger)
}

async fn ask(
    provider: &ProviderSettings,
    state_dir: &Path,
    rules: &[&Rule],
    problems: &mut Vec<Problem>,
) {
    let refuse = |message: String| {
        Problem::new(
            provider.line,
            format!("[[provider]]: {}: {message}", provider.name),
        )
    };
    let mut process = match Process::start(provider, state_dir, Arc::new(LineCounters::default())) {
        Ok(p) => p,
        Err(e) => return problems.push(refuse(e.to_string())),
    };
    let deadline = Instant::now() + provider.validate_timeout;
    let outcome = session(&mut process, provider, state_dir, rules, deadline).await;
    match outcome {
        Ok(answers) => {
            for rule in rules {
                if let Some(Some(message)) = answers.get(rule.name.as_str()) {
                    problems.push(rule.problem(format!("[[source]]: params: {message}")));
                }
            }
        }
        Err(why) => problems.push(refuse(why)),
    }
    process.stop(GRACE).await;
}

/// `init`, then `validate` for each rule; the answers by rule (`None` = valid), or why the
/// provider could not be asked.
async fn session<'r>(
    process: &mut Process,
    provider: &ProviderSettings,
    state_dir: &Path,
    rules: &[&'r Rule],
    deadline: Instant,
) -> Result<BTreeMap<&'r str, Option<String>>, String> {
    let init = ToProvider::Init {
        version: protocol::VERSION,
        provider: &provider.name,
        config: &provider.config,
        state_dir,
    };
    let timeout = provider.validate_timeout;
    let silent = || {
        format!(
            "did not answer within {}",
            humantime::format_duration(timeout)
        )
    };
    process.send(&init).await.map_err(|e| e.to_string())?;
    loop {
        match next(process, deadline).await.ok_or_else(silent)? {
            FromProvider::Ready { version } if version == protocol::VERSION => break,
            FromProvider::Ready { version } => {
                return Err(format!(
                    "speaks protocol version {version}, not {}",
                    protocol::VERSION
                ))
            }
            FromProvider::Error { message } => return Err(protocol::clean(&message)),
            _ => {}
        }
    }
    let mut pending: BTreeMap<&str, &Rule> = BTreeMap::new();
    for rule in rules {
        let Trigger::Provider(t) = &rule.def.trigger else {
            continue;
        };
        let message = ToProvider::Validate {
            rule: &rule.name,
            params: &t.params,
        };
        process.send(&message).await.map_err(|e| e.to_string())?;
        pending.insert(&rule.name, rule);
    }
    let mut answers = BTreeMap::new();
    while !pending.is_empty() {
        let (rule, answer) = match next(process, deadline).await.ok_or_else(silent)? {
            FromProvider::Valid { rule } => (rule, None),
            FromProvider::Invalid { rule, message } => (rule, Some(protocol::clean(&message))),
            _ => continue,
        };
        if let Some(r) = pending.remove(rule.as_str()) {
            answers.insert(r.name.as_str(), answer);
        }
    }
    Ok(answers)
}

/// The next message before `deadline`; `None` at the deadline or when the provider is gone.
/// Lines that are not messages are skipped here (the provider is being asked, not served).
async fn next(process: &mut Process, deadline: Instant) -> Option<FromProvider> {
    loop {
        match tokio::time::timeout_at(deadline, process.incoming.recv()).await {
            Ok(Some(Incoming::Message(m))) => return Some(m),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}
