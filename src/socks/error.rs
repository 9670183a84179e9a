//! Handshake errors: each names the stage and the offending bytes.

use super::{Command, Failure};
use std::fmt;
use std::io;

/// Which message was being read, so errors say where the client went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The first byte, before the version is known.
    Start,
    /// A SOCKS4 or SOCKS4a request.
    Socks4,
    /// The SOCKS5 method selection.
    Socks5Greeting,
    /// The SOCKS5 request.
    Socks5Request,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Start => "SOCKS handshake",
            Stage::Socks4 => "SOCKS4 request",
            Stage::Socks5Greeting => "SOCKS5 greeting",
            Stage::Socks5Request => "SOCKS5 request",
        })
    }
}

/// A failed handshake; the message names the stage and the offending bytes.
#[derive(Debug, thiserror::Error)]
pub enum SocksError {
    /// Reading or writing the client failed (the cause is in the message, not `source()`,
    /// so one-line logs show it without a duplicated chain).
    #[error("{0}: I/O error: {1}")]
    Io(Stage, io::Error),
    /// The client closed the connection mid-message.
    #[error("{0}: client closed the connection before the message was complete")]
    Closed(Stage),
    /// The first byte is neither 4 nor 5 (e.g. an HTTP request sent to a SOCKS port).
    #[error("SOCKS handshake: unsupported version byte 0x{0:02x} (expected 0x04 or 0x05)")]
    UnsupportedVersion(u8),
    /// A later message carries the wrong version byte.
    #[error("{stage}: version byte is 0x{found:02x}, expected 0x{expected:02x}")]
    BadVersion {
        /// Where.
        stage: Stage,
        /// What arrived.
        found: u8,
        /// What the protocol requires.
        expected: u8,
    },
    /// SOCKS5 client did not offer "no authentication".
    #[error("SOCKS5 greeting: client offers methods {0:02x?} but only 0x00 (no authentication) is supported")]
    NoAcceptableMethod(Vec<u8>),
    /// BIND, UDP ASSOCIATE or an unknown command.
    #[error("{stage}: unsupported command {command}; only CONNECT is supported")]
    UnsupportedCommand {
        /// Where.
        stage: Stage,
        /// What was asked.
        command: Command,
    },
    /// SOCKS5 address type other than 1, 3, 4.
    #[error("SOCKS5 request: unsupported address type 0x{0:02x}")]
    UnsupportedAddressType(u8),
    /// SOCKS5 reserved byte not zero.
    #[error("SOCKS5 request: reserved byte is 0x{0:02x}, expected 0x00")]
    Reserved(u8),
    /// A NUL-terminated field ran past its cap.
    #[error("{stage}: {field} is longer than {max} bytes")]
    FieldTooLong {
        /// Where.
        stage: Stage,
        /// Which field.
        field: &'static str,
        /// The cap.
        max: usize,
    },
    /// A host name that is empty, not UTF-8, or contains control characters.
    #[error("{stage}: invalid host name {name:?} (empty, not UTF-8, or has control characters)")]
    BadHostName {
        /// Where.
        stage: Stage,
        /// The name, lossily decoded.
        name: String,
    },
}

impl SocksError {
    /// The failure reply owed to the client for this error, if the protocol has one.
    pub(super) fn courtesy_failure(&self) -> Option<Failure> {
        match self {
            // No reply exists for these: the peer is gone, speaks no SOCKS, or already got 0xFF.
            SocksError::Io(..)
            | SocksError::Closed(_)
            | SocksError::UnsupportedVersion(_)
            | SocksError::NoAcceptableMethod(_) => None,
            SocksError::UnsupportedCommand { .. } => Some(Failure::CommandNotSupported),
            SocksError::UnsupportedAddressType(_) => Some(Failure::AddressTypeNotSupported),
            _ => Some(Failure::General),
        }
    }
}
