//! TDX: PCR 15's events also go to RTMR2, per the UEFI/Linux PCR→RTMR map (PCR 8–15 → RTMR2),
//! so a TD without a vTPM carries the same claims in its quote. Linux (6.16+) exposes the
//! runtime measurement registers as `/sys/class/misc/tdx_guest/measurements/rtmr<N>:sha384`;
//! writing a SHA-384 digest there extends the register.

use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RtmrError {
    #[error("RTMR digests are SHA-384 (48 bytes), got {0}")]
    Length(usize),
    #[error("cannot extend {path}")]
    Extend {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The RTMR2 extend file under `sys`, if this is a TD whose kernel offers it.
pub fn rtmr2(sys: &Path) -> Option<PathBuf> {
    let path = sys.join("class/misc/tdx_guest/measurements/rtmr2:sha384");
    path.exists().then_some(path)
}

/// Extend the register behind `path` with one SHA-384 digest (one write, as the ABI wants).
pub fn extend(path: &Path, digest: &[u8]) -> Result<(), RtmrError> {
    if digest.len() != 48 {
        return Err(RtmrError::Length(digest.len()));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(digest))
        .map_err(|source| RtmrError::Extend {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_writes_the_register_file() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(rtmr2(tmp.path()).is_none());
        let dir = tmp.path().join("class/misc/tdx_guest/measurements");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rtmr2:sha384"), b"").unwrap();
        let path = rtmr2(tmp.path()).unwrap();
        extend(&path, &[7u8; 48]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 48]);
        assert!(matches!(
            extend(&path, &[0; 32]),
            Err(RtmrError::Length(32))
        ));
    }
}
