//! # eventbus-bench
//!
//! Throughput, latency, CPU and memory of eventbus beside the physical
//! limits of Redis and PostgreSQL and beside peer libraries, all measured in
//! one run on one machine. Both the `eventbus-bench` binary (run by
//! `bench/run`) and `eventbus bench` call [`run`].
//!
//! ## Layout
//!
//! - [`Params`]: the scenario parameters (a `clap` argument group shared by
//!   both command lines) and [`Target`]: where Redis and PostgreSQL are.
//! - `scenarios`: ours against Redis — publish batched, publish one at a
//!   time, publish → consume → ack unordered and ordered, publish → handler
//!   latency at fixed offered rates.
//! - `outbox`: enqueue → relay → inbox end to end, commit → handler latency.
//! - `baseline`: `redis-benchmark` `XADD` (unpipelined and `-P 16`) and
//!   `pgbench` scripts with the outbox and inbox row shapes.
//! - `peers`: omniqueue and apalis (`bench/peers/rust`, a separate cargo
//!   workspace) and BullMQ (`bench/peers/node`), run as child processes.
//! - `ordered`: lease settling and rebalance (join, kill) times of ordered
//!   members.
//! - `soak`: a consumer in its own process under steady load, its RSS sampled.
//! - `retention`: the retention soak (issue #13) on private Redis servers:
//!   `used_memory` under steady load with a lagging group, retention on and
//!   off, and unordered throughput with and without a trimmer (A/B).
//! - `cluster`: [`single_vs_cluster`], the throughput scenarios on a private
//!   Redis and on a private 3-master Redis Cluster, in turn, in one run
//!   (`eventbus-bench --cluster`).
//! - `measure`: CPU (`/proc/self/stat`, Redis `INFO cpu` of each metered
//!   node, PostgreSQL's processes), peak RSS (`VmHWM`), latency histograms.
//! - [`Report`]: sections of rows, each with its ratio to our figure, as a
//!   table or JSON.
//!
//! Every run works in a fresh Redis namespace (`bench-<random>`) and a fresh
//! PostgreSQL schema, and deletes both at the end.

mod baseline;
mod cluster;
mod measure;
mod ordered;
mod outbox;
mod peers;
mod report;
mod retention;
mod scenarios;
mod scheduled;
mod soak;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use clap::Args;
use eventbus::RedisConn;
use eventbus::{ConsumerMode, RedisConnector, RedisOptions, Topology};

pub use cluster::{single_vs_cluster, Persistence};
pub use measure::{CpuPerMillion, Latency, NodeCpu};
pub use peers::PeerSetup;
pub use report::{
    Check, Comparison, MemorySample, MemorySeries, MemoryWindow, Report, Role, Row, Section,
};

/// Where the servers are.
#[derive(Debug, Clone)]
pub struct Target {
    /// Redis URL.
    pub redis_url: String,
    /// PostgreSQL URL (outbox scenarios and pgbench).
    pub database_url: String,
    /// Partitions per topic.
    pub partitions: u32,
    /// Arguments that run this program's bench again (`["bench"]` for the
    /// `eventbus` binary, none for `eventbus-bench`): the soak starts its
    /// consumer process with them.
    pub self_args: Vec<String>,
}

/// Scenario parameters. Defaults are the full run's.
#[derive(Debug, Clone, Args)]
pub struct Params {
    /// Events per throughput scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Size of each event's JSON `data` in bytes (the encoded entry is about 200 bytes more).
    #[arg(long, default_value_t = 200)]
    pub payload: usize,
    /// Events per pipelined batch.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Batches in flight at once on the shared connection.
    #[arg(long, default_value_t = 4)]
    pub inflight: usize,
    /// Consumers (group members) in this process for the consume scenarios.
    #[arg(long, default_value_t = 2)]
    pub consumers: usize,
    /// Handler concurrency per unordered consumer.
    #[arg(long, default_value_t = 512)]
    pub concurrency: usize,
    /// Group sizes for the ordered publish → consume → ack rows.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub ordered_members: Vec<usize>,
    /// Rounds per timing setting of the rebalance measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub rebalance_rounds: u64,
    /// Tasks publishing one event per call at once.
    #[arg(long, default_value_t = 50)]
    pub publishers: usize,
    /// Offered rates (events/s) for the publish → handler latency scenario.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub rates: Vec<u64>,
    /// Offered rates (events/s) for the commit → handler latency scenario.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub outbox_rates: Vec<u64>,
    /// Inbox batch sizes of the outbox end-to-end rows (1: one transaction
    /// per event, as before batching); the latency rows use the default, 64.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub inbox_batches: Vec<usize>,
    /// Transactions each inbox consumer runs at once (default: the inbox's
    /// own default).
    #[arg(long)]
    pub inbox_parallel: Option<usize>,
    /// Seconds each fixed-rate scenario runs.
    #[arg(long, default_value_t = 10)]
    pub rate_secs: u64,
    /// Events for the outbox end-to-end scenario.
    #[arg(long, default_value_t = 200_000)]
    pub outbox_events: usize,
    /// Seconds per timed pgbench baseline.
    #[arg(long, default_value_t = 5)]
    pub pgbench_secs: u64,
    /// Claims per pgbench client in the claim baseline.
    #[arg(long, default_value_t = 25)]
    pub pgbench_claims: u64,
    /// Events per peer scenario.
    #[arg(long, default_value_t = 200_000)]
    pub peer_events: u64,
    /// Handler concurrency of the peers' workers.
    #[arg(long, default_value_t = 512)]
    pub peer_concurrency: usize,
    /// Seconds of the consumer soak (its own process, RSS sampled every second); 0 = skip.
    #[arg(long, default_value_t = 60)]
    pub soak_secs: u64,
    /// Offered rate during the soak.
    #[arg(long, default_value_t = 10_000)]
    pub soak_rate: u64,
    /// Seconds of each phase of the retention soak (retention on, then off,
    /// each on a private redis-server); 0 = skip the memory soak.
    #[arg(long, default_value_t = 600)]
    pub retention_secs: u64,
    /// Offered rate during the retention soak.
    #[arg(long, default_value_t = 10_000)]
    pub retention_rate: u64,
    /// The retention soak reports memory per window of this many seconds
    /// (its "minute"), sampling every second.
    #[arg(long, default_value_t = 60)]
    pub retention_window_secs: u64,
    /// How long the lagging group of the retention soak holds each event
    /// before acknowledging it (ms).
    #[arg(long, default_value_t = 1000)]
    pub retention_lag_ms: u64,
    /// Interval of the trimmer in the retention soak and A/B (ms).
    #[arg(long, default_value_t = 1000)]
    pub retention_interval_ms: u64,
    /// Rounds of the retention throughput A/B (each one run without and one
    /// with the trimmer, in ABBA order); 0 = skip it.
    #[arg(long, default_value_t = 5)]
    pub retention_rounds: u64,
    /// Only these sections: publish-batch, publish-single, unordered, ordered,
    /// rebalance, latency, scheduled, outbox, soak, retention, peers (default: all).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Skip the baselines (redis-benchmark, pgbench).
    #[arg(long)]
    pub skip_baselines: bool,
    /// Skip the peers.
    #[arg(long)]
    pub skip_peers: bool,
    /// Skip the PostgreSQL scenarios.
    #[arg(long)]
    pub skip_outbox: bool,
    /// The `eventbus-peers` binary (bench/run builds it).
    #[arg(long, value_name = "PATH")]
    pub peer_rust_bin: Option<PathBuf>,
    /// Why the Rust peers are not available (printed in their rows).
    #[arg(long, value_name = "REASON")]
    pub peer_rust_missing: Option<String>,
    /// bench/peers/node with its node_modules installed (bench/run installs it).
    #[arg(long, value_name = "DIR")]
    pub peer_node_dir: Option<PathBuf>,
    /// Why the Node.js peer is not available (printed in its row).
    #[arg(long, value_name = "REASON")]
    pub peer_node_missing: Option<String>,
    /// Give up on a scenario after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json_out: Option<PathBuf>,
    /// Internal: run as the soak's consumer process in this namespace.
    #[arg(long, hide = true, value_name = "NS")]
    pub soak_consumer: Option<String>,
}

impl Params {
    fn peer_setup(&self) -> PeerSetup {
        PeerSetup {
            rust_bin: self.peer_rust_bin.clone(),
            rust_missing: self.peer_rust_missing.clone(),
            node_dir: self.peer_node_dir.clone(),
            node_missing: self.peer_node_missing.clone(),
        }
    }

    pub(crate) fn wants(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

/// What every scenario shares.
pub(crate) struct Ctx {
    pub(crate) target: Target,
    pub(crate) params: Params,
    pub(crate) redis: RedisConnector,
    /// For `INFO`, cleanup and the admin views (a cluster connection on a cluster).
    pub(crate) conn: RedisConn,
    /// The nodes whose CPU the meters read: the one server, or each master
    /// and replica of a private deployment (`--cluster`).
    pub(crate) cpu_nodes: Vec<measure::CpuNode>,
    /// This run's namespace prefix.
    pub(crate) ns: String,
    ids: AtomicU32,
}

impl Ctx {
    pub(crate) fn new(
        target: Target,
        params: Params,
        redis: RedisConnector,
        conn: RedisConn,
        cpu_nodes: Vec<measure::CpuNode>,
    ) -> Self {
        Ctx {
            ns: format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            target,
            params,
            redis,
            conn,
            cpu_nodes,
            ids: AtomicU32::new(0),
        }
    }

    /// A fresh sub-namespace for one scenario and its topology.
    pub(crate) fn topology(&self, tag: &str) -> Result<(Topology, String), String> {
        let ns = format!("{}-{tag}", self.ns);
        let topology = Topology::new(&ns, self.target.partitions).map_err(|e| e.to_string())?;
        Ok((topology, ns))
    }

    pub(crate) fn next_id(&self) -> u32 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Deletes every key of a namespace (`SCAN`, not `KEYS`). On a cluster
    /// each master is scanned through its own connection and keys are
    /// deleted one per command (they may lie in different slots).
    pub(crate) async fn cleanup(&self, ns: &str) {
        if self.conn.is_cluster() {
            for node in self.cpu_nodes.iter().filter(|n| n.master) {
                delete_matching(&node.conn, ns, false).await;
            }
        } else {
            delete_matching(&self.conn, ns, true).await;
        }
    }
}

/// `UNLINK`s every key matching `{ns}:*` on one server, `together` in one
/// command per `SCAN` page or one command per key.
async fn delete_matching(conn: &RedisConn, ns: &str, together: bool) {
    let mut conn = conn.clone();
    let mut cursor: u64 = 0;
    loop {
        let reply: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{ns}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await;
        let Ok((next, keys)) = reply else { return };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = if together {
                redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await
            } else {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.cmd("UNLINK").arg(k).ignore();
                }
                pipe.query_async(&mut conn).await
            };
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

pub(crate) fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| measure::kib_field(&m, "MemTotal"))
        .map(|kb| format!(", {:.0} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cores} cores, {cpu}{mem}")
}

pub(crate) async fn redis_version(conn: &RedisConn) -> String {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn.clone())
        .await
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned()
}

/// Progress on stderr, so a long run shows where it is.
pub(crate) fn progress(what: &str) {
    eprintln!("eventbus-bench: {what}");
}

pub(crate) fn ours_or_failed(name: &str, r: Result<Row, String>) -> Row {
    r.unwrap_or_else(|e| Row::skipped(name, Role::Eventbus, format!("failed: {e}")))
}

/// Runs every scenario asked for and returns the report. A scenario that
/// fails becomes a row saying why; only a Redis that cannot be reached at
/// all is an error. Returns `None` when this process was started as the
/// soak's consumer (`--soak-consumer`) and has finished.
pub async fn run(target: Target, params: Params) -> Result<Option<Report>, String> {
    let redis = RedisConnector::new(&target.redis_url, RedisOptions::default())
        .map_err(|e| e.to_string())?;
    let conn = redis.shared().await.map_err(|e| e.to_string())?;
    if let Some(ns) = params.soak_consumer.clone() {
        soak::consumer_process(&redis, &target, &ns).await?;
        return Ok(None);
    }
    let cpu_nodes = vec![measure::CpuNode {
        name: "redis".into(),
        master: true,
        conn: conn.clone(),
    }];
    let ctx = Ctx::new(target, params, redis, conn, cpu_nodes);
    let load_before = load_average();
    let date = chrono_now();
    let p = &ctx.params;
    let baselines = !p.skip_baselines;
    let peers = !p.skip_peers && p.wants("peers");
    let mut sections = Vec::new();

    let xadd16 =
        if baselines && (p.wants("publish-batch") || p.wants("unordered") || p.wants("ordered")) {
            Some(baseline::redis_xadd(&ctx, 16, p.events).await)
        } else {
            None
        };

    if p.wants("publish-batch") {
        progress("publish batched");
        let mut s = Section::new(
            "publish batched",
            format!(
                "{} events in batches of {}, {} batches in flight on one connection",
                p.events, p.batch, p.inflight
            ),
        );
        s.rows.push(ours_or_failed(
            "eventbus publish_batch",
            scenarios::publish_batched(&ctx).await,
        ));
        s.rows.extend(xadd16.clone());
        if peers {
            s.rows
                .extend(peers::rows(&ctx, peers::PeerScenario::Batched).await);
        }
        sections.push(s);
    }

    if p.wants("publish-single") {
        progress("publish one at a time");
        let mut s = Section::new(
            "publish one at a time",
            format!(
                "{} events, one per publish call, {} calls at once",
                p.events, p.publishers
            ),
        );
        s.rows.push(ours_or_failed(
            "eventbus publish",
            scenarios::publish_single(&ctx).await,
        ));
        if baselines {
            s.rows.push(baseline::redis_xadd(&ctx, 1, p.events).await);
        }
        if peers {
            s.rows
                .extend(peers::rows(&ctx, peers::PeerScenario::Single).await);
        }
        sections.push(s);
    }

    let redis_ceiling = |row: &Option<Row>| {
        row.clone().map(|r| {
            r.with_note(
                "XADD alone; consuming adds XREADGROUP and XACK per event, so about a third of it is the ceiling",
            )
        })
    };
    if p.wants("unordered") {
        progress("publish → consume → ack, unordered");
        let mut s = Section::new(
            "publish → consume → ack, unordered",
            format!(
                "{} events published in batches while {} consumers (× {} handlers) read, run a no-op handler and ack; \
                 timed to the last ack",
                p.events, p.consumers, p.concurrency
            ),
        );
        s.rows.push(ours_or_failed(
            "eventbus unordered",
            scenarios::publish_consume_ack(&ctx, ConsumerMode::Unordered, p.consumers).await,
        ));
        s.rows.extend(redis_ceiling(&xadd16));
        if peers {
            s.rows
                .extend(peers::rows(&ctx, peers::PeerScenario::ConsumeAck).await);
        }
        sections.push(s);
    }

    if p.wants("ordered") {
        progress("publish → consume → ack, ordered");
        let mut s = Section::new(
            "publish → consume → ack, ordered",
            format!(
                "{} events while group members ({:?}) hold leases on the {} partitions, one entry \
                 at a time per partition; the clock starts once every partition is leased; timed to the last ack",
                p.events, p.ordered_members, ctx.target.partitions
            ),
        );
        for &members in &p.ordered_members {
            s.rows.push(ours_or_failed(
                &format!("eventbus ordered ({members})"),
                scenarios::publish_consume_ack(&ctx, ConsumerMode::Ordered, members).await,
            ));
        }
        s.rows.extend(redis_ceiling(&xadd16));
        if peers {
            for name in [
                "omniqueue 0.3 (Redis Streams)",
                "apalis 1.0 + apalis-redis",
                "BullMQ 6 (Node.js)",
            ] {
                s.rows.push(Row::skipped(
                    name,
                    Role::Peer,
                    "cannot: no per-key ordered consumption across workers",
                ));
            }
        }
        sections.push(s);
    }

    if p.wants("rebalance") {
        progress("ordered rebalance");
        sections.push(ordered::rebalance(&ctx).await);
    }

    if p.wants("latency") {
        progress("publish → handler latency");
        let mut s = Section::new(
            "publish → handler latency",
            format!(
                "a fixed offered rate for {} s, one publish call per event, {} unordered consumers",
                p.rate_secs, p.consumers
            ),
        );
        s.compare_rates = false;
        for &rate in &p.rates {
            s.rows.push(ours_or_failed(
                &format!("eventbus publish → handler @ {rate}/s"),
                scenarios::publish_to_handler_at_rate(&ctx, rate).await,
            ));
        }
        sections.push(s);
    }

    if p.wants("scheduled") {
        progress("scheduled lateness");
        sections.push(scheduled::run(&ctx).await);
    }

    if !p.skip_outbox && p.wants("outbox") {
        progress("outbox");
        let mut outbox = outbox::run(&ctx).await;
        if peers {
            for name in [
                "omniqueue 0.3 (Redis Streams)",
                "apalis 1.0 + apalis-redis",
                "BullMQ 6 (Node.js)",
            ] {
                outbox[0].rows.push(Row::skipped(
                    name,
                    Role::Peer,
                    "cannot: no transactional outbox or inbox",
                ));
            }
        }
        sections.extend(outbox);
    }

    if p.soak_secs > 0 && p.wants("soak") {
        progress("consumer soak");
        sections.push(soak::run(&ctx).await);
    }

    if p.wants("retention") {
        progress("retention soak");
        sections.extend(retention::run(&ctx).await);
    }

    for s in &mut sections {
        s.compute_ratios();
    }
    ctx.cleanup(&ctx.ns).await;
    let p = &ctx.params;
    let report = Report {
        date,
        machine: machine(),
        load_before,
        load_after: load_average(),
        redis_version: redis_version(&ctx.conn).await,
        params: params_json(p, ctx.target.partitions),
        sections,
        comparison: Vec::new(),
    };
    write_json_out(p, &report)?;
    Ok(Some(report))
}

/// The parameters as the report shows them.
pub(crate) fn params_json(p: &Params, partitions: u32) -> serde_json::Value {
    serde_json::json!({
        "events": p.events, "payload_bytes": p.payload, "partitions": partitions,
        "batch": p.batch, "inflight": p.inflight, "consumers": p.consumers,
        "concurrency": p.concurrency, "publishers": p.publishers, "rates": p.rates,
        "outbox_events": p.outbox_events, "outbox_rates": p.outbox_rates, "inbox_batches": p.inbox_batches,
        "rate_secs": p.rate_secs, "peer_events": p.peer_events,
        "ordered_members": p.ordered_members, "rebalance_rounds": p.rebalance_rounds,
        "peer_concurrency": p.peer_concurrency, "soak_secs": p.soak_secs,
        "soak_rate": p.soak_rate, "retention_secs": p.retention_secs,
        "retention_rate": p.retention_rate, "retention_window_secs": p.retention_window_secs,
        "retention_lag_ms": p.retention_lag_ms, "retention_interval_ms": p.retention_interval_ms,
        "retention_rounds": p.retention_rounds,
    })
}

/// Writes the report to `--json-out`, if given.
pub(crate) fn write_json_out(p: &Params, report: &Report) -> Result<(), String> {
    if let Some(path) = &p.json_out {
        let json = serde_json::to_string_pretty(report).expect("a report serializes");
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Now in UTC, RFC 3339, to the second.
pub(crate) fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
