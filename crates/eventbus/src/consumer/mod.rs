//! The consumer-group runtime.
//!
//! In [`ConsumerMode::Ordered`] (the default) [`Consumer::run`] hands over to
//! `crate::ordered`: partitions are leased to the live members of the group.
//! The rest of this module is [`ConsumerMode::Unordered`], competing
//! consumers.
//!
//! An unordered [`Consumer`] runs three kinds of work, all owned by [`Consumer::run`]:
//!
//! - the **reader** (on the calling task) issues `XREADGROUP ... BLOCK` over
//!   every partition stream of its topics, on a dedicated connection so the
//!   blocking read never delays other commands;
//! - the **claimer** task periodically runs `XAUTOCLAIM` on each stream,
//!   following the cursor to the end, so entries left pending by a crashed or
//!   stalled consumer (or by a failed handler) are delivered again; it also
//!   removes consumers that have been idle for long and own no pending entries;
//! - the **acker** task collects acknowledgements and sends them as one
//!   pipelined `XACK` per stream per batch.
//!
//! Handlers run as tasks limited by a semaphore (`concurrency`). An entry that
//! does not decode is reported, counted and acknowledged past; it never stops
//! the consumer. A handler error leaves the entry pending: it is claimed
//! again once idle for `claim_idle`.
//!
//! Shutdown handshake: when the token is cancelled the reader finishes its
//! current read, dispatches what it got and stops; the claimer stops; the
//! runtime then waits up to `shutdown_timeout` for in-flight handlers, drops
//! its ack sender so the acker flushes what is queued and ends, and returns.
//! Handlers still running at the deadline are abandoned: their entries stay
//! pending and are claimed by another consumer.
//!
//! Files: `config` holds [`ConsumerConfig`]; `unordered` the unordered
//! runtime (reader and dispatch); `claimer` and `acker` its background
//! tasks.

mod acker;
mod claimer;
mod config;
mod unordered;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub(crate) use self::claimer::REMOVE_STALE_CONSUMERS;
pub use self::config::ConsumerConfig;
use self::unordered::run_unordered;
use crate::connection::{RedisConn, RedisConnector};
use crate::deadletter::DeadLetterWriter;
use crate::failure::FailureHandling;
use crate::handler::Handler;
use crate::ordered::ConsumerMode;
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
    /// Entries that did not decode and were acknowledged past.
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

/// A consumer in a group. Build with [`Consumer::new`], then [`Consumer::run`].
pub struct Consumer<H> {
    connector: RedisConnector,
    topology: Topology,
    config: ConsumerConfig,
    name: String,
    handler: H,
    stats: Arc<ConsumerStats>,
    dead_letter_store: Option<(sqlx::PgPool, crate::pg::DbSchema)>,
}

impl<H> std::fmt::Debug for Consumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish()
    }
}

/// A unique consumer name for this process: `<host>-<pid>-<random>`.
pub fn unique_consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &rand[..8])
}

/// The `topic` of deliveries read from a group's replay stream.
pub(crate) const REPLAY_TOPIC: &str = "_replay";

impl<H: Handler> Consumer<H> {
    /// A consumer; checks the config.
    pub fn new(
        connector: RedisConnector,
        topology: Topology,
        config: ConsumerConfig,
        handler: H,
    ) -> Result<Self> {
        config.validate()?;
        let name = config
            .consumer_name
            .clone()
            .unwrap_or_else(unique_consumer_name);
        Ok(Consumer {
            connector,
            topology,
            config,
            name,
            handler,
            stats: Arc::default(),
            dead_letter_store: None,
        })
    }

    /// Also records dead letters in PostgreSQL (`eventbus_dead_letters` in
    /// `schema`), so they can be listed, replayed and discarded. Without it
    /// they go to the Redis stream `<namespace>:dead` only.
    pub fn with_dead_letter_store(
        mut self,
        pool: sqlx::PgPool,
        schema: crate::pg::DbSchema,
    ) -> Self {
        self.dead_letter_store = Some((pool, schema));
        self
    }

    /// This consumer's name in its group.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<ConsumerStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` is cancelled, then drains (see the module docs).
    /// Fails early if Redis is unreachable at start, or on an error that
    /// retrying cannot fix (e.g. a key of the wrong type).
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let Consumer {
            connector,
            topology,
            config,
            name,
            handler,
            stats,
            dead_letter_store,
        } = self;
        let conn = connector.shared().await?;
        // The trimmer lives as long as this run (a child token, dropped
        // with the guard, never cancels the caller's token).
        let trimming = shutdown.child_token();
        let _stop_trimming = trimming.clone().drop_guard();
        if let Some(trim) = config.trim {
            let trimmer = crate::retention::Trimmer::new(conn.clone(), topology.clone(), trim)
                .topics(config.topics.iter().cloned());
            tokio::spawn(trimmer.run(trimming));
        }
        let failures = Arc::new(FailureHandling {
            policy: config.retry.clone(),
            writer: DeadLetterWriter::new(conn.clone(), &topology, dead_letter_store),
        });
        // Replays of this group's dead letters arrive on its own stream, read
        // by every member competitively (replays have no order to keep).
        let replay = topology.replay_stream(&config.group);
        ensure_groups(&conn, std::slice::from_ref(&replay), &config.group).await?;
        if config.mode == ConsumerMode::Ordered {
            // Partitions and replays run side by side; either ending (an
            // error) ends the other. A child token, so that this never
            // cancels the caller's token, which others may share.
            let both = shutdown.child_token();
            let handler = Arc::new(handler);
            let replays = run_unordered(
                connector.clone(),
                conn.clone(),
                config.clone(),
                name.clone(),
                crate::ordered::park::ParkedReplays::new(
                    handler.clone(),
                    &topology,
                    config.park_keys.then(|| config.group.clone()),
                    conn.clone(),
                ),
                stats.clone(),
                failures.clone(),
                vec![(replay, (REPLAY_TOPIC.to_owned(), 0))],
                both.clone(),
            );
            let partitions = crate::ordered::run(
                connector,
                conn,
                topology,
                config,
                name,
                handler,
                stats,
                failures,
                both.clone(),
            );
            let (a, b) = tokio::join!(
                cancel_when_done(partitions, &both),
                cancel_when_done(replays, &both)
            );
            return a.and(b);
        }
        let mut streams = prepare_streams(&conn, &topology, &config).await?;
        streams.push((replay, (REPLAY_TOPIC.to_owned(), 0)));
        run_unordered(
            connector, conn, config, name, handler, stats, failures, streams, shutdown,
        )
        .await
    }
}

/// Awaits `fut`, then cancels `token`.
async fn cancel_when_done<T>(
    fut: impl std::future::Future<Output = T>,
    token: &CancellationToken,
) -> T {
    let out = fut.await;
    token.cancel();
    out
}

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
