//! Table-driven tests for the forward and destination parsers; the expected results follow
//! OpenSSH's `parse_forward`/`parse_jump`/`parse_uri` unless a comment says otherwise.

use super::*;

fn tcp(host: &str, port: u16) -> Endpoint {
    Endpoint::Tcp {
        host: host.into(),
        port,
    }
}

fn unix(path: &str) -> Endpoint {
    Endpoint::Unix(path.into())
}

fn at(bind: Option<&str>, port: u16) -> Listen {
    Listen::Tcp {
        bind: bind.map(str::to_owned),
        port,
    }
}

fn unix_at(path: &str) -> Listen {
    Listen::Unix(path.into())
}

/// The problem `result` reports, after checking that its error quotes `input`.
fn problem<T: std::fmt::Debug>(result: Result<T, SpecError>, input: &str) -> Problem {
    match result {
        Ok(value) => panic!("{input:?} parsed as {value:?}, expected an error"),
        Err(err) => {
            assert_eq!(err.spec, input, "error must quote the input");
            err.problem
        }
    }
}

/// Checks that `parse` rejects every input of `cases` with the problem next to it.
pub(super) fn assert_rejects<T: std::fmt::Debug, S: AsRef<str>>(
    parse: impl Fn(&str) -> Result<T, SpecError>,
    cases: &[(S, Problem)],
) {
    for (spec, want) in cases {
        let spec = spec.as_ref();
        assert_eq!(problem(parse(spec), spec), *want, "{spec:?}");
    }
}

fn count(got: usize, expected: &'static str) -> Problem {
    Problem::FieldCount { got, expected }
}

pub(super) fn not_number(s: &str) -> Problem {
    Problem::PortNotNumber(s.into())
}

const TARGET_PORT: &str = "a forward target";

#[test]
fn local_accepts_openssh_forms() {
    let cases: &[(&str, Listen, Endpoint)] = &[
        ("8080:host:80", at(None, 8080), tcp("host", 80)),
        (
            "127.0.0.1:8080:host:80",
            at(Some("127.0.0.1"), 8080),
            tcp("host", 80),
        ),
        (
            "[::1]:8080:[fe80::1]:80",
            at(Some("::1"), 8080),
            tcp("fe80::1", 80),
        ),
        (":8080:host:80", at(Some(""), 8080), tcp("host", 80)),
        ("*:8080:host:80", at(Some("*"), 8080), tcp("host", 80)),
        ("[]:8080:host:80", at(Some(""), 8080), tcp("host", 80)),
        (
            "localhost:8080:[host]:80",
            at(Some("localhost"), 8080),
            tcp("host", 80),
        ),
        ("/tmp/s:host:80", unix_at("/tmp/s"), tcp("host", 80)),
        ("8080:/run/app.sock", at(None, 8080), unix("/run/app.sock")),
        (
            "lo:8080:/run/app.sock",
            at(Some("lo"), 8080),
            unix("/run/app.sock"),
        ),
        ("/tmp/a:/tmp/b", unix_at("/tmp/a"), unix("/tmp/b")),
        ("[/tmp/a:b]:host:80", unix_at("/tmp/a:b"), tcp("host", 80)),
        ("/tmp/a\\:b:host:80", unix_at("/tmp/a:b"), tcp("host", 80)),
        // Leading whitespace is skipped; a2port (strtonum) skips it and allows '+'.
        (" \t8080:host:80", at(None, 8080), tcp("host", 80)),
        ("8080:host: 80", at(None, 8080), tcp("host", 80)),
        ("+8080:host:080", at(None, 8080), tcp("host", 80)),
        ("1:host:65535", at(None, 1), tcp("host", 65535)),
        // OpenSSH stops at the end of the string, so one trailing ':' is harmless.
        ("8080:host:80:", at(None, 8080), tcp("host", 80)),
        ("a:8080:host:80:", at(Some("a"), 8080), tcp("host", 80)),
    ];
    for (spec, listen, target) in cases {
        let want = LocalForward {
            listen: listen.clone(),
            target: target.clone(),
        };
        assert_eq!(parse_local(spec), Ok(want), "{spec:?}");
    }
}

#[test]
fn local_rejects_malformed() {
    let long_host = format!("8080:{}:80", "h".repeat(1025));
    let long_path = format!("/{}:host:80", "p".repeat(107));
    let cases: Vec<(&str, Problem)> = vec![
        ("", Problem::Empty),
        ("   ", Problem::Empty),
        ("8080", count(1, FORWARD_FORMS)),
        ("8080:host", count(2, FORWARD_FORMS)),
        ("8080:host:", count(2, FORWARD_FORMS)),
        (":", count(1, FORWARD_FORMS)),
        ("1:2:3:4:5", Problem::TooManyFields),
        ("8080:::1:80", Problem::TooManyFields),
        ("8080:::1", not_number("")),
        ("8080:host:http", not_number("http")),
        ("x:host:80", not_number("x")),
        ("8080:host:-1", not_number("-1")),
        ("8080:host:80 ", not_number("80 ")),
        ("8080:host:0x50", not_number("0x50")),
        ("8080:host:70000", Problem::PortOutOfRange("70000".into())),
        (
            "8080:host:99999999999999999999",
            Problem::PortOutOfRange("99999999999999999999".into()),
        ),
        ("8080:host:0", Problem::ZeroPort(TARGET_PORT)),
        ("8080::80", Problem::EmptyHost("the target host")),
        (
            "[::1:8080:host:80",
            Problem::UnclosedBracket("[::1:8080:host:80".into()),
        ),
        (
            "[::1]x:8080:host:80",
            Problem::TextAfterBracket("[::1]x:8080:host:80".into()),
        ),
        ("8080:host:80\\", Problem::TrailingBackslash),
        ("8080:ho st:80", Problem::BadHostChars("ho st".into())),
        ("8080:h\u{7}:80", Problem::BadHostChars("h\u{7}".into())),
        (
            "8080:a/b:80",
            Problem::UnexpectedPath("a/b".into(), "a host name"),
        ),
        (
            "/tmp/s:8080:host:80",
            Problem::UnexpectedPath("/tmp/s".into(), "a host name"),
        ),
        (&long_host, Problem::HostTooLong(1025)),
        (
            &long_path,
            Problem::PathTooLong(format!("/{}", "p".repeat(107))),
        ),
    ];
    assert_rejects(parse_local, &cases);
}

#[test]
fn error_messages_name_input_and_problem() {
    let cases = [
        (
            parse_local("8080:host:y"),
            r#"invalid local forward spec "8080:host:y": port "y" is not a number (service names are not supported)"#,
        ),
        (
            parse_local("x:y"),
            r#"invalid local forward spec "x:y": 2 ':'-separated field(s) given, expected [bind:]port:host:hostport, [bind:]port:path, path:host:hostport or path:path"#,
        ),
    ];
    for (result, want) in cases {
        assert_eq!(result.unwrap_err().to_string(), want);
    }
    let err = parse_local_config("8080", "host").unwrap_err();
    assert!(err
        .to_string()
        .starts_with(r#"invalid local forward spec "8080 host": "#));
}

#[test]
fn remote_accepts_forward_and_reverse_dynamic() {
    let cases: &[(&str, Listen, Option<Endpoint>)] = &[
        (
            "8080:localhost:22",
            at(None, 8080),
            Some(tcp("localhost", 22)),
        ),
        ("0:localhost:22", at(None, 0), Some(tcp("localhost", 22))),
        (
            "*:0:localhost:22",
            at(Some("*"), 0),
            Some(tcp("localhost", 22)),
        ),
        // An alias on a burrow relay (`remote = ["a-ssh:22:localhost:22"]` in tunnels.toml).
        (
            "a-ssh:22:localhost:22",
            at(Some("a-ssh"), 22),
            Some(tcp("localhost", 22)),
        ),
        (
            "[::1]:8080:[fe80::1]:80",
            at(Some("::1"), 8080),
            Some(tcp("fe80::1", 80)),
        ),
        (
            "/tmp/s:localhost:22",
            unix_at("/tmp/s"),
            Some(tcp("localhost", 22)),
        ),
        (
            "8080:/run/app.sock",
            at(None, 8080),
            Some(unix("/run/app.sock")),
        ),
        ("/tmp/a:/tmp/b", unix_at("/tmp/a"), Some(unix("/tmp/b"))),
        ("1080", at(None, 1080), None),
        ("1080:", at(None, 1080), None),
        ("0", at(None, 0), None),
        ("*:1080", at(Some("*"), 1080), None),
        ("[::]:0", at(Some("::"), 0), None),
    ];
    for (spec, listen, target) in cases {
        let want = RemoteForward {
            listen: listen.clone(),
            target: target.clone(),
        };
        assert_eq!(parse_remote(spec), Ok(want), "{spec:?}");
    }
}

#[test]
fn remote_rejects_malformed() {
    let cases: Vec<(&str, Problem)> = vec![
        ("", Problem::Empty),
        ("/tmp/s", Problem::UnixReverseDynamic),
        (
            "/tmp/s:1080",
            Problem::UnexpectedPath("/tmp/s".into(), "a host name"),
        ),
        ("[::1]", not_number("::1")),
        ("8080:host:0", Problem::ZeroPort(TARGET_PORT)),
        ("70000", Problem::PortOutOfRange("70000".into())),
        ("8080:host:80:x:y", Problem::TooManyFields),
    ];
    assert_rejects(parse_remote, &cases);
}

#[test]
fn dynamic_forms() {
    let ok: &[(&str, Listen)] = &[
        ("1080", at(None, 1080)),
        ("127.0.0.1:1080", at(Some("127.0.0.1"), 1080)),
        ("[::1]:1080", at(Some("::1"), 1080)),
        (":1080", at(Some(""), 1080)),
        ("*:1080", at(Some("*"), 1080)),
        ("localhost:1080:", at(Some("localhost"), 1080)),
        ("/tmp/socks.sock", unix_at("/tmp/socks.sock")),
    ];
    for (spec, listen) in ok {
        let want = DynamicForward {
            listen: listen.clone(),
        };
        assert_eq!(parse_dynamic(spec), Ok(want), "{spec:?}");
    }
    let bad: Vec<(&str, Problem)> = vec![
        ("", Problem::Empty),
        ("socks", not_number("socks")),
        ("a:b:c", count(3, DYNAMIC_FORMS)),
        ("1080:/x", not_number("/x")),
        (
            "/tmp/a:1080",
            Problem::UnexpectedPath("/tmp/a".into(), "a host name"),
        ),
        ("65536", Problem::PortOutOfRange("65536".into())),
    ];
    assert_rejects(parse_dynamic, &bad);
}

#[test]
fn config_forms_join_their_two_arguments() {
    let local = [
        ("8080", "host:80", at(None, 8080), tcp("host", 80)),
        (
            "[::1]:8080",
            "[::1]:80",
            at(Some("::1"), 8080),
            tcp("::1", 80),
        ),
        ("8080", "/run/s", at(None, 8080), unix("/run/s")),
        ("/tmp/l", "host:80", unix_at("/tmp/l"), tcp("host", 80)),
    ];
    for (listen_arg, target_arg, listen, target) in local {
        let got = parse_local_config(listen_arg, target_arg);
        assert_eq!(
            got,
            Ok(LocalForward { listen, target }),
            "{listen_arg} {target_arg}"
        );
    }
    let err = problem(parse_local_config("8080", ""), "8080 ");
    assert_eq!(err, Problem::EmptyHost("the target argument"));

    let remote = [
        (
            "8080",
            Some("localhost:22"),
            at(None, 8080),
            Some(tcp("localhost", 22)),
        ),
        ("1080", None, at(None, 1080), None),
        ("*:0", Some(""), at(Some("*"), 0), None),
    ];
    for (listen_arg, target_arg, listen, target) in remote {
        let got = parse_remote_config(listen_arg, target_arg);
        assert_eq!(
            got,
            Ok(RemoteForward { listen, target }),
            "{listen_arg} {target_arg:?}"
        );
    }
    let err = problem(parse_remote_config("/tmp/s", None), "/tmp/s");
    assert_eq!(err, Problem::UnixReverseDynamic);
}

#[test]
fn stdio_forms() {
    let ok = [
        ("host:22", "host", 22),
        ("[::1]:22", "::1", 22),
        (" h:+22", "h", 22),
    ];
    for (spec, host, port) in ok {
        assert_eq!(parse_stdio(spec), Ok((host.to_owned(), port)), "{spec:?}");
    }
    let bad: Vec<(&str, Problem)> = vec![
        ("host:0", Problem::ZeroPort("a -W target")),
        ("host", count(1, "host:port")),
        ("a:b:c", count(3, "host:port")),
        ("/tmp/s", Problem::UnixStdio),
        (":22", Problem::EmptyHost("the target host")),
        ("host:ssh", not_number("ssh")),
    ];
    assert_rejects(parse_stdio, &bad);
}

#[test]
fn bind_target_follows_openssh_client_rules() {
    let cases = [
        (None, false, BindTarget::Loopback),
        (None, true, BindTarget::Any),
        (Some(""), false, BindTarget::Any),
        (Some("*"), false, BindTarget::Any),
        (Some("localhost"), true, BindTarget::Loopback),
        (Some("0.0.0.0"), false, BindTarget::Host("0.0.0.0".into())),
        (Some("::1"), true, BindTarget::Host("::1".into())),
    ];
    for (bind, gateway_ports, want) in cases {
        let bind = bind.map(str::to_owned);
        assert_eq!(
            bind_target(&bind, gateway_ports),
            want,
            "{bind:?} -g={gateway_ports}"
        );
    }
}

#[test]
fn display_prints_openssh_style() {
    let cases = [
        ("8080:host:80", "8080:host:80"),
        ("[::1]:8080:[fe80::1]:80", "[::1]:8080:[fe80::1]:80"),
        (":8080:host:80", "*:8080:host:80"),
        ("/tmp/s:host:80", "/tmp/s:host:80"),
        ("8080:/run/app.sock", "8080:/run/app.sock"),
    ];
    for (spec, shown) in cases {
        let parsed = parse_local(spec).unwrap();
        assert_eq!(parsed.to_string(), shown);
        assert_eq!(
            parse_local(shown).map(|f| bind_target(&bind_of(&f.listen), false)),
            Ok(bind_target(&bind_of(&parsed.listen), false)),
            "{shown} reparses"
        );
    }
    assert_eq!(parse_remote("0").unwrap().to_string(), "0");
    assert_eq!(parse_dynamic("[::]:1080").unwrap().to_string(), "[::]:1080");
}

fn bind_of(listen: &Listen) -> Option<String> {
    match listen {
        Listen::Tcp { bind, .. } => bind.clone(),
        Listen::Unix(_) => None,
    }
}

/// Every short string over the syntax's special characters goes through every parser: none
/// may panic, and every error must quote its input.
#[test]
fn no_input_panics() {
    let alphabet = [
        ":", "[", "]", "/", "\\", "*", "0", "9", "a", "@", ",", " ", "ssh://", "\u{e9}",
    ];
    let mut inputs = vec![String::new()];
    for _ in 0..4 {
        let longer: Vec<String> = inputs
            .iter()
            .flat_map(|s| alphabet.iter().map(move |a| format!("{s}{a}")))
            .collect();
        inputs.extend(longer.into_iter().filter(|s| s.len() <= 12));
        inputs.dedup();
    }
    for s in &inputs {
        let checks = [
            parse_local(s).err(),
            parse_remote(s).err(),
            parse_dynamic(s).err(),
            parse_stdio(s).err(),
            parse_jump(s).err(),
            parse_destination(s).err(),
        ];
        // The config forms quote both arguments as "listen target".
        if let Err(err) = parse_local_config(s, s) {
            assert_eq!(err.spec, format!("{s} {s}"));
        }
        match parse_remote_config("1", Some(s)) {
            Err(err) if !s.is_empty() => assert_eq!(err.spec, format!("1 {s}")),
            _ => {}
        }
        for err in checks.into_iter().flatten() {
            assert_eq!(&err.spec, s);
        }
    }
}

#[test]
fn local_and_dynamic_listen_port_zero_is_a_burrow_extension() {
    let l = parse_local("127.0.0.1:0:host:80").unwrap();
    assert_eq!(
        l.listen,
        Listen::Tcp {
            bind: Some("127.0.0.1".into()),
            port: 0
        }
    );
    let d = parse_dynamic("0").unwrap();
    assert_eq!(
        d.listen,
        Listen::Tcp {
            bind: None,
            port: 0
        }
    );
}

#[test]
fn star_and_empty_bind_name_the_same_listener() {
    let tcp = |bind: Option<&str>, port| Listen::Tcp {
        bind: bind.map(str::to_string),
        port,
    };
    assert!(tcp(Some("*"), 80).same_as(&tcp(Some(""), 80)));
    assert!(tcp(Some("localhost"), 80).same_as(&tcp(Some("localhost"), 80)));
    assert!(
        !tcp(Some("*"), 80).same_as(&tcp(None, 80)),
        "not given is not all"
    );
    assert!(!tcp(Some("*"), 80).same_as(&tcp(Some("*"), 81)));
    assert!(!tcp(Some("*"), 80).same_as(&Listen::Unix("/s".into())));
}
