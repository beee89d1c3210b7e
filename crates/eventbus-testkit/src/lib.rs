//! # eventbus-testkit
//!
//! Throw-away infrastructure for eventbus tests, and the conformance suite
//! every transport and consumer mode must pass.
//!
//! - [`RedisServer`]: a private `redis-server` on a free port in a temp dir
//!   (AOF with `appendfsync always`), which a test may kill and restart on
//!   the same data. Tests that kill or restart Redis use one of these, never
//!   the shared server.
//! - [`TestNamespace`]: a unique key namespace on a (shared) Redis, whose keys
//!   are deleted when it is dropped, so tests run in parallel.
//! - [`conformance`]: the scenarios (round trip, competing consumers, groups,
//!   failing handlers, close and reopen, claiming, server restart).
//! - [`TestSchema`]: a unique, migrated PostgreSQL schema on the shared
//!   server, dropped when it is dropped.
//! - [`PgServer`]: a private PostgreSQL (`initdb` in a temp dir), which a
//!   test may kill and restart.
//! - [`Collector`]: a handler that records what it was given, and lets a
//!   test wait for a condition on it.
//! - [`HttpTestServer`]: a tiny local HTTP server answering as a test
//!   scripts it, for webhook (HTTP push sink) tests.

mod collector;
pub mod conformance;
mod http_server;
mod namespace;
mod pg;
mod pg_server;
mod redis_server;

pub use collector::Collector;
pub use http_server::{HttpTestServer, ReceivedRequest, Reply};
pub use namespace::{shared_redis_url, TestNamespace};
pub use pg::{shared_database_url, TestSchema};
pub use pg_server::PgServer;
pub use redis_server::RedisServer;
