//! NVMe Identify Namespace through the kernel's admin passthrough ioctl.
//!
//! GCP's PD-NVMe controller keeps a persistent disk's device name only in the vendor-specific
//! bytes of Identify Namespace, which sysfs does not show; udev's `google_nvme_id` reads them
//! with `nvme id-ns -b`. The agent has no nvme-cli, so it issues the same admin command.
//!
//! The host answers this command. The data is parsed as hostile: fixed size, every field
//! bounds-checked, and the namespace's size must agree with what the block layer reports, so
//! an answer for some other namespace is not taken.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// NVMe Base Specification: every Identify data structure is 4 KiB.
pub const IDENTIFY_LEN: usize = 4096;
/// NVMe Base Specification, Identify Namespace: the vendor-specific area, bytes 384-4095.
pub const VENDOR_SPECIFIC: std::ops::Range<usize> = 384..IDENTIFY_LEN;
const ADMIN_IDENTIFY: u8 = 0x06;
const CNS_NAMESPACE: u32 = 0x00;
/// An admin command that a healthy controller answers in microseconds; a stuck one must not
/// hold the boot for the kernel's default (60 s).
const TIMEOUT_MS: u32 = 5000;

#[derive(Debug, thiserror::Error)]
pub enum NvmeError {
    #[error("open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: Identify Namespace {nsid} ioctl: {source}")]
    Ioctl {
        path: String,
        nsid: u32,
        source: nix::Error,
    },
    #[error("{path}: Identify Namespace {nsid} failed with NVMe status {status:#x}")]
    Status {
        path: String,
        nsid: u32,
        status: i32,
    },
    #[error("Identify Namespace: {0}")]
    Malformed(&'static str),
    #[error(
        "Identify Namespace reports {reported} bytes but the block device has {expected}: \
         the answer is not for this namespace"
    )]
    SizeMismatch { reported: u128, expected: u64 },
}

/// `struct nvme_passthru_cmd` of `<linux/nvme_ioctl.h>` (72 bytes; `nvme_admin_cmd` is the
/// same struct).
#[repr(C)]
#[derive(Default)]
struct PassthruCmd {
    opcode: u8,
    flags: u8,
    rsvd1: u16,
    nsid: u32,
    cdw2: u32,
    cdw3: u32,
    metadata: u64,
    addr: u64,
    metadata_len: u32,
    data_len: u32,
    cdw10: u32,
    cdw11: u32,
    cdw12: u32,
    cdw13: u32,
    cdw14: u32,
    cdw15: u32,
    timeout_ms: u32,
    result: u32,
}

const _: () = assert!(std::mem::size_of::<PassthruCmd>() == 72);

// NVME_IOCTL_ADMIN_CMD = _IOWR('N', 0x41, struct nvme_admin_cmd).
nix::ioctl_readwrite!(nvme_ioctl_admin_cmd, b'N', 0x41, PassthruCmd);

/// The fields of Identify Namespace the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdNamespace {
    /// Namespace size in logical blocks (NSZE).
    pub blocks: u64,
    /// The formatted logical block size in bytes (from FLBAS and its LBA format).
    pub block_size: u32,
    /// Bytes 384-4095, as the controller sent them.
    pub vendor_specific: Vec<u8>,
}

impl IdNamespace {
    /// Parse the 4 KiB Identify Namespace structure.
    pub fn parse(data: &[u8]) -> Result<Self, NvmeError> {
        let data: &[u8; IDENTIFY_LEN] = data
            .try_into()
            .map_err(|_| NvmeError::Malformed("not 4096 bytes"))?;
        let le64 = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&data[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let blocks = le64(0);
        let nlbaf = usize::from(data[25]);
        let flbas = data[26];
        // FLBAS bits 3:0 select the format; bits 6:5 are its high bits when NLBAF > 16.
        let format = usize::from(flbas & 0x0f) | (usize::from((flbas >> 5) & 0x03) << 4);
        // NLBAF is zero-based. At most 64 formats (bytes 128-383): `format` is 6 bits.
        if format > nlbaf {
            return Err(NvmeError::Malformed("FLBAS names a format past NLBAF"));
        }
        let lbads = data[128 + 4 * format + 2];
        // The specification's minimum is 512-byte blocks; Linux supports up to a page
        // multiple far below 2^24.
        if !(9..=24).contains(&lbads) {
            return Err(NvmeError::Malformed("LBA data size out of range"));
        }
        Ok(IdNamespace {
            blocks,
            block_size: 1 << lbads,
            vendor_specific: data[VENDOR_SPECIFIC].to_vec(),
        })
    }

    /// Refuse an answer whose size differs from the block device's (`bytes`).
    pub fn check_size(&self, bytes: u64) -> Result<(), NvmeError> {
        let reported = u128::from(self.blocks) * u128::from(self.block_size);
        if reported != u128::from(bytes) {
            return Err(NvmeError::SizeMismatch {
                reported,
                expected: bytes,
            });
        }
        Ok(())
    }
}

/// Send Identify Namespace `nsid` to the controller behind the block device `path`.
pub fn identify_namespace(path: &Path, nsid: u32) -> Result<IdNamespace, NvmeError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| NvmeError::Open {
        path: shown.clone(),
        source,
    })?;
    let mut data = vec![0u8; IDENTIFY_LEN];
    let mut cmd = PassthruCmd {
        opcode: ADMIN_IDENTIFY,
        nsid,
        addr: data.as_mut_ptr() as u64,
        data_len: IDENTIFY_LEN as u32,
        cdw10: CNS_NAMESPACE,
        timeout_ms: TIMEOUT_MS,
        ..PassthruCmd::default()
    };
    // SAFETY: `cmd` is a valid `nvme_passthru_cmd` that lives across the call; its `addr`
    // points at `data`, which is `data_len` bytes long, writable and alive until the ioctl
    // returns; no metadata buffer is given (`metadata_len` 0).
    let status = unsafe { nvme_ioctl_admin_cmd(file.as_raw_fd(), &mut cmd) }.map_err(|source| {
        NvmeError::Ioctl {
            path: shown.clone(),
            nsid,
            source,
        }
    })?;
    // A positive return is the NVMe completion status: the command reached the controller
    // and failed there.
    if status != 0 {
        return Err(NvmeError::Status {
            path: shown,
            nsid,
            status,
        });
    }
    IdNamespace::parse(&data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Identify Namespace structure of `blocks` blocks of 2^`lbads` bytes (format 1, as
    /// a controller that offers 512 and 4096 may pick) with `vendor` at byte 384.
    fn id_ns(blocks: u64, lbads: u8, vendor: &[u8]) -> Vec<u8> {
        let mut d = vec![0u8; IDENTIFY_LEN];
        d[0..8].copy_from_slice(&blocks.to_le_bytes());
        d[25] = 1; // two formats
        d[26] = 1; // format 1 in use
        d[128 + 2] = 9;
        d[132 + 2] = lbads;
        d[384..384 + vendor.len()].copy_from_slice(vendor);
        d
    }

    #[test]
    fn identify_namespace_is_parsed() {
        let ns = IdNamespace::parse(&id_ns(262144, 12, b"abc")).unwrap();
        assert_eq!(ns.blocks, 262144);
        assert_eq!(ns.block_size, 4096);
        assert_eq!(&ns.vendor_specific[..4], b"abc\0");
        assert_eq!(ns.vendor_specific.len(), 3712);
        ns.check_size(1 << 30).unwrap();
        let err = ns.check_size(1 << 29).unwrap_err().to_string();
        assert!(err.contains("not for this namespace"), "{err}");
    }

    #[test]
    fn hostile_identify_data_is_refused() {
        assert!(IdNamespace::parse(&[0u8; 100]).is_err());
        // A format index past NLBAF.
        let mut d = id_ns(8, 9, b"");
        d[26] = 5;
        assert!(IdNamespace::parse(&d).is_err());
        // The highest format FLBAS can name is read inside the structure (here: empty).
        let mut d = id_ns(8, 9, b"");
        d[25] = 255;
        d[26] = 0x6f;
        assert!(IdNamespace::parse(&d).is_err());
        // Block sizes below 512 bytes or absurdly large.
        assert!(IdNamespace::parse(&id_ns(8, 8, b"")).is_err());
        assert!(IdNamespace::parse(&id_ns(8, 25, b"")).is_err());
        // A size that overflows 64 bits is compared, not wrapped.
        let ns = IdNamespace::parse(&id_ns(u64::MAX, 24, b"")).unwrap();
        assert!(ns.check_size(u64::MAX).is_err());
    }

    #[test]
    fn the_ioctl_fails_cleanly_on_what_is_not_an_nvme_device() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let err = identify_namespace(tmp.path(), 1).unwrap_err();
        assert!(matches!(err, NvmeError::Ioctl { nsid: 1, .. }), "{err}");
        let err = identify_namespace(Path::new("/nonexistent/nvme0n1"), 1).unwrap_err();
        assert!(matches!(err, NvmeError::Open { .. }), "{err}");
    }
}
