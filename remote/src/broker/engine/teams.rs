//! The engine's team checks against its cached service settings (reloaded every second, and
//! at once after a claim): who may serve and call a service, and the request id a worker sees,
//! which is derived from the client's identity so de-duplication keys on (client, id). Also
//! what `service list` reads back from the store: workers' loads.

use sha2::{Digest, Sha256};

use super::Engine;
use crate::broker::store::{access, Access, Peer};

impl Engine {
    /// What `user` may do with `service`; everything without authentication.
    pub(super) fn access(&self, user: Option<&Peer>, service: &[u8]) -> Access {
        if !self.auth {
            return Access::Own;
        }
        let Some(user) = user else {
            return Access::Denied;
        };
        let settings = std::str::from_utf8(service)
            .ok()
            .and_then(|n| self.settings.get(n));
        access(settings, &user.team)
    }

    /// Writes each worker's load to the store when it changed (once a second, with the
    /// settings reload), for `service list`.
    pub(crate) fn record_loads(&mut self) {
        for (id, worker) in &mut self.workers {
            let load = worker.in_flight.len();
            if load == worker.recorded_load {
                continue;
            }
            match self.store.record_load(&super::hex(id), load as u64) {
                Ok(()) => worker.recorded_load = load,
                Err(e) => tracing::warn!("cannot record a worker's load: {e}"),
            }
        }
    }

    /// Records `team` as the owner of `service` if nobody owns it yet.
    pub(super) fn claim(&mut self, service: &str, team: &str) {
        let owned = self.settings.get(service).is_some_and(|s| s.team.is_some());
        if owned {
            return;
        }
        match self.store.claim_service(service, team) {
            Ok(owner) => {
                tracing::info!(
                    service,
                    team = owner,
                    "service claimed by its first worker's team"
                );
                self.reload_settings();
            }
            Err(e) => tracing::warn!(service, "cannot record the service's team: {e}"),
        }
    }
}

/// The request id a worker sees: the client's own id, keyed by the authenticated client's
/// identity (SHA-256 of both, truncated), so two clients choosing the same id never look like
/// one request's retries. 0 ("no id") stays 0; without authentication the id is passed as is.
pub(super) fn worker_request_id(user: Option<&Peer>, id: u128) -> u128 {
    let Some(user) = user.filter(|_| id != 0) else {
        return id;
    };
    let mut hash = Sha256::new();
    hash.update(user.user_id().as_bytes());
    hash.update([0]);
    hash.update(id.to_be_bytes());
    let digest = hash.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(out).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::store::Role;

    #[test]
    fn the_same_id_from_two_clients_differs_at_the_worker() {
        let peer = |name: &str| Peer {
            name: name.into(),
            role: Role::Client,
            team: "t".into(),
        };
        let (a, b) = (peer("a"), peer("b"));
        assert_ne!(
            worker_request_id(Some(&a), 42),
            worker_request_id(Some(&b), 42)
        );
        assert_eq!(
            worker_request_id(Some(&a), 42),
            worker_request_id(Some(&a), 42)
        );
        assert_eq!(worker_request_id(Some(&a), 0), 0);
        assert_eq!(worker_request_id(None, 42), 42);
    }
}
