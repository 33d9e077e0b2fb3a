//! The subjects and headers triggerd uses on NATS: the contract for any NATS client that
//! calls a triggerd service or serves one (`docs/nats.md` says the same for users).
//!
//! A request is a JetStream message on [`request_subject`] with the payload as body; its
//! headers are [`MSG_ID`] (the event id, for de-duplication), optionally [`PLUGIN`],
//! [`TIMEOUT_MS`] and [`REPLY`] (a core NATS subject, usually an inbox, where replies go).
//! A worker publishes zero or more `partial` replies (one output line each) and one `final`
//! reply ([`KIND`], [`STATUS`], [`ID`], [`WORKER`] headers) to that subject.

use async_nats::HeaderMap;

use crate::NatsError;

/// Prefix of request subjects; the service name follows, escaped.
pub const REQUEST_PREFIX: &str = "triggerd.svc.";
/// Prefix of dead-letter subjects (requests given up after `max_deliver` attempts).
pub const DEAD_PREFIX: &str = "triggerd.dead.";
/// The stream that keeps dead letters of every service.
pub const DEAD_STREAM: &str = "triggerd-dead";
/// Prefix of service stream names.
pub const STREAM_PREFIX: &str = "triggerd-svc-";

/// JetStream's de-duplication header: the spool's event id, 32 lowercase hex digits.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// The plugin to run (the service's default when absent or empty).
pub const PLUGIN: &str = "Triggerd-Plugin";
/// Where replies go (absent: nobody listens, the worker sends none).
pub const REPLY: &str = "Triggerd-Reply";
/// The plugin's deadline in milliseconds.
pub const TIMEOUT_MS: &str = "Triggerd-Timeout-Ms";
/// On a reply: `partial` (one output line) or `final`.
pub const KIND: &str = "Triggerd-Kind";
/// On a final reply: the exit status, 0 for success.
pub const STATUS: &str = "Triggerd-Status";
/// On a reply: the request's `Nats-Msg-Id`.
pub const ID: &str = "Triggerd-Id";
/// On a reply: the worker that produced it.
pub const WORKER: &str = "Triggerd-Worker";

/// Longest escaped service name: stream names become file names on the servers.
const MAX_TOKEN: usize = 200;

/// The subject token and stream-name part of a service: `[A-Za-z0-9-]` kept, every other
/// byte as `_XX` (hex), so distinct names stay distinct and no name adds subject levels.
pub fn escape(service: &str) -> Result<String, NatsError> {
    let mut out = String::with_capacity(service.len());
    for b in service.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    if out.is_empty() || out.len() > MAX_TOKEN {
        return Err(NatsError::Name(service.to_string()));
    }
    Ok(out)
}

/// Subject requests for `service` are published on.
pub fn request_subject(service: &str) -> Result<String, NatsError> {
    Ok(format!("{REQUEST_PREFIX}{}", escape(service)?))
}

/// Subject requests for `service` go to after `max_deliver` attempts.
pub fn dead_subject(service: &str) -> Result<String, NatsError> {
    Ok(format!("{DEAD_PREFIX}{}", escape(service)?))
}

/// The stream holding `service`'s requests.
pub fn stream_name(service: &str) -> Result<String, NatsError> {
    Ok(format!("{STREAM_PREFIX}{}", escape(service)?))
}

/// An event id as `Nats-Msg-Id` writes it.
pub fn format_id(id: u128) -> String {
    format!("{id:032x}")
}

/// The id a worker de-duplicates by: triggerd's own ids parse; another client's message
/// ids count as "no id" (0) and rely on the server's duplicate window alone.
pub fn parse_id(text: &str) -> u128 {
    if text.len() == 32 {
        u128::from_str_radix(text, 16).unwrap_or(0)
    } else {
        0
    }
}

/// Longest reply subject a worker publishes to.
const MAX_REPLY: usize = 256;

/// A subject a worker may publish replies to: printable ASCII without blanks, non-empty
/// tokens, no wildcards. Anything else would make the server drop the worker's connection
/// (a protocol error), so a hostile request cannot disconnect workers. Nor `$...` subjects
/// (`$JS.API.*`, `$SYS.*`): a request must not make a worker speak to JetStream's API with
/// the worker's permissions, nor to triggerd's own request subjects.
pub fn valid_reply(subject: &str) -> bool {
    subject.len() <= MAX_REPLY
        && !subject.starts_with('$')
        && !subject.starts_with(REQUEST_PREFIX)
        && !subject.starts_with(DEAD_PREFIX)
        && subject.bytes().all(|b| b.is_ascii_graphic())
        && subject
            .split('.')
            .all(|t| !t.is_empty() && t != "*" && t != ">")
}

/// One header's value as text. The name is parsed as the client parses received headers:
/// looked up as a plain `&str`, a standard name such as `Nats-Msg-Id` is never found.
pub fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    let name: async_nats::HeaderName = name.parse().ok()?;
    headers?.get(name).map(|v| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_escape_to_single_tokens_without_collisions() {
        assert_eq!(escape("logsink").expect("plain"), "logsink");
        assert_eq!(escape("a.b").expect("dot"), "a_2Eb");
        assert_eq!(escape("a_2Eb").expect("underscore"), "a_5F2Eb");
        assert_eq!(escape("x>*").expect("wild"), "x_3E_2A");
        assert!(escape("").is_err());
        assert!(escape(&"é".repeat(100)).is_err());
        assert_eq!(
            request_subject("a.b").expect("subject"),
            "triggerd.svc.a_2Eb"
        );
    }

    #[test]
    fn only_plain_subjects_take_replies() {
        assert!(valid_reply("_INBOX.abc123"));
        for bad in [
            "",
            "not a subject",
            ">",
            "a.*",
            "a..b",
            "a.",
            "\u{7f}x",
            &"a".repeat(300),
            "$JS.API.STREAM.DELETE.x",
            "triggerd.svc.job",
        ] {
            assert!(!valid_reply(bad), "{bad:?}");
        }
    }

    #[test]
    fn standard_and_own_headers_are_found_as_received() {
        let mut headers = HeaderMap::new();
        let parsed = |n: &str| n.parse::<async_nats::HeaderName>().expect("name");
        headers.insert(parsed(MSG_ID), "00ff");
        headers.insert(parsed(PLUGIN), "echo");
        assert_eq!(header(Some(&headers), MSG_ID), Some("00ff"));
        assert_eq!(header(Some(&headers), PLUGIN), Some("echo"));
        assert_eq!(header(Some(&headers), REPLY), None);
        assert_eq!(header(None, MSG_ID), None);
    }

    #[test]
    fn ids_round_trip_and_foreign_ids_are_zero() {
        let id = (7u128 << 64) | 42;
        assert_eq!(parse_id(&format_id(id)), id);
        assert_eq!(parse_id("my-own-id"), 0);
        assert_eq!(parse_id(&"z".repeat(32)), 0);
    }
}
