//! Fuzz target `authorized_keys`: see `burrow_fuzz::authorized_keys` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| burrow_fuzz::authorized_keys(data));
