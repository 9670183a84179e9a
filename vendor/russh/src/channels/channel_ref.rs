use tokio::sync::mpsc::error::{SendError, TrySendError};

use super::queue::{QueueTx, queue};
use super::{ChannelQueueRx, WindowSizeRef};
use crate::ChannelMsg;

/// A handle to the [`super::Channel`]'s to be able to transmit messages
/// to it and update it's `window_size`.
// burrow: was a bounded `Sender<ChannelMsg>`; now the sending end of a `ChannelQueueRx`
// (channels/queue.rs), which does not bound data (the receive window does) so the session
// loop never waits on it because of data, and merges small data while it waits.
// `send`/`try_send` keep the signatures the call sites used.
#[derive(Debug)]
pub struct ChannelRef {
    pub(super) sender: QueueTx,
    pub(super) window_size: WindowSizeRef,
}

impl ChannelRef {
    // burrow: creates the channel's queue, holding at most `channel_buffer_size` non-data
    // messages.
    pub(crate) fn new(channel_buffer_size: usize) -> (Self, ChannelQueueRx) {
        let (sender, receiver) = queue(channel_buffer_size);
        (
            Self {
                sender,
                window_size: WindowSizeRef::new(0),
            },
            receiver,
        )
    }

    pub(crate) fn window_size(&self) -> &WindowSizeRef {
        &self.window_size
    }

    // burrow: data never waits; empty data is dropped (nothing to consume). Other messages
    // wait for room as before; `Err` means the receiver is gone.
    pub(crate) async fn send(&self, msg: ChannelMsg) -> Result<(), SendError<ChannelMsg>> {
        self.sender.send(msg).await
    }

    // burrow: the channel's queue keeps a share of what its grown window holds from the
    // session's budget, so it is given back only once the queued data is gone too.
    pub(crate) fn hold_window_growth(&self, growth: std::sync::Arc<crate::WindowGrowth>) {
        self.sender.hold_window_growth(growth)
    }

    // burrow: like `send` but never waits (used for informational messages).
    pub(crate) fn try_send(&self, msg: ChannelMsg) -> Result<(), TrySendError<ChannelMsg>> {
        self.sender.try_send(msg)
    }
}
