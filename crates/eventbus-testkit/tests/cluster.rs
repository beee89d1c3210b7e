//! The private Redis Cluster starts healthy, spreads keys over its masters,
//! fails over a killed master to its replica, and leaves nothing behind.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventbus_testkit::RedisCluster;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

/// Starts a cluster off the async runtime; reports how long it took.
async fn start() -> Arc<RedisCluster> {
    let t0 = Instant::now();
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    eprintln!("cluster started in {:?}", t0.elapsed());
    Arc::new(cluster)
}

async fn connect(cluster: &RedisCluster) -> ClusterConnection {
    ClusterClient::builder(cluster.seed_urls())
        .connection_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(2))
        .retries(20)
        .min_retry_wait(50)
        .max_retry_wait(500)
        .build()
        .unwrap()
        .get_async_connection()
        .await
        .unwrap()
}

/// A plain (non-cluster) connection to one node.
fn node(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_connection()
        .unwrap()
}

#[tokio::test]
async fn starts_healthy_with_three_masters_each_with_a_replica() {
    let cluster = start().await;
    cluster.health().unwrap();
    assert_eq!(cluster.seed_urls().len(), 6);

    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "{:?}", cluster.nodes());
    let mut replicas = BTreeSet::new();
    for &m in &masters {
        let r = cluster.replicas_of(m);
        assert_eq!(r.len(), 1, "master {m}: replicas {r:?}");
        replicas.insert(r[0]);
        // The replica says so itself, and is in sync.
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut node(r[0]))
            .unwrap();
        assert!(info.contains("role:slave"), "{info}");
        assert!(info.contains(&format!("master_port:{m}")), "{info}");
        assert!(info.contains("master_link_status:up"), "{info}");
    }
    let all: BTreeSet<u16> = cluster.ports().into_iter().collect();
    let covered: BTreeSet<u16> = masters.iter().copied().chain(replicas).collect();
    assert_eq!(all, covered, "every node is a master or a master's replica");

    // All 16384 slots are served, each by exactly one master.
    let nodes = cluster.nodes();
    let served: u32 = nodes
        .iter()
        .filter(|n| n.master)
        .flat_map(|n| n.slots.iter())
        .map(|&(a, b)| u32::from(b - a) + 1)
        .sum();
    assert_eq!(served, 16384);
    for port in cluster.ports() {
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut node(port))
            .unwrap();
        assert!(info.contains("cluster_state:ok"), "{port}: {info}");
    }
    assert_eq!(cluster.master_urls().len(), 3);
    assert!(cluster.master_urls()[0].starts_with("redis://127.0.0.1:"));
}

#[tokio::test]
async fn keys_spread_over_the_masters() {
    let cluster = start().await;
    let mut conn = connect(&cluster).await;
    let mut used = BTreeSet::new();
    for p in 0..16 {
        let key = format!("{{orders:{p}}}:stream");
        let slot = cluster.keyslot(&key);
        assert_eq!(
            slot,
            cluster.keyslot(&format!("{{orders:{p}}}")),
            "hash tag"
        );
        let master = cluster.node_for_key(&key);
        assert_eq!(master, cluster.master_for_slot(slot));
        used.insert(master);

        // Written through the cluster client, it is on that master.
        redis::cmd("SET")
            .arg(&key)
            .arg(p)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        let v: i64 = redis::cmd("GET")
            .arg(&key)
            .query(&mut node(master))
            .unwrap();
        assert_eq!(v, p);
    }
    assert_eq!(
        used.into_iter().collect::<Vec<_>>(),
        cluster.masters(),
        "16 partitions land on all three masters"
    );
}

#[tokio::test]
async fn a_killed_master_fails_over_to_its_replica() {
    let cluster = start().await;
    let key = "{orders:7}:stream";
    let old = cluster.node_for_key(key);
    let replica = cluster.replicas_of(old);
    assert_eq!(replica.len(), 1);

    // A write the replica acknowledged (WAIT) survives the failover.
    let mut direct = node(old);
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("before")
        .query(&mut direct)
        .unwrap();
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut direct)
        .unwrap();
    assert_eq!(acked, 1);
    let mut before = connect(&cluster).await;

    let c = Arc::clone(&cluster);
    let (killed, new, took) = tokio::task::spawn_blocking(move || {
        let killed = c.kill_master_of(key);
        let t0 = Instant::now();
        let new = c.wait_for_failover(killed, Duration::from_secs(30));
        (killed, new, t0.elapsed())
    })
    .await
    .unwrap();
    eprintln!("failover took {took:?}");
    assert_eq!(killed, old);
    assert_eq!(new, replica[0], "its replica is promoted");
    assert!(took < Duration::from_secs(15), "failover took {took:?}");
    assert!(!cluster.is_running(old));
    assert_eq!(cluster.node_for_key(key), new);
    assert_eq!(cluster.masters().len(), 3);
    assert!(!cluster.masters().contains(&old));

    // A fresh cluster connection writes to the slot at once.
    let mut after = connect(&cluster).await;
    let v: String = redis::cmd("GET")
        .arg(key)
        .query_async(&mut after)
        .await
        .unwrap();
    assert_eq!(v, "before");
    redis::cmd("SET")
        .arg(key)
        .arg("after")
        .query_async::<()>(&mut after)
        .await
        .unwrap();
    let v: String = redis::cmd("GET").arg(key).query(&mut node(new)).unwrap();
    assert_eq!(v, "after");

    // The connection made before the kill finds the new master (its slot
    // map is refreshed by the client; a few retries at most).
    let t0 = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        match redis::cmd("SET")
            .arg(key)
            .arg("again")
            .query_async::<()>(&mut before)
            .await
        {
            Ok(()) => break,
            Err(e) if tries < 20 => {
                eprintln!("old connection, try {tries}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("old cluster connection never recovered: {e}"),
        }
    }
    eprintln!(
        "old connection wrote after {tries} tries, {:?}",
        t0.elapsed()
    );
    let v: String = redis::cmd("GET").arg(key).query(&mut node(new)).unwrap();
    assert_eq!(v, "again");

    // The old master comes back as the new master's replica.
    let c = Arc::clone(&cluster);
    let t0 = Instant::now();
    tokio::task::spawn_blocking(move || c.restart(old))
        .await
        .unwrap();
    eprintln!("restart took {:?}", t0.elapsed());
    cluster.health().unwrap();
    assert_eq!(cluster.replicas_of(new), vec![old]);
    assert_eq!(cluster.node_for_key(key), new);
}

#[test]
fn kill_master_by_slot_and_failover_again() {
    let cluster = RedisCluster::start();
    let masters = cluster.masters();
    // Every master fails over in turn, by slot; the cluster stays whole.
    for slot in [0u16, 16383] {
        let old = cluster.master_for_slot(slot);
        assert_eq!(cluster.kill_master_of(slot), old);
        let new = cluster.wait_for_failover(old, Duration::from_secs(30));
        assert_ne!(new, old);
        assert_eq!(cluster.master_for_slot(slot), new);
        cluster.restart(old);
    }
    assert_eq!(cluster.masters().len(), masters.len());
    cluster.health().unwrap();
}

#[test]
fn teardown_leaves_no_processes_or_files() {
    let cluster = RedisCluster::start();
    let ports = cluster.ports();
    let pids: Vec<u32> = ports.iter().map(|&p| cluster.pid(p).unwrap()).collect();
    let dir = cluster.dir().to_path_buf();
    assert!(dir.is_dir());
    for &pid in &pids {
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
    // One node down (not a master): teardown copes with it.
    cluster.kill(ports[5]);
    drop(cluster);

    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "redis-server {pid} survived the drop"
        );
    }
    assert!(!dir.exists(), "{} survived the drop", dir.display());
    // Nor any process forked by a node (they would work in its directory).
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let cwd = std::fs::read_link(e.path().join("cwd")).ok()?;
            cwd.starts_with(&dir)
                .then(|| format!("{:?} in {cwd:?}", e.file_name()))
        })
        .collect();
    assert!(
        left.is_empty(),
        "processes left in the cluster's dir: {left:?}"
    );
}
