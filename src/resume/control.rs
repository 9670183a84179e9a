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
///
/// Only the newest control channel takes them (see [`Claim`]): a relay keeps a session whose
/// link died until its keepalives give up, and the client's new session binds the same
/// instance meanwhile. The old channel's writes still succeed (into its window and output
/// buffer) but never arrive, and an acknowledgement it took would never be posted again (only
/// new bytes make a new one), so the stream it was for could wait for it forever.
#[derive(Debug, Default)]
pub struct Outbox {
    state: Mutex<Owed>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct Owed {
    pending: HashMap<u64, u64>,
    /// The newest [`Claim`]'s number.
    owner: u64,
}

/// The right to take an [`Outbox`]'s acknowledgements, until a newer control channel claims it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim(u64);

impl Outbox {
    /// Says that stream `id` has received `offset` bytes.
    pub fn post(&self, id: u64, offset: u64) {
        let mut state = self.lock();
        let entry = state.pending.entry(id).or_insert(offset);
        *entry = (*entry).max(offset);
        drop(state);
        self.ready.notify_waiters();
    }

    /// Drops what is still owed for a stream that ended.
    pub fn forget(&self, id: u64) {
        self.lock().pending.remove(&id);
    }

    /// Makes a new control channel the only one that takes acknowledgements from now on; the
    /// one before gets nothing more (its [`Outbox::next_batch`] returns None).
    pub fn claim(&self) -> Claim {
        let mut state = self.lock();
        state.owner += 1;
        let claim = Claim(state.owner);
        drop(state);
        self.ready.notify_waiters();
        claim
    }

    /// Waits until something is owed, then takes all of it, encoded; None once a newer
    /// control channel has claimed the outbox.
    pub async fn next_batch(&self, claim: Claim) -> Option<Vec<u8>> {
        loop {
            // Created before looking: a post or claim from now on wakes it.
            let ready = self.ready.notified();
            {
                let mut state = self.lock();
                if state.owner != claim.0 {
                    return None;
                }
                if !state.pending.is_empty() {
                    let batch = state
                        .pending
                        .drain()
                        .flat_map(|(id, offset)| encode_ack(id, offset))
                        .collect();
                    return Some(batch);
                }
            }
            ready.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Owed> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
/// is gone (false) or a newer control channel claimed the outbox (see [`Outbox::claim`]).
pub async fn send_acks<F, Fut>(outbox: &Outbox, claim: Claim, mut send: F)
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: Future<Output = bool>,
{
    while let Some(batch) = outbox.next_batch(claim).await {
        if !send(batch).await {
            return;
        }
    }
}

/// Runs a control channel given as a byte stream (the client's; tests' in-memory sessions)
/// after its handshake: `leftover` is what came after the handshake's answer. Acknowledgements
/// read go to `on_ack`; those of `outbox` go out, claimed for this channel (see
/// [`Outbox::claim`]) until a newer one claims them. Ends when the channel ends or breaks; the
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
    let claim = outbox.claim();
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
        while let Some(batch) = outbox.next_batch(claim).await {
            if w.write_all(&batch).await.is_err() {
                return;
            }
        }
        // Superseded, not broken: the peer's acknowledgements may still come here.
        std::future::pending::<()>().await
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
        let claim = outbox.claim();
        let mut batch = outbox.next_batch(claim).await.unwrap();
        let mut got = Vec::new();
        take_acks(&mut batch, |id, off| got.push((id, off))).unwrap();
        got.sort_unstable();
        assert_eq!(got, [(1, 30), (2, 5)]);
        // Taken: the next batch waits for a new post.
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            outbox.next_batch(claim),
        );
        assert!(waiting.await.is_err());
    }

    /// A relay keeps a session whose link died until its keepalives give up, and the client's
    /// new session binds the same instance meanwhile: two control channels on one outbox. The
    /// old one's writes still succeed (into its window and output buffer) but never arrive, and
    /// an acknowledgement it takes is never posted again (only new bytes make a new one), so
    /// the stream it was for can wait for it forever. Every acknowledgement posted after the
    /// new channel came reaches the new channel.
    #[tokio::test]
    async fn acknowledgements_go_to_the_newest_control_channel_only() {
        let outbox = std::sync::Arc::new(Outbox::default());
        let (stale, _never_read) = tokio::io::duplex(1 << 20);
        let (current, mut peer) = tokio::io::duplex(1 << 20);
        let o = outbox.clone();
        tokio::spawn(async move { run(stale, Vec::new(), &o, |_, _| {}).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let o = outbox.clone();
        tokio::spawn(async move { run(current, Vec::new(), &o, |_, _| {}).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let mut got = Vec::new();
        let mut buf = Vec::new();
        for id in 0..10u64 {
            outbox.post(id, 100 + id);
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
            while got.len() as u64 <= id {
                let mut chunk = [0u8; 64];
                let read = tokio::time::timeout_at(deadline, peer.read(&mut chunk)).await;
                let Ok(Ok(n @ 1..)) = read else {
                    panic!("acknowledgement {id} never reached the current channel: {got:?}");
                };
                buf.extend_from_slice(&chunk[..n]);
                take_acks(&mut buf, |id, off| got.push((id, off))).unwrap();
            }
        }
        let want: Vec<_> = (0..10u64).map(|id| (id, 100 + id)).collect();
        assert_eq!(got, want);
    }
}
