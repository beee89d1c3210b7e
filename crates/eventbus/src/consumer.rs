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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::connection::RedisConn;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{backoff, slot_groups, RedisConnector, SlotPipeline};
use crate::deadletter::DeadLetterWriter;
use crate::error::is_transient_redis;
use crate::failure::{delivery_counts, reclaim, touch, FailureHandling, Verdict};
use crate::handler::{Delivery, Handler};
use crate::ordered::ConsumerMode;
use crate::reply::{parse_autoclaim, parse_read, RawEntry};
use crate::topology::Topology;
use crate::{Error, Result};

/// Consumer settings. `group` and `topics` are required; the rest have defaults.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The consumer group (one per service).
    pub group: String,
    /// The topics to consume (every partition of each).
    pub topics: Vec<String>,
    /// This consumer's name in the group. Default: `<host>-<pid>-<random>`,
    /// unique per process.
    pub consumer_name: Option<String>,
    /// Handlers running at once. Default 64.
    pub concurrency: usize,
    /// Entries asked for per read (`COUNT`). Default 256.
    pub read_count: usize,
    /// How long a read waits for new entries (`BLOCK`). Default 2 s.
    pub block: Duration,
    /// Pending entries idle longer than this are claimed (`XAUTOCLAIM`).
    /// Must exceed the longest handler run. Default 30 s.
    pub claim_idle: Duration,
    /// How often to look for idle pending entries. Default 5 s.
    pub claim_interval: Duration,
    /// Most acknowledgements sent in one batch. Default 1024.
    pub ack_batch: usize,
    /// Consumers idle longer than this with nothing pending are removed
    /// from the group. Default 1 h.
    pub stale_consumer_after: Duration,
    /// How often to look for stale consumers. Default 60 s.
    pub stale_check_interval: Duration,
    /// How long shutdown waits for in-flight handlers. Default 30 s.
    pub shutdown_timeout: Duration,
    /// Ordered (partitions leased to members, the default) or unordered
    /// (competing consumers).
    pub mode: ConsumerMode,
    /// Ordered mode: how often a member heartbeats and renews its leases.
    /// Default 1 s.
    pub heartbeat_interval: Duration,
    /// Ordered mode: a member silent for longer is dead and its leases
    /// expire. More than twice `heartbeat_interval`. Default 10 s.
    pub session_timeout: Duration,
    /// Ordered mode: partitions handling an entry at the same moment.
    /// Default `None`: every owned partition.
    pub max_partitions_in_flight: Option<usize>,
    /// Ordered mode, static membership (Kafka's `group.instance.id`): on
    /// shutdown the member finishes its running handlers but keeps its
    /// leases and its place in the group, so a restart with the same
    /// `consumer_name` within `session_timeout` resumes exactly its
    /// partitions without a rebalance; if it does not come back, they move
    /// when the session times out. Default false: a member leaving releases
    /// its partitions at once.
    pub static_membership: bool,
    /// Attempts, backoff and attempt timeout before an event is
    /// dead-lettered (both modes).
    pub retry: crate::retry::RetryPolicy,
    /// Ordered mode, park mode: while a key has an event in dead letters,
    /// its later events are dead-lettered unhandled (class `parked`) until
    /// an operator replays or discards the dead letters, so the key's order
    /// is never broken; other keys flow. Default false. See
    /// `docs/dead-letters.md` for the trade-off.
    pub park_keys: bool,
}

impl ConsumerConfig {
    /// A config with defaults for the given group and topics.
    pub fn new(
        group: impl Into<String>,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        ConsumerConfig {
            group: group.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            consumer_name: None,
            concurrency: 64,
            read_count: 256,
            block: Duration::from_secs(2),
            claim_idle: Duration::from_secs(30),
            claim_interval: Duration::from_secs(5),
            ack_batch: 1024,
            stale_consumer_after: Duration::from_secs(3600),
            stale_check_interval: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            mode: ConsumerMode::Ordered,
            heartbeat_interval: Duration::from_secs(1),
            session_timeout: Duration::from_secs(10),
            max_partitions_in_flight: None,
            static_membership: false,
            retry: crate::retry::RetryPolicy::default(),
            park_keys: false,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_owned()));
        if self.group.is_empty()
            || self
                .group
                .chars()
                .any(|c| c.is_whitespace() || c == '{' || c == '}')
        {
            return bad("group must be non-empty and without whitespace or braces");
        }
        if self
            .consumer_name
            .as_deref()
            .is_some_and(|n| n.is_empty() || n.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return bad("consumer name (member id) must be non-empty and without whitespace");
        }
        if self.topics.is_empty() {
            return bad("at least one topic is needed");
        }
        if self.concurrency == 0 || self.read_count == 0 || self.ack_batch == 0 {
            return bad("concurrency, read_count and ack_batch must be positive");
        }
        if self.block < Duration::from_millis(1) {
            return bad("block must be at least 1 ms");
        }
        if self.claim_idle < Duration::from_millis(1) || self.claim_interval.is_zero() {
            return bad("claim_idle and claim_interval must be positive");
        }
        if self.heartbeat_interval < Duration::from_millis(10) {
            return bad("heartbeat_interval must be at least 10 ms");
        }
        if self.session_timeout <= self.heartbeat_interval * 2 {
            return bad("session_timeout must be more than twice heartbeat_interval");
        }
        if self.max_partitions_in_flight == Some(0) {
            return bad("max_partitions_in_flight must be positive when set");
        }
        if self.park_keys && self.mode != ConsumerMode::Ordered {
            return bad("park_keys (park mode) needs ordered mode: unordered consumers keep no per-key order to protect");
        }
        self.retry.validate()?;
        Ok(())
    }
}

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

struct Shared<H> {
    handler: H,
    group: String,
    name: String,
    streams: Vec<String>,
    /// (topic, partition) per stream index.
    routes: Vec<(String, u32)>,
    semaphore: Arc<Semaphore>,
    inflight: Mutex<HashSet<(usize, String)>>,
    ack_tx: mpsc::UnboundedSender<(usize, String)>,
    stats: Arc<ConsumerStats>,
    tracker: TaskTracker,
    failures: Arc<FailureHandling>,
    conn: RedisConn,
    claim_idle: Duration,
    /// Cancelled on shutdown, and when the runtime is dropped.
    alive: CancellationToken,
}

impl<H> Shared<H> {
    /// Where entry `id` of stream `idx` was read, for its dead letter.
    fn source<'a>(&'a self, idx: usize, id: &'a str) -> crate::failure::Source<'a> {
        crate::failure::Source {
            group: &self.group,
            consumer: &self.name,
            stream: &self.streams[idx],
            partition: self.routes[idx].1,
            entry_id: id,
        }
    }
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

/// The competing-consumers runtime over `streams` (key, (topic, partition)).
#[allow(clippy::too_many_arguments)]
async fn run_unordered<H: Handler>(
    connector: RedisConnector,
    conn: RedisConn,
    config: ConsumerConfig,
    name: String,
    handler: H,
    stats: Arc<ConsumerStats>,
    failures: Arc<FailureHandling>,
    streams: Vec<(String, (String, u32))>,
    shutdown: CancellationToken,
) -> Result<()> {
    // Our own token: draining cancels it, never the caller's.
    let shutdown = shutdown.child_token();
    let (streams, routes): (Vec<String>, Vec<(String, u32)>) = streams.into_iter().unzip();

    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        handler,
        group: config.group.clone(),
        name: name.clone(),
        streams: streams.clone(),
        routes,
        semaphore: Arc::new(Semaphore::new(config.concurrency)),
        inflight: Mutex::new(HashSet::new()),
        ack_tx,
        stats: stats.clone(),
        tracker: TaskTracker::new(),
        failures,
        conn: conn.clone(),
        claim_idle: config.claim_idle,
        alive: shutdown.child_token(),
    });
    // Tasks that outlive this function (a retry waiting out its backoff)
    // stop when it ends, even when it is dropped rather than shut down.
    let _alive = shared.alive.clone().drop_guard();
    let acker = tokio::spawn(run_acker(
        conn.clone(),
        config.group.clone(),
        streams.clone(),
        ack_rx,
        config.ack_batch,
        stats.clone(),
    ));
    // `alive`, not `shutdown`: the claimer must also stop if this
    // runtime is dropped (aborted) rather than shut down.
    let claimer = tokio::spawn(run_claimer(
        shared.clone(),
        conn.clone(),
        config.clone(),
        shared.alive.clone(),
    ));
    tracing::info!(group = %config.group, consumer = %name, streams = streams.len(), "consumer started");

    // One blocking read over every stream on a server. On a cluster a
    // multi-stream XREADGROUP must stay in one slot, so each partition gets
    // a reader of its own, on a connection of its own.
    let readers = slot_groups(&shared.streams, conn.is_cluster())
        .into_iter()
        .map(|subset| run_reader(&shared, &connector, &conn, &config, &shutdown, subset));
    let read_result = futures::future::join_all(readers)
        .await
        .into_iter()
        .collect::<Result<Vec<()>>>()
        .map(drop);

    // Drain: no new reads or claims, wait for in-flight handlers.
    shutdown.cancel();
    let _ = claimer.await;
    shared.tracker.close();
    if tokio::time::timeout(config.shutdown_timeout, shared.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            consumer = %name,
            still_running = shared.tracker.len(),
            "shutdown deadline passed; abandoned handlers' entries stay pending and will be claimed"
        );
    }
    drop(shared);
    // The acker ends when every sender is gone; abandoned handlers may
    // still hold one, so bound the wait.
    let mut acker = acker;
    if tokio::time::timeout(Duration::from_secs(5), &mut acker)
        .await
        .is_err()
    {
        acker.abort();
    }
    tracing::info!(group = %config.group, consumer = %name, "consumer stopped");
    read_result
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

async fn run_reader<H: Handler>(
    shared: &Arc<Shared<H>>,
    connector: &RedisConnector,
    conn: &RedisConn,
    config: &ConsumerConfig,
    shutdown: &CancellationToken,
    subset: Vec<usize>,
) -> Result<()> {
    let streams: Vec<String> = subset.iter().map(|&i| shared.streams[i].clone()).collect();
    let index: HashMap<String, usize> = subset
        .iter()
        .map(|&i| (shared.streams[i].clone(), i))
        .collect();
    let mut reader: Option<RedisConn> = None;
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        // Backpressure: read only as many entries as there are free handler slots.
        let free = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = shared.semaphore.acquire() => {
                drop(permit);
                shared.semaphore.available_permits().max(1)
            }
        };
        let count = read_count_per_stream(free, config.read_count, shared.streams.len());

        let mut c = match reader.take() {
            Some(c) => c,
            None => match connector.dedicated(config.block).await {
                Ok(c) => {
                    if failures > 0 {
                        // Redis may have restarted empty: make sure groups exist.
                        if let Err(e) = ensure_groups(conn, &shared.streams, &shared.group).await {
                            tracing::warn!(error = %e, "recreating groups failed");
                        }
                    }
                    c
                }
                Err(e) => {
                    failures += 1;
                    pause_after_error(&e, failures, shutdown).await;
                    continue;
                }
            },
        };
        let cmd = read_new_cmd(&shared.group, &shared.name, count, config.block, &streams);
        // The read is not cancelled on shutdown: entries Redis hands us are
        // already ours, so we let the read finish (at most `block`) and
        // dispatch them like any other in-flight work.
        match cmd.query_async::<redis::Value>(&mut c).await {
            Ok(reply) => {
                failures = 0;
                reader = Some(c);
                for (stream, entries) in parse_read(&reply) {
                    let Some(&idx) = index.get(&stream) else {
                        continue;
                    };
                    for entry in entries {
                        dispatch(shared, idx, entry, false, 1).await;
                    }
                }
            }
            // NOGROUP: the group or stream is gone (Redis restarted without
            // persistence, or someone deleted it). UNBLOCKED: the stream was
            // deleted while we were blocked on it.
            Err(e) if matches!(e.code(), Some("NOGROUP") | Some("UNBLOCKED")) => {
                reader = Some(c);
                tracing::warn!(group = %shared.group, error = %e, "group or stream vanished; recreating");
                if let Err(e) = ensure_groups(conn, &shared.streams, &shared.group).await {
                    failures += 1;
                    pause_after_error(&e, failures, shutdown).await;
                }
            }
            Err(e) if e.code() == Some("WRONGTYPE") => return Err(e.into()),
            Err(e) => {
                // Transient or unexpected: keep the consumer alive, back off,
                // and start over on a fresh connection.
                failures += 1;
                pause_after_error(&Error::Redis(e), failures, shutdown).await;
            }
        }
    }
    Ok(())
}

/// `COUNT` for one `XREADGROUP` over `streams` streams. `COUNT` applies to
/// each stream, so asking every stream for all `free` slots could return
/// `streams × free` entries: one huge reply (slow to parse) and far more
/// than the handlers can take. Split the free slots over the streams
/// instead, at least one each.
fn read_count_per_stream(free: usize, read_count: usize, streams: usize) -> usize {
    (free.min(read_count) / streams.max(1)).max(1)
}

async fn pause_after_error(e: &Error, failures: u32, shutdown: &CancellationToken) {
    let delay = backoff(failures, Duration::from_millis(100), Duration::from_secs(5));
    tracing::warn!(error = %e, failures, ?delay, "redis read failed; retrying");
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}

/// Hands one entry to the handler (waiting for a free slot); an entry that
/// does not decode is dead-lettered as invalid. `attempt` is the entry's
/// delivery count (1 on the first delivery).
async fn dispatch<H: Handler>(
    shared: &Arc<Shared<H>>,
    idx: usize,
    entry: RawEntry,
    redelivered: bool,
    attempt: u64,
) {
    let RawEntry { id, decoded } = entry;
    let envelope = match decoded {
        Ok(e) => e,
        Err(err) => {
            shared.stats.invalid.fetch_add(1, Ordering::Relaxed);
            let written = shared
                .failures
                .dead_letter_undecodable(&shared.conn, &shared.source(idx, &id), &err.to_string())
                .await;
            match written {
                Ok(_) => {
                    shared.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    let _ = shared.ack_tx.send((idx, id));
                }
                Err(e) => tracing::error!(
                    stream = %shared.streams[idx], entry_id = %id, error = %e,
                    "could not dead-letter an undecodable entry; it stays pending"
                ),
            }
            return;
        }
    };
    if !shared
        .inflight
        .lock()
        .expect("inflight set poisoned")
        .insert((idx, id.clone()))
    {
        return; // already being handled here (claimed while in flight)
    }
    let permit = shared
        .semaphore
        .clone()
        .acquire_owned()
        .await
        .expect("semaphore never closed");
    shared.stats.delivered.fetch_add(1, Ordering::Relaxed);
    let (topic, partition) = if shared.routes[idx].0 == REPLAY_TOPIC {
        // A replay: route by the event itself, as it was first delivered.
        (
            crate::topology::topic_of(&envelope.event_type).to_owned(),
            shared.routes[idx].1,
        )
    } else {
        shared.routes[idx].clone()
    };
    let delivery = Delivery {
        envelope,
        stream: shared.streams[idx].clone(),
        topic,
        partition,
        entry_id: id.clone(),
        group: shared.group.clone(),
        consumer: shared.name.clone(),
        redelivered: redelivered || attempt > 1,
    };
    let task_shared = shared.clone();
    shared.tracker.spawn(async move {
        let s = task_shared;
        let event_id = delivery.envelope.id;
        let event_type = delivery.envelope.event_type.clone();
        let outcome = s.failures.attempt(&s.handler, delivery).await;
        drop(permit);
        let err = match outcome {
            Ok(()) => {
                s.stats.handled.fetch_add(1, Ordering::Relaxed);
                let _ = s.ack_tx.send((idx, id.clone()));
                s.inflight.lock().expect("inflight set poisoned").remove(&(idx, id));
                return;
            }
            Err(err) => err,
        };
        s.stats.failed.fetch_add(1, Ordering::Relaxed);
        match s.failures.decide(&err, attempt) {
            Verdict::DeadLetter(class) => {
                if class == crate::ErrorClass::Invalid {
                    s.stats.rejected.fetch_add(1, Ordering::Relaxed);
                }
                // The handler consumed the delivery: the dead letter reads the
                // event back from the stream (rare path; nothing copied per event).
                let written = s
                    .failures
                    .dead_letter_entry(&s.conn, &s.source(idx, &id), attempt, class, &err.message)
                    .await;
                match written {
                    Ok(_) => {
                        s.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                        let _ = s.ack_tx.send((idx, id.clone()));
                    }
                    Err(e) => tracing::error!(
                        event_id = %event_id, group = %s.group, entry_id = %id, error = %e,
                        "could not write the dead letter; the entry stays pending and is dead-lettered later"
                    ),
                }
                s.inflight.lock().expect("inflight set poisoned").remove(&(idx, id));
            }
            Verdict::Retry(delay) => {
                s.stats.retried.fetch_add(1, Ordering::Relaxed);
                s.failures.count_retry(&s.group, &event_type);
                tracing::warn!(
                    event_id = %event_id, event_type = %event_type, group = %s.group,
                    entry_id = %id, attempt, class = err.class.as_str(), error = %err.message, ?delay,
                    "handler failed; retrying after the backoff"
                );
                // The entry stays in `inflight` while it waits, so the
                // claimer leaves it alone; other consumers are kept off by
                // resetting its idle time.
                let retry_shared = s.clone();
                s.tracker.spawn(retry_after(retry_shared, idx, id, attempt, delay));
            }
        }
    });
}

/// Waits out the backoff, then takes the entry again (a new delivery, so
/// Redis counts the attempt) and dispatches it. On shutdown the entry is
/// left pending for whoever takes it next.
fn retry_after<H: Handler>(
    s: Arc<Shared<H>>,
    idx: usize,
    id: String,
    attempt: u64,
    delay: Duration,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    // Boxed: dispatch and retry_after call each other.
    Box::pin(async move {
        let stream = s.streams[idx].clone();
        let deadline = tokio::time::Instant::now() + delay;
        let keepalive = (s.claim_idle / 2).max(Duration::from_millis(10));
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            let step = (deadline - now).min(keepalive);
            tokio::select! {
                _ = s.alive.cancelled() => {
                    s.inflight.lock().expect("inflight set poisoned").remove(&(idx, id));
                    return;
                }
                _ = tokio::time::sleep(step) => {}
            }
            if tokio::time::Instant::now() < deadline {
                touch(&s.conn, &stream, &s.group, &s.name, &id).await;
            }
        }
        s.inflight
            .lock()
            .expect("inflight set poisoned")
            .remove(&(idx, id.clone()));
        // Acknowledged or taken over meanwhile: nothing to do.
        if let Some(entry) = reclaim(&s.conn, &stream, &s.group, &s.name, &id).await {
            dispatch(&s, idx, entry, true, attempt + 1).await;
        }
    })
}

async fn run_acker(
    conn: RedisConn,
    group: String,
    streams: Vec<String>,
    mut rx: mpsc::UnboundedReceiver<(usize, String)>,
    batch: usize,
    stats: Arc<ConsumerStats>,
) {
    let mut buf = Vec::with_capacity(batch);
    loop {
        if rx.recv_many(&mut buf, batch).await == 0 {
            return; // every sender is gone and the queue is empty
        }
        let mut by_stream: HashMap<usize, Vec<&str>> = HashMap::new();
        for (idx, id) in &buf {
            by_stream.entry(*idx).or_default().push(id);
        }
        let mut pipe = SlotPipeline::new(&conn);
        for (idx, ids) in &by_stream {
            let mut xack = redis::cmd("XACK");
            xack.arg(&streams[*idx]).arg(&group).arg(ids);
            pipe.add_ignored(&streams[*idx], xack);
        }
        let mut attempt = 0;
        loop {
            match pipe.query::<()>(&conn).await {
                Ok(_) => {
                    stats.acked.fetch_add(buf.len() as u64, Ordering::Relaxed);
                    break;
                }
                Err(e) if is_transient_redis(&e) && attempt < 20 => {
                    attempt += 1;
                    let delay = backoff(attempt, Duration::from_millis(50), Duration::from_secs(2));
                    tracing::warn!(error = %e, attempt, "ack failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    // The entries stay pending and are delivered again: at least once.
                    tracing::error!(error = %e, entries = buf.len(), "ack failed; entries will be redelivered");
                    break;
                }
            }
        }
        buf.clear();
    }
}

/// Removes consumers of the group on one stream that are idle for at least
/// `ARGV[2]` ms and own no pending entries, atomically (a consumer with
/// pending entries is never removed, so nothing pending is forgotten).
pub(crate) const REMOVE_STALE_CONSUMERS: &str = r#"
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return {} end
local removed = {}
for _, c in ipairs(consumers) do
  local name, pending, idle
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1]
    elseif c[i] == 'pending' then pending = c[i + 1]
    elseif c[i] == 'idle' then idle = c[i + 1] end
  end
  if name ~= ARGV[3] and pending == 0 and idle >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    table.insert(removed, name)
  end
end
return removed
"#;

async fn run_claimer<H: Handler>(
    shared: Arc<Shared<H>>,
    conn: RedisConn,
    config: ConsumerConfig,
    shutdown: CancellationToken,
) {
    let stale_script = redis::Script::new(REMOVE_STALE_CONSUMERS);
    let stale_every = (config.stale_check_interval.as_millis()
        / config.claim_interval.as_millis().max(1))
    .max(1) as u64;
    let mut round: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.claim_interval) => {}
        }
        round += 1;
        for idx in 0..shared.streams.len() {
            if shutdown.is_cancelled() {
                return;
            }
            if let Err(e) = claim_stream(&shared, &conn, &config, idx, &shutdown).await {
                tracing::warn!(stream = %shared.streams[idx], error = %e, "claiming idle entries failed");
            }
        }
        if round % stale_every == 0 {
            for stream in &shared.streams {
                let removed: redis::RedisResult<Vec<String>> = stale_script
                    .key(stream)
                    .arg(&shared.group)
                    .arg(config.stale_consumer_after.as_millis() as u64)
                    .arg(&shared.name)
                    .invoke_async(&mut conn.clone())
                    .await;
                match removed {
                    Ok(names) if !names.is_empty() => {
                        tracing::info!(stream = %stream, removed = ?names, "removed stale consumers")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(stream = %stream, error = %e, "stale consumer cleanup failed")
                    }
                }
            }
        }
    }
}

/// One `XAUTOCLAIM` pass over a stream, following the cursor to the end.
async fn claim_stream<H: Handler>(
    shared: &Arc<Shared<H>>,
    conn: &RedisConn,
    config: &ConsumerConfig,
    idx: usize,
    shutdown: &CancellationToken,
) -> Result<()> {
    let mut cursor = "0-0".to_owned();
    loop {
        let reply: redis::Value = redis::cmd("XAUTOCLAIM")
            .arg(&shared.streams[idx])
            .arg(&shared.group)
            .arg(&shared.name)
            .arg(config.claim_idle.as_millis() as u64)
            .arg(&cursor)
            .arg("COUNT")
            .arg(config.read_count)
            .query_async(&mut conn.clone())
            .await?;
        let (next, claimed, deleted) = parse_autoclaim(&reply);
        if deleted > 0 {
            tracing::warn!(stream = %shared.streams[idx], deleted, "pending entries were trimmed before being handled");
        }
        shared
            .stats
            .claimed
            .fetch_add(claimed.len() as u64, Ordering::Relaxed);
        let ids: Vec<String> = claimed.iter().map(|e| e.id.clone()).collect();
        let counts = delivery_counts(
            conn,
            &shared.streams[idx],
            &shared.group,
            &shared.name,
            &ids,
        )
        .await;
        for entry in claimed {
            let attempt = counts.get(&entry.id).copied().unwrap_or(1);
            dispatch(shared, idx, entry, true, attempt).await;
        }
        if next == "0-0" || shutdown.is_cancelled() {
            return Ok(());
        }
        cursor = next;
    }
}

#[cfg(test)]
mod read_count_tests {
    use super::read_count_per_stream;

    #[test]
    fn count_is_split_over_the_streams() {
        // 512 free slots over 16 partitions: at most 32 per stream, 512 in all.
        assert_eq!(read_count_per_stream(512, 1000, 16), 32);
        // read_count still caps the total.
        assert_eq!(read_count_per_stream(512, 256, 16), 16);
        // never zero, even with fewer free slots than streams
        assert_eq!(read_count_per_stream(1, 1000, 16), 1);
        assert_eq!(read_count_per_stream(10, 1000, 0), 10);
    }
}
