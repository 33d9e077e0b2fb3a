//! What a command reads on stdin (`stdin`): the event's payload, its paths one per line
//! (`paths`) or NUL-terminated (`paths0`), or one JSON object per path (`json`). A single event
//! is read as a batch of one, so every mode works with and without `batch`.
//!
//! JSON paths are bytes-safe and every JSON parser reads them: `path` is the name as text, and a
//! name that is not UTF-8 also comes as `path_base64`, its exact bytes (as providers send
//! `payload_base64`).

use std::borrow::Cow;
use std::os::unix::ffi::OsStrExt;
use std::time::UNIX_EPOCH;

use base64::Engine;
use serde::Serialize;

use crate::config::Stdin;
use crate::event::{BatchEntry, Event};

/// The bytes the command gets on stdin; empty means `/dev/null`.
pub fn input(mode: Stdin, event: &Event) -> Cow<'_, [u8]> {
    if mode == Stdin::Payload {
        return Cow::Borrowed(&event.payload);
    }
    let single;
    let entries: &[BatchEntry] = match &event.batch {
        Some(batch) => &batch.entries,
        None => {
            single = [BatchEntry {
                path: event.subject.clone(),
                mask: event.mask,
                pid: event.pid,
                time: event.time,
            }];
            &single
        }
    };
    let mut out = Vec::with_capacity(entries.iter().map(BatchEntry::bytes).sum());
    for entry in entries {
        match mode {
            Stdin::Paths | Stdin::Paths0 => {
                out.extend_from_slice(entry.path.as_os_str().as_bytes());
                out.push(if mode == Stdin::Paths { b'\n' } else { 0 });
            }
            Stdin::Json => json_line(entry, &mut out),
            Stdin::None | Stdin::Payload => return Cow::Borrowed(&[]),
        }
    }
    Cow::Owned(out)
}

/// One path as the `json` mode writes it.
#[derive(Serialize)]
struct JsonEntry<'a> {
    /// The path as text; when it is not UTF-8, with U+FFFD for the bytes that are not...
    path: Cow<'a, str>,
    /// ...and then its exact bytes in base64 as well.
    #[serde(skip_serializing_if = "Option::is_none")]
    path_base64: Option<String>,
    events: Vec<&'static str>,
    mask: u64,
    pid: Option<i32>,
    /// Seconds since the Unix epoch.
    time: f64,
}

/// One JSON object and a newline.
fn json_line(entry: &BatchEntry, out: &mut Vec<u8>) {
    let bytes = entry.path.as_os_str().as_bytes();
    let path = String::from_utf8_lossy(bytes);
    let path_base64 = matches!(path, Cow::Owned(_))
        .then(|| base64::engine::general_purpose::STANDARD.encode(bytes));
    let object = JsonEntry {
        path,
        path_base64,
        events: entry.mask.names(),
        mask: entry.mask.bits(),
        pid: entry.pid,
        time: entry
            .time
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64(),
    };
    // Writing into a Vec cannot fail, and every field serializes.
    let _ = serde_json::to_writer(&mut *out, &object);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::event::Batch;
    use triggerd_watch::EventMask;

    fn event(path: &[u8]) -> Event {
        Event {
            time: UNIX_EPOCH + Duration::new(7, 5),
            payload: b"payload".to_vec(),
            ..Event::for_test(OsStr::from_bytes(path), EventMask::CLOSE_WRITE)
        }
    }

    #[test]
    fn a_single_event_is_a_batch_of_one() {
        let e = event(b"/in/a\nb");
        assert_eq!(&*input(Stdin::Payload, &e), b"payload");
        assert_eq!(&*input(Stdin::Paths, &e), b"/in/a\nb\n");
        assert_eq!(&*input(Stdin::Paths0, &e), b"/in/a\nb\0");
        assert!(input(Stdin::None, &e).is_empty());
        assert_eq!(
            String::from_utf8(input(Stdin::Json, &e).into_owned()).unwrap(),
            "{\"path\":\"/in/a\\nb\",\"events\":[\"close_write\"],\"mask\":8,\"pid\":42,\"time\":7.000000005}\n"
        );
    }

    #[test]
    fn every_path_of_a_batch_is_listed_and_json_keeps_any_bytes() {
        let mut e = event(b"/in");
        let entry = |path: &[u8], pid| BatchEntry {
            path: OsStr::from_bytes(path).into(),
            mask: EventMask::CLOSE_WRITE.union(EventMask::CREATE),
            pid,
            time: SystemTime::UNIX_EPOCH,
        };
        e.batch = Some(Arc::new(Batch {
            entries: vec![
                entry(b"/in/\"q\" \\", None),
                entry(b"/in/\xff\xe9t\xc3\xa9", Some(1)),
            ],
            cut: false,
        }));
        assert_eq!(
            &*input(Stdin::Paths0, &e),
            b"/in/\"q\" \\\0/in/\xff\xe9t\xc3\xa9\0"
        );
        let json = String::from_utf8(input(Stdin::Json, &e).into_owned()).unwrap();
        let lines: Vec<serde_json::Value> = json
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["path"], "/in/\"q\" \\");
        assert_eq!(lines[0]["pid"], serde_json::Value::Null);
        assert_eq!(
            lines[0]["events"],
            serde_json::json!(["close_write", "create"])
        );
        assert_eq!(lines[0].get("path_base64"), None);
        assert_eq!(lines[1]["path"], "/in/\u{fffd}\u{fffd}té");
        let exact = base64::engine::general_purpose::STANDARD
            .decode(lines[1]["path_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(exact, b"/in/\xff\xe9t\xc3\xa9");
    }
}
