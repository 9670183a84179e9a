//! Fuzz target `tunnels`: see `burrow_fuzz::tunnels` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| burrow_fuzz::tunnels(data));
