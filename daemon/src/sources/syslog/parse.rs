//! What syslog senders send, taken apart: RFC 5424 (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID
//! SD MSG`) and the BSD format of RFC 3164 as syslog(3), logger(1) and nginx write it
//! (`<PRI>Mmm dd hh:mm:ss [HOST] TAG[PID]: MSG`, the host left out by nginx's `nohostname`).
//! Parsing never fails: a datagram without a valid `<PRI>` is all message (RFC 3164 §4.3.3
//! says a relay treats it so), and every header field is optional. Field values are kept
//! only when they are printable ASCII (blanks included) of a bounded length, since they become arguments and
//! environment variables.

/// Longest header field kept (RFC 5424 bounds APP-NAME at 48, HOSTNAME at 255).
const MAX_FIELD: usize = 255;

const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];
const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// One message, its header fields by name (`facility`, `severity`, `timestamp`, `host`,
/// `tag`, `pid`, `msgid`), present when the sender wrote them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub fields: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Message {
    fn field(&mut self, name: &'static str, value: &[u8]) {
        let printable = value.iter().all(|&b| b.is_ascii_graphic() || b == b' ');
        if !value.is_empty() && value != b"-" && value.len() <= MAX_FIELD && printable {
            self.fields
                .push((name, String::from_utf8_lossy(value).into_owned()));
        }
    }
}

/// Takes one datagram apart; trailing line ends and NULs are not part of the message.
pub fn parse(datagram: &[u8]) -> Message {
    let mut end = datagram.len();
    while end > 0 && matches!(datagram[end - 1], b'\n' | b'\r' | 0) {
        end -= 1;
    }
    let datagram = &datagram[..end];
    let mut message = Message::default();
    let Some((pri, rest)) = priority(datagram) else {
        message.body = datagram.to_vec();
        return message;
    };
    message
        .fields
        .push(("facility", FACILITIES[pri / 8].into()));
    message
        .fields
        .push(("severity", SEVERITIES[pri % 8].into()));
    match rest.strip_prefix(b"1 ") {
        Some(rest) => rfc5424(rest, &mut message),
        None => rfc3164(rest, &mut message),
    }
    message
}

/// `<PRI>` at the start: 1 to 3 digits, at most 191 (facility 23, severity 7).
fn priority(datagram: &[u8]) -> Option<(usize, &[u8])> {
    let rest = datagram.strip_prefix(b"<")?;
    let close = rest.iter().take(4).position(|&b| b == b'>')?;
    let digits = &rest[..close];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let pri: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (pri <= 191).then_some((pri, &rest[close + 1..]))
}

/// The space-separated word at the start of `text`, and what follows its space.
fn word(text: &[u8]) -> (&[u8], &[u8]) {
    match text.iter().position(|&b| b == b' ') {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, &[]),
    }
}

fn rfc5424(rest: &[u8], message: &mut Message) {
    let (timestamp, rest) = word(rest);
    let (host, rest) = word(rest);
    let (app, rest) = word(rest);
    let (procid, rest) = word(rest);
    let (msgid, rest) = word(rest);
    message.field("timestamp", timestamp);
    message.field("host", host);
    message.field("tag", app);
    message.field("pid", procid);
    message.field("msgid", msgid);
    let body = skip_structured_data(rest);
    let body = body.strip_prefix(b" ").unwrap_or(body);
    // A UTF-8 message may start with a byte order mark (RFC 5424 §6.4).
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    message.body = body.to_vec();
}

/// What follows STRUCTURED-DATA: `-`, or one or more `[id k="v" ...]` elements, in which a
/// `]`, `"` or `\` inside a value is escaped with `\`.
fn skip_structured_data(text: &[u8]) -> &[u8] {
    if let Some(rest) = text.strip_prefix(b"-") {
        return rest;
    }
    let mut i = 0;
    while text.get(i) == Some(&b'[') {
        let mut quoted = false;
        i += 1;
        while let Some(&b) = text.get(i) {
            i += 1;
            match b {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                b']' if !quoted => break,
                _ => {}
            }
        }
    }
    text.get(i..).unwrap_or_default()
}

fn rfc3164(rest: &[u8], message: &mut Message) {
    let rest = match bsd_timestamp(rest) {
        Some((timestamp, rest)) => {
            message.field("timestamp", timestamp);
            rest
        }
        None => rest,
    };
    // `HOST TAG: msg` or `TAG: msg` (no host): a first word ending in `:` or `]:` is the tag.
    let (first, after_first) = word(rest);
    let (host, rest) = if is_tag(first) || after_first.is_empty() {
        (None, rest)
    } else {
        (Some(first), after_first)
    };
    let (tag_word, after_tag) = word(rest);
    if !is_tag(tag_word) {
        if let Some(host) = host {
            message.field("host", host);
        }
        message.body = rest.to_vec();
        return;
    }
    if let Some(host) = host {
        message.field("host", host);
    }
    let tag = &tag_word[..tag_word.len() - 1];
    match tag.iter().position(|&b| b == b'[') {
        Some(open) if tag.ends_with(b"]") => {
            message.field("tag", &tag[..open]);
            message.field("pid", &tag[open + 1..tag.len() - 1]);
        }
        _ => message.field("tag", tag),
    }
    message.body = after_tag.to_vec();
}

/// `TAG:` or `TAG[PID]:`, the tag alphanumeric (with `-_./` as senders write them).
fn is_tag(word: &[u8]) -> bool {
    let Some(tag) = word.strip_suffix(b":") else {
        return false;
    };
    let name = tag.split(|&b| b == b'[').next().unwrap_or_default();
    !name.is_empty()
        && name.len() <= 48
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(b))
}

/// `Mmm dd hh:mm:ss ` (a one-digit day is padded with a blank), and what follows it.
fn bsd_timestamp(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let stamp = text.get(..15)?;
    let month = std::str::from_utf8(&stamp[..3]).ok()?;
    let day_ok = (stamp[4] == b' ' || stamp[4].is_ascii_digit()) && stamp[5].is_ascii_digit();
    let clock = &stamp[7..15];
    let clock_ok = clock.iter().enumerate().all(|(i, b)| {
        if i == 2 || i == 5 {
            *b == b':'
        } else {
            b.is_ascii_digit()
        }
    });
    let shape = MONTHS.contains(&month) && stamp[3] == b' ' && day_ok && stamp[6] == b' ';
    if !(shape && clock_ok) {
        return None;
    }
    let rest = &text[15..];
    Some((stamp, rest.strip_prefix(b" ").unwrap_or(rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(m: &Message) -> Vec<(&str, &str)> {
        m.fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    #[test]
    fn nginx_without_hostname() {
        let m = parse(b"<190>Dec  3 12:00:01 nginx: 127.0.0.1 - - \"GET / HTTP/1.1\" 200\n");
        assert_eq!(
            fields(&m),
            vec![
                ("facility", "local7"),
                ("severity", "info"),
                ("timestamp", "Dec  3 12:00:01"),
                ("tag", "nginx"),
            ]
        );
        assert_eq!(m.body, b"127.0.0.1 - - \"GET / HTTP/1.1\" 200");
    }

    #[test]
    fn bsd_with_host_and_pid() {
        let m = parse(b"<13>Feb 14 09:05:00 web-01 cron[4242]: job done");
        assert_eq!(
            fields(&m),
            vec![
                ("facility", "user"),
                ("severity", "notice"),
                ("timestamp", "Feb 14 09:05:00"),
                ("host", "web-01"),
                ("tag", "cron"),
                ("pid", "4242"),
            ]
        );
        assert_eq!(m.body, b"job done");
    }

    #[test]
    fn rfc5424_with_structured_data_and_bom() {
        let m = parse(
            b"<165>1 2026-12-03T12:00:00.000Z host app 77 ID47 [ex@1 k=\"a\\]b\"][x@2 y=\"z\"] \xEF\xBB\xBFhello world",
        );
        assert_eq!(
            fields(&m),
            vec![
                ("facility", "local4"),
                ("severity", "notice"),
                ("timestamp", "2026-12-03T12:00:00.000Z"),
                ("host", "host"),
                ("tag", "app"),
                ("pid", "77"),
                ("msgid", "ID47"),
            ]
        );
        assert_eq!(m.body, b"hello world");
    }

    #[test]
    fn rfc5424_nil_values_are_left_out() {
        let m = parse(b"<14>1 - - - - - - just text");
        assert_eq!(fields(&m), vec![("facility", "user"), ("severity", "info")]);
        assert_eq!(m.body, b"just text");
    }

    #[test]
    fn no_priority_is_all_message() {
        for raw in [
            &b"plain line"[..],
            b"<999>too big",
            b"<x>letters",
            b"<>empty",
            b"<1",
        ] {
            let m = parse(raw);
            assert!(m.fields.is_empty(), "{raw:?}");
            assert_eq!(m.body, raw);
        }
    }

    #[test]
    fn hostile_headers_never_become_fields() {
        let long = format!("<14>1 - {} - - - - x", "h".repeat(300));
        let m = parse(long.as_bytes());
        assert!(m.fields.iter().all(|(k, _)| *k != "host"));
        let m = parse(b"<14>Dec  3 12:00:01 h\x01st tag: body");
        assert!(m
            .fields
            .iter()
            .all(|(_, v)| v.bytes().all(|b| b.is_ascii_graphic() || b == b' ')));
        // Binary bodies pass through untouched.
        let m = parse(b"<14>tag: \x00\xff\xfe");
        assert_eq!(m.body, b"\x00\xff\xfe");
    }

    #[test]
    fn a_message_without_a_tag_keeps_everything_after_the_timestamp() {
        let m = parse(b"<14>Dec  3 12:00:01 something without a tag");
        assert_eq!(m.body, b"without a tag");
        assert!(fields(&m).contains(&("host", "something")));
    }
}
