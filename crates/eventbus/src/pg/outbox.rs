//! Enqueueing events in the caller's transaction, and outbox read models.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, Row};

use super::{db_error, event_db_error, safe, DbSchema};
use crate::envelope::Envelope;
use crate::topology::{validate_event_type, Topology};
use crate::{Error, Result};

/// Outbox settings.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// The schema holding `eventbus_outbox`.
    pub schema: DbSchema,
    /// Refuse events whose encoded size is larger than this. Default 1 MiB.
    pub max_event_bytes: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            schema: DbSchema::default(),
            max_event_bytes: 1024 * 1024,
        }
    }
}

/// Writes events to `eventbus_outbox` in the caller's transaction: the event
/// commits or rolls back with the business data. The partition is computed
/// here, from the key.
#[derive(Debug, Clone)]
pub struct Outbox {
    topology: Topology,
    config: OutboxConfig,
    catalog: Option<std::sync::Arc<crate::catalog::Catalog>>,
    insert_one: String,
    insert_many: String,
    /// The same, with `deliver_at` (a separate statement, so enqueues
    /// without a due time send what they always did).
    insert_one_at: String,
    insert_many_at: String,
}

/// The columns an enqueue writes, for one event.
struct Row_ {
    version: i32,
    headers: String,
    data: String,
    partition: i32,
}

impl Outbox {
    /// An outbox for a topology (its partition count decides `partition`).
    pub fn new(topology: Topology, config: OutboxConfig) -> Result<Self> {
        if config.max_event_bytes == 0 {
            return Err(Error::Config("max_event_bytes must be positive".into()));
        }
        let table = config.schema.table("eventbus_outbox");
        let inserts = |at: bool| {
            let (col, one, arr, name) = if at {
                (", deliver_at", ", $13", ", $13::timestamptz[]", ", da")
            } else {
                ("", "", "", "")
            };
            let cols = format!(
                "event_id, event_type, version, key, partition, occurred_at, source, \
                 correlation_id, causation_id, traceparent, headers, data{col}"
            );
            let insert_one = format!(
                "INSERT INTO {table} ({cols}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12::json{one})"
            );
            let insert_many = format!(
                "INSERT INTO {table} ({cols}) \
                 SELECT e, t, v, k, p, o, s, c, ca, tp, h::jsonb, d::json{name} FROM UNNEST(\
                 $1::uuid[], $2::text[], $3::int[], $4::text[], $5::int[], $6::timestamptz[], $7::text[], \
                 $8::text[], $9::text[], $10::text[], $11::text[], $12::text[]{arr}) \
                 WITH ORDINALITY AS x(e, t, v, k, p, o, s, c, ca, tp, h, d{name}, n) ORDER BY n"
            );
            (insert_one, insert_many)
        };
        let (insert_one, insert_many) = inserts(false);
        let (insert_one_at, insert_many_at) = inserts(true);
        Ok(Outbox {
            topology,
            config,
            catalog: None,
            insert_one,
            insert_many,
            insert_one_at,
            insert_many_at,
        })
    }

    /// Validates every event against `catalog` before writing it: an
    /// invalid event, or an unknown type or version, is refused with every
    /// schema error listed ([`Error::Schema`]), and nothing of its batch is
    /// written.
    pub fn with_catalog(mut self, catalog: std::sync::Arc<crate::catalog::Catalog>) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// The schema.
    pub fn schema(&self) -> &DbSchema {
        &self.config.schema
    }

    /// The topology.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    fn prepare(&self, e: &Envelope) -> Result<Row_> {
        validate_event_type(&e.event_type)?;
        if let Some(catalog) = &self.catalog {
            catalog.validate(e)?;
        }
        if e.key.is_empty() {
            return Err(Error::InvalidEvent(format!(
                "event {} of type {} has an empty key",
                e.id, e.event_type
            )));
        }
        let version = i32::try_from(e.version)
            .map_err(|_| Error::InvalidEvent(format!("version {} is too large", e.version)))?;
        let data = serde_json::to_string(&e.data).expect("a JSON value always serializes");
        let headers = serde_json::to_string(&e.headers).expect("a string map always serializes");
        let size = data.len()
            + headers.len()
            + e.event_type.len()
            + e.key.len()
            + e.source.len()
            + e.correlation_id.as_ref().map_or(0, String::len)
            + e.causation_id.as_ref().map_or(0, String::len)
            + e.traceparent.as_ref().map_or(0, String::len)
            + 100;
        if size > self.config.max_event_bytes {
            return Err(Error::InvalidEvent(format!(
                "event {} is about {size} bytes, over the limit of {} bytes (EVENT_BUS_MAX_EVENT_BYTES)",
                e.id, self.config.max_event_bytes
            )));
        }
        Ok(Row_ {
            version,
            headers,
            data,
            partition: self.topology.partition_of(&e.key) as i32,
        })
    }

    /// Enqueues one event with the caller's executor (a transaction, a
    /// connection or a pool).
    ///
    /// With tracing on ([`crate::telemetry`]) the event gets a PRODUCER
    /// span (`create`, child of the caller's current span or of the
    /// `traceparent` it carries), whose context the row stores.
    pub async fn enqueue<'c>(&self, executor: impl PgExecutor<'c>, event: &Envelope) -> Result<()> {
        self.enqueue_one(executor, event, None).await
    }

    /// Enqueues one event due at `deliver_at` (`docs/scheduled.md`): the
    /// relay publishes it at once and it waits in Redis until then. A past
    /// time is delivered at once.
    pub async fn enqueue_at<'c>(
        &self,
        executor: impl PgExecutor<'c>,
        event: &Envelope,
        deliver_at: DateTime<Utc>,
    ) -> Result<()> {
        self.enqueue_one(executor, event, Some(deliver_at)).await
    }

    async fn enqueue_one<'c>(
        &self,
        executor: impl PgExecutor<'c>,
        event: &Envelope,
        deliver_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        crate::telemetry::produce(
            "create",
            std::slice::from_ref(event),
            |e| self.stream_of(e),
            async |events: &[Envelope]| self.insert_one(executor, &events[0], deliver_at).await,
        )
        .await
    }

    /// The stream `e` goes to (the producer span's destination).
    fn stream_of(&self, e: &Envelope) -> String {
        self.topology
            .stream_key(e.topic(), self.topology.partition_of(&e.key))
    }

    async fn insert_one<'c>(
        &self,
        executor: impl PgExecutor<'c>,
        event: &Envelope,
        deliver_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let row = self.prepare(event)?;
        let sql = if deliver_at.is_some() {
            &self.insert_one_at
        } else {
            &self.insert_one
        };
        let mut query = sqlx::query(safe(sql))
            .bind(event.id)
            .bind(&event.event_type)
            .bind(row.version)
            .bind(&event.key)
            .bind(row.partition)
            .bind(event.occurred_at)
            .bind(&event.source)
            .bind(&event.correlation_id)
            .bind(&event.causation_id)
            .bind(&event.traceparent)
            .bind(&row.headers)
            .bind(&row.data);
        if let Some(at) = deliver_at {
            query = query.bind(at);
        }
        query
            .execute(executor)
            .await
            .map_err(|e| event_db_error(&self.config.schema, e))?;
        Ok(())
    }

    /// Enqueues a typed event with the caller's executor, like
    /// [`Outbox::enqueue`] with the envelope built from the type
    /// ([`Event::to_envelope`](crate::Event::to_envelope)). Returns the
    /// event's id.
    pub async fn enqueue_event<'c, E: crate::events::Event>(
        &self,
        executor: impl PgExecutor<'c>,
        event: &E,
    ) -> Result<uuid::Uuid> {
        let envelope = event.to_envelope()?;
        self.enqueue(executor, &envelope).await?;
        Ok(envelope.id)
    }

    /// Enqueues a batch in one statement (rows keep the batch's order). Every
    /// event is checked first; if one is refused, nothing is written.
    pub async fn enqueue_batch<'c>(
        &self,
        executor: impl PgExecutor<'c>,
        events: &[Envelope],
    ) -> Result<()> {
        self.enqueue_many(executor, events, &[]).await
    }

    /// Enqueues a batch like [`Outbox::enqueue_batch`], `deliver_at[i]` the
    /// due time of `events[i]` (`None`: now).
    pub async fn enqueue_batch_at<'c>(
        &self,
        executor: impl PgExecutor<'c>,
        events: &[Envelope],
        deliver_at: &[Option<DateTime<Utc>>],
    ) -> Result<()> {
        if deliver_at.len() != events.len() {
            return Err(Error::InvalidInput(format!(
                "{} due times for {} events",
                deliver_at.len(),
                events.len()
            )));
        }
        self.enqueue_many(executor, events, deliver_at).await
    }

    async fn enqueue_many<'c>(
        &self,
        executor: impl PgExecutor<'c>,
        events: &[Envelope],
        deliver_at: &[Option<DateTime<Utc>>],
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        crate::telemetry::produce(
            "create",
            events,
            |e| self.stream_of(e),
            async |events: &[Envelope]| self.insert_many(executor, events, deliver_at).await,
        )
        .await
    }

    async fn insert_many<'c>(
        &self,
        executor: impl PgExecutor<'c>,
        events: &[Envelope],
        deliver_at: &[Option<DateTime<Utc>>],
    ) -> Result<()> {
        let rows = events
            .iter()
            .map(|e| self.prepare(e))
            .collect::<Result<Vec<_>>>()?;
        let col = |f: fn(&Envelope) -> Option<String>| events.iter().map(f).collect::<Vec<_>>();
        let sql = if deliver_at.is_empty() {
            &self.insert_many
        } else {
            &self.insert_many_at
        };
        let mut query = sqlx::query(safe(sql))
            .bind(events.iter().map(|e| e.id).collect::<Vec<_>>())
            .bind(
                events
                    .iter()
                    .map(|e| e.event_type.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.key.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.partition).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.source.clone()).collect::<Vec<_>>())
            .bind(col(|e| e.correlation_id.clone()))
            .bind(col(|e| e.causation_id.clone()))
            .bind(col(|e| e.traceparent.clone()))
            .bind(rows.iter().map(|r| r.headers.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.data.clone()).collect::<Vec<_>>());
        if !deliver_at.is_empty() {
            query = query.bind(deliver_at.to_vec());
        }
        query
            .execute(executor)
            .await
            .map_err(|e| event_db_error(&self.config.schema, e))?;
        Ok(())
    }
}

/// The unpublished backlog of one partition.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PartitionBacklog {
    /// Partition.
    pub partition: i32,
    /// Rows waiting to be published.
    pub backlog: i64,
    /// Age of the oldest waiting row, in seconds.
    pub oldest_age_seconds: Option<f64>,
    /// When the oldest waiting row was enqueued.
    pub oldest_created_at: Option<DateTime<Utc>>,
}

/// Backlog and oldest age per partition (only partitions with a backlog).
pub async fn outbox_status<'c>(
    executor: impl PgExecutor<'c>,
    schema: &DbSchema,
) -> Result<Vec<PartitionBacklog>> {
    let sql = format!(
        "SELECT partition, count(*), min(created_at), extract(epoch FROM now() - min(created_at))::float8 \
         FROM {} WHERE published_at IS NULL GROUP BY partition ORDER BY partition",
        schema.table("eventbus_outbox")
    );
    let rows = sqlx::query(safe(&sql))
        .fetch_all(executor)
        .await
        .map_err(|e| db_error(schema, e))?;
    Ok(rows
        .into_iter()
        .map(|r| PartitionBacklog {
            partition: r.get(0),
            backlog: r.get(1),
            oldest_created_at: r.get(2),
            oldest_age_seconds: r.get(3),
        })
        .collect())
}

/// Marks retained, already published rows created at or after `since` as
/// unpublished again, so the relay publishes them once more (after a Redis
/// data loss). Returns how many rows were requeued. Needs outbox retention.
pub async fn replay_published<'c>(
    executor: impl PgExecutor<'c>,
    schema: &DbSchema,
    since: DateTime<Utc>,
) -> Result<u64> {
    let sql = format!(
        "UPDATE {} SET published_at = NULL WHERE published_at IS NOT NULL AND created_at >= $1",
        schema.table("eventbus_outbox")
    );
    let done = sqlx::query(safe(&sql))
        .bind(since)
        .execute(executor)
        .await
        .map_err(|e| db_error(schema, e))?;
    Ok(done.rows_affected())
}
