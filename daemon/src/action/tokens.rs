//! facron-style tokens, substituted inside each argument (never joined into a shell line):
//! `$$` full path, `$@` directory, `$#` base name, `$%` event names, `$&` numeric mask,
//! `$*` pid of the process that caused the event, `${name}` a field the source attached (a
//! provider's). Other `$` sequences, and `${name}` of a field the event lacks, are left as written.
//! Arguments are bytes, so file names that are not UTF-8 pass through unchanged.
//!
//! A pasted table keeps its own dialect ([`Tokens`]): a facron line also has facron's global
//! counter (`$+` `$-` `$=`, whole arguments only, as facron does), and an incron line has
//! incron's meanings (`$$` a literal `$`, `$@` the watched directory, `$#` the file name,
//! `$%` the `IN_*` names, `$&` the number).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::config::Tokens;
use crate::event::Event;

/// facron's one counter, shared by every facron line and kept across reloads (a `static` in
/// facron too); an unsigned 32-bit number that wraps, as C's `unsigned int` does.
static FACRON_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Returns `arg` with every token replaced by the event's value.
pub fn substitute(arg: &OsStr, event: &Event, style: &Tokens) -> OsString {
    let bytes = arg.as_bytes();
    if !bytes.contains(&b'$') {
        return arg.to_os_string();
    }
    match style {
        Tokens::Triggerd => {}
        Tokens::Facron => {
            if let Some(n) = facron_counter(bytes) {
                return n.to_string().into();
            }
        }
        Tokens::Incron { watched } => return incron(bytes, event, watched),
    }
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            if let Some((value, len)) = field_value(&bytes[i + 1..], event) {
                out.extend_from_slice(value);
                i += 1 + len;
                continue;
            }
            if let Some(value) = token_value(bytes[i + 1], event) {
                out.extend_from_slice(&value);
                i += 2;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    OsString::from_vec(out)
}

/// `{name}` at the start of `rest` naming one of the event's fields: its value and the length
/// of `{name}`.
fn field_value<'e>(rest: &[u8], event: &'e Event) -> Option<(&'e [u8], usize)> {
    let inner = rest.strip_prefix(b"{")?;
    let end = inner.iter().position(|&b| b == b'}')?;
    let name = &inner[..end];
    let (_, value) = event.fields.iter().find(|(k, _)| k.as_bytes() == name)?;
    Some((value.as_bytes(), end + 2))
}

/// facron's counter tokens, which it substitutes only for a whole argument: `$+` increments
/// and gives the new value, `$-` decrements and gives it, `$=` gives it.
fn facron_counter(arg: &[u8]) -> Option<u32> {
    let step = |f: fn(u32) -> u32| {
        let old = FACRON_COUNTER
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(f(n)))
            .unwrap_or_default();
        f(old)
    };
    match arg {
        b"$+" => Some(step(|n| n.wrapping_add(1))),
        b"$-" => Some(step(|n| n.wrapping_sub(1))),
        b"$=" => Some(FACRON_COUNTER.load(Ordering::Relaxed)),
        _ => None,
    }
}

/// incron's wildcards inside an argument (`incrontab(5)`); other `$` sequences stay.
fn incron(bytes: &[u8], event: &Event, watched: &Path) -> OsString {
    let on_watched = *event.subject == *watched;
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let mut i = 0;
    while i < bytes.len() {
        let value = match (bytes[i], bytes.get(i + 1)) {
            (b'$', Some(b'$')) => Some(b"$".to_vec()),
            (b'$', Some(b'@')) => Some(incron_dir(event, on_watched).as_bytes().to_vec()),
            (b'$', Some(b'#')) => Some(incron_name(event, on_watched).to_vec()),
            (b'$', Some(b'%')) => Some(incron_flags(event.mask).into_bytes()),
            (b'$', Some(b'&')) => Some(event.mask.bits().to_string().into_bytes()),
            _ => None,
        };
        match value {
            Some(v) => {
                out.extend_from_slice(&v);
                i += 2;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    OsString::from_vec(out)
}

/// incron's `$@`: the directory the event happened in (its watch is per directory), or the
/// watched file itself for an event on it.
fn incron_dir(event: &Event, on_watched: bool) -> &OsStr {
    match event.subject.parent() {
        Some(dir) if !on_watched => dir.as_os_str(),
        _ => event.subject.as_os_str(),
    }
}

/// incron's `$#`: the entry's name, empty for an event on the watched path itself.
fn incron_name(event: &Event, on_watched: bool) -> &[u8] {
    match event.subject.file_name() {
        Some(name) if !on_watched => name.as_bytes(),
        _ => b"",
    }
}

/// `IN_CLOSE_WRITE,IN_ISDIR`: incron's text form of a mask.
fn incron_flags(mask: triggerd_watch::EventMask) -> String {
    let names: Vec<String> = mask
        .names()
        .into_iter()
        .map(|name| match name {
            "ondir" => "IN_ISDIR".to_string(),
            other => format!("IN_{}", other.to_ascii_uppercase()),
        })
        .collect();
    names.join(",")
}

fn token_value(token: u8, event: &Event) -> Option<Vec<u8>> {
    let path: &Path = &event.subject;
    Some(match token {
        b'$' => path.as_os_str().as_bytes().to_vec(),
        b'@' => path
            .parent()
            .map_or_else(Vec::new, |p| p.as_os_str().as_bytes().to_vec()),
        b'#' => path
            .file_name()
            .map_or_else(Vec::new, |n| n.as_bytes().to_vec()),
        b'%' => event.mask.to_string().into_bytes(),
        b'&' => event.mask.bits().to_string().into_bytes(),
        b'*' => event
            .pid
            .map_or_else(Vec::new, |p| p.to_string().into_bytes()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use triggerd_watch::EventMask;

    fn event(path: &[u8]) -> Event {
        Event::for_test(OsStr::from_bytes(path), EventMask::CLOSE_WRITE)
    }

    #[test]
    fn tokens_are_replaced_inside_one_argument() {
        let e = event(b"/srv/in/a b\n'\"$x\xff");
        let got = substitute(OsStr::new("--file=$$"), &e, &Tokens::Triggerd);
        assert_eq!(got.as_bytes(), b"--file=/srv/in/a b\n'\"$x\xff");
        assert_eq!(
            substitute(OsStr::new("$@"), &e, &Tokens::Triggerd).as_bytes(),
            b"/srv/in"
        );
        assert_eq!(
            substitute(OsStr::new("$#"), &e, &Tokens::Triggerd).as_bytes(),
            b"a b\n'\"$x\xff"
        );
        assert_eq!(
            substitute(OsStr::new("$*:$%"), &e, &Tokens::Triggerd),
            OsStr::new("42:close_write")
        );
        assert_eq!(
            substitute(OsStr::new("$&"), &e, &Tokens::Triggerd),
            OsStr::new("8")
        );
    }

    #[test]
    fn facron_counters_are_whole_arguments_of_one_wrapping_counter() {
        let e = event(b"/a");
        let f = |arg: &str| substitute(OsStr::new(arg), &e, &Tokens::Facron);
        // The counter is process-wide: read where it stands, then step it.
        let start: u32 = f("$=").to_str().unwrap().parse().unwrap();
        assert_eq!(f("$+"), OsStr::new(&(start.wrapping_add(1)).to_string()));
        assert_eq!(f("$+"), OsStr::new(&(start.wrapping_add(2)).to_string()));
        assert_eq!(f("$-"), OsStr::new(&(start.wrapping_add(1)).to_string()));
        assert_eq!(f("$="), OsStr::new(&(start.wrapping_add(1)).to_string()));
        // Inside a longer argument they are not tokens (facron compares whole arguments).
        assert_eq!(f("x$+"), OsStr::new("x$+"));
        assert_eq!(f("$$"), OsStr::new("/a"));
        assert_eq!(
            substitute(OsStr::new("$+"), &e, &Tokens::Triggerd),
            OsStr::new("$+")
        );
    }

    #[test]
    fn incron_wildcards_have_incrons_meanings() {
        let watched = Tokens::Incron {
            watched: "/srv/in".into(),
        };
        let mut e = event(b"/srv/in/sub/a b");
        e.mask = EventMask::CLOSE_WRITE.union(EventMask::ONDIR);
        let i = |arg: &str, e: &Event| substitute(OsStr::new(arg), e, &watched);
        assert_eq!(i("$@/$#", &e), OsStr::new("/srv/in/sub/a b"));
        assert_eq!(i("$$1 $%", &e), OsStr::new("$1 IN_CLOSE_WRITE,IN_ISDIR"));
        assert_eq!(i("$&", &e), OsStr::new(&(0x4000_0008u64).to_string()));
        assert_eq!(i("$*", &e), OsStr::new("$*"), "not an incron wildcard");
        // An event on the watched path itself: incron gives the path and an empty name.
        let own = event(b"/srv/in");
        assert_eq!(i("[$@][$#]", &own), OsStr::new("[/srv/in][]"));
    }

    #[test]
    fn other_dollars_are_left_alone() {
        let e = event(b"/a");
        assert_eq!(
            substitute(OsStr::new("$HOME $1 $"), &e, &Tokens::Triggerd),
            OsStr::new("$HOME $1 $")
        );
    }

    #[test]
    fn fields_are_replaced_by_name_and_unknown_ones_left_alone() {
        let mut e = event(b"/a");
        e.fields = vec![("etag".into(), "\"x y\"".into()), ("n".into(), "3".into())];
        assert_eq!(
            substitute(
                OsStr::new("--etag=${etag} ${n}${n} ${missing} ${"),
                &e,
                &Tokens::Triggerd
            ),
            OsStr::new("--etag=\"x y\" 33 ${missing} ${")
        );
    }
}
