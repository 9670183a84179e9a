//! Sessions a master runs for passenger clients (`ssh -S path host cmd`, `burrow ssh` with a
//! running master, `-W` through a master): the client passed its stdio descriptors; the master
//! opens a channel on the shared connection, copies between the channel and those
//! descriptors, and reports the exit status (MUX_S_EXIT_MESSAGE) before closing the control
//! connection, which is what the client waits for.
//!
//! No pseudo-terminal is requested: a client that wants one is told at once
//! (MUX_S_TTY_ALLOC_FAIL) and runs the command without. Environment strings are not passed on
//! (burrow has no SendEnv).

use std::io;
use std::os::fd::OwnedFd;

use russh::ChannelMsg;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::fdio::FdIo;
use super::proto::{Reply, Request};
use super::{write_message, FrameReader};
use crate::client::session_channel::signal_number;
use crate::client::{Session, EXIT_FAILURE};

/// One passenger request being served on its control connection.
pub struct Passenger<'a> {
    /// The shared connection.
    pub session: &'a Session,
    /// The client's control connection.
    pub stream: &'a mut UnixStream,
    /// The request id to answer.
    pub rid: u32,
    /// The session id to report.
    pub sid: u32,
    /// Cancelled when the master ends: the passenger's channel is closed.
    pub stop: CancellationToken,
}

impl Passenger<'_> {
    /// MUX_C_NEW_SESSION with stdin, stdout and stderr in `fds`.
    pub async fn session(
        mut self,
        want_tty: bool,
        subsystem: bool,
        command: &str,
        fds: Vec<OwnedFd>,
    ) -> io::Result<()> {
        let (rid, sid) = (self.rid, self.sid);
        let mut fds = fds.into_iter();
        let (Some(stdin), Some(stdout), Some(stderr)) = (fds.next(), fds.next(), fds.next()) else {
            return Ok(());
        };
        let channel = match self.open_session(subsystem, command).await {
            Ok(c) => c,
            Err(e) => {
                tracing::info!("passenger session failed: {e}");
                let reply = Reply::Failure {
                    rid,
                    reason: "Session open refused by peer".into(),
                };
                return write_message(self.stream, &reply.encode()).await;
            }
        };
        write_message(self.stream, &Reply::SessionOpened { rid, sid }.encode()).await?;
        if want_tty {
            write_message(self.stream, &Reply::TtyAllocFail { sid }.encode()).await?;
        }
        let (mut read, write) = channel.split();
        let mut input = FdIo::reader(stdin)?;
        // Owned here: aborted when the session ends or this future is dropped.
        let stdin_task = AbortOnDropHandle::new(tokio::spawn(async move {
            let mut writer = write.make_writer();
            let _ = tokio::io::copy(&mut input, &mut writer).await;
            let _ = writer.shutdown().await;
            let _ = write.eof().await;
            write
        }));
        let mut out = FdIo::writer(stdout)?;
        let mut err = FdIo::writer(stderr)?;
        let mut frames = FrameReader::default();
        let mut status: Option<u8> = None;
        loop {
            tokio::select! {
                msg = read.wait() => match msg {
                    Some(ChannelMsg::Data { data }) => {
                        if out.write_all(&data).await.is_err() {
                            break;
                        }
                    }
                    Some(ChannelMsg::ExtendedData { data, .. }) => {
                        let _ = err.write_all(&data).await;
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => {
                        status = Some(u8::try_from(exit_status).unwrap_or(EXIT_FAILURE));
                    }
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                        status = Some(128u8.saturating_add(signal_number(&signal_name)));
                    }
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                },
                () = self.stop.cancelled() => break,
                next = frames.next(self.stream) => match next {
                    Ok(Some(body)) => self.busy(&body).await?,
                    // The client went away: closing the channel ends the remote command's input.
                    _ => break,
                },
            }
        }
        drop(stdin_task);
        drop((out, err));
        if let Some(status) = status {
            let exit = Reply::Exit {
                sid,
                status: u32::from(status),
            };
            write_message(self.stream, &exit.encode()).await?;
        }
        Ok(())
    }

    /// MUX_C_NEW_STDIO_FWD with stdin and stdout in `fds`: a `direct-tcpip` channel to
    /// `host:port`, pumped until both directions end.
    pub async fn stdio(self, host: &str, port: u32, fds: Vec<OwnedFd>) -> io::Result<()> {
        let mut fds = fds.into_iter();
        let (Some(stdin), Some(stdout)) = (fds.next(), fds.next()) else {
            return Ok(());
        };
        let channel = self
            .session
            .handle()
            .channel_open_direct_tcpip(host.to_string(), port, "127.0.0.1", 0)
            .await;
        let channel = match channel {
            Ok(c) => c,
            Err(e) => {
                let why = crate::reason::open_failure_text(&e);
                tracing::info!("stdio forward to {host}:{port}: {why}");
                let reply = Reply::Failure {
                    rid: self.rid,
                    reason: "Session open refused by peer".into(),
                };
                return write_message(self.stream, &reply.encode()).await;
            }
        };
        let opened = Reply::SessionOpened {
            rid: self.rid,
            sid: self.sid,
        };
        write_message(self.stream, &opened.encode()).await?;
        let io = tokio::io::join(FdIo::reader(stdin)?, FdIo::writer(stdout)?);
        let ctx = self.session.context();
        let mut frames = FrameReader::default();
        tokio::select! {
            () = ctx.pump(channel.into_stream(), io, "mux stdio") => {}
            _ = frames.next(self.stream) => {}
            () = self.stop.cancelled() => {}
        }
        Ok(())
    }

    async fn open_session(
        &self,
        subsystem: bool,
        command: &str,
    ) -> Result<russh::Channel<russh::client::Msg>, russh::Error> {
        let channel = self.session.handle().channel_open_session().await?;
        if subsystem {
            channel.request_subsystem(true, command).await?;
        } else if command.is_empty() {
            channel.request_shell(true).await?;
        } else {
            channel.exec(true, command).await?;
        }
        Ok(channel)
    }

    /// A request while the session runs: alive checks are answered, anything else refused.
    async fn busy(&mut self, body: &[u8]) -> io::Result<()> {
        let reply = match Request::decode(body) {
            Ok(Request::AliveCheck { rid }) => Reply::Alive {
                rid,
                pid: std::process::id(),
            },
            Ok(Request::Hello { .. }) | Err(_) => return Ok(()),
            Ok(other) => Reply::Failure {
                rid: request_id(&other),
                reason: "Multiple sessions not supported".into(),
            },
        };
        write_message(self.stream, &reply.encode()).await
    }
}

fn request_id(r: &Request) -> u32 {
    match r {
        Request::Hello { .. } => 0,
        Request::NewSession { rid, .. }
        | Request::AliveCheck { rid }
        | Request::Terminate { rid }
        | Request::OpenForward { rid, .. }
        | Request::CloseForward { rid, .. }
        | Request::StdioForward { rid, .. }
        | Request::StopListening { rid }
        | Request::Unsupported { rid, .. } => *rid,
    }
}
