//! The master side of connection sharing: a connected `burrow ssh` with ControlMaster
//! yes/ask/auto/autoask listens on ControlPath and serves OpenSSH's mux requests on the one SSH
//! connection it holds. Replies carry OpenSSH's reason strings ("Port forwarding failed",
//! "port not forwarded", "Permission denied", ...), which `ssh -O` prints as they are.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::proto::{Reply, Request, WireForward, VERSION};
use super::{fdpass, passenger, read_message, write_message};
use crate::client::forwards::LocalSpec;
use crate::client::{prompt, Session};
use crate::forward::listen::{bind_unix_socket, BindOptions};
use crate::spec::{Listen, RemoteForward};

/// The control socket; its file is removed when this is dropped.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Creates the socket (mode 0600, never replacing a file). `Ok(None)` when ControlPath
    /// exists already: ssh then says so and goes on without multiplexing.
    pub fn bind(path: &Path) -> io::Result<Option<ControlSocket>> {
        match bind_unix_socket(path, 0o177) {
            Ok(l) => Ok(Some(ControlSocket {
                listener: UnixListener::from_std(l)?,
                path: path.to_path_buf(),
            })),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                tracing::error!(
                    "ControlSocket {} already exists, disabling multiplexing",
                    path.display()
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A running master: the shared session and the state of its mux clients.
pub struct Master {
    session: Arc<Session>,
    host: String,
    bind: BindOptions,
    asks: bool,
    /// Cancelled by `-O exit`.
    terminate: CancellationToken,
    /// Cancelled by `-O stop` (and when the master ends): no new mux clients.
    stop_listening: CancellationToken,
    tracker: TaskTracker,
    clients: AtomicUsize,
    next_session: AtomicU32,
}

impl Master {
    /// A master for `session`; `host` names it in questions (ControlMaster ask/autoask).
    pub fn new(session: Arc<Session>, host: &str, bind: BindOptions, asks: bool) -> Arc<Master> {
        Arc::new(Master {
            session,
            host: host.to_string(),
            bind,
            asks,
            terminate: CancellationToken::new(),
            stop_listening: CancellationToken::new(),
            tracker: TaskTracker::new(),
            clients: AtomicUsize::new(0),
            next_session: AtomicU32::new(1),
        })
    }

    /// Accepts mux clients on `socket` until `-O stop`, `-O exit` or [`Master::shutdown`].
    pub fn listen(self: &Arc<Self>, socket: ControlSocket) {
        let master = self.clone();
        self.tracker.spawn(async move {
            let me = nix::unistd::getuid().as_raw();
            loop {
                let accepted = tokio::select! {
                    r = socket.listener.accept() => r,
                    () = master.stop_listening.cancelled() => break,
                    () = master.terminate.cancelled() => break,
                };
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                match stream.peer_cred().map(|c| c.uid()) {
                    Ok(uid) if uid == 0 || uid == me => {
                        let m = master.clone();
                        master
                            .tracker
                            .spawn(async move { m.serve_client(stream).await });
                    }
                    Ok(uid) => {
                        tracing::error!("multiplex uid mismatch: peer euid {uid} != uid {me}")
                    }
                    Err(e) => tracing::error!("getpeereid failed: {e}"),
                }
            }
            drop(socket);
        });
    }

    /// Resolves on `-O exit`.
    pub async fn terminated(&self) {
        self.terminate.cancelled().await
    }

    /// Whether `-O stop` was received.
    pub fn stopped(&self) -> bool {
        self.stop_listening.is_cancelled()
    }

    /// Mux clients connected now (a ControlPersist master stays while there are any).
    pub fn client_count(&self) -> usize {
        self.clients.load(Ordering::SeqCst)
    }

    /// Stops listening and ends every client task (their sessions close with the connection).
    pub async fn shutdown(&self) {
        self.stop_listening.cancel();
        self.terminate.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.tracker.wait()).await;
    }

    /// ControlMaster=ask: a person answers, off the runtime thread, so this master's forwards
    /// keep running meanwhile.
    async fn ask(&self, question: &str) -> bool {
        !self.asks || prompt::confirm_off_thread(question.to_owned()).await
    }

    async fn serve_client(self: Arc<Self>, mut stream: UnixStream) {
        self.clients.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self.converse(&mut stream).await {
            tracing::debug!(error = %e, "mux client ended");
        }
        self.clients.fetch_sub(1, Ordering::SeqCst);
    }

    /// Hello both ways, then one request after another until the client hangs up.
    async fn converse(&self, stream: &mut UnixStream) -> io::Result<()> {
        write_message(stream, &Reply::Hello { version: VERSION }.encode()).await?;
        match Request::decode(&read_message(stream).await?) {
            Ok(Request::Hello { version: VERSION }) => {}
            other => {
                tracing::error!("mux client hello: expected version {VERSION}, got {other:?}");
                return Ok(());
            }
        }
        loop {
            let body = tokio::select! {
                r = read_message(stream) => r?,
                () = self.terminate.cancelled() => return Ok(()),
            };
            let request = Request::decode(&body).map_err(io::Error::other)?;
            let Some(reply) = self.answer(request, stream).await? else {
                // A passenger session ended: closing the connection tells its client.
                return Ok(());
            };
            write_message(stream, &reply.encode()).await?;
            if self.terminate.is_cancelled() {
                return Ok(());
            }
        }
    }

    /// The reply to one request; None when a passenger session answered and then ended, so
    /// the connection must close.
    async fn answer(&self, request: Request, stream: &mut UnixStream) -> io::Result<Option<Reply>> {
        Ok(Some(match request {
            Request::Hello { .. } => {
                return Err(io::Error::other("HELLO received twice"));
            }
            Request::AliveCheck { rid } => Reply::Alive {
                rid,
                pid: std::process::id(),
            },
            Request::Terminate { rid } => {
                if !self
                    .ask(&format!("Terminate shared connection to {}? ", self.host))
                    .await
                {
                    return Ok(Some(denied(rid)));
                }
                self.terminate.cancel();
                Reply::Ok { rid }
            }
            Request::StopListening { rid } => {
                let q = format!(
                    "Disable further multiplexing on shared connection to {}? ",
                    self.host
                );
                if !self.ask(&q).await {
                    return Ok(Some(denied(rid)));
                }
                self.stop_listening.cancel();
                Reply::Ok { rid }
            }
            Request::OpenForward { rid, fwd } => match fwd {
                Ok(fwd) => self.open_forward(rid, fwd).await,
                Err(why) => invalid(rid, why),
            },
            Request::CloseForward { rid, fwd } => match fwd {
                Ok(fwd) => self.close_forward(rid, fwd).await,
                Err(why) => invalid(rid, why),
            },
            Request::NewSession { rid, .. } | Request::StdioForward { rid, .. } => {
                return self.passenger(request, rid, stream).await.map(|()| None);
            }
            Request::Unsupported { kind, rid } => {
                tracing::error!("unsupported mux message 0x{kind:08x}");
                failure(rid, "unsupported request")
            }
        }))
    }

    async fn open_forward(&self, rid: u32, fwd: WireForward) -> Reply {
        let question = format!("Open {} on {}?", describe(&fwd), self.host);
        match fwd {
            WireForward::Remote(f) => {
                if let Some(port) = self.session.remote_port(&f) {
                    return remote_reply(rid, &f, port);
                }
                if !self.ask(&question).await {
                    return denied(rid);
                }
                match self.session.open_remote(&f).await {
                    Ok(port) => remote_reply(rid, &f, port),
                    Err(e) => {
                        tracing::error!("{e}");
                        failure(rid, &e.to_string())
                    }
                }
            }
            WireForward::Local(f) => self.open_local(rid, LocalSpec::Local(f), &question).await,
            WireForward::Dynamic(f) => self.open_local(rid, LocalSpec::Dynamic(f), &question).await,
        }
    }

    async fn open_local(&self, rid: u32, spec: LocalSpec, question: &str) -> Reply {
        if self.session.has_local(&spec) {
            return Reply::Ok { rid };
        }
        if !self.ask(question).await {
            return denied(rid);
        }
        let (listen, opened) = match &spec {
            LocalSpec::Local(f) => (&f.listen, self.session.open_local(f, self.bind).await),
            LocalSpec::Dynamic(f) => (&f.listen, self.session.open_dynamic(f, self.bind).await),
        };
        match opened {
            // burrow extension: a local port 0 is reported like an allocated remote port.
            Ok((bound, _)) if matches!(listen, Listen::Tcp { port: 0, .. }) => {
                let port = bound
                    .first()
                    .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                    .map_or(0, |a| u32::from(a.port()));
                Reply::RemotePort { rid, port }
            }
            Ok(_) => Reply::Ok { rid },
            Err(e) => {
                tracing::error!("{e}");
                failure(rid, "Port forwarding failed")
            }
        }
    }

    async fn close_forward(&self, rid: u32, fwd: WireForward) -> Reply {
        let closed = match fwd {
            WireForward::Remote(f) => self
                .session
                .close_remote(&f)
                .await
                .map_err(|e| e.to_string()),
            WireForward::Local(f) => local_closed(self.session.close_local(&LocalSpec::Local(f))),
            WireForward::Dynamic(f) => {
                local_closed(self.session.close_local(&LocalSpec::Dynamic(f)))
            }
        };
        match closed {
            Ok(()) => Reply::Ok { rid },
            Err(reason) => failure(rid, &reason),
        }
    }

    /// Receives the client's descriptors and runs its session or stdio forward to the end.
    async fn passenger(
        &self,
        request: Request,
        rid: u32,
        stream: &mut UnixStream,
    ) -> io::Result<()> {
        let wanted = if matches!(request, Request::NewSession { .. }) {
            3
        } else {
            2
        };
        let mut fds = Vec::with_capacity(wanted);
        for _ in 0..wanted {
            match fdpass::recv_fd(stream).await {
                Ok(fd) => fds.push(fd),
                Err(e) => {
                    tracing::error!("failed to receive fd from client: {e}");
                    let reply = failure(rid, "did not receive file descriptors");
                    return write_message(stream, &reply.encode()).await;
                }
            }
        }
        let question = match &request {
            Request::StdioForward { host, port, .. } => format!("Allow forward to {host}:{port}? "),
            _ => format!("Allow shared connection to {}? ", self.host),
        };
        if !self.ask(&question).await {
            return write_message(stream, &denied(rid).encode()).await;
        }
        let sid = self.next_session.fetch_add(1, Ordering::SeqCst);
        let run = passenger::Passenger {
            session: &self.session,
            stream,
            rid,
            sid,
            stop: self.terminate.clone(),
        };
        match request {
            Request::NewSession {
                want_tty,
                subsystem,
                command,
                ..
            } => run.session(want_tty, subsystem, &command, fds).await,
            Request::StdioForward { host, port, .. } => run.stdio(&host, port, fds).await,
            _ => Ok(()),
        }
    }
}

fn local_closed(found: bool) -> Result<(), String> {
    if found {
        Ok(())
    } else {
        Err("port not forwarded".into())
    }
}

/// A -R reply: the port for a port-0 request, OK otherwise.
fn remote_reply(rid: u32, f: &RemoteForward, port: u32) -> Reply {
    match f.listen {
        Listen::Tcp { port: 0, .. } => Reply::RemotePort { rid, port },
        _ => Reply::Ok { rid },
    }
}

fn denied(rid: u32) -> Reply {
    Reply::PermissionDenied {
        rid,
        reason: "Permission denied".into(),
    }
}

fn failure(rid: u32, reason: &str) -> Reply {
    Reply::Failure {
        rid,
        reason: reason.to_string(),
    }
}

fn invalid(rid: u32, why: &str) -> Reply {
    tracing::info!("invalid forwarding request: {why}");
    failure(rid, "Invalid forwarding request")
}

/// mux.c's `format_forward`, for questions and logs.
pub fn describe(fwd: &WireForward) -> String {
    match fwd {
        WireForward::Local(f) => format!("local forward {} -> {}", f.listen, f.target),
        WireForward::Dynamic(f) => format!("dynamic forward {} -> *", f.listen),
        WireForward::Remote(f) => format!(
            "remote forward {} -> {}",
            f.listen,
            crate::forward::remote::target_text(&f.target)
        ),
    }
}
