//! Queries and actions on the PostgreSQL dead-letter store.

use std::time::Duration;

use crate::connection::RedisConn;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{AuditEntry, DeadLetter, DeadLetterStatus};
use crate::envelope::Envelope;
use crate::handler::ErrorClass;
use crate::pg::{db_error, safe, DbSchema};
use crate::topology::Topology;
use crate::{Error, Result};

/// Which dead letters an action applies to. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    /// Exactly these ids (when not empty).
    pub ids: Vec<Uuid>,
    /// Failed by this group.
    pub group: Option<String>,
    /// Of this event type.
    pub event_type: Option<String>,
    /// With this partition key.
    pub key: Option<String>,
    /// Of this error class.
    pub error_class: Option<ErrorClass>,
    /// Last failed at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// In this status. Listing defaults to any; replay and discard act on `new` only.
    pub status: Option<DeadLetterStatus>,
    /// At most this many (default 100 for listing, all for actions).
    pub limit: Option<i64>,
    /// Skip this many (pagination), in last-failure order.
    pub offset: Option<i64>,
}

impl DeadLetterFilter {
    /// True when nothing narrows the selection.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
            && self.group.is_none()
            && self.event_type.is_none()
            && self.key.is_none()
            && self.error_class.is_none()
            && self.since.is_none()
    }

    /// `WHERE ...` with `$n` placeholders from `first`, and the values in order.
    fn sql(&self, first: usize) -> (String, Vec<Bind>) {
        let mut clauses = Vec::new();
        let mut binds = Vec::new();
        let mut next = |b: Bind, clause: &dyn Fn(usize) -> String, clauses: &mut Vec<String>| {
            binds.push(b);
            clauses.push(clause(first + binds.len() - 1));
        };
        if !self.ids.is_empty() {
            next(
                Bind::Ids(self.ids.clone()),
                &|n| format!("id = ANY(${n})"),
                &mut clauses,
            );
        }
        if let Some(g) = &self.group {
            next(
                Bind::Text(g.clone()),
                &|n| format!("group_name = ${n}"),
                &mut clauses,
            );
        }
        if let Some(t) = &self.event_type {
            next(
                Bind::Text(t.clone()),
                &|n| format!("event_type = ${n}"),
                &mut clauses,
            );
        }
        if let Some(k) = &self.key {
            next(
                Bind::Text(k.clone()),
                &|n| format!("key = ${n}"),
                &mut clauses,
            );
        }
        if let Some(c) = self.error_class {
            next(
                Bind::Text(c.as_str().into()),
                &|n| format!("error_class = ${n}"),
                &mut clauses,
            );
        }
        if let Some(s) = self.since {
            next(
                Bind::Time(s),
                &|n| format!("last_failed_at >= ${n}"),
                &mut clauses,
            );
        }
        if let Some(s) = self.status {
            next(
                Bind::Text(s.as_str().into()),
                &|n| format!("status = ${n}"),
                &mut clauses,
            );
        }
        let sql = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        (sql, binds)
    }
}

#[derive(Debug, Clone)]
enum Bind {
    Ids(Vec<Uuid>),
    Text(String),
    Time(DateTime<Utc>),
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    binds: &'q [Bind],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    for b in binds {
        q = match b {
            Bind::Ids(ids) => q.bind(ids),
            Bind::Text(t) => q.bind(t),
            Bind::Time(t) => q.bind(t),
        };
    }
    q
}

const COLUMNS: &str = "id, group_name, event_id, event_type, key, envelope, consumer, stream, partition, \
    entry_id, attempts, error_class, error_message, first_failed_at, last_failed_at, status, replay_count, \
    raw_fields, origin";

/// A stored row as a [`DeadLetter`]: the envelope, its type and key exact
/// again when the row keeps the raw fields (see [`super::storable`]).
fn row_to_dead_letter(r: &PgRow) -> std::result::Result<DeadLetter, sqlx::Error> {
    let stored: serde_json::Value = r.try_get::<sqlx::types::Json<serde_json::Value>, _>(5)?.0;
    let raw: Option<Vec<u8>> = r.try_get(17)?;
    let exact = raw
        .as_deref()
        .and_then(|raw| super::restore(&stored, Some(raw)));
    let mut event_type: String = r.try_get(3)?;
    let mut key: String = r.try_get(4)?;
    let envelope = match exact {
        Some(e) => {
            event_type.clone_from(&e.event_type);
            key.clone_from(&e.key);
            serde_json::to_value(&e).expect("an envelope always serializes")
        }
        None => stored,
    };
    let raw_fields = raw
        .as_deref()
        .and_then(super::decode_raw_fields)
        .map(|f| f.iter().map(super::ShownField::of).collect());
    Ok(DeadLetter {
        id: r.try_get(0)?,
        group: r.try_get(1)?,
        event_id: r.try_get(2)?,
        event_type,
        key,
        envelope,
        raw_fields,
        origin: r.try_get(18)?,
        consumer: r.try_get(6)?,
        stream: r.try_get(7)?,
        partition: r.try_get(8)?,
        entry_id: r.try_get(9)?,
        attempts: r.try_get(10)?,
        error_class: r.try_get(11)?,
        error_message: r.try_get(12)?,
        first_failed_at: r.try_get(13)?,
        last_failed_at: r.try_get(14)?,
        status: r.try_get(15)?,
        replay_count: r.try_get(16)?,
    })
}

/// How a replay runs.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Only report what would be replayed.
    pub dry_run: bool,
    /// At most this many events per second.
    pub rate_per_sec: Option<f64>,
    /// Send to this group's replay stream instead of the group that failed it.
    pub to_group: Option<String>,
    /// Who asked (recorded in the audit trail).
    pub actor: String,
}

/// What a replay did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReplayReport {
    /// The dead letters selected.
    pub selected: Vec<Uuid>,
    /// How many were published again (0 on a dry run).
    pub replayed: usize,
    /// Whether it was a dry run.
    pub dry_run: bool,
}

/// Size and age of the dead-letter queue.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DlqDepth {
    /// Dead letters in status `new`.
    pub depth: i64,
    /// Age in seconds of the oldest `new` one.
    pub oldest_age_seconds: Option<f64>,
    /// Dead letters (re)recorded in the last minute.
    pub last_minute: i64,
}

/// Depth, oldest age and last-minute rate of the dead-letter queue.
pub async fn dlq_depth(pool: &PgPool, schema: &DbSchema) -> Result<DlqDepth> {
    let table = schema.table("eventbus_dead_letters");
    let (depth, oldest, last_minute): (i64, Option<f64>, i64) = sqlx::query_as(safe(&format!(
        "SELECT count(*) FILTER (WHERE status = 'new'), \
                extract(epoch FROM now() - min(first_failed_at) FILTER (WHERE status = 'new'))::float8, \
                count(*) FILTER (WHERE last_failed_at > now() - interval '1 minute') \
         FROM {table}"
    )))
    .fetch_one(pool)
    .await
    .map_err(|e| db_error(schema, e))?;
    Ok(DlqDepth {
        depth,
        oldest_age_seconds: oldest,
        last_minute,
    })
}

/// The PostgreSQL dead-letter store, with the Redis connection replays go through.
#[derive(Debug, Clone)]
pub struct DeadLetterStore {
    pool: PgPool,
    schema: DbSchema,
    topology: Topology,
    redis: RedisConn,
}

impl DeadLetterStore {
    /// A store in `schema`; replays go to `topology`'s replay streams.
    pub fn new(pool: PgPool, schema: DbSchema, topology: Topology, redis: RedisConn) -> Self {
        DeadLetterStore {
            pool,
            schema,
            topology,
            redis,
        }
    }

    /// Dead letters matching the filter, most recent failure first.
    pub async fn list(&self, f: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        let (clause, binds) = f.sql(1);
        let sql = format!(
            "SELECT {COLUMNS} FROM {} {clause} ORDER BY last_failed_at DESC, id LIMIT {} OFFSET {}",
            self.schema.table("eventbus_dead_letters"),
            f.limit.unwrap_or(100).clamp(1, 10_000),
            f.offset.unwrap_or(0).max(0)
        );
        let rows = bind_all(sqlx::query(safe(&sql)), &binds)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error(&self.schema, e))?;
        rows.iter()
            .map(row_to_dead_letter)
            .collect::<std::result::Result<_, _>>()
            .map_err(Error::from)
    }

    /// One dead letter and its history.
    pub async fn get(&self, id: Uuid) -> Result<Option<(DeadLetter, Vec<AuditEntry>)>> {
        let f = DeadLetterFilter {
            ids: vec![id],
            ..Default::default()
        };
        let Some(dl) = self.list(&f).await?.into_iter().next() else {
            return Ok(None);
        };
        let rows = sqlx::query(safe(&format!(
            "SELECT action, detail, at FROM {} WHERE dead_letter_id = $1 ORDER BY at, id",
            self.schema.table("eventbus_dead_letter_audit")
        )))
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error(&self.schema, e))?;
        let audit = rows
            .iter()
            .map(|r| {
                Ok(AuditEntry {
                    action: r.try_get(0)?,
                    detail: r.try_get::<sqlx::types::Json<serde_json::Value>, _>(1)?.0,
                    at: r.try_get(2)?,
                })
            })
            .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some((dl, audit)))
    }

    /// Selects for an action: `new` dead letters matching the filter
    /// (explicit ids may also be `replayed` ones, to replay again).
    async fn select_for_action(&self, f: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        let mut f = f.clone();
        if f.status.is_none() && f.ids.is_empty() {
            f.status = Some(DeadLetterStatus::New);
        }
        f.limit = Some(f.limit.unwrap_or(10_000));
        let mut selected = self.list(&f).await?;
        selected.retain(|d| d.status != "discarded");
        selected.reverse(); // oldest failure first
        Ok(selected)
    }

    /// Publishes the selected dead letters again, each to the replay stream
    /// of the group that failed it (or `to_group`), keeping the event id,
    /// and records the replay.
    pub async fn replay(&self, f: &DeadLetterFilter, opts: &ReplayOptions) -> Result<ReplayReport> {
        let mut selected = self.select_for_action(f).await?;
        // A row the relay could not publish is not an event a group failed:
        // it is fixed and inserted again, not replayed (docs/dead-letters.md).
        if let Some(dl) = selected.iter().find(|d| d.origin == "outbox") {
            if !f.ids.is_empty() {
                return Err(Error::InvalidEvent(format!(
                    "dead letter {} is an outbox row the relay could not publish ({}); it cannot be \
                     replayed: fix the row and INSERT it into the outbox again, then discard this one",
                    dl.id, dl.error_message
                )));
            }
        }
        selected.retain(|d| d.origin != "outbox");
        let ids: Vec<Uuid> = selected.iter().map(|d| d.id).collect();
        if opts.dry_run {
            return Ok(ReplayReport {
                selected: ids,
                replayed: 0,
                dry_run: true,
            });
        }
        let pause = opts
            .rate_per_sec
            .filter(|r| *r > 0.0)
            .map(|r| Duration::from_secs_f64(1.0 / r));
        let mut replayed = 0;
        for dl in &selected {
            let mut envelope: Envelope =
                serde_json::from_value(dl.envelope.clone()).map_err(|e| {
                    Error::InvalidEvent(format!(
                        "dead letter {} holds no valid envelope: {e}",
                        dl.id
                    ))
                })?;
            envelope
                .headers
                .insert("eventbus-replay-of".into(), dl.id.to_string());
            envelope.headers.insert(
                "eventbus-replay-count".into(),
                (dl.replay_count + 1).to_string(),
            );
            let group = opts.to_group.clone().unwrap_or_else(|| dl.group.clone());
            let stream = self.topology.replay_stream(&group);
            let mut cmd = redis::cmd("XADD");
            cmd.arg(&stream).arg("*");
            for (k, v) in envelope.to_fields() {
                cmd.arg(k).arg(v);
            }
            let _: String = cmd.query_async(&mut self.redis.clone()).await?;
            self.mark(
                dl.id,
                DeadLetterStatus::Replayed,
                "replayed",
                serde_json::json!({
                    "to_group": group, "stream": stream, "by": opts.actor,
                }),
            )
            .await?;
            replayed += 1;
            if let Some(p) = pause {
                tokio::time::sleep(p).await;
            }
        }
        Ok(ReplayReport {
            selected: ids,
            replayed,
            dry_run: false,
        })
    }

    /// Marks the selected `new` dead letters discarded. Returns their ids.
    pub async fn discard(
        &self,
        f: &DeadLetterFilter,
        actor: &str,
        dry_run: bool,
    ) -> Result<Vec<Uuid>> {
        let selected = self.select_for_action(f).await?;
        let ids: Vec<Uuid> = selected.iter().map(|d| d.id).collect();
        if !dry_run {
            for (id, dl) in ids.iter().zip(&selected) {
                // Park mode: a discarded dead letter no longer holds its
                // key. Released first, so that a failure leaves the dead
                // letter `new`, to be discarded again (a no-op for keys it
                // did not hold).
                crate::ordered::park::resolve_event(
                    &self.redis,
                    &self.topology,
                    &dl.group,
                    &dl.event_type,
                    &dl.key,
                    *id,
                )
                .await?;
                self.mark(
                    *id,
                    DeadLetterStatus::Discarded,
                    "discarded",
                    serde_json::json!({"by": actor}),
                )
                .await?;
            }
        }
        Ok(ids)
    }

    /// Deletes dead letters (any status) whose last failure is older than
    /// `older_than`, with their audit trail, and trims the Redis dead stream
    /// to the same age. Returns how many rows were deleted.
    pub async fn purge(&self, older_than: Duration, dry_run: bool) -> Result<u64> {
        let table = self.schema.table("eventbus_dead_letters");
        let audit = self.schema.table("eventbus_dead_letter_audit");
        let cutoff =
            Utc::now() - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        if dry_run {
            let (n,): (i64,) = sqlx::query_as(safe(&format!(
                "SELECT count(*) FROM {table} WHERE last_failed_at < $1"
            )))
            .bind(cutoff)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_error(&self.schema, e))?;
            return Ok(n as u64);
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(safe(&format!(
            "DELETE FROM {audit} WHERE dead_letter_id IN (SELECT id FROM {table} WHERE last_failed_at < $1)"
        )))
        .bind(cutoff)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&self.schema, e))?;
        let n = sqlx::query(safe(&format!(
            "DELETE FROM {table} WHERE last_failed_at < $1"
        )))
        .bind(cutoff)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&self.schema, e))?
        .rows_affected();
        tx.commit().await?;
        // Stream ids start with a millisecond timestamp: MINID drops older entries.
        let _: i64 = redis::cmd("XTRIM")
            .arg(self.topology.dead_stream())
            .arg("MINID")
            .arg(cutoff.timestamp_millis().max(0))
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(n)
    }

    async fn mark(
        &self,
        id: Uuid,
        status: DeadLetterStatus,
        action: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        let table = self.schema.table("eventbus_dead_letters");
        let audit = self.schema.table("eventbus_dead_letter_audit");
        let mut tx = self.pool.begin().await?;
        let bump = if status == DeadLetterStatus::Replayed {
            ", replay_count = replay_count + 1"
        } else {
            ""
        };
        sqlx::query(safe(&format!(
            "UPDATE {table} SET status = $2, updated_at = now(){bump} WHERE id = $1"
        )))
        .bind(id)
        .bind(status.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&self.schema, e))?;
        sqlx::query(safe(&format!(
            "INSERT INTO {audit} (dead_letter_id, action, detail) VALUES ($1, $2, $3)"
        )))
        .bind(id)
        .bind(action)
        .bind(sqlx::types::Json(detail))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&self.schema, e))?;
        tx.commit().await?;
        Ok(())
    }
}
