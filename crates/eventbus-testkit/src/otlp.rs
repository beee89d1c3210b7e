//! [`OtlpReceiver`]: an in-process OTLP/HTTP trace receiver that decodes
//! each export (protobuf) into [`ReceivedSpan`]s.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;

use crate::{HttpTestServer, Reply};

/// One span as exported.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// `service.name` of the exporting process.
    pub service: String,
    /// Trace id, 32 hex digits.
    pub trace_id: String,
    /// Span id, 16 hex digits.
    pub span_id: String,
    /// The parent's span id (empty for a root).
    pub parent_span_id: String,
    /// The span's name.
    pub name: String,
    /// `internal`, `server`, `client`, `producer` or `consumer`.
    pub kind: &'static str,
    /// Attributes, values as text.
    pub attributes: HashMap<String, String>,
    /// Events: name and attributes.
    pub events: Vec<(String, HashMap<String, String>)>,
    /// Links: (trace id, span id).
    pub links: Vec<(String, String)>,
    /// Status code: 0 unset, 1 ok, 2 error.
    pub status: i32,
}

impl ReceivedSpan {
    /// An attribute's value as text.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// A local OTLP/HTTP receiver (`POST /v1/traces`, protobuf): point
/// `OTEL_EXPORTER_OTLP_ENDPOINT` at [`OtlpReceiver::endpoint`]. Stops when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    server: HttpTestServer,
}

impl OtlpReceiver {
    /// Starts a receiver answering every export with 200.
    pub async fn start() -> Self {
        OtlpReceiver {
            server: HttpTestServer::start(|_, _| Reply::status(200)).await,
        }
    }

    /// The base URL (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> &str {
        self.server.url()
    }

    /// The traces URL (`<endpoint>/v1/traces`).
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.server.url())
    }

    /// Every span received so far (exports to other paths are ignored).
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.server
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/traces")
            .flat_map(|r| decode(&r.body))
            .collect()
    }

    /// Waits (polling) until `cond` holds on the spans, up to `within`.
    pub async fn wait_for(&self, within: Duration, cond: impl Fn(&[ReceivedSpan]) -> bool) -> bool {
        let deadline = std::time::Instant::now() + within;
        loop {
            if cond(&self.spans()) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(kv: &[KeyValue]) -> HashMap<String, String> {
    kv.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// The spans of one export; a body that does not decode yields none.
fn decode(body: &[u8]) -> Vec<ReceivedSpan> {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let resource = rs.resource.map(|r| text(&r.attributes)).unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(ReceivedSpan {
                    service: service.clone(),
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    name: s.name.clone(),
                    kind: match s.kind {
                        1 => "internal",
                        2 => "server",
                        3 => "client",
                        4 => "producer",
                        5 => "consumer",
                        _ => "unspecified",
                    },
                    attributes: text(&s.attributes),
                    events: s
                        .events
                        .iter()
                        .map(|e| (e.name.clone(), text(&e.attributes)))
                        .collect(),
                    links: s
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                    status: s.status.map_or(0, |st| st.code),
                });
            }
        }
    }
    out
}
