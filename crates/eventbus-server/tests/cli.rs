//! End-to-end tests of the `eventbus` binary against the shared local Redis.
//!
//! Each test works in its own namespace (`test-cli-<random>`), whose keys
//! are deleted when the test ends, so tests run in parallel. Child
//! processes get a generous deadline only so a hang fails the test instead
//! of blocking the run; nothing here asserts speed.

#[allow(dead_code)] // each test file uses some of the helpers
mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::*;

#[test]
fn published_batch_is_consumed_by_exec_exactly() {
    let ns = namespace();
    let published = publish_batch(&ns, &batch_text(200));
    assert_eq!(published.len(), 200);
    let ids = ids_of(&published);
    assert_eq!(ids.len(), 200);

    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().display();
    // The id from the environment goes to a list; the envelope from stdin to a file named by it.
    let exec = format!(
        r#"cat > '{d}'/"$EVENTBUS_EVENT_ID".json && echo "$EVENTBUS_EVENT_ID" >> '{d}/ids'"#
    );
    let out = run(
        eventbus(
            &ns,
            &[
                "consume",
                "--group",
                "g",
                "--exec",
                &exec,
                "--max-events",
                "200",
            ],
        ),
        None,
    );
    assert_eq!(out.code, 0, "consume failed: {}", out.stderr);

    let seen = read_lines(&dir.path().join("ids"));
    assert_eq!(seen.len(), 200, "each event handled once");
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), ids);
    for id in &ids {
        let text = std::fs::read_to_string(dir.path().join(format!("{id}.json"))).unwrap();
        let envelope: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(envelope["id"], json!(id), "stdin carries the same event");
        assert_eq!(envelope["headers"]["test"], "cli");
    }

    // Everything was acknowledged.
    let streams = streams_json(&ns);
    for s in streams["streams"].as_array().unwrap() {
        for g in s["groups"].as_array().unwrap() {
            assert_eq!(g["name"], "g");
            assert_eq!(g["pending"], 0, "{s}");
        }
    }
}

#[test]
fn bad_input_is_refused_and_loses_nothing() {
    let ns = namespace();
    let first = publish_batch(&ns, &batch_text(3));
    let publish = |extra: &[&str]| {
        let mut args = vec!["publish"];
        args.extend_from_slice(extra);
        run(eventbus(&ns, &args), None)
    };

    let out = publish(&["--type", "a.b", "--key", "k", "--data", "{nope"]);
    assert_eq!(out.code, 2);
    assert!(out.error_line().contains("JSON"), "{}", out.stderr);

    let out = publish(&[
        "--type",
        "a.b",
        "--key",
        "k",
        "--data",
        "@/no/such/file.json",
    ]);
    assert_eq!(out.code, 2);
    assert!(
        out.error_line().contains("/no/such/file.json"),
        "{}",
        out.stderr
    );

    let out = publish(&["--type", "nodot", "--key", "k", "--data", "{}"]);
    assert_eq!(out.code, 2);
    assert!(out.error_line().contains("topic.name"), "{}", out.stderr);

    let out = publish(&["--type", "a.b", "--key", "", "--data", "{}"]);
    assert_eq!(out.code, 2);
    assert!(out.error_line().contains("key"), "{}", out.stderr);

    let out = publish(&["--type", "a.b", "--key", "k", "--data", "{}", "--bogus"]);
    assert_eq!(out.code, 2);
    assert!(out.error_line().contains("--bogus"), "{}", out.stderr);

    // A batch with one bad line publishes none of its lines.
    let mut lines: Vec<String> = batch_text(5).lines().map(str::to_owned).collect();
    lines[2] = r#"{"type": "work_order.created", "key": "k", "data": {"#.to_owned();
    let out = run(
        eventbus(&ns, &["publish", "--batch", "-"]),
        Some(&(lines.join("\n") + "\n")),
    );
    assert_eq!(out.code, 2);
    assert!(out.error_line().contains("line 3"), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    lines[2] = r#"{"type": "work_order.created", "key": "", "data": {}}"#.to_owned();
    let out = run(
        eventbus(&ns, &["publish", "--batch", "-"]),
        Some(&lines.join("\n")),
    );
    assert_eq!(out.code, 2);
    assert!(out.error_line().contains("line 3"), "{}", out.stderr);
    assert_eq!(
        total_length(&streams_json(&ns)),
        3,
        "the bad batches added nothing"
    );

    // Unreachable Redis: exit 69, URL shown with the password hidden.
    for env in [
        vec![("REDIS_URL", "redis://:sentinelpass@127.0.0.1:1")],
        vec![
            ("REDIS_HOST", "127.0.0.1"),
            ("REDIS_PORT", "1"),
            ("REDIS_PASSWORD", "sentinelpass"),
        ],
    ] {
        let mut cmd = eventbus(
            &ns,
            &[
                "publish",
                "--no-validate",
                "--type",
                "a.b",
                "--key",
                "k",
                "--data",
                "{}",
            ],
        );
        cmd.env_remove("REDIS_URL");
        cmd.envs(env);
        let out = run(cmd, None);
        assert_eq!(out.code, 69, "{}", out.stderr);
        let line = out.error_line();
        assert!(
            line.contains("cannot reach Redis at redis://:***@127.0.0.1:1"),
            "{line}"
        );
        assert!(!out.stderr.contains("sentinelpass") && !out.stdout.contains("sentinelpass"));
    }

    let mut cmd = eventbus(&ns, &["streams"]);
    cmd.env("EVENT_BUS_PARTITIONS", "abc");
    let out = run(cmd, None);
    assert_eq!(out.code, 2);
    assert!(
        out.error_line().contains("EVENT_BUS_PARTITIONS"),
        "{}",
        out.stderr
    );

    let out = run(eventbus(&ns, &["consume", "--print"]), None);
    assert_eq!(out.code, 2);
    assert!(out.error_line().contains("--group"), "{}", out.stderr);

    // The bus still works, and the first events are all still there.
    let out = publish(&[
        "--type",
        "work_order.created",
        "--key",
        "wo-9",
        "--data",
        r#"{"id":"wo-9","kind":"pump_check","title":"Check pump 9","status":"pending","requested_by":"cli","created_at":"2026-11-28T09:00:00Z"}"#,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut expected = ids_of(&first);
    expected.extend(ids_of(&out.lines()));
    let tail = run(eventbus(&ns, &["tail", "--from-start"]), None);
    assert_eq!(tail.code, 0, "{}", tail.stderr);
    let tailed: HashSet<String> = tail
        .lines()
        .iter()
        .map(|l| l["event"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tailed, expected);
}

#[test]
fn streams_and_tail_show_what_was_published() {
    let ns = namespace();
    let published = publish_batch(&ns, &batch_text(40));

    let mut per_stream: BTreeMap<String, u64> = BTreeMap::new();
    for p in &published {
        *per_stream
            .entry(p["stream"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let streams = streams_json(&ns);
    assert_eq!(streams["namespace"], ns.name());
    let mut lengths: BTreeMap<String, u64> = BTreeMap::new();
    for s in streams["streams"].as_array().unwrap() {
        let length = s["length"].as_u64().unwrap();
        if length > 0 {
            lengths.insert(s["stream"].as_str().unwrap().to_owned(), length);
        }
    }
    assert_eq!(lengths, per_stream);

    let table = run(eventbus(&ns, &["streams"]), None);
    assert_eq!(table.code, 0);
    assert!(table.stdout.starts_with("TOPIC"), "{}", table.stdout);
    assert!(table.stdout.contains("work_item") && table.stdout.contains("40 entries"));

    // Without --follow, --from-start exits once caught up.
    let tail = run(eventbus(&ns, &["tail", "--from-start"]), None);
    assert_eq!(tail.code, 0, "{}", tail.stderr);
    let lines = tail.lines();
    assert_eq!(lines.len(), 40);
    let by_id: BTreeMap<&str, &Value> = published
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    for l in &lines {
        let p = by_id[l["event"]["id"].as_str().unwrap()];
        assert_eq!(l["stream"], p["stream"]);
        assert_eq!(l["entry_id"], p["entry_id"]);
        assert_eq!(l["event"]["type"], p["type"]);
    }
    let tail = run(
        eventbus(&ns, &["tail", "--from-start", "--count", "5"]),
        None,
    );
    assert_eq!(tail.code, 0, "{}", tail.stderr);
    assert_eq!(tail.lines().len(), 5);
}

#[test]
fn publish_keeps_going_when_stdout_closes() {
    let ns = namespace();
    let mut cmd = eventbus(&ns, &["publish", "--batch", "-", "--chunk-size", "100"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("publish starts");
    drop(child.stdout.take()); // like `| head -0`: the receipt has nowhere to go
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(batch_text(350).as_bytes()).unwrap();
    drop(stdin);
    let status = wait_or_kill(&mut child, HANG);
    assert_eq!(status.code(), Some(0), "a closed stdout is not an error");
    assert_eq!(
        total_length(&streams_json(&ns)),
        350,
        "every chunk was published"
    );
}

#[test]
fn consume_print_writes_envelopes() {
    let ns = namespace();
    let published = publish_batch(&ns, &batch_text(12));
    let out = run(
        eventbus(
            &ns,
            &[
                "consume",
                "--group",
                "printer",
                "--topics",
                "work_order,work_item,system",
                "--max-events",
                "12",
            ],
        ),
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let printed: HashSet<String> = out
        .lines()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(printed, ids_of(&published));
}

#[test]
fn permanent_exec_failure_is_dead_lettered_and_sigterm_stops_cleanly() {
    let ns = namespace();
    publish_batch(&ns, &batch_text(1));
    let mut cmd = eventbus(
        &ns,
        &[
            "consume",
            "--group",
            "g",
            "--topics",
            "work_order",
            "--exec",
            "exit 65",
            "--block",
            "200ms",
        ],
    );
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().expect("consume starts");

    // exit 65 is a permanent failure: the event goes to the dead-letter
    // stream at once, and its entry is acknowledged.
    let client = redis::Client::open(ns.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let deadline = Instant::now() + HANG;
    loop {
        let dead: u64 = redis::cmd("XLEN")
            .arg(format!("{}:dead", ns.name()))
            .query(&mut conn)
            .unwrap();
        if dead == 1 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pending = loop {
        let streams = streams_json(&ns);
        let pending: u64 = streams["streams"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["groups"].as_array().unwrap().iter())
            .map(|g| g["pending"].as_u64().unwrap())
            .sum();
        if pending == 0 || Instant::now() > deadline {
            break pending;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = wait_or_kill(&mut child, HANG);
    assert_eq!(pending, 0, "the dead-lettered event was not acknowledged");
    assert_eq!(status.code(), Some(0), "SIGTERM is a graceful stop");
}

#[test]
fn demo_runs_and_summarizes() {
    let ns = namespace(); // only to point the binary at the shared Redis
    let out = run(eventbus(&ns, &["demo", "--events-per-type", "3"]), None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for needle in [
        "Committed 36 events",
        "work_order.created",
        "system.maintenance",
        "Handled",
        "skipped by the inbox",
        "(drained)",
        "each effect exactly once",
        "dead-lettered",
        "replayed after the fix, then handled",
        "demo-consumer-1",
        "demo-consumer-2",
        "by partition",
        "pending after shutdown: 0",
        "Throughput",
        "deleted",
    ] {
        assert!(
            out.stdout.contains(needle),
            "{needle:?} missing in:\n{}",
            out.stdout
        );
    }

    let out = run(
        eventbus(&ns, &["demo", "--events-per-type", "2", "--json"]),
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let summary: Value = serde_json::from_str(&out.stdout).expect("JSON summary");
    assert_eq!(summary["published"], 24);
    assert_eq!(summary["distinct"], 24);
    assert_eq!(summary["pending_after_shutdown"], 0);
    let by_type = summary["published_by_type"].as_array().unwrap();
    assert_eq!(by_type.len(), 12);
    assert!(by_type.iter().all(|t| t["count"] == 2));
    let consumed: u64 = summary["consumed_by_consumer"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(consumed, summary["consumed"].as_u64().unwrap());

    // The demo namespace is gone.
    let demo_ns = summary["namespace"].as_str().unwrap();
    let client = redis::Client::open(ns.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let (_, keys): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg(format!("{demo_ns}:*"))
        .arg("COUNT")
        .arg(100_000)
        .query(&mut conn)
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

/// The demo on a private Redis Cluster (`REDIS_CLUSTER_NODES`): the whole
/// run, then its namespace is gone from every master.
#[test]
fn demo_runs_on_a_cluster_and_cleans_up_every_master() {
    let cluster = eventbus_testkit::RedisCluster::start();
    let ns = namespace();
    let nodes = cluster.seed_urls().join(",");
    let mut cmd = eventbus(&ns, &["demo", "--events-per-type", "2", "--json"]);
    cmd.env_remove("REDIS_URL")
        .env("REDIS_CLUSTER_NODES", &nodes);
    let out = run(cmd, None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let summary: Value = serde_json::from_str(&out.stdout).expect("JSON summary");
    assert_eq!(summary["published"], 24);
    assert_eq!(summary["distinct"], 24);
    assert_eq!(summary["pending_after_shutdown"], 0);
    let demo_ns = summary["namespace"].as_str().unwrap();
    for master in cluster.master_urls() {
        let mut conn = redis::Client::open(master.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{demo_ns}:*"))
            .query(&mut conn)
            .unwrap();
        assert!(keys.is_empty(), "{master}: {keys:?}");
    }
}

/// `groups --drained` (step 2 of changing the partition count): exit 0
/// only when no group has anything unread or pending.
#[test]
fn groups_drained_says_when_nothing_is_in_flight() {
    let ns = namespace();
    let topics = "work_order,work_item,system";
    let consume = |n: &str| {
        let out = run(
            eventbus(
                &ns,
                &[
                    "consume",
                    "--group",
                    "g",
                    "--topics",
                    topics,
                    "--max-events",
                    n,
                ],
            ),
            None,
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
    };
    let drained = || {
        run(
            eventbus(&ns, &["groups", "--drained", "--topics", topics]),
            None,
        )
    };
    publish_batch(&ns, &batch_text(6));
    consume("6");
    let out = drained();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("drained: 1 groups"), "{}", out.stdout);
    assert!(out.stdout.contains("outbox: not checked"), "{}", out.stdout);

    publish_batch(&ns, &batch_text(3));
    let out = drained();
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("lag 1"), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("not drained: 3 group partitions with lag or pending entries"),
        "{}",
        out.stderr
    );
    let out = run(
        eventbus(&ns, &["groups", "--drained", "--json", "--topics", topics]),
        None,
    );
    assert_eq!(out.code, 1);
    let v: Value = serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(v["drained"], false);
    assert_eq!(v["in_flight"].as_array().unwrap().len(), 3);

    consume("3");
    assert_eq!(drained().code, 0);
}
