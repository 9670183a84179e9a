//! Connection sharing against real OpenSSH: `ssh -O ...`/`ssh -S ...` driving a burrow master,
//! burrow's `-O` and passenger sessions against an OpenSSH master with ssh's output as the
//! reference (messages, stdout, exit statuses), ControlMaster auto + ControlPersist sharing one
//! SSH connection, ask confirmation, and the owner-only control socket.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::burrow::{askpass_script, burrow_ssh, pids_with_cmdline, UP_TIMEOUT};
use common::*;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn setup() -> (tempfile::TempDir, Keypair, Sshd) {
    let dir = test_dir();
    let key = keygen(dir.path(), "id_ed25519", KeyKind::Ed25519, None);
    let sshd = Sshd::start(SshdOptions::with_keys(&[&key]));
    (dir, key, sshd)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// `ssh` or `burrow ssh` for `sshd` with `key`, no config, BatchMode.
fn client(program: &str, sshd: &Sshd, key: &Keypair) -> Command {
    match program {
        "ssh" => sshd.ssh_command_with_key(key),
        _ => burrow_ssh(sshd, Some(key)),
    }
}

/// Exit code, stdout and stderr (without the `\r` ssh puts before each newline).
fn run(mut cmd: Command, args: &[&str], dir: &Path, name: &str) -> (i32, String, String) {
    cmd.args(args);
    let (status, out, err) = run_with_timeout(cmd, dir, name, RUN_TIMEOUT);
    let code = status.and_then(|s| s.code()).unwrap_or(-1);
    (code, out, err.replace('\r', ""))
}

/// Kills, on drop, the processes whose command line holds `marker` (a background master the
/// test started, if the test failed before it ended).
struct Reap(String);

impl Drop for Reap {
    fn drop(&mut self) {
        for pid in pids_with_cmdline(&self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Waits (bounded) until a master listens on `path`.
async fn wait_socket(master: Option<&mut ChildGuard>, path: &Path) {
    let mut master = master;
    for _ in 0..300 {
        if let Some(m) = master.as_deref_mut() {
            if let Some(st) = m.try_status() {
                panic!("master exited ({st}):\n{}", m.stderr_text());
            }
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no master on {}", path.display());
}

/// Waits (bounded) until nothing accepts on `addr` any more.
async fn wait_closed(addr: SocketAddr) -> bool {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_clients_drive_a_burrow_master() {
    let (dir, key, sshd) = setup();
    let d = dir.path();
    let echo = echo_server().await;
    let ctl = d.join("ctl");
    let ctl_s = ctl.display().to_string();
    let mut cmd = burrow_ssh(&sshd, Some(&key));
    cmd.args(["-M", "-S", &ctl_s, "-N"]).arg(sshd.dest("root"));
    let mut master = spawn_logged(cmd, d, "burrow-master");
    wait_socket(Some(&mut master), &ctl).await;
    assert_eq!(
        std::fs::metadata(&ctl).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let ssh = |args: &[&str], name: &str| {
        let mut all = vec!["-S", &ctl_s];
        all.extend(args);
        all.push("root@127.0.0.1");
        run(client("ssh", &sshd, &key), &all, d, name)
    };

    let (code, _, err) = ssh(&["-O", "check"], "check");
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("Master running (pid={})", master.pid())),
        "{err}"
    );

    // -R 0: the allocated port on stdout; asking again gives the same forward.
    let spec = format!("127.0.0.1:0:{}", echo.hostport());
    let (code, out, err) = ssh(&["-O", "forward", "-R", &spec], "fwd-R");
    assert_eq!(code, 0, "{err}");
    let rport: u16 = out
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("stdout {out:?}"));
    transfer_checked(loopback(rport), 1 << 20)
        .await
        .expect("-R via master");
    assert_eq!(ssh(&["-O", "forward", "-R", &spec], "fwd-R-again").1, out);

    // -L on a port and on a unix socket, -D.
    let lport = free_port();
    let lspec = format!("127.0.0.1:{lport}:{}", echo.hostport());
    assert_eq!(ssh(&["-O", "forward", "-L", &lspec], "fwd-L").0, 0);
    transfer_checked(loopback(lport), 1 << 20)
        .await
        .expect("-L via master");
    let usock = d.join("l.sock");
    let uspec = format!("{}:{}", usock.display(), echo.hostport());
    assert_eq!(ssh(&["-O", "forward", "-L", &uspec], "fwd-L-unix").0, 0);
    let mut s = tokio::net::UnixStream::connect(&usock)
        .await
        .expect("unix -L");
    tokio::io::AsyncWriteExt::write_all(&mut s, b"ping")
        .await
        .unwrap();
    let mut got = [0u8; 4];
    tokio::io::AsyncReadExt::read_exact(&mut s, &mut got)
        .await
        .unwrap();
    assert_eq!(&got, b"ping");
    drop(s); // an open forwarded connection would keep a stopped master alive, as in ssh
    if have("curl") {
        let body = det_bytes(21, 5_000);
        let web = http_server(body.clone()).await;
        let dport = free_port();
        let dspec = format!("127.0.0.1:{dport}");
        assert_eq!(ssh(&["-O", "forward", "-D", &dspec], "fwd-D").0, 0);
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30", "--socks5-hostname", &dspec])
            .arg(format!("http://localhost:{}/", web.port()))
            .output()
            .unwrap();
        assert_eq!(out.stdout, body, "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(ssh(&["-O", "cancel", "-D", &dspec], "cancel-D").0, 0);
        assert!(wait_closed(loopback(dport)).await, "-D still listening");
    }

    // Cancel: the listener goes; cancelling again fails the way ssh reports it, status 0.
    assert_eq!(ssh(&["-O", "cancel", "-L", &lspec], "cancel-L").0, 0);
    assert!(wait_closed(loopback(lport)).await, "-L still listening");
    let (code, _, err) = ssh(&["-O", "cancel", "-L", &lspec], "cancel-L-again");
    assert_eq!(code, 0);
    assert!(
        err.contains("forwarding request failed: port not forwarded"),
        "{err}"
    );
    assert_eq!(ssh(&["-O", "cancel", "-R", &spec], "cancel-R").0, 0);
    assert!(wait_closed(loopback(rport)).await, "-R still listening");

    // A passenger session: output and exit status come back.
    let session = [
        "-S",
        &ctl_s,
        "root@127.0.0.1",
        "echo hi-from-master; exit 3",
    ];
    let (code, out, err) = run(client("ssh", &sshd, &key), &session, d, "passenger");
    assert_eq!((code, out.as_str()), (3, "hi-from-master\n"), "{err}");

    // stop: no new clients; a -N master with nothing left to carry then ends, as ssh's does.
    let (code, _, err) = ssh(&["-O", "stop"], "stop");
    assert_eq!(code, 0);
    assert!(err.contains("Stop listening request sent."), "{err}");
    let status = master.wait_timeout(Duration::from_secs(30));
    assert_eq!(status.and_then(|s| s.code()), Some(255));
    assert!(!ctl.exists(), "control socket left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burrow_clients_match_ssh_against_an_openssh_master() {
    let (dir, key, sshd) = setup();
    let d = dir.path();
    let echo = echo_server().await;
    let ctl = d.join("octl").display().to_string();
    let mut cmd = sshd.ssh_command_with_key(&key);
    cmd.args(["-M", "-S", &ctl, "-N"]).arg(sshd.dest("root"));
    let mut master = spawn_logged(cmd, d, "ssh-master");
    wait_socket(Some(&mut master), Path::new(&ctl)).await;
    let missing = d.join("missing").display().to_string();
    let rspec = format!("127.0.0.1:0:{}", echo.hostport());
    let banner_target = format!("127.0.0.1:{}", sshd.port);
    let cases: Vec<Vec<&str>> = vec![
        vec!["-S", &ctl, "-O", "check"],
        vec!["-S", &ctl, "-O", "forward", "-R", &rspec],
        vec!["-S", &ctl, "-O", "cancel", "-L", "127.0.0.1:1:h:1"],
        vec!["-S", &ctl, "-O", "bogus"],
        vec!["-O", "check"],
        vec!["-S", &missing, "-O", "check"],
        vec!["-S", &ctl, "-W", &banner_target],
    ];
    for (i, args) in cases.iter().enumerate() {
        let mut full = args.clone();
        full.push("root@127.0.0.1");
        let burrow = run(
            client("burrow", &sshd, &key),
            &full,
            d,
            &format!("burrow-{i}"),
        );
        let ssh = run(client("ssh", &sshd, &key), &full, d, &format!("ssh-{i}"));
        assert_eq!(
            burrow.0, ssh.0,
            "{args:?}: exit status\nburrow: {burrow:?}\nssh: {ssh:?}"
        );
        if args.contains(&"-W") {
            assert!(burrow.1.starts_with("SSH-2.0-"), "{burrow:?}");
            continue;
        }
        assert_eq!(burrow.1, ssh.1, "{args:?}: stdout");
        assert_eq!(burrow.2.trim(), ssh.2.trim(), "{args:?}: stderr");
    }
    // A passenger session through OpenSSH's master.
    let full = [
        "-S",
        ctl.as_str(),
        "root@127.0.0.1",
        "echo via-ssh-master; exit 4",
    ];
    let (code, out, err) = run(client("burrow", &sshd, &key), &full, d, "burrow-passenger");
    assert_eq!((code, out.as_str()), (4, "via-ssh-master\n"), "{err}");
    let (code, _, err) = run(
        client("burrow", &sshd, &key),
        &["-S", &ctl, "-O", "exit", "root@127.0.0.1"],
        d,
        "burrow-exit",
    );
    assert_eq!(code, 0);
    assert!(err.contains("Exit request sent."), "{err}");
    let status = master.wait_timeout(Duration::from_secs(30));
    assert_eq!(status.and_then(|s| s.code()), Some(255));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_master_auto_with_persist_shares_one_connection() {
    let (dir, key, sshd) = setup();
    let d = dir.path();
    let template = format!("{}/cm-%C", d.display());
    let opts = [
        "-o",
        "ControlMaster=auto",
        "-o",
        &format!("ControlPath={template}"),
        "-o",
        "ControlPersist=2",
    ];
    // The expanded path, as -G reports it.
    let mut g = opts.to_vec();
    g.extend(["-G", "root@127.0.0.1"]);
    let (_, dump, _) = run(client("burrow", &sshd, &key), &g, d, "burrow-G");
    let path = dump
        .lines()
        .find_map(|l| l.strip_prefix("controlpath "))
        .map(PathBuf::from)
        .expect("controlpath in -G");
    let _reap = Reap(template.clone());
    for word in ["one", "two"] {
        let mut args = opts.to_vec();
        let command = format!("echo {word}");
        args.extend(["root@127.0.0.1", &command]);
        let (code, out, err) = run(client("burrow", &sshd, &key), &args, d, word);
        assert_eq!((code, out.trim()), (0, word), "{err}");
        assert!(path.exists(), "no master socket at {}", path.display());
    }
    let logins = sshd.log().matches("Accepted publickey for root").count();
    assert_eq!(logins, 1, "both commands must share one SSH connection");
    let path_opt = format!("ControlPath={}", path.display());
    let args = ["-o", path_opt.as_str(), "-O", "check", "root@127.0.0.1"];
    let (code, _, err) = run(client("ssh", &sshd, &key), &args, d, "ssh-check");
    assert_eq!(code, 0, "ssh sees the persistent burrow master: {err}");
    // Idle for the ControlPersist time: the master goes away by itself.
    for _ in 0..300 {
        if !path.exists() && pids_with_cmdline(&template).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("ControlPersist master still there after 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_master_ask_confirms_through_askpass() {
    let (dir, key, sshd) = setup();
    let d = dir.path();
    let echo = echo_server().await;
    let ctl = d.join("actl").display().to_string();
    let askpass = askpass_script(d, "no");
    let mut cmd = burrow_ssh(&sshd, Some(&key));
    cmd.env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .args(["-MM", "-S", &ctl, "-N"])
        .arg(sshd.dest("root"));
    let mut master = spawn_logged(cmd, d, "burrow-ask-master");
    wait_socket(Some(&mut master), Path::new(&ctl)).await;
    let lspec = format!("127.0.0.1:{}:{}", free_port(), echo.hostport());
    let forward = [
        "-S",
        ctl.as_str(),
        "-O",
        "forward",
        "-L",
        &lspec,
        "root@127.0.0.1",
    ];
    let (code, _, err) = run(client("ssh", &sshd, &key), &forward, d, "refused");
    assert_eq!(code, 255);
    assert!(
        err.contains("Master refused forwarding request: Permission denied"),
        "{err}"
    );
    let session = ["-S", ctl.as_str(), "root@127.0.0.1", "true"];
    let (code, _, err) = run(
        client("burrow", &sshd, &key),
        &session,
        d,
        "refused-session",
    );
    assert_eq!(code, 255);
    assert!(
        err.contains("Master refused session request: Permission denied"),
        "{err}"
    );
    let check = ["-S", ctl.as_str(), "-O", "check", "root@127.0.0.1"];
    assert_eq!(
        run(client("ssh", &sshd, &key), &check, d, "check").0,
        0,
        "check never asks"
    );
    askpass_script(d, "yes");
    let (code, _, err) = run(client("ssh", &sshd, &key), &forward, d, "allowed");
    assert_eq!(code, 0, "{err}");
    let exit = ["-S", ctl.as_str(), "-O", "exit", "root@127.0.0.1"];
    assert_eq!(run(client("ssh", &sshd, &key), &exit, d, "exit").0, 0);
    assert!(
        master.wait_timeout(UP_TIMEOUT).is_some(),
        "master did not exit"
    );
}

/// An executable `/bin/sh` script `name` in `dir` with `body`.
fn shell_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod script");
    path
}

/// A burrow master with ControlMaster=ask (-MM) whose confirmations come from `askpass`, with
/// `extra` arguments, listening on `ctl`.
async fn ask_master(
    sshd: &Sshd,
    key: &Keypair,
    dir: &Path,
    (ctl, askpass): (&str, &Path),
    extra: &[&str],
) -> ChildGuard {
    let mut cmd = burrow_ssh(sshd, Some(key));
    cmd.env("SSH_ASKPASS", askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .args(["-MM", "-S", ctl, "-N"])
        .args(extra)
        .arg(sshd.dest("root"));
    let mut master = spawn_logged(cmd, dir, "burrow-ask-master");
    wait_socket(Some(&mut master), Path::new(ctl)).await;
    master
}

/// `ssh -O forward -L spec` to the master on `ctl`, run in the background: (exit code, stderr).
fn forward_request(
    sshd: &Sshd,
    key: &Keypair,
    dir: &Path,
    ctl: &str,
    spec: &str,
) -> tokio::task::JoinHandle<(Option<i32>, String)> {
    let mut request = client("ssh", sshd, key);
    request.args(["-S", ctl, "-O", "forward", "-L", spec, "root@127.0.0.1"]);
    let (dir, name) = (
        dir.to_path_buf(),
        format!("forward-{}", spec.replace(':', "_")),
    );
    tokio::task::spawn_blocking(move || {
        let (status, _, err) = run_with_timeout(request, &dir, &name, RUN_TIMEOUT);
        (status.and_then(|s| s.code()), err)
    })
}

/// A ControlMaster=ask confirmation waits for a person; the master's forwards keep working
/// meanwhile (burrow ssh runs one runtime thread, so the prompt must not hold it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_ask_does_not_stall_the_masters_forwards() {
    let (dir, key, sshd) = setup();
    let d = dir.path();
    let echo = echo_server().await;
    let ctl = d.join("pctl").display().to_string();
    // The answer waits (at most 30 s) until the test lets it go.
    let release = d.join("answer-now");
    let body = format!(
        "i=0\nwhile [ ! -e '{}' ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\necho yes\n",
        release.display()
    );
    let askpass = shell_script(d, "slow-askpass.sh", &body);
    let lport = free_port();
    let own = format!("127.0.0.1:{lport}:{}", echo.hostport());
    let _master = ask_master(&sshd, &key, d, (&ctl, &askpass), &["-L", &own]).await;
    transfer_checked(loopback(lport), 1 << 16)
        .await
        .expect("the master's own -L before any ask");

    let asked = format!("127.0.0.1:{}:{}", free_port(), echo.hostport());
    let pending = forward_request(&sshd, &key, d, &ctl, &asked);
    // Until the askpass has started, the master has not reached the prompt yet.
    let mut asking = false;
    for _ in 0..100 {
        if !pids_with_cmdline(&askpass.display().to_string()).is_empty() {
            asking = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(asking, "the master never ran the askpass");
    let during = tokio::time::timeout(
        Duration::from_secs(10),
        transfer_checked(loopback(lport), 1 << 16),
    )
    .await;
    std::fs::write(&release, b"").unwrap();
    assert!(
        matches!(during, Ok(Ok(_))),
        "the master's -L stalled while a confirmation was pending: {during:?}"
    );
    let (code, err) = pending.await.unwrap();
    assert_eq!(code, Some(0), "the confirmed forward: {err}");
}

/// Two passengers that each need a ControlMaster=ask confirmation at once are asked one after
/// the other, as ssh(1) asks: two prompts on one terminal would take each other's answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmations_are_asked_one_at_a_time() {
    let (dir, key, sshd) = setup();
    let d = dir.path();
    let echo = echo_server().await;
    let ctl = d.join("tctl").display().to_string();
    // Marks an overlap when a second askpass starts while the first still runs.
    let inflight = d.join("inflight");
    let overlap = d.join("overlap");
    let body = format!(
        "mkdir '{i}' 2>/dev/null || touch '{o}'\nsleep 0.5\nrmdir '{i}' 2>/dev/null\necho yes\n",
        i = inflight.display(),
        o = overlap.display()
    );
    let askpass = shell_script(d, "turn-askpass.sh", &body);
    let _master = ask_master(&sshd, &key, d, (&ctl, &askpass), &[]).await;
    let requests: Vec<_> = (0..2)
        .map(|_| {
            let spec = format!("127.0.0.1:{}:{}", free_port(), echo.hostport());
            forward_request(&sshd, &key, d, &ctl, &spec)
        })
        .collect();
    for request in requests {
        let (code, err) = request.await.unwrap();
        assert_eq!(code, Some(0), "a confirmed forward: {err}");
    }
    assert!(!overlap.exists(), "two confirmations were asked at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_socket_serves_only_its_owner() {
    if !is_root() || !have("setpriv") {
        println!("SKIP: needs root and setpriv");
        return;
    }
    let (dir, key, sshd) = setup();
    let d = dir.path();
    let ctl = d.join("uctl");
    let ctl_s = ctl.display().to_string();
    let mut cmd = burrow_ssh(&sshd, Some(&key));
    cmd.args(["-M", "-S", &ctl_s, "-N"]).arg(sshd.dest("root"));
    let mut master = spawn_logged(cmd, d, "burrow-owner-master");
    wait_socket(Some(&mut master), &ctl).await;
    // Open the file modes up, so only the master's peer check stands in the way.
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(burrow_bin())
        .args([
            "ssh",
            "-F",
            "/dev/null",
            "-S",
            &ctl_s,
            "-O",
            "check",
            "nobody@127.0.0.1",
        ]);
    let (code, _, err) = run(cmd, &[], d, "other-user");
    assert_eq!(code, 255, "{err}");
    assert!(!err.contains("Master running"), "{err}");
    assert!(master
        .stderr()
        .wait_for_line_async("multiplex uid mismatch: peer euid 65534", UP_TIMEOUT)
        .await
        .is_some());
    let own = run(
        client("burrow", &sshd, &key),
        &["-S", &ctl_s, "-O", "check", "root@127.0.0.1"],
        d,
        "owner",
    );
    assert_eq!(own.0, 0, "{own:?}");
}
