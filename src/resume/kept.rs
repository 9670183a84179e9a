//! What a resumable stream has sent and the peer has not acknowledged, kept for a replay
//! without copying bulk reads a second time.
//!
//! Why: the uplink copied every byte it read into a `VecDeque<u8>` before it framed it, one
//! copy per byte more than a plain forward makes. Profiled (`perf record` during `bench --only
//! throughput --case "-L 1 stream"`), `memmove` took 26% of the `burrow ssh` client's samples
//! towards `burrow serve` with aes128-gcm, against 10% towards `sshd` (18% after this change);
//! the client's CPU per GiB sent to the relay fell by 4-5% in the median of seven interleaved
//! rounds of that bench against the build before (CHANGELOG). A large read
//! is now kept as a slice of the buffer it was read into, the same buffer that carries its frame
//! to the channel. Small reads are copied into compact pieces: kept in place, a stream that
//! writes a byte at a time would pin a buffer per byte.
//!
//! Memory: each piece counts the whole allocation it pins ([`Kept::held`]), and the uplink reads
//! only into the room its capacity leaves after that count, so what a stream pins stays within
//! what it reserved (see [`crate::budget`]). A re-attach sends the replay from the pieces
//! themselves ([`Kept::replay`]), not from a copy of them: a copy would hold the buffer twice
//! for as long as the peer takes to accept it (only the last compact piece, at most 16 KiB,
//! goes as a copy). Not counted: the bookkeeping, some tens of bytes
//! per piece, while pieces are 4 KiB or more or coalesce small reads up to 16 KiB (a writer
//! alternating the smallest kept read with one byte costs about 3% more than counted).

use std::collections::VecDeque;

use bytes::{Buf, Bytes};

/// A read of at least this many bytes that fills at least half of its buffer is kept where it
/// was read: it pins at most twice its size (plus a frame header). Smaller ones are copied.
pub const SHARE_MIN: usize = 4096;
/// Compact pieces grow up to this size; then the next one starts.
const PIECE_MAX: usize = 16 * 1024;
/// A new compact piece's first allocation, when less is pushed.
const PIECE_FIRST: usize = 256;
/// Queue slots an empty `Kept` may keep for the next bytes.
const IDLE_SLOTS: usize = 16;

enum Piece {
    /// A slice of a read buffer; `held` is that buffer's whole allocation.
    Shared { bytes: Bytes, held: usize },
    /// Copies of small reads; `start` bytes of it are released already.
    Copied { buf: Vec<u8>, start: usize },
}

impl Piece {
    /// The bytes this piece still keeps.
    fn remaining(&self) -> &[u8] {
        match self {
            Piece::Shared { bytes, .. } => bytes,
            Piece::Copied { buf, start } => &buf[*start..],
        }
    }
}

/// Unacknowledged bytes, in order, in pieces.
#[derive(Default)]
pub struct Kept {
    pieces: VecDeque<Piece>,
    /// Bytes kept.
    len: usize,
    /// Bytes of allocations the pieces pin (never less than `len`).
    held: usize,
}

impl Kept {
    /// Bytes kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes of memory the kept bytes pin: what counts against the stream's capacity.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Keeps `bytes`, a slice of a buffer whose allocation is `held` bytes, without copying.
    pub fn push_shared(&mut self, bytes: Bytes, held: usize) {
        if bytes.is_empty() {
            return;
        }
        let held = held.max(bytes.len());
        self.len += bytes.len();
        self.held += held;
        self.pieces.push_back(Piece::Shared { bytes, held });
    }

    /// Keeps a copy of `data`, appended to the last compact piece while that has room. New
    /// memory beyond what `data` needs is taken only within `spare` (the caller's capacity
    /// left), so pieces never hold more than their capacity allows.
    pub fn push_copy(&mut self, mut data: &[u8], spare: usize) {
        let cap = self.held.saturating_add(spare);
        self.len += data.len();
        while !data.is_empty() {
            let spare = cap.saturating_sub(self.held);
            let Some(Piece::Copied { buf, .. }) = self
                .pieces
                .back_mut()
                .filter(|p| matches!(p, Piece::Copied { buf, .. } if buf.len() < PIECE_MAX))
            else {
                let need = data.len().min(PIECE_MAX);
                let first = need.max(PIECE_FIRST.min(PIECE_MAX).min(spare));
                self.held += first;
                self.pieces.push_back(Piece::Copied {
                    buf: Vec::with_capacity(first),
                    start: 0,
                });
                continue;
            };
            let take = data.len().min(PIECE_MAX - buf.len());
            let need = buf.len() + take;
            if need > buf.capacity() {
                // Doubling, but never past PIECE_MAX nor the caller's capacity.
                let before = buf.capacity();
                let target = (before * 2).min(PIECE_MAX).min(before + spare).max(need);
                buf.reserve_exact(target - buf.len());
                self.held += buf.capacity() - before;
            }
            buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
    }

    /// Drops the first `n` bytes (all of them if `n` is more), and the pieces they emptied.
    pub fn release(&mut self, n: usize) {
        let mut n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some(front) = self.pieces.front_mut() else {
                break;
            };
            let here = front.remaining().len();
            let held = match front {
                Piece::Shared { held, .. } => *held,
                Piece::Copied { buf, .. } => buf.capacity(),
            };
            if here > n {
                match front {
                    Piece::Shared { bytes, .. } => bytes.advance(n),
                    Piece::Copied { start, .. } => *start += n,
                }
                break;
            }
            n -= here;
            self.held -= held;
            self.pieces.pop_front();
        }
        // A fully released last compact piece goes too, and a long queue's slots: an idle
        // stream pins next to nothing.
        if self.len == 0 {
            if self.pieces.capacity() > IDLE_SLOTS {
                self.pieces = VecDeque::new();
            }
            self.pieces.clear();
            self.held = 0;
        }
    }

    /// Everything kept, in order, as slices of the kept pieces themselves (to send again on a
    /// new channel): compact pieces become shared ones in place, without a copy. The last one
    /// (at most [`PIECE_MAX`]) is sent as a copy instead and stays as it is, so it keeps
    /// gathering small reads: frozen at every re-attach, a peer re-attaching over and over
    /// would leave pieces of a few hundred bytes, each with its bookkeeping. What the pieces
    /// hold is counted as before.
    pub fn replay(&mut self) -> Vec<Bytes> {
        let last = self.pieces.len().saturating_sub(1);
        for piece in self.pieces.iter_mut().take(last) {
            if let Piece::Copied { buf, start } = piece {
                let held = buf.capacity();
                let bytes = Bytes::from(std::mem::take(buf)).slice(*start..);
                *piece = Piece::Shared { bytes, held };
            }
        }
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Shared { bytes, .. } => bytes.clone(),
                Piece::Copied { .. } => Bytes::copy_from_slice(p.remaining()),
            })
            .collect()
    }

    /// Everything kept, in order, in one buffer.
    #[cfg(test)]
    pub fn to_vec(&self) -> Vec<u8> {
        let mut all = Vec::with_capacity(self.len);
        for piece in &self.pieces {
            all.extend_from_slice(piece.remaining());
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(from: usize, n: usize) -> Vec<u8> {
        (from..from + n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn bytes_come_back_in_order_across_shared_and_copied_pieces() {
        let mut kept = Kept::default();
        kept.push_copy(&numbers(0, 10), usize::MAX);
        kept.push_shared(Bytes::from(numbers(10, 5000)), 6000);
        kept.push_copy(&numbers(5010, 40_000), usize::MAX);
        assert_eq!(kept.len(), 45_010);
        assert_eq!(kept.to_vec(), numbers(0, 45_010));
        kept.release(7);
        assert_eq!(kept.to_vec(), numbers(7, 45_003));
        kept.release(5000);
        assert_eq!(kept.to_vec(), numbers(5007, 40_003));
        kept.release(1_000_000);
        assert_eq!((kept.len(), kept.held()), (0, 0));
        assert!(kept.to_vec().is_empty());
    }

    #[test]
    fn a_byte_at_a_time_pins_compact_pieces_not_a_buffer_per_byte() {
        let mut kept = Kept::default();
        for i in 0..100_000 {
            kept.push_copy(&[i as u8], usize::MAX);
        }
        assert_eq!(kept.len(), 100_000);
        assert!(
            kept.held() <= 100_000 + PIECE_MAX,
            "held {} for 100000 bytes",
            kept.held()
        );
        assert!(kept.pieces.len() <= 100_000 / PIECE_MAX + 1);
    }

    #[test]
    fn held_counts_whole_allocations_until_their_last_byte_is_released() {
        let mut kept = Kept::default();
        kept.push_shared(Bytes::from(vec![1; 100_000]), 131_086);
        kept.push_shared(Bytes::from(vec![2; 100_000]), 131_086);
        assert_eq!(kept.held(), 2 * 131_086);
        kept.release(99_999);
        assert_eq!(
            kept.held(),
            2 * 131_086,
            "one byte still pins the first buffer"
        );
        kept.release(1);
        assert_eq!(kept.held(), 131_086);
        assert_eq!(kept.to_vec(), vec![2; 100_000]);
    }

    #[test]
    fn compact_pieces_count_what_they_allocated() {
        let mut kept = Kept::default();
        kept.push_copy(&[7; 100], usize::MAX);
        assert_eq!(kept.held(), PIECE_FIRST);
        kept.push_copy(&[7; 300], usize::MAX);
        assert!(kept.held() >= 400 && kept.held() <= 2 * 400);
        kept.push_copy(&[7; PIECE_MAX], usize::MAX);
        assert_eq!(kept.len(), 400 + PIECE_MAX);
        assert!(kept.held() <= 2 * PIECE_MAX);
        kept.release(400 + PIECE_MAX);
        assert_eq!(kept.held(), 0);
    }

    #[test]
    fn a_replay_sends_the_kept_pieces_themselves_not_a_copy() {
        let mut kept = Kept::default();
        kept.push_copy(&numbers(0, 100), usize::MAX);
        kept.push_shared(Bytes::from(numbers(100, 5000)), 5000);
        kept.push_copy(&numbers(5100, 20_000), usize::MAX);
        kept.release(30);
        let held = kept.held();
        let before: Vec<*const u8> = kept.pieces.iter().map(|p| p.remaining().as_ptr()).collect();
        assert_eq!(
            before.len(),
            4,
            "copied, shared, a full compact piece, its successor"
        );
        let replay = kept.replay();
        assert_eq!(replay.concat(), numbers(30, 25_070));
        assert_eq!(kept.held(), held, "nothing more held");
        let sent: Vec<*const u8> = replay.iter().map(|b| b.as_ptr()).collect();
        assert_eq!(
            sent[..3],
            before[..3],
            "the replay is the kept bytes themselves"
        );
        assert_ne!(sent[3], before[3], "the last compact piece goes as a copy");
        assert!(
            matches!(kept.pieces.back(), Some(Piece::Copied { .. })),
            "and stays compact"
        );
        // Bytes kept after a replay come after it, and releases go on across both kinds.
        kept.push_copy(&numbers(25_100, 10), usize::MAX);
        assert_eq!(kept.pieces.len(), 4, "gathered into the last compact piece");
        kept.release(25_075);
        assert_eq!(kept.to_vec(), numbers(25_105, 5));
        kept.release(5);
        assert_eq!(kept.held(), 0);
    }

    #[test]
    fn copies_take_no_memory_past_the_spare_they_are_given() {
        let mut kept = Kept::default();
        kept.push_copy(&[1; 10], 10);
        assert_eq!(
            kept.held(),
            10,
            "exactly what was needed, not a first piece of 256"
        );
        kept.push_copy(&[1; 5], 7);
        assert_eq!(kept.held(), 17, "doubling, cut to the spare");
        kept.push_copy(&[1; 2], 0);
        assert_eq!(kept.held(), 17, "room left in the piece");
        kept.push_copy(&[1; 100], 1000);
        assert!(kept.held() <= 17 + 1000);
        assert_eq!(kept.to_vec(), vec![1; 117]);
    }
}
