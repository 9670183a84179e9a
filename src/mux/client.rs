//! The client side of connection sharing: `-O check|forward|cancel|exit|stop`, and running a
//! command, `-W` or `-N` through a running master (ControlMaster no/auto/autoask with a
//! ControlPath). Messages and exit statuses are OpenSSH's (mux.c `muxclient`): e.g. `-O check`
//! prints "Master running (pid=N)", `-O forward -R 0:...` prints the allocated port on stdout,
//! a failed `-O cancel` reports the failure and still exits 0, as ssh does.

use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use tokio::net::UnixStream;

use super::proto::{Reply, Request, WireForward, VERSION};
use super::{fdpass, read_message, write_message};
use crate::client::EXIT_FAILURE;
use crate::config::options::ClientOptions;
use crate::config::sharing::MuxCommand;

/// A connection to a master after the hello exchange.
pub struct MuxClient {
    stream: UnixStream,
    rid: u32,
}

/// How connecting to ControlPath went.
pub enum Attempt {
    /// A master answered.
    Connected(MuxClient),
    /// No master there (the socket is missing, or stale and was removed).
    NoMaster,
}

impl MuxClient {
    /// Connects and exchanges hellos. A stale socket (connection refused) is removed when this
    /// client may become a master itself (`remove_stale`), as ssh does.
    pub async fn connect(path: &Path, remove_stale: bool) -> io::Result<Attempt> {
        let mut stream = match UnixStream::connect(path).await {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Attempt::NoMaster),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && remove_stale => {
                tracing::debug!("Stale control socket {}, unlinking", path.display());
                let _ = std::fs::remove_file(path);
                return Ok(Attempt::NoMaster);
            }
            Err(e) => return Err(e),
        };
        write_message(&mut stream, &Request::Hello { version: VERSION }.encode()).await?;
        match Reply::decode(&read_message(&mut stream).await?) {
            Ok(Reply::Hello { version: VERSION }) => {}
            Ok(Reply::Hello { version }) => {
                return Err(io::Error::other(format!(
                    "Unsupported multiplexing protocol version {version} (expected {VERSION})"
                )))
            }
            other => return Err(io::Error::other(format!("expected HELLO, got {other:?}"))),
        }
        Ok(Attempt::Connected(MuxClient { stream, rid: 0 }))
    }

    /// Sends a request built for the next request id and reads the reply, checking its id.
    async fn call(&mut self, build: impl FnOnce(u32) -> Request) -> io::Result<Reply> {
        let rid = self.rid;
        write_message(&mut self.stream, &build(rid).encode()).await?;
        let reply = self.next_reply().await?;
        if reply_id(&reply).is_some_and(|r| r != rid) {
            return Err(io::Error::other(format!(
                "out of sequence reply: my id {rid} theirs {:?}",
                reply_id(&reply)
            )));
        }
        self.rid += 1;
        Ok(reply)
    }

    async fn next_reply(&mut self) -> io::Result<Reply> {
        let body = read_message(&mut self.stream).await?;
        Reply::decode(&body).map_err(io::Error::other)
    }

    /// MUX_C_ALIVE_CHECK: the master's pid.
    pub async fn alive(&mut self) -> io::Result<u32> {
        match self.call(|rid| Request::AliveCheck { rid }).await? {
            Reply::Alive { pid, .. } => Ok(pid),
            other => Err(io::Error::other(format!(
                "master returned error: {}",
                reason(&other)
            ))),
        }
    }

    /// Adds (`cancel` false) or removes one forward. `Ok(Some(port))` when the master reports
    /// an allocated port. Errors carry ssh's message.
    pub async fn forward(&mut self, cancel: bool, fwd: WireForward) -> Result<Option<u32>, String> {
        let reply = self
            .call(|rid| match cancel {
                false => Request::OpenForward { rid, fwd: Ok(fwd) },
                true => Request::CloseForward { rid, fwd: Ok(fwd) },
            })
            .await
            .map_err(|e| format!("mux_client_forward: {e}"))?;
        match reply {
            Reply::Ok { .. } => Ok(None),
            Reply::RemotePort { port, .. } if !cancel => Ok(Some(port)),
            Reply::PermissionDenied { reason, .. } => {
                Err(format!("Master refused forwarding request: {reason}"))
            }
            Reply::Failure { reason, .. } => Err(format!(
                "mux_client_forward: forwarding request failed: {reason}"
            )),
            other => Err(format!(
                "mux_client_forward: unexpected response from master {other:?}"
            )),
        }
    }
}

fn reply_id(r: &Reply) -> Option<u32> {
    match r {
        Reply::Ok { rid }
        | Reply::PermissionDenied { rid, .. }
        | Reply::Failure { rid, .. }
        | Reply::Alive { rid, .. }
        | Reply::SessionOpened { rid, .. }
        | Reply::RemotePort { rid, .. } => Some(*rid),
        Reply::Hello { .. } | Reply::Exit { .. } | Reply::TtyAllocFail { .. } => None,
    }
}

fn reason(r: &Reply) -> String {
    match r {
        Reply::PermissionDenied { reason, .. } | Reply::Failure { reason, .. } => reason.clone(),
        other => format!("{other:?}"),
    }
}

/// The command line's forwards in the order ssh sends them: local and dynamic, then remote.
pub fn forwards_of(opts: &ClientOptions) -> Vec<WireForward> {
    let local = opts.local_forwards.iter().cloned().map(WireForward::Local);
    let dynamic = opts
        .dynamic_forwards
        .iter()
        .cloned()
        .map(WireForward::Dynamic);
    let remote = opts
        .remote_forwards
        .iter()
        .cloned()
        .map(WireForward::Remote);
    local.chain(dynamic).chain(remote).collect()
}

/// `-O`: talks to the master at ControlPath and returns ssh's exit status.
pub async fn command(opts: &ClientOptions, cmd: MuxCommand) -> u8 {
    let Some(path) = &opts.control.path else {
        tracing::error!("No ControlPath specified for \"-O\" command");
        return EXIT_FAILURE;
    };
    let mut mux = match MuxClient::connect(path, false).await {
        Ok(Attempt::Connected(m)) => m,
        Ok(Attempt::NoMaster) => {
            let enoent = io::Error::from_raw_os_error(nix::errno::Errno::ENOENT as i32);
            return connect_failed(path, &enoent);
        }
        Err(e) => return connect_failed(path, &e),
    };
    let quiet = !tracing::enabled!(tracing::Level::WARN);
    match cmd {
        MuxCommand::Check => match mux.alive().await {
            Ok(pid) => {
                eprint!("Master running (pid={pid})\r\n");
                0
            }
            Err(e) => fatal(&format!("mux_client_request_alive: {e}")),
        },
        MuxCommand::Exit => match mux.call(|rid| Request::Terminate { rid }).await {
            Ok(Reply::Ok { .. }) | Err(_) => {
                if !quiet {
                    eprint!("Exit request sent.\r\n");
                }
                0
            }
            Ok(Reply::PermissionDenied { reason, .. }) => {
                fatal(&format!("Master refused termination request: {reason}"))
            }
            Ok(other) => fatal(&format!(
                "mux_client_request_terminate: termination request failed: {}",
                reason(&other)
            )),
        },
        MuxCommand::Stop => match mux.call(|rid| Request::StopListening { rid }).await {
            Ok(Reply::Ok { .. }) => {
                if !quiet {
                    eprint!("Stop listening request sent.\r\n");
                }
                0
            }
            Ok(Reply::PermissionDenied { reason, .. }) => {
                fatal(&format!("Master refused stop listening request: {reason}"))
            }
            Ok(other) => fatal(&format!(
                "mux_client_request_stop_listening: stop listening request failed: {}",
                reason(&other)
            )),
            Err(e) => fatal(&format!(
                "mux_client_request_stop_listening: read from master failed: {e}"
            )),
        },
        MuxCommand::Forward => {
            if send_forwards(&mut mux, opts, false, true).await {
                0
            } else {
                fatal("muxclient: master forward request failed")
            }
        }
        MuxCommand::Cancel => {
            if !send_forwards(&mut mux, opts, true, false).await {
                tracing::error!("muxclient: master cancel forward request failed");
            }
            0
        }
        MuxCommand::Proxy => fatal("-O proxy is not supported by burrow"),
    }
}

/// Sends every forward of the command line; true when all succeeded. With `print_ports`,
/// allocated ports go to stdout, one per line (`-O forward`).
pub async fn send_forwards(
    mux: &mut MuxClient,
    opts: &ClientOptions,
    cancel: bool,
    print_ports: bool,
) -> bool {
    let mut ok = true;
    for fwd in forwards_of(opts) {
        let what = super::master::describe(&fwd);
        match mux.forward(cancel, fwd).await {
            Ok(Some(port)) => {
                tracing::debug!("Allocated port {port} for {what}");
                if print_ports {
                    println!("{port}");
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!("{e}");
                ok = false;
            }
        }
    }
    ok
}

fn connect_failed(path: &Path, e: &io::Error) -> u8 {
    fatal(&format!(
        "Control socket connect({}): {}",
        path.display(),
        crate::reason::io_reason(e)
    ))
}

fn fatal(message: &str) -> u8 {
    tracing::error!("{message}");
    EXIT_FAILURE
}

/// Runs this invocation through the master as a passenger: forwards first, then the command
/// (or `-W`), with our stdio handed over; returns the remote exit status. With `-N` (a burrow
/// choice: ssh would open a shell) it adds the forwards and stays until interrupted or the
/// master goes away.
pub async fn passenger(mut mux: MuxClient, opts: &ClientOptions) -> u8 {
    if opts.stdio_forward.is_none() && !send_forwards(&mut mux, opts, false, false).await {
        tracing::error!("muxclient: master forward request failed");
        return EXIT_FAILURE;
    }
    if let Err(e) = mux.alive().await {
        return fatal(&format!(
            "mux_client_request_session: master alive request failed: {e}"
        ));
    }
    let result = if let Some((host, port)) = &opts.stdio_forward {
        stdio(&mut mux, host, *port).await
    } else if opts.no_command {
        wait_for_master(&mut mux).await
    } else {
        session(&mut mux, &opts.command.join(" ")).await
    };
    result.unwrap_or_else(|e| fatal(&e))
}

async fn session(mux: &mut MuxClient, command: &str) -> Result<u8, String> {
    let request = |rid| Request::NewSession {
        rid,
        want_tty: false,
        subsystem: false,
        term: std::env::var("TERM").unwrap_or_default(),
        command: command.to_string(),
        env: Vec::new(),
    };
    let rid = mux.rid;
    write_message(&mut mux.stream, &request(rid).encode())
        .await
        .map_err(|e| format!("mux_client_request_session: write packet: {e}"))?;
    send_stdio(mux, 3).await?;
    match mux.next_reply().await {
        Ok(Reply::SessionOpened { .. }) => {}
        Ok(Reply::PermissionDenied { reason, .. }) => {
            return Err(format!("Master refused session request: {reason}"))
        }
        Ok(other) => {
            return Err(format!(
                "mux_client_request_session: session request failed: {}",
                reason(&other)
            ))
        }
        Err(e) => {
            return Err(format!(
                "mux_client_request_session: read from master failed: {e}"
            ))
        }
    }
    mux.rid += 1;
    let mut status = None;
    loop {
        tokio::select! {
            reply = mux.next_reply() => match reply {
                Ok(Reply::Exit { status: s, .. }) => status = Some(s),
                Ok(Reply::TtyAllocFail { .. }) => {}
                Ok(other) => return Err(format!("mux_client_request_session: master returned error: {}", reason(&other))),
                Err(_) => break,
            },
            () = interrupted() => return Ok(EXIT_FAILURE),
        }
    }
    Ok(status.map_or(EXIT_FAILURE, |s| u8::try_from(s).unwrap_or(EXIT_FAILURE)))
}

async fn stdio(mux: &mut MuxClient, host: &str, port: u16) -> Result<u8, String> {
    let rid = mux.rid;
    let request = Request::StdioForward {
        rid,
        host: host.to_string(),
        port: u32::from(port),
    };
    write_message(&mut mux.stream, &request.encode())
        .await
        .map_err(|e| format!("mux_client_request_stdio_fwd: write packet: {e}"))?;
    send_stdio(mux, 2).await?;
    match mux.next_reply().await {
        Ok(Reply::SessionOpened { .. }) => {}
        Ok(Reply::PermissionDenied { reason, .. }) => {
            return Err(format!("Master refused stdio forwarding request: {reason}"))
        }
        Ok(other) => {
            return Err(format!(
                "Stdio forwarding request failed: {}",
                reason(&other)
            ))
        }
        Err(e) => {
            return Err(format!(
                "mux_client_request_stdio_fwd: read from master failed: {e}"
            ))
        }
    }
    mux.rid += 1;
    tokio::select! {
        _ = mux.next_reply() => Ok(0),
        () = interrupted() => Ok(0),
    }
}

async fn wait_for_master(mux: &mut MuxClient) -> Result<u8, String> {
    tokio::select! {
        _ = mux.next_reply() => Ok(EXIT_FAILURE),
        () = interrupted() => Ok(EXIT_FAILURE),
    }
}

/// Hands stdin, stdout (and stderr) to the master, one descriptor per message.
async fn send_stdio(mux: &MuxClient, count: usize) -> Result<(), String> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let fds = [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()];
    for fd in fds.into_iter().take(count) {
        fdpass::send_fd(&mux.stream, fd)
            .await
            .map_err(|e| format!("send fds failed: {e}"))?;
    }
    Ok(())
}

/// SIGINT, SIGTERM or SIGHUP (a passenger then exits 255, as ssh's does).
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut signals: Vec<_> = [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
    ]
    .into_iter()
    .filter_map(|k| signal(k).ok())
    .collect();
    if signals.is_empty() {
        return std::future::pending().await;
    }
    let waits = signals.iter_mut().map(|s| Box::pin(s.recv()));
    futures::future::select_all(waits).await;
}
