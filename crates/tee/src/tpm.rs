//! The KBS protocol's `tpm` evidence (QEMU + swtpm, GCP, AWS): an AK public key and a
//! TPM2_Quote. Field names and encodings as in Trustee's `tpm` verifier
//! (`deps/verifier/src/tpm/mod.rs`): `ak_public` is base64 DER SubjectPublicKeyInfo,
//! `tpm_quote.signature` base64 of a marshalled TPMT_SIGNATURE, `tpm_quote.message` base64
//! TPMS_ATTEST, `tpm_quote.pcrs` the 24 SHA-256 PCRs in hex.
//!
//! Verifying the quote with the AK it comes with proves only that the quote is consistent;
//! whether the AK belongs to a trustworthy TPM is the verifier's decision (Trustee keeps a list
//! of trusted AK hashes, see [`TpmEvidence::ak_sha256`]).

use rsa::pkcs8::DecodePublicKey as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::encoding::{b64_bytes, hex_pcrs};
use super::tpm_quote;
use cvm_tpm::verify::{self, AkPublic, Attest, QuoteError};

/// Number of PCR values the evidence carries (the SHA-256 bank, PCR 0–23).
pub const PCR_COUNT: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum TpmEvidenceError {
    #[error("tpm evidence JSON is malformed")]
    Json(#[source] serde_json::Error),
    #[error("tpm evidence has {0} PCR values, expected {PCR_COUNT}")]
    PcrCount(usize),
    #[error("ak_public is not a DER RSA SubjectPublicKeyInfo")]
    AkPublic,
    #[error("TPM quote does not verify")]
    Quote(#[source] QuoteError),
}

/// `tpm` evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmEvidence {
    /// DER SubjectPublicKeyInfo of the AK.
    #[serde(with = "b64_bytes")]
    pub ak_public: Vec<u8>,
    pub tpm_quote: TpmQuoteJson,
    /// cvm-agent's measurement log (CEL-JSON records, as `EventLog::to_json`) up to the quote,
    /// so a verifier can replay PCR 15 and read what it claims. An extra member: Trustee's
    /// `tpm` verifier ignores members it does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cel_eventlog: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmQuoteJson {
    /// Marshalled TPMT_SIGNATURE (RSASSA, SHA-256).
    #[serde(with = "b64_bytes")]
    pub signature: Vec<u8>,
    /// TPMS_ATTEST.
    #[serde(with = "b64_bytes")]
    pub message: Vec<u8>,
    #[serde(with = "hex_pcrs")]
    pub pcrs: Vec<[u8; 32]>,
}

impl TpmEvidence {
    pub fn from_json(json: &[u8]) -> Result<Self, TpmEvidenceError> {
        let ev: Self = serde_json::from_slice(json).map_err(TpmEvidenceError::Json)?;
        if ev.tpm_quote.pcrs.len() != PCR_COUNT {
            return Err(TpmEvidenceError::PcrCount(ev.tpm_quote.pcrs.len()));
        }
        Ok(ev)
    }

    /// SHA-256 of the AK's DER SPKI: what Trustee's allow-list of trusted AKs holds.
    pub fn ak_sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.ak_public).into()
    }

    pub fn ak_key(&self) -> Result<rsa::RsaPublicKey, TpmEvidenceError> {
        rsa::RsaPublicKey::from_public_key_der(&self.ak_public)
            .map_err(|_| TpmEvidenceError::AkPublic)
    }

    /// The quote's signature with `ak_public`, and its PCR digest against `pcrs` (which the
    /// quote must select exactly). Returns the message; its `extra_data` is the nonce (the KBS
    /// report data, zero-padded to 64 bytes).
    pub fn verify(&self) -> Result<Attest, TpmEvidenceError> {
        let key = self.ak_key()?;
        let signature =
            verify::rsassa_signature(&self.tpm_quote.signature).map_err(TpmEvidenceError::Quote)?;
        tpm_quote::Quote {
            signature,
            message: self.tpm_quote.message.clone(),
            pcrs: self.tpm_quote.pcrs.clone(),
        }
        .verify(&AkPublic::Key(&key))
        .map_err(TpmEvidenceError::Quote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_json() {
        assert!(matches!(
            TpmEvidence::from_json(b"{}"),
            Err(TpmEvidenceError::Json(_))
        ));
        let j = br#"{"ak_public":"AA==","tpm_quote":{"signature":"","message":"","pcrs":["00"]}}"#;
        assert!(matches!(
            TpmEvidence::from_json(j),
            Err(TpmEvidenceError::Json(_))
        ));
        let j = br#"{"ak_public":"AA==","tpm_quote":{"signature":"","message":"","pcrs":[]}}"#;
        assert!(matches!(
            TpmEvidence::from_json(j),
            Err(TpmEvidenceError::PcrCount(0))
        ));
    }
}
