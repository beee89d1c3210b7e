//! One Redis vs a 3-master Redis Cluster, in one run (`eventbus-bench
//! --cluster`, `bench/run --cluster`).
//!
//! Both deployments are private and started by this run through the
//! testkit, with the same persistence (by default the testkit's: AOF,
//! `appendfsync always`, no RDB snapshots; see [`Persistence`]) and the
//! same shape per shard: the one Redis is a master with
//! one replica, the cluster 3 masters with one replica each
//! (`redis-cli --cluster create … --cluster-replicas 1`). The cluster gets
//! Redis's default `cluster-node-timeout` (15 s) instead of the testkit's
//! 1.5 s, so a node starved of CPU under load is not failed over mid-run;
//! the run checks at the end that the masters did not change.
//!
//! Each scenario is the normal run's code (`scenarios`) given the other
//! deployment's connector: publish batched, publish one at a time,
//! publish → consume → ack unordered and ordered. Per scenario it runs on
//! the one Redis, then on the cluster, so load on the machine that drifts
//! during the run affects both sides alike. The meters read `INFO cpu` of
//! every master and replica, so each row shows where the CPU went.

use std::time::{Duration, Instant};

use eventbus::{ConsumerMode, RedisConn, RedisConnector, RedisOptions};
use eventbus_testkit::{RedisCluster, RedisServer};

use crate::measure::CpuNode;
use crate::report::{Comparison, Report, Row, Section};
use crate::{ours_or_failed, progress, scenarios, Ctx, Params, Target};

/// Extra `redis-server` arguments for every cluster node: Redis's default
/// node timeout (see the module docs).
const CLUSTER_ARGS: &[&str] = &["--cluster-node-timeout", "15000"];

/// The persistence of every node of both deployments (`--persistence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Persistence {
    /// AOF with `appendfsync always` (the testkit's default): a write is
    /// acknowledged once it is on disk, so fsync latency bounds each node.
    Always,
    /// AOF with `appendfsync everysec`: written at once, synced every second.
    Everysec,
    /// No AOF and no snapshots: memory only, so CPU bounds each node.
    None,
}

impl Persistence {
    /// `redis-server` arguments on top of the testkit's defaults.
    fn args(self) -> &'static [&'static str] {
        match self {
            Persistence::Always => &[],
            Persistence::Everysec => &["--appendfsync", "everysec"],
            Persistence::None => &["--appendonly", "no"],
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Persistence::Always => "AOF appendfsync always",
            Persistence::Everysec => "AOF appendfsync everysec",
            Persistence::None => "no persistence",
        }
    }
}

/// The scenarios compared, with their `--only` section names.
#[derive(Debug, Clone, Copy)]
enum Scenario {
    Batched,
    Single,
    Unordered(usize),
    Ordered(usize),
}

impl Scenario {
    fn name(self) -> String {
        match self {
            Scenario::Batched => "publish batched".to_owned(),
            Scenario::Single => "publish one at a time".to_owned(),
            Scenario::Unordered(n) => format!("publish → consume → ack, unordered ({n})"),
            Scenario::Ordered(n) => format!("publish → consume → ack, ordered ({n})"),
        }
    }

    async fn run(self, ctx: &Ctx) -> Row {
        let name = self.name();
        let row = match self {
            Scenario::Batched => scenarios::publish_batched(ctx).await,
            Scenario::Single => scenarios::publish_single(ctx).await,
            Scenario::Unordered(n) => {
                scenarios::publish_consume_ack(ctx, ConsumerMode::Unordered, n).await
            }
            Scenario::Ordered(n) => {
                scenarios::publish_consume_ack(ctx, ConsumerMode::Ordered, n).await
            }
        };
        let mut row = ours_or_failed(&name, row);
        row.system = name;
        row
    }
}

/// A connection to one node alone (not a cluster connection).
async fn node_conn(url: &str) -> Result<RedisConn, String> {
    RedisConnector::new(url, RedisOptions::default())
        .map_err(|e| e.to_string())?
        .shared()
        .await
        .map_err(|e| e.to_string())
}

/// Waits until the replica on `url` has its link to the master up and has
/// finished the initial sync.
async fn wait_replica_synced(url: &str, within: Duration) -> Result<(), String> {
    let started = Instant::now();
    let mut conn = node_conn(url).await?;
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        let up = info.lines().any(|l| l.trim() == "master_link_status:up");
        let syncing = info
            .lines()
            .any(|l| l.trim() == "master_sync_in_progress:1");
        if up && !syncing {
            return Ok(());
        }
        if started.elapsed() > within {
            return Err(format!(
                "the replica at {url} did not sync within {within:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn target(url: String, partitions: u32) -> Target {
    Target {
        redis_url: url,
        // No PostgreSQL scenario runs here.
        database_url: String::new(),
        partitions,
        self_args: Vec::new(),
    }
}

/// A context on `url` whose meters read `nodes` (name, master, URL).
pub(crate) async fn context(
    url: String,
    params: &Params,
    partitions: u32,
    nodes: Vec<(String, bool, String)>,
) -> Result<Ctx, String> {
    let redis = RedisConnector::new(&url, RedisOptions::default()).map_err(|e| e.to_string())?;
    let conn = redis.shared().await.map_err(|e| e.to_string())?;
    let mut cpu_nodes = Vec::new();
    for (name, master, url) in nodes {
        cpu_nodes.push(CpuNode {
            name,
            master,
            conn: node_conn(&url).await?,
        });
    }
    Ok(Ctx::new(
        target(url, partitions),
        params.clone(),
        redis,
        conn,
        cpu_nodes,
    ))
}

/// Starts a private Redis (a master and its replica) and a private 3-master
/// Redis Cluster (with 3 replicas), all with `persistence`, runs the
/// throughput scenarios asked for (`--only`: publish-batch, publish-single,
/// unordered, ordered) on each in turn, and returns the report: a section
/// per deployment with every row, and the comparison (cluster ÷ one Redis,
/// CPU per node). The servers are stopped and their files removed at the end.
pub async fn single_vs_cluster(
    params: Params,
    partitions: u32,
    persistence: Persistence,
) -> Result<Report, String> {
    let load_before = crate::load_average();
    let date = crate::chrono_now();
    let kept = persistence.describe();
    progress(&format!(
        "starting a private Redis (master + replica) and a private Redis Cluster \
         (3 masters + 3 replicas), all {kept}"
    ));
    let (master, replica, cluster, masters) = tokio::task::spawn_blocking(move || {
        let master = RedisServer::start_with(persistence.args());
        let port = master.port().to_string();
        let mut args = persistence.args().to_vec();
        args.extend(["--replicaof", "127.0.0.1", &port]);
        let replica = RedisServer::start_with(&args);
        let mut args = persistence.args().to_vec();
        args.extend(CLUSTER_ARGS);
        let cluster = RedisCluster::start_with(&args);
        let masters = cluster.masters();
        (master, replica, cluster, masters)
    })
    .await
    .map_err(|e| format!("could not start the private servers: {e}"))?;
    wait_replica_synced(&replica.url(), Duration::from_secs(30)).await?;

    let single = context(
        master.url(),
        &params,
        partitions,
        vec![
            (format!("master :{}", master.port()), true, master.url()),
            (format!("replica :{}", replica.port()), false, replica.url()),
        ],
    )
    .await?;
    let replicas: Vec<u16> = cluster
        .ports()
        .into_iter()
        .filter(|p| !masters.contains(p))
        .collect();
    let mut cluster_nodes: Vec<(String, bool, String)> = masters
        .iter()
        .map(|&p| (format!("master :{p}"), true, cluster.url(p)))
        .collect();
    cluster_nodes.extend(
        replicas
            .iter()
            .map(|&p| (format!("replica :{p}"), false, cluster.url(p))),
    );
    let on_cluster = context(cluster.cluster_url(), &params, partitions, cluster_nodes).await?;

    let p = &params;
    let mut wanted = Vec::new();
    if p.wants("publish-batch") {
        wanted.push(Scenario::Batched);
    }
    if p.wants("publish-single") {
        wanted.push(Scenario::Single);
    }
    if p.wants("unordered") {
        wanted.push(Scenario::Unordered(p.consumers));
    }
    if p.wants("ordered") {
        wanted.extend(p.ordered_members.iter().map(|&m| Scenario::Ordered(m)));
    }

    let mut one = Section::new(
        "on one Redis",
        format!(
            "a private redis-server :{} with one replica :{}, {kept}; {} events per scenario, \
             {} partitions, payload {} bytes, batches of {} ({} in flight), {} one-at-a-time publishers",
            master.port(),
            replica.port(),
            p.events,
            partitions,
            p.payload,
            p.batch,
            p.inflight,
            p.publishers
        ),
    );
    let mut many = Section::new(
        "on a 3-master Redis Cluster",
        format!(
            "a private cluster, masters :{} with one replica each, {kept}, \
             cluster-node-timeout 15 s; the same scenarios",
            masters
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" :")
        ),
    );
    one.compare_rates = false;
    many.compare_rates = false;
    let mut comparison = Vec::new();
    for scenario in wanted {
        let name = scenario.name();
        progress(&format!("{name}: on one Redis"));
        let a = scenario.run(&single).await;
        progress(&format!("{name}: on the cluster"));
        let b = scenario.run(&on_cluster).await;
        comparison.push(Comparison::of(name, &a, &b));
        one.rows.push(a);
        many.rows.push(b);
    }

    let masters_after = tokio::task::spawn_blocking(move || {
        let m = cluster.masters();
        drop(cluster);
        m
    })
    .await
    .map_err(|e| format!("could not read the cluster's masters: {e}"))?;
    if masters_after != masters {
        many.what.push_str(&format!(
            "; NOTE: the masters changed during the run ({masters:?} → {masters_after:?}): a failover happened"
        ));
    }
    let redis_version = crate::redis_version(&single.conn).await;
    drop((single, on_cluster, master, replica));

    let mut params_json = crate::params_json(p, partitions);
    params_json["deployments"] = serde_json::json!(format!(
        "one Redis: 1 master + 1 replica; cluster: 3 masters + 3 replicas; all {kept}"
    ));
    let report = Report {
        date,
        machine: crate::machine(),
        load_before,
        load_after: crate::load_average(),
        redis_version,
        params: params_json,
        sections: vec![one, many],
        comparison,
    };
    crate::write_json_out(p, &report)?;
    Ok(report)
}
