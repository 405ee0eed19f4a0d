//! The hash algorithms of the TPM 2.0 PCR banks, with their TPM algorithm
//! identifiers (TCG Algorithm Registry: TPM_ALG_SHA1 0x0004, TPM_ALG_SHA256 0x000B,
//! TPM_ALG_SHA384 0x000C, TPM_ALG_SHA512 0x000D) and the PCR extend operation
//! (TPM 2.0 Part 1, 17.6.2: `PCR_new = H(PCR_old ‖ digest)`).

use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// A digest algorithm of a PCR bank (and of Authenticode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    /// Every algorithm, in the order of their TPM identifiers.
    pub const ALL: [HashAlg; 4] = [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ];

    /// The TPM_ALG_ID.
    pub fn tpm_alg_id(self) -> u16 {
        match self {
            HashAlg::Sha1 => 0x0004,
            HashAlg::Sha256 => 0x000B,
            HashAlg::Sha384 => 0x000C,
            HashAlg::Sha512 => 0x000D,
        }
    }

    /// The algorithm with this TPM_ALG_ID, if it is one of ours.
    pub fn from_tpm_alg_id(id: u16) -> Option<HashAlg> {
        HashAlg::ALL.into_iter().find(|a| a.tpm_alg_id() == id)
    }

    /// The bank's name as Linux (`/sys/class/tpm/tpm0/pcr-<name>`), tpm2-tools and
    /// systemd-measure (`--bank=`) spell it.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
        }
    }

    /// The algorithm named `name` (case-insensitive), as [`HashAlg::name`] spells it.
    pub fn from_name(name: &str) -> Option<HashAlg> {
        HashAlg::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// The digest size in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let mut h = Hasher::new(self);
        h.update(data);
        h.finish()
    }

    /// `H(pcr ‖ digest)`: one PCR extend.
    pub fn extend(self, pcr: &[u8], digest: &[u8]) -> Vec<u8> {
        let mut h = Hasher::new(self);
        h.update(pcr);
        h.update(digest);
        h.finish()
    }
}

impl std::fmt::Display for HashAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An incremental hash of one of the [`HashAlg`]s (Authenticode hashes a PE image piecewise).
#[derive(Clone)]
pub struct Hasher(Inner);

#[derive(Clone)]
enum Inner {
    Sha1(Sha1),
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(alg: HashAlg) -> Hasher {
        Hasher(match alg {
            HashAlg::Sha1 => Inner::Sha1(Sha1::new()),
            HashAlg::Sha256 => Inner::Sha256(Sha256::new()),
            HashAlg::Sha384 => Inner::Sha384(Sha384::new()),
            HashAlg::Sha512 => Inner::Sha512(Sha512::new()),
        })
    }

    pub fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            Inner::Sha1(h) => h.update(data),
            Inner::Sha256(h) => h.update(data),
            Inner::Sha384(h) => h.update(data),
            Inner::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self.0 {
            Inner::Sha1(h) => h.finalize().to_vec(),
            Inner::Sha256(h) => h.finalize().to_vec(),
            Inner::Sha384(h) => h.finalize().to_vec(),
            Inner::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_round_trip() {
        for a in HashAlg::ALL {
            assert_eq!(HashAlg::from_tpm_alg_id(a.tpm_alg_id()), Some(a));
            assert_eq!(HashAlg::from_name(a.name()), Some(a));
            assert_eq!(a.digest(b"").len(), a.digest_len());
        }
        assert_eq!(HashAlg::from_tpm_alg_id(0x0012), None);
    }

    #[test]
    fn sha256_of_abc() {
        // FIPS 180-2, appendix B.1.
        assert_eq!(
            hex(&HashAlg::Sha256.digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
