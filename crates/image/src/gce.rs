//! The archive Compute Engine imports an image from: a gzip'd tar whose only member is the raw
//! disk, named exactly `disk.raw`, in the old GNU tar format with the disk stored sparse — what
//! `tar --format=oldgnu -Sczf image.tar.gz disk.raw` writes, the command GCE's import
//! documentation gives.
//!
//! Sparse, because a grown disk is mostly zeros (a 1 GiB `disk.raw` for 70 MiB of partitions):
//! the member holds only the data regions, listed in the header's sparse map, and gzip never
//! sees the rest. Regions are found from the content, in [`SPARSE_UNIT`] steps (a unit with any
//! non-zero byte is data), not from the file system's holes, so the archive does not depend on
//! where the disk was built.
//!
//! The old GNU sparse member (GNU tar manual, "Old GNU Format"; `tar.h`'s `oldgnu_header`):
//! typeflag `S`; `size` = the bytes stored; `realsize` = the disk's size; up to 4 (offset,
//! numbytes) pairs in the header, `isextended` set when 512-byte extension blocks of 21 pairs
//! each follow (each with its own `isextended`); then the regions' bytes back to back, padded
//! to 512. A disk that ends in a hole gets a last pair (size, 0), as GNU tar writes it.
//!
//! The map pass asks the caller where data may start next (`SEEK_DATA` on the file), so the
//! file system's holes — zeros by definition — are not read; units are still judged by their
//! bytes and stay aligned to [`SPARSE_UNIT`] from the disk's start, so the map is the same as a
//! full read's.
//!
//! Written streaming in [`CHUNK`]-sized reads (one pass for the map, one for the data), so
//! memory stays bounded by the map, and reproducibly: mode 0644, uid/gid 0, no user or group
//! name, mtime 0; the gzip header has mtime 0, no file name and the "unknown" OS byte. The
//! archive ends with the format's two zero blocks and is padded to GNU tar's 10240-byte record.

use flate2::{Compression, GzBuilder};
use std::io::{self, Write};

/// The member name GCE requires.
pub const MEMBER: &str = "disk.raw";
/// GNU tar's default record: 20 blocks of 512 bytes.
pub const RECORD: u64 = 10240;
/// The granularity of the sparse map.
pub const SPARSE_UNIT: u64 = 64 << 10;
/// Reads of the disk go in chunks of this size (a multiple of [`SPARSE_UNIT`]).
pub const CHUNK: usize = 1 << 20;

const BLOCK: u64 = 512;
/// Sparse pairs in the member's header and in each extension block.
const HEADER_PAIRS: usize = 4;
const EXT_PAIRS: usize = 21;

/// A region of the disk stored in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub offset: u64,
    pub len: u64,
}

/// A 12-byte numeric field as GNU tar writes it: 11 octal digits and a NUL, or, from 8 GiB on,
/// base-256 (0x80, then the value big-endian).
fn num12(v: u64) -> [u8; 12] {
    let mut f = [0u8; 12];
    if v < 1 << 33 {
        let s = format!("{v:011o}");
        f[..11].copy_from_slice(s.as_bytes());
    } else {
        f[0] = 0x80;
        f[4..].copy_from_slice(&v.to_be_bytes());
    }
    f
}

fn pair(r: &Region) -> [u8; 24] {
    let mut p = [0u8; 24];
    p[..12].copy_from_slice(&num12(r.offset));
    p[12..].copy_from_slice(&num12(r.len));
    p
}

/// The data regions of the first `size` bytes behind `read_at`, in [`SPARSE_UNIT`] steps,
/// adjacent ones merged; a trailing hole ends the map with (size, 0). `next_data(offset)` is
/// where bytes other than zeros may next be at or after `offset` (`size` or more: none);
/// `|offset| Ok(offset)` reads everything.
pub fn sparse_map(
    mut read_at: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
    mut next_data: impl FnMut(u64) -> io::Result<u64>,
    size: u64,
) -> io::Result<Vec<Region>> {
    let mut map: Vec<Region> = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < size {
        // Back to the unit boundary: the units are those of a full read.
        let data = next_data(offset)?.max(offset);
        offset = data - data % SPARSE_UNIT;
        if offset >= size {
            break;
        }
        let n = usize::try_from(size - offset).unwrap_or(CHUNK).min(CHUNK);
        read_at(offset, &mut buf[..n])?;
        for (i, unit) in buf[..n].chunks(SPARSE_UNIT as usize).enumerate() {
            if unit.iter().all(|&b| b == 0) {
                continue;
            }
            let at = offset + i as u64 * SPARSE_UNIT;
            match map.last_mut() {
                Some(last) if last.offset + last.len == at => last.len += unit.len() as u64,
                _ => map.push(Region {
                    offset: at,
                    len: unit.len() as u64,
                }),
            }
        }
        offset += n as u64;
    }
    if map.last().is_none_or(|r| r.offset + r.len < size) {
        map.push(Region {
            offset: size,
            len: 0,
        });
    }
    Ok(map)
}

/// The member's header and extension blocks for a disk of `size` bytes with this map.
pub fn headers(size: u64, map: &[Region]) -> io::Result<Vec<u8>> {
    let stored: u64 = map.iter().map(|r| r.len).sum();
    let mut h = tar::Header::new_gnu();
    h.set_path(MEMBER)?;
    h.set_size(stored);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::GNUSparse);
    let (first, rest) = map.split_at(map.len().min(HEADER_PAIRS));
    {
        let b = h.as_mut_bytes();
        for (i, r) in first.iter().enumerate() {
            b[386 + 24 * i..386 + 24 * (i + 1)].copy_from_slice(&pair(r));
        }
        b[482] = u8::from(!rest.is_empty());
        b[483..495].copy_from_slice(&num12(size));
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    let mut chunks = rest.chunks(EXT_PAIRS).peekable();
    while let Some(chunk) = chunks.next() {
        let mut ext = [0u8; BLOCK as usize];
        for (i, r) in chunk.iter().enumerate() {
            ext[24 * i..24 * (i + 1)].copy_from_slice(&pair(r));
        }
        ext[504] = u8::from(chunks.peek().is_some());
        out.extend_from_slice(&ext);
    }
    Ok(out)
}

/// Writes the tar.gz of the first `size` bytes behind `read_at` (which must fill its whole
/// buffer, as `FileExt::read_exact_at` does) to `out`, skipping what `next_data` says is a hole
/// (see [`sparse_map`]); returns `out` after the gzip trailer.
pub fn write_tar_gz<W: Write>(
    mut read_at: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
    next_data: impl FnMut(u64) -> io::Result<u64>,
    size: u64,
    out: W,
) -> io::Result<W> {
    let map = sparse_map(&mut read_at, next_data, size)?;
    let head = headers(size, &map)?;
    let mut gz = GzBuilder::new().write(out, Compression::default());
    gz.write_all(&head)?;
    let mut buf = vec![0u8; CHUNK];
    let mut stored = 0u64;
    for r in &map {
        let mut done = 0u64;
        while done < r.len {
            let n = usize::try_from(r.len - done).unwrap_or(CHUNK).min(CHUNK);
            read_at(r.offset + done, &mut buf[..n])?;
            gz.write_all(&buf[..n])?;
            done += n as u64;
        }
        stored += r.len;
    }
    let written = head.len() as u64 + stored;
    let member_end = head.len() as u64 + stored.next_multiple_of(BLOCK);
    let archive_end = (member_end + 2 * BLOCK).next_multiple_of(RECORD);
    let mut zeros = archive_end - written;
    buf.fill(0);
    while zeros > 0 {
        let n = zeros.min(CHUNK as u64) as usize;
        gz.write_all(&buf[..n])?;
        zeros -= n as u64;
    }
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read;

    fn reader(disk: &[u8]) -> impl FnMut(u64, &mut [u8]) -> io::Result<()> + '_ {
        |off, buf| {
            let off = off as usize;
            let src = disk
                .get(off..off + buf.len())
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(src);
            Ok(())
        }
    }

    /// Reads everything: no holes known.
    fn all(offset: u64) -> io::Result<u64> {
        Ok(offset)
    }

    /// What `SEEK_DATA` says for `d`: the next non-zero byte, anywhere within a unit.
    fn seek_data(d: &[u8]) -> impl FnMut(u64) -> io::Result<u64> + '_ {
        |offset| {
            Ok(d.iter()
                .skip(offset as usize)
                .position(|&b| b != 0)
                .map_or(d.len() as u64, |p| offset + p as u64))
        }
    }

    fn unpack(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    /// A disk with data at the start, in the middle and (optionally) at the end.
    fn disk(units: u64, data_at: &[u64]) -> Vec<u8> {
        let mut d = vec![0u8; (units * SPARSE_UNIT) as usize];
        for &u in data_at {
            let at = (u * SPARSE_UNIT) as usize;
            d[at + 7] = u as u8 + 1;
        }
        d
    }

    #[test]
    fn the_map_lists_data_units_merged() {
        let d = disk(40, &[0, 1, 5, 39]);
        let map = sparse_map(reader(&d), all, d.len() as u64).unwrap();
        let u = SPARSE_UNIT;
        assert_eq!(
            map,
            [
                Region {
                    offset: 0,
                    len: 2 * u
                },
                Region {
                    offset: 5 * u,
                    len: u
                },
                Region {
                    offset: 39 * u,
                    len: u
                },
            ]
        );
        // A trailing hole ends the map with (size, 0); a short last unit counts as data.
        let d = disk(40, &[3]);
        let map = sparse_map(reader(&d), all, d.len() as u64).unwrap();
        assert_eq!(
            map.last(),
            Some(&Region {
                offset: 40 * u,
                len: 0
            })
        );
        let mut d = disk(2, &[]);
        d.extend_from_slice(&[9; 100]);
        let map = sparse_map(reader(&d), all, d.len() as u64).unwrap();
        assert_eq!(
            map,
            [Region {
                offset: 2 * u,
                len: 100
            }]
        );
        // Told where the data is, the map is the same.
        for d in [disk(40, &[0, 1, 5, 39]), disk(40, &[3]), d] {
            assert_eq!(
                sparse_map(reader(&d), seek_data(&d), d.len() as u64).unwrap(),
                sparse_map(reader(&d), all, d.len() as u64).unwrap()
            );
        }
    }

    #[test]
    fn one_sparse_gnu_member_named_disk_raw_that_tar_reads_back() {
        // 46 regions: 4 in the header, 21 in each of two extension blocks.
        let data: Vec<u64> = (0..46).map(|i| i * 2).collect();
        let d = disk(91, &data);
        assert_eq!(
            sparse_map(reader(&d), all, d.len() as u64).unwrap().len(),
            46
        );
        let gz = write_tar_gz(reader(&d), all, d.len() as u64, Vec::new()).unwrap();
        // gzip: magic, deflate, no flags, mtime 0, OS unknown.
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        let tar = unpack(&gz);
        assert_eq!(tar.len() as u64 % RECORD, 0);
        assert_eq!(&tar[257..265], b"ustar  \0");
        assert_eq!(&tar[..9], b"disk.raw\0");
        assert_eq!(tar[156], b'S');
        assert_eq!(tar[482], 1);
        assert_eq!(tar[512 + 504], 1);
        assert_eq!(tar[1024 + 504], 0);
        // Then the 46 stored units, back to back.
        assert_eq!(tar[1536 + 7], 1);
        assert_eq!(tar[1536 + SPARSE_UNIT as usize + 7], 3);
        // The tar crate's reader (GNU sparse support) gives the disk back.
        let mut archive = tar::Archive::new(&tar[..]);
        let mut entries = archive.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str(), Some(MEMBER));
        assert_eq!(e.header().mtime().unwrap(), 0);
        assert_eq!(e.header().uid().unwrap(), 0);
        assert_eq!(e.size(), d.len() as u64);
        let mut back = Vec::new();
        e.read_to_end(&mut back).unwrap();
        assert!(back == d);
        drop(e);
        assert!(entries.next().is_none());
        // Reproducible, and skipping the holes changes nothing.
        assert_eq!(
            write_tar_gz(reader(&d), all, d.len() as u64, Vec::new()).unwrap(),
            gz
        );
        assert_eq!(
            write_tar_gz(reader(&d), seek_data(&d), d.len() as u64, Vec::new()).unwrap(),
            gz
        );
    }

    #[test]
    fn a_short_disk_is_an_error() {
        let d = [1u8; 100];
        assert!(write_tar_gz(reader(&d), all, 1000, Vec::new()).is_err());
    }

    #[test]
    fn sizes_past_the_octal_field_use_base_256() {
        assert_eq!(&num12(0o777), b"00000000777\0");
        assert_eq!(&num12((1 << 33) - 1), b"77777777777\0");
        let big = num12(20 << 30);
        assert_eq!(big[0], 0x80);
        assert_eq!(u64::from_be_bytes(big[4..].try_into().unwrap()), 20 << 30);
        let h = headers(
            20 << 30,
            &[Region {
                offset: 0,
                len: 4096,
            }],
        )
        .unwrap();
        assert_eq!(&h[483..495], &big);
    }
}
