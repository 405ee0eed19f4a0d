//! Image resolution common to both sources (a registry, an OCI layout directory): from the
//! document a reference names, through an index (picking `linux/amd64`), to the manifest, the
//! config and the layer list; then the layers streamed, in order, into [`unpack::apply_layer`].
//!
//! Every fetched document is checked against its digest (and its descriptor's size) BEFORE it
//! is parsed, and read with a size bound; a layer blob is read through a [`SizedReader`] that
//! refuses a byte more (or less) than its descriptor says, and `apply_layer` verifies its
//! digest and diff_id at the end of the stream. A failed [`unpack`] leaves a partly written
//! root: the caller discards it.
//!
//! Media types: OCI image index / manifest and Docker manifest list / v2 schema 2 manifest.
//! Docker schema 1 is refused (unsigned in practice, no config digest).

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;
use std::time::Instant;

use oci_spec::image::{Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, Os};
use sha2::{Digest as _, Sha256};

use super::digest::{DigestError, Sha256Digest};
use super::unpack::{self, Compression, Limits, UnpackError, Usage};

/// Largest manifest or index accepted.
pub const MAX_MANIFEST: usize = 4 << 20;
/// Largest image config accepted.
pub const MAX_CONFIG: usize = 8 << 20;
/// Most layers in one image.
pub const MAX_LAYERS: usize = 1024;
/// Most index levels above the manifest (index.json → index → manifest is two).
const MAX_NESTING: usize = 4;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_V1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The platform the agent runs.
pub const PLATFORM: &str = "linux/amd64";

/// The Accept list for manifest requests.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an image could not be resolved or unpacked. `what` names the document (its digest) or
/// the source; strings from the documents are printed with `{:?}`.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{what}")]
    Fetch {
        what: String,
        #[source]
        source: BoxError,
    },
    #[error("{what}: cannot read")]
    Read {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what}: {size} bytes is over the {max}-byte limit")]
    TooLarge { what: String, size: u64, max: u64 },
    #[error("{what}: the content has digest {actual}, expected {expected}")]
    DigestMismatch {
        what: String,
        expected: Sha256Digest,
        actual: Sha256Digest,
    },
    #[error("{what}: the content is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what}: invalid JSON")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: Docker schema 1 manifests are not supported")]
    Schema1 { what: String },
    #[error("{what}: unsupported media type {media_type:?}")]
    MediaType { what: String, media_type: String },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("{what}: no {PLATFORM} image in the index (it has: {available})")]
    NoPlatform { what: String, available: String },
    #[error("{what}: a digest")]
    Digest {
        what: String,
        #[source]
        source: DigestError,
    },
    #[error("layer {index} ({digest}) of {image}")]
    Layer {
        image: String,
        index: usize,
        digest: Sha256Digest,
        #[source]
        source: Box<UnpackError>,
    },
}

/// A manifest or index as a source returned it.
#[derive(Debug, Clone)]
pub struct Document {
    /// The media type the transport gave (HTTP Content-Type, the descriptor's `mediaType`).
    pub media_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// The document a reference names, with what it must match when the reference says.
#[derive(Debug, Clone)]
pub struct Root {
    pub document: Document,
    /// The digest the reference pins (a digest reference, a layout descriptor).
    pub digest: Option<Sha256Digest>,
    /// The size a descriptor gives (layouts).
    pub size: Option<u64>,
}

/// What a source (registry, layout directory) provides to [`resolve`] and [`unpack`].
pub trait Fetch {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Names the source and reference in messages.
    fn describe(&self) -> String;
    /// The document the reference names, read up to `max` bytes (more is an error).
    fn root(&mut self, max: usize) -> Result<Root, Self::Error>;
    /// A manifest or index by digest, read up to `max` bytes (more is an error).
    fn manifest(&mut self, digest: &Sha256Digest, max: usize) -> Result<Document, Self::Error>;
    /// A blob's content, as a stream. The caller bounds it by `size` ([`SizedReader`]) and
    /// verifies its digest.
    fn blob(&mut self, digest: &Sha256Digest, size: u64)
    -> Result<Box<dyn Read + '_>, Self::Error>;
}

/// The run-time fields of the image config (`config` in the image-spec config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// One layer to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDesc {
    pub digest: Sha256Digest,
    pub size: u64,
    pub compression: Compression,
    pub diff_id: Sha256Digest,
}

/// A resolved image: what to measure and what to unpack.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The source and reference, for messages.
    pub source: String,
    /// The digest of the document the reference names (an index or a manifest): what a
    /// `@sha256:` reference pins.
    pub digest: Sha256Digest,
    /// The digest of the `linux/amd64` image manifest (equal to `digest` without an index).
    pub manifest_digest: Sha256Digest,
    pub config_digest: Sha256Digest,
    pub config: RunConfig,
    pub layers: Vec<LayerDesc>,
}

/// What [`unpack`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackSummary {
    pub layers: usize,
    /// Regular-file bytes written.
    pub bytes: u64,
    /// Tar entries applied.
    pub entries: u64,
    /// Compressed blob bytes read.
    pub blob_bytes: u64,
    pub ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Index,
    Manifest,
}

/// Resolve the image the source's reference names: see the module doc.
pub fn resolve<F: Fetch>(fetch: &mut F) -> Result<ResolvedImage, ManifestError> {
    let source = fetch.describe();
    let root = fetch.root(MAX_MANIFEST).map_err(|e| ManifestError::Fetch {
        what: format!("{source}: the manifest"),
        source: Box::new(e),
    })?;
    let what = format!("{source}: the manifest");
    let digest = verify(
        &what,
        &root.document.bytes,
        root.digest,
        root.size,
        MAX_MANIFEST,
    )?;

    let mut document = root.document;
    let mut manifest_digest = digest;
    let mut depth = 0;
    loop {
        let what = format!("{source}: {manifest_digest}");
        match classify(&what, document.media_type.as_deref(), &document.bytes)? {
            Kind::Manifest => break,
            Kind::Index => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(invalid(&what, "indexes are nested too deep"));
                }
                let index: ImageIndex = parse_json(&what, &document.bytes)?;
                let chosen = pick_platform(&what, &index)?;
                let next = descriptor_digest(&what, chosen)?;
                let size = chosen.size();
                if size > MAX_MANIFEST as u64 {
                    return Err(ManifestError::TooLarge {
                        what: format!("{source}: manifest {next}"),
                        size,
                        max: MAX_MANIFEST as u64,
                    });
                }
                let child_what = format!("{source}: manifest {next}");
                let mut child =
                    fetch
                        .manifest(&next, MAX_MANIFEST)
                        .map_err(|e| ManifestError::Fetch {
                            what: child_what.clone(),
                            source: Box::new(e),
                        })?;
                verify(
                    &child_what,
                    &child.bytes,
                    Some(next),
                    Some(size),
                    MAX_MANIFEST,
                )?;
                // The index's descriptor says what the child is; the transport's type is a
                // fallback.
                child.media_type = Some(chosen.media_type().to_string());
                document = child;
                manifest_digest = next;
            }
        }
    }

    let what = format!("{source}: manifest {manifest_digest}");
    let manifest: ImageManifest = parse_json(&what, &document.bytes)?;
    if manifest.schema_version() != 2 {
        return Err(invalid(&what, "schemaVersion is not 2"));
    }

    // The config.
    let config_desc = manifest.config();
    let config_type = config_desc.media_type().to_string();
    if config_type != OCI_CONFIG && config_type != DOCKER_CONFIG {
        return Err(ManifestError::MediaType {
            what: format!("{what}: the config"),
            media_type: truncate(&config_type),
        });
    }
    let config_digest = descriptor_digest(&what, config_desc)?;
    let config_what = format!("{source}: config {config_digest}");
    let config_bytes = read_blob(
        fetch,
        &config_what,
        &config_digest,
        config_desc.size(),
        MAX_CONFIG,
    )?;
    verify(
        &config_what,
        &config_bytes,
        Some(config_digest),
        Some(config_desc.size()),
        MAX_CONFIG,
    )?;
    let config: ImageConfiguration = parse_json(&config_what, &config_bytes)?;
    if *config.os() != Os::Linux || *config.architecture() != Arch::Amd64 {
        return Err(invalid(
            &config_what,
            &format!(
                "the image is for {}/{}, not {PLATFORM}",
                truncate(&config.os().to_string()),
                truncate(&config.architecture().to_string())
            ),
        ));
    }
    let rootfs = config.rootfs();
    if rootfs.typ() != "layers" {
        return Err(invalid(
            &config_what,
            &format!(
                "rootfs.type is {:?}, not \"layers\"",
                truncate(rootfs.typ())
            ),
        ));
    }
    let layers = manifest.layers();
    if layers.len() > MAX_LAYERS {
        return Err(invalid(
            &what,
            &format!("{} layers is over the limit of {MAX_LAYERS}", layers.len()),
        ));
    }
    if rootfs.diff_ids().len() != layers.len() {
        return Err(invalid(
            &config_what,
            &format!(
                "{} diff_ids for the manifest's {} layers",
                rootfs.diff_ids().len(),
                layers.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(layers.len());
    for (i, (layer, diff_id)) in layers.iter().zip(rootfs.diff_ids()).enumerate() {
        let layer_what = format!("{what}: layer {i}");
        let compression =
            Compression::from_media_type(layer.media_type().as_ref()).map_err(|_| {
                ManifestError::MediaType {
                    what: layer_what.clone(),
                    media_type: truncate(layer.media_type().as_ref()),
                }
            })?;
        out.push(LayerDesc {
            digest: descriptor_digest(&layer_what, layer)?,
            size: layer.size(),
            compression,
            diff_id: Sha256Digest::parse(diff_id).map_err(|source| ManifestError::Digest {
                what: format!("{config_what}: diff_id {i}"),
                source,
            })?,
        });
    }

    let run = config.config().as_ref();
    let config = RunConfig {
        entrypoint: run.and_then(|c| c.entrypoint().clone()),
        cmd: run.and_then(|c| c.cmd().clone()),
        env: run.and_then(|c| c.env().clone()).unwrap_or_default(),
        working_dir: run.and_then(|c| c.working_dir().clone()),
        user: run.and_then(|c| c.user().clone()),
        labels: run
            .and_then(|c| c.labels().clone())
            .unwrap_or_default()
            .into_iter()
            .collect(),
    };
    Ok(ResolvedImage {
        source,
        digest,
        manifest_digest,
        config_digest,
        config,
        layers: out,
    })
}

/// Stream every layer of `image`, in order, into [`unpack::apply_layer`] on `root`.
pub fn unpack<F: Fetch>(
    fetch: &mut F,
    image: &ResolvedImage,
    root: &Path,
    limits: &Limits,
) -> Result<UnpackSummary, ManifestError> {
    let started = Instant::now();
    let mut usage = Usage::default();
    let mut blob_bytes = 0u64;
    for (index, layer) in image.layers.iter().enumerate() {
        let what = format!("{}: layer {index} ({})", image.source, layer.digest);
        let blob = fetch
            .blob(&layer.digest, layer.size)
            .map_err(|e| ManifestError::Fetch {
                what: what.clone(),
                source: Box::new(e),
            })?;
        let reader = SizedReader::new(blob, layer.size);
        let report = unpack::apply_layer(
            root,
            reader,
            layer.compression,
            &layer.digest.to_string(),
            &layer.diff_id.to_string(),
            limits,
            &mut usage,
        )
        .map_err(|source| ManifestError::Layer {
            image: image.source.clone(),
            index,
            digest: layer.digest,
            source: Box::new(source),
        })?;
        if report.blob_size != layer.size {
            return Err(ManifestError::SizeMismatch {
                what,
                expected: layer.size,
                actual: report.blob_size,
            });
        }
        blob_bytes = blob_bytes.saturating_add(report.blob_size);
    }
    Ok(UnpackSummary {
        layers: image.layers.len(),
        bytes: usage.bytes,
        entries: usage.entries,
        blob_bytes,
        ms: started.elapsed().as_millis().try_into().unwrap_or(u64::MAX),
    })
}

/// A reader that yields exactly `size` bytes of `inner`: a longer stream is an error (at the
/// first byte past `size`) and so is a shorter one.
pub struct SizedReader<R> {
    inner: R,
    size: u64,
    read: u64,
}

impl<R: Read> SizedReader<R> {
    pub fn new(inner: R, size: u64) -> Self {
        SizedReader {
            inner,
            size,
            read: 0,
        }
    }
}

impl<R: Read> Read for SizedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let left = self.size - self.read;
        if left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the blob is longer than its descriptor's {} bytes",
                        self.size
                    ),
                )),
            };
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the blob ended after {} of its descriptor's {} bytes",
                    self.read, self.size
                ),
            ));
        }
        self.read += n.min(want) as u64;
        Ok(n.min(want))
    }
}

fn read_blob<F: Fetch>(
    fetch: &mut F,
    what: &str,
    digest: &Sha256Digest,
    size: u64,
    max: usize,
) -> Result<Vec<u8>, ManifestError> {
    if size > max as u64 {
        return Err(ManifestError::TooLarge {
            what: what.to_string(),
            size,
            max: max as u64,
        });
    }
    let blob = fetch.blob(digest, size).map_err(|e| ManifestError::Fetch {
        what: what.to_string(),
        source: Box::new(e),
    })?;
    let mut bytes = Vec::new();
    SizedReader::new(blob, size)
        .read_to_end(&mut bytes)
        .map_err(|source| ManifestError::Read {
            what: what.to_string(),
            source,
        })?;
    Ok(bytes)
}

/// Check size bounds, the descriptor size and the digest of a fetched document; its digest.
fn verify(
    what: &str,
    bytes: &[u8],
    digest: Option<Sha256Digest>,
    size: Option<u64>,
    max: usize,
) -> Result<Sha256Digest, ManifestError> {
    if bytes.len() > max {
        return Err(ManifestError::TooLarge {
            what: what.to_string(),
            size: bytes.len() as u64,
            max: max as u64,
        });
    }
    if let Some(size) = size
        && size != bytes.len() as u64
    {
        return Err(ManifestError::SizeMismatch {
            what: what.to_string(),
            expected: size,
            actual: bytes.len() as u64,
        });
    }
    let actual = Sha256Digest(Sha256::digest(bytes).into());
    if let Some(expected) = digest
        && expected != actual
    {
        return Err(ManifestError::DigestMismatch {
            what: what.to_string(),
            expected,
            actual,
        });
    }
    Ok(actual)
}

fn kind_of(what: &str, media_type: &str) -> Result<Option<Kind>, ManifestError> {
    // Content-Type may carry parameters.
    let media_type = media_type.split(';').next().unwrap_or_default().trim();
    match media_type {
        OCI_INDEX | DOCKER_LIST => Ok(Some(Kind::Index)),
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(Some(Kind::Manifest)),
        DOCKER_V1 | DOCKER_V1_SIGNED => Err(ManifestError::Schema1 {
            what: what.to_string(),
        }),
        _ => Ok(None),
    }
}

/// Index or manifest, from the document's own `mediaType` (which must agree with the
/// transport's), else the transport's type, else the document's shape.
fn classify(what: &str, transport: Option<&str>, bytes: &[u8]) -> Result<Kind, ManifestError> {
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u64>,
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
        layers: Option<serde::de::IgnoredAny>,
        #[serde(rename = "fsLayers")]
        fs_layers: Option<serde::de::IgnoredAny>,
    }
    let peek: Peek = parse_json(what, bytes)?;
    if peek.schema_version == Some(1) || peek.fs_layers.is_some() {
        return Err(ManifestError::Schema1 {
            what: what.to_string(),
        });
    }
    if peek.schema_version != Some(2) {
        return Err(invalid(what, "schemaVersion is not 2"));
    }
    let from_transport = match transport {
        Some(t) => kind_of(what, t)?,
        None => None,
    };
    let from_document = match &peek.media_type {
        Some(t) => Some(kind_of(what, t)?.ok_or_else(|| ManifestError::MediaType {
            what: what.to_string(),
            media_type: truncate(t),
        })?),
        None => None,
    };
    match (from_document, from_transport) {
        (Some(d), Some(t)) if d != t => Err(invalid(
            what,
            &format!(
                "the document's mediaType {:?} contradicts {:?}",
                truncate(peek.media_type.as_deref().unwrap_or_default()),
                truncate(transport.unwrap_or_default())
            ),
        )),
        (Some(k), _) | (None, Some(k)) => Ok(k),
        (None, None) => match (peek.manifests.is_some(), peek.layers.is_some()) {
            (true, false) => Ok(Kind::Index),
            (false, true) => Ok(Kind::Manifest),
            _ => match transport {
                Some(t) => Err(ManifestError::MediaType {
                    what: what.to_string(),
                    media_type: truncate(t),
                }),
                None => Err(invalid(what, "neither an index nor a manifest")),
            },
        },
    }
}

/// The first `linux/amd64` manifest of an index (variant ignored).
fn pick_platform<'a>(what: &str, index: &'a ImageIndex) -> Result<&'a Descriptor, ManifestError> {
    let manifests = index.manifests();
    let is_document = |d: &Descriptor| {
        matches!(
            d.media_type().to_string().as_str(),
            OCI_INDEX | DOCKER_LIST | OCI_MANIFEST | DOCKER_MANIFEST
        )
    };
    if let Some(d) = manifests.iter().find(|d| {
        is_document(d)
            && d.platform()
                .as_ref()
                .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64)
    }) {
        return Ok(d);
    }
    // A single entry without a platform (common in layouts): its config is checked later.
    let documents: Vec<&Descriptor> = manifests.iter().filter(|d| is_document(d)).collect();
    if let [only] = documents.as_slice()
        && only.platform().is_none()
    {
        return Ok(only);
    }
    let mut available: Vec<String> = manifests
        .iter()
        .take(32)
        .map(|d| match d.platform() {
            Some(p) => {
                let mut s = format!("{}/{}", p.os(), p.architecture());
                if let Some(v) = p.variant() {
                    s.push('/');
                    s.push_str(v);
                }
                truncate(&s)
            }
            None => "no platform".to_string(),
        })
        .collect();
    if manifests.len() > 32 {
        available.push(format!("{} more", manifests.len() - 32));
    }
    if available.is_empty() {
        available.push("nothing".into());
    }
    Err(ManifestError::NoPlatform {
        what: what.to_string(),
        available: format!("{:?}", available),
    })
}

fn descriptor_digest(what: &str, d: &Descriptor) -> Result<Sha256Digest, ManifestError> {
    Sha256Digest::parse(d.digest().as_ref()).map_err(|source| ManifestError::Digest {
        what: what.to_string(),
        source,
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
) -> Result<T, ManifestError> {
    serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
        what: what.to_string(),
        source,
    })
}

fn invalid(what: &str, reason: &str) -> ManifestError {
    ManifestError::Invalid {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    pub(crate) fn sha(bytes: &[u8]) -> Sha256Digest {
        Sha256Digest(Sha256::digest(bytes).into())
    }

    /// An in-memory source: blobs by digest, a root document.
    #[derive(Default)]
    pub(crate) struct Mem {
        pub root: Option<(Option<String>, Vec<u8>)>,
        pub pin: Option<Sha256Digest>,
        pub blobs: HashMap<String, Vec<u8>>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("not found: {0}")]
    pub(crate) struct NotFound(String);

    impl Mem {
        pub fn add(&mut self, bytes: &[u8]) -> Sha256Digest {
            let d = sha(bytes);
            self.blobs.insert(d.to_string(), bytes.to_vec());
            d
        }
    }

    impl Fetch for Mem {
        type Error = NotFound;
        fn describe(&self) -> String {
            "mem".into()
        }
        fn root(&mut self, _max: usize) -> Result<Root, NotFound> {
            let (media_type, bytes) = self.root.clone().ok_or(NotFound("root".into()))?;
            Ok(Root {
                document: Document { media_type, bytes },
                digest: self.pin,
                size: None,
            })
        }
        fn manifest(&mut self, d: &Sha256Digest, _max: usize) -> Result<Document, NotFound> {
            let bytes = self
                .blobs
                .get(&d.to_string())
                .ok_or(NotFound(d.to_string()))?;
            Ok(Document {
                media_type: None,
                bytes: bytes.clone(),
            })
        }
        fn blob(&mut self, d: &Sha256Digest, _size: u64) -> Result<Box<dyn Read + '_>, NotFound> {
            let bytes = self
                .blobs
                .get(&d.to_string())
                .ok_or(NotFound(d.to_string()))?;
            Ok(Box::new(&bytes[..]))
        }
    }

    fn tar_with(name: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
        b.into_inner().unwrap()
    }

    fn config_json(arch: &str, diff_ids: &[Sha256Digest]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/bin/sh", "-c", "true"], "Env": ["A=1"], "WorkingDir": "/w",
                       "User": "1000", "Labels": {"k": "v"}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
        }))
        .unwrap()
    }

    fn manifest_json(
        media_type: &str,
        config: (&str, Sha256Digest, usize),
        layers: &[(Sha256Digest, usize)],
    ) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media_type,
            "config": {"mediaType": config.0, "digest": config.1.to_string(), "size": config.2},
            "layers": layers.iter().map(|(d, s)| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": s}))
                .collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    /// A one-layer image in `mem`; returns the manifest bytes.
    fn image(mem: &mut Mem, arch: &str, manifest_type: &str) -> Vec<u8> {
        let layer = tar_with("hello.txt", b"hi\n");
        let ld = mem.add(&layer);
        let config = config_json(arch, &[ld]);
        let cd = mem.add(&config);
        let ct = if manifest_type == DOCKER_MANIFEST {
            DOCKER_CONFIG
        } else {
            OCI_CONFIG
        };
        manifest_json(manifest_type, (ct, cd, config.len()), &[(ld, layer.len())])
    }

    fn index_json(media_type: &str, entries: &[(&str, Sha256Digest, usize, &str)]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media_type,
            "manifests": entries.iter().map(|(mt, d, s, arch)| serde_json::json!({
                "mediaType": mt, "digest": d.to_string(), "size": s,
                "platform": {"os": "linux", "architecture": arch}})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn resolves_and_unpacks_a_manifest() {
        for mt in [OCI_MANIFEST, DOCKER_MANIFEST] {
            let mut mem = Mem::default();
            let m = image(&mut mem, "amd64", mt);
            let md = sha(&m);
            mem.root = Some((Some(mt.into()), m));
            mem.pin = Some(md);
            let img = resolve(&mut mem).unwrap();
            assert_eq!(img.digest, md);
            assert_eq!(img.manifest_digest, md);
            assert_eq!(img.layers.len(), 1);
            assert_eq!(img.config.cmd.as_deref().unwrap()[0], "/bin/sh");
            assert_eq!(img.config.env, ["A=1"]);
            assert_eq!(img.config.working_dir.as_deref(), Some("/w"));
            assert_eq!(img.config.labels.get("k").map(|s| s.as_str()), Some("v"));
            let dir = tempfile::tempdir().unwrap();
            let s = unpack(&mut mem, &img, dir.path(), &Limits::default()).unwrap();
            assert_eq!((s.layers, s.bytes), (1, 3));
            assert_eq!(
                std::fs::read(dir.path().join("hello.txt")).unwrap(),
                b"hi\n"
            );
        }
    }

    #[test]
    fn picks_amd64_from_an_index_and_refuses_without() {
        for it in [OCI_INDEX, DOCKER_LIST] {
            let mut mem = Mem::default();
            let arm = image(&mut mem, "arm64", OCI_MANIFEST);
            let amd = image(&mut mem, "amd64", OCI_MANIFEST);
            let (ad, ald) = (mem.add(&arm), arm.len());
            let (md, mdl) = (mem.add(&amd), amd.len());
            let idx = index_json(
                it,
                &[
                    (OCI_MANIFEST, ad, ald, "arm64"),
                    (OCI_MANIFEST, md, mdl, "amd64"),
                ],
            );
            mem.root = Some((None, idx.clone()));
            let img = resolve(&mut mem).unwrap();
            assert_eq!(img.digest, sha(&idx));
            assert_eq!(img.manifest_digest, md);

            let idx = index_json(it, &[(OCI_MANIFEST, ad, ald, "arm64")]);
            mem.root = Some((None, idx));
            let e = resolve(&mut mem).unwrap_err().to_string();
            assert!(
                e.contains("no linux/amd64") && e.contains("linux/arm64"),
                "{e}"
            );

            // A descriptor whose size lies.
            let idx = index_json(it, &[(OCI_MANIFEST, md, mdl + 1, "amd64")]);
            mem.root = Some((None, idx));
            let e = resolve(&mut mem).unwrap_err();
            assert!(matches!(e, ManifestError::SizeMismatch { .. }), "{e}");
        }
    }

    #[test]
    fn a_single_manifest_for_another_platform_is_refused() {
        let mut mem = Mem::default();
        let m = image(&mut mem, "arm64", OCI_MANIFEST);
        mem.root = Some((None, m));
        let e = resolve(&mut mem).unwrap_err().to_string();
        assert!(e.contains("linux/arm64, not linux/amd64"), "{e}");
    }

    #[test]
    fn pinned_digest_mismatch_names_both() {
        let mut mem = Mem::default();
        let m = image(&mut mem, "amd64", OCI_MANIFEST);
        let wrong = sha(b"other");
        mem.root = Some((None, m.clone()));
        mem.pin = Some(wrong);
        let e = resolve(&mut mem).unwrap_err().to_string();
        assert!(
            e.contains(&wrong.to_string()) && e.contains(&sha(&m).to_string()),
            "{e}"
        );
    }

    #[test]
    fn tampered_config_and_layer_are_refused() {
        let mut mem = Mem::default();
        let m = image(&mut mem, "amd64", OCI_MANIFEST);
        mem.root = Some((None, m));
        let img = resolve(&mut mem).unwrap();
        // Flip a byte of the layer: same size, different digest.
        let key = img.layers[0].digest.to_string();
        mem.blobs.get_mut(&key).unwrap()[600] ^= 1;
        let dir = tempfile::tempdir().unwrap();
        let e = unpack(&mut mem, &img, dir.path(), &Limits::default()).unwrap_err();
        assert!(matches!(e, ManifestError::Layer { index: 0, .. }), "{e}");
        // A longer layer.
        mem.blobs.get_mut(&key).unwrap()[600] ^= 1;
        mem.blobs.get_mut(&key).unwrap().push(0);
        let dir = tempfile::tempdir().unwrap();
        let e = unpack(&mut mem, &img, dir.path(), &Limits::default()).unwrap_err();
        let mut chain = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            chain.push_str(&format!(": {s}"));
            source = s.source();
        }
        assert!(chain.contains("longer than its descriptor"), "{chain}");
        // The config.
        let key = img.config_digest.to_string();
        mem.blobs.get_mut(&key).unwrap()[0] = b' ';
        let e = resolve(&mut mem).unwrap_err();
        assert!(matches!(e, ManifestError::DigestMismatch { .. }), "{e}");
    }

    #[test]
    fn refuses_hostile_documents() {
        let d = sha(b"x");
        let cases: Vec<(Option<&str>, Vec<u8>, &str)> = vec![
            (None, b"".to_vec(), "invalid JSON"),
            (None, b"[]".to_vec(), "invalid JSON"),
            (None, b"{\"schemaVersion\":1,\"fsLayers\":[]}".to_vec(), "schema 1"),
            (Some(DOCKER_V1_SIGNED), b"{\"schemaVersion\":2}".to_vec(), "schema 1"),
            (None, b"{\"schemaVersion\":3,\"layers\":[]}".to_vec(), "schemaVersion"),
            (None, b"{\"schemaVersion\":2}".to_vec(), "neither"),
            (None, b"{\"schemaVersion\":2,\"mediaType\":\"text/evil\"}".to_vec(), "unsupported media type"),
            (Some(OCI_INDEX), format!("{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\"}}").into_bytes(), "contradicts"),
            (None, "{\"schemaVersion\":2,\"manifests\":[]}".into(), "nothing"),
            (None, format!("{{\"schemaVersion\":2,\"manifests\":[{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"sha512:{}\",\"size\":1}}]}}", "a".repeat(128)).into_bytes(), "digest"),
            (None, manifest_json(OCI_MANIFEST, ("text/plain", d, 1), &[]), "unsupported media type"),
            (None, "[".repeat(10000).into_bytes(), "invalid JSON"),
        ];
        for (mt, bytes, want) in cases {
            let mut mem = Mem {
                root: Some((mt.map(String::from), bytes.clone())),
                ..Default::default()
            };
            let e = resolve(&mut mem).unwrap_err();
            let chain = format!(
                "{e}: {}",
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            );
            assert!(
                chain.contains(want),
                "{:?}: {chain}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
            );
        }
        // Over the size bound.
        let mut mem = Mem {
            root: Some((None, vec![b' '; MAX_MANIFEST + 1])),
            ..Default::default()
        };
        assert!(matches!(
            resolve(&mut mem).unwrap_err(),
            ManifestError::TooLarge { .. }
        ));
    }

    #[test]
    fn diff_ids_must_match_layers_and_rootfs_type() {
        let mut mem = Mem::default();
        let layer = tar_with("a", b"a");
        let ld = mem.add(&layer);
        let config = config_json("amd64", &[ld, ld]);
        let cd = mem.add(&config);
        let m = manifest_json(
            OCI_MANIFEST,
            (OCI_CONFIG, cd, config.len()),
            &[(ld, layer.len())],
        );
        mem.root = Some((None, m));
        assert!(
            resolve(&mut mem)
                .unwrap_err()
                .to_string()
                .contains("2 diff_ids for the manifest's 1 layers")
        );

        let config = String::from_utf8(config_json("amd64", &[ld]))
            .unwrap()
            .replace("\"layers\"", "\"other\"");
        let cd = mem.add(config.as_bytes());
        let m = manifest_json(
            OCI_MANIFEST,
            (OCI_CONFIG, cd, config.len()),
            &[(ld, layer.len())],
        );
        mem.root = Some((None, m));
        assert!(
            resolve(&mut mem)
                .unwrap_err()
                .to_string()
                .contains("rootfs.type")
        );
    }

    #[test]
    fn sized_reader_bounds() {
        let mut out = Vec::new();
        SizedReader::new(&b"abc"[..], 3)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"abc");
        let e = SizedReader::new(&b"abcd"[..], 3)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("longer"), "{e}");
        let e = SizedReader::new(&b"ab"[..], 3)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("after 2 of"), "{e}");
        SizedReader::new(&b""[..], 0)
            .read_to_end(&mut Vec::new())
            .unwrap();
    }

    #[test]
    fn never_panics_on_arbitrary_documents() {
        use proptest::prelude::*;
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..512), mt in proptest::option::of("[a-z./+;=-]{0,60}"))| {
            let mut mem = Mem {
                root: Some((mt, bytes)),
                ..Default::default()
            };
            let _ = resolve(&mut mem);
        });
    }
}
