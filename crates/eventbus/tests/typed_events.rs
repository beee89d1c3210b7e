//! Typed events against the catalogue and the shared local Redis and
//! PostgreSQL: the hand-written types match `schemas/` (every example
//! decodes and re-encodes to valid data, every counter-example is refused,
//! name, version and key field agree with the manifest); every type makes
//! the typed round trip `Publisher::send` → `Router`, and through the outbox;
//! the router upcasts v1 to the version its handler asks for and sends
//! unknown types where its policy says.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus::deadletter::{DeadLetter, DeadLetterFilter, DeadLetterStore};
use eventbus::events::*;
use eventbus::pg::{Outbox, OutboxConfig, Relay, RelayConfig};
use eventbus::{
    Catalog, ConsumerConfig, ConsumerMode, ConsumerStats, Delivery, Event, RedisConnector,
    RedisOptions, Router, Topology, UnknownTypes,
};
use eventbus_testkit::conformance::{publisher, spawn_consumer};
use eventbus_testkit::{fast_config, shared_redis_url, Collector, TestNamespace, TestSchema};
use jsonschema::error::ValidationErrorKind;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);
const TOPICS: [&str; 4] = ["work_order", "work_item", "attempt", "system"];

/// Calls `$m!(Type)` for every type of the catalogue, every version.
macro_rules! each_type {
    ($m:ident) => {
        each_latest_type!($m);
        $m!(WorkItemProcessingFailedV1);
    };
}

/// Calls `$m!(Type)` for the latest version of every catalogue type.
macro_rules! each_latest_type {
    ($m:ident) => {
        $m!(WorkOrderCreated);
        $m!(WorkOrderStatusChanged);
        $m!(WorkItemProcessingStarted);
        $m!(WorkItemProcessingCompleted);
        $m!(WorkItemProcessingFailed);
        $m!(AttemptStarted);
        $m!(AttemptCompleted);
        $m!(AttemptFailed);
        $m!(AttemptRetried);
        $m!(SystemHealthCheck);
        $m!(SystemError);
        $m!(SystemMaintenance);
    };
}

fn catalog() -> Arc<Catalog> {
    Arc::new(Catalog::embedded().unwrap())
}

fn fast(group: &str) -> ConsumerConfig {
    fast_config(group, &TOPICS, ConsumerMode::Ordered)
}

/// The shared Redis's URL, a namespace on it, its topology and the catalogue.
fn setup(prefix: &str, partitions: u32) -> (String, TestNamespace, Topology, Arc<Catalog>) {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, prefix);
    let topology = ns.topology(partitions);
    (url, ns, topology, catalog())
}

/// The examples of `E`'s schema, decoded as `E`.
fn examples<E: Event>(c: &Catalog) -> Vec<E> {
    let schema = c.schema(E::TYPE, E::VERSION).expect("type in catalogue");
    schema
        .examples()
        .iter()
        .map(|d| serde_json::from_value(d.clone()).expect("example decodes"))
        .collect()
}

// ---------------------------------------------------------------------------
// The types match the schemas.

/// Validation failures a Rust type cannot express: string patterns and
/// lengths, integer minimums above zero, string formats other than
/// `date-time` and `uuid` (which `chrono` and `uuid` check).
fn beyond_the_type(kind: &ValidationErrorKind) -> bool {
    match kind {
        ValidationErrorKind::Pattern { .. }
        | ValidationErrorKind::MinLength { .. }
        | ValidationErrorKind::MaxLength { .. }
        | ValidationErrorKind::Minimum { .. }
        | ValidationErrorKind::PropertyNames { .. } => true,
        ValidationErrorKind::Format { format } => format != "date-time" && format != "uuid",
        _ => false,
    }
}

/// Checks one type against its schema; returns its (type, version).
fn matches_schema<E: Event + PartialEq + Debug>(c: &Catalog) -> (String, u32) {
    let name = std::any::type_name::<E>();
    let ty = c
        .get(E::TYPE)
        .unwrap_or_else(|| panic!("{name}: {} not in the manifest", E::TYPE));
    assert_eq!(
        E::KEY_FIELD,
        ty.partition_key(),
        "{name}: key field differs from the manifest"
    );
    let version = ty
        .version(E::VERSION)
        .unwrap_or_else(|| panic!("{name}: {} has no v{}", E::TYPE, E::VERSION));
    // Built as the catalogue builds it (formats asserted), to see each failure's kind.
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(version.schema())
        .unwrap();

    assert!(!version.examples().is_empty(), "{name}: no examples");
    for data in version.examples() {
        let event: E = serde_json::from_value(data.clone())
            .unwrap_or_else(|e| panic!("{name}: example {data} does not decode: {e}"));
        assert_eq!(
            Value::from(event.key()),
            data[E::KEY_FIELD],
            "{name}: key() is not the key field"
        );
        let encoded = serde_json::to_value(&event).unwrap();
        let errors = version.validate(&encoded);
        assert!(
            errors.is_empty(),
            "{name}: re-encoded {encoded} fails its schema: {errors:?}"
        );
        let again: E = serde_json::from_value(encoded).unwrap();
        assert_eq!(again, event, "{name}: re-encoding changed the value");
        let envelope = event.to_envelope().unwrap();
        assert_eq!(
            (
                envelope.event_type.as_str(),
                envelope.version,
                envelope.key.as_str()
            ),
            (E::TYPE, E::VERSION, event.key().as_str())
        );
        c.validate(&envelope)
            .unwrap_or_else(|e| panic!("{name}: its envelope fails the catalogue: {e}"));
    }

    assert!(
        !version.counter_examples().is_empty(),
        "{name}: no counter-examples"
    );
    for case in version.counter_examples() {
        let errors: Vec<_> = validator.iter_errors(&case.data).collect();
        let kinds: Vec<&ValidationErrorKind> = errors.iter().map(|e| e.kind()).collect();
        assert!(
            !kinds.is_empty(),
            "{name}: schema accepts counter-example {:?}",
            case.description
        );
        if let Ok(event) = serde_json::from_value::<E>(case.data.clone()) {
            assert!(
                kinds.iter().all(|k| beyond_the_type(k)),
                "{name}: the type accepts counter-example {:?} ({event:?}) though a Rust type \
                 can refuse it: {kinds:?}",
                case.description
            );
        }
    }
    (E::TYPE.to_owned(), E::VERSION)
}

#[test]
fn every_type_matches_its_schema_and_the_manifest() {
    let c = catalog();
    let mut covered = BTreeSet::new();
    macro_rules! check {
        ($t:ty) => {
            assert!(
                covered.insert(matches_schema::<$t>(&c)),
                "{} listed twice",
                stringify!($t)
            );
        };
    }
    each_type!(check);
    let catalogue: BTreeSet<(String, u32)> = c
        .types()
        .iter()
        .flat_map(|t| {
            t.versions()
                .iter()
                .map(|v| (t.name().to_owned(), v.version()))
        })
        .collect();
    assert_eq!(
        covered, catalogue,
        "a catalogue type or version has no Rust type"
    );
    // The unsuffixed name is the latest version.
    for t in c.types() {
        let latest = t.latest().version();
        assert!(covered.contains(&(t.name().to_owned(), latest)));
    }
    assert_eq!(WorkItemProcessingFailed::VERSION, 2);
}

// ---------------------------------------------------------------------------
// Round trips.

/// What handlers saw: `"<type> #<index of the equal sent value>"`, or a
/// mismatch.
type Seen = Arc<Mutex<Vec<String>>>;

/// Registers a handler for `E` that records which of `sent` it was given.
fn expect<E: Event + PartialEq + Debug>(router: Router, sent: Vec<E>, seen: &Seen) -> Router {
    let seen = Arc::clone(seen);
    let sent = Arc::new(sent);
    router.on::<E, _>(move |event: E, d: Delivery| {
        let (seen, sent) = (Arc::clone(&seen), Arc::clone(&sent));
        async move {
            let line = match sent.iter().position(|s| *s == event) {
                Some(i) if d.envelope.version == E::VERSION => format!("{} #{i}", E::TYPE),
                _ => format!("MISMATCH {} v{}: {event:?}", E::TYPE, d.envelope.version),
            };
            seen.lock().unwrap().push(line);
            Ok(())
        }
    })
}

/// A router expecting every example of every latest type, and the lines it
/// should record.
fn router_for_all(c: &Catalog, seen: &Seen) -> (Router, HashSet<String>) {
    let mut router = Router::new().unknown_types(UnknownTypes::DeadLetter);
    let mut want = HashSet::new();
    macro_rules! add {
        ($t:ty) => {
            let xs = examples::<$t>(c);
            for i in 0..xs.len() {
                want.insert(format!("{} #{i}", <$t as Event>::TYPE));
            }
            router = expect::<$t>(router, xs, seen);
        };
    }
    each_latest_type!(add);
    (router, want)
}

async fn wait_for_all(seen: &Seen, want: &HashSet<String>) {
    let ok = Collector::wait_until(WAIT, || seen.lock().unwrap().len() >= want.len()).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // room for anything extra
    let got = seen.lock().unwrap().clone();
    assert!(
        ok,
        "only {} of {} events handled: {got:?}",
        got.len(),
        want.len()
    );
    assert_eq!(got.len(), want.len(), "extra deliveries: {got:?}");
    assert_eq!(got.into_iter().collect::<HashSet<_>>(), *want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_through_send_and_the_router() {
    let (url, _ns, topology, c) = setup("typed-send", 4);
    let seen: Seen = Default::default();
    let (router, want) = router_for_all(&c, &seen);
    let consumer = spawn_consumer(&url, &topology, fast("g"), router);

    let p = publisher(&url, &topology)
        .await
        .with_catalog(Arc::clone(&c));
    macro_rules! send {
        ($t:ty) => {
            for e in examples::<$t>(&c) {
                p.send(&e).await.unwrap();
            }
        };
    }
    each_latest_type!(send);

    wait_for_all(&seen, &want).await;
    consumer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_through_the_outbox() {
    let (url, _ns, topology, c) = setup("typed-outbox", 4);
    let db = TestSchema::new("typedob").await;
    let seen: Seen = Default::default();
    let (router, want) = router_for_all(&c, &seen);
    let consumer = spawn_consumer(&url, &topology, fast("g"), router);

    let outbox = Outbox::new(
        topology.clone(),
        OutboxConfig {
            schema: db.schema().clone(),
            ..Default::default()
        },
    )
    .unwrap()
    .with_catalog(Arc::clone(&c));
    let mut ids = HashSet::new();
    let mut tx = db.pool().begin().await.unwrap();
    macro_rules! enqueue {
        ($t:ty) => {
            for e in examples::<$t>(&c) {
                assert!(ids.insert(outbox.enqueue_event(&mut *tx, &e).await.unwrap()));
            }
        };
    }
    each_latest_type!(enqueue);
    tx.commit().await.unwrap();
    assert_eq!(ids.len(), want.len());

    let relay = Relay::new(
        db.pool().clone(),
        publisher(&url, &topology).await,
        db.schema().clone(),
        RelayConfig::default(),
    )
    .unwrap();
    let token = CancellationToken::new();
    let relay_task = tokio::spawn(relay.run(token.clone()));

    wait_for_all(&seen, &want).await;
    token.cancel();
    relay_task.await.unwrap().unwrap();
    consumer.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// Upcasting and unknown types.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_event_reaches_a_v2_handler_upcast() {
    let (url, _ns, topology, c) = setup("typed-upcast", 2);
    let v1 = examples::<WorkItemProcessingFailedV1>(&c);
    // What the handler must get: each v1 example through the catalogue's upcaster.
    let expected: Vec<WorkItemProcessingFailed> = v1
        .iter()
        .map(|e| {
            let data = serde_json::to_value(e).unwrap();
            let up = c
                .upcast_data(WorkItemProcessingFailed::TYPE, 1, 2, data)
                .unwrap();
            serde_json::from_value(up).unwrap()
        })
        .collect();
    let seen: Seen = Default::default();
    let router = expect::<WorkItemProcessingFailed>(
        Router::with_catalog(Arc::clone(&c)),
        expected.clone(),
        &seen,
    );
    let consumer = spawn_consumer(&url, &topology, fast("g"), router);

    // Published as v1 JSON, as an older service would.
    let p = publisher(&url, &topology)
        .await
        .with_catalog(Arc::clone(&c));
    for e in &v1 {
        let envelope = e.to_envelope().unwrap();
        assert_eq!(envelope.version, 1);
        p.publish(&envelope).await.unwrap();
    }
    let want: HashSet<String> = (0..expected.len())
        .map(|i| format!("work_item.processing_failed #{i}"))
        .collect();
    wait_for_all(&seen, &want).await;
    consumer.stop().await.unwrap();

    // The category is derived from the code, as the upcaster says.
    let first = &expected[0];
    assert_eq!(
        (first.error.code.as_str(), first.error.category),
        (v1[0].error.code.as_str(), category_of(&v1[0].error.code))
    );
}

fn category_of(code: &str) -> ErrorCategory {
    match code {
        "RETRIES_EXHAUSTED" => ErrorCategory::Exhausted,
        "VALIDATION_FAILED" => ErrorCategory::Validation,
        "UPSTREAM_TIMEOUT" => ErrorCategory::Timeout,
        "RATE_LIMITED" => ErrorCategory::RateLimited,
        other => panic!("add {other} to category_of"),
    }
}

/// A router handling only `work_order.created`; records what it handled.
fn created_only(seen: &Seen, c: &Catalog) -> Router {
    expect::<WorkOrderCreated>(Router::new(), examples(c), seen)
}

async fn store(url: &str, ns: &TestNamespace) -> DeadLetterStore {
    let redis = RedisConnector::new(url, RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    DeadLetterStore::in_redis(ns.topology(2), redis)
}

/// The dead letters, once there is one.
async fn dead_letters(store: &DeadLetterStore) -> Vec<DeadLetter> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let all = store.list(&DeadLetterFilter::default()).await.unwrap();
        if !all.is_empty() {
            return all;
        }
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes one `attempt.started` (no handler) and then one
/// `work_order.created`, and waits until the latter is handled.
async fn publish_unknown_then_known(url: &str, topology: &Topology, c: &Catalog, seen: &Seen) {
    let p = publisher(url, topology).await;
    p.send(&examples::<AttemptStarted>(c)[0]).await.unwrap();
    p.send(&examples::<WorkOrderCreated>(c)[0]).await.unwrap();
    assert!(
        Collector::wait_until(WAIT, || !seen.lock().unwrap().is_empty()).await,
        "the known type was not handled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_types_are_skipped_by_default() {
    let (url, ns, topology, c) = setup("typed-skip", 2);
    let seen: Seen = Default::default();
    let router = created_only(&seen, &c);
    let skipped = router.clone(); // clones share the counter
    let connector = RedisConnector::new(&url, RedisOptions::default()).unwrap();
    let consumer = eventbus::Consumer::new(connector, topology.clone(), fast("g"), router).unwrap();
    let stats = consumer.stats();
    let token = CancellationToken::new();
    let task = tokio::spawn(consumer.run(token.clone()));

    publish_unknown_then_known(&url, &topology, &c, &seen).await;
    assert!(
        Collector::wait_until(WAIT, || skipped.skipped() == 1
            && ConsumerStats::get(&stats.acked) == 2)
        .await,
        "skipped {}, acked {}",
        skipped.skipped(),
        ConsumerStats::get(&stats.acked)
    );
    assert_eq!(ConsumerStats::get(&stats.dead_lettered), 0);
    assert!(store(&url, &ns)
        .await
        .list(&DeadLetterFilter::default())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(*seen.lock().unwrap(), ["work_order.created #0"]);
    token.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_types_can_be_dead_lettered() {
    let (url, ns, topology, c) = setup("typed-dlq", 2);
    let seen: Seen = Default::default();
    let router = created_only(&seen, &c).unknown_types(UnknownTypes::DeadLetter);
    let consumer = spawn_consumer(&url, &topology, fast("g"), router);

    publish_unknown_then_known(&url, &topology, &c, &seen).await;
    let store = store(&url, &ns).await;
    let dead = dead_letters(&store).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event_type, "attempt.started");
    assert_eq!(dead[0].error_class, "permanent");
    assert!(
        dead[0]
            .error_message
            .contains("no handler for event type \"attempt.started\""),
        "{}",
        dead[0].error_message
    );
    assert_eq!(*seen.lock().unwrap(), ["work_order.created #0"]);
    consumer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_that_does_not_decode_is_invalid() {
    let (url, ns, topology, c) = setup("typed-invalid", 2);
    let seen: Seen = Default::default();
    let consumer = spawn_consumer(&url, &topology, fast("g"), created_only(&seen, &c));
    let p = publisher(&url, &topology).await;
    // No catalogue on this publisher: a status the type has no variant for.
    let mut data = c.schema("work_order.created", 1).unwrap().examples()[0].clone();
    data["status"] = "done".into();
    let key = data["id"].as_str().unwrap().to_owned();
    p.publish(&eventbus::Envelope::new("work_order.created", key, data))
        .await
        .unwrap();
    let store = store(&url, &ns).await;
    let dead = dead_letters(&store).await;
    assert_eq!(dead[0].error_class, "invalid");
    assert!(
        dead[0].error_message.contains("does not decode"),
        "{}",
        dead[0].error_message
    );
    assert!(seen.lock().unwrap().is_empty());
    consumer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_catalogue_an_older_version_is_invalid() {
    let (url, ns, topology, c) = setup("typed-nocat", 2);
    let seen: Seen = Default::default();
    let router = expect::<WorkItemProcessingFailed>(Router::new(), Vec::new(), &seen);
    let consumer = spawn_consumer(&url, &topology, fast("g"), router);
    let p = publisher(&url, &topology).await;
    p.send(&examples::<WorkItemProcessingFailedV1>(&c)[0])
        .await
        .unwrap();
    let dead = dead_letters(&store(&url, &ns).await).await;
    assert_eq!(
        (dead[0].event_type.as_str(), dead[0].error_class.as_str()),
        ("work_item.processing_failed", "invalid")
    );
    assert!(
        dead[0]
            .error_message
            .contains("no catalogue to upcast with"),
        "{}",
        dead[0].error_message
    );
    assert!(seen.lock().unwrap().is_empty());
    consumer.stop().await.unwrap();
}
