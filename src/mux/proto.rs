//! OpenSSH's connection-sharing protocol (PROTOCOL.mux, version 4) on the wire: each message is
//! a `uint32` length and a body that starts with a `uint32` type. Pure encoding and decoding,
//! for both ends: burrow's master answers `ssh -O`/`ssh -S` clients, and burrow's mux client
//! talks to OpenSSH masters.

mod forward;
#[cfg(test)]
mod tests;

use crate::spec::{DynamicForward, LocalForward, RemoteForward};
use forward::{decode_fwd, encode_fwd};

/// The protocol version both ends must speak.
pub const VERSION: u32 = 4;
/// A port value meaning "the host field is a unix socket path" (`(unsigned int)-2`).
pub const PORT_STREAMLOCAL: u32 = 0xFFFF_FFFE;
/// An escape character value meaning "none".
pub const NO_ESCAPE: u32 = 0xFFFF_FFFF;
/// Longest message accepted (OpenSSH caps mux packets at 256 KiB as well).
pub const MAX_MESSAGE: usize = 256 * 1024;

const HELLO: u32 = 0x0000_0001;
const C_NEW_SESSION: u32 = 0x1000_0002;
const C_ALIVE_CHECK: u32 = 0x1000_0004;
const C_TERMINATE: u32 = 0x1000_0005;
const C_OPEN_FWD: u32 = 0x1000_0006;
const C_CLOSE_FWD: u32 = 0x1000_0007;
const C_NEW_STDIO_FWD: u32 = 0x1000_0008;
const C_STOP_LISTENING: u32 = 0x1000_0009;
const S_OK: u32 = 0x8000_0001;
const S_PERMISSION_DENIED: u32 = 0x8000_0002;
const S_FAILURE: u32 = 0x8000_0003;
const S_EXIT_MESSAGE: u32 = 0x8000_0004;
const S_ALIVE: u32 = 0x8000_0005;
const S_SESSION_OPENED: u32 = 0x8000_0006;
const S_REMOTE_PORT: u32 = 0x8000_0007;
const S_TTY_ALLOC_FAIL: u32 = 0x8000_0008;

/// A malformed message (the peer is then disconnected, as OpenSSH does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed mux message: {0}")]
pub struct Malformed(pub &'static str);

/// A forward as it travels in OPEN_FWD/CLOSE_FWD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireForward {
    /// -L.
    Local(LocalForward),
    /// -R (target None: reverse dynamic, sent as `socks`:0 like OpenSSH).
    Remote(RemoteForward),
    /// -D.
    Dynamic(DynamicForward),
}

/// Messages from a mux client to the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// MUX_MSG_HELLO.
    Hello {
        /// Protocol version.
        version: u32,
    },
    /// MUX_C_NEW_SESSION (the three stdio fds follow out of band).
    NewSession {
        /// Request id.
        rid: u32,
        /// Wants a pseudo-terminal.
        want_tty: bool,
        /// `command` is a subsystem name.
        subsystem: bool,
        /// $TERM of the client.
        term: String,
        /// The command (empty: a shell).
        command: String,
        /// `NAME=value` strings to pass.
        env: Vec<String>,
    },
    /// MUX_C_ALIVE_CHECK.
    AliveCheck {
        /// Request id.
        rid: u32,
    },
    /// MUX_C_TERMINATE.
    Terminate {
        /// Request id.
        rid: u32,
    },
    /// MUX_C_OPEN_FWD (`Err` holds why the forward itself is invalid).
    OpenForward {
        /// Request id.
        rid: u32,
        /// The forward.
        fwd: Result<WireForward, &'static str>,
    },
    /// MUX_C_CLOSE_FWD.
    CloseForward {
        /// Request id.
        rid: u32,
        /// The forward.
        fwd: Result<WireForward, &'static str>,
    },
    /// MUX_C_NEW_STDIO_FWD (stdin and stdout fds follow out of band).
    StdioForward {
        /// Request id.
        rid: u32,
        /// Target host.
        host: String,
        /// Target port.
        port: u32,
    },
    /// MUX_C_STOP_LISTENING.
    StopListening {
        /// Request id.
        rid: u32,
    },
    /// Anything else (MUX_C_PROXY included): answered with "unsupported request".
    Unsupported {
        /// The message type.
        kind: u32,
        /// Request id.
        rid: u32,
    },
}

/// Messages from the master to a mux client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// MUX_MSG_HELLO.
    Hello {
        /// Protocol version.
        version: u32,
    },
    /// MUX_S_OK.
    Ok {
        /// Request id answered.
        rid: u32,
    },
    /// MUX_S_PERMISSION_DENIED.
    PermissionDenied {
        /// Request id answered.
        rid: u32,
        /// Why.
        reason: String,
    },
    /// MUX_S_FAILURE.
    Failure {
        /// Request id answered.
        rid: u32,
        /// Why.
        reason: String,
    },
    /// MUX_S_EXIT_MESSAGE.
    Exit {
        /// Session id.
        sid: u32,
        /// Exit status.
        status: u32,
    },
    /// MUX_S_ALIVE.
    Alive {
        /// Request id answered.
        rid: u32,
        /// The master's process id.
        pid: u32,
    },
    /// MUX_S_SESSION_OPENED.
    SessionOpened {
        /// Request id answered.
        rid: u32,
        /// Session id.
        sid: u32,
    },
    /// MUX_S_REMOTE_PORT.
    RemotePort {
        /// Request id answered.
        rid: u32,
        /// The port the server allocated.
        port: u32,
    },
    /// MUX_S_TTY_ALLOC_FAIL.
    TtyAllocFail {
        /// Session id.
        sid: u32,
    },
}

/// Appends SSH wire values to a message body.
#[derive(Default)]
pub(super) struct Writer(pub(super) Vec<u8>);

impl Writer {
    pub(super) fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(super) fn string(mut self, s: &str) -> Self {
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    /// The body framed with its length.
    pub(super) fn framed(self) -> Vec<u8> {
        Writer::default()
            .u32(len32(&self.0))
            .0
            .into_iter()
            .chain(self.0)
            .collect()
    }
}

fn len32(b: &[u8]) -> u32 {
    u32::try_from(b.len()).unwrap_or(u32::MAX)
}

/// Reads SSH wire values from a message body.
pub(super) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn u32(&mut self) -> Result<u32, Malformed> {
        let (head, rest) = self.0.split_first_chunk::<4>().ok_or(Malformed("short"))?;
        self.0 = rest;
        Ok(u32::from_be_bytes(*head))
    }

    pub(super) fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.u32()? as usize;
        if len > self.0.len() {
            return Err(Malformed("string longer than the message"));
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(s)
    }

    pub(super) fn string(&mut self) -> Result<String, Malformed> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| Malformed("string not UTF-8"))
    }

    pub(super) fn flag(&mut self) -> Result<bool, Malformed> {
        Ok(self.u32()? != 0)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// The encoders and decoders below are parallel on purpose: one arm a message type in each
// direction, mirroring OpenSSH's mux protocol table; the arms look alike because the messages do.
impl Request {
    /// The framed message.
    pub fn encode(&self) -> Vec<u8> {
        let w = Writer::default();
        let w = match self {
            Request::Hello { version } => w.u32(HELLO).u32(*version),
            Request::NewSession {
                rid,
                want_tty,
                subsystem,
                term,
                command,
                env,
            } => {
                let mut w = w
                    .u32(C_NEW_SESSION)
                    .u32(*rid)
                    .string("")
                    .u32(u32::from(*want_tty))
                    .u32(0)
                    .u32(0)
                    .u32(u32::from(*subsystem))
                    .u32(NO_ESCAPE)
                    .string(term)
                    .string(command);
                for e in env {
                    w = w.string(e);
                }
                w
            }
            Request::AliveCheck { rid } => w.u32(C_ALIVE_CHECK).u32(*rid),
            Request::Terminate { rid } => w.u32(C_TERMINATE).u32(*rid),
            Request::OpenForward { rid, fwd } => encode_fwd(w.u32(C_OPEN_FWD).u32(*rid), fwd),
            Request::CloseForward { rid, fwd } => encode_fwd(w.u32(C_CLOSE_FWD).u32(*rid), fwd),
            Request::StdioForward { rid, host, port } => w
                .u32(C_NEW_STDIO_FWD)
                .u32(*rid)
                .string("")
                .string(host)
                .u32(*port),
            Request::StopListening { rid } => w.u32(C_STOP_LISTENING).u32(*rid),
            Request::Unsupported { kind, rid } => w.u32(*kind).u32(*rid),
        };
        w.framed()
    }

    /// Parses a message body (without its length).
    pub fn decode(body: &[u8]) -> Result<Request, Malformed> {
        let mut r = Reader(body);
        let kind = r.u32()?;
        if kind == HELLO {
            return Ok(Request::Hello { version: r.u32()? });
        }
        let rid = r.u32()?;
        Ok(match kind {
            C_NEW_SESSION => {
                r.bytes()?; // reserved
                let want_tty = r.flag()?;
                let _x11 = r.flag()?;
                let _agent = r.flag()?;
                let subsystem = r.flag()?;
                let _escape = r.u32()?;
                let term = r.string()?;
                let command = r.string()?;
                let mut env = Vec::new();
                while !r.is_empty() {
                    env.push(r.string()?);
                }
                Request::NewSession {
                    rid,
                    want_tty,
                    subsystem,
                    term,
                    command,
                    env,
                }
            }
            C_ALIVE_CHECK => Request::AliveCheck { rid },
            C_TERMINATE => Request::Terminate { rid },
            C_OPEN_FWD => Request::OpenForward {
                rid,
                fwd: decode_fwd(&mut r)?,
            },
            C_CLOSE_FWD => Request::CloseForward {
                rid,
                fwd: decode_fwd(&mut r)?,
            },
            C_NEW_STDIO_FWD => {
                r.bytes()?; // reserved
                let host = r.string()?;
                Request::StdioForward {
                    rid,
                    host,
                    port: r.u32()?,
                }
            }
            C_STOP_LISTENING => Request::StopListening { rid },
            kind => Request::Unsupported { kind, rid },
        })
    }
}

impl Reply {
    /// The framed message.
    pub fn encode(&self) -> Vec<u8> {
        let w = Writer::default();
        let w = match self {
            Reply::Hello { version } => w.u32(HELLO).u32(*version),
            Reply::Ok { rid } => w.u32(S_OK).u32(*rid),
            Reply::PermissionDenied { rid, reason } => {
                w.u32(S_PERMISSION_DENIED).u32(*rid).string(reason)
            }
            Reply::Failure { rid, reason } => w.u32(S_FAILURE).u32(*rid).string(reason),
            Reply::Exit { sid, status } => w.u32(S_EXIT_MESSAGE).u32(*sid).u32(*status),
            Reply::Alive { rid, pid } => w.u32(S_ALIVE).u32(*rid).u32(*pid),
            Reply::SessionOpened { rid, sid } => w.u32(S_SESSION_OPENED).u32(*rid).u32(*sid),
            Reply::RemotePort { rid, port } => w.u32(S_REMOTE_PORT).u32(*rid).u32(*port),
            Reply::TtyAllocFail { sid } => w.u32(S_TTY_ALLOC_FAIL).u32(*sid),
        };
        w.framed()
    }

    /// Parses a message body (without its length).
    pub fn decode(body: &[u8]) -> Result<Reply, Malformed> {
        let mut r = Reader(body);
        let kind = r.u32()?;
        let first = r.u32()?;
        Ok(match kind {
            HELLO => Reply::Hello { version: first },
            S_OK => Reply::Ok { rid: first },
            S_PERMISSION_DENIED => Reply::PermissionDenied {
                rid: first,
                reason: r.string()?,
            },
            S_FAILURE => Reply::Failure {
                rid: first,
                reason: r.string()?,
            },
            S_EXIT_MESSAGE => Reply::Exit {
                sid: first,
                status: r.u32()?,
            },
            S_ALIVE => Reply::Alive {
                rid: first,
                pid: r.u32()?,
            },
            S_SESSION_OPENED => Reply::SessionOpened {
                rid: first,
                sid: r.u32()?,
            },
            S_REMOTE_PORT => Reply::RemotePort {
                rid: first,
                port: r.u32()?,
            },
            S_TTY_ALLOC_FAIL => Reply::TtyAllocFail { sid: first },
            _ => return Err(Malformed("unknown reply type")),
        })
    }
}
