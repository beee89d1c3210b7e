//! The catalogue through the binary: publish refuses invalid events with
//! every error and publishes nothing, consume never hands an invalid event
//! to its handler, `schemas list|show|validate|check|docs`, and a broken
//! schema directory.

#[allow(dead_code)] // each test file uses some of the helpers
mod common;

use std::collections::HashSet;
use std::path::Path;

use serde_json::{json, Value};

use common::*;

const CREATED_AT: &str = "2026-11-28T09:00:00Z";

fn created(id: &str) -> Value {
    json!({"id": id, "kind": "pump_check", "title": "Check pump 7", "status": "pending",
           "requested_by": "ops@example.com", "created_at": CREATED_AT})
}

fn line(event_type: &str, key: &str, data: Value) -> String {
    json!({"type": event_type, "key": key, "data": data}).to_string()
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn publish_refuses_invalid_events_with_every_error_and_publishes_nothing() {
    let ns = namespace();
    let publish = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["publish"];
        all.extend_from_slice(args);
        run(eventbus(&ns, &all), stdin)
    };

    // `publish [FLAGS] --type T --key wo-1 --data DATA`
    let one = |flags: &[&str], event_type: &str, data: &str| {
        let mut args = flags.to_vec();
        args.extend(["--type", event_type, "--key", "wo-1", "--data", data]);
        publish(&args, None)
    };
    let refused = |out: Output, needle: &str| {
        assert_eq!(out.code, 2, "{}", out.stderr);
        assert!(
            out.error_line().contains(needle),
            "{needle:?} in {}",
            out.stderr
        );
        assert!(out.stdout.is_empty());
    };
    let good = created("wo-1").to_string();

    let bad = r#"{"id": "wo-2", "kind": "Pump Check", "status": "done"}"#;
    let out = one(&[], "work_order.created", bad);
    let error = out.error_line().to_owned();
    assert!(
        error.starts_with("eventbus: error: invalid event: work_order.created v1: "),
        "{error}"
    );
    for needle in [
        "/data: \"title\" is a required property",
        "\"requested_by\" is a required property",
        "\"created_at\" is a required property",
        "/data/kind: ",
        "/data/status: ",
        "/key: key \"wo-1\" differs from the partition-key field /data/id (\"wo-2\")",
    ] {
        assert!(error.contains(needle), "{needle:?} in {error}");
    }
    refused(out, "nothing published");
    refused(
        one(&[], "work_order.create", &good),
        "/type: unknown event type \"work_order.create\" (did you mean \"work_order.created\"?)",
    );
    refused(
        one(&["--version", "3"], "work_order.created", &good),
        "/version: work_order.created has no version 3 (versions: 1)",
    );

    // A batch: every invalid line is named, nothing of it is published.
    let batch = [
        line("work_order.created", "wo-1", created("wo-1")),
        line("work_order.created", "wo-2", json!({"id": "wo-2"})),
        line("work_order.created", "wo-3", created("wo-3")),
        line(
            "system.error",
            "api",
            json!({"component": "api", "severity": "fatal"}),
        ),
    ]
    .join("\n");
    let out = publish(&["--batch", "-"], Some(&batch));
    assert_eq!(out.code, 2);
    let error = out.error_line();
    assert!(
        error.contains("2 of 4 events are invalid (nothing published)"),
        "{error}"
    );
    assert!(
        error.contains("line 2: work_order.created v1: /data: "),
        "{error}"
    );
    assert!(error.contains("line 4: system.error v1: "), "{error}");
    assert!(error.contains("/data/severity"), "{error}");
    assert_eq!(total_length(&streams_json(&ns)), 0, "nothing was published");

    // --no-validate publishes what the catalogue refuses.
    let out = one(&["--no-validate"], "work_order.created", bad);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = one(&[], "work_order.created", &good);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(total_length(&streams_json(&ns)), 2);
}

#[test]
fn consume_never_hands_an_invalid_event_to_its_handler() {
    let ns = namespace();
    // One key, so one partition, in this order: the two invalid events
    // come before the valid ones.
    let invalid = [
        line("work_order.created", "wo-1", json!({"id": "wo-1"})),
        line("work_order.deleted", "wo-1", json!({"id": "wo-1"})),
    ]
    .join("\n");
    let out = run(
        eventbus(&ns, &["publish", "--no-validate", "--batch", "-"]),
        Some(&invalid),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let valid = publish_batch(
        &ns,
        &[
            line("work_order.created", "wo-1", created("wo-1")),
            line("work_order.created", "wo-1", created("wo-1")),
        ]
        .join("\n"),
    );

    let out = run(
        eventbus(
            &ns,
            &["consume", "--group", "g", "--print", "--max-events", "2"],
        ),
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let printed: HashSet<String> = out
        .lines()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        printed,
        ids_of(&valid),
        "only the valid events were handled"
    );
    let rejections = out
        .stderr
        .lines()
        .filter(|l| l.contains("\"class\":\"invalid\"") && l.contains("dead-lettered"))
        .count();
    assert_eq!(rejections, 2, "{}", out.stderr);
    assert!(out.stderr.contains("\\\"title\\\" is a required property"));
    assert!(out.stderr.contains("unknown event type"));
    for s in streams_json(&ns)["streams"].as_array().unwrap() {
        for g in s["groups"].as_array().unwrap() {
            assert_eq!(g["pending"], 0, "{s}");
        }
    }
}

#[test]
fn consume_upcast_hands_over_the_latest_version() {
    let ns = namespace();
    let v1 = json!({"work_item_id": "wi-1", "work_order_id": "wo-1", "kind": "flag_clauses",
                    "failed_at": CREATED_AT, "attempts": 1,
                    "error": {"code": "NOT_FOUND", "message": "no such customer", "retryable": false}});
    publish_batch(&ns, &line("work_item.processing_failed", "wi-1", v1));
    let out = run(
        eventbus(
            &ns,
            &[
                "consume",
                "--group",
                "g",
                "--print",
                "--upcast",
                "--max-events",
                "1",
            ],
        ),
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let printed = out.lines();
    assert_eq!(printed[0]["version"], 2);
    assert_eq!(printed[0]["data"]["error"]["category"], "not_found");
}

#[test]
fn list_show_and_validate() {
    let ns = namespace();
    let out = run(eventbus(&ns, &["schemas", "list", "--json"]), None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let types = out.lines();
    assert_eq!(types.len(), 12);
    let failed = types
        .iter()
        .find(|t| t["type"] == "work_item.processing_failed")
        .unwrap();
    assert_eq!(failed["partition_key"], "work_item_id");
    assert_eq!(failed["versions"], json!([1, 2]));
    let out = run(eventbus(&ns, &["schemas", "list"]), None);
    assert!(out.stdout.contains("system.maintenance"));

    let out = run(
        eventbus(&ns, &["schemas", "show", "work_item.processing_failed"]),
        None,
    );
    let schema: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        schema["$id"],
        "urn:eventbus:schema:work_item.processing_failed:v2"
    );
    let out = run(
        eventbus(
            &ns,
            &[
                "schemas",
                "show",
                "work_item.processing_failed",
                "--version",
                "1",
            ],
        ),
        None,
    );
    let schema: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(schema["title"], "work_item.processing_failed v1");
    for (args, needle) in [
        (
            vec!["schemas", "show", "work_item.procesing_failed"],
            "did you mean",
        ),
        (
            vec!["schemas", "show", "system.error", "--version", "2"],
            "has no version 2",
        ),
    ] {
        let out = run(eventbus(&ns, &args), None);
        assert_eq!(out.code, 2);
        assert!(out.error_line().contains(needle), "{}", out.stderr);
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let text = [
        line("work_order.created", "wo-1", created("wo-1")),
        "{nope".to_owned(),
        String::new(),
        json!({"type": "system.error", "data": {"component": "api"}}).to_string(),
        json!({"stream": "s", "entry_id": "1-0", "event": {"type": "work_order.created", "version": 1, "key": "wo-5", "data": created("wo-5")}}).to_string(),
    ]
    .join("\n");
    std::fs::write(&file, text).unwrap();
    let path = file.to_string_lossy().into_owned();
    let out = run(eventbus(&ns, &["schemas", "validate", &path]), None);
    assert_eq!(out.code, 2);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert_eq!(lines[0], "line 1: ok (work_order.created v1)");
    assert!(
        lines[1].starts_with("line 2: invalid: not valid JSON"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("line 4: invalid: system.error v1: /data: "),
        "{}",
        lines[2]
    );
    assert_eq!(lines[3], "line 5: ok (work_order.created v1)");
    assert!(out.error_line().contains("2 of 4 events are invalid"));

    let out = run(
        eventbus(&ns, &["schemas", "validate", "--json", &path]),
        None,
    );
    let verdicts = out.lines();
    assert_eq!(verdicts[2]["valid"], false);
    assert!(verdicts[2]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["pointer"] == "/data"));

    // One envelope as `consume --print` writes it.
    let envelope = json!({"id": "019a1f2e-8b3c-7d4e-9f60-1a2b3c4d5e6f", "type": "work_order.created",
                          "version": 1, "key": "wo-1", "occurred_at": CREATED_AT, "source": "s",
                          "data": created("wo-1")});
    std::fs::write(&file, serde_json::to_string_pretty(&envelope).unwrap()).unwrap();
    let out = run(eventbus(&ns, &["schemas", "validate", &path]), None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "event: ok (work_order.created v1)\n");
}

#[test]
fn check_and_docs() {
    let ns = namespace();
    let out = run(eventbus(&ns, &["schemas", "check"]), None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out
        .stdout
        .contains("work_item.processing_failed v1 → v2 (backward): compatible"));
    assert!(out
        .stdout
        .contains("covered by the upcaster: /error/category"));
    for mode in ["forward", "full"] {
        let out = run(eventbus(&ns, &["schemas", "check", "--mode", mode]), None);
        assert_eq!(out.code, 1, "{mode}: {}", out.stderr);
        assert!(out.stdout.contains("BREAKING"));
        assert!(out.stdout.contains("[property_added]"));
        assert!(out.error_line().contains("1 version pair(s) break"));
    }

    // The committed docs are current.
    let committed = repo("docs/events");
    let out = run(
        eventbus(&ns, &["schemas", "docs", "--out", &committed, "--check"]),
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);

    // Writing, then noticing a stale page.
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("events");
    let out_path = out_dir.to_string_lossy().into_owned();
    let out = run(
        eventbus(&ns, &["schemas", "docs", "--out", &out_path]),
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 13);
    std::fs::write(out_dir.join("system.error.md"), "edited by hand").unwrap();
    std::fs::write(out_dir.join("old.type.md"), "a type that is gone").unwrap();
    let out = run(
        eventbus(&ns, &["schemas", "docs", "--out", &out_path, "--check"]),
        None,
    );
    assert_eq!(out.code, 1);
    let error = out.error_line();
    assert!(
        error.contains("system.error.md") && error.contains("old.type.md"),
        "{error}"
    );
    let out = run(
        eventbus(&ns, &["schemas", "docs", "--out", &out_path]),
        None,
    );
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains("1 written, 1 removed"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_broken_schema_directory_is_refused_with_its_file() {
    let ns = namespace();
    let dir = tempfile::tempdir().unwrap();
    // A copy of the catalogue with one schema broken.
    copy_dir(Path::new(&repo("schemas")), dir.path());
    let with_dir = |args: &[&str], d: &Path| {
        let mut c = eventbus(&ns, args);
        c.env("EVENT_BUS_SCHEMA_DIR", d);
        run(c, None)
    };
    let out = with_dir(&["schemas", "check"], dir.path());
    assert_eq!(out.code, 0, "an intact copy loads: {}", out.stderr);

    let broken = dir.path().join("system.error/v1.json");
    let mut schema: Value =
        serde_json::from_str(&std::fs::read_to_string(&broken).unwrap()).unwrap();
    schema["properties"]["severity"]["type"] = json!("strng");
    std::fs::write(&broken, schema.to_string()).unwrap();
    for args in [
        vec!["schemas", "list"],
        vec![
            "publish",
            "--type",
            "system.error",
            "--key",
            "api",
            "--data",
            "{}",
        ],
    ] {
        let out = with_dir(&args, dir.path());
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        let error = out.error_line();
        assert!(error.contains("EVENT_BUS_SCHEMA_DIR: "), "{error}");
        assert!(
            error.contains("system.error/v1.json: not a valid JSON Schema"),
            "{error}"
        );
    }

    std::fs::write(&broken, "{").unwrap();
    let out = with_dir(&["schemas", "list"], dir.path());
    assert_eq!(out.code, 2);
    assert!(out
        .error_line()
        .contains("system.error/v1.json: not valid JSON"));

    let out = with_dir(&["schemas", "list"], &dir.path().join("missing"));
    assert_eq!(out.code, 2);
    assert!(out.error_line().contains("cannot read"), "{}", out.stderr);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
