//! Applying OCI image layers (image-spec `layer.md`) onto a root directory.
//!
//! A layer is a tar stream, optionally gzip or zstd compressed, applied on top of the layers
//! before it. It is hostile input: the blob comes from a registry (or a disk) the host
//! controls, and its digests can only be checked once the whole stream has been read, because
//! the layer is streamed, never buffered. Therefore:
//!
//! - **The root is untrusted until [`apply_layer`] returned `Ok` for every layer.** A digest
//!   mismatch is detected at the end of the stream, after the entries were written; no rollback
//!   is attempted. On any error the caller must discard the whole root (it is a fresh directory
//!   on the state disk or a tmpfs, so that is cheap).
//! - Whatever the entries say, nothing is ever written outside `root`: every path is walked
//!   component by component with `openat(O_NOFOLLOW | O_DIRECTORY)` from a descriptor of
//!   `root`, so a symlink (made by this or an earlier layer) is never followed while writing.
//!   A path through a symlink is refused, not resolved: real layers never need that, because
//!   a layer diff is taken from a filesystem where the symlink's target is the real path.
//! - Paths are normalized (leading `./`, `.` components and repeated `/` dropped) and refused
//!   when absolute, with a `..` component, a NUL, too long or too deep.
//! - Device nodes are refused (a container gets its devices from the runtime, never from an
//!   image). FIFOs are harmless and allowed.
//! - Symlink targets may be anything (they are resolved inside the container later, against
//!   the container's root); only their length and NUL are checked.
//! - Hard link targets are archive paths: normalized with the same rules, looked up with the
//!   same no-follow walk, so they are inside the root and never reached through a symlink.
//! - Sizes are bounded ([`Limits`]): per file, in total across layers ([`Usage`]), in entries;
//!   GNU long-name and PAX header bodies, which the `tar` crate buffers whole, are bounded by a
//!   guard on the stream (`targuard`); data after the end-of-archive blocks is bounded too.
//! - GNU sparse entries are refused (unsupported type): image builders do not write them.
//!
//! Modes keep all of 0o7777, including setuid/setgid/sticky: what runs setuid inside the
//! container is the image's choice and the runtime's (no_new_privs, user namespaces) to
//! constrain, and stripping them would break images (`ping`, `su`). Ownership is the numeric
//! uid/gid from the tar (PAX `uid`/`gid` included), applied only when running as root.
//! Modification times are set; directories get theirs (and their mode and owner) at the end of
//! the layer, so that writing their children does not change them and so a read-only directory
//! in the layer does not stop its own children from being written.
//!
//! Whiteouts (image-spec "Whiteouts"): an entry `.wh.<name>` removes `<name>` of the lower
//! layers; `.wh..wh..opq` in a directory makes it opaque, removing every lower-layer entry in
//! it. The spec says whiteouts apply only to lower layers, so entries this layer itself
//! created are kept whatever the order of the tar; this is done by remembering every path the
//! layer created. Whiteout files themselves are never written. Other `.wh..wh.` names (aufs
//! metadata such as `.wh..wh.plnk`) are skipped, as containerd does.

use crate::digest::{DigestError, HashingReader, Sha256Digest};
use crate::targuard::TarGuard;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FileStat, Mode, SFlag, UtimensatFlags, fchmod, fstatat, futimens, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
const META_PREFIX: &[u8] = b".wh..wh.";

/// Bounds on what layers may put into the root. Defaults are generous for real images and
/// still bounded for the state disk or a tmpfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single regular file, in bytes.
    pub max_file: u64,
    /// Largest sum of regular-file bytes over all layers.
    pub max_total: u64,
    /// Most tar entries over all layers (whiteouts included).
    pub max_entries: u64,
    /// Longest normalized path or link target, in bytes.
    pub max_path: usize,
    /// Most components in a normalized path.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file: 4 << 30,
            max_total: 16 << 30,
            max_entries: 1 << 20,
            max_path: 4096,
            max_depth: 256,
        }
    }
}

/// What the layers applied so far have used of [`Limits`]; pass the same value to every
/// [`apply_layer`] call of one image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Regular-file bytes written.
    pub bytes: u64,
    /// Tar entries seen.
    pub entries: u64,
}

/// What one layer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerReport {
    /// Tar entries applied (whiteouts included).
    pub entries: u64,
    /// Regular-file bytes written.
    pub bytes: u64,
    /// Whiteout and opaque entries applied.
    pub whiteouts: u64,
    /// Size of the blob as read (compressed).
    pub blob_size: u64,
    /// Size of the uncompressed tar stream.
    pub tar_size: u64,
    /// The verified blob digest.
    pub blob_digest: Sha256Digest,
    /// The verified diff_id (digest of the uncompressed tar).
    pub diff_id: Sha256Digest,
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From the layer descriptor's media type. Non-distributable ("foreign") layer types are
    /// refused like any unknown type: the agent only runs what it can fetch and verify.
    pub fn from_media_type(media_type: &str) -> Result<Self, UnpackError> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar" => Ok(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Ok(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd" => Ok(Compression::Zstd),
            _ => Err(UnpackError::UnknownMediaType {
                media_type: media_type.chars().take(200).collect(),
            }),
        }
    }
}

/// Everything that can go wrong applying a layer. Paths come from a hostile archive and are
/// printed with `{:?}` so they cannot put control characters on a console.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("unknown layer media type {media_type:?}")]
    UnknownMediaType { media_type: String },
    #[error("layer digest")]
    Digest(#[from] DigestError),
    #[error("cannot open the unpack root {root:?}")]
    Root {
        root: String,
        #[source]
        source: Errno,
    },
    #[error("layer entry {path:?}: invalid path: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("layer entry {path:?}: invalid link target {target:?}: {reason}")]
    InvalidLink {
        path: String,
        target: String,
        reason: &'static str,
    },
    #[error("layer entry {path:?}: device nodes are not allowed in a layer")]
    DeviceNode { path: String },
    #[error("layer entry {path:?}: unsupported tar entry type {kind:#04x}")]
    UnsupportedType { path: String, kind: u8 },
    #[error("layer entry {path:?}: {size} bytes is over the {max}-byte file limit")]
    FileTooLarge { path: String, size: u64, max: u64 },
    #[error("layer entry {path:?}: the image would be over its {max}-byte size limit")]
    TotalTooLarge { path: String, max: u64 },
    #[error("layer entry {path:?}: the image has more than {max} entries")]
    TooManyEntries { path: String, max: u64 },
    #[error("layer entry {path:?}: {component:?} is a symlink or not a directory")]
    NotADirectory { path: String, component: String },
    #[error("layer entry {path:?}: hard link target {target:?} does not exist or is a directory")]
    BadHardLink { path: String, target: String },
    #[error("layer entry {path:?}: {what}")]
    Fs {
        path: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {path:?}: file data is {actual} bytes, the header said {declared}")]
    SizeMismatch {
        path: String,
        declared: u64,
        actual: u64,
    },
    #[error("cannot read the layer's tar stream")]
    Tar(#[source] io::Error),
    #[error("cannot start the layer's zstd decoder")]
    Zstd(#[source] ruzstd::decoding::errors::FrameDecoderError),
    #[error("layer data after the end of the archive is over {max} bytes")]
    TrailingData { max: u64 },
    #[error("layer blob digest mismatch: expected {expected}, got {actual}")]
    BlobDigestMismatch {
        expected: Sha256Digest,
        actual: Sha256Digest,
    },
    #[error("layer diff_id mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch {
        expected: Sha256Digest,
        actual: Sha256Digest,
    },
}

/// Bytes accepted after the tar end-of-archive blocks (GNU tar pads to a 10 KiB record;
/// anything much longer is not padding and only costs hashing time).
const MAX_TRAILING: u64 = 1 << 20;

/// Applies one layer on top of `root` (an existing directory; earlier layers already applied).
///
/// `blob` is the layer as fetched; it is hashed as read and compared with
/// `expected_blob_digest`, the uncompressed tar with `expected_diff_id`, both once the stream
/// ended. On any error the root must be discarded (see the module documentation).
pub fn apply_layer(
    root: &Path,
    blob: impl Read,
    compression: Compression,
    expected_blob_digest: &str,
    expected_diff_id: &str,
    limits: &Limits,
    usage: &mut Usage,
) -> Result<LayerReport, UnpackError> {
    let expected_blob = Sha256Digest::parse(expected_blob_digest)?;
    let expected_diff = Sha256Digest::parse(expected_diff_id)?;
    let root_fd = open_root(root)?;

    let mut compressed = HashingReader::new(blob);
    let (mut layer, diff_id, tar_size) = {
        let decoder: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(&mut compressed),
            // Multi-member gzip is valid gzip (pigz, concatenated streams).
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut compressed)),
            Compression::Zstd => Box::new(ZstdFrames::new(&mut compressed)?),
        };
        let mut tar_stream = HashingReader::new(decoder);
        let mut layer = Layer::new(root_fd.as_fd(), limits, usage);
        {
            let mut archive = tar::Archive::new(TarGuard::new(&mut tar_stream));
            let entries = archive.entries().map_err(UnpackError::Tar)?;
            for entry in entries {
                let entry = entry.map_err(UnpackError::Tar)?;
                layer.apply_entry(entry)?;
            }
        }
        layer.finish_directories()?;
        // The diff_id covers the whole uncompressed stream, padding after the end marker too.
        drain(&mut tar_stream)?;
        let (diff_id, tar_size) = tar_stream.finish();
        (layer.report(), diff_id, tar_size)
    };
    // Bytes the decompressor did not need (none for a well-formed blob) are still part of the
    // blob digest.
    drain(&mut compressed)?;
    let (blob_digest, blob_size) = compressed.finish();
    if blob_digest != expected_blob {
        return Err(UnpackError::BlobDigestMismatch {
            expected: expected_blob,
            actual: blob_digest,
        });
    }
    if diff_id != expected_diff {
        return Err(UnpackError::DiffIdMismatch {
            expected: expected_diff,
            actual: diff_id,
        });
    }
    layer.blob_size = blob_size;
    layer.tar_size = tar_size;
    layer.blob_digest = blob_digest;
    layer.diff_id = diff_id;
    Ok(layer)
}

fn drain(reader: &mut impl Read) -> Result<(), UnpackError> {
    let copied =
        io::copy(&mut reader.take(MAX_TRAILING + 1), &mut io::sink()).map_err(UnpackError::Tar)?;
    if copied > MAX_TRAILING {
        return Err(UnpackError::TrailingData { max: MAX_TRAILING });
    }
    Ok(())
}

fn open_root(root: &Path) -> Result<OwnedFd, UnpackError> {
    // The root itself is the caller's trusted path; O_NOFOLLOW still makes sure that the last
    // component is the directory the caller made and not a symlink planted in its place.
    openat(
        nix::fcntl::AT_FDCWD,
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| UnpackError::Root {
        root: root.display().to_string(),
        source,
    })
}

/// Decodes a sequence of zstd frames (`zstd` may write more than one, and concatenated
/// `.zst` files are one valid stream), ending cleanly only at the end of the input. ruzstd's
/// default 128 MiB window limit bounds the decoder's memory (`zstd --long` beyond that is
/// refused).
struct ZstdFrames<R: Read> {
    /// `None` only transiently while switching to the next frame, or after that failed.
    decoder: Option<ZstdDecoder<R>>,
}

type ZstdDecoder<R> =
    ruzstd::decoding::StreamingDecoder<BufReader<R>, ruzstd::decoding::FrameDecoder>;

impl<R: Read> ZstdFrames<R> {
    fn new(source: R) -> Result<Self, UnpackError> {
        let decoder = ruzstd::decoding::StreamingDecoder::new(BufReader::new(source))
            .map_err(UnpackError::Zstd)?;
        Ok(ZstdFrames {
            decoder: Some(decoder),
        })
    }
}

impl<R: Read> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let decoder = self
                .decoder
                .as_mut()
                .ok_or_else(|| io::Error::other("zstd decoder failed earlier"))?;
            let n = decoder.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // End of a frame: the end of the stream, or the start of the next frame.
            if decoder.get_mut().fill_buf()?.is_empty() {
                return Ok(0);
            }
            let (source, frame) = self
                .decoder
                .take()
                .ok_or_else(|| io::Error::other("zstd decoder failed earlier"))?
                .into_parts();
            let next = ruzstd::decoding::StreamingDecoder::new_with_decoder(source, frame)
                .map_err(io::Error::other)?;
            self.decoder = Some(next);
        }
    }
}

/// A normalized archive path: its components, and the joined form (for the created set and
/// for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RelPath {
    components: Vec<Vec<u8>>,
    joined: Vec<u8>,
}

impl RelPath {
    fn display(&self) -> String {
        String::from_utf8_lossy(&self.joined).into_owned()
    }

    fn parent(&self) -> &[Vec<u8>] {
        self.components
            .split_last()
            .map(|(_, parent)| parent)
            .unwrap_or(&[])
    }

    fn name(&self) -> &[u8] {
        self.components.last().map(Vec::as_slice).unwrap_or(b"")
    }

    fn from_components(components: Vec<Vec<u8>>) -> Self {
        let joined = components.join(&b'/');
        RelPath { components, joined }
    }
}

/// Normalizes an archive path (entry name or hard link target). `Ok(None)` is the root itself
/// (`./`, `.`), which layers commonly contain and which is not applied: the root's owner and
/// mode are the agent's, not the image's.
fn normalize(raw: &[u8], limits: &Limits) -> Result<Option<RelPath>, &'static str> {
    if raw.is_empty() {
        return Err("empty path");
    }
    if raw.contains(&0) {
        return Err("NUL in path");
    }
    if raw.len() > limits.max_path {
        return Err("path too long");
    }
    // `/` alone names the root itself, as `./` does: umoci writes it (`umoci insert … /`).
    if raw.first() == Some(&b'/') && !raw.iter().all(|&b| b == b'/') {
        return Err("absolute path");
    }
    let mut components = Vec::new();
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => continue,
            b".." => return Err("'..' component"),
            _ => components.push(component.to_vec()),
        }
    }
    if components.len() > limits.max_depth {
        return Err("path too deep");
    }
    if components.is_empty() {
        return Ok(None);
    }
    Ok(Some(RelPath::from_components(components)))
}

/// What a whiteout entry asks for.
#[derive(Debug, PartialEq, Eq)]
enum Whiteout {
    /// Not a whiteout.
    None,
    /// Remove this path of the lower layers.
    Remove(RelPath),
    /// Remove every lower-layer entry inside this directory (`None` is the root).
    Opaque(Option<RelPath>),
    /// Other `.wh..wh.` metadata: skipped.
    Meta,
}

fn classify_whiteout(path: &RelPath) -> Result<Whiteout, &'static str> {
    let name = path.name();
    let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) else {
        return Ok(Whiteout::None);
    };
    let parent = path.parent().to_vec();
    if name == OPAQUE {
        return Ok(Whiteout::Opaque(
            (!parent.is_empty()).then(|| RelPath::from_components(parent)),
        ));
    }
    if name.starts_with(META_PREFIX) {
        return Ok(Whiteout::Meta);
    }
    if target.is_empty() || target == b"." || target == b".." {
        return Err("whiteout of an invalid name");
    }
    let mut components = parent;
    components.push(target.to_vec());
    Ok(Whiteout::Remove(RelPath::from_components(components)))
}

/// Metadata applied to a directory when the layer ends.
struct DirMeta {
    path: RelPath,
    mode: u32,
    owner: Option<(u32, u32)>,
    mtime: i64,
}

/// The state of one layer being applied.
struct Layer<'a> {
    root: BorrowedFd<'a>,
    limits: &'a Limits,
    usage: &'a mut Usage,
    /// Every path this layer created or replaced: whiteouts leave these alone.
    created: HashSet<Vec<u8>>,
    dirs: Vec<DirMeta>,
    chown: bool,
    entries: u64,
    bytes: u64,
    whiteouts: u64,
}

impl<'a> Layer<'a> {
    fn new(root: BorrowedFd<'a>, limits: &'a Limits, usage: &'a mut Usage) -> Self {
        Layer {
            root,
            limits,
            usage,
            created: HashSet::new(),
            dirs: Vec::new(),
            chown: nix::unistd::geteuid().is_root(),
            entries: 0,
            bytes: 0,
            whiteouts: 0,
        }
    }

    fn report(&self) -> LayerReport {
        LayerReport {
            entries: self.entries,
            bytes: self.bytes,
            whiteouts: self.whiteouts,
            blob_size: 0,
            tar_size: 0,
            blob_digest: Sha256Digest([0; 32]),
            diff_id: Sha256Digest([0; 32]),
        }
    }

    fn apply_entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        // path_bytes/link_name_bytes include GNU long names and PAX path/linkpath.
        let raw_path = entry.path_bytes().into_owned();
        let shown = || {
            String::from_utf8_lossy(&raw_path)
                .chars()
                .take(300)
                .collect::<String>()
        };
        if self.usage.entries >= self.limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                path: shown(),
                max: self.limits.max_entries,
            });
        }
        self.usage.entries += 1;
        self.entries += 1;

        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // Global PAX records (comments, defaults) carry nothing a layer needs.
            return Ok(());
        }
        let path =
            normalize(&raw_path, self.limits).map_err(|reason| UnpackError::InvalidPath {
                path: shown(),
                reason,
            })?;
        let Some(path) = path else {
            return Ok(());
        };
        // The spec says no file or directory can have a `.wh.` name: as a directory it
        // would be half whiteout, half content, so it is refused; and only a regular file is
        // a whiteout marker (as umoci and containerd read it).
        let invalid = |reason| UnpackError::InvalidPath {
            path: path.display(),
            reason,
        };
        if path.parent().iter().any(|c| c.starts_with(WHITEOUT_PREFIX)) {
            return Err(invalid("whiteout name as a directory"));
        }
        let whiteout = classify_whiteout(&path).map_err(invalid)?;
        if whiteout != Whiteout::None && !matches!(kind, tar::EntryType::Regular) {
            return Err(invalid(
                "whiteout name on an entry that is not a regular file",
            ));
        }
        match whiteout {
            Whiteout::None => {}
            Whiteout::Meta => return Ok(()),
            Whiteout::Remove(target) => {
                self.whiteouts += 1;
                return self.whiteout(&target);
            }
            Whiteout::Opaque(dir) => {
                self.whiteouts += 1;
                return self.opaque(dir.as_ref(), &path);
            }
        }

        let header = entry.header();
        let mode = header.mode().map_err(UnpackError::Tar)? & 0o7777;
        let owner = if self.chown {
            let uid = header.uid().map_err(UnpackError::Tar)?;
            let gid = header.gid().map_err(UnpackError::Tar)?;
            let uid = u32::try_from(uid).map_err(|_| UnpackError::InvalidPath {
                path: path.display(),
                reason: "uid does not fit 32 bits",
            })?;
            let gid = u32::try_from(gid).map_err(|_| UnpackError::InvalidPath {
                path: path.display(),
                reason: "gid does not fit 32 bits",
            })?;
            Some((uid, gid))
        } else {
            None
        };
        let mtime = i64::try_from(header.mtime().map_err(UnpackError::Tar)?).unwrap_or(i64::MAX);
        let link = entry.link_name_bytes().map(|l| l.into_owned());

        use tar::EntryType as T;
        match kind {
            T::Regular | T::Continuous => {
                let parent = self.walk(&path, true)?;
                self.remove_existing(&parent, &path)?;
                self.write_file(&parent, &path, &mut entry, mode, owner, mtime)?;
            }
            T::Directory => {
                let parent = self.walk(&path, true)?;
                self.make_dir(&parent, &path)?;
                self.dirs.push(DirMeta {
                    path: path.clone(),
                    mode,
                    owner,
                    mtime,
                });
            }
            T::Symlink => {
                let target = link.unwrap_or_default();
                self.check_link_target(&path, &target)?;
                let parent = self.walk(&path, true)?;
                self.remove_existing(&parent, &path)?;
                symlinkat(
                    OsStr::from_bytes(&target),
                    &parent,
                    OsStr::from_bytes(path.name()),
                )
                .map_err(|e| fs_err(&path, "cannot create symlink", e))?;
                self.set_meta_at(&parent, &path, None, owner, mtime)?;
            }
            T::Link => {
                let target = link.unwrap_or_default();
                self.check_link_target(&path, &target)?;
                let target_path = normalize(&target, self.limits)
                    .map_err(|reason| UnpackError::InvalidLink {
                        path: path.display(),
                        target: String::from_utf8_lossy(&target).into_owned(),
                        reason,
                    })?
                    .ok_or_else(|| UnpackError::InvalidLink {
                        path: path.display(),
                        target: String::from_utf8_lossy(&target).into_owned(),
                        reason: "hard link to the root",
                    })?;
                self.hard_link(&path, &target_path)?;
            }
            T::Fifo => {
                let parent = self.walk(&path, true)?;
                self.remove_existing(&parent, &path)?;
                mknodat(
                    &parent,
                    OsStr::from_bytes(path.name()),
                    SFlag::S_IFIFO,
                    Mode::from_bits_truncate(0o600),
                    0,
                )
                .map_err(|e| fs_err(&path, "cannot create FIFO", e))?;
                self.set_meta_at(&parent, &path, Some(mode), owner, mtime)?;
            }
            T::Char | T::Block => {
                return Err(UnpackError::DeviceNode {
                    path: path.display(),
                });
            }
            other => {
                return Err(UnpackError::UnsupportedType {
                    path: path.display(),
                    kind: other.as_byte(),
                });
            }
        }
        self.created.insert(path.joined);
        Ok(())
    }

    fn check_link_target(&self, path: &RelPath, target: &[u8]) -> Result<(), UnpackError> {
        let reason = if target.is_empty() {
            "empty"
        } else if target.contains(&0) {
            "NUL in target"
        } else if target.len() > self.limits.max_path {
            "target too long"
        } else {
            return Ok(());
        };
        Err(UnpackError::InvalidLink {
            path: path.display(),
            target: String::from_utf8_lossy(target).chars().take(300).collect(),
            reason,
        })
    }

    /// Opens the parent directory of `path` by walking from the root one component at a time,
    /// never following a symlink. With `create`, missing directories are made (mode 0755; a
    /// later entry for them sets their real metadata) and count as created by this layer.
    /// Without, `Ok(None)` when a component does not exist.
    fn walk_dir(
        &mut self,
        path: &RelPath,
        components: &[Vec<u8>],
        create: bool,
    ) -> Result<Option<OwnedFd>, UnpackError> {
        let mut dir = self
            .root
            .try_clone_to_owned()
            .map_err(|e| fs_err(path, "cannot duplicate the root descriptor", e))?;
        for (i, component) in components.iter().enumerate() {
            let name = OsStr::from_bytes(component);
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let next = match openat(&dir, name, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    match nix::sys::stat::mkdirat(&dir, name, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(fs_err(path, "cannot create parent directory", e)),
                    }
                    self.created.insert(components[..=i].join(&b'/'));
                    openat(&dir, name, flags, Mode::empty())
                        .map_err(|e| self.not_dir(path, &components[..=i], e))?
                }
                Err(Errno::ENOENT) => return Ok(None),
                Err(e) => return Err(self.not_dir(path, &components[..=i], e)),
            };
            dir = next;
        }
        Ok(Some(dir))
    }

    fn walk(&mut self, path: &RelPath, create: bool) -> Result<OwnedFd, UnpackError> {
        let parent = path.parent().to_vec();
        self.walk_dir(path, &parent, create)?
            .ok_or_else(|| fs_err(path, "parent directory missing", Errno::ENOENT))
    }

    fn not_dir(&self, path: &RelPath, prefix: &[Vec<u8>], e: Errno) -> UnpackError {
        match e {
            // ELOOP: a symlink under O_NOFOLLOW; ENOTDIR: a file or a symlink.
            Errno::ELOOP | Errno::ENOTDIR => UnpackError::NotADirectory {
                path: path.display(),
                component: String::from_utf8_lossy(&prefix.join(&b'/')).into_owned(),
            },
            e => fs_err(path, "cannot open parent directory", e),
        }
    }

    /// Removes whatever is at `path` (the entry replaces it), a directory with everything in
    /// it. A directory that is replaced by a directory is kept (its lower contents stay, as
    /// tar and the spec's "changeset" semantics say), so this is not called for directories.
    fn remove_existing(&mut self, parent: &OwnedFd, path: &RelPath) -> Result<(), UnpackError> {
        remove_tree(parent, path.name(), path, None, 0, self.limits.max_depth).map(|_| ())
    }

    fn make_dir(&mut self, parent: &OwnedFd, path: &RelPath) -> Result<(), UnpackError> {
        let name = OsStr::from_bytes(path.name());
        match stat_at(parent, path.name()) {
            Ok(Some(st)) if is_type(&st, SFlag::S_IFDIR) => return Ok(()),
            Ok(Some(_)) => self.remove_existing(parent, path)?,
            Ok(None) => {}
            Err(e) => return Err(fs_err(path, "cannot stat", e)),
        }
        nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(0o755))
            .map_err(|e| fs_err(path, "cannot create directory", e))
    }

    fn write_file<R: Read>(
        &mut self,
        parent: &OwnedFd,
        path: &RelPath,
        entry: &mut tar::Entry<'_, R>,
        mode: u32,
        owner: Option<(u32, u32)>,
        mtime: i64,
    ) -> Result<(), UnpackError> {
        let declared = entry.size();
        self.charge(path, declared)?;
        // O_EXCL after the removal: the name is new, so nothing (no symlink planted by this
        // layer) can be followed by the open.
        let fd = openat(
            parent,
            OsStr::from_bytes(path.name()),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| fs_err(path, "cannot create file", e))?;
        let mut file = File::from(fd);
        // The data reader is already limited to the declared size; the extra byte of the
        // limit catches a reader that would disagree. Copied by hand so that a read error
        // (the layer) and a write error (the disk, e.g. full) are told apart.
        let mut data = entry.take(declared.saturating_add(1));
        let mut buf = vec![0u8; 64 * 1024];
        let mut copied: u64 = 0;
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(UnpackError::Tar(e)),
            };
            let chunk = buf.get(..n).ok_or_else(|| {
                UnpackError::Tar(io::Error::other("tar reader overran its buffer"))
            })?;
            file.write_all(chunk).map_err(|e| UnpackError::Fs {
                path: path.display(),
                what: "cannot write file",
                source: e,
            })?;
            copied = copied.saturating_add(n as u64);
        }
        if copied != declared {
            return Err(UnpackError::SizeMismatch {
                path: path.display(),
                declared,
                actual: copied,
            });
        }
        set_meta_fd(file.as_fd(), path, mode, owner, mtime)
    }

    /// Accounts `size` bytes of file data against the limits before they are written.
    fn charge(&mut self, path: &RelPath, size: u64) -> Result<(), UnpackError> {
        if size > self.limits.max_file {
            return Err(UnpackError::FileTooLarge {
                path: path.display(),
                size,
                max: self.limits.max_file,
            });
        }
        let total = self.usage.bytes.saturating_add(size);
        if total > self.limits.max_total {
            return Err(UnpackError::TotalTooLarge {
                path: path.display(),
                max: self.limits.max_total,
            });
        }
        self.usage.bytes = total;
        self.bytes = self.bytes.saturating_add(size);
        Ok(())
    }

    fn hard_link(&mut self, path: &RelPath, target: &RelPath) -> Result<(), UnpackError> {
        let bad = || UnpackError::BadHardLink {
            path: path.display(),
            target: target.display(),
        };
        if target == path {
            return Err(bad());
        }
        let target_parent = self
            .walk_dir(target, target.parent(), false)?
            .ok_or_else(bad)?;
        match stat_at(&target_parent, target.name()) {
            // Directories cannot be hard linked; the kernel would refuse too.
            Ok(Some(st)) if !is_type(&st, SFlag::S_IFDIR) => {}
            Ok(_) => return Err(bad()),
            Err(e) => return Err(fs_err(path, "cannot stat hard link target", e)),
        }
        let parent = self.walk(path, true)?;
        self.remove_existing(&parent, path)?;
        // No AT_SYMLINK_FOLLOW: a symlink target is linked as the symlink itself.
        linkat(
            &target_parent,
            OsStr::from_bytes(target.name()),
            &parent,
            OsStr::from_bytes(path.name()),
            AtFlags::empty(),
        )
        .map_err(|e| fs_err(path, "cannot create hard link", e))
    }

    fn set_meta_at(
        &self,
        parent: &OwnedFd,
        path: &RelPath,
        mode: Option<u32>,
        owner: Option<(u32, u32)>,
        mtime: i64,
    ) -> Result<(), UnpackError> {
        let name = OsStr::from_bytes(path.name());
        if let Some((uid, gid)) = owner {
            fchownat(
                parent,
                name,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| fs_err(path, "cannot chown", e))?;
        }
        if let Some(mode) = mode {
            // Only for FIFOs: after the chown (which clears setuid bits); fchmodat does not
            // follow a symlink either way and the name was just created by us.
            nix::sys::stat::fchmodat(
                parent,
                name,
                Mode::from_bits_truncate(mode),
                nix::sys::stat::FchmodatFlags::NoFollowSymlink,
            )
            .or_else(|e| {
                // Some kernels refuse AT_SYMLINK_NOFOLLOW for fchmodat with ENOTSUP.
                if e == Errno::ENOTSUP || e == Errno::EOPNOTSUPP {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| fs_err(path, "cannot chmod", e))?;
        }
        let times = [TimeSpec::new(mtime, 0), TimeSpec::new(mtime, 0)];
        utimensat(
            parent,
            name,
            &times[0],
            &times[1],
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| fs_err(path, "cannot set mtime", e))
    }

    /// `.wh.<name>`: removes `path` from the lower layers.
    fn whiteout(&mut self, target: &RelPath) -> Result<(), UnpackError> {
        let Some(parent) = self.walk_dir(target, target.parent(), false)? else {
            return Ok(());
        };
        remove_tree(
            &parent,
            target.name(),
            target,
            Some(&self.created),
            0,
            self.limits.max_depth,
        )
        .map(|_| ())
    }

    /// `.wh..wh..opq`: removes every lower-layer entry in `dir`.
    fn opaque(&mut self, dir: Option<&RelPath>, marker: &RelPath) -> Result<(), UnpackError> {
        let fd = match dir {
            None => Some(
                self.root
                    .try_clone_to_owned()
                    .map_err(|e| fs_err(marker, "cannot duplicate the root descriptor", e))?,
            ),
            Some(dir) => self.walk_dir(marker, &dir.components, false)?,
        };
        let Some(fd) = fd else {
            return Ok(());
        };
        let prefix = dir.map(|d| d.components.clone()).unwrap_or_default();
        for name in list_dir(&fd, marker)? {
            let mut components = prefix.clone();
            components.push(name.clone());
            let child = RelPath::from_components(components);
            remove_tree(
                &fd,
                &name,
                &child,
                Some(&self.created),
                1,
                self.limits.max_depth,
            )?;
        }
        Ok(())
    }

    /// Applies the deferred directory metadata. A directory that a later entry of the layer
    /// replaced (or put behind a symlink) is skipped: its metadata no longer applies.
    fn finish_directories(&mut self) -> Result<(), UnpackError> {
        let dirs = std::mem::take(&mut self.dirs);
        for meta in dirs.iter().rev() {
            let Ok(Some(parent)) = self.walk_dir(&meta.path, meta.path.parent(), false) else {
                continue;
            };
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let Ok(fd) = openat(
                &parent,
                OsStr::from_bytes(meta.path.name()),
                flags,
                Mode::empty(),
            ) else {
                continue;
            };
            set_meta_fd(fd.as_fd(), &meta.path, meta.mode, meta.owner, meta.mtime)?;
        }
        Ok(())
    }
}

fn set_meta_fd(
    fd: BorrowedFd<'_>,
    path: &RelPath,
    mode: u32,
    owner: Option<(u32, u32)>,
    mtime: i64,
) -> Result<(), UnpackError> {
    if let Some((uid, gid)) = owner {
        // Before the chmod: chown clears setuid/setgid.
        nix::unistd::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(|e| fs_err(path, "cannot chown", e))?;
    }
    fchmod(fd, Mode::from_bits_truncate(mode)).map_err(|e| fs_err(path, "cannot chmod", e))?;
    let t = TimeSpec::new(mtime, 0);
    futimens(fd, &t, &t).map_err(|e| fs_err(path, "cannot set mtime", e))
}

fn fs_err(path: &RelPath, what: &'static str, e: impl Into<io::Error>) -> UnpackError {
    UnpackError::Fs {
        path: path.display(),
        what,
        source: e.into(),
    }
}

fn is_type(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == kind
}

/// lstat relative to a directory; `None` when the name does not exist.
fn stat_at(dir: &OwnedFd, name: &[u8]) -> Result<Option<FileStat>, Errno> {
    match fstatat(dir, OsStr::from_bytes(name), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn list_dir(dir: &OwnedFd, path: &RelPath) -> Result<Vec<Vec<u8>>, UnpackError> {
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fs_err(path, "cannot open directory", e))?;
    let mut listing = nix::dir::Dir::from_fd(fd).map_err(|e| fs_err(path, "cannot list", e))?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry.map_err(|e| fs_err(path, "cannot list", e))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// Removes `name` in `dir` (`path` is its archive path), recursing into directories without
/// following symlinks. With `keep`, entries whose path is in it (created by the current layer)
/// are kept, and so are the directories holding them. Returns whether anything was kept.
fn remove_tree(
    dir: &OwnedFd,
    name: &[u8],
    path: &RelPath,
    keep: Option<&HashSet<Vec<u8>>>,
    depth: usize,
    max_depth: usize,
) -> Result<bool, UnpackError> {
    let Some(st) = stat_at(dir, name).map_err(|e| fs_err(path, "cannot stat", e))? else {
        return Ok(false);
    };
    let kept_self = keep.is_some_and(|k| k.contains(&path.joined));
    let os_name = OsStr::from_bytes(name);
    if !is_type(&st, SFlag::S_IFDIR) {
        if kept_self {
            return Ok(true);
        }
        unlinkat(dir, os_name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| fs_err(path, "cannot remove", e))?;
        return Ok(false);
    }
    // Everything under the root was made by the layers, within max_depth; deeper means the
    // tree is not what we made, and recursion must stay bounded regardless.
    if depth > max_depth.saturating_add(1) {
        return Err(fs_err(
            path,
            "directory tree too deep to remove",
            Errno::ELOOP,
        ));
    }
    let child_dir = openat(
        dir,
        os_name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fs_err(path, "cannot open directory", e))?;
    let mut kept = kept_self;
    for child in list_dir(&child_dir, path)? {
        let mut components = path.components.clone();
        components.push(child.clone());
        let child_path = RelPath::from_components(components);
        kept |= remove_tree(&child_dir, &child, &child_path, keep, depth + 1, max_depth)?;
    }
    if !kept {
        unlinkat(dir, os_name, UnlinkatFlags::RemoveDir)
            .map_err(|e| fs_err(path, "cannot remove directory", e))?;
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<Option<String>, &'static str> {
        normalize(p.as_bytes(), &Limits::default())
            .map(|o| o.map(|r| String::from_utf8(r.joined).unwrap()))
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(norm("./a/b"), Ok(Some("a/b".into())));
        assert_eq!(norm("a//./b/"), Ok(Some("a/b".into())));
        assert_eq!(norm("./"), Ok(None));
        assert_eq!(norm("."), Ok(None));
        assert_eq!(norm("/etc/passwd"), Err("absolute path"));
        assert_eq!(norm("/"), Ok(None));
        assert_eq!(norm("//"), Ok(None));
        assert_eq!(norm("/."), Err("absolute path"));
        assert_eq!(norm("a/../../x"), Err("'..' component"));
        assert_eq!(norm(".."), Err("'..' component"));
        assert_eq!(norm("a/.."), Err("'..' component"));
        assert_eq!(norm(""), Err("empty path"));
        assert_eq!(norm("a\0b"), Err("NUL in path"));
        // `..` only as a whole component: these are ordinary names.
        assert_eq!(norm("a/..b/c.."), Ok(Some("a/..b/c..".into())));
    }

    #[test]
    fn bounds_paths() {
        let limits = Limits {
            max_path: 10,
            max_depth: 3,
            ..Limits::default()
        };
        assert!(normalize(b"0123456789", &limits).is_ok());
        assert_eq!(normalize(b"01234567890", &limits), Err("path too long"));
        assert!(normalize(b"a/b/c", &limits).is_ok());
        assert_eq!(normalize(b"a/b/c/d", &limits), Err("path too deep"));
    }

    fn wh(p: &str) -> Result<Whiteout, &'static str> {
        classify_whiteout(
            &normalize(p.as_bytes(), &Limits::default())
                .unwrap()
                .unwrap(),
        )
    }

    fn rel(p: &str) -> RelPath {
        normalize(p.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn classifies_whiteouts() {
        assert_eq!(wh("a/b"), Ok(Whiteout::None));
        assert_eq!(wh("a/.whx"), Ok(Whiteout::None));
        assert_eq!(wh("a/.wh.b"), Ok(Whiteout::Remove(rel("a/b"))));
        assert_eq!(wh(".wh.b"), Ok(Whiteout::Remove(rel("b"))));
        assert_eq!(wh("a/.wh..wh..opq"), Ok(Whiteout::Opaque(Some(rel("a")))));
        assert_eq!(wh(".wh..wh..opq"), Ok(Whiteout::Opaque(None)));
        assert_eq!(wh("a/.wh..wh.plnk"), Ok(Whiteout::Meta));
        assert!(wh("a/.wh.").is_err());
        assert!(wh("a/.wh...").is_err());
        assert!(wh("a/.wh..").is_err());
    }

    #[test]
    fn media_types() {
        use Compression::*;
        for (t, c) in [
            ("application/vnd.oci.image.layer.v1.tar", None),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Gzip),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Zstd),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", Gzip),
        ] {
            assert_eq!(Compression::from_media_type(t).unwrap(), c);
        }
        for t in [
            "",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+bzip2",
            "application/vnd.oci.image.layer.v1.tar+GZIP",
        ] {
            assert!(Compression::from_media_type(t).is_err(), "{t}");
        }
    }

    /// The whiteout logic against a real directory: lower entries go, this layer's stay.
    #[test]
    fn remove_tree_keeps_created() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("d/sub")).unwrap();
        std::fs::write(root.join("d/lower"), b"x").unwrap();
        std::fs::write(root.join("d/sub/lower"), b"x").unwrap();
        std::fs::write(root.join("d/sub/new"), b"x").unwrap();
        std::os::unix::fs::symlink("/", root.join("d/link")).unwrap();
        let fd = open_root(root).unwrap();
        let keep: HashSet<Vec<u8>> = [b"d/sub/new".to_vec()].into_iter().collect();
        let kept = remove_tree(&fd, b"d", &rel("d"), Some(&keep), 0, 10).unwrap();
        assert!(kept);
        assert!(root.join("d/sub/new").exists());
        assert!(!root.join("d/sub/lower").exists());
        assert!(!root.join("d/lower").exists());
        assert!(root.join("d/link").symlink_metadata().is_err());
        let kept = remove_tree(&fd, b"d", &rel("d"), None, 0, 10).unwrap();
        assert!(!kept);
        assert!(!root.join("d").exists());
    }
}
