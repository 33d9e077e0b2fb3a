//! The trigger catalog's Clone pattern, answered by the broker itself on the broker-internal
//! service `mmi.catalog` (so it travels over the same authenticated, encrypted connection as
//! every request). A host's request names a verb in its first body frame:
//! - `snapshot`: the FINAL carries `{"seq": S, "entries": [...]}` (its team's live entries)
//!   and the connection becomes a subscriber at S;
//! - `ping`: the FINAL carries `{"seq": N}`, the last sequence number the broker sent this
//!   subscriber (status 404 when it is not one: re-snapshot). A subscriber that does not
//!   ping for [`SUBSCRIBER_EXPIRY`] is forgotten;
//! - `change` + a JSON change: applied when the identity is a catalog admin (77 otherwise).
//!
//! Updates go to subscribers as PARTIAL replies to their snapshot request, carrying
//! `{"prev": P, "seq": S, "entries": [...]}` (rows of their team changed after P, tombstones
//! included). A host whose own number is not P, or whose ping answer differs from it, has
//! missed something and re-snapshots. The broker polls the store's sequence number every
//! 40th of a second (25 ms), so admin verbs (which write the store) reach hosts within that.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{hex, Engine, Identity};
use crate::broker::refusals::Refusal;
use crate::broker::store::{CatalogChange, CatalogEntry, Peer, DEFAULT_TEAM};
use crate::codec::{Frame, Message, ReplyKind, Version};
use crate::ext::{self, ReplyHeader, RequestHeader};

/// The broker-internal service hosts sync their catalog with.
pub const CATALOG_SERVICE: &[u8] = b"mmi.catalog";
/// Subscribers the broker keeps at once (one per connection); past it a snapshot is still
/// answered but the connection is not subscribed (it pings, sees 404, and tries again).
pub(super) const MAX_SUBSCRIBERS: usize = 10_000;
/// A subscriber that has not pinged for this long is dropped.
pub(super) const SUBSCRIBER_EXPIRY: Duration = Duration::from_secs(10);
/// Update bytes pushed to one subscriber between two of its pings; past it the subscriber is
/// dropped (its next ping gets 404 and it snapshots again), so a peer that does not read
/// cannot make the broker queue updates for it without bound.
pub(super) const MAX_UNPINGED_BYTES: usize = 16 << 20;
/// Longest change request accepted, in bytes.
const MAX_CHANGE_BYTES: usize = 8 * 1024;

/// A snapshot as it travels.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub seq: u64,
    pub entries: Vec<CatalogEntry>,
}

/// An update as it travels.
#[derive(Debug, Serialize, Deserialize)]
pub struct Update {
    pub prev: u64,
    pub seq: u64,
    pub entries: Vec<CatalogEntry>,
}

/// A ping's answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Pong {
    pub seq: u64,
}

pub(super) struct Subscriber {
    team: String,
    /// The snapshot request's id: updates are PARTIAL replies to it.
    id: u128,
    /// The last sequence number this subscriber was sent (snapshot or update).
    sent: u64,
    expiry: Instant,
    /// Update bytes pushed since its last ping.
    unpinged: usize,
}

#[derive(Default)]
pub(super) struct CatalogState {
    /// The store's sequence number as last pushed.
    pushed: u64,
    subscribers: HashMap<Identity, Subscriber>,
}

impl Engine {
    /// Starts pushing after what the store holds now (a host snapshots what came before).
    pub(super) fn with_catalog_pushed(mut self) -> Engine {
        self.catalog.pushed = self.store.catalog_seq().unwrap_or(0);
        self
    }

    fn team_of(&self, user: Option<&Peer>) -> Option<String> {
        match (self.auth, user) {
            (false, _) => Some(DEFAULT_TEAM.to_string()),
            (true, Some(u)) => Some(u.team.clone()),
            (true, None) => None,
        }
    }

    /// Answers one `mmi.catalog` request.
    pub(super) fn on_catalog(
        &mut self,
        client: Identity,
        user: Option<Peer>,
        version: Version,
        header: Option<RequestHeader>,
        body: Vec<Frame>,
    ) {
        let service = CATALOG_SERVICE.to_vec();
        let (Some(h), Some(team)) = (header.as_ref(), self.team_of(user.as_ref())) else {
            let text = b"mmi.catalog needs a triggerd request header and an identity";
            let status = ext::STATUS_BAD_REQUEST;
            self.reply_final(client, version, service, header, status, text);
            return;
        };
        let id = h.id;
        let verb = body.first().map(Vec::as_slice);
        let (status, answer) = match verb {
            Some(b"snapshot") => self.catalog_snapshot(&client, &team, id),
            Some(b"ping") => match self.catalog.subscribers.get_mut(&client) {
                Some(s) => {
                    s.expiry = Instant::now() + SUBSCRIBER_EXPIRY;
                    s.unpinged = 0;
                    (0, json(&Pong { seq: s.sent }))
                }
                None => (404, b"not subscribed".to_vec()),
            },
            Some(b"change") => self.change(user.as_ref(), &team, body.get(1)),
            _ => (ext::STATUS_BAD_REQUEST, b"unknown catalog verb".to_vec()),
        };
        self.reply_final(client, version, service, header, status, &answer);
        // A change from a host reaches every subscriber now, not at the next poll.
        if verb == Some(b"change") && status == 0 {
            self.push_catalog();
        }
    }

    fn catalog_snapshot(&mut self, client: &Identity, team: &str, id: u128) -> (i32, Vec<u8>) {
        let (seq, entries) = match self.store.catalog_snapshot(team) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("catalog snapshot: {e}");
                return (ext::STATUS_UNAVAILABLE, b"store unavailable".to_vec());
            }
        };
        let subscribers = &mut self.catalog.subscribers;
        if subscribers.len() < MAX_SUBSCRIBERS || subscribers.contains_key(client) {
            subscribers.insert(
                client.clone(),
                Subscriber {
                    team: team.to_string(),
                    id,
                    sent: seq,
                    expiry: Instant::now() + SUBSCRIBER_EXPIRY,
                    unpinged: 0,
                },
            );
        } else {
            let peer = hex(client);
            self.refusals
                .refuse(Refusal::QueueFull, || format!("catalog subscriber {peer}"));
        }
        (0, json(&Snapshot { seq, entries }))
    }

    fn change(&mut self, user: Option<&Peer>, team: &str, body: Option<&Frame>) -> (i32, Vec<u8>) {
        let admin = match user.filter(|_| self.auth) {
            None => true,
            Some(u) => self.store.is_catalog_admin(&u.name).unwrap_or(false),
        };
        if !admin {
            let who = user.map(Peer::user_id).unwrap_or_default();
            self.refusals
                .refuse(Refusal::Forbidden, || format!("catalog change by {who:?}"));
            return (ext::STATUS_FORBIDDEN, b"not a catalog admin".to_vec());
        }
        let Some(change) = body
            .filter(|b| b.len() <= MAX_CHANGE_BYTES)
            .and_then(|b| serde_json::from_slice::<CatalogChange>(b).ok())
        else {
            return (
                ext::STATUS_BAD_REQUEST,
                b"malformed catalog change".to_vec(),
            );
        };
        match self.store.catalog_apply(team, &change) {
            Ok(seq) => (0, json(&Pong { seq })),
            Err(e) => (ext::STATUS_BAD_REQUEST, e.to_string().into_bytes()),
        }
    }

    /// Pushes what changed in the store since the last push to every subscriber of a team it
    /// concerns, and forgets subscribers that stopped pinging. Cheap when nothing changed:
    /// one read of the sequence number.
    pub(crate) fn push_catalog(&mut self) {
        let now = Instant::now();
        self.catalog.subscribers.retain(|_, s| s.expiry > now);
        let seq = match self.store.catalog_seq() {
            Ok(seq) if seq > self.catalog.pushed => seq,
            Ok(_) => return,
            Err(e) => return tracing::warn!("catalog: {e}"),
        };
        let rows = match self.store.catalog_since(self.catalog.pushed) {
            Ok(rows) => rows,
            Err(e) => return tracing::warn!("catalog: {e}"),
        };
        self.catalog.pushed = seq;
        let mut by_team: HashMap<&str, Vec<&CatalogEntry>> = HashMap::new();
        for (team, entry) in &rows {
            by_team.entry(team).or_default().push(entry);
        }
        let (mut sends, mut dropped) = (Vec::new(), Vec::new());
        for (peer, sub) in &mut self.catalog.subscribers {
            let Some(changed) = by_team.get(sub.team.as_str()) else {
                continue;
            };
            let entries: Vec<CatalogEntry> = changed
                .iter()
                .filter(|e| e.seq > sub.sent)
                .map(|e| (*e).clone())
                .collect();
            if entries.is_empty() {
                continue;
            }
            let update = Update {
                prev: sub.sent,
                seq,
                entries,
            };
            sub.sent = seq;
            let update = json(&update);
            sub.unpinged += update.len();
            if sub.unpinged > MAX_UNPINGED_BYTES {
                dropped.push(peer.clone());
                continue;
            }
            let header = ReplyHeader {
                id: sub.id,
                status: 0,
            };
            sends.push((peer.clone(), vec![header.encode(), update]));
        }
        for peer in dropped {
            self.catalog.subscribers.remove(&peer);
            let id = hex(&peer);
            self.refusals.refuse(Refusal::QueueFull, || {
                format!("catalog subscriber {id}: {MAX_UNPINGED_BYTES} bytes of updates unread")
            });
        }
        for (peer, body) in sends {
            let msg = Message::ClientReply {
                version: Version::V2,
                kind: ReplyKind::Partial,
                service: CATALOG_SERVICE.to_vec(),
                body,
            };
            self.send(&peer, msg.into_frames());
        }
    }
}

fn json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}
