//! Which evidence this VM sends, in the KBS protocol's TEE names: a primary evidence and, on
//! the clouds, an additional one bound to the same runtime data.
//!
//! Trustee checks init-data only in the primary evidence, through the register the VM's
//! owner sets at launch: HOST_DATA (`snp`), MRCONFIGID (`tdx`) or PCR 8 (`tpm` and the Azure
//! vTPM kinds, which the agent extends itself). None of GCP (SNP, TDX), AWS (SNP) and Azure
//! lets the owner set HOST_DATA or MRCONFIGID, so there the primary evidence is `tpm` and the
//! SNP report or TDX quote goes along as additional evidence (Trustee's `additional_evidence`
//! map, verified with the runtime data without the additional evidence itself).
//!
//! Order, most specific first:
//! 1. Azure (the HCL report in vTPM NV 0x01400001 is readable — the caller checks that through
//!    the TPM and passes `has_azure_hcl`): Azure's paravisor hides the SNP/TDX guest devices,
//!    and the HCL report plus a vTPM quote is the evidence Azure CVMs give. SNP or TDX flavour
//!    from the CPU vendor in `/proc/cpuinfo` (a caller that has parsed the HCL report can use
//!    [`super::azure::HclReport::tee_kind`] instead, which is authoritative).
//! 2. A cloud (SMBIOS `/sys/class/dmi/id/sys_vendor`: `Google`, `Microsoft Corporation`,
//!    `Amazon EC2`) with a vTPM and a TDX or SNP guest device: primary `tpm` (PCR 8 binds the
//!    init-data), additional `tdx` or `snp`.
//! 3. TDX: `/dev/tdx_guest`, or configfs-tsm provider `tdx_guest`.
//! 4. SNP: `/dev/sev-guest`, or configfs-tsm provider `sev_guest`.
//! 5. TPM: `/dev/tpmrm0` (QEMU + swtpm, a cloud's vTPM without CPU-level attestation).
//!
//! Off the clouds (QEMU, a host the owner runs) the host sets HOST_DATA / MRCONFIGID, so the
//! hardware report is the primary evidence and a TPM beside it changes nothing. On a cloud
//! without a vTPM the hardware report stays primary, and the reason says that the init-data
//! cannot be bound there (the agent's own register check then stops a boot with init-data).

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

/// The cloud the VM runs on, from the SMBIOS system vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    Google,
    Azure,
    Aws,
}

impl Cloud {
    /// `/sys/class/dmi/id/sys_vendor`, exactly as each cloud sets it.
    pub fn from_sys_vendor(vendor: &str) -> Option<Cloud> {
        match vendor {
            "Google" => Some(Cloud::Google),
            "Microsoft Corporation" => Some(Cloud::Azure),
            "Amazon EC2" => Some(Cloud::Aws),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Cloud::Google => "GCP",
            Cloud::Azure => "Azure",
            Cloud::Aws => "AWS",
        }
    }
}

/// The outcome of [`detect`]: the primary evidence's kind (if any), the additional evidence's
/// kind (only with a primary), the cloud, and a sentence saying why, for the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub kind: Option<TeeKind>,
    pub additional: Option<TeeKind>,
    pub cloud: Option<Cloud>,
    pub reason: String,
}

/// SMBIOS system vendor under `root`; `None` when absent or unreadable.
pub const SYS_VENDOR_PATH: &str = "sys/class/dmi/id/sys_vendor";

/// The cloud under `root` from [`SYS_VENDOR_PATH`] (read bounded; anything else is no cloud).
pub fn cloud(root: &Path) -> Option<Cloud> {
    use std::io::Read as _;
    let f = std::fs::File::open(root.join(SYS_VENDOR_PATH)).ok()?;
    let mut text = String::new();
    f.take(256).read_to_string(&mut text).ok()?;
    Cloud::from_sys_vendor(text.trim())
}

/// Detects the TEE under `root` (`/` in the guest, a fake tree in tests). Reads device nodes,
/// `/proc/cpuinfo`, the SMBIOS vendor, and probes configfs-tsm (creating and removing one
/// entry).
pub fn detect(root: &Path, has_azure_hcl: bool) -> Detection {
    let cloud = cloud(root);
    let on = match cloud {
        Some(c) => format!(" on {} (SMBIOS vendor)", c.name()),
        None => String::new(),
    };
    let found = |kind, reason: String| Detection {
        kind: Some(kind),
        additional: None,
        cloud,
        reason,
    };
    if has_azure_hcl {
        return match cpu_vendor(root).as_deref() {
            Some("AuthenticAMD") => found(
                TeeKind::AzSnpVtpm,
                format!("Azure HCL report in vTPM NV 0x01400001 on an AMD CPU{on}"),
            ),
            Some("GenuineIntel") => found(
                TeeKind::AzTdxVtpm,
                format!("Azure HCL report in vTPM NV 0x01400001 on an Intel CPU{on}"),
            ),
            other => Detection {
                kind: None,
                additional: None,
                cloud,
                reason: format!(
                    "Azure HCL report present, but the CPU vendor is {} (need AuthenticAMD or GenuineIntel)",
                    other.unwrap_or("unreadable")
                ),
            },
        };
    }
    let dev = |name: &str| root.join("dev").join(name).exists();
    let hardware = hardware(root, &dev);
    let tpm = dev("tpmrm0");
    match (hardware, cloud) {
        (Ok((hw, why)), Some(c)) if tpm => Detection {
            kind: Some(TeeKind::Tpm),
            additional: Some(hw),
            cloud,
            reason: format!(
                "{why} and /dev/tpmrm0{on}: {} does not let the VM owner set {}, so the \
                 primary evidence is tpm (PCR 8 binds the init-data) and the {hw} report goes \
                 along as additional evidence bound to the same runtime data",
                c.name(),
                register_name(hw)
            ),
        },
        (Ok((hw, why)), Some(c)) => found(
            hw,
            format!(
                "{why}{on}, no vTPM: {} does not let the VM owner set {}, so this boot \
                 cannot bind init-data",
                c.name(),
                register_name(hw)
            ),
        ),
        (Ok((hw, why)), None) => found(hw, why),
        (Err(_), _) if tpm => found(
            TeeKind::Tpm,
            format!("no Azure HCL report, no TDX or SNP guest device, but /dev/tpmrm0 exists{on}"),
        ),
        (Err(provider), _) => Detection {
            kind: None,
            additional: None,
            cloud,
            reason: format!(
                "no Azure HCL report, no /dev/tdx_guest, /dev/sev-guest or /dev/tpmrm0, configfs-tsm provider {}{on}",
                provider.as_deref().unwrap_or("absent")
            ),
        },
    }
}

/// The TDX or SNP guest device, with the sentence that found it; else the configfs-tsm
/// provider seen (if any).
fn hardware(root: &Path, dev: &dyn Fn(&str) -> bool) -> Result<(TeeKind, String), Option<String>> {
    if dev("tdx_guest") {
        return Ok((TeeKind::Tdx, "/dev/tdx_guest exists".into()));
    }
    // Only probed when the device node did not already answer: the probe creates an entry.
    let provider = tsm::provider_in(&root.join(tsm::TSM_REPORT_ROOT.trim_start_matches('/')));
    if provider.as_deref() == Some(tsm::PROVIDER_TDX_GUEST) {
        return Ok((TeeKind::Tdx, "configfs-tsm provider is tdx_guest".into()));
    }
    if dev("sev-guest") {
        return Ok((TeeKind::Snp, "/dev/sev-guest exists".into()));
    }
    if provider.as_deref() == Some(tsm::PROVIDER_SEV_GUEST) {
        return Ok((TeeKind::Snp, "configfs-tsm provider is sev_guest".into()));
    }
    Err(provider)
}

fn register_name(kind: TeeKind) -> &'static str {
    match kind {
        TeeKind::Tdx => "MRCONFIGID",
        _ => "HOST_DATA",
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
        assert_eq!(detect(r, true).additional, None);
    }

    fn vendor(root: &Path, name: &str) {
        fs::create_dir_all(root.join("sys/class/dmi/id")).unwrap();
        fs::write(root.join(SYS_VENDOR_PATH), format!("{name}\n")).unwrap();
    }

    fn plan(root: &Path) -> (Option<TeeKind>, Option<TeeKind>) {
        let d = detect(root, false);
        (d.kind, d.additional)
    }

    /// Per platform (TEE device × SMBIOS vendor): on the three clouds a vTPM next to a TDX or
    /// SNP device makes `tpm` primary with the hardware report as additional evidence; off
    /// them (no or another vendor) the hardware report is primary, alone.
    #[test]
    fn primary_evidence_per_platform() {
        use TeeKind::{Snp, Tdx, Tpm};
        for (device, hw) in [("sev-guest", Snp), ("tdx_guest", Tdx)] {
            for (name, cloud) in [
                ("Google", Some(Cloud::Google)),
                ("Amazon EC2", Some(Cloud::Aws)),
                ("Microsoft Corporation", Some(Cloud::Azure)),
                ("QEMU", None),
                ("google", None),
            ] {
                let d = tempfile::tempdir().unwrap();
                let r = d.path();
                vendor(r, name);
                touch(r, &format!("dev/{device}"));
                // No vTPM: the hardware report is all there is.
                assert_eq!(plan(r), (Some(hw), None), "{name} {device} without a TPM");
                let det = detect(r, false);
                assert_eq!(det.cloud, cloud, "{name}");
                if cloud.is_some() {
                    assert!(
                        det.reason.contains("cannot bind init-data"),
                        "{}",
                        det.reason
                    );
                }
                touch(r, "dev/tpmrm0");
                let det = detect(r, false);
                if cloud.is_some() {
                    assert_eq!((det.kind, det.additional), (Some(Tpm), Some(hw)), "{name}");
                    assert!(det.reason.contains("PCR 8"), "{}", det.reason);
                    assert!(det.reason.contains(register_name(hw)), "{}", det.reason);
                } else {
                    assert_eq!((det.kind, det.additional), (Some(hw), None), "{name}");
                }
            }
        }
        // A cloud's plain vTPM (no TEE device): tpm alone; Azure's HCL report wins over all.
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        vendor(r, "Google");
        touch(r, "dev/tpmrm0");
        assert_eq!(plan(r), (Some(Tpm), None));
        assert!(detect(r, false).reason.contains("on GCP"));
        vendor(r, "Microsoft Corporation");
        touch(r, "dev/sev-guest");
        fs::create_dir_all(r.join("proc")).unwrap();
        fs::write(r.join("proc/cpuinfo"), "vendor_id\t: AuthenticAMD\n").unwrap();
        let det = detect(r, true);
        assert_eq!((det.kind, det.additional), (Some(TeeKind::AzSnpVtpm), None));
        // A hostile vendor file is read bounded and is no cloud.
        fs::write(r.join(SYS_VENDOR_PATH), "Google".repeat(1000)).unwrap();
        assert_eq!(cloud(r), None);
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
