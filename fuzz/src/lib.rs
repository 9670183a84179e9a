//! The bodies of burrow's fuzz targets, one function per target, kept apart from libFuzzer so the
//! same checks run in the normal test suite over the committed corpus and every input that once
//! failed (`tests/fuzz_regressions.rs` includes this file).
//!
//! Each function feeds arbitrary bytes to one parser the way burrow receives them (command-line
//! text, file text, bytes from a socket) and checks more than "no panic": errors must name their
//! input (file and line, or the spec), and accepted values must keep the invariants the rest of
//! burrow relies on. Anything that could touch the system is filtered out first: `Include`
//! (reads files) and `Match exec` (runs commands) in ssh_config text.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Fuzz bytes as text, the way burrow gets command lines and config files (clap and
/// `read_to_string` refuse other bytes before any parser sees them).
fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Peers used to exercise `from=` and per-key checks.
fn peers() -> [IpAddr; 4] {
    [
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from([192, 168, 1, 20]),
        "::1".parse().unwrap_or(IpAddr::from([0; 16])),
        "2001:db8::7".parse().unwrap_or(IpAddr::from([0; 16])),
    ]
}

fn assert_names<E: std::fmt::Display>(e: &E, needle: &str) {
    let msg = e.to_string();
    assert!(
        msg.contains(needle),
        "error message {msg:?} does not name {needle:?}"
    );
}

/// -L/-R/-D/-W specs, their ssh_config two-argument forms, destinations and -J lists.
pub fn spec(data: &[u8]) {
    use burrow::spec::{
        parse_destination, parse_dynamic, parse_jump, parse_local, parse_local_config,
        parse_remote, parse_remote_config, parse_stdio, Endpoint,
    };
    let Some(s) = text(data) else { return };
    match parse_local(s) {
        Ok(f) => {
            if let Endpoint::Tcp { host, port } = &f.target {
                assert!(*port != 0, "-L {s:?}: target port 0 accepted");
                assert!(!host.is_empty(), "-L {s:?}: empty target host accepted");
            }
            let _ = f.to_string();
        }
        Err(e) => assert_names(&e, "local forward spec"),
    }
    match parse_remote(s) {
        Ok(f) => {
            if let Some(Endpoint::Tcp { host, port }) = &f.target {
                assert!(*port != 0, "-R {s:?}: target port 0 accepted");
                assert!(!host.is_empty(), "-R {s:?}: empty target host accepted");
            }
            let _ = f.to_string();
        }
        Err(e) => assert_names(&e, "remote forward spec"),
    }
    match parse_dynamic(s) {
        Ok(f) => drop(f.to_string()),
        Err(e) => assert_names(&e, "dynamic forward spec"),
    }
    match parse_stdio(s) {
        Ok((host, port)) => {
            assert!(port != 0, "-W {s:?}: port 0 accepted");
            assert!(!host.is_empty(), "-W {s:?}: empty host accepted");
        }
        Err(e) => assert_names(&e, "stdio forward spec"),
    }
    match parse_destination(s) {
        Ok((_, host, port)) => {
            assert!(!host.is_empty(), "destination {s:?}: empty host accepted");
            assert!(port != Some(0), "destination {s:?}: port 0 accepted");
        }
        Err(e) => assert_names(&e, "destination"),
    }
    match parse_jump(s) {
        Ok(hops) => {
            for hop in hops {
                assert!(!hop.host.is_empty(), "-J {s:?}: empty host accepted");
                assert!(hop.port != Some(0), "-J {s:?}: port 0 accepted");
            }
        }
        Err(e) => assert_names(&e, "jump host spec"),
    }
    let (listen, target) = s.split_once(' ').unwrap_or((s, ""));
    if let Err(e) = parse_local_config(listen, target) {
        assert_names(&e, "local forward spec");
    }
    if let Err(e) = parse_remote_config(listen, Some(target)) {
        assert_names(&e, "remote forward spec");
    }
}

/// SOCKS4/4a/5: the pure parsers, their "need exactly N more bytes" promise, and the async
/// handshake driver over the same bytes followed by EOF.
pub fn socks(data: &[u8]) {
    use burrow::socks::{parse_greeting, parse_socks4, parse_socks5_request};
    check_incremental(data, parse_socks4);
    check_incremental(data, parse_greeting);
    check_incremental(data, parse_socks5_request);
    check_accept(data);
}

/// A parser that finished on `data` after `consumed` bytes must, on every shorter prefix, ask
/// for more bytes without asking past `consumed` (so the driver never reads pipelined data),
/// and `NeedMore(0)` must never happen (the driver would spin).
fn check_incremental<T: std::fmt::Debug>(
    data: &[u8],
    parse: fn(&[u8]) -> Result<burrow::socks::Parsed<T>, burrow::socks::SocksError>,
) {
    use burrow::socks::Parsed;
    let consumed = match parse(data) {
        Ok(Parsed::Done { consumed, .. }) => consumed,
        Ok(Parsed::NeedMore(n)) => {
            assert!(n >= 1, "NeedMore(0) for {data:?}");
            return;
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(
        (1..=data.len()).contains(&consumed),
        "consumed {consumed} of {}",
        data.len()
    );
    for k in 1..consumed {
        let prefix = data.get(..k).unwrap_or_default();
        match parse(prefix) {
            Ok(Parsed::NeedMore(n)) => assert!(
                n >= 1 && k + n <= consumed,
                "prefix of {k} bytes asks for {n} more, message is {consumed}: {data:?}"
            ),
            other => panic!("prefix of {k} bytes of a {consumed}-byte message gave {other:?}"),
        }
    }
}

/// Runs `socks::accept` over `data` then EOF: it must end (the input is finite) and, if it
/// accepts, only after reading a whole request.
fn check_accept(data: &[u8]) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return;
    };
    let mut stream = tokio::io::join(data, Vec::<u8>::new());
    let result = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), burrow::socks::accept(&mut stream)).await
    });
    let Ok(result) = result else {
        panic!("socks::accept did not finish on finite input {data:?}");
    };
    let written = stream.into_inner().1;
    match result {
        Ok(req) => {
            assert!(!req.target.to_string().is_empty());
            // SOCKS5 answered the method selection with "no authentication".
            if data.first() == Some(&5) {
                assert_eq!(written.get(..2), Some(&[5u8, 0][..]), "{data:?}");
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// authorized_keys text: errors name the file and a line that exists; accepted entries can be
/// checked against peers without panicking, and `from=` lists never panic.
pub fn authorized_keys(data: &[u8]) {
    use burrow::server::authorized_keys::{from_allows, AuthorizedKeys, AuthorizedKeysError};
    let Some(s) = text(data) else { return };
    let origin = Path::new("fuzz-authorized_keys");
    let lines = s.lines().count();
    match AuthorizedKeys::parse(s, origin) {
        Ok(keys) => {
            let now = SystemTime::now();
            for entry in &keys.keys {
                assert!((1..=lines).contains(&entry.line), "line {}", entry.line);
                for peer in peers() {
                    let _ = entry.check(peer, now);
                    let _ = keys.authorize(&entry.key, peer, now);
                }
            }
        }
        Err(e) => {
            if let AuthorizedKeysError::Line { line, .. } = &e {
                assert!((1..=lines).contains(line), "line {line} of {lines}");
            }
            assert_names(&e, "fuzz-authorized_keys");
        }
    }
    for peer in peers() {
        let _ = from_allows(s, peer);
    }
}

/// ssh_config text: parse, then (without `Match exec`) look a host up; one-line `-o` options,
/// pattern lists and `%` token expansion on the same text.
pub fn ssh_config(data: &[u8]) {
    use burrow::config::ssh_config::{
        expand_tokens, match_pattern_list, parse_option_line, MatchContext, SshConfig, Tokens,
    };
    let Some(s) = text(data) else { return };
    let lower = s.to_ascii_lowercase();
    if lower.contains("include") {
        return;
    }
    let origin = Path::new("fuzz-ssh_config");
    match SshConfig::parse_str(s, origin, Path::new("/nonexistent-burrow-fuzz")) {
        Ok(config) if !lower.contains("exec") => {
            let ctx = MatchContext {
                host: "example.com".into(),
                original_host: "example".into(),
                user: Some("alice".into()),
                local_user: "bob".into(),
            };
            let options = config.lookup(&ctx);
            for (key, args) in options.iter() {
                assert!(!key.is_empty());
                let _ = args.len();
            }
        }
        Ok(_) => {}
        Err(e) => assert_names(&e, "fuzz-ssh_config"),
    }
    let _ = parse_option_line(s);
    let _ = match_pattern_list("example.com", s);
    let tokens = Tokens {
        host: "example.com".into(),
        original_host: "example".into(),
        port: 22,
        remote_user: "alice".into(),
        local_user: "bob".into(),
        home: "/home/bob".into(),
        uid: 1000,
        local_hostname: "box.local".into(),
    };
    let _ = expand_tokens(s, &tokens);
}

/// tunnels.toml text: errors name the file; accepted tunnels produce ssh arguments for every
/// relay they list.
pub fn tunnels(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let path = Path::new("/fuzz/tunnels.toml");
    match burrow::config::tunnels::parse(s, path) {
        Ok(file) => {
            for t in &file.tunnels {
                for i in 0..t.servers.len() {
                    let _ = t.ssh_args(i);
                }
                let _ = t.fingerprint();
            }
        }
        Err(e) => assert_names(&e, "/fuzz/tunnels.toml"),
    }
}

/// serve.toml text: parsing and validation errors name the file.
pub fn serve_config(data: &[u8]) {
    use burrow::server::config::{parse_file, ServeConfig, ServeOverrides};
    let Some(s) = text(data) else { return };
    let path = Path::new("fuzz-serve.toml");
    match parse_file(s, path) {
        Ok(file) => {
            if let Err(e) =
                ServeConfig::from_parts(file, &ServeOverrides::default(), "fuzz-serve.toml")
            {
                assert_names(&e, "fuzz-serve.toml");
            }
        }
        Err(e) => assert_names(&e, "fuzz-serve.toml"),
    }
}
