//! facron-style tokens, substituted inside each argument (never joined into a shell line):
//! `$$` full path, `$@` directory, `$#` base name, `$%` event names, `$&` numeric mask,
//! `$*` pid of the process that caused the event, `${name}` a field the source attached (a
//! provider's). Other `$` sequences, and `${name}` of a field the event lacks, are left as written.
//! Arguments are bytes, so file names that are not UTF-8 pass through unchanged.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use crate::event::Event;

/// Returns `arg` with every token replaced by the event's value.
pub fn substitute(arg: &OsStr, event: &Event) -> OsString {
    let bytes = arg.as_bytes();
    if !bytes.contains(&b'$') {
        return arg.to_os_string();
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
    use crate::event::SourceKind;
    use std::time::SystemTime;
    use triggerd_watch::EventMask;

    fn event(path: &[u8]) -> Event {
        Event {
            id: 1,
            source: SourceKind::Fanotify,
            subject: OsStr::from_bytes(path).into(),
            mask: EventMask::CLOSE_WRITE,
            pid: Some(42),
            time: SystemTime::now(),
            payload: Vec::new(),
            reply: None,
            fields: Vec::new(),
            batch: None,
        }
    }

    #[test]
    fn tokens_are_replaced_inside_one_argument() {
        let e = event(b"/srv/in/a b\n'\"$x\xff");
        let got = substitute(OsStr::new("--file=$$"), &e);
        assert_eq!(got.as_bytes(), b"--file=/srv/in/a b\n'\"$x\xff");
        assert_eq!(substitute(OsStr::new("$@"), &e).as_bytes(), b"/srv/in");
        assert_eq!(
            substitute(OsStr::new("$#"), &e).as_bytes(),
            b"a b\n'\"$x\xff"
        );
        assert_eq!(
            substitute(OsStr::new("$*:$%"), &e),
            OsStr::new("42:close_write")
        );
        assert_eq!(substitute(OsStr::new("$&"), &e), OsStr::new("8"));
    }

    #[test]
    fn other_dollars_are_left_alone() {
        let e = event(b"/a");
        assert_eq!(
            substitute(OsStr::new("$HOME $1 $"), &e),
            OsStr::new("$HOME $1 $")
        );
    }

    #[test]
    fn fields_are_replaced_by_name_and_unknown_ones_left_alone() {
        let mut e = event(b"/a");
        e.fields = vec![("etag".into(), "\"x y\"".into()), ("n".into(), "3".into())];
        assert_eq!(
            substitute(OsStr::new("--etag=${etag} ${n}${n} ${missing} ${"), &e),
            OsStr::new("--etag=\"x y\" 33 ${missing} ${")
        );
    }
}
