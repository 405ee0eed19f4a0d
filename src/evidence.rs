//! Stage 7's input: which TEE this is, and its evidence in the KBS protocol's JSON form for
//! that TEE type, bound to the KBS's report data.
//!
//! Forms (as the CoCo attesters send them and Trustee's verifiers read them):
//! - `tpm`: `{"ak_public": b64(DER SPKI), "tpm_quote": {"signature": b64(TPMT_SIGNATURE),
//!   "message": b64(TPMS_ATTEST), "pcrs": [hex × 24]}}` — a quote of SHA-256 PCRs 0–23 by the
//!   persistent AK, with the first 32 bytes of the runtime-data digest as qualifying data —
//!   plus `cel_eventlog` (the agent's log) and `eventlog`: b64 of the firmware's TCG log
//!   (`/sys/kernel/security/tpm0/binary_bios_measurements`, read bounded, absent after a
//!   direct kernel boot), so a verifier can replay the boot chain's PCRs 0–7, 9, 11, 12 too
//!   (`tee::tpm` says which Trustee reads it).
//! - `tdx`: `{"quote": b64(DCAP quote), "cc_eventlog": b64(CCEL)}` from configfs-tsm, the
//!   digest zero-padded to 64 bytes in REPORTDATA.
//! - `snp`: `{"attestation_report": b64(report), "cert_chain": b64(auxblob)}` from
//!   configfs-tsm, the digest zero-padded to 64 bytes in REPORT_DATA.
//!
//! Each form's report data is [`protocol::tee_report_data`] of the runtime-data digest: the one
//! rule the agent and the dev KBS share, checked against Trustee's verifiers there.
//!
//! - `az-snp-vtpm` (v2) / `az-tdx-vtpm` (v1): [`azure_evidence`] — the HCL report refreshed
//!   through NV 0x01400002 with the report data, a quote by the AK at 0x81000003, and the VCEK
//!   or TD quote from Azure's host services ([`AzureHost`], implemented by the network code);
//!   plus `cel_eventlog` and `eventlog` as in `tpm` evidence (Trustee's Azure verifiers ignore
//!   members they do not know; the dev KBS replays both).
//!
//! On GCP and AWS a vTPM next to an SNP/TDX device makes `tpm` the primary evidence and the
//! hardware report additional evidence ([`collect_composite`], `tee::detect` says why); on
//! GCP the `tpm` evidence uses Google's certified AK ([`gcp_tpm_evidence`]).
//!
//! The `tpm` form is checked against the real evidence fixture and Trustee's verifier logic
//! (`tee::tpm`); `tdx`/`snp` are produced from the kernel's report but could not be run on
//! hardware here; the Azure forms are tested against swtpm with a paravisor double
//! (`tests/cloud_evidence_swtpm.rs`), the composite form with the SNP fixture
//! (`tests/devkbs_swtpm.rs`).

use crate::kbs::KbsError;
use crate::kbs::protocol;
use crate::measure::eventlog::EventLog;
use crate::tee::detect::{self, Detection, TeeKind};
use crate::tee::tpm::{FIRMWARE_LOG_PATH, MAX_FIRMWARE_LOG, TpmEvidence, TpmQuoteJson};
use crate::tee::tsm;
use crate::tpm::{HashAlg, Tpm, TpmError, Transport};
use base64::Engine as _;
use std::path::{Path, PathBuf};

/// NV index of the Azure CVM's HCL report.
pub const AZURE_HCL_NV_INDEX: u32 = 0x0140_0001;

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("no TEE found ({0})")]
    NoTee(String),
    #[error("{0} evidence needs a vTPM, and there is none")]
    NoTpm(TeeKind),
    #[error("TPM evidence")]
    Tpm(#[source] TpmError),
    #[error("the quote the TPM produced does not verify against its own PCRs")]
    SelfCheck(#[source] crate::tee::tpm::TpmEvidenceError),
    #[error("configfs-tsm report")]
    Tsm(#[source] tsm::TsmError),
    #[error("cannot read the CCEL event log {0}")]
    Ccel(&'static str, #[source] std::io::Error),
    #[error("cannot read the firmware event log {0}")]
    FirmwareLog(PathBuf, #[source] std::io::Error),
    #[error("the firmware event log {0} is larger than {MAX_FIRMWARE_LOG} bytes")]
    FirmwareLogTooLarge(PathBuf),
    #[error("cannot encode the evidence")]
    Json(#[source] serde_json::Error),
    #[error("report data for {0}")]
    ReportData(TeeKind, #[source] KbsError),
    #[error("runtime data for the {0} evidence")]
    RuntimeData(&'static str, #[source] KbsError),
    #[error("{0} cannot be additional evidence (only snp and tdx)")]
    NotAdditional(TeeKind),
    #[error("{0} evidence needs Azure's host services (VCEK, TD quote), which this boot has not")]
    NoAzureHost(TeeKind),
    #[error("Azure HCL report from vTPM NV 0x01400001")]
    Hcl(#[source] crate::tee::azure::AzureError),
    #[error(
        "the HCL report in NV 0x01400001 does not carry the report data written to NV 0x01400002 \
         (user-data {0}): the paravisor did not refresh it"
    )]
    HclStale(String),
    #[error("the HCL report is a {found} report, expected {expected}")]
    HclKind { found: TeeKind, expected: TeeKind },
    #[error("the AK at persistent handle 0x81000003 is not the key the HCL report names")]
    AzureAkMismatch,
    #[error("Azure host service: {0}")]
    AzureHost(String),
    #[error("the GCP AK certificate in NV 0x01c10000 does not parse")]
    AkCert(#[source] crate::tee::x509::CertError),
    #[error(
        "the GCP AK certificate in NV 0x01c10000 names another key than the AK made from the template in NV 0x01c10001"
    )]
    AkCertMismatch,
}

/// Which TEE, and why: Azure's HCL report in the vTPM beats TDX beats SNP beats a plain vTPM.
pub fn detect_platform<T: Transport>(root: &Path, tpm: Option<&mut Tpm<T>>) -> Detection {
    let has_azure_hcl = tpm.is_some_and(|t| t.nv_read_public(AZURE_HCL_NV_INDEX).is_ok());
    detect::detect(root, has_azure_hcl)
}

/// `tpm` evidence: quote PCRs 0–23 (SHA-256) with `report_data` (the `tpm` form: 32 bytes) as
/// qualifying data.
pub fn tpm_evidence<T: Transport>(
    tpm: &mut Tpm<T>,
    report_data: &[u8],
) -> Result<TpmEvidence, EvidenceError> {
    let ak = tpm.attestation_key().map_err(EvidenceError::Tpm)?;
    let (quote, pcrs) = quote_all(tpm, &ak, report_data)?;
    checked_tpm_evidence(&ak, quote, pcrs, None)
}

/// `tpm` evidence of `quote` by `ak` and the PCR values read after it, with `ak_cert`, checked
/// as a verifier would: a PCR extended between the quote and the read would make evidence no
/// verifier accepts; better to find out here, with a clear error.
fn checked_tpm_evidence(
    ak: &crate::tpm::AttestationKey,
    quote: crate::tpm::Quote,
    pcrs: Vec<[u8; 32]>,
    ak_cert: Option<Vec<u8>>,
) -> Result<TpmEvidence, EvidenceError> {
    let evidence = TpmEvidence {
        ak_public: ak.spki_der.clone(),
        tpm_quote: TpmQuoteJson {
            signature: quote.signature_raw,
            message: quote.attest,
            pcrs,
        },
        cel_eventlog: None,
        eventlog: None,
        ak_cert,
    };
    evidence.verify().map_err(EvidenceError::SelfCheck)?;
    Ok(evidence)
}

/// The report data `kind`'s evidence carries for the runtime-data `digest`.
pub fn report_data_for(kind: TeeKind, digest: &[u8]) -> Result<Vec<u8>, EvidenceError> {
    protocol::tee_report_data(kind.kbs_tee(), digest)
        .map_err(|e| EvidenceError::ReportData(kind, e))
}

/// Evidence for `kind` bound to the runtime-data `digest`, as the KBS protocol's JSON value;
/// `tpm`, `tdx` and the Azure kinds carry `eventlog` (the agent's PCR 15 log so far) as
/// `cel_eventlog`; `tpm` and the Azure kinds also the firmware's log as `eventlog`.
pub fn collect<T: Transport>(
    kind: TeeKind,
    root: &Path,
    tpm: Option<&mut Tpm<T>>,
    digest: &[u8],
    eventlog: Option<&EventLog>,
) -> Result<serde_json::Value, EvidenceError> {
    collect_on(
        kind,
        root,
        tpm,
        digest,
        eventlog,
        &mut CloudInputs::default(),
    )
}

/// What the cloud adds to the evidence: GCP's certified AK (used for `tpm` evidence instead
/// of the agent's own, when the platform is GCP) and Azure's host services (VCEK, TD quote),
/// which the network code provides.
#[derive(Default)]
pub struct CloudInputs<'a> {
    pub gcp_ak: bool,
    pub azure: Option<&'a mut dyn AzureHost>,
}

/// [`collect`] with the cloud's inputs.
pub fn collect_on<T: Transport>(
    kind: TeeKind,
    root: &Path,
    tpm: Option<&mut Tpm<T>>,
    digest: &[u8],
    eventlog: Option<&EventLog>,
    cloud: &mut CloudInputs<'_>,
) -> Result<serde_json::Value, EvidenceError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let report_data = report_data_for(kind, digest)?;
    let hw_report_data = || -> Result<[u8; 64], EvidenceError> {
        <[u8; 64]>::try_from(report_data.as_slice()).map_err(|_| {
            EvidenceError::ReportData(
                kind,
                KbsError::BadMessage {
                    what: "report data",
                    why: format!("{} bytes, not 64", report_data.len()),
                },
            )
        })
    };
    match kind {
        TeeKind::Tpm => {
            let tpm = tpm.ok_or(EvidenceError::NoTpm(kind))?;
            let mut ev = if cloud.gcp_ak && has_gcp_ak_template(tpm)? {
                gcp_tpm_evidence(tpm, &report_data)?
            } else {
                if cloud.gcp_ak {
                    // Safe to go on: the KBS decides whether an AK without Google's
                    // certificate is trusted (listed in its policy, or refused).
                    tracing::warn!(
                        "SMBIOS says GCP, but the vTPM has no AK template at NV {:#010x}: quoting with the agent's AK, without a certificate",
                        crate::tpm::GCE_AK_TEMPLATE_NV_INDEX_RSA
                    );
                }
                tpm_evidence(tpm, &report_data)?
            };
            ev.cel_eventlog = eventlog.map(EventLog::to_json);
            ev.eventlog = firmware_log(root)?;
            serde_json::to_value(ev).map_err(EvidenceError::Json)
        }
        TeeKind::Tdx => {
            let report = tsm::tsm_report_in(&tsm_root(root), &hw_report_data()?)
                .map_err(EvidenceError::Tsm)?;
            let ccel = std::fs::read(root.join("sys/firmware/acpi/tables/data/CCEL"))
                .map_err(|e| EvidenceError::Ccel("/sys/firmware/acpi/tables/data/CCEL", e))?;
            Ok(serde_json::json!({
                "quote": b64.encode(&report.outblob),
                "cc_eventlog": b64.encode(ccel),
                // The agent's records, which RTMR2 holds after the CCEL's part: the same
                // member and form as in `tpm` evidence, so a verifier has one reader.
                "cel_eventlog": eventlog.map(EventLog::to_json),
            }))
        }
        TeeKind::Snp => {
            let report = tsm::tsm_report_in(&tsm_root(root), &hw_report_data()?)
                .map_err(EvidenceError::Tsm)?;
            Ok(serde_json::json!({
                "attestation_report": b64.encode(&report.outblob),
                "cert_chain": report.auxblob.as_ref().map(|a| b64.encode(a)),
            }))
        }
        TeeKind::AzSnpVtpm | TeeKind::AzTdxVtpm => {
            let tpm = tpm.ok_or(EvidenceError::NoTpm(kind))?;
            let host = cloud
                .azure
                .as_deref_mut()
                .ok_or(EvidenceError::NoAzureHost(kind))?;
            azure_evidence(kind, tpm, digest, host, eventlog, firmware_log(root)?)
        }
    }
}

/// NV index the guest writes its 64 bytes of report data to; Azure's paravisor then puts a
/// fresh HCL report with them as `user-data` into [`AZURE_HCL_NV_INDEX`].
pub const AZURE_REPORT_DATA_NV_INDEX: u32 = 0x0140_0002;
/// Size of [`AZURE_REPORT_DATA_NV_INDEX`].
pub const AZURE_REPORT_DATA_LEN: u16 = 64;
/// TPMA_NV of [`AZURE_REPORT_DATA_NV_INDEX`] when the guest defines it, as Azure's
/// `az-cvm-vtpm` does: OWNERWRITE | OWNERREAD | PPREAD.
pub const AZURE_REPORT_DATA_NV_ATTRIBUTES: u32 = 0x0000_0002 | 0x0002_0000 | 0x0001_0000;

/// Azure's host services the Azure evidence needs, fetched by the network code: the VCEK
/// (THIM, DER or PEM) for `az-snp-vtpm`, a DCAP quote of a TDREPORT (`/acc/tdquote`) for
/// `az-tdx-vtpm`. Errors are the service's words, for the console.
pub trait AzureHost {
    fn fetch_vcek(&mut self) -> Result<Vec<u8>, String>;
    fn fetch_td_quote(&mut self, td_report: &[u8]) -> Result<Vec<u8>, String>;
}

/// A fresh HCL report carrying `user_data`: the 64 bytes written to NV 0x01400002 (defined
/// first if absent), then NV 0x01400001 read and parsed; a report whose `user-data` is not
/// ours (a paravisor that did not refresh it) is refused.
pub fn azure_hcl_report<T: Transport>(
    tpm: &mut Tpm<T>,
    user_data: &[u8; 64],
) -> Result<(Vec<u8>, crate::tee::azure::HclReport), EvidenceError> {
    use crate::tee::azure::HclReport;
    match tpm.nv_read_public(AZURE_REPORT_DATA_NV_INDEX) {
        Ok(_) => {}
        Err(e) if e.response_base() == Some(crate::tpm::TPM_RC_HANDLE) => tpm
            .nv_define_space(
                AZURE_REPORT_DATA_NV_INDEX,
                AZURE_REPORT_DATA_NV_ATTRIBUTES,
                AZURE_REPORT_DATA_LEN,
            )
            .map_err(EvidenceError::Tpm)?,
        Err(e) => return Err(EvidenceError::Tpm(e)),
    }
    tpm.nv_write(AZURE_REPORT_DATA_NV_INDEX, user_data)
        .map_err(EvidenceError::Tpm)?;
    let raw = tpm
        .nv_read(AZURE_HCL_NV_INDEX)
        .map_err(EvidenceError::Tpm)?;
    let hcl = HclReport::parse(&raw).map_err(EvidenceError::Hcl)?;
    let runtime = hcl.runtime_data().map_err(EvidenceError::Hcl)?;
    if runtime.user_data_bytes().as_deref() != Some(&user_data[..]) {
        let shown = runtime.user_data.unwrap_or_else(|| "absent".into());
        return Err(EvidenceError::HclStale(shown.chars().take(160).collect()));
    }
    let end = (hcl.report_size as usize).min(raw.len());
    Ok((raw[..end].to_vec(), hcl))
}

/// `az-snp-vtpm` (version 2) or `az-tdx-vtpm` (version 1) evidence bound to the runtime-data
/// `digest`, as Trustee's verifiers take it: the HCL report refreshed with the digest
/// (zero-padded to 64) as `user-data`, a quote of SHA-256 PCRs 0–23 by the AK at 0x81000003
/// (which must be the HCL report's `HCLAkPub`) with the digest itself as nonce, and the VCEK or
/// the TD quote of the HCL report's TDREPORT from `host`. Plus, as in `tpm` evidence, the
/// agent's log so far (`cel_eventlog`, for PCR 15 and the claims) and the firmware's TCG log
/// (`eventlog`, already read bounded by [`firmware_log`]): members Trustee ignores.
pub fn azure_evidence<T: Transport>(
    kind: TeeKind,
    tpm: &mut Tpm<T>,
    digest: &[u8],
    host: &mut dyn AzureHost,
    eventlog: Option<&EventLog>,
    firmware: Option<Vec<u8>>,
) -> Result<serde_json::Value, EvidenceError> {
    use crate::tee::azure::{AzSnpVtpmEvidence, AzTdxVtpmEvidence, AzTpmQuote};
    let nonce = report_data_for(kind, digest)?;
    let mut user_data = [0u8; 64];
    let n = nonce.len().min(64);
    user_data[..n].copy_from_slice(&nonce[..n]);
    let (raw, hcl) = azure_hcl_report(tpm, &user_data)?;
    if hcl.tee_kind() != kind {
        return Err(EvidenceError::HclKind {
            found: hcl.tee_kind(),
            expected: kind,
        });
    }
    let named = hcl.ak_pub().map_err(EvidenceError::Hcl)?;
    let ak = tpm
        .persistent_ak(crate::tpm::AZURE_AK_HANDLE)
        .map_err(EvidenceError::Tpm)?;
    if ak.spki_der != named.spki_der {
        return Err(EvidenceError::AzureAkMismatch);
    }
    let (quote, pcrs) = quote_all(tpm, &ak, &nonce)?;
    let tpm_quote = AzTpmQuote {
        signature: quote.signature,
        message: quote.attest,
        pcrs,
    };
    let logs = crate::tee::azure::AgentLogs {
        cel_eventlog: eventlog.map(EventLog::to_json),
        eventlog: firmware,
    };
    let value =
        match kind {
            TeeKind::AzSnpVtpm => {
                let vcek = host.fetch_vcek().map_err(EvidenceError::AzureHost)?;
                serde_json::to_value(AzSnpVtpmEvidence {
                    version: 2,
                    tpm_quote,
                    hcl_report: raw,
                    vcek: der_certificate(vcek)?,
                    logs,
                })
            }
            _ => {
                // The TDREPORT is the first 1024 bytes of the hardware-report area at 0x20.
                let td_report = raw.get(0x20..0x20 + crate::tee::tdx::TD_REPORT_LEN).ok_or(
                    EvidenceError::Hcl(crate::tee::azure::AzureError::Truncated(raw.len())),
                )?;
                let td_quote = host
                    .fetch_td_quote(td_report)
                    .map_err(EvidenceError::AzureHost)?;
                serde_json::to_value(AzTdxVtpmEvidence {
                    version: 1,
                    tpm_quote,
                    hcl_report: raw,
                    td_quote,
                    logs,
                })
            }
        };
    value.map_err(EvidenceError::Json)
}

/// A VCEK as THIM may hand it out (PEM, the VCEK first) in the DER form the evidence carries.
fn der_certificate(cert: Vec<u8>) -> Result<Vec<u8>, EvidenceError> {
    if !cert.starts_with(b"-----BEGIN") {
        return Ok(cert);
    }
    crate::tee::x509::pem_certificates(&cert)
        .map_err(|e| EvidenceError::AzureHost(format!("the VCEK PEM does not parse: {e}")))?
        .into_iter()
        .next()
        .ok_or_else(|| EvidenceError::AzureHost("the VCEK PEM holds no certificate".into()))
}

/// Quote of SHA-256 PCRs 0–23 by `ak` over `nonce`, with the PCR values read after it.
fn quote_all<T: Transport>(
    tpm: &mut Tpm<T>,
    ak: &crate::tpm::AttestationKey,
    nonce: &[u8],
) -> Result<(crate::tpm::Quote, Vec<[u8; 32]>), EvidenceError> {
    let all: Vec<u32> = (0..24).collect();
    let quote = tpm.quote(ak, nonce, &all).map_err(EvidenceError::Tpm)?;
    let values = tpm
        .pcr_read(HashAlg::Sha256, &all)
        .map_err(EvidenceError::Tpm)?;
    let pcrs = values
        .into_iter()
        .map(|(i, v)| {
            <[u8; 32]>::try_from(v.as_slice()).map_err(|_| {
                EvidenceError::Tpm(TpmError::Malformed(format!("PCR {i} is not 32 bytes")))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((quote, pcrs))
}

/// `tpm` evidence with GCP's certified AK instead of the agent's own: the key made from the
/// template in NV 0x01c10001 quotes (then is flushed), and `ak_cert` carries the DER
/// certificate from NV 0x01c10000, which must name that key, so a verifier can chain it to
/// Google's CA instead of trusting the AK on first use. Trustee's `tpm` verifier ignores the
/// member and trusts listed AKs only; the dev KBS checks the chain when given the CA.
/// Whether the vTPM holds GCP's AK template (its absence is the one error that is not a stop).
fn has_gcp_ak_template<T: Transport>(tpm: &mut Tpm<T>) -> Result<bool, EvidenceError> {
    match tpm.nv_read_public(crate::tpm::GCE_AK_TEMPLATE_NV_INDEX_RSA) {
        Ok(_) => Ok(true),
        Err(e) if e.response_base() == Some(crate::tpm::TPM_RC_HANDLE) => Ok(false),
        Err(e) => Err(EvidenceError::Tpm(e)),
    }
}

pub fn gcp_tpm_evidence<T: Transport>(
    tpm: &mut Tpm<T>,
    report_data: &[u8],
) -> Result<TpmEvidence, EvidenceError> {
    let template = tpm
        .nv_read(crate::tpm::GCE_AK_TEMPLATE_NV_INDEX_RSA)
        .map_err(EvidenceError::Tpm)?;
    let cert = tpm
        .nv_read(crate::tpm::GCE_AK_CERT_NV_INDEX_RSA)
        .map_err(EvidenceError::Tpm)?;
    let parsed = crate::tee::x509::Cert::from_der(&cert).map_err(EvidenceError::AkCert)?;
    let ak = tpm
        .ak_from_template(&template)
        .map_err(EvidenceError::Tpm)?;
    let quoted = if parsed.spki_der().ok().as_ref() != Some(&ak.spki_der) {
        Err(EvidenceError::AkCertMismatch)
    } else {
        quote_all(tpm, &ak, report_data)
    };
    let flushed = tpm.flush_context(ak.handle).map_err(EvidenceError::Tpm);
    let (quote, pcrs) = quoted?;
    flushed?;
    checked_tpm_evidence(&ak, quote, pcrs, Some(cert))
}

/// One attestation's evidence: the primary evidence, the `additional_evidence` string (the
/// map TEE → evidence, `""` for none) and the digests each is bound to, for the console.
#[derive(Debug, Clone)]
pub struct Composite {
    pub primary: serde_json::Value,
    pub additional: String,
    /// The runtime-data digest of the primary (with the additional-evidence string).
    pub digest: Vec<u8>,
    /// The digest of `{"nonce", "tee-pubkey"}` the additional evidence carries, if any.
    pub device_digest: Option<Vec<u8>>,
}

/// The evidence for a challenge, composed as guest-components does (`get_composite_evidence`):
/// the `additional` TEE's evidence (snp or tdx) first, bound to the digest of
/// [`protocol::device_runtime_data`]; then the primary `kind`'s evidence, bound to the digest
/// of [`protocol::runtime_data`] with that evidence's map string in it. `hash` is the one the
/// challenge selected.
#[allow(clippy::too_many_arguments)]
pub fn collect_composite<T: Transport>(
    kind: TeeKind,
    additional: Option<TeeKind>,
    root: &Path,
    mut tpm: Option<&mut Tpm<T>>,
    nonce: &str,
    tee_pubkey: &protocol::TeePubKey,
    hash: protocol::RuntimeDataHash,
    eventlog: Option<&EventLog>,
    cloud: &mut CloudInputs<'_>,
) -> Result<Composite, EvidenceError> {
    let (additional, device_digest) = match additional {
        None => (protocol::NO_ADDITIONAL_EVIDENCE.to_string(), None),
        Some(add @ (TeeKind::Snp | TeeKind::Tdx)) => {
            let device = protocol::device_runtime_data(nonce, tee_pubkey);
            let d = protocol::runtime_data_digest(hash, &device)
                .map_err(|e| EvidenceError::RuntimeData("additional", e))?;
            let ev = collect_on(add, root, tpm.as_deref_mut(), &d, eventlog, cloud)?;
            let s = protocol::additional_evidence(&[(add.kbs_tee(), ev)])
                .map_err(|e| EvidenceError::RuntimeData("additional", e))?;
            (s, Some(d))
        }
        Some(other) => return Err(EvidenceError::NotAdditional(other)),
    };
    let rd = protocol::runtime_data(nonce, tee_pubkey, &additional);
    let digest = protocol::runtime_data_digest(hash, &rd)
        .map_err(|e| EvidenceError::RuntimeData("primary", e))?;
    let primary = collect_on(kind, root, tpm, &digest, eventlog, cloud)?;
    Ok(Composite {
        primary,
        additional,
        digest,
        device_digest,
    })
}

/// The firmware's TCG event log under `root`, at most [`MAX_FIRMWARE_LOG`] bytes (a larger one
/// is an error naming the file, never read whole); `None` when there is none (no file: a direct
/// kernel boot or no TPM driver; an empty file: firmware that hands over no log).
pub fn firmware_log(root: &Path) -> Result<Option<Vec<u8>>, EvidenceError> {
    use std::io::Read as _;
    let path = root.join(FIRMWARE_LOG_PATH.trim_start_matches('/'));
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EvidenceError::FirmwareLog(path, e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FIRMWARE_LOG as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| EvidenceError::FirmwareLog(path.clone(), e))?;
    if bytes.len() > MAX_FIRMWARE_LOG {
        return Err(EvidenceError::FirmwareLogTooLarge(path));
    }
    Ok((!bytes.is_empty()).then_some(bytes))
}

/// configfs-tsm's report directory under `root`.
fn tsm_root(root: &Path) -> std::path::PathBuf {
    root.join(tsm::TSM_REPORT_ROOT.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{Event, Measurer};
    use crate::tpm::DeviceTransport;

    /// A fake root with a configfs-tsm entry at its real place under `root` (a provider the
    /// report-data check does not know, so the outblob is opaque) and a CCEL table.
    fn fake_root(outblob: &[u8]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let entry = root.path().join(TSM_ROOT_REL).join(tsm::ENTRY_NAME);
        std::fs::create_dir_all(&entry).unwrap();
        std::fs::write(entry.join("provider"), "fake\n").unwrap();
        std::fs::write(entry.join("generation"), "1\n").unwrap();
        std::fs::write(entry.join("inblob"), "").unwrap();
        std::fs::write(entry.join("outblob"), outblob).unwrap();
        let acpi = root.path().join("sys/firmware/acpi/tables/data");
        std::fs::create_dir_all(&acpi).unwrap();
        std::fs::write(acpi.join("CCEL"), b"ccel").unwrap();
        root
    }

    const TSM_ROOT_REL: &str = "sys/kernel/config/tsm/report";

    #[test]
    fn tdx_and_snp_evidence_come_from_configfs_tsm_and_tdx_carries_the_agent_log() {
        let root = fake_root(b"quote");
        let mut m = Measurer::new(&[HashAlg::Sha256]).unwrap();
        m.record(Event::mode(crate::cmdline::Mode::Production))
            .unwrap();
        let value = collect(
            TeeKind::Tdx,
            root.path(),
            None::<&mut Tpm<DeviceTransport>>,
            &[0; 48],
            Some(m.log()),
        )
        .unwrap();
        assert_eq!(value["quote"], "cXVvdGU=");
        assert_eq!(value["cc_eventlog"], "Y2NlbA==");
        assert_eq!(value["cel_eventlog"], m.log().to_json());
        let value = collect(
            TeeKind::Snp,
            root.path(),
            None::<&mut Tpm<DeviceTransport>>,
            &[0; 48],
            None,
        )
        .unwrap();
        assert_eq!(value["attestation_report"], "cXVvdGU=");
    }

    /// The firmware log: absent file or empty file = no member, the bytes up to the cap, a
    /// larger file an error naming it (read no further than the cap).
    #[test]
    fn firmware_log_is_read_bounded() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(firmware_log(root.path()).unwrap(), None);
        let dir = root.path().join("sys/kernel/security/tpm0");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("binary_bios_measurements");
        std::fs::write(&file, b"").unwrap();
        assert_eq!(firmware_log(root.path()).unwrap(), None);
        let real = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/crates/uki/tests/fixtures/ovmf-boot-option.eventlog.bin"
        ))
        .unwrap();
        std::fs::write(&file, &real).unwrap();
        assert_eq!(firmware_log(root.path()).unwrap(), Some(real));
        std::fs::write(&file, vec![7u8; MAX_FIRMWARE_LOG]).unwrap();
        assert_eq!(
            firmware_log(root.path()).unwrap().map(|l| l.len()),
            Some(MAX_FIRMWARE_LOG)
        );
        std::fs::write(&file, vec![7u8; MAX_FIRMWARE_LOG + 1]).unwrap();
        let err = firmware_log(root.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the firmware event log {} is larger than 1048576 bytes",
                file.display()
            )
        );
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        let err = firmware_log(root.path()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read the firmware event log "),
            "{err}"
        );
    }
}
