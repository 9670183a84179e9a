//! Fuzz target `serve_config`: see `burrow_fuzz::serve_config` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| burrow_fuzz::serve_config(data));
