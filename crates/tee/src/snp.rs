//! AMD SEV-SNP attestation reports: parsing, and verification against AMD's certificate chain.
//!
//! Layout: SEV Secure Nested Paging Firmware ABI Specification (AMD pub. 56860), table
//! "ATTESTATION_REPORT Structure". Version 2 is the original layout; version 3 adds the CPUID
//! family/model/stepping bytes at 0x188; version 5 adds LAUNCH_MIT_VECTOR/CURRENT_MIT_VECTOR at
//! 0x1F8/0x200. Everything else sits at the same offset in all versions, and the signature
//! always covers bytes 0..0x2A0.
//!
//! Trust chain: the report is signed (ECDSA P-384/SHA-384) by a VCEK (per chip and TCB) or a
//! VLEK (per cloud provider, loaded by the hypervisor). AMD's ASK signs VCEKs, AMD's ASVK signs
//! VLEKs, and the self-signed ARK signs both; the roots are compiled in (see `certs/README.md`).

use x509_cert::der::Decode as _;
use x509_cert::spki::ObjectIdentifier;

use super::bytes::{field, le_u32, le_u64};
use super::x509::{Cert, CertError, pem_certificates};

/// Size of an ATTESTATION_REPORT.
pub const REPORT_LEN: usize = 0x4A0;
/// The signature covers bytes `0..SIGNED_LEN`.
pub const SIGNED_LEN: usize = 0x2A0;
/// SIGNATURE_ALGO value for ECDSA P-384 with SHA-384, the only one defined.
pub const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;

/// Why a report or a certificate was rejected.
#[derive(Debug, thiserror::Error)]
pub enum SnpError {
    #[error("SNP report is {0} bytes, expected {REPORT_LEN}")]
    Length(usize),
    #[error("unsupported SNP report version {0} (known: 2, 3, 5)")]
    Version(u32),
    #[error("unsupported SNP signature algorithm {0} (expected 1, ECDSA P-384 with SHA-384)")]
    SignatureAlgorithm(u32),
    #[error("SNP report signature is malformed ({0})")]
    SignatureEncoding(&'static str),
    #[error("SNP report signature does not verify with the {0}")]
    SignatureMismatch(VekKind),
    #[error("the report says it is signed by {report}, but the certificate is a {cert}")]
    KeyKindMismatch { report: SigningKey, cert: VekKind },
    #[error("endorsement key certificate is unusable")]
    Certificate(#[source] CertError),
    #[error("certificate {0:?} is neither a VCEK nor a VLEK issued by AMD")]
    NotAnEndorsementKey(String),
    #[error("no endorsement key certificate in the PEM text")]
    NoCertificate,
    #[error("the certificate is for {cert}, but the report comes from a {report} CPU")]
    ProductMismatch { cert: Product, report: Product },
    #[error("the certificate is for {cert}, but the AMD roots given are for {roots}")]
    RootsMismatch { cert: Product, roots: Product },
    #[error("no ASVK for {0}: cannot verify a VLEK")]
    NoAsvk(Product),
    #[error("AMD certificate chain does not verify")]
    Chain(#[source] CertError),
    #[error("the certificate lacks the {0} TCB extension")]
    MissingTcbExtension(&'static str),
    #[error("{field} SPL is {cert} in the certificate but {report} in the report's REPORTED_TCB")]
    TcbMismatch {
        field: &'static str,
        cert: u8,
        report: u8,
    },
    #[error("the report's CHIP_ID does not match the VCEK's hwID")]
    ChipIdMismatch,
    #[error("the report's CHIP_ID is masked (all zero), but it is signed by a VCEK")]
    ChipIdMasked,
    #[error("{field} SPL is {report} in the report's REPORTED_TCB, below the minimum {min}")]
    TcbBelowMinimum {
        field: &'static str,
        report: u8,
        min: u8,
    },
    #[error("SNP certificate table is malformed ({0})")]
    CertTable(&'static str),
}

/// AMD EPYC generations with SEV-SNP. They differ in TCB_VERSION layout and root certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Product {
    Milan,
    Genoa,
    Turin,
}

impl Product {
    /// The name AMD uses in certificate CNs and KDS URLs.
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        match s {
            "Milan" => Some(Product::Milan),
            "Genoa" => Some(Product::Genoa),
            "Turin" => Some(Product::Turin),
            _ => None,
        }
    }

    /// From CPUID Fn0000_0001 family/model, as reported in version ≥ 3 reports
    /// (the mapping the `sev` crate and AMD's KDS documentation use).
    pub fn from_cpuid(family: u8, model: u8) -> Option<Self> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Product::Milan),
            (0x19, 0x10..=0x1F | 0xA0..=0xAF) => Some(Product::Genoa),
            (0x1A, 0x00..=0x11) => Some(Product::Turin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Product {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A TCB_VERSION, decoded. Milan and Genoa use `[BOOT_LOADER, TEE, 0, 0, 0, 0, SNP, MICROCODE]`;
/// Turin uses `[FMC, BOOT_LOADER, TEE, SNP, 0, 0, 0, MICROCODE]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcbVersion {
    /// The 8 bytes as a little-endian integer, as they appear in the report.
    pub raw: u64,
    pub fmc: Option<u8>,
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

/// Per-component minimum of a TCB_VERSION (a policy floor). FMC applies only to reports that
/// have it (Turin); zero everywhere accepts any TCB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MinTcb {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
    pub fmc: u8,
}

impl MinTcb {
    /// Every component of `tcb` is at least the minimum.
    pub fn check(&self, tcb: &TcbVersion) -> Result<(), SnpError> {
        let pairs = [
            ("bootloader", tcb.bootloader, self.bootloader),
            ("TEE", tcb.tee, self.tee),
            ("SNP", tcb.snp, self.snp),
            ("microcode", tcb.microcode, self.microcode),
        ];
        let fmc = tcb.fmc.map(|fmc| ("FMC", fmc, self.fmc));
        for (field, report, min) in pairs.into_iter().chain(fmc) {
            if report < min {
                return Err(SnpError::TcbBelowMinimum { field, report, min });
            }
        }
        Ok(())
    }
}

impl TcbVersion {
    pub fn decode(raw: u64, product: Option<Product>) -> Self {
        let b = raw.to_le_bytes();
        if product == Some(Product::Turin) {
            Self {
                raw,
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            }
        } else {
            Self {
                raw,
                fmc: None,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            }
        }
    }
}

/// GUEST_POLICY bits (SNP ABI, "Guest Policy Structure").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestPolicy(pub u64);

impl GuestPolicy {
    pub fn abi_minor(self) -> u8 {
        self.0 as u8
    }
    pub fn abi_major(self) -> u8 {
        (self.0 >> 8) as u8
    }
    pub fn smt_allowed(self) -> bool {
        self.0 & (1 << 16) != 0
    }
    pub fn migrate_ma_allowed(self) -> bool {
        self.0 & (1 << 18) != 0
    }
    /// Bit 19: the host may debug (decrypt and modify) the guest. A production verifier rejects it.
    pub fn debug_allowed(self) -> bool {
        self.0 & (1 << 19) != 0
    }
    pub fn single_socket_required(self) -> bool {
        self.0 & (1 << 20) != 0
    }
}

/// PLATFORM_INFO bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformInfo(pub u64);

impl PlatformInfo {
    pub fn smt_enabled(self) -> bool {
        self.0 & 1 != 0
    }
    pub fn tsme_enabled(self) -> bool {
        self.0 & 2 != 0
    }
    pub fn ecc_enabled(self) -> bool {
        self.0 & 4 != 0
    }
    pub fn ciphertext_hiding_enabled(self) -> bool {
        self.0 & (1 << 4) != 0
    }
}

/// SIGNING_KEY (bits 4:2 of the word at 0x48): which key signed the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKey {
    Vcek,
    Vlek,
    /// 7: the report is not signed.
    None,
    Reserved(u8),
}

impl std::fmt::Display for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigningKey::Vcek => f.write_str("VCEK"),
            SigningKey::Vlek => f.write_str("VLEK"),
            SigningKey::None => f.write_str("no key"),
            SigningKey::Reserved(v) => write!(f, "reserved key selector {v}"),
        }
    }
}

/// CPUID identification in version ≥ 3 reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpuid {
    pub family: u8,
    pub model: u8,
    pub stepping: u8,
}

/// A firmware version triple (CURRENT_* / COMMITTED_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirmwareVersion {
    pub major: u8,
    pub minor: u8,
    pub build: u8,
}

/// A parsed ATTESTATION_REPORT. Parsing checks structure only; nothing here is trusted until
/// [`verify_report`] succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationReport {
    pub version: u32,
    pub guest_svn: u32,
    pub policy: GuestPolicy,
    pub family_id: [u8; 16],
    pub image_id: [u8; 16],
    pub vmpl: u32,
    pub signature_algo: u32,
    pub current_tcb: TcbVersion,
    pub platform_info: PlatformInfo,
    pub author_key_en: bool,
    pub mask_chip_key: bool,
    pub signing_key: SigningKey,
    pub report_data: [u8; 64],
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    pub id_key_digest: [u8; 48],
    pub author_key_digest: [u8; 48],
    pub report_id: [u8; 32],
    pub report_id_ma: [u8; 32],
    pub reported_tcb: TcbVersion,
    /// Version ≥ 3 only.
    pub cpuid: Option<Cpuid>,
    pub chip_id: [u8; 64],
    pub committed_tcb: TcbVersion,
    pub current_version: FirmwareVersion,
    pub committed_version: FirmwareVersion,
    pub launch_tcb: TcbVersion,
    /// Version ≥ 5 only.
    pub launch_mit_vector: Option<u64>,
    /// Version ≥ 5 only.
    pub current_mit_vector: Option<u64>,
    /// R, little-endian, zero-extended to 72 bytes as in the report.
    pub signature_r: [u8; 72],
    /// S, little-endian, zero-extended to 72 bytes.
    pub signature_s: [u8; 72],
    raw: Vec<u8>,
}

impl AttestationReport {
    /// Parses exactly [`REPORT_LEN`] bytes. Unknown versions and signature algorithms are
    /// rejected rather than guessed at.
    pub fn parse(b: &[u8]) -> Result<Self, SnpError> {
        if b.len() != REPORT_LEN {
            return Err(SnpError::Length(b.len()));
        }
        // The length check above makes every fixed-offset read below succeed; `field` still
        // returns an Option so that a wrong offset table is an error, not a panic.
        let short = || SnpError::Length(b.len());
        let version = le_u32(b, 0x00).ok_or_else(short)?;
        // Version 4 was never published; 3 and 5 are the documented successors of 2.
        if !matches!(version, 2 | 3 | 5) {
            return Err(SnpError::Version(version));
        }
        let signature_algo = le_u32(b, 0x34).ok_or_else(short)?;
        if signature_algo != SIG_ALGO_ECDSA_P384_SHA384 {
            return Err(SnpError::SignatureAlgorithm(signature_algo));
        }
        let cpuid = if version >= 3 {
            Some(Cpuid {
                family: b[0x188],
                model: b[0x189],
                stepping: b[0x18A],
            })
        } else {
            None
        };
        let chip_id: [u8; 64] = field(b, 0x1A0).ok_or_else(short)?;
        let product = match cpuid {
            Some(c) => Product::from_cpuid(c.family, c.model),
            // Version 2 carries no CPUID. Turin chips have an 8-byte CHIP_ID (zero-padded); the
            // other families fill all 64 bytes. A masked (all-zero) CHIP_ID says nothing.
            None if chip_id[..8] != [0; 8] && chip_id[8..] == [0; 56] => Some(Product::Turin),
            None => None,
        };
        let tcb = |off: usize| -> Result<TcbVersion, SnpError> {
            Ok(TcbVersion::decode(
                le_u64(b, off).ok_or_else(short)?,
                product,
            ))
        };
        let key_info = le_u32(b, 0x48).ok_or_else(short)?;
        let signing_key = match (key_info >> 2) & 0b111 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            7 => SigningKey::None,
            v => SigningKey::Reserved(v as u8),
        };
        let fw = |off: usize| FirmwareVersion {
            build: b[off],
            minor: b[off + 1],
            major: b[off + 2],
        };
        Ok(Self {
            version,
            guest_svn: le_u32(b, 0x04).ok_or_else(short)?,
            policy: GuestPolicy(le_u64(b, 0x08).ok_or_else(short)?),
            family_id: field(b, 0x10).ok_or_else(short)?,
            image_id: field(b, 0x20).ok_or_else(short)?,
            vmpl: le_u32(b, 0x30).ok_or_else(short)?,
            signature_algo,
            current_tcb: tcb(0x38)?,
            platform_info: PlatformInfo(le_u64(b, 0x40).ok_or_else(short)?),
            author_key_en: key_info & 1 != 0,
            mask_chip_key: key_info & 2 != 0,
            signing_key,
            report_data: field(b, 0x50).ok_or_else(short)?,
            measurement: field(b, 0x90).ok_or_else(short)?,
            host_data: field(b, 0xC0).ok_or_else(short)?,
            id_key_digest: field(b, 0xE0).ok_or_else(short)?,
            author_key_digest: field(b, 0x110).ok_or_else(short)?,
            report_id: field(b, 0x140).ok_or_else(short)?,
            report_id_ma: field(b, 0x160).ok_or_else(short)?,
            reported_tcb: tcb(0x180)?,
            cpuid,
            chip_id,
            committed_tcb: tcb(0x1E0)?,
            current_version: fw(0x1E8),
            committed_version: fw(0x1EC),
            launch_tcb: tcb(0x1F0)?,
            launch_mit_vector: if version >= 5 {
                Some(le_u64(b, 0x1F8).ok_or_else(short)?)
            } else {
                None
            },
            current_mit_vector: if version >= 5 {
                Some(le_u64(b, 0x200).ok_or_else(short)?)
            } else {
                None
            },
            signature_r: field(b, 0x2A0).ok_or_else(short)?,
            signature_s: field(b, 0x2E8).ok_or_else(short)?,
            raw: b.to_vec(),
        })
    }

    /// The report as it was parsed (all 1184 bytes).
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..SIGNED_LEN]
    }

    /// The EPYC generation, when the report says (CPUID in v3+, the CHIP_ID shape in v2).
    pub fn product(&self) -> Option<Product> {
        match self.cpuid {
            Some(c) => Product::from_cpuid(c.family, c.model),
            None => self.reported_tcb.fmc.map(|_| Product::Turin),
        }
    }

    pub fn debug_allowed(&self) -> bool {
        self.policy.debug_allowed()
    }

    fn signature(&self) -> Result<p384::ecdsa::Signature, SnpError> {
        let r = le_scalar(&self.signature_r)?;
        let s = le_scalar(&self.signature_s)?;
        p384::ecdsa::Signature::from_scalars(r, s)
            .map_err(|_| SnpError::SignatureEncoding("R or S is not a valid P-384 scalar"))
    }

    /// Checks only the ECDSA signature over bytes 0..0x2A0 with the key in `vek`.
    /// [`verify_report`] adds the chain, key-kind, TCB and chip checks.
    pub fn verify_signature(&self, vek: &EndorsementKey) -> Result<(), SnpError> {
        use p384::ecdsa::signature::Verifier as _;
        let sig = self.signature()?;
        vek.key
            .verify(self.signed_bytes(), &sig)
            .map_err(|_| SnpError::SignatureMismatch(vek.kind))
    }
}

/// A 72-byte little-endian zero-extended value → 48-byte big-endian field bytes. The upper
/// 24 bytes must be zero: accepting anything there would make the signature malleable.
fn le_scalar(v: &[u8; 72]) -> Result<p384::FieldBytes, SnpError> {
    if v[48..].iter().any(|&b| b != 0) {
        return Err(SnpError::SignatureEncoding(
            "non-zero padding after a 48-byte scalar",
        ));
    }
    let mut be = p384::FieldBytes::default();
    for (dst, src) in be.iter_mut().zip(v[..48].iter().rev()) {
        *dst = *src;
    }
    Ok(be)
}

/// Versioned Chip Endorsement Key or Versioned Loaded Endorsement Key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VekKind {
    Vcek,
    Vlek,
}

impl std::fmt::Display for VekKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VekKind::Vcek => "VCEK",
            VekKind::Vlek => "VLEK",
        })
    }
}

/// The TCB a VCEK/VLEK was issued for, from its certificate extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertTcb {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
    /// Turin only.
    pub fmc: Option<u8>,
}

// AMD's VCEK/VLEK extension OIDs (AMD pub. 57230, "Versioned Chip Endorsement Key (VCEK)
// Certificate and KDS Interface Specification").
const OID_BL_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
const OID_TEE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
const OID_SNP_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
const OID_UCODE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
const OID_FMC_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.9");
const OID_HW_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");

/// A VCEK or VLEK certificate with what verification needs from it.
#[derive(Debug, Clone)]
pub struct EndorsementKey {
    pub kind: VekKind,
    pub product: Product,
    pub tcb: CertTcb,
    /// The hwID extension (VCEK only): the CHIP_ID the key belongs to, zero-padded to 64 bytes.
    pub hw_id: Option<[u8; 64]>,
    cert: Cert,
    key: p384::ecdsa::VerifyingKey,
}

impl EndorsementKey {
    /// Parses a DER VCEK/VLEK. The kind and product come from the AMD names: subject
    /// `CN=SEV-VCEK`/`CN=SEV-VLEK`, issuer `CN=SEV-<product>`/`CN=SEV-VLEK-<product>`.
    pub fn from_der(der: &[u8]) -> Result<Self, SnpError> {
        let cert = Cert::from_der(der).map_err(SnpError::Certificate)?;
        let subject = cert.common_name().unwrap_or_default();
        let issuer_cn = cert.issuer_common_name().unwrap_or_default();
        let (kind, product) = match (subject.as_str(), issuer_cn.strip_prefix("SEV-")) {
            ("SEV-VCEK", Some(p)) if !p.starts_with("VLEK-") => (VekKind::Vcek, p),
            ("SEV-VLEK", Some(p)) => match p.strip_prefix("VLEK-") {
                Some(p) => (VekKind::Vlek, p),
                None => return Err(SnpError::NotAnEndorsementKey(cert.subject())),
            },
            _ => return Err(SnpError::NotAnEndorsementKey(cert.subject())),
        };
        let product = Product::from_name(product)
            .ok_or_else(|| SnpError::NotAnEndorsementKey(cert.subject()))?;
        let key = cert.p384_key().map_err(SnpError::Certificate)?;
        let spl = |oid: &ObjectIdentifier, name: &'static str| -> Result<u8, SnpError> {
            let v = cert
                .extension(oid)
                .ok_or(SnpError::MissingTcbExtension(name))?;
            u8::from_der(v).map_err(|_| SnpError::MissingTcbExtension(name))
        };
        let tcb = CertTcb {
            bootloader: spl(&OID_BL_SPL, "bootloader")?,
            tee: spl(&OID_TEE_SPL, "TEE")?,
            snp: spl(&OID_SNP_SPL, "SNP")?,
            microcode: spl(&OID_UCODE_SPL, "microcode")?,
            fmc: if product == Product::Turin {
                Some(spl(&OID_FMC_SPL, "FMC")?)
            } else {
                None
            },
        };
        let hw_id = match kind {
            VekKind::Vcek => Some(hw_id(&cert)?),
            VekKind::Vlek => None,
        };
        Ok(Self {
            kind,
            product,
            tcb,
            hw_id,
            cert,
            key,
        })
    }

    /// The first certificate of a PEM text (Azure's `vcek.pem` is VCEK, ASK, ARK: the others
    /// are ignored, the compiled-in roots are used instead).
    pub fn from_pem(pem: &[u8]) -> Result<Self, SnpError> {
        let ders = pem_certificates(pem).map_err(SnpError::Certificate)?;
        Self::from_der(ders.first().ok_or(SnpError::NoCertificate)?)
    }

    pub fn certificate(&self) -> &Cert {
        &self.cert
    }

    /// Verifies ARK (self-signed) → ASK or ASVK → this key, with `roots`.
    pub fn verify_chain(&self, roots: &AmdRoots) -> Result<(), SnpError> {
        if roots.product != self.product {
            return Err(SnpError::RootsMismatch {
                cert: self.product,
                roots: roots.product,
            });
        }
        roots.verify()?;
        let issuer = match self.kind {
            VekKind::Vcek => &roots.ask,
            VekKind::Vlek => roots.asvk.as_ref().ok_or(SnpError::NoAsvk(self.product))?,
        };
        self.cert
            .verify_rsa_pss_sha384_by(issuer)
            .map_err(SnpError::Chain)
    }
}

/// hwID is 64 raw bytes in older VCEKs and a DER OCTET STRING in newer ones (Turin's is 8 bytes).
fn hw_id(cert: &Cert) -> Result<[u8; 64], SnpError> {
    let v = cert
        .extension(&OID_HW_ID)
        .ok_or(SnpError::MissingTcbExtension("hwID"))?;
    let id: &[u8] = if v.len() == 64 {
        v
    } else {
        match x509_cert::der::asn1::OctetStringRef::from_der(v) {
            Ok(o) if o.as_bytes().len() <= 64 => o.as_bytes(),
            _ => return Err(SnpError::MissingTcbExtension("hwID")),
        }
    };
    let mut out = [0u8; 64];
    out[..id.len()].copy_from_slice(id);
    Ok(out)
}

/// AMD's root (ARK), SEV signing key (ASK) and, where known, VLEK signing key (ASVK) for one
/// product.
#[derive(Debug, Clone)]
pub struct AmdRoots {
    pub product: Product,
    pub ark: Cert,
    pub ask: Cert,
    pub asvk: Option<Cert>,
}

impl AmdRoots {
    /// The compiled-in certificates (provenance in `src/tee/certs/README.md`).
    pub fn builtin(product: Product) -> Self {
        let (ark, ask, asvk) = match product {
            Product::Milan => (
                include_str!("certs/amd-milan-ark.pem"),
                include_str!("certs/amd-milan-ask.pem"),
                Some(include_str!("certs/amd-milan-asvk.pem")),
            ),
            Product::Genoa => (
                include_str!("certs/amd-genoa-ark.pem"),
                include_str!("certs/amd-genoa-ask.pem"),
                None,
            ),
            Product::Turin => (
                include_str!("certs/amd-turin-ark.pem"),
                include_str!("certs/amd-turin-ask.pem"),
                None,
            ),
        };
        // These are constants of the build, covered by the `builtin_roots_verify` test; a
        // failure here is a broken build, not hostile input.
        let load = |pem: &str| {
            let ders = pem_certificates(pem.as_bytes()).expect("embedded AMD PEM is valid");
            Cert::from_der(&ders[0]).expect("embedded AMD certificate is valid")
        };
        Self {
            product,
            ark: load(ark),
            ask: load(ask),
            asvk: asvk.map(load),
        }
    }

    /// ARK is self-signed and signs the ASK (and the ASVK).
    pub fn verify(&self) -> Result<(), SnpError> {
        self.ark
            .verify_rsa_pss_sha384_by(&self.ark)
            .map_err(SnpError::Chain)?;
        self.ask
            .verify_rsa_pss_sha384_by(&self.ark)
            .map_err(SnpError::Chain)?;
        if let Some(asvk) = &self.asvk {
            asvk.verify_rsa_pss_sha384_by(&self.ark)
                .map_err(SnpError::Chain)?;
        }
        Ok(())
    }
}

/// Full verification of a report: the endorsement key chains to `roots`, the key is the kind
/// the report says signed it, the signature verifies, the certificate's TCB equals the report's
/// REPORTED_TCB, and (VCEK with an unmasked CHIP_ID) the hwID equals CHIP_ID.
///
/// Policy (debug bit, VMPL, measurement, report data, host data) is the caller's business.
pub fn verify_report(
    report: &AttestationReport,
    vek: &EndorsementKey,
    roots: &AmdRoots,
) -> Result<(), SnpError> {
    vek.verify_chain(roots)?;
    if let Some(p) = report.product()
        && p != vek.product
    {
        return Err(SnpError::ProductMismatch {
            cert: vek.product,
            report: p,
        });
    }
    match (report.signing_key, vek.kind) {
        (SigningKey::Vcek, VekKind::Vcek) | (SigningKey::Vlek, VekKind::Vlek) => {}
        (report_key, cert) => {
            return Err(SnpError::KeyKindMismatch {
                report: report_key,
                cert,
            });
        }
    }
    report.verify_signature(vek)?;
    // Decode REPORTED_TCB with the certificate's product: a v2 report does not say which
    // generation it is, the certificate does.
    let tcb = TcbVersion::decode(report.reported_tcb.raw, Some(vek.product));
    let pairs = [
        ("bootloader", vek.tcb.bootloader, tcb.bootloader),
        ("TEE", vek.tcb.tee, tcb.tee),
        ("SNP", vek.tcb.snp, tcb.snp),
        ("microcode", vek.tcb.microcode, tcb.microcode),
    ];
    for (field, cert, report) in pairs {
        if cert != report {
            return Err(SnpError::TcbMismatch {
                field,
                cert,
                report,
            });
        }
    }
    if let (Some(cert), Some(report)) = (vek.tcb.fmc, tcb.fmc)
        && cert != report
    {
        return Err(SnpError::TcbMismatch {
            field: "FMC",
            cert,
            report,
        });
    }
    check_chip_id(report, vek)
}

/// A VCEK is issued for one chip: the report's CHIP_ID must be that chip's hwID. A masked
/// (all-zero) CHIP_ID is refused with a VCEK, as Trustee refuses it ("Chip ID mismatch": it
/// compares the hwID with CHIP_ID unconditionally for a VCEK). A VLEK is issued for a cloud
/// provider, not a chip: its reports may mask CHIP_ID and there is nothing to compare.
pub fn check_chip_id(report: &AttestationReport, vek: &EndorsementKey) -> Result<(), SnpError> {
    match (vek.kind, vek.hw_id) {
        (VekKind::Vlek, _) => Ok(()),
        (VekKind::Vcek, _) if report.chip_id == [0; 64] => Err(SnpError::ChipIdMasked),
        (VekKind::Vcek, Some(hw)) if hw == report.chip_id => Ok(()),
        (VekKind::Vcek, _) => Err(SnpError::ChipIdMismatch),
    }
}

/// [`verify_report`] with the compiled-in roots for the certificate's product.
pub fn verify_report_builtin(
    report: &AttestationReport,
    vek: &EndorsementKey,
) -> Result<(), SnpError> {
    verify_report(report, vek, &AmdRoots::builtin(vek.product))
}

/// What a certificate-table entry holds, by GUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertTableKind {
    Ark,
    Ask,
    Vcek,
    Vlek,
    Crl,
    Other([u8; 16]),
}

impl CertTableKind {
    fn from_guid(g: [u8; 16]) -> Self {
        // GUIDs from the SNP firmware ABI / GHCB specifications, in RFC 4122 byte order (the
        // order the `sev` crate and snpguest/snphost write them in).
        const TABLE: [(u128, CertTableKind); 5] = [
            (0xc0b406a4_a803_4952_9743_3fb6014cd0ae, CertTableKind::Ark),
            (0x4ab7b379_bbac_4fe4_a02f_05aef327c782, CertTableKind::Ask),
            (0x63da758d_e664_4564_adc5_f4b93be8accd, CertTableKind::Vcek),
            (0xa8074bc2_a25a_483e_aae6_39c045a0b8a1, CertTableKind::Vlek),
            (0x92f81bc3_5811_4d3d_97ff_d19f88dc67ea, CertTableKind::Crl),
        ];
        let v = u128::from_be_bytes(g);
        TABLE
            .iter()
            .find(|(k, _)| *k == v)
            .map(|(_, kind)| *kind)
            .unwrap_or(CertTableKind::Other(g))
    }
}

/// One certificate of an SNP extended-report certificate table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertTableEntry {
    pub kind: CertTableKind,
    pub data: Vec<u8>,
}

/// Bound on table entries; real tables have 3–5.
const MAX_CERT_TABLE_ENTRIES: usize = 64;

/// Parses the certificate table the host attaches to an extended report (configfs-tsm
/// `auxblob` for `sev_guest`): entries of GUID (16) ‖ offset u32 ‖ length u32, ended by an
/// all-zero entry, with offsets relative to the start of the table.
pub fn parse_cert_table(table: &[u8]) -> Result<Vec<CertTableEntry>, SnpError> {
    use super::bytes::Reader;
    let bad = SnpError::CertTable;
    let mut r = Reader::new(table);
    let mut out = Vec::new();
    loop {
        let guid: [u8; 16] = r.array().ok_or(bad("missing terminating entry"))?;
        let offset = r.u32_le().ok_or(bad("truncated entry"))? as usize;
        let len = r.u32_le().ok_or(bad("truncated entry"))? as usize;
        if guid == [0; 16] {
            return Ok(out);
        }
        if out.len() == MAX_CERT_TABLE_ENTRIES {
            return Err(bad("too many entries"));
        }
        let data = offset
            .checked_add(len)
            .and_then(|end| table.get(offset..end))
            .ok_or(bad("entry points outside the table"))?;
        out.push(CertTableEntry {
            kind: CertTableKind::from_guid(guid),
            data: data.to_vec(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_roots_verify() {
        for p in [Product::Milan, Product::Genoa, Product::Turin] {
            let roots = AmdRoots::builtin(p);
            roots.verify().unwrap();
            assert_eq!(
                roots.ark.common_name().unwrap(),
                format!("ARK-{}", p.name())
            );
            assert_eq!(
                roots.ask.common_name().unwrap(),
                format!("SEV-{}", p.name())
            );
        }
        let asvk = AmdRoots::builtin(Product::Milan).asvk.unwrap();
        assert_eq!(asvk.common_name().unwrap(), "SEV-VLEK-Milan");
    }

    #[test]
    fn roots_of_one_product_do_not_sign_another() {
        let milan = AmdRoots::builtin(Product::Milan);
        let genoa = AmdRoots::builtin(Product::Genoa);
        assert!(genoa.ask.verify_rsa_pss_sha384_by(&milan.ark).is_err());
    }

    #[test]
    fn tcb_layouts() {
        let raw = u64::from_le_bytes([1, 2, 0, 0, 0, 0, 3, 4]);
        let t = TcbVersion::decode(raw, Some(Product::Milan));
        assert_eq!(
            (t.bootloader, t.tee, t.snp, t.microcode, t.fmc),
            (1, 2, 3, 4, None)
        );
        let raw = u64::from_le_bytes([9, 1, 2, 3, 0, 0, 0, 4]);
        let t = TcbVersion::decode(raw, Some(Product::Turin));
        assert_eq!(
            (t.fmc, t.bootloader, t.tee, t.snp, t.microcode),
            (Some(9), 1, 2, 3, 4)
        );
    }

    fn fixture(name: &str) -> Vec<u8> {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/snp/");
        std::fs::read(format!("{p}{name}")).unwrap()
    }

    /// The real VCEK report verifies; with its CHIP_ID zeroed (masked) or changed, the CHIP_ID
    /// check refuses it (checked directly: the signature would fail first); the VLEK report's
    /// masked CHIP_ID is accepted.
    #[test]
    fn chip_id_with_vcek_and_vlek() {
        let report = AttestationReport::parse(&fixture("test-report.bin")).unwrap();
        let vcek = EndorsementKey::from_der(&fixture("test-vcek.der")).unwrap();
        verify_report_builtin(&report, &vcek).unwrap();
        let mut masked = report.clone();
        masked.chip_id = [0; 64];
        assert!(matches!(
            check_chip_id(&masked, &vcek),
            Err(SnpError::ChipIdMasked)
        ));
        let mut other = report.clone();
        other.chip_id[0] ^= 1;
        assert!(matches!(
            check_chip_id(&other, &vcek),
            Err(SnpError::ChipIdMismatch)
        ));
        let vlek_report = AttestationReport::parse(&fixture("test-vlek-report.bin")).unwrap();
        let vlek = EndorsementKey::from_der(&fixture("test-vlek.der")).unwrap();
        assert_eq!(vlek_report.chip_id, [0; 64]);
        check_chip_id(&vlek_report, &vlek).unwrap();
        verify_report_builtin(&vlek_report, &vlek).unwrap();
    }

    #[test]
    fn min_tcb() {
        let milan = TcbVersion::decode(
            u64::from_le_bytes([3, 0, 0, 0, 0, 0, 8, 115]),
            Some(Product::Milan),
        );
        MinTcb::default().check(&milan).unwrap();
        let floor = MinTcb {
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 115,
            fmc: 9,
        };
        // FMC applies to Turin only.
        floor.check(&milan).unwrap();
        for (field, floor) in [
            (
                "bootloader",
                MinTcb {
                    bootloader: 4,
                    ..floor
                },
            ),
            ("TEE", MinTcb { tee: 1, ..floor }),
            ("SNP", MinTcb { snp: 9, ..floor }),
            (
                "microcode",
                MinTcb {
                    microcode: 116,
                    ..floor
                },
            ),
        ] {
            assert!(matches!(
                floor.check(&milan),
                Err(SnpError::TcbBelowMinimum { field: f, .. }) if f == field
            ));
        }
        let turin = TcbVersion::decode(
            u64::from_le_bytes([8, 3, 0, 8, 0, 0, 0, 115]),
            Some(Product::Turin),
        );
        assert!(matches!(
            floor.check(&turin),
            Err(SnpError::TcbBelowMinimum {
                field: "FMC",
                report: 8,
                min: 9
            })
        ));
        MinTcb { fmc: 8, ..floor }.check(&turin).unwrap();
    }

    #[test]
    fn policy_bits() {
        let p = GuestPolicy(0x3001f);
        assert!(!p.debug_allowed());
        assert!(p.smt_allowed());
        assert_eq!((p.abi_major(), p.abi_minor()), (0, 0x1f));
        assert!(GuestPolicy(1 << 19).debug_allowed());
    }

    #[test]
    fn wrong_sizes_and_versions() {
        assert!(matches!(
            AttestationReport::parse(&[0; 10]),
            Err(SnpError::Length(10))
        ));
        let mut b = vec![0u8; REPORT_LEN];
        assert!(matches!(
            AttestationReport::parse(&b),
            Err(SnpError::Version(0))
        ));
        b[0] = 2;
        assert!(matches!(
            AttestationReport::parse(&b),
            Err(SnpError::SignatureAlgorithm(0))
        ));
        b[0x34] = 1;
        let r = AttestationReport::parse(&b).unwrap();
        // An all-zero signature is not a valid ECDSA signature.
        assert!(matches!(r.signature(), Err(SnpError::SignatureEncoding(_))));
        b[0x2A0 + 50] = 1;
        let r = AttestationReport::parse(&b).unwrap();
        assert!(matches!(r.signature(), Err(SnpError::SignatureEncoding(_))));
    }

    #[test]
    fn cert_table() {
        let vcek_guid = 0x63da758d_e664_4564_adc5_f4b93be8accd_u128.to_be_bytes();
        let mut t = Vec::new();
        t.extend_from_slice(&vcek_guid);
        t.extend_from_slice(&72u32.to_le_bytes());
        t.extend_from_slice(&3u32.to_le_bytes());
        t.extend_from_slice(&[0xAB; 16]);
        t.extend_from_slice(&75u32.to_le_bytes());
        t.extend_from_slice(&1u32.to_le_bytes());
        let terminated = t.len() + 24;
        t.resize(terminated, 0);
        t.extend_from_slice(&[1, 2, 3, 4]);
        let e = parse_cert_table(&t).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].kind, CertTableKind::Vcek);
        assert_eq!(e[0].data, vec![1, 2, 3]);
        assert_eq!(e[1].kind, CertTableKind::Other([0xAB; 16]));
        assert_eq!(e[1].data, vec![4]);
        assert!(parse_cert_table(&t[..40]).is_err(), "no terminator");
        t[16] = 0xFF; // offset far outside
        assert!(parse_cert_table(&t).is_err());
        assert!(parse_cert_table(&[0; 24]).unwrap().is_empty());
    }

    #[test]
    fn product_from_cpuid() {
        assert_eq!(Product::from_cpuid(0x19, 0x01), Some(Product::Milan));
        assert_eq!(Product::from_cpuid(0x19, 0x11), Some(Product::Genoa));
        assert_eq!(Product::from_cpuid(0x19, 0xA0), Some(Product::Genoa));
        assert_eq!(Product::from_cpuid(0x1A, 0x02), Some(Product::Turin));
        assert_eq!(Product::from_cpuid(0x17, 0x31), None);
    }
}
