//! `eventbus-bench`: throughput of eventbus beside raw Redis, in one run.
//!
//! Scenarios:
//! - `xadd-baseline`: `redis-benchmark -P 16` running `XADD` with an entry of
//!   the same fields and size as an encoded envelope (the physical limit of
//!   this Redis on this machine);
//! - `publish-batch`: `Publisher::publish_batch`, pipelined batches;
//! - `publish-consume-ack`: publish, then one consumer process-worth of
//!   consumers reads, handles (no-op) and acks everything.
//!
//! Each figure is printed with its ratio to the baseline. Every run uses a
//! fresh namespace and deletes it at the end.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use eventbus::{
    handler_fn, Consumer, ConsumerConfig, Delivery, Envelope, HandlerError, Publisher,
    PublisherConfig, RedisConnector, RedisOptions, Topology,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(about = "Benchmarks eventbus against raw redis-benchmark XADD in the same run")]
struct Args {
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Events per scenario.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Payload size of `data` in bytes.
    #[arg(long, default_value_t = 200)]
    payload: usize,
    /// Partitions per topic.
    #[arg(long, default_value_t = 16)]
    partitions: u32,
    /// Events per pipelined batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Batches in flight at once on the shared connection.
    #[arg(long, default_value_t = 4)]
    inflight: usize,
    /// Consumers (in this process) for the consume scenario.
    #[arg(long, default_value_t = 2)]
    consumers: usize,
    /// Handler concurrency per consumer.
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// PostgreSQL for the outbox scenarios.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    /// Events for the outbox end-to-end scenario.
    #[arg(long, default_value_t = 50_000)]
    outbox_events: usize,
    /// Skip the outbox scenarios (no PostgreSQL needed).
    #[arg(long)]
    skip_outbox: bool,
}

#[derive(Debug)]
struct Figure {
    scenario: &'static str,
    events: usize,
    seconds: f64,
}

impl Figure {
    fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }
}

fn envelope(i: usize, payload: usize) -> Envelope {
    let key = format!("wi-{}", i % 10_000);
    Envelope::new(
        "work_item.processing_completed",
        key.clone(),
        json!({"work_item_id": key, "seq": i, "pad": "x".repeat(payload.saturating_sub(40))}),
    )
    .with_source("bench")
}

/// `redis-benchmark -P 16 XADD` with fields shaped like an encoded envelope.
fn xadd_baseline(args: &Args, ns: &str) -> Result<Figure, String> {
    let url = url::Url::parse(&args.redis_url).map_err(|e| e.to_string())?;
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = url.port().unwrap_or(6379).to_string();
    let sample = envelope(0, args.payload);
    let mut cmd_args: Vec<String> = vec![
        "-h".into(),
        host,
        "-p".into(),
        port,
        "-n".into(),
        args.events.to_string(),
        "-P".into(),
        "16".into(),
        "-c".into(),
        "50".into(),
        "-q".into(),
        "-r".into(),
        args.partitions.to_string(),
        "XADD".into(),
        format!("{ns}:{{baseline:__rand_int__}}"),
        "*".into(),
    ];
    for (k, v) in sample.to_fields() {
        cmd_args.push(k.to_owned());
        cmd_args.push(v);
    }
    if let Some(pw) = url.password() {
        cmd_args.splice(
            0..0,
            [
                "-a".to_owned(),
                pw.to_owned(),
                "--no-auth-warning".to_owned(),
            ],
        );
    }
    let started = Instant::now();
    let out = Command::new("redis-benchmark")
        .args(&cmd_args)
        .output()
        .map_err(|e| format!("redis-benchmark: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // `-q` prints "XADD ...: 123456.79 requests per second, p50=..."; prefer
    // its own figure over our wall clock (which includes process start).
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(3)
        .find(|w| w[1] == "requests" && w[2] == "per")
        .and_then(|w| w[0].parse::<f64>().ok());
    let seconds = rps.map(|r| args.events as f64 / r).unwrap_or(seconds);
    Ok(Figure {
        scenario: "redis-benchmark XADD -P 16 -c 50",
        events: args.events,
        seconds,
    })
}

fn make_events(args: &Args) -> Vec<Envelope> {
    (0..args.events)
        .map(|i| envelope(i, args.payload))
        .collect()
}

async fn publish_all(
    publisher: &Publisher,
    args: &Args,
    events: &[Envelope],
) -> eventbus::Result<()> {
    let chunks: Vec<&[Envelope]> = events.chunks(args.batch).collect();
    for group in chunks.chunks(args.inflight.max(1)) {
        let results =
            futures::future::join_all(group.iter().map(|c| publisher.publish_batch(c))).await;
        for r in results {
            r?;
        }
    }
    Ok(())
}

async fn publish_batch(
    args: &Args,
    redis: &RedisConnector,
    topology: &Topology,
) -> eventbus::Result<Figure> {
    let publisher = Publisher::connect(redis, topology.clone(), PublisherConfig::default()).await?;
    let events = make_events(args);
    let started = Instant::now();
    publish_all(&publisher, args, &events).await?;
    Ok(Figure {
        scenario: "eventbus publish_batch",
        events: args.events,
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn publish_consume_ack(
    args: &Args,
    redis: &RedisConnector,
    topology: &Topology,
) -> eventbus::Result<Figure> {
    let publisher = Publisher::connect(redis, topology.clone(), PublisherConfig::default()).await?;
    let handled = Arc::new(AtomicU64::new(0));
    let token = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut stats = Vec::new();
    for _ in 0..args.consumers {
        let mut config = ConsumerConfig::new("bench", ["work_item"]);
        config.concurrency = args.concurrency;
        config.read_count = 1000;
        config.block = Duration::from_millis(100);
        let h = handled.clone();
        let handler = handler_fn(move |_d: Delivery| {
            h.fetch_add(1, Ordering::Relaxed);
            async { Ok::<(), HandlerError>(()) }
        });
        let consumer = Consumer::new(redis.clone(), topology.clone(), config, handler)?;
        stats.push(consumer.stats());
        tasks.push(tokio::spawn(consumer.run(token.clone())));
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // groups created
    let events = make_events(args);
    let started = Instant::now();
    publish_all(&publisher, args, &events).await?;
    let want = args.events as u64;
    while stats
        .iter()
        .map(|s| s.acked.load(Ordering::Relaxed))
        .sum::<u64>()
        < want
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
        if started.elapsed() > Duration::from_secs(600) {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    token.cancel();
    for t in tasks {
        let _ = t.await;
    }
    Ok(Figure {
        scenario: "eventbus publish → consume → ack",
        events: args.events,
        seconds,
    })
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores, {cpu}")
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

mod outbox;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args).await {
        eprintln!("eventbus-bench: error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: &Args) -> Result<(), String> {
    let ns = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let redis =
        RedisConnector::new(&args.redis_url, RedisOptions::default()).map_err(|e| e.to_string())?;
    let topology = Topology::new(&ns, args.partitions).map_err(|e| e.to_string())?;
    let result = async {
        let baseline = xadd_baseline(args, &ns)?;
        cleanup(&redis, &ns).await;
        let publish = publish_batch(args, &redis, &topology)
            .await
            .map_err(|e| e.to_string())?;
        cleanup(&redis, &ns).await;
        let e2e = publish_consume_ack(args, &redis, &topology)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(vec![baseline, publish, e2e])
    }
    .await;
    cleanup(&redis, &ns).await;
    let figures = result?;
    let base = figures[0].rate();
    if args.json {
        let rows: Vec<_> = figures
            .iter()
            .map(|f| {
                json!({"scenario": f.scenario, "events": f.events, "seconds": f.seconds,
                       "events_per_sec": f.rate(), "ratio_to_baseline": f.rate() / base})
            })
            .collect();
        let doc = json!({"machine": machine(), "payload_bytes": args.payload, "partitions": args.partitions,
                         "batch": args.batch, "inflight": args.inflight, "consumers": args.consumers,
                         "concurrency": args.concurrency, "results": rows});
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    } else {
        println!("machine: {}", machine());
        println!(
            "events: {}, payload: {} B, partitions: {}, batch: {}, in flight: {}, consumers: {} × concurrency {}",
            args.events, args.payload, args.partitions, args.batch, args.inflight, args.consumers, args.concurrency
        );
        println!("{:<36} {:>14} {:>10}", "scenario", "events/s", "× baseline");
        for f in &figures {
            println!(
                "{:<36} {:>14.0} {:>10.2}",
                f.scenario,
                f.rate(),
                f.rate() / base
            );
        }
    }
    if !args.skip_outbox {
        run_outbox(args, &redis, &ns).await?;
    }
    Ok(())
}

async fn run_outbox(args: &Args, redis: &RedisConnector, ns: &str) -> Result<(), String> {
    let result = outbox::run(redis, &args.database_url, ns, args.partitions, args.outbox_events, args.payload).await;
    cleanup(redis, &format!("{ns}-ob")).await;
    cleanup(redis, &format!("{ns}-lat")).await;
    let f = result?;
    let (rate, p50, p99, max) = f.latency;
    if args.json {
        let doc = json!({"outbox": {
            "pgbench_insert_rows_per_sec": f.pgbench_rows_per_sec,
            "pgbench_single_row_commits_per_sec": f.pgbench_commits_per_sec,
            "end_to_end_events_per_sec": f.end_to_end_per_sec,
            "ratio_to_pgbench": f.pgbench_rows_per_sec.map(|b| f.end_to_end_per_sec / b),
            "events": args.outbox_events,
            "latency_rate_per_sec": rate, "commit_to_handler_p50_ms": p50,
            "commit_to_handler_p99_ms": p99, "commit_to_handler_max_ms": max}});
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    } else {
        println!("\noutbox: {} events enqueued in transactions of 100 by 4 writers → relay → 2 inbox consumers → ack", args.outbox_events);
        println!("{:<48} {:>14} {:>10}", "scenario", "events/s", "× pgbench");
        let base = f.pgbench_rows_per_sec;
        if let Some(b) = base {
            println!("{:<48} {:>14.0} {:>10.2}", "pgbench INSERT of 100 outbox rows per tx (-c 4)", b, 1.0);
        }
        if let Some(c) = f.pgbench_commits_per_sec {
            println!(
                "{:<48} {:>14.0} {:>10}",
                "pgbench 1-row transactions (-c 16): commits/s",
                c,
                base.map_or("n/a".into(), |b| format!("{:.2}", c / b))
            );
        }
        println!(
            "{:<48} {:>14.0} {:>10}",
            "eventbus outbox end to end",
            f.end_to_end_per_sec,
            base.map_or("n/a".into(), |b| format!("{:.2}", f.end_to_end_per_sec / b))
        );
        println!("commit → handler latency at {rate} events/s (one event per transaction): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms");
    }
    Ok(())
}
