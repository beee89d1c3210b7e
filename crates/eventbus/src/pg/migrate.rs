//! Applies the SQL files of `migrations/` (embedded at build time).
//!
//! Each migration runs in its own transaction with `search_path` set to the
//! target schema, under a transaction-scoped advisory lock, so any number of
//! processes may run `eventbus migrate` at once: one applies, the others wait
//! and then find it applied. A migration that was applied and has since
//! changed is refused (its checksum is recorded).

use sqlx::{Acquire, PgConnection, Row};

use super::{db_error, safe, DbSchema};
use crate::{Error, Result};

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its number (the file name's prefix).
    pub version: i32,
    /// Its name (the rest of the file name).
    pub name: &'static str,
    /// Its SQL.
    pub sql: &'static str,
}

/// The embedded migrations, in order.
pub fn migrations() -> &'static [Migration] {
    &[
        Migration {
            version: 1,
            name: "outbox_inbox",
            sql: include_str!("../../../../migrations/0001_outbox_inbox.sql"),
        },
        Migration {
            version: 2,
            name: "dead_letters",
            sql: include_str!("../../../../migrations/0002_dead_letters.sql"),
        },
        Migration {
            version: 3,
            name: "parked_class",
            sql: include_str!("../../../../migrations/0003_parked_class.sql"),
        },
        Migration {
            version: 4,
            name: "refuse_and_isolate",
            sql: include_str!("../../../../migrations/0004_refuse_and_isolate.sql"),
        },
        Migration {
            version: 5,
            name: "deliver_at",
            sql: include_str!("../../../../migrations/0005_deliver_at.sql"),
        },
        Migration {
            version: 6,
            name: "notify_when_dozing",
            sql: include_str!("../../../../migrations/0006_notify_when_dozing.sql"),
        },
    ]
}

fn checksum(sql: &str) -> String {
    // Guards against edits, not attacks.
    let h = crate::topology::fnv1a64(crate::topology::FNV_OFFSET, sql.bytes());
    format!("{h:016x}")
}

/// Applies every migration not yet applied to `schema` (creating the schema
/// if needed). Returns the versions applied by this call.
pub async fn migrate(conn: &mut PgConnection, schema: &DbSchema) -> Result<Vec<i32>> {
    let mut applied_now = Vec::new();
    for m in migrations() {
        let mut tx = conn.begin().await?;
        // "already exists, skipping" notices are expected here, not news.
        sqlx::raw_sql("SET LOCAL client_min_messages = warning")
            .execute(&mut *tx)
            .await?;
        // One lock per schema, held until commit.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("eventbus-migrate:{}", schema.name()))
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(safe(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{}\"",
            schema.name()
        )))
        .execute(&mut *tx)
        .await?;
        let table = schema.table("eventbus_migrations");
        sqlx::raw_sql(safe(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                version integer PRIMARY KEY,
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())"
        )))
        .execute(&mut *tx)
        .await?;
        let existing = sqlx::query(safe(&format!(
            "SELECT checksum FROM {table} WHERE version = $1"
        )))
        .bind(m.version)
        .fetch_optional(&mut *tx)
        .await?;
        let sum = checksum(m.sql);
        if let Some(row) = existing {
            let recorded: String = row.get(0);
            if recorded != sum {
                return Err(Error::Config(format!(
                    "migration {} ({}) was applied to schema {:?} and has changed since (checksum {recorded} ≠ {sum}); \
                     write a new migration instead of editing an applied one",
                    m.version,
                    m.name,
                    schema.name()
                )));
            }
            tx.commit().await?;
            continue;
        }
        sqlx::raw_sql(safe(&format!(
            "SET LOCAL search_path TO \"{}\"",
            schema.name()
        )))
        .execute(&mut *tx)
        .await?;
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(schema, e))?;
        sqlx::query(safe(&format!(
            "INSERT INTO {table} (version, name, checksum) VALUES ($1, $2, $3)"
        )))
        .bind(m.version)
        .bind(m.name)
        .bind(&sum)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        applied_now.push(m.version);
    }
    Ok(applied_now)
}

/// True when every embedded migration is applied to `schema`.
pub async fn is_migrated(conn: &mut PgConnection, schema: &DbSchema) -> Result<bool> {
    let row = sqlx::query("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("\"{}\".eventbus_migrations", schema.name()))
        .fetch_one(&mut *conn)
        .await?;
    if !row.get::<bool, _>(0) {
        return Ok(false);
    }
    let max: Option<i32> = sqlx::query(safe(&format!(
        "SELECT max(version) FROM {}",
        schema.table("eventbus_migrations")
    )))
    .fetch_one(&mut *conn)
    .await?
    .get(0);
    Ok(max >= migrations().last().map(|m| m.version))
}

/// What the outbox checks new rows against (migration 0004's
/// `eventbus_settings`): recorded by `eventbus migrate` from its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxSettings {
    /// Partitions per topic (`EVENT_BUS_PARTITIONS`): rows outside `0..partitions` are refused.
    pub partitions: u32,
    /// The event size limit (`EVENT_BUS_MAX_EVENT_BYTES`).
    pub max_event_bytes: usize,
}

/// Records `settings` in `schema` (after [`migrate`]). Returns what was
/// recorded before, if anything.
pub async fn record_settings(
    conn: &mut PgConnection,
    schema: &DbSchema,
    settings: OutboxSettings,
) -> Result<Option<OutboxSettings>> {
    let table = schema.table("eventbus_settings");
    let before = read_settings(conn, schema).await?;
    sqlx::query(safe(&format!(
        "UPDATE {table} SET partitions = $1, max_event_bytes = $2, updated_at = now()"
    )))
    .bind(i32::try_from(settings.partitions).unwrap_or(i32::MAX))
    .bind(i32::try_from(settings.max_event_bytes).unwrap_or(i32::MAX))
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error(schema, e))?;
    Ok(before)
}

/// The recorded outbox settings, if `eventbus migrate` recorded them.
pub async fn read_settings(
    conn: &mut PgConnection,
    schema: &DbSchema,
) -> Result<Option<OutboxSettings>> {
    let row: Option<(Option<i32>, Option<i32>)> = sqlx::query_as(safe(&format!(
        "SELECT partitions, max_event_bytes FROM {}",
        schema.table("eventbus_settings")
    )))
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| db_error(schema, e))?;
    Ok(match row {
        Some((Some(p), Some(m))) => Some(OutboxSettings {
            partitions: u32::try_from(p).unwrap_or(0),
            max_event_bytes: usize::try_from(m).unwrap_or(0),
        }),
        _ => None,
    })
}
