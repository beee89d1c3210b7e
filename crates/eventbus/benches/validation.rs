//! What schema validation costs per event: a valid event of each type, an
//! invalid one (every error collected), the v1 → v2 upcast, and loading the
//! whole catalogue (parse and compile every schema).
//!
//! `cargo bench -p eventbus --bench validation`; figures in docs/benchmarks.md.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use eventbus::{Catalog, Envelope};
use serde_json::json;

fn example_envelopes(catalog: &Catalog) -> Vec<Envelope> {
    catalog
        .types()
        .iter()
        .map(|t| {
            let v = t.latest();
            let data = v.examples()[0].clone();
            let key = catalog
                .partition_key_of(t.name(), &data)
                .unwrap()
                .to_owned();
            Envelope::new(t.name(), key, data).with_version(v.version())
        })
        .collect()
}

fn validation(c: &mut Criterion) {
    let catalog = Catalog::embedded().expect("catalogue loads");
    let mut group = c.benchmark_group("validate");
    for e in example_envelopes(&catalog) {
        assert!(catalog.validate(&e).is_ok());
        group.bench_with_input(BenchmarkId::from_parameter(&e.event_type), &e, |b, e| {
            b.iter(|| catalog.validate(black_box(e)))
        });
    }
    let invalid = Envelope::new(
        "work_order.created",
        "wo-1",
        json!({"id": "wo-2", "kind": "Bad Kind", "title": "", "status": "done", "extra": 1}),
    );
    assert_eq!(catalog.validate(&invalid).unwrap_err().errors.len(), 7);
    group.bench_function("invalid work_order.created (7 errors)", |b| {
        b.iter(|| catalog.validate(black_box(&invalid)))
    });
    group.finish();

    let failed = catalog.get("work_item.processing_failed").unwrap();
    let v1 = failed.version(1).unwrap().examples()[0].clone();
    let key = v1["work_item_id"].as_str().unwrap().to_owned();
    let v1 = Envelope::new(failed.name(), key, v1);
    c.bench_function(
        "upcast work_item.processing_failed v1 → v2 (validated)",
        |b| b.iter(|| catalog.upcast(black_box(v1.clone()), 2)),
    );
    c.bench_function("load the embedded catalogue (13 schemas)", |b| {
        b.iter(Catalog::embedded)
    });
}

criterion_group!(benches, validation);
criterion_main!(benches);
