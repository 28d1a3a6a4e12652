//! Fuzz target `proxy_path`: see `atrion_fuzz::proxy_path`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atrion_fuzz::proxy_path(data));
