//! A pass-through reader that follows the tar layout to bound extension headers.
//!
//! The `tar` crate reads the body of a GNU long name/link (`L`/`K`) or PAX (`x`/`g`) header
//! into memory whole, with no limit, before it yields the entry. A layer could therefore
//! declare a multi-gigabyte "long name" (cheap behind gzip or zstd) and exhaust the agent's
//! memory before any of our checks runs. This reader sees the same bytes as the tar crate,
//! finds each 512-byte header the way the crate does (following PAX `size` overrides) and
//! fails the read when an extension header is larger than [`MAX_EXTENSION`].
//!
//! It only refuses; it never changes the bytes. When the layout becomes something it does not
//! follow (GNU sparse entries, an unparsable header) it stops checking: the tar crate refuses
//! those itself, and the unpacker refuses sparse entries.

use std::io::{self, Read};

/// Largest GNU long name/link or PAX header body. Names are bounded by `Limits::max_path`
/// anyway; PAX records of real layers (path, linkpath, xattrs) are far smaller.
pub const MAX_EXTENSION: u64 = 1 << 20;

const BLOCK: u64 = 512;

pub struct TarGuard<R> {
    inner: R,
    /// Stream offset of the next byte `inner` yields.
    pos: u64,
    /// Offset of the next header; `None` once checking stopped.
    next_header: Option<u64>,
    header: Vec<u8>,
    /// The body of the current PAX header, captured to find its `size` record.
    pax: Option<(Vec<u8>, u64)>,
    /// A PAX `size` for the next entry that is not itself an extension header.
    pending_size: Option<u64>,
}

impl<R: Read> TarGuard<R> {
    pub fn new(inner: R) -> Self {
        TarGuard {
            inner,
            pos: 0,
            next_header: Some(0),
            header: Vec::with_capacity(BLOCK as usize),
            pax: None,
            pending_size: None,
        }
    }

    fn observe(&mut self, data: &[u8]) -> io::Result<()> {
        let mut i = 0usize;
        while i < data.len() {
            let Some(header_at) = self.next_header else {
                return Ok(());
            };
            let abs = self.pos + i as u64;
            let rest = &data[i..];
            if abs < header_at {
                // Entry data: skip to the next header, capturing a PAX body on the way.
                let skip = usize::try_from(header_at - abs)
                    .unwrap_or(usize::MAX)
                    .min(rest.len());
                if let Some((body, end)) = &mut self.pax {
                    let want = usize::try_from(end.saturating_sub(abs)).unwrap_or(usize::MAX);
                    body.extend_from_slice(&rest[..want.min(skip)]);
                }
                i += skip;
                continue;
            }
            let take = (BLOCK as usize - self.header.len()).min(rest.len());
            self.header.extend_from_slice(&rest[..take]);
            i += take;
            if self.header.len() == BLOCK as usize {
                self.on_header(header_at)?;
                self.header.clear();
            }
        }
        Ok(())
    }

    fn on_header(&mut self, header_at: u64) -> io::Result<()> {
        if let Some((body, _)) = self.pax.take() {
            self.pending_size = pax_size(&body);
        }
        if self.header.iter().all(|&b| b == 0) {
            // The tar crate ends the archive at the first zero block.
            self.next_header = None;
            return Ok(());
        }
        let kind = self.header[156];
        let Some(size) = parse_number(&self.header[124..136]) else {
            self.next_header = None;
            return Ok(());
        };
        let extension = matches!(kind, b'x' | b'g' | b'L' | b'K');
        if extension && size > MAX_EXTENSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "tar extension header of {size} bytes (type {:?}) is over {MAX_EXTENSION} bytes",
                    char::from(kind)
                ),
            ));
        }
        if kind == b'S' {
            // GNU sparse: its layout has extension blocks we do not follow.
            self.next_header = None;
            return Ok(());
        }
        let size = if extension {
            size
        } else {
            self.pending_size.take().unwrap_or(size)
        };
        let data_at = header_at + BLOCK;
        if kind == b'x' {
            self.pax = Some((Vec::new(), data_at.saturating_add(size)));
        }
        self.next_header = size
            .checked_add(BLOCK - 1)
            .map(|s| s & !(BLOCK - 1))
            .and_then(|s| data_at.checked_add(s));
        Ok(())
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let data = buf
            .get(..n)
            .ok_or_else(|| io::Error::other("reader overran its buffer"))?;
        self.observe(data)?;
        self.pos = self.pos.saturating_add(n as u64);
        Ok(n)
    }
}

/// A tar numeric field: octal (NUL/space padded) or GNU base-256 (top bit set).
fn parse_number(field: &[u8]) -> Option<u64> {
    let (&first, rest) = field.split_first()?;
    if first & 0x80 != 0 {
        let mut value: u64 = u64::from(first & 0x7f);
        for &b in rest {
            value = value.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(value);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&text).ok()?, 8).ok()
}

/// The `size` record of a PAX body (`<len> <key>=<value>\n` records), if any; the last one
/// wins, as in the tar crate.
fn pax_size(mut body: &[u8]) -> Option<u64> {
    let mut size = None;
    while !body.is_empty() {
        let space = body.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&body[..space]).ok()?.parse().ok()?;
        let record = body.get(space + 1..len)?;
        let record = record.strip_suffix(b"\n")?;
        if let Some(value) = record.strip_prefix(b"size=") {
            size = std::str::from_utf8(value).ok()?.parse().ok();
        }
        body = body.get(len..)?;
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_number(b"00000001750\0"), Some(0o1750));
        assert_eq!(parse_number(b"     1750 \0\0"), Some(0o1750));
        assert_eq!(parse_number(b"\0\0\0\0\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(
            parse_number(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
            Some(1 << 32)
        );
        assert_eq!(parse_number(b"9"), None);
    }

    #[test]
    fn pax_records() {
        assert_eq!(pax_size(b"12 size=100\n"), Some(100));
        assert_eq!(pax_size(b"13 path=abcd\n12 size=100\n"), Some(100));
        assert_eq!(pax_size(b"13 path=abcd\n"), None);
        assert_eq!(pax_size(b"99 size=100\n"), None);
    }

    fn header(kind: u8, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_path("x").unwrap();
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_size(size);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn run(stream: &[u8], chunk: usize) -> io::Result<()> {
        let mut guard = TarGuard::new(stream);
        let mut buf = vec![0u8; chunk];
        while guard.read(&mut buf)? > 0 {}
        Ok(())
    }

    #[test]
    fn refuses_huge_extension_in_any_chunking() {
        // A regular file whose data looks like a huge long-name header, then a real one.
        let mut stream = header(b'0', 512);
        stream.extend(header(b'L', 1 << 30));
        stream.extend(header(b'L', 1 << 30));
        for chunk in [1, 7, 512, 4096] {
            let err = run(&stream, chunk).unwrap_err();
            assert!(err.to_string().contains("extension header"), "{err}");
        }
        // Only the fake one (inside file data) is followed by a normal end: accepted.
        let mut stream = header(b'0', 512);
        stream.extend(header(b'L', 1 << 30));
        stream.extend([0u8; 1024]);
        for chunk in [1, 7, 512, 4096] {
            run(&stream, chunk).unwrap();
        }
    }

    #[test]
    fn follows_pax_size_overrides() {
        // The PAX size (1024) overrides the header's 0: the fake long-name header at offset
        // 512 of the data must not be read as a header.
        let body = b"13 size=1024\n";
        let mut stream = header(b'x', body.len() as u64);
        let mut block = body.to_vec();
        block.resize(512, 0);
        stream.extend(block);
        stream.extend(header(b'0', 0));
        stream.extend([0u8; 512]);
        stream.extend(header(b'L', 1 << 30));
        stream.extend([0u8; 1024]);
        for chunk in [1, 100, 512, 8192] {
            run(&stream, chunk).unwrap();
        }
        // Without the override the fake header is reached.
        let mut stream = header(b'0', 0);
        stream.extend(header(b'L', 1 << 30));
        assert!(run(&stream, 512).is_err());
    }
}
