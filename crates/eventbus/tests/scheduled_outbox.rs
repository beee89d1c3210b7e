//! The outbox's `deliver_at` against real PostgreSQL and Redis: the
//! library's enqueue and plain-SQL rows with every kind of value a plain
//! INSERT can write; none blocks the relay.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use eventbus::pg::{Outbox, OutboxConfig, Relay, RelayConfig};
use eventbus::schedule::{self, Scheduler, SchedulerConfig};
use eventbus::{Envelope, RedisConnector, RedisOptions};
use eventbus_testkit::conformance::publisher;
use eventbus_testkit::{shared_redis_url, TestNamespace, TestSchema};
use tokio_util::sync::CancellationToken;

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_rows_are_delivered_at_their_time_and_no_deliver_at_blocks_the_relay() {
    let ns = TestNamespace::new(shared_redis_url(), "sched-ob");
    let db = TestSchema::new("schedob").await;
    let topology = ns.topology(2);
    let outbox = Outbox::new(
        topology.clone(),
        OutboxConfig {
            schema: db.schema().clone(),
            ..Default::default()
        },
    )
    .unwrap();

    let due = Utc::now() + chrono::Duration::milliseconds(1500);
    let later = Envelope::new("sched.outbox", "k-later", serde_json::json!({"n": 1}));
    let now = Envelope::new("sched.outbox", "k-now", serde_json::json!({"n": 2}));
    let batch: Vec<Envelope> = (0..3)
        .map(|i| Envelope::new("sched.outbox", format!("b{i}"), serde_json::json!({"i": i})))
        .collect();
    outbox.enqueue_at(db.pool(), &later, due).await.unwrap();
    outbox.enqueue(db.pool(), &now).await.unwrap();
    outbox
        .enqueue_batch_at(db.pool(), &batch, &[None, Some(due), Some(Utc::now())])
        .await
        .unwrap();
    let e = outbox
        .enqueue_batch_at(db.pool(), &batch, &[None])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("1 due times for 3 events"), "{e}");

    // Plain-SQL rows: the key says what deliver_at holds (partitions among
    // this test's 2: the schema's migration recorded no partition count).
    let table = db.table("eventbus_outbox");
    for (key, value) in [
        ("sql-null", "NULL"),
        ("sql-past", "now() - interval '1 day'"),
        ("sql-minus-infinity", "'-infinity'"),
        ("sql-bc", "'0100-01-01 BC'"),
        ("sql-soon", "now() + interval '1 second'"),
        ("sql-infinity", "'infinity'"),
        ("sql-far", "'294276-12-31 23:59:59+00'"),
        ("sql-ten-years", "now() + interval '10 years'"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} (event_id, event_type, key, partition, data, deliver_at) \
             VALUES (gen_random_uuid(), 'sched.outbox', '{key}', {}.eventbus_partition('{key}', 2), '{{}}', {value})",
            db.name()
        )))
        .execute(db.pool())
        .await
        .unwrap();
    }

    let p = publisher(ns.url(), &topology).await;
    let relay = Relay::new(
        db.pool().clone(),
        p,
        db.schema().clone(),
        RelayConfig::default(),
    )
    .unwrap();
    let stop = CancellationToken::new();
    let relaying = tokio::spawn(relay.run(stop.clone()));
    let redis = RedisConnector::new(ns.url(), RedisOptions::default()).unwrap();
    let conn = redis.shared().await.unwrap();

    // The outbox drains at once: nothing waits in PostgreSQL.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (left,): (i64,) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(db.pool())
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} rows stuck in the outbox"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Before the due time, only the delayed ones are scheduled.
    let waiting: Vec<String> = schedule::list(&conn, &topology, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.envelope.unwrap().key)
        .collect();
    let mut sorted = waiting.clone();
    sorted.sort();
    assert_eq!(sorted, ["b1", "k-later", "sql-soon"], "{waiting:?}");

    let scheduler = Scheduler::connect(&redis, topology.clone(), SchedulerConfig::default())
        .await
        .unwrap();
    let scheduling = tokio::spawn(scheduler.run(stop.clone()));
    let arrived = async || {
        let mut keys = HashMap::new();
        for stream in topology.topic_streams("sched") {
            let raw: Vec<(String, Fields)> = redis::cmd("XRANGE")
                .arg(&stream)
                .arg("-")
                .arg("+")
                .query_async(&mut conn.clone())
                .await
                .unwrap();
            for (entry_id, fields) in raw {
                let e =
                    Envelope::from_fields(fields.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
                        .unwrap();
                let ms: i64 = entry_id.split('-').next().unwrap().parse().unwrap();
                keys.insert(e.key, ms);
            }
        }
        keys
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let keys = loop {
        let keys = arrived().await;
        if keys.len() == 10 {
            break keys;
        }
        assert!(tokio::time::Instant::now() < deadline, "arrived: {keys:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for key in ["b1", "k-later"] {
        assert!(keys[key] >= due.timestamp_millis(), "{key} arrived early");
    }
    for key in [
        "k-now",
        "b0",
        "b2",
        "sql-null",
        "sql-past",
        "sql-minus-infinity",
        "sql-bc",
    ] {
        assert!(keys.contains_key(key), "{key} missing: {keys:?}");
    }
    // What no delay allows is in dead letters, with its reason.
    let dead: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT key, error_message FROM {} ORDER BY key",
        db.table("eventbus_dead_letters")
    )))
    .fetch_all(db.pool())
    .await
    .unwrap();
    let reasons: HashMap<_, _> = dead.into_iter().collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons["sql-infinity"].contains("infinity"), "{reasons:?}");
    assert!(
        reasons["sql-far"].contains("after the year 9999"),
        "{reasons:?}"
    );
    assert!(
        reasons["sql-ten-years"].contains("EVENT_BUS_MAX_DELAY"),
        "{reasons:?}"
    );
    stop.cancel();
    relaying.await.unwrap().unwrap();
    scheduling.await.unwrap().unwrap();
}
