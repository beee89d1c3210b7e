//! Retries and dead letters in both consumer modes, against real Redis and
//! PostgreSQL: error classes, durable attempts, poison events in ordered
//! mode, replays reaching only the failing group, and no loss when Redis or
//! PostgreSQL fails in the middle of dead-lettering.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus::deadletter::{DeadLetterFilter, DeadLetterStore, ReplayOptions};
use eventbus::{
    Backoff, ConsumerConfig, ConsumerMode, Delivery, Envelope, Handler, HandlerError, RetryPolicy,
};
use eventbus_testkit::conformance::{publisher, Running};
use eventbus_testkit::{
    fast_config, shared_redis_url, Collector, PgServer, RedisServer, TestNamespace, TestSchema,
};

const WAIT: Duration = Duration::from_secs(60);

fn config(group: &str, mode: ConsumerMode, attempts: u32) -> ConsumerConfig {
    let mut c = fast_config(group, &["work_item"], mode);
    c.retry = RetryPolicy {
        max_attempts: attempts,
        backoff: Backoff::Schedule(vec![Duration::from_millis(30)]),
        attempt_timeout: Some(Duration::from_secs(5)),
    };
    c
}

fn spawn<H: Handler>(
    url: &str,
    ns: &TestNamespace,
    cfg: ConsumerConfig,
    h: H,
    db: Option<&TestSchema>,
) -> Running {
    spawn_on(
        url,
        &ns.topology(2),
        cfg,
        h,
        db.map(|d| (d.pool().clone(), d.schema().clone())),
    )
}

fn spawn_on<H: Handler>(
    url: &str,
    topology: &eventbus::Topology,
    cfg: ConsumerConfig,
    h: H,
    store: Option<(sqlx::PgPool, eventbus::pg::DbSchema)>,
) -> Running {
    let connector = eventbus::RedisConnector::new(url, eventbus::RedisOptions::default()).unwrap();
    let mut consumer = eventbus::Consumer::new(connector, topology.clone(), cfg, h).unwrap();
    if let Some((pool, schema)) = store {
        consumer = consumer.with_dead_letter_store(pool, schema);
    }
    Running::spawn(consumer)
}

/// Fails the events whose `data.fail` is set, with the given class, and
/// counts calls per event.
#[derive(Clone, Default)]
struct Picky {
    calls: Arc<Mutex<HashMap<uuid::Uuid, u64>>>,
    ok: Arc<Mutex<Vec<Delivery>>>,
}

impl Handler for Picky {
    async fn handle(&self, d: Delivery) -> Result<(), HandlerError> {
        *self.calls.lock().unwrap().entry(d.envelope.id).or_default() += 1;
        match d.envelope.data.get("fail").and_then(|v| v.as_str()) {
            Some("retryable") => Err(HandlerError::retryable("dependency down")),
            Some("permanent") => Err(HandlerError::permanent("refused by a business rule")),
            Some("invalid") => Err(HandlerError::invalid("fails its schema")),
            _ => {
                self.ok.lock().unwrap().push(d);
                Ok(())
            }
        }
    }
}

fn event(i: usize, key: &str, fail: Option<&str>) -> Envelope {
    let mut data = serde_json::json!({"seq": i});
    if let Some(f) = fail {
        data["fail"] = f.into();
    }
    Envelope::new("work_item.processing_failed", key, data)
}

async fn dead_letters(store: &DeadLetterStore, n: usize) -> Vec<eventbus::deadletter::DeadLetter> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let all = store.list(&DeadLetterFilter::default()).await.unwrap();
        if all.len() >= n {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} dead letters",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn store_for(url: &str, ns: &TestNamespace, db: &TestSchema) -> DeadLetterStore {
    let redis = eventbus::RedisConnector::new(url, eventbus::RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    DeadLetterStore::new(
        db.pool().clone(),
        db.schema().clone(),
        ns.topology(2),
        redis,
    )
}

async fn classes_go_where_they_belong(mode: ConsumerMode) {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, "classes");
    let db = TestSchema::new("classes").await;
    let handler = Picky::default();
    let c = spawn(&url, &ns, config("g", mode, 3), handler.clone(), Some(&db));
    let p = publisher(&url, &ns.topology(2)).await;
    let events = vec![
        event(0, "a", None),
        event(1, "b", Some("permanent")),
        event(2, "c", Some("invalid")),
        event(3, "d", Some("retryable")),
        event(4, "e", None),
    ];
    p.publish_batch(&events).await.unwrap();
    // an entry that is not an envelope at all
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(ns.topology(2).stream_key("work_item", 1))
        .arg("*")
        .arg("junk")
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let store = store_for(&url, &ns, &db).await;
    let dls = dead_letters(&store, 4).await;
    let by_key: HashMap<String, &eventbus::deadletter::DeadLetter> =
        dls.iter().map(|d| (d.key.clone(), d)).collect();
    assert_eq!(
        (by_key["b"].error_class.as_str(), by_key["b"].attempts),
        ("permanent", 1),
        "permanent goes at once"
    );
    assert_eq!(
        (by_key["c"].error_class.as_str(), by_key["c"].attempts),
        ("invalid", 1),
        "invalid goes at once"
    );
    assert_eq!(
        (by_key["d"].error_class.as_str(), by_key["d"].attempts),
        ("retryable", 3),
        "retried up to the limit"
    );
    assert!(dls
        .iter()
        .any(|d| d.event_type == "_invalid.undecodable" && d.error_class == "invalid"));
    let calls = handler.calls.lock().unwrap().clone();
    assert_eq!(calls[&events[1].id], 1);
    assert_eq!(calls[&events[3].id], 3);
    assert_eq!(handler.ok.lock().unwrap().len(), 2);
    c.stop().await.unwrap();
    // everything ended acknowledged
    let conn = eventbus::RedisConnector::new(&url, eventbus::RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    let stats =
        eventbus::admin::partition_stats(&conn, &ns.topology(2), &["work_item".to_owned()].into())
            .await
            .unwrap();
    let pending: u64 = stats
        .iter()
        .flat_map(|p| &p.groups)
        .map(|g| g.pending)
        .sum();
    assert_eq!(pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unordered_classes_and_attempts() {
    classes_go_where_they_belong(ConsumerMode::Unordered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_classes_and_attempts() {
    classes_go_where_they_belong(ConsumerMode::Ordered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_survive_a_consumer_kill() {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, "survive");
    let db = TestSchema::new("survive").await;
    // The first consumer fails the event once, then is killed while it waits
    // for the retry; the second takes the entry over and continues the count.
    // The wait is in memory here (`scheduled_retry_after: None`); the
    // default sends an hour's wait through the scheduler, which outlives
    // the crash (tests/scheduled_retry.rs).
    let mut cfg = config("g", ConsumerMode::Unordered, 3);
    cfg.retry.backoff = Backoff::Schedule(vec![Duration::from_secs(3600)]);
    cfg.scheduled_retry_after = None;
    let first = Picky::default();
    let c1 = spawn(&url, &ns, cfg, first.clone(), Some(&db));
    let p = publisher(&url, &ns.topology(2)).await;
    let e = event(0, "k", Some("retryable"));
    p.publish(&e).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while first.calls.lock().unwrap().get(&e.id).copied().unwrap_or(0) < 1 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c1.crash();
    let second = Picky::default();
    let c2 = spawn(
        &url,
        &ns,
        config("g", ConsumerMode::Unordered, 3),
        second.clone(),
        Some(&db),
    );
    let store = store_for(&url, &ns, &db).await;
    let dls = dead_letters(&store, 1).await;
    assert_eq!(dls[0].attempts, 3, "the count restarted after the crash");
    assert_eq!(
        second.calls.lock().unwrap()[&e.id],
        2,
        "the second consumer ran attempts 2 and 3 only"
    );
    c2.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_in_ordered_mode_is_dead_lettered_and_its_partition_continues_in_order() {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, "poison");
    let db = TestSchema::new("poison").await;
    let handler = Picky::default();
    let c = spawn(
        &url,
        &ns,
        config("g", ConsumerMode::Ordered, 4),
        handler.clone(),
        Some(&db),
    );
    let p = publisher(&url, &ns.topology(2)).await;
    let events: Vec<Envelope> = (0..20)
        .map(|i| event(i, "same-key", (i == 5).then_some("retryable")))
        .collect();
    p.publish_batch(&events).await.unwrap();
    assert!(
        Collector::wait_until(WAIT, || handler.ok.lock().unwrap().len() >= 19).await,
        "the partition stalled behind the poison event"
    );
    let seqs: Vec<i64> = handler
        .ok
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.envelope.data["seq"].as_i64().unwrap())
        .collect();
    let want: Vec<i64> = (0..20).filter(|i| *i != 5).collect();
    assert_eq!(seqs, want, "order of the rest changed");
    let store = store_for(&url, &ns, &db).await;
    let dls = dead_letters(&store, 1).await;
    assert_eq!((dls[0].event_id, dls[0].attempts), (events[5].id, 4));
    c.stop().await.unwrap();
}

/// Fails every event until `fixed` is set.
#[derive(Clone, Default)]
struct Flaky {
    fixed: Arc<std::sync::atomic::AtomicBool>,
    handled: Arc<Mutex<Vec<Delivery>>>,
}

impl Handler for Flaky {
    async fn handle(&self, d: Delivery) -> Result<(), HandlerError> {
        if self.fixed.load(Ordering::Relaxed) {
            self.handled.lock().unwrap().push(d);
            Ok(())
        } else {
            Err(HandlerError::permanent("not yet"))
        }
    }
}

async fn replay_reaches_only_the_failing_group(mode: ConsumerMode, url: String) {
    let ns = TestNamespace::new(&url, "replay");
    let db = TestSchema::new("replay").await;
    let failing = Flaky::default();
    let healthy = Collector::new();
    let c1 = spawn(
        &url,
        &ns,
        config("billing", mode, 2),
        failing.clone(),
        Some(&db),
    );
    let c2 = spawn(
        &url,
        &ns,
        config("audit", mode, 2),
        healthy.clone(),
        Some(&db),
    );
    let p = publisher(&url, &ns.topology(2)).await;
    let events: Vec<Envelope> = (0..6).map(|i| event(i, &format!("k{i}"), None)).collect();
    p.publish_batch(&events).await.unwrap();
    let store = store_for(&url, &ns, &db).await;
    dead_letters(&store, 6).await;
    assert!(healthy.wait_for(WAIT, |d| d.len() >= 6).await);

    failing.fixed.store(true, Ordering::Relaxed);
    // replay by key: exactly one event comes back, to billing only
    let by_key = DeadLetterFilter {
        key: Some("k3".into()),
        ..Default::default()
    };
    assert_eq!(
        store
            .replay(&by_key, &ReplayOptions::default())
            .await
            .unwrap()
            .replayed,
        1
    );
    assert!(Collector::wait_until(WAIT, || failing.handled.lock().unwrap().len() == 1).await);
    let got = failing.handled.lock().unwrap()[0].clone();
    assert_eq!(got.envelope.id, events[3].id, "the event id is kept");
    // then the rest, by group
    let by_group = DeadLetterFilter {
        group: Some("billing".into()),
        ..Default::default()
    };
    assert_eq!(
        store
            .replay(&by_group, &ReplayOptions::default())
            .await
            .unwrap()
            .replayed,
        5
    );
    assert!(Collector::wait_until(WAIT, || failing.handled.lock().unwrap().len() == 6).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        healthy.len(),
        6,
        "a replay reached the group that had handled the event"
    );
    c1.stop().await.unwrap();
    c2.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unordered_replay_reaches_only_the_failing_group() {
    replay_reaches_only_the_failing_group(ConsumerMode::Unordered, shared_redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_replay_reaches_only_the_failing_group() {
    replay_reaches_only_the_failing_group(ConsumerMode::Ordered, shared_redis_url()).await;
}

/// Dead letters, the dead-letter store and replays on a private Redis
/// Cluster, in both modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_dead_letters_and_replays_work_in_both_modes() {
    let cluster = eventbus_testkit::RedisCluster::start();
    replay_reaches_only_the_failing_group(ConsumerMode::Unordered, cluster.cluster_url()).await;
    replay_reaches_only_the_failing_group(ConsumerMode::Ordered, cluster.cluster_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_when_redis_fails_while_dead_lettering() {
    let mut server = RedisServer::start();
    let url = server.url();
    let topology = eventbus::Topology::new("dlq-redis", 2).unwrap();
    let handler = Picky::default();
    let c = spawn_on(
        &url,
        &topology,
        config("g", ConsumerMode::Unordered, 2),
        handler.clone(),
        None,
    );
    let p = publisher(&url, &topology).await;
    let events: Vec<Envelope> = (0..40)
        .map(|i| event(i, &format!("k{i}"), (i % 2 == 0).then_some("permanent")))
        .collect();
    p.publish_batch(&events[..20]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    p.publish_batch(&events[20..]).await.unwrap();
    let conn = eventbus::RedisConnector::new(&url, eventbus::RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    let dead: std::collections::HashSet<String> = loop {
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(topology.dead_stream())
            .arg("-")
            .arg("+")
            .query_async(&mut conn.clone())
            .await
            .unwrap_or_default();
        let ids: std::collections::HashSet<String> =
            entries.into_iter().map(|(_, f)| f["id"].clone()).collect();
        let all_ok = handler.ok.lock().unwrap().len() >= 20;
        if ids.len() >= 20 && all_ok {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for e in events.iter().filter(|e| e.data.get("fail").is_some()) {
        assert!(dead.contains(&e.id.to_string()), "event {} was lost", e.id);
    }
    c.stop().await.unwrap();
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_when_postgres_fails_while_dead_lettering() {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, "dlq-pg");
    let mut pg = PgServer::start();
    let pool = eventbus::pg::connect_pool(&pg.url(), 4, "dlq-pg-test")
        .await
        .unwrap();
    let schema = eventbus::pg::DbSchema::new("dlqpg").unwrap();
    eventbus::pg::migrate(&mut pool.acquire().await.unwrap(), &schema)
        .await
        .unwrap();
    let handler = Picky::default();
    let c = spawn_on(
        &url,
        &ns.topology(2),
        config("g", ConsumerMode::Unordered, 2),
        handler.clone(),
        Some((pool.clone(), schema.clone())),
    );
    let p = publisher(&url, &ns.topology(2)).await;
    let events: Vec<Envelope> = (0..30)
        .map(|i| event(i, &format!("k{i}"), (i % 3 == 0).then_some("permanent")))
        .collect();
    p.publish_batch(&events[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    pg.kill();
    p.publish_batch(&events[10..]).await.unwrap(); // their dead letters cannot be written now
    tokio::time::sleep(Duration::from_millis(700)).await;
    let pg = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    })
    .await
    .unwrap();
    let redis = eventbus::RedisConnector::new(&url, eventbus::RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    let store = DeadLetterStore::new(pool.clone(), schema.clone(), ns.topology(2), redis);
    let want = events
        .iter()
        .filter(|e| e.data.get("fail").is_some())
        .count();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(all) = store.list(&DeadLetterFilter::default()).await {
            if all.len() >= want {
                let ids: std::collections::HashSet<_> = all.iter().map(|d| d.event_id).collect();
                for e in events.iter().filter(|e| e.data.get("fail").is_some()) {
                    assert!(ids.contains(&e.id));
                }
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead letters lost while PostgreSQL was down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(Collector::wait_until(WAIT, || handler.ok.lock().unwrap().len() >= 20).await);
    c.stop().await.unwrap();
    drop(pg);
}

#[tokio::test(start_paused = true)]
async fn backoff_schedule_and_jitter_bounds_in_paused_time() {
    let policy = RetryPolicy {
        max_attempts: 6,
        backoff: Backoff::Exponential {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
        },
        attempt_timeout: None,
    };
    let start = tokio::time::Instant::now();
    let mut total = Duration::ZERO;
    for attempt in 1..6u64 {
        let d = policy.delay(attempt);
        assert!(d <= policy.max_delay(attempt));
        let before = tokio::time::Instant::now();
        tokio::time::sleep(d).await;
        // the timer wheel has millisecond granularity
        let slept = tokio::time::Instant::now() - before;
        assert!(
            slept >= d && slept <= d + Duration::from_millis(1),
            "{slept:?} for {d:?}"
        );
        total += slept;
    }
    assert_eq!(tokio::time::Instant::now() - start, total);
    assert!(total <= Duration::from_millis(100 + 200 + 400 + 800 + 1000 + 5));
    let schedule = RetryPolicy {
        backoff: Backoff::Schedule(vec![Duration::from_secs(1), Duration::from_secs(5)]),
        ..policy
    };
    let waits: Vec<Duration> = (1..5).map(|a| schedule.delay(a)).collect();
    assert_eq!(waits, [1, 5, 5, 5].map(Duration::from_secs));
}
