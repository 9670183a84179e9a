//! The error of building the client's effective options, in a leaf of its own: options.rs
//! resolves through forwarding, session and sharing, and each of those fails with this error,
//! so none of them has to import the module that imports it.

use crate::config::ssh_config;
use crate::spec;

/// Why the effective configuration could not be built. Each message names the option and value.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// A config file could not be read or parsed.
    #[error(transparent)]
    Config(#[from] ssh_config::ConfigError),
    /// A forward/jump/destination spec is malformed.
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    /// A value is not valid for its option.
    #[error("{option}: invalid value \"{value}\": {reason}")]
    Invalid {
        /// The option's name as in ssh_config(5).
        option: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}
