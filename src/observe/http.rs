//! The smallest HTTP/1.1 server that is still correct for this job: GET and HEAD only, one
//! request per connection (`Connection: close`), a request head of at most 8 KiB that must
//! arrive within 5 s, a cap on connections at once, and security headers on every answer. A
//! Prometheus scraper and a page polling once a second need nothing more, and this keeps a web
//! framework (and its attack surface) out of an SSH relay.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest request head accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header lines accepted.
const MAX_HEADERS: usize = 64;
/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Time for a client to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a client to take the answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Only our own scripts, styles and API: nothing inline, nothing from elsewhere, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The parts of a request the endpoint looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `Host` header.
    pub host: Option<String>,
}

/// Why a request head was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Longer than [`MAX_HEAD`] or too many headers (431).
    TooLarge,
    /// Not HTTP/1.x (400).
    Malformed,
}

/// Parses a request head from the bytes read so far; `Ok(None)` while it is incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Request>, HeadError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_HEAD {
            Err(HeadError::TooLarge)
        } else {
            Ok(None)
        };
    };
    if end + 4 > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let head = buf
        .get(..end)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or(HeadError::Malformed)?;
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed);
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') || method.is_empty() {
        return Err(HeadError::Malformed);
    }
    let mut request = Request {
        method: method.to_string(),
        path: target
            .split(['?', '#'])
            .next()
            .unwrap_or(target)
            .to_string(),
        authorization: None,
        host: None,
    };
    for (count, line) in lines.enumerate() {
        if count >= MAX_HEADERS {
            return Err(HeadError::TooLarge);
        }
        let (name, value) = line.split_once(':').ok_or(HeadError::Malformed)?;
        if name.is_empty() || name.contains(|c: char| c.is_ascii_whitespace()) {
            return Err(HeadError::Malformed);
        }
        let slot = if name.eq_ignore_ascii_case("authorization") {
            &mut request.authorization
        } else if name.eq_ignore_ascii_case("host") {
            &mut request.host
        } else {
            continue;
        };
        // Two different values for the same header are a smuggling attempt, not a request.
        if slot.replace(value.trim().to_string()).is_some() {
            return Err(HeadError::Malformed);
        }
    }
    Ok(Some(request))
}

/// An answer, encoded by [`Response::encode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Content-Type.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
    /// Extra header lines (name, value).
    pub headers: Vec<(&'static str, &'static str)>,
}

impl Response {
    /// A 200 with this body.
    pub fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status: 200,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// A plain-text error.
    pub fn error(status: u16, message: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{status} {}: {message}\n", reason(status)).into_bytes(),
            headers: Vec::new(),
        }
    }

    /// Adds a header line.
    pub fn with(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The bytes on the wire; `head_only` for HEAD requests (Content-Length still counts the body).
    pub fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
             Referrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\n\
             Content-Security-Policy: {CSP}\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// Accepts until `cancel`, serving each connection with `handle` in `tracker`, at most
/// [`MAX_CONNECTIONS`] at once.
pub async fn accept_loop<F>(
    listener: TcpListener,
    handle: Arc<F>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) where
    F: Fn(&Request) -> Response + Send + Sync + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = cancel.cancelled() => return,
        };
        let (sock, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "status endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "status endpoint: too many connections; closing");
            continue;
        };
        let handle = handle.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let _permit = permit;
            tokio::select! {
                () = serve_connection(sock, handle.as_ref()) => {}
                () = cancel.cancelled() => {}
            }
        });
    }
}

/// Reads one request, answers it, closes.
async fn serve_connection<F>(mut sock: TcpStream, handle: &F)
where
    F: Fn(&Request) -> Response,
{
    let (response, head_only) = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut sock)).await
    {
        Ok(Ok(Ok(request))) => (handle(&request), request.method == "HEAD"),
        Ok(Ok(Err(HeadError::TooLarge))) => (Response::error(431, "request head too large"), false),
        Ok(Ok(Err(HeadError::Malformed))) => {
            (Response::error(400, "not an HTTP/1.1 request"), false)
        }
        // Closed early, or too slow: nobody to answer.
        Ok(Err(_)) | Err(_) => return,
    };
    let bytes = response.encode(head_only);
    let write = async {
        sock.write_all(&bytes).await?;
        sock.shutdown().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "status endpoint: answer not delivered"),
        Err(_) => tracing::debug!("status endpoint: client did not take the answer in time"),
    }
}

async fn read_head(sock: &mut TcpStream) -> std::io::Result<Result<Request, HeadError>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        match parse_head(&buf) {
            Ok(Some(request)) => return Ok(Ok(request)),
            Ok(None) => {}
            Err(e) => return Ok(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_browser_request() {
        let raw = b"GET /api/status?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9180\r\nauthorization: Bearer t\r\nAccept: */*\r\n\r\n";
        let r = parse_head(raw).unwrap().unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/api/status");
        assert_eq!(r.host.as_deref(), Some("127.0.0.1:9180"));
        assert_eq!(r.authorization.as_deref(), Some("Bearer t"));
    }

    #[test]
    fn incomplete_oversized_and_malformed_heads() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(parse_head(&vec![b'a'; MAX_HEAD]), Err(HeadError::TooLarge));
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(parse_head(many.as_bytes()), Err(HeadError::TooLarge));
        for bad in [
            &b"GET /\r\n\r\n"[..],
            b"GET / HTTP/2\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: a\r\n\r\n",
        ] {
            assert_eq!(
                parse_head(bad),
                Err(HeadError::Malformed),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn responses_carry_length_and_security_headers() {
        let r = Response::ok("text/plain", "hello").with("Allow", "GET, HEAD");
        let text = String::from_utf8(r.encode(false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 5\r\n"));
        assert!(text.contains("Content-Security-Policy: default-src 'none'; script-src 'self'"));
        assert!(text.contains("X-Content-Type-Options: nosniff\r\n"));
        assert!(text.contains("Allow: GET, HEAD\r\n"));
        assert!(text.ends_with("\r\n\r\nhello"));
        let head = String::from_utf8(r.encode(true)).unwrap();
        assert!(head.ends_with("\r\n\r\n") && head.contains("Content-Length: 5\r\n"));
    }
}
