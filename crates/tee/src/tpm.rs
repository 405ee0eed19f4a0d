//! The KBS protocol's `tpm` evidence (QEMU + swtpm, GCP, AWS): an AK public key and a
//! TPM2_Quote. Field names and encodings as in Trustee's `tpm` verifier
//! (`deps/verifier/src/tpm/mod.rs`): `ak_public` is base64 DER SubjectPublicKeyInfo,
//! `tpm_quote.signature` base64 of a marshalled TPMT_SIGNATURE, `tpm_quote.message` base64
//! TPMS_ATTEST, `tpm_quote.pcrs` the 24 SHA-256 PCRs in hex.
//!
//! One member beyond the CoCo attester's, `eventlog`: the firmware's TCG event log (the bytes
//! of `/sys/kernel/security/tpm0/binary_bios_measurements`) in standard padded base64, the
//! member name and encoding of the Trustee `tpm` verifier that replays a UEFI log (OpenAnolis'
//! Trustee, `deps/verifier/src/tpm/mod.rs`, whose attester reads that file). Upstream Trustee's
//! `tpm` verifier (confidential-containers/trustee, same path) reads only `ak_public` and
//! `tpm_quote` and ignores other members, so the log costs it nothing; the dev KBS replays it.
//! A direct kernel boot has no firmware log: then the member is absent.
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
/// Where Linux exposes the firmware's TCG event log.
pub const FIRMWARE_LOG_PATH: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";
/// Largest firmware log carried (OVMF's is under 10 KiB, a real machine's some 100 KiB); the
/// agent refuses to send more, a verifier to read more.
pub const MAX_FIRMWARE_LOG: usize = 1 << 20;

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
    /// The firmware's TCG event log ([`FIRMWARE_LOG_PATH`]), at most [`MAX_FIRMWARE_LOG`]
    /// bytes, as standard padded base64; absent without one (direct kernel boot).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "b64_firmware_log"
    )]
    pub eventlog: Option<Vec<u8>>,
    /// DER certificate of the AK from the cloud (GCP: NV 0x01c10000), standard base64, at most
    /// [`MAX_AK_CERT`] bytes, so a verifier can chain the AK to the cloud's CA instead of
    /// listing it. An extra member Trustee's `tpm` verifier ignores.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "b64_ak_cert")]
    pub ak_cert: Option<Vec<u8>>,
}

/// Largest AK certificate carried (GCP's are under 2 KiB).
pub const MAX_AK_CERT: usize = 16 << 10;

/// `ak_cert`: optional standard base64 of at most [`MAX_AK_CERT`] bytes.
mod b64_ak_cert {
    use super::MAX_AK_CERT;
    use serde::Deserializer;

    pub use crate::encoding::b64_bounded::serialize;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        crate::encoding::b64_bounded::deserialize(d, "ak_cert", MAX_AK_CERT)
    }
}

/// `eventlog`: optional standard base64 of at most [`MAX_FIRMWARE_LOG`] bytes (also the
/// Azure evidence's, `crate::azure`).
pub(crate) mod b64_firmware_log {
    use super::MAX_FIRMWARE_LOG;
    use serde::Deserializer;

    pub use crate::encoding::b64_bounded::serialize;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        crate::encoding::b64_bounded::deserialize(d, "eventlog", MAX_FIRMWARE_LOG)
    }
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

    fn with_log(log: serde_json::Value) -> Result<TpmEvidence, TpmEvidenceError> {
        let pcrs = vec!["00".repeat(32); PCR_COUNT];
        let j = serde_json::json!({
            "ak_public": "AA==",
            "tpm_quote": {"signature": "", "message": "", "pcrs": pcrs},
            "eventlog": log,
        });
        TpmEvidence::from_json(j.to_string().as_bytes())
    }

    /// `eventlog`: standard padded base64 both ways, absent = `None` (and not written), bounded.
    #[test]
    fn firmware_log_member() {
        let ev = with_log(serde_json::json!("AAEC/w==")).unwrap();
        assert_eq!(ev.eventlog.as_deref(), Some(&[0, 1, 2, 0xff][..]));
        let out = serde_json::to_value(&ev).unwrap();
        assert_eq!(out["eventlog"], "AAEC/w==");
        let mut none = ev.clone();
        none.eventlog = None;
        assert!(
            serde_json::to_value(&none)
                .unwrap()
                .get("eventlog")
                .is_none()
        );
        assert_eq!(with_log(serde_json::Value::Null).unwrap().eventlog, None);
        let err = with_log(serde_json::json!("AAEC_w==")).unwrap_err();
        assert!(
            format!("{:?}", err).contains("not standard base64"),
            "{err:?}"
        );
        use base64::Engine as _;
        let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_FIRMWARE_LOG + 1]);
        let err = with_log(serde_json::json!(big)).unwrap_err();
        assert!(
            format!("{err:?}").contains("larger than 1048576 bytes"),
            "{err:?}"
        );
        let max = base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_FIRMWARE_LOG]);
        assert_eq!(
            with_log(serde_json::json!(max))
                .unwrap()
                .eventlog
                .unwrap()
                .len(),
            MAX_FIRMWARE_LOG
        );
    }

    /// `ak_cert` is held to MAX_AK_CERT bytes exactly: one byte over fits the same base64
    /// text length (16384 = 3·5461 + 1) and is refused once decoded.
    #[test]
    fn ak_cert_member_is_bounded_exactly() {
        use base64::Engine as _;
        let with_cert = |len: usize| {
            let pcrs = vec!["00".repeat(32); PCR_COUNT];
            let cert = base64::engine::general_purpose::STANDARD.encode(vec![0x30u8; len]);
            let j = serde_json::json!({
                "ak_public": "AA==",
                "tpm_quote": {"signature": "", "message": "", "pcrs": pcrs},
                "ak_cert": cert,
            });
            TpmEvidence::from_json(j.to_string().as_bytes())
        };
        assert_eq!(
            with_cert(MAX_AK_CERT).unwrap().ak_cert.unwrap().len(),
            MAX_AK_CERT
        );
        for len in [MAX_AK_CERT + 1, MAX_AK_CERT + 2, MAX_AK_CERT + 3] {
            let err = with_cert(len).unwrap_err();
            assert!(
                format!("{err:?}").contains("ak_cert is larger than 16384 bytes"),
                "{len}: {err:?}"
            );
        }
    }
}
