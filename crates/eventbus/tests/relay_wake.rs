//! Waking the relay (pg/doze.rs, migration 0006): writers notify only
//! while a relay dozes, and no wake-up is lost, against real PostgreSQL
//! and Redis. The relays here poll once every ten minutes, so an event that
//! arrives within the tests' waits was woken, not polled.

use std::time::Duration;

use eventbus::pg::{Outbox, Relay, RelayConfig};
use eventbus::{ConsumerConfig, Envelope, Topology};
use eventbus_testkit::conformance::{full_event, publisher, spawn_consumer};
use eventbus_testkit::{shared_redis_url, Collector, TestNamespace, TestSchema};
use sqlx::postgres::PgListener;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);
/// Far beyond every wait here: a relay that polled would miss them.
const NEVER: Duration = Duration::from_secs(600);

fn channel(db: &TestSchema) -> String {
    format!("eventbus_outbox.{}", db.name())
}

async fn commit_one(db: &TestSchema, ob: &Outbox, e: &Envelope) {
    let mut tx = db.pool().begin().await.unwrap();
    ob.enqueue(&mut *tx, e).await.unwrap();
    tx.commit().await.unwrap();
}

async fn notify(db: &TestSchema, payload: &str) {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel(db))
        .bind(payload)
        .execute(db.pool())
        .await
        .unwrap();
}

/// Whether some session holds the relay's doze lock (exclusive, granted).
async fn dozing(db: &TestSchema) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
           AND classid::bigint = (hashtext($1)::bigint & 4294967295) \
           AND objid::bigint = 4294967295 AND objsubid = 2 \
           AND mode = 'ExclusiveLock' AND granted)",
    )
    .bind(channel(db))
    .fetch_one(db.pool())
    .await
    .unwrap()
}

async fn wait_dozing(db: &TestSchema) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !dozing(db).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle relay never dozed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn never_polling() -> RelayConfig {
    RelayConfig {
        poll_max: NEVER,
        ..RelayConfig::default()
    }
}

async fn start_relay(
    redis: &str,
    db: &TestSchema,
    topology: &Topology,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<eventbus::Result<()>>,
) {
    let p = publisher(redis, topology).await;
    let relay = Relay::new(db.pool().clone(), p, db.schema().clone(), never_polling()).unwrap();
    let token = CancellationToken::new();
    (token.clone(), tokio::spawn(relay.run(token)))
}

fn fast(group: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(group, ["work_item"]);
    c.block = Duration::from_millis(100);
    c.shutdown_timeout = Duration::from_secs(5);
    c
}

/// A schema, an outbox and a consumer collecting what the relay publishes.
struct Bus {
    redis: String,
    _ns: TestNamespace,
    db: TestSchema,
    topology: Topology,
    ob: Outbox,
    collector: Collector,
    consumer: eventbus_testkit::conformance::Running,
}

impl Bus {
    async fn new(tag: &str) -> Bus {
        let redis = shared_redis_url();
        let ns = TestNamespace::new(&redis, tag);
        let db = TestSchema::new(&tag.replace('-', "")).await;
        let topology = ns.topology(4);
        let ob = db.outbox_for(&topology);
        let collector = Collector::new();
        let consumer = spawn_consumer(&redis, &topology, fast("g"), collector.clone());
        Bus {
            redis,
            _ns: ns,
            db,
            topology,
            ob,
            collector,
            consumer,
        }
    }

    async fn relayed(&self, e: &Envelope) -> bool {
        self.collector
            .wait_for(WAIT, |d| d.iter().any(|d| d.envelope.id == e.id))
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_notify_only_while_a_relay_holds_the_doze_lock() {
    let ns = TestNamespace::new(shared_redis_url(), "wake-trig");
    let db = TestSchema::new("waketrig").await;
    let topology = ns.topology(4);
    let ob = db.outbox_for(&topology);
    let mut listener = PgListener::connect_with(db.pool()).await.unwrap();
    listener.listen(&channel(&db)).await.unwrap();

    // No relay dozes: the commit does not notify.
    commit_one(&db, &ob, &full_event(0)).await;
    notify(&db, "after-awake").await;
    // A relay dozes (this session stands in for it): the commit notifies.
    let mut relay_side = sqlx::PgConnection::connect(db.url()).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtext($1), -1)")
        .bind(channel(&db))
        .execute(&mut relay_side)
        .await
        .unwrap();
    commit_one(&db, &ob, &full_event(1)).await;
    notify(&db, "after-dozing").await;
    // A plain-SQL insert of several statements in one transaction: one
    // notification (PostgreSQL folds equal ones of a transaction).
    let mut tx = db.pool().begin().await.unwrap();
    ob.enqueue(&mut *tx, &full_event(2)).await.unwrap();
    ob.enqueue(&mut *tx, &full_event(3)).await.unwrap();
    tx.commit().await.unwrap();
    notify(&db, "end").await;

    // Notifications arrive in commit order.
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("end") {
        let n = tokio::time::timeout(WAIT, listener.recv())
            .await
            .expect("notifications arrive")
            .unwrap();
        seen.push(n.payload().to_owned());
    }
    assert_eq!(seen, ["after-awake", "", "after-dozing", "", "end"]);

    // A writer that skipped its notification holds the lock in shared mode
    // until it commits, so a relay asking to doze waits for it.
    sqlx::query("SELECT pg_advisory_unlock(hashtext($1), -1)")
        .bind(channel(&db))
        .execute(&mut relay_side)
        .await
        .unwrap();
    let mut open = db.pool().begin().await.unwrap();
    ob.enqueue(&mut *open, &full_event(4)).await.unwrap();
    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1), -1)")
        .bind(channel(&db))
        .fetch_one(&mut relay_side)
        .await
        .unwrap();
    assert!(!taken, "the doze lock was granted past an open writer");
    open.commit().await.unwrap();
    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1), -1)")
        .bind(channel(&db))
        .fetch_one(&mut relay_side)
        .await
        .unwrap();
    assert!(taken, "the doze lock is free once the writer committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dozing_relay_is_woken_by_each_commit_and_dozes_again() {
    let bus = Bus::new("wake-doze").await;
    let (token, relay) = start_relay(&bus.redis, &bus.db, &bus.topology).await;
    for i in 0..5 {
        wait_dozing(&bus.db).await;
        let e = full_event(i);
        commit_one(&bus.db, &bus.ob, &e).await;
        assert!(
            bus.relayed(&e).await,
            "event {i}, committed while the relay dozed, was not relayed"
        );
    }
    token.cancel();
    relay.await.unwrap().unwrap();
    bus.consumer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_writer_that_skipped_its_notification_delays_no_one_and_is_relayed_at_commit() {
    let bus = Bus::new("wake-open").await;
    // No relay yet: this writer takes the shared lock and will not notify.
    let slow = full_event(0);
    let mut open = bus.db.pool().begin().await.unwrap();
    bus.ob.enqueue(&mut *open, &slow).await.unwrap();

    // The relay finds nothing committed, asks to doze and waits for the
    // open writer; meanwhile every other commit notifies and is relayed.
    let (token, relay) = start_relay(&bus.redis, &bus.db, &bus.topology).await;
    for i in 1..=3 {
        let e = full_event(i);
        commit_one(&bus.db, &bus.ob, &e).await;
        assert!(
            bus.relayed(&e).await,
            "event {i} waited behind an open transaction"
        );
    }
    assert!(!bus
        .collector
        .deliveries()
        .iter()
        .any(|d| d.envelope.id == slow.id));

    // Its commit lets the relay doze, and the round after that finds it.
    open.commit().await.unwrap();
    assert!(
        bus.relayed(&slow).await,
        "the writer that skipped its notification was not relayed after its commit"
    );
    wait_dozing(&bus.db).await;
    token.cancel();
    relay.await.unwrap().unwrap();
    bus.consumer.stop().await.unwrap();
}
