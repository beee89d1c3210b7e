//! The inbox as a layer ([`InboxLayer`]), for handlers whose effects are
//! outside PostgreSQL (a command, an HTTP call: `eventbus consume --inbox
//! --exec`): a delivery of an event the group already handled is skipped
//! (and acknowledged), and an event is recorded once its handler succeeded.
//!
//! Both steps are batched like the [`Inbox`](super::Inbox)'s transactions:
//! the lookups of deliveries ready together are one `SELECT`, and the
//! records of handlers that finished together are one multi-row `INSERT`
//! (up to the batch size each; none waits for a batch to fill).
//!
//! A crash between the effect and the record repeats the effect once on
//! redelivery; for effects in PostgreSQL that must happen exactly once use
//! [`Inbox`](super::Inbox) with an [`InboxHandler`](super::InboxHandler),
//! whose writes commit with the record. See [`crate::layer`] for where it
//! sits.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::oneshot;
use uuid::Uuid;

use super::coalesce::{Coalescer, Flush};
use super::{record_batch, retryable, InboxStats, DEFAULT_INBOX_BATCH};
use crate::db::{safe, DbSchema};
use crate::handler::{Delivery, Handler, HandlerError};
use crate::pg::PoolGate;

/// See the module docs.
#[derive(Clone)]
pub struct InboxLayer {
    shared: Arc<LayerShared>,
}

impl std::fmt::Debug for InboxLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxLayer").finish_non_exhaustive()
    }
}

struct LayerShared {
    lookups: Arc<Coalescer<Lookups>>,
    records: Arc<Coalescer<Records>>,
    stats: Arc<InboxStats>,
}

/// Where one request's answer goes.
type Answer<T> = oneshot::Sender<Result<T, HandlerError>>;

/// "Was it handled?" for a batch of `(group, event id)`.
struct Lookups {
    gate: PoolGate,
    sql: String,
}

/// Records a batch of `(group, event id, type)`.
struct Records {
    gate: PoolGate,
    sql: String,
    stats: Arc<InboxStats>,
}

impl InboxLayer {
    /// An inbox in `schema`, its connections taken through `gate`, with
    /// batches of up to [`DEFAULT_INBOX_BATCH`].
    pub fn new(gate: PoolGate, schema: DbSchema) -> Self {
        Self::with_batch(gate, schema, DEFAULT_INBOX_BATCH)
    }

    /// The same with batches of up to `batch` lookups and records (1: one
    /// statement per event).
    pub fn with_batch(gate: PoolGate, schema: DbSchema, batch: usize) -> Self {
        let table = schema.table("eventbus_inbox");
        let parallel = super::DEFAULT_INBOX_PARALLEL;
        let stats = Arc::<InboxStats>::default();
        let lookups = Lookups {
            gate: gate.clone(),
            sql: format!(
                "SELECT u.id FROM unnest($1::text[], $2::uuid[]) AS u(g, id) \
                 WHERE EXISTS (SELECT 1 FROM {table} i WHERE i.group_name = u.g AND i.event_id = u.id)"
            ),
        };
        let records = Records {
            gate,
            sql: super::record_batch_sql(&schema),
            stats: stats.clone(),
        };
        InboxLayer {
            shared: Arc::new(LayerShared {
                lookups: Coalescer::new(lookups, batch, parallel),
                records: Coalescer::new(records, batch, parallel),
                stats,
            }),
        }
    }

    /// Live counters (`committed` counts events recorded, `batches` the
    /// statements that recorded them).
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
#[derive(Clone)]
pub struct Deduplicated<H> {
    inner: H,
    shared: Arc<LayerShared>,
}

impl<H: std::fmt::Debug> std::fmt::Debug for Deduplicated<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deduplicated")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

async fn answer<T>(rx: oneshot::Receiver<Result<T, HandlerError>>) -> Result<T, HandlerError> {
    rx.await
        .unwrap_or_else(|_| Err(retryable("batch", "ended before this event's outcome")))
}

impl<H: Handler> Handler for Deduplicated<H> {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let s = &self.shared;
        let (group, id, event_type) = (
            delivery.group.clone(),
            delivery.envelope.id,
            delivery.envelope.event_type.clone(),
        );
        let (tx, rx) = oneshot::channel();
        s.lookups.push((group.clone(), id, tx));
        if answer(rx).await? {
            s.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(event_id = %id, group = %group, "already handled; skipped");
            return Ok(());
        }
        self.inner.handle(delivery).await?;
        let (tx, rx) = oneshot::channel();
        s.records.push((group, id, event_type, tx));
        answer(rx).await
    }
}

impl Flush for Lookups {
    type Item = (String, Uuid, Answer<bool>);

    async fn flush(&self, batch: Vec<Self::Item>) -> Vec<Self::Item> {
        let groups: Vec<&str> = batch.iter().map(|b| b.0.as_str()).collect();
        let ids: Vec<Uuid> = batch.iter().map(|b| b.1).collect();
        let found = async {
            let mut conn = self
                .gate
                .acquire()
                .await
                .map_err(|e| retryable("connection", e))?;
            sqlx::query_scalar::<_, Uuid>(safe(&self.sql))
                .bind(&groups)
                .bind(&ids)
                .fetch_all(&mut **conn)
                .await
                .map_err(|e| retryable("lookup", e))
        }
        .await
        .map(|seen| seen.into_iter().collect::<HashSet<Uuid>>());
        drop((groups, ids));
        for (_, id, tx) in batch {
            let _ = tx.send(
                found
                    .as_ref()
                    .map(|seen| seen.contains(&id))
                    .map_err(Clone::clone),
            );
        }
        Vec::new()
    }
}

impl Flush for Records {
    type Item = (String, Uuid, String, Answer<()>);

    async fn flush(&self, batch: Vec<Self::Item>) -> Vec<Self::Item> {
        let done = async {
            let mut conn = self
                .gate
                .acquire()
                .await
                .map_err(|e| retryable("connection", e))?;
            let rows = batch.iter().map(|b| (b.0.as_str(), b.1, b.2.as_str()));
            record_batch(&mut conn, &self.sql, rows)
                .await
                .map_err(|e| retryable("record", e))
        }
        .await;
        if done.is_ok() {
            self.stats
                .committed
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
        }
        for (.., tx) in batch {
            let _ = tx.send(done.as_ref().map(drop).map_err(Clone::clone));
        }
        Vec::new()
    }
}
