//! The ephemeral TEE key pair: made once per boot inside the TEE, its public half sent to the KBS
//! as `runtime-data.tee-pubkey` (bound into the evidence through the runtime-data hash), its
//! private half used to unwrap the content key of every resource the KBS returns.
//!
//! Forms, as guest-components' `kbs_protocol::keypair::TeeKeyPair::export_pubkey` produces them
//! and kbs-types' `TeePubKey` (`#[serde(tag = "kty")]`) serializes them:
//! - EC (default): `{"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW","x":b64url,"y":b64url}` with
//!   `x`/`y` the 32-byte big-endian affine coordinates, base64url without padding;
//! - RSA: `{"kty":"RSA","alg":"RSA-OAEP-256","n":b64url,"e":b64url}` with `n`/`e` the minimal
//!   big-endian bytes (e = 65537 → `"AQAB"`), base64url without padding; 2048-bit modulus.
//!
//! The private keys are `p256::SecretKey` and `rsa::RsaPrivateKey`, both `ZeroizeOnDrop` (checked
//! at compile time below); `Debug` shows only the algorithm and the public key.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kbs_types::TeePubKey;
use p256::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
use rand_core::{OsRng, RngCore};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Oaep, RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use std::fmt;
use std::str::FromStr;
use zeroize::Zeroizing;

/// JWA `alg` of the EC key: ECDH-ES key agreement, Concat KDF, AES-256 key wrap.
pub const ALG_ECDH_ES_A256KW: &str = "ECDH-ES+A256KW";
/// JWA `alg` of the RSA key: RSAES-OAEP with SHA-256 and MGF1-SHA-256.
pub const ALG_RSA_OAEP_256: &str = "RSA-OAEP-256";
/// JWK `crv` of the EC key.
pub const CRV_P256: &str = "P-256";
/// Modulus size of a generated RSA key.
pub const RSA_BITS: usize = 2048;
/// Accepted modulus sizes of an RSA public key received as a JWK (the dev KBS's side).
pub const RSA_BITS_RANGE: std::ops::RangeInclusive<usize> = 2048..=4096;

// The private keys are wiped when dropped.
const _: fn() = || {
    fn zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    zeroize_on_drop::<p256::SecretKey>();
    zeroize_on_drop::<RsaPrivateKey>();
};

#[derive(Debug, thiserror::Error)]
pub enum TeeKeyError {
    #[error("cannot generate the {0} TEE key ({1})")]
    Generate(&'static str, String),
    #[error("the TEE key is {have}, but this message is for {need}")]
    WrongKeyType {
        have: &'static str,
        need: &'static str,
    },
    #[error("invalid public key JWK: {0}")]
    BadJwk(String),
    #[error("unsupported public key: {0}")]
    Unsupported(String),
    #[error("invalid private key: {0}")]
    BadPrivateKey(&'static str),
    #[error("RSA-OAEP-256 decryption failed")]
    RsaDecrypt,
    #[error("RSA-OAEP-256 encryption failed")]
    RsaEncrypt,
}

/// Which TEE key to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TeeKeyAlgorithm {
    /// EC P-256 with ECDH-ES+A256KW (the default in guest-components and here).
    #[default]
    EcdhEsA256KwP256,
    /// RSA-2048 with RSA-OAEP-256.
    RsaOaep256,
}

impl TeeKeyAlgorithm {
    /// The JWA `alg` the public JWK carries (and the KBS's JWE uses).
    pub fn jwa(self) -> &'static str {
        match self {
            TeeKeyAlgorithm::EcdhEsA256KwP256 => ALG_ECDH_ES_A256KW,
            TeeKeyAlgorithm::RsaOaep256 => ALG_RSA_OAEP_256,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            TeeKeyAlgorithm::EcdhEsA256KwP256 => "EC P-256",
            TeeKeyAlgorithm::RsaOaep256 => "RSA",
        }
    }
}

impl FromStr for TeeKeyAlgorithm {
    type Err = TeeKeyError;

    /// The JWA names, plus guest-components' `TeeKeyAlgorithm` spelling `ECDH-ES+A256KW-P256`.
    fn from_str(s: &str) -> Result<Self, TeeKeyError> {
        match s {
            "ECDH-ES+A256KW" | "ECDH-ES+A256KW-P256" => Ok(TeeKeyAlgorithm::EcdhEsA256KwP256),
            "RSA-OAEP-256" => Ok(TeeKeyAlgorithm::RsaOaep256),
            other => Err(TeeKeyError::Unsupported(format!(
                "TEE key algorithm {other:?} (expected ECDH-ES+A256KW or RSA-OAEP-256)"
            ))),
        }
    }
}

impl fmt::Display for TeeKeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.jwa())
    }
}

enum Key {
    P256(p256::SecretKey),
    Rsa(Box<RsaPrivateKey>),
}

/// The TEE key pair. Not `Clone`: there is one per boot (share it by reference or `Arc`).
pub struct TeeKeyPair {
    key: Key,
}

impl fmt::Debug for TeeKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TeeKeyPair")
            .field("algorithm", &self.algorithm())
            .field("public", &self.public_jwk())
            .finish_non_exhaustive()
    }
}

impl TeeKeyPair {
    /// A fresh key pair from the OS RNG (`getrandom`). The EC key reports an RNG failure as an
    /// error; RSA key generation draws through `rand_core`'s infallible interface, which would
    /// panic instead (getrandom(2) blocks until the pool is ready and does not fail after that).
    pub fn generate(alg: TeeKeyAlgorithm) -> Result<TeeKeyPair, TeeKeyError> {
        let key = match alg {
            TeeKeyAlgorithm::EcdhEsA256KwP256 => Key::P256(random_p256_scalar()?),
            TeeKeyAlgorithm::RsaOaep256 => Key::Rsa(Box::new(
                RsaPrivateKey::new(&mut OsRng, RSA_BITS)
                    .map_err(|e| TeeKeyError::Generate(alg.kind(), e.to_string()))?,
            )),
        };
        Ok(TeeKeyPair { key })
    }

    /// A P-256 key from its 32-byte scalar (tests and the dev KBS's own fixtures).
    pub fn from_p256_scalar(d: &[u8]) -> Result<TeeKeyPair, TeeKeyError> {
        if d.len() != 32 {
            return Err(TeeKeyError::BadPrivateKey("a P-256 scalar is 32 bytes"));
        }
        let secret = p256::SecretKey::from_slice(d)
            .map_err(|_| TeeKeyError::BadPrivateKey("not a P-256 scalar in [1, n)"))?;
        Ok(TeeKeyPair {
            key: Key::P256(secret),
        })
    }

    /// An existing RSA private key (tests). The modulus must be 2048–4096 bits.
    pub fn from_rsa(key: RsaPrivateKey) -> Result<TeeKeyPair, TeeKeyError> {
        if !RSA_BITS_RANGE.contains(&key.n().bits()) {
            return Err(TeeKeyError::BadPrivateKey(
                "RSA modulus must be 2048-4096 bits",
            ));
        }
        Ok(TeeKeyPair {
            key: Key::Rsa(Box::new(key)),
        })
    }

    pub fn algorithm(&self) -> TeeKeyAlgorithm {
        match self.key {
            Key::P256(_) => TeeKeyAlgorithm::EcdhEsA256KwP256,
            Key::Rsa(_) => TeeKeyAlgorithm::RsaOaep256,
        }
    }

    /// The public key as the protocol's `tee-pubkey` JWK.
    pub fn public_jwk(&self) -> TeePubKey {
        match &self.key {
            Key::P256(secret) => {
                let point = secret.public_key().to_encoded_point(false);
                // An uncompressed point of a valid public key always has both coordinates.
                let x = point.x().map(|x| URL_SAFE_NO_PAD.encode(x));
                let y = point.y().map(|y| URL_SAFE_NO_PAD.encode(y));
                TeePubKey::EC {
                    crv: CRV_P256.to_string(),
                    alg: ALG_ECDH_ES_A256KW.to_string(),
                    x: x.unwrap_or_default(),
                    y: y.unwrap_or_default(),
                }
            }
            Key::Rsa(key) => TeePubKey::RSA {
                alg: ALG_RSA_OAEP_256.to_string(),
                k_mod: URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
                k_exp: URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
            },
        }
    }

    /// ECDH with the sender's ephemeral key: the shared secret Z (the x-coordinate).
    pub(crate) fn p256_shared_secret(
        &self,
        peer: &p256::PublicKey,
    ) -> Result<Zeroizing<[u8; 32]>, TeeKeyError> {
        let Key::P256(secret) = &self.key else {
            return Err(TeeKeyError::WrongKeyType {
                have: self.algorithm().kind(),
                need: "EC P-256",
            });
        };
        let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
        let mut z = Zeroizing::new([0u8; 32]);
        z.copy_from_slice(shared.raw_secret_bytes());
        Ok(z)
    }

    /// RSAES-OAEP-SHA-256 decryption of a wrapped content key (blinded).
    pub(crate) fn rsa_oaep256_decrypt(
        &self,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TeeKeyError> {
        let Key::Rsa(key) = &self.key else {
            return Err(TeeKeyError::WrongKeyType {
                have: self.algorithm().kind(),
                need: "RSA",
            });
        };
        key.decrypt_blinded(&mut OsRng, Oaep::new::<Sha256>(), ciphertext)
            .map(Zeroizing::new)
            .map_err(|_| TeeKeyError::RsaDecrypt)
    }
}

/// A uniformly random P-256 secret key: 32 random bytes, redrawn in the (2^-32) case they are
/// not a scalar in [1, n).
fn random_p256_scalar() -> Result<p256::SecretKey, TeeKeyError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    for _ in 0..16 {
        OsRng
            .try_fill_bytes(bytes.as_mut_slice())
            .map_err(|e| TeeKeyError::Generate("EC P-256", e.to_string()))?;
        if let Ok(secret) = p256::SecretKey::from_slice(bytes.as_slice()) {
            return Ok(secret);
        }
    }
    Err(TeeKeyError::Generate(
        "EC P-256",
        "the RNG keeps returning invalid scalars".into(),
    ))
}

/// A recipient's public key, validated (the dev KBS's side of [`TeeKeyPair::public_jwk`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerPublicKey {
    P256(p256::PublicKey),
    Rsa(RsaPublicKey),
}

/// Checks and decodes a `tee-pubkey` JWK: `alg` must match the key type (ECDH-ES+A256KW on P-256,
/// or RSA-OAEP-256 with a 2048–4096-bit modulus), coordinates must be 32 bytes and on the curve.
pub fn parse_public_jwk(jwk: &TeePubKey) -> Result<PeerPublicKey, TeeKeyError> {
    match jwk {
        TeePubKey::EC { crv, alg, x, y } => {
            if crv != CRV_P256 {
                return Err(TeeKeyError::Unsupported(format!("EC curve {crv:?}")));
            }
            if alg != ALG_ECDH_ES_A256KW {
                return Err(TeeKeyError::Unsupported(format!(
                    "EC key algorithm {alg:?}"
                )));
            }
            p256_public_from_coordinates(x, y).map(PeerPublicKey::P256)
        }
        TeePubKey::RSA { alg, k_mod, k_exp } => {
            if alg != ALG_RSA_OAEP_256 {
                return Err(TeeKeyError::Unsupported(format!(
                    "RSA key algorithm {alg:?}"
                )));
            }
            let n = decode_b64url(k_mod, "n", 4096 / 8 + 1)?;
            let e = decode_b64url(k_exp, "e", 8)?;
            let n = BigUint::from_bytes_be(&n);
            if !RSA_BITS_RANGE.contains(&n.bits()) {
                return Err(TeeKeyError::BadJwk(format!(
                    "RSA modulus of {} bits (must be 2048-4096)",
                    n.bits()
                )));
            }
            RsaPublicKey::new(n, BigUint::from_bytes_be(&e))
                .map(PeerPublicKey::Rsa)
                .map_err(|e| TeeKeyError::BadJwk(format!("RSA public key: {e}")))
        }
        TeePubKey::AKP { alg, .. } => Err(TeeKeyError::Unsupported(format!(
            "AKP key algorithm {alg:?}"
        ))),
    }
}

/// A P-256 public key from base64url `x` and `y`: 32 bytes each, a point on the curve.
pub(crate) fn p256_public_from_coordinates(
    x: &str,
    y: &str,
) -> Result<p256::PublicKey, TeeKeyError> {
    let x = decode_b64url(x, "x", 32)?;
    let y = decode_b64url(y, "y", 32)?;
    let (Ok(x), Ok(y)) = (
        <[u8; 32]>::try_from(x.as_slice()),
        <[u8; 32]>::try_from(y.as_slice()),
    ) else {
        return Err(TeeKeyError::BadJwk(
            "P-256 coordinates must be 32 bytes each".into(),
        ));
    };
    let point = p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
    Option::from(p256::PublicKey::from_encoded_point(&point))
        .ok_or_else(|| TeeKeyError::BadJwk("the point is not on P-256".into()))
}

fn decode_b64url(s: &str, what: &str, max_bytes: usize) -> Result<Vec<u8>, TeeKeyError> {
    if s.len() > max_bytes.div_ceil(3) * 4 {
        return Err(TeeKeyError::BadJwk(format!("{what} is too long")));
    }
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| TeeKeyError::BadJwk(format!("{what} is not unpadded base64url")))
}

#[cfg(test)]
#[path = "tests/tee_key.rs"]
pub(crate) mod tests;
