//! `burrow-permitremoteopen="host:port"`: a per-key limit on where connections through a
//! reverse dynamic forward (`ssh -R [bind:]port` without a target) may go.
//!
//! In OpenSSH the limit for reverse dynamic forwarding is the *client's* `PermitRemoteOpen`:
//! the SOCKS proxy runs on the client, and sshd only relays bytes (sshd_config has no such
//! option; its `PermitOpen` is for -L). burrow ssh honours PermitRemoteOpen the same way. A
//! relay operator may still want to bound what a key publishes, so for keys with this option
//! the relay reads the SOCKS request as it passes through — the request travels in-band, first
//! thing on the connection, and is read byte-exact so nothing after it is consumed — and
//! answers a destination the key may not reach with SOCKS "connection not allowed" itself,
//! without opening a channel to the client. Allowed requests are passed on unchanged.
//!
//! The relay cannot tell a SOCKS listener from a plain `-R port:host:hostport` one (both are the
//! same `tcpip-forward` request), so every -R listener of such a key must carry SOCKS:
//! connections that do not start with a SOCKS4/5 request are closed.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::policy::{permits, PermitOpen};
use crate::socks::{
    self, parse_greeting, parse_socks4, parse_socks5_request, Failure, RawRequest, Stage,
    TargetAddr,
};

/// How long the connecting program may take to send its SOCKS messages.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// SOCKS5 "no acceptable methods": the client will close.
const NO_ACCEPTABLE_METHOD: u8 = 0xFF;

/// Why a connection was not let through.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The destination is not in the key's list (the user got a SOCKS refusal).
    #[error("SOCKS request for {0} not in the key's burrow-permitremoteopen")]
    NotPermitted(String),
    /// The connection did not start with a SOCKS4/5 request.
    #[error("not a SOCKS request (first byte 0x{0:02x})")]
    NotSocks(u8),
    /// The SOCKS messages were malformed or incomplete.
    #[error(transparent)]
    Socks(#[from] socks::SocksError),
    /// The client's side went away (channel open refused, or closed mid-handshake).
    #[error("the client end closed during the SOCKS handshake")]
    ClientGone,
    /// The connecting program took too long.
    #[error("SOCKS handshake timed out")]
    Timeout,
}

/// Relays the SOCKS handshake from `user` to the channel `open` returns, letting it through
/// only for destinations in `allowed`. Returns the channel ready for the byte pump.
pub async fn admit<U, C, F, Fut>(
    user: &mut U,
    allowed: &[PermitOpen],
    open: F,
) -> Result<C, GateError>
where
    U: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Option<C>>,
{
    // The connecting program's messages have HANDSHAKE_TIMEOUT, not counting the wait for the
    // client to answer the channel open: that wait is not cut short, since an open cannot be
    // taken back and one the relay stopped waiting for would stay in the session until the
    // client answers it (a client that never does would grow it one open per timeout).
    let mut deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let first = within(deadline, async {
        user.read_u8()
            .await
            .map_err(|_| socks::SocksError::Closed(Stage::Start).into())
    })
    .await?;
    let (mut channel, to_channel) = match first {
        0x04 => {
            let bytes = within(deadline, async {
                let (request, bytes) =
                    socks::read_raw(user, first, Stage::Socks4, parse_socks4).await?;
                check(user, &request, allowed).await?;
                Ok(bytes)
            })
            .await?;
            (open_whole(open, &mut deadline).await?, bytes)
        }
        0x05 => {
            let (_, greeting) = within(deadline, async {
                Ok(socks::read_raw(user, first, Stage::Socks5Greeting, parse_greeting).await?)
            })
            .await?;
            let mut channel = open_whole(open, &mut deadline).await?;
            let bytes = within(deadline, async {
                send(&mut channel, &greeting).await?;
                let mut choice = [0u8; 2];
                channel
                    .read_exact(&mut choice)
                    .await
                    .map_err(|_| GateError::ClientGone)?;
                user.write_all(&choice)
                    .await
                    .map_err(|_| socks::SocksError::Closed(Stage::Socks5Greeting))?;
                if choice[1] == NO_ACCEPTABLE_METHOD {
                    return Err(GateError::ClientGone);
                }
                let first = user
                    .read_u8()
                    .await
                    .map_err(|_| socks::SocksError::Closed(Stage::Socks5Request))?;
                let (request, bytes) =
                    socks::read_raw(user, first, Stage::Socks5Request, parse_socks5_request)
                        .await?;
                check(user, &request, allowed).await?;
                Ok(bytes)
            })
            .await?;
            (channel, bytes)
        }
        other => return Err(GateError::NotSocks(other)),
    };
    within(deadline, send(&mut channel, &to_channel)).await?;
    Ok(channel)
}

/// `step`, or [`GateError::Timeout`] once `deadline` has passed.
async fn within<T>(
    deadline: tokio::time::Instant,
    step: impl Future<Output = Result<T, GateError>>,
) -> Result<T, GateError> {
    tokio::time::timeout_at(deadline, step)
        .await
        .map_err(|_| GateError::Timeout)?
}

/// The channel `open` returns, waited for whole; `deadline` moves by the wait, so the
/// connecting program keeps the time it had left.
async fn open_whole<C, F, Fut>(open: F, deadline: &mut tokio::time::Instant) -> Result<C, GateError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Option<C>>,
{
    let asked = tokio::time::Instant::now();
    let channel = open().await.ok_or(GateError::ClientGone);
    *deadline += asked.elapsed();
    channel
}

/// Refuses (with a SOCKS reply to `user`) a destination outside `allowed`.
async fn check<U: AsyncWrite + Unpin>(
    user: &mut U,
    request: &RawRequest,
    allowed: &[PermitOpen],
) -> Result<(), GateError> {
    let (host, port) = match &request.target {
        TargetAddr::Ip(a) => (a.ip().to_string(), a.port()),
        TargetAddr::Domain(h, p) => (h.clone(), *p),
    };
    if permits(allowed, &host, port) {
        return Ok(());
    }
    let _ = socks::reply(user, request.version, Err(Failure::NotAllowed)).await;
    Err(GateError::NotPermitted(request.target.to_string()))
}

async fn send<C: AsyncWrite + Unpin>(channel: &mut C, bytes: &[u8]) -> Result<(), GateError> {
    channel
        .write_all(bytes)
        .await
        .map_err(|_| GateError::ClientGone)?;
    channel.flush().await.map_err(|_| GateError::ClientGone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::policy::parse_permit_open;

    fn allowed() -> Vec<PermitOpen> {
        vec![parse_permit_open("db.internal:5432").unwrap()]
    }

    /// The client end: a duplex whose far side records what arrives and answers SOCKS5
    /// method selection with "no auth".
    async fn run(user_bytes: Vec<u8>) -> (Result<(), String>, Vec<u8>, Vec<u8>) {
        let (mut user_near, mut user_far) = tokio::io::duplex(1024);
        let (chan_near, mut chan_far) = tokio::io::duplex(1024);
        user_far.write_all(&user_bytes).await.unwrap();
        let client = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 256];
            while let Ok(n) = chan_far.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                if seen.first() == Some(&0x05) && seen.len() == 3 {
                    chan_far.write_all(&[0x05, 0x00]).await.unwrap();
                }
            }
            seen
        });
        let list = allowed();
        let result = admit(&mut user_near, &list, || async { Some(chan_near) })
            .await
            .map(drop)
            .map_err(|e| e.to_string());
        drop(user_near);
        let mut back = Vec::new();
        user_far.read_to_end(&mut back).await.unwrap();
        (result, client.await.unwrap(), back)
    }

    fn socks5_connect_domain(host: &str, port: u16) -> Vec<u8> {
        let mut v = vec![0x05, 0x01, 0x00, 0x05, 0x01, 0x00, 0x03, host.len() as u8];
        v.extend_from_slice(host.as_bytes());
        v.extend_from_slice(&port.to_be_bytes());
        v
    }

    #[tokio::test]
    async fn allowed_socks5_request_passes_unchanged() {
        let bytes = socks5_connect_domain("db.internal", 5432);
        let (result, at_client, to_user) = run(bytes.clone()).await;
        assert_eq!(result, Ok(()));
        assert_eq!(
            at_client, bytes,
            "greeting and request relayed byte for byte"
        );
        assert_eq!(
            to_user,
            vec![0x05, 0x00],
            "the client's method choice came back"
        );
    }

    #[tokio::test]
    async fn refused_socks5_request_gets_not_allowed_and_never_reaches_the_client() {
        let (result, at_client, to_user) = run(socks5_connect_domain("db.internal", 22)).await;
        assert!(result.unwrap_err().contains("db.internal:22"));
        assert_eq!(
            at_client,
            vec![0x05, 0x01, 0x00],
            "only the greeting went through"
        );
        assert_eq!(to_user.get(..2), Some(&[0x05, 0x00][..]));
        assert_eq!(
            to_user.get(2..4),
            Some(&[0x05, 0x02][..]),
            "reply 0x02: not allowed"
        );
    }

    #[tokio::test]
    async fn refused_socks4a_request_opens_no_channel() {
        let mut req = vec![0x04, 0x01, 0x00, 0x50, 0, 0, 0, 1, 0x00];
        req.extend_from_slice(b"intranet\0");
        let (result, at_client, to_user) = run(req).await;
        assert!(result.is_err());
        assert!(at_client.is_empty());
        assert_eq!(to_user, vec![0x00, 0x5B, 0, 0, 0, 0, 0, 0]);
    }

    /// The wait for the client to answer the channel open is not cut short by the handshake's
    /// timeout (an open cannot be taken back; one given up on stayed in the session until the
    /// client answered), and does not count against the connecting program's time; the
    /// program itself still gets only HANDSHAKE_TIMEOUT for its messages.
    #[tokio::test(start_paused = true)]
    async fn a_slow_channel_open_is_waited_for_whole_and_a_slow_program_still_times_out() {
        let bytes = socks5_connect_domain("db.internal", 5432);
        let (mut user_near, mut user_far) = tokio::io::duplex(1024);
        let (chan_near, mut chan_far) = tokio::io::duplex(1024);
        // The greeting now, the request only 20 s after the open was answered.
        user_far.write_all(&bytes[..3]).await.unwrap();
        let user = tokio::spawn(async move {
            tokio::time::sleep(HANDSHAKE_TIMEOUT * 2 + Duration::from_secs(20)).await;
            user_far.write_all(&bytes[3..]).await.unwrap();
            user_far
        });
        let client = tokio::spawn(async move {
            let mut greeting = [0u8; 3];
            chan_far.read_exact(&mut greeting).await.unwrap();
            chan_far.write_all(&[0x05, 0x00]).await.unwrap();
            chan_far
        });
        let slow_open = || async {
            tokio::time::sleep(HANDSHAKE_TIMEOUT * 2).await;
            Some(chan_near)
        };
        let admitted = admit(&mut user_near, &allowed(), slow_open).await;
        assert!(admitted.is_ok(), "{:?}", admitted.err());
        drop((user.await, client.await));

        // A program that sends nothing: the open is never asked for, the wait ends.
        let (mut silent, _far) = tokio::io::duplex(1024);
        let never = || async { None::<tokio::io::DuplexStream> };
        let e = admit(&mut silent, &allowed(), never).await.unwrap_err();
        assert!(matches!(e, GateError::Timeout), "{e}");
    }

    #[tokio::test]
    async fn plain_traffic_is_not_let_through() {
        let (result, at_client, _) = run(b"GET / HTTP/1.0\r\n\r\n".to_vec()).await;
        assert_eq!(result.unwrap_err(), "not a SOCKS request (first byte 0x47)");
        assert!(at_client.is_empty());
    }
}
