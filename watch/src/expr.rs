//! Event expressions as users write them in configs: names joined by `|` (and `,`, which also
//! ORs, so facron groups and incron comma lists both mean "any of these"), each a `FAN_*`
//! name (facron), an `IN_*` name (incron), a lower-case short name, or a raw number.

use crate::error::WatchError;
use crate::kinds::{EventMask, NAMES};

const IN_ALL_EVENTS: EventMask = EventMask::from_bits_truncate(
    EventMask::ALL_NOTIFICATIONS.bits() & !EventMask::OPEN_EXEC.bits(),
);
const FAN_ALL_EVENTS: EventMask = EventMask::from_bits_truncate(
    EventMask::ACCESS.bits()
        | EventMask::MODIFY.bits()
        | EventMask::CLOSE.bits()
        | EventMask::OPEN.bits(),
);

/// Names accepted beyond the short names of single bits (compared case-insensitively).
const ALIASES: &[(&str, EventMask)] = &[
    ("close", EventMask::CLOSE),
    ("move", EventMask::MOVE),
    ("q_overflow", EventMask::OVERFLOW),
    ("all_events", FAN_ALL_EVENTS),
    ("all_perm_events", EventMask::ALL_PERMISSIONS),
    // The kernel's legacy header also ORs the permission kinds in; gating every open of the
    // marked objects behind an action is never what a pasted "all events" line means.
    (
        "all_outgoing_events",
        FAN_ALL_EVENTS.union(EventMask::OVERFLOW),
    ),
];

/// incron names whose meaning differs from the `FAN_` name with the same suffix.
const INCRON_ONLY: &[(&str, EventMask)] =
    &[("all_events", IN_ALL_EVENTS), ("isdir", EventMask::ONDIR)];

/// inotify/incron options that are not events, with the reason triggerd rejects them.
const INCRON_OPTIONS: &[(&str, &str, u64)] = &[
    (
        "no_loop",
        "loop prevention is on by default in triggerd (a rule may set loop = true)",
        0,
    ),
    (
        "dont_follow",
        "marks always follow symbolic links",
        0x0200_0000,
    ),
    (
        "oneshot",
        "a rule fires for every event; use debounce to coalesce",
        0x8000_0000,
    ),
    (
        "onlydir",
        "a watched path may be a file or a directory",
        0x0100_0000,
    ),
    (
        "mask_add",
        "masks of rules on one path are always ORed",
        0x2000_0000,
    ),
    ("excl_unlink", "not supported", 0x0400_0000),
];

/// Parses one event expression into a mask (see the crate documentation for the grammar).
pub fn parse_events(expr: &str) -> Result<EventMask, WatchError> {
    let fail = |message: String| WatchError::Events {
        expr: expr.to_owned(),
        message,
    };
    let mut mask = EventMask::EMPTY;
    for token in expr.split(['|', ',']) {
        let token = token.trim();
        if token.is_empty() {
            return Err(fail("empty event name (stray '|' or ',')".to_owned()));
        }
        mask |= parse_one(token).map_err(fail)?;
    }
    Ok(mask)
}

impl std::str::FromStr for EventMask {
    type Err = WatchError;

    /// Same grammar as [`parse_events`].
    fn from_str(expr: &str) -> Result<EventMask, WatchError> {
        parse_events(expr)
    }
}

fn parse_one(token: &str) -> Result<EventMask, String> {
    if let Some(bits) = parse_number(token) {
        return number_to_mask(bits);
    }
    let lower = token.to_ascii_lowercase();
    let (prefix, rest) = if let Some(rest) = lower.strip_prefix("fan_") {
        ("fan", rest)
    } else if let Some(rest) = lower.strip_prefix("in_") {
        ("in", rest)
    } else {
        ("", lower.as_str())
    };
    if prefix == "in" {
        if let Some((_, mask)) = INCRON_ONLY.iter().find(|(name, _)| *name == rest) {
            return Ok(*mask);
        }
        if let Some((name, why, _)) = INCRON_OPTIONS.iter().find(|(name, _, _)| *name == rest) {
            return Err(format!(
                "IN_{} is an incron option, not an event: {why}",
                name.to_ascii_uppercase()
            ));
        }
    }
    if let Some((bit, _)) = NAMES.iter().find(|(_, name)| *name == rest) {
        return Ok(*bit);
    }
    if let Some((_, mask)) = ALIASES.iter().find(|(name, _)| *name == rest) {
        return Ok(*mask);
    }
    Err(format!(
        "unknown event name {token:?}; valid names: {}",
        valid_names()
    ))
}

fn parse_number(token: &str) -> Option<u64> {
    if let Some(hex) = token
        .strip_prefix("0x")
        .or_else(|| token.strip_prefix("0X"))
    {
        u64::from_str_radix(hex, 16).ok()
    } else if token.bytes().all(|b| b.is_ascii_digit()) {
        token.parse().ok()
    } else {
        None
    }
}

fn number_to_mask(bits: u64) -> Result<EventMask, String> {
    if let Some((name, why, _)) = INCRON_OPTIONS
        .iter()
        .find(|(_, _, bit)| *bit != 0 && bits & bit != 0)
    {
        return Err(format!(
            "the number {bits:#x} holds IN_{}, an incron option: {why}",
            name.to_ascii_uppercase()
        ));
    }
    if !EventMask::is_known(bits) {
        return Err(format!(
            "the number {bits:#x} holds unknown bits {:#x}",
            bits & !EventMask::from_bits_truncate(bits).bits()
        ));
    }
    if bits == 0 {
        return Err("the number 0 names no event".to_owned());
    }
    Ok(EventMask::from_bits_truncate(bits))
}

fn valid_names() -> String {
    let mut names: Vec<&str> = NAMES.iter().map(|(_, name)| *name).collect();
    names.extend(ALIASES.iter().map(|(name, _)| *name));
    format!(
        "{} (each also as FAN_NAME or IN_NAME, any case), IN_ALL_EVENTS, IN_ISDIR, or a number",
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(expr: &str) -> EventMask {
        match parse_events(expr) {
            Ok(mask) => mask,
            Err(e) => panic!("{expr:?}: {e}"),
        }
    }

    fn err(expr: &str) -> String {
        match parse_events(expr) {
            Ok(mask) => panic!("{expr:?} parsed as {mask}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn three_spellings_of_one_kind_agree() {
        for expr in [
            "FAN_CLOSE_WRITE",
            "IN_CLOSE_WRITE",
            "close_write",
            "Close_Write",
        ] {
            assert_eq!(ok(expr), EventMask::CLOSE_WRITE);
        }
        assert_eq!(ok("fan_q_overflow"), EventMask::OVERFLOW);
        assert_eq!(ok("IN_Q_OVERFLOW"), EventMask::OVERFLOW);
        assert_eq!(ok("overflow"), EventMask::OVERFLOW);
    }

    #[test]
    fn bar_and_comma_both_or() {
        let want = EventMask::MODIFY | EventMask::EVENT_ON_CHILD;
        assert_eq!(ok("FAN_MODIFY|FAN_EVENT_ON_CHILD"), want);
        assert_eq!(ok("FAN_MODIFY,FAN_EVENT_ON_CHILD"), want);
        assert_eq!(
            ok(" IN_CREATE , IN_DELETE "),
            EventMask::CREATE | EventMask::DELETE
        );
    }

    #[test]
    fn aliases_expand() {
        assert_eq!(ok("FAN_CLOSE"), EventMask::CLOSE);
        assert_eq!(ok("IN_CLOSE"), EventMask::CLOSE);
        assert_eq!(ok("IN_MOVE"), EventMask::MOVE);
        assert_eq!(ok("FAN_MOVE"), EventMask::MOVE);
        assert_eq!(ok("FAN_ALL_EVENTS"), FAN_ALL_EVENTS);
        assert_eq!(
            ok("FAN_ALL_EVENTS").names(),
            ["access", "modify", "close_write", "close_nowrite", "open"]
        );
        assert_eq!(
            ok("FAN_ALL_PERM_EVENTS"),
            EventMask::OPEN_PERM | EventMask::ACCESS_PERM | EventMask::OPEN_EXEC_PERM
        );
        assert_eq!(
            ok("FAN_ALL_OUTGOING_EVENTS"),
            FAN_ALL_EVENTS | EventMask::OVERFLOW
        );
        assert_eq!(ok("IN_ALL_EVENTS").names().len(), 12);
        assert_eq!(ok("FAN_ONDIR"), EventMask::ONDIR);
        assert_eq!(ok("IN_ISDIR"), EventMask::ONDIR);
        assert_eq!(
            ok("IN_DELETE_SELF|IN_MOVE_SELF"),
            EventMask::DELETE_SELF | EventMask::MOVE_SELF
        );
    }

    #[test]
    fn numbers_are_raw_bits() {
        assert_eq!(ok("8"), EventMask::CLOSE_WRITE);
        assert_eq!(ok("0x108"), EventMask::CLOSE_WRITE | EventMask::CREATE);
        assert!(err("0x100000000000").contains("unknown bits"));
        assert!(err("0").contains("no event"));
        assert!(err("0x80000008").contains("IN_ONESHOT"));
    }

    #[test]
    fn incron_options_are_rejected_with_a_reason() {
        assert!(err("IN_CLOSE_WRITE,IN_NO_LOOP").contains("IN_NO_LOOP is an incron option"));
        assert!(err("IN_DONT_FOLLOW").contains("symbolic links"));
        assert!(err("IN_ONESHOT").contains("incron option"));
    }

    #[test]
    fn unknown_and_empty_names_are_explained() {
        let message = err("FAN_CLOSE_WRITTEN");
        assert!(message.contains("unknown event name \"FAN_CLOSE_WRITTEN\""));
        assert!(message.contains("close_write"));
        assert!(err("FAN_MODIFY|").contains("empty event name"));
        assert!(err("").contains("empty event name"));
        assert!(err("FAN_").contains("unknown"));
    }

    #[test]
    fn text_form_parses_back() {
        let mask = EventMask::CLOSE_WRITE | EventMask::MOVED_TO | EventMask::ONDIR;
        assert_eq!(ok(&mask.to_string()), mask);
        assert_eq!(mask.to_string().parse::<EventMask>(), Ok(mask));
    }
}
