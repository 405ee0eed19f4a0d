//! Stage 8: KBS resources, decrypted, to where `launch.toml` sends them.
//!
//! Files go to a tmpfs of their own at `/run/secrets` (never to disk; nosuid, nodev, noexec),
//! created with mode 0400 by `O_EXCL | O_NOFOLLOW` so nothing planted there earlier is followed
//! or reused. Secrets for the agent's own use (state key, registry credentials) stay in memory in
//! [`Zeroizing`] buffers. A secret's bytes appear nowhere else: not in logs, the event log, the
//! environment or error text; what is logged is its name, URI and length. No digest of it: the
//! console is the host's, and an unkeyed hash would let the host test guesses of a password
//! offline and link VMs that got the same secret; a keyed one nobody but the guest could check.
//! A workload that must prove which version it got does so with a key of its own (the demo
//! prints SHA-256(check key ‖ secret), with a check key the KBS serves next to the secret).

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Component, Path, PathBuf};

use nix::mount::{MsFlags, mount};
use zeroize::Zeroizing;

use crate::initdata::launch::{SECRETS_DIR, Secret, SecretUse};
use crate::kbs::KbsError;
use crate::kbs::jwe::JweError;
use crate::kbs_client::ClientError;

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
    #[error(
        "secret {name:?}: the KBS did not release {uri} (HTTP {status} {error_type}: {detail}); a \
         KBS answers a missing resource and one its policy refuses alike: check that it exists \
         and that the resource policy allows this boot"
    )]
    NotReleased {
        name: String,
        uri: String,
        status: u16,
        error_type: String,
        detail: String,
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

impl SecretsError {
    /// The error for a failed fetch of `name` from `uri`: a KBS refusal of the resource itself
    /// becomes [`SecretsError::NotReleased`], which says that "missing" and "denied" look alike
    /// (Trustee answers both with 401 `PluginInternalError` or 403 `PolicyDeny`); anything
    /// else (network, TLS, deadline) stays a [`SecretsError::Fetch`].
    pub fn fetch(name: &str, uri: &str, source: ClientError) -> SecretsError {
        if let ClientError::Kbs {
            source:
                KbsError::Refused {
                    status,
                    error_type,
                    detail,
                },
            ..
        } = &source
        {
            let short = error_type.rsplit('/').next().unwrap_or(error_type);
            if matches!(
                short,
                "PluginInternalError" | "PolicyDeny" | "PluginNotFound"
            ) || matches!(status, 403 | 404)
            {
                return SecretsError::NotReleased {
                    name: name.to_string(),
                    uri: uri.to_string(),
                    status: *status,
                    error_type: short.to_string(),
                    detail: detail.clone(),
                };
            }
        }
        SecretsError::Fetch {
            name: name.to_string(),
            source,
        }
    }
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

    /// Trustee answers a missing resource with 401 `PluginInternalError` and nothing more: the
    /// console line names the secret and the URI and says that missing and denied look alike.
    #[test]
    fn a_refused_resource_says_missing_and_denied_look_alike() {
        let refused = |status, error_type: &str| ClientError::Kbs {
            what: "resource kbs:///default/demo/nope".into(),
            source: crate::kbs::protocol::parse_error(
                status,
                serde_json::json!({"type": error_type, "detail": "Plugin internal error"})
                    .to_string()
                    .as_bytes(),
            ),
        };
        let e = SecretsError::fetch(
            "db",
            "kbs:///default/demo/nope",
            refused(
                401,
                "https://github.com/confidential-containers/kbs/errors/PluginInternalError",
            ),
        );
        assert_eq!(
            e.to_string(),
            "secret \"db\": the KBS did not release kbs:///default/demo/nope (HTTP 401 \
             PluginInternalError: Plugin internal error); a KBS answers a missing resource and \
             one its policy refuses alike: check that it exists and that the resource policy \
             allows this boot"
        );
        let e = SecretsError::fetch("db", "kbs:///a/b/c", refused(403, "x/PolicyDeny"));
        assert!(matches!(e, SecretsError::NotReleased { status: 403, .. }));
        // An expired session is not a resource refusal.
        let e = SecretsError::fetch("db", "kbs:///a/b/c", refused(401, "x/TokenNotFound"));
        assert!(matches!(e, SecretsError::Fetch { .. }), "{e}");
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
}
