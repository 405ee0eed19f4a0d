//! The KBS protocol 0.4.0 (RCAR) messages and the runtime-data binding.
//!
//! Messages are kbs-types 0.18's (`Request`, `Challenge`, `Attestation`, `RuntimeData`,
//! `CompositeEvidence`, `InitData`, `TeePubKey`, `ErrorInformation`); on the wire:
//! - `POST /kbs/v0/auth`: `{"version":"0.4.0","tee":"tpm","extra-params":{"supported-hash-algorithms":["sha256","sha384","sha512"]}}`
//!   (Trustee requires `version` to be exactly 0.4.0: `kbs/src/attestation/backend.rs`
//!   `VERSION_REQ`); answer `{"nonce":…,"extra-params":…}` plus the `kbs-session-id` cookie.
//!   Trustee's nonce is 32 random bytes in standard padded base64; its `extra-params` is `""`
//!   except for IBM SE (`kbs/src/attestation/mod.rs` `generate_extra_params`).
//! - `POST /kbs/v0/attest`: `{"init-data":{"format":"toml","body":<init-data TOML>}|null,
//!   "runtime-data":{"nonce":…,"tee-pubkey":<JWK>},
//!   "tee-evidence":{"primary_evidence":<evidence JSON>,"additional_evidence":""}}`
//!   (note the snake_case inside `tee-evidence`, kbs-types `CompositeEvidence`); answer
//!   `{"token":<JWT>}`.
//! - `GET /kbs/v0/resource/<repo>/<type>/<tag>`: a JWE (see [`crate::jwe`]).
//! - Errors: HTTP 401/403/404 with `{"type":"https://github.com/confidential-containers/kbs/errors/<Name>","detail":…}`
//!   (Trustee `kbs/src/error.rs` `error_response`).
//!
//! # Runtime-data binding (the exact rule)
//!
//! The attester (guest-components `attestation-agent/kbs_protocol/src/client/rcar_client.rs`,
//! `KbsClient::get_composite_evidence`) hashes
//! `{"tee-pubkey": <JWK>, "nonce": <challenge nonce>, "additional-evidence": <string>}`:
//! - serialized as RFC 8785 canonical JSON (`serialize_json_canonically`, i.e.
//!   `serde_json_canonicalizer`), so the members are in the order `additional-evidence`, `nonce`,
//!   `tee-pubkey` and the JWK's in `alg`, `crv`, `kty`, `x`, `y` (EC) / `alg`, `e`, `kty`, `n` (RSA);
//! - `additional-evidence` is **always present** and is a JSON *string*: `""` when there are no
//!   device attesters (`evidence_provider/native.rs` `get_additional_evidence`), otherwise the
//!   JSON text of a map TEE → evidence, the very string sent as
//!   `tee-evidence.additional_evidence`;
//! - hashed with the algorithm the challenge selects in `extra-params."selected-hash-algorithm"`,
//!   SHA-384 when it selects none (`get_hash_algorithm`, `DEFAULT_HASH_ALGORITHM`);
//! - the digest then goes into each TEE's evidence in that TEE's own form ([`tee_report_data`]).
//!
//! Additional evidence (the SNP report or TDX quote beside a primary `tpm` on GCP and AWS,
//! see `cvm_tee::detect`): each additional TEE's evidence is bound to the digest of
//! [`device_runtime_data`] (`{"nonce", "tee-pubkey"}` only), the map TEE → evidence is
//! serialized once ([`additional_evidence`]), and that string goes both into the primary's
//! runtime data and, unchanged, into `tee-evidence.additional_evidence`. Trustee verifies the
//! primary with the init-data and the additional ones without (`backend.rs` `__attest`).
//!
//! Trustee rebuilds the same object from the `Attestation` (`kbs/src/attestation/backend.rs`
//! `AttestationService::__attest`, after checking the nonce against the session's), hashes its
//! canonical JSON (`attestation-service/src/lib.rs` `parse_runtime_data`, `canon_json`) with
//! SHA-384 for every TEE but IBM SE (`kbs/src/attestation/coco/builtin.rs`
//! `BuiltInCoCoAs::verify`: SHA-512 for `se`, otherwise SHA-384, whatever was negotiated), and
//! hands the digest to the TEE's verifier, which compares it in its own form:
//!
//! | TEE | where | bytes |
//! | --- | --- | --- |
//! | `tpm` | TPM2_Quote `qualifyingData` (TPMS_ATTEST `extraData`) | the **first 32** bytes of the digest (Trustee ≥ v0.16 `deps/verifier/src/tpm/mod.rs`, `TPM_REPORT_DATA_SIZE = 32`; the CoCo TPM attester truncates the same way) |
//! | `snp` | REPORT_DATA | the digest, zero-padded to 64 bytes (`regularize_data`) |
//! | `tdx` | REPORTDATA | the digest, zero-padded to 64 bytes (`regularize_data`) |
//! | `az-snp-vtpm`, `az-tdx-vtpm` | the vTPM quote's nonce | the whole digest, unpadded (48 bytes for SHA-384; `verify_nonce` compares exactly) |
//!
//! A 64-byte padded `tpm` nonce (the form of the old `tpm_evidence.json` fixture, before
//! Trustee v0.16) is refused by today's Trustee with `TPM quote nonce doesn't match expected
//! report_data`.

use crate::canon::{self, CanonError};
use crate::resource::ResourceUri;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha384, Sha512};
use std::fmt::Write as _;

pub use kbs_types::{
    Attestation, Challenge, CompositeEvidence, ErrorInformation, InitData, Request, RuntimeData,
    Tee, TeePubKey,
};

/// The protocol version this client speaks (Trustee accepts exactly this one).
pub const PROTOCOL_VERSION: &str = "0.4.0";
/// Path prefix of every KBS endpoint.
pub const API_PREFIX: &str = "/kbs/v0";
/// The session cookie `/auth` sets and `/attest` and resource requests send back.
pub const SESSION_COOKIE: &str = "kbs-session-id";
/// `init-data.format` of the CoCo init-data TOML (the only format Trustee's built-in AS takes).
pub const INIT_DATA_FORMAT: &str = "toml";
/// `additional-evidence` / `tee-evidence.additional_evidence` when there are no device attesters.
pub const NO_ADDITIONAL_EVIDENCE: &str = "";
/// Largest challenge, attest response or error body accepted.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Largest nonce accepted (Trustee's are 44 characters; IBM SE's are larger JSON).
pub const MAX_NONCE: usize = 64 << 10;
/// How much of a KBS error's `type`/`detail` is kept for messages.
const MAX_ERROR_TEXT: usize = 512;

const SUPPORTED_HASH_ALGORITHMS: &str = "supported-hash-algorithms";
const SELECTED_HASH_ALGORITHM: &str = "selected-hash-algorithm";

#[derive(Debug, thiserror::Error)]
pub enum KbsError {
    /// The KBS's own error body (`ErrorInformation`), sanitized for the console.
    #[error("KBS refused (HTTP {status}): {error_type}: {detail}")]
    Refused {
        status: u16,
        error_type: String,
        detail: String,
    },
    #[error("KBS answered HTTP {status} without a KBS error body ({body})")]
    Http { status: u16, body: String },
    #[error("invalid {what} from the KBS ({why})")]
    BadMessage { what: &'static str, why: String },
    #[error("{what} from the KBS is {len} bytes, more than {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("the KBS selected runtime-data hash {0:?}; supported are sha256, sha384 and sha512")]
    UnsupportedHash(String),
    #[error("cannot canonicalize the runtime data")]
    Canon(#[from] CanonError),
}

/// The hash over the canonical runtime data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeDataHash {
    Sha256,
    /// The protocol default, and what Trustee verifies for every TEE but IBM SE.
    #[default]
    Sha384,
    Sha512,
}

impl RuntimeDataHash {
    /// The name on the wire (kbs-types `HashAlgorithm`, lower case).
    pub fn name(self) -> &'static str {
        match self {
            RuntimeDataHash::Sha256 => "sha256",
            RuntimeDataHash::Sha384 => "sha384",
            RuntimeDataHash::Sha512 => "sha512",
        }
    }

    /// Case-insensitive, as guest-components parses it.
    pub fn from_name(name: &str) -> Option<RuntimeDataHash> {
        match name.to_ascii_lowercase().as_str() {
            "sha256" => Some(RuntimeDataHash::Sha256),
            "sha384" => Some(RuntimeDataHash::Sha384),
            "sha512" => Some(RuntimeDataHash::Sha512),
            _ => None,
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            RuntimeDataHash::Sha256 => Sha256::digest(data).to_vec(),
            RuntimeDataHash::Sha384 => Sha384::digest(data).to_vec(),
            RuntimeDataHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

/// The `/auth` request body for `tee`.
pub fn request(tee: Tee) -> Request {
    Request {
        version: PROTOCOL_VERSION.to_string(),
        tee,
        extra_params: json!({
            SUPPORTED_HASH_ALGORITHMS: ["sha256", "sha384", "sha512"],
        }),
    }
}

/// Parses the `/auth` answer. The nonce must be a non-empty string of at most [`MAX_NONCE`] bytes.
pub fn parse_challenge(body: &[u8]) -> Result<Challenge, KbsError> {
    check_size("the challenge", body.len(), MAX_MESSAGE)?;
    let challenge: Challenge = serde_json::from_slice(body).map_err(|e| KbsError::BadMessage {
        what: "challenge",
        why: e.to_string(),
    })?;
    if challenge.nonce.is_empty() {
        return Err(KbsError::BadMessage {
            what: "challenge",
            why: "empty nonce".into(),
        });
    }
    check_size("the nonce", challenge.nonce.len(), MAX_NONCE)?;
    Ok(challenge)
}

/// The runtime-data hash the challenge selects (`extra-params."selected-hash-algorithm"`),
/// SHA-384 when it selects none — including Trustee's `"extra-params": ""`.
pub fn hash_algorithm(challenge: &Challenge) -> Result<RuntimeDataHash, KbsError> {
    match challenge.extra_params.get(SELECTED_HASH_ALGORITHM) {
        None => Ok(RuntimeDataHash::default()),
        Some(Value::String(name)) => RuntimeDataHash::from_name(name)
            .ok_or_else(|| KbsError::UnsupportedHash(sanitize(name))),
        Some(other) => Err(KbsError::BadMessage {
            what: "challenge",
            why: format!(
                "{SELECTED_HASH_ALGORITHM} is not a string ({})",
                kind(other)
            ),
        }),
    }
}

/// The runtime data bound into the evidence:
/// `{"additional-evidence": <string>, "nonce": <nonce>, "tee-pubkey": <JWK>}`, with
/// `additional_evidence` exactly the string sent as `tee-evidence.additional_evidence`
/// ([`NO_ADDITIONAL_EVIDENCE`], `""`, when there are no device attesters).
pub fn runtime_data(nonce: &str, tee_pubkey: &TeePubKey, additional_evidence: &str) -> Value {
    let mut map = serde_json::Map::new();
    map.insert(
        "additional-evidence".into(),
        Value::String(additional_evidence.into()),
    );
    map.insert("nonce".into(), Value::String(nonce.into()));
    map.insert("tee-pubkey".into(), jwk_value(tee_pubkey));
    Value::Object(map)
}

/// The runtime-data digest: `hash` (SHA-384 unless the challenge selected another) of the
/// RFC 8785 canonical JSON of `runtime_data`. What each TEE's evidence carries of it is
/// [`tee_report_data`].
pub fn runtime_data_digest(
    hash: RuntimeDataHash,
    runtime_data: &Value,
) -> Result<Vec<u8>, KbsError> {
    let canonical = canon::canonicalize_to_vec(runtime_data)?;
    Ok(hash.digest(&canonical))
}

/// Bytes of the `tpm` quote's qualifying data (Trustee ≥ v0.16).
pub const TPM_REPORT_DATA_LEN: usize = 32;
/// Bytes of SNP REPORT_DATA and TDX REPORTDATA.
pub const HW_REPORT_DATA_LEN: usize = 64;

/// The report data `tee`'s evidence must carry for the runtime-data `digest`, in the form
/// Trustee's verifier for that TEE compares (see the table in the module docs): `tpm` the first
/// 32 bytes, `snp`/`tdx` zero-padded to 64, the Azure vTPM TEEs the digest itself. Every other
/// TEE gets the 64-byte padded form, Trustee's `regularize_data` default.
pub fn tee_report_data(tee: Tee, digest: &[u8]) -> Result<Vec<u8>, KbsError> {
    let fixed = |len: usize| -> Result<Vec<u8>, KbsError> {
        let mut out = vec![0u8; len];
        let n = digest.len().min(len);
        out[..n].copy_from_slice(&digest[..n]);
        Ok(out)
    };
    if digest.len() > HW_REPORT_DATA_LEN {
        return Err(KbsError::BadMessage {
            what: "runtime-data digest",
            why: format!(
                "{} bytes, more than the {HW_REPORT_DATA_LEN} any report data holds",
                digest.len()
            ),
        });
    }
    match tee {
        Tee::Tpm => fixed(TPM_REPORT_DATA_LEN),
        Tee::AzSnpVtpm | Tee::AzTdxVtpm => Ok(digest.to_vec()),
        _ => fixed(HW_REPORT_DATA_LEN),
    }
}

/// `init-data` of the attest request: the init-data TOML exactly as measured (Trustee hashes
/// these bytes with the TOML's own `algorithm` and compares with PCR 8 / HOST_DATA / MRCONFIGID).
pub fn init_data(toml: &str) -> InitData {
    InitData {
        format: INIT_DATA_FORMAT.to_string(),
        body: toml.to_string(),
    }
}

/// The `/attest` request body, consistent with [`runtime_data`]`(nonce, tee_pubkey, "")`: no
/// additional (device) evidence.
pub fn attestation(
    nonce: &str,
    tee_pubkey: &TeePubKey,
    primary_evidence: Value,
    init_data_toml: Option<&str>,
) -> Attestation {
    composite_attestation(
        nonce,
        tee_pubkey,
        primary_evidence,
        NO_ADDITIONAL_EVIDENCE,
        init_data_toml,
    )
}

/// The `/attest` request body with `additional_evidence` (the string from
/// [`additional_evidence`], the very one hashed into the primary evidence's
/// [`runtime_data`]).
pub fn composite_attestation(
    nonce: &str,
    tee_pubkey: &TeePubKey,
    primary_evidence: Value,
    additional_evidence: &str,
    init_data_toml: Option<&str>,
) -> Attestation {
    Attestation {
        init_data: init_data_toml.map(init_data),
        runtime_data: RuntimeData {
            nonce: nonce.to_string(),
            tee_pubkey: tee_pubkey.clone(),
        },
        tee_evidence: CompositeEvidence {
            primary_evidence,
            additional_evidence: additional_evidence.to_string(),
        },
    }
}

/// The runtime data the additional evidence is bound to: `{"nonce", "tee-pubkey"}`, without
/// `additional-evidence` (which holds that evidence). The attester hashes the canonical JSON
/// of kbs-types' `RuntimeData` with the negotiated algorithm
/// (`rcar_client.rs` `get_composite_evidence`: `device_runtime_data`); Trustee rebuilds
/// `{"tee-pubkey", "nonce"}` (`backend.rs` `kbs_evidence_runtime_data`) and hashes it with
/// SHA-384 like the primary's. Each additional TEE carries the digest in its own form
/// ([`tee_report_data`]).
pub fn device_runtime_data(nonce: &str, tee_pubkey: &TeePubKey) -> Value {
    let mut map = serde_json::Map::new();
    map.insert("nonce".into(), Value::String(nonce.into()));
    map.insert("tee-pubkey".into(), jwk_value(tee_pubkey));
    Value::Object(map)
}

/// Most additional evidences accepted in one attestation.
pub const MAX_ADDITIONAL: usize = 4;

/// The `additional_evidence` string: [`NO_ADDITIONAL_EVIDENCE`] for none, else the JSON text
/// of the map TEE name → evidence (guest-components `get_additional_evidence`:
/// `serde_json::to_vec(&HashMap<Tee, TeeEvidence>)`), which Trustee parses back into
/// `HashMap<Tee, TeeEvidence>`. A TEE twice is an error: the map keeps one.
pub fn additional_evidence(items: &[(Tee, Value)]) -> Result<String, KbsError> {
    if items.is_empty() {
        return Ok(NO_ADDITIONAL_EVIDENCE.to_string());
    }
    let mut map = serde_json::Map::new();
    for (tee, evidence) in items {
        let name = tee_name(*tee)?;
        if map.insert(name.clone(), evidence.clone()).is_some() {
            return Err(KbsError::BadMessage {
                what: "additional evidence",
                why: format!("{name} twice"),
            });
        }
    }
    serde_json::to_string(&Value::Object(map)).map_err(|e| KbsError::BadMessage {
        what: "additional evidence",
        why: e.to_string(),
    })
}

/// Parses an `additional_evidence` string as Trustee does (`""`: none; else a JSON object
/// TEE name → evidence), bounded: at most [`MAX_ADDITIONAL`] entries, each TEE once, every
/// name a kbs-types TEE.
pub fn parse_additional_evidence(s: &str) -> Result<Vec<(Tee, Value)>, KbsError> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    check_size("the additional evidence", s.len(), MAX_MESSAGE)?;
    let bad = |why: String| KbsError::BadMessage {
        what: "additional evidence",
        why,
    };
    // Duplicate names would silently collapse in a map: refuse them before.
    let entries: Vec<(String, Value)> = serde_json::from_str::<DistinctKeys>(s)
        .map_err(|e| bad(e.to_string()))?
        .0;
    if entries.len() > MAX_ADDITIONAL {
        return Err(bad(format!(
            "{} entries, at most {MAX_ADDITIONAL}",
            entries.len()
        )));
    }
    entries
        .into_iter()
        .map(|(name, evidence)| {
            let tee: Tee = serde_json::from_value(Value::String(name.clone()))
                .map_err(|_| bad(format!("unknown TEE {:?}", sanitize(&name))))?;
            Ok((tee, evidence))
        })
        .collect()
}

/// A JSON object's members in order, refusing a name that comes twice.
struct DistinctKeys(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for DistinctKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = DistinctKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object of TEE name to evidence")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<DistinctKeys, A::Error> {
                let mut out: Vec<(String, Value)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(serde::de::Error::custom(format!(
                            "{:?} twice",
                            sanitize(&k)
                        )));
                    }
                    if out.len() >= MAX_ADDITIONAL {
                        return Err(serde::de::Error::custom(format!(
                            "more than {MAX_ADDITIONAL} entries"
                        )));
                    }
                    out.push((k, v));
                }
                Ok(DistinctKeys(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The kbs-types name of `tee` (`"snp"`, `"az-snp-vtpm"`, …).
fn tee_name(tee: Tee) -> Result<String, KbsError> {
    match serde_json::to_value(tee) {
        Ok(Value::String(s)) => Ok(s),
        _ => Err(KbsError::BadMessage {
            what: "additional evidence",
            why: format!("TEE {tee:?} has no name"),
        }),
    }
}

#[derive(Deserialize)]
struct AttestResponse {
    token: String,
}

/// The attestation token from the `/attest` answer `{"token": <JWT>}`.
pub fn parse_attest_response(body: &[u8]) -> Result<String, KbsError> {
    check_size("the attest response", body.len(), MAX_MESSAGE)?;
    let r: AttestResponse = serde_json::from_slice(body).map_err(|e| KbsError::BadMessage {
        what: "attest response",
        why: e.to_string(),
    })?;
    if r.token.is_empty() {
        return Err(KbsError::BadMessage {
            what: "attest response",
            why: "empty token".into(),
        });
    }
    Ok(r.token)
}

/// `/kbs/v0/resource/<repo>/<type>/<tag>` for `kbs:///<repo>/<type>/<tag>`.
pub fn resource_path(uri: &ResourceUri) -> String {
    format!("{API_PREFIX}/resource/{}", uri.path())
}

/// The error for a non-2xx answer: the KBS's `{"type", "detail"}` body when it has one (both
/// kept, sanitized and bounded), otherwise the status and the start of the body.
pub fn parse_error(status: u16, body: &[u8]) -> KbsError {
    let parsed = (body.len() <= MAX_MESSAGE)
        .then(|| serde_json::from_slice::<ErrorInformation>(body).ok())
        .flatten();
    match parsed {
        Some(info) => KbsError::Refused {
            status,
            error_type: sanitize(&info.error_type),
            detail: sanitize(&info.detail),
        },
        None => {
            let end = body.len().min(MAX_ERROR_TEXT);
            KbsError::Http {
                status,
                body: sanitize(&String::from_utf8_lossy(&body[..end])),
            }
        }
    }
}

/// Hostile text made safe for a one-line console message: at most [`MAX_ERROR_TEXT`] characters,
/// control and format characters escaped.
fn sanitize(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i >= MAX_ERROR_TEXT {
            out.push('…');
            break;
        }
        if c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

fn jwk_value(jwk: &TeePubKey) -> Value {
    // A JWK is a struct of strings: serialization cannot fail.
    serde_json::to_value(jwk).unwrap_or(Value::Null)
}

fn check_size(what: &'static str, len: usize, max: usize) -> Result<(), KbsError> {
    if len > max {
        Err(KbsError::TooLarge { what, len, max })
    } else {
        Ok(())
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
#[path = "tests/protocol.rs"]
mod tests;
