//! Fuzz target `notices`: see `atrion_fuzz::notices`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atrion_fuzz::notices(data));
