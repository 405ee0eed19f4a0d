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

    pub(crate) fn u16_le(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32_le(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64_le(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_is_bounded() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16_le(), Some(0x0201));
        assert_eq!(r.u16_le(), None, "short read must not consume");
        assert_eq!(r.pos(), 2);
        assert_eq!(r.take(1), Some(&[3][..]));
        assert_eq!(r.take(1), None);
        assert_eq!(r.take(0), Some(&[][..]));
        assert_eq!(field::<4>(&[0; 3], 0), None);
        assert_eq!(field::<1>(&[0; 3], usize::MAX), None);
    }
}
