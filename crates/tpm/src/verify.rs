//! Host-side checks of a TPM quote, in pure Rust: what a verifier (the dev KBS, tests, a
//! Trustee-like service) does with the evidence the agent sends. This is the one home of
//! TPMS_ATTEST parsing, TPMT_SIGNATURE decoding and RSASSA-PKCS1-v1_5-SHA256 verification;
//! `tee::tpm_quote` only adds the KBS evidence encodings on top.
//!
//! [`verify_quote`] checks, in this order, that the RSASSA-PKCS1-v1_5-SHA256 signature over
//! the TPMS_ATTEST bytes verifies with the AK (nothing in the message is looked at before
//! that), that the message is a TPM-generated quote, that its extraData is the expected nonce,
//! that it selects exactly the given PCRs of the SHA-256 bank, and that its pcrDigest is the
//! SHA-256 of those PCR values concatenated in selection (ascending index) order. Only then
//! can the caller trust the PCR values it compares with its reference values.
//!
//! The parser's limits are the stricter of the two verifiers this module replaced (this one
//! and `tee::tpm_quote`'s): at most [`MAX_SELECTIONS`] banks of at most [`MAX_SELECT`] bytes
//! (32 PCRs) each, TPM2B sizes bounded by their TPM types, the whole message at most one TPM
//! buffer; and [`Attest::check_pcrs`] wants exactly one SHA-256 bank and exactly the selected
//! PCR values (no value the quote does not cover), not merely "every selected PCR given".

use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
use sha2::{Digest, Sha256};

use super::{HashAlg, MAX_BUFFER, Reader, TpmError};

/// TPM_GENERATED_VALUE: the magic every TPMS_ATTEST the TPM signs begins with.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// TPM_ST_ATTEST_QUOTE.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
const TPM_ALG_RSASSA: u16 = 0x0014;
/// Keys shorter than this are not accepted as AKs.
const MIN_RSA_BITS: usize = 2048;
/// TPMS_PCR_SELECTION.sizeofSelect: PCR_SELECT_MAX of any real TPM is at most 4 bytes (32
/// PCRs, the agent's own `MAX_PCR` + 1).
pub const MAX_SELECT: usize = 4;
/// TPML_PCR_SELECTION.count: a TPM has a handful of banks (SHA-1, SHA-256, SHA-384, SHA-512,
/// SM3).
pub const MAX_SELECTIONS: u32 = 8;

/// The parts of a TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    /// TPM2B_NAME of the key that signed.
    pub qualified_signer: Vec<u8>,
    /// TPM2B_DATA: the qualifying data (nonce / report data) the quote was asked for.
    pub extra_data: Vec<u8>,
    pub clock_info: ClockInfo,
    pub firmware_version: u64,
    /// TPMS_QUOTE_INFO.pcrSelect, in order.
    pub pcr_select: Vec<PcrSelection>,
    /// TPMS_QUOTE_INFO.pcrDigest: the hash (in the AK's scheme hash) of the selected PCRs.
    pub pcr_digest: Vec<u8>,
}

/// TPMS_CLOCK_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
}

/// One TPMS_PCR_SELECTION: a bank (TPM_ALG_ID, possibly one we do not know) and the PCR
/// indices selected in it, ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    pub hash: u16,
    pub pcrs: Vec<u32>,
}

/// The AK's public key, as the evidence carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AkPublic<'a> {
    /// DER SubjectPublicKeyInfo (CoCo `tpm` evidence's `ak_public`).
    SpkiDer(&'a [u8]),
    /// Big-endian modulus and the exponent (e.g. from the Azure HCL report's JWK).
    Rsa { modulus: &'a [u8], exponent: u32 },
    /// A key decoded already (the Azure evidence's AK); the size limit still applies.
    Key(&'a RsaPublicKey),
}

/// Why a quote was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum QuoteError {
    #[error("unusable AK public key: {0}")]
    Key(String),

    #[error("signature is {len} bytes, the {expected}-byte AK makes longer or shorter ones")]
    SignatureLength { len: usize, expected: usize },

    #[error("malformed TPMT_SIGNATURE: {0}")]
    SignatureFormat(String),

    #[error("signature does not verify with the AK")]
    BadSignature,

    #[error("malformed attestation")]
    Attest(#[source] TpmError),

    #[error("quote is not for the expected nonce")]
    NonceMismatch,

    #[error("quote selects {0}; only a single SHA-256 bank is supported")]
    UnsupportedSelection(String),

    #[error("quote covers PCRs {quoted:?}, the values given are for {given:?}")]
    SelectionMismatch { quoted: Vec<u32>, given: Vec<u32> },

    #[error("value for PCR {pcr} is {len} bytes, a SHA-256 PCR has 32")]
    PcrValueLength { pcr: u32, len: usize },

    #[error("PCR {0} given twice")]
    DuplicatePcr(u32),

    #[error("the given PCR values do not hash to the quote's pcrDigest")]
    PcrDigestMismatch,
}

/// Parses a TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE: magic, type, qualifiedSigner,
/// extraData, clockInfo, firmwareVersion, pcrSelect, pcrDigest, and nothing after.
/// Everything is bounds-checked; anything else is an error, never a panic.
pub fn parse_attest(attest: &[u8]) -> Result<Attest, TpmError> {
    if attest.len() > MAX_BUFFER {
        return Err(TpmError::TooLarge {
            len: attest.len() as u64,
        });
    }
    let mut r = Reader {
        rest: attest,
        offset: 0,
    };
    let magic = r.u32("magic")?;
    if magic != TPM_GENERATED_VALUE {
        return Err(TpmError::Malformed(format!(
            "magic {magic:#010x} is not TPM_GENERATED_VALUE"
        )));
    }
    let kind = r.u16("type")?;
    if kind != TPM_ST_ATTEST_QUOTE {
        return Err(TpmError::Malformed(format!(
            "attestation type {kind:#06x} is not TPM_ST_ATTEST_QUOTE"
        )));
    }
    let qualified_signer = r.tpm2b(super::MAX_NAME, "qualifiedSigner")?.to_vec();
    let extra_data = r.tpm2b(super::MAX_NAME, "extraData")?.to_vec();
    let clock = r.u64("clockInfo.clock")?;
    let reset_count = r.u32("clockInfo.resetCount")?;
    let restart_count = r.u32("clockInfo.restartCount")?;
    let safe = match r.u8("clockInfo.safe")? {
        0 => false,
        1 => true,
        other => {
            return Err(TpmError::Malformed(format!(
                "clockInfo.safe is {other}, not a TPMI_YES_NO"
            )));
        }
    };
    let firmware_version = r.u64("firmwareVersion")?;
    let count = r.u32("pcrSelect.count")?;
    if count > MAX_SELECTIONS {
        return Err(TpmError::Malformed(format!(
            "{count} PCR selections (at most {MAX_SELECTIONS})"
        )));
    }
    let mut pcr_select = Vec::new();
    for _ in 0..count {
        let hash = r.u16("TPMS_PCR_SELECTION.hash")?;
        let size = usize::from(r.u8("TPMS_PCR_SELECTION.sizeofSelect")?);
        if size > MAX_SELECT {
            return Err(TpmError::Malformed(format!(
                "sizeofSelect {size} (at most {MAX_SELECT})"
            )));
        }
        let select = r.take(size, "TPMS_PCR_SELECTION.pcrSelect")?;
        pcr_select.push(PcrSelection {
            hash,
            pcrs: super::select_to_indices(select),
        });
    }
    let pcr_digest = r.tpm2b(64, "pcrDigest")?.to_vec();
    if !r.is_empty() {
        return Err(TpmError::Malformed(format!(
            "{} bytes after the quote info",
            r.rest.len()
        )));
    }
    Ok(Attest {
        qualified_signer,
        extra_data,
        clock_info: ClockInfo {
            clock,
            reset_count,
            restart_count,
            safe,
        },
        firmware_version,
        pcr_select,
        pcr_digest,
    })
}

/// The raw signature out of a marshalled TPMT_SIGNATURE, which must be RSASSA with SHA-256
/// (what CoCo's `tpm_quote.signature` carries), with nothing after it.
pub fn rsassa_signature(signature_raw: &[u8]) -> Result<Vec<u8>, QuoteError> {
    let format = |e: TpmError| QuoteError::SignatureFormat(e.to_string());
    let mut r = Reader {
        rest: signature_raw,
        offset: 0,
    };
    let sig = read_rsassa_signature(&mut r).map_err(format)?;
    r.finish().map_err(format)?;
    Ok(sig.to_vec())
}

/// Reads a TPMT_SIGNATURE (sigAlg, hash, TPM2B signature) and returns the signature, or an
/// error unless the scheme is RSASSA with SHA-256. Shared with `Tpm::quote`'s answer parsing.
pub(super) fn read_rsassa_signature<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], TpmError> {
    let sig_alg = r.u16("signature.sigAlg")?;
    let hash = r.u16("signature.hash")?;
    let sig = r.tpm2b(MAX_BUFFER, "signature.sig")?;
    if sig_alg != TPM_ALG_RSASSA || hash != HashAlg::Sha256.tpm_alg_id() {
        return Err(TpmError::Malformed(format!(
            "signature scheme {sig_alg:#06x} with hash {hash:#06x}, not RSASSA-SHA256"
        )));
    }
    Ok(sig)
}

fn rsa_key(ak: &AkPublic<'_>) -> Result<RsaPublicKey, QuoteError> {
    let key = match ak {
        AkPublic::SpkiDer(der) => {
            RsaPublicKey::from_public_key_der(der).map_err(|e| QuoteError::Key(e.to_string()))?
        }
        AkPublic::Rsa { modulus, exponent } => {
            RsaPublicKey::new(BigUint::from_bytes_be(modulus), BigUint::from(*exponent))
                .map_err(|e| QuoteError::Key(e.to_string()))?
        }
        AkPublic::Key(key) => (*key).clone(),
    };
    let bits = key.n().bits();
    if bits < MIN_RSA_BITS {
        return Err(QuoteError::Key(format!(
            "{bits}-bit modulus, at least {MIN_RSA_BITS} required"
        )));
    }
    Ok(key)
}

/// Checks the RSASSA-PKCS1-v1_5 signature with SHA-256 over `attest` (the TPMS_ATTEST
/// bytes); `signature` is the raw signature, as long as the modulus.
pub fn verify_signature(
    ak: &AkPublic<'_>,
    attest: &[u8],
    signature: &[u8],
) -> Result<(), QuoteError> {
    let key = rsa_key(ak)?;
    if signature.len() != key.size() {
        return Err(QuoteError::SignatureLength {
            len: signature.len(),
            expected: key.size(),
        });
    }
    let digest = Sha256::digest(attest);
    key.verify(Pkcs1v15Sign::new::<Sha256>(), &digest, signature)
        .map_err(|_| QuoteError::BadSignature)
}

/// Verifies a quote end to end (see the module documentation) and returns the parsed
/// attestation. `pcr_values` are `(index, SHA-256 PCR value)` in any order; they must be
/// exactly the PCRs the quote selects.
pub fn verify_quote(
    ak: &AkPublic<'_>,
    attest: &[u8],
    signature: &[u8],
    expected_nonce: &[u8],
    pcr_values: &[(u32, Vec<u8>)],
) -> Result<Attest, QuoteError> {
    verify_signature(ak, attest, signature)?;
    let parsed = parse_attest(attest).map_err(QuoteError::Attest)?;
    if parsed.extra_data != expected_nonce {
        return Err(QuoteError::NonceMismatch);
    }
    parsed.check_pcrs(pcr_values)?;
    Ok(parsed)
}

impl Attest {
    /// Checks that the quote selects exactly one bank, SHA-256, and in it exactly the PCRs
    /// of `pcr_values` (`(index, value)` in any order, each index once, 32-byte values), and
    /// that those values concatenated in ascending index order hash to `pcr_digest`. Only
    /// meaningful on an attestation whose signature was verified.
    pub fn check_pcrs(&self, pcr_values: &[(u32, Vec<u8>)]) -> Result<(), QuoteError> {
        let quoted = match self.pcr_select.as_slice() {
            [one] if one.hash == HashAlg::Sha256.tpm_alg_id() => &one.pcrs,
            other => {
                let banks: Vec<String> = other
                    .iter()
                    .map(|s| match HashAlg::from_tpm_alg_id(s.hash) {
                        Some(alg) => alg.to_string(),
                        None => format!("{:#06x}", s.hash),
                    })
                    .collect();
                return Err(QuoteError::UnsupportedSelection(format!(
                    "banks [{}]",
                    banks.join(", ")
                )));
            }
        };
        let mut given: Vec<(u32, &[u8])> = Vec::with_capacity(pcr_values.len());
        for (pcr, value) in pcr_values {
            if given.iter().any(|(seen, _)| seen == pcr) {
                return Err(QuoteError::DuplicatePcr(*pcr));
            }
            if value.len() != HashAlg::Sha256.digest_len() {
                return Err(QuoteError::PcrValueLength {
                    pcr: *pcr,
                    len: value.len(),
                });
            }
            given.push((*pcr, value));
        }
        given.sort_by_key(|(pcr, _)| *pcr);
        let given_indices: Vec<u32> = given.iter().map(|(pcr, _)| *pcr).collect();
        if &given_indices != quoted {
            return Err(QuoteError::SelectionMismatch {
                quoted: quoted.clone(),
                given: given_indices,
            });
        }
        let mut hasher = Sha256::new();
        for (_, value) in &given {
            hasher.update(value);
        }
        if hasher.finalize().as_slice() != self.pcr_digest.as_slice() {
            return Err(QuoteError::PcrDigestMismatch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn malformed(e: &TpmError, needle: &str) -> bool {
        matches!(e, TpmError::Malformed(m) if m.contains(needle))
    }

    fn format_error(r: Result<Vec<u8>, QuoteError>, needle: &str) -> bool {
        matches!(r, Err(QuoteError::SignatureFormat(m)) if m.contains(needle))
    }

    #[test]
    fn signature_schemes() {
        let mut b = vec![0x00, 0x14, 0x00, 0x0b, 0x00, 0x02, 0xaa, 0xbb];
        assert_eq!(rsassa_signature(&b).unwrap(), vec![0xaa, 0xbb]);
        b.push(0);
        assert!(format_error(rsassa_signature(&b), "1 trailing bytes"));
        // RSAPSS.
        assert!(format_error(
            rsassa_signature(&[0x00, 0x16, 0x00, 0x0b, 0, 0]),
            "not RSASSA-SHA256"
        ));
        // RSASSA with SHA-1.
        assert!(format_error(
            rsassa_signature(&[0x00, 0x14, 0x00, 0x04, 0, 0]),
            "not RSASSA-SHA256"
        ));
        assert!(format_error(
            rsassa_signature(&[0x00, 0x14, 0x00, 0x0b, 0, 5, 1]),
            "needs 5 bytes, 1 left"
        ));
    }

    #[test]
    fn attest_checks() {
        assert!(malformed(
            &parse_attest(&[0, 0, 0, 0]).unwrap_err(),
            "magic 0x00000000 is not TPM_GENERATED_VALUE"
        ));
        assert!(malformed(
            &parse_attest(&[0xff, 0x54, 0x43, 0x47, 0x80, 0x17]).unwrap_err(),
            "type 0x8017 is not TPM_ST_ATTEST_QUOTE"
        ));
        assert!(matches!(
            parse_attest(&[0; MAX_BUFFER + 1]),
            Err(TpmError::TooLarge { .. })
        ));
    }
}
