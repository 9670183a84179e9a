//! Fuzz target `spec`: see `burrow_fuzz::spec` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| burrow_fuzz::spec(data));
