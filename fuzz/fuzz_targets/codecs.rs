//! Fuzz target `codecs`: see `atrion_fuzz::codecs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atrion_fuzz::codecs(data));
