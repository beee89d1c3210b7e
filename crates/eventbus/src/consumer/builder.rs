//! [`ConsumerBuilder`]: a consumer with its handler layers, composed in
//! the one order documented in [`crate::layer`].

use tower_layer::{Identity, Layer, Stack};

use super::Consumer;
use crate::catalog::ValidateLayer;
use crate::connection::RedisConnector;
use crate::handler::Handler;
use crate::layer::{
    MaxEventsLayer, MetricsLayer, OptionLayer, Outer, Policies, TimeoutLayer, TraceLayer,
};
use crate::pg::InboxLayer;
use crate::runtime::ConsumerConfig;
use crate::topology::Topology;
use crate::Result;

/// Builds a [`Consumer`]: optional built-in layers, layers of your own,
/// then [`ConsumerBuilder::handler`]. Whatever order the calls come in, the
/// layers are composed in the order of [`crate::layer`].
///
/// ```no_run
/// # use eventbus::{handler_fn, Consumer, ConsumerConfig, Delivery, RedisConnector, RedisOptions, Topology};
/// # use eventbus::layer::{layer_fn, ValidateLayer};
/// # async fn demo(catalog: std::sync::Arc<eventbus::Catalog>) -> eventbus::Result<()> {
/// let redis = RedisConnector::new("redis://127.0.0.1:6379", RedisOptions::default())?;
/// let consumer = Consumer::builder(redis, Topology::new("eventbus", 16)?, ConsumerConfig::new("billing", ["work_order"]))
///     .validate(ValidateLayer::new(catalog).upcast_to_latest())
///     .handler(handler_fn(|d: Delivery| async move {
///         println!("{}", d.envelope.id);
///         Ok(())
///     }))?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ConsumerBuilder<L> {
    connector: RedisConnector,
    topology: Topology,
    config: ConsumerConfig,
    layers: L,
    validate: Option<ValidateLayer>,
    inbox: Option<InboxLayer>,
    max_events: Option<MaxEventsLayer>,
    dead_letter_store: Option<(sqlx::PgPool, crate::pg::DbSchema)>,
}

impl ConsumerBuilder<Identity> {
    pub(super) fn new(
        connector: RedisConnector,
        topology: Topology,
        config: ConsumerConfig,
    ) -> Self {
        ConsumerBuilder {
            connector,
            topology,
            config,
            layers: Identity::new(),
            validate: None,
            inbox: None,
            max_events: None,
            dead_letter_store: None,
        }
    }
}

impl<L> ConsumerBuilder<L> {
    /// Adds a layer of your own. Yours sit between the attempt timeout and
    /// validation; the first added is the outermost.
    pub fn layer<T>(self, layer: T) -> ConsumerBuilder<Stack<T, L>> {
        ConsumerBuilder {
            connector: self.connector,
            topology: self.topology,
            config: self.config,
            layers: Stack::new(layer, self.layers),
            validate: self.validate,
            inbox: self.inbox,
            max_events: self.max_events,
            dead_letter_store: self.dead_letter_store,
        }
    }

    /// Adds a layer of your own when it is `Some` (tower's `option_layer`).
    pub fn option_layer<T>(self, layer: Option<T>) -> ConsumerBuilder<Stack<OptionLayer<T>, L>> {
        self.layer(OptionLayer(layer))
    }

    /// Validates every event against the catalogue (and upcasts it), or
    /// not with `None`.
    pub fn validate(mut self, layer: impl Into<Option<ValidateLayer>>) -> Self {
        self.validate = layer.into();
        self
    }

    /// Skips events the group already handled and records each handled
    /// one, or not with `None`.
    pub fn inbox(mut self, layer: impl Into<Option<InboxLayer>>) -> Self {
        self.inbox = layer.into();
        self
    }

    /// Stops after so many successes, or never with `None`.
    pub fn max_events(mut self, layer: impl Into<Option<MaxEventsLayer>>) -> Self {
        self.max_events = layer.into();
        self
    }

    /// Also records dead letters in PostgreSQL; see
    /// [`Consumer::with_dead_letter_store`].
    pub fn dead_letter_store(mut self, pool: sqlx::PgPool, schema: crate::pg::DbSchema) -> Self {
        self.dead_letter_store = Some((pool, schema));
        self
    }

    /// The consumer, its handler wrapped in every layer; checks the config.
    pub fn handler<H>(self, handler: H) -> Result<Consumer<Outer<L::Service>>>
    where
        H: Handler,
        L: Layer<Policies<H>>,
        L::Service: Handler,
    {
        let policies = OptionLayer(self.validate)
            .layer(OptionLayer(self.inbox).layer(OptionLayer(self.max_events).layer(handler)));
        let timeout = self.config.retry.attempt_timeout.map(TimeoutLayer::new);
        let stack = TraceLayer
            .layer(MetricsLayer.layer(OptionLayer(timeout).layer(self.layers.layer(policies))));
        let mut consumer =
            Consumer::with_handler(self.connector, self.topology, self.config, stack)?;
        if let Some((pool, schema)) = self.dead_letter_store {
            consumer = consumer.with_dead_letter_store(pool, schema);
        }
        Ok(consumer)
    }
}
