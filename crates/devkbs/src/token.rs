//! The attestation token: a JWT (RFC 7519) signed ES256 (ECDSA P-256 SHA-256, RFC 7518 §3.4:
//! the signature is r ‖ s, 64 bytes) with the KBS's token key, generated per run or loaded from
//! a PKCS#8 PEM. The guest presents it back as `Authorization: Bearer <JWT>`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::DecodePrivateKey as _;
use serde_json::{Map, Value, json};

/// How long a token (and a session) is valid.
pub const TOKEN_LIFETIME_SECS: u64 = 300;
/// Largest token accepted.
const MAX_TOKEN: usize = 64 << 10;
const HEADER: &str = r#"{"alg":"ES256","typ":"JWT"}"#;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot generate the token key ({0})")]
    Generate(String),
    #[error("the token key PEM is not a PKCS#8 or SEC1 P-256 private key")]
    BadKey,
    #[error("the token is malformed ({0})")]
    Malformed(&'static str),
    #[error("the token is not signed ES256")]
    Algorithm,
    #[error("the token signature does not verify with this KBS's key")]
    Signature,
    #[error("the token expired")]
    Expired,
}

pub struct TokenKey {
    key: SigningKey,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(P-256)")
    }
}

impl TokenKey {
    pub fn generate() -> Result<TokenKey, TokenError> {
        // Scalars out of range are astronomically rare; retry rather than fail.
        for _ in 0..8 {
            let mut d = zeroize::Zeroizing::new([0u8; 32]);
            getrandom::fill(d.as_mut_slice()).map_err(|e| TokenError::Generate(e.to_string()))?;
            if let Ok(key) = SigningKey::from_slice(d.as_slice()) {
                return Ok(TokenKey { key });
            }
        }
        Err(TokenError::Generate("no valid scalar".into()))
    }

    /// A `-----BEGIN PRIVATE KEY-----` (PKCS#8) or `-----BEGIN EC PRIVATE KEY-----` (SEC1) PEM.
    pub fn from_pem(pem: &str) -> Result<TokenKey, TokenError> {
        let (label, der) = pem_block(pem).ok_or(TokenError::BadKey)?;
        let key = match label.as_str() {
            "PRIVATE KEY" => SigningKey::from_pkcs8_der(&der).map_err(|_| TokenError::BadKey)?,
            "EC PRIVATE KEY" => p256::SecretKey::from_sec1_der(&der)
                .map(SigningKey::from)
                .map_err(|_| TokenError::BadKey)?,
            _ => return Err(TokenError::BadKey),
        };
        Ok(TokenKey { key })
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        self.key.verifying_key()
    }

    /// Signs `claims` plus `iss`, `iat` and `exp` (`now` + [`TOKEN_LIFETIME_SECS`]).
    pub fn sign(&self, mut claims: Map<String, Value>, now: u64) -> String {
        claims.insert("iss".into(), json!(super::ISSUER));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + TOKEN_LIFETIME_SECS));
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
        );
        let sig: Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    /// Checks the header (ES256 only: no `none`, no HMAC confusion), the signature and `exp`,
    /// and returns the claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Map<String, Value>, TokenError> {
        if token.len() > MAX_TOKEN {
            return Err(TokenError::Malformed("too long"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not three dot-separated parts"));
        };
        let header: Value = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed("header"))?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return Err(TokenError::Algorithm);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or(TokenError::Signature)?;
        let input_len = h.len() + 1 + c.len();
        self.verifying_key()
            .verify(&token.as_bytes()[..input_len], &sig)
            .map_err(|_| TokenError::Signature)?;
        let claims: Map<String, Value> = URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed("claims"))?;
        match claims.get("exp").and_then(Value::as_u64) {
            Some(exp) if exp > now => Ok(claims),
            Some(_) => Err(TokenError::Expired),
            None => Err(TokenError::Malformed("no exp")),
        }
    }
}

/// The label and DER bytes of the first PEM block of `text`.
pub(crate) fn pem_block(text: &str) -> Option<(String, Vec<u8>)> {
    let begin = text.find("-----BEGIN ")?;
    let rest = &text[begin + 11..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_string();
    let body_start = label_end + 5;
    let end_marker = format!("-----END {label}-----");
    let body_end = rest.find(&end_marker)?;
    let body: String = rest
        .get(body_start..body_end)?
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD.decode(body).ok().map(|der| (label, der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let key = TokenKey::generate().unwrap();
        let mut claims = Map::new();
        claims.insert("tee".into(), json!("tpm"));
        let t = key.sign(claims, 1000);
        let header = URL_SAFE_NO_PAD
            .decode(t.split('.').next().unwrap())
            .unwrap();
        assert_eq!(header, HEADER.as_bytes());
        let c = key.verify(&t, 1000).unwrap();
        assert_eq!(c["tee"], "tpm");
        assert_eq!(c["iat"], 1000);
        assert_eq!(c["exp"], 1300);
        assert_eq!(c["iss"], super::super::ISSUER);
        assert!(matches!(key.verify(&t, 1300), Err(TokenError::Expired)));
        // Another KBS's key.
        let other = TokenKey::generate().unwrap();
        assert!(matches!(other.verify(&t, 1000), Err(TokenError::Signature)));
        // Changed claims.
        let parts: Vec<&str> = t.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD.encode(r#"{"tee":"tpm","exp":99999}"#);
        let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
        assert!(matches!(
            key.verify(&forged, 1000),
            Err(TokenError::Signature)
        ));
        // alg none.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            parts[1]
        );
        assert!(matches!(
            key.verify(&none, 1000),
            Err(TokenError::Algorithm)
        ));
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert!(key.verify(bad, 1000).is_err(), "{bad}");
        }
    }

    #[test]
    fn loads_pkcs8_pem() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key = TokenKey::from_pem(&kp.serialize_pem()).unwrap();
        let t = key.sign(Map::new(), 5);
        assert!(key.verify(&t, 6).is_ok());
        assert!(
            TokenKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
        assert!(TokenKey::from_pem("nothing").is_err());
    }
}
