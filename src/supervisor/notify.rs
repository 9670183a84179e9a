//! systemd's notify protocol (sd_notify(3)) without a C library: READY once every tunnel has
//! come up the first time, a STATUS line that `systemctl status burrow-up` shows ("3 of 4
//! tunnels up; office: backoff 8 s, connection refused"), RELOADING/READY around reloads,
//! STOPPING on shutdown, and WATCHDOG pings while the supervisor loop runs. Without
//! NOTIFY_SOCKET (not under systemd) every call does nothing.

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use super::status::{State, TunnelSnapshot};

/// The longest STATUS line sent (systemd shows one line; a long error would wrap it away).
const STATUS_MAX: usize = 400;
/// The longest part of a tunnel's last error in the STATUS line.
const ERROR_MAX: usize = 120;

/// Sends one notification (e.g. "READY=1"; several may be joined with newlines) to
/// $NOTIFY_SOCKET, if set.
pub fn notify(message: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        if let Err(e) = send_to(&path, message) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

/// Sends `message` to the notify socket `path` (`@name` for an abstract socket).
pub fn send_to(path: &OsStr, message: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(message.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(message.as_bytes(), path)?;
        }
    }
    Ok(())
}

/// "RELOADING=1" with the CLOCK_MONOTONIC time systemd (253+, Type=notify-reload) wants with it
/// to tell this reload from an earlier one.
pub fn reloading_message() -> String {
    let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0);
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

/// The watchdog ping interval systemd asked for: half of $WATCHDOG_USEC, and only if
/// $WATCHDOG_PID is unset or names this process (sd_watchdog_enabled(3): a child of the service's
/// main process must not ping on its behalf).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_for(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_interval`] from given values (tests).
pub fn watchdog_interval_for(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(me) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// The STATUS line for `tunnels` at unix time `now`: how many are up, then each one that is not,
/// with its state, how long it has been in it and its last error.
pub fn status_line(tunnels: &[TunnelSnapshot], now: u64) -> String {
    let up = tunnels.iter().filter(|t| t.state == State::Up).count();
    let mut line = format!(
        "{up} of {} tunnel{} up",
        tunnels.len(),
        if tunnels.len() == 1 { "" } else { "s" }
    );
    for t in tunnels.iter().filter(|t| t.state != State::Up) {
        line.push_str("; ");
        let state = match t.state {
            State::Connecting => "connecting",
            State::Backoff => "backoff",
            State::Failed => "failed",
            State::Stopped => "stopped",
            State::Up => "up",
        };
        line.push_str(&format!(
            "{}: {state} {} s",
            t.name,
            now.saturating_sub(t.since)
        ));
        if let Some(e) = &t.last_error {
            let e: String = e.chars().take(ERROR_MAX).collect();
            line.push_str(&format!(", {}", e.replace('\n', " ")));
        }
    }
    if line.chars().count() > STATUS_MAX {
        line = line.chars().take(STATUS_MAX - 1).collect();
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(name: &str, state: State, since: u64, error: Option<&str>) -> TunnelSnapshot {
        TunnelSnapshot {
            name: name.into(),
            state,
            since,
            server: None,
            reconnects: 0,
            failures: 0,
            last_error: error.map(str::to_string),
            connections_active: 0,
            connections_total: 0,
            bytes_out: 0,
            bytes_in: 0,
            forwards: Vec::new(),
            streams_resumable: 0,
            streams_resumed: 0,
            streams_expired: 0,
        }
    }

    #[test]
    fn status_counts_up_tunnels_and_names_the_others_with_their_error() {
        let all = [
            snap("home", State::Up, 100, None),
            snap(
                "office",
                State::Backoff,
                992,
                Some("connect to host b port 22: Connection refused"),
            ),
            snap("lab", State::Up, 100, Some("old error")),
            snap("nas", State::Connecting, 1000, None),
        ];
        assert_eq!(
            status_line(&all, 1000),
            "2 of 4 tunnels up; office: backoff 8 s, connect to host b port 22: Connection refused; nas: connecting 0 s"
        );
        assert_eq!(status_line(&all[..1], 1000), "1 of 1 tunnel up");
        let long: Vec<TunnelSnapshot> = (0..5)
            .map(|i| snap(&format!("t{i}"), State::Backoff, 0, Some(&"e".repeat(500))))
            .collect();
        let line = status_line(&long, 5);
        assert!(line.chars().count() <= STATUS_MAX, "{line}");
        assert!(
            line.starts_with("0 of 5 tunnels up; t0: backoff 5 s, eee"),
            "{line}"
        );
    }

    #[test]
    fn watchdog_pings_only_for_this_process() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_interval_for(Some("30000000"), None, 42), half);
        assert_eq!(
            watchdog_interval_for(Some("30000000"), Some("42"), 42),
            half
        );
        assert_eq!(
            watchdog_interval_for(Some("30000000"), Some("41"), 42),
            None
        );
        assert_eq!(watchdog_interval_for(Some("30000000"), Some("x"), 42), None);
        assert_eq!(watchdog_interval_for(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval_for(None, Some("42"), 42), None);
    }

    #[test]
    fn messages_reach_a_notify_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).expect("bind");
        send_to(path.as_os_str(), &reloading_message()).expect("send");
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).expect("recv");
        let got = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(got.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{got}");
        let usec: u64 = got.rsplit('=').next().unwrap_or("").parse().expect("usec");
        assert!(usec > 0);
    }
}
