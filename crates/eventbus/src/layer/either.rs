//! [`Either`] and [`OptionLayer`]: a layer that may be switched off.

use tower_layer::Layer;

use crate::handler::{Delivery, Handler, HandlerError};

/// One of two handlers: what an [`OptionLayer`] builds.
#[derive(Debug, Clone)]
pub enum Either<A, B> {
    /// The layer was on: its handler.
    Left(A),
    /// The layer was off: the inner handler itself.
    Right(B),
}

impl<A: Handler, B: Handler> Handler for Either<A, B> {
    // Not an `async fn`: that would keep its own copy of the delivery beside
    // the inner future's, at every layer of the stack.
    fn handle(
        &self,
        delivery: Delivery,
    ) -> impl std::future::Future<Output = Result<(), HandlerError>> + Send {
        match self {
            Either::Left(a) => futures::future::Either::Left(a.handle(delivery)),
            Either::Right(b) => futures::future::Either::Right(b.handle(delivery)),
        }
    }
}

/// A layer that applies `L` when it is `Some`, and nothing otherwise
/// (tower's `option_layer`).
#[derive(Debug, Clone)]
pub struct OptionLayer<L>(pub Option<L>);

impl<L> From<Option<L>> for OptionLayer<L> {
    fn from(layer: Option<L>) -> Self {
        OptionLayer(layer)
    }
}

impl<H, L: Layer<H>> Layer<H> for OptionLayer<L> {
    type Service = Either<L::Service, H>;

    fn layer(&self, inner: H) -> Self::Service {
        match &self.0 {
            Some(l) => Either::Left(l.layer(inner)),
            None => Either::Right(inner),
        }
    }
}
