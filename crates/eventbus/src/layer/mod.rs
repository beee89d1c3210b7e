//! Handler layers: the policies around a [`Handler`](crate::Handler), in the tower sense.
//!
//! A layer ([`Layer`], tower's own trait) wraps a handler in another
//! handler. [`Consumer::builder`](crate::Consumer::builder) composes them in
//! one order, outermost first, the same in both consumer modes:
//!
//! 1. **trace** ([`TraceLayer`]): a span naming the event's id, type and
//!    group, so every log line of the attempt (the handler's, an exec
//!    sink's, a timeout's) carries them;
//! 2. **metrics** ([`MetricsLayer`]):
//!    `eventbus_handler_duration_seconds{group,type}` and
//!    `eventbus_consumed_total{group,type,outcome}` for every attempt,
//!    timeouts included;
//! 3. **attempt timeout** ([`TimeoutLayer`], from
//!    [`RetryPolicy::attempt_timeout`](crate::RetryPolicy::attempt_timeout)):
//!    an attempt still running is dropped and fails as retryable;
//! 4. **your layers** ([`ConsumerBuilder::layer`](crate::consumer::ConsumerBuilder::layer)),
//!    the first added outermost: they see every delivery, including
//!    invalid events and duplicates;
//! 5. **validation** ([`ValidateLayer`], optional): events that fail their
//!    schema fail as invalid; valid ones are upcast to a version the
//!    handler accepts;
//! 6. **inbox** ([`InboxLayer`], optional): events the group already
//!    handled are skipped; an event is recorded once its handler succeeded;
//! 7. **max events** ([`MaxEventsLayer`], optional): after N successes the
//!    consumer stops; events past the limit are left pending;
//! 8. the handler.
//!
//! Retries and dead letters are not layers: they stay in the runtime,
//! because they need the durable delivery count Redis keeps for each entry
//! (`failure`); whatever the layers return is classified there.
//!
//! Optional layers are [`OptionLayer`]s: `None` passes deliveries straight
//! through ([`Either`]). A layer of your own implements [`Layer`] for every
//! `H: Handler`, returning a [`Handler`](crate::Handler); see `examples/layer.rs`.

mod either;
mod limit;
mod metrics;
mod stack;
mod timeout;
mod trace;

pub use tower_layer::{layer_fn, Identity, Layer, LayerFn, Stack};

pub use self::either::{Either, OptionLayer};
pub use self::limit::{MaxEvents, MaxEventsLayer};
pub use self::metrics::{Measured, MetricsLayer};
pub use self::stack::{Outer, Policies, WithInbox, WithLimit};
pub use self::timeout::{Timeout, TimeoutLayer};
pub use self::trace::{TraceLayer, Traced};
pub use crate::catalog::{ValidateLayer, Validating};
pub use crate::pg::{Deduplicated, InboxLayer};
