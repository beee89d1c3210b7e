//! The bus on a private Redis Cluster (3 masters, 3 replicas): the
//! conformance suite in both consumer modes, partitions spread over the
//! shards, and a master killed mid-run.
//!
//! Each test starts its own cluster (about 3 s) and runs its scenarios one
//! after another on it.

use eventbus_testkit::conformance::{self, Suite};
use eventbus_testkit::RedisCluster;

/// Scenarios on a cluster use 16 partitions, so every consumer reads
/// streams on every shard.
fn sixteen(mut suite: Suite) -> Suite {
    suite.partitions = 16;
    suite
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_unordered_on_a_cluster() {
    let cluster = RedisCluster::start();
    let suite = sixteen(Suite::unordered(cluster.cluster_url()));
    conformance::round_trip(&suite).await;
    conformance::competing_consumers(&suite).await;
    conformance::two_groups(&suite).await;
    conformance::failing_handler(&suite).await;
    conformance::close_and_reopen(&suite).await;
    conformance::claim_from_crashed(&suite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_ordered_on_a_cluster() {
    let cluster = RedisCluster::start();
    let suite = sixteen(Suite::ordered(cluster.cluster_url()));
    conformance::round_trip(&suite).await;
    conformance::competing_consumers(&suite).await;
    conformance::two_groups(&suite).await;
    conformance::failing_handler(&suite).await;
    conformance::close_and_reopen(&suite).await;
    conformance::claim_from_crashed(&suite).await;
    conformance::order_per_key(&suite).await;
    conformance::failing_entry_blocks_only_its_partition(&suite).await;
}

#[test]
fn the_16_partitions_of_a_topic_land_on_all_three_masters() {
    let cluster = RedisCluster::start();
    let topology = eventbus::Topology::new("spread", 16).unwrap();
    let mut per_master = std::collections::BTreeMap::<u16, Vec<u32>>::new();
    for p in 0..16 {
        let stream = topology.stream_key("work_item", p);
        // Every key of a partition shares its slot (one hash tag).
        let slot = cluster.keyslot(&stream);
        for suffix in [":lease:g", ":fence:g"] {
            assert_eq!(cluster.keyslot(&format!("{stream}{suffix}")), slot);
        }
        per_master
            .entry(cluster.master_for_slot(slot))
            .or_default()
            .push(p);
    }
    assert_eq!(per_master.len(), 3, "partitions per master: {per_master:?}");
    assert!(
        per_master.values().all(|ps| ps.len() >= 3),
        "uneven spread: {per_master:?}"
    );
}
