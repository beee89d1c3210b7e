//! Consumer runtime and publisher behaviour beyond the conformance suite:
//! malformed entries, vanished groups, stale consumers, trimming, publishing
//! across a server restart.

use std::collections::BTreeSet;
use std::time::Duration;

use eventbus::{
    ConsumerConfig, ConsumerMode, Envelope, Publisher, PublisherConfig, RedisConnector,
    RedisOptions,
};
use eventbus_testkit::conformance::{full_event, publisher, spawn_consumer};
use eventbus_testkit::{shared_redis_url, Collector, RedisServer, TestNamespace};

const WAIT: Duration = Duration::from_secs(30);

fn fast(group: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(group, ["work_item"]);
    c.mode = ConsumerMode::Unordered; // these tests pin the competing-consumers runtime
    c.block = Duration::from_millis(100);
    c.claim_idle = Duration::from_millis(300);
    c.claim_interval = Duration::from_millis(100);
    c.shutdown_timeout = Duration::from_secs(5);
    c
}

async fn conn(url: &str) -> eventbus::RedisConn {
    RedisConnector::new(url, RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap()
}

async fn pending(url: &str, ns: &TestNamespace) -> u64 {
    let topics: BTreeSet<String> = ["work_item".to_owned()].into();
    eventbus::admin::partition_stats(&conn(url).await, &ns.topology(4), &topics)
        .await
        .unwrap()
        .iter()
        .flat_map(|p| &p.groups)
        .map(|g| g.pending)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_entries_are_acked_past_and_others_handled() {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, "malformed");
    let topology = ns.topology(4);
    let collector = Collector::new();
    let consumer = spawn_consumer(&url, &topology, fast("g"), collector.clone());
    let p = publisher(&url, &topology).await;
    let mut c = conn(&url).await;
    let stream = topology.stream_key("work_item", 0);
    let good: Vec<Envelope> = (0..20).map(full_event).collect();
    p.publish_batch(&good[..10]).await.unwrap();
    // one of each kind of malformed entry, between good ones
    let bad: [&[(&str, &str)]; 4] = [
        &[("hello", "world")],
        &[("v", "9"), ("id", "x")],
        &[
            ("v", "1"),
            ("id", "019a1f2e-8b3c-7d4e-9f60-1a2b3c4d5e6f"),
            ("type", "a.b"),
            ("version", "1"),
            ("key", "k"),
            ("occurred_at", "2026-01-01T00:00:00Z"),
            ("source", "s"),
            ("data", "{oops"),
        ],
        &[("v", "1"), ("id", "nope")],
    ];
    for fields in bad {
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg(fields)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    p.publish_batch(&good[10..]).await.unwrap();
    assert!(
        collector.wait_for(WAIT, |d| d.len() >= 20).await,
        "good events were held up"
    );
    assert_eq!(collector.ids(), good.iter().map(|e| e.id).collect());
    // the bad entries were acknowledged: nothing stays pending
    let deadline = tokio::time::Instant::now() + WAIT;
    while pending(&url, &ns).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "malformed entries left pending"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consumer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_streams_and_groups_are_recreated() {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, "vanish");
    let topology = ns.topology(4);
    let collector = Collector::new();
    let consumer = spawn_consumer(&url, &topology, fast("g"), collector.clone());
    let p = publisher(&url, &topology).await;
    p.publish_batch(&(0..20).map(full_event).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(collector.wait_for(WAIT, |d| d.len() >= 20).await);
    // as after a restart without persistence: every stream (and its group) is gone
    let mut c = conn(&url).await;
    let _: () = redis::cmd("DEL")
        .arg(topology.topic_streams("work_item"))
        .query_async(&mut c)
        .await
        .unwrap();
    let later: Vec<Envelope> = (100..140).map(full_event).collect();
    // publish until the consumer has recreated groups and sees new events
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut sent = Vec::new();
    for chunk in later.chunks(5) {
        p.publish_batch(chunk).await.unwrap();
        sent.extend(chunk.iter().map(|e| e.id));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // events published after the group was recreated must all arrive; the
    // group starts at the beginning of the new stream, so all of them do
    while !sent.iter().all(|id| collector.ids().contains(id)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events after the stream vanished were not consumed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consumer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_consumers_without_pending_entries_are_removed() {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, "stale");
    let topology = ns.topology(1);
    let stream = topology.stream_key("work_item", 0);
    let mut c = conn(&url).await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut c)
        .await
        .unwrap();
    let p = publisher(&url, &topology).await;
    p.publish(&full_event(1)).await.unwrap();
    // "ghost-busy" reads the entry and never acks; "ghost-idle" reads nothing
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("ghost-busy")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut c)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("ghost-idle")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut c)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut config = fast("g");
    config.claim_idle = Duration::from_secs(3600); // keep ghost-busy's entry where it is
    config.stale_consumer_after = Duration::from_millis(200);
    config.stale_check_interval = Duration::from_millis(100);
    let consumer = spawn_consumer(&url, &topology, config, Collector::new());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let names = consumer_names(&mut c, &stream).await;
        if !names.contains("ghost-idle") {
            assert!(
                names.contains("ghost-busy"),
                "a consumer with pending entries was removed: {names:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stale consumer never removed: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    consumer.stop().await.unwrap();
}

async fn consumer_names(c: &mut eventbus::RedisConn, stream: &str) -> BTreeSet<String> {
    let v: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg("g")
        .query_async(c)
        .await
        .unwrap();
    v.iter()
        .filter_map(|m| match m.get("name") {
            Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approximate_trimming_caps_streams_when_enabled() {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, "trim");
    let topology = ns.topology(1);
    let connector = RedisConnector::new(&url, RedisOptions::default()).unwrap();
    let config = PublisherConfig {
        max_len: Some(1000),
        ..Default::default()
    };
    let p = Publisher::connect(&connector, topology.clone(), config)
        .await
        .unwrap();
    for chunk in (0..5000).map(full_event).collect::<Vec<_>>().chunks(500) {
        p.publish_batch(chunk).await.unwrap();
    }
    let len: u64 = redis::cmd("XLEN")
        .arg(topology.stream_key("work_item", 0))
        .query_async(&mut conn(&url).await)
        .await
        .unwrap();
    assert!(
        (1000..2000).contains(&len),
        "stream length {len} with MAXLEN ~ 1000"
    );

    // and off by default: nothing is trimmed
    let ns2 = TestNamespace::new(&url, "notrim");
    let p2 = publisher(&url, &ns2.topology(1)).await;
    for chunk in (0..3000).map(full_event).collect::<Vec<_>>().chunks(500) {
        p2.publish_batch(chunk).await.unwrap();
    }
    let len: u64 = redis::cmd("XLEN")
        .arg(ns2.topology(1).stream_key("work_item", 0))
        .query_async(&mut conn(&url).await)
        .await
        .unwrap();
    assert_eq!(len, 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_in_flight_during_a_restart_completes() {
    let mut server = RedisServer::start();
    let url = server.url();
    let topology = eventbus::Topology::new("inflight", 2).unwrap();
    let p = publisher(&url, &topology).await;
    p.publish(&full_event(0)).await.unwrap();
    server.kill();
    let event = full_event(1);
    let pending = {
        let (p, e) = (p.clone(), event.clone());
        tokio::spawn(async move { p.publish(&e).await })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    let published = tokio::time::timeout(WAIT, pending)
        .await
        .expect("publish hung")
        .unwrap();
    let published = published.expect("publish should succeed once Redis is back");
    let stream_len: u64 = redis::cmd("XLEN")
        .arg(&published.stream)
        .query_async(&mut conn(&url).await)
        .await
        .unwrap();
    assert!(stream_len >= 1);
    drop(server);
}

#[tokio::test]
async fn bad_configs_and_events_are_refused() {
    let url = shared_redis_url();
    assert!(ConsumerConfig::new("", ["t"]).validate().is_err());
    assert!(ConsumerConfig::new("g", Vec::<String>::new())
        .validate()
        .is_err());
    let mut c = ConsumerConfig::new("g", ["t"]);
    c.concurrency = 0;
    assert!(c.validate().is_err());
    let ns = TestNamespace::new(&url, "refuse");
    let p = publisher(&url, &ns.topology(2)).await;
    let good = full_event(1);
    let refused = [
        Envelope::new("nodot", "k", serde_json::json!({})),
        Envelope::new("a.b", "", serde_json::json!({})),
        Envelope::new(
            "a.b",
            "k",
            serde_json::json!({"big": "x".repeat(2 * 1024 * 1024)}),
        ),
    ];
    for bad in &refused {
        let err = p
            .publish_batch(&[good.clone(), bad.clone()])
            .await
            .unwrap_err();
        assert!(matches!(err, eventbus::Error::InvalidEvent(_)), "{err}");
    }
    // nothing of the refused batches was written
    let len: u64 = redis::cmd("XLEN")
        .arg(ns.topology(2).stream_for(&good.event_type, &good.key))
        .query_async(&mut conn(&url).await)
        .await
        .unwrap();
    assert_eq!(len, 0);
    // and an unreachable server is reported with the password redacted
    let err = RedisConnector::new("redis://:sentinel-pw@127.0.0.1:1", RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("***") && !text.contains("sentinel-pw"),
        "{text}"
    );
}
