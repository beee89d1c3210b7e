//! What both consumer modes do when handling fails: decide between a retry
//! and a dead letter, count attempts durably, and write dead letters.
//!
//! After a failed attempt (the handler stack of `crate::layer` returned an
//! error): class `permanent`/`invalid` → dead letter at once; class
//! `retryable` → retry after the backoff, until the delivery count reaches
//! `max_attempts` → dead letter. A dead letter is written before the entry
//! is acknowledged; if writing fails the entry stays pending and is
//! dead-lettered later (never dropped).

use std::time::Duration;

use crate::connection::RedisConn;
use uuid::Uuid;

use crate::deadletter::{DeadLetterWriter, Failure};
use crate::envelope::Envelope;
use crate::handler::{ErrorClass, HandlerError};
use crate::retry::RetryPolicy;

/// The decision after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Verdict {
    /// Try again after this wait.
    Retry(Duration),
    /// Give up: dead-letter with this class.
    DeadLetter(ErrorClass),
}

/// Retry policy plus the dead-letter writer, shared by a consumer's workers.
#[derive(Debug, Clone)]
pub(crate) struct FailureHandling {
    pub(crate) policy: RetryPolicy,
    pub(crate) writer: DeadLetterWriter,
    /// Retries waiting at least this long go through the scheduler.
    pub(crate) scheduled_retry_after: Option<Duration>,
    /// Where scheduled retries go (the group's replay stream).
    pub(crate) topology: crate::topology::Topology,
}

impl FailureHandling {
    /// Retry or dead letter, after delivery number `attempt` (1-based) failed.
    pub(crate) fn decide(&self, err: &HandlerError, attempt: u64) -> Verdict {
        match err.class {
            ErrorClass::Retryable if !self.policy.exhausted(attempt) => {
                Verdict::Retry(self.policy.delay(attempt))
            }
            class => Verdict::DeadLetter(class),
        }
    }

    /// Whether a retry after `delay` goes through the scheduler.
    pub(crate) fn schedules(&self, delay: Duration) -> bool {
        self.scheduled_retry_after.is_some_and(|t| delay >= t)
    }

    /// Schedules the retry of the entry at `at`, `attempts` deliveries of it
    /// failed, `delay` from now: the event, read back from the stream, with
    /// `attempts` in its [`ATTEMPTS_HEADER`](crate::schedule::ATTEMPTS_HEADER),
    /// for the group's replay stream. `Ok` means the caller may acknowledge.
    pub(crate) async fn schedule_retry(
        &self,
        conn: &RedisConn,
        at: &Source<'_>,
        attempts: u64,
        delay: Duration,
    ) -> crate::Result<()> {
        let mut envelope = match fetch_entry(conn, at.stream, at.entry_id).await {
            Some(entry) => entry.decoded?,
            None => {
                return Err(crate::Error::InvalidInput(format!(
                    "entry {} of {} could not be read back",
                    at.entry_id, at.stream
                )))
            }
        };
        envelope.headers.insert(
            crate::schedule::ATTEMPTS_HEADER.to_owned(),
            attempts.to_string(),
        );
        let stream = self.topology.replay_stream(at.group);
        let due =
            chrono::Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        let due = crate::schedule::due_ms(due);
        let _: String = crate::schedule::schedule_cmd(
            &stream,
            due,
            &envelope.id.to_string(),
            &envelope.to_fields(),
        )
        .query_async(&mut conn.clone())
        .await?;
        let earliest = std::collections::BTreeMap::from([(stream.clone(), due)]);
        if let Err(e) = crate::schedule::lower_hints(conn, &self.topology, &earliest).await {
            // No scheduler would see it: take it back (the caller then
            // waits in memory), so it is not delivered twice.
            let mut cancel = redis::cmd("EVAL");
            cancel
                .arg(crate::schedule::scripts::CANCEL)
                .arg(2)
                .arg(crate::schedule::scheduled_key(&stream))
                .arg(crate::schedule::events_key(&stream))
                .arg(envelope.id.to_string());
            cancel.query_async::<i64>(&mut conn.clone()).await?;
            return Err(e.into());
        }
        metrics::counter!("eventbus_retries_scheduled_total", "group" => at.group.to_owned())
            .increment(1);
        Ok(())
    }

    /// Records a retry in the metrics.
    pub(crate) fn count_retry(&self, group: &str, event_type: &str) {
        metrics::counter!("eventbus_retries_total", "group" => group.to_owned(), "type" => event_type.to_owned())
            .increment(1);
    }

    /// Writes the dead letter of an event read from `at`. `Err` means it
    /// may not be written: do not acknowledge.
    pub(crate) async fn dead_letter(
        &self,
        envelope: Envelope,
        at: &Source<'_>,
        attempts: u64,
        class: ErrorClass,
        message: &str,
    ) -> crate::Result<Uuid> {
        self.writer
            .record(&at.failure(envelope, attempts, class, message))
            .await
    }

    /// Dead-letters an entry that is not (or no longer) a valid envelope, as
    /// `invalid`: its exact fields, read again from the stream, are kept
    /// byte for byte (`raw_fields`), and a placeholder envelope of type
    /// `_invalid.undecodable` shows them as text (lossy where not UTF-8).
    pub(crate) async fn dead_letter_undecodable(
        &self,
        conn: &RedisConn,
        at: &Source<'_>,
        error: &str,
    ) -> crate::Result<Uuid> {
        let raw = fetch_raw_fields(conn, at.stream, at.entry_id).await;
        let fields: serde_json::Map<String, serde_json::Value> = raw
            .iter()
            .flatten()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    serde_json::Value::String(String::from_utf8_lossy(v).into_owned()),
                )
            })
            .collect();
        let mut envelope = Envelope::new(
            "_invalid.undecodable",
            at.entry_id,
            serde_json::json!({"stream": at.stream, "entry_id": at.entry_id, "fields": fields, "error": error}),
        );
        // Stable per entry, so dead-lettering it again updates the same row.
        envelope.id = stable_id(at.stream, at.entry_id);
        let mut failure = at.failure(envelope, 1, ErrorClass::Invalid, error);
        failure.raw_fields = raw;
        self.writer.record(&failure).await
    }

    /// Dead-letters an entry whose delivery the handler consumed: the event
    /// is read again from the stream (only on this rare path, so handling
    /// never copies an envelope it might need later). An entry gone or no
    /// longer decodable is dead-lettered as undecodable.
    pub(crate) async fn dead_letter_entry(
        &self,
        conn: &RedisConn,
        at: &Source<'_>,
        attempts: u64,
        class: ErrorClass,
        message: &str,
    ) -> crate::Result<Uuid> {
        match fetch_entry(conn, at.stream, at.entry_id)
            .await
            .map(|e| e.decoded)
        {
            Some(Ok(envelope)) => {
                self.dead_letter(envelope, at, attempts, class, message)
                    .await
            }
            _ => {
                let why = format!(
                    "{message} (and the entry could not be read back: {} {})",
                    at.stream, at.entry_id
                );
                self.dead_letter_undecodable(conn, at, &why).await
            }
        }
    }
}

/// Where a failed entry was read, for its dead letter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    pub(crate) group: &'a str,
    pub(crate) consumer: &'a str,
    pub(crate) stream: &'a str,
    pub(crate) partition: u32,
    pub(crate) entry_id: &'a str,
}

impl Source<'_> {
    fn failure(
        &self,
        envelope: Envelope,
        attempts: u64,
        class: ErrorClass,
        message: &str,
    ) -> Failure {
        Failure {
            envelope,
            group: self.group.to_owned(),
            consumer: self.consumer.to_owned(),
            stream: self.stream.to_owned(),
            partition: self.partition,
            entry_id: self.entry_id.to_owned(),
            attempts,
            class,
            message: message.to_owned(),
            first_failed_at: None,
            raw_fields: None,
        }
    }
}

/// The exact fields of one stream entry (`XRANGE id id`), any bytes;
/// `None` if it is gone or cannot be read.
async fn fetch_raw_fields(
    conn: &RedisConn,
    stream: &str,
    id: &str,
) -> Option<Vec<crate::lossless::RawField>> {
    let reply = xrange_one(conn, stream, id).await?;
    crate::reply::parse_raw_entries(&reply)
        .into_iter()
        .next()
        .map(|(_, fields)| fields)
}

/// One stream entry by id (`XRANGE id id`); `None` if it is gone.
pub(crate) async fn fetch_entry(
    conn: &RedisConn,
    stream: &str,
    id: &str,
) -> Option<crate::reply::RawEntry> {
    first_entry(xrange_one(conn, stream, id).await?)
}

/// `XRANGE stream id id` as a raw reply; `None` if it failed.
async fn xrange_one(conn: &RedisConn, stream: &str, id: &str) -> Option<redis::Value> {
    redis::cmd("XRANGE")
        .arg(stream)
        .arg(id)
        .arg(id)
        .query_async(&mut conn.clone())
        .await
        .ok()
}

fn first_entry(v: redis::Value) -> Option<crate::reply::RawEntry> {
    match v {
        redis::Value::Array(items) => items.iter().find_map(crate::reply::parse_entry),
        _ => None,
    }
}

/// A UUID derived from a stream entry (two FNV-1a 64-bit hashes).
fn stable_id(stream: &str, entry_id: &str) -> Uuid {
    let bytes = || stream.bytes().chain([0]).chain(entry_id.bytes());
    let a = crate::topology::fnv1a64(crate::topology::FNV_OFFSET, bytes());
    let b = crate::topology::fnv1a64(0x8422_2325_cbf2_9ce4, bytes());
    Uuid::from_u128((u128::from(a) << 64) | u128::from(b))
}

/// The delivery counts of pending entries of `consumer` (`XPENDING` extended
/// form over the ids' range). Missing ids are absent from the map.
pub(crate) async fn delivery_counts(
    conn: &RedisConn,
    stream: &str,
    group: &str,
    consumer: &str,
    ids: &[String],
) -> std::collections::HashMap<String, u64> {
    let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
        return Default::default();
    };
    let (min, max) = if first <= last {
        (first, last)
    } else {
        (last, first)
    };
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .arg(min)
        .arg(max)
        .arg(ids.len().max(1) * 2)
        .arg(consumer)
        .query_async(&mut conn.clone())
        .await
        .unwrap_or_default();
    rows.into_iter().map(|(id, _, _, n)| (id, n)).collect()
}

/// `XCLAIM` of one pending entry to `consumer`, which makes it a new
/// delivery (the count goes up). `None` if it is no longer pending.
pub(crate) async fn reclaim(
    conn: &RedisConn,
    stream: &str,
    group: &str,
    consumer: &str,
    id: &str,
) -> Option<crate::reply::RawEntry> {
    let v: redis::Value = redis::cmd("XCLAIM")
        .arg(stream)
        .arg(group)
        .arg(consumer)
        .arg(0)
        .arg(id)
        .query_async(&mut conn.clone())
        .await
        .ok()?;
    first_entry(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_ids_are_stable_and_distinct() {
        assert_eq!(stable_id("s", "1-0"), stable_id("s", "1-0"));
        assert_ne!(stable_id("s", "1-0"), stable_id("s", "1-1"));
        assert_ne!(stable_id("s1", "-0"), stable_id("s", "1-0"));
    }
}
