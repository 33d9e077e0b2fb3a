//! A service's JetStream side: its stream (work-queue retention for `roundrobin` and
//! `serial`, interest retention for `mirror`) and its settings, kept in the stream's own
//! description (`triggerd algorithm=serial max_deliver=5 ack_wait_ms=5000 timeout_ms=30000`,
//! the timeout only when set) so every worker
//! and sender reads the same ones from the cluster. Whoever first needs a service's stream
//! creates it with the defaults; [`set`] (`triggerctl nats service set`) changes them.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::{wire, NatsError};

/// The MDP broker's algorithms, with the same words: roundrobin (workers share one durable
/// consumer), serial (that consumer with one request in flight), mirror (a consumer each).
pub use triggerd_remote::broker::Algorithm;

/// Parses `roundrobin`, `serial` or `mirror`.
pub fn parse_algorithm(word: &str) -> Option<Algorithm> {
    word.parse().ok()
}

fn retention(algorithm: Algorithm) -> stream::RetentionPolicy {
    match algorithm {
        Algorithm::Mirror => stream::RetentionPolicy::Interest,
        _ => stream::RetentionPolicy::WorkQueue,
    }
}

/// A service's settings, stored with its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceConfig {
    /// How requests reach workers: `mirror` makes the stream interest-based (every worker's
    /// consumer gets every request), the others a work queue (each request to one worker).
    pub algorithm: Algorithm,
    /// Copies of the stream in the cluster (1, 3 or 5 are usual).
    pub replicas: usize,
    /// Deliveries before a request goes to the dead-letter subject instead of a plugin.
    pub max_deliver: u32,
    /// Silence (no ack, no in-progress ack) after which a request is given to another worker.
    pub ack_wait: Duration,
    /// The plugin's time limit for this service (a request's own shorter one wins).
    pub timeout: Option<Duration>,
}

impl Default for ServiceConfig {
    /// roundrobin, one replica, 5 deliveries, 5 s ack wait.
    fn default() -> Self {
        ServiceConfig {
            algorithm: Algorithm::Roundrobin,
            replicas: 1,
            max_deliver: 5,
            ack_wait: Duration::from_secs(5),
            timeout: None,
        }
    }
}

/// How long a stream remembers message ids (a resend within it is dropped by the server).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);
/// Largest request the stream accepts.
const MAX_MESSAGE: i32 = 1024 * 1024;
/// The description prefix that marks a stream as triggerd's.
const MARK: &str = "triggerd";

impl ServiceConfig {
    fn describe(&self) -> String {
        let mut text = format!(
            "{MARK} algorithm={} max_deliver={} ack_wait_ms={}",
            self.algorithm.as_str(),
            self.max_deliver,
            self.ack_wait.as_millis()
        );
        if let Some(t) = self.timeout {
            text.push_str(&format!(" timeout_ms={}", t.as_millis()));
        }
        text
    }

    /// Reads the settings from a stream's configuration (unknown or missing words keep their
    /// defaults; the retention policy decides `mirror`).
    pub fn from_stream(config: &stream::Config) -> ServiceConfig {
        let mut out = ServiceConfig {
            replicas: config.num_replicas.max(1),
            ..ServiceConfig::default()
        };
        for word in config
            .description
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
        {
            match word.split_once('=') {
                Some(("algorithm", a)) => {
                    out.algorithm = parse_algorithm(a).unwrap_or_default();
                }
                Some(("max_deliver", n)) => {
                    out.max_deliver = n.parse().unwrap_or(out.max_deliver).max(1);
                }
                Some(("timeout_ms", n)) => {
                    out.timeout = n
                        .parse::<u64>()
                        .ok()
                        .filter(|&ms| ms > 0)
                        .map(Duration::from_millis);
                }
                Some(("ack_wait_ms", n)) => {
                    if let Ok(ms) = n.parse::<u64>() {
                        out.ack_wait = Duration::from_millis(ms.max(100));
                    }
                }
                _ => {}
            }
        }
        if config.retention == stream::RetentionPolicy::Interest {
            out.algorithm = Algorithm::Mirror;
        } else if out.algorithm == Algorithm::Mirror {
            out.algorithm = Algorithm::Roundrobin;
        }
        out
    }

    fn stream_config(&self, service: &str) -> Result<stream::Config, NatsError> {
        Ok(stream::Config {
            name: wire::stream_name(service)?,
            description: Some(self.describe()),
            subjects: vec![wire::request_subject(service)?],
            retention: retention(self.algorithm),
            storage: stream::StorageType::File,
            num_replicas: self.replicas.max(1),
            duplicate_window: DUPLICATE_WINDOW,
            max_message_size: MAX_MESSAGE,
            ..Default::default()
        })
    }

    /// The consumer a worker named `worker` pulls from (shared unless `mirror`).
    pub fn consumer_config(&self, worker: &str) -> Result<consumer::pull::Config, NatsError> {
        let name = match self.algorithm {
            Algorithm::Mirror => format!("mirror-{}", wire::escape(worker)?),
            _ => "workers".to_string(),
        };
        Ok(consumer::pull::Config {
            durable_name: Some(name),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            // Workers count deliveries themselves and dead-letter past max_deliver, so the
            // server never strands a request in the stream.
            max_deliver: -1,
            max_ack_pending: match self.algorithm {
                Algorithm::Serial => 1,
                _ => 65_536,
            },
            ..Default::default()
        })
    }
}

/// The service's stream and settings, creating the stream with the defaults when missing.
pub async fn ensure(
    js: &jetstream::Context,
    service: &str,
) -> Result<(stream::Stream, ServiceConfig), NatsError> {
    let name = wire::stream_name(service)?;
    let stream = match js.get_stream(&name).await {
        Ok(s) => s,
        Err(_) => js
            .get_or_create_stream(ServiceConfig::default().stream_config(service)?)
            .await
            .map_err(NatsError::js)?,
    };
    // Fetched with the stream just now: no second request.
    let config = ServiceConfig::from_stream(&stream.cached_info().config);
    Ok((stream, config))
}

/// Sets a service's settings: creates its stream or updates it. Switching between `mirror`
/// and the others changes the stream's retention, which JetStream cannot do in place: the
/// stream is then deleted and created anew (requests waiting in it are lost, as said).
pub async fn set(
    js: &jetstream::Context,
    service: &str,
    config: &ServiceConfig,
) -> Result<(), NatsError> {
    let wanted = config.stream_config(service)?;
    if let Ok(mut stream) = js.get_stream(&wanted.name).await {
        let current = stream.info().await.map_err(NatsError::js)?.config.clone();
        if current.retention != wanted.retention {
            js.delete_stream(&wanted.name)
                .await
                .map_err(NatsError::js)?;
        } else {
            js.update_stream(&wanted).await.map_err(NatsError::js)?;
            // The shared consumer's in-flight limit follows the algorithm; workers re-create it.
            let _ = stream.delete_consumer("workers").await;
            return Ok(());
        }
    }
    js.create_stream(wanted).await.map_err(NatsError::js)?;
    Ok(())
}

/// Connects and changes a service's settings (`triggerctl service`), within `limit`:
/// `change` gets the current ones (the defaults for a new service); returns the new ones.
pub async fn configure(
    options: &crate::NatsOptions,
    service: &str,
    change: impl FnOnce(&mut ServiceConfig),
    limit: Duration,
) -> Result<ServiceConfig, NatsError> {
    let work = async {
        let client = crate::connect(options).await?;
        let js = jetstream::new(client);
        let mut config = match js.get_stream(wire::stream_name(service)?).await {
            Ok(mut stream) => {
                ServiceConfig::from_stream(&stream.info().await.map_err(NatsError::js)?.config)
            }
            Err(_) => ServiceConfig::default(),
        };
        change(&mut config);
        set(&js, service, &config).await?;
        Ok(config)
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| NatsError::Timeout(limit))?
}

/// The stream dead letters are kept in (limits retention, a week).
pub async fn ensure_dead_letters(js: &jetstream::Context) -> Result<(), NatsError> {
    js.get_or_create_stream(stream::Config {
        name: wire::DEAD_STREAM.to_string(),
        subjects: vec![format!("{}>", wire::DEAD_PREFIX)],
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(7 * 24 * 3600),
        ..Default::default()
    })
    .await
    .map_err(NatsError::js)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_the_stream_config() {
        let config = ServiceConfig {
            algorithm: Algorithm::Serial,
            replicas: 3,
            max_deliver: 2,
            ack_wait: Duration::from_millis(1500),
            timeout: Some(Duration::from_secs(7)),
        };
        let stream = config.stream_config("jobs").expect("config");
        assert_eq!(stream.retention, stream::RetentionPolicy::WorkQueue);
        assert_eq!(ServiceConfig::from_stream(&stream), config);
        let mirror = ServiceConfig {
            algorithm: Algorithm::Mirror,
            ..config
        };
        let stream = mirror.stream_config("jobs").expect("config");
        assert_eq!(
            ServiceConfig::from_stream(&stream).algorithm,
            Algorithm::Mirror
        );
        assert_eq!(
            mirror
                .consumer_config("web.01")
                .expect("c")
                .durable_name
                .as_deref(),
            Some("mirror-web_2E01")
        );
        assert_eq!(config.consumer_config("x").expect("c").max_ack_pending, 1);
    }
}
