//! triggerd's extensions to Majordomo, carried so that a plain MDP peer keeps working.
//!
//! * A triggerd **client** opens the request body with one [`RequestHeader`] frame (magic
//!   `\xffTRQ1`): a 128-bit request id (used by workers and clients to drop duplicates), a
//!   timeout in milliseconds (0 = the service's) and the plugin name. The broker strips it
//!   before a plain worker sees the body and passes it to triggerd workers. Replies to such a
//!   client open with a [`ReplyHeader`] frame (magic `\xffTRP1`: request id + exit status), so a
//!   pipelining client can match replies to requests. A plain client never sends the magic,
//!   so it never sees a header.
//! * A triggerd **worker** announces itself with a [`WorkerHello`] frame after the service name
//!   in READY (magic `\xffTRW1`: capacity = requests it may hold at once, and its heartbeat
//!   interval). Plain workers send no hello and get capacity 1 and no headers. A triggerd
//!   worker's PARTIAL/FINAL bodies may open with a [`ReplyHeader`] carrying the exit status.
//! * Identity travels out of band: the ZAP handler sets the ZMQ user id (`worker/NAME` or
//!   `client/NAME`), so no frame is touched by authentication.
//!
//! All integers are big-endian. Decoding is bounds-checked and returns `None` on anything
//! that is not a well-formed header, which then is treated as ordinary body.

/// Magic prefix of a [`RequestHeader`] frame.
pub const REQUEST_MAGIC: &[u8; 5] = b"\xffTRQ1";
/// Magic prefix of a [`ReplyHeader`] frame.
pub const REPLY_MAGIC: &[u8; 5] = b"\xffTRP1";
/// Magic prefix of a [`WorkerHello`] frame.
pub const HELLO_MAGIC: &[u8; 5] = b"\xffTRW1";

/// Longest plugin name accepted in a header.
pub const MAX_PLUGIN_NAME: usize = 255;

/// Longest chain of requests a write may start (the loop guard): a request carries how many
/// requests led to it (`hops`), a worker gives its plugin `TRIGGERD_HOPS` = hops + 1, and a
/// write by a process whose environment says `TRIGGERD_HOPS` >= this is refused.
pub const MAX_HOPS: u8 = 8;

/// The plugin field with the hop count after a NUL (plugin names never hold one), so the
/// count travels through the spool and the request header unchanged; 0 adds nothing.
pub fn with_hops(plugin: &str, hops: u8) -> String {
    match hops {
        0 => plugin.to_string(),
        n => format!("{plugin}\0{n}"),
    }
}

/// Splits a plugin field written by [`with_hops`]; a missing or bad count is 0.
pub fn split_hops(field: &str) -> (&str, u8) {
    match field.split_once('\0') {
        Some((plugin, hops)) => (plugin, hops.parse().unwrap_or(0)),
        None => (field, 0),
    }
}

/// Longest service name the broker accepts (in requests and READY), in bytes.
pub const MAX_SERVICE_NAME: usize = 255;
/// Exit status the broker reports for a request it refuses as malformed (`EX_DATAERR`), e.g.
/// a service name longer than [`MAX_SERVICE_NAME`].
pub const STATUS_BAD_REQUEST: i32 = 65;

/// Exit status the broker reports when a request timed out (as `timeout(1)` does); a plugin
/// killed at its deadline reports the same.
pub const STATUS_TIMEOUT: i32 = triggerd_spawn::TIMED_OUT_STATUS;
/// Exit status the broker reports when no worker could take the request.
pub const STATUS_UNAVAILABLE: i32 = 69;
/// Exit status the broker reports when it refuses a request for now (`EX_TEMPFAIL`): its
/// connection's or the broker's queued requests are at their byte bound. Try again later.
pub const STATUS_BUSY: i32 = 75;
/// Exit status the broker reports for a request to a service the client's team may not call
/// (`EX_NOPERM`): another team's service, neither shared with the client's team nor public.
/// The FINAL's text is `service not visible to team TEAM`; `mmi.service` answers 404 for it.
pub const STATUS_FORBIDDEN: i32 = 77;

/// The triggerd header a client puts first in a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    /// Unique per logical request; retries and re-dispatches keep it.
    pub id: u128,
    /// Deadline for the whole request in milliseconds; 0 means the service's timeout.
    pub timeout_ms: u32,
    /// Plugin the worker should use; empty means the worker's default.
    pub plugin: String,
}

/// The triggerd header that opens replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyHeader {
    /// Id of the request this answers.
    pub id: u128,
    /// Exit status (meaningful on FINAL; 0 on PARTIAL).
    pub status: i32,
}

/// A triggerd worker's announcement in READY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerHello {
    /// How many requests the worker may hold at once (at least 1).
    pub capacity: u32,
    /// The worker's heartbeat interval in milliseconds.
    pub heartbeat_ms: u32,
}

fn after_magic<'a>(frame: &'a [u8], magic: &[u8; 5], len: usize) -> Option<&'a [u8]> {
    let rest = frame.strip_prefix(magic.as_slice())?;
    (rest.len() >= len).then_some(rest)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u128_at(bytes: &[u8], at: usize) -> Option<u128> {
    Some(u128::from_be_bytes(
        bytes.get(at..at + 16)?.try_into().ok()?,
    ))
}

impl RequestHeader {
    /// Encodes into one frame.
    pub fn encode(&self) -> Vec<u8> {
        let plugin = &self.plugin.as_bytes()[..self.plugin.len().min(MAX_PLUGIN_NAME)];
        let mut out = Vec::with_capacity(25 + plugin.len());
        out.extend_from_slice(REQUEST_MAGIC);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.timeout_ms.to_be_bytes());
        out.extend_from_slice(plugin);
        out
    }

    /// Decodes a frame, `None` if it is not a request header.
    pub fn decode(frame: &[u8]) -> Option<RequestHeader> {
        let rest = after_magic(frame, REQUEST_MAGIC, 20)?;
        let plugin = &rest[20..];
        if plugin.len() > MAX_PLUGIN_NAME {
            return None;
        }
        Some(RequestHeader {
            id: u128_at(rest, 0)?,
            timeout_ms: u32_at(rest, 16)?,
            plugin: String::from_utf8(plugin.to_vec()).ok()?,
        })
    }
}

impl ReplyHeader {
    /// Encodes into one frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(25);
        out.extend_from_slice(REPLY_MAGIC);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.status.to_be_bytes());
        out
    }

    /// Decodes a frame, `None` if it is not a reply header.
    pub fn decode(frame: &[u8]) -> Option<ReplyHeader> {
        let rest = after_magic(frame, REPLY_MAGIC, 20)?;
        if rest.len() != 20 {
            return None;
        }
        Some(ReplyHeader {
            id: u128_at(rest, 0)?,
            status: u32_at(rest, 16)? as i32,
        })
    }
}

impl WorkerHello {
    /// Encodes into one frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13);
        out.extend_from_slice(HELLO_MAGIC);
        out.extend_from_slice(&self.capacity.to_be_bytes());
        out.extend_from_slice(&self.heartbeat_ms.to_be_bytes());
        out
    }

    /// Decodes a frame, `None` if it is not a hello; capacity is clamped to at least 1.
    pub fn decode(frame: &[u8]) -> Option<WorkerHello> {
        let rest = after_magic(frame, HELLO_MAGIC, 8)?;
        if rest.len() != 8 {
            return None;
        }
        Some(WorkerHello {
            capacity: u32_at(rest, 0)?.max(1),
            heartbeat_ms: u32_at(rest, 4)?,
        })
    }
}

/// Splits a body into its optional leading request header and the rest.
pub fn split_request(body: &[Vec<u8>]) -> (Option<RequestHeader>, &[Vec<u8>]) {
    match body.first().and_then(|f| RequestHeader::decode(f)) {
        Some(h) => (Some(h), &body[1..]),
        None => (None, body),
    }
}

/// Splits a body into its optional leading reply header and the rest.
pub fn split_reply(body: &[Vec<u8>]) -> (Option<ReplyHeader>, &[Vec<u8>]) {
    match body.first().and_then(|f| ReplyHeader::decode(f)) {
        Some(h) => (Some(h), &body[1..]),
        None => (None, body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let r = RequestHeader {
            id: u128::MAX - 7,
            timeout_ms: 1500,
            plugin: "command".into(),
        };
        assert_eq!(RequestHeader::decode(&r.encode()), Some(r));
        let p = ReplyHeader { id: 42, status: -9 };
        assert_eq!(ReplyHeader::decode(&p.encode()), Some(p));
        let h = WorkerHello {
            capacity: 64,
            heartbeat_ms: 250,
        };
        assert_eq!(WorkerHello::decode(&h.encode()), Some(h));
    }

    #[test]
    fn malformed_headers_are_plain_body() {
        assert_eq!(RequestHeader::decode(b"\xffTRQ1short"), None);
        assert_eq!(RequestHeader::decode(b"hello world"), None);
        let mut bad_utf8 = RequestHeader {
            id: 1,
            timeout_ms: 0,
            plugin: String::new(),
        }
        .encode();
        bad_utf8.push(0xff);
        assert_eq!(RequestHeader::decode(&bad_utf8), None);
        let mut long = ReplyHeader { id: 1, status: 0 }.encode();
        long.push(0);
        assert_eq!(ReplyHeader::decode(&long), None);
        assert_eq!(
            WorkerHello::decode(b"\xffTRW1\0\0\0\0\0\0\0\0").map(|h| h.capacity),
            Some(1)
        );
        let body = vec![b"payload".to_vec()];
        assert_eq!(split_request(&body).0, None);
        assert_eq!(split_reply(&body).1.len(), 1);
    }
}
