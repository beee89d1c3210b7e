//! What a consumer calls for each event, and how a handler reports failure.

use std::future::Future;
use std::sync::Arc;

use crate::envelope::Envelope;

/// One delivery of an event to a handler.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The event.
    pub envelope: Envelope,
    /// The stream it was read from.
    pub stream: String,
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: u32,
    /// The stream entry id.
    pub entry_id: String,
    /// The consumer group.
    pub group: String,
    /// The consumer (process-unique name) handling it.
    pub consumer: String,
    /// True when the entry was claimed from another (or a stalled) consumer
    /// rather than read fresh, i.e. this is a redelivery.
    pub redelivered: bool,
}

/// How a failure should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Trying again later may succeed.
    Retryable,
    /// Trying again will not help: dead-lettered at once.
    Permanent,
    /// The event itself is malformed or fails its schema. Consumers count
    /// it (`ConsumerStats::rejected`), log it and dead-letter it at once:
    /// retrying cannot fix it.
    Invalid,
    /// Set by the runtime in park mode (see
    /// [`ConsumerConfig::park_keys`](crate::ConsumerConfig::park_keys)): the
    /// event was not handled because an earlier event of its key is in dead
    /// letters. Dead-lettered at once.
    Parked,
}

impl ErrorClass {
    /// A short stable name: `retryable`, `permanent`, `invalid` or `parked`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retryable => "retryable",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Invalid => "invalid",
            ErrorClass::Parked => "parked",
        }
    }
}

/// A handler's failure: its class and a message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{class:?} failure: {message}")]
pub struct HandlerError {
    /// How to treat it.
    pub class: ErrorClass,
    /// What went wrong, for logs and dead letters.
    pub message: String,
}

impl HandlerError {
    /// A failure that may succeed on retry.
    pub fn retryable(message: impl Into<String>) -> Self {
        HandlerError {
            class: ErrorClass::Retryable,
            message: message.into(),
        }
    }

    /// A failure that will not succeed on retry.
    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError {
            class: ErrorClass::Permanent,
            message: message.into(),
        }
    }

    /// The event is invalid (malformed, or fails its schema).
    pub fn invalid(message: impl Into<String>) -> Self {
        HandlerError {
            class: ErrorClass::Invalid,
            message: message.into(),
        }
    }
}

/// Handles deliveries. `Ok` acknowledges the entry; an error leaves it
/// pending so it is delivered again.
pub trait Handler: Send + Sync + 'static {
    /// Handles one delivery.
    fn handle(&self, delivery: Delivery) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

impl<H: Handler> Handler for Arc<H> {
    fn handle(&self, delivery: Delivery) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (**self).handle(delivery)
    }
}

/// A [`Handler`] made from an async closure; see [`handler_fn`].
#[derive(Debug, Clone)]
pub struct HandlerFn<F>(F);

/// Wraps `Fn(Delivery) -> impl Future<Output = Result<(), HandlerError>>` as a [`Handler`].
pub fn handler_fn<F, Fut>(f: F) -> HandlerFn<F>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    HandlerFn(f)
}

impl<F, Fut> Handler for HandlerFn<F>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    fn handle(&self, delivery: Delivery) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (self.0)(delivery)
    }
}
