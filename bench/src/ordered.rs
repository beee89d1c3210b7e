//! Ordered mode: how long the group takes to settle its leases (the clock
//! of the ordered throughput rows starts once every partition is leased),
//! and rebalance times: a member joining 3 idle ones (until 4/4/4/4), and a
//! member crashing (its task aborted, nothing released, until the others
//! own all its partitions), for the default timings and a fast setting.
//!
//! Members are separate `Consumer`s in this process, each with its own
//! Redis connections, exactly as separate processes would be.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use eventbus::{
    handler_fn, Consumer, ConsumerConfig, ConsumerMode, Delivery, HandlerError, Topology,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::report::{Role, Row, Section};
use crate::Ctx;

/// Partition owners of `group` (`None` = free).
async fn owners(ctx: &Ctx, topology: &Topology, group: &str) -> Vec<Option<String>> {
    let topics: BTreeSet<String> = ["work_item".to_owned()].into();
    match eventbus::admin::groups(&ctx.conn, topology, &topics, Some(group)).await {
        Ok(mut g) if !g.is_empty() => g
            .remove(0)
            .partitions
            .into_iter()
            .map(|p| p.owner)
            .collect(),
        _ => Vec::new(),
    }
}

/// Polls until `cond(owners)` holds; the time it took.
async fn until(
    ctx: &Ctx,
    topology: &Topology,
    group: &str,
    within: Duration,
    cond: impl Fn(&[Option<String>]) -> bool,
) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        if cond(&owners(ctx, topology, group).await) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            return Err(format!("partitions not balanced within {within:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every partition owned by one of `members`, counts differing by at most one.
fn balanced(owners: &[Option<String>], members: &[String], partitions: usize) -> bool {
    if owners.len() != partitions
        || owners
            .iter()
            .any(|o| o.as_ref().is_none_or(|o| !members.contains(o)))
    {
        return false;
    }
    let counts: Vec<usize> = members
        .iter()
        .map(|m| {
            owners
                .iter()
                .filter(|o| o.as_deref() == Some(m.as_str()))
                .count()
        })
        .collect();
    counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0) <= 1
}

/// Waits until the ordered members named `names` hold every partition of
/// `topology`, balanced.
pub(crate) async fn wait_balanced(
    ctx: &Ctx,
    topology: &Topology,
    group: &str,
    names: &[String],
) -> Result<Duration, String> {
    let n = topology.partitions() as usize;
    until(ctx, topology, group, Duration::from_secs(60), |o| {
        balanced(o, names, n)
    })
    .await
}

struct Member {
    token: CancellationToken,
    task: JoinHandle<eventbus::Result<()>>,
}

fn start(
    ctx: &Ctx,
    topology: &Topology,
    id: &str,
    heartbeat: Duration,
    session: Duration,
) -> Result<Member, String> {
    let mut c = ConsumerConfig::new("rebalance", ["work_item"]);
    c.mode = ConsumerMode::Ordered;
    c.consumer_name = Some(id.to_owned());
    c.block = Duration::from_millis(100);
    c.heartbeat_interval = heartbeat;
    c.session_timeout = session;
    let handler = handler_fn(|_d: Delivery| async { Ok::<(), HandlerError>(()) });
    let consumer = Consumer::new(ctx.redis.clone(), topology.clone(), c, handler)
        .map_err(|e| e.to_string())?;
    let token = CancellationToken::new();
    let task = tokio::spawn(consumer.run(token.clone()));
    Ok(Member { token, task })
}

/// (join, kill) times for one timing setting.
async fn rebalance_once(
    ctx: &Ctx,
    heartbeat: Duration,
    session: Duration,
) -> Result<(Duration, Duration), String> {
    let (topology, ns) = ctx.topology(&format!("reb{}", ctx.next_id()))?;
    let ids: Vec<String> = (0..4).map(|i| format!("r{i}")).collect();
    let result = async {
        let mut members = Vec::new();
        for id in &ids[..3] {
            members.push(start(ctx, &topology, id, heartbeat, session)?);
        }
        wait_balanced(ctx, &topology, "rebalance", &ids[..3]).await?;
        members.push(start(ctx, &topology, &ids[3], heartbeat, session)?);
        let join = wait_balanced(ctx, &topology, "rebalance", &ids).await?;
        // Crash r0: abort its task (connections drop, nothing is released).
        let victim = members.remove(0);
        victim.task.abort();
        let _ = victim.task.await;
        let n = topology.partitions() as usize;
        let kill = until(
            ctx,
            &topology,
            "rebalance",
            session * 3 + Duration::from_secs(10),
            |o| balanced(o, &ids[1..], n),
        )
        .await;
        for m in &members {
            m.token.cancel();
        }
        for m in members {
            let _ = m.task.await;
        }
        Ok::<_, String>((join, kill?))
    }
    .await;
    ctx.cleanup(&ns).await;
    result
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The rebalance section: median join and kill times over `rounds`, for
/// the default timings and a fast setting.
pub(crate) async fn rebalance(ctx: &Ctx) -> Section {
    let mut s = Section::new(
        "ordered rebalance",
        format!(
            "3 idle ordered members; join = a 4th starts until 4/4/4/4 of {} partitions; \
             kill = one member's task aborted until the others own its partitions; median of {} rounds",
            ctx.target.partitions, ctx.params.rebalance_rounds
        ),
    );
    s.compare_rates = false;
    for (label, heartbeat, session) in [
        (
            "defaults: heartbeat 1 s, session 10 s",
            Duration::from_secs(1),
            Duration::from_secs(10),
        ),
        (
            "fast: heartbeat 200 ms, session 2 s",
            Duration::from_millis(200),
            Duration::from_secs(2),
        ),
    ] {
        let (mut joins, mut kills) = (Vec::new(), Vec::new());
        let mut failed = None;
        for _ in 0..ctx.params.rebalance_rounds.max(1) {
            match rebalance_once(ctx, heartbeat, session).await {
                Ok((j, k)) => {
                    joins.push(j);
                    kills.push(k);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let name = format!("eventbus ordered, {label}");
        s.rows.push(match failed {
            Some(e) => Row::skipped(name, Role::Eventbus, format!("failed: {e}")),
            None => Row::skipped(
                name,
                Role::Eventbus,
                format!(
                    "join {:.2} s, kill {:.2} s",
                    median(joins).as_secs_f64(),
                    median(kills).as_secs_f64()
                ),
            ),
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_means_all_owned_and_even() {
        let m: Vec<String> = vec!["a".into(), "b".into()];
        let own = |v: &[&str]| -> Vec<Option<String>> {
            v.iter()
                .map(|s| (!s.is_empty()).then(|| (*s).to_owned()))
                .collect()
        };
        assert!(balanced(&own(&["a", "b", "a", "b"]), &m, 4));
        assert!(balanced(&own(&["a", "b", "a"]), &m, 3));
        assert!(!balanced(&own(&["a", "a", "a", "b"]), &m, 4));
        assert!(!balanced(&own(&["a", "b", "", "b"]), &m, 4));
        assert!(!balanced(&own(&["a", "b", "c", "b"]), &m, 4));
        assert!(!balanced(&own(&["a", "b"]), &m, 4));
    }
}
