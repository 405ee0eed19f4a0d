//! Stage 8: KBS resources, decrypted, to where `launch.toml` sends them.
//!
//! Files go to a tmpfs of their own at `/run/secrets` (never to disk; nosuid, nodev, noexec),
//! created with mode 0400 by `O_EXCL | O_NOFOLLOW` so nothing planted there earlier is followed
//! or reused. Secrets for the agent's own use (state key, registry credentials) stay in memory in
//! [`Zeroizing`] buffers. A secret's bytes appear nowhere else: not in logs, the event log, the
//! environment or error text; what is logged is its length and SHA-256 (so an operator can tell
//! which version was delivered).

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Component, Path, PathBuf};

use nix::mount::{MsFlags, mount};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::initdata::launch::{SECRETS_DIR, Secret, SecretUse};
use crate::kbs::client::ClientError;
use crate::kbs::jwe::JweError;

/// The secrets tmpfs: ample for keys and certificates, small enough that a hostile KBS cannot
/// fill the guest's memory through it.
const TMPFS_SIZE: &str = "16m";

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("secret {name:?}")]
    Fetch {
        name: String,
        #[source]
        source: ClientError,
    },
    #[error("secret {name:?} from {uri}: cannot decrypt the KBS answer")]
    Decrypt {
        name: String,
        uri: String,
        #[source]
        source: JweError,
    },
    #[error("secret {name:?} is empty")]
    Empty { name: String },
    #[error("cannot mount a tmpfs on {SECRETS_DIR}: {0}")]
    Mount(nix::errno::Errno),
    #[error("cannot create {}", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a plain path under {SECRETS_DIR}", .0.display())]
    BadPath(PathBuf),
    #[error("secrets are listed, but no KBS session exists (the attest stage did not run)")]
    NoSession,
}

/// A secret the agent keeps for itself.
pub struct Kept {
    pub usage: SecretUse,
    pub name: String,
    pub value: Zeroizing<Vec<u8>>,
}

/// Mount the secrets tmpfs on `dir` (an empty directory, created 0700).
pub fn mount_tmpfs(dir: &Path) -> Result<(), SecretsError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| SecretsError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=0700,size={TMPFS_SIZE}").as_str()),
    )
    .map_err(SecretsError::Mount)
}

/// Write `value` to `path` (an absolute path under [`SECRETS_DIR`]) below `root`, which is `/`
/// in the guest: parents 0700, the file 0400, never following or replacing anything.
pub fn write_file(root: &Path, path: &str, value: &[u8]) -> Result<PathBuf, SecretsError> {
    let rel = Path::new(path)
        .strip_prefix(SECRETS_DIR)
        .map_err(|_| SecretsError::BadPath(path.into()))?;
    if rel.as_os_str().is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(SecretsError::BadPath(path.into()));
    }
    let base = root.join(SECRETS_DIR.trim_start_matches('/'));
    let full = base.join(rel);
    if let Some(parent) = full.parent()
        && parent != base
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|source| SecretsError::Create {
                path: parent.to_path_buf(),
                source,
            })?;
    }
    let create_err = |source| SecretsError::Create {
        path: full.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&full)
        .map_err(create_err)?;
    file.write_all(value).map_err(create_err)?;
    Ok(full)
}

/// What the filesystem says about a written secret (mode, owner, size, filesystem), read back
/// rather than assumed.
pub fn file_facts(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let fs = nix::sys::statfs::statfs(path)
        .map(|s| {
            if s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC {
                "tmpfs".to_string()
            } else {
                format!("fs 0x{:x}", s.filesystem_type().0)
            }
        })
        .unwrap_or_else(|e| format!("statfs: {e}"));
    match std::fs::symlink_metadata(path) {
        Ok(m) => format!(
            "mode {:04o}, uid {}, {} bytes, {fs}",
            m.mode() & 0o7777,
            m.uid(),
            m.len()
        ),
        Err(e) => format!("stat: {e}"),
    }
}

/// SHA-256 of a secret, for the console.
pub fn fingerprint(value: &[u8]) -> String {
    crate::hex::encode(&Sha256::digest(value))
}

/// The name of a secret and its URI, for messages.
pub fn describe(secret: &Secret) -> String {
    format!("{} ({})", secret.name, secret.uri)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn writes_0400_and_never_replaces() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("run/secrets")).unwrap();
        let p = write_file(root.path(), "/run/secrets/db/password", b"s3cret").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"s3cret");
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o400);
        let dir = std::fs::metadata(p.parent().unwrap()).unwrap();
        assert_eq!(dir.permissions().mode() & 0o777, 0o700);
        // Written once: a second write (or a planted file) is an error, not an overwrite.
        assert!(matches!(
            write_file(root.path(), "/run/secrets/db/password", b"x"),
            Err(SecretsError::Create { .. })
        ));
        // A planted symlink is not followed.
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("run/secrets/link")).unwrap();
        assert!(write_file(root.path(), "/run/secrets/link", b"x").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"s3cret");
    }

    #[test]
    fn refuses_paths_outside() {
        let root = tempfile::tempdir().unwrap();
        for bad in [
            "/etc/x",
            "/run/secrets",
            "/run/secrets/../x",
            "/run/secretsx/a",
        ] {
            assert!(
                matches!(
                    write_file(root.path(), bad, b"x"),
                    Err(SecretsError::BadPath(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn fingerprint_is_sha256() {
        assert_eq!(
            fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
