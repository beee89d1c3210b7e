//! Graceful shutdown of `eventbus consume` on SIGTERM and SIGINT, through
//! the built binary, in both modes: in-flight handlers finish and are
//! acknowledged, the process exits 0, and a later consumer handles the rest.
//! Unordered mode leaves nothing pending; ordered mode leaves only entries it
//! read ahead and never started, for the next owner to take over.

#[allow(dead_code)] // each test file uses some of the helpers
mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eventbus_testkit::{shared_redis_url, TestNamespace};

fn eventbus(ns: &TestNamespace) -> Command {
    let mut c = common::bare_eventbus();
    c.env("REDIS_URL", ns.url())
        .env("EVENT_BUS_NAMESPACE", ns.name())
        .env("EVENT_BUS_PARTITIONS", "4")
        .env("EVENT_BUS_LOG_FORMAT", "text");
    c
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn pending(ns: &TestNamespace, group: &str) -> u64 {
    let mut conn = redis::Client::open(ns.url())
        .unwrap()
        .get_connection()
        .unwrap();
    (0..4)
        .map(|p| {
            let stream = format!("{}:{{work_item:{p}}}", ns.name());
            let v: redis::Value = redis::cmd("XPENDING")
                .arg(&stream)
                .arg(group)
                .query(&mut conn)
                .unwrap();
            match v {
                redis::Value::Array(items) => match items.first() {
                    Some(redis::Value::Int(n)) => *n as u64,
                    _ => 0,
                },
                _ => 0,
            }
        })
        .sum()
}

fn drains_on(signal: &str, mode: &str) {
    let ns = TestNamespace::new(shared_redis_url(), "shutdown");
    let dir = tempfile::tempdir().unwrap();
    let batch = dir.path().join("events.jsonl");
    let events: String = (0..20)
        .map(|i| format!("{{\"type\":\"work_item.processing_started\",\"key\":\"wi-{i}\",\"data\":{{\"n\":{i}}}}}\n"))
        .collect();
    std::fs::write(&batch, events).unwrap();
    let out = eventbus(&ns)
        .args(["publish", "--no-validate", "--batch"])
        .arg(&batch)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let started = dir.path().join("started");
    let done = dir.path().join("done");
    let script = format!(
        "echo $EVENTBUS_EVENT_ID >> {s}; sleep 1; echo $EVENTBUS_EVENT_ID >> {d}",
        s = started.display(),
        d = done.display()
    );
    let mut child = eventbus(&ns)
        .args([
            "consume",
            "--no-validate",
            "--group",
            "g",
            "--topics",
            "work_item",
            mode,
            "--concurrency",
            "3",
            "--exec",
            &script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines(&started).is_empty() {
        assert!(Instant::now() < deadline, "no handler ever started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    let stderr = {
        use std::io::Read;
        let mut s = String::new();
        child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
        s
    };
    assert!(status.success(), "consume exited with {status:?}: {stderr}");
    let (s, d): (HashSet<String>, HashSet<String>) = (
        lines(&started).into_iter().collect(),
        lines(&done).into_iter().collect(),
    );
    assert!(
        !s.is_empty() && s.len() < 20,
        "shutdown came too late to test anything: {} started",
        s.len()
    );
    assert_eq!(s, d, "a handler in flight at shutdown did not finish");
    let pending = pending(&ns, "g");
    if mode == "--unordered" {
        assert_eq!(pending, 0, "finished work was not acknowledged before exit");
    } else {
        assert!(
            pending <= 20 - d.len() as u64,
            "finished work was not acknowledged before exit: {pending} pending, {} done",
            d.len()
        );
    }

    // the rest is handled by the next consumer
    let out = eventbus(&ns)
        .args([
            "consume",
            "--no-validate",
            "--group",
            "g",
            "--topics",
            "work_item",
            "--max-events",
        ])
        .arg((20 - d.len()).to_string())
        .args([
            "--exec",
            &format!("echo $EVENTBUS_EVENT_ID >> {}", done.display()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: HashSet<String> = lines(&done).into_iter().collect();
    assert_eq!(all.len(), 20);
}

#[test]
fn sigterm_drains_in_flight_handlers() {
    drains_on("-TERM", "--unordered");
}

#[test]
fn sigint_drains_in_flight_handlers() {
    drains_on("-INT", "--unordered");
}

#[test]
fn sigterm_drains_an_ordered_member() {
    drains_on("-TERM", "--ordered");
}

#[test]
fn sigint_drains_an_ordered_member() {
    drains_on("-INT", "--ordered");
}

/// An idle consumer blocked in a long read (`--block 60s`; in ordered mode
/// a session timeout that lets the read block that long) stops within 2 s
/// of SIGTERM and exits 0: the read is abandoned, not waited out.
fn idle_consumer_stops_promptly(mode: &[&str]) {
    let ns = TestNamespace::new(shared_redis_url(), "shutdown-idle");
    let mut child = eventbus(&ns)
        .args([
            "consume",
            "--group",
            "g",
            "--topics",
            "work_item",
            "--block",
            "60s",
            "--print",
        ])
        .args(mode)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let it start and block in its read.
    std::thread::sleep(Duration::from_secs(3));
    assert!(child.try_wait().unwrap().is_none(), "consume exited early");
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("consume {mode:?} did not stop within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = sent.elapsed();
    assert!(status.success(), "consume {mode:?} exited with {status:?}");
    assert!(
        took < Duration::from_secs(2),
        "consume {mode:?} took {took:?} to stop after SIGTERM"
    );
}

#[test]
fn sigterm_stops_an_idle_unordered_consumer_blocked_in_a_long_read() {
    idle_consumer_stops_promptly(&["--unordered"]);
}

#[test]
fn sigterm_stops_an_idle_ordered_member_blocked_in_a_long_read() {
    idle_consumer_stops_promptly(&["--ordered", "--session-timeout", "600s"]);
}
