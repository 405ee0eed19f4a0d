//! configfs-tsm attestation reports (Linux ≥ 6.7, `Documentation/ABI/testing/configfs-tsm`):
//! one interface for SEV-SNP (`sev_guest`) and TDX (`tdx_guest`) instead of their ioctls.
//!
//! Protocol: `mkdir <root>/<entry>`, write the 64 report-data bytes to `inblob`, read
//! `outblob` (SNP: the ATTESTATION_REPORT; TDX: a DCAP quote), `auxblob` (SNP: the certificate
//! table, when the host supplies one) and `provider`, then `rmdir`. `generation` counts writes
//! to the entry; it changing while we read means another writer raced us.

use std::fs;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{snp, tdx};

/// Where the kernel mounts the report directory.
pub const TSM_REPORT_ROOT: &str = "/sys/kernel/config/tsm/report";
/// Provider names as the kernel drivers register them.
pub const PROVIDER_SEV_GUEST: &str = "sev_guest";
pub const PROVIDER_TDX_GUEST: &str = "tdx_guest";
/// The entry this process uses. One fixed name: the agent is PID 1 and the only user, and a
/// fixed name lets a test prepare the entry in a fake root.
pub const ENTRY_NAME: &str = "cvm-agent";
/// outblob/auxblob bound: a quote is ~5 KiB, a certificate table ~10 KiB.
const MAX_BLOB: u64 = 1024 * 1024;

/// Serializes requests within the process: the entry is shared state.
static LOCK: Mutex<()> = Mutex::new(());

#[derive(Debug, thiserror::Error)]
pub enum TsmError {
    #[error("configfs-tsm is not available at {}", .0.display())]
    Unavailable(PathBuf, #[source] io::Error),
    #[error("cannot create report entry {}", .0.display())]
    CreateEntry(PathBuf, #[source] io::Error),
    #[error("cannot {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is larger than {MAX_BLOB} bytes", .0.display())]
    TooLarge(PathBuf),
    #[error("{} is not a number", .0.display())]
    Generation(PathBuf),
    #[error(
        "report entry was written by someone else while in use (generation {before} → {after})"
    )]
    Race { before: u64, after: u64 },
    #[error("the {provider} report does not contain the requested report data")]
    ReportDataMismatch { provider: String },
    #[error("the {provider} report is malformed: {reason}")]
    Malformed { provider: String, reason: String },
}

/// What configfs-tsm returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsmReport {
    /// `sev_guest`, `tdx_guest`, …
    pub provider: String,
    pub outblob: Vec<u8>,
    /// `None` when the provider has no auxblob or it is empty.
    pub auxblob: Option<Vec<u8>>,
    pub generation: u64,
}

/// A report from the running kernel's configfs-tsm.
pub fn tsm_report(report_data: &[u8; 64]) -> Result<TsmReport, TsmError> {
    tsm_report_in(Path::new(TSM_REPORT_ROOT), report_data)
}

/// A report using the configfs-tsm report directory `root` (a fake directory in tests).
///
/// If `root/cvm-agent` already exists it is used as is and left in place (a test fixture, or a
/// leftover of an earlier request in this boot); otherwise it is created and removed again.
pub fn tsm_report_in(root: &Path, report_data: &[u8; 64]) -> Result<TsmReport, TsmError> {
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    fs::metadata(root).map_err(|e| TsmError::Unavailable(root.to_path_buf(), e))?;
    let entry = root.join(ENTRY_NAME);
    let created = match fs::create_dir(&entry) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(TsmError::CreateEntry(entry, e)),
    };
    let result = request(&entry, report_data);
    if created {
        // Best effort: a left-over entry costs nothing and is reused next time.
        let _ = fs::remove_dir(&entry);
    }
    result
}

/// The provider of `root`'s configfs-tsm, found through a probe entry; `None` when there is
/// no configfs-tsm or no provider registered.
pub fn provider_in(root: &Path) -> Option<String> {
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let entry = root.join(ENTRY_NAME);
    let created = match fs::create_dir(&entry) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(_) => return None,
    };
    let provider = read_bounded(&entry.join("provider"))
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    if created {
        let _ = fs::remove_dir(&entry);
    }
    provider
}

fn request(entry: &Path, report_data: &[u8; 64]) -> Result<TsmReport, TsmError> {
    let inblob = entry.join("inblob");
    // No O_CREAT: the kernel provides the attribute; if it is missing this is not configfs-tsm,
    // and nothing should be left behind. One write(2) of 64 bytes, as the ABI expects.
    fs::OpenOptions::new()
        .write(true)
        .open(&inblob)
        .and_then(|mut f| std::io::Write::write_all(&mut f, report_data))
        .map_err(|source| TsmError::Io {
            op: "write",
            path: inblob,
            source,
        })?;
    let generation = read_generation(entry)?;
    let outblob = read_bounded(&entry.join("outblob"))?;
    let auxblob = match read_bounded(&entry.join("auxblob")) {
        Ok(b) if b.is_empty() => None,
        Ok(b) => Some(b),
        // Providers without certificates do not create the attribute.
        Err(TsmError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let provider = String::from_utf8_lossy(&read_bounded(&entry.join("provider"))?)
        .trim()
        .to_owned();
    let after = read_generation(entry)?;
    if after != generation {
        return Err(TsmError::Race {
            before: generation,
            after,
        });
    }
    // A writer that slipped in between our inblob write and the first generation read is not
    // visible in the generation; for the providers we know, the report data in the outblob is.
    check_report_data(&provider, &outblob, report_data)?;
    Ok(TsmReport {
        provider,
        outblob,
        auxblob,
        generation,
    })
}

fn check_report_data(provider: &str, outblob: &[u8], want: &[u8; 64]) -> Result<(), TsmError> {
    let malformed = |reason: String| TsmError::Malformed {
        provider: provider.to_owned(),
        reason,
    };
    let got = match provider {
        PROVIDER_SEV_GUEST => {
            snp::AttestationReport::parse(outblob)
                .map_err(|e| malformed(e.to_string()))?
                .report_data
        }
        PROVIDER_TDX_GUEST => {
            tdx::Quote::parse(outblob)
                .map_err(|e| malformed(e.to_string()))?
                .body
                .report_data
        }
        _ => return Ok(()),
    };
    if &got != want {
        return Err(TsmError::ReportDataMismatch {
            provider: provider.to_owned(),
        });
    }
    Ok(())
}

fn read_generation(entry: &Path) -> Result<u64, TsmError> {
    let path = entry.join("generation");
    let raw = read_bounded(&path)?;
    std::str::from_utf8(&raw)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or(TsmError::Generation(path))
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, TsmError> {
    let io_err = |source| TsmError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    };
    let f = fs::File::open(path).map_err(io_err)?;
    let mut buf = Vec::new();
    f.take(MAX_BLOB + 1).read_to_end(&mut buf).map_err(io_err)?;
    if buf.len() as u64 > MAX_BLOB {
        return Err(TsmError::TooLarge(path.to_path_buf()));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_entry(root: &Path, provider: &str, outblob: &[u8]) -> PathBuf {
        let e = root.join(ENTRY_NAME);
        fs::create_dir_all(&e).unwrap();
        fs::write(e.join("provider"), format!("{provider}\n")).unwrap();
        fs::write(e.join("generation"), "3\n").unwrap();
        fs::write(e.join("outblob"), outblob).unwrap();
        fs::write(e.join("inblob"), "").unwrap();
        e
    }

    #[test]
    fn unknown_provider_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let e = fake_entry(d.path(), "fake_guest", b"opaque");
        let r = tsm_report_in(d.path(), &[7; 64]).unwrap();
        assert_eq!(r.provider, "fake_guest");
        assert_eq!(r.outblob, b"opaque");
        assert_eq!(r.auxblob, None);
        assert_eq!(r.generation, 3);
        assert_eq!(fs::read(e.join("inblob")).unwrap(), vec![7; 64]);
        assert!(e.exists(), "a pre-existing entry is left alone");
        assert_eq!(provider_in(d.path()).as_deref(), Some("fake_guest"));
    }

    #[test]
    fn missing_root_and_missing_attributes() {
        let d = tempfile::tempdir().unwrap();
        let gone = d.path().join("nope");
        assert!(matches!(
            tsm_report_in(&gone, &[0; 64]),
            Err(TsmError::Unavailable(..))
        ));
        assert_eq!(provider_in(&gone), None);
        // An empty directory: the entry is created, the kernel attributes are missing, so the
        // request fails, and the entry is removed again.
        let err = tsm_report_in(d.path(), &[0; 64]).unwrap_err();
        assert!(matches!(err, TsmError::Io { .. }), "{err:?}");
        assert!(!d.path().join(ENTRY_NAME).exists());
        assert_eq!(provider_in(d.path()), None);
    }

    #[test]
    fn bad_generation_and_known_provider_garbage() {
        let d = tempfile::tempdir().unwrap();
        let e = fake_entry(d.path(), PROVIDER_SEV_GUEST, b"short");
        assert!(matches!(
            tsm_report_in(d.path(), &[0; 64]),
            Err(TsmError::Malformed { .. })
        ));
        fs::write(e.join("generation"), "x").unwrap();
        assert!(matches!(
            tsm_report_in(d.path(), &[0; 64]),
            Err(TsmError::Generation(_))
        ));
    }
}
