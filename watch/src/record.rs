//! The parser of what `read(2)` returns on a fanotify group: event metadata records walked by
//! their `event_len` (never a fixed size), each followed by info records (FID, DFID, DFID_NAME,
//! ...) walked by their own `len`. Pure and safe: every length is checked against the buffer,
//! so any byte string yields events, per-record errors, or a final error, never a panic.

/// Size of `struct fanotify_event_metadata` (version 3).
pub(crate) const METADATA_LEN: usize = 24;
/// Largest file handle the kernel hands out (`MAX_HANDLE_SZ`).
pub(crate) const MAX_HANDLE_LEN: usize = 128;
const INFO_HEADER_LEN: usize = 4;
const FSID_LEN: usize = 8;
const HANDLE_HEADER_LEN: usize = 8;

/// A file identifier from an info record: the filesystem id and the file handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId<'a> {
    /// `__kernel_fsid_t` as two native-endian `i32` words, low word first.
    pub fsid: u64,
    /// The filesystem's `handle_type` for `f_handle`, as `open_by_handle_at` needs it.
    pub handle_type: i32,
    /// The opaque `f_handle` bytes (at most `MAX_HANDLE_SZ`, 128).
    pub handle: &'a [u8],
}

/// One event as read: metadata plus what its info records carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedEvent<'a> {
    /// The raw `FAN_*` bits of the record, unknown bits included.
    pub mask: u64,
    /// The event fd (`FAN_NOFD` = -1 in FID groups and for overflow).
    pub fd: i32,
    /// The process (thread group) that caused the event; 0 for an overflow.
    pub pid: i32,
    /// The object itself (`FAN_EVENT_INFO_TYPE_FID`).
    pub object: Option<FileId<'a>>,
    /// The directory (`DFID_NAME` or `DFID`).
    pub dir: Option<FileId<'a>>,
    /// The entry name inside `dir` (`DFID_NAME`): no NUL, no '/', never empty or "..".
    pub name: Option<&'a [u8]>,
    /// Set when an info record was malformed; the other info fields may then be partial.
    pub info_error: Option<ParseError>,
}

impl<'a> ParsedEvent<'a> {
    /// The object the event is about: the FID record, else the directory reported with the
    /// name "." (events on a directory itself carry only that).
    pub fn subject(&self) -> Option<&FileId<'a>> {
        match (&self.object, &self.dir, self.name) {
            (Some(object), _, _) => Some(object),
            (None, Some(dir), None | Some(b".")) => Some(dir),
            _ => None,
        }
    }

    /// The directory holding the subject, when the event names the entry.
    pub fn parent(&self) -> Option<&FileId<'a>> {
        match (&self.dir, self.name) {
            (Some(dir), Some(name)) if name != b"." => Some(dir),
            _ => None,
        }
    }
}

/// Why (part of) a buffer could not be parsed; `offset` is from the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer bytes are left than a metadata record needs, or than its `event_len` says.
    #[error("record at offset {offset} is truncated ({remaining} bytes left)")]
    Truncated {
        /// Where the record starts, in bytes.
        offset: usize,
        /// Bytes from `offset` to the end of the buffer.
        remaining: usize,
    },
    #[error("record at offset {offset} has bad lengths (event_len {event_len}, metadata_len {metadata_len})")]
    /// `metadata_len` is shorter than the version-3 metadata, or `event_len` shorter than
    /// `metadata_len`: the next record cannot be located.
    BadLength {
        /// Where the record starts, in bytes.
        offset: usize,
        /// The record's whole length as it claims, info records included.
        event_len: u32,
        /// The metadata part's length as it claims.
        metadata_len: u16,
    },
    #[error("record at offset {offset} has metadata version {version}, expected {expected}")]
    /// The kernel speaks another metadata layout than this parser.
    BadVersion {
        /// Where the record starts, in bytes.
        offset: usize,
        /// The record's `vers` byte.
        version: u8,
        /// `FANOTIFY_METADATA_VERSION`, the only layout understood.
        expected: u8,
    },
    /// An info record after sound metadata is malformed (reported in
    /// [`ParsedEvent::info_error`]; the event itself is still yielded).
    #[error("info record at offset {offset} is malformed: {reason}")]
    BadInfo {
        /// Where the info record starts, in bytes from the start of the buffer.
        offset: usize,
        /// What is wrong with it, e.g. "length beyond the event".
        reason: &'static str,
    },
}

/// Walks `buf` (the bytes returned by one read) record by record.
///
/// Yields `Ok` for every record whose metadata is sound (info-record problems are reported in
/// [`ParsedEvent::info_error`], so the caller still sees the record's fd and can close it);
/// yields one `Err` and stops when the metadata itself cannot be trusted, since the position of
/// any following record is then unknown.
pub fn parse_events_buffer(buf: &[u8]) -> EventRecords<'_> {
    EventRecords { buf, pos: 0 }
}

/// Iterator returned by [`parse_events_buffer`].
#[derive(Debug, Clone)]
pub struct EventRecords<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for EventRecords<'a> {
    type Item = Result<ParsedEvent<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        let offset = self.pos;
        let rest = self.buf.get(offset..)?;
        if rest.is_empty() {
            return None;
        }
        match parse_metadata(rest, offset) {
            Ok((event, len)) => {
                self.pos = offset + len;
                Some(Ok(event))
            }
            Err(e) => {
                self.pos = self.buf.len();
                Some(Err(e))
            }
        }
    }
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn i32_at(buf: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

/// Parses the record at the start of `rest`; returns it and its `event_len`.
fn parse_metadata(rest: &[u8], offset: usize) -> Result<(ParsedEvent<'_>, usize), ParseError> {
    let truncated = ParseError::Truncated {
        offset,
        remaining: rest.len(),
    };
    if rest.len() < METADATA_LEN {
        return Err(truncated);
    }
    let event_len = u32_at(rest, 0).ok_or(truncated)?;
    let version = rest[4];
    let metadata_len = u16_at(rest, 6).ok_or(truncated)?;
    if version != libc::FANOTIFY_METADATA_VERSION {
        return Err(ParseError::BadVersion {
            offset,
            version,
            expected: libc::FANOTIFY_METADATA_VERSION,
        });
    }
    let len = event_len as usize;
    let meta = metadata_len as usize;
    if meta < METADATA_LEN || len < meta {
        return Err(ParseError::BadLength {
            offset,
            event_len,
            metadata_len,
        });
    }
    let record = rest.get(..len).ok_or(truncated)?;
    let mut event = ParsedEvent {
        mask: u64_at(record, 8).ok_or(truncated)?,
        fd: i32_at(record, 16).ok_or(truncated)?,
        pid: i32_at(record, 20).ok_or(truncated)?,
        object: None,
        dir: None,
        name: None,
        info_error: None,
    };
    if let Err(e) = parse_infos(record, meta, offset, &mut event) {
        event.info_error = Some(e);
    }
    Ok((event, len))
}

fn parse_infos<'a>(
    record: &'a [u8],
    mut at: usize,
    base: usize,
    event: &mut ParsedEvent<'a>,
) -> Result<(), ParseError> {
    while at < record.len() {
        let bad = |reason| ParseError::BadInfo {
            offset: base + at,
            reason,
        };
        let info_type = *record.get(at).ok_or(bad("truncated header"))?;
        let len = u16_at(record, at + 2).ok_or(bad("truncated header"))? as usize;
        if len < INFO_HEADER_LEN {
            return Err(bad("length shorter than its header"));
        }
        let info = record
            .get(at..at + len)
            .ok_or(bad("length beyond the event"))?;
        match info_type {
            libc::FAN_EVENT_INFO_TYPE_FID => {
                let (id, _) = parse_fid(info).map_err(bad)?;
                event.object = Some(id);
            }
            libc::FAN_EVENT_INFO_TYPE_DFID => {
                let (id, _) = parse_fid(info).map_err(bad)?;
                event.dir = Some(id);
            }
            libc::FAN_EVENT_INFO_TYPE_DFID_NAME => {
                let (id, tail) = parse_fid(info).map_err(bad)?;
                event.dir = Some(id);
                event.name = Some(parse_name(tail).map_err(bad)?);
            }
            // PIDFD, ERROR, OLD/NEW_DFID_NAME (FAN_RENAME, not requested) and types of future
            // kernels: skipped by their length.
            _ => {}
        }
        at += len;
    }
    Ok(())
}

/// Parses fsid + `struct file_handle` from an info record; returns it and the bytes after it.
fn parse_fid(info: &[u8]) -> Result<(FileId<'_>, &[u8]), &'static str> {
    let body = &info[INFO_HEADER_LEN.min(info.len())..];
    let fsid_low = u32_at(body, 0).ok_or("truncated fsid")?;
    let fsid_high = u32_at(body, 4).ok_or("truncated fsid")?;
    let handle_len = u32_at(body, FSID_LEN).ok_or("truncated file handle")? as usize;
    let handle_type = i32_at(body, FSID_LEN + 4).ok_or("truncated file handle")?;
    if handle_len > MAX_HANDLE_LEN {
        return Err("file handle longer than MAX_HANDLE_SZ");
    }
    let start = FSID_LEN + HANDLE_HEADER_LEN;
    let handle = body
        .get(start..start + handle_len)
        .ok_or("file handle beyond the record")?;
    let tail = &body[start + handle_len..];
    let fsid = u64::from(fsid_low) | (u64::from(fsid_high) << 32);
    Ok((
        FileId {
            fsid,
            handle_type,
            handle,
        },
        tail,
    ))
}

/// The NUL-terminated entry name after a DFID_NAME handle (padding follows the NUL).
fn parse_name(tail: &[u8]) -> Result<&[u8], &'static str> {
    let end = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or("name without NUL")?;
    let name = &tail[..end];
    if name.is_empty() || name == b".." || name.contains(&b'/') {
        return Err("name is empty, \"..\" or holds '/'");
    }
    Ok(name)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds one info record of `info_type` with a handle and an optional name.
    pub(crate) fn info(info_type: u8, fsid: u64, handle: &[u8], name: Option<&[u8]>) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&(fsid as u32).to_ne_bytes());
        body.extend_from_slice(&((fsid >> 32) as u32).to_ne_bytes());
        body.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        body.extend_from_slice(&1i32.to_ne_bytes());
        body.extend_from_slice(handle);
        if let Some(name) = name {
            body.extend_from_slice(name);
            body.push(0);
        }
        while (body.len() + INFO_HEADER_LEN) % 4 != 0 {
            body.push(0);
        }
        let mut out = vec![info_type, 0];
        out.extend_from_slice(&((body.len() + INFO_HEADER_LEN) as u16).to_ne_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Builds one event record: metadata followed by `infos`.
    pub(crate) fn event(mask: u64, fd: i32, pid: i32, infos: &[Vec<u8>]) -> Vec<u8> {
        let info_len: usize = infos.iter().map(Vec::len).sum();
        let mut out = Vec::new();
        out.extend_from_slice(&((METADATA_LEN + info_len) as u32).to_ne_bytes());
        out.push(libc::FANOTIFY_METADATA_VERSION);
        out.push(0);
        out.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        out.extend_from_slice(&mask.to_ne_bytes());
        out.extend_from_slice(&fd.to_ne_bytes());
        out.extend_from_slice(&pid.to_ne_bytes());
        for i in infos {
            out.extend_from_slice(i);
        }
        out
    }

    #[test]
    fn walks_records_of_different_lengths() {
        let dfid = info(
            libc::FAN_EVENT_INFO_TYPE_DFID_NAME,
            0x1_0000_0002,
            b"dirhandl",
            Some(b"a b"),
        );
        let fid = info(
            libc::FAN_EVENT_INFO_TYPE_FID,
            0x1_0000_0002,
            b"objhandle123",
            None,
        );
        let mut buf = event(libc::FAN_CLOSE_WRITE, -1, 42, &[dfid, fid]);
        buf.extend(event(libc::FAN_Q_OVERFLOW, -1, 0, &[]));
        let events: Vec<_> = parse_events_buffer(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(events.len(), 2);
        let first = events[0];
        assert_eq!(first.mask, libc::FAN_CLOSE_WRITE);
        assert_eq!(first.pid, 42);
        assert_eq!(first.name, Some(&b"a b"[..]));
        assert_eq!(first.dir.unwrap().handle, b"dirhandl");
        assert_eq!(first.dir.unwrap().fsid, 0x1_0000_0002);
        assert_eq!(first.object.unwrap().handle, b"objhandle123");
        assert_eq!(first.info_error, None);
        assert_eq!(events[1].mask, libc::FAN_Q_OVERFLOW);
        assert_eq!(events[1].object, None);
    }

    #[test]
    fn unknown_info_types_are_skipped_by_length() {
        let odd = info(77, 5, b"xxxxxxxxxxxxxxxxxxxxx", Some(b"n"));
        let fid = info(libc::FAN_EVENT_INFO_TYPE_FID, 5, b"12345678", None);
        let buf = event(libc::FAN_ATTRIB, -1, 1, &[odd, fid]);
        let ev = parse_events_buffer(&buf).next().unwrap().unwrap();
        assert_eq!(ev.object.unwrap().handle, b"12345678");
        assert_eq!(ev.info_error, None);
    }

    #[test]
    fn bad_info_keeps_the_record_and_the_walk() {
        let mut bad = info(
            libc::FAN_EVENT_INFO_TYPE_DFID_NAME,
            5,
            b"12345678",
            Some(b"x"),
        );
        bad[2] = 200; // info len points past the event
        let mut buf = event(libc::FAN_OPEN_PERM, 9, 1, &[bad]);
        buf.extend(event(libc::FAN_OPEN_PERM, 10, 1, &[]));
        let events: Vec<_> = parse_events_buffer(&buf).collect();
        assert_eq!(events.len(), 2);
        let first = events[0].unwrap();
        assert_eq!(first.fd, 9);
        assert!(matches!(first.info_error, Some(ParseError::BadInfo { .. })));
        assert_eq!(events[1].unwrap().fd, 10);
    }

    #[test]
    fn names_with_slash_or_dotdot_are_rejected() {
        for name in [&b"a/b"[..], b"..", b""] {
            let dfid = info(
                libc::FAN_EVENT_INFO_TYPE_DFID_NAME,
                5,
                b"12345678",
                Some(name),
            );
            let buf = event(libc::FAN_CREATE, -1, 1, &[dfid]);
            let ev = parse_events_buffer(&buf).next().unwrap().unwrap();
            assert!(ev.info_error.is_some(), "{name:?}");
        }
    }

    #[test]
    fn bad_metadata_ends_the_walk_with_one_error() {
        let good = event(libc::FAN_MODIFY, -1, 1, &[]);
        let mut short_len = good.clone();
        short_len[0] = 8; // event_len below metadata_len
        let mut bad_version = good.clone();
        bad_version[4] = 2;
        for buf in [short_len, bad_version, good[..20].to_vec()] {
            let results: Vec<_> = parse_events_buffer(&buf).collect();
            assert_eq!(results.len(), 1);
            assert!(results[0].is_err());
        }
        assert_eq!(parse_events_buffer(&[]).count(), 0);
    }

    /// xorshift64*: deterministic pseudo-random bytes without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    #[test]
    fn random_and_truncated_buffers_never_panic() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let dfid = info(
            libc::FAN_EVENT_INFO_TYPE_DFID_NAME,
            5,
            b"12345678",
            Some(b"name"),
        );
        let fid = info(libc::FAN_EVENT_INFO_TYPE_FID, 5, b"abcdefgh", None);
        let mut valid = event(libc::FAN_CLOSE_WRITE, -1, 1, &[dfid, fid]);
        valid.extend(event(libc::FAN_Q_OVERFLOW, -1, 0, &[]));
        let mut seen = 0usize;
        for round in 0..200_000u64 {
            let buf: Vec<u8> = match round % 3 {
                // a valid buffer cut anywhere
                0 => valid[..(rng.next() as usize) % (valid.len() + 1)].to_vec(),
                // a valid buffer with a few bytes flipped
                1 => {
                    let mut b = valid.clone();
                    for _ in 0..1 + rng.next() % 4 {
                        let at = (rng.next() as usize) % b.len();
                        b[at] = rng.next() as u8;
                    }
                    b
                }
                // pure noise with a plausible header
                _ => {
                    let len = (rng.next() % 300) as usize;
                    let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    if b.len() > 7 {
                        b[4] = libc::FANOTIFY_METADATA_VERSION;
                        b[6] = METADATA_LEN as u8;
                        b[7] = 0;
                    }
                    b
                }
            };
            for result in parse_events_buffer(&buf) {
                if let Ok(ev) = result {
                    if let Some(name) = ev.name {
                        assert!(!name.contains(&b'/') && !name.contains(&0));
                    }
                    for id in [ev.object, ev.dir].into_iter().flatten() {
                        assert!(id.handle.len() <= MAX_HANDLE_LEN);
                    }
                }
                seen += 1;
            }
        }
        assert!(seen > 100_000);
    }
}
