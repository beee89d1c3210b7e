//! [`MetricsLayer`]: the duration and outcome of every attempt.

use tower_layer::Layer;

use crate::handler::{Delivery, Handler, HandlerError};

/// Records `eventbus_handler_duration_seconds{group,type}` and
/// `eventbus_consumed_total{group,type,outcome}` (`ok`, or the error class)
/// for every attempt.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsLayer;

impl<H> Layer<H> for MetricsLayer {
    type Service = Measured<H>;

    fn layer(&self, inner: H) -> Measured<H> {
        Measured { inner }
    }
}

/// The handler a [`MetricsLayer`] builds.
#[derive(Debug, Clone)]
pub struct Measured<H> {
    inner: H,
}

impl<H: Handler> Handler for Measured<H> {
    // Not an `async fn`, so the future holds no copy of the delivery (see
    // `Either`).
    fn handle(
        &self,
        delivery: Delivery,
    ) -> impl std::future::Future<Output = Result<(), HandlerError>> + Send {
        let labels = [
            ("group", delivery.group.clone()),
            ("type", delivery.envelope.event_type.clone()),
        ];
        let inner = self.inner.handle(delivery);
        async move {
            let started = std::time::Instant::now();
            let result = inner.await;
            metrics::histogram!("eventbus_handler_duration_seconds", &labels)
                .record(started.elapsed().as_secs_f64());
            let outcome = match &result {
                Ok(()) => "ok",
                Err(e) => e.class.as_str(),
            };
            let [(_, group), (_, event_type)] = labels;
            metrics::counter!("eventbus_consumed_total", "group" => group, "type" => event_type, "outcome" => outcome)
                .increment(1);
            result
        }
    }
}
