//! One function per fuzz target: it takes the fuzzer's bytes, runs the code
//! under test and panics when a property does not hold. Included by path in
//! the corpus replay test, so it uses only crates both builds have.

use eventbus::Envelope;

/// Turns fuzz input into stream fields, any names and values (any bytes).
///
/// The input is text-like so that inserting or deleting a byte changes one
/// field, not every field after it: one field a line (`\n`), `name=value`
/// split at the first `=` (a line without one is a name with an empty value).
/// A backslash before `\n`, `=` or `\` makes that byte literal; any other
/// backslash is itself. So every byte string is expressible, and the corpus
/// files read like `XRANGE` output.
pub fn split_fields(data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let (mut name, mut value) = (Vec::new(), None::<Vec<u8>>);
    let mut bytes = data.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        let byte = match b {
            b'\n' => {
                out.push((std::mem::take(&mut name), value.take().unwrap_or_default()));
                continue;
            }
            b'=' if value.is_none() => {
                value = Some(Vec::new());
                continue;
            }
            b'\\' => match bytes.peek() {
                Some(&next @ (b'\n' | b'=' | b'\\')) => {
                    bytes.next();
                    next
                }
                _ => b,
            },
            _ => b,
        };
        value.as_mut().unwrap_or(&mut name).push(byte);
    }
    if !name.is_empty() || value.is_some() {
        out.push((name, value.unwrap_or_default()));
    }
    out
}

/// The inverse of [`split_fields`]: a seed input from real stream fields.
pub fn join_fields<N: AsRef<[u8]>, V: AsRef<[u8]>>(fields: &[(N, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        for (i, part) in [name.as_ref(), value.as_ref()].into_iter().enumerate() {
            for (j, &b) in part.iter().enumerate() {
                let escape = match b {
                    b'\n' => true,
                    b'=' => i == 0,
                    // A backslash is literal unless it comes before one of
                    // these or ends the part (where a separator follows).
                    b'\\' => matches!(part.get(j + 1), None | Some(b'\n' | b'=' | b'\\')),
                    _ => false,
                };
                if escape {
                    out.push(b'\\');
                }
                out.push(b);
            }
            out.push(if i == 0 { b'=' } else { b'\n' });
        }
    }
    out
}

fn decode(fields: &[(Vec<u8>, Vec<u8>)]) -> Result<Envelope, eventbus::DecodeError> {
    Envelope::from_fields(fields.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
}

/// `e` encoded as stream fields decodes back to `e`.
pub fn assert_fields_round_trip(e: &Envelope) {
    let encoded: Vec<(Vec<u8>, Vec<u8>)> = e
        .to_fields()
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
        .collect();
    match decode(&encoded) {
        Ok(back) => assert_eq!(&back, e, "decode(encode(e)) differs from e"),
        Err(err) => panic!("the fields of {e:?} do not decode: {err}"),
    }
}

/// Target `envelope_fields`: `Envelope::from_fields` on any fields never
/// panics, and an envelope it accepts encodes and decodes back equal.
pub fn envelope_fields(data: &[u8]) {
    let fields = split_fields(data);
    match decode(&fields) {
        Ok(e) => assert_fields_round_trip(&e),
        Err(err) => {
            let _ = (err.to_string(), err.kind(), err.field());
        }
    }
}

/// Target `http_events_body`: the `POST /v1/events` body parser on any bytes
/// never panics; what it accepts is at least one event, each checked by the
/// embedded catalogue (as the server does next) without a panic, and each
/// with a type (the decoder's one demand the parser leaves to the publisher)
/// encodes and decodes back equal.
pub fn http_events_body(data: &[u8]) {
    static CATALOG: std::sync::LazyLock<eventbus::Catalog> = std::sync::LazyLock::new(|| {
        eventbus::Catalog::embedded().expect("the embedded catalogue loads")
    });
    match eventbus_server::events_body::parse_events(data) {
        Ok(events) => {
            assert!(!events.is_empty(), "parsed a batch of no events");
            for e in &events {
                if let Err(errors) = CATALOG.validate(e) {
                    let _ = errors.to_string();
                }
                let _ = eventbus::topology::validate_event_type(&e.event_type);
                if !e.event_type.is_empty() {
                    assert_fields_round_trip(e);
                }
            }
        }
        Err(message) => assert!(!message.is_empty()),
    }
}

/// Turns fuzz input into an outbox row: the fields of [`split_fields`]
/// named after the columns (`id=7`, `event_type=a.b`, `headers={}`, ...),
/// text taken as UTF-8 (lossily, as PostgreSQL text is), numbers parsed
/// (0 when they do not), `occurred_at` as microseconds since the epoch (the
/// precision of `timestamptz`), an optional column present when named, and
/// `max` the size limit (default 1 MiB).
pub fn outbox_row(data: &[u8]) -> (eventbus::pg::OutboxRow, usize) {
    use std::collections::HashMap;
    let fields: HashMap<Vec<u8>, String> = split_fields(data)
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let text = |name: &str| fields.get(name.as_bytes()).cloned();
    let number = |name: &str| {
        text(name)
            .and_then(|t| t.trim().parse::<i64>().ok())
            .unwrap_or(0)
    };
    let row = eventbus::pg::OutboxRow {
        id: number("id"),
        event_id: text("event_id")
            .and_then(|t| uuid::Uuid::try_parse(&t).ok())
            .unwrap_or_default(),
        event_type: text("event_type").unwrap_or_default(),
        version: number("version") as i32,
        key: text("key").unwrap_or_default(),
        partition: number("partition") as i32,
        occurred_at: chrono::DateTime::from_timestamp_micros(number("occurred_at"))
            .unwrap_or_default(),
        source: text("source").unwrap_or_default(),
        correlation_id: text("correlation_id"),
        causation_id: text("causation_id"),
        traceparent: text("traceparent"),
        headers: text("headers").unwrap_or_default(),
        data: text("data").unwrap_or_default(),
        deliver_at_ms: text("deliver_at_ms").and_then(|t| t.trim().parse::<f64>().ok()),
    };
    let max = text("max")
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1 << 20);
    (row, max)
}

/// Target `outbox_row`: `OutboxRow::to_envelope` on any row never panics;
/// the envelope it gives is within the size limit and encodes and decodes
/// back equal; a refusal says why. The dead-letter forms of the row
/// (`as_json`, `as_fields`) never panic either.
pub fn outbox_row_to_envelope(data: &[u8]) {
    let (row, max) = outbox_row(data);
    match row.to_envelope(max) {
        Ok(e) => {
            let size: usize = e.to_fields().iter().map(|(k, v)| k.len() + v.len()).sum();
            assert!(size <= max, "{size} bytes accepted under a limit of {max}");
            assert_fields_round_trip(&e);
        }
        Err(reason) => assert!(!reason.is_empty(), "a refusal without a reason"),
    }
    let _ = (row.as_json(), row.as_fields(), row.due());
}

/// Target `deadletter_raw_fields`: `decode_raw_fields` on any bytes never
/// panics and what it decodes encodes back to the same bytes; and any fields
/// (the input read as [`split_fields`]) encode and decode back equal.
pub fn deadletter_raw_fields(data: &[u8]) {
    use eventbus::deadletter::{decode_raw_fields, encode_raw_fields};
    if let Some(fields) = decode_raw_fields(data) {
        assert_eq!(encode_raw_fields(&fields), data, "encode(decode(b)) != b");
    }
    let fields = split_fields(data);
    let encoded = encode_raw_fields(&fields);
    assert_eq!(
        decode_raw_fields(&encoded),
        Some(fields),
        "decode(encode(x)) != x"
    );
}

/// No U+0000 in any string or object key of `v` (PostgreSQL jsonb refuses it).
fn assert_nul_free(v: &serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::String(s) => assert!(!s.contains('\0'), "U+0000 in {s:?}"),
        Value::Array(items) => items.iter().for_each(assert_nul_free),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            assert!(!k.contains('\0'), "U+0000 in the key {k:?}");
            assert_nul_free(v);
        }),
        _ => {}
    }
}

/// Target `deadletter_storable`: for any envelope a consumer can decode (the
/// input read as stream fields, as in `envelope_fields`), `storable` gives
/// JSON without U+0000 anywhere, and `restore` of what it gives is the same
/// envelope.
pub fn deadletter_storable(data: &[u8]) {
    use eventbus::deadletter::{restore, storable};
    let Ok(e) = decode(&split_fields(data)) else {
        return;
    };
    let (json, raw) = storable(&e);
    assert_nul_free(&json);
    assert_eq!(
        restore(&json, raw.as_deref()),
        Some(e),
        "restore(storable(e)) != e"
    );
}
