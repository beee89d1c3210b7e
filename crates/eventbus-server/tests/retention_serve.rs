//! Retention inside `eventbus serve`: its trimmer trims what every group
//! acknowledged, a group that stops consuming holds retention back and
//! `/metrics` shows for how long, `trim --dry-run` changes nothing, and
//! `groups delete` releases the streams; on one server and on a private
//! Redis Cluster. `eventbus relay` trims the same way. Also: bad
//! `EVENT_BUS_TRIM_INTERVAL` values are refused.

#[allow(dead_code)] // each test file uses some of the helpers
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{
    batch_text, consume_unordered, eventbus, publish_batch, run, streams_json, total_length,
};
use eventbus_testkit::TestNamespace;

const WAIT: Duration = Duration::from_secs(60);

/// `eventbus serve` (no PostgreSQL, no tokens) trimming every second.
struct Serve {
    child: Child,
    addr: String,
}

impl Serve {
    fn start(ns: &TestNamespace) -> Serve {
        let mut c = eventbus(ns, &["serve", "--addr", "127.0.0.1:0"]);
        c.env("EVENT_BUS_TRIM_INTERVAL", "1s")
            .env("EVENT_BUS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v["fields"]["message"] == "eventbus serve listening" {
                    let _ = tx.send(v["fields"]["addr"].as_str().unwrap().to_owned());
                }
            }
        });
        let addr = rx.recv_timeout(WAIT).expect("serve starts");
        Serve { child, addr }
    }

    fn metrics(&self) -> String {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        text
    }

    /// The value of the first series line starting with `prefix`.
    fn gauge(&self, prefix: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn dry_run_total(ns: &TestNamespace) -> u64 {
    let out = run(eventbus(ns, &["trim", "--dry-run", "--json"]), None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["trimmed"].as_u64().unwrap())
        .sum()
}

/// The scenario, on whatever Redis `ns` is on.
fn stuck_group_holds_retention_until_deleted(ns: &TestNamespace) {
    publish_batch(ns, &batch_text(30));
    consume_unordered(ns, "fast", 30);
    consume_unordered(ns, "slow", 5);
    let serve = Serve::start(ns);

    // serve's trimmer keeps what slow has not read (25), nothing more.
    eventually("serve trims what both groups acknowledged", || {
        total_length(&streams_json(ns)) == 25
    });
    let slow = "eventbus_group_oldest_unacked_age_seconds{group=\"slow\"}";
    eventually(
        "the metric shows how long slow holds retention back",
        || serve.gauge(slow).is_some_and(|age| age >= 1.0),
    );
    let fast = "eventbus_group_oldest_unacked_age_seconds{group=\"fast\"}";
    assert_eq!(serve.gauge(fast), Some(0.0), "fast is caught up");
    let metrics = serve.metrics();
    for series in [
        "eventbus_stream_entries{",
        "eventbus_redis_used_memory_bytes",
        "eventbus_redis_maxmemory_bytes",
        "eventbus_stream_trimmed_total",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    let entries: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("eventbus_stream_entries{") && !l.contains("_dead"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(entries, 25.0, "{metrics}");

    // A dry run finds nothing more to trim and changes nothing.
    assert_eq!(dry_run_total(ns), 0);
    assert_eq!(total_length(&streams_json(ns)), 25);

    // Retiring slow releases everything, and its age goes back to 0.
    let out = run(eventbus(ns, &["groups", "delete", "slow", "--yes"]), None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    eventually("serve trims the streams slow held", || {
        total_length(&streams_json(ns)) == 0
    });
    eventually("the deleted group holds nothing back", || {
        serve.gauge(slow) == Some(0.0)
    });
}

#[test]
fn serve_trims_and_a_stuck_group_shows_until_it_is_deleted() {
    let ns = TestNamespace::new(eventbus_testkit::shared_redis_url(), "ret-serve");
    stuck_group_holds_retention_until_deleted(&ns);
}

#[test]
fn on_a_cluster_serve_trims_and_a_stuck_group_shows_until_it_is_deleted() {
    let cluster = eventbus_testkit::RedisCluster::start();
    let ns = TestNamespace::new(cluster.cluster_url(), "ret-cluster");
    stuck_group_holds_retention_until_deleted(&ns);
}

/// The relay's trimmer: streams whose entries every group acknowledged are
/// emptied within a few intervals, while it relays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_trims_what_every_group_acknowledged() {
    let ns = TestNamespace::new(eventbus_testkit::shared_redis_url(), "ret-relay");
    let db = eventbus_testkit::TestSchema::new("retrelay").await;
    publish_batch(&ns, &batch_text(20));
    consume_unordered(&ns, "all", 20);
    assert_eq!(total_length(&streams_json(&ns)), 20);
    let mut relay = common::eventbus_pg(&ns, db.url(), db.name(), 16);
    relay
        .env("EVENT_BUS_TRIM_INTERVAL", "1s")
        .arg("relay")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = relay.spawn().unwrap();
    let deadline = Instant::now() + WAIT;
    while total_length(&streams_json(&ns)) != 0 {
        assert!(Instant::now() < deadline, "the relay did not trim");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn bad_trim_intervals_are_refused_in_words() {
    let ns = common::namespace();
    for bad in ["0s", "soon", "10", "2d", "-1s"] {
        let mut c = eventbus(&ns, &["streams"]);
        c.env("EVENT_BUS_TRIM_INTERVAL", bad);
        let out = run(c, None);
        assert_eq!(out.code, 2, "{bad}: {}", out.stderr);
        assert!(
            out.stderr.contains("EVENT_BUS_TRIM_INTERVAL") && out.stderr.contains("a duration"),
            "{bad}: {}",
            out.stderr
        );
    }
}
