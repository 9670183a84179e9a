//! Resumable streams (burrow to burrow): a forwarded TCP connection outlives the SSH transport
//! that carries it. When `burrow up` reconnects to a `burrow serve` relay, every stream of the
//! old session re-attaches to the new one and both ends replay exactly the bytes the other
//! missed; the applications see a pause, not a reset.
//!
//! Negotiation: the client asks for the session subsystem [`SUBSYSTEM`]; a standard sshd refuses
//! it and nothing else changes. On success it sends its instance id (random, one per tunnel), so
//! the relay can group the streams of that tunnel under its authenticated key. After that every
//! forwarded channel of the session starts with a [`frame::Hello`] from the side that opened it
//! and a [`frame::Reply`]; see [`frame`] for the format. The name lives under `burrow.invalid`:
//! the project owns no domain, and `.invalid` (RFC 2606) can never collide with anyone's
//! extension name.

pub mod control;
pub mod frame;
mod kept;
mod registry;
mod stream;

use std::io;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

pub use registry::{FirstBytes, Opened, Registry, ResumeStats};

/// The session subsystem that turns resumable streams on.
pub const SUBSYSTEM: &str = "resume-v1@burrow.invalid";
/// First bytes of the control channel's messages (instance id, and the relay's answer).
pub const CONTROL_MAGIC: [u8; 4] = *b"BRSI";
/// The relay's answer to the instance id: resumable streams are on.
pub const CONTROL_OK: [u8; 5] = [
    CONTROL_MAGIC[0],
    CONTROL_MAGIC[1],
    CONTROL_MAGIC[2],
    CONTROL_MAGIC[3],
    0,
];
/// The serve.toml setting behind a replay buffer budget that was full (for logs).
pub(crate) fn budget_setting(full: crate::budget::Exhausted) -> &'static str {
    match full {
        crate::budget::Exhausted::Key => "resume_budget_per_key_mib",
        crate::budget::Exhausted::Relay => "resume_budget_total_mib",
    }
}

/// How long a peer may take to send a hello or a reply before the channel is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the opener of a new stream waits for the peer's reply: longer than the peer's own
/// dial may take (`ForwardContext::connect_timeout`, 30 s), so a target that never answers is
/// reported as the peer's "Connection timed out", not as a reply that did not come.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(45);

/// Why opening a new stream failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The peer could not reach the target.
    #[error("connect failed: {0}")]
    ConnectFailed(String),
    /// The channel broke or the peer answered nonsense.
    #[error("resumable stream handshake: {0}")]
    Handshake(String),
}

/// What the peer's reply to a new stream's hello means for the opener, whenever it reads it.
fn answer_to_new_stream(reply: frame::Reply) -> Result<(), OpenError> {
    match reply {
        frame::Reply::Ok { received: 0 } => Ok(()),
        frame::Reply::ConnectFailed(reason) => Err(OpenError::ConnectFailed(reason)),
        other => Err(OpenError::Handshake(format!("unexpected reply {other:?}"))),
    }
}

/// The default [`ResumeConfig::buffer_max`]: twice the largest SSH receive window burrow
/// grants (the vendored russh's `RECEIVE_WINDOW_LIMIT`, 16 MiB; BURROW-PATCH.md, "Adaptive
/// receive window"). A byte stays in the replay buffer from its send until its acknowledgement
/// is back, a round trip plus the ack's delay, while the window is re-opened as soon as the
/// peer consumes it; with a buffer only as large as the window the buffer would limit first.
/// At 100 ms that is ~160 MiB/s per stream, as the window allows.
pub const BUFFER_MAX: usize = 32 << 20;

/// What a stream's replay buffer holds at most, and reserves on a relay, for a configured
/// `buffer` (never less than one frame).
pub fn buffer_capacity(buffer: usize) -> usize {
    stream::Engine::capacity_for(buffer)
}

/// Anything a stream can run over: an SSH channel, a TCP or unix connection.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An owned, type-erased [`Io`].
pub type BoxedIo = Box<dyn Io>;

/// Limits of the resumable streams of one tunnel (client) or one client instance (relay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeConfig {
    /// Unacknowledged bytes kept per stream and direction at first; a full buffer stops
    /// reading from the local connection (backpressure). What a relay reserves per stream.
    pub buffer: usize,
    /// What a stream's buffer may grow to when it is what limits the stream (a long fat pipe;
    /// see `stream::Growth`); each growth is reserved from the relay's budgets first. Never
    /// less than `buffer` (no growth then).
    pub buffer_max: usize,
    /// How long a stream whose channel is gone waits for a new one before its local connection is
    /// closed.
    pub grace: Duration,
}

impl Default for ResumeConfig {
    fn default() -> Self {
        Self {
            buffer: 4 << 20,
            buffer_max: BUFFER_MAX,
            grace: Duration::from_secs(60),
        }
    }
}

/// How to open a new channel for a stream on a new session: the same channel the stream was
/// first opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelSpec {
    /// `direct-tcpip` (client to relay: -L, -D).
    Direct {
        /// Target host.
        host: String,
        /// Target port.
        port: u32,
        /// Originator address.
        orig: String,
        /// Originator port.
        orig_port: u32,
    },
    /// `forwarded-tcpip` (relay to client: -R).
    Forwarded {
        /// The listener's address as the client requested it.
        addr: String,
        /// The listener's port.
        port: u32,
        /// Originator address.
        orig: String,
        /// Originator port.
        orig_port: u32,
    },
}

/// Opens channels on the current session; each side implements it for its SSH handle.
pub trait Opener: Send + Sync + 'static {
    /// Opens `spec` and returns the channel as a byte stream.
    fn open(&self, spec: ChannelSpec) -> BoxFuture<'static, io::Result<BoxedIo>>;
}

/// The control message a client sends after the subsystem was accepted.
pub fn instance_message(instance: &[u8; 16]) -> Vec<u8> {
    [&CONTROL_MAGIC[..], &instance[..]].concat()
}

/// Bytes of [`instance_message`].
pub const INSTANCE_MESSAGE_LEN: usize = 20;

/// Parses [`instance_message`] at the start of `buf` (what follows it is the control channel's
/// next messages, see [`control`]); `None` while incomplete, an error for anything else.
pub fn parse_instance_message(buf: &[u8]) -> Result<Option<[u8; 16]>, String> {
    if buf.len() < INSTANCE_MESSAGE_LEN {
        return if CONTROL_MAGIC.starts_with(&buf[..buf.len().min(4)]) {
            Ok(None)
        } else {
            Err("not a resume control message".into())
        };
    }
    if buf[..4] != CONTROL_MAGIC {
        return Err("not a resume control message".into());
    }
    let mut instance = [0u8; 16];
    instance.copy_from_slice(&buf[4..20]);
    Ok(Some(instance))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_message_round_trip_and_garbage() {
        let m = instance_message(&[9; 16]);
        assert_eq!(parse_instance_message(&m).unwrap(), Some([9; 16]));
        assert_eq!(parse_instance_message(&m[..7]).unwrap(), None);
        assert!(parse_instance_message(b"GET / HTTP/1.1\r\n\r\n").is_err());
        // What follows is the next message's, not part of this one.
        assert_eq!(
            parse_instance_message(&[m.clone(), vec![1]].concat()).unwrap(),
            Some([9; 16])
        );
        assert!(parse_instance_message(&[b"BRSX".to_vec(), m].concat()).is_err());
    }
}
