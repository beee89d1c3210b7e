//! # `eventbus-server`, the library half
//!
//! The `eventbus` binary (`src/main.rs`) holds the command line, the
//! commands and the HTTP API. This library exposes only the pure parts that
//! are tested from outside the binary, today one:
//!
//! - [`events_body`]: the body of `POST /v1/events` → envelopes, fuzzed by
//!   `fuzz/` (docs/fuzzing.md) and replayed from its corpus by
//!   `tests/fuzz_corpus.rs`.
//!
//! ```
//! let events = eventbus_server::events_body::parse_events(
//!     br#"{"type": "work_order.created", "key": "wo-1", "data": {}}"#,
//! )
//! .unwrap();
//! assert_eq!(events[0].source, "eventbus-api");
//! ```

#[path = "http/events_body.rs"]
pub mod events_body;
