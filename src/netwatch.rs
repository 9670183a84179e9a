//! Network changes (an address or route added or removed: Wi-Fi/LTE switch, a new DHCP lease,
//! resume from sleep) seen through rtnetlink. `burrow up`'s tunnels and `burrow ssh`'s roaming
//! link to a relay react by probing the relay at once instead of waiting out the keepalive window.
//!
//! rtnetlink is Linux's: elsewhere (not built or tested on another OS yet) nothing is watched
//! and tunnels notice a changed network by their keepalives.

#[cfg(target_os = "linux")]
use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::{AsRawFd, OwnedFd};
#[cfg(target_os = "linux")]
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
use nix::sys::socket::{
    bind, recv, setsockopt, socket, sockopt::ReceiveTimeout, AddressFamily, MsgFlags, NetlinkAddr,
    SockFlag, SockProtocol, SockType,
};
#[cfg(target_os = "linux")]
use nix::sys::time::TimeVal;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[cfg(target_os = "linux")]
/// rtnetlink multicast groups: links, IPv4/IPv6 addresses and routes.
const GROUPS: u32 = 0x1 | 0x10 | 0x40 | 0x100 | 0x400;
#[cfg(target_os = "linux")]
/// Changes usually come in bursts (address, then routes); one probe per burst is enough.
const SETTLE: Duration = Duration::from_millis(300);
#[cfg(target_os = "linux")]
/// How often the watcher thread checks for shutdown while no message arrives.
const WAKE: Duration = Duration::from_millis(500);

/// Starts watching; the value in the returned channel increases once per burst of changes.
/// Without netlink (no permission, unusual kernels) the channel simply never changes.
///
/// A blocking socket on its own thread (with a receive timeout so it sees shutdown) keeps this
/// free of unsafe fd registration with the async runtime.
pub fn spawn(cancel: CancellationToken) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0u64);
    #[cfg(target_os = "linux")]
    match open() {
        Ok(fd) => {
            let keep = tx.clone();
            let spawned = std::thread::Builder::new()
                .name("netwatch".into())
                .spawn(move || watch_loop(fd, tx, cancel));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the network change watcher");
                never_changes(keep);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch network changes; relying on keepalives");
            never_changes(tx);
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        drop(cancel);
        never_changes(tx);
    }
    rx
}

/// Keeps the channel open for good without a watcher. A dropped sender would make every
/// `changed()` return at once, and a tunnel waiting out its backoff with `select!` on it would
/// reconnect in a tight loop instead of pausing. One small allocation per supervisor.
fn never_changes(tx: watch::Sender<u64>) {
    Box::leak(Box::new(tx));
}

#[cfg(target_os = "linux")]
fn open() -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, GROUPS))?;
    setsockopt(
        &fd,
        ReceiveTimeout,
        &TimeVal::new(0, WAKE.as_micros() as i64),
    )?;
    Ok(fd)
}

#[cfg(target_os = "linux")]
fn watch_loop(fd: OwnedFd, tx: watch::Sender<u64>, cancel: CancellationToken) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending: Option<Instant> = None;
    while !cancel.is_cancelled() {
        match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(_) => {
                pending.get_or_insert_with(Instant::now);
            }
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!(error = %e, "network change watcher stopped");
                never_changes(tx);
                return;
            }
        }
        // Announce once the burst has settled.
        if pending.is_some_and(|t| t.elapsed() >= SETTLE) {
            pending = None;
            tracing::info!("network changed; probing relays");
            tx.send_modify(|n| *n += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a watcher (netlink refused, or not Linux) a tunnel's backoff must still pause:
    /// `changed()` may not return before a change that never comes.
    #[tokio::test(start_paused = true)]
    async fn without_a_watcher_the_channel_never_fires() {
        let (tx, mut rx) = watch::channel(0u64);
        never_changes(tx);
        let waited = tokio::time::timeout(std::time::Duration::from_secs(3600), rx.changed()).await;
        assert!(
            waited.is_err(),
            "changed() returned {waited:?} with no change"
        );
    }
}
