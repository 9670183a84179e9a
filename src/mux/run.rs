//! How one `burrow ssh` invocation takes part in connection sharing:
//!
//! 1. `-O cmd`, or ControlMaster no/auto/autoask with a ControlPath where a master answers:
//!    the invocation is a mux client and never connects itself ([`super::client`]).
//! 2. ControlMaster yes/ask (or auto/autoask with no master running) and a ControlPath: it
//!    connects, sets up its forwards, listens on the control socket, runs its own command (or
//!    `-W`, or just forwards with `-N`), and — like ssh — stays until its mux clients are gone.
//! 3. With ControlPersist the master runs in the background with no session of its own (a
//!    re-executed copy of this process, see [`crate::client::background`]) and the foreground
//!    runs the command through it, or returns at once with `-N`. It exits after the
//!    ControlPersist idle time without clients, on `-O exit`, or once `-O stop` leaves it
//!    with nothing to carry.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::client::{self, Attempt, MuxClient};
use super::master::{ControlSocket, Master};
use crate::client::work::{self, StopSignals};
use crate::client::{background, forwards, ClientError, Session, EXIT_FAILURE};
use crate::config::options::ClientOptions;
use crate::config::sharing::{ControlMaster, ControlPersist};

/// How often a master without a session of its own checks whether it may exit.
const IDLE_TICK: Duration = Duration::from_millis(250);

/// Runs a `burrow ssh` invocation to the end, sharing a connection as the options say;
/// returns the exit status.
pub async fn run(opts: ClientOptions, ready: background::Ready) -> Result<u8, ClientError> {
    if let Some(code) = try_shared(&opts).await {
        return Ok(code);
    }
    if !is_master(&opts) {
        return crate::client::run(opts, ready).await;
    }
    if !opts.no_command && opts.command.is_empty() && opts.stdio_forward.is_none() {
        return Err(ClientError::Unsupported(
            "interactive shells are not supported yet; give a command, or use -N (forwarding only) or -W"
                .into(),
        ));
    }
    let session = Session::establish(&opts, CancellationToken::new()).await?;
    run_master(&opts, session, ready).await
}

/// Uses a running master when `-O` or ControlMaster asks for one; None when this invocation
/// must connect itself.
async fn try_shared(opts: &ClientOptions) -> Option<u8> {
    if let Some(cmd) = opts.control.command {
        return Some(client::command(opts, cmd).await);
    }
    let path = opts.control.path.as_ref()?;
    if !opts.control.master.tries_existing() {
        return None;
    }
    if opts.control.master != ControlMaster::No {
        tracing::debug!("auto-mux: Trying existing master");
    }
    let remove_stale = opts.control.master != ControlMaster::No;
    match MuxClient::connect(path, remove_stale).await {
        Ok(Attempt::Connected(mux)) => Some(client::passenger(mux, opts).await),
        Ok(Attempt::NoMaster) => None,
        Err(e) => {
            let reason = crate::reason::io_reason(&e);
            tracing::error!("Control socket connect({}): {reason}", path.display());
            None
        }
    }
}

/// Whether this invocation listens for mux clients once connected.
pub fn is_master(opts: &ClientOptions) -> bool {
    opts.control.path.is_some() && opts.control.master.listens() && opts.control.command.is_none()
}

/// Whether to start a ControlPersist master in the background first: persistence is on, this
/// would be a master, and no master answers at ControlPath already.
fn wants_persistent_master(opts: &ClientOptions) -> bool {
    let Some(path) = &opts.control.path else {
        return false;
    };
    let live = std::os::unix::net::UnixStream::connect(path).is_ok();
    opts.control.persist != ControlPersist::No
        && is_master(opts)
        && !(live && opts.control.master.tries_existing())
}

/// ControlPersist, before the async runtime starts: in the background master, its own
/// options; in the foreground, starts that master and carries on as its client. `Err` means
/// exit now with this status: at once with `-N` (as ssh does), or because the master could not
/// start.
pub fn control_persist(opts: ClientOptions) -> Result<ClientOptions, u8> {
    if background::is_persistent_master() {
        return Ok(as_persistent_master(opts));
    }
    if !wants_persistent_master(&opts) {
        return Ok(opts);
    }
    match background::spawn_persistent_master() {
        Ok(None) if opts.no_command && opts.stdio_forward.is_none() => Err(0),
        Ok(None) => Ok(as_client_of_new_master(opts)),
        Ok(Some(code)) => Err(code),
        Err(e) => {
            eprintln!("burrow: cannot start the ControlPersist master: {e}");
            Err(EXIT_FAILURE)
        }
    }
}

/// The options of the background ControlPersist master: forwards and the connection only;
/// the foreground runs the command through it.
fn as_persistent_master(mut opts: ClientOptions) -> ClientOptions {
    opts.no_command = true;
    opts.command.clear();
    opts.stdio_forward = None;
    opts.background = false;
    opts
}

/// The options of the foreground once its ControlPersist master is up: a plain mux client.
fn as_client_of_new_master(mut opts: ClientOptions) -> ClientOptions {
    opts.control.master = ControlMaster::No;
    opts
}

/// Master: forwards, control socket, then its own work; ends once its clients are gone.
async fn run_master(
    opts: &ClientOptions,
    session: Session,
    mut ready: background::Ready,
) -> Result<u8, ClientError> {
    session.start_forwards(opts).await?;
    let session = Arc::new(session);
    let master = Master::new(
        session.clone(),
        &opts.hostname,
        forwards::bind_options(opts),
        opts.control.master.asks(),
    );
    if let Some(path) = &opts.control.path {
        match ControlSocket::bind(path) {
            Ok(Some(socket)) => master.listen(socket),
            Ok(None) => {}
            Err(e) => {
                let reason = crate::reason::io_reason(&e);
                return Err(ClientError::Forward(format!(
                    "unix_listener: cannot bind to path {}: {reason}",
                    path.display()
                )));
            }
        }
    }
    ready.signal();
    let code = own_work(opts, &session, &master).await;
    master.shutdown().await;
    drop(master);
    match Arc::try_unwrap(session) {
        Ok(session) => session.close().await,
        Err(_) => tracing::debug!("session still shared at exit"),
    }
    code
}

/// The master's own command, `-W`, or (with `-N`) just waiting; then waiting for clients.
async fn own_work(
    opts: &ClientOptions,
    session: &Session,
    master: &Master,
) -> Result<u8, ClientError> {
    let Some(code) = work::own_work(session, opts).await? else {
        return Ok(serve_until_done(opts, session, master).await);
    };
    while master.client_count() > 0 {
        tokio::select! {
            () = tokio::time::sleep(IDLE_TICK) => {}
            _ = session.ended() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(code)
}

/// A master with no session of its own (`-N`, ControlPersist): runs until the connection
/// ends, a signal, `-O exit`, or — after `-O stop`, or with a ControlPersist time — until it
/// has had no clients and no forwarded connections for that long. Exits 255, as ssh's does.
async fn serve_until_done(opts: &ClientOptions, session: &Session, master: &Master) -> u8 {
    let mut stop = StopSignals::install();
    let mut idle_since: Option<Instant> = None;
    let counters = session.counters();
    loop {
        tokio::select! {
            reason = session.ended() => {
                return crate::client::report_end(opts, reason);
            }
            () = master.terminated() => return EXIT_FAILURE,
            () = stop.recv() => return EXIT_FAILURE,
            () = tokio::time::sleep(IDLE_TICK) => {}
        }
        let limit = match opts.control.persist {
            _ if master.stopped() => Some(Duration::ZERO),
            ControlPersist::Idle(d) => Some(d),
            ControlPersist::No | ControlPersist::Forever => None,
        };
        let busy = master.client_count() > 0 || counters.active.load(Ordering::SeqCst) > 0;
        match limit {
            Some(limit) if !busy => {
                if idle_since.get_or_insert_with(Instant::now).elapsed() >= limit {
                    return EXIT_FAILURE;
                }
            }
            _ => idle_since = None,
        }
    }
}
