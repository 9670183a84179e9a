//! Fewer wake-ups while an SSH peer streams: the TCP socket wakes its reader once 256 KiB have
//! arrived (`SO_RCVLOWAT`) instead of for every write the peer makes.
//!
//! Why: burrow decrypts faster than sshd encrypts, so in a download it drained the socket after
//! each of sshd's writes (one 32 KiB SSH packet) and slept again: about one wake-up per packet,
//! 110,000 for 4 GiB, against 16,000 for OpenSSH's ssh, which is busier and finds the next packet
//! already there. Each wake-up costs the reader an `epoll_wait`, a failed `recvmsg` and a context
//! switch. Measured with `bench --only throughput --case "-L 1 stream"` (two interleaved rounds
//! against the build before): the client's CPU per GiB received from sshd fell from 0.88/0.92
//! to 0.69/0.68 s (chacha20-poly1305) and from 0.54/0.46 to 0.35/0.33 s (aes128-gcm), the
//! relay's per GiB received from OpenSSH's ssh from 0.82/0.82 to 0.72/0.66 s (chacha20-poly1305).
//!
//! How, and what it costs: only after a read of at least [`STREAMING_READ`] bytes (the peer is
//! streaming) is the low-water mark raised, and it is lowered again by the first small read or
//! when nothing has woken the reader for [`PAUSE`]. So an interactive session, a request and
//! its reply, or a slow link never waits for anything: their reads are small. The price is at
//! the end of a fast burst: the last bytes short of 256 KiB wait for the pause, 1-2 ms (tokio's
//! timer has millisecond ticks), once per burst. The end of the stream (FIN) and errors wake the
//! reader at once whatever the mark: the kernel reports them apart from the byte count.
//! The mark is also kept at a quarter of the socket's receive buffer or less: Linux grows the
//! buffer and clamps the TCP window to the mark when the buffer is too small to hold it, and a
//! window clamped to 256 KiB would cripple a long link.
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
        }
    }

    /// Raises the mark if the receive buffer is large enough to hold it without the kernel
    /// clamping the window (see the module's notes); says whether it did.
    fn raise(&mut self) -> bool {
        let rcvbuf = socket2::SockRef::from(&self.inner)
            .recv_buffer_size()
            .unwrap_or(0);
        let mark = BATCH.min(rcvbuf / 4);
        mark >= STREAMING_READ && set_rcvlowat(self.inner.as_fd(), mark).is_ok()
    }

    fn lower(&mut self) -> io::Result<()> {
        self.raised = false;
        set_rcvlowat(self.inner.as_fd(), 1)
    }

    /// Called when a read found nothing: raises the mark if the peer was streaming, and says
    /// whether the wait may go on, or (`Ready`) the pause has run out and the mark is lowered.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.streaming && !self.raised {
            self.raised = self.raise();
            self.streaming = self.raised;
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
        Poll::Ready(self.lower())
    }
}

impl AsyncRead for BatchedReads {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let before = buf.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {
                    this.pause_armed = false;
                    this.streaming = buf.filled().len() - before >= STREAMING_READ;
                    if this.raised && !this.streaming {
                        this.lower()?;
                    }
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // Lowering the mark makes the kernel report the bytes already there (the
                // socket's readiness comes through the runtime, so the loop polls again to
                // register for it).
                Poll::Pending => std::task::ready!(this.poll_wait(cx))?,
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

    async fn pair() -> (BatchedReads, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (BatchedReads::new(client.unwrap()), server.unwrap().0)
    }

    fn mark(r: &BatchedReads) -> usize {
        rcvlowat(r.inner.as_fd()).unwrap()
    }

    /// Polls one read once, with nothing to read: the reader starts its wait and gives up.
    async fn start_waiting(r: &mut BatchedReads) {
        let mut b = [0u8; 1];
        let once = tokio::time::timeout(Duration::ZERO, r.read(&mut b)).await;
        assert!(once.is_err(), "nothing was sent, yet a read returned");
    }

    #[tokio::test]
    async fn a_streaming_peer_raises_the_mark_and_a_short_tail_still_arrives() {
        let (mut r, mut w) = pair().await;
        // One read of 64 KiB: the peer streams.
        let burst = vec![7u8; 64 * 1024];
        w.write_all(&burst).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut buf = vec![0u8; 1 << 20];
        assert_eq!(r.read(&mut buf).await.unwrap(), burst.len());

        start_waiting(&mut r).await;
        let rcvbuf = socket2::SockRef::from(&r.inner).recv_buffer_size().unwrap();
        assert_eq!(mark(&r), BATCH.min(rcvbuf / 4), "raised while waiting");
        assert!(mark(&r) >= STREAMING_READ);

        // A tail far below the mark: only the pause can deliver it.
        w.write_all(b"the end").await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(10), r.read(&mut buf))
            .await
            .expect("the raised mark held back the tail")
            .unwrap();
        assert_eq!(&buf[..n], b"the end");
        assert_eq!(mark(&r), 1, "a small read leaves the mark lowered");
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
}
