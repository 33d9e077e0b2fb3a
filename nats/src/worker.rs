//! The worker role on JetStream: pulls a service's requests from its durable consumer (the
//! shared `workers` one, or the worker's own for `mirror`), runs them with the same plugins
//! as an MDP worker, streams output lines and the final status to the request's reply
//! subject, sends in-progress acks while a plugin runs and acks only after it finished, so a
//! worker that dies holding a request has it redelivered to another after the ack wait.
//! A request delivered more than the service's `max_deliver` times is moved to the
//! dead-letter subject instead of being run again. Requests whose id this worker ran lately
//! are acked without running again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::task::JoinSet;
use triggerd_remote::worker::plugins::STATUS_PLUGIN_FAILED;
use triggerd_remote::worker::{
    Dedup, Outcome, Plugin, PluginRequest, DEFAULT_PLUGIN_TIMEOUT, STATUS_NO_PLUGIN,
};
use triggerd_remote::Worker;

use crate::service::{self, ServiceConfig};
use crate::{connect, runtime, wire, NatsError, NatsOptions};

/// Counters a JetStream worker adds to the MDP worker's.
#[derive(Debug, Default)]
pub struct NatsWorkerStats {
    /// Requests moved to the dead-letter subject after `max_deliver` deliveries.
    pub dead_letters: AtomicU64,
    /// Requests whose reply subject was not a valid one (run, but not answered).
    pub bad_replies: AtomicU64,
    /// Requests found past their sender's time limit, dropped unrun.
    pub expired: AtomicU64,
}

/// Serves one service from JetStream with a [`Worker`]'s plugins and options.
pub struct NatsWorker {
    worker: Arc<Worker>,
    nats: NatsOptions,
    stats: Arc<NatsWorkerStats>,
}

/// What every request task shares.
struct Context {
    worker: Arc<Worker>,
    /// This worker's name in replies (`Triggerd-Worker`).
    name: String,
    client: async_nats::Client,
    js: jetstream::Context,
    config: ServiceConfig,
    dedup: Arc<Mutex<Dedup>>,
    stats: Arc<NatsWorkerStats>,
}

impl NatsWorker {
    /// A worker named `nats.name` (its mirror consumer is named after it).
    pub fn new(worker: Worker, nats: NatsOptions) -> NatsWorker {
        NatsWorker {
            worker: Arc::new(worker),
            nats,
            stats: Arc::default(),
        }
    }

    /// The JetStream counters (the plugin counters are the [`Worker`]'s).
    pub fn stats(&self) -> Arc<NatsWorkerStats> {
        Arc::clone(&self.stats)
    }

    /// Serves until `shutdown` becomes true. Requests still running then are left unacked:
    /// the servers give them to another worker after the ack wait.
    pub fn run(&self, shutdown: &AtomicBool) -> Result<(), NatsError> {
        let rt = runtime()?;
        let result = rt.block_on(self.serve(shutdown));
        // Plugins still running on blocking threads are not waited for.
        rt.shutdown_background();
        result
    }

    async fn serve(&self, shutdown: &AtomicBool) -> Result<(), NatsError> {
        let client = connect(&self.nats).await?;
        let js = jetstream::new(client.clone());
        let dedup = Arc::new(Mutex::new(Dedup::default()));
        let service = self.worker.options().service.clone();
        let mut backoff = Duration::from_millis(100);
        while !shutdown.load(Ordering::Relaxed) {
            let setup = async {
                let (stream, config) = service::ensure(&js, &service).await?;
                service::ensure_dead_letters(&js).await?;
                let wanted = config.consumer_config(&self.nats.name)?;
                let name = wanted.durable_name.clone().unwrap_or_default();
                let consumer: PullConsumer = match stream.create_consumer(wanted).await {
                    Ok(c) => c,
                    Err(_) => stream.get_consumer(&name).await.map_err(NatsError::js)?,
                };
                Ok::<_, NatsError>((consumer, config))
            };
            let (consumer, config) = match setup.await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(service = %service, "nats worker: {e}; retrying in {backoff:?}");
                    sleep_unless(shutdown, backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            // Counted once the consumer is there: from now on this worker pulls requests.
            self.worker
                .stats()
                .connections
                .fetch_add(1, Ordering::Relaxed);
            let context = Arc::new(Context {
                worker: Arc::clone(&self.worker),
                name: self.nats.name.clone(),
                client: client.clone(),
                js: js.clone(),
                config,
                dedup: Arc::clone(&dedup),
                stats: Arc::clone(&self.stats),
            });
            if let Err(e) = pull(&context, &consumer, shutdown).await {
                tracing::warn!(service = %service, "nats worker: {e}; setting up again");
                sleep_unless(shutdown, Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }
}

async fn sleep_unless(shutdown: &AtomicBool, total: Duration) {
    let until = tokio::time::Instant::now() + total;
    while !shutdown.load(Ordering::Relaxed) && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fetches as many requests as there are free slots (the worker's capacity) and runs them.
async fn pull(
    context: &Arc<Context>,
    consumer: &PullConsumer,
    shutdown: &AtomicBool,
) -> Result<(), NatsError> {
    let capacity = context.worker.options().capacity.max(1) as usize;
    let mut tasks = JoinSet::new();
    while !shutdown.load(Ordering::Relaxed) {
        while tasks.try_join_next().is_some() {}
        let free = capacity.saturating_sub(tasks.len());
        if free == 0 {
            let _ = tokio::time::timeout(Duration::from_millis(100), tasks.join_next()).await;
            continue;
        }
        let mut batch = consumer
            .batch()
            .max_messages(free)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(NatsError::js)?;
        while let Some(message) = batch.next().await {
            let message = message.map_err(NatsError::js)?;
            tasks.spawn(handle(Arc::clone(context), message));
        }
    }
    tasks.abort_all();
    Ok(())
}

/// Runs one request and acknowledges it.
async fn handle(context: Arc<Context>, message: jetstream::Message) {
    let headers = message.headers.as_ref();
    let reply_to = wire::header(headers, wire::REPLY).map(str::to_string);
    let reply_to = match reply_to {
        Some(to) if !wire::valid_reply(&to) => {
            context.stats.bad_replies.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("nats worker: request with an invalid reply subject; no replies");
            None
        }
        to => to,
    };
    let id_text = wire::header(headers, wire::MSG_ID)
        .unwrap_or("")
        .to_string();
    let id = wire::parse_id(&id_text);
    let reply = Replier {
        client: &context.client,
        to: reply_to.as_deref(),
        id: &id_text,
        worker: &context.name,
    };
    let delivered = message.info().map_or(1, |i| i.delivered);
    let limit = request_limit(headers);
    if let (Some(limit), Ok(info)) = (limit, message.info()) {
        // A request whose sender stopped waiting (a `triggerctl send` that timed out while
        // nobody served the service) is not run late. Spooled events carry no limit.
        let age_ns = now_ns() - info.published.unix_timestamp_nanos();
        if age_ns > limit.as_nanos() as i128 {
            context.stats.expired.fetch_add(1, Ordering::Relaxed);
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    }
    if delivered > i64::from(context.config.max_deliver) {
        dead_letter(&context, &message, delivered, &reply).await;
        return;
    }
    let first = context
        .dedup
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .first_time(id);
    if !first {
        context
            .worker
            .stats()
            .duplicates
            .fetch_add(1, Ordering::Relaxed);
        reply.last(0, &[]).await;
        let _ = message.double_ack().await;
        return;
    }
    let field = wire::header(headers, wire::PLUGIN).unwrap_or("");
    let (plugin_name, hops) = triggerd_remote::ext::split_hops(field);
    let Some(plugin) = context.worker.resolve(plugin_name) else {
        let text = format!("no plugin {plugin_name:?} here").into_bytes();
        reply.last(STATUS_NO_PLUGIN, &[text]).await;
        let _ = message.double_ack().await;
        return;
    };
    context
        .worker
        .stats()
        .served
        .fetch_add(1, Ordering::Relaxed);
    let request = PluginRequest {
        id,
        service: context.worker.options().service.clone(),
        payload: message.payload.to_vec(),
        timeout: plugin_timeout(limit, context.config.timeout),
        hops,
    };
    let outcome = if plugin.inline() {
        // Quick and never blocking (echo): run here, its lines sent after it.
        let mut lines = Vec::new();
        let outcome = plugin.call(&request, &mut |line| lines.push(line));
        for line in lines {
            reply.partial(line).await;
        }
        outcome
    } else {
        run_blocking(plugin, request, &message, &reply, context.config.ack_wait).await
    };
    reply.last(outcome.status, &outcome.body).await;
    if let Err(e) = message.double_ack().await {
        // The servers will deliver it again; this worker's de-duplication answers that.
        tracing::warn!(id = %id_text, "nats worker: ack not confirmed: {e}");
    }
}

/// The request's own time limit (`Triggerd-Timeout-Ms`), if it has one.
fn request_limit(headers: Option<&HeaderMap>) -> Option<Duration> {
    wire::header(headers, wire::TIMEOUT_MS)
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// The shorter of the request's and the service's limits (30 s when neither has one).
fn plugin_timeout(request: Option<Duration>, service: Option<Duration>) -> Duration {
    match (request, service) {
        (Some(r), Some(s)) => r.min(s),
        (r, s) => r.or(s).unwrap_or(DEFAULT_PLUGIN_TIMEOUT),
    }
}

/// Runs a plugin on a blocking thread, streaming its lines as they come and sending an
/// in-progress ack every third of the ack wait until it is done.
async fn run_blocking(
    plugin: Arc<dyn Plugin>,
    request: PluginRequest,
    message: &jetstream::Message,
    reply: &Replier<'_>,
    ack_wait: Duration,
) -> Outcome {
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let mut run = tokio::task::spawn_blocking(move || {
        plugin.call(&request, &mut |line| {
            let _ = lines_tx.send(line);
        })
    });
    let mut progress = tokio::time::interval(ack_wait / 3);
    progress.tick().await;
    let outcome = loop {
        tokio::select! {
            done = &mut run => break done.unwrap_or_else(|e| Outcome::failed(format!("plugin panicked: {e}"))),
            Some(line) = lines.recv() => reply.partial(line).await,
            _ = progress.tick() => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    };
    while let Ok(line) = lines.try_recv() {
        reply.partial(line).await;
    }
    outcome
}

/// Moves a request past its `max_deliver` to the dead-letter subject, then ends its delivery.
async fn dead_letter(
    context: &Context,
    message: &jetstream::Message,
    delivered: i64,
    reply: &Replier<'_>,
) {
    let service = &context.worker.options().service;
    let Ok(subject) = wire::dead_subject(service) else {
        return;
    };
    let mut headers = message.headers.clone().unwrap_or_default();
    headers.insert("Triggerd-Deliveries", delivered.to_string().as_str());
    let stored = match context
        .js
        .publish_with_headers(subject, headers, message.payload.clone())
        .await
    {
        Ok(ack) => ack.await.map(|_| ()).map_err(NatsError::js),
        Err(e) => Err(NatsError::js(e)),
    };
    if let Err(e) = stored {
        tracing::warn!(service = %service, "nats worker: dead letter not stored: {e}");
        let _ = message
            .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
            .await;
        return;
    }
    context.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(service = %service, delivered, "request moved to the dead-letter subject");
    let text = format!("given up after {delivered} deliveries (moved to the dead-letter subject)");
    reply.last(STATUS_PLUGIN_FAILED, &[text.into_bytes()]).await;
    let _ = message.ack_with(AckKind::Term).await;
}

/// Publishes replies to the request's reply subject (nothing when it has none).
struct Replier<'a> {
    client: &'a async_nats::Client,
    to: Option<&'a str>,
    id: &'a str,
    worker: &'a str,
}

impl Replier<'_> {
    fn headers(&self, kind: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(wire::KIND, kind);
        headers.insert(wire::ID, self.id);
        headers.insert(wire::WORKER, self.worker);
        headers
    }

    async fn partial(&self, line: Vec<u8>) {
        if let Some(to) = self.to {
            let headers = self.headers("partial");
            let _ = self
                .client
                .publish_with_headers(to.to_string(), headers, Bytes::from(line))
                .await;
        }
    }

    async fn last(&self, status: i32, body: &[Vec<u8>]) {
        if let Some(to) = self.to {
            let mut headers = self.headers("final");
            headers.insert(wire::STATUS, status.to_string().as_str());
            let _ = self
                .client
                .publish_with_headers(to.to_string(), headers, Bytes::from(body.join(&b'\n')))
                .await;
            let _ = self.client.flush().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shorter_limit_wins() {
        let s = Duration::from_secs;
        assert_eq!(plugin_timeout(None, None), DEFAULT_PLUGIN_TIMEOUT);
        assert_eq!(plugin_timeout(Some(s(5)), None), s(5));
        assert_eq!(plugin_timeout(None, Some(s(9))), s(9));
        assert_eq!(plugin_timeout(Some(s(50)), Some(s(9))), s(9));
    }
}
