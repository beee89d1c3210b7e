//! Outbox scenarios: enqueue in transactions → relay → inbox consumer → ack,
//! and commit → handler latency at fixed rates, beside `pgbench` running
//! the outbox's insert and claim and the inbox's per-event commit, all in
//! one fresh schema.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventbus::pg::{
    connect_pool, migrate, DbSchema, Inbox, InboxConfig, InboxHandler, InboxStats, Outbox,
    OutboxConfig, PoolGate, Relay, RelayConfig, Savepoints, DEFAULT_INBOX_BATCH,
};
use eventbus::{
    Consumer, ConsumerConfig, ConsumerMode, Delivery, Envelope, HandlerError, Publisher,
    PublisherConfig, RedisConnector, Topology,
};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::baseline::{pgbench, PgLimit, PgScript};
use crate::measure::{histogram, Latency, Meter};
use crate::ours_or_failed;
use crate::report::{Role, Row, Section};
use crate::scenarios::{envelope, paced};
use crate::Ctx;

/// An inbox handler that records when each event reached it.
struct Stamp {
    reached: Arc<Mutex<HashMap<Uuid, Instant>>>,
}

impl InboxHandler for Stamp {
    async fn handle<'a>(
        &'a self,
        d: &'a Delivery,
        _tx: &'a mut PgConnection,
    ) -> Result<(), HandlerError> {
        self.reached
            .lock()
            .expect("stamp lock")
            .entry(d.envelope.id)
            .or_insert_with(Instant::now);
        Ok(())
    }
}

/// An outbox writing to `schema`.
fn outbox_in(topology: &Topology, schema: &DbSchema) -> Result<Outbox, String> {
    Outbox::new(
        topology.clone(),
        OutboxConfig {
            schema: schema.clone(),
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())
}

/// A relay with the default config, draining the outbox in `schema`.
async fn relay_in(
    redis: &RedisConnector,
    topology: &Topology,
    pool: &PgPool,
    schema: &DbSchema,
) -> Result<Relay, String> {
    let publisher = Publisher::connect(redis, topology.clone(), PublisherConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    Relay::new(
        pool.clone(),
        publisher,
        schema.clone(),
        RelayConfig::default(),
    )
    .map_err(|e| e.to_string())
}

/// A relay and two inbox consumers (unordered, 64 handlers each).
struct Pipeline {
    token: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<eventbus::Result<()>>>,
    reached: Arc<Mutex<HashMap<Uuid, Instant>>>,
    inboxes: Vec<Arc<InboxStats>>,
}

impl Pipeline {
    async fn start(
        redis: &RedisConnector,
        topology: &Topology,
        pool: &PgPool,
        schema: &DbSchema,
        consumers: usize,
        inbox_config: InboxConfig,
    ) -> Result<Pipeline, String> {
        let token = CancellationToken::new();
        let relay = relay_in(redis, topology, pool, schema).await?;
        let reached = Arc::new(Mutex::new(HashMap::new()));
        let mut tasks = vec![tokio::spawn(relay.run(token.clone()))];
        // Both consumers' handlers queue for the pool in one line.
        let gate = PoolGate::new(pool.clone());
        let mut inboxes = Vec::new();
        for _ in 0..consumers.max(1) {
            let mut config = ConsumerConfig::new("bench-inbox", ["work_item"]);
            config.mode = ConsumerMode::Unordered;
            config.concurrency = 64;
            config.block = Duration::from_millis(500);
            let inbox = Inbox::with_gate(
                gate.clone(),
                schema,
                Stamp {
                    reached: reached.clone(),
                },
            )
            .with_config(inbox_config.clone())
            .map_err(|e| e.to_string())?;
            inboxes.push(inbox.stats());
            let consumer = Consumer::new(redis.clone(), topology.clone(), config, inbox)
                .map_err(|e| e.to_string())?;
            tasks.push(tokio::spawn(consumer.run(token.clone())));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(Pipeline {
            token,
            tasks,
            reached,
            inboxes,
        })
    }

    /// Events committed per inbox transaction, on average.
    fn mean_batch(&self) -> f64 {
        let (events, batches) = self.inboxes.iter().fold((0, 0), |(e, b), s| {
            (
                e + s.committed.load(std::sync::atomic::Ordering::Relaxed),
                b + s.batches.load(std::sync::atomic::Ordering::Relaxed),
            )
        });
        events as f64 / batches.max(1) as f64
    }

    async fn stop(self) {
        self.token.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }

    async fn wait_for(&self, n: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.reached.lock().expect("stamp lock").len() < n {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }
}

/// An outbox writing to `schema` and a relay + inbox pipeline draining it.
async fn outbox_and_pipeline(
    ctx: &Ctx,
    topology: &Topology,
    pool: &PgPool,
    schema: &DbSchema,
    inbox_batch: usize,
    savepoints: Savepoints,
) -> Result<(Outbox, Pipeline), String> {
    let outbox = outbox_in(topology, schema)?;
    let pipeline = Pipeline::start(
        &ctx.redis,
        topology,
        pool,
        schema,
        ctx.params.consumers,
        InboxConfig {
            batch: inbox_batch,
            parallel: ctx
                .params
                .inbox_parallel
                .or(InboxConfig::default().parallel),
            savepoints,
            ..InboxConfig::default()
        },
    )
    .await?;
    Ok((outbox, pipeline))
}

/// The outbox sections: end to end (beside pgbench) and the commit → handler
/// latency rows, or one section explaining why they were skipped.
pub(crate) async fn run(ctx: &Ctx) -> Vec<Section> {
    let mut e2e = Section::new(
        "outbox end to end",
        format!(
            "{} events enqueued in transactions of 100 by 4 writers → relay (batches of 1,000) → \
             {} unordered inbox consumers (64 handlers each; inbox batches of at most N events \
             per PostgreSQL transaction) → ack",
            ctx.params.outbox_events, ctx.params.consumers
        ),
    );
    let mut latency = Section::new(
        "commit → handler latency",
        "one event per transaction at a fixed offered rate, through relay and inbox consumers \
         (default inbox batches); latency from just after COMMIT to the inbox handler",
    );
    latency.compare_rates = false;
    let mut commits = Section::new(
        "commit rate with the outbox",
        "pgbench's one-row transactions (8 clients) into the outbox while a relay drains it, \
         against the same rows into a plain table and against the outbox trigger before \
         migration 0006 (a NOTIFY per commit); rows/s = transactions/s",
    );
    let pool = match connect_pool(&ctx.target.database_url, 24, "eventbus-bench").await {
        Ok(p) => p,
        Err(e) => {
            e2e.rows.push(Row::skipped(
                "eventbus outbox",
                Role::Eventbus,
                format!("skipped: PostgreSQL: {e}"),
            ));
            return vec![e2e];
        }
    };
    let schema = match DbSchema::new(format!(
        "bench_{}",
        &Uuid::new_v4().simple().to_string()[..8]
    )) {
        Ok(s) => s,
        Err(e) => {
            e2e.rows.push(Row::skipped(
                "eventbus outbox",
                Role::Eventbus,
                e.to_string(),
            ));
            return vec![e2e];
        }
    };
    let result = sections(ctx, &pool, &schema, &mut e2e, &mut commits, &mut latency).await;
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
        schema.name()
    )))
    .execute(&pool)
    .await;
    if let Err(e) = result {
        e2e.rows.push(Row::skipped(
            "eventbus outbox",
            Role::Eventbus,
            format!("failed: {e}"),
        ));
    }
    vec![e2e, commits, latency]
}

async fn truncate(pool: &PgPool, schema: &DbSchema) -> Result<(), String> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "TRUNCATE \"{0}\".eventbus_outbox, \"{0}\".eventbus_inbox",
        schema.name()
    )))
    .execute(pool)
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

async fn sections(
    ctx: &Ctx,
    pool: &PgPool,
    schema: &DbSchema,
    e2e: &mut Section,
    commits: &mut Section,
    latency: &mut Section,
) -> Result<(), String> {
    let p = &ctx.params;
    let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
    migrate(&mut conn, schema)
        .await
        .map_err(|e| e.to_string())?;
    drop(conn);

    // End to end first, so the pgbench rows left behind do not slow it.
    for &batch in &p.inbox_batches {
        e2e.rows
            .push(end_to_end(ctx, pool, schema, batch, Savepoints::PerEvent).await?);
        truncate(pool, schema).await?;
    }
    // The default batch without a savepoint per handler.
    e2e.rows.push(
        end_to_end(
            ctx,
            pool,
            schema,
            DEFAULT_INBOX_BATCH,
            Savepoints::OnFailure,
        )
        .await?,
    );
    truncate(pool, schema).await?;

    // The relay alone, draining a filled outbox (beside the claim baseline).
    e2e.rows.push(ours_or_failed(
        "eventbus relay alone: filled outbox → streams",
        relay_alone(ctx, pool, schema).await,
    ));
    truncate(pool, schema).await?;

    // The limits of this PostgreSQL for the three statements the pipeline runs.
    let seconds = p.pgbench_secs;
    truncate(pool, schema).await?;
    e2e.rows.push(
        pgbench(
            ctx,
            schema,
            PgScript::Insert100,
            PgLimit::Seconds(seconds),
            None,
        )
        .await,
    );
    e2e.rows.push(claim_baseline(ctx, pool, schema).await);
    truncate(pool, schema).await?;
    e2e.rows.push(
        pgbench(
            ctx,
            schema,
            PgScript::InboxRow,
            PgLimit::Seconds(seconds),
            None,
        )
        .await,
    );
    truncate(pool, schema).await?;
    commits.rows = commit_rates(ctx, pool, schema).await?;

    for &rate in &p.outbox_rates {
        latency
            .rows
            .push(match commit_to_handler(ctx, pool, schema, rate).await {
                Ok(r) => r,
                Err(e) => Row::skipped(
                    format!("eventbus commit → handler @ {rate}/s"),
                    Role::Eventbus,
                    format!("failed: {e}"),
                ),
            });
        truncate(pool, schema).await?;
    }
    Ok(())
}

/// Outbox → relay → inbox with inbox batches of at most `batch`.
async fn end_to_end(
    ctx: &Ctx,
    pool: &PgPool,
    schema: &DbSchema,
    batch: usize,
    savepoints: Savepoints,
) -> Result<Row, String> {
    let p = &ctx.params;
    let (topology, ns) = ctx.topology("ob")?;
    let (outbox, pipeline) =
        outbox_and_pipeline(ctx, &topology, pool, schema, batch, savepoints).await?;
    let meter = Meter::start(&ctx.cpu_nodes).await;
    let events = p.outbox_events as u64;
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let (pool, outbox, payload) = (pool.clone(), outbox.clone(), p.payload);
        writers.push(tokio::spawn(async move {
            let mut seq = w * 100;
            while seq < events {
                let batch: Vec<Envelope> = (seq..(seq + 100).min(events))
                    .map(|i| envelope(i, payload))
                    .collect();
                let mut tx = pool.begin().await?;
                outbox.enqueue_batch(&mut *tx, &batch).await?;
                tx.commit().await?;
                seq += 400;
            }
            Ok::<(), eventbus::Error>(())
        }));
    }
    let mut failed = None;
    for w in writers {
        if let Err(e) = w
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            failed = Some(e);
        }
    }
    let done = failed.is_none()
        && pipeline
            .wait_for(events as usize, Duration::from_secs(p.timeout_secs))
            .await;
    let usage = meter.stop().await;
    let handled = pipeline.reached.lock().expect("stamp lock").len();
    let mean_batch = pipeline.mean_batch();
    pipeline.stop().await;
    ctx.cleanup(&ns).await;
    if let Some(e) = failed {
        return Err(e);
    }
    if !done {
        return Err(format!(
            "only {handled} of {events} events handled within {} s",
            p.timeout_secs
        ));
    }
    let name = match (batch, savepoints) {
        (1, _) => "eventbus outbox → relay → inbox, 1 event/tx".to_owned(),
        (_, Savepoints::OnFailure) => {
            format!("eventbus outbox → relay → inbox, batch ≤ {batch}, savepoints on failure")
        }
        _ => format!("eventbus outbox → relay → inbox, batch ≤ {batch}"),
    };
    Ok(Row::ours(name, events, &usage).with_note(format!(
        "{mean_batch:.1} events per inbox transaction on average; \
         CPU: this process (writers, relay, consumers) · Redis · PostgreSQL"
    )))
}

/// The relay on its own: the outbox is filled first (`outbox_events` rows,
/// not timed), then one relay drains it to the streams; timed until every
/// row is published. Its claim is the statement of the claim baseline.
async fn relay_alone(ctx: &Ctx, pool: &PgPool, schema: &DbSchema) -> Result<Row, String> {
    let p = &ctx.params;
    let (topology, ns) = ctx.topology("rl")?;
    let outbox = outbox_in(&topology, schema)?;
    let events = p.outbox_events as u64;
    for start in (0..events).step_by(1000) {
        let batch: Vec<Envelope> = (start..(start + 1000).min(events))
            .map(|i| envelope(i, p.payload))
            .collect();
        let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
        outbox
            .enqueue_batch(&mut *tx, &batch)
            .await
            .map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())?;
    }
    let relay = relay_in(&ctx.redis, &topology, pool, schema).await?;
    let stats = relay.stats();
    let token = CancellationToken::new();
    let meter = Meter::start(&ctx.cpu_nodes).await;
    let task = tokio::spawn(relay.run(token.clone()));
    let deadline = Instant::now() + Duration::from_secs(p.timeout_secs);
    while stats.published.load(std::sync::atomic::Ordering::Relaxed) < events
        && Instant::now() < deadline
        && !task.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let usage = meter.stop().await;
    token.cancel();
    let _ = task.await;
    ctx.cleanup(&ns).await;
    let published = stats.published.load(std::sync::atomic::Ordering::Relaxed);
    if published < events {
        return Err(format!(
            "only {published} of {events} rows relayed within {} s",
            p.timeout_secs
        ));
    }
    Ok(Row::ours(
        "eventbus relay alone: filled outbox → streams",
        events,
        &usage,
    )
    .with_note(
        "one relay, default config (4 workers, claims of ≤ 1,000); CPU: relay · Redis · PostgreSQL",
    ))
}

/// The outbox trigger before migration 0006: a notification per commit.
const NOTIFY_PER_COMMIT: &str =
    "CREATE OR REPLACE FUNCTION eventbus_outbox_notify() RETURNS trigger \
     LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('eventbus_outbox.' || TG_TABLE_SCHEMA, ''); \
     RETURN NULL; END $$;";

/// Runs `sql` with `schema` first on the search path.
async fn in_schema(pool: &PgPool, schema: &DbSchema, sql: &str) -> Result<(), String> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; SET LOCAL search_path TO \"{}\"; {sql}; COMMIT;",
        schema.name()
    )))
    .execute(pool)
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// pgbench's one-row transactions into the outbox while a relay drains it
/// (the trigger of 0006, then the one before it), and into a plain table.
async fn commit_rates(ctx: &Ctx, pool: &PgPool, schema: &DbSchema) -> Result<Vec<Row>, String> {
    let seconds = ctx.params.pgbench_secs;
    let mut rows = Vec::new();
    for trigger in ["0006", "before 0006"] {
        if trigger != "0006" {
            in_schema(pool, schema, NOTIFY_PER_COMMIT).await?;
        }
        let (topology, ns) = ctx.topology("commits")?;
        let relay = relay_in(&ctx.redis, &topology, pool, schema).await?;
        let token = CancellationToken::new();
        let task = tokio::spawn(relay.run(token.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut row = pgbench(
            ctx,
            schema,
            PgScript::OutboxRow,
            PgLimit::Seconds(seconds),
            None,
        )
        .await;
        token.cancel();
        let _ = task.await;
        ctx.cleanup(&ns).await;
        truncate(pool, schema).await?;
        if trigger == "0006" {
            row.role = Role::Eventbus;
            row.system = "eventbus outbox: 1 row per tx (-c 8), a relay running".into();
        } else {
            row.system = format!("{}, trigger before 0006 (NOTIFY per commit)", row.system);
        }
        rows.push(row);
    }
    let migration = eventbus::pg::migrations()
        .iter()
        .find(|m| m.version == 6)
        .ok_or("migration 0006 is embedded")?;
    in_schema(pool, schema, migration.sql).await?;
    in_schema(
        pool,
        schema,
        "CREATE TABLE bench_plain (LIKE eventbus_outbox INCLUDING ALL)",
    )
    .await?;
    rows.push(
        pgbench(
            ctx,
            schema,
            PgScript::PlainRow,
            PgLimit::Seconds(seconds),
            None,
        )
        .await,
    );
    in_schema(pool, schema, "DROP TABLE bench_plain").await?;
    Ok(rows)
}

/// pgbench claiming and deleting batches of 1,000 like the relay, from a
/// table filled beforehand so that every claim finds a full batch.
async fn claim_baseline(ctx: &Ctx, pool: &PgPool, schema: &DbSchema) -> Row {
    let name = "pgbench: claim+DELETE 1,000 outbox rows per tx (-c 4)";
    let per_client = ctx.params.pgbench_claims;
    let partitions = u64::from(ctx.target.partitions);
    // 4 clients × per_client claims of 1,000 over random partitions: fill
    // each partition with twice its expected share, and at least 3 batches.
    let per_partition = (2 * 4 * per_client * 1000 / partitions).max(3000);
    let fill = format!(
        "INSERT INTO \"{s}\".eventbus_outbox (event_id, event_type, version, key, partition, source, headers, data) \
         SELECT gen_random_uuid(), 'work_item.processing_completed', 1, 'wi-' || g, g % {partitions}, 'bench', '{{}}', \
         json_build_object('work_item_id', 'wi-1', 'seq', g, 'pad', repeat('x', {pad})) \
         FROM generate_series(1, {total}) g",
        s = schema.name(),
        pad = ctx.params.payload.saturating_sub(60),
        total = per_partition * partitions
    );
    let count = format!("SELECT count(*) FROM \"{}\".eventbus_outbox", schema.name());
    let before: Result<i64, sqlx::Error> = async {
        sqlx::raw_sql(sqlx::AssertSqlSafe(fill))
            .execute(pool)
            .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "VACUUM ANALYZE \"{}\".eventbus_outbox",
            schema.name()
        )))
        .execute(pool)
        .await?;
        sqlx::query_scalar(sqlx::AssertSqlSafe(count.clone()))
            .fetch_one(pool)
            .await
    }
    .await;
    let before = match before {
        Ok(n) => n,
        Err(e) => return Row::skipped(name, Role::Baseline, format!("filling the table: {e}")),
    };
    // Count what the claims deleted after the run, then report that.
    let mut row = pgbench(
        ctx,
        schema,
        PgScript::Claim1000,
        PgLimit::Transactions(per_client),
        None,
    )
    .await;
    let after: Result<i64, _> = sqlx::query_scalar(sqlx::AssertSqlSafe(count))
        .fetch_one(pool)
        .await;
    if let (Ok(after), Some(_)) = (after, row.events_per_sec) {
        let deleted = (before - after).max(0) as u64;
        row.events_per_sec = Some(deleted as f64 / row.seconds.max(1e-9));
        if let Some(cpu) = &mut row.cpu_per_million {
            let scale = row.events as f64 / deleted.max(1) as f64;
            cpu.client *= scale;
            cpu.redis = cpu.redis.map(|c| c * scale);
            cpu.postgres = cpu.postgres.map(|c| c * scale);
        }
        row.events = deleted;
    }
    row
}

/// One event per transaction at `rate` per second for `rate_secs`, through
/// relay and inbox; latency from just after COMMIT to the handler.
async fn commit_to_handler(
    ctx: &Ctx,
    pool: &PgPool,
    schema: &DbSchema,
    rate: u64,
) -> Result<Row, String> {
    let p = &ctx.params;
    let (topology, ns) = ctx.topology(&format!("oblat{rate}"))?;
    let (outbox, pipeline) = outbox_and_pipeline(
        ctx,
        &topology,
        pool,
        schema,
        DEFAULT_INBOX_BATCH,
        Savepoints::PerEvent,
    )
    .await?;
    let count = rate * p.rate_secs;
    // The writers are the application: a pool of their own, and a gate in
    // front of it, so that an offered rate above what PostgreSQL sustains
    // queues tasks (the achieved rate shows it) instead of timing out
    // acquires and retrying their connects at once (a connection storm).
    let writers = PoolGate::new(
        connect_pool(&ctx.target.database_url, 8, "eventbus-bench writers")
            .await
            .map_err(|e| e.to_string())?,
    );
    let committed = Arc::new(Mutex::new(HashMap::with_capacity(count as usize)));
    let meter = Meter::start(&ctx.cpu_nodes).await;
    let sent = paced(rate, count, |seq| {
        let (writers, outbox, committed, payload) = (
            writers.clone(),
            outbox.clone(),
            committed.clone(),
            p.payload,
        );
        async move {
            let e = envelope(seq, payload);
            // Over capacity, waiting for a connection is part of the
            // offered load, not a failure: the achieved rate shows it. A
            // timed-out acquire has already backed off in the gate.
            let mut conn = loop {
                match writers.acquire().await {
                    Err(sqlx::Error::PoolTimedOut) => continue,
                    other => break other?,
                }
            };
            let mut tx = sqlx::Connection::begin(&mut **conn).await?;
            outbox.enqueue(&mut *tx, &e).await?;
            tx.commit().await?;
            committed
                .lock()
                .expect("commit stamps")
                .insert(e.id, Instant::now());
            Ok(())
        }
    })
    .await;
    let done = sent.is_ok()
        && pipeline
            .wait_for(count as usize, Duration::from_secs(120))
            .await;
    let usage = meter.stop().await;
    let mut h = histogram();
    {
        let reached = pipeline.reached.lock().expect("stamp lock");
        for (id, at_commit) in committed.lock().expect("commit stamps").iter() {
            if let Some(at_handler) = reached.get(id) {
                // The handler can run before our "after commit" stamp is
                // taken: that counts as the smallest latency.
                let us = at_handler.saturating_duration_since(*at_commit).as_micros() as u64;
                let _ = h.record(us.max(1));
            }
        }
    }
    pipeline.stop().await;
    ctx.cleanup(&ns).await;
    sent?;
    if !done {
        return Err(format!(
            "commit → handler at {rate}/s: not every event was handled"
        ));
    }
    Ok(Row::ours(
        format!("eventbus commit → handler @ {rate}/s"),
        count,
        &usage,
    )
    .with_latency(Latency::from_micros(&h))
    .with_note(format!(
        "{} unordered inbox consumers; relay woken by NOTIFY",
        p.consumers
    )))
}
