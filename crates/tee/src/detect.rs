//! Which kind of evidence this VM can produce, in the KBS protocol's TEE names.
//!
//! Order, most specific first:
//! 1. Azure (the HCL report in vTPM NV 0x01400001 is readable — the caller checks that through
//!    the TPM and passes `has_azure_hcl`): Azure's paravisor hides the SNP/TDX guest devices,
//!    and the HCL report plus a vTPM quote is the evidence Azure CVMs give. SNP or TDX flavour
//!    from the CPU vendor in `/proc/cpuinfo` (a caller that has parsed the HCL report can use
//!    [`super::azure::HclReport::tee_kind`] instead, which is authoritative).
//! 2. TDX: `/dev/tdx_guest`, or configfs-tsm provider `tdx_guest`.
//! 3. SNP: `/dev/sev-guest`, or configfs-tsm provider `sev_guest`.
//! 4. TPM: `/dev/tpmrm0` (QEMU + swtpm, GCP, AWS: a vTPM without CPU-level attestation here).
//!
//! A TPM present on a TDX or SNP guest does not change the answer: the hardware report is the
//! stronger evidence, and measurements reach it through RTMRs / the vTPM anyway.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::tsm;

/// KBS protocol TEE types the agent produces evidence for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TeeKind {
    #[serde(rename = "tpm")]
    Tpm,
    #[serde(rename = "snp")]
    Snp,
    #[serde(rename = "tdx")]
    Tdx,
    #[serde(rename = "az-snp-vtpm")]
    AzSnpVtpm,
    #[serde(rename = "az-tdx-vtpm")]
    AzTdxVtpm,
}

impl TeeKind {
    pub const ALL: [TeeKind; 5] = [
        TeeKind::Tpm,
        TeeKind::Snp,
        TeeKind::Tdx,
        TeeKind::AzSnpVtpm,
        TeeKind::AzTdxVtpm,
    ];

    /// The kbs-types value for the `/auth` request.
    pub fn kbs_tee(self) -> kbs_types::Tee {
        match self {
            TeeKind::Tpm => kbs_types::Tee::Tpm,
            TeeKind::Snp => kbs_types::Tee::Snp,
            TeeKind::Tdx => kbs_types::Tee::Tdx,
            TeeKind::AzSnpVtpm => kbs_types::Tee::AzSnpVtpm,
            TeeKind::AzTdxVtpm => kbs_types::Tee::AzTdxVtpm,
        }
    }

    /// The KBS protocol name.
    pub fn as_str(self) -> &'static str {
        match self {
            TeeKind::Tpm => "tpm",
            TeeKind::Snp => "snp",
            TeeKind::Tdx => "tdx",
            TeeKind::AzSnpVtpm => "az-snp-vtpm",
            TeeKind::AzTdxVtpm => "az-tdx-vtpm",
        }
    }
}

impl fmt::Display for TeeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown TEE type {0:?} (known: tpm, snp, tdx, az-snp-vtpm, az-tdx-vtpm)")]
pub struct UnknownTeeKind(pub String);

impl FromStr for TeeKind {
    type Err = UnknownTeeKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TeeKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownTeeKind(s.to_owned()))
    }
}

/// The outcome of [`detect`]: the kind (if any) and a sentence saying why, for the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub kind: Option<TeeKind>,
    pub reason: String,
}

/// Detects the TEE under `root` (`/` in the guest, a fake tree in tests). Reads device nodes,
/// `/proc/cpuinfo`, and probes configfs-tsm (creating and removing one entry).
pub fn detect(root: &Path, has_azure_hcl: bool) -> Detection {
    let found = |kind, reason: String| Detection {
        kind: Some(kind),
        reason,
    };
    if has_azure_hcl {
        return match cpu_vendor(root).as_deref() {
            Some("AuthenticAMD") => found(
                TeeKind::AzSnpVtpm,
                "Azure HCL report in vTPM NV 0x01400001 on an AMD CPU".into(),
            ),
            Some("GenuineIntel") => found(
                TeeKind::AzTdxVtpm,
                "Azure HCL report in vTPM NV 0x01400001 on an Intel CPU".into(),
            ),
            other => Detection {
                kind: None,
                reason: format!(
                    "Azure HCL report present, but the CPU vendor is {} (need AuthenticAMD or GenuineIntel)",
                    other.unwrap_or("unreadable")
                ),
            },
        };
    }
    let dev = |name: &str| root.join("dev").join(name).exists();
    if dev("tdx_guest") {
        return found(TeeKind::Tdx, "/dev/tdx_guest exists".into());
    }
    // Only probed when the device node did not already answer: the probe creates an entry.
    let provider = tsm::provider_in(&root.join(tsm::TSM_REPORT_ROOT.trim_start_matches('/')));
    let provider = provider.as_deref();
    if provider == Some(tsm::PROVIDER_TDX_GUEST) {
        return found(TeeKind::Tdx, "configfs-tsm provider is tdx_guest".into());
    }
    if dev("sev-guest") {
        return found(TeeKind::Snp, "/dev/sev-guest exists".into());
    }
    if provider == Some(tsm::PROVIDER_SEV_GUEST) {
        return found(TeeKind::Snp, "configfs-tsm provider is sev_guest".into());
    }
    if dev("tpmrm0") {
        return found(
            TeeKind::Tpm,
            "no Azure HCL report, no TDX or SNP guest device, but /dev/tpmrm0 exists".into(),
        );
    }
    Detection {
        kind: None,
        reason: format!(
            "no Azure HCL report, no /dev/tdx_guest, /dev/sev-guest or /dev/tpmrm0, configfs-tsm provider {}",
            provider.unwrap_or("absent")
        ),
    }
}

/// `vendor_id` of the first CPU in `<root>/proc/cpuinfo`.
fn cpu_vendor(root: &Path) -> Option<String> {
    use std::io::Read as _;
    let f = std::fs::File::open(root.join("proc/cpuinfo")).ok()?;
    // The first processor block is enough; bound the read.
    let mut text = String::new();
    f.take(64 * 1024).read_to_string(&mut text).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "vendor_id").then(|| v.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn names_round_trip() {
        for k in TeeKind::ALL {
            assert_eq!(k.as_str().parse::<TeeKind>().unwrap(), k);
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        assert!("sev".parse::<TeeKind>().is_err());
    }

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, "").unwrap();
    }

    #[test]
    fn ordering() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        assert_eq!(detect(r, false).kind, None);
        touch(r, "dev/tpmrm0");
        assert_eq!(detect(r, false).kind, Some(TeeKind::Tpm));
        touch(r, "dev/sev-guest");
        assert_eq!(detect(r, false).kind, Some(TeeKind::Snp));
        touch(r, "dev/tdx_guest");
        let det = detect(r, false);
        assert_eq!(det.kind, Some(TeeKind::Tdx));
        assert!(det.reason.contains("tdx_guest"), "{}", det.reason);
        // Azure wins, flavour from the CPU vendor.
        assert_eq!(detect(r, true).kind, None);
        fs::create_dir_all(r.join("proc")).unwrap();
        fs::write(
            r.join("proc/cpuinfo"),
            "processor\t: 0\nvendor_id\t: AuthenticAMD\n",
        )
        .unwrap();
        assert_eq!(detect(r, true).kind, Some(TeeKind::AzSnpVtpm));
        fs::write(r.join("proc/cpuinfo"), "vendor_id\t: GenuineIntel\n").unwrap();
        assert_eq!(detect(r, true).kind, Some(TeeKind::AzTdxVtpm));
    }

    #[test]
    fn configfs_tsm_provider() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let entry = r.join("sys/kernel/config/tsm/report").join(tsm::ENTRY_NAME);
        fs::create_dir_all(&entry).unwrap();
        touch(r, "dev/tpmrm0");
        fs::write(entry.join("provider"), "sev_guest\n").unwrap();
        let det = detect(r, false);
        assert_eq!(det.kind, Some(TeeKind::Snp));
        assert!(det.reason.contains("configfs-tsm"), "{}", det.reason);
        fs::write(entry.join("provider"), "tdx_guest\n").unwrap();
        assert_eq!(detect(r, false).kind, Some(TeeKind::Tdx));
    }
}
