//! The inbox: each event's effects happen once per consumer group.
//!
//! [`Inbox`] wraps an [`InboxHandler`] as a [`Handler`](crate::Handler). It records
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
mod coalesce;
mod layer;

pub use batch::{Inbox, InboxConfig, Savepoints, DEFAULT_INBOX_BATCH, DEFAULT_INBOX_PARALLEL};
pub use layer::{Deduplicated, InboxLayer};

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use super::{db_error, safe, DbSchema};
use crate::handler::{Delivery, HandlerError};
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
    /// Batches rolled back after a handler failed without a savepoint and
    /// run again with one per event ([`Savepoints::OnFailure`]).
    pub reruns: AtomicU64,
}

fn insert_sql(schema: &DbSchema) -> String {
    format!(
        "INSERT INTO {} (group_name, event_id, event_type) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        schema.table("eventbus_inbox")
    )
}

/// Records a batch of `(group, event id, event type)` in one statement
/// (`INSERT … SELECT * FROM unnest(…) ON CONFLICT DO NOTHING`); returns the
/// ids that were not recorded before. Used by both the [`Inbox`]'s
/// transactions and the [`InboxLayer`]'s records.
async fn record_batch<'r>(
    conn: &mut sqlx::PgConnection,
    sql: &str,
    rows: impl Iterator<Item = (&'r str, Uuid, &'r str)>,
) -> Result<std::collections::HashSet<Uuid>, sqlx::Error> {
    let (mut groups, mut ids, mut types) = (Vec::new(), Vec::new(), Vec::new());
    for (group, id, event_type) in rows {
        groups.push(group);
        ids.push(id);
        types.push(event_type);
    }
    let new: Vec<Uuid> = sqlx::query_scalar(safe(sql))
        .bind(&groups)
        .bind(&ids)
        .bind(&types)
        .fetch_all(conn)
        .await?;
    Ok(new.into_iter().collect())
}

/// The statement of [`record_batch`] for `schema`.
fn record_batch_sql(schema: &DbSchema) -> String {
    format!(
        "INSERT INTO {} (group_name, event_id, event_type) \
         SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[]) \
         ON CONFLICT DO NOTHING RETURNING event_id",
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
