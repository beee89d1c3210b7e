//! Batched publish throughput with schema validation off and on, in the
//! same run, against the Redis at `REDIS_URL` (default 127.0.0.1:6379): one
//! `publish_batch` of 1,000 valid `work_item.processing_completed` events per
//! iteration, into a throw-away namespace deleted at the end.
//!
//! `cargo bench -p eventbus --bench publish_validation`; figures in docs/benchmarks.md.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eventbus::{
    Catalog, Envelope, Publisher, PublisherConfig, RedisConnector, RedisOptions, Topology,
};
use serde_json::json;

const BATCH: usize = 1000;

fn events() -> Vec<Envelope> {
    (0..BATCH)
        .map(|i| {
            let item = format!("wi-{i:05}");
            Envelope::new(
                "work_item.processing_completed",
                item.clone(),
                json!({
                    "work_item_id": item,
                    "work_order_id": "0193f0a4-8c1e-7b2a-9d4f-3e5a6b7c8d90",
                    "kind": "match_payments",
                    "started_at": "2026-11-28T09:14:05.120Z",
                    "completed_at": "2026-11-28T09:14:21.907Z",
                    "duration_ms": 16787,
                    "attempts": 2,
                    "result": {
                        "summary": format!("processed {i} records for Acme Corp"),
                        "records_processed": i,
                        "output_ref": format!("s3://work-results/wo/{i}.json"),
                    },
                }),
            )
            .with_source("bench")
        })
        .collect()
}

fn publish(c: &mut Criterion) {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let namespace = format!(
        "bench-schemas-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let topology = Topology::new(&namespace, 16).unwrap();
    let redis = RedisConnector::new(&url, RedisOptions::default()).unwrap();
    // Bounded streams: the benchmark writes millions of entries.
    let config = PublisherConfig {
        max_len: Some(50_000),
        ..PublisherConfig::default()
    };
    let plain = rt
        .block_on(Publisher::connect(&redis, topology.clone(), config.clone()))
        .expect("Redis is reachable");
    let catalog = Arc::new(Catalog::embedded().unwrap());
    let validating = plain.clone().with_catalog(catalog);
    let events = events();

    let mut group = c.benchmark_group("publish_batch of 1000");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("validation off", |b| {
        b.iter(|| {
            rt.block_on(plain.publish_batch(black_box(&events)))
                .unwrap()
        })
    });
    group.bench_function("validation on", |b| {
        b.iter(|| {
            rt.block_on(validating.publish_batch(black_box(&events)))
                .unwrap()
        })
    });
    group.finish();

    rt.block_on(async {
        let mut conn = redis.shared().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{namespace}:*"))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> =
                redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
        }
    });
}

criterion_group!(benches, publish);
criterion_main!(benches);
