// Copyright 2016 Pierre-Étienne Meunier
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//!
//! This module exports cipher names for use with [Preferred].
use std::borrow::Borrow;
use std::collections::HashMap;
use std::convert::TryFrom;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::num::Wrapping;
use std::sync::LazyLock;

use aes::{Aes128, Aes192, Aes256};
#[cfg(feature = "aws-lc-rs")]
use aws_lc_rs::aead::{AES_128_GCM as ALGORITHM_AES_128_GCM, AES_256_GCM as ALGORITHM_AES_256_GCM};
use byteorder::{BigEndian, ByteOrder};
use block::CtrWrapper;
use ctr::Ctr128BE;
use delegate::delegate;
use log::trace;
#[cfg(all(not(feature = "aws-lc-rs"), feature = "ring"))]
use ring::aead::{AES_128_GCM as ALGORITHM_AES_128_GCM, AES_256_GCM as ALGORITHM_AES_256_GCM};
use ssh_encoding::Encode;
use tokio::io::{AsyncRead, AsyncReadExt};


use self::cbc::CbcWrapper;
use crate::Error;
use crate::mac::MacAlgorithm;
use crate::sshbuffer::SSHBuffer;

pub(crate) mod block;
pub(crate) mod cbc;
pub(crate) mod chacha20poly1305;
// burrow: chacha20-poly1305@openssh.com with an AVX-512 keystream (BURROW-PATCH.md).
#[cfg(all(chacha20_avx512, feature = "aws-lc-rs", target_arch = "x86_64"))]
pub(crate) mod chacha20poly1305_wide;
pub(crate) mod clear;
pub(crate) mod gcm;

use block::SshBlockCipher;
use chacha20poly1305::SshChacha20Poly1305Cipher;
use clear::Clear;
use gcm::GcmCipher;

pub(crate) trait Cipher {
    fn needs_mac(&self) -> bool {
        false
    }
    fn key_len(&self) -> usize;
    fn nonce_len(&self) -> usize {
        0
    }
    fn make_opening_key(
        &self,
        key: &[u8],
        nonce: &[u8],
        mac_key: &[u8],
        mac: &dyn MacAlgorithm,
    ) -> Box<dyn OpeningKey + Send>;
    fn make_sealing_key(
        &self,
        key: &[u8],
        nonce: &[u8],
        mac_key: &[u8],
        mac: &dyn MacAlgorithm,
    ) -> Box<dyn SealingKey + Send>;
}

/// `clear`
pub const CLEAR: Name = Name("clear");
/// `3des-cbc`
#[cfg(feature = "des")]
pub const TRIPLE_DES_CBC: Name = Name("3des-cbc");
/// `aes128-ctr`
pub const AES_128_CTR: Name = Name("aes128-ctr");
/// `aes192-ctr`
pub const AES_192_CTR: Name = Name("aes192-ctr");
/// `aes128-cbc`
pub const AES_128_CBC: Name = Name("aes128-cbc");
/// `aes192-cbc`
pub const AES_192_CBC: Name = Name("aes192-cbc");
/// `aes256-cbc`
pub const AES_256_CBC: Name = Name("aes256-cbc");
/// `aes256-ctr`
pub const AES_256_CTR: Name = Name("aes256-ctr");
/// `aes128-gcm@openssh.com`
pub const AES_128_GCM: Name = Name("aes128-gcm@openssh.com");
/// `aes256-gcm@openssh.com`
pub const AES_256_GCM: Name = Name("aes256-gcm@openssh.com");
/// `chacha20-poly1305@openssh.com`
pub const CHACHA20_POLY1305: Name = Name("chacha20-poly1305@openssh.com");
/// `none`
pub const NONE: Name = Name("none");

pub(crate) static _CLEAR: Clear = Clear {};
#[cfg(feature = "des")]
static _3DES_CBC: SshBlockCipher<CbcWrapper<des::TdesEde3>> = SshBlockCipher(PhantomData);
static _AES_128_CTR: SshBlockCipher<CtrWrapper<Ctr128BE<Aes128>>> = SshBlockCipher(PhantomData);
static _AES_192_CTR: SshBlockCipher<CtrWrapper<Ctr128BE<Aes192>>> = SshBlockCipher(PhantomData);
static _AES_256_CTR: SshBlockCipher<CtrWrapper<Ctr128BE<Aes256>>> = SshBlockCipher(PhantomData);
static _AES_128_GCM: GcmCipher = GcmCipher(&ALGORITHM_AES_128_GCM);
static _AES_256_GCM: GcmCipher = GcmCipher(&ALGORITHM_AES_256_GCM);
static _AES_128_CBC: SshBlockCipher<CbcWrapper<Aes128>> = SshBlockCipher(PhantomData);
static _AES_192_CBC: SshBlockCipher<CbcWrapper<Aes192>> = SshBlockCipher(PhantomData);
static _AES_256_CBC: SshBlockCipher<CbcWrapper<Aes256>> = SshBlockCipher(PhantomData);
static _CHACHA20_POLY1305: SshChacha20Poly1305Cipher = SshChacha20Poly1305Cipher {};

pub static ALL_CIPHERS: &[&Name] = &[
    &CLEAR,
    &NONE,
    #[cfg(feature = "des")]
    &TRIPLE_DES_CBC,
    &AES_128_CTR,
    &AES_192_CTR,
    &AES_256_CTR,
    &AES_128_GCM,
    &AES_256_GCM,
    &AES_128_CBC,
    &AES_192_CBC,
    &AES_256_CBC,
    &CHACHA20_POLY1305,
];

pub(crate) static CIPHERS: LazyLock<HashMap<&'static Name, &(dyn Cipher + Send + Sync)>> =
    LazyLock::new(|| {
        let mut h: HashMap<&'static Name, &(dyn Cipher + Send + Sync)> = HashMap::new();
        h.insert(&CLEAR, &_CLEAR);
        h.insert(&NONE, &_CLEAR);
        #[cfg(feature = "des")]
        h.insert(&TRIPLE_DES_CBC, &_3DES_CBC);
        h.insert(&AES_128_CTR, &_AES_128_CTR);
        h.insert(&AES_192_CTR, &_AES_192_CTR);
        h.insert(&AES_256_CTR, &_AES_256_CTR);
        h.insert(&AES_128_GCM, &_AES_128_GCM);
        h.insert(&AES_256_GCM, &_AES_256_GCM);
        h.insert(&AES_128_CBC, &_AES_128_CBC);
        h.insert(&AES_192_CBC, &_AES_192_CBC);
        h.insert(&AES_256_CBC, &_AES_256_CBC);
        h.insert(&CHACHA20_POLY1305, &_CHACHA20_POLY1305);
        assert_eq!(h.len(), ALL_CIPHERS.len());
        h
    });

#[derive(Debug, PartialEq, Eq, Copy, Clone, Hash)]
pub struct Name(&'static str);
impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl Encode for Name {
    delegate! { to self.as_ref() {
        fn encoded_len(&self) -> Result<usize, ssh_encoding::Error>;
        fn encode(&self, writer: &mut impl ssh_encoding::Writer) -> Result<(), ssh_encoding::Error>;
    }}
}

impl Borrow<str> for &Name {
    fn borrow(&self) -> &str {
        self.0
    }
}

impl TryFrom<&str> for Name {
    type Error = ();
    fn try_from(s: &str) -> Result<Name, ()> {
        CIPHERS.keys().find(|x| x.0 == s).map(|x| **x).ok_or(())
    }
}

pub(crate) struct CipherPair {
    pub local_to_remote: Box<dyn SealingKey + Send>,
    pub remote_to_local: Box<dyn OpeningKey + Send>,
}

impl Debug for CipherPair {
    fn fmt(&self, _: &mut std::fmt::Formatter) -> Result<(), std::fmt::Error> {
        Ok(())
    }
}

pub(crate) trait OpeningKey {
    fn packet_length_to_read_for_block_length(&self) -> usize {
        4
    }

    fn decrypt_packet_length(&self, seqn: u32, encrypted_packet_length: &[u8]) -> [u8; 4];

    fn tag_len(&self) -> usize;

    fn open<'a>(&mut self, seqn: u32, ciphertext_and_tag: &'a mut [u8]) -> Result<&'a [u8], Error>;
}

pub(crate) trait SealingKey {
    fn padding_length(&self, plaintext: &[u8]) -> usize;

    fn fill_padding(&self, padding_out: &mut [u8]);

    fn tag_len(&self) -> usize;

    fn seal(&mut self, seqn: u32, plaintext_in_ciphertext_out: &mut [u8], tag_out: &mut [u8]);

    #[allow(clippy::indexing_slicing)] // PacketWriter reserves and sizes the packet buffer first
    fn finish_packet(&mut self, offset: usize, payload_len: usize, buffer: &mut SSHBuffer) {
        let payload_start = offset + PACKET_LENGTH_LEN + PADDING_LENGTH_LEN;
        let payload_end = payload_start + payload_len;

        trace!("writing, seqn = {:?}", buffer.seqn.0);
        let padding_length = self.padding_length(&buffer.buffer[payload_start..payload_end]);
        trace!("padding length {padding_length:?}");
        let packet_length = PADDING_LENGTH_LEN + payload_len + padding_length;
        trace!("packet_length {packet_length:?}");

        // Maximum packet length:
        // https://tools.ietf.org/html/rfc4253#section-6.1
        assert!(packet_length <= u32::MAX as usize);
        BigEndian::write_u32(
            &mut buffer.buffer[offset..offset + PACKET_LENGTH_LEN],
            packet_length as u32,
        );

        assert!(padding_length <= u8::MAX as usize);
        buffer.buffer[offset + PACKET_LENGTH_LEN] = padding_length as u8;
        buffer.buffer.resize(payload_end + padding_length, 0);
        #[allow(clippy::indexing_slicing)] // length checked
        self.fill_padding(&mut buffer.buffer[payload_end..]);
        let tag_offset = buffer.buffer.len();
        buffer.buffer.resize(tag_offset + self.tag_len(), 0);

        #[allow(clippy::indexing_slicing)] // length checked
        let (plaintext, tag) =
            buffer.buffer[offset..].split_at_mut(PACKET_LENGTH_LEN + packet_length);

        self.seal(buffer.seqn.0, plaintext, tag);

        buffer.bytes += payload_len;
        // Sequence numbers are on 32 bits and wrap.
        // https://tools.ietf.org/html/rfc4253#section-6.4
        buffer.seqn += Wrapping(1);
    }

    fn write(&mut self, payload: &[u8], buffer: &mut SSHBuffer) {
        // https://tools.ietf.org/html/rfc4253#section-6
        //
        // The variables `payload`, `packet_length` and `padding_length` refer
        // to the protocol fields of the same names.
        trace!("writing, seqn = {:?}", buffer.seqn.0);

        let padding_length = self.padding_length(payload);
        trace!("padding length {padding_length:?}");
        let packet_length = PADDING_LENGTH_LEN + payload.len() + padding_length;
        trace!("packet_length {packet_length:?}");
        let offset = buffer.buffer.len();

        // Maximum packet length:
        // https://tools.ietf.org/html/rfc4253#section-6.1
        assert!(packet_length <= u32::MAX as usize);
        buffer
            .buffer
            .extend_from_slice(&(packet_length as u32).to_be_bytes());

        assert!(padding_length <= u8::MAX as usize);
        buffer.buffer.push(padding_length as u8);
        buffer.buffer.extend_from_slice(payload);
        let pad_offset = buffer.buffer.len();
        buffer.buffer.resize(pad_offset + padding_length, 0);
        #[allow(clippy::indexing_slicing)] // length checked
        self.fill_padding(&mut buffer.buffer[pad_offset..]);
        let tag_offset = buffer.buffer.len();
        buffer.buffer.resize(tag_offset + self.tag_len(), 0);

        #[allow(clippy::indexing_slicing)] // length checked
        let (plaintext, tag) =
            buffer.buffer[offset..].split_at_mut(PACKET_LENGTH_LEN + packet_length);

        self.seal(buffer.seqn.0, plaintext, tag);

        buffer.bytes += payload.len();
        // Sequence numbers are on 32 bits and wrap.
        // https://tools.ietf.org/html/rfc4253#section-6.4
        buffer.seqn += Wrapping(1);
    }
}

/// burrow: the smallest and largest room a socket read offers beyond the packet it needs
/// (see `fill`): an idle session keeps a few KiB, a bulk transfer takes many packets per read.
pub(crate) const READ_AHEAD_MIN: usize = 4 * 1024;
const READ_AHEAD_MAX: usize = 256 * 1024;
/// burrow: how many packets `read` takes from the read-ahead buffer, with no socket read
/// between them, before it yields to the runtime once (see `read`).
const PACKETS_PER_YIELD: u32 = 64;

/// Reads the next packet into `buffer.incoming` and decrypts it in place: the packet
/// (packet_length, padding_length, payload) is then `buffer.packet()`, and its length is
/// returned. The previous packet is discarded first.
///
/// burrow: reads ahead. Upstream read each packet with two `read_exact` calls (its length,
/// then its body), so two system calls per packet; OpenSSH reads whatever the socket holds.
/// Here one read takes what is there, up to the buffer's spare capacity (at least
/// `buffer.read_ahead / 2` beyond the packet being assembled, up to about twice
/// `buffer.read_ahead`: see `ReadAhead::make_room`), and the following packets are taken from
/// the buffer without a system call.
/// Cancel-safe: bytes read stay in `buffer.incoming`, and the length is decrypted again
/// (`decrypt_packet_length` takes `&self`) if a cancelled call is repeated.
pub(crate) async fn read<R: AsyncRead + Unpin>(
    stream: &mut R,
    buffer: &mut SSHBuffer,
    cipher: &mut (dyn OpeningKey + Send),
) -> Result<usize, Error> {
    let consumed = std::mem::take(&mut buffer.packet_total);
    buffer.packet_len = 0;
    buffer.incoming.consume(consumed);
    // burrow: packets taken from the buffer make no socket read, so they never use up the
    // task's coop budget; without this, a peer that sends a megabyte of the smallest packets
    // keeps this task (and whatever else waits on its worker thread) busy for all of them.
    // Upstream's two reads per packet made tokio yield every 64 packets; so does this.
    if buffer.packets_without_read >= PACKETS_PER_YIELD {
        buffer.packets_without_read = 0;
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if yielded {
                return std::task::Poll::Ready(());
            }
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        })
        .await;
    }

    let first_block = cipher.packet_length_to_read_for_block_length();
    fill(stream, buffer, first_block).await?;
    let seqn = buffer.seqn.0;
    let len = {
        #[allow(clippy::indexing_slicing)] // `fill` made it at least `first_block` long
        let len = cipher.decrypt_packet_length(seqn, &buffer.incoming.as_slice()[..first_block]);
        BigEndian::read_u32(&len) as usize
    };
    trace!("reading, seqn = {seqn:?}, len = {len:?}");
    if len > MAXIMUM_PACKET_LEN {
        return Err(Error::PacketSize(len));
    }
    // A valid packet (with its MAC tag) can never be shorter than the block we already read
    // to probe it. The tag counts: with an EtM MAC and 8-byte blocks (3des-cbc),
    // packet_length can be 8, and the probe also reads the start of the tag.
    let total = PACKET_LENGTH_LEN + len + cipher.tag_len();
    if total < first_block {
        return Err(Error::PacketSize(len));
    }
    fill(stream, buffer, total).await?;

    #[allow(clippy::indexing_slicing)] // `fill` made it at least `total` long
    let plaintext = cipher.open(seqn, &mut buffer.incoming.as_mut_slice()[..total])?;

    let padding_length = *plaintext.first().to_owned().unwrap_or(&0) as usize;
    trace!("reading, padding_length {padding_length:?}");
    let plaintext_end = plaintext
        .len()
        .checked_sub(padding_length)
        .ok_or(Error::IndexOutOfBounds)?;
    let payload_len = plaintext_end.saturating_sub(PADDING_LENGTH_LEN);

    // Sequence numbers are on 32 bits and wrap.
    // https://tools.ietf.org/html/rfc4253#section-6.4
    buffer.seqn += Wrapping(1);
    buffer.bytes = buffer.bytes.saturating_add(payload_len);
    buffer.packet_len = plaintext_end + PACKET_LENGTH_LEN;
    buffer.packet_total = total;
    buffer.packets_without_read += 1;
    Ok(buffer.packet_len)
}

/// burrow: reads until `buffer.incoming` holds at least `need` bytes, each read offering room
/// for up to `buffer.read_ahead` more. That room adapts to the traffic: it doubles (up to
/// `READ_AHEAD_MAX`) when a read fills it, and halves (down to `READ_AHEAD_MIN`) when a read
/// uses less than a quarter of it, so an idle session gives back a large buffer before it
/// waits again. The buffer is reused: the unread start of a packet moves to its front, so a
/// bulk transfer allocates (and the kernel zeroes pages) once, not per read.
async fn fill<R: AsyncRead + Unpin>(
    stream: &mut R,
    buffer: &mut SSHBuffer,
    need: usize,
) -> Result<(), Error> {
    while buffer.incoming.len() < need {
        let missing = need - buffer.incoming.len();
        let room = missing + buffer.read_ahead;
        buffer.incoming.make_room(missing, buffer.read_ahead);
        let offered = buffer.incoming.spare();
        let n = stream.read_buf(&mut buffer.incoming.buf).await?;
        buffer.packets_without_read = 0;
        if n == 0 {
            // As `read_exact` reports it.
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "early eof").into());
        }
        if n >= offered.min(room) {
            buffer.read_ahead = (buffer.read_ahead * 2).min(READ_AHEAD_MAX);
        } else if n < offered.min(room) / 4 {
            buffer.read_ahead = (buffer.read_ahead / 2).max(READ_AHEAD_MIN);
        }
    }
    Ok(())
}

pub(crate) const PACKET_LENGTH_LEN: usize = 4;

const MINIMUM_PACKET_LEN: usize = 16;
// Keep the transport limit aligned with the 256 KiB channel packet baseline.
const MAXIMUM_PACKET_LEN_BASELINE: usize = 256 * 1024;
const CHANNEL_DATA_PACKET_OVERHEAD: usize = 1 + 4 + 4;
const CHANNEL_EXTENDED_DATA_PACKET_OVERHEAD: usize = CHANNEL_DATA_PACKET_OVERHEAD + 4;
const PADDING_LENGTH_LEN: usize = 1;
// SSH requires at least four bytes of padding; with 16-byte blocks, that means
// a full-size channel packet can need up to 19 bytes of transport padding.
const MAXIMUM_PADDING_LEN: usize = 19;
const MAXIMUM_PACKET_LEN_HEADROOM: usize =
    PADDING_LENGTH_LEN + CHANNEL_EXTENDED_DATA_PACKET_OVERHEAD + MAXIMUM_PADDING_LEN;
const MAXIMUM_PACKET_LEN: usize = MAXIMUM_PACKET_LEN_BASELINE + MAXIMUM_PACKET_LEN_HEADROOM;
// Keep post-decompression growth within the same packet-acceptance model as
// the transport read path.
pub(crate) const MAXIMUM_DECOMPRESSED_PACKET_LEN: usize = MAXIMUM_PACKET_LEN;

#[cfg(feature = "_bench")]
pub mod benchmark;

#[cfg(all(test, feature = "des"))]
mod tests {
    use super::*;
    use crate::mac::_HMAC_SHA512_ETM;

    #[tokio::test]
    async fn read_accepts_shortest_3des_etm_packet() {
        let key = [1; 24];
        let iv = [2; 8];
        let mac_key = [3; 64];
        let mut sealing_key = _3DES_CBC.make_sealing_key(&key, &iv, &mac_key, &_HMAC_SHA512_ETM);
        let mut opening_key = _3DES_CBC.make_opening_key(&key, &iv, &mac_key, &_HMAC_SHA512_ETM);

        // With EtM the packet_length is not encrypted, so with 8-byte blocks
        // OpenSSH sends packet_length 8 for a one-byte payload: the padding
        // length, the payload and six bytes of padding.
        let mut packet = vec![0, 0, 0, 8, 6, 52, 0, 0, 0, 0, 0, 0];
        let mut tag = vec![0; sealing_key.tag_len()];
        sealing_key.seal(0, &mut packet, &mut tag);
        packet.extend_from_slice(&tag);

        let mut buffer = SSHBuffer::new();
        let n = read(&mut &packet[..], &mut buffer, opening_key.as_mut())
            .await
            .unwrap();

        assert_eq!(n, buffer.packet().len());
        assert_eq!(buffer.packet().get(5..), Some(&[52][..]));
    }
}

// burrow: the read-ahead receive path (`read`, `fill`, `ReadAhead`).
#[cfg(test)]
mod read_ahead_tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::sshbuffer::PacketWriter;

    fn packets(payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut writer = PacketWriter::clear();
        for p in payloads {
            writer.packet_raw(p).unwrap();
        }
        writer.buffer().buffer.clone()
    }

    fn payload(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j) as u8).collect()
    }

    #[tokio::test]
    async fn many_packets_arrive_in_one_read_and_come_out_whole_and_in_order() {
        let payloads: Vec<Vec<u8>> = (0..40).map(|i| payload(i, 1 + i * 997 % 40_000)).collect();
        let wire = packets(&payloads);
        let mut reader = &wire[..];
        let mut buffer = SSHBuffer::new();
        for p in &payloads {
            let n = read(&mut reader, &mut buffer, &mut clear::Key).await.unwrap();
            assert_eq!(n, buffer.packet().len());
            assert_eq!(buffer.packet().get(5..), Some(&p[..]));
        }
        assert!(read(&mut reader, &mut buffer, &mut clear::Key).await.is_err(), "then EOF");
        assert_eq!(buffer.seqn.0, 40);
    }

    #[tokio::test]
    async fn a_packet_trickling_in_byte_by_byte_survives_cancelled_reads() {
        let payloads = [payload(1, 3000), payload(2, 10)];
        let wire = packets(&payloads);
        let (mut tx, mut rx) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            for b in wire {
                tx.write_all(&[b]).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut buffer = SSHBuffer::new();
        let mut got = Vec::new();
        while got.len() < payloads.len() {
            // A read that is cancelled while a packet is incomplete loses nothing.
            let r = tokio::time::timeout(
                Duration::from_micros(50),
                read(&mut rx, &mut buffer, &mut clear::Key),
            )
            .await;
            if let Ok(n) = r {
                n.unwrap();
                got.push(buffer.packet()[5..].to_vec());
            }
        }
        assert_eq!(got, payloads);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_bulk_burst_grows_the_buffer_and_an_idle_session_gives_it_back() {
        let bulk: Vec<Vec<u8>> = (0..64).map(|i| payload(i, 32_000)).collect();
        let (mut tx, mut rx) = tokio::io::duplex(4 << 20);
        tx.write_all(&packets(&bulk)).await.unwrap();
        let mut buffer = SSHBuffer::new();
        for p in &bulk {
            read(&mut rx, &mut buffer, &mut clear::Key).await.unwrap();
            assert_eq!(buffer.packet().get(5..), Some(&p[..]));
        }
        assert!(buffer.incoming.buf.capacity() >= 256 * 1024, "bulk reads ahead");
        for i in 0..16 {
            tx.write_all(&packets(&[payload(i, 40)])).await.unwrap();
            read(&mut rx, &mut buffer, &mut clear::Key).await.unwrap();
        }
        assert!(
            buffer.incoming.buf.capacity() <= 64 * 1024,
            "idle keeps {} bytes",
            buffer.incoming.buf.capacity()
        );
    }

    #[tokio::test]
    async fn a_length_beyond_the_limit_is_refused_before_anything_is_allocated() {
        let mut wire = 300_000u32.to_be_bytes().to_vec();
        wire.extend_from_slice(&[0; 64]);
        let mut buffer = SSHBuffer::new();
        let r = read(&mut &wire[..], &mut buffer, &mut clear::Key).await;
        assert!(matches!(r, Err(Error::PacketSize(300_000))), "{r:?}");
        assert!(buffer.incoming.buf.capacity() < 64 * 1024);
    }
}

// burrow (review): hostile read schedules against the read-ahead buffer's bound.
#[cfg(test)]
mod read_ahead_attack_tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, ReadBuf};

    use super::*;

    /// Hands out `wire` in pieces a schedule picks: a hostile peer decides how much the
    /// socket holds at each read (up to all that is offered).
    struct Peer {
        wire: Vec<u8>,
        pos: usize,
        seed: u64,
    }

    impl AsyncRead for Peer {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            self.seed = self
                .seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let pick = match (self.seed >> 33) % 4 {
                0 => 1,
                1 => 17,
                _ => usize::MAX,
            };
            let n = pick.min(buf.remaining()).min(self.wire.len() - self.pos);
            let pos = self.pos;
            buf.put_slice(&self.wire[pos..pos + n]);
            self.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    fn clear_packet(len: usize) -> Vec<u8> {
        let mut p = (len as u32).to_be_bytes().to_vec();
        p.push(4); // padding length
        p.push(2); // SSH_MSG_IGNORE
        p.resize(4 + len, 0);
        p
    }

    #[tokio::test]
    async fn hostile_schedules_stay_within_two_reads_room_plus_one_packet() {
        let max_total = PACKET_LENGTH_LEN + MAXIMUM_PACKET_LEN;
        let bound = 2 * (max_total + READ_AHEAD_MAX) + max_total;
        let mut worst = 0;
        for seed in 0..12u64 {
            let mut wire = Vec::new();
            let mut s = seed;
            let mut sizes = Vec::new();
            for _ in 0..200 {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let len = match (s >> 33) % 5 {
                    0 => MAXIMUM_PACKET_LEN,
                    1 => 8,
                    2 => 1 + (s >> 40) as usize % 40_000,
                    3 => MAXIMUM_PACKET_LEN - (s >> 40) as usize % 1000,
                    _ => 32 * 1024 + 20,
                };
                sizes.push(len);
                wire.extend_from_slice(&clear_packet(len));
            }
            let mut peer = Peer { wire, pos: 0, seed };
            let mut buffer = SSHBuffer::new();
            for len in sizes {
                let n = read(&mut peer, &mut buffer, &mut clear::Key).await.unwrap();
                assert_eq!(n, buffer.packet().len());
                assert_eq!(
                    buffer.packet().get(..4),
                    Some(&(len as u32).to_be_bytes()[..])
                );
                worst = worst.max(buffer.incoming.buf.capacity());
            }
        }
        assert!(worst <= bound, "{worst} > {bound}");
    }

    /// The shortest lengths the clear key accepts (nothing to decrypt) are short packets,
    /// not slicing panics; the session then ends on them (`packet().len() < 5`).
    #[tokio::test]
    async fn zero_length_clear_packet_is_a_four_byte_packet_not_a_panic() {
        let wire = [0u8, 0, 0, 0, 0, 0, 0, 1, 0];
        let mut r = &wire[..];
        let mut buffer = SSHBuffer::new();
        let n = read(&mut r, &mut buffer, &mut clear::Key).await.unwrap();
        assert_eq!(n, 4);
        // padding_length 0 in a 1-byte body: one byte, the padding-length byte itself.
        let n = read(&mut r, &mut buffer, &mut clear::Key).await.unwrap();
        assert_eq!(n, 5);
        assert!(read(&mut r, &mut buffer, &mut clear::Key).await.is_err());
    }

    /// Packets taken from the read-ahead buffer make no socket read, so they never use up the
    /// task's coop budget: a peer that sends a megabyte of the smallest packets (tens of
    /// thousands) would keep the session task on its worker thread, and every other task there
    /// waiting, until all of them are handled. Upstream made two socket reads per packet, so
    /// tokio made it yield every 64 packets. The reading task still yields that often.
    #[test]
    fn a_burst_of_tiny_packets_from_the_buffer_lets_other_tasks_run() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            use std::sync::atomic::{AtomicUsize, Ordering};
            use std::sync::Arc;
            use tokio::io::AsyncWriteExt;

            let mut wire = Vec::new();
            for _ in 0..4000 {
                wire.extend_from_slice(&clear_packet(8));
            }
            let (mut tx, mut rx) = tokio::io::duplex(1 << 20);
            tx.write_all(&wire).await.unwrap();
            let read_so_far = Arc::new(AtomicUsize::new(0));
            let seen_by_other = Arc::new(AtomicUsize::new(usize::MAX));
            let other = {
                let (read_so_far, seen) = (read_so_far.clone(), seen_by_other.clone());
                tokio::spawn(async move {
                    seen.store(read_so_far.load(Ordering::SeqCst), Ordering::SeqCst);
                })
            };
            let mut buffer = SSHBuffer::new();
            for i in 1..=4000 {
                read(&mut rx, &mut buffer, &mut clear::Key).await.unwrap();
                read_so_far.store(i, Ordering::SeqCst);
            }
            other.await.unwrap();
            let seen = seen_by_other.load(Ordering::SeqCst);
            assert!(seen <= 256, "another task first ran after {seen} packets");
        });
    }
}
