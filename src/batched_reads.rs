//! Fewer wake-ups while an SSH peer streams: the TCP socket wakes its reader once 256 KiB have
//! arrived (`SO_RCVLOWAT`) instead of for every write the peer makes.
//!
//! Why: burrow decrypts faster than sshd encrypts, so in a download it drained the socket after
//! each of sshd's writes (one 32 KiB SSH packet) and slept again: about one wake-up per packet,
//! 110,000 for 4 GiB, against 16,000 for OpenSSH's ssh, which is busier and finds the next packet
//! already there. Each wake-up costs the reader an `epoll_wait`, a failed `recvmsg` and a context
//! switch. Measured with `bench --only throughput --case "-L 1 stream"` (two interleaved rounds
//! against the build before): the client's CPU per GiB received from sshd fell from 0.88/0.92
//! to 0.69/0.68 s (chacha20-poly1305) and from 0.54/0.46 to 0.35/0.33 s (aes128-gcm).
//! `burrow serve` wraps its clients' connections the same way.
//!
//! How, and what it costs: only after a read of at least [`STREAMING_READ`] bytes (the peer is
//! streaming) is the low-water mark raised, and it is lowered again by the first small read or
//! when nothing has woken the reader for [`PAUSE`]. Interactive sessions and small requests and
//! replies read less than that and never wait. The price is at the end of a burst: the last
//! bytes short of the mark wait for the pause, 1-2 ms (tokio's timer has millisecond ticks).
//! Request and reply traffic with messages of 16 KiB or more (HTTP, database results) would pay
//! that on every round trip, so a wait that the pause had to end counts against batching: the
//! next [`FIRST_BACKOFF`] large reads do not raise the mark, and every further such wait
//! multiplies that by four (up to [`MAX_BACKOFF`]), until [`STREAMING_AGAIN`] bytes read with
//! the mark raised and no pause show the peer streaming again. Such traffic pays the pause a
//! few times, then no more (measured in `tests::request_and_reply_stop_paying_the_pause` and
//! `tests::large_replies_stop_paying_the_pause_too`). The end of the stream (FIN) and errors
//! wake the reader at once whatever the mark: the kernel reports them apart from the byte count.
//!
//! The mark is also kept at an eighth of the socket's receive buffer or less, and batching stops
//! for good if raising it grew the buffer anyway: Linux grows the buffer and clamps the TCP
//! window to the mark when it estimates the buffer cannot hold it, and a window clamped to 256
//! KiB would cripple a long link.
#![allow(unsafe_code)] // setsockopt/getsockopt; the library denies unsafe code everywhere else

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// A read at least this large says the peer is streaming (OpenSSH sends up to 32 KiB of channel
/// data per packet; an interactive packet is tens of bytes).
pub const STREAMING_READ: usize = 16 * 1024;
/// The low-water mark while the peer streams: several of its packets per wake-up (eight of
/// OpenSSH's, two of burrow's 128 KiB ones: a mark of one packet would hold each packet back
/// until the next one nearly arrived). Measured on loopback, 64 KiB saved little.
pub const BATCH: usize = 256 * 1024;
/// How long a raised mark may hold back bytes that are already there.
pub const PAUSE: Duration = Duration::from_millis(1);
/// Large reads that do not raise the mark after the pause first had to end a wait.
pub const FIRST_BACKOFF: u32 = 8;
/// The most large reads that do not raise the mark after repeated pauses.
pub const MAX_BACKOFF: u32 = 4096;
/// Bytes read with the mark raised, with no pause in between, that show the peer streams again
/// and end the backoff. One raised read is not enough: a reply of 0.5-1 MiB has some in its
/// middle and still ends in a pause, and with that rule it paid the pause every round trip.
pub const STREAMING_AGAIN: usize = 8 << 20;

/// A TCP stream whose reads are batched while the peer streams; writes pass straight through.
pub struct BatchedReads {
    inner: TcpStream,
    /// The last read was at least [`STREAMING_READ`].
    streaming: bool,
    /// The socket's low-water mark is raised.
    raised: bool,
    /// `pause` is running for the current wait.
    pause_armed: bool,
    /// Reset for each wait rather than allocated anew.
    pause: Pin<Box<Sleep>>,
    /// Large reads still to let pass before raising the mark again.
    skip: u32,
    /// What `skip` becomes when the pause next ends a wait (0: [`FIRST_BACKOFF`]).
    backoff: u32,
    /// Bytes read with the mark raised since the pause last ended a wait.
    raised_streak: usize,
    /// Raising the mark grew the receive buffer: never raise it again.
    disabled: bool,
    /// The last read went around the runtime and filled its room: read that way again.
    draining: bool,
    /// Waits the pause ended (for the tests).
    pauses: u32,
}

impl BatchedReads {
    /// Wraps a connected socket; the mark starts at the kernel's default (1 byte).
    pub fn new(inner: TcpStream) -> Self {
        Self {
            inner,
            streaming: false,
            raised: false,
            pause_armed: false,
            pause: Box::pin(tokio::time::sleep(PAUSE)),
            skip: 0,
            backoff: 0,
            raised_streak: 0,
            disabled: false,
            draining: false,
            pauses: 0,
        }
    }

    /// Raises the mark if the receive buffer is large enough to hold it without the kernel
    /// clamping the window (see the module's notes); says whether it did.
    fn raise(&mut self) -> bool {
        let rcvbuf = || {
            socket2::SockRef::from(&self.inner)
                .recv_buffer_size()
                .unwrap_or(0)
        };
        let before = rcvbuf();
        let mark = BATCH.min(before / 8);
        if mark < STREAMING_READ || set_rcvlowat(self.inner.as_fd(), mark).is_err() {
            return false;
        }
        if rcvbuf() != before {
            self.disabled = true;
            let _ = self.lower();
            return false;
        }
        true
    }

    fn lower(&mut self) -> io::Result<()> {
        self.raised = false;
        set_rcvlowat(self.inner.as_fd(), 1)
    }

    /// After a read of `n` bytes: keeps the mark raised while the peer streams.
    fn after_read(&mut self, n: usize) -> io::Result<()> {
        self.pause_armed = false;
        self.streaming = n >= STREAMING_READ;
        if self.streaming {
            if self.raised {
                self.raised_streak = self.raised_streak.saturating_add(n);
                if self.raised_streak >= STREAMING_AGAIN {
                    // The peer kept the raised mark busy for long: it streams, batching pays.
                    self.backoff = 0;
                }
            }
            self.skip = self.skip.saturating_sub(1);
        }
        if self.raised && !self.streaming {
            self.lower()?;
        }
        Ok(())
    }

    /// Called when a read found nothing: raises the mark if the peer was streaming, and says
    /// whether the wait may go on, or (`Ready`) the pause has run out and the mark is lowered.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.streaming && !self.raised && self.skip == 0 && !self.disabled {
            self.raised = self.raise();
        }
        if !self.raised {
            return Poll::Pending;
        }
        if !self.pause_armed {
            self.pause.as_mut().reset(Instant::now() + PAUSE);
            self.pause_armed = true;
        }
        std::task::ready!(self.pause.as_mut().poll(cx));
        self.pause_armed = false;
        self.streaming = false;
        self.pauses = self.pauses.saturating_add(1);
        self.raised_streak = 0;
        self.backoff = match self.backoff {
            0 => FIRST_BACKOFF,
            b => b.saturating_mul(4).min(MAX_BACKOFF),
        };
        self.skip = self.backoff;
        Poll::Ready(self.lower())
    }

    /// Reads what the socket holds without asking the runtime, which saw its readiness used up
    /// before the pause lowered the mark: Linux reports the bytes that arrived under the mark
    /// when it is lowered (since 4.18), but this does not rely on it. `draining` stays on while
    /// such reads fill the room they are given, so nothing is left behind unreported. A read is
    /// counted as any other (`after_read`).
    fn read_now(&mut self, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        use std::io::Read;
        let room = buf.remaining().min(BATCH);
        let socket = socket2::SockRef::from(&self.inner);
        match (&*socket).read(buf.initialize_unfilled_to(room)) {
            Ok(n) => {
                buf.advance(n);
                self.draining = n == room && n > 0;
                Poll::Ready(self.after_read(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.draining = false;
                Poll::Pending
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Drop for BatchedReads {
    /// Whoever reads the socket next (nothing in burrow does) would otherwise wait for the mark.
    fn drop(&mut self) {
        if self.raised {
            let _ = set_rcvlowat(self.inner.as_fd(), 1);
        }
    }
}

impl AsyncRead for BatchedReads {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if this.draining {
            if let Poll::Ready(r) = this.read_now(buf) {
                return Poll::Ready(r);
            }
        }
        loop {
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {
                    return Poll::Ready(this.after_read(buf.filled().len() - before));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    std::task::ready!(this.poll_wait(cx))?;
                    // The pause lowered the mark: take what is there, or wait as usual (the
                    // loop's next poll registers for the socket's readiness).
                    if let Poll::Ready(r) = this.read_now(buf) {
                        return Poll::Ready(r);
                    }
                }
            }
        }
    }
}

impl AsyncWrite for BatchedReads {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// `setsockopt(SO_RCVLOWAT)`; neither socket2, nix nor rustix wraps it.
fn set_rcvlowat(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is an open socket for the whole call (borrowed), and the option's value is a
    // C int passed by pointer with its exact size; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_ref(&value).cast(),
            int_len(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn int_len() -> libc::socklen_t {
    // A C int is 4 bytes; the cast cannot truncate.
    std::mem::size_of::<libc::c_int>() as libc::socklen_t
}

#[cfg(test)]
fn rcvlowat(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut value: libc::c_int = 0;
    let mut len = int_len();
    // SAFETY: as in `set_rcvlowat`; the kernel writes at most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_mut(&mut value).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(usize::try_from(value).unwrap_or(0))
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Far above the pause, far below a hang: a liveness bound, not a speed test.
    const PROMPTLY: Duration = Duration::from_millis(500);

    async fn pair() -> (BatchedReads, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (BatchedReads::new(client.unwrap()), server.unwrap().0)
    }

    fn mark(r: &BatchedReads) -> usize {
        rcvlowat(r.inner.as_fd()).unwrap()
    }

    /// Polls one read exactly once, with nothing to read: the reader starts its wait.
    async fn start_waiting(r: &mut BatchedReads) {
        let mut b = [0u8; 1];
        let mut read = std::pin::pin!(r.read(&mut b));
        let polled = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
        assert!(polled.is_pending(), "nothing was sent, yet a read returned");
    }

    /// One read of `len` bytes that are all there already: the peer streams.
    async fn one_large_read(r: &mut BatchedReads, w: &mut TcpStream, len: usize) {
        w.write_all(&vec![7u8; len]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut buf = vec![0u8; 1 << 20];
        assert_eq!(r.read(&mut buf).await.unwrap(), len);
    }

    /// Sends 40 requests, reading each `reply_len`-byte reply within [`PROMPTLY`].
    async fn ask_40_times(r: &mut BatchedReads, reply_len: usize) {
        let mut got = vec![0u8; reply_len];
        for _ in 0..40 {
            r.write_all(b"req").await.unwrap();
            tokio::time::timeout(PROMPTLY, r.read_exact(&mut got))
                .await
                .expect("a reply stalled")
                .unwrap();
        }
    }

    /// Sends `tail` (far below a raised mark) and reads it back within [`PROMPTLY`].
    async fn tail_arrives(r: &mut BatchedReads, w: &mut TcpStream, tail: &[u8]) {
        w.write_all(tail).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(PROMPTLY, r.read(&mut buf))
            .await
            .expect("the raised mark held back the tail")
            .unwrap();
        assert_eq!(&buf[..n], tail);
    }

    #[tokio::test]
    async fn a_streaming_peer_raises_the_mark_and_a_short_tail_still_arrives() {
        let (mut r, mut w) = pair().await;
        one_large_read(&mut r, &mut w, 64 * 1024).await;

        start_waiting(&mut r).await;
        let rcvbuf = socket2::SockRef::from(&r.inner).recv_buffer_size().unwrap();
        assert_eq!(mark(&r), BATCH.min(rcvbuf / 8), "raised while waiting");
        assert!(mark(&r) >= STREAMING_READ);

        // A tail far below the mark: only the pause can deliver it.
        tail_arrives(&mut r, &mut w, b"the end").await;
        assert_eq!(mark(&r), 1, "the pause lowered the mark");
        assert_eq!(r.pauses, 1);
    }

    #[tokio::test]
    async fn small_messages_never_raise_the_mark() {
        let (mut r, mut w) = pair().await;
        for _ in 0..3 {
            w.write_all(b"ping").await.unwrap();
            let mut b = [0u8; 4];
            r.read_exact(&mut b).await.unwrap();
            start_waiting(&mut r).await;
            assert_eq!(mark(&r), 1);
        }
    }

    #[tokio::test]
    async fn a_stream_keeps_the_mark_raised_and_only_its_end_waits() {
        let (mut r, mut w) = pair().await;
        let total = 32 << 20;
        let writer = tokio::spawn(async move {
            let chunk = vec![1u8; 64 * 1024];
            for _ in 0..total / chunk.len() {
                w.write_all(&chunk).await.unwrap();
            }
            w
        });
        let mut buf = vec![0u8; 512 * 1024];
        let (mut got, mut reads_while_raised) = (0, 0);
        while got < total {
            let raised = r.raised;
            let n = tokio::time::timeout(PROMPTLY, r.read(&mut buf))
                .await
                .expect("a stream stalled")
                .unwrap();
            assert!(n > 0);
            got += n;
            reads_while_raised += usize::from(raised && r.raised);
        }
        let _w = writer.await.unwrap();
        assert_eq!(got, total);
        assert!(r.pauses <= 1, "{} waits ended by the pause", r.pauses);
        assert!(
            reads_while_raised >= 16,
            "{reads_while_raised} batched reads"
        );
    }

    #[tokio::test]
    async fn a_read_under_a_raised_mark_ends_the_backoff() {
        let (mut r, _w) = pair().await;
        // As after a few pauses: the next large reads were not to raise the mark.
        (r.backoff, r.skip) = (32, 5);
        r.after_read(STREAMING_READ).unwrap();
        assert_eq!(
            (r.backoff, r.skip),
            (32, 4),
            "a large read counts down the skip"
        );
        r.after_read(100).unwrap();
        assert_eq!((r.backoff, r.skip), (32, 4), "a small read does not");
        // Large reads while the mark is raised: not one, only a long run of them shows the peer
        // streaming again (a 1 MiB reply has some in its middle, then waits for the pause).
        r.raised = true;
        for _ in 0..STREAMING_AGAIN / BATCH - 1 {
            r.after_read(BATCH).unwrap();
        }
        assert_eq!(
            r.backoff, 32,
            "a reply's worth of raised reads keeps the backoff"
        );
        r.after_read(BATCH).unwrap();
        assert_eq!(
            r.backoff, 0,
            "{STREAMING_AGAIN} bytes batched: the peer streams"
        );
        assert!(r.raised, "still streaming: the mark stays up");
        r.after_read(100).unwrap();
        assert!(!r.raised, "a small read lowers it");
        assert_eq!(mark(&r), 1);
    }

    #[tokio::test]
    async fn a_pause_restarts_the_count_that_ends_the_backoff() {
        let (mut r, mut w) = pair().await;
        one_large_read(&mut r, &mut w, 64 * 1024).await;
        (r.backoff, r.raised_streak) = (32, STREAMING_AGAIN - 1);
        // A tail below the mark: the pause ends the wait.
        tail_arrives(&mut r, &mut w, b"tail").await;
        assert_eq!((r.pauses, r.backoff, r.raised_streak), (1, 128, 0));
    }

    /// Replies of about 1 MiB written in 64 KiB pieces a little apart, so that some of each
    /// is read under the raised mark and its tail waits for the pause: once the backoff has
    /// grown past a reply's large reads, replies stop paying it. Each pause can only come
    /// after a raise, and raises come after 8, 32, 128, 512 large reads: in 40 replies of 17
    /// pieces, at most about six, however the pieces are timed.
    #[tokio::test]
    async fn large_replies_stop_paying_the_pause_too() {
        let (mut r, w) = pair().await;
        socket2::SockRef::from(&r.inner)
            .set_recv_buffer_size(4 << 20)
            .unwrap();
        let mut w = w.into_std().unwrap();
        w.set_nonblocking(false).unwrap();
        const PIECES: usize = 17;
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let piece = vec![5u8; 64 * 1024];
            let mut req = [0u8; 3];
            while w.read_exact(&mut req).is_ok() {
                for _ in 0..PIECES {
                    w.write_all(&piece).unwrap();
                    std::thread::sleep(Duration::from_micros(150));
                }
            }
        });
        ask_40_times(&mut r, PIECES * 64 * 1024).await;
        assert!(
            r.pauses <= 8,
            "{} of 40 replies waited for the pause",
            r.pauses
        );
        drop(r);
        server.join().unwrap();
    }

    #[tokio::test]
    async fn request_and_reply_stop_paying_the_pause() {
        let (mut r, mut w) = pair().await;
        // A buffer as large as a busy connection's, so the mark (256 KiB) is above the replies.
        socket2::SockRef::from(&r.inner)
            .set_recv_buffer_size(4 << 20)
            .unwrap();
        let reply = vec![5u8; 20 * 1024];
        let server = tokio::spawn(async move {
            let mut req = [0u8; 3];
            while w.read_exact(&mut req).await.is_ok() {
                w.write_all(&reply).await.unwrap();
            }
        });
        ask_40_times(&mut r, 20 * 1024).await;
        // The pause ends the wait for the second reply, and once more after FIRST_BACKOFF
        // replies; then the backoff (32 replies) outlasts the test.
        assert_eq!(r.pauses, 2, "waits ended by the pause");
        drop(r);
        server.await.unwrap();
    }

    #[test]
    fn only_this_module_allows_unsafe_code() {
        let mut allowed = Vec::new();
        let mut dirs = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && std::fs::read_to_string(&path)
                        .unwrap()
                        .contains(concat!("allow(", "unsafe_code)"))
                {
                    allowed.push(path.file_name().unwrap().to_string_lossy().into_owned());
                }
            }
        }
        assert_eq!(allowed, ["batched_reads.rs"]);
    }
}
