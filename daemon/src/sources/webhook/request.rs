//! One webhook request: the head read within `header_timeout` (16 KiB at most), the route,
//! the body read within its rule's `body_timeout` (`max_body` at most), the signature check
//! (`X-Hub-Signature-256: sha256=HEX`, HMAC-SHA256 of the body, compared in constant time),
//! the hand-off, and the one answer the connection gets before it is closed.

use std::path::PathBuf;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use triggerd_watch::EventMask;

use super::Listener;
use crate::config::Secret;
use crate::dispatch::Delivery;

const MAX_HEAD: usize = 16 * 1024;
const SIGNATURE: &str = "x-hub-signature-256";
/// Sent, without waiting, to a peer over its connection limit.
pub(super) const TOO_MANY: &[u8] =
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// How a request ended, and the rule it was for once that was known.
pub(super) struct Outcome {
    pub status: u16,
    pub reason: &'static str,
    pub rule: Option<String>,
}

fn answer(status: u16, reason: &'static str) -> Outcome {
    Outcome {
        status,
        reason,
        rule: None,
    }
}

/// Reads one request, delivers it, answers, closes.
pub(super) async fn serve(
    stream: TcpStream,
    listener: &Listener,
    header_timeout: Duration,
) -> Outcome {
    let mut reader = BufReader::new(stream);
    let outcome = read_and_deliver(&mut reader, listener, header_timeout).await;
    let response = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        outcome.status, outcome.reason
    );
    // A peer that does not read its answer cannot hold the connection past this.
    let write = async {
        let _ = reader.get_mut().write_all(response.as_bytes()).await;
        let _ = reader.get_mut().shutdown().await;
    };
    let _ = tokio::time::timeout(header_timeout, write).await;
    outcome
}

async fn read_and_deliver(
    reader: &mut BufReader<TcpStream>,
    listener: &Listener,
    header_timeout: Duration,
) -> Outcome {
    let head = match tokio::time::timeout(header_timeout, read_head(reader)).await {
        Err(_) => return answer(408, "Request Timeout"),
        Ok(Err(outcome)) => return outcome,
        Ok(Ok(head)) => head,
    };
    let Ok(head) = std::str::from_utf8(&head) else {
        return answer(400, "Bad Request");
    };
    let mut lines = head.lines();
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (
        request_line.next().unwrap_or_default(),
        request_line.next().unwrap_or_default(),
    );
    let path = target.split('?').next().unwrap_or_default();
    let Some(route) = listener.route(path) else {
        return answer(404, "Not Found");
    };
    let mut outcome = body_and_deliver(reader, listener, &route, method, path, lines).await;
    outcome.rule = Some(route.rule);
    outcome
}

async fn read_head(reader: &mut BufReader<TcpStream>) -> Result<Vec<u8>, Outcome> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        match (&mut *reader)
            .take((MAX_HEAD - before) as u64)
            .read_until(b'\n', &mut head)
            .await
        {
            Ok(0) => return Err(answer(400, "Bad Request")),
            Ok(_) if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") => return Ok(head),
            Ok(_) if head.len() >= MAX_HEAD => {
                return Err(answer(431, "Request Header Fields Too Large"))
            }
            Ok(_) => {}
            Err(_) => return Err(answer(400, "Bad Request")),
        }
    }
}

async fn body_and_deliver<'a>(
    reader: &mut BufReader<TcpStream>,
    listener: &Listener,
    route: &super::Route,
    method: &str,
    path: &str,
    lines: impl Iterator<Item = &'a str>,
) -> Outcome {
    if method != "POST" {
        return answer(405, "Method Not Allowed");
    }
    let mut length = None;
    let mut expects_continue = false;
    let mut signature = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return answer(411, "Length Required");
        } else if name.eq_ignore_ascii_case("expect") {
            expects_continue = value.trim().eq_ignore_ascii_case("100-continue");
        } else if name.eq_ignore_ascii_case(SIGNATURE) {
            signature = Some(value.trim().to_string());
        }
    }
    let Some(length) = length else {
        return answer(411, "Length Required");
    };
    if length > route.max_body {
        return answer(413, "Payload Too Large");
    }
    // Refused before the body is read: an unsigned caller costs no body bytes.
    if route.secret.is_some() && signature.is_none() {
        return answer(401, "Unauthorized");
    }
    let read_body = async {
        // curl asks before sending a body over 1 MiB, and would otherwise wait a second.
        if expects_continue {
            reader
                .get_mut()
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    let body = match tokio::time::timeout(route.body_timeout, read_body).await {
        Err(_) => return answer(408, "Request Timeout"),
        Ok(Err(_)) => return answer(400, "Bad Request"),
        Ok(Ok(body)) => body,
    };
    if let Some(secret) = &route.secret {
        if !signed(secret, &body, signature.as_deref().unwrap_or_default()) {
            return answer(401, "Unauthorized");
        }
    }
    let peer = reader
        .get_ref()
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::debug!(rule = %route.rule, %peer, bytes = length, "webhook");
    let emitter = &listener.emitter;
    let event = emitter.event(PathBuf::from(path), EventMask::EMPTY, None, body);
    match emitter.fire(&route.rule, event).await {
        Delivery::Taken | Delivery::Full => answer(202, "Accepted"),
        Delivery::NoRule => answer(404, "Not Found"),
        // Not taken: the caller may send it again once the daemon is back.
        Delivery::Stopped => answer(503, "Service Unavailable"),
    }
}

/// Whether `header` is `sha256=HEX` of the body's HMAC-SHA256 under `secret`.
fn signed(secret: &Secret, body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Some(expected) = decode_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&secret.0) else {
        return false;
    };
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&expected).is_ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented example: secret "It's a Secret to Everybody", payload
    /// "Hello, World!".
    #[test]
    fn githubs_example_signature_verifies() {
        let secret = Secret(b"It's a Secret to Everybody".as_slice().into());
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signed(&secret, b"Hello, World!", good));
        assert!(!signed(&secret, b"Hello, World?", good));
        assert!(!signed(
            &secret,
            b"Hello, World!",
            &good.replace("sha256=", "sha1=")
        ));
        assert!(!signed(&secret, b"Hello, World!", "sha256=zz"));
    }
}
