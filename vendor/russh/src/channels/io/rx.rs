use std::borrow::BorrowMut;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::AsyncRead;

use super::{ChannelMsg, ChannelReadHalf};

#[derive(Debug)]
pub struct ChannelRx<R> {
    channel: R,
    buffer: Option<(ChannelMsg, usize)>,

    ext: Option<u32>,
}

impl<R> ChannelRx<R> {
    pub fn new(channel: R, ext: Option<u32>) -> Self {
        Self {
            channel,
            buffer: None,
            ext,
        }
    }
}

impl<R> AsyncRead for ChannelRx<R>
where
    R: BorrowMut<ChannelReadHalf> + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let (msg, idx) = match self.buffer.take() {
            Some(msg) => msg,
            // burrow: `ChannelReadHalf::poll_recv` credits the data taken out of the queue,
            // including messages discarded below.
            None => match ready!(self.channel.borrow_mut().poll_recv(cx)) {
                Some(msg) => (msg, 0),
                None => return Poll::Ready(Ok(())),
            },
        };

        match self.take(msg, idx, buf) {
            Taken::Data => {}
            Taken::Eof => {
                self.channel.borrow_mut().receiver.close();
                return Poll::Ready(Ok(()));
            }
            Taken::Other => {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        // burrow: then whatever else is queued now, while it fits, so that one read returns
        // many packets' data (and the application writes it on with one system call, as
        // OpenSSH does) instead of one read per SSH packet. EOF waits for the next read.
        while buf.remaining() > 0 && self.buffer.is_none() {
            let Some(msg) = self.channel.borrow_mut().try_recv() else {
                break;
            };
            if matches!(msg, ChannelMsg::Eof) {
                self.buffer = Some((msg, 0));
                break;
            }
            self.take(msg, 0, buf);
        }
        Poll::Ready(Ok(()))
    }
}

/// What [`ChannelRx::take`] did with a message.
enum Taken {
    /// Data of the stream this reader reads: copied (what did not fit is kept for later).
    Data,
    Eof,
    /// Anything else, dropped as before: other streams' data, requests, window adjustments.
    Other,
}

impl<R> ChannelRx<R> {
    /// Copies `msg`'s data from `idx` on into `buf` if it belongs to this reader's stream,
    /// keeping the rest of it for the next read.
    fn take(&mut self, msg: ChannelMsg, idx: usize, buf: &mut tokio::io::ReadBuf<'_>) -> Taken {
        let data = match (&msg, self.ext) {
            (ChannelMsg::Data { data }, None) => data,
            (ChannelMsg::ExtendedData { data, ext }, Some(target)) if *ext == target => data,
            (ChannelMsg::Eof, _) => return Taken::Eof,
            _ => return Taken::Other,
        };
        let rest = data.get(idx..).unwrap_or_default();
        let readable = buf.remaining().min(rest.len());
        buf.put_slice(rest.get(..readable).unwrap_or_default());
        if readable != rest.len() {
            self.buffer = Some((msg, idx + readable));
        }
        Taken::Data
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio::io::AsyncReadExt;

    use super::ChannelRx;
    use crate::channels::queue::queue;
    use crate::{ChannelId, ChannelMsg, ChannelReadHalf};

    fn data(byte: u8, len: usize) -> ChannelMsg {
        ChannelMsg::Data {
            data: Bytes::from(vec![byte; len]),
        }
    }

    // burrow: one read takes every queued message that fits, keeps the rest of the last one,
    // skips what is not data, and reports EOF only after the data before it.
    #[tokio::test]
    async fn one_read_takes_every_queued_message_that_fits_and_eof_comes_after_them() {
        let (tx, rx) = queue(8);
        let (credits, mut credited) = tokio::sync::mpsc::unbounded_channel();
        let half = ChannelReadHalf {
            receiver: rx,
            id: ChannelId(3),
            credits,
        };
        for msg in [
            data(b'a', 5000),
            ChannelMsg::ExitStatus { exit_status: 0 },
            data(b'b', 5000),
            data(b'c', 5000),
            ChannelMsg::Eof,
            data(b'd', 5000),
        ] {
            tx.send(msg).await.unwrap();
        }
        let mut reader = ChannelRx::new(half, None);
        let mut buf = vec![0; 12_000];

        let n = reader.read(&mut buf).await.unwrap();
        let expected = [vec![b'a'; 5000], vec![b'b'; 5000], vec![b'c'; 2000]].concat();
        assert_eq!(&buf[..n], &expected[..]);

        let n = reader.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &[b'c'; 3000][..]);
        assert_eq!(reader.read(&mut buf).await.unwrap(), 0, "EOF after the data before it");

        let mut total = 0;
        while let Ok((ChannelId(3), n)) = credited.try_recv() {
            total += n;
        }
        assert_eq!(total, 15_000, "every data message taken out is credited once");
    }

    // burrow (review): a stderr reader with a one-byte buffer, other streams' data between, and Close
    // without Eof: the stderr bytes in order, then EOF, and every data message credited once.
    #[tokio::test]
    async fn a_stderr_reader_read_byte_by_byte_skips_other_streams_and_ends_at_close_one_byte_at_a_time_close_without_eof() {
        let (tx, rx) = queue(8);
        let (credits, mut credited) = tokio::sync::mpsc::unbounded_channel();
        let half = ChannelReadHalf {
            receiver: rx,
            id: ChannelId(3),
            credits,
        };
        let ext = |ext: u32, data: &'static [u8]| ChannelMsg::ExtendedData {
            data: Bytes::from_static(data),
            ext,
        };
        for msg in [
            data(b'a', 3000),
            ext(1, b"xyz"),
            ext(2, b"0123456789"),
            data(b'b', 5000),
            ext(1, b"uv"),
            ChannelMsg::Close,
        ] {
            tx.send(msg).await.unwrap();
        }
        drop(tx);
        let mut reader = ChannelRx::new(half, Some(1));
        let mut got = Vec::new();
        let mut one = [0u8; 1];
        loop {
            let n = reader.read(&mut one).await.unwrap();
            if n == 0 {
                break;
            }
            got.push(one[0]);
        }
        assert_eq!(got, b"xyzuv");
        let mut total = 0;
        while let Ok((ChannelId(3), n)) = credited.try_recv() {
            total += n;
        }
        assert_eq!(total, 3000 + 3 + 10 + 5000 + 2);
    }
}
