//! Fuzz target `config`: see `atrion_fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atrion_fuzz::config(data));
