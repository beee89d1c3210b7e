//! The conformance suite: scenarios every transport and consumer mode must
//! pass (after watermill's `pubsub/tests`). Each scenario is an async
//! function taking a [`Suite`] that says how to build consumers; a test file
//! calls each one from a `#[tokio::test]`.
//!
//! Scenarios use their own [`TestNamespace`]; the ones that restart Redis
//! spawn a private [`RedisServer`].

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus::{
    Consumer, ConsumerConfig, ConsumerMode, Envelope, Handler, Publisher, PublisherConfig,
    RedisConnector, RedisOptions, Topology,
};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{Collector, RedisServer, TestNamespace};

/// How a suite run builds its consumers (the mode under test).
#[derive(Clone)]
pub struct Suite {
    /// Redis for scenarios that do not restart the server.
    pub url: String,
    /// Partitions per topic.
    pub partitions: u32,
    /// Applied to every consumer config (mode, timings).
    pub tune: Arc<dyn Fn(&mut ConsumerConfig) + Send + Sync>,
}

impl std::fmt::Debug for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suite")
            .field("url", &self.url)
            .field("partitions", &self.partitions)
            .finish()
    }
}

impl Suite {
    /// Competing consumers with test-friendly timings (fast claims).
    pub fn unordered(url: impl Into<String>) -> Self {
        Suite {
            url: url.into(),
            partitions: 4,
            tune: Arc::new(|c: &mut ConsumerConfig| {
                c.mode = ConsumerMode::Unordered;
                c.block = Duration::from_millis(200);
                c.claim_idle = Duration::from_millis(300);
                c.claim_interval = Duration::from_millis(100);
                c.shutdown_timeout = Duration::from_secs(5);
                c.trim = Some(crate::fast_trim());
            }),
        }
    }

    /// Ordered members (partitions leased, one entry at a time) with
    /// test-friendly timings: 100 ms heartbeats, a 1 s session timeout, a
    /// 20 ms retry delay.
    pub fn ordered(url: impl Into<String>) -> Self {
        Suite {
            url: url.into(),
            partitions: 4,
            tune: Arc::new(|c: &mut ConsumerConfig| {
                c.mode = ConsumerMode::Ordered;
                c.block = Duration::from_millis(200);
                c.heartbeat_interval = Duration::from_millis(100);
                c.session_timeout = Duration::from_secs(1);
                c.retry.backoff = eventbus::Backoff::Schedule(vec![Duration::from_millis(20)]);
                c.shutdown_timeout = Duration::from_secs(5);
                c.trim = Some(crate::fast_trim());
            }),
        }
    }

    fn config(&self, group: &str, topics: &[&str]) -> ConsumerConfig {
        let mut c = ConsumerConfig::new(group, topics.iter().copied());
        (self.tune)(&mut c);
        c
    }
}

/// A running consumer: stop it gracefully or crash it.
#[derive(Debug)]
pub struct Running {
    token: CancellationToken,
    task: JoinHandle<eventbus::Result<()>>,
}

impl Running {
    /// Runs a built consumer on its own task.
    pub fn spawn<H: Handler>(consumer: Consumer<H>) -> Running {
        let token = CancellationToken::new();
        let task = tokio::spawn(consumer.run(token.clone()));
        Running { token, task }
    }

    /// Graceful stop: waits for the drain and returns the run's result.
    pub async fn stop(self) -> eventbus::Result<()> {
        self.token.cancel();
        self.task.await.expect("consumer task panicked")
    }

    /// Simulates a crash: the task is aborted, nothing is acked or drained.
    pub fn crash(self) {
        self.task.abort();
    }
}

/// Starts a consumer on its own task.
pub fn spawn_consumer<H: Handler>(
    url: &str,
    topology: &Topology,
    config: ConsumerConfig,
    handler: H,
) -> Running {
    let connector = RedisConnector::new(url, RedisOptions::default()).expect("valid url");
    let consumer =
        Consumer::new(connector, topology.clone(), config, handler).expect("valid consumer");
    let token = CancellationToken::new();
    let task = tokio::spawn(consumer.run(token.clone()));
    Running { token, task }
}

/// A publisher for a topology.
pub async fn publisher(url: &str, topology: &Topology) -> Publisher {
    let connector = RedisConnector::new(url, RedisOptions::default()).expect("valid url");
    Publisher::connect(&connector, topology.clone(), PublisherConfig::default())
        .await
        .expect("publisher connects")
}

/// An event with every envelope field set.
pub fn full_event(i: usize) -> Envelope {
    let key = format!("wi-{}", i % 37);
    let mut e = Envelope::new(
        "work_item.processing_completed",
        key.clone(),
        json!({"work_item_id": key, "seq": i, "result": {"summary": "ok", "bytes": i * 3}, "tags": ["a", "b"]}),
    )
    .with_source("conformance")
    .with_header("tenant", "acme")
    .with_header("attempt", i.to_string());
    e.correlation_id = Some(format!("corr-{i}"));
    e.causation_id = Some(Uuid::now_v7().to_string());
    e.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    e
}

const WAIT: Duration = Duration::from_secs(60);

/// 1,000 events round-trip with every envelope field intact.
pub async fn round_trip(suite: &Suite) {
    let ns = TestNamespace::new(&suite.url, "roundtrip");
    let topology = ns.topology(suite.partitions);
    let collector = Collector::new();
    let c = spawn_consumer(
        &suite.url,
        &topology,
        suite.config("g", &["work_item"]),
        collector.clone(),
    );
    let p = publisher(&suite.url, &topology).await;
    let events: Vec<Envelope> = (0..1000).map(full_event).collect();
    for chunk in events.chunks(100) {
        p.publish_batch(chunk).await.expect("publish");
    }
    assert!(
        collector.wait_for(WAIT, |d| distinct(d) >= 1000).await,
        "not all 1000 events arrived"
    );
    c.stop().await.expect("clean stop");
    let got: BTreeMap<Uuid, Envelope> = collector
        .deliveries()
        .into_iter()
        .map(|d| (d.envelope.id, d.envelope))
        .collect();
    for e in &events {
        assert_eq!(got.get(&e.id), Some(e), "event {} changed in transit", e.id);
    }
}

fn distinct(d: &[eventbus::Delivery]) -> usize {
    d.iter()
        .map(|d| d.envelope.id)
        .collect::<HashSet<_>>()
        .len()
}

/// 20 publishers × 50 events, 5 consumers in one group: every id consumed.
pub async fn competing_consumers(suite: &Suite) {
    let ns = TestNamespace::new(&suite.url, "competing");
    let topology = ns.topology(suite.partitions);
    let collector = Collector::new();
    let consumers: Vec<Running> = (0..5)
        .map(|_| {
            spawn_consumer(
                &suite.url,
                &topology,
                suite.config("g", &["work_item"]),
                collector.clone(),
            )
        })
        .collect();
    let published = Arc::new(Mutex::new(HashSet::new()));
    let mut publishers = Vec::new();
    for p in 0..20 {
        let (url, topology, published) = (suite.url.clone(), topology.clone(), published.clone());
        publishers.push(tokio::spawn(async move {
            let publisher = publisher(&url, &topology).await;
            for i in 0..50 {
                let e = full_event(p * 1000 + i);
                publisher.publish(&e).await.expect("publish");
                published.lock().unwrap().insert(e.id);
            }
        }));
    }
    for p in publishers {
        p.await.expect("publisher task");
    }
    let want = published.lock().unwrap().clone();
    assert_eq!(want.len(), 1000);
    assert!(
        collector
            .wait_for(WAIT, |d| distinct(d) >= want.len())
            .await,
        "lost events: {} of {} arrived",
        collector.ids().len(),
        want.len()
    );
    assert_eq!(collector.ids(), want);
    let by_consumer: HashSet<String> = collector
        .deliveries()
        .iter()
        .map(|d| d.consumer.clone())
        .collect();
    assert!(
        by_consumer.len() > 1,
        "the work was not shared: {by_consumer:?}"
    );
    for c in consumers {
        c.stop().await.expect("clean stop");
    }
}

/// Two groups each receive every event.
pub async fn two_groups(suite: &Suite) {
    let ns = TestNamespace::new(&suite.url, "groups");
    let topology = ns.topology(suite.partitions);
    let (a, b) = (Collector::new(), Collector::new());
    let ca = spawn_consumer(
        &suite.url,
        &topology,
        suite.config("group-a", &["work_item"]),
        a.clone(),
    );
    let cb = spawn_consumer(
        &suite.url,
        &topology,
        suite.config("group-b", &["work_item"]),
        b.clone(),
    );
    let p = publisher(&suite.url, &topology).await;
    let events: Vec<Envelope> = (0..300).map(full_event).collect();
    p.publish_batch(&events).await.expect("publish");
    let want: HashSet<Uuid> = events.iter().map(|e| e.id).collect();
    assert!(
        a.wait_for(WAIT, |d| distinct(d) >= 300).await,
        "group a incomplete"
    );
    assert!(
        b.wait_for(WAIT, |d| distinct(d) >= 300).await,
        "group b incomplete"
    );
    assert_eq!(a.ids(), want);
    assert_eq!(b.ids(), want);
    ca.stop().await.expect("stop a");
    cb.stop().await.expect("stop b");
}

/// A handler that fails twice per event still ends with every event handled.
pub async fn failing_handler(suite: &Suite) {
    let ns = TestNamespace::new(&suite.url, "failing");
    let topology = ns.topology(suite.partitions);
    let collector = Collector::failing(|_, previous| previous < 2);
    let c = spawn_consumer(
        &suite.url,
        &topology,
        suite.config("g", &["work_item"]),
        collector.clone(),
    );
    let p = publisher(&suite.url, &topology).await;
    let events: Vec<Envelope> = (0..200).map(full_event).collect();
    p.publish_batch(&events).await.expect("publish");
    assert!(
        collector.wait_for(WAIT, |d| distinct(d) >= 200).await,
        "only {} of 200 handled after failures",
        collector.ids().len()
    );
    c.stop().await.expect("clean stop");
}

/// Closing and reopening consumers mid-stream loses nothing.
pub async fn close_and_reopen(suite: &Suite) {
    let ns = TestNamespace::new(&suite.url, "reopen");
    let topology = ns.topology(suite.partitions);
    let collector = Collector::new().with_delay(Duration::from_millis(1));
    let p = publisher(&suite.url, &topology).await;
    let events: Vec<Envelope> = (0..2000).map(full_event).collect();
    let want: HashSet<Uuid> = events.iter().map(|e| e.id).collect();
    let feeder = {
        let (p, events) = (p.clone(), events.clone());
        tokio::spawn(async move {
            for chunk in events.chunks(50) {
                p.publish_batch(chunk).await.expect("publish");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    for round in 0..4 {
        let mut cfg = suite.config("g", &["work_item"]);
        cfg.concurrency = 8;
        let c = spawn_consumer(&suite.url, &topology, cfg, collector.clone());
        tokio::time::sleep(Duration::from_millis(150 + 50 * round)).await;
        c.stop().await.expect("clean stop");
    }
    feeder.await.expect("feeder");
    let c = spawn_consumer(
        &suite.url,
        &topology,
        suite.config("g", &["work_item"]),
        collector.clone(),
    );
    assert!(
        collector
            .wait_for(WAIT, |d| distinct(d) >= want.len())
            .await,
        "lost events across reopen: {} of {}",
        collector.ids().len(),
        want.len()
    );
    assert_eq!(collector.ids(), want);
    c.stop().await.expect("clean stop");
}

/// A consumer that stops without acking (crash) has its entries claimed by another.
pub async fn claim_from_crashed(suite: &Suite) {
    let ns = TestNamespace::new(&suite.url, "claim");
    let topology = ns.topology(suite.partitions);
    // The first consumer takes entries and never finishes them.
    let stuck = Collector::new().with_delay(Duration::from_secs(3600));
    let c1 = spawn_consumer(
        &suite.url,
        &topology,
        suite.config("g", &["work_item"]),
        stuck.clone(),
    );
    let p = publisher(&suite.url, &topology).await;
    let events: Vec<Envelope> = (0..100).map(full_event).collect();
    p.publish_batch(&events).await.expect("publish");
    // wait until the stuck consumer holds entries
    let conn = RedisConnector::new(&suite.url, RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats =
            eventbus::admin::partition_stats(&conn, &topology, &["work_item".to_owned()].into())
                .await
                .unwrap();
        let pending: u64 = stats
            .iter()
            .flat_map(|p| &p.groups)
            .map(|g| g.pending)
            .sum();
        if pending == 100 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck consumer never read"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c1.crash();
    let rescuer = Collector::new();
    let c2 = spawn_consumer(
        &suite.url,
        &topology,
        suite.config("g", &["work_item"]),
        rescuer.clone(),
    );
    assert!(
        rescuer.wait_for(WAIT, |d| distinct(d) >= 100).await,
        "only {} of 100 claimed",
        rescuer.ids().len()
    );
    assert!(rescuer.deliveries().iter().all(|d| d.redelivered));
    c2.stop().await.expect("clean stop");
}

/// The private Redis (AOF, `appendfsync always`) is killed and restarted
/// mid-run: publishing and consuming resume and no event whose publish was
/// acknowledged is lost.
pub async fn server_restart(suite: &Suite) {
    let mut server = RedisServer::start();
    let url = server.url();
    let topology = Topology::new("restart", suite.partitions).unwrap();
    let collector = Collector::new();
    let c = spawn_consumer(
        &url,
        &topology,
        suite.config("g", &["work_item"]),
        collector.clone(),
    );
    let p = publisher(&url, &topology).await;
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let stop = CancellationToken::new();
    let feeder = {
        let (p, acked, stop) = (p.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.is_cancelled() {
                let batch: Vec<Envelope> = (i..i + 10).map(full_event).collect();
                i += 10;
                if p.publish_batch(&batch).await.is_ok() {
                    acked.lock().unwrap().extend(batch.iter().map(|e| e.id));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .expect("restart task");
    let before = acked.lock().unwrap().len();
    let resumed = tokio::time::timeout(WAIT, async {
        while acked.lock().unwrap().len() < before + 50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        resumed.is_ok(),
        "publishing did not resume after the restart"
    );
    stop.cancel();
    feeder.await.expect("feeder");
    let want = acked.lock().unwrap().clone();
    let all_arrived = collector
        .wait_for(WAIT, |d| {
            let got: HashSet<Uuid> = d.iter().map(|d| d.envelope.id).collect();
            want.iter().all(|id| got.contains(id))
        })
        .await;
    assert!(
        all_arrived,
        "acknowledged events lost: {} of {} consumed",
        collector.ids().intersection(&want).count(),
        want.len()
    );
    c.stop().await.expect("clean stop");
    drop(server);
}

/// An event of `key` carrying its per-key sequence number in `data.seq`.
pub fn keyed_event(key: &str, seq: usize) -> Envelope {
    Envelope::new(
        "work_item.progressed",
        key.to_owned(),
        json!({"work_item_id": key, "seq": seq}),
    )
}

/// `(key, seq)` of each delivery, in handling order.
fn key_seqs(d: &[eventbus::Delivery]) -> Vec<(String, u64)> {
    d.iter()
        .map(|d| {
            let seq = d.envelope.data["seq"].as_u64().expect("seq in data");
            (d.envelope.key.clone(), seq)
        })
        .collect()
}

/// Ordered mode: 20 keys × 100 events published while three members join
/// one after the other and handlers fail now and then; every key's events
/// are handled exactly in publish order, each once (clean handoffs repeat
/// nothing).
pub async fn order_per_key(suite: &Suite) {
    let ns = TestNamespace::new(&suite.url, "order");
    let topology = ns.topology(suite.partitions);
    let collector = Collector::failing(|d, previous| {
        previous == 0 && d.envelope.data["seq"].as_u64().unwrap_or(0) % 7 == 3
    });
    let p = publisher(&suite.url, &topology).await;
    let keys: Vec<String> = (0..20).map(|k| format!("key-{k}")).collect();
    let feeder = {
        let (p, keys) = (p.clone(), keys.clone());
        tokio::spawn(async move {
            for seq in 0..100 {
                let batch: Vec<Envelope> = keys.iter().map(|k| keyed_event(k, seq)).collect();
                p.publish_batch(&batch).await.expect("publish");
                if seq % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(spawn_consumer(
            &suite.url,
            &topology,
            suite.config("g", &["work_item"]),
            collector.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    feeder.await.expect("feeder");
    assert!(
        collector.wait_for(WAIT, |d| distinct(d) >= 2000).await,
        "only {} of 2000 handled",
        collector.ids().len()
    );
    for m in members {
        m.stop().await.expect("clean stop");
    }
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (k, seq) in key_seqs(&collector.deliveries()) {
        per_key.entry(k).or_default().push(seq);
    }
    for (k, seqs) in per_key {
        assert_eq!(seqs, (0..100).collect::<Vec<u64>>(), "key {k} out of order");
    }
}

/// Ordered mode: an entry whose handler keeps failing holds back the rest
/// of its partition (and only it); once it succeeds, the partition goes on
/// in order.
pub async fn failing_entry_blocks_only_its_partition(suite: &Suite) {
    let ns = TestNamespace::new(&suite.url, "blocks");
    let topology = ns.topology(suite.partitions);
    let healed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poison = "poison-key".to_owned();
    let collector = {
        let (healed, poison) = (healed.clone(), poison.clone());
        Collector::failing(move |d, _| {
            d.envelope.key == poison
                && d.envelope.data["seq"] == 0
                && !healed.load(std::sync::atomic::Ordering::SeqCst)
        })
    };
    // Attempts enough to outlast the test: here the entry must block, not
    // go to dead letters (that path has its own tests).
    let mut config = suite.config("g", &["work_item"]);
    config.retry.max_attempts = 100_000;
    let c = spawn_consumer(&suite.url, &topology, config, collector.clone());
    let p = publisher(&suite.url, &topology).await;
    let poison_partition = topology.partition_of(&poison);
    let others: Vec<String> = (0..200)
        .map(|i| format!("k-{i}"))
        .filter(|k| topology.partition_of(k) != poison_partition)
        .take(20)
        .collect();
    let mut events: Vec<Envelope> = (0..5).map(|s| keyed_event(&poison, s)).collect();
    events.extend(others.iter().map(|k| keyed_event(k, 0)));
    p.publish_batch(&events).await.expect("publish");
    assert!(
        collector.wait_for(WAIT, |d| d.len() >= others.len()).await,
        "other partitions were held up"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        collector
            .deliveries()
            .iter()
            .all(|d| d.envelope.key != poison),
        "an event after the failing one was handled first"
    );
    healed.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        collector
            .wait_for(WAIT, |d| d
                .iter()
                .filter(|d| d.envelope.key == poison)
                .count()
                >= 5)
            .await,
        "the partition did not go on after the failing entry succeeded"
    );
    let seqs: Vec<u64> = key_seqs(&collector.deliveries())
        .into_iter()
        .filter(|(k, _)| *k == poison)
        .map(|(_, s)| s)
        .collect();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
    c.stop().await.expect("clean stop");
}
