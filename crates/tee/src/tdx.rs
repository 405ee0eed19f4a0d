//! Intel TDX: DCAP quotes (versions 4 and 5) and the TDREPORT a TD gets from the TDX module.
//!
//! Layouts: "Intel TDX DCAP Quoting Library API" (quote v4, and v5 with its body descriptor)
//! and the TDX module ABI (TDREPORT_STRUCT). A quote is
//!
//! ```text
//! header (48) ‖ [v5: body type u16 ‖ body size u32] ‖ TD report body (584 TDX 1.0, 648 TDX 1.5)
//! ‖ signature data length u32 ‖ signature data
//! ```
//!
//! and the signature data (attestation key type 2, ECDSA P-256) is
//! `signature (64) ‖ attestation key (64) ‖ certification data`, where certification data
//! type 6 wraps the QE report, its signature by the PCK, the QE authentication data and, nested,
//! certification data type 5: the PEM PCK certificate chain up to Intel's SGX root CA.
//!
//! What [`Quote::verify`] proves: the attestation key signed header and body; the QE report
//! binds that key (REPORTDATA = SHA-256(key ‖ QE auth data)); the PCK signed the QE report; the
//! PCK chains to the compiled-in Intel SGX Root CA; and the enclave the PCK vouched for is
//! Intel's TDX Quoting Enclave ([`QeIdentity::INTEL_TD_QE`]: MRSIGNER, ISVPRODID 2, MISCSELECT
//! and ATTRIBUTES under Intel's masks, so not a debug enclave, and ISVSVN at least the lowest
//! level Intel lists). Without that last check any enclave on the platform that can get a
//! report signed by the PCE (any enclave with PROVISIONKEY, which the platform owner can run)
//! could certify its own attestation key and sign any TD report body.
//!
//! What it still does not check, because it needs Intel PCS collateral the dev KBS does not
//! fetch: the platform's TCB status (TCB info for the PCK's FMSPC: UpToDate, OutOfDate,
//! Revoked, and the TDX module / TEE_TCB_SVN levels), the QE TCB status beyond the compiled-in
//! minimum ISVSVN (a later QE identity may raise it), and revocation (PCK CRL, root CA CRL).
//! Trustee's DCAP verification (Intel QVL with collateral) refuses a Revoked TCB or a revoked
//! PCK; it accepts OutOfDate / ConfigurationNeeded with a claim. Design for closing this (not
//! implemented): a dev KBS policy field `tdx_collateral = "<file>"` naming dcap-qvl's
//! `QuoteCollateralV3` JSON (TCB info and QE identity with their signatures and issuer
//! chains, PCK and root CA CRLs, as PCCS serves them), checked in `verify_tdx` after
//! [`Quote::verify`] with `dcap_qvl::verify(quote, collateral, now)`, which refuses expired
//! collateral, a revoked PCK and a Revoked TCB, and returns the TCB status (accept what
//! Trustee accepts). dcap-qvl is today a test-only oracle built with `ring` only; `verify`
//! also needs its `default-x509` feature, and it must stay out of the agent (a dependency of
//! cvm-devkbs, not of cvm-tee). The time must be a parameter so that tests can use dcap-qvl's
//! `sample/tdx_quote` with `sample/tdx_quote_collateral.json` at their issue date.

use sha2::{Digest as _, Sha256};

use super::bytes::{Reader, field, le_u64};
use super::x509::{Cert, CertError, pem_certificates};

pub const TEE_TYPE_TDX: u32 = 0x81;
/// ECDSA-256-with-P-256 curve, the only attestation key type DCAP uses for TDX.
pub const ATT_KEY_TYPE_ECDSA_P256: u16 = 2;
pub const HEADER_LEN: usize = 48;
pub const TD10_BODY_LEN: usize = 584;
pub const TD15_BODY_LEN: usize = 648;
/// Certification data type 5: PCK certificate chain (PEM).
pub const CERT_TYPE_PCK_CHAIN: u16 = 5;
/// Certification data type 6: QE report certification data.
pub const CERT_TYPE_QE_REPORT: u16 = 6;
const QE_REPORT_LEN: usize = 384;
/// Upper bound for signature data: a real one is about 4–5 KiB (mostly the PEM chain).
const MAX_SIGNATURE_DATA: usize = 64 * 1024;

/// Why a quote or TD report was rejected.
#[derive(Debug, thiserror::Error)]
pub enum TdxError {
    #[error("TDX {what} is truncated at offset {offset}")]
    Truncated { what: &'static str, offset: usize },
    #[error("unsupported quote version {0} (supported: 4, 5)")]
    Version(u16),
    #[error("TEE type {0:#x} is not TDX (0x81)")]
    TeeType(u32),
    #[error("attestation key type {0} is not ECDSA P-256 (2)")]
    AttestationKeyType(u16),
    #[error("quote v5 body type {body_type} with size {size} is not a TD report")]
    BodyType { body_type: u16, size: u32 },
    #[error("signature data declares {declared} bytes, {available} available")]
    SignatureDataLength { declared: u32, available: usize },
    #[error("{0} non-zero bytes after the quote")]
    TrailingBytes(usize),
    #[error("certification data type {found}, expected {expected}")]
    CertificationType { found: u16, expected: u16 },
    #[error("{0} bytes after the certification data")]
    CertificationTrailing(usize),
    #[error("attestation key is not a P-256 point")]
    AttestationKey,
    #[error("{0} signature is not a valid ECDSA P-256 signature")]
    SignatureEncoding(&'static str),
    #[error("quote signature does not verify with the attestation key")]
    QuoteSignature,
    #[error("QE report signature does not verify with the PCK certificate")]
    QeReportSignature,
    #[error("QE report does not bind the attestation key (REPORTDATA mismatch)")]
    QeReportBinding,
    #[error("PCK certificate chain has {0} certificates, expected 2 or 3 (PCK, CA[, root])")]
    PckChainShape(usize),
    #[error("PCK certificate chain does not verify")]
    PckChain(#[source] CertError),
    #[error("the quote's root certificate is not the Intel SGX Root CA")]
    UntrustedRoot,
    #[error("QE report MRSIGNER {0} is not Intel's TDX Quoting Enclave signer")]
    QeMrSigner(String),
    #[error("QE report ISVPRODID {found}, expected {expected} (TDX Quoting Enclave)")]
    QeProdId { found: u16, expected: u16 },
    #[error("the Quoting Enclave is a debug enclave (ATTRIBUTES.DEBUG set)")]
    QeDebug,
    #[error("QE report MISCSELECT {0:#010x} does not match the QE identity")]
    QeMiscSelect(u32),
    #[error("QE report ATTRIBUTES {0} do not match the QE identity")]
    QeAttributes(String),
    #[error("QE report ISVSVN {found} is below the QE identity's lowest TCB level {min}")]
    QeSvn { found: u16, min: u16 },
    #[error("TDREPORT is {0} bytes, expected 1024")]
    TdReportLength(usize),
    #[error("TDREPORT type {0:#x} is not TDX (0x81)")]
    TdReportType(u8),
}

/// Bits `lo..=hi` set.
const fn bits(lo: u32, hi: u32) -> u64 {
    (u64::MAX << lo) & (u64::MAX >> (63 - hi))
}

/// TD_ATTRIBUTES bits (TDX module ABI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdAttributes(pub u64);

impl TdAttributes {
    /// Bit 0: the TD is debuggable (the host can read and write its state). A production
    /// verifier rejects it.
    pub fn debug(self) -> bool {
        self.0 & 1 != 0
    }
    /// Bits 0–7, the TUD ("TD under debug") group: DEBUG and the profiling bits 4–6
    /// (HGS_PLUS_PROF, PERF_PROF, PMT_PROF). The TDX module ABI says a TD with any of them set
    /// is untrusted, so a verifier treats them all as debug (dcap-qvl refuses bits 4–6 as
    /// "TD profiling is enabled" unless debug is allowed).
    pub fn under_debug(self) -> bool {
        self.0 & 0xff != 0
    }
    /// Bit 29: MIGRATABLE: a Migration TD chosen by the host may export the TD's state.
    pub fn migratable(self) -> bool {
        self.0 & (1 << 29) != 0
    }
    /// The bits the TDX module ABI reserves as must-be-zero and tells verifiers to refuse
    /// (Intel TDX Module ABI Specification 348551-008US, table 3.23, as dcap-qvl encodes it:
    /// bits 1–3, 7–15, 23–26 and 32–61).
    pub const RESERVED_MBZ: u64 = bits(1, 3) | bits(7, 15) | bits(23, 26) | bits(32, 61);
    /// Set bits of [`TdAttributes::RESERVED_MBZ`].
    pub fn reserved(self) -> u64 {
        self.0 & Self::RESERVED_MBZ
    }
    /// Bit 28: SEPT_VE_DISABLE.
    pub fn sept_ve_disable(self) -> bool {
        self.0 & (1 << 28) != 0
    }
    /// Bit 30: PKS.
    pub fn pks(self) -> bool {
        self.0 & (1 << 30) != 0
    }
    /// Bit 63: PERFMON.
    pub fn perfmon(self) -> bool {
        self.0 & (1 << 63) != 0
    }
}

/// The quote header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteHeader {
    pub version: u16,
    pub att_key_type: u16,
    pub tee_type: u32,
    /// Bytes 8..12: reserved in v4/v5 (QE SVN and PCE SVN in SGX v3 quotes).
    pub reserved: [u8; 4],
    pub qe_vendor_id: [u8; 16],
    pub user_data: [u8; 20],
}

/// TD report body: TDX 1.0 (584 bytes) or TDX 1.5 (648 bytes, two more fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdReportBody {
    pub tee_tcb_svn: [u8; 16],
    pub mr_seam: [u8; 48],
    pub mr_signer_seam: [u8; 48],
    pub seam_attributes: u64,
    pub td_attributes: TdAttributes,
    pub xfam: u64,
    pub mr_td: [u8; 48],
    pub mr_config_id: [u8; 48],
    pub mr_owner: [u8; 48],
    pub mr_owner_config: [u8; 48],
    pub rtmr: [[u8; 48]; 4],
    pub report_data: [u8; 64],
    /// TDX 1.5 only.
    pub tee_tcb_svn2: Option<[u8; 16]>,
    /// TDX 1.5 only.
    pub mr_service_td: Option<[u8; 48]>,
}

impl TdReportBody {
    fn parse(b: &[u8]) -> Option<Self> {
        let td15 = b.len() == TD15_BODY_LEN;
        if !td15 && b.len() != TD10_BODY_LEN {
            return None;
        }
        Some(Self {
            tee_tcb_svn: field(b, 0)?,
            mr_seam: field(b, 16)?,
            mr_signer_seam: field(b, 64)?,
            seam_attributes: le_u64(b, 112)?,
            td_attributes: TdAttributes(le_u64(b, 120)?),
            xfam: le_u64(b, 128)?,
            mr_td: field(b, 136)?,
            mr_config_id: field(b, 184)?,
            mr_owner: field(b, 232)?,
            mr_owner_config: field(b, 280)?,
            rtmr: [
                field(b, 328)?,
                field(b, 376)?,
                field(b, 424)?,
                field(b, 472)?,
            ],
            report_data: field(b, 520)?,
            tee_tcb_svn2: if td15 { Some(field(b, 584)?) } else { None },
            mr_service_td: if td15 { Some(field(b, 600)?) } else { None },
        })
    }
}

/// QE report certification data (type 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QeReportCertData {
    /// The QE's SGX REPORT body (384 bytes).
    pub qe_report: Vec<u8>,
    pub qe_report_signature: [u8; 64],
    pub qe_auth_data: Vec<u8>,
    /// The nested certification data; type 5 (PCK chain) in every quote seen so far.
    pub cert_type: u16,
    pub cert_data: Vec<u8>,
}

impl QeReportCertData {
    /// REPORTDATA of the QE report (offset 320 of the SGX REPORT body).
    pub fn qe_report_data(&self) -> Option<[u8; 64]> {
        field(&self.qe_report, 320)
    }
}

/// The fields of the QE's SGX REPORT body a verifier compares with Intel's QE identity
/// (layout: SGX `sgx_report_body_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QeReport {
    pub cpu_svn: [u8; 16],
    pub misc_select: u32,
    pub attributes: [u8; 16],
    pub mr_enclave: [u8; 32],
    pub mr_signer: [u8; 32],
    pub isv_prod_id: u16,
    pub isv_svn: u16,
    pub report_data: [u8; 64],
}

impl QeReport {
    /// Parses the 384-byte SGX REPORT body.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() != QE_REPORT_LEN {
            return None;
        }
        let u16_at = |off: usize| field::<2>(b, off).map(u16::from_le_bytes);
        Some(Self {
            cpu_svn: field(b, 0)?,
            misc_select: u32::from_le_bytes(field(b, 16)?),
            attributes: field(b, 48)?,
            mr_enclave: field(b, 64)?,
            mr_signer: field(b, 128)?,
            isv_prod_id: u16_at(256)?,
            isv_svn: u16_at(258)?,
            report_data: field(b, 320)?,
        })
    }

    /// SGX ATTRIBUTES.DEBUG (bit 1 of the flags).
    pub fn debug(&self) -> bool {
        self.attributes[0] & 0x02 != 0
    }
}

/// An enclave identity as Intel PCS publishes it (`/tdx/certification/v4/qe/identity`,
/// `enclaveIdentity`): what the QE report must match, and the lowest ISVSVN of its TCB levels
/// (below it Intel's QVL finds no level and reports the QE Revoked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QeIdentity {
    pub mr_signer: [u8; 32],
    pub isv_prod_id: u16,
    pub misc_select: u32,
    pub misc_select_mask: u32,
    pub attributes: [u8; 16],
    pub attributes_mask: [u8; 16],
    pub min_isv_svn: u16,
}

impl QeIdentity {
    /// Intel's TDX Quoting Enclave, `"id": "TD_QE"`, as published by Intel PCS
    /// (`https://api.trustedservices.intel.com/tdx/certification/v4/qe/identity`; the values
    /// below are those of the identity issued 2026-01-03, tcbEvaluationDataNumber 18, and are
    /// unchanged since at least tcbEvaluationDataNumber 14 of 2023-02):
    /// `"miscselect":"00000000","miscselectMask":"FFFFFFFF",
    /// "attributes":"11000000000000000000000000000000",
    /// "attributesMask":"FBFFFFFFFFFFFFFF0000000000000000",
    /// "mrsigner":"DC9E2A7C6F948F17474E34A7FC43ED030F7C1563F1BABDDF6340C82E0E54A8C5",
    /// "isvprodid":2,"tcbLevels":[{"tcb":{"isvsvn":4},…,"tcbStatus":"UpToDate"}]`.
    /// The attributes mask covers DEBUG (0x02), so a debug QE does not match; it leaves out
    /// PROVISIONKEY (0x04), which the QE has. ISVPRODID 1 is the SGX QE (`"id":"QE"`), which
    /// must not vouch for a TD.
    pub const INTEL_TD_QE: QeIdentity = QeIdentity {
        mr_signer: [
            0xdc, 0x9e, 0x2a, 0x7c, 0x6f, 0x94, 0x8f, 0x17, 0x47, 0x4e, 0x34, 0xa7, 0xfc, 0x43,
            0xed, 0x03, 0x0f, 0x7c, 0x15, 0x63, 0xf1, 0xba, 0xbd, 0xdf, 0x63, 0x40, 0xc8, 0x2e,
            0x0e, 0x54, 0xa8, 0xc5,
        ],
        isv_prod_id: 2,
        misc_select: 0,
        misc_select_mask: 0xffff_ffff,
        attributes: [0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        attributes_mask: [
            0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
        min_isv_svn: 4,
    };

    /// The QE report is of this identity (Intel QVL's and dcap-qvl's QE identity checks, in
    /// their order: MRSIGNER, debug, ISVPRODID, MISCSELECT, ATTRIBUTES, ISVSVN).
    pub fn check(&self, qe: &QeReport) -> Result<(), TdxError> {
        if qe.mr_signer != self.mr_signer {
            return Err(TdxError::QeMrSigner(crate::hex(&qe.mr_signer)));
        }
        if qe.debug() {
            return Err(TdxError::QeDebug);
        }
        if qe.isv_prod_id != self.isv_prod_id {
            return Err(TdxError::QeProdId {
                found: qe.isv_prod_id,
                expected: self.isv_prod_id,
            });
        }
        if qe.misc_select & self.misc_select_mask != self.misc_select & self.misc_select_mask {
            return Err(TdxError::QeMiscSelect(qe.misc_select));
        }
        let masked = |a: &[u8; 16]| {
            let mut out = [0u8; 16];
            for (o, (x, m)) in out.iter_mut().zip(a.iter().zip(&self.attributes_mask)) {
                *o = x & m;
            }
            out
        };
        if masked(&qe.attributes) != masked(&self.attributes) {
            return Err(TdxError::QeAttributes(crate::hex(&qe.attributes)));
        }
        if qe.isv_svn < self.min_isv_svn {
            return Err(TdxError::QeSvn {
                found: qe.isv_svn,
                min: self.min_isv_svn,
            });
        }
        Ok(())
    }
}

/// ECDSA P-256 quote signature data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureData {
    /// r ‖ s, big-endian.
    pub signature: [u8; 64],
    /// x ‖ y, big-endian (an uncompressed point without the 0x04 prefix).
    pub attestation_key: [u8; 64],
    pub qe: QeReportCertData,
}

/// A parsed DCAP quote for a TD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub header: QuoteHeader,
    /// v5 body type (2 = TDX 1.0, 3 = TDX 1.5); for v4, 2.
    pub body_type: u16,
    pub body: TdReportBody,
    pub signature_data: SignatureData,
    raw: Vec<u8>,
    signed_len: usize,
}

fn trunc(what: &'static str, r: &Reader<'_>) -> TdxError {
    TdxError::Truncated {
        what,
        offset: r.pos(),
    }
}

impl Quote {
    /// Parses a v4 or v5 TDX quote. Trailing zero bytes (fixed-size quote buffers) are
    /// accepted; any other trailing byte is an error.
    pub fn parse(bytes: &[u8]) -> Result<Self, TdxError> {
        let mut r = Reader::new(bytes);
        let t = |r: &Reader<'_>| trunc("quote header", r);
        let version = r.u16_le().ok_or_else(|| t(&r))?;
        let att_key_type = r.u16_le().ok_or_else(|| t(&r))?;
        let tee_type = r.u32_le().ok_or_else(|| t(&r))?;
        let header = QuoteHeader {
            version,
            att_key_type,
            tee_type,
            reserved: r.array().ok_or_else(|| t(&r))?,
            qe_vendor_id: r.array().ok_or_else(|| t(&r))?,
            user_data: r.array().ok_or_else(|| t(&r))?,
        };
        if !matches!(version, 4 | 5) {
            return Err(TdxError::Version(version));
        }
        if tee_type != TEE_TYPE_TDX {
            return Err(TdxError::TeeType(tee_type));
        }
        if att_key_type != ATT_KEY_TYPE_ECDSA_P256 {
            return Err(TdxError::AttestationKeyType(att_key_type));
        }
        let (body_type, body_len) = if version == 4 {
            (2, TD10_BODY_LEN)
        } else {
            let body_type = r.u16_le().ok_or_else(|| t(&r))?;
            let size = r.u32_le().ok_or_else(|| t(&r))?;
            match (body_type, size as usize) {
                (2, TD10_BODY_LEN) => (2, TD10_BODY_LEN),
                (3, TD15_BODY_LEN) => (3, TD15_BODY_LEN),
                _ => return Err(TdxError::BodyType { body_type, size }),
            }
        };
        let body_bytes = r
            .take(body_len)
            .ok_or_else(|| trunc("TD report body", &r))?;
        let body = TdReportBody::parse(body_bytes).ok_or_else(|| trunc("TD report body", &r))?;
        let signed_len = r.pos();
        let declared = r
            .u32_le()
            .ok_or_else(|| trunc("signature data length", &r))?;
        let sig_len = declared as usize;
        if sig_len > r.remaining() || sig_len > MAX_SIGNATURE_DATA {
            return Err(TdxError::SignatureDataLength {
                declared,
                available: r.remaining(),
            });
        }
        let sig_bytes = r.take(sig_len).unwrap_or_default();
        let trailing = r.rest();
        if trailing.iter().any(|&b| b != 0) {
            return Err(TdxError::TrailingBytes(trailing.len()));
        }
        let signature_data = parse_signature_data(sig_bytes)?;
        Ok(Self {
            header,
            body_type,
            body,
            signature_data,
            raw: bytes[..signed_len + 4 + sig_len].to_vec(),
            signed_len,
        })
    }

    /// The quote without trailing padding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// Header and body: what the attestation key signs.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..self.signed_len]
    }

    /// The attestation key signed header and body. Alone this proves only internal
    /// consistency: anyone can make a key; [`Quote::verify`] ties it to Intel.
    pub fn verify_signature(&self) -> Result<(), TdxError> {
        use p256::ecdsa::signature::Verifier as _;
        let key = attestation_key(&self.signature_data.attestation_key)?;
        let sig = p256::ecdsa::Signature::from_slice(&self.signature_data.signature)
            .map_err(|_| TdxError::SignatureEncoding("quote"))?;
        key.verify(self.signed_bytes(), &sig)
            .map_err(|_| TdxError::QuoteSignature)
    }

    /// The QE report's REPORTDATA is SHA-256(attestation key ‖ QE auth data) ‖ 32 zero bytes.
    pub fn verify_qe_binding(&self) -> Result<(), TdxError> {
        let sd = &self.signature_data;
        let mut h = Sha256::new();
        h.update(sd.attestation_key);
        h.update(&sd.qe.qe_auth_data);
        let mut expected = [0u8; 64];
        expected[..32].copy_from_slice(&h.finalize());
        if sd.qe.qe_report_data() != Some(expected) {
            return Err(TdxError::QeReportBinding);
        }
        Ok(())
    }

    /// The PCK chain certificates, leaf first, as carried in the quote.
    pub fn pck_chain(&self) -> Result<Vec<Cert>, TdxError> {
        let qe = &self.signature_data.qe;
        if qe.cert_type != CERT_TYPE_PCK_CHAIN {
            return Err(TdxError::CertificationType {
                found: qe.cert_type,
                expected: CERT_TYPE_PCK_CHAIN,
            });
        }
        pem_certificates(&qe.cert_data)
            .map_err(TdxError::PckChain)?
            .iter()
            .map(|der| Cert::from_der(der).map_err(TdxError::PckChain))
            .collect()
    }

    /// Verifies the PCK chain to `root` and the QE report signature with the PCK key.
    pub fn verify_pck(&self, root: &Cert) -> Result<(), TdxError> {
        use p256::ecdsa::signature::Verifier as _;
        let chain = self.pck_chain()?;
        let (pck, ca) = match chain.as_slice() {
            [pck, ca] => (pck, ca),
            [pck, ca, quote_root] => {
                // The quote carries its own copy of the root; it must be the pinned one (same
                // key), otherwise someone is offering their own root.
                if quote_root.inner().tbs_certificate.subject_public_key_info
                    != root.inner().tbs_certificate.subject_public_key_info
                {
                    return Err(TdxError::UntrustedRoot);
                }
                (pck, ca)
            }
            other => return Err(TdxError::PckChainShape(other.len())),
        };
        root.verify_ecdsa_p256_sha256_by(root)
            .map_err(TdxError::PckChain)?;
        ca.verify_ecdsa_p256_sha256_by(root)
            .map_err(TdxError::PckChain)?;
        pck.verify_ecdsa_p256_sha256_by(ca)
            .map_err(TdxError::PckChain)?;
        let key = pck.p256_key().map_err(TdxError::PckChain)?;
        let qe = &self.signature_data.qe;
        let sig = p256::ecdsa::Signature::from_slice(&qe.qe_report_signature)
            .map_err(|_| TdxError::SignatureEncoding("QE report"))?;
        key.verify(&qe.qe_report, &sig)
            .map_err(|_| TdxError::QeReportSignature)
    }

    /// The QE report (whose signature [`Quote::verify_pck`] checks) is of `identity`.
    pub fn verify_qe_identity(&self, identity: &QeIdentity) -> Result<(), TdxError> {
        let qe = QeReport::parse(&self.signature_data.qe.qe_report).ok_or(TdxError::Truncated {
            what: "QE report",
            offset: 0,
        })?;
        identity.check(&qe)
    }

    /// Everything DCAP can check offline: [`Quote::verify_signature`],
    /// [`Quote::verify_qe_binding`], [`Quote::verify_pck`] with the Intel SGX Root CA and
    /// [`Quote::verify_qe_identity`] with [`QeIdentity::INTEL_TD_QE`].
    pub fn verify(&self) -> Result<(), TdxError> {
        self.verify_signature()?;
        self.verify_qe_binding()?;
        self.verify_pck(&intel_sgx_root_ca())?;
        self.verify_qe_identity(&QeIdentity::INTEL_TD_QE)
    }
}

fn attestation_key(xy: &[u8; 64]) -> Result<p256::ecdsa::VerifyingKey, TdxError> {
    let mut sec1 = [0u8; 65];
    sec1[0] = 0x04;
    sec1[1..].copy_from_slice(xy);
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| TdxError::AttestationKey)
}

/// The Intel SGX Root CA (provenance in `src/tee/certs/README.md`).
pub fn intel_sgx_root_ca() -> Cert {
    // A constant of the build, covered by the `intel_root_is_self_signed` test.
    let ders = pem_certificates(include_bytes!("certs/intel-sgx-root-ca.pem"))
        .expect("embedded Intel PEM is valid");
    Cert::from_der(&ders[0]).expect("embedded Intel certificate is valid")
}

fn parse_signature_data(b: &[u8]) -> Result<SignatureData, TdxError> {
    let mut r = Reader::new(b);
    let t = |r: &Reader<'_>| trunc("signature data", r);
    let signature = r.array().ok_or_else(|| t(&r))?;
    let attestation_key = r.array().ok_or_else(|| t(&r))?;
    let (ty, outer) = cert_data(&mut r)?;
    if ty != CERT_TYPE_QE_REPORT {
        return Err(TdxError::CertificationType {
            found: ty,
            expected: CERT_TYPE_QE_REPORT,
        });
    }
    if r.remaining() != 0 {
        return Err(TdxError::CertificationTrailing(r.remaining()));
    }
    let mut q = Reader::new(outer);
    let t = |r: &Reader<'_>| trunc("QE report certification data", r);
    let qe_report = q.take(QE_REPORT_LEN).ok_or_else(|| t(&q))?.to_vec();
    let qe_report_signature = q.array().ok_or_else(|| t(&q))?;
    let auth_len = q.u16_le().ok_or_else(|| t(&q))?;
    let qe_auth_data = q.take(usize::from(auth_len)).ok_or_else(|| t(&q))?.to_vec();
    let (cert_type, inner) = cert_data(&mut q)?;
    if q.remaining() != 0 {
        return Err(TdxError::CertificationTrailing(q.remaining()));
    }
    Ok(SignatureData {
        signature,
        attestation_key,
        qe: QeReportCertData {
            qe_report,
            qe_report_signature,
            qe_auth_data,
            cert_type,
            cert_data: inner.to_vec(),
        },
    })
}

/// Certification data: type u16 ‖ size u32 ‖ data.
fn cert_data<'a>(r: &mut Reader<'a>) -> Result<(u16, &'a [u8]), TdxError> {
    let t = |r: &Reader<'_>| trunc("certification data", r);
    let ty = r.u16_le().ok_or_else(|| t(r))?;
    let size = r.u32_le().ok_or_else(|| t(r))?;
    let data = r.take(size as usize).ok_or_else(|| t(r))?;
    Ok((ty, data))
}

/// TDREPORT_STRUCT (1024 bytes), as the TDX module returns it to the TD (and as Azure's HCL
/// report embeds it). Its MAC is only checkable by the CPU; its contents become trustworthy by
/// matching a verified quote (see [`TdReport::matches_quote`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdReport {
    pub report_type: u8,
    pub report_subtype: u8,
    pub report_version: u8,
    pub cpu_svn: [u8; 16],
    pub tee_tcb_info_hash: [u8; 48],
    pub tee_info_hash: [u8; 48],
    pub report_data: [u8; 64],
    pub mac: [u8; 32],
    pub tee_tcb_svn: [u8; 16],
    pub mr_seam: [u8; 48],
    pub mr_signer_seam: [u8; 48],
    pub seam_attributes: u64,
    pub td_attributes: TdAttributes,
    pub xfam: u64,
    pub mr_td: [u8; 48],
    pub mr_config_id: [u8; 48],
    pub mr_owner: [u8; 48],
    pub mr_owner_config: [u8; 48],
    pub rtmr: [[u8; 48]; 4],
    pub servtd_hash: [u8; 48],
}

pub const TD_REPORT_LEN: usize = 1024;

impl TdReport {
    pub fn parse(b: &[u8]) -> Result<Self, TdxError> {
        if b.len() != TD_REPORT_LEN {
            return Err(TdxError::TdReportLength(b.len()));
        }
        let short = || TdxError::TdReportLength(b.len());
        let f48 = |off| field::<48>(b, off).ok_or_else(short);
        if b[0] != TEE_TYPE_TDX as u8 {
            return Err(TdxError::TdReportType(b[0]));
        }
        Ok(Self {
            report_type: b[0],
            report_subtype: b[1],
            report_version: b[2],
            cpu_svn: field(b, 16).ok_or_else(short)?,
            tee_tcb_info_hash: f48(32)?,
            tee_info_hash: f48(80)?,
            report_data: field(b, 128).ok_or_else(short)?,
            mac: field(b, 224).ok_or_else(short)?,
            // TEE_TCB_INFO at 256: VALID (8) first.
            tee_tcb_svn: field(b, 264).ok_or_else(short)?,
            mr_seam: f48(280)?,
            mr_signer_seam: f48(328)?,
            seam_attributes: le_u64(b, 376).ok_or_else(short)?,
            // TDINFO at 512.
            td_attributes: TdAttributes(le_u64(b, 512).ok_or_else(short)?),
            xfam: le_u64(b, 520).ok_or_else(short)?,
            mr_td: f48(528)?,
            mr_config_id: f48(576)?,
            mr_owner: f48(624)?,
            mr_owner_config: f48(672)?,
            rtmr: [f48(720)?, f48(768)?, f48(816)?, f48(864)?],
            servtd_hash: f48(912)?,
        })
    }

    /// The fields a quote body repeats from the TD report. True when all of them agree, i.e.
    /// the (verified) quote was made from this TD report.
    pub fn matches_quote(&self, body: &TdReportBody) -> bool {
        self.report_data == body.report_data
            && self.mr_td == body.mr_td
            && self.rtmr == body.rtmr
            && self.td_attributes == body.td_attributes
            && self.xfam == body.xfam
            && self.mr_config_id == body.mr_config_id
            && self.mr_owner == body.mr_owner
            && self.mr_owner_config == body.mr_owner_config
            && self.mr_seam == body.mr_seam
            && self.mr_signer_seam == body.mr_signer_seam
            && self.tee_tcb_svn == body.tee_tcb_svn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intel_root_is_self_signed() {
        let root = intel_sgx_root_ca();
        root.verify_ecdsa_p256_sha256_by(&root).unwrap();
        assert_eq!(root.common_name().unwrap(), "Intel SGX Root CA");
    }

    #[test]
    fn header_checks() {
        let mut q = vec![0u8; 48];
        q[0] = 3;
        assert!(matches!(Quote::parse(&q), Err(TdxError::Version(3))));
        q[0] = 4;
        assert!(matches!(Quote::parse(&q), Err(TdxError::TeeType(0))));
        q[4] = 0x81;
        assert!(matches!(
            Quote::parse(&q),
            Err(TdxError::AttestationKeyType(0))
        ));
        q[2] = 2;
        assert!(matches!(Quote::parse(&q), Err(TdxError::Truncated { .. })));
        q[0] = 5;
        q.extend_from_slice(&[1, 0, 0, 1, 0, 0]);
        assert!(matches!(
            Quote::parse(&q),
            Err(TdxError::BodyType { body_type: 1, .. })
        ));
    }

    #[test]
    fn td_attributes() {
        assert!(TdAttributes(1).debug());
        assert!(!TdAttributes(0x1000_0000).debug());
        assert!(TdAttributes(0x1000_0000).sept_ve_disable());
        assert!(TdAttributes(0x20).under_debug() && !TdAttributes(0x20).debug());
        assert!(!TdAttributes(0x1000_0000).under_debug());
        assert!(TdAttributes(1 << 29).migratable());
        // dcap-qvl's mask, written out: bits 1-3, 7-15, 23-26, 32-61.
        assert_eq!(TdAttributes::RESERVED_MBZ, 0x3fff_ffff_0780_ff8e);
        // What the real quotes carry (DEBUG, SEPT_VE_DISABLE, PKS, PERFMON, KL, LASS) is not
        // reserved.
        assert_eq!(TdAttributes(0x1000_0001 | 1 << 63 | 1 << 30).reserved(), 0);
        assert_eq!(TdAttributes(1 << 40).reserved(), 1 << 40);
    }

    fn fixture_quote(name: &str) -> Quote {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tdx/");
        Quote::parse(&std::fs::read(format!("{p}{name}")).unwrap()).unwrap()
    }

    #[test]
    fn real_quotes_are_of_intel_td_qe() {
        // GCP's v4 and v5 quotes (Trustee's test data) and Azure's TDX quote.
        for name in [
            "tdx_quote_4.dat",
            "tdx_quote_5.dat",
            "../az-tdx-vtpm/td-quote.bin",
        ] {
            let q = fixture_quote(name);
            q.verify().unwrap();
            let qe = QeReport::parse(&q.signature_data.qe.qe_report).unwrap();
            assert_eq!(qe.isv_prod_id, 2);
            assert!(qe.isv_svn >= 4, "{name}: {}", qe.isv_svn);
        }
    }

    /// Each field of the QE identity refuses on its own: the modified QE report is checked
    /// directly (through the quote its PCK signature would fail first).
    #[test]
    fn qe_identity_refusals() {
        let q = fixture_quote("tdx_quote_4.dat");
        let genuine = QeReport::parse(&q.signature_data.qe.qe_report).unwrap();
        let id = QeIdentity::INTEL_TD_QE;
        id.check(&genuine).unwrap();
        let refused = |f: &dyn Fn(&mut QeReport)| {
            let mut qe = genuine.clone();
            f(&mut qe);
            id.check(&qe).unwrap_err()
        };
        assert!(matches!(
            refused(&|qe| qe.mr_signer[31] ^= 1),
            TdxError::QeMrSigner(_)
        ));
        // The SGX QE (ISVPRODID 1) has the same signer: it must not vouch for a TD.
        assert!(matches!(
            refused(&|qe| qe.isv_prod_id = 1),
            TdxError::QeProdId {
                found: 1,
                expected: 2
            }
        ));
        assert!(matches!(
            refused(&|qe| qe.attributes[0] |= 0x02),
            TdxError::QeDebug
        ));
        assert!(matches!(
            refused(&|qe| qe.attributes[1] |= 0x01),
            TdxError::QeAttributes(_)
        ));
        // Outside the mask: PROVISIONKEY and the XFRM half.
        let mut qe = genuine.clone();
        qe.attributes[0] ^= 0x04;
        qe.attributes[8] ^= 0xff;
        id.check(&qe).unwrap();
        assert!(matches!(
            refused(&|qe| qe.misc_select = 1),
            TdxError::QeMiscSelect(1)
        ));
        assert!(matches!(
            refused(&|qe| qe.isv_svn = 3),
            TdxError::QeSvn { found: 3, min: 4 }
        ));
        // Through the quote: a flipped MRSIGNER byte in the QE report refuses (at the PCK's
        // signature over the QE report, which comes first); `verify_qe_identity` alone names
        // the MRSIGNER.
        let mut forged = q.clone();
        forged.signature_data.qe.qe_report[128] ^= 1;
        assert!(matches!(forged.verify(), Err(TdxError::QeReportSignature)));
        assert!(matches!(
            forged.verify_qe_identity(&id),
            Err(TdxError::QeMrSigner(_))
        ));
    }
}
