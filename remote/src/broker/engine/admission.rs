//! The two messages that create state in the broker, each checked before anything is held:
//! a worker's READY (duplicate, `mmi.*`, long name, not a worker identity, another team's
//! service: DISCONNECT) and a client's request (long name, invisible to its team, byte bounds,
//! full queue: an immediate FINAL with the refusal's status), plus MMI answered in place.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use super::bounds::request_bytes;
use super::{hex, shown, Engine, Identity, Request, Worker, MAX_QUEUED};
use crate::broker::refusals::Refusal;
use crate::broker::store::{Access, Peer, Role};
use crate::codec::{Frame, Message, ReplyKind, Version};
use crate::ext::{self, ReplyHeader, RequestHeader, WorkerHello};

impl Engine {
    pub(super) fn on_ready(
        &mut self,
        peer: Identity,
        user: Option<&Peer>,
        version: Version,
        service: Frame,
        extra: &[Frame],
    ) {
        let is_worker = user.is_some_and(|u| u.role == Role::Worker);
        let foreign = self.auth && is_worker && self.access(user, &service) != Access::Own;
        let refuse = if self.workers.contains_key(&peer) {
            Some("READY twice")
        } else if service.starts_with(b"mmi.") {
            Some("workers may not register mmi.* services")
        } else if service.len() > ext::MAX_SERVICE_NAME {
            Some("service name longer than 255 bytes")
        } else if self.auth && !is_worker {
            Some("identity is not a worker")
        } else if foreign {
            Some("the service belongs to another team")
        } else {
            None
        };
        if let Some(reason) = refuse {
            let kind = match service.len() > ext::MAX_SERVICE_NAME {
                true => Refusal::LongName,
                false if foreign => Refusal::Foreign,
                false => Refusal::Ready,
            };
            let id = hex(&peer);
            let who = user.map(Peer::user_id).unwrap_or_default();
            let name = shown(&service);
            self.refusals.refuse(kind, || {
                format!("READY from peer {id}, user {who:?}, service {name}: {reason}")
            });
            self.send(&peer, Message::Disconnect { version }.into_frames());
            self.drop_worker(&peer, reason);
            return;
        }
        let hello = extra.first().and_then(|f| WorkerHello::decode(f));
        let now = Instant::now();
        let worker = Worker {
            service: service.clone(),
            version,
            hello,
            in_flight: Vec::new(),
            recorded_load: 0,
            expiry: now + self.expiry_for(hello),
            last_sent: now,
        };
        let who = user.map(Peer::user_id).unwrap_or_default();
        tracing::info!(
            worker = %hex(&peer), user = who,
            service = %shown(&service), capacity = worker.capacity(), "worker ready"
        );
        let service_name = String::from_utf8_lossy(&service);
        if let Some(team) = user.map(|u| u.team.as_str()).filter(|_| self.auth) {
            self.claim(&service_name, team);
        }
        let identity = user.map_or("", |u| u.name.as_str());
        if let Err(e) = self
            .store
            .record_worker(&hex(&peer), &service_name, identity)
        {
            tracing::warn!("cannot record worker: {e}");
        }
        self.workers.insert(peer.clone(), worker);
        self.service_entry(&service).workers.push(peer);
        self.dispatch(&service);
    }

    pub(super) fn on_request(
        &mut self,
        client: Identity,
        user: Option<Peer>,
        version: Version,
        service: Frame,
        body: Vec<Frame>,
    ) {
        let mut body = body;
        let header = body.first().and_then(|f| RequestHeader::decode(f));
        if header.is_some() {
            body.remove(0);
        }
        if service.len() > ext::MAX_SERVICE_NAME {
            let (id, name) = (hex(&client), shown(&service));
            self.refusals.refuse(Refusal::LongName, || {
                format!("request from client {id}, service {name}")
            });
            let text = b"service name longer than 255 bytes";
            self.reply_final(
                client,
                version,
                service,
                header,
                ext::STATUS_BAD_REQUEST,
                text,
            );
            return;
        }
        if service == super::catalog::CATALOG_SERVICE {
            return self.on_catalog(client, user, version, header, body);
        }
        if service.starts_with(b"mmi.") {
            let answer: Vec<u8> = match (service.as_slice(), body.first()) {
                (b"mmi.service", Some(name)) => {
                    let known = self.access(user.as_ref(), name) != Access::Denied
                        && self
                            .services
                            .get(name)
                            .is_some_and(|s| !s.workers.is_empty());
                    if known {
                        b"200".to_vec()
                    } else {
                        b"404".to_vec()
                    }
                }
                (b"mmi.status", _) => self.status_json(),
                _ => b"501".to_vec(),
            };
            self.reply_final(client, version, service, header, 0, &answer);
            return;
        }
        if self.access(user.as_ref(), &service) == Access::Denied {
            let team = user.as_ref().map_or("", |u| u.team.as_str());
            let (who, name) = (user.as_ref().map(Peer::user_id), shown(&service));
            self.refusals.refuse(Refusal::Forbidden, || {
                format!("client {who:?}, service {name}")
            });
            let text = format!("service not visible to team {team}");
            let status = ext::STATUS_FORBIDDEN;
            self.reply_final(client, version, service, header, status, text.as_bytes());
            return;
        }
        let bytes = request_bytes(&client, &service, &body);
        if let Err((kind, text)) = self.admit(&client, bytes) {
            let id = hex(&client);
            self.refusals
                .refuse(kind, || format!("client {id}, {bytes} bytes"));
            let status = ext::STATUS_BUSY;
            self.reply_final(client, version, service, header, status, text.as_bytes());
            return;
        }
        let default_timeout = self.default_timeout;
        let token = self.next_token;
        self.next_token += 1;
        let entry = self.service_entry(&service);
        if entry.queue.len() >= MAX_QUEUED {
            let name = shown(&service);
            self.refusals
                .refuse(Refusal::QueueFull, || format!("service {name}"));
            let status = ext::STATUS_UNAVAILABLE;
            self.reply_final(client, version, service, header, status, b"queue full");
            return;
        }
        let mut timeout = entry.timeout.unwrap_or(default_timeout);
        if let Some(h) = header.as_ref().filter(|h| h.timeout_ms > 0) {
            timeout = timeout.min(Duration::from_millis(h.timeout_ms.into()));
        }
        let deadline = Instant::now() + timeout;
        entry.queue.push_back(token);
        entry.live += 1;
        self.deadlines.push(Reverse((deadline, token)));
        self.hold(&client, bytes);
        let request = Request {
            client,
            user,
            version,
            service: service.clone(),
            header,
            body,
            deadline,
            holders: Vec::new(),
            status: 0,
            gathered: Vec::new(),
            gathered_bytes: 0,
            bytes,
        };
        self.requests.insert(token, request);
        self.dispatch(&service);
    }

    /// Answers a request at once (mmi, refusals) with a final reply carrying `status` (in the
    /// triggerd header, when the client sent one) and `text`.
    pub(super) fn reply_final(
        &mut self,
        client: Identity,
        version: Version,
        service: Frame,
        header: Option<RequestHeader>,
        status: i32,
        text: &[u8],
    ) {
        let mut reply = Vec::new();
        if let Some(h) = &header {
            reply.push(ReplyHeader { id: h.id, status }.encode());
        }
        reply.push(text.to_vec());
        let msg = Message::ClientReply {
            version,
            kind: ReplyKind::Final,
            service,
            body: reply,
        };
        self.send(&client, msg.into_frames());
    }
}
