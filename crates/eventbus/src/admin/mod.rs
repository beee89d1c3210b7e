//! Read models for operators: streams, groups, lag and pending per
//! partition, and a group-less tail of the streams; the consumers of a
//! group and their pending entries (`consumers`), pages of a stream and an
//! event found by id (`browse`), and what holds retention back (`holding`).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::connection::RedisConn;
use redis::Value;
use serde::Serialize;

use crate::envelope::{DecodeError, Envelope};
use crate::reply::parse_read;
use crate::topology::Topology;
use crate::Result;

mod browse;
mod consumers;
mod groups;
mod holding;

pub use self::browse::{
    find_entry, find_event, is_entry_id, read_range, read_range_back, FoundEvents, StreamEntry,
};
pub use self::consumers::{
    group_consumers, stream_groups, ConsumerView, GroupConsumers, PendingEntry,
};
pub use self::groups::{groups, GroupView, MemberView, PartitionView};
pub use self::holding::{retention_holders, HeldStream};

/// One consumer group's state on one partition stream.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupStats {
    /// Group name.
    pub name: String,
    /// Consumers known to the group on this stream.
    pub consumers: u64,
    /// Entries delivered but not acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to the group (`None` when Redis cannot tell,
    /// e.g. after trimming or deletions).
    pub lag: Option<u64>,
    /// The last entry id delivered to the group.
    pub last_delivered_id: String,
}

/// One partition stream.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartitionStats {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Stream key.
    pub stream: String,
    /// Entries in the stream.
    pub length: u64,
    /// Groups reading the stream.
    pub groups: Vec<GroupStats>,
}

/// The topics known in the namespace (registered by publishers and consumers).
pub async fn known_topics(conn: &RedisConn, topology: &Topology) -> Result<BTreeSet<String>> {
    let topics: BTreeSet<String> = redis::cmd("SMEMBERS")
        .arg(topology.topics_key())
        .query_async(&mut conn.clone())
        .await?;
    Ok(topics)
}

/// Length, groups, pending and lag of every partition of `topics`.
pub async fn partition_stats(
    conn: &RedisConn,
    topology: &Topology,
    topics: &BTreeSet<String>,
) -> Result<Vec<PartitionStats>> {
    let mut out = Vec::new();
    for topic in topics {
        for partition in 0..topology.partitions() {
            let stream = topology.stream_key(topic, partition);
            let mut pipe = redis::pipe();
            pipe.cmd("XLEN").arg(&stream);
            pipe.cmd("EXISTS").arg(&stream);
            let (length, exists): (u64, bool) = pipe.query_async(&mut conn.clone()).await?;
            let groups = if exists {
                let v: Value = redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(&stream)
                    .query_async(&mut conn.clone())
                    .await?;
                parse_groups(&v)
            } else {
                Vec::new()
            };
            out.push(PartitionStats {
                topic: topic.clone(),
                partition,
                stream,
                length,
                groups,
            });
        }
    }
    Ok(out)
}

fn parse_groups(v: &Value) -> Vec<GroupStats> {
    let Value::Array(groups) = v else {
        return Vec::new();
    };
    groups
        .iter()
        .filter_map(|g| {
            let pairs: Vec<(String, &Value)> = match g {
                Value::Array(kv) => kv
                    .chunks_exact(2)
                    .filter_map(|c| Some((text(&c[0])?, &c[1])))
                    .collect(),
                Value::Map(kv) => kv.iter().filter_map(|(k, v)| Some((text(k)?, v))).collect(),
                _ => return None,
            };
            let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
            Some(GroupStats {
                name: get("name").and_then(text)?,
                consumers: get("consumers").and_then(int).unwrap_or(0),
                pending: get("pending").and_then(int).unwrap_or(0),
                lag: get("lag").and_then(int),
                last_delivered_id: get("last-delivered-id").and_then(text).unwrap_or_default(),
            })
        })
        .collect()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// One entry seen by [`Tail`].
#[derive(Debug)]
pub struct TailEntry {
    /// Stream key.
    pub stream: String,
    /// Entry id.
    pub entry_id: String,
    /// The decoded envelope, or why the entry is not one.
    pub envelope: std::result::Result<Envelope, DecodeError>,
}

/// Follows streams without a consumer group (`XREAD`), acknowledging nothing.
#[derive(Debug)]
pub struct Tail {
    conn: RedisConn,
    streams: Vec<String>,
    positions: Vec<String>,
    block: Duration,
}

impl Tail {
    /// Starts at the end of each stream (`$`), or at its beginning if `from_start`.
    pub fn new(conn: RedisConn, streams: Vec<String>, from_start: bool, block: Duration) -> Self {
        let start = if from_start { "0-0" } else { "$" };
        let positions = vec![start.to_owned(); streams.len()];
        Tail {
            conn,
            streams,
            positions,
            block,
        }
    }

    /// The next batch; empty when nothing arrived within the block time.
    pub async fn next_batch(&mut self, count: usize) -> Result<Vec<TailEntry>> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(self.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.streams)
            .arg(&self.positions);
        let reply: Value = cmd.query_async(&mut self.conn).await?;
        let mut out = Vec::new();
        for (stream, entries) in parse_read(reply) {
            let Some(i) = self.streams.iter().position(|s| *s == stream) else {
                continue;
            };
            for e in entries {
                self.positions[i] = e.id.clone();
                out.push(TailEntry {
                    stream: stream.clone(),
                    entry_id: e.id,
                    envelope: e.decoded,
                });
            }
        }
        Ok(out)
    }
}

/// What [`delete_group`] removed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GroupDeletion {
    /// The group.
    pub group: String,
    /// Partition streams the group was destroyed on.
    pub streams: u64,
    /// Other keys deleted: leases, fences, park state, membership, the replay stream.
    pub keys: u64,
}

/// Retires a consumer group everywhere in the namespace: its consumer group
/// on every partition stream of every known topic (`XGROUP DESTROY`, so it no
/// longer holds retention back), its partition leases and fences, its park
/// state, its membership and its replay stream. Stop the group's consumers
/// first: a running one creates the group again. Every command stays in one
/// hash slot (a stream's keys share its tag), so this works on a cluster.
pub async fn delete_group(
    conn: &RedisConn,
    topology: &Topology,
    group: &str,
) -> Result<GroupDeletion> {
    use crate::deadletter::park;
    use crate::runtime::ordered::lease;
    let mut c = conn.clone();
    let mut done = GroupDeletion {
        group: group.to_owned(),
        ..Default::default()
    };
    let mut streams: Vec<String> = Vec::new();
    for topic in known_topics(conn, topology).await? {
        streams.extend((0..topology.partitions()).map(|p| topology.stream_key(&topic, p)));
    }
    streams.push(topology.replay_stream(group));
    for stream in &streams {
        let destroyed: redis::RedisResult<i64> = redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(stream)
            .arg(group)
            .query_async(&mut c)
            .await;
        done.streams += u64::from(destroyed.unwrap_or(0) > 0);
        let parked = park::parked_hash(stream, group);
        let keys: Vec<String> = redis::cmd("HKEYS").arg(&parked).query_async(&mut c).await?;
        let mut del = redis::cmd("DEL");
        del.arg(lease::lease_key(stream, group))
            .arg(lease::fence_key(stream, group))
            .arg(&parked);
        for k in &keys {
            del.arg(park::queue_key(stream, group, k));
        }
        let n: u64 = del.query_async(&mut c).await?;
        done.keys += n;
    }
    let replay: u64 = redis::cmd("DEL")
        .arg(topology.replay_stream(group))
        .query_async(&mut c)
        .await?;
    let membership: u64 = redis::cmd("DEL")
        .arg(crate::runtime::ordered::membership::members_key(
            topology, group,
        ))
        .arg(crate::runtime::ordered::membership::info_key(
            topology, group,
        ))
        .query_async(&mut c)
        .await?;
    done.keys += replay + membership;
    tracing::info!(
        group,
        streams = done.streams,
        keys = done.keys,
        "consumer group deleted"
    );
    Ok(done)
}
