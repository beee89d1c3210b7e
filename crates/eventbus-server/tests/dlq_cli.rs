//! Dead letters through the binary: a failing --exec handler dead-letters
//! events, `dlq list/show/replay/discard/purge` act on them, and every bad
//! input is refused with a clear message.

#[allow(dead_code)] // each test file uses some of the helpers
mod common;

use std::process::{Command, Output};

use eventbus_testkit::{shared_redis_url, TestNamespace, TestSchema};

fn eventbus(ns: &TestNamespace, db: &TestSchema) -> Command {
    common::eventbus_pg(ns, db.url(), db.name(), 4)
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

fn dead_letters(ns: &TestNamespace, db: &TestSchema, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["dlq", "list", "--json"];
    args.extend_from_slice(extra);
    ok(&run(eventbus(ns, db), &args))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_events_are_dead_lettered_then_replayed_to_their_group() {
    let ns = TestNamespace::new(shared_redis_url(), "dlq-cli");
    let db = TestSchema::new("dlqcli").await;
    for i in 0..3 {
        let data = format!(r#"{{"work_item_id":"wi-{i}"}}"#);
        ok(&run(
            eventbus(&ns, &db),
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
    let mut child = eventbus(&ns, &db)
        .args([
            "consume",
            "--group",
            "billing",
            "--topics",
            "work_item",
            "--unordered",
            "--no-validate",
            "--exec",
            "exit 65",
            "--block",
            "200ms",
        ])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while dead_letters(&ns, &db, &[]).len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "events were not dead-lettered"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());

    let all = dead_letters(
        &ns,
        &db,
        &["--group", "billing", "--error-class", "permanent"],
    );
    assert_eq!(all.len(), 3);
    assert!(dead_letters(&ns, &db, &["--group", "audit"]).is_empty());
    assert_eq!(dead_letters(&ns, &db, &["--key", "wi-1"]).len(), 1);
    let id = all[0]["id"].as_str().unwrap().to_owned();
    let shown = ok(&run(eventbus(&ns, &db), &["dlq", "show", &id]));
    assert!(
        shown.contains("permanent") && shown.contains("dead_lettered"),
        "{shown}"
    );

    // dry run: nothing changes
    let dry = ok(&run(
        eventbus(&ns, &db),
        &["dlq", "replay", "--all", "--dry-run"],
    ));
    assert!(dry.contains("would replay 3"), "{dry}");
    assert_eq!(dead_letters(&ns, &db, &["--status", "new"]).len(), 3);

    // discard one, replay the rest to the group, which now succeeds
    ok(&run(eventbus(&ns, &db), &["dlq", "discard", &id]));
    let replayed = ok(&run(
        eventbus(&ns, &db),
        &["dlq", "replay", "--group", "billing", "--rate", "100"],
    ));
    assert!(replayed.contains("replayed 2"), "{replayed}");
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    ok(&run(
        eventbus(&ns, &db),
        &[
            "consume",
            "--group",
            "billing",
            "--topics",
            "work_item",
            "--unordered",
            "--no-validate",
            "--max-events",
            "2",
            "--block",
            "200ms",
            "--exec",
            &format!("echo $EVENTBUS_EVENT_ID >> {}", seen.display()),
        ],
    ));
    assert_eq!(std::fs::read_to_string(&seen).unwrap().lines().count(), 2);
    assert_eq!(dead_letters(&ns, &db, &["--status", "replayed"]).len(), 2);
    assert_eq!(dead_letters(&ns, &db, &["--status", "discarded"]).len(), 1);

    // purge keeps what is recent
    let purged = ok(&run(
        eventbus(&ns, &db),
        &["dlq", "purge", "--older-than", "1h"],
    ));
    assert!(purged.contains("deleted 0"), "{purged}");
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
    let mut no_db = eventbus(&ns, &db);
    no_db.env_remove("DATABASE_URL");
    refused(&run(no_db, &["dlq", "list"]), "DATABASE_URL");
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
        eventbus(&ns, &db),
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
    let mut child = eventbus(&ns, &db)
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
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while dead_letters(&ns, &db, &[]).len() < 4 || !handled.exists() {
        assert!(std::time::Instant::now() < deadline, "stalled");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());

    let listed = dead_letters(&ns, &db, &[]);
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
        let shown: serde_json::Value = serde_json::from_str(&ok(&run(
            eventbus(&ns, &db),
            &["dlq", "show", id, "--json"],
        )))
        .unwrap();
        assert_eq!(shown["dead_letter"]["envelope"], dl["envelope"]);
        assert_eq!(shown["dead_letter"]["key"], want["key"]);
        let text = ok(&run(eventbus(&ns, &db), &["dlq", "show", id]));
        assert!(text.contains("raw fields"), "{text}");
    }
    ok(&run(eventbus(&ns, &db), &["dlq", "replay", "--all"]));
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
