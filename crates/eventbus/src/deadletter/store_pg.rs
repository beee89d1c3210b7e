//! Dead-letter records in PostgreSQL: `eventbus_dead_letters` (one row per
//! group and event) and its audit trail `eventbus_dead_letter_audit`.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::store::{DeadLetterFilter, DlqDepth, Mark};
use super::{AuditEntry, DeadLetter, DeadLetterStatus};
use crate::db::{db_error, safe, DbSchema};
use crate::{Error, Result};

#[derive(Debug, Clone)]
enum Bind {
    Ids(Vec<Uuid>),
    Text(String),
    Time(DateTime<Utc>),
}

/// `WHERE ...` with `$n` placeholders from `first`, and the values in order.
fn where_clause(f: &DeadLetterFilter, first: usize) -> (String, Vec<Bind>) {
    let mut clauses = Vec::new();
    let mut binds = Vec::new();
    let mut next = |b: Bind, column: &str, op: &str| {
        binds.push(b);
        let n = first + binds.len() - 1;
        clauses.push(match op {
            "any" => format!("{column} = ANY(${n})"),
            op => format!("{column} {op} ${n}"),
        });
    };
    if !f.ids.is_empty() {
        next(Bind::Ids(f.ids.clone()), "id", "any");
    }
    if let Some(g) = &f.group {
        next(Bind::Text(g.clone()), "group_name", "=");
    }
    if let Some(t) = &f.event_type {
        next(Bind::Text(t.clone()), "event_type", "=");
    }
    if let Some(k) = &f.key {
        next(Bind::Text(k.clone()), "key", "=");
    }
    if let Some(c) = f.error_class {
        next(Bind::Text(c.as_str().into()), "error_class", "=");
    }
    if let Some(s) = f.since {
        next(Bind::Time(s), "last_failed_at", ">=");
    }
    if let Some(s) = f.status {
        next(Bind::Text(s.as_str().into()), "status", "=");
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (sql, binds)
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
    let (envelope, exact, raw_fields) = crate::lossless::shown(stored, raw.as_deref());
    let (event_type, key) = match exact {
        Some(e) => (e.event_type, e.key),
        None => (r.try_get(3)?, r.try_get(4)?),
    };
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

/// The records of one schema.
#[derive(Debug, Clone)]
pub(crate) struct PgRecords {
    pub(crate) pool: PgPool,
    pub(crate) schema: DbSchema,
}

impl PgRecords {
    pub(crate) async fn list(&self, f: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        let (clause, binds) = where_clause(f, 1);
        let sql = format!(
            "SELECT {COLUMNS} FROM {} {clause} ORDER BY last_failed_at DESC, id LIMIT {} OFFSET {}",
            self.schema.table("eventbus_dead_letters"),
            f.limit(),
            f.offset()
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

    pub(crate) async fn get(&self, id: Uuid) -> Result<Option<(DeadLetter, Vec<AuditEntry>)>> {
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

    /// Deletes (or, on a dry run, counts) the rows last failed before
    /// `cutoff`, with their audit trail.
    pub(crate) async fn purge(&self, cutoff: DateTime<Utc>, dry_run: bool) -> Result<u64> {
        let table = self.schema.table("eventbus_dead_letters");
        let audit = self.schema.table("eventbus_dead_letter_audit");
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
        Ok(n)
    }

    /// Sets the status, counts a replay, and records the action.
    pub(crate) async fn mark(&self, id: Uuid, mark: &Mark) -> Result<()> {
        let table = self.schema.table("eventbus_dead_letters");
        let audit = self.schema.table("eventbus_dead_letter_audit");
        let mut tx = self.pool.begin().await?;
        let bump = if mark.status == DeadLetterStatus::Replayed {
            ", replay_count = replay_count + 1"
        } else {
            ""
        };
        sqlx::query(safe(&format!(
            "UPDATE {table} SET status = $2, updated_at = now(){bump} WHERE id = $1"
        )))
        .bind(id)
        .bind(mark.status.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&self.schema, e))?;
        sqlx::query(safe(&format!(
            "INSERT INTO {audit} (dead_letter_id, action, detail) VALUES ($1, $2, $3)"
        )))
        .bind(id)
        .bind(mark.action)
        .bind(sqlx::types::Json(&mark.detail))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&self.schema, e))?;
        tx.commit().await?;
        Ok(())
    }
}
