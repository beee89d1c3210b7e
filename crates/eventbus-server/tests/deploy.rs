//! Deployment files: the Prometheus alert rules are valid (promtool when it
//! is installed, a structural YAML check always) and name only series
//! eventbus exports.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every series name eventbus exports (see docs/operations.md).
const SERIES: &[&str] = &[
    "eventbus_dlq_depth",
    "eventbus_dead_letters_total",
    "eventbus_retries_total",
    "eventbus_outbox_oldest_age_seconds",
    "eventbus_outbox_backlog",
    "eventbus_group_lag",
    "eventbus_group_pending",
    "eventbus_published_total",
    "eventbus_consumed_total",
    "eventbus_handler_duration_seconds",
    "eventbus_relay_lag_seconds",
    "eventbus_relay_published_total",
    "eventbus_relay_rejected_total",
    "eventbus_dead_letter_store_errors_total",
    "eventbus_group_oldest_unacked_age_seconds",
    "eventbus_redis_used_memory_bytes",
    "eventbus_redis_maxmemory_bytes",
    "eventbus_stream_entries",
    "eventbus_stream_trimmed_total",
];

#[test]
fn prometheus_alert_rules_are_valid() {
    let path = root().join("deploy/prometheus/alerts.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("alerts.yml is YAML");
    let groups = doc["groups"].as_sequence().expect("a groups list");
    let mut alerts = 0;
    for g in groups {
        assert!(g["name"].as_str().is_some(), "a group without a name");
        for r in g["rules"].as_sequence().expect("rules") {
            let name = r["alert"].as_str().expect("every rule is an alert");
            let expr = r["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no expr"));
            assert!(
                r["labels"]["severity"].as_str().is_some(),
                "{name}: no severity"
            );
            assert!(
                r["annotations"]["summary"].as_str().is_some(),
                "{name}: no summary"
            );
            assert!(
                SERIES.iter().any(|s| expr.contains(s)),
                "{name}: its expression uses no eventbus series: {expr}"
            );
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("eventbus_") {
                    assert!(SERIES.contains(&word), "{name}: unknown series {word}");
                }
            }
            alerts += 1;
        }
    }
    assert!(alerts >= 3);
    // The real checker, when installed (.ci/run installs it if it can).
    if let Ok(out) = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&path)
        .output()
    {
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
