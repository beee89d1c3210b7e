//! Namespace, topics, partitions, stream key naming and the partitioner.
//!
//! A topic is an event type's prefix before the first dot
//! (`work_item.processing_failed` → `work_item`). Each topic has
//! `partitions` streams named `<namespace>:{<topic>:<partition>}`; the braces
//! are a Redis Cluster hash tag, so each partition is one slot and a cluster
//! spreads the partitions of a topic over its shards.
//!
//! The partitioner is Kafka's default: `(murmur2(key) & 0x7fffffff) % partitions`
//! over the key's UTF-8 bytes, with murmur2 seeded `0x9747b28c`. It is pinned
//! by test vectors and must never change: the same key maps to the same
//! partition in every process, every language and every release.

use crate::{Error, Result};

/// Default number of partitions per topic.
pub const DEFAULT_PARTITIONS: u32 = 16;
/// Default namespace (key prefix).
pub const DEFAULT_NAMESPACE: &str = "eventbus";

/// Where events live in Redis: a namespace and a partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    namespace: String,
    partitions: u32,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            partitions: DEFAULT_PARTITIONS,
        }
    }
}

impl Topology {
    /// A topology, validated: the namespace is non-empty and has no braces,
    /// whitespace or control characters; partitions are 1..=1024.
    pub fn new(namespace: impl Into<String>, partitions: u32) -> Result<Self> {
        let namespace = namespace.into();
        if namespace.is_empty()
            || namespace
                .chars()
                .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
        {
            return Err(Error::Config(format!(
                "namespace {namespace:?} must be non-empty, without braces or whitespace"
            )));
        }
        if !(1..=1024).contains(&partitions) {
            return Err(Error::Config(format!(
                "partitions must be between 1 and 1024, got {partitions}"
            )));
        }
        Ok(Topology {
            namespace,
            partitions,
        })
    }

    /// The key prefix.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Partitions per topic.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition of a key.
    pub fn partition_of(&self, key: &str) -> u32 {
        partition_for(key, self.partitions)
    }

    /// The stream key of a topic's partition: `<ns>:{<topic>:<partition>}`.
    pub fn stream_key(&self, topic: &str, partition: u32) -> String {
        format!("{}:{{{}:{}}}", self.namespace, topic, partition)
    }

    /// The stream an event of this type and key goes to.
    pub fn stream_for(&self, event_type: &str, key: &str) -> String {
        self.stream_key(topic_of(event_type), self.partition_of(key))
    }

    /// All stream keys of a topic, partition 0 first.
    pub fn topic_streams(&self, topic: &str) -> Vec<String> {
        (0..self.partitions)
            .map(|p| self.stream_key(topic, p))
            .collect()
    }

    /// The registry of known topics (a Redis set), so tools can list streams
    /// without `SCAN`.
    pub fn topics_key(&self) -> String {
        format!("{}:topics", self.namespace)
    }

    /// The stream of dead letters: `<ns>:dead`.
    pub fn dead_stream(&self) -> String {
        format!("{}:dead", self.namespace)
    }

    /// The stream replays for one group go to, read only by that group:
    /// `<ns>:{_replay:<group>}`.
    pub fn replay_stream(&self, group: &str) -> String {
        format!("{}:{{_replay:{}}}", self.namespace, group)
    }

    /// Parses a stream key of this namespace back into `(topic, partition)`.
    pub fn parse_stream_key(&self, key: &str) -> Option<(String, u32)> {
        let rest = key.strip_prefix(&self.namespace)?.strip_prefix(":{")?;
        let inner = rest.strip_suffix('}')?;
        let (topic, partition) = inner.rsplit_once(':')?;
        Some((topic.to_owned(), partition.parse().ok()?))
    }
}

/// The topic of an event type: its prefix before the first dot.
pub fn topic_of(event_type: &str) -> &str {
    event_type.split('.').next().unwrap_or(event_type)
}

/// Checks that an event type is `topic.name` with a topic of ASCII letters,
/// digits, `_` or `-` (not starting with `_`: those topics are the bus's
/// own, e.g. `<ns>:{_replay:<group>}` is a group's replay stream), and a
/// name without whitespace or braces.
pub fn validate_event_type(event_type: &str) -> Result<()> {
    let Some((topic, name)) = event_type.split_once('.') else {
        return Err(Error::InvalidEvent(format!(
            "type {event_type:?} must look like `topic.name`, e.g. `work_order.created`"
        )));
    };
    if topic.starts_with('_') {
        return Err(Error::InvalidEvent(format!(
            "type {event_type:?}: topics starting with `_` are reserved for the bus's own streams (replays)"
        )));
    }
    let topic_ok = !topic.is_empty()
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let name_ok = !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}');
    if topic_ok && name_ok {
        Ok(())
    } else {
        Err(Error::InvalidEvent(format!(
            "type {event_type:?} must look like `topic.name`: the topic made of letters, digits, `_` or `-`, the name without spaces or braces"
        )))
    }
}

/// The partition of `key` among `partitions` (Kafka's default partitioner).
pub fn partition_for(key: &str, partitions: u32) -> u32 {
    assert!(partitions > 0, "partitions must be positive");
    (murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions
}

/// The FNV-1a 64-bit offset basis.
pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, 64-bit, from `seed` (normally [`FNV_OFFSET`]): stable and
/// dependency-free, for checksums and derived ids (not for partitioning).
pub(crate) fn fnv1a64(seed: u64, bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(seed, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// MurmurHash2, 32-bit, seed `0x9747b28c`, as in Kafka's `Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // The vectors of Kafka's UtilsTest.testMurmur2 (signed 32-bit there).
        let cases: [(&str, i32); 6] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (input, want) in cases {
            assert_eq!(murmur2(input.as_bytes()) as i32, want, "murmur2({input:?})");
        }
    }

    #[test]
    fn stream_keys_round_trip() {
        let t = Topology::new("ns", 16).unwrap();
        let k = t.stream_key("work_item", 7);
        assert_eq!(k, "ns:{work_item:7}");
        assert_eq!(t.parse_stream_key(&k), Some(("work_item".into(), 7)));
        assert_eq!(t.parse_stream_key("other:{work_item:7}"), None);
    }

    #[test]
    fn topics_and_types() {
        assert_eq!(topic_of("work_item.processing.failed"), "work_item");
        assert!(validate_event_type("work_order.created").is_ok());
        let reserved = validate_event_type("_replay.created")
            .unwrap_err()
            .to_string();
        assert!(reserved.contains("reserved"), "{reserved}");
        for bad in ["", "nodot", ".x", "x.", "a b.c", "a.b c", "a{.b"] {
            assert!(validate_event_type(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refuses_bad_topology() {
        assert!(Topology::new("", 16).is_err());
        assert!(Topology::new("a{b", 16).is_err());
        assert!(Topology::new("ns", 0).is_err());
        assert!(Topology::new("ns", 5000).is_err());
    }
}
