//! Connection sharing (`-M`, `-S`, ControlMaster, ControlPath, ControlPersist, `-O`), speaking
//! OpenSSH's own multiplexing protocol (PROTOCOL.mux) so that `ssh -O ...` and `ssh -S ...`
//! work against a burrow master and `burrow ssh -O ...` against an OpenSSH master.
//!
//! - [`proto`]: the messages, encoded and decoded (pure).
//! - [`master`]: the control socket of a connected `burrow ssh` and the requests it serves:
//!   alive check, forward add/cancel, exit, stop listening, passenger sessions.
//! - [`passenger`]: a session or `-W` run by the master for a client that passed its stdio.
//! - [`client`]: the `-O` commands, and running a command or `-W` through a running master.
//! - [`fdpass`], [`fdio`]: descriptor passing and async I/O on passed descriptors.
//! - [`run`]: which role an invocation plays (client, master, ControlPersist master).
//!
//! The control socket is owner-only: created with mode 0600 (bound in a private directory and
//! linked into place, so it is never reachable with a looser mode), and every connecting peer's
//! uid is checked (root or our own uid, as OpenSSH's master does). `proxy` mode is not
//! supported (answered "unsupported request").

pub mod client;
pub mod fdio;
pub mod fdpass;
pub mod master;
pub mod passenger;
pub mod proto;
pub mod run;

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads one framed message body, byte-exact (a descriptor may follow it on the socket).
pub async fn read_message<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Vec<u8>> {
    let len = stream.read_u32().await? as usize;
    if len > proto::MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("mux message of {len} bytes"),
        ));
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// Writes one framed message.
pub async fn write_message<S: AsyncWrite + Unpin>(stream: &mut S, framed: &[u8]) -> io::Result<()> {
    stream.write_all(framed).await?;
    stream.flush().await
}

/// Collects whole messages from bytes read in any chunking; cancel-safe, for watching a
/// control connection while a passenger session runs (no descriptors are sent then).
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// The next message body; None at a clean end of stream.
    pub async fn next<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(body) = self.take()? {
                return Ok(Some(body));
            }
            if stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    fn take(&mut self) -> io::Result<Option<Vec<u8>>> {
        let Some(head) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*head) as usize;
        if len > proto::MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "mux message too long",
            ));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let body = self.buf.get(4..4 + len).unwrap_or_default().to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_survive_any_chunking() {
        let mut wire = proto::Reply::Ok { rid: 1 }.encode();
        wire.extend(proto::Reply::Alive { rid: 2, pid: 3 }.encode());
        for split in 0..wire.len() {
            let (a, b) = wire.split_at(split);
            let (mut tx, mut rx) = tokio::io::duplex(64);
            tx.write_all(a).await.unwrap();
            let mut reader = FrameReader::default();
            let both = async {
                let first = reader.next(&mut rx).await.unwrap().unwrap();
                let second = reader.next(&mut rx).await.unwrap().unwrap();
                (first, second)
            };
            let feed = async {
                tx.write_all(b).await.unwrap();
                tx
            };
            let ((first, second), tx) = tokio::join!(both, feed);
            assert_eq!(
                proto::Reply::decode(&first),
                Ok(proto::Reply::Ok { rid: 1 })
            );
            assert_eq!(
                proto::Reply::decode(&second),
                Ok(proto::Reply::Alive { rid: 2, pid: 3 })
            );
            drop(tx);
            assert_eq!(reader.next(&mut rx).await.unwrap(), None);
        }
    }
}
