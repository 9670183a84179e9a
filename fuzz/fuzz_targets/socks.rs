//! Fuzz target `socks`: see `burrow_fuzz::socks` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| burrow_fuzz::socks(data));
