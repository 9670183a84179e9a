//! The relay's side of resumable streams: one stream registry per (authenticated key, client
//! instance), so only the same key can ever see, let alone re-attach, its streams; and opening
//! `forwarded-tcpip` channels on whichever session of that instance is current. Every stream's
//! replay buffer is reserved from its key's budget and the relay's (see
//! [`crate::budget`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::budget::{BudgetConfig, KeyedBudgets};
use crate::resume::{BoxedIo, ChannelSpec, Opener, Registry, ResumeConfig, ResumeStats};

/// A key fingerprint and a client's instance id.
type InstanceKey = (String, [u8; 16]);

/// Registries by key fingerprint and instance id.
pub struct Instances {
    /// Counters over every instance, past and present.
    pub stats: Arc<ResumeStats>,
    config: ResumeConfig,
    cancel: CancellationToken,
    /// Weak: a registry lives as long as a session of its instance or one of its streams.
    map: Mutex<HashMap<InstanceKey, Weak<Registry>>>,
    /// Per key, shared by its instances; each registry holds its key's budgets, each
    /// reservation both.
    budgets: KeyedBudgets,
}

impl Instances {
    /// No instances yet; every stream stops when `cancel` is cancelled (relay shutdown).
    pub fn new(config: ResumeConfig, budgets: BudgetConfig, cancel: CancellationToken) -> Self {
        Self {
            stats: Arc::default(),
            config,
            cancel,
            map: Mutex::new(HashMap::new()),
            budgets: KeyedBudgets::new(budgets),
        }
    }

    /// Bytes the replay buffers of every stream have reserved now.
    pub fn reserved(&self) -> u64 {
        self.budgets.reserved()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InstanceKey, Weak<Registry>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The registry of `instance` under key `fp`, now served by `handle`: streams this relay
    /// opened move to it. Forgets instances that no session and no stream holds any more.
    pub fn bind(
        &self,
        fp: &str,
        instance: [u8; 16],
        handle: russh::server::Handle,
    ) -> Arc<Registry> {
        let registry = self.registry(fp, instance);
        registry.set_opener(Some(Arc::new(ServerOpener(handle))));
        registry
    }

    /// The registry of `instance` under key `fp`; a new one if none is alive.
    fn registry(&self, fp: &str, instance: [u8; 16]) -> Arc<Registry> {
        let mut map = self.lock();
        map.retain(|_, r| r.strong_count() > 0);
        let key = (fp.to_string(), instance);
        let registry = match map.get(&key).and_then(Weak::upgrade) {
            Some(r) => r,
            None => {
                let r = Registry::with_budgets(
                    self.config,
                    self.cancel.child_token(),
                    self.stats.clone(),
                    Some(self.budgets.for_key(fp)),
                );
                map.insert(key, Arc::downgrade(&r));
                r
            }
        };
        drop(map);
        registry
    }
}

/// The relay's end of one session's resume control channel: the client's instance id binds the
/// session to that instance's streams, one answer goes back, then acknowledgements travel both
/// ways ([`crate::resume::control`]).
pub struct Control {
    channel: russh::ChannelId,
    /// What arrived and is not a whole message yet (at most one message's worth).
    buf: Vec<u8>,
    /// Where our acknowledgements go once bound; waits for the channel's window, so a client
    /// that never reads them only stalls its own acknowledgements (they coalesce, one per
    /// stream), never grows the relay's memory.
    writer: Option<russh::ChannelWriteHalf<russh::server::Msg>>,
    /// The session's registry once the instance id came; None before.
    registry: Option<Arc<Registry>>,
    /// The client sent something else: the channel was closed and what follows is ignored.
    broken: bool,
}

/// What the handler does with bytes that arrived on the control channel.
pub enum ControlStep {
    /// Nothing (incomplete, or applied).
    Nothing,
    /// The instance id is complete: bind the session to this instance, then call
    /// [`Control::bound`].
    Bind([u8; 16]),
    /// The client sent garbage (named): close the channel.
    Close(String),
}

impl Control {
    /// A control channel the client just asked for, written through `writer`.
    pub fn new(
        channel: russh::ChannelId,
        writer: Option<russh::ChannelWriteHalf<russh::server::Msg>>,
    ) -> Self {
        Self {
            channel,
            buf: Vec::new(),
            writer,
            registry: None,
            broken: false,
        }
    }

    /// The channel this is.
    pub fn channel(&self) -> russh::ChannelId {
        self.channel
    }

    /// Takes bytes from the client.
    pub fn data(&mut self, data: &[u8]) -> ControlStep {
        if self.broken {
            return ControlStep::Nothing;
        }
        self.buf.extend_from_slice(data);
        let step = match &self.registry {
            Some(registry) => {
                let taken = crate::resume::control::take_acks(&mut self.buf, |id, offset| {
                    registry.deliver_ack(id, offset)
                });
                match taken {
                    Ok(()) => ControlStep::Nothing,
                    Err(e) => ControlStep::Close(e),
                }
            }
            None => match crate::resume::parse_instance_message(&self.buf) {
                Ok(None) => ControlStep::Nothing,
                Ok(Some(instance)) => ControlStep::Bind(instance),
                Err(e) => ControlStep::Close(e),
            },
        };
        if let ControlStep::Close(_) = step {
            self.broken = true;
            self.buf = Vec::new();
        }
        step
    }

    /// The session is bound to `registry`: the answer is sent, our acknowledgements start
    /// going out (in a task `tracker` owns, until `cancel`), and anything that came after the
    /// instance id is applied. Returns the answer to send first.
    pub fn bound(
        &mut self,
        registry: Arc<Registry>,
        tracker: &tokio_util::task::TaskTracker,
        cancel: CancellationToken,
    ) -> (Vec<u8>, ControlStep) {
        self.buf.drain(..crate::resume::INSTANCE_MESSAGE_LEN);
        if let Some(writer) = self.writer.take() {
            // Now, not in the task: the newest session bound takes the acknowledgements.
            let claim = registry.outbox().claim();
            let outbox = registry.clone();
            tracker.spawn(async move {
                let send = crate::resume::control::send_acks(outbox.outbox(), claim, |batch| {
                    let writer = &writer;
                    async move { writer.data_bytes(batch).await.is_ok() }
                });
                tokio::select! {
                    () = send => {}
                    () = cancel.cancelled() => {}
                }
            });
        }
        self.registry = Some(registry);
        let answer = crate::resume::CONTROL_OK.to_vec();
        (answer, self.data(&[]))
    }
}

/// Opens `forwarded-tcpip` channels on one relay session.
struct ServerOpener(russh::server::Handle);

impl Opener for ServerOpener {
    fn open(
        &self,
        spec: ChannelSpec,
    ) -> futures::future::BoxFuture<'static, std::io::Result<BoxedIo>> {
        let handle = self.0.clone();
        async move {
            match spec {
                ChannelSpec::Forwarded {
                    addr,
                    port,
                    orig,
                    orig_port,
                } => handle
                    .channel_open_forwarded_tcpip(addr, port, orig, orig_port)
                    .await
                    .map(|ch| Box::new(ch.into_stream()) as BoxedIo)
                    .map_err(|e| std::io::Error::other(e.to_string())),
                ChannelSpec::Direct { .. } => Err(std::io::Error::other(
                    "a relay does not open direct-tcpip channels",
                )),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_sees_only_its_own_registries() {
        let instances = Instances::new(
            ResumeConfig::default(),
            BudgetConfig {
                per_key: 64 << 20,
                total: 1 << 30,
            },
            CancellationToken::new(),
        );
        let instance = [7; 16];
        let mine = instances.registry("SHA256:mine", instance);
        let again = instances.registry("SHA256:mine", instance);
        assert!(
            Arc::ptr_eq(&mine, &again),
            "same key and instance: same streams"
        );
        let theirs = instances.registry("SHA256:theirs", instance);
        assert!(
            !Arc::ptr_eq(&mine, &theirs),
            "another key with the same instance id gets a registry of its own"
        );
        let other_instance = instances.registry("SHA256:mine", [8; 16]);
        assert!(!Arc::ptr_eq(&mine, &other_instance));
        // One budget per key, whichever instance its streams come from.
        let mine_budget = instances.budgets.for_key("SHA256:mine").key;
        assert!(Arc::ptr_eq(
            &mine_budget,
            &instances.budgets.for_key("SHA256:mine").key
        ));
        assert!(!Arc::ptr_eq(
            &mine_budget,
            &instances.budgets.for_key("SHA256:theirs").key
        ));
        assert_eq!(mine_budget.limit(), 64 << 20);
        drop((mine, again, theirs));
        let fresh = instances.registry("SHA256:mine", instance);
        assert_eq!(fresh.stream_count(), 0, "a forgotten instance starts empty");
        assert_eq!(instances.lock().len(), 2, "dead entries are pruned");
    }
}
