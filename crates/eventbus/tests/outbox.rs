//! The outbox, relay and inbox against real PostgreSQL and Redis.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use eventbus::pg::{
    connect_pool, inbox_contains, migrate, outbox_status, record_inbox, replay_published, DbSchema,
    Inbox, Outbox, OutboxConfig, Relay, RelayConfig,
};
use eventbus::{ConsumerConfig, Envelope, Topology};
use eventbus_testkit::conformance::{full_event, publisher, spawn_consumer};
use eventbus_testkit::{
    shared_redis_url, Collector, RedisServer, ResultWriter, TestNamespace, TestSchema,
};
use serde_json::json;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

fn fast(group: &str, topics: &[&str]) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(group, topics.iter().copied());
    c.block = Duration::from_millis(100);
    c.claim_idle = Duration::from_millis(500);
    c.claim_interval = Duration::from_millis(100);
    c.shutdown_timeout = Duration::from_secs(5);
    c
}

fn outbox(db: &TestSchema, topology: &Topology) -> Outbox {
    Outbox::new(
        topology.clone(),
        OutboxConfig {
            schema: db.schema().clone(),
            ..Default::default()
        },
    )
    .unwrap()
}

struct RunningRelay {
    token: CancellationToken,
    task: tokio::task::JoinHandle<eventbus::Result<()>>,
}

impl RunningRelay {
    async fn stop(self) {
        self.token.cancel();
        self.task.await.unwrap().unwrap();
    }
}

async fn start_relay(
    redis_url: &str,
    db: &TestSchema,
    topology: &Topology,
    pool: Option<sqlx::PgPool>,
) -> RunningRelay {
    let p = publisher(redis_url, topology).await;
    let pool = pool.unwrap_or_else(|| db.pool().clone());
    let relay = Relay::new(pool, p, db.schema().clone(), RelayConfig::default()).unwrap();
    let token = CancellationToken::new();
    let task = tokio::spawn(relay.run(token.clone()));
    RunningRelay { token, task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_publishes_nothing_committed_publishes_exactly_its_events() {
    let redis = shared_redis_url();
    let ns = TestNamespace::new(&redis, "ob-tx");
    let db = TestSchema::new("obtx").await;
    let topology = ns.topology(4);
    let ob = outbox(&db, &topology);
    let collector = Collector::new();
    let consumer = spawn_consumer(
        &redis,
        &topology,
        fast("g", &["work_item"]),
        collector.clone(),
    );
    let relay = start_relay(&redis, &db, &topology, None).await;

    let rolled: Vec<Envelope> = (0..50).map(full_event).collect();
    let mut tx = db.pool().begin().await.unwrap();
    ob.enqueue_batch(&mut *tx, &rolled).await.unwrap();
    tx.rollback().await.unwrap();

    let committed: Vec<Envelope> = (50..120).map(full_event).collect();
    let mut tx = db.pool().begin().await.unwrap();
    ob.enqueue_batch(&mut *tx, &committed[..30]).await.unwrap();
    for e in &committed[30..] {
        ob.enqueue(&mut *tx, e).await.unwrap();
    }
    tx.commit().await.unwrap();

    assert!(
        collector.wait_for(WAIT, |d| d.len() >= 70).await,
        "committed events not all published"
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // room for anything extra to show up
    let got = collector.deliveries();
    let ids: HashSet<_> = got.iter().map(|d| d.envelope.id).collect();
    assert_eq!(ids, committed.iter().map(|e| e.id).collect());
    // every field survives the outbox
    let by_id: HashMap<_, _> = got
        .iter()
        .map(|d| (d.envelope.id, d.envelope.clone()))
        .collect();
    for e in &committed {
        assert_eq!(by_id[&e.id], *e);
    }
    assert!(
        outbox_status(db.pool(), db.schema())
            .await
            .unwrap()
            .is_empty(),
        "outbox not drained"
    );
    relay.stop().await;
    consumer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_id_committed_after_a_higher_one_is_still_published() {
    let redis = shared_redis_url();
    let ns = TestNamespace::new(&redis, "ob-order");
    let db = TestSchema::new("oborder").await;
    let topology = ns.topology(1);
    let ob = outbox(&db, &topology);
    let collector = Collector::new();
    let consumer = spawn_consumer(
        &redis,
        &topology,
        fast("g", &["work_item"]),
        collector.clone(),
    );
    let relay = start_relay(&redis, &db, &topology, None).await;

    let (low, high) = (full_event(1), full_event(2));
    let mut slow = db.pool().begin().await.unwrap();
    ob.enqueue(&mut *slow, &low).await.unwrap(); // takes the lower id, commits later
    let mut fast_tx = db.pool().begin().await.unwrap();
    ob.enqueue(&mut *fast_tx, &high).await.unwrap();
    fast_tx.commit().await.unwrap();
    assert!(
        collector
            .wait_for(WAIT, |d| d.iter().any(|d| d.envelope.id == high.id))
            .await
    );
    slow.commit().await.unwrap();
    assert!(
        collector
            .wait_for(WAIT, |d| d.iter().any(|d| d.envelope.id == low.id))
            .await,
        "the row committed late with a lower id was skipped"
    );
    relay.stop().await;
    consumer.stop().await.unwrap();
}

fn documented_insert() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/outbox.md"))
        .unwrap();
    let start = doc
        .find("```sql\nINSERT INTO eventbus_outbox")
        .expect("the SQL example in docs/outbox.md")
        + 7;
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_plain_sql_insert_is_published() {
    let redis = shared_redis_url();
    let ns = TestNamespace::new(&redis, "ob-sql");
    let db = TestSchema::new("obsql").await;
    let topology = ns.topology(16); // the documented statement uses 16 partitions
    let collector = Collector::new();
    let consumer = spawn_consumer(
        &redis,
        &topology,
        fast("g", &["work_order"]),
        collector.clone(),
    );
    let relay = start_relay(&redis, &db, &topology, None).await;

    let mut tx = db.pool().begin().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL search_path TO {}",
        db.name()
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(documented_insert()))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert!(
        collector.wait_for(WAIT, |d| !d.is_empty()).await,
        "the SQL-enqueued event never arrived"
    );
    let d = &collector.deliveries()[0];
    assert_eq!(d.envelope.event_type, "work_order.created");
    assert_eq!(d.envelope.key, "wo-1001");
    assert_eq!(d.partition, topology.partition_of("wo-1001"));
    assert_eq!(d.envelope.headers["tenant"], "acme");
    assert_eq!(d.envelope.data["title"], "Check pump 7");
    let catalog = eventbus::catalog::Catalog::embedded().unwrap();
    assert_eq!(
        catalog.validate(&d.envelope).map_err(|e| e.to_string()),
        Ok(()),
        "the documented example must pass the catalogue"
    );
    relay.stop().await;
    consumer.stop().await.unwrap();
}

#[tokio::test]
async fn the_sql_partitioner_matches_the_vectors() {
    let db = TestSchema::new("obpart").await;
    let vectors: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/partitioner-vectors.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let sql = format!("SELECT {}.eventbus_partition($1, $2)", db.name());
    for case in vectors["cases"].as_array().unwrap() {
        let got: i32 = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(case["key"].as_str().unwrap())
            .bind(case["partitions"].as_i64().unwrap() as i32)
            .fetch_one(db.pool())
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            i64::from(got),
            case["partition"].as_i64().unwrap(),
            "{case}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_makes_effects_happen_once() {
    let redis = shared_redis_url();
    let ns = TestNamespace::new(&redis, "inbox");
    let db = TestSchema::new("inbox").await;
    let topology = ns.topology(2);
    let writer = ResultWriter::create(&db, "results").await.failing_once();
    let results = writer.table().to_owned();
    let inbox = Inbox::new(db.pool().clone(), db.schema(), writer);
    let stats = inbox.stats();
    let consumer = spawn_consumer(&redis, &topology, fast("g", &["work_item"]), inbox);
    let p = publisher(&redis, &topology).await;
    let events: Vec<Envelope> = (0..40).map(full_event).collect();
    p.publish_batch(&events).await.unwrap();
    p.publish_batch(&events[..10]).await.unwrap(); // duplicates on the stream (as after a relay crash)

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let committed = stats.committed.load(std::sync::atomic::Ordering::Relaxed);
        let dups = stats.duplicates.load(std::sync::atomic::Ordering::Relaxed);
        if committed == 40 && dups >= 10 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "committed {committed}, duplicates {dups}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows: Vec<(uuid::Uuid, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT event_id, count(*) FROM {results} GROUP BY event_id"
    )))
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 40);
    assert!(
        rows.iter().all(|(_, n)| *n == 1),
        "an effect happened twice: {rows:?}"
    );
    consumer.stop().await.unwrap();

    // the helpers used by `consume --inbox --exec`
    let id = uuid::Uuid::now_v7();
    assert!(!inbox_contains(db.pool(), db.schema(), "x", id)
        .await
        .unwrap());
    assert!(record_inbox(db.pool(), db.schema(), "x", id, "a.b")
        .await
        .unwrap());
    assert!(!record_inbox(db.pool(), db.schema(), "x", id, "a.b")
        .await
        .unwrap());
    assert!(inbox_contains(db.pool(), db.schema(), "x", id)
        .await
        .unwrap());
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_half_written() {
    let db = TestSchema::new("obbad").await;
    let topology = Topology::new("unused", 4).unwrap();
    let small = Outbox::new(
        topology.clone(),
        OutboxConfig {
            schema: db.schema().clone(),
            max_event_bytes: 10_000,
        },
    )
    .unwrap();
    let good = full_event(1);
    let oversized = Envelope::new("work_item.x", "k", json!({"blob": "x".repeat(20_000)}));
    let bad_type = Envelope::new("notopic", "k", json!({}));
    let empty_key = Envelope::new("a.b", "", json!({}));
    for bad in [&oversized, &bad_type, &empty_key] {
        let err = small
            .enqueue_batch(db.pool(), &[good.clone(), bad.clone()])
            .await
            .unwrap_err();
        assert!(matches!(err, eventbus::Error::InvalidEvent(_)), "{err}");
        assert!(small.enqueue(db.pool(), bad).await.is_err());
    }
    let err = small
        .enqueue(db.pool(), &oversized)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("over the limit"), "{err}");
    let n: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        db.table("eventbus_outbox")
    )))
    .fetch_one(db.pool())
    .await
    .unwrap()
    .get(0);
    assert_eq!(n, 0, "a refused batch left rows behind");

    // missing tables: a schema that was never migrated
    let missing = TestSchema::unmigrated_name("obmissing");
    let ob = Outbox::new(
        topology.clone(),
        OutboxConfig {
            schema: missing.clone(),
            ..Default::default()
        },
    )
    .unwrap();
    let err = ob.enqueue(db.pool(), &good).await.unwrap_err();
    assert!(matches!(err, eventbus::Error::NotMigrated { .. }), "{err}");
    assert!(err.to_string().contains("eventbus migrate"), "{err}");
    let relay = Relay::new(
        db.pool().clone(),
        publisher(&shared_redis_url(), &topology).await,
        missing,
        RelayConfig::default(),
    )
    .unwrap();
    assert!(matches!(
        relay.check_ready().await,
        Err(eventbus::Error::NotMigrated { .. })
    ));

    // bad schema names never reach SQL
    for name in ["", "Public", "a;drop", "1abc", "x\"y", &"a".repeat(64)] {
        assert!(DbSchema::new(name).is_err(), "{name:?}");
    }
    // an unreachable database is reported with the password redacted
    let err = connect_pool("postgres://u:sentinel-pw@127.0.0.1:1/db", 1, "t")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("***") && !err.contains("sentinel-pw"), "{err}");
}

#[tokio::test]
async fn migrate_is_idempotent_and_safe_concurrently() {
    let name = TestSchema::unmigrated_name("obmig");
    let url = eventbus_testkit::shared_database_url();
    let mut runs = Vec::new();
    for _ in 0..4 {
        let (url, name) = (url.clone(), name.clone());
        runs.push(tokio::spawn(async move {
            let pool = connect_pool(&url, 1, "migrate-test").await.unwrap();
            let mut conn = pool.acquire().await.unwrap();
            migrate(&mut conn, &name).await.unwrap()
        }));
    }
    let mut applied = Vec::new();
    for r in runs {
        applied.extend(r.await.unwrap());
    }
    applied.sort_unstable();
    let all: Vec<i32> = eventbus::pg::migrations()
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(applied, all, "exactly one process applies each migration");
    let pool = connect_pool(&url, 1, "migrate-test").await.unwrap();
    assert!(migrate(&mut pool.acquire().await.unwrap(), &name)
        .await
        .unwrap()
        .is_empty());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{}\" CASCADE",
        name.name()
    )))
    .execute(&pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_rows_and_replay_publishes_them_again() {
    let redis = shared_redis_url();
    let ns = TestNamespace::new(&redis, "ob-replay");
    let db = TestSchema::new("obreplay").await;
    let topology = ns.topology(2);
    let ob = outbox(&db, &topology);
    let collector = Collector::new();
    let consumer = spawn_consumer(
        &redis,
        &topology,
        fast("g", &["work_item"]),
        collector.clone(),
    );
    let p = publisher(&redis, &topology).await;
    let config = RelayConfig {
        retention: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    let relay = Relay::new(db.pool().clone(), p, db.schema().clone(), config).unwrap();
    let token = CancellationToken::new();
    let task = tokio::spawn(relay.run(token.clone()));
    let since = chrono::Utc::now() - chrono::Duration::seconds(5);
    let events: Vec<Envelope> = (0..30).map(full_event).collect();
    ob.enqueue_batch(db.pool(), &events).await.unwrap();
    assert!(collector.wait_for(WAIT, |d| d.len() >= 30).await);
    assert_eq!(
        replay_published(db.pool(), db.schema(), since)
            .await
            .unwrap(),
        30
    );
    assert!(
        collector.wait_for(WAIT, |d| d.len() >= 60).await,
        "replayed rows were not published again"
    );
    let counts = collector
        .deliveries()
        .iter()
        .fold(HashMap::new(), |mut m, d| {
            *m.entry(d.envelope.id).or_insert(0) += 1;
            m
        });
    assert!(counts.values().all(|n| *n == 2));
    token.cancel();
    task.await.unwrap().unwrap();
    consumer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_consumers_recover_from_killed_connections_and_a_redis_restart() {
    let mut server = RedisServer::start();
    let redis = server.url();
    let db = TestSchema::new("obrecover").await;
    let topology = Topology::new("recover", 4).unwrap();
    let ob = outbox(&db, &topology);
    let app_name = format!("relay-{}", db.name());
    let relay_pool = connect_pool(db.url(), 6, &app_name).await.unwrap();
    let collector = Collector::new();
    let consumer = spawn_consumer(
        &redis,
        &topology,
        fast("g", &["work_item"]),
        collector.clone(),
    );
    let relay = start_relay(&redis, &db, &topology, Some(relay_pool)).await;

    let mut sent = Vec::new();
    let mut i = 0;
    let mut enqueue_some = |n: usize| {
        let batch: Vec<Envelope> = (i..i + n).map(full_event).collect();
        i += n;
        sent.extend(batch.iter().map(|e| e.id));
        batch
    };
    for round in 0..6 {
        let batch = enqueue_some(50);
        ob.enqueue_batch(db.pool(), &batch).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        if round == 1 {
            // cut every connection of the relay (its pool and its LISTEN connection)
            let killed: Vec<(bool,)> = sqlx::query_as(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(&app_name)
            .fetch_all(db.pool())
            .await
            .unwrap();
            assert!(!killed.is_empty(), "no relay connection to kill");
        }
        if round == 3 {
            server.kill();
            let batch = enqueue_some(50); // committed while Redis is down
            ob.enqueue_batch(db.pool(), &batch).await.unwrap();
            server = tokio::task::spawn_blocking(move || {
                server.restart();
                server
            })
            .await
            .unwrap();
        }
    }
    let want: HashSet<_> = sent.iter().copied().collect();
    assert!(
        collector
            .wait_for(WAIT, |d| {
                let got: HashSet<_> = d.iter().map(|d| d.envelope.id).collect();
                want.is_subset(&got)
            })
            .await,
        "events lost: {} of {} arrived",
        collector.ids().intersection(&want).count(),
        want.len()
    );
    relay.stop().await;
    consumer.stop().await.unwrap();
    drop(server);
}

#[tokio::test]
async fn an_outbox_with_a_catalogue_refuses_invalid_events_and_writes_nothing() {
    let db = TestSchema::new("obschema").await;
    let topology = Topology::new("unused", 4).unwrap();
    let catalog = std::sync::Arc::new(eventbus::Catalog::embedded().unwrap());
    let ob = outbox(&db, &topology).with_catalog(catalog.clone());
    // a valid example of the catalogue goes in
    let example = catalog
        .schema("work_order.created", 1)
        .and_then(|s| s.examples().first().cloned())
        .expect("an example");
    let key = example[catalog.get("work_order.created").unwrap().partition_key()]
        .as_str()
        .unwrap()
        .to_owned();
    let good = Envelope::new("work_order.created", key, example.clone());
    ob.enqueue(db.pool(), &good).await.unwrap();
    // one invalid event refuses the whole batch, with every error listed
    let bad = Envelope::new("work_order.created", "wo-x", json!({"id": "wo-x"}));
    let unknown = Envelope::new("work_order.exploded", "wo-y", json!({}));
    for refused in [bad, unknown] {
        let err = ob
            .enqueue_batch(db.pool(), &[good.clone(), refused])
            .await
            .unwrap_err();
        assert!(matches!(err, eventbus::Error::Schema(_)), "{err}");
        assert!(!err.to_string().is_empty());
    }
    let n: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        db.table("eventbus_outbox")
    )))
    .fetch_one(db.pool())
    .await
    .unwrap()
    .get(0);
    assert_eq!(n, 1, "a refused batch wrote something");
}
