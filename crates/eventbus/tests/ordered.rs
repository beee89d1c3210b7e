//! Ordered mode beyond the conformance suite, against real Redis: fencing
//! of a former owner's acknowledgement, and the in-flight partition limit.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus::{
    handler_fn, ConsumerConfig, ConsumerMode, Delivery, HandlerError, RedisConnector, RedisOptions,
};
use eventbus_testkit::conformance::{keyed_event, publisher, spawn_consumer};
use eventbus_testkit::{shared_redis_url, TestNamespace};

const WAIT: Duration = Duration::from_secs(30);

fn ordered(group: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(group, ["work_item"]);
    c.mode = ConsumerMode::Ordered;
    c.block = Duration::from_millis(100);
    c.heartbeat_interval = Duration::from_millis(100);
    c.session_timeout = Duration::from_secs(1);
    c.shutdown_timeout = Duration::from_secs(5);
    c.trim = Some(eventbus_testkit::fast_trim());
    c
}

async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A newer lease (another token) appears while the owner is handling an
/// entry: the owner's acknowledgement is refused, the entry stays pending,
/// and whoever holds the lease then handles it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_with_a_superseded_token_is_refused() {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, "fence");
    let topology = ns.topology(1);
    let stream = topology.stream_key("work_item", 0);
    let lease = format!("{stream}:lease:g");
    let mut conn = RedisConnector::new(&url, RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();

    let calls: Arc<Mutex<Vec<bool>>> = Arc::default();
    let release = Arc::new(AtomicBool::new(false));
    let handler = {
        let (calls, release) = (calls.clone(), release.clone());
        handler_fn(move |d: Delivery| {
            let (calls, release) = (calls.clone(), release.clone());
            async move {
                calls.lock().unwrap().push(d.redelivered);
                while !release.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok::<(), HandlerError>(())
            }
        })
    };
    let member = spawn_consumer(&url, &topology, ordered("g"), handler);
    publisher(&url, &topology)
        .await
        .publish(&keyed_event("k", 0))
        .await
        .unwrap();
    eventually("the first delivery", || calls.lock().unwrap().len() == 1).await;

    // Another lease replaces the member's token while its handler runs.
    let token: u64 = redis::cmd("HGET")
        .arg(&lease)
        .arg("token")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&lease)
        .arg("token")
        .arg(token + 1000)
        .query_async(&mut conn)
        .await
        .unwrap();
    release.store(true, Ordering::SeqCst);

    // The late ack is refused; the lease holder (here the same member,
    // re-acquiring under the new token) handles the entry again, then acks.
    eventually("the entry handled again", || {
        calls.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(
        *calls.lock().unwrap(),
        vec![false, true],
        "the second delivery is a redelivery"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let summary: redis::Value = redis::cmd("XPENDING")
            .arg(&stream)
            .arg("g")
            .query_async(&mut conn)
            .await
            .unwrap();
        let pending = match summary {
            redis::Value::Array(a) => matches!(a.first(), Some(redis::Value::Int(n)) if *n > 0),
            _ => false,
        };
        if !pending {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never acknowledged under the new token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    member.stop().await.unwrap();
}

/// `max_partitions_in_flight` caps the partitions handling an entry at the
/// same moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_partitions_are_capped() {
    let url = shared_redis_url();
    for (limit, expect_max) in [(Some(1), 1), (Some(3), 3)] {
        let ns = TestNamespace::new(&url, "inflight");
        let topology = ns.topology(8);
        let now = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let handler = {
            let (now, max, done) = (now.clone(), max.clone(), done.clone());
            handler_fn(move |_d: Delivery| {
                let (now, max, done) = (now.clone(), max.clone(), done.clone());
                async move {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), HandlerError>(())
                }
            })
        };
        let mut config = ordered("g");
        config.max_partitions_in_flight = limit;
        let member = spawn_consumer(&url, &topology, config, handler);
        let events: Vec<_> = (0..80).map(|i| keyed_event(&format!("k{i}"), 0)).collect();
        publisher(&url, &topology)
            .await
            .publish_batch(&events)
            .await
            .unwrap();
        eventually("every event handled", || done.load(Ordering::SeqCst) == 80).await;
        member.stop().await.unwrap();
        assert_eq!(max.load(Ordering::SeqCst), expect_max, "limit {limit:?}");
    }
}

/// A read whose reply is lost (Redis died after recording the delivery, or
/// the connection broke): the entry is pending to the member, which never
/// saw it. Simulated exactly: the entry is added and delivered to the
/// member's consumer name in one transaction, before its blocked read can
/// take it. The member finds it (pending to itself, newer than anything it
/// was given, idle) and handles it: a lost reply costs order, never the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_whose_read_reply_was_lost_is_still_handled() {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, "stranded");
    let topology = ns.topology(1);
    let handled = Arc::new(Mutex::new(Vec::<usize>::new()));
    let h = handled.clone();
    let connector = RedisConnector::new(&url, RedisOptions::default()).unwrap();
    let consumer = eventbus::Consumer::new(
        connector.clone(),
        topology.clone(),
        ordered("g"),
        handler_fn(move |d: Delivery| {
            let h = h.clone();
            async move {
                h.lock()
                    .unwrap()
                    .push(d.envelope.data["seq"].as_u64().unwrap() as usize);
                Ok::<(), HandlerError>(())
            }
        }),
    )
    .unwrap();
    let name = consumer.name().to_owned();
    let running = eventbus_testkit::conformance::Running::spawn(consumer);
    let p = publisher(&url, &topology).await;
    p.publish(&keyed_event("k", 1)).await.unwrap();
    eventually("the first event", || handled.lock().unwrap().len() == 1).await;

    // Event 2 is delivered to the member's name, but not to the member.
    let stream = topology.stream_key("work_item", 0);
    let mut conn = connector.shared().await.unwrap();
    let fields = eventbus::Envelope::to_fields(&keyed_event("k", 2));
    let mut xadd = redis::cmd("XADD");
    xadd.arg(&stream).arg("*");
    for (k, v) in &fields {
        xadd.arg(*k).arg(v);
    }
    let _: redis::Value = redis::pipe()
        .atomic()
        .add_command(xadd)
        .cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg(&name)
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    p.publish(&keyed_event("k", 3)).await.unwrap();
    eventually("the event after the lost one", || {
        handled.lock().unwrap().contains(&3)
    })
    .await;
    assert!(!handled.lock().unwrap().contains(&2));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !handled.lock().unwrap().contains(&2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the entry whose reply was lost was never handled: {:?}",
            handled.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(*handled.lock().unwrap(), [1, 3, 2]);
    running.stop().await.unwrap();
}

/// Calls of `command` the server has answered (`INFO commandstats`;
/// commands run by scripts included).
async fn command_calls(url: &str, command: &str) -> u64 {
    let mut conn = RedisConnector::new(url, RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// A partition whose entries are ready together acknowledges them in
/// batches (one fenced call for up to `partition_batch` entries), not one
/// call per entry. Counted on a private Redis, whose command statistics are
/// this test's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_entries_are_acknowledged_in_batches() {
    let server = eventbus_testkit::RedisServer::start();
    let url = server.url();
    let topology = eventbus::Topology::new("ackbatch", 1).unwrap();
    let events: Vec<_> = (0..2000).map(|i| keyed_event("k", i)).collect();
    publisher(&url, &topology)
        .await
        .publish_batch(&events)
        .await
        .unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let handler = {
        let done = done.clone();
        handler_fn(move |_d: Delivery| {
            let done = done.clone();
            async move {
                done.fetch_add(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        })
    };
    let member = spawn_consumer(&url, &topology, ordered("g"), handler);
    eventually("every event handled", || {
        done.load(Ordering::SeqCst) == 2000
    })
    .await;
    member.stop().await.unwrap();
    let stream = topology.stream_key("work_item", 0);
    let mut conn = RedisConnector::new(&url, RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(&stream)
        .arg("g")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending.0, 0, "every handled entry is acknowledged");
    // 2,000 entries in batches of at most 64: 32 calls when every batch is
    // full; reads, retries of a batch and partial batches add a few.
    let xacks = command_calls(&url, "xack").await;
    assert!(
        xacks <= 2000 / 16,
        "{xacks} XACK calls for 2,000 ready entries: not batched"
    );
}
