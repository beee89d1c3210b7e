//! The inbox: each event's effects happen once per consumer group.
//!
//! [`Inbox`] wraps an [`InboxHandler`] as a [`Handler`]. It records
//! `(group, event_id)` in `eventbus_inbox` in the same transaction as the
//! handler's writes:
//! - a delivery of an event already recorded (a redelivery of an event
//!   already handled) skips the handler, and the entry is acknowledged;
//! - otherwise the handler runs with that transaction, which commits, and
//!   only then does the runtime acknowledge the entry.
//!
//! Deliveries ready together share one transaction, each handler in a
//! savepoint of its own ([`batch`](self::batch) has the details and
//! [`InboxConfig`] the knobs).
//!
//! A crash anywhere before the commit rolls back both the inbox rows and the
//! handlers' writes, and the entries are delivered again. A crash after the
//! commit and before the ack means redeliveries that find their rows and are
//! skipped. Either way each handler's writes commit exactly once.

mod batch;

pub use batch::{Inbox, InboxConfig, DEFAULT_INBOX_BATCH};

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use super::{db_error, safe, DbSchema, PoolGate};
use crate::handler::{Delivery, Handler, HandlerError};
use crate::Result;

/// A handler whose writes join the inbox transaction.
pub trait InboxHandler: Send + Sync + 'static {
    /// Handles one event. Write with `tx`: the writes commit together with
    /// the inbox row, or not at all. Returning an error rolls everything back.
    fn handle<'a>(
        &'a self,
        delivery: &'a Delivery,
        tx: &'a mut PgConnection,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a;
}

/// Counters of an inbox.
#[derive(Debug, Default)]
pub struct InboxStats {
    /// Events handled and committed.
    pub committed: AtomicU64,
    /// Deliveries skipped because the event was already handled.
    pub duplicates: AtomicU64,
    /// Transactions committed by a batched [`Inbox`] (`committed /
    /// batches` is the mean batch).
    pub batches: AtomicU64,
}

fn insert_sql(schema: &DbSchema) -> String {
    format!(
        "INSERT INTO {} (group_name, event_id, event_type) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        schema.table("eventbus_inbox")
    )
}

fn retryable(what: &str, e: impl std::fmt::Display) -> HandlerError {
    HandlerError::retryable(format!("inbox {what}: {e}"))
}

/// Records `(group, event_id)` outside a handler transaction (used by
/// `consume --inbox --exec`). Returns false if it was already there.
pub async fn record_inbox<'c>(
    executor: impl PgExecutor<'c>,
    schema: &DbSchema,
    group: &str,
    event_id: Uuid,
    event_type: &str,
) -> Result<bool> {
    let done = sqlx::query(safe(&insert_sql(schema)))
        .bind(group)
        .bind(event_id)
        .bind(event_type)
        .execute(executor)
        .await
        .map_err(|e| db_error(schema, e))?;
    Ok(done.rows_affected() == 1)
}

/// True if the group has already handled the event.
pub async fn inbox_contains<'c>(
    executor: impl PgExecutor<'c>,
    schema: &DbSchema,
    group: &str,
    event_id: Uuid,
) -> Result<bool> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE group_name = $1 AND event_id = $2)",
        schema.table("eventbus_inbox")
    );
    let (exists,): (bool,) = sqlx::query_as(safe(&sql))
        .bind(group)
        .bind(event_id)
        .fetch_one(executor)
        .await
        .map_err(|e| db_error(schema, e))?;
    Ok(exists)
}

/// The inbox as a layer, for handlers whose effects are outside
/// PostgreSQL (a command, an HTTP call: `eventbus consume --inbox --exec`):
/// a delivery of an event the group already handled is skipped (and
/// acknowledged), and an event is recorded once its handler succeeded.
///
/// A crash between the effect and the record repeats the effect once on
/// redelivery; for effects in PostgreSQL that must happen exactly once use
/// [`Inbox`] with an [`InboxHandler`], whose writes commit with the record.
/// See [`crate::layer`] for where it sits.
#[derive(Debug, Clone)]
pub struct InboxLayer {
    shared: Arc<LayerShared>,
}

#[derive(Debug)]
struct LayerShared {
    /// Handlers queue here for a connection, not inside the pool.
    gate: PoolGate,
    schema: DbSchema,
    stats: Arc<InboxStats>,
}

impl InboxLayer {
    /// An inbox in `schema`, its connections taken through `gate`.
    pub fn new(gate: PoolGate, schema: DbSchema) -> Self {
        InboxLayer {
            shared: Arc::new(LayerShared {
                gate,
                schema,
                stats: Arc::default(),
            }),
        }
    }

    /// Live counters (`committed` counts events recorded).
    pub fn stats(&self) -> Arc<InboxStats> {
        self.shared.stats.clone()
    }
}

impl<H> tower_layer::Layer<H> for InboxLayer {
    type Service = Deduplicated<H>;

    fn layer(&self, inner: H) -> Deduplicated<H> {
        Deduplicated {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The handler an [`InboxLayer`] builds.
#[derive(Debug, Clone)]
pub struct Deduplicated<H> {
    inner: H,
    shared: Arc<LayerShared>,
}

impl<H: Handler> Handler for Deduplicated<H> {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let s = &self.shared;
        let seen = {
            let mut conn = s
                .gate
                .acquire()
                .await
                .map_err(|e| retryable("connection", e))?;
            inbox_contains(
                &mut **conn,
                &s.schema,
                &delivery.group,
                delivery.envelope.id,
            )
            .await
            .map_err(|e| retryable("lookup", e))?
        };
        if seen {
            s.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(event_id = %delivery.envelope.id, group = %delivery.group, "already handled; skipped");
            return Ok(());
        }
        let (group, id, event_type) = (
            delivery.group.clone(),
            delivery.envelope.id,
            delivery.envelope.event_type.clone(),
        );
        self.inner.handle(delivery).await?;
        let mut conn = s
            .gate
            .acquire()
            .await
            .map_err(|e| retryable("connection", e))?;
        record_inbox(&mut **conn, &s.schema, &group, id, &event_type)
            .await
            .map_err(|e| retryable("record", e))?;
        s.stats.committed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Deletes inbox rows older than `retention`, in batches. Returns how many.
///
/// Choose the retention longer than the longest time an event can still be
/// redelivered (claim idle time × attempts, plus any dead-letter replay
/// window): a row deleted earlier lets a late redelivery run its handler again.
pub async fn cleanup_inbox(pool: &PgPool, schema: &DbSchema, retention: Duration) -> Result<u64> {
    super::delete_older_than(
        pool,
        schema,
        "eventbus_inbox",
        "handled_at",
        retention,
        10_000,
    )
    .await
}
