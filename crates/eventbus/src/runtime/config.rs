//! Consumer settings: [`ConsumerConfig`], its defaults and `validate`.

use std::time::Duration;

use crate::runtime::ordered::ConsumerMode;
use crate::{Error, Result};

/// Consumer settings. `group` and `topics` are required; the rest have
/// defaults. Durations are at most 30 days.
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
    /// How long a read waits for new entries (`BLOCK`). Default 2 s. In
    /// ordered mode a read blocks at most 500 ms (and a fifth of
    /// `session_timeout`). Shutdown never waits for a read to end.
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
    /// Ordered mode: most handled entries of a partition acknowledged in
    /// one fenced call (the lease token checked once for them). Acks wait
    /// only while more entries are ready, at most 100 ms; on a failover at
    /// most this many handled entries are delivered again (an inbox skips
    /// them). Default 64; 1 acknowledges each entry before the next starts.
    pub partition_batch: usize,
    /// Ack-aware retention of the consumer's streams (its topics' partitions
    /// and the replay streams of their groups), trimmed in the background;
    /// processes take turns per stream (see [`crate::retention::Trimmer`]).
    /// Default `None`: `eventbus relay` and `eventbus serve` trim every
    /// stream; set this where neither runs (the consumer's Redis user then
    /// needs `XTRIM`, `XINFO`, `XPENDING`, `XRANGE`, `SET` and `EVAL`).
    pub trim: Option<crate::retention::TrimmerConfig>,
    /// Unordered mode (and every group's replays): a retry whose backoff is
    /// at least this long goes through the scheduler instead of a task
    /// holding it in memory: the event is scheduled, with the attempts used
    /// so far in its header [`ATTEMPTS_HEADER`](crate::schedule::ATTEMPTS_HEADER),
    /// for the group's replay stream, and the entry is acknowledged; a
    /// consumer restart does not reset the wait, and the attempts still
    /// count towards [`RetryPolicy::max_attempts`](crate::RetryPolicy).
    /// The consumer then runs a scheduler for its replay stream itself
    /// (polling every 200 ms), so these retries never depend on another
    /// process; its Redis user needs `XADD` on that stream and `ZADD` on
    /// `<ns>:scheduled` (`deploy/users.acl`'s consumer has both). A user
    /// without them is found at start (a probe that writes nothing): the
    /// consumer logs a warning and keeps its retries in memory. Ordered
    /// mode keeps every retry in place (its partition has to wait to keep
    /// the key's order) but writes such a wait down, so the partition's
    /// next owner waits out the rest (`docs/scheduled.md`). Default [`DEFAULT_SCHEDULED_RETRY_AFTER`] (30 s);
    /// `None`: always in memory (`eventbus consume --scheduled-retry-after`).
    pub scheduled_retry_after: Option<Duration>,
}

/// Retries waiting at least this long go through the scheduler by default
/// ([`ConsumerConfig::scheduled_retry_after`]).
pub const DEFAULT_SCHEDULED_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The longest duration a [`ConsumerConfig`] takes: 30 days. Every
/// duration ends up in a Redis command (`BLOCK`, idle times, expiries) in
/// milliseconds, or in a deadline; a larger one would be refused by Redis
/// on every cycle or overflow.
const MAX_CONFIG_DURATION: Duration = Duration::from_secs(30 * 86_400);

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
            partition_batch: 64,
            trim: None,
            scheduled_retry_after: Some(DEFAULT_SCHEDULED_RETRY_AFTER),
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
        if self.concurrency == 0
            || self.read_count == 0
            || self.ack_batch == 0
            || self.partition_batch == 0
        {
            return bad("concurrency, read_count, ack_batch and partition_batch must be positive");
        }
        if self.block < Duration::from_millis(1) {
            return bad("block must be at least 1 ms");
        }
        let durations = [
            ("block", self.block),
            ("claim_idle", self.claim_idle),
            ("claim_interval", self.claim_interval),
            ("stale_consumer_after", self.stale_consumer_after),
            ("stale_check_interval", self.stale_check_interval),
            ("shutdown_timeout", self.shutdown_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("session_timeout", self.session_timeout),
        ];
        if let Some((name, _)) = durations.iter().find(|(_, d)| *d > MAX_CONFIG_DURATION) {
            return Err(Error::Config(format!("{name} must be at most 30 days")));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_redis_cannot_take_are_refused() {
        assert!(ConsumerConfig::new("g", ["t"]).validate().is_ok());
        let mut c = ConsumerConfig::new("g", ["t"]);
        c.claim_idle = Duration::from_secs(u64::MAX);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("claim_idle must be at most 30 days"), "{e}");
        let mut c = ConsumerConfig::new("g", ["t"]);
        c.block = MAX_CONFIG_DURATION + Duration::from_millis(1);
        assert!(c.validate().is_err());
    }
}
