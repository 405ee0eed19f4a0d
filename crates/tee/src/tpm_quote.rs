//! A TPM2_Quote in the shapes KBS evidence carries it (`tpm`, `az-snp-vtpm`, `az-tdx-vtpm`):
//! the raw RSASSA signature, the TPMS_ATTEST message, and the SHA-256 PCR values 0..n as a
//! list indexed by PCR number; plus Azure's legacy bincode `quote.bin`.
//!
//! Parsing TPMS_ATTEST and TPMT_SIGNATURE and checking the signature and the PCR digest is
//! [`cvm_tpm::verify`]'s, the same code the guest side and the dev KBS use; this module
//! only maps these encodings onto it.

use cvm_tpm::verify::{self, AkPublic, Attest, QuoteError};

use super::bytes::Reader;

/// The most PCR values a quote can cover (4-byte selections, [`verify::MAX_SELECT`]).
const MAX_PCRS: u64 = verify::MAX_SELECT as u64 * 8;

/// Why a bincode `quote.bin` was rejected.
#[derive(Debug, thiserror::Error)]
pub enum BincodeError {
    #[error("bincode quote is truncated at offset {0}")]
    Truncated(usize),
    #[error("{0} bytes after the bincode quote")]
    Trailing(usize),
    #[error("bincode quote has {0} PCR values, at most {MAX_PCRS}")]
    TooManyPcrs(u64),
}

/// A quote in the shape KBS evidence carries it: raw RSASSA signature, TPMS_ATTEST message,
/// and the SHA-256 PCR values 0..n.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub signature: Vec<u8>,
    pub message: Vec<u8>,
    pub pcrs: Vec<[u8; 32]>,
}

impl Quote {
    /// The PCR list as `(index, value)` pairs.
    pub fn pcr_values(&self) -> Vec<(u32, Vec<u8>)> {
        (0u32..).zip(self.pcrs.iter().map(|p| p.to_vec())).collect()
    }

    /// Signature with `ak`, then the message, then the PCR list against its digest: the quote
    /// must select exactly PCRs 0..n of the SHA-256 bank, n the length of the list, so no value
    /// in the list goes unchecked. Returns the parsed message; its `extra_data` is the nonce the
    /// caller must compare.
    pub fn verify(&self, ak: &AkPublic<'_>) -> Result<Attest, QuoteError> {
        verify::verify_signature(ak, &self.message, &self.signature)?;
        let attest = verify::parse_attest(&self.message).map_err(QuoteError::Attest)?;
        attest.check_pcrs(&self.pcr_values())?;
        Ok(attest)
    }

    /// The legacy (v0) Azure encoding: `bincode` of `{signature: Vec<u8>, message: Vec<u8>,
    /// pcrs: Vec<[u8; 32]>}`, i.e. u64-LE length ‖ bytes, u64-LE length ‖ bytes,
    /// u64-LE count ‖ 32-byte values (the `quote.bin` fixture).
    pub fn from_bincode(b: &[u8]) -> Result<Self, BincodeError> {
        const MAX: u64 = 64 * 1024;
        let mut r = Reader::new(b);
        let t = |r: &Reader<'_>| BincodeError::Truncated(r.pos());
        let vec = |r: &mut Reader<'_>| -> Result<Vec<u8>, BincodeError> {
            let n = r.u64_le().ok_or_else(|| t(r))?;
            if n > MAX {
                return Err(t(r));
            }
            Ok(r.take(n as usize).ok_or_else(|| t(r))?.to_vec())
        };
        let signature = vec(&mut r)?;
        let message = vec(&mut r)?;
        let n = r.u64_le().ok_or_else(|| t(&r))?;
        if n > MAX_PCRS {
            return Err(BincodeError::TooManyPcrs(n));
        }
        let mut pcrs = Vec::with_capacity(n as usize);
        for _ in 0..n {
            pcrs.push(r.array().ok_or_else(|| t(&r))?);
        }
        if r.remaining() != 0 {
            return Err(BincodeError::Trailing(r.remaining()));
        }
        Ok(Self {
            signature,
            message,
            pcrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bincode(signature: &[u8], message: &[u8], pcrs: u64) -> Vec<u8> {
        let mut b = (signature.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(signature);
        b.extend_from_slice(&(message.len() as u64).to_le_bytes());
        b.extend_from_slice(message);
        b.extend_from_slice(&pcrs.to_le_bytes());
        for i in 0..pcrs {
            b.extend_from_slice(&[i as u8; 32]);
        }
        b
    }

    #[test]
    fn bincode_layout_and_limits() {
        let q = Quote::from_bincode(&bincode(&[1, 2], &[3], 2)).unwrap();
        assert_eq!(q.signature, vec![1, 2]);
        assert_eq!(q.message, vec![3]);
        assert_eq!(q.pcrs, vec![[0; 32], [1; 32]]);
        assert_eq!(q.pcr_values(), vec![(0, vec![0; 32]), (1, vec![1; 32])]);

        let mut b = bincode(&[1], &[2], 1);
        b.push(0);
        assert!(matches!(
            Quote::from_bincode(&b),
            Err(BincodeError::Trailing(1))
        ));
        assert!(matches!(
            Quote::from_bincode(&b[..b.len() - 2]),
            Err(BincodeError::Truncated(_))
        ));
        assert!(matches!(
            Quote::from_bincode(&bincode(&[], &[], 33)),
            Err(BincodeError::TooManyPcrs(33))
        ));
        assert!(matches!(
            Quote::from_bincode(&u64::MAX.to_le_bytes()),
            Err(BincodeError::Truncated(8))
        ));
    }
}
