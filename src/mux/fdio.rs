//! Async I/O on the descriptors a passenger client passed in (its stdin, stdout, stderr).
//!
//! Pipes, terminals and sockets are driven through epoll (tokio's pipe types accept any
//! pollable descriptor, without `unsafe`); they are switched to non-blocking
//! mode while the session runs and switched back when it ends, as OpenSSH's master does with
//! `CHANNEL_NONBLOCK_STDIO`, because the open file is shared with the client process. Regular
//! files and `/dev/null` cannot be polled; they go through tokio's blocking-pool file, which is
//! fine since reads and writes on them never wait indefinitely.

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use rustix::fs::OFlags;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::pipe;

/// A passed-in descriptor, ready for async reads or writes; its original flags come back on
/// drop.
pub struct FdIo {
    inner: Inner,
    /// A duplicate (same open file) and the flags to put back.
    restore: Option<(OwnedFd, OFlags)>,
}

enum Inner {
    /// Pollable, for reading (tokio's pipe type drives any pollable descriptor).
    Reader(pipe::Receiver),
    /// Pollable, for writing.
    Writer(pipe::Sender),
    /// Not pollable (regular file, /dev/null).
    File(tokio::fs::File),
}

impl FdIo {
    /// Wraps `fd` for reading; must be called inside a tokio runtime.
    pub fn reader(fd: OwnedFd) -> io::Result<FdIo> {
        FdIo::new(fd, true)
    }

    /// Wraps `fd` for writing; must be called inside a tokio runtime.
    pub fn writer(fd: OwnedFd) -> io::Result<FdIo> {
        FdIo::new(fd, false)
    }

    fn new(fd: OwnedFd, read: bool) -> io::Result<FdIo> {
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        let restore = if flags.contains(OFlags::NONBLOCK) {
            None
        } else {
            rustix::fs::fcntl_setfl(&fd, flags | OFlags::NONBLOCK)?;
            Some((fd.try_clone()?, flags))
        };
        let polled = match read {
            true => pipe::Receiver::from_owned_fd_unchecked(fd.try_clone()?).map(Inner::Reader),
            false => pipe::Sender::from_owned_fd_unchecked(fd.try_clone()?).map(Inner::Writer),
        };
        match polled {
            Ok(inner) => Ok(FdIo { inner, restore }),
            // epoll refuses regular files and /dev/null: blocking mode and the file pool.
            Err(_) => {
                if let Some((_, flags)) = restore {
                    rustix::fs::fcntl_setfl(&fd, flags)?;
                }
                let file = tokio::fs::File::from_std(std::fs::File::from(fd));
                Ok(FdIo {
                    inner: Inner::File(file),
                    restore: None,
                })
            }
        }
    }
}

impl Drop for FdIo {
    fn drop(&mut self) {
        if let Some((fd, flags)) = &self.restore {
            let _ = rustix::fs::fcntl_setfl(fd, *flags);
        }
    }
}

fn wrong_way() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "descriptor opened for the other direction",
    )
}

impl AsyncRead for FdIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Reader(r) => Pin::new(r).poll_read(cx, buf),
            Inner::File(f) => Pin::new(f).poll_read(cx, buf),
            Inner::Writer(_) => Poll::Ready(Err(wrong_way())),
        }
    }
}

impl AsyncWrite for FdIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Writer(w) => Pin::new(w).poll_write(cx, data),
            Inner::File(f) => Pin::new(f).poll_write(cx, data),
            Inner::Reader(_) => Poll::Ready(Err(wrong_way())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Writer(w) => Pin::new(w).poll_flush(cx),
            Inner::File(f) => Pin::new(f).poll_flush(cx),
            Inner::Reader(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Writer(w) => Pin::new(w).poll_shutdown(cx),
            Inner::File(f) => Pin::new(f).poll_shutdown(cx),
            Inner::Reader(_) => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn pipes_are_polled_and_get_their_flags_back() {
        let (r, w) = std::io::pipe().unwrap();
        let (r, w) = (OwnedFd::from(r), OwnedFd::from(w));
        let probe = r.try_clone().unwrap();
        let mut reader = FdIo::reader(r).unwrap();
        let mut writer = FdIo::writer(w).unwrap();
        assert!(matches!(reader.inner, Inner::Reader(_)));
        assert!(rustix::fs::fcntl_getfl(&probe)
            .unwrap()
            .contains(OFlags::NONBLOCK));
        writer.write_all(b"hello").await.unwrap();
        drop(writer);
        let mut got = String::new();
        reader.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "hello");
        drop(reader);
        assert!(!rustix::fs::fcntl_getfl(&probe)
            .unwrap()
            .contains(OFlags::NONBLOCK));
    }

    #[tokio::test]
    async fn regular_files_use_the_blocking_pool() {
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, b"data").unwrap();
        std::io::Seek::rewind(&mut file).unwrap();
        let mut io = FdIo::reader(OwnedFd::from(file)).unwrap();
        assert!(matches!(io.inner, Inner::File(_)));
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"data");
    }
}
