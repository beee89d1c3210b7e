//! [`TimeoutLayer`]: each attempt may run for so long.

use std::time::Duration;

use tower_layer::Layer;

use crate::handler::{Delivery, Handler, HandlerError};

/// Bounds each attempt: one still running after the limit is dropped (an
/// `--exec` command is killed, a transaction rolled back) and fails as
/// retryable.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    after: Duration,
}

impl TimeoutLayer {
    /// Attempts end after `after`.
    pub fn new(after: Duration) -> Self {
        TimeoutLayer { after }
    }
}

impl<H> Layer<H> for TimeoutLayer {
    type Service = Timeout<H>;

    fn layer(&self, inner: H) -> Timeout<H> {
        Timeout {
            inner,
            after: self.after,
        }
    }
}

/// The handler a [`TimeoutLayer`] builds.
#[derive(Debug, Clone)]
pub struct Timeout<H> {
    inner: H,
    after: Duration,
}

impl<H: Handler> Handler for Timeout<H> {
    // Not an `async fn`, so the future holds no copy of the delivery (see
    // `Either`).
    fn handle(
        &self,
        delivery: Delivery,
    ) -> impl std::future::Future<Output = Result<(), HandlerError>> + Send {
        let after = self.after;
        let attempt = tokio::time::timeout(after, self.inner.handle(delivery));
        async move {
            match attempt.await {
                Ok(r) => r,
                Err(_) => Err(HandlerError::retryable(format!(
                    "attempt timed out after {after:?}"
                ))),
            }
        }
    }
}
