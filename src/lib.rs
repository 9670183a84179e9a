//! burrow: reach a service behind NAT or a firewall over SSH, and keep the connection up.
//!
//! The library holds everything; `main.rs` only parses arguments and dispatches.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

/// What `burrow --version` prints after the name: the version and the commit the binary was
/// built from (recorded by build.rs), so a bug report names the exact code. Generated man pages
/// show the version alone (see [`docs::command`]), or they would change with every commit.
pub const LONG_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BURROW_COMMIT"), ")");

pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod diagnostics;
pub mod docs;
pub mod forward;
pub mod logging;
pub mod mux;
pub mod netwatch;
pub mod observe;
pub mod pipe;
pub mod resume;
pub mod rlimit;
pub mod server;
pub mod socks;
pub mod spec;
pub mod supervisor;
pub mod transport;
