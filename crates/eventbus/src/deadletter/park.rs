//! Park mode (ordered consumers, off by default): while a key has an
//! unresolved dead letter, its later events are held back too.
//!
//! Without it, ordered mode dead-letters a poison event and moves on, so the
//! next events of the same key are handled *before* the poison one is fixed
//! and replayed: per-key order is broken for that key. With
//! [`ConsumerConfig::park_keys`](crate::ConsumerConfig::park_keys) (the model
//! is Axon Framework's sequenced dead-letter queue):
//!
//! - when the partition's owner dead-letters an event of key K (attempts
//!   used up, or permanent, or invalid), K becomes **parked** for the group;
//! - later events of K in that partition are not given to the handler: they
//!   are dead-lettered at once, class `parked`, in stream order, with a
//!   message naming the dead letter that holds the key, and the partition
//!   moves on (other keys flow);
//! - a dead letter of K is **resolved** when its replay is handled
//!   successfully or when it is discarded; when none is left, K flows again.
//!   A replayed event that fails again stays counted. Replays of a parked
//!   key are handled oldest first: a replayed dead letter that is not the
//!   key's oldest waits, without using an attempt, for as long as the
//!   older ones keep being resolved; only when the key's oldest dead
//!   letter stays the same for [`STALL`] (its own replay is failing, or
//!   was never sent) does the waiting one fail as retryable and wait the
//!   retry policy's backoff, so replaying a whole key works whatever its
//!   length and however many of its replays are in flight at once.
//!
//! State, in the partition stream's hash slot (Redis Cluster safe: every
//! script touches keys of one slot only):
//!
//! - `<stream>:parked:<group>`: hash, parked key → number of its unresolved
//!   dead letters (what operators look at: `HGETALL`);
//! - `<stream>:parked:<group>:q:<hex key>`: list, those dead letters' ids,
//!   oldest first; the first one holds the key.
//!
//! Only the partition's lease owner parks, so its in-memory set of parked
//! keys is authoritative for "not parked"; when it says "parked", Redis is
//! asked again (replays and discards resolve from other processes).
//!
//! Trade-off: order of a key is never broken, but a key stays held until an
//! operator acts (replay or discard), and every event of it published
//! meanwhile lands in dead letters too — alert on dead-letter depth. Events
//! of K that arrive while a replay of K is in flight are parked behind it
//! and need a further replay.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

use uuid::Uuid;

use crate::connection::RedisConn;
use crate::handler::{Delivery, Handler, HandlerError};
use crate::topology::Topology;

/// The header a replay carries: the id of the dead letter it replays.
const REPLAY_OF: &str = "eventbus-replay-of";

/// Adds a dead letter to its key's queue (unless it is already the last
/// one: the same entry dead-lettered again after a crash) and updates the
/// count. Returns the count.
const PARK: &str = r#"
if redis.call('LINDEX', KEYS[2], -1) ~= ARGV[2] then
  redis.call('RPUSH', KEYS[2], ARGV[2])
end
local n = redis.call('LLEN', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], n)
return n
"#;

/// Removes a dead letter from its key's queue; the key is released when
/// none is left. Returns the count left, or -1 if it was not counted.
const RESOLVE: &str = r#"
if redis.call('LREM', KEYS[2], 0, ARGV[2]) == 0 then return -1 end
local n = redis.call('LLEN', KEYS[2])
if n == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], n)
end
return n
"#;

/// The hash of a group's parked keys on one partition stream.
pub(crate) fn parked_hash(stream: &str, group: &str) -> String {
    format!("{stream}:parked:{group}")
}

/// The queue of a parked key's dead letters. The key is hex-encoded, so
/// no group and key pair can name another's queue.
pub(crate) fn queue_key(stream: &str, group: &str, key: &str) -> String {
    let mut out = format!("{stream}:parked:{group}:q:");
    for b in key.bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Records that dead letter `dead_letter` holds `key`. Returns the count.
pub(crate) async fn park(
    conn: &RedisConn,
    stream: &str,
    group: &str,
    key: &str,
    dead_letter: Uuid,
) -> crate::Result<u64> {
    Ok(redis::Script::new(PARK)
        .key(parked_hash(stream, group))
        .key(queue_key(stream, group, key))
        .arg(key)
        .arg(dead_letter.to_string())
        .invoke_async(&mut conn.clone())
        .await?)
}

/// Resolves dead letter `dead_letter` of `key`: `Some(left)` if it was
/// counted, `None` if it held nothing.
pub(crate) async fn resolve(
    conn: &RedisConn,
    stream: &str,
    group: &str,
    key: &str,
    dead_letter: Uuid,
) -> crate::Result<Option<u64>> {
    let n: i64 = redis::Script::new(RESOLVE)
        .key(parked_hash(stream, group))
        .key(queue_key(stream, group, key))
        .arg(key)
        .arg(dead_letter.to_string())
        .invoke_async(&mut conn.clone())
        .await?;
    Ok(u64::try_from(n).ok())
}

/// Resolves a dead letter of `group` for an event of `event_type` and
/// `key` (its partition stream computed from `topology`). Used by discard.
pub(crate) async fn resolve_event(
    conn: &RedisConn,
    topology: &Topology,
    group: &str,
    event_type: &str,
    key: &str,
    dead_letter: Uuid,
) -> crate::Result<Option<u64>> {
    let stream = topology.stream_for(event_type, key);
    resolve(conn, &stream, group, key, dead_letter).await
}

/// The dead letter holding `key`, if it is parked.
async fn head(
    conn: &RedisConn,
    stream: &str,
    group: &str,
    key: &str,
) -> crate::Result<Option<String>> {
    Ok(redis::cmd("LINDEX")
        .arg(queue_key(stream, group, key))
        .arg(0)
        .query_async(&mut conn.clone())
        .await?)
}

/// Whether `dead_letter` is in `key`'s queue.
async fn is_counted(
    conn: &RedisConn,
    stream: &str,
    group: &str,
    key: &str,
    dead_letter: &str,
) -> crate::Result<bool> {
    let pos: Option<i64> = redis::cmd("LPOS")
        .arg(queue_key(stream, group, key))
        .arg(dead_letter)
        .query_async(&mut conn.clone())
        .await?;
    Ok(pos.is_some())
}

/// A partition owner's view of its parked keys.
#[derive(Debug)]
pub(crate) struct PartitionParking {
    stream: String,
    group: String,
    /// Keys parked as far as this owner knows: a key absent here is not
    /// parked (only the owner parks); a key present is checked in Redis.
    parked: HashSet<String>,
}

impl PartitionParking {
    /// Loads the keys parked on `stream` for `group` (once, after the
    /// lease is acquired and pending entries taken over).
    pub(crate) async fn load(conn: &RedisConn, stream: &str, group: &str) -> crate::Result<Self> {
        let parked: Vec<String> = redis::cmd("HKEYS")
            .arg(parked_hash(stream, group))
            .query_async(&mut conn.clone())
            .await?;
        Ok(PartitionParking {
            stream: stream.to_owned(),
            group: group.to_owned(),
            parked: parked.into_iter().collect(),
        })
    }

    /// The dead letter holding `key`, or `None` when its events flow.
    pub(crate) async fn held_by(
        &mut self,
        conn: &RedisConn,
        key: &str,
    ) -> crate::Result<Option<String>> {
        if !self.parked.contains(key) {
            return Ok(None);
        }
        let held = head(conn, &self.stream, &self.group, key).await?;
        if held.is_none() {
            self.parked.remove(key);
            tracing::info!(stream = %self.stream, group = %self.group, key,
                           "key released: its dead letters were resolved; its events flow again");
        }
        Ok(held)
    }

    /// Parks `key` behind (or further behind) `dead_letter`.
    pub(crate) async fn park(
        &mut self,
        conn: &RedisConn,
        key: &str,
        dead_letter: Uuid,
    ) -> crate::Result<()> {
        let n = park(conn, &self.stream, &self.group, key, dead_letter).await?;
        if self.parked.insert(key.to_owned()) {
            tracing::warn!(stream = %self.stream, group = %self.group, key, dead_letter = %dead_letter,
                           "key parked: its later events go to dead letters until this one is replayed or discarded");
        }
        tracing::debug!(stream = %self.stream, key, unresolved = n, "parked");
        Ok(())
    }
}

/// The message of an event parked behind dead letter `head`.
pub(crate) fn parked_message(key: &str, head: &str) -> String {
    format!(
        "key {key:?} is parked behind dead letter {head}: this event was not handled; \
         replay the key's dead letters in order (or discard them) to release it"
    )
}

/// The replays' handler in park mode: a replay of a parked key's dead
/// letter runs only when it is the key's oldest unresolved one (else it
/// fails as retryable and waits its backoff), and its success resolves it.
#[derive(Debug, Clone)]
pub(crate) struct ParkedReplays<H> {
    inner: H,
    topology: Topology,
    /// `None` when park mode is off: a plain pass-through.
    group: Option<String>,
    conn: RedisConn,
    /// The consumer's `claim_idle`: a waiting replay resets its entry's
    /// idle time at half of it, so no other member takes it meanwhile.
    claim_idle: Duration,
}

/// How long a waiting replay waits while its key's oldest dead letter
/// stays the same before this attempt fails (as retryable).
pub(crate) const STALL: Duration = Duration::from_secs(5);

impl<H> ParkedReplays<H> {
    pub(crate) fn new(
        inner: H,
        topology: &Topology,
        group: Option<String>,
        conn: RedisConn,
        claim_idle: Duration,
    ) -> Self {
        ParkedReplays {
            inner,
            topology: topology.clone(),
            group,
            conn,
            claim_idle,
        }
    }

    /// Waits until dead letter `dl` of `key` may be replayed: it is the
    /// key's oldest, or no longer counted, or the key is not parked.
    /// `Ok(Some(head))` when the oldest one stayed `head` for [`STALL`].
    /// Keeps the replay's own entry (`delivery`) from going idle.
    async fn wait_turn(
        &self,
        delivery: &Delivery,
        stream: &str,
        group: &str,
        key: &str,
        dl: &str,
    ) -> crate::Result<Option<String>> {
        const FIRST_POLL: Duration = Duration::from_millis(5);
        const MAX_POLL: Duration = Duration::from_millis(200);
        let keepalive = (self.claim_idle / 2).max(Duration::from_millis(10));
        let mut poll = FIRST_POLL;
        let mut seen: Option<String> = None;
        let mut since = tokio::time::Instant::now();
        let mut touched = since;
        loop {
            let Some(head) = head(&self.conn, stream, group, key).await? else {
                return Ok(None);
            };
            if head == dl || !is_counted(&self.conn, stream, group, key, dl).await? {
                return Ok(None);
            }
            let now = tokio::time::Instant::now();
            if seen.as_deref() != Some(head.as_str()) {
                // The older ones move: keep waiting, and look again soon.
                seen = Some(head);
                since = now;
                poll = FIRST_POLL;
            } else if now.duration_since(since) >= STALL {
                return Ok(seen);
            }
            if now.duration_since(touched) >= keepalive {
                crate::connection::touch(
                    &self.conn,
                    &delivery.stream,
                    &delivery.group,
                    &delivery.consumer,
                    &delivery.entry_id,
                )
                .await;
                touched = now;
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(MAX_POLL);
        }
    }
}

impl<H: Handler> Handler for ParkedReplays<H> {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let Some(group) = &self.group else {
            return self.inner.handle(delivery).await;
        };
        let Some(dead_letter) = delivery
            .envelope
            .headers
            .get(REPLAY_OF)
            .and_then(|s| Uuid::parse_str(s).ok())
        else {
            return self.inner.handle(delivery).await;
        };
        let key = delivery.envelope.key.clone();
        let stream = self
            .topology
            .stream_for(&delivery.envelope.event_type, &key);
        let dl = dead_letter.to_string();
        match self.wait_turn(&delivery, &stream, group, &key, &dl).await {
            Ok(None) => {}
            Ok(Some(head)) => {
                return Err(HandlerError::retryable(format!(
                    "key {key:?} is parked behind the older dead letter {head}, \
                     which was not resolved for {}s; this replay waits until it is",
                    STALL.as_secs()
                )))
            }
            Err(e) => {
                return Err(HandlerError::retryable(format!(
                    "checking whether key {key:?} is parked failed: {e}"
                )))
            }
        }
        self.inner.handle(delivery).await?;
        // Handled: the dead letter no longer holds its key. The effect is
        // done, so a Redis failure here must not fail the replay; the
        // operator can still discard the dead letter to release the key.
        let mut failures = 0u32;
        loop {
            match resolve(&self.conn, &stream, group, &key, dead_letter).await {
                Ok(Some(0)) => {
                    tracing::info!(group = %group, key = %key, dead_letter = %dead_letter,
                                   "replay handled; the key's last dead letter is resolved and its events flow again");
                    return Ok(());
                }
                Ok(_) => return Ok(()),
                Err(e) if failures < 5 => {
                    failures += 1;
                    tracing::warn!(group = %group, key = %key, error = %e, "resolving a parked dead letter failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200) * failures).await;
                }
                Err(e) => {
                    tracing::error!(group = %group, key = %key, dead_letter = %dead_letter, error = %e,
                                    "replay handled but its key could not be released; discard the dead letter to release it");
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_partition_slot_and_never_collide() {
        let s = "ns:{orders:3}";
        assert_eq!(parked_hash(s, "g"), "ns:{orders:3}:parked:g");
        assert_eq!(queue_key(s, "g", "a:b"), "ns:{orders:3}:parked:g:q:613a62");
        assert_ne!(queue_key(s, "g:q:61", "62"), queue_key(s, "g", "a:q:b"));
        assert_ne!(queue_key(s, "g", ""), queue_key(s, "g", "0"));
    }
}
