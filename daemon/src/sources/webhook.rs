//! The webhook source (`[[webhook]]`), and the worked example of a source: it binds one TCP
//! listener per distinct `listen` address, routes `POST path` to its rule, and hands the body
//! over as the payload. Requests are read with hard bounds (head 16 KiB, body `max_body`,
//! 10 s to arrive), answered `202 Accepted` once the event is queued, and closed; a client that
//! misbehaves gets a 4xx and costs nothing more.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use triggerd_watch::EventMask;

use super::{BoxFuture, Emitter, EventSource, SourceContext};
use crate::config::{Rule, Trigger};

const MAX_HEAD: usize = 16 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once, over all listeners: a peer that opens many and sends nothing
/// holds at most this many of the daemon's descriptors (the rest wait in the kernel's
/// backlog), so actions and the control socket keep theirs.
const MAX_CONNECTIONS: usize = 256;
/// Pause after a failed accept (e.g. EMFILE), which would otherwise fail again at once.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// (address, path) → (rule, body limit).
type Routes = Arc<RwLock<HashMap<(SocketAddr, String), (String, usize)>>>;

#[derive(Default)]
pub struct WebhookSource;

impl EventSource for WebhookSource {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn describe(&self) -> &'static str {
        "HTTP POST on a local address fires the rule with the body as payload"
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture {
        Box::pin(run(ctx))
    }
}

async fn run(mut ctx: SourceContext) {
    let routes: Routes = Arc::default();
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut listeners: HashMap<SocketAddr, JoinHandle<()>> = HashMap::new();
    loop {
        let bindings = ctx.bindings.borrow_and_update().clone();
        bind(
            &bindings.rules,
            &routes,
            &connections,
            &mut listeners,
            &ctx.emitter,
        )
        .await;
        ctx.applied(bindings.generation);
        tokio::select! {
            changed = ctx.bindings.changed() => if changed.is_err() { break },
            _ = ctx.shutdown.changed() => break,
        }
    }
    for (_, task) in listeners {
        task.abort();
    }
}

/// Makes the routes and listeners match `rules`: new addresses are bound, unused ones closed.
async fn bind(
    rules: &[Rule],
    routes: &Routes,
    connections: &Arc<Semaphore>,
    listeners: &mut HashMap<SocketAddr, JoinHandle<()>>,
    emitter: &Emitter,
) {
    let mut table = HashMap::new();
    for rule in rules {
        if let Trigger::Webhook(w) = &rule.def.trigger {
            table.insert((w.listen, w.path.clone()), (rule.name.clone(), w.max_body));
        }
    }
    let wanted: Vec<SocketAddr> = table.keys().map(|(addr, _)| *addr).collect();
    *routes.write().unwrap_or_else(|p| p.into_inner()) = table;
    listeners.retain(|addr, task| {
        let keep = wanted.contains(addr);
        if !keep {
            task.abort();
        }
        keep
    });
    for addr in wanted {
        if listeners.contains_key(&addr) {
            continue;
        }
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(%addr, "webhook listening");
                let (routes, emitter) = (Arc::clone(routes), emitter.clone());
                let connections = Arc::clone(connections);
                listeners.insert(
                    addr,
                    tokio::spawn(accept(listener, addr, routes, connections, emitter)),
                );
            }
            Err(e) => tracing::error!(%addr, "webhook cannot listen: {e}"),
        }
    }
}

async fn accept(
    listener: TcpListener,
    addr: SocketAddr,
    routes: Routes,
    connections: Arc<Semaphore>,
    emitter: Emitter,
) {
    loop {
        // The semaphore is never closed.
        let Ok(permit) = Arc::clone(&connections).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let (routes, emitter) = (Arc::clone(&routes), emitter.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let (status, reason) =
                        tokio::time::timeout(READ_TIMEOUT, serve(stream, addr, &routes, &emitter))
                            .await
                            .unwrap_or((408, "Request Timeout"));
                    if status >= 400 {
                        tracing::debug!(%addr, status, "webhook request refused: {reason}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(%addr, "webhook accept: {e}");
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

/// Reads one request, delivers it, answers; returns the status sent.
async fn serve(
    stream: TcpStream,
    addr: SocketAddr,
    routes: &Routes,
    emitter: &Emitter,
) -> (u16, &'static str) {
    let mut reader = BufReader::new(stream);
    let outcome = read_and_deliver(&mut reader, addr, routes, emitter).await;
    let (status, reason) = outcome;
    let response =
        format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = reader.get_mut().write_all(response.as_bytes()).await;
    let _ = reader.get_mut().shutdown().await;
    outcome
}

async fn read_and_deliver(
    reader: &mut BufReader<TcpStream>,
    addr: SocketAddr,
    routes: &Routes,
    emitter: &Emitter,
) -> (u16, &'static str) {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        match (&mut *reader)
            .take((MAX_HEAD - before) as u64)
            .read_until(b'\n', &mut head)
            .await
        {
            Ok(0) => return (400, "Bad Request"),
            Ok(_) if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") => break,
            Ok(_) if head.len() >= MAX_HEAD => return (431, "Request Header Fields Too Large"),
            Ok(_) => {}
            Err(_) => return (400, "Bad Request"),
        }
    }
    let Ok(head) = std::str::from_utf8(&head) else {
        return (400, "Bad Request");
    };
    let mut lines = head.lines();
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (
        request_line.next().unwrap_or_default(),
        request_line.next().unwrap_or_default(),
    );
    let path = target.split('?').next().unwrap_or_default();
    let Some((rule, max_body)) = routes
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(addr, path.to_string()))
        .cloned()
    else {
        return (404, "Not Found");
    };
    if method != "POST" {
        return (405, "Method Not Allowed");
    }
    let mut length = None;
    let mut expects_continue = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return (411, "Length Required");
        } else if name.eq_ignore_ascii_case("expect") {
            expects_continue = value.trim().eq_ignore_ascii_case("100-continue");
        }
    }
    let Some(length) = length else {
        return (411, "Length Required");
    };
    if length > max_body {
        return (413, "Payload Too Large");
    }
    // curl asks before sending a body over 1 MiB, and would otherwise wait a second.
    if expects_continue
        && reader
            .get_mut()
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
    {
        return (400, "Bad Request");
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).await.is_err() {
        return (400, "Bad Request");
    }
    let peer = reader
        .get_ref()
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::debug!(rule = %rule, %peer, bytes = length, "webhook");
    let event = emitter.event(PathBuf::from(path), EventMask::EMPTY, None, body);
    if emitter.fire(&rule, event).await {
        (202, "Accepted")
    } else {
        (404, "Not Found")
    }
}
