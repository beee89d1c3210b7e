//! Handler layers composed by `Consumer::builder`: a layer of the user's own
//! sees every delivery in order, optional layers switch on and off, and the
//! built-in order holds (yours inside the attempt timeout, outside
//! validation). Real Redis and PostgreSQL.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus::layer::{InboxLayer, Layer, MaxEventsLayer, ValidateLayer};
use eventbus::pg::PoolGate;
use eventbus::{
    Backoff, Catalog, Consumer, ConsumerConfig, ConsumerMode, ConsumerStats, Delivery, Envelope,
    Handler, HandlerError, RedisConnector, RedisOptions, Topology,
};
use eventbus_testkit::conformance::{full_event, publisher, Running};
use eventbus_testkit::{fast_config, shared_redis_url, Collector, TestNamespace, TestSchema};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// A layer of the user's own: records each delivery it sees, and can hold
/// the first attempt of one event for a while.
#[derive(Clone, Default)]
struct RecordLayer {
    seen: Arc<Mutex<Vec<(Uuid, bool)>>>,
    hold_first: Option<(Uuid, Duration)>,
}

impl RecordLayer {
    fn seen(&self) -> Vec<(Uuid, bool)> {
        self.seen.lock().unwrap().clone()
    }
}

impl<H> Layer<H> for RecordLayer {
    type Service = Recorded<H>;

    fn layer(&self, inner: H) -> Recorded<H> {
        Recorded {
            inner,
            layer: self.clone(),
        }
    }
}

struct Recorded<H> {
    inner: H,
    layer: RecordLayer,
}

impl<H: Handler> Handler for Recorded<H> {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let id = delivery.envelope.id;
        self.layer
            .seen
            .lock()
            .unwrap()
            .push((id, delivery.redelivered));
        if let Some((held, pause)) = self.layer.hold_first {
            if held == id && !delivery.redelivered {
                tokio::time::sleep(pause).await;
            }
        }
        self.inner.handle(delivery).await
    }
}

fn connector(url: &str) -> RedisConnector {
    RedisConnector::new(url, RedisOptions::default()).unwrap()
}

fn config(mode: ConsumerMode) -> ConsumerConfig {
    let mut c = fast_config("g", &["work_item"], mode);
    c.retry.backoff = Backoff::Schedule(vec![Duration::from_millis(20)]);
    c
}

fn builder(
    url: &str,
    topology: &Topology,
    config: ConsumerConfig,
) -> eventbus::ConsumerBuilder<eventbus::layer::Identity> {
    Consumer::builder(connector(url), topology.clone(), config)
}

/// The catalogue's own example of `work_item.processing_completed` v1.
fn catalogue_example() -> Envelope {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/work_item.processing_completed/v1.json"
    );
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let data = schema["examples"][0].clone();
    let key = data["work_item_id"].as_str().unwrap().to_owned();
    Envelope::new("work_item.processing_completed", key, data)
}

fn catalog() -> Arc<Catalog> {
    Arc::new(Catalog::embedded().unwrap())
}

/// Waits until `cond` holds on the consumer's counters.
async fn until(stats: &ConsumerStats, cond: impl Fn(&ConsumerStats) -> bool) -> bool {
    Collector::wait_until(WAIT, || cond(stats)).await
}

/// Publishes `events` in one batch.
async fn publish(url: &str, topology: &Topology, events: &[Envelope]) {
    publisher(url, topology)
        .await
        .publish_batch(events)
        .await
        .unwrap();
}

fn get(c: &std::sync::atomic::AtomicU64) -> u64 {
    ConsumerStats::get(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_layer_sees_every_delivery_in_order() {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, "layer-order");
    let topology = ns.topology(1);
    let events: Vec<Envelope> = (0..30).map(full_event).collect();
    let failing = events[10].id;
    // The handler fails event 10 once; ordered mode retries it in place.
    let handler = Collector::failing(move |d, previous| d.envelope.id == failing && previous == 0);
    let layer = RecordLayer::default();
    let consumer = builder(&url, &topology, config(ConsumerMode::Ordered))
        .layer(layer.clone())
        .handler(handler.clone())
        .unwrap();
    let running = Running::spawn(consumer);
    publish(&url, &topology, &events).await;
    assert!(handler.wait_for(WAIT, |d| d.len() == 30).await);
    running.stop().await.unwrap();

    let mut expected: Vec<(Uuid, bool)> = events.iter().map(|e| (e.id, false)).collect();
    expected.insert(11, (failing, true));
    assert_eq!(
        layer.seen(),
        expected,
        "the layer sees every attempt, in stream order"
    );
    let handled: Vec<Uuid> = handler.deliveries().iter().map(|d| d.envelope.id).collect();
    assert_eq!(handled, events.iter().map(|e| e.id).collect::<Vec<_>>());
    ns.cleanup();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_on_and_off_and_a_user_layer_outside_it() {
    let url = shared_redis_url();
    let invalid = Envelope::new(
        "work_item.processing_completed",
        "wi-x",
        serde_json::json!({}),
    );
    let valid = catalogue_example();
    for on in [true, false] {
        let ns = TestNamespace::new(&url, "layer-validate");
        let topology = ns.topology(2);
        let handler = Collector::new();
        let layer = RecordLayer::default();
        let consumer = builder(&url, &topology, config(ConsumerMode::Unordered))
            .layer(layer.clone())
            .validate(on.then(|| ValidateLayer::new(catalog())))
            .handler(handler.clone())
            .unwrap();
        let stats = consumer.stats();
        let running = Running::spawn(consumer);
        publish(&url, &topology, &[invalid.clone(), valid.clone()]).await;
        assert!(
            until(&stats, |s| get(&s.acked) == 2).await,
            "validation {on}"
        );
        running.stop().await.unwrap();
        let handled = handler.ids();
        if on {
            assert_eq!(
                handled,
                [valid.id].into(),
                "the invalid event never reaches the handler"
            );
            assert_eq!(get(&stats.rejected), 1);
            assert_eq!(get(&stats.dead_lettered), 1);
        } else {
            assert_eq!(handled, [valid.id, invalid.id].into());
            assert_eq!(get(&stats.rejected), 0);
        }
        // Yours sit outside validation: they see the invalid event too.
        let seen: std::collections::HashSet<Uuid> =
            layer.seen().into_iter().map(|(id, _)| id).collect();
        assert_eq!(seen, [valid.id, invalid.id].into(), "validation {on}");
        ns.cleanup();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_user_layer_on_and_off() {
    let url = shared_redis_url();
    for on in [true, false] {
        let ns = TestNamespace::new(&url, "layer-option");
        let topology = ns.topology(2);
        let handler = Collector::new();
        let layer = RecordLayer::default();
        let consumer = builder(&url, &topology, config(ConsumerMode::Ordered))
            .option_layer(on.then(|| layer.clone()))
            .handler(handler.clone())
            .unwrap();
        let running = Running::spawn(consumer);
        let events: Vec<Envelope> = (0..5).map(full_event).collect();
        publish(&url, &topology, &events).await;
        assert!(handler.wait_for(WAIT, |d| d.len() == 5).await);
        running.stop().await.unwrap();
        assert_eq!(layer.seen().len(), if on { 5 } else { 0 }, "layer {on}");
        ns.cleanup();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_events_on_and_off() {
    let url = shared_redis_url();
    for limit in [Some(3u64), None] {
        let ns = TestNamespace::new(&url, "layer-max");
        let topology = ns.topology(1);
        let handler = Collector::new();
        let reached = CancellationToken::new();
        let consumer = builder(&url, &topology, config(ConsumerMode::Unordered))
            .max_events(limit.map(|n| MaxEventsLayer::new(n, reached.clone())))
            .handler(handler.clone())
            .unwrap();
        let running = Running::spawn(consumer);
        let events: Vec<Envelope> = (0..8).map(full_event).collect();
        publish(&url, &topology, &events).await;
        match limit {
            Some(n) => {
                assert!(Collector::wait_until(WAIT, || reached.is_cancelled()).await);
                // Give the consumer a moment to (wrongly) handle more.
                tokio::time::sleep(Duration::from_millis(300)).await;
                assert_eq!(handler.len() as u64, n, "no more than the limit succeed");
            }
            None => {
                assert!(handler.wait_for(WAIT, |d| d.len() == 8).await);
                assert!(!reached.is_cancelled());
            }
        }
        running.stop().await.unwrap();
        ns.cleanup();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_on_and_off() {
    let url = shared_redis_url();
    let db = TestSchema::new("layer_inbox").await;
    let event = full_event(7);
    for on in [true, false] {
        let ns = TestNamespace::new(&url, "layer-inbox");
        let topology = ns.topology(2);
        let handler = Collector::new();
        let inbox = InboxLayer::new(PoolGate::new(db.pool().clone()), db.schema().clone());
        let consumer = builder(&url, &topology, config(ConsumerMode::Unordered))
            .inbox(on.then(|| inbox.clone()))
            .handler(handler.clone())
            .unwrap();
        let stats = consumer.stats();
        let running = Running::spawn(consumer);
        let p = publisher(&url, &topology).await;
        // The same event twice (a producer's retry, or a replay).
        p.publish(&event).await.unwrap();
        assert!(until(&stats, |s| get(&s.acked) == 1).await);
        p.publish(&event).await.unwrap();
        assert!(until(&stats, |s| get(&s.acked) == 2).await);
        running.stop().await.unwrap();
        if on {
            assert_eq!(handler.len(), 1, "the duplicate is skipped");
            assert_eq!(ConsumerStats::get(&inbox.stats().duplicates), 1);
        } else {
            assert_eq!(handler.len(), 2);
        }
        // The next round uses a fresh group on a fresh namespace, but the
        // inbox table is shared: start it empty.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {}",
            db.table("eventbus_inbox")
        )))
        .execute(db.pool())
        .await
        .unwrap();
        ns.cleanup();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attempt_timeout_bounds_user_layers() {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, "layer-timeout");
    let topology = ns.topology(1);
    let event = full_event(3);
    let mut cfg = config(ConsumerMode::Ordered);
    cfg.retry.attempt_timeout = Some(Duration::from_millis(200));
    let handler = Collector::new();
    let layer = RecordLayer {
        hold_first: Some((event.id, Duration::from_secs(20))),
        ..Default::default()
    };
    let consumer = builder(&url, &topology, cfg)
        .layer(layer.clone())
        .handler(handler.clone())
        .unwrap();
    let stats = consumer.stats();
    let running = Running::spawn(consumer);
    publish(&url, &topology, std::slice::from_ref(&event)).await;
    // The held first attempt is cut off by the timeout, then retried.
    assert!(
        handler
            .wait_for(Duration::from_secs(10), |d| d.len() == 1)
            .await
    );
    running.stop().await.unwrap();
    assert_eq!(get(&stats.retried), 1);
    assert_eq!(layer.seen(), vec![(event.id, false), (event.id, true)]);
    ns.cleanup();
}
