//! `publish --delay/--deliver-at`, `scheduled list|cancel|run`: due events
//! reach their streams exactly once across three SIGKILLed schedulers;
//! every bad input is refused with a clear message and exit 2.

#[allow(dead_code)] // each test file uses some of the helpers
mod common;

use std::collections::HashSet;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{eventbus, namespace, run};
use eventbus_testkit::TestNamespace;
use serde_json::{json, Value};

fn publish(ns: &TestNamespace, extra: &[&str], stdin: Option<&str>) -> common::Output {
    let mut args = vec!["publish", "--no-validate"];
    if stdin.is_none() {
        args.extend(["--type", "sched.cli", "--key", "k", "--data", "{}"]);
    } else {
        args.extend(["--batch", "-"]);
    }
    args.extend_from_slice(extra);
    run(eventbus(ns, &args), stdin)
}

fn scheduled(ns: &TestNamespace) -> Vec<Value> {
    let out = run(
        eventbus(ns, &["scheduled", "list", "--json", "--limit", "10000"]),
        None,
    );
    assert_eq!(out.code, 0, "scheduled list: {}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    v["scheduled"].as_array().unwrap().clone()
}

/// The event ids on every stream of the namespace, in order per stream.
fn delivered(ns: &TestNamespace) -> Vec<String> {
    let out = run(
        eventbus(ns, &["tail", "--from-start", "--topics", "sched"]),
        None,
    );
    assert_eq!(out.code, 0, "tail: {}", out.stderr);
    out.lines()
        .iter()
        .map(|l| l["event"]["id"].as_str().unwrap().to_owned())
        .collect()
}

fn spawn_scheduler(ns: &TestNamespace) -> Child {
    eventbus(ns, &["scheduled", "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn every_bad_input_is_refused_with_a_clear_message() {
    let ns = namespace();
    let far = (Utc::now() + chrono::Duration::days(40)).to_rfc3339();
    let soon = (Utc::now() + chrono::Duration::minutes(5)).to_rfc3339();
    let cases: Vec<(Vec<&str>, Option<String>, &str)> = vec![
        (vec!["--delay", "10"], None, "has no unit"),
        (vec!["--delay", "5y"], None, "is not a delay"),
        (vec!["--delay=-5s"], None, "is not a delay"),
        (vec!["--delay", "-5s"], None, "unexpected argument"),
        (vec!["--delay", "1.5h"], None, "is not a delay"),
        (vec!["--delay", "99999999999999d"], None, "longer than 30d"),
        (vec!["--delay", "9999999999999999999d"], None, "too long"),
        (vec!["--delay", "31d"], None, "longer than 30d"),
        (vec!["--deliver-at", "tomorrow"], None, "RFC 3339"),
        (vec!["--deliver-at", "2026-05-01"], None, "RFC 3339"),
        (vec!["--deliver-at", "2026-05-01 09:00"], None, "RFC 3339"),
        (vec!["--deliver-at", &far], None, "more than 30d ahead"),
        (vec!["--delay", "5s", "--deliver-at", &soon], None, "cannot be used with"),
        (vec![], Some(r#"{"type":"sched.cli","key":"a","data":{},"deliver_at":"soon"}"#.into()), "line 1: deliver_at"),
        (vec![], Some(format!("{{\"type\":\"sched.cli\",\"key\":\"a\",\"data\":{{}}}}\n{{\"type\":\"sched.cli\",\"key\":\"b\",\"data\":{{}},\"deliver_at\":\"{far}\"}}")), "line 2: deliver_at"),
        (vec![], Some(r#"{"type":"sched.cli","key":"a","data":{},"deliver_at":5}"#.into()), "line 1"),
        (vec!["--delay", "40d"], Some(r#"{"type":"sched.cli","key":"a","data":{}}"#.into()), "longer than 30d"),
    ];
    for (extra, stdin, needle) in &cases {
        let out = publish(&ns, extra, stdin.as_deref());
        assert_eq!(out.code, 2, "{extra:?} {stdin:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(needle),
            "{extra:?} {stdin:?}: want {needle:?} in {}",
            out.stderr
        );
    }
    // EVENT_BUS_MAX_DELAY: bad values named, a smaller limit applied.
    let with_max = |max: &str, extra: &[&str]| {
        let mut args = vec![
            "publish",
            "--no-validate",
            "--type",
            "sched.cli",
            "--key",
            "k",
        ];
        args.extend(["--data", "{}"]);
        args.extend_from_slice(extra);
        let mut cmd = eventbus(&ns, &args);
        cmd.env("EVENT_BUS_MAX_DELAY", max);
        run(cmd, None)
    };
    for bad in ["abc", "0s", "10", "5000d"] {
        let out = with_max(bad, &[]);
        assert_eq!(out.code, 2, "{bad}: {}", out.stderr);
        assert!(
            out.error_line().contains("EVENT_BUS_MAX_DELAY"),
            "{bad}: {}",
            out.stderr
        );
    }
    let out = with_max("1h", &["--delay", "2h"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.error_line().contains("longer than 1h"),
        "{}",
        out.stderr
    );
    // consume --scheduled-retry-after.
    for bad in ["10y", "0s", "-1s", "forever"] {
        let flag = format!("--scheduled-retry-after={bad}");
        let out = run(
            eventbus(&ns, &["consume", "--group", "g", "--unordered", &flag]),
            None,
        );
        assert_eq!(out.code, 2, "{bad}: {}", out.stderr);
        assert!(
            out.stderr.contains("--scheduled-retry-after"),
            "{bad}: {}",
            out.stderr
        );
    }
    // scheduled cancel / list.
    let out = run(eventbus(&ns, &["scheduled", "cancel", "not-an-id"]), None);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("is not an event id"), "{}", out.stderr);
    let out = run(eventbus(&ns, &["scheduled", "list", "--limit", "0"]), None);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let unknown = uuid::Uuid::now_v7().to_string();
    let out = run(eventbus(&ns, &["scheduled", "cancel", &unknown]), None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.error_line().contains("no scheduled event"),
        "{}",
        out.stderr
    );
    // Nothing of any refused input was scheduled or published.
    assert!(scheduled(&ns).is_empty());
    assert!(delivered(&ns).is_empty());
}

#[test]
fn publish_later_list_cancel_and_deliver_with_the_same_id() {
    let ns = namespace();
    let out = publish(&ns, &["--delay", "2s"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let single = out.lines().remove(0);
    assert_eq!(single["entry_id"], "");
    assert!(single["deliver_at"].is_string(), "{single}");
    let at = (Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let batch = format!(
        "{}\n{}\n{}\n",
        json!({"type": "sched.cli", "key": "b1", "data": {}, "deliver_at": at}),
        json!({"type": "sched.cli", "key": "b2", "data": {}}),
        json!({"type": "sched.cli", "key": "b3", "data": {}, "deliver_at": "2000-01-01T00:00:00Z"}),
    );
    let out = publish(&ns, &["--delay", "3s"], Some(&batch));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines = out.lines();
    assert!(
        lines[1]["deliver_at"].is_string(),
        "--delay is the default: {}",
        lines[1]
    );
    assert!(
        lines[2].get("deliver_at").is_none(),
        "a past time is now: {}",
        lines[2]
    );
    assert_ne!(lines[2]["entry_id"], "");

    let waiting = scheduled(&ns);
    assert_eq!(waiting.len(), 3, "{waiting:?}");
    let out = run(eventbus(&ns, &["scheduled", "list"]), None);
    assert!(out.stdout.starts_with("DELIVER_AT"), "{}", out.stdout);
    let cancel = lines[0]["id"].as_str().unwrap();
    let out = run(
        eventbus(&ns, &["scheduled", "cancel", cancel, "--json"]),
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.lines()[0]["cancelled"], true);
    assert_eq!(scheduled(&ns).len(), 2);

    let mut scheduler = spawn_scheduler(&ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !scheduled(&ns).is_empty() {
        assert!(Instant::now() < deadline, "not delivered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = scheduler.kill();
    let _ = scheduler.wait();
    let got: HashSet<String> = delivered(&ns).into_iter().collect();
    let want: HashSet<String> = [&single, &lines[1], &lines[2]]
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        got, want,
        "the cancelled event never arrives; the others keep their ids"
    );
}

/// 10,000 events due over 3 s, three `scheduled run` processes, one of
/// them SIGKILLed and restarted every 300 ms: each event reaches its stream
/// exactly once.
#[test]
fn ten_thousand_events_across_three_sigkilled_schedulers_arrive_exactly_once() {
    let ns = namespace();
    let start = Utc::now() + chrono::Duration::seconds(4);
    let batch: String = (0..10_000)
        .map(|i| {
            let at = start + chrono::Duration::milliseconds((i * 7919 % 3000) as i64);
            json!({"type": "sched.cli", "key": format!("k{}", i % 101), "data": {"i": i}, "deliver_at": at})
                .to_string()
                + "\n"
        })
        .collect();
    let out = publish(&ns, &[], Some(&batch));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let ids: HashSet<String> = out
        .lines()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 10_000);

    let mut schedulers: Vec<Child> = (0..3).map(|_| spawn_scheduler(&ns)).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut kills = 0;
    for round in 0.. {
        std::thread::sleep(Duration::from_millis(300));
        let victim = &mut schedulers[round % 3];
        let _ = victim.kill(); // SIGKILL
        let _ = victim.wait();
        kills += 1;
        schedulers[round % 3] = spawn_scheduler(&ns);
        if scheduled(&ns).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not all delivered");
    }
    for mut s in schedulers {
        let _ = s.kill();
        let _ = s.wait();
    }
    assert!(kills >= 3);
    let got = delivered(&ns);
    let unique: HashSet<String> = got.iter().cloned().collect();
    assert_eq!(
        got.len(),
        10_000,
        "duplicates or losses: {} entries",
        got.len()
    );
    assert_eq!(unique, ids);
}
