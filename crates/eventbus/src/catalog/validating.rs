//! [`Validating`]: the consumer-side policy wrapper that validates each
//! event against the catalogue and brings it to a version the handler
//! accepts, before the handler runs.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::Catalog;
use crate::handler::{Delivery, Handler, HandlerError};

/// Which versions the wrapped handler is given.
#[derive(Debug, Clone, Default)]
enum Versions {
    /// Every event at its own version.
    #[default]
    AsPublished,
    /// Every event at its type's latest version.
    Latest,
}

/// A [`Handler`] wrapper: an event that fails its schema (unknown type or
/// version, invalid data, a key that is not its partition-key field) never
/// reaches the inner handler; it fails with [`ErrorClass::Invalid`], which
/// the consumer counts (`ConsumerStats::rejected`) and dead-letters at once
/// with the schema errors as the reason. A valid event is
/// upcast to a version the handler accepts:
///
/// - by default each event is delivered at the version it was published with;
/// - [`Validating::upcast_to_latest`]: every event at its type's latest version;
/// - [`Validating::accept`]: for one type, only the versions listed; an
///   older event goes up to the lowest accepted version above it.
///
/// An event newer than every version a handler accepts is a retryable
/// failure: it stays pending for a consumer that does accept it (during a
/// rolling upgrade, producers may be ahead of some consumers). An upcaster
/// that fails is a permanent failure (a bug to fix, then replay).
///
/// [`ErrorClass::Invalid`]: crate::ErrorClass::Invalid
#[derive(Debug, Clone)]
pub struct Validating<H> {
    catalog: Arc<Catalog>,
    inner: H,
    default: Versions,
    accepted: HashMap<String, BTreeSet<u32>>,
}

impl<H> Validating<H> {
    /// Wraps `inner`: validate every event, deliver it at its own version.
    pub fn new(catalog: Arc<Catalog>, inner: H) -> Self {
        Validating {
            catalog,
            inner,
            default: Versions::AsPublished,
            accepted: HashMap::new(),
        }
    }

    /// Delivers every event upcast to its type's latest version (types
    /// named in [`Validating::accept`] follow their own list).
    pub fn upcast_to_latest(mut self) -> Self {
        self.default = Versions::Latest;
        self
    }

    /// Declares the versions of `event_type` the handler accepts.
    pub fn accept(
        mut self,
        event_type: impl Into<String>,
        versions: impl IntoIterator<Item = u32>,
    ) -> Self {
        self.accepted
            .insert(event_type.into(), versions.into_iter().collect());
        self
    }

    /// The wrapped handler.
    pub fn inner(&self) -> &H {
        &self.inner
    }

    /// The version to hand over an event of `event_type` published at
    /// `version`, or `None` when the handler accepts no version it can reach.
    fn target(&self, event_type: &str, version: u32) -> Option<u32> {
        match self.accepted.get(event_type) {
            Some(accepted) => accepted.range(version..).next().copied(),
            None => match self.default {
                Versions::AsPublished => Some(version),
                Versions::Latest => self
                    .catalog
                    .get(event_type)
                    .map(|t| t.latest().version().max(version)),
            },
        }
    }
}

/// The layer that builds [`Validating`] handlers (see
/// [`crate::layer`] for where it sits): every event is validated against
/// `catalog`; [`ValidateLayer::upcast_to_latest`] and
/// [`ValidateLayer::accept`] choose the versions handed over, as on
/// [`Validating`].
#[derive(Debug, Clone)]
pub struct ValidateLayer {
    template: Validating<()>,
}

impl ValidateLayer {
    /// Validate every event, deliver it at its own version.
    pub fn new(catalog: Arc<Catalog>) -> Self {
        ValidateLayer {
            template: Validating::new(catalog, ()),
        }
    }

    /// Deliver every event upcast to its type's latest version.
    pub fn upcast_to_latest(mut self) -> Self {
        self.template = self.template.upcast_to_latest();
        self
    }

    /// Declares the versions of `event_type` the handler accepts.
    pub fn accept(
        mut self,
        event_type: impl Into<String>,
        versions: impl IntoIterator<Item = u32>,
    ) -> Self {
        self.template = self.template.accept(event_type, versions);
        self
    }
}

impl<H> tower_layer::Layer<H> for ValidateLayer {
    type Service = Validating<H>;

    fn layer(&self, inner: H) -> Validating<H> {
        let t = &self.template;
        Validating {
            catalog: t.catalog.clone(),
            inner,
            default: t.default.clone(),
            accepted: t.accepted.clone(),
        }
    }
}

impl<H: Handler> Handler for Validating<H> {
    async fn handle(&self, mut delivery: Delivery) -> Result<(), HandlerError> {
        let event = &delivery.envelope;
        if let Err(errors) = self.catalog.validate(event) {
            return Err(HandlerError::invalid(format!("schema: {errors}")));
        }
        let Some(target) = self.target(&event.event_type, event.version) else {
            let accepted = self.accepted.get(&event.event_type).map(|a| {
                a.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            return Err(HandlerError::retryable(format!(
                "this consumer accepts {} versions {}, not {}: left for a consumer that does",
                event.event_type,
                accepted.unwrap_or_default(),
                event.version
            )));
        };
        if target != event.version {
            delivery.envelope = self
                .catalog
                .upcast(delivery.envelope, target)
                .map_err(|e| HandlerError::permanent(e.to_string()))?;
        }
        self.inner.handle(delivery).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::handler_fn;

    fn wrapper() -> Validating<()> {
        Validating::new(Arc::new(Catalog::embedded().unwrap()), ())
    }

    #[test]
    fn targets() {
        let failed = "work_item.processing_failed";
        let w = wrapper();
        assert_eq!(w.target(failed, 1), Some(1));
        let w = wrapper().upcast_to_latest();
        assert_eq!(w.target(failed, 1), Some(2));
        assert_eq!(w.target("work_order.created", 1), Some(1));
        let w = wrapper().accept(failed, [2]);
        assert_eq!(w.target(failed, 1), Some(2));
        let w = wrapper().accept(failed, [1]);
        assert_eq!(w.target(failed, 2), None);
        assert_eq!(w.target(failed, 1), Some(1));
    }

    #[tokio::test]
    async fn invalid_events_never_reach_the_handler() {
        let reached = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = reached.clone();
        let handler = handler_fn(move |_d: Delivery| {
            r.store(true, std::sync::atomic::Ordering::SeqCst);
            async { Ok(()) }
        });
        let v = Validating::new(Arc::new(Catalog::embedded().unwrap()), handler);
        let delivery = Delivery {
            envelope: crate::Envelope::new(
                "work_order.created",
                "wo-1",
                serde_json::json!({"id": "wo-1"}),
            ),
            stream: "s".into(),
            topic: "work_order".into(),
            partition: 0,
            entry_id: "1-0".into(),
            group: "g".into(),
            consumer: "c".into(),
            redelivered: false,
        };
        let err = v.handle(delivery).await.unwrap_err();
        assert_eq!(err.class, crate::ErrorClass::Invalid);
        assert!(
            err.message.contains("\"title\" is a required property"),
            "{}",
            err.message
        );
        assert!(!reached.load(std::sync::atomic::Ordering::SeqCst));
    }
}
