//! The consumers of one group as Redis sees them (`XINFO CONSUMERS`), and
//! the entries pending to them (`XPENDING`): what an unordered group's
//! competing consumers hold, and since when. Ordered groups have them too
//! (a member is a consumer of the partitions it leases).

use redis::Value;
use serde::Serialize;

use super::{int, text};
use crate::connection::RedisConn;
use crate::Result;

/// One consumer of a group on one stream.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConsumerView {
    /// Consumer name.
    pub name: String,
    /// The stream.
    pub stream: String,
    /// Entries delivered to it and not acknowledged.
    pub pending: u64,
    /// Milliseconds since it last read (or claimed), as Redis counts.
    pub idle_ms: u64,
    /// Milliseconds since its last successful read or claim (Redis ≥ 7.2;
    /// `None` before, or when it never succeeded).
    pub inactive_ms: Option<u64>,
}

/// One entry delivered to the group and not acknowledged.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PendingEntry {
    /// The stream.
    pub stream: String,
    /// Entry id.
    pub entry_id: String,
    /// The consumer holding it.
    pub consumer: String,
    /// Milliseconds since it was last delivered.
    pub idle_ms: u64,
    /// How many times it was delivered.
    pub deliveries: u64,
}

/// A group's consumers and its oldest pending entries.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GroupConsumers {
    /// Every consumer on every stream, by stream then name.
    pub consumers: Vec<ConsumerView>,
    /// The first pending entries of each stream (at most the asked-for
    /// number in all), in stream order.
    pub pending: Vec<PendingEntry>,
}

/// The consumers of `group` on `streams` (each must have the group) and
/// at most `max_pending` of its pending entries.
pub async fn group_consumers(
    conn: &RedisConn,
    streams: &[String],
    group: &str,
    max_pending: usize,
) -> Result<GroupConsumers> {
    let mut out = GroupConsumers::default();
    for stream in streams {
        let reply: Value = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(stream)
            .arg(group)
            .query_async(&mut conn.clone())
            .await?;
        let Value::Array(consumers) = reply else {
            continue;
        };
        let mut with_pending = false;
        for c in &consumers {
            let pairs = pairs(c);
            let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
            let Some(name) = get("name").and_then(text) else {
                continue;
            };
            let pending = get("pending").and_then(int).unwrap_or(0);
            with_pending |= pending > 0;
            out.consumers.push(ConsumerView {
                name,
                stream: stream.clone(),
                pending,
                idle_ms: get("idle").and_then(int).unwrap_or(0),
                inactive_ms: get("inactive").and_then(int),
            });
        }
        let room = max_pending.saturating_sub(out.pending.len());
        if with_pending && room > 0 {
            let reply: Value = redis::cmd("XPENDING")
                .arg(stream)
                .arg(group)
                .arg("-")
                .arg("+")
                .arg(room)
                .query_async(&mut conn.clone())
                .await?;
            if let Value::Array(entries) = reply {
                out.pending
                    .extend(entries.iter().filter_map(|e| pending_entry(stream, e)));
            }
        }
    }
    Ok(out)
}

/// The field/value pairs of a RESP2 array or a RESP3 map.
fn pairs(v: &Value) -> Vec<(String, &Value)> {
    match v {
        Value::Array(kv) => kv
            .chunks_exact(2)
            .filter_map(|c| Some((text(&c[0])?, &c[1])))
            .collect(),
        Value::Map(kv) => kv.iter().filter_map(|(k, v)| Some((text(k)?, v))).collect(),
        _ => Vec::new(),
    }
}

/// `[id, consumer, idle, deliveries]` of an extended `XPENDING` reply.
fn pending_entry(stream: &str, v: &Value) -> Option<PendingEntry> {
    let Value::Array(parts) = v else { return None };
    let [id, consumer, idle, deliveries] = parts.as_slice() else {
        return None;
    };
    Some(PendingEntry {
        stream: stream.to_owned(),
        entry_id: text(id)?,
        consumer: text(consumer)?,
        idle_ms: int(idle).unwrap_or(0),
        deliveries: int(deliveries).unwrap_or(0),
    })
}

/// The groups reading one stream (`XINFO GROUPS`), e.g. a group's replay
/// stream; empty when the stream does not exist.
pub async fn stream_groups(conn: &RedisConn, stream: &str) -> Result<Vec<super::GroupStats>> {
    let exists: bool = redis::cmd("EXISTS")
        .arg(stream)
        .query_async(&mut conn.clone())
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    let v: Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut conn.clone())
        .await?;
    Ok(super::parse_groups(&v))
}
