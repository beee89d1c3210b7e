//! The body of `POST /v1/events` → envelopes: pure, no I/O, so the fuzz
//! target `http_events_body` (fuzz/, docs/fuzzing.md) and the corpus replay
//! test reach it through the crate's small library half.

use std::collections::BTreeMap;

use eventbus::Envelope;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

/// One event as the API takes it; what it leaves out gets a default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn {
    #[serde(rename = "type")]
    event_type: String,
    key: String,
    data: Value,
    version: Option<u32>,
    id: Option<Uuid>,
    source: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    traceparent: Option<String>,
    /// When the event is due (RFC 3339); checked after parsing, so a bad
    /// time is a 422 with the event's index, not a malformed body.
    deliver_at: Option<String>,
}

impl EventIn {
    fn into_envelope(self) -> (Envelope, Option<String>) {
        let mut e = Envelope::new(self.event_type, self.key, self.data);
        if let Some(id) = self.id {
            e.id = id;
        }
        e.version = self.version.unwrap_or(1);
        e.source = self.source.unwrap_or_else(|| "eventbus-api".to_owned());
        e.headers = self.headers.unwrap_or_default();
        e.correlation_id = self.correlation_id;
        e.causation_id = self.causation_id;
        e.traceparent = self.traceparent;
        (e, self.deliver_at)
    }
}

/// A request body as JSON; `Err` is the message of the 400 answer.
pub fn parse_json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))
}

/// The events of a `POST /v1/events` body: one event, or
/// `{"events": [event, ...]}` (at least one). `Err` is the message of the
/// 400 answer; checks against the catalogue and the size limit come after.
pub fn parse_events(body: &[u8]) -> Result<Vec<Envelope>, String> {
    Ok(parse_events_at(body)?.into_iter().map(|(e, _)| e).collect())
}

/// [`parse_events`] with each event's `deliver_at` as written (unparsed).
pub fn parse_events_at(body: &[u8]) -> Result<Vec<(Envelope, Option<String>)>, String> {
    let items = match parse_json(body)? {
        Value::Object(mut o) if o.contains_key("events") => match o.remove("events") {
            Some(Value::Array(items)) if o.is_empty() => items,
            _ => return Err("a batch is {\"events\": [event, ...]} and nothing else".into()),
        },
        one => vec![one],
    };
    if items.is_empty() {
        return Err("the batch holds no events".into());
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            serde_json::from_value::<EventIn>(item)
                .map(EventIn::into_envelope)
                .map_err(|e| format!("event {i}: {e}"))
        })
        .collect()
}
