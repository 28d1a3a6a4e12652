//! Fuzz target `policies`: see `atrion_fuzz::policies`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atrion_fuzz::policies(data));
