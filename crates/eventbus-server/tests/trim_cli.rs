//! `eventbus trim`: trims what every group acknowledged, never what a group
//! still needs; `--dry-run` changes nothing; bad retention values are
//! refused with a clear message.

#[allow(dead_code)] // each test file uses some of the helpers
mod common;

use common::{
    batch_text, consume_unordered, eventbus, publish_batch, run, streams_json, total_length,
};

fn trim(ns: &eventbus_testkit::TestNamespace, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["trim", "--json"];
    all.extend_from_slice(args);
    let out = run(eventbus(ns, &all), None);
    assert_eq!(out.code, 0, "trim failed: {}", out.stderr);
    serde_json::from_str(&out.stdout).expect("trim --json prints JSON")
}

fn trimmed(report: &serde_json::Value) -> u64 {
    report["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["trimmed"].as_u64().unwrap())
        .sum()
}

#[test]
fn trims_what_every_group_acknowledged_and_names_the_group_holding_it_back() {
    let ns = eventbus_testkit::TestNamespace::new(eventbus_testkit::shared_redis_url(), "trim");
    publish_batch(&ns, &batch_text(30));
    consume_unordered(&ns, "fast", 30);
    consume_unordered(&ns, "slow", 5);
    let before = total_length(&streams_json(&ns));
    assert_eq!(before, 30);

    let dry = trim(&ns, &["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    let would = trimmed(&dry);
    assert!((1..=5).contains(&would), "slow acknowledged 5: {dry}");
    assert_eq!(
        total_length(&streams_json(&ns)),
        before,
        "a dry run trims nothing"
    );

    let done = trim(&ns, &[]);
    assert_eq!(trimmed(&done), would);
    assert_eq!(total_length(&streams_json(&ns)), before - would);
    let held: Vec<&str> = done["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["held_by"].as_str())
        .collect();
    assert!(
        !held.is_empty() && held.iter().all(|g| *g == "slow"),
        "{done}"
    );
    // Again: nothing more is trimmable until slow moves on.
    assert_eq!(trimmed(&trim(&ns, &[])), 0);
    // Off trims nothing.
    let off = trim(&ns, &["--retention", "off"]);
    assert_eq!(off["retention"], "off");
    assert_eq!(trimmed(&off), 0);

    // Retiring the group that holds retention back releases it.
    let out = run(eventbus(&ns, &["groups", "delete", "slow"]), None);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("give --yes"), "{}", out.stderr);
    assert_eq!(
        total_length(&streams_json(&ns)),
        before - would,
        "not deleted without --yes"
    );
    let out = run(eventbus(&ns, &["groups", "delete", "slow", "--yes"]), None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("deleted group slow"), "{}", out.stdout);
    let released = trim(&ns, &[]);
    assert_eq!(
        trimmed(&released),
        before - would,
        "fast acknowledged everything"
    );
    assert_eq!(total_length(&streams_json(&ns)), 0);
    let groups = streams_json(&ns).to_string();
    assert!(!groups.contains("\"slow\""), "{groups}");

    // The table names the streams and the group.
    let out = run(eventbus(&ns, &["trim", "--dry-run"]), None);
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains("HELD BY") && out.stdout.contains("would trim 0 entries"),
        "{}",
        out.stdout
    );
}

#[test]
fn bad_retention_values_are_refused_in_words() {
    let ns = common::namespace();
    for bad in ["forever", "acked:", "acked:10parsecs"] {
        let out = run(eventbus(&ns, &["trim", "--retention", bad]), None);
        assert_eq!(out.code, 2, "{bad}: {}", out.stderr);
        assert!(out.stderr.contains("expected `acked`"), "{}", out.stderr);
        let mut c = eventbus(&ns, &["trim"]);
        c.env("EVENT_BUS_STREAM_RETENTION", bad);
        let out = run(c, None);
        assert_eq!(out.code, 2, "{bad} in env: {}", out.stderr);
        assert!(out.stderr.contains("expected `acked`"), "{}", out.stderr);
    }
}
