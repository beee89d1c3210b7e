//! The shipped event catalogue: every example validates, every
//! counter-example fails exactly where it says, the upcaster chain, the
//! committed docs are current, and no input makes validation or decoding panic.

use std::collections::BTreeSet;
use std::path::PathBuf;

use eventbus::catalog::{UpcastError, Upcaster};
use eventbus::{Catalog, Envelope};
use proptest::prelude::*;
use serde_json::{json, Value};

fn catalog() -> Catalog {
    Catalog::embedded().expect("the embedded catalogue loads")
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

#[test]
fn the_twelve_types_with_their_topics_and_partition_keys() {
    let c = catalog();
    let names: Vec<&str> = c.types().iter().map(|t| t.name()).collect();
    assert_eq!(
        names,
        [
            "work_order.created",
            "work_order.status_changed",
            "work_item.processing_started",
            "work_item.processing_completed",
            "work_item.processing_failed",
            "attempt.started",
            "attempt.completed",
            "attempt.failed",
            "attempt.retried",
            "system.health_check",
            "system.error",
            "system.maintenance",
        ]
    );
    for t in c.types() {
        let key = match t.topic() {
            "work_order" => "id",
            "work_item" | "attempt" => "work_item_id",
            "system" => "component",
            other => panic!("unexpected topic {other}"),
        };
        assert_eq!(t.partition_key(), key, "{}", t.name());
        assert!(!t.description().is_empty());
    }
    let failed = c.get("work_item.processing_failed").unwrap();
    assert_eq!(
        failed
            .versions()
            .iter()
            .map(|v| v.version())
            .collect::<Vec<_>>(),
        [1, 2]
    );
}

#[test]
fn every_example_validates_and_every_counter_example_fails_where_it_says() {
    let c = catalog();
    for t in c.types() {
        for v in t.versions() {
            let at = format!("{} v{}", t.name(), v.version());
            assert!(v.examples().len() >= 2, "{at}: at least two examples");
            assert!(
                v.counter_examples().len() >= 3,
                "{at}: several counter-examples"
            );
            for (i, example) in v.examples().iter().enumerate() {
                c.validate_data(t.name(), v.version(), example)
                    .unwrap_or_else(|e| panic!("{at} example {}: {e}", i + 1));
                // As an envelope with the key taken from the data.
                let key = c.partition_key_of(t.name(), example).expect("a key field");
                let e = Envelope::new(t.name(), key, example.clone()).with_version(v.version());
                c.validate(&e)
                    .unwrap_or_else(|e| panic!("{at} example {}: {e}", i + 1));
            }
            for case in v.counter_examples() {
                let errors = c
                    .validate_data(t.name(), v.version(), &case.data)
                    .expect_err(&format!("{at}: {:?} must fail", case.description))
                    .errors;
                let found: BTreeSet<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
                let expected: BTreeSet<&str> = case.errors.iter().map(String::as_str).collect();
                assert_eq!(found, expected, "{at}: {:?}: {errors:#?}", case.description);
                assert!(errors.iter().all(|e| !e.message.is_empty()));
            }
        }
    }
}

#[test]
fn the_repository_directory_is_the_embedded_catalogue() {
    let from_dir = Catalog::from_dir(repo("schemas")).expect("schemas/ loads");
    let embedded = catalog();
    assert_eq!(from_dir.markdown_docs(), embedded.markdown_docs());
    assert_eq!(from_dir.upcasters().len(), 1, "standard upcasters apply");
}

#[test]
fn the_upcaster_chain() {
    let c = catalog();
    let t = c.get("work_item.processing_failed").unwrap();
    let (v1, v2) = (t.version(1).unwrap(), t.version(2).unwrap());
    assert_eq!(v1.examples().len(), v2.examples().len());
    // Each v1 example upcasts to the v2 example at the same place.
    for (old, new) in v1.examples().iter().zip(v2.examples()) {
        let key = old["work_item_id"].as_str().unwrap();
        let e = Envelope::new(t.name(), key, old.clone());
        let up = c.upcast(e.clone(), 2).unwrap();
        assert_eq!(up.version, 2);
        assert_eq!(&up.data, new);
        assert_eq!(
            (up.id, &up.key),
            (e.id, &e.key),
            "only data and version change"
        );
        c.validate(&up).unwrap();
        // Already there: unchanged.
        assert_eq!(c.upcast(up.clone(), 2).unwrap(), up);
    }
    let e = Envelope::new(t.name(), "wi-1", v2.examples()[0].clone()).with_version(2);
    assert!(matches!(c.upcast(e, 1), Err(UpcastError::NoPath { .. })));
    let e = Envelope::new(t.name(), "wi-1", json!({"error": 1}));
    assert!(matches!(c.upcast(e, 2), Err(UpcastError::Failed { .. })));
}

/// A three-version type built from files, to show v1 → v2 → v3 chains.
fn chained() -> Catalog {
    let schema = |v: u32, required: &[&str]| {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {"id": {"type": "string"}, "b": {"type": "integer"}, "c": {"type": "string"}},
            "required": required,
            "additionalProperties": false,
            "examples": [{"id": "x", "b": 1, "c": "z"}],
            "description": format!("v{v}"),
        })
        .to_string()
    };
    let files = vec![
        (
            "manifest.json".to_owned(),
            r#"{"types": {"t.x": {"topic": "t", "partition_key": "id", "description": "d", "versions": [1, 2, 3]}}}"#.to_owned(),
        ),
        ("t.x/v1.json".to_owned(), schema(1, &["id"])),
        ("t.x/v2.json".to_owned(), schema(2, &["id", "b"])),
        ("t.x/v3.json".to_owned(), schema(3, &["id", "b", "c"])),
    ];
    Catalog::from_files(files, "test")
        .unwrap()
        .with_upcaster(Upcaster::new("t.x", 1, "b = 0", |mut d: Value| {
            d["b"] = json!(0);
            Ok(d)
        }))
        .unwrap()
        .with_upcaster(Upcaster::new("t.x", 2, "c from b", |mut d: Value| {
            d["c"] = json!(format!("b={}", d["b"]));
            Ok(d)
        }))
        .unwrap()
}

#[test]
fn chains_run_every_step_and_validate_the_result() {
    let c = chained();
    let up = c.upcast_data("t.x", 1, 3, json!({"id": "x"})).unwrap();
    assert_eq!(up, json!({"id": "x", "b": 0, "c": "b=0"}));
    assert_eq!(
        c.upcast_data("t.x", 2, 3, json!({"id": "x", "b": 5}))
            .unwrap()["c"],
        "b=5"
    );

    // A chain missing a step, and an upcaster for a version that does not exist.
    let files: Vec<(String, String)> = Vec::new();
    assert!(Catalog::from_files(files, "empty").is_err());
    let bad = Upcaster::new("t.x", 3, "nothing above", Ok);
    assert!(chained().with_upcaster(bad).is_err());
    let bad = Upcaster::new("t.y", 1, "no such type", Ok);
    assert!(chained().with_upcaster(bad).is_err());

    // An upcaster whose output is invalid is caught.
    let c = chained()
        .with_upcaster(Upcaster::new("t.x", 1, "wrong type", |mut d: Value| {
            d["b"] = json!("zero");
            Ok(d)
        }))
        .unwrap();
    let err = c.upcast_data("t.x", 1, 2, json!({"id": "x"})).unwrap_err();
    assert!(matches!(err, UpcastError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("/b"), "{err}");
}

#[test]
fn generated_docs_are_up_to_date() {
    let dir = repo("docs/events");
    let pages = catalog().markdown_docs();
    let hint = "docs/events is out of date: run `cargo run --bin eventbus -- schemas docs --out docs/events`";
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{hint} ({e})"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<String> = pages.keys().cloned().collect();
    assert_eq!(on_disk, expected, "{hint}");
    for (name, text) in &pages {
        let committed = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(&committed == text, "{hint}: {name} differs");
    }
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "2026-11-28T09:14:03.512Z",
            "wo-1",
            "pending",
            "RATE_LIMITED",
            "0193f0a4-8c1e-7b2a-9d4f-3e5a6b7c8d90",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "id",
                    "work_item_id",
                    "error",
                    "code",
                    "message",
                    "retryable",
                    "category",
                    "checks",
                    "status",
                    "component",
                    "result",
                    "summary",
                    "x",
                    "$ref",
                    "type",
                    "properties",
                    "required",
                    "additionalProperties",
                    "enum",
                    "items",
                ])
                .prop_map(str::to_owned),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_data_never_panics_validation(data in arbitrary_json(), t in 0usize..12, v in 0u32..4, key in ".{0,8}") {
        let c = catalog();
        let ty = c.types()[t].name().to_owned();
        let _ = c.validate_data(&ty, v, &data);
        let e = Envelope::new(ty.clone(), key, data.clone()).with_version(v);
        if let Err(errors) = c.validate(&e) {
            prop_assert!(!errors.errors.is_empty());
        }
        let _ = c.upcast(e, 2);
    }

    #[test]
    fn arbitrary_entries_never_panic_decoding_then_validation(
        data in arbitrary_json(),
        ty in prop::sample::select(vec!["work_order.created", "system.error", "nope.nope", ""]),
        version in prop::sample::select(vec!["1", "2", "-1", "x", "4294967296"]),
    ) {
        let c = catalog();
        let data = data.to_string();
        let fields: Vec<(&[u8], &[u8])> = vec![
            (b"v", b"1"),
            (b"id", b"019a1f2e-8b3c-7d4e-9f60-1a2b3c4d5e6f"),
            (b"type", ty.as_bytes()),
            (b"version", version.as_bytes()),
            (b"key", b"k"),
            (b"occurred_at", b"2026-01-01T00:00:00Z"),
            (b"source", b"s"),
            (b"data", data.as_bytes()),
        ];
        if let Ok(e) = Envelope::from_fields(fields) {
            let _ = c.validate(&e);
        }
    }

    #[test]
    fn arbitrary_schemas_never_panic_loading_or_comparing(old in arbitrary_json(), new in arbitrary_json()) {
        for mode in [eventbus::catalog::CompatMode::Backward, eventbus::catalog::CompatMode::Full] {
            let _ = eventbus::catalog::compare(&old, &new, mode);
        }
        let mut schema = new.clone();
        if let Value::Object(m) = &mut schema {
            m.insert("$schema".into(), json!("https://json-schema.org/draft/2020-12/schema"));
        }
        let files = vec![
            ("manifest.json".to_owned(), r#"{"types": {"a.b": {"topic": "a", "partition_key": "id", "description": "d", "versions": [1]}}}"#.to_owned()),
            ("a.b/v1.json".to_owned(), schema.to_string()),
        ];
        if let Ok(c) = Catalog::from_files(files, "prop") {
            let _ = c.validate_data("a.b", 1, &old);
            let _ = c.markdown_docs();
            let _ = c.check_compatibility(eventbus::catalog::CompatMode::Full);
        }
    }
}
