//! The engine beneath [`Consumer`](crate::Consumer): the two modes and
//! what they share.
//!
//! - `entry`: the per-entry sequence both modes run (decode, deliver through
//!   the handler stack, then acknowledge, retry or dead-letter, counting
//!   each step in [`ConsumerStats`]); each mode supplies only how it
//!   acknowledges, waits for a retry and guards an attempt.
//! - `failure`: the retry-or-dead-letter decision and dead-letter writes.
//! - `ordered`: partitions leased to the live members of the group.
//! - `unordered`: competing consumers (reader, claimer, acker).
//! - `config`: [`ConsumerConfig`] and [`ConsumerMode`].
//!
//! Imports run one way: `consumer` (the public front) → `runtime` →
//! `deadletter`, `connection`, `reply`, `handler`.

mod config;
pub(crate) mod entry;
pub(crate) mod failure;
pub(crate) mod ordered;
pub(crate) mod unordered;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use self::config::{ConsumerConfig, DEFAULT_SCHEDULED_RETRY_AFTER};
pub use self::ordered::ConsumerMode;
pub(crate) use self::unordered::REMOVE_STALE_CONSUMERS;
use crate::connection::RedisConn;
use crate::topology::Topology;
use crate::Result;

/// Counters of what a consumer did, shared while it runs.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Entries handed to the handler (including redeliveries).
    pub delivered: AtomicU64,
    /// Handler successes.
    pub handled: AtomicU64,
    /// Handler failures (entry left pending).
    pub failed: AtomicU64,
    /// Entries that did not decode: dead-lettered (as
    /// `_invalid.undecodable`), then acknowledged.
    pub invalid: AtomicU64,
    /// Events refused as invalid (a handler error of class
    /// [`ErrorClass::Invalid`](crate::ErrorClass::Invalid), e.g. from
    /// [`Validating`](crate::catalog::Validating) when an event fails its
    /// schema): dead-lettered at once, then acknowledged.
    pub rejected: AtomicU64,
    /// Entries claimed from idle pending lists.
    pub claimed: AtomicU64,
    /// Entries acknowledged.
    pub acked: AtomicU64,
    /// Failed attempts that will be tried again.
    pub retried: AtomicU64,
    /// Events dead-lettered (then acknowledged).
    pub dead_lettered: AtomicU64,
}

impl ConsumerStats {
    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The `topic` of deliveries read from a group's replay stream.
pub(crate) const REPLAY_TOPIC: &str = "_replay";

/// Every partition stream of the consumer's topics with its `(topic,
/// partition)`, after creating the group on each and registering the topics.
pub(crate) async fn prepare_streams(
    conn: &RedisConn,
    topology: &Topology,
    config: &ConsumerConfig,
) -> Result<Vec<(String, (String, u32))>> {
    let mut streams = Vec::new();
    for topic in &config.topics {
        for p in 0..topology.partitions() {
            streams.push((topology.stream_key(topic, p), (topic.clone(), p)));
        }
    }
    let keys: Vec<String> = streams.iter().map(|(s, _)| s.clone()).collect();
    ensure_groups(conn, &keys, &config.group).await?;
    let _: () = redis::cmd("SADD")
        .arg(topology.topics_key())
        .arg(&config.topics)
        .query_async(&mut conn.clone())
        .await?;
    Ok(streams)
}

/// `XREADGROUP ... BLOCK` for entries never delivered to the group (`>`).
pub(crate) fn read_new_cmd(
    group: &str,
    consumer: &str,
    count: usize,
    block: Duration,
    streams: &[String],
) -> redis::Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(block.as_millis() as u64)
        .arg("STREAMS")
        .arg(streams);
    for _ in streams {
        cmd.arg(">");
    }
    cmd
}

/// Creates the group on each stream (and the stream itself) if missing.
/// Idempotent. Groups start at the beginning of the stream (`0`), so a group
/// recreated after a Redis restart without persistence misses nothing that
/// was published after the restart.
pub(crate) async fn ensure_groups(conn: &RedisConn, streams: &[String], group: &str) -> Result<()> {
    let results = futures::future::join_all(streams.iter().map(|s| {
        let mut c = conn.clone();
        async move {
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(s)
                .arg(group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async::<()>(&mut c)
                .await
        }
    }))
    .await;
    for r in results {
        match r {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
