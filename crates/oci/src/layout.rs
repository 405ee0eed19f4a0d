//! An OCI image-layout directory (image-spec `image-layout.md`) as an image source: the
//! `oci-layout` file (`imageLayoutVersion` 1.0.0), `index.json`, and content-addressed
//! `blobs/sha256/<hex>`.
//!
//! The manifest is chosen in `index.json` by its `org.opencontainers.image.ref.name`
//! annotation, by digest, or as the only one listed. Everything under the directory is opened
//! with `openat(O_NOFOLLOW)` from a descriptor of the directory, component by component, and
//! must be a regular file (or directory): a symlink never leads out of the layout. The
//! directory's own path is the operator's and is followed as given.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{Mode, SFlag, fstat};
use oci_spec::image::{Descriptor, ImageIndex};

use super::digest::Sha256Digest;
use super::manifest::{Document, Fetch, MAX_MANIFEST, Root};
use super::reference::{LayoutRef, LayoutSelector};

/// The annotation naming a manifest in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
const MAX_OCI_LAYOUT: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("OCI layout {dir:?}: cannot open {name}")]
    Open {
        dir: PathBuf,
        name: String,
        #[source]
        source: Errno,
    },
    #[error("OCI layout {dir:?}: {name} is not a regular file")]
    NotAFile { dir: PathBuf, name: String },
    #[error("OCI layout {dir:?}: cannot read {name}")]
    Read {
        dir: PathBuf,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("OCI layout {dir:?}: {name} is over the {max}-byte limit")]
    TooLarge {
        dir: PathBuf,
        name: String,
        max: u64,
    },
    #[error("OCI layout {dir:?}: {name} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        dir: PathBuf,
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error("OCI layout {dir:?}: {name}: {reason}")]
    Invalid {
        dir: PathBuf,
        name: String,
        reason: String,
    },
    #[error("OCI layout {dir:?}: {reason} (index.json lists: {available})")]
    Select {
        dir: PathBuf,
        reason: String,
        available: String,
    },
}

/// An opened layout directory and the manifest its reference selects.
#[derive(Debug)]
pub struct Layout {
    dir: OwnedFd,
    path: PathBuf,
    selector: LayoutSelector,
}

impl Layout {
    /// Open the directory and check its `oci-layout` file.
    pub fn open(reference: &LayoutRef) -> Result<Layout, LayoutError> {
        let path = reference.dir.clone();
        let dir = open(
            &path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|source| LayoutError::Open {
            dir: path.clone(),
            name: "the directory".into(),
            source,
        })?;
        let layout = Layout {
            dir,
            path,
            selector: reference.selector.clone(),
        };
        let bytes = layout.read_file(&["oci-layout"], "oci-layout", MAX_OCI_LAYOUT)?;
        #[derive(serde::Deserialize)]
        struct OciLayout {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let parsed: OciLayout =
            serde_json::from_slice(&bytes).map_err(|e| layout.invalid("oci-layout", e))?;
        if parsed.version != "1.0.0" {
            return Err(layout.invalid(
                "oci-layout",
                format!(
                    "imageLayoutVersion {:?} is not 1.0.0",
                    parsed.version.chars().take(40).collect::<String>()
                ),
            ));
        }
        Ok(layout)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn invalid(&self, name: &str, reason: impl ToString) -> LayoutError {
        LayoutError::Invalid {
            dir: self.path.clone(),
            name: name.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Open `components` below the layout, no symlink followed; a regular file.
    fn open_file(&self, components: &[&str], name: &str) -> Result<(File, u64), LayoutError> {
        let err = |source| LayoutError::Open {
            dir: self.path.clone(),
            name: name.to_string(),
            source,
        };
        let (last, dirs) = components.split_last().ok_or(Errno::EINVAL).map_err(err)?;
        let mut held: Option<OwnedFd> = None;
        for component in dirs {
            let next = match &held {
                Some(fd) => openat(
                    fd,
                    *component,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                ),
                None => openat(
                    &self.dir,
                    *component,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                ),
            }
            .map_err(err)?;
            held = Some(next);
        }
        // O_NONBLOCK: opening a FIFO planted in the layout must not hang.
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let fd = match &held {
            Some(d) => openat(d, *last, flags, Mode::empty()),
            None => openat(&self.dir, *last, flags, Mode::empty()),
        }
        .map_err(err)?;
        let st = fstat(&fd).map_err(err)?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(LayoutError::NotAFile {
                dir: self.path.clone(),
                name: name.to_string(),
            });
        }
        Ok((File::from(fd), u64::try_from(st.st_size).unwrap_or(0)))
    }

    fn read_file(
        &self,
        components: &[&str],
        name: &str,
        max: usize,
    ) -> Result<Vec<u8>, LayoutError> {
        let (file, len) = self.open_file(components, name)?;
        let too_large = || LayoutError::TooLarge {
            dir: self.path.clone(),
            name: name.to_string(),
            max: max as u64,
        };
        if len > max as u64 {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        file.take(max as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| LayoutError::Read {
                dir: self.path.clone(),
                name: name.to_string(),
                source,
            })?;
        if bytes.len() > max {
            return Err(too_large());
        }
        Ok(bytes)
    }

    fn blob_file(&self, digest: &Sha256Digest) -> Result<(File, u64, String), LayoutError> {
        let hex = cvm_text::hex::encode(&digest.0);
        let name = format!("blobs/sha256/{hex}");
        let (file, len) = self.open_file(&["blobs", "sha256", &hex], &name)?;
        Ok((file, len, name))
    }

    fn read_blob(&self, digest: &Sha256Digest, max: usize) -> Result<Vec<u8>, LayoutError> {
        let hex = cvm_text::hex::encode(&digest.0);
        self.read_file(
            &["blobs", "sha256", &hex],
            &format!("blobs/sha256/{hex}"),
            max,
        )
    }

    /// The `index.json` entry the reference selects.
    fn select(&self, max: usize) -> Result<Descriptor, LayoutError> {
        let bytes = self.read_file(&["index.json"], "index.json", max)?;
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| self.invalid("index.json", e))?;
        if index.schema_version() != 2 {
            return Err(self.invalid("index.json", "schemaVersion is not 2"));
        }
        let manifests = index.manifests();
        let name_of = |d: &Descriptor| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .cloned()
        };
        let select_err = |reason: String| {
            let mut listed: Vec<String> = manifests
                .iter()
                .take(16)
                .map(|d| match name_of(d) {
                    Some(n) => format!(
                        "{:?} ({})",
                        n.chars().take(100).collect::<String>(),
                        d.digest()
                    ),
                    None => d.digest().to_string().chars().take(100).collect(),
                })
                .collect();
            if manifests.len() > 16 {
                listed.push(format!("{} more", manifests.len() - 16));
            }
            LayoutError::Select {
                dir: self.path.clone(),
                reason,
                available: if listed.is_empty() {
                    "nothing".into()
                } else {
                    listed.join(", ")
                },
            }
        };
        let chosen: Vec<&Descriptor> = match &self.selector {
            LayoutSelector::Only => manifests.iter().collect(),
            LayoutSelector::Name(n) => manifests
                .iter()
                .filter(|d| name_of(d).as_deref() == Some(n.as_str()))
                .collect(),
            LayoutSelector::Digest(want) => manifests
                .iter()
                .filter(|d| d.digest().as_ref() == want.to_string())
                .collect(),
        };
        match (chosen.as_slice(), &self.selector) {
            ([one], _) => Ok((*one).clone()),
            ([], LayoutSelector::Only) => Err(select_err("index.json lists no manifest".into())),
            (_, LayoutSelector::Only) => Err(select_err(
                "index.json lists several manifests and the reference names none".into(),
            )),
            ([], LayoutSelector::Name(n)) => Err(select_err(format!("no manifest is named {n:?}"))),
            (_, LayoutSelector::Name(n)) => {
                Err(select_err(format!("several manifests are named {n:?}")))
            }
            ([], LayoutSelector::Digest(d)) => Err(select_err(format!("no manifest {d}"))),
            // The same digest listed twice is the same content.
            ([first, ..], LayoutSelector::Digest(_)) => Ok((*first).clone()),
        }
    }
}

impl Fetch for Layout {
    type Error = LayoutError;

    fn describe(&self) -> String {
        let reference = LayoutRef {
            dir: self.path.clone(),
            selector: self.selector.clone(),
        };
        format!("layout image {:?}", reference.to_string())
    }

    fn root(&mut self, max: usize) -> Result<Root, LayoutError> {
        let desc = self.select(max.max(MAX_MANIFEST))?;
        let digest = Sha256Digest::parse(desc.digest().as_ref())
            .map_err(|e| self.invalid("index.json", e))?;
        if desc.size() > max as u64 {
            return Err(LayoutError::TooLarge {
                dir: self.path.clone(),
                name: format!("manifest {digest}"),
                max: max as u64,
            });
        }
        let bytes = self.read_blob(&digest, max)?;
        Ok(Root {
            document: Document {
                media_type: Some(desc.media_type().to_string()),
                bytes,
            },
            digest: Some(digest),
            size: Some(desc.size()),
        })
    }

    fn manifest(&mut self, digest: &Sha256Digest, max: usize) -> Result<Document, LayoutError> {
        Ok(Document {
            media_type: None,
            bytes: self.read_blob(digest, max)?,
        })
    }

    fn blob(
        &mut self,
        digest: &Sha256Digest,
        size: u64,
    ) -> Result<Box<dyn Read + '_>, LayoutError> {
        let (file, len, name) = self.blob_file(digest)?;
        if len != size {
            return Err(LayoutError::SizeMismatch {
                dir: self.path.clone(),
                name,
                expected: size,
                actual: len,
            });
        }
        Ok(Box::new(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{self, tests::sha};
    use std::fs;

    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    /// A layout with one (fake) manifest blob per name; returns the dir and digests.
    fn layout(names: &[Option<&str>]) -> (tempfile::TempDir, Vec<Sha256Digest>) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let mut entries = Vec::new();
        let mut digests = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let body = format!("{{\"schemaVersion\":2,\"n\":{i}}}");
            let d = sha(body.as_bytes());
            fs::write(
                dir.path()
                    .join("blobs/sha256")
                    .join(cvm_text::hex::encode(&d.0)),
                &body,
            )
            .unwrap();
            let mut e = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": body.len()});
            if let Some(n) = name {
                e["annotations"] = serde_json::json!({ REF_NAME: n });
            }
            entries.push(e);
            digests.push(d);
        }
        fs::write(
            dir.path().join("index.json"),
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": entries}))
                .unwrap(),
        )
        .unwrap();
        (dir, digests)
    }

    fn open(dir: &Path, selector: LayoutSelector) -> Result<Layout, LayoutError> {
        Layout::open(&LayoutRef {
            dir: dir.to_path_buf(),
            selector,
        })
    }

    #[test]
    fn selects_by_name_digest_or_only() {
        let (dir, d) = layout(&[Some("a"), Some("b")]);
        let mut l = open(dir.path(), LayoutSelector::Name("b".into())).unwrap();
        let root = l.root(MAX_MANIFEST).unwrap();
        assert_eq!(root.digest, Some(d[1]));
        assert_eq!(root.document.media_type.as_deref(), Some(OCI_MANIFEST));
        let mut l = open(dir.path(), LayoutSelector::Digest(d[0])).unwrap();
        assert_eq!(l.root(MAX_MANIFEST).unwrap().digest, Some(d[0]));
        let mut l = open(dir.path(), LayoutSelector::Only).unwrap();
        let e = l.root(MAX_MANIFEST).unwrap_err().to_string();
        assert!(
            e.contains("several manifests") && e.contains("\"a\""),
            "{e}"
        );
        let mut l = open(dir.path(), LayoutSelector::Name("c".into())).unwrap();
        let e = l.root(MAX_MANIFEST).unwrap_err().to_string();
        assert!(e.contains("no manifest is named \"c\""), "{e}");
        let mut l = open(dir.path(), LayoutSelector::Digest(sha(b"x"))).unwrap();
        assert!(l.root(MAX_MANIFEST).is_err());

        let (dir, d) = layout(&[None]);
        let mut l = open(dir.path(), LayoutSelector::Only).unwrap();
        assert_eq!(l.root(MAX_MANIFEST).unwrap().digest, Some(d[0]));
        let (dir, _) = layout(&[]);
        let mut l = open(dir.path(), LayoutSelector::Only).unwrap();
        assert!(
            l.root(MAX_MANIFEST)
                .unwrap_err()
                .to_string()
                .contains("no manifest")
        );
    }

    #[test]
    fn refuses_bad_layouts() {
        let (dir, _) = layout(&[None]);
        fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"2.0.0"}"#,
        )
        .unwrap();
        assert!(
            open(dir.path(), LayoutSelector::Only)
                .unwrap_err()
                .to_string()
                .contains("2.0.0")
        );
        fs::write(dir.path().join("oci-layout"), "garbage").unwrap();
        assert!(open(dir.path(), LayoutSelector::Only).is_err());
        fs::remove_file(dir.path().join("oci-layout")).unwrap();
        assert!(open(dir.path(), LayoutSelector::Only).is_err());
        assert!(open(Path::new("/nonexistent/layout"), LayoutSelector::Only).is_err());

        let (dir, _) = layout(&[None]);
        fs::write(dir.path().join("index.json"), "{").unwrap();
        let mut l = open(dir.path(), LayoutSelector::Only).unwrap();
        assert!(
            l.root(MAX_MANIFEST)
                .unwrap_err()
                .to_string()
                .contains("index.json")
        );
        fs::write(dir.path().join("index.json"), vec![b' '; MAX_MANIFEST + 1]).unwrap();
        assert!(matches!(
            l.root(MAX_MANIFEST).unwrap_err(),
            LayoutError::TooLarge { .. }
        ));
    }

    #[test]
    fn never_follows_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        let (dir, d) = layout(&[None]);
        let hex = cvm_text::hex::encode(&d[0].0);
        let blob = dir.path().join("blobs/sha256").join(&hex);
        fs::rename(&blob, outside.path().join(&hex)).unwrap();
        std::os::unix::fs::symlink(outside.path().join(&hex), &blob).unwrap();
        let mut l = open(dir.path(), LayoutSelector::Only).unwrap();
        let e = l.root(MAX_MANIFEST).unwrap_err();
        assert!(
            matches!(
                e,
                LayoutError::Open {
                    source: Errno::ELOOP,
                    ..
                }
            ),
            "{e}"
        );

        // A symlinked blobs/ directory.
        let (dir, _) = layout(&[None]);
        fs::rename(dir.path().join("blobs"), outside.path().join("blobs")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("blobs"), dir.path().join("blobs")).unwrap();
        let mut l = open(dir.path(), LayoutSelector::Only).unwrap();
        assert!(l.root(MAX_MANIFEST).is_err());

        // A symlinked index.json, and a FIFO (must not hang).
        let (dir, _) = layout(&[None]);
        fs::rename(
            dir.path().join("index.json"),
            outside.path().join("index.json"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("index.json"),
            dir.path().join("index.json"),
        )
        .unwrap();
        let mut l = open(dir.path(), LayoutSelector::Only).unwrap();
        assert!(l.root(MAX_MANIFEST).is_err());
        fs::remove_file(dir.path().join("index.json")).unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("index.json"),
            Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let e = l.root(MAX_MANIFEST).unwrap_err();
        assert!(matches!(e, LayoutError::NotAFile { .. }), "{e}");
    }

    #[test]
    fn blob_size_must_match_the_descriptor() {
        let (dir, d) = layout(&[None]);
        let mut l = open(dir.path(), LayoutSelector::Only).unwrap();
        let len = l.root(MAX_MANIFEST).unwrap().document.bytes.len() as u64;
        assert!(l.blob(&d[0], len).is_ok());
        let e = l.blob(&d[0], len + 1).err().unwrap();
        assert!(matches!(e, LayoutError::SizeMismatch { .. }), "{e}");
        // Through resolve: the fake manifest is refused after its digest checked out.
        let e = manifest::resolve(&mut l).unwrap_err().to_string();
        assert!(e.contains("invalid JSON"), "{e}");
    }
}
