//! The property checks of the fuzz targets, shared with the corpus replay
//! test (`crates/eventbus-server/tests/fuzz_corpus.rs`, which includes
//! `checks.rs` by path), so the fuzzers and `cargo test` check the same
//! things. See docs/fuzzing.md.

pub mod checks;
