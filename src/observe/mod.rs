//! What a running `burrow serve` or `burrow up` shows about itself on `--metrics ADDR`:
//! Prometheus text on `/metrics`, a JSON status document on `/api/status`, and one live HTML
//! page on `/` built from that JSON. One endpoint, one small HTTP server ([`http`]), one access
//! rule ([`auth`]); each program only says what its numbers are through [`Source`], reading the
//! same counters for all three views (and, for `up`, for `burrow status`).
//!
//! Safe by default: nothing listens unless asked, and a non-loopback address is refused unless
//! a bearer token file is given.

pub mod auth;
pub mod events;
pub mod http;
pub mod prometheus;
pub mod rates;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use auth::{Access, Denied, Token};
use http::{Request, Response};
use rates::{Rates, Sample};

/// The page and its assets, compiled into the binary: no build step, nothing fetched elsewhere.
const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const APP_CSS: &str = include_str!("page/app.css");
const ICON_SVG: &str = include_str!("page/icon.svg");

/// What a program exposes on its endpoint.
pub trait Source: Send + Sync + 'static {
    /// Prometheus text exposition (format 0.0.4).
    fn metrics(&self) -> String;
    /// Byte totals per forward (or tunnel) under stable ids, sampled every second for rates.
    fn samples(&self) -> Vec<(String, Sample)>;
    /// The `/api/status` JSON document; `rates` has each sampled id's recent throughput.
    fn status(&self, rates: &Rates) -> serde_json::Result<Vec<u8>>;
}

/// Why the endpoint cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// A non-loopback address without a token.
    #[error(
        "refusing to serve metrics and the status page on {addr} without a token: it is not a \
         loopback address; give --metrics-token-file FILE (a bearer token) or use 127.0.0.1"
    )]
    NeedsToken {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The token file is unreadable.
    #[error("metrics token file {path}: {source}")]
    TokenRead {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The token is too short to be a secret.
    #[error(
        "metrics token file {path}: the token must be at least {} characters \
         (e.g. `head -c 32 /dev/urandom | base64 > FILE`)",
        auth::MIN_TOKEN_LEN
    )]
    TokenTooShort {
        /// File.
        path: PathBuf,
    },
    /// The address cannot be bound.
    #[error("metrics listener {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// Where to serve and who may read it, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObserveConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// File holding the bearer token, if any.
    pub token_file: Option<PathBuf>,
}

impl ObserveConfig {
    /// Checks the rule "a non-loopback address needs a token".
    pub fn new(addr: SocketAddr, token_file: Option<PathBuf>) -> Result<Self, ObserveError> {
        if !addr.ip().is_loopback() && token_file.is_none() {
            return Err(ObserveError::NeedsToken { addr });
        }
        Ok(Self { addr, token_file })
    }
}

/// A running endpoint; its tasks stop when the token passed to [`start`] is cancelled.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    tracker: TaskTracker,
}

impl Server {
    /// The bound address (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resolves once every task of the endpoint has ended (after cancellation).
    pub async fn stopped(&self) {
        self.tracker.wait().await;
    }
}

struct Shared {
    access: Access,
    source: Arc<dyn Source>,
    rates: Rates,
}

/// Reads the token, binds, and serves until `cancel`.
pub async fn start(
    config: &ObserveConfig,
    source: Arc<dyn Source>,
    cancel: CancellationToken,
) -> Result<Server, ObserveError> {
    let access = match &config.token_file {
        Some(path) => Access::Token(Token::load(path)?),
        None => Access::Loopback,
    };
    let bind_err = |source| ObserveError::Bind {
        addr: config.addr,
        source,
    };
    let listener = TcpListener::bind(config.addr).await.map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    let shared = Arc::new(Shared {
        access,
        source,
        rates: Rates::default(),
    });
    let tracker = TaskTracker::new();
    let handler = {
        let shared = shared.clone();
        Arc::new(move |req: &Request| route(&shared, req))
    };
    tracker.spawn(http::accept_loop(
        listener,
        handler,
        cancel.clone(),
        tracker.clone(),
    ));
    tracker.spawn(sample(shared, cancel));
    tracker.close();
    tracing::info!("metrics on http://{addr}/metrics, status page on http://{addr}/");
    Ok(Server { addr, tracker })
}

/// Samples byte totals every second for rates and sparklines.
async fn sample(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(rates::SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = cancel.cancelled() => return,
        }
        let now = Instant::now();
        shared
            .rates
            .record(shared.source.samples(), now.duration_since(last));
        last = now;
    }
}

/// Answers one request: access first, then the path.
fn route(shared: &Shared, req: &Request) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        return Response::error(405, "only GET and HEAD").with("Allow", "GET, HEAD");
    }
    match shared
        .access
        .check(req.authorization.as_deref(), req.host.as_deref())
    {
        Ok(()) => {}
        Err(Denied::Unauthorized) => {
            return Response::error(401, "send Authorization: Bearer <token>")
                .with("WWW-Authenticate", "Bearer realm=\"burrow\"")
                .with(
                    "WWW-Authenticate",
                    "Basic realm=\"burrow\", charset=\"UTF-8\"",
                )
        }
        Err(Denied::ForeignHost) => {
            return Response::error(403, "use an IP address or localhost as the host name")
        }
    }
    match req.path.as_str() {
        "/" | "/index.html" => Response::ok("text/html; charset=utf-8", INDEX_HTML),
        "/app.js" => Response::ok("text/javascript; charset=utf-8", APP_JS),
        "/app.css" => Response::ok("text/css; charset=utf-8", APP_CSS),
        "/icon.svg" => Response::ok("image/svg+xml", ICON_SVG),
        "/metrics" => Response::ok(
            "text/plain; version=0.0.4; charset=utf-8",
            shared.source.metrics(),
        ),
        "/api/status" => match shared.source.status(&shared.rates) {
            Ok(body) => Response::ok("application/json", body),
            Err(e) => {
                tracing::warn!(error = %e, "status document failed");
                Response::error(500, "status unavailable")
            }
        },
        _ => Response::error(404, "no such page"),
    }
}

/// Unix time in seconds.
pub fn unix_secs() -> u64 {
    unix_millis() / 1000
}

/// Unix time in milliseconds.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
