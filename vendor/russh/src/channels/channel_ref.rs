use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::sync::mpsc::error::{SendError, TrySendError};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use super::{ChannelQueueRx, WindowSizeRef, is_data};
use crate::ChannelMsg;

/// A handle to the [`super::Channel`]'s to be able to transmit messages
/// to it and update it's `window_size`.
// burrow: was a bounded `Sender<ChannelMsg>`; now the sending end of a `ChannelQueueRx`,
// which does not bound data (the receive window does) so the session loop never waits
// on it because of data. `send`/`try_send` keep the signatures the call sites used.
#[derive(Debug)]
pub struct ChannelRef {
    pub(super) sender: UnboundedSender<ChannelMsg>,
    pub(super) control_permits: Arc<Semaphore>,
    pub(super) window_size: WindowSizeRef,
}

impl ChannelRef {
    // burrow: creates the channel's queue, holding at most `channel_buffer_size` non-data
    // messages.
    pub(crate) fn new(channel_buffer_size: usize) -> (Self, ChannelQueueRx) {
        let (sender, receiver) = unbounded_channel();
        let control_permits = Arc::new(Semaphore::new(channel_buffer_size));
        (
            Self {
                sender,
                control_permits: control_permits.clone(),
                window_size: WindowSizeRef::new(0),
            },
            ChannelQueueRx {
                receiver,
                control_permits,
            },
        )
    }

    pub(crate) fn window_size(&self) -> &WindowSizeRef {
        &self.window_size
    }

    // burrow: data never waits; empty data is dropped (nothing to consume). Other messages
    // wait for room as before; `Err` means the receiver is gone.
    pub(crate) async fn send(&self, msg: ChannelMsg) -> Result<(), SendError<ChannelMsg>> {
        match &msg {
            ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
                if data.is_empty() {
                    return Ok(());
                }
            }
            _ => match self.control_permits.acquire().await {
                Ok(permit) => permit.forget(), // given back by `ChannelQueueRx::poll_recv`
                Err(_) => return Err(SendError(msg)),
            },
        }
        self.sender.send(msg)
    }

    // burrow: like `send` but never waits (used for informational messages).
    pub(crate) fn try_send(&self, msg: ChannelMsg) -> Result<(), TrySendError<ChannelMsg>> {
        if !is_data(&msg) {
            match self.control_permits.try_acquire() {
                Ok(permit) => permit.forget(),
                Err(tokio::sync::TryAcquireError::Closed) => return Err(TrySendError::Closed(msg)),
                Err(tokio::sync::TryAcquireError::NoPermits) => return Err(TrySendError::Full(msg)),
            }
        }
        self.sender
            .send(msg)
            .map_err(|SendError(msg)| TrySendError::Closed(msg))
    }
}
