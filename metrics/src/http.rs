//! The HTTP side of the endpoint: an accept thread, one short-lived thread per connection (at
//! most [`MAX_CONNECTIONS`]), a request head read within [`MAX_REQUEST`] bytes and
//! [`REQUEST_TIMEOUT`], one answer, then the connection closes. Only `GET /metrics` (and `/`)
//! gets the exposition; anything else gets a 4xx. The accept thread ends when the
//! [`Endpoint`] is dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::registry::Registry;

use crate::families::{Families, Kind};
use crate::MetricsError;

/// Connections served at once; more are closed at once (counted).
pub const MAX_CONNECTIONS: usize = 4;
/// Longest request head read (request line and headers); a longer one is refused.
pub const MAX_REQUEST: usize = 8 * 1024;
/// A request head not complete by then is refused, and a reply not taken by then abandoned.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection got no exposition; the label of `PREFIX_metrics_refused_total`.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Busy,
    TooLarge,
    Timeout,
    BadRequest,
}

const REFUSALS: [Refusal; 4] = [
    Refusal::Busy,
    Refusal::TooLarge,
    Refusal::Timeout,
    Refusal::BadRequest,
];

impl Refusal {
    fn name(self) -> &'static str {
        match self {
            Refusal::Busy => "busy",
            Refusal::TooLarge => "too_large",
            Refusal::Timeout => "timeout",
            Refusal::BadRequest => "bad_request",
        }
    }
}

/// What every connection thread shares.
struct Shared {
    registry: Registry,
    counts: Arc<Counts>,
    active: AtomicUsize,
    last_log: Mutex<Option<Instant>>,
    stop: AtomicBool,
}

impl Shared {
    fn refuse(&self, why: Refusal, peer: SocketAddr) {
        let total = self.counts.refused[why as usize].fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *last = Some(Instant::now());
            tracing::warn!(%peer, refused = total, "metrics: request refused ({})", why.name());
        }
    }
}

/// The endpoint's own counters, written after the owner's collector.
#[derive(Debug)]
struct Own(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    served: AtomicU64,
    refused: [AtomicU64; 4],
}

impl Collector for Own {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        let mut f = Families::new(&mut encoder);
        f.single(
            "metrics_scrapes",
            "Scrapes answered by this endpoint.",
            Kind::Counter,
            self.0.served.load(Ordering::Relaxed),
        )?;
        let rows: Vec<(&str, u64)> = REFUSALS
            .iter()
            .map(|r| {
                (
                    r.name(),
                    self.0.refused[*r as usize].load(Ordering::Relaxed),
                )
            })
            .collect();
        f.table(
            &["reason"],
            &rows,
            |r| vec![r.0],
            &[(
                "metrics_refused",
                "Requests to this endpoint refused (busy, too large, too slow, not GET /metrics).",
                Kind::Counter,
                |r| r.1,
            )],
        )
    }
}

/// A running endpoint; dropping it stops accepting.
pub struct Endpoint {
    address: SocketAddr,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Binds `address` (`IP:PORT`; port 0 takes a free one, see [`Endpoint::address`]) and
    /// serves `collector` with metric names prefixed by `prefix`.
    pub fn start(
        address: &str,
        prefix: &str,
        collector: Box<dyn Collector>,
    ) -> Result<Endpoint, MetricsError> {
        let wanted = crate::parse_address(address)?;
        let bind_error = |source| MetricsError::Bind {
            address: address.to_string(),
            source,
        };
        let listener = TcpListener::bind(wanted).map_err(bind_error)?;
        let bound = listener.local_addr().map_err(bind_error)?;
        let counts = Arc::new(Counts::default());
        let mut registry = Registry::with_prefix(prefix);
        registry.register_collector(collector);
        registry.register_collector(Box::new(Own(Arc::clone(&counts))));
        let shared = Arc::new(Shared {
            registry,
            counts,
            active: AtomicUsize::new(0),
            last_log: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || accept_loop(&listener, &accepting))
            .map_err(|source| MetricsError::Thread {
                address: address.to_string(),
                source,
            })?;
        tracing::info!(address = %bound, "metrics endpoint listening");
        Ok(Endpoint {
            address: bound,
            shared,
        })
    }

    /// The address actually bound (the port the system chose for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wakes the accept thread so it sees the flag; failing to connect means it is gone.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_millis(100));
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(stream) = stream else {
            // Out of descriptors, typically: pause instead of spinning on the error.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        // Taken here and given back by the connection's thread: the bound holds at all times.
        if shared.active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            shared.active.fetch_sub(1, Ordering::AcqRel);
            shared.refuse(Refusal::Busy, peer);
            continue;
        }
        let conn = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("metrics-conn".into())
            .spawn(move || {
                if let Err(why) = answer(stream, &conn) {
                    conn.refuse(why, peer);
                }
                conn.active.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            shared.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Reads one request head and answers it.
fn answer(mut stream: TcpStream, shared: &Shared) -> Result<(), Refusal> {
    let head = read_head(&mut stream)?;
    let line = head.lines().next().unwrap_or_default();
    let mut words = line.split(' ');
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or("/"),
    );
    let path = target.split('?').next().unwrap_or(target);
    if method != "GET" || !matches!(path, "/metrics" | "/") {
        reply(
            &mut stream,
            "404 Not Found",
            "text/plain",
            "only GET /metrics\n",
        );
        return Err(Refusal::BadRequest);
    }
    shared.counts.served.fetch_add(1, Ordering::Relaxed);
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, &shared.registry).is_err() {
        reply(&mut stream, "500 Internal Server Error", "text/plain", "");
        return Ok(());
    }
    reply(
        &mut stream,
        "200 OK",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        &body,
    );
    Ok(())
}

/// The request head up to its blank line, within the byte and time bounds.
fn read_head(stream: &mut TcpStream) -> Result<String, Refusal> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Err(Refusal::Timeout);
        }
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Err(Refusal::BadRequest),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(Refusal::Timeout),
        };
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(end);
            return String::from_utf8(head).map_err(|_| Refusal::BadRequest);
        }
        if head.len() > MAX_REQUEST {
            return Err(Refusal::TooLarge);
        }
    }
}

fn reply(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) {
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct One;

    impl Collector for One {
        fn encode(
            &self,
            mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
        ) -> std::fmt::Result {
            Families::new(&mut encoder).single("answer", "A number.", Kind::Gauge, 42)
        }
    }

    fn ask(address: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT * 2))
            .expect("timeout");
        let _ = stream.write_all(request);
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    }

    fn scrape(address: SocketAddr) -> String {
        ask(address, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    }

    #[test]
    fn a_scrape_gets_the_exposition_and_other_requests_are_refused_and_counted() {
        let endpoint = Endpoint::start("127.0.0.1:0", "t", Box::new(One)).expect("start");
        let address = endpoint.address();
        assert_ne!(address.port(), 0, "the bound port is reported");
        let text = scrape(address);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\nt_answer 42\n"), "{text}");
        assert!(ask(address, b"POST /metrics HTTP/1.1\r\n\r\n").contains("404"));
        let huge = vec![b'a'; MAX_REQUEST * 4];
        assert_eq!(
            ask(address, &huge),
            "",
            "an endless head is cut off unanswered"
        );
        let text = scrape(address);
        assert!(text.contains("t_metrics_scrapes_total 2\n"), "{text}");
        assert!(
            text.contains("t_metrics_refused_total{reason=\"bad_request\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("t_metrics_refused_total{reason=\"too_large\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn connections_past_the_bound_are_closed_until_one_ends() {
        let endpoint = Endpoint::start("127.0.0.1:0", "t", Box::new(One)).expect("start");
        let address = endpoint.address();
        let silent: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(address).expect("connect"))
            .collect();
        // The accept thread takes the silent ones in order; the next is refused at once.
        let deadline = Instant::now() + Duration::from_secs(10);
        while endpoint.shared.active.load(Ordering::Acquire) < MAX_CONNECTIONS {
            assert!(Instant::now() < deadline, "silent connections not accepted");
            std::thread::yield_now();
        }
        assert_eq!(scrape(address), "", "over the bound: closed unanswered");
        drop(silent);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = scrape(address);
            // Answered, with the refusal counted (a scrape sent while the freed handlers were
            // still ending may have been refused too).
            let busy = text
                .lines()
                .find_map(|l| l.strip_prefix("t_metrics_refused_total{reason=\"busy\"} "))
                .and_then(|n| n.parse::<u64>().ok());
            if busy.is_some_and(|n| n >= 1) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no scrape after the bound freed: {text}"
            );
        }
    }
}
