//! Nothing stalls the bus: events PostgreSQL cannot hold as text (U+0000),
//! stream entries that are not UTF-8, a dead-letter store that refuses every
//! row, and outbox rows that cannot be published are each dead-lettered with
//! their exact bytes and reason, while every event behind them moves on, in
//! order in ordered mode. Real Redis and PostgreSQL (private servers where a
//! server is reconfigured).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use eventbus::deadletter::{
    decode_raw_fields, DeadLetter, DeadLetterFilter, DeadLetterStore, DeadLetterWriter,
    ReplayOptions,
};
use eventbus::pg::{OutboxSettings, Relay, RelayConfig};
use eventbus::{
    Backoff, ConsumerConfig, ConsumerMode, Delivery, Envelope, Handler, HandlerError, Publisher,
    PublisherConfig, RedisConnector, RedisOptions, RetryPolicy, Topology,
};
use eventbus_testkit::conformance::{publisher, Running};
use eventbus_testkit::{
    fast_config, shared_redis_url, Collector, RedisServer, TestNamespace, TestSchema,
};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(90);
const BEHIND: usize = 1000;

fn config(mode: ConsumerMode) -> ConsumerConfig {
    let mut c = fast_config("g", &["work_item"], mode);
    c.retry = RetryPolicy {
        max_attempts: 2,
        backoff: Backoff::Schedule(vec![Duration::from_millis(20)]),
        attempt_timeout: Some(Duration::from_secs(5)),
    };
    c
}

/// Fails events whose `data.poison` is set (permanently) and records the
/// `data.seq` of the others in the order handled.
#[derive(Clone, Default)]
struct Recorder {
    seqs: Arc<Mutex<Vec<i64>>>,
}

impl Handler for Recorder {
    async fn handle(&self, d: Delivery) -> Result<(), HandlerError> {
        if d.envelope.data.get("poison").is_some() {
            return Err(HandlerError::permanent("poison"));
        }
        let seq = d.envelope.data["seq"].as_i64().expect("seq");
        self.seqs.lock().unwrap().push(seq);
        Ok(())
    }
}

impl Recorder {
    fn seqs(&self) -> Vec<i64> {
        self.seqs.lock().unwrap().clone()
    }

    /// Waits for `n` distinct seqs; returns them in first-seen order.
    async fn wait_distinct(&self, n: usize) -> Vec<i64> {
        let ok = Collector::wait_until(WAIT, || distinct(&self.seqs()).len() >= n).await;
        let got = distinct(&self.seqs());
        assert!(
            ok,
            "only {} of {n} events handled: the bus stalled",
            got.len()
        );
        got
    }
}

fn distinct(seqs: &[i64]) -> Vec<i64> {
    let mut seen = std::collections::HashSet::new();
    seqs.iter().copied().filter(|s| seen.insert(*s)).collect()
}

fn good(seq: usize, key: &str) -> Envelope {
    Envelope::new(
        "work_item.processing_failed",
        key,
        serde_json::json!({ "seq": seq }),
    )
}

fn spawn<'a>(
    url: &str,
    topology: &Topology,
    mode: ConsumerMode,
    h: Recorder,
    db: impl Into<Option<&'a TestSchema>>,
) -> Running {
    let connector = RedisConnector::new(url, RedisOptions::default()).unwrap();
    let mut consumer =
        eventbus::Consumer::new(connector, topology.clone(), config(mode), h).unwrap();
    if let Some(db) = db.into() {
        consumer = consumer.with_dead_letter_store(db.pool().clone(), db.schema().clone());
    }
    Running::spawn(consumer)
}

/// The PostgreSQL store of `db`, or without one the records in Redis.
async fn store<'a>(
    url: &str,
    topology: &Topology,
    db: impl Into<Option<&'a TestSchema>>,
) -> DeadLetterStore {
    let redis = RedisConnector::new(url, RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    match db.into() {
        Some(db) => DeadLetterStore::new(
            db.pool().clone(),
            db.schema().clone(),
            topology.clone(),
            redis,
        ),
        None => DeadLetterStore::in_redis(topology.clone(), redis),
    }
}

async fn wait_dead_letters(store: &DeadLetterStore, n: usize) -> Vec<DeadLetter> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let all = store.list(&DeadLetterFilter::default()).await.unwrap();
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

/// A stream entry as `(id, exact fields)`.
type RawEntry = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// Every entry of a stream.
async fn raw_stream(url: &str, stream: &str) -> Vec<RawEntry> {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let v: Vec<RawEntry> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    v
}

/// Events with U+0000 in data, key, source, and a header (name and value).
fn nul_events() -> Vec<Envelope> {
    let poison = |key: &str| {
        Envelope::new(
            "work_item.processing_failed",
            key,
            serde_json::json!({ "poison": true }),
        )
    };
    let mut in_data = poison("k");
    in_data.data["text"] = "a\u{0}b".into();
    in_data.data["k\u{0}ey"] = serde_json::json!(["\u{0}"]);
    let in_key = poison("k\u{0}");
    let in_source = poison("k").with_source("svc\u{0}x");
    let in_header = poison("k").with_header("h\u{0}", "v\u{0}");
    vec![in_data, in_key, in_source, in_header]
}

/// With `with_postgres` false, the records are in Redis (no PostgreSQL).
async fn nul_in_any_field_is_dead_lettered_and_replayed_exactly(
    mode: ConsumerMode,
    with_postgres: bool,
) {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, "nul");
    let db = match with_postgres {
        true => Some(TestSchema::new("nul").await),
        false => None,
    };
    let topology = ns.topology(1); // one partition: everything is behind the poison events
    let handler = Recorder::default();
    let c = spawn(&url, &topology, mode, handler.clone(), db.as_ref());
    let poisons = nul_events();
    let p = publisher(&url, &topology).await;
    p.publish_batch(&poisons).await.unwrap();
    let rest: Vec<Envelope> = (0..BEHIND)
        .map(|i| good(i, &format!("k{}", i % 7)))
        .collect();
    p.publish_batch(&rest).await.unwrap();

    let got = handler.wait_distinct(BEHIND).await;
    if mode == ConsumerMode::Ordered {
        assert_eq!(got, (0..BEHIND as i64).collect::<Vec<_>>(), "order changed");
    }
    let store = store(&url, &topology, db.as_ref()).await;
    let dls = wait_dead_letters(&store, poisons.len()).await;
    c.stop().await.unwrap();

    for e in &poisons {
        let dl = dls.iter().find(|d| d.event_id == e.id).expect("listed");
        assert_eq!(
            dl.envelope,
            serde_json::to_value(e).unwrap(),
            "shown exactly"
        );
        assert_eq!(dl.key, e.key);
        assert!(dl.raw_fields.is_some(), "exact fields kept");
        let (shown, _) = store.get(dl.id).await.unwrap().unwrap();
        assert_eq!(shown.envelope, dl.envelope);
    }
    let report = store
        .replay(&DeadLetterFilter::default(), &ReplayOptions::default())
        .await
        .unwrap();
    assert_eq!(report.replayed, poisons.len());
    let replayed = raw_stream(&url, &topology.replay_stream("g")).await;
    assert_eq!(replayed.len(), poisons.len());
    for (_, fields) in replayed {
        let mut back =
            Envelope::from_fields(fields.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
                .unwrap();
        back.headers.remove("eventbus-replay-of");
        back.headers.remove("eventbus-replay-count");
        let original = poisons.iter().find(|e| e.id == back.id).unwrap();
        assert_eq!(&back, original, "replayed event differs");
        // Byte for byte: every field but the headers (which gained the
        // replay's own) is the original's encoding.
        for (name, value) in original.to_fields() {
            if name != "headers" {
                let got = fields.iter().find(|(k, _)| k == name.as_bytes()).unwrap();
                assert_eq!(got.1, value.as_bytes(), "field {name}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_nul_in_any_field_is_dead_lettered_and_replayed_exactly() {
    nul_in_any_field_is_dead_lettered_and_replayed_exactly(ConsumerMode::Ordered, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_postgres_nul_in_any_field_is_dead_lettered_and_replayed_exactly() {
    nul_in_any_field_is_dead_lettered_and_replayed_exactly(ConsumerMode::Ordered, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unordered_nul_in_any_field_is_dead_lettered_and_replayed_exactly() {
    nul_in_any_field_is_dead_lettered_and_replayed_exactly(ConsumerMode::Unordered, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_entry_that_is_not_utf8_keeps_its_raw_fields() {
    a_stream_entry_that_is_not_utf8_keeps_its_raw_fields_in(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_postgres_a_stream_entry_that_is_not_utf8_keeps_its_raw_fields() {
    a_stream_entry_that_is_not_utf8_keeps_its_raw_fields_in(false).await;
}

/// With `with_postgres` false, the records are in Redis (no PostgreSQL).
async fn a_stream_entry_that_is_not_utf8_keeps_its_raw_fields_in(with_postgres: bool) {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, "nonutf8");
    let db = match with_postgres {
        true => Some(TestSchema::new("nonutf8").await),
        false => None,
    };
    let topology = ns.topology(1);
    let handler = Recorder::default();
    let c = spawn(
        &url,
        &topology,
        ConsumerMode::Ordered,
        handler.clone(),
        db.as_ref(),
    );
    let stream = topology.stream_key("work_item", 0);
    let fields: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"v".to_vec(), b"1".to_vec()),
        (
            b"id".to_vec(),
            uuid::Uuid::now_v7().to_string().into_bytes(),
        ),
        (b"type".to_vec(), b"work_item.processing_failed".to_vec()),
        (b"data".to_vec(), vec![0xff, 0xfe, b'{', 0]),
        (vec![0xc3, 0x28], b"x".to_vec()),
    ];
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut cmd = redis::cmd("XADD");
    cmd.arg(&stream).arg("*");
    for (k, v) in &fields {
        cmd.arg(k.as_slice()).arg(v.as_slice());
    }
    let _: String = cmd.query_async(&mut conn).await.unwrap();
    let p = publisher(&url, &topology).await;
    let rest: Vec<Envelope> = (0..100).map(|i| good(i, "k")).collect();
    p.publish_batch(&rest).await.unwrap();
    assert_eq!(
        handler.wait_distinct(100).await,
        (0..100).collect::<Vec<_>>()
    );

    let store = store(&url, &topology, db.as_ref()).await;
    let dl = wait_dead_letters(&store, 1).await.remove(0);
    assert_eq!(dl.error_class, "invalid");
    let shown = dl.raw_fields.expect("raw fields kept");
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let data = shown
        .iter()
        .find(|f| f.name.as_deref() == Some("data"))
        .unwrap();
    assert_eq!(
        data.value_base64.as_deref(),
        Some(b64(&fields[3].1).as_str())
    );
    assert!(shown
        .iter()
        .any(|f| f.name_base64.as_deref() == Some(b64(&fields[4].0).as_str())));
    // The stored bytes are exactly the entry's.
    let raw: Vec<u8> = match &db {
        Some(db) => {
            let (raw,): (Vec<u8>,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT raw_fields FROM {} WHERE id = $1",
                db.table("eventbus_dead_letters")
            )))
            .bind(dl.id)
            .fetch_one(db.pool())
            .await
            .unwrap();
            raw
        }
        None => {
            let records = format!("{0}:{{{1}}}:records", ns.name(), topology.dead_stream());
            let record: String = redis::cmd("HGET")
                .arg(records)
                .arg(dl.id.to_string())
                .query_async(&mut conn)
                .await
                .unwrap();
            let record: serde_json::Value = serde_json::from_str(&record).unwrap();
            base64::engine::general_purpose::STANDARD
                .decode(record["raw_fields_base64"].as_str().unwrap())
                .unwrap()
        }
    };
    assert_eq!(decode_raw_fields(&raw), Some(fields));
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refuses_every_dead_letter_does_not_stop_the_partition() {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, "refuse");
    let db = TestSchema::new("refuse").await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION {s}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no dead letters today'; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT ON {s}.eventbus_dead_letters FOR EACH ROW EXECUTE FUNCTION {s}.refuse();",
        s = db.name()
    )))
    .execute(db.pool())
    .await
    .unwrap();
    let topology = ns.topology(1);
    let handler = Recorder::default();
    let c = spawn(&url, &topology, ConsumerMode::Ordered, handler.clone(), &db);
    let p = publisher(&url, &topology).await;
    let poisons = nul_events();
    p.publish_batch(&poisons).await.unwrap();
    let rest: Vec<Envelope> = (0..BEHIND).map(|i| good(i, "k")).collect();
    p.publish_batch(&rest).await.unwrap();
    assert_eq!(
        handler.wait_distinct(BEHIND).await,
        (0..BEHIND as i64).collect::<Vec<_>>()
    );
    // Every dead letter has its Redis copy, marked as missing in the store.
    let dead = raw_stream(&url, &topology.dead_stream()).await;
    assert_eq!(dead.len(), poisons.len());
    for (_, fields) in &dead {
        assert!(fields
            .iter()
            .any(|(k, v)| k == b"dl_store" && v == b"missing"));
    }
    c.stop().await.unwrap();

    // Once the store takes rows again, the copies are made (idempotently).
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TRIGGER refuse ON {}.eventbus_dead_letters",
        db.name()
    )))
    .execute(db.pool())
    .await
    .unwrap();
    let redis = RedisConnector::new(&url, RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    let writer = DeadLetterWriter::new(
        redis,
        &topology,
        Some((db.pool().clone(), db.schema().clone())),
    );
    assert_eq!(writer.backfill(0).await.unwrap(), poisons.len());
    writer.backfill(0).await.unwrap();
    let store = store(&url, &topology, &db).await;
    let dls = store.list(&DeadLetterFilter::default()).await.unwrap();
    assert_eq!(dls.len(), poisons.len(), "copied once each");
    for e in &poisons {
        let dl = dls.iter().find(|d| d.event_id == e.id).unwrap();
        assert_eq!(dl.envelope, serde_json::to_value(e).unwrap());
    }
}

// ---- the outbox ----

async fn sql(db: &TestSchema, statement: &str) -> Result<(), sqlx::Error> {
    let mut tx = db.pool().begin().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL search_path TO {}",
        db.name()
    )))
    .execute(&mut *tx)
    .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

fn insert(key: &str, headers: &str, data: &str, partition: Option<i32>) -> String {
    let (col, val) = match partition {
        Some(p) => (", partition", format!(", {p}")),
        None => ("", String::new()),
    };
    format!(
        "INSERT INTO eventbus_outbox (event_id, event_type, key, headers, data{col}) \
         VALUES (gen_random_uuid(), 'work_item.processing_failed', '{key}', '{headers}', '{data}'{val})"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_refuses_each_kind_of_bad_row_at_insert_with_its_reason() {
    let db = TestSchema::new("obrefuse").await;
    let mut conn = db.pool().acquire().await.unwrap();
    eventbus::pg::record_settings(
        &mut conn,
        db.schema(),
        OutboxSettings {
            partitions: 4,
            max_event_bytes: 10_000,
        },
    )
    .await
    .unwrap();
    let big = format!(r#"{{"x": "{}"}}"#, "a".repeat(20_000));
    let cases = [
        (
            insert("k", r#"{"attempt": 3}"#, "{}", None),
            "eventbus_outbox_headers_are_strings",
            r#"header "attempt" must be a string, not a number"#,
        ),
        (
            insert("k", "{}", "[1, 2]", None),
            "eventbus_outbox_data_is_object",
            "data must be a JSON object, not array",
        ),
        (
            insert("k", "{}", &big, None),
            "eventbus_outbox_size_within_limit",
            "over the limit of 10000 bytes",
        ),
        (
            insert("k", "{}", "{}", Some(4)),
            "eventbus_outbox_partition_in_range",
            "partition 4 is out of range: this outbox has 4 partitions",
        ),
    ];
    for (statement, constraint, message) in cases {
        let err = sql(&db, &statement).await.unwrap_err();
        let db_err = err.as_database_error().expect("a database error");
        assert_eq!(db_err.code().as_deref(), Some("23514"), "{err}");
        assert_eq!(db_err.constraint(), Some(constraint));
        assert!(db_err.message().contains(message), "{}", db_err.message());
    }
    // Left out, the partition is the key's among the recorded four.
    sql(&db, &insert("wo-1", "{}", "{}", None)).await.unwrap();
    let (p,): (i32,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT partition FROM {}",
        db.table("eventbus_outbox")
    )))
    .fetch_one(db.pool())
    .await
    .unwrap();
    let topology = Topology::new("ob-refuse", 4).unwrap();
    assert_eq!(p as u32, topology.partition_of("wo-1"));

    // The library reports a refusal as an invalid event, in words.
    let outbox = eventbus::pg::Outbox::new(
        topology,
        eventbus::pg::OutboxConfig {
            schema: db.schema().clone(),
            ..Default::default()
        },
    )
    .unwrap();
    let err = outbox
        .enqueue(
            db.pool(),
            &Envelope::new("work_item.x", "k", serde_json::json!([1])),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, eventbus::Error::InvalidEvent(m) if m.contains("data must be a JSON object")),
        "{err}"
    );
}

/// Records the topology's partition count as `eventbus migrate` does.
async fn record_partitions(db: &TestSchema, topology: &Topology, max_event_bytes: usize) {
    let settings = OutboxSettings {
        partitions: topology.partitions(),
        max_event_bytes,
    };
    let mut conn = db.pool().acquire().await.unwrap();
    eventbus::pg::record_settings(&mut conn, db.schema(), settings)
        .await
        .unwrap();
}

async fn run_relay(db: &TestSchema, publisher: Publisher) -> (Relay, CancellationToken) {
    let relay = Relay::new(
        db.pool().clone(),
        publisher,
        db.schema().clone(),
        RelayConfig::default(),
    )
    .unwrap();
    let token = CancellationToken::new();
    tokio::spawn(relay.clone().run(token.clone()));
    (relay, token)
}

fn good_rows(from: usize, n: usize, partition: Option<i32>) -> String {
    (from..from + n)
        .map(|i| insert("same", "{}", &format!(r#"{{"seq": {i}}}"#), partition))
        .collect::<Vec<_>>()
        .join(";\n")
}

async fn outbox_dead_letters(db: &TestSchema, n: usize) -> Vec<(String, String, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT error_class, error_message, raw_fields FROM {} WHERE origin = 'outbox' ORDER BY entry_id",
            db.table("eventbus_dead_letters")
        )))
        .fetch_all(db.pool())
        .await
        .unwrap();
        if rows.len() >= n {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} outbox dead letters",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_before_the_checks_are_dead_lettered_and_the_partition_moves_on() {
    let url = shared_redis_url();
    let ns = TestNamespace::new(&url, "obisolate");
    let db = TestSchema::new("obisolate").await;
    let topology = ns.topology(2);
    record_partitions(&db, &topology, 1 << 20).await;
    // As if written before migration 0004: no checks at INSERT.
    sql(
        &db,
        "ALTER TABLE eventbus_outbox DISABLE TRIGGER eventbus_outbox_check",
    )
    .await
    .unwrap();
    let part = topology.partition_of("same");
    let oversized = format!(r#"{{"x": "{}"}}"#, "a".repeat(1_100_000));
    let bad = [
        insert("same", r#"{"attempt": 3}"#, "{}", Some(part as i32)),
        insert("same", "{}", r#""just a string""#, Some(part as i32)),
        insert("same", "{}", &oversized, Some(part as i32)),
        insert("same", "{}", "{}", Some(7)),
    ];
    let mut script = Vec::new();
    for (i, b) in bad.iter().enumerate() {
        script.push(good_rows(i * 250, 250, Some(part as i32)));
        script.push(b.clone());
    }
    sql(&db, &script.join(";\n")).await.unwrap();
    sql(
        &db,
        "ALTER TABLE eventbus_outbox ENABLE TRIGGER eventbus_outbox_check",
    )
    .await
    .unwrap();

    let handler = Recorder::default();
    let c = spawn(&url, &topology, ConsumerMode::Ordered, handler.clone(), &db);
    let (relay, token) = run_relay(&db, publisher(&url, &topology).await).await;
    let got = handler.wait_distinct(BEHIND).await;
    assert_eq!(got, (0..BEHIND as i64).collect::<Vec<_>>(), "order changed");
    let dls = outbox_dead_letters(&db, bad.len()).await;
    let reasons: Vec<&str> = dls.iter().map(|(_, m, _)| m.as_str()).collect();
    for want in [
        "headers are not a JSON object of strings",
        "data is not a JSON object",
        "over the limit of 1048576 bytes",
        "partition 7 is out of range",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(want)),
            "{want}: {reasons:?}"
        );
    }
    for (class, _, raw) in &dls {
        assert_eq!(class, "invalid");
        let fields = decode_raw_fields(raw).expect("the row as written");
        assert!(fields.iter().any(|(k, _)| k == b"data"));
    }
    let header_row = dls
        .iter()
        .find(|(_, m, _)| m.contains("headers"))
        .map(|(_, _, raw)| decode_raw_fields(raw).unwrap())
        .unwrap();
    let headers = header_row.iter().find(|(k, _)| k == b"headers").unwrap();
    assert_eq!(headers.1, br#"{"attempt": 3}"#);
    assert_eq!(
        relay
            .stats()
            .rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        bad.len() as u64
    );
    let (left,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        db.table("eventbus_outbox")
    )))
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(left, 0, "nothing left behind in the outbox");
    token.cancel();
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_redis_refuses_is_dead_lettered_and_the_rows_around_it_are_delivered_in_order() {
    // Redis refuses a value over proto-max-bulk-len (1 MB, its minimum); the
    // relay's own limit is set higher, so only Redis can refuse it.
    let server = RedisServer::start_with(&["--proto-max-bulk-len", "1mb"]);
    let url = server.url();
    let ns = TestNamespace::new(&url, "obredis");
    let db = TestSchema::new("obredis").await;
    let topology = ns.topology(2);
    let connector = RedisConnector::new(&url, RedisOptions::default()).unwrap();
    let publisher = Publisher::connect(
        &connector,
        topology.clone(),
        PublisherConfig {
            max_event_bytes: 4 << 20,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    record_partitions(&db, &topology, 4 << 20).await; // as the relay's limit
    let huge = format!(r#"{{"seq": -1, "x": "{}"}}"#, "a".repeat(1_500_000));
    let script = [
        good_rows(0, 500, None),
        insert("same", "{}", &huge, None),
        good_rows(500, 500, None),
    ]
    .join(";\n");
    sql(&db, &script).await.unwrap();

    let handler = Recorder::default();
    let c = spawn(&url, &topology, ConsumerMode::Ordered, handler.clone(), &db);
    let (relay, token) = run_relay(&db, publisher).await;
    let got = handler.wait_distinct(BEHIND).await;
    assert_eq!(got, (0..BEHIND as i64).collect::<Vec<_>>(), "order changed");
    let dls = outbox_dead_letters(&db, 1).await;
    assert!(dls[0].1.contains("Redis refused the event"), "{}", dls[0].1);
    assert_eq!(
        relay
            .stats()
            .rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    token.cancel();
    c.stop().await.unwrap();
}

/// A Redis that refuses every write (out of memory under noeviction)
/// answers PING: the relay must not take that for a refusal of each event.
/// Nothing is dead-lettered, the rows wait in the outbox, and once Redis
/// takes writes again they are delivered in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_refusing_every_write_dead_letters_nothing() {
    let server = RedisServer::start();
    let url = server.url();
    let ns = TestNamespace::new(&url, "oboom");
    let db = TestSchema::new("oboom").await;
    let topology = ns.topology(2);
    record_partitions(&db, &topology, 1 << 20).await;
    let mut admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let set_maxmemory = |n: &'static str| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(n)
            .clone()
    };
    let _: () = set_maxmemory("1").query_async(&mut admin).await.unwrap();
    sql(&db, &good_rows(0, 100, None)).await.unwrap();
    let (relay, token) = run_relay(&db, publisher(&url, &topology).await).await;
    let refused = Collector::wait_until(WAIT, || {
        relay
            .stats()
            .errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    })
    .await;
    assert!(refused, "the relay never met the refusal");
    assert_eq!(
        relay
            .stats()
            .rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let (dead,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        db.table("eventbus_dead_letters")
    )))
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(dead, 0, "an outage is not a bad row");

    let _: () = set_maxmemory("0").query_async(&mut admin).await.unwrap();
    let handler = Recorder::default();
    let c = spawn(&url, &topology, ConsumerMode::Ordered, handler.clone(), &db);
    assert_eq!(
        handler.wait_distinct(100).await,
        (0..100).collect::<Vec<_>>()
    );
    token.cancel();
    c.stop().await.unwrap();
}
