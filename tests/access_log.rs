//! The relay's access log, driven by real OpenSSH: one line per forwarded connection when it
//! closes, written to `access_log = "FILE"`, reopened on SIGHUP (logrotate) without losing or
//! splitting a line, with peer text escaped so no line can be forged, and matched by the
//! fail2ban filter the README documents, run through Debian's `fail2ban-regex`.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::burrow::{Relay, UP_TIMEOUT};
use common::*;
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A comment written to look like the fields the filter reads, with quotes, `=` and non-ASCII:
/// authorized_keys comments are text the key's owner may have chosen.
const HOSTILE_COMMENT: &str = "evil\" from=192.0.2.66 port=1 é";

/// The same comment as the log must show it.
const ESCAPED_COMMENT: &str = "comment=\"evil\\x22 from\\x3d192.0.2.66 port\\x3d1 \\xc3\\xa9\"";

/// An authorized_keys line for `key` with [`HOSTILE_COMMENT`].
fn hostile_line(key: &Keypair) -> String {
    let mut words = key.public_line.split_whitespace();
    let (kind, blob) = (words.next().unwrap(), words.next().unwrap());
    format!("{kind} {blob} {HOSTILE_COMMENT}")
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits (20 s at most) until the files hold `n` lines together; returns them, per file.
async fn wait_lines(files: &[&Path], n: usize, relay: &Relay) -> Vec<Vec<String>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got: Vec<Vec<String>> = files.iter().map(|f| lines(f)).collect();
        let total: usize = got.iter().map(Vec::len).sum();
        if total >= n {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{total} of {n} access log lines: {got:#?}\nrelay: {}",
            relay.child.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A relay (key with [`HOSTILE_COMMENT`], access log to `log` or stderr) and a publisher:
/// stock `ssh -N -R 127.0.0.1:0:ECHO`.
struct Setup {
    dir: tempfile::TempDir,
    key: Keypair,
    echo: Service,
    relay: Relay,
    /// The access log file (unused for stderr).
    log: PathBuf,
    /// The -R listener's port.
    port: u16,
    _publisher: ChildGuard,
}

/// Starts a [`Setup`]; with a file, returns once the readiness probe's connection (from
/// `wait_listening`) is logged, so the test's own lines follow it.
async fn setup(to_file: bool) -> Setup {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let echo = echo_server().await;
    let log = dir.path().join("access.log");
    let config = to_file.then(|| format!("access_log = \"{}\"\n", log.display()));
    let authorized = [hostile_line(&key)];
    let relay = Relay::start(dir.path(), "relay", &authorized, config.as_deref(), &[]).await;
    let mut cmd = relay.ssh(&key);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("127.0.0.1:0:{}", echo.hostport()))
        .arg("tunnel@127.0.0.1");
    let mut child = spawn_logged(cmd, dir.path(), "ssh-R");
    let line = child
        .stderr()
        .wait_for_line_async("Allocated port", UP_TIMEOUT)
        .await;
    let port = line
        .as_deref()
        .and_then(parse_allocated_port)
        .unwrap_or_else(|| panic!("no allocated port: {}", child.stderr_text()));
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_listening(&mut child, addr, UP_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("-R {addr}: {e}"));
    if to_file {
        wait_lines(&[&log], 1, &relay).await;
    }
    Setup {
        dir,
        key,
        echo,
        relay,
        log,
        port,
        _publisher: child,
    }
}

/// Waits (at most [`UP_TIMEOUT`]) until the relay logs `what`.
async fn relay_logs(relay: &Relay, what: &str) {
    relay
        .child
        .stderr()
        .wait_for_line_async(what, UP_TIMEOUT)
        .await
        .unwrap_or_else(|| {
            panic!(
                "the relay never logged {what:?}:\n{}",
                relay.child.stderr_text()
            )
        });
}

/// One visitor: sends `n` bytes through the -R port to the echo service, reads them back,
/// closes. Returns its own address (the log's `from`).
async fn visit(port: u16, n: usize) -> SocketAddr {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let visit = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let me = s.local_addr()?;
        let data = det_bytes(port.into(), n);
        s.write_all(&data).await?;
        let mut back = vec![0u8; n];
        s.read_exact(&mut back).await?;
        assert_eq!(back, data, "echo through the relay");
        s.shutdown().await?;
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await?;
        std::io::Result::Ok(me)
    };
    tokio::time::timeout(Duration::from_secs(15), visit)
        .await
        .expect("visit within 15 s")
        .expect("visit")
}

/// A complete close line of a -R connection: timestamp, tag, the fields in their order, one
/// line; `from` the visitor.
fn assert_close_line(line: &str, from: SocketAddr, port: u16, key: &Keypair, n: usize) {
    let (stamp, rest) = line.split_once(' ').unwrap_or_default();
    assert!(
        stamp.len() == 24 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "timestamp: {line}"
    );
    let want = format!(
        "burrow-access: close from=127.0.0.1 port={} kind=forwarded session=",
        from.port()
    );
    assert!(rest.starts_with(&want), "{line}\nwanted {want}");
    for field in [
        format!(" key={} ", key.fingerprint()),
        format!(" {ESCAPED_COMMENT} "),
        format!(" listener=\"127.0.0.1:{port}\" to=\"127.0.0.1:"),
        format!(" up={n} down={n} secs="),
    ] {
        assert!(line.contains(&field), "{line}\nwanted {field}");
    }
    assert!(line.ends_with(" end=closed"), "{line}");
    assert_eq!(line.matches("from=").count(), 1, "{line}");
}

/// Each -R connection through the relay, from stock `ssh -R`, leaves one close line with the
/// visitor's address, the publisher's key and its escaped comment, the listener, the bytes
/// both ways and why it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_forwarded_connection_leaves_one_line_when_it_closes() {
    let s = setup(true).await;
    let (key, relay, log, port) = (&s.key, &s.relay, s.log.as_path(), s.port);
    let first = visit(port, 1000).await;
    let second = visit(port, 70_000).await;
    let got = wait_lines(&[log], 3, relay).await.remove(0);
    assert_eq!(got.len(), 3, "{got:#?}");
    let line_of = |from: SocketAddr| {
        got.iter()
            .find(|l| l.contains(&format!(" port={} ", from.port())))
            .unwrap_or_else(|| panic!("no line for {from}: {got:#?}"))
    };
    assert_close_line(line_of(first), first, port, key, 1000);
    assert_close_line(line_of(second), second, port, key, 70_000);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(log).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode & 0o137,
        0,
        "created {mode:o}: no write for group, nothing for others"
    );
}

/// Without `access_log` the lines go to stderr (the journal under systemd), whole, among the
/// relay's other messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_file_the_lines_go_to_stderr() {
    let s = setup(false).await;
    let (key, relay, port) = (&s.key, &s.relay, s.port);
    let from = visit(port, 300).await;
    let want = format!(
        " burrow-access: close from=127.0.0.1 port={} kind=forwarded ",
        from.port()
    );
    let line = relay
        .child
        .stderr()
        .wait_for_line_async(&want, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no {want} on stderr:\n{}", relay.child.stderr_text()));
    assert_close_line(line.trim_end(), from, port, key, 300);
}

/// An access log the relay cannot open stops it at start, with the file named.
#[test]
fn an_access_log_that_cannot_be_opened_stops_the_relay() {
    let dir = test_dir();
    let config = dir.path().join("serve.toml");
    let log = dir.path().join("missing-dir/access.log");
    std::fs::write(&config, format!("access_log = \"{}\"\n", log.display())).unwrap();
    let authorized = dir.path().join("authorized_keys");
    std::fs::write(&authorized, "").unwrap();
    let mut cmd = std::process::Command::new(burrow_bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--host-key")
        .arg(dir.path().join("host_key"))
        .arg("--authorized-keys")
        .arg(&authorized)
        .env("HOME", dir.path());
    let (status, _, err) = run_with_timeout(cmd, dir.path(), "relay", Duration::from_secs(20));
    assert!(status.is_some_and(|s| !s.success()), "{status:?} {err}");
    assert!(
        err.contains(&format!("cannot open access log {}", log.display())),
        "{err}"
    );
}

/// logrotate's way: rename the file, SIGHUP. Lines of connections that closed before the
/// signal stay in the renamed file, later ones go to a new file by the old name, and with
/// connections closing all through the rotation no line is lost, doubled or split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_the_file_without_losing_or_splitting_a_line() {
    let s = setup(true).await;
    let (dir, relay, log, port) = (&s.dir, &s.relay, s.log.as_path(), s.port);
    let rotated = dir.path().join("access.log.1");
    for _ in 0..3 {
        visit(port, 100).await;
    }
    wait_lines(&[log], 4, relay).await;
    std::fs::rename(log, &rotated).unwrap();
    // Not reopened yet: the open file is the renamed one.
    visit(port, 100).await;
    wait_lines(&[&rotated], 5, relay).await;
    assert!(!log.exists(), "nothing reopened the file before SIGHUP");
    // Connections keep closing while the file is rotated.
    let busy = tokio::spawn(async move {
        let mut n = 0;
        for _ in 0..40 {
            visit(port, 3000).await;
            n += 1;
        }
        n
    });
    // Signal in the middle of them.
    wait_lines(&[&rotated], 5 + 10, relay).await;
    let reloads = || {
        relay
            .child
            .stderr_text()
            .matches("reloaded authorized keys")
            .count()
    };
    relay.child.signal(Signal::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while reloads() < 1 {
        assert!(std::time::Instant::now() < deadline, "no reload logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let during = busy.await.unwrap();
    // Reopened: a connection that closes now lands in the new file.
    let last = visit(port, 100).await;
    let total = 5 + during + 1;
    let got = wait_lines(&[&rotated, log], total, relay).await;
    let (old, new) = (&got[0], &got[1]);
    assert_eq!(old.len() + new.len(), total, "old {old:#?}\nnew {new:#?}");
    assert!(
        new.last()
            .is_some_and(|l| l.contains(&format!(" port={} ", last.port()))),
        "the last connection's line is the new file's last: {new:#?}"
    );
    let mut ports: Vec<&str> = Vec::new();
    for line in old.iter().chain(new.iter()) {
        assert!(
            line.contains(" burrow-access: close from=127.0.0.1 port=")
                && line.ends_with(" end=closed")
                && line.matches("burrow-access: close").count() == 1,
            "a whole line: {line}"
        );
        ports.push(line.split(" port=").nth(1).unwrap_or_default());
    }
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), total, "each connection once");
}

/// The README's fail2ban filter (read from the README itself), run by Debian's
/// `fail2ban-regex` over a real access log: refused requests count against the address that
/// made them — not against an address a key comment or a requested host name spells out —
/// and close lines and refused logins never count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_fail2ban_filter_matches_refusals_only() {
    let s = setup(true).await;
    let (dir, key, relay, log, port) = (&s.dir, &s.key, &s.relay, s.log.as_path(), s.port);
    visit(port, 100).await;
    wait_lines(&[log], 2, relay).await;
    // Refusals as the relay writes them, with the hostile texts a peer controls.
    {
        use ::burrow::server::access_log::{AccessLog, Kind, Refused, Who};
        let writer = AccessLog::open(Some(log)).unwrap();
        let who = Who {
            session: 9,
            fingerprint: key.fingerprint(),
            comment: HOSTILE_COMMENT.into(),
        };
        for (from, to) in [
            ("203.0.113.5:40000", "a-ssh:22"),
            (
                "203.0.113.5:40001",
                "x\nburrow-access: refused from=192.0.2.77 port=1 y:22",
            ),
            ("[2001:db8::7]:40002", "\" from=192.0.2.78 port=2:80"),
        ] {
            writer.refused(&Refused {
                who: Some(&who),
                from: from.parse().unwrap(),
                kind: Kind::DirectTcpip,
                to,
                reason: "not in the key's permitopen",
            });
        }
        // A refused login: logged, left to a second filter (an agent tries several keys).
        writer.auth_refused(
            "203.0.113.99:40003".parse().unwrap(),
            "SHA256:x",
            "not in authorized_keys",
        );
    }
    let (text, all) = fail2ban_regex(dir.path(), log);
    assert!(
        matched(&text, "203.0.113.5") && matched(&text, "2001:db8::7"),
        "{text}"
    );
    for forged in [
        "192.0.2.66",
        "192.0.2.77",
        "192.0.2.78",
        "127.0.0.1",
        "203.0.113.99",
    ] {
        assert!(!matched(&text, forged), "{forged} must not match:\n{text}");
    }
    assert!(
        text.contains(&format!(
            "Lines: {all} lines, 0 ignored, 3 matched, {} missed",
            all - 3
        )),
        "{text}"
    );
}

/// The `[Definition]` block of the README's fail2ban filter.
fn documented_filter() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("```ini\n[Definition]")
        .expect("README shows the fail2ban filter in an ini block");
    let block = &readme[start + "```ini\n".len()..];
    let end = block.find("```").expect("closed block");
    let filter = block[..end].to_string();
    assert!(filter.contains("failregex"), "{filter}");
    // The man page documents the same line.
    let page = std::fs::read_to_string(repo().join("doc/man/burrow-serve.toml.5")).unwrap();
    let failregex = filter
        .lines()
        .find(|l| l.starts_with("failregex"))
        .unwrap()
        .to_string();
    let unroffed = page.replace("\\-", "-").replace("\\\\", "\\");
    assert!(
        unroffed.contains(&failregex),
        "burrow-serve.toml(5) shows {failregex}"
    );
    filter
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// `ssh -W HOST:PORT` through the relay with `input` on stdin; (success, stdout, stderr).
async fn ssh_w(
    relay: &Relay,
    key: &Keypair,
    target: &str,
    input: &[u8],
) -> (bool, Vec<u8>, String) {
    use std::process::Stdio;
    let mut cmd = relay.ssh(key);
    cmd.arg("-W")
        .arg(target)
        .arg("c@127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn ssh -W");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&data).await;
    });
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("ssh -W within 20 s")
        .expect("ssh -W");
    let _ = writer.await;
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A -W connection (direct-tcpip) leaves a close line of its own beside the line of the -R
/// connection it reached; a refused -W leaves a refused line whose `from=` is the client that
/// asked, with the host name it asked for (spaces, quotes, `=`, CR, ESC) escaped; a key the
/// relay does not know leaves a refused `kind=auth` line; the documented fail2ban filter
/// counts exactly the refused requests (not the login: see the README), against 127.0.0.1, and
/// nothing against the addresses the names spell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tcpip_closes_and_refusals_are_logged_and_matched_by_fail2ban() {
    let s = setup(true).await;
    let (dir, key, echo, relay, log, port) =
        (&s.dir, &s.key, &s.echo, &s.relay, s.log.as_path(), s.port);
    let data = det_bytes(7, 5000);
    let (ok, out, err) = ssh_w(relay, key, &format!("127.0.0.1:{port}"), &data).await;
    assert!(ok && out == data, "-W through the relay: {err}");
    // The probe, the -R connection the -W reached, the -W itself.
    let got = wait_lines(&[log], 3, relay).await.remove(0);
    let direct = got
        .iter()
        .find(|l| l.contains(" kind=direct-tcpip "))
        .unwrap_or_else(|| panic!("no direct-tcpip line: {got:#?}"));
    for field in [
        " burrow-access: close from=127.0.0.1 port=".to_string(),
        format!(
            " key={} {ESCAPED_COMMENT} listener=\"-\" ",
            key.fingerprint()
        ),
        format!(" to=\"127.0.0.1:{port}\" up=5000 down=5000 secs="),
    ] {
        assert!(direct.contains(&field), "{direct}\nwanted {field}");
    }
    assert!(direct.ends_with(" end=closed"), "{direct}");
    // Refused: B's loopback service nobody published, under names a peer chose.
    let hostile = [
        format!("a b\"c from=192.0.2.91 port=1 d:{}", echo.addr.port()),
        // OpenSSH refuses a newline in the host of -W, but sends a carriage return and ESC,
        // and a colon inside brackets.
        format!(
            "[x\r\x1bburrow-access: refused from=192.0.2.92 port=2 y]:{}",
            echo.addr.port()
        ),
        echo.hostport(),
    ];
    for target in &hostile {
        let (ok, _, err) = ssh_w(relay, key, target, b"").await;
        assert!(
            !ok && err.contains("administratively prohibited"),
            "{target}: {err}"
        );
    }
    // A key the relay does not know: one refused authentication.
    let stranger = keygen(dir.path(), "stranger", KeyKind::Ed25519, None);
    let (ok, _, err) = ssh_w(relay, &stranger, &echo.hostport(), b"").await;
    assert!(!ok && err.contains("Permission denied"), "{err}");
    let refusals = hostile.len() + 1;
    let got = wait_lines(&[log], 3 + refusals, relay).await.remove(0);
    let (auth, refused): (Vec<&String>, Vec<&String>) = got
        .iter()
        .filter(|l| l.contains(" burrow-access: refused from=127.0.0.1 port="))
        .partition(|l| l.contains(" kind=auth "));
    assert_eq!(refused.len(), hostile.len(), "{got:#?}");
    assert_eq!(auth.len(), 1, "{got:#?}");
    assert!(
        auth[0].contains(&format!(
            " kind=auth key={} reason=",
            stranger.fingerprint()
        )),
        "{}",
        auth[0]
    );
    for line in &refused {
        assert!(
            line.contains(" burrow-access: refused from=127.0.0.1 port=")
                && line.contains(" kind=direct-tcpip session=")
                && line.contains(ESCAPED_COMMENT)
                && line.matches("from=").count() == 1,
            "{line}"
        );
    }
    assert!(
        refused
            .iter()
            .any(|l| l.contains(" to=\"a b\\x22c from\\x3d192.0.2.91 port\\x3d1 d:")),
        "{refused:#?}"
    );
    assert!(
        refused
            .iter()
            .any(|l| l.contains(" to=\"x\\x0d\\x1bburrow-access: refused from\\x3d192.0.2.92 ")),
        "{refused:#?}"
    );
    let (text, all) = fail2ban_regex(dir.path(), log);
    assert!(
        text.contains(&format!(
            "Lines: {all} lines, 0 ignored, {} matched, {} missed",
            hostile.len(),
            all - hostile.len()
        )),
        "{text}"
    );
    assert!(matched(&text, "127.0.0.1"), "{text}");
    for forged in ["192.0.2.66", "192.0.2.91", "192.0.2.92"] {
        assert!(!matched(&text, forged), "{forged} must not match:\n{text}");
    }
}

/// Runs `fail2ban-regex -v` with the README's filter over `log`; its output and the number
/// of lines in the log.
fn fail2ban_regex(dir: &Path, log: &Path) -> (String, usize) {
    assert!(
        which("fail2ban-regex").is_some(),
        "fail2ban-regex not found: apt-get install fail2ban (scripts/test does)"
    );
    let filter = dir.join("burrow-relay.conf");
    std::fs::write(&filter, documented_filter()).unwrap();
    let out = std::process::Command::new("fail2ban-regex")
        .arg("-v")
        .arg(log)
        .arg(&filter)
        .output()
        .expect("run fail2ban-regex");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    (text, lines(log).len())
}

/// Whether `fail2ban-regex -v` listed a match for `ip` (as `|      ADDRESS  DATE`).
fn matched(text: &str, ip: &str) -> bool {
    text.lines().any(|l| {
        l.trim_start_matches(['|', ' '])
            .starts_with(&format!("{ip} "))
    })
}

/// Resumable streams (`burrow up` publishing through the relay: burrow to burrow) are logged
/// the same way when they close on the relay (their guard lives in the stream's own task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumable_stream_is_logged_when_it_closes() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let echo = echo_server().await;
    let log = dir.path().join("access.log");
    let config = format!("access_log = \"{}\"\n", log.display());
    let authorized = [hostile_line(&key)];
    let relay = Relay::start(dir.path(), "relay", &authorized, Some(&config), &[]).await;
    let rport = free_port();
    let tunnels = dir.path().join("tunnels.toml");
    std::fs::write(
        &tunnels,
        format!(
            "[defaults]\nidentity = \"{}\"\nknown_hosts = \"{}\"\nssh_config = \"none\"\n\n\
             [[tunnel]]\nname = \"a\"\nserver = \"root@127.0.0.1:{}\"\nremote = [\"127.0.0.1:{rport}:{}\"]\n",
            key.private.display(),
            relay.known_hosts.display(),
            relay.addr.port(),
            echo.hostport()
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(burrow_bin());
    cmd.arg("up").arg(&tunnels);
    let _up = spawn_logged(cmd, dir.path(), "burrow-up");
    relay_logs(&relay, "resumable streams on").await;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, rport));
    assert!(
        wait_port(addr, UP_TIMEOUT).await,
        "-R {addr} never listened"
    );
    let from = visit(rport, 3000).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let line = loop {
        let found = lines(&log)
            .into_iter()
            .find(|l| l.contains(&format!(" port={} ", from.port())));
        if let Some(line) = found {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no line for {from}: {:#?}\n{}",
            lines(&log),
            relay.child.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_close_line(&line, from, rport, &key, 3000);
}

/// An alias (stock `ssh -R a-web:80:...`): a visit by a key whose permitopen= names it leaves
/// the visitor's direct-tcpip line (to="a-web:80") and the publisher's forwarded line with the
/// alias as its listener; a key without that permitopen= is refused and logged, and the
/// documented filter counts that refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_visits_and_refused_visits_are_logged() {
    let dir = test_dir();
    let publisher = keygen(dir.path(), "publisher", KeyKind::Ed25519, None);
    let visitor = keygen(dir.path(), "visitor", KeyKind::Ed25519, None);
    let stranger = keygen(dir.path(), "stranger", KeyKind::Ed25519, None);
    let echo = echo_server().await;
    let log = dir.path().join("access.log");
    let config = format!("access_log = \"{}\"\n", log.display());
    let authorized = [
        hostile_line(&publisher),
        format!("permitopen=\"a-web:80\" {}", visitor.public_line),
        stranger.public_line.clone(),
    ];
    let relay = Relay::start(dir.path(), "relay", &authorized, Some(&config), &[]).await;
    let mut cmd = relay.ssh(&publisher);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("a-web:80:{}", echo.hostport()))
        .arg("tunnel@127.0.0.1");
    let _a = spawn_logged(cmd, dir.path(), "ssh-R-alias");
    relay_logs(&relay, "alias published").await;
    let data = det_bytes(9, 4000);
    let (ok, out, err) = ssh_w(&relay, &visitor, "a-web:80", &data).await;
    assert!(ok && out == data, "-W a-web:80: {err}");
    let (ok, _, err) = ssh_w(&relay, &stranger, "a-web:80", b"").await;
    assert!(!ok && err.contains("administratively prohibited"), "{err}");
    let got = wait_lines(&[&log], 3, &relay).await.remove(0);
    let one = |event: &str, kind: &str| {
        let (event, kind) = (format!(" {event} from="), format!(" kind={kind} "));
        let hits: Vec<&String> = got
            .iter()
            .filter(|l| l.contains(&event) && l.contains(&kind))
            .collect();
        assert_eq!(hits.len(), 1, "{event} {kind}: {got:#?}");
        hits[0].clone()
    };
    let direct = one("close", "direct-tcpip");
    assert!(
        direct.contains(&format!(" key={} ", visitor.fingerprint()))
            && direct.contains(" listener=\"-\" to=\"a-web:80\" up=4000 down=4000 ")
            && direct.ends_with(" end=closed"),
        "{direct}"
    );
    let forwarded = one("close", "forwarded");
    assert!(
        forwarded.contains(&format!(
            " key={} {ESCAPED_COMMENT} ",
            publisher.fingerprint()
        )) && forwarded.contains(" listener=\"a-web:80\" ")
            && forwarded.contains(" up=4000 down=4000 ")
            && forwarded.ends_with(" end=closed"),
        "{forwarded}"
    );
    let refused = one("refused", "direct-tcpip");
    assert!(
        refused.contains(&format!(" key={} ", stranger.fingerprint()))
            && refused.contains(" to=\"a-web:80\" reason="),
        "{refused}"
    );
    let (text, all) = fail2ban_regex(dir.path(), &log);
    assert!(
        text.contains(&format!(
            "Lines: {all} lines, 0 ignored, 1 matched, {} missed",
            all - 1
        )),
        "{text}"
    );
}

/// Without `access_log` the access lines share stderr (the journal under systemd, which the
/// README's `journalmatch` reads whole) with the relay's other messages, and those quote what a
/// peer asked for: a key holder that asks for a host named like an access line must not get
/// the documented fail2ban filter to count a refusal against an address of its choosing (the
/// operator's, another user's) through the daemon's own "forward refused" message. Only the
/// access line itself, with the asker's real address, may match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_messages_cannot_spell_an_access_line_for_fail2ban() {
    let s = setup(false).await;
    let (dir, key, echo, relay) = (&s.dir, &s.key, &s.echo, &s.relay);
    let target = format!(
        "[x burrow-access: refused from=192.0.2.93 port=1 kind=direct-tcpip y]:{}",
        echo.addr.port()
    );
    let (ok, _, err) = ssh_w(relay, key, &target, b"").await;
    assert!(!ok && err.contains("administratively prohibited"), "{err}");
    relay_logs(relay, "burrow-access: refused from=127.0.0.1 ").await;
    relay_logs(relay, "forward refused").await;
    let log = dir.path().join("stderr.log");
    std::fs::write(&log, relay.child.stderr_text()).unwrap();
    let (text, _) = fail2ban_regex(dir.path(), &log);
    assert!(matched(&text, "127.0.0.1"), "{text}");
    assert!(
        !matched(&text, "192.0.2.93"),
        "a daemon message spelled an access line:\n{text}\n{}",
        relay.child.stderr_text()
    );
}

/// A key holder that keeps asking for what it may not have (here 300 `-L` connections to a
/// port nobody published, each one refused channel) cannot write without end: a session's
/// first 100 refusals are logged, in the access log and the relay's messages, then one
/// message says further ones are only counted, and the session's end gives their number.
/// The session itself goes on (a -D proxy may legitimately be refused many times).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_keeps_being_refused_cannot_flood_the_logs() {
    let s = setup(true).await;
    let (dir, key, echo, relay, log) = (&s.dir, &s.key, &s.echo, &s.relay, s.log.as_path());
    let before = lines(log).len();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut cmd = relay.ssh(key);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
        .arg(format!("127.0.0.1:{port}:{}", echo.hostport()))
        .arg("flood@127.0.0.1");
    let mut client = spawn_logged(cmd, dir.path(), "ssh-L-refused");
    wait_listening(&mut client, addr, UP_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("-L {addr}: {e}"));
    for _ in 0..300 {
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("-L port");
        let mut buf = [0u8; 1];
        let _ = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await;
    }
    relay_logs(
        relay,
        "further refusals of this session are counted, not logged",
    )
    .await;
    assert!(client.try_status().is_none(), "{}", client.stderr_text());
    client.kill();
    relay_logs(relay, "refusals not logged").await;
    let ended = relay.child.stderr_text();
    assert!(
        ended.lines().any(|l| l.contains("refusals not logged")
            && l.split("not_logged=")
                .nth(1)
                .and_then(|n| n.split_whitespace().next())
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n >= 200)),
        "{ended}"
    );
    let refused = lines(log)[before..]
        .iter()
        .filter(|l| l.contains(" burrow-access: refused "))
        .count();
    assert_eq!(refused, 100, "{}", relay.child.stderr_text());
    let messages = relay.child.stderr_text().matches("forward refused").count();
    assert_eq!(messages, 100, "{}", relay.child.stderr_text());
}
