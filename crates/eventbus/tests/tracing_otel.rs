//! Traces end to end: an OTLP/HTTP receiver in the test gets one trace per
//! event, from the caller's span through the outbox, the relay and every
//! handler attempt (real Redis and PostgreSQL, the real OTLP exporter).
//!
//! One test per binary: the `tracing` subscriber is process-wide.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus::pg::{Relay, RelayConfig};
use eventbus::telemetry::{TraceSampler, Tracing, TracingConfig};
use eventbus::{handler_fn, Backoff, ConsumerConfig, Envelope, HandlerError, RetryPolicy};
use eventbus_testkit::conformance::{publisher, spawn_consumer};
use eventbus_testkit::{shared_redis_url, OtlpReceiver, ReceivedSpan, TestNamespace, TestSchema};
use opentelemetry::trace::TraceContextExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// What a handler attempt saw: the key, the entry's `traceparent`, the one it passes on.
type Seen = (String, Option<String>, Option<String>);

const WAIT: Duration = Duration::from_secs(60);

fn ids(span: &tracing::Span) -> (String, String) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    (sc.trace_id().to_string(), sc.span_id().to_string())
}

fn one<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    f: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| f(s)).collect();
    assert_eq!(found.len(), 1, "{what}: {found:#?}\nall: {spans:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_the_callers_span_to_every_attempt() {
    let receiver = OtlpReceiver::start().await;
    let mut config = TracingConfig::new(receiver.traces_url().parse().unwrap(), "orders");
    config.sampler = TraceSampler::AlwaysOn;
    let tracing = Tracing::start(&config).unwrap();
    tracing_subscriber::registry().with(tracing.layer()).init();

    let redis = shared_redis_url();
    let ns = TestNamespace::new(&redis, "otel");
    let db = TestSchema::new("otel").await;
    let topology = ns.topology(2);
    let outbox = db.outbox_for(&topology);

    // wi-ok fails its first attempt (retryable), wi-dead fails for good.
    let attempts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let handled = Arc::new(AtomicU32::new(0));
    let handler = {
        let (attempts, seen, handled) = (attempts.clone(), seen.clone(), handled.clone());
        handler_fn(move |d| {
            let (attempts, seen, handled) = (attempts.clone(), seen.clone(), handled.clone());
            async move {
                let n = {
                    let mut a = attempts.lock().unwrap();
                    let n = a.entry(d.envelope.key.clone()).or_default();
                    *n += 1;
                    *n
                };
                let passed_on = eventbus::telemetry::current_context().map(|c| c.traceparent);
                seen.lock().unwrap().push((
                    d.envelope.key.clone(),
                    d.envelope.traceparent.clone(),
                    passed_on,
                ));
                match d.envelope.key.as_str() {
                    "wi-dead" => Err(HandlerError::permanent("cannot be handled")),
                    "wi-ok" if n == 1 => Err(HandlerError::retryable("first attempt fails")),
                    _ => {
                        handled.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    }
                }
            }
        })
    };
    let mut cc = ConsumerConfig::new("g", ["work_item"]);
    cc.block = Duration::from_millis(100);
    cc.shutdown_timeout = Duration::from_secs(5);
    cc.retry = RetryPolicy {
        max_attempts: 3,
        backoff: Backoff::Schedule(vec![Duration::from_millis(100)]),
        ..RetryPolicy::default()
    };
    let consumer = spawn_consumer(&redis, &topology, cc, handler);
    let relay = Relay::new(
        db.pool().clone(),
        publisher(&redis, &topology).await,
        db.schema().clone(),
        RelayConfig::default(),
    )
    .unwrap();
    let stop_relay = CancellationToken::new();
    let relay_task = tokio::spawn(relay.run(stop_relay.clone()));

    // The caller: a span of its own around the transaction.
    let ok = Envelope::new(
        "work_item.created",
        "wi-ok",
        json!({"work_item_id": "wi-ok"}),
    );
    let dead = Envelope::new(
        "work_item.created",
        "wi-dead",
        json!({"work_item_id": "wi-dead"}),
    );
    let caller = tracing::info_span!("place_order");
    let (trace, caller_id) = ids(&caller);
    async {
        let mut tx = db.pool().begin().await.unwrap();
        outbox.enqueue(&mut *tx, &ok).await.unwrap();
        outbox
            .enqueue_batch(&mut *tx, std::slice::from_ref(&dead))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    .instrument(caller.clone())
    .await;
    drop(caller);
    // A direct publish, inside another span of the caller.
    let direct = Envelope::new(
        "work_item.created",
        "wi-direct",
        json!({"work_item_id": "wi-direct"}),
    );
    let publishing = tracing::info_span!("notify");
    let (direct_trace, notify_id) = ids(&publishing);
    publisher(&redis, &topology)
        .await
        .publish(&direct)
        .instrument(publishing.clone())
        .await
        .unwrap();
    drop(publishing);

    let deadline = tokio::time::Instant::now() + WAIT;
    while handled.load(Ordering::SeqCst) < 2 || !attempts.lock().unwrap().contains_key("wi-dead") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events not handled: {:?}",
            attempts.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // the dead letter's ack
    stop_relay.cancel();
    relay_task.await.unwrap().unwrap();
    consumer.stop().await.unwrap();
    let flushing = tracing.clone();
    tokio::task::spawn_blocking(move || flushing.flush())
        .await
        .unwrap();

    let stream = |key: &str| topology.stream_key("work_item", topology.partition_of(key));
    assert!(
        receiver
            .wait_for(WAIT, |s| s.iter().filter(|s| s.kind == "consumer").count()
                >= 4)
            .await,
        "consumer spans missing: {:#?}",
        receiver.spans()
    );
    let spans = receiver.spans();
    let in_trace: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == trace)
        .cloned()
        .collect();
    assert!(
        in_trace.iter().all(|s| s.service == "orders"),
        "{in_trace:#?}"
    );

    // The caller's span, root of the trace.
    let root = one(&in_trace, "caller", |s| s.name == "place_order");
    assert_eq!(root.span_id, caller_id);
    assert!(root.parent_span_id.is_empty());

    // The producer span of wi-ok: child of the caller's span.
    let event_id = ok.id.to_string();
    let producer = one(&in_trace, "producer", |s| {
        s.kind == "producer"
            && s.attr("messaging.operation.type") == Some("create")
            && s.attr("messaging.message.id") == Some(&event_id)
    });
    assert_eq!(producer.parent_span_id, caller_id);
    assert_eq!(producer.name, "create work_item");
    assert_eq!(producer.attr("messaging.system"), Some("eventbus"));
    assert_eq!(
        producer.attr("messaging.destination.name"),
        Some(stream("wi-ok").as_str())
    );

    // The relay's span: child of the producer span, and linked to it.
    let relayed = one(&in_trace, "relay", |s| {
        s.attr("messaging.operation.name") == Some("relay")
            && s.attr("messaging.message.id") == Some(&event_id)
    });
    assert_eq!(relayed.kind, "producer");
    assert_eq!(relayed.name, "send work_item");
    assert_eq!(relayed.parent_span_id, producer.span_id);
    assert!(
        relayed
            .links
            .contains(&(trace.clone(), producer.span_id.clone())),
        "{relayed:#?}"
    );

    // Two attempts, CONSUMER spans children of the producer's context.
    let mut consumed: Vec<&ReceivedSpan> = in_trace
        .iter()
        .filter(|s| s.kind == "consumer" && s.attr("messaging.message.id") == Some(&event_id))
        .collect();
    consumed.sort_by_key(|s| {
        s.attr("messaging.eventbus.message.delivery_count")
            .map(str::to_owned)
    });
    assert_eq!(consumed.len(), 2, "{in_trace:#?}");
    for (n, s) in consumed.iter().enumerate() {
        assert_eq!(s.name, "process work_item");
        assert_eq!(s.parent_span_id, producer.span_id);
        assert_eq!(s.attr("messaging.system"), Some("eventbus"));
        assert_eq!(s.attr("messaging.operation.type"), Some("process"));
        assert_eq!(
            s.attr("messaging.destination.name"),
            Some(stream("wi-ok").as_str())
        );
        assert_eq!(s.attr("messaging.consumer.group.name"), Some("g"));
        assert_eq!(
            s.attr("messaging.eventbus.message.delivery_count"),
            Some((n + 1).to_string().as_str())
        );
        assert!(s.attr("messaging.destination.partition.id").is_some());
    }
    assert_eq!(consumed[0].status, 2, "the failed attempt is an error");
    assert!(
        consumed[0].events.iter().any(|(name, a)| name == "retry"
            && a.get("messaging.eventbus.next_attempt").map(String::as_str) == Some("2")),
        "{:#?}",
        consumed[0]
    );
    assert_ne!(consumed[1].status, 2);

    // The dead letter is an event of its attempt's span.
    let dead_id = dead.id.to_string();
    let dead_span = one(&in_trace, "dead consumer", |s| {
        s.kind == "consumer" && s.attr("messaging.message.id") == Some(&dead_id)
    });
    assert!(
        dead_span
            .events
            .iter()
            .any(|(name, a)| name == "dead_letter"
                && a.get("messaging.eventbus.dead_letter.class")
                    .map(String::as_str)
                    == Some("permanent")),
        "{dead_span:#?}"
    );

    // The entry carried the producer span's context; the handler passes on its attempt's.
    let seen = seen.lock().unwrap().clone();
    for (key, carried, passed_on) in seen.iter().filter(|(k, _, _)| k == "wi-ok") {
        assert_eq!(
            carried.as_deref(),
            Some(format!("00-{trace}-{}-01", producer.span_id).as_str()),
            "{key}"
        );
        let passed_on = passed_on.as_deref().expect("a context inside the handler");
        assert!(
            passed_on.starts_with(&format!("00-{trace}-")),
            "{passed_on}"
        );
        assert!(!passed_on.contains(&producer.span_id), "{passed_on}");
    }

    // The direct publish: a `send` PRODUCER span under the caller's span, the consumer under it.
    let direct_id = direct.id.to_string();
    let sent = one(&spans, "direct producer", |s| {
        s.kind == "producer" && s.attr("messaging.message.id") == Some(&direct_id)
    });
    assert_eq!(sent.trace_id, direct_trace);
    assert_eq!(sent.parent_span_id, notify_id);
    assert_eq!(sent.attr("messaging.operation.type"), Some("send"));
    let got = one(&spans, "direct consumer", |s| {
        s.kind == "consumer" && s.attr("messaging.message.id") == Some(&direct_id)
    });
    assert_eq!(
        (got.trace_id.as_str(), got.parent_span_id.as_str()),
        (direct_trace.as_str(), sent.span_id.as_str())
    );
    assert_eq!(eventbus::telemetry::spans_dropped(), 0);
    tracing.shutdown();
}
