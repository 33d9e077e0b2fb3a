//! One request to a service over JetStream, as `triggerctl send` makes it: published with a
//! fresh id and an inbox as reply subject; output lines are handed over as they arrive, and
//! the call returns with the final replies: one, or for a `mirror` service one per worker
//! consumer (as many as the stream has when the request is made).

use std::time::Duration;

use async_nats::jetstream::{self, context::Publish};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::service::{self, Algorithm};
use crate::{wire, NatsError};

/// One worker's final reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Final {
    /// The worker that ran the request.
    pub worker: String,
    /// Exit status, 0 for success.
    pub status: i32,
    /// The answer (echo) on success, the reason on failure.
    pub body: Vec<u8>,
}

/// Sends `payload` to `service` and waits up to `timeout` for its final reply (every
/// worker's, for `mirror`); `partial(worker, line)` gets each output line as it comes.
/// Returns the finals that came; [`NatsError::Timeout`] when none did.
pub async fn request(
    client: &async_nats::Client,
    service: &str,
    plugin: &str,
    payload: &[u8],
    timeout: Duration,
    mut partial: impl FnMut(&str, &[u8]),
) -> Result<Vec<Final>, NatsError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let js = jetstream::new(client.clone());
    let (mut stream, config) = tokio::time::timeout_at(deadline, service::ensure(&js, service))
        .await
        .map_err(|_| NatsError::Timeout(timeout))??;
    let expected = if config.algorithm == Algorithm::Mirror {
        let info = tokio::time::timeout_at(deadline, stream.info())
            .await
            .map_err(|_| NatsError::Timeout(timeout))?;
        info.map_err(NatsError::js)?.state.consumer_count.max(1)
    } else {
        1
    };
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(NatsError::js)?;
    let mut message = Publish::build()
        .payload(Bytes::copy_from_slice(payload))
        .message_id(wire::format_id(rand::random::<u128>()))
        .header(wire::REPLY, inbox.as_str())
        .header(wire::TIMEOUT_MS, timeout.as_millis().to_string().as_str());
    if !plugin.is_empty() {
        message = message.header(wire::PLUGIN, plugin);
    }
    let ack = js
        .send_publish(wire::request_subject(service)?, message)
        .await
        .map_err(NatsError::js)?;
    tokio::time::timeout_at(deadline, ack)
        .await
        .map_err(|_| NatsError::Timeout(timeout))?
        .map_err(NatsError::js)?;
    let mut finals = Vec::new();
    while finals.len() < expected {
        let Ok(Some(reply)) = tokio::time::timeout_at(deadline, replies.next()).await else {
            break;
        };
        let headers = reply.headers.as_ref();
        let worker = wire::header(headers, wire::WORKER)
            .unwrap_or("")
            .to_string();
        if wire::header(headers, wire::KIND) == Some("final") {
            let status = wire::header(headers, wire::STATUS)
                .and_then(|s| s.parse().ok())
                .unwrap_or(STATUS_GARBLED);
            finals.push(Final {
                worker,
                status,
                body: reply.payload.to_vec(),
            });
        } else {
            partial(&worker, &reply.payload);
        }
    }
    if finals.is_empty() {
        return Err(NatsError::Timeout(timeout));
    }
    Ok(finals)
}

/// Status reported for a final reply whose status header is missing or not a number.
const STATUS_GARBLED: i32 = 70;
