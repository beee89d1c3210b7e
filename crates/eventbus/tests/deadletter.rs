//! The dead-letter store: recording (Redis stream and PostgreSQL), listing
//! with each filter, replay to the failing group only, dry runs, discard,
//! purge, and the history of an event that fails again.

use std::time::Duration;

use eventbus::deadletter::{
    dlq_depth, DeadLetterFilter, DeadLetterStatus, DeadLetterStore, DeadLetterWriter, Failure,
    ReplayOptions,
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

async fn setup(
    prefix: &str,
) -> (
    TestNamespace,
    TestSchema,
    DeadLetterWriter,
    DeadLetterStore,
    eventbus::RedisConn,
) {
    let ns = TestNamespace::new(shared_redis_url(), prefix);
    let db = TestSchema::new(prefix).await;
    let redis = RedisConnector::new(ns.url(), RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    let topology = ns.topology(4);
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
    (ns, db, writer, store, redis)
}

#[tokio::test]
async fn record_list_filter_show() {
    let (ns, _db, writer, store, mut redis) = setup("dlq1").await;
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

#[tokio::test]
async fn replay_reaches_only_the_failing_group_and_dry_run_changes_nothing() {
    let (ns, db, writer, store, mut redis) = setup("dlq2").await;
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

#[tokio::test]
async fn discard_purge_and_depth() {
    let (ns, db, writer, store, mut redis) = setup("dlq3").await;
    let empty = dlq_depth(db.pool(), db.schema()).await.unwrap();
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
    let depth = dlq_depth(db.pool(), db.schema()).await.unwrap();
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
        dlq_depth(db.pool(), db.schema()).await.unwrap().depth,
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
