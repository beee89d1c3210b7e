//! Recording dead letters (Redis stream, and PostgreSQL when configured).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::connection::RedisConn;
use sqlx::PgPool;
use uuid::Uuid;

use super::{encode_raw_fields, nul_free, storable, Failure};
use crate::pg::{db_error, safe, DbSchema};
use crate::topology::Topology;
use crate::Result;

/// Error messages are cut to this many bytes (on a character boundary).
pub const DEAD_LETTER_ERROR_CAP: usize = 4096;

/// After the PostgreSQL store failed, dead letters go to Redis only for
/// this long before the store is tried again, so an unreachable store costs
/// each dead letter nothing instead of a connect timeout.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Writes dead letters. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DeadLetterWriter {
    redis: RedisConn,
    dead_stream: String,
    pg: Option<(PgPool, DbSchema)>,
    /// When the PostgreSQL store last failed (shared by clones).
    store_failed_at: Arc<Mutex<Option<Instant>>>,
}

impl DeadLetterWriter {
    /// A writer to `<namespace>:dead` and, if given, the PostgreSQL store.
    pub fn new(redis: RedisConn, topology: &Topology, pg: Option<(PgPool, DbSchema)>) -> Self {
        DeadLetterWriter {
            redis,
            dead_stream: topology.dead_stream(),
            pg,
            store_failed_at: Arc::default(),
        }
    }

    /// True when dead letters also go to PostgreSQL.
    pub fn has_store(&self) -> bool {
        self.pg.is_some()
    }

    /// Records one dead letter: in PostgreSQL (when configured) and in the
    /// Redis stream. Returns the dead letter's id. `Ok` means at least one
    /// durable copy exists; an error means neither write succeeded and the
    /// caller must not acknowledge the entry.
    ///
    /// Nothing in the event can make a write fail: text PostgreSQL cannot
    /// hold (U+0000) is stored in a display form plus the exact bytes (see
    /// [`super::storable`]). When the store refuses the row or is down, the
    /// Redis copy (marked `dl_store=missing`) is the durable one; the
    /// failure is logged once per outage and counted in
    /// `eventbus_dead_letter_store_errors_total`, and the store is skipped
    /// for a few seconds so each further dead letter costs no timeout.
    pub async fn record(&self, f: &Failure) -> Result<Uuid> {
        let message = nul_free(&cap(&f.message, DEAD_LETTER_ERROR_CAP)).into_owned();
        let now = chrono::Utc::now();
        let first = f.first_failed_at.unwrap_or(now);
        let mut id = Uuid::now_v7();
        let mut in_store = false;
        let mut store_error = None;
        if let Some((pool, schema)) = self.pg.as_ref().filter(|_| self.store_due()) {
            match self
                .record_pg(pool, schema, f, &message, first, now, id)
                .await
            {
                Ok(row_id) => {
                    id = row_id;
                    in_store = true;
                    self.store_ok();
                }
                Err(e) => store_error = Some(e),
            }
        }
        let raw = f.raw_fields.as_deref().map(encode_raw_fields);
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
        if self.pg.is_some() && !in_store {
            cmd.arg("dl_store").arg("missing");
        }
        if let Some(raw) = &raw {
            cmd.arg("dl_raw").arg(raw.as_slice());
        }
        for (k, v) in f.envelope.to_fields() {
            cmd.arg(k).arg(v);
        }
        let in_redis: redis::RedisResult<String> = cmd.query_async(&mut self.redis.clone()).await;
        if let Some(e) = &store_error {
            self.store_failed(e);
        }
        match in_redis {
            // Neither copy: the entry stays pending and comes back.
            Err(e) if !in_store => return Err(e.into()),
            Err(e) => {
                tracing::warn!(dead_letter = %id, error = %e, "dead letter stored in PostgreSQL only: the Redis copy failed");
            }
            Ok(_) => {}
        }
        metrics::counter!(
            "eventbus_dead_letters_total",
            "group" => f.group.clone(),
            "type" => f.envelope.event_type.clone(),
            "class" => f.class.as_str()
        )
        .increment(1);
        tracing::warn!(
            event_id = %f.envelope.id, event_type = %nul_free(&f.envelope.event_type), group = %f.group,
            class = f.class.as_str(), attempts = f.attempts, dead_letter = %id, error = %message,
            "event dead-lettered"
        );
        Ok(id)
    }

    /// False while the store is being skipped after a failure.
    fn store_due(&self) -> bool {
        let failed_at = *self.store_failed_at.lock().expect("store state poisoned");
        failed_at.is_none_or(|t| t.elapsed() >= STORE_RETRY_AFTER)
    }

    fn store_failed(&self, e: &crate::Error) {
        metrics::counter!("eventbus_dead_letter_store_errors_total").increment(1);
        let first = self
            .store_failed_at
            .lock()
            .expect("store state poisoned")
            .replace(Instant::now())
            .is_none();
        if first {
            tracing::error!(error = %e, "the PostgreSQL dead-letter store failed; dead letters go to the Redis stream only (marked dl_store=missing) until it is back");
        }
    }

    fn store_ok(&self) {
        let was_down = self
            .store_failed_at
            .lock()
            .expect("store state poisoned")
            .take()
            .is_some();
        if was_down {
            tracing::info!("the PostgreSQL dead-letter store is back");
        }
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
        let (envelope, mut raw) = storable(&f.envelope);
        if let Some(fields) = &f.raw_fields {
            raw = Some(encode_raw_fields(fields));
        }
        let mut tx = pool.begin().await?;
        // One row per (group, event): a replayed event that fails again
        // goes back to `new`, keeping its id, first failure and replay count.
        let (row_id, inserted): (Uuid, bool) = sqlx::query_as(safe(&format!(
            "INSERT INTO {table} (id, group_name, event_id, event_type, key, envelope, consumer, stream, partition, \
               entry_id, attempts, error_class, error_message, first_failed_at, last_failed_at, raw_fields) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (group_name, event_id) DO UPDATE SET \
               status = 'new', consumer = EXCLUDED.consumer, stream = EXCLUDED.stream, \
               partition = EXCLUDED.partition, entry_id = EXCLUDED.entry_id, attempts = EXCLUDED.attempts, \
               error_class = EXCLUDED.error_class, error_message = EXCLUDED.error_message, \
               last_failed_at = EXCLUDED.last_failed_at, raw_fields = EXCLUDED.raw_fields, updated_at = now() \
             RETURNING id, (xmax = 0)"
        )))
        .bind(id)
        .bind(nul_free(&f.group))
        .bind(f.envelope.id)
        .bind(nul_free(&f.envelope.event_type))
        .bind(nul_free(&f.envelope.key))
        .bind(sqlx::types::Json(&envelope))
        .bind(nul_free(&f.consumer))
        .bind(nul_free(&f.stream))
        .bind(f.partition as i32)
        .bind(nul_free(&f.entry_id))
        .bind(i32::try_from(f.attempts).unwrap_or(i32::MAX))
        .bind(f.class.as_str())
        .bind(message)
        .bind(first)
        .bind(now)
        .bind(raw)
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
            "consumer": nul_free(&f.consumer), "entry_id": nul_free(&f.entry_id), "attempts": f.attempts,
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
