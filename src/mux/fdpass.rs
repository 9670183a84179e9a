//! File descriptors over the control socket, as OpenSSH's `mm_send_fd`/`mm_receive_fd` pass
//! them: one descriptor per message, attached (SCM_RIGHTS) to a single NUL byte. A passenger
//! client hands the master its stdin, stdout and stderr this way; the master then reads and
//! writes them directly.
//!
//! The descriptors arrive as `OwnedFd`s (rustix), so nothing here needs `unsafe`. Messages are
//! read byte-exact elsewhere, so the byte carrying a descriptor is only ever read here, with
//! `recvmsg` (a plain `read` of it would silently drop the descriptor).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::Interest;
use tokio::net::UnixStream;

/// Sends one descriptor (with its NUL byte) on the control socket.
pub async fn send_fd(sock: &UnixStream, fd: impl AsFd) -> io::Result<()> {
    let fd = fd.as_fd();
    loop {
        sock.writable().await?;
        let sent = sock.try_io(Interest::WRITABLE, || {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            let fds = [fd];
            control.push(SendAncillaryMessage::ScmRights(&fds));
            sendmsg(
                sock,
                &[IoSlice::new(&[0])],
                &mut control,
                SendFlags::NOSIGNAL,
            )
            .map_err(io::Error::from)
        });
        match sent {
            Ok(1) => return Ok(()),
            Ok(n) => {
                return Err(io::Error::other(format!(
                    "sendmsg: sent {n} bytes, expected 1"
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Receives one descriptor; fails if the peer closed or sent a byte without one.
pub async fn recv_fd(sock: &UnixStream) -> io::Result<OwnedFd> {
    loop {
        sock.readable().await?;
        let got = sock.try_io(Interest::READABLE, || {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let mut byte = [0u8; 1];
            let msg = recvmsg(
                sock,
                &mut [IoSliceMut::new(&mut byte)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            if msg.bytes == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            let fd = control.drain().find_map(|m| match m {
                RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
                _ => None,
            });
            fd.ok_or_else(|| io::Error::other("no file descriptor with the message"))
        });
        match got {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[tokio::test]
    async fn a_pipe_travels_and_stays_usable() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut reader, writer) = std::io::pipe().unwrap();
        send_fd(&a, &writer).await.unwrap();
        drop(writer);
        let received = recv_fd(&b).await.unwrap();
        let mut w = std::fs::File::from(received);
        w.write_all(b"through the socket").unwrap();
        drop(w);
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        assert_eq!(text, "through the socket");
    }

    #[tokio::test]
    async fn a_plain_byte_is_not_a_descriptor() {
        let (a, b) = UnixStream::pair().unwrap();
        a.try_write(&[0]).unwrap();
        assert!(recv_fd(&b).await.is_err());
        drop(a);
        assert!(recv_fd(&b).await.is_err(), "EOF");
    }
}
