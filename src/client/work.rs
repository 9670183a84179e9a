//! What a connected `burrow ssh` invocation does, and what stops it: its own work (`-W`, a
//! command, or none with `-N`), and the signals that end a session without a command. The
//! plain client ([`super::run`]) and a connection-sharing master ([`crate::mux::run`]) both go
//! this way, so the two cannot drift apart.

use tokio::signal::unix::{signal, Signal, SignalKind};

use super::{session_channel, session_request, ClientError, Session};
use crate::config::options::ClientOptions;

/// Runs the session's own work as ssh(1) decides it: `-W` joins stdin/stdout to host:port
/// (status 0), a command runs in a session channel (status: the command's). `None` with `-N`:
/// there is no work of its own, and the caller waits in its own way.
pub async fn own_work(session: &Session, opts: &ClientOptions) -> Result<Option<u8>, ClientError> {
    if let Some((host, port)) = &opts.stdio_forward {
        session.stdio(host, *port).await?;
        return Ok(Some(0));
    }
    if opts.no_command {
        return Ok(None);
    }
    let request = session_request(opts);
    let status = session_channel::run(session.handle(), request, session.counters()).await?;
    Ok(Some(status))
}

/// SIGINT and SIGTERM, which end a session that has no command (ssh(1) then exits 255).
/// SIGTERM's handler is installed once, so a signal that arrives between two waits is kept.
pub struct StopSignals {
    term: Option<Signal>,
}

impl StopSignals {
    /// Installs the SIGTERM handler (where it cannot be, only SIGINT stops).
    pub fn install() -> Self {
        Self {
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    /// Resolves at the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        let term = async {
            match self.term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
    }
}
