//! `cvmctl uki`: a Unified Kernel Image from the kernel, the agent's initrd, an os-release and
//! the measured command line, on the systemd 252 EFI stub. Byte-identical for the same inputs
//! (`cvm-uki` writes the PE itself: no timestamps, computed checksum), because the firmware
//! measures its Authenticode digest into PCR 4 and the stub its sections into PCR 11.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use cvm_text::hex;
use cvm_uki::{HashAlg, Uki, UkiInputs};

/// Debian's systemd-boot-efi stub (systemd 252 in bookworm).
pub const DEFAULT_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// The largest input read: a kernel or initrd bigger than this is a mistake, not an image.
const MAX_INPUT: u64 = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum UkiCommandError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: larger than {MAX_INPUT} bytes")]
    TooLarge { path: PathBuf },
    #[error("the command line must not be empty: production and debug images differ only in it")]
    EmptyCmdline,
    #[error("building the UKI")]
    Build(#[source] cvm_uki::UkiError),
    #[error("the Authenticode digest of the UKI")]
    Digest(#[source] cvm_uki::PeError),
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `cvmctl uki`.
#[derive(clap::Args, Debug, Clone)]
pub struct UkiArgs {
    /// The kernel (an EFI-stub bzImage, e.g. Debian's vmlinuz).
    #[arg(long)]
    pub kernel: PathBuf,
    /// The agent's initrd (`cvmctl initrd`).
    #[arg(long)]
    pub initrd: PathBuf,
    /// The image's os-release (the `.osrel` section).
    #[arg(long)]
    pub os_release: Option<PathBuf>,
    /// The kernel command line, measured with the image (roothash=…, cvm.mode=…, console).
    #[arg(long)]
    pub cmdline: String,
    /// The systemd EFI stub.
    #[arg(long, default_value = DEFAULT_STUB)]
    pub stub: PathBuf,
    /// Output file.
    #[arg(short, long)]
    pub output: PathBuf,
}

fn read(path: &Path) -> Result<Vec<u8>, UkiCommandError> {
    let meta = std::fs::metadata(path).map_err(|source| UkiCommandError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.len() > MAX_INPUT {
        return Err(UkiCommandError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    std::fs::read(path).map_err(|source| UkiCommandError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// What `cvmctl uki` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UkiReport {
    pub size: usize,
    pub sha256: String,
    /// The Authenticode SHA-256 digest the firmware extends into PCR 4.
    pub authenticode_sha256: String,
}

/// Builds the UKI in memory from the files `args` names.
pub fn build(args: &UkiArgs) -> Result<Vec<u8>, UkiCommandError> {
    if args.cmdline.trim().is_empty() {
        return Err(UkiCommandError::EmptyCmdline);
    }
    let stub = read(&args.stub)?;
    let kernel = read(&args.kernel)?;
    let initrd = read(&args.initrd)?;
    let osrel = args.os_release.as_deref().map(read).transpose()?;
    let mut inputs = UkiInputs::new(&stub, &kernel);
    inputs.initrd = Some(&initrd);
    inputs.cmdline = Some(args.cmdline.as_bytes());
    inputs.osrel = osrel.as_deref();
    Ok(Uki::build(&inputs).map_err(UkiCommandError::Build)?.bytes)
}

/// Runs `cvmctl uki`: writes the UKI and reports its size and digests.
pub fn run(args: &UkiArgs) -> Result<UkiReport, UkiCommandError> {
    let bytes = build(args)?;
    let authenticode =
        cvm_uki::authenticode(&bytes, HashAlg::Sha256).map_err(UkiCommandError::Digest)?;
    std::fs::write(&args.output, &bytes).map_err(|source| UkiCommandError::Write {
        path: args.output.clone(),
        source,
    })?;
    Ok(UkiReport {
        size: bytes.len(),
        sha256: hex::encode(&Sha256::digest(&bytes)),
        authenticode_sha256: hex::encode(&authenticode),
    })
}
