//! See docs/fuzzing.md and `eventbus_fuzz::checks::envelope_fields`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eventbus_fuzz::checks::envelope_fields(data));
