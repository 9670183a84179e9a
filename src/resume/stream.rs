//! One resumable stream: a local connection (the application's, or the target's) that outlives
//! the SSH channels carrying it. Bytes sent stay in a bounded replay buffer until the peer
//! acknowledges them; after a new channel is attached both sides replay exactly what the other
//! has not received. The two directions run independently, so a slow local reader never
//! blocks the other direction.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Notify;

use super::control::{Inbox, Outbox};
use super::frame::{self, Frame, Reply, ACK_FRAME, DATA_HEADER, PACKET};
use super::kept::{Kept, SHARE_MIN};
use super::OpenError;
use super::{BoxedIo, ResumeStats};
use crate::budget::{Exhausted, Reservation};
use crate::pipe::{CloseReason, Closed, Counters, Totals};

/// How long an ABORT may take to go out before the channel is simply dropped.
const ABORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Completes when the peer's acknowledgements on the control channel moved; never without a
/// sideband.
async fn sideband_offered(sideband: &Option<Sideband>) {
    match sideband {
        Some(sb) => sb.inbox.offered().await,
        None => std::future::pending().await,
    }
}

/// Reads the peer's reply to a new stream's hello when it comes after our first bytes
/// ([`ReplyStep::Due`]); `None` when it says go ahead, else how the attachment ends.
async fn read_new_stream_reply<C: tokio::io::AsyncRead>(ch_r: &mut ReadHalf<C>) -> Option<Outcome> {
    let handshake = |why: String| Some(Outcome::OpenFailed(OpenError::Handshake(why)));
    match tokio::time::timeout(super::REPLY_TIMEOUT, Reply::read(ch_r)).await {
        Ok(Ok(reply)) => super::answer_to_new_stream(reply)
            .err()
            .map(Outcome::OpenFailed),
        Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => handshake(e.to_string()),
        // The channel went before the reply (the link dropped while the peer dialled): a
        // re-attach asks whether the stream exists.
        Ok(Err(_)) => Some(Outcome::Lost),
        Err(_) => handshake("no reply in time".into()),
    }
}

/// How an abort that came from the peer reads (no ABORT is sent back for it).
const PEER_ABORT: &str = "the peer's connection";

/// How often received bytes are acknowledged when fewer than the threshold arrived (sooner
/// when DATA or FIN goes out first: a due ACK rides in front of it).
const ACK_TICK: Duration = Duration::from_millis(50);

/// A channel ready to carry the stream, and the peer's receive offset to replay from.
pub struct Attachment {
    /// The channel after the hello (and, for an attach we received, before our reply).
    pub channel: BoxedIo,
    /// Bytes of ours the peer has received.
    pub peer_received: u64,
    /// Where the handshake's [`Reply`] stands.
    pub reply: ReplyStep,
}

/// The handshake's [`Reply`] on an attachment's channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStep {
    /// Exchanged before the attachment was made.
    Settled,
    /// We owe the peer one (an attach it opened): sent once the previous attachment is over,
    /// so the offset in it is final.
    Owed,
    /// The peer's reply to our new stream's hello comes first on the channel: we sent right
    /// behind the hello (`FirstBytes::WithHello`).
    Due,
}

/// How one attachment ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Both directions finished and every byte was acknowledged.
    Done,
    /// The channel went away: wait for a new one.
    Lost,
    /// The stream failed (local error, peer abort, protocol violation): close it.
    Aborted(String),
    /// The peer's reply to a stream we sent on before it ([`ReplyStep::Due`]) said no, or
    /// never came whole: close it as a refused channel is closed.
    OpenFailed(OpenError),
}

/// State both directions share.
struct Shared {
    /// Sent bytes not yet acknowledged; `base` is the offset of its first byte.
    out: Mutex<OutBuf>,
    /// Bytes received from the peer and written to the local connection.
    received: AtomicU64,
    /// The highest offset we acknowledged inside the channel.
    acked: AtomicU64,
    /// The highest offset we acknowledged on the control channel (see [`Sideband`]).
    posted: AtomicU64,
    /// The highest offset the peer acknowledged inside the channel (or in a re-attach's
    /// handshake). Only this one completes the stream (see [`Engine::done`]).
    peer_acked: AtomicU64,
    /// The peer's final offset once it sent FIN (u64::MAX until then).
    peer_fin: AtomicU64,
    /// Our local connection reached EOF and FIN went out at `sent_total`.
    local_eof: AtomicBool,
    /// Acknowledgements freed buffer space.
    space: Notify,
    /// The downlink wants an ACK sent (threshold reached, or FIN received).
    ack_wanted: Notify,
    /// The downlink received bytes: acknowledge them within [`ACK_TICK`].
    ack_soon: Notify,
    /// Bytes reached the local connection: acknowledge them on the control channel within
    /// [`ACK_TICK`], however long the downlink then waits.
    post_soon: Notify,
    /// Our FIN went out whole on the current attachment.
    fin_sent: AtomicBool,
    /// The uplink is in the middle of writing a frame (an ABORT now would land inside it).
    mid_frame: AtomicBool,
}

/// What we sent and the peer has not acknowledged: `base..end` in stream offsets, and the bytes
/// themselves when the stream keeps them for replay.
struct OutBuf {
    base: u64,
    end: u64,
    /// Never holds more memory than `limit`, the stream's capacity (the uplink reads only into
    /// [`OutBuf::room`]): a stream's replay buffer costs at most what it reserved (see
    /// [`crate::budget`]), and a stream that never has much unacknowledged costs little. None
    /// for a stream carried without a replay buffer.
    kept: Option<Kept>,
    /// The capacity now: unacknowledged bytes never exceed it. Starts at the configured buffer
    /// and grows (see [`Growth`]).
    limit: usize,
    growth: Growth,
}

/// See [`Growth`]: on a round trip shorter than this the initial 4 MiB already carry more than
/// 100 MiB/s per stream, so the capacity is not what limits it.
const MIN_SAMPLE: Duration = Duration::from_millis(40);

/// Autotuning of a stream's capacity, like TCP's send buffer: the capacity caps the bytes in
/// flight, so a fixed one caps throughput at capacity / round trip (4 MiB at 100 ms: ~40 MiB/s).
/// Each time acknowledgements for a whole capacity's worth of bytes have come back, the stream
/// looks at how they came: if at least half of them found the buffer full (less than one frame
/// of room, so the uplink was waiting for them rather than for the channel or the local
/// connection), the capacity was the limit while the peer kept up, and it doubles, up to `max`.
/// A stream limited by its channel (the SSH window, the link, CPU) or by its local source never
/// fills its buffer and never grows; neither does one whose peer stops reading (no
/// acknowledgements come back). On a relay each growth first reserves the difference from the
/// key's and the relay's budgets ([`Reservation::grow`]); a refusal keeps the current capacity
/// and the stream runs on as it was, never failing.
///
/// A sample that came back faster than [`MIN_SAMPLE`] never grows the capacity: a capacity's
/// worth of acknowledgements takes about one round trip when the capacity is the limit, so a
/// fast sample means a short round trip (loopback, a LAN), where the buffer was full because a
/// burst queued behind a reader that had stalled, not because of the path. Growing there would
/// only hold more memory (tests/memory.rs's stalled reader beside a 1 GiB transfer). A sample
/// runs from the end of the one before (the first from its first acknowledgement): a small
/// buffer is often acknowledged whole by one acknowledgement, and a sample timed from its own
/// first acknowledgement would then always last no time at all.
struct Growth {
    max: usize,
    /// When this sample began.
    started: Option<Instant>,
    /// Pays for the kept bytes on a relay; None where growth costs no budget (a client's own
    /// streams, or a stream that keeps no bytes).
    reservation: Option<Reservation>,
    /// Bytes acknowledged in this sample, and how many of them while the buffer was full.
    acked: usize,
    acked_full: usize,
    /// A budget refused a growth before (logged only the first time).
    refused: bool,
}

/// What an acknowledgement did to the capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tuned {
    /// Doubled (or up to the maximum).
    Grew { from: usize, to: usize },
    /// The capacity was the limit, but a budget had no room for more.
    Refused { at: usize, budget: Exhausted },
}

impl OutBuf {
    fn end(&self) -> u64 {
        self.end
    }

    /// Bytes sent and not acknowledged.
    fn unacked(&self) -> usize {
        // Never more than the capacity (a usize): the uplink reads only into free room.
        usize::try_from(self.end - self.base).unwrap_or(usize::MAX)
    }

    /// Memory the unacknowledged bytes take (as many as they are, for a stream that keeps none).
    fn held(&self) -> usize {
        self.kept.as_ref().map_or(0, Kept::held).max(self.unacked())
    }

    /// What the uplink may read next: the capacity left after what is held.
    fn room(&self) -> usize {
        self.limit.saturating_sub(self.held())
    }

    /// Records `data` as sent (and keeps a copy, if this stream keeps bytes).
    fn push(&mut self, data: &[u8]) {
        let spare = self.room();
        self.end += data.len() as u64;
        if let Some(kept) = &mut self.kept {
            kept.push_copy(data, spare);
        }
    }

    /// Records a read, `buf[header..]`, as sent, and keeps it if this stream keeps bytes:
    /// where it is when it fills at least half of its buffer and that buffer fits in the room
    /// left (then `buf` is taken, and the frame to write is returned), else as a copy (the
    /// frame stays in `buf`).
    fn record_read(&mut self, buf: &mut BytesMut, header: usize) -> Option<bytes::Bytes> {
        let n = buf.len().saturating_sub(header);
        let room = self.room();
        let held = buf.capacity();
        if self.kept.is_none()
            || n < SHARE_MIN
            || n * 2 < held.saturating_sub(header)
            || held > room
        {
            self.push(buf.get(header..).unwrap_or_default());
            return None;
        }
        self.end += n as u64;
        let framed = std::mem::take(buf).freeze();
        if let Some(kept) = &mut self.kept {
            kept.push_shared(framed.slice(header..), held);
        }
        Some(framed)
    }

    /// What the peer has not acknowledged, to send again on a new channel: slices of the kept
    /// bytes, not a copy (see [`Kept::replay`]).
    fn replay(&mut self) -> Vec<bytes::Bytes> {
        self.kept.as_mut().map_or_else(Vec::new, Kept::replay)
    }

    /// [`Self::replay`] in one buffer.
    #[cfg(test)]
    fn pending(&mut self) -> Vec<u8> {
        self.replay().concat()
    }

    /// Drops what the peer has received; an offset past what was sent is a protocol error, one
    /// already acknowledged is old news (acknowledgements come two ways, see [`Sideband`]).
    /// Also the autotuning's clock (see [`Growth`]): says if the capacity changed.
    fn ack(&mut self, offset: u64) -> Result<Option<Tuned>, String> {
        self.ack_at(offset, Instant::now())
    }

    /// [`Self::ack`] at `now` (tests run the autotuning's clock themselves).
    fn ack_at(&mut self, offset: u64, now: Instant) -> Result<Option<Tuned>, String> {
        if offset <= self.base {
            return Ok(None);
        }
        let (n, full) = self.release(offset)?;
        Ok(self.tune(n, full, now))
    }

    /// Drops what the peer has received, without tuning: how many bytes, and whether the
    /// buffer was full.
    fn release(&mut self, offset: u64) -> Result<(usize, bool), String> {
        if offset < self.base || offset > self.end() {
            return Err(format!(
                "peer acknowledged offset {offset}, outside {}..={}",
                self.base,
                self.end()
            ));
        }
        let n = usize::try_from(offset - self.base).map_err(|e| e.to_string())?;
        let full = self.held() + PACKET > self.limit;
        if let Some(kept) = &mut self.kept {
            kept.release(n);
        }
        self.base = offset;
        Ok((n, full))
    }

    /// Counts `n` acknowledged bytes (`full`: they found the buffer full) at `now` and grows
    /// the capacity at the end of a sample that shows it was the limit.
    fn tune(&mut self, n: usize, full: bool, now: Instant) -> Option<Tuned> {
        let g = &mut self.growth;
        let started = *g.started.get_or_insert(now);
        g.acked += n;
        if full {
            g.acked_full += n;
        }
        if g.acked < self.limit {
            return None;
        }
        let limited =
            g.acked_full * 2 >= g.acked && now.saturating_duration_since(started) >= MIN_SAMPLE;
        (g.acked, g.acked_full, g.started) = (0, 0, Some(now));
        if !limited || self.limit >= g.max {
            return None;
        }
        let from = self.limit;
        let to = from.saturating_mul(2).min(g.max);
        // A stream that keeps no bytes costs nothing to grow.
        if let (Some(r), Some(_)) = (&mut g.reservation, &self.kept) {
            if let Err(budget) = r.grow((to - from) as u64) {
                return Some(Tuned::Refused { at: from, budget });
            }
        }
        self.limit = to;
        Some(Tuned::Grew { from, to })
    }
}

/// Whether a stream keeps what it sends until the peer acknowledges it.
#[derive(Debug)]
pub enum Replay {
    /// Kept, so the stream survives the loss of its channel; on the relay with the reservation
    /// that pays for the buffer, given back when the engine is dropped (the stream ended).
    Kept(Option<Reservation>),
    /// Not kept: the stream is carried like a plain forward and ends with its channel (a
    /// budget had no room for its buffer).
    Off,
}

/// A stream's acknowledgements on the session's control channel, besides those inside its own
/// channel: there they can wait behind data the other side cannot read until they arrive (see
/// [`super::control`]). Both carry absolute offsets, so whichever comes first counts.
pub struct Sideband {
    /// The stream's id, which names it on the control channel.
    pub id: u64,
    /// Where ours go.
    pub outbox: Arc<Outbox>,
    /// Where the peer's arrive.
    pub inbox: Arc<Inbox>,
}

/// The per-stream engine; lives as long as the stream, across attachments.
pub struct Engine {
    shared: Shared,
    ack_every: u64,
    sideband: Option<Sideband>,
    counters: Arc<Counters>,
    /// Counts growths (None: not counted), and names the stream in logs.
    stats: Option<Arc<ResumeStats>>,
    id: String,
    /// The channel packet size the peer announced for this session (see
    /// [`frame::send_data`]); read at each attachment, as a re-attach may be to a new session.
    peer_packet: Arc<AtomicUsize>,
}

impl Engine {
    /// The capacity of a stream configured with `buffer`: what its replay buffer can hold at
    /// most, and what it reserves.
    pub fn capacity_for(buffer: usize) -> usize {
        buffer.max(PACKET)
    }

    /// A stream with an empty history, with at most `capacity` unacknowledged bytes, kept for
    /// replay or not as `replay` says. Its capacity stays fixed; see [`Self::growing`].
    pub fn new(capacity: usize, counters: Arc<Counters>, replay: Replay) -> Self {
        let capacity = Self::capacity_for(capacity);
        let (kept, reservation) = match replay {
            Replay::Kept(r) => (Some(Kept::default()), r),
            Replay::Off => (None, None),
        };
        Self {
            shared: Shared {
                out: Mutex::new(OutBuf {
                    base: 0,
                    end: 0,
                    kept,
                    limit: capacity,
                    growth: Growth {
                        max: capacity,
                        started: None,
                        reservation,
                        acked: 0,
                        acked_full: 0,
                        refused: false,
                    },
                }),
                received: AtomicU64::new(0),
                acked: AtomicU64::new(0),
                posted: AtomicU64::new(0),
                peer_acked: AtomicU64::new(0),
                peer_fin: AtomicU64::new(u64::MAX),
                local_eof: AtomicBool::new(false),
                space: Notify::new(),
                ack_wanted: Notify::new(),
                ack_soon: Notify::new(),
                post_soon: Notify::new(),
                fin_sent: AtomicBool::new(false),
                mid_frame: AtomicBool::new(false),
            },
            ack_every: (capacity as u64 / 4).clamp(PACKET as u64, 256 * 1024),
            sideband: None,
            counters,
            stats: None,
            id: String::new(),
            peer_packet: Arc::new(AtomicUsize::new(PACKET)),
        }
    }

    /// Sizes DATA frames to fill the peer's channel packets, as `peer_packet` says at each
    /// attachment (without it: [`PACKET`]).
    pub fn framing_for(mut self, peer_packet: Arc<AtomicUsize>) -> Self {
        self.peer_packet = peer_packet;
        self
    }

    /// Acknowledges on the control channel too, and applies the peer's acknowledgements from
    /// it (see [`Sideband`]).
    pub fn with_sideband(mut self, sideband: Sideband) -> Self {
        self.sideband = Some(sideband);
        self
    }

    /// Lets the capacity grow up to `max` when it limits the stream (see [`Growth`]), counting
    /// growths in `stats`; `id` names the stream in logs.
    pub fn growing(mut self, max: usize, stats: Arc<ResumeStats>, id: &str) -> Self {
        let out = self.shared.out.get_mut().unwrap_or_else(|p| p.into_inner());
        out.growth.max = max.max(out.limit);
        self.stats = Some(stats);
        self.id = id.to_string();
        self
    }

    /// What the stream may have unacknowledged now (its initial capacity, or more once grown).
    pub fn capacity(&self) -> usize {
        self.out().limit
    }

    /// Bytes received from the peer so far (what a re-attach tells the peer).
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::SeqCst)
    }

    /// What the stream reports when it closes for `reason` (the pump contract, see
    /// [`crate::pipe`]): bytes sent from the local connection, and received from the peer.
    pub fn closed(&self, reason: CloseReason) -> Closed {
        let totals = Totals {
            a_to_b: self.out().end(),
            b_to_a: self.received(),
        };
        Closed { totals, reason }
    }

    /// Bytes waiting for acknowledgement (bounded by the capacity).
    pub fn buffered(&self) -> usize {
        self.out().unacked()
    }

    /// Whether the stream keeps its bytes for replay, i.e. can survive losing its channel.
    pub fn resumable(&self) -> bool {
        self.out().kept.is_some()
    }

    fn out(&self) -> std::sync::MutexGuard<'_, OutBuf> {
        self.shared.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Both directions ended and each side has every byte, as both sides see it from the
    /// channel alone. An acknowledgement from the control channel frees buffer space but does not
    /// count here: the peer may not have written its in-channel ACK yet, and a side that
    /// finished on the control channel's word would close the channel under that write, leaving
    /// the peer's stream waiting for a re-attach that never comes (the load test's 1000
    /// connections caught one such stream).
    fn done(&self) -> bool {
        let s = &self.shared;
        let received = s.received.load(Ordering::SeqCst);
        s.local_eof.load(Ordering::SeqCst)
            && s.fin_sent.load(Ordering::SeqCst)
            && s.peer_acked.load(Ordering::SeqCst) == self.out().end()
            && s.peer_fin.load(Ordering::SeqCst) == received
            && s.acked.load(Ordering::SeqCst) == received
    }

    /// Carries the stream over `att` until it is done, fails, or the channel goes away.
    pub async fn attach<L>(
        &self,
        local_r: &mut ReadHalf<L>,
        local_w: &mut WriteHalf<L>,
        att: Attachment,
    ) -> Outcome
    where
        L: tokio::io::AsyncRead + tokio::io::AsyncWrite,
    {
        let mut channel = att.channel;
        // The handshake told the peer our receive offset: that counts as acknowledged.
        self.shared.acked.store(self.received(), Ordering::SeqCst);
        self.shared
            .posted
            .fetch_max(self.received(), Ordering::SeqCst);
        self.shared.fin_sent.store(false, Ordering::SeqCst);
        self.shared.mid_frame.store(false, Ordering::SeqCst);
        if att.reply == ReplyStep::Owed {
            let reply = Reply::Ok {
                received: self.received(),
            };
            if channel.write_all(&reply.encode()).await.is_err() {
                return Outcome::Lost;
            }
        }
        {
            let mut out = self.out();
            if out.kept.is_none() && att.peer_received != out.end() {
                // Nothing to replay from: never attached again (see Registry::run).
                return Outcome::Aborted("the peer missed bytes of a stream without replay".into());
            }
            // Not a sample of the link (the bytes may have arrived long ago): no tuning.
            if let Err(e) = out.release(att.peer_received) {
                return Outcome::Aborted(e);
            }
        }
        self.shared
            .peer_acked
            .fetch_max(att.peer_received, Ordering::SeqCst);
        self.shared.space.notify_one();
        let send_data = frame::send_data(self.peer_packet.load(Ordering::Relaxed));
        let (mut ch_r, mut ch_w) = tokio::io::split(channel);
        let outcome = tokio::select! {
            o = self.uplink(local_r, &mut ch_w, send_data) => o,
            o = self.downlink(&mut ch_r, local_w, att.reply == ReplyStep::Due) => o,
            o = self.post_trailing_acks(), if self.sideband.is_some() => o,
        };
        if let Outcome::Aborted(why) = &outcome {
            // Only at a frame boundary; else the peer sees the channel end and asks again.
            if !why.starts_with(PEER_ABORT) && !self.shared.mid_frame.load(Ordering::SeqCst) {
                let abort = Frame::Abort.header();
                let _ = tokio::time::timeout(ABORT_TIMEOUT, ch_w.write_all(&abort)).await;
            }
        }
        outcome
    }

    /// Local connection -> channel: replays what the peer missed, then new bytes, FIN at the
    /// end, and acknowledgements. The only writer of the channel: the downlink never waits for
    /// it, so two peers can never wait on each other's full channels.
    async fn uplink<L, C>(
        &self,
        local_r: &mut ReadHalf<L>,
        ch: &mut WriteHalf<C>,
        send_data: usize,
    ) -> Outcome
    where
        L: tokio::io::AsyncRead,
        C: tokio::io::AsyncWrite,
    {
        let s = &self.shared;
        let (replay, end) = {
            let mut out = self.out();
            (out.replay(), out.end())
        };
        // Each piece goes as soon as it is sent: acknowledgements can free it meanwhile.
        for piece in replay {
            if self
                .frame(frame::write_data(ch, &piece, send_data))
                .await
                .is_err()
            {
                return Outcome::Lost;
            }
        }
        if s.local_eof.load(Ordering::SeqCst) && self.send_fin(ch, end).await.is_err() {
            return Outcome::Lost;
        }
        // Local bytes are read after room for an ACK and the frame header: the ACK (when one
        // is due), header and payload go out in one write, one channel packet. A large read is
        // kept for replay where it landed (see `super::kept`), so the next read gets a new
        // buffer, sized like the reads that came before: reads fill their buffers, and the
        // buffers a stream pins are little larger than what they hold.
        const PAYLOAD: usize = ACK_FRAME + DATA_HEADER;
        let mut buf = BytesMut::new();
        let mut read_size = send_data;
        let mut ack_at: Option<tokio::time::Instant> = None;
        loop {
            if self.done() {
                return Outcome::Done;
            }
            let reading = !s.local_eof.load(Ordering::SeqCst);
            // Never read more than fits: what the stream holds stays within its capacity.
            let room = self.out().room();
            let has_space = room > 0;
            let want = room.clamp(1, read_size);
            if reading && has_space {
                let size = PAYLOAD + want;
                if buf.capacity() < size || buf.capacity() > 2 * size {
                    buf = BytesMut::with_capacity(size);
                }
                buf.clear();
                buf.resize(PAYLOAD, 0);
            }
            let sent = tokio::select! {
                r = read_spare(local_r, &mut buf, want), if reading && has_space => match r {
                    Ok(0) => {
                        s.local_eof.store(true, Ordering::SeqCst);
                        let end = self.out().end();
                        self.send_fin(ch, end).await
                    }
                    Ok(n) => {
                        self.counters.count_a_to_b(n as u64);
                        read_size = next_read_size(read_size, want, n, send_data);
                        frame::put_data_header(&mut buf[ACK_FRAME..], n);
                        // A due ACK rides along while the packet has room for it (a full one
                        // would split in two); else the threshold or the tick sends it.
                        let ack = self.due_ack().filter(|_| ACK_FRAME + n <= send_data);
                        let start = match ack {
                            Some(offset) => {
                                frame::put_ack(&mut buf, offset);
                                0
                            }
                            None => ACK_FRAME,
                        };
                        // Into the replay buffer before any await: a cancelled attachment
                        // loses no byte.
                        let framed = self.out().record_read(&mut buf, PAYLOAD);
                        let frame = framed.as_deref().unwrap_or(&buf);
                        let sent = self.frame(ch.write_all(&frame[start..])).await;
                        if let (Ok(()), Some(offset)) = (&sent, ack) {
                            s.acked.fetch_max(offset, Ordering::SeqCst);
                        }
                        sent
                    }
                    Err(e) => return Outcome::Aborted(format!("local connection: {e}")),
                },
                () = s.space.notified(), if !has_space => Ok(()),
                () = sideband_offered(&self.sideband) => match self.apply_sideband_ack() {
                    Ok(()) => Ok(()),
                    Err(e) => return Outcome::Aborted(e),
                },
                () = s.ack_wanted.notified() => self.ack(ch).await,
                // Bytes arrived below the threshold: acknowledge them a little later, in one
                // ACK with whatever follows. An idle stream has no timer at all.
                () = s.ack_soon.notified(), if ack_at.is_none() => {
                    ack_at = Some(tokio::time::Instant::now() + ACK_TICK);
                    Ok(())
                }
                () = sleep_until(ack_at) => {
                    ack_at = None;
                    self.ack(ch).await
                }
            };
            if sent.is_err() {
                return Outcome::Lost;
            }
        }
    }

    /// Runs `write` (whole frames), marking the uplink as mid-frame meanwhile.
    async fn frame(
        &self,
        write: impl std::future::Future<Output = io::Result<()>>,
    ) -> io::Result<()> {
        self.shared.mid_frame.store(true, Ordering::SeqCst);
        let r = write.await;
        self.shared.mid_frame.store(false, Ordering::SeqCst);
        r
    }

    /// Sends FIN at `end`, behind the ACK that is due if any (one packet: a short
    /// connection's last ACK and its FIN travel together); only once it is out whole may the
    /// stream count as done.
    async fn send_fin<C: tokio::io::AsyncWrite>(
        &self,
        ch: &mut WriteHalf<C>,
        end: u64,
    ) -> io::Result<()> {
        let ack = self.due_ack();
        let mut frames = ack
            .map(|offset| Frame::Ack(offset).header())
            .unwrap_or_default();
        frames.extend_from_slice(&Frame::Fin(end).header());
        self.frame(ch.write_all(&frames)).await?;
        if let Some(offset) = ack {
            self.shared.acked.fetch_max(offset, Ordering::SeqCst);
        }
        self.shared.fin_sent.store(true, Ordering::SeqCst);
        // The peer's FIN may have come while ours was going out (it then asked only for the
        // tick): its ACK goes at once now. SeqCst pairs with the downlink's peer_fin/fin_sent.
        if self.shared.peer_fin.load(Ordering::SeqCst) != u64::MAX && self.due_ack().is_some() {
            self.shared.ack_wanted.notify_one();
        }
        Ok(())
    }

    /// What an ACK written now would say, when it would say something new.
    fn due_ack(&self) -> Option<u64> {
        let received = self.shared.received.load(Ordering::SeqCst);
        (received != self.shared.acked.load(Ordering::SeqCst)).then_some(received)
    }

    /// Channel -> local connection: payload written as it comes (counted byte by byte, so a
    /// cut channel never makes the peer resend what the application already has), ACK and FIN
    /// applied.
    async fn downlink<L, C>(
        &self,
        ch_r: &mut ReadHalf<C>,
        local_w: &mut WriteHalf<L>,
        reply_due: bool,
    ) -> Outcome
    where
        L: tokio::io::AsyncWrite,
        C: tokio::io::AsyncRead,
    {
        if reply_due {
            if let Some(refused) = read_new_stream_reply(ch_r).await {
                return refused;
            }
        }
        let s = &self.shared;
        // A frame's payload goes on in pieces of at most this: a peer's 128 KiB frames cost the
        // relay no more memory per stream than 32 KiB ones did.
        let mut buf: Vec<u8> = Vec::with_capacity(PACKET);
        loop {
            let frame = match frame::read_frame(ch_r).await {
                Ok(Some(f)) => f,
                Ok(None) => return Outcome::Lost,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    return Outcome::Aborted(e.to_string())
                }
                Err(_) => return Outcome::Lost,
            };
            match frame {
                Frame::Data(len) => {
                    if s.peer_fin.load(Ordering::SeqCst) != u64::MAX {
                        return Outcome::Aborted("DATA after FIN".into());
                    }
                    let mut left = len as usize;
                    while left > 0 {
                        let piece = left.min(PACKET);
                        buf.clear();
                        if read_exact_spare(ch_r, &mut buf, piece).await.is_err() {
                            return Outcome::Lost;
                        }
                        if let Err(e) = self.deliver(local_w, &buf).await {
                            return Outcome::Aborted(format!("local connection: {e}"));
                        }
                        left -= piece;
                    }
                    let received = s.received.load(Ordering::SeqCst);
                    if received - s.posted.load(Ordering::SeqCst) >= self.ack_every {
                        self.post_ack(received);
                    }
                    let unacked = received - s.acked.load(Ordering::SeqCst);
                    if unacked >= self.ack_every {
                        s.ack_wanted.notify_one();
                    } else {
                        s.ack_soon.notify_one();
                    }
                }
                Frame::Ack(offset) => {
                    if let Err(e) = self.apply_ack(offset) {
                        return Outcome::Aborted(e);
                    }
                    s.peer_acked.fetch_max(offset, Ordering::SeqCst);
                    s.space.notify_one();
                }
                Frame::Fin(offset) => {
                    let received = s.received.load(Ordering::SeqCst);
                    if offset != received {
                        return Outcome::Aborted(format!(
                            "FIN at {offset} but {received} bytes received"
                        ));
                    }
                    if s.peer_fin.swap(offset, Ordering::SeqCst) == u64::MAX {
                        let _ = local_w.shutdown().await;
                    }
                    // Acknowledge the rest: in front of our own FIN when that is still to
                    // come (the local connection usually ends right after the peer's), at
                    // once when ours is already out.
                    if s.fin_sent.load(Ordering::SeqCst) {
                        s.ack_wanted.notify_one();
                    } else {
                        s.ack_soon.notify_one();
                    }
                }
                Frame::Abort => return Outcome::Aborted(format!("{PEER_ABORT} failed")),
            }
            if self.done() {
                return Outcome::Done;
            }
        }
    }

    /// Acknowledges on the control channel, within [`ACK_TICK`], bytes delivered below the
    /// threshold. Beside the downlink, not in it: the downlink may be waiting for the local
    /// connection or the channel indefinitely, and the peer may be waiting for exactly these
    /// bytes' acknowledgement (its buffer may be smaller than our threshold). Never ends.
    async fn post_trailing_acks(&self) -> Outcome {
        let s = &self.shared;
        loop {
            s.post_soon.notified().await;
            tokio::time::sleep(ACK_TICK).await;
            let received = s.received.load(Ordering::SeqCst);
            if received > s.posted.load(Ordering::SeqCst) {
                self.post_ack(received);
            }
        }
    }

    /// Acknowledges `received` on the control channel (nothing without a sideband).
    fn post_ack(&self, received: u64) {
        if let Some(sb) = &self.sideband {
            sb.outbox.post(sb.id, received);
            self.shared.posted.fetch_max(received, Ordering::SeqCst);
        }
    }

    /// Applies the peer's newest acknowledgement from the control channel (see
    /// [`Self::apply_ack`]).
    fn apply_sideband_ack(&self) -> Result<(), String> {
        match &self.sideband {
            Some(sb) => self.apply_ack(sb.inbox.offset()),
            None => Ok(()),
        }
    }

    /// Frees what the peer acknowledged, from either path, and counts any change of the
    /// capacity; an offset past what was sent is a protocol error.
    fn apply_ack(&self, offset: u64) -> Result<(), String> {
        let tuned = self.out().ack(offset)?;
        if let Some(t) = tuned {
            self.tuned(t);
        }
        Ok(())
    }

    /// Counts and logs a change of the capacity.
    fn tuned(&self, t: Tuned) {
        let Some(stats) = &self.stats else { return };
        match t {
            Tuned::Grew { from, to } => {
                stats.grown.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(stream = self.id, from, to, "replay buffer grew");
            }
            Tuned::Refused { at, budget } => {
                stats.growth_refused.fetch_add(1, Ordering::Relaxed);
                let mut out = self.out();
                if !std::mem::replace(&mut out.growth.refused, true) {
                    drop(out);
                    tracing::info!(
                        stream = self.id,
                        buffer = at,
                        budget = super::budget_setting(budget),
                        "replay buffer limits this stream but its budget has no room to grow it"
                    );
                }
            }
        }
    }

    /// Writes `payload` to the local connection, counting each partial write as received.
    async fn deliver<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        local_w: &mut W,
        payload: &[u8],
    ) -> io::Result<()> {
        let mut off = 0;
        while off < payload.len() {
            let n = local_w.write(&payload[off..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            off += n;
            self.shared.received.fetch_add(n as u64, Ordering::SeqCst);
            self.shared.post_soon.notify_one();
            self.counters.count_b_to_a(n as u64);
        }
        local_w.flush().await
    }

    /// Acknowledges everything received so far, if anything is new.
    async fn ack<C: tokio::io::AsyncWrite>(&self, ch: &mut WriteHalf<C>) -> io::Result<()> {
        let Some(received) = self.due_ack() else {
            return Ok(());
        };
        ch.write_all(&Frame::Ack(received).header()).await?;
        self.shared.acked.fetch_max(received, Ordering::SeqCst);
        Ok(())
    }
}

/// The uplink's next read buffer, after a read of `n` into one for `want` bytes of at most
/// `max`: twice as large after a read that filled it, the read's size (in whole 4 KiB) after
/// one that filled less than half of it.
fn next_read_size(size: usize, want: usize, n: usize, max: usize) -> usize {
    if n >= want && want == size {
        size.saturating_mul(2).min(max)
    } else if n * 2 < want {
        n.next_multiple_of(4096).clamp(SHARE_MIN, max)
    } else {
        size
    }
}

/// Reads at most `max` (at least 1) bytes into `buf`'s spare capacity; 0 means EOF. Unlike
/// reading into a zeroed buffer, this writes only where data lands: a stream's two buffers
/// (32 KiB to receive, one frame to send) are not touched until used, and nothing is zeroed
/// per stream (see `pipe::copy_half`). Cancel-safe, as `read_buf` is.
async fn read_spare<R, B>(r: &mut R, buf: &mut B, max: usize) -> io::Result<usize>
where
    R: tokio::io::AsyncRead + Unpin,
    B: BufMut,
{
    debug_assert!(max > 0, "a read of 0 bytes would look like EOF");
    r.read_buf(&mut (&mut *buf).limit(max)).await
}

/// Appends exactly `len` bytes to `buf`, read through its spare capacity; EOF first is
/// `UnexpectedEof`, as from `read_exact`. The caller gives `buf` room for them; a full `Vec`
/// would grow (reallocate) to take them.
async fn read_exact_spare<R>(r: &mut R, buf: &mut Vec<u8>, len: usize) -> io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let end = buf.len() + len;
    while buf.len() < end {
        if read_spare(r, buf, end - buf.len()).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer of `limit` that may grow to `max`, keeping bytes or not, paid by `reservation`.
    fn outbuf(limit: usize, max: usize, kept: bool, reservation: Option<Reservation>) -> OutBuf {
        OutBuf {
            base: 0,
            end: 0,
            kept: kept.then(Kept::default),
            limit,
            growth: Growth {
                max,
                started: None,
                reservation,
                acked: 0,
                acked_full: 0,
                refused: false,
            },
        }
    }

    /// A frame's payload may arrive a byte at a time, and the next frame's bytes right behind
    /// it: the spare-capacity reads take exactly what was asked, append after what is there,
    /// and name a stream that ends early.
    #[tokio::test]
    async fn spare_capacity_reads_take_exactly_what_was_asked() {
        let mut r = (&b"ab"[..]).chain(&b"c"[..]).chain(&b"defgh"[..]);
        let mut buf = Vec::with_capacity(PACKET);
        buf.extend_from_slice(b"hdr");
        read_exact_spare(&mut r, &mut buf, 4).await.unwrap();
        assert_eq!(buf, b"hdrabcd", "three reads, none past the 4 asked for");
        let n = read_spare(&mut r, &mut buf, 2).await.unwrap();
        assert_eq!((n, &buf[..]), (2, &b"hdrabcdef"[..]));
        let short = read_exact_spare(&mut r, &mut buf, 5).await.unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(buf, b"hdrabcdefgh", "what came before the end is kept");
    }

    /// The autotuning's clock in tests: every acknowledgement comes `gap` after the one before.
    struct Clock {
        now: Instant,
        gap: Duration,
    }

    impl Clock {
        /// Acknowledgements 20 ms apart: a 256 KiB buffer acknowledged in 64 KiB steps takes
        /// 80 ms per sample, a long round trip.
        fn slow() -> Clock {
            Clock::every(Duration::from_millis(20))
        }

        fn every(gap: Duration) -> Clock {
            Clock {
                now: Instant::now(),
                gap,
            }
        }

        fn tick(&mut self) -> Instant {
            self.now += self.gap;
            self.now
        }
    }

    /// Fills `out` to its limit, then acknowledges `step` bytes at the clock's next tick: the
    /// pattern of a stream whose buffer is its limit (the uplink refills whatever an ACK frees).
    /// What changed, if anything.
    fn full_round(out: &mut OutBuf, step: usize, clock: &mut Clock) -> Option<Tuned> {
        let chunk = vec![1u8; PACKET];
        while out.unacked() < out.limit {
            let n = (out.limit - out.unacked()).min(PACKET);
            out.push(&chunk[..n]);
        }
        let to = out.base + step as u64;
        out.ack_at(to, clock.tick()).unwrap()
    }

    #[test]
    fn a_full_buffer_whose_acks_keep_coming_doubles_up_to_its_maximum() {
        let mut out = outbuf(256 << 10, 1 << 20, true, None);
        let mut clock = Clock::slow();
        let mut grew = Vec::new();
        for _ in 0..200 {
            if let Some(t) = full_round(&mut out, 64 << 10, &mut clock) {
                grew.push(t);
            }
            let held = out.held();
            assert!(held <= out.limit, "held {held} past {}", out.limit);
        }
        assert_eq!(
            grew,
            [
                Tuned::Grew {
                    from: 256 << 10,
                    to: 512 << 10
                },
                Tuned::Grew {
                    from: 512 << 10,
                    to: 1 << 20
                },
            ],
            "one doubling per buffer's worth of acknowledgements, then the maximum holds"
        );
        assert_eq!(out.limit, 1 << 20);
    }

    /// A full buffer whose acknowledgements come back fast is on a short path (loopback, a
    /// LAN) behind a reader that stalled: growing would only hold more memory.
    #[test]
    fn a_full_buffer_acknowledged_faster_than_the_shortest_sample_never_grows() {
        let mut out = outbuf(256 << 10, 1 << 20, true, None);
        // 4 ms per 256 KiB sample.
        let mut clock = Clock::every(Duration::from_millis(1));
        for _ in 0..200 {
            assert_eq!(full_round(&mut out, 64 << 10, &mut clock), None);
        }
        assert_eq!(out.limit, 256 << 10);
    }

    /// A buffer small enough that one acknowledgement frees it whole (a relay's 64 KiB against
    /// a peer that acknowledges every 256 KiB or 50 ms) still grows over a long round trip:
    /// its samples are timed from the one before, not from their only acknowledgement.
    #[test]
    fn a_buffer_acknowledged_whole_each_round_trip_grows() {
        let mut out = outbuf(64 << 10, 256 << 10, true, None);
        let mut clock = Clock::every(Duration::from_millis(80));
        let mut grew = Vec::new();
        for _ in 0..10 {
            let step = out.limit;
            grew.extend(full_round(&mut out, step, &mut clock));
        }
        assert_eq!(
            grew,
            [
                Tuned::Grew {
                    from: 64 << 10,
                    to: 128 << 10
                },
                Tuned::Grew {
                    from: 128 << 10,
                    to: 256 << 10
                },
            ]
        );
    }

    #[test]
    fn a_buffer_that_is_not_full_when_acks_come_never_grows() {
        // Limited elsewhere (channel, link, local source): never more than half the buffer out.
        let mut out = outbuf(256 << 10, 32 << 20, true, None);
        let mut clock = Clock::slow();
        let chunk = vec![1u8; PACKET];
        for _ in 0..1000 {
            for _ in 0..4 {
                out.push(&chunk);
            }
            assert_eq!(out.ack_at(out.end(), clock.tick()).unwrap(), None);
        }
        assert_eq!(out.limit, 256 << 10);
        // And no acknowledgement at all (an unread stream): full, but nothing to count.
        assert_eq!(full_round(&mut out, 0, &mut clock), None);
        assert_eq!(out.limit, 256 << 10);
    }

    #[test]
    fn growth_stops_at_the_key_budget_and_the_stream_runs_on() {
        use crate::budget::{Budget, Budgets};
        // Room for the initial 256 KiB and one doubling (512 KiB), not for 1 MiB.
        let budgets = Budgets {
            key: Arc::new(Budget::new(768 << 10)),
            relay: Arc::new(Budget::new(64 << 20)),
        };
        let r = budgets.reserve(256 << 10).unwrap();
        let mut out = outbuf(256 << 10, 32 << 20, true, Some(r));
        let mut clock = Clock::slow();
        let mut events = Vec::new();
        for _ in 0..200 {
            if let Some(t) = full_round(&mut out, 64 << 10, &mut clock) {
                events.push(t);
            }
        }
        assert_eq!(
            events[0],
            Tuned::Grew {
                from: 256 << 10,
                to: 512 << 10
            }
        );
        assert!(
            events[1..].iter().all(|t| *t
                == Tuned::Refused {
                    at: 512 << 10,
                    budget: Exhausted::Key
                }),
            "{events:?}"
        );
        assert!(
            events.len() > 2,
            "asked again later, refused again: {events:?}"
        );
        assert_eq!(out.limit, 512 << 10, "kept its size, still carrying");
        assert_eq!(
            (budgets.key.used(), budgets.relay.used()),
            (512 << 10, 512 << 10),
            "exactly what the buffer may hold is reserved"
        );
        drop(out);
        assert_eq!((budgets.key.used(), budgets.relay.used()), (0, 0));

        // A stream carried without a replay buffer keeps no bytes: it grows without a budget.
        let mut off = outbuf(256 << 10, 1 << 20, false, None);
        for _ in 0..200 {
            full_round(&mut off, 64 << 10, &mut clock);
        }
        assert_eq!(off.limit, 1 << 20);
    }

    #[test]
    fn read_buffers_follow_the_reads() {
        let max = frame::send_data(frame::MAX_DATA);
        // 64 KiB reads into a buffer for 128 KiB: the next buffers are 64 KiB, and stay.
        assert_eq!(next_read_size(max, max, 65_483, max), 65_536);
        assert_eq!(next_read_size(65_536, 65_536, 65_483, max), 65_536);
        // Filled: doubles, up to the most a frame carries.
        assert_eq!(next_read_size(65_536, 65_536, 65_536, max), max);
        assert_eq!(next_read_size(max, max, max, max), max);
        // A byte at a time: the smallest buffer, which grows again as reads fill it.
        assert_eq!(next_read_size(max, max, 1, max), SHARE_MIN);
        assert_eq!(
            next_read_size(SHARE_MIN, SHARE_MIN, SHARE_MIN, max),
            2 * SHARE_MIN
        );
        // Less room than the buffer: the size stays.
        assert_eq!(next_read_size(65_536, 1000, 1000, max), 65_536);
    }

    #[test]
    fn the_replay_buffer_never_allocates_past_its_capacity() {
        // 3000 KiB is no power of two; reads of every size, kept in place or copied, fill it
        // the uplink's way: a buffer for what the room allows, a read of some of it.
        const HEADER: usize = ACK_FRAME + DATA_HEADER;
        let limit = 3000 * 1024;
        let mut out = outbuf(limit, limit, true, None);
        let mut sent: Vec<u8> = Vec::new();
        let mut most = 0;
        let mut i = 0usize;
        for round in 0..3u64 {
            while out.room() > 0 {
                let want = out.room().clamp(1, frame::MAX_DATA);
                let n = [want, want / 2 + 1, 3000, 1, want / 3][i % 5].clamp(1, want);
                let mut buf = BytesMut::with_capacity(HEADER + want);
                buf.resize(HEADER, 0);
                buf.extend((0..n).map(|k| ((i + k) % 251) as u8));
                sent.extend_from_slice(&buf[HEADER..]);
                let framed = out.record_read(&mut buf, HEADER);
                let frame = framed.as_deref().unwrap_or(&buf);
                assert_eq!(
                    &frame[HEADER..],
                    &sent[sent.len() - n..],
                    "the frame is the read"
                );
                most = most.max(out.held());
                i += 1;
            }
            assert!(out.held() <= limit, "round {round}: {} held", out.held());
            out.ack(out.end() - 1000).unwrap();
            assert_eq!(out.pending(), sent[sent.len() - 1000..], "round {round}");
        }
        assert!(
            most <= limit,
            "held {most} for a limit of {limit} on the way"
        );
        let chunk = vec![7u8; PACKET];
        let mut off = outbuf(limit, limit, false, None);
        off.push(&chunk);
        assert_eq!(
            (off.unacked(), off.pending().len()),
            (PACKET, 0),
            "counted, not kept"
        );
        off.ack(PACKET as u64).unwrap();
        assert_eq!(off.unacked(), 0);
    }

    #[tokio::test]
    async fn both_carriers_report_the_same_close_for_a_half_closed_exchange() {
        use crate::pipe::pipe;
        use crate::pipe::tests::half_closed_exchange;
        use tokio::io::duplex;

        // Plain: app <-> pipe(local, channel) <-> server.
        let (app, local) = duplex(1024);
        let (channel, server) = duplex(1024);
        let plain = tokio::spawn(pipe(local, channel, Arc::new(Counters::default())));
        half_closed_exchange(app, server).await;
        let plain = plain.await.unwrap();

        // Resumable: app <-> engine (near) <-> channel <-> engine (far) <-> server.
        let (app, local) = duplex(1024);
        let (far_local, server) = duplex(1024);
        let (near_ch, far_ch) = duplex(64 * 1024);
        let carry = |local: tokio::io::DuplexStream, channel: tokio::io::DuplexStream| async move {
            let engine = Engine::new(0, Arc::new(Counters::default()), Replay::Kept(None));
            let (mut r, mut w) = tokio::io::split(local);
            let att = Attachment {
                channel: Box::new(channel),
                peer_received: 0,
                reply: ReplyStep::Settled,
            };
            assert_eq!(engine.attach(&mut r, &mut w, att).await, Outcome::Done);
            engine.closed(CloseReason::Done)
        };
        let near = tokio::spawn(carry(local, near_ch));
        let far = tokio::spawn(carry(far_local, far_ch));
        half_closed_exchange(app, server).await;
        let resumable = near.await.unwrap();

        assert_eq!(plain.reason, CloseReason::Done);
        assert_eq!((plain.totals.a_to_b, plain.totals.b_to_a), (7, 5));
        assert_eq!(resumable, plain, "the near end of a resumable stream");
        let far = far.await.unwrap().totals;
        assert_eq!((far.a_to_b, far.b_to_a), (5, 7), "the far end, mirrored");
    }

    /// Bulk bytes go out in DATA frames that fill the packets the peer announced: 32 KiB for
    /// OpenSSH's and russh's default (and older burrows, which accept no more), 128 KiB for a
    /// relay that announces it; never more than a burrow accepts.
    #[tokio::test]
    async fn frames_fill_the_packets_the_peer_announced() {
        const BULK: usize = 600 * 1024;
        for (announced, payload) in [
            (None, PACKET - DATA_HEADER),
            (Some(PACKET), PACKET - DATA_HEADER),
            (Some(frame::RELAY_PACKET), frame::RELAY_PACKET - DATA_HEADER),
            (Some(usize::MAX), frame::MAX_DATA - DATA_HEADER),
        ] {
            let mut engine = Engine::new(1 << 20, Arc::new(Counters::default()), Replay::Off);
            if let Some(bytes) = announced {
                engine = engine.framing_for(Arc::new(AtomicUsize::new(bytes)));
            }
            let (mut app, local) = tokio::io::duplex(BULK);
            let (near, mut peer) = tokio::io::duplex(2 * BULK);
            // All of it is waiting before the stream starts, so each read can fill a frame.
            let bulk: Vec<u8> = (0..BULK).map(|i| i as u8).collect();
            app.write_all(&bulk).await.unwrap();
            let stream = attach_in_task(engine, local, near);
            let mut sizes = Vec::new();
            let mut got = Vec::new();
            while got.len() < BULK {
                match frame::read_frame(&mut peer).await.unwrap() {
                    Some(Frame::Data(len)) => {
                        let mut chunk = vec![0u8; len as usize];
                        peer.read_exact(&mut chunk).await.unwrap();
                        sizes.push(chunk.len());
                        got.extend(chunk);
                    }
                    other => panic!("{other:?} before all bulk bytes"),
                }
            }
            assert_eq!(got, bulk, "announced {announced:?}");
            let (last, full) = sizes.split_last().unwrap();
            assert!(
                full.iter().all(|&n| n == payload) && *last <= payload,
                "announced {announced:?}: frames of {sizes:?}, want {payload}"
            );
            stream.abort();
        }
    }

    /// `engine` attached to a channel of `capacity` bytes whose far end the test plays as the
    /// peer, frame by frame: (the local application's end, the peer's end, the attachment).
    fn scripted(
        engine: Engine,
        capacity: usize,
    ) -> (
        tokio::io::DuplexStream,
        tokio::io::DuplexStream,
        tokio::task::JoinHandle<Outcome>,
    ) {
        let (app, local) = tokio::io::duplex(1024);
        let (near, peer) = tokio::io::duplex(capacity);
        (app, peer, attach_in_task(engine, local, near))
    }

    /// `engine`'s first attachment, between `local` and the channel `near`, in a task.
    fn attach_in_task(
        engine: Engine,
        local: tokio::io::DuplexStream,
        near: tokio::io::DuplexStream,
    ) -> tokio::task::JoinHandle<Outcome> {
        tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(local);
            let att = Attachment {
                channel: Box::new(near),
                peer_received: 0,
                reply: ReplyStep::Settled,
            };
            engine.attach(&mut r, &mut w, att).await
        })
    }

    /// A request and its answer: the ACK of the request rides in front of the answer, and the
    /// ACK of the last bytes in front of the FIN, so a short connection sends no ACK packet of
    /// its own (each one cost a channel packet, encryption and wake-ups at both ends).
    #[tokio::test(start_paused = true)]
    async fn a_short_exchange_sends_its_acks_with_its_data_and_fin() {
        let engine = Engine::new(0, Arc::new(Counters::default()), Replay::Kept(None));
        let (mut app, mut peer, stream) = scripted(engine, 64 * 1024);
        let data = |payload: &[u8]| [&Frame::Data(payload.len() as u32).header(), payload].concat();
        peer.write_all(&data(b"abc")).await.unwrap();
        let mut got = [0u8; 3];
        app.read_exact(&mut got).await.unwrap();
        app.write_all(b"xyz").await.unwrap();
        let mut answer = vec![0u8; ACK_FRAME + DATA_HEADER + 3];
        peer.read_exact(&mut answer).await.unwrap();
        assert_eq!(
            answer,
            [Frame::Ack(3).header(), data(b"xyz")].concat(),
            "ACK before the answer"
        );

        let last = [data(b"hi"), Frame::Fin(5).header(), Frame::Ack(3).header()].concat();
        peer.write_all(&last).await.unwrap();
        let mut rest = Vec::new();
        app.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"hi");
        // Time for a separate ACK to go out, if one were sent before the FIN.
        tokio::time::sleep(Duration::from_millis(10)).await;
        app.shutdown().await.unwrap();
        let mut end = vec![0u8; 64];
        let n = peer.read(&mut end).await.unwrap();
        assert_eq!(
            end[..n],
            [Frame::Ack(5).header(), Frame::Fin(3).header()].concat(),
            "one write: the last ACK, then FIN"
        );
        let outcome = tokio::time::timeout(Duration::from_secs(5), stream).await;
        assert_eq!(outcome.expect("done").unwrap(), Outcome::Done);
    }

    /// Our FIN waits behind a full channel while the peer's last DATA and FIN arrive (our FIN
    /// is not out yet, so they ask only for the tick): once our FIN is out, the ACK of theirs
    /// goes at once, since no FIN of ours is left to carry it (attack review of the ride-along
    /// ACKs: it waited for the 50 ms tick).
    #[tokio::test(start_paused = true)]
    async fn the_ack_of_a_fin_that_came_while_ours_was_blocked_goes_at_once() {
        let engine = Engine::new(0, Arc::new(Counters::default()), Replay::Kept(None));
        let (mut app, mut peer, stream) = scripted(engine, 16);
        // DATA(11) fills the 16-byte channel: our FIN waits behind it.
        app.write_all(&[b'x'; 11]).await.unwrap();
        app.shutdown().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let data = |payload: &[u8]| [&Frame::Data(payload.len() as u32).header(), payload].concat();
        peer.write_all(&[data(b"y"), Frame::Fin(1).header()].concat())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut ours = vec![0u8; DATA_HEADER + 11 + ACK_FRAME];
        peer.read_exact(&mut ours).await.unwrap();
        assert_eq!(ours[DATA_HEADER + 11..], Frame::Fin(11).header()[..]);
        peer.write_all(&Frame::Ack(11).header()).await.unwrap();
        let ack =
            tokio::time::timeout(Duration::from_millis(10), frame::read_frame(&mut peer)).await;
        assert_eq!(
            ack.expect("the ACK of the peer's FIN waited for the tick")
                .unwrap(),
            Some(Frame::Ack(1))
        );
        let outcome = tokio::time::timeout(Duration::from_secs(5), stream).await;
        assert_eq!(outcome.expect("done").unwrap(), Outcome::Done);
    }

    /// An acknowledgement from the control channel frees buffer space but does not end the
    /// stream: the peer may still have its in-channel ACK to write, and closing the channel
    /// under that write left the peer's end waiting for a re-attach (the load test's 1000
    /// connections caught one). Here the peer has sent FIN and acknowledged everything on the
    /// control channel only: the stream ends once the in-channel ACK comes, not before.
    #[tokio::test]
    async fn only_an_in_channel_ack_completes_a_stream() {
        let inbox = Arc::new(Inbox::default());
        let sideband = Sideband {
            id: 7,
            outbox: Arc::default(),
            inbox: inbox.clone(),
        };
        let engine = Engine::new(0, Arc::new(Counters::default()), Replay::Kept(None))
            .with_sideband(sideband);
        let (mut app, mut peer, stream) = scripted(engine, 64 * 1024);
        app.write_all(b"hello").await.unwrap();
        app.shutdown().await.unwrap();
        // The peer reads DATA(5) and FIN(5), ends its own side (FIN at 0) and acknowledges
        // the 5 bytes on the control channel only.
        assert_eq!(
            frame::read_frame(&mut peer).await.unwrap(),
            Some(Frame::Data(5))
        );
        let mut payload = [0u8; 5];
        peer.read_exact(&mut payload).await.unwrap();
        assert_eq!(
            frame::read_frame(&mut peer).await.unwrap(),
            Some(Frame::Fin(5))
        );
        peer.write_all(&Frame::Fin(0).header()).await.unwrap();
        inbox.offer(5);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !stream.is_finished(),
            "ended on the control channel's acknowledgement alone"
        );
        peer.write_all(&Frame::Ack(5).header()).await.unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(5), stream)
            .await
            .expect("ends once the in-channel ACK came")
            .unwrap();
        assert_eq!(outcome, Outcome::Done);
    }
}
