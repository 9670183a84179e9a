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
    let config = Arc::new(russh::client::Config::default());
    russh::client::connect(config, addr, TrustAll)
        .await
        .expect("connect to the relay")
}

/// A session to `addr` authenticated as `root` with `key`.
pub async fn connect_with_key(addr: SocketAddr, key: &Keypair) -> russh::client::Handle<TrustAll> {
    let mut session = connect(addr).await;
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
