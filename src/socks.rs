//! Server side of the SOCKS4/4a/5 handshake for `-D` (what OpenSSH's `channel_decode_socks4`
//! and `channel_decode_socks5` accept: CONNECT only, no authentication).
//!
//! The parsers are pure functions over byte slices: given what has arrived so far they either
//! finish or say exactly how many more bytes the message certainly still has. The async driver
//! reads precisely that many, so it never consumes data a client pipelines after its request.

mod error;
mod parse;
#[cfg(test)]
mod tests;

pub use error::{SocksError, Stage};
pub use parse::{encode_reply, parse_greeting, parse_socks4, parse_socks5_request};

use std::fmt;
use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest SOCKS4 user id accepted; OpenSSH's limit too. Ids are read and then ignored.
pub const MAX_USERID_LEN: usize = 1024;
/// Longest host name accepted (SOCKS4a; SOCKS5 cannot encode more). DNS names are at most 253.
pub const MAX_HOSTNAME_LEN: usize = 255;

const NO_AUTH: u8 = 0x00;
const NO_ACCEPTABLE_METHOD: u8 = 0xFF;

/// Where the client wants to go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetAddr {
    /// An address literal (SOCKS4, SOCKS5 IPv4/IPv6).
    Ip(SocketAddr),
    /// A name for the far side to resolve (SOCKS4a, SOCKS5 domain), and the port.
    Domain(String, u16),
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetAddr::Ip(addr) => write!(f, "{addr}"),
            TargetAddr::Domain(host, port) if host.contains(':') => write!(f, "[{host}]:{port}"),
            TargetAddr::Domain(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

/// Protocol version spoken; the reply format depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// SOCKS4 (IPv4 literal).
    V4,
    /// SOCKS4a (host name after the user id).
    V4a,
    /// SOCKS5 (RFC 1928).
    V5,
}

/// A CONNECT request the handshake accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Request {
    /// Version to answer in.
    pub version: Version,
    /// Where to connect.
    pub target: TargetAddr,
}

/// The command byte of a request; only CONNECT is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// 0x01 CONNECT.
    Connect,
    /// 0x02 BIND.
    Bind,
    /// 0x03 UDP ASSOCIATE (SOCKS5 only).
    UdpAssociate,
    /// Anything else.
    Other(u8),
}

impl From<u8> for Command {
    fn from(byte: u8) -> Self {
        match byte {
            0x01 => Command::Connect,
            0x02 => Command::Bind,
            0x03 => Command::UdpAssociate,
            other => Command::Other(other),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Connect => f.write_str("0x01 (CONNECT)"),
            Command::Bind => f.write_str("0x02 (BIND)"),
            Command::UdpAssociate => f.write_str("0x03 (UDP ASSOCIATE)"),
            Command::Other(b) => write!(f, "0x{b:02x}"),
        }
    }
}

/// A fully parsed request, before deciding whether its command is served.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawRequest {
    /// Version the request was made in.
    pub version: Version,
    /// What the client asked to do.
    pub command: Command,
    /// Where to.
    pub target: TargetAddr,
}

/// The SOCKS5 method-selection message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Greeting {
    /// Authentication methods the client offers.
    pub methods: Vec<u8>,
}

/// Result of feeding the bytes received so far to a parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// A complete message occupying the first `consumed` bytes.
    Done {
        /// The message.
        value: T,
        /// Its length in bytes; anything after it belongs to the next message.
        consumed: usize,
    },
    /// The message is incomplete and certainly has at least this many more bytes (>= 1),
    /// so reading exactly this many can never swallow data sent after it.
    NeedMore(usize),
}

/// Why the proxy could not connect; mapped to the right SOCKS4 (0x5B) / SOCKS5 (0x01..0x08)
/// reply code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// 0x01 general SOCKS server failure.
    General,
    /// 0x02 connection not allowed by ruleset.
    NotAllowed,
    /// 0x03 network unreachable.
    NetworkUnreachable,
    /// 0x04 host unreachable.
    HostUnreachable,
    /// 0x05 connection refused.
    ConnectionRefused,
    /// 0x06 TTL expired (used for timeouts).
    TtlExpired,
    /// 0x07 command not supported.
    CommandNotSupported,
    /// 0x08 address type not supported.
    AddressTypeNotSupported,
}

impl Failure {
    /// The SOCKS5 reply code (RFC 1928 section 6).
    pub fn socks5_code(self) -> u8 {
        match self {
            Failure::General => 0x01,
            Failure::NotAllowed => 0x02,
            Failure::NetworkUnreachable => 0x03,
            Failure::HostUnreachable => 0x04,
            Failure::ConnectionRefused => 0x05,
            Failure::TtlExpired => 0x06,
            Failure::CommandNotSupported => 0x07,
            Failure::AddressTypeNotSupported => 0x08,
        }
    }

    /// Classifies a local dial error so the client sees why, not just "failed".
    pub fn from_io_error(err: &io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => Failure::ConnectionRefused,
            io::ErrorKind::HostUnreachable => Failure::HostUnreachable,
            io::ErrorKind::NetworkUnreachable => Failure::NetworkUnreachable,
            io::ErrorKind::TimedOut => Failure::TtlExpired,
            io::ErrorKind::PermissionDenied => Failure::NotAllowed,
            _ => Failure::General,
        }
    }
}

/// Reads the greeting (SOCKS5: method selection; only "no authentication" 0x00 is offered; if
/// the client does not offer it reply 0xFF and fail), then the request. Only CONNECT is
/// supported; BIND/UDP ASSOCIATE get "command not supported" replies written before the error
/// is returned, and malformed requests a general-failure reply where the protocol has one.
/// Reads exactly the handshake's bytes, so pipelined application data stays in `stream`.
/// Has no timeout of its own: wrap it in `tokio::time::timeout`.
pub async fn accept<S>(stream: &mut S) -> Result<Request, SocksError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let first = stream
        .read_u8()
        .await
        .map_err(|e| io_error(Stage::Start, e))?;
    let version = match first {
        0x04 => Version::V4,
        0x05 => Version::V5,
        other => return Err(SocksError::UnsupportedVersion(other)),
    };
    let raw = match version {
        Version::V5 => socks5(stream).await,
        Version::V4 | Version::V4a => {
            read_message(stream, first, Stage::Socks4, parse_socks4).await
        }
    };
    let result = raw.and_then(connect_only);
    if let Err(err) = &result {
        if let Some(failure) = err.courtesy_failure() {
            // Best effort: the protocol error is the one the caller must hear about; a failed
            // write here only means the client has already gone.
            reply(stream, version, Err(failure)).await.ok();
        }
    }
    result
}

/// Sends the final reply (success with a bound address of 0.0.0.0:0 is fine, or a provided one).
pub async fn reply<S: AsyncWrite + Unpin>(
    stream: &mut S,
    version: Version,
    outcome: Result<SocketAddr, Failure>,
) -> io::Result<()> {
    stream.write_all(&encode_reply(version, outcome)).await?;
    stream.flush().await
}

/// Method selection, then the request. Failures after the greeting are answered by `accept`.
async fn socks5<S>(stream: &mut S) -> Result<RawRequest, SocksError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let greeting = read_message(stream, 0x05, Stage::Socks5Greeting, parse_greeting).await?;
    let chosen = if greeting.methods.contains(&NO_AUTH) {
        NO_AUTH
    } else {
        NO_ACCEPTABLE_METHOD
    };
    let stage = Stage::Socks5Greeting;
    stream
        .write_all(&[0x05, chosen])
        .await
        .map_err(|e| io_error(stage, e))?;
    stream.flush().await.map_err(|e| io_error(stage, e))?;
    if chosen == NO_ACCEPTABLE_METHOD {
        return Err(SocksError::NoAcceptableMethod(greeting.methods));
    }
    let first = stream
        .read_u8()
        .await
        .map_err(|e| io_error(Stage::Socks5Request, e))?;
    read_message(stream, first, Stage::Socks5Request, parse_socks5_request).await
}

/// Feeds `parse` exactly the bytes it asks for, starting from an already-read first byte.
async fn read_message<S, T>(
    stream: &mut S,
    first: u8,
    stage: Stage,
    parse: fn(&[u8]) -> Result<Parsed<T>, SocksError>,
) -> Result<T, SocksError>
where
    S: AsyncRead + Unpin,
{
    read_raw(stream, first, stage, parse).await.map(|(v, _)| v)
}

/// Reads one message with `parse` (e.g. [`parse_socks4`]) from an already-read first byte, and
/// returns it with its bytes, for a proxy in the middle that must pass the message on
/// unchanged. Reads exactly the message, nothing after it.
pub async fn read_raw<S, T>(
    stream: &mut S,
    first: u8,
    stage: Stage,
    parse: fn(&[u8]) -> Result<Parsed<T>, SocksError>,
) -> Result<(T, Vec<u8>), SocksError>
where
    S: AsyncRead + Unpin,
{
    let mut buf = vec![first];
    loop {
        match parse(&buf)? {
            Parsed::Done { value, .. } => return Ok((value, buf)),
            Parsed::NeedMore(n) => {
                let start = buf.len();
                buf.resize(start + n, 0);
                let tail = buf.get_mut(start..).unwrap_or_default();
                stream
                    .read_exact(tail)
                    .await
                    .map_err(|e| io_error(stage, e))?;
            }
        }
    }
}

fn io_error(stage: Stage, err: io::Error) -> SocksError {
    match err.kind() {
        io::ErrorKind::UnexpectedEof => SocksError::Closed(stage),
        _ => SocksError::Io(stage, err),
    }
}

/// Only CONNECT is served: BIND needs a second inbound connection and UDP ASSOCIATE a UDP
/// relay, neither of which an SSH `direct-tcpip` channel can carry (OpenSSH refuses them too).
fn connect_only(raw: RawRequest) -> Result<Request, SocksError> {
    match raw.command {
        Command::Connect => Ok(Request {
            version: raw.version,
            target: raw.target,
        }),
        command => Err(SocksError::UnsupportedCommand {
            stage: match raw.version {
                Version::V4 | Version::V4a => Stage::Socks4,
                Version::V5 => Stage::Socks5Request,
            },
            command,
        }),
    }
}
