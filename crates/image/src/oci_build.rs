//! Building an OCI image layout (image-spec `image-layout.md`) from a directory tree, on the
//! host, reproducibly: `cvmctl image build`.
//!
//! The same tree, options and SOURCE_DATE_EPOCH give byte-identical blobs and so the same
//! manifest digest:
//!
//! - tar entries are sorted by path (bytewise), directories end in `/`, names carry no `./`;
//! - every entry has the same owner (`--owner`, default 0:0, no user or group names) and the
//!   same mtime (SOURCE_DATE_EPOCH, default 0); GNU headers, so no PAX atime/ctime records
//!   (paths over 100 bytes use the GNU long-name entry);
//! - permission bits are kept (all of 0o7777), symlinks are stored as symlinks with their
//!   target as is, hard links within the tree as tar hard links to the first path (in sorted
//!   order) of the inode; xattrs are not stored;
//! - gzip through flate2 (header mtime 0, no name), zstd through ruzstd's pure-Rust encoder
//!   (its "fastest" level), JSON with a fixed member order and sorted maps.
//!
//! Device nodes and sockets in the tree are refused (the agent refuses device nodes in a
//! layer anyway). `--extra-layer` tars are taken byte for byte, never inspected: tests use
//! them to ship hostile layers to the guest's unpacker.
//!
//! An existing layout is extended: the new manifest is added to its `index.json` and replaces
//! a manifest with the same `org.opencontainers.image.ref.name`, other entries are kept.

use cvm_oci::digest::Sha256Digest;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Everything that can go wrong building or reading a layout. Every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot stat {path}")]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("cannot list {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {kind} cannot go into an image layer")]
    Unsupported { path: PathBuf, kind: &'static str },
    #[error("{path} changed size while it was archived")]
    Changed { path: PathBuf },
    #[error("{what} {value:?}: {reason}")]
    BadArgument {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{path}: not an OCI image layout: {reason}")]
    Layout { path: PathBuf, reason: String },
    #[error("{path}: invalid JSON")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: content does not match its digest {digest}")]
    DigestMismatch { path: PathBuf, digest: String },
    #[error("{layout}: no manifest tagged {tag:?} in index.json")]
    TagNotFound { layout: PathBuf, tag: String },
    #[error("SOURCE_DATE_EPOCH")]
    SourceDateEpoch(#[source] crate::initrd::InitrdError),
}

/// Layer compression of `cvmctl image build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LayerCompression {
    #[default]
    Gzip,
    Zstd,
    None,
}

impl LayerCompression {
    pub fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            LayerCompression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            LayerCompression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }
}

/// `cvmctl image build`: an OCI image layout from a directory tree.
#[derive(Debug, Clone, clap::Args)]
pub struct BuildArgs {
    /// Directory tree that becomes the image's first layer.
    pub tree: PathBuf,
    /// The layout directory (created, or extended when it holds a layout).
    #[arg(short, long)]
    pub output: PathBuf,
    /// The `org.opencontainers.image.ref.name` of the manifest in index.json.
    #[arg(long)]
    pub tag: String,
    /// Cmd, as a JSON array of strings.
    #[arg(long)]
    pub cmd: Option<String>,
    /// Entrypoint, as a JSON array of strings.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// An environment variable K=V (repeatable).
    #[arg(long)]
    pub env: Vec<String>,
    /// A label K=V (repeatable).
    #[arg(long)]
    pub label: Vec<String>,
    /// WorkingDir.
    #[arg(long)]
    pub workdir: Option<String>,
    /// User (name, uid, uid:gid …, passed on as is).
    #[arg(long)]
    pub user: Option<String>,
    /// Owner of every entry of the tree's layer, UID:GID.
    #[arg(long, default_value = "0:0")]
    pub owner: String,
    /// Layer compression.
    #[arg(long, value_enum, default_value_t = LayerCompression::Gzip)]
    pub compression: LayerCompression,
    /// An uncompressed tar appended as a further layer byte for byte (not checked; repeatable).
    #[arg(long)]
    pub extra_layer: Vec<PathBuf>,
}

/// The runtime part of the image config (`config` in image-spec `config.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecConfig {
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// What to build, parsed and checked.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub tree: PathBuf,
    pub tag: String,
    pub config: ExecConfig,
    pub owner: (u64, u64),
    pub compression: LayerCompression,
    pub extra_layers: Vec<PathBuf>,
    /// Seconds since the epoch: every mtime and the config's `created`.
    pub epoch: u64,
}

/// One layer as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    pub media_type: &'static str,
    pub digest: Sha256Digest,
    pub diff_id: Sha256Digest,
    pub size: u64,
}

/// What [`build_image`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildReport {
    pub manifest_digest: Sha256Digest,
    pub manifest_size: u64,
    pub config_digest: Sha256Digest,
    pub layers: Vec<LayerInfo>,
}

/// Parses the command line into an [`ImageSpec`] (SOURCE_DATE_EPOCH from the environment),
/// builds it, and returns the report; the caller prints the manifest digest.
pub fn run(args: &BuildArgs) -> Result<BuildReport, BuildError> {
    let epoch = crate::initrd::source_date_epoch().map_err(BuildError::SourceDateEpoch)?;
    let spec = spec_from_args(args, u64::from(epoch))?;
    build_image(&args.output, &spec)
}

/// The [`ImageSpec`] the command line asks for.
pub fn spec_from_args(args: &BuildArgs, epoch: u64) -> Result<ImageSpec, BuildError> {
    let json_array = |what: &'static str, value: &Option<String>| {
        value
            .as_ref()
            .map(|text| {
                serde_json::from_str::<Vec<String>>(text).map_err(|_| BuildError::BadArgument {
                    what,
                    value: text.clone(),
                    reason: "not a JSON array of strings",
                })
            })
            .transpose()
    };
    let key_value = |what: &'static str, text: &String| match text.split_once('=') {
        Some((k, _)) if !k.is_empty() => Ok(()),
        _ => Err(BuildError::BadArgument {
            what,
            value: text.clone(),
            reason: "expected K=V with a non-empty K",
        }),
    };
    for e in &args.env {
        key_value("--env", e)?;
    }
    let mut labels = BTreeMap::new();
    for l in &args.label {
        key_value("--label", l)?;
        let (k, v) = l.split_once('=').unwrap_or_default();
        labels.insert(k.to_string(), v.to_string());
    }
    let bad_owner = || BuildError::BadArgument {
        what: "--owner",
        value: args.owner.clone(),
        reason: "expected UID:GID (numbers)",
    };
    let (uid, gid) = args.owner.split_once(':').ok_or_else(bad_owner)?;
    let number = |s: &str| {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad_owner());
        }
        s.parse::<u32>().map(u64::from).map_err(|_| bad_owner())
    };
    check_tag(&args.tag)?;
    Ok(ImageSpec {
        tree: args.tree.clone(),
        tag: args.tag.clone(),
        config: ExecConfig {
            cmd: json_array("--cmd", &args.cmd)?,
            entrypoint: json_array("--entrypoint", &args.entrypoint)?,
            env: args.env.clone(),
            labels,
            working_dir: args.workdir.clone(),
            user: args.user.clone(),
        },
        owner: (number(uid)?, number(gid)?),
        compression: args.compression,
        extra_layers: args.extra_layer.clone(),
        epoch,
    })
}

/// The image-spec grammar of `org.opencontainers.image.ref.name`:
/// `component ("/" component)*`, `component = alphanum (separator alphanum)*`,
/// `separator = [-._:@+] | "--"`.
pub fn check_tag(tag: &str) -> Result<(), BuildError> {
    let bad = |reason| BuildError::BadArgument {
        what: "--tag",
        value: tag.to_string(),
        reason,
    };
    if tag.is_empty() || tag.len() > 255 {
        return Err(bad("must be 1 to 255 characters"));
    }
    for component in tag.split('/') {
        let b = component.as_bytes();
        let alnum = |c: u8| c.is_ascii_alphanumeric();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return Err(bad("components must start and end with a letter or digit"));
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
            } else if b[i..].starts_with(b"--") && alnum(b[i + 2]) {
                i += 2;
            } else if b"-._:@+".contains(&b[i]) && alnum(b[i + 1]) {
                i += 1;
            } else {
                return Err(bad("only letters, digits and single - . _ : @ + (or --)"));
            }
        }
    }
    Ok(())
}

/// Writes the image into the layout at `layout` (created when missing or empty) and tags it.
pub fn build_image(layout: &Path, spec: &ImageSpec) -> Result<BuildReport, BuildError> {
    check_tag(&spec.tag)?;
    let index = open_layout(layout)?;
    let blobs = layout.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(|source| BuildError::Write {
        path: blobs.clone(),
        source,
    })?;

    let mut layers = vec![write_tree_layer(
        &blobs,
        &spec.tree,
        spec.owner,
        spec.epoch,
        spec.compression,
    )?];
    for extra in &spec.extra_layers {
        layers.push(write_tar_layer(&blobs, extra, spec.compression)?);
    }

    let config = ImageConfig {
        created: rfc3339(spec.epoch),
        architecture: "amd64",
        os: "linux",
        config: ConfigJson::from(&spec.config),
        rootfs: RootFs {
            kind: "layers",
            diff_ids: layers.iter().map(|l| l.diff_id.to_string()).collect(),
        },
    };
    let config_json = serde_json::to_vec(&config).map_err(|source| BuildError::Json {
        path: layout.to_path_buf(),
        source,
    })?;
    let config_desc = write_blob(&blobs, MEDIA_TYPE_CONFIG, &config_json)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_TYPE_MANIFEST,
        config: config_desc.clone(),
        layers: layers
            .iter()
            .map(|l| DescriptorJson {
                media_type: l.media_type.to_string(),
                digest: l.digest.to_string(),
                size: l.size,
                annotations: None,
            })
            .collect(),
    };
    let manifest_json = serde_json::to_vec(&manifest).map_err(|source| BuildError::Json {
        path: layout.to_path_buf(),
        source,
    })?;
    let mut manifest_desc = write_blob(&blobs, MEDIA_TYPE_MANIFEST, &manifest_json)?;
    manifest_desc.annotations = Some(BTreeMap::from([(REF_NAME.to_string(), spec.tag.clone())]));
    write_index(layout, index, &manifest_desc, &spec.tag)?;
    Ok(BuildReport {
        manifest_digest: sha256_digest(&manifest_json),
        manifest_size: manifest_json.len() as u64,
        config_digest: sha256_digest(&config_json),
        layers,
    })
}

/// A layer of an image read back from a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutLayer {
    pub path: PathBuf,
    pub media_type: String,
    pub digest: String,
    pub diff_id: String,
}

/// The layers of the manifest tagged `tag` in the layout at `layout`, with their diff_ids
/// from the config. The index entry, manifest and config are checked against their digests;
/// the layers are left to the unpacker, which checks them as it streams them.
pub fn read_image(layout: &Path, tag: &str) -> Result<Vec<LayoutLayer>, BuildError> {
    let index_path = layout.join("index.json");
    let index: serde_json::Value = read_json(&index_path)?;
    let manifest_desc = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"][REF_NAME].as_str() == Some(tag))
        .ok_or_else(|| BuildError::TagNotFound {
            layout: layout.to_path_buf(),
            tag: tag.to_string(),
        })?;
    let manifest = read_blob_json(layout, manifest_desc)?;
    let config = read_blob_json(layout, &manifest["config"])?;
    let diff_ids = config["rootfs"]["diff_ids"].as_array().cloned();
    let layers = manifest["layers"].as_array().cloned();
    let (Some(diff_ids), Some(layers)) = (diff_ids, layers) else {
        return Err(BuildError::Layout {
            path: layout.to_path_buf(),
            reason: "manifest without layers or config without diff_ids".into(),
        });
    };
    if diff_ids.len() != layers.len() {
        return Err(BuildError::Layout {
            path: layout.to_path_buf(),
            reason: "the numbers of layers and diff_ids differ".into(),
        });
    }
    layers
        .iter()
        .zip(&diff_ids)
        .map(|(layer, diff_id)| {
            let digest = layer["digest"].as_str().unwrap_or_default();
            Ok(LayoutLayer {
                path: blob_path(layout, digest)?,
                media_type: layer["mediaType"].as_str().unwrap_or_default().to_string(),
                digest: digest.to_string(),
                diff_id: diff_id.as_str().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf, BuildError> {
    let parsed = Sha256Digest::parse(digest).map_err(|e| BuildError::Layout {
        path: layout.to_path_buf(),
        reason: format!("digest {:?}: {}", e.digest, e.reason),
    })?;
    let hex = parsed.to_string();
    Ok(layout
        .join("blobs")
        .join("sha256")
        .join(&hex["sha256:".len()..]))
}

fn read_blob_json(
    layout: &Path,
    descriptor: &serde_json::Value,
) -> Result<serde_json::Value, BuildError> {
    let digest = descriptor["digest"].as_str().unwrap_or_default();
    let path = blob_path(layout, digest)?;
    let data = fs::read(&path).map_err(|source| BuildError::Read {
        path: path.clone(),
        source,
    })?;
    if sha256_digest(&data).to_string() != digest {
        return Err(BuildError::DigestMismatch {
            path,
            digest: digest.to_string(),
        });
    }
    serde_json::from_slice(&data).map_err(|source| BuildError::Json { path, source })
}

fn read_json(path: &Path) -> Result<serde_json::Value, BuildError> {
    let data = fs::read(path).map_err(|source| BuildError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&data).map_err(|source| BuildError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Checks or creates the layout; returns the existing index.json, if any.
fn open_layout(layout: &Path) -> Result<Option<serde_json::Value>, BuildError> {
    let marker = layout.join("oci-layout");
    let empty = match fs::read_dir(layout) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(source) => {
            return Err(BuildError::ReadDir {
                path: layout.to_path_buf(),
                source,
            });
        }
    };
    if empty {
        fs::create_dir_all(layout).map_err(|source| BuildError::Write {
            path: layout.to_path_buf(),
            source,
        })?;
        write_file(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        return Ok(None);
    }
    let version = read_json(&marker)?;
    if version["imageLayoutVersion"] != "1.0.0" {
        return Err(BuildError::Layout {
            path: marker,
            reason: "imageLayoutVersion is not \"1.0.0\"".into(),
        });
    }
    let index_path = layout.join("index.json");
    if !index_path.exists() {
        return Ok(None);
    }
    let index = read_json(&index_path)?;
    if !index["manifests"].is_array() || index["schemaVersion"] != 2 {
        return Err(BuildError::Layout {
            path: index_path,
            reason: "index.json has no schemaVersion 2 or no manifests array".into(),
        });
    }
    Ok(Some(index))
}

fn write_index(
    layout: &Path,
    index: Option<serde_json::Value>,
    manifest: &DescriptorJson,
    tag: &str,
) -> Result<(), BuildError> {
    let path = layout.join("index.json");
    let descriptor = serde_json::to_value(manifest).map_err(|source| BuildError::Json {
        path: path.clone(),
        source,
    })?;
    let mut index = index.unwrap_or_else(|| {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "manifests": [],
        })
    });
    if let Some(list) = index["manifests"].as_array_mut() {
        list.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag));
        list.push(descriptor);
    }
    let json = serde_json::to_vec(&index).map_err(|source| BuildError::Json {
        path: path.clone(),
        source,
    })?;
    // Replaced by rename, so a reader never sees half an index.
    let tmp = layout.join(format!(".index.json.{}", std::process::id()));
    write_file(&tmp, &json)?;
    fs::rename(&tmp, &path).map_err(|source| BuildError::Write { path, source })
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), BuildError> {
    fs::write(path, data).map_err(|source| BuildError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn sha256_digest(data: &[u8]) -> Sha256Digest {
    Sha256Digest(Sha256::digest(data).into())
}

fn write_blob(blobs: &Path, media_type: &str, data: &[u8]) -> Result<DescriptorJson, BuildError> {
    let digest = sha256_digest(data);
    let name = &digest.to_string()["sha256:".len()..];
    write_file(&blobs.join(name), data)?;
    Ok(DescriptorJson {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size: data.len() as u64,
        annotations: None,
    })
}

/// A temporary file in the blobs directory, removed unless it was renamed to its digest.
struct TempBlob {
    path: PathBuf,
    keep: bool,
}

impl TempBlob {
    fn create(blobs: &Path, what: &str) -> Result<(Self, File), BuildError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = blobs.join(format!(".{what}-{}-{n}.tmp", std::process::id()));
        let file = File::create(&path).map_err(|source| BuildError::Write {
            path: path.clone(),
            source,
        })?;
        Ok((TempBlob { path, keep: false }, file))
    }

    fn commit(mut self, blobs: &Path, digest: &Sha256Digest) -> Result<(), BuildError> {
        let target = blobs.join(&digest.to_string()["sha256:".len()..]);
        fs::rename(&self.path, &target).map_err(|source| BuildError::Write {
            path: target,
            source,
        })?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    fn finish(self) -> (W, Sha256Digest, u64) {
        (
            self.inner,
            Sha256Digest(self.hasher.finalize().into()),
            self.count,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Where the uncompressed tar goes: straight into the blob, through gzip into it, or into a
/// scratch file that is zstd-compressed afterwards (ruzstd's encoder pulls from a reader).
enum Sink {
    Plain(HashingWriter<BufWriter<File>>),
    Gzip(flate2::write::GzEncoder<HashingWriter<BufWriter<File>>>),
    ZstdScratch(BufWriter<File>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Gzip(w) => w.write(buf),
            Sink::ZstdScratch(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
            Sink::ZstdScratch(w) => w.flush(),
        }
    }
}

/// Writes one layer: `fill` writes the uncompressed tar; the blob lands in `blobs` under its
/// digest. `source` names what is archived, for errors.
fn write_layer(
    blobs: &Path,
    compression: LayerCompression,
    source: &Path,
    fill: impl FnOnce(&mut HashingWriter<Sink>) -> Result<(), BuildError>,
) -> Result<LayerInfo, BuildError> {
    let (blob, blob_file) = TempBlob::create(blobs, "layer")?;
    let write_err = |source| BuildError::Write {
        path: blob.path.clone(),
        source,
    };
    let blob_out = HashingWriter::new(BufWriter::with_capacity(1 << 20, blob_file));
    let mut scratch = None;
    let sink = match compression {
        LayerCompression::None => Sink::Plain(blob_out),
        LayerCompression::Gzip => Sink::Gzip(
            flate2::GzBuilder::new()
                .mtime(0)
                .write(blob_out, flate2::Compression::default()),
        ),
        LayerCompression::Zstd => {
            let (tmp, file) = TempBlob::create(blobs, "tar")?;
            scratch = Some((tmp, blob_out));
            Sink::ZstdScratch(BufWriter::with_capacity(1 << 20, file))
        }
    };
    let mut tar_out = HashingWriter::new(sink);
    fill(&mut tar_out)?;
    let (sink, diff_id, _tar_size) = tar_out.finish();
    let blob_out = match sink {
        Sink::Plain(w) => w,
        Sink::Gzip(w) => w.finish().map_err(write_err)?,
        Sink::ZstdScratch(w) => {
            let (tmp, blob_out) = scratch.take().ok_or(BuildError::Layout {
                path: source.to_path_buf(),
                reason: "internal: no zstd scratch file".into(),
            })?;
            let file = w.into_inner().map_err(|e| BuildError::Write {
                path: tmp.path.clone(),
                source: e.into_error(),
            })?;
            drop(file);
            zstd_compress(&tmp.path, blob_out, &blob.path)?
        }
    };
    let (buf, digest, size) = blob_out.finish();
    let file = buf.into_inner().map_err(|e| write_err(e.into_error()))?;
    file.sync_all().map_err(write_err)?;
    drop(file);
    blob.commit(blobs, &digest)?;
    Ok(LayerInfo {
        media_type: compression.media_type(),
        digest,
        diff_id,
        size,
    })
}

/// ruzstd's encoder unwraps I/O errors (a panic, an abort in release); these adapters never
/// fail towards it and keep the first error for the caller instead.
struct StickyReader<R> {
    inner: R,
    error: Option<io::Error>,
}

impl<R: Read> Read for StickyReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.error.is_some() {
            return Ok(0);
        }
        match self.inner.read(buf) {
            Ok(n) => Ok(n),
            Err(e) => {
                self.error = Some(e);
                Ok(0)
            }
        }
    }
}

struct StickyWriter<W> {
    inner: W,
    error: Option<io::Error>,
}

impl<W: Write> Write for StickyWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.error.is_none()
            && let Err(e) = self.inner.write_all(buf)
        {
            self.error = Some(e);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.error.is_none()
            && let Err(e) = self.inner.flush()
        {
            self.error = Some(e);
        }
        Ok(())
    }
}

fn zstd_compress(
    tar: &Path,
    out: HashingWriter<BufWriter<File>>,
    out_path: &Path,
) -> Result<HashingWriter<BufWriter<File>>, BuildError> {
    let file = File::open(tar).map_err(|source| BuildError::Read {
        path: tar.to_path_buf(),
        source,
    })?;
    let mut reader = StickyReader {
        inner: io::BufReader::with_capacity(1 << 20, file),
        error: None,
    };
    let mut writer = StickyWriter {
        inner: out,
        error: None,
    };
    ruzstd::encoding::compress(
        &mut reader,
        &mut writer,
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    if let Some(source) = reader.error {
        return Err(BuildError::Read {
            path: tar.to_path_buf(),
            source,
        });
    }
    if let Some(source) = writer.error {
        return Err(BuildError::Write {
            path: out_path.to_path_buf(),
            source,
        });
    }
    Ok(writer.inner)
}

/// A pre-made tar as a layer, byte for byte.
pub fn write_tar_layer(
    blobs: &Path,
    tar: &Path,
    compression: LayerCompression,
) -> Result<LayerInfo, BuildError> {
    write_layer(blobs, compression, tar, |out| {
        let mut file = File::open(tar).map_err(|source| BuildError::Read {
            path: tar.to_path_buf(),
            source,
        })?;
        copy(&mut file, out, tar)
    })
}

/// Copies, telling read errors (named `path`) from write errors.
fn copy(from: &mut impl Read, to: &mut impl Write, path: &Path) -> Result<(), BuildError> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(BuildError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        to.write_all(&buf[..n])
            .map_err(|source| BuildError::Write {
                path: path.to_path_buf(),
                source,
            })?;
    }
}

/// One path of the tree, relative, as raw bytes.
struct TreeEntry {
    rel: Vec<u8>,
    meta: fs::Metadata,
}

/// Every path under `root` (not `root` itself), without following symlinks, sorted bytewise.
fn walk(root: &Path) -> Result<Vec<TreeEntry>, BuildError> {
    let meta = fs::metadata(root).map_err(|source| BuildError::Stat {
        path: root.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(BuildError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    let mut out = Vec::new();
    let mut stack = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(OsString::from_vec(rel.clone()));
        let entries = fs::read_dir(&dir).map_err(|source| BuildError::ReadDir {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| BuildError::ReadDir {
                path: dir.clone(),
                source,
            })?;
            let mut child = rel.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(entry.file_name().as_bytes());
            let path = entry.path();
            let meta =
                fs::symlink_metadata(&path).map_err(|source| BuildError::Stat { path, source })?;
            if meta.is_dir() {
                stack.push(child.clone());
            }
            out.push(TreeEntry { rel: child, meta });
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// The tree as the image's first layer.
pub fn write_tree_layer(
    blobs: &Path,
    tree: &Path,
    owner: (u64, u64),
    epoch: u64,
    compression: LayerCompression,
) -> Result<LayerInfo, BuildError> {
    let entries = walk(tree)?;
    write_layer(blobs, compression, tree, |out| {
        write_tree_tar(tree, &entries, owner, epoch, out)
    })
}

fn write_tree_tar(
    tree: &Path,
    entries: &[TreeEntry],
    owner: (u64, u64),
    epoch: u64,
    out: &mut impl Write,
) -> Result<(), BuildError> {
    let mut builder = tar::Builder::new(out);
    let mut first_link: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    for entry in entries {
        let path = tree.join(OsString::from_vec(entry.rel.clone()));
        let name = Path::new(std::ffi::OsStr::from_bytes(&entry.rel));
        let write_err = |source| BuildError::Write {
            path: path.clone(),
            source,
        };
        let meta = &entry.meta;
        let ft = meta.file_type();
        let mut header = tar::Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(owner.0);
        header.set_gid(owner.1);
        header.set_mtime(epoch);
        header.set_size(0);
        if !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(target) = first_link.get(&key) {
                header.set_entry_type(tar::EntryType::Link);
                builder
                    .append_link(
                        &mut header,
                        name,
                        Path::new(std::ffi::OsStr::from_bytes(target)),
                    )
                    .map_err(write_err)?;
                continue;
            }
            first_link.insert(key, entry.rel.clone());
        }
        if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            let mut dir_name = entry.rel.clone();
            dir_name.push(b'/');
            builder
                .append_data(
                    &mut header,
                    Path::new(std::ffi::OsStr::from_bytes(&dir_name)),
                    io::empty(),
                )
                .map_err(write_err)?;
        } else if ft.is_file() {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let file = File::open(&path).map_err(|source| BuildError::Read {
                path: path.clone(),
                source,
            })?;
            let mut reader = ExactReader {
                inner: file,
                left: meta.len(),
                changed: false,
                read_error: None,
            };
            let result = builder.append_data(&mut header, name, &mut reader);
            if let Some(source) = reader.read_error {
                return Err(BuildError::Read { path, source });
            }
            if reader.changed || reader.left != 0 {
                return Err(BuildError::Changed { path });
            }
            result.map_err(write_err)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(|source| BuildError::Read {
                path: path.clone(),
                source,
            })?;
            header.set_entry_type(tar::EntryType::Symlink);
            builder
                .append_link(&mut header, name, &target)
                .map_err(write_err)?;
        } else if ft.is_fifo() {
            header.set_entry_type(tar::EntryType::Fifo);
            builder
                .append_data(&mut header, name, io::empty())
                .map_err(write_err)?;
        } else {
            let kind = if ft.is_socket() {
                "a socket"
            } else {
                "a device node"
            };
            return Err(BuildError::Unsupported { path, kind });
        }
    }
    builder.into_inner().map_err(|source| BuildError::Write {
        path: tree.to_path_buf(),
        source,
    })?;
    Ok(())
}

/// Reads exactly `left` bytes of a file; notes when the file is shorter or longer than its
/// size at the walk, and keeps a read error apart from the tar writer's errors.
struct ExactReader {
    inner: File,
    left: u64,
    changed: bool,
    read_error: Option<io::Error>,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One more byte means the file grew.
            let mut probe = [0u8; 1];
            if matches!(self.inner.read(&mut probe), Ok(1)) {
                self.changed = true;
            }
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        match self.inner.read(&mut buf[..want]) {
            Ok(0) => {
                self.changed = true;
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"))
            }
            Ok(n) => {
                self.left -= n as u64;
                Ok(n)
            }
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.read_error = Some(e);
                Err(copy)
            }
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (proleptic Gregorian, UTC).
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86400) as i64;
    let secs = epoch % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[derive(Serialize, Clone)]
struct DescriptorJson {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct Manifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    config: DescriptorJson,
    layers: Vec<DescriptorJson>,
}

#[derive(Serialize)]
struct ImageConfig {
    created: String,
    architecture: &'static str,
    os: &'static str,
    config: ConfigJson,
    rootfs: RootFs,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    env: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
}

impl From<&ExecConfig> for ConfigJson {
    fn from(c: &ExecConfig) -> Self {
        ConfigJson {
            user: c.user.clone(),
            env: c.env.clone(),
            entrypoint: c.entrypoint.clone(),
            cmd: c.cmd.clone(),
            working_dir: c.working_dir.clone(),
            labels: c.labels.clone(),
        }
    }
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.0", "a/b:c", "x--y", "A_b-c.d+e@f"] {
            assert!(check_tag(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a//b", "a b", "a..b", "a/", "a---b"] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }
}
