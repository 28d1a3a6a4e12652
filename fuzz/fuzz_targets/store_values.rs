//! Fuzz target `store_values`: see `atrion_fuzz::store_values`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atrion_fuzz::store_values(data));
