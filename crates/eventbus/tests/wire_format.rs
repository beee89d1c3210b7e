//! The wire format against its published test vectors, both ways, plus
//! round-trip and never-panic properties.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use eventbus::Envelope;
use proptest::prelude::*;
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/wire-format-vectors.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("vector file")).expect("vector JSON")
}

fn field_bytes(fields: &Value) -> Vec<(Vec<u8>, Vec<u8>)> {
    fields
        .as_array()
        .expect("fields array")
        .iter()
        .map(|pair| {
            let name = pair[0].as_str().unwrap().as_bytes().to_vec();
            let value = match &pair[1] {
                Value::String(s) => s.as_bytes().to_vec(),
                Value::Object(o) => hex(o["hex"].as_str().unwrap()),
                other => panic!("bad field value {other}"),
            };
            (name, value)
        })
        .collect()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn decode(f: &[(Vec<u8>, Vec<u8>)]) -> Result<Envelope, eventbus::DecodeError> {
    Envelope::from_fields(f.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
}

#[test]
fn valid_vectors_encode_and_decode() {
    let v = vectors();
    let valid = v["valid"].as_array().unwrap();
    assert!(valid.len() >= 4);
    for case in valid {
        let name = case["name"].as_str().unwrap();
        let envelope: Envelope = serde_json::from_value(case["envelope"].clone()).expect(name);
        let fields = field_bytes(&case["fields"]);
        assert_eq!(decode(&fields).expect(name), envelope, "decode: {name}");
        if case["decode_only"].as_bool() != Some(true) {
            let encoded: Vec<(Vec<u8>, Vec<u8>)> = envelope
                .to_fields()
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
                .collect();
            assert_eq!(encoded, fields, "encode: {name}");
        }
    }
}

#[test]
fn malformed_vectors_give_their_typed_error() {
    let v = vectors();
    let malformed = v["malformed"].as_array().unwrap();
    let kinds: std::collections::HashSet<&str> = malformed
        .iter()
        .map(|c| c["error"].as_str().unwrap())
        .collect();
    for kind in [
        "missing_field",
        "invalid_data",
        "unsupported_wire_version",
        "invalid_field",
        "not_utf8",
    ] {
        assert!(kinds.contains(kind), "no vector for {kind}");
    }
    for case in malformed {
        let name = case["name"].as_str().unwrap();
        let err = decode(&field_bytes(&case["fields"])).expect_err(name);
        assert_eq!(err.kind(), case["error"].as_str().unwrap(), "{name}: {err}");
        assert_eq!(
            err.field(),
            case["field"].as_str().unwrap(),
            "{name}: {err}"
        );
        assert!(!err.to_string().is_empty());
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((".{0,8}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

prop_compose! {
    fn envelope()(
        id in any::<u128>(),
        topic in "[a-z_]{1,12}",
        name in "[a-z_.]{1,20}",
        version in 1u32..1000,
        key in ".{1,40}",
        micros in 0i64..4_000_000_000_000_000,
        source in ".{0,20}",
        correlation in proptest::option::of(".{0,30}"),
        causation in proptest::option::of(".{0,30}"),
        traceparent in proptest::option::of("[0-9a-f-]{0,55}"),
        headers in prop::collection::btree_map(".{0,10}", ".{0,10}", 0..4),
        data in json_value(),
    ) -> Envelope {
        Envelope {
            id: uuid::Uuid::from_u128(id),
            event_type: format!("{topic}.{name}"),
            version,
            key,
            occurred_at: Utc.timestamp_micros(micros).unwrap(),
            source,
            correlation_id: correlation,
            causation_id: causation,
            traceparent,
            headers: headers.into_iter().collect::<BTreeMap<_, _>>(),
            data,
        }
    }
}

proptest! {
    #[test]
    fn encoding_round_trips(e in envelope()) {
        let fields: Vec<(Vec<u8>, Vec<u8>)> = e
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
            .collect();
        prop_assert_eq!(decode(&fields).unwrap(), e);
    }

    #[test]
    fn arbitrary_entries_never_panic(
        entries in prop::collection::vec(
            (prop_oneof![
                Just(b"v".to_vec()), Just(b"id".to_vec()), Just(b"type".to_vec()),
                Just(b"version".to_vec()), Just(b"key".to_vec()), Just(b"occurred_at".to_vec()),
                Just(b"source".to_vec()), Just(b"headers".to_vec()), Just(b"data".to_vec()),
                prop::collection::vec(any::<u8>(), 0..8),
            ], prop::collection::vec(any::<u8>(), 0..40)),
            0..14,
        )
    ) {
        let _ = decode(&entries);
    }
}
