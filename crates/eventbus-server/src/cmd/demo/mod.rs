//! `eventbus demo`: the whole path, outbox → relay → Redis → inbox, on the
//! local services, in a fresh Redis namespace and a fresh PostgreSQL schema.
//!
//! Sample events of every catalogue type are enqueued to the outbox in
//! transactions of 100 (each also writes a business row); a relay in this
//! process publishes them; two consumers of one group handle them through an
//! inbox, writing one result row per event in the inbox transaction. Then
//! some events are published a second time straight to Redis, as a relay
//! crash between publish and commit would, to show the inbox skipping them.
//!
//! Shutdown handshake: relay and consumers share one token. Once every event
//! has been handled and every duplicate skipped (or the timeout passes, or a
//! signal arrives) the token is cancelled; the consumers drain and
//! acknowledge, the relay finishes its batch, and the namespace and schema are
//! deleted unless `--keep`.

mod report;
mod samples;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventbus::deadletter::{DeadLetterFilter, DeadLetterStore, ReplayOptions};
use eventbus::pg::{outbox_status, DbSchema, Inbox, InboxHandler, InboxStats, Relay, RelayConfig};
use eventbus::RedisConn;
use eventbus::{Backoff, RetryPolicy};
use eventbus::{
    Consumer, ConsumerConfig, Delivery, HandlerError, Publisher, PublisherConfig, RedisConnector,
    Topology,
};
use sqlx::{PgConnection, PgPool};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::report::Summary;
use super::CATALOGUE_TOPICS;
use crate::cli::DemoArgs;
use crate::config::Settings;
use crate::error::{CliError, Result};
use crate::output;

/// The demo's consumer group.
const GROUP: &str = "demo";
/// Events per outbox transaction.
const ENQUEUE_CHUNK: usize = 100;
/// The database used when `DATABASE_URL` is not set: the local server.
const LOCAL_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Attempts before the demo's failing event is dead-lettered.
const DEMO_ATTEMPTS: u32 = 3;
/// One event in this many is published a second time, as a relay crash would.
const DUPLICATE_ONE_IN: usize = 20;

/// What the consumers saw, shared by their handlers.
#[derive(Default)]
struct Seen {
    /// Deliveries per event id.
    by_id: HashMap<Uuid, u64>,
    /// Deliveries per consumer name.
    by_consumer: BTreeMap<String, u64>,
    /// Deliveries per (topic, partition).
    by_partition: BTreeMap<(String, u32), u64>,
}

/// The demo's log filter when `EVENT_BUS_LOG` is not set: warnings only, so
/// stderr stays quiet around the summary on stdout; `-v` brings the info
/// lines back.
pub(crate) fn log_filter(verbose: bool) -> &'static str {
    if verbose {
        "info"
    } else {
        "warn"
    }
}

/// Runs `eventbus demo`.
pub(crate) async fn run(args: DemoArgs, settings: &Settings) -> Result<()> {
    let suffix = Uuid::new_v4().simple().to_string();
    let topology = Topology::new(format!("demo-{}", &suffix[..8]), settings.partitions)?;
    let connector = settings.connector()?;
    let conn = connector.shared().await?;
    let pool = settings
        .pg
        .with_default_url(LOCAL_DATABASE_URL)
        .pool(settings.pg.pool_size, "demo")
        .await?;
    let schema = DbSchema::new(format!("demo_{}", &suffix[..8]))?;
    eventbus::pg::migrate(
        &mut *pool.acquire().await.map_err(eventbus::Error::from)?,
        &schema,
    )
    .await?;
    let interrupted = super::shutdown_on_signal();

    let db = Db {
        pool: pool.clone(),
        schema: schema.clone(),
    };
    let outcome = run_in(&args, &connector, &conn, &topology, &db, &interrupted).await;

    let cleanup = if args.keep {
        eprintln!(
            "eventbus: kept namespace {ns} and schema {schema}; look at them with \
             `EVENT_BUS_NAMESPACE={ns} EVENT_BUS_DB_SCHEMA={schema} eventbus streams`",
            ns = topology.namespace(),
            schema = schema.name()
        );
        Ok(0)
    } else {
        let dropped = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{}\" CASCADE",
            schema.name()
        )))
        .execute(&pool)
        .await;
        if let Err(e) = dropped {
            tracing::warn!(error = %e, schema = schema.name(), "could not drop the demo schema");
        }
        delete_namespace(&conn, &topology).await
    };
    let mut summary = outcome?;
    summary.deleted_keys = cleanup?;
    summary.kept = args.keep;
    if args.json {
        output::json_line(&summary)
    } else {
        output::write_stdout(summary.to_text().as_bytes())
    }
}

/// The demo's database: a pool and its throw-away schema.
struct Db {
    pool: PgPool,
    schema: DbSchema,
}

/// Writes one result row per event in the inbox transaction, and counts.
struct DemoHandler {
    seen: Arc<Mutex<Seen>>,
    insert: String,
    /// This event fails (retryably) until `fixed` is set: it is retried,
    /// dead-lettered, then replayed once "the fix is deployed".
    poison: Uuid,
    fixed: Arc<std::sync::atomic::AtomicBool>,
}

impl InboxHandler for DemoHandler {
    async fn handle<'a>(
        &'a self,
        d: &'a Delivery,
        tx: &'a mut PgConnection,
    ) -> std::result::Result<(), HandlerError> {
        if d.envelope.id == self.poison && !self.fixed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(HandlerError::retryable(
                "demo: the billing service is down (fails until the fix is deployed)",
            ));
        }
        sqlx::query(sqlx::AssertSqlSafe(self.insert.clone()))
            .bind(d.envelope.id)
            .bind(&d.consumer)
            .execute(&mut *tx)
            .await
            .map_err(|e| HandlerError::retryable(e.to_string()))?;
        let mut s = self.seen.lock().expect("seen poisoned");
        *s.by_id.entry(d.envelope.id).or_default() += 1;
        *s.by_consumer.entry(d.consumer.clone()).or_default() += 1;
        *s.by_partition
            .entry((d.topic.clone(), d.partition))
            .or_default() += 1;
        Ok(())
    }
}

async fn run_in(
    args: &DemoArgs,
    connector: &RedisConnector,
    conn: &RedisConn,
    topology: &Topology,
    db: &Db,
    interrupted: &CancellationToken,
) -> Result<Summary> {
    let per_type = usize::try_from(args.events_per_type).unwrap_or(50);
    let events = samples::generate(per_type, &mut rand::rng());
    let published_ids: HashSet<Uuid> = events.iter().map(|e| e.id).collect();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let business = format!("\"{}\".demo_changes", db.schema.name());
    let results = format!("\"{}\".demo_results", db.schema.name());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {business} (event_id uuid NOT NULL, type text NOT NULL); \
         CREATE TABLE {results} (event_id uuid NOT NULL, consumer text NOT NULL)"
    )))
    .execute(&db.pool)
    .await
    .map_err(eventbus::Error::from)?;

    // Relay and two consumers (one group) run concurrently. Reads of at most
    // 64 entries per stream keep one consumer from taking everything.
    let stop = interrupted.child_token();
    let mut tasks = JoinSet::new();
    let publisher =
        Publisher::connect(connector, topology.clone(), PublisherConfig::default()).await?;
    let relay = Relay::new(
        db.pool.clone(),
        publisher.clone(),
        db.schema.clone(),
        RelayConfig::default(),
    )?;
    let relay_stats = relay.stats();
    tasks.spawn(relay.run(stop.clone()));
    let mut names = Vec::new();
    let mut inbox_stats: Vec<Arc<InboxStats>> = Vec::new();
    let poison = events
        .iter()
        .find(|e| e.event_type == "work_item.processing_failed")
        .unwrap_or(&events[0])
        .clone();
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dead_letters = DeadLetterStore::new(
        db.pool.clone(),
        db.schema.clone(),
        topology.clone(),
        conn.clone(),
    );
    for n in 1..=2 {
        let mut config = ConsumerConfig::new(GROUP, CATALOGUE_TOPICS);
        let name = format!("demo-consumer-{n}");
        config.consumer_name = Some(name.clone());
        config.concurrency = 32;
        config.read_count = 64;
        config.block = Duration::from_millis(200);
        config.shutdown_timeout = Duration::from_secs(10);
        config.retry = RetryPolicy {
            max_attempts: DEMO_ATTEMPTS,
            backoff: Backoff::Schedule(vec![Duration::from_millis(100)]),
            attempt_timeout: Some(Duration::from_secs(10)),
        };
        let handler = DemoHandler {
            seen: seen.clone(),
            insert: format!("INSERT INTO {results} (event_id, consumer) VALUES ($1, $2)"),
            poison: poison.id,
            fixed: fixed.clone(),
        };
        let inbox = Inbox::new(db.pool.clone(), &db.schema, handler);
        inbox_stats.push(inbox.stats());
        let consumer = Consumer::new(connector.clone(), topology.clone(), config, inbox)?
            .with_dead_letter_store(db.pool.clone(), db.schema.clone());
        names.push(name);
        tasks.spawn(consumer.run(stop.clone()));
    }

    // The application's side: each transaction writes business rows and
    // their events together.
    let started = Instant::now();
    let outbox = eventbus::pg::Outbox::new(
        topology.clone(),
        eventbus::pg::OutboxConfig {
            schema: db.schema.clone(),
            ..Default::default()
        },
    )?;
    let mut batches = 0;
    for chunk in events.chunks(ENQUEUE_CHUNK) {
        let mut tx = db.pool.begin().await.map_err(eventbus::Error::from)?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {business} (event_id, type) SELECT * FROM UNNEST($1::uuid[], $2::text[])"
        )))
        .bind(chunk.iter().map(|e| e.id).collect::<Vec<_>>())
        .bind(
            chunk
                .iter()
                .map(|e| e.event_type.clone())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await
        .map_err(eventbus::Error::from)?;
        outbox.enqueue_batch(&mut *tx, chunk).await?;
        tx.commit().await.map_err(eventbus::Error::from)?;
        batches += 1;
    }
    let publish_time = started.elapsed();
    tracing::info!(
        events = events.len(),
        ?publish_time,
        "demo events committed to the outbox"
    );

    // Wait until every event was handled, then publish some a second time
    // (as after a relay crash between publish and commit) and wait until the
    // inboxes skipped them all.
    let duplicates: Vec<eventbus::Envelope> = events
        .iter()
        .step_by(DUPLICATE_ONE_IN)
        .filter(|e| e.id != poison.id)
        .cloned()
        .collect();
    let mut dead_letter: Option<eventbus::deadletter::DeadLetter> = None;
    let mut replayed = false;
    let skipped = || -> u64 {
        inbox_stats
            .iter()
            .map(|s| s.duplicates.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    };
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut consume_time = None;
    let waited = loop {
        let (missing, poison_handled) = {
            let s = seen.lock().expect("seen poisoned");
            (
                published_ids
                    .iter()
                    .filter(|id| **id != poison.id && !s.by_id.contains_key(id))
                    .count(),
                s.by_id.contains_key(&poison.id),
            )
        };
        if missing == 0 && consume_time.is_none() {
            consume_time = Some(started.elapsed());
            publisher.publish_batch(&duplicates).await?;
        }
        if dead_letter.is_none() {
            let found = dead_letters
                .list(&DeadLetterFilter {
                    group: Some(GROUP.into()),
                    key: Some(poison.key.clone()),
                    ..Default::default()
                })
                .await?;
            dead_letter = found.into_iter().find(|d| d.event_id == poison.id);
        }
        if let (Some(dl), false) = (&dead_letter, replayed) {
            // "Deploy the fix", then replay the dead letter to its group.
            fixed.store(true, std::sync::atomic::Ordering::SeqCst);
            let report = dead_letters
                .replay(
                    &DeadLetterFilter {
                        ids: vec![dl.id],
                        ..Default::default()
                    },
                    &ReplayOptions {
                        actor: "eventbus demo".into(),
                        ..Default::default()
                    },
                )
                .await?;
            replayed = report.replayed == 1;
        }
        if consume_time.is_some() && skipped() >= duplicates.len() as u64 && poison_handled {
            break Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            break Err(CliError::DemoIncomplete {
                missing,
                published: published_ids.len(),
                timeout: args.timeout,
            });
        }
        tokio::select! {
            _ = interrupted.cancelled() => break Err(CliError::Interrupted("demo")),
            ended = tasks.join_next() => {
                // The relay or a consumer stopped before the end: report why.
                if let Some(Ok(Err(e))) = ended {
                    stop.cancel();
                    return Err(e.into());
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    };

    stop.cancel();
    while let Some(ended) = tasks.join_next().await {
        if let Ok(Err(e)) = ended {
            tracing::warn!(error = %e, "demo relay or consumer stopped with an error");
        }
    }
    waited?;
    let consume_time = consume_time.unwrap_or_default();
    let total_time = started.elapsed();

    let pending = pending_after(conn, topology).await?;
    let backlog: i64 = outbox_status(&db.pool, &db.schema)
        .await?
        .iter()
        .map(|p| p.backlog)
        .sum();
    let (result_rows, result_distinct): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*), count(DISTINCT event_id) FROM {results}"
    )))
    .fetch_one(&db.pool)
    .await
    .map_err(eventbus::Error::from)?;
    let seen = seen.lock().expect("seen poisoned");
    Ok(Summary::new(report::Inputs {
        namespace: topology.namespace().to_owned(),
        schema: db.schema.name().to_owned(),
        partitions: topology.partitions(),
        group: GROUP.to_owned(),
        events: &events,
        batches,
        consumers: names,
        by_id: &seen.by_id,
        by_consumer: &seen.by_consumer,
        by_partition: &seen.by_partition,
        pending,
        outbox_backlog: backlog,
        relay_published: relay_stats
            .published
            .load(std::sync::atomic::Ordering::Relaxed),
        duplicates_published: duplicates.len() as u64,
        duplicates_skipped: skipped(),
        poison: report::PoisonStory {
            event_id: poison.id,
            event_type: poison.event_type.clone(),
            attempts: dead_letter.as_ref().map_or(0, |d| d.attempts),
            dead_letter_id: dead_letter.as_ref().map(|d| d.id),
            error: dead_letter
                .as_ref()
                .map(|d| d.error_message.clone())
                .unwrap_or_default(),
            replayed,
            handled_after_replay: seen.by_id.contains_key(&poison.id),
        },
        result_rows,
        result_distinct,
        publish_time,
        consume_time,
        total_time,
    }))
}

/// Entries still pending for the demo group once the consumers stopped (0 when
/// every acknowledgement was flushed).
async fn pending_after(conn: &RedisConn, topology: &Topology) -> Result<u64> {
    let topics = CATALOGUE_TOPICS.iter().map(|t| (*t).to_owned()).collect();
    let stats = eventbus::admin::partition_stats(conn, topology, &topics).await?;
    Ok(stats
        .iter()
        .flat_map(|p| &p.groups)
        .filter(|g| g.name == GROUP)
        .map(|g| g.pending)
        .sum())
}

/// Deletes every key of the namespace (`SCAN MATCH <ns>:*` then `UNLINK`).
/// On a cluster `SCAN` would walk one node only: `KEYS` goes to every
/// master and the redis client merges the replies (the demo's namespace is
/// small), and `UNLINK` is split per slot by the client.
async fn delete_namespace(conn: &RedisConn, topology: &Topology) -> Result<u64> {
    let pattern = format!("{}:*", topology.namespace());
    if conn.is_cluster() {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut conn.clone())
            .await
            .map_err(eventbus::Error::from)?;
        let mut deleted = 0;
        for chunk in keys.chunks(500) {
            let n: u64 = redis::cmd("UNLINK")
                .arg(chunk)
                .query_async(&mut conn.clone())
                .await
                .map_err(eventbus::Error::from)?;
            deleted += n;
        }
        return Ok(deleted);
    }
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn.clone())
            .await
            .map_err(eventbus::Error::from)?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn.clone())
                .await
                .map_err(eventbus::Error::from)?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}
