//! One outbox row as the relay reads it, and its stream entry.
//!
//! A row a plain-SQL `INSERT` wrote may still be unpublishable (written
//! before the outbox's checks existed, or refused by Redis): the relay then
//! dead-letters it with [`OutboxRow::as_json`] and [`OutboxRow::as_fields`]
//! (the row as written, exactly) and moves on.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::envelope::Envelope;
use crate::lossless::RawField;

/// The columns of one outbox row; `headers` and `data` as their text.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// The row id (the outbox's order).
    pub id: i64,
    /// `event_id`.
    pub event_id: Uuid,
    /// `event_type`.
    pub event_type: String,
    /// `version`.
    pub version: i32,
    /// `key`.
    pub key: String,
    /// `partition`.
    pub partition: i32,
    /// `occurred_at`.
    pub occurred_at: DateTime<Utc>,
    /// `source`.
    pub source: String,
    /// `correlation_id`.
    pub correlation_id: Option<String>,
    /// `causation_id`.
    pub causation_id: Option<String>,
    /// `traceparent`.
    pub traceparent: Option<String>,
    /// `headers` (jsonb) as text.
    pub headers: String,
    /// `data` (json) as text, as written.
    pub data: String,
    /// `deliver_at` in milliseconds since the epoch (`None`: NULL, now;
    /// ±infinity as infinite values, never an error).
    pub deliver_at_ms: Option<f64>,
}

impl OutboxRow {
    /// The columns the relay's claim returns, in [`OutboxRow::from_row`]'s order.
    pub(crate) const COLUMNS: &'static str = "o.id, o.event_id, o.event_type, o.version, o.key, \
        o.partition, o.occurred_at, o.source, o.correlation_id, o.causation_id, o.traceparent, \
        o.headers::text, o.data::text, (extract(epoch FROM o.deliver_at) * 1000)::float8";

    pub(crate) fn from_row(r: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(OutboxRow {
            id: r.try_get(0)?,
            event_id: r.try_get(1)?,
            event_type: r.try_get(2)?,
            version: r.try_get(3)?,
            key: r.try_get(4)?,
            partition: r.try_get(5)?,
            occurred_at: r.try_get(6)?,
            source: r.try_get(7)?,
            correlation_id: r.try_get(8)?,
            causation_id: r.try_get(9)?,
            traceparent: r.try_get(10)?,
            headers: r.try_get(11)?,
            data: r.try_get(12)?,
            deliver_at_ms: r.try_get(13)?,
        })
    }

    /// The event this row holds, or why it cannot be published (in words).
    pub fn to_envelope(&self, max_event_bytes: usize) -> Result<Envelope, String> {
        // What a direct publish refuses, and what no consumer could decode:
        // the relay does not go through the publisher's checks.
        crate::topology::validate_event_type(&self.event_type).map_err(|e| e.to_string())?;
        if self.key.is_empty() {
            return Err("the event has an empty key".into());
        }
        if !(0..=9999).contains(&self.occurred_at.year()) {
            return Err(format!(
                "occurred_at {} is outside the years 0000-9999 (RFC 3339 cannot write it)",
                self.occurred_at
            ));
        }
        let headers: BTreeMap<String, String> = serde_json::from_str(&self.headers)
            .map_err(|e| format!("headers are not a JSON object of strings: {e}"))?;
        let data: Value =
            serde_json::from_str(&self.data).map_err(|e| format!("data is not JSON: {e}"))?;
        if !data.is_object() {
            return Err("data is not a JSON object".into());
        }
        let version = u32::try_from(self.version)
            .map_err(|_| format!("version {} is negative", self.version))?;
        let envelope = Envelope {
            id: self.event_id,
            event_type: self.event_type.clone(),
            version,
            key: self.key.clone(),
            occurred_at: self.occurred_at,
            source: self.source.clone(),
            correlation_id: self.correlation_id.clone(),
            causation_id: self.causation_id.clone(),
            traceparent: self.traceparent.clone(),
            headers,
            data,
        };
        let size: usize = envelope
            .to_fields()
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if size > max_event_bytes {
            return Err(format!(
                "the event is {size} bytes, over the limit of {max_event_bytes} bytes"
            ));
        }
        Ok(envelope)
    }

    /// When the row's event is due: `Ok(None)` for now (NULL, a past time,
    /// -infinity), `Ok(Some(t))` for later, or why the time is refused
    /// (infinity, or beyond what RFC 3339 writes).
    pub fn due(&self) -> Result<Option<DateTime<Utc>>, String> {
        let Some(ms) = self.deliver_at_ms else {
            return Ok(None);
        };
        if ms == f64::NEG_INFINITY || ms <= Utc::now().timestamp_millis() as f64 {
            return Ok(None);
        }
        let at = (ms.is_finite() && ms < 253_402_300_800_000.0)
            .then(|| DateTime::from_timestamp_millis(ms as i64))
            .flatten();
        match at {
            Some(at) => Ok(Some(at)),
            None => Err(format!(
                "deliver_at is {}: beyond any delay accepted (EVENT_BUS_MAX_DELAY)",
                if ms.is_finite() {
                    "after the year 9999"
                } else {
                    "infinity"
                }
            )),
        }
    }

    /// The row as JSON, for people (`headers` and `data` parsed when they parse).
    pub fn as_json(&self) -> Value {
        let parsed = |s: &str| serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.into()));
        serde_json::json!({
            "id": self.id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "version": self.version,
            "key": self.key,
            "partition": self.partition,
            "occurred_at": self.occurred_at,
            "source": self.source,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "traceparent": self.traceparent,
            "headers": parsed(&self.headers),
            "data": parsed(&self.data),
            "deliver_at": self.deliver_at_ms.map(|ms| match DateTime::from_timestamp_millis(ms as i64) {
                Some(t) if ms.is_finite() => serde_json::json!(t),
                _ => serde_json::json!(ms.to_string()),
            }),
        })
    }

    /// The row's columns as `(name, text)` fields, exactly as written.
    pub fn as_fields(&self) -> Vec<RawField> {
        let mut out: Vec<(&str, String)> = vec![
            ("id", self.id.to_string()),
            ("event_id", self.event_id.to_string()),
            ("event_type", self.event_type.clone()),
            ("version", self.version.to_string()),
            ("key", self.key.clone()),
            ("partition", self.partition.to_string()),
            (
                "occurred_at",
                crate::envelope::format_time(&self.occurred_at),
            ),
            ("source", self.source.clone()),
        ];
        for (name, v) in [
            ("correlation_id", &self.correlation_id),
            ("causation_id", &self.causation_id),
            ("traceparent", &self.traceparent),
        ] {
            if let Some(v) = v {
                out.push((name, v.clone()));
            }
        }
        if let Some(ms) = self.deliver_at_ms {
            out.push(("deliver_at_ms", ms.to_string()));
        }
        out.push(("headers", self.headers.clone()));
        out.push(("data", self.data.clone()));
        out.into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(headers: &str, data: &str) -> OutboxRow {
        OutboxRow {
            id: 1,
            event_id: Uuid::now_v7(),
            event_type: "t.x".into(),
            version: 1,
            key: "k".into(),
            partition: 0,
            occurred_at: Utc::now(),
            source: "s".into(),
            correlation_id: None,
            causation_id: None,
            traceparent: None,
            headers: headers.into(),
            data: data.into(),
            deliver_at_ms: None,
        }
    }

    #[test]
    fn every_deliver_at_is_now_later_or_refused_in_words() {
        let mut r = row("{}", "{}");
        let now = Utc::now().timestamp_millis() as f64;
        for (ms, expect) in [
            (None, Ok(false)),
            (Some(f64::NEG_INFINITY), Ok(false)),
            (Some(-62_198_755_200_000.0), Ok(false)), // before the year 0
            (Some(now - 1000.0), Ok(false)),
            (Some(now + 60_000.0), Ok(true)),
            (Some(f64::INFINITY), Err("infinity")),
            (Some(9.2e15), Err("after the year 9999")),
        ] {
            r.deliver_at_ms = ms;
            match (r.due(), expect) {
                (Ok(at), Ok(later)) => assert_eq!(at.is_some(), later, "{ms:?}"),
                (Err(e), Err(why)) => assert!(e.contains(why), "{ms:?}: {e}"),
                (got, want) => panic!("{ms:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn each_unpublishable_row_says_why() {
        let ok = row(r#"{"a": "1"}"#, r#"{"x": "\u0000"}"#);
        assert!(ok.to_envelope(1 << 20).is_ok());
        let e = row(r#"{"attempt": 3}"#, "{}")
            .to_envelope(1 << 20)
            .unwrap_err();
        assert!(
            e.contains("headers are not a JSON object of strings"),
            "{e}"
        );
        let e = row("{}", "[1]").to_envelope(1 << 20).unwrap_err();
        assert!(e.contains("not a JSON object"), "{e}");
        let e = row("{}", r#"{"x": "aaaaaaaa"}"#)
            .to_envelope(50)
            .unwrap_err();
        assert!(e.contains("over the limit of 50 bytes"), "{e}");
        let mut neg = row("{}", "{}");
        neg.version = -1;
        assert!(neg.to_envelope(1 << 20).unwrap_err().contains("negative"));
    }

    /// Found by the `outbox_row` fuzz target: rows the relay published as
    /// entries no consumer can decode (an empty type; a time PostgreSQL holds
    /// but RFC 3339 cannot write) or that a direct publish refuses (a type
    /// not `topic.name`, an empty key). Each is refused with its reason.
    #[test]
    fn rows_a_consumer_could_not_decode_are_refused() {
        let refused = |edit: &dyn Fn(&mut OutboxRow)| {
            let mut r = row("{}", "{}");
            edit(&mut r);
            r.to_envelope(1 << 20).unwrap_err()
        };
        assert!(refused(&|r| r.event_type.clear()).contains("topic.name"));
        assert!(refused(&|r| r.event_type = "no_dot".into()).contains("topic.name"));
        assert!(refused(&|r| r.key.clear()).contains("empty key"));
        for micros in [-62_198_755_200_000_000, 253_402_300_800_000_000] {
            let e = refused(&|r| {
                r.occurred_at = DateTime::from_timestamp_micros(micros).unwrap();
            });
            assert!(e.contains("0000-9999"), "{micros}: {e}");
        }
    }

    #[test]
    fn the_row_is_kept_exactly() {
        let r = row(r#"{"attempt": 3}"#, r#"{ "x" : "\u0000" }"#);
        let fields = r.as_fields();
        let data = fields.iter().find(|(k, _)| k == b"data").unwrap();
        assert_eq!(data.1, br#"{ "x" : "\u0000" }"#);
        assert_eq!(r.as_json()["headers"]["attempt"], 3);
    }
}
