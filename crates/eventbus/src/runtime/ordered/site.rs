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
        // A release stops retrying: the entry stays pending and the next
        // owner starts with it, its count intact.
        if part.release.is_cancelled() || !ctx.sleep(part, delay).await {
            return Retry::Left(settled(
                !part.abort.is_cancelled() && part.release.is_cancelled(),
            ));
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
