//! Evidence verification per TEE, with the parsers and verifiers of [`crate::tee`], and the
//! policy checks on what it establishes. Each refusal is one [`VerifyError`] whose text is the
//! precise reason: it goes to the guest as the KBS error's `detail` and ends up in the guest's
//! console error line.
//!
//! Order per TEE: structure and signatures first (nothing is believed before), then what was
//! launched (SNP MEASUREMENT, TDX MRTD and RTMRs against the policy's pins), then the nonce
//! (report data), then the key / platform trust, then the init-data binding, then claims.
//!
//! `tpm`, after Trustee's checks (AK listed, signature, PCR digest, nonce, PCR 8): the
//! firmware's TCG log, when the evidence has one (`eventlog`), must replay (SHA-256 bank,
//! from the PCRs' reset values) to the quoted PCRs 0–7, 9, 11 and 12, the first that differs
//! named; then the agent's log into PCR 15 and its claims; then the policy's PCR pins
//! ([`Policy::pcrs`]) against the quoted values — with or without a firmware log: the quote is
//! what counts, the log only explains it. A log that does not parse (truncated, oversized,
//! hostile counts) is a refusal like a log that does not replay.
//!
//! `tdx` claims come from the agent's event log (`cel_eventlog`, the same member and form as
//! in `tpm` evidence): RTMR2 holds the firmware's, boot loader's and EFI stub's PCR 8-15
//! events (in the CCEL, `cc_eventlog`), then the agent's PCR 15 events. The log is replayed on
//! top of the CCEL's RTMR2 part and must give the quoted RTMR2; it may hold only the agent's
//! records and no launch separator, and the separator's (constant) digest may not be among
//! the CCEL's RTMR2 events either, so a log taken after launch cannot pass by hiding the
//! separator in the part the verifier does not interpret.

use crate::policy::{AkTrust, BOOT_PCRS, Policy, PolicyError, VTPM_KINDS, tee_name};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cvm_initdata::InitData;
use cvm_kbs_protocol::protocol;
use cvm_measure::rtmr::{self, RTMR_LEN};
use cvm_measure::{EventKind, EventLog, PCR_AGENT};
#[cfg(test)]
use cvm_tee::azure::HclReport;
use cvm_tee::azure::{AzSnpVtpmEvidence, AzTdxVtpmEvidence, AzVerified, HwReport};
use cvm_tee::snp::{self, AttestationReport, CertTableKind, EndorsementKey};
use cvm_tee::tpm::TpmEvidence;
use cvm_tee::{ccel, tdx};
use cvm_text::error_chain as chain;
use cvm_text::hex;
use cvm_tpm::HashAlg;
use kbs_types::Tee;
use serde_json::{Map, Value, json};

/// Largest base64 member of SNP/TDX evidence accepted.
const MAX_B64: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("TEE {0} is not allowed by policy")]
    TeeNotAllowed(String),
    #[error("{0} evidence is not supported by the dev KBS")]
    Unsupported(String),
    #[error("{tee} evidence is malformed: {why}")]
    Malformed { tee: &'static str, why: String },
    #[error("{tee} evidence does not verify: {why}")]
    Signature { tee: &'static str, why: String },
    #[error(
        "{0} does not match the report data of this session's runtime data (wrong nonce or TEE key)"
    )]
    ReportData(&'static str),
    #[error("the AK (sha256 {0}) is not in the policy's trusted_aks")]
    AkNotTrusted(String),
    #[error(
        "the AK (sha256 {0}) comes without an ak_cert, and the policy's ak_trust is \
         \"certified\": only an AK certified by its ak_ca is trusted"
    )]
    AkNotCertified(String),
    #[error("the AK certificate does not make the AK trusted: {0}")]
    AkCert(String),
    #[error(
        "the TPM quote's nonce is {0} bytes: Trustee (v0.16 and later) expects exactly the first \
         32 bytes of the runtime-data digest, not the 64-byte padded form"
    )]
    TpmNonceForm(usize),
    #[error("runtime data: {0}")]
    RuntimeData(String),
    #[error("the policy requires init-data and the request has none")]
    InitDataMissing,
    #[error("init-data: {0}")]
    InitData(String),
    #[error("PCR 8 does not match the init-data digest")]
    Pcr8,
    #[error(
        "PCR 8 is {0}, but the request has no init-data: without init-data the agent leaves \
         PCR 8 all zeros, so something else extended it"
    )]
    Pcr8Unbound(String),
    #[error("{0} does not match the init-data digest")]
    InitDataBinding(&'static str),
    #[error("event log: {0}")]
    EventLog(String),
    #[error("firmware event log (eventlog): {0}")]
    FirmwareLog(String),
    #[error("policy forbids debug mode")]
    Debug,
    #[error("{what} {got:?} is not the policy's {want:?}")]
    Claim {
        what: &'static str,
        got: String,
        want: String,
    },
    #[error("{0} is missing from the evidence and the policy requires it")]
    ClaimMissing(&'static str),
    #[error("{register} is {got}, but the policy pins {want}")]
    Register {
        register: &'static str,
        got: String,
        want: String,
    },
    #[error("PCR {pcr} is {got}, but the policy pins {want}")]
    Pcr { pcr: u32, got: String, want: String },
    #[error("TEE {0} is not allowed as additional evidence by policy (additional_tee)")]
    AdditionalNotAllowed(String),
    #[error(
        "the policy requires additional {0} evidence beside the tpm evidence \
         (require_additional), and the request has none: a vTPM alone does not show a \
         confidential VM"
    )]
    AdditionalMissing(String),
    #[error("the policy pins {field}, which {tee} evidence cannot satisfy: {why}")]
    Unproducible {
        field: &'static str,
        tee: String,
        why: &'static str,
    },
    #[error("additional {tee} evidence: {source}")]
    Additional {
        tee: String,
        #[source]
        source: Box<VerifyError>,
    },
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// What verified evidence establishes.
#[derive(Debug, Clone, Default)]
pub struct Verified {
    pub debug: bool,
    pub mode: Option<String>,
    pub roothash: Option<String>,
    pub image_version: Option<String>,
    /// Hex digest of the bound init-data.
    pub initdata_digest: Option<String>,
    /// Everything for the token.
    pub claims: Map<String, Value>,
    /// The agent's log was replayed and, with a `reference`, held to it.
    pub log_checked: bool,
}

/// The trusted AKs, as Trustee's `tpm` verifier holds them: the policy's list (SHA-256 of
/// each AK's DER SPKI); and, when the policy names AK CAs (`ak_ca`), any AK whose `ak_cert`
/// one of those CAs signed for exactly that key (GCP's certified vTPM AK). The certificate's
/// validity period is not checked (the dev KBS has no trusted clock source to speak of, and
/// GCP's AK certificates outlive the VM).
#[derive(Debug)]
pub struct AkStore {
    listed: Vec<String>,
    cas: Vec<cvm_tee::x509::Cert>,
    trust: AkTrust,
}

impl AkStore {
    pub fn new(policy: &Policy) -> AkStore {
        AkStore {
            listed: policy.trusted_aks.clone(),
            // Parsed at policy load: these parse.
            cas: policy
                .ak_ca
                .iter()
                .filter_map(|der| cvm_tee::x509::Cert::from_der(der).ok())
                .collect(),
            trust: policy.ak_trust,
        }
    }

    pub fn check(&self, ak: &str) -> Result<(), VerifyError> {
        if self.listed.iter().any(|l| l == ak) {
            Ok(())
        } else {
            Err(VerifyError::AkNotTrusted(ak.into()))
        }
    }

    /// Listed, or certified: `cert` (DER) names the AK `spki` and a policy CA signed it. With
    /// `ak_trust = "certified"` only certified.
    pub fn check_with_cert(
        &self,
        ak: &str,
        spki: &[u8],
        cert: Option<&[u8]>,
    ) -> Result<&'static str, VerifyError> {
        if self.trust == AkTrust::ListedOrCertified && self.check(ak).is_ok() {
            return Ok("listed");
        }
        let Some(cert) = cert else {
            return Err(match self.trust {
                AkTrust::Certified => VerifyError::AkNotCertified(ak.into()),
                AkTrust::ListedOrCertified => VerifyError::AkNotTrusted(ak.into()),
            });
        };
        if self.cas.is_empty() {
            return Err(VerifyError::AkCert(
                "the evidence has an ak_cert but the policy names no ak_ca".into(),
            ));
        }
        let leaf =
            cvm_tee::x509::Cert::from_der(cert).map_err(|e| VerifyError::AkCert(chain(&e)))?;
        if leaf.spki_der().ok().as_deref() != Some(spki) {
            return Err(VerifyError::AkCert(format!(
                "the certificate ({}) is for another key than ak_public",
                leaf.subject()
            )));
        }
        let mut last = None;
        for ca in &self.cas {
            match leaf.verify_by(ca) {
                Ok(()) => return Ok("certified"),
                Err(e) => last = Some(chain(&e)),
            }
        }
        Err(VerifyError::AkCert(format!(
            "no ak_ca signed the certificate ({}): {}",
            leaf.subject(),
            last.unwrap_or_default()
        )))
    }
}

/// The parsed `init-data` of the attest request (format already checked by the caller).
pub fn parse_init_data(body: &str) -> Result<InitData, VerifyError> {
    InitData::parse(body.as_bytes()).map_err(|e| VerifyError::InitData(chain(&e)))
}

/// Verifies `evidence` of `tee` against the runtime-data `digest` (in the form each TEE's
/// verifier compares, [`protocol::tee_report_data`]) and the policy.
pub fn verify(
    tee: Tee,
    evidence: &Value,
    digest: &[u8],
    init_data: Option<&InitData>,
    policy: &Policy,
    aks: &AkStore,
) -> Result<Verified, VerifyError> {
    if !policy.allows_tee(tee) {
        return Err(VerifyError::TeeNotAllowed(tee_name(tee)));
    }
    if init_data.is_none() && policy.require_initdata {
        return Err(VerifyError::InitDataMissing);
    }
    let report_data =
        protocol::tee_report_data(tee, digest).map_err(|e| VerifyError::RuntimeData(chain(&e)))?;
    let report_data = report_data.as_slice();
    let mut v = match tee {
        Tee::Tpm => verify_tpm(evidence, report_data, init_data, policy, aks)?,
        Tee::Snp => verify_snp(evidence, report_data, init_data, policy)?,
        Tee::Tdx => verify_tdx(evidence, report_data, init_data, policy, true)?,
        Tee::AzSnpVtpm => {
            let ev = AzSnpVtpmEvidence::from_json(evidence.to_string().as_bytes())
                .map_err(|e| malformed("az-snp-vtpm", &e))?;
            let verified = ev.verify().map_err(|e| signature("az-snp-vtpm", &e))?;
            let extras = AzExtras {
                version: ev.version,
                cel_eventlog: ev.logs.cel_eventlog.as_ref(),
                eventlog: ev.logs.eventlog.as_deref(),
            };
            verify_azure(
                "az-snp-vtpm",
                &verified,
                extras,
                report_data,
                init_data,
                policy,
            )?
        }
        Tee::AzTdxVtpm => {
            let ev = AzTdxVtpmEvidence::from_json(evidence.to_string().as_bytes())
                .map_err(|e| malformed("az-tdx-vtpm", &e))?;
            let verified = ev.verify().map_err(|e| signature("az-tdx-vtpm", &e))?;
            let extras = AzExtras {
                version: ev.version,
                cel_eventlog: ev.logs.cel_eventlog.as_ref(),
                eventlog: ev.logs.eventlog.as_deref(),
            };
            verify_azure(
                "az-tdx-vtpm",
                &verified,
                extras,
                report_data,
                init_data,
                policy,
            )?
        }
        other => return Err(VerifyError::Unsupported(tee_name(other))),
    };
    check_producible(tee, &v, policy)?;
    if let Some(init) = init_data {
        v.initdata_digest = Some(hex::encode(&init.digest()));
    }
    check_policy(&v, policy)?;
    v.claims.insert("debug".into(), json!(v.debug));
    for (name, value) in [
        ("mode", &v.mode),
        ("roothash", &v.roothash),
        ("image-version", &v.image_version),
        ("init-data", &v.initdata_digest),
    ] {
        if let Some(value) = value {
            v.claims.insert(name.into(), json!(value));
        }
    }
    Ok(v)
}

/// Verifies a composite attestation as Trustee does (`backend.rs` `__attest`): the primary
/// `evidence` of `tee` against `digest` (the runtime data with the additional-evidence string)
/// with the init-data, then each additional evidence against `device_digest` (the runtime data
/// `{"nonce", "tee-pubkey"}` only, [`protocol::device_runtime_data`]) without init-data. Every
/// one must verify. Additional evidence may be `snp` or `tdx` (the hardware report beside a
/// cloud's `tpm`), each only if the policy's `additional_tee` lists it (`tee` lists the
/// primaries only); its launch pins hold as for a primary one, its debug state counts, and its
/// claims go under `additional.<tee>`. A `tdx` one must carry the agent's log, which must be
/// the primary's (`cel_eventlog`, the log that gave PCR 15) and replay to the quoted RTMR2:
/// the agent extends RTMR2 with the same events whatever evidence is primary, and so the
/// claims are the TD's, not only the host-run vTPM's. A `tpm` primary without additional
/// evidence of a kind in `require_additional` (when that is set) is refused: a vTPM alone may
/// be a non-confidential VM booted from the same image.
#[allow(clippy::too_many_arguments)]
pub fn verify_composite(
    tee: Tee,
    evidence: &Value,
    additional: &[(Tee, Value)],
    digest: &[u8],
    device_digest: &[u8],
    init_data: Option<&InitData>,
    policy: &Policy,
    aks: &AkStore,
) -> Result<Verified, VerifyError> {
    let mut v = verify(tee, evidence, digest, init_data, policy, aks)?;
    let primary_log = evidence.get("cel_eventlog").filter(|l| !l.is_null());
    let mut extra = Map::new();
    for (add, ev) in additional {
        let wrap = |source: VerifyError| VerifyError::Additional {
            tee: tee_name(*add),
            source: Box::new(source),
        };
        let a = verify_additional(*add, ev, device_digest, primary_log, policy).map_err(wrap)?;
        v.debug |= a.debug;
        extra.insert(tee_name(*add), Value::Object(a.claims));
    }
    if tee == Tee::Tpm
        && !policy.require_additional.is_empty()
        && !additional
            .iter()
            .any(|(add, _)| policy.require_additional.contains(add))
    {
        let names: Vec<String> = policy
            .require_additional
            .iter()
            .map(|t| tee_name(*t))
            .collect();
        return Err(VerifyError::AdditionalMissing(names.join(" or ")));
    }
    if !extra.is_empty() {
        check_policy(&v, policy)?;
        v.claims.insert("debug".into(), json!(v.debug));
        v.claims.insert("additional".into(), Value::Object(extra));
    }
    Ok(v)
}

/// One additional evidence; `primary_log` is the primary evidence's `cel_eventlog`, if any.
fn verify_additional(
    tee: Tee,
    evidence: &Value,
    device_digest: &[u8],
    primary_log: Option<&Value>,
    policy: &Policy,
) -> Result<Verified, VerifyError> {
    if !policy.allows_additional(tee) {
        return Err(VerifyError::AdditionalNotAllowed(tee_name(tee)));
    }
    let report_data = protocol::tee_report_data(tee, device_digest)
        .map_err(|e| VerifyError::RuntimeData(chain(&e)))?;
    let mut v = match tee {
        Tee::Snp => verify_snp(evidence, &report_data, None, policy)?,
        Tee::Tdx => {
            // With the agent's log: it must replay to the quoted RTMR2 (and to the reference).
            let v = verify_tdx(evidence, &report_data, None, policy, true)?;
            if let Some(primary) = primary_log {
                same_log(evidence, primary)?;
            }
            v
        }
        other => {
            return Err(VerifyError::Unsupported(format!(
                "{} as additional evidence",
                tee_name(other)
            )));
        }
    };
    v.claims.insert("debug".into(), json!(v.debug));
    Ok(v)
}

/// The `cel_eventlog` of additional `tdx` evidence must be the primary's (`primary`): the log
/// whose replay gave PCR 15 is the one that must replay to RTMR2.
fn same_log(evidence: &Value, primary: &Value) -> Result<(), VerifyError> {
    let parse = |log: &Value| EventLog::from_json(log).ok();
    let own = evidence.get("cel_eventlog").and_then(parse);
    if own.is_none() || own != parse(primary) {
        return Err(VerifyError::EventLog(
            "the tdx evidence's cel_eventlog is not the primary evidence's: the RTMR2 replay \
             must be of the log that gave PCR 15"
                .into(),
        ));
    }
    Ok(())
}

/// Pins the verified evidence of `tee` could not have been held to are refusals, not skips:
/// `pcrs` needs the quoted PCRs of vTPM evidence, `reference` the agent's log (vTPM, `tdx`).
fn check_producible(tee: Tee, v: &Verified, policy: &Policy) -> Result<(), VerifyError> {
    // The vTPM kinds hold the quoted PCRs to the pins (`check_pcr_pins`) on every path.
    if !policy.pcrs.is_empty() && !VTPM_KINDS.contains(&tee) {
        return Err(VerifyError::Unproducible {
            field: "boot PCRs (pcrs, or the reference's pcrs)",
            tee: tee_name(tee),
            why: "only vTPM evidence (tpm, az-snp-vtpm, az-tdx-vtpm) has boot PCRs",
        });
    }
    if policy.reference.is_some() && !v.log_checked {
        return Err(VerifyError::Unproducible {
            field: "the agent's log (reference)",
            tee: tee_name(tee),
            why: "only vTPM and tdx evidence carry the agent's log",
        });
    }
    Ok(())
}

fn check_policy(v: &Verified, policy: &Policy) -> Result<(), VerifyError> {
    if v.debug && !policy.allow_debug {
        return Err(VerifyError::Debug);
    }
    let pairs = [
        ("root hash", &v.roothash, &policy.roothash),
        ("image version", &v.image_version, &policy.image_version),
        (
            "init-data digest",
            &v.initdata_digest,
            &policy.initdata_digest,
        ),
    ];
    for (what, got, want) in pairs {
        match (got, want) {
            (_, None) => {}
            (None, Some(_)) => return Err(VerifyError::ClaimMissing(what)),
            (Some(got), Some(want)) if got != want => {
                return Err(VerifyError::Claim {
                    what,
                    got: got.clone(),
                    want: want.clone(),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

fn verify_tpm(
    evidence: &Value,
    report_data: &[u8],
    init_data: Option<&InitData>,
    policy: &Policy,
    aks: &AkStore,
) -> Result<Verified, VerifyError> {
    let ev = TpmEvidence::from_json(evidence.to_string().as_bytes())
        .map_err(|e| malformed("tpm", &e))?;
    // Trustee's order: the AK must be trusted before anything signed with it is looked at.
    let ak = hex::encode(&ev.ak_sha256());
    let ak_trust = aks.check_with_cert(&ak, &ev.ak_public, ev.ak_cert.as_deref())?;
    let attest = ev.verify().map_err(|e| signature("tpm", &e))?;
    if attest.extra_data != report_data {
        if attest.extra_data.len() != report_data.len() {
            return Err(VerifyError::TpmNonceForm(attest.extra_data.len()));
        }
        return Err(VerifyError::ReportData("the TPM quote's nonce"));
    }
    let pcrs = &ev.tpm_quote.pcrs;
    check_pcr8(&pcrs[8], init_data)?;
    if let Some(raw) = &ev.eventlog {
        check_firmware_log(raw, pcrs)?;
    }
    let mut v = pcr15_claims("tpm", ev.cel_eventlog.as_ref(), pcrs, policy)?;
    check_pcr_pins(pcrs, policy)?;
    let pcr_claims: Map<String, Value> = pcrs
        .iter()
        .enumerate()
        .map(|(i, p)| (i.to_string(), json!(hex::encode(p))))
        .collect();
    v.claims.insert("pcrs".into(), Value::Object(pcr_claims));
    v.claims.insert("ak".into(), json!(ak));
    v.claims.insert("ak-trust".into(), json!(ak_trust));
    Ok(v)
}

/// PCR 15 and what it claims, from the agent's log (`cel_eventlog` of `tpm` and Azure
/// evidence): it must be there, hold no launch separator, and replay (SHA-256 bank) to the
/// quoted (verified) PCRs it touches; then its claims ([`claims_from_log`]).
fn pcr15_claims(
    tee: &str,
    log_json: Option<&Value>,
    pcrs: &[[u8; 32]],
    policy: &Policy,
) -> Result<Verified, VerifyError> {
    let log_json = log_json.filter(|v| !v.is_null()).ok_or_else(|| {
        VerifyError::EventLog(format!(
            "the {tee} evidence has no cel_eventlog (cvm-agent's log)"
        ))
    })?;
    let log = EventLog::from_json(log_json).map_err(|e| VerifyError::EventLog(chain(&e)))?;
    if log.has_separator() {
        return Err(VerifyError::EventLog(
            "the launch separator is in the log: the workload was already launched".into(),
        ));
    }
    let replayed = log
        .replay(&[HashAlg::Sha256])
        .map_err(|e| VerifyError::EventLog(chain(&e)))?;
    let zero = [0u8; 32];
    let got15 = replayed.get(HashAlg::Sha256, PCR_AGENT).unwrap_or(&zero);
    if pcrs.get(PCR_AGENT as usize).map(|p| &p[..]) != Some(got15) {
        return Err(VerifyError::EventLog(format!(
            "the replayed log does not give the quoted PCR {PCR_AGENT}"
        )));
    }
    for (alg, pcr, value) in replayed.iter() {
        if alg == HashAlg::Sha256 && pcrs.get(pcr as usize).map(|p| &p[..]) != Some(value) {
            return Err(VerifyError::EventLog(format!(
                "the replayed log does not give the quoted PCR {pcr}"
            )));
        }
    }
    claims_from_log(&log, policy)
}

/// The firmware's TCG log (`eventlog` of `tpm` evidence) replayed in the SHA-256 bank must
/// give the quoted (verified) boot PCRs; the first that differs is named.
fn check_firmware_log(raw: &[u8], quoted: &[[u8; 32]]) -> Result<(), VerifyError> {
    use cvm_tcglog::{EventLog as TcgLog, HashAlg as TcgAlg};
    let log = TcgLog::parse(raw).map_err(|e| VerifyError::FirmwareLog(chain(&e)))?;
    let replayed = log
        .replay(TcgAlg::Sha256)
        .map_err(|e| VerifyError::FirmwareLog(chain(&e)))?;
    for pcr in BOOT_PCRS {
        let (got, want) = (&replayed[pcr as usize], &quoted[pcr as usize]);
        if got[..] != want[..] {
            return Err(VerifyError::FirmwareLog(format!(
                "the log replays PCR {pcr} to {}, the quote has {}",
                hex::encode(got),
                hex::encode(want)
            )));
        }
    }
    Ok(())
}

/// The policy's PCR pins (SHA-256 bank) against the quoted values.
fn check_pcr_pins(quoted: &[[u8; 32]], policy: &Policy) -> Result<(), VerifyError> {
    for (&pcr, want) in &policy.pcrs {
        let got = quoted
            .get(pcr as usize)
            .map(|p| hex::encode(p))
            .unwrap_or_default();
        if got != *want {
            return Err(VerifyError::Pcr {
                pcr,
                got,
                want: want.clone(),
            });
        }
    }
    Ok(())
}

/// What a verified (replayed) agent log claims: mode (and so debug), root hash, image version;
/// with a reference in the policy, the log must be its start ([`check_prefix`]).
fn claims_from_log(log: &EventLog, policy: &Policy) -> Result<Verified, VerifyError> {
    if let Some(reference) = &policy.reference {
        check_prefix(log, reference)?;
    }
    let mut v = Verified {
        log_checked: true,
        ..Verified::default()
    };
    for record in log.records() {
        match record.agent_event() {
            Some((EventKind::Mode, s)) => v.mode = Some(s.into()),
            Some((EventKind::RootHash, s)) => v.roothash = Some(s.into()),
            Some((EventKind::ImageVersion, s)) => v.image_version = Some(s.into()),
            _ => {}
        }
    }
    match v.mode.as_deref() {
        Some("production") => {}
        Some("debug") => v.debug = true,
        _ => {
            return Err(VerifyError::EventLog(
                "no mode event in the log (it is the agent's first measurement)".into(),
            ));
        }
    }
    Ok(v)
}

/// The guest's log must be the start of the reference log: same PCR, same content, same
/// SHA-256 digest, record for record — and at least as long as the reference's pre-attestation
/// part (mode, roothash, image-version, initdata, which the agent measures before it attests):
/// otherwise a boot that measured nothing (PCR 15 all zeros, empty log) would pass as "a
/// prefix".
fn check_prefix(log: &EventLog, reference: &EventLog) -> Result<(), VerifyError> {
    let pre_attest = reference
        .records()
        .iter()
        .take_while(|r| {
            r.agent_event().is_some_and(|(k, _)| {
                matches!(
                    k,
                    EventKind::Mode
                        | EventKind::RootHash
                        | EventKind::ImageVersion
                        | EventKind::InitData
                )
            })
        })
        .count();
    if log.len() < pre_attest {
        return Err(VerifyError::EventLog(format!(
            "the log has {} records, but the reference measures {pre_attest} before attestation",
            log.len()
        )));
    }
    if log.len() > reference.len() {
        return Err(VerifyError::EventLog(format!(
            "the log has {} records, the reference only {}",
            log.len(),
            reference.len()
        )));
    }
    for (i, (got, want)) in log.records().iter().zip(reference.records()).enumerate() {
        if got.pcr != want.pcr
            || got.content != want.content
            || got.digest(HashAlg::Sha256) != want.digest(HashAlg::Sha256)
        {
            let what = got
                .agent_event()
                .map(|(k, _)| k.name().to_string())
                .unwrap_or_else(|| "a foreign record".into());
            return Err(VerifyError::EventLog(format!(
                "record {i} ({what}) differs from the reference"
            )));
        }
    }
    Ok(())
}

fn b64_member(
    tee: &'static str,
    evidence: &Value,
    name: &str,
) -> Result<Option<Vec<u8>>, VerifyError> {
    match evidence.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_B64 => {
            STANDARD
                .decode(s)
                .map(Some)
                .map_err(|_| VerifyError::Malformed {
                    tee,
                    why: format!("{name} is not base64"),
                })
        }
        Some(_) => Err(VerifyError::Malformed {
            tee,
            why: format!("{name} is not a base64 string of at most {MAX_B64} bytes"),
        }),
    }
}

/// A launch register against the policy's pin (lower-case hex; `None`: not pinned).
fn check_pin(register: &'static str, got: &[u8], want: Option<&str>) -> Result<(), VerifyError> {
    match want {
        Some(want) if hex::encode(got) != want => Err(VerifyError::Register {
            register,
            got: hex::encode(got),
            want: want.to_string(),
        }),
        _ => Ok(()),
    }
}

fn verify_snp(
    evidence: &Value,
    report_data: &[u8],
    init_data: Option<&InitData>,
    policy: &Policy,
) -> Result<Verified, VerifyError> {
    // Also for policies not read from a file: without the pin nothing ties the report to an
    // image.
    policy.check_launch_pins()?;
    let raw = b64_member("snp", evidence, "attestation_report")?.ok_or_else(|| {
        VerifyError::Malformed {
            tee: "snp",
            why: "no attestation_report".into(),
        }
    })?;
    let report = AttestationReport::parse(&raw).map_err(|e| malformed("snp", &e))?;
    // The VCEK/VLEK must come with the evidence: the dev KBS does not fetch from AMD's KDS.
    let table =
        b64_member("snp", evidence, "cert_chain")?.ok_or_else(|| VerifyError::Signature {
            tee: "snp",
            why: "no cert_chain with the VCEK/VLEK (the dev KBS does not fetch from AMD KDS)"
                .into(),
        })?;
    let entries = snp::parse_cert_table(&table).map_err(|e| malformed("snp", &e))?;
    let vek_der = entries
        .iter()
        .find(|e| matches!(e.kind, CertTableKind::Vcek | CertTableKind::Vlek))
        .ok_or_else(|| VerifyError::Signature {
            tee: "snp",
            why: "the cert_chain has no VCEK or VLEK".into(),
        })?;
    let vek = EndorsementKey::from_der(&vek_der.data).map_err(|e| signature("snp", &e))?;
    snp::verify_report_builtin(&report, &vek).map_err(|e| signature("snp", &e))?;
    check_snp_report(&report, vek.product, policy)?;
    check_pin(
        "the SNP MEASUREMENT",
        &report.measurement,
        policy.snp_measurement.as_deref(),
    )?;
    if report.report_data[..] != *report_data {
        return Err(VerifyError::ReportData("the SNP REPORT_DATA"));
    }
    if let Some(init) = init_data
        && report.host_data != init.host_data()
    {
        return Err(VerifyError::InitDataBinding("the SNP HOST_DATA"));
    }
    let mut v = Verified {
        debug: report.debug_allowed(),
        ..Verified::default()
    };
    v.claims.insert(
        "measurement".into(),
        json!(hex::encode(&report.measurement)),
    );
    v.claims
        .insert("host-data".into(), json!(hex::encode(&report.host_data)));
    v.claims.insert("policy".into(), json!(report.policy.0));
    v.claims.insert("vmpl".into(), json!(report.vmpl));
    v.claims
        .insert("reported-tcb".into(), json!(report.reported_tcb.raw));
    Ok(v)
}

/// What a verified SNP report must also satisfy: VMPL 0 (Trustee: "VMPL Check Failed"; a
/// report requested from a less privileged VMPL is made by code below the guest's VMPL0, e.g.
/// under an SVSM or paravisor it does not vouch for), no MIGRATE_MA in the guest policy unless
/// the policy allows it, and REPORTED_TCB at least `snp_min_tcb` (decoded with the VCEK/VLEK's
/// product: a v2 report does not say which generation it is).
fn check_snp_report(
    report: &AttestationReport,
    product: snp::Product,
    policy: &Policy,
) -> Result<(), VerifyError> {
    if report.vmpl != 0 {
        return Err(VerifyError::Claim {
            what: "the SNP VMPL",
            got: report.vmpl.to_string(),
            want: "0".into(),
        });
    }
    check_migrate_ma(report, "the SNP guest policy's MIGRATE_MA", policy)?;
    let tcb = snp::TcbVersion::decode(report.reported_tcb.raw, Some(product));
    policy
        .snp_min_tcb
        .check(&tcb)
        .map_err(|e| VerifyError::Claim {
            what: "the SNP REPORTED_TCB",
            got: e.to_string(),
            want: format!("{:?}", policy.snp_min_tcb),
        })
}

/// No migration agent (MIGRATE_MA, guest policy bit 18) unless the policy allows one: the
/// host's migration agent could move the guest's state out.
fn check_migrate_ma(
    report: &AttestationReport,
    what: &'static str,
    policy: &Policy,
) -> Result<(), VerifyError> {
    if report.policy.migrate_ma_allowed() && !policy.snp_allow_migrate_ma {
        return Err(VerifyError::Claim {
            what,
            got: "1".into(),
            want: "0 (snp_allow_migrate_ma is not set)".into(),
        });
    }
    Ok(())
}

/// TD_ATTRIBUTES a verified quote must not have: reserved must-be-zero bits, and MIGRATABLE
/// unless the policy allows it. (DEBUG and the other TUD bits count as debug, which
/// `allow_debug` decides.)
fn check_td_attributes(attrs: tdx::TdAttributes, policy: &Policy) -> Result<(), VerifyError> {
    if attrs.reserved() != 0 {
        return Err(VerifyError::Claim {
            what: "the TDX TD_ATTRIBUTES reserved bits",
            got: format!("{:#018x}", attrs.reserved()),
            want: "0".into(),
        });
    }
    if attrs.migratable() && !policy.tdx_allow_migratable {
        return Err(VerifyError::Claim {
            what: "the TDX TD_ATTRIBUTES.MIGRATABLE",
            got: "1".into(),
            want: "0 (tdx_allow_migratable is not set)".into(),
        });
    }
    Ok(())
}

fn verify_tdx(
    evidence: &Value,
    report_data: &[u8],
    init_data: Option<&InitData>,
    policy: &Policy,
    agent_log: bool,
) -> Result<Verified, VerifyError> {
    policy.check_launch_pins()?;
    let raw = b64_member("tdx", evidence, "quote")?.ok_or_else(|| VerifyError::Malformed {
        tee: "tdx",
        why: "no quote".into(),
    })?;
    let quote = tdx::Quote::parse(&raw).map_err(|e| malformed("tdx", &e))?;
    // Signature, QE binding, PCK chain to Intel's root and Intel's TD QE identity; TCB status
    // and revocation need Intel PCS collateral, which the dev KBS does not fetch (see
    // cvm_tee::tdx).
    quote.verify().map_err(|e| signature("tdx", &e))?;
    let body = &quote.body;
    check_td_attributes(body.td_attributes, policy)?;
    check_pin("the TDX MRTD", &body.mr_td, policy.tdx_mrtd.as_deref())?;
    const RTMRS: [&str; 4] = [
        "the TDX RTMR0",
        "the TDX RTMR1",
        "the TDX RTMR2",
        "the TDX RTMR3",
    ];
    for (i, register) in RTMRS.into_iter().enumerate() {
        check_pin(register, &body.rtmr[i], policy.tdx_rtmr[i].as_deref())?;
    }
    if body.report_data[..] != *report_data {
        return Err(VerifyError::ReportData("the TDX REPORTDATA"));
    }
    if let Some(init) = init_data
        && body.mr_config_id != init.mrconfigid()
    {
        return Err(VerifyError::InitDataBinding("the TDX MRCONFIGID"));
    }
    let mut v = if agent_log {
        tdx_agent_log(evidence, &body.rtmr[2], policy)?
    } else {
        Verified::default()
    };
    v.debug |= body.td_attributes.under_debug();
    v.claims
        .insert("mrtd".into(), json!(hex::encode(&body.mr_td)));
    v.claims
        .insert("mrconfigid".into(), json!(hex::encode(&body.mr_config_id)));
    for (i, r) in body.rtmr.iter().enumerate() {
        v.claims.insert(format!("rtmr{i}"), json!(hex::encode(r)));
    }
    Ok(v)
}

/// What the agent's log in `tdx` evidence establishes, given the quoted (already verified)
/// RTMR2: see the module docs.
fn tdx_agent_log(
    evidence: &Value,
    quoted_rtmr2: &[u8; RTMR_LEN],
    policy: &Policy,
) -> Result<Verified, VerifyError> {
    let log_json = evidence
        .get("cel_eventlog")
        .filter(|v| !v.is_null())
        .ok_or_else(|| {
            VerifyError::EventLog(
                "the tdx evidence has no cel_eventlog (cvm-agent's log): the mode and what \
                 booted are unknown"
                    .into(),
            )
        })?;
    let log = EventLog::from_json(log_json).map_err(|e| VerifyError::EventLog(chain(&e)))?;
    if log.has_separator() {
        return Err(VerifyError::EventLog(
            "the launch separator is in the log: the workload was already launched".into(),
        ));
    }
    let start = ccel_rtmr2(evidence)?;
    let replayed =
        rtmr::replay_rtmr2(&start, &log).map_err(|e| VerifyError::EventLog(chain(&e)))?;
    if replayed != *quoted_rtmr2 {
        return Err(VerifyError::EventLog(format!(
            "the replayed log gives RTMR2 {}, the quote has {}",
            hex::encode(&replayed),
            hex::encode(quoted_rtmr2)
        )));
    }
    let v = claims_from_log(&log, policy)?;
    Ok(v)
}

/// RTMR2 before the agent: the CCEL's RTMR2 events replayed from zero (zero without a CCEL).
/// Refuses a CCEL that has the launch separator's digest in RTMR2.
fn ccel_rtmr2(evidence: &Value) -> Result<[u8; RTMR_LEN], VerifyError> {
    let Some(raw) = b64_member("tdx", evidence, "cc_eventlog")? else {
        return Ok([0; RTMR_LEN]);
    };
    let bad = |why: String| VerifyError::EventLog(format!("cc_eventlog: {why}"));
    let log = ccel::EventLog::parse(&raw).map_err(|e| bad(chain(&e)))?;
    let separator = rtmr::separator_digest();
    let mut rtmr2 = [0; RTMR_LEN];
    for event in &log.events {
        if event.event_type == ccel::EV_NO_ACTION
            || ccel::rtmr_for_mr_index(event.mr_index) != Some(2)
        {
            continue;
        }
        let digest: [u8; RTMR_LEN] = event
            .digest(ccel::TPM_ALG_SHA384)
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| {
                bad(format!(
                    "the RTMR2 event at offset {} has no SHA-384 digest",
                    event.offset
                ))
            })?;
        if digest == separator {
            return Err(bad(format!(
                "the RTMR2 event at offset {} is cvm-agent's launch separator: the workload \
                 was already launched",
                event.offset
            )));
        }
        rtmr2 = rtmr::extend_value(&rtmr2, &digest);
    }
    Ok(rtmr2)
}

/// The logs Azure evidence carries beside Trustee's members (`cel_eventlog`, `eventlog`),
/// and its version.
struct AzExtras<'a> {
    version: u32,
    cel_eventlog: Option<&'a Value>,
    eventlog: Option<&'a [u8]>,
}

/// `az-snp-vtpm` / `az-tdx-vtpm` after [`AzSnpVtpmEvidence::verify`] /
/// [`AzTdxVtpmEvidence::verify`] (HCL binding, AK, quote signature and PCR digest, hardware
/// report to AMD's or Intel's root, VMPL 0): the paravisor's launch identity against the
/// policy's pins (it wrote the HCL report and runs the vTPM: without the pin any VMPL0 code or
/// TD could wrap its own AK), the nonce, the HCL report's freshness (`user-data`), PCR 8, then
/// what the vTPM's PCRs say exactly as for `tpm`: firmware log, agent log and claims, PCR pins.
/// PCR 8 is the init-data binding: with init-data it must be `SHA256(0³² ‖ digest)`; without,
/// the agent extends nothing into it, so a value there is not ours.
fn check_pcr8(pcr8: &[u8], init_data: Option<&InitData>) -> Result<(), VerifyError> {
    match init_data {
        Some(init) if pcr8 != init.pcr8_expected() => Err(VerifyError::Pcr8),
        None if pcr8.iter().any(|&b| b != 0) => Err(VerifyError::Pcr8Unbound(hex::encode(pcr8))),
        _ => Ok(()),
    }
}

fn verify_azure(
    tee: &'static str,
    verified: &AzVerified,
    extras: AzExtras<'_>,
    report_data: &[u8],
    init_data: Option<&InitData>,
    policy: &Policy,
) -> Result<Verified, VerifyError> {
    policy.check_launch_pins()?;
    let pcrs = &verified.pcrs;
    if pcrs.len() != cvm_tee::tpm::PCR_COUNT {
        return Err(VerifyError::Malformed {
            tee,
            why: format!(
                "the vTPM quote covers {} PCRs, expected 0-{}",
                pcrs.len(),
                cvm_tee::tpm::PCR_COUNT - 1
            ),
        });
    }
    let mut launch = Map::new();
    let debug = match &verified.hcl.hw_report {
        HwReport::Snp(r) => {
            check_pin_list(
                "the HCL report's SNP MEASUREMENT",
                &r.measurement,
                &policy.az_snp_measurement,
            )?;
            launch.insert("measurement".into(), json!(hex::encode(&r.measurement)));
            check_migrate_ma(r, "the HCL report's SNP guest policy MIGRATE_MA", policy)?;
            r.debug_allowed()
        }
        HwReport::Tdx(r) => {
            check_pin_list("the HCL report's TD MRTD", &r.mr_td, &policy.az_tdx_mrtd)?;
            const RTMRS: [&str; 4] = [
                "the HCL report's TD RTMR0",
                "the HCL report's TD RTMR1",
                "the HCL report's TD RTMR2",
                "the HCL report's TD RTMR3",
            ];
            for (i, register) in RTMRS.into_iter().enumerate() {
                check_pin_list(register, &r.rtmr[i], &policy.az_tdx_rtmr[i])?;
                launch.insert(format!("rtmr{i}"), json!(hex::encode(&r.rtmr[i])));
            }
            launch.insert("mrtd".into(), json!(hex::encode(&r.mr_td)));
            check_td_attributes(r.td_attributes, policy)?;
            r.td_attributes.under_debug()
        }
    };
    // The Azure attesters quote the digest itself (48 bytes for SHA-384), and Trustee's
    // `verify_nonce` compares exactly: a zero-padded nonce is refused.
    if verified.attest.extra_data != report_data {
        return Err(VerifyError::ReportData("the vTPM quote's nonce"));
    }
    // Evidence v2 (and the agent's az-tdx-vtpm, whose HCL report it refreshes the same way):
    // the HCL report was made for this session, `user-data` = report data zero-padded to 64.
    if tee == "az-tdx-vtpm" || extras.version >= 2 {
        let mut want = report_data.to_vec();
        want.resize(64, 0);
        if verified.runtime_data.user_data_bytes() != Some(want) {
            return Err(VerifyError::ReportData(
                "the HCL report's user-data (a stale or replayed HCL report)",
            ));
        }
    }
    check_pcr8(&pcrs[8], init_data)?;
    if let Some(raw) = extras.eventlog {
        check_firmware_log(raw, pcrs)?;
    }
    let mut v = pcr15_claims(tee, extras.cel_eventlog, pcrs, policy)?;
    check_pcr_pins(pcrs, policy)?;
    v.debug |= debug;
    let pcr_claims: Map<String, Value> = pcrs
        .iter()
        .enumerate()
        .map(|(i, p)| (i.to_string(), json!(hex::encode(p))))
        .collect();
    v.claims.insert("pcrs".into(), Value::Object(pcr_claims));
    v.claims.insert(
        "ak".into(),
        json!(hex::encode(&sha2::Digest::finalize(
            <sha2::Sha256 as sha2::Digest>::new_with_prefix(&verified.ak.spki_der)
        ))),
    );
    v.claims.insert("platform".into(), json!(tee));
    v.claims.extend(launch);
    Ok(v)
}

/// A launch register against a list of allowed values (lower-case hex; empty: not pinned).
fn check_pin_list(
    register: &'static str,
    got: &[u8],
    allowed: &[String],
) -> Result<(), VerifyError> {
    let got = hex::encode(got);
    if allowed.is_empty() || allowed.contains(&got) {
        return Ok(());
    }
    Err(VerifyError::Register {
        register,
        got,
        want: allowed.join(" or "),
    })
}

fn malformed(tee: &'static str, e: &(dyn std::error::Error + 'static)) -> VerifyError {
    VerifyError::Malformed { tee, why: chain(e) }
}

fn signature(tee: &'static str, e: &(dyn std::error::Error + 'static)) -> VerifyError {
    VerifyError::Signature { tee, why: chain(e) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The init-data the tests' agent logs measure (PCR 8 and the reference agree on it).
    const TEST_INITDATA: &[u8] =
        b"version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"note.txt\" = \"x\"\n";
    use cvm_initdata::Mode;
    use cvm_measure::{Event, Facts, predict};

    fn fixture(path: &str) -> Vec<u8> {
        let p = format!(
            "{}/tests/fixtures/{path}",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../..")
        );
        std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    /// SHA-256 of the fixture's AK, as an operator would list it.
    fn fixture_ak() -> String {
        let json = fixture("tpm/tpm_evidence.json");
        hex::encode(&TpmEvidence::from_json(&json).unwrap().ak_sha256())
    }

    fn open_policy() -> Policy {
        Policy {
            tee: vec![Tee::Tpm, Tee::Snp, Tee::Tdx, Tee::AzSnpVtpm, Tee::AzTdxVtpm],
            additional_tee: vec![Tee::Snp, Tee::Tdx],
            require_initdata: false,
            trusted_aks: vec![fixture_ak()],
            ..Policy::default()
        }
    }

    /// [`open_policy`] with the launch registers of `evidence` (snp or tdx) pinned: what an
    /// operator who measured this image would write.
    fn pinned_policy(evidence: &Value) -> Policy {
        let mut policy = open_policy();
        let b64 = |name: &str| {
            evidence
                .get(name)
                .and_then(Value::as_str)
                .and_then(|s| STANDARD.decode(s).ok())
        };
        let snp = b64("attestation_report")
            .and_then(|raw| AttestationReport::parse(&raw).ok())
            .unwrap_or_else(|| AttestationReport::parse(&fixture("snp/test-report.bin")).unwrap());
        let tdx = b64("quote")
            .and_then(|raw| tdx::Quote::parse(&raw).ok())
            .unwrap_or_else(|| tdx::Quote::parse(&fixture("tdx/tdx_quote_4.dat")).unwrap())
            .body;
        policy.snp_measurement = Some(hex::encode(&snp.measurement));
        policy.tdx_mrtd = Some(hex::encode(&tdx.mr_td));
        policy.tdx_rtmr[1] = Some(hex::encode(&tdx.rtmr[1]));
        let (az_snp, az_tdx) = az_launch();
        policy.az_snp_measurement = vec![az_snp];
        policy.az_tdx_mrtd = vec![az_tdx];
        policy
    }

    /// The launch identities in the real Azure evidence fixtures' HCL reports: the SNP
    /// MEASUREMENT and the TD's MRTD (the values policy.rs's tests write out).
    fn az_launch() -> (String, String) {
        let snp = AzSnpVtpmEvidence::from_json(&fixture("az-snp-vtpm/evidence-v2.json")).unwrap();
        let tdx = AzTdxVtpmEvidence::from_json(&fixture("az-tdx-vtpm/evidence-v1.json")).unwrap();
        let snp = HclReport::parse(&snp.hcl_report).unwrap();
        let tdx = HclReport::parse(&tdx.hcl_report).unwrap();
        match (snp.hw_report, tdx.hw_report) {
            (HwReport::Snp(s), HwReport::Tdx(t)) => {
                (hex::encode(&s.measurement), hex::encode(&t.mr_td))
            }
            _ => unreachable!(),
        }
    }

    /// Real Azure evidence (the fixture, verified up to its signatures) as it would be for a
    /// session with `report_data` and an agent that booted `real_boot("ovmf-boot-option")`
    /// and measured `log`: the nonce, `user-data` and PCRs replaced after the signature checks
    /// (no AMD/Intel key here to re-sign them), so verify_azure's own checks are what is tested.
    fn az_session(tee: Tee, report_data: &[u8], log: &EventLog) -> AzVerified {
        let mut v = match tee {
            Tee::AzSnpVtpm => {
                AzSnpVtpmEvidence::from_json(&fixture("az-snp-vtpm/evidence-v2.json"))
                    .unwrap()
                    .verify()
                    .unwrap()
            }
            _ => AzTdxVtpmEvidence::from_json(&fixture("az-tdx-vtpm/evidence-v1.json"))
                .unwrap()
                .verify()
                .unwrap(),
        };
        v.attest.extra_data = report_data.to_vec();
        let mut padded = report_data.to_vec();
        padded.resize(64, 0);
        v.runtime_data.user_data = Some(padded.iter().map(|b| format!("{b:02X}")).collect());
        let (_, mut pcrs) = real_boot("ovmf-boot-option");
        let replayed = log.replay(&[HashAlg::Sha256]).unwrap();
        for (_, pcr, value) in replayed.iter() {
            pcrs[pcr as usize] = value.try_into().unwrap();
        }
        v.pcrs = pcrs;
        v
    }

    /// What `verify` does with Azure evidence after parsing and the signatures.
    fn az_run(
        tee: Tee,
        verified: &AzVerified,
        version: u32,
        log: Option<&Value>,
        firmware: Option<&[u8]>,
        policy: &Policy,
    ) -> Result<Verified, VerifyError> {
        let name = if tee == Tee::AzSnpVtpm {
            "az-snp-vtpm"
        } else {
            "az-tdx-vtpm"
        };
        let extras = AzExtras {
            version,
            cel_eventlog: log,
            eventlog: firmware,
        };
        let init = InitData::parse(TEST_INITDATA).unwrap();
        let v = verify_azure(name, verified, extras, &[0x5a; 48], Some(&init), policy)?;
        check_policy(&v, policy)?;
        Ok(v)
    }

    /// Azure evidence gets the `tpm` checks behind the paravisor's launch pin: each refuses
    /// (launch pin, stale user-data, PCR pin, firmware log, agent log, debug mode, reference,
    /// claims) and the right evidence is accepted with its claims.
    #[test]
    fn azure_evidence_gets_launch_pins_freshness_and_the_tpm_checks() {
        let (fw, _) = real_boot("ovmf-boot-option");
        let log = agent_log(Mode::Production);
        let json_log = log.to_json();
        let (az_snp, az_tdx) = az_launch();
        for (tee, version) in [(Tee::AzSnpVtpm, 2), (Tee::AzTdxVtpm, 1)] {
            let good = az_session(tee, &[0x5a; 48], &log);
            let mut policy = pinned_policy(&Value::Null);
            policy.pcrs.insert(4, hex::encode(&good.pcrs[4]));
            policy.roothash = Some("ab".repeat(32));
            policy.image_version = Some("cvm-demo 1".into());
            let facts = cvm_measure::Facts {
                roothash: Some("ab".repeat(32)),
                image_version: Some("cvm-demo 1".into()),
                initdata: Some(TEST_INITDATA.to_vec()),
                ..cvm_measure::Facts::default()
            };
            policy.reference = Some(predict(&facts, &[HashAlg::Sha256]).unwrap().log);
            let run = |v: &AzVerified, log: Option<&Value>, fw: Option<&[u8]>, p: &Policy| {
                az_run(tee, v, version, log, fw, p)
            };

            // Accepted, with the claims from the log and the launch identity.
            let v = run(&good, Some(&json_log), Some(&fw), &policy).unwrap();
            // A guest the host may migrate out: SNP MIGRATE_MA, TDX MIGRATABLE, refused by
            // default, also behind the paravisor.
            let mut migratable = good.clone();
            match &mut migratable.hcl.hw_report {
                HwReport::Snp(r) => r.policy.0 |= 1 << 18,
                HwReport::Tdx(r) => r.td_attributes.0 |= 1 << 29,
            }
            let err = run(&migratable, Some(&json_log), Some(&fw), &policy).unwrap_err();
            assert!(err.to_string().contains("MIGRAT"), "{tee:?}: {err}");
            let mut allowed = policy.clone();
            allowed.snp_allow_migrate_ma = true;
            allowed.tdx_allow_migratable = true;
            run(&migratable, Some(&json_log), Some(&fw), &allowed).unwrap();
            // PCR 8 is the init-data's; set while no init-data is sent, it is not the agent's.
            let mut other = good.clone();
            other.pcrs[8] = [7; 32];
            assert!(matches!(
                run(&other, Some(&json_log), Some(&fw), &policy),
                Err(VerifyError::Pcr8)
            ));
            let extras = AzExtras {
                version,
                cel_eventlog: Some(&json_log),
                eventlog: Some(&fw),
            };
            let name = if tee == Tee::AzSnpVtpm {
                "az-snp-vtpm"
            } else {
                "az-tdx-vtpm"
            };
            assert!(matches!(
                verify_azure(name, &good, extras, &[0x5a; 48], None, &policy),
                Err(VerifyError::Pcr8Unbound(_))
            ));
            assert!(!v.debug, "{tee:?}");
            assert_eq!(v.mode.as_deref(), Some("production"));
            assert_eq!(v.roothash, Some("ab".repeat(32)));
            assert_eq!(v.image_version.as_deref(), Some("cvm-demo 1"));
            let launch = if tee == Tee::AzSnpVtpm {
                ("measurement", &az_snp)
            } else {
                ("mrtd", &az_tdx)
            };
            assert_eq!(v.claims[launch.0], json!(launch.1));
            // Without a firmware log (direct boot) the quote's PCRs and the pins still count.
            run(&good, Some(&json_log), None, &policy).unwrap();

            // Launch pin: another paravisor is refused, naming the register; a list may hold it.
            let mut other = policy.clone();
            let wrong = "00".repeat(48);
            other.az_snp_measurement = vec![wrong.clone()];
            other.az_tdx_mrtd = vec![wrong.clone()];
            let err = run(&good, Some(&json_log), Some(&fw), &other).unwrap_err();
            let want = if tee == Tee::AzSnpVtpm {
                format!("the HCL report's SNP MEASUREMENT is {az_snp}, but the policy pins {wrong}")
            } else {
                format!("the HCL report's TD MRTD is {az_tdx}, but the policy pins {wrong}")
            };
            assert_eq!(err.to_string(), want);
            other.az_snp_measurement.push(az_snp.clone());
            other.az_tdx_mrtd.push(az_tdx.clone());
            run(&good, Some(&json_log), Some(&fw), &other).unwrap();
            if tee == Tee::AzTdxVtpm {
                let HwReport::Tdx(td) = &good.hcl.hw_report else {
                    unreachable!()
                };
                // (The fixture TD's RTMRs are all zeros: pin something else.)
                other.az_tdx_rtmr[2] = vec!["ff".repeat(48)];
                let err = run(&good, Some(&json_log), Some(&fw), &other).unwrap_err();
                assert!(
                    err.to_string().starts_with("the HCL report's TD RTMR2 is"),
                    "{err}"
                );
                other.az_tdx_rtmr[2] = vec![hex::encode(&td.rtmr[2])];
                run(&good, Some(&json_log), Some(&fw), &other).unwrap();
            }
            // No pin at all: refused even for a policy not read from a file.
            let mut unpinned = policy.clone();
            unpinned.az_snp_measurement.clear();
            unpinned.az_tdx_mrtd.clear();
            let err = run(&good, Some(&json_log), Some(&fw), &unpinned).unwrap_err();
            assert!(
                matches!(err, VerifyError::Policy(PolicyError::Unpinned { .. })),
                "{err}"
            );

            // Freshness: an HCL report whose user-data is another session's.
            let mut stale = good.clone();
            stale.runtime_data.user_data = Some("00".repeat(64));
            let err = run(&stale, Some(&json_log), Some(&fw), &policy).unwrap_err();
            assert!(err.to_string().contains("user-data"), "{err}");
            stale.runtime_data.user_data = None;
            assert!(run(&stale, Some(&json_log), Some(&fw), &policy).is_err());
            // The nonce.
            let mut replay = good.clone();
            replay.attest.extra_data = vec![0x17; 48];
            assert!(matches!(
                run(&replay, Some(&json_log), Some(&fw), &policy),
                Err(VerifyError::ReportData("the vTPM quote's nonce"))
            ));

            // A wrong PCR pin.
            let mut pin = policy.clone();
            pin.pcrs.insert(4, "00".repeat(32));
            assert!(matches!(
                run(&good, Some(&json_log), Some(&fw), &pin),
                Err(VerifyError::Pcr { pcr: 4, .. })
            ));
            // A firmware log that does not explain the quote.
            let (other_fw, _) = real_boot("ovmf-qemu-kernel");
            assert!(matches!(
                run(&good, Some(&json_log), Some(&other_fw), &policy),
                Err(VerifyError::FirmwareLog(_))
            ));
            // No agent log, or one that does not give the quoted PCR 15.
            let err = run(&good, None, Some(&fw), &policy).unwrap_err();
            assert!(err.to_string().contains("no cel_eventlog"), "{err}");
            let mut pcr15 = good.clone();
            pcr15.pcrs[15] = [7; 32];
            let err = run(&pcr15, Some(&json_log), Some(&fw), &policy).unwrap_err();
            assert!(err.to_string().contains("quoted PCR 15"), "{err}");
            // A debug-mode image: debug, refused unless the policy allows debug.
            let debug_log = agent_log(Mode::Debug);
            let debug = az_session(tee, &[0x5a; 48], &debug_log);
            let mut no_ref = policy.clone();
            no_ref.reference = None;
            let err = run(&debug, Some(&debug_log.to_json()), Some(&fw), &no_ref).unwrap_err();
            assert!(matches!(err, VerifyError::Debug), "{err}");
            // ... and not the reference's start.
            let err = run(&debug, Some(&debug_log.to_json()), Some(&fw), &policy).unwrap_err();
            assert!(
                err.to_string().contains("differs from the reference"),
                "{err}"
            );
            // Claims against the policy's.
            let mut version_pin = no_ref.clone();
            version_pin.image_version = Some("cvm-demo 2".into());
            assert!(matches!(
                run(&good, Some(&json_log), Some(&fw), &version_pin),
                Err(VerifyError::Claim {
                    what: "image version",
                    ..
                })
            ));
        }
    }

    fn run(tee: Tee, evidence: &Value) -> Result<Verified, VerifyError> {
        let policy = pinned_policy(evidence);
        verify(
            tee,
            evidence,
            &[0x5a; 48],
            None,
            &policy,
            &AkStore::new(&policy),
        )
    }

    /// Real evidence from a real vTPM passes every signature check and fails exactly at the
    /// nonce. `tpm_evidence.json` is the OLD form (before Trustee v0.16): its quote carries a
    /// 64-byte padded nonce, which today's Trustee refuses whatever the session — as we do.
    #[test]
    fn real_tpm_evidence_of_the_old_form_is_refused_at_the_nonce() {
        let json = fixture("tpm/tpm_evidence.json");
        let attest = TpmEvidence::from_json(&json).unwrap().verify().unwrap();
        assert_eq!(
            attest.extra_data.len(),
            64,
            "the fixture's old 64-byte form"
        );
        let ev: Value = serde_json::from_slice(&json).unwrap();
        let err = run(Tee::Tpm, &ev).unwrap_err();
        assert!(matches!(err, VerifyError::TpmNonceForm(64)), "{err}");
        // Even for the session it was made for (its own first 48 bytes as the digest): the
        // 64-byte form is not Trustee's.
        let policy = open_policy();
        let err = verify(
            Tee::Tpm,
            &ev,
            &attest.extra_data[..48],
            None,
            &policy,
            &AkStore::new(&policy),
        )
        .unwrap_err();
        assert!(matches!(err, VerifyError::TpmNonceForm(64)), "{err}");
        // An AK the policy does not list is refused before its quote is looked at.
        let untrusted = Policy {
            trusted_aks: vec!["00".repeat(32)],
            ..open_policy()
        };
        let err = verify(
            Tee::Tpm,
            &ev,
            &[0x5a; 48],
            None,
            &untrusted,
            &AkStore::new(&untrusted),
        )
        .unwrap_err();
        assert!(matches!(err, VerifyError::AkNotTrusted(_)), "{err}");
        // A changed PCR value fails before the nonce.
        let mut bad = ev.clone();
        bad["tpm_quote"]["pcrs"][0] = Value::from("11".repeat(32));
        assert!(matches!(
            run(Tee::Tpm, &bad),
            Err(VerifyError::Signature { tee: "tpm", .. })
        ));
        assert!(matches!(
            run(Tee::Tpm, &serde_json::json!({"ak_public": 1})),
            Err(VerifyError::Malformed { tee: "tpm", .. })
        ));
    }

    fn cert_table(vcek: &[u8]) -> Vec<u8> {
        let guid = 0x63da758d_e664_4564_adc5_f4b93be8accdu128.to_be_bytes();
        let mut t = guid.to_vec();
        t.extend_from_slice(&48u32.to_le_bytes());
        t.extend_from_slice(&(vcek.len() as u32).to_le_bytes());
        t.extend_from_slice(&[0; 24]);
        t.extend_from_slice(vcek);
        t
    }

    #[test]
    fn real_snp_tdx_azure_evidence_verifies_up_to_the_report_data() {
        let snp = serde_json::json!({
            "attestation_report": STANDARD.encode(fixture("snp/test-report.bin")),
            "cert_chain": STANDARD.encode(cert_table(&fixture("snp/test-vcek.der"))),
        });
        let err = run(Tee::Snp, &snp).unwrap_err();
        assert!(
            matches!(err, VerifyError::ReportData("the SNP REPORT_DATA")),
            "{err}"
        );
        // The VLEK's certificate does not sign this report.
        let mut bad = snp.clone();
        bad["cert_chain"] = Value::from(STANDARD.encode(cert_table(&fixture("snp/test-vlek.der"))));
        assert!(matches!(
            run(Tee::Snp, &bad),
            Err(VerifyError::Signature { .. })
        ));
        bad["cert_chain"] = Value::Null;
        let err = run(Tee::Snp, &bad).unwrap_err();
        assert!(err.to_string().contains("no cert_chain"), "{err}");

        for quote in ["tdx/tdx_quote_4.dat", "tdx/tdx_quote_5.dat"] {
            let tdx =
                serde_json::json!({"quote": STANDARD.encode(fixture(quote)), "cc_eventlog": null});
            let err = run(Tee::Tdx, &tdx).unwrap_err();
            assert!(
                matches!(err, VerifyError::ReportData("the TDX REPORTDATA")),
                "{quote}: {err}"
            );
        }

        let az: Value = serde_json::from_slice(&fixture("az-snp-vtpm/evidence-v2.json")).unwrap();
        let err = run(Tee::AzSnpVtpm, &az).unwrap_err();
        assert!(
            matches!(err, VerifyError::ReportData("the vTPM quote's nonce")),
            "{err}"
        );
        let az: Value = serde_json::from_slice(&fixture("az-tdx-vtpm/evidence-v1.json")).unwrap();
        let err = run(Tee::AzTdxVtpm, &az).unwrap_err();
        assert!(
            matches!(err, VerifyError::ReportData("the vTPM quote's nonce")),
            "{err}"
        );

        // A TEE the policy does not list, and one the dev KBS cannot verify.
        let policy = Policy::default();
        let aks = AkStore::new(&policy);
        let err = verify(Tee::Snp, &snp, &[0; 48], None, &policy, &aks).unwrap_err();
        assert_eq!(err.to_string(), "TEE snp is not allowed by policy");
        let mut policy = pinned_policy(&snp);
        policy.tee.push(Tee::Sgx);
        let err = verify(Tee::Sgx, &snp, &[0; 48], None, &policy, &aks).unwrap_err();
        assert!(matches!(err, VerifyError::Unsupported(_)), "{err}");
    }

    /// The fixtures as additional evidence, each for the device runtime-data digest it was
    /// made for (its own report data): SNP verifies; TDX gets through the signature, the pins
    /// and the report data and then needs the agent's log (which the fixtures, made without
    /// the agent, cannot have); another session's digest, a TEE `additional_tee` does not
    /// list, and kinds that are no hardware report are refused, each naming the TEE.
    #[test]
    fn fixtures_verify_as_additional_evidence_for_their_own_digest() {
        let snp = snp_evidence();
        let report = AttestationReport::parse(&fixture("snp/test-report.bin")).unwrap();
        let policy = pinned_policy(&snp);
        let v =
            verify_additional(Tee::Snp, &snp, &report.report_data[..48], None, &policy).unwrap();
        assert_eq!(
            v.claims["measurement"],
            json!(hex::encode(&report.measurement))
        );
        let err = verify_additional(Tee::Snp, &snp, &[0x5a; 48], None, &policy).unwrap_err();
        assert!(
            matches!(err, VerifyError::ReportData("the SNP REPORT_DATA")),
            "{err}"
        );
        for name in ["tdx/tdx_quote_4.dat", "tdx/tdx_quote_5.dat"] {
            let raw = fixture(name);
            let quote = tdx::Quote::parse(&raw).unwrap();
            let ev = json!({"quote": STANDARD.encode(&raw)});
            let policy = pinned_policy(&ev);
            let err = verify_additional(Tee::Tdx, &ev, &quote.body.report_data, None, &policy)
                .unwrap_err();
            assert!(
                err.to_string()
                    .contains("the tdx evidence has no cel_eventlog"),
                "{name}: {err}"
            );
            let err = verify_additional(Tee::Tdx, &ev, &[0x5a; 48], None, &policy).unwrap_err();
            assert!(
                matches!(err, VerifyError::ReportData("the TDX REPORTDATA")),
                "{err}"
            );
        }
        // `tee` lists primaries only: snp there does not make it acceptable as additional.
        let mut primary_only = policy.clone();
        primary_only.additional_tee = vec![];
        let own = &report.report_data[..48];
        let err = verify_additional(Tee::Snp, &snp, own, None, &primary_only).unwrap_err();
        assert_eq!(
            err.to_string(),
            "TEE snp is not allowed as additional evidence by policy (additional_tee)"
        );
        let az: Value = serde_json::from_slice(&fixture("az-snp-vtpm/evidence-v2.json")).unwrap();
        let mut odd = policy.clone();
        odd.additional_tee = vec![Tee::Tpm, Tee::AzSnpVtpm];
        for (tee, ev) in [(Tee::Tpm, &snp), (Tee::AzSnpVtpm, &az)] {
            for p in [&policy, &odd] {
                let err = verify_additional(tee, ev, &[0; 48], None, p).unwrap_err();
                assert!(err.to_string().contains("as additional evidence"), "{err}");
            }
        }
    }

    fn snp_evidence() -> Value {
        snp_evidence_of("snp/test-report.bin", "snp/test-vcek.der")
    }

    fn snp_evidence_of(report: &str, vek: &str) -> Value {
        serde_json::json!({
            "attestation_report": STANDARD.encode(fixture(report)),
            "cert_chain": STANDARD.encode(cert_table(&fixture(vek))),
        })
    }

    fn verify_with(tee: Tee, evidence: &Value, policy: &Policy) -> Result<Verified, VerifyError> {
        verify(
            tee,
            evidence,
            &[0x5a; 64],
            None,
            policy,
            &AkStore::new(policy),
        )
    }

    /// The real report with a wrong MEASUREMENT pin is refused, naming the register and both
    /// values; with the right pin it gets past that check and stops at the report data (the
    /// fixture was made for another session). A policy built without the pin refuses too.
    #[test]
    fn snp_measurement_pin() {
        let ev = snp_evidence();
        let report = AttestationReport::parse(&fixture("snp/test-report.bin")).unwrap();
        let mut policy = pinned_policy(&ev);
        let wrong = "00".repeat(48);
        policy.snp_measurement = Some(wrong.clone());
        let err = verify_with(Tee::Snp, &ev, &policy).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the SNP MEASUREMENT is {}, but the policy pins {wrong}",
                hex::encode(&report.measurement)
            )
        );
        policy.snp_measurement = Some(hex::encode(&report.measurement));
        let err = verify_with(Tee::Snp, &ev, &policy).unwrap_err();
        assert!(
            matches!(err, VerifyError::ReportData("the SNP REPORT_DATA")),
            "{err}"
        );
        policy.snp_measurement = None;
        let err = verify_with(Tee::Snp, &ev, &policy).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::Policy(PolicyError::Unpinned {
                    field: "snp_measurement",
                    ..
                })
            ),
            "{err}"
        );
        // The signature is checked before the pin: a report whose MEASUREMENT was changed to
        // the pinned value does not verify.
        let mut forged = fixture("snp/test-report.bin");
        forged[0x90..0xC0].fill(0);
        let mut forged_ev = ev.clone();
        forged_ev["attestation_report"] = Value::from(STANDARD.encode(&forged));
        policy.snp_measurement = Some(wrong);
        assert!(matches!(
            verify_with(Tee::Snp, &forged_ev, &policy),
            Err(VerifyError::Signature { tee: "snp", .. })
        ));
    }

    /// Each TDX pin (MRTD, RTMR0-3) against the real v4 and v5 quotes: a wrong one is refused
    /// naming the register, all right ones get to the report data.
    #[test]
    fn tdx_mrtd_and_rtmr_pins() {
        for name in ["tdx/tdx_quote_4.dat", "tdx/tdx_quote_5.dat"] {
            let ev = serde_json::json!({"quote": STANDARD.encode(fixture(name))});
            let body = tdx::Quote::parse(&fixture(name)).unwrap().body;
            let mut policy = pinned_policy(&ev);
            for (i, value) in body.rtmr.iter().enumerate() {
                policy.tdx_rtmr[i] = Some(hex::encode(value));
            }
            let err = verify_with(Tee::Tdx, &ev, &policy).unwrap_err();
            assert!(
                matches!(err, VerifyError::ReportData("the TDX REPORTDATA")),
                "{name}: {err}"
            );
            let wrong = "ff".repeat(48);
            let mut bad = policy.clone();
            bad.tdx_mrtd = Some(wrong.clone());
            assert_eq!(
                verify_with(Tee::Tdx, &ev, &bad).unwrap_err().to_string(),
                format!(
                    "the TDX MRTD is {}, but the policy pins {wrong}",
                    hex::encode(&body.mr_td)
                ),
                "{name}"
            );
            for i in 0..4 {
                let mut bad = policy.clone();
                bad.tdx_rtmr[i] = Some(wrong.clone());
                let err = verify_with(Tee::Tdx, &ev, &bad).unwrap_err();
                assert_eq!(
                    err.to_string(),
                    format!(
                        "the TDX RTMR{i} is {}, but the policy pins {wrong}",
                        hex::encode(&body.rtmr[i])
                    ),
                    "{name}"
                );
            }
            for unpin in ["mrtd", "rtmr1"] {
                let mut bad = policy.clone();
                match unpin {
                    "mrtd" => bad.tdx_mrtd = None,
                    _ => bad.tdx_rtmr[1] = None,
                }
                assert!(
                    matches!(
                        verify_with(Tee::Tdx, &ev, &bad),
                        Err(VerifyError::Policy(PolicyError::Unpinned {
                            tee: "tdx",
                            ..
                        }))
                    ),
                    "{name}: {unpin}"
                );
            }
        }
    }

    /// RTMR2 by hand: SHA384(RTMR ‖ SHA384("<event>:<value>")) for each PCR 15 event, written
    /// out here rather than through `measure::rtmr`, so the replay is checked against the
    /// TDX extend rule itself.
    fn rtmr2_by_hand(start: [u8; 48], events: &[&str]) -> [u8; 48] {
        use sha2::{Digest as _, Sha384};
        events.iter().fold(start, |rtmr, event| {
            let digest = Sha384::digest(event.as_bytes());
            Sha384::new()
                .chain_update(rtmr)
                .chain_update(digest)
                .finalize()
                .into()
        })
    }

    /// The agent's log as it is at attestation on a vTPM with a SHA-256 bank only (the
    /// RTMR2 digests are recomputed from the content).
    fn agent_log(mode: Mode) -> EventLog {
        let mut m = cvm_measure::Measurer::new(&[HashAlg::Sha256]).unwrap();
        m.record(Event::mode(mode)).unwrap();
        m.record(Event::roothash(&"ab".repeat(32)).unwrap())
            .unwrap();
        m.record(Event::image_version("cvm-demo 1").unwrap())
            .unwrap();
        m.record(Event::initdata(TEST_INITDATA)).unwrap();
        m.log().clone()
    }

    fn pre_attest_events(mode: &str) -> Vec<String> {
        vec![
            format!("mode:{mode}"),
            format!("roothash:{}", "ab".repeat(32)),
            "image-version:cvm-demo 1".to_string(),
        ]
    }

    /// A CCEL with one RTMR2 (MR index 3) event of each given SHA-384 digest.
    fn ccel_with_rtmr2(digests: &[[u8; 48]]) -> Vec<u8> {
        let mut spec = b"Spec ID Event03\0".to_vec();
        spec.extend_from_slice(&0u32.to_le_bytes()); // platform class
        spec.extend_from_slice(&[0, 2, 0, 2]); // minor, major, errata, uintn size
        spec.extend_from_slice(&1u32.to_le_bytes());
        spec.extend_from_slice(&ccel::TPM_ALG_SHA384.to_le_bytes());
        spec.extend_from_slice(&48u16.to_le_bytes());
        spec.push(0); // no vendor info
        let mut log = 0u32.to_le_bytes().to_vec();
        log.extend_from_slice(&ccel::EV_NO_ACTION.to_le_bytes());
        log.extend_from_slice(&[0; 20]);
        log.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        log.extend_from_slice(&spec);
        for d in digests {
            log.extend_from_slice(&3u32.to_le_bytes());
            log.extend_from_slice(&0xDu32.to_le_bytes()); // EV_IPL
            log.extend_from_slice(&1u32.to_le_bytes());
            log.extend_from_slice(&ccel::TPM_ALG_SHA384.to_le_bytes());
            log.extend_from_slice(d);
            log.extend_from_slice(&4u32.to_le_bytes());
            log.extend_from_slice(b"boot");
        }
        log
    }

    fn with_log(log: &EventLog, ccel: Option<&[u8]>) -> Value {
        serde_json::json!({
            "quote": "",
            "cc_eventlog": ccel.map(|c| STANDARD.encode(c)),
            "cel_eventlog": log.to_json(),
        })
    }

    /// `tdx` claims through the agent's log: replayed into RTMR2 after the CCEL's part, then
    /// the same mode/roothash/image-version claims and policy checks as `tpm`.
    #[test]
    fn tdx_agent_log_into_rtmr2() {
        let policy = open_policy();
        let log = agent_log(Mode::Production);
        let events = pre_attest_events("production");
        let events: Vec<&str> = events.iter().map(String::as_str).collect();
        let rtmr2 = rtmr2_by_hand([0; 48], &events);

        let v = tdx_agent_log(&with_log(&log, None), &rtmr2, &policy).unwrap();
        assert!(!v.debug);
        assert_eq!(v.mode.as_deref(), Some("production"));
        assert_eq!(v.roothash, Some("ab".repeat(32)));
        assert_eq!(v.image_version.as_deref(), Some("cvm-demo 1"));
        // roothash / image_version pins work as for tpm.
        let mut pins = policy.clone();
        pins.roothash = Some("ab".repeat(32));
        pins.image_version = Some("cvm-demo 1".into());
        check_policy(&v, &pins).unwrap();
        pins.roothash = Some("cd".repeat(32));
        assert!(matches!(
            check_policy(&v, &pins),
            Err(VerifyError::Claim {
                what: "root hash",
                ..
            })
        ));
        // The reference prefix check applies too.
        let facts = cvm_measure::Facts {
            roothash: Some("ab".repeat(32)),
            image_version: Some("cvm-demo 1".into()),
            initdata: Some(TEST_INITDATA.to_vec()),
            ..cvm_measure::Facts::default()
        };
        let mut with_ref = policy.clone();
        with_ref.reference = Some(predict(&facts, &[HashAlg::Sha256]).unwrap().log);
        tdx_agent_log(&with_log(&log, None), &rtmr2, &with_ref).unwrap();
        let mut other = facts.clone();
        other.image_version = Some("cvm-demo 2".into());
        with_ref.reference = Some(predict(&other, &[HashAlg::Sha256]).unwrap().log);
        let err = tdx_agent_log(&with_log(&log, None), &rtmr2, &with_ref).unwrap_err();
        assert!(
            err.to_string().contains("differs from the reference"),
            "{err}"
        );

        // A different RTMR2 (another boot, or events the log does not show).
        let err = tdx_agent_log(&with_log(&log, None), &[7; 48], &policy).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("event log: the replayed log gives RTMR2 "),
            "{err}"
        );
        // No log: the mode is unknown.
        let err = tdx_agent_log(&serde_json::json!({"quote": ""}), &rtmr2, &policy).unwrap_err();
        assert!(err.to_string().contains("no cel_eventlog"), "{err}");

        // Debug mode is a debug claim: refused unless the policy allows debug.
        let debug = agent_log(Mode::Debug);
        let events = pre_attest_events("debug");
        let events: Vec<&str> = events.iter().map(String::as_str).collect();
        let v = tdx_agent_log(
            &with_log(&debug, None),
            &rtmr2_by_hand([0; 48], &events),
            &policy,
        )
        .unwrap();
        assert!(v.debug);
        assert!(matches!(check_policy(&v, &policy), Err(VerifyError::Debug)));
    }

    #[test]
    fn tdx_agent_log_after_the_ccel() {
        let policy = open_policy();
        let log = agent_log(Mode::Production);
        let events = pre_attest_events("production");
        let events: Vec<&str> = events.iter().map(String::as_str).collect();

        // The real OVMF CCEL: its RTMR2 part is the start (the CCEL's own replay gives it).
        let real = fixture("tdx/CCEL_data_ovmf");
        let start = ccel::EventLog::parse(&real)
            .unwrap()
            .replay_rtmrs()
            .unwrap()[2];
        let rtmr2 = rtmr2_by_hand(start, &events);
        tdx_agent_log(&with_log(&log, Some(&real)), &rtmr2, &policy).unwrap();
        if start != [0; 48] {
            // Without the CCEL the replay starts at zero and cannot match.
            assert!(tdx_agent_log(&with_log(&log, None), &rtmr2, &policy).is_err());
        }

        // A synthetic CCEL with two RTMR2 events.
        let boot = [[1u8; 48], [2u8; 48]];
        let ccel = ccel_with_rtmr2(&boot);
        let mut start = [0u8; 48];
        for d in &boot {
            start = rtmr2_by_hand_digest(start, d);
        }
        let rtmr2 = rtmr2_by_hand(start, &events);
        tdx_agent_log(&with_log(&log, Some(&ccel)), &rtmr2, &policy).unwrap();
        assert!(
            tdx_agent_log(
                &with_log(&log, Some(&ccel[..ccel.len() - 3])),
                &rtmr2,
                &policy
            )
            .unwrap_err()
            .to_string()
            .starts_with("event log: cc_eventlog: ")
        );

        // A log taken after launch, with the separator moved into the CCEL part: the
        // separator's digest is a constant and is refused there too.
        use sha2::{Digest as _, Sha384};
        let separator: [u8; 48] = Sha384::digest(b"separator:").into();
        let mut hidden = boot.to_vec();
        hidden.push(separator);
        let ccel = ccel_with_rtmr2(&hidden);
        let start = rtmr2_by_hand_digest(start, &separator);
        let err = tdx_agent_log(
            &with_log(&log, Some(&ccel)),
            &rtmr2_by_hand(start, &events),
            &policy,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("is cvm-agent's launch separator"),
            "{err}"
        );
    }

    fn rtmr2_by_hand_digest(rtmr: [u8; 48], digest: &[u8; 48]) -> [u8; 48] {
        use sha2::{Digest as _, Sha384};
        Sha384::new()
            .chain_update(rtmr)
            .chain_update(digest)
            .finalize()
            .into()
    }

    /// Only the agent's records, and no separator, may be in a `tdx` log.
    #[test]
    fn tdx_agent_log_refuses_foreign_records_and_the_separator() {
        let policy = open_policy();
        let log = agent_log(Mode::Production);
        let events = pre_attest_events("production");
        let events: Vec<&str> = events.iter().map(String::as_str).collect();
        let rtmr2 = rtmr2_by_hand([0; 48], &events);
        let records = log.to_json().as_array().unwrap().clone();

        // The separator, as the agent records it, after the pre-attestation events.
        let mut sealed = cvm_measure::Measurer::new(&[HashAlg::Sha256]).unwrap();
        for r in log.records() {
            let (kind, value) = r.agent_event().unwrap();
            let event = match kind {
                EventKind::Mode => Event::mode(Mode::Production),
                EventKind::RootHash => Event::roothash(value).unwrap(),
                EventKind::ImageVersion => Event::image_version(value).unwrap(),
                _ => Event::initdata(TEST_INITDATA),
            };
            sealed.record(event).unwrap();
        }
        sealed.record(Event::separator()).unwrap();
        let mut all = events.clone();
        all.push("separator:");
        let err = tdx_agent_log(
            &with_log(sealed.log(), None),
            &rtmr2_by_hand([0; 48], &all),
            &policy,
        )
        .unwrap_err();
        assert!(err.to_string().contains("launch separator"), "{err}");

        // The separator relabelled as another content type (same digest): not the agent's.
        let mut relabelled = sealed.log().to_json().as_array().unwrap().clone();
        let last = relabelled.len() - 1;
        relabelled[last]["content_type"] = Value::from("systemd");
        let relabelled = EventLog::from_json(&Value::Array(relabelled)).unwrap();
        let err = tdx_agent_log(
            &with_log(&relabelled, None),
            &rtmr2_by_hand([0; 48], &all),
            &policy,
        )
        .unwrap_err();
        // The log check itself refuses it (PCR 15 takes only agent records).
        assert!(
            err.to_string()
                .contains("a \"systemd\" record in PCR 15: only cvm-agent records may extend it"),
            "{err}"
        );

        // A foreign record inserted in PCR 15 (whatever it extended).
        let mut foreign = records.clone();
        foreign.insert(
            1,
            serde_json::json!({
                "pcr": 15,
                "digests": [{"hashAlg": "sha256", "digest": "00".repeat(32)}],
                "content_type": "systemd",
                "content": {"string": "x"},
            }),
        );
        for (i, r) in foreign.iter_mut().enumerate() {
            r["recnum"] = Value::from(i);
        }
        let foreign = EventLog::from_json(&Value::Array(foreign)).unwrap();
        let err = tdx_agent_log(&with_log(&foreign, None), &rtmr2, &policy).unwrap_err();
        // The log check itself refuses it (PCR 15 takes only agent records).
        assert!(
            err.to_string()
                .contains("a \"systemd\" record in PCR 15: only cvm-agent records may extend it"),
            "{err}"
        );
    }

    /// A real OVMF + swtpm firmware log and the SHA-256 PCRs the guest's TPM had in the same
    /// boot (cvm-uki's fixtures, see their PROVENANCE.md).
    fn real_boot(tag: &str) -> (Vec<u8>, Vec<[u8; 32]>) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../uki/tests/fixtures");
        let log = std::fs::read(format!("{dir}/{tag}.eventlog.bin")).unwrap();
        let text = std::fs::read_to_string(format!("{dir}/{tag}.pcrs.txt")).unwrap();
        let pcrs: Vec<[u8; 32]> = text
            .lines()
            .filter_map(|l| l.strip_prefix("PCR sha256 "))
            .map(|l| {
                let hex = l.split_once(' ').unwrap().1;
                hex::decode(hex).unwrap().try_into().unwrap()
            })
            .collect();
        assert_eq!(pcrs.len(), 24);
        (log, pcrs)
    }

    /// The real logs replay to the TPM's boot PCRs; any difference in 0-7, 9, 11, 12 is
    /// refused naming the first PCR that differs and both values; PCR 10 (IMA's, which the
    /// firmware log does not explain) is not compared.
    #[test]
    fn firmware_log_replays_to_the_quoted_boot_pcrs() {
        for tag in ["ovmf-qemu-kernel", "ovmf-boot-option"] {
            let (log, pcrs) = real_boot(tag);
            check_firmware_log(&log, &pcrs).unwrap();
            assert_ne!(pcrs[10], [0; 32], "{tag}: IMA extended PCR 10");
            for pcr in BOOT_PCRS {
                let mut quoted = pcrs.clone();
                quoted[pcr as usize][0] ^= 1;
                quoted[12][31] ^= 1; // a later one differs too: the first is named
                let err = check_firmware_log(&log, &quoted).unwrap_err();
                let want = if pcr == 12 { 12 } else { pcr };
                assert_eq!(
                    err.to_string(),
                    format!(
                        "firmware event log (eventlog): the log replays PCR {want} to {}, the \
                         quote has {}",
                        hex::encode(&pcrs[want as usize]),
                        hex::encode(&quoted[want as usize])
                    ),
                    "{tag} PCR {pcr}"
                );
            }
        }
        // The other boot's log does not explain this boot's quote (PCR 1 and 4 differ).
        let (log, _) = real_boot("ovmf-qemu-kernel");
        let (_, other) = real_boot("ovmf-boot-option");
        let err = check_firmware_log(&log, &other).unwrap_err();
        assert!(err.to_string().contains("replays PCR 1 to"), "{err}");
    }

    /// Hostile logs are refusals with the parser's reason, never panics.
    #[test]
    fn malformed_firmware_logs_are_refused() {
        let (log, pcrs) = real_boot("ovmf-boot-option");
        let err = check_firmware_log(&log[..log.len() / 2], &pcrs).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("firmware event log (eventlog): event log truncated in event "),
            "{err}"
        );
        let err = check_firmware_log(b"not a log", &pcrs).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        let mut no_spec = log.clone();
        no_spec[4] = 1;
        let err = check_firmware_log(&no_spec, &pcrs).unwrap_err();
        assert!(err.to_string().contains("not a Spec ID Event03"), "{err}");
        // A log without a SHA-256 bank cannot explain the SHA-256 quote.
        let sha1_only = cvm_tcglog::EventLog::with_events(
            &[cvm_tcglog::HashAlg::Sha1],
            &[(4, 4, &[0, 0, 0, 0])],
        );
        let err = check_firmware_log(&sha1_only.encode(), &pcrs).unwrap_err();
        assert!(
            err.to_string().ends_with("event 1: no sha256 digest"),
            "{err}"
        );
        // Every cut and every byte flip of the real log: an error or a verdict, never a panic.
        for n in (0..log.len()).step_by(7) {
            let _ = check_firmware_log(&log[..n], &pcrs);
        }
        for i in (0..log.len()).step_by(3) {
            let mut x = log.clone();
            x[i] ^= 0xff;
            let _ = check_firmware_log(&x, &pcrs);
        }
    }

    #[test]
    fn pcr_pins_hold_against_the_quote() {
        let (_, pcrs) = real_boot("ovmf-boot-option");
        let mut policy = Policy::default();
        check_pcr_pins(&pcrs, &policy).unwrap();
        for pcr in [4, 9, 11, 12] {
            policy.pcrs.insert(pcr, hex::encode(&pcrs[pcr as usize]));
        }
        check_pcr_pins(&pcrs, &policy).unwrap();
        let wrong = "00".repeat(32);
        policy.pcrs.insert(11, wrong.clone());
        assert_eq!(
            check_pcr_pins(&pcrs, &policy).unwrap_err().to_string(),
            format!(
                "PCR 11 is {}, but the policy pins {wrong}",
                hex::encode(&pcrs[11])
            )
        );
        // PCR 12 is all zeros in these boots: a pin of zeros holds, a non-zero one does not.
        policy.pcrs.insert(11, hex::encode(&pcrs[11]));
        policy.pcrs.insert(12, "00".repeat(32));
        check_pcr_pins(&pcrs, &policy).unwrap();
        policy.pcrs.insert(12, "01".repeat(32));
        assert!(matches!(
            check_pcr_pins(&pcrs, &policy),
            Err(VerifyError::Pcr { pcr: 12, .. })
        ));
    }

    #[test]
    fn ak_store_is_the_policy_list() {
        let listed = "aa".repeat(32);
        let policy = Policy {
            trusted_aks: vec![listed.clone()],
            ..Policy::default()
        };
        let store = AkStore::new(&policy);
        store.check(&listed).unwrap();
        assert!(matches!(
            store.check(&"bb".repeat(32)),
            Err(VerifyError::AkNotTrusted(_))
        ));
        // No list, no AK: nothing is trusted on first use.
        let store = AkStore::new(&Policy::default());
        assert!(store.check(&listed).is_err());
        assert!(store.check(&listed).is_err());
    }

    #[test]
    fn prefix_and_policy_checks() {
        let facts = Facts {
            roothash: Some("ab".repeat(32)),
            image_version: Some("img 1".into()),
            ..Facts::default()
        };
        let reference = predict(&facts, &[HashAlg::Sha256]).unwrap().log;
        let mut shorter = facts.clone();
        shorter.image_version = None;
        let log = predict(&shorter, &[HashAlg::Sha256]).unwrap().log;
        // The prediction ends in a separator; the guest's log stops before it.
        let prefix = EventLog::from_json(&Value::Array(
            reference.to_json().as_array().unwrap()[..2].to_vec(),
        ))
        .unwrap();
        // mode + roothash + image-version: everything measured before attestation.
        let pre_attest = EventLog::from_json(&Value::Array(
            reference.to_json().as_array().unwrap()[..3].to_vec(),
        ))
        .unwrap();
        check_prefix(&pre_attest, &reference).unwrap();
        check_prefix(&reference, &reference).unwrap();
        // A log that stops early (here: without the image version) is not enough.
        let err = check_prefix(&prefix, &reference).unwrap_err();
        assert!(
            err.to_string().contains("measures 3 before attestation"),
            "{err}"
        );
        let empty = EventLog::from_json(&Value::Array(vec![])).unwrap();
        assert!(check_prefix(&empty, &reference).is_err());
        let err = check_prefix(&log, &reference).unwrap_err();
        assert_eq!(
            err.to_string(),
            "event log: record 2 (separator) differs from the reference"
        );
        let err = check_prefix(&reference, &pre_attest).unwrap_err();
        assert!(err.to_string().contains("the reference only 3"), "{err}");
        let mut longer = reference.to_json().as_array().unwrap().clone();
        let mut extra = longer[0].clone();
        extra["recnum"] = serde_json::json!(longer.len());
        longer.push(extra);
        let err = check_prefix(
            &EventLog::from_json(&Value::Array(longer)).unwrap(),
            &reference,
        )
        .unwrap_err();
        assert!(err.to_string().contains("the reference only"), "{err}");

        let v = Verified {
            debug: false,
            roothash: Some("ab".repeat(32)),
            ..Verified::default()
        };
        let mut p = Policy::default();
        check_policy(&v, &p).unwrap();
        p.roothash = Some("cd".repeat(32));
        assert!(matches!(
            check_policy(&v, &p),
            Err(VerifyError::Claim {
                what: "root hash",
                ..
            })
        ));
        p.roothash = None;
        p.image_version = Some("img 1".into());
        assert_eq!(
            check_policy(&v, &p).unwrap_err().to_string(),
            "image version is missing from the evidence and the policy requires it"
        );
        let debug = Verified {
            debug: true,
            ..Verified::default()
        };
        assert!(matches!(
            check_policy(&debug, &Policy::default()),
            Err(VerifyError::Debug)
        ));
        let allow = Policy {
            allow_debug: true,
            ..Policy::default()
        };
        check_policy(&debug, &allow).unwrap();
    }

    /// The real VLEK report is genuine (signed, chained to AMD's ASVK, masked CHIP_ID is fine
    /// for a VLEK) but was requested at VMPL 1: refused as Trustee refuses it.
    #[test]
    fn snp_vmpl_other_than_0_is_refused() {
        let vlek = snp_evidence_of("snp/test-vlek-report.bin", "snp/test-vlek.der");
        let err = run(Tee::Snp, &vlek).unwrap_err();
        assert!(
            matches!(&err, VerifyError::Claim { what: "the SNP VMPL", got, .. } if got == "1"),
            "{err}"
        );
        let report = AttestationReport::parse(&fixture("snp/test-vlek-report.bin")).unwrap();
        let err = verify_additional(
            Tee::Snp,
            &vlek,
            &report.report_data[..48],
            None,
            &pinned_policy(&vlek),
        )
        .unwrap_err();
        assert!(err.to_string().contains("the SNP VMPL"), "{err}");
    }

    /// Each SNP refusal on the genuine VCEK report with one field changed, checked directly
    /// (through `verify_snp` the changed report's signature fails first).
    #[test]
    fn snp_report_checks() {
        let report = AttestationReport::parse(&fixture("snp/test-report.bin")).unwrap();
        let milan = snp::Product::Milan;
        let policy = open_policy();
        check_snp_report(&report, milan, &policy).unwrap();
        let mut vmpl = report.clone();
        vmpl.vmpl = 1;
        assert!(matches!(
            check_snp_report(&vmpl, milan, &policy),
            Err(VerifyError::Claim {
                what: "the SNP VMPL",
                ..
            })
        ));
        let mut migrate = report.clone();
        migrate.policy = snp::GuestPolicy(report.policy.0 | 1 << 18);
        assert!(matches!(
            check_snp_report(&migrate, milan, &policy),
            Err(VerifyError::Claim {
                what: "the SNP guest policy's MIGRATE_MA",
                ..
            })
        ));
        let allow = Policy {
            snp_allow_migrate_ma: true,
            ..open_policy()
        };
        check_snp_report(&migrate, milan, &allow).unwrap();
        // The fixture's REPORTED_TCB: bootloader 3, TEE 0, SNP 8, microcode 115.
        let at = snp::MinTcb {
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 115,
            fmc: 0,
        };
        let floor = |min_tcb| Policy {
            snp_min_tcb: min_tcb,
            ..open_policy()
        };
        check_snp_report(&report, milan, &floor(at)).unwrap();
        let err =
            check_snp_report(&report, milan, &floor(snp::MinTcb { snp: 9, ..at })).unwrap_err();
        assert!(
            matches!(&err, VerifyError::Claim { what: "the SNP REPORTED_TCB", got, .. } if got.contains("SNP SPL is 8")),
            "{err}"
        );
        // With the floor, end to end: refused before the report data.
        let ev = snp_evidence();
        let mut policy = pinned_policy(&ev);
        policy.snp_min_tcb = snp::MinTcb {
            microcode: 116,
            ..at
        };
        let err = verify_with(Tee::Snp, &ev, &policy).unwrap_err();
        assert!(err.to_string().contains("REPORTED_TCB"), "{err}");
        // A zeroed CHIP_ID with the VCEK: the signature fails first; the CHIP_ID check itself
        // is `snp::check_chip_id` (cvm-tee's tests).
        let mut masked = fixture("snp/test-report.bin");
        masked[0x1A0..0x1E0].fill(0);
        let mut ev = snp_evidence();
        ev["attestation_report"] = Value::from(STANDARD.encode(&masked));
        assert!(matches!(
            run(Tee::Snp, &ev),
            Err(VerifyError::Signature { tee: "snp", .. })
        ));
    }

    #[test]
    fn td_attributes_checks() {
        let policy = open_policy();
        // The real quotes: DEBUG | SEPT_VE_DISABLE, SEPT_VE_DISABLE.
        check_td_attributes(tdx::TdAttributes(0x1000_0001), &policy).unwrap();
        check_td_attributes(tdx::TdAttributes(0x1000_0000), &policy).unwrap();
        let migratable = tdx::TdAttributes(0x1000_0000 | 1 << 29);
        assert!(matches!(
            check_td_attributes(migratable, &policy),
            Err(VerifyError::Claim {
                what: "the TDX TD_ATTRIBUTES.MIGRATABLE",
                ..
            })
        ));
        let allow = Policy {
            tdx_allow_migratable: true,
            ..open_policy()
        };
        check_td_attributes(migratable, &allow).unwrap();
        assert!(matches!(
            check_td_attributes(tdx::TdAttributes(1 << 2), &allow),
            Err(VerifyError::Claim {
                what: "the TDX TD_ATTRIBUTES reserved bits",
                ..
            })
        ));
        // A modified quote (MIGRATABLE set in the body) fails at the quote signature.
        let mut raw = fixture("tdx/tdx_quote_4.dat");
        raw[48 + 120 + 3] |= 0x20;
        assert!(
            tdx::Quote::parse(&raw)
                .unwrap()
                .body
                .td_attributes
                .migratable()
        );
        let ev = serde_json::json!({"quote": STANDARD.encode(&raw), "cc_eventlog": null});
        assert!(matches!(
            run(Tee::Tdx, &ev),
            Err(VerifyError::Signature { tee: "tdx", .. })
        ));
    }

    /// Additional `tdx` evidence must carry the primary's agent log, record for record.
    #[test]
    fn additional_tdx_log_is_the_primarys() {
        let log = agent_log(Mode::Production);
        let primary = log.to_json();
        same_log(&with_log(&log, None), &primary).unwrap();
        let other = agent_log(Mode::Debug);
        let shorter =
            EventLog::from_json(&Value::Array(primary.as_array().unwrap()[..2].to_vec())).unwrap();
        for ev in [
            with_log(&other, None),
            with_log(&shorter, None),
            json!({"quote": ""}),
            json!({"quote": "", "cel_eventlog": "not a log"}),
        ] {
            let err = same_log(&ev, &primary).unwrap_err();
            assert!(
                err.to_string()
                    .contains("cel_eventlog is not the primary evidence's"),
                "{err}"
            );
        }
    }

    /// `pcrs` and `reference` pins are refusals for evidence that could not be held to them
    /// (`snp`: no PCRs, no agent log; `tdx`: no PCRs), never skipped.
    #[test]
    fn pins_the_evidence_cannot_satisfy_are_refused() {
        let mut policy = open_policy();
        let snp = Verified::default();
        check_producible(Tee::Snp, &snp, &policy).unwrap();
        policy.pcrs.insert(4, "00".repeat(32));
        let err = check_producible(Tee::Snp, &snp, &policy).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the policy pins boot PCRs (pcrs, or the reference's pcrs), which snp evidence \
             cannot satisfy: only vTPM evidence (tpm, az-snp-vtpm, az-tdx-vtpm) has boot PCRs"
        );
        let tdx = Verified {
            log_checked: true,
            ..Verified::default()
        };
        let err = check_producible(Tee::Tdx, &tdx, &policy).unwrap_err();
        assert!(matches!(err, VerifyError::Unproducible { .. }), "{err}");
        let tpm = Verified {
            log_checked: true,
            ..Verified::default()
        };
        check_producible(Tee::Tpm, &tpm, &policy).unwrap();
        check_producible(Tee::AzSnpVtpm, &tpm, &policy).unwrap();
        policy.pcrs.clear();
        policy.reference = Some(agent_log(Mode::Production));
        check_producible(Tee::Tdx, &tdx, &policy).unwrap();
        let err = check_producible(Tee::Snp, &snp, &policy).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the policy pins the agent's log (reference), which snp evidence cannot satisfy: \
             only vTPM and tdx evidence carry the agent's log"
        );
    }

    /// `ak_trust = "certified"`: a listed AK without a certificate is refused, by name.
    #[test]
    fn certified_ak_trust_refuses_the_listed_ak() {
        let listed = "aa".repeat(32);
        let mut policy = Policy {
            trusted_aks: vec![listed.clone()],
            ..Policy::default()
        };
        assert_eq!(
            AkStore::new(&policy)
                .check_with_cert(&listed, b"spki", None)
                .unwrap(),
            "listed"
        );
        policy.ak_trust = AkTrust::Certified;
        let err = AkStore::new(&policy)
            .check_with_cert(&listed, b"spki", None)
            .unwrap_err();
        assert!(matches!(err, VerifyError::AkNotCertified(_)), "{err}");
        // With a certificate it goes to the CA check (none here).
        let err = AkStore::new(&policy)
            .check_with_cert(&listed, b"spki", Some(b"cert"))
            .unwrap_err();
        assert!(err.to_string().contains("names no ak_ca"), "{err}");
    }
}
