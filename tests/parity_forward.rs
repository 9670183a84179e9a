//! Reverse dynamic forwarding (`-R [bind:]port` without a target) and unix-socket forwards,
//! against real OpenSSH: sshd as the server, ssh as the reference client, and `curl
//! --socks5-hostname` on the server side as the SOCKS user. Also through `burrow serve`, with
//! its per-key `burrow-permitremoteopen` limit.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::burrow::{allocated_port, burrow_ssh, Relay, UP_TIMEOUT};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// OpenSSH's and burrow's wording for a reverse dynamic forward's allocated port.
const SOCKS_TARGET: &str = "remote forward to socks:0";

fn setup() -> (tempfile::TempDir, Keypair, Sshd) {
    let dir = test_dir();
    let key = keygen(dir.path(), "id_ed25519", KeyKind::Ed25519, None);
    let sshd = Sshd::start(SshdOptions::with_keys(&[&key]));
    (dir, key, sshd)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// `curl -sS FLAG 127.0.0.1:PROXY URL` (30 s at most).
fn curl(flag: &str, proxy: u16, url: &str) -> std::process::Output {
    Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            flag,
            &format!("127.0.0.1:{proxy}"),
            url,
        ])
        .output()
        .expect("run curl")
}

fn assert_fetched(out: &std::process::Output, body: &[u8], what: &str) {
    assert!(
        out.status.success(),
        "{what}: curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256_hex(&out.stdout), sha256_hex(body), "{what}: body");
}

/// Runs `cmd` (a client with `-N -R 127.0.0.1:0`) and returns it with the port the server
/// allocated, once that port accepts connections.
async fn reverse_socks(cmd: Command, dir: &Path, name: &str) -> (ChildGuard, u16) {
    let mut child = spawn_logged(cmd, dir, name);
    let port = allocated_port(&child, SOCKS_TARGET).await;
    wait_listening(&mut child, loopback(port), UP_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_dynamic_forward_serves_socks_from_the_server_side_like_ssh() {
    if !have("curl") {
        println!("SKIP: curl not installed");
        return;
    }
    let (dir, key, sshd) = setup();
    let body = det_bytes(11, 150_000);
    let web = http_server(body.clone()).await;
    let mut cmd = burrow_ssh(&sshd, Some(&key));
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:0"])
        .arg(sshd.dest("root"));
    let (_burrow, port) = reverse_socks(cmd, dir.path(), "burrow-Rd").await;
    // Every SOCKS flavour, used on the server's side of the tunnel; names resolve on our side.
    let by_name = format!("http://localhost:{}/", web.port());
    let by_ip = format!("http://127.0.0.1:{}/", web.port());
    for (flag, url) in [
        ("--socks5-hostname", &by_name),
        ("--socks5", &by_ip),
        ("--socks4a", &by_name),
        ("--socks4", &by_ip),
    ] {
        assert_fetched(&curl(flag, port, url), &body, flag);
    }
    // A refused destination gets a SOCKS error instead of an empty reply.
    let closed = format!("http://127.0.0.1:{}/", free_port());
    let out = curl("--socks5-hostname", port, &closed);
    assert!(
        !out.status.success(),
        "connection to a closed port succeeded"
    );

    // OpenSSH's client against the same sshd: same message, same service.
    let mut cmd = sshd.ssh_command_with_key(&key);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:0"])
        .arg(sshd.dest("root"));
    let (_ssh, ssh_port) = reverse_socks(cmd, dir.path(), "ssh-Rd").await;
    assert_fetched(
        &curl("--socks5-hostname", ssh_port, &by_name),
        &body,
        "ssh -R",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permit_remote_open_limits_reverse_socks_like_ssh() {
    if !have("curl") {
        println!("SKIP: curl not installed");
        return;
    }
    let (dir, key, sshd) = setup();
    let body = det_bytes(12, 10_000);
    let web = http_server(body.clone()).await;
    let permit = format!("PermitRemoteOpen=localhost:{}", web.port());
    let by_name = format!("http://localhost:{}/", web.port());
    let by_ip = format!("http://127.0.0.1:{}/", web.port());
    let mut burrow = burrow_ssh(&sshd, Some(&key));
    burrow.args(["-N", "-o", &permit, "-R", "127.0.0.1:0"]);
    let mut ssh = sshd.ssh_command_with_key(&key);
    ssh.args(["-N", "-o", &permit, "-R", "127.0.0.1:0"]);
    for (mut cmd, name) in [(burrow, "burrow-permit"), (ssh, "ssh-permit")] {
        cmd.arg(sshd.dest("root"));
        let (_client, port) = reverse_socks(cmd, dir.path(), name).await;
        assert_fetched(&curl("--socks5-hostname", port, &by_name), &body, name);
        let before = Stats::get(&web.stats.connections);
        // Literal comparison, no lookups: 127.0.0.1 is not "localhost".
        let out = curl("--socks5-hostname", port, &by_ip);
        assert!(
            !out.status.success(),
            "{name}: a destination outside PermitRemoteOpen was reached"
        );
        assert_eq!(
            Stats::get(&web.stats.connections),
            before,
            "{name}: web saw a connection"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_socks_through_burrow_serve_with_a_per_key_limit() {
    if !have("curl") {
        println!("SKIP: curl not installed");
        return;
    }
    let dir = test_dir();
    let open_key = keygen(dir.path(), "open", KeyKind::Ed25519, None);
    let limited_key = keygen(dir.path(), "limited", KeyKind::Ed25519, None);
    let body = det_bytes(13, 50_000);
    let web = http_server(body.clone()).await;
    let lines = [
        format!("restrict,port-forwarding {}", open_key.public_line),
        format!(
            "restrict,port-forwarding,burrow-permitremoteopen=\"localhost:{}\" {}",
            web.port(),
            limited_key.public_line
        ),
    ];
    let relay = Relay::start(dir.path(), "relay", &lines, None, &[]).await;
    let by_name = format!("http://localhost:{}/", web.port());
    let by_ip = format!("http://127.0.0.1:{}/", web.port());

    // No limit on the key: burrow ssh and ssh both publish a working reverse SOCKS proxy.
    let mut cmd = relay.burrow_ssh(&open_key);
    cmd.args(["-N", "-R", "127.0.0.1:0", "root@127.0.0.1"]);
    let (_b, port) = reverse_socks(cmd, dir.path(), "burrow-via-relay").await;
    assert_fetched(
        &curl("--socks5-hostname", port, &by_ip),
        &body,
        "burrow via relay",
    );
    let mut cmd = relay.ssh(&open_key);
    cmd.args(["-N", "-R", "127.0.0.1:0", "root@127.0.0.1"]);
    let (_s, port) = reverse_socks(cmd, dir.path(), "ssh-via-relay").await;
    assert_fetched(&curl("--socks4a", port, &by_name), &body, "ssh via relay");

    // The limited key, with a client that enforces nothing itself: the relay does.
    let mut cmd = relay.ssh(&limited_key);
    cmd.args(["-N", "-R", "127.0.0.1:0", "root@127.0.0.1"]);
    let (_l, port) = reverse_socks(cmd, dir.path(), "ssh-limited").await;
    assert_fetched(&curl("--socks5-hostname", port, &by_name), &body, "allowed");
    assert_fetched(&curl("--socks4a", port, &by_name), &body, "allowed 4a");
    let before = Stats::get(&web.stats.connections);
    for flag in ["--socks5-hostname", "--socks5", "--socks4"] {
        let out = curl(flag, port, &by_ip);
        assert!(
            !out.status.success(),
            "{flag}: the relay let 127.0.0.1 through"
        );
    }
    assert_eq!(Stats::get(&web.stats.connections), before);
    // Plain bytes on such a listener are not forwarded either.
    let mut s = tokio::net::TcpStream::connect(loopback(port))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "got {rest:?}");
    assert!(relay
        .child
        .stderr()
        .wait_for_line_async("reverse dynamic connection refused", UP_TIMEOUT)
        .await
        .is_some());
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_forwards_with_bind_mask_unlink_and_tokens() {
    let (dir, key, sshd) = setup();
    let echo = echo_server().await;
    let d = dir.path();
    // -L on a socket path with %-tokens: mode from StreamLocalBindMask (default 0177 -> 0600).
    let mut cmd = burrow_ssh(&sshd, Some(&key));
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
        .arg(format!("{}/l-%r-%p.sock:{}", d.display(), echo.hostport()))
        .arg(sshd.dest("root"));
    let mut l = spawn_logged(cmd, d, "burrow-L-unix");
    let sock = d.join(format!("l-root-{}.sock", sshd.port));
    wait_unix(&mut l, &sock).await;
    assert_eq!(mode(&sock), 0o600);
    echo_over_unix(&sock).await;
    drop(l);

    // A stale file in the way: refused with OpenSSH's message, unless StreamLocalBindUnlink.
    let stale = d.join("stale.sock");
    std::fs::write(&stale, "old").unwrap();
    let spec = format!("{}:{}", stale.display(), echo.hostport());
    for (program, mut cmd) in [
        ("burrow", burrow_ssh(&sshd, Some(&key))),
        ("ssh", sshd.ssh_command_with_key(&key)),
    ] {
        cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-L", &spec])
            .arg(sshd.dest("root"));
        let (status, _, err) = run_with_timeout(cmd, d, program, Duration::from_secs(60));
        assert_eq!(status.and_then(|s| s.code()), Some(255), "{program}: {err}");
        let want = format!(
            "cannot bind to path {}: Address already in use",
            stale.display()
        );
        assert!(err.contains(&want), "{program} said: {err}");
    }
    let mut cmd = burrow_ssh(&sshd, Some(&key));
    cmd.args([
        "-N",
        "-o",
        "StreamLocalBindUnlink=yes",
        "-o",
        "StreamLocalBindMask=0111",
    ])
    .args(["-L", &spec])
    .arg(sshd.dest("root"));
    let mut l = spawn_logged(cmd, d, "burrow-L-unlink");
    wait_unix(&mut l, &stale).await;
    assert_eq!(mode(&stale), 0o666);
    echo_over_unix(&stale).await;

    // -R onto a socket path on the server (sshd creates it), connected to our echo service.
    let remote = d.join("r.sock");
    let mut cmd = burrow_ssh(&sshd, Some(&key));
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("{}:{}", remote.display(), echo.hostport()))
        .arg(sshd.dest("root"));
    let mut r = spawn_logged(cmd, d, "burrow-R-unix");
    wait_unix(&mut r, &remote).await;
    echo_over_unix(&remote).await;
}

/// Waits (bounded) until `path` is a socket that accepts connections.
async fn wait_unix(child: &mut ChildGuard, path: &Path) {
    for _ in 0..300 {
        if let Some(st) = child.try_status() {
            panic!("{} exited ({st}):\n{}", child.name(), child.stderr_text());
        }
        let is_socket = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket());
        if is_socket && tokio::net::UnixStream::connect(path).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{} never listened on {}:\n{}",
        child.name(),
        path.display(),
        child.stderr_text()
    );
}

async fn echo_over_unix(path: &Path) {
    let mut s = tokio::net::UnixStream::connect(path).await.unwrap();
    let data = det_bytes(7, 256 * 1024);
    let (mut r, mut w) = s.split();
    let send = async {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let recv = r.read_to_end(&mut back);
    let (_, got) =
        tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(send, recv) })
            .await
            .expect("echo over unix socket timed out");
    got.unwrap();
    assert_eq!(back, data);
}
