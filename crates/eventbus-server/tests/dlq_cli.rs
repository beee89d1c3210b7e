//! Dead letters through the binary: a failing --exec handler dead-letters
//! events, `dlq list/show/replay/discard/purge` act on them, with
//! PostgreSQL and without it (the records are then in Redis), and every bad
//! input is refused with a clear message.

#[allow(dead_code)] // each test file uses some of the helpers
mod common;

use std::process::{Command, Output};

use eventbus_testkit::{shared_redis_url, TestNamespace, TestSchema};

fn eventbus(ns: &TestNamespace, db: &TestSchema) -> Command {
    common::eventbus_pg(ns, db.url(), db.name(), 4)
}

/// The binary without `DATABASE_URL`: dead letters are kept in Redis.
fn redis_only(ns: &TestNamespace) -> Command {
    let mut c = common::eventbus(ns, &[]);
    c.env("EVENT_BUS_PARTITIONS", "4");
    c
}

fn run(mut c: Command, args: &[&str]) -> Output {
    c.args(args).output().expect("run eventbus")
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn refused(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("eventbus: error: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert_eq!(o.status.code(), Some(2), "{line}");
    assert!(line.contains(needle), "{needle:?} not in {line:?}");
}

/// `dlq list --json` plus `extra`, one value per dead letter.
fn listed(c: Command, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["dlq", "list", "--json"];
    args.extend_from_slice(extra);
    ok(&run(c, &args))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `consume --group billing --topics work_item --unordered --exec EXEC`,
/// plus `extra`.
fn consume(mut c: Command, exec: &str, extra: &[&str]) -> Command {
    c.args([
        "consume",
        "--group",
        "billing",
        "--topics",
        "work_item",
        "--unordered",
        "--no-validate",
        "--exec",
        exec,
        "--block",
        "200ms",
    ])
    .args(extra);
    c
}

/// Runs [`consume`] in the background.
fn spawn_consumer(c: Command, exec: &str) -> std::process::Child {
    consume(c, exec, &[]).spawn().unwrap()
}

/// Stops a background consumer with SIGTERM; it must exit cleanly.
fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}

/// Waits up to a minute for `done`.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn ids(dead_letters: &[serde_json::Value]) -> Vec<String> {
    let mut ids: Vec<String> = dead_letters
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Three events dead-lettered by a failing group, then listed with each
/// filter, shown, replayed (dry run first), failed again into the same
/// records, replayed and handled, discarded and purged. `eventbus()` is
/// the binary with or without PostgreSQL: both must answer alike.
fn dead_lettered_then_replayed_to_their_group(eventbus: impl Fn() -> Command) {
    let list = |extra: &[&str]| listed(eventbus(), extra);
    for i in 0..3 {
        let data = format!(r#"{{"work_item_id":"wi-{i}"}}"#);
        ok(&run(
            eventbus(),
            &[
                "publish",
                "--no-validate",
                "--type",
                "work_item.x",
                "--key",
                &format!("wi-{i}"),
                "--data",
                &data,
            ],
        ));
    }
    // a permanent failure (exit 65) for every event: each dead-lettered at once
    let child = spawn_consumer(eventbus(), "exit 65");
    wait_until("events were not dead-lettered", || list(&[]).len() >= 3);
    stop(child);

    let all = list(&["--group", "billing", "--error-class", "permanent"]);
    assert_eq!(all.len(), 3);
    assert!(list(&["--group", "audit"]).is_empty());
    assert_eq!(list(&["--key", "wi-1"]).len(), 1);
    assert_eq!(list(&["--type", "work_item.x", "--since", "1h"]).len(), 3);
    assert!(list(&["--type", "work_item.y"]).is_empty());
    assert!(list(&["--since", "2999-01-01T00:00:00Z"]).is_empty());
    assert!(list(&["--error-class", "retryable"]).is_empty());
    let first_page = list(&["--limit", "2"]);
    let second_page = list(&["--limit", "2", "--offset", "2"]);
    assert_eq!(first_page.len(), 2);
    assert_eq!(second_page.len(), 1);
    assert_eq!(ids(&[first_page, second_page].concat()), ids(&all));
    let table = ok(&run(eventbus(), &["dlq", "list"]));
    assert!(
        table.starts_with("id ") && table.contains("billing") && table.contains("work_item.x"),
        "{table}"
    );
    let id = all[0]["id"].as_str().unwrap().to_owned();
    let shown = ok(&run(eventbus(), &["dlq", "show", &id]));
    assert!(
        shown.contains("permanent") && shown.contains("dead_lettered"),
        "{shown}"
    );

    // dry run: nothing changes
    let dry = ok(&run(eventbus(), &["dlq", "replay", "--all", "--dry-run"]));
    assert!(dry.contains("would replay 3"), "{dry}");
    assert_eq!(list(&["--status", "new"]).len(), 3);

    // discard one, replay the rest to the group, which still fails them:
    // they return to the same records, `new` again, with their history
    let discarded = ok(&run(eventbus(), &["dlq", "discard", &id]));
    assert!(discarded.contains("discarded 1"), "{discarded}");
    let replay = || {
        let replayed = ok(&run(
            eventbus(),
            &["dlq", "replay", "--group", "billing", "--rate", "100"],
        ));
        assert!(replayed.contains("replayed 2"), "{replayed}");
    };
    replay();
    assert_eq!(list(&["--status", "replayed"]).len(), 2);
    let child = spawn_consumer(eventbus(), "exit 65");
    wait_until("the replays did not fail again", || {
        list(&["--status", "new"]).len() == 2
    });
    stop(child);
    let again = list(&["--status", "new"]);
    assert_eq!(list(&[]).len(), 3, "a second failure makes no new record");
    for dl in &again {
        let id = dl["id"].as_str().unwrap();
        let shown: serde_json::Value =
            serde_json::from_str(&ok(&run(eventbus(), &["dlq", "show", id, "--json"]))).unwrap();
        let actions: Vec<&str> = shown["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["dead_lettered", "replayed", "failed_again"]);
        assert_eq!(shown["dead_letter"]["replay_count"], 1);
    }

    // fixed: replayed again, the group handles them
    replay();
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let exec = format!("echo $EVENTBUS_EVENT_ID >> {}", seen.display());
    ok(&run(
        consume(eventbus(), &exec, &["--max-events", "2"]),
        &[],
    ));
    assert_eq!(std::fs::read_to_string(&seen).unwrap().lines().count(), 2);
    let replayed = list(&["--status", "replayed"]);
    assert_eq!(ids(&replayed), ids(&again));
    assert!(replayed.iter().all(|d| d["replay_count"] == 2));
    assert_eq!(list(&["--status", "discarded"]).len(), 1);

    // purge keeps what is recent, and deletes what is older
    let purged = ok(&run(eventbus(), &["dlq", "purge", "--older-than", "1h"]));
    assert!(purged.contains("deleted 0"), "{purged}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let dry = ok(&run(
        eventbus(),
        &["dlq", "purge", "--older-than", "1s", "--dry-run"],
    ));
    assert!(dry.contains("would delete 3"), "{dry}");
    assert_eq!(list(&[]).len(), 3);
    let purged = ok(&run(eventbus(), &["dlq", "purge", "--older-than", "1s"]));
    assert!(purged.contains("deleted 3"), "{purged}");
    assert!(list(&[]).is_empty());
    let empty = ok(&run(eventbus(), &["dlq", "list"]));
    assert_eq!(empty, "no dead letters\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_events_are_dead_lettered_then_replayed_to_their_group() {
    let ns = TestNamespace::new(shared_redis_url(), "dlq-cli");
    let db = TestSchema::new("dlqcli").await;
    dead_lettered_then_replayed_to_their_group(|| eventbus(&ns, &db));
}

/// The same without PostgreSQL: the records are in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_postgres_failing_events_are_dead_lettered_then_replayed_to_their_group() {
    let ns = TestNamespace::new(shared_redis_url(), "dlq-cli-redis");
    dead_lettered_then_replayed_to_their_group(|| redis_only(&ns));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_dlq_and_retry_input_is_refused() {
    let ns = TestNamespace::new(shared_redis_url(), "dlq-bad");
    let db = TestSchema::new("dlqbad").await;
    let e = |args: &[&str]| run(eventbus(&ns, &db), args);
    refused(&e(&["dlq", "replay"]), "say which dead letters");
    refused(&e(&["dlq", "discard"]), "say which dead letters");
    refused(
        &e(&["dlq", "list", "--error-class", "bogus"]),
        "error class",
    );
    refused(&e(&["dlq", "list", "--since", "yesterday"]), "RFC 3339");
    refused(&e(&["dlq", "list", "--status", "lost"]), "status");
    refused(&e(&["dlq", "show", "not-a-uuid"]), "not-a-uuid");
    refused(
        &e(&["dlq", "show", "0195f6a4-0000-7000-8000-000000000000"]),
        "no dead letter",
    );
    refused(&e(&["dlq", "purge"]), "--older-than");
    refused(&e(&["dlq", "purge", "--older-than", "soon"]), "duration");
    refused(&e(&["dlq", "replay", "--all", "--rate", "0"]), "--rate");
    refused(&e(&["dlq", "replay", "--all", "--rate=-1"]), "--rate");
    refused(
        &e(&["dlq", "replay", "--all", "--to-group", "a b"]),
        "--to-group",
    );
    // Without PostgreSQL: the same words, and `dlq sync` (which copies
    // into PostgreSQL) says what it needs.
    refused(&run(redis_only(&ns), &["dlq", "sync"]), "DATABASE_URL");
    refused(
        &run(redis_only(&ns), &["dlq", "replay"]),
        "say which dead letters",
    );
    refused(
        &run(redis_only(&ns), &["dlq", "discard", "--dry-run"]),
        "say which dead letters",
    );
    refused(
        &run(
            redis_only(&ns),
            &["dlq", "show", "0195f6a4-0000-7000-8000-000000000000"],
        ),
        "no dead letter",
    );
    refused(
        &run(redis_only(&ns), &["dlq", "replay", "--all", "--rate", "0"]),
        "--rate",
    );
    refused(
        &run(redis_only(&ns), &["dlq", "list", "--status", "lost"]),
        "status",
    );
    let consume = |extra: &[&str]| {
        let mut args = vec!["consume", "--group", "g", "--topics", "work_item"];
        args.extend_from_slice(extra);
        e(&args)
    };
    refused(&consume(&["--retry-attempts", "0"]), "retry-attempts");
    refused(&consume(&["--retry-schedule", "1x"]), "retry-schedule");
    refused(
        &consume(&["--retry-initial", "2s", "--retry-max", "1s"]),
        "retry policy",
    );
    refused(&consume(&["--retry-multiplier", "0.5"]), "retry policy");
    let mut bad_env = eventbus(&ns, &db);
    bad_env.env("EVENT_BUS_RETRY_ATTEMPTS", "many");
    refused(&run(bad_env, &["dlq", "list"]), "EVENT_BUS_RETRY_ATTEMPTS");
}

/// A stream entry as `(id, exact fields)`.
type RawEntry = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// U+0000 in data, key, source and a header: `publish --batch` takes them,
/// the consumer dead-letters them (its handler refuses them) without
/// stopping, `dlq list` lists them, `dlq show --json` shows each exactly,
/// and a replay publishes each byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_with_nul_anywhere_are_dead_lettered_shown_and_replayed_exactly() {
    let ns = TestNamespace::new(shared_redis_url(), "dlq-nul");
    let db = TestSchema::new("dlqnul").await;
    nul_anywhere_is_dead_lettered_shown_and_replayed_exactly(&ns, || eventbus(&ns, &db)).await;
}

/// The same without PostgreSQL: the records are in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_postgres_events_with_nul_anywhere_are_dead_lettered_shown_and_replayed_exactly() {
    let ns = TestNamespace::new(shared_redis_url(), "dlq-nul-redis");
    nul_anywhere_is_dead_lettered_shown_and_replayed_exactly(&ns, || redis_only(&ns)).await;
}

async fn nul_anywhere_is_dead_lettered_shown_and_replayed_exactly(
    ns: &TestNamespace,
    eventbus: impl Fn() -> Command,
) {
    let lines = [
        r#"{"type":"work_item.x","key":"k1","data":{"t":"a\u0000b","k\u0000":1}}"#,
        r#"{"type":"work_item.x","key":"k\u00002","data":{}}"#,
        r#"{"type":"work_item.x","key":"k3","data":{},"source":"svc\u0000"}"#,
        r#"{"type":"work_item.x","key":"k4","data":{},"headers":{"h\u0000":"v\u0000"}}"#,
        r#"{"type":"work_item.x","key":"ok","data":{"fine":true}}"#,
    ];
    let dir = tempfile::tempdir().unwrap();
    let batch = dir.path().join("batch.jsonl");
    std::fs::write(&batch, lines.join("\n")).unwrap();
    ok(&run(
        eventbus(),
        &[
            "publish",
            "--no-validate",
            "--batch",
            batch.to_str().unwrap(),
        ],
    ));
    // Refuses what contains U+0000 (grep -P finds it in the JSON's escape), takes the rest.
    let handled = dir.path().join("handled");
    let script = format!(
        r#"input=$(cat); case "$input" in *'\u0000'*) exit 65;; *) echo ok >> {};; esac"#,
        handled.display()
    );
    let child = eventbus()
        .args([
            "consume",
            "--group",
            "g",
            "--topics",
            "work_item",
            "--no-validate",
            "--exec",
            &script,
            "--block",
            "200ms",
        ])
        .spawn()
        .unwrap();
    wait_until("stalled", || {
        listed(eventbus(), &[]).len() >= 4 && handled.exists()
    });
    stop(child);

    let listed = listed(eventbus(), &[]);
    assert_eq!(listed.len(), 4);
    for line in &lines[..4] {
        let want: serde_json::Value = serde_json::from_str(line).unwrap();
        let dl = listed
            .iter()
            .find(|d| d["envelope"]["key"] == want["key"]) // keys differ
            .unwrap_or_else(|| panic!("{line} not listed"));
        for field in ["data", "source", "headers"] {
            if let Some(v) = want.get(field) {
                assert_eq!(&dl["envelope"][field], v, "{line}: {field} not exact");
            }
        }
        let id = dl["id"].as_str().unwrap();
        let shown: serde_json::Value =
            serde_json::from_str(&ok(&run(eventbus(), &["dlq", "show", id, "--json"]))).unwrap();
        assert_eq!(shown["dead_letter"]["envelope"], dl["envelope"]);
        assert_eq!(shown["dead_letter"]["key"], want["key"]);
        let text = ok(&run(eventbus(), &["dlq", "show", id]));
        assert!(text.contains("raw fields"), "{text}");
    }
    ok(&run(eventbus(), &["dlq", "replay", "--all"]));
    let mut conn = redis::Client::open(shared_redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let replayed: Vec<RawEntry> = redis::cmd("XRANGE")
        .arg(ns.topology(4).replay_stream("g"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(replayed.len(), 4);
    let field =
        |e: &RawEntry, name: &[u8]| e.1.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let keys: Vec<Vec<u8>> = replayed.iter().filter_map(|e| field(e, b"key")).collect();
    assert!(
        keys.contains(&b"k\x002".to_vec()),
        "the NUL key, byte for byte"
    );
    let datas: Vec<Vec<u8>> = replayed.iter().filter_map(|e| field(e, b"data")).collect();
    assert!(datas.contains(&br#"{"t":"a\u0000b","k\u0000":1}"#.to_vec()));
    let sources: Vec<Vec<u8>> = replayed
        .iter()
        .filter_map(|e| field(e, b"source"))
        .collect();
    assert!(sources.contains(&b"svc\x00".to_vec()));
}
