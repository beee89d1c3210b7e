//! The consumer soak: one unordered consumer in its own process (this
//! program started again with `--soak-consumer NS`) under a steady offered
//! load, its RSS sampled every second, so "a consumer's RSS ≤ 50 MB under
//! load and flat over time" is measured on the consumer alone.

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eventbus::{
    handler_fn, Consumer, ConsumerConfig, ConsumerMode, Delivery, HandlerError, Publisher,
    PublisherConfig, RedisConnector, Topology,
};
use tokio_util::sync::CancellationToken;

use crate::measure::{CpuPerMillion, Meter};
use crate::report::{Role, Row, Section};
use crate::scenarios::envelope;
use crate::{Ctx, Target};

/// The child's side: consume `ns` with a no-op handler until stdin closes.
pub(crate) async fn consumer_process(
    redis: &RedisConnector,
    target: &Target,
    ns: &str,
) -> Result<(), String> {
    let topology = Topology::new(ns, target.partitions).map_err(|e| e.to_string())?;
    let mut config = ConsumerConfig::new("soak", ["work_item"]);
    config.mode = ConsumerMode::Unordered;
    config.concurrency = 64;
    config.block = Duration::from_millis(500);
    let handler = handler_fn(|_d: Delivery| async { Ok::<(), HandlerError>(()) });
    let consumer =
        Consumer::new(redis.clone(), topology, config, handler).map_err(|e| e.to_string())?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        cancel.cancel();
    });
    consumer.run(token).await.map_err(|e| e.to_string())
}

fn proc_status_kib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    crate::measure::kib_field(&status, field)
}

fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    Some((f.get(11)? + f.get(12)?) / 100.0)
}

/// The parent's side: start the consumer process, publish `soak_rate`
/// events/s for `soak_secs` in batches every 10 ms, sample its RSS.
pub(crate) async fn run(ctx: &Ctx) -> Section {
    let p = &ctx.params;
    let mut section = Section::new(
        "consumer soak",
        format!(
            "one unordered consumer (64 handlers) in its own process, {} events/s offered for {} s; \
             RSS sampled every second",
            p.soak_rate, p.soak_secs
        ),
    );
    section.compare_rates = false;
    let row = match soak(ctx).await {
        Ok(r) => r,
        Err(e) => Row::skipped(
            "eventbus consumer process",
            Role::Eventbus,
            format!("failed: {e}"),
        ),
    };
    section.rows.push(row);
    section
}

async fn soak(ctx: &Ctx) -> Result<Row, String> {
    let p = &ctx.params;
    let (topology, ns) = ctx.topology("soak")?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(&ctx.target.self_args)
        .args(["--soak-consumer", &ns])
        // The URL may hold a password: the environment, not the command line.
        .env("REDIS_URL", &ctx.target.redis_url)
        .args(["--partitions", &ctx.target.partitions.to_string()])
        .env("EVENT_BUS_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("could not start the consumer process: {e}"))?;
    let pid = child.id();
    let publisher = Publisher::connect(&ctx.redis, topology.clone(), PublisherConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let meter = Meter::start(&ctx.cpu_nodes).await;
    let cpu_before = proc_cpu_seconds(pid).unwrap_or(0.0);
    let per_tick = (p.soak_rate / 100).max(1);
    let ticks = p.soak_secs * 100;
    let started = tokio::time::Instant::now();
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut seq = 0u64;
    for tick in 0..ticks {
        tokio::time::sleep_until(started + Duration::from_millis(10 * (tick + 1))).await;
        let batch: Vec<_> = (seq..seq + per_tick)
            .map(|i| envelope(i, p.payload))
            .collect();
        seq += per_tick;
        publisher
            .publish_batch(&batch)
            .await
            .map_err(|e| e.to_string())?;
        if tick % 100 == 99 {
            if let Some(kib) = proc_status_kib(pid, "VmRSS") {
                samples.push((started.elapsed().as_secs_f64(), kib / 1024.0));
            }
        }
    }
    // Wait until the group has caught up.
    let topics: BTreeSet<String> = ["work_item".to_owned()].into();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut caught_up = false;
    while Instant::now() < deadline {
        let stats = eventbus::admin::partition_stats(&ctx.conn, &topology, &topics)
            .await
            .map_err(|e| e.to_string())?;
        let behind: u64 = stats
            .iter()
            .flat_map(|s| &s.groups)
            .map(|g| g.pending + g.lag.unwrap_or(0))
            .sum();
        if behind == 0 && !stats.iter().all(|s| s.groups.is_empty()) {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu = proc_cpu_seconds(pid).unwrap_or(0.0) - cpu_before;
    let peak = proc_status_kib(pid, "VmHWM").map(|k| k / 1024.0);
    let usage = meter.stop().await;
    drop(child.stdin.take()); // EOF: the consumer drains and exits
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    ctx.cleanup(&ns).await;
    if !caught_up {
        return Err("the consumer did not catch up within 60 s after the load stopped".into());
    }
    let n = samples.len();
    let tenth = (n / 10).max(1).min(n);
    let early = samples[..tenth].iter().map(|s| s.1).fold(0.0, f64::max);
    let late = samples[n - tenth..].iter().map(|s| s.1).fold(0.0, f64::max);
    let max = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    let mut row = Row::ours("eventbus consumer process", seq, &usage);
    row.events_per_sec = Some(seq as f64 / p.soak_secs as f64);
    row.cpu_per_million = Some(CpuPerMillion {
        client: cpu * 1_000_000.0 / seq.max(1) as f64,
        ..usage.per_million(seq, false)
    });
    row.peak_rss_mib = peak;
    Ok(row.with_note(format!(
        "RSS: first tenth ≤ {early:.1} MiB, last tenth ≤ {late:.1} MiB, max {max:.1} MiB over {n} samples; \
         CPU = the consumer process"
    )))
}
