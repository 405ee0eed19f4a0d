//! Evidence verification per TEE, with the parsers and verifiers of [`crate::tee`], and the
//! policy checks on what it establishes. Each refusal is one [`VerifyError`] whose text is the
//! precise reason: it goes to the guest as the KBS error's `detail` and ends up in the guest's
//! console error line.
//!
//! Order per TEE: structure and signatures first (nothing is believed before), then the nonce
//! (report data), then the key / platform trust, then the init-data binding, then claims.

use crate::devkbs::policy::{Policy, tee_name};
use crate::hex;
use crate::initdata::InitData;
use crate::kbs::protocol;
use crate::measure::{EventKind, EventLog, PCR_AGENT};
use crate::stage::error_chain as chain;
use crate::tee::azure::{AzSnpVtpmEvidence, AzTdxVtpmEvidence, AzVerified, HwReport};
use crate::tee::snp::{self, AttestationReport, CertTableKind, EndorsementKey};
use crate::tee::tdx;
use crate::tee::tpm::TpmEvidence;
use crate::tpm::HashAlg;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
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
    #[error("{0} does not match the init-data digest")]
    InitDataBinding(&'static str),
    #[error("event log: {0}")]
    EventLog(String),
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
}

/// The trusted AKs: exactly the policy's list (SHA-256 of each AK's DER SPKI), as Trustee's
/// `tpm` verifier holds them.
#[derive(Debug)]
pub struct AkStore {
    listed: Vec<String>,
}

impl AkStore {
    pub fn new(policy: &Policy) -> AkStore {
        AkStore {
            listed: policy.trusted_aks.clone(),
        }
    }

    pub fn check(&self, ak: &str) -> Result<(), VerifyError> {
        if self.listed.iter().any(|l| l == ak) {
            Ok(())
        } else {
            Err(VerifyError::AkNotTrusted(ak.into()))
        }
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
        Tee::Snp => verify_snp(evidence, report_data, init_data)?,
        Tee::Tdx => verify_tdx(evidence, report_data, init_data)?,
        Tee::AzSnpVtpm => {
            let ev = AzSnpVtpmEvidence::from_json(evidence.to_string().as_bytes())
                .map_err(|e| malformed("az-snp-vtpm", &e))?;
            let verified = ev.verify().map_err(|e| signature("az-snp-vtpm", &e))?;
            verify_azure("az-snp-vtpm", &verified, report_data, init_data)?
        }
        Tee::AzTdxVtpm => {
            let ev = AzTdxVtpmEvidence::from_json(evidence.to_string().as_bytes())
                .map_err(|e| malformed("az-tdx-vtpm", &e))?;
            let verified = ev.verify().map_err(|e| signature("az-tdx-vtpm", &e))?;
            verify_azure("az-tdx-vtpm", &verified, report_data, init_data)?
        }
        other => return Err(VerifyError::Unsupported(tee_name(other))),
    };
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
    aks.check(&ak)?;
    let attest = ev.verify().map_err(|e| signature("tpm", &e))?;
    if attest.extra_data != report_data {
        if attest.extra_data.len() != report_data.len() {
            return Err(VerifyError::TpmNonceForm(attest.extra_data.len()));
        }
        return Err(VerifyError::ReportData("the TPM quote's nonce"));
    }
    let pcrs = &ev.tpm_quote.pcrs;
    if let Some(init) = init_data
        && pcrs[8] != init.pcr8_expected()
    {
        return Err(VerifyError::Pcr8);
    }

    // PCR 15 and what it claims, from the agent's log.
    let log_json = ev.cel_eventlog.as_ref().ok_or_else(|| {
        VerifyError::EventLog("the tpm evidence has no cel_eventlog (cvm-agent's log)".into())
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
    if got15 != pcrs[PCR_AGENT as usize] {
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
    if let Some(reference) = &policy.reference {
        check_prefix(&log, reference)?;
    }
    let mut v = Verified::default();
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
    let pcr_claims: Map<String, Value> = pcrs
        .iter()
        .enumerate()
        .map(|(i, p)| (i.to_string(), json!(hex::encode(p))))
        .collect();
    v.claims.insert("pcrs".into(), Value::Object(pcr_claims));
    v.claims.insert("ak".into(), json!(ak));
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

fn verify_snp(
    evidence: &Value,
    report_data: &[u8],
    init_data: Option<&InitData>,
) -> Result<Verified, VerifyError> {
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

fn verify_tdx(
    evidence: &Value,
    report_data: &[u8],
    init_data: Option<&InitData>,
) -> Result<Verified, VerifyError> {
    let raw = b64_member("tdx", evidence, "quote")?.ok_or_else(|| VerifyError::Malformed {
        tee: "tdx",
        why: "no quote".into(),
    })?;
    let quote = tdx::Quote::parse(&raw).map_err(|e| malformed("tdx", &e))?;
    // Signature, QE binding and PCK chain to Intel's root; TCB status needs Intel PCS
    // collateral, which the dev KBS does not fetch.
    quote.verify().map_err(|e| signature("tdx", &e))?;
    let body = &quote.body;
    if body.report_data[..] != *report_data {
        return Err(VerifyError::ReportData("the TDX REPORTDATA"));
    }
    if let Some(init) = init_data
        && body.mr_config_id != init.mrconfigid()
    {
        return Err(VerifyError::InitDataBinding("the TDX MRCONFIGID"));
    }
    let mut v = Verified {
        debug: body.td_attributes.debug(),
        ..Verified::default()
    };
    v.claims
        .insert("mrtd".into(), json!(hex::encode(&body.mr_td)));
    v.claims
        .insert("mrconfigid".into(), json!(hex::encode(&body.mr_config_id)));
    for (i, r) in body.rtmr.iter().enumerate() {
        v.claims.insert(format!("rtmr{i}"), json!(hex::encode(r)));
    }
    Ok(v)
}

fn verify_azure(
    tee: &'static str,
    verified: &AzVerified,
    report_data: &[u8],
    init_data: Option<&InitData>,
) -> Result<Verified, VerifyError> {
    // The Azure attesters quote the digest itself (48 bytes for SHA-384), and Trustee's
    // `verify_nonce` compares exactly: a zero-padded nonce is refused.
    if verified.attest.extra_data != report_data {
        return Err(VerifyError::ReportData("the vTPM quote's nonce"));
    }
    if let Some(init) = init_data
        && verified.pcrs.get(8) != Some(&init.pcr8_expected())
    {
        return Err(VerifyError::Pcr8);
    }
    let debug = match &verified.hcl.hw_report {
        HwReport::Snp(r) => r.debug_allowed(),
        HwReport::Tdx(r) => r.td_attributes.debug(),
    };
    let mut v = Verified {
        debug,
        ..Verified::default()
    };
    let pcr_claims: Map<String, Value> = verified
        .pcrs
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
    Ok(v)
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
    use crate::measure::{Facts, predict};

    fn fixture(path: &str) -> Vec<u8> {
        let p = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
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
            require_initdata: false,
            trusted_aks: vec![fixture_ak()],
            ..Policy::default()
        }
    }

    fn run(tee: Tee, evidence: &Value) -> Result<Verified, VerifyError> {
        let policy = open_policy();
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
        let mut policy = open_policy();
        policy.tee.push(Tee::Sgx);
        let err = verify(Tee::Sgx, &snp, &[0; 48], None, &policy, &aks).unwrap_err();
        assert!(matches!(err, VerifyError::Unsupported(_)), "{err}");
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
}
