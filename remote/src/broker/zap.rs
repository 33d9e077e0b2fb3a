//! ZAP handler (RFC 27) for the broker: answers libzmq's authentication requests on
//! `inproc://zeromq.zap.01` for the broker's one mechanism: CURVE (the client's public key
//! must be registered in the store) or PLAIN (user name and password checked against the
//! store's argon2 hashes). A match yields the ZMQ user id `ROLE/TEAM/NAME`, which the broker
//! reads from each message's metadata; refusals are logged with the peer address,
//! rate-limited (one line per interval with a count: a flood of wrong tokens costs a few
//! lines), and counted by the broker through its socket monitor. MDP frames are never touched.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::refusals::{Refusal, Refusals};
use super::store::{Peer, Store};
use super::BrokerError;
use crate::security::Mechanism;

const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";

/// A running ZAP handler thread; stops when dropped.
pub(crate) struct ZapHandler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ZapHandler {
    /// Binds the ZAP endpoint in `ctx` (before any PLAIN server socket binds) and serves it.
    pub(crate) fn start(
        ctx: &zmq::Context,
        store: PathBuf,
        mechanism: Mechanism,
    ) -> Result<ZapHandler, BrokerError> {
        let socket = ctx.socket(zmq::REP)?;
        socket.bind(ZAP_ENDPOINT)?;
        let store = Store::open(&store)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("zap".into())
            .spawn(move || serve(&socket, &store, mechanism, &flag))
            .map_err(BrokerError::Io)?;
        Ok(ZapHandler {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ZapHandler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(socket: &zmq::Socket, store: &Store, mechanism: Mechanism, stop: &AtomicBool) {
    let mut refusals = Refusals::default();
    while !stop.load(Ordering::Relaxed) {
        refusals.flush(std::time::Instant::now());
        match socket.poll(zmq::POLLIN, 100) {
            Ok(0) | Err(zmq::Error::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::error!("zap: poll: {e}");
                return;
            }
        }
        let request = match socket.recv_multipart(0) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("zap: recv: {e}");
                return;
            }
        };
        let reply = answer(store, mechanism, &request, &mut refusals);
        if let Err(e) = socket.send_multipart(reply, 0) {
            tracing::error!("zap: send: {e}");
            return;
        }
    }
}

/// Builds the ZAP reply for one request: version, request id, status code, status text,
/// user id, metadata.
fn answer(
    store: &Store,
    mechanism: Mechanism,
    request: &[Vec<u8>],
    refusals: &mut Refusals,
) -> Vec<Vec<u8>> {
    let field = |i: usize| request.get(i).map(Vec::as_slice).unwrap_or_default();
    let request_id = field(1).to_vec();
    let address = String::from_utf8_lossy(field(3)).into_owned();
    let reply = |code: &str, text: &str, user: String| {
        vec![
            b"1.0".to_vec(),
            request_id.clone(),
            code.into(),
            text.into(),
            user.into(),
            Vec::new(),
        ]
    };
    if field(0) != b"1.0" {
        return reply("400", "bad ZAP version", String::new());
    }
    let wanted = match mechanism {
        Mechanism::Curve => "CURVE",
        _ => "PLAIN",
    };
    if field(5) != wanted.as_bytes() {
        let got = field(5).escape_ascii().to_string();
        refusals.refuse(Refusal::Handshake, || {
            format!("peer {address}: mechanism {got} is not {wanted}")
        });
        return reply("400", "wrong mechanism", String::new());
    }
    let (verdict, who) = if mechanism == Mechanism::Curve {
        let key = field(6);
        let shown = match <[u8; 32]>::try_from(key) {
            Ok(k) => format!("key {}", crate::security::encode_key(&k)),
            Err(_) => format!("a {}-byte key", key.len()),
        };
        (store.verify_key(key), shown)
    } else {
        let Ok(name) = std::str::from_utf8(field(6)) else {
            refusals.refuse(Refusal::Handshake, || {
                format!("peer {address}: user name is not UTF-8")
            });
            return reply("400", "bad user name", String::new());
        };
        let shown = format!(
            "identity {:?}",
            name.escape_default().take(64).collect::<String>()
        );
        (store.verify(name, field(7)), shown)
    };
    match verdict {
        Ok(Some(peer)) => {
            let user = Peer::user_id(&peer);
            tracing::debug!(peer = %address, user, "authenticated");
            reply("200", "OK", user)
        }
        Ok(None) => {
            let kind = match mechanism {
                Mechanism::Curve => Refusal::Key,
                _ => Refusal::Token,
            };
            refusals.refuse(kind, || format!("peer {address}, {who}"));
            reply(
                "400",
                "unknown identity or wrong credentials",
                String::new(),
            )
        }
        Err(e) => {
            tracing::error!(peer = %address, "refused {who}: {e}");
            reply("500", "store failure", String::new())
        }
    }
}
