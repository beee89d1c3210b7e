//! The batched inbox (issue #16): deliveries ready together share one
//! PostgreSQL transaction, each handler in a savepoint of its own. A
//! failing handler is rolled back alone, duplicates skip their handlers, a
//! handler past its timeout stops only itself; both modes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus::deadletter::{DeadLetterFilter, DeadLetterStore};
use eventbus::pg::{record_inbox, Inbox, InboxConfig, InboxHandler, InboxStats, Savepoints};
use eventbus::{Backoff, RetryPolicy};
use eventbus::{ConsumerConfig, ConsumerMode, Delivery, Envelope, HandlerError};
use eventbus_testkit::conformance::{publisher, Running};
use eventbus_testkit::{fast_config, shared_redis_url, TestNamespace, TestSchema};
use sqlx::PgConnection;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

/// Writes a row per event in the inbox transaction, counts its calls, and
/// fails (after writing) the events whose data says `fail`, or sleeps on
/// the first call of those that say `slow`.
#[derive(Clone)]
struct Writer {
    table: String,
    calls: Arc<Mutex<HashMap<Uuid, u64>>>,
}

impl Writer {
    async fn create(db: &TestSchema) -> Writer {
        let table = db.table("effects");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {table} (event_id uuid NOT NULL)"
        )))
        .execute(db.pool())
        .await
        .unwrap();
        Writer {
            table,
            calls: Arc::default(),
        }
    }

    fn calls(&self, id: Uuid) -> u64 {
        self.calls.lock().unwrap().get(&id).copied().unwrap_or(0)
    }
}

impl InboxHandler for Writer {
    async fn handle<'a>(
        &'a self,
        d: &'a Delivery,
        tx: &'a mut PgConnection,
    ) -> Result<(), HandlerError> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            let n = calls.entry(d.envelope.id).or_default();
            *n += 1;
            *n
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} (event_id) VALUES ($1)",
            self.table
        )))
        .bind(d.envelope.id)
        .execute(&mut *tx)
        .await
        .map_err(|e| HandlerError::retryable(e.to_string()))?;
        match d.envelope.data.get("do").and_then(|v| v.as_str()) {
            Some("fail") => Err(HandlerError::retryable("planned failure after writing")),
            Some("swallow") => {
                // A failed statement whose error the handler ignores: the
                // transaction is aborted, and this event must not commit.
                let _ = sqlx::raw_sql("SELECT 1/0").execute(&mut *tx).await;
                Ok(())
            }
            Some("slow") if call == 1 => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn event(i: usize, what: Option<&str>) -> Envelope {
    let mut data = serde_json::json!({"seq": i});
    if let Some(w) = what {
        data["do"] = w.into();
    }
    Envelope::new("work_item.processing_failed", format!("k{}", i % 5), data)
}

fn config(mode: ConsumerMode) -> ConsumerConfig {
    let mut c = fast_config("batch", &["work_item"], mode);
    c.concurrency = 64;
    c.retry = RetryPolicy {
        max_attempts: 3,
        backoff: Backoff::Schedule(vec![Duration::from_millis(50)]),
        attempt_timeout: Some(Duration::from_secs(20)),
    };
    c
}

/// One transaction at a time, so what is ready together shares it.
fn one_at_a_time(item_timeout: Duration) -> InboxConfig {
    InboxConfig {
        batch: 64,
        parallel: Some(1),
        item_timeout,
        ..InboxConfig::default()
    }
}

struct Setup {
    ns: TestNamespace,
    db: TestSchema,
    writer: Writer,
}

impl Setup {
    async fn new(name: &str) -> Setup {
        let ns = TestNamespace::new(shared_redis_url(), name);
        let db = TestSchema::new(name).await;
        let writer = Writer::create(&db).await;
        Setup { ns, db, writer }
    }

    /// Starts the consumer, waits until it holds its partitions (ordered
    /// mode), then publishes `events` in one batch, so they are ready
    /// together.
    async fn run(
        &self,
        mode: ConsumerMode,
        inbox: InboxConfig,
        events: &[Envelope],
    ) -> (Running, Arc<InboxStats>) {
        let topology = self.ns.topology(2);
        let inbox = Inbox::new(
            self.db.pool().clone(),
            self.db.schema(),
            self.writer.clone(),
        )
        .with_config(inbox)
        .unwrap();
        let stats = inbox.stats();
        let connector =
            eventbus::RedisConnector::new(&shared_redis_url(), eventbus::RedisOptions::default())
                .unwrap();
        let consumer = eventbus::Consumer::new(connector, topology.clone(), config(mode), inbox)
            .unwrap()
            .with_dead_letter_store(self.db.pool().clone(), self.db.schema().clone());
        let running = Running::spawn(consumer);
        // Past a session timeout: the lone member owns every partition.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        publisher(&shared_redis_url(), &topology)
            .await
            .publish_batch(events)
            .await
            .unwrap();
        (running, stats)
    }

    async fn effects(&self) -> HashMap<Uuid, i64> {
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT event_id, count(*) FROM {} GROUP BY event_id",
            self.writer.table
        )))
        .fetch_all(self.db.pool())
        .await
        .unwrap();
        rows.into_iter().collect()
    }

    async fn inbox_rows(&self) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            self.db.table("eventbus_inbox")
        )))
        .fetch_one(self.db.pool())
        .await
        .unwrap()
    }

    async fn store(&self) -> DeadLetterStore {
        let redis =
            eventbus::RedisConnector::new(&shared_redis_url(), eventbus::RedisOptions::default())
                .unwrap()
                .shared()
                .await
                .unwrap();
        DeadLetterStore::new(
            self.db.pool().clone(),
            self.db.schema().clone(),
            self.ns.topology(2),
            redis,
        )
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_failing_handler_fails_alone(mode: ConsumerMode, name: &str) {
    failing_handler_fails_alone(
        mode,
        name,
        "fail",
        "planned failure",
        17,
        Savepoints::PerEvent,
    )
    .await;
}

async fn failing_handler_fails_alone(
    mode: ConsumerMode,
    name: &str,
    how: &str,
    error: &str,
    at: usize,
    savepoints: Savepoints,
) {
    let s = Setup::new(name).await;
    let mut events: Vec<Envelope> = (0..40).map(|i| event(i, None)).collect();
    events[at] = event(at, Some(how));
    let poison = events[at].id;
    let inbox = InboxConfig {
        savepoints,
        ..one_at_a_time(WAIT)
    };
    let (consumer, stats) = s.run(mode, inbox, &events).await;

    let store = s.store().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let dead = loop {
        let all = store.list(&DeadLetterFilter::default()).await.unwrap();
        if !all.is_empty() && stats.committed.load(Ordering::Relaxed) == 39 {
            break all;
        }
        assert!(tokio::time::Instant::now() < deadline, "not settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    consumer.stop().await.unwrap();

    // The poison event: tried three times, dead-lettered with its error.
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event_id, poison);
    assert_eq!(dead[0].attempts, 3);
    assert!(
        dead[0].error_message.contains(error),
        "{}",
        dead[0].error_message
    );
    // Without savepoints, each failed attempt rolls the batch back and runs
    // it again with them: the poison runs twice per attempt.
    let (per_attempt, reruns) = match savepoints {
        Savepoints::OnFailure => (2, 3),
        _ => (1, 0),
    };
    assert_eq!(s.writer.calls(poison), 3 * per_attempt);
    assert_eq!(stats.reruns.load(Ordering::Relaxed), reruns);
    // Its writes never committed, nor did its inbox row; every other event
    // committed exactly once.
    let effects = s.effects().await;
    assert!(
        !effects.contains_key(&poison),
        "the failing handler's write committed"
    );
    assert_eq!(effects.len(), 39);
    assert!(effects.values().all(|&n| n == 1), "{effects:?}");
    assert_eq!(s.inbox_rows().await, 39);
    for e in &events {
        if e.id != poison {
            let calls = s.writer.calls(e.id);
            match savepoints {
                // Run again only with the batch rolled back for the poison.
                Savepoints::OnFailure => assert!((1..=4).contains(&calls), "{calls}"),
                _ => assert_eq!(calls, 1, "a good event ran twice"),
            }
        }
    }
    // Unordered, the entries of one read share transactions. (Ordered, a
    // partition hands over one entry at a time, so a transaction holds at
    // most one entry per partition, and only when partitions happen to be
    // ready together: nothing to assert.)
    if mode == ConsumerMode::Unordered {
        let batches = stats.batches.load(Ordering::Relaxed);
        assert!(
            batches < 39,
            "39 events in {batches} transactions: no batching"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unordered_a_failing_handler_in_a_batch_fails_alone() {
    a_failing_handler_fails_alone(ConsumerMode::Unordered, "ibfail").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_a_failing_handler_in_a_batch_fails_alone() {
    a_failing_handler_fails_alone(ConsumerMode::Ordered, "ibfailo").await;
}

/// A handler that ignores a failed statement returns Ok with its
/// transaction aborted: that event fails alone (found when its savepoint is
/// released with the next one's, or before the commit), and nothing of it
/// commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_swallows_a_failed_statement_fails_alone() {
    for (at, name) in [(17, "ibswm"), (39, "ibswl")] {
        failing_handler_fails_alone(
            ConsumerMode::Unordered,
            name,
            "swallow",
            "current transaction is aborted",
            at,
            Savepoints::PerEvent,
        )
        .await;
    }
}

/// Without a savepoint per handler, a failure (or a swallowed failed
/// statement, found by the next handler's statement or the check before
/// the commit) rolls the batch back and runs it again with savepoints:
/// the same outcome, in both modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_savepoints_a_failing_handler_still_fails_alone() {
    for (mode, how, error, at, name) in [
        (
            ConsumerMode::Unordered,
            "fail",
            "planned failure",
            17,
            "ibofu",
        ),
        (
            ConsumerMode::Ordered,
            "fail",
            "planned failure",
            17,
            "ibofo",
        ),
        (
            ConsumerMode::Unordered,
            "swallow",
            "current transaction is aborted",
            17,
            "ibosm",
        ),
        (
            ConsumerMode::Unordered,
            "swallow",
            "current transaction is aborted",
            39,
            "ibosl",
        ),
    ] {
        failing_handler_fails_alone(mode, name, how, error, at, Savepoints::OnFailure).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_duplicates_and_new_events_runs_handlers_for_the_new_ones_only() {
    let s = Setup::new("ibdup").await;
    let events: Vec<Envelope> = (0..30).map(|i| event(i, None)).collect();
    // A third were handled before (their inbox rows exist).
    for e in events.iter().step_by(3) {
        assert!(
            record_inbox(s.db.pool(), s.db.schema(), "batch", e.id, &e.event_type)
                .await
                .unwrap()
        );
    }
    let (consumer, stats) = s
        .run(ConsumerMode::Unordered, one_at_a_time(WAIT), &events)
        .await;
    until("every delivery settled", || {
        stats.committed.load(Ordering::Relaxed) + stats.duplicates.load(Ordering::Relaxed) == 30
    })
    .await;
    consumer.stop().await.unwrap();
    assert_eq!(stats.committed.load(Ordering::Relaxed), 20);
    assert_eq!(stats.duplicates.load(Ordering::Relaxed), 10);
    let effects = s.effects().await;
    for (i, e) in events.iter().enumerate() {
        let (calls, rows) = (s.writer.calls(e.id), effects.get(&e.id).copied());
        if i % 3 == 0 {
            assert_eq!((calls, rows), (0, None), "a duplicate's handler ran");
        } else {
            assert_eq!(
                (calls, rows),
                (1, Some(1)),
                "a new event was not handled once"
            );
        }
    }
    let batches = stats.batches.load(Ordering::Relaxed);
    assert!(batches < 20, "20 new events in {batches} transactions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_past_its_timeout_stops_only_itself() {
    let s = Setup::new("ibslow").await;
    let mut events: Vec<Envelope> = (0..20).map(|i| event(i, None)).collect();
    events[5] = event(5, Some("slow"));
    let slow = events[5].id;
    let (consumer, stats) = s
        .run(
            ConsumerMode::Unordered,
            one_at_a_time(Duration::from_millis(300)),
            &events,
        )
        .await;
    until("every event committed", || {
        stats.committed.load(Ordering::Relaxed) == 20
    })
    .await;
    consumer.stop().await.unwrap();
    // The slow one timed out once, then ran again; the others of its batch
    // were rolled back with it and ran again without losing an attempt.
    assert_eq!(s.writer.calls(slow), 2);
    let effects = s.effects().await;
    assert_eq!(effects.len(), 20);
    assert!(effects.values().all(|&n| n == 1), "{effects:?}");
    assert!(s
        .store()
        .await
        .list(&DeadLetterFilter::default())
        .await
        .unwrap()
        .is_empty());
}

#[test]
fn bad_inbox_settings_are_refused_with_a_reason() {
    for (config, why) in [
        (
            InboxConfig {
                batch: 0,
                ..InboxConfig::default()
            },
            "batch must be at least 1",
        ),
        (
            InboxConfig {
                parallel: Some(0),
                ..InboxConfig::default()
            },
            "at least 1 transaction",
        ),
        (
            InboxConfig {
                item_timeout: Duration::ZERO,
                ..InboxConfig::default()
            },
            "timeout must be positive",
        ),
    ] {
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
    }
    assert!(InboxConfig::default().validate().is_ok());
}
