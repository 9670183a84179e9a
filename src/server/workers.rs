//! The relay's session threads: one single-threaded tokio runtime per CPU, each running whole
//! sessions.
//!
//! On a work-stealing runtime a session's tasks (its transport, one pump per forwarded
//! connection, its listeners) land on whichever worker is free, so every channel message and
//! every window update between them can be a wake-up of another thread. Measured on the relay
//! (issue 21, `bench --only throughput` on 2 cores, interleaved, with a prototype that ran the
//! whole relay on one thread, which is the same for one session): the relay spent 7–21% less
//! CPU per GiB sent and received, and burrow→serve moved 4–26% more bytes per second, the same
//! lesson as `burrow ssh`'s one thread. So each accepted connection goes to the thread with the
//! fewest sessions, and everything the session spawns (`tokio::spawn` inside it) stays on that
//! thread; sessions on different threads still share the relay's state (`Relay`), and a task
//! may still wait on one of another thread (a resumable stream re-attached from a later session
//! stays on the thread it started on), only not for every message.
//!
//! The price, as with nginx's or HAProxy's threads: one session's forwards share one core. A
//! session's transport (every packet's crypto) was a single task before, so the cap is about
//! what it was; what one session can no longer do is pump on a second core beside it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Threads for blocking work over all session threads (each runtime has its own pool). The
/// relay's name lookups (-L/-D/-W destinations, -R bind names) do not use them: they run on the
/// accepting runtime's pool, shared by every session (`Relay::lookups`,
/// `forward::listen::lookup_on`), so one session's slow lookups cannot fill a small pool for
/// the others on its thread.
const BLOCKING_THREADS: usize = 512;

/// The session threads; they stop (dropping whatever still runs there) when this is dropped.
pub struct Workers {
    threads: Vec<Worker>,
    stop: CancellationToken,
    /// Where the next placement starts looking, so sessions that come and go one at a time
    /// do not all land on the first thread.
    next: AtomicUsize,
}

struct Worker {
    handle: Handle,
    thread: std::thread::JoinHandle<()>,
    /// Sessions placed on this thread and not yet ended.
    sessions: Arc<AtomicUsize>,
}

/// One session's place on its thread: the thread counts it until this is dropped.
pub struct Placement {
    /// Where to spawn the session.
    pub handle: Handle,
    sessions: Arc<AtomicUsize>,
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts one thread per available CPU (at least one).
    pub fn start() -> std::io::Result<Self> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::start_n(n)
    }

    /// Starts `n` threads (at least one). If one cannot start, those already started stop.
    pub fn start_n(n: usize) -> std::io::Result<Self> {
        let n = n.max(1);
        let mut workers = Self {
            threads: Vec::with_capacity(n),
            stop: CancellationToken::new(),
            next: AtomicUsize::new(0),
        };
        let blocking = (BLOCKING_THREADS / n).max(1);
        for i in 0..n {
            // On error `workers` is dropped, which stops the threads started so far.
            let (handle, thread) = workers.start_thread(i, blocking)?;
            workers.threads.push(Worker {
                handle,
                thread,
                sessions: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(workers)
    }

    /// Starts thread `i` and its runtime, built on the thread itself: a runtime that could not
    /// be handed to a thread would be dropped here, which tokio refuses inside another runtime.
    fn start_thread(
        &self,
        i: usize,
        blocking: usize,
    ) -> std::io::Result<(Handle, std::thread::JoinHandle<()>)> {
        let stop = self.stop.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(format!("burrow-sessions-{i}"))
            .spawn(move || {
                let built = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .max_blocking_threads(blocking)
                    .build();
                match built {
                    Ok(runtime) => {
                        let _ = tx.send(Ok(runtime.handle().clone()));
                        runtime.block_on(stop.cancelled());
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })?;
        let handle = rx.recv().map_err(|_| {
            std::io::Error::other("a session thread ended before its runtime started")
        })??;
        Ok((handle, thread))
    }

    /// The thread with the fewest sessions, counting one more there. Among equals the search
    /// starts one thread further each time.
    pub fn place(&self) -> Option<Placement> {
        let n = self.threads.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let worker = (0..n)
            .filter_map(|k| self.threads.get(start.wrapping_add(k) % n))
            .min_by_key(|w| w.sessions.load(Ordering::Relaxed))?;
        worker.sessions.fetch_add(1, Ordering::Relaxed);
        Some(Placement {
            handle: worker.handle.clone(),
            sessions: worker.sessions.clone(),
        })
    }

    /// Stops the threads once the relay has shut down: what still runs there is dropped (its
    /// sockets closed, its `Drop`s run) rather than left to the process's exit. Waits at most
    /// `limit` for them to finish.
    pub async fn stop(&self, limit: std::time::Duration) {
        self.stop.cancel();
        let deadline = tokio::time::Instant::now() + limit;
        while !self.threads.iter().all(|w| w.thread.is_finished())
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Tasks alive on the session threads, for `diagnostics` (the leak checks count them).
    pub fn alive_tasks(&self) -> usize {
        self.threads
            .iter()
            .map(|w| w.handle.metrics().num_alive_tasks())
            .sum()
    }

    /// Sessions on each thread now, in thread order.
    pub fn sessions_per_thread(&self) -> Vec<usize> {
        self.threads
            .iter()
            .map(|w| w.sessions.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_go_to_the_least_loaded_thread_and_leave_it_when_they_end() {
        let workers = Workers::start_n(2).expect("threads start");
        let a = workers.place().expect("a thread");
        let b = workers.place().expect("a thread");
        assert_eq!(workers.sessions_per_thread(), vec![1, 1]);
        let c = workers.place().expect("a thread");
        assert_eq!(workers.sessions_per_thread(), vec![2, 1]);
        drop(a);
        drop(c);
        assert_eq!(workers.sessions_per_thread(), vec![0, 1]);
        let d = workers.place().expect("a thread");
        assert_eq!(workers.sessions_per_thread(), vec![1, 1]);
        drop((b, d));
        // Sessions that come and go one at a time take turns.
        let mut seen = Vec::new();
        for _ in 0..4 {
            let p = workers.place().expect("a thread");
            seen.push(workers.sessions_per_thread());
            drop(p);
        }
        assert_eq!(seen, vec![vec![1, 0], vec![0, 1], vec![1, 0], vec![0, 1]]);
    }

    #[test]
    fn what_a_session_spawns_runs_on_its_own_thread() {
        let workers = Workers::start_n(2).expect("threads start");
        let place = workers.place().expect("a thread");
        let (tx, rx) = std::sync::mpsc::channel();
        place.handle.spawn(async move {
            let outer = std::thread::current().id();
            let inner = tokio::spawn(async { std::thread::current().id() })
                .await
                .expect("inner task runs");
            let _ = tx.send((outer, inner));
        });
        let (outer, inner) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the session thread runs its tasks");
        assert_eq!(outer, inner, "a spawned task left its session's thread");
        assert_ne!(outer, std::thread::current().id());
    }

    #[test]
    fn tasks_on_the_session_threads_are_counted() {
        let workers = Workers::start_n(2).expect("threads start");
        let place = workers.place().expect("a thread");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        place.handle.spawn(async move {
            let _ = tx.send(());
            stopped.cancelled().await
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the task started");
        assert_eq!(workers.alive_tasks(), 1, "a live task on a session thread");
        stop.cancel();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while workers.alive_tasks() != 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(workers.alive_tasks(), 0, "an ended task still counted");
    }

    #[test]
    fn dropping_the_workers_ends_their_threads() {
        let workers = Workers::start_n(1).expect("threads start");
        let place = workers.place().expect("a thread");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // A task that never ends holds `tx`; it is dropped, unfinished, when its runtime is.
        place.handle.spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await
        });
        drop(place);
        drop(workers);
        let gone = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(gone, Err(std::sync::mpsc::RecvTimeoutError::Disconnected));
    }
}
