//! `eventbus-bench-ordered`: ordered consumption beside unordered, in one run.
//!
//! Scenarios (each in a fresh namespace, deleted afterwards):
//!
//! - **throughput**: `--events` events published in pipelined batches to one
//!   topic, consumed by a no-op handler until every one is acknowledged, with
//!   unordered mode (2 consumers × `--concurrency`) and ordered mode with 1,
//!   2 and 4 members. Consumers start first; in ordered mode the clock starts
//!   once every partition is leased.
//! - **rebalance**: 3 idle ordered members; the time from starting a 4th
//!   until the 16 partitions are balanced 4/4/4/4 (a join), and from
//!   crashing one (its task aborted, nothing released) until all its
//!   partitions are owned by the others (a kill), for the default timings
//!   (1 s heartbeat, 10 s session timeout) and a fast setting (200 ms, 2 s).
//!
//! Members are separate `Consumer`s in this process, each with its own Redis
//! connections, exactly as separate processes would be.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use eventbus::{
    handler_fn, Consumer, ConsumerConfig, ConsumerMode, ConsumerStats, Delivery, Envelope,
    HandlerError, Publisher, PublisherConfig, RedisConnector, RedisOptions, Topology,
};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(about = "Ordered vs unordered consumption throughput, and rebalance times, in one run")]
struct Args {
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Events per throughput scenario.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Payload size of `data` in bytes.
    #[arg(long, default_value_t = 200)]
    payload: usize,
    /// Partitions per topic.
    #[arg(long, default_value_t = 16)]
    partitions: u32,
    /// Handler concurrency per unordered consumer.
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// Rebalance measurements per timing setting (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

struct Member {
    token: CancellationToken,
    task: JoinHandle<eventbus::Result<()>>,
    stats: Arc<ConsumerStats>,
}

fn config(mode: ConsumerMode, id: &str, heartbeat: Duration, session: Duration) -> ConsumerConfig {
    let mut c = ConsumerConfig::new("bench", ["work_item"]);
    c.mode = mode;
    c.consumer_name = Some(id.to_owned());
    c.read_count = 1000;
    c.block = Duration::from_millis(100);
    c.heartbeat_interval = heartbeat;
    c.session_timeout = session;
    c
}

fn start(
    redis: &RedisConnector,
    topology: &Topology,
    config: ConsumerConfig,
) -> eventbus::Result<Member> {
    let handled = Arc::new(AtomicU64::new(0));
    let handler = handler_fn(move |_d: Delivery| {
        handled.fetch_add(1, Ordering::Relaxed);
        async { Ok::<(), HandlerError>(()) }
    });
    let consumer = Consumer::new(redis.clone(), topology.clone(), config, handler)?;
    let stats = consumer.stats();
    let token = CancellationToken::new();
    let task = tokio::spawn(consumer.run(token.clone()));
    Ok(Member { token, task, stats })
}

async fn stop(members: Vec<Member>) {
    for m in &members {
        m.token.cancel();
    }
    for m in members {
        let _ = m.task.await;
    }
}

/// Partition owners of the bench group (`None` = free).
async fn owners(conn: &redis::aio::ConnectionManager, topology: &Topology) -> Vec<Option<String>> {
    let topics: BTreeSet<String> = ["work_item".to_owned()].into();
    match eventbus::admin::groups(conn, topology, &topics, Some("bench")).await {
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
    conn: &redis::aio::ConnectionManager,
    topology: &Topology,
    within: Duration,
    cond: impl Fn(&[Option<String>]) -> bool,
) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        if cond(&owners(conn, topology).await) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            return Err(format!("condition not reached within {within:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

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

async fn throughput(
    args: &Args,
    redis: &RedisConnector,
    topology: &Topology,
    mode: ConsumerMode,
    members: usize,
) -> Result<f64, String> {
    let conn = redis.shared().await.map_err(|e| e.to_string())?;
    let mut running = Vec::new();
    let ids: Vec<String> = (0..members).map(|i| format!("m{i}")).collect();
    for id in &ids {
        let mut c = config(mode, id, Duration::from_secs(1), Duration::from_secs(10));
        c.concurrency = args.concurrency;
        running.push(start(redis, topology, c).map_err(|e| e.to_string())?);
    }
    if mode == ConsumerMode::Ordered {
        until(&conn, topology, Duration::from_secs(60), |o| {
            balanced(o, &ids, args.partitions as usize)
        })
        .await?;
    } else {
        tokio::time::sleep(Duration::from_millis(300)).await; // groups created
    }
    let publisher = Publisher::connect(redis, topology.clone(), PublisherConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    let events: Vec<Envelope> = (0..args.events)
        .map(|i| {
            let key = format!("wi-{}", i % 10_000);
            Envelope::new(
                "work_item.processing_completed",
                key.clone(),
                json!({"work_item_id": key, "seq": i, "pad": "x".repeat(args.payload.saturating_sub(40))}),
            )
        })
        .collect();
    let started = Instant::now();
    for chunk in events.chunks(1000) {
        publisher
            .publish_batch(chunk)
            .await
            .map_err(|e| e.to_string())?;
    }
    let want = args.events as u64;
    while running
        .iter()
        .map(|m| m.stats.acked.load(Ordering::Relaxed))
        .sum::<u64>()
        < want
    {
        if started.elapsed() > Duration::from_secs(900) {
            return Err("consumers did not finish within 15 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = args.events as f64 / started.elapsed().as_secs_f64();
    stop(running).await;
    Ok(rate)
}

/// (join, kill) rebalance times for one timing setting.
async fn rebalance(
    redis: &RedisConnector,
    topology: &Topology,
    heartbeat: Duration,
    session: Duration,
) -> Result<(Duration, Duration), String> {
    let conn = redis.shared().await.map_err(|e| e.to_string())?;
    let n = topology.partitions() as usize;
    let ids: Vec<String> = (0..4).map(|i| format!("r{i}")).collect();
    let mut members = Vec::new();
    for id in &ids[..3] {
        members.push(
            start(
                redis,
                topology,
                config(ConsumerMode::Ordered, id, heartbeat, session),
            )
            .map_err(|e| e.to_string())?,
        );
    }
    until(&conn, topology, Duration::from_secs(60), |o| {
        balanced(o, &ids[..3], n)
    })
    .await?;
    members.push(
        start(
            redis,
            topology,
            config(ConsumerMode::Ordered, &ids[3], heartbeat, session),
        )
        .map_err(|e| e.to_string())?,
    );
    let join = until(&conn, topology, Duration::from_secs(60), |o| {
        balanced(o, &ids, n)
    })
    .await?;
    // Crash r0: abort its task (connections drop, nothing is released).
    let victim = members.remove(0);
    victim.task.abort();
    let _ = victim.task.await;
    let kill = until(
        &conn,
        topology,
        session * 3 + Duration::from_secs(10),
        |o| balanced(o, &ids[1..], n),
    )
    .await?;
    stop(members).await;
    // The crashed member's registration expires by itself; clear it so the
    // next round starts clean.
    cleanup(redis, topology.namespace()).await;
    Ok((join, kill))
}

async fn cleanup(redis: &RedisConnector, ns: &str) {
    if let Ok(conn) = redis.shared().await {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{ns}:*"))
            .query_async(&mut conn.clone())
            .await
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: redis::RedisResult<()> = redis::cmd("DEL")
                .arg(chunk)
                .query_async(&mut conn.clone())
                .await;
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args).await {
        eprintln!("eventbus-bench-ordered: error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: &Args) -> Result<(), String> {
    let redis =
        RedisConnector::new(&args.redis_url, RedisOptions::default()).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for (label, mode, members) in [
        ("unordered, 2 consumers", ConsumerMode::Unordered, 2),
        ("ordered, 1 member", ConsumerMode::Ordered, 1),
        ("ordered, 2 members", ConsumerMode::Ordered, 2),
        ("ordered, 4 members", ConsumerMode::Ordered, 4),
    ] {
        let ns = format!(
            "bench-ord-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let topology = Topology::new(&ns, args.partitions).map_err(|e| e.to_string())?;
        let rate = throughput(args, &redis, &topology, mode, members).await;
        cleanup(&redis, &ns).await;
        rows.push((label, rate?));
    }
    let mut rebalances = Vec::new();
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
        for _ in 0..args.rounds.max(1) {
            let ns = format!(
                "bench-reb-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
            let topology = Topology::new(&ns, args.partitions).map_err(|e| e.to_string())?;
            let r = rebalance(&redis, &topology, heartbeat, session).await;
            cleanup(&redis, &ns).await;
            let (j, k) = r?;
            joins.push(j);
            kills.push(k);
        }
        rebalances.push((label, median(joins), median(kills)));
    }
    let base = rows[0].1;
    if args.json {
        let doc = json!({
            "events": args.events, "payload_bytes": args.payload, "partitions": args.partitions,
            "throughput": rows.iter().map(|(l, r)| json!({"scenario": l, "events_per_sec": r, "ratio_to_unordered": r / base})).collect::<Vec<_>>(),
            "rebalance": rebalances.iter().map(|(l, j, k)| json!({"timings": l, "join_ms": j.as_millis(), "kill_ms": k.as_millis()})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    } else {
        println!(
            "events: {}, payload: {} B, partitions: {}",
            args.events, args.payload, args.partitions
        );
        println!(
            "{:<28} {:>12} {:>12}",
            "throughput", "events/s", "× unordered"
        );
        for (l, r) in &rows {
            println!("{l:<28} {r:>12.0} {:>12.2}", r / base);
        }
        println!("{:<40} {:>10} {:>10}", "rebalance (median)", "join", "kill");
        for (l, j, k) in &rebalances {
            println!(
                "{l:<40} {:>9.2}s {:>9.2}s",
                j.as_secs_f64(),
                k.as_secs_f64()
            );
        }
    }
    Ok(())
}
