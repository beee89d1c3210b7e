//! `eventbus-peers`: the Rust peers eventbus-bench compares with, one
//! scenario per run, printing one JSON object on stdout.
//!
//! ```text
//! eventbus-peers <omniqueue|apalis> <publish-batch|publish-single|publish-consume-ack>
//!     --redis-url URL --prefix KEYPREFIX --events N --payload BYTES --batch N
//!     --concurrency N --publishers N
//! ```
//!
//! Output: `{"events", "seconds", "latency_us": {"p50","p90","p99","max"},
//! "cpu_seconds", "peak_rss_kib", "note"}` or `{"unsupported": "why"}`.
//! CPU and RSS are this process's (`/proc/self/stat`, `VmHWM`), over the
//! timed part. Payloads are the same JSON `data` eventbus sends, with the
//! send time (µs since the Unix epoch) inside so the consumer can measure
//! publish → handler latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Clone)]
struct Opts {
    redis_url: String,
    prefix: String,
    events: u64,
    payload: usize,
    batch: usize,
    concurrency: usize,
    publishers: usize,
}

fn parse_args() -> Result<(String, String, Opts), String> {
    let mut args = std::env::args().skip(1);
    let peer = args.next().ok_or("missing peer")?;
    let scenario = args.next().ok_or("missing scenario")?;
    let mut o = Opts {
        redis_url: "redis://127.0.0.1:6379".into(),
        prefix: "peers".into(),
        events: 100_000,
        payload: 200,
        batch: 1000,
        concurrency: 512,
        publishers: 50,
    };
    while let Some(flag) = args.next() {
        let v = args.next().ok_or(format!("{flag} needs a value"))?;
        let num = || v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--redis-url" => o.redis_url = v.clone(),
            "--prefix" => o.prefix = v.clone(),
            "--events" => o.events = num()?,
            "--payload" => o.payload = num()? as usize,
            "--batch" => o.batch = num()? as usize,
            "--concurrency" => o.concurrency = num()? as usize,
            "--publishers" => o.publishers = num()? as usize,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok((peer, scenario, o))
}

/// The job / message body: the same JSON eventbus puts in `data`, plus the send time.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    work_item_id: String,
    seq: u64,
    sent_us: u64,
    pad: String,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn job(seq: u64, payload: usize) -> Job {
    Job {
        work_item_id: format!("wi-{}", seq % 10_000),
        seq,
        sent_us: now_us(),
        pad: "x".repeat(payload.saturating_sub(75)),
    }
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

fn peak_rss_kib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Latencies in µs, collected from many tasks.
#[derive(Default)]
struct Latencies(Mutex<Vec<u64>>);

impl Latencies {
    fn record(&self, us: u64) {
        self.0.lock().expect("latency lock").push(us);
    }

    fn summary(&self) -> serde_json::Value {
        let mut v = self.0.lock().expect("latency lock").clone();
        if v.is_empty() {
            return serde_json::Value::Null;
        }
        v.sort_unstable();
        let q = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
        json!({"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": v[v.len() - 1]})
    }
}

/// A timed section: wall clock and CPU of this process.
struct Clock {
    started: Instant,
    cpu: f64,
}

impl Clock {
    fn start() -> Self {
        reset_peak_rss();
        Clock {
            started: Instant::now(),
            cpu: cpu_seconds(),
        }
    }

    fn report(&self, events: u64, latency: &Latencies, note: &str) -> serde_json::Value {
        json!({
            "events": events,
            "seconds": self.started.elapsed().as_secs_f64(),
            "latency_us": latency.summary(),
            "cpu_seconds": cpu_seconds() - self.cpu,
            "peak_rss_kib": peak_rss_kib(),
            "note": note,
        })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

mod omni {
    //! omniqueue's Redis backend with `use_redis_streams` (its default):
    //! one stream, one consumer group, XADD per send, XREADGROUP + XACK.

    use super::*;
    use omniqueue::backends::redis::{RedisBackend, RedisConfig};

    fn config(o: &Opts, consumer: &str) -> RedisConfig {
        RedisConfig {
            dsn: o.redis_url.clone(),
            max_connections: (o.publishers.max(8)) as u16,
            reinsert_on_nack: false,
            queue_key: format!("{}:queue", o.prefix),
            delayed_queue_key: format!("{}:delayed", o.prefix),
            delayed_lock_key: format!("{}:delayed_lock", o.prefix),
            consumer_group: "bench".into(),
            consumer_name: consumer.into(),
            payload_key: "payload".into(),
            ack_deadline_ms: 60_000,
            dlq_config: None,
            sentinel_config: None,
        }
    }

    /// omniqueue does not create the consumer group itself.
    async fn create_group(o: &Opts) -> Result<(), BoxError> {
        let client = redis::Client::open(o.redis_url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(format!("{}:queue", o.prefix))
            .arg("bench")
            .arg("$")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match r {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn send_all(o: &Opts, lat: Option<Arc<Latencies>>) -> Result<(), BoxError> {
        let producer = RedisBackend::builder(config(o, "producer"))
            .build_producer()
            .await?;
        let producer = Arc::new(producer);
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..o.publishers.max(1) {
            let (producer, next, o, lat) = (producer.clone(), next.clone(), o.clone(), lat.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if seq >= o.events {
                        return Ok::<(), BoxError>(());
                    }
                    let t = Instant::now();
                    producer.send_serde_json(&job(seq, o.payload)).await?;
                    if let Some(l) = &lat {
                        l.record(t.elapsed().as_micros() as u64);
                    }
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok(())
    }

    pub(crate) async fn run(scenario: &str, o: &Opts) -> Result<serde_json::Value, BoxError> {
        match scenario {
            "publish-batch" => Ok(json!({"unsupported":
                "no batch publish API (one XADD per send); see the one-at-a-time row"})),
            "publish-single" => {
                create_group(o).await?;
                let lat = Arc::new(Latencies::default());
                let clock = Clock::start();
                send_all(o, Some(lat.clone())).await?;
                Ok(clock.report(
                    o.events,
                    &lat,
                    &format!("send_serde_json, {} tasks at once", o.publishers),
                ))
            }
            "publish-consume-ack" => {
                create_group(o).await?;
                let lat = Arc::new(Latencies::default());
                let handled = Arc::new(AtomicU64::new(0));
                // Consumers: `concurrency` split over 4 tasks, each
                // receiving up to that many at once and acking each.
                let per_task = (o.concurrency / 4).max(1);
                let mut consumers = Vec::new();
                for c in 0..4 {
                    let mut consumer = RedisBackend::builder(config(o, &format!("c{c}")))
                        .build_consumer()
                        .await?;
                    let (lat, handled, total) = (lat.clone(), handled.clone(), o.events);
                    consumers.push(tokio::spawn(async move {
                        while handled.load(Ordering::Relaxed) < total {
                            let batch = consumer
                                .receive_all(per_task, Duration::from_millis(100))
                                .await?;
                            let acks = batch.into_iter().map(|d| {
                                let (lat, handled) = (lat.clone(), handled.clone());
                                async move {
                                    if let Ok(Some(j)) = d.payload_serde_json::<Job>() {
                                        lat.record(now_us().saturating_sub(j.sent_us));
                                    }
                                    d.ack().await.map_err(|(e, _)| e)?;
                                    handled.fetch_add(1, Ordering::Relaxed);
                                    Ok::<(), omniqueue::QueueError>(())
                                }
                            });
                            for r in futures::future::join_all(acks).await {
                                r?;
                            }
                        }
                        Ok::<(), BoxError>(())
                    }));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                let clock = Clock::start();
                send_all(o, None).await?;
                for c in consumers {
                    c.await??;
                }
                Ok(clock.report(
                    o.events,
                    &lat,
                    &format!(
                        "4 consumers × receive_all({per_task}) + ack each; published with {} concurrent sends",
                        o.publishers
                    ),
                ))
            }
            other => Err(format!("unknown scenario {other}").into()),
        }
    }
}

mod apalis_peer {
    //! apalis 1.0 with apalis-redis: jobs in Redis lists and hashes, moved
    //! by Lua scripts; a worker polls in batches and runs handlers in
    //! parallel (`parallelize(tokio::spawn)`).

    use super::*;
    use apalis::prelude::*;
    use apalis_redis::{Config, RedisStorage};

    /// The most jobs the consume scenario queues at once.
    const APALIS_MAX_QUEUED: u64 = 5000;

    async fn storage(o: &Opts) -> Result<RedisStorage<Job>, BoxError> {
        let conn = apalis_redis::connect(o.redis_url.as_str()).await?;
        // An idle worker sleeps until its next heartbeat (default 30 s)
        // before fetching again.
        let config = Config::default()
            .queue(format!("{}:jobs", o.prefix))
            .batch_size(o.batch.min(o.concurrency).max(1));
        Ok(RedisStorage::new(conn).with_config(config))
    }

    async fn push_single(o: &Opts, lat: Option<Arc<Latencies>>) -> Result<(), BoxError> {
        let base = storage(o).await?;
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..o.publishers.max(1) {
            let (mut s, next, o, lat) = (base.clone(), next.clone(), o.clone(), lat.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if seq >= o.events {
                        return Ok::<(), BoxError>(());
                    }
                    let t = Instant::now();
                    s.push(job(seq, o.payload))
                        .await
                        .map_err(|e| e.to_string())?;
                    if let Some(l) = &lat {
                        l.record(t.elapsed().as_micros() as u64);
                    }
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok(())
    }

    async fn push_bulk(o: &Opts, lat: Option<&Latencies>) -> Result<(), BoxError> {
        let mut s = storage(o).await?;
        let mut seq = 0;
        while seq < o.events {
            let end = (seq + o.batch as u64).min(o.events);
            let jobs: Vec<Job> = (seq..end).map(|i| job(i, o.payload)).collect();
            let t = Instant::now();
            s.push_bulk(jobs).await.map_err(|e| e.to_string())?;
            let us = t.elapsed().as_micros() as u64;
            if let Some(lat) = lat {
                for _ in seq..end {
                    lat.record(us);
                }
            }
            seq = end;
        }
        Ok(())
    }

    pub(crate) async fn run(scenario: &str, o: &Opts) -> Result<serde_json::Value, BoxError> {
        match scenario {
            "publish-batch" => {
                let lat = Latencies::default();
                let clock = Clock::start();
                push_bulk(o, Some(&lat)).await?;
                Ok(clock.report(
                    o.events,
                    &lat,
                    &format!("push_bulk of {} (one batch at a time)", o.batch),
                ))
            }
            "publish-single" => {
                let lat = Arc::new(Latencies::default());
                let clock = Clock::start();
                push_single(o, Some(lat.clone())).await?;
                Ok(clock.report(
                    o.events,
                    &lat,
                    &format!("push, {} tasks at once", o.publishers),
                ))
            }
            "publish-consume-ack" => {
                // apalis-redis 1.0's fetch script fails once about 8,000
                // jobs are queued (Lua: "too many results to unpack").
                let o = &Opts {
                    events: o.events.min(APALIS_MAX_QUEUED),
                    ..o.clone()
                };
                let lat = Arc::new(Latencies::default());
                let handled = Arc::new(AtomicU64::new(0));
                let total = o.events;
                let backend = storage(o).await?;
                let (l, h) = (lat.clone(), handled.clone());
                let worker = WorkerBuilder::new("bench-worker")
                    .backend(backend)
                    .parallelize(tokio::spawn)
                    .build(move |j: Job, wrk: WorkerContext| {
                        let (l, h) = (l.clone(), h.clone());
                        async move {
                            l.record(now_us().saturating_sub(j.sent_us));
                            if h.fetch_add(1, Ordering::Relaxed) + 1 >= total {
                                let _ = wrk.stop();
                            }
                            Ok::<(), BoxDynError>(())
                        }
                    });
                // Pushing while the worker runs stalls it (it parks after an
                // empty fetch and is not woken by pushes from another
                // connection): push first, then time the worker alone.
                push_bulk(o, None).await?;
                let clock = Clock::start();
                let running = tokio::spawn(worker.run());
                let deadline = Instant::now() + Duration::from_secs(600);
                let mut last = (0, Instant::now());
                while handled.load(Ordering::Relaxed) < total && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let now = handled.load(Ordering::Relaxed);
                    if now != last.0 {
                        last = (now, Instant::now());
                    } else if running.is_finished() || last.1.elapsed() > Duration::from_secs(30) {
                        let why = if running.is_finished() {
                            format!("{:?}", running.await)
                        } else {
                            "no error".to_owned()
                        };
                        return Err(format!(
                            "the worker stopped making progress at {now} of {total} jobs ({why})"
                        )
                        .into());
                    }
                }
                let report = clock.report(
                    handled.load(Ordering::Relaxed),
                    &lat,
                    &format!(
                        "consume+ack only, {2} jobs: pushed (push_bulk of {1}) before the worker started, because its fetch fails with ~8,000 queued and an idle worker waits for its next heartbeat; worker fetching batches of {0}, parallelize(tokio::spawn)",
                        o.batch.min(o.concurrency).max(1),
                        o.batch,
                        o.events
                    ),
                );
                running.abort();
                Ok(report)
            }
            other => Err(format!("unknown scenario {other}").into()),
        }
    }
}

#[tokio::main]
async fn main() {
    let (peer, scenario, opts) = match parse_args() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("eventbus-peers: {e}");
            std::process::exit(2);
        }
    };
    let result = match peer.as_str() {
        "omniqueue" => omni::run(&scenario, &opts).await,
        "apalis" => apalis_peer::run(&scenario, &opts).await,
        other => Err(format!("unknown peer {other}").into()),
    };
    match result {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("eventbus-peers: {peer} {scenario}: {e}");
            std::process::exit(1);
        }
    }
}
