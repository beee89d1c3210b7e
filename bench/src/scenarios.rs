//! Our scenarios against Redis: publish batched and one at a time,
//! publish → consume → ack (unordered and ordered), and publish → handler
//! latency at a fixed offered rate.
//!
//! Events are built while the clock runs, batch by batch, as an application
//! would build them (a UUIDv7, a timestamp, a JSON `data` object): that cost
//! is in the figures, and the bench process's RSS is not inflated by a
//! million pre-built envelopes.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventbus::retention::{Trimmer, TrimmerConfig};
use eventbus::{
    handler_fn, Consumer, ConsumerConfig, ConsumerMode, ConsumerStats, Delivery, Envelope,
    HandlerError, Publisher, PublisherConfig,
};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::measure::{histogram, Latency, Meter};
use crate::report::Row;
use crate::Ctx;

/// The event every scenario sends: a `work_item` event whose `data` is
/// `payload` bytes of JSON, keys spread over 10,000 work items.
pub(crate) fn envelope(seq: u64, payload: usize) -> Envelope {
    let key = format!("wi-{}", seq % 10_000);
    Envelope::new(
        "work_item.processing_completed",
        key.clone(),
        json!({"work_item_id": key, "seq": seq, "pad": "x".repeat(payload.saturating_sub(60))}),
    )
    .with_source("bench")
}

fn events(range: std::ops::Range<u64>, payload: usize) -> Vec<Envelope> {
    range.map(|i| envelope(i, payload)).collect()
}

fn seq_of(d: &Delivery) -> Option<u64> {
    d.envelope.data.get("seq").and_then(|v| v.as_u64())
}

/// Nanoseconds since `epoch`.
fn since(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

/// Per-event latency slots: the send time of each event (or of its batch)
/// and the time the handler saw it, both in ns since one epoch. Lock-free,
/// so measuring costs the consumers next to nothing.
struct Stamps {
    epoch: Instant,
    sent: Vec<AtomicU64>,
    /// Events per `sent` slot (1 for one-at-a-time, the batch size otherwise).
    per_slot: u64,
    latency_us: Vec<AtomicU32>,
}

impl Stamps {
    fn new(events: u64, per_slot: u64) -> Arc<Self> {
        Arc::new(Stamps {
            epoch: Instant::now(),
            sent: (0..events.div_ceil(per_slot))
                .map(|_| AtomicU64::new(0))
                .collect(),
            per_slot,
            latency_us: (0..events).map(|_| AtomicU32::new(0)).collect(),
        })
    }

    fn mark_sent(&self, slot: u64) {
        self.sent[slot as usize].store(since(self.epoch).max(1), Ordering::Relaxed);
    }

    fn mark_handled(&self, seq: u64) {
        let Some(sent) = self.sent.get((seq / self.per_slot) as usize) else {
            return;
        };
        let sent = sent.load(Ordering::Relaxed);
        if sent == 0 {
            return;
        }
        let us = (since(self.epoch).saturating_sub(sent) / 1000).max(1);
        let _ = self.latency_us[seq as usize].compare_exchange(
            0,
            us.min(u64::from(u32::MAX)) as u32,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn latency(&self) -> Option<Latency> {
        let mut h = histogram();
        for l in &self.latency_us {
            let v = l.load(Ordering::Relaxed);
            if v > 0 {
                let _ = h.record(u64::from(v));
            }
        }
        Latency::from_micros(&h)
    }
}

/// `Publisher::publish_batch` of `batch`-event batches, `inflight` at once
/// on the one shared connection. Latency: each batch's round trip.
pub(crate) async fn publish_batched(ctx: &Ctx) -> Result<Row, String> {
    let p = &ctx.params;
    let (topology, ns) = ctx.topology("pb")?;
    let publisher = Publisher::connect(&ctx.redis, topology, PublisherConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    let hist = Mutex::new(histogram());
    let meter = Meter::start(&ctx.cpu_nodes).await;
    let batches = p.events.div_ceil(p.batch as u64);
    let results: Vec<eventbus::Result<()>> = futures::stream::iter(0..batches)
        .map(|b| {
            let (publisher, hist) = (&publisher, &hist);
            async move {
                let start = b * p.batch as u64;
                let batch = events(start..(start + p.batch as u64).min(p.events), p.payload);
                let t = Instant::now();
                publisher.publish_batch(&batch).await?;
                let us = t.elapsed().as_micros() as u64;
                let _ = hist
                    .lock()
                    .expect("histogram lock")
                    .record_n(us.max(1), batch.len() as u64);
                Ok(())
            }
        })
        .buffer_unordered(p.inflight.max(1))
        .collect()
        .await;
    let usage = meter.stop().await;
    ctx.cleanup(&ns).await;
    results
        .into_iter()
        .collect::<eventbus::Result<()>>()
        .map_err(|e| e.to_string())?;
    let latency = Latency::from_micros(&hist.into_inner().expect("histogram lock"));
    Ok(Row::ours("eventbus publish_batch", p.events, &usage)
        .with_latency(latency)
        .with_note(format!(
            "{} per batch, {} batches in flight; latency = batch round trip",
            p.batch, p.inflight
        )))
}

/// `Publisher::publish`, one event per call, from `publishers` tasks at once
/// sharing the one connection. Latency: each call.
pub(crate) async fn publish_single(ctx: &Ctx) -> Result<Row, String> {
    let p = &ctx.params;
    let (topology, ns) = ctx.topology("ps")?;
    let publisher = Publisher::connect(&ctx.redis, topology, PublisherConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    let next = Arc::new(AtomicU64::new(0));
    let meter = Meter::start(&ctx.cpu_nodes).await;
    let mut tasks = Vec::new();
    for _ in 0..p.publishers.max(1) {
        let (publisher, next, total, payload) =
            (publisher.clone(), next.clone(), p.events, p.payload);
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= total {
                    return Ok::<_, eventbus::Error>(h);
                }
                let e = envelope(seq, payload);
                let t = Instant::now();
                publisher.publish(&e).await?;
                let _ = h.record((t.elapsed().as_micros() as u64).max(1));
            }
        }));
    }
    let mut hist = histogram();
    let mut failed = None;
    for t in tasks {
        match t.await {
            Ok(Ok(h)) => {
                let _ = hist.add(h);
            }
            Ok(Err(e)) => failed = Some(e.to_string()),
            Err(e) => failed = Some(e.to_string()),
        }
    }
    let usage = meter.stop().await;
    ctx.cleanup(&ns).await;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(
        Row::ours("eventbus publish (one per call)", p.events, &usage)
            .with_latency(Latency::from_micros(&hist))
            .with_note(format!("{} tasks at once", p.publishers)),
    )
}

/// Consumers of one group running in this process, counting what they saw.
struct Consumers {
    token: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<eventbus::Result<()>>>,
    stats: Vec<Arc<ConsumerStats>>,
}

impl Consumers {
    async fn start(
        ctx: &Ctx,
        topology: &eventbus::Topology,
        mode: ConsumerMode,
        members: usize,
        stamps: Arc<Stamps>,
        trim: Option<TrimmerConfig>,
    ) -> Result<Self, String> {
        let p = &ctx.params;
        let token = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut stats = Vec::new();
        if let Some(config) = trim {
            // Beside the consumers, as `eventbus relay` and `serve` run it.
            let trimmer = Trimmer::new(ctx.conn.clone(), topology.clone(), config);
            let stop = token.clone();
            tasks.push(tokio::spawn(async move {
                trimmer.run(stop).await;
                Ok(())
            }));
        }
        let names: Vec<String> = (0..members.max(1)).map(|i| format!("m{i}")).collect();
        for name in &names {
            let mut config = ConsumerConfig::new("bench", ["work_item"]);
            config.mode = mode;
            config.consumer_name = Some(name.clone());
            config.concurrency = p.concurrency;
            config.read_count = p.batch.min(1000);
            config.block = Duration::from_millis(500);
            let stamps = stamps.clone();
            let handler = handler_fn(move |d: Delivery| {
                if let Some(seq) = seq_of(&d) {
                    stamps.mark_handled(seq);
                }
                async { Ok::<(), HandlerError>(()) }
            });
            let consumer = Consumer::new(ctx.redis.clone(), topology.clone(), config, handler)
                .map_err(|e| e.to_string())?;
            stats.push(consumer.stats());
            tasks.push(tokio::spawn(consumer.run(token.clone())));
        }
        // Groups created (and, in ordered mode, every partition leased)
        // before the clock starts.
        match mode {
            ConsumerMode::Ordered => {
                crate::ordered::wait_balanced(ctx, topology, "bench", &names).await?;
            }
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
        Ok(Consumers {
            token,
            tasks,
            stats,
        })
    }

    fn acked(&self) -> u64 {
        self.stats
            .iter()
            .map(|s| s.acked.load(Ordering::Relaxed))
            .sum()
    }

    async fn wait_acked(&self, want: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.acked() < want {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }

    async fn stop(self) {
        self.token.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Publishes every event in batches, `inflight` at once, stamping each
/// batch's send time.
async fn publish_stamped(
    ctx: &Ctx,
    publisher: &Publisher,
    stamps: &Stamps,
) -> eventbus::Result<()> {
    let p = &ctx.params;
    let batches = p.events.div_ceil(p.batch as u64);
    let results: Vec<eventbus::Result<()>> = futures::stream::iter(0..batches)
        .map(|b| async move {
            let start = b * p.batch as u64;
            let batch = events(start..(start + p.batch as u64).min(p.events), p.payload);
            stamps.mark_sent(b);
            publisher.publish_batch(&batch).await.map(|_| ())
        })
        .buffer_unordered(p.inflight.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// Publish while `members` consumers of one group read, run a no-op
/// handler and acknowledge; timed until the last acknowledgement.
/// Latency: from the batch's publish call to the handler.
pub(crate) async fn publish_consume_ack(
    ctx: &Ctx,
    mode: ConsumerMode,
    members: usize,
) -> Result<Row, String> {
    publish_consume_ack_trimmed(ctx, mode, members, None).await
}

/// [`publish_consume_ack`], with a [`Trimmer`] of the namespace running
/// beside the consumers when `trim` is given.
pub(crate) async fn publish_consume_ack_trimmed(
    ctx: &Ctx,
    mode: ConsumerMode,
    members: usize,
    trim: Option<TrimmerConfig>,
) -> Result<Row, String> {
    let p = &ctx.params;
    let (topology, ns) = ctx.topology(&format!("pca-{}-{}", mode.as_str(), ctx.next_id()))?;
    let publisher = Publisher::connect(&ctx.redis, topology.clone(), PublisherConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    let stamps = Stamps::new(p.events, p.batch as u64);
    let consumers = Consumers::start(ctx, &topology, mode, members, stamps.clone(), trim).await?;
    let meter = Meter::start(&ctx.cpu_nodes).await;
    let published = publish_stamped(ctx, &publisher, &stamps).await;
    let done = published.is_ok()
        && consumers
            .wait_acked(p.events, Duration::from_secs(p.timeout_secs))
            .await;
    let usage = meter.stop().await;
    let acked = consumers.acked();
    consumers.stop().await;
    ctx.cleanup(&ns).await;
    published.map_err(|e| e.to_string())?;
    if !done {
        return Err(format!(
            "{} publish → consume → ack: only {acked} of {} acknowledged within {} s",
            mode.as_str(),
            p.events,
            p.timeout_secs
        ));
    }
    let what = match mode {
        ConsumerMode::Ordered => format!("{members} member(s), one entry at a time per partition"),
        _ => format!("{members} consumers × {} handlers", p.concurrency),
    };
    Ok(Row::ours(
        format!("eventbus {} ({members})", mode.as_str()),
        p.events,
        &usage,
    )
    .with_latency(stamps.latency())
    .with_note(format!("{what}; latency = publish call → handler")))
}

/// Publishes `rate` events per second, one per `Publisher::publish` call,
/// for `seconds`, with an unordered consumer group handling them; latency
/// from just before each publish call to the handler.
pub(crate) async fn publish_to_handler_at_rate(ctx: &Ctx, rate: u64) -> Result<Row, String> {
    let p = &ctx.params;
    let (topology, ns) = ctx.topology(&format!("lat{rate}"))?;
    let publisher = Publisher::connect(&ctx.redis, topology.clone(), PublisherConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    let count = rate * p.rate_secs;
    let stamps = Stamps::new(count, 1);
    let consumers = Consumers::start(
        ctx,
        &topology,
        ConsumerMode::Unordered,
        p.consumers,
        stamps.clone(),
        None,
    )
    .await?;
    let meter = Meter::start(&ctx.cpu_nodes).await;
    let payload = p.payload;
    let sent = paced(rate, count, |seq| {
        let (publisher, stamps) = (publisher.clone(), stamps.clone());
        async move {
            let e = envelope(seq, payload);
            stamps.mark_sent(seq);
            publisher.publish(&e).await.map(|_| ())
        }
    })
    .await;
    let done = sent.is_ok() && consumers.wait_acked(count, Duration::from_secs(60)).await;
    let usage = meter.stop().await;
    consumers.stop().await;
    ctx.cleanup(&ns).await;
    sent?;
    if !done {
        return Err(format!("latency at {rate}/s: not every event was handled"));
    }
    Ok(Row::ours(
        format!("eventbus publish → handler @ {rate}/s"),
        count,
        &usage,
    )
    .with_latency(stamps.latency())
    .with_note(format!(
        "{} unordered consumers; one publish call per event",
        p.consumers
    )))
}

/// Calls `send(seq)` for `count` events at `rate` per second (in ticks of
/// 1 ms, each sending its share concurrently), without waiting for one
/// tick's sends before starting the next: an offered load, not a closed loop.
pub(crate) async fn paced<F, Fut>(rate: u64, count: u64, send: F) -> Result<(), String>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = eventbus::Result<()>> + Send + 'static,
{
    let started = tokio::time::Instant::now();
    let mut inflight = tokio::task::JoinSet::new();
    let mut seq = 0;
    let mut tick = 0u64;
    while seq < count {
        tick += 1;
        tokio::time::sleep_until(started + Duration::from_millis(tick)).await;
        // Events due by the end of this millisecond.
        let due = (rate * tick / 1000).min(count);
        while seq < due {
            inflight.spawn(send(seq));
            seq += 1;
        }
        while let Some(r) = inflight.try_join_next() {
            r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        }
    }
    while let Some(r) = inflight.join_next().await {
        r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_carry_their_sequence_and_payload_size() {
        let e = envelope(12_345, 200);
        assert_eq!(e.data["seq"], 12_345);
        assert_eq!(e.key, "wi-2345");
        let data = serde_json::to_string(&e.data).unwrap();
        assert!((180..=220).contains(&data.len()), "{}", data.len());
    }

    #[test]
    fn stamps_measure_from_the_batch_send() {
        let s = Stamps::new(10, 5);
        s.mark_handled(3); // not sent yet: ignored
        s.mark_sent(0);
        std::thread::sleep(Duration::from_millis(2));
        s.mark_handled(3);
        s.mark_handled(3); // a redelivery keeps the first
        s.mark_handled(99); // out of range: ignored
        let l = s.latency().unwrap();
        assert!(l.p50_ms >= 2.0 && l.max_ms < 1000.0, "{l:?}");
    }

    #[tokio::test]
    async fn paced_sends_everything_at_about_the_rate() {
        let n = Arc::new(AtomicU64::new(0));
        let t = Instant::now();
        paced(2000, 200, |_| {
            let n = n.clone();
            async move {
                n.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
        .await
        .unwrap();
        assert_eq!(n.load(Ordering::Relaxed), 200);
        assert!(t.elapsed() >= Duration::from_millis(95));
    }
}
