//! See docs/fuzzing.md and `eventbus_fuzz::checks::outbox_row_to_envelope`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eventbus_fuzz::checks::outbox_row_to_envelope(data));
