//! # eventbus-testkit
//!
//! Throw-away infrastructure for eventbus tests, and the conformance suite
//! every transport and consumer mode must pass.
//!
//! - [`RedisServer`]: a private `redis-server` on a free port in a temp dir
//!   (AOF with `appendfsync always`), which a test may kill and restart on
//!   the same data. Tests that kill or restart Redis use one of these, never
//!   the shared server.
//! - [`RedisCluster`]: a private Redis Cluster (3 masters, 3 replicas) on
//!   free ports in a temp dir, which a test may take a master away from
//!   (see [Redis Cluster](#redis-cluster) below).
//! - [`TestNamespace`]: a unique key namespace on a (shared) Redis, whose keys
//!   are deleted when it is dropped, so tests run in parallel.
//! - [`conformance`]: the scenarios (round trip, competing consumers, groups,
//!   failing handlers, close and reopen, claiming, server restart).
//! - [`TestSchema`]: a unique, migrated PostgreSQL schema on the shared
//!   server, dropped when it is dropped.
//! - [`PgServer`]: a private PostgreSQL (`initdb` in a temp dir), which a
//!   test may kill and restart.
//! - [`Collector`]: a handler that records what it was given, and lets a
//!   test wait for a condition on it.
//! - [`HttpTestServer`]: a tiny local HTTP server answering as a test
//!   scripts it, for webhook (HTTP push sink) tests.
//! - [`OtlpReceiver`]: an OTLP/HTTP trace receiver that decodes each
//!   export, for the tracing tests.
//!
//! ## Redis Cluster
//!
//! [`RedisCluster::start`] spawns six `redis-server`s with
//! `--cluster-enabled yes` (AOF, `appendfsync always`, a 1.5 s
//! `cluster-node-timeout`), runs `redis-cli --cluster create …
//! --cluster-replicas 1 --cluster-yes` and returns once the cluster is
//! healthy ([`RedisCluster::health`]): `cluster_state:ok` everywhere, all
//! 16384 slots served, every master with a replica in sync. It takes a few
//! seconds. Ports are picked below the ephemeral range with the bus port
//! (+10000) free too, and leased through files in
//! `$TMPDIR/eventbus-testkit-ports`, so parallel test processes never
//! collide. Dropping it kills every node and removes the temp dir.
//!
//! ```no_run
//! # async fn demo() -> redis::RedisResult<()> {
//! use std::{sync::Arc, time::Duration};
//! use eventbus_testkit::RedisCluster;
//!
//! // start() blocks for seconds: outside the runtime, or in spawn_blocking.
//! let cluster = Arc::new(tokio::task::spawn_blocking(RedisCluster::start).await.unwrap());
//! let client = redis::cluster::ClusterClient::new(cluster.seed_urls())?;
//! let mut conn = client.get_async_connection().await?;
//! let slot = cluster.keyslot("{orders:3}"); // CLUSTER KEYSLOT
//! let old = cluster.node_for_key("{orders:3}"); // master serving it now
//!
//! let c = Arc::clone(&cluster);
//! let new = tokio::task::spawn_blocking(move || {
//!     let old = c.kill_master_of(slot); // SIGKILL
//!     c.wait_for_failover(old, Duration::from_secs(30)) // its replica's port
//! })
//! .await
//! .unwrap();
//! assert_ne!(new, old);
//! redis::cmd("SET").arg("{orders:3}").arg("x").query_async::<()>(&mut conn).await?;
//! // Optionally: the old master back, as a replica of `new`.
//! tokio::task::spawn_blocking(move || cluster.restart(old)).await.unwrap();
//! # Ok(()) }
//! ```
//!
//! Its methods block (synchronous connections to the nodes, polling):
//! async tests hold it in an `Arc` and wait in `spawn_blocking`, so the
//! code under test keeps running through the failover. Topology questions
//! ([`RedisCluster::masters`], [`RedisCluster::master_for_slot`],
//! [`RedisCluster::nodes`]) are read live from `CLUSTER NODES`.

mod cluster;
mod collector;
pub mod conformance;
mod http_server;
mod namespace;
mod otlp;
mod pg;
mod pg_server;
mod redis_server;

pub use cluster::{ClusterNode, KeyOrSlot, RedisCluster};
pub use collector::Collector;
pub use http_server::{HttpTestServer, ReceivedRequest, Reply};
pub use namespace::{shared_redis_url, TestNamespace};
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use pg::{shared_database_url, ResultWriter, TestSchema};
pub use pg_server::PgServer;
pub use redis_server::RedisServer;

/// A consumer configuration with test-friendly timings, in either mode:
/// 100 ms blocking reads, idle entries claimed after 400 ms (checked every
/// 100 ms), 100 ms heartbeats, a 1 s session timeout, 5 s to drain on stop,
/// and retention on, trimming every 50 ms ([`fast_trim`]).
/// Callers set the retry policy and anything else their test is about.
pub fn fast_config(
    group: &str,
    topics: &[&str],
    mode: eventbus::ConsumerMode,
) -> eventbus::ConsumerConfig {
    use std::time::Duration;
    let mut c = eventbus::ConsumerConfig::new(group, topics.iter().copied());
    c.mode = mode;
    c.block = Duration::from_millis(100);
    c.claim_idle = Duration::from_millis(400);
    c.claim_interval = Duration::from_millis(100);
    c.heartbeat_interval = Duration::from_millis(100);
    c.session_timeout = Duration::from_secs(1);
    c.shutdown_timeout = Duration::from_secs(5);
    c.trim = Some(fast_trim());
    c
}

/// Retention as in production (`acked`), trimming every 50 ms so that
/// tests run with trims between their reads and acknowledgements.
pub fn fast_trim() -> eventbus::retention::TrimmerConfig {
    eventbus::retention::TrimmerConfig {
        interval: std::time::Duration::from_millis(50),
        ..Default::default()
    }
}
