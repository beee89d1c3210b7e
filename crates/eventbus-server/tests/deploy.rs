//! Deployment files: the Prometheus alert rules are valid (promtool when it
//! is installed, a structural YAML check always) and the Grafana dashboard's
//! queries, and both name only series eventbus exports (the names its
//! source records with `metrics::counter!`/`gauge!`/`histogram!`).

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
    "eventbus_stream_unread_trimmed_total",
    "eventbus_trace_spans_dropped_total",
    "eventbus_scheduled_events",
    "eventbus_scheduled_lateness_seconds",
    "eventbus_scheduled_moved_total",
    "eventbus_retries_scheduled_total",
];

/// The series the code records: the first string of each
/// `counter!(`, `gauge!(` and `histogram!(` under `crates/*/src`, with
/// whether it is a histogram (exported with `_bucket`, `_sum`, `_count`).
fn exported_series() -> std::collections::BTreeMap<String, bool> {
    let mut out = std::collections::BTreeMap::new();
    let mut dirs = vec![
        root().join("crates/eventbus/src"),
        root().join("crates/eventbus-server/src"),
    ];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (macro_name, histogram) in [
                ("counter!(", false),
                ("gauge!(", false),
                ("histogram!(", true),
            ] {
                for (at, _) in text.match_indices(macro_name) {
                    let rest = text[at + macro_name.len()..].trim_start();
                    if let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                        out.insert(name.to_owned(), histogram);
                    }
                }
            }
        }
    }
    out
}

/// The `eventbus_*` words of a query, each checked against what the code
/// exports; how many there were.
fn check_query(
    what: &str,
    expr: &str,
    exported: &std::collections::BTreeMap<String, bool>,
) -> usize {
    let mut n = 0;
    for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if !word.starts_with("eventbus_") {
            continue;
        }
        let known = exported.get(word).is_some()
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                word.strip_suffix(suffix)
                    .is_some_and(|base| exported.get(base) == Some(&true))
            });
        assert!(
            known,
            "{what}: {word} is not a series the code exports ({exported:?})"
        );
        n += 1;
    }
    n
}

#[test]
fn the_series_list_is_what_the_code_exports() {
    let exported = exported_series();
    for s in SERIES {
        assert!(exported.contains_key(*s), "{s} is listed but not exported");
    }
    for s in exported.keys() {
        assert!(
            SERIES.contains(&s.as_str()),
            "{s} is exported but not listed (docs/operations.md)"
        );
    }
}

#[test]
fn grafana_dashboard_queries_name_exported_series() {
    let exported = exported_series();
    let path = root().join("deploy/grafana/eventbus.json");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .expect("the dashboard is JSON");
    let panels = doc["panels"].as_array().expect("panels");
    let mut titles = Vec::new();
    for p in panels {
        let title = p["title"].as_str().expect("every panel has a title");
        titles.push(title.to_owned());
        let targets = p["targets"].as_array().expect("every panel has queries");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: a target without expr"));
            assert!(
                check_query(title, expr, &exported) > 0,
                "{title}: {expr} names no eventbus series"
            );
        }
    }
    for wanted in [
        "Throughput",
        "Handler latency",
        "Consumer lag",
        "Dead letters",
        "Outbox backlog",
        "Redis memory",
    ] {
        assert!(
            titles.iter().any(|t| t == wanted),
            "no {wanted} panel in {titles:?}"
        );
    }
}

#[test]
fn prometheus_alert_rules_are_valid() {
    let path = root().join("deploy/prometheus/alerts.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("alerts.yml is YAML");
    let groups = doc["groups"].as_sequence().expect("a groups list");
    let exported = exported_series();
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
                check_query(name, expr, &exported) > 0,
                "{name}: its expression uses no eventbus series: {expr}"
            );
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
