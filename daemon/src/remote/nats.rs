//! The daemon's roles on a `nats://` `[broker] endpoint`: the spool drains into JetStream
//! (`triggerd_nats::NatsForwarder`) and `[[service]]` workers pull from it
//! (`triggerd_nats::NatsWorker`), with the same plugins. The connection's name, which also
//! names a worker's `mirror` consumer, is `[broker] identity`, or the host name plus a hash of
//! the spool directory so that two daemons on one host stay apart.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use triggerd_nats::forwarder::NatsForwarderOptions;
use triggerd_nats::{NatsForwarder, NatsOptions, NatsWorker, NatsWorkerStats};
use triggerd_remote::{Spool, Worker};

use super::Credentials;
use crate::config::BrokerSettings;

/// A worker's loop, run on its own thread until the flag is set.
pub type Run = Box<dyn FnOnce(&AtomicBool) -> Result<(), String> + Send>;

pub fn is_nats(broker: &BrokerSettings) -> bool {
    triggerd_nats::is_nats(&broker.endpoint)
}

/// Servers, name and credentials of `[broker]` (user/password: `identity` and `token`).
pub fn options(broker: &BrokerSettings, credentials: &Credentials) -> NatsOptions {
    let user_password = credentials.user_password();
    let name = user_password
        .as_ref()
        .map(|(user, _)| user.clone())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "triggerd".into());
            // FNV-1a: stable across builds, unlike the std hasher.
            let hash = broker
                .spool
                .as_os_str()
                .as_encoded_bytes()
                .iter()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                });
            format!("{host}-{:08x}", hash as u32)
        });
    NatsOptions {
        servers: triggerd_nats::servers(&broker.endpoint).unwrap_or_default(),
        name,
        user_password,
        creds: broker.creds.clone(),
        nkey: broker.nkey.clone(),
        tls_ca: broker.tls_ca.clone(),
    }
}

/// Starts draining the spool into JetStream.
pub fn forwarder(
    broker: &BrokerSettings,
    credentials: &Credentials,
    spool: Spool,
) -> Result<NatsForwarder, String> {
    let options = NatsForwarderOptions {
        nats: options(broker, credentials),
        window: broker.window,
        ack_timeout: broker.timeout,
    };
    NatsForwarder::start(spool, options).map_err(|e| format!("[broker] forwarder: {e}"))
}

/// The loop serving `worker`'s service: over JetStream for a `nats://` endpoint (with its
/// dead-letter counter), else the MDP worker's own.
pub fn runner(
    broker: &BrokerSettings,
    credentials: &Credentials,
    worker: Worker,
) -> Result<(Run, Option<Arc<NatsWorkerStats>>), String> {
    if !is_nats(broker) {
        let run: Run = Box::new(move |stop| worker.run(stop).map_err(|e| e.to_string()));
        return Ok((run, None));
    }
    let worker = NatsWorker::new(worker, options(broker, credentials));
    let stats = worker.stats();
    let run: Run = Box::new(move |stop| worker.run(stop).map_err(|e| e.to_string()));
    Ok((run, Some(stats)))
}

/// `triggerctl send` over JetStream: lines printed as they stream in, then each final body;
/// the exit code is the highest final status (124 without any answer).
pub fn send(
    request: &super::send::SendRequest,
    endpoint: &str,
    credentials: &Credentials,
    broker: Option<&BrokerSettings>,
) -> u8 {
    let nats = match broker {
        Some(broker) => options(broker, credentials),
        None => NatsOptions {
            servers: triggerd_nats::servers(endpoint).unwrap_or_default(),
            name: "triggerctl".into(),
            user_password: credentials.user_password(),
            ..NatsOptions::default()
        },
    };
    let Ok(runtime) = triggerd_nats::runtime() else {
        eprintln!("triggerctl: cannot start a runtime");
        return 1;
    };
    let output = super::send::Output { json: request.json };
    let outcome = runtime.block_on(async {
        let client = triggerd_nats::connect(&nats).await?;
        triggerd_nats::request(
            &client,
            &request.service,
            request.plugin.as_deref().unwrap_or(""),
            &request.payload,
            request.timeout,
            |_, line| output.lines(&[line.to_vec()], false),
        )
        .await
    });
    match outcome {
        Ok(finals) => {
            let mut code = 0u8;
            for f in &finals {
                if !f.body.is_empty() {
                    output.lines(std::slice::from_ref(&f.body), f.status != 0);
                }
                code = code.max(u8::try_from(f.status).unwrap_or(1));
            }
            output.status(code)
        }
        Err(triggerd_nats::NatsError::Timeout(t)) => {
            eprintln!(
                "triggerctl: no answer from {endpoint} for `{}` within {}",
                request.service,
                humantime::format_duration(t)
            );
            super::send::EXIT_NO_REPLY
        }
        Err(e) => {
            eprintln!("triggerctl: {endpoint}: {e}");
            1
        }
    }
}

/// What `triggerctl service` changes (`None`: keep).
#[derive(Debug, Clone, Default)]
pub struct ServiceChange {
    pub algorithm: Option<triggerd_nats::Algorithm>,
    pub replicas: Option<usize>,
    pub max_deliver: Option<u32>,
    pub ack_wait: Option<std::time::Duration>,
    /// `Some(0)` clears the service's limit.
    pub timeout: Option<std::time::Duration>,
}

/// `triggerctl service NAME [...]`: applies the change and prints the settings.
pub fn service(
    name: &str,
    change: &ServiceChange,
    config: &std::path::Path,
    endpoint: Option<String>,
    json: bool,
) -> u8 {
    let nats = match endpoint {
        Some(endpoint) => NatsOptions {
            servers: triggerd_nats::servers(&endpoint).unwrap_or_default(),
            name: "triggerctl".into(),
            ..NatsOptions::default()
        },
        None => {
            let loaded = crate::config::load(config).map_err(|e| e.to_string());
            let broker = loaded.and_then(|c| {
                c.broker
                    .filter(is_nats)
                    .ok_or_else(|| format!("{}: no nats:// [broker] endpoint", config.display()))
            });
            match broker.and_then(|b| Ok((Credentials::load(&b)?, b))) {
                Ok((credentials, broker)) => options(&broker, &credentials),
                Err(e) => {
                    eprintln!("triggerctl: {e}");
                    return 2;
                }
            }
        }
    };
    if nats.servers.is_empty() {
        eprintln!("triggerctl: not a list of nats:// servers");
        return 2;
    }
    let Ok(runtime) = triggerd_nats::runtime() else {
        eprintln!("triggerctl: cannot start a runtime");
        return 1;
    };
    let apply = |c: &mut triggerd_nats::ServiceConfig| {
        c.algorithm = change.algorithm.unwrap_or(c.algorithm);
        c.replicas = change.replicas.unwrap_or(c.replicas).max(1);
        c.max_deliver = change.max_deliver.unwrap_or(c.max_deliver).max(1);
        c.ack_wait = change.ack_wait.unwrap_or(c.ack_wait);
        if let Some(t) = change.timeout {
            c.timeout = (!t.is_zero()).then_some(t);
        }
    };
    let limit = std::time::Duration::from_secs(10);
    match runtime.block_on(triggerd_nats::service::configure(&nats, name, apply, limit)) {
        Ok(c) => {
            if json {
                let settings = serde_json::json!({
                    "service": name,
                    "algorithm": c.algorithm.as_str(),
                    "replicas": c.replicas,
                    "max_deliver": c.max_deliver,
                    "ack_wait_ms": c.ack_wait.as_millis() as u64,
                    "timeout_ms": c.timeout.map(|t| t.as_millis() as u64),
                });
                println!("{settings}");
                return 0;
            }
            let timeout = c.timeout.map_or("none".to_string(), |t| {
                humantime::format_duration(t).to_string()
            });
            println!(
                "service {name}: {}, {} replicas, max_deliver {}, ack_wait {}, timeout {timeout}",
                c.algorithm.as_str(),
                c.replicas,
                c.max_deliver,
                humantime::format_duration(c.ack_wait)
            );
            0
        }
        Err(e) => {
            eprintln!("triggerctl: service {name}: {e}");
            1
        }
    }
}
