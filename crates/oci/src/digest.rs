//! OCI content digests (`<algorithm>:<encoded>`, image-spec `descriptor.md`). Only `sha256` is
//! accepted: it is what every registry and the config's `rootfs.diff_ids` use, and accepting
//! fewer algorithms means fewer ways for a hostile manifest to pick a weak one.

use sha2::{Digest as _, Sha256};
use std::io::{self, Read};

/// A parsed `sha256:<64 lower-case hex>` digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sha256Digest(pub [u8; 32]);

/// Why a digest string was refused. The string is printed with `{:?}` (it comes from a
/// hostile manifest or config).
#[derive(Debug, thiserror::Error)]
#[error("invalid digest {digest:?}: {reason}")]
pub struct DigestError {
    pub digest: String,
    pub reason: &'static str,
}

impl Sha256Digest {
    /// Strict: the algorithm must be exactly `sha256` and the hex exactly 64 lower-case
    /// digits (the spec's encoded form for sha256 is `[a-f0-9]{64}`).
    pub fn parse(text: &str) -> Result<Self, DigestError> {
        let err = |reason| DigestError {
            digest: text.chars().take(100).collect(),
            reason,
        };
        let (algorithm, encoded) = text.split_once(':').ok_or_else(|| err("no ':'"))?;
        if algorithm != "sha256" {
            return Err(err("algorithm is not sha256"));
        }
        if encoded.len() != 64 {
            return Err(err("sha256 hex is not 64 characters"));
        }
        if !encoded
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(err("sha256 hex is not lower-case hex"));
        }
        let bytes = cvm_text::hex::decode(encoded).ok_or_else(|| err("invalid hex"))?;
        let mut out = [0u8; 32];
        out.copy_from_slice(&bytes);
        Ok(Sha256Digest(out))
    }
}

impl std::fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", cvm_text::hex::encode(&self.0))
    }
}

/// A reader that hashes (and counts) every byte that passes through it, so a stream is
/// verified while it is consumed instead of being buffered first.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest of everything read so far, and the byte count.
    pub fn finish(self) -> (Sha256Digest, u64) {
        (Sha256Digest(self.hasher.finalize().into()), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let read = buf
            .get(..n)
            .ok_or_else(|| io::Error::other("reader overran its buffer"))?;
        self.hasher.update(read);
        self.count = self.count.saturating_add(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_displays() {
        let d = Sha256Digest::parse(EMPTY).unwrap();
        assert_eq!(d.to_string(), EMPTY);
        let mut r = HashingReader::new(&b""[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(r.finish(), (d, 0));
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "sha256",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
            "sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            " sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(Sha256Digest::parse(bad).is_err(), "{bad:?}");
        }
    }
}
