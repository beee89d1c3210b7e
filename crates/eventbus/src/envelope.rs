//! The event envelope and its stream-entry encoding.
//!
//! An [`Envelope`] travels as one Redis stream entry whose fields are the
//! envelope's fields, each a plain string, so `XRANGE` output is readable and
//! any language can produce or consume it. The layout is versioned by the
//! field `v` (currently [`WIRE_VERSION`]) and specified in
//! `docs/wire-format.md`, with test vectors in `docs/wire-format-vectors.json`.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The wire version written in the `v` field of every entry.
pub const WIRE_VERSION: &str = "1";

/// Field names of a stream entry, in the order they are written.
pub mod fields {
    /// Wire version of the entry layout.
    pub const WIRE: &str = "v";
    /// Event id (UUIDv7).
    pub const ID: &str = "id";
    /// Event type, `topic.name`.
    pub const TYPE: &str = "type";
    /// Schema version of `data`.
    pub const VERSION: &str = "version";
    /// Partition key.
    pub const KEY: &str = "key";
    /// When the event happened (RFC 3339, UTC, microseconds).
    pub const OCCURRED_AT: &str = "occurred_at";
    /// The service that produced the event.
    pub const SOURCE: &str = "source";
    /// Optional correlation id.
    pub const CORRELATION_ID: &str = "correlation_id";
    /// Optional causation id.
    pub const CAUSATION_ID: &str = "causation_id";
    /// Optional W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// Optional string map, JSON-encoded.
    pub const HEADERS: &str = "headers";
    /// The payload, JSON-encoded.
    pub const DATA: &str = "data";
}

/// One event: its identity, routing, metadata and JSON payload.
///
/// `id` is stable across retries and duplicates: inboxes deduplicate on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique id, a UUIDv7 (time-ordered).
    pub id: Uuid,
    /// Event type, e.g. `work_item.processing_failed`; the topic is the part before the first dot.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Schema version of `data`.
    pub version: u32,
    /// Partition key: all events with one key go to one partition, in order.
    pub key: String,
    /// When the event happened, UTC, microsecond precision.
    pub occurred_at: DateTime<Utc>,
    /// The producing service.
    pub source: String,
    /// Groups the events of one business flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The id of the event or command that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// W3C `traceparent` of the producing span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Free-form string headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The payload.
    pub data: Value,
}

impl Envelope {
    /// A new envelope with a fresh UUIDv7, version 1, `occurred_at` now and
    /// source `eventbus`.
    pub fn new(event_type: impl Into<String>, key: impl Into<String>, data: Value) -> Self {
        Envelope {
            id: Uuid::now_v7(),
            event_type: event_type.into(),
            version: 1,
            key: key.into(),
            occurred_at: Utc::now().trunc_subsecs(6),
            source: "eventbus".to_owned(),
            correlation_id: None,
            causation_id: None,
            traceparent: None,
            headers: BTreeMap::new(),
            data,
        }
    }

    /// Sets the schema version.
    pub fn with_version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// Sets the source.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// The topic: the type's prefix before the first dot.
    pub fn topic(&self) -> &str {
        crate::topology::topic_of(&self.event_type)
    }

    /// Encodes the envelope as stream-entry fields, in a fixed order.
    /// Absent optional fields and empty headers are omitted.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(12);
        out.push((fields::WIRE, WIRE_VERSION.to_owned()));
        out.push((fields::ID, self.id.to_string()));
        out.push((fields::TYPE, self.event_type.clone()));
        out.push((fields::VERSION, self.version.to_string()));
        out.push((fields::KEY, self.key.clone()));
        out.push((fields::OCCURRED_AT, format_time(&self.occurred_at)));
        out.push((fields::SOURCE, self.source.clone()));
        if let Some(v) = &self.correlation_id {
            out.push((fields::CORRELATION_ID, v.clone()));
        }
        if let Some(v) = &self.causation_id {
            out.push((fields::CAUSATION_ID, v.clone()));
        }
        if let Some(v) = &self.traceparent {
            out.push((fields::TRACEPARENT, v.clone()));
        }
        if !self.headers.is_empty() {
            out.push((
                fields::HEADERS,
                serde_json::to_string(&self.headers).expect("a string map always serializes"),
            ));
        }
        out.push((
            fields::DATA,
            serde_json::to_string(&self.data).expect("a JSON value always serializes"),
        ));
        out
    }

    /// Decodes an envelope from stream-entry fields. Unknown fields are
    /// ignored (so a later wire version can add optional fields); a missing
    /// or malformed field is a [`DecodeError`], never a panic.
    pub fn from_fields<'a, I>(entry: I) -> Result<Self, DecodeError>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let mut slots: [Option<&'a [u8]>; 12] = [None; 12];
        for (name, value) in entry {
            let slot = match name {
                b"v" => 0,
                b"id" => 1,
                b"type" => 2,
                b"version" => 3,
                b"key" => 4,
                b"occurred_at" => 5,
                b"source" => 6,
                b"correlation_id" => 7,
                b"causation_id" => 8,
                b"traceparent" => 9,
                b"headers" => 10,
                b"data" => 11,
                _ => continue,
            };
            slots[slot] = Some(value);
        }
        let text = |i: usize, field: &'static str| -> Result<Option<&'a str>, DecodeError> {
            slots[i]
                .map(|b| std::str::from_utf8(b).map_err(|_| DecodeError::NotUtf8 { field }))
                .transpose()
        };
        let required = |i: usize, field: &'static str| -> Result<&'a str, DecodeError> {
            text(i, field)?.ok_or(DecodeError::MissingField { field })
        };

        let wire = required(0, fields::WIRE)?;
        if wire != WIRE_VERSION {
            return Err(DecodeError::UnsupportedWireVersion {
                found: wire.to_owned(),
            });
        }
        let id = required(1, fields::ID)?;
        let id = Uuid::try_parse(id).map_err(|e| invalid(fields::ID, e))?;
        let event_type = required(2, fields::TYPE)?;
        if event_type.is_empty() {
            return Err(invalid(fields::TYPE, "is empty"));
        }
        let version = required(3, fields::VERSION)?;
        let version = version.parse::<u32>().map_err(|_| {
            invalid(
                fields::VERSION,
                format!("{version:?} is not a whole number"),
            )
        })?;
        let key = required(4, fields::KEY)?;
        let time = required(5, fields::OCCURRED_AT)?;
        let occurred_at = DateTime::parse_from_rfc3339(time)
            .map_err(|e| invalid(fields::OCCURRED_AT, format!("{time:?}: {e}")))?
            .with_timezone(&Utc)
            // Envelopes hold microseconds, the precision the encoder writes:
            // finer digits from another writer would not survive a re-encode.
            .trunc_subsecs(6);
        if !(0..=9999).contains(&occurred_at.year()) {
            // An offset can move a valid RFC 3339 time out of its four-digit
            // years once in UTC, where the encoder could not write it back.
            return Err(invalid(
                fields::OCCURRED_AT,
                format!("{time:?} is outside the years 0000-9999 in UTC"),
            ));
        }
        let source = required(6, fields::SOURCE)?;
        let headers = match text(10, fields::HEADERS)? {
            None => BTreeMap::new(),
            Some(h) => serde_json::from_str(h).map_err(|e| {
                invalid(
                    fields::HEADERS,
                    format!("not a JSON object of strings: {e}"),
                )
            })?,
        };
        let data = required(11, fields::DATA)?;
        let data =
            serde_json::from_str(data).map_err(|source| DecodeError::InvalidData { source })?;

        Ok(Envelope {
            id,
            event_type: event_type.to_owned(),
            version,
            key: key.to_owned(),
            occurred_at,
            source: source.to_owned(),
            correlation_id: text(7, fields::CORRELATION_ID)?.map(str::to_owned),
            causation_id: text(8, fields::CAUSATION_ID)?.map(str::to_owned),
            traceparent: text(9, fields::TRACEPARENT)?.map(str::to_owned),
            headers,
            data,
        })
    }
}

fn invalid(field: &'static str, reason: impl std::fmt::Display) -> DecodeError {
    DecodeError::InvalidField {
        field,
        reason: reason.to_string(),
    }
}

/// RFC 3339 in UTC with exactly six fractional digits, e.g. `2026-11-29T01:02:03.000004Z`.
pub(crate) fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Why a stream entry is not a valid envelope.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A required field is absent.
    #[error("entry has no `{field}` field")]
    MissingField {
        /// The missing field.
        field: &'static str,
    },
    /// A field's bytes are not UTF-8.
    #[error("field `{field}` is not valid UTF-8")]
    NotUtf8 {
        /// The offending field.
        field: &'static str,
    },
    /// A field is present but its value is not acceptable.
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The `data` field is not JSON.
    #[error("field `data` is not valid JSON: {source}")]
    InvalidData {
        /// The JSON parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The entry was written with a wire version this build does not know.
    #[error("unsupported wire version {found:?} (this build reads version {WIRE_VERSION})")]
    UnsupportedWireVersion {
        /// The version found in the `v` field.
        found: String,
    },
}

impl DecodeError {
    /// The field the error is about (`data` for invalid JSON, `v` for an
    /// unsupported wire version).
    pub fn field(&self) -> &'static str {
        match self {
            DecodeError::MissingField { field }
            | DecodeError::NotUtf8 { field }
            | DecodeError::InvalidField { field, .. } => field,
            DecodeError::InvalidData { .. } => fields::DATA,
            DecodeError::UnsupportedWireVersion { .. } => fields::WIRE,
        }
    }

    /// A short stable name for the kind of error (`missing_field`,
    /// `not_utf8`, `invalid_field`, `invalid_data`, `unsupported_wire_version`),
    /// used in test vectors, logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::MissingField { .. } => "missing_field",
            DecodeError::NotUtf8 { .. } => "not_utf8",
            DecodeError::InvalidField { .. } => "invalid_field",
            DecodeError::InvalidData { .. } => "invalid_data",
            DecodeError::UnsupportedWireVersion { .. } => "unsupported_wire_version",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        let mut e = Envelope::new(
            "work_item.processing_failed",
            "wi-1",
            serde_json::json!({"a": 1}),
        );
        e.correlation_id = Some("c-1".into());
        e.headers.insert("tenant".into(), "acme".into());
        e
    }

    fn as_bytes(f: &[(&'static str, String)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        f.iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    /// The sample's fields with `occurred_at` written as `time`.
    fn sample_at(time: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut f = as_bytes(&sample().to_fields());
        for (k, v) in &mut f {
            if k == b"occurred_at" {
                *v = time.as_bytes().to_vec();
            }
        }
        f
    }

    fn decode(f: &[(Vec<u8>, Vec<u8>)]) -> Result<Envelope, DecodeError> {
        Envelope::from_fields(f.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
    }

    #[test]
    fn round_trips() {
        let e = sample();
        assert_eq!(decode(&as_bytes(&e.to_fields())).unwrap(), e);
    }

    /// Found by the `envelope_fields` fuzz target: an entry written with
    /// finer than microsecond precision decoded to an envelope that did not
    /// survive its own encoding (which writes six digits).
    #[test]
    fn sub_microsecond_time_is_truncated_so_it_round_trips() {
        let e = decode(&sample_at("2026-01-02T03:04:05.1234056+01:00")).unwrap();
        assert_eq!(format_time(&e.occurred_at), "2026-01-02T02:04:05.123405Z");
        assert_eq!(decode(&as_bytes(&e.to_fields())).unwrap(), e);
    }

    /// Found while checking the `envelope_fields` round trip: an offset can
    /// carry a four-digit-year time out of RFC 3339's range in UTC, which the
    /// encoder then writes as `-0001-…` or `+10000-…`, unreadable.
    #[test]
    fn time_outside_rfc3339_years_in_utc_is_invalid() {
        for t in ["0000-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"] {
            let err = decode(&sample_at(t)).unwrap_err();
            assert_eq!(
                (err.kind(), err.field()),
                ("invalid_field", "occurred_at"),
                "{t}"
            );
        }
        let e = decode(&sample_at("0000-01-01T23:59:00+23:59")).unwrap();
        assert_eq!(decode(&as_bytes(&e.to_fields())).unwrap(), e);
    }

    #[test]
    fn omits_absent_optionals() {
        let e = Envelope::new("a.b", "k", Value::Null);
        let names: Vec<_> = e.to_fields().iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "v",
                "id",
                "type",
                "version",
                "key",
                "occurred_at",
                "source",
                "data"
            ]
        );
    }

    #[test]
    fn each_malformation_has_its_error() {
        let good = as_bytes(&sample().to_fields());
        let without = |name: &str| {
            good.iter()
                .filter(|(k, _)| k != name.as_bytes())
                .cloned()
                .collect::<Vec<_>>()
        };
        let with = |name: &str, value: &[u8]| {
            good.iter()
                .map(|(k, v)| {
                    if k == name.as_bytes() {
                        (k.clone(), value.to_vec())
                    } else {
                        (k.clone(), v.clone())
                    }
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            decode(&without("data")).unwrap_err().kind(),
            "missing_field"
        );
        assert_eq!(decode(&without("v")).unwrap_err().kind(), "missing_field");
        assert_eq!(
            decode(&with("data", b"{nope")).unwrap_err().kind(),
            "invalid_data"
        );
        assert_eq!(
            decode(&with("v", b"9")).unwrap_err().kind(),
            "unsupported_wire_version"
        );
        assert_eq!(
            decode(&with("id", b"xyz")).unwrap_err().kind(),
            "invalid_field"
        );
        assert_eq!(
            decode(&with("version", b"-1")).unwrap_err().kind(),
            "invalid_field"
        );
        assert_eq!(
            decode(&with("occurred_at", b"yesterday"))
                .unwrap_err()
                .kind(),
            "invalid_field"
        );
        assert_eq!(
            decode(&with("headers", b"[1]")).unwrap_err().kind(),
            "invalid_field"
        );
        assert_eq!(
            decode(&with("key", &[0xff, 0xfe])).unwrap_err().kind(),
            "not_utf8"
        );
    }
}
