//! Ack-aware retention, as a property on a private Redis: groups read,
//! acknowledge and leave entries pending at random, consumers die (their
//! entries stay pending, and are claimed by others), entries keep coming,
//! and trims run at random moments. After every trim, each entry some group
//! has not acknowledged is still in its stream (checked by id), and every
//! entry below the model's floor is gone.

use std::collections::{BTreeMap, BTreeSet};

use std::time::Duration;

use eventbus::retention::{trim_stream, RetentionPolicy, Trimmer, TrimmerConfig};
use eventbus::Topology;
use eventbus::{RedisConnector, RedisOptions};
use eventbus_testkit::RedisServer;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Append this many entries.
    Add(u8),
    /// Group `g`'s consumer `c` reads up to `n` new entries.
    Read { g: u8, c: u8, n: u8 },
    /// Group `g` acknowledges its pending entries whose position is in this
    /// residue class (a random-looking subset).
    Ack { g: u8, modulo: u8, rest: u8 },
    /// Consumer `c` of group `g` dies: another claims its pending entries.
    Kill { g: u8, c: u8 },
    /// A trim.
    Trim,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..20).prop_map(Op::Add),
        4 => (0u8..3, 0u8..2, 1u8..15).prop_map(|(g, c, n)| Op::Read { g, c, n }),
        3 => (0u8..3, 1u8..4, 0u8..4).prop_map(|(g, modulo, rest)| Op::Ack { g, modulo, rest: rest % modulo }),
        1 => (0u8..3, 0u8..2).prop_map(|(g, c)| Op::Kill { g, c }),
        2 => Just(Op::Trim),
    ]
}

/// Stream ids as `(ms, seq)`, comparable.
fn id(s: &str) -> (u64, u64) {
    let (ms, seq) = s.split_once('-').unwrap();
    (ms.parse().unwrap(), seq.parse().unwrap())
}

#[derive(Default)]
struct Model {
    all: Vec<String>,
    /// Per group: delivered ids, and which of them are acknowledged.
    delivered: BTreeMap<u8, BTreeSet<(u64, u64)>>,
    acked: BTreeMap<u8, BTreeSet<(u64, u64)>>,
}

impl Model {
    /// The oldest entry some group still needs: its oldest unacknowledged
    /// delivered entry, or the first one not yet delivered to it.
    fn floor(&self, groups: u8) -> Option<(u64, u64)> {
        (0..groups).filter_map(|g| self.group_floor(g)).min()
    }

    /// Group `g`'s oldest entry not acknowledged (pending or undelivered).
    fn group_floor(&self, g: u8) -> Option<(u64, u64)> {
        let delivered = self.delivered.get(&g).cloned().unwrap_or_default();
        let acked = self.acked.get(&g).cloned().unwrap_or_default();
        let unacked = delivered.difference(&acked).next().copied();
        let undelivered = self
            .all
            .iter()
            .map(|s| id(s))
            .find(|i| !delivered.contains(i));
        [unacked, undelivered].into_iter().flatten().min()
    }

    fn needed(&self, groups: u8) -> BTreeSet<(u64, u64)> {
        let mut out = BTreeSet::new();
        for g in 0..groups {
            let acked = self.acked.get(&g).cloned().unwrap_or_default();
            out.extend(
                self.all
                    .iter()
                    .map(|s| id(s))
                    .filter(|i| !acked.contains(i)),
            );
        }
        out
    }
}

/// Appends one entry; returns its id.
async fn xadd(c: &mut eventbus::RedisConn, stream: &str) -> String {
    redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("f")
        .arg("v")
        .query_async(c)
        .await
        .unwrap()
}

/// Moves `group` to the end of `stream`: it has read and acknowledged all.
async fn caught_up(c: &mut eventbus::RedisConn, stream: &str, group: &str) {
    let _: () = redis::cmd("XGROUP")
        .arg("SETID")
        .arg(stream)
        .arg(group)
        .arg("$")
        .query_async(c)
        .await
        .unwrap();
}

async fn run(url: &str, case: u64, ops: Vec<Op>) -> Result<u64, TestCaseError> {
    const GROUPS: u8 = 3;
    let conn = RedisConnector::new(url, RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    let mut c = conn.clone();
    let stream = format!("retention-prop:{{s{case}}}");
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut c)
        .await
        .unwrap();
    for g in 0..GROUPS {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg(format!("g{g}"))
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let policy = RetentionPolicy::default();
    let mut model = Model::default();
    let mut trimmed = 0;
    for op in ops {
        match op {
            Op::Add(n) => {
                for _ in 0..n {
                    model.all.push(xadd(&mut c, &stream).await);
                }
            }
            Op::Read { g, c: consumer, n } => {
                let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(format!("g{g}"))
                    .arg(format!("c{consumer}"))
                    .arg("COUNT")
                    .arg(n)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(">")
                    .query_async(&mut c)
                    .await
                    .unwrap();
                for key in reply.keys {
                    for e in key.ids {
                        model.delivered.entry(g).or_default().insert(id(&e.id));
                    }
                }
            }
            Op::Ack { g, modulo, rest } => {
                let delivered = model.delivered.get(&g).cloned().unwrap_or_default();
                let acked = model.acked.entry(g).or_default();
                let pick: Vec<(u64, u64)> = delivered
                    .iter()
                    .enumerate()
                    .filter(|(i, d)| *i as u8 % modulo == rest && !acked.contains(d))
                    .map(|(_, d)| *d)
                    .collect();
                if !pick.is_empty() {
                    let mut cmd = redis::cmd("XACK");
                    cmd.arg(&stream).arg(format!("g{g}"));
                    for (ms, seq) in &pick {
                        cmd.arg(format!("{ms}-{seq}"));
                    }
                    let _: i64 = cmd.query_async(&mut c).await.unwrap();
                    acked.extend(pick);
                }
            }
            Op::Kill { g, c: consumer } => {
                let _: redis::Value = redis::cmd("XAUTOCLAIM")
                    .arg(&stream)
                    .arg(format!("g{g}"))
                    .arg(format!("c{}", 1 - consumer))
                    .arg(0)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(10_000)
                    .query_async(&mut c)
                    .await
                    .unwrap();
            }
            Op::Trim => {
                let report = trim_stream(&conn, &stream, &policy, false).await.unwrap();
                trimmed += report.trimmed;
                let left: Vec<(String, redis::Value)> = redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut c)
                    .await
                    .unwrap();
                let left: BTreeSet<(u64, u64)> = left.iter().map(|(i, _)| id(i)).collect();
                for g in 0..GROUPS {
                    prop_assert_eq!(
                        report.oldest_unacked.get(&format!("g{g}")).map(|s| id(s)),
                        model.group_floor(g),
                        "group g{}'s oldest unacknowledged entry",
                        g
                    );
                }
                let needed = model.needed(GROUPS);
                let lost: Vec<_> = needed.difference(&left).collect();
                prop_assert!(
                    lost.is_empty(),
                    "trimmed entries a group needs: {lost:?} ({report:?})"
                );
                if let Some(floor) = model.floor(GROUPS) {
                    let kept_below: Vec<_> = left.iter().filter(|i| **i < floor).collect();
                    prop_assert!(
                        kept_below.is_empty(),
                        "acknowledged entries kept below the floor {floor:?}: {kept_below:?}"
                    );
                    prop_assert_eq!(
                        report
                            .safe_point
                            .map(|s| id(&s))
                            .filter(|s| *s <= floor)
                            .is_some(),
                        true
                    );
                }
            }
        }
    }
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut c)
        .await
        .unwrap();
    Ok(trimmed)
}

#[test]
fn trims_never_remove_what_a_group_needs_and_remove_all_below_the_floor() {
    let server = RedisServer::start();
    let url = server.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let case = std::sync::atomic::AtomicU64::new(0);
    let trimmed = std::sync::atomic::AtomicU64::new(0);
    proptest!(ProptestConfig::with_cases(48), |(ops in proptest::collection::vec(op(), 1..80))| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = rt.block_on(run(&url, n, ops))?;
        trimmed.fetch_add(t, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(
        trimmed.into_inner() > 0,
        "no trim ever removed anything: the property was not exercised"
    );
}

/// Trimmers in several processes take turns per stream: of two passes at
/// once, each stream is trimmed by one and only read by the other; once the
/// lease (one interval) has passed, either may trim again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmers_take_turns_per_stream() {
    let ns =
        eventbus_testkit::TestNamespace::new(eventbus_testkit::shared_redis_url(), "trimlease");
    let topology = Topology::new(ns.name(), 4).unwrap();
    let conn = RedisConnector::new(ns.url(), RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    let mut c = conn.clone();
    let _: () = redis::cmd("SADD")
        .arg(topology.topics_key())
        .arg("t")
        .query_async(&mut c)
        .await
        .unwrap();
    let fill = |n: usize| {
        let mut c = conn.clone();
        let topology = topology.clone();
        async move {
            for p in 0..4 {
                let stream = topology.stream_key("t", p);
                for _ in 0..n {
                    xadd(&mut c, &stream).await;
                }
                // A group that has read and acknowledged everything.
                let _: redis::RedisResult<()> = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&stream)
                    .arg("g")
                    .arg("$")
                    .query_async(&mut c)
                    .await;
                caught_up(&mut c, &stream, "g").await;
            }
        }
    };
    fill(10).await;
    let config = TrimmerConfig {
        interval: Duration::from_millis(400),
        ..Default::default()
    };
    let a = Trimmer::new(conn.clone(), topology.clone(), config);
    let b = Trimmer::new(conn.clone(), topology.clone(), config);
    let (ra, rb) = tokio::join!(a.pass(), b.pass());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.len(), 4);
    for (x, y) in ra.iter().zip(&rb) {
        assert_eq!(x.stream, y.stream);
        assert!(
            x.leased_elsewhere != y.leased_elsewhere,
            "exactly one trims {}: {x:?} {y:?}",
            x.stream
        );
        assert_eq!(x.trimmed + y.trimmed, 10, "{x:?} {y:?}");
    }
    // Within a lease, only its holder trims; after it, the other may.
    fill(5).await;
    let early = if ra[0].leased_elsewhere { &a } else { &b };
    let within = early.pass().await.unwrap();
    for r in &within {
        let expected = if r.leased_elsewhere { 0 } else { 5 };
        assert_eq!(r.trimmed, expected, "{r:?}");
    }
    assert!(within[0].leased_elsewhere, "{within:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = early.pass().await.unwrap();
    for (before, r) in within.iter().zip(&after) {
        assert!(!r.leased_elsewhere, "{r:?}");
        let expected = if before.leased_elsewhere { 5 } else { 0 };
        assert_eq!(r.trimmed, expected, "{r:?}");
    }
}

/// A dry run never holds Redis for long: when every entry is below the
/// safe point it counts the length; else it counts at most 100,000 entries
/// and says the count is a lower bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_on_a_long_stream_is_bounded() {
    let ns = eventbus_testkit::TestNamespace::new(eventbus_testkit::shared_redis_url(), "trimdry");
    let conn = RedisConnector::new(ns.url(), RedisOptions::default())
        .unwrap()
        .shared()
        .await
        .unwrap();
    let mut c = conn.clone();
    let stream = format!("{}:{{t:0}}", ns.name());
    for _ in 0..15 {
        let mut pipe = redis::pipe();
        for _ in 0..10_000 {
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("f")
                .arg("v")
                .ignore();
        }
        let _: () = pipe.query_async(&mut c).await.unwrap();
    }
    let last: Vec<(String, redis::Value)> = redis::cmd("XREVRANGE")
        .arg(&stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(2)
        .query_async(&mut c)
        .await
        .unwrap();
    // A group that read everything but the last entry.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("g")
        .arg(&last[1].0)
        .query_async(&mut c)
        .await
        .unwrap();
    let policy = RetentionPolicy::default();
    let dry = trim_stream(&conn, &stream, &policy, true).await.unwrap();
    assert_eq!(dry.length_before, 150_000);
    assert_eq!(
        (dry.trimmed, dry.trimmed_at_least),
        (100_000, true),
        "{dry:?}"
    );
    // Caught up: everything is below the safe point, counted exactly.
    caught_up(&mut c, &stream, "g").await;
    let dry = trim_stream(&conn, &stream, &policy, true).await.unwrap();
    assert_eq!(
        (dry.trimmed, dry.trimmed_at_least),
        (150_000, false),
        "{dry:?}"
    );
    let done = trim_stream(&conn, &stream, &policy, false).await.unwrap();
    assert_eq!(done.trimmed, 150_000);
}
