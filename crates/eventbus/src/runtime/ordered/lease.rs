//! Partition leases with fencing tokens.
//!
//! A lease is a hash next to its stream, `<ns>:{<topic>:<p>}:lease:<group>`,
//! with `owner` (member id), `instance` (the owning process), `token` and
//! `since` (server ms), and a TTL of the session timeout that its owner renews
//! on every heartbeat. The token comes from `INCR` on
//! `<ns>:{<topic>:<p>}:fence:<group>`, which never expires, so every new
//! lease of a partition has a larger token than any before it. Both keys
//! share the stream's hash tag, so each script below touches one slot.
//!
//! Every write an owner makes to the group's state of the stream goes
//! through a script that first checks the token: acknowledging ([`ACK`]) and
//! taking over pending entries ([`CLAIM_PENDING`], [`CLAIM_IDS`]). An owner
//! that lost its lease (expired while it was paused or cut off, or taken by
//! a restarted instance of the same static member) gets `-1` and stops; its
//! entries stay pending for the new owner, which handles them again.

use crate::connection::{RedisConn, SlotPipeline};
use redis::{Script, Value};

use crate::Result;

/// The lease key of a stream for a group.
pub(crate) fn lease_key(stream: &str, group: &str) -> String {
    format!("{stream}:lease:{group}")
}

/// The fencing counter of a stream for a group.
pub(crate) fn fence_key(stream: &str, group: &str) -> String {
    format!("{stream}:fence:{group}")
}

/// Takes the lease if it is free, or if it is held by the same member in
/// another instance (a static member restarted: a new token fences the old
/// process). Returns the token, `0` if another member holds it. Tokens grow
/// and are at least the server's time in ms, so they stay unique across a
/// Redis failover that lost the last ones issued.
/// KEYS: lease, fence. ARGV: member, instance, ttl ms.
const ACQUIRE: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'owner', 'instance', 'token')
if cur[1] then
  if cur[1] ~= ARGV[1] then return 0 end
  if cur[2] == ARGV[2] then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return tonumber(cur[3])
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Never below the server's clock in ms: a token a dead master issued but
-- had not replicated is not issued again by the replica that took over
-- (the failover takes seconds; see docs/scaling.md).
local token = math.max(tonumber(redis.call('GET', KEYS[2]) or '0') + 1, now)
redis.call('SET', KEYS[2], string.format('%d', token))
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'instance', ARGV[2], 'token', string.format('%d', token), 'since', now)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return token
"#;

/// Extends the lease if the token still holds it. KEYS: lease. ARGV: token, ttl ms.
const RENEW: &str = r#"
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// Gives the lease up if the token still holds it. KEYS: lease. ARGV: token.
const RELEASE: &str = r#"
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// `XACK` only while the token holds the lease; `-1` otherwise.
/// KEYS: lease, stream. ARGV: token, group, ids...
const ACK: &str = r#"
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return -1 end
return redis.call('XACK', KEYS[2], ARGV[2], unpack(ARGV, 3))
"#;

/// One `XAUTOCLAIM` page of every pending entry (any consumer, any idle
/// time) to the owner, only while the token holds the lease; `-1` otherwise.
/// KEYS: lease, stream. ARGV: token, group, consumer, cursor, count.
const CLAIM_PENDING: &str = r#"
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return -1 end
return redis.call('XAUTOCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, ARGV[4], 'COUNT', ARGV[5])
"#;

/// `XCLAIM` of given ids to the owner, only while the token holds the lease.
/// KEYS: lease, stream. ARGV: token, group, consumer, ids...
const CLAIM_IDS: &str = r#"
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return -1 end
return redis.call('XCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, unpack(ARGV, 4))
"#;

/// The lease scripts, loaded once per consumer.
#[derive(Debug)]
pub(crate) struct LeaseScripts {
    acquire: Script,
    renew: Script,
    release: Script,
    ack: Script,
    claim_pending: Script,
    claim_ids: Script,
}

impl Default for LeaseScripts {
    fn default() -> Self {
        LeaseScripts {
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            ack: Script::new(ACK),
            claim_pending: Script::new(CLAIM_PENDING),
            claim_ids: Script::new(CLAIM_IDS),
        }
    }
}

/// The outcome of a fenced write.
#[derive(Debug)]
pub(crate) enum Fenced<T> {
    /// The token still held the lease; the write happened.
    Done(T),
    /// The lease is lost: nothing was written.
    Lost,
}

impl LeaseScripts {
    /// Tries to take the lease of `stream`; `Some(token)` on success.
    pub(crate) async fn acquire(
        &self,
        conn: &RedisConn,
        stream: &str,
        group: &str,
        member: &str,
        instance: &str,
        ttl_ms: u64,
    ) -> Result<Option<u64>> {
        let token: u64 = self
            .acquire
            .key(lease_key(stream, group))
            .key(fence_key(stream, group))
            .arg(member)
            .arg(instance)
            .arg(ttl_ms)
            .invoke_async(&mut conn.clone())
            .await?;
        Ok((token > 0).then_some(token))
    }

    /// Renews many leases in one pipeline; true per lease still held.
    pub(crate) async fn renew_all(
        &self,
        conn: &RedisConn,
        leases: &[(String, u64)],
        group: &str,
        ttl_ms: u64,
    ) -> Result<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = SlotPipeline::new(conn);
        for (stream, token) in leases {
            let key = lease_key(stream, group);
            let mut evalsha = redis::cmd("EVALSHA");
            evalsha
                .arg(self.renew.get_hash())
                .arg(1)
                .arg(&key)
                .arg(token)
                .arg(ttl_ms);
            pipe.add(&key, evalsha);
        }
        let held: Vec<i64> = match pipe.query(conn).await {
            // EVALSHA in a pipeline does not fall back to EVAL by itself.
            Err(e) if e.code() == Some("NOSCRIPT") => {
                let _: String = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(RENEW)
                    .query_async(&mut conn.clone())
                    .await?;
                pipe.query(conn).await?
            }
            other => other?,
        };
        Ok(held.into_iter().map(|h| h == 1).collect())
    }

    /// Gives up a lease; false if it was no longer held.
    pub(crate) async fn release(
        &self,
        conn: &RedisConn,
        stream: &str,
        group: &str,
        token: u64,
    ) -> Result<bool> {
        let done: i64 = self
            .release
            .key(lease_key(stream, group))
            .arg(token)
            .invoke_async(&mut conn.clone())
            .await?;
        Ok(done == 1)
    }

    /// Acknowledges entries while the lease holds.
    pub(crate) async fn ack(
        &self,
        conn: &RedisConn,
        stream: &str,
        group: &str,
        token: u64,
        ids: &[&str],
    ) -> Result<Fenced<u64>> {
        let n: i64 = self
            .ack
            .key(lease_key(stream, group))
            .key(stream)
            .arg(token)
            .arg(group)
            .arg(ids)
            .invoke_async(&mut conn.clone())
            .await?;
        Ok(u64::try_from(n).map_or(Fenced::Lost, Fenced::Done))
    }

    /// One page of taking over every pending entry of the stream (the raw
    /// `XAUTOCLAIM` reply).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn claim_pending(
        &self,
        conn: &RedisConn,
        stream: &str,
        group: &str,
        consumer: &str,
        token: u64,
        cursor: &str,
        count: usize,
    ) -> Result<Fenced<Value>> {
        let extra = (cursor, count);
        fenced_claim(
            &self.claim_pending,
            conn,
            stream,
            group,
            consumer,
            token,
            extra,
        )
        .await
    }

    /// Takes over the given pending ids (the raw `XCLAIM` reply).
    pub(crate) async fn claim_ids(
        &self,
        conn: &RedisConn,
        stream: &str,
        group: &str,
        consumer: &str,
        token: u64,
        ids: &[String],
    ) -> Result<Fenced<Value>> {
        fenced_claim(&self.claim_ids, conn, stream, group, consumer, token, ids).await
    }
}

/// Runs a claim script whose ARGV is token, group, consumer, then `extra`.
async fn fenced_claim(
    script: &Script,
    conn: &RedisConn,
    stream: &str,
    group: &str,
    consumer: &str,
    token: u64,
    extra: impl redis::ToRedisArgs,
) -> Result<Fenced<Value>> {
    let v: Value = script
        .key(lease_key(stream, group))
        .key(stream)
        .arg(token)
        .arg(group)
        .arg(consumer)
        .arg(extra)
        .invoke_async(&mut conn.clone())
        .await?;
    Ok(if v == Value::Int(-1) {
        Fenced::Lost
    } else {
        Fenced::Done(v)
    })
}

/// Who holds a lease now, as read by [`read_owners`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseState {
    /// The owning member.
    pub(crate) owner: String,
    /// The fencing token.
    pub(crate) token: u64,
    /// When it was taken (server ms).
    pub(crate) since_ms: u64,
}

/// The current lease of each stream (`None` when free), in one pipeline.
pub(crate) async fn read_owners(
    conn: &RedisConn,
    streams: &[String],
    group: &str,
) -> Result<Vec<Option<LeaseState>>> {
    if streams.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = SlotPipeline::new(conn);
    for s in streams {
        let key = lease_key(s, group);
        let mut hmget = redis::cmd("HMGET");
        hmget.arg(&key).arg("owner").arg("token").arg("since");
        pipe.add(&key, hmget);
    }
    let rows: Vec<(Option<String>, Option<u64>, Option<u64>)> = pipe.query(conn).await?;
    Ok(rows
        .into_iter()
        .map(|(owner, token, since)| {
            Some(LeaseState {
                owner: owner?,
                token: token.unwrap_or(0),
                since_ms: since.unwrap_or(0),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RedisConnector, RedisOptions};

    /// A failover can lose the last token a master issued (replication is
    /// asynchronous): the replica's counter is one behind and the lease is
    /// gone. The next token it issues must not equal the lost one, or the
    /// old owner's fenced acks would pass.
    #[tokio::test]
    async fn a_token_lost_in_a_failover_is_not_issued_again() {
        let ns =
            eventbus_testkit::TestNamespace::new(eventbus_testkit::shared_redis_url(), "fence");
        let conn = RedisConnector::new(ns.url(), RedisOptions::default())
            .unwrap()
            .shared()
            .await
            .unwrap();
        let stream = ns.topology(1).stream_key("t", 0);
        let scripts = LeaseScripts::default();
        let first = scripts
            .acquire(&conn, &stream, "g", "a", "i1", 10_000)
            .await
            .unwrap()
            .unwrap();
        // What the promoted replica holds: the counter before `first`, no lease.
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(fence_key(&stream, "g"))
            .arg(first - 1)
            .cmd("DEL")
            .arg(lease_key(&stream, "g"))
            .query_async(&mut conn.clone())
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let second = scripts
            .acquire(&conn, &stream, "g", "b", "i2", 10_000)
            .await
            .unwrap()
            .unwrap();
        assert!(second > first, "token {second} after lost token {first}");
        // The old owner's token no longer passes the fence.
        let held = scripts
            .renew_all(&conn, &[(stream.clone(), first)], "g", 10_000)
            .await
            .unwrap();
        assert_eq!(held, [false]);
    }
}
