//! Ordered consumption through the built binary: several `eventbus consume`
//! processes in one group on the shared Redis (each test in its own
//! namespace), joining, leaving (SIGTERM) and being killed (SIGKILL).
//!
//! Timing bounds here are liveness bounds from the spec (a clean leave is
//! taken over within 2 s; a killed member's partitions after the session
//! timeout), polled generously; nothing asserts speed.

#[allow(dead_code)]
mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use eventbus::admin::GroupView;
use eventbus::{Envelope, RedisConnector, RedisOptions};
use eventbus_testkit::conformance::publisher;
use eventbus_testkit::{HttpTestServer, Reply, TestNamespace};
use serde_json::json;

use common::*;

const SESSION: Duration = Duration::from_secs(2);
const HEARTBEAT: Duration = Duration::from_millis(200);
/// Static members get a longer session: the test restarts a process within
/// it, and starting one can take more than 2 s on a loaded 2-core machine.
const STATIC_SESSION: Duration = Duration::from_secs(6);

/// Starts `eventbus consume` as member `id` (`--consumer id`: a dynamic
/// member, which releases its partitions when it stops) of group `g` on
/// topic `work_item`.
fn member(ns: &TestNamespace, id: &str, handler: &[&str]) -> Child {
    start_member(ns, "--consumer", id, SESSION, handler)
}

/// Starts a static member (`--member-id id`).
fn static_member(ns: &TestNamespace, id: &str, handler: &[&str]) -> Child {
    start_member(ns, "--member-id", id, STATIC_SESSION, handler)
}

fn start_member(
    ns: &TestNamespace,
    id_flag: &str,
    id: &str,
    session: Duration,
    handler: &[&str],
) -> Child {
    let session = format!("{}ms", session.as_millis());
    let mut args = vec![
        "consume",
        "--group",
        "g",
        "--topics",
        "work_item",
        id_flag,
        id,
        "--heartbeat",
        "200ms",
        "--session-timeout",
        &session,
    ];
    // These tests publish ad-hoc event types; the catalogue is not the point here.
    args.push("--no-validate");
    args.extend_from_slice(handler);
    eventbus(ns, &args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("eventbus consume starts")
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} failed");
}

/// SIGTERM, then waits for a clean exit.
fn leave(mut child: Child) {
    signal(&child, "-TERM");
    let status = wait_or_kill(&mut child, HANG);
    assert_eq!(status.code(), Some(0), "a member leaves cleanly on SIGTERM");
}

/// SIGKILL: no goodbye, no release.
fn kill(mut child: Child) {
    signal(&child, "-KILL");
    let _ = child.wait();
}

struct Watcher {
    conn: eventbus::RedisConn,
    ns: TestNamespace,
}

impl Watcher {
    async fn new(ns: TestNamespace) -> Self {
        let conn = RedisConnector::new(ns.url(), RedisOptions::default())
            .unwrap()
            .shared()
            .await
            .unwrap();
        Watcher { conn, ns }
    }

    async fn group(&self) -> GroupView {
        let topics: BTreeSet<String> = ["work_item".to_owned()].into();
        let mut groups =
            eventbus::admin::groups(&self.conn, &self.ns.topology(16), &topics, Some("g"))
                .await
                .expect("group view");
        groups.remove(0)
    }

    /// Partition → owner (None when free).
    async fn owners(&self) -> BTreeMap<u32, Option<String>> {
        self.group()
            .await
            .partitions
            .into_iter()
            .map(|p| (p.partition, p.owner))
            .collect()
    }

    /// Fencing token per partition (None when free).
    async fn tokens(&self) -> BTreeMap<u32, Option<u64>> {
        self.group()
            .await
            .partitions
            .into_iter()
            .map(|p| (p.partition, p.token))
            .collect()
    }

    /// Polls until the restarted `static-a` holds exactly `mine` again under
    /// new tokens (so it is the new process, running, that holds them, not
    /// the leases the old one left waiting), balanced with `static-b`;
    /// fails if `static-b` ever holds one of them.
    async fn back_to(
        &self,
        mine: &BTreeSet<u32>,
        before: &BTreeMap<u32, Option<u64>>,
        within: Duration,
    ) {
        let deadline = Instant::now() + within;
        loop {
            let owners = self.owners().await;
            for p in mine {
                assert_ne!(
                    owners.get(p).and_then(|o| o.as_deref()),
                    Some("static-b"),
                    "b took partition {p}"
                );
            }
            if let Some(now) = balanced(&owners, &["static-a", "static-b"]) {
                let tokens = self.tokens().await;
                let renewed = mine.iter().all(|p| tokens.get(p) != before.get(p));
                if owned_by(&now, "static-a") == *mine && renewed {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "a did not get its partitions back: {owners:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until every partition is owned by one of `members` and the
    /// counts are within ±1; returns the owners. Panics after `within`.
    async fn settled(&self, members: &[&str], within: Duration) -> BTreeMap<u32, String> {
        let deadline = Instant::now() + within;
        loop {
            let owners = self.owners().await;
            if let Some(owned) = balanced(&owners, members) {
                return owned;
            }
            assert!(
                Instant::now() < deadline,
                "not settled on {members:?} within {within:?}: {owners:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `Some(owners)` when all 16 partitions are owned by `members`, balanced ±1.
fn balanced(
    owners: &BTreeMap<u32, Option<String>>,
    members: &[&str],
) -> Option<BTreeMap<u32, String>> {
    if owners.len() != 16 {
        return None;
    }
    let mut counts: HashMap<&str, usize> = members.iter().map(|m| (*m, 0)).collect();
    let mut out = BTreeMap::new();
    for (p, o) in owners {
        let o = o.as_deref()?;
        *counts.get_mut(o)? += 1;
        out.insert(*p, o.to_owned());
    }
    let (min, max) = (counts.values().min()?, counts.values().max()?);
    (max - min <= 1).then_some(out)
}

fn owned_by(owners: &BTreeMap<u32, String>, m: &str) -> BTreeSet<u32> {
    owners
        .iter()
        .filter(|(_, o)| *o == m)
        .map(|(p, _)| *p)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_partitions_and_take_over_on_join_leave_and_kill() {
    let w = Watcher::new(namespace()).await;
    let ns = &w.ns;
    let idle = ["--exec", "cat > /dev/null"];
    let m1 = member(ns, "m1", &idle);
    let m2 = member(ns, "m2", &idle);
    let m3 = member(ns, "m3", &idle);

    // Three members: every partition owned by exactly one, balanced ±1.
    let three = w
        .settled(&["m1", "m2", "m3"], Duration::from_secs(30))
        .await;
    let mut sizes: Vec<usize> = ["m1", "m2", "m3"]
        .iter()
        .map(|m| owned_by(&three, m).len())
        .collect();
    sizes.sort();
    assert_eq!(sizes, vec![5, 5, 6]);

    // A fourth joins: at most ceil(16/4) = 4 partitions change hands, and
    // none of them twice on the way.
    let m4 = member(ns, "m4", &idle);
    let mut changes = 0;
    let mut last: BTreeMap<u32, String> = three.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let four = loop {
        let owners = w.owners().await;
        for (p, o) in &owners {
            if let Some(o) = o {
                if last.get(p) != Some(o) {
                    changes += 1;
                    last.insert(*p, o.clone());
                }
            }
        }
        if let Some(settled) = balanced(&owners, &["m1", "m2", "m3", "m4"]) {
            break settled;
        }
        assert!(
            Instant::now() < deadline,
            "no balance with four: {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let moved = (0..16).filter(|p| three[p] != four[p]).count();
    assert!(moved <= 4, "{moved} partitions moved on a join");
    assert!(changes <= 4, "{changes} ownership changes on a join");
    assert_eq!(owned_by(&four, "m4").len(), 4);

    // `eventbus groups` shows the same.
    let out = run(eventbus(ns, &["groups", "g", "--json"]), None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let g = &doc["groups"][0];
    assert_eq!(g["group"], "g");
    assert_eq!(g["members"].as_array().unwrap().len(), 4);
    assert_eq!(g["partitions"].as_array().unwrap().len(), 16);
    assert!(g["partitions"][0]["lease_age_ms"].is_u64());
    let table = run(eventbus(ns, &["groups"]), None);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(
        table
            .stdout
            .contains("group g: 4 members, 16 of 16 partitions leased"),
        "{}",
        table.stdout
    );

    // One leaves cleanly: its partitions are owned again within 2 s.
    let lost = owned_by(&four, "m4");
    let started = Instant::now();
    leave(m4);
    let after_leave = w
        .settled(&["m1", "m2", "m3"], Duration::from_secs(30))
        .await;
    let took = started.elapsed();
    assert!(
        took <= Duration::from_secs(2),
        "clean leave taken over in {took:?}"
    );
    for p in &lost {
        assert_ne!(after_leave[p], "m4");
    }
    for m in ["m1", "m2", "m3"] {
        assert!(
            owned_by(&four, m).is_subset(&owned_by(&after_leave, m)),
            "{m} lost partitions on a leave"
        );
    }

    // One is killed: its partitions stay leased until the session timeout,
    // then are owned again.
    let dead = owned_by(&after_leave, "m3");
    let started = Instant::now();
    kill(m3);
    let after_kill = w.settled(&["m1", "m2"], Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert!(
        took >= SESSION - HEARTBEAT - Duration::from_millis(100),
        "a killed member's partitions moved before its lease expired ({took:?})"
    );
    assert!(
        took <= SESSION + Duration::from_secs(8),
        "taken over only after {took:?}"
    );
    for p in &dead {
        assert_ne!(after_kill[p], "m3");
    }
    leave(m1);
    leave(m2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarted_within_the_timeout_keeps_its_partitions() {
    let w = Watcher::new(namespace()).await;
    let ns = &w.ns;
    let idle = ["--exec", "cat > /dev/null"];
    let a = static_member(ns, "static-a", &idle);
    let b = static_member(ns, "static-b", &idle);
    let before = w
        .settled(&["static-a", "static-b"], Duration::from_secs(30))
        .await;
    let mine = owned_by(&before, "static-a");

    // Killed, or stopped cleanly: either way, restarted within the session
    // timeout, it gets exactly its partitions back and b never takes one.
    let tokens = w.tokens().await;
    kill(a);
    let a = static_member(ns, "static-a", &idle);
    w.back_to(&mine, &tokens, Duration::from_secs(30)).await;
    let tokens = w.tokens().await;
    leave(a);
    let a = static_member(ns, "static-a", &idle);
    w.back_to(&mine, &tokens, Duration::from_secs(30)).await;
    // And it stays that way past the session timeout of the old processes.
    tokio::time::sleep(STATIC_SESSION + Duration::from_millis(500)).await;
    let later = w
        .settled(&["static-a", "static-b"], Duration::from_secs(5))
        .await;
    assert_eq!(owned_by(&later, "static-a"), mine);

    // A static member that does not come back: its partitions move once
    // the session times out, not before.
    let started = Instant::now();
    leave(a);
    w.settled(&["static-b"], Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert!(
        took >= STATIC_SESSION - HEARTBEAT - Duration::from_millis(100),
        "a stopped static member's partitions moved after {took:?}, before its session timed out"
    );
    leave(b);
}

/// Appends `KEY SEQ ENTRY_ID REDELIVERED CONSUMER_PID` per event (the seq read from the envelope on stdin
/// with shell builtins only). A command whose consumer was SIGKILLed while
/// feeding its stdin sees a cut envelope: it fails instead of writing.
fn recorder(file: &std::path::Path) -> String {
    format!(
        r#"read -r j || exit 1; s=${{j#*\"seq\":}}; s=${{s%%,*}}; case $s in ''|*[!0-9]*) exit 1;; esac; echo "$EVENTBUS_EVENT_KEY $s $EVENTBUS_ENTRY_ID $EVENTBUS_REDELIVERED $PPID" >> '{}'"#,
        file.display()
    )
}

/// A file of handled events written by [`recorder`] commands.
struct Recording {
    _dir: tempfile::TempDir,
    file: std::path::PathBuf,
    exec: String,
}

impl Recording {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("handled");
        let exec = recorder(&file);
        Recording {
            _dir: dir,
            file,
            exec,
        }
    }

    fn handler(&self) -> [&str; 2] {
        ["--exec", self.exec.as_str()]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_while_members_join_leave_and_are_killed() {
    const KEYS: usize = 50;
    const PER_KEY: usize = 200;
    let w = Watcher::new(namespace()).await;
    let ns = &w.ns;
    let rec = Recording::new();
    let handler = rec.handler();

    let mut members: Vec<Option<Child>> = vec![
        Some(member(ns, "o1", &handler)),
        Some(member(ns, "o2", &handler)),
    ];
    let feeder = feed(ns, KEYS, PER_KEY).await;
    // Churn while publishing: joins, SIGKILLs and clean leaves.
    let plan: [(u64, &str, usize); 6] = [
        (1000, "join", 2),
        (2500, "kill", 0),
        (4000, "join", 3),
        (5500, "leave", 1),
        (6500, "join", 4),
        (7500, "kill", 2),
    ];
    let started = Instant::now();
    for (at, what, i) in plan {
        let wait = Duration::from_millis(at).saturating_sub(started.elapsed());
        tokio::time::sleep(wait).await;
        match what {
            "join" => {
                while members.len() <= i {
                    members.push(None);
                }
                members[i] = Some(member(ns, &format!("o{}", i + 1), &handler));
            }
            "kill" => kill(members[i].take().expect("running member")),
            _ => leave(members[i].take().expect("running member")),
        }
    }
    feeder.await.expect("feeder");

    let lines = wait_handled(&rec.file, KEYS * PER_KEY).await;
    for m in members.into_iter().flatten() {
        leave(m);
    }
    check_order(&lines, KEYS, PER_KEY);
}

/// Publishes `per_key` events for each of `keys` keys, one round of keys at
/// a time with a short pause, on a task.
async fn feed(ns: &TestNamespace, keys: usize, per_key: usize) -> tokio::task::JoinHandle<()> {
    let p = publisher(ns.url(), &ns.topology(16)).await;
    tokio::spawn(async move {
        for seq in 0..per_key {
            let batch: Vec<Envelope> = (0..keys)
                .map(|k| {
                    let key = format!("key-{k:02}");
                    Envelope::new(
                        "work_item.progressed",
                        key.clone(),
                        json!({"seq": seq, "work_item_id": key}),
                    )
                })
                .collect();
            p.publish_batch(&batch).await.expect("publish");
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    })
}

/// The recorder's lines once `want` distinct ones are there.
async fn wait_handled(file: &std::path::Path, want: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let lines = read_lines(file);
        let distinct: BTreeSet<(&str, &str)> = lines
            .iter()
            .filter_map(|l| {
                let mut f = l.split(' ');
                Some((f.next()?, f.next()?))
            })
            .collect();
        if distinct.len() >= want {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {want} events handled",
            distinct.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Most entries a failover can repeat per key: the handled entries of one
/// unacknowledged batch (`partition_batch`, 64 by default) and the entry
/// in flight.
const REPEATABLE: i64 = 64 + 1;

/// Per key, each line is the next event, or a redelivery going back over
/// at most the rest of one unacknowledged batch ([`REPEATABLE`]) and
/// going on in order from there; and every key got to its last event. So
/// nothing is skipped, nothing is out of order, and a failover repeats only
/// what docs/ordered-partitions.md says. `late` lines (see below) are set
/// aside.
fn check_order(lines: &[String], keys: usize, per_key: usize) {
    check_order_but(lines, keys, per_key, |_| false);
}

/// [`check_order`], except for lines `late(line)` says to skip.
fn check_order_but(lines: &[String], keys: usize, per_key: usize, late: impl Fn(&str) -> bool) {
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut repeats = 0;
    for line in lines.iter().filter(|l| !late(l)) {
        let mut fields = line.split(' ');
        let (key, seq) = (fields.next().expect("KEY"), fields.next().expect("SEQ"));
        let seq: i64 = seq.parse().unwrap_or_else(|_| panic!("bad line {line:?}"));
        let redelivered = fields.nth(1) == Some("true");
        let prev = last.get(key).copied().unwrap_or(-1);
        let replay = redelivered && seq <= prev && prev - seq < REPEATABLE;
        assert!(
            seq == prev + 1 || seq == prev || replay,
            "key {key}: {seq} after {prev} (lines: {:?})",
            lines
                .iter()
                .filter(|l| l.starts_with(&format!("{key} ")))
                .collect::<Vec<_>>()
        );
        repeats += usize::from(seq <= prev);
        last.insert(key.to_owned(), seq);
    }
    assert_eq!(last.len(), keys);
    assert!(
        last.values().all(|s| *s == per_key as i64 - 1),
        "events lost: {last:?}"
    );
    eprintln!("{} lines, {repeats} repeats after failovers", lines.len());
}

/// A member frozen (SIGSTOP) past the session timeout loses its leases while
/// it cannot notice. The other member takes its partitions over in order.
/// When it thaws (SIGCONT) its late acknowledgements are refused and it
/// rejoins; the only thing it can still do late is finish the handler that
/// was running when it froze (here the `--exec` command was waiting for its
/// stdin): at most one late duplicate per partition, of an event the new
/// owner handled already. That is the effect an inbox refuses by its unique
/// key (docs/ordered-partitions.md); everything else stays in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_member_is_fenced_and_order_holds() {
    const KEYS: usize = 20;
    const PER_KEY: usize = 100;
    let w = Watcher::new(namespace()).await;
    let ns = &w.ns;
    let rec = Recording::new();
    let handler = rec.handler();
    let frozen = member(ns, "z1", &handler);
    let other = member(ns, "z2", &handler);
    w.settled(&["z1", "z2"], Duration::from_secs(30)).await;
    let feeder = feed(ns, KEYS, PER_KEY).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    signal(&frozen, "-STOP");
    // z2 takes everything over once z1's leases expire.
    w.settled(&["z2"], Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&frozen, "-CONT");
    // z1 rejoins and gets its share back.
    w.settled(&["z1", "z2"], Duration::from_secs(30)).await;
    let frozen_pid = frozen.id().to_string();
    feeder.await.expect("feeder");
    let lines = wait_handled(&rec.file, KEYS * PER_KEY).await;
    leave(frozen);
    leave(other);
    // A late line: the frozen member's, for an event some other line
    // handled earlier as a redelivery.
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let mut late = BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        let f: Vec<&str> = line.split(' ').collect();
        let event = (f[0].to_owned(), f[1].to_owned());
        if let Some(&first) = seen.get(&event) {
            let redelivered_before = lines[first].split(' ').nth(3) == Some("true");
            if f[4] == frozen_pid && redelivered_before {
                late.insert(line.clone());
                continue;
            }
        }
        seen.entry(event).or_insert(i);
    }
    assert!(
        late.len() <= 16,
        "more late effects than partitions: {late:?}"
    );
    check_order_but(&lines, KEYS, PER_KEY, |l| late.contains(l));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sink_acks_2xx_and_retries_the_rest_in_order() {
    let ns = namespace();
    // The first try of every third event fails: 503, then 429 with
    // Retry-After, alternately; everything else is accepted.
    let server = HttpTestServer::start(|req, _| {
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        let seq = body["data"]["seq"].as_u64().unwrap();
        let first = req.headers["eventbus-redelivered"] == "false";
        match (first, seq % 3, seq % 2) {
            (true, 0, 0) => Reply::status(503),
            (true, 0, _) => Reply::status(429).header("Retry-After", "1"),
            _ => Reply::status(200),
        }
    })
    .await;
    let url = format!("{}/events", server.url());
    let child = member(&ns, "h1", &["--http", url.as_str(), "--http-timeout", "5s"]);
    let p = publisher(ns.url(), &ns.topology(16)).await;
    let events: Vec<Envelope> = (0..30)
        .map(|seq| {
            let mut e = Envelope::new(
                "work_item.progressed",
                format!("k{}", seq % 3),
                json!({"seq": seq}),
            );
            e.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
            e
        })
        .collect();
    p.publish_batch(&events).await.unwrap();
    let accepted = |reqs: &[eventbus_testkit::ReceivedRequest]| {
        reqs.iter()
            .filter(|r| {
                let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                let seq = body["data"]["seq"].as_u64().unwrap();
                !(seq % 3 == 0 && r.headers["eventbus-redelivered"] == "false")
            })
            .count()
    };
    assert!(
        server
            .wait_for(Duration::from_secs(60), |r| accepted(r) >= 30)
            .await,
        "not every event was accepted"
    );
    leave(child);
    let reqs = server.requests();
    // Per key, accepted events arrive in publish order; each rejected first
    // try is followed by its retry before anything later of that key.
    let mut per_key: BTreeMap<String, Vec<(u64, bool)>> = BTreeMap::new();
    for r in &reqs {
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(r.headers["eventbus-event-id"], body["id"].as_str().unwrap());
        assert_eq!(r.headers["eventbus-event-type"], "work_item.progressed");
        assert_eq!(
            r.headers["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let seq = body["data"]["seq"].as_u64().unwrap();
        per_key
            .entry(body["key"].as_str().unwrap().to_owned())
            .or_default()
            .push((seq, r.headers["eventbus-redelivered"] == "true"));
    }
    for (key, seen) in per_key {
        let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
        let mut expected = Vec::new();
        for seq in (0..30).filter(|s| format!("k{}", s % 3) == key) {
            expected.push(seq);
            if seq % 3 == 0 {
                expected.push(seq); // the retry
            }
        }
        assert_eq!(seqs, expected, "key {key}");
    }
    // Retry-After: 1 was waited out before the retry.
    let by_seq = |seq: u64| -> Vec<Instant> {
        reqs.iter()
            .filter(|r| {
                serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["data"]["seq"] == seq
            })
            .map(|r| r.at)
            .collect()
    };
    let tries = by_seq(3); // 3 % 3 == 0 and odd: answered 429 with Retry-After: 1
    assert_eq!(tries.len(), 2);
    assert!(
        tries[1] - tries[0] >= Duration::from_secs(1),
        "Retry-After not honoured"
    );
}

#[test]
fn bad_flags_are_refused_with_a_clear_message() {
    let ns = namespace();
    for (args, needle) in [
        (&["--ordered", "--unordered"][..], "cannot be used with"),
        (&["--member-id", ""], "--member-id"),
        (&["--http", "localhost:8080"], "--http"),
        (&["--http", "not a url"], "not a URL"),
        (
            &["--unordered", "--max-partitions-in-flight", "2"],
            "cannot be used with",
        ),
        (
            &["--session-timeout", "1s", "--heartbeat", "500ms"],
            "more than twice",
        ),
        (
            &["--unordered", "--park"],
            "'--unordered' cannot be used with '--park'",
        ),
    ] {
        let mut all = vec!["consume", "--group", "g", "--topics", "work_item"];
        all.extend_from_slice(args);
        let out = run(eventbus(&ns, &all), None);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        let line = out.error_line();
        assert!(line.contains(needle), "{args:?}: {line}");
    }
    let out = run(eventbus(&ns, &["groups", "a b"]), None);
    assert_eq!(out.code, 2);
    assert!(
        out.error_line().contains("not a group name"),
        "{}",
        out.stderr
    );
    let mut cmd = eventbus(&ns, &["consume", "--group", "g"]);
    cmd.env("EVENT_BUS_HEARTBEAT_MS", "soon");
    let out = run(cmd, None);
    assert_eq!(out.code, 2);
    assert!(
        out.error_line().contains("EVENT_BUS_HEARTBEAT_MS"),
        "{}",
        out.stderr
    );
}
