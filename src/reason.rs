//! How failures read: the texts OpenSSH prints for them, so burrow's messages match ssh's
//! word for word. A leaf: forwards, the relay, mux, the client and resumable streams all print
//! these, and none of them should have to reach into another role's module for it.

use std::io;

use russh::ChannelOpenFailure;

/// The text OpenSSH prints for a channel open failure reason ("connect failed", ...).
pub fn open_failure_text(e: &russh::Error) -> String {
    match e {
        russh::Error::ChannelOpenFailure(reason) => match reason {
            ChannelOpenFailure::AdministrativelyProhibited => "administratively prohibited".into(),
            ChannelOpenFailure::ConnectFailed => "connect failed".into(),
            ChannelOpenFailure::UnknownChannelType => "unknown channel type".into(),
            ChannelOpenFailure::ResourceShortage => "resource shortage".into(),
            ChannelOpenFailure::Other { reason, .. } => reason.clone(),
        },
        other => other.to_string(),
    }
}

/// An io error's message without Rust's " (os error N)" suffix, as C tools print it.
pub fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s.get(..i).unwrap_or(&s).to_string(),
        None => s,
    }
}
