//! The session channel of `burrow ssh`: a login shell or a command, with a PTY when ssh(1)
//! would allocate one. Standard input, output and error are streamed binary-safe, stdin's EOF
//! goes out as channel EOF, and the remote exit status comes back (a signal death as 128+n, as
//! shells report it). On a terminal: raw mode for the session's lifetime, window-size changes
//! forwarded, and the escape sequences of [`super::escape`].

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use russh::client::Msg;
use russh::{ChannelMsg, ChannelWriteHalf, Sig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::escape::{Action, EscapeFilter};
use super::tty::{self, RawMode};
use super::{ClientError, SshHandle, EXIT_FAILURE};
use crate::pipe::Counters;

/// What to run and how, resolved from the options and the local terminal.
#[derive(Debug, Clone)]
pub struct SessionRequest {
    /// The command line; `None` starts the user's login shell.
    pub command: Option<String>,
    /// Allocate a PTY (the decision of [`crate::config::session::RequestTty::decide`]).
    pub pty: bool,
    /// Environment to pass (SendEnv, then SetEnv); the server may refuse each (AcceptEnv).
    pub env: Vec<(String, String)>,
    /// The escape character, honoured only with a PTY, as in ssh(1).
    pub escape_char: Option<u8>,
    /// The host name for ssh(1)'s "Connection to ... closed." message.
    pub host: String,
}

/// How the session ended, for the exit status.
enum Ending {
    /// The server closed the channel (or the connection went away).
    Closed,
    /// `~.` or a terminating signal.
    Local,
}

/// Runs the session to its end and returns ssh(1)'s exit status.
pub async fn run(
    handle: &SshHandle,
    req: SessionRequest,
    forwards: Arc<Counters>,
) -> Result<u8, ClientError> {
    let channel = handle.channel_open_session().await?;
    for (name, value) in &req.env {
        tracing::debug!("Sending env {name} = {value}");
        channel
            .set_env(false, name.as_str(), value.as_str())
            .await?;
    }
    let raw = if req.pty { enter_raw_mode() } else { None };
    let mut pending = VecDeque::new();
    if req.pty {
        let term = std::env::var("TERM").unwrap_or_default();
        let (cols, rows, px, py) = tty::window_size();
        let modes = raw
            .as_ref()
            .map(|r| tty::encode_modes(&r.saved()))
            .unwrap_or_default();
        channel
            .request_pty(true, &term, cols, rows, px, py, &modes)
            .await?;
        pending.push_back(Request::Pty);
    }
    match &req.command {
        Some(command) => {
            channel.exec(true, command.as_str()).await?;
            pending.push_back(Request::Exec);
        }
        None => {
            channel.request_shell(true).await?;
            pending.push_back(Request::Shell);
        }
    }
    let (mut read, write) = channel.split();
    let disconnect = CancellationToken::new();
    let input = Input {
        escape: req.escape_char.filter(|_| req.pty).map(EscapeFilter::new),
        raw: raw.clone(),
        forwards,
        disconnect: disconnect.clone(),
        watch_window: req.pty,
    };
    let input_task = tokio::spawn(input.run(write, read_stdin()));
    let mut stop = Stop::new(req.pty);
    let mut out = Output::default();
    let ending = loop {
        tokio::select! {
            msg = read.wait() => match msg {
                None | Some(ChannelMsg::Close) => break Ending::Closed,
                Some(msg) => {
                    if !out.handle(msg, &mut pending, raw.as_deref()).await {
                        break Ending::Closed;
                    }
                }
            },
            () = disconnect.cancelled() => break Ending::Local,
            () = stop.signalled() => break Ending::Local,
        }
    };
    input_task.abort();
    if let Some(raw) = &raw {
        raw.restore();
    }
    if req.pty {
        tracing::info!("Connection to {} closed.", req.host);
    }
    Ok(match ending {
        Ending::Local => EXIT_FAILURE,
        Ending::Closed => out.status.unwrap_or(EXIT_FAILURE),
    })
}

/// Raw mode when stdin is a terminal; a forced PTY (`-tt`) over a pipe runs without it.
fn enter_raw_mode() -> Option<Arc<RawMode>> {
    match RawMode::enter() {
        Ok(raw) => Some(Arc::new(raw)),
        Err(e) => {
            tracing::debug!("tcgetattr: {e}");
            None
        }
    }
}

/// A request that asked for a reply, in the order the replies come back.
#[derive(Debug, Clone, Copy)]
enum Request {
    Pty,
    Shell,
    Exec,
}

/// Where the server's output goes, and the exit status once it is known.
#[derive(Default)]
struct Output {
    status: Option<u8>,
}

impl Output {
    /// Handles one channel message; false when the session cannot go on.
    async fn handle(
        &mut self,
        msg: ChannelMsg,
        pending: &mut VecDeque<Request>,
        raw: Option<&RawMode>,
    ) -> bool {
        match msg {
            ChannelMsg::Data { data } => {
                let mut stdout = tokio::io::stdout();
                if stdout.write_all(&data).await.is_err() {
                    return false;
                }
                let _ = stdout.flush().await;
            }
            ChannelMsg::ExtendedData { data, .. } => {
                let mut stderr = tokio::io::stderr();
                let _ = stderr.write_all(&data).await;
                let _ = stderr.flush().await;
            }
            ChannelMsg::ExitStatus { exit_status } => {
                self.status = Some(u8::try_from(exit_status).unwrap_or(EXIT_FAILURE));
            }
            ChannelMsg::ExitSignal { signal_name, .. } => {
                self.status = Some(128u8.saturating_add(signal_number(&signal_name)));
            }
            ChannelMsg::Success => {
                pending.pop_front();
            }
            ChannelMsg::Failure => return request_failed(pending.pop_front(), raw),
            _ => {}
        }
        true
    }
}

/// ssh(1)'s messages for refused requests: a PTY refusal leaves a session without a terminal;
/// a refused shell or command ends it.
fn request_failed(request: Option<Request>, raw: Option<&RawMode>) -> bool {
    match request {
        Some(Request::Pty) => {
            if let Some(raw) = raw {
                raw.restore();
            }
            tracing::error!("PTY allocation request failed on channel 0");
            true
        }
        Some(Request::Shell) => {
            tracing::error!("shell request failed on channel 0");
            false
        }
        Some(Request::Exec) => {
            tracing::error!("exec request failed on channel 0");
            false
        }
        None => true,
    }
}

/// Reads standard input in its own task, so the input loop can also wait for window changes.
fn read_stdin() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Keyboard (or piped) input towards the server.
struct Input {
    escape: Option<EscapeFilter>,
    raw: Option<Arc<RawMode>>,
    forwards: Arc<Counters>,
    disconnect: CancellationToken,
    watch_window: bool,
}

impl Input {
    async fn run(mut self, write: ChannelWriteHalf<Msg>, mut chunks: mpsc::Receiver<Vec<u8>>) {
        let mut writer = write.make_writer();
        let mut winch = self
            .watch_window
            .then(|| signal(SignalKind::window_change()).ok())
            .flatten();
        let mut stdin_open = true;
        loop {
            tokio::select! {
                chunk = chunks.recv(), if stdin_open => match chunk {
                    Some(bytes) => {
                        if !self.input(&mut writer, bytes).await {
                            return;
                        }
                    }
                    None => {
                        stdin_open = false;
                        let _ = writer.shutdown().await;
                        let _ = write.eof().await;
                    }
                },
                Some(()) = next_signal(&mut winch) => {
                    let (cols, rows, px, py) = tty::window_size();
                    let _ = write.window_change(cols, rows, px, py).await;
                }
                else => return,
            }
        }
    }

    /// Sends `bytes`, acting on escapes; false once the session must end.
    async fn input(&mut self, writer: &mut (impl AsyncWriteExt + Unpin), bytes: Vec<u8>) -> bool {
        let actions = match &mut self.escape {
            Some(filter) => filter.feed(&bytes),
            None => vec![Action::Send(bytes)],
        };
        for action in actions {
            match action {
                Action::Send(data) => {
                    if writer.write_all(&data).await.is_err() {
                        return false;
                    }
                }
                Action::Disconnect => {
                    let e = self.escape_char();
                    local_message(&format!("{e}.\r\n")).await;
                    self.disconnect.cancel();
                    return false;
                }
                Action::Help => {
                    let help = self.escape.as_ref().map(|f| f.help()).unwrap_or_default();
                    local_message(&help).await;
                }
                Action::ListForwards => local_message(&self.forward_list()).await,
                Action::Suspend => {
                    let e = self.escape_char();
                    local_message(&format!("{e}^Z [suspend ssh]\r\n")).await;
                    if let Some(raw) = &self.raw {
                        if let Err(err) = raw.suspend() {
                            tracing::debug!("suspend: {err}");
                        }
                    }
                }
                Action::CommandLineDisabled => local_message("commandline disabled\r\n").await,
            }
        }
        true
    }

    fn escape_char(&self) -> char {
        self.escape
            .as_ref()
            .map_or('~', |f| char::from(f.escape_char()))
    }

    fn forward_list(&self) -> String {
        let c = &self.forwards;
        format!(
            "The following connections are open:\r\n  {} forwarded connection(s) open, {} opened in all, {} bytes sent, {} bytes received\r\n",
            c.active.load(Ordering::Relaxed),
            c.opened.load(Ordering::Relaxed),
            c.a_to_b.load(Ordering::Relaxed),
            c.b_to_a.load(Ordering::Relaxed),
        )
    }
}

/// Text for the local user only (escape feedback), on stderr as ssh(1) writes it.
async fn local_message(text: &str) {
    let mut stderr = tokio::io::stderr();
    let _ = stderr.write_all(text.as_bytes()).await;
    let _ = stderr.flush().await;
}

async fn next_signal(s: &mut Option<Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => None,
    }
}

/// SIGTERM and SIGHUP end a terminal session cleanly, so raw mode is always undone. Without a
/// PTY the default actions stay, as before.
struct Stop {
    term: Option<Signal>,
    hup: Option<Signal>,
}

impl Stop {
    fn new(pty: bool) -> Self {
        let install = |kind| pty.then(|| signal(kind).ok()).flatten();
        Self {
            term: install(SignalKind::terminate()),
            hup: install(SignalKind::hangup()),
        }
    }

    async fn signalled(&mut self) {
        tokio::select! {
            Some(()) = next_signal(&mut self.term) => {}
            Some(()) = next_signal(&mut self.hup) => {}
            else => std::future::pending::<()>().await,
        }
    }
}

/// POSIX signal numbers for the names SSH carries (RFC 4254 6.10).
pub(crate) fn signal_number(sig: &Sig) -> u8 {
    match sig {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(_) => 0,
    }
}
