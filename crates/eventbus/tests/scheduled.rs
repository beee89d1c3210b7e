//! Delayed and scheduled delivery against real Redis: due times held, due
//! order per partition, exactly once with several schedulers, cancel and
//! list, a private Redis restarted with AOF, a private Redis Cluster, and
//! an unreadable entry that must not block its partition.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use eventbus::schedule::{self, Scheduler, SchedulerConfig};
use eventbus::{
    Envelope, Publisher, PublisherConfig, RedisConn, RedisConnector, RedisOptions, Topology,
};
use eventbus_testkit::{shared_redis_url, RedisCluster, RedisServer, TestNamespace};
use tokio_util::sync::CancellationToken;

async fn publisher(url: &str, topology: &Topology) -> Publisher {
    let redis = RedisConnector::new(url, RedisOptions::default()).unwrap();
    Publisher::connect(&redis, topology.clone(), PublisherConfig::default())
        .await
        .unwrap()
}

async fn conn(url: &str) -> RedisConn {
    RedisConnector::new(url, RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap()
}

async fn scheduler(url: &str, topology: &Topology) -> Scheduler {
    let redis = RedisConnector::new(url, RedisOptions::default()).unwrap();
    let config = SchedulerConfig {
        sweep_every: Duration::from_millis(500),
        ..Default::default()
    };
    Scheduler::connect(&redis, topology.clone(), config)
        .await
        .unwrap()
}

fn event(key: &str, i: usize) -> Envelope {
    Envelope::new("sched.tested", key, serde_json::json!({ "i": i }))
}

type RawEntries = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;

/// Every entry of a stream: (entry id, event).
async fn entries(conn: &RedisConn, stream: &str) -> Vec<(String, Envelope)> {
    let raw: RawEntries = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    raw.into_iter()
        .map(|(id, f)| {
            let e =
                Envelope::from_fields(f.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))).unwrap();
            (id, e)
        })
        .collect()
}

/// Every event on every partition of `topic`, per partition in stream order.
async fn all_entries(conn: &RedisConn, topology: &Topology, topic: &str) -> Vec<Vec<Envelope>> {
    let mut out = Vec::new();
    for stream in topology.topic_streams(topic) {
        out.push(
            entries(conn, &stream)
                .await
                .into_iter()
                .map(|(_, e)| e)
                .collect(),
        );
    }
    out
}

async fn wait_for(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no event is scheduled in the namespace.
async fn all_moved(c: &RedisConn, topology: &Topology, within: Duration) {
    wait_for("every scheduled event moved", within, async || {
        schedule::count(c, topology)
            .await
            .map(|n| n == 0)
            .unwrap_or(false)
    })
    .await;
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Real time, end to end: an event due in 1.5 s is not on its stream
/// before then, is there soon after, with its id; a past time is delivered
/// at once, without the scheduler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_no_earlier_than_its_time_and_promptly_after() {
    let ns = TestNamespace::new(shared_redis_url(), "sched-time");
    let topology = ns.topology(4);
    let p = publisher(ns.url(), &topology).await;
    let c = conn(ns.url()).await;

    let past = event("k-past", 0);
    let at = p
        .publish_at(&past, Utc::now() - chrono::Duration::hours(1))
        .await
        .unwrap();
    assert!(at.deliver_at.is_none() && !at.entry_id.is_empty(), "{at:?}");

    let later = event("k-later", 1);
    let due = Utc::now() + chrono::Duration::milliseconds(1500);
    let at = p.publish_at(&later, due).await.unwrap();
    assert_eq!(at.deliver_at, Some(due));
    assert!(at.entry_id.is_empty());
    let listed = schedule::list(&c, &topology, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, later.id.to_string());
    assert_eq!(listed[0].envelope.as_ref().unwrap(), &later);
    assert_eq!(ms(listed[0].deliver_at), ms(due));

    let stop = CancellationToken::new();
    let task = tokio::spawn(scheduler(ns.url(), &topology).await.run(stop.clone()));
    let stream = at.stream.clone();
    let mut arrived = None;
    wait_for("the delayed event", Duration::from_secs(20), async || {
        let got = entries(&c, &stream).await;
        if let Some((entry_id, e)) = got.into_iter().find(|(_, e)| e.id == later.id) {
            arrived = Some((Utc::now(), entry_id, e));
            true
        } else {
            assert!(Utc::now() < due + chrono::Duration::seconds(15));
            false
        }
    })
    .await;
    let (seen, entry_id, got) = arrived.unwrap();
    assert_eq!(
        got, later,
        "the event reached its stream unchanged, with its id"
    );
    // The stream entry id is the server's clock when it was added.
    let added_ms: i64 = entry_id.split('-').next().unwrap().parse().unwrap();
    assert!(
        added_ms >= ms(due),
        "added at {added_ms}, due at {}",
        ms(due)
    );
    assert!(seen >= due);
    assert_eq!(schedule::count(&c, &topology).await.unwrap(), 0);
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// 10,000 events due over the next 2 s, on 8 partitions, with 3 schedulers
/// running at once: each event reaches its stream exactly once, and each
/// partition receives them in due order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_schedulers_move_each_of_10000_events_exactly_once_in_due_order() {
    let ns = TestNamespace::new(shared_redis_url(), "sched-many");
    let topology = ns.topology(8);
    let p = publisher(ns.url(), &topology).await;
    let c = conn(ns.url()).await;
    let start = Utc::now() + chrono::Duration::seconds(5);
    let mut due_of = BTreeMap::new();
    for chunk in (0..10_000).collect::<Vec<_>>().chunks(1000) {
        let events: Vec<Envelope> = chunk
            .iter()
            .map(|i| event(&format!("k{}", i % 97), *i))
            .collect();
        let times: Vec<Option<DateTime<Utc>>> = chunk
            .iter()
            .map(|i| Some(start + chrono::Duration::milliseconds(((i * 7919) % 2000) as i64)))
            .collect();
        p.publish_batch_at(&events, &times).await.unwrap();
        for (e, t) in events.iter().zip(&times) {
            due_of.insert(e.id, ms(t.unwrap()));
        }
    }
    assert_eq!(schedule::count(&c, &topology).await.unwrap(), 10_000);

    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(tokio::spawn(
            scheduler(ns.url(), &topology).await.run(stop.clone()),
        ));
    }
    all_moved(&c, &topology, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let partitions = all_entries(&c, &topology, "sched").await;
    let mut seen = HashSet::new();
    for events in &partitions {
        let dues: Vec<i64> = events.iter().map(|e| due_of[&e.id]).collect();
        assert!(
            dues.windows(2).all(|w| w[0] <= w[1]),
            "a partition is out of due order"
        );
        for e in events {
            assert!(seen.insert(e.id), "event {} moved twice", e.id);
        }
    }
    assert_eq!(seen.len(), 10_000);
}

/// A cancelled event never arrives; cancelling it again, or an unknown or
/// malformed id, says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_event_is_never_delivered() {
    let ns = TestNamespace::new(shared_redis_url(), "sched-cancel");
    let topology = ns.topology(4);
    let p = publisher(ns.url(), &topology).await;
    let c = conn(ns.url()).await;
    let keep = event("a", 1);
    let drop = event("b", 2);
    let due = Utc::now() + chrono::Duration::milliseconds(800);
    p.publish_batch_at(&[keep.clone(), drop.clone()], &[Some(due), Some(due)])
        .await
        .unwrap();
    let stream = schedule::cancel(&c, &topology, &drop.id.to_string())
        .await
        .unwrap();
    assert_eq!(
        stream,
        Some(topology.stream_for(&drop.event_type, &drop.key))
    );
    assert_eq!(
        schedule::cancel(&c, &topology, &drop.id.to_string())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        schedule::cancel(&c, &topology, &uuid::Uuid::now_v7().to_string())
            .await
            .unwrap(),
        None
    );
    let e = schedule::cancel(&c, &topology, "not-an-id")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is not an event id"), "{e}");
    let listed = schedule::list(&c, &topology, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        vec![keep.id.to_string()]
    );

    let s = scheduler(ns.url(), &topology).await;
    wait_for("the kept event", Duration::from_secs(20), async || {
        s.tick().await.unwrap();
        schedule::count(&c, &topology).await.unwrap() == 0
    })
    .await;
    let got: Vec<_> = all_entries(&c, &topology, "sched").await.concat();
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), vec![keep.id]);
}

/// A due time further ahead than the publisher's max delay is refused,
/// and nothing of its batch is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_over_the_maximum_is_refused() {
    let ns = TestNamespace::new(shared_redis_url(), "sched-max");
    let topology = ns.topology(4);
    let redis = RedisConnector::new(ns.url(), RedisOptions::default()).unwrap();
    let config = PublisherConfig {
        max_delay: Duration::from_secs(3600),
        ..Default::default()
    };
    let p = Publisher::connect(&redis, topology.clone(), config)
        .await
        .unwrap();
    let c = conn(ns.url()).await;
    let ok = Some(Utc::now() + chrono::Duration::minutes(59));
    let far = Some(Utc::now() + chrono::Duration::minutes(61));
    let e = p
        .publish_batch_at(&[event("a", 1), event("b", 2)], &[ok, far])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("more than 1h ahead"), "{e}");
    assert!(e.to_string().contains("EVENT_BUS_MAX_DELAY"), "{e}");
    assert_eq!(schedule::count(&c, &topology).await.unwrap(), 0);
    let e = p
        .publish_batch_at(&[event("a", 1)], &[ok, ok])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("2 due times for 1 events"), "{e}");
}

/// A scheduled entry the move script cannot read (written by hand) is set
/// aside; the events after it in the same partition are still delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_entry_does_not_block_its_partition() {
    let ns = TestNamespace::new(shared_redis_url(), "sched-bad");
    let topology = ns.topology(1);
    let p = publisher(ns.url(), &topology).await;
    let c = conn(ns.url()).await;
    let good = event("k", 1);
    let stream = topology.stream_for(&good.event_type, &good.key);
    let mut raw = c.clone();
    let past = ms(Utc::now()) - 1000;
    let _: () = redis::pipe()
        .cmd("ZADD")
        .arg(schedule::scheduled_key(&stream))
        .arg(past)
        .arg("bad-1")
        .cmd("HSET")
        .arg(schedule::events_key(&stream))
        .arg("bad-1")
        .arg("\u{1}not msgpack")
        .cmd("ZADD")
        .arg(schedule::scheduled_key(&stream))
        .arg(past)
        .arg("bad-2") // no fields at all
        .query_async(&mut raw)
        .await
        .unwrap();
    p.publish_at(&good, Utc::now() + chrono::Duration::milliseconds(100))
        .await
        .unwrap();
    let s = scheduler(ns.url(), &topology).await;
    s.sweep().await.unwrap();
    wait_for("the good event", Duration::from_secs(20), async || {
        s.tick().await.unwrap();
        !entries(&c, &stream).await.is_empty()
    })
    .await;
    assert_eq!(entries(&c, &stream).await[0].1, good);
    assert_eq!(schedule::count(&c, &topology).await.unwrap(), 0);
    assert_eq!(
        s.stats()
            .unreadable
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    let kept: u64 = redis::cmd("HLEN")
        .arg(format!("{stream}:scheduled:unreadable"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(kept, 1, "the unreadable fields are kept for an operator");
}

/// A private Redis with AOF (`appendfsync always`), killed with SIGKILL
/// while a scheduler moves 2,000 events, restarted: every event is on its
/// stream exactly once or still scheduled, and all arrive in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_with_aof_loses_no_scheduled_event() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let url = server.url();
    let topology = Topology::new("aof", 4).unwrap();
    let p = publisher(&url, &topology).await;
    let start = Utc::now() + chrono::Duration::milliseconds(300);
    let events: Vec<Envelope> = (0..2000).map(|i| event(&format!("k{i}"), i)).collect();
    let times: Vec<_> = (0..2000)
        .map(|i| Some(start + chrono::Duration::milliseconds(i as i64)))
        .collect();
    p.publish_batch_at(&events, &times).await.unwrap();

    let stop = CancellationToken::new();
    let task = tokio::spawn(scheduler(&url, &topology).await.run(stop.clone()));
    let c = conn(&url).await;
    wait_for("some moved", Duration::from_secs(20), async || {
        schedule::count(&c, &topology)
            .await
            .map(|n| n < 1500)
            .unwrap_or(false)
    })
    .await;
    // SIGKILL mid-run, then the AOF is replayed; counted with the scheduler
    // stopped, so nothing moves between the reads.
    server.restart();
    stop.cancel();
    task.await.unwrap().unwrap();
    let c = conn(&url).await;
    let on_streams: usize = all_entries(&c, &topology, "sched")
        .await
        .iter()
        .map(Vec::len)
        .sum();
    let waiting = schedule::count(&c, &topology).await.unwrap() as usize;
    assert_eq!(
        on_streams + waiting,
        2000,
        "after the restart: {on_streams} moved + {waiting} waiting"
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(scheduler(&url, &topology).await.run(stop.clone()));
    all_moved(&c, &topology, Duration::from_secs(60)).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let ids: HashSet<_> = all_entries(&c, &topology, "sched")
        .await
        .concat()
        .iter()
        .map(|e| e.id)
        .collect();
    let total: usize = all_entries(&c, &topology, "sched")
        .await
        .iter()
        .map(Vec::len)
        .sum();
    assert_eq!((ids.len(), total), (2000, 2000));
}

/// On a private Redis Cluster each partition's scheduled keys are in its
/// stream's slot, and events scheduled over every partition (so on every
/// master) are moved to their streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduling_works_on_a_cluster() {
    let cluster = RedisCluster::start();
    let url = cluster.cluster_url();
    let topology = Topology::new("schedcl", 16).unwrap();
    for p in 0..16 {
        let stream = topology.stream_key("sched", p);
        let slot = cluster.keyslot(&stream);
        assert_eq!(cluster.keyslot(&schedule::scheduled_key(&stream)), slot);
        assert_eq!(cluster.keyslot(&schedule::events_key(&stream)), slot);
        assert_eq!(
            cluster.keyslot(&format!("{stream}:scheduled:unreadable")),
            slot
        );
    }
    let p = publisher(&url, &topology).await;
    let events: Vec<Envelope> = (0..300).map(|i| event(&format!("k{i}"), i)).collect();
    let due = Some(Utc::now() + chrono::Duration::milliseconds(500));
    let published = p.publish_batch_at(&events, &vec![due; 300]).await.unwrap();
    let partitions: HashSet<u32> = published.iter().map(|r| r.partition).collect();
    assert_eq!(partitions.len(), 16);
    let c = conn(&url).await;
    assert_eq!(schedule::count(&c, &topology).await.unwrap(), 300);
    assert_eq!(
        schedule::list(&c, &topology, 1000).await.unwrap().len(),
        300
    );
    let id = events[7].id.to_string();
    assert!(schedule::cancel(&c, &topology, &id)
        .await
        .unwrap()
        .is_some());
    let stop = CancellationToken::new();
    let task = tokio::spawn(scheduler(&url, &topology).await.run(stop.clone()));
    all_moved(&c, &topology, Duration::from_secs(30)).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let got: Vec<_> = all_entries(&c, &topology, "sched").await.concat();
    assert_eq!(got.len(), 299);
    assert!(got.iter().all(|e| e.id != events[7].id));
}
