//! The scheduler: moves due events from their partition's sorted set to
//! the partition's stream.
//!
//! Each round asks the namespace's hint which streams have something due
//! (by the server's clock) and runs the move script ([`scripts::MOVE`]) on
//! each until nothing due is left. The script is atomic and removes what it
//! adds, so any number of schedulers may run at once (one in every `relay`
//! and `serve`): each event is moved exactly once, and a scheduler killed at
//! any point loses nothing (a script runs whole or not at all; with AOF
//! its effects are one `MULTI`/`EXEC` in the log).
//!
//! After a stream's move the hint is set to its next due time (or removed),
//! then the set is read again and the hint lowered (`ZADD LT`) to what it
//! holds: a publisher that scheduled meanwhile lowered the hint before or
//! after that write, and either way the event is seen. A periodic sweep of
//! every partition repairs a hint lost to a crash between the two steps and
//! refreshes the scheduled-count gauge.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use tokio_util::sync::CancellationToken;

use super::{all_streams, events_key, hint_key, scheduled_key, scripts, unreadable_key};
use crate::connection::{backoff, RedisConn, RedisConnector, SlotPipeline};
use crate::topology::Topology;
use crate::{Error, Result};

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Events moved per script call. Default 500.
    pub batch: usize,
    /// Pause between rounds (the bound on lateness when idle). Default 10 ms.
    pub poll: Duration,
    /// How often every partition is swept (hint repair, count gauge).
    /// Default 10 s.
    pub sweep_every: Duration,
    /// Approximate cap on stream length, as the publisher's `max_len`.
    pub max_len: Option<usize>,
    /// Only these streams (a consumer's own replay stream, for its
    /// scheduled retries: its Redis user may add entries there and nowhere
    /// else); `None` (the default): every stream of the namespace.
    pub only: Option<Vec<String>>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            batch: 500,
            poll: Duration::from_millis(10),
            sweep_every: Duration::from_secs(10),
            max_len: None,
            only: None,
        }
    }
}

impl SchedulerConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 || self.batch > 10_000 {
            return Err(Error::Config("scheduler batch must be 1..=10000".into()));
        }
        if self.poll.is_zero() || self.sweep_every.is_zero() {
            return Err(Error::Config(
                "scheduler poll and sweep intervals must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Counters of a scheduler.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Events moved to their streams.
    pub moved: AtomicU64,
    /// Scheduled entries that could not be read (set aside).
    pub unreadable: AtomicU64,
    /// Failed rounds.
    pub errors: AtomicU64,
    /// Events scheduled at the last sweep.
    pub scheduled: AtomicU64,
}

/// Moves due events to their streams. See the module docs.
#[derive(Debug, Clone)]
pub struct Scheduler {
    conn: RedisConn,
    topology: Topology,
    config: SchedulerConfig,
    stats: Arc<SchedulerStats>,
}

static MOVE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(scripts::MOVE));
static DUE: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(scripts::DUE_STREAMS));

type MoveReply = (i64, String, Vec<String>, u64, String);

impl Scheduler {
    /// A scheduler on the shared connection of `connector`.
    pub async fn connect(
        connector: &RedisConnector,
        topology: Topology,
        config: SchedulerConfig,
    ) -> Result<Self> {
        config.validate()?;
        Ok(Scheduler {
            conn: connector.shared().await?,
            topology,
            config,
            stats: Arc::default(),
        })
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<SchedulerStats> {
        self.stats.clone()
    }

    /// One round: moves every event due now. Returns how many were moved.
    pub async fn tick(&self) -> Result<usize> {
        let (_, streams): (i64, Vec<String>) = DUE
            .key(hint_key(&self.topology))
            .arg(1000)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut moved = 0;
        for stream in streams {
            if let Some(only) = &self.config.only {
                if !only.contains(&stream) {
                    continue;
                }
            }
            moved += self.move_stream(&stream).await?;
        }
        Ok(moved)
    }

    /// Moves the due events of one stream, batch after batch.
    async fn move_stream(&self, stream: &str) -> Result<usize> {
        let max_len = self
            .config
            .max_len
            .map(|n| n.to_string())
            .unwrap_or_default();
        let mut total = 0;
        loop {
            let (now, next, moved, unreadable, err): MoveReply = MOVE
                .key(scheduled_key(stream))
                .key(events_key(stream))
                .key(stream)
                .key(unreadable_key(stream))
                .arg(self.config.batch)
                .arg(&max_len)
                .invoke_async(&mut self.conn.clone())
                .await?;
            let n = moved.len() / 3;
            for entry in moved.chunks_exact(3) {
                let due = entry[1].parse::<f64>().unwrap_or(now as f64);
                let late = ((now as f64 - due) / 1000.0).max(0.0);
                metrics::histogram!("eventbus_scheduled_lateness_seconds").record(late);
            }
            metrics::counter!("eventbus_scheduled_moved_total").increment(n as u64);
            self.stats.moved.fetch_add(n as u64, Ordering::Relaxed);
            total += n;
            if unreadable > 0 {
                self.stats
                    .unreadable
                    .fetch_add(unreadable, Ordering::Relaxed);
                tracing::error!(
                    stream,
                    unreadable,
                    "scheduled entries could not be read; kept in {} and skipped",
                    unreadable_key(stream)
                );
            }
            if !err.is_empty() {
                return Err(Error::ScheduleRefused {
                    stream: stream.to_owned(),
                    reason: err,
                });
            }
            if n + (unreadable as usize) < self.config.batch {
                self.settle(stream, next.parse::<f64>().ok()).await?;
                return Ok(total);
            }
        }
    }

    /// Sets the hint of `stream` to `next`, then lowers it to what the set
    /// holds now (see the module docs).
    async fn settle(&self, stream: &str, next: Option<f64>) -> Result<()> {
        let hint = hint_key(&self.topology);
        let mut conn = self.conn.clone();
        match next {
            Some(due) => {
                redis::cmd("ZADD")
                    .arg(&hint)
                    .arg(due)
                    .arg(stream)
                    .query_async::<()>(&mut conn)
                    .await?
            }
            None => {
                redis::cmd("ZREM")
                    .arg(&hint)
                    .arg(stream)
                    .query_async::<()>(&mut conn)
                    .await?
            }
        }
        let first: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(scheduled_key(stream))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        if let Some((_, due)) = first.first() {
            redis::cmd("ZADD")
                .arg(&hint)
                .arg("LT")
                .arg(*due)
                .arg(stream)
                .query_async::<()>(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// Reads every partition's earliest due time into the hint and counts
    /// the scheduled events (gauge `eventbus_scheduled_events`). Returns the count.
    pub async fn sweep(&self) -> Result<u64> {
        let streams = match &self.config.only {
            Some(only) => only.iter().map(|s| (String::new(), 0, s.clone())).collect(),
            None => all_streams(&self.conn, &self.topology).await?,
        };
        if streams.is_empty() {
            return Ok(0);
        }
        let mut pipe = SlotPipeline::new(&self.conn);
        for (_, _, stream) in &streams {
            let mut card = redis::cmd("ZCARD");
            card.arg(scheduled_key(stream));
            pipe.add(stream, card);
            let mut first = redis::cmd("ZRANGE");
            first
                .arg(scheduled_key(stream))
                .arg(0)
                .arg(0)
                .arg("WITHSCORES");
            pipe.add(stream, first);
        }
        let replies: Vec<redis::Value> = pipe.query(&self.conn).await?;
        let mut total = 0u64;
        let mut earliest = BTreeMap::new();
        for ((_, _, stream), pair) in streams.iter().zip(replies.chunks_exact(2)) {
            total += redis::from_redis_value_ref::<u64>(&pair[0]).unwrap_or(0);
            let first: Vec<(String, f64)> =
                redis::from_redis_value_ref(&pair[1]).unwrap_or_default();
            if let Some((_, due)) = first.first() {
                earliest.insert(stream.clone(), *due as i64);
            }
        }
        super::lower_hints(&self.conn, &self.topology, &earliest).await?;
        self.stats.scheduled.store(total, Ordering::Relaxed);
        if self.config.only.is_none() {
            metrics::gauge!("eventbus_scheduled_events").set(total as f64);
        }
        Ok(total)
    }

    /// Runs until `shutdown` is cancelled. Shutdown: the round in progress
    /// finishes (each move is one atomic script), then the loop stops.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        tracing::info!(namespace = %self.topology.namespace(), "scheduler started");
        let mut failures = 0u32;
        let mut last_sweep: Option<tokio::time::Instant> = None;
        while !shutdown.is_cancelled() {
            if last_sweep.is_none_or(|t| t.elapsed() >= self.config.sweep_every) {
                if let Err(e) = self.sweep().await {
                    tracing::warn!(error = %e, "scheduler sweep failed");
                }
                last_sweep = Some(tokio::time::Instant::now());
            }
            let pause = match self.tick().await {
                Ok(_) => {
                    failures = 0;
                    self.config.poll
                }
                Err(e) => {
                    failures += 1;
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    let delay =
                        backoff(failures, Duration::from_millis(100), Duration::from_secs(5));
                    tracing::warn!(error = %e, failures, ?delay, "scheduler round failed; retrying");
                    delay
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!("scheduler stopped");
        Ok(())
    }
}
