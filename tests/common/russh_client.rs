//! A russh client driven directly by a test, for what `ssh` will not do: open channels before
//! authenticating, or send one-byte packets into a channel as fast as it can.

use std::net::SocketAddr;
use std::sync::Arc;

use super::keys::Keypair;

/// Trusts any host key: only ever pointed at the test's own relay on loopback.
pub struct TrustAll;

impl russh::client::Handler for TrustAll {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// A session to `addr` after the key exchange, not authenticated.
pub async fn connect(addr: SocketAddr) -> russh::client::Handle<TrustAll> {
    connect_with_config(addr, russh::client::Config::default()).await
}

/// [`connect`] with a client `config` of the test's own (e.g. small rekey limits).
pub async fn connect_with_config(
    addr: SocketAddr,
    config: russh::client::Config,
) -> russh::client::Handle<TrustAll> {
    russh::client::connect(Arc::new(config), addr, TrustAll)
        .await
        .expect("connect to the relay")
}

/// A session to `addr` authenticated as `root` with `key`.
pub async fn connect_with_key(addr: SocketAddr, key: &Keypair) -> russh::client::Handle<TrustAll> {
    authenticate(connect(addr).await, key).await
}

/// Authenticates `session` as `root` with `key`; panics unless the server accepts it.
pub async fn authenticate(
    mut session: russh::client::Handle<TrustAll>,
    key: &Keypair,
) -> russh::client::Handle<TrustAll> {
    let private = russh::keys::load_secret_key(&key.private, None).expect("load key");
    let auth = session
        .authenticate_publickey(
            "root",
            russh::keys::PrivateKeyWithHashAlg::new(Arc::new(private), None),
        )
        .await
        .expect("authentication exchange");
    assert!(auth.success(), "the relay accepts the key");
    session
}

/// Opens a direct-tcpip channel (what `-L` opens) through `session` to `target`.
pub async fn open_direct(
    session: &russh::client::Handle<TrustAll>,
    target: SocketAddr,
) -> russh::Channel<russh::client::Msg> {
    session
        .channel_open_direct_tcpip(
            target.ip().to_string(),
            u32::from(target.port()),
            "127.0.0.1",
            0,
        )
        .await
        .unwrap_or_else(|e| panic!("the relay did not open a channel to {target}: {e}"))
}
