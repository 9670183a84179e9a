//! `burrow ssh host command...`: run a command on the server with stdin, stdout and stderr
//! streamed (binary-safe), stdin's EOF sent as channel EOF, and the remote exit status returned
//! (a signal death as 128+n, as shells report it).

use russh::{ChannelMsg, Sig};
use tokio::io::AsyncWriteExt;

use super::{ClientError, SshHandle, EXIT_FAILURE};

/// Runs `command` (joined as ssh(1) does: arguments separated by spaces, interpreted by the
/// remote shell) and returns its exit status.
pub async fn run(handle: &SshHandle, command: &str) -> Result<u8, ClientError> {
    let channel = handle.channel_open_session().await?;
    channel.exec(true, command).await?;
    let (mut read, write) = channel.split();
    let stdin_task = tokio::spawn(async move {
        let mut writer = write.make_writer();
        let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut writer).await;
        let _ = writer.shutdown().await;
        let _ = write.eof().await;
        write
    });
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut status: Option<u8> = None;
    while let Some(msg) = read.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                if stdout.write_all(&data).await.is_err() {
                    break;
                }
                let _ = stdout.flush().await;
            }
            ChannelMsg::ExtendedData { data, .. } => {
                let _ = stderr.write_all(&data).await;
                let _ = stderr.flush().await;
            }
            ChannelMsg::ExitStatus { exit_status } => {
                status = Some(u8::try_from(exit_status).unwrap_or(EXIT_FAILURE));
            }
            ChannelMsg::ExitSignal { signal_name, .. } => {
                status = Some(128u8.saturating_add(signal_number(&signal_name)));
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    stdin_task.abort();
    Ok(status.unwrap_or(EXIT_FAILURE))
}

/// POSIX signal numbers for the names SSH carries (RFC 4254 6.10).
pub(crate) fn signal_number(sig: &Sig) -> u8 {
    match sig {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(_) => 0,
    }
}
