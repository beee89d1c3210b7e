//! The one reader of an ordered consumer: a blocking `XREADGROUP ... >`
//! over every stream this member owns, on a dedicated connection, feeding
//! each partition worker's queue.
//!
//! The set of streams changes as leases come and go. A change bumps the
//! set's version; a read blocks at most [`MAX_READ_BLOCK`], so the next
//! read, within that time, includes a new partition. A partition that is
//! given up is removed from the set, and its worker waits
//! ([`ReadSet::remove`]) until no read that included it is still in flight
//! (at most one read's block): after that nothing more of that stream can
//! be delivered to this member, so releasing the lease is safe (the next
//! owner takes over everything pending first, see `partition_worker`).
//!
//! A blocked read is never cut short while the member runs: its reply is
//! what tells that no more of a removed stream can arrive, and entries it
//! carries must reach their worker in order. (Waking it early would take
//! `CLIENT UNBLOCK`, which a consumer's Redis user would need and which
//! unblocks any client; short reads need no such right.) At shutdown, the read is
//! abandoned at once and its dedicated connection dropped, which ends it
//! on the server; entries Redis handed it meanwhile stay pending, and the
//! next owner of their partition takes them over first, in order.
//!
//! Fencing by time: a blocking read cannot run inside a script that checks
//! the lease token, so a stream is included in a read only while its lease
//! is locally known to stay valid for longer than the read can block (the
//! local deadline is set from before each renewal was sent, with a margin;
//! `block` is at most a fifth of the session timeout). A member that was
//! paused past its lease therefore never reads that stream again: whatever
//! it was delivered before lies pending and is taken over, in order, by the
//! next owner, and nothing new can be delivered to it.
//!
//! Backpressure: a stream whose queue holds `limit` entries is left out of
//! reads until its worker catches up.
//!
//! On a Redis Cluster there is one such reader per owned stream instead
//! (see [`ReadSet`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::connection::RedisConn;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::connection::{backoff, query_unless_stopped, RedisConnector};
use crate::reply::split_read;
use crate::runtime::{ensure_groups, read_new_cmd};

/// A partition worker's inbox. Entries arrive undecoded: the one reader
/// only splits replies by stream, and each worker decodes its own entries,
/// so decoding runs on every core rather than in the reader's task.
#[derive(Debug, Clone)]
pub(crate) struct Feed {
    pub(crate) tx: mpsc::UnboundedSender<redis::Value>,
    /// Entries sent and not yet taken by the worker.
    pub(crate) queued: Arc<AtomicUsize>,
    /// The lease's local deadline (ms after the runtime's epoch).
    pub(crate) valid_until: Arc<AtomicU64>,
}

/// What the reader is doing, for [`StreamSet::remove`].
#[derive(Debug, Clone, Copy, Default)]
struct ReaderState {
    /// The set version of the read in flight (if any).
    in_flight: Option<u64>,
}

/// The streams one reader reads and where their entries go.
#[derive(Debug)]
pub(crate) struct StreamSet {
    inner: Mutex<(u64, BTreeMap<String, Feed>)>,
    changed: Notify,
    state: watch::Sender<ReaderState>,
    limit: usize,
    epoch: Instant,
    block: Duration,
}

impl StreamSet {
    /// A read set; `epoch` is the clock origin of the feeds' lease
    /// deadlines, `block` the longest a read blocks.
    pub(crate) fn new(limit: usize, epoch: Instant, block: Duration) -> Self {
        StreamSet {
            inner: Mutex::new((0, BTreeMap::new())),
            changed: Notify::new(),
            state: watch::Sender::new(ReaderState::default()),
            limit,
            epoch,
            block,
        }
    }

    /// Starts reading a stream into `feed` (from the next read on).
    pub(crate) fn add(&self, stream: &str, feed: Feed) {
        {
            let mut inner = self.inner.lock().expect("read set poisoned");
            inner.0 += 1;
            inner.1.insert(stream.to_owned(), feed);
        }
        self.changed.notify_one();
    }

    /// Stops reading a stream and waits until no read including it is in
    /// flight (at most one read's block).
    pub(crate) async fn remove(&self, stream: &str) {
        let (version, mut state) = {
            let mut inner = self.inner.lock().expect("read set poisoned");
            inner.0 += 1;
            inner.1.remove(stream);
            (inner.0, self.state.subscribe())
        };
        self.changed.notify_one();
        loop {
            let done = match state.borrow_and_update().in_flight {
                None => true,
                Some(v) => v >= version,
            };
            if done {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), state.changed()).await;
        }
    }

    /// The streams to read now (queues not full, leases valid for longer
    /// than the read may block). Marks the read as in
    /// flight under the same lock [`StreamSet::remove`] takes, so a removal
    /// either comes before this snapshot or waits for the read to end.
    fn begin_read(&self) -> Vec<String> {
        let inner = self.inner.lock().expect("read set poisoned");
        let horizon = (self.epoch.elapsed() + self.block).as_millis() as u64;
        let streams: Vec<String> = inner
            .1
            .iter()
            .filter(|(_, f)| {
                f.queued.load(Ordering::Acquire) < self.limit
                    && f.valid_until.load(Ordering::Acquire) > horizon
            })
            .map(|(s, _)| s.clone())
            .collect();
        let in_flight = (!streams.is_empty()).then_some(inner.0);
        self.state.send_replace(ReaderState { in_flight });
        streams
    }

    fn end_read(&self) {
        self.state.send_replace(ReaderState { in_flight: None });
    }

    fn feed(&self, stream: &str) -> Option<Feed> {
        self.inner
            .lock()
            .expect("read set poisoned")
            .1
            .get(stream)
            .cloned()
    }

    /// Tells the reader the set changed or a queue drained (the reader
    /// waits for this when there is nothing it may read).
    pub(crate) fn nudge(&self) {
        self.changed.notify_one();
    }
}

/// Longest a read blocks, whatever the consumer's `block`: a partition
/// given up waits at most this long for the read in flight to end, and a
/// partition gained is read from at most this long after. An idle member
/// thus sends two reads a second, which Redis does not notice.
pub(crate) const MAX_READ_BLOCK: Duration = Duration::from_millis(500);

/// The reading side of an ordered member, as partition workers see it.
///
/// On one server: one reader, one blocking `XREADGROUP` over every owned
/// stream. On a Redis Cluster a multi-stream `XREADGROUP` must stay in one
/// hash slot, and each partition is a slot of its own, so every owned stream
/// gets a reader of its own on a dedicated connection (a blocking read holds
/// its connection). In both cases reads block for at most
/// [`MAX_READ_BLOCK`]: giving up a partition waits for its last read to end.
#[derive(Debug)]
pub(crate) struct ReadSet {
    kind: Kind,
    /// The reader tasks; dropped (aborted) with this.
    tasks: Mutex<JoinSet<()>>,
    stop: CancellationToken,
}

#[derive(Debug)]
enum Kind {
    Shared(Arc<StreamSet>),
    PerStream(Box<PerStream>),
}

#[derive(Debug)]
struct PerStream {
    readers: Mutex<BTreeMap<String, (Arc<StreamSet>, CancellationToken)>>,
    connector: RedisConnector,
    conn: RedisConn,
    config: ReaderConfig,
    limit: usize,
    epoch: Instant,
}

impl ReadSet {
    /// Starts the reading side: `epoch` is the clock origin of the feeds'
    /// lease deadlines, `config.block` the longest a read blocks. Readers
    /// stop at [`ReadSet::stop`], or are aborted when this is dropped.
    pub(crate) fn start(
        limit: usize,
        epoch: Instant,
        connector: RedisConnector,
        conn: RedisConn,
        config: ReaderConfig,
    ) -> Self {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let config = ReaderConfig {
            block: config.block.min(MAX_READ_BLOCK),
            ..config
        };
        let kind = if conn.is_cluster() {
            Kind::PerStream(Box::new(PerStream {
                readers: Mutex::new(BTreeMap::new()),
                connector,
                conn,
                config,
                limit,
                epoch,
            }))
        } else {
            let set = Arc::new(StreamSet::new(limit, epoch, config.block));
            tasks.spawn(run_reader(
                set.clone(),
                connector,
                conn,
                config,
                stop.clone(),
            ));
            Kind::Shared(set)
        };
        ReadSet {
            kind,
            tasks: Mutex::new(tasks),
            stop,
        }
    }

    /// Starts reading a stream into `feed`.
    pub(crate) fn add(&self, stream: &str, feed: Feed) {
        match &self.kind {
            Kind::Shared(set) => set.add(stream, feed),
            Kind::PerStream(p) => {
                let set = Arc::new(StreamSet::new(p.limit, p.epoch, p.config.block));
                set.add(stream, feed);
                let token = self.stop.child_token();
                let config = ReaderConfig {
                    all_streams: vec![stream.to_owned()],
                    ..p.config.clone()
                };
                let mut tasks = self.tasks.lock().expect("reader tasks poisoned");
                while tasks.try_join_next().is_some() {} // readers of streams given up
                tasks.spawn(run_reader(
                    set.clone(),
                    p.connector.clone(),
                    p.conn.clone(),
                    config,
                    token.clone(),
                ));
                drop(tasks);
                let old = p
                    .readers
                    .lock()
                    .expect("read set poisoned")
                    .insert(stream.to_owned(), (set, token));
                if let Some((_, token)) = old {
                    token.cancel();
                }
            }
        }
    }

    /// Stops reading a stream and waits until no read including it is in
    /// flight: after that nothing more of it can be delivered to this member.
    pub(crate) async fn remove(&self, stream: &str) {
        match &self.kind {
            Kind::Shared(set) => set.remove(stream).await,
            Kind::PerStream(p) => {
                let reader = p.readers.lock().expect("read set poisoned").remove(stream);
                if let Some((set, token)) = reader {
                    set.remove(stream).await;
                    token.cancel();
                }
            }
        }
    }

    /// Tells the readers a queue drained.
    pub(crate) fn nudge(&self) {
        match &self.kind {
            Kind::Shared(set) => set.nudge(),
            Kind::PerStream(p) => {
                for (set, _) in p.readers.lock().expect("read set poisoned").values() {
                    set.nudge();
                }
            }
        }
    }

    /// Stops every reader at once (a blocked read is abandoned, see the
    /// module docs) and waits for them to end. Idempotent.
    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        let mut tasks = std::mem::take(&mut *self.tasks.lock().expect("reader tasks poisoned"));
        while tasks.join_next().await.is_some() {}
    }
}

/// Settings of the reader.
#[derive(Debug, Clone)]
pub(crate) struct ReaderConfig {
    pub(crate) group: String,
    pub(crate) consumer: String,
    pub(crate) count: usize,
    pub(crate) block: Duration,
    /// Every stream of the consumer, for recreating vanished groups.
    pub(crate) all_streams: Vec<String>,
}

/// Reads until `shutdown`; owned by the ordered runtime.
async fn run_reader(
    set: Arc<StreamSet>,
    connector: RedisConnector,
    conn: RedisConn,
    config: ReaderConfig,
    shutdown: CancellationToken,
) {
    let mut reader: Option<RedisConn> = None;
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        let c = match reader.take() {
            Some(c) => c,
            None => match connector.dedicated(config.block).await {
                Ok(c) => c,
                Err(e) => {
                    failures += 1;
                    pause(&e.to_string(), failures, &shutdown).await;
                    continue;
                }
            },
        };
        let streams = set.begin_read();
        if streams.is_empty() {
            reader = Some(c);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = set.changed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            continue;
        }
        let cmd = read_new_cmd(
            &config.group,
            &config.consumer,
            config.count,
            config.block,
            &streams,
        );
        // Shutdown abandons the read and closes its connection.
        let Some((c, read)) = query_unless_stopped::<redis::Value>(c, &cmd, &shutdown).await else {
            break;
        };
        match read {
            Ok(reply) => {
                failures = 0;
                reader = Some(c);
                for (stream, entries) in split_read(reply) {
                    // A stream removed meanwhile: its entries stay pending
                    // here until the next owner claims them.
                    let Some(feed) = set.feed(&stream) else {
                        continue;
                    };
                    feed.queued.fetch_add(entries.len(), Ordering::AcqRel);
                    for e in entries {
                        let _ = feed.tx.send(e);
                    }
                }
                set.end_read();
            }
            Err(e) if matches!(e.code(), Some("NOGROUP") | Some("UNBLOCKED")) => {
                set.end_read();
                reader = Some(c);
                tracing::warn!(group = %config.group, error = %e, "group or stream vanished; recreating");
                if let Err(e) = ensure_groups(&conn, &config.all_streams, &config.group).await {
                    failures += 1;
                    pause(&e.to_string(), failures, &shutdown).await;
                }
            }
            Err(e) => {
                // The read may still be served after a timeout on our side:
                // this connection is dropped, which ends it on the server.
                drop(c);
                set.end_read();
                failures += 1;
                pause(&e.to_string(), failures, &shutdown).await;
            }
        }
    }
    set.end_read();
}

async fn pause(error: &str, failures: u32, shutdown: &CancellationToken) {
    let delay = backoff(failures, Duration::from_millis(100), Duration::from_secs(5));
    tracing::warn!(
        error,
        failures,
        ?delay,
        "ordered reader: redis read failed; retrying"
    );
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}
