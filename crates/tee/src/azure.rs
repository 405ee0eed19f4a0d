//! Azure confidential VMs: the HCL report the paravisor writes to vTPM NV index 0x01400001,
//! and the KBS protocol's `az-snp-vtpm` / `az-tdx-vtpm` evidence.
//!
//! HCL report layout (Azure's `az-cvm-vtpm` crate, `hcl` module):
//!
//! ```text
//! 0x000 header: "HCLA" ‖ version u32 ‖ report size u32 ‖ request type u32 ‖ status u32 ‖ 12 reserved
//! 0x020 hardware report area (1184 bytes): an SNP ATTESTATION_REPORT, or a TDREPORT (1024) + padding
//! 0x4C0 IGVM request data: data size u32 ‖ version u32 ‖ report type u32 (2 SNP, 4 TDX)
//!       ‖ report-data hash type u32 (1 SHA-256, 2 SHA-384, 3 SHA-512) ‖ variable data size u32
//!       ‖ variable data: the runtime-data JSON
//! ```
//!
//! Binding (checked against both fixtures): the hardware report's REPORT_DATA is
//! `H(variable data) ‖ zero padding`, with H the declared hash over exactly the variable-data
//! bytes. The runtime data carries the vTPM's attestation key (`keys[kid="HCLAkPub"]`, an RSA
//! JWK), so a verified hardware report vouches for the AK, and the AK signs the TPM quote.

use rsa::pkcs8::EncodePublicKey as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256, Sha384, Sha512};

use super::bytes::Reader;
use super::detect::TeeKind;
use super::encoding::{b64url_bytes, b64url_decode, hex_bytes, hex_pcrs};
use super::snp::{self, AttestationReport, EndorsementKey, SnpError};
use super::tdx::{self, TdReport, TdxError};
use super::tpm_quote;
use cvm_tpm::verify::{AkPublic, Attest, QuoteError};

/// The vTPM NV index holding the HCL report.
pub const HCL_NV_INDEX: u32 = 0x0140_0001;
const HEADER_LEN: usize = 0x20;
const HW_REPORT_LEN: usize = 1184;
const REQUEST_DATA_OFFSET: usize = HEADER_LEN + HW_REPORT_LEN;
const REQUEST_DATA_HEADER_LEN: usize = 20;
/// The NV index is a few KiB; anything larger is not an HCL report.
const MAX_HCL_LEN: usize = 64 * 1024;
/// The AK's JWK key id in the runtime data.
pub const AK_KID: &str = "HCLAkPub";

/// Why an HCL report or Azure evidence was rejected.
#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    #[error("HCL report is truncated ({0} bytes)")]
    Truncated(usize),
    #[error("HCL report is {0} bytes, more than {MAX_HCL_LEN}")]
    TooLarge(usize),
    #[error("HCL report does not start with \"HCLA\"")]
    Signature,
    #[error("unsupported HCL report version {0} (known: 1, 2)")]
    Version(u32),
    #[error("HCL report status is {0:#x}, not success")]
    Status(u32),
    #[error("HCL report sizes are inconsistent ({0})")]
    Sizes(&'static str),
    #[error("unsupported IGVM report type {0} (2 = SNP, 4 = TDX)")]
    ReportType(u32),
    #[error("unsupported report-data hash type {0} (1 = SHA-256, 2 = SHA-384, 3 = SHA-512)")]
    HashType(u32),
    #[error("hardware report in the HCL report is invalid")]
    Snp(#[source] SnpError),
    #[error("TD report or quote is invalid")]
    Tdx(#[source] TdxError),
    #[error("REPORT_DATA does not equal the hash of the HCL runtime data")]
    Binding,
    #[error("HCL runtime data is not the expected JSON")]
    RuntimeData(#[source] serde_json::Error),
    #[error("HCL runtime data has no RSA key with kid {AK_KID:?}")]
    NoAk,
    #[error("the {AK_KID} JWK is not a usable RSA public key")]
    AkKey,
    #[error("evidence JSON is malformed")]
    Evidence(#[source] serde_json::Error),
    #[error("unsupported {kind} evidence version {version}")]
    EvidenceVersion { kind: &'static str, version: u32 },
    #[error("the HCL report holds a {found} report, expected {expected}")]
    WrongHardware {
        found: &'static str,
        expected: &'static str,
    },
    #[error("TPM quote does not verify")]
    TpmQuote(#[source] QuoteError),
    #[error("SNP report was requested at VMPL {0}, not 0 (the paravisor's level)")]
    Vmpl(u32),
    #[error("TD quote was not made from the HCL report's TDREPORT")]
    TdReportMismatch,
}

/// IGVM report-data hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashType {
    Sha256,
    Sha384,
    Sha512,
}

impl HashType {
    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashType::Sha256 => Sha256::digest(data).to_vec(),
            HashType::Sha384 => Sha384::digest(data).to_vec(),
            HashType::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

/// The hardware report inside the HCL report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HwReport {
    Snp(Box<AttestationReport>),
    Tdx(Box<TdReport>),
}

impl HwReport {
    pub fn report_data(&self) -> &[u8; 64] {
        match self {
            HwReport::Snp(r) => &r.report_data,
            HwReport::Tdx(r) => &r.report_data,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            HwReport::Snp(_) => "SNP",
            HwReport::Tdx(_) => "TDX",
        }
    }
}

/// A parsed HCL report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HclReport {
    pub version: u32,
    pub report_size: u32,
    pub request_type: u32,
    pub status: u32,
    pub hw_report: HwReport,
    pub request_data_version: u32,
    pub hash_type: HashType,
    /// The runtime-data JSON, exactly the bytes the hash covers.
    pub variable_data: Vec<u8>,
}

impl HclReport {
    /// Parses the NV index contents. Bytes after `report_size` (the rest of the NV area) are
    /// ignored: nothing covers them.
    pub fn parse(b: &[u8]) -> Result<Self, AzureError> {
        if b.len() > MAX_HCL_LEN {
            return Err(AzureError::TooLarge(b.len()));
        }
        let mut r = Reader::new(b);
        let t = || AzureError::Truncated(b.len());
        let sig: [u8; 4] = r.array().ok_or_else(t)?;
        if &sig != b"HCLA" {
            return Err(AzureError::Signature);
        }
        let version = r.u32_le().ok_or_else(t)?;
        let report_size = r.u32_le().ok_or_else(t)?;
        let request_type = r.u32_le().ok_or_else(t)?;
        let status = r.u32_le().ok_or_else(t)?;
        if !matches!(version, 1 | 2) {
            return Err(AzureError::Version(version));
        }
        if status != 0 {
            return Err(AzureError::Status(status));
        }
        let report_size = report_size as usize;
        if report_size > b.len() {
            return Err(AzureError::Truncated(b.len()));
        }
        let b = &b[..report_size];
        let hw = b
            .get(HEADER_LEN..REQUEST_DATA_OFFSET)
            .ok_or(AzureError::Truncated(b.len()))?;
        let mut r = Reader::new(b.get(REQUEST_DATA_OFFSET..).unwrap_or_default());
        let t = || AzureError::Truncated(b.len());
        let data_size = r.u32_le().ok_or_else(t)? as usize;
        let request_data_version = r.u32_le().ok_or_else(t)?;
        let report_type = r.u32_le().ok_or_else(t)?;
        let hash_type = r.u32_le().ok_or_else(t)?;
        let var_size = r.u32_le().ok_or_else(t)? as usize;
        let variable_data = r.take(var_size).ok_or_else(t)?.to_vec();
        if data_size != REQUEST_DATA_HEADER_LEN + var_size {
            return Err(AzureError::Sizes(
                "request data size ≠ header + variable data",
            ));
        }
        if r.remaining() != 0 {
            return Err(AzureError::Sizes(
                "report size ≠ header + hardware report + request data",
            ));
        }
        let hash_type = match hash_type {
            1 => HashType::Sha256,
            2 => HashType::Sha384,
            3 => HashType::Sha512,
            other => return Err(AzureError::HashType(other)),
        };
        let hw_report = match report_type {
            2 => HwReport::Snp(Box::new(
                AttestationReport::parse(hw).map_err(AzureError::Snp)?,
            )),
            4 => {
                // The TDREPORT is 1024 bytes; the rest of the 1184-byte area is padding.
                let td = hw
                    .get(..tdx::TD_REPORT_LEN)
                    .ok_or(AzureError::Truncated(b.len()))?;
                HwReport::Tdx(Box::new(TdReport::parse(td).map_err(AzureError::Tdx)?))
            }
            other => return Err(AzureError::ReportType(other)),
        };
        Ok(Self {
            version,
            report_size: report_size as u32,
            request_type,
            status,
            hw_report,
            request_data_version,
            hash_type,
            variable_data,
        })
    }

    /// The KBS TEE type this report belongs to.
    pub fn tee_kind(&self) -> TeeKind {
        match self.hw_report {
            HwReport::Snp(_) => TeeKind::AzSnpVtpm,
            HwReport::Tdx(_) => TeeKind::AzTdxVtpm,
        }
    }

    /// REPORT_DATA == H(variable data) ‖ zeros. Only this makes the runtime data (and the AK
    /// in it) as trustworthy as the hardware report.
    pub fn verify_report_data_binding(&self) -> Result<(), AzureError> {
        let digest = self.hash_type.digest(&self.variable_data);
        let rd = self.hw_report.report_data();
        if rd[..digest.len()] != digest[..] || rd[digest.len()..].iter().any(|&b| b != 0) {
            return Err(AzureError::Binding);
        }
        Ok(())
    }

    pub fn runtime_data(&self) -> Result<RuntimeData, AzureError> {
        serde_json::from_slice(&self.variable_data).map_err(AzureError::RuntimeData)
    }

    /// The vTPM attestation key from the runtime data. Trust it only after
    /// [`HclReport::verify_report_data_binding`] and verification of the hardware report.
    pub fn ak_pub(&self) -> Result<AkPublicKey, AzureError> {
        self.runtime_data()?.ak_pub()
    }
}

/// The HCL runtime data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeData {
    pub keys: Vec<Jwk>,
    #[serde(rename = "vm-configuration", default)]
    pub vm_configuration: Option<serde_json::Value>,
    /// Hex; with evidence v2 the KBS report data (zero-padded to 64 bytes).
    #[serde(rename = "user-data", default)]
    pub user_data: Option<String>,
}

impl RuntimeData {
    pub fn ak_pub(&self) -> Result<AkPublicKey, AzureError> {
        let jwk = self
            .keys
            .iter()
            .find(|k| k.kid == AK_KID && k.kty == "RSA")
            .ok_or(AzureError::NoAk)?;
        AkPublicKey::from_jwk(jwk)
    }

    /// `user-data` decoded from hex.
    pub fn user_data_bytes(&self) -> Option<Vec<u8>> {
        cvm_text::hex::decode(self.user_data.as_deref()?)
    }
}

/// A JSON Web Key as the HCL writes it (RSA only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kid: String,
    pub kty: String,
    #[serde(default)]
    pub key_ops: Vec<String>,
    #[serde(default)]
    pub e: String,
    #[serde(default)]
    pub n: String,
}

/// The vTPM AK: raw modulus/exponent (big-endian), DER SubjectPublicKeyInfo, and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkPublicKey {
    pub modulus: Vec<u8>,
    pub exponent: Vec<u8>,
    pub spki_der: Vec<u8>,
    pub key: rsa::RsaPublicKey,
}

impl AkPublicKey {
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, AzureError> {
        let modulus = b64url_decode(&jwk.n).ok_or(AzureError::AkKey)?;
        let exponent = b64url_decode(&jwk.e).ok_or(AzureError::AkKey)?;
        // RsaPublicKey::new enforces the size limits (≤ 4096 bits) and a sane exponent.
        let key = rsa::RsaPublicKey::new(
            rsa::BigUint::from_bytes_be(&modulus),
            rsa::BigUint::from_bytes_be(&exponent),
        )
        .map_err(|_| AzureError::AkKey)?;
        // vTPM AKs are RSA-2048; anything shorter is not a key worth trusting.
        if rsa::traits::PublicKeyParts::size(&key) < 256 {
            return Err(AzureError::AkKey);
        }
        let spki_der = key
            .to_public_key_der()
            .map_err(|_| AzureError::AkKey)?
            .as_bytes()
            .to_vec();
        Ok(Self {
            modulus,
            exponent,
            spki_der,
            key,
        })
    }

    /// The key in the form [`cvm_tpm::verify`] takes.
    pub fn verifier_key(&self) -> AkPublic<'_> {
        AkPublic::Key(&self.key)
    }
}

/// The TPM quote in Azure evidence JSON: hex fields (Trustee's `TpmQuote`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AzTpmQuote {
    /// Raw RSASSA-PKCS1-v1_5 signature.
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
    /// TPMS_ATTEST.
    #[serde(with = "hex_bytes")]
    pub message: Vec<u8>,
    /// SHA-256 PCRs 0..23.
    #[serde(with = "hex_pcrs")]
    pub pcrs: Vec<[u8; 32]>,
}

impl AzTpmQuote {
    pub fn to_quote(&self) -> tpm_quote::Quote {
        tpm_quote::Quote {
            signature: self.signature.clone(),
            message: self.message.clone(),
            pcrs: self.pcrs.clone(),
        }
    }
}

/// What cvm-agent adds to the Azure evidence, as in its `tpm` evidence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentLogs {
    /// cvm-agent's measurement log (CEL-JSON records), as in `tpm` evidence
    /// ([`crate::tpm::TpmEvidence::cel_eventlog`]): a verifier replays it to the quoted
    /// PCR 15 and reads the mode, root hash and image version from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cel_eventlog: Option<serde_json::Value>,
    /// The firmware's TCG event log, as in `tpm` evidence ([`crate::tpm::TpmEvidence::eventlog`]:
    /// standard base64, at most [`crate::tpm::MAX_FIRMWARE_LOG`] bytes); absent without one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::tpm::b64_firmware_log"
    )]
    pub eventlog: Option<Vec<u8>>,
}

/// `az-snp-vtpm` evidence, versions 1 and 2 (same fields; v2 puts the report data into the
/// runtime data's `user-data`). Field names and encodings as in Trustee's verifier
/// (`deps/verifier/src/az_snp_vtpm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AzSnpVtpmEvidence {
    pub version: u32,
    pub tpm_quote: AzTpmQuote,
    #[serde(with = "b64url_bytes")]
    pub hcl_report: Vec<u8>,
    /// DER VCEK.
    #[serde(with = "b64url_bytes")]
    pub vcek: Vec<u8>,
    /// The agent's and the firmware's logs: members Trustee's Azure verifiers
    /// (`deps/verifier/src/az_*_vtpm/compat.rs`, no `deny_unknown_fields`) ignore.
    #[serde(flatten)]
    pub logs: AgentLogs,
}

/// `az-tdx-vtpm` evidence, version 1 (Trustee's `deps/verifier/src/az_tdx_vtpm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AzTdxVtpmEvidence {
    pub version: u32,
    pub tpm_quote: AzTpmQuote,
    #[serde(with = "b64url_bytes")]
    pub hcl_report: Vec<u8>,
    /// DCAP quote made from the HCL report's TDREPORT.
    #[serde(with = "b64url_bytes")]
    pub td_quote: Vec<u8>,
    /// The agent's and the firmware's logs: members Trustee's Azure verifiers
    /// (`deps/verifier/src/az_*_vtpm/compat.rs`, no `deny_unknown_fields`) ignore.
    #[serde(flatten)]
    pub logs: AgentLogs,
}

/// What verified Azure evidence establishes.
#[derive(Debug, Clone)]
pub struct AzVerified {
    pub hcl: HclReport,
    pub runtime_data: RuntimeData,
    pub ak: AkPublicKey,
    /// The quote message; `extra_data` is the nonce, for the caller to compare with the
    /// expected report data.
    pub attest: Attest,
    pub pcrs: Vec<[u8; 32]>,
}

/// The steps common to both flavours: binding, AK, TPM quote.
fn verify_vtpm_part(hcl_bytes: &[u8], quote: &AzTpmQuote) -> Result<AzVerified, AzureError> {
    let hcl = HclReport::parse(hcl_bytes)?;
    hcl.verify_report_data_binding()?;
    let runtime_data = hcl.runtime_data()?;
    let ak = runtime_data.ak_pub()?;
    let attest = quote
        .to_quote()
        .verify(&ak.verifier_key())
        .map_err(AzureError::TpmQuote)?;
    Ok(AzVerified {
        hcl,
        runtime_data,
        ak,
        attest,
        pcrs: quote.pcrs.clone(),
    })
}

impl AzSnpVtpmEvidence {
    pub fn from_json(json: &[u8]) -> Result<Self, AzureError> {
        let ev: Self = serde_json::from_slice(json).map_err(AzureError::Evidence)?;
        if !matches!(ev.version, 1 | 2) {
            return Err(AzureError::EvidenceVersion {
                kind: "az-snp-vtpm",
                version: ev.version,
            });
        }
        Ok(ev)
    }

    /// HCL binding, AK, TPM quote (signature and PCRs), SNP report (VCEK chain to AMD's
    /// compiled-in roots, signature, TCB) and VMPL 0. The nonce and any policy are the
    /// caller's.
    pub fn verify(&self) -> Result<AzVerified, AzureError> {
        let v = verify_vtpm_part(&self.hcl_report, &self.tpm_quote)?;
        let HwReport::Snp(report) = &v.hcl.hw_report else {
            return Err(AzureError::WrongHardware {
                found: v.hcl.hw_report.name(),
                expected: "SNP",
            });
        };
        let vek = EndorsementKey::from_der(&self.vcek).map_err(AzureError::Snp)?;
        snp::verify_report_builtin(report, &vek).map_err(AzureError::Snp)?;
        if report.vmpl != 0 {
            return Err(AzureError::Vmpl(report.vmpl));
        }
        Ok(v)
    }
}

impl AzTdxVtpmEvidence {
    pub fn from_json(json: &[u8]) -> Result<Self, AzureError> {
        let ev: Self = serde_json::from_slice(json).map_err(AzureError::Evidence)?;
        if ev.version != 1 {
            return Err(AzureError::EvidenceVersion {
                kind: "az-tdx-vtpm",
                version: ev.version,
            });
        }
        Ok(ev)
    }

    /// HCL binding, AK, TPM quote, TD quote (DCAP, to Intel's root), and that the TD quote
    /// was made from the HCL report's TDREPORT.
    pub fn verify(&self) -> Result<AzVerified, AzureError> {
        let v = verify_vtpm_part(&self.hcl_report, &self.tpm_quote)?;
        let HwReport::Tdx(td_report) = &v.hcl.hw_report else {
            return Err(AzureError::WrongHardware {
                found: v.hcl.hw_report.name(),
                expected: "TDX",
            });
        };
        let quote = tdx::Quote::parse(&self.td_quote).map_err(AzureError::Tdx)?;
        quote.verify().map_err(AzureError::Tdx)?;
        if !td_report.matches_quote(&quote.body) {
            return Err(AzureError::TdReportMismatch);
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        assert!(matches!(
            HclReport::parse(b"HCL"),
            Err(AzureError::Truncated(3))
        ));
        assert!(matches!(
            HclReport::parse(&[0u8; 64]),
            Err(AzureError::Signature)
        ));
        let mut b = vec![0u8; 2600];
        b[..4].copy_from_slice(b"HCLA");
        b[4] = 9;
        assert!(matches!(HclReport::parse(&b), Err(AzureError::Version(9))));
        b[4] = 1;
        b[8..12].copy_from_slice(&5000u32.to_le_bytes());
        assert!(matches!(
            HclReport::parse(&b),
            Err(AzureError::Truncated(_))
        ));
        assert!(matches!(
            HclReport::parse(&vec![0u8; MAX_HCL_LEN + 1]),
            Err(AzureError::TooLarge(_))
        ));
    }

    #[test]
    fn jwk_rejects_garbage() {
        let jwk = Jwk {
            kid: AK_KID.into(),
            kty: "RSA".into(),
            key_ops: vec![],
            e: "AQAB".into(),
            n: "!!".into(),
        };
        assert!(matches!(
            AkPublicKey::from_jwk(&jwk),
            Err(AzureError::AkKey)
        ));
        let jwk = Jwk {
            n: "AQAB".into(),
            ..jwk
        };
        assert!(matches!(
            AkPublicKey::from_jwk(&jwk),
            Err(AzureError::AkKey)
        ));
    }
}
