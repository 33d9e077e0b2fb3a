//! The spool's drain, chosen by `[broker] endpoint`: the MDP forwarder to `triggerd-broker`
//! (`tcp://`, `ipc://`), or the JetStream forwarder (`nats://`, `tls://`). Both take the same
//! spool records and report the same counters.

use std::time::Duration;

use triggerd_nats::NatsForwarder;
use triggerd_remote::replies::ReplyHook;
use triggerd_remote::{Forwarder, ForwarderOptions, ForwarderStats, Spool};

use super::{nats, Credentials};
use crate::config::BrokerSettings;

pub enum Drain {
    Broker(Forwarder),
    Nats(NatsForwarder),
}

impl Drain {
    /// Starts draining `spool` to where `[broker]` says.
    pub fn start(
        broker: &BrokerSettings,
        credentials: &Credentials,
        spool: Spool,
    ) -> Result<Drain, String> {
        if nats::is_nats(broker) {
            return Ok(Drain::Nats(nats::forwarder(broker, credentials, spool)?));
        }
        let mut options = ForwarderOptions::new(&broker.endpoint);
        options.client = credentials.client_options();
        options.request_timeout = broker.timeout;
        options.retry_after = broker.timeout + Duration::from_secs(1);
        options.window = broker.window;
        Forwarder::start(spool, options)
            .map(Drain::Broker)
            .map_err(|e| format!("[broker] forwarder: {e}"))
    }

    /// Spools one event; returns its sequence number. `hook` gets its answer (MDP only:
    /// JetStream replies are not taken back, and the hook is dropped).
    pub fn submit(
        &self,
        service: &str,
        plugin: &str,
        payload: &[u8],
        hook: Option<ReplyHook>,
    ) -> Result<u64, String> {
        match self {
            Drain::Broker(f) => f.submit_hooked(service, plugin, payload, hook),
            Drain::Nats(f) => f.submit(service, plugin, payload),
        }
        .map_err(|e| e.to_string())
    }

    pub fn stats(&self) -> ForwarderStats {
        match self {
            Drain::Broker(f) => f.stats(),
            Drain::Nats(f) => f.stats(),
        }
    }

    /// Stops; undelivered events stay in the spool.
    pub fn stop(self) -> Result<(), String> {
        match self {
            Drain::Broker(f) => f.stop().map_err(|e| e.to_string()),
            Drain::Nats(f) => f.stop().map_err(|e| e.to_string()),
        }
    }
}
