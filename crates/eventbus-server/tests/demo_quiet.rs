//! `eventbus demo` keeps stderr quiet: its summary goes to stdout, and
//! without `-v` stderr holds warnings at most (no info lines around the
//! summary); `-v` brings the info lines back, and an explicit
//! `EVENT_BUS_LOG` wins over both. Against the local Redis and PostgreSQL;
//! the demo works in its own throw-away namespace and schema.

#[allow(dead_code)] // each test file uses some of the helpers
mod common;

use std::process::Command;

use common::{eventbus, namespace, run, Output};
use serde_json::Value;

/// The demo with a few events per type, JSON logs, and `EVENT_BUS_LOG`
/// unset unless `log` is given.
fn demo(extra: &[&str], log: Option<&str>) -> Output {
    let ns = namespace(); // only to point the binary at the shared Redis
    let mut args = vec!["demo", "--events-per-type", "2"];
    args.extend_from_slice(extra);
    let mut cmd: Command = eventbus(&ns, &args);
    match log {
        Some(filter) => cmd.env("EVENT_BUS_LOG", filter),
        None => cmd.env_remove("EVENT_BUS_LOG"),
    };
    let out = run(cmd, None);
    assert_eq!(out.code, 0, "the demo failed: {}", out.stderr);
    out
}

/// The levels of the log lines on stderr (every line is a JSON log line;
/// anything else fails the test).
fn levels(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"));
            v["level"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

#[test]
fn the_demo_writes_its_summary_to_stdout_and_only_warnings_to_stderr() {
    let out = demo(&[], None);
    for needle in ["Committed 24 events", "Handled", "Throughput", "deleted"] {
        assert!(
            out.stdout.contains(needle),
            "{needle:?} missing on stdout:\n{}",
            out.stdout
        );
    }
    let levels = levels(&out.stderr);
    assert!(
        levels.iter().all(|l| l == "WARN" || l == "ERROR"),
        "stderr holds more than warnings: {levels:?}\n{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("\"INFO\""),
        "info lines on stderr:\n{}",
        out.stderr
    );

    // The JSON summary alone on stdout.
    let out = demo(&["--json"], None);
    let summary: Value = serde_json::from_str(&out.stdout).expect("stdout is the JSON summary");
    assert_eq!(summary["published"], 24);
    assert!(!out.stderr.contains("\"INFO\""), "{}", out.stderr);
}

#[test]
fn verbose_brings_the_info_logs_back_and_event_bus_log_wins() {
    let out = demo(&["-v"], None);
    assert!(out.stdout.contains("Committed 24 events"), "{}", out.stdout);
    let info = levels(&out.stderr).iter().filter(|l| *l == "INFO").count();
    assert!(info > 0, "-v logs info lines:\n{}", out.stderr);

    // An explicit filter from the user wins over the demo's quiet default...
    let out = demo(&[], Some("info"));
    assert!(
        levels(&out.stderr).iter().any(|l| l == "INFO"),
        "EVENT_BUS_LOG=info is obeyed:\n{}",
        out.stderr
    );
    // ...and over -v.
    let out = demo(&["-v"], Some("error"));
    assert!(
        levels(&out.stderr).iter().all(|l| l == "ERROR"),
        "EVENT_BUS_LOG=error is obeyed:\n{}",
        out.stderr
    );
}
