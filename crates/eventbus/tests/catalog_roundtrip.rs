//! Schemas on the bus, against the shared local Redis: every example of the
//! catalogue goes through publish → consume unchanged; a validating
//! publisher refuses invalid events and sends nothing of their batch; a
//! validating consumer never hands an invalid event to its handler, counts it
//! and acknowledges it past; a handler asking for v2 gets v1 events upcast.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use eventbus::{
    Catalog, Consumer, ConsumerConfig, ConsumerStats, Envelope, Error, Publisher, PublisherConfig,
    RedisConnector, RedisOptions, Validating,
};
use eventbus_testkit::conformance::{publisher, spawn_consumer};
use eventbus_testkit::{shared_redis_url, Collector, TestNamespace};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);
const TOPICS: [&str; 4] = ["work_order", "work_item", "attempt", "system"];

fn fast(group: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(group, TOPICS);
    c.block = Duration::from_millis(100);
    c.claim_idle = Duration::from_millis(500);
    c.claim_interval = Duration::from_millis(100);
    c.shutdown_timeout = Duration::from_secs(5);
    c
}

fn catalog() -> Arc<Catalog> {
    Arc::new(Catalog::embedded().unwrap())
}

/// Every example of every version, as envelopes keyed by their partition key.
fn examples(c: &Catalog) -> Vec<Envelope> {
    let mut out = Vec::new();
    for t in c.types() {
        for v in t.versions() {
            for data in v.examples() {
                let key = c.partition_key_of(t.name(), data).unwrap();
                let mut e = Envelope::new(t.name(), key, data.clone()).with_version(v.version());
                e.correlation_id = Some("catalog-test".into());
                out.push(e);
            }
        }
    }
    out
}

async fn validating_publisher(url: &str, ns: &TestNamespace, c: Arc<Catalog>) -> Publisher {
    let connector = RedisConnector::new(url, RedisOptions::default()).unwrap();
    Publisher::connect(&connector, ns.topology(4), PublisherConfig::default())
        .await
        .unwrap()
        .with_catalog(c)
}

/// (entries, pending entries of every group) over every partition of the catalogue topics.
async fn totals(url: &str, topology: &eventbus::Topology) -> (u64, u64) {
    let topics: BTreeSet<String> = TOPICS.iter().map(|t| (*t).to_owned()).collect();
    let conn = RedisConnector::new(url, RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    let stats = eventbus::admin::partition_stats(&conn, topology, &topics)
        .await
        .unwrap();
    let length = stats.iter().map(|p| p.length).sum();
    let pending = stats
        .iter()
        .flat_map(|p| &p.groups)
        .map(|g| g.pending)
        .sum();
    (length, pending)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_round_trips_and_v2_readers_get_v1_upcast() {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, "catalog-rt");
    let topology = ns.topology(4);
    let c = catalog();
    let events = examples(&c);

    let as_published = Collector::new();
    let latest = Collector::new();
    let first = spawn_consumer(
        &url,
        &topology,
        fast("as-published"),
        Validating::new(c.clone(), as_published.clone()),
    );
    let second = spawn_consumer(
        &url,
        &topology,
        fast("latest"),
        Validating::new(c.clone(), latest.clone()).accept("work_item.processing_failed", [2]),
    );
    let p = validating_publisher(&url, &ns, c.clone()).await;
    p.publish_batch(&events)
        .await
        .expect("every example is valid");

    let n = events.len();
    assert!(
        as_published.wait_for(WAIT, |d| d.len() >= n).await,
        "all delivered"
    );
    assert!(
        latest.wait_for(WAIT, |d| d.len() >= n).await,
        "all delivered"
    );
    first.stop().await.unwrap();
    second.stop().await.unwrap();

    let sent: HashMap<Uuid, &Envelope> = events.iter().map(|e| (e.id, e)).collect();
    let got: HashMap<Uuid, Envelope> = as_published
        .deliveries()
        .into_iter()
        .map(|d| (d.envelope.id, d.envelope))
        .collect();
    assert_eq!(got.len(), n);
    for (id, e) in &got {
        assert_eq!(e, sent[id], "delivered exactly as published");
    }

    let failed_v1: Vec<&Envelope> = events
        .iter()
        .filter(|e| e.event_type == "work_item.processing_failed" && e.version == 1)
        .collect();
    assert!(!failed_v1.is_empty());
    let upcast: HashMap<Uuid, Envelope> = latest
        .deliveries()
        .into_iter()
        .map(|d| (d.envelope.id, d.envelope))
        .collect();
    for e in failed_v1 {
        let seen = &upcast[&e.id];
        assert_eq!(seen.version, 2, "upcast for the v2 reader");
        assert!(seen.data["error"]["category"].is_string());
        c.validate(seen).unwrap();
    }
    for e in events
        .iter()
        .filter(|e| e.event_type != "work_item.processing_failed")
    {
        assert_eq!(&upcast[&e.id], e, "other types untouched");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validating_publisher_refuses_the_batch_and_lists_every_error() {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, "catalog-pub");
    let c = catalog();
    let p = validating_publisher(&url, &ns, c.clone()).await;
    let good = examples(&c).remove(0);
    let bad = Envelope::new(
        "work_order.created",
        "wo-1",
        json!({"id": "wo-2", "kind": "Bad Kind", "title": "", "status": "done"}),
    );
    let err = p.publish_batch(&[good.clone(), bad]).await.unwrap_err();
    let Error::Schema(errors) = &err else {
        panic!("expected a schema error, got {err}");
    };
    let pointers: BTreeSet<&str> = errors.errors.iter().map(|e| e.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        BTreeSet::from(["/data", "/data/kind", "/data/title", "/data/status", "/key"]),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("invalid event: work_order.created v1: "),
        "{err}"
    );
    assert_eq!(
        totals(&url, &ns.topology(4)).await.0,
        0,
        "nothing of the batch was sent"
    );

    for unknown in [
        Envelope::new("work_order.deleted", "wo-1", json!({})),
        good.clone().with_version(9),
    ] {
        let err = p.publish(&unknown).await.unwrap_err();
        assert!(matches!(err, Error::Schema(_)), "{err}");
    }
    p.publish(&good).await.unwrap();
    assert_eq!(totals(&url, &ns.topology(4)).await.0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_never_reach_the_handler_and_are_acked_past() {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, "catalog-con");
    let topology = ns.topology(4);
    let c = catalog();
    let collector = Collector::new();
    let connector = RedisConnector::new(&url, RedisOptions::default()).unwrap();
    let consumer = Consumer::new(
        connector,
        topology.clone(),
        fast("g"),
        Validating::new(c.clone(), collector.clone()),
    )
    .unwrap();
    let stats = consumer.stats();
    let stop = CancellationToken::new();
    let running = tokio::spawn(consumer.run(stop.clone()));
    // Published without validation, as a foreign producer could.
    let raw = publisher(&url, &topology).await;
    let valid = examples(&c);
    let invalid = vec![
        Envelope::new("work_order.created", "wo-1", json!({"id": "wo-1"})),
        Envelope::new("work_order.deleted", "wo-1", json!({"id": "wo-1"})),
        {
            let mut e = valid[0].clone().with_version(5);
            e.id = Uuid::now_v7();
            e
        },
        {
            let mut e = valid[1].clone();
            e.id = Uuid::now_v7();
            e.key = "another-key".into();
            e
        },
    ];
    let mut all = valid.clone();
    all.splice(3..3, invalid.clone());
    raw.publish_batch(&all).await.unwrap();

    assert!(collector.wait_for(WAIT, |d| d.len() >= valid.len()).await);
    let deadline = tokio::time::Instant::now() + WAIT;
    while ConsumerStats::get(&stats.rejected) < invalid.len() as u64
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stopping flushes the batched acknowledgements.
    stop.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(ConsumerStats::get(&stats.rejected), invalid.len() as u64);
    let seen: BTreeSet<Uuid> = collector.ids().into_iter().collect();
    assert_eq!(seen, valid.iter().map(|e| e.id).collect());
    for e in &invalid {
        assert!(
            !seen.contains(&e.id),
            "{} reached the handler",
            e.event_type
        );
    }
    let (_, pending) = totals(&url, &topology).await;
    assert_eq!(
        pending, 0,
        "invalid events are dead-lettered, then acknowledged"
    );
}
