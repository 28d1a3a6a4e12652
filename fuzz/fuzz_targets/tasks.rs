//! Fuzz target `tasks`: see `atrion_fuzz::tasks`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atrion_fuzz::tasks(data));
