//! The provider protocol, version 1: one JSON object per line on the provider's stdin (from
//! triggerd) and stdout (to triggerd). `docs/providers.md` describes it for provider authors;
//! this module is its one encoder and decoder, and the bounds on what a provider may send.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use serde::{Deserialize, Serialize};

/// The protocol version `init` announces and `ready` must repeat.
pub const VERSION: u32 = 1;
/// Bounds on one `fire`; anything past them refuses the line.
pub const MAX_SUBJECT: usize = 4096;
pub const MAX_FIELDS: usize = 32;
pub const MAX_FIELD_NAME: usize = 64;
pub const MAX_FIELD_VALUE: usize = 4096;
pub const MAX_EVENT_ID: usize = 256;
pub const MAX_MESSAGE: usize = 4096;

/// What triggerd writes.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ToProvider<'a> {
    Init {
        version: u32,
        provider: &'a str,
        config: &'a serde_json::Value,
        state_dir: &'a Path,
    },
    Validate {
        rule: &'a str,
        params: &'a serde_json::Value,
    },
    Add {
        rule: &'a str,
        params: &'a serde_json::Value,
    },
    Remove {
        rule: &'a str,
    },
    Shutdown,
}

impl ToProvider<'_> {
    /// One line, newline included.
    pub fn line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// What a provider writes. Unknown keys are ignored (later minor versions may add some).
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FromProvider {
    /// `init` accepted.
    Ready {
        version: u32,
    },
    /// `init` refused: the provider's config is wrong.
    Error {
        message: String,
    },
    Valid {
        rule: String,
    },
    Invalid {
        rule: String,
        message: String,
    },
    Fire(Fire),
    /// The rule cannot work (bad credentials, a gone resource); shown in status until enabled.
    Disable {
        rule: String,
        reason: String,
    },
}

#[derive(Debug, Deserialize, PartialEq)]
pub struct Fire {
    pub rule: String,
    /// The payload as text...
    #[serde(default)]
    pub payload: Option<String>,
    /// ...or as base64, for bytes that are not UTF-8.
    #[serde(default)]
    pub payload_base64: Option<String>,
    /// What `$$` stands for; the provider's name when absent.
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// The same id twice for one rule fires once (recent ids are remembered).
    #[serde(default)]
    pub id: Option<String>,
}

/// A `fire` checked against the bounds: ready to become an event.
#[derive(Debug, PartialEq)]
pub struct Checked {
    pub payload: Vec<u8>,
    pub subject: Option<String>,
    pub fields: Vec<(String, String)>,
    pub id: Option<String>,
}

/// Why a line was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Refusal {
    #[error("not a protocol message: {0}")]
    Malformed(String),
    #[error("{0}")]
    Bound(&'static str),
}

pub fn parse(line: &[u8]) -> Result<FromProvider, Refusal> {
    serde_json::from_slice(line).map_err(|e| Refusal::Malformed(e.to_string()))
}

impl Fire {
    pub fn check(self) -> Result<Checked, Refusal> {
        let payload = match (self.payload, self.payload_base64) {
            (Some(_), Some(_)) => {
                return Err(Refusal::Bound("payload and payload_base64 are exclusive"))
            }
            (Some(text), None) => text.into_bytes(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| Refusal::Bound("payload_base64 is not base64"))?,
            (None, None) => Vec::new(),
        };
        if self.subject.as_ref().is_some_and(|s| s.len() > MAX_SUBJECT) {
            return Err(Refusal::Bound("subject longer than 4096 bytes"));
        }
        if self.id.as_ref().is_some_and(|s| s.len() > MAX_EVENT_ID) {
            return Err(Refusal::Bound("id longer than 256 bytes"));
        }
        if self.fields.len() > MAX_FIELDS {
            return Err(Refusal::Bound("more than 32 fields"));
        }
        for (name, value) in &self.fields {
            let name_ok = (1..=MAX_FIELD_NAME).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !name_ok {
                return Err(Refusal::Bound("a field name is not [A-Za-z0-9_]{1,64}"));
            }
            if value.len() > MAX_FIELD_VALUE || value.contains('\0') {
                return Err(Refusal::Bound(
                    "a field value is over 4096 bytes or holds NUL",
                ));
            }
        }
        Ok(Checked {
            payload,
            subject: self.subject,
            fields: self.fields.into_iter().collect(),
            id: self.id,
        })
    }
}

/// A provider's free text (messages, reasons) cut to a bound and stripped of control
/// characters, so that it cannot forge log lines.
pub fn clean(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE)
        .collect();
    if out.len() < text.len() && text.chars().count() > MAX_MESSAGE {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_from_a_provider_parse_and_unknown_keys_are_ignored() {
        assert_eq!(
            parse(br#"{"type":"ready","version":1,"extra":true}"#),
            Ok(FromProvider::Ready { version: 1 })
        );
        let FromProvider::Fire(fire) =
            parse(br#"{"type":"fire","rule":"r","payload_base64":"/wA=","fields":{"n":"1"}}"#)
                .expect("fire")
        else {
            panic!("not a fire");
        };
        let checked = fire.check().expect("within bounds");
        assert_eq!(checked.payload, [0xff, 0]);
        assert_eq!(checked.fields, [("n".to_string(), "1".to_string())]);
        assert!(matches!(parse(b"garbage"), Err(Refusal::Malformed(_))));
        assert!(matches!(
            parse(br#"{"type":"launch"}"#),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn fires_past_a_bound_are_refused() {
        let fire = |json: &str| match parse(json.as_bytes()) {
            Ok(FromProvider::Fire(f)) => f.check(),
            other => panic!("{other:?}"),
        };
        assert!(fire(r#"{"type":"fire","rule":"r","fields":{"a-b":"x"}}"#).is_err());
        assert!(
            fire(r#"{"type":"fire","rule":"r","payload":"a","payload_base64":"YQ=="}"#).is_err()
        );
        let long = "x".repeat(MAX_SUBJECT + 1);
        assert!(fire(&format!(
            r#"{{"type":"fire","rule":"r","subject":"{long}"}}"#
        ))
        .is_err());
        assert!(fire(r#"{"type":"fire","rule":"r","payload":"ok"}"#).is_ok());
    }

    #[test]
    fn free_text_cannot_forge_log_lines() {
        assert_eq!(clean("bad\nERROR forged\x1b[31m"), "bad ERROR forged [31m");
    }

    #[test]
    fn lines_to_a_provider_are_single_json_lines() {
        let params = serde_json::json!({"every": "1s\n"});
        let line = ToProvider::Add {
            rule: "r",
            params: &params,
        }
        .line();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(
            String::from_utf8(line).expect("utf8"),
            "{\"type\":\"add\",\"rule\":\"r\",\"params\":{\"every\":\"1s\\n\"}}\n"
        );
        assert_eq!(ToProvider::Shutdown.line(), b"{\"type\":\"shutdown\"}\n");
    }
}
