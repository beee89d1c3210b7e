//! See docs/fuzzing.md and `eventbus_fuzz::checks::http_events_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eventbus_fuzz::checks::http_events_body(data));
