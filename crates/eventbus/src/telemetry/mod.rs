//! Traces with OpenTelemetry: one trace per event, from the caller's
//! transaction through the relay to every handler attempt.
//!
//! - `context`: the spans the library makes and how their context travels
//!   in an [`Envelope`](crate::Envelope): W3C `traceparent` in its own
//!   field, `tracestate` and `baggage` as headers of those names
//!   (docs/wire-format.md). [`Publisher::publish`](crate::Publisher::publish)
//!   and [`Outbox::enqueue`](crate::pg::Outbox::enqueue) start a PRODUCER
//!   span (child of the caller's current span, or of the `traceparent` the
//!   event already carries); the relay's publish is a span linked to (and
//!   child of) it; each consumer attempt is a CONSUMER span, child of the
//!   event's context, with the messaging semantic conventions; retries and
//!   dead letters are events of the attempt's span.
//! - `export`: [`Tracing`], the OTLP/HTTP (protobuf) exporter behind a
//!   bounded queue: a full queue drops spans and counts them
//!   (`eventbus_trace_spans_dropped_total`), the data path never waits.
//!
//! The spans are `tracing` spans of target [`SPAN_TARGET`] at level TRACE,
//! made into OpenTelemetry spans by the `tracing-opentelemetry` layer of
//! [`Tracing::layer`]. Without that layer (tracing off) no subscriber wants
//! them, so each costs one check of the callsite's interest and the
//! envelopes are sent as they are. Keep [`SPAN_TARGET`] out of your log
//! filter (`eventbus::otel=off`) to keep it that way when logging at TRACE.
//!
//! ```no_run
//! # async fn f() -> eventbus::Result<()> {
//! use tracing_subscriber::layer::SubscriberExt;
//! use tracing_subscriber::util::SubscriberInitExt;
//!
//! let config = eventbus::telemetry::TracingConfig::new("http://127.0.0.1:4318/v1/traces".parse().unwrap(), "orders");
//! let tracing = eventbus::telemetry::Tracing::start(&config)?; // inside a Tokio runtime
//! tracing_subscriber::registry().with(tracing.layer()).init();
//! // ... publish, relay, consume ...
//! tracing.shutdown(); // flushes what is queued
//! # Ok(()) }
//! ```

mod context;
mod export;

pub(crate) use self::context::{
    consumer_span, produce, record_dead_letter, record_failure, record_retry, relay_spans,
};
pub use self::context::{
    context_for, current_context, ContextHeaders, BAGGAGE_HEADER, TRACESTATE_HEADER,
};
pub use self::export::{spans_dropped, TraceSampler, Tracing, TracingConfig};

/// The `tracing` target of the spans this library makes for OpenTelemetry.
pub const SPAN_TARGET: &str = "eventbus::otel";

/// `messaging.system` of every span.
pub const MESSAGING_SYSTEM: &str = "eventbus";
