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
//

use std::collections::HashMap;
use std::fmt::{Debug, Formatter};
use std::mem::replace;
use std::num::Wrapping;
use std::time::Duration;

use byteorder::{BigEndian, ByteOrder};
use bytes::Bytes;
use log::{debug, trace, warn};
use ssh_encoding::Encode;
use tokio::sync::oneshot;

use crate::cipher::OpeningKey;
use crate::client::GexParams;
use crate::kex::dh::groups::DhGroup;
use crate::kex::{KexAlgorithm, KexAlgorithmImplementor};
use crate::sshbuffer::PacketWriter;
use crate::{
    ChannelId, ChannelParams, CryptoVec, Disconnect, Limits, auth, cipher, mac, msg, negotiation,
};


/// burrow: how far the adaptive window may grow a channel's receive window (it bounds what a
/// channel whose reader stalls can hold, like the configured window does): 16 MiB carries
/// 160 MiB/s over a 100 ms round trip.
pub(crate) const RECEIVE_WINDOW_LIMIT: u32 = 16 * 1024 * 1024;

/// burrow: the window probe's request name, PuTTY's; every peer answers unknown requests.
pub(crate) const WINDOW_PROBE_REQUEST: &str = "winadj@putty.projects.tartarus.org";

#[derive(Debug)]
pub(crate) struct Encrypted {
    pub state: EncryptedState,

    // It's always Some, except when we std::mem::replace it temporarily.
    pub exchange: Option<Exchange>,
    pub kex: KexAlgorithm,
    pub key: usize,
    pub client_mac: mac::Name,
    pub server_mac: mac::Name,
    pub session_id: CryptoVec,
    pub channels: HashMap<ChannelId, ChannelParams>,
    pub last_channel_id: Wrapping<u32>,
    // Non-sensitive packet assembly buffer, analogous to
    // OpenSSH sshbuf (output side).  Not mlocked because it
    // holds only protocol framing and ciphertext.
    pub write: Vec<u8>,
    pub write_cursor: usize,
    pub last_rekey: russh_util::time::Instant,
    pub server_compression: crate::compression::Compression,
    pub client_compression: crate::compression::Compression,
    pub decompress: crate::compression::Decompress,
    pub rekey_wanted: bool,
    pub received_extensions: Vec<String>,
    pub extension_info_awaiters: HashMap<String, Vec<oneshot::Sender<()>>>,
    // burrow: channels whose CLOSE we sent (`close`), for the session to drop their queues.
    pub closed_by_us: Vec<ChannelId>,
}

pub(crate) struct CommonSession<Config> {
    pub auth_user: String,
    pub remote_sshid: Vec<u8>,
    pub config: Config,
    pub encrypted: Option<Encrypted>,
    pub auth_method: Option<auth::Method>,
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) auth_attempts: usize,
    pub packet_writer: PacketWriter,
    pub remote_to_local: Box<dyn OpeningKey + Send>,
    pub wants_reply: bool,
    pub disconnected: bool,
    // Non-sensitive incoming-packet scratch buffer.
    pub buffer: Vec<u8>,
    pub strict_kex: bool,
    pub alive_timeouts: usize,
    pub received_data: bool,
}

impl<C> Debug for CommonSession<C> {
    fn fmt(&self, f: &mut Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommonSession")
            .field("auth_user", &self.auth_user)
            .field("remote_sshid", &self.remote_sshid)
            .field("encrypted", &self.encrypted)
            .field("auth_method", &self.auth_method)
            .field("auth_attempts", &self.auth_attempts)
            .field("packet_writer", &self.packet_writer)
            .field("wants_reply", &self.wants_reply)
            .field("disconnected", &self.disconnected)
            .field("buffer", &self.buffer)
            .field("strict_kex", &self.strict_kex)
            .field("alive_timeouts", &self.alive_timeouts)
            .field("received_data", &self.received_data)
            .finish()
    }
}

#[must_use]
#[derive(Debug, Clone, Copy)]
pub(crate) enum ChannelFlushResult {
    Incomplete {
        wrote: usize,
    },
    Complete {
        wrote: usize,
        pending_eof: bool,
        pending_close: bool,
    },
}
impl ChannelFlushResult {
    pub(crate) fn wrote(&self) -> usize {
        match self {
            ChannelFlushResult::Incomplete { wrote } => *wrote,
            ChannelFlushResult::Complete { wrote, .. } => *wrote,
        }
    }
    pub(crate) fn complete(wrote: usize, channel: &mut ChannelParams) -> Self {
        let (pending_eof, pending_close) = channel.take_pending_controls();
        ChannelFlushResult::Complete {
            wrote,
            pending_eof,
            pending_close,
        }
    }
}

impl<C> CommonSession<C> {
    pub(crate) fn has_any_pending_data(&self) -> bool {
        self.encrypted
            .as_ref()
            .is_some_and(Encrypted::has_any_pending_data)
    }

    /// Channel-scoped messages (`CHANNEL_DATA`, `CHANNEL_EOF`, `CHANNEL_CLOSE`,
    /// `CHANNEL_REQUEST`, ...) operate on an already-open channel. An
    /// authenticated peer must not be able to drive channel callbacks
    /// (`data`, `exit_status`, `channel_close`, ...) for a recipient id that
    /// was never opened or whose local open is still waiting for peer
    /// confirmation. The encrypted channel table is authoritative for the SSH
    /// protocol state.
    pub(crate) fn is_established_channel(&self, channel: ChannelId) -> bool {
        self.encrypted
            .as_ref()
            .and_then(|enc| enc.channels.get(&channel))
            .is_some_and(|channel| channel.confirmed)
    }

    /// `CHANNEL_OPEN_CONFIRMATION` and `CHANNEL_OPEN_FAILURE` are only valid
    /// as the reply to a local open that is still waiting for one. Channels
    /// opened by the peer are inserted already confirmed, so they never match.
    pub(crate) fn is_pending_channel_open(&self, channel: ChannelId) -> bool {
        self.encrypted
            .as_ref()
            .and_then(|enc| enc.channels.get(&channel))
            .is_some_and(|channel| !channel.confirmed)
    }

    pub fn newkeys(&mut self, newkeys: NewKeys) {
        if let Some(ref mut enc) = self.encrypted {
            enc.exchange = Some(newkeys.exchange);
            enc.kex = newkeys.kex;
            enc.key = newkeys.key;
            enc.client_mac = newkeys.names.client_mac;
            enc.server_mac = newkeys.names.server_mac;
            self.remote_to_local = newkeys.cipher.remote_to_local;
            self.packet_writer
                .set_cipher(newkeys.cipher.local_to_remote);
            self.strict_kex = self.strict_kex || newkeys.names.strict_kex();

            // Reset compression state
            enc.client_compression
                .init_compress(self.packet_writer.compress());
            enc.server_compression.init_decompress(&mut enc.decompress);
        }
    }

    pub fn encrypted(&mut self, state: EncryptedState, newkeys: NewKeys) {
        let strict_kex = newkeys.names.strict_kex();
        self.encrypted = Some(Encrypted {
            exchange: Some(newkeys.exchange),
            kex: newkeys.kex,
            key: newkeys.key,
            client_mac: newkeys.names.client_mac,
            server_mac: newkeys.names.server_mac,
            session_id: newkeys.session_id,
            state,
            channels: HashMap::new(),
            last_channel_id: Wrapping(1),
            write: Vec::new(),
            write_cursor: 0,
            last_rekey: russh_util::time::Instant::now(),
            server_compression: newkeys.names.server_compression,
            client_compression: newkeys.names.client_compression,
            decompress: crate::compression::Decompress::None,
            rekey_wanted: false,
            received_extensions: Vec::new(),
            extension_info_awaiters: HashMap::new(),
            closed_by_us: Vec::new(), // burrow
        });
        self.remote_to_local = newkeys.cipher.remote_to_local;
        self.packet_writer
            .set_cipher(newkeys.cipher.local_to_remote);
        self.strict_kex = strict_kex;

        // For non-deferred compression (RFC 4253 "zlib"), activate immediately
        // after initial key exchange. Deferred compression ("zlib@openssh.com")
        // will be activated later, after authentication succeeds.
        if let Some(ref mut enc) = self.encrypted {
            if !enc.client_compression.is_deferred() {
                enc.client_compression
                    .init_compress(self.packet_writer.compress());
            }
            if !enc.server_compression.is_deferred() {
                enc.server_compression.init_decompress(&mut enc.decompress);
            }
        }
    }

    /// Send a disconnect message.
    pub fn disconnect(
        &mut self,
        reason: Disconnect,
        description: &str,
        language_tag: &str,
    ) -> Result<(), crate::Error> {
        let disconnect = |buf: &mut Vec<u8>| {
            push_packet!(buf, {
                msg::DISCONNECT.encode(buf)?;
                (reason as u32).encode(buf)?;
                description.encode(buf)?;
                language_tag.encode(buf)?;
            });
            Ok(())
        };
        if !self.disconnected {
            self.disconnected = true;
            return if let Some(ref mut enc) = self.encrypted {
                disconnect(&mut enc.write)
            } else {
                disconnect(&mut self.packet_writer.buffer().buffer)
            };
        }
        Ok(())
    }

    /// Send a debug message.
    pub fn debug(
        &mut self,
        always_display: bool,
        message: &str,
        language_tag: &str,
    ) -> Result<(), crate::Error> {
        let debug = |buf: &mut Vec<u8>| {
            push_packet!(buf, {
                msg::DEBUG.encode(buf)?;
                (always_display as u8).encode(buf)?;
                message.encode(buf)?;
                language_tag.encode(buf)?;
            });
            Ok(())
        };
        if let Some(ref mut enc) = self.encrypted {
            debug(&mut enc.write)
        } else {
            debug(&mut self.packet_writer.buffer().buffer)
        }
    }

    pub(crate) fn reset_seqn(&mut self) {
        self.packet_writer.reset_seqn();
    }
}

impl Encrypted {
    pub fn byte(&mut self, channel: ChannelId, msg: u8) -> Result<(), crate::Error> {
        if let Some(channel) = self.channels.get(&channel) {
            push_packet!(self.write, {
                self.write.push(msg);
                channel.recipient_channel.encode(&mut self.write)?;
            });
        }
        Ok(())
    }

    pub fn eof(&mut self, channel: ChannelId) -> Result<(), crate::Error> {
        if let Some(channel) = self.has_pending_data_mut(channel) {
            channel.pending_eof = true;
        } else {
            self.byte(channel, msg::CHANNEL_EOF)?;
        }
        Ok(())
    }

    pub fn close(&mut self, channel: ChannelId) -> Result<(), crate::Error> {
        if let Some(channel) = self.has_pending_data_mut(channel) {
            channel.pending_close = true;
        } else {
            self.byte(channel, msg::CHANNEL_CLOSE)?;
            // burrow: the session drops the channel's queue at its next flush (`closed_by_us`).
            if self.channels.remove(&channel).is_some() {
                self.closed_by_us.push(channel);
            }
        }
        Ok(())
    }

    pub(crate) fn close_from_peer(&mut self, channel: ChannelId) -> Result<(), crate::Error> {
        self.byte(channel, msg::CHANNEL_CLOSE)?;
        self.channels.remove(&channel);
        Ok(())
    }

    pub fn sender_window_size(&self, channel: ChannelId) -> usize {
        if let Some(channel) = self.channels.get(&channel) {
            channel.sender_window_size as usize
        } else {
            0
        }
    }

    pub fn adjust_window_size(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        target: u32,
        // burrow: the data was queued for a live read half, which credits it back as it is
        // consumed (`consume_window`); only otherwise is the window re-opened right away.
        queued: bool,
    ) -> Result<bool, crate::Error> {
        if let Some(channel) = self.channels.get_mut(&channel) {
            trace!(
                "adjust_window_size, channel = {}, size = {},",
                channel.sender_channel, target
            );
            // burrow: data beyond the window used to be "ignored" by not counting it, which
            // let a peer queue without limit. Now the window closes, and a peer that sends
            // more than 10% of `target` beyond it is disconnected (as OpenSSH does), so
            // queued data stays bounded by the window.
            let len = data.len() as u32;
            if len <= channel.sender_window_size {
                channel.sender_window_size -= len;
            } else {
                let excess = len - channel.sender_window_size;
                channel.sender_window_size = 0;
                channel.receive_window_exceeded =
                    channel.receive_window_exceeded.saturating_add(excess);
                warn!(
                    "channel {}: peer sent {excess} bytes beyond its window ({} in total)",
                    channel.sender_channel, channel.receive_window_exceeded
                );
                // burrow: 10% of the configured window, not of a grown one: an honest peer
                // never overruns, and a grown window's 10% would be queued past the budget
                // that its growth came from.
                if channel.receive_window_exceeded > target / 10 {
                    return Err(crate::Error::Inconsistent);
                }
            }
            // burrow: what arrives over a probe cycle gives the peer's rate (see
            // `window_probe_reply`).
            if let crate::WindowProbe::Idle { received, .. }
            | crate::WindowProbe::InFlight { received, .. } = &mut channel.receive_probe
            {
                *received = received.saturating_add(u64::from(len));
            }
            if queued {
                return Ok(false);
            }
            if channel.sender_window_size < target / 2 {
                debug!(
                    "sender_window_size {:?}, target {:?}",
                    channel.sender_window_size, target
                );
                push_packet!(self.write, {
                    self.write.push(msg::CHANNEL_WINDOW_ADJUST);
                    channel.recipient_channel.encode(&mut self.write)?;
                    (target - channel.sender_window_size).encode(&mut self.write)?;
                });
                channel.sender_window_size = target;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// burrow: the read half of `channel` consumed `consumed` bytes. Re-opens the peer's
    /// window by what was consumed, following OpenSSH's `channel_check_window()`: once
    /// more than 3 packets or half of `window_max` are missing. Never lets the peer have
    /// more than `window_max` outstanding, so a peer that overran its window does not get
    /// it inflated. Returns whether a WINDOW_ADJUST was sent.
    pub fn consume_window(
        &mut self,
        channel: ChannelId,
        consumed: u32,
        window_max: u32,
    ) -> Result<bool, crate::Error> {
        self.consume_window_at(channel, consumed, window_max, std::time::Instant::now())
    }

    fn consume_window_at(
        &mut self,
        channel: ChannelId,
        consumed: u32,
        window_max: u32,
        now: std::time::Instant,
    ) -> Result<bool, crate::Error> {
        let Some(channel) = self.channels.get_mut(&channel) else {
            return Ok(false); // closed meanwhile
        };
        // burrow: the adaptive window may have grown this channel's target.
        let window_max = window_max.max(channel.receive_window_max);
        channel.receive_consumed = channel.receive_consumed.saturating_add(consumed);
        let window = channel.sender_window_size;
        let missing = window_max.saturating_sub(window);
        if channel.receive_consumed == 0
            || !(missing > channel.sender_maximum_packet_size.saturating_mul(3)
                || window < window_max / 2)
        {
            return Ok(false);
        }
        let grant = channel.receive_consumed.min(missing);
        channel.receive_consumed = 0;
        if grant == 0 {
            return Ok(false);
        }
        push_packet!(self.write, {
            self.write.push(msg::CHANNEL_WINDOW_ADJUST);
            channel.recipient_channel.encode(&mut self.write)?;
            grant.encode(&mut self.write)?;
        });
        channel.sender_window_size += grant;
        if let crate::WindowProbe::Idle { since, received } = channel.receive_probe
            && window_max < RECEIVE_WINDOW_LIMIT
        {
            push_packet!(self.write, {
                self.write.push(msg::CHANNEL_REQUEST);
                channel.recipient_channel.encode(&mut self.write)?;
                WINDOW_PROBE_REQUEST.encode(&mut self.write)?;
                self.write.push(1); // want reply
            });
            // The first probe counts from itself.
            let (since, received) = since.map_or((now, 0), |since| (since, received));
            channel.receive_probe = crate::WindowProbe::InFlight {
                sent: now,
                since,
                received,
            };
        }
        Ok(true)
    }

    /// burrow: lets `channel` (one that carries no requests of the application: tcpip and
    /// streamlocal forwards) probe its round trip, so its receive window can grow.
    pub fn allow_window_probe(&mut self, channel: ChannelId) {
        if let Some(c) = self.channels.get_mut(&channel) {
            c.receive_probe = crate::WindowProbe::START;
        }
    }

    /// burrow: adaptive receive window. Called with each CHANNEL_SUCCESS/FAILURE; returns
    /// whether it answered our window probe (and so must not reach the application).
    ///
    /// The time from the probe to its answer is a round trip. What the peer sends per round
    /// trip is its rate over the whole probe cycle (since the previous answer) times that
    /// round trip, not just what arrived while the probe was out: the peer answers at once,
    /// ahead of the data the adjust in front of the probe released, and when a window's data
    /// comes in one burst, a probe sent early in the burst sees only the burst's tail (a
    /// relay reading 256 KiB at a time stayed at 2 MiB that way: 1.42 of the 1.5 MiB needed,
    /// every round trip). When a round trip carries at least 3/4 of the window target, the
    /// window (not the network or our reader, which is keeping up: data is only credited back
    /// as it is consumed) is what limits: the target doubles, up to `RECEIVE_WINDOW_LIMIT`,
    /// and the extra is granted at once. On a short round trip little arrives per probe and
    /// the window stays at its configured size.
    ///
    /// With a `budget`, the window grows only by what the budget grants (see [`crate::WindowBudget`]).
    pub fn window_probe_reply(
        &mut self,
        channel: ChannelId,
        window_max: u32,
        budget: Option<&std::sync::Arc<dyn crate::WindowBudget>>,
    ) -> Result<bool, crate::Error> {
        self.window_probe_reply_at(channel, window_max, budget, std::time::Instant::now())
    }

    fn window_probe_reply_at(
        &mut self,
        channel: ChannelId,
        window_max: u32,
        budget: Option<&std::sync::Arc<dyn crate::WindowBudget>>,
        now: std::time::Instant,
    ) -> Result<bool, crate::Error> {
        let Some(channel) = self.channels.get_mut(&channel) else {
            return Ok(false);
        };
        let crate::WindowProbe::InFlight {
            sent,
            since,
            received,
        } = channel.receive_probe
        else {
            return Ok(false);
        };
        channel.receive_probe = crate::WindowProbe::Idle {
            since: Some(now),
            received: 0,
        };
        let per_round_trip = per_round_trip(received, now - sent, now - since);
        let current = window_max.max(channel.receive_window_max);
        if per_round_trip < u64::from(current / 4 * 3) || current >= RECEIVE_WINDOW_LIMIT {
            trace!(
                "channel {}: {per_round_trip} bytes per round trip, receive window stays {current}",
                channel.sender_channel
            );
            return Ok(true);
        }
        let grown = current.saturating_mul(2).min(RECEIVE_WINDOW_LIMIT);
        let extra = grown - current;
        if let Some(budget) = budget
            && !crate::WindowGrowth::take(&mut channel.receive_window_growth, budget, u64::from(extra))
        {
            debug!(
                "channel {}: {per_round_trip} bytes per round trip, receive window stays {current}: \
                 the window budget has no {extra} bytes left",
                channel.sender_channel
            );
            return Ok(true);
        }
        debug!(
            "channel {}: {per_round_trip} bytes per round trip, receive window {current} -> {grown}",
            channel.sender_channel
        );
        channel.receive_window_max = grown;
        push_packet!(self.write, {
            self.write.push(msg::CHANNEL_WINDOW_ADJUST);
            channel.recipient_channel.encode(&mut self.write)?;
            extra.encode(&mut self.write)?;
        });
        channel.sender_window_size = channel.sender_window_size.saturating_add(extra);
        Ok(true)
    }

    /// burrow: what `channel`'s window growth holds from the session's budget, if it grew
    /// within one; its queue takes a share (`ChannelRef::hold_window_growth`).
    pub(crate) fn window_growth(
        &self,
        channel: ChannelId,
    ) -> Option<std::sync::Arc<crate::WindowGrowth>> {
        self.channels.get(&channel)?.receive_window_growth.clone()
    }

    fn flush_channel(
        write: &mut Vec<u8>,
        channel: &mut ChannelParams,
    ) -> Result<ChannelFlushResult, crate::Error> {
        let mut pending_size = 0;
        while let Some((buf, a, from)) = channel.pending_data.pop_front() {
            let size = Self::data_noqueue(write, channel, &buf, a, from)?;
            pending_size += size;
            if from + size < buf.len() {
                channel.pending_data.push_front((buf, a, from + size));
                return Ok(ChannelFlushResult::Incomplete {
                    wrote: pending_size,
                });
            }
        }
        Ok(ChannelFlushResult::complete(pending_size, channel))
    }

    fn flush_channel_with_writer(
        write: &mut Vec<u8>,
        writer: &mut PacketWriter,
        channel: &mut ChannelParams,
        is_rekeying: bool,
    ) -> Result<ChannelFlushResult, crate::Error> {
        let mut pending_size = 0;
        while let Some((buf, a, from)) = channel.pending_data.pop_front() {
            // While a kex is in flight, stage into `write` instead of the wire:
            // RFC 4253 s7.1 allows only transport-layer messages between
            // KEXINIT and NEWKEYS, and `Encrypted::flush` holds `write` back
            // until the kex completes.
            let size = if write.is_empty() && !is_rekeying {
                Self::data_noqueue_direct(writer, channel, &buf, a, from)?
            } else {
                Self::data_noqueue(write, channel, &buf, a, from)?
            };
            pending_size += size;
            if from + size < buf.len() {
                channel.pending_data.push_front((buf, a, from + size));
                return Ok(ChannelFlushResult::Incomplete {
                    wrote: pending_size,
                });
            }
        }
        Ok(ChannelFlushResult::complete(pending_size, channel))
    }

    fn handle_flushed_channel(
        &mut self,
        channel: ChannelId,
        flush_result: ChannelFlushResult,
    ) -> Result<(), crate::Error> {
        if let ChannelFlushResult::Complete {
            wrote: _,
            pending_eof,
            pending_close,
        } = flush_result
        {
            if pending_eof {
                self.eof(channel)?;
            }
            if pending_close {
                self.close(channel)?;
            }
        }
        Ok(())
    }

    pub fn flush_pending(&mut self, channel: ChannelId) -> Result<usize, crate::Error> {
        let flush_result = match self.channels.get_mut(&channel) {
            Some(ch) => Self::flush_channel(&mut self.write, ch)?,
            None => return Ok(0),
        };
        let wrote = flush_result.wrote();
        self.handle_flushed_channel(channel, flush_result)?;
        Ok(wrote)
    }

    pub fn flush_pending_with_writer(
        &mut self,
        writer: &mut PacketWriter,
        channel: ChannelId,
        is_rekeying: bool,
    ) -> Result<usize, crate::Error> {
        let flush_result = match self.channels.get_mut(&channel) {
            Some(ch) => Self::flush_channel_with_writer(&mut self.write, writer, ch, is_rekeying)?,
            None => return Ok(0),
        };
        let wrote = flush_result.wrote();
        self.handle_flushed_channel(channel, flush_result)?;
        Ok(wrote)
    }

    #[allow(dead_code)]
    pub fn flush_all_pending(&mut self) -> Result<(), crate::Error> {
        let channel_ids: Vec<ChannelId> = self.channels.keys().copied().collect();
        for channel_id in channel_ids {
            self.flush_pending(channel_id)?;
        }
        Ok(())
    }

    pub fn flush_all_pending_with_writer(
        &mut self,
        writer: &mut PacketWriter,
        is_rekeying: bool,
    ) -> Result<(), crate::Error> {
        let channel_ids: Vec<ChannelId> = self.channels.keys().copied().collect();
        for channel_id in channel_ids {
            self.flush_pending_with_writer(writer, channel_id, is_rekeying)?;
        }
        Ok(())
    }

    fn has_pending_data_mut(&mut self, channel: ChannelId) -> Option<&mut ChannelParams> {
        self.channels
            .get_mut(&channel)
            .filter(|c| !c.pending_data.is_empty())
    }

    pub fn has_pending_data(&self, channel: ChannelId) -> bool {
        if let Some(channel) = self.channels.get(&channel) {
            !channel.pending_data.is_empty()
        } else {
            false
        }
    }

    pub(crate) fn has_any_pending_data(&self) -> bool {
        self.channels
            .values()
            .any(|channel| !channel.pending_data.is_empty())
    }

    /// Push the largest amount of `&buf0[from..]` that can fit into
    /// the window, dividing it into packets if it is too large, and
    /// return the length that was written.
    fn data_noqueue(
        write: &mut Vec<u8>,
        channel: &mut ChannelParams,
        buf0: &[u8],
        a: Option<u32>,
        from: usize,
    ) -> Result<usize, crate::Error> {
        if from >= buf0.len() {
            return Ok(0);
        }
        let window_end = from.saturating_add(channel.recipient_window_size as usize);
        let end = std::cmp::min(buf0.len(), window_end);
        #[allow(clippy::indexing_slicing)] // length checked
        let mut buf = &buf0[from..end];
        let buf_len = buf.len();
        let max_packet_size = channel.recipient_maximum_packet_size as usize;
        if max_packet_size == 0 {
            return Err(crate::Error::Inconsistent);
        }
        let packet_count = buf_len.div_ceil(max_packet_size);
        let packet_overhead = match a {
            None => 4 + 1 + 4 + 4,
            Some(_) => 4 + 1 + 4 + 4 + 4,
        };
        write.reserve(buf_len.saturating_add(packet_count.saturating_mul(packet_overhead)));

        while !buf.is_empty() {
            // Compute the length we're allowed to send.
            let off = std::cmp::min(buf.len(), max_packet_size);
            match a {
                None => push_packet!(write, {
                    write.push(msg::CHANNEL_DATA);
                    channel.recipient_channel.encode(write)?;
                    #[allow(clippy::indexing_slicing)] // length checked
                    buf[..off].encode(write)?;
                }),
                Some(ext) => push_packet!(write, {
                    write.push(msg::CHANNEL_EXTENDED_DATA);
                    channel.recipient_channel.encode(write)?;
                    ext.encode(write)?;
                    #[allow(clippy::indexing_slicing)] // length checked
                    buf[..off].encode(write)?;
                }),
            }
            trace!(
                "buffer: {:?} {:?}",
                write.len(),
                channel.recipient_window_size
            );
            channel.recipient_window_size -= off as u32;
            #[allow(clippy::indexing_slicing)] // length checked
            {
                buf = &buf[off..]
            }
        }
        trace!("buf.len() = {:?}, buf_len = {:?}", buf.len(), buf_len);
        Ok(buf_len)
    }

    fn data_noqueue_direct(
        writer: &mut PacketWriter,
        channel: &mut ChannelParams,
        buf0: &Bytes,
        a: Option<u32>,
        from: usize,
    ) -> Result<usize, crate::Error> {
        if from >= buf0.len() {
            return Ok(0);
        }
        let buf0 = buf0.as_ref();
        let window_end = from.saturating_add(channel.recipient_window_size as usize);
        let end = std::cmp::min(buf0.len(), window_end);
        #[allow(clippy::indexing_slicing)] // length checked
        let mut buf = &buf0[from..end];
        let buf_len = buf.len();
        let max_packet_size = channel.recipient_maximum_packet_size as usize;
        if max_packet_size == 0 {
            return Err(crate::Error::Inconsistent);
        }
        let packet_count = buf_len.div_ceil(max_packet_size);
        let channel_payload_overhead = match a {
            None => 1 + 4 + 4,
            Some(_) => 1 + 4 + 4 + 4,
        };
        writer.reserve_cleartext_packet_output(
            buf_len.saturating_add(packet_count.saturating_mul(channel_payload_overhead)),
            packet_count,
        );

        while !buf.is_empty() {
            let off = std::cmp::min(buf.len(), max_packet_size);
            match a {
                None => writer.write_packet(|packet| {
                    packet.push(msg::CHANNEL_DATA);
                    channel.recipient_channel.encode(packet)?;
                    #[allow(clippy::indexing_slicing)] // length checked
                    buf[..off].encode(packet)?;
                    Ok(())
                })?,
                Some(ext) => writer.write_packet(|packet| {
                    packet.push(msg::CHANNEL_EXTENDED_DATA);
                    channel.recipient_channel.encode(packet)?;
                    ext.encode(packet)?;
                    #[allow(clippy::indexing_slicing)] // length checked
                    buf[..off].encode(packet)?;
                    Ok(())
                })?,
            }
            channel.recipient_window_size -= off as u32;
            #[allow(clippy::indexing_slicing)] // length checked
            {
                buf = &buf[off..]
            }
        }
        Ok(buf_len)
    }

    #[allow(dead_code)]
    pub fn data(
        &mut self,
        channel: ChannelId,
        buf0: impl Into<Bytes>,
        is_rekeying: bool,
    ) -> Result<(), crate::Error> {
        let buf0 = buf0.into();
        if let Some(channel) = self.channels.get_mut(&channel) {
            assert!(channel.confirmed);
            if !channel.pending_data.is_empty() || is_rekeying {
                channel.pending_data.push_back((buf0, None, 0));
                return Ok(());
            }
            let buf_len = Self::data_noqueue(&mut self.write, channel, &buf0, None, 0)?;
            if buf_len < buf0.len() {
                channel.pending_data.push_back((buf0, None, buf_len))
            }
        } else {
            debug!("{channel:?} not saved for this session");
        }
        Ok(())
    }

    pub fn data_with_writer(
        &mut self,
        writer: &mut PacketWriter,
        channel: ChannelId,
        buf0: impl Into<Bytes>,
        is_rekeying: bool,
    ) -> Result<(), crate::Error> {
        let buf0 = buf0.into();
        if let Some(channel) = self.channels.get_mut(&channel) {
            assert!(channel.confirmed);
            if !channel.pending_data.is_empty() || is_rekeying {
                channel.pending_data.push_back((buf0, None, 0));
                return Ok(());
            }
            let buf_len = if self.write.is_empty() {
                Self::data_noqueue_direct(writer, channel, &buf0, None, 0)?
            } else {
                Self::data_noqueue(&mut self.write, channel, &buf0, None, 0)?
            };
            if buf_len < buf0.len() {
                channel.pending_data.push_back((buf0, None, buf_len))
            }
        } else {
            debug!("{channel:?} not saved for this session");
        }
        Ok(())
    }

    #[allow(dead_code)]
    pub fn extended_data(
        &mut self,
        channel: ChannelId,
        ext: u32,
        buf0: impl Into<Bytes>,
        is_rekeying: bool,
    ) -> Result<(), crate::Error> {
        let buf0 = buf0.into();
        if let Some(channel) = self.channels.get_mut(&channel) {
            assert!(channel.confirmed);
            if !channel.pending_data.is_empty() || is_rekeying {
                channel.pending_data.push_back((buf0, Some(ext), 0));
                return Ok(());
            }
            let buf_len = Self::data_noqueue(&mut self.write, channel, &buf0, Some(ext), 0)?;
            if buf_len < buf0.len() {
                channel.pending_data.push_back((buf0, Some(ext), buf_len))
            }
        }
        Ok(())
    }

    pub fn extended_data_with_writer(
        &mut self,
        writer: &mut PacketWriter,
        channel: ChannelId,
        ext: u32,
        buf0: impl Into<Bytes>,
        is_rekeying: bool,
    ) -> Result<(), crate::Error> {
        let buf0 = buf0.into();
        if let Some(channel) = self.channels.get_mut(&channel) {
            assert!(channel.confirmed);
            if !channel.pending_data.is_empty() || is_rekeying {
                channel.pending_data.push_back((buf0, Some(ext), 0));
                return Ok(());
            }
            let buf_len = if self.write.is_empty() {
                Self::data_noqueue_direct(writer, channel, &buf0, Some(ext), 0)?
            } else {
                Self::data_noqueue(&mut self.write, channel, &buf0, Some(ext), 0)?
            };
            if buf_len < buf0.len() {
                channel.pending_data.push_back((buf0, Some(ext), buf_len))
            }
        }
        Ok(())
    }

    pub fn flush(
        &mut self,
        limits: &Limits,
        writer: &mut PacketWriter,
        is_rekeying: bool,
    ) -> Result<bool, crate::Error> {
        if is_rekeying {
            // Only transport-layer messages may go out between KEXINIT and
            // NEWKEYS (RFC 4253 s7.1); `write` holds connection-layer ones.
            // The post-kex flush drains them.
            return Ok(false);
        }

        // If there are pending packets (and we've not started to rekey), flush them.
        {
            while self.write_cursor < self.write.len() {
                // Read a single packet, encrypt and send it.
                #[allow(clippy::indexing_slicing)] // length checked
                let len = BigEndian::read_u32(&self.write[self.write_cursor..]) as usize;
                #[allow(clippy::indexing_slicing)]
                let to_write = &self.write[(self.write_cursor + 4)..(self.write_cursor + 4 + len)];
                trace!(
                    "session_write_encrypted, msg type {:?}, len {}",
                    to_write.first(),
                    to_write.len()
                );

                writer.packet_raw(to_write)?;
                self.write_cursor += 4 + len
            }
        }
        if self.write_cursor >= self.write.len() {
            // If all packets have been written, clear.
            self.write_cursor = 0;
            self.write.clear();
        }

        if self.kex.skip_exchange() {
            return Ok(false);
        }

        let now = russh_util::time::Instant::now();
        let dur = now.duration_since(self.last_rekey);
        Ok(replace(&mut self.rekey_wanted, false)
            || writer.buffer().bytes >= limits.rekey_write_limit
            || dur >= limits.rekey_time_limit)
    }

    /// Delay until an automatic rekey is due: zero when the write limit is
    /// already exceeded, otherwise what is left of the time limit.
    pub(crate) fn rekey_time_remaining(
        &self,
        limits: &Limits,
        writer: &PacketWriter,
    ) -> Option<Duration> {
        if self.kex.skip_exchange() {
            return None;
        }
        if writer.bytes_written() >= limits.rekey_write_limit {
            return Some(Duration::ZERO);
        }
        let elapsed = russh_util::time::Instant::now().duration_since(self.last_rekey);
        Some(limits.rekey_time_limit.saturating_sub(elapsed))
    }

    pub fn new_channel_id(&mut self) -> ChannelId {
        self.last_channel_id += Wrapping(1);
        while self
            .channels
            .contains_key(&ChannelId(self.last_channel_id.0))
        {
            self.last_channel_id += Wrapping(1)
        }
        ChannelId(self.last_channel_id.0)
    }
    pub fn new_channel(&mut self, window_size: u32, maxpacket: u32) -> ChannelId {
        loop {
            self.last_channel_id += Wrapping(1);
            if let std::collections::hash_map::Entry::Vacant(vacant_entry) =
                self.channels.entry(ChannelId(self.last_channel_id.0))
            {
                vacant_entry.insert(ChannelParams {
                    recipient_channel: 0,
                    sender_channel: ChannelId(self.last_channel_id.0),
                    sender_window_size: window_size,
                    recipient_window_size: 0,
                    sender_maximum_packet_size: maxpacket,
                    recipient_maximum_packet_size: 0,
                    confirmed: false,
                    wants_reply: false,
                    pending_data: std::collections::VecDeque::new(),
                    pending_eof: false,
                    pending_close: false,
                    receive_consumed: 0, // burrow
                    receive_window_exceeded: 0,
                    receive_window_max: 0,
                    receive_probe: crate::WindowProbe::Never,
                    receive_window_growth: None,
                });
                return ChannelId(self.last_channel_id.0);
            }
        }
    }
}

#[derive(Debug)]
pub enum EncryptedState {
    WaitingAuthServiceRequest { sent: bool, accepted: bool },
    WaitingAuthRequest(auth::AuthRequest),
    InitCompression,
    Authenticated,
}

#[derive(Debug, Default, Clone)]
pub struct Exchange {
    // All Exchange fields are public protocol values (identifiers,
    // kex init payloads, ephemeral public keys) visible on the wire.
    // They carry no secret material and do not require mlock.
    pub client_id: Vec<u8>,
    pub server_id: Vec<u8>,
    pub client_kex_init: Bytes,
    pub server_kex_init: Bytes,
    pub client_ephemeral: Vec<u8>,
    pub server_ephemeral: Vec<u8>,
    pub gex: Option<(GexParams, DhGroup)>,
}

impl Exchange {
    pub fn new(client_id: &[u8], server_id: &[u8]) -> Self {
        Exchange {
            client_id: client_id.into(),
            server_id: server_id.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug)]
pub(crate) struct NewKeys {
    pub exchange: Exchange,
    pub names: negotiation::Names,
    pub kex: KexAlgorithm,
    pub key: usize,
    pub cipher: cipher::CipherPair,
    pub session_id: CryptoVec,
}

#[derive(Debug)]
pub(crate) enum GlobalRequestResponse {
    /// request was for Keepalive, ignore result
    Keepalive,
    /// request was for Keepalive but with notification of the result
    Ping(oneshot::Sender<()>),
    /// request was for NoMoreSessions, disallow additional sessions
    NoMoreSessions,
    /// request was for TcpIpForward, sends Some(port) for success or None for failure
    TcpIpForward(oneshot::Sender<Option<u32>>),
    /// request was for CancelTcpIpForward, sends true for success or false for failure
    CancelTcpIpForward(oneshot::Sender<bool>),
    /// request was for StreamLocalForward, sends true for success or false for failure
    StreamLocalForward(oneshot::Sender<bool>),
    CancelStreamLocalForward(oneshot::Sender<bool>),
    /// OpenSSH host-key ownership proof
    HostKeysProve {
        return_channel: oneshot::Sender<Result<(), crate::Error>>,
        keys: Vec<crate::keys::PublicKey>,
    },
    /// request had a custom name; sends `Some` with the response-specific
    /// payload on success or `None` on failure
    Other(oneshot::Sender<Option<CryptoVec>>),
}

/// burrow: bytes the peer sends per `round_trip` at the rate it had over `cycle` (which holds
/// the round trip): `received` scaled down by their ratio.
fn per_round_trip(
    received: u64,
    round_trip: std::time::Duration,
    cycle: std::time::Duration,
) -> u64 {
    if cycle <= round_trip || cycle.is_zero() {
        return received;
    }
    (u128::from(received) * round_trip.as_nanos() / cycle.as_nanos()) as u64
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, VecDeque};
    use std::num::Wrapping;

    use byteorder::{BigEndian, ByteOrder};
    use bytes::Bytes;

    use super::{Encrypted, EncryptedState, Exchange};
    use crate::compression::{Compression, Decompress};
    use crate::kex::{KEXES, NONE};
    use crate::sshbuffer::PacketWriter;
    use crate::{ChannelId, ChannelParams, CryptoVec, Limits, mac, msg};

    fn test_encrypted() -> Encrypted {
        Encrypted {
            state: EncryptedState::Authenticated,
            exchange: Some(Exchange::default()),
            kex: KEXES.get(&NONE).unwrap().make(),
            key: 0,
            client_mac: mac::NONE,
            server_mac: mac::NONE,
            session_id: CryptoVec::new(),
            channels: HashMap::new(),
            last_channel_id: Wrapping(0),
            write: Vec::new(),
            write_cursor: 0,
            last_rekey: russh_util::time::Instant::now(),
            server_compression: Compression::None,
            client_compression: Compression::None,
            decompress: Decompress::None,
            rekey_wanted: false,
            received_extensions: Vec::new(),
            extension_info_awaiters: HashMap::new(),
            closed_by_us: Vec::new(), // burrow
        }
    }

    fn test_channel(
        sender_channel: ChannelId,
        recipient_channel: u32,
        pending_eof: bool,
        pending_close: bool,
    ) -> ChannelParams {
        ChannelParams {
            recipient_channel,
            sender_channel,
            recipient_window_size: 1024,
            sender_window_size: 1024,
            recipient_maximum_packet_size: 1024,
            sender_maximum_packet_size: 1024,
            confirmed: true,
            wants_reply: false,
            pending_data: VecDeque::from([(Bytes::from_static(b"hello"), None, 0)]),
            pending_eof,
            pending_close,
            receive_consumed: 0, // burrow
            receive_window_exceeded: 0,
            receive_window_max: 0,
            receive_probe: crate::WindowProbe::Never,
            receive_window_growth: None,
        }
    }

    fn packet_types(buf: &[u8]) -> Vec<u8> {
        let mut packet_types = Vec::new();
        let mut cursor = 0;

        while cursor < buf.len() {
            let packet_len = BigEndian::read_u32(&buf[cursor..cursor + 4]) as usize;
            packet_types.push(buf[cursor + 4]);
            cursor += 4 + packet_len;
        }

        packet_types
    }

    fn clear_packet_types(buf: &[u8]) -> Vec<u8> {
        let mut packet_types = Vec::new();
        let mut cursor = 0;

        while cursor < buf.len() {
            let packet_len = BigEndian::read_u32(&buf[cursor..cursor + 4]) as usize;
            packet_types.push(buf[cursor + 5]);
            cursor += 4 + packet_len;
        }

        packet_types
    }

    fn test_ready_channel(sender_channel: ChannelId, recipient_channel: u32) -> ChannelParams {
        let mut channel = test_channel(sender_channel, recipient_channel, false, false);
        channel.pending_data.clear();
        channel
    }

    fn test_channel_windowed(
        sender_channel: ChannelId,
        recipient_channel: u32,
        window_size: u32,
        pending_eof: bool,
        pending_close: bool,
    ) -> ChannelParams {
        ChannelParams {
            recipient_channel,
            sender_channel,
            recipient_window_size: window_size,
            sender_window_size: 1024,
            recipient_maximum_packet_size: 1024,
            sender_maximum_packet_size: 1024,
            confirmed: true,
            wants_reply: false,
            pending_data: VecDeque::from([(Bytes::from_static(b"hello"), None, 0)]),
            pending_eof,
            pending_close,
            receive_consumed: 0, // burrow
            receive_window_exceeded: 0,
            receive_window_max: 0,
            receive_probe: crate::WindowProbe::Never,
            receive_window_growth: None,
        }
    }

    // flush_pending (single-channel path)

    #[test]
    fn flush_pending_replays_deferred_eof_once() {
        let channel_id = ChannelId(10);
        let mut encrypted = test_encrypted();
        encrypted
            .channels
            .insert(channel_id, test_channel(channel_id, 42, true, false));

        encrypted.flush_pending(channel_id).unwrap();
        assert_eq!(
            packet_types(&encrypted.write),
            vec![msg::CHANNEL_DATA, msg::CHANNEL_EOF]
        );
        assert!(!encrypted.channels[&channel_id].pending_eof);

        // Second flush must not re-emit EOF.
        encrypted.flush_pending(channel_id).unwrap();
        assert_eq!(
            packet_types(&encrypted.write),
            vec![msg::CHANNEL_DATA, msg::CHANNEL_EOF]
        );
    }

    #[test]
    fn flush_pending_replays_deferred_close_and_removes_channel() {
        let channel_id = ChannelId(11);
        let mut encrypted = test_encrypted();
        encrypted
            .channels
            .insert(channel_id, test_channel(channel_id, 43, true, true));

        encrypted.flush_pending(channel_id).unwrap();
        assert_eq!(
            packet_types(&encrypted.write),
            vec![msg::CHANNEL_DATA, msg::CHANNEL_EOF, msg::CHANNEL_CLOSE]
        );
        assert!(!encrypted.channels.contains_key(&channel_id));
    }

    #[test]
    fn flush_pending_no_controls_when_incomplete() {
        // Window smaller than data: flush is incomplete, EOF/CLOSE must not be sent.
        let channel_id = ChannelId(12);
        let mut encrypted = test_encrypted();
        encrypted.channels.insert(
            channel_id,
            test_channel_windowed(channel_id, 44, 3, true, true),
        );

        encrypted.flush_pending(channel_id).unwrap();
        // Only partial data fits; no EOF or CLOSE yet.
        assert_eq!(packet_types(&encrypted.write), vec![msg::CHANNEL_DATA]);
        assert!(encrypted.channels.contains_key(&channel_id));
        assert!(encrypted.channels[&channel_id].pending_eof);
        assert!(encrypted.channels[&channel_id].pending_close);
    }

    // flush_all_pending (multi-channel path)

    #[test]
    fn flush_all_pending_replays_deferred_eof_once() {
        let channel_id = ChannelId(1);
        let mut encrypted = test_encrypted();
        encrypted
            .channels
            .insert(channel_id, test_channel(channel_id, 42, true, false));

        encrypted.flush_all_pending().unwrap();
        assert_eq!(
            packet_types(&encrypted.write),
            vec![msg::CHANNEL_DATA, msg::CHANNEL_EOF]
        );
        assert!(!encrypted.channels[&channel_id].pending_eof);

        encrypted.flush_all_pending().unwrap();
        assert_eq!(
            packet_types(&encrypted.write),
            vec![msg::CHANNEL_DATA, msg::CHANNEL_EOF]
        );
    }

    #[test]
    fn flush_all_pending_replays_deferred_close_and_removes_channel() {
        let channel_id = ChannelId(2);
        let mut encrypted = test_encrypted();
        encrypted
            .channels
            .insert(channel_id, test_channel(channel_id, 43, true, true));

        encrypted.flush_all_pending().unwrap();
        assert_eq!(
            packet_types(&encrypted.write),
            vec![msg::CHANNEL_DATA, msg::CHANNEL_EOF, msg::CHANNEL_CLOSE]
        );
        assert!(!encrypted.channels.contains_key(&channel_id));
    }

    #[test]
    fn flush_all_pending_replays_deferred_controls_across_channels() {
        let channel_a = ChannelId(3);
        let channel_b = ChannelId(4);
        let mut encrypted = test_encrypted();
        encrypted
            .channels
            .insert(channel_a, test_channel(channel_a, 44, true, false));
        encrypted
            .channels
            .insert(channel_b, test_channel(channel_b, 45, false, true));

        encrypted.flush_all_pending().unwrap();

        let packet_types = packet_types(&encrypted.write);
        assert_eq!(
            packet_types
                .iter()
                .filter(|&&msg_type| msg_type == msg::CHANNEL_DATA)
                .count(),
            2
        );
        assert_eq!(
            packet_types
                .iter()
                .filter(|&&msg_type| msg_type == msg::CHANNEL_EOF)
                .count(),
            1
        );
        assert_eq!(
            packet_types
                .iter()
                .filter(|&&msg_type| msg_type == msg::CHANNEL_CLOSE)
                .count(),
            1
        );
        assert!(encrypted.channels.contains_key(&channel_a));
        assert!(!encrypted.channels.contains_key(&channel_b));
    }

    #[test]
    fn data_queues_behind_existing_pending_data_when_not_rekeying() {
        let channel_id = ChannelId(5);
        let mut encrypted = test_encrypted();
        encrypted
            .channels
            .insert(channel_id, test_channel(channel_id, 42, false, false));

        let channel = &encrypted.channels[&channel_id];
        let initial_pending = channel.pending_data.len();
        assert!(initial_pending > 0);
        let initial_front = channel.pending_data.front().unwrap();
        let initial_front_data = initial_front.0.to_vec();
        let initial_front_ext = initial_front.1;

        encrypted
            .data(channel_id, Bytes::from_static(b"new"), false)
            .unwrap();

        let channel = &encrypted.channels[&channel_id];
        assert_eq!(channel.pending_data.len(), initial_pending + 1);
        assert_eq!(
            channel.pending_data.front().unwrap().0.as_ref(),
            initial_front_data.as_slice()
        );
        assert_eq!(channel.pending_data.front().unwrap().1, initial_front_ext);
        assert_eq!(channel.pending_data.back().unwrap().0.as_ref(), b"new");
        assert_eq!(channel.pending_data.back().unwrap().1, None);
        assert!(encrypted.write.is_empty());
    }

    #[test]
    fn extended_data_queues_behind_existing_pending_data_when_not_rekeying() {
        let channel_id = ChannelId(6);
        let ext = 1;
        let mut encrypted = test_encrypted();
        encrypted
            .channels
            .insert(channel_id, test_channel(channel_id, 42, false, false));

        let channel = &encrypted.channels[&channel_id];
        let initial_pending = channel.pending_data.len();
        assert!(initial_pending > 0);
        let initial_front = channel.pending_data.front().unwrap();
        let initial_front_data = initial_front.0.to_vec();
        let initial_front_ext = initial_front.1;

        encrypted
            .extended_data(channel_id, ext, Bytes::from_static(b"new"), false)
            .unwrap();

        let channel = &encrypted.channels[&channel_id];
        assert_eq!(channel.pending_data.len(), initial_pending + 1);
        assert_eq!(
            channel.pending_data.front().unwrap().0.as_ref(),
            initial_front_data.as_slice()
        );
        assert_eq!(channel.pending_data.front().unwrap().1, initial_front_ext);
        assert_eq!(channel.pending_data.back().unwrap().0.as_ref(), b"new");
        assert_eq!(channel.pending_data.back().unwrap().1, Some(ext));
        assert!(encrypted.write.is_empty());
    }

    #[test]
    fn flush_pending_with_writer_matches_staged_channel_data() {
        let channel_id = ChannelId(7);
        let mut staged = test_encrypted();
        let mut direct = test_encrypted();
        staged
            .channels
            .insert(channel_id, test_channel(channel_id, 42, false, false));
        direct
            .channels
            .insert(channel_id, test_channel(channel_id, 42, false, false));

        let mut staged_writer = PacketWriter::clear();
        staged.flush_pending(channel_id).unwrap();
        staged
            .flush(&Limits::default(), &mut staged_writer, false)
            .unwrap();

        let mut direct_writer = PacketWriter::clear();
        direct
            .flush_pending_with_writer(&mut direct_writer, channel_id, false)
            .unwrap();

        assert_eq!(direct_writer.buffer().buffer, staged_writer.buffer().buffer);
        assert_eq!(
            direct.channels[&channel_id].recipient_window_size,
            staged.channels[&channel_id].recipient_window_size
        );
        assert!(direct.channels[&channel_id].pending_data.is_empty());
    }

    #[test]
    fn flush_pending_with_writer_matches_staged_extended_data() {
        let channel_id = ChannelId(8);
        let mut staged = test_encrypted();
        let mut direct = test_encrypted();
        let mut staged_channel = test_channel(channel_id, 42, false, false);
        staged_channel.pending_data = VecDeque::from([(Bytes::from_static(b"hello"), Some(1), 0)]);
        let mut direct_channel = test_channel(channel_id, 42, false, false);
        direct_channel.pending_data = VecDeque::from([(Bytes::from_static(b"hello"), Some(1), 0)]);
        staged.channels.insert(channel_id, staged_channel);
        direct.channels.insert(channel_id, direct_channel);

        let mut staged_writer = PacketWriter::clear();
        staged.flush_pending(channel_id).unwrap();
        staged
            .flush(&Limits::default(), &mut staged_writer, false)
            .unwrap();

        let mut direct_writer = PacketWriter::clear();
        direct
            .flush_pending_with_writer(&mut direct_writer, channel_id, false)
            .unwrap();

        assert_eq!(direct_writer.buffer().buffer, staged_writer.buffer().buffer);
        assert!(direct.channels[&channel_id].pending_data.is_empty());
    }

    #[test]
    fn flush_pending_with_writer_falls_back_when_write_queue_nonempty() {
        let channel_id = ChannelId(9);
        let mut encrypted = test_encrypted();
        encrypted
            .channels
            .insert(channel_id, test_channel(channel_id, 42, false, false));
        push_packet!(encrypted.write, encrypted.write.push(msg::REQUEST_SUCCESS));

        let mut writer = PacketWriter::clear();
        encrypted
            .flush_pending_with_writer(&mut writer, channel_id, false)
            .unwrap();

        assert!(writer.buffer().buffer.is_empty());
        assert_eq!(
            packet_types(&encrypted.write),
            vec![msg::REQUEST_SUCCESS, msg::CHANNEL_DATA]
        );
    }

    #[test]
    fn flush_pending_with_writer_preserves_partial_window_remainder() {
        let channel_id = ChannelId(13);
        let payload = Bytes::from_static(b"abcdef");
        let mut encrypted = test_encrypted();
        let mut channel = test_channel_windowed(channel_id, 42, 3, false, false);
        channel.pending_data = VecDeque::from([(payload.clone(), None, 0)]);
        encrypted.channels.insert(channel_id, channel);

        let mut writer = PacketWriter::clear();
        encrypted
            .flush_pending_with_writer(&mut writer, channel_id, false)
            .unwrap();

        let channel = &encrypted.channels[&channel_id];
        assert_eq!(
            clear_packet_types(&writer.buffer().buffer),
            vec![msg::CHANNEL_DATA]
        );
        assert_eq!(channel.recipient_window_size, 0);
        assert_eq!(channel.pending_data.len(), 1);
        let pending = channel.pending_data.back().unwrap();
        assert_eq!(pending.0, payload);
        assert_eq!(pending.1, None);
        assert_eq!(pending.2, 3);
    }

    #[test]
    fn flush_pending_with_writer_emits_controls_after_replayed_data() {
        let channel_id = ChannelId(14);
        let mut encrypted = test_encrypted();
        encrypted
            .channels
            .insert(channel_id, test_channel(channel_id, 42, true, true));

        let mut writer = PacketWriter::clear();
        encrypted
            .flush_pending_with_writer(&mut writer, channel_id, false)
            .unwrap();
        encrypted
            .flush(&Limits::default(), &mut writer, false)
            .unwrap();

        assert_eq!(
            clear_packet_types(&writer.buffer().buffer),
            vec![msg::CHANNEL_DATA, msg::CHANNEL_EOF, msg::CHANNEL_CLOSE]
        );
        assert!(!encrypted.channels.contains_key(&channel_id));
    }

    #[test]
    fn nothing_reaches_the_wire_while_rekeying() {
        // RFC 4253 s7.1: only transport-layer messages may go out between
        // KEXINIT and NEWKEYS. Regression test for #761.
        let channel_id = ChannelId(15);
        let mut encrypted = test_encrypted();
        encrypted
            .channels
            .insert(channel_id, test_channel(channel_id, 42, true, true));

        let mut writer = PacketWriter::clear();
        encrypted
            .flush_pending_with_writer(&mut writer, channel_id, true)
            .unwrap();
        encrypted
            .flush(&Limits::default(), &mut writer, true)
            .unwrap();
        assert!(clear_packet_types(&writer.buffer().buffer).is_empty());

        // ...and it all comes out, in order, once the kex is done.
        encrypted
            .flush(&Limits::default(), &mut writer, false)
            .unwrap();
        assert_eq!(
            clear_packet_types(&writer.buffer().buffer),
            vec![msg::CHANNEL_DATA, msg::CHANNEL_EOF, msg::CHANNEL_CLOSE]
        );
    }

    #[test]
    fn data_direct_matches_staged_channel_data() {
        let channel_id = ChannelId(20);
        let payload = Bytes::from_static(b"direct channel data");
        let mut staged = test_encrypted();
        let mut direct = test_encrypted();
        staged
            .channels
            .insert(channel_id, test_ready_channel(channel_id, 42));
        direct
            .channels
            .insert(channel_id, test_ready_channel(channel_id, 42));

        let mut staged_writer = PacketWriter::clear();
        staged.data(channel_id, payload.clone(), false).unwrap();
        staged
            .flush(&Limits::default(), &mut staged_writer, false)
            .unwrap();

        let mut direct_writer = PacketWriter::clear();
        direct
            .data_with_writer(&mut direct_writer, channel_id, payload, false)
            .unwrap();

        assert_eq!(direct_writer.buffer().buffer, staged_writer.buffer().buffer);
        assert_eq!(
            direct.channels[&channel_id].recipient_window_size,
            staged.channels[&channel_id].recipient_window_size
        );
        assert!(direct.channels[&channel_id].pending_data.is_empty());
    }

    #[test]
    fn extended_data_direct_matches_staged_channel_data() {
        let channel_id = ChannelId(21);
        let payload = Bytes::from_static(b"direct extended channel data");
        let mut staged = test_encrypted();
        let mut direct = test_encrypted();
        staged
            .channels
            .insert(channel_id, test_ready_channel(channel_id, 43));
        direct
            .channels
            .insert(channel_id, test_ready_channel(channel_id, 43));

        let mut staged_writer = PacketWriter::clear();
        staged
            .extended_data(channel_id, 1, payload.clone(), false)
            .unwrap();
        staged
            .flush(&Limits::default(), &mut staged_writer, false)
            .unwrap();

        let mut direct_writer = PacketWriter::clear();
        direct
            .extended_data_with_writer(&mut direct_writer, channel_id, 1, payload, false)
            .unwrap();

        assert_eq!(direct_writer.buffer().buffer, staged_writer.buffer().buffer);
        assert_eq!(
            direct.channels[&channel_id].recipient_window_size,
            staged.channels[&channel_id].recipient_window_size
        );
        assert!(direct.channels[&channel_id].pending_data.is_empty());
    }

    #[test]
    fn data_direct_is_disabled_when_write_queue_nonempty() {
        let channel_id = ChannelId(22);
        let mut encrypted = test_encrypted();
        encrypted
            .channels
            .insert(channel_id, test_ready_channel(channel_id, 44));
        push_packet!(encrypted.write, encrypted.write.push(msg::REQUEST_SUCCESS));

        let mut writer = PacketWriter::clear();
        encrypted
            .data_with_writer(&mut writer, channel_id, Bytes::from_static(b"new"), false)
            .unwrap();

        assert!(writer.buffer().buffer.is_empty());
        assert_eq!(
            packet_types(&encrypted.write),
            vec![msg::REQUEST_SUCCESS, msg::CHANNEL_DATA]
        );

        encrypted
            .flush(&Limits::default(), &mut writer, false)
            .unwrap();
        assert_eq!(
            clear_packet_types(&writer.buffer().buffer),
            vec![msg::REQUEST_SUCCESS, msg::CHANNEL_DATA]
        );
    }

    #[test]
    fn data_staged_large_payload_when_write_queue_nonempty_preserves_order_and_chunks() {
        let channel_id = ChannelId(26);
        let mut encrypted = test_encrypted();
        let mut channel = test_ready_channel(channel_id, 48);
        channel.recipient_window_size = 256 * 1024;
        channel.recipient_maximum_packet_size = 32 * 1024;
        encrypted.channels.insert(channel_id, channel);
        push_packet!(encrypted.write, encrypted.write.push(msg::REQUEST_SUCCESS));

        let mut writer = PacketWriter::clear();
        encrypted
            .data_with_writer(
                &mut writer,
                channel_id,
                Bytes::from(vec![0x5a; 256 * 1024]),
                false,
            )
            .unwrap();

        assert!(writer.buffer().buffer.is_empty());
        let packet_types = packet_types(&encrypted.write);
        assert_eq!(packet_types.first(), Some(&msg::REQUEST_SUCCESS));
        assert_eq!(packet_types.len(), 9);
        assert!(
            packet_types
                .iter()
                .skip(1)
                .all(|&msg_type| msg_type == msg::CHANNEL_DATA)
        );
        assert!(encrypted.channels[&channel_id].pending_data.is_empty());
        assert_eq!(encrypted.channels[&channel_id].recipient_window_size, 0);
    }

    #[test]
    fn data_staged_rejects_zero_recipient_max_packet_size() {
        let channel_id = ChannelId(27);
        let mut encrypted = test_encrypted();
        let mut channel = test_ready_channel(channel_id, 49);
        channel.recipient_maximum_packet_size = 0;
        encrypted.channels.insert(channel_id, channel);

        let result = encrypted.data(channel_id, Bytes::from_static(b"new"), false);

        assert!(matches!(result, Err(crate::Error::Inconsistent)));
        assert!(encrypted.write.is_empty());
        assert_eq!(encrypted.channels[&channel_id].recipient_window_size, 1024);
    }

    #[test]
    fn data_direct_rejects_zero_recipient_max_packet_size() {
        let channel_id = ChannelId(28);
        let mut encrypted = test_encrypted();
        let mut channel = test_ready_channel(channel_id, 50);
        channel.recipient_maximum_packet_size = 0;
        encrypted.channels.insert(channel_id, channel);

        let mut writer = PacketWriter::clear();
        let result =
            encrypted.data_with_writer(&mut writer, channel_id, Bytes::from_static(b"new"), false);

        assert!(matches!(result, Err(crate::Error::Inconsistent)));
        assert!(writer.buffer().buffer.is_empty());
        assert!(encrypted.write.is_empty());
        assert_eq!(encrypted.channels[&channel_id].recipient_window_size, 1024);
    }

    #[test]
    fn data_direct_is_disabled_while_rekeying() {
        let channel_id = ChannelId(23);
        let mut encrypted = test_encrypted();
        encrypted
            .channels
            .insert(channel_id, test_ready_channel(channel_id, 45));

        let mut writer = PacketWriter::clear();
        encrypted
            .data_with_writer(&mut writer, channel_id, Bytes::from_static(b"new"), true)
            .unwrap();

        let channel = &encrypted.channels[&channel_id];
        assert_eq!(channel.pending_data.len(), 1);
        assert_eq!(channel.pending_data.back().unwrap().0.as_ref(), b"new");
        assert_eq!(channel.pending_data.back().unwrap().1, None);
        assert!(encrypted.write.is_empty());
        assert!(writer.buffer().buffer.is_empty());
    }

    #[test]
    fn data_direct_queues_remainder_when_window_is_partial() {
        let channel_id = ChannelId(24);
        let payload = Bytes::from_static(b"abcdef");
        let mut encrypted = test_encrypted();
        let mut channel = test_ready_channel(channel_id, 46);
        channel.recipient_window_size = 3;
        encrypted.channels.insert(channel_id, channel);

        let mut writer = PacketWriter::clear();
        encrypted
            .data_with_writer(&mut writer, channel_id, payload.clone(), false)
            .unwrap();

        let channel = &encrypted.channels[&channel_id];
        assert_eq!(
            clear_packet_types(&writer.buffer().buffer),
            vec![msg::CHANNEL_DATA]
        );
        assert_eq!(channel.recipient_window_size, 0);
        assert_eq!(channel.pending_data.len(), 1);
        let pending = channel.pending_data.back().unwrap();
        assert_eq!(pending.0, payload);
        assert_eq!(pending.1, None);
        assert_eq!(pending.2, 3);
    }

    #[test]
    fn data_direct_disabled_behind_existing_pending_data() {
        let channel_id = ChannelId(25);
        let mut encrypted = test_encrypted();
        encrypted
            .channels
            .insert(channel_id, test_channel(channel_id, 47, false, false));

        let mut writer = PacketWriter::clear();
        encrypted
            .data_with_writer(&mut writer, channel_id, Bytes::from_static(b"new"), false)
            .unwrap();

        let channel = &encrypted.channels[&channel_id];
        assert_eq!(channel.pending_data.len(), 2);
        assert_eq!(channel.pending_data.front().unwrap().0.as_ref(), b"hello");
        assert_eq!(channel.pending_data.back().unwrap().0.as_ref(), b"new");
        assert!(encrypted.write.is_empty());
        assert!(writer.buffer().buffer.is_empty());
    }

    // burrow: consumption-based flow control (adjust_window_size / consume_window).

    const BURROW_WINDOW: u32 = 8192; // with max packet 1024: re-open once > 3072 missing

    fn burrow_encrypted(channel_id: ChannelId) -> Encrypted {
        let mut encrypted = test_encrypted();
        let mut channel = test_ready_channel(channel_id, 47);
        channel.sender_window_size = BURROW_WINDOW;
        encrypted.channels.insert(channel_id, channel);
        encrypted
    }

    /// The WINDOW_ADJUST packets in `write`, as (recipient channel, amount).
    fn burrow_window_adjusts(write: &[u8]) -> Vec<(u32, u32)> {
        let mut adjusts = Vec::new();
        let mut cursor = 0;
        while cursor < write.len() {
            let len = BigEndian::read_u32(&write[cursor..]) as usize;
            let packet = &write[cursor + 4..cursor + 4 + len];
            assert_eq!(packet[0], msg::CHANNEL_WINDOW_ADJUST);
            adjusts.push((
                BigEndian::read_u32(&packet[1..]),
                BigEndian::read_u32(&packet[5..]),
            ));
            cursor += 4 + len;
        }
        adjusts
    }

    #[test]
    fn burrow_queued_data_waits_for_consumption() {
        let id = ChannelId(3);
        let mut encrypted = burrow_encrypted(id);
        let data = vec![0u8; 6000];
        assert!(!encrypted.adjust_window_size(id, &data, BURROW_WINDOW, true).unwrap());
        assert!(encrypted.write.is_empty());
        assert_eq!(encrypted.channels[&id].sender_window_size, 2192);

        // Without a consumer the window re-opens right away, as before.
        let mut encrypted = burrow_encrypted(id);
        assert!(encrypted.adjust_window_size(id, &data, BURROW_WINDOW, false).unwrap());
        assert_eq!(burrow_window_adjusts(&encrypted.write), vec![(47, 6000)]);
        assert_eq!(encrypted.channels[&id].sender_window_size, BURROW_WINDOW);
    }

    #[test]
    fn burrow_consume_window_follows_openssh() {
        let id = ChannelId(3);
        let mut encrypted = burrow_encrypted(id);
        encrypted.adjust_window_size(id, &[0; 3000], BURROW_WINDOW, true).unwrap();
        // 3000 missing: neither > 3 packets (3072) nor below half the window yet.
        assert!(!encrypted.consume_window(id, 2000, BURROW_WINDOW).unwrap());
        assert!(!encrypted.consume_window(id, 1000, BURROW_WINDOW).unwrap());
        assert!(encrypted.write.is_empty());
        encrypted.adjust_window_size(id, &[0; 100], BURROW_WINDOW, true).unwrap();
        assert!(encrypted.consume_window(id, 100, BURROW_WINDOW).unwrap());
        assert_eq!(burrow_window_adjusts(&encrypted.write), vec![(47, 3100)]);
        assert_eq!(encrypted.channels[&id].sender_window_size, BURROW_WINDOW);
        // Credits for a channel that is gone are ignored.
        assert!(!encrypted.consume_window(ChannelId(99), 5000, BURROW_WINDOW).unwrap());
    }

    #[test]
    fn burrow_overrun_closes_window_and_is_not_inflated() {
        let id = ChannelId(3);
        let mut encrypted = burrow_encrypted(id);
        encrypted.adjust_window_size(id, &[0; 8192], BURROW_WINDOW, true).unwrap();
        // 500 bytes beyond the window: tolerated (< 10%), but the window stays shut...
        encrypted.adjust_window_size(id, &[0; 500], BURROW_WINDOW, true).unwrap();
        assert_eq!(encrypted.channels[&id].sender_window_size, 0);
        // ...and consuming all 8692 bytes grants no more than the full window.
        assert!(encrypted.consume_window(id, 8692, BURROW_WINDOW).unwrap());
        assert_eq!(burrow_window_adjusts(&encrypted.write), vec![(47, BURROW_WINDOW)]);
        assert_eq!(encrypted.channels[&id].sender_window_size, BURROW_WINDOW);
        // More than 10% of the window in total beyond it: the session is cut off.
        encrypted.adjust_window_size(id, &[0; 8192], BURROW_WINDOW, true).unwrap();
        assert!(matches!(
            encrypted.adjust_window_size(id, &[0; 400], BURROW_WINDOW, true),
            Err(crate::Error::Inconsistent)
        ));
    }

    // burrow: adaptive window (window probes, `window_probe_reply`).

    /// The message types of the packets in `write`.
    fn burrow_packet_types(write: &[u8]) -> Vec<u8> {
        let mut types = Vec::new();
        let mut cursor = 0;
        while cursor < write.len() {
            let len = BigEndian::read_u32(&write[cursor..]) as usize;
            types.push(write[cursor + 4]);
            cursor += 4 + len;
        }
        types
    }

    #[test]
    fn burrow_window_doubles_when_a_round_trip_carries_the_whole_window() {
        let id = ChannelId(3);
        let mut encrypted = burrow_encrypted(id);
        encrypted.allow_window_probe(id);
        encrypted.adjust_window_size(id, &[0; 4000], BURROW_WINDOW, true).unwrap();
        assert!(encrypted.consume_window(id, 4000, BURROW_WINDOW).unwrap());
        // The adjust, then the probe right behind it.
        assert_eq!(
            burrow_packet_types(&encrypted.write),
            vec![msg::CHANNEL_WINDOW_ADJUST, msg::CHANNEL_REQUEST]
        );
        let name = super::WINDOW_PROBE_REQUEST.as_bytes();
        assert!(encrypted.write.windows(name.len()).any(|w| w == name));
        encrypted.write.clear();
        // The whole window arrives before the answer: the window is what limits.
        encrypted.adjust_window_size(id, &[0; 8192], BURROW_WINDOW, true).unwrap();
        assert!(encrypted.window_probe_reply(id, BURROW_WINDOW, None).unwrap());
        assert_eq!(burrow_window_adjusts(&encrypted.write), vec![(47, BURROW_WINDOW)]);
        assert_eq!(encrypted.channels[&id].receive_window_max, 2 * BURROW_WINDOW);
        assert_eq!(encrypted.channels[&id].sender_window_size, BURROW_WINDOW);
        // Consumption is now re-granted up to the grown target.
        encrypted.write.clear();
        assert!(encrypted.consume_window(id, 8192, BURROW_WINDOW).unwrap());
        assert_eq!(encrypted.channels[&id].sender_window_size, 2 * BURROW_WINDOW);
        // A reply when no probe is in flight belongs to the application.
        encrypted.adjust_window_size(id, &[0; 10], BURROW_WINDOW, true).unwrap();
        assert!(encrypted.window_probe_reply(id, BURROW_WINDOW, None).unwrap());
        assert!(!encrypted.window_probe_reply(id, BURROW_WINDOW, None).unwrap());
    }

    #[test]
    fn burrow_window_stays_when_a_round_trip_carries_little() {
        let id = ChannelId(3);
        let mut encrypted = burrow_encrypted(id);
        encrypted.allow_window_probe(id);
        encrypted.adjust_window_size(id, &[0; 4000], BURROW_WINDOW, true).unwrap();
        assert!(encrypted.consume_window(id, 4000, BURROW_WINDOW).unwrap());
        encrypted.write.clear();
        encrypted.adjust_window_size(id, &[0; 1000], BURROW_WINDOW, true).unwrap();
        assert!(encrypted.window_probe_reply(id, BURROW_WINDOW, None).unwrap());
        assert!(encrypted.write.is_empty());
        assert_eq!(encrypted.channels[&id].receive_window_max, 0);
    }

    /// A window that arrives in one burst per round trip, the probe going out with the first
    /// adjust of the burst: the answer, which overtakes the data that adjust released, is
    /// followed at once by the next burst. Only the burst's tail arrives while the probe is
    /// out, but the cycle since the previous answer holds the whole burst.
    #[test]
    fn burrow_window_grows_when_bursts_hide_from_the_probe() {
        let id = ChannelId(3);
        let mut encrypted = burrow_encrypted(id);
        encrypted.allow_window_probe(id);
        let t0 = std::time::Instant::now();
        let ms = std::time::Duration::from_millis;
        let (head, tail) = (3200, BURROW_WINDOW as usize - 3200); // tail < 3/4 of the window
        encrypted.adjust_window_size(id, &vec![0; head], BURROW_WINDOW, true).unwrap();
        assert!(encrypted.consume_window_at(id, head as u32, BURROW_WINDOW, t0).unwrap());
        encrypted.adjust_window_size(id, &vec![0; tail], BURROW_WINDOW, true).unwrap();
        assert!(encrypted.consume_window_at(id, tail as u32, BURROW_WINDOW, t0 + ms(5)).unwrap());
        // The first probe counts from its own start: the tail alone, too little.
        assert!(encrypted.window_probe_reply_at(id, BURROW_WINDOW, None, t0 + ms(100)).unwrap());
        assert_eq!(encrypted.channels[&id].receive_window_max, 0);
        // The next burst: its head before the probe, its tail while the probe is out.
        encrypted.adjust_window_size(id, &vec![0; head], BURROW_WINDOW, true).unwrap();
        encrypted.write.clear();
        assert!(encrypted.consume_window_at(id, head as u32, BURROW_WINDOW, t0 + ms(102)).unwrap());
        assert_eq!(
            burrow_packet_types(&encrypted.write),
            vec![msg::CHANNEL_WINDOW_ADJUST, msg::CHANNEL_REQUEST]
        );
        encrypted.adjust_window_size(id, &vec![0; tail], BURROW_WINDOW, true).unwrap();
        assert!(encrypted.window_probe_reply_at(id, BURROW_WINDOW, None, t0 + ms(202)).unwrap());
        assert_eq!(encrypted.channels[&id].receive_window_max, 2 * BURROW_WINDOW);
    }

    /// A slow peer: a window's worth arrives, but over ten round trips, not one.
    #[test]
    fn burrow_window_stays_when_a_cycle_spans_many_round_trips() {
        let id = ChannelId(3);
        let mut encrypted = burrow_encrypted(id);
        encrypted.allow_window_probe(id);
        let t0 = std::time::Instant::now();
        let ms = std::time::Duration::from_millis;
        encrypted.adjust_window_size(id, &[0; 4000], BURROW_WINDOW, true).unwrap();
        assert!(encrypted.consume_window_at(id, 4000, BURROW_WINDOW, t0).unwrap());
        assert!(encrypted.window_probe_reply_at(id, BURROW_WINDOW, None, t0 + ms(100)).unwrap());
        encrypted.adjust_window_size(id, &[0; 4000], BURROW_WINDOW, true).unwrap();
        assert!(encrypted.consume_window_at(id, 4000, BURROW_WINDOW, t0 + ms(1000)).unwrap());
        encrypted.adjust_window_size(id, &[0; 4000], BURROW_WINDOW, true).unwrap();
        assert!(encrypted.window_probe_reply_at(id, BURROW_WINDOW, None, t0 + ms(1100)).unwrap());
        assert_eq!(encrypted.channels[&id].receive_window_max, 0);
    }

    /// One 100 ms probe cycle on `id`, from `start`: a little data re-opens the window and
    /// sends the probe, then the whole current window arrives before the answer. Returns
    /// whether the window grew.
    fn burrow_full_round_trip(
        encrypted: &mut Encrypted,
        id: ChannelId,
        budget: &std::sync::Arc<dyn crate::WindowBudget>,
        start: std::time::Instant,
    ) -> bool {
        let before = encrypted.channels[&id].receive_window_max.max(BURROW_WINDOW);
        encrypted.adjust_window_size(id, &[0; 4000], BURROW_WINDOW, true).unwrap();
        assert!(encrypted.consume_window_at(id, 4000, BURROW_WINDOW, start).unwrap());
        let window = vec![0; before as usize];
        encrypted.adjust_window_size(id, &window, BURROW_WINDOW, true).unwrap();
        encrypted.write.clear();
        let answer = start + std::time::Duration::from_millis(100);
        let reply = encrypted.window_probe_reply_at(id, BURROW_WINDOW, Some(budget), answer);
        assert!(reply.unwrap());
        let grew = encrypted.channels[&id].receive_window_max > before;
        // A window that stays sends no adjust.
        assert_eq!(grew, !encrypted.write.is_empty());
        encrypted.consume_window_at(id, window.len() as u32, BURROW_WINDOW, answer).unwrap();
        grew
    }

    /// Growth takes its bytes from the session's budget: a channel grows while the budget has
    /// them, another channel of the session finds it spent (its window stays), and a closed
    /// channel gives back everything it took once its queue is gone too.
    #[test]
    fn burrow_window_grows_only_within_its_budget_and_gives_it_back() {
        let (a, b) = (ChannelId(3), ChannelId(4));
        let mut encrypted = burrow_encrypted(a);
        let mut channel = test_ready_channel(b, 48);
        channel.sender_window_size = BURROW_WINDOW;
        encrypted.channels.insert(b, channel);
        encrypted.allow_window_probe(a);
        encrypted.allow_window_probe(b);
        let counted = crate::BurrowTestBudget::new(3 * u64::from(BURROW_WINDOW));
        let budget: std::sync::Arc<dyn crate::WindowBudget> = counted.clone();
        let used = || counted.used();
        let t0 = std::time::Instant::now();
        let cycle = |n: u32| t0 + n * std::time::Duration::from_millis(100);

        assert!(burrow_full_round_trip(&mut encrypted, a, &budget, cycle(0)));
        assert_eq!(used(), u64::from(BURROW_WINDOW));
        assert!(burrow_full_round_trip(&mut encrypted, a, &budget, cycle(1)));
        assert_eq!(used(), 3 * u64::from(BURROW_WINDOW));
        // Spent: b's window stays at the configured size.
        assert!(!burrow_full_round_trip(&mut encrypted, b, &budget, cycle(2)));
        assert_eq!(encrypted.channels[&b].receive_window_max, 0);
        // a's growth is given back when a and its queue are gone (the queue keeps the data
        // the grown window let in past the close), and b can grow.
        let (queue, read_half) = crate::channels::ChannelRef::new(10);
        queue.hold_window_growth(encrypted.window_growth(a).unwrap());
        encrypted.channels.remove(&a);
        assert_eq!(used(), 3 * u64::from(BURROW_WINDOW));
        drop(queue);
        assert_eq!(used(), 3 * u64::from(BURROW_WINDOW));
        drop(read_half);
        assert_eq!(used(), 0);
        assert!(burrow_full_round_trip(&mut encrypted, b, &budget, cycle(3)));
        assert_eq!(used(), u64::from(BURROW_WINDOW));
        drop(encrypted);
        assert_eq!(used(), 0);
    }

    /// A grown window allows the same overrun as the configured one (10% of it), not 10% of
    /// the grown size, which would be queued past the budget the growth came from.
    #[test]
    fn burrow_overrun_past_a_tenth_of_the_configured_window_cuts_a_grown_channel_off() {
        let id = ChannelId(3);
        let mut encrypted = burrow_encrypted(id);
        encrypted.allow_window_probe(id);
        let budget: std::sync::Arc<dyn crate::WindowBudget> = crate::BurrowTestBudget::new(1 << 30);
        let t0 = std::time::Instant::now();
        assert!(burrow_full_round_trip(&mut encrypted, id, &budget, t0));
        let open = encrypted.channels[&id].sender_window_size as usize;
        let over = BURROW_WINDOW as usize / 10 + 1;
        assert!(matches!(
            encrypted.adjust_window_size(id, &vec![0; open + over], BURROW_WINDOW, true),
            Err(crate::Error::Inconsistent)
        ));
    }

    #[test]
    fn burrow_per_round_trip_scales_by_the_cycle() {
        let ms = std::time::Duration::from_millis;
        assert_eq!(super::per_round_trip(1000, ms(100), ms(100)), 1000);
        assert_eq!(super::per_round_trip(1000, ms(100), ms(400)), 250);
        assert_eq!(super::per_round_trip(1000, ms(0), ms(0)), 1000);
        assert_eq!(super::per_round_trip(u64::MAX, ms(1), ms(2)), u64::MAX / 2);
    }

    #[test]
    fn burrow_window_probe_only_on_forwards_and_below_the_limit() {
        let id = ChannelId(3);
        // Not allowed (a session channel): adjusts only, and replies go to the application.
        let mut encrypted = burrow_encrypted(id);
        encrypted.adjust_window_size(id, &[0; 4000], BURROW_WINDOW, true).unwrap();
        assert!(encrypted.consume_window(id, 4000, BURROW_WINDOW).unwrap());
        assert_eq!(burrow_window_adjusts(&encrypted.write), vec![(47, 4000)]);
        assert!(!encrypted.window_probe_reply(id, BURROW_WINDOW, None).unwrap());
        // At the limit: no more probes.
        let mut encrypted = burrow_encrypted(id);
        encrypted.allow_window_probe(id);
        encrypted.channels.get_mut(&id).unwrap().receive_window_max = super::RECEIVE_WINDOW_LIMIT;
        encrypted.adjust_window_size(id, &[0; 4000], BURROW_WINDOW, true).unwrap();
        assert!(encrypted.consume_window(id, 4000, BURROW_WINDOW).unwrap());
        assert_eq!(burrow_packet_types(&encrypted.write), vec![msg::CHANNEL_WINDOW_ADJUST]);
    }
}
