//! A typed router: one handler per event type, each given the decoded event.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::Event;
use crate::catalog::Catalog;
use crate::handler::{Delivery, Handler, HandlerError};

type BoxFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;
type Call = Arc<dyn Fn(Delivery) -> BoxFuture + Send + Sync>;

/// What a [`Router`] does with an event of a type no handler is registered for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnknownTypes {
    /// Acknowledge it, count it ([`Router::skipped`]) and log it at debug
    /// level. The default: a topic carries several types and a service
    /// usually handles only some of them.
    #[default]
    Skip,
    /// Fail it as permanent, so the runtime dead-letters it with the message
    /// `no handler for event type …`: for a service that must handle every
    /// type it subscribes to.
    DeadLetter,
}

/// An async function handling one typed event: `Fn(E, Delivery) -> impl
/// Future<Output = Result<(), HandlerError>>`. The [`Delivery`] carries the
/// envelope (id, metadata, upcast `data`) and where it was read from.
pub trait TypedHandler<E>: Send + Sync + 'static {
    /// The future it returns.
    type Future: Future<Output = Result<(), HandlerError>> + Send + 'static;
    /// Handles one event.
    fn call(&self, event: E, delivery: Delivery) -> Self::Future;
}

impl<E, F, Fut> TypedHandler<E> for F
where
    F: Fn(E, Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    type Future = Fut;
    fn call(&self, event: E, delivery: Delivery) -> Fut {
        self(event, delivery)
    }
}

/// Routes each delivery by its event type to the handler registered for it,
/// decoded into that handler's [`Event`] type. A [`Handler`], so it plugs
/// into [`Consumer::new`](crate::Consumer::new).
///
/// For each delivery:
/// 1. No handler for its type: [`UnknownTypes`] decides (skip by default).
/// 2. An older version than the handler's type: upcast through the
///    catalogue's upcasters ([`Router::with_catalog`]; the result is
///    validated against the newer version). Without a catalogue, or with no
///    way up (a newer version, a missing upcaster), the event is
///    [`HandlerError::invalid`].
/// 3. `data` that does not decode into the type: [`HandlerError::invalid`]
///    (dead-lettered by the runtime).
/// 4. The handler runs with the event and the delivery; its result is the
///    delivery's result.
///
/// ```
/// use eventbus::events::{Router, WorkOrderCreated};
/// use eventbus::{Delivery, HandlerError};
///
/// async fn created(order: WorkOrderCreated, _d: Delivery) -> Result<(), HandlerError> {
///     println!("new work order {}", order.title);
///     Ok(())
/// }
/// let router = Router::new().on::<WorkOrderCreated, _>(created);
/// # let _ = router;
/// ```
#[derive(Clone, Default)]
pub struct Router {
    routes: HashMap<&'static str, Route>,
    catalog: Option<Arc<Catalog>>,
    unknown: UnknownTypes,
    skipped: Arc<AtomicU64>,
}

#[derive(Clone)]
struct Route {
    version: u32,
    call: Call,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut types: Vec<_> = self
            .routes
            .iter()
            .map(|(t, r)| format!("{t} v{}", r.version))
            .collect();
        types.sort();
        f.debug_struct("Router")
            .field("types", &types)
            .field("upcasts", &self.catalog.is_some())
            .field("unknown", &self.unknown)
            .finish()
    }
}

impl Router {
    /// A router with no handlers, no catalogue (events must arrive at the
    /// version of their handler's type) and [`UnknownTypes::Skip`].
    pub fn new() -> Self {
        Router::default()
    }

    /// A router that upcasts older versions with `catalog`'s upcasters.
    pub fn with_catalog(catalog: Arc<Catalog>) -> Self {
        Router {
            catalog: Some(catalog),
            ..Router::default()
        }
    }

    /// Sets what happens to events of types with no handler.
    pub fn unknown_types(mut self, policy: UnknownTypes) -> Self {
        self.unknown = policy;
        self
    }

    /// Registers `handler` for events of `E::TYPE`, decoded as `E` (so at
    /// `E::VERSION`, older versions upcast).
    ///
    /// # Panics
    ///
    /// If a handler for `E::TYPE` is already registered (whatever its
    /// version): one type has one handler.
    pub fn on<E: Event, H: TypedHandler<E>>(mut self, handler: H) -> Self {
        let handler = Arc::new(handler);
        let call: Call = Arc::new(move |delivery: Delivery| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let event = decode::<E>(&delivery)?;
                handler.call(event, delivery).await
            })
        });
        let route = Route {
            version: E::VERSION,
            call,
        };
        if let Some(old) = self.routes.insert(E::TYPE, route) {
            panic!(
                "Router::on: a handler for {} (v{}) is already registered",
                E::TYPE,
                old.version
            );
        }
        self
    }

    /// Events acknowledged without a handler under [`UnknownTypes::Skip`]
    /// (shared by clones of this router).
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Brings `delivery` to `version`, upcasting when it is older.
    fn upcast(&self, mut delivery: Delivery, version: u32) -> Result<Delivery, HandlerError> {
        let from = delivery.envelope.version;
        if from == version {
            return Ok(delivery);
        }
        let ty = &delivery.envelope.event_type;
        let Some(catalog) = &self.catalog else {
            return Err(HandlerError::invalid(format!(
                "{ty} v{from} reached a handler for v{version} and the router has no catalogue \
                 to upcast with (Router::with_catalog)"
            )));
        };
        delivery.envelope = catalog
            .upcast(delivery.envelope, version)
            .map_err(|e| HandlerError::invalid(format!("for a handler of v{version}: {e}")))?;
        Ok(delivery)
    }
}

/// Decodes the (upcast) data of a delivery as `E`.
fn decode<E: Event>(delivery: &Delivery) -> Result<E, HandlerError> {
    // `E` reads its fields from `data`; serde_json needs an owned value.
    serde_json::from_value(delivery.envelope.data.clone()).map_err(|e| {
        HandlerError::invalid(format!(
            "{} v{} does not decode into {}: {e}",
            E::TYPE,
            E::VERSION,
            std::any::type_name::<E>()
        ))
    })
}

impl Handler for Router {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let Some(route) = self.routes.get(delivery.envelope.event_type.as_str()) else {
            return match self.unknown {
                UnknownTypes::Skip => {
                    self.skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        event_type = %delivery.envelope.event_type,
                        event_id = %delivery.envelope.id,
                        "no handler for this event type; skipped"
                    );
                    Ok(())
                }
                UnknownTypes::DeadLetter => Err(HandlerError::permanent(format!(
                    "no handler for event type {:?} (the router dead-letters unknown types)",
                    delivery.envelope.event_type
                ))),
            };
        };
        let delivery = self.upcast(delivery, route.version)?;
        (route.call)(delivery).await
    }
}
