//! -W host:port: standard input and output become one `direct-tcpip` channel, so burrow can be an
//! OpenSSH `ProxyCommand`. Nothing else may ever be written to stdout.

use super::{ClientHandle, ClientSession, ForwardContext};
use crate::reason::open_failure_text;

/// Why stdio forwarding failed (ssh(1) prints "stdio forwarding failed" and exits 255).
#[derive(Debug, thiserror::Error)]
#[error("channel 0: open failed: {reason}: {host}:{port}\nstdio forwarding failed")]
pub struct StdioError {
    reason: String,
    host: String,
    port: u16,
}

/// Runs until both directions are done.
pub async fn run<H: ClientSession>(
    handle: &ClientHandle<H>,
    host: &str,
    port: u16,
    ctx: &ForwardContext,
) -> Result<(), StdioError> {
    let channel = handle
        .channel_open_direct_tcpip(host.to_string(), u32::from(port), "127.0.0.1", 0)
        .await
        .map_err(|e| StdioError {
            reason: open_failure_text(&e),
            host: host.to_string(),
            port,
        })?;
    let stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    ctx.pump(channel.into_stream(), stdio, "stdio").await;
    Ok(())
}
