//! The unordered runtime (`ConsumerMode::Unordered`, competing consumers):
//! its shared state, the reader, and dispatch of entries to the handler,
//! with retries after a backoff.

//!
//! An unordered [`Consumer`] runs three kinds of work, all owned by [`Consumer::run`]:
//!
//! - the **reader** (on the calling task) issues `XREADGROUP ... BLOCK` over
//!   every partition stream of its topics, on a dedicated connection so the
//!   blocking read never delays other commands;
//! - the **claimer** task periodically runs `XAUTOCLAIM` on each stream,
//!   following the cursor to the end, so entries left pending by a crashed or
//!   stalled consumer (or by a failed handler) are delivered again; it also
//!   removes consumers that have been idle for long and own no pending entries;
//! - the **acker** task collects acknowledgements and sends them as one
//!   pipelined `XACK` per stream per batch.
//!
//! Handlers run as tasks limited by a semaphore (`concurrency`). An entry that
//! does not decode is dead-lettered (as `_invalid.undecodable`) and then
//! acknowledged; it never stops the consumer. A retryable failure is retried
//! by a task of its own after the backoff (the handler slot is freed
//! meanwhile); an entry whose handler or dead letter never finished stays
//! pending and is claimed again once idle for `claim_idle`.
//!
//! Shutdown handshake: when the token is cancelled the reader finishes its
//! current read, dispatches what it got and stops; the claimer stops; the
//! runtime then waits up to `shutdown_timeout` for in-flight handlers, drops
//! its ack sender so the acker flushes what is queued and ends, and returns.
//! Handlers still running at the deadline are abandoned: their entries stay
//! pending and are claimed by another consumer.
//!
//! Files: `claimer` and `acker` are its background tasks.

mod acker;
mod claimer;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::acker::run_acker;
use self::claimer::run_claimer;
pub(crate) use self::claimer::REMOVE_STALE_CONSUMERS;
use super::entry::{self, Parts, Retry, Settled, Site};
use super::failure::{reclaim, FailureHandling, Source};
use super::{ensure_groups, read_new_cmd, ConsumerConfig, ConsumerStats, REPLAY_TOPIC};
use crate::connection::touch;
use crate::connection::{backoff, query_unless_stopped, slot_groups, RedisConn, RedisConnector};
use crate::handler::{Handler, HandlerError};
use crate::reply::{parse_read, RawEntry};
use crate::{Error, Result};

pub(super) struct Shared<H> {
    handler: H,
    pub(super) group: String,
    pub(super) name: String,
    pub(super) streams: Vec<String>,
    /// (topic, partition) per stream index.
    routes: Vec<(String, u32)>,
    semaphore: Arc<Semaphore>,
    inflight: Mutex<HashSet<(usize, String)>>,
    ack_tx: mpsc::UnboundedSender<(usize, String)>,
    pub(super) stats: Arc<ConsumerStats>,
    tracker: TaskTracker,
    failures: Arc<FailureHandling>,
    conn: RedisConn,
    claim_idle: Duration,
    /// Cancelled on shutdown, and when the runtime is dropped.
    alive: CancellationToken,
}

impl<H> Shared<H> {
    /// Where entry `id` of stream `idx` was read, for its dead letter.
    fn source<'a>(&'a self, idx: usize, id: &'a str) -> Source<'a> {
        Source {
            group: &self.group,
            consumer: &self.name,
            stream: &self.streams[idx],
            partition: self.routes[idx].1,
            entry_id: id,
        }
    }
}

/// The competing-consumers runtime over `streams` (key, (topic, partition)).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_unordered<H: Handler>(
    connector: RedisConnector,
    conn: RedisConn,
    config: ConsumerConfig,
    name: String,
    handler: H,
    stats: Arc<ConsumerStats>,
    failures: Arc<FailureHandling>,
    streams: Vec<(String, (String, u32))>,
    shutdown: CancellationToken,
) -> Result<()> {
    // Our own token: draining cancels it, never the caller's.
    let shutdown = shutdown.child_token();
    let (streams, routes): (Vec<String>, Vec<(String, u32)>) = streams.into_iter().unzip();

    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        handler,
        group: config.group.clone(),
        name: name.clone(),
        streams: streams.clone(),
        routes,
        semaphore: Arc::new(Semaphore::new(config.concurrency)),
        inflight: Mutex::new(HashSet::new()),
        ack_tx,
        stats: stats.clone(),
        tracker: TaskTracker::new(),
        failures,
        conn: conn.clone(),
        claim_idle: config.claim_idle,
        alive: shutdown.child_token(),
    });
    // Tasks that outlive this function (a retry waiting out its backoff)
    // stop when it ends, even when it is dropped rather than shut down.
    let _alive = shared.alive.clone().drop_guard();
    let acker = tokio::spawn(run_acker(
        conn.clone(),
        config.group.clone(),
        streams.clone(),
        ack_rx,
        config.ack_batch,
        stats.clone(),
    ));
    // `alive`, not `shutdown`: the claimer must also stop if this
    // runtime is dropped (aborted) rather than shut down.
    let claimer = tokio::spawn(run_claimer(
        shared.clone(),
        conn.clone(),
        config.clone(),
        shared.alive.clone(),
    ));
    tracing::info!(group = %config.group, consumer = %name, streams = streams.len(), "consumer started");

    // One blocking read over every stream on a server. On a cluster a
    // multi-stream XREADGROUP must stay in one slot, so each partition gets
    // a reader of its own, on a connection of its own.
    let readers = slot_groups(&shared.streams, conn.is_cluster())
        .into_iter()
        .map(|subset| run_reader(&shared, &connector, &conn, &config, &shutdown, subset));
    let read_result = futures::future::join_all(readers)
        .await
        .into_iter()
        .collect::<Result<Vec<()>>>()
        .map(drop);

    // Drain: no new reads or claims, wait for in-flight handlers.
    shutdown.cancel();
    let _ = claimer.await;
    shared.tracker.close();
    if tokio::time::timeout(config.shutdown_timeout, shared.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            consumer = %name,
            still_running = shared.tracker.len(),
            "shutdown deadline passed; abandoned handlers' entries stay pending and will be claimed"
        );
    }
    drop(shared);
    // The acker ends when every sender is gone; abandoned handlers may
    // still hold one, so bound the wait.
    let mut acker = acker;
    if tokio::time::timeout(Duration::from_secs(5), &mut acker)
        .await
        .is_err()
    {
        acker.abort();
    }
    tracing::info!(group = %config.group, consumer = %name, "consumer stopped");
    read_result
}

async fn run_reader<H: Handler>(
    shared: &Arc<Shared<H>>,
    connector: &RedisConnector,
    conn: &RedisConn,
    config: &ConsumerConfig,
    shutdown: &CancellationToken,
    subset: Vec<usize>,
) -> Result<()> {
    let streams: Vec<String> = subset.iter().map(|&i| shared.streams[i].clone()).collect();
    let index: HashMap<String, usize> = subset
        .iter()
        .map(|&i| (shared.streams[i].clone(), i))
        .collect();
    let mut reader: Option<RedisConn> = None;
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        // Backpressure: read only as many entries as there are free handler slots.
        let free = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = shared.semaphore.acquire() => {
                drop(permit);
                shared.semaphore.available_permits().max(1)
            }
        };
        let count = read_count_per_stream(free, config.read_count, shared.streams.len());

        let c = match reader.take() {
            Some(c) => c,
            None => match connector.dedicated(config.block).await {
                Ok(c) => {
                    if failures > 0 {
                        // Redis may have restarted empty: make sure groups exist.
                        if let Err(e) = ensure_groups(conn, &shared.streams, &shared.group).await {
                            tracing::warn!(error = %e, "recreating groups failed");
                        }
                    }
                    c
                }
                Err(e) => {
                    failures += 1;
                    pause_after_error(&e, failures, shutdown).await;
                    continue;
                }
            },
        };
        let cmd = read_new_cmd(&shared.group, &shared.name, count, config.block, &streams);
        // Shutdown stops reading at once, whatever `block` is: the read is
        // abandoned and its connection closed. Entries Redis handed to it
        // just before stay pending to this consumer and are claimed once
        // idle for `claim_idle`, like those of a consumer that crashed.
        let Some((c, read)) = query_unless_stopped::<redis::Value>(c, &cmd, shutdown).await else {
            break;
        };
        match read {
            Ok(reply) => {
                failures = 0;
                reader = Some(c);
                for (stream, entries) in parse_read(reply) {
                    let Some(&idx) = index.get(&stream) else {
                        continue;
                    };
                    for entry in entries {
                        dispatch(shared, idx, entry, false, 1).await;
                    }
                }
            }
            // NOGROUP: the group or stream is gone (Redis restarted without
            // persistence, or someone deleted it). UNBLOCKED: the stream was
            // deleted while we were blocked on it.
            Err(e) if matches!(e.code(), Some("NOGROUP") | Some("UNBLOCKED")) => {
                reader = Some(c);
                tracing::warn!(group = %shared.group, error = %e, "group or stream vanished; recreating");
                if let Err(e) = ensure_groups(conn, &shared.streams, &shared.group).await {
                    failures += 1;
                    pause_after_error(&e, failures, shutdown).await;
                }
            }
            Err(e) if e.code() == Some("WRONGTYPE") => return Err(e.into()),
            Err(e) => {
                // Transient or unexpected: keep the consumer alive, back off,
                // and start over on a fresh connection.
                failures += 1;
                pause_after_error(&Error::Redis(e), failures, shutdown).await;
            }
        }
    }
    Ok(())
}

/// `COUNT` for one `XREADGROUP` over `streams` streams. `COUNT` applies to
/// each stream, so asking every stream for all `free` slots could return
/// `streams × free` entries: one huge reply (slow to parse) and far more
/// than the handlers can take. Split the free slots over the streams
/// instead, at least one each.
fn read_count_per_stream(free: usize, read_count: usize, streams: usize) -> usize {
    (free.min(read_count) / streams.max(1)).max(1)
}

async fn pause_after_error(e: &Error, failures: u32, shutdown: &CancellationToken) {
    let delay = backoff(failures, Duration::from_millis(100), Duration::from_secs(5));
    tracing::warn!(error = %e, failures, ?delay, "redis read failed; retrying");
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}

/// Hands one entry to the handler (waiting for a free slot) through the
/// shared sequence (`entry`). `attempt` is the entry's delivery count (1 on
/// the first delivery).
pub(super) async fn dispatch<H: Handler>(
    shared: &Arc<Shared<H>>,
    idx: usize,
    entry: RawEntry,
    redelivered: bool,
    attempt: u64,
) {
    // An entry that does not decode holds no handler slot: it is only
    // dead-lettered.
    let permit = if entry.decoded.is_ok() {
        if !shared
            .inflight
            .lock()
            .expect("inflight set poisoned")
            .insert((idx, entry.id.clone()))
        {
            return; // already being handled here (claimed while in flight)
        }
        Some(
            shared
                .semaphore
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore never closed"),
        )
    } else {
        None
    };
    let tracked = permit.is_some();
    let mut site = UnorderedSite {
        shared: shared.clone(),
        idx,
        permit,
    };
    // Boxed once, so that spawning moves a pointer, not the whole sequence.
    shared.tracker.spawn(Box::pin(async move {
        let id = entry.id.clone();
        let s = site.shared.clone();
        let settled = entry::run(&mut site, &s.handler, entry, attempt, redelivered).await;
        // A scheduled retry keeps the entry in flight (the claimer leaves
        // it alone) until it is taken again.
        if tracked && settled != Settled::Scheduled {
            s.inflight
                .lock()
                .expect("inflight set poisoned")
                .remove(&(idx, id));
        }
    }));
}

/// One entry of an unordered consumer, for the shared sequence.
struct UnorderedSite<H> {
    shared: Arc<Shared<H>>,
    idx: usize,
    /// The handler slot, freed as soon as the attempt ends.
    permit: Option<OwnedSemaphorePermit>,
}

impl<H: Handler> Site for UnorderedSite<H> {
    fn parts(&self) -> Parts<'_> {
        Parts {
            stats: &self.shared.stats,
            failures: &self.shared.failures,
            conn: &self.shared.conn,
        }
    }

    fn source<'a>(&'a self, id: &'a str) -> Source<'a> {
        self.shared.source(self.idx, id)
    }

    fn route(&self, envelope: &crate::Envelope) -> (String, u32) {
        let (topic, partition) = &self.shared.routes[self.idx];
        if topic == REPLAY_TOPIC {
            // A replay: route by the event itself, as it was first delivered.
            let topic = crate::topology::topic_of(&envelope.event_type).to_owned();
            (topic, *partition)
        } else {
            (topic.clone(), *partition)
        }
    }

    async fn attempt<F>(&mut self, attempt: F) -> Result<Result<(), HandlerError>, Settled>
    where
        F: std::future::Future<Output = Result<(), HandlerError>> + Send,
    {
        let outcome = attempt.await;
        drop(self.permit.take());
        Ok(outcome)
    }

    async fn ack(&mut self, id: &str) -> Settled {
        let _ = self.shared.ack_tx.send((self.idx, id.to_owned()));
        Settled::Done
    }

    fn schedules_retries(&self) -> bool {
        true
    }

    async fn retry(&mut self, id: &str, attempt: u64, delay: Duration) -> Retry {
        // The entry stays in `inflight` while it waits, so the claimer
        // leaves it alone; other consumers are kept off by resetting its
        // idle time.
        let s = self.shared.clone();
        self.shared
            .tracker
            .spawn(retry_after(s, self.idx, id.to_owned(), attempt, delay));
        Retry::Left(Settled::Scheduled)
    }

    async fn after_failed_write(&mut self) -> Option<Settled> {
        // Left pending: the claimer takes it again once idle, and its
        // dead letter is written then.
        Some(Settled::Done)
    }
}

/// Waits out the backoff, then takes the entry again (a new delivery, so
/// Redis counts the attempt) and dispatches it. On shutdown the entry is
/// left pending for whoever takes it next.
fn retry_after<H: Handler>(
    s: Arc<Shared<H>>,
    idx: usize,
    id: String,
    attempt: u64,
    delay: Duration,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    // Boxed: dispatch and retry_after call each other.
    Box::pin(async move {
        let stream = s.streams[idx].clone();
        let deadline = tokio::time::Instant::now() + delay;
        let keepalive = (s.claim_idle / 2).max(Duration::from_millis(10));
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            let step = (deadline - now).min(keepalive);
            tokio::select! {
                _ = s.alive.cancelled() => {
                    s.inflight.lock().expect("inflight set poisoned").remove(&(idx, id));
                    return;
                }
                _ = tokio::time::sleep(step) => {}
            }
            if tokio::time::Instant::now() < deadline {
                touch(&s.conn, &stream, &s.group, &s.name, &id).await;
            }
        }
        s.inflight
            .lock()
            .expect("inflight set poisoned")
            .remove(&(idx, id.clone()));
        // Acknowledged or taken over meanwhile: nothing to do.
        if let Some(entry) = reclaim(&s.conn, &stream, &s.group, &s.name, &id).await {
            dispatch(&s, idx, entry, true, attempt + 1).await;
        }
    })
}

#[cfg(test)]
mod read_count_tests {
    use super::read_count_per_stream;

    #[test]
    fn count_is_split_over_the_streams() {
        // 512 free slots over 16 partitions: at most 32 per stream, 512 in all.
        assert_eq!(read_count_per_stream(512, 1000, 16), 32);
        // read_count still caps the total.
        assert_eq!(read_count_per_stream(512, 256, 16), 16);
        // never zero, even with fewer free slots than streams
        assert_eq!(read_count_per_stream(1, 1000, 16), 1);
        assert_eq!(read_count_per_stream(10, 1000, 0), 10);
    }
}
