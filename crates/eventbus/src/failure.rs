//! What both consumer modes do when handling fails: decide between a retry
//! and a dead letter, count attempts durably, and write dead letters.
//!
//! Order of the policies around a handler (the same in both modes):
//! attempt timeout → handler; then on failure: class `permanent`/`invalid` →
//! dead letter at once; class `retryable` → retry after the backoff, until
//! the delivery count reaches `max_attempts` → dead letter. A dead letter is
//! written before the entry is acknowledged; if writing fails the entry
//! stays pending and is dead-lettered later (never dropped).
//!
//! Every attempt is measured: `eventbus_handler_duration_seconds{group,type}`
//! and `eventbus_consumed_total{group,type,outcome}` (`ok`, or the error class).

use std::time::Duration;

use redis::aio::ConnectionManager;
use tracing::Instrument;
use uuid::Uuid;

use crate::deadletter::{DeadLetterWriter, Failure};
use crate::envelope::Envelope;
use crate::handler::{Delivery, ErrorClass, Handler, HandlerError};
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
}

impl FailureHandling {
    /// Runs the handler under the attempt timeout.
    pub(crate) async fn attempt<H: Handler>(
        &self,
        handler: &H,
        delivery: Delivery,
    ) -> Result<(), HandlerError> {
        let labels = [
            ("group", delivery.group.clone()),
            ("type", delivery.envelope.event_type.clone()),
        ];
        // Every log line written while the handler runs (its own, an exec
        // sink's, a timeout's) carries the event's id, type and group.
        let span = tracing::info_span!(
            "event",
            event_id = %delivery.envelope.id,
            event_type = %delivery.envelope.event_type,
            group = %delivery.group,
        );
        let started = std::time::Instant::now();
        let result = async {
            match self.policy.attempt_timeout {
                Some(t) => match tokio::time::timeout(t, handler.handle(delivery)).await {
                    Ok(r) => r,
                    Err(_) => Err(HandlerError::retryable(format!(
                        "attempt timed out after {t:?}"
                    ))),
                },
                None => handler.handle(delivery).await,
            }
        }
        .instrument(span)
        .await;
        metrics::histogram!("eventbus_handler_duration_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(()) => "ok",
            Err(e) => e.class.as_str(),
        };
        let [(_, group), (_, event_type)] = labels;
        metrics::counter!("eventbus_consumed_total", "group" => group, "type" => event_type, "outcome" => outcome)
            .increment(1);
        result
    }

    /// Retry or dead letter, after delivery number `attempt` (1-based) failed.
    pub(crate) fn decide(&self, err: &HandlerError, attempt: u64) -> Verdict {
        match err.class {
            ErrorClass::Retryable if !self.policy.exhausted(attempt) => {
                Verdict::Retry(self.policy.delay(attempt))
            }
            class => Verdict::DeadLetter(class),
        }
    }

    /// Records a retry in the metrics.
    pub(crate) fn count_retry(&self, group: &str, event_type: &str) {
        metrics::counter!("eventbus_retries_total", "group" => group.to_owned(), "type" => event_type.to_owned())
            .increment(1);
    }

    /// Writes the dead letter of a delivery. `Err` means it may not be
    /// written: do not acknowledge.
    pub(crate) async fn dead_letter(
        &self,
        d: &Delivery,
        attempts: u64,
        class: ErrorClass,
        message: &str,
    ) -> crate::Result<Uuid> {
        self.writer
            .record(&Failure {
                envelope: d.envelope.clone(),
                group: d.group.clone(),
                consumer: d.consumer.clone(),
                stream: d.stream.clone(),
                partition: d.partition,
                entry_id: d.entry_id.clone(),
                attempts,
                class,
                message: message.to_owned(),
                first_failed_at: None,
            })
            .await
    }

    /// Dead-letters an entry that is not a valid envelope, as `invalid`: the
    /// raw fields (read again from the stream) go into a placeholder
    /// envelope of type `_invalid.undecodable`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn dead_letter_undecodable(
        &self,
        conn: &ConnectionManager,
        group: &str,
        consumer: &str,
        stream: &str,
        partition: u32,
        entry_id: &str,
        error: &str,
    ) -> crate::Result<Uuid> {
        let raw: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(stream)
            .arg(entry_id)
            .arg(entry_id)
            .query_async(&mut conn.clone())
            .await
            .unwrap_or_default();
        let fields: serde_json::Map<String, serde_json::Value> = raw
            .into_iter()
            .flat_map(|(_, f)| f)
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        let mut envelope = Envelope::new(
            "_invalid.undecodable",
            entry_id,
            serde_json::json!({"stream": stream, "entry_id": entry_id, "fields": fields, "error": error}),
        );
        // Stable per entry, so dead-lettering it again updates the same row.
        envelope.id = stable_id(stream, entry_id);
        self.writer
            .record(&Failure {
                envelope,
                group: group.to_owned(),
                consumer: consumer.to_owned(),
                stream: stream.to_owned(),
                partition,
                entry_id: entry_id.to_owned(),
                attempts: 1,
                class: ErrorClass::Invalid,
                message: error.to_owned(),
                first_failed_at: None,
            })
            .await
    }
}

/// A UUID derived from a stream entry (two FNV-1a 64-bit hashes).
fn stable_id(stream: &str, entry_id: &str) -> Uuid {
    let fnv = |seed: u64| {
        let mut h = seed;
        for b in stream.bytes().chain([0]).chain(entry_id.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    Uuid::from_u128((u128::from(a) << 64) | u128::from(b))
}

/// The delivery counts of pending entries of `consumer` (`XPENDING` extended
/// form over the ids' range). Missing ids are absent from the map.
pub(crate) async fn delivery_counts(
    conn: &ConnectionManager,
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
    conn: &ConnectionManager,
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
    match v {
        redis::Value::Array(items) => items.iter().find_map(crate::reply::parse_entry),
        _ => None,
    }
}

/// Resets the idle time of our pending entry without counting a delivery
/// (`XCLAIM ... JUSTID`), so other consumers do not take it while it waits
/// for its retry.
pub(crate) async fn touch(
    conn: &ConnectionManager,
    stream: &str,
    group: &str,
    consumer: &str,
    id: &str,
) {
    let _: redis::RedisResult<redis::Value> = redis::cmd("XCLAIM")
        .arg(stream)
        .arg(group)
        .arg(consumer)
        .arg(0)
        .arg(id)
        .arg("JUSTID")
        .query_async(&mut conn.clone())
        .await;
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
