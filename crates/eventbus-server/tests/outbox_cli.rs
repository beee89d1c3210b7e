//! The outbox, relay and inbox through the built binary: migrate, publish
//! --via-outbox, relay, consume --inbox (--exec and --sql), bad input, several
//! relays at once, and crash tests with SIGKILL.

#[allow(dead_code)] // each test file uses some of the helpers
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use eventbus_testkit::{shared_redis_url, TestNamespace, TestSchema};
use rand::Rng;

const WAIT: Duration = Duration::from_secs(120);

/// The binary with a clean environment, pointed at a namespace and a schema.
fn eventbus(ns: &TestNamespace, db: &str, schema: &str) -> Command {
    let mut c = common::eventbus_pg(ns, db, schema, 8);
    // A namespace on a private cluster: reach it the way operators do, by
    // REDIS_CLUSTER_NODES.
    if let Some(nodes) = ns.url().strip_prefix("redis+cluster://") {
        c.env_remove("REDIS_URL").env("REDIS_CLUSTER_NODES", nodes);
    }
    c
}

fn run(mut c: Command) -> Output {
    c.output().expect("run eventbus")
}

fn error_line(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .find(|l| l.starts_with("eventbus: error: "))
        .unwrap_or_else(|| panic!("no error line in {:?}", String::from_utf8_lossy(&o.stderr)))
        .to_owned()
}

fn batch_file(dir: &Path, name: &str, lines: impl IntoIterator<Item = String>) -> String {
    let path = dir.join(name);
    std::fs::write(&path, lines.into_iter().collect::<Vec<_>>().join("\n")).unwrap();
    path.to_string_lossy().into_owned()
}

fn keyed_events(keys: usize, per_key: usize) -> Vec<String> {
    // round-robin over keys, so per-key order must survive interleaving
    (0..per_key)
        .flat_map(|seq| {
            (0..keys).map(move |k| {
                format!(r#"{{"type":"work_item.processing_started","key":"wi-{k}","data":{{"seq":{seq}}}}}"#)
            })
        })
        .collect()
}

async fn scalar(db: &TestSchema, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(db.pool())
        .await
        .unwrap();
    n
}

async fn backlog(db: &TestSchema) -> i64 {
    scalar(
        db,
        &format!(
            "SELECT count(*) FROM {} WHERE published_at IS NULL",
            db.table("eventbus_outbox")
        ),
    )
    .await
}

/// Kills its process when dropped, so a failing test leaves nothing running.
struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    fn take(mut self) -> Child {
        self.0.take().expect("child present")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            kill9(c);
        }
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn kill9(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
}

/// Reads every stream of the topic and returns, per key, the `seq` values
/// in stream order.
fn sequences_by_key(ns: &TestNamespace, partitions: u32) -> BTreeMap<String, Vec<i64>> {
    let mut conn = redis::Client::open(ns.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for p in 0..partitions {
        let stream = format!("{}:{{work_item:{p}}}", ns.name());
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .query(&mut conn)
            .unwrap();
        for (_, fields) in entries {
            let f: HashMap<_, _> = fields.into_iter().collect();
            let data: serde_json::Value = serde_json::from_str(&f["data"]).unwrap();
            out.entry(f["key"].clone())
                .or_default()
                .push(data["seq"].as_i64().unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn via_outbox_relay_and_inbox_exec_end_to_end() {
    let ns = TestNamespace::new(shared_redis_url(), "ob-cli");
    let db = TestSchema::new("obcli").await;
    let dir = tempfile::tempdir().unwrap();
    let file = batch_file(dir.path(), "events.jsonl", keyed_events(10, 10));
    let mut publish = eventbus(&ns, db.url(), db.name());
    publish.args(["publish", "--no-validate", "--via-outbox", "--batch", &file]);
    let out = run(publish);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: HashSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 100);
    assert_eq!(backlog(&db).await, 100);

    let mut status = eventbus(&ns, db.url(), db.name());
    status.args(["outbox", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&run(status).stdout).unwrap();
    assert_eq!(status["backlog"], 100);

    let relay = KillOnDrop(Some(
        eventbus(&ns, db.url(), db.name())
            .args(["relay"])
            .spawn()
            .unwrap(),
    ));
    let seen = dir.path().join("seen");
    let mut consume = eventbus(&ns, db.url(), db.name());
    consume.args([
        "consume",
        "--no-validate",
        "--group",
        "g",
        "--topics",
        "work_item",
        "--inbox",
        "--max-events",
        "100",
        "--exec",
        &format!("echo $EVENTBUS_EVENT_ID >> {}", seen.display()),
    ]);
    let out = run(consume);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop(relay.take());
    let got: HashSet<String> = std::fs::read_to_string(&seen)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(got, ids);
    assert_eq!(backlog(&db).await, 0);
    let inbox_rows = scalar(
        &db,
        &format!("SELECT count(*) FROM {}", db.table("eventbus_inbox")),
    )
    .await;
    assert_eq!(inbox_rows, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_outbox_input_is_refused_clearly_and_writes_nothing() {
    let ns = TestNamespace::new(shared_redis_url(), "ob-bad");
    let db = TestSchema::new("obbadcli").await;
    let dir = tempfile::tempdir().unwrap();
    let outbox_rows = format!("SELECT count(*) FROM {}", db.table("eventbus_outbox"));

    let good = batch_file(dir.path(), "good.jsonl", keyed_events(2, 2));
    let mut c = eventbus(&ns, db.url(), db.name());
    c.args(["publish", "--no-validate", "--via-outbox", "--batch", &good]);
    assert!(run(c).status.success());
    assert_eq!(scalar(&db, &outbox_rows).await, 4);

    let publish = |extra_env: &[(&str, &str)], args: &[&str]| {
        let mut c = eventbus(&ns, db.url(), db.name());
        for (k, v) in extra_env {
            c.env(k, v);
        }
        c.args(["publish", "--no-validate", "--via-outbox"])
            .args(args);
        run(c)
    };
    let single = ["--type", "work_item.x", "--key", "k", "--data"];
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(5000));
    let cases: Vec<(Output, i32, &str)> = vec![
        (
            publish(
                &[("EVENT_BUS_MAX_EVENT_BYTES", "1000")],
                &[&single[..], &[big.as_str()]].concat(),
            ),
            2,
            "over the limit",
        ),
        (publish(&[], &[&single[..], &["{nope"]].concat()), 2, "JSON"),
        (
            publish(
                &[],
                &[
                    "--batch",
                    &batch_file(
                        dir.path(),
                        "bad.jsonl",
                        [keyed_events(1, 1)[0].clone(), "{".into()],
                    ),
                ],
            ),
            2,
            "line 2",
        ),
        (
            publish(
                &[("EVENT_BUS_DB_SCHEMA", "Bad-Name")],
                &[&single[..], &["{}"]].concat(),
            ),
            2,
            "EVENT_BUS_DB_SCHEMA",
        ),
        (
            publish(
                &[("EVENT_BUS_DB_SCHEMA", "never_migrated_x")],
                &[&single[..], &["{}"]].concat(),
            ),
            1,
            "eventbus migrate",
        ),
        (
            publish(&[("DATABASE_URL", "")], &[&single[..], &["{}"]].concat()),
            2,
            "DATABASE_URL",
        ),
        (
            publish(
                &[("DATABASE_URL", "postgres://u:sentinel-pw@127.0.0.1:1/db")],
                &[&single[..], &["{}"]].concat(),
            ),
            69,
            "***",
        ),
    ];
    for (out, code, needle) in &cases {
        let line = error_line(out);
        assert_eq!(out.status.code(), Some(*code), "{line}");
        assert!(line.contains(needle), "{needle:?} not in {line:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("sentinel-pw"));
    }
    // consume --sql is checked before it consumes anything
    let mut c = eventbus(&ns, db.url(), db.name());
    c.args([
        "consume",
        "--no-validate",
        "--group",
        "g",
        "--inbox",
        "--sql",
        "INSERT INTO nowhere VALUES ($1)",
    ]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2), "{}", error_line(&out));
    assert!(error_line(&out).contains("--sql"));
    let mut c = eventbus(&ns, db.url(), db.name());
    c.args(["consume", "--group", "g", "--sql", "SELECT 1"]);
    assert_eq!(run(c).status.code(), Some(2), "--sql needs --inbox");
    // --inbox-savepoints: only with --sql, and only its two values.
    for (args, needles) in [
        (&["--inbox-savepoints", "on-failure"][..], &["--sql"][..]),
        (
            &["--sql", "SELECT 1", "--inbox-savepoints", "sometimes"],
            &["sometimes", "on-failure"],
        ),
    ] {
        let mut c = eventbus(&ns, db.url(), db.name());
        c.args(["consume", "--group", "g", "--inbox"]).args(args);
        let out = run(c);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(needles.iter().all(|n| stderr.contains(n)), "{stderr}");
    }

    // nothing was half written, and the earlier events are intact
    assert_eq!(scalar(&db, &outbox_rows).await, 4);
    let mut c = eventbus(&ns, db.url(), db.name());
    c.args([
        "publish",
        "--no-validate",
        "--via-outbox",
        "--type",
        "work_item.ok",
        "--key",
        "k",
        "--data",
        "{}",
    ]);
    assert!(run(c).status.success());
    assert_eq!(scalar(&db, &outbox_rows).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_from_several_processes_at_once() {
    let ns = TestNamespace::new(shared_redis_url(), "ob-mig");
    let schema = TestSchema::unmigrated_name("obmigcli");
    let db = eventbus_testkit::shared_database_url();
    let children: Vec<Child> = (0..3)
        .map(|_| {
            eventbus(&ns, &db, schema.name())
                .args(["migrate", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut applied = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        applied.extend(
            v["applied"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap()),
        );
    }
    applied.sort_unstable();
    let all: Vec<i64> = eventbus::pg::migrations()
        .iter()
        .map(|m| i64::from(m.version))
        .collect();
    assert_eq!(applied, all, "exactly one process applies each migration");
    let pool = eventbus::pg::connect_pool(&db, 1, "t").await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{}\" CASCADE",
        schema.name()
    )))
    .execute(&pool)
    .await
    .unwrap();
}

async fn relays_keep_order(relays: usize) {
    let ns = TestNamespace::new(shared_redis_url(), "ob-relays");
    let db = TestSchema::new("obrelays").await;
    let dir = tempfile::tempdir().unwrap();
    let file = batch_file(dir.path(), "events.jsonl", keyed_events(50, 40));
    let mut c = eventbus(&ns, db.url(), db.name());
    c.args(["publish", "--no-validate", "--via-outbox", "--batch", &file]);
    assert!(run(c).status.success());
    let children: Vec<Child> = (0..relays)
        .map(|_| {
            eventbus(&ns, db.url(), db.name())
                .args(["relay", "--batch-size", "25", "--workers", "3"])
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    while backlog(&db).await > 0 {
        assert!(Instant::now() < deadline, "relays did not drain the outbox");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for c in children {
        stop(c);
    }
    let seqs = sequences_by_key(&ns, 8);
    assert_eq!(seqs.len(), 50);
    for (key, seq) in &seqs {
        assert_eq!(
            seq,
            &(0..40).collect::<Vec<i64>>(),
            "key {key} out of order or incomplete with {relays} relays"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_at_once_keep_per_key_order() {
    relays_keep_order(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_at_once_keep_per_key_order() {
    relays_keep_order(3).await;
}

/// Result rows written by `consume --sql` in the inbox transaction.
async fn results_table(db: &TestSchema) -> String {
    let table = db.table("results");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (event_id uuid NOT NULL, seq int NOT NULL)"
    )))
    .execute(db.pool())
    .await
    .unwrap();
    table
}

/// Consumption mode of a crash test's consumers.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Unordered,
    /// With a short session, so a killed member's partitions move on soon.
    Ordered,
}

fn sql_consumer(
    ns: &TestNamespace,
    db: &TestSchema,
    results: &str,
    failpoint: Option<&str>,
) -> Child {
    sql_consumer_in(Mode::Unordered, ns, db, results, failpoint, "per-event")
}

fn sql_consumer_in(
    mode: Mode,
    ns: &TestNamespace,
    db: &TestSchema,
    results: &str,
    failpoint: Option<&str>,
    savepoints: &str,
) -> Child {
    let mut c = eventbus(ns, db.url(), db.name());
    if let Some(f) = failpoint {
        c.env("EVENT_BUS_FAILPOINT", f);
    }
    c.env("EVENT_BUS_INBOX_SAVEPOINTS", savepoints);
    c.args([
        "consume",
        "--no-validate",
        "--group",
        "results",
        "--topics",
        "work_item",
        "--inbox",
        "--claim-idle",
        "1s",
        "--block",
        "200ms",
        "--sql",
        &format!("INSERT INTO {results} (event_id, seq) VALUES ($1, ($4->>'seq')::int)"),
    ]);
    match mode {
        Mode::Unordered => c.args(["--unordered", "--concurrency", "8"]),
        Mode::Ordered => c.args([
            "--ordered",
            "--heartbeat",
            "100ms",
            "--session-timeout",
            "1s",
        ]),
    };
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Every published event has exactly one result row.
async fn assert_exactly_once(db: &TestSchema, results: &str, events: i64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let distinct = scalar(
            db,
            &format!("SELECT count(DISTINCT event_id) FROM {results}"),
        )
        .await;
        if distinct == events {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {distinct} of {events} events have a result row"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // late duplicates would show now
    let rows = scalar(db, &format!("SELECT count(*) FROM {results}")).await;
    assert_eq!(rows, events, "an effect happened more than once");
    let enqueued = scalar(
        db,
        &format!("SELECT count(*) FROM {}", db.table("eventbus_inbox")),
    )
    .await;
    assert_eq!(enqueued, events);
}

async fn enqueue_20k(ns: &TestNamespace, db: &TestSchema, dir: &Path) {
    let file = batch_file(dir, "events.jsonl", keyed_events(200, 100));
    let mut c = eventbus(ns, db.url(), db.name());
    c.args(["publish", "--no-validate", "--via-outbox", "--batch", &file])
        .stdout(Stdio::null());
    let out = run(c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(backlog(db).await, 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_repeatedly_loses_nothing_and_inbox_effects_happen_once() {
    relay_crash_loop(TestNamespace::new(shared_redis_url(), "ob-crash")).await;
}

/// The same crash loop with relays and consumers on a private Redis
/// Cluster (3 masters, 3 replicas), reached through `REDIS_CLUSTER_NODES`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_relay_killed_repeatedly_loses_nothing_and_inbox_effects_happen_once() {
    let cluster = eventbus_testkit::RedisCluster::start();
    relay_crash_loop(TestNamespace::new(cluster.cluster_url(), "ob-crash")).await;
}

/// Relays SIGKILLed at random points (and by a failpoint right after a
/// publish) over a 20,000-event backlog, with two inbox consumers: every
/// event ends with exactly one effect.
async fn relay_crash_loop(ns: TestNamespace) {
    let db = TestSchema::new("obcrash").await;
    let dir = tempfile::tempdir().unwrap();
    let results = results_table(&db).await;
    enqueue_20k(&ns, &db, dir.path()).await;
    let consumers: Vec<KillOnDrop> = (0..2)
        .map(|_| KillOnDrop(Some(sql_consumer(&ns, &db, &results, None))))
        .collect();

    let (mut killed, mut failpoint_deaths, mut runs) = (0, 0, 0);
    let mut rng = rand::rng();
    let deadline = Instant::now() + WAIT;
    while backlog(&db).await > 0 || killed < 10 || failpoint_deaths < 1 {
        assert!(
            Instant::now() < deadline,
            "crash loop did not finish: {killed} kills, {failpoint_deaths} failpoint deaths"
        );
        if backlog(&db).await == 0 {
            // drained before enough crashes: the test would prove too little
            panic!(
                "outbox drained after only {killed} kills and {failpoint_deaths} failpoint deaths"
            );
        }
        runs += 1;
        let with_failpoint = runs % 3 == 0;
        let mut relay = eventbus(&ns, db.url(), db.name());
        relay
            .args(["relay", "--batch-size", "20", "--workers", "2"])
            .stderr(Stdio::null());
        if with_failpoint {
            relay.env("EVENT_BUS_FAILPOINT", "relay-kill-after-publish:5");
        }
        let mut child = relay.spawn().unwrap();
        let lifetime = Duration::from_millis(rng.random_range(80..250));
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // only the failpoint makes a relay die on its own
                assert_eq!(
                    status.signal(),
                    Some(9),
                    "relay exited on its own: {status:?}"
                );
                failpoint_deaths += 1;
                break;
            }
            if started.elapsed() >= lifetime {
                kill9(&mut child);
                killed += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // finish the rest with a relay that is left alone
    let relay = KillOnDrop(Some(
        eventbus(&ns, db.url(), db.name())
            .args(["relay"])
            .spawn()
            .unwrap(),
    ));
    assert_exactly_once(&db, &results, 20_000).await;
    stop(relay.take());
    for c in consumers {
        stop(c.take());
    }
    assert!(killed >= 10 && failpoint_deaths >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_consumer_killed_mid_batch_repeatedly_keeps_effects_exactly_once() {
    consumer_crash_loop(Mode::Unordered, "ckill", "per-event").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_inbox_consumer_killed_mid_batch_repeatedly_keeps_effects_exactly_once() {
    consumer_crash_loop(Mode::Ordered, "okill", "per-event").await;
}

/// The same with `--inbox-savepoints on-failure` (no savepoint per event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_consumer_without_savepoints_killed_mid_batch_keeps_effects_exactly_once() {
    consumer_crash_loop(Mode::Unordered, "nkill", "on-failure").await;
}

/// Inbox consumers (batched: up to 64 events a transaction) SIGKILLed
/// inside their transaction about once every 800 events, and replaced,
/// while 20,000 events flow: each event has exactly one effect row.
async fn consumer_crash_loop(mode: Mode, name: &str, savepoints: &str) {
    let ns = TestNamespace::new(shared_redis_url(), &format!("ob-{name}"));
    let db = TestSchema::new(&format!("ob{name}")).await;
    let dir = tempfile::tempdir().unwrap();
    let results = results_table(&db).await;
    enqueue_20k(&ns, &db, dir.path()).await;
    let relay = KillOnDrop(Some(
        eventbus(&ns, db.url(), db.name())
            .args(["relay"])
            .spawn()
            .unwrap(),
    ));

    // Each consumer kills itself inside its inbox transaction (after the
    // result row is written, before the commit) about once every 800 events;
    // dead ones are replaced until every event has its row.
    let failpoint = Some("inbox-kill-mid-transaction:800");
    let mut consumers: Vec<KillOnDrop> = (0..2)
        .map(|_| {
            KillOnDrop(Some(sql_consumer_in(
                mode, &ns, &db, &results, failpoint, savepoints,
            )))
        })
        .collect();
    let mut deaths = 0;
    let deadline = Instant::now() + WAIT;
    loop {
        for c in consumers.iter_mut() {
            if let Some(status) = c.0.as_mut().expect("child").try_wait().unwrap() {
                assert_eq!(
                    status.signal(),
                    Some(9),
                    "consumer exited otherwise: {status:?}"
                );
                deaths += 1;
                *c = KillOnDrop(Some(sql_consumer_in(
                    mode,
                    &ns,
                    &db,
                    &results,
                    if deaths < 20 { failpoint } else { None },
                    savepoints,
                )));
            }
        }
        let distinct = scalar(
            &db,
            &format!("SELECT count(DISTINCT event_id) FROM {results}"),
        )
        .await;
        if distinct == 20_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{mode:?}: {distinct} of 20000 handled after {deaths} consumer kills"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_exactly_once(&db, &results, 20_000).await;
    for c in consumers {
        stop(c.take());
    }
    stop(relay.take());
    assert!(
        deaths >= 10,
        "only {deaths} consumers were killed mid-transaction"
    );
}
