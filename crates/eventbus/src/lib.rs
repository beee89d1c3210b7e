//! # eventbus
//!
//! An event bus on Redis Streams. Services publish [`Envelope`]s; each event
//! goes to the partition stream of its topic chosen by a stable hash of its
//! key; consumer groups read the streams with at-least-once delivery.
//!
//! ## Layout
//!
//! - [`envelope`](Envelope): the event and its stream-entry encoding
//!   (`docs/wire-format.md`), with typed [`DecodeError`]s.
//! - [`topology`]: namespace, topics, partitions, stream keys and the
//!   partitioner ([`partition_for`]).
//! - connections ([`RedisConnector`]): a shared auto-reconnecting connection
//!   for commands, dedicated ones for blocking reads.
//! - [`Publisher`]: single and batched (pipelined) publish with retry of
//!   unknown outcomes.
//! - [`Consumer`]: the consumer-group front calling a [`Handler`], in one
//!   of two [`ConsumerMode`]s: ordered (partitions leased to the live members
//!   of the group, each handled one entry at a time: membership, sticky
//!   assignment, leases with fencing tokens, failover) or unordered
//!   (competing consumers: reader, claimer, acker). Both modes run one
//!   per-entry sequence (decode, deliver, then ack, retry or dead-letter);
//!   retries and dead letters use the durable delivery count Redis keeps.
//! - [`layer`]: the policies around a handler as tower [`layer::Layer`]s
//!   (trace span, metrics, attempt timeout, your own, validation, inbox,
//!   max events), composed by [`Consumer::builder`] in one documented order.
//! - [`deadletter`]: what no retry could handle, kept for operators
//!   (list, show, replay, discard; PostgreSQL or Redis records).
//! - [`pg`]: the transactional outbox, its relay, and the inbox.
//! - [`schedule`]: delayed and scheduled delivery ([`Publisher::publish_at`],
//!   per-partition sorted sets, the [`Scheduler`] that moves due events).
//! - [`telemetry`]: OpenTelemetry traces: producer, relay and consumer
//!   spans, their context carried in the envelope, the OTLP exporter.
//! - [`catalog`]: the event catalogue: JSON Schemas per type and version
//!   ([`Catalog`]), validation at publish ([`Publisher::with_catalog`]) and
//!   at consume ([`Validating`]), upcasters, compatibility checks and
//!   generated docs.
//! - [`events`]: typed events: a Rust type per catalogue type and version
//!   implementing [`Event`] (type, version, partition key), published with
//!   [`Publisher::send`] or [`pg::Outbox::enqueue_event`] and handled
//!   through a typed [`Router`] that upcasts older versions
//!   (`docs/typed-events.md`):
//!
//!   ```no_run
//!   # async fn demo(publisher: eventbus::Publisher) -> eventbus::Result<()> {
//!   use eventbus::events::{WorkOrderCreated, WorkOrderStatus};
//!   use eventbus::{Catalog, Delivery, HandlerError, Router, UnknownTypes};
//!
//!   let order = WorkOrderCreated {
//!       id: "wo-1".into(),
//!       kind: "invoice_reconciliation".into(),
//!       title: "Reconcile Q1 invoices".into(),
//!       status: WorkOrderStatus::Pending,
//!       priority: None,
//!       requested_by: "alice@example.com".into(),
//!       created_at: chrono::Utc::now(),
//!       due_at: None,
//!   };
//!   publisher.send(&order).await?; // type, version and key come from the type
//!
//!   let router = Router::with_catalog(std::sync::Arc::new(Catalog::embedded()?))
//!       .unknown_types(UnknownTypes::Skip)
//!       .on::<WorkOrderCreated, _>(|order: WorkOrderCreated, _d: Delivery| async move {
//!           println!("{}", order.title);
//!           Ok::<_, HandlerError>(())
//!       });
//!   // Consumer::new(redis, topology, config, router)
//!   # let _ = router;
//!   # Ok(())
//!   # }
//!   ```
//! - [`admin`]: read models (partition lengths, groups, pending, lag) and a
//!   group-less [`admin::Tail`].
//!
//! The library never reads the environment: the `eventbus` binary does.
//!
//! ## Example
//!
//! ```no_run
//! use eventbus::{handler_fn, Consumer, ConsumerConfig, Envelope, Publisher, PublisherConfig,
//!                RedisConnector, RedisOptions, Topology};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> eventbus::Result<()> {
//! let redis = RedisConnector::new("redis://127.0.0.1:6379", RedisOptions::default())?;
//! let topology = Topology::new("eventbus", 16)?;
//! let publisher = Publisher::connect(&redis, topology.clone(), PublisherConfig::default()).await?;
//! publisher
//!     .publish(&Envelope::new("work_order.created", "wo-1", serde_json::json!({"id": "wo-1"})))
//!     .await?;
//!
//! let handler = handler_fn(|d: eventbus::Delivery| async move {
//!     println!("{} {}", d.envelope.event_type, d.envelope.id);
//!     Ok(())
//! });
//! let consumer = Consumer::new(redis, topology, ConsumerConfig::new("billing", ["work_order"]), handler)?;
//! let shutdown = CancellationToken::new();
//! consumer.run(shutdown).await
//! # }
//! ```

mod connection;
mod consumer;
mod db;
mod envelope;
mod error;
mod handler;
mod lossless;
mod publisher;
mod redact;
mod reply;
mod retry;
mod runtime;

pub mod admin;
pub mod alert;
pub mod catalog;
pub mod deadletter;
pub mod events;
pub mod layer;
pub mod pg;
pub mod retention;
pub mod schedule;
pub mod telemetry;
pub mod topology;

pub use catalog::{Catalog, SchemaError, SchemaErrors, Validating};
pub use connection::{RedisConn, RedisConnector, RedisOptions};
pub use consumer::{unique_consumer_name, Consumer, ConsumerBuilder};
pub use envelope::{fields, DecodeError, Envelope, WIRE_VERSION};
pub use error::{Error, Result};
pub use events::{Event, Router, UnknownTypes};
pub use handler::{handler_fn, Delivery, ErrorClass, Handler, HandlerError, HandlerFn};
pub use publisher::{Published, Publisher, PublisherConfig};
pub use redact::{is_secret_name, redact, redact_url};
pub use retry::{Backoff, RetryPolicy, DEFAULT_MAX_ATTEMPTS};
pub use runtime::{ConsumerConfig, ConsumerMode, ConsumerStats, DEFAULT_SCHEDULED_RETRY_AFTER};
pub use schedule::{Scheduler, SchedulerConfig};
pub use topology::{partition_for, topic_of, Topology};
