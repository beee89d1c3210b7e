//! Connections to Redis: one shared auto-reconnecting connection for
//! commands, and dedicated connections for blocking reads.
//!
//! The same code runs on one Redis server or on a Redis Cluster: a
//! [`RedisConn`] is either, and the redis crate's cluster client routes each
//! command by its key's slot, follows `MOVED`/`ASK` and refreshes the slot
//! map after a failover. Our side of the contract is that every multi-key
//! command, script and pipeline stays in one slot (see [`RedisConn::is_cluster`]).

use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{
    AsyncConnectionConfig, Client, Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value,
};

/// A connection to Redis: one server or a cluster.
///
/// Cheap to clone (clones share the underlying multiplexed connections).
#[derive(Clone)]
pub enum RedisConn {
    /// The shared connection to one server; reconnects by itself.
    Managed(ConnectionManager),
    /// A dedicated connection to one server (blocking reads).
    Plain(MultiplexedConnection),
    /// A Redis Cluster: one multiplexed connection per node, commands routed
    /// by slot.
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// True on a Redis Cluster, where a multi-key command or pipeline must
    /// stay within one hash slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisConn::Managed(_) => "RedisConn::Managed",
            RedisConn::Plain(_) => "RedisConn::Plain",
            RedisConn::Cluster(_) => "RedisConn::Cluster",
        })
    }
}

impl From<ConnectionManager> for RedisConn {
    fn from(conn: ConnectionManager) -> Self {
        RedisConn::Managed(conn)
    }
}

impl From<MultiplexedConnection> for RedisConn {
    fn from(conn: MultiplexedConnection) -> Self {
        RedisConn::Plain(conn)
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Managed(c) => c.req_packed_command(cmd),
            RedisConn::Plain(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Plain(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Managed(c) => c.get_db(),
            RedisConn::Plain(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// Commands that each touch one key, sent in as few round trips as the
/// deployment allows: one pipeline on a server; on a cluster one pipeline per
/// hash slot (a pipeline must stay within one slot), the slots' pipelines
/// sent concurrently. Replies come back in the order the commands were added
/// (ignored commands give none).
///
/// On a cluster the pipelines are separate round trips: if one fails, others
/// may have been applied. Callers retry only idempotent work or accept a
/// duplicate (an `XADD` retried after an unknown outcome), never a loss.
#[derive(Debug, Clone)]
pub(crate) struct SlotPipeline {
    cluster: bool,
    /// One pipeline per slot (a single one, slot ignored, on a server), with
    /// the output position of each reply it gives.
    groups: Vec<(Slot, Pipeline, Vec<usize>)>,
    replies: usize,
}

impl SlotPipeline {
    /// An empty pipeline for `conn`'s deployment.
    pub(crate) fn new(conn: &RedisConn) -> Self {
        SlotPipeline {
            cluster: conn.is_cluster(),
            groups: Vec::new(),
            replies: 0,
        }
    }

    /// Adds `cmd`, which touches `key` (and only keys of its slot).
    pub(crate) fn add(&mut self, key: &str, cmd: Cmd) -> &mut Self {
        self.push(key, cmd, false)
    }

    /// Adds `cmd` whose reply is dropped.
    pub(crate) fn add_ignored(&mut self, key: &str, cmd: Cmd) -> &mut Self {
        self.push(key, cmd, true)
    }

    fn push(&mut self, key: &str, cmd: Cmd, ignored: bool) -> &mut Self {
        let slot = if self.cluster {
            Slot::for_key(key)
        } else {
            Slot::new(0).expect("slot 0 exists")
        };
        let at = match self.groups.iter().position(|(s, _, _)| *s == slot) {
            Some(at) => at,
            None => {
                self.groups.push((slot, Pipeline::new(), Vec::new()));
                self.groups.len() - 1
            }
        };
        let (_, pipe, positions) = &mut self.groups[at];
        pipe.add_command(cmd);
        if ignored {
            pipe.ignore();
        } else {
            positions.push(self.replies);
            self.replies += 1;
        }
        self
    }

    /// Sends the commands; one reply per command not ignored, in order.
    pub(crate) async fn query<T: FromRedisValue>(&self, conn: &RedisConn) -> RedisResult<Vec<T>> {
        if let [(_, pipe, _)] = self.groups.as_slice() {
            return pipe.query_async(&mut conn.clone()).await;
        }
        let results = futures::future::try_join_all(self.groups.iter().map(|(_, pipe, _)| {
            let mut c = conn.clone();
            async move { pipe.query_async::<Vec<T>>(&mut c).await }
        }))
        .await?;
        let mut out: Vec<Option<T>> = (0..self.replies).map(|_| None).collect();
        for ((_, _, positions), values) in self.groups.iter().zip(results) {
            for (at, v) in positions.iter().zip(values) {
                out[*at] = Some(v);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }
}

/// Groups `keys` (by index) so that each group may go into one multi-key
/// command: all together on a server, one group per hash slot on a cluster.
pub(crate) fn slot_groups(keys: &[String], cluster: bool) -> Vec<Vec<usize>> {
    if !cluster {
        return vec![(0..keys.len()).collect()];
    }
    let mut groups: Vec<(Slot, Vec<usize>)> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let slot = Slot::for_key(k);
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, g)) => g.push(i),
            None => groups.push((slot, vec![i])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// What a connector connects to.
#[derive(Clone)]
enum Target {
    Server(Box<Client>),
    Cluster(Vec<String>),
}

use crate::redact::redact_url;
use crate::{Error, Result};

/// Connection settings.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Time allowed to open a TCP connection and authenticate.
    pub connect_timeout: Duration,
    /// Time allowed for a non-blocking command's reply.
    pub response_timeout: Duration,
    /// Reconnect attempts the shared connection makes before a command fails
    /// (callers retry on top of that with their own backoff).
    pub reconnect_retries: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            reconnect_retries: 2,
        }
    }
}

/// Opens connections to one Redis server or to a Redis Cluster.
#[derive(Clone)]
pub struct RedisConnector {
    target: Target,
    redacted: String,
    options: RedisOptions,
}

impl std::fmt::Debug for RedisConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnector")
            .field("url", &self.redacted)
            .finish()
    }
}

impl RedisConnector {
    /// A connector for `url` (`redis://[user:password@]host:port[/db]` or
    /// `rediss://` for TLS). Nothing is opened yet.
    ///
    /// `redis+cluster://[user:password@]host1:port1,host2:port2` (or
    /// `rediss+cluster://`) names a Redis Cluster by some of its nodes, like
    /// [`RedisConnector::cluster`].
    pub fn new(url: &str, options: RedisOptions) -> Result<Self> {
        if let Some(nodes) = cluster_url_nodes(url) {
            return RedisConnector::cluster(&nodes?, options);
        }
        let redacted = redact_url(url);
        let client = Client::open(url).map_err(|e| {
            Error::Config(format!("invalid Redis URL {redacted}: {}", e.category()))
        })?;
        Ok(RedisConnector {
            target: Target::Server(Box::new(client)),
            redacted,
            options,
        })
    }

    /// A connector for a Redis Cluster reached through `nodes`, seed URLs of
    /// some of its nodes (`redis://host:port`, `rediss://` for TLS; a
    /// password in the first URL is used for every node). The client
    /// discovers the rest with `CLUSTER SLOTS`. Nothing is opened yet.
    pub fn cluster(nodes: &[String], options: RedisOptions) -> Result<Self> {
        if nodes.is_empty() {
            return Err(Error::Config(
                "a Redis Cluster needs at least one seed node URL".into(),
            ));
        }
        let redacted: Vec<String> = nodes.iter().map(|n| redact_url(n)).collect();
        for (node, shown) in nodes.iter().zip(&redacted) {
            Client::open(node.as_str()).map_err(|e| {
                Error::Config(format!(
                    "invalid Redis Cluster node URL {shown}: {}",
                    e.category()
                ))
            })?;
        }
        Ok(RedisConnector {
            target: Target::Cluster(nodes.to_vec()),
            redacted: format!("cluster[{}]", redacted.join(",")),
            options,
        })
    }

    /// True if this connector opens Redis Cluster connections.
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    async fn cluster_connection(
        &self,
        nodes: &[String],
        response_timeout: Duration,
    ) -> Result<RedisConn> {
        let client = ClusterClient::builder(nodes.iter().map(String::as_str))
            .connection_timeout(self.options.connect_timeout)
            .response_timeout(response_timeout)
            .retries(self.options.reconnect_retries.max(1) as u32 * 8)
            .min_retry_wait(50)
            .max_retry_wait(1_000)
            .build()
            .map_err(|source| self.unreachable(source))?;
        client
            .get_async_connection()
            .await
            .map(RedisConn::Cluster)
            .map_err(|source| self.unreachable(source))
    }

    /// The URL with its password replaced by `***`, safe to log.
    pub fn redacted_url(&self) -> &str {
        &self.redacted
    }

    /// The shared connection: multiplexed, reconnects by itself with backoff.
    /// Fails with [`Error::Unreachable`] if the first connection cannot be made.
    pub async fn shared(&self) -> Result<RedisConn> {
        let client = match &self.target {
            Target::Server(client) => client,
            Target::Cluster(nodes) => {
                return self
                    .cluster_connection(nodes, self.options.response_timeout)
                    .await;
            }
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.options.connect_timeout))
            .set_response_timeout(Some(self.options.response_timeout))
            .set_number_of_retries(self.options.reconnect_retries)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        ConnectionManager::new_with_config(Client::clone(client), config)
            .await
            .map(RedisConn::Managed)
            .map_err(|source| self.unreachable(source))
    }

    /// A dedicated connection for blocking commands (`XREADGROUP BLOCK`), so
    /// they never delay other commands. Its response timeout is `block` plus
    /// a margin, so a dead server is noticed.
    /// On a cluster it is a cluster connection of its own (one socket per
    /// node), so each node's blocking reads never delay its other commands.
    pub async fn dedicated(&self, block: Duration) -> Result<RedisConn> {
        let timeout = block + self.options.response_timeout;
        let client = match &self.target {
            Target::Server(client) => client,
            Target::Cluster(nodes) => return self.cluster_connection(nodes, timeout).await,
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.options.connect_timeout))
            .set_response_timeout(Some(timeout));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map(RedisConn::Plain)
            .map_err(|source| self.unreachable(source))
    }

    /// A failed connect: [`Error::Unreachable`] when the server may answer
    /// later (refused, timed out, loading); otherwise the server answered and
    /// refused the settings (a wrong password, an unknown user, a database
    /// index out of range, a command the user may not run): a configuration
    /// error, which retrying does not fix.
    fn unreachable(&self, source: redis::RedisError) -> Error {
        if crate::error::is_transient_redis(&source) {
            return Error::Unreachable {
                url: self.redacted.clone(),
                source,
            };
        }
        Error::Config(format!(
            "Redis at {} refused the connection: {}",
            self.redacted,
            crate::redact::redact(&source.to_string())
        ))
    }
}

/// The seed node URLs of a `redis+cluster://` / `rediss+cluster://` URL
/// (`None` for any other URL).
fn cluster_url_nodes(url: &str) -> Option<Result<Vec<String>>> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
        ("redis", rest)
    } else {
        ("rediss", url.strip_prefix("rediss+cluster://")?)
    };
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let hosts = hosts.trim_end_matches('/');
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}://{auth}{h}"))
        .collect();
    Some(if nodes.is_empty() {
        Err(Error::Config(format!(
            "{} names no nodes: use {scheme}+cluster://host1:port1,host2:port2",
            redact_url(url)
        )))
    } else {
        Ok(nodes)
    })
}

/// Sends a blocking command (`XREADGROUP … BLOCK`) on a dedicated
/// connection, unless `stop` comes first: then the command is abandoned and
/// the connection dropped (the caller's only handle), which closes its
/// socket, and Redis ends a blocked client whose socket closed. So a
/// blocked read stops at once without `CLIENT UNBLOCK` (which would let the
/// user unblock any client). `None` when stopped; else the connection back
/// with the reply.
pub(crate) async fn query_unless_stopped<T: FromRedisValue>(
    mut conn: RedisConn,
    cmd: &Cmd,
    stop: &tokio_util::sync::CancellationToken,
) -> Option<(RedisConn, RedisResult<T>)> {
    let reply = tokio::select! {
        biased;
        _ = stop.cancelled() => None,
        reply = cmd.query_async::<T>(&mut conn) => Some(reply),
    };
    reply.map(|r| (conn, r))
}

/// Exponential backoff with full jitter: a random delay in `[0, min(max, base·2ⁿ)]`,
/// never below `base / 2` so loops do not spin.
pub(crate) fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let cap = exp.min(max);
    let floor = base / 2;
    let jitter = rand::random_range(0.0..=1.0);
    floor.max(cap.mul_f64(jitter))
}

/// Resets the idle time of our pending entry without counting a delivery
/// (`XCLAIM ... JUSTID`), so other consumers do not take it while it waits
/// for its retry (or, a replay, for its turn).
pub(crate) async fn touch(conn: &RedisConn, stream: &str, group: &str, consumer: &str, id: &str) {
    let _: redis::RedisResult<redis::Value> = redis::cmd("XCLAIM")
        .arg(stream)
        .arg(group)
        .arg(consumer)
        .arg(0)
        .arg(id)
        .arg("JUSTID")
        .query_async(&mut conn.clone())
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_their_seed_nodes() {
        let nodes = cluster_url_nodes("redis+cluster://u:pw@a:7000,b:7001/")
            .unwrap()
            .unwrap();
        assert_eq!(nodes, ["redis://u:pw@a:7000", "redis://u:pw@b:7001"]);
        let tls = cluster_url_nodes("rediss+cluster://a:1").unwrap().unwrap();
        assert_eq!(tls, ["rediss://a:1"]);
        assert!(cluster_url_nodes("redis://a:1").is_none());
        let err = RedisConnector::new("redis+cluster://:pw@", RedisOptions::default()).unwrap_err();
        assert!(err.to_string().contains("names no nodes"), "{err}");
        let c =
            RedisConnector::new("redis+cluster://:pw@a:1,b:2", RedisOptions::default()).unwrap();
        assert!(c.is_cluster());
        assert!(!c.redacted_url().contains("pw"), "{}", c.redacted_url());
    }

    #[test]
    fn backoff_stays_within_bounds() {
        for n in 0..40 {
            let d = backoff(n, Duration::from_millis(10), Duration::from_secs(1));
            assert!(d >= Duration::from_millis(5) && d <= Duration::from_secs(1));
        }
    }
}
