//! The endpoint end to end on loopback: routing, access, headers.

use super::*;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Fake;

impl Source for Fake {
    fn metrics(&self) -> String {
        "fake_metric 42\n".into()
    }
    fn samples(&self) -> Vec<(String, Sample)> {
        vec![(
            "f".into(),
            Sample {
                sent: 1,
                received: 2,
            },
        )]
    }
    fn status(&self, _rates: &Rates) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&serde_json::json!({"kind": "fake", "secret": "data"}))
    }
}

fn shared(access: Access) -> Shared {
    Shared {
        access,
        source: Arc::new(Fake),
        rates: Rates::default(),
    }
}

fn get(path: &str, auth: Option<&str>) -> Request {
    Request {
        method: "GET".into(),
        path: path.into(),
        authorization: auth.map(str::to_string),
        host: Some("127.0.0.1:9180".into()),
    }
}

const SECRET: &str = "a-token-of-some-length";

#[test]
fn every_path_needs_the_token_when_one_is_set() {
    let s = shared(Access::Token(Token::from_secret(SECRET).unwrap()));
    for path in ["/", "/app.js", "/metrics", "/api/status", "/nope"] {
        let r = route(&s, &get(path, None));
        assert_eq!(r.status, 401, "{path}");
        let body = String::from_utf8_lossy(&r.body);
        assert!(!body.contains("42") && !body.contains("data"), "{body}");
        assert!(r
            .headers
            .contains(&("WWW-Authenticate", "Bearer realm=\"burrow\"")));
    }
    let bearer = format!("Bearer {SECRET}");
    let r = route(&s, &get("/metrics", Some(&bearer)));
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"fake_metric 42\n"[..])
    );
}

#[test]
fn routes_page_assets_and_api() {
    let s = shared(Access::Loopback);
    let page = route(&s, &get("/", None));
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("src=\"/app.js\"") && !html.contains("<script>"));
    assert!(route(&s, &get("/app.js", None)).body.starts_with(b"//"));
    let api = route(&s, &get("/api/status", None));
    assert_eq!(api.content_type, "application/json");
    assert_eq!(api.body, br#"{"kind":"fake","secret":"data"}"#);
    assert_eq!(route(&s, &get("/x", None)).status, 404);
    let mut post = get("/", None);
    post.method = "POST".into();
    assert_eq!(route(&s, &post).status, 405);
    let mut rebound = get("/api/status", None);
    rebound.host = Some("attacker.example".into());
    assert_eq!(route(&s, &rebound).status, 403);
}

#[test]
fn non_loopback_needs_a_token_file() {
    let any: SocketAddr = "0.0.0.0:9180".parse().unwrap();
    let e = ObserveConfig::new(any, None).unwrap_err().to_string();
    assert!(
        e.contains("0.0.0.0:9180") && e.contains("--metrics-token-file"),
        "{e}"
    );
    assert!(ObserveConfig::new(any, Some("/t".into())).is_ok());
    assert!(ObserveConfig::new("[::1]:0".parse().unwrap(), None).is_ok());
}

async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn serves_over_tcp_and_stops_on_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{SECRET}\n")).unwrap();
    let config = ObserveConfig::new("127.0.0.1:0".parse().unwrap(), Some(token)).unwrap();
    let cancel = CancellationToken::new();
    let server = start(&config, Arc::new(Fake), cancel.clone())
        .await
        .unwrap();
    let addr = server.local_addr();
    let denied = raw(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(denied.starts_with("HTTP/1.1 401 "), "{denied}");
    assert!(!denied.contains("fake_metric"), "{denied}");
    let ok = raw(
        addr,
        &format!("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\r\n\r\n"),
    )
    .await;
    assert!(
        ok.starts_with("HTTP/1.1 200 ") && ok.ends_with("fake_metric 42\n"),
        "{ok}"
    );
    let junk = raw(addr, "HELLO\r\n\r\n").await;
    assert!(junk.starts_with("HTTP/1.1 400 "), "{junk}");
    cancel.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), server.stopped())
        .await
        .expect("endpoint tasks end on cancel");
}

#[tokio::test]
async fn short_token_file_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "short\n").unwrap();
    let config = ObserveConfig::new("127.0.0.1:0".parse().unwrap(), Some(token.clone())).unwrap();
    let e = start(&config, Arc::new(Fake), CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&token.display().to_string()) && e.contains("at least"),
        "{e}"
    );
}
