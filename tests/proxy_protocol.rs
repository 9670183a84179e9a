//! `burrow ssh -o ProxyProtocol=v1|v2 -R`: a real nginx behind the tunnel, listening with
//! `proxy_protocol`, logs the visitor's address, not the tunnel's. The visitor connects to the
//! server's -R listener from 127.0.0.2, so the logged address can only have come from the
//! originator the server (burrow serve, or OpenSSH's sshd) reported for the channel.

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::burrow::{allocated_port, burrow_ssh, Relay, UP_TIMEOUT};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The visitor's own address: not the address the relay or the tunnel client use.
const VISITOR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// nginx in the foreground (no daemon, no master), with its config, logs and pid in `dir`;
/// killed by PID when dropped.
struct Nginx {
    _child: ChildGuard,
    port: u16,
    access_log: PathBuf,
}

impl Nginx {
    /// None when nginx is not installed (scripts/test installs `nginx-light`).
    async fn start(dir: &Path) -> Option<Nginx> {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let base = dir.join("nginx");
        std::fs::create_dir_all(&base).expect("nginx dir");
        let port = free_port();
        let access_log = base.join("access.log");
        let d = base.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nuser root;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\nevents {{ worker_connections 64; }}\n\
             http {{\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
               scgi_temp_path {d}/scgi;\n\
               log_format pp 'pp=$proxy_protocol_addr:$proxy_protocol_port \
             server=$proxy_protocol_server_addr:$proxy_protocol_server_port \
             peer=$remote_addr \"$request\" $status';\n\
               access_log {d}/access.log pp;\n\
               server {{\n    listen 127.0.0.1:{port} proxy_protocol;\n\
                 location / {{ return 200 \"hello\\n\"; }}\n  }}\n}}\n"
        );
        let conf_path = base.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let mut cmd = Command::new(bin);
        cmd.arg("-p")
            .arg(&base)
            .arg("-e")
            .arg(base.join("error.log"))
            .arg("-c")
            .arg(&conf_path);
        let mut child = spawn_logged(cmd, &base, "nginx");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        if let Err(e) = wait_listening(&mut child, addr, UP_TIMEOUT).await {
            let log = std::fs::read_to_string(base.join("error.log")).unwrap_or_default();
            panic!("nginx did not start: {e}\n{log}");
        }
        Some(Nginx {
            _child: child,
            port,
            access_log,
        })
    }

    /// The access log line for `path`, waiting (bounded) for nginx to write it.
    async fn log_line(&self, path: &str) -> String {
        let needle = format!("GET {path} ");
        for _ in 0..100 {
            let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(&needle)) {
                return line.to_string();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no access log line for {path}:\n{}",
            std::fs::read_to_string(&self.access_log).unwrap_or_default()
        );
    }
}

/// `GET path` from 127.0.0.2 to the -R listener on 127.0.0.1:`port`; returns the reply.
async fn visit(port: u16, path: &str) -> String {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::V4(SocketAddrV4::new(VISITOR, 0)))
        .expect("bind 127.0.0.2");
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = tokio::time::timeout(UP_TIMEOUT, socket.connect(to))
        .await
        .expect("connect timed out")
        .expect("connect to the -R listener");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: a\r\n\r\n").as_bytes())
        .await
        .expect("send request");
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(UP_TIMEOUT, s.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

/// Brings up `cmd` (`burrow ssh` for a server, without destination) with
/// `-N -o ProxyProtocol=version -R 0:127.0.0.1:NGINX dest`, visits through it from 127.0.0.2,
/// and checks what nginx logged.
async fn check(dir: &Path, nginx: &Nginx, mut cmd: Command, version: &str, who: &str, dest: &str) {
    let target = format!("127.0.0.1:{}", nginx.port);
    cmd.args(["-N", "-o"])
        .arg(format!("ProxyProtocol={version}"))
        .arg("-R")
        .arg(format!("0:{target}"))
        .arg(dest);
    let child = spawn_logged(cmd, dir, &format!("burrow-{who}-{version}"));
    let port = allocated_port(&child, &format!("remote forward to {target}")).await;
    let path = format!("/{who}-{version}");
    let reply = visit(port, &path).await;
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("hello\n"),
        "{who} {version}: nginx did not accept the connection: {reply:?}\n{}",
        child.stderr_text()
    );
    let line = nginx.log_line(&path).await;
    // pp= is the header's source, peer= the TCP peer nginx saw (burrow on A).
    assert!(
        line.starts_with("pp=127.0.0.2:") && line.contains(" peer=127.0.0.1 "),
        "{who} {version}: nginx did not log the visitor's address: {line}"
    );
    // The destination: the server's listener, as the server reported it.
    assert!(
        line.contains(&format!(" server=127.0.0.1:{port} ")),
        "{who} {version}: wrong destination in the header: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_logs_the_visitor_through_burrow_serve() {
    let dir = test_dir();
    let Some(nginx) = Nginx::start(dir.path()).await else {
        eprintln!("SKIP: nginx is not installed (scripts/test installs nginx-light)");
        return;
    };
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let relay = Relay::start(dir.path(), "relay", &[&key.public_line], None, &[]).await;
    for version in ["v1", "v2"] {
        let cmd = relay.burrow_ssh(&key);
        check(dir.path(), &nginx, cmd, version, "relay", "root@127.0.0.1").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_logs_the_visitor_through_openssh_sshd() {
    let dir = test_dir();
    let Some(nginx) = Nginx::start(dir.path()).await else {
        eprintln!("SKIP: nginx is not installed (scripts/test installs nginx-light)");
        return;
    };
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let sshd = Sshd::start(SshdOptions::with_keys(&[&key]));
    for version in ["v1", "v2"] {
        let cmd = burrow_ssh(&sshd, Some(&key));
        check(dir.path(), &nginx, cmd, version, "sshd", &sshd.dest("root")).await;
    }
}

/// `burrow ssh -G` for `host` with these `-o` options: (exit code, stdout, stderr).
fn dump(options: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(burrow_bin());
    cmd.args(["ssh", "-F", "/dev/null", "-G"]);
    for o in options {
        cmd.arg("-o").arg(o);
    }
    let out = cmd.arg("a.example").output().expect("run burrow ssh -G");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dump_shows_the_extension_and_a_bad_value_is_named() {
    let (code, out, err) = dump(&["ProxyProtocol=v2"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.lines().any(|l| l == "proxyprotocol v2"), "{out}");
    assert!(!err.contains("does not use this option"), "{err}");
    // Unset: no line, so the output stays what ssh -G prints.
    let (_, out, _) = dump(&[]);
    assert!(!out.contains("proxyprotocol"), "{out}");
    let (code, _, err) = dump(&["ProxyProtocol=v3"]);
    assert_eq!(code, Some(255));
    assert!(
        err.contains("ProxyProtocol") && err.contains("\"v3\""),
        "the error names the option and the value: {err}"
    );
}

/// A TCP relay between `burrow up` and `burrow serve` whose connections the test can cut, so
/// the session drops while both processes live on (and resumable streams re-attach).
struct Cuttable {
    addr: SocketAddr,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Cuttable {
    async fn start(target: SocketAddr) -> Cuttable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind cuttable");
        let addr = listener.local_addr().expect("cuttable address");
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let list = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                list.lock().unwrap().push(task);
            }
        });
        Cuttable {
            addr,
            conns,
            accept,
        }
    }

    /// Drops every connection through it (both sides see them close).
    fn cut(&self) {
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// A local service that records every byte of every connection it accepted.
async fn recorder() -> (
    u16,
    std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind recorder");
    let port = listener.local_addr().expect("recorder address").port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let record = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let index = {
                let mut all = record.lock().unwrap();
                all.push(Vec::new());
                all.len() - 1
            };
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    record.lock().unwrap()[index].extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    (port, seen, task)
}

/// Starts `burrow up` on `file`; returns once the relay listens on loopback `port` for it.
async fn start_up(dir: &Path, file: &Path, port: u16) -> ChildGuard {
    let mut cmd = Command::new(burrow_bin());
    cmd.arg("up")
        .arg(file)
        .arg("--control")
        .arg(dir.join("up.sock"));
    let up = spawn_logged(cmd, dir, "burrow-up");
    let listener = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    for _ in 0..150 {
        if wait_port(listener, Duration::from_millis(200)).await {
            return up;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("-R listener {port} never up:\n{}", up.stderr_text());
}

/// `burrow up` with `options = ["ProxyProtocol=v1"]` in tunnels.toml and resumable streams:
/// the local service gets one header for its one connection, also after the session dropped
/// and the stream re-attached on the next one (the local connection is kept, so no second
/// header is written into it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burrow_up_sends_one_header_across_a_resume() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let serve = "[limits]\nresume_grace_secs = 60\nkeepalive_interval_secs = 1\n";
    let relay = Relay::start(dir.path(), "relay", &[&key.public_line], Some(serve), &[]).await;
    let cut = Cuttable::start(relay.addr).await;
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!(
            "[127.0.0.1]:{} {}\n",
            cut.addr.port(),
            public_key_line(&relay.host_key)
        ),
    )
    .expect("known_hosts");
    let (service, seen, _service_task) = recorder().await;
    let published = free_port();
    let file = dir.path().join("tunnels.toml");
    std::fs::write(
        &file,
        format!(
            "[[tunnel]]\nname = \"a\"\nserver = \"root@127.0.0.1:{}\"\n\
             remote = [\"{published}:127.0.0.1:{service}\"]\nidentity = \"{}\"\n\
             known_hosts = \"{}\"\nssh_config = \"none\"\nkeepalive_interval = 1\n\
             keepalive_count = 3\nbackoff_initial = 1\nbackoff_max = 2\nresume_grace = 60\n\
             options = [\"ProxyProtocol=v1\"]\n",
            cut.addr.port(),
            key.private.display(),
            known_hosts.display()
        ),
    )
    .expect("tunnels.toml");
    let up = start_up(dir.path(), &file, published).await;
    let listener = SocketAddr::from((Ipv4Addr::LOCALHOST, published));
    // wait_port's probes reached the service too (from 127.0.0.1): the visitor's connections
    // are the ones with its bytes or its address.
    let visitors = |all: &[Vec<u8>]| -> Vec<String> {
        all.iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .filter(|c| c.contains("one;") || c.starts_with("PROXY TCP4 127.0.0.2 "))
            .collect()
    };

    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::V4(SocketAddrV4::new(VISITOR, 0)))
        .expect("bind 127.0.0.2");
    let mut visitor = socket.connect(listener).await.expect("visitor connects");
    let local = visitor.local_addr().expect("visitor address");
    visitor.write_all(b"one;").await.expect("send one");
    let header = format!(
        "PROXY TCP4 127.0.0.2 127.0.0.1 {} {published}\r\n",
        local.port()
    );
    let got = |want: String| {
        let seen = seen.clone();
        async move {
            for _ in 0..300 {
                let all = visitors(&seen.lock().unwrap());
                if all.iter().any(|c| c.ends_with(&want)) {
                    return Some(all);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        }
    };
    let first = got("one;".into()).await;
    assert!(
        first.is_some(),
        "first bytes never arrived:\n{}",
        up.stderr_text()
    );

    cut.cut();
    visitor.write_all(b"two;").await.expect("send two");
    let all = got("two;".into()).await.unwrap_or_else(|| {
        panic!(
            "the stream did not re-attach:\n{}\n{}",
            up.stderr_text(),
            relay.child.stderr_text()
        )
    });
    assert_eq!(
        all,
        vec![format!("{header}one;two;")],
        "one local connection: one header, then the stream's bytes"
    );
    // It was a re-attach on a new session, not a connection that never broke.
    assert!(
        up.stderr_text().contains("resumable stream re-attached"),
        "no re-attach:\n{}",
        up.stderr_text()
    );
}

/// tunnels.toml's `proxy_protocol`, per tunnel and per forward (the forward's wins), through
/// `burrow up` and a burrow relay: nginx behind a forward whose own value is v2 logs the
/// visitor's address; a forward that inherits the tunnel's v1 (over `[defaults]`' v2) starts
/// with a v1 line; a forward whose own value is none gets the visitor's bytes alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burrow_up_sends_the_header_each_forward_asks_for() {
    let dir = test_dir();
    let Some(nginx) = Nginx::start(dir.path()).await else {
        eprintln!("SKIP: nginx is not installed (scripts/test installs nginx-light)");
        return;
    };
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let relay = Relay::start(dir.path(), "relay", &[&key.public_line], None, &[]).await;
    let (service, seen, _service_task) = recorder().await;
    let (to_nginx, inherits, plain) = (free_port(), free_port(), free_port());
    let file = dir.path().join("tunnels.toml");
    std::fs::write(
        &file,
        format!(
            "[defaults]\nproxy_protocol = \"v2\"\n\n[[tunnel]]\nname = \"a\"\n\
             server = \"root@127.0.0.1:{}\"\nidentity = \"{}\"\nknown_hosts = \"{}\"\n\
             ssh_config = \"none\"\nproxy_protocol = \"v1\"\nremote = [\n\
             {{ forward = \"{to_nginx}:127.0.0.1:{}\", proxy_protocol = \"v2\" }},\n\
             \"{inherits}:127.0.0.1:{service}\",\n\
             {{ forward = \"{plain}:127.0.0.1:{service}\", proxy_protocol = \"none\" }},\n]\n",
            relay.addr.port(),
            key.private.display(),
            relay.known_hosts.display(),
            nginx.port,
        ),
    )
    .expect("tunnels.toml");
    // The last forward is requested last: once it listens, all do.
    let up = start_up(dir.path(), &file, plain).await;

    // The forward's own v2, to nginx.
    let reply = visit(to_nginx, "/up-v2").await;
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("hello\n"),
        "nginx did not accept the connection: {reply:?}\n{}",
        up.stderr_text()
    );
    let line = nginx.log_line("/up-v2").await;
    assert!(
        line.starts_with("pp=127.0.0.2:")
            && line.contains(&format!(" server=127.0.0.1:{to_nginx} ")),
        "nginx did not log the visitor's address: {line}"
    );

    // The tunnel's v1, and none, to the recorder.
    for (port, payload) in [(inherits, "inherits;"), (plain, "plain;")] {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::V4(SocketAddrV4::new(VISITOR, 0)))
            .expect("bind 127.0.0.2");
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut visitor = socket.connect(to).await.expect("visitor connects");
        let from = visitor.local_addr().expect("visitor address").port();
        visitor.write_all(payload.as_bytes()).await.expect("send");
        let want = match payload {
            "inherits;" => format!("PROXY TCP4 127.0.0.2 127.0.0.1 {from} {port}\r\n{payload}"),
            _ => payload.to_string(),
        };
        let mut got = None;
        for _ in 0..100 {
            let all = seen.lock().unwrap().clone();
            if let Some(c) = all.iter().find(|c| c.ends_with(payload.as_bytes())) {
                got = Some(String::from_utf8_lossy(c).into_owned());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            got.as_deref(),
            Some(want.as_str()),
            "forward {port}:\n{}",
            up.stderr_text()
        );
    }
}
