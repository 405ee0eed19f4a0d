//! Bounded little-endian reading of hostile byte strings, shared by the binary evidence parsers.
//!
//! Every read checks the remaining length first and returns `None` when it is short, so a parser
//! turns truncation into its own error instead of panicking on a slice index.

/// A cursor over a byte slice. Reads never go past the end; offsets are kept for error messages.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Offset of the next byte to read, from the start of the slice given to [`Reader::new`].
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The bytes not read yet, without consuming them.
    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.remaining() {
            return None;
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Some(out)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Some(out)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    pub(crate) fn u16_le(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32_le(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64_le(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }

    /// Big-endian reads, for the TPM structures (TPMS_ATTEST, TPMT_SIGNATURE).
    pub(crate) fn u16_be(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32_be(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64_be(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array()?))
    }
}

/// A fixed-size field copied out of a slice whose length the caller has already checked.
///
/// Used by the fixed-layout parsers (SNP report, TD report) after one up-front length check;
/// returns `None` rather than panicking if an offset table is ever wrong.
pub(crate) fn field<const N: usize>(buf: &[u8], offset: usize) -> Option<[u8; N]> {
    let end = offset.checked_add(N)?;
    let mut out = [0u8; N];
    out.copy_from_slice(buf.get(offset..end)?);
    Some(out)
}

pub(crate) fn le_u32(buf: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(field(buf, offset)?))
}

pub(crate) fn le_u64(buf: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_le_bytes(field(buf, offset)?))
}

/// Lower-case hex, for messages and the JSON encodings that use it.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// Strict hex decoding (even length, `0-9a-fA-F` only); `None` on anything else.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_is_bounded() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16_le(), Some(0x0201));
        assert_eq!(r.u16_le(), None, "short read must not consume");
        assert_eq!(r.pos(), 2);
        assert_eq!(r.u8(), Some(3));
        assert_eq!(r.take(1), None);
        assert_eq!(r.take(0), Some(&[][..]));
        assert_eq!(field::<4>(&[0; 3], 0), None);
        assert_eq!(field::<1>(&[0; 3], usize::MAX), None);
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(&[0x00, 0xab, 0x0f]), "00ab0f");
        assert_eq!(unhex("00AB0f"), Some(vec![0x00, 0xab, 0x0f]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("é0"), None);
    }
}
