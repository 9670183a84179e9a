//! `direct-tcpip` (-L, -W, and -D whose SOCKS requests the client turns into the same channel
//! opens): the one place where the relay decides where such a channel may go, and dials it.
//!
//! [`super::policy::check_open`] says how far the key may reach from the name alone. Here the name is
//! resolved once and every address checked: the relay's own SSH and metrics addresses are
//! refused unless a permit_open entry names them, and under the default only addresses a -R
//! listener of this relay is bound to pass. Only the addresses that passed are dialled (never
//! the name again), so a name that resolves elsewhere a moment later (DNS rebinding) cannot
//! change where the connection goes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::policy::{DenyReason, Reach};
use super::Relay;
use crate::forward::listen::lookup_on;

/// Why a destination that passed [`super::policy::check_open`] still cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum Blocked {
    /// Refused by policy once its addresses were known.
    #[error("{0}")]
    Policy(DenyReason),
    /// The name did not resolve (the client gets "connect failed", as from sshd).
    #[error("cannot resolve: {0}")]
    Resolve(String),
}

/// The addresses of `host:port` this channel may be dialled to, in resolver order.
pub async fn admit(
    relay: &Arc<Relay>,
    reach: Reach,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, Blocked> {
    let (published_only, explicit, reason) = match reach {
        Reach::Deny(reason) => return Err(Blocked::Policy(reason)),
        Reach::Published(reason) => (true, false, reason),
        Reach::Granted { explicit } => (false, explicit, DenyReason::RelayAddress),
    };
    // Under the default only a published listener's port can pass, whatever the name resolves
    // to: refuse the others before asking the resolver, so a key cannot make the relay look
    // up names of its choosing (slow ones hold a blocking thread each) for nothing.
    let published = relay.registry.published();
    if published_only && !published.iter().any(|p| p.port() == port) {
        // The relay's own ports are never published: name them in the log.
        let reason = if is_own_port(relay, port) {
            DenyReason::RelayAddress
        } else {
            reason
        };
        return Err(Blocked::Policy(reason));
    }
    let resolved: Vec<SocketAddr> = lookup_on(Some(&relay.lookups), host, port)
        .await
        .map_err(|e| Blocked::Resolve(crate::reason::io_reason(&e)))?
        .into_iter()
        .map(|a| SocketAddr::new(kernel_destination(a.ip()), a.port()))
        .collect();
    let own = own_addresses(relay);
    let locals = Locals::default();
    let is_own = |dest: &SocketAddr| own.iter().any(|o| may_reach(*o, *dest, &locals));
    let hits_own = !explicit && resolved.iter().any(is_own);
    let allowed: Vec<SocketAddr> = resolved
        .into_iter()
        .filter(|dest| explicit || !is_own(dest))
        .filter(|dest| !published_only || published.iter().any(|p| same_socket(*p, *dest, &locals)))
        .collect();
    if allowed.is_empty() {
        // Name the relay's own address when that is what was asked for.
        let reason = if hits_own {
            DenyReason::RelayAddress
        } else {
            reason
        };
        return Err(Blocked::Policy(reason));
    }
    Ok(allowed)
}

/// True when the relay's own SSH or metrics listener uses `port` (on any address). A -R
/// listener may not share it: bound to the other loopback family (`[::1]:2222` beside
/// `127.0.0.1:2222`) it would catch what B's own users send to `localhost:2222` or
/// `localhost:9180`, which tries ::1 first — an operator's `ssh -p 2222 localhost`, or a metrics
/// scrape with its bearer token.
pub fn is_own_port(relay: &Relay, port: u16) -> bool {
    port != 0 && own_addresses(relay).iter().any(|a| a.port() == port)
}

/// Where the relay itself listens: its SSH address and, when on, its metrics address.
fn own_addresses(relay: &Relay) -> Vec<SocketAddr> {
    let mut own = vec![relay.local_addr, relay.config.listen];
    if let Some(o) = &relay.config.observe {
        own.push(o.addr);
    }
    if let Some(a) = relay.metrics_addr.get() {
        own.push(*a);
    }
    own.retain(|a| a.port() != 0);
    own
}

/// The address the kernel really connects to for `ip`: IPv4-mapped IPv6 is IPv4, and the
/// unspecified address is the loopback of its family (Linux sends `0.0.0.0` to 127.0.0.1 and
/// `::` to ::1). Checking and dialling this address, not the wildcard, keeps a destination
/// `0.0.0.0:P` from passing as "some listener of this host on P" while it lands on another
/// family's loopback service.
fn kernel_destination(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// Would a connection to `dest` (already a [`kernel_destination`]) reach a -R listener bound
/// to `bound`? Same port, and the same address, or a wildcard bind of the same family (-R
/// listeners are IPv6-only sockets) and an address of this host. Errs towards "no": a yes
/// lets the channel through.
fn same_socket(bound: SocketAddr, dest: SocketAddr, locals: &Locals) -> bool {
    if bound.port() != dest.port() {
        return false;
    }
    let (b, d) = (bound.ip().to_canonical(), dest.ip().to_canonical());
    if b == d {
        return true;
    }
    b.is_unspecified() && b.is_ipv4() == d.is_ipv4() && locals.contains(d)
}

/// Might a connection to `dest` reach the relay's own socket bound to `bound`? Like
/// [`same_socket`], but an IPv6 wildcard counts as dual-stack (the metrics listener is one):
/// errs towards "yes", since a yes refuses the channel.
fn may_reach(bound: SocketAddr, dest: SocketAddr, locals: &Locals) -> bool {
    if same_socket(bound, dest, locals) {
        return true;
    }
    let b = bound.ip().to_canonical();
    bound.port() == dest.port() && b.is_unspecified() && b.is_ipv6() && locals.contains(dest.ip())
}

/// This host's addresses, read once per decision and only when a wildcard needs them.
#[derive(Default)]
struct Locals(std::sync::OnceLock<Vec<IpAddr>>);

impl Locals {
    /// Loopback, unspecified, or an address of one of this host's interfaces.
    fn contains(&self, ip: IpAddr) -> bool {
        if ip.is_loopback() || ip.is_unspecified() {
            return true;
        }
        self.0.get_or_init(interface_addresses).contains(&ip)
    }
}

fn interface_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|s| {
            if let Some(v4) = s.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_socket_follows_the_kernel() {
        let locals = Locals::default();
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        #[rustfmt::skip]
        let cases = [
            ("127.0.0.1:8087", "127.0.0.1:8087",        true),
            ("127.0.0.1:8087", "127.0.0.1:8088",        false),
            ("127.0.0.1:8087", "[::1]:8087",            false),
            ("[::1]:8087",     "[::1]:8087",            true),
            ("127.0.0.1:8087", "[::ffff:127.0.0.1]:8087", true),
            ("0.0.0.0:2222",   "127.0.0.5:2222",        true),
            ("0.0.0.0:2222",   "[::1]:2222",            false),
            ("[::]:2222",      "[::1]:2222",            true),
            ("0.0.0.0:2222",   "192.0.2.77:2222",       false),
            ("127.0.0.1:2222", "0.0.0.0:2222",          true),
            ("127.0.0.1:2222", "127.0.0.2:2222",        false),
            // The wildcard destination lands on its own family's loopback, nowhere else.
            ("[::1]:8087",     "0.0.0.0:8087",          false),
            ("127.0.0.1:8087", "[::]:8087",             false),
            ("[::1]:8087",     "[::]:8087",             true),
            ("[::]:8087",      "127.0.0.1:8087",        false),
        ];
        for (bound, dest, want) in cases {
            let dest = a(dest);
            let dest = SocketAddr::new(kernel_destination(dest.ip()), dest.port());
            assert_eq!(
                same_socket(a(bound), dest, &locals),
                want,
                "{bound} <- {dest}"
            );
        }
    }

    /// The relay's own sockets: a `[::]` bind may be dual-stack (tokio's metrics listener is),
    /// so it covers IPv4 destinations of this host too; `permit_open = ["any"]` with
    /// `metrics = "[::]:9180"` used to let `127.0.0.1:9180` through.
    #[test]
    fn an_ipv6_wildcard_of_the_relay_covers_ipv4_too() {
        let locals = Locals::default();
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        #[rustfmt::skip]
        let cases = [
            ("[::]:9180",      "127.0.0.1:9180",   true),
            ("[::]:9180",      "0.0.0.0:9180",     true),
            ("[::]:9180",      "[::1]:9180",       true),
            ("[::]:9180",      "192.0.2.77:9180",  false),
            ("[::]:9180",      "127.0.0.1:9181",   false),
            ("0.0.0.0:2222",   "[::1]:2222",       false),
            ("127.0.0.1:2222", "0.0.0.0:2222",     true),
        ];
        for (bound, dest, want) in cases {
            let dest = a(dest);
            let dest = SocketAddr::new(kernel_destination(dest.ip()), dest.port());
            assert_eq!(
                may_reach(a(bound), dest, &locals),
                want,
                "{bound} <- {dest}"
            );
        }
    }
}
