//! Who may read the status endpoint. Loopback without a token is the default (the machine's own
//! users); anything else needs a bearer token read from a file. Browsers cannot add a bearer
//! header to a page load, so the same token is also accepted as the password of HTTP Basic
//! authentication: the browser asks for it once and sends it with every poll.

use std::net::IpAddr;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::ObserveError;

/// Shortest token accepted: a guessable token on a network port is worse than none.
pub const MIN_TOKEN_LEN: usize = 16;

/// A bearer token, kept only as its SHA-256 so comparisons take the same time whatever the
/// candidate's length and content.
#[derive(Clone, PartialEq, Eq)]
pub struct Token([u8; 32]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(MASKED)")
    }
}

impl Token {
    /// Reads the token from `path` (surrounding whitespace ignored); warns when other users
    /// may read the file.
    pub fn load(path: &Path) -> Result<Self, ObserveError> {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %path.display(), "metrics token file is readable by other users; chmod 600 it");
            }
        }
        let text = std::fs::read_to_string(path).map_err(|source| ObserveError::TokenRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_secret(text.trim()).ok_or_else(|| ObserveError::TokenTooShort {
            path: path.to_path_buf(),
        })
    }

    /// A token from its text; None when shorter than [`MIN_TOKEN_LEN`].
    pub fn from_secret(secret: &str) -> Option<Self> {
        (secret.len() >= MIN_TOKEN_LEN).then(|| Self(digest(secret.as_bytes())))
    }

    /// Whether an `Authorization` header value carries this token, as `Bearer <token>` or as
    /// the password of `Basic base64(user:token)`.
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        let Some(candidate) = authorization.and_then(credential) else {
            return false;
        };
        let other = digest(&candidate);
        self.0
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The secret in an Authorization header value.
fn credential(value: &str) -> Option<Vec<u8>> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.as_bytes().to_vec());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = data_encoding::BASE64.decode(rest.as_bytes()).ok()?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        return decoded.get(colon + 1..).map(<[u8]>::to_vec);
    }
    None
}

/// The access rule of one endpoint.
#[derive(Debug, Clone)]
pub enum Access {
    /// Loopback without a token: anyone on this machine, but only under a loopback or IP-literal
    /// `Host` name, so a web page in a local browser cannot read it through DNS rebinding.
    Loopback,
    /// Every request needs the token.
    Token(Token),
}

/// Why a request is turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Missing or wrong credentials (401).
    Unauthorized,
    /// A `Host` name that is not this machine's loopback (403).
    ForeignHost,
}

impl Access {
    /// Checks one request's `Authorization` and `Host` headers.
    pub fn check(&self, authorization: Option<&str>, host: Option<&str>) -> Result<(), Denied> {
        match self {
            Access::Token(t) if t.accepts(authorization) => Ok(()),
            Access::Token(_) => Err(Denied::Unauthorized),
            Access::Loopback if host.is_none_or(local_host_name) => Ok(()),
            Access::Loopback => Err(Denied::ForeignHost),
        }
    }
}

/// `localhost`, `*.localhost` or an IP literal, with or without a port.
fn local_host_name(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, _)) => addr,
            None => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    let name = name.to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost") || name.parse::<IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef-secret";

    #[test]
    fn bearer_and_basic_carry_the_token() {
        let t = Token::from_secret(SECRET).unwrap();
        assert!(t.accepts(Some(&format!("Bearer {SECRET}"))));
        assert!(t.accepts(Some(&format!("bearer  {SECRET} "))));
        let basic = data_encoding::BASE64.encode(format!("anyone:{SECRET}").as_bytes());
        assert!(t.accepts(Some(&format!("Basic {basic}"))));
        assert!(!t.accepts(None));
        assert!(!t.accepts(Some("Bearer 0123456789abcdef-secreT")));
        assert!(!t.accepts(Some(SECRET)));
        assert!(!t.accepts(Some("Basic !!!")));
        assert_eq!(format!("{t:?}"), "Token(MASKED)");
    }

    #[test]
    fn short_tokens_are_refused() {
        assert!(Token::from_secret("short").is_none());
    }

    #[test]
    fn token_access_needs_the_header_whatever_the_host() {
        let a = Access::Token(Token::from_secret(SECRET).unwrap());
        assert_eq!(
            a.check(None, Some("127.0.0.1:9180")),
            Err(Denied::Unauthorized)
        );
        let ok = format!("Bearer {SECRET}");
        assert_eq!(a.check(Some(&ok), Some("relay.example.org:9180")), Ok(()));
    }

    #[test]
    fn loopback_access_refuses_foreign_host_names() {
        let a = Access::Loopback;
        for host in [
            "127.0.0.1:9180",
            "localhost",
            "[::1]:9180",
            "app.localhost:1",
            "10.0.0.1",
        ] {
            assert_eq!(a.check(None, Some(host)), Ok(()), "{host}");
        }
        assert_eq!(a.check(None, None), Ok(()));
        for host in ["evil.example:9180", "localhost.evil.example", "[::1"] {
            assert_eq!(
                a.check(None, Some(host)),
                Err(Denied::ForeignHost),
                "{host}"
            );
        }
    }
}
