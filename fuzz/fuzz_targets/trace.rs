//! Fuzz target `trace`: see `atrion_fuzz::trace`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atrion_fuzz::trace(data));
