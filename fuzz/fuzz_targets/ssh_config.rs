//! Fuzz target `ssh_config`: see `burrow_fuzz::ssh_config` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| burrow_fuzz::ssh_config(data));
