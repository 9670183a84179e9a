//! `burrow serve --metrics`: the JSON status API, Prometheus metrics and the live status page,
//! with real OpenSSH and burrow clients carrying traffic through the relay; access with a bearer
//! token; and the page as headless Chromium renders it (screenshot in target/status-page.png).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::burrow::{allocated_port, Relay, UP_TIMEOUT};
use common::chromium::{self, Chromium};
use common::*;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A relay with two authenticated sessions, each holding one -R forward to an echo service:
/// `alice` through OpenSSH's `ssh`, `bob` through `burrow ssh`.
struct TwoSessions {
    dir: tempfile::TempDir,
    relay: Relay,
    keys: [Keypair; 2],
    ports: [u16; 2],
    status: SocketAddr,
    _clients: Vec<ChildGuard>,
    _echo: Service,
}

async fn two_sessions(extra: &[&str]) -> TwoSessions {
    let dir = test_dir();
    let alice = keygen(dir.path(), "alice", KeyKind::Ed25519, None);
    let bob = keygen(dir.path(), "bob", KeyKind::Ed25519, None);
    // Alice may open nothing but 127.0.0.1:1, so an -W elsewhere is a refusal to count.
    let authorized = [
        format!("permitopen=\"127.0.0.1:1\" {}", alice.public_line),
        bob.public_line.clone(),
    ];
    let mut flags = vec!["--metrics", "127.0.0.1:0"];
    flags.extend_from_slice(extra);
    let relay = Relay::start(dir.path(), "relay", &authorized, None, &flags).await;
    let status = relay.metrics_addr().await;
    let echo = echo_server().await;
    let target = format!("remote forward to {}", echo.hostport());
    let mut clients = Vec::new();
    let mut ports = [0u16; 2];
    for (i, (key, mut cmd)) in [(&alice, relay.ssh(&alice)), (&bob, relay.burrow_ssh(&bob))]
        .into_iter()
        .enumerate()
    {
        cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
            .arg(format!("0:{}", echo.hostport()))
            .arg("root@127.0.0.1");
        let child = spawn_logged(cmd, dir.path(), &format!("client-{}", key_name(key)));
        ports[i] = allocated_port(&child, &target).await;
        assert!(wait_port(loopback(ports[i]), UP_TIMEOUT).await);
        clients.push(child);
    }
    TwoSessions {
        dir,
        relay,
        keys: [alice, bob],
        ports,
        status,
        _clients: clients,
        _echo: echo,
    }
}

fn key_name(key: &Keypair) -> String {
    key.private
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

async fn get_json(addr: SocketAddr) -> Value {
    let (code, body) = http_get(addr, "/api/status", HTTP_TIMEOUT)
        .await
        .expect("GET /api/status");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("status JSON")
}

/// The session of `key` and its forward on relay port `port`.
fn session_and_forward<'a>(doc: &'a Value, key: &Keypair, port: u16) -> (&'a Value, &'a Value) {
    let fp = key.fingerprint();
    let session = doc["sessions"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["fingerprint"] == fp.as_str()))
        .unwrap_or_else(|| panic!("no session for {fp}:\n{doc:#}"));
    let forward = session["forwards"]
        .as_array()
        .and_then(|f| {
            f.iter().find(|f| {
                f["kind"] == "remote"
                    && f["bind"]
                        .as_str()
                        .is_some_and(|b| b.ends_with(&format!(":{port}")))
            })
        })
        .unwrap_or_else(|| panic!("no forward on port {port}:\n{session:#}"));
    (session, forward)
}

fn bytes(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

/// Sends `n` bytes through each forward and gets them back.
async fn traffic(ts: &TwoSessions, sizes: [u64; 2]) {
    for (port, n) in ts.ports.iter().zip(sizes) {
        transfer_checked(loopback(*port), n)
            .await
            .unwrap_or_else(|e| panic!("echo through relay port {port}: {e}"));
    }
}

/// An unknown key (auth failure) and a -W outside alice's permitopen (refusal); returns the
/// unknown key.
fn provoke_auth_failure_and_refusal(ts: &TwoSessions) -> Keypair {
    let stranger = keygen(ts.dir.path(), "stranger", KeyKind::Ed25519, None);
    let mut cmd = ts.relay.ssh(&stranger);
    cmd.args(["-N", "root@127.0.0.1"]);
    let (st, _, _) = run_with_timeout(cmd, ts.dir.path(), "ssh-stranger", UP_TIMEOUT);
    assert!(
        st.is_some_and(|s| !s.success()),
        "an unknown key must be refused"
    );
    let mut cmd = ts.relay.ssh(&ts.keys[0]);
    cmd.args(["-W", "127.0.0.1:9", "root@127.0.0.1"]);
    let (st, _, err) = run_with_timeout(cmd, ts.dir.path(), "ssh-W-refused", UP_TIMEOUT);
    assert!(
        st.is_some_and(|s| !s.success()),
        "-W outside permitopen must fail"
    );
    assert!(err.contains("administratively prohibited"), "{err}");
    stranger
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_api_lists_both_sessions_with_forwards_and_growing_bytes() {
    let ts = two_sessions(&[]).await;
    traffic(&ts, [MIB, 2 * MIB]).await;
    let doc = get_json(ts.status).await;
    assert_eq!(doc["kind"], "serve");
    assert_eq!(doc["sessions"].as_array().map(Vec::len), Some(2), "{doc:#}");
    let mut before = Vec::new();
    for (i, n) in [(0, MIB), (1, 2 * MIB)] {
        let (session, forward) = session_and_forward(&doc, &ts.keys[i], ts.ports[i]);
        assert_eq!(session["comment"], key_name(&ts.keys[i]).as_str());
        assert!(
            session["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "{session}"
        );
        assert!(
            forward["bound"].as_array().is_some_and(|b| !b.is_empty()),
            "{forward}"
        );
        assert!(
            bytes(forward, "sent_bytes") >= n && bytes(forward, "received_bytes") >= n,
            "{forward}"
        );
        assert!(bytes(forward, "connections_total") >= 1, "{forward}");
        before.push(bytes(forward, "sent_bytes"));
    }

    // More traffic: the same counters grow.
    traffic(&ts, [MIB, MIB]).await;
    let doc = get_json(ts.status).await;
    for (i, was) in before.iter().enumerate() {
        let (_, forward) = session_and_forward(&doc, &ts.keys[i], ts.ports[i]);
        assert!(
            bytes(forward, "sent_bytes") >= was + MIB,
            "{forward} (was {was})"
        );
    }

    // The sampler saw the traffic: each forward has a non-zero point in its rate history.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let doc = get_json(ts.status).await;
        let seen = (0..2).all(|i| {
            let (_, f) = session_and_forward(&doc, &ts.keys[i], ts.ports[i]);
            f["throughput"]["sent_history"]
                .as_array()
                .is_some_and(|h| h.iter().any(|v| v.as_u64() > Some(0)))
        });
        if seen {
            break;
        }
        assert!(Instant::now() < deadline, "no throughput history:\n{doc:#}");
        traffic(&ts, [64 * KIB, 64 * KIB]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Metrics read the same counters.
    let (code, body) = http_get(ts.status, "/metrics", HTTP_TIMEOUT).await.unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(code, 200);
    assert!(text.contains("\nburrow_relay_sessions 2\n"), "{text}");
    assert!(text.contains("\nburrow_relay_listeners 2\n"), "{text}");
    let sent_total: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("burrow_relay_sent_bytes_total "))
        .and_then(|v| v.parse().ok())
        .expect("sent bytes metric");
    assert!(sent_total >= 5 * MIB, "{text}");

    // Refusals and authentication failures are counted, by reason, and listed as events.
    let stranger = provoke_auth_failure_and_refusal(&ts);
    let doc = get_json(ts.status).await;
    let totals = &doc["totals"];
    assert!(bytes(totals, "auth_failures") >= 1, "{totals}");
    assert_eq!(totals["refusals"]["permitopen"], 1, "{totals}");
    let events = doc["events"].as_array().expect("events");
    let has = |kind: &str, text: &str| {
        events
            .iter()
            .any(|e| e["kind"] == kind && e["detail"].as_str().is_some_and(|d| d.contains(text)))
    };
    assert!(has("refusal", "direct-tcpip 127.0.0.1:9"), "{events:#?}");
    assert!(has("auth_failure", &stranger.fingerprint()), "{events:#?}");
    assert_eq!(
        events.iter().filter(|e| e["kind"] == "connect").count(),
        2 + 1,
        "{events:#?}"
    );
    let (code, body) = http_get(ts.status, "/metrics", HTTP_TIMEOUT).await.unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(code, 200);
    assert!(
        text.contains("burrow_relay_refusals_total{reason=\"permitopen\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_endpoint_with_a_token_answers_401_without_it() {
    let dir = test_dir();
    let key = keygen(dir.path(), "k", KeyKind::Ed25519, None);
    let secret = "3c0f5e1d9a7b4e2f8d6c1a0b9e8f7d6c";
    let token = dir.path().join("metrics.token");
    std::fs::write(&token, format!("{secret}\n")).unwrap();
    let token_arg = token.to_string_lossy().into_owned();
    let relay = Relay::start(
        dir.path(),
        "relay",
        &[&key.public_line],
        None,
        &[
            "--metrics",
            "127.0.0.1:0",
            "--metrics-token-file",
            &token_arg,
        ],
    )
    .await;
    let addr = relay.metrics_addr().await;
    for path in ["/metrics", "/api/status", "/"] {
        for auth in [
            None,
            Some("Bearer wrong-token-of-enough-length"),
            Some(secret),
        ] {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| ("Authorization", a)).into_iter().collect();
            let (code, body) = http_get_with(addr, path, &headers, HTTP_TIMEOUT)
                .await
                .unwrap();
            let body = String::from_utf8_lossy(&body);
            assert_eq!(code, 401, "{path} with {auth:?}: {body}");
            assert!(
                !body.contains("burrow_relay") && !body.contains("sessions"),
                "{body}"
            );
        }
    }
    let bearer = format!("Bearer {secret}");
    let (code, body) = http_get_with(
        addr,
        "/metrics",
        &[("Authorization", &bearer)],
        HTTP_TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).contains("\nburrow_relay_sessions 0\n"));

    // Not loopback and no token: refused at start, with the reason.
    let mut cmd = Command::new(burrow_bin());
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "0.0.0.0:0",
        "--host-key",
    ])
    .arg(dir.path().join("hk2"))
    .arg("--authorized-keys")
    .arg(&relay.authorized_keys);
    let (st, _, err) = run_with_timeout(cmd, dir.path(), "serve-public-metrics", UP_TIMEOUT);
    assert!(st.is_some_and(|s| !s.success()), "{err}");
    assert!(
        err.contains("0.0.0.0:0") && err.contains("--metrics-token-file"),
        "{err}"
    );
}

/// Forward rows of the rendered page: (relay port, bytes sent) per `<tr class="forward">`.
fn rendered_forwards(dom: &str) -> Vec<(u16, u64)> {
    chromium::start_tags(dom, "<tr class=\"forward\"")
        .into_iter()
        .filter_map(|tag| {
            let port = chromium::attr(tag, "data-bind")?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let sent = chromium::attr(tag, "data-sent")?.parse().ok()?;
            Some((port, sent))
        })
        .collect()
}

fn rendered_sent(dom: &str, port: u16) -> u64 {
    rendered_forwards(dom)
        .into_iter()
        .find(|(p, _)| *p == port)
        .map(|(_, sent)| sent)
        .unwrap_or_else(|| panic!("no forward row for port {port} in the rendered page:\n{dom}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_headless_chromium_shows_sessions_and_growing_bytes() {
    let Some(bin) = chromium::find() else {
        println!("SKIP status page browser test: no chromium on PATH (scripts/test installs Debian's `chromium`)");
        return;
    };
    let ts = two_sessions(&[]).await;
    let mut browser = Chromium::new(bin, ts.dir.path());
    if let Err(why) = browser.probe().await {
        println!("SKIP status page browser test: chromium cannot run here: {why}");
        return;
    }
    // Traffic spread over a few seconds, so the sparklines have a shape.
    for round in 0..5u64 {
        traffic(&ts, [(round + 1) * 192 * KIB, (5 - round) * 160 * KIB]).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    provoke_auth_failure_and_refusal(&ts);
    let url = format!("http://{}/", ts.status);
    let budget = Duration::from_secs(4);
    let first = browser
        .dump_dom(&url, budget)
        .await
        .expect("chromium --dump-dom");
    let polls: u32 = chromium::start_tags(&first, "<body")
        .first()
        .and_then(|t| chromium::attr(t, "data-polls"))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    assert!(polls >= 1, "the page never polled /api/status:\n{first}");
    let cards = chromium::start_tags(&first, "<div class=\"card session\"");
    assert_eq!(cards.len(), 2, "two session cards:\n{first}");
    for key in &ts.keys {
        let fp = key.fingerprint();
        assert!(
            cards
                .iter()
                .any(|c| chromium::attr(c, "data-fingerprint").as_deref() == Some(fp.as_str())),
            "no card for {fp}:\n{first}"
        );
        assert!(
            first.contains(&key_name(key)),
            "comment {} not shown",
            key_name(key)
        );
    }
    let sent_before: Vec<u64> = ts.ports.iter().map(|p| rendered_sent(&first, *p)).collect();
    assert!(sent_before.iter().all(|s| *s > 0), "{sent_before:?}");

    traffic(&ts, [MIB, MIB]).await;
    let second = browser
        .dump_dom(&url, budget)
        .await
        .expect("chromium --dump-dom");
    for (port, before) in ts.ports.iter().zip(&sent_before) {
        let after = rendered_sent(&second, *port);
        assert!(after >= before + MIB, "port {port}: {before} -> {after}");
    }

    // The screenshot for people: with traffic flowing, so rates and sparklines are live.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background = {
        let stop = stop.clone();
        let ports = ts.ports;
        tokio::spawn(async move {
            for i in 0..300u64 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let port = ports[(i % 2) as usize];
                let _ = transfer_checked(loopback(port), (96 + (i % 5) * 64) * KIB).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("status-page.png");
    let shot = browser.screenshot(&url, &target, (1280, 960), budget).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    background.await.expect("background traffic task");
    shot.expect("chromium --screenshot");
    let png = std::fs::read(&target).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "not a real screenshot"
    );
    println!("status page screenshot: {}", target.display());
}

/// `burrow status --json` of the `burrow up` behind `control`.
fn burrow_status(control: &std::path::Path) -> Value {
    let out = Command::new(burrow_bin())
        .args(["status", "--json", "--control"])
        .arg(control)
        .output()
        .expect("burrow status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_the_same_counters_as_burrow_status_on_its_page() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let relay = Relay::start(dir.path(), "relay", &[&key.public_line], None, &[]).await;
    let echo = echo_server().await;
    let file = dir.path().join("tunnels.toml");
    std::fs::write(
        &file,
        format!(
            "[defaults]\nidentity = \"{}\"\nknown_hosts = \"{}\"\nssh_config = \"none\"\nconnect_timeout = 5\n\n\
             [[tunnel]]\nname = \"web\"\nserver = \"root@127.0.0.1:{}\"\nremote = [\"0:{}\"]\n",
            key.private.display(),
            relay.known_hosts.display(),
            relay.addr.port(),
            echo.hostport()
        ),
    )
    .unwrap();
    let control = dir.path().join("up.sock");
    let mut cmd = Command::new(burrow_bin());
    cmd.arg("up")
        .arg(&file)
        .arg("--control")
        .arg(&control)
        .args(["--metrics", "127.0.0.1:0"]);
    let up = spawn_logged(cmd, dir.path(), "burrow-up");
    let addr = up
        .stderr()
        .wait_until_async(UP_TIMEOUT, common::output::logged_metrics_address)
        .await
        .unwrap_or_else(|| panic!("no metrics address:\n{}", up.stderr_text()));

    // Up, with its forward and the port the relay allocated.
    let deadline = Instant::now() + Duration::from_secs(60);
    let port = loop {
        let doc = get_json(addr).await;
        let t = &doc["tunnels"][0];
        let port = t["forwards"][0]["spec"]
            .as_str()
            .and_then(|f| f.split("(relay port ").nth(1))
            .and_then(|p| p.trim_end_matches(')').parse::<u16>().ok());
        match port {
            Some(p) if t["state"] == "up" => break p,
            _ => assert!(
                Instant::now() < deadline,
                "tunnel not up:\n{doc:#}\n{}",
                up.stderr_text()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    transfer_checked(loopback(port), MIB)
        .await
        .expect("echo through the tunnel");

    // With a burrow relay the connection is a resumable stream, which ends once both sides
    // acknowledged each other's last bytes: wait for that before comparing snapshots.
    for _ in 0..100 {
        let doc = get_json(addr).await;
        if doc["tunnels"][0]["connections_active"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One source of truth: the page's JSON, `burrow status` and /metrics agree.
    let doc = get_json(addr).await;
    let api = &doc["tunnels"][0];
    let cli = burrow_status(&control);
    let cli = &cli[0];
    assert_eq!(doc["kind"], "up");
    for field in [
        "name",
        "state",
        "since",
        "reconnects",
        "bytes_out",
        "bytes_in",
        "forwards",
    ] {
        assert_eq!(api[field], cli[field], "{field}: {api} vs {cli}");
    }
    assert!(
        bytes(api, "bytes_out") >= MIB && bytes(api, "bytes_in") >= MIB,
        "{api}"
    );
    let forward = &api["forwards"][0];
    assert!(
        bytes(forward, "bytes_out") >= MIB && bytes(forward, "connections_total") == 1,
        "{forward}"
    );
    let (_, body) = http_get(addr, "/metrics", HTTP_TIMEOUT).await.unwrap();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains(&format!(
            "burrow_tunnel_sent_bytes_total{{tunnel=\"web\"}} {}",
            api["bytes_out"]
        )),
        "{text}"
    );
    assert!(
        doc["events"].as_array().is_some_and(|e| e
            .iter()
            .any(|e| e["kind"] == "connect" && e["subject"] == "web")),
        "{doc:#}"
    );

    // The page draws the tunnel from the same document.
    let Some(bin) = chromium::find() else {
        println!("note: no chromium on PATH; the up page was not rendered");
        return;
    };
    let mut browser = Chromium::new(bin, dir.path());
    if let Err(why) = browser.probe().await {
        println!("note: chromium cannot run here, the up page was not rendered: {why}");
        return;
    }
    let dom = browser
        .dump_dom(&format!("http://{addr}/"), Duration::from_secs(3))
        .await
        .expect("chromium --dump-dom");
    let card = chromium::start_tags(&dom, "<div class=\"card tunnel\"")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no tunnel card:\n{dom}"));
    assert_eq!(chromium::attr(card, "data-tunnel").as_deref(), Some("web"));
    assert_eq!(chromium::attr(card, "data-state").as_deref(), Some("up"));
    let sent: u64 = chromium::attr(card, "data-sent")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(sent >= MIB, "{card}");
    let row = chromium::start_tags(&dom, "<tr class=\"forward\"")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no forward row:\n{dom}"));
    assert!(
        chromium::attr(row, "data-spec")
            .is_some_and(|s| s.ends_with(&format!("(relay port {port})"))),
        "{row}"
    );
    let sent: u64 = chromium::attr(row, "data-sent")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(sent >= MIB, "{row}");
    let shot = dir.path().join("up-page.png");
    browser
        .screenshot(
            &format!("http://{addr}/"),
            &shot,
            (1280, 720),
            Duration::from_secs(3),
        )
        .await
        .expect("chromium --screenshot");
    let copy = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("status-page-up.png");
    std::fs::copy(&shot, &copy).expect("copy screenshot");
    println!("up page screenshot: {}", copy.display());
}
