//! The LUKS2 JSON metadata as a typed schema. Structure is checked here (serde, unknown fields
//! refused); values (which algorithms, which sizes, where areas lie) are checked by
//! [`super::validate`], so an unsupported-but-well-formed header gets a clear error rather
//! than a serde message.
//!
//! Fields are exactly what cryptsetup 2.6 writes for a `luks2` keyslot, a `crypt` segment and a
//! `pbkdf2` digest, plus the optional ones it may add later to such a header and that we must
//! therefore read: keyslot `priority`, segment `flags` and `integrity` (only cryptsetup's
//! `hmac(sha256)` object passes the validator), config `flags` and `requirements`, and any `tokens` (ignored
//! beyond their shape: they only help cryptsetup find a passphrase).
//!
//! cryptsetup writes 64-bit numbers as decimal strings (JSON numbers lose precision past 2^53)
//! and binary values as padded standard base64.

use base64::Engine;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// An object keyed by LUKS2 ids ("0", "1", …): canonical decimal, no duplicates. json-c (and so
/// cryptsetup) keeps the last of duplicate keys; refusing them means no two readers can
/// disagree about which keyslot is meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap<T>(pub BTreeMap<u32, T>);

impl<T> Default for IdMap<T> {
    fn default() -> Self {
        IdMap(BTreeMap::new())
    }
}

/// "0" … "4294967295", no sign, no leading zeros.
pub fn parse_id(s: &str) -> Option<u32> {
    parse_u64(s).and_then(|v| u32::try_from(v).ok())
}

/// Canonical decimal u64.
pub fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for IdMap<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = IdMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object keyed by decimal ids")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<IdMap<T>, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(k) = m.next_key::<String>()? {
                    let id =
                        parse_id(&k).ok_or_else(|| de::Error::custom(format!("bad id {k:?}")))?;
                    let v = m.next_value()?;
                    if out.insert(id, v).is_some() {
                        return Err(de::Error::custom(format!("duplicate id {k:?}")));
                    }
                }
                Ok(IdMap(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

impl<T: Serialize> Serialize for IdMap<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k.to_string(), v)))
    }
}

/// A u64 written as a decimal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct U64Str(pub u64);

impl<'de> Deserialize<'de> for U64Str {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_u64(&s)
            .map(U64Str)
            .ok_or_else(|| de::Error::custom(format!("{s:?} is not a decimal u64")))
    }
}

impl Serialize for U64Str {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

/// An id written as a decimal string (in digest and token references).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdStr(pub u32);

impl<'de> Deserialize<'de> for IdStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_id(&s)
            .map(IdStr)
            .ok_or_else(|| de::Error::custom(format!("bad id {s:?}")))
    }
}

impl Serialize for IdStr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

/// Bytes as padded standard base64 (at most 1 KiB decoded: salts and digests are 32 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct B64(pub Vec<u8>);

impl fmt::Debug for B64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "B64({} bytes)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() > 1400 {
            return Err(de::Error::custom("base64 value too long"));
        }
        base64::engine::general_purpose::STANDARD
            .decode(&s)
            .map(B64)
            .map_err(|_| de::Error::custom("invalid base64"))
    }
}

impl Serialize for B64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub keyslots: IdMap<Keyslot>,
    /// Tokens are free-form per type; only their shape is checked by the validator.
    pub tokens: IdMap<serde_json::Value>,
    pub segments: IdMap<Segment>,
    pub digests: IdMap<DigestJson>,
    pub config: Config,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyslot {
    #[serde(rename = "type")]
    pub kind: String,
    pub key_size: u32,
    pub af: Af,
    pub area: Area,
    pub kdf: Kdf,
    /// 0 ignore, 1 normal, 2 high; absent means normal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Af {
    #[serde(rename = "type")]
    pub kind: String,
    pub stripes: u32,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Area {
    #[serde(rename = "type")]
    pub kind: String,
    pub offset: U64Str,
    pub size: U64Str,
    pub encryption: String,
    pub key_size: u32,
}

/// PBKDF2 has `hash`/`iterations`, Argon2 has `time`/`memory`/`cpus`; which set must be present
/// is the validator's business (one flat struct keeps serde's errors readable).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kdf {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    pub salt: B64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    #[serde(rename = "type")]
    pub kind: String,
    pub offset: U64Str,
    /// "dynamic" or a decimal byte count.
    pub size: String,
    pub iv_tweak: U64Str,
    pub encryption: String,
    pub sector_size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestJson {
    #[serde(rename = "type")]
    pub kind: String,
    pub keyslots: Vec<IdStr>,
    pub segments: Vec<IdStr>,
    pub hash: String,
    pub iterations: u32,
    pub salt: B64,
    pub digest: B64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub json_size: U64Str,
    pub keyslots_size: U64Str,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<Requirements>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mandatory: Option<Vec<String>>,
}
