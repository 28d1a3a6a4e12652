//! Fuzz target `policy_api`: see `atrion_fuzz::policy_api`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atrion_fuzz::policy_api(data));
