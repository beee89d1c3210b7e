//! The background trimmer: every interval, trims the streams it looks
//! after and refreshes the retention gauges.
//!
//! Several processes run one (every relay, `serve` and consumer). They take
//! turns per stream: the trim of a stream first takes the stream's lease
//! (`SET <lease> <name> NX PX <interval>`, inside the trim script, in the
//! stream's slot), so each stream is trimmed about once per interval
//! whatever the number of processes. A process that finds the lease taken
//! only reads the stream's figures, for its gauges.
//!
//! Gauges: `eventbus_stream_entries{topic,partition}` (replay streams have
//! `topic="_replay:<group>"`, the dead-letter stream `topic="_dead"`,
//! partition 0), `eventbus_group_oldest_unacked_age_seconds{group}` (the
//! age of the oldest entry the group has not acknowledged, over the
//! streams this trimmer looks after; 0 when it is caught up), and
//! `eventbus_redis_used_memory_bytes{node}` / `eventbus_redis_maxmemory_bytes{node}`
//! (`node` is empty on a single server). Counter: `eventbus_stream_trimmed_total`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use redis::Value;
use tokio_util::sync::CancellationToken;

use super::trim::{streams, trim_streams, Mode, TrimReport};
use super::RetentionPolicy;
use crate::connection::RedisConn;
use crate::topology::Topology;
use crate::Result;

/// What the trimmer does and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrimmerConfig {
    /// What may be trimmed ([`RetentionPolicy::acked_after`] `None`: only
    /// the gauges are refreshed).
    pub policy: RetentionPolicy,
    /// Time between passes. Default 10 s.
    pub interval: Duration,
}

impl Default for TrimmerConfig {
    fn default() -> Self {
        TrimmerConfig {
            policy: RetentionPolicy::default(),
            interval: Duration::from_secs(10),
        }
    }
}

/// Trims streams every [`TrimmerConfig::interval`] until stopped.
#[derive(Debug, Clone)]
pub struct Trimmer {
    conn: RedisConn,
    topology: Topology,
    config: TrimmerConfig,
    /// Whose lease it is (unique per trimmer).
    name: String,
    /// `None`: every topic published to; else these topics.
    topics: Option<Vec<String>>,
    /// The groups the last pass reported (their gauges are zeroed when
    /// they are gone).
    known: std::sync::Arc<std::sync::Mutex<BTreeSet<String>>>,
}

impl Trimmer {
    /// A trimmer of every topic published to in `topology` (the topics
    /// registry), their groups' replay streams and the dead-letter stream.
    pub fn new(conn: RedisConn, topology: Topology, config: TrimmerConfig) -> Self {
        Trimmer {
            conn,
            topology,
            config,
            name: format!("trimmer-{}", uuid::Uuid::new_v4()),
            topics: None,
            known: Default::default(),
        }
    }

    /// Looks after these topics only (a consumer's), with the replay
    /// streams of the groups found on them.
    pub fn topics(mut self, topics: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.topics = Some(topics.into_iter().map(Into::into).collect());
        self
    }

    /// One pass: trims each stream whose lease it takes, reads the others,
    /// and refreshes the gauges.
    pub async fn pass(&self) -> Result<Vec<TrimReport>> {
        let list = streams(&self.conn, &self.topology, self.topics.as_deref()).await?;
        let mode = Mode::of(&self.config.policy, false);
        let reports = trim_streams(
            &self.conn,
            &self.topology,
            list,
            &self.config.policy,
            mode,
            Some((&self.name, self.config.interval)),
        )
        .await?;
        self.record_gauges(&reports);
        // The memory gauges need INFO, which a user that may trim need not
        // have: without it, only they are missing.
        match redis_memory(&self.conn).await {
            Ok(nodes) => {
                for node in nodes {
                    let labels = [("node", node.node.clone())];
                    metrics::gauge!("eventbus_redis_used_memory_bytes", &labels)
                        .set(node.used as f64);
                    metrics::gauge!("eventbus_redis_maxmemory_bytes", &labels).set(node.max as f64);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read Redis memory (INFO) for the gauges"),
        }
        Ok(reports)
    }

    fn record_gauges(&self, reports: &[TrimReport]) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut ages: BTreeMap<&str, f64> = BTreeMap::new();
        for r in reports {
            let (topic, partition) = self.labels(&r.stream);
            metrics::gauge!("eventbus_stream_entries", "topic" => topic, "partition" => partition)
                .set(r.length_after() as f64);
            for g in &r.groups {
                let age = r
                    .oldest_unacked
                    .get(g)
                    .and_then(|id| id.split_once('-'))
                    .and_then(|(ms, _)| ms.parse::<i64>().ok())
                    .map_or(0.0, |ms| (now_ms - ms).max(0) as f64 / 1000.0);
                let at = ages.entry(g).or_default();
                *at = at.max(age);
            }
        }
        for (group, age) in &ages {
            metrics::gauge!("eventbus_group_oldest_unacked_age_seconds", "group" => group.to_string())
                .set(*age);
        }
        // A group gone since the last pass (deleted) holds nothing back.
        let seen: BTreeSet<String> = ages.keys().map(|g| g.to_string()).collect();
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        for gone in known.difference(&seen) {
            metrics::gauge!("eventbus_group_oldest_unacked_age_seconds", "group" => gone.clone())
                .set(0.0);
        }
        *known = seen;
    }

    /// `(topic, partition)` labels of a stream.
    fn labels(&self, stream: &str) -> (String, String) {
        if let Some((topic, p)) = self.topology.parse_stream_key(stream) {
            return (topic, p.to_string());
        }
        let ns = self.topology.namespace();
        let topic = match stream
            .strip_prefix(ns)
            .and_then(|s| s.strip_prefix(":{"))
            .and_then(|s| s.strip_suffix('}'))
        {
            Some(replay) => replay.to_owned(),
            None if stream == self.topology.dead_stream() => "_dead".to_owned(),
            None => stream.to_owned(),
        };
        (topic, "0".to_owned())
    }

    /// Runs a pass every interval (the first after a random part of it, so
    /// processes started together spread out) until `shutdown`. A failed
    /// pass is logged (once until one succeeds) and the next one runs on
    /// time: trimming late is harmless.
    pub async fn run(self, shutdown: CancellationToken) {
        let interval = self.config.interval.max(Duration::from_millis(10));
        let mut wait = interval.mul_f64(rand::random::<f64>());
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            match self.pass().await {
                Ok(reports) => {
                    if failing {
                        tracing::info!("stream trimming works again");
                    }
                    failing = false;
                    let trimmed: u64 = reports.iter().map(|r| r.trimmed).sum();
                    if trimmed > 0 {
                        tracing::debug!(
                            trimmed,
                            streams = reports.len(),
                            "trimmed acknowledged entries"
                        );
                    }
                }
                Err(e) => {
                    if !failing && e.to_string().to_ascii_lowercase().contains("noperm") {
                        tracing::warn!(error = %e, "this process's Redis user may not trim streams (it needs XTRIM, XINFO, XPENDING, XRANGE, SET and EVAL on the namespace): leave trimming to `eventbus serve` or `eventbus trim` run as the admin user, or grant them");
                    } else if !failing {
                        tracing::warn!(error = %e, "stream trimming failed; retrying every interval");
                    }
                    failing = true;
                }
            }
            // ±10 % so that processes do not fall into step.
            wait = interval.mul_f64(0.9 + 0.2 * rand::random::<f64>());
        }
    }
}

/// Memory of one Redis server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMemory {
    /// The node's address on a cluster; empty on a single server.
    pub node: String,
    /// `used_memory`, bytes.
    pub used: u64,
    /// `maxmemory`, bytes (0: no limit).
    pub max: u64,
}

/// `INFO memory` of the server, or of every primary of a cluster.
pub async fn redis_memory(conn: &RedisConn) -> Result<Vec<NodeMemory>> {
    let reply: Value = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn.clone())
        .await?;
    let parse = |node: String, v: &Value| -> Option<NodeMemory> {
        let text: String = redis::from_redis_value_ref(v).ok()?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
        };
        Some(NodeMemory {
            node,
            used: field("used_memory")?,
            max: field("maxmemory").unwrap_or(0),
        })
    };
    Ok(match &reply {
        Value::Map(nodes) => nodes
            .iter()
            .filter_map(|(k, v)| {
                let node: String = redis::from_redis_value_ref(k).ok()?;
                parse(node, v)
            })
            .collect(),
        other => parse(String::new(), other).into_iter().collect(),
    })
}
