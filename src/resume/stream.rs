//! One resumable stream: a local connection (the application's, or the target's) that outlives
//! the SSH channels carrying it. Bytes sent stay in a bounded replay buffer until the peer
//! acknowledges them; after a new channel is attached both sides replay exactly what the other
//! has not received. The two directions run independently, so a slow local reader never
//! blocks the other direction.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Notify;

use super::budget::Reservation;
use super::frame::{self, Frame, Reply, MAX_DATA};
use super::BoxedIo;
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

/// How an abort that came from the peer reads (no ABORT is sent back for it).
const PEER_ABORT: &str = "the peer's connection";

/// How often received bytes are acknowledged when fewer than the threshold arrived.
const ACK_TICK: Duration = Duration::from_millis(50);

/// A channel ready to carry the stream, and the peer's receive offset to replay from.
pub struct Attachment {
    /// The channel after the hello (and, for an attach we received, before our reply).
    pub channel: BoxedIo,
    /// Bytes of ours the peer has received.
    pub peer_received: u64,
    /// We still owe the peer a [`Reply`] (an attach it opened): sent once the previous
    /// attachment is over, so the offset in it is final.
    pub reply_owed: bool,
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
}

/// State both directions share.
struct Shared {
    /// Sent bytes not yet acknowledged; `base` is the offset of its first byte.
    out: Mutex<OutBuf>,
    /// Bytes received from the peer and written to the local connection.
    received: AtomicU64,
    /// The highest offset we acknowledged.
    acked: AtomicU64,
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
    /// Grown as needed (doubling) but never allocated past `limit`, the stream's capacity, and
    /// never filled past it: a stream's replay buffer costs at most what it reserved (see
    /// [`super::budget`]), and a stream that never has much unacknowledged costs little. None
    /// for a stream carried without a replay buffer.
    kept: Option<VecDeque<u8>>,
    limit: usize,
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

    /// Records `data` as sent (and keeps it, if this stream keeps bytes).
    fn push(&mut self, data: &[u8]) {
        self.end += data.len() as u64;
        if let Some(kept) = &mut self.kept {
            let need = kept.len() + data.len();
            if need > kept.capacity() {
                // VecDeque's own growth could double past the limit: grow to at most the limit.
                let target = (kept.capacity() * 2).clamp(need, self.limit.max(need));
                kept.reserve_exact(target - kept.len());
            }
            kept.extend(data);
        }
    }

    /// What the peer has not acknowledged, to send again on a new channel.
    fn pending(&self) -> Vec<u8> {
        match &self.kept {
            Some(kept) => {
                let (a, b) = kept.as_slices();
                [a, b].concat()
            }
            None => Vec::new(),
        }
    }

    /// Drops what the peer has received; an offset outside what was sent is a protocol error.
    fn ack(&mut self, offset: u64) -> Result<(), String> {
        if offset < self.base || offset > self.end() {
            return Err(format!(
                "peer acknowledged offset {offset}, outside {}..={}",
                self.base,
                self.end()
            ));
        }
        let n = usize::try_from(offset - self.base).map_err(|e| e.to_string())?;
        if let Some(kept) = &mut self.kept {
            kept.drain(..n);
        }
        self.base = offset;
        Ok(())
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

/// The per-stream engine; lives as long as the stream, across attachments.
pub struct Engine {
    shared: Shared,
    capacity: usize,
    /// Held for as long as the stream lives: what its replay buffer reserved.
    _reservation: Option<Reservation>,
    ack_every: u64,
    counters: Arc<Counters>,
}

impl Engine {
    /// The capacity of a stream configured with `buffer`: what its replay buffer can hold at
    /// most, and what it reserves.
    pub fn capacity_for(buffer: usize) -> usize {
        buffer.max(MAX_DATA)
    }

    /// A stream with an empty history, with at most `capacity` unacknowledged bytes, kept for
    /// replay or not as `replay` says.
    pub fn new(capacity: usize, counters: Arc<Counters>, replay: Replay) -> Self {
        let capacity = Self::capacity_for(capacity);
        let (kept, reservation) = match replay {
            Replay::Kept(r) => (Some(VecDeque::new()), r),
            Replay::Off => (None, None),
        };
        Self {
            shared: Shared {
                out: Mutex::new(OutBuf {
                    base: 0,
                    end: 0,
                    kept,
                    limit: capacity,
                }),
                received: AtomicU64::new(0),
                acked: AtomicU64::new(0),
                peer_fin: AtomicU64::new(u64::MAX),
                local_eof: AtomicBool::new(false),
                space: Notify::new(),
                ack_wanted: Notify::new(),
                ack_soon: Notify::new(),
                fin_sent: AtomicBool::new(false),
                mid_frame: AtomicBool::new(false),
            },
            capacity,
            _reservation: reservation,
            ack_every: (capacity as u64 / 4).clamp(MAX_DATA as u64, 256 * 1024),
            counters,
        }
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

    fn done(&self) -> bool {
        let s = &self.shared;
        let received = s.received.load(Ordering::SeqCst);
        s.local_eof.load(Ordering::SeqCst)
            && s.fin_sent.load(Ordering::SeqCst)
            && self.out().unacked() == 0
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
        self.shared.fin_sent.store(false, Ordering::SeqCst);
        self.shared.mid_frame.store(false, Ordering::SeqCst);
        if att.reply_owed {
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
            if let Err(e) = out.ack(att.peer_received) {
                return Outcome::Aborted(e);
            }
        }
        self.shared.space.notify_one();
        let (mut ch_r, mut ch_w) = tokio::io::split(channel);
        let outcome = tokio::select! {
            o = self.uplink(local_r, &mut ch_w) => o,
            o = self.downlink(&mut ch_r, local_w) => o,
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
    async fn uplink<L, C>(&self, local_r: &mut ReadHalf<L>, ch: &mut WriteHalf<C>) -> Outcome
    where
        L: tokio::io::AsyncRead,
        C: tokio::io::AsyncWrite,
    {
        let s = &self.shared;
        let (pending, end) = {
            let out = self.out();
            (out.pending(), out.end())
        };
        if self.frame(frame::write_data(ch, &pending)).await.is_err() {
            return Outcome::Lost;
        }
        if s.local_eof.load(Ordering::SeqCst) && self.send_fin(ch, end).await.is_err() {
            return Outcome::Lost;
        }
        let mut buf = vec![0u8; MAX_DATA];
        let mut ack_at: Option<tokio::time::Instant> = None;
        loop {
            if self.done() {
                return Outcome::Done;
            }
            let reading = !s.local_eof.load(Ordering::SeqCst);
            // Never read more than fits: the buffer stays within its capacity (and allocation).
            let room = self.capacity.saturating_sub(self.out().unacked());
            let has_space = room > 0;
            let sent = tokio::select! {
                r = local_r.read(&mut buf[..room.clamp(1, MAX_DATA)]), if reading && has_space => match r {
                    Ok(0) => {
                        s.local_eof.store(true, Ordering::SeqCst);
                        let end = self.out().end();
                        self.send_fin(ch, end).await
                    }
                    Ok(n) => {
                        // Into the replay buffer before any await: a cancelled attachment
                        // loses no byte.
                        self.out().push(&buf[..n]);
                        self.counters.count_a_to_b(n as u64);
                        self.frame(frame::write_data(ch, &buf[..n])).await
                    }
                    Err(e) => return Outcome::Aborted(format!("local connection: {e}")),
                },
                () = s.space.notified(), if !has_space => Ok(()),
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

    /// Sends FIN at `end`; only once it is out whole may the stream count as done.
    async fn send_fin<C: tokio::io::AsyncWrite>(
        &self,
        ch: &mut WriteHalf<C>,
        end: u64,
    ) -> io::Result<()> {
        self.frame(ch.write_all(&Frame::Fin(end).header())).await?;
        self.shared.fin_sent.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Channel -> local connection: payload written as it comes (counted byte by byte, so a
    /// cut channel never makes the peer resend what the application already has), ACK and FIN
    /// applied.
    async fn downlink<L, C>(&self, ch_r: &mut ReadHalf<C>, local_w: &mut WriteHalf<L>) -> Outcome
    where
        L: tokio::io::AsyncWrite,
        C: tokio::io::AsyncRead,
    {
        let s = &self.shared;
        let mut buf = vec![0u8; MAX_DATA];
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
                    let payload = &mut buf[..len as usize];
                    if ch_r.read_exact(payload).await.is_err() {
                        return Outcome::Lost;
                    }
                    if s.peer_fin.load(Ordering::SeqCst) != u64::MAX {
                        return Outcome::Aborted("DATA after FIN".into());
                    }
                    if let Err(e) = self.deliver(local_w, payload).await {
                        return Outcome::Aborted(format!("local connection: {e}"));
                    }
                    let unacked =
                        s.received.load(Ordering::SeqCst) - s.acked.load(Ordering::SeqCst);
                    if unacked >= self.ack_every {
                        s.ack_wanted.notify_one();
                    } else {
                        s.ack_soon.notify_one();
                    }
                }
                Frame::Ack(offset) => {
                    if let Err(e) = self.out().ack(offset) {
                        return Outcome::Aborted(e);
                    }
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
                    s.ack_wanted.notify_one();
                }
                Frame::Abort => return Outcome::Aborted(format!("{PEER_ABORT} failed")),
            }
            if self.done() {
                return Outcome::Done;
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
            self.counters.count_b_to_a(n as u64);
        }
        local_w.flush().await
    }

    /// Acknowledges everything received so far, if anything is new.
    async fn ack<C: tokio::io::AsyncWrite>(&self, ch: &mut WriteHalf<C>) -> io::Result<()> {
        let received = self.shared.received.load(Ordering::SeqCst);
        if received == self.shared.acked.load(Ordering::SeqCst) {
            return Ok(());
        }
        ch.write_all(&Frame::Ack(received).header()).await?;
        self.shared.acked.store(received, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_buffer_never_allocates_past_its_capacity() {
        // 3000 KiB is no power of two: VecDeque's own doubling would go to 4 MiB.
        let limit = 3000 * 1024;
        let mut out = OutBuf {
            base: 0,
            end: 0,
            kept: Some(VecDeque::new()),
            limit,
        };
        let chunk = vec![7u8; MAX_DATA];
        let mut most = 0;
        for round in 0..3u64 {
            while out.unacked() + MAX_DATA <= limit {
                out.push(&chunk);
                most = most.max(out.kept.as_ref().map_or(0, VecDeque::capacity));
            }
            out.push(&chunk[..limit - out.unacked()]);
            assert_eq!(out.unacked(), limit, "round {round}: filled to the limit");
            let cap = out.kept.as_ref().map_or(0, VecDeque::capacity);
            assert!(cap <= limit + 64, "allocated {cap} for a limit of {limit}");
            out.ack(out.end() - 1000).unwrap();
            assert_eq!(out.pending().len(), 1000);
        }
        assert!(most <= limit + 64, "allocated {most} on the way");
        let mut off = OutBuf {
            base: 0,
            end: 0,
            kept: None,
            limit,
        };
        off.push(&chunk);
        assert_eq!(
            (off.unacked(), off.pending().len()),
            (MAX_DATA, 0),
            "counted, not kept"
        );
        off.ack(MAX_DATA as u64).unwrap();
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
                reply_owed: false,
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
}
