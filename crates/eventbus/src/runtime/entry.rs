//! The per-entry sequence both modes run, written once.
//!
//! For each stream entry: decode it (an entry that is not an envelope is
//! dead-lettered as invalid, its fields kept byte for byte); in park mode,
//! dead-letter it as `parked` if its key is held; build the [`Delivery`]
//! and run the handler stack (the layers of [`crate::layer`]); then settle:
//! acknowledge a success, retry a retryable failure after the backoff, or
//! dead-letter (then acknowledge) once the attempts are used up or the
//! failure is permanent or invalid. Every step is counted in
//! [`ConsumerStats`] and logged the same way in both modes.
//!
//! What differs between the modes is behind [`Site`]: how an attempt is
//! guarded (ordered: only while the lease is surely held, within the
//! in-flight limit), how an entry is acknowledged (ordered: fenced; unordered:
//! batched by the acker), how a retry waits (ordered: in place, its partition
//! waits; unordered: a task of its own, the handler slot freed) and what
//! happens when a dead letter cannot be written (ordered: tried again, the
//! partition waits; unordered: the entry stays pending and is claimed later).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::Instrument;
use uuid::Uuid;

use super::failure::{FailureHandling, Source, Verdict};
use super::ConsumerStats;
use crate::connection::RedisConn;
use crate::envelope::Envelope;
use crate::handler::{Delivery, ErrorClass, Handler, HandlerError};
use crate::reply::RawEntry;

/// How the sequence ended for one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Acknowledged, or deliberately left pending for whoever takes it next.
    Done,
    /// A retry is scheduled (unordered): the entry is still in flight here.
    Scheduled,
    /// The mode gave the entry up (ordered: the lease is lost): it stays
    /// pending for the next owner.
    Abandoned,
}

/// What a retry wait ended with.
pub(crate) enum Retry {
    /// The entry, taken again (a new delivery): try it now.
    Again(Box<RawEntry>),
    /// Nothing more to do here.
    Left(Settled),
}

/// The parts of the runtime the sequence uses.
pub(crate) struct Parts<'a> {
    pub(crate) stats: &'a ConsumerStats,
    pub(crate) failures: &'a FailureHandling,
    pub(crate) conn: &'a RedisConn,
}

/// What a mode supplies around the shared sequence (see the module docs).
pub(crate) trait Site: Send {
    /// The runtime's shared parts.
    fn parts(&self) -> Parts<'_>;

    /// Where entry `id` was read.
    fn source<'a>(&'a self, id: &'a str) -> Source<'a>;

    /// The topic and partition a delivery of `envelope` names.
    fn route(&self, envelope: &Envelope) -> (String, u32);

    /// Whether long retries may go through the scheduler (unordered: the
    /// entry may leave its stream; ordered: its partition has to wait).
    fn schedules_retries(&self) -> bool {
        false
    }

    /// Whether dead letters park their key (ordered park mode).
    fn parks(&self) -> bool {
        false
    }

    /// Park mode: the dead letter holding `key`, or `None` when its events
    /// flow. `Err` ends the sequence.
    fn parked_behind(
        &mut self,
        _key: &str,
    ) -> impl Future<Output = Result<Option<String>, Settled>> + Send {
        async { Ok(None) }
    }

    /// Runs one attempt. `Err` ends the sequence (the attempt was abandoned).
    fn attempt<F>(
        &mut self,
        attempt: F,
    ) -> impl Future<Output = Result<Result<(), HandlerError>, Settled>> + Send
    where
        F: Future<Output = Result<(), HandlerError>> + Send;

    /// Acknowledges entry `id`, handled (it may wait to join others).
    fn ack(&mut self, id: &str) -> impl Future<Output = Settled> + Send;

    /// Acknowledges entry `id`, dead-lettered.
    fn ack_dead_letter(&mut self, id: &str) -> impl Future<Output = Settled> + Send {
        self.ack(id)
    }

    /// Waits out `delay` before attempt `attempt + 1` of entry `id`.
    fn retry(
        &mut self,
        id: &str,
        attempt: u64,
        delay: Duration,
    ) -> impl Future<Output = Retry> + Send;

    /// Park mode: `key` is now held by `dead_letter` too.
    fn dead_lettered(
        &mut self,
        _key: &str,
        _dead_letter: Uuid,
    ) -> impl Future<Output = crate::Result<()>> + Send {
        async { Ok(()) }
    }

    /// Writing a dead letter (or parking its key) failed: `None` to try
    /// again (after a pause), or how the sequence ends.
    fn after_failed_write(&mut self) -> impl Future<Output = Option<Settled>> + Send;
}

/// Runs the sequence for `entry`, its delivery number `attempt` (1-based).
pub(crate) async fn run<S: Site, H: Handler>(
    site: &mut S,
    handler: &H,
    mut entry: RawEntry,
    mut attempt: u64,
    mut redelivered: bool,
) -> Settled {
    loop {
        let RawEntry { id, decoded } = entry;
        let envelope = match decoded {
            Ok(e) => e,
            Err(err) => {
                site.parts().stats.invalid.fetch_add(1, Ordering::Relaxed);
                return Box::pin(dead_letter(
                    site,
                    &id,
                    None,
                    Of::Undecodable(err.to_string()),
                ))
                .await;
            }
        };
        // Cold paths are boxed (here and below): the future of this
        // sequence is moved into every spawned task, and inline they would
        // make it several times larger (a measured cost per event).
        if site.parks() {
            match Box::pin(site.parked_behind(&envelope.key)).await {
                Err(settled) => return settled,
                Ok(Some(head)) => {
                    let message = crate::deadletter::park::parked_message(&envelope.key, &head);
                    let key = envelope.key.clone();
                    let of = Of::Event {
                        envelope: Box::new(envelope),
                        class: ErrorClass::Parked,
                        message,
                    };
                    return Box::pin(dead_letter(site, &id, Some(&key), of)).await;
                }
                Ok(None) => {}
            }
        }
        // Deliveries that failed before a retry through the scheduler.
        let prior = prior_attempts(&envelope);
        // Kept only when needed: the handler consumes the delivery.
        let key = site.parks().then(|| envelope.key.clone());
        let event_id = envelope.id;
        let event_type = envelope.event_type.clone();
        let (topic, partition) = site.route(&envelope);
        let delivery = {
            let at = site.source(&id);
            Delivery {
                envelope,
                stream: at.stream.to_owned(),
                topic,
                partition,
                entry_id: id.clone(),
                group: at.group.to_owned(),
                consumer: at.consumer.to_owned(),
                redelivered: redelivered || attempt > 1 || prior > 0,
            }
        };
        site.parts().stats.delivered.fetch_add(1, Ordering::Relaxed);
        // The attempt's CONSUMER span (disabled, and free, when tracing is off).
        let span = crate::telemetry::consumer_span(&delivery, attempt);
        // Pinned here and passed by reference: the handler stack's future is
        // the largest part of this one, and moving it into the site's
        // future would copy it again for every event.
        let attempted = {
            // Made inside the span too: layers open their spans (`Traced`) in
            // `handle` itself, before the first poll.
            let running = span.in_scope(|| handler.handle(delivery));
            let running = std::pin::pin!(running.instrument(span.clone()));
            site.attempt(running).await
        };
        let outcome = match attempted {
            Ok(outcome) => outcome,
            Err(settled) => return settled,
        };
        let err = match outcome {
            Ok(()) => {
                drop(span);
                site.parts().stats.handled.fetch_add(1, Ordering::Relaxed);
                return site.ack(&id).await;
            }
            Err(err) => err,
        };
        let parts = site.parts();
        parts.stats.failed.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::record_failure(&span, &err);
        let attempts = attempt.saturating_add(prior);
        match parts.failures.decide(&err, attempts) {
            Verdict::DeadLetter(class) => {
                crate::telemetry::record_dead_letter(&span, class, &err.message);
                drop(span);
                if class == ErrorClass::Invalid {
                    parts.stats.rejected.fetch_add(1, Ordering::Relaxed);
                }
                let of = Of::Entry {
                    attempts,
                    class,
                    message: err.message,
                };
                return Box::pin(dead_letter(site, &id, key.as_deref(), of)).await;
            }
            Verdict::Retry(delay) => {
                crate::telemetry::record_retry(&span, attempt, delay);
                // The attempt ends here; its span does not cover the wait.
                drop(span);
                parts.stats.retried.fetch_add(1, Ordering::Relaxed);
                let at = site.source(&id);
                parts.failures.count_retry(at.group, &event_type);
                tracing::warn!(
                    event_id = %event_id, event_type = %event_type, group = %at.group,
                    stream = %at.stream, entry_id = %id, attempt = attempts, class = err.class.as_str(),
                    error = %err.message, ?delay, "handler failed; retrying after the backoff"
                );
                if site.schedules_retries() && parts.failures.schedules(delay) {
                    match Box::pin(
                        parts
                            .failures
                            .schedule_retry(parts.conn, &at, attempts, delay),
                    )
                    .await
                    {
                        Ok(()) => return site.ack(&id).await,
                        Err(e) => tracing::warn!(
                            entry_id = %id, error = %e,
                            "could not schedule the retry; waiting in memory instead"
                        ),
                    }
                }
                match Box::pin(site.retry(&id, attempt, delay)).await {
                    Retry::Again(next) => {
                        entry = *next;
                        attempt += 1;
                        redelivered = true;
                    }
                    Retry::Left(settled) => return settled,
                }
            }
        }
    }
}

/// The deliveries that failed before this entry was scheduled again
/// ([`ATTEMPTS_HEADER`](crate::schedule::ATTEMPTS_HEADER)); 0 when absent
/// or not a number.
fn prior_attempts(envelope: &Envelope) -> u64 {
    envelope
        .headers
        .get(crate::schedule::ATTEMPTS_HEADER)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// What a dead letter is written from.
enum Of {
    /// An entry that is not an envelope: its raw fields, read back.
    Undecodable(String),
    /// An event still at hand (never given to the handler).
    Event {
        envelope: Box<Envelope>,
        class: ErrorClass,
        message: String,
    },
    /// An event the handler consumed: read back from the stream.
    Entry {
        attempts: u64,
        class: ErrorClass,
        message: String,
    },
}

/// Writes the dead letter of entry `id`, parks `key` (park mode), then
/// acknowledges. A failed write goes to the site's `after_failed_write`.
async fn dead_letter<S: Site>(site: &mut S, id: &str, key: Option<&str>, of: Of) -> Settled {
    let mut written: Option<Uuid> = None;
    loop {
        if written.is_none() {
            let parts = site.parts();
            let at = site.source(id);
            let result = match &of {
                Of::Undecodable(error) => {
                    parts
                        .failures
                        .dead_letter_undecodable(parts.conn, &at, error)
                        .await
                }
                Of::Event {
                    envelope,
                    class,
                    message,
                } => {
                    parts
                        .failures
                        .dead_letter((**envelope).clone(), &at, 0, *class, message)
                        .await
                }
                Of::Entry {
                    attempts,
                    class,
                    message,
                } => {
                    parts
                        .failures
                        .dead_letter_entry(parts.conn, &at, *attempts, *class, message)
                        .await
                }
            };
            match result {
                Ok(dl) => written = Some(dl),
                Err(e) => tracing::error!(
                    stream = %at.stream, group = %at.group, entry_id = %id, error = %e,
                    "could not write the dead letter; the entry stays pending"
                ),
            }
        }
        if let Some(dl) = written {
            // Parked before the ack: a crash in between redelivers the
            // entry to a key already parked (by its own dead letter).
            let parked = match key {
                Some(key) => site.dead_lettered(key, dl).await,
                None => Ok(()),
            };
            match parked {
                Ok(()) => {
                    site.parts()
                        .stats
                        .dead_lettered
                        .fetch_add(1, Ordering::Relaxed);
                    return site.ack_dead_letter(id).await;
                }
                Err(e) => tracing::error!(
                    entry_id = %id, error = %e, "could not park the key of a dead letter"
                ),
            }
        }
        if let Some(settled) = site.after_failed_write().await {
            return settled;
        }
    }
}
