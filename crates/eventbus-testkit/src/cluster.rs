//! A private Redis Cluster: 3 masters and 3 replicas on free ports in a temp
//! dir, which a test may take a master away from.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Masters in the cluster; each gets one replica.
const MASTERS: usize = 3;
/// All nodes: masters and their replicas.
const NODES: usize = MASTERS * 2;
/// Hash slots of a Redis Cluster.
const SLOTS: u32 = 16384;
/// `cluster-node-timeout`: how long a node may not answer before it is
/// suspected. Small, so a failover takes seconds; not so small that a busy
/// test machine (AOF with `appendfsync always`) sees spurious failovers.
const NODE_TIMEOUT_MS: u64 = 1500;
/// The cluster bus listens on the client port + 10000.
const BUS_OFFSET: u16 = 10000;
/// Client ports are picked in `[PORT_LOW, PORT_HIGH)`: with the bus ports
/// (+10000) this stays below Linux's ephemeral range (32768 and up), so no
/// outgoing connection and no `bind(0)` (e.g. [`crate::RedisServer`]) takes
/// a port of ours.
const PORT_LOW: u16 = 12000;
const PORT_HIGH: u16 = 22000;

/// A private Redis Cluster for one test: 3 masters and 3 replicas
/// (`redis-cli --cluster create … --cluster-replicas 1`), each node a
/// `redis-server` on its own free port (its bus port, +10000, free too) with
/// its own directory in a temp dir, AOF with `appendfsync always` and a short
/// `cluster-node-timeout`, so a killed master's replica takes over in a few
/// seconds. Every node is killed and the temp dir removed when it is dropped.
///
/// The methods take `&self` and block (they talk to the nodes with
/// synchronous connections and sleep while waiting): an async test that
/// keeps work running during a failover holds the cluster in an `Arc` and
/// calls the waiting methods from `tokio::task::spawn_blocking`.
///
/// Topology questions ([`masters`](Self::masters),
/// [`master_for_slot`](Self::master_for_slot), …) are answered live from
/// `CLUSTER NODES` of a running node, so they follow failovers.
#[derive(Debug)]
pub struct RedisCluster {
    dir: TempDir,
    extra: Vec<String>,
    nodes: Mutex<Vec<Node>>,
    /// Slots a master owned when [`kill_master`](Self::kill_master) killed it.
    killed: Mutex<HashMap<u16, Vec<(u16, u16)>>>,
}

#[derive(Debug)]
struct Node {
    port: u16,
    child: Option<Child>,
    _lease: PortLease,
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// The node id (40 hex characters).
    pub id: String,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    /// True for a master, false for a replica.
    pub master: bool,
    /// For a replica, the id of its master.
    pub master_id: Option<String>,
    /// Flagged `fail` or `fail?` by the node that answered.
    pub failing: bool,
    /// The cluster bus link to it is `connected` (as seen by the node that answered).
    pub connected: bool,
    /// Slot ranges it serves (inclusive), for a master.
    pub slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        node_url(self.port)
    }

    /// True if it serves `slot`.
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }
}

/// What [`RedisCluster::kill_master_of`] takes: a key (its slot is asked of
/// the cluster) or a slot.
#[derive(Debug, Clone, Copy)]
pub enum KeyOrSlot<'a> {
    /// A key; may carry a `{hash tag}`.
    Key(&'a str),
    /// A hash slot, `0..16384`.
    Slot(u16),
}

impl<'a> From<&'a str> for KeyOrSlot<'a> {
    fn from(key: &'a str) -> Self {
        KeyOrSlot::Key(key)
    }
}

impl<'a> From<&'a String> for KeyOrSlot<'a> {
    fn from(key: &'a String) -> Self {
        KeyOrSlot::Key(key)
    }
}

impl From<u16> for KeyOrSlot<'_> {
    fn from(slot: u16) -> Self {
        KeyOrSlot::Slot(slot)
    }
}

impl RedisCluster {
    /// Starts 6 nodes, creates the cluster (3 masters, 1 replica each) and
    /// waits until it is healthy (see [`health`](Self::health)).
    ///
    /// # Panics
    /// If `redis-server` or `redis-cli` is not installed, or the cluster is
    /// not healthy within 60 s.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// As [`start`](Self::start), with extra `redis-server` arguments for
    /// every node, kept across restarts; they come last, so they override
    /// the defaults (e.g. `--cluster-node-timeout 5000`).
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_with(extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("eventbus-redis-cluster-")
                .tempdir()
                .expect("create temp dir for the redis cluster");
            let cluster = RedisCluster {
                dir,
                extra: extra.clone(),
                nodes: Mutex::new(Vec::new()),
                killed: Mutex::new(HashMap::new()),
            };
            match cluster.bring_up() {
                Ok(()) => return cluster,
                // dropped: the processes are killed and the directory removed
                Err(e) => last = e,
            }
        }
        panic!("could not start a private redis cluster: {last}");
    }

    fn bring_up(&self) -> Result<(), String> {
        let leases = PortLease::take(NODES);
        {
            let mut nodes = self.lock_nodes();
            for lease in leases {
                nodes.push(Node {
                    port: lease.port,
                    child: None,
                    _lease: lease,
                });
            }
            for node in nodes.iter_mut() {
                let child = self.spawn_node(node.port)?;
                node.child = Some(child);
            }
        }
        for port in self.ports() {
            self.wait_answers(port, Duration::from_secs(10))?;
        }
        self.create()?;
        self.wait_healthy(Duration::from_secs(60))
    }

    fn node_dir(&self, port: u16) -> PathBuf {
        self.dir.path().join(port.to_string())
    }

    fn spawn_node(&self, port: u16) -> Result<Child, String> {
        let dir = self.node_dir(port);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        crate::redis_server::redis_server_command(port, &dir)
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            // A replica takes over however long its link was down.
            .args(["--cluster-replica-validity-factor", "0"])
            // Replicas sync at once (the default waits 5 s for more replicas).
            .args(["--repl-diskless-sync-delay", "0"])
            .args(&self.extra)
            .spawn()
            .map_err(|e| format!("spawn redis-server (is it installed?): {e}"))
    }

    /// Waits until the node on `port` answers `PING`; fails early if its
    /// process exited (port taken, bad config).
    fn wait_answers(&self, port: u16, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if !self.is_running(port) {
                return Err(format!(
                    "redis-server on port {port} exited: {}",
                    self.log_tail(port)
                ));
            }
            if let Ok(mut c) = connect(port) {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("redis-server on port {port} did not answer"))
    }

    fn create(&self) -> Result<(), String> {
        let log_path = self.dir.path().join("cluster-create.log");
        let log = File::create(&log_path).map_err(|e| format!("create log: {e}"))?;
        let err = log.try_clone().map_err(|e| format!("clone log: {e}"))?;
        let mut cli = Command::new("redis-cli");
        cli.arg("--cluster").arg("create");
        for port in self.ports() {
            cli.arg(format!("127.0.0.1:{port}"));
        }
        let mut child = cli
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn redis-cli (is it installed?): {e}"))?;
        // redis-cli waits for the nodes to join; do not wait for ever.
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-cli --cluster create did not finish: {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "redis-cli --cluster create failed ({status}): {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            ))
        }
    }

    fn lock_nodes(&self) -> MutexGuard<'_, Vec<Node>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `redis://127.0.0.1:<port>` of every node, running or not: the seed
    /// URLs for a cluster client.
    pub fn seed_urls(&self) -> Vec<String> {
        self.ports().into_iter().map(node_url).collect()
    }

    /// The cluster as one URL for `eventbus` (`RedisConnector::new`,
    /// `REDIS_URL`): `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...`.
    pub fn cluster_url(&self) -> String {
        let hosts: Vec<String> = self
            .ports()
            .into_iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The client ports of all nodes, in creation order (the first three
    /// were created as masters).
    pub fn ports(&self) -> Vec<u16> {
        self.lock_nodes().iter().map(|n| n.port).collect()
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self, port: u16) -> String {
        node_url(port)
    }

    /// The temp dir holding one directory per node (named by port, with
    /// its `redis.log`, AOF and `nodes-<port>.conf`) and `cluster-create.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The OS process id of the node on `port`, while it runs.
    pub fn pid(&self, port: u16) -> Option<u32> {
        let mut nodes = self.lock_nodes();
        let node = nodes.iter_mut().find(|n| n.port == port)?;
        match node.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => node.child.as_ref().map(Child::id),
            _ => None,
        }
    }

    /// True while the node on `port` runs.
    pub fn is_running(&self, port: u16) -> bool {
        let mut nodes = self.lock_nodes();
        nodes
            .iter_mut()
            .find(|n| n.port == port)
            .and_then(|n| n.child.as_mut())
            .map(|c| matches!(c.try_wait(), Ok(None)))
            .unwrap_or(false)
    }

    fn running_ports(&self) -> Vec<u16> {
        self.ports()
            .into_iter()
            .filter(|&p| self.is_running(p))
            .collect()
    }

    /// The cluster as `CLUSTER NODES` of a running node describes it (the
    /// first that answers).
    ///
    /// # Panics
    /// If no node answers.
    pub fn nodes(&self) -> Vec<ClusterNode> {
        let mut last = String::from("no node runs");
        for port in self.running_ports() {
            match cluster_nodes(port) {
                Ok(nodes) => return nodes,
                Err(e) => last = format!("port {port}: {e}"),
            }
        }
        panic!("no node of the private redis cluster answers CLUSTER NODES: {last}");
    }

    /// The ports of the current masters that are not failing, by port.
    pub fn masters(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .nodes()
            .into_iter()
            .filter(|n| n.master && !n.failing && !n.slots.is_empty())
            .map(|n| n.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// The URLs of the current masters, as [`masters`](Self::masters).
    pub fn master_urls(&self) -> Vec<String> {
        self.masters().into_iter().map(node_url).collect()
    }

    /// The ports of the replicas of the master on `master_port` that are
    /// not failing.
    pub fn replicas_of(&self, master_port: u16) -> Vec<u16> {
        let nodes = self.nodes();
        let Some(id) = nodes.iter().find(|n| n.port == master_port).map(|n| &n.id) else {
            return Vec::new();
        };
        nodes
            .iter()
            .filter(|n| !n.master && !n.failing && n.master_id.as_ref() == Some(id))
            .map(|n| n.port)
            .collect()
    }

    /// The hash slot of `key`, as the cluster computes it (`CLUSTER KEYSLOT`).
    ///
    /// # Panics
    /// If no node answers.
    pub fn keyslot(&self, key: &str) -> u16 {
        let mut last = String::from("no node runs");
        for port in self.running_ports() {
            match connect(port).and_then(|mut c| {
                redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(key)
                    .query::<u16>(&mut c)
            }) {
                Ok(slot) => return slot,
                Err(e) => last = format!("port {port}: {e}"),
            }
        }
        panic!("no node of the private redis cluster answers CLUSTER KEYSLOT: {last}");
    }

    /// The port of the master serving `slot` now.
    ///
    /// # Panics
    /// If no running master serves it (e.g. mid-failover).
    pub fn master_for_slot(&self, slot: u16) -> u16 {
        let nodes = self.nodes();
        nodes
            .iter()
            .find(|n| n.master && !n.failing && n.serves(slot))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no master serves slot {slot}: {nodes:?}"))
    }

    /// The port of the master serving `key`'s slot now.
    ///
    /// # Panics
    /// As [`master_for_slot`](Self::master_for_slot).
    pub fn node_for_key(&self, key: &str) -> u16 {
        self.master_for_slot(self.keyslot(key))
    }

    /// Kills the master serving `key`'s slot (or the slot) with SIGKILL;
    /// returns its port, for [`wait_for_failover`](Self::wait_for_failover).
    ///
    /// # Panics
    /// As [`kill_master`](Self::kill_master).
    pub fn kill_master_of<'a>(&self, key_or_slot: impl Into<KeyOrSlot<'a>>) -> u16 {
        let slot = match key_or_slot.into() {
            KeyOrSlot::Key(key) => self.keyslot(key),
            KeyOrSlot::Slot(slot) => slot,
        };
        let port = self.master_for_slot(slot);
        self.kill_master(port);
        port
    }

    /// Kills the master on `port` with SIGKILL (no shutdown, no save) and
    /// waits for its process to exit, remembering the slots it served.
    ///
    /// # Panics
    /// If the node on `port` is not a running master of this cluster.
    pub fn kill_master(&self, port: u16) {
        let nodes = self.nodes();
        let me = nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("port {port} is not a node of this cluster: {nodes:?}"));
        assert!(
            me.master && !me.slots.is_empty(),
            "node on port {port} is not a master serving slots: {me:?}"
        );
        assert!(self.is_running(port), "node on port {port} is not running");
        self.killed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port, me.slots.clone());
        self.kill(port);
    }

    /// Kills the node on `port` (master or replica) with SIGKILL and waits
    /// for its process to exit. Nothing happens if it is not running.
    pub fn kill(&self, port: u16) {
        let mut nodes = self.lock_nodes();
        if let Some(mut c) = nodes
            .iter_mut()
            .find(|n| n.port == port)
            .and_then(|n| n.child.take())
        {
            kill_tree(&mut c);
        }
    }

    /// Waits until a replica of the master that was on `old_master` (killed
    /// by [`kill_master`](Self::kill_master) or
    /// [`kill_master_of`](Self::kill_master_of)) has been promoted: every
    /// running node says `cluster_state:ok` and names one running master,
    /// not `old_master`, for every slot the old master served. Returns the
    /// new master's port.
    ///
    /// # Panics
    /// If `old_master` was not killed by this cluster's `kill_master*`, or
    /// the failover does not finish `within`.
    pub fn wait_for_failover(&self, old_master: u16, within: Duration) -> u16 {
        let slots = self
            .killed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&old_master)
            .cloned()
            .unwrap_or_else(|| panic!("port {old_master} was not killed by kill_master"));
        let deadline = Instant::now() + within;
        let mut last;
        loop {
            match self.failover_done(old_master, &slots) {
                Ok(port) => return port,
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                panic!("no failover of the master on port {old_master} within {within:?}: {last}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn failover_done(&self, old_master: u16, slots: &[(u16, u16)]) -> Result<u16, String> {
        let mut new_master = None;
        for port in self.running_ports() {
            let info = cluster_info(port)?;
            if info.get("cluster_state").map(String::as_str) != Some("ok") {
                return Err(format!("port {port}: cluster_state is not ok"));
            }
            let nodes = cluster_nodes(port)?;
            for &(first, _) in slots {
                let owner = nodes
                    .iter()
                    .find(|n| n.master && !n.failing && n.serves(first))
                    .map(|n| n.port)
                    .ok_or_else(|| format!("port {port}: no master for slot {first}"))?;
                if owner == old_master {
                    return Err(format!(
                        "port {port}: {old_master} still serves slot {first}"
                    ));
                }
                if !self.is_running(owner) {
                    return Err(format!("port {port}: slot {first} on stopped node {owner}"));
                }
                match new_master {
                    None => new_master = Some(owner),
                    Some(p) if p == owner => {}
                    Some(p) => {
                        return Err(format!("slots of {old_master} on both {p} and {owner}"))
                    }
                }
            }
        }
        new_master.ok_or_else(|| "no running node".to_owned())
    }

    /// Starts the node on `port` again (after [`kill`](Self::kill) or
    /// [`kill_master`](Self::kill_master)) on its directory and
    /// `nodes-<port>.conf`, and waits until the whole cluster is healthy
    /// again: a master killed and failed over rejoins as a replica of its
    /// successor.
    ///
    /// # Panics
    /// If it does not start, or the cluster is not healthy within 60 s.
    pub fn restart(&self, port: u16) {
        self.kill(port);
        let mut started = false;
        // The port may linger briefly after a kill; try a few times.
        for _ in 0..20 {
            let child = self
                .spawn_node(port)
                .unwrap_or_else(|e| panic!("restart node {port}: {e}"));
            {
                let mut nodes = self.lock_nodes();
                let node = nodes
                    .iter_mut()
                    .find(|n| n.port == port)
                    .unwrap_or_else(|| panic!("port {port} is not a node of this cluster"));
                node.child = Some(child);
            }
            if self.wait_answers(port, Duration::from_secs(10)).is_ok() {
                started = true;
                break;
            }
            self.kill(port);
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            started,
            "node {port} of the private redis cluster did not restart"
        );
        self.killed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&port);
        if let Err(e) = self.wait_healthy(Duration::from_secs(60)) {
            panic!("private redis cluster not healthy after restarting {port}: {e}");
        }
    }

    /// `Ok` if the cluster is healthy: every node runs and says
    /// `cluster_state:ok` with all 16384 slots assigned and ok and all 6
    /// nodes known; each node sees 3 masters serving slots, none failing,
    /// each with a connected replica; each replica's link to its master is
    /// up. Otherwise what is wrong.
    pub fn health(&self) -> Result<(), String> {
        let ports = self.ports();
        for &port in &ports {
            if !self.is_running(port) {
                return Err(format!("node {port} is not running"));
            }
        }
        for &port in &ports {
            let info = cluster_info(port)?;
            let field = |k: &str| info.get(k).map(String::as_str).unwrap_or("?");
            if field("cluster_state") != "ok" {
                return Err(format!("{port}: cluster_state:{}", field("cluster_state")));
            }
            for k in ["cluster_slots_assigned", "cluster_slots_ok"] {
                if field(k) != SLOTS.to_string() {
                    return Err(format!("{port}: {k}:{}", field(k)));
                }
            }
            if field("cluster_known_nodes") != NODES.to_string() {
                return Err(format!(
                    "{port}: cluster_known_nodes:{}",
                    field("cluster_known_nodes")
                ));
            }
            let nodes = cluster_nodes(port)?;
            if let Some(n) = nodes.iter().find(|n| n.failing || !n.connected) {
                return Err(format!("{port} sees {} failing or disconnected", n.port));
            }
            let masters: Vec<&ClusterNode> = nodes
                .iter()
                .filter(|n| n.master && !n.slots.is_empty())
                .collect();
            if masters.len() != MASTERS {
                return Err(format!("{port} sees {} masters", masters.len()));
            }
            for m in masters {
                if !nodes
                    .iter()
                    .any(|r| !r.master && r.master_id.as_ref() == Some(&m.id))
                {
                    return Err(format!("{port}: master {} has no replica", m.port));
                }
            }
            let replication = info_replication(port)?;
            if replication.get("role").map(String::as_str) == Some("slave")
                && replication.get("master_link_status").map(String::as_str) != Some("up")
            {
                return Err(format!("{port}: replica's link to its master is not up"));
            }
        }
        Ok(())
    }

    fn wait_healthy(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            match self.health() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("not healthy within {within:?}: {e}"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn log_tail(&self, port: u16) -> String {
        let log =
            std::fs::read_to_string(self.node_dir(port).join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for port in self.ports() {
            self.kill(port);
        }
        // the temp dir and the port leases go with the fields
    }
}

/// SIGKILLs a node and the children it forked (an AOF rewrite, an RDB for
/// a replica's sync), which would otherwise outlive it as orphans, and
/// reaps it. The node is stopped first so it forks no more while its
/// children are listed, and its pid cannot be reused until it is reaped.
fn kill_tree(child: &mut Child) {
    let pid = child.id();
    let signal = |sig: &str, pids: &[u32]| {
        let _ = Command::new("kill")
            .arg(sig)
            .args(pids.iter().map(u32::to_string))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    if matches!(child.try_wait(), Ok(None)) {
        signal("-STOP", &[pid]);
        let mut pids = vec![pid];
        pids.extend(children_of(pid));
        signal("-KILL", &pids);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Processes whose parent is `pid`, from `/proc/<n>/stat`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|n| {
            std::fs::read_to_string(format!("/proc/{n}/stat"))
                .ok()
                .and_then(|stat| {
                    // `pid (comm) state ppid …`; comm may hold spaces and parens.
                    let after = &stat[stat.rfind(')')? + 1..];
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

fn node_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// A plain connection to one node, with timeouts so a stopped node cannot hang us.
fn connect(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(node_url(port))?;
    let c = client.get_connection_with_timeout(Duration::from_millis(500))?;
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    c.set_write_timeout(Some(Duration::from_secs(2)))?;
    Ok(c)
}

fn query_text(port: u16, cmd: &mut redis::Cmd) -> Result<String, String> {
    connect(port)
        .and_then(|mut c| cmd.query::<String>(&mut c))
        .map_err(|e| format!("{port}: {e}"))
}

fn fields(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn cluster_info(port: u16) -> Result<HashMap<String, String>, String> {
    query_text(port, redis::cmd("CLUSTER").arg("INFO")).map(|t| fields(&t))
}

fn info_replication(port: u16) -> Result<HashMap<String, String>, String> {
    query_text(port, redis::cmd("INFO").arg("replication")).map(|t| fields(&t))
}

fn cluster_nodes(port: u16) -> Result<Vec<ClusterNode>, String> {
    let text = query_text(port, redis::cmd("CLUSTER").arg("NODES"))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_node(l).ok_or_else(|| format!("{port}: bad CLUSTER NODES line {l:?}")))
        .collect()
}

/// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent> <pong-recv>
/// <config-epoch> <link-state> <slot> <slot> ...`
fn parse_node(line: &str) -> Option<ClusterNode> {
    let parts: Vec<&str> = line.split_whitespace().collect();
    if parts.len() < 8 {
        return None;
    }
    let addr = parts[1].split(['@', ',']).next()?;
    let port = addr.rsplit_once(':')?.1.parse().ok()?;
    let flags: Vec<&str> = parts[2].split(',').collect();
    let slots = parts[8..]
        .iter()
        .filter(|s| !s.starts_with('[')) // importing / migrating
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|x| (x, x)),
        })
        .collect();
    Some(ClusterNode {
        id: parts[0].to_owned(),
        port,
        master: flags.contains(&"master"),
        master_id: (parts[3] != "-").then(|| parts[3].to_owned()),
        failing: flags.iter().any(|f| *f == "fail" || *f == "fail?"),
        connected: parts[7] == "connected",
        slots,
    })
}

/// A client port (with its bus port, +10000) reserved for this process
/// until dropped: a file `<port>` holding our pid in a directory shared by
/// every test process on the machine, created exclusively, so parallel
/// test runs never pick the same port, even while a killed node's port is
/// free until its restart. A lease left by a process that died is taken over.
#[derive(Debug)]
struct PortLease {
    port: u16,
    path: PathBuf,
}

impl PortLease {
    fn take(n: usize) -> Vec<PortLease> {
        let dir = std::env::temp_dir().join("eventbus-testkit-ports");
        std::fs::create_dir_all(&dir).expect("create the port lease directory");
        let mut leases = Vec::with_capacity(n);
        let span = u64::from(PORT_HIGH - PORT_LOW);
        let start = RandomState::new().build_hasher().finish() % span;
        for i in 0..span {
            if leases.len() == n {
                break;
            }
            let port = PORT_LOW + ((start + i) % span) as u16;
            if let Some(lease) = Self::try_take(&dir, port) {
                leases.push(lease);
            }
        }
        assert_eq!(
            leases.len(),
            n,
            "no {n} free port pairs for a redis cluster"
        );
        leases
    }

    fn try_take(dir: &Path, port: u16) -> Option<PortLease> {
        let path = dir.join(port.to_string());
        let created = OpenOptions::new().write(true).create_new(true).open(&path);
        let mut file = match created {
            Ok(f) => f,
            Err(_) => {
                // Held; take it over if its holder is gone.
                let holder = std::fs::read_to_string(&path).ok()?;
                let pid: u32 = holder.trim().parse().ok()?;
                if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
                    return None;
                }
                std::fs::remove_file(&path).ok()?;
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .ok()?
            }
        };
        let lease = PortLease { port, path };
        file.write_all(std::process::id().to_string().as_bytes())
            .ok()?;
        // Both ports must be free now (nothing else on the machine listens there).
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        (free(port) && free(port + BUS_OFFSET)).then_some(lease)
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes_lines() {
        let m = parse_node(
            "07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@40004,host slave \
             e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected",
        )
        .unwrap();
        assert_eq!(m.port, 30004);
        assert!(!m.master && !m.failing && m.connected);
        assert_eq!(
            m.master_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        let m = parse_node(
            "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@40001 myself,master - 0 0 1 \
             connected 0-5460 5462 [5461->-292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f]",
        )
        .unwrap();
        assert!(m.master && m.master_id.is_none());
        assert_eq!(m.slots, vec![(0, 5460), (5462, 5462)]);
        assert!(m.serves(5462) && !m.serves(5461));
        let m = parse_node("a 127.0.0.1:30002@40002 master,fail - 1 1 2 disconnected").unwrap();
        assert!(m.failing && !m.connected && m.slots.is_empty());
    }
}
