//! The request flow of the broker's engine: handing queued requests to workers according to
//! the service's algorithm, relaying worker replies to clients (gathering them for MDP/0.1
//! clients, one PARTIAL per worker then one FINAL for mirror), finishing requests, and
//! failing requests over when their worker is dropped.

use std::time::Instant;

use super::{expiry_after, hex, Engine, Identity, Refusal, Worker};
use crate::broker::store::Algorithm;
use crate::codec::{Frame, Message, ReplyKind, Version};
use crate::ext::{ReplyHeader, RequestHeader};

impl Engine {
    /// Hands queued requests of `name` to workers as far as the algorithm and capacity allow.
    pub(super) fn dispatch(&mut self, name: &[u8]) {
        loop {
            let Some(service) = self.services.get_mut(name) else {
                return;
            };
            let Some(&token) = service.queue.front() else {
                return;
            };
            if !self.requests.contains_key(&token) {
                service.queue.pop_front();
                continue;
            }
            let n = service.workers.len();
            let chosen: Vec<Identity> = match service.algorithm {
                Algorithm::Serial if service.dispatched > 0 => return,
                Algorithm::Roundrobin | Algorithm::Serial => {
                    let found = (0..n).map(|i| (service.cursor + i) % n).find(|&i| {
                        self.workers
                            .get(&service.workers[i])
                            .is_some_and(Worker::has_room)
                    });
                    let Some(i) = found else { return };
                    service.cursor = (i + 1) % n.max(1);
                    vec![service.workers[i].clone()]
                }
                Algorithm::Mirror => {
                    let all_free = service
                        .workers
                        .iter()
                        .all(|w| self.workers.get(w).is_some_and(Worker::has_room));
                    if n == 0 || !all_free {
                        return;
                    }
                    service.workers.clone()
                }
            };
            service.queue.pop_front();
            service.dispatched += 1;
            for worker in &chosen {
                self.send_to_worker(worker, token);
            }
            if let Some(request) = self.requests.get_mut(&token) {
                request.holders = chosen;
            }
        }
    }

    pub(super) fn send_to_worker(&mut self, peer: &[u8], token: u64) {
        let (Some(worker), Some(request)) = (self.workers.get_mut(peer), self.requests.get(&token))
        else {
            return;
        };
        worker.in_flight.push(token);
        let mut body = Vec::with_capacity(request.body.len() + 1);
        if worker.hello.is_some() {
            let remaining = request.deadline.saturating_duration_since(Instant::now());
            let header = RequestHeader {
                id: super::teams::worker_request_id(
                    request.user.as_ref(),
                    request.header.as_ref().map_or(0, |h| h.id),
                ),
                timeout_ms: (remaining.as_millis() as u32).max(1),
                plugin: request
                    .header
                    .as_ref()
                    .map(|h| h.plugin.clone())
                    .unwrap_or_default(),
            };
            body.push(header.encode());
        }
        body.extend(request.body.iter().cloned());
        let msg = Message::WorkerRequest {
            version: worker.version,
            address: token.to_be_bytes().to_vec(),
            body,
        };
        self.send_worker(peer, msg);
    }

    pub(super) fn on_reply(
        &mut self,
        peer: &[u8],
        kind: ReplyKind,
        address: &[u8],
        body: Vec<Frame>,
    ) {
        let Some(worker) = self.workers.get_mut(peer) else {
            let id = hex(peer);
            self.refusals.refuse(Refusal::Reply, || {
                format!("peer {id}: not a registered worker")
            });
            return;
        };
        worker.expiry = Instant::now() + expiry_after(self.heartbeat, self.liveness, worker.hello);
        let has_hello = worker.hello.is_some();
        let Some(token) = address.try_into().ok().map(u64::from_be_bytes) else {
            let id = hex(peer);
            self.refusals.refuse(Refusal::Reply, || {
                format!("peer {id}: foreign address frame")
            });
            return;
        };
        let held = self
            .requests
            .get(&token)
            .is_some_and(|r| r.holders.iter().any(|h| h == peer));
        if !held {
            if kind == ReplyKind::Final {
                worker.in_flight.retain(|&t| t != token);
            }
            tracing::debug!(peer = %hex(peer), "dropped a stale reply");
            return;
        }
        let mut body = body;
        let header = body
            .first()
            .filter(|_| has_hello)
            .and_then(|f| ReplyHeader::decode(f));
        let status = header.map_or(0, |h| h.status);
        if header.is_some() {
            body.remove(0);
        }
        if kind == ReplyKind::Partial {
            self.reply_to_client(token, ReplyKind::Partial, body, 0);
            return;
        }
        worker.in_flight.retain(|&t| t != token);
        let Some(request) = self.requests.get_mut(&token) else {
            return;
        };
        request.holders.retain(|h| h != peer);
        let service = request.service.clone();
        let mirrored = self
            .services
            .get(&service)
            .is_some_and(|s| s.algorithm == Algorithm::Mirror);
        if mirrored {
            if request.status == 0 {
                request.status = status;
            }
            let done = request.holders.is_empty();
            let status = request.status;
            self.reply_to_client(token, ReplyKind::Partial, body, 0);
            if done {
                self.finish(token, Vec::new(), status);
            }
        } else {
            self.finish(token, body, status);
        }
        self.dispatch(&service);
    }

    /// Sends (or, for an MDP/0.1 client, gathers) one reply to the request's client.
    pub(super) fn reply_to_client(
        &mut self,
        token: u64,
        kind: ReplyKind,
        body: Vec<Frame>,
        status: i32,
    ) {
        let Some(request) = self.requests.get_mut(&token) else {
            return;
        };
        if request.version == Version::V1 && kind == ReplyKind::Partial {
            let size: usize = body.iter().map(Vec::len).sum();
            if request.gathered_bytes + size <= super::MAX_GATHERED {
                request.gathered_bytes += size;
                request.gathered.extend(body);
            }
            return;
        }
        let mut frames = Vec::with_capacity(body.len() + 1);
        if let Some(h) = &request.header {
            frames.push(ReplyHeader { id: h.id, status }.encode());
        }
        frames.append(&mut request.gathered);
        frames.extend(body);
        let msg = Message::ClientReply {
            version: request.version,
            kind,
            service: request.service.clone(),
            body: frames,
        };
        let client = request.client.clone();
        self.send(&client, msg.into_frames());
    }

    /// Sends the FINAL and forgets the request.
    pub(super) fn finish(&mut self, token: u64, body: Vec<Frame>, status: i32) {
        self.reply_to_client(token, ReplyKind::Final, body, status);
        if let Some(request) = self.requests.remove(&token) {
            for holder in &request.holders {
                if let Some(w) = self.workers.get_mut(holder) {
                    w.in_flight.retain(|&t| t != token);
                }
            }
            if let Some(s) = self.services.get_mut(&request.service) {
                s.dispatched = s.dispatched.saturating_sub(1);
            }
            self.release(&request.client, request.bytes, &request.service);
        }
    }

    /// Removes a worker; requests it held go back to the front of their queue (or, for
    /// mirror, complete without its reply).
    pub(super) fn drop_worker(&mut self, peer: &[u8], reason: &str) {
        let Some(worker) = self.workers.remove(peer) else {
            return;
        };
        tracing::info!(worker = %hex(peer), service = %super::shown(&worker.service), "worker dropped: {reason}");
        let Some(service) = self.services.get_mut(&worker.service) else {
            return;
        };
        service.workers.retain(|w| w != peer);
        let mirrored = service.algorithm == Algorithm::Mirror;
        for &token in worker.in_flight.iter().rev() {
            let Some(request) = self.requests.get_mut(&token) else {
                continue;
            };
            request.holders.retain(|h| h != peer);
            if mirrored {
                if request.holders.is_empty() {
                    let status = request.status;
                    self.finish(token, Vec::new(), status);
                }
            } else if let Some(service) = self.services.get_mut(&worker.service) {
                service.dispatched = service.dispatched.saturating_sub(1);
                service.queue.push_front(token);
                tracing::info!(token, "request re-dispatched");
            }
        }
        self.dispatch(&worker.service);
        self.prune(&worker.service);
    }
}
