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
//! - [`Consumer`]: the consumer-group runtime calling a [`Handler`], in one
//!   of two [`ConsumerMode`]s: ordered (partitions leased to the live members
//!   of the group, each handled one entry at a time: membership, sticky
//!   assignment, leases with fencing tokens, failover) or unordered
//!   (competing consumers: reader, claimer, acker).
//! - [`catalog`]: the event catalogue: JSON Schemas per type and version
//!   ([`Catalog`]), validation at publish ([`Publisher::with_catalog`]) and
//!   at consume ([`Validating`]), upcasters, compatibility checks and
//!   generated docs.
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
pub mod pg;
pub mod retention;
pub mod topology;

pub use catalog::{Catalog, SchemaError, SchemaErrors, Validating};
pub use connection::{RedisConn, RedisConnector, RedisOptions};
pub use consumer::{unique_consumer_name, Consumer};
pub use envelope::{fields, DecodeError, Envelope, WIRE_VERSION};
pub use error::{Error, Result};
pub use handler::{handler_fn, Delivery, ErrorClass, Handler, HandlerError, HandlerFn};
pub use publisher::{Published, Publisher, PublisherConfig};
pub use redact::{is_secret_name, redact, redact_url};
pub use retry::{Backoff, RetryPolicy, DEFAULT_MAX_ATTEMPTS};
pub use runtime::{ConsumerConfig, ConsumerMode, ConsumerStats};
pub use topology::{partition_for, topic_of, Topology};
