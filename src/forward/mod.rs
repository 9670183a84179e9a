//! Forwards: -L ([`local`]), -R ([`remote`], reverse dynamic in [`rdynamic`]), -D ([`dynamic`])
//! and -W ([`stdio`]). They share the
//! listener binding and accept loop here and the one byte pump in [`crate::pipe`].

pub mod dynamic;
pub mod listen;
pub mod local;
pub mod proxy_header;
pub mod rdynamic;
pub mod remote;
pub mod stdio;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use russh::ChannelOpenFailure;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::pipe::{self, Counters};
use crate::reason::io_reason;
use crate::resume::{BoxedIo, ChannelSpec, FirstBytes, Io, OpenError, Opened, Registry};
use crate::spec::Endpoint;

/// The client session a forward runs over. Generic over the session's handler so that
/// forwarding does not depend on the client module that defines it.
pub type ClientHandle<H> = Arc<russh::client::Handle<H>>;

/// Handlers whose sessions forwards can use from their own tasks.
pub trait ClientSession: russh::client::Handler + Send + Sync + 'static {}
impl<T: russh::client::Handler + Send + Sync + 'static> ClientSession for T {}

/// What every forward task shares: who owns the tasks, how to stop them, and where bytes are
/// counted.
#[derive(Debug, Clone)]
pub struct ForwardContext {
    /// Every listener and connection task is spawned here, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Cancelled on shutdown: listeners stop accepting and pumps stop.
    pub cancel: CancellationToken,
    /// Bytes moved by all forwards of this session (a_to_b = towards the SSH channel).
    pub counters: Arc<Counters>,
    /// Timeout for dialling a forward's target.
    pub connect_timeout: Duration,
    /// Set once both ends agreed on resumable streams (burrow to burrow); shared by every
    /// clone, so forwards set up before the agreement see it too.
    resume: Arc<OnceLock<Arc<Registry>>>,
}

impl ForwardContext {
    /// A fresh context whose tasks stop when `cancel` is cancelled.
    pub fn new(cancel: CancellationToken) -> Self {
        Self {
            tracker: TaskTracker::new(),
            cancel,
            counters: Arc::new(Counters::default()),
            connect_timeout: Duration::from_secs(30),
            resume: Arc::default(),
        }
    }

    /// Turns resumable streams on for this session's forwards (once).
    pub fn enable_resume(&self, registry: Arc<Registry>) {
        let _ = self.resume.set(registry);
    }

    /// The registry streams go to, when resumable streams are on.
    pub fn resume(&self) -> Option<&Arc<Registry>> {
        self.resume.get()
    }

    /// Starts a stream on a channel this side opened: resumable when resumable streams are on
    /// and `spec` says how to re-open it, else plain. `first` says whether the peer's reply
    /// (did the target answer?) must be in before this returns.
    pub async fn carrier<C: Io + 'static>(
        &self,
        channel: C,
        spec: Option<ChannelSpec>,
        first: FirstBytes,
    ) -> Result<Carrier<C>, OpenError> {
        match (self.resume(), spec) {
            (Some(registry), Some(spec)) => registry
                .open(Box::new(channel), spec, first)
                .await
                .map(Carrier::Resumable),
            _ => Ok(Carrier::Plain(channel)),
        }
    }

    /// Carries `local` over `carrier` until the connection ends (plain) or hands it to the
    /// stream's own task (resumable: it outlives this session). `guard` lives as long.
    pub async fn carry<C: Io + 'static, L: Io + 'static, G: Send + 'static>(
        &self,
        carrier: Carrier<C>,
        local: L,
        label: &str,
        guard: G,
    ) {
        match carrier {
            Carrier::Plain(channel) => {
                let _guard = guard;
                self.pump(channel, local, label).await
            }
            Carrier::Resumable(opened) => opened.run(Box::new(local), self.counters.clone(), guard),
        }
    }

    /// A context for one forward: same tasks and shutdown, with counters of its own that also
    /// count into this context's (the session's) totals.
    pub fn for_forward(&self) -> Self {
        Self {
            counters: Arc::new(Counters::child_of(self.counters.clone())),
            ..self.clone()
        }
    }

    /// Pumps bytes between `local` and a channel until both sides are done or shutdown, then logs
    /// what moved. Errors end only this connection.
    pub async fn pump<A, B>(&self, channel: A, local: B, label: &str)
    where
        A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let carried = pipe::Carried::new(self.counters.clone(), label);
        let closed = tokio::select! {
            c = pipe::pipe(local, channel, self.counters.clone()) => c,
            () = self.cancel.cancelled() => pipe::Closed {
                totals: pipe::Totals::default(),
                reason: pipe::CloseReason::Shutdown,
            },
        };
        carried.close(&closed);
    }
}

impl ForwardContext {
    /// Serves a channel the peer opened (-R on the client, -L/-D/-W on the relay): awaited in
    /// a task that already runs for this channel (the relay's policy check: one task hop less
    /// per connection), or spawned by the caller on `tracker`. A plain
    /// channel: dial where `dial` says first, then accept the channel and pump, or reject it
    /// with "connect failed" as OpenSSH does. On a session with resumable streams the channel
    /// is accepted at once and the stream's hello decides: a new stream goes where `dial` says,
    /// a re-attach joins its stream. `guard` (e.g. a channel-cap slot) lives as long as the
    /// connection.
    pub async fn serve_channel<S, M, G>(
        self,
        channel: russh::Channel<S>,
        dial: Dial,
        reply: russh::ChannelOpenHandleInner<M>,
        guard: G,
    ) where
        S: From<(russh::ChannelId, russh::ChannelMsg)> + Send + Sync + 'static,
        M: Send + 'static,
        G: Send + 'static,
    {
        let Some(registry) = self.resume().cloned() else {
            let _guard = guard;
            let label = dial.label();
            // `connect` logs a failure with the target.
            match dial.connect(&self).await {
                Ok(stream) => {
                    reply.accept().await;
                    self.pump(channel.into_stream(), stream, &label).await;
                }
                Err(_) => reply.reject(ChannelOpenFailure::ConnectFailed).await,
            }
            return;
        };
        reply.accept().await;
        let local = || dial.connect(&self);
        registry
            .accept(
                Box::new(channel.into_stream()),
                local,
                self.counters.clone(),
                guard,
            )
            .await;
    }
}

/// Where a new resumable stream arriving on a forwarded channel goes.
pub enum Dial {
    /// Connect to the forward's target, and write the preamble (a PROXY protocol header) to
    /// it first: once per local connection, so a re-attach (which keeps it) sends none.
    Target(Endpoint, Option<Vec<u8>>),
    /// A reverse dynamic forward: the stream carries a SOCKS request, answered here.
    Socks(rdynamic::OpenCheck),
    /// A listener this session does not know (yet): only re-attaches are welcome.
    Nowhere,
    /// Addresses already resolved and checked (label for logs): dialled in order, no lookup.
    Addrs(String, Vec<SocketAddr>),
    /// A stream made by the caller's own future (label for logs): the relay's channel to an
    /// alias's publisher.
    Open(String, OpenFuture),
}

/// The future behind [`Dial::Open`].
pub type OpenFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<BoxedIo>> + Send>>;

impl Dial {
    /// What the connection is called in logs.
    fn label(&self) -> String {
        match self {
            Dial::Target(target, _) => target.to_string(),
            Dial::Socks(_) => "reverse SOCKS".to_string(),
            Dial::Nowhere => "no forward".to_string(),
            Dial::Addrs(label, _) | Dial::Open(label, _) => label.clone(),
        }
    }

    /// The local end of a new stream.
    async fn connect(self, ctx: &ForwardContext) -> io::Result<BoxedIo> {
        match self {
            Dial::Target(target, preamble) => {
                match dial_target(&target, preamble.as_deref(), ctx.connect_timeout).await {
                    Ok(stream) => Ok(Box::new(stream) as BoxedIo),
                    Err(e) => {
                        tracing::info!("connect_to {target}: failed: {}", io_reason(&e));
                        Err(e)
                    }
                }
            }
            Dial::Socks(permit) => {
                // The SOCKS server runs on one end of an in-memory pipe; the stream's bytes
                // (the SOCKS request first) flow through the other.
                let (near, far) = tokio::io::duplex(64 * 1024);
                let task_ctx = ctx.clone();
                ctx.tracker
                    .spawn(async move { rdynamic::serve_on(far, &task_ctx, permit).await });
                Ok(Box::new(near) as BoxedIo)
            }
            Dial::Nowhere => Err(io::Error::other("no such forward")),
            Dial::Open(label, open) => {
                // Bounded like a dial: the far end may be a session that stopped answering.
                let opened = match tokio::time::timeout(ctx.connect_timeout, open).await {
                    Ok(r) => r,
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "Connection timed out",
                    )),
                };
                opened.inspect_err(|e| {
                    tracing::info!("connect_to {label}: failed: {}", io_reason(e));
                })
            }
            Dial::Addrs(label, addrs) => match connect_addrs(&addrs, ctx.connect_timeout).await {
                Ok(stream) => Ok(Box::new(stream) as BoxedIo),
                Err(e) => {
                    tracing::info!("connect_to {label}: failed: {}", io_reason(&e));
                    Err(e)
                }
            },
        }
    }
}

/// How one forwarded connection travels: a plain channel, or a resumable stream.
pub enum Carrier<C> {
    /// Bytes straight through the channel (standard peers).
    Plain(C),
    /// A stream that survives the session (see [`crate::resume`]).
    Resumable(Opened),
}

/// A connected TCP or unix-domain stream.
pub type Stream = Either<TcpStream, UnixStream>;

/// Dials a forward's target (a TCP host:port or a unix socket path) within `timeout`.
pub async fn connect_endpoint(target: &Endpoint, timeout: Duration) -> io::Result<Stream> {
    let dial = async {
        match target {
            Endpoint::Tcp { host, port } => {
                let s = TcpStream::connect((host.as_str(), *port)).await?;
                let _ = s.set_nodelay(true);
                Ok(Either::Left(s))
            }
            Endpoint::Unix(path) => Ok(Either::Right(UnixStream::connect(path).await?)),
        }
    };
    match tokio::time::timeout(timeout, dial).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "Connection timed out",
        )),
    }
}

/// Dials `addrs` in order within `timeout` (in all), as a name's addresses are tried; the
/// last error when none answers.
pub async fn connect_addrs(addrs: &[SocketAddr], timeout: Duration) -> io::Result<TcpStream> {
    let dial = async {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    };
    match tokio::time::timeout(timeout, dial).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "Connection timed out",
        )),
    }
}

/// Dials a forward's target and writes `preamble` to it before anything else.
async fn dial_target(
    target: &Endpoint,
    preamble: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<Stream> {
    let mut stream = connect_endpoint(target, timeout).await?;
    if let Some(bytes) = preamble {
        stream.write_all(bytes).await?;
    }
    Ok(stream)
}
