//! Ordered consumption: partitions leased to the live members of a group.
//!
//! A [`Consumer`](crate::Consumer) in [`ConsumerMode::Ordered`] (the
//! default) is a **member** of its group. Its parts:
//!
//! - [`membership`]: join, heartbeat and leave, with liveness judged by the
//!   Redis server's clock;
//! - [`assignor`]: the deterministic sticky assignment every member computes
//!   from the same view (no leader);
//! - [`lease`]: per-partition leases with fencing tokens, and the fenced
//!   scripts (ack, take over pending) that make a former owner harmless;
//! - [`reader`]: one blocking `XREADGROUP` over every owned stream (at most
//!   500 ms per read, so a rebalance never needs to interrupt one);
//! - [`partition_worker`]: per owned partition, take over the pending
//!   entries, then handle one entry at a time;
//! - [`park`]: park mode (optional), which holds the later events of a key
//!   that has an event in dead letters.
//!
//! This module runs the **heartbeat loop** that ties them together: every
//! `heartbeat_interval` it heartbeats, renews its leases (a lease it fails to
//! renew is lost: its worker is aborted), reads who owns what, computes the
//! assignment, asks the workers of partitions it must give up to release
//! them (cooperatively: a worker finishes its entry, stops reading, then
//! deletes its lease) and acquires the free partitions it should own.
//!
//! Shutdown handshake: when the token is cancelled, the reader stops at once
//! (its blocked read abandoned, see [`reader`]), every worker is asked to
//! release (finishing its running handler; entries queued but not started
//! stay pending for the next owner); the loop waits up to
//! `shutdown_timeout`, aborts what is still running (those entries stay
//! pending too), and leaves the group so the others take the partitions
//! over at their next heartbeat. The design
//! is written down in `docs/ordered-partitions.md`.

pub(crate) mod assignor;
pub(crate) mod lease;
pub(crate) mod membership;
pub(crate) mod park;
pub(crate) mod partition_worker;
pub(crate) mod reader;
mod site;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::connection::RedisConn;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::assignor::{assign, PartitionId};
use self::lease::{read_owners, LeaseScripts};
use self::membership::{Heartbeat, Membership};
use self::partition_worker::{Ended, OwnedPartition, WorkerContext};
use self::reader::{ReadSet, ReaderConfig};
use crate::connection::RedisConnector;
use crate::handler::Handler;
use crate::runtime::{prepare_streams, ConsumerConfig, ConsumerStats};
use crate::topology::Topology;
use crate::{Error, Result};

/// How a consumer shares its group's partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConsumerMode {
    /// Each partition is leased to one live member at a time; entries of a
    /// partition are handled one by one, in order; a failing entry blocks
    /// only its partition. The default.
    #[default]
    Ordered,
    /// Competing consumers: every member reads every partition and handles
    /// up to `concurrency` entries at once, in no particular order.
    Unordered,
}

impl ConsumerMode {
    /// `ordered` or `unordered`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerMode::Ordered => "ordered",
            ConsumerMode::Unordered => "unordered",
        }
    }
}

/// Everything the heartbeat loop tracks.
struct Runtime<H> {
    ctx: Arc<WorkerContext<H>>,
    membership: Membership,
    member: String,
    partitions: BTreeSet<PartitionId>,
    streams: BTreeMap<PartitionId, String>,
    session_ms: u64,
    owned: BTreeMap<PartitionId, OwnedPartition>,
    workers: JoinSet<(PartitionId, Ended)>,
}

/// Runs an ordered member until `shutdown` (see the module docs).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<H: Handler>(
    connector: RedisConnector,
    conn: RedisConn,
    topology: Topology,
    config: ConsumerConfig,
    name: String,
    handler: H,
    stats: Arc<ConsumerStats>,
    failures: Arc<crate::runtime::failure::FailureHandling>,
    shutdown: CancellationToken,
) -> Result<()> {
    let streams: BTreeMap<PartitionId, String> = prepare_streams(&conn, &topology, &config)
        .await?
        .into_iter()
        .map(|(stream, pid)| (pid, stream))
        .collect();
    let all_streams: Vec<String> = streams.values().cloned().collect();
    let session_ms = config.session_timeout.as_millis() as u64;
    let membership = Membership::new(
        &topology,
        &config.group,
        &name,
        config.topics.iter().cloned().collect(),
        session_ms,
    );
    membership.join(&conn).await?;

    // A read must end well within a lease's life: a stream is read only
    // while its lease stays valid for longer than one read (see `reader`).
    let block = config
        .block
        .min(config.session_timeout / 5)
        .max(Duration::from_millis(1));
    let epoch = Instant::now();
    let read_set = Arc::new(ReadSet::start(
        config.read_count,
        epoch,
        connector.clone(),
        conn.clone(),
        ReaderConfig {
            group: config.group.clone(),
            consumer: name.clone(),
            count: config.read_count,
            block,
            all_streams,
        },
    ));
    let in_flight = config
        .max_partitions_in_flight
        .unwrap_or(Semaphore::MAX_PERMITS);
    let ctx = Arc::new(WorkerContext {
        handler,
        conn: conn.clone(),
        scripts: LeaseScripts::default(),
        read_set,
        group: config.group.clone(),
        consumer: name.clone(),
        stats,
        in_flight: Arc::new(Semaphore::new(in_flight)),
        failures,
        claim_count: config.read_count.max(100),
        epoch,
        keep_leases: AtomicBool::new(false),
        park_keys: config.park_keys,
        partition_batch: config.partition_batch,
    });
    let mut rt = Runtime {
        ctx,
        membership,
        member: name.clone(),
        partitions: streams.keys().cloned().collect(),
        streams,
        session_ms,
        owned: BTreeMap::new(),
        workers: JoinSet::new(),
    };
    tracing::info!(group = %config.group, member = %name, instance = rt.membership.instance(),
                   partitions = rt.partitions.len(), "ordered consumer joined its group");

    let mut ticker = tokio::time::interval(config.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = ticker.tick() => {
                if let Err(e) = rt.tick(&conn).await {
                    break Err(e);
                }
            }
            Some(done) = rt.workers.join_next() => rt.worker_ended(done),
        }
    };

    // Drain: stop reading at once (a blocked read is abandoned, whatever
    // `block`), stop every partition (handlers finish), then leave. A
    // static member keeps its leases and membership for its restart instead.
    rt.ctx.read_set.stop().await;
    let keep = config.static_membership;
    rt.ctx.keep_leases.store(keep, Ordering::Release);
    for part in rt.owned.values() {
        part.release.cancel();
    }
    let drained = tokio::time::timeout(config.shutdown_timeout, async {
        while let Some(done) = rt.workers.join_next().await {
            rt.worker_ended(done);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(member = %name, still_running = rt.workers.len(),
                       "shutdown deadline passed; abandoned entries stay pending for the next owner");
        for part in rt.owned.values() {
            part.abort.cancel();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(done) = rt.workers.join_next().await {
                rt.worker_ended(done);
            }
        })
        .await;
        rt.workers.abort_all();
    }
    rt.ctx.read_set.stop().await;
    if keep {
        tracing::info!(group = %config.group, member = %name, session_timeout = ?config.session_timeout,
                       "static member stopped; its partitions wait for its restart until the session times out");
    } else {
        if let Err(e) = rt.membership.leave(&conn).await {
            tracing::warn!(member = %name, error = %e, "leaving the group failed; the others notice after the session timeout");
        }
        tracing::info!(group = %config.group, member = %name, "ordered consumer left its group");
    }
    result
}

impl<H: Handler> Runtime<H> {
    /// One heartbeat: liveness, renewals, assignment, releases, acquisitions.
    async fn tick(&mut self, conn: &RedisConn) -> Result<()> {
        let sent_at = self.ctx.epoch.elapsed();
        let members = match self.membership.heartbeat(conn).await {
            Ok(Heartbeat::Alive(members)) => members,
            Ok(Heartbeat::Rejoin) => {
                tracing::warn!(member = %self.member, "this member was declared dead (silent past the session timeout); its partitions are lost; rejoining");
                self.abort_all();
                self.membership.join(conn).await?;
                return Ok(());
            }
            Ok(Heartbeat::Fenced) => {
                self.abort_all();
                return Err(Error::MemberFenced {
                    member: self.member.clone(),
                });
            }
            Err(e) => {
                // Leases lapse locally if this goes on; workers then pause.
                tracing::warn!(member = %self.member, error = %e, "heartbeat failed");
                return Ok(());
            }
        };
        self.renew(conn, sent_at).await;

        let streams: Vec<String> = self.streams.values().cloned().collect();
        let states = match read_owners(conn, &streams, &self.ctx.group).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "reading lease owners failed");
                return Ok(());
            }
        };
        let keys: Vec<PartitionId> = self.streams.keys().cloned().collect();
        let owners: HashMap<PartitionId, String> = keys
            .iter()
            .zip(&states)
            .filter_map(|(p, s)| Some((p.clone(), s.as_ref()?.owner.clone())))
            .collect();
        let target = assign(&members, &self.partitions, &owners)
            .remove(&self.member)
            .unwrap_or_default();

        for (pid, part) in &self.owned {
            if !target.contains(pid) && !part.release.is_cancelled() {
                tracing::info!(member = %self.member, stream = %part.stream, "giving up partition (rebalance)");
                part.release.cancel();
            }
        }
        for pid in target {
            if self.owned.contains_key(&pid) {
                continue;
            }
            let free = match owners.get(&pid) {
                None => true,
                Some(o) => *o == self.member, // ours from before a restart
            };
            if free {
                self.acquire(conn, pid).await;
            }
        }
        Ok(())
    }

    async fn renew(&mut self, conn: &RedisConn, sent_at: Duration) {
        let leases: Vec<(PartitionId, String, u64)> = self
            .owned
            .iter()
            .map(|(pid, p)| (pid.clone(), p.stream.clone(), p.token))
            .collect();
        let pairs: Vec<(String, u64)> = leases.iter().map(|(_, s, t)| (s.clone(), *t)).collect();
        match self
            .ctx
            .scripts
            .renew_all(conn, &pairs, &self.ctx.group, self.session_ms)
            .await
        {
            Ok(held) => {
                let until = self.local_deadline(sent_at);
                for ((pid, stream, _), held) in leases.iter().zip(held) {
                    let Some(part) = self.owned.get(pid) else {
                        continue;
                    };
                    if held {
                        part.valid_until.store(until, Ordering::Release);
                    } else {
                        tracing::warn!(member = %self.member, stream = %stream, "lease lost; stopping the partition at once");
                        part.abort.cancel();
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "renewing leases failed"),
        }
    }

    /// The local time (ms after `epoch`) until which a lease renewed at
    /// `sent_at` is surely still ours: the TTL counted from before the
    /// request was sent, less a fifth for clock rate differences.
    fn local_deadline(&self, sent_at: Duration) -> u64 {
        sent_at.as_millis() as u64 + self.session_ms * 4 / 5
    }

    async fn acquire(&mut self, conn: &RedisConn, pid: PartitionId) {
        let stream = self.streams[&pid].clone();
        let sent_at = self.ctx.epoch.elapsed();
        let token = match self
            .ctx
            .scripts
            .acquire(
                conn,
                &stream,
                &self.ctx.group,
                &self.member,
                self.membership.instance(),
                self.session_ms,
            )
            .await
        {
            Ok(Some(t)) => t,
            Ok(None) => return, // someone else got it first
            Err(e) => {
                tracing::warn!(stream = %stream, error = %e, "acquiring a lease failed");
                return;
            }
        };
        tracing::info!(member = %self.member, stream = %stream, token, "partition acquired");
        let part = OwnedPartition {
            topic: pid.0.clone(),
            partition: pid.1,
            stream,
            token,
            valid_until: Arc::new(AtomicU64::new(self.local_deadline(sent_at))),
            release: CancellationToken::new(),
            abort: CancellationToken::new(),
        };
        self.owned.insert(pid.clone(), part.clone());
        let ctx = self.ctx.clone();
        self.workers
            .spawn(async move { (pid, ctx.run(part).await) });
    }

    fn worker_ended(
        &mut self,
        done: std::result::Result<(PartitionId, Ended), tokio::task::JoinError>,
    ) {
        // Workers catch handler panics themselves; a join error here means
        // the task was aborted at shutdown.
        if let Ok((pid, ended)) = done {
            if let Some(part) = self.owned.remove(&pid) {
                tracing::info!(member = %self.member, stream = %part.stream, ?ended, "partition stopped");
            }
        }
    }

    fn abort_all(&mut self) {
        for part in self.owned.values() {
            part.abort.cancel();
        }
    }
}
