//! User authentication in ssh(1)'s order: public keys (agent first, then key files), then
//! keyboard-interactive, then password. Prompts go to the terminal or SSH_ASKPASS; BatchMode
//! never prompts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::{AuthResult, Handle, KeyboardInteractiveAuthResponse};
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::{Algorithm, HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh::MethodKind;

use crate::client::handler::ClientHandler;
use crate::client::{prompt, ClientError};
use crate::config::options::{home_dir, ClientOptions, DEFAULT_IDENTITIES};

type SshHandle = Handle<ClientHandler>;

/// Authenticates `opts.user`, or fails with ssh(1)'s "Permission denied (methods)." message.
pub async fn authenticate(handle: &mut SshHandle, opts: &ClientOptions) -> Result<(), ClientError> {
    let user = opts.user.clone();
    let mut methods: Vec<MethodKind> = match handle.authenticate_none(&user).await? {
        AuthResult::Success => return Ok(()),
        AuthResult::Failure {
            remaining_methods, ..
        } => remaining_methods.to_vec(),
    };
    if opts.pubkey_authentication && methods.contains(&MethodKind::PublicKey) {
        match publickey(handle, opts).await? {
            Outcome::Success => return Ok(()),
            Outcome::Failed(Some(m)) => methods = m,
            Outcome::Failed(None) => {}
        }
    }
    if opts.kbd_interactive_authentication
        && !opts.batch_mode
        && methods.contains(&MethodKind::KeyboardInteractive)
    {
        match keyboard_interactive(handle, opts).await? {
            Outcome::Success => return Ok(()),
            Outcome::Failed(Some(m)) => methods = m,
            Outcome::Failed(None) => {}
        }
    }
    if opts.password_authentication && !opts.batch_mode && methods.contains(&MethodKind::Password) {
        match password(handle, opts).await? {
            Outcome::Success => return Ok(()),
            Outcome::Failed(Some(m)) => methods = m,
            Outcome::Failed(None) => {}
        }
    }
    Err(ClientError::PermissionDenied {
        user,
        host: opts.hostname.clone(),
        methods: methods
            .iter()
            .map(<&'static str>::from)
            .collect::<Vec<_>>()
            .join(","),
    })
}

enum Outcome {
    Success,
    /// Failed; the server's remaining methods if it told us.
    Failed(Option<Vec<MethodKind>>),
}

fn outcome(r: AuthResult) -> Outcome {
    match r {
        AuthResult::Success => Outcome::Success,
        AuthResult::Failure {
            remaining_methods, ..
        } => Outcome::Failed(Some(remaining_methods.to_vec())),
    }
}

async fn publickey(handle: &mut SshHandle, opts: &ClientOptions) -> Result<Outcome, ClientError> {
    let files = identity_files(opts);
    let file_keys: Vec<PublicKey> = files.iter().filter_map(|f| public_key_of(f)).collect();
    let mut last = Outcome::Failed(None);
    if let Some(sock) = &opts.identity_agent {
        match agent_auth(handle, opts, sock, &file_keys).await? {
            Outcome::Success => return Ok(Outcome::Success),
            other => last = other,
        }
    }
    let rsa_hash = rsa_hash(handle).await;
    for file in &files {
        let Some(key) = load_private_key(file, opts.batch_mode).await else {
            continue;
        };
        let hash = matches!(key.algorithm(), Algorithm::Rsa { .. })
            .then_some(rsa_hash)
            .flatten();
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
        match outcome(handle.authenticate_publickey(&opts.user, key).await?) {
            Outcome::Success => return Ok(Outcome::Success),
            other => last = other,
        }
    }
    Ok(last)
}

async fn rsa_hash(handle: &SshHandle) -> Option<HashAlg> {
    handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten()
}

async fn agent_auth(
    handle: &mut SshHandle,
    opts: &ClientOptions,
    sock: &Path,
    file_keys: &[PublicKey],
) -> Result<Outcome, ClientError> {
    let mut agent = match AgentClient::connect_uds(sock).await {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(agent = %sock.display(), error = %e, "cannot reach the agent");
            return Ok(Outcome::Failed(None));
        }
    };
    let identities = agent.request_identities().await.unwrap_or_default();
    let rsa_hash = rsa_hash(handle).await;
    let mut last = Outcome::Failed(None);
    for identity in identities {
        let AgentIdentity::PublicKey { key, .. } = identity else {
            continue;
        };
        if opts.identities_only && !file_keys.iter().any(|k| k.key_data() == key.key_data()) {
            continue;
        }
        let hash = matches!(key.algorithm(), Algorithm::Rsa { .. })
            .then_some(rsa_hash)
            .flatten();
        match handle
            .authenticate_publickey_with(&opts.user, key, hash, &mut agent)
            .await
        {
            Ok(r) => match outcome(r) {
                Outcome::Success => return Ok(Outcome::Success),
                other => last = other,
            },
            Err(e) => tracing::debug!(error = %e, "agent signature failed"),
        }
    }
    Ok(last)
}

/// -i files and IdentityFile entries, or the defaults that exist.
fn identity_files(opts: &ClientOptions) -> Vec<PathBuf> {
    if !opts.identity_files.is_empty() {
        return opts.identity_files.clone();
    }
    let home = home_dir();
    DEFAULT_IDENTITIES
        .iter()
        .map(|f| home.join(f))
        .filter(|p| p.exists())
        .collect()
}

fn public_key_of(private: &Path) -> Option<PublicKey> {
    let mut pub_path = private.as_os_str().to_owned();
    pub_path.push(".pub");
    russh::keys::load_public_key(PathBuf::from(pub_path)).ok()
}

/// Loads a key file, asking for its passphrase when it is encrypted (up to three tries).
async fn load_private_key(path: &Path, batch_mode: bool) -> Option<russh::keys::PrivateKey> {
    if !path.exists() {
        eprintln!(
            "Warning: Identity file {} not accessible: No such file or directory.",
            path.display()
        );
        return None;
    }
    match russh::keys::load_secret_key(path, None) {
        Ok(k) => return Some(k),
        Err(russh::keys::Error::KeyIsEncrypted) => {}
        Err(e) => {
            eprintln!("Load key \"{}\": {e}", path.display());
            return None;
        }
    }
    if batch_mode {
        return None;
    }
    // The passphrase's key stretching (bcrypt rounds) can take seconds: off the runtime
    // thread with the prompts.
    let path = path.to_owned();
    prompt::in_turn(move || ask_passphrase(&path))
        .await
        .flatten()
}

/// Up to three passphrase prompts for the encrypted key at `path`.
fn ask_passphrase(path: &Path) -> Option<russh::keys::PrivateKey> {
    for _ in 0..3 {
        let pass = prompt::secret(&format!("Enter passphrase for key '{}': ", path.display()))?;
        if pass.is_empty() {
            return None;
        }
        match russh::keys::load_secret_key(path, Some(&pass)) {
            Ok(k) => return Some(k),
            Err(_) => eprintln!("Bad passphrase, try again for {}", path.display()),
        }
    }
    None
}

async fn keyboard_interactive(
    handle: &mut SshHandle,
    opts: &ClientOptions,
) -> Result<Outcome, ClientError> {
    let mut response = handle
        .authenticate_keyboard_interactive_start(&opts.user, None)
        .await?;
    // Each round answers the server's prompts; bounded so a server cannot keep us here forever.
    for _ in 0..(opts.number_of_password_prompts.max(1) * 4) {
        match response {
            KeyboardInteractiveAuthResponse::Success => return Ok(Outcome::Success),
            KeyboardInteractiveAuthResponse::Failure {
                remaining_methods, ..
            } => return Ok(Outcome::Failed(Some(remaining_methods.to_vec()))),
            KeyboardInteractiveAuthResponse::InfoRequest {
                name,
                instructions,
                prompts,
            } => {
                for text in [name, instructions] {
                    if !text.is_empty() {
                        eprintln!("{text}");
                    }
                }
                let mut answers = Vec::with_capacity(prompts.len());
                for p in prompts {
                    let answer = if p.echo {
                        prompt::line_off_thread(p.prompt).await
                    } else {
                        prompt::secret_off_thread(p.prompt).await
                    };
                    match answer {
                        Some(a) => answers.push(a),
                        None => return Ok(Outcome::Failed(None)),
                    }
                }
                response = handle
                    .authenticate_keyboard_interactive_respond(answers)
                    .await?;
            }
        }
    }
    Ok(Outcome::Failed(None))
}

async fn password(handle: &mut SshHandle, opts: &ClientOptions) -> Result<Outcome, ClientError> {
    let mut last = Outcome::Failed(None);
    for attempt in 0..opts.number_of_password_prompts {
        if attempt > 0 {
            eprintln!("Permission denied, please try again.");
        }
        let question = format!("{}@{}'s password: ", opts.user, opts.hostname);
        let Some(pass) = prompt::secret_off_thread(question).await else {
            break;
        };
        match outcome(handle.authenticate_password(&opts.user, pass).await?) {
            Outcome::Success => return Ok(Outcome::Success),
            other => last = other,
        }
    }
    Ok(last)
}
