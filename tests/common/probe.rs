//! End to end across the test namespaces: [`NetnsServer`], a service a tunnel publishes (the
//! blocking, namespace-bound sibling of [`echo_server`](super::echo_server) and its kin), and
//! [`Prober`], a client that keeps making requests to it and records each outcome with its time.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::netns::{in_netns, spawn_in_netns};

/// Pause between two of the prober's requests.
pub const PROBE_EVERY: Duration = Duration::from_millis(200);

/// How long an echo connection may stay silent before the service closes it. Long, so that an
/// outage of the tunnel does not look like an idle client.
const ECHO_IDLE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Services in a namespace
// ---------------------------------------------------------------------------------------------

/// A threaded TCP server whose listening socket lives in a namespace: each connection is served
/// by `serve` on a thread of its own, and each client's address is recorded. Stopped, with its
/// open connections, on drop.
pub struct NetnsServer {
    /// The port it listens on (in its namespace).
    pub port: u16,
    listener: socket2::Socket,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NetnsServer {
    /// Binds `addr` in namespace `ns` (port 0: the system chooses) and starts serving.
    pub fn start<F>(ns: &str, addr: SocketAddr, serve: F) -> NetnsServer
    where
        F: Fn(TcpStream) + Clone + Send + 'static,
    {
        let listener: TcpListener = in_netns(ns, move || TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("bind {addr} in {ns}: {e}"));
        let port = listener.local_addr().expect("listening address").port();
        let stop = socket2::Socket::from(listener.try_clone().expect("clone listener"));
        let conns = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (c2, p2) = (conns.clone(), peers.clone());
        let thread = std::thread::spawn(move || {
            // Ends when the listener is shut down (accept then fails).
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                if let Ok(peer) = conn.peer_addr() {
                    p2.lock().unwrap().push(peer);
                }
                if let Ok(c) = conn.try_clone() {
                    c2.lock().unwrap().push(c);
                }
                let serve = serve.clone();
                std::thread::spawn(move || serve(conn));
            }
        });
        NetnsServer {
            port,
            listener: stop,
            conns,
            peers,
            thread: Some(thread),
        }
    }

    /// An echo server on 127.0.0.1 in `ns` (port chosen by the system). Like
    /// [`echo_server`](super::echo_server) it half-closes after the client's EOF.
    pub fn echo(ns: &str) -> NetnsServer {
        NetnsServer::start(ns, SocketAddr::from(([127, 0, 0, 1], 0)), echo)
    }

    /// The address of every client so far, in order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

impl Drop for NetnsServer {
    fn drop(&mut self) {
        // shutdown(2) on a listening socket wakes a blocked accept on Linux.
        let _ = self.listener.shutdown(Shutdown::Both);
        for c in self.conns.lock().unwrap().iter() {
            let _ = c.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Echoes until EOF (then half-closes) or an error; bounded by [`ECHO_IDLE`] per read and by
/// the drop of its [`NetnsServer`], which shuts the connection down.
fn echo(mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(ECHO_IDLE));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = conn.shutdown(Shutdown::Write);
}

// ---------------------------------------------------------------------------------------------
// The prober
// ---------------------------------------------------------------------------------------------

/// One end-to-end attempt.
struct Probe {
    end: Instant,
    result: Result<(), String>,
}

/// A thread in a namespace that keeps making end-to-end requests to `addr` (connect, send a
/// numbered line, read it back) every [`PROBE_EVERY`] and records each outcome, until dropped.
pub struct Prober {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Probe>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    /// Starts probing `addr` from namespace `ns`.
    pub fn start(ns: &str, addr: SocketAddr) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s2, l2) = (stop.clone(), log.clone());
        let thread = spawn_in_netns(ns, move || {
            let started = Instant::now();
            // Bounded in count and time (a test is killed after 120 s anyway).
            for n in 0..5_000u32 {
                if s2.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(170) {
                    break;
                }
                let result = probe_once(addr, n);
                l2.lock().unwrap().push(Probe {
                    end: Instant::now(),
                    result,
                });
                std::thread::sleep(PROBE_EVERY);
            }
        });
        Prober {
            stop,
            log,
            thread: Some(thread),
        }
    }

    /// When the first probe that ended after `t` succeeded.
    pub fn first_success_after(&self, t: Instant) -> Option<Instant> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|p| p.end >= t && p.result.is_ok())
            .map(|p| p.end)
    }

    /// Failed probes that ended in `[from, to)`.
    pub fn failures_between(&self, from: Instant, to: Instant) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.end >= from && p.end < to && p.result.is_err())
            .count()
    }

    /// The outcome of the latest probe, for messages.
    pub fn last(&self) -> String {
        match self.log.lock().unwrap().last() {
            None => "no probe yet".into(),
            Some(Probe { result: Ok(()), .. }) => "ok".into(),
            Some(Probe { result: Err(e), .. }) => e.clone(),
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request: connect within 1 s, send a numbered line, read it back within 2 s.
fn probe_once(addr: SocketAddr, n: u32) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let msg = format!("probe-{n:09}\n");
    s.write_all(msg.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).map_err(|e| format!("read: {e}"))?;
    if got != msg.as_bytes() {
        return Err(format!(
            "echo mismatch: {:?}",
            String::from_utf8_lossy(&got)
        ));
    }
    Ok(())
}
