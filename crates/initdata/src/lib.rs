//! Init-data: the launch configuration, in the Confidential Containers init-data format.
//!
//! An init-data document is TOML:
//!
//! ```toml
//! version = "0.1.0"
//! algorithm = "sha256"        # or "sha384", "sha512"
//!
//! [data]
//! "launch.toml" = '''
//! [kbs]
//! url = "https://kbs.example:8080"
//! '''
//! "policy.rego" = '''...'''   # other documents are kept, not interpreted
//! ```
//!
//! The host chooses it and can read it, so it is integrity-protected, never confidential: it
//! must hold no secret. It is trusted only through its digest, which is bound to the TEE
//! evidence. The rules below are the ones the Confidential Containers stack uses, checked in
//! its sources, so a stock Trustee KBS accepts what the agent binds:
//!
//! - **Digest.** The hash named by `algorithm` over the raw bytes exactly as delivered (Trustee
//!   `Initdata::parse_and_get_digest`: `algorithm.digest(toml.as_bytes())`; kata-containers'
//!   `calculate_initdata_digest` does the same). The RFC 8785 canonicalisation that Trustee's
//!   `initdata.md` describes is not what either implementation does, so it is not done here.
//! - **SNP `HOST_DATA` (32 bytes) and TDX `MRCONFIGID` (48 bytes).** The digest truncated to the
//!   field, or zero-padded up to it (Trustee verifiers' `regularize_data`, kata's
//!   `adjust_digest`): sha256 fills HOST_DATA exactly and is padded with 16 zero bytes for
//!   MRCONFIGID; sha384 is truncated to 32 bytes for HOST_DATA; sha512 is truncated for both.
//! - **vTPM, PCR 8.** The guest extends PCR 8 of the SHA-256 bank once with the init-data
//!   digest, and Trustee's `tpm` verifier checks `PCR8 == SHA256(0x00*32 ‖ digest)` where
//!   `digest` is the init-data digest *with its own algorithm*. Both sides require it to be 32
//!   bytes (the verifier copies it into a 32-byte buffer; guest-components' TPM attester
//!   refuses any other length), so a vTPM binding only works with `algorithm = "sha256"`;
//!   [`InitData::check_tpm_binding`] says so before anything is extended. [`InitData::pcr8_expected`]
//!   is `SHA256(0x00*32 ‖ SHA256(raw))`, which is Trustee's value exactly when the algorithm is
//!   sha256.
//!
//! Parsing is strict: the size is bounded, unknown top-level keys, another version or
//! algorithm, non-string documents and odd document names are errors, never ignored.
#![forbid(unsafe_code)]

pub mod cloud;
pub mod launch;
pub mod mode;
pub mod policy;

#[cfg(test)]
mod tests;

pub use launch::{
    Kbs, LaunchConfig, Network, NetworkMode, ResourceUri, RestartPolicy, Secret, SecretTarget,
    SecretUse, State, StateDevice, Workload,
};
pub use mode::{InitDataSource, Mode};

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256, Sha384, Sha512};

use cvm_text::hex;

/// Far above any real launch configuration (Trustee's examples with a full agent policy are
/// ~10 KiB), small enough that a hostile host cannot make the agent allocate much.
pub const MAX_INITDATA_LEN: usize = 256 * 1024;
/// Documents in `[data]`.
pub const MAX_DOCUMENTS: usize = 64;
const MAX_DOCUMENT_NAME_LEN: usize = 128;
/// The only init-data version there is.
pub const INITDATA_VERSION: &str = "0.1.0";
/// cvm-agent's own document in `[data]`.
pub const LAUNCH_DOCUMENT: &str = "launch.toml";
/// The PCR the CoCo stack binds init-data to on a vTPM.
pub const INITDATA_PCR: u32 = 8;
/// QEMU `-fw_cfg name=opt/cvm/initdata,file=...`, relative to the root.
pub const FW_CFG_PATH: &str = "sys/firmware/qemu_fw_cfg/by_name/opt/cvm/initdata/raw";
/// Init-data baked into the (verity-protected) image, relative to the root.
pub const IMAGE_PATH: &str = "etc/cvm-agent/initdata.toml";
/// SNP `HOST_DATA`.
pub const HOST_DATA_LEN: usize = 32;
/// TDX `MRCONFIGID`.
pub const MRCONFIGID_LEN: usize = 48;

#[derive(Debug, thiserror::Error)]
pub enum InitDataError {
    #[error("init-data is larger than {MAX_INITDATA_LEN} bytes")]
    TooLarge,
    #[error("init-data is empty")]
    Empty,
    #[error("init-data is not UTF-8 text")]
    NotUtf8,
    #[error("init-data is not valid: {0}")]
    Syntax(String),
    #[error("init-data version {0:?} is not supported (expected \"0.1.0\")")]
    Version(String),
    #[error("init-data algorithm {0:?} is not supported (expected sha256, sha384 or sha512)")]
    Algorithm(String),
    #[error("init-data has {0} documents (limit {MAX_DOCUMENTS})")]
    TooManyDocuments(usize),
    #[error("init-data document name {0:?} is invalid (1-128 of A-Z a-z 0-9 . _ -)")]
    DocumentName(String),
    #[error("launch.toml: {0}")]
    Launch(String),
    #[error(
        "init-data algorithm is {0}, but a vTPM binds init-data as one SHA-256 digest in PCR 8 \
         (Trustee's tpm verifier): use algorithm = \"sha256\""
    )]
    TpmNeedsSha256(&'static str),
    #[error("reading init-data from {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("init-data source {0} is not a regular file")]
    NotAFile(PathBuf),
    #[error("init-data source file:{0} must be an absolute path without ..")]
    BadPath(String),
    #[error("init-data source {0} is not supported yet")]
    Unsupported(&'static str),
    #[error(
        "init-data source {0} is a cloud metadata service: the agent fetches it over the network"
    )]
    Remote(&'static str),
    #[error("init-data from the {cloud} metadata service is {len} bytes (limit {max})")]
    CloudTooLarge {
        cloud: &'static str,
        len: usize,
        max: usize,
    },
    #[error("init-data from the {cloud} metadata service: {why}")]
    CloudEncoding { cloud: &'static str, why: String },
    #[error("the SMBIOS system vendor (/sys/class/dmi/id/sys_vendor) is {0}")]
    Vendor(String),
}

/// The hash named by `algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Exactly the names the CoCo tooling writes and accepts (kata `SUPPORTED_ALGORITHMS`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha384" => Some(Algorithm::Sha384),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Algorithm::Sha256 => Sha256::digest(data).to_vec(),
            Algorithm::Sha384 => Sha384::digest(data).to_vec(),
            Algorithm::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed init-data document, with the raw bytes its digest is taken over.
#[derive(Clone, PartialEq, Eq)]
pub struct InitData {
    raw: Vec<u8>,
    algorithm: Algorithm,
    data: BTreeMap<String, String>,
}

/// The document as TOML has it; `deny_unknown_fields` makes an unknown top-level key an error
/// instead of a silently ignored (but measured) surprise.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    version: String,
    algorithm: String,
    data: BTreeMap<String, String>,
}

impl InitData {
    /// Parses and validates init-data. The bytes are kept as given: they are what is measured.
    pub fn parse(raw: &[u8]) -> Result<InitData, InitDataError> {
        if raw.len() > MAX_INITDATA_LEN {
            return Err(InitDataError::TooLarge);
        }
        if raw.is_empty() {
            return Err(InitDataError::Empty);
        }
        let text = std::str::from_utf8(raw).map_err(|_| InitDataError::NotUtf8)?;
        let wire: Wire =
            toml::from_str(text).map_err(|e| InitDataError::Syntax(toml_error(text, &e)))?;
        if wire.version != INITDATA_VERSION {
            return Err(InitDataError::Version(shown(&wire.version)));
        }
        let algorithm = Algorithm::from_name(&wire.algorithm)
            .ok_or_else(|| InitDataError::Algorithm(shown(&wire.algorithm)))?;
        if wire.data.len() > MAX_DOCUMENTS {
            return Err(InitDataError::TooManyDocuments(wire.data.len()));
        }
        if let Some(name) = wire.data.keys().find(|name| !valid_document_name(name)) {
            return Err(InitDataError::DocumentName(shown(name)));
        }
        Ok(InitData {
            raw: raw.to_vec(),
            algorithm,
            data: wire.data,
        })
    }

    /// The bytes as delivered (what every digest below is taken over).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// All `[data]` documents by name, including the ones cvm-agent does not interpret.
    pub fn documents(&self) -> &BTreeMap<String, String> {
        &self.data
    }

    pub fn document(&self, name: &str) -> Option<&str> {
        self.data.get(name).map(String::as_str)
    }

    /// The init-data digest: `algorithm` over the raw bytes.
    pub fn digest(&self) -> Vec<u8> {
        self.algorithm.digest(&self.raw)
    }

    /// SHA-256 of the raw bytes: what is extended into PCR 8 of the SHA-256 bank.
    pub fn sha256_of_raw(&self) -> [u8; 32] {
        Sha256::digest(&self.raw).into()
    }

    /// PCR 8 (SHA-256 bank) after its single extend from zero:
    /// `SHA256(0x00*32 ‖ SHA256(raw))`. Trustee's `tpm` verifier expects
    /// `SHA256(0x00*32 ‖ digest())`, the same value when the algorithm is sha256 (see
    /// [`InitData::check_tpm_binding`]).
    pub fn pcr8_expected(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update([0u8; 32]);
        hasher.update(self.sha256_of_raw());
        hasher.finalize().into()
    }

    /// A vTPM binding is only verifiable by Trustee when the init-data digest is the SHA-256
    /// one that PCR 8 holds; with sha384/sha512 no stock verifier can match it, so say so
    /// before extending anything.
    pub fn check_tpm_binding(&self) -> Result<(), InitDataError> {
        match self.algorithm {
            Algorithm::Sha256 => Ok(()),
            other => Err(InitDataError::TpmNeedsSha256(other.name())),
        }
    }

    /// SNP `HOST_DATA` as the host must set it.
    pub fn host_data(&self) -> [u8; HOST_DATA_LEN] {
        regularize(&self.digest())
    }

    /// TDX `MRCONFIGID` as the host must set it.
    pub fn mrconfigid(&self) -> [u8; MRCONFIGID_LEN] {
        regularize(&self.digest())
    }

    /// cvm-agent's own configuration, `[data]."launch.toml"`, if present.
    pub fn launch(&self) -> Result<Option<LaunchConfig>, InitDataError> {
        self.document(LAUNCH_DOCUMENT)
            .map(LaunchConfig::parse)
            .transpose()
    }
}

impl fmt::Debug for InitData {
    // The raw document can be 256 KiB; its digest and document names identify it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitData")
            .field("algorithm", &self.algorithm)
            .field("digest", &hex::encode(&self.digest()))
            .field("documents", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Truncate or zero-pad to the TEE field, as Trustee's `regularize_data` does.
fn regularize<const N: usize>(digest: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = digest.len().min(N);
    out[..n].copy_from_slice(&digest[..n]);
    out
}

/// Document names become file names for the tools that read them (`aa.toml`, `policy.rego`),
/// so only a plain, portable file name is accepted.
fn valid_document_name(name: &str) -> bool {
    launch::valid_name(name, MAX_DOCUMENT_NAME_LEN)
}

/// How much of a host-supplied value an error repeats.
const SHOWN: usize = 128;

/// A host-supplied value cut to a length an error line can carry (the caller escapes it).
fn shown(value: &str) -> String {
    value.chars().take(SHOWN).collect()
}

/// A TOML error as one line with its position: the console shows one line per failure, and
/// the `toml` crate's own rendering spans several. The message can quote the document (serde
/// names an unknown key as written), so control characters are escaped and it is cut.
pub(crate) fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let message: String = error
        .message()
        .trim()
        .replace('\n', " ")
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .take(4 * SHOWN)
        .collect();
    match error.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// Reads the init-data from where the command line says it is, for the sources read locally.
/// `root` is `/` in the agent and a temporary directory in tests. `Ok(None)` only for `auto`
/// when no local source has any. The cloud sources are fetched by the agent ([`cloud::plan`]
/// says which); here they are an error.
pub fn load(source: &InitDataSource, root: &Path) -> Result<Option<Vec<u8>>, InitDataError> {
    match source {
        InitDataSource::File(path) => {
            let relative = relative_path(path)?;
            read_bounded(&root.join(relative)).map(Some)
        }
        InitDataSource::FwCfg => read_bounded(&root.join(FW_CFG_PATH)).map(Some),
        InitDataSource::Auto => {
            // fw_cfg first: it is how a host hands one image different configurations.
            for candidate in [FW_CFG_PATH, IMAGE_PATH] {
                if let Some(raw) = read_if_present(&root.join(candidate))? {
                    return Ok(Some(raw));
                }
            }
            Ok(None)
        }
        InitDataSource::Disk => Err(InitDataError::Unsupported("disk")),
        InitDataSource::Gcp => Err(InitDataError::Remote("gcp")),
        InitDataSource::Azure => Err(InitDataError::Remote("azure")),
        InitDataSource::Aws => Err(InitDataError::Remote("aws")),
    }
}

/// [`read_bounded`] when `path` exists; `None` when it does not.
pub(crate) fn read_if_present(path: &Path) -> Result<Option<Vec<u8>>, InitDataError> {
    // symlink_metadata: a dangling or looping link is not "absent", it is an error for
    // read_bounded to report.
    match std::fs::symlink_metadata(path) {
        Ok(_) => read_bounded(path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(InitDataError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The cmdline parser already checked the path; checked again because `load` is public.
fn relative_path(path: &str) -> Result<&str, InitDataError> {
    let relative = path
        .strip_prefix('/')
        .ok_or_else(|| InitDataError::BadPath(path.to_string()))?;
    if relative.is_empty() || relative.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(InitDataError::BadPath(path.to_string()));
    }
    Ok(relative)
}

/// Reads at most [`MAX_INITDATA_LEN`] bytes of a regular file (sysfs' fw_cfg `raw` is one);
/// a device or FIFO could hand out endless data or block.
pub fn read_bounded(path: &Path) -> Result<Vec<u8>, InitDataError> {
    let io = |source| InitDataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(InitDataError::NotAFile(path.to_path_buf()));
    }
    let mut raw = Vec::new();
    file.take(MAX_INITDATA_LEN as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(io)?;
    if raw.len() > MAX_INITDATA_LEN {
        return Err(InitDataError::TooLarge);
    }
    Ok(raw)
}
