//! The dev KBS's policy: which TEEs, whether debug is allowed, the reference values the
//! evidence's claims must have, and which TPM attestation keys are trusted.
//!
//! Every field is optional and defaults to the refusing side: only `tpm`, no debug, init-data
//! required, and no trusted AK (so a `tpm` attestation is refused until the operator lists the
//! vTPM's AK in `trusted_aks`, as Trustee's `tpm` verifier refuses every AK not in its
//! `trusted_ak_keys_dir`). There is no trust on first use: the first quote a KBS sees may come
//! from a TPM the host runs, and trusting it would let the host sign whatever PCRs it likes.
//!
//! SNP and TDX without a vTPM have no AK and no PCRs: what booted is only in the launch
//! registers, so a policy that allows them must pin those ([`Policy::check_launch_pins`], at
//! load and again for every attestation): `snp` needs `snp_measurement` (firmware, and with
//! measured direct boot the kernel, initrd and command line hashes); `tdx` needs `tdx_mrtd`
//! (the TD firmware) and `tdx_rtmr` 1 (what the firmware loaded: the kernel, or the whole
//! UKI). MRTD alone would let any kernel and initrd run under the genuine firmware and write
//! any event log. RTMR2 holds the agent's events and is checked by replaying its log.
//!
//! `az-snp-vtpm` and `az-tdx-vtpm` trust the vTPM only as far as the paravisor (OpenHCL) that
//! runs it at VMPL0 / as the TD: its HCL report carries the AK, and the hardware report around
//! it proves only that *some* VMPL0 code or TD wrote it. So these kinds need the paravisor's
//! launch identity pinned: `az_snp_measurement` (the SNP MEASUREMENT inside the HCL report),
//! `az_tdx_mrtd` (and optionally `az_tdx_rtmr`), each a list of allowed values since Azure
//! updates its paravisor. Behind the vTPM the checks are `tpm`'s: `pcrs`, the reference, the
//! agent's log and its claims.
//!
//! `tpm` boots through UEFI measure the boot chain into PCRs 0–7, 9, 11 and 12 ([`BOOT_PCRS`]:
//! firmware, boot configuration, the UKI in PCR 4, the kernel's command line and initrd in 9,
//! the UKI's sections in 11, overrides in 12). `pcrs = { 4 = "<hex>", … }` pins any of them in
//! the SHA-256 bank (the bank the quote covers); so does the reference file's `pcrs.sha256`
//! (`cvmctl measure`), for these PCRs only (its PCR 8 and 15 are what the init-data digest and
//! the reference log already check). The policy's pins extend the reference's; a PCR pinned in
//! both to different values is refused at load, naming both.
//!
//! `tee` lists the primary evidence kinds; `additional_tee` the kinds accepted as additional
//! evidence beside a primary (`snp`, `tdx`: the hardware report next to a cloud vTPM), each
//! with the same launch pins; `require_additional` makes a `tpm` primary without verified
//! additional evidence of one of its kinds a refusal (on GCP and AWS the same image boots as an
//! ordinary VM with a vTPM). `pcrs` and `reference` are refused, not skipped, for evidence that
//! cannot be held to them (`pcrs`: the vTPM kinds only; `reference`: those and `tdx`), at load
//! when `tee` allows no kind that can. `ak_trust = "certified"` trusts only AKs an `ak_ca` CA certified.

use std::collections::BTreeMap;

use cvm_measure::{EventLog, Pcrs};
use cvm_tee::snp::MinTcb;
use cvm_tpm::HashAlg;
use kbs_types::Tee;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Largest policy or reference file read.
const MAX_FILE: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is larger than {MAX_FILE} bytes")]
    TooLarge { path: PathBuf },
    #[error("policy: {0}")]
    Syntax(String),
    #[error("policy: unknown TEE type {0:?}")]
    UnknownTee(String),
    #[error("policy: {field} is not lower-case hex of {len} bytes")]
    Hex { field: &'static str, len: usize },
    #[error("policy: reference {path}: {why}")]
    Reference { path: PathBuf, why: String },
    #[error("policy: tdx_rtmr has key {0:?}; RTMRs are 0, 1, 2 and 3")]
    RtmrIndex(String),
    #[error(
        "policy: pcrs has key {0:?}; the boot PCRs that can be pinned are 0-7, 9, 11 and 12 \
         (PCR 8 is the init-data binding, PCR 15 the agent's log: see initdata_digest and \
         reference)"
    )]
    PcrIndex(String),
    #[error("policy: PCR {pcr} is pinned to {policy} but the reference {path} has {reference}")]
    PinConflict {
        pcr: u32,
        policy: String,
        reference: String,
        path: PathBuf,
    },
    #[error("policy: ak_ca {path}: {why}")]
    AkCa { path: PathBuf, why: String },
    #[error("policy: {tee} is allowed but {field} is not pinned: {why}")]
    Unpinned {
        tee: &'static str,
        field: &'static str,
        why: &'static str,
    },
    #[error(
        "policy: additional_tee has {0:?}; only \"snp\" and \"tdx\" (the hardware report beside a \
         cloud vTPM) can be additional evidence"
    )]
    NotAdditional(String),
    #[error("policy: require_additional has {0:?}, which additional_tee does not allow")]
    RequiredNotAllowed(String),
    #[error(
        "policy: require_additional applies to tpm primaries, and tee does not allow tpm: it \
         would require nothing"
    )]
    RequireWithoutTpm,
    #[error(
        "policy: ak_trust is {0:?}; it is \"listed-or-certified\" (the default) or \"certified\""
    )]
    AkTrust(String),
    #[error("policy: ak_trust = \"certified\" needs ak_ca (the CA that certifies the AKs)")]
    CertifiedWithoutCa,
    #[error(
        "policy: {field} is pinned, but no TEE in tee can produce it ({why}): every \
         attestation would be refused"
    )]
    Unsatisfiable {
        field: &'static str,
        why: &'static str,
    },
}

/// The kinds whose evidence is a vTPM quote of PCRs (with the agent's log for PCR 15).
pub const VTPM_KINDS: [Tee; 3] = [Tee::Tpm, Tee::AzSnpVtpm, Tee::AzTdxVtpm];

/// SNP MEASUREMENT, TDX MRTD and RTMRs are SHA-384 sized.
pub const LAUNCH_DIGEST_LEN: usize = 48;

/// The PCRs a UEFI boot measures the boot chain into, in the order they are replayed and
/// compared: what `pcrs` may pin and what a firmware log must explain.
pub const BOOT_PCRS: [u32; 11] = [0, 1, 2, 3, 4, 5, 6, 7, 9, 11, 12];

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Wire {
    tee: Option<Vec<String>>,
    allow_debug: Option<bool>,
    roothash: Option<String>,
    image_version: Option<String>,
    initdata_digest: Option<String>,
    require_initdata: Option<bool>,
    trusted_aks: Option<Vec<String>>,
    /// Removed; read only to refuse it with a clear message.
    trust_on_first_use: Option<bool>,
    reference: Option<PathBuf>,
    snp_measurement: Option<String>,
    tdx_mrtd: Option<String>,
    tdx_rtmr: Option<BTreeMap<String, String>>,
    pcrs: Option<BTreeMap<String, String>>,
    ak_ca: Option<PathBuf>,
    az_snp_measurement: Option<Vec<String>>,
    az_tdx_mrtd: Option<Vec<String>>,
    az_tdx_rtmr: Option<BTreeMap<String, Vec<String>>>,
    snp_min_tcb: Option<WireMinTcb>,
    snp_allow_migrate_ma: Option<bool>,
    tdx_allow_migratable: Option<bool>,
    ak_trust: Option<String>,
    additional_tee: Option<Vec<String>>,
    require_additional: Option<Vec<String>>,
}

/// `snp_min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }`; a missing
/// component has no floor.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WireMinTcb {
    #[serde(default)]
    bootloader: u8,
    #[serde(default)]
    tee: u8,
    #[serde(default)]
    snp: u8,
    #[serde(default)]
    microcode: u8,
    #[serde(default)]
    fmc: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub tee: Vec<Tee>,
    pub allow_debug: bool,
    /// Lower-case hex.
    pub roothash: Option<String>,
    pub image_version: Option<String>,
    /// Lower-case hex.
    pub initdata_digest: Option<String>,
    pub require_initdata: bool,
    /// SHA-256 of AK SPKI DER, lower-case hex.
    pub trusted_aks: Vec<String>,
    /// The reference event log (`log` of a `cvmctl measure` output).
    pub reference: Option<EventLog>,
    /// SHA-256 values of boot PCRs ([`BOOT_PCRS`]) the quote must have, lower-case hex: the
    /// policy's `pcrs` and the reference's `pcrs.sha256`.
    pub pcrs: BTreeMap<u32, String>,
    /// SNP launch MEASUREMENT, lower-case hex of 48 bytes.
    pub snp_measurement: Option<String>,
    /// TDX MRTD, lower-case hex of 48 bytes.
    pub tdx_mrtd: Option<String>,
    /// TDX RTMR0-3 as quoted at attestation, lower-case hex of 48 bytes each; `None`: any.
    pub tdx_rtmr: [Option<String>; 4],
    /// DER certificates of the CAs that issue AK certificates (GCP's AK CA): a `tpm` AK with
    /// an `ak_cert` one of them signed, for that very key, is trusted like a listed one.
    /// From the PEM file `ak_ca` (relative to the policy file).
    pub ak_ca: Vec<Vec<u8>>,
    /// The SNP launch MEASUREMENTs (of Azure's paravisor and firmware) an `az-snp-vtpm` HCL
    /// report may carry, lower-case hex of 48 bytes; one of them must match.
    pub az_snp_measurement: Vec<String>,
    /// The MRTDs an `az-tdx-vtpm` TD may have, lower-case hex of 48 bytes.
    pub az_tdx_mrtd: Vec<String>,
    /// Allowed values of the `az-tdx-vtpm` TD's RTMR0-3 (in the HCL report's TDREPORT), lower-
    /// case hex of 48 bytes each; empty: any.
    pub az_tdx_rtmr: [Vec<String>; 4],
    /// Minimum SNP REPORTED_TCB, per component (what the VCEK/VLEK certifies); the default
    /// (all zero) accepts any. Trustee's verifier has no floor: it exports the components as
    /// `reported_tcb_*` claims for its policy.
    pub snp_min_tcb: MinTcb,
    /// Accept SNP guests whose GUEST_POLICY allows a migration agent (MIGRATE_MA, bit 18):
    /// the host's migration agent can then move the guest's state out. Default: refused.
    pub snp_allow_migrate_ma: bool,
    /// Accept TDs with TD_ATTRIBUTES.MIGRATABLE (bit 29): a Migration TD can export the TD's
    /// state. Default: refused.
    pub tdx_allow_migratable: bool,
    /// Which `tpm` AKs are trusted: listed or certified (the default), or certified only.
    pub ak_trust: AkTrust,
    /// The TEEs accepted as additional evidence beside the primary (`snp`, `tdx`); separate
    /// from [`Policy::tee`], which lists the primaries. Default: none.
    pub additional_tee: Vec<Tee>,
    /// A `tpm` primary must come with verified additional evidence of one of these (each also
    /// in `additional_tee`). Default: none required.
    pub require_additional: Vec<Tee>,
}

/// Policy `ak_trust`: which `tpm` AKs [`crate::verify::AkStore`] trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AkTrust {
    /// An AK in `trusted_aks`, or one an `ak_ca` CA certified (`"listed-or-certified"`).
    #[default]
    ListedOrCertified,
    /// Only an AK an `ak_ca` CA certified (`"certified"`): a listed AK without a certificate
    /// (the agent's own AK when GCP's template is missing) is refused.
    Certified,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            tee: vec![Tee::Tpm],
            allow_debug: false,
            roothash: None,
            image_version: None,
            initdata_digest: None,
            require_initdata: true,
            trusted_aks: Vec::new(),
            reference: None,
            pcrs: BTreeMap::new(),
            snp_measurement: None,
            tdx_mrtd: None,
            tdx_rtmr: [None, None, None, None],
            ak_ca: Vec::new(),
            az_snp_measurement: Vec::new(),
            az_tdx_mrtd: Vec::new(),
            az_tdx_rtmr: Default::default(),
            snp_min_tcb: MinTcb::default(),
            snp_allow_migrate_ma: false,
            tdx_allow_migratable: false,
            ak_trust: AkTrust::ListedOrCertified,
            additional_tee: Vec::new(),
            require_additional: Vec::new(),
        }
    }
}

/// The TEE names the dev KBS can verify (and so may appear in a policy).
pub fn tee_from_name(name: &str) -> Option<Tee> {
    match name {
        "tpm" => Some(Tee::Tpm),
        "snp" => Some(Tee::Snp),
        "tdx" => Some(Tee::Tdx),
        "az-snp-vtpm" => Some(Tee::AzSnpVtpm),
        "az-tdx-vtpm" => Some(Tee::AzTdxVtpm),
        _ => None,
    }
}

pub fn tee_name(tee: Tee) -> String {
    // kbs-types serializes a Tee to its wire name; a unit variant always serializes.
    serde_json::to_value(tee)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{tee:?}"))
}

fn hex_field(
    field: &'static str,
    value: Option<String>,
    len: usize,
) -> Result<Option<String>, PolicyError> {
    match value {
        None => Ok(None),
        Some(v) => {
            let v = v.to_ascii_lowercase();
            match cvm_text::hex::decode(&v) {
                Some(b) if b.len() == len => Ok(Some(v)),
                _ => Err(PolicyError::Hex { field, len }),
            }
        }
    }
}

pub(crate) fn read_bounded(path: &Path) -> Result<Vec<u8>, PolicyError> {
    use std::io::Read as _;
    let io = |source| PolicyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(PolicyError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

impl Policy {
    /// Reads a policy file; `reference` is relative to the policy file's directory.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = String::from_utf8(read_bounded(path)?)
            .map_err(|_| PolicyError::Syntax("not UTF-8".into()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Policy::parse(&text, base)
    }

    pub fn parse(text: &str, base: &Path) -> Result<Policy, PolicyError> {
        let wire: Wire = toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        if wire.trust_on_first_use.is_some() {
            return Err(PolicyError::Syntax(
                "trust_on_first_use is gone: Trustee trusts only the AKs it lists, so list the \
                 vTPM's AK in trusted_aks (`cvmctl tpm-ak` provisions one and prints its SHA-256)"
                    .into(),
            ));
        }
        let default = Policy::default();
        let tees = |names: Vec<String>| {
            names
                .iter()
                .map(|n| tee_from_name(n).ok_or_else(|| PolicyError::UnknownTee(n.clone())))
                .collect::<Result<Vec<_>, _>>()
        };
        let tee = match wire.tee {
            None => default.tee,
            Some(names) => tees(names)?,
        };
        let additional_tee = tees(wire.additional_tee.unwrap_or_default())?;
        if let Some(&other) = additional_tee
            .iter()
            .find(|t| !matches!(t, Tee::Snp | Tee::Tdx))
        {
            return Err(PolicyError::NotAdditional(tee_name(other)));
        }
        let require_additional = tees(wire.require_additional.unwrap_or_default())?;
        if let Some(&missing) = require_additional
            .iter()
            .find(|t| !additional_tee.contains(t))
        {
            return Err(PolicyError::RequiredNotAllowed(tee_name(missing)));
        }
        if !require_additional.is_empty() && !tee.contains(&Tee::Tpm) {
            return Err(PolicyError::RequireWithoutTpm);
        }
        let ak_trust = match wire.ak_trust.as_deref() {
            None | Some("listed-or-certified") => AkTrust::ListedOrCertified,
            Some("certified") => AkTrust::Certified,
            Some(other) => return Err(PolicyError::AkTrust(other.into())),
        };
        let trusted_aks = wire
            .trusted_aks
            .unwrap_or_default()
            .into_iter()
            .map(|ak| hex_field("trusted_aks", Some(ak), 32).map(Option::unwrap_or_default))
            .collect::<Result<Vec<_>, _>>()?;
        let mut pcrs = BTreeMap::new();
        for (key, value) in wire.pcrs.unwrap_or_default() {
            const FIELDS: [&str; 13] = [
                "pcrs.0", "pcrs.1", "pcrs.2", "pcrs.3", "pcrs.4", "pcrs.5", "pcrs.6", "pcrs.7",
                "pcrs.8", "pcrs.9", "pcrs.10", "pcrs.11", "pcrs.12",
            ];
            let pcr = BOOT_PCRS
                .into_iter()
                .find(|p| p.to_string() == key)
                .ok_or_else(|| PolicyError::PcrIndex(key.clone()))?;
            let value = hex_field(FIELDS[pcr as usize], Some(value), 32)?.unwrap_or_default();
            pcrs.insert(pcr, value);
        }
        let reference = match wire.reference {
            None => None,
            Some(rel) => {
                let path = base.join(rel);
                let (log, pinned) = load_reference(&path)?;
                for (pcr, reference) in pinned {
                    match pcrs.get(&pcr) {
                        Some(policy) if *policy != reference => {
                            return Err(PolicyError::PinConflict {
                                pcr,
                                policy: policy.clone(),
                                reference,
                                path,
                            });
                        }
                        _ => {
                            pcrs.insert(pcr, reference);
                        }
                    }
                }
                Some(log)
            }
        };
        let mut tdx_rtmr: [Option<String>; 4] = Default::default();
        for (key, value) in wire.tdx_rtmr.unwrap_or_default() {
            const FIELDS: [&str; 4] = ["tdx_rtmr.0", "tdx_rtmr.1", "tdx_rtmr.2", "tdx_rtmr.3"];
            let index = match key.as_str() {
                "0" => 0,
                "1" => 1,
                "2" => 2,
                "3" => 3,
                _ => return Err(PolicyError::RtmrIndex(key)),
            };
            tdx_rtmr[index] = hex_field(FIELDS[index], Some(value), LAUNCH_DIGEST_LEN)?;
        }
        let hex_list = |field: &'static str, values: Option<Vec<String>>| {
            values
                .unwrap_or_default()
                .into_iter()
                .map(|v| {
                    hex_field(field, Some(v), LAUNCH_DIGEST_LEN).map(Option::unwrap_or_default)
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let mut az_tdx_rtmr: [Vec<String>; 4] = Default::default();
        for (key, values) in wire.az_tdx_rtmr.unwrap_or_default() {
            const FIELDS: [&str; 4] = [
                "az_tdx_rtmr.0",
                "az_tdx_rtmr.1",
                "az_tdx_rtmr.2",
                "az_tdx_rtmr.3",
            ];
            let index = match key.as_str() {
                "0" => 0,
                "1" => 1,
                "2" => 2,
                "3" => 3,
                _ => return Err(PolicyError::RtmrIndex(key)),
            };
            az_tdx_rtmr[index] = hex_list(FIELDS[index], Some(values))?;
        }
        let policy = Policy {
            tee,
            allow_debug: wire.allow_debug.unwrap_or(default.allow_debug),
            // A verity root hash is SHA-256 (32 bytes) in every image cvmctl builds.
            roothash: hex_field("roothash", wire.roothash, 32)?,
            image_version: wire.image_version,
            initdata_digest: match wire.initdata_digest {
                // sha256, sha384 or sha512 init-data.
                Some(d) if matches!(d.len(), 64 | 96 | 128) => {
                    hex_field("initdata_digest", Some(d.clone()), d.len() / 2)?
                }
                Some(_) => {
                    return Err(PolicyError::Hex {
                        field: "initdata_digest",
                        len: 32,
                    });
                }
                None => None,
            },
            require_initdata: wire.require_initdata.unwrap_or(default.require_initdata),
            trusted_aks,
            reference,
            pcrs,
            snp_measurement: hex_field("snp_measurement", wire.snp_measurement, LAUNCH_DIGEST_LEN)?,
            tdx_mrtd: hex_field("tdx_mrtd", wire.tdx_mrtd, LAUNCH_DIGEST_LEN)?,
            tdx_rtmr,
            ak_ca: match wire.ak_ca {
                None => Vec::new(),
                Some(rel) => load_ak_ca(&base.join(rel))?,
            },
            az_snp_measurement: hex_list("az_snp_measurement", wire.az_snp_measurement)?,
            az_tdx_mrtd: hex_list("az_tdx_mrtd", wire.az_tdx_mrtd)?,
            az_tdx_rtmr,
            snp_min_tcb: wire.snp_min_tcb.map_or(default.snp_min_tcb, |t| MinTcb {
                bootloader: t.bootloader,
                tee: t.tee,
                snp: t.snp,
                microcode: t.microcode,
                fmc: t.fmc,
            }),
            snp_allow_migrate_ma: wire
                .snp_allow_migrate_ma
                .unwrap_or(default.snp_allow_migrate_ma),
            tdx_allow_migratable: wire
                .tdx_allow_migratable
                .unwrap_or(default.tdx_allow_migratable),
            ak_trust,
            additional_tee,
            require_additional,
        };
        if policy.ak_trust == AkTrust::Certified && policy.ak_ca.is_empty() {
            return Err(PolicyError::CertifiedWithoutCa);
        }
        policy.check_launch_pins()?;
        policy.check_satisfiable()?;
        Ok(policy)
    }

    /// Whether `tee` may be the primary evidence.
    pub fn allows_tee(&self, tee: Tee) -> bool {
        self.tee.contains(&tee)
    }

    /// Whether `tee` may be additional evidence (beside a primary).
    pub fn allows_additional(&self, tee: Tee) -> bool {
        self.additional_tee.contains(&tee)
    }

    /// Pins that no allowed primary kind can produce are refused at load: only the vTPM
    /// kinds (`tpm`, `az-snp-vtpm`, `az-tdx-vtpm`) have PCRs the dev KBS checks, only those
    /// and `tdx` carry the agent's log (see the module docs). A policy that also allows a kind
    /// that can is checked per attestation.
    fn check_satisfiable(&self) -> Result<(), PolicyError> {
        let vtpm = VTPM_KINDS.iter().any(|t| self.allows_tee(*t));
        if !self.pcrs.is_empty() && !vtpm {
            return Err(PolicyError::Unsatisfiable {
                field: "pcrs (or the reference's pcrs)",
                why: "only vTPM evidence (tpm, az-snp-vtpm, az-tdx-vtpm) has boot PCRs",
            });
        }
        if self.reference.is_some() && !vtpm && !self.allows_tee(Tee::Tdx) {
            return Err(PolicyError::Unsatisfiable {
                field: "reference",
                why: "only vTPM and tdx evidence carry the agent's log",
            });
        }
        Ok(())
    }

    /// A policy that allows `snp` or `tdx` (as primary or as additional evidence),
    /// `az-snp-vtpm` or `az-tdx-vtpm` pins what those TEEs launched (see the module docs for
    /// why these fields and not fewer).
    pub fn check_launch_pins(&self) -> Result<(), PolicyError> {
        let allows = |tee| self.allows_tee(tee) || self.allows_additional(tee);
        if allows(Tee::Snp) && self.snp_measurement.is_none() {
            return Err(PolicyError::Unpinned {
                tee: "snp",
                field: "snp_measurement",
                why: "without a vTPM the launch MEASUREMENT is the only record of what \
                      booted (firmware, and with measured direct boot kernel, initrd and \
                      command line), so any image would get the secrets",
            });
        }
        if allows(Tee::Tdx) {
            if self.tdx_mrtd.is_none() {
                return Err(PolicyError::Unpinned {
                    tee: "tdx",
                    field: "tdx_mrtd",
                    why: "MRTD is the TD firmware; any firmware could measure anything",
                });
            }
            if self.tdx_rtmr[1].is_none() {
                return Err(PolicyError::Unpinned {
                    tee: "tdx",
                    field: "tdx_rtmr.1",
                    why: "RTMR1 holds the kernel (or UKI) the firmware loaded; MRTD alone \
                          lets any kernel and initrd run and write any event log",
                });
            }
        }
        if self.allows_tee(Tee::AzSnpVtpm) && self.az_snp_measurement.is_empty() {
            return Err(PolicyError::Unpinned {
                tee: "az-snp-vtpm",
                field: "az_snp_measurement",
                why: "the MEASUREMENT is the paravisor that writes the HCL report and runs the \
                      vTPM; without it whoever controls VMPL0 of any SNP guest can wrap their \
                      own AK in a genuine report and quote any PCRs",
            });
        }
        if self.allows_tee(Tee::AzTdxVtpm) && self.az_tdx_mrtd.is_empty() {
            return Err(PolicyError::Unpinned {
                tee: "az-tdx-vtpm",
                field: "az_tdx_mrtd",
                why: "MRTD is the paravisor that writes the HCL report and runs the vTPM; \
                      without it any TD can wrap its own AK in a genuine report and quote any \
                      PCRs",
            });
        }
        Ok(())
    }
}

/// The `log` of a `cvmctl measure` output (or a bare log array), and the SHA-256 values of its
/// `pcrs` for the boot PCRs ([`BOOT_PCRS`]; its other PCRs are the agent's, checked through
/// the log and the init-data).
/// The CA certificates of a PEM file: at least one, each a certificate with a usable key.
fn load_ak_ca(path: &Path) -> Result<Vec<Vec<u8>>, PolicyError> {
    let bad = |why: String| PolicyError::AkCa {
        path: path.to_path_buf(),
        why,
    };
    let certs =
        cvm_tee::x509::pem_certificates(&read_bounded(path)?).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block".into()));
    }
    for der in &certs {
        cvm_tee::x509::Cert::from_der(der).map_err(|e| bad(e.to_string()))?;
    }
    Ok(certs)
}

fn load_reference(path: &Path) -> Result<(EventLog, BTreeMap<u32, String>), PolicyError> {
    let bad = |why: String| PolicyError::Reference {
        path: path.to_path_buf(),
        why,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&read_bounded(path)?).map_err(|e| bad(e.to_string()))?;
    let log = match value.get("log") {
        Some(log) => log,
        None => &value,
    };
    let log = EventLog::from_json(log).map_err(|e| bad(e.to_string()))?;
    log.verify().map_err(|e| bad(e.to_string()))?;
    let mut pins = BTreeMap::new();
    if let Some(pcrs) = value.get("pcrs") {
        let pcrs = Pcrs::from_json(pcrs).map_err(|e| bad(format!("pcrs: {e}")))?;
        for (alg, pcr, digest) in pcrs.iter() {
            if alg == HashAlg::Sha256 && BOOT_PCRS.contains(&pcr) {
                pins.insert(pcr, cvm_text::hex::encode(digest));
            }
        }
    }
    Ok((log, pins))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_refuse() {
        let p = Policy::parse("", Path::new(".")).unwrap();
        assert_eq!(p, Policy::default());
        assert_eq!(p.tee, vec![Tee::Tpm]);
        assert!(!p.allow_debug && p.require_initdata);
        assert!(p.trusted_aks.is_empty());
    }

    #[test]
    fn full_policy() {
        let text = format!(
            "tee = [\"tpm\", \"snp\", \"az-tdx-vtpm\"]\nallow_debug = true\nroothash = \"{}\"\n\
             image_version = \"cvm-demo 1\"\ninitdata_digest = \"{}\"\nrequire_initdata = false\n\
             trusted_aks = [\"{}\"]\nsnp_measurement = \"{}\"\naz_tdx_mrtd = [\"{}\"]\n",
            "AB".repeat(32),
            "cd".repeat(48),
            "01".repeat(32),
            "ef".repeat(48),
            AZ_TDX_MRTD,
        );
        let p = Policy::parse(&text, Path::new(".")).unwrap();
        assert_eq!(p.tee, vec![Tee::Tpm, Tee::Snp, Tee::AzTdxVtpm]);
        assert!(p.allow_debug && !p.require_initdata);
        assert_eq!(p.roothash.as_deref(), Some("ab".repeat(32).as_str()));
        assert_eq!(p.initdata_digest.as_deref(), Some("cd".repeat(48).as_str()));
        assert_eq!(p.trusted_aks, vec!["01".repeat(32)]);
        assert!(p.allows_tee(Tee::Snp) && !p.allows_tee(Tee::Tdx));
    }

    #[test]
    fn rejects_bad_policies() {
        for bad in [
            "unknown = 1",
            "tee = [\"sgx\"]",
            "tee = \"tpm\"",
            "allow_debug = \"yes\"",
            "roothash = \"zz\"",
            "roothash = \"abcd\"",
            "initdata_digest = \"00\"",
            "trusted_aks = [\"00\"]",
            "trust_on_first_use = true",
            "trust_on_first_use = false",
            "reference = \"/nonexistent/reference.json\"",
        ] {
            assert!(Policy::parse(bad, Path::new(".")).is_err(), "{bad}");
        }
    }

    /// The launch identities of the real Azure fixtures' paravisors (tests/fixtures/az-*-vtpm,
    /// see their PROVENANCE.md): the MEASUREMENT of the SNP report in
    /// `az-snp-vtpm/evidence-v2.json`'s HCL report and the MRTD of the TDREPORT in
    /// `az-tdx-vtpm/evidence-v1.json`'s.
    const AZ_SNP_MEASUREMENT: &str = "5b0ce64ad1c1f6375dbda5f760b98526ca1bcf91b8195091afc28e7b024251d68fe32e05af34048d6607678cd23283ff";
    const AZ_TDX_MRTD: &str = "024a32b070383331181619fa387cb4d55d1e38879f989933055ccad5bc2db795d1737b66205949d15469dc8c1ba7ab7b";

    /// The Azure kinds need their paravisor's launch identity pinned; lists of values, any of
    /// which may match; RTMR pins optional.
    #[test]
    fn azure_policies_must_pin_the_paravisor() {
        let err = Policy::parse("tee = [\"az-snp-vtpm\"]", Path::new(".")).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "policy: az-snp-vtpm is allowed but az_snp_measurement is not pinned: "
            ),
            "{err}"
        );
        let err = Policy::parse(
            "tee = [\"az-tdx-vtpm\"]\naz_tdx_mrtd = []\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("policy: az-tdx-vtpm is allowed but az_tdx_mrtd is not pinned: "),
            "{err}"
        );
        // An SNP pin does not make a TDX policy, nor the other way round.
        let err = Policy::parse(
            &format!("tee = [\"az-snp-vtpm\", \"az-tdx-vtpm\"]\naz_snp_measurement = [\"{AZ_SNP_MEASUREMENT}\"]\n"),
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("az_tdx_mrtd is not pinned"),
            "{err}"
        );
        let other = "11".repeat(48);
        let text = format!(
            "tee = [\"az-snp-vtpm\", \"az-tdx-vtpm\"]\n\
             az_snp_measurement = [\"{}\", \"{other}\"]\naz_tdx_mrtd = [\"{AZ_TDX_MRTD}\"]\n\
             az_tdx_rtmr = {{ 0 = [\"{other}\"] }}\n",
            AZ_SNP_MEASUREMENT.to_uppercase()
        );
        let p = Policy::parse(&text, Path::new(".")).unwrap();
        assert_eq!(
            p.az_snp_measurement,
            vec![AZ_SNP_MEASUREMENT.to_string(), other.clone()]
        );
        assert_eq!(p.az_tdx_mrtd, vec![AZ_TDX_MRTD.to_string()]);
        assert_eq!(p.az_tdx_rtmr, [vec![other.clone()], vec![], vec![], vec![]]);
        for bad in [
            "az_snp_measurement = \"abcd\"".to_string(),
            "az_snp_measurement = [\"abcd\"]".to_string(),
            format!("az_tdx_mrtd = [\"{}\"]", "ab".repeat(32)),
            format!("az_tdx_rtmr = {{ 4 = [\"{other}\"] }}"),
            format!("az_tdx_rtmr = {{ 1 = \"{other}\" }}"),
        ] {
            assert!(Policy::parse(&bad, Path::new(".")).is_err(), "{bad}");
        }
    }

    #[test]
    fn snp_and_tdx_policies_must_pin_the_launch() {
        let m = "AA".repeat(48);
        let r1 = "bb".repeat(48);
        let text = format!(
            "tee = [\"snp\", \"tdx\"]\nsnp_measurement = \"{m}\"\ntdx_mrtd = \"{m}\"\n\
             tdx_rtmr = {{ 1 = \"{r1}\", 3 = \"{r1}\" }}\n"
        );
        let p = Policy::parse(&text, Path::new(".")).unwrap();
        assert_eq!(p.snp_measurement.as_deref(), Some("aa".repeat(48).as_str()));
        assert_eq!(p.tdx_mrtd.as_deref(), Some("aa".repeat(48).as_str()));
        assert_eq!(p.tdx_rtmr, [None, Some(r1.clone()), None, Some(r1.clone())]);

        let err = Policy::parse("tee = [\"snp\"]", Path::new(".")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("policy: snp is allowed but snp_measurement is not pinned: "),
            "{err}"
        );
        let err = Policy::parse("tee = [\"tdx\"]", Path::new(".")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("policy: tdx is allowed but tdx_mrtd is not pinned: "),
            "{err}"
        );
        let err = Policy::parse(
            &format!("tee = [\"tdx\"]\ntdx_mrtd = \"{m}\"\n"),
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("policy: tdx is allowed but tdx_rtmr.1 is not pinned: "),
            "{err}"
        );
        // Pins for a TEE the policy does not allow are harmless.
        Policy::parse(&format!("snp_measurement = \"{m}\""), Path::new(".")).unwrap();
        for bad in [
            "snp_measurement = \"abcd\"".to_string(),
            format!("snp_measurement = \"{}\"", "ab".repeat(32)),
            format!("tdx_mrtd = \"{}zz\"", "ab".repeat(47)),
            format!("tdx_rtmr = {{ 4 = \"{r1}\" }}"),
            format!("tdx_rtmr = {{ 01 = \"{r1}\" }}"),
            "tdx_rtmr = { 2 = \"00\" }".to_string(),
            format!("tdx_rtmr = [\"{r1}\"]"),
        ] {
            assert!(Policy::parse(&bad, Path::new(".")).is_err(), "{bad}");
        }
        let err =
            Policy::parse(&format!("tdx_rtmr = {{ 4 = \"{r1}\" }}"), Path::new(".")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy: tdx_rtmr has key \"4\"; RTMRs are 0, 1, 2 and 3"
        );
    }

    /// `tee` lists primaries, `additional_tee` additional evidence (snp, tdx only, pinned as
    /// for a primary); `require_additional` must be allowed additional kinds and needs `tpm`.
    #[test]
    fn additional_evidence_fields() {
        let m = "aa".repeat(48);
        let p = Policy::parse(
            &format!(
                "additional_tee = [\"snp\"]\nrequire_additional = [\"snp\"]\n\
                 snp_measurement = \"{m}\"\n"
            ),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(p.tee, vec![Tee::Tpm]);
        assert!(!p.allows_tee(Tee::Snp) && p.allows_additional(Tee::Snp));
        assert_eq!(p.require_additional, vec![Tee::Snp]);
        // Additional snp/tdx need their launch pins too.
        for (tee, field) in [("snp", "snp_measurement"), ("tdx", "tdx_mrtd")] {
            let text = format!("additional_tee = [\"{tee}\"]");
            let err = Policy::parse(&text, Path::new("."))
                .unwrap_err()
                .to_string();
            let want = format!("policy: {tee} is allowed but {field} is not pinned: ");
            assert!(err.starts_with(&want), "{err}");
        }
        for (bad, want) in [
            (
                "additional_tee = [\"tpm\"]".to_string(),
                "policy: additional_tee has \"tpm\"; only \"snp\" and \"tdx\"",
            ),
            (
                "additional_tee = [\"az-snp-vtpm\"]".to_string(),
                "policy: additional_tee has \"az-snp-vtpm\"",
            ),
            (
                "additional_tee = [\"sgx\"]".to_string(),
                "policy: unknown TEE type",
            ),
            (
                format!(
                    "tee = [\"tpm\", \"snp\"]\nrequire_additional = [\"snp\"]\nsnp_measurement = \"{m}\""
                ),
                "policy: require_additional has \"snp\", which additional_tee does not allow",
            ),
            (
                format!(
                    "tee = [\"snp\"]\nadditional_tee = [\"snp\"]\nrequire_additional = [\"snp\"]\n\
                     snp_measurement = \"{m}\""
                ),
                "policy: require_additional applies to tpm primaries",
            ),
        ] {
            let err = Policy::parse(&bad, Path::new(".")).unwrap_err();
            assert!(err.to_string().starts_with(want), "{bad}: {err}");
        }
    }

    #[test]
    fn ak_trust() {
        assert_eq!(
            Policy::parse("", Path::new(".")).unwrap().ak_trust,
            AkTrust::ListedOrCertified
        );
        assert_eq!(
            Policy::parse("ak_trust = \"listed-or-certified\"", Path::new("."))
                .unwrap()
                .ak_trust,
            AkTrust::ListedOrCertified
        );
        let err = Policy::parse("ak_trust = \"certified\"", Path::new(".")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy: ak_trust = \"certified\" needs ak_ca (the CA that certifies the AKs)"
        );
        let err = Policy::parse("ak_trust = \"listed\"", Path::new(".")).unwrap_err();
        assert!(matches!(err, PolicyError::AkTrust(_)), "{err}");
    }

    /// Pins no allowed primary can produce are refused at load.
    #[test]
    fn unsatisfiable_pins_are_refused_at_load() {
        let m = "aa".repeat(48);
        let pcr = format!("pcrs = {{ 4 = \"{}\" }}\n", "ab".repeat(32));
        let snp_only = format!("tee = [\"snp\"]\nsnp_measurement = \"{m}\"\n");
        let err = Policy::parse(&format!("{snp_only}{pcr}"), Path::new(".")).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "policy: pcrs (or the reference's pcrs) is pinned, but no TEE in tee can \
                 produce it (only vTPM evidence"
            ),
            "{err}"
        );
        let tdx_only =
            format!("tee = [\"tdx\"]\ntdx_mrtd = \"{m}\"\ntdx_rtmr = {{ 1 = \"{m}\" }}\n");
        assert!(Policy::parse(&format!("{tdx_only}{pcr}"), Path::new(".")).is_err());
        Policy::parse(
            &format!("tee = [\"tpm\", \"snp\"]\nsnp_measurement = \"{m}\"\n{pcr}"),
            Path::new("."),
        )
        .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let prediction =
            cvm_measure::predict(&cvm_measure::Facts::default(), &[HashAlg::Sha256]).unwrap();
        std::fs::write(
            dir.path().join("ref.json"),
            serde_json::to_vec(&prediction).unwrap(),
        )
        .unwrap();
        let with_ref =
            |tees: &str| Policy::parse(&format!("{tees}reference = \"ref.json\"\n"), dir.path());
        let err = with_ref(&snp_only).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("policy: reference is pinned, but no TEE in tee can produce it"),
            "{err}"
        );
        with_ref(&tdx_only).unwrap();
        with_ref("").unwrap();
    }

    #[test]
    fn pcr_pins() {
        let a = "AB".repeat(32);
        let p = Policy::parse(
            &format!(
                "pcrs = {{ 4 = \"{a}\", 0 = \"{}\", 12 = \"{}\" }}",
                "01".repeat(32),
                "00".repeat(32)
            ),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            p.pcrs,
            BTreeMap::from([
                (0, "01".repeat(32)),
                (4, "ab".repeat(32)),
                (12, "00".repeat(32))
            ])
        );
        for key in ["8", "15", "10", "13", "24", "04", "x", "-1"] {
            let err = Policy::parse(&format!("pcrs = {{ \"{key}\" = \"{a}\" }}"), Path::new("."))
                .unwrap_err();
            assert!(
                matches!(&err, PolicyError::PcrIndex(k) if k == key),
                "{key}: {err}"
            );
        }
        for bad in [
            "pcrs = { 4 = \"abcd\" }".to_string(),
            format!("pcrs = {{ 4 = \"{}\" }}", "ab".repeat(48)),
            format!("pcrs = [\"{a}\"]"),
        ] {
            assert!(Policy::parse(&bad, Path::new(".")).is_err(), "{bad}");
        }
        let err = Policy::parse("pcrs = { 9 = \"zz\" }", Path::new(".")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy: pcrs.9 is not lower-case hex of 32 bytes"
        );
    }

    /// A reference with boot PCRs (as `cvmctl measure` will write them, every bank): its
    /// SHA-256 values of 0-7, 9, 11, 12 become pins, PCR 8 and 15 (and the other banks) do not;
    /// the policy's pins extend them, the same value twice is fine, a different one is refused.
    #[test]
    fn reference_pcrs_and_policy_pins() {
        let dir = tempfile::tempdir().unwrap();
        let prediction =
            cvm_measure::predict(&cvm_measure::Facts::default(), &[HashAlg::Sha256]).unwrap();
        let mut pcrs = prediction.pcrs.clone();
        for (pcr, byte) in [(4u32, 4u8), (9, 9), (11, 11), (12, 0)] {
            pcrs.insert(HashAlg::Sha256, pcr, vec![byte; 32]);
            pcrs.insert(HashAlg::Sha1, pcr, vec![0xee; 20]);
            pcrs.insert(HashAlg::Sha384, pcr, vec![0xee; 48]);
        }
        let reference =
            serde_json::json!({"pcrs": pcrs.to_json(), "log": prediction.log.to_json()});
        std::fs::write(dir.path().join("ref.json"), reference.to_string()).unwrap();
        let load = |policy: &str| {
            std::fs::write(
                dir.path().join("policy.toml"),
                format!("reference = \"ref.json\"\n{policy}"),
            )
            .unwrap();
            Policy::load(&dir.path().join("policy.toml"))
        };
        let p = load("").unwrap();
        assert_eq!(
            p.pcrs,
            BTreeMap::from([
                (4, "04".repeat(32)),
                (9, "09".repeat(32)),
                (11, "0b".repeat(32)),
                (12, "00".repeat(32))
            ])
        );
        assert_eq!(p.reference, Some(prediction.log.clone()));
        let p = load(&format!(
            "pcrs = {{ 4 = \"{}\", 7 = \"{}\" }}",
            "04".repeat(32),
            "07".repeat(32)
        ))
        .unwrap();
        assert_eq!(p.pcrs.len(), 5);
        assert_eq!(p.pcrs[&7], "07".repeat(32));
        let err = load(&format!("pcrs = {{ 11 = \"{}\" }}", "AA".repeat(32))).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "policy: PCR 11 is pinned to {} but the reference {} has {}",
                "aa".repeat(32),
                dir.path().join("ref.json").display(),
                "0b".repeat(32)
            )
        );
        // A malformed pcrs object in the reference is refused, not skipped.
        let mut bad = reference.clone();
        bad["pcrs"]["sha256"]["4"] = serde_json::json!("00");
        std::fs::write(dir.path().join("ref.json"), bad.to_string()).unwrap();
        let err = load("").unwrap_err();
        assert!(err.to_string().contains(": pcrs: "), "{err}");
    }

    #[test]
    fn reference_is_relative_to_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        let prediction =
            cvm_measure::predict(&cvm_measure::Facts::default(), &[cvm_tpm::HashAlg::Sha256])
                .unwrap();
        std::fs::write(
            dir.path().join("ref.json"),
            serde_json::to_vec(&prediction).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("policy.toml"), "reference = \"ref.json\"\n").unwrap();
        let p = Policy::load(&dir.path().join("policy.toml")).unwrap();
        assert_eq!(p.reference, Some(prediction.log));
    }

    #[test]
    fn tee_floors() {
        let p = Policy::parse("", Path::new(".")).unwrap();
        assert_eq!(p.snp_min_tcb, MinTcb::default());
        assert!(!p.snp_allow_migrate_ma && !p.tdx_allow_migratable);
        let p = Policy::parse(
            "snp_min_tcb = { bootloader = 3, snp = 8, microcode = 115 }\n\
             snp_allow_migrate_ma = true\ntdx_allow_migratable = true\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            p.snp_min_tcb,
            MinTcb {
                bootloader: 3,
                tee: 0,
                snp: 8,
                microcode: 115,
                fmc: 0
            }
        );
        assert!(p.snp_allow_migrate_ma && p.tdx_allow_migratable);
        for bad in [
            "snp_min_tcb = { ucode = 1 }",
            "snp_min_tcb = { snp = 256 }",
            "snp_min_tcb = { snp = -1 }",
        ] {
            assert!(Policy::parse(bad, Path::new(".")).is_err(), "{bad}");
        }
    }
}
