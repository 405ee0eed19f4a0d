//! The archive Compute Engine imports an image from: a gzip'd tar whose only member is the raw
//! disk, named exactly `disk.raw`, in the GNU (oldgnu) tar format (what `tar --format=oldgnu`
//! writes and GCE's import documentation asks for).
//!
//! Written streaming in fixed-size chunks, so memory stays bounded whatever the disk's size, and
//! reproducibly: the tar header has mode 0644, uid/gid 0, no user or group name, mtime 0; the
//! gzip header has mtime 0, no file name and the "unknown" OS byte. The archive ends with the two
//! zero blocks of the format and is padded to GNU tar's 10240-byte record. The member is not
//! stored sparse (GNU sparse headers are optional for GCE); gzip turns the zeros of a padded
//! disk into a few KiB per MiB.

use flate2::{Compression, GzBuilder};
use std::io::{self, Read, Write};

/// The member name GCE requires.
pub const MEMBER: &str = "disk.raw";
/// GNU tar's default record: 20 blocks of 512 bytes.
pub const RECORD: u64 = 10240;

const BLOCK: u64 = 512;
const CHUNK: usize = 1 << 20;

/// The tar header of `disk.raw` with `size` bytes.
pub fn header(size: u64) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_gnu();
    h.set_path(MEMBER)?;
    // GNU base-256 beyond the octal field's 8 GiB, as GNU tar writes it.
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// Writes the tar.gz of exactly `size` bytes from `disk` to `out`; returns `out` after the
/// gzip trailer. A `disk` that ends early is an error (`UnexpectedEof`), never a short member.
pub fn write_tar_gz<W: Write>(disk: impl Read, size: u64, out: W) -> io::Result<W> {
    let mut gz = GzBuilder::new().write(out, Compression::default());
    gz.write_all(header(size)?.as_bytes())?;
    let mut disk = disk.take(size);
    let mut buf = vec![0u8; CHUNK];
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        let n = disk.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the disk ended {left} bytes before its {size} bytes"),
            ));
        }
        gz.write_all(&buf[..n])?;
        left -= n as u64;
    }
    let member_end = BLOCK + size.next_multiple_of(BLOCK);
    let archive_end = (member_end + 2 * BLOCK).next_multiple_of(RECORD);
    let mut zeros = archive_end - BLOCK - size;
    buf[..CHUNK.min(RECORD as usize * 2)].fill(0);
    while zeros > 0 {
        let n = zeros.min(RECORD * 2) as usize;
        gz.write_all(&buf[..n])?;
        zeros -= n as u64;
    }
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;

    fn unpack(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn one_gnu_member_named_disk_raw_padded_to_a_record() {
        let disk: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let gz = write_tar_gz(&disk[..], disk.len() as u64, Vec::new()).unwrap();
        // gzip: magic, deflate, no flags, mtime 0, OS unknown.
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        let tar = unpack(&gz);
        assert_eq!(tar.len() as u64 % RECORD, 0);
        // GNU magic "ustar  \0" (oldgnu and gnu share it), the name, a regular file.
        assert_eq!(&tar[257..265], b"ustar  \0");
        assert_eq!(&tar[..9], b"disk.raw\0");
        assert_eq!(tar[156], b'0');
        assert_eq!(&tar[512..512 + disk.len()], &disk[..]);
        assert!(tar[512 + disk.len()..].iter().all(|&b| b == 0));
        let mut archive = tar::Archive::new(&tar[..]);
        let mut entries = archive.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str(), Some(MEMBER));
        assert_eq!(e.header().mtime().unwrap(), 0);
        assert_eq!(e.header().uid().unwrap(), 0);
        let mut back = Vec::new();
        e.read_to_end(&mut back).unwrap();
        assert_eq!(back, disk);
        drop(e);
        assert!(entries.next().is_none());
        // Reproducible.
        assert_eq!(
            write_tar_gz(&disk[..], disk.len() as u64, Vec::new()).unwrap(),
            gz
        );
    }

    #[test]
    fn a_short_disk_is_an_error() {
        let err = write_tar_gz(&[1u8; 100][..], 1000, Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn sizes_past_the_octal_field_use_base_256() {
        let h = header(20 << 30).unwrap();
        assert_eq!(h.size().unwrap(), 20 << 30);
        assert_eq!(h.as_bytes()[124] & 0x80, 0x80);
    }
}
