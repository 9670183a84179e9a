//! Private services by name: the rules for aliases, as pure functions.
//!
//! A `tcpip-forward` whose bind address is a name (`ssh -R a-ssh:22:localhost:22 B`) publishes
//! an *alias*: the relay binds no socket, it records the name for the publishing key. A
//! `direct-tcpip` to `a-ssh:22` (`ssh -J c@B a-ssh`, `ssh -L 8080:a-web:80 c@B`) is then carried
//! to the publisher as a `forwarded-tcpip` channel. Nothing on B's network can knock on an
//! alias, and unlike a port listener an alias is private: only a key whose `permitopen=` line
//! (or the relay's `permit_open`) names it may connect.
//!
//! With aliases on (the default), a one-label name other than `localhost` is always an alias,
//! on both sides: it is never resolved and never bound. So a key cannot publish a name that
//! captures connections meant for a host of B's network, and a key granted `db:5432` never
//! reaches a different `db` than the alias. Hosts of B's network are named by address or by a
//! name with a dot. `aliases = false` in serve.toml restores sshd's resolve-and-bind.

use super::policy::{
    permits, AllowTcpForwarding, DenyReason, KeyOptions, PermitListen, PermitOpen, ServerOpen,
    ServerPolicy,
};

/// Longest DNS label (RFC 1035).
const MAX_LABEL: usize = 63;

/// What a `tcpip-forward` bind address or a `direct-tcpip` host means to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// An address, `localhost`, `*` or empty: sshd's rules (bind, resolve, dial).
    Address,
    /// An alias name (a valid DNS label).
    Alias(&'a str),
    /// Neither an address nor a valid alias name (aliases on only): refused, with this reason.
    BadName(&'static str),
}

/// Classifies `host` as sshd would see it (aliases off) or as an alias (aliases on).
///
/// Aliases on: an IP literal, `localhost`, `*` and empty keep sshd's meaning; a name with a dot
/// is a host name (resolved, as before); any other text must be a DNS label (letters, digits
/// and `-`, not at either end, at least one letter, at most 63 characters) and is an alias.
pub fn classify<'a>(policy: &ServerPolicy, host: &'a str) -> Target<'a> {
    if !policy.aliases
        || host.is_empty()
        || host == "*"
        || host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok()
        || host.contains('.')
        || host.contains(':')
    {
        return Target::Address;
    }
    match label_problem(host) {
        None => Target::Alias(host),
        Some(why) => Target::BadName(why),
    }
}

/// Why `name` is not a DNS label an alias may use; `None` when it is one.
fn label_problem(name: &str) -> Option<&'static str> {
    let bytes = name.as_bytes();
    if bytes.len() > MAX_LABEL {
        return Some("an alias name has at most 63 characters");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    {
        return Some("an alias name has only letters, digits and '-'");
    }
    if bytes.first() == Some(&b'-') || bytes.last() == Some(&b'-') {
        return Some("an alias name does not start or end with '-'");
    }
    if !bytes.iter().any(u8::is_ascii_alphabetic) {
        return Some("an alias name has at least one letter");
    }
    None
}

/// `tcpip-forward` for alias `name`: may this key publish it on `port`?
///
/// Like a port listener: `AllowTcpForwarding` must allow remote forwards and the key
/// forwarding. Where the server's `permit_listen` or the key's `permitlisten=` is a list, an
/// entry must name the alias: its host pattern (a glob, as for ports) must match the name; the
/// bare-port form (`permitlisten="8080"`) is about sockets and names no alias. No privileged
/// port rule: an alias binds nothing.
pub fn check_publish(
    policy: &ServerPolicy,
    key: &KeyOptions,
    name: &str,
    port: u16,
) -> Result<(), DenyReason> {
    let name = name.to_ascii_lowercase();
    let names = |p: &PermitListen| {
        p.port.is_none_or(|want| want == port)
            && p.host.as_deref().is_some_and(|pattern| {
                crate::pattern::match_pattern(&name, &pattern.to_ascii_lowercase())
            })
    };
    if !matches!(
        policy.allow_tcp_forwarding,
        AllowTcpForwarding::Yes | AllowTcpForwarding::Remote
    ) {
        Err(DenyReason::ServerForwardingDisabled)
    } else if !key.port_forwarding {
        Err(DenyReason::KeyForwardingDisabled)
    } else if policy
        .permit_listen
        .as_deref()
        .is_some_and(|list| !list.iter().any(names))
    {
        Err(DenyReason::NotInPermitListen)
    } else if key.permit_listen_none
        || (!key.permit_listen.is_empty() && !key.permit_listen.iter().any(names))
    {
        Err(DenyReason::NotInKeyPermitListen)
    } else {
        Ok(())
    }
}

/// `direct-tcpip` to alias `name:port`: may this key connect?
///
/// Default-deny, more so than for ports: an entry must name the alias itself, host and port
/// (`a-ssh:22`, or `a-ssh:*`), in the key's `permitopen=` or in the server's `permit_open`;
/// `*` hosts and `permit_open = ["any"]` grant no alias. Where both lists are given both must
/// allow (the key's narrows, as in sshd; there a `*` entry counts).
pub fn check_visit(
    policy: &ServerPolicy,
    key: &KeyOptions,
    name: &str,
    port: u16,
) -> Result<(), DenyReason> {
    let names = |list: &[PermitOpen]| {
        list.iter().any(|p| {
            p.host != "*" && p.host.eq_ignore_ascii_case(name) && p.port.is_none_or(|w| w == port)
        })
    };
    if !matches!(
        policy.allow_tcp_forwarding,
        AllowTcpForwarding::Yes | AllowTcpForwarding::Local
    ) {
        return Err(DenyReason::ServerForwardingDisabled);
    }
    if !key.port_forwarding {
        return Err(DenyReason::KeyForwardingDisabled);
    }
    if let Some(list) = &key.permit_open {
        if !permits(list, name, port) {
            return Err(DenyReason::NotInKeyPermitOpen);
        }
    }
    let server_names = match &policy.permit_open {
        ServerOpen::Only(list) if !permits(list, name, port) => {
            return Err(DenyReason::NotInPermitOpen)
        }
        ServerOpen::Only(list) => names(list),
        ServerOpen::Unset | ServerOpen::Any => false,
    };
    if server_names || key.permit_open.as_deref().is_some_and(names) {
        Ok(())
    } else {
        Err(DenyReason::AliasNotPermitted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::policy::{parse_permit_listen, parse_permit_open};

    fn policy() -> ServerPolicy {
        ServerPolicy::default()
    }

    fn key_open(entries: &[&str]) -> KeyOptions {
        KeyOptions {
            permit_open: Some(entries.iter().flat_map(|e| parse_permit_open(e)).collect()),
            ..KeyOptions::default()
        }
    }

    #[test]
    fn names_are_dns_labels_and_addresses_keep_their_meaning() {
        let on = policy();
        for addr in [
            "",
            "*",
            "localhost",
            "LocalHost",
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "db.example",
        ] {
            assert_eq!(classify(&on, addr), Target::Address, "{addr:?}");
        }
        for name in ["a-ssh", "web", "A-Web", "x1", "1a"] {
            assert_eq!(classify(&on, name), Target::Alias(name), "{name:?}");
        }
        for bad in ["-a", "a-", "a_b", "1234", "a b", &"a".repeat(64)] {
            assert!(
                matches!(classify(&on, bad), Target::BadName(_)),
                "{bad:?} must be refused"
            );
        }
        let off = ServerPolicy {
            aliases: false,
            ..policy()
        };
        assert_eq!(classify(&off, "a-ssh"), Target::Address);
        assert_eq!(classify(&off, "a_b"), Target::Address);
    }

    #[test]
    fn an_alias_is_private_unless_a_list_names_it() {
        let p = policy();
        let plain = KeyOptions::default();
        assert_eq!(
            check_visit(&p, &plain, "a-ssh", 22),
            Err(DenyReason::AliasNotPermitted)
        );
        assert_eq!(
            check_visit(&p, &key_open(&["a-ssh:22"]), "a-ssh", 22),
            Ok(())
        );
        assert_eq!(
            check_visit(&p, &key_open(&["A-SSH:*"]), "a-ssh", 22),
            Ok(())
        );
        assert_eq!(
            check_visit(&p, &key_open(&["a-ssh:80"]), "a-ssh", 22),
            Err(DenyReason::NotInKeyPermitOpen)
        );
        // A wildcard grants B's network, never a private alias.
        assert_eq!(
            check_visit(&p, &key_open(&["*:*"]), "a-ssh", 22),
            Err(DenyReason::AliasNotPermitted)
        );
        let any = ServerPolicy {
            permit_open: ServerOpen::Any,
            ..policy()
        };
        assert_eq!(
            check_visit(&any, &plain, "a-ssh", 22),
            Err(DenyReason::AliasNotPermitted)
        );
        // A serve.toml rule grants every key; a key list still narrows.
        let rule = ServerPolicy {
            permit_open: ServerOpen::Only(vec![parse_permit_open("a-ssh:22").unwrap()]),
            ..policy()
        };
        assert_eq!(check_visit(&rule, &plain, "a-ssh", 22), Ok(()));
        assert_eq!(
            check_visit(&rule, &key_open(&["*:22"]), "a-ssh", 22),
            Ok(())
        );
        assert_eq!(
            check_visit(&rule, &key_open(&["b-ssh:22"]), "a-ssh", 22),
            Err(DenyReason::NotInKeyPermitOpen)
        );
        assert_eq!(
            check_visit(&rule, &key_open(&["a-ssh:22"]), "b-ssh", 22),
            Err(DenyReason::NotInKeyPermitOpen)
        );
        let restricted = KeyOptions {
            port_forwarding: false,
            ..key_open(&["a-ssh:22"])
        };
        assert_eq!(
            check_visit(&p, &restricted, "a-ssh", 22),
            Err(DenyReason::KeyForwardingDisabled)
        );
    }

    #[test]
    fn publishing_needs_permitlisten_to_name_the_alias_when_there_is_one() {
        let p = policy();
        let plain = KeyOptions::default();
        // No privileged-port rule: nothing is bound.
        assert_eq!(check_publish(&p, &plain, "a-ssh", 22), Ok(()));
        let listen = |entries: &[&str]| KeyOptions {
            permit_listen: entries
                .iter()
                .flat_map(|e| parse_permit_listen(e))
                .collect(),
            ..KeyOptions::default()
        };
        assert_eq!(
            check_publish(&p, &listen(&["a-ssh:22"]), "A-SSH", 22),
            Ok(())
        );
        assert_eq!(check_publish(&p, &listen(&["a-*:*"]), "a-web", 80), Ok(()));
        assert_eq!(
            check_publish(&p, &listen(&["8080"]), "a-ssh", 8080),
            Err(DenyReason::NotInKeyPermitListen)
        );
        assert_eq!(
            check_publish(&p, &listen(&["a-ssh:22"]), "b-ssh", 22),
            Err(DenyReason::NotInKeyPermitListen)
        );
        // permitlisten="none" (a visitor's line) publishes nothing, alias or port.
        let mut visitor = KeyOptions::default();
        let mut none = false;
        crate::server::policy::add_key_permit_listen(&mut visitor.permit_listen, &mut none, "none")
            .unwrap();
        visitor.permit_listen_none = none;
        assert_eq!(
            check_publish(&p, &visitor, "a-ssh", 22),
            Err(DenyReason::NotInKeyPermitListen)
        );
        assert!(matches!(
            crate::server::policy::check_listen(&p, &visitor, "localhost", 8086),
            crate::server::policy::Decision::Deny(DenyReason::NotInKeyPermitListen)
        ));
        let mut list = Vec::new();
        assert!(
            crate::server::policy::add_key_permit_listen(&mut list, &mut false, "8080").is_ok()
                && crate::server::policy::add_key_permit_listen(&mut list, &mut false, "none")
                    .is_err(),
            "permitlisten=\"none\" must stand alone"
        );
        let server_none = ServerPolicy {
            permit_listen: Some(Vec::new()),
            ..policy()
        };
        assert_eq!(
            check_publish(&server_none, &plain, "a-ssh", 22),
            Err(DenyReason::NotInPermitListen)
        );
        let local_only = ServerPolicy {
            allow_tcp_forwarding: AllowTcpForwarding::Local,
            ..policy()
        };
        assert_eq!(
            check_publish(&local_only, &plain, "a-ssh", 22),
            Err(DenyReason::ServerForwardingDisabled)
        );
    }
}
