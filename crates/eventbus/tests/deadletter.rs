//! The dead-letter store: recording (Redis stream and the records), listing
//! with each filter, replay to the failing group only, dry runs, discard,
//! purge, and the history of an event that fails again. Every scenario runs
//! on both backends: records in PostgreSQL, and records in Redis (no
//! PostgreSQL), which must behave alike.

use std::time::Duration;

use eventbus::deadletter::{
    DeadLetterFilter, DeadLetterStatus, DeadLetterStore, DeadLetterWriter, Failure, ReplayOptions,
};
use eventbus::{Envelope, ErrorClass, RedisConnector, RedisOptions};
use eventbus_testkit::conformance::full_event;
use eventbus_testkit::{shared_redis_url, TestNamespace, TestSchema};

fn failure(e: &Envelope, group: &str, class: ErrorClass, message: &str) -> Failure {
    Failure {
        envelope: e.clone(),
        group: group.into(),
        consumer: "c-1".into(),
        stream: "s".into(),
        partition: 3,
        entry_id: "1-0".into(),
        attempts: 5,
        class,
        message: message.into(),
        first_failed_at: None,
        raw_fields: None,
    }
}

/// Where the records are kept.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Postgres,
    Redis,
}

/// Runs a scenario on each backend, as the tests `<scenario>::in_postgres`
/// and `<scenario>::in_redis`.
macro_rules! on_both_backends {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test]
            async fn in_postgres() {
                super::$scenario(super::Backend::Postgres).await;
            }

            #[tokio::test]
            async fn in_redis() {
                super::$scenario(super::Backend::Redis).await;
            }
        }
    };
}

async fn setup(
    prefix: &str,
    backend: Backend,
) -> (
    TestNamespace,
    Option<TestSchema>,
    DeadLetterWriter,
    DeadLetterStore,
    eventbus::RedisConn,
) {
    let ns = TestNamespace::new(shared_redis_url(), prefix);
    let redis = RedisConnector::new(ns.url(), RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    let topology = ns.topology(4);
    if backend == Backend::Redis {
        let writer = DeadLetterWriter::new(redis.clone(), &topology, None);
        let store = DeadLetterStore::in_redis(topology, redis.clone());
        return (ns, None, writer, store, redis);
    }
    let db = TestSchema::new(prefix).await;
    let writer = DeadLetterWriter::new(
        redis.clone(),
        &topology,
        Some((db.pool().clone(), db.schema().clone())),
    );
    let store = DeadLetterStore::new(
        db.pool().clone(),
        db.schema().clone(),
        topology,
        redis.clone(),
    );
    (ns, Some(db), writer, store, redis)
}

on_both_backends!(record_list_filter_show);

async fn record_list_filter_show(backend: Backend) {
    let (ns, _db, writer, store, mut redis) = setup("dlq1", backend).await;
    let events: Vec<Envelope> = (0..6).map(full_event).collect();
    writer
        .record(&failure(
            &events[0],
            "billing",
            ErrorClass::Permanent,
            "card declined",
        ))
        .await
        .unwrap();
    writer
        .record(&failure(
            &events[1],
            "billing",
            ErrorClass::Retryable,
            "timeout",
        ))
        .await
        .unwrap();
    writer
        .record(&failure(
            &events[2],
            "audit",
            ErrorClass::Invalid,
            "schema: /x required",
        ))
        .await
        .unwrap();
    let long = "é".repeat(10_000);
    let big = writer
        .record(&failure(&events[3], "audit", ErrorClass::Retryable, &long))
        .await
        .unwrap();

    // the Redis stream has them all, with the envelope fields
    let n: u64 = redis::cmd("XLEN")
        .arg(ns.topology(4).dead_stream())
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(n, 4);

    let all = store.list(&DeadLetterFilter::default()).await.unwrap();
    assert_eq!(all.len(), 4);
    let by = |f: DeadLetterFilter| {
        let store = store.clone();
        async move { store.list(&f).await.unwrap().len() }
    };
    assert_eq!(
        by(DeadLetterFilter {
            group: Some("billing".into()),
            ..Default::default()
        })
        .await,
        2
    );
    assert_eq!(
        by(DeadLetterFilter {
            error_class: Some(ErrorClass::Invalid),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        by(DeadLetterFilter {
            event_type: Some(events[0].event_type.clone()),
            ..Default::default()
        })
        .await,
        4
    );
    assert_eq!(
        by(DeadLetterFilter {
            key: Some(events[1].key.clone()),
            ..Default::default()
        })
        .await,
        1
    );
    let future = chrono::Utc::now() + chrono::Duration::hours(1);
    assert_eq!(
        by(DeadLetterFilter {
            since: Some(future),
            ..Default::default()
        })
        .await,
        0
    );
    assert_eq!(
        by(DeadLetterFilter {
            limit: Some(2),
            offset: Some(3),
            ..Default::default()
        })
        .await,
        1
    );

    let (dl, audit) = store.get(big).await.unwrap().unwrap();
    assert!(dl.error_message.len() <= eventbus::deadletter::DEAD_LETTER_ERROR_CAP);
    assert_eq!(dl.status, "new");
    assert_eq!(dl.envelope["id"], serde_json::json!(events[3].id));
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "dead_lettered");
    assert!(store.get(uuid::Uuid::now_v7()).await.unwrap().is_none());
}

on_both_backends!(replay_reaches_only_the_failing_group_and_dry_run_changes_nothing);

async fn replay_reaches_only_the_failing_group_and_dry_run_changes_nothing(backend: Backend) {
    let (ns, db, writer, store, mut redis) = setup("dlq2", backend).await;
    let topology = ns.topology(4);
    let (a, b) = (full_event(1), full_event(2));
    let id_a = writer
        .record(&failure(&a, "billing", ErrorClass::Permanent, "no"))
        .await
        .unwrap();
    writer
        .record(&failure(&b, "audit", ErrorClass::Permanent, "no"))
        .await
        .unwrap();

    // dry run: selected, nothing published, nothing changed
    let only_billing = DeadLetterFilter {
        group: Some("billing".into()),
        ..Default::default()
    };
    let dry = store
        .replay(
            &only_billing,
            &ReplayOptions {
                dry_run: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((dry.selected.clone(), dry.replayed), (vec![id_a], 0));
    let reader = redis.clone();
    let len = |stream: String| {
        let mut r = reader.clone();
        async move {
            redis::cmd("XLEN")
                .arg(stream)
                .query_async::<u64>(&mut r)
                .await
                .unwrap()
        }
    };
    assert_eq!(len(topology.replay_stream("billing")).await, 0);
    assert_eq!(store.get(id_a).await.unwrap().unwrap().0.status, "new");

    let report = store
        .replay(
            &only_billing,
            &ReplayOptions {
                actor: "test".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(report.replayed, 1);
    assert_eq!(len(topology.replay_stream("billing")).await, 1);
    assert_eq!(
        len(topology.replay_stream("audit")).await,
        0,
        "another group got the replay"
    );
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(topology.replay_stream("billing"))
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    let fields: std::collections::HashMap<_, _> = entries[0].1.iter().cloned().collect();
    assert_eq!(fields["id"], a.id.to_string(), "the event id must be kept");
    assert!(fields["headers"].contains(&id_a.to_string()));
    let (dl, audit) = store.get(id_a).await.unwrap().unwrap();
    assert_eq!((dl.status.as_str(), dl.replay_count), ("replayed", 1));
    assert_eq!(audit.last().unwrap().action, "replayed");

    // replaying "new" ones again selects nothing; the replayed one fails again
    let again = store
        .replay(&only_billing, &ReplayOptions::default())
        .await
        .unwrap();
    assert!(again.selected.is_empty());
    let id_again = writer
        .record(&failure(
            &a,
            "billing",
            ErrorClass::Retryable,
            "still broken",
        ))
        .await
        .unwrap();
    assert_eq!(
        id_again, id_a,
        "the same event in the same group keeps its dead letter"
    );
    let (dl, audit) = store.get(id_a).await.unwrap().unwrap();
    assert_eq!((dl.status.as_str(), dl.replay_count), ("new", 1));
    let actions: Vec<_> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["dead_lettered", "replayed", "failed_again"]);

    // --to-group sends it elsewhere, on purpose
    store
        .replay(
            &DeadLetterFilter {
                ids: vec![id_a],
                ..Default::default()
            },
            &ReplayOptions {
                to_group: Some("billing-v2".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(len(topology.replay_stream("billing-v2")).await, 1);

    // rate limiting spaces replays out
    for i in 10..13 {
        writer
            .record(&failure(
                &full_event(i),
                "rated",
                ErrorClass::Permanent,
                "no",
            ))
            .await
            .unwrap();
    }
    let started = std::time::Instant::now();
    let r = store
        .replay(
            &DeadLetterFilter {
                group: Some("rated".into()),
                ..Default::default()
            },
            &ReplayOptions {
                rate_per_sec: Some(20.0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.replayed, 3);
    assert!(started.elapsed() >= Duration::from_millis(100));
    drop(db);
}

on_both_backends!(discard_purge_and_depth);

async fn discard_purge_and_depth(backend: Backend) {
    let (ns, _db, writer, store, mut redis) = setup("dlq3", backend).await;
    let empty = store.depth().await.unwrap();
    assert_eq!(
        (empty.depth, empty.oldest_age_seconds, empty.last_minute),
        (0, None, 0)
    );
    for i in 0..5 {
        writer
            .record(&failure(&full_event(i), "g", ErrorClass::Permanent, "no"))
            .await
            .unwrap();
    }
    let depth = store.depth().await.unwrap();
    assert_eq!((depth.depth, depth.last_minute), (5, 5));
    assert!(depth.oldest_age_seconds.unwrap() >= 0.0);
    let one = store.list(&DeadLetterFilter::default()).await.unwrap()[0].id;
    let dry = store
        .discard(
            &DeadLetterFilter {
                ids: vec![one],
                ..Default::default()
            },
            "t",
            true,
        )
        .await
        .unwrap();
    assert_eq!(dry, vec![one]);
    assert_eq!(store.get(one).await.unwrap().unwrap().0.status, "new");
    store
        .discard(
            &DeadLetterFilter {
                ids: vec![one],
                ..Default::default()
            },
            "t",
            false,
        )
        .await
        .unwrap();
    assert_eq!(store.get(one).await.unwrap().unwrap().0.status, "discarded");
    assert_eq!(
        store.depth().await.unwrap().depth,
        4,
        "discarded ones leave the queue"
    );
    let statuses = store
        .list(&DeadLetterFilter {
            status: Some(DeadLetterStatus::Discarded),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(statuses.len(), 1);

    assert_eq!(
        store.purge(Duration::from_secs(3600), false).await.unwrap(),
        0,
        "nothing is that old"
    );
    assert_eq!(
        store.purge(Duration::from_millis(1), true).await.unwrap(),
        5,
        "dry run counts"
    );
    assert_eq!(
        store
            .list(&DeadLetterFilter::default())
            .await
            .unwrap()
            .len(),
        5
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store.purge(Duration::from_millis(1), false).await.unwrap(),
        5
    );
    assert!(store
        .list(&DeadLetterFilter::default())
        .await
        .unwrap()
        .is_empty());
    let n: u64 = redis::cmd("XLEN")
        .arg(ns.topology(4).dead_stream())
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(n, 0, "the Redis dead stream was trimmed too");
}

/// The Redis records' keys of a namespace (docs/dead-letters.md).
fn record_key(ns: &TestNamespace, name: &str) -> String {
    format!("{0}:{{{0}:dead}}:{name}", ns.name())
}

/// Without PostgreSQL: each failure adds a stream entry and upserts one
/// record (same id, history appended), all in the dead stream's slot, and
/// the time order and the `new` set follow the record.
#[tokio::test]
async fn in_redis_the_entry_and_the_record_are_written_together() {
    let (ns, _db, writer, store, mut redis) = setup("dlqr1", Backend::Redis).await;
    let e = full_event(1);
    let id = writer
        .record(&failure(&e, "g", ErrorClass::Retryable, "first"))
        .await
        .unwrap();
    let again = writer
        .record(&failure(&e, "g", ErrorClass::Permanent, "second"))
        .await
        .unwrap();
    assert_eq!(
        again, id,
        "the same event in the same group keeps its record"
    );
    let other_group = writer
        .record(&failure(&e, "h", ErrorClass::Permanent, "x"))
        .await
        .unwrap();
    assert_ne!(other_group, id);

    let entries: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(ns.topology(4).dead_stream())
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    let ids: Vec<&str> = entries.iter().map(|(_, f)| f["dl_id"].as_str()).collect();
    assert_eq!(
        ids,
        [id.to_string(), id.to_string(), other_group.to_string()]
    );
    let indexed: String = redis::cmd("HGET")
        .arg(record_key(&ns, "index"))
        .arg(format!("g\n{}", e.id))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(indexed, id.to_string());
    let (dl, history) = store.get(id).await.unwrap().unwrap();
    assert_eq!(
        (
            dl.error_class.as_str(),
            dl.error_message.as_str(),
            dl.status.as_str()
        ),
        ("permanent", "second", "new")
    );
    let actions: Vec<_> = history.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["dead_lettered", "failed_again"]);
    assert_eq!(history[1].detail["error"], "second");
    let score: f64 = redis::cmd("ZSCORE")
        .arg(record_key(&ns, "by_time"))
        .arg(id.to_string())
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(score, -(dl.last_failed_at.timestamp_micros() as f64));
    let new: Vec<String> = redis::cmd("ZRANGE")
        .arg(record_key(&ns, "new"))
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(new.len(), 2);
    let this = DeadLetterFilter {
        ids: vec![id],
        ..Default::default()
    };
    store.discard(&this, "t", false).await.unwrap();
    assert_eq!(store.depth().await.unwrap().depth, 1);
}

/// Consumers dead-lettering the same event of a group at once end with one
/// record: the compare-and-set makes the losers read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_redis_concurrent_failures_of_one_event_share_one_record() {
    let (ns, _db, writer, store, _redis) = setup("dlqr2", Backend::Redis).await;
    let e = full_event(1);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (writer, mut f) = (writer.clone(), failure(&e, "g", ErrorClass::Permanent, "x"));
            f.entry_id = format!("{i}-0");
            tokio::spawn(async move { writer.record(&f).await.unwrap() })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let all = store.list(&DeadLetterFilter::default()).await.unwrap();
    assert_eq!(all.len(), 1);
    let (_, history) = store.get(all[0].id).await.unwrap().unwrap();
    assert_eq!(history[0].action, "dead_lettered");
    assert!(history[1..].iter().all(|a| a.action == "failed_again"));
    drop(ns);
}

/// Listing reads the records a page at a time: filters, offset and limit
/// across pages give what one ordered pass would, most recent first.
#[tokio::test]
async fn in_redis_listing_pages_through_many_records_in_order() {
    let (_ns, _db, writer, store, _redis) = setup("dlqr3", Backend::Redis).await;
    for i in 0..450 {
        let group = if i % 3 == 0 { "a" } else { "b" };
        writer
            .record(&failure(&full_event(i), group, ErrorClass::Permanent, "x"))
            .await
            .unwrap();
    }
    let all_a = store
        .list(&DeadLetterFilter {
            group: Some("a".into()),
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all_a.len(), 150);
    assert!(all_a
        .windows(2)
        .all(|w| (w[0].last_failed_at, std::cmp::Reverse(w[0].id))
            >= (w[1].last_failed_at, std::cmp::Reverse(w[1].id))));
    let page = store
        .list(&DeadLetterFilter {
            group: Some("a".into()),
            offset: Some(100),
            limit: Some(30),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page, all_a[100..130]);
    let by_ids = store
        .list(&DeadLetterFilter {
            ids: vec![all_a[7].id, all_a[3].id, all_a[3].id],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_ids, [all_a[3].clone(), all_a[7].clone()]);
}

/// A purged record is gone with its index entry: the event failing again
/// starts a new record, as with PostgreSQL.
#[tokio::test]
async fn in_redis_purge_forgets_the_record_and_its_index() {
    let (ns, _db, writer, store, mut redis) = setup("dlqr4", Backend::Redis).await;
    let e = full_event(1);
    let first = writer
        .record(&failure(&e, "g", ErrorClass::Permanent, "x"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store.purge(Duration::from_millis(1), true).await.unwrap(),
        1
    );
    assert_eq!(
        store.purge(Duration::from_millis(1), false).await.unwrap(),
        1
    );
    for name in ["records", "index", "by_time", "new"] {
        let exists: bool = redis::cmd("EXISTS")
            .arg(record_key(&ns, name))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(!exists, "{name} left behind");
    }
    let second = writer
        .record(&failure(&e, "g", ErrorClass::Permanent, "x"))
        .await
        .unwrap();
    assert_ne!(second, first);
    let (_, history) = store.get(second).await.unwrap().unwrap();
    assert_eq!(history.len(), 1);
}
