//! The retention soak (issue #13): what ack-aware retention does to Redis
//! memory under steady load with a lagging group, and what it costs in
//! throughput. Everything runs on private `redis-server`s without
//! persistence (started through the testkit), so `used_memory` is this
//! scenario's alone.
//!
//! - **Memory soak**, run twice in one run, retention on (`acked`) and then
//!   off, each on a fresh server: `--retention-rate` events/s (10,000)
//!   published with `Publisher::publish_batch` every 10 ms for
//!   `--retention-secs` (600), while two unordered groups consume. `fast`
//!   runs a no-op handler; `lagging` holds each event `--retention-lag-ms`
//!   (1 s) in its handler before it is acknowledged, with twice the
//!   handlers that takes to keep up (rate × lag × 2), so it keeps up on
//!   average but stays about rate × lag entries behind, and holds retention
//!   back by that much. A [`Trimmer`] (what `eventbus relay` and `serve`
//!   run) passes every `--retention-interval-ms` (1 s) with the phase's
//!   policy (off: it only reads). Every second: `used_memory`, the streams'
//!   length and how far each group is behind; per window of
//!   `--retention-window-secs` (60, the "minute") the last sample and the
//!   peak. Target: with retention on, the last window's peak ≤ 1.2 × the
//!   first's (off is shown for contrast: it grows by design).
//! - **Throughput A/B**: the unordered publish → consume → ack scenario of
//!   the normal run (same sizes) on one private server, without a trimmer
//!   and with one passing every `--retention-interval-ms`, over
//!   `--retention-rounds` rounds in ABBA order (off, on, on, off, …) so a
//!   drift in the machine's load falls on both sides. Target: the median
//!   over rounds of the rate with the trimmer ÷ without ≥ 0.95 (retention
//!   costs ≤ 5 %); each run notes the CPU other processes used meanwhile,
//!   and CPU per event with ÷ without is shown beside it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventbus::retention::{redis_memory, RetentionPolicy, Trimmer, TrimmerConfig};
use eventbus::{
    handler_fn, Consumer, ConsumerConfig, ConsumerMode, ConsumerStats, Delivery, HandlerError,
    Publisher, PublisherConfig, Topology,
};
use eventbus_testkit::RedisServer;
use tokio_util::sync::CancellationToken;

use crate::measure::{Meter, OthersMeter};
use crate::report::{Check, MemorySample, MemorySeries, Role, Row, Section};
use crate::scenarios::{envelope, publish_consume_ack_trimmed};
use crate::{ours_or_failed, progress, Ctx};

/// With retention, the last window's peak memory over the first's, at most.
const MEMORY_TARGET: f64 = 1.2;
/// With the trimmer, the median throughput over the one without, at least.
const THROUGHPUT_TARGET: f64 = 0.95;
const TOPIC: &str = "work_item";
const GROUPS: [&str; 2] = ["fast", "lagging"];

/// The A/B section, then the memory soak's, as asked for.
pub(crate) async fn run(ctx: &Ctx) -> Vec<Section> {
    let p = &ctx.params;
    let mut sections = Vec::new();
    if p.retention_rounds > 0 {
        sections.push(throughput_ab(ctx).await);
    }
    if p.retention_secs > 0 {
        sections.push(memory_soak(ctx).await);
    }
    sections
}

fn trimmer_config(p: &crate::Params, on: bool) -> TrimmerConfig {
    let policy = if on {
        RetentionPolicy::default()
    } else {
        RetentionPolicy {
            acked_after: None,
            ..Default::default()
        }
    };
    TrimmerConfig {
        policy,
        interval: Duration::from_millis(p.retention_interval_ms.max(10)),
    }
}

/// A fresh private `redis-server` without persistence and a context on it.
/// The server stops when the returned guard is dropped.
async fn private_redis(ctx: &Ctx) -> Result<(RedisServer, Ctx), String> {
    let installed = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        return Err("redis-server is not installed (apt-get install redis-server)".into());
    }
    // The testkit's server already has no RDB snapshots; no AOF either.
    let server = tokio::task::spawn_blocking(|| RedisServer::start_with(&["--appendonly", "no"]))
        .await
        .map_err(|_| "could not start a private redis-server".to_owned())?;
    let url = server.url();
    let node = (format!("redis :{}", server.port()), true, url.clone());
    let private =
        crate::cluster::context(url, &ctx.params, ctx.target.partitions, vec![node]).await?;
    Ok((server, private))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Unordered publish → consume → ack with and without a trimmer, ABBA.
async fn throughput_ab(ctx: &Ctx) -> Section {
    let p = &ctx.params;
    let trim = trimmer_config(p, true);
    let mut section = Section::new(
        "retention: publish → consume → ack, unordered, with and without the trimmer",
        format!(
            "the unordered scenario ({} events, {} consumers × {} handlers, timed to the last ack) on a \
             private redis-server without persistence, alternately without a trimmer and with a Trimmer \
             (retention acked) passing every {} ms, in ABBA order over {} round(s)",
            p.events,
            p.consumers,
            p.concurrency,
            trim.interval.as_millis(),
            p.retention_rounds
        ),
    );
    section.compare_rates = false;
    let (server, private) = match private_redis(ctx).await {
        Ok(s) => s,
        Err(e) => {
            section.rows.push(Row::skipped(
                "eventbus unordered ± trimmer",
                Role::Eventbus,
                format!("failed: {e}"),
            ));
            return section;
        }
    };
    let mut rounds: Vec<Round> = Vec::new();
    for round in 1..=p.retention_rounds {
        let order = if round % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        let mut figures = [None, None];
        for trimmed in order {
            let name = if trimmed {
                format!(
                    "unordered, trimmer every {} ms, round {round}",
                    trim.interval.as_millis()
                )
            } else {
                format!("unordered, no trimmer, round {round}")
            };
            progress(&format!("retention A/B: {name}"));
            let others = OthersMeter::start(&private.conn).await;
            let row = publish_consume_ack_trimmed(
                &private,
                ConsumerMode::Unordered,
                p.consumers,
                trimmed.then_some(trim),
            )
            .await;
            let others = others.stop().await;
            let mut row = ours_or_failed(&name, row);
            row.system = name;
            if let (Some(cores), Some(note)) = (others, row.note.as_mut()) {
                note.push_str(&format!(
                    "; other processes used {cores:.2} cores meanwhile"
                ));
            }
            let cpu = row
                .cpu_per_million
                .as_ref()
                .map_or(0.0, |c| c.client + c.redis.unwrap_or(0.0));
            figures[usize::from(trimmed)] = row.events_per_sec.map(|rate| Run { rate, cpu });
            section.rows.push(row);
        }
        rounds.push(figures);
    }
    drop(private);
    drop(server);
    section.checks.extend(ab_checks(&rounds));
    section
}

/// One run of the A/B: events/s and CPU s/M (this process + Redis).
#[derive(Debug, Clone, Copy)]
struct Run {
    rate: f64,
    cpu: f64,
}

/// A round of the A/B: the run without the trimmer, then the one with it
/// (`None`: failed).
type Round = [Option<Run>; 2];

/// The A/B's checks from each round's runs without and with the
/// trimmer: the median of the rounds' ratios (each round's two
/// runs are neighbours in time, so drift in the machine's load cancels
/// within a round) against the target, then for context the ratio of each
/// side's median rate and of its median CPU per event.
fn ab_checks(rounds: &[Round]) -> Vec<Check> {
    let pairs: Vec<[Run; 2]> = rounds
        .iter()
        .filter_map(|[without, with]| Some([(*without)?, (*with)?]))
        .collect();
    let side = |f: fn(&[Run; 2]) -> f64| median(pairs.iter().map(f).collect());
    let (Some(ratio), Some(rate_without), Some(rate_with), Some(cpu_without), Some(cpu_with)) = (
        side(|[a, b]| b.rate / a.rate),
        side(|[a, _]| a.rate),
        side(|[_, b]| b.rate),
        side(|[a, _]| a.cpu),
        side(|[_, b]| b.cpu),
    ) else {
        return Vec::new();
    };
    let mut checks = vec![
        Check::at_least(
            format!(
                "events/s with the trimmer ÷ without, median of {} rounds (cost {:.1} %)",
                pairs.len(),
                100.0 * (1.0 - ratio)
            ),
            ratio,
            THROUGHPUT_TARGET,
        ),
        Check::contrast(
            format!(
                "median events/s with the trimmer ({rate_with:.0}) ÷ without ({rate_without:.0})"
            ),
            rate_with / rate_without,
        ),
    ];
    if cpu_without > 0.0 {
        checks.push(Check::contrast(
            format!(
                "median CPU s/M, this process + Redis, with the trimmer ({cpu_with:.1}) ÷ without ({cpu_without:.1})"
            ),
            cpu_with / cpu_without,
        ));
    }
    checks
}

/// Both phases of the memory soak, retention on first.
async fn memory_soak(ctx: &Ctx) -> Section {
    let p = &ctx.params;
    let interval = trimmer_config(p, true).interval;
    let mut section = Section::new(
        "retention soak",
        format!(
            "{} events/s offered for {} s (publish_batch every 10 ms), twice, each on a fresh private \
             redis-server without persistence: retention on (acked), then off; groups `fast` (no-op \
             handler) and `lagging` (each event held {} ms before its ack, {} handlers); a Trimmer \
             every {} ms; used_memory every second, reported per {}-s window",
            p.retention_rate,
            p.retention_secs,
            p.retention_lag_ms,
            lagging_handlers(p),
            interval.as_millis(),
            p.retention_window_secs
        ),
    );
    section.compare_rates = false;
    for on in [true, false] {
        let label = if on { "retention on" } else { "retention off" };
        progress(&format!(
            "retention soak: {label}, {} s at {}/s",
            p.retention_secs, p.retention_rate
        ));
        match soak_phase(ctx, on).await {
            Ok((row, series)) => {
                let what = format!(
                    "{label}: used_memory, last {w}-s window's peak ÷ first {w}-s window's",
                    w = series.window_secs
                );
                match series.last_over_first {
                    Some(r) if on => section.checks.push(Check::at_most(what, r, MEMORY_TARGET)),
                    Some(r) => section.checks.push(Check::contrast(
                        format!("{what} (no trimming: grows by design)"),
                        r,
                    )),
                    None => {}
                }
                section.rows.push(row);
                section.memory.push(series);
            }
            Err(e) => section.rows.push(Row::skipped(
                format!("eventbus {label}"),
                Role::Eventbus,
                format!("failed: {e}"),
            )),
        }
    }
    section
}

/// Handlers of the lagging group: twice what holding each event
/// `lag` takes at `rate`, so it keeps up on average.
fn lagging_handlers(p: &crate::Params) -> usize {
    (p.retention_rate * p.retention_lag_ms * 2 / 1000).max(64) as usize
}

/// One unordered consumer group of the soak.
struct Group {
    stats: Arc<ConsumerStats>,
    task: tokio::task::JoinHandle<eventbus::Result<()>>,
}

impl Group {
    /// Starts a consumer of `group` whose handler holds each event `hold`.
    fn start(
        ctx: &Ctx,
        topology: &Topology,
        group: &str,
        concurrency: usize,
        hold: Duration,
        stop: &CancellationToken,
    ) -> Result<Self, String> {
        let mut config = ConsumerConfig::new(group, [TOPIC]);
        config.mode = ConsumerMode::Unordered;
        config.concurrency = concurrency;
        config.read_count = concurrency.min(1000);
        config.block = Duration::from_millis(500);
        let handler = handler_fn(move |_d: Delivery| async move {
            if !hold.is_zero() {
                tokio::time::sleep(hold).await;
            }
            Ok::<(), HandlerError>(())
        });
        let consumer = Consumer::new(ctx.redis.clone(), topology.clone(), config, handler)
            .map_err(|e| e.to_string())?;
        Ok(Group {
            stats: consumer.stats(),
            task: tokio::spawn(consumer.run(stop.clone())),
        })
    }

    fn acked(&self) -> u64 {
        self.stats.acked.load(Ordering::Relaxed)
    }
}

/// Waits until both groups exist on every partition, so that every
/// event published is read by both.
async fn wait_groups(ctx: &Ctx, topology: &Topology) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut ready = true;
        for partition in 0..topology.partitions() {
            let groups: redis::RedisResult<Vec<redis::Value>> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(topology.stream_key(TOPIC, partition))
                .query_async(&mut ctx.conn.clone())
                .await;
            if groups.map_or(true, |g| g.len() < GROUPS.len()) {
                ready = false;
                break;
            }
        }
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the consumer groups were not created within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sample(
    ctx: &Ctx,
    topology: &Topology,
    started: tokio::time::Instant,
    published: u64,
    groups: &[Group; 2],
) -> Result<MemorySample, String> {
    let used_memory = redis_memory(&ctx.conn)
        .await
        .map_err(|e| e.to_string())?
        .first()
        .map_or(0, |n| n.used);
    let mut pipe = redis::pipe();
    for partition in 0..topology.partitions() {
        pipe.cmd("XLEN").arg(topology.stream_key(TOPIC, partition));
    }
    let lengths: Vec<u64> = pipe
        .query_async(&mut ctx.conn.clone())
        .await
        .map_err(|e| e.to_string())?;
    Ok(MemorySample {
        secs: started.elapsed().as_secs_f64(),
        used_memory,
        stream_entries: lengths.iter().sum(),
        behind: [
            published.saturating_sub(groups[0].acked()),
            published.saturating_sub(groups[1].acked()),
        ],
    })
}

/// One phase of the memory soak on a fresh private server: its row and
/// its memory series.
async fn soak_phase(ctx: &Ctx, on: bool) -> Result<(Row, MemorySeries), String> {
    let p = &ctx.params;
    let (server, ctx) = private_redis(ctx).await?;
    let label = if on { "retention on" } else { "retention off" };
    let (topology, _) = ctx.topology(if on { "ret-on" } else { "ret-off" })?;
    let lag = Duration::from_millis(p.retention_lag_ms);
    let stop = CancellationToken::new();
    let groups = [
        Group::start(&ctx, &topology, GROUPS[0], 256, Duration::ZERO, &stop)?,
        Group::start(&ctx, &topology, GROUPS[1], lagging_handlers(p), lag, &stop)?,
    ];
    let trimmer = Trimmer::new(ctx.conn.clone(), topology.clone(), trimmer_config(p, on));
    let trimming = tokio::spawn(trimmer.run(stop.clone()));
    let publisher = Publisher::connect(&ctx.redis, topology.clone(), PublisherConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    wait_groups(&ctx, &topology).await?;

    // A batch every 10 ms from 0 s until the phase's end; a batch that is
    // late goes out at once, so a slow publisher catches up instead of
    // lowering the rate. If it cannot catch up by the end, the achieved
    // rate (the row's events/s) is below the offered one.
    let per_tick = (p.retention_rate / 100).max(1);
    let duration = Duration::from_secs(p.retention_secs);
    let started = tokio::time::Instant::now();
    let mut samples = vec![sample(&ctx, &topology, started, 0, &groups).await?];
    let meter = Meter::start(&ctx.cpu_nodes).await;
    let mut seq = 0u64;
    let mut next_sample = Duration::from_secs(1);
    for tick in 0.. {
        tokio::time::sleep_until(started + Duration::from_millis(10 * tick)).await;
        if started.elapsed() >= duration {
            break;
        }
        let batch: Vec<_> = (seq..seq + per_tick)
            .map(|i| envelope(i, p.payload))
            .collect();
        publisher
            .publish_batch(&batch)
            .await
            .map_err(|e| e.to_string())?;
        seq += per_tick;
        let elapsed = started.elapsed();
        if elapsed >= next_sample && elapsed < duration {
            samples.push(sample(&ctx, &topology, started, seq, &groups).await?);
            next_sample = Duration::from_secs(elapsed.as_secs() + 1);
        }
    }
    samples.push(sample(&ctx, &topology, started, seq, &groups).await?);
    let usage = meter.stop().await;

    // Both groups must have kept up: everything acknowledged soon after.
    let drain = Duration::from_secs(30) + lag;
    let deadline = Instant::now() + drain;
    while groups.iter().any(|g| g.acked() < seq) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let behind: Vec<u64> = groups
        .iter()
        .map(|g| seq.saturating_sub(g.acked()))
        .collect();
    stop.cancel();
    let _ = trimming.await;
    for g in groups {
        let _ = g.task.await;
    }
    drop(ctx);
    drop(server);

    let series = MemorySeries::new(
        label,
        GROUPS.map(str::to_owned),
        p.retention_window_secs,
        samples,
    );
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let (first, last) = (series.windows.first(), series.windows.last());
    let peak_lag = series.windows.iter().map(|w| w.max_behind[1]).max();
    let row = Row::ours(format!("eventbus {label}"), seq, &usage);
    let mut note = format!(
        "offered {}/s; used_memory: start {:.1} MiB, first window peak {:.1} MiB, last window peak {:.1} MiB; \
         lagging group ≤ {} behind",
        p.retention_rate,
        mib(series.samples[0].used_memory),
        first.map_or(0.0, |w| mib(w.peak_used_memory)),
        last.map_or(0.0, |w| mib(w.peak_used_memory)),
        peak_lag.unwrap_or(0)
    );
    if behind.iter().any(|&b| b > 0) {
        note.push_str(&format!(
            "; NOT caught up {} s after the load: {} / {} events unacknowledged (fast / lagging)",
            drain.as_secs(),
            behind[0],
            behind[1]
        ));
    }
    Ok((row.with_note(note), series))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ab_check_is_the_median_of_the_rounds_ratios() {
        let run = |rate, cpu| Some(Run { rate, cpu });
        let rounds = [
            [run(100.0, 10.0), run(50.0, 10.0)], // a round spoilt by load
            [run(100.0, 10.0), run(98.0, 10.5)],
            [run(80.0, 12.0), run(79.0, 12.0)],
            [run(90.0, 11.0), None], // a failed run: the round is left out
        ];
        let checks = ab_checks(&rounds);
        assert_eq!(checks[0].value, 0.98);
        assert_eq!(checks[0].met, Some(true));
        assert!(
            checks[0].what.contains("median of 3 rounds"),
            "{}",
            checks[0].what
        );
        assert_eq!(checks[1].value, 79.0 / 100.0);
        assert_eq!(checks[2].value, 10.5 / 10.0);
        assert!(ab_checks(&[[None, run(1.0, 1.0)]]).is_empty());
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }

    #[test]
    fn the_lagging_group_has_twice_the_handlers_holding_takes() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            p: crate::Params,
        }
        let p = Cli::parse_from([
            "x",
            "--retention-rate",
            "10000",
            "--retention-lag-ms",
            "1000",
        ])
        .p;
        assert_eq!(lagging_handlers(&p), 20_000);
        let slow = Cli::parse_from(["x", "--retention-rate", "10", "--retention-lag-ms", "100"]).p;
        assert_eq!(lagging_handlers(&slow), 64);
    }
}
