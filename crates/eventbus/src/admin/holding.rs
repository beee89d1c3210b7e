//! What holds stream retention back: per stream, the group whose oldest
//! unacknowledged entry is the oldest (ack-aware trimming stops there), with
//! that entry's age. Read with the trim script in its read-only mode, so
//! it changes nothing and agrees with what `eventbus trim` would keep.

use serde::Serialize;

use crate::connection::RedisConn;
use crate::retention::{trim_all, RetentionPolicy};
use crate::topology::Topology;
use crate::Result;

/// A stream whose entries a group still needs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HeldStream {
    /// The stream.
    pub stream: String,
    /// Entries in it.
    pub length: u64,
    /// The group holding it back: the one with the oldest unacknowledged entry.
    pub group: String,
    /// That entry (trimming keeps it and everything after it).
    pub oldest_unacked: String,
    /// Its age in milliseconds (from its id's time to now).
    pub age_ms: u64,
    /// The other groups with unacknowledged entries on the stream.
    pub others: Vec<String>,
}

/// Every stream of the namespace (partitions, replay streams, the
/// dead-letter stream) that some group holds back, oldest entry first.
pub async fn retention_holders(conn: &RedisConn, topology: &Topology) -> Result<Vec<HeldStream>> {
    let read_only = RetentionPolicy {
        acked_after: None,
        ..RetentionPolicy::default()
    };
    let reports = trim_all(conn, topology, &read_only, true).await?;
    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
    let mut out: Vec<HeldStream> = reports
        .into_iter()
        .filter_map(|r| {
            let mut oldest: Vec<(&String, &String)> = r.oldest_unacked.iter().collect();
            oldest.sort_by_key(|(_, id)| entry_key(id));
            let (group, id) = oldest.first()?;
            Some(HeldStream {
                stream: r.stream.clone(),
                length: r.length_before,
                group: (*group).clone(),
                oldest_unacked: (*id).clone(),
                age_ms: now_ms.saturating_sub(entry_key(id).0),
                others: oldest[1..].iter().map(|(g, _)| (*g).clone()).collect(),
            })
        })
        .collect();
    out.sort_by_key(|h| entry_key(&h.oldest_unacked));
    Ok(out)
}

/// `(ms, seq)` of an entry id, for ordering.
fn entry_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn entry_ids_order_by_time_then_sequence() {
        let mut ids = ["10-2", "9-5", "10-10", "10-1"];
        ids.sort_by_key(|id| super::entry_key(id));
        assert_eq!(ids, ["9-5", "10-1", "10-2", "10-10"]);
    }
}
