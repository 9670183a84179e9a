//! systemd's notify protocol (sd_notify(3)) without a C library: READY once every tunnel has
//! come up the first time, WATCHDOG pings while the supervisor loop runs. Without
//! NOTIFY_SOCKET (not under systemd) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends one notification line (e.g. "READY=1") to $NOTIFY_SOCKET, if set.
pub fn notify(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let result = match bytes.strip_prefix(b"@") {
        // Abstract socket names ("@...") exist on Linux only, as does systemd.
        #[cfg(target_os = "linux")]
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|addr| sock.send_to_addr(message.as_bytes(), &addr))
        }
        #[cfg(not(target_os = "linux"))]
        Some(_) => Err(std::io::Error::from(std::io::ErrorKind::Unsupported)),
        None => sock.send_to(message.as_bytes(), &path),
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Half of $WATCHDOG_USEC, the interval systemd recommends for pings; None when not requested.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
