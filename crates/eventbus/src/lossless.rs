//! Dead letters hold any bytes.
//!
//! PostgreSQL's `text` and `jsonb` refuse the character U+0000, and a stream
//! entry need not be UTF-8 at all, yet writing a dead letter must never fail
//! because of what the event contains. So the store keeps two forms:
//!
//! - a display form (`envelope` jsonb and the text columns), where every
//!   U+0000 is replaced by U+FFFD, so filters and `SELECT`s work;
//! - when that form is lossy, or the entry was not an envelope at all, the
//!   exact stream fields in `raw_fields` (bytea), from which `dlq show`,
//!   the API and replays rebuild the original byte for byte.
//!
//! `raw_fields` format (language-neutral, documented in docs/dead-letters.md):
//! the four bytes `EBF1`, then for each field its name and its value, each as
//! a 4-byte big-endian length followed by that many bytes.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

use crate::envelope::Envelope;

const MAGIC: &[u8; 4] = b"EBF1";

/// Error messages are cut to this many bytes (on a character boundary).
pub const DEAD_LETTER_ERROR_CAP: usize = 4096;

/// One stream field as raw bytes: `(name, value)`.
pub type RawField = (Vec<u8>, Vec<u8>);

/// Encodes stream fields in the `raw_fields` format.
pub fn encode_raw_fields(fields: &[RawField]) -> Vec<u8> {
    let size: usize = fields.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(MAGIC);
    for (name, value) in fields {
        for part in [name, value] {
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&part[..len as usize]);
        }
    }
    out
}

/// Decodes the `raw_fields` format; `None` if `bytes` is not in it.
pub fn decode_raw_fields(bytes: &[u8]) -> Option<Vec<RawField>> {
    let mut rest = bytes.strip_prefix(MAGIC)?;
    let mut take = || -> Option<Vec<u8>> {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        if tail.len() < len {
            return None;
        }
        let (part, tail) = tail.split_at(len);
        rest = tail;
        Some(part.to_vec())
    };
    let mut out = Vec::new();
    while let Some(name) = take() {
        out.push((name, take()?));
    }
    rest.is_empty().then_some(out)
}

/// An envelope's stream fields as raw bytes.
pub fn envelope_fields(e: &Envelope) -> Vec<RawField> {
    e.to_fields()
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
        .collect()
}

/// The forms an envelope is stored in: JSON without U+0000 anywhere (safe
/// for jsonb), and its exact stream fields when that JSON is lossy.
pub fn storable(envelope: &Envelope) -> (Value, Option<Vec<u8>>) {
    let json = serde_json::to_value(envelope).expect("an envelope always serializes");
    let (json, lossy) = nul_free_json(json);
    let raw = lossy.then(|| encode_raw_fields(&envelope_fields(envelope)));
    (json, raw)
}

/// The envelope back from its stored forms: from the raw fields when there
/// are some (and they decode), else from the JSON.
pub fn restore(json: &Value, raw: Option<&[u8]>) -> Option<Envelope> {
    match raw {
        Some(raw) => {
            let fields = decode_raw_fields(raw)?;
            Envelope::from_fields(fields.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))).ok()
        }
        None => serde_json::from_value(json.clone()).ok(),
    }
}

/// A stored dead letter as shown: the exact envelope rebuilt from `raw`
/// when that decodes to one (returned too, for its exact type and key),
/// else `stored` as it is; and `raw`'s fields as shown to people.
pub(crate) fn shown(
    stored: Value,
    raw: Option<&[u8]>,
) -> (Value, Option<Envelope>, Option<Vec<ShownField>>) {
    let exact = raw.and_then(|raw| restore(&stored, Some(raw)));
    let envelope = match &exact {
        Some(e) => serde_json::to_value(e).expect("an envelope always serializes"),
        None => stored,
    };
    let fields = raw
        .and_then(decode_raw_fields)
        .map(|f| f.iter().map(ShownField::of).collect());
    (envelope, exact, fields)
}

/// `s` with every U+0000 replaced by U+FFFD (PostgreSQL text refuses U+0000).
pub fn nul_free(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// `v` with U+0000 replaced in every string and object key; true if any was.
pub fn nul_free_json(v: Value) -> (Value, bool) {
    match v {
        Value::String(s) if s.contains('\0') => (Value::String(nul_free(&s).into_owned()), true),
        Value::Array(items) => {
            let mut lossy = false;
            let items = items
                .into_iter()
                .map(|i| {
                    let (i, l) = nul_free_json(i);
                    lossy |= l;
                    i
                })
                .collect();
            (Value::Array(items), lossy)
        }
        Value::Object(map) => {
            let mut lossy = false;
            let map = map
                .into_iter()
                .map(|(k, v)| {
                    let (v, l) = nul_free_json(v);
                    lossy |= l || k.contains('\0');
                    (nul_free(&k).into_owned(), v)
                })
                .collect();
            (Value::Object(map), lossy)
        }
        other => (other, false),
    }
}

/// One raw field as shown to people (`dlq show`, the API): text when it is
/// UTF-8, else base64.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShownField {
    /// The field name, when UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The field name in base64, when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_base64: Option<String>,
    /// The value, when UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value in base64, when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
}

impl ShownField {
    /// Shows one raw field.
    pub fn of((name, value): &RawField) -> Self {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let (name, name_base64) = match std::str::from_utf8(name) {
            Ok(s) => (Some(s.to_owned()), None),
            Err(_) => (None, Some(b64(name))),
        };
        let (value, value_base64) = match std::str::from_utf8(value) {
            Ok(s) => (Some(s.to_owned()), None),
            Err(_) => (None, Some(b64(value))),
        };
        ShownField {
            name,
            name_base64,
            value,
            value_base64,
        }
    }
}

/// Cuts `s` to at most `max` bytes, on a character boundary, marking the cut.
pub(crate) fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn envelope_with(s: &str) -> Envelope {
        Envelope::new(
            "t.x",
            format!("k{s}"),
            serde_json::json!({ "a": s, s: [s] }),
        )
        .with_source(format!("src{s}"))
        .with_header(format!("h{s}"), s)
    }

    #[test]
    fn nul_is_kept_in_raw_and_replaced_in_json() {
        let e = envelope_with("a\0b");
        let (json, raw) = storable(&e);
        assert!(raw.is_some());
        assert!(!json.to_string().contains("\\u0000"), "{json}");
        assert_eq!(restore(&json, raw.as_deref()), Some(e));
    }

    #[test]
    fn plain_envelopes_need_no_raw_copy() {
        let e = envelope_with("plain \u{FFFD} \\u0000");
        let (json, raw) = storable(&e);
        assert_eq!(raw, None);
        assert_eq!(restore(&json, None), Some(e));
    }

    #[test]
    fn truncated_or_foreign_bytes_do_not_decode() {
        let enc = encode_raw_fields(&[(b"a".to_vec(), vec![0xff, 0])]);
        for cut in 0..enc.len() {
            let d = decode_raw_fields(&enc[..cut]);
            assert!(cut == 4 && d == Some(vec![]) || d.is_none(), "{cut}");
        }
        assert_eq!(decode_raw_fields(b"{}"), None);
    }

    proptest! {
        #[test]
        fn raw_fields_round_trip(fields in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..8), proptest::collection::vec(any::<u8>(), 0..16)), 0..6)) {
            prop_assert_eq!(decode_raw_fields(&encode_raw_fields(&fields)), Some(fields));
        }

        #[test]
        fn any_text_round_trips(s in "\\PC*|[\\x00a]{0,4}") {
            let e = envelope_with(&s);
            let (json, raw) = storable(&e);
            prop_assert!(!json.to_string().contains("\\u0000"));
            prop_assert_eq!(restore(&json, raw.as_deref()), Some(e));
        }
    }
}

#[cfg(test)]
mod cap_tests {
    use super::cap;

    #[test]
    fn caps_on_char_boundaries() {
        assert_eq!(cap("short", 10), "short");
        let long = "é".repeat(100);
        let c = cap(&long, 11);
        assert!(c.len() <= 11 && c.ends_with("..."), "{c}");
    }
}
