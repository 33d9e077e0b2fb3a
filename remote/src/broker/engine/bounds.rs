//! What the broker's engine may hold for its peers: the bytes of live requests (queued or
//! held by a worker), per client identity (`client_queue_bytes`) and in total
//! (`queue_bytes`); service entries, pruned once they have neither workers nor live
//! requests; and the `mmi.status` answer that reports both with the refusal counters.
//! Invariant: `queued_bytes` is the sum of `client_bytes`, and each is the sum of the
//! `bytes` of that client's live requests.

use super::{ext, hex, shown, Engine, Identity, Refusal};
use crate::broker::metrics::{ServiceQueue, Snapshot, MAX_SERVICES};
use crate::broker::refusals::Status;
use crate::codec::{Direction, Frame, Message};

/// What a request costs beyond its frames (the request, queue and deadline entries).
const REQUEST_OVERHEAD: u64 = 256;

/// The bytes a request counts against the bounds while it lives.
pub(super) fn request_bytes(client: &[u8], service: &[u8], body: &[Frame]) -> u64 {
    let frames: usize = body.iter().map(Vec::len).sum();
    (frames + client.len() + service.len()) as u64 + REQUEST_OVERHEAD
}

impl Engine {
    /// Whether a request of `bytes` from `client` fits both bounds; the refusal says which.
    pub(super) fn admit(&self, client: &[u8], bytes: u64) -> Result<(), (Refusal, String)> {
        let held = self.client_bytes.get(client).copied().unwrap_or(0);
        if held + bytes > self.client_queue_bytes {
            let text = format!(
                "this connection's queued requests would exceed client_queue_bytes ({})",
                self.client_queue_bytes
            );
            return Err((Refusal::ClientBytes, text));
        }
        if self.queued_bytes + bytes > self.queue_bytes {
            let text = format!(
                "the broker's queued requests would exceed queue_bytes ({})",
                self.queue_bytes
            );
            return Err((Refusal::TotalBytes, text));
        }
        Ok(())
    }

    /// Counts an admitted request's bytes.
    pub(super) fn hold(&mut self, client: &[u8], bytes: u64) {
        *self.client_bytes.entry(client.to_vec()).or_insert(0) += bytes;
        self.queued_bytes += bytes;
    }

    /// Gives back a finished request's bytes and prunes its service if nothing is left.
    pub(super) fn release(&mut self, client: &Identity, bytes: u64, service: &[u8]) {
        self.queued_bytes = self.queued_bytes.saturating_sub(bytes);
        if let Some(held) = self.client_bytes.get_mut(client) {
            *held = held.saturating_sub(bytes);
            if *held == 0 {
                self.client_bytes.remove(client);
            }
        }
        if let Some(s) = self.services.get_mut(service) {
            s.live = s.live.saturating_sub(1);
        }
        self.prune(service);
    }

    /// Forgets `service` when it has neither workers nor live requests: tokens still in its
    /// queue then are all stale, and its settings come back from the store when it is used.
    pub(super) fn prune(&mut self, service: &[u8]) {
        let idle = self
            .services
            .get(service)
            .is_some_and(|s| s.workers.is_empty() && s.live == 0);
        if idle {
            self.services.remove(service);
        }
    }

    /// A message past `client_queue_bytes` kept only its first frames: a client request
    /// whose frames up to the service name survived is answered with status 65, anything
    /// else is dropped; both are counted.
    pub(super) fn on_oversized(&mut self, peer: Identity, frames: Vec<Frame>) {
        let request = match Message::decode_owned(frames, Direction::ToBroker) {
            Ok(Message::ClientRequest {
                version,
                service,
                body,
            }) => Some((version, service, body)),
            _ => None,
        };
        let (id, limit) = (hex(&peer), self.client_queue_bytes);
        let name = request.as_ref().map_or_else(String::new, |r| shown(&r.1));
        self.refusals.refuse(Refusal::Oversized, || {
            format!("peer {id}, service {name:?}, over {limit} bytes")
        });
        let Some((version, service, body)) = request else {
            return;
        };
        let header = body.first().and_then(|f| ext::RequestHeader::decode(f));
        let text = format!("request larger than client_queue_bytes ({limit})");
        let status = ext::STATUS_BAD_REQUEST;
        self.reply_final(peer, version, service, header, status, text.as_bytes());
    }

    /// The broker's sizes and counters (`mmi.status`, and the metrics endpoint).
    fn status(&self) -> Status {
        Status {
            services: self.services.len(),
            workers: self.workers.len(),
            requests: self.requests.len(),
            queued_bytes: self.queued_bytes,
            clients_queued: self.client_bytes.len(),
            refused: self.refusals.counts().into_iter().collect(),
        }
    }

    /// The `mmi.status` answer: one JSON object with the broker's sizes and counters.
    pub(super) fn status_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.status()).unwrap_or_default()
    }

    /// The status with each service's queue (the first `MAX_SERVICES` by name: names are
    /// peers' choice, and so is their number), for the metrics endpoint.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut services: Vec<ServiceQueue> = self
            .services
            .iter()
            .map(|(name, s)| ServiceQueue {
                name: shown(name),
                queued: s.queue.len() as u64,
                dispatched: s.dispatched as u64,
                workers: s.workers.len() as u64,
            })
            .collect();
        services.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        services.truncate(MAX_SERVICES);
        Snapshot {
            status: self.status(),
            services,
        }
    }

    /// Counts a refusal noticed outside the engine (the socket monitor).
    pub(crate) fn refused(&mut self, kind: Refusal, detail: impl FnOnce() -> String) {
        self.refusals.refuse(kind, detail);
    }
}
