//! Retries whose backoff is over the threshold go through the scheduler:
//! the wait survives a consumer crash, and the attempts still count
//! towards the dead letter.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventbus::deadletter::{DeadLetterFilter, DeadLetterStore};
use eventbus::schedule::{Scheduler, SchedulerConfig, ATTEMPTS_HEADER};
use eventbus::{
    handler_fn, Backoff, ConsumerMode, Delivery, Envelope, HandlerError, RedisConnector,
    RedisOptions, RetryPolicy,
};
use eventbus_testkit::conformance::{publisher, spawn_consumer};
use eventbus_testkit::{fast_config, shared_redis_url, TestNamespace};
use tokio_util::sync::CancellationToken;

/// One call of the handler: when, the attempts header, redelivered.
type Call = (Instant, Option<String>, bool);

/// Test timings, `attempts` deliveries `backoff` apart; retries of 1 s or
/// more go through the scheduler (or, ordered, are written down).
fn long_retry_config(
    mode: ConsumerMode,
    attempts: u32,
    backoff: Duration,
) -> eventbus::ConsumerConfig {
    let mut config = fast_config("g", &["sched"], mode);
    config.retry = RetryPolicy {
        max_attempts: attempts,
        backoff: Backoff::Schedule(vec![backoff]),
        attempt_timeout: Some(Duration::from_secs(5)),
    };
    config.scheduled_retry_after = Some(Duration::from_secs(1));
    config
}

/// A handler that always fails (retryable) and records its calls.
fn failing(calls: Arc<Mutex<Vec<Call>>>) -> impl eventbus::Handler + Clone {
    handler_fn(move |d: Delivery| {
        let calls = calls.clone();
        async move {
            let attempts = d.envelope.headers.get(ATTEMPTS_HEADER).cloned();
            calls
                .lock()
                .unwrap()
                .push((Instant::now(), attempts, d.redelivered));
            Err::<(), _>(HandlerError::retryable("still down"))
        }
    })
}

/// Publishes one event and waits for its first call.
async fn publish_one(
    ns: &TestNamespace,
    topology: &eventbus::Topology,
    calls: &Mutex<Vec<Call>>,
) -> Envelope {
    let event = Envelope::new("sched.retry", "k", serde_json::json!({}));
    publisher(ns.url(), topology)
        .await
        .publish(&event)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while calls.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "never delivered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    event
}

/// Waits for the namespace's first dead letters (kept in Redis).
async fn wait_dead_letter(
    redis: &RedisConnector,
    topology: &eventbus::Topology,
) -> Vec<eventbus::deadletter::DeadLetter> {
    let store = DeadLetterStore::in_redis(topology.clone(), redis.shared().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let dead = store.list(&DeadLetterFilter::default()).await.unwrap();
        if !dead.is_empty() {
            return dead;
        }
        assert!(Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_retry_survives_a_consumer_crash_and_still_counts_its_attempts() {
    let ns = TestNamespace::new(shared_redis_url(), "sched-retry");
    let topology = ns.topology(2);
    let backoff = Duration::from_millis(1500);
    let config = long_retry_config(ConsumerMode::Unordered, 3, backoff);
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let first = spawn_consumer(ns.url(), &topology, config.clone(), failing(calls.clone()));
    let event = publish_one(&ns, &topology, &calls).await;
    // The retry is in Redis now: crash the consumer and start another.
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.crash();
    let second = spawn_consumer(ns.url(), &topology, config, failing(calls.clone()));
    let redis = RedisConnector::new(ns.url(), RedisOptions::default()).unwrap();
    let stop = CancellationToken::new();
    let scheduler = Scheduler::connect(&redis, topology.clone(), SchedulerConfig::default())
        .await
        .unwrap();
    let scheduling = tokio::spawn(scheduler.run(stop.clone()));

    let dead = wait_dead_letter(&redis, &topology).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].attempts, 3,
        "three deliveries in all: {:?}",
        dead[0]
    );
    assert_eq!(dead[0].event_id, event.id, "the event keeps its id");

    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3, "{calls:?}");
    let headers: Vec<Option<String>> = calls.iter().map(|c| c.1.clone()).collect();
    assert_eq!(headers, [None, Some("1".into()), Some("2".into())]);
    assert!(!calls[0].2 && calls[1].2 && calls[2].2);
    for pair in calls.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= backoff - Duration::from_millis(50),
            "a retry came before its backoff, though a consumer restarted in between"
        );
    }
    second.stop().await.unwrap();
    stop.cancel();
    scheduling.await.unwrap().unwrap();
}

/// The attempts header is event content like any other: a publisher can
/// set it to anything. A count at the top of the range dead-letters the
/// event at its first failure (no overflow, no crash), and an unreadable
/// one counts as none; the events behind them are handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_attempts_header_a_publisher_writes_is_survived() {
    let ns = TestNamespace::new(shared_redis_url(), "sched-hdr");
    let topology = ns.topology(1);
    let mut config = fast_config("g", &["sched"], ConsumerMode::Unordered);
    config.retry = RetryPolicy {
        max_attempts: 2,
        backoff: Backoff::Schedule(vec![Duration::from_millis(10)]),
        attempt_timeout: Some(Duration::from_secs(5)),
    };
    let ok = Arc::new(Mutex::new(0usize));
    let handler = {
        let ok = ok.clone();
        handler_fn(move |d: Delivery| {
            let ok = ok.clone();
            async move {
                if d.envelope.data["fail"] == true {
                    return Err(HandlerError::retryable("planned"));
                }
                *ok.lock().unwrap() += 1;
                Ok(())
            }
        })
    };
    let running = spawn_consumer(ns.url(), &topology, config, handler);
    let p = publisher(ns.url(), &topology).await;
    let mut top = Envelope::new("sched.retry", "k", serde_json::json!({"fail": true}));
    top.headers
        .insert(ATTEMPTS_HEADER.to_owned(), u64::MAX.to_string());
    let mut junk = Envelope::new("sched.retry", "k", serde_json::json!({"fail": true}));
    junk.headers
        .insert(ATTEMPTS_HEADER.to_owned(), "-1 not a number".to_owned());
    for e in [&top, &junk] {
        p.publish(e).await.unwrap();
    }
    p.publish(&Envelope::new("sched.retry", "k", serde_json::json!({})))
        .await
        .unwrap();
    let redis = RedisConnector::new(ns.url(), RedisOptions::default()).unwrap();
    let store = DeadLetterStore::in_redis(topology.clone(), redis.shared().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let dead = store.list(&DeadLetterFilter::default()).await.unwrap();
        if dead.len() == 2 && *ok.lock().unwrap() == 1 {
            break dead;
        }
        assert!(Instant::now() < deadline, "not settled: {dead:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    running.stop().await.unwrap();
    let attempts = |id| dead.iter().find(|d| d.event_id == id).unwrap().attempts;
    assert_eq!(
        attempts(top.id),
        i32::MAX,
        "the count, clamped to the record's range"
    );
    assert_eq!(attempts(junk.id), 2);
}

/// Ordered mode keeps a retry in place (the partition waits, to keep the
/// key's order), but a long wait is written down: when the owner crashes
/// during it, the partition's next owner waits out the rest instead of
/// retrying at once, and the attempts still count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_long_retry_is_waited_out_by_the_next_owner() {
    let ns = TestNamespace::new(shared_redis_url(), "sched-retry-ord");
    let topology = ns.topology(1);
    let backoff = Duration::from_secs(4);
    let config = long_retry_config(ConsumerMode::Ordered, 2, backoff);
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let first = spawn_consumer(ns.url(), &topology, config.clone(), failing(calls.clone()));
    publish_one(&ns, &topology, &calls).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.crash();
    let second = spawn_consumer(ns.url(), &topology, config, failing(calls.clone()));

    let redis = RedisConnector::new(ns.url(), RedisOptions::default()).unwrap();
    let dead = wait_dead_letter(&redis, &topology).await;
    assert_eq!(dead[0].attempts, 2, "{:?}", dead[0]);
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[1].2, "the second call is a redelivery");
    assert!(
        calls[1].0 - calls[0].0 >= backoff - Duration::from_millis(50),
        "the next owner retried after {:?}, before the backoff of {backoff:?}",
        calls[1].0 - calls[0].0
    );
    second.stop().await.unwrap();
}
