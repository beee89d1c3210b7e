//! Overload through outbox → relay → inbox on a private PostgreSQL: ten
//! times the rate PostgreSQL sustains, for 60 s. Connections stay within the
//! configured pools, nothing storms the server with connects, the pipeline
//! keeps moving, and the backlog drains once the load stops (issue 12).
//!
//! What PostgreSQL sustains is set by the handler's own statement: every
//! event runs `pg_sleep(50 ms)` in its inbox transaction, and the two inbox
//! consumers have 3 connections each, so the pipeline can handle at most
//! 6 / 0.05 s = 120 events a second. The writers offer 1,200 a second. Each
//! consumer runs 512 handlers: far more waiters than connections, each of
//! which would wait ~8.5 s for a connection, past sqlx's old 5 s acquire
//! timeout (the connection storm of `eventbus-bench --only outbox`).
//!
//! Nothing here asserts a speed: only bounds on connections and connect
//! attempts, progress in every window, and that everything is handled once.
//! When the load stops, the handler's statement becomes fast (the business
//! work that limited PostgreSQL is over), so that draining 60 s of backlog
//! takes seconds instead of nine minutes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventbus::pg::{
    connect_pool, migrate, DbSchema, Inbox, InboxHandler, Outbox, OutboxConfig, PoolGate, Relay,
    RelayConfig,
};
use eventbus::{Consumer, ConsumerConfig, ConsumerMode, Delivery, Envelope, HandlerError};
use eventbus::{RedisConnector, RedisOptions};
use eventbus_testkit::conformance::{full_event, publisher};
use eventbus_testkit::{shared_redis_url, PgServer, TestNamespace};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

const OFFERED_PER_SEC: u64 = 1_200;
const LOAD: Duration = Duration::from_secs(60);
/// Events per writer transaction (one transaction every 10 ms).
const PER_TX: u64 = OFFERED_PER_SEC / 100;
const WRITER_POOL: u32 = 4;
const RELAY_POOL: u32 = 6;
const INBOX_POOL: u32 = 3;
const CONSUMERS: usize = 2;
const HANDLERS: usize = 512;

/// The business work: a statement that takes 50 ms while `slow`.
struct SlowStatement {
    slow: Arc<AtomicBool>,
}

impl InboxHandler for SlowStatement {
    async fn handle<'a>(
        &'a self,
        _d: &'a Delivery,
        tx: &'a mut PgConnection,
    ) -> Result<(), HandlerError> {
        let secs = if self.slow.load(Ordering::Relaxed) {
            0.05
        } else {
            0.0
        };
        sqlx::query("SELECT pg_sleep($1)")
            .bind(secs)
            .execute(tx)
            .await
            .map_err(|e| HandlerError::retryable(e.to_string()))?;
        Ok(())
    }
}

/// Client connections by application name, and connections established
/// since the server started (every connect attempt that reached a backend).
async fn sample(admin: &PgPool) -> (HashMap<String, i64>, i64) {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT application_name, count(*) FROM pg_stat_activity \
         WHERE backend_type = 'client backend' GROUP BY 1",
    )
    .fetch_all(admin)
    .await
    .unwrap();
    let (sessions,): (i64,) =
        sqlx::query_as("SELECT coalesce(sum(sessions), 0)::bigint FROM pg_stat_database")
            .fetch_one(admin)
            .await
            .unwrap();
    (rows.into_iter().collect(), sessions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_what_postgres_sustains_for_a_minute_stays_within_the_pools_and_drains() {
    let pg = PgServer::start();
    let redis = shared_redis_url();
    let ns = TestNamespace::new(&redis, "overload");
    let topology = ns.topology(4);
    let schema = DbSchema::new("overload").unwrap();
    let admin = connect_pool(&pg.url(), 1, "overload-admin").await.unwrap();
    migrate(&mut admin.acquire().await.unwrap(), &schema)
        .await
        .unwrap();
    let limits: HashMap<String, i64> = [
        ("overload-admin".to_owned(), 1),
        ("overload-writers".to_owned(), i64::from(WRITER_POOL)),
        ("overload-relay".to_owned(), i64::from(RELAY_POOL)),
    ]
    .into_iter()
    .chain((0..CONSUMERS).map(|i| (format!("overload-inbox-{i}"), i64::from(INBOX_POOL))))
    .collect();
    let configured: i64 = limits.values().sum();

    let token = CancellationToken::new();
    let relay_pool = connect_pool(&pg.url(), RELAY_POOL, "overload-relay")
        .await
        .unwrap();
    let relay = Relay::new(
        relay_pool,
        publisher(&redis, &topology).await,
        schema.clone(),
        RelayConfig::default(),
    )
    .unwrap();
    let mut tasks = vec![tokio::spawn(relay.run(token.clone()))];
    let slow = Arc::new(AtomicBool::new(true));
    let mut stats = Vec::new();
    let connector = RedisConnector::new(&redis, RedisOptions::default()).unwrap();
    for i in 0..CONSUMERS {
        let pool = connect_pool(&pg.url(), INBOX_POOL, &format!("overload-inbox-{i}"))
            .await
            .unwrap();
        let inbox = Inbox::new(pool, &schema, SlowStatement { slow: slow.clone() });
        stats.push(inbox.stats());
        let mut config = ConsumerConfig::new("overload", ["work_item"]);
        config.mode = ConsumerMode::Unordered;
        config.concurrency = HANDLERS;
        config.block = Duration::from_millis(200);
        config.shutdown_timeout = Duration::from_secs(10);
        let consumer = Consumer::new(connector.clone(), topology.clone(), config, inbox).unwrap();
        tasks.push(tokio::spawn(consumer.run(token.clone())));
    }
    let handled = || -> u64 {
        stats
            .iter()
            .map(|s| s.committed.load(Ordering::Relaxed))
            .sum()
    };

    // Sample connections every 250 ms until told to stop.
    let (_, sessions_before) = sample(&admin).await;
    let sampling = CancellationToken::new();
    let sampler = {
        let (admin, sampling) = (admin.clone(), sampling.clone());
        tokio::spawn(async move {
            let mut most: HashMap<String, i64> = HashMap::new();
            let mut most_total = 0;
            while !sampling.is_cancelled() {
                let (now, _) = sample(&admin).await;
                most_total = most_total.max(now.values().sum::<i64>());
                for (name, n) in now {
                    let m = most.entry(name).or_default();
                    *m = (*m).max(n);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            (most, most_total)
        })
    };

    // The application: one transaction of PER_TX events every 10 ms, each
    // waiting its turn for the writers' pool in a gate.
    let writers = PoolGate::new(
        connect_pool(&pg.url(), WRITER_POOL, "overload-writers")
            .await
            .unwrap(),
    );
    let outbox = Outbox::new(
        topology.clone(),
        OutboxConfig {
            schema: schema.clone(),
            ..Default::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    let mut offered = 0u64;
    let mut commits = tokio::task::JoinSet::new();
    let mut progress = Vec::new();
    let mut last_window = (Instant::now(), 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while started.elapsed() < LOAD {
        tick.tick().await;
        let batch: Vec<Envelope> = (offered..offered + PER_TX)
            .map(|i| full_event(i as usize))
            .collect();
        offered += PER_TX;
        let (writers, outbox) = (writers.clone(), outbox.clone());
        commits.spawn(async move {
            let mut conn = writers.acquire().await?;
            let mut tx = sqlx::Connection::begin(&mut **conn).await?;
            outbox.enqueue_batch(&mut *tx, &batch).await?;
            tx.commit().await?;
            Ok::<(), eventbus::Error>(())
        });
        while let Some(done) = commits.try_join_next() {
            done.unwrap().unwrap();
        }
        if last_window.0.elapsed() >= Duration::from_secs(5) {
            let now = handled();
            progress.push(now - last_window.1);
            last_window = (Instant::now(), now);
        }
    }
    while let Some(done) = commits.join_next().await {
        done.unwrap().unwrap();
    }
    let handled_under_load = handled();
    let load_secs = started.elapsed().as_secs_f64();
    let (_, sessions_under_load) = sample(&admin).await;

    // The load stops and the slow work with it: everything drains.
    slow.store(false, Ordering::Relaxed);
    let drain_started = Instant::now();
    while handled() < offered && drain_started.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drained = handled();
    let drain_secs = drain_started.elapsed().as_secs_f64();
    sampling.cancel();
    let (most, most_total) = sampler.await.unwrap();
    let (_, sessions_after) = sample(&admin).await;
    token.cancel();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let (inbox_rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM overload.eventbus_inbox")
        .fetch_one(&admin)
        .await
        .unwrap();
    let connects = sessions_after - sessions_before;
    eprintln!(
        "overload: offered {offered} events in {load_secs:.0} s ({:.0}/s), handled {handled_under_load} \
         under load ({:.0}/s), per 5 s window {progress:?}; drained the rest in {drain_secs:.0} s; \
         connections at most {most:?} (total {most_total}, configured {configured}); \
         connects during the run {connects} ({} under load)",
        offered as f64 / load_secs,
        handled_under_load as f64 / load_secs,
        sessions_under_load - sessions_before,
    );

    for (name, n) in &most {
        let limit = limits
            .get(name)
            .unwrap_or_else(|| panic!("a connection no pool accounts for: {name:?} ({n})"));
        assert!(n <= limit, "{name}: {n} connections, pool of {limit}");
    }
    assert!(most_total <= configured, "{most_total} > {configured}");
    // Every connect opens a pool slot that is then kept: no more connects
    // than slots, plus a few for the sampler's own reconnects.
    assert!(
        connects <= configured + 5,
        "{connects} connections established for {configured} pool slots: a connection storm"
    );
    assert!(
        progress.iter().all(|&n| n > 0),
        "a 5 s window under load without a single event handled: {progress:?}"
    );
    assert!(
        handled_under_load < offered,
        "the load was not above what PostgreSQL sustains"
    );
    assert_eq!(drained, offered, "the backlog did not drain");
    assert_eq!(
        inbox_rows as u64, offered,
        "each event handled exactly once"
    );
    ns.cleanup();
}
