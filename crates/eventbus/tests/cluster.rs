//! The bus on a private Redis Cluster (3 masters, 3 replicas): the
//! conformance suite in both consumer modes, partitions spread over the
//! shards, and a master killed mid-run.
//!
//! Each test starts its own cluster (about 3 s) and runs its scenarios one
//! after another on it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventbus::pg::{
    outbox_status, replay_published, Inbox, Outbox, OutboxConfig, Relay, RelayConfig,
};
use eventbus::{ConsumerConfig, ConsumerMode, Envelope, Topology};
use eventbus_testkit::conformance::{self, keyed_event, publisher, spawn_consumer, Suite};
use eventbus_testkit::{RedisCluster, ResultWriter, TestSchema};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(90);

/// Scenarios on a cluster use 16 partitions, so every consumer reads
/// streams on every shard.
fn sixteen(mut suite: Suite) -> Suite {
    suite.partitions = 16;
    suite
}

/// The scenarios every consumer mode passes (the single-server restart is
/// left out: its cluster counterpart is the failover test below).
async fn every_mode(suite: &Suite) {
    conformance::round_trip(suite).await;
    conformance::competing_consumers(suite).await;
    conformance::two_groups(suite).await;
    conformance::failing_handler(suite).await;
    conformance::close_and_reopen(suite).await;
    conformance::claim_from_crashed(suite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_unordered_on_a_cluster() {
    let cluster = RedisCluster::start();
    let suite = sixteen(Suite::unordered(cluster.cluster_url()));
    every_mode(&suite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_ordered_on_a_cluster() {
    let cluster = RedisCluster::start();
    let suite = sixteen(Suite::ordered(cluster.cluster_url()));
    every_mode(&suite).await;
    conformance::order_per_key(&suite).await;
    conformance::failing_entry_blocks_only_its_partition(&suite).await;
}

/// A batch over every partition goes out as one pipeline per slot; each
/// event's reported stream and entry id are its own (replies matched back
/// in input order), checked by reading each entry back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_split_per_slot_reports_each_event_where_it_landed() {
    let cluster = RedisCluster::start();
    let url = cluster.cluster_url();
    let topology = Topology::new("batch", 16).unwrap();
    let p = publisher(&url, &topology).await;
    let events: Vec<Envelope> = (0..200).map(|i| keyed_event(&format!("k{i}"), i)).collect();
    let published = p.publish_batch(&events).await.unwrap();
    let partitions: std::collections::BTreeSet<u32> =
        published.iter().map(|r| r.partition).collect();
    assert_eq!(
        partitions.len(),
        16,
        "the batch did not cover every partition"
    );
    let mut conn = eventbus::RedisConnector::new(&url, eventbus::RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    for (event, at) in events.iter().zip(&published) {
        assert_eq!(
            at.stream,
            topology.stream_for(&event.event_type, &event.key)
        );
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(&at.stream)
            .arg(&at.entry_id)
            .arg(&at.entry_id)
            .query_async(&mut conn)
            .await
            .unwrap();
        let fields = &entries[0].1;
        let read = Envelope::from_fields(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
            .unwrap();
        assert_eq!(read.id, event.id, "entry {} is another event", at.entry_id);
    }
}

#[test]
fn the_16_partitions_of_a_topic_land_on_all_three_masters() {
    let cluster = RedisCluster::start();
    let topology = eventbus::Topology::new("spread", 16).unwrap();
    let mut per_master = std::collections::BTreeMap::<u16, Vec<u32>>::new();
    for p in 0..16 {
        let stream = topology.stream_key("work_item", p);
        // Every key of a partition shares its slot (one hash tag).
        let slot = cluster.keyslot(&stream);
        for suffix in [":lease:g", ":fence:g"] {
            assert_eq!(cluster.keyslot(&format!("{stream}{suffix}")), slot);
        }
        per_master
            .entry(cluster.master_for_slot(slot))
            .or_default()
            .push(p);
    }
    assert_eq!(per_master.len(), 3, "partitions per master: {per_master:?}");
    assert!(
        per_master.values().all(|ps| ps.len() >= 3),
        "uneven spread: {per_master:?}"
    );
}

/// Without PostgreSQL, dead letters are recorded in Redis by one script
/// over the dead stream's slot: on a cluster, a record is written, fails
/// again into the same record, is listed, replayed, discarded and purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_records_in_redis_work_on_a_cluster() {
    use eventbus::deadletter::{
        DeadLetterFilter, DeadLetterStore, DeadLetterWriter, Failure, ReplayOptions,
    };
    let cluster = RedisCluster::start();
    let topology = Topology::new("dlqcl", 16).unwrap();
    let dead = topology.dead_stream();
    assert_eq!(
        cluster.keyslot(&format!("dlqcl:{{{dead}}}:records")),
        cluster.keyslot(&dead),
        "the records share the dead stream's slot"
    );
    let mut conn =
        eventbus::RedisConnector::new(&cluster.cluster_url(), eventbus::RedisOptions::default())
            .unwrap()
            .shared()
            .await
            .unwrap();
    let writer = DeadLetterWriter::new(conn.clone(), &topology, None);
    let store = DeadLetterStore::in_redis(topology.clone(), conn.clone());
    let failure = |e: &Envelope, message: &str| Failure {
        envelope: e.clone(),
        group: "g".into(),
        consumer: "c".into(),
        stream: topology.stream_for(&e.event_type, &e.key),
        partition: topology.partition_of(&e.key),
        entry_id: "1-0".into(),
        attempts: 3,
        class: eventbus::ErrorClass::Permanent,
        message: message.into(),
        first_failed_at: None,
        raw_fields: None,
    };
    let events: Vec<Envelope> = (0..20).map(|i| keyed_event(&format!("k{i}"), i)).collect();
    let mut ids = Vec::new();
    for e in &events {
        ids.push(writer.record(&failure(e, "boom")).await.unwrap());
    }
    assert_eq!(
        writer.record(&failure(&events[0], "again")).await.unwrap(),
        ids[0]
    );
    let listed = store.list(&DeadLetterFilter::default()).await.unwrap();
    assert_eq!(listed.len(), 20);
    assert_eq!(listed[0].id, ids[0], "the latest failure first");
    let report = store
        .replay(
            &DeadLetterFilter {
                group: Some("g".into()),
                ..Default::default()
            },
            &ReplayOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(report.replayed, 20);
    let replays: u64 = redis::cmd("XLEN")
        .arg(topology.replay_stream("g"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(replays, 20);
    let (dl, history) = store.get(ids[0]).await.unwrap().unwrap();
    assert_eq!((dl.status.as_str(), dl.replay_count), ("replayed", 1));
    let actions: Vec<_> = history.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["dead_lettered", "failed_again", "replayed"]);
    writer.record(&failure(&events[1], "still")).await.unwrap();
    let one = DeadLetterFilter {
        ids: vec![ids[1]],
        ..Default::default()
    };
    assert_eq!(store.discard(&one, "t", false).await.unwrap(), [ids[1]]);
    assert_eq!(
        store.get(ids[1]).await.unwrap().unwrap().0.status,
        "discarded"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let purged = store.purge(Duration::from_millis(1), false).await.unwrap();
    let left = store.list(&DeadLetterFilter::default()).await.unwrap();
    assert_eq!((purged, left.len()), (20, 0));
}

async fn scalar(db: &TestSchema, sql: String) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// A master is SIGKILLed while events are committed to the outbox, relayed
/// and consumed through an inbox. Everyone keeps going once its replica
/// takes over. Writes the dead master acknowledged but had not replicated
/// may be gone; the documented recovery (`outbox replay --since` the kill,
/// with retention on) publishes the window again, the inbox drops what was
/// already handled, and every committed event has exactly one effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_run_loses_nothing_after_outbox_replay() {
    master_killed_mid_run(ConsumerMode::Unordered).await;
}

/// The same with an ordered consumer: its leases on the failed shard's
/// partitions survive or are taken again, and it keeps going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_a_master_killed_mid_run_loses_nothing_after_outbox_replay() {
    master_killed_mid_run(ConsumerMode::Ordered).await;
}

async fn master_killed_mid_run(mode: ConsumerMode) {
    const BATCHES: usize = 120;
    const PER_BATCH: usize = 25;
    let cluster = Arc::new(RedisCluster::start());
    let url = cluster.cluster_url();
    let db = TestSchema::new("clfail").await;
    let topology = Topology::new("failover", 16).unwrap();
    let writer = ResultWriter::create(&db, "results").await;
    let results = writer.table().to_owned();

    let mut config = ConsumerConfig::new("g", ["work_item"]);
    config.mode = mode;
    config.heartbeat_interval = Duration::from_millis(200);
    config.session_timeout = Duration::from_secs(2);
    config.block = Duration::from_millis(200);
    config.claim_idle = Duration::from_millis(500);
    config.claim_interval = Duration::from_millis(100);
    let inbox = Inbox::new(db.pool().clone(), db.schema(), writer);
    let consumer = spawn_consumer(&url, &topology, config, inbox);
    let relay_config = RelayConfig {
        retention: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    let relay = Relay::new(
        db.pool().clone(),
        publisher(&url, &topology).await,
        db.schema().clone(),
        relay_config,
    )
    .unwrap();
    let relay_stop = CancellationToken::new();
    let relay_task = tokio::spawn(relay.run(relay_stop.clone()));
    let outbox = Outbox::new(
        topology.clone(),
        OutboxConfig {
            schema: db.schema().clone(),
            ..Default::default()
        },
    )
    .unwrap();

    // Kill the master of partition 0 a quarter of the way in.
    let victim = topology.stream_key("work_item", 0);
    let mut killed_at = None;
    let mut failover = None;
    let mut seq = 0usize;
    // Events committed once the replica had taken over: no failover can
    // have lost them, so they must arrive without any replay.
    let mut after_failover = Vec::new();
    for batch in 0..BATCHES {
        let events: Vec<Envelope> = (0..PER_BATCH)
            .map(|_| {
                seq += 1;
                keyed_event(&format!("k{}", seq % 97), seq)
            })
            .collect();
        outbox.enqueue_batch(db.pool(), &events).await.unwrap();
        if failover
            .as_ref()
            .is_some_and(|f: &tokio::task::JoinHandle<_>| f.is_finished())
        {
            after_failover.extend(events.iter().map(|e| e.id));
        }
        if batch == BATCHES / 4 {
            killed_at = Some(chrono::Utc::now() - chrono::Duration::seconds(1));
            let c = cluster.clone();
            let key = victim.clone();
            failover = Some(tokio::task::spawn_blocking(move || {
                let old = c.kill_master_of(&key);
                let started = Instant::now();
                let new = c.wait_for_failover(old, Duration::from_secs(30));
                (old, new, started.elapsed())
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (old, new, promoted_in) = failover.unwrap().await.unwrap();
    eprintln!("master {old} killed; replica {new} promoted after {promoted_in:?}");
    let total = (BATCHES * PER_BATCH) as i64;

    // Everything committed is relayed (the relay kept going).
    let deadline = Instant::now() + WAIT;
    loop {
        let status = outbox_status(db.pool(), db.schema()).await.unwrap();
        if status.iter().all(|p| p.backlog == 0) {
            break;
        }
        assert!(Instant::now() < deadline, "relay stuck: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Consumers kept going: everything committed after the failover is
    // handled without a replay.
    assert!(
        after_failover.len() >= PER_BATCH,
        "the failover outlasted the run"
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let handled: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(DISTINCT event_id) FROM {results} WHERE event_id = ANY($1)"
        )))
        .bind(&after_failover)
        .fetch_one(db.pool())
        .await
        .unwrap();
        if handled == after_failover.len() as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{handled} of {} events committed after the failover were handled",
            after_failover.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let handled_before = scalar(
        &db,
        format!("SELECT count(DISTINCT event_id) FROM {results}"),
    )
    .await;
    eprintln!("handled before recovery: {handled_before} of {total}");

    // The documented recovery: replay the window from before the kill.
    let requeued = replay_published(db.pool(), db.schema(), killed_at.unwrap())
        .await
        .unwrap();
    assert!(requeued > 0, "nothing to replay: retention is off?");
    let deadline = Instant::now() + WAIT;
    loop {
        let distinct = scalar(
            &db,
            format!("SELECT count(DISTINCT event_id) FROM {results}"),
        )
        .await;
        if distinct == total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {distinct} of {total} events have an effect after the replay"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // late duplicates would show now
    let rows = scalar(&db, format!("SELECT count(*) FROM {results}")).await;
    assert_eq!(rows, total, "an effect happened more than once");

    // The admin views work on the cluster too.
    let conn = eventbus::RedisConnector::new(&url, eventbus::RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    let topics: std::collections::BTreeSet<String> = ["work_item".to_owned()].into();
    let stats = eventbus::admin::partition_stats(&conn, &topology, &topics)
        .await
        .unwrap();
    assert_eq!(stats.len(), 16);

    relay_stop.cancel();
    relay_task.await.unwrap().unwrap();
    consumer.stop().await.unwrap();
}
