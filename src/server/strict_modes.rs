//! sshd's StrictModes for the relay's files: who may change authorized_keys, and who may read
//! the host key.
//!
//! authorized_keys follows OpenSSH's misc.c `safe_path`: the file (after resolving symlinks)
//! must be a regular file, and it and every directory above it must be owned by root or by
//! the relay's user and not be writable by group or others; the walk stops at the relay
//! user's home directory (`$HOME`, else the password database's) or at `/`. Like sshd, a sticky world-writable directory such as
//! `/tmp` fails: anyone may create entries there, so a file below it is only as safe as the
//! path the relay was given. `strict_modes = false` in serve.toml turns this check off.
//!
//! The host key follows authfile.c `sshkey_perm_ok` ("UNPROTECTED PRIVATE KEY FILE"): no
//! access at all for group or others. sshd applies that whatever StrictModes says, and so
//! does burrow; unlike sshd it also refuses such a key owned by another user (sshd reads its
//! host keys as root, burrow's packaged relay as an unprivileged user that root's key could
//! be leaking to).

use std::fmt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A file or directory the relay will not trust, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Insecure {
    /// The path could not be resolved or examined.
    #[error("cannot check {}: {reason}", path.display())]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// The I/O error, as text.
        reason: String,
    },
    /// Not a regular file (a directory, a device, a FIFO...).
    #[error("{} is not a regular file", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
    },
    /// The file, or a directory above it, has the wrong owner or is writable by others.
    #[error(
        "bad ownership or modes for {what} {}{}: {found}; it must be owned by root or {relay} \
         and not be writable by group or others (chmod go-w), or set strict_modes = false in \
         serve.toml",
        path.display(),
        above.as_ref().map(|f| format!(" (above {})", f.display())).unwrap_or_default()
    )]
    BadOwnershipOrModes {
        /// "file" or "directory", as sshd says.
        what: &'static str,
        /// The offending file or directory.
        path: PathBuf,
        /// For a directory: the file it leads to.
        above: Option<PathBuf>,
        /// Owner and mode found.
        found: Found,
        /// The relay's user, as it should own the file if root does not.
        relay: Owner,
    },
    /// A private key that group or others may access.
    #[error(
        "UNPROTECTED PRIVATE KEY FILE: permissions {mode:04o} for {} are too open; a private \
         key must not be accessible by group or others (chmod 600 {})",
        path.display(),
        path.display()
    )]
    UnprotectedKey {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// The owner and permission bits found on a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Owner.
    pub owner: Owner,
    /// Permission bits (with setuid/setgid/sticky).
    pub mode: u32,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "owner {}, mode {:04o}", self.owner, self.mode)
    }
}

/// A uid, shown with its user name when it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner(pub u32);

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(self.0))
            .ok()
            .flatten()
            .map(|u| u.name);
        match name {
            Some(name) => write!(f, "{name} (uid {})", self.0),
            None => write!(f, "uid {}", self.0),
        }
    }
}

/// Whose files the relay trusts: root and this uid, up to this home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    /// The relay's user.
    pub uid: u32,
    /// Where the walk up stops early (sshd: the user's home directory), if anywhere.
    pub home: Option<PathBuf>,
}

impl Trust {
    /// The running relay's user (effective uid) and its home directory, found as burrow finds
    /// it everywhere: `$HOME`, else the password database.
    pub fn current() -> Self {
        Self {
            uid: nix::unistd::geteuid().as_raw(),
            home: Some(crate::config::options::home_dir()),
        }
    }

    fn trusts(&self, meta: &std::fs::Metadata) -> bool {
        (meta.uid() == 0 || meta.uid() == self.uid) && meta.mode() & 0o022 == 0
    }
}

/// sshd's `safe_path` for `path` (see the module comment).
pub fn check_secure_path(path: &Path, trust: &Trust) -> Result<(), Insecure> {
    let unreadable = |path: &Path, e: std::io::Error| Insecure::Unreadable {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let real = std::fs::canonicalize(path).map_err(|e| unreadable(path, e))?;
    let home = trust
        .home
        .as_deref()
        .and_then(|h| std::fs::canonicalize(h).ok());
    let meta = std::fs::metadata(&real).map_err(|e| unreadable(&real, e))?;
    if !meta.is_file() {
        return Err(Insecure::NotRegular { path: real });
    }
    let bad = |what, at: &Path, above: Option<&Path>, meta: &std::fs::Metadata| {
        Insecure::BadOwnershipOrModes {
            what,
            path: at.to_owned(),
            above: above.map(Path::to_owned),
            found: Found {
                owner: Owner(meta.uid()),
                mode: meta.permissions().mode() & 0o7777,
            },
            relay: Owner(trust.uid),
        }
    };
    if !trust.trusts(&meta) {
        return Err(bad("file", &real, None, &meta));
    }
    for dir in real.ancestors().skip(1) {
        let meta = std::fs::metadata(dir).map_err(|e| unreadable(dir, e))?;
        if !trust.trusts(&meta) {
            return Err(bad("directory", dir, Some(&real), &meta));
        }
        if home.as_deref() == Some(dir) {
            break;
        }
    }
    Ok(())
}

/// sshd's `sshkey_perm_ok` for a private key file already opened as `meta`.
pub fn check_private_key(path: &Path, meta: &std::fs::Metadata) -> Result<(), Insecure> {
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Insecure::UnprotectedKey {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// `dir/home/etc/authorized_keys` (0644), with `dir/home` as the home directory where the
    /// walk stops, so the world-writable /tmp above it is never reached.
    fn tree() -> (tempfile::TempDir, Trust, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let home = dir.path().join("home");
        let keys = home.join("etc/authorized_keys");
        std::fs::create_dir_all(keys.parent().unwrap()).unwrap();
        std::fs::write(&keys, "").unwrap();
        chmod(&keys, 0o644);
        let trust = Trust {
            uid: nix::unistd::geteuid().as_raw(),
            home: Some(home),
        };
        (dir, trust, keys)
    }

    #[test]
    fn a_private_tree_passes_and_the_walk_stops_at_home() {
        let (dir, trust, keys) = tree();
        check_secure_path(&keys, &trust).unwrap();
        // Above the home directory nothing is checked, as in sshd.
        chmod(dir.path(), 0o777);
        check_secure_path(&keys, &trust).unwrap();
        let no_home = Trust {
            home: None,
            ..trust.clone()
        };
        let err = check_secure_path(&keys, &no_home).unwrap_err();
        assert!(
            matches!(&err, Insecure::BadOwnershipOrModes { what: "directory", path, .. } if path == dir.path()),
            "{err}"
        );
        chmod(dir.path(), 0o755);
    }

    #[test]
    fn writable_files_and_directories_are_named_with_owner_and_mode() {
        let (_dir, trust, keys) = tree();
        let etc = keys.parent().unwrap().to_owned();
        let me = Owner(trust.uid);
        chmod(&keys, 0o664);
        let err = check_secure_path(&keys, &trust).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "bad ownership or modes for file {}: owner {me}, mode 0664; it must be owned by \
                 root or {me} and not be writable by group or others (chmod go-w), or set \
                 strict_modes = false in serve.toml",
                keys.display()
            )
        );
        chmod(&keys, 0o600);
        chmod(&etc, 0o1777);
        let err = check_secure_path(&keys, &trust).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "bad ownership or modes for directory {} (above {}): owner {me}, mode 1777;",
                etc.display(),
                keys.display()
            )),
            "{err}"
        );
        chmod(&etc, 0o755);
        check_secure_path(&keys, &trust).unwrap();
    }

    #[test]
    fn another_owner_is_refused_root_is_trusted() {
        let (_dir, trust, keys) = tree();
        let me = nix::unistd::geteuid().as_raw();
        // As if the relay ran as another user: files owned by us (not root) are then foreign,
        // unless we are root, whom every relay trusts.
        let other = Trust {
            uid: me.wrapping_add(1),
            ..trust
        };
        let result = check_secure_path(&keys, &other);
        if me == 0 {
            result.unwrap();
        } else {
            let err = result.unwrap_err();
            assert!(
                matches!(&err, Insecure::BadOwnershipOrModes { what: "file", found, .. } if found.owner == Owner(me)),
                "{err}"
            );
        }
    }

    #[test]
    fn tmp_fails_like_sshd_and_symlinks_are_resolved() {
        let (dir, trust, keys) = tree();
        let no_home = Trust {
            home: None,
            ..trust.clone()
        };
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("authorized_keys");
        std::fs::write(&file, "").unwrap();
        chmod(&file, 0o600);
        let tmp_root = std::fs::canonicalize(std::env::temp_dir()).unwrap();
        let world_writable = std::fs::metadata(&tmp_root).unwrap().mode() & 0o022 != 0;
        if world_writable {
            let err = check_secure_path(&file, &no_home).unwrap_err();
            assert!(
                matches!(&err, Insecure::BadOwnershipOrModes { what: "directory", path, .. } if *path == tmp_root),
                "{err}"
            );
        }
        // A link is judged by what it points to.
        let link = dir.path().join("home/link");
        std::os::unix::fs::symlink(&keys, &link).unwrap();
        check_secure_path(&link, &trust).unwrap();
        let err = check_secure_path(&dir.path().join("home"), &trust).unwrap_err();
        assert!(matches!(err, Insecure::NotRegular { .. }), "{err}");
        let err = check_secure_path(&dir.path().join("missing"), &trust).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "cannot check {}: ",
                dir.path().join("missing").display()
            )),
            "{err}"
        );
    }

    #[test]
    fn a_private_key_others_can_access_is_unprotected() {
        let (_dir, _trust, keys) = tree();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, false),
            (0o604, false),
            (0o610, false),
            (0o644, false),
        ] {
            chmod(&keys, mode);
            let meta = std::fs::metadata(&keys).unwrap();
            let result = check_private_key(&keys, &meta);
            assert_eq!(result.is_ok(), ok, "{mode:o}");
        }
        chmod(&keys, 0o644);
        let meta = std::fs::metadata(&keys).unwrap();
        let err = check_private_key(&keys, &meta).unwrap_err().to_string();
        let p = keys.display();
        assert_eq!(
            err,
            format!(
                "UNPROTECTED PRIVATE KEY FILE: permissions 0644 for {p} are too open; a private \
                 key must not be accessible by group or others (chmod 600 {p})"
            )
        );
    }
}
