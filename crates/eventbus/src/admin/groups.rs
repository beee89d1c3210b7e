//! The read model of ordered groups for operators (`eventbus groups`):
//! members, who holds which partition since when, and pending and lag per
//! partition.

use std::collections::BTreeSet;

use crate::connection::RedisConn;
use serde::Serialize;

use super::partition_stats;
use crate::runtime::ordered::lease::read_owners;
use crate::runtime::ordered::membership::list_members;
pub use crate::runtime::ordered::membership::MemberView;
use crate::topology::Topology;
use crate::Result;

/// One partition of a group.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartitionView {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Stream key.
    pub stream: String,
    /// The member holding its lease (`None`: free, or an unordered group).
    pub owner: Option<String>,
    /// The lease's fencing token.
    pub token: Option<u64>,
    /// How long the current owner has held it, in ms.
    pub lease_age_ms: Option<u64>,
    /// Entries delivered to the group and not yet acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to the group (`None` when Redis cannot tell).
    pub lag: Option<u64>,
}

/// One consumer group: its members and partitions.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupView {
    /// Group name.
    pub group: String,
    /// Registered members (ordered mode), in id order.
    pub members: Vec<MemberView>,
    /// Every partition of the topics the group reads.
    pub partitions: Vec<PartitionView>,
}

/// The groups reading any of `topics` (from the streams' group lists and the
/// registered ordered members), each with its members and partitions.
pub async fn groups(
    conn: &RedisConn,
    topology: &Topology,
    topics: &BTreeSet<String>,
    only: Option<&str>,
) -> Result<Vec<GroupView>> {
    let stats = partition_stats(conn, topology, topics).await?;
    let mut names: BTreeSet<String> = stats
        .iter()
        .flat_map(|p| p.groups.iter().map(|g| g.name.clone()))
        .collect();
    if let Some(g) = only {
        names.retain(|n| n == g);
        names.insert(g.to_owned());
    }
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn.clone()).await?;
    let now_ms = secs * 1000 + micros / 1000;
    let mut out = Vec::new();
    for group in names {
        let reading: Vec<_> = stats
            .iter()
            .filter(|p| p.groups.iter().any(|g| g.name == group))
            .collect();
        let streams: Vec<String> = reading.iter().map(|p| p.stream.clone()).collect();
        let leases = read_owners(conn, &streams, &group).await?;
        let mut members = list_members(conn, topology, &group, now_ms).await?;
        let partitions: Vec<PartitionView> = reading
            .iter()
            .zip(leases)
            .map(|(p, lease)| {
                let g = p.groups.iter().find(|g| g.name == group);
                PartitionView {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    stream: p.stream.clone(),
                    owner: lease.as_ref().map(|l| l.owner.clone()),
                    token: lease.as_ref().map(|l| l.token),
                    lease_age_ms: lease.as_ref().map(|l| now_ms.saturating_sub(l.since_ms)),
                    pending: g.map_or(0, |g| g.pending),
                    lag: g.and_then(|g| g.lag),
                }
            })
            .collect();
        for m in &mut members {
            m.partitions = partitions
                .iter()
                .filter(|p| p.owner.as_deref() == Some(m.id.as_str()))
                .map(|p| format!("{}:{}", p.topic, p.partition))
                .collect();
        }
        out.push(GroupView {
            group,
            members,
            partitions,
        });
    }
    Ok(out)
}
