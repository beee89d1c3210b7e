//! The relay: moves committed outbox rows to their Redis streams.
//!
//! Work is split by partition. For each partition, one batch is one
//! PostgreSQL transaction:
//!
//! 1. `pg_try_advisory_xact_lock(relay key, partition)`: one owner per
//!    partition at a time, across every relay process; a partition whose lock
//!    is taken is skipped this round;
//! 2. claim the oldest unpublished rows of the partition in a CTE with
//!    `FOR UPDATE SKIP LOCKED` and delete them (or, with retention, mark them
//!    published), `RETURNING` their contents;
//! 3. publish them in one pipelined round trip;
//! 4. commit only after Redis confirmed.
//!
//! A row with a `deliver_at` later than now is published the same way into
//! its partition's scheduled set in Redis (`docs/scheduled.md`); one
//! further ahead than the publisher's `max_delay` (infinity included) is
//! dead-lettered with its reason, like any row that cannot be published.
//!
//! A crash or error before the commit rolls the claim back: the rows are
//! published again later (a duplicate on the stream, deduplicated by inboxes),
//! never lost. Because the claim always takes the oldest *unpublished* rows
//! rather than "ids after the last one seen", a row committed late with a
//! lower id than rows already published is still found, on the next round.
//! Because the lock serialises batches of a partition and each batch commits
//! before the next starts, a partition's rows reach Redis in id order.
//!
//! Relays wake on the outbox trigger's `NOTIFY` (a hint: lost notifications
//! cost latency only) and otherwise poll, backing off from `poll_min` to
//! `poll_max` while idle. They catch up after every reconnect: a claim never
//! depends on what was seen before.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::{PgPool, Row};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::doze::{Doze, Idle};
use super::{db_error, safe, DbSchema, OutboxRow};
use crate::connection::backoff;
use crate::envelope::Envelope;
use crate::publisher::Publisher;
use crate::topology::murmur2;
use crate::{Error, Result};

/// A deliberate crash, for crash tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failpoint {
    /// After a batch was published to Redis and before its transaction
    /// commits, the process kills itself with SIGKILL, on average once
    /// every `one_in` batches.
    KillAfterPublish {
        /// 1 = every batch.
        one_in: u32,
    },
}

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows per batch (one transaction, one pipeline). Default 1000.
    pub batch_size: usize,
    /// Partitions relayed in parallel by this process. Default 4.
    pub workers: usize,
    /// Poll interval right after work was found. Default 10 ms.
    pub poll_min: Duration,
    /// Longest poll interval while idle (the latency bound when a
    /// notification is lost). Default 1 s.
    pub poll_max: Duration,
    /// Keep published rows this long (for `outbox replay`); `None` deletes
    /// rows once published. Default `None`.
    pub retention: Option<Duration>,
    /// A deliberate crash, for tests. Default `None`.
    pub failpoint: Option<Failpoint>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_size: 1000,
            workers: 4,
            poll_min: Duration::from_millis(10),
            poll_max: Duration::from_secs(1),
            retention: None,
            failpoint: None,
        }
    }
}

impl RelayConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.batch_size > 100_000 {
            return Err(Error::Config("relay batch size must be 1..=100000".into()));
        }
        if self.workers == 0 {
            return Err(Error::Config("relay workers must be positive".into()));
        }
        if self.poll_min.is_zero() || self.poll_max < self.poll_min {
            return Err(Error::Config(
                "relay poll interval: need 0 < poll_min <= poll_max".into(),
            ));
        }
        Ok(())
    }
}

/// Counters of a relay.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Events published.
    pub published: AtomicU64,
    /// Batches committed.
    pub batches: AtomicU64,
    /// Failed rounds (each retried with backoff).
    pub errors: AtomicU64,
    /// Outbox rows that could not be published, moved to dead letters.
    pub rejected: AtomicU64,
}

/// Moves outbox rows to Redis. See the module docs for the protocol.
#[derive(Debug, Clone)]
pub struct Relay {
    pool: PgPool,
    publisher: Publisher,
    schema: DbSchema,
    config: RelayConfig,
    lock_key: i32,
    claim_sql: Arc<str>,
    stats: Arc<RelayStats>,
}

impl Relay {
    /// A relay for the outbox in `schema`, publishing with `publisher` (whose
    /// topology must match the one events were enqueued with).
    pub fn new(
        pool: PgPool,
        publisher: Publisher,
        schema: DbSchema,
        config: RelayConfig,
    ) -> Result<Self> {
        config.validate()?;
        let table = schema.table("eventbus_outbox");
        let take = if config.retention.is_some() {
            format!("UPDATE {table} o SET published_at = now() FROM batch WHERE o.id = batch.id")
        } else {
            format!("DELETE FROM {table} o USING batch WHERE o.id = batch.id")
        };
        let claim_sql = format!(
            "WITH batch AS (\
               SELECT id FROM {table} WHERE partition = $1 AND published_at IS NULL \
               ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) \
             {take} RETURNING {}",
            OutboxRow::COLUMNS
        );
        let key = format!(
            "eventbus-relay:{}:{}",
            schema.name(),
            publisher.topology().namespace()
        );
        Ok(Relay {
            pool,
            publisher,
            schema,
            config,
            lock_key: murmur2(key.as_bytes()) as i32,
            claim_sql: claim_sql.into(),
            stats: Arc::default(),
        })
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<RelayStats> {
        self.stats.clone()
    }

    /// Fails with [`Error::NotMigrated`] if the outbox table is missing.
    pub async fn check_ready(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        if super::migrate::is_migrated(&mut conn, &self.schema).await? {
            Ok(())
        } else {
            Err(Error::NotMigrated {
                schema: self.schema.name().to_owned(),
            })
        }
    }

    /// Relays at most one batch of one partition. Returns how many events
    /// were published (0 if the partition is empty or owned by another relay).
    pub async fn relay_partition(&self, partition: u32) -> Result<usize> {
        Ok(self.relay_or_skip(partition).await?.unwrap_or(0))
    }

    /// [`Relay::relay_partition`], `None` when another relay owns the
    /// partition at the moment.
    async fn relay_or_skip(&self, partition: u32) -> Result<Option<usize>> {
        let mut tx = self.pool.begin().await?;
        let locked: bool = sqlx::query("SELECT pg_try_advisory_xact_lock($1, $2)")
            .bind(self.lock_key)
            .bind(partition as i32)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        if !locked {
            return Ok(None);
        }
        let rows = sqlx::query(safe(&self.claim_sql))
            .bind(partition as i32)
            .bind(self.config.batch_size as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| db_error(&self.schema, e))?;
        if rows.is_empty() {
            return Ok(Some(0));
        }
        let mut claimed = rows
            .iter()
            .map(OutboxRow::from_row)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|r| r.id); // RETURNING order is unspecified
                                       // Rows that cannot become events are dead-lettered in this
                                       // transaction; the rest keep their order.
                                       // `events[i]` is the event of `rows[i]`; no envelope is copied.
        let mut events = Vec::with_capacity(claimed.len());
        let mut rows = Vec::with_capacity(claimed.len());
        // Due times, only when some row has one (`deliver_at`, 0005).
        let mut dues = Vec::new();
        let mut rejected = Vec::new();
        for row in claimed {
            let event = row.to_envelope(self.max_event_bytes()).and_then(|e| {
                self.publisher
                    .check(&e)
                    .map(|()| e)
                    .map_err(|e| e.to_string())
            });
            let due = row.due().and_then(|at| match at {
                Some(t) => self
                    .publisher
                    .check_deliver_at(t)
                    .map(|()| at)
                    .map_err(|e| e.to_string()),
                None => Ok(None),
            });
            match (event, due) {
                (Ok(e), Ok(at)) => {
                    if at.is_some() && dues.len() < events.len() {
                        dues.resize(events.len(), None);
                    }
                    if at.is_some() || !dues.is_empty() {
                        dues.push(at);
                    }
                    events.push(e);
                    rows.push(row);
                }
                (Err(reason), _) | (_, Err(reason)) => rejected.push((row, reason)),
            }
        }
        // Open until the batch commits (or fails): tracing on only.
        let topology = self.publisher.topology();
        let spans = crate::telemetry::relay_spans(&events, |e| {
            topology.stream_key(e.topic(), topology.partition_of(&e.key))
        });
        if let Err(e) = self.publisher.publish_batch_at_once(&events, &dues).await {
            // Either Redis is unreachable (give up this round: the rollback
            // republishes the batch later) or it refused some entry: find
            // which, one at a time, and dead-letter only those.
            if !self.publisher.is_reachable().await {
                return Err(e);
            }
            tracing::warn!(partition, error = %e, "Redis refused a batch; publishing its events one at a time");
            let mut kept = Vec::with_capacity(events.len());
            for (i, (row, event)) in rows.into_iter().zip(events).enumerate() {
                match self
                    .publish_alone(&event, dues.get(i).copied().flatten())
                    .await?
                {
                    None => kept.push(event),
                    Some(reason) => rejected.push((row, reason)),
                }
            }
            events = kept;
        }
        if let Some(Failpoint::KillAfterPublish { one_in }) = self.config.failpoint {
            if rand::random_range(0..one_in.max(1)) == 0 {
                kill_self();
            }
        }
        for (row, reason) in &rejected {
            record_rejected(&mut tx, &self.schema, row, reason).await?;
        }
        tx.commit().await?;
        drop(spans);
        self.count_rejected(&rejected);
        self.stats
            .published
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        Ok(Some(events.len() + rejected.len()))
    }

    fn max_event_bytes(&self) -> usize {
        self.publisher.config().max_event_bytes
    }

    /// Publishes one event on its own: `None` when Redis took it, the
    /// reason when Redis refused it twice while taking other writes (a
    /// probe entry in the same slot). An error means Redis is unreachable
    /// or refuses every write (out of memory, read-only, no permission):
    /// then nothing is dead-lettered and the round is retried.
    async fn publish_alone(
        &self,
        event: &Envelope,
        due: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Option<String>> {
        let mut last = None;
        let due = due.map(|t| vec![Some(t)]).unwrap_or_default();
        for _ in 0..2 {
            match self
                .publisher
                .publish_batch_at_once(std::slice::from_ref(event), &due)
                .await
            {
                Ok(_) => return Ok(None),
                Err(e) => {
                    if !self.publisher.is_reachable().await {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        let stream = self.publisher.topology().stream_key(
            event.topic(),
            self.publisher.topology().partition_of(&event.key),
        );
        match last {
            Some(e) if !self.publisher.takes_writes_near(&stream).await => Err(e),
            Some(e) => Ok(Some(format!("Redis refused the event: {e}"))),
            None => Ok(None),
        }
    }

    fn count_rejected(&self, rejected: &[(OutboxRow, String)]) {
        for (row, reason) in rejected {
            metrics::counter!("eventbus_relay_rejected_total").increment(1);
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                outbox_row = row.id, event_id = %row.event_id, event_type = %row.event_type,
                partition = row.partition, reason = %crate::lossless::nul_free(reason),
                "outbox row cannot be published; moved to dead letters (origin outbox)"
            );
        }
    }

    /// Says so when `eventbus migrate` recorded another partition count than
    /// this relay's: rows it refuses or never relays would follow.
    async fn warn_on_other_settings(&self) {
        let Ok(mut conn) = self.pool.acquire().await else {
            return;
        };
        let partitions = self.publisher.topology().partitions();
        if let Ok(Some(recorded)) = super::read_settings(&mut conn, &self.schema).await {
            if recorded.partitions != partitions {
                tracing::error!(
                    recorded = recorded.partitions, relay = partitions,
                    "the outbox was migrated for {} partitions but this relay runs {partitions} \
                     (EVENT_BUS_PARTITIONS); run `eventbus migrate` with the partition count in use",
                    recorded.partitions
                );
            }
        }
    }

    /// Moves unpublished rows whose partition this relay's topology does
    /// not have (`partition >= partitions`: written with another partition
    /// count, before the outbox checked it) to dead letters, so they do not
    /// wait unseen forever. Only when `eventbus migrate` recorded the same
    /// partition count as this relay's: a relay configured with a wrong
    /// count must not dead-letter good rows, so then it only reports how
    /// many rows it leaves. Returns how many were moved.
    pub async fn sweep_out_of_range(&self) -> Result<usize> {
        let partitions = self.publisher.topology().partitions();
        let recorded = {
            let mut conn = self.pool.acquire().await?;
            super::read_settings(&mut conn, &self.schema).await?
        };
        if recorded.map(|r| r.partitions) != Some(partitions) {
            let (stray,): (i64,) = sqlx::query_as(safe(&format!(
                "SELECT count(*) FROM {} WHERE partition >= $1 AND published_at IS NULL",
                self.schema.table("eventbus_outbox")
            )))
            .bind(i32::try_from(partitions).unwrap_or(i32::MAX))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_error(&self.schema, e))?;
            if stray > 0 {
                tracing::error!(
                    rows = stray, partitions, recorded = ?recorded.map(|r| r.partitions),
                    "outbox rows in partitions this relay does not have are not relayed; \
                     run `eventbus migrate` with the partition count in use (the relay then \
                     moves such rows to dead letters)"
                );
            }
            return Ok(0);
        }
        let table = self.schema.table("eventbus_outbox");
        let partitions = self.publisher.topology().partitions();
        let mut moved = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let rows = sqlx::query(safe(&format!(
                "WITH batch AS (\
                   SELECT id FROM {table} WHERE partition >= $1 AND published_at IS NULL \
                   ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED) \
                 DELETE FROM {table} o USING batch WHERE o.id = batch.id RETURNING {}",
                OutboxRow::COLUMNS
            )))
            .bind(i32::try_from(partitions).unwrap_or(i32::MAX))
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| db_error(&self.schema, e))?;
            if rows.is_empty() {
                return Ok(moved);
            }
            let mut rejected = Vec::with_capacity(rows.len());
            for r in &rows {
                let row = OutboxRow::from_row(r)?;
                let reason = format!(
                    "partition {} is out of range: the relay has {partitions} partitions (EVENT_BUS_PARTITIONS); \
                     the row was written with another partition count",
                    row.partition
                );
                record_rejected(&mut tx, &self.schema, &row, &reason).await?;
                rejected.push((row, reason));
            }
            tx.commit().await?;
            self.count_rejected(&rejected);
            moved += rejected.len();
        }
    }

    /// Runs until `shutdown` is cancelled. Checks the tables first.
    ///
    /// Shutdown: workers finish the batch they are in (publish and commit),
    /// then stop; the listener and cleanup tasks stop with them.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        self.check_ready().await?;
        let wake = Arc::new(Notify::new());
        let partitions = self.publisher.topology().partitions();
        let workers = self.config.workers.min(partitions as usize);
        let idle = Arc::new(Idle::new(workers));
        let tasks = TaskTracker::new();
        tasks.spawn(listen(
            self.pool.clone(),
            self.schema.channel(),
            self.config.poll_min,
            (wake.clone(), idle.clone()),
            shutdown.clone(),
        ));
        if let Some(retention) = self.config.retention {
            tasks.spawn(cleanup_published(self.clone(), retention, shutdown.clone()));
        }
        self.warn_on_other_settings().await;
        tasks.spawn(sweep_out_of_range(self.clone(), shutdown.clone()));
        for w in 0..workers {
            let mine: Vec<u32> = (0..partitions)
                .filter(|p| *p as usize % workers == w)
                .collect();
            tasks.spawn(
                self.clone()
                    .work(mine, (wake.clone(), idle.clone()), shutdown.clone()),
            );
        }
        tracing::info!(schema = %self.schema.name(), partitions, workers, "relay started");
        tasks.close();
        tasks.wait().await;
        tracing::info!("relay stopped");
        Ok(())
    }

    async fn work(
        self,
        partitions: Vec<u32>,
        (wake, idle): (Arc<Notify>, Arc<Idle>),
        shutdown: CancellationToken,
    ) {
        let mut interval = self.config.poll_min;
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            // Register for a wake-up before looking, so a notification that
            // arrives during the round is not missed.
            let mut notified = pin!(wake.notified());
            notified.as_mut().enable();
            let mut busy = false;
            // Another relay works a partition of ours: not idle (pg/doze.rs).
            let mut skipped = false;
            let mut failed = None;
            for &p in &partitions {
                match self.relay_or_skip(p).await {
                    Ok(Some(n)) => busy |= n > 0,
                    Ok(None) => skipped = true,
                    Err(e) => {
                        failed = Some((p, e));
                        break;
                    }
                }
            }
            if let Some((partition, e)) = failed {
                failures += 1;
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let delay = backoff(failures, Duration::from_millis(100), Duration::from_secs(5));
                tracing::warn!(partition, error = %e, failures, ?delay, "relay round failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
            failures = 0;
            if busy {
                interval = self.config.poll_min;
                // Writers do not notify while any worker works (pg/doze.rs):
                // idle peers look again after each round that moved rows.
                wake.notify_waiters();
                continue;
            }
            let _idle = (!skipped).then(|| idle.enter());
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = notified => interval = self.config.poll_min,
                _ = tokio::time::sleep(interval) => interval = (interval * 2).min(self.config.poll_max),
            }
        }
    }
}

/// Inserts the dead letter of an unpublishable outbox row (one per event id
/// with group `""` and origin `outbox`; inserting it again updates it).
async fn record_rejected(
    tx: &mut sqlx::PgConnection,
    schema: &DbSchema,
    row: &OutboxRow,
    reason: &str,
) -> Result<()> {
    use crate::lossless::{cap, encode_raw_fields, nul_free, nul_free_json, DEAD_LETTER_ERROR_CAP};
    let table = schema.table("eventbus_dead_letters");
    let audit = schema.table("eventbus_dead_letter_audit");
    let (json, _) = nul_free_json(row.as_json());
    let message = nul_free(&cap(reason, DEAD_LETTER_ERROR_CAP)).into_owned();
    let (id,): (uuid::Uuid,) = sqlx::query_as(safe(&format!(
        "INSERT INTO {table} (id, group_name, event_id, event_type, key, envelope, consumer, stream, partition, \
           entry_id, attempts, error_class, error_message, first_failed_at, last_failed_at, raw_fields, origin) \
         VALUES ($1, '', $2, $3, $4, $5, 'relay', $6, $7, $8, 1, 'invalid', $9, now(), now(), $10, 'outbox') \
         ON CONFLICT (group_name, event_id) DO UPDATE SET \
           status = 'new', envelope = EXCLUDED.envelope, raw_fields = EXCLUDED.raw_fields, \
           entry_id = EXCLUDED.entry_id, error_message = EXCLUDED.error_message, \
           attempts = {table}.attempts + 1, last_failed_at = now(), updated_at = now() \
         RETURNING id"
    )))
    .bind(uuid::Uuid::now_v7())
    .bind(row.event_id)
    .bind(&row.event_type)
    .bind(&row.key)
    .bind(sqlx::types::Json(&json))
    .bind(schema.table("eventbus_outbox"))
    .bind(row.partition)
    .bind(format!("outbox:{}", row.id))
    .bind(&message)
    .bind(encode_raw_fields(&row.as_fields()))
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| db_error(schema, e))?;
    sqlx::query(safe(&format!(
        "INSERT INTO {audit} (dead_letter_id, action, detail) VALUES ($1, 'dead_lettered', $2)"
    )))
    .bind(id)
    .bind(sqlx::types::Json(serde_json::json!({
        "origin": "outbox", "outbox_row": row.id, "error_class": "invalid", "error": message,
    })))
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error(schema, e))?;
    Ok(())
}

/// Wakes the workers on every outbox notification, and after every
/// (re)connection so they catch up on anything missed meanwhile; dozes
/// while they are all idle, so that writers notify only then (pg/doze.rs).
async fn listen(
    pool: PgPool,
    channel: String,
    grace: Duration,
    (wake, idle): (Arc<Notify>, Arc<Idle>),
    shutdown: CancellationToken,
) {
    let mut doze = Doze::new(pool.clone(), channel.clone(), grace);
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        doze.reset();
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "relay LISTEN connection failed; polling meanwhile");
                sleep_or_stop(
                    backoff(failures, Duration::from_millis(200), Duration::from_secs(5)),
                    &shutdown,
                )
                .await;
                continue;
            }
        };
        if let Err(e) = listener.listen(&channel).await {
            failures += 1;
            tracing::warn!(error = %e, "LISTEN failed; polling meanwhile");
            sleep_or_stop(
                backoff(failures, Duration::from_millis(200), Duration::from_secs(5)),
                &shutdown,
            )
            .await;
            continue;
        }
        failures = 0;
        wake.notify_waiters(); // catch up on whatever committed while not listening
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                n = listener.try_recv() => match n {
                    Ok(Some(_)) => {
                        wake.notify_waiters();
                        doze.wake().await;
                    }
                    // The connection was lost; notifications in the gap are gone.
                    Ok(None) | Err(_) => {
                        wake.notify_waiters();
                        break;
                    }
                },
                // Dozing, or the request has waited its grace: one more round.
                round = doze.step(&idle) => if round {
                    wake.notify_waiters();
                },
            }
        }
    }
}

async fn sleep_or_stop(d: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// Dead-letters rows of partitions this relay does not have: at start, then every minute.
async fn sweep_out_of_range(relay: Relay, shutdown: CancellationToken) {
    loop {
        if let Err(e) = relay.sweep_out_of_range().await {
            tracing::warn!(error = %e, "outbox sweep for out-of-range partitions failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}

/// Deletes published rows older than the retention, in small batches.
async fn cleanup_published(relay: Relay, retention: Duration, shutdown: CancellationToken) {
    loop {
        // `published_at IS NULL` rows never match the age condition.
        let deleted = super::delete_older_than(
            &relay.pool,
            &relay.schema,
            "eventbus_outbox",
            "published_at",
            retention,
            5000,
        )
        .await;
        if let Err(e) = deleted {
            tracing::warn!(error = %e, "outbox retention cleanup failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}

/// SIGKILL to ourselves (for the crash-test failpoint): no destructors, no
/// commit, exactly like an operator's `kill -9`.
fn kill_self() -> ! {
    tracing::warn!("failpoint: killing the relay between publish and commit");
    let _ = std::process::Command::new("kill")
        .args(["-9", &std::process::id().to_string()])
        .status();
    std::process::abort()
}
