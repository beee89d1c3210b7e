//! The partitioner is stable (pinned vectors, same answer every call) and
//! spreads keys evenly.

use eventbus::partition_for;
use proptest::prelude::*;
use serde_json::Value;

#[test]
fn pinned_vectors_hold() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/partitioner-vectors.json"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for c in cases {
        let key = c["key"].as_str().unwrap();
        let partitions = c["partitions"].as_u64().unwrap() as u32;
        let want = c["partition"].as_u64().unwrap() as u32;
        assert_eq!(
            partition_for(key, partitions),
            want,
            "key {key:?} over {partitions}"
        );
        let hash = c["murmur2"].as_u64().unwrap() as u32;
        assert_eq!(
            eventbus::topology::murmur2(key.as_bytes()),
            hash,
            "murmur2({key:?})"
        );
    }
}

#[test]
fn spread_is_even_over_16_partitions() {
    use rand::{distr::Alphanumeric, Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut counts = [0u32; 16];
    for _ in 0..100_000 {
        let len = rng.random_range(1..40);
        let key: String = (&mut rng)
            .sample_iter(&Alphanumeric)
            .take(len)
            .map(char::from)
            .collect();
        counts[partition_for(&key, 16) as usize] += 1;
    }
    let mean = 100_000.0 / 16.0;
    for (p, &n) in counts.iter().enumerate() {
        let off = (f64::from(n) - mean).abs() / mean;
        assert!(
            off <= 0.10,
            "partition {p} has {n} keys, {:.1}% off the mean",
            off * 100.0
        );
    }
}

proptest! {
    #[test]
    fn mapping_is_stable_and_in_range(key in ".{0,64}", partitions in 1u32..=1024) {
        let p = partition_for(&key, partitions);
        prop_assert!(p < partitions);
        prop_assert_eq!(p, partition_for(&key, partitions));
        prop_assert_eq!(p, partition_for(&key.clone(), partitions));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn uuid_keys_spread_evenly(seed in any::<u64>()) {
        // Random UUID keys (the common case) over 16 partitions, 32k keys.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut counts = [0u32; 16];
        for _ in 0..32_000 {
            let key = uuid::Uuid::from_u128(rng.random()).to_string();
            counts[partition_for(&key, 16) as usize] += 1;
        }
        for &n in &counts {
            prop_assert!((f64::from(n) - 2000.0).abs() / 2000.0 <= 0.10);
        }
    }
}
