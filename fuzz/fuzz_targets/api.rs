//! Fuzz target `api`: see `atrion_fuzz::api`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atrion_fuzz::api(data));
