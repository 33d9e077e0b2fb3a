//! `[[webhook]]` tables: a local address, a request path, a body limit.

use std::net::SocketAddr;

use super::super::raw::RawRule;
use super::super::{Problem, Trigger, WebhookTrigger};
use super::Table;

const DEFAULT_MAX_BODY: usize = 1024 * 1024;

pub(super) fn trigger(
    table: &Table<'_>,
    raw: &RawRule,
    problems: &mut Vec<Problem>,
) -> Option<Trigger> {
    let listen = match raw.listen.as_deref() {
        None => {
            problems.push(table.problem("listen", "missing (e.g. \"127.0.0.1:8787\")"));
            None
        }
        Some(a) => a
            .parse::<SocketAddr>()
            .map_err(|_| {
                problems.push(table.problem("listen", format!("`{a}` is not an address:port")))
            })
            .ok(),
    };
    let path = raw.path.clone().unwrap_or_else(|| "/".into());
    if !path.starts_with('/') || path.contains(char::is_whitespace) {
        problems.push(table.problem(
            "path",
            format!("`{path}` must start with `/` and have no blanks"),
        ));
        return None;
    }
    let max_body = match raw.max_body {
        None => DEFAULT_MAX_BODY,
        Some(n) if (0..=(1 << 30)).contains(&n) => n as usize,
        Some(_) => {
            problems.push(table.problem("max_body", "expected a size from 0 to 1073741824 bytes"));
            return None;
        }
    };
    Some(Trigger::Webhook(WebhookTrigger {
        listen: listen?,
        path,
        max_body,
    }))
}
