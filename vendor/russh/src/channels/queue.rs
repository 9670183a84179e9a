// burrow: a channel's message queue (see BURROW-PATCH.md, "Coalescing small data").
//
// The session loop pushes (`QueueTx`, inside `ChannelRef`), the read half pops
// (`ChannelQueueRx`). Data is bounded by the receive window in bytes, so it never waits;
// every other message takes one of `channel_buffer_size` permits, as before the patch.
//
// Small data messages are merged while they wait, so a peer sending one-byte packets into a
// channel nobody reads costs about one byte of memory per byte, not one queue slot and one
// allocation (~115 bytes) per packet:
// - a `Data` (or stderr `ExtendedData`, code 1) shorter than `SMALL` is appended to the
//   newest queued entry of the same stream if no non-data message follows it and the result
//   stays within `MERGE_LIMIT`; larger messages are queued as they are (no copy on the bulk
//   path, where packets are full-sized);
// - stdout and stderr are merged separately, so their relative order may change while a
//   reader lags; OpenSSH keeps them in separate buffers too;
// - `ExtendedData` with any other code (RFC 4254 defines only 1; OpenSSH drops the rest) is
//   not merged and counts as a control message, so it cannot be used to grow the queue.
//
// `WindowAdjusted` is informational and comes with every WINDOW_ADJUST the peer sends: at most
// one is queued (a newer one updates it in place) and it takes no permit. Were it to take
// permits, a reader that lags by many window adjustments (a large receive window re-opened in
// small steps) would fill the permits with them, and the session loop would then block on the
// next message that must wait for one (EOF, close): while the application that should read the
// queue waits on that same session loop, a deadlock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::sync::Semaphore;
use tokio::sync::mpsc::error::{SendError, TrySendError};

use crate::ChannelMsg;

/// Data messages shorter than this are merged while queued.
const SMALL: usize = 4096;
/// A merged entry grows to at most this many bytes (the usual maximum packet size).
const MERGE_LIMIT: usize = 32768;
/// The only `ExtendedData` code that is merged: SSH_EXTENDED_DATA_STDERR.
const STDERR: u32 = 1;

/// Which stream a mergeable data message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Data,
    Stderr,
}

impl Stream {
    fn of(msg: &ChannelMsg) -> Option<Self> {
        match msg {
            ChannelMsg::Data { .. } => Some(Stream::Data),
            ChannelMsg::ExtendedData { ext: STDERR, .. } => Some(Stream::Stderr),
            _ => None,
        }
    }
}

#[derive(Debug)]
enum Entry {
    Msg(ChannelMsg),
    Merged { buf: BytesMut, stream: Stream },
}

impl Entry {
    fn into_msg(self) -> ChannelMsg {
        match self {
            Entry::Msg(msg) => msg,
            Entry::Merged {
                buf,
                stream: Stream::Data,
            } => ChannelMsg::Data { data: buf.freeze() },
            Entry::Merged {
                buf,
                stream: Stream::Stderr,
            } => ChannelMsg::ExtendedData {
                data: buf.freeze(),
                ext: STDERR,
            },
        }
    }
}

#[derive(Debug, Default)]
struct State {
    entries: VecDeque<Entry>,
    /// Sequence number of `entries[0]`.
    head: u64,
    /// Per stream, the sequence number of the entry new small data may be appended to.
    open_data: Option<u64>,
    /// The sequence number of the queued `WindowAdjusted`, if one is queued.
    window_adjusted: Option<u64>,
    open_stderr: Option<u64>,
    waker: Option<Waker>,
    rx_closed: bool,
    tx_closed: bool,
}

impl State {
    fn open(&mut self, stream: Stream) -> &mut Option<u64> {
        match stream {
            Stream::Data => &mut self.open_data,
            Stream::Stderr => &mut self.open_stderr,
        }
    }

    fn push(&mut self, msg: ChannelMsg) {
        if let ChannelMsg::WindowAdjusted { new_size } = msg {
            let queued = self
                .window_adjusted
                .and_then(|seq| seq.checked_sub(self.head))
                .and_then(|i| self.entries.get_mut(i as usize));
            if let Some(Entry::Msg(ChannelMsg::WindowAdjusted { new_size: old })) = queued {
                *old = new_size;
                return;
            }
            self.window_adjusted = Some(self.head + self.entries.len() as u64);
        }
        let small = data_len(&msg).filter(|n| *n < SMALL);
        match (Stream::of(&msg), small) {
            (Some(stream), Some(n)) => {
                if !self.append(stream, &msg, n) {
                    let seq = self.head + self.entries.len() as u64;
                    self.entries.push_back(Entry::Msg(msg));
                    *self.open(stream) = Some(seq);
                }
            }
            (Some(stream), None) => {
                // A large message of the stream: later small ones go after it.
                self.entries.push_back(Entry::Msg(msg));
                *self.open(stream) = None;
            }
            (None, _) => {
                // Nothing queued before a non-data message may grow any more.
                self.open_data = None;
                self.open_stderr = None;
                self.entries.push_back(Entry::Msg(msg));
            }
        }
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Appends `msg` (n bytes of `stream`) to the stream's open entry, if it has room.
    fn append(&mut self, stream: Stream, msg: &ChannelMsg, n: usize) -> bool {
        let Some(seq) = *self.open(stream) else {
            return false;
        };
        let Some(entry) = seq
            .checked_sub(self.head)
            .and_then(|i| self.entries.get_mut(i as usize))
        else {
            return false;
        };
        let (ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. }) = msg else {
            return false;
        };
        match entry {
            Entry::Merged { buf, .. } if buf.len() + n <= MERGE_LIMIT => {
                buf.extend_from_slice(data);
                true
            }
            Entry::Msg(ChannelMsg::Data { data: first })
            | Entry::Msg(ChannelMsg::ExtendedData { data: first, .. })
                if first.len() + n <= MERGE_LIMIT =>
            {
                let mut buf = BytesMut::with_capacity((first.len() + n).max(1024));
                buf.extend_from_slice(first);
                buf.extend_from_slice(data);
                *entry = Entry::Merged { buf, stream };
                true
            }
            _ => false,
        }
    }

    fn pop(&mut self) -> Option<ChannelMsg> {
        let entry = self.entries.pop_front()?;
        for open in [
            &mut self.open_data,
            &mut self.open_stderr,
            &mut self.window_adjusted,
        ] {
            if *open == Some(self.head) {
                *open = None;
            }
        }
        self.head += 1;
        Some(entry.into_msg())
    }
}

fn data_len(msg: &ChannelMsg) -> Option<usize> {
    match msg {
        ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => Some(data.len()),
        _ => None,
    }
}

/// True for messages that never wait for a permit: data of the two mergeable streams.
pub(crate) fn is_unbounded_data(msg: &ChannelMsg) -> bool {
    Stream::of(msg).is_some()
}

/// True for messages that take a permit: all but mergeable data and `WindowAdjusted` (at most
/// one queued).
fn takes_permit(msg: &ChannelMsg) -> bool {
    !is_unbounded_data(msg) && !matches!(msg, ChannelMsg::WindowAdjusted { .. })
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    control_permits: Semaphore,
    /// What the channel's grown window holds from its session's budget: the queue keeps a
    /// share, so the bytes are given back only once the data the window let in is gone too.
    window_growth: std::sync::OnceLock<Arc<crate::WindowGrowth>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Creates a channel's queue holding at most `channel_buffer_size` control messages.
pub(crate) fn queue(channel_buffer_size: usize) -> (QueueTx, ChannelQueueRx) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        control_permits: Semaphore::new(channel_buffer_size),
        window_growth: std::sync::OnceLock::new(),
    });
    (
        QueueTx {
            shared: shared.clone(),
        },
        ChannelQueueRx { shared },
    )
}

/// The session loop's end of a channel queue.
#[derive(Debug)]
pub(crate) struct QueueTx {
    shared: Arc<Shared>,
}

impl QueueTx {
    /// Data never waits and empty data is dropped; other messages wait for a permit.
    /// `Err` means the read half is gone or closed.
    pub(crate) async fn send(&self, msg: ChannelMsg) -> Result<(), SendError<ChannelMsg>> {
        if data_len(&msg) == Some(0) {
            return Ok(());
        }
        if takes_permit(&msg) {
            match self.shared.control_permits.acquire().await {
                Ok(permit) => permit.forget(), // given back by `ChannelQueueRx::pop`
                Err(_) => return Err(SendError(msg)),
            }
        }
        self.push(msg).map_err(|e| match e {
            TrySendError::Closed(m) | TrySendError::Full(m) => SendError(m),
        })
    }

    /// Like `send` but never waits.
    pub(crate) fn try_send(&self, msg: ChannelMsg) -> Result<(), TrySendError<ChannelMsg>> {
        if data_len(&msg) == Some(0) {
            return Ok(());
        }
        if takes_permit(&msg) {
            match self.shared.control_permits.try_acquire() {
                Ok(permit) => permit.forget(),
                Err(tokio::sync::TryAcquireError::Closed) => return Err(TrySendError::Closed(msg)),
                Err(tokio::sync::TryAcquireError::NoPermits) => return Err(TrySendError::Full(msg)),
            }
        }
        self.push(msg)
    }

    /// Keeps `growth` (the channel's, the same each time) as long as the queue lives.
    pub(crate) fn hold_window_growth(&self, growth: Arc<crate::WindowGrowth>) {
        let _ = self.shared.window_growth.set(growth);
    }

    fn push(&self, msg: ChannelMsg) -> Result<(), TrySendError<ChannelMsg>> {
        let mut state = self.shared.lock();
        if state.rx_closed {
            return Err(TrySendError::Closed(msg));
        }
        state.push(msg);
        Ok(())
    }
}

impl Drop for QueueTx {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.tx_closed = true;
        if let Some(w) = state.waker.take() {
            w.wake();
        }
    }
}

/// burrow: receiving end of a channel's message queue (the sending end is in
/// [`super::ChannelRef`]). Unbounded for data, which the receive window bounds in bytes and
/// which is merged while it waits; at most `channel_buffer_size` other messages, so the
/// session loop never waits on a full queue because of data.
#[derive(Debug)]
pub(crate) struct ChannelQueueRx {
    shared: Arc<Shared>,
}

impl ChannelQueueRx {
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<ChannelMsg>> {
        let mut state = self.shared.lock();
        if let Some(msg) = self.pop(&mut state) {
            return Poll::Ready(Some(msg));
        }
        if state.tx_closed || state.rx_closed {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    pub(crate) async fn recv(&mut self) -> Option<ChannelMsg> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub(crate) fn try_recv(&mut self) -> Option<ChannelMsg> {
        let mut state = self.shared.lock();
        self.pop(&mut state)
    }

    /// Later sends fail; what is queued can still be taken out.
    pub(crate) fn close(&mut self) {
        self.shared.lock().rx_closed = true;
        // Wakes a session loop waiting for a permit: its send fails, as it did on a
        // closed bounded channel.
        self.shared.control_permits.close();
    }

    /// Entries queued now (merged data counts once); for tests.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shared.lock().entries.len()
    }

    fn pop(&self, state: &mut State) -> Option<ChannelMsg> {
        let msg = state.pop()?;
        if takes_permit(&msg) {
            self.shared.control_permits.add_permits(1);
        }
        Some(msg)
    }
}

impl Drop for ChannelQueueRx {
    fn drop(&mut self) {
        self.shared.lock().rx_closed = true;
        self.shared.control_permits.close();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
    use bytes::Bytes;
    use futures::FutureExt;

    use super::*;

    fn data(b: &[u8]) -> ChannelMsg {
        ChannelMsg::Data {
            data: Bytes::copy_from_slice(b),
        }
    }

    fn stderr(b: &[u8]) -> ChannelMsg {
        ChannelMsg::ExtendedData {
            data: Bytes::copy_from_slice(b),
            ext: STDERR,
        }
    }

    fn drain(rx: &mut ChannelQueueRx) -> Vec<ChannelMsg> {
        std::iter::from_fn(|| rx.try_recv()).collect()
    }

    #[test]
    fn window_adjustments_never_use_up_the_room_eof_needs() {
        // A reader that lags while the peer re-opens its window many times over: the session
        // loop must still be able to queue EOF without waiting (it used to block here, and
        // with it the reader's own writer: a deadlock).
        let (tx, mut rx) = queue(4);
        for i in 0..1000u32 {
            tx.try_send(data(&[1; SMALL])).unwrap();
            tx.try_send(ChannelMsg::WindowAdjusted { new_size: i }).unwrap();
        }
        assert!(
            tx.send(ChannelMsg::Eof).now_or_never().is_some(),
            "EOF had to wait for the reader"
        );
        let msgs = drain(&mut rx);
        let adjusted: Vec<u32> = msgs
            .iter()
            .filter_map(|m| match m {
                ChannelMsg::WindowAdjusted { new_size } => Some(*new_size),
                _ => None,
            })
            .collect();
        assert_eq!(adjusted, [999], "one, with the latest size");
        assert!(matches!(msgs.last(), Some(ChannelMsg::Eof)));
        assert_eq!(msgs.len(), 1000 + 2);
        // Once taken out, the next one is queued again.
        tx.try_send(ChannelMsg::WindowAdjusted { new_size: 5 }).unwrap();
        assert!(matches!(
            rx.try_recv(),
            Some(ChannelMsg::WindowAdjusted { new_size: 5 })
        ));
    }

    #[test]
    fn one_byte_packets_share_entries_and_keep_their_order() {
        let (tx, mut rx) = queue(4);
        for i in 0..100_000u32 {
            tx.try_send(data(&[(i % 251) as u8])).unwrap();
        }
        assert_eq!(rx.len(), 100_000usize.div_ceil(MERGE_LIMIT));
        let mut got = Vec::new();
        for msg in drain(&mut rx) {
            let ChannelMsg::Data { data } = msg else {
                panic!("{msg:?}")
            };
            assert!(data.len() <= MERGE_LIMIT);
            got.extend_from_slice(&data);
        }
        let want: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn large_messages_are_not_copied_and_control_messages_are_barriers() {
        let (tx, mut rx) = queue(4);
        let big = Bytes::from(vec![7u8; SMALL]);
        tx.try_send(ChannelMsg::Data { data: big.clone() }).unwrap();
        tx.try_send(data(b"a")).unwrap();
        tx.try_send(data(b"b")).unwrap();
        tx.try_send(ChannelMsg::Eof).unwrap();
        tx.try_send(data(b"c")).unwrap();
        let msgs = drain(&mut rx);
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        match &msgs[0] {
            ChannelMsg::Data { data } => assert_eq!(data.as_ptr(), big.as_ptr()),
            m => panic!("{m:?}"),
        }
        assert!(matches!(&msgs[1], ChannelMsg::Data { data } if data.as_ref() == b"ab"));
        assert!(matches!(&msgs[2], ChannelMsg::Eof));
        assert!(matches!(&msgs[3], ChannelMsg::Data { data } if data.as_ref() == b"c"));
    }

    #[test]
    fn streams_merge_apart_and_odd_extended_codes_are_bounded() {
        let (tx, mut rx) = queue(2);
        for _ in 0..1000 {
            tx.try_send(data(b"o")).unwrap();
            tx.try_send(stderr(b"e")).unwrap();
        }
        assert_eq!(rx.len(), 2);
        let odd = |b: &[u8]| ChannelMsg::ExtendedData {
            data: Bytes::copy_from_slice(b),
            ext: 7,
        };
        tx.try_send(odd(b"x")).unwrap();
        tx.try_send(odd(b"y")).unwrap();
        assert!(matches!(tx.try_send(odd(b"z")), Err(TrySendError::Full(_))));
        assert!(tx.send(odd(b"z")).now_or_never().is_none(), "waits for room");
        let msgs = drain(&mut rx);
        assert!(matches!(&msgs[0], ChannelMsg::Data { data } if data.len() == 1000));
        assert!(matches!(&msgs[1], ChannelMsg::ExtendedData { data, ext: 1 } if data.len() == 1000));
        assert!(tx.try_send(odd(b"z")).is_ok(), "room again after taking two out");
    }

    #[test]
    fn closing_either_end() {
        let (tx, mut rx) = queue(2);
        tx.try_send(data(b"left")).unwrap();
        rx.close();
        assert!(matches!(tx.try_send(data(b"x")), Err(TrySendError::Closed(_))));
        assert!(matches!(rx.try_recv(), Some(ChannelMsg::Data { .. })));
        let (tx, mut rx) = queue(2);
        tx.try_send(data(b"last")).unwrap();
        drop(tx);
        assert!(rx.recv().now_or_never().unwrap().is_some());
        assert!(rx.recv().now_or_never().unwrap().is_none());
    }
}
