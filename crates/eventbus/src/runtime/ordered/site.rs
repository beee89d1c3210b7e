//! The ordered mode's side of the shared per-entry sequence (`entry`):
//! attempts run only while the lease is surely held and within the
//! in-flight limit; acks are fenced; a retry waits in place (the partition
//! waits); a dead letter that cannot be written is tried again.

use std::future::Future;
use std::time::Duration;

use uuid::Uuid;

use super::partition_worker::{Acks, OwnedPartition, WorkerContext};
use crate::deadletter::park::PartitionParking;
use crate::handler::{Handler, HandlerError};
use crate::runtime::entry::{Parts, Retry, Settled, Site};
use crate::runtime::failure::Source;

/// One entry of an owned partition.
pub(crate) struct PartitionSite<'a, H> {
    pub(crate) ctx: &'a WorkerContext<H>,
    pub(crate) part: &'a OwnedPartition,
    pub(crate) parking: &'a mut Option<PartitionParking>,
    /// Handled entries waiting for their fenced ack.
    pub(crate) acks: &'a mut Acks,
}

impl<H: Handler> PartitionSite<'_, H> {
    /// Sends the waiting acks; false when the lease is lost.
    async fn flush(&mut self) -> bool {
        self.ctx.flush(self.part, self.acks).await
    }
}

fn settled(kept: bool) -> Settled {
    if kept {
        Settled::Done
    } else {
        Settled::Abandoned
    }
}

impl<H: Handler> Site for PartitionSite<'_, H> {
    fn parts(&self) -> Parts<'_> {
        Parts {
            stats: &self.ctx.stats,
            failures: &self.ctx.failures,
            conn: &self.ctx.conn,
        }
    }

    fn source<'a>(&'a self, id: &'a str) -> Source<'a> {
        self.ctx.source(self.part, id)
    }

    fn route(&self, _envelope: &crate::Envelope) -> (String, u32) {
        (self.part.topic.clone(), self.part.partition)
    }

    fn parks(&self) -> bool {
        self.parking.is_some()
    }

    async fn parked_behind(&mut self, key: &str) -> Result<Option<String>, Settled> {
        match self.ctx.held_by(self.part, self.parking, key).await {
            None => Ok(None),
            Some(Some(head)) => Ok(Some(head)),
            Some(None) => Err(Settled::Abandoned),
        }
    }

    async fn attempt<F>(&mut self, attempt: F) -> Result<Result<(), HandlerError>, Settled>
    where
        F: Future<Output = Result<(), HandlerError>> + Send,
    {
        let (ctx, part) = (self.ctx, self.part);
        if !ctx.wait_for_valid_lease(part).await {
            return Err(Settled::Abandoned);
        }
        let _permit = tokio::select! {
            _ = part.abort.cancelled() => return Err(Settled::Abandoned),
            p = ctx.in_flight.acquire() => p.expect("semaphore never closed"),
        };
        tokio::select! {
            _ = part.abort.cancelled() => Err(Settled::Abandoned),
            // The handler is dropped (an --exec command killed, a
            // transaction rolled back): past its local deadline the
            // lease may already be someone else's.
            _ = ctx.lease_lapses(part) => {
                tracing::warn!(stream = %part.stream,
                               "lease lapsed while handling (renewals failing or this process was paused); abandoning the entry");
                Err(Settled::Abandoned)
            }
            r = attempt => Ok(r),
        }
    }

    async fn ack(&mut self, id: &str) -> Settled {
        if self.acks.push(id, self.ctx.partition_batch) {
            settled(self.flush().await)
        } else {
            Settled::Done
        }
    }

    async fn ack_dead_letter(&mut self, id: &str) -> Settled {
        // At once: a crash before it would write the dead letter again.
        self.acks.push(id, 1);
        settled(self.flush().await)
    }

    async fn retry(&mut self, id: &str, _attempt: u64, delay: Duration) -> Retry {
        // The entries handled before this one do not wait for its retries.
        if !self.flush().await {
            return Retry::Left(Settled::Abandoned);
        }
        let (ctx, part) = (self.ctx, self.part);
        // A long wait is written down, so that the partition's next owner
        // (after a crash, a restart or a rebalance) waits out the rest.
        let remembered = ctx.failures.schedules(delay) && ctx.remember_retry(part, id, delay).await;
        // A release stops retrying: the entry stays pending and the next
        // owner starts with it, its count intact.
        if part.release.is_cancelled() || !ctx.sleep(part, delay).await {
            return Retry::Left(settled(
                !part.abort.is_cancelled() && part.release.is_cancelled(),
            ));
        }
        if remembered {
            ctx.forget_retries(part).await;
        }
        if !ctx.wait_for_valid_lease(part).await {
            return Retry::Left(Settled::Abandoned);
        }
        // A new delivery: Redis counts the attempt.
        match crate::runtime::failure::reclaim(
            &ctx.conn,
            &part.stream,
            &ctx.group,
            &ctx.consumer,
            id,
        )
        .await
        {
            Some(entry) => Retry::Again(Box::new(entry)),
            None => Retry::Left(Settled::Done), // no longer pending (acknowledged elsewhere)
        }
    }

    async fn dead_lettered(&mut self, key: &str, dead_letter: Uuid) -> crate::Result<()> {
        match self.parking.as_mut() {
            Some(p) => p.park(&self.ctx.conn, key, dead_letter).await,
            None => Ok(()),
        }
    }

    async fn after_failed_write(&mut self) -> Option<Settled> {
        if !self.flush().await {
            return Some(Settled::Abandoned);
        }
        // The partition waits for its dead letter: moving on would lose it.
        if self
            .ctx
            .sleep_unless_aborted(self.part, Duration::from_secs(1))
            .await
        {
            None
        } else {
            Some(Settled::Abandoned)
        }
    }
}

/// The hash of an ordered group's long retry waits on one partition
/// stream (entry id → due time, ms since the Unix epoch), in the stream's
/// hash slot. Only the owner writes it; it holds at most the one entry the
/// partition waits for (and, after a crash, its stale predecessors, which
/// the next owner deletes).
pub(crate) fn retry_at_key(stream: &str, group: &str) -> String {
    format!("{stream}:retry-at:{group}")
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl<H: Handler> WorkerContext<H> {
    /// Writes down that entry `id` of `part` retries `delay` from now.
    /// False if it could not be written (the wait is then in memory only).
    async fn remember_retry(&self, part: &OwnedPartition, id: &str, delay: Duration) -> bool {
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 4);
        let key = retry_at_key(&part.stream, &self.group);
        let written: redis::RedisResult<()> = redis::pipe()
            .hset(&key, id, now_ms().saturating_add(delay_ms))
            .ignore()
            // Outlives the wait; a hash left by a crash goes by itself.
            .pexpire(&key, delay_ms.saturating_add(86_400_000))
            .ignore()
            .query_async(&mut self.conn.clone())
            .await;
        match written {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(stream = %part.stream, error = %e,
                               "writing down a long retry failed; a restart starts its wait again");
                false
            }
        }
    }

    /// Deletes the partition's written-down retry waits.
    async fn forget_retries(&self, part: &OwnedPartition) {
        let r: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(retry_at_key(&part.stream, &self.group))
            .query_async(&mut self.conn.clone())
            .await;
        if let Err(e) = r {
            tracing::debug!(stream = %part.stream, error = %e, "deleting retry waits failed");
        }
    }

    /// Before a new owner handles the first entry it took over: if a former
    /// owner wrote down a long retry wait for it, waits out the rest.
    /// False when the lease is lost or released meanwhile.
    pub(super) async fn wait_remembered_retry(&self, part: &OwnedPartition, id: &str) -> bool {
        if self.failures.scheduled_retry_after.is_none() {
            return true;
        }
        let due: redis::RedisResult<Option<i64>> = redis::cmd("HGET")
            .arg(retry_at_key(&part.stream, &self.group))
            .arg(id)
            .query_async(&mut self.conn.clone())
            .await;
        let due = match due {
            Ok(Some(due)) => due,
            Ok(None) => return true,
            Err(e) => {
                tracing::warn!(stream = %part.stream, error = %e,
                               "reading a former owner's retry wait failed; retrying now");
                return true;
            }
        };
        let left = due.saturating_sub(now_ms());
        if left > 0 {
            tracing::info!(stream = %part.stream, entry = id, wait_ms = left,
                           "a former owner's retry is not due yet; waiting out the rest");
            let left = Duration::from_millis(u64::try_from(left).unwrap_or(0));
            if !self.sleep(part, left).await {
                return false;
            }
        }
        self.forget_retries(part).await;
        true
    }
}
