//! The JWE a KBS returns a resource in, and the dev KBS's side of it.
//!
//! Form (Trustee `kbs/src/jwe/mod.rs` `jwe()`, kbs-types `Response`, guest-components
//! `kbs_protocol::keypair::TeeKeyPair::decrypt_response`): the RFC 7516 §7.2.2 *flattened JSON*
//! serialization, one recipient, no unprotected headers:
//!
//! ```json
//! {"protected": b64url(header JSON), "encrypted_key": b64url, "iv": b64url,
//!  "ciphertext": b64url, "tag": b64url}
//! ```
//!
//! every member base64url without padding. Header: `{"alg":"ECDH-ES+A256KW","enc":"A256GCM",
//! "epk":{"crv":"P-256","kty":"EC","x":…,"y":…}}` or `{"alg":"RSA-OAEP-256","enc":"A256GCM"}`
//! (Trustee serializes kbs-types' `ProtectedHeader`: `alg`, `enc`, then the other members in
//! sorted order). Content: AES-256-GCM, 96-bit IV, 128-bit tag, AAD = the ASCII of the
//! `protected` member as received (RFC 7516 §5.2 step 14). Trustee computes its AAD from the same
//! serialization it sends, so the two agree; guest-components re-serializes the parsed header
//! instead, which only differs for headers Trustee never produces.
//!
//! Key management:
//! - `ECDH-ES+A256KW` (RFC 7518 §4.6): Z = ECDH(TEE key, `epk`), KEK = Concat KDF (SHA-256,
//!   AlgorithmID = "ECDH-ES+A256KW", PartyUInfo = `apu`, PartyVInfo = `apv` — both empty in what
//!   Trustee sends — SuppPubInfo = 256), CEK = AES-KW-256 unwrap of `encrypted_key` (40 bytes);
//! - `RSA-OAEP-256`: CEK = RSAES-OAEP (SHA-256, MGF1-SHA-256) decryption of `encrypted_key`.
//!
//! Strict: any other `alg` (including Trustee's deprecated `RSA1_5`) or `enc`, a `crit` or `zip`
//! header, an `epk` not on P-256, unknown top-level members (`header`, `unprotected`,
//! `recipients`), padded or non-canonical base64url, an IV other than 12 bytes, a tag other than
//! 16 bytes, a CEK other than 32 bytes or a plaintext over [`MAX_PLAINTEXT`] are errors. An
//! optional `aad` member is authenticated as RFC 7516 §5.1 step 14 says
//! (`protected || '.' || aad`). Every cryptographic failure is one error,
//! [`JweError::Undecryptable`], so nothing tells a wrong key from a forged message.
//!
//! Why ours rather than a JOSE crate: the ones we know either link OpenSSL (josekit) or lack
//! `ECDH-ES+A256KW`, and none has the fail-closed rules above; the primitives are the RustCrypto
//! crates the agent links anyway (p256, aes-kw, aes-gcm, rsa). python-jwcrypto is the interop
//! oracle (tests/kbs_interop.rs, src/kbs/tests/jwe.rs).

use crate::tee_key::{
    self, ALG_ECDH_ES_A256KW, ALG_RSA_OAEP_256, CRV_P256, PeerPublicKey, TeeKeyError, TeeKeyPair,
};
use aes_gcm::aead::{self, AeadInOut, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use aes_kw::{KwAes128, KwAes256};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kbs_types::{ProtectedHeader, TeePubKey};
use rand_core::{OsRng, RngCore};
use rsa::Oaep;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// The `enc` this implementation speaks.
pub const ENC_A256GCM: &str = "A256GCM";
/// Largest resource accepted (and produced): 16 MiB.
pub const MAX_PLAINTEXT: usize = 16 << 20;
/// Largest `protected` member accepted (base64url characters).
pub const MAX_PROTECTED: usize = 16 << 10;
/// Largest response body accepted: the base64url of [`MAX_PLAINTEXT`] plus room for the rest.
pub const MAX_BODY: usize = MAX_PLAINTEXT.div_ceil(3) * 4 + (64 << 10);

const CEK_LEN: usize = 32;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// AES-KW of a 32-byte key: the key plus one 8-byte integrity block.
const WRAPPED_CEK_LEN: usize = CEK_LEN + 8;
/// Largest `apu` / `apv` accepted (decoded bytes).
const MAX_PARTY_INFO: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum JweError {
    #[error("{what} is {len} bytes, more than the limit of {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("the response is not a flattened JSON JWE ({0})")]
    NotJwe(String),
    #[error("JWE member {0:?} is not unpadded base64url")]
    Base64(&'static str),
    #[error("the JWE protected header is not a JSON object")]
    HeaderNotObject,
    #[error("JWE protected header: {0}")]
    BadHeader(String),
    #[error(
        "unsupported JWE key management algorithm {0:?} (expected {ALG_ECDH_ES_A256KW} or {ALG_RSA_OAEP_256})"
    )]
    UnsupportedAlg(String),
    #[error("unsupported JWE content encryption {0:?} (expected {ENC_A256GCM})")]
    UnsupportedEnc(String),
    #[error("JWE {what} is {len} bytes, expected {expected}")]
    BadLength {
        what: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("JWE ephemeral key: {0}")]
    BadEpk(String),
    #[error("TEE key")]
    Key(#[from] TeeKeyError),
    #[error("cannot decrypt the JWE: wrong key, or the message was altered")]
    Undecryptable,
    #[error("JWE encryption failed ({0})")]
    Encrypt(&'static str),
    #[error("no randomness from the OS ({0})")]
    Rng(String),
}

/// A JWE in the flattened JSON serialization, members still base64url-encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlattenedJwe {
    pub protected: String,
    pub encrypted_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aad: Option<String>,
    pub iv: String,
    pub ciphertext: String,
    pub tag: String,
    /// The shared unprotected header (RFC 7516 §7.2.1). Trustee sends none; other JOSE
    /// libraries (jwcrypto) put `epk` in the per-recipient `header`. Their members are not
    /// integrity protected, which is harmless for `epk`: a changed one only derives a KEK that
    /// cannot unwrap the CEK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unprotected: Option<serde_json::Map<String, Value>>,
    /// The per-recipient unprotected header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<serde_json::Map<String, Value>>,
}

impl FlattenedJwe {
    /// Parses a KBS resource response body (bounded by [`MAX_BODY`]).
    pub fn from_json(body: &[u8]) -> Result<FlattenedJwe, JweError> {
        if body.len() > MAX_BODY {
            return Err(JweError::TooLarge {
                what: "the JWE",
                len: body.len(),
                max: MAX_BODY,
            });
        }
        serde_json::from_slice(body).map_err(|e| JweError::NotJwe(e.to_string()))
    }

    /// The JSON body, as Trustee sends it.
    pub fn to_json(&self) -> String {
        // A struct of strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What the protected header says, checked.
#[derive(Debug)]
pub(crate) struct Header {
    pub alg: String,
    pub enc: String,
    pub epk: Option<p256::PublicKey>,
    pub apu: Vec<u8>,
    pub apv: Vec<u8>,
}

/// Decrypts a KBS resource response body with the TEE key. The plaintext is wiped on drop.
pub fn decrypt(key: &TeeKeyPair, body: &[u8]) -> Result<Zeroizing<Vec<u8>>, JweError> {
    decrypt_jwe(key, &FlattenedJwe::from_json(body)?)
}

/// [`decrypt`] of an already parsed JWE.
pub fn decrypt_jwe(key: &TeeKeyPair, jwe: &FlattenedJwe) -> Result<Zeroizing<Vec<u8>>, JweError> {
    let header = parse_headers(&jwe.protected, &[&jwe.unprotected, &jwe.header])?;
    if header.enc != ENC_A256GCM {
        return Err(JweError::UnsupportedEnc(header.enc));
    }
    let encrypted_key = b64(&jwe.encrypted_key, "encrypted_key")?;
    let cek = match header.alg.as_str() {
        ALG_ECDH_ES_A256KW => {
            let epk = header.epk.as_ref().ok_or_else(|| {
                JweError::BadHeader(format!("{ALG_ECDH_ES_A256KW} without \"epk\""))
            })?;
            check_len("encrypted_key", encrypted_key.len(), WRAPPED_CEK_LEN)?;
            let z = key.p256_shared_secret(epk)?;
            let kek = concat_kdf(
                z.as_slice(),
                ALG_ECDH_ES_A256KW.as_bytes(),
                &header.apu,
                &header.apv,
                256,
            );
            aes_kw_unwrap(&kek, &encrypted_key)?
        }
        ALG_RSA_OAEP_256 => match key.rsa_oaep256_decrypt(&encrypted_key) {
            Ok(cek) => cek,
            Err(TeeKeyError::RsaDecrypt) => return Err(JweError::Undecryptable),
            Err(e) => return Err(e.into()),
        },
        other => return Err(JweError::UnsupportedAlg(other.to_string())),
    };
    if cek.len() != CEK_LEN {
        // A well-formed wrapped key of the wrong size: treat like any other bad key.
        return Err(JweError::Undecryptable);
    }
    decrypt_content(jwe, &cek)
}

/// The content decryption shared by both key management algorithms (and the RFC vectors): checks
/// sizes, builds the AAD from the `protected` member as received, and opens AES-GCM.
pub(crate) fn decrypt_content(
    jwe: &FlattenedJwe,
    cek: &[u8],
) -> Result<Zeroizing<Vec<u8>>, JweError> {
    let iv = b64(&jwe.iv, "iv")?;
    let tag = b64(&jwe.tag, "tag")?;
    let max_b64 = MAX_PLAINTEXT.div_ceil(3) * 4;
    if jwe.ciphertext.len() > max_b64 {
        return Err(JweError::TooLarge {
            what: "the ciphertext (base64url)",
            len: jwe.ciphertext.len(),
            max: max_b64,
        });
    }
    let ciphertext = b64(&jwe.ciphertext, "ciphertext")?;
    let aad = aad(jwe)?;
    gcm_decrypt(cek, &iv, &aad, &ciphertext, &tag)
}

/// RFC 7516 §5.1 step 14: ASCII(BASE64URL(protected)), `.` and the `aad` member if there is one.
fn aad(jwe: &FlattenedJwe) -> Result<Vec<u8>, JweError> {
    let mut aad = jwe.protected.as_bytes().to_vec();
    if let Some(extra) = &jwe.aad {
        b64(extra, "aad")?;
        aad.push(b'.');
        aad.extend_from_slice(extra.as_bytes());
    }
    Ok(aad)
}

/// Decodes and checks the protected header.
#[cfg(test)]
pub(crate) fn parse_header(protected: &str) -> Result<Header, JweError> {
    parse_headers(protected, &[])
}

/// The protected header joined with the unprotected ones, whose member names must be disjoint
/// from it and from each other (RFC 7516 §7.2.1), then checked.
fn parse_headers(
    protected: &str,
    unprotected: &[&Option<serde_json::Map<String, Value>>],
) -> Result<Header, JweError> {
    if protected.len() > MAX_PROTECTED {
        return Err(JweError::TooLarge {
            what: "the protected header",
            len: protected.len(),
            max: MAX_PROTECTED,
        });
    }
    let raw = b64(protected, "protected")?;
    let value: Value =
        serde_json::from_slice(&raw).map_err(|e| JweError::BadHeader(format!("not JSON ({e})")))?;
    let Value::Object(mut map) = value else {
        return Err(JweError::HeaderNotObject);
    };
    for extra in unprotected.iter().copied().flatten() {
        if extra.len() > 64 {
            return Err(JweError::BadHeader(
                "an unprotected header is too large".into(),
            ));
        }
        for (name, value) in extra {
            if map.insert(name.clone(), value.clone()).is_some() {
                return Err(JweError::BadHeader(format!(
                    "{name:?} appears in more than one header"
                )));
            }
        }
    }
    if map.contains_key("crit") {
        return Err(JweError::BadHeader(
            "\"crit\" extensions are not supported".into(),
        ));
    }
    if map.contains_key("zip") {
        return Err(JweError::BadHeader(
            "compression (\"zip\") is not supported".into(),
        ));
    }
    let string = |name: &'static str| -> Result<Option<&str>, JweError> {
        match map.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(JweError::BadHeader(format!("{name:?} is not a string"))),
        }
    };
    let alg = string("alg")?
        .ok_or_else(|| JweError::BadHeader("no \"alg\"".into()))?
        .to_string();
    let enc = string("enc")?
        .ok_or_else(|| JweError::BadHeader("no \"enc\"".into()))?
        .to_string();
    let party = |name: &'static str| -> Result<Vec<u8>, JweError> {
        match string(name)? {
            None => Ok(Vec::new()),
            Some(s) => {
                let bytes = b64(s, name)?;
                if bytes.len() > MAX_PARTY_INFO {
                    return Err(JweError::TooLarge {
                        what: name,
                        len: bytes.len(),
                        max: MAX_PARTY_INFO,
                    });
                }
                Ok(bytes)
            }
        }
    };
    let apu = party("apu")?;
    let apv = party("apv")?;
    let epk = match map.get("epk") {
        None => None,
        Some(epk) => Some(parse_epk(epk)?),
    };
    Ok(Header {
        alg,
        enc,
        epk,
        apu,
        apv,
    })
}

/// `epk`: `{"kty":"EC","crv":"P-256","x":…,"y":…}`, a point on the curve. A private part (`d`)
/// is refused: the sender never has a reason to publish one.
fn parse_epk(epk: &Value) -> Result<p256::PublicKey, JweError> {
    let Value::Object(epk) = epk else {
        return Err(JweError::BadEpk("not a JSON object".into()));
    };
    let field = |name: &str| -> Result<&str, JweError> {
        epk.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| JweError::BadEpk(format!("no string {name:?}")))
    };
    if field("kty")? != "EC" {
        return Err(JweError::BadEpk(format!(
            "kty {:?} is not EC",
            field("kty")?
        )));
    }
    if field("crv")? != CRV_P256 {
        return Err(JweError::BadEpk(format!(
            "curve {:?} is not {CRV_P256}",
            field("crv")?
        )));
    }
    if epk.contains_key("d") {
        return Err(JweError::BadEpk("it carries a private key".into()));
    }
    tee_key::p256_public_from_coordinates(field("x")?, field("y")?)
        .map_err(|e| JweError::BadEpk(e.to_string()))
}

/// Encrypts `plaintext` to a `tee-pubkey` as Trustee's KBS does (the dev KBS's side): a fresh
/// CEK and IV, the header serialized as kbs-types' `ProtectedHeader` (so guest-components'
/// re-serialized AAD matches too), AES-256-GCM.
pub fn encrypt(recipient: &TeePubKey, plaintext: &[u8]) -> Result<FlattenedJwe, JweError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(JweError::TooLarge {
            what: "the resource",
            len: plaintext.len(),
            max: MAX_PLAINTEXT,
        });
    }
    let recipient = tee_key::parse_public_jwk(recipient)?;
    let mut cek = Zeroizing::new([0u8; CEK_LEN]);
    fill_random(cek.as_mut_slice())?;
    let mut iv = [0u8; IV_LEN];
    fill_random(&mut iv)?;

    let (header, encrypted_key) = match recipient {
        PeerPublicKey::P256(peer) => {
            let ephemeral = p256::ecdh::EphemeralSecret::random(&mut OsRng);
            let shared = ephemeral.diffie_hellman(&peer);
            let kek = concat_kdf(
                shared.raw_secret_bytes(),
                ALG_ECDH_ES_A256KW.as_bytes(),
                b"",
                b"",
                256,
            );
            let wrapped = aes_kw_wrap(&kek, cek.as_slice())?;
            let epk = ephemeral.public_key();
            let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&epk, false);
            let (Some(x), Some(y)) = (point.x(), point.y()) else {
                return Err(JweError::Encrypt("ephemeral key has no coordinates"));
            };
            let mut other = serde_json::Map::new();
            other.insert(
                "epk".into(),
                serde_json::json!({
                    "crv": CRV_P256,
                    "kty": "EC",
                    "x": URL_SAFE_NO_PAD.encode(x),
                    "y": URL_SAFE_NO_PAD.encode(y),
                }),
            );
            let header = ProtectedHeader {
                alg: ALG_ECDH_ES_A256KW.into(),
                enc: ENC_A256GCM.into(),
                other_fields: other,
            };
            (header, wrapped)
        }
        PeerPublicKey::Rsa(peer) => {
            let wrapped = peer
                .encrypt(&mut OsRng, Oaep::new::<Sha256>(), cek.as_slice())
                .map_err(|_| TeeKeyError::RsaEncrypt)?;
            let header = ProtectedHeader {
                alg: ALG_RSA_OAEP_256.into(),
                enc: ENC_A256GCM.into(),
                other_fields: serde_json::Map::new(),
            };
            (header, wrapped)
        }
    };
    let header_json =
        serde_json::to_string(&header).map_err(|_| JweError::Encrypt("header serialization"))?;
    let protected = URL_SAFE_NO_PAD.encode(header_json);
    let (ciphertext, tag) = gcm_encrypt(cek.as_slice(), &iv, protected.as_bytes(), plaintext)?;
    Ok(FlattenedJwe {
        protected,
        encrypted_key: URL_SAFE_NO_PAD.encode(encrypted_key),
        aad: None,
        iv: URL_SAFE_NO_PAD.encode(iv),
        ciphertext: URL_SAFE_NO_PAD.encode(ciphertext),
        tag: URL_SAFE_NO_PAD.encode(tag),
        unprotected: None,
        header: None,
    })
}

fn fill_random(buf: &mut [u8]) -> Result<(), JweError> {
    OsRng
        .try_fill_bytes(buf)
        .map_err(|e| JweError::Rng(e.to_string()))
}

fn b64(s: &str, what: &'static str) -> Result<Vec<u8>, JweError> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| JweError::Base64(what))
}

fn check_len(what: &'static str, len: usize, expected: usize) -> Result<(), JweError> {
    if len == expected {
        Ok(())
    } else {
        Err(JweError::BadLength {
            what,
            len,
            expected,
        })
    }
}

/// NIST SP 800-56A Concat KDF with SHA-256 as RFC 7518 §4.6.2 instantiates it:
/// `SHA-256(counter ‖ Z ‖ len‖AlgorithmID ‖ len‖PartyUInfo ‖ len‖PartyVInfo ‖ keydatalen)`
/// for counter = 1, 2, …, lengths as 32-bit big-endian, keydatalen in bits.
pub(crate) fn concat_kdf(
    z: &[u8],
    algorithm_id: &[u8],
    apu: &[u8],
    apv: &[u8],
    key_bits: u32,
) -> Zeroizing<Vec<u8>> {
    let key_len = (key_bits / 8) as usize;
    let mut out = Zeroizing::new(Vec::with_capacity(key_len + 32));
    let mut counter: u32 = 1;
    while out.len() < key_len {
        let mut h = Sha256::new();
        h.update(counter.to_be_bytes());
        h.update(z);
        for part in [algorithm_id, apu, apv] {
            h.update((part.len() as u32).to_be_bytes());
            h.update(part);
        }
        h.update(key_bits.to_be_bytes());
        let mut block = h.finalize();
        out.extend_from_slice(&block);
        block.as_mut_slice().zeroize();
        counter += 1;
    }
    out.truncate(key_len);
    out
}

/// RFC 3394 AES key unwrap with a 128- or 256-bit KEK. An integrity failure is
/// [`JweError::Undecryptable`].
pub(crate) fn aes_kw_unwrap(kek: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, JweError> {
    if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
        return Err(JweError::BadLength {
            what: "encrypted_key",
            len: wrapped.len(),
            expected: WRAPPED_CEK_LEN,
        });
    }
    let mut out = Zeroizing::new(vec![0u8; wrapped.len() - 8]);
    let ok = match kek.len() {
        16 => KwAes128::new_from_slice(kek)
            .map_err(|_| JweError::Undecryptable)?
            .unwrap_key(wrapped, &mut out)
            .is_ok(),
        32 => KwAes256::new_from_slice(kek)
            .map_err(|_| JweError::Undecryptable)?
            .unwrap_key(wrapped, &mut out)
            .is_ok(),
        _ => false,
    };
    if ok {
        Ok(out)
    } else {
        Err(JweError::Undecryptable)
    }
}

fn aes_kw_wrap(kek: &[u8], key: &[u8]) -> Result<Vec<u8>, JweError> {
    let mut out = vec![0u8; key.len() + 8];
    KwAes256::new_from_slice(kek)
        .map_err(|_| JweError::Encrypt("AES-KW key size"))?
        .wrap_key(key, &mut out)
        .map_err(|_| JweError::Encrypt("AES-KW"))?;
    Ok(out)
}

/// AES-GCM (128- or 256-bit key, 96-bit IV, 128-bit tag) decryption. A bad tag is
/// [`JweError::Undecryptable`]; the buffer is wiped on every path.
pub(crate) fn gcm_decrypt(
    cek: &[u8],
    iv: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> Result<Zeroizing<Vec<u8>>, JweError> {
    check_len("iv", iv.len(), IV_LEN)?;
    check_len("tag", tag.len(), TAG_LEN)?;
    if ciphertext.len() > MAX_PLAINTEXT {
        return Err(JweError::TooLarge {
            what: "the ciphertext",
            len: ciphertext.len(),
            max: MAX_PLAINTEXT,
        });
    }
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let ok = match cek.len() {
        16 => open::<Aes128Gcm>(cek, iv, aad, &mut buf, tag),
        32 => open::<Aes256Gcm>(cek, iv, aad, &mut buf, tag),
        _ => false,
    };
    if ok {
        Ok(buf)
    } else {
        Err(JweError::Undecryptable)
    }
}

fn open<C: KeyInit + AeadInOut>(
    key: &[u8],
    iv: &[u8],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8],
) -> bool {
    let (Ok(cipher), Ok(nonce), Ok(tag)) = (
        C::new_from_slice(key),
        aead::Nonce::<C>::try_from(iv),
        aead::Tag::<C>::try_from(tag),
    ) else {
        return false;
    };
    cipher
        .decrypt_inout_detached(&nonce, aad, buf.into(), &tag)
        .is_ok()
}

fn gcm_encrypt(
    cek: &[u8],
    iv: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), JweError> {
    let cipher =
        Aes256Gcm::new_from_slice(cek).map_err(|_| JweError::Encrypt("AES-GCM key size"))?;
    let nonce =
        aead::Nonce::<Aes256Gcm>::try_from(iv).map_err(|_| JweError::Encrypt("AES-GCM IV"))?;
    // Wiped if encryption fails with the plaintext still in it; taken out once it is ciphertext.
    let mut buf = Zeroizing::new(plaintext.to_vec());
    let tag = cipher
        .encrypt_inout_detached(&nonce, aad, buf.as_mut_slice().into())
        .map_err(|_| JweError::Encrypt("AES-GCM"))?;
    Ok((std::mem::take(&mut *buf), tag.to_vec()))
}

#[cfg(test)]
#[path = "tests/jwe.rs"]
mod tests;
