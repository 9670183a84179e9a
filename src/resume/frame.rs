//! The wire format of a resumable stream inside its SSH channel. Pure encode/decode, so every
//! rule is unit-tested and fuzzable without a network.
//!
//! A channel starts with a hello from the side that opened it and a reply from the other side
//! (the opener of a new -L stream sends its first frames right behind the hello, and reads the
//! reply before the first frame that comes back); after that both directions carry frames:
//! `DATA len bytes`, `ACK offset` (bytes received in all so far), `FIN offset` (this side's
//! stream ended at that offset), `ABORT` (the stream failed: drop it). Integers are big-endian,
//! as everywhere in SSH.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// First bytes of every hello and reply: the format's version is in the last byte.
pub const MAGIC: [u8; 4] = *b"BRS1";
/// The largest DATA payload a peer may send. Older burrows accept at most [`PACKET`]; a peer
/// sends more only where the receiver announced larger channel packets, and only a relay
/// that accepts [`MAX_DATA`] announces them ([`RELAY_PACKET`]).
pub const MAX_DATA: usize = 128 * 1024;
/// The maximum channel packet size OpenSSH and russh announce, and the frame size (header and
/// payload) for a peer that announces no more.
pub const PACKET: usize = 32 * 1024;
/// The channel packet size `burrow serve` announces: a client's frames fill it, so a bulk
/// upload costs a quarter of the packets (each with its own encryption, MAC, wake-ups and
/// queue entries at both ends). Clients keep announcing [`PACKET`], so the relay's frames stay
/// at that size: from its threads, larger frames cost less CPU per byte but, measured, moved
/// fewer bytes per second (they encrypt and hand over in coarser steps).
pub const RELAY_PACKET: usize = MAX_DATA;
/// Bytes of a DATA frame's header (type and length).
pub const DATA_HEADER: usize = 5;

/// The largest DATA payload to send in a channel whose peer announced packets of
/// `peer_packet` bytes: header and payload fill one packet. A frame one byte larger went out
/// as two packets, the second one of 5 bytes: twice the packets for the same bytes. Never below
/// what every burrow accepts ([`PACKET`]; russh splits it for a peer announcing less, as
/// before), never above [`MAX_DATA`].
pub fn send_data(peer_packet: usize) -> usize {
    peer_packet.clamp(PACKET, MAX_DATA) - DATA_HEADER
}
/// Bytes of an ACK (or FIN) frame: type and offset. An ACK that is due rides in front of the
/// DATA or FIN frame that goes out next, in the same write (one channel packet).
pub const ACK_FRAME: usize = 9;

/// A stream's id and secret: the secret proves a re-attach comes from the stream's real peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamKey {
    /// Chosen at random by the opener.
    pub id: u64,
    /// Chosen at random by the opener; compared in constant time.
    pub secret: [u8; 16],
}

/// The opener's first message on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hello {
    /// A new stream: the receiver dials its target.
    New(StreamKey),
    /// An existing stream on a new channel; `received` = bytes the opener has received so far.
    Attach {
        /// Which stream.
        key: StreamKey,
        /// The opener's receive offset: the peer replays from there.
        received: u64,
    },
}

/// The receiver's answer to a hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Go ahead; `received` = bytes the receiver has received so far (0 for a new stream).
    Ok {
        /// The receiver's receive offset: the opener replays from there.
        received: u64,
    },
    /// The receiver could not reach the target (a new stream).
    ConnectFailed(String),
    /// The receiver does not know the stream (expired, or never existed).
    Unknown,
    /// The secret did not match.
    Refused,
}

/// One message after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Payload bytes (at most [`MAX_DATA`]); only the header is decoded here, see
    /// [`read_frame`].
    Data(u32),
    /// The peer has received this many bytes of ours in all.
    Ack(u64),
    /// The peer's stream ends after this many bytes.
    Fin(u64),
    /// The peer's end failed; close ours.
    Abort,
}

const HELLO_NEW: u8 = 1;
const HELLO_ATTACH: u8 = 2;
const REPLY_OK: u8 = 0;
const REPLY_CONNECT_FAILED: u8 = 1;
const REPLY_UNKNOWN: u8 = 2;
const REPLY_REFUSED: u8 = 3;
const DATA: u8 = 1;
const ACK: u8 = 2;
const FIN: u8 = 3;
const ABORT: u8 = 4;
const MAX_REASON: usize = 256;

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("resumable stream: {what}"),
    )
}

impl Hello {
    /// The hello's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        let (kind, key, received) = match self {
            Hello::New(key) => (HELLO_NEW, key, 0),
            Hello::Attach { key, received } => (HELLO_ATTACH, key, *received),
        };
        b.push(kind);
        b.extend_from_slice(&key.id.to_be_bytes());
        b.extend_from_slice(&key.secret);
        b.extend_from_slice(&received.to_be_bytes());
        b
    }

    /// Reads a hello; anything else is an error naming what was wrong.
    pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Hello> {
        let mut b = [0u8; 4 + 1 + 8 + 16 + 8];
        r.read_exact(&mut b).await?;
        Self::decode(&b)
    }

    fn decode(b: &[u8; 37]) -> io::Result<Hello> {
        if b[..4] != MAGIC {
            return Err(bad("not a burrow stream hello"));
        }
        let id = u64::from_be_bytes(array(&b[5..13]));
        let secret: [u8; 16] = array(&b[13..29]);
        let received = u64::from_be_bytes(array(&b[29..37]));
        let key = StreamKey { id, secret };
        match b[4] {
            HELLO_NEW => Ok(Hello::New(key)),
            HELLO_ATTACH => Ok(Hello::Attach { key, received }),
            other => Err(bad(&format!("unknown hello kind {other}"))),
        }
    }
}

impl Reply {
    /// The reply's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        match self {
            Reply::Ok { received } => {
                b.push(REPLY_OK);
                b.extend_from_slice(&received.to_be_bytes());
            }
            Reply::ConnectFailed(reason) => {
                b.push(REPLY_CONNECT_FAILED);
                let reason = truncate(reason, MAX_REASON);
                b.extend_from_slice(&(reason.len() as u64).to_be_bytes());
                b.extend_from_slice(reason.as_bytes());
            }
            Reply::Unknown => {
                b.push(REPLY_UNKNOWN);
                b.extend_from_slice(&0u64.to_be_bytes());
            }
            Reply::Refused => {
                b.push(REPLY_REFUSED);
                b.extend_from_slice(&0u64.to_be_bytes());
            }
        }
        b
    }

    /// Reads a reply.
    pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Reply> {
        let mut head = [0u8; 13];
        r.read_exact(&mut head).await?;
        if head[..4] != MAGIC {
            return Err(bad("not a burrow stream reply"));
        }
        let value = u64::from_be_bytes(array(&head[5..13]));
        match head[4] {
            REPLY_OK => Ok(Reply::Ok { received: value }),
            REPLY_CONNECT_FAILED => {
                let len = usize::try_from(value)
                    .ok()
                    .filter(|l| *l <= MAX_REASON)
                    .ok_or_else(|| bad("reason too long"))?;
                let mut reason = vec![0u8; len];
                r.read_exact(&mut reason).await?;
                Ok(Reply::ConnectFailed(
                    String::from_utf8_lossy(&reason).into_owned(),
                ))
            }
            REPLY_UNKNOWN => Ok(Reply::Unknown),
            REPLY_REFUSED => Ok(Reply::Refused),
            other => Err(bad(&format!("unknown reply {other}"))),
        }
    }
}

impl Frame {
    /// Header bytes of a frame (a DATA header is followed by its payload).
    pub fn header(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(9);
        match self {
            Frame::Data(len) => {
                b.push(DATA);
                b.extend_from_slice(&len.to_be_bytes());
            }
            Frame::Ack(n) => {
                b.push(ACK);
                b.extend_from_slice(&n.to_be_bytes());
            }
            Frame::Fin(n) => {
                b.push(FIN);
                b.extend_from_slice(&n.to_be_bytes());
            }
            Frame::Abort => b.push(ABORT),
        }
        b
    }
}

/// Reads the next frame header; `None` at a clean end of the channel.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Frame>> {
    let mut kind = [0u8; 1];
    if r.read(&mut kind).await? == 0 {
        return Ok(None);
    }
    let frame = match kind[0] {
        DATA => {
            let mut len = [0u8; 4];
            r.read_exact(&mut len).await?;
            let len = u32::from_be_bytes(len);
            if len == 0 || len as usize > MAX_DATA {
                return Err(bad(&format!("DATA frame of {len} bytes")));
            }
            Frame::Data(len)
        }
        ACK | FIN => {
            let mut n = [0u8; 8];
            r.read_exact(&mut n).await?;
            let n = u64::from_be_bytes(n);
            if kind[0] == ACK {
                Frame::Ack(n)
            } else {
                Frame::Fin(n)
            }
        }
        ABORT => Frame::Abort,
        other => return Err(bad(&format!("unknown frame type {other}"))),
    };
    Ok(Some(frame))
}

/// Writes `payload` as DATA frames of at most `send_data` bytes (see [`send_data`]), each in
/// one write. Nothing is allocated for an empty payload (a first attachment has nothing to
/// replay), and no more than the largest frame for a short one.
pub async fn write_data<W: AsyncWrite + Unpin>(
    w: &mut W,
    payload: &[u8],
    send_data: usize,
) -> io::Result<()> {
    if payload.is_empty() {
        return Ok(());
    }
    let mut buf = Vec::with_capacity(DATA_HEADER + payload.len().min(send_data));
    for chunk in payload.chunks(send_data) {
        buf.clear();
        buf.resize(DATA_HEADER, 0);
        put_data_header(&mut buf, chunk.len());
        buf.extend_from_slice(chunk);
        w.write_all(&buf).await?;
    }
    Ok(())
}

/// Writes an ACK frame for `offset` into `buf[..ACK_FRAME]`.
pub fn put_ack(buf: &mut [u8], offset: u64) {
    buf[0] = ACK;
    buf[1..ACK_FRAME].copy_from_slice(&offset.to_be_bytes());
}

/// Writes the header of a DATA frame of `len` payload bytes into `buf[..DATA_HEADER]`, so a
/// payload read into `buf[DATA_HEADER..]` goes out as one frame in one write, without a copy.
pub fn put_data_header(buf: &mut [u8], len: usize) {
    debug_assert!((1..=MAX_DATA).contains(&len), "DATA frame of {len} bytes");
    buf[0] = DATA;
    // MAX_DATA fits in a u32.
    buf[1..DATA_HEADER].copy_from_slice(&(len as u32).to_be_bytes());
}

fn array<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&s[..N]);
    a
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StreamKey {
        StreamKey {
            id: 0x0102_0304_0506_0708,
            secret: [7; 16],
        }
    }

    #[tokio::test]
    async fn hello_round_trips() {
        for h in [
            Hello::New(key()),
            Hello::Attach {
                key: key(),
                received: 1 << 40,
            },
        ] {
            let bytes = h.encode();
            assert_eq!(Hello::read(&mut bytes.as_slice()).await.unwrap(), h);
        }
    }

    #[tokio::test]
    async fn reply_round_trips() {
        for r in [
            Reply::Ok { received: 99 },
            Reply::ConnectFailed("connect failed: Connection refused".into()),
            Reply::Unknown,
            Reply::Refused,
        ] {
            let bytes = r.encode();
            assert_eq!(Reply::read(&mut bytes.as_slice()).await.unwrap(), r);
        }
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let mut wire = Vec::new();
        write_data(&mut wire, b"hello", send_data(PACKET))
            .await
            .unwrap();
        for f in [Frame::Ack(5), Frame::Fin(12), Frame::Abort] {
            wire.extend(f.header());
        }
        let mut r = wire.as_slice();
        assert_eq!(read_frame(&mut r).await.unwrap(), Some(Frame::Data(5)));
        let mut payload = [0u8; 5];
        r.read_exact(&mut payload).await.unwrap();
        assert_eq!(&payload, b"hello");
        assert_eq!(read_frame(&mut r).await.unwrap(), Some(Frame::Ack(5)));
        assert_eq!(read_frame(&mut r).await.unwrap(), Some(Frame::Fin(12)));
        assert_eq!(read_frame(&mut r).await.unwrap(), Some(Frame::Abort));
        assert_eq!(read_frame(&mut r).await.unwrap(), None);
    }

    #[tokio::test]
    async fn every_data_frame_sent_fits_one_channel_packet_of_the_peer() {
        let payload: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        // Records each write: a channel turns one write of up to `packet` bytes into one packet.
        struct Writes {
            packet: usize,
            sizes: Vec<usize>,
            bytes: Vec<u8>,
        }
        impl AsyncWrite for Writes {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<io::Result<usize>> {
                let n = buf.len().min(self.packet);
                self.sizes.push(n);
                self.bytes.extend_from_slice(&buf[..n]);
                std::task::Poll::Ready(Ok(n))
            }
            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
        }
        // (announced packet, packet russh sends, writes for 300000 bytes): a peer announcing
        // less than 32 KiB still gets 32 KiB frames (split by russh, as before), OpenSSH's and
        // russh's 32 KiB, the relay's 128 KiB, and nothing above what a burrow accepts.
        for (announced, packet, frames) in [
            (16 * 1024, 16 * 1024, 19),
            (PACKET, PACKET, 10),
            (RELAY_PACKET, RELAY_PACKET, 3),
            (1 << 20, 1 << 20, 3),
        ] {
            let mut w = Writes {
                packet,
                sizes: Vec::new(),
                bytes: Vec::new(),
            };
            write_data(&mut w, &payload, send_data(announced))
                .await
                .unwrap();
            assert_eq!(
                w.sizes.len(),
                frames,
                "300000 bytes into packets of {announced}: {:?}",
                w.sizes
            );
            assert!(w.sizes.iter().all(|&n| n <= packet.max(PACKET)));
            let mut r = w.bytes.as_slice();
            let mut back = Vec::new();
            while let Some(Frame::Data(len)) = read_frame(&mut r).await.unwrap() {
                assert!(len as usize <= MAX_DATA);
                let mut chunk = vec![0u8; len as usize];
                r.read_exact(&mut chunk).await.unwrap();
                back.extend(chunk);
            }
            assert_eq!(back, payload, "packets of {announced}");
        }
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let e = Hello::read(&mut &b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"[..])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not a burrow stream hello"), "{e}");
        for wire in [
            &[9u8][..],
            &[DATA, 0, 0, 0, 0],
            // One byte more than MAX_DATA (128 KiB).
            &[DATA, 0, 2, 0, 1],
            &[ACK, 1],
        ] {
            assert!(read_frame(&mut &wire[..]).await.is_err(), "{wire:?}");
        }
        assert_eq!(
            read_frame(&mut &[DATA, 0, 2, 0, 0][..]).await.unwrap(),
            Some(Frame::Data(MAX_DATA as u32))
        );
        let long = [&MAGIC[..], &[REPLY_CONNECT_FAILED], &u64::MAX.to_be_bytes()].concat();
        assert!(Reply::read(&mut long.as_slice()).await.is_err());
    }
}
