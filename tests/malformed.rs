//! Malformed input through the real binary, table-driven: every bad argument or config line
//! ends the program at once with a non-zero status and one message that names where the problem
//! is (the argument, or the file and line) and what it is. Never a panic, never a hang.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(20);

/// Runs `burrow ARGS` in `dir`; returns (exit code, stderr). Fails on a timeout or a panic.
fn run(dir: &Path, name: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(burrow_bin());
    cmd.current_dir(dir).env_remove("SSH_AUTH_SOCK").args(args);
    let (st, _, err) = run_with_timeout(cmd, dir, name, LIMIT);
    let st = st.unwrap_or_else(|| panic!("burrow {args:?} did not finish within {LIMIT:?}"));
    assert!(
        !err.contains("panicked"),
        "burrow {args:?} panicked:\n{err}"
    );
    (st.code(), err)
}

fn expect(dir: &Path, name: &str, args: &[&str], code: i32, needles: &[&str]) {
    let (got, err) = run(dir, name, args);
    assert_eq!(got, Some(code), "burrow {args:?}: status, stderr:\n{err}");
    for n in needles {
        assert!(
            err.contains(n),
            "burrow {args:?}: stderr lacks {n:?}:\n{err}"
        );
    }
}

#[test]
fn bad_ssh_arguments_name_the_argument_and_the_problem() {
    let dir = test_dir();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["-L", "8080"],
            &["invalid local forward spec \"8080\"", "field"],
        ),
        (&["-L", "99999:h:80"], &["\"99999:h:80\"", "out of range"]),
        (&["-L", "1:[::1:2"], &["\"1:[::1:2\"", "no matching ']'"]),
        (
            &["-R", "abc:h:1"],
            &["invalid remote forward spec", "\"abc\" is not a number"],
        ),
        (
            &["-D", ":x"],
            &["invalid dynamic forward spec \":x\"", "\"x\""],
        ),
        (
            &["-W", "host"],
            &["invalid stdio forward spec \"host\"", "expected host:port"],
        ),
        (
            &["-J", "[::1"],
            &["invalid jump host spec \"[::1\"", "no matching ']'"],
        ),
        (&["-p", "0"], &["Port", "\"0\"", "1-65535"]),
        (&["-o", "Port=abc"], &["-o \"Port=abc\"", "not a number"]),
        (
            &["-o", "ServerAliveInterval=-1"],
            &["ServerAliveInterval \"-1\"", "expected a time"],
        ),
        (
            &["-o", "ExitOnForwardFailure=maybe"],
            &["ExitOnForwardFailure \"maybe\"", "expected yes"],
        ),
        (
            &["-o", "LocalForward=8080 nohostport"],
            &["LocalForward", "local forward spec"],
        ),
        (
            &["-o", "StrictHostKeyChecking"],
            &["StrictHostKeyChecking", "no argument after keyword"],
        ),
    ];
    for (i, (args, needles)) in cases.iter().enumerate() {
        let mut all = vec!["ssh", "-F", "/dev/null", "-N"];
        all.extend_from_slice(args);
        all.push("user@127.0.0.1");
        expect(dir.path(), &format!("ssh{i}"), &all, 255, needles);
    }
    for (i, dest) in ["user@", "@host", "a b", "-oops"].iter().enumerate() {
        expect(
            dir.path(),
            &format!("dest{i}"),
            &["ssh", "-F", "/dev/null", "-N", "--", dest],
            255,
            &[&format!("invalid destination \"{dest}\"")],
        );
    }
}

#[test]
fn bad_ssh_config_lines_name_the_file_and_line() {
    let dir = test_dir();
    let cases: &[(&str, &[&str])] = &[
        (
            "Host x\n  Port abc\n",
            &["line 2", "Port \"abc\" is not a number"],
        ),
        (
            "Match\n",
            &["line 1", "no argument after keyword \"Match\""],
        ),
        (
            "Host x\n  LocalForward 8080\n",
            &["line 2", "LocalForward is missing an argument"],
        ),
        (
            "Host x\n  LocalForward 8080 nohostport\n",
            &["line 2", "invalid local forward spec"],
        ),
        (
            "Host x\n  RemoteForward 99999 h:1\n",
            &["line 2", "invalid remote forward spec", "out of range"],
        ),
        (
            "Host x\n  DynamicForward a:b:c\n",
            &["line 2", "invalid dynamic forward spec"],
        ),
        (
            "Host x\n  ProxyJump [bad\n",
            &["line 2", "invalid jump host spec \"[bad\""],
        ),
        (
            "Host x\n  ConnectTimeout 5q\n",
            &["line 2", "ConnectTimeout \"5q\""],
        ),
        ("Host x\n  Port 22 23\n", &["line 2", "extra arguments"]),
        (
            "Match bogus x\n",
            &["line 1", "unknown Match criterion \"bogus\""],
        ),
        (
            "Host x\n  IdentityFile ~/%Z\n",
            &["line 2", "IdentityFile \"~/%Z\"", "unknown token \"%Z\""],
        ),
    ];
    for (i, (text, needles)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("config{i}"));
        std::fs::write(&path, text).unwrap();
        let file = path.to_str().unwrap();
        let mut want = vec![file];
        want.extend_from_slice(needles);
        expect(
            dir.path(),
            &format!("cfg{i}"),
            &["ssh", "-F", file, "-N", "x"],
            255,
            &want,
        );
    }
}

#[test]
fn an_unknown_dash_o_option_is_reported_not_silently_dropped() {
    let dir = test_dir();
    // Port 1 on loopback refuses at once; the warning comes before the connection attempt.
    let (code, err) = run(
        dir.path(),
        "unknown-o",
        &[
            "ssh",
            "-F",
            "/dev/null",
            "-o",
            "NoSuchOption=1",
            "-p",
            "1",
            "-N",
            "u@127.0.0.1",
        ],
    );
    assert_eq!(code, Some(255));
    assert!(
        err.contains("-o \"NoSuchOption=1\": burrow does not use this option; ignored"),
        "{err}"
    );
}

#[test]
fn bad_serve_settings_name_the_flag_or_file_and_the_problem() {
    let dir = test_dir();
    let d = dir.path();
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFmtULleTLm8Eb6nio0w3CORgH321ApT6Bm4IV5RrAwI";
    let write = |name: &str, text: &str, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p.to_str().unwrap().to_string()
    };
    let good_keys = write("ak-good", &format!("{key} ok\n"), 0o600);
    let files = [
        write(
            "unknown.toml",
            "listen = \"127.0.0.1:0\"\nlisten_port = 3\n",
            0o600,
        ),
        write("type.toml", "[limits]\nmax_startups = \"many\"\n", 0o600),
        write("permit.toml", "permit_open = [\"db:notaport\"]\n", 0o600),
        write(
            "ak-option",
            &format!("{key} ok\npermitopen=nope {key}\n"),
            0o600,
        ),
        write("ak-unknown", &format!("\n\nno-such-option {key}\n"), 0o600),
        write("ak-mode", &format!("{key}\n"), 0o666),
        write("ak-key", "ssh-ed25519 AAAAnotbase64!!\n", 0o600),
    ];
    let base = ["serve", "--host-key", "hk"];
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--listen", "nonsense"],
            vec!["listen", "\"nonsense\" is not an address:port"],
        ),
        (
            vec!["--gateway-ports", "maybe"],
            vec!["gateway_ports", "\"maybe\""],
        ),
        (
            vec!["--config", &files[0]],
            vec![&files[0], "line 2", "unknown field `listen_port`"],
        ),
        (
            vec!["--config", &files[1]],
            vec![&files[1], "line 2", "max_startups"],
        ),
        (
            vec!["--config", &files[2]],
            vec![&files[2], "permit_open", "\"db:notaport\""],
        ),
        (
            vec!["--config", "missing.toml"],
            vec!["cannot read missing.toml"],
        ),
        (
            vec!["--authorized-keys", &files[3]],
            vec![&files[3], "line 2", "permitopen"],
        ),
        (
            vec!["--authorized-keys", &files[4]],
            vec![&files[4], "line 3", "unknown option \"no-such-option\""],
        ),
        (
            vec!["--authorized-keys", &files[5]],
            vec![&files[5], "writable by group or others"],
        ),
        (
            vec!["--authorized-keys", &files[6]],
            vec![&files[6], "line 1", "invalid ssh-ed25519 key"],
        ),
        (
            vec!["--authorized-keys", "missing-keys"],
            vec!["missing-keys"],
        ),
    ];
    for (i, (extra, needles)) in cases.iter().enumerate() {
        let mut args: Vec<&str> = base.to_vec();
        if !extra.contains(&"--authorized-keys") {
            args.extend(["--authorized-keys", good_keys.as_str()]);
        }
        if !extra.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        args.extend(extra.iter().copied());
        expect(d, &format!("serve{i}"), &args, 1, needles);
    }
    // "cannot read missing.toml: <reason>" appears once, not twice.
    let (_, err) = run(d, "serve-dup", &["serve", "--config", "missing.toml"]);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn bad_tunnels_files_name_the_line_tunnel_and_field() {
    let dir = test_dir();
    let d = dir.path();
    let cases: &[(&str, &[&str])] = &[
        ("[[tunnel]]\nserver = \"u@h\"\nremote = [\"8087:localhost\"]\n", &["line 3", "tunnel[0]", "remote[0]", "invalid remote forward spec"]),
        ("[[tunnel]]\nservers = \"u@h\"\n", &["line 2", "servers"]),
        ("[[tunnel]]\nserver = \"u@h\"\nkeepalive_interval = \"3 parsecs\"\nremote = [\"1:h:2\"]\n", &["line 3", "keepalive_interval", "\"3 parsecs\""]),
        ("[[tunnel]]\nremote = [\"1:h:2\"]\n", &["line 1", "tunnel[0]", "server: missing"]),
        ("[[tunnel]\n", &["line 1"]),
        ("[[tunnel]]\nname = \"a\"\nserver = \"u@h\"\nremote = [\"1:h:2\"]\nbogus = 1\n", &["line 5", "bogus"]),
    ];
    for (i, (text, needles)) in cases.iter().enumerate() {
        let path = d.join(format!("tunnels{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let file = path.to_str().unwrap();
        let control = d.join(format!("ctl{i}"));
        let mut want = vec![file];
        want.extend_from_slice(needles);
        expect(
            d,
            &format!("up{i}"),
            &["up", "--control", control.to_str().unwrap(), file],
            1,
            &want,
        );
    }
}
