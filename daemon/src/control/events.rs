//! A control connection turned into the live feed (`triggerctl events`): one `Reply` line
//! (`done` or the error), then one JSON record per line. Before a record, and at least once
//! a second, the reader is told how many records it missed (`{"type":"dropped","count":N}`).
//! The connection ends when the reader closes it, or when it takes nothing for [`STALL`]
//! (its slot goes to another reader); the dispatcher never waits for it either way.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;

use super::Reply;
use crate::dispatch::feed::{Record, SubscribeError, Subscription};

/// A reader whose socket takes no line for this long is disconnected.
pub const STALL: Duration = Duration::from_secs(60);
/// How often missed records are reported while no record comes.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Streams `subscription` to `write` until either side ends.
pub(super) async fn stream(
    subscription: Result<Subscription, SubscribeError>,
    mut read: impl AsyncRead + Unpin,
    mut write: OwnedWriteHalf,
) {
    let mut subscription = match subscription {
        Ok(s) => s,
        Err(e) => {
            let _ = send(&mut write, &Reply::Error(e.to_string())).await;
            return;
        }
    };
    if !send(&mut write, &Reply::Done("events".into())).await {
        return;
    }
    let mut report = tokio::time::interval(REPORT_EVERY);
    let mut sink = [0u8; 256];
    loop {
        let record = tokio::select! {
            r = subscription.records.recv() => match r {
                Some(record) => Some(record),
                None => return,
            },
            _ = report.tick() => None,
            // The reader sends nothing more: EOF or an error means it is gone.
            n = read.read(&mut sink) => match n {
                Ok(n) if n > 0 => continue,
                _ => return,
            },
        };
        let count = subscription.take_dropped();
        if count > 0 && !send(&mut write, &Record::Dropped { count }).await {
            return;
        }
        if let Some(record) = record {
            if !send(&mut write, record.as_ref()).await {
                return;
            }
        }
    }
}

/// Writes one JSON line; false when the reader is gone or stalled past [`STALL`].
async fn send(write: &mut OwnedWriteHalf, value: &impl serde::Serialize) -> bool {
    let Ok(mut text) = serde_json::to_string(value) else {
        return false;
    };
    text.push('\n');
    matches!(
        tokio::time::timeout(STALL, write.write_all(text.as_bytes())).await,
        Ok(Ok(()))
    )
}

/// Client side (`triggerctl events`): asks for the feed and writes each record to `out`, as
/// its JSON line with `json`, else as one line for people cut to `width` columns (when
/// known); stops after `count` records when set. Returns how many were written.
pub async fn follow(
    path: &std::path::Path,
    rule: Option<String>,
    json: bool,
    count: Option<u64>,
    width: Option<usize>,
    out: &mut impl std::io::Write,
) -> std::io::Result<u64> {
    use tokio::io::AsyncBufReadExt;
    let stream = tokio::net::UnixStream::connect(path).await?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(&super::Request::Events { rule })?;
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    let mut lines = tokio::io::BufReader::new(read).lines();
    let first = lines.next_line().await?.unwrap_or_default();
    match serde_json::from_str::<Reply>(&first).map_err(std::io::Error::other)? {
        Reply::Done(_) => {}
        Reply::Error(e) => return Err(std::io::Error::other(e)),
        other => return Err(std::io::Error::other(format!("unexpected {other:?}"))),
    }
    let mut written = 0;
    while count.is_none_or(|c| written < c) {
        let Some(line) = lines.next_line().await? else {
            break;
        };
        if json {
            writeln!(out, "{line}")?;
        } else {
            let record: Record = serde_json::from_str(&line).map_err(std::io::Error::other)?;
            let text = human(&record);
            let text = match width {
                Some(w) => triggerd_cli::terminal::fit(&text, w),
                None => text,
            };
            writeln!(out, "{text}")?;
        }
        out.flush()?;
        written += 1;
    }
    Ok(written)
}

/// One record for people: `TIME  event  RULE  SOURCE  SUBJECT` or
/// `TIME  run    RULE  OUTCOME  DURATION  SUBJECT`.
fn human(record: &Record) -> String {
    let clock = |t: f64| {
        chrono::DateTime::from_timestamp_millis((t * 1e3) as i64)
            .map_or_else(|| "-".to_string(), |t| t.format("%H:%M:%S%.3f").to_string())
    };
    match record {
        Record::Event {
            rule,
            id,
            source,
            subject,
            time,
        } => format!(
            "{}  event  {rule}  #{id} {source}  {subject:?}",
            clock(*time)
        ),
        Record::Run {
            rule,
            id,
            subject,
            outcome,
            duration_ms,
            attempt,
            time,
            ..
        } => {
            let retry = match attempt {
                0 => String::new(),
                n => format!(" (retry {n})"),
            };
            format!(
                "{}  run    {rule}  #{id} {outcome}{retry}  {duration_ms:.1}ms  {subject:?}",
                clock(*time)
            )
        }
        Record::Dropped { count } => format!("-- {count} records missed (reader too slow)"),
    }
}
