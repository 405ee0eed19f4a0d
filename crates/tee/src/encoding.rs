//! serde adapters for the byte encodings KBS evidence JSON uses (Trustee's `serde_with`
//! `Hex`, `Base64<UrlSafe>` and plain standard base64), so evidence structs hold decoded bytes
//! and a malformed encoding is a deserialization error.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

/// URL-safe alphabet; writes padding (as `serde_with`'s default `Padded` does) and accepts
/// input with or without it.
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `Vec<u8>` as a hex string (either case on input, lower case on output).
pub mod hex_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&cvm_text::hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        cvm_text::hex::decode(&s).ok_or_else(|| D::Error::custom("invalid hex string"))
    }
}

/// `Vec<[u8; 32]>` as a list of hex strings (SHA-256 PCR values).
pub mod hex_pcrs {
    use super::*;
    use serde::ser::SerializeSeq as _;

    pub fn serialize<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for p in v {
            seq.serialize_element(&cvm_text::hex::encode(p))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        let list = Vec::<String>::deserialize(d)?;
        list.iter()
            .map(|s| {
                cvm_text::hex::decode(s)
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| D::Error::custom("PCR value is not 32 bytes of hex"))
            })
            .collect()
    }
}

/// `Vec<u8>` as URL-safe base64.
pub mod b64url_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&URL_SAFE.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        URL_SAFE
            .decode(s.as_bytes())
            .map_err(|_| D::Error::custom("invalid URL-safe base64"))
    }
}

/// `Vec<u8>` as standard, padded base64.
pub mod b64_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(|_| D::Error::custom("invalid base64"))
    }
}

/// `Option<Vec<u8>>` as optional standard, padded base64 of bounded size: the building block of
/// the optional members that carry whole files (the `tpm` evidence's firmware log and AK
/// certificate). Each member names itself in the errors and picks its bound.
pub mod b64_bounded {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&STANDARD.encode(v)),
            None => s.serialize_none(),
        }
    }

    /// The member `name`, at most `max` bytes: refused before decoding when its text is
    /// longer than base64 of `max` bytes (4/3 of it, padded), which bounds the work, and after
    /// when the bytes are still over (the padded bound admits up to two more).
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
        name: &str,
        max: usize,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        if text.len() > max.div_ceil(3) * 4 {
            return Err(D::Error::custom(format!(
                "{name} is larger than {max} bytes"
            )));
        }
        let bytes = STANDARD
            .decode(text.as_bytes())
            .map_err(|_| D::Error::custom(format!("{name} is not standard base64")))?;
        if bytes.len() > max {
            return Err(D::Error::custom(format!(
                "{name} is larger than {max} bytes"
            )));
        }
        Ok(Some(bytes))
    }
}

/// Unpadded URL-safe base64 as JWK uses it (RFC 7518 §2 "Base64urlUInt").
pub(crate) fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE.decode(s.as_bytes()).ok()
}
