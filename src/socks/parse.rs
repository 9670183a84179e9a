//! Pure, incremental parsers for the handshake messages, and the reply encoder.

use super::{
    Command, Failure, Greeting, Parsed, RawRequest, SocksError, Stage, TargetAddr, Version,
    MAX_HOSTNAME_LEN, MAX_USERID_LEN,
};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};

/// Why a parser stopped early: it needs more bytes, or the bytes are wrong.
enum Stop {
    Need(usize),
    Fail(SocksError),
}

impl From<SocksError> for Stop {
    fn from(err: SocksError) -> Self {
        Stop::Fail(err)
    }
}

/// A bounds-checked read position over the bytes received so far.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        let rest = self.rest();
        let bytes = rest
            .get(..n)
            .ok_or_else(|| Stop::Need(n.saturating_sub(rest.len())))?;
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Stop> {
        let mut out = [0; N];
        for (slot, byte) in out.iter_mut().zip(self.take(N)?) {
            *slot = *byte;
        }
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, Stop> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16, Stop> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A NUL-terminated field of at most `max` bytes. Until the NUL shows up the only byte
    /// known to exist is the next one, so this asks for one at a time.
    fn cstr(&mut self, max: usize, stage: Stage, field: &'static str) -> Result<&'a [u8], Stop> {
        let rest = self.rest();
        let too_long = || Stop::Fail(SocksError::FieldTooLong { stage, field, max });
        match rest.iter().position(|&b| b == 0) {
            Some(len) if len <= max => {
                self.pos += len + 1;
                Ok(rest.get(..len).unwrap_or_default())
            }
            Some(_) => Err(too_long()),
            None if rest.len() > max => Err(too_long()),
            None => Err(Stop::Need(1)),
        }
    }

    fn finish<T>(self, result: Result<T, Stop>) -> Result<Parsed<T>, SocksError> {
        match result {
            Ok(value) => Ok(Parsed::Done {
                value,
                consumed: self.pos,
            }),
            Err(Stop::Need(n)) => Ok(Parsed::NeedMore(n)),
            Err(Stop::Fail(err)) => Err(err),
        }
    }
}

fn expect_version(r: &mut Reader<'_>, stage: Stage, expected: u8) -> Result<(), Stop> {
    match r.u8()? {
        found if found == expected => Ok(()),
        found => Err(SocksError::BadVersion {
            stage,
            found,
            expected,
        }
        .into()),
    }
}

fn host_name(bytes: &[u8], stage: Stage) -> Result<String, SocksError> {
    let bad = || SocksError::BadHostName {
        stage,
        name: String::from_utf8_lossy(bytes).into_owned(),
    };
    let name = std::str::from_utf8(bytes).map_err(|_| bad())?;
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(bad());
    }
    Ok(name.to_owned())
}

/// Parses a SOCKS4/4a request (`04 cmd port ip userid\0 [host\0]`); 4a is signalled by an
/// address of 0.0.0.x with x != 0.
pub fn parse_socks4(buf: &[u8]) -> Result<Parsed<RawRequest>, SocksError> {
    let mut r = Reader::new(buf);
    let result = socks4(&mut r);
    r.finish(result)
}

fn socks4(r: &mut Reader<'_>) -> Result<RawRequest, Stop> {
    expect_version(r, Stage::Socks4, 0x04)?;
    let command = Command::from(r.u8()?);
    let port = r.u16()?;
    let ip = r.array::<4>()?;
    r.cstr(MAX_USERID_LEN, Stage::Socks4, "user id")?;
    let (version, target) = if matches!(ip, [0, 0, 0, x] if x != 0) {
        let name = r.cstr(MAX_HOSTNAME_LEN, Stage::Socks4, "SOCKS4a host name")?;
        let host = host_name(name, Stage::Socks4)?;
        (Version::V4a, TargetAddr::Domain(host, port))
    } else {
        let addr = SocketAddr::from((Ipv4Addr::from(ip), port));
        (Version::V4, TargetAddr::Ip(addr))
    };
    Ok(RawRequest {
        version,
        command,
        target,
    })
}

/// Parses the SOCKS5 method selection (`05 n methods...`).
pub fn parse_greeting(buf: &[u8]) -> Result<Parsed<Greeting>, SocksError> {
    let mut r = Reader::new(buf);
    let result = greeting(&mut r);
    r.finish(result)
}

fn greeting(r: &mut Reader<'_>) -> Result<Greeting, Stop> {
    expect_version(r, Stage::Socks5Greeting, 0x05)?;
    let count = usize::from(r.u8()?);
    let methods = r.take(count)?.to_vec();
    Ok(Greeting { methods })
}

/// Parses a SOCKS5 request (`05 cmd 00 atyp addr port`).
pub fn parse_socks5_request(buf: &[u8]) -> Result<Parsed<RawRequest>, SocksError> {
    let mut r = Reader::new(buf);
    let result = socks5_request(&mut r);
    r.finish(result)
}

fn socks5_request(r: &mut Reader<'_>) -> Result<RawRequest, Stop> {
    expect_version(r, Stage::Socks5Request, 0x05)?;
    let command = Command::from(r.u8()?);
    match r.u8()? {
        0 => {}
        other => return Err(SocksError::Reserved(other).into()),
    }
    let target = match r.u8()? {
        0x01 => TargetAddr::Ip(SocketAddr::from((
            Ipv4Addr::from(r.array::<4>()?),
            r.u16()?,
        ))),
        0x04 => TargetAddr::Ip(SocketAddr::from((
            Ipv6Addr::from(r.array::<16>()?),
            r.u16()?,
        ))),
        0x03 => {
            let len = usize::from(r.u8()?);
            let host = host_name(r.take(len)?, Stage::Socks5Request)?;
            TargetAddr::Domain(host, r.u16()?)
        }
        other => return Err(SocksError::UnsupportedAddressType(other).into()),
    };
    let version = Version::V5;
    Ok(RawRequest {
        version,
        command,
        target,
    })
}

/// Encodes the final reply. SOCKS4 can only carry an IPv4 bound address (zeros otherwise);
/// failures carry 0.0.0.0:0.
pub fn encode_reply(version: Version, outcome: Result<SocketAddr, Failure>) -> Vec<u8> {
    match version {
        Version::V4 | Version::V4a => socks4_reply(outcome),
        Version::V5 => socks5_reply(outcome),
    }
}

/// `00 code port ip`: 0x5A granted, 0x5B rejected (SOCKS4 has no finer failure codes).
fn socks4_reply(outcome: Result<SocketAddr, Failure>) -> Vec<u8> {
    let (code, bound) = match outcome {
        Ok(SocketAddr::V4(addr)) => (0x5A, addr),
        Ok(SocketAddr::V6(_)) => (0x5A, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
        Err(_) => (0x5B, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
    };
    let mut out = vec![0x00, code];
    out.extend_from_slice(&bound.port().to_be_bytes());
    out.extend_from_slice(&bound.ip().octets());
    out
}

/// `05 code 00 atyp addr port`.
fn socks5_reply(outcome: Result<SocketAddr, Failure>) -> Vec<u8> {
    let (code, bound) = match outcome {
        Ok(addr) => (0x00, addr),
        Err(failure) => (failure.socks5_code(), (Ipv4Addr::UNSPECIFIED, 0).into()),
    };
    let mut out = vec![0x05, code, 0x00];
    match bound {
        SocketAddr::V4(a) => {
            out.push(0x01);
            out.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out.push(0x04);
            out.extend_from_slice(&a.ip().octets());
        }
    }
    out.extend_from_slice(&bound.port().to_be_bytes());
    out
}
