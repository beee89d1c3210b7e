//! [`TraceLayer`]: a span per attempt.

use tower_layer::Layer;
use tracing::Instrument;

use crate::handler::{Delivery, Handler, HandlerError};

/// Runs each attempt in an `event` span with the event's id, type and group,
/// so every log line written meanwhile names the event.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<H> Layer<H> for TraceLayer {
    type Service = Traced<H>;

    fn layer(&self, inner: H) -> Traced<H> {
        Traced { inner }
    }
}

/// The handler a [`TraceLayer`] builds.
#[derive(Debug, Clone)]
pub struct Traced<H> {
    inner: H,
}

impl<H: Handler> Handler for Traced<H> {
    // Not an `async fn`, so the future holds no copy of the delivery (see
    // `Either`).
    fn handle(
        &self,
        delivery: Delivery,
    ) -> impl std::future::Future<Output = Result<(), HandlerError>> + Send {
        let span = tracing::info_span!(
            "event",
            event_id = %delivery.envelope.id,
            event_type = %delivery.envelope.event_type,
            group = %delivery.group,
        );
        self.inner.handle(delivery).instrument(span)
    }
}
