//! The batched inbox: many deliveries, one PostgreSQL transaction.
//!
//! Each delivery handed to [`Inbox`] joins a queue. Up to
//! [`InboxConfig::parallel`] batch runners (default 2) take what is queued (at most
//! [`InboxConfig::batch`] deliveries; a runner never waits to fill a batch,
//! it takes what is ready) and handle it in one transaction:
//!
//! 1. one multi-row insert records the batch in `eventbus_inbox`
//!    (`INSERT … SELECT unnest(…) ON CONFLICT DO NOTHING RETURNING
//!    event_id`); a delivery whose row already existed is a duplicate and
//!    skips its handler;
//! 2. each new event's handler runs in its own `SAVEPOINT`; a failing
//!    handler (or one whose writes cannot be released) is rolled back to its
//!    savepoint, its inbox row deleted, and that delivery alone fails (the
//!    runtime retries or dead-letters it as usual); the others go on;
//! 3. one `COMMIT`; only then does each delivery learn its outcome, so the
//!    runtime acknowledges nothing that is not committed (the unordered
//!    acker sends the batch's acks as one pipelined `XACK` per stream).
//!
//! Crashes keep the inbox's promise: before `COMMIT` nothing of the batch
//! is written and every entry is delivered again; after it, a redelivery
//! finds its row and is skipped.
//!
//! A handler still running after [`InboxConfig::item_timeout`] stops the
//! whole batch: its transaction is rolled back and its connection closed
//! (the statement it waits on may hold locks); that delivery fails as
//! retryable and every other one of the batch goes back to the front of the
//! queue, to run again in the next batch without losing an attempt.
//!
//! Why 64 by default: every handler that writes gets a subtransaction, and
//! a PostgreSQL backend caches at most 64 of them per transaction; beyond
//! that every other session's snapshots overflow to `pg_subtrans`, which
//! slows the whole server. The benchmark (docs/benchmarks.md) measured the
//! default too.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::coalesce::{Coalescer, Flush};
use super::{record_batch, record_batch_sql, retryable, InboxHandler, InboxStats};
use crate::db::{safe, DbSchema};
use crate::handler::{Delivery, Handler, HandlerError};
use crate::pg::PoolGate;
use crate::{Error, Result};

/// How an [`Inbox`] batches its deliveries (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxConfig {
    /// Most deliveries in one transaction (default 64). 1 is one
    /// transaction per event.
    pub batch: usize,
    /// Most transactions at once (default 2; `None`: the pool's size).
    /// Batches form while they are all busy, so fewer make larger batches
    /// and less work per event (docs/benchmarks.md measured 1, 2, 4 and 24);
    /// raise it for handlers that spend their time waiting.
    pub parallel: Option<usize>,
    /// A handler running longer than this stops its batch (default 10 s).
    /// Keep it below the consumer's attempt timeout.
    pub item_timeout: Duration,
    /// When handlers get their own savepoint (default: always).
    pub savepoints: Savepoints,
}

/// When an [`Inbox`]'s handlers run in savepoints of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Savepoints {
    /// Every handler in its own `SAVEPOINT` (one more round trip per event):
    /// a failure rolls back that handler alone, and no handler runs twice.
    #[default]
    PerEvent,
    /// Handlers run without savepoints. When one fails (or leaves the
    /// transaction aborted), the whole transaction is rolled back and the
    /// batch runs again with a savepoint per event. The same exactly-once
    /// effects in the database, one round trip per event fewer; the price
    /// is that after a failure the handlers of the batch up to the failing
    /// one run a second time (their first writes were rolled back, but
    /// anything they did outside the transaction happens twice).
    OnFailure,
}

/// The default largest batch.
pub const DEFAULT_INBOX_BATCH: usize = 64;

/// The default number of transactions an inbox runs at once.
pub const DEFAULT_INBOX_PARALLEL: usize = 2;

impl Default for InboxConfig {
    fn default() -> Self {
        InboxConfig {
            batch: DEFAULT_INBOX_BATCH,
            parallel: Some(DEFAULT_INBOX_PARALLEL),
            item_timeout: Duration::from_secs(10),
            savepoints: Savepoints::PerEvent,
        }
    }
}

impl InboxConfig {
    /// Refuses a batch or parallelism of 0 and a zero timeout.
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::Config("the inbox batch must be at least 1".into()));
        }
        if self.parallel == Some(0) {
            return Err(Error::Config(
                "the inbox must run at least 1 transaction at once".into(),
            ));
        }
        if self.item_timeout.is_zero() {
            return Err(Error::Config(
                "the inbox item timeout must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Wraps an [`InboxHandler`] as a consumer [`Handler`]: its deliveries are
/// handled in batches, one transaction each (see the module docs).
pub struct Inbox<H: InboxHandler> {
    queue: Arc<Coalescer<Shared<H>>>,
}

impl<H: InboxHandler> std::fmt::Debug for Inbox<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("config", &self.queue.flush.config)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared<H> {
    gate: PoolGate,
    insert_sql: String,
    delete_sql: String,
    handler: H,
    stats: Arc<InboxStats>,
    config: InboxConfig,
}

/// A delivery waiting for its batch, and where its outcome goes.
pub(crate) struct Pending {
    delivery: Delivery,
    done: oneshot::Sender<Result<(), HandlerError>>,
}

impl<H: InboxHandler> Inbox<H> {
    /// An inbox in `schema`, batching with the default [`InboxConfig`]. The
    /// group recorded is the delivery's group.
    ///
    /// Batches take their connections through a [`PoolGate`] sized to the
    /// pool, so the inbox opens at most the pool's connections and never
    /// cuts a connect off half-way.
    pub fn new(pool: sqlx::PgPool, schema: &DbSchema, handler: H) -> Self {
        Self::with_gate(PoolGate::new(pool), schema, handler)
    }

    /// An inbox sharing `gate` (and its pool) with other users of the pool,
    /// so that together they queue in one line.
    pub fn with_gate(gate: PoolGate, schema: &DbSchema, handler: H) -> Self {
        Self::build(gate, schema, handler, InboxConfig::default())
    }

    /// The same inbox, batching as `config` says. Refuses an invalid
    /// config.
    pub fn with_config(self, config: InboxConfig) -> Result<Self> {
        config.validate()?;
        let queue = Arc::into_inner(self.queue).ok_or_else(|| {
            Error::Config("an inbox's config must be set before it is used".into())
        })?;
        Ok(Self::start(Shared {
            config,
            ..queue.flush
        }))
    }

    fn build(gate: PoolGate, schema: &DbSchema, handler: H, config: InboxConfig) -> Self {
        Self::start(Shared {
            gate,
            insert_sql: record_batch_sql(schema),
            delete_sql: format!(
                "DELETE FROM {} WHERE group_name = $1 AND event_id = $2",
                schema.table("eventbus_inbox")
            ),
            handler,
            stats: Arc::default(),
            config,
        })
    }

    fn start(shared: Shared<H>) -> Self {
        let parallel = shared.config.parallel.unwrap_or_else(|| shared.gate.size());
        let batch = shared.config.batch;
        Inbox {
            queue: Coalescer::new(shared, batch, parallel),
        }
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<InboxStats> {
        self.queue.flush.stats.clone()
    }

    /// How it batches.
    pub fn config(&self) -> &InboxConfig {
        &self.queue.flush.config
    }
}

impl<H: InboxHandler> Handler for Inbox<H> {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let (done, outcome) = oneshot::channel();
        // Batches run in tasks of their own: one goes on if this delivery's
        // own attempt is cut off (its timeout), so the others are not.
        self.queue.push(Pending { delivery, done });
        outcome
            .await
            .unwrap_or_else(|_| Err(retryable("batch", "ended before this event's outcome")))
    }
}

/// How a batch's transaction ended.
enum Ended {
    /// Committed: each delivery's step, in order.
    Committed(Vec<Step>),
    /// Rolled back as a whole (nothing committed, or the commit's outcome
    /// is unknown).
    Failed(HandlerError),
    /// Delivery `n` ran past the item timeout; the batch was rolled back
    /// and its connection closed.
    TimedOut(usize),
}

/// How one delivery of a batch ended, before the commit.
enum Step {
    /// Already handled: skipped.
    Duplicate,
    /// Handled; committed with the batch.
    Handled,
    /// Failed and rolled back to its savepoint.
    Failed(HandlerError),
}

impl<H: InboxHandler> Flush for Shared<H> {
    type Item = Pending;

    /// Up to `max` queued deliveries whose attempt still waits, each event
    /// once (a second delivery of an event waits for the next batch, which
    /// then finds the first one's row or not).
    fn take(&self, queue: &mut VecDeque<Pending>, max: usize) -> Vec<Pending> {
        let mut batch = Vec::new();
        let mut ids = HashSet::new();
        let mut later = VecDeque::new();
        while batch.len() < max {
            let Some(p) = queue.pop_front() else { break };
            if p.done.is_closed() {
                continue; // its attempt was cut off: it is delivered again
            }
            if ids.insert(p.delivery.envelope.id) {
                batch.push(p);
            } else {
                later.push_back(p);
            }
        }
        while let Some(p) = later.pop_back() {
            queue.push_front(p);
        }
        batch
    }

    /// Handles one batch in one transaction and answers each delivery.
    async fn flush(&self, batch: Vec<Pending>) -> Vec<Pending> {
        let ended = match self.config.savepoints {
            Savepoints::PerEvent => self.transact(&batch).await,
            Savepoints::OnFailure => self.transact_optimistic(&batch).await,
        };
        match ended.unwrap_or_else(Ended::Failed) {
            Ended::Committed(steps) => {
                let mut committed = 0;
                for (p, step) in batch.into_iter().zip(steps) {
                    let outcome = match step {
                        Step::Duplicate => {
                            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(event_id = %p.delivery.envelope.id, group = %p.delivery.group, "already handled; skipped");
                            Ok(())
                        }
                        Step::Handled => {
                            committed += 1;
                            Ok(())
                        }
                        Step::Failed(e) => Err(e),
                    };
                    let _ = p.done.send(outcome);
                }
                self.stats.committed.fetch_add(committed, Ordering::Relaxed);
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                Vec::new()
            }
            Ended::Failed(e) => {
                // Nothing of the batch committed (or the commit's outcome
                // is unknown: a redelivery finds the rows or not; both are
                // safe).
                for p in batch {
                    let _ = p.done.send(Err(e.clone()));
                }
                Vec::new()
            }
            Ended::TimedOut(slow) => {
                let mut rest = batch;
                let p = rest.remove(slow);
                tracing::warn!(event_id = %p.delivery.envelope.id, group = %p.delivery.group,
                               timeout = ?self.config.item_timeout, others = rest.len(),
                               "an inbox handler ran past its timeout; its batch is rolled back and the others run again");
                let _ = p.done.send(Err(HandlerError::retryable(format!(
                    "inbox handler still running after {:?} (its batch was rolled back)",
                    self.config.item_timeout
                ))));
                rest
            }
        }
    }
}

impl<H: InboxHandler> Shared<H> {
    /// The batch without savepoints ([`Savepoints::OnFailure`]); when a
    /// handler fails, or the transaction is found aborted, it is rolled
    /// back and the whole batch runs again with a savepoint per event. (The
    /// failing handler runs again too: its failure may be an earlier
    /// handler's swallowed error, which only savepoints tell apart.)
    async fn transact_optimistic(&self, batch: &[Pending]) -> Result<Ended, HandlerError> {
        let mut conn = self.connect().await?;
        let (mut tx, new) = self.begin(&mut conn, batch).await?;
        let mut failed = false;
        for (i, p) in batch.iter().enumerate() {
            if !new.contains(&p.delivery.envelope.id) {
                continue;
            }
            let ran = tokio::time::timeout(
                self.config.item_timeout,
                self.handler.handle(&p.delivery, &mut tx),
            )
            .await;
            match ran {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    failed = true;
                    break;
                }
                Err(_) => {
                    drop(tx);
                    conn.close_on_drop();
                    drop(conn);
                    return Ok(Ended::TimedOut(i));
                }
            }
        }
        // A handler that swallowed a failed statement left the transaction
        // aborted, and COMMIT would roll it back without an error: look.
        let aborted = !failed && sqlx::raw_sql("SELECT 1").execute(&mut *tx).await.is_err();
        if !failed && !aborted {
            tx.commit().await.map_err(|e| retryable("commit", e))?;
            let steps = batch
                .iter()
                .map(|p| {
                    if new.contains(&p.delivery.envelope.id) {
                        Step::Handled
                    } else {
                        Step::Duplicate
                    }
                })
                .collect();
            return Ok(Ended::Committed(steps));
        }
        tx.rollback().await.map_err(|e| retryable("rollback", e))?;
        drop(conn);
        self.stats.reruns.fetch_add(1, Ordering::Relaxed);
        self.transact(batch).await
    }

    /// A connection for one batch.
    async fn connect(&self) -> Result<crate::pg::GatedConnection, HandlerError> {
        self.gate
            .acquire()
            .await
            .map_err(|e| retryable("connection", e))
    }

    /// Begins the batch's transaction and records `batch` in the inbox;
    /// the transaction and the ids that were new.
    async fn begin<'c>(
        &self,
        conn: &'c mut sqlx::PgConnection,
        batch: &[Pending],
    ) -> Result<(sqlx::Transaction<'c, sqlx::Postgres>, HashSet<uuid::Uuid>), HandlerError> {
        let mut tx = sqlx::Connection::begin(conn)
            .await
            .map_err(|e| retryable("begin", e))?;
        let rows = batch.iter().map(|p| {
            let d = &p.delivery;
            (
                d.group.as_str(),
                d.envelope.id,
                d.envelope.event_type.as_str(),
            )
        });
        let new = record_batch(&mut tx, &self.insert_sql, rows)
            .await
            .map_err(|e| retryable("insert", e))?;
        Ok((tx, new))
    }

    /// The transaction of one batch, a savepoint per handler (`Err`: it
    /// failed as a whole).
    async fn transact(&self, batch: &[Pending]) -> Result<Ended, HandlerError> {
        let mut conn = self.connect().await?;
        let (mut tx, new) = self.begin(&mut conn, batch).await?;
        let mut steps = Vec::with_capacity(batch.len());
        // The event whose handler succeeded and whose savepoint is still
        // open: it is released together with the next event's savepoint
        // (one round trip per event), or before the commit.
        let mut open: Option<usize> = None;
        for (i, p) in batch.iter().enumerate() {
            if !new.contains(&p.delivery.envelope.id) {
                steps.push(Step::Duplicate);
                continue;
            }
            let sql = if open.is_some() {
                "RELEASE SAVEPOINT eventbus_inbox; SAVEPOINT eventbus_inbox"
            } else {
                "SAVEPOINT eventbus_inbox"
            };
            if let Err(e) = sqlx::raw_sql(sql).execute(&mut *tx).await {
                // Releasing fails when the previous handler swallowed a
                // failed statement and left the transaction aborted: it is
                // that event's failure. Anything else fails the batch.
                let Some(prev) = open.take() else {
                    return Err(retryable("savepoint", e));
                };
                let failed = retryable("handler's writes", e);
                self.forget(&mut tx, &batch[prev]).await?;
                steps[prev] = Step::Failed(failed);
                sqlx::raw_sql("SAVEPOINT eventbus_inbox")
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| retryable("savepoint", e))?;
            }
            open = None;
            let ran = tokio::time::timeout(
                self.config.item_timeout,
                self.handler.handle(&p.delivery, &mut tx),
            )
            .await;
            match ran {
                Ok(Ok(())) => {
                    steps.push(Step::Handled);
                    open = Some(i);
                }
                Ok(Err(e)) => {
                    self.forget(&mut tx, p).await?;
                    steps.push(Step::Failed(e));
                }
                Err(_) => {
                    // The statement it waits on may hold locks: close the
                    // connection rather than wait for the rollback.
                    drop(tx);
                    conn.close_on_drop();
                    drop(conn);
                    return Ok(Ended::TimedOut(i));
                }
            }
        }
        if let Some(last) = open {
            if let Err(e) = sqlx::raw_sql("RELEASE SAVEPOINT eventbus_inbox")
                .execute(&mut *tx)
                .await
            {
                let failed = retryable("handler's writes", e);
                self.forget(&mut tx, &batch[last]).await?;
                steps[last] = Step::Failed(failed);
            }
        }
        tx.commit().await.map_err(|e| retryable("commit", e))?;
        Ok(Ended::Committed(steps))
    }

    /// Rolls the open savepoint (that of `p`'s handler) back and deletes
    /// `p`'s inbox row, so that it commits nothing of `p`.
    async fn forget(&self, tx: &mut sqlx::PgConnection, p: &Pending) -> Result<(), HandlerError> {
        sqlx::raw_sql("ROLLBACK TO SAVEPOINT eventbus_inbox; RELEASE SAVEPOINT eventbus_inbox")
            .execute(&mut *tx)
            .await
            .map_err(|e| retryable("rollback to savepoint", e))?;
        sqlx::query(safe(&self.delete_sql))
            .bind(&p.delivery.group)
            .bind(p.delivery.envelope.id)
            .execute(&mut *tx)
            .await
            .map_err(|e| retryable("forget", e))?;
        Ok(())
    }
}
