//! Proves the test harness against OpenSSH itself. What OpenSSH does here is also the reference
//! behaviour burrow's own tests compare against.

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: u64 = 1024 * 1024;
const RUN: Duration = Duration::from_secs(30);

/// Runs `cmd` (bounded) and returns trimmed stdout, panicking with stderr unless it succeeded.
fn run_ok(cmd: Command, dir: &std::path::Path, name: &str) -> String {
    let (st, out, err) = run_with_timeout(cmd, dir, name, RUN);
    assert!(
        st.is_some_and(|s| s.success()),
        "{name} failed ({st:?}):\n{err}"
    );
    out.trim().to_owned()
}

#[test]
fn ssh_exec_with_each_key_kind() {
    let dir = test_dir();
    let keys: Vec<Keypair> = KeyKind::ALL
        .iter()
        .map(|&k| keygen(dir.path(), &format!("id_{k:?}").to_lowercase(), k, None))
        .collect();
    let sshd = Sshd::start(SshdOptions::with_keys(&keys.iter().collect::<Vec<_>>()));
    for key in &keys {
        let mut cmd = sshd.ssh_command_with_key(key);
        cmd.arg(sshd.dest("root")).arg("echo ok");
        assert_eq!(run_ok(cmd, dir.path(), "ssh-exec"), "ok", "{:?}", key.kind);
        let fp = key.fingerprint();
        assert!(sshd.wait_log(&fp, RUN).is_some(), "sshd log lacks {fp}");
    }
    assert!(sshd.log().contains("Accepted publickey for root"));
}

#[test]
fn wrong_key_and_unknown_host_key_are_refused() {
    let dir = test_dir();
    let good = keygen(dir.path(), "good", KeyKind::Ed25519, None);
    let bad = keygen(dir.path(), "bad", KeyKind::Ed25519, None);
    let sshd = Sshd::start(SshdOptions::with_keys(&[&good]));

    let mut cmd = sshd.ssh_command_with_key(&bad);
    cmd.arg(sshd.dest("root")).arg("echo ok");
    let (st, _, err) = run_with_timeout(cmd, dir.path(), "ssh-badkey", RUN);
    assert_eq!(st.and_then(|s| s.code()), Some(255), "{err}");
    assert!(err.contains("Permission denied"), "{err}");

    // Same server, empty known_hosts: StrictHostKeyChecking=yes must refuse before auth.
    let empty = dir.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let mut cmd = Command::new("ssh");
    cmd.args([
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
    ])
    .arg("-o")
    .arg(format!("UserKnownHostsFile={}", empty.display()))
    .arg("-i")
    .arg(&good.private)
    .arg("-p")
    .arg(sshd.port.to_string())
    .arg(sshd.dest("root"))
    .arg("echo ok");
    let (st, _, err) = run_with_timeout(cmd, dir.path(), "ssh-unknown-host", RUN);
    assert_eq!(st.and_then(|s| s.code()), Some(255), "{err}");
    assert!(err.contains("Host key verification failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_forward_echo_64mib() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let sshd = Sshd::start(SshdOptions::with_keys(&[&key]));
    let echo = echo_server().await;
    let (_ssh, fwd) = ssh_local_forward(&sshd, &key, dir.path(), echo.addr).await;
    let t = transfer_checked(fwd, 64 * MIB)
        .await
        .expect("64 MiB through ssh -L");
    assert_eq!(t.bytes, 64 * MIB);
    eprintln!(
        "ssh -L echo: {} MiB in {:?} ({:.0} MiB/s)",
        t.bytes / MIB,
        t.elapsed,
        t.mib_per_s()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_forward_port0_echo_64mib() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let sshd = Sshd::start(SshdOptions::with_keys(&[&key]));
    let echo = echo_server().await;
    let (ssh, fwd) = ssh_remote_forward(&sshd, &key, dir.path(), echo.addr).await;
    let line = ssh.stderr().wait_for_line("Allocated port", RUN).unwrap();
    assert_eq!(
        line.trim(),
        format!(
            "Allocated port {} for remote forward to {}",
            fwd.port(),
            echo.addr
        )
    );
    let t = transfer_checked(fwd, 64 * MIB)
        .await
        .expect("64 MiB through ssh -R");
    eprintln!(
        "ssh -R echo: {} MiB in {:?} ({:.0} MiB/s)",
        t.bytes / MIB,
        t.elapsed,
        t.mib_per_s()
    );
}

#[test]
fn password_login_without_pam() {
    if !have("sshpass") || !is_root() {
        eprintln!("SKIP password_login_without_pam: needs sshpass and root");
        return;
    }
    let dir = test_dir();
    let user = TestUser::create();
    let sshd = Sshd::start(SshdOptions::default().config("PasswordAuthentication yes"));
    let mut cmd = sshd.ssh_password_command(&user.password, "password");
    cmd.arg(sshd.dest(&user.name)).arg("id -un");
    assert_eq!(run_ok(cmd, dir.path(), "ssh-password"), user.name);
    assert!(sshd
        .log()
        .contains(&format!("Accepted password for {}", user.name)));

    let mut cmd = sshd.ssh_password_command("wrong-password", "password");
    cmd.arg(sshd.dest(&user.name)).arg("id -un");
    let (st, _, _) = run_with_timeout(cmd, dir.path(), "ssh-wrong-password", RUN);
    assert!(
        st.is_some_and(|s| !s.success()),
        "a wrong password must fail"
    );

    let name = user.name.clone();
    drop(sshd);
    drop(user);
    assert!(
        nix::unistd::User::from_name(&name).unwrap().is_none(),
        "user {name} not removed"
    );
}

#[test]
fn keyboard_interactive_login_with_pam() {
    if !have("sshpass") || !is_root() {
        eprintln!("SKIP keyboard_interactive_login_with_pam: needs sshpass and root");
        return;
    }
    let dir = test_dir();
    let user = TestUser::create();
    let sshd = Sshd::start(SshdOptions::default().password_auth());
    let mut cmd = sshd.ssh_password_command(&user.password, "keyboard-interactive");
    cmd.arg(sshd.dest(&user.name)).arg("id -un");
    assert_eq!(run_ok(cmd, dir.path(), "ssh-kbdint"), user.name);
    assert!(
        sshd.log().contains("Accepted keyboard-interactive/pam"),
        "{}",
        sshd.log()
    );
}

#[test]
fn agent_auth_with_encrypted_key() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id_enc", KeyKind::Ecdsa, Some("correct horse"));
    let agent = Agent::start(dir.path());
    assert_eq!(agent.list(), "");
    agent.add(&key);
    assert!(agent.list().contains(&key.fingerprint()));
    let sshd = Sshd::start(SshdOptions::with_keys(&[&key]));
    let mut cmd = sshd.ssh_command();
    agent.env(&mut cmd);
    cmd.arg(sshd.dest("root")).arg("echo ok");
    assert_eq!(run_ok(cmd, dir.path(), "ssh-agent-auth"), "ok");
}

#[test]
fn ipv6_listener() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let sshd = Sshd::start(SshdOptions {
        listen_ipv6: true,
        ..SshdOptions::with_keys(&[&key])
    });
    assert_eq!(sshd.addr_v6.map(|a| a.port()), Some(sshd.port));
    let mut cmd = sshd.ssh_command_with_key(&key);
    cmd.arg("-6").arg("root@::1").arg("echo ok6");
    assert_eq!(run_ok(cmd, dir.path(), "ssh-v6"), "ok6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_stalls_sessions_and_thaw_resumes() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let sshd = Sshd::start(SshdOptions::with_keys(&[&key]));
    let echo = echo_server().await;
    let (_ssh, fwd) = ssh_local_forward(&sshd, &key, dir.path(), echo.addr).await;
    let mut s = TcpStream::connect(fwd).await.unwrap();
    let mut buf = [0u8; 5];
    s.write_all(b"hello").await.unwrap();
    s.read_exact(&mut buf).await.unwrap();
    assert!(!sshd.session_pids().is_empty(), "no sshd session process");

    sshd.freeze();
    s.write_all(b"again").await.unwrap();
    let stalled = tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut buf)).await;
    assert!(stalled.is_err(), "echo came back through a frozen sshd");
    sshd.thaw();
    tokio::time::timeout(RUN, s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"again");
}

#[test]
fn sshd_start_detects_port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    match Sshd::try_start_at(&SshdOptions::default(), port) {
        Err(StartError::AddrInUse) => {}
        Err(StartError::Failed(log)) => panic!("expected AddrInUse, got failure:\n{log}"),
        Ok(s) => panic!("sshd started on a taken port {}", s.port),
    }
}

#[test]
fn child_guard_kills_descendants() {
    let dir = test_dir();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("sleep 300 & sleep 300 & echo started; wait");
    let g = spawn_logged(cmd, dir.path(), "tree");
    assert!(g.stdout().wait_for_line("started", RUN).is_some());
    let kids = g.descendants();
    assert_eq!(kids.len(), 2, "{kids:?}");
    drop(g);
    // SIGKILL takes effect asynchronously, and init reaps the orphans: until then they are
    // zombies, which count as gone.
    let gone = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start())
            .unwrap_or("");
        stat.is_empty() || state.starts_with('Z')
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !kids.iter().all(|&p| gone(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    for pid in kids {
        assert!(gone(pid), "pid {pid} survived its guard");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_behave() {
    let t = Duration::from_secs(20);
    let src = source_server(3 * MIB + 7, 42).await;
    let (n, sha) = fetch_hashed(src.addr, t).await.unwrap();
    assert_eq!((n, sha), (3 * MIB + 7, det_sha256(42, 3 * MIB + 7)));
    assert_eq!(
        fetch_checked(src.addr, 3 * MIB + 7, 42, t).await.unwrap(),
        3 * MIB + 7
    );
    assert!(
        fetch_checked(src.addr, 3 * MIB + 7, 43, t).await.is_err(),
        "wrong seed must not match"
    );
    assert!(
        fetch_checked(src.addr, 3 * MIB + 8, 42, t).await.is_err(),
        "short data must not match"
    );
    assert_eq!(det_sha256(1, 1000), sha256_hex(&det_bytes(1, 1000)));
    // Streaming in odd-sized pieces gives the same bytes as one piece.
    let mut s = DetStream::new(5, 100_000);
    let mut pieces = Vec::new();
    let mut buf = [0u8; 777];
    loop {
        let k = s.fill(&mut buf);
        if k == 0 {
            break;
        }
        pieces.extend_from_slice(&buf[..k]);
    }
    assert_eq!(pieces, det_bytes(5, 100_000));
    assert_ne!(det_bytes(5, 64), det_bytes(6, 64));

    let mut sink = sink_server().await;
    let sent = push_hashed(sink.service.addr, 2 * MIB + 1, 9, t)
        .await
        .unwrap();
    let got = sink.next_result(t).await.unwrap();
    assert_eq!(
        got,
        SinkResult {
            bytes: 2 * MIB + 1,
            sha256: sent,
            clean_eof: true
        }
    );

    let http = http_server("hello burrow\n").await;
    let (code, body) = http_get(http.addr, "/x", t).await.unwrap();
    assert_eq!((code, body.as_slice()), (200, &b"hello burrow\n"[..]));

    let echo = echo_server().await;
    let tr = transfer_checked(echo.addr, 8 * MIB).await.unwrap();
    assert_eq!(Stats::get(&echo.stats.bytes_out), tr.bytes);

    let endless = endless_writer_server().await;
    let mut s = TcpStream::connect(endless.addr).await.unwrap();
    let mut buf = vec![0u8; 1 << 20];
    s.read_exact(&mut buf).await.unwrap();
    drop(s);
    let deadline = Instant::now() + t;
    while endless.stats.closed.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        Stats::get(&endless.stats.closed),
        1,
        "writer did not notice the peer left"
    );
    assert!(Stats::get(&endless.stats.bytes_out) >= 1 << 20);
}

#[tokio::test]
async fn checker_catches_corruption() {
    let n = 300_000u64;
    let mut data = det_bytes(3, n as usize);
    data[123_456] ^= 1;
    let (mut a, mut b) = tokio::io::duplex(64 * 1024);
    let feed = tokio::spawn(async move {
        a.write_all(&data).await.unwrap();
    });
    let err = read_expecting(&mut b, DetStream::new(3, n))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("offset 123456"), "{err}");
    feed.abort();

    let (mut a, mut b) = tokio::io::duplex(64 * 1024);
    a.write_all(&det_bytes(3, 1000)).await.unwrap();
    drop(a);
    let err = read_expecting(&mut b, DetStream::new(3, 1001))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1 short"), "{err}");
}
