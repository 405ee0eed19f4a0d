//! Getting the workload's image onto the VM: a fresh root directory (on the encrypted state
//! volume when there is one, so a large image does not live in RAM; otherwise a tmpfs), then
//! the image from its source — an OCI layout in the verified root or a registry — resolved to
//! `linux/amd64`, every document and layer checked against its digest, and unpacked.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

use crate::initdata::launch;
use crate::oci::layout::{Layout, LayoutError};
use crate::oci::manifest::{self, ManifestError, ResolvedImage, UnpackSummary};
use crate::oci::reference::ImageRef;
use crate::oci::unpack::Limits;
use crate::registry::{self, AuthFileError, Registry, RegistryError, RegistryOptions};

/// The unpacked root when there is no state volume.
pub const TMPFS_ROOT: &str = "/run/cvm-agent/rootfs";
/// The unpacked root inside the state volume (next to the agent's other bookkeeping).
const STATE_ROOT: &str = ".cvm-agent/rootfs";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot prepare the image root {path}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount a tmpfs for the image root on {TMPFS_ROOT}")]
    Tmpfs(#[source] nix::Error),
    #[error("image {image}")]
    Layout {
        image: String,
        #[source]
        source: LayoutError,
    },
    #[error("image {image}")]
    Registry {
        image: String,
        #[source]
        source: RegistryError,
    },
    #[error("the registry-auth secret")]
    Auth(#[source] AuthFileError),
    #[error(transparent)]
    Resolve(#[from] ManifestError),
}

/// A fresh, empty directory for the image. Whatever an earlier boot unpacked on the state
/// volume is removed first: every boot unpacks the image it measured, never trusting old files.
pub fn prepare_root(state_dir: Option<&Path>) -> Result<PathBuf, ImageError> {
    let root = match state_dir {
        Some(dir) => {
            let root = dir.join(STATE_ROOT);
            match std::fs::remove_dir_all(&root) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(ImageError::Root { path: root, source }),
            }
            root
        }
        None => PathBuf::from(TMPFS_ROOT),
    };
    std::fs::create_dir_all(&root).map_err(|source| ImageError::Root {
        path: root.clone(),
        source,
    })?;
    if state_dir.is_none() {
        mount(
            Some("tmpfs"),
            &root,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        )
        .map_err(ImageError::Tmpfs)?;
    }
    Ok(root)
}

/// Where the image came from and what was unpacked.
#[derive(Debug)]
pub struct Pulled {
    pub image: ResolvedImage,
    pub summary: UnpackSummary,
    /// HTTP requests answered (registry sources only).
    pub round_trips: Option<u32>,
}

/// How to reach a registry image's registry.
pub struct Transport<'a> {
    pub settings: &'a launch::Registry,
    pub dns: &'a [Ipv4Addr],
    /// The `registry-auth` secret: a containers-auth.json document.
    pub auth_json: Option<&'a [u8]>,
}

/// Resolves `reference` and unpacks it onto `root`.
pub fn pull(
    reference: &ImageRef,
    transport: &Transport,
    root: &Path,
    limits: &Limits,
) -> Result<Pulled, ImageError> {
    match reference {
        ImageRef::Layout(layout) => {
            let mut source = Layout::open(layout).map_err(|source| ImageError::Layout {
                image: reference.to_string(),
                source,
            })?;
            let (image, summary) = resolve_and_unpack(&mut source, root, limits)?;
            Ok(Pulled {
                image,
                summary,
                round_trips: None,
            })
        }
        ImageRef::Registry(r) => {
            let credentials = transport
                .auth_json
                .map(|doc| registry::parse_auth_json(doc, &r.registry))
                .transpose()
                .map_err(ImageError::Auth)?
                .flatten();
            let options = RegistryOptions {
                cert_pem: transport.settings.cert.clone(),
                pin: transport.settings.pin,
                insecure_http: transport.settings.insecure_http,
                deadline: transport.settings.timeout,
                dns: transport.dns.to_vec(),
                credentials,
            };
            let mut source = Registry::new(r, options).map_err(|source| ImageError::Registry {
                image: reference.to_string(),
                source,
            })?;
            let (image, summary) = resolve_and_unpack(&mut source, root, limits)?;
            Ok(Pulled {
                image,
                summary,
                round_trips: Some(source.round_trips),
            })
        }
    }
}

fn resolve_and_unpack<F: manifest::Fetch>(
    source: &mut F,
    root: &Path,
    limits: &Limits,
) -> Result<(ResolvedImage, UnpackSummary), ImageError> {
    let image = manifest::resolve(source)?;
    let summary = manifest::unpack(source, &image, root, limits)?;
    Ok((image, summary))
}
