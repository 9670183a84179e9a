//! `burrow demo`: the A/B/C scenario in one process on loopback, with no set-up. A relay (B), an
//! "inside" machine (A) publishing an HTTP and an echo service through a reverse tunnel, and an
//! outside client (C) using them through B. Every step is checked; the demo fails (exit 1) if any
//! step does not really work, and it leaves no process or file behind.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::cli::SshArgs;
use crate::client::{Established, Session};
use crate::config::options::{self, ConfigPaths};
use crate::server::config::{ServeConfig, ServeFile, ServeOverrides};

/// Bytes pushed through the tunnel to measure throughput.
const TRANSFER: usize = 64 * 1024 * 1024;
/// The page A serves.
const PAGE: &str = "<h1>Hello from A</h1>\nThis page lives inside the private network.\n";

/// Runs the demo; prints each step on stdout.
pub async fn run() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("burrow-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let stop = CancellationToken::new();
    let result = scenario(dir.path(), &stop).await;
    stop.cancel();
    result
}

async fn scenario(dir: &Path, stop: &CancellationToken) -> anyhow::Result<()> {
    println!(
        "burrow demo: C reaches services on A (private) through the relay B, all on 127.0.0.1\n"
    );

    // A's private services.
    let web = serve_http(stop.clone()).await?;
    let echo = serve_echo(stop.clone()).await?;
    println!("[A] inside services: HTTP on {web}, echo on {echo} (not reachable from outside)");

    // B: the relay, with A's key allowed to publish ports and nothing else.
    let key_path = dir.join("id_ed25519_A");
    let public = write_client_key(&key_path)?;
    let ak = dir.join("authorized_keys");
    std::fs::write(
        &ak,
        format!("restrict,port-forwarding {public} machine-A\n"),
    )?;
    set_private(&ak)?;
    let (relay, relay_addr, host_line) = start_relay(dir, &ak).await?;
    println!("[B] relay `burrow serve` listening on {relay_addr}; A's key may forward ports and nothing else (restrict,port-forwarding)");

    // A: reverse tunnel to B (what `burrow ssh -N -R ...` does).
    let known_hosts = dir.join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{} {host_line}\n", relay_addr.port()),
    )?;
    let opts = tunnel_options(&key_path, &known_hosts, relay_addr, web, echo)?;
    let session = Session::establish(&opts, stop.child_token())
        .await
        .context("A could not log in to B")?;
    let ports = remote_ports(session.start_forwards(&opts).await?)?;
    let (web_port, echo_port) = (ports[0], ports[1]);
    println!("[A] `burrow ssh -N -R 127.0.0.1:0:{web} -R 127.0.0.1:0:{echo} tunnel@B`");
    println!(
        "[B] gateway ports: B:{web_port} -> A's HTTP, B:{echo_port} -> A's echo (allocated by B)"
    );

    // C: uses B's ports; the traffic travels B -> SSH session -> A.
    let via_web = SocketAddr::from(([127, 0, 0, 1], web_port));
    let body = http_get(via_web)
        .await
        .context("C fetching A's page through B")?;
    ensure!(
        body == PAGE.as_bytes(),
        "C got a different page than A serves"
    );
    println!(
        "[C] GET http://B:{web_port}/ -> 200, {} bytes, same bytes as A served:",
        body.len()
    );
    for line in PAGE.lines() {
        println!("      | {line}");
    }
    let via_echo = SocketAddr::from(([127, 0, 0, 1], echo_port));
    let (elapsed, digest) = echo_transfer(via_echo, TRANSFER)
        .await
        .context("C's transfer through B")?;
    let mib = TRANSFER as f64 / (1024.0 * 1024.0);
    println!(
        "[C] sent {mib:.0} MiB to A's echo through B and got every byte back (sha256 {}…) in {:.2} s: {:.0} MiB/s each way",
        &digest[..16],
        elapsed.as_secs_f64(),
        mib / elapsed.as_secs_f64()
    );

    session.close().await;
    crate::server::shutdown(&relay).await;
    println!("\nAll steps worked; tunnel, relay and services stopped, temporary files removed.\n");
    print_real_setup();
    Ok(())
}

fn tunnel_options(
    key: &Path,
    known_hosts: &Path,
    relay: SocketAddr,
    web: SocketAddr,
    echo: SocketAddr,
) -> anyhow::Result<options::ClientOptions> {
    let args = SshArgs {
        destination: "tunnel@127.0.0.1".into(),
        port: Some(relay.port().to_string()),
        identity: vec![key.to_path_buf()],
        remote: vec![format!("127.0.0.1:0:{web}"), format!("127.0.0.1:0:{echo}")],
        options: vec![
            format!("UserKnownHostsFile={}", known_hosts.display()),
            "GlobalKnownHostsFile=/dev/null".into(),
            "StrictHostKeyChecking=yes".into(),
            "BatchMode=yes".into(),
            "IdentitiesOnly=yes".into(),
            "IdentityAgent=none".into(),
            "ExitOnForwardFailure=yes".into(),
            "ServerAliveInterval=5".into(),
        ],
        no_command: true,
        config_file: Some("none".into()),
        ..SshArgs::default()
    };
    let paths = ConfigPaths::for_args(args.config_file.as_deref());
    Ok(options::resolve(&args, &paths)?)
}

fn remote_ports(up: Vec<Established>) -> anyhow::Result<Vec<u16>> {
    let ports: Vec<u16> = up
        .into_iter()
        .filter_map(|e| match e {
            Established::Remote { port } => u16::try_from(port).ok(),
            Established::Local { .. } => None,
        })
        .collect();
    if ports.len() != 2 {
        bail!("expected two remote forwards, got {}", ports.len());
    }
    Ok(ports)
}

/// Writes an ed25519 key for A (0600) and returns its public line.
fn write_client_key(path: &Path) -> anyhow::Result<String> {
    let key = russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)
        .context("generating a key")?;
    let text = key.to_openssh(russh::keys::ssh_key::LineEnding::LF)?;
    std::fs::write(path, text.as_bytes())?;
    set_private(path)?;
    Ok(key.public_key().to_openssh()?)
}

fn set_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

async fn start_relay(
    dir: &Path,
    authorized_keys: &Path,
) -> anyhow::Result<(Arc<crate::server::Relay>, SocketAddr, String)> {
    let overrides = ServeOverrides {
        listen: Some("127.0.0.1:0".into()),
        host_key: Some(dir.join("host_key")),
        authorized_keys: Some(authorized_keys.to_path_buf()),
        // Honour the bind address A asks for (127.0.0.1 here): the demo never listens beyond
        // loopback. On a real B, `--gateway-ports yes` opens the ports to C.
        gateway_ports: Some("clientspecified".into()),
        ..ServeOverrides::default()
    };
    // The demo's files sit in its own 0700 temporary directory, but under /tmp, which
    // sshd's StrictModes (and so burrow's) refuses as a parent of authorized_keys.
    let file = ServeFile {
        strict_modes: Some(false),
        ..ServeFile::default()
    };
    let config = ServeConfig::from_parts(file, &overrides, "demo")?;
    let listener = crate::forward::listen::bind_tcp(config.listen)?;
    let addr = listener.local_addr()?;
    let relay = crate::server::start(config, listener)?;
    let key = russh::keys::load_secret_key(dir.join("host_key"), None)?;
    Ok((relay, addr, key.public_key().to_openssh()?))
}

async fn serve_http(stop: CancellationToken) -> anyhow::Result<SocketAddr> {
    serve_tcp(stop, |mut sock| async move {
        let mut req = [0u8; 1024];
        let _ = sock.read(&mut req).await;
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
            PAGE.len()
        );
        let _ = sock.write_all(reply.as_bytes()).await;
        let _ = sock.shutdown().await;
    })
    .await
}

async fn serve_echo(stop: CancellationToken) -> anyhow::Result<SocketAddr> {
    serve_tcp(stop, |sock| async move {
        let (mut r, mut w) = sock.into_split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// One of A's services on 127.0.0.1:0: `handle` runs per connection until `stop`.
async fn serve_tcp<F, Fut>(stop: CancellationToken, handle: F) -> anyhow::Result<SocketAddr>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = stop.cancelled() => return,
            };
            if let Ok((sock, _)) = accepted {
                tokio::spawn(handle(sock));
            }
        }
    });
    Ok(addr)
}

/// A minimal HTTP/1.1 GET; returns the body.
async fn http_get(addr: SocketAddr) -> anyhow::Result<Vec<u8>> {
    let mut s = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)).await??;
    s.write_all(b"GET / HTTP/1.1\r\nHost: a.internal\r\nConnection: close\r\n\r\n")
        .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw)).await??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP header end")?;
    let head = String::from_utf8_lossy(raw.get(..split).unwrap_or_default());
    ensure!(head.starts_with("HTTP/1.1 200"), "unexpected reply: {head}");
    Ok(raw.get(split + 4..).unwrap_or_default().to_vec())
}

/// Sends `n` pseudo-random bytes to an echo service while reading them back; checks every byte.
async fn echo_transfer(addr: SocketAddr, n: usize) -> anyhow::Result<(Duration, String)> {
    let data: Arc<Vec<u8>> = Arc::new(
        (0..n)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect(),
    );
    let start = Instant::now();
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let (mut r, mut w) = s.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await?;
        w.shutdown().await?;
        anyhow::Ok(())
    });
    let mut back = Vec::with_capacity(n);
    tokio::time::timeout(Duration::from_secs(300), r.read_to_end(&mut back)).await??;
    writer.await??;
    let elapsed = start.elapsed();
    ensure!(back.len() == n, "echo returned {} of {n} bytes", back.len());
    ensure!(back == *data, "echo returned different bytes");
    let digest = Sha256::digest(&back);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok((elapsed, hex))
}

fn print_real_setup() {
    println!(
        "The same across three real machines:

  B (public VPS):   burrow serve --listen 0.0.0.0:2222 --gateway-ports yes \\
                        --authorized-keys /etc/burrow/authorized_keys
                    # authorized_keys: restrict,port-forwarding,permitlisten=\"8086\" ssh-ed25519 AAAA... A
  A (inside):       burrow ssh -f -N -o ExitOnForwardFailure=yes -p 2222 -R 8086:localhost:22 tunnel@B
  C (outside):      ssh -p 8086 user_a@B          # lands on A's sshd
                    (web app instead: -R 8080:localhost:8080 on A, then http://B:8080/ from C)"
    );
}
