//! burrow: reach a service behind NAT or a firewall over SSH, and keep the connection up.
//!
//! The library holds everything; `main.rs` only parses arguments and dispatches.
//!
//! # Layout
//!
//! From the programs down to the leaves (a module uses only those below it):
//!
//! - [`docs`]: man pages and completions, generated from [`cli`] and the config parsers.
//! - [`supervisor`]: `burrow up`, one task per tunnel of a tunnels file, kept up.
//! - [`demo`]: `burrow demo`, the A/B/C scenario in one process on loopback.
//! - [`mux`]: connection sharing (ControlMaster, `-O`), OpenSSH's mux protocol.
//! - [`server`]: `burrow serve`, the forwarding-only relay: auth, policy, listeners, aliases,
//!   dialling, the access log.
//! - [`client`]: `burrow ssh`, the OpenSSH-compatible client: connect, authenticate, forwards;
//!   roaming through a burrow relay (`client::roam`).
//! - [`config`]: ssh_config, `-o` and the command line resolved into one set of options;
//!   the tunnels file of `burrow up`.
//! - [`forward`]: the forwards (-L, -R, -D, -W) and what every forwarded connection shares
//!   (listeners, dialling, the choice of carrier); used by the client, the relay and mux.
//! - [`resume`]: resumable streams, whose connections outlive the SSH session carrying them.
//! - [`cli`]: the command-line definitions. [`diagnostics`]: resource counts on SIGUSR1.
//! - Leaves: [`pipe`] (the pump contract both carriers keep, the byte pump, counters), [`spec`]
//!   (forward, destination and permit specs), [`socks`] (the SOCKS handshake), [`pattern`]
//!   (OpenSSH's match.c), [`reason`] (OpenSSH's error texts), [`observe`] (metrics and the
//!   status page), [`logging`], [`transport`] (SSH algorithm preferences), [`rlimit`] (the
//!   open-file limit), [`netwatch`] (netlink address and route changes, which `up` and a
//!   roaming `ssh` react to).
//!
//! The path of a byte:
//!
//! - `-L`: a local connection accepted by [`forward::listen`] → [`forward::local`] opens a
//!   `direct-tcpip` channel → [`pipe::pipe`] between the socket and the channel → on the relay,
//!   `server::handler` → `server::direct` checks the name against `server::policy`, resolves,
//!   checks every address, dials → [`pipe::pipe`] between the channel and the target.
//! - `-R`: [`forward::remote`] asks for a listener → the relay's `server::listeners` binds it
//!   (GatewayPorts, PermitListen) and opens a `forwarded-tcpip` channel per accepted connection
//!   → the client's `client::handler` hands it to [`forward::remote`], which dials the target
//!   → [`pipe::pipe`] on both ends.
//! - The relay alone: the same two paths with any standard ssh client at the other end; the
//!   relay runs no shell, and each channel's bytes cross one [`pipe::pipe`].
//! - A resumable stream (burrow to burrow): instead of the bare channel,
//!   [`forward::ForwardContext::carrier`] hands the connection to a [`resume`] registry; its
//!   stream engine (`resume::stream`) frames the bytes over the channel and keeps what the
//!   peer has not acknowledged, and after a reconnect (`client::resume`, `server::resume`) a
//!   new channel re-attaches and both sides replay exactly what the other missed.
// No unsafe code, except two socket-option calls that no wrapper crate offers (`batched_reads`,
// which allows it for itself alone).
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

/// What `burrow --version` prints after the name: the version and the commit the binary was
/// built from (recorded by build.rs), so a bug report names the exact code. Generated man pages
/// show the version alone (see [`docs::command`]), or they would change with every commit.
pub const LONG_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BURROW_COMMIT"), ")");

pub mod batched_reads;
pub mod budget;
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
pub mod pattern;
pub mod pipe;
pub mod reason;
pub mod resume;
pub mod rlimit;
pub mod server;
pub mod socks;
pub mod spec;
pub mod supervisor;
pub mod transport;
