//! Client library: sends requests to a service through the broker (MDP/0.2 with triggerd's
//! request header) and receives zero or more PARTIAL replies then one FINAL carrying the
//! remote exit status. [`Client::request`] is the synchronous call used by `triggerctl send`
//! (streaming callback, timeout, retries that reuse the request id so workers can drop
//! duplicates); [`Client::send`] and [`Client::recv`] pipeline many requests on one
//! connection (the forwarder and the benchmark use them).

use std::time::{Duration, Instant};

use crate::codec::{Direction, Frame, Message, ReplyKind, Version};
use crate::ext::{ReplyHeader, RequestHeader};
use crate::security::Credentials;

/// How to connect.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// What the connection presents to the broker (CURVE keys, a PLAIN token, or nothing).
    pub credentials: Credentials,
    /// Extra attempts after a request timed out without any reply.
    pub retries: u32,
}

/// The last answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Request id.
    pub id: u128,
    /// Remote exit status (124 when the broker timed the request out).
    pub status: i32,
    /// Frames of the FINAL reply.
    pub body: Vec<Frame>,
}

/// One reply as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Output streamed while the request runs.
    Partial {
        /// Request id.
        id: u128,
        /// Frames of this PARTIAL.
        body: Vec<Frame>,
    },
    /// The request is complete.
    Final(Reply),
}

/// Client failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// ZeroMQ failed.
    #[error("zmq: {0}")]
    Zmq(#[from] zmq::Error),
    /// No FINAL arrived in time, after every retry.
    #[error("no reply from the broker within {0:?}")]
    Timeout(Duration),
}

/// A connection to the broker.
pub struct Client {
    ctx: zmq::Context,
    endpoint: String,
    options: ClientOptions,
    socket: zmq::Socket,
    id_base: u128,
    counter: u64,
}

fn open_socket(
    ctx: &zmq::Context,
    endpoint: &str,
    options: &ClientOptions,
) -> Result<zmq::Socket, zmq::Error> {
    let socket = options.credentials.dealer(ctx)?;
    socket.connect(endpoint)?;
    Ok(socket)
}

impl Client {
    /// Connects (lazily, as ZeroMQ does) to the broker at `endpoint`.
    pub fn connect(endpoint: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let ctx = zmq::Context::new();
        let socket = open_socket(&ctx, endpoint, &options)?;
        let id_base = u128::from(rand::random::<u64>()) << 64;
        Ok(Client {
            ctx,
            endpoint: endpoint.to_string(),
            options,
            socket,
            id_base,
            counter: 0,
        })
    }

    /// A fresh request id, unique to this client.
    pub fn next_id(&mut self) -> u128 {
        self.counter += 1;
        self.id_base | u128::from(self.counter)
    }

    /// Sends one request without waiting; returns its id (`id` or a fresh one).
    pub fn send(
        &mut self,
        service: &str,
        plugin: &str,
        id: Option<u128>,
        timeout: Option<Duration>,
        body: &[&[u8]],
    ) -> Result<u128, ClientError> {
        let id = id.unwrap_or_else(|| self.next_id());
        let header = RequestHeader {
            id,
            timeout_ms: timeout.map_or(0, |t| t.as_millis().clamp(1, u32::MAX as u128) as u32),
            plugin: plugin.to_string(),
        };
        let mut frames = Vec::with_capacity(body.len() + 1);
        frames.push(header.encode());
        frames.extend(body.iter().map(|b| b.to_vec()));
        let msg = Message::ClientRequest {
            version: Version::V2,
            service: service.as_bytes().to_vec(),
            body: frames,
        };
        crate::codec::send_frames(&self.socket, None, msg.into_frames(), 0)?;
        Ok(id)
    }

    /// Waits up to `wait` for the next reply of any request sent by this client.
    /// Messages that are not MDP/0.2 replies with a triggerd header are skipped.
    pub fn recv(&mut self, wait: Duration) -> Result<Option<Event>, ClientError> {
        let deadline = Instant::now() + wait;
        loop {
            // Pipelined replies are usually already queued: try before paying for a poll.
            let frames = match self.socket.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    // Rounded up: a sub-millisecond wait must sleep, not spin.
                    match self
                        .socket
                        .poll(zmq::POLLIN, left.as_micros().div_ceil(1000) as i64)
                    {
                        Ok(0) => return Ok(None),
                        Ok(_) | Err(zmq::Error::EINTR) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            };
            let Ok(Message::ClientReply { kind, body, .. }) =
                Message::decode_owned(frames, Direction::FromBroker)
            else {
                tracing::debug!("client: skipped a message that is not a reply");
                continue;
            };
            let Some(header) = body.first().and_then(|f| ReplyHeader::decode(f)) else {
                continue;
            };
            let mut body = body;
            body.remove(0);
            return Ok(Some(match kind {
                ReplyKind::Partial => Event::Partial {
                    id: header.id,
                    body,
                },
                ReplyKind::Final => Event::Final(Reply {
                    id: header.id,
                    status: header.status,
                    body,
                }),
            }));
        }
    }

    /// Sends a request and waits for its FINAL, calling `on_partial` for each PARTIAL body.
    /// After `timeout` without a FINAL, reconnects and resends with the same id, up to
    /// `retries` times.
    pub fn request(
        &mut self,
        service: &str,
        plugin: &str,
        payload: &[u8],
        timeout: Duration,
        mut on_partial: impl FnMut(&[Frame]),
    ) -> Result<Reply, ClientError> {
        let id = self.next_id();
        for attempt in 0..=self.options.retries {
            if attempt > 0 {
                tracing::info!(service, attempt, "no reply, resending");
                // A fresh socket drops whatever the old one still queued for a dead broker.
                self.socket = open_socket(&self.ctx, &self.endpoint, &self.options)?;
            }
            self.send(service, plugin, Some(id), Some(timeout), &[payload])?;
            let deadline = Instant::now() + timeout + Duration::from_millis(500);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.recv(left)? {
                    None => break,
                    Some(Event::Partial { id: got, body }) if got == id => on_partial(&body),
                    Some(Event::Final(reply)) if reply.id == id => return Ok(reply),
                    Some(_) => {}
                }
            }
        }
        Err(ClientError::Timeout(timeout))
    }
}
