//! Outbox scenarios: enqueue in transactions → relay → inbox consumer → ack,
//! and commit-to-handler latency at a fixed rate, beside `pgbench` inserting
//! the same row shape in batches of 100, all in the same run.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventbus::pg::{connect_pool, migrate, DbSchema, Inbox, InboxHandler, Outbox, OutboxConfig, Relay, RelayConfig};
use eventbus::{Consumer, ConsumerConfig, Delivery, Envelope, HandlerError, Publisher, PublisherConfig, RedisConnector, Topology};
use hdrhistogram::Histogram;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What the outbox scenarios measured.
#[derive(Debug)]
pub(crate) struct OutboxFigures {
    /// pgbench: outbox rows inserted per second, 100 per transaction.
    pub(crate) pgbench_rows_per_sec: Option<f64>,
    /// pgbench: single-row transactions per second from 16 clients (the
    /// commit rate this disk allows; an inbox commits once per event).
    pub(crate) pgbench_commits_per_sec: Option<f64>,
    /// Events per second, enqueue → relay → inbox consumer → ack.
    pub(crate) end_to_end_per_sec: f64,
    /// Commit → handler latency at a fixed rate: (rate, p50 ms, p99 ms, max ms).
    pub(crate) latency: (u64, f64, f64, f64),
}

/// Runs pgbench with a script inserting `rows` outbox rows per transaction
/// from `clients` connections; returns rows per second.
fn pgbench(database_url: &str, schema: &str, payload: usize, seconds: u64, rows: u32, clients: u32) -> Result<f64, String> {
    let dir = std::env::temp_dir().join(format!("eventbus-pgbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let script = dir.join("insert100.sql");
    let pad = "x".repeat(payload.saturating_sub(40));
    std::fs::write(
        &script,
        format!(
            "INSERT INTO \"{schema}\".eventbus_outbox (event_id, event_type, version, key, partition, source, headers, data) \
             SELECT gen_random_uuid(), 'work_item.processing_completed', 1, 'wi-' || g, g % 16, 'bench', '{{}}', \
             '{{\"seq\": 1, \"pad\": \"{pad}\"}}' FROM generate_series(1, {rows}) g;\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let out = Command::new("pgbench")
        .args(["-n", "-c", &clients.to_string(), "-j", "2", "-T", &seconds.to_string(), "-f"])
        .arg(&script)
        .arg(database_url)
        .output()
        .map_err(|e| format!("pgbench: {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|t| t.parse::<f64>().ok())
        .ok_or_else(|| format!("pgbench printed no tps: {} {}", text, String::from_utf8_lossy(&out.stderr)))?;
    Ok(tps * f64::from(rows))
}

/// An inbox handler that records when each event reached it.
struct Stamp {
    reached: Arc<Mutex<HashMap<Uuid, Instant>>>,
}

impl InboxHandler for Stamp {
    async fn handle<'a>(&'a self, d: &'a Delivery, _tx: &'a mut PgConnection) -> Result<(), HandlerError> {
        self.reached.lock().unwrap().entry(d.envelope.id).or_insert_with(Instant::now);
        Ok(())
    }
}

struct Pipeline {
    token: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<eventbus::Result<()>>>,
    reached: Arc<Mutex<HashMap<Uuid, Instant>>>,
}

async fn start_pipeline(redis: &RedisConnector, topology: &Topology, pool: &PgPool, schema: &DbSchema) -> Result<Pipeline, String> {
    let token = CancellationToken::new();
    let publisher = Publisher::connect(redis, topology.clone(), PublisherConfig::default()).await.map_err(|e| e.to_string())?;
    let relay = Relay::new(pool.clone(), publisher, schema.clone(), RelayConfig::default()).map_err(|e| e.to_string())?;
    let reached = Arc::new(Mutex::new(HashMap::new()));
    let mut tasks = vec![tokio::spawn(relay.run(token.clone()))];
    for _ in 0..2 {
        let mut config = ConsumerConfig::new("bench-inbox", ["work_item"]);
        config.concurrency = 64;
        config.block = Duration::from_millis(100);
        let inbox = Inbox::new(pool.clone(), schema, Stamp { reached: reached.clone() });
        let consumer = Consumer::new(redis.clone(), topology.clone(), config, inbox).map_err(|e| e.to_string())?;
        tasks.push(tokio::spawn(consumer.run(token.clone())));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(Pipeline { token, tasks, reached })
}

impl Pipeline {
    async fn stop(self) {
        self.token.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }

    async fn wait_for(&self, n: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.reached.lock().unwrap().len() < n {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }
}

fn event(i: usize, payload: usize) -> Envelope {
    let key = format!("wi-{}", i % 10_000);
    Envelope::new(
        "work_item.processing_completed",
        key,
        serde_json::json!({"seq": i, "pad": "x".repeat(payload.saturating_sub(40))}),
    )
    .with_source("bench")
}

/// Runs the outbox scenarios in a fresh schema and namespace.
pub(crate) async fn run(
    redis: &RedisConnector,
    database_url: &str,
    namespace: &str,
    partitions: u32,
    events: usize,
    payload: usize,
) -> Result<OutboxFigures, String> {
    let pool = connect_pool(database_url, 16, "eventbus-bench").await.map_err(|e| e.to_string())?;
    let schema = DbSchema::new(format!("bench_{}", &Uuid::new_v4().simple().to_string()[..8])).map_err(|e| e.to_string())?;
    let result = async {
        migrate(&mut *pool.acquire().await.map_err(|e| e.to_string())?, &schema).await.map_err(|e| e.to_string())?;
        let pgbench_rows_per_sec = pgbench(database_url, schema.name(), payload, 5, 100, 4)
            .map_err(|e| eprintln!("eventbus-bench: pgbench baseline skipped: {e}"))
            .ok();
        let pgbench_commits_per_sec = pgbench(database_url, schema.name(), payload, 5, 1, 16)
            .map_err(|e| eprintln!("eventbus-bench: pgbench baseline skipped: {e}"))
            .ok();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("TRUNCATE \"{}\".eventbus_outbox", schema.name())))
            .execute(&pool)
            .await
            .map_err(|e| e.to_string())?;

        // Throughput: 4 writers, transactions of 100.
        let topology = Topology::new(format!("{namespace}-ob"), partitions).map_err(|e| e.to_string())?;
        let outbox = Outbox::new(topology.clone(), OutboxConfig { schema: schema.clone(), ..Default::default() })
            .map_err(|e| e.to_string())?;
        let all: Vec<Envelope> = (0..events).map(|i| event(i, payload)).collect();
        let pipeline = start_pipeline(redis, &topology, &pool, &schema).await?;
        let started = Instant::now();
        let mut writers = Vec::new();
        for part in all.chunks(all.len().div_ceil(4)) {
            let (pool, outbox, part) = (pool.clone(), outbox.clone(), part.to_vec());
            writers.push(tokio::spawn(async move {
                for tx_events in part.chunks(100) {
                    let mut tx = pool.begin().await?;
                    outbox.enqueue_batch(&mut *tx, tx_events).await?;
                    tx.commit().await?;
                }
                Ok::<(), eventbus::Error>(())
            }));
        }
        for w in writers {
            w.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        }
        if !pipeline.wait_for(events, Duration::from_secs(600)).await {
            return Err("outbox end-to-end did not finish in 10 minutes".into());
        }
        let end_to_end_per_sec = events as f64 / started.elapsed().as_secs_f64();
        pipeline.stop().await;

        // Latency at a fixed rate: one event per transaction, 1,000 per second, 5 s.
        let topology = Topology::new(format!("{namespace}-lat"), partitions).map_err(|e| e.to_string())?;
        let outbox = Outbox::new(topology.clone(), OutboxConfig { schema: schema.clone(), ..Default::default() })
            .map_err(|e| e.to_string())?;
        let pipeline = start_pipeline(redis, &topology, &pool, &schema).await?;
        let rate = 1000u64;
        let count = 5 * rate as usize;
        let committed = Arc::new(Mutex::new(HashMap::with_capacity(count)));
        let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut inflight = tokio::task::JoinSet::new();
        for i in 0..count {
            ticker.tick().await;
            let (pool, outbox, committed) = (pool.clone(), outbox.clone(), committed.clone());
            let e = event(i, payload);
            inflight.spawn(async move {
                let mut tx = pool.begin().await?;
                outbox.enqueue(&mut *tx, &e).await?;
                tx.commit().await?;
                committed.lock().unwrap().insert(e.id, Instant::now());
                Ok::<(), eventbus::Error>(())
            });
            while let Some(r) = inflight.try_join_next() {
                r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            }
        }
        while let Some(r) = inflight.join_next().await {
            r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        }
        if !pipeline.wait_for(count, Duration::from_secs(120)).await {
            return Err("latency run did not finish".into());
        }
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        {
            let reached = pipeline.reached.lock().unwrap();
            for (id, at_commit) in committed.lock().unwrap().iter() {
                if let Some(at_handler) = reached.get(id) {
                    // The handler can run before our "after commit" stamp
                    // is taken: count that as zero.
                    let micros = at_handler.saturating_duration_since(*at_commit).as_micros() as u64;
                    h.record(micros.max(1)).expect("record");
                }
            }
        }
        pipeline.stop().await;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Ok(OutboxFigures {
            pgbench_rows_per_sec,
            pgbench_commits_per_sec,
            end_to_end_per_sec,
            latency: (rate, ms(0.5), ms(0.99), h.max() as f64 / 1000.0),
        })
    }
    .await;
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", schema.name())))
        .execute(&pool)
        .await;
    result
}
