//! Recording dead letters (Redis stream, and PostgreSQL when configured).

use crate::connection::RedisConn;
use sqlx::PgPool;
use uuid::Uuid;

use super::Failure;
use crate::pg::{db_error, safe, DbSchema};
use crate::topology::Topology;
use crate::Result;

/// Error messages are cut to this many bytes (on a character boundary).
pub const DEAD_LETTER_ERROR_CAP: usize = 4096;

/// Writes dead letters. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DeadLetterWriter {
    redis: RedisConn,
    dead_stream: String,
    pg: Option<(PgPool, DbSchema)>,
}

impl DeadLetterWriter {
    /// A writer to `<namespace>:dead` and, if given, the PostgreSQL store.
    pub fn new(redis: RedisConn, topology: &Topology, pg: Option<(PgPool, DbSchema)>) -> Self {
        DeadLetterWriter {
            redis,
            dead_stream: topology.dead_stream(),
            pg,
        }
    }

    /// True when dead letters also go to PostgreSQL.
    pub fn has_store(&self) -> bool {
        self.pg.is_some()
    }

    /// Records one dead letter durably: PostgreSQL first (when configured),
    /// then the Redis stream. Returns the dead letter's id. An error means
    /// it may not be recorded: the caller must not acknowledge the entry.
    pub async fn record(&self, f: &Failure) -> Result<Uuid> {
        let message = cap(&f.message, DEAD_LETTER_ERROR_CAP);
        let now = chrono::Utc::now();
        let first = f.first_failed_at.unwrap_or(now);
        let mut id = Uuid::now_v7();
        if let Some((pool, schema)) = &self.pg {
            id = self
                .record_pg(pool, schema, f, &message, first, now, id)
                .await?;
        }
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.dead_stream).arg("*");
        cmd.arg("dl_id").arg(id.to_string());
        cmd.arg("dl_group").arg(&f.group);
        cmd.arg("dl_consumer").arg(&f.consumer);
        cmd.arg("dl_stream").arg(&f.stream);
        cmd.arg("dl_partition").arg(f.partition);
        cmd.arg("dl_entry_id").arg(&f.entry_id);
        cmd.arg("dl_attempts").arg(f.attempts);
        cmd.arg("dl_error_class").arg(f.class.as_str());
        cmd.arg("dl_error").arg(&message);
        cmd.arg("dl_first_failed_at")
            .arg(crate::envelope::format_time(&first));
        cmd.arg("dl_last_failed_at")
            .arg(crate::envelope::format_time(&now));
        for (k, v) in f.envelope.to_fields() {
            cmd.arg(k).arg(v);
        }
        let _: String = cmd.query_async(&mut self.redis.clone()).await?;
        metrics::counter!(
            "eventbus_dead_letters_total",
            "group" => f.group.clone(),
            "type" => f.envelope.event_type.clone(),
            "class" => f.class.as_str()
        )
        .increment(1);
        tracing::warn!(
            event_id = %f.envelope.id, event_type = %f.envelope.event_type, group = %f.group,
            class = f.class.as_str(), attempts = f.attempts, dead_letter = %id, error = %message,
            "event dead-lettered"
        );
        Ok(id)
    }

    #[allow(clippy::too_many_arguments)]
    async fn record_pg(
        &self,
        pool: &PgPool,
        schema: &DbSchema,
        f: &Failure,
        message: &str,
        first: chrono::DateTime<chrono::Utc>,
        now: chrono::DateTime<chrono::Utc>,
        id: Uuid,
    ) -> Result<Uuid> {
        let table = schema.table("eventbus_dead_letters");
        let audit = schema.table("eventbus_dead_letter_audit");
        let envelope = serde_json::to_value(&f.envelope).expect("an envelope always serializes");
        let mut tx = pool.begin().await?;
        // One row per (group, event): a replayed event that fails again
        // goes back to `new`, keeping its id, first failure and replay count.
        let (row_id, inserted): (Uuid, bool) = sqlx::query_as(safe(&format!(
            "INSERT INTO {table} (id, group_name, event_id, event_type, key, envelope, consumer, stream, partition, \
               entry_id, attempts, error_class, error_message, first_failed_at, last_failed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (group_name, event_id) DO UPDATE SET \
               status = 'new', consumer = EXCLUDED.consumer, stream = EXCLUDED.stream, \
               partition = EXCLUDED.partition, entry_id = EXCLUDED.entry_id, attempts = EXCLUDED.attempts, \
               error_class = EXCLUDED.error_class, error_message = EXCLUDED.error_message, \
               last_failed_at = EXCLUDED.last_failed_at, updated_at = now() \
             RETURNING id, (xmax = 0)"
        )))
        .bind(id)
        .bind(&f.group)
        .bind(f.envelope.id)
        .bind(&f.envelope.event_type)
        .bind(&f.envelope.key)
        .bind(sqlx::types::Json(&envelope))
        .bind(&f.consumer)
        .bind(&f.stream)
        .bind(f.partition as i32)
        .bind(&f.entry_id)
        .bind(i32::try_from(f.attempts).unwrap_or(i32::MAX))
        .bind(f.class.as_str())
        .bind(message)
        .bind(first)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| db_error(schema, e))?;
        let action = if inserted {
            "dead_lettered"
        } else {
            "failed_again"
        };
        sqlx::query(safe(&format!(
            "INSERT INTO {audit} (dead_letter_id, action, detail) VALUES ($1, $2, $3)"
        )))
        .bind(row_id)
        .bind(action)
        .bind(sqlx::types::Json(serde_json::json!({
            "consumer": f.consumer, "entry_id": f.entry_id, "attempts": f.attempts,
            "error_class": f.class.as_str(), "error": message,
        })))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(schema, e))?;
        tx.commit().await?;
        Ok(row_id)
    }
}

/// Cuts `s` to at most `max` bytes, on a character boundary, marking the cut.
pub(crate) fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::cap;

    #[test]
    fn caps_on_char_boundaries() {
        assert_eq!(cap("short", 10), "short");
        let long = "é".repeat(100);
        let c = cap(&long, 11);
        assert!(c.len() <= 11 && c.ends_with("..."), "{c}");
    }
}
