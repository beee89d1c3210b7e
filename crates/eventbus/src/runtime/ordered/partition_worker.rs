//! One owned partition: take over what is pending, then handle entries one
//! at a time, in stream order.
//!
//! Life of a worker, started right after its lease was acquired:
//!
//! 1. **Take over.** Every entry pending in the group on this stream (left
//!    by the previous owner, or by this member before a restart) is claimed
//!    to this member with `XAUTOCLAIM ... 0 0-0`, cursor followed to the end,
//!    through the fenced script. Pending entries always precede anything
//!    `XREADGROUP >` can return, so handling them first keeps stream order.
//! 2. **Read.** The stream joins the shared reader's set; new entries arrive
//!    in the worker's queue.
//! 3. **Handle**, strictly one entry at a time: a retryable failure is
//!    retried after the retry policy's backoff (blocking only this
//!    partition; each retry is a new delivery, so Redis counts attempts
//!    across crashes and failovers); when the attempts are used up, or the
//!    failure is permanent or invalid, the entry is dead-lettered and the
//!    partition moves on. Handled entries are acknowledged through the
//!    fenced `XACK` in batches ([`Acks`]: up to `partition_batch`, sent as
//!    soon as no more entries are ready, and before a retry waits or a dead
//!    letter is acknowledged), so a crash repeats at most one batch of
//!    handled entries and the entry in flight. In park mode
//!    ([`park`](super::park)) an entry whose key has a dead letter is
//!    dead-lettered as `parked` without being handled.
//! 4. **Stop**, on one of two signals: `release` (rebalance or shutdown)
//!    lets the running handler finish and acknowledge, then leaves the
//!    reader and gives the lease up; `abort` (the lease is lost) stops at
//!    once, abandoning the handler: its entry stays pending for the new owner.
//!
//! While the lease's local deadline (last successful renewal plus the
//! session timeout, measured from before the renewal was sent) has passed,
//! no new entry is started: the lease might already be someone else's.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::connection::RedisConn;
use futures::FutureExt;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lease::{Fenced, LeaseScripts};
use super::reader::{Feed, ReadSet};
use super::site::PartitionSite;
use crate::deadletter::park::PartitionParking;
use crate::handler::Handler;
use crate::reply::{parse_autoclaim, parse_entry, RawEntry};
use crate::runtime::entry::{self, Settled};
use crate::runtime::{ConsumerStats, REMOVE_STALE_CONSUMERS};

/// How often an idle worker checks for entries pending at other consumers.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// An entry pending to this member while it is idle (nothing queued,
/// nothing being handled), idle itself this long, was delivered by a read
/// whose reply never arrived (Redis died after recording the delivery, or
/// the connection broke): no read takes longer (its block plus the response
/// timeout).
const STRANDED_IDLE: Duration = Duration::from_secs(15);

/// The consumers that have pending entries on a stream (`XPENDING` summary).
async fn pending_consumers(
    conn: &RedisConn,
    stream: &str,
    group: &str,
) -> crate::Result<Vec<String>> {
    let v: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(&mut conn.clone())
        .await?;
    let redis::Value::Array(parts) = v else {
        return Ok(Vec::new());
    };
    let Some(redis::Value::Array(consumers)) = parts.get(3) else {
        return Ok(Vec::new());
    };
    Ok(consumers
        .iter()
        .filter_map(|c| match c {
            redis::Value::Array(pair) => redis::from_redis_value(pair[0].clone()).ok(),
            _ => None,
        })
        .collect())
}

/// Up to 1,000 ids pending at `consumer` and idle at least `idle`, oldest
/// first.
async fn pending_ids(
    conn: &RedisConn,
    stream: &str,
    group: &str,
    consumer: &str,
    idle: Duration,
) -> crate::Result<Vec<String>> {
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .arg("IDLE")
        .arg(idle.as_millis() as u64)
        .arg("-")
        .arg("+")
        .arg(1000)
        .arg(consumer)
        .query_async(&mut conn.clone())
        .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// What every worker of one consumer shares.
pub(crate) struct WorkerContext<H> {
    pub(crate) handler: H,
    pub(crate) conn: RedisConn,
    pub(crate) scripts: LeaseScripts,
    pub(crate) read_set: Arc<ReadSet>,
    pub(crate) group: String,
    pub(crate) consumer: String,
    pub(crate) stats: Arc<ConsumerStats>,
    /// Limits partitions handling an entry at the same moment.
    pub(crate) in_flight: Arc<Semaphore>,
    /// Retry policy and dead letters.
    pub(crate) failures: Arc<crate::runtime::failure::FailureHandling>,
    pub(crate) claim_count: usize,
    /// The runtime's clock origin for lease deadlines.
    pub(crate) epoch: Instant,
    /// Set when a static member shuts down: released workers leave their
    /// lease to expire instead of deleting it.
    pub(crate) keep_leases: AtomicBool,
    /// Park mode: hold the later events of a key that has a dead letter.
    pub(crate) park_keys: bool,
    /// Most handled entries acknowledged in one fenced call.
    pub(crate) partition_batch: usize,
}

/// How long a handled entry's ack may wait for more to join it.
const ACK_WAIT: Duration = Duration::from_millis(100);

/// Handled entries of one partition not yet acknowledged: sent together
/// by one fenced call when no more entries are ready, when
/// `partition_batch` are waiting, after [`ACK_WAIT`], before a retry or a
/// dead letter, and before the worker stops.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    ids: Vec<String>,
    since: Option<Instant>,
}

impl Acks {
    /// Adds `id`; true when the batch should be sent now.
    pub(crate) fn push(&mut self, id: &str, batch: usize) -> bool {
        self.ids.push(id.to_owned());
        let since = *self.since.get_or_insert_with(Instant::now);
        self.ids.len() >= batch || since.elapsed() >= ACK_WAIT
    }
}

/// One owned partition.
#[derive(Debug, Clone)]
pub(crate) struct OwnedPartition {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) stream: String,
    pub(crate) token: u64,
    /// Milliseconds after `epoch` until which the lease is surely ours.
    pub(crate) valid_until: Arc<AtomicU64>,
    /// Finish the current entry, then stop and release the lease.
    pub(crate) release: CancellationToken,
    /// Stop now: the lease is lost.
    pub(crate) abort: CancellationToken,
}

/// How a worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Stopped and gave the lease up.
    Released,
    /// Stopped without the lease (lost, or release failed).
    Lost,
    /// Stopped, the lease left to expire (a static member shutting down).
    Kept,
}

impl<H: Handler> WorkerContext<H> {
    /// Runs one partition until released or aborted.
    pub(crate) async fn run(self: Arc<Self>, part: OwnedPartition) -> Ended {
        let ended = match AssertUnwindSafe(self.work(&part)).catch_unwind().await {
            Ok(ended) => ended,
            Err(_) => {
                tracing::error!(stream = %part.stream, "a handler panicked; its entry stays pending and is retried by the next owner");
                Ended::Released
            }
        };
        // Nothing of this stream may reach us once the lease is released.
        self.read_set.remove(&part.stream).await;
        if ended == Ended::Lost || part.abort.is_cancelled() {
            return Ended::Lost;
        }
        if self.keep_leases.load(Ordering::Acquire) {
            return Ended::Kept;
        }
        match self
            .scripts
            .release(&self.conn, &part.stream, &self.group, part.token)
            .await
        {
            Ok(true) => Ended::Released,
            Ok(false) => Ended::Lost,
            Err(e) => {
                tracing::warn!(stream = %part.stream, error = %e, "releasing a lease failed; it expires by itself");
                Ended::Lost
            }
        }
    }

    async fn work(&self, part: &OwnedPartition) -> Ended {
        let Some(backlog) = self.take_over(part).await else {
            return Ended::Lost;
        };
        if !backlog.is_empty() {
            tracing::info!(stream = %part.stream, entries = backlog.len(), "taking over pending entries");
        }
        // Former owners now own nothing pending here: forget them, so the
        // group's consumer list shows who reads the stream now.
        let removed: redis::RedisResult<Vec<String>> = redis::Script::new(REMOVE_STALE_CONSUMERS)
            .key(&part.stream)
            .arg(&self.group)
            .arg(0)
            .arg(&self.consumer)
            .invoke_async(&mut self.conn.clone())
            .await;
        if let Err(e) = removed {
            tracing::debug!(stream = %part.stream, error = %e, "removing former owners failed");
        }
        let mut parking = match self.load_parking(part).await {
            Some(p) => p,
            None => return Ended::Lost,
        };
        if let Some(first) = backlog.first() {
            if !self.wait_remembered_retry(part, &first.id).await {
                return if part.abort.is_cancelled() {
                    Ended::Lost
                } else {
                    Ended::Released
                };
            }
        }
        let mut backlog: VecDeque<(RawEntry, bool)> =
            backlog.into_iter().map(|e| (e, true)).collect();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let feed = Feed {
            tx,
            queued: Arc::default(),
            valid_until: part.valid_until.clone(),
        };
        self.read_set.add(&part.stream, feed.clone());
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        let mut acks = Acks::default();
        loop {
            // Entries the reader has queued are ready too: they join the
            // acknowledgement batch before anything is sent. (Unless the
            // lease is lost or a sweep is due: the wait below sees to both.)
            let ready = backlog.pop_front().or_else(|| loop {
                if part.abort.is_cancelled() || Instant::now() >= next_sweep {
                    return None;
                }
                let v = rx.try_recv().ok()?;
                feed.queued.fetch_sub(1, Ordering::AcqRel);
                self.read_set.nudge();
                if let Some(e) = parse_entry(&v) {
                    return Some((e, false));
                }
            });
            let (entry, redelivered) = match ready {
                Some(e) => e,
                None => {
                    // Nothing ready: what is handled is acknowledged now.
                    if !self.flush(part, &mut acks).await {
                        return Ended::Lost;
                    }
                    tokio::select! {
                        biased;
                        _ = part.abort.cancelled() => return Ended::Lost,
                        _ = part.release.cancelled() => return Ended::Released,
                        _ = tokio::time::sleep_until(next_sweep) => {
                            next_sweep = Instant::now() + SWEEP_EVERY;
                            let idle = feed.queued.load(Ordering::Acquire) == 0;
                            match self.sweep(part, idle).await {
                                Some(stray) => backlog.extend(stray.into_iter().map(|e| (e, true))),
                                None => return Ended::Lost,
                            }
                            continue;
                        }
                        v = rx.recv() => match v {
                            Some(v) => {
                                feed.queued.fetch_sub(1, Ordering::AcqRel);
                                self.read_set.nudge();
                                match parse_entry(&v) {
                                    Some(e) => (e, false),
                                    None => continue, // not an entry: Redis never sends one
                                }
                            }
                            None => return Ended::Released,
                        },
                    }
                }
            };
            if part.release.is_cancelled() {
                // Not started: stays pending for the next owner.
                return if self.flush(part, &mut acks).await {
                    Ended::Released
                } else {
                    Ended::Lost
                };
            }
            if !self
                .handle_entry(part, entry, redelivered, &mut parking, &mut acks)
                .await
            {
                return Ended::Lost;
            }
        }
    }

    /// Claims every pending entry of the stream, in stream order. `None`
    /// when the lease is lost or the stop signal comes first.
    async fn take_over(&self, part: &OwnedPartition) -> Option<Vec<RawEntry>> {
        let mut out = Vec::new();
        let mut cursor = "0-0".to_owned();
        let mut failures = 0;
        loop {
            if part.abort.is_cancelled() {
                return None;
            }
            let page = self
                .scripts
                .claim_pending(
                    &self.conn,
                    &part.stream,
                    &self.group,
                    &self.consumer,
                    part.token,
                    &cursor,
                    self.claim_count,
                )
                .await;
            match page {
                Ok(Fenced::Done(v)) => {
                    let (next, claimed, deleted) = parse_autoclaim(&v);
                    if deleted > 0 {
                        tracing::warn!(stream = %part.stream, deleted, "pending entries were trimmed before being handled");
                    }
                    self.stats
                        .claimed
                        .fetch_add(claimed.len() as u64, Ordering::Relaxed);
                    out.extend(claimed);
                    if next == "0-0" {
                        return Some(out);
                    }
                    cursor = next;
                }
                Ok(Fenced::Lost) => return None,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(stream = %part.stream, error = %e, "taking over pending entries failed; retrying");
                    if failures > 50 || !self.sleep(part, Duration::from_millis(200)).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Claims (fenced) entries pending where no worker will handle them:
    /// - at another consumer of the group, delivered after this member took
    ///   the partition over (a former owner whose read was served after its
    ///   lease ended). They should not exist (see `reader`);
    /// - at this member itself, when it is `idle` (nothing queued, nothing
    ///   running: everything it was given is acknowledged or dead-lettered)
    ///   and they are idle past [`STRANDED_IDLE`]: a read whose reply was
    ///   lost (Redis died after recording the delivery, or the connection
    ///   broke).
    ///
    /// Either way they are handled now, after newer entries already handled:
    /// they cost order, never the entry. `None` when the lease is lost.
    async fn sweep(&self, part: &OwnedPartition, idle: bool) -> Option<Vec<RawEntry>> {
        let consumers = match pending_consumers(&self.conn, &part.stream, &self.group).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(stream = %part.stream, error = %e, "checking pending entries failed");
                return Some(Vec::new());
            }
        };
        let mut out = Vec::new();
        for consumer in consumers {
            let own = consumer == self.consumer;
            if own && !idle {
                continue;
            }
            let min_idle = if own { STRANDED_IDLE } else { Duration::ZERO };
            let ids = match pending_ids(&self.conn, &part.stream, &self.group, &consumer, min_idle)
                .await
            {
                Ok(ids) if !ids.is_empty() => ids,
                _ => continue,
            };
            match self
                .scripts
                .claim_ids(
                    &self.conn,
                    &part.stream,
                    &self.group,
                    &self.consumer,
                    part.token,
                    &ids,
                )
                .await
            {
                Ok(Fenced::Done(redis::Value::Array(entries))) => {
                    let why = if own {
                        "entries delivered to this member never reached it (a lost read reply)"
                    } else {
                        "entries pending at a former owner"
                    };
                    tracing::warn!(stream = %part.stream, consumer = %consumer, entries = entries.len(),
                                   "{why}; handling them now (out of order)");
                    out.extend(entries.iter().filter_map(parse_entry));
                }
                Ok(Fenced::Done(_)) => {}
                Ok(Fenced::Lost) => return None,
                Err(e) => {
                    tracing::warn!(stream = %part.stream, error = %e, "claiming stray entries failed")
                }
            }
        }
        self.stats
            .claimed
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Some(out)
    }

    /// Handles one entry, through the shared sequence (`entry`), until it is
    /// acknowledged (handled or dead-lettered). False when the lease is lost
    /// (or the worker aborted) before that.
    async fn handle_entry(
        &self,
        part: &OwnedPartition,
        entry: RawEntry,
        claimed: bool,
        parking: &mut Option<PartitionParking>,
        acks: &mut Acks,
    ) -> bool {
        // Redis's delivery count is the attempt number: it survives crashes
        // and failovers (a taken-over entry continues its count).
        let attempt = if claimed && entry.decoded.is_ok() {
            crate::runtime::failure::delivery_counts(
                &self.conn,
                &part.stream,
                &self.group,
                &self.consumer,
                std::slice::from_ref(&entry.id),
            )
            .await
            .get(&entry.id)
            .copied()
            .unwrap_or(1)
        } else {
            1
        };
        let mut site = PartitionSite {
            ctx: self,
            part,
            parking,
            acks,
        };
        let settled = entry::run(&mut site, &self.handler, entry, attempt, claimed).await;
        settled != Settled::Abandoned
    }

    /// Where entry `id` of this partition was read, for its dead letter.
    pub(super) fn source<'a>(
        &'a self,
        part: &'a OwnedPartition,
        id: &'a str,
    ) -> crate::runtime::failure::Source<'a> {
        crate::runtime::failure::Source {
            group: &self.group,
            consumer: &self.consumer,
            stream: &part.stream,
            partition: part.partition,
            entry_id: id,
        }
    }

    /// Acknowledges what `acks` holds in one fenced call; true when done
    /// (or nothing was waiting), false when the lease is lost.
    pub(super) async fn flush(&self, part: &OwnedPartition, acks: &mut Acks) -> bool {
        if acks.ids.is_empty() {
            return true;
        }
        let ids = std::mem::take(&mut acks.ids);
        acks.since = None;
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.ack(part, &ids).await
    }

    /// Acknowledges `ids` through the fenced script, retrying transient errors.
    async fn ack(&self, part: &OwnedPartition, ids: &[&str]) -> bool {
        let mut failures = 0u32;
        loop {
            match self
                .scripts
                .ack(&self.conn, &part.stream, &self.group, part.token, ids)
                .await
            {
                Ok(Fenced::Done(n)) => {
                    self.stats.acked.fetch_add(n, Ordering::Relaxed);
                    return true;
                }
                Ok(Fenced::Lost) => {
                    tracing::warn!(stream = %part.stream, entries = ids.len(), "lease lost before the ack; the next owner handles these entries again");
                    return false;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(stream = %part.stream, error = %e, failures, "ack failed; retrying");
                    let delay = crate::connection::backoff(
                        failures,
                        Duration::from_millis(50),
                        Duration::from_secs(2),
                    );
                    if !self.sleep_unless_aborted(part, delay).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Waits while the lease's local deadline has passed (renewals are
    /// failing); false if the worker is aborted meanwhile.
    pub(super) async fn wait_for_valid_lease(&self, part: &OwnedPartition) -> bool {
        loop {
            let now = self.epoch.elapsed().as_millis() as u64;
            if now < part.valid_until.load(Ordering::Acquire) {
                return true;
            }
            if !self
                .sleep_unless_aborted(part, Duration::from_millis(50))
                .await
            {
                return false;
            }
        }
    }

    /// Resolves once the lease's local deadline has passed (renewals keep
    /// pushing it out).
    pub(super) async fn lease_lapses(&self, part: &OwnedPartition) {
        loop {
            let now = self.epoch.elapsed().as_millis() as u64;
            let until = part.valid_until.load(Ordering::Acquire);
            if now >= until {
                return;
            }
            tokio::time::sleep(Duration::from_millis(until - now)).await;
        }
    }

    /// Sleeps; false if released or aborted first.
    pub(super) async fn sleep(&self, part: &OwnedPartition, d: Duration) -> bool {
        tokio::select! {
            _ = part.abort.cancelled() => false,
            _ = part.release.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// Sleeps; false if aborted first.
    pub(super) async fn sleep_unless_aborted(&self, part: &OwnedPartition, d: Duration) -> bool {
        tokio::select! {
            _ = part.abort.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}
