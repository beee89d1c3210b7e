//! Group membership: who is alive in an ordered consumer group.
//!
//! Two keys per group, under one hash tag so each script touches one slot:
//!
//! - `<ns>:{group:<group>}:members`, a sorted set of member ids scored by
//!   the **deadline** (server ms) by which the member must heartbeat again:
//!   the Redis `TIME` of its last heartbeat plus its session timeout;
//! - `<ns>:{group:<group>}:info`, a hash of member id → JSON
//!   `{"instance", "topics", "joined_ms"}`.
//!
//! Every heartbeat first removes the members whose deadline has passed, so a
//! member silent for longer than its session timeout is dead for everyone,
//! judged by one clock (the server's). The `instance` is a random id per
//! process: when a static member (`--member-id`) restarts, the new process
//! overwrites it, and the old one, if it still runs, learns at its next
//! heartbeat that it was fenced and stops.

use std::collections::BTreeSet;

use crate::connection::RedisConn;
use redis::Script;
use serde::{Deserialize, Serialize};

use super::assignor::MemberTopics;
use crate::topology::Topology;
use crate::Result;

/// The members sorted set of a group.
pub(crate) fn members_key(topology: &Topology, group: &str) -> String {
    format!("{}:{{group:{group}}}:members", topology.namespace())
}

/// The members info hash of a group.
pub(crate) fn info_key(topology: &Topology, group: &str) -> String {
    format!("{}:{{group:{group}}}:info", topology.namespace())
}

/// Registers (or re-registers) a member. KEYS: members, info.
/// ARGV: member, info JSON, session ms. Returns the server time (ms).
const JOIN: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return now
"#;

/// Removes dead members, then renews this one and returns the live members.
/// KEYS: members, info. ARGV: member, instance, session ms.
/// Returns `{'ok', now, id1, info1, id2, info2, ...}`, `{'rejoin', now}`
/// when this member was declared dead, or `{'fenced', now}` when another
/// process took its id.
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
for _, m in ipairs(dead) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('HDEL', KEYS[2], m)
end
local mine = redis.call('HGET', KEYS[2], ARGV[1])
if not mine then return {'rejoin', now} end
if cjson.decode(mine)['instance'] ~= ARGV[2] then return {'fenced', now} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
local out = {'ok', now}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local info = redis.call('HGET', KEYS[2], m)
  if info then
    table.insert(out, m)
    table.insert(out, info)
  else
    redis.call('ZREM', KEYS[1], m)
  end
end
return out
"#;

/// Leaves the group if this process still is the member. KEYS: members,
/// info. ARGV: member, instance.
const LEAVE: &str = r#"
local mine = redis.call('HGET', KEYS[2], ARGV[1])
if mine and cjson.decode(mine)['instance'] == ARGV[2] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
"#;

/// What a member publishes about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct MemberInfo {
    /// Random per process.
    pub(crate) instance: String,
    /// The topics it consumes.
    pub(crate) topics: BTreeSet<String>,
    /// When it joined (local wall clock ms, informational only).
    pub(crate) joined_ms: u64,
    /// Its session timeout, so that operators see how long ago it last
    /// heartbeat (absent from members of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) session_ms: Option<u64>,
}

/// The answer to a heartbeat.
#[derive(Debug)]
pub(crate) enum Heartbeat {
    /// Alive; the live members (this one included), in id order.
    Alive(Vec<MemberTopics>),
    /// This member was declared dead (silent too long): join again, and
    /// treat every lease as lost.
    Rejoin,
    /// Another process joined with this member id.
    Fenced,
}

/// This process's membership of one group.
#[derive(Debug)]
pub(crate) struct Membership {
    members_key: String,
    info_key: String,
    member: String,
    info: MemberInfo,
    session_ms: u64,
    join: Script,
    heartbeat: Script,
    leave: Script,
}

impl Membership {
    pub(crate) fn new(
        topology: &Topology,
        group: &str,
        member: &str,
        topics: BTreeSet<String>,
        session_ms: u64,
    ) -> Self {
        let joined_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Membership {
            members_key: members_key(topology, group),
            info_key: info_key(topology, group),
            member: member.to_owned(),
            info: MemberInfo {
                instance: uuid::Uuid::new_v4().simple().to_string(),
                topics,
                joined_ms,
                session_ms: Some(session_ms),
            },
            session_ms,
            join: Script::new(JOIN),
            heartbeat: Script::new(HEARTBEAT),
            leave: Script::new(LEAVE),
        }
    }

    /// This process's instance id.
    pub(crate) fn instance(&self) -> &str {
        &self.info.instance
    }

    /// Joins (or re-joins) the group.
    pub(crate) async fn join(&self, conn: &RedisConn) -> Result<()> {
        let info = serde_json::to_string(&self.info).expect("member info serializes");
        let _: u64 = self
            .join
            .key(&self.members_key)
            .key(&self.info_key)
            .arg(&self.member)
            .arg(info)
            .arg(self.session_ms)
            .invoke_async(&mut conn.clone())
            .await?;
        Ok(())
    }

    /// Heartbeats and returns the live members.
    pub(crate) async fn heartbeat(&self, conn: &RedisConn) -> Result<Heartbeat> {
        let reply: Vec<redis::Value> = self
            .heartbeat
            .key(&self.members_key)
            .key(&self.info_key)
            .arg(&self.member)
            .arg(&self.info.instance)
            .arg(self.session_ms)
            .invoke_async(&mut conn.clone())
            .await?;
        let text = |v: &redis::Value| -> Option<String> {
            match v {
                redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                redis::Value::SimpleString(s) => Some(s.clone()),
                _ => None,
            }
        };
        match reply.first().and_then(text).as_deref() {
            Some("rejoin") => Ok(Heartbeat::Rejoin),
            Some("fenced") => Ok(Heartbeat::Fenced),
            _ => Ok(Heartbeat::Alive(
                reply[2.min(reply.len())..]
                    .chunks_exact(2)
                    .filter_map(|c| {
                        let id = text(&c[0])?;
                        let info: MemberInfo = serde_json::from_str(&text(&c[1])?).ok()?;
                        Some(MemberTopics {
                            id,
                            topics: info.topics,
                        })
                    })
                    .collect(),
            )),
        }
    }

    /// Leaves the group (a no-op if another process took the id).
    pub(crate) async fn leave(&self, conn: &RedisConn) -> Result<()> {
        let _: i64 = self
            .leave
            .key(&self.members_key)
            .key(&self.info_key)
            .arg(&self.member)
            .arg(&self.info.instance)
            .invoke_async(&mut conn.clone())
            .await?;
        Ok(())
    }
}

/// A live member as seen by operators.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemberView {
    /// The member id (its consumer name in the Redis group).
    pub id: String,
    /// The topics it consumes.
    pub topics: Vec<String>,
    /// Milliseconds until it is declared dead unless it heartbeats
    /// (negative: already past, removed at the next heartbeat of anyone).
    pub expires_in_ms: i64,
    /// Milliseconds since its last heartbeat (server clock); absent for a
    /// member of a version that does not publish its session timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_age_ms: Option<i64>,
    /// The partitions it holds leases on, as `topic:partition`.
    pub partitions: Vec<String>,
}

/// The registered members of a group with their deadlines (server clock),
/// dead ones included until someone's heartbeat removes them.
pub(crate) async fn list_members(
    conn: &RedisConn,
    topology: &Topology,
    group: &str,
    now_ms: u64,
) -> Result<Vec<MemberView>> {
    let scored: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(members_key(topology, group))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn.clone())
        .await?;
    let infos: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(info_key(topology, group))
        .query_async(&mut conn.clone())
        .await?;
    Ok(scored
        .into_iter()
        .map(|(id, deadline)| {
            let info = infos
                .get(&id)
                .and_then(|i| serde_json::from_str::<MemberInfo>(i).ok());
            let expires_in_ms = deadline as i64 - now_ms as i64;
            // The deadline is its last heartbeat plus its session timeout.
            let heartbeat_age_ms = info
                .as_ref()
                .and_then(|i| i.session_ms)
                .map(|session| session as i64 - expires_in_ms);
            MemberView {
                id,
                topics: info
                    .map(|i| i.topics.into_iter().collect())
                    .unwrap_or_default(),
                expires_in_ms,
                heartbeat_age_ms,
                partitions: Vec::new(),
            }
        })
        .collect())
}
