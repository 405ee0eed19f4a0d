//! A TPM2_Quote as it travels in KBS evidence: a TPMS_ATTEST message, its signature, and the
//! PCR values it covers. Kept deliberately small (TPM 2.0 Library Part 2, "TPMS_ATTEST",
//! "TPMS_QUOTE_INFO", "TPMT_SIGNATURE"): only what the `tpm`, `az-snp-vtpm` and `az-tdx-vtpm`
//! verifiers need, RSASSA-PKCS1-v1_5 with SHA-256 and the SHA-256 PCR bank.
//! (`src/tpm/` talks to a TPM; this only checks what one produced elsewhere.)

use rsa::pkcs1v15;
use rsa::signature::Verifier as _;
use sha2::{Digest as _, Sha256};

use super::bytes::Reader;

pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
pub const TPM_ALG_RSASSA: u16 = 0x0014;
pub const TPM_ALG_SHA256: u16 = 0x000B;
/// A TPM has at most 24 PCRs per bank in practice; 32 is the selection format's limit we allow.
const MAX_PCRS: usize = 32;
const MAX_BANKS: u32 = 8;

/// Why a quote was rejected.
#[derive(Debug, thiserror::Error)]
pub enum TpmQuoteError {
    #[error("TPM {what} is truncated at offset {offset}")]
    Truncated { what: &'static str, offset: usize },
    #[error("TPMS_ATTEST magic is {0:#010x}, not TPM_GENERATED_VALUE")]
    Magic(u32),
    #[error("TPMS_ATTEST type is {0:#06x}, not TPM_ST_ATTEST_QUOTE")]
    NotAQuote(u16),
    #[error("{0} bytes after the TPM structure")]
    Trailing(usize),
    #[error("PCR selection is malformed ({0})")]
    Selection(&'static str),
    #[error("signature algorithm {sig_alg:#06x}/{hash_alg:#06x} is not RSASSA with SHA-256")]
    SignatureScheme { sig_alg: u16, hash_alg: u16 },
    #[error("quote signature does not verify with the attestation key")]
    Signature,
    #[error("quote selects PCRs of hash algorithm {0:#06x}; only SHA-256 values are provided")]
    Bank(u16),
    #[error("quote selects PCR {index}, but only {available} PCR values are provided")]
    MissingPcr { index: usize, available: usize },
    #[error("the PCR values do not hash to the quote's PCR digest")]
    PcrDigest,
}

/// One bank of a TPML_PCR_SELECTION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    pub hash_alg: u16,
    /// Selected PCR indices, ascending (the order their values are hashed in).
    pub pcrs: Vec<usize>,
}

/// A parsed TPMS_ATTEST of type quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    pub qualified_signer: Vec<u8>,
    /// The caller's nonce (TPM2_Quote `qualifyingData`): the KBS report data.
    pub extra_data: Vec<u8>,
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
    pub firmware_version: u64,
    pub pcr_select: Vec<PcrSelection>,
    pub pcr_digest: Vec<u8>,
}

fn trunc(what: &'static str, r: &Reader<'_>) -> TpmQuoteError {
    TpmQuoteError::Truncated {
        what,
        offset: r.pos(),
    }
}

fn tpm2b<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<&'a [u8], TpmQuoteError> {
    let n = r.u16_be().ok_or_else(|| trunc(what, r))?;
    r.take(usize::from(n)).ok_or_else(|| trunc(what, r))
}

impl Attest {
    /// Parses a TPMS_ATTEST that must be a quote and must be consumed exactly.
    pub fn parse(msg: &[u8]) -> Result<Self, TpmQuoteError> {
        let mut r = Reader::new(msg);
        let t = |r: &Reader<'_>| trunc("TPMS_ATTEST", r);
        let magic = r.u32_be().ok_or_else(|| t(&r))?;
        if magic != TPM_GENERATED_VALUE {
            return Err(TpmQuoteError::Magic(magic));
        }
        let ty = r.u16_be().ok_or_else(|| t(&r))?;
        if ty != TPM_ST_ATTEST_QUOTE {
            return Err(TpmQuoteError::NotAQuote(ty));
        }
        let qualified_signer = tpm2b(&mut r, "qualifiedSigner")?.to_vec();
        let extra_data = tpm2b(&mut r, "extraData")?.to_vec();
        let clock = r.u64_be().ok_or_else(|| t(&r))?;
        let reset_count = r.u32_be().ok_or_else(|| t(&r))?;
        let restart_count = r.u32_be().ok_or_else(|| t(&r))?;
        let safe = match r.u8().ok_or_else(|| t(&r))? {
            0 => false,
            1 => true,
            _ => {
                return Err(TpmQuoteError::Selection(
                    "clockInfo.safe is not a TPMI_YES_NO",
                ));
            }
        };
        let firmware_version = r.u64_be().ok_or_else(|| t(&r))?;
        let count = r.u32_be().ok_or_else(|| t(&r))?;
        if count > MAX_BANKS {
            return Err(TpmQuoteError::Selection("too many banks"));
        }
        let mut pcr_select = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let hash_alg = r.u16_be().ok_or_else(|| t(&r))?;
            let size = r.u8().ok_or_else(|| t(&r))?;
            if usize::from(size) * 8 > MAX_PCRS {
                return Err(TpmQuoteError::Selection("sizeofSelect too large"));
            }
            let bitmap = r.take(usize::from(size)).ok_or_else(|| t(&r))?;
            let pcrs = (0..bitmap.len() * 8)
                .filter(|i| bitmap[i / 8] & (1 << (i % 8)) != 0)
                .collect();
            pcr_select.push(PcrSelection { hash_alg, pcrs });
        }
        let pcr_digest = tpm2b(&mut r, "pcrDigest")?.to_vec();
        if r.remaining() != 0 {
            return Err(TpmQuoteError::Trailing(r.remaining()));
        }
        Ok(Self {
            qualified_signer,
            extra_data,
            clock,
            reset_count,
            restart_count,
            safe,
            firmware_version,
            pcr_select,
            pcr_digest,
        })
    }

    /// Checks that `pcrs` (SHA-256 bank, indexed by PCR number) hash to the quote's digest:
    /// SHA-256 of the selected values concatenated in selection order.
    pub fn check_pcrs(&self, pcrs: &[[u8; 32]]) -> Result<(), TpmQuoteError> {
        let mut h = Sha256::new();
        for sel in &self.pcr_select {
            if sel.hash_alg != TPM_ALG_SHA256 {
                return Err(TpmQuoteError::Bank(sel.hash_alg));
            }
            for &i in &sel.pcrs {
                let v = pcrs.get(i).ok_or(TpmQuoteError::MissingPcr {
                    index: i,
                    available: pcrs.len(),
                })?;
                h.update(v);
            }
        }
        if h.finalize().as_slice() != self.pcr_digest.as_slice() {
            return Err(TpmQuoteError::PcrDigest);
        }
        Ok(())
    }
}

/// Parses a marshalled TPMT_SIGNATURE and returns the raw RSASSA-SHA256 signature.
pub fn rsassa_sha256_signature(tpmt: &[u8]) -> Result<Vec<u8>, TpmQuoteError> {
    let mut r = Reader::new(tpmt);
    let t = |r: &Reader<'_>| trunc("TPMT_SIGNATURE", r);
    let sig_alg = r.u16_be().ok_or_else(|| t(&r))?;
    let hash_alg = r.u16_be().ok_or_else(|| t(&r))?;
    if sig_alg != TPM_ALG_RSASSA || hash_alg != TPM_ALG_SHA256 {
        return Err(TpmQuoteError::SignatureScheme { sig_alg, hash_alg });
    }
    let sig = tpm2b(&mut r, "TPMT_SIGNATURE")?.to_vec();
    if r.remaining() != 0 {
        return Err(TpmQuoteError::Trailing(r.remaining()));
    }
    Ok(sig)
}

/// RSASSA-PKCS1-v1_5 with SHA-256 over `message` (the TPMS_ATTEST bytes).
pub fn verify_rsassa_sha256(
    key: &rsa::RsaPublicKey,
    message: &[u8],
    signature: &[u8],
) -> Result<(), TpmQuoteError> {
    let vk = pkcs1v15::VerifyingKey::<Sha256>::new(key.clone());
    let sig = pkcs1v15::Signature::try_from(signature).map_err(|_| TpmQuoteError::Signature)?;
    vk.verify(message, &sig)
        .map_err(|_| TpmQuoteError::Signature)
}

/// A quote in the shape KBS evidence carries it: raw RSASSA signature, TPMS_ATTEST message,
/// and the SHA-256 PCR values 0..n.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub signature: Vec<u8>,
    pub message: Vec<u8>,
    pub pcrs: Vec<[u8; 32]>,
}

impl Quote {
    /// Signature with `key`, then the message, then the PCR values against its digest.
    /// Returns the parsed message (its `extra_data` is the nonce the caller must compare).
    pub fn verify(&self, key: &rsa::RsaPublicKey) -> Result<Attest, TpmQuoteError> {
        verify_rsassa_sha256(key, &self.message, &self.signature)?;
        let attest = Attest::parse(&self.message)?;
        attest.check_pcrs(&self.pcrs)?;
        Ok(attest)
    }

    /// The legacy (v0) Azure encoding: `bincode` of `{signature: Vec<u8>, message: Vec<u8>,
    /// pcrs: Vec<[u8; 32]>}`, i.e. u64-LE length ‖ bytes, u64-LE length ‖ bytes,
    /// u64-LE count ‖ 32-byte values (the `quote.bin` fixture).
    pub fn from_bincode(b: &[u8]) -> Result<Self, TpmQuoteError> {
        const MAX: u64 = 64 * 1024;
        let mut r = Reader::new(b);
        let t = |r: &Reader<'_>| trunc("bincode quote", r);
        let vec = |r: &mut Reader<'_>| -> Result<Vec<u8>, TpmQuoteError> {
            let n = r.u64_le().ok_or_else(|| t(r))?;
            if n > MAX {
                return Err(t(r));
            }
            Ok(r.take(n as usize).ok_or_else(|| t(r))?.to_vec())
        };
        let signature = vec(&mut r)?;
        let message = vec(&mut r)?;
        let n = r.u64_le().ok_or_else(|| t(&r))?;
        if n > MAX_PCRS as u64 {
            return Err(TpmQuoteError::Selection("too many PCR values"));
        }
        let mut pcrs = Vec::with_capacity(n as usize);
        for _ in 0..n {
            pcrs.push(r.array().ok_or_else(|| t(&r))?);
        }
        if r.remaining() != 0 {
            return Err(TpmQuoteError::Trailing(r.remaining()));
        }
        Ok(Self {
            signature,
            message,
            pcrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_schemes() {
        let mut b = vec![0x00, 0x14, 0x00, 0x0b, 0x00, 0x02, 0xaa, 0xbb];
        assert_eq!(rsassa_sha256_signature(&b).unwrap(), vec![0xaa, 0xbb]);
        b.push(0);
        assert!(matches!(
            rsassa_sha256_signature(&b),
            Err(TpmQuoteError::Trailing(1))
        ));
        assert!(matches!(
            rsassa_sha256_signature(&[0x00, 0x16, 0x00, 0x0b, 0, 0]),
            Err(TpmQuoteError::SignatureScheme { .. })
        ));
        assert!(matches!(
            rsassa_sha256_signature(&[0x00, 0x14, 0x00, 0x0b, 0, 5, 1]),
            Err(TpmQuoteError::Truncated { .. })
        ));
    }

    #[test]
    fn attest_checks() {
        assert!(matches!(
            Attest::parse(&[0, 0, 0, 0]),
            Err(TpmQuoteError::Magic(0))
        ));
        assert!(matches!(
            Attest::parse(&[0xff, 0x54, 0x43, 0x47, 0x80, 0x17]),
            Err(TpmQuoteError::NotAQuote(0x8017))
        ));
    }
}
