//! Consumers need no `CLIENT UNBLOCK` (nor `CLIENT ID`), which would let a
//! consumer's Redis user unblock any other client: on a private Redis whose
//! only user has every command but those two, ordered members rebalance and
//! keep per-key order, and both modes stop at once when shut down while
//! blocked in a long read.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use eventbus::{ConsumerConfig, ConsumerMode, Topology};
use eventbus_testkit::conformance::{keyed_event, publisher, spawn_consumer};
use eventbus_testkit::{Collector, RedisServer};

/// `user consumer ...` as redis-server arguments (one per word).
const USER: [&str; 9] = [
    "--user",
    "consumer",
    "on",
    ">pw",
    "~*",
    "&*",
    "+@all",
    "-client|unblock",
    "-client|id",
];

fn server() -> (RedisServer, String) {
    let server = RedisServer::start_with(&USER);
    let url = format!("redis://consumer:pw@127.0.0.1:{}", server.port());
    (server, url)
}

fn config(mode: ConsumerMode, block: Duration) -> ConsumerConfig {
    let mut c = eventbus_testkit::fast_config("g", &["work_item"], mode);
    c.block = block;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_members_rebalance_in_order_without_client_unblock() {
    let (_server, url) = server();
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let refused: redis::RedisResult<i64> = redis::cmd("CLIENT")
        .arg("UNBLOCK")
        .arg(1)
        .query_async(&mut conn)
        .await;
    let refused = refused.unwrap_err();
    assert!(
        refused.code() == Some("NOPERM") || refused.to_string().contains("no permissions"),
        "{refused}"
    );

    let topology = Topology::new("nounblock", 4).unwrap();
    let p = publisher(&url, &topology).await;
    let keys: Vec<String> = (0..8).map(|k| format!("wi-{k}")).collect();
    let publish = |from: usize, to: usize| {
        let events: Vec<_> = (from..to)
            .flat_map(|seq| keys.iter().map(move |k| keyed_event(k, seq)))
            .collect();
        let p = &p;
        async move { p.publish_batch(&events).await.unwrap() }
    };
    // However long reads are asked to block, a rebalance never waits on a
    // wake-up (reads block at most 500 ms).
    let block = Duration::from_secs(60);
    let collector = Collector::new();
    let a = spawn_consumer(
        &url,
        &topology,
        config(ConsumerMode::Ordered, block),
        collector.clone(),
    );
    publish(0, 10).await;
    assert!(
        collector
            .wait_for(Duration::from_secs(30), |d| d.len() >= 40)
            .await
    );
    // A second member joins: partitions move to it.
    let b = spawn_consumer(
        &url,
        &topology,
        config(ConsumerMode::Ordered, block),
        collector.clone(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    publish(10, 20).await;
    assert!(
        collector
            .wait_for(Duration::from_secs(30), |d| d.len() >= 160)
            .await
    );
    // The first leaves: the second takes everything over.
    a.stop().await.unwrap();
    publish(20, 30).await;
    assert!(
        collector
            .wait_for(Duration::from_secs(30), |d| d.len() >= 240)
            .await,
        "only {} of 240 handled",
        collector.len()
    );
    b.stop().await.unwrap();

    let consumers: std::collections::BTreeSet<String> = collector
        .deliveries()
        .iter()
        .map(|d| d.consumer.clone())
        .collect();
    assert_eq!(consumers.len(), 2, "both members handled events");
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for d in collector.deliveries() {
        by_key
            .entry(d.envelope.key.clone())
            .or_default()
            .push(d.envelope.data["seq"].as_u64().unwrap());
    }
    for (key, seqs) in by_key {
        let mut expected: Vec<u64> = seqs.clone();
        expected.dedup();
        assert_eq!(expected, (0..30).collect::<Vec<_>>(), "{key}: {seqs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_blocked_in_a_long_read_stops_at_once() {
    let (_server, url) = server();
    let topology = Topology::new("nounblock", 4).unwrap();
    for mode in [ConsumerMode::Unordered, ConsumerMode::Ordered] {
        let mut c = config(mode, Duration::from_secs(60));
        // Long enough that an ordered read may block the whole minute.
        c.session_timeout = Duration::from_secs(600);
        let running = spawn_consumer(&url, &topology, c, Collector::new());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let asked = Instant::now();
        running.stop().await.unwrap();
        let took = asked.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "{mode:?} took {took:?} to stop"
        );
    }
}
