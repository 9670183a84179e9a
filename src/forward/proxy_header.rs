//! PROXY protocol headers (haproxy's proxy-protocol.txt, versions 1 and 2) for -R: written to
//! the local service before any byte of a forwarded connection, so a service behind the tunnel
//! (nginx, HAProxy, fail2ban reading their logs) sees the visitor's address, which the server
//! reports in the `forwarded-tcpip` channel's originator fields, instead of the tunnel's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Which PROXY protocol header -R connections carry (the `ProxyProtocol` option, a burrow
/// extension: OpenSSH has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyProtocol {
    /// The text line `PROXY TCP4 src dst sport dport\r\n`.
    V1,
    /// The binary header (signature, PROXY command, AF_INET/AF_INET6 STREAM).
    V2,
}

/// The v2 signature every binary header starts with.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

impl ProxyProtocol {
    /// Parses the option value: `v1`/`1`, `v2`/`2`, or `none`/`no` (no header).
    pub fn parse(value: &str) -> Option<Option<Self>> {
        match value.trim().to_ascii_lowercase().as_str() {
            "v1" | "1" => Some(Some(Self::V1)),
            "v2" | "2" => Some(Some(Self::V2)),
            "none" | "no" => Some(None),
            _ => None,
        }
    }

    /// The option value, as `-G` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }

    /// The header for one connection from `originator` (as the server reported it) to
    /// `connected` (the listener's address and port as reported). None for the source when
    /// it is not an IP literal: v1 then says `PROXY UNKNOWN`, v2 uses the LOCAL command, so the
    /// service takes the connection's own address rather than a made-up one.
    pub fn header(self, originator: (&str, u32), connected: (&str, u32)) -> Header {
        let src = ip_literal(originator.0).zip(port(originator.1));
        let Some((src_ip, src_port)) = src else {
            return Header {
                bytes: self.unknown(),
                known: false,
            };
        };
        let dst_ip = destination(connected.0, src_ip);
        let dst_port = port(connected.1).unwrap_or(0);
        let bytes = match self {
            Self::V1 => v1(src_ip, dst_ip, src_port, dst_port),
            Self::V2 => v2(src_ip, dst_ip, src_port, dst_port),
        };
        Header { bytes, known: true }
    }

    fn unknown(self) -> Vec<u8> {
        match self {
            Self::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
            Self::V2 => {
                let mut b = V2_SIGNATURE.to_vec();
                // Version 2, LOCAL; family UNSPEC; no address block.
                b.extend_from_slice(&[0x20, 0x00, 0, 0]);
                b
            }
        }
    }
}

/// One connection's header bytes, and whether they carry the visitor's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// What to write to the local service first.
    pub bytes: Vec<u8>,
    /// False when the originator was not an IP address (UNKNOWN / LOCAL was sent).
    pub known: bool,
}

/// An IP literal as servers write originators (`[::1]` too); IPv4-mapped IPv6 addresses (a
/// dual-stack listener's IPv4 visitors) become IPv4, as the visitor knows itself.
fn ip_literal(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    s.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

fn port(p: u32) -> Option<u16> {
    u16::try_from(p).ok()
}

/// The destination address in the source's family (the header has one family for both).
/// Servers report the listener as requested: an IP literal, `localhost`, or ""/`*`/a name for
/// all interfaces; those become the family's loopback or unspecified address.
fn destination(connected: &str, src: IpAddr) -> IpAddr {
    let dst = match ip_literal(connected) {
        Some(ip) => Some(ip),
        None if connected.eq_ignore_ascii_case("localhost") => Some(match src {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        }),
        None => None,
    };
    match (src, dst) {
        (IpAddr::V4(_), Some(IpAddr::V4(d))) => IpAddr::V4(d),
        (IpAddr::V6(_), Some(IpAddr::V6(d))) => IpAddr::V6(d),
        (IpAddr::V6(_), Some(IpAddr::V4(d))) => IpAddr::V6(d.to_ipv6_mapped()),
        (IpAddr::V4(_), _) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (IpAddr::V6(_), _) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn v1(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
    let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!("PROXY {family} {src} {dst} {sport} {dport}\r\n").into_bytes()
}

fn v2(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
    let mut b = V2_SIGNATURE.to_vec();
    // Version 2, PROXY command.
    b.push(0x21);
    let mut addrs = Vec::with_capacity(36);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            b.push(0x11); // AF_INET, STREAM
            addrs.extend_from_slice(&s.octets());
            addrs.extend_from_slice(&d.octets());
        }
        (s, d) => {
            b.push(0x21); // AF_INET6, STREAM
            addrs.extend_from_slice(&v6(s).octets());
            addrs.extend_from_slice(&v6(d).octets());
        }
    }
    addrs.extend_from_slice(&sport.to_be_bytes());
    addrs.extend_from_slice(&dport.to_be_bytes());
    // At most 36 bytes: the length always fits.
    let len = u16::try_from(addrs.len()).unwrap_or(u16::MAX);
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(&addrs);
    b
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_lines() {
        let h = ProxyProtocol::V1.header(("127.0.0.2", 40000), ("127.0.0.1", 8080));
        assert_eq!(h.bytes, b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 8080\r\n");
        assert!(h.known);
        let h = ProxyProtocol::V1.header(("2001:db8::7", 5), ("", 80));
        assert_eq!(h.bytes, b"PROXY TCP6 2001:db8::7 :: 5 80\r\n");
        let h = ProxyProtocol::V1.header(("::ffff:10.0.0.9", 5), ("localhost", 80));
        assert_eq!(h.bytes, b"PROXY TCP4 10.0.0.9 127.0.0.1 5 80\r\n");
        let h = ProxyProtocol::V1.header(("10.0.0.9", 5), ("*", 80));
        assert_eq!(h.bytes, b"PROXY TCP4 10.0.0.9 0.0.0.0 5 80\r\n");
    }

    #[test]
    fn v2_headers() {
        let h = ProxyProtocol::V2.header(("127.0.0.2", 0x1234), ("127.0.0.1", 80));
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12, 127, 0, 0, 2, 127, 0, 0, 1]);
        want.extend_from_slice(&[0x12, 0x34, 0, 80]);
        assert_eq!(h.bytes, want);
        let h = ProxyProtocol::V2.header(("::1", 1), ("127.0.0.1", 2));
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x21, 0, 36]);
        want.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        want.extend_from_slice(&Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets());
        want.extend_from_slice(&[0, 1, 0, 2]);
        assert_eq!(h.bytes, want);
    }

    #[test]
    fn a_name_or_empty_originator_is_unknown() {
        for orig in ["", "visitor.example", "fe80::1%eth0"] {
            let h = ProxyProtocol::V1.header((orig, 1), ("127.0.0.1", 2));
            assert_eq!(h.bytes, b"PROXY UNKNOWN\r\n", "{orig:?}");
            assert!(!h.known);
            let h = ProxyProtocol::V2.header((orig, 1), ("127.0.0.1", 2));
            let mut want = V2_SIGNATURE.to_vec();
            want.extend_from_slice(&[0x20, 0x00, 0, 0]);
            assert_eq!(h.bytes, want, "{orig:?}");
        }
        let h = ProxyProtocol::V1.header(("127.0.0.2", 70000), ("127.0.0.1", 2));
        assert!(!h.known, "a port past 65535 is not an address either");
    }

    #[test]
    fn option_values() {
        assert_eq!(ProxyProtocol::parse("V2"), Some(Some(ProxyProtocol::V2)));
        assert_eq!(ProxyProtocol::parse("1"), Some(Some(ProxyProtocol::V1)));
        assert_eq!(ProxyProtocol::parse("none"), Some(None));
        assert_eq!(ProxyProtocol::parse("v3"), None);
    }
}
