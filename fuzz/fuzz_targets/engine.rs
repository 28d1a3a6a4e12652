//! Fuzz target `engine`: see `atrion_fuzz::engine`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atrion_fuzz::engine(data));
