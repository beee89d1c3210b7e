//! The spans of the data path and how their context travels in an envelope.

use std::time::Duration;

use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{MESSAGING_SYSTEM, SPAN_TARGET};
use crate::envelope::Envelope;
use crate::handler::{Delivery, ErrorClass, HandlerError};

/// The envelope header that carries the W3C `tracestate`.
pub const TRACESTATE_HEADER: &str = "tracestate";
/// The envelope header that carries the W3C `baggage`.
pub const BAGGAGE_HEADER: &str = "baggage";

/// True when something records the library's spans (an OpenTelemetry
/// layer is installed): one check of a cached callsite interest.
pub(crate) fn enabled() -> bool {
    tracing::enabled!(target: SPAN_TARGET, tracing::Level::TRACE)
}

fn propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

/// Reads `traceparent` from its field and `tracestate`/`baggage` from the headers.
struct EnvelopeCarrier<'a>(&'a Envelope);

impl Extractor for EnvelopeCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.0.traceparent.as_deref(),
            k => self.0.headers.get(k).map(String::as_str),
        }
    }

    fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.0.headers.keys().map(String::as_str).collect();
        keys.push("traceparent");
        keys
    }
}

/// The context an envelope carries, when it carries a valid one.
fn remote_context(e: &Envelope) -> Option<Context> {
    e.traceparent.as_ref()?;
    let cx = propagator().extract(&EnvelopeCarrier(e));
    cx.span().span_context().is_valid().then_some(cx)
}

/// A span context as W3C headers, for an HTTP request or a child process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextHeaders {
    /// `traceparent`.
    pub traceparent: String,
    /// `tracestate`, when not empty.
    pub tracestate: Option<String>,
    /// `baggage`, when there is any.
    pub baggage: Option<String>,
}

impl Injector for ContextHeaders {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        match key {
            "traceparent" => self.traceparent = value,
            "tracestate" => self.tracestate = Some(value),
            "baggage" => self.baggage = Some(value),
            _ => {}
        }
    }
}

fn headers_of(cx: &Context) -> Option<ContextHeaders> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut out = ContextHeaders::default();
    propagator().inject_context(cx, &mut out);
    (!out.traceparent.is_empty()).then_some(out)
}

/// The context of the current span (inside a handler: its attempt's
/// span), to pass on to whatever the handler calls; `None` when tracing is
/// off or there is no span.
pub fn current_context() -> Option<ContextHeaders> {
    if !enabled() {
        return None;
    }
    headers_of(&Span::current().context())
}

/// The context to pass on while handling `e` (to an HTTP endpoint, a
/// child process): the current span's when tracing is on, else the one
/// `e` carries as it is (its `traceparent`, `tracestate` and `baggage`).
pub fn context_for(e: &Envelope) -> Option<ContextHeaders> {
    current_context().or_else(|| {
        Some(ContextHeaders {
            traceparent: e.traceparent.clone()?,
            tracestate: e.headers.get(TRACESTATE_HEADER).cloned(),
            baggage: e.headers.get(BAGGAGE_HEADER).cloned(),
        })
    })
}

/// Writes `cx` into `e`: `traceparent`, and the `tracestate` and `baggage`
/// headers (set, or removed when the context has none).
fn stamp(e: &mut Envelope, cx: &ContextHeaders) {
    e.traceparent = Some(cx.traceparent.clone());
    for (name, value) in [
        (TRACESTATE_HEADER, &cx.tracestate),
        (BAGGAGE_HEADER, &cx.baggage),
    ] {
        match value {
            Some(v) => {
                e.headers.insert(name.to_owned(), v.clone());
            }
            None => {
                e.headers.remove(name);
            }
        }
    }
}

/// Events with the context of their PRODUCER span written in, and the
/// spans (open until [`Stamped::finish`]).
pub(crate) struct Stamped {
    pub(crate) events: Vec<Envelope>,
    spans: Vec<Span>,
}

impl Stamped {
    /// Ends the spans, marked as failed with `error` if there is one.
    pub(crate) fn finish(self, error: Option<&crate::Error>) {
        if let Some(e) = error {
            let message = crate::redact(&e.to_string());
            for span in &self.spans {
                span.set_status(Status::error(message.clone()));
            }
        }
    }
}

/// Starts a PRODUCER span per event (`operation` is `send` for a publish,
/// `create` for an outbox enqueue), child of the context the event
/// already carries or else of the caller's current span, and writes each
/// span's context into a copy of its event. `None` when tracing is off:
/// send the events as they are.
pub(crate) fn stamp_events(
    operation: &'static str,
    events: &[Envelope],
    destination: impl Fn(&Envelope) -> String,
) -> Option<Stamped> {
    if !enabled() {
        return None;
    }
    let mut out = Stamped {
        events: Vec::with_capacity(events.len()),
        spans: Vec::with_capacity(events.len()),
    };
    for e in events {
        let span = tracing::trace_span!(
            target: SPAN_TARGET,
            "eventbus.produce",
            otel.name = format!("{operation} {}", e.topic()),
            otel.kind = "producer",
            messaging.system = MESSAGING_SYSTEM,
            messaging.operation.type = operation,
            messaging.operation.name = operation,
            messaging.destination.name = destination(e),
            messaging.message.id = %e.id,
            messaging.eventbus.event.type = %e.event_type,
            messaging.eventbus.event.key = %e.key,
        );
        if let Some(parent) = remote_context(e) {
            let _ = span.set_parent(parent);
        }
        let mut e = e.clone();
        if let Some(cx) = headers_of(&span.context()) {
            stamp(&mut e, &cx);
        }
        out.events.push(e);
        out.spans.push(span);
    }
    Some(out)
}

/// Sends `events` with `send`, inside PRODUCER spans when tracing is on
/// ([`stamp_events`]: the copies sent carry the spans' context); the spans
/// end marked with the outcome. When tracing is off the events are sent as
/// they are.
pub(crate) async fn produce<T>(
    operation: &'static str,
    events: &[Envelope],
    destination: impl Fn(&Envelope) -> String,
    send: impl AsyncFnOnce(&[Envelope]) -> crate::Result<T>,
) -> crate::Result<T> {
    let Some(stamped) = stamp_events(operation, events, destination) else {
        return send(events).await;
    };
    let result = send(&stamped.events).await;
    stamped.finish(result.as_ref().err());
    result
}

/// The relay's `send` spans, one per event: each a child of the event's
/// producer context and linked to it. Empty when tracing is off; the
/// spans end when dropped (after the batch's commit).
pub(crate) fn relay_spans(events: &[Envelope], stream: impl Fn(&Envelope) -> String) -> Vec<Span> {
    if !enabled() {
        return Vec::new();
    }
    events
        .iter()
        .map(|e| {
            let span = tracing::trace_span!(
                target: SPAN_TARGET,
                "eventbus.relay",
                otel.name = format!("send {}", e.topic()),
                otel.kind = "producer",
                messaging.system = MESSAGING_SYSTEM,
                messaging.operation.type = "send",
                messaging.operation.name = "relay",
                messaging.destination.name = stream(e),
                messaging.message.id = %e.id,
                messaging.eventbus.event.type = %e.event_type,
            );
            if let Some(parent) = remote_context(e) {
                span.add_link(parent.span().span_context().clone());
                let _ = span.set_parent(parent);
            }
            span
        })
        .collect()
}

/// The CONSUMER span of delivery number `attempt` of `d`: child of the
/// event's context, with the messaging semantic conventions. A disabled
/// span when tracing is off.
pub(crate) fn consumer_span(d: &Delivery, attempt: u64) -> Span {
    let span = tracing::trace_span!(
        target: SPAN_TARGET,
        "eventbus.process",
        otel.name = format!("process {}", d.topic),
        otel.kind = "consumer",
        messaging.system = MESSAGING_SYSTEM,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %d.stream,
        messaging.destination.partition.id = d.partition.to_string(),
        messaging.consumer.group.name = %d.group,
        messaging.message.id = %d.envelope.id,
        messaging.eventbus.message.delivery_count = attempt,
        messaging.eventbus.entry.id = %d.entry_id,
        messaging.eventbus.event.type = %d.envelope.event_type,
        messaging.eventbus.consumer.name = %d.consumer,
    );
    if !span.is_disabled() {
        if let Some(parent) = remote_context(&d.envelope) {
            let _ = span.set_parent(parent);
        }
    }
    span
}

/// Marks an attempt's span as failed.
pub(crate) fn record_failure(span: &Span, err: &HandlerError) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute("error.type", err.class.as_str());
    span.set_status(Status::error(crate::redact(&err.message)));
}

/// A `retry` event on an attempt's span: the next attempt and its wait.
pub(crate) fn record_retry(span: &Span, attempt: u64, delay: Duration) {
    if span.is_disabled() {
        return;
    }
    span.add_event(
        "retry",
        vec![
            KeyValue::new("messaging.eventbus.next_attempt", (attempt + 1) as i64),
            KeyValue::new(
                "messaging.eventbus.retry.delay_ms",
                delay.as_millis() as i64,
            ),
        ],
    );
}

/// A `dead_letter` event on an attempt's span: its class and reason.
pub(crate) fn record_dead_letter(span: &Span, class: ErrorClass, reason: &str) {
    if span.is_disabled() {
        return;
    }
    span.add_event(
        "dead_letter",
        vec![
            KeyValue::new("messaging.eventbus.dead_letter.class", class.as_str()),
            KeyValue::new(
                "messaging.eventbus.dead_letter.reason",
                crate::redact(reason),
            ),
        ],
    );
}
