//! Recording dead letters: the Redis stream, and the records in PostgreSQL
//! when configured, else in Redis beside the stream.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::connection::RedisConn;
use sqlx::PgPool;
use uuid::Uuid;

use super::store_redis::{self, RecordKeys};
use super::{encode_raw_fields, nul_free, storable, Failure};
use crate::db::{db_error, safe, DbSchema};
use crate::lossless::{cap, DEAD_LETTER_ERROR_CAP};
use crate::topology::Topology;
use crate::Result;

/// After the PostgreSQL store failed, dead letters go to Redis only for
/// this long before the store is tried again, so an unreachable store costs
/// each dead letter nothing instead of a connect timeout.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The longest a dead letter waits for the PostgreSQL store (a free pool
/// connection, or a connect to a server that is down) before the Redis copy
/// is the durable one: a store outage delays a partition by this, once per
/// [`STORE_RETRY_AFTER`], not by the pool's acquire timeout per event.
const STORE_TIMEOUT: Duration = Duration::from_secs(3);

/// Writes dead letters. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DeadLetterWriter {
    redis: RedisConn,
    dead_stream: String,
    pg: Option<(PgPool, DbSchema)>,
    /// Where the records are kept when there is no PostgreSQL.
    records: RecordKeys,
    /// The PostgreSQL store's current outage, if any (shared by clones).
    outage: Arc<Mutex<Option<Outage>>>,
}

/// The store is failing: since when, and when it last failed.
#[derive(Debug, Clone, Copy)]
struct Outage {
    /// Wall-clock milliseconds a little before the first failure: dead
    /// letters written to Redis only are found from here.
    since_ms: i64,
    last_failed: Instant,
}

impl DeadLetterWriter {
    /// A writer to `<namespace>:dead` and to the PostgreSQL store if given,
    /// else to the records in Redis beside the stream.
    pub fn new(redis: RedisConn, topology: &Topology, pg: Option<(PgPool, DbSchema)>) -> Self {
        DeadLetterWriter {
            redis,
            dead_stream: topology.dead_stream(),
            pg,
            records: RecordKeys::of(topology),
            outage: Arc::default(),
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
    /// Without PostgreSQL, the stream entry and the record in Redis (a new
    /// one, or the event's record in that group failed again, same id) are
    /// written by one script: both or neither.
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
        let store = match &self.pg {
            Some(pg) if self.store_due() => Some(pg),
            Some(_) => {
                // Skipped during an outage: missed by the store, in Redis only.
                metrics::counter!("eventbus_dead_letter_store_errors_total").increment(1);
                None
            }
            None => None,
        };
        if let Some((pool, schema)) = store {
            let stored = self.record_pg(pool, schema, f, &message, first, now, id);
            let stored = tokio::time::timeout(STORE_TIMEOUT, stored)
                .await
                .unwrap_or(Err(crate::Error::Database(sqlx::Error::PoolTimedOut)));
            match stored {
                Ok(row_id) => {
                    id = row_id;
                    in_store = true;
                    self.store_ok();
                }
                Err(e) => store_error = Some(e),
            }
        }
        let raw = f.raw_fields.as_deref().map(encode_raw_fields);
        let missing = self.pg.is_some() && !in_store;
        let entry = |id: Uuid| {
            let fields = [
                ("dl_id", id.to_string().into_bytes()),
                ("dl_group", f.group.clone().into_bytes()),
                ("dl_consumer", f.consumer.clone().into_bytes()),
                ("dl_stream", f.stream.clone().into_bytes()),
                ("dl_partition", f.partition.to_string().into_bytes()),
                ("dl_entry_id", f.entry_id.clone().into_bytes()),
                ("dl_attempts", f.attempts.to_string().into_bytes()),
                ("dl_error_class", f.class.as_str().as_bytes().to_vec()),
                ("dl_error", message.clone().into_bytes()),
                (
                    "dl_first_failed_at",
                    crate::envelope::format_time(&first).into_bytes(),
                ),
                (
                    "dl_last_failed_at",
                    crate::envelope::format_time(&now).into_bytes(),
                ),
            ];
            let mut out: Vec<Vec<u8>> = fields
                .into_iter()
                .flat_map(|(k, v)| [k.as_bytes().to_vec(), v])
                .collect();
            if missing {
                out.extend([b"dl_store".to_vec(), b"missing".to_vec()]);
            }
            if let Some(raw) = &raw {
                out.extend([b"dl_raw".to_vec(), raw.clone()]);
            }
            for (k, v) in f.envelope.to_fields() {
                out.extend([k.as_bytes().to_vec(), v.into_bytes()]);
            }
            out
        };
        let in_redis = if self.pg.is_none() {
            store_redis::record(&self.redis, &self.records, f, &message, first, now, entry)
                .await
                .inspect(|recorded| id = *recorded)
                .map(drop)
        } else {
            redis::cmd("XADD")
                .arg(&self.dead_stream)
                .arg("*")
                .arg(entry(id))
                .query_async::<String>(&mut self.redis.clone())
                .await
                .map(drop)
                .map_err(crate::Error::from)
        };
        if let Some(e) = &store_error {
            self.store_failed(e);
        }
        match in_redis {
            // Neither copy: the entry stays pending and comes back.
            Err(e) if !in_store => return Err(e),
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
        let outage = *self.outage.lock().expect("store state poisoned");
        outage.is_none_or(|o| o.last_failed.elapsed() >= STORE_RETRY_AFTER)
    }

    fn store_failed(&self, e: &crate::Error) {
        metrics::counter!("eventbus_dead_letter_store_errors_total").increment(1);
        let started = {
            let mut outage = self.outage.lock().expect("store state poisoned");
            match outage.as_mut() {
                Some(o) => {
                    o.last_failed = Instant::now();
                    false
                }
                None => {
                    *outage = Some(Outage {
                        since_ms: chrono::Utc::now().timestamp_millis() - 1000,
                        last_failed: Instant::now(),
                    });
                    true
                }
            }
        };
        if started {
            tracing::error!(error = %e, "the PostgreSQL dead-letter store failed; dead letters go to the Redis stream only (marked dl_store=missing) until it is back, then they are copied to it");
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(self.clone().watch_store());
            }
        }
    }

    fn store_ok(&self) {
        let ended = self.outage.lock().expect("store state poisoned").take();
        if let Some(o) = ended {
            tracing::info!("the PostgreSQL dead-letter store is back");
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(self.clone().backfill_logged(o.since_ms));
            }
        }
    }

    /// While the store is out, checks it every few seconds; when it
    /// answers, ends the outage and copies what went to Redis only.
    async fn watch_store(self) {
        let Some((pool, _)) = self.pg.clone() else {
            return;
        };
        loop {
            tokio::time::sleep(STORE_RETRY_AFTER).await;
            if self.outage.lock().expect("store state poisoned").is_none() {
                return; // a write found it back (and backfills)
            }
            if sqlx::query("SELECT 1").execute(&pool).await.is_ok() {
                self.store_ok();
                return;
            }
        }
    }

    async fn backfill_logged(self, since_ms: i64) {
        match self.backfill(since_ms).await {
            Ok(n) => tracing::info!(
                copied = n,
                "dead letters written to Redis only during the outage are in PostgreSQL now"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "copying Redis-only dead letters to PostgreSQL failed; run `eventbus dlq sync`")
            }
        }
    }

    /// Copies the dead letters of `<namespace>:dead` since `since_ms`
    /// (wall-clock milliseconds) that are marked `dl_store=missing` into the
    /// PostgreSQL store. Idempotent: a dead letter already stored with the
    /// same or a later failure is left as it is. Returns how many were copied.
    pub async fn backfill(&self, since_ms: i64) -> Result<usize> {
        let Some((pool, schema)) = &self.pg else {
            return Ok(0);
        };
        let mut start = format!("{}", since_ms.max(0));
        let mut copied = 0;
        loop {
            let reply: redis::Value = redis::cmd("XRANGE")
                .arg(&self.dead_stream)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(500)
                .query_async(&mut self.redis.clone())
                .await?;
            let entries = crate::reply::parse_raw_entries(&reply);
            let Some((last, _)) = entries.last() else {
                return Ok(copied);
            };
            start = format!("({last}");
            for (_, fields) in &entries {
                let Some(stored) = StreamDeadLetter::parse(fields) else {
                    continue;
                };
                if !stored.missing_in_store {
                    continue;
                }
                let message = stored.failure.message.clone();
                self.record_pg(
                    pool,
                    schema,
                    &stored.failure,
                    &message,
                    stored.first,
                    stored.last,
                    stored.id,
                )
                .await?;
                copied += 1;
            }
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
        let row: Option<(Uuid, bool)> = sqlx::query_as(safe(&format!(
            "INSERT INTO {table} (id, group_name, event_id, event_type, key, envelope, consumer, stream, partition, \
               entry_id, attempts, error_class, error_message, first_failed_at, last_failed_at, raw_fields) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (group_name, event_id) DO UPDATE SET \
               status = 'new', consumer = EXCLUDED.consumer, stream = EXCLUDED.stream, \
               partition = EXCLUDED.partition, entry_id = EXCLUDED.entry_id, attempts = EXCLUDED.attempts, \
               error_class = EXCLUDED.error_class, error_message = EXCLUDED.error_message, \
               last_failed_at = EXCLUDED.last_failed_at, raw_fields = EXCLUDED.raw_fields, updated_at = now() \
             WHERE {table}.last_failed_at < EXCLUDED.last_failed_at \
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
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error(schema, e))?;
        // None: already stored with this or a later failure (a copy made again).
        let Some((row_id, inserted)) = row else {
            return Ok(id);
        };
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

/// A dead letter as written to `<namespace>:dead`, read back.
struct StreamDeadLetter {
    id: Uuid,
    failure: Failure,
    first: chrono::DateTime<chrono::Utc>,
    last: chrono::DateTime<chrono::Utc>,
    missing_in_store: bool,
}

impl StreamDeadLetter {
    fn parse(fields: &[super::RawField]) -> Option<Self> {
        let text = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name.as_bytes())
                .and_then(|(_, v)| std::str::from_utf8(v).ok())
        };
        let time = |name: &str| {
            chrono::DateTime::parse_from_rfc3339(text(name)?)
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc))
        };
        let envelope = crate::envelope::Envelope::from_fields(
            fields
                .iter()
                .filter(|(k, _)| !k.starts_with(b"dl_"))
                .map(|(k, v)| (k.as_slice(), v.as_slice())),
        )
        .ok()?;
        let failure = Failure {
            envelope,
            group: text("dl_group")?.to_owned(),
            consumer: text("dl_consumer")?.to_owned(),
            stream: text("dl_stream")?.to_owned(),
            partition: text("dl_partition")?.parse().ok()?,
            entry_id: text("dl_entry_id")?.to_owned(),
            attempts: text("dl_attempts")?.parse().ok()?,
            class: super::parse_error_class(text("dl_error_class")?)?,
            message: text("dl_error")?.to_owned(),
            first_failed_at: None,
            raw_fields: fields
                .iter()
                .find(|(k, _)| k == b"dl_raw")
                .and_then(|(_, v)| super::decode_raw_fields(v)),
        };
        Some(StreamDeadLetter {
            id: Uuid::try_parse(text("dl_id")?).ok()?,
            failure,
            first: time("dl_first_failed_at")?,
            last: time("dl_last_failed_at")?,
            missing_in_store: text("dl_store") == Some("missing"),
        })
    }
}
