//! `[[webhook]]` tables: a local address (a remote one only with `allow_remote`), a request
//! path, a body limit, per-peer and deadline bounds, and an optional signing secret read from
//! a file that others may not read.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use super::super::raw::RawRule;
use super::super::{Problem, Secret, Trigger, WebhookTrigger};
use super::action::{duration, number};
use super::Table;

const DEFAULT_MAX_BODY: usize = 1024 * 1024;
const DEFAULT_PER_PEER: i64 = 16;
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// A secret file larger than this is not a key.
const MAX_SECRET: u64 = 4096;

pub(super) fn trigger(
    table: &Table<'_>,
    raw: &RawRule,
    problems: &mut Vec<Problem>,
) -> Option<Trigger> {
    let before = problems.len();
    let listen = match raw.listen.as_deref() {
        None => {
            problems.push(table.problem("listen", "missing (e.g. \"127.0.0.1:8787\")"));
            None
        }
        Some(a) => listen_address(table, a, raw.allow_remote, problems),
    };
    let path = raw.path.clone().unwrap_or_else(|| "/".into());
    if !path.starts_with('/') || path.contains(char::is_whitespace) {
        problems.push(table.problem(
            "path",
            format!("`{path}` must start with `/` and have no blanks"),
        ));
    }
    let max_body = match raw.max_body {
        None => DEFAULT_MAX_BODY,
        Some(n) if (0..=(1 << 30)).contains(&n) => n as usize,
        Some(_) => {
            problems.push(table.problem("max_body", "expected a size from 0 to 1073741824 bytes"));
            0
        }
    };
    let per_peer =
        number(table, "per_peer", raw.per_peer, 1..=4096, problems).unwrap_or(DEFAULT_PER_PEER);
    let header_timeout = bounded(table, "header_timeout", &raw.header_timeout, problems)
        .unwrap_or(DEFAULT_HEADER_TIMEOUT);
    let body_timeout =
        bounded(table, "body_timeout", &raw.body_timeout, problems).unwrap_or(DEFAULT_BODY_TIMEOUT);
    let secret = raw.secret.as_deref().and_then(|file| {
        read_secret(Path::new(file))
            .map_err(|m| problems.push(table.problem("secret", m)))
            .ok()
    });
    if problems.len() > before {
        return None;
    }
    Some(Trigger::Webhook(WebhookTrigger {
        listen: listen?,
        path,
        max_body,
        per_peer: per_peer as usize,
        header_timeout,
        body_timeout,
        secret,
    }))
}

/// `listen`: an address:port, on loopback unless `allow_remote = true` says otherwise.
pub(super) fn listen_address(
    table: &Table<'_>,
    text: &str,
    allow_remote: Option<bool>,
    problems: &mut Vec<Problem>,
) -> Option<SocketAddr> {
    let Ok(addr) = text.parse::<SocketAddr>() else {
        problems.push(table.problem("listen", format!("`{text}` is not an address:port")));
        return None;
    };
    if !addr.ip().is_loopback() && allow_remote != Some(true) {
        problems.push(table.problem(
            "listen",
            format!("`{addr}` is not a loopback address: set `allow_remote = true` to accept callers from other hosts"),
        ));
    }
    Some(addr)
}

/// A deadline from 1 ms to 10 minutes.
fn bounded(
    table: &Table<'_>,
    key: &str,
    value: &Option<String>,
    problems: &mut Vec<Problem>,
) -> Option<Duration> {
    let d = duration(table, key, value, problems)?;
    if d.is_zero() || d > Duration::from_secs(600) {
        problems.push(table.problem(key, "expected a duration from 1ms to 10m"));
        return None;
    }
    Some(d)
}

/// The key in `file`, without trailing line ends and blanks. A file others may read or
/// write is refused: its key would sign requests for anyone on the host.
fn read_secret(file: &Path) -> Result<Secret, String> {
    if !file.is_absolute() {
        return Err(format!("`{}` must be an absolute path", file.display()));
    }
    let meta = std::fs::metadata(file).map_err(|e| format!("{}: {e}", file.display()))?;
    if !meta.is_file() || meta.len() > MAX_SECRET {
        return Err(format!(
            "{}: expected a regular file of at most {MAX_SECRET} bytes",
            file.display()
        ));
    }
    if meta.mode() & 0o007 != 0 {
        return Err(format!(
            "{} is accessible to others (mode {:o}): chmod 600 it",
            file.display(),
            meta.mode() & 0o7777
        ));
    }
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let key = bytes.trim_ascii_end();
    if key.is_empty() {
        return Err(format!("{} is empty", file.display()));
    }
    Ok(Secret(key.into()))
}
