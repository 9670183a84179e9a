//! One output stream of a child process, copied to a file and kept in memory by a thread, so a
//! test can wait for a line (woken by new output, not by a timer).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// In-memory cap per stream; the file always gets everything.
const MEM_CAP: usize = 32 << 20;

#[derive(Default)]
struct LogState {
    bytes: Vec<u8>,
    text: String,
    pending: Vec<u8>,
    closed: bool,
}

/// One output stream of a child (stdout or stderr): appended to a file and kept in memory.
#[derive(Clone)]
pub struct OutputLog {
    inner: Arc<(Mutex<LogState>, Condvar)>,
    path: PathBuf,
}

impl OutputLog {
    pub(crate) fn start(mut reader: impl Read + Send + 'static, path: PathBuf) -> OutputLog {
        let log = OutputLog {
            inner: Arc::new((Mutex::new(LogState::default()), Condvar::new())),
            path: path.clone(),
        };
        let inner = log.inner.clone();
        // The thread ends at EOF, i.e. when every holder of the pipe's write end is gone.
        std::thread::spawn(move || {
            let mut file = File::create(&path).ok();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = reader.read(&mut buf).unwrap_or(0);
                if let Some(f) = file.as_mut() {
                    let _ = f.write_all(&buf[..n]);
                }
                let (m, cv) = &*inner;
                let mut st = m.lock().unwrap_or_else(|e| e.into_inner());
                if n == 0 {
                    st.closed = true;
                    cv.notify_all();
                    return;
                }
                if st.bytes.len() < MEM_CAP {
                    st.bytes.extend_from_slice(&buf[..n]);
                    let mut chunk = std::mem::take(&mut st.pending);
                    chunk.extend_from_slice(&buf[..n]);
                    append_utf8(&mut st, chunk);
                }
                cv.notify_all();
            }
        });
        log
    }

    /// Everything read so far, as (lossy) UTF-8.
    pub fn text(&self) -> String {
        self.lock().text.clone()
    }

    /// Everything read so far, raw.
    pub fn bytes(&self) -> Vec<u8> {
        self.lock().bytes.clone()
    }

    /// The file the stream is copied to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True once the stream hit EOF (the child and everything that inherited the pipe are gone).
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits until `f(text so far)` returns Some, the stream closes, or `timeout` passes.
    /// Wakes on new output, not on a timer.
    pub fn wait_until<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&str) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.inner;
        let mut st = m.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(v) = f(&st.text) {
                return Some(v);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if st.closed || left.is_zero() {
                return None;
            }
            st = cv
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for a line containing `needle`; returns that whole line.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_until(timeout, |t| {
            t.lines().find(|l| l.contains(needle)).map(str::to_owned)
        })
    }

    /// [`wait_for_line`](Self::wait_for_line) for async tests (blocks a pool thread, not the runtime).
    pub async fn wait_for_line_async(&self, needle: &str, timeout: Duration) -> Option<String> {
        let (me, needle) = (self.clone(), needle.to_owned());
        tokio::task::spawn_blocking(move || me.wait_for_line(&needle, timeout))
            .await
            .ok()
            .flatten()
    }

    /// [`wait_until`](Self::wait_until) for async tests (blocks a pool thread, not the runtime).
    pub async fn wait_until_async<T, F>(&self, timeout: Duration, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnMut(&str) -> Option<T> + Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.wait_until(timeout, f))
            .await
            .ok()
            .flatten()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn append_utf8(st: &mut LogState, chunk: Vec<u8>) {
    match std::str::from_utf8(&chunk) {
        Ok(s) => st.text.push_str(s),
        // Incomplete sequence at the end: keep it for the next read.
        Err(e) if e.error_len().is_none() => {
            let ok = e.valid_up_to();
            st.text.push_str(&String::from_utf8_lossy(&chunk[..ok]));
            st.pending = chunk[ok..].to_vec();
        }
        Err(_) => st.text.push_str(&String::from_utf8_lossy(&chunk)),
    }
}

/// The address a daemon logged for its metrics/status endpoint ("metrics on http://ADDR/"),
/// from its log so far: `burrow up --metrics` and `burrow serve --metrics` both bind port 0.
pub fn logged_metrics_address(log: &str) -> Option<std::net::SocketAddr> {
    log.lines().find_map(|l| {
        l.split("metrics on http://")
            .nth(1)?
            .split('/')
            .next()?
            .parse()
            .ok()
    })
}
