//! Scheduled delivery: lateness (stream entry time − due time) at fixed
//! rates of due events, with one scheduler, as `eventbus relay` or
//! `serve` runs it.
//!
//! The events are scheduled ahead (their due times spread evenly over
//! `--rate-secs` at the rate, starting a few seconds after the last is
//! published), then one scheduler runs; each event's lateness is its
//! stream entry id (the server's clock when the move script added it)
//! minus its due time (the same clock, milliseconds).

use std::time::Duration;

use chrono::{DateTime, Utc};
use eventbus::schedule::{Scheduler, SchedulerConfig};
use eventbus::{Envelope, Publisher, PublisherConfig};
use tokio_util::sync::CancellationToken;

use crate::measure::{histogram, Latency, Meter};
use crate::report::{Row, Section};
use crate::Ctx;

/// The section, one row per rate.
pub(crate) async fn run(ctx: &Ctx) -> Section {
    let p = &ctx.params;
    let mut s = Section::new(
        "scheduled lateness",
        format!(
            "events due at a fixed rate for {} s, scheduled ahead; one scheduler (poll 10 ms, \
             batches of 500); lateness = stream entry time − due time",
            p.rate_secs
        ),
    );
    s.compare_rates = false;
    for rate in [1000, 10_000] {
        s.rows.push(crate::ours_or_failed(
            &format!("eventbus scheduled @ {rate} due/s"),
            at_rate(ctx, rate).await,
        ));
    }
    s
}

async fn at_rate(ctx: &Ctx, rate: u64) -> Result<Row, String> {
    let p = &ctx.params;
    let (topology, ns) = ctx.topology(&format!("sched{rate}"))?;
    let publisher = Publisher::connect(&ctx.redis, topology.clone(), PublisherConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    let count = rate * p.rate_secs;
    let lead = Duration::from_secs(3 + count / 20_000);
    let start = Utc::now() + chrono::Duration::from_std(lead).map_err(|e| e.to_string())?;
    let due = |seq: u64| start + chrono::Duration::microseconds((seq * 1_000_000 / rate) as i64);
    for first in (0..count).step_by(1000) {
        let last = (first + 1000).min(count);
        let events: Vec<Envelope> = (first..last)
            .map(|seq| crate::scenarios::envelope(seq, p.payload))
            .collect();
        let times: Vec<Option<DateTime<Utc>>> = (first..last).map(|s| Some(due(s))).collect();
        publisher
            .publish_batch_at(&events, &times)
            .await
            .map_err(|e| e.to_string())?;
    }
    if Utc::now() >= start {
        return Err(format!(
            "scheduling {count} events took longer than the {lead:?} lead"
        ));
    }
    let scheduler = Scheduler::connect(&ctx.redis, topology.clone(), SchedulerConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    let stop = CancellationToken::new();
    tokio::time::sleep((start - Utc::now()).to_std().unwrap_or_default()).await;
    let meter = Meter::start(&ctx.cpu_nodes).await;
    let stats = scheduler.stats();
    let task = tokio::spawn(scheduler.run(stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(p.rate_secs + 60);
    while stats.moved.load(std::sync::atomic::Ordering::Relaxed) < count {
        if tokio::time::Instant::now() > deadline {
            stop.cancel();
            ctx.cleanup(&ns).await;
            return Err(format!("scheduled @ {rate}/s: not every event was moved"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let usage = meter.stop().await;
    stop.cancel();
    let _ = task.await;
    let mut late = histogram();
    for stream in topology.topic_streams("work_item") {
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .query_async(&mut ctx.conn.clone())
            .await
            .map_err(|e| e.to_string())?;
        for (id, fields) in entries {
            let added_ms: i64 = id.split('-').next().unwrap_or("0").parse().unwrap_or(0);
            let seq = fields
                .iter()
                .find(|(k, _)| k == "data")
                .and_then(|(_, v)| serde_json::from_str::<serde_json::Value>(v).ok())
                .and_then(|d| d["seq"].as_u64())
                .ok_or("an entry without its sequence")?;
            let micros = (added_ms - due(seq).timestamp_millis()).max(0) as u64 * 1000;
            late.record(micros).map_err(|e| e.to_string())?;
        }
    }
    ctx.cleanup(&ns).await;
    if late.len() != count {
        return Err(format!(
            "{} entries on the streams, {count} scheduled",
            late.len()
        ));
    }
    Ok(
        Row::ours(format!("eventbus scheduled @ {rate} due/s"), count, &usage)
            .with_latency(Latency::from_micros(&late))
            .with_note("lateness in ms at the server's clock (entry ids are whole ms)"),
    )
}
