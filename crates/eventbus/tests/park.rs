//! Park mode of ordered consumers, against real Redis and PostgreSQL: a key
//! with an event in dead letters holds its later events (dead-lettered
//! unhandled, class `parked`, in order) while other keys flow; replaying the
//! key's dead letters handles them in order and releases it; discarding
//! releases it too; without park mode nothing changes. Replay and discard
//! run on both dead-letter backends: PostgreSQL, and Redis alone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus::deadletter::{DeadLetter, DeadLetterFilter, DeadLetterStore, ReplayOptions};
use eventbus::{
    Backoff, ConsumerConfig, ConsumerMode, Delivery, Envelope, Handler, HandlerError, RetryPolicy,
};
use eventbus_testkit::conformance::{publisher, Running};
use eventbus_testkit::{fast_config, shared_redis_url, Collector, TestNamespace, TestSchema};

const WAIT: Duration = Duration::from_secs(60);
/// One partition: every key of the test shares it.
const PARTITIONS: u32 = 1;

fn config(park: bool) -> ConsumerConfig {
    let mut c = fast_config("g", &["work_item"], ConsumerMode::Ordered);
    c.claim_idle = Duration::from_millis(800);
    c.retry = RetryPolicy {
        max_attempts: 3,
        backoff: Backoff::Schedule(vec![Duration::from_millis(200)]),
        attempt_timeout: Some(Duration::from_secs(5)),
    };
    c.park_keys = park;
    c
}

/// Fails events with `data.poison` until `fixed`; records every call.
#[derive(Clone, Default)]
struct Poisoned {
    fixed: Arc<AtomicBool>,
    /// (key, seq) of every call, in order.
    calls: Arc<Mutex<Vec<(String, i64)>>>,
    /// (key, seq) of every success, in order.
    ok: Arc<Mutex<Vec<(String, i64)>>>,
}

impl Handler for Poisoned {
    async fn handle(&self, d: Delivery) -> Result<(), HandlerError> {
        let at = (
            d.envelope.key.clone(),
            d.envelope.data["seq"].as_i64().unwrap(),
        );
        self.calls.lock().unwrap().push(at.clone());
        if d.envelope.data.get("poison").is_some() && !self.fixed.load(Ordering::Relaxed) {
            return Err(HandlerError::retryable("dependency down"));
        }
        self.ok.lock().unwrap().push(at);
        Ok(())
    }
}

impl Poisoned {
    fn ok_of(&self, key: &str) -> Vec<i64> {
        let ok = self.ok.lock().unwrap();
        ok.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, s)| *s)
            .collect()
    }

    fn calls_of(&self, key: &str, seq: i64) -> usize {
        let calls = self.calls.lock().unwrap();
        calls.iter().filter(|(k, s)| k == key && *s == seq).count()
    }
}

fn event(seq: i64, key: &str, poison: bool) -> Envelope {
    let mut data = serde_json::json!({ "seq": seq });
    if poison {
        data["poison"] = true.into();
    }
    Envelope::new("work_item.processing_failed", key, data)
}

struct Setup {
    url: String,
    ns: TestNamespace,
    /// `None`: no PostgreSQL, the records are in Redis.
    db: Option<TestSchema>,
    store: DeadLetterStore,
    redis: eventbus::RedisConn,
}

async fn setup(prefix: &str, with_postgres: bool) -> Setup {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, prefix);
    let redis = eventbus::RedisConnector::new(&url, eventbus::RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    let db = match with_postgres {
        true => Some(TestSchema::new(prefix).await),
        false => None,
    };
    let store = match &db {
        Some(db) => DeadLetterStore::new(
            db.pool().clone(),
            db.schema().clone(),
            ns.topology(PARTITIONS),
            redis.clone(),
        ),
        None => DeadLetterStore::in_redis(ns.topology(PARTITIONS), redis.clone()),
    };
    Setup {
        url,
        ns,
        db,
        store,
        redis,
    }
}

impl Setup {
    fn spawn(&self, cfg: ConsumerConfig, h: Poisoned) -> Running {
        let connector =
            eventbus::RedisConnector::new(&self.url, eventbus::RedisOptions::default()).unwrap();
        let mut consumer =
            eventbus::Consumer::new(connector, self.ns.topology(PARTITIONS), cfg, h).unwrap();
        if let Some(db) = &self.db {
            consumer = consumer.with_dead_letter_store(db.pool().clone(), db.schema().clone());
        }
        Running::spawn(consumer)
    }

    async fn publish(&self, events: &[Envelope]) {
        let p = publisher(&self.url, &self.ns.topology(PARTITIONS)).await;
        p.publish_batch(events).await.unwrap();
    }

    /// The group's dead letters in status `new`, oldest failure first.
    async fn new_dead_letters(&self) -> Vec<DeadLetter> {
        let mut all = self
            .store
            .list(&DeadLetterFilter {
                status: Some(eventbus::deadletter::DeadLetterStatus::New),
                ..Default::default()
            })
            .await
            .unwrap();
        all.reverse();
        all
    }

    async fn wait_dead_letters(&self, n: usize) -> Vec<DeadLetter> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let all = self.new_dead_letters().await;
            if all.len() >= n {
                return all;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} dead letters",
                all.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The parked count of `key` (None: not parked).
    async fn parked(&self, key: &str) -> Option<u64> {
        let stream = self.ns.topology(PARTITIONS).stream_for("work_item.x", key);
        redis::cmd("HGET")
            .arg(format!("{stream}:parked:g"))
            .arg(key)
            .query_async(&mut self.redis.clone())
            .await
            .unwrap()
    }

    /// Waits until `key` is no longer parked.
    async fn wait_released(&self, key: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.parked(key).await.is_some() {
            assert!(tokio::time::Instant::now() < deadline, "{key} still parked");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Replays the dead letters `filter` selects; returns how many.
    async fn replay(&self, filter: &DeadLetterFilter) -> usize {
        let report = self
            .store
            .replay(filter, &ReplayOptions::default())
            .await
            .unwrap();
        report.replayed
    }

    fn by_key(&self, key: &str) -> DeadLetterFilter {
        DeadLetterFilter {
            key: Some(key.into()),
            ..Default::default()
        }
    }
}

fn by_id(id: uuid::Uuid) -> DeadLetterFilter {
    DeadLetterFilter {
        ids: vec![id],
        ..Default::default()
    }
}

fn seqs(dls: &[DeadLetter]) -> Vec<(String, i64, String)> {
    dls.iter()
        .map(|d| {
            (
                d.key.clone(),
                d.envelope["data"]["seq"].as_i64().unwrap(),
                d.error_class.clone(),
            )
        })
        .collect()
}

/// The common start: K#1 poisons key K; K's later events are parked in
/// order, unhandled; key O (same partition) flows in order.
async fn poison_and_park(s: &Setup, h: &Poisoned) -> Vec<DeadLetter> {
    s.publish(&[
        event(0, "K", false),
        event(1, "K", true),
        event(2, "O", false),
        event(3, "K", false),
        event(4, "O", false),
        event(5, "K", false),
        event(6, "O", false),
    ])
    .await;
    let dls = s.wait_dead_letters(3).await;
    assert!(
        Collector::wait_until(WAIT, || h.ok_of("O").len() >= 3).await,
        "key O stalled"
    );
    assert_eq!(h.ok_of("O"), [2, 4, 6], "the other key flows in order");
    assert_eq!(h.ok_of("K"), [0]);
    assert_eq!(h.calls_of("K", 1), 3, "the poison event used its attempts");
    assert_eq!(
        (h.calls_of("K", 3), h.calls_of("K", 5)),
        (0, 0),
        "the handler saw a parked event"
    );
    assert_eq!(
        seqs(&dls),
        [
            ("K".into(), 1, "retryable".into()),
            ("K".into(), 3, "parked".into()),
            ("K".into(), 5, "parked".into()),
        ],
        "dead letters in stream order"
    );
    let head = dls[0].id.to_string();
    for parked in &dls[1..] {
        assert!(
            parked.error_message.contains(&head),
            "{}",
            parked.error_message
        );
        assert_eq!(parked.attempts, 0);
    }
    assert_eq!(s.parked("K").await, Some(3));
    assert_eq!(s.parked("O").await, None);
    dls
}

#[tokio::test]
async fn a_parked_key_is_released_by_replaying_its_dead_letters_in_order() {
    released_by_replaying_in_order(true).await;
}

#[tokio::test]
async fn without_postgres_a_parked_key_is_released_by_replaying_its_dead_letters_in_order() {
    released_by_replaying_in_order(false).await;
}

async fn released_by_replaying_in_order(with_postgres: bool) {
    let s = setup("park_replay", with_postgres).await;
    let h = Poisoned::default();
    let c = s.spawn(config(true), h.clone());
    let dls = poison_and_park(&s, &h).await;

    // A later event of K is parked too, behind the same dead letter.
    s.publish(&[event(7, "K", false)]).await;
    let dls4 = s.wait_dead_letters(4).await;
    assert_eq!(seqs(&dls4)[3], ("K".into(), 7, "parked".into()));
    assert_eq!(s.parked("K").await, Some(4));

    // Replaying the poison event while it still fails: it fails again and
    // stays counted; nothing else of K ran.
    assert_eq!(s.replay(&by_id(dls[0].id)).await, 1);
    assert!(
        Collector::wait_until(WAIT, || h.calls_of("K", 1) >= 6).await,
        "the replay was not attempted"
    );
    let again = s.wait_dead_letters(4).await;
    assert_eq!(again.len(), 4, "the failed replay is a dead letter again");
    assert_eq!(
        s.parked("K").await,
        Some(4),
        "a failed replay stays counted"
    );
    assert_eq!(h.ok_of("K"), [0]);

    // Fixed: replaying all of K's dead letters handles them in order and
    // releases the key.
    h.fixed.store(true, Ordering::Relaxed);
    assert_eq!(s.replay(&s.by_key("K")).await, 4);
    assert!(
        Collector::wait_until(WAIT, || h.ok_of("K").len() >= 5).await,
        "replays not handled: {:?}",
        h.ok_of("K")
    );
    assert_eq!(h.ok_of("K"), [0, 1, 3, 5, 7], "replays out of order");
    s.wait_released("K").await;

    // K flows again.
    s.publish(&[event(8, "K", false)]).await;
    assert!(
        Collector::wait_until(WAIT, || h.ok_of("K").len() >= 6).await,
        "K is still held"
    );
    assert_eq!(h.ok_of("K"), [0, 1, 3, 5, 7, 8]);
    assert!(s.new_dead_letters().await.is_empty());
    c.stop().await.unwrap();
}

#[tokio::test]
async fn discarding_a_parked_keys_dead_letters_releases_it() {
    released_by_discarding(true).await;
}

#[tokio::test]
async fn without_postgres_discarding_a_parked_keys_dead_letters_releases_it() {
    released_by_discarding(false).await;
}

async fn released_by_discarding(with_postgres: bool) {
    let s = setup("park_discard", with_postgres).await;
    let h = Poisoned::default();
    let c = s.spawn(config(true), h.clone());
    let dls = poison_and_park(&s, &h).await;

    // Discarding the poison event alone leaves the key held by the rest.
    let one = by_id(dls[0].id);
    assert_eq!(s.store.discard(&one, "test", false).await.unwrap().len(), 1);
    assert_eq!(s.parked("K").await, Some(2));
    s.publish(&[event(7, "K", false)]).await;
    let held = s.wait_dead_letters(3).await;
    assert_eq!(seqs(&held)[2], ("K".into(), 7, "parked".into()));
    assert!(
        held[2].error_message.contains(&dls[1].id.to_string()),
        "parked behind the new head: {}",
        held[2].error_message
    );

    // Discarding the rest releases it.
    let rest = s
        .store
        .discard(&s.by_key("K"), "test", false)
        .await
        .unwrap();
    assert_eq!(rest.len(), 3);
    assert_eq!(s.parked("K").await, None);
    s.publish(&[event(8, "K", false)]).await;
    assert!(
        Collector::wait_until(WAIT, || h.ok_of("K").len() >= 2).await,
        "K is still held"
    );
    assert_eq!(h.ok_of("K"), [0, 8]);
    assert_eq!(h.calls_of("K", 7), 0);
    c.stop().await.unwrap();
}

#[tokio::test]
async fn without_park_mode_later_events_of_the_key_are_handled() {
    let s = setup("park_off", true).await;
    let h = Poisoned::default();
    let c = s.spawn(config(false), h.clone());
    s.publish(&[
        event(0, "K", false),
        event(1, "K", true),
        event(2, "O", false),
        event(3, "K", false),
    ])
    .await;
    assert!(
        Collector::wait_until(WAIT, || h.ok_of("K").len() >= 2 && !h.ok_of("O").is_empty()).await,
        "stalled"
    );
    assert_eq!(h.ok_of("K"), [0, 3]);
    let dls = s.wait_dead_letters(1).await;
    assert_eq!(seqs(&dls), [("K".into(), 1, "retryable".into())]);
    assert_eq!(s.parked("K").await, None);
    c.stop().await.unwrap();
}

#[test]
fn park_mode_needs_ordered_mode() {
    let mut c = config(true);
    assert!(c.validate().is_ok());
    c.mode = ConsumerMode::Unordered;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("needs ordered mode"), "{e}");
}

/// Replays of a parked key wait for the older ones without using up their
/// attempts: a key with many more dead letters than the retry policy has
/// attempts (3 here, 200 ms apart) is still released by one replay of all
/// of them, handled in order, none dead-lettered again, also when they are
/// all in flight at once.
#[tokio::test]
async fn a_long_parked_key_is_released_by_one_replay_of_all_its_dead_letters() {
    let s = setup("park_long", false).await;
    let h = Poisoned::default();
    let c = s.spawn(config(true), h.clone());
    let dls = poison_and_park(&s, &h).await;
    let later: Vec<Envelope> = (7..=30).map(|seq| event(seq, "K", false)).collect();
    s.publish(&later).await;
    let all = s.wait_dead_letters(3 + later.len()).await;
    assert_eq!(s.parked("K").await, Some(all.len() as u64));
    assert_eq!(all[0].id, dls[0].id);

    // Replayed while the consumer is down, so that it reads them all at
    // once and they are in flight together when it starts again.
    c.stop().await.unwrap();
    h.fixed.store(true, Ordering::Relaxed);
    assert_eq!(s.replay(&s.by_key("K")).await, all.len());
    let c = s.spawn(config(true), h.clone());
    let want: Vec<i64> = [0, 1, 3, 5].into_iter().chain(7..=30).collect();
    assert!(
        Collector::wait_until(WAIT, || h.ok_of("K").len() >= want.len()).await,
        "replays not handled: {:?}",
        h.ok_of("K")
    );
    assert_eq!(h.ok_of("K"), want, "replays out of order");
    assert!(
        s.new_dead_letters().await.is_empty(),
        "a waiting replay was dead-lettered again: {:?}",
        seqs(&s.new_dead_letters().await)
    );
    s.wait_released("K").await;
    c.stop().await.unwrap();
}

/// A younger dead letter replayed alone, while the key's oldest one is not
/// resolved, waits (the oldest stays the same, so each attempt ends after
/// the stall time), is never handled, and returns to dead letters with the
/// key still held by all of them.
#[tokio::test]
async fn a_younger_replay_alone_waits_then_returns_to_dead_letters() {
    let s = setup("park_younger", false).await;
    let h = Poisoned::default();
    let c = s.spawn(config(true), h.clone());
    let dls = poison_and_park(&s, &h).await;
    assert_eq!(s.replay(&by_id(dls[1].id)).await, 1);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let new = s.new_dead_letters().await;
        if new.iter().any(|d| d.id == dls[1].id) {
            let again = new.iter().find(|d| d.id == dls[1].id).unwrap();
            assert!(
                again.error_message.contains(&dls[0].id.to_string()),
                "{}",
                again.error_message
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the waiting replay never returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h.calls_of("K", 3), 0, "a replay ran out of turn");
    assert_eq!(h.ok_of("K"), [0]);
    assert_eq!(s.parked("K").await, Some(3));
    c.stop().await.unwrap();
}
