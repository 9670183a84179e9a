//! Acknowledgements outside the streams' channels, on the session's control channel.
//!
//! A stream acknowledges inside its own channel too (`ACK` frames, see [`super::frame`]), but
//! there an acknowledgement waits behind every byte queued before it, and the side it is for may
//! not read those bytes until it gets it: an echo-like target behind a relay whose replay buffer
//! is full stops reading what the relay delivers (the relay stopped reading the target's
//! answers), so the relay stops reading its channel, where the client's acknowledgements sit
//! behind data, and the stream waits forever
//! (`registry::tests::an_echo_between_unequal_buffers_never_waits_for_acks_stuck_behind_data`).
//! SSH solves the same problem for its windows with a message outside the channel's data; the
//! control channel is ours: its reader never waits for a stream, so an acknowledgement sent
//! there always arrives.
//!
//! After the instance id and the relay's answer, both directions of the control channel carry
//! `ACK stream-id offset` messages (1 + 8 + 8 bytes, big-endian): the sender has received
//! `offset` bytes of that stream in all. They repeat what the in-channel `ACK` frames say, so a
//! peer that never sends them (an older burrow) only loses the guarantee, and an old one that
//! receives them ignores them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// The one message kind after the handshake.
const ACK: u8 = 1;
/// Bytes of an [`ACK`] message.
const ACK_LEN: usize = 1 + 8 + 8;

/// Acknowledgements this side owes its peer: the newest offset per stream until the control
/// channel's writer takes them. Newer offsets replace older ones, so it never holds more than
/// one entry per live stream, however far behind the writer is.
#[derive(Debug, Default)]
pub struct Outbox {
    pending: Mutex<HashMap<u64, u64>>,
    ready: Notify,
}

impl Outbox {
    /// Says that stream `id` has received `offset` bytes.
    pub fn post(&self, id: u64, offset: u64) {
        let mut pending = self.lock();
        let entry = pending.entry(id).or_insert(offset);
        *entry = (*entry).max(offset);
        drop(pending);
        self.ready.notify_one();
    }

    /// Drops what is still owed for a stream that ended.
    pub fn forget(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Waits until something is owed, then takes all of it, encoded.
    pub async fn next_batch(&self) -> Vec<u8> {
        loop {
            let batch: Vec<u8> = self
                .lock()
                .drain()
                .flat_map(|(id, offset)| encode_ack(id, offset))
                .collect();
            if !batch.is_empty() {
                return batch;
            }
            self.ready.notified().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One stream's acknowledgements from the control channel: the highest offset the peer has
/// reported, for the stream's engine to apply.
#[derive(Debug, Default)]
pub struct Inbox {
    offset: AtomicU64,
    ready: Notify,
}

impl Inbox {
    /// Records that the peer has received `offset` bytes of the stream.
    pub fn offer(&self, offset: u64) {
        self.offset.fetch_max(offset, Ordering::SeqCst);
        self.ready.notify_one();
    }

    /// The highest offset reported so far.
    pub fn offset(&self) -> u64 {
        self.offset.load(Ordering::SeqCst)
    }

    /// Completes after the next [`Inbox::offer`] (or at once if one came since the last wait).
    pub async fn offered(&self) {
        self.ready.notified().await;
    }
}

fn encode_ack(id: u64, offset: u64) -> [u8; ACK_LEN] {
    let mut m = [0u8; ACK_LEN];
    m[0] = ACK;
    m[1..9].copy_from_slice(&id.to_be_bytes());
    m[9..].copy_from_slice(&offset.to_be_bytes());
    m
}

/// Takes every whole message from the front of `buf`, calling `on_ack(stream, offset)` for
/// each; an incomplete one stays. Anything but an ACK is an error naming what came.
pub fn take_acks(buf: &mut Vec<u8>, mut on_ack: impl FnMut(u64, u64)) -> Result<(), String> {
    let mut at = 0;
    while let Some(kind) = buf.get(at) {
        if *kind != ACK {
            return Err(format!("unknown resume control message kind {kind}"));
        }
        let Some(m) = buf.get(at..at + ACK_LEN) else {
            break;
        };
        let word = |r: std::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&m[r]);
            u64::from_be_bytes(b)
        };
        on_ack(word(1..9), word(9..17));
        at += ACK_LEN;
    }
    buf.drain(..at);
    Ok(())
}

/// Sends `outbox`'s acknowledgements with `send` as they come, until `send` says the channel
/// is gone (false).
pub async fn send_acks<F, Fut>(outbox: &Outbox, mut send: F)
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        let batch = outbox.next_batch().await;
        if !send(batch).await {
            return;
        }
    }
}

/// Runs a control channel given as a byte stream (the client's; tests' in-memory sessions)
/// after its handshake: `leftover` is what came after the handshake's answer. Acknowledgements
/// read go to `on_ack`, those of `outbox` go out. Ends when the channel ends or breaks; the
/// error names a peer that sent something else.
pub async fn run<S>(
    stream: S,
    leftover: Vec<u8>,
    outbox: &Outbox,
    mut on_ack: impl FnMut(u64, u64),
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let reading = async {
        let mut buf = leftover;
        let mut chunk = [0u8; 4096];
        loop {
            take_acks(&mut buf, &mut on_ack)?;
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let writing = async {
        loop {
            let batch = outbox.next_batch().await;
            if w.write_all(&batch).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        r = reading => r,
        () = writing => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_round_trip_in_any_split_and_garbage_is_named() {
        let mut wire: Vec<u8> = [encode_ack(7, 1 << 40), encode_ack(u64::MAX, 3)].concat();
        let whole = wire.clone();
        let mut got = Vec::new();
        // Fed one byte at a time: nothing before a message is whole, each exactly once.
        let mut buf = Vec::new();
        for b in wire.drain(..) {
            buf.push(b);
            take_acks(&mut buf, |id, off| got.push((id, off))).unwrap();
        }
        assert_eq!(got, [(7, 1 << 40), (u64::MAX, 3)]);
        assert!(buf.is_empty());
        let mut buf = [&whole[..], &[9u8]].concat();
        let err = take_acks(&mut buf, |_, _| {}).unwrap_err();
        assert!(err.contains("kind 9"), "{err}");
    }

    #[tokio::test]
    async fn the_outbox_keeps_the_newest_offset_per_stream_and_forgets_ended_ones() {
        let outbox = Outbox::default();
        outbox.post(1, 10);
        outbox.post(1, 30);
        outbox.post(1, 20);
        outbox.post(2, 5);
        outbox.post(3, 9);
        outbox.forget(3);
        let mut batch = outbox.next_batch().await;
        let mut got = Vec::new();
        take_acks(&mut batch, |id, off| got.push((id, off))).unwrap();
        got.sort_unstable();
        assert_eq!(got, [(1, 30), (2, 5)]);
        // Taken: the next batch waits for a new post.
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), outbox.next_batch());
        assert!(waiting.await.is_err());
    }
}
