//! Configuration sources: OpenSSH's ssh_config for the client, and the resolution of command line
//! plus config into one typed [`options::ClientOptions`].

pub mod dump;
pub mod error;
pub mod forwarding;
pub mod options;
pub mod session;
pub mod sharing;
pub mod ssh_config;
pub mod tunnels;
