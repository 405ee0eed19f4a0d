//! The newc ("070701") cpio format the kernel unpacks as an initramfs, written reproducibly.
#![forbid(unsafe_code)]

/// What one archive member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// One archive member. `path` is relative (no leading `/`, no `.`/`..` components);
/// `mode` holds only the permission bits (0o7777), the type comes from `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub mode: u32,
    pub kind: EntryKind,
}

use std::collections::HashSet;
use std::io::Write;

/// The kernel's PATH_MAX. Its unpacker silently skips any member whose name (with the NUL)
/// or symlink target is longer than this, so such a member must never be written.
const PATH_MAX: usize = 4096;
/// Longest path or symlink target we accept: PATH_MAX with room for the terminating NUL.
pub const MAX_PATH_LEN: usize = PATH_MAX - 1;
/// The newc size field is 8 hex digits.
pub const MAX_FILE_SIZE: u64 = u32::MAX as u64;
/// dev_t as the kernel builds it from rdevmajor/rdevminor (MKDEV): larger values would be
/// silently truncated into a different device.
const MAX_DEV_MAJOR: u32 = (1 << 12) - 1;
const MAX_DEV_MINOR: u32 = (1 << 20) - 1;

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Everything that can go wrong writing or reading a newc archive. Paths are printed with
/// `{:?}` so that names from a hostile archive cannot put control characters on a console.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("cpio entry {path:?}: invalid path: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("cpio entry {path:?}: mode {mode:#o} has bits outside 0o7777")]
    InvalidMode { path: String, mode: u32 },
    #[error("cpio entry {path:?} appears more than once")]
    Duplicate { path: String },
    #[error("cpio entry {path:?}: parent {parent:?} is not a directory entry before it")]
    MissingParent { path: String, parent: String },
    #[error("cpio entry {path:?}: {size} bytes exceeds the newc limit of 4 GiB - 1")]
    FileTooLarge { path: String, size: u64 },
    #[error("cpio entry {path:?}: invalid symlink target: {reason}")]
    InvalidSymlink { path: String, reason: &'static str },
    #[error(
        "cpio entry {path:?}: device {major}:{minor} does not fit dev_t (12-bit major, 20-bit minor)"
    )]
    InvalidDevice {
        path: String,
        major: u32,
        minor: u32,
    },
    #[error("cpio entry {path:?}: unsupported file type (mode {mode:#o})")]
    UnsupportedType { path: String, mode: u32 },
    #[error("too many cpio entries ({count}) for 32-bit inode numbers")]
    TooManyEntries { count: usize },
    #[error("cpio archive truncated at byte {offset}: expected {what}")]
    Truncated { offset: usize, what: &'static str },
    #[error("malformed cpio archive at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: &'static str },
    #[error("cannot write cpio archive")]
    Io(#[from] std::io::Error),
}

fn validate_path(path: &str) -> Result<(), CpioError> {
    let reason = if path.is_empty() {
        "empty"
    } else if path.len() > MAX_PATH_LEN {
        "longer than 4095 bytes (the kernel skips names over PATH_MAX)"
    } else if path.contains('\0') {
        "contains NUL"
    } else if path.starts_with('/') {
        "absolute"
    } else if path.split('/').any(|c| c.is_empty()) {
        "empty component (`//` or trailing `/`)"
    } else if path.split('/').any(|c| c == "." || c == "..") {
        "`.` or `..` component"
    } else if path == TRAILER {
        // cpio(1) stops reading at a member of this name.
        "reserved name TRAILER!!!"
    } else {
        return Ok(());
    };
    Err(CpioError::InvalidPath {
        path: path.to_owned(),
        reason,
    })
}

fn check_file_size(path: &str, size: u64) -> Result<(), CpioError> {
    if size > MAX_FILE_SIZE {
        return Err(CpioError::FileTooLarge {
            path: path.to_owned(),
            size,
        });
    }
    Ok(())
}

fn validate_entry(e: &Entry) -> Result<(), CpioError> {
    validate_path(&e.path)?;
    if e.mode & !0o7777 != 0 {
        return Err(CpioError::InvalidMode {
            path: e.path.clone(),
            mode: e.mode,
        });
    }
    match &e.kind {
        EntryKind::Dir => {}
        EntryKind::File(data) => check_file_size(&e.path, data.len() as u64)?,
        EntryKind::Symlink(target) => {
            let reason = if target.is_empty() {
                "empty"
            } else if target.len() > MAX_PATH_LEN {
                "longer than 4095 bytes (the kernel skips targets over PATH_MAX)"
            } else if target.contains('\0') {
                "contains NUL"
            } else {
                return Ok(());
            };
            return Err(CpioError::InvalidSymlink {
                path: e.path.clone(),
                reason,
            });
        }
        EntryKind::CharDev { major, minor } => {
            if *major > MAX_DEV_MAJOR || *minor > MAX_DEV_MINOR {
                return Err(CpioError::InvalidDevice {
                    path: e.path.clone(),
                    major: *major,
                    minor: *minor,
                });
            }
        }
    }
    Ok(())
}

/// Enforces, in archive order, what the kernel's unpacker needs to recreate every member:
/// it creates nothing implicitly, so a member whose parent directory has not been unpacked
/// yet is silently dropped; and a repeated name silently replaces the earlier member.
#[derive(Default)]
struct OrderCheck<'a> {
    seen: HashSet<&'a str>,
    dirs: HashSet<&'a str>,
}

impl<'a> OrderCheck<'a> {
    fn check(&mut self, e: &'a Entry) -> Result<(), CpioError> {
        validate_entry(e)?;
        if !self.seen.insert(&e.path) {
            return Err(CpioError::Duplicate {
                path: e.path.clone(),
            });
        }
        if let Some((parent, _)) = e.path.rsplit_once('/')
            && !self.dirs.contains(parent)
        {
            return Err(CpioError::MissingParent {
                path: e.path.clone(),
                parent: parent.to_owned(),
            });
        }
        if e.kind == EntryKind::Dir {
            self.dirs.insert(&e.path);
        }
        Ok(())
    }
}

fn pad4(len: u64) -> usize {
    ((4 - len % 4) % 4) as usize
}

struct Counted<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Counted<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

struct Header<'a> {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdev_major: u32,
    rdev_minor: u32,
    name: &'a str,
}

fn put_member<W: Write>(w: &mut Counted<W>, h: &Header<'_>, data: &[u8]) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let namesize = h.name.len() as u32 + 1;
    let fields = [
        h.ino,
        h.mode,
        0, // uid
        0, // gid
        h.nlink,
        h.mtime,
        h.filesize,
        0, // devmajor
        0, // devminor
        h.rdev_major,
        h.rdev_minor,
        namesize,
        0, // check: only meaningful in the 070702 variant
    ];
    let mut header = String::with_capacity(HEADER_LEN);
    header.push_str("070701");
    for f in fields {
        // Writing to a String cannot fail.
        let _ = write!(header, "{f:08X}");
    }
    w.put(header.as_bytes())?;
    w.put(h.name.as_bytes())?;
    w.put(&[0])?;
    w.put(&[0; 3][..pad4(HEADER_LEN as u64 + u64::from(namesize))])?;
    w.put(data)?;
    w.put(&[0; 3][..pad4(data.len() as u64)])?;
    Ok(())
}

/// Writes `entries` as a newc archive the kernel unpacks into its rootfs, and returns the
/// number of bytes written.
///
/// The output depends only on the set of entries and `mtime`: members are sorted by path
/// (byte order, which also puts every directory before its contents), owned by 0:0, with
/// inode numbers 1.. in output order. Nothing is written unless every entry is valid.
pub fn write_newc<W: Write>(entries: &[Entry], mtime: u32, out: W) -> Result<u64, CpioError> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    if u32::try_from(sorted.len()).is_err() {
        return Err(CpioError::TooManyEntries {
            count: sorted.len(),
        });
    }
    let mut check = OrderCheck::default();
    for e in &sorted {
        check.check(e)?;
    }

    let mut w = Counted {
        inner: out,
        written: 0,
    };
    for (i, e) in sorted.iter().enumerate() {
        let (kind_bits, nlink, data, rdev_major, rdev_minor): (u32, u32, &[u8], u32, u32) =
            match &e.kind {
                EntryKind::Dir => (S_IFDIR, 2, &[], 0, 0),
                EntryKind::File(data) => (S_IFREG, 1, data, 0, 0),
                // The target is the member's data, without a NUL, as the kernel expects.
                EntryKind::Symlink(target) => (S_IFLNK, 1, target.as_bytes(), 0, 0),
                EntryKind::CharDev { major, minor } => (S_IFCHR, 1, &[], *major, *minor),
            };
        let header = Header {
            // Both conversions were checked above (entry count, file size).
            ino: i as u32 + 1,
            mode: kind_bits | e.mode,
            nlink,
            mtime,
            filesize: data.len() as u32,
            rdev_major,
            rdev_minor,
            name: &e.path,
        };
        put_member(&mut w, &header, data)?;
    }
    let trailer = Header {
        ino: 0,
        mode: 0,
        nlink: 1,
        mtime: 0,
        filesize: 0,
        rdev_major: 0,
        rdev_minor: 0,
        name: TRAILER,
    };
    put_member(&mut w, &trailer, &[])?;
    w.inner.flush()?;
    Ok(w.written)
}

/// A bounds-checked cursor over untrusted archive bytes.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], CpioError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.data.len())
            .ok_or(CpioError::Truncated {
                offset: self.pos,
                what,
            })?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn skip_padding(&mut self, len: usize) -> Result<(), CpioError> {
        let offset = self.pos;
        if self.take(len, "padding")?.iter().any(|&b| b != 0) {
            return Err(CpioError::Malformed {
                offset,
                reason: "non-zero padding",
            });
        }
        Ok(())
    }
}

fn parse_hex8(field: &[u8], offset: usize) -> Result<u32, CpioError> {
    let mut value: u32 = 0;
    for &b in field {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => {
                return Err(CpioError::Malformed {
                    offset,
                    reason: "header field is not 8 hex digits",
                });
            }
        };
        // Eight digits always fit in 32 bits.
        value = (value << 4) | u32::from(digit);
    }
    Ok(value)
}

/// Parses a newc archive as `write_newc` produces it and returns its members in archive order.
///
/// Meant for tests and inspection of untrusted images: every length is checked against the
/// input, nothing is allocated beyond the input's size, and anything `write_newc` would not
/// write is an error rather than being guessed at — other magics (070702, 070707), owners
/// other than 0:0, hard links, block devices, FIFOs, sockets, a member before its parent
/// directory, non-zero padding, or anything but NUL bytes after `TRAILER!!!`.
pub fn read_newc(data: &[u8]) -> Result<Vec<Entry>, CpioError> {
    let mut cur = Cursor { data, pos: 0 };
    let mut members: Vec<Entry> = Vec::new();
    loop {
        let start = cur.pos;
        let header = cur.take(HEADER_LEN, "a member header")?;
        if &header[..6] != MAGIC {
            return Err(CpioError::Malformed {
                offset: start,
                reason: "bad magic (only newc 070701 is supported)",
            });
        }
        let mut fields = [0u32; 13];
        for (i, f) in fields.iter_mut().enumerate() {
            let at = 6 + 8 * i;
            *f = parse_hex8(&header[at..at + 8], start + at)?;
        }
        let [
            _ino,
            mode,
            uid,
            gid,
            nlink,
            _mtime,
            filesize,
            _devmajor,
            _devminor,
            rdev_major,
            rdev_minor,
            namesize,
            _check,
        ] = fields;

        let name_at = cur.pos;
        let namesize = namesize as usize;
        if namesize == 0 || namesize > PATH_MAX {
            return Err(CpioError::Malformed {
                offset: start,
                reason: "name size is 0 or over PATH_MAX",
            });
        }
        let raw_name = cur.take(namesize, "a member name")?;
        let (nul, name) = raw_name.split_last().ok_or(CpioError::Malformed {
            offset: name_at,
            reason: "empty name",
        })?;
        if *nul != 0 || name.contains(&0) {
            return Err(CpioError::Malformed {
                offset: name_at,
                reason: "name is not a single NUL-terminated string",
            });
        }
        let name = std::str::from_utf8(name).map_err(|_| CpioError::Malformed {
            offset: name_at,
            reason: "name is not UTF-8",
        })?;
        cur.skip_padding(pad4((HEADER_LEN + namesize) as u64))?;
        let body = cur.take(filesize as usize, "member data")?;
        cur.skip_padding(pad4(u64::from(filesize)))?;

        if name == TRAILER {
            if cur.data[cur.pos..].iter().any(|&b| b != 0) {
                return Err(CpioError::Malformed {
                    offset: cur.pos,
                    reason: "data after TRAILER!!!",
                });
            }
            break;
        }

        let path = name.to_owned();
        if mode > S_IFMT | 0o7777 {
            return Err(CpioError::Malformed {
                offset: start,
                reason: "mode has bits above the file type",
            });
        }
        if uid != 0 || gid != 0 {
            return Err(CpioError::Malformed {
                offset: start,
                reason: "owner is not 0:0",
            });
        }
        let no_body = |kind: EntryKind| {
            if body.is_empty() {
                Ok(kind)
            } else {
                Err(CpioError::Malformed {
                    offset: start,
                    reason: "directory or device with data",
                })
            }
        };
        let single_link = |kind: EntryKind| {
            // The kernel hard-links members with nlink >= 2 that share an inode number.
            if nlink == 1 {
                Ok(kind)
            } else {
                Err(CpioError::Malformed {
                    offset: start,
                    reason: "hard links (nlink != 1) are not supported",
                })
            }
        };
        let kind = match mode & S_IFMT {
            S_IFDIR => no_body(EntryKind::Dir)?,
            S_IFREG => single_link(EntryKind::File(body.to_vec()))?,
            S_IFLNK => {
                let target = std::str::from_utf8(body).map_err(|_| CpioError::Malformed {
                    offset: start,
                    reason: "symlink target is not UTF-8",
                })?;
                EntryKind::Symlink(target.to_owned())
            }
            S_IFCHR => single_link(no_body(EntryKind::CharDev {
                major: rdev_major,
                minor: rdev_minor,
            })?)?,
            _ => return Err(CpioError::UnsupportedType { path, mode }),
        };
        members.push(Entry {
            path,
            mode: mode & 0o7777,
            kind,
        });
    }
    let mut check = OrderCheck::default();
    for e in &members {
        check.check(e)?;
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::{Command, Stdio};

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.into(),
            mode: 0o755,
            kind: EntryKind::Dir,
        }
    }

    fn file(path: &str, mode: u32, data: &[u8]) -> Entry {
        Entry {
            path: path.into(),
            mode,
            kind: EntryKind::File(data.to_vec()),
        }
    }

    fn symlink(path: &str, target: &str) -> Entry {
        Entry {
            path: path.into(),
            mode: 0o777,
            kind: EntryKind::Symlink(target.into()),
        }
    }

    fn sample() -> Vec<Entry> {
        vec![
            dir("dev"),
            Entry {
                path: "dev/console".into(),
                mode: 0o600,
                kind: EntryKind::CharDev { major: 5, minor: 1 },
            },
            file("init", 0o755, b"\x7fELF not really"),
            dir("etc"),
            file("etc/empty", 0o644, b""),
            file("etc/four", 0o644, b"1234"),
            file("etc/five", 0o4755, b"12345"),
            dir("tmp"),
            symlink("etc/link", "four"),
            dir("etc/sub"),
            file("etc/sub/x", 0o600, &[0u8, 1, 2, 255, 0]),
            // '-' sorts before '/', so this lands between "etc" and its contents.
            file("etc-b", 0o644, b"b"),
        ]
    }

    fn write(entries: &[Entry], mtime: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let n = write_newc(entries, mtime, &mut out).expect("write");
        assert_eq!(n, out.len() as u64);
        out
    }

    fn sorted(mut entries: Vec<Entry>) -> Vec<Entry> {
        entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        entries
    }

    #[test]
    fn round_trip() {
        let bytes = write(&sample(), 1_700_000_000);
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(read_newc(&bytes).expect("read"), sorted(sample()));
    }

    #[test]
    fn empty_archive_is_just_the_trailer() {
        let bytes = write(&[], 0);
        assert_eq!(read_newc(&bytes).expect("read"), Vec::new());
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes.len(), 124);
    }

    #[test]
    fn exact_bytes_of_one_member() {
        let bytes = write(&[file("ab", 0o644, b"xyz")], 0x1234_5678);
        let mut expected = Vec::new();
        // magic, ino 1, mode 0100644, uid, gid, nlink 1, mtime, size 3, dev 0:0, rdev 0:0,
        // namesize 3, check
        expected.extend_from_slice(
            b"070701\
              00000001000081A4000000000000000000000001123456780000000300000000\
              00000000000000000000000000000003\
              00000000",
        );
        // 110 + 3 = 113 -> 3 bytes of padding; data 3 -> 1 byte of padding.
        expected.extend_from_slice(b"ab\0\0\0\0xyz\0");
        expected.extend_from_slice(
            b"070701\
              00000000000000000000000000000000000000010000000000000000000000000000000000000000\
              000000000000000B00000000TRAILER!!!\0\0\0\0",
        );
        assert_eq!(bytes, expected);
        let dir_bytes = write(&[dir("d")], 7);
        assert_eq!(
            &dir_bytes[6..54],
            b"00000001000041ED00000000000000000000000200000007"
        );
    }

    #[test]
    fn output_is_independent_of_input_order() {
        let a = write(&sample(), 42);
        let mut reversed = sample();
        reversed.reverse();
        assert_eq!(a, write(&reversed, 42));
        let mut rotated = sample();
        rotated.rotate_left(5);
        assert_eq!(a, write(&rotated, 42));
        assert_ne!(a, write(&sample(), 43), "mtime must be part of the output");
    }

    #[test]
    fn char_device_fields() {
        let e = Entry {
            path: "c".into(),
            mode: 0o600,
            kind: EntryKind::CharDev {
                major: 0xfff,
                minor: 0xfffff,
            },
        };
        let bytes = write(std::slice::from_ref(&e), 0);
        // mode, rdevmajor, rdevminor
        assert_eq!(&bytes[14..22], b"00002180");
        assert_eq!(&bytes[78..86], b"00000FFF");
        assert_eq!(&bytes[86..94], b"000FFFFF");
        assert_eq!(read_newc(&bytes).expect("read"), vec![e]);
    }

    fn write_err(entries: &[Entry]) -> CpioError {
        let mut out = Vec::new();
        let err = write_newc(entries, 0, &mut out).expect_err("must be rejected");
        assert!(
            out.is_empty(),
            "nothing may be written for an invalid entry set"
        );
        err
    }

    #[test]
    fn rejects_invalid_paths() {
        let long = "a".repeat(MAX_PATH_LEN + 1);
        for bad in [
            "",
            "/abs",
            ".",
            "..",
            "a/./b",
            "a/../b",
            "a//b",
            "a/",
            "nul\0byte",
            "TRAILER!!!",
            long.as_str(),
        ] {
            let err = write_err(&[file(bad, 0o644, b"")]);
            assert!(
                matches!(err, CpioError::InvalidPath { .. }),
                "{bad:?}: {err}"
            );
        }
        // Exactly 4095 bytes still unpacks.
        let longest = "a".repeat(MAX_PATH_LEN);
        let bytes = write(&[file(&longest, 0o644, b"x")], 0);
        assert_eq!(read_newc(&bytes).expect("read")[0].path, longest);
    }

    #[test]
    fn rejects_duplicates_and_missing_parents() {
        assert!(matches!(
            write_err(&[dir("a"), file("a", 0o644, b"")]),
            CpioError::Duplicate { .. }
        ));
        assert!(matches!(
            write_err(&[dir("a"), dir("a")]),
            CpioError::Duplicate { .. }
        ));
        let err = write_err(&[dir("a"), file("a/b/c", 0o644, b"")]);
        match err {
            CpioError::MissingParent { path, parent } => {
                assert_eq!((path.as_str(), parent.as_str()), ("a/b/c", "a/b"))
            }
            other => panic!("{other}"),
        }
        // A parent that exists but is not a directory is no parent.
        assert!(matches!(
            write_err(&[file("a", 0o644, b""), file("a/b", 0o644, b"")]),
            CpioError::MissingParent { .. }
        ));
        assert!(matches!(
            write_err(&[symlink("a", "b"), dir("b"), file("a/x", 0o644, b"")]),
            CpioError::MissingParent { .. }
        ));
    }

    #[test]
    fn rejects_bad_modes_devices_links_and_sizes() {
        assert!(matches!(
            write_err(&[file("a", 0o100644, b"")]),
            CpioError::InvalidMode { .. }
        ));
        assert!(matches!(
            write_err(&[file("a", 0o10000, b"")]),
            CpioError::InvalidMode { .. }
        ));
        for (major, minor) in [(0x1000, 0), (0, 0x100000)] {
            let e = Entry {
                path: "c".into(),
                mode: 0o600,
                kind: EntryKind::CharDev { major, minor },
            };
            assert!(matches!(write_err(&[e]), CpioError::InvalidDevice { .. }));
        }
        for target in [String::new(), "a\0b".into(), "t".repeat(MAX_PATH_LEN + 1)] {
            assert!(matches!(
                write_err(&[symlink("l", &target)]),
                CpioError::InvalidSymlink { .. }
            ));
        }
        // A 4 GiB test vector is too costly; the limit is checked on the length alone.
        assert!(check_file_size("f", MAX_FILE_SIZE).is_ok());
        assert!(matches!(
            check_file_size("f", MAX_FILE_SIZE + 1),
            Err(CpioError::FileTooLarge { .. })
        ));
    }

    #[test]
    fn reader_rejects_every_truncation() {
        let bytes = write(&sample(), 1);
        for len in 0..bytes.len() {
            assert!(read_newc(&bytes[..len]).is_err(), "prefix of {len} bytes");
        }
    }

    #[test]
    fn reader_accepts_zero_padding_after_trailer_only() {
        let mut bytes = write(&sample(), 1);
        bytes.extend_from_slice(&[0; 512]);
        assert_eq!(read_newc(&bytes).expect("read").len(), sample().len());
        bytes.push(b'0');
        assert!(matches!(
            read_newc(&bytes),
            Err(CpioError::Malformed { .. })
        ));
    }

    /// Rewrites one 8-digit header field of the first member.
    fn patch_field(bytes: &mut [u8], field: usize, value: &[u8; 8]) {
        let at = 6 + 8 * field;
        bytes[at..at + 8].copy_from_slice(value);
    }

    #[test]
    fn reader_rejects_malformed_headers() {
        let good = write(&[file("ab", 0o644, b"xyz")], 0);
        type Patch = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(&str, Patch)> = vec![
            ("magic", Box::new(|b| b[..6].copy_from_slice(b"070702"))),
            ("odc magic", Box::new(|b| b[..6].copy_from_slice(b"070707"))),
            ("hex", Box::new(|b| patch_field(b, 1, b"000081G4"))),
            ("sign", Box::new(|b| patch_field(b, 6, b"+0000003"))),
            ("uid", Box::new(|b| patch_field(b, 2, b"000003E8"))),
            ("nlink", Box::new(|b| patch_field(b, 4, b"00000002"))),
            ("namesize 0", Box::new(|b| patch_field(b, 11, b"00000000"))),
            (
                "namesize huge",
                Box::new(|b| patch_field(b, 11, b"FFFFFFFF")),
            ),
            (
                "namesize short",
                Box::new(|b| patch_field(b, 11, b"00000002")),
            ),
            (
                "filesize huge",
                Box::new(|b| patch_field(b, 6, b"FFFFFFFF")),
            ),
            (
                "filesize long",
                Box::new(|b| patch_field(b, 6, b"00000005")),
            ),
            ("block device", Box::new(|b| patch_field(b, 1, b"000061A4"))),
            ("fifo", Box::new(|b| patch_field(b, 1, b"000011A4"))),
            (
                "high mode bits",
                Box::new(|b| patch_field(b, 1, b"000281A4")),
            ),
            ("padding", Box::new(|b| b[113] = 1)),
            ("name nul", Box::new(|b| b[111] = 0)),
            ("missing trailer", Box::new(|b| b.truncate(120))),
        ];
        for (what, patch) in cases {
            let mut bytes = good.clone();
            patch(&mut bytes);
            assert!(read_newc(&bytes).is_err(), "{what} accepted");
        }
        assert!(read_newc(b"").is_err());
        assert!(read_newc(&[0u8; 4096]).is_err());
        assert!(read_newc(b"garbage that is not a cpio archive at all, not even close....................................................").is_err());
    }

    #[test]
    fn reader_rejects_member_before_parent_and_bad_names() {
        // Hand-built archive order: child first.
        let mut bytes = Vec::new();
        let mut w = Counted {
            inner: &mut bytes,
            written: 0,
        };
        for (ino, name, mode) in [(1, "a/b", S_IFREG | 0o644), (2, "a", S_IFDIR | 0o755)] {
            let h = Header {
                ino,
                mode,
                nlink: 1,
                mtime: 0,
                filesize: 0,
                rdev_major: 0,
                rdev_minor: 0,
                name,
            };
            put_member(&mut w, &h, &[]).unwrap();
        }
        let t = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            filesize: 0,
            rdev_major: 0,
            rdev_minor: 0,
            name: TRAILER,
        };
        put_member(&mut w, &t, &[]).unwrap();
        assert!(matches!(
            read_newc(&bytes),
            Err(CpioError::MissingParent { .. })
        ));
        let mut abs = write(&[file("xa", 0o644, b"")], 0);
        abs[110] = b'/';
        assert!(matches!(
            read_newc(&abs),
            Err(CpioError::InvalidPath { .. })
        ));
        let mut utf = write(&[file("xa", 0o644, b"")], 0);
        utf[110] = 0xff;
        assert!(matches!(read_newc(&utf), Err(CpioError::Malformed { .. })));
    }

    #[test]
    fn reader_survives_random_corruption() {
        let good = write(&sample(), 9);
        // xorshift: deterministic, no dependency.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut bytes = good.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % bytes.len();
                bytes[at] = match next() % 3 {
                    0 => next() as u8,
                    1 => b"0123456789ABCDEF"[(next() % 16) as usize],
                    _ => 0,
                };
            }
            if next() % 8 == 0 {
                let keep = (next() as usize) % bytes.len();
                bytes.truncate(keep);
            }
            // Any result is fine; a panic is not.
            let _ = read_newc(&bytes);
        }
    }

    const CPIO: &str = "/usr/bin/cpio";

    fn cpio(args: &[&str], stdin: &Path, cwd: &Path) -> String {
        let input = std::fs::File::open(stdin).expect("open archive");
        let out = Command::new(CPIO)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::from(input))
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {CPIO} ({e}): GNU cpio is required for this test and is installed by the project's setup")
            });
        assert!(
            out.status.success(),
            "cpio {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("cpio output is UTF-8")
    }

    #[test]
    fn gnu_cpio_lists_our_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let archive = tmp.path().join("a.cpio");
        std::fs::write(&archive, write(&sample(), 1_700_000_000)).unwrap();
        let expected = sorted(sample());

        let names: Vec<String> = cpio(&["-it", "--quiet"], &archive, tmp.path())
            .lines()
            .map(str::to_owned)
            .collect();
        let want: Vec<String> = expected.iter().map(|e| e.path.clone()).collect();
        assert_eq!(names, want);

        // e.g. "-rw-r--r--   1 root     root            4 Nov 14  2023 etc/four"
        //      "crw-------   1 root     root       5,   1 Nov 14  2023 dev/console"
        let listing = cpio(
            &["-itv", "--quiet", "--numeric-uid-gid"],
            &archive,
            tmp.path(),
        );
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), expected.len(), "{listing}");
        for (line, e) in lines.iter().zip(&expected) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let perms = fields[0];
            assert_eq!((fields[2], fields[3]), ("0", "0"), "{line}");
            match &e.kind {
                EntryKind::Dir => assert!(perms.starts_with('d'), "{line}"),
                EntryKind::File(data) => {
                    assert!(perms.starts_with('-'), "{line}");
                    assert_eq!(fields[4], data.len().to_string(), "{line}");
                    assert!(line.ends_with(&format!(" {}", e.path)), "{line}");
                }
                EntryKind::Symlink(target) => {
                    assert!(perms.starts_with('l'), "{line}");
                    assert!(
                        line.ends_with(&format!(" {} -> {target}", e.path)),
                        "{line}"
                    );
                }
                EntryKind::CharDev { major, minor } => {
                    assert!(perms.starts_with('c'), "{line}");
                    assert_eq!(fields[4], format!("{major},"), "{line}");
                    assert_eq!(fields[5], minor.to_string(), "{line}");
                }
            }
            if e.path == "etc/five" {
                assert_eq!(perms, "-rwsr-xr-x", "{line}");
            }
        }
    }

    #[test]
    fn gnu_cpio_extracts_identical_contents() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let archive = tmp.path().join("a.cpio");
        // No device node: creating one needs privileges the test should not depend on.
        let entries: Vec<Entry> = sample()
            .into_iter()
            .filter(|e| !matches!(e.kind, EntryKind::CharDev { .. }))
            .collect();
        std::fs::write(&archive, write(&entries, 1_700_000_000)).unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        cpio(
            &["-idm", "--quiet", "--no-absolute-filenames"],
            &archive,
            &root,
        );
        for e in &entries {
            let p = root.join(&e.path);
            let meta = std::fs::symlink_metadata(&p)
                .unwrap_or_else(|err| panic!("{} not extracted: {err}", e.path));
            match &e.kind {
                EntryKind::Dir => assert!(meta.is_dir(), "{}", e.path),
                EntryKind::File(data) => {
                    assert!(meta.is_file(), "{}", e.path);
                    assert_eq!(&std::fs::read(&p).unwrap(), data, "{}", e.path);
                    assert_eq!(
                        meta.permissions().mode() & 0o777,
                        e.mode & 0o777,
                        "{}",
                        e.path
                    );
                }
                EntryKind::Symlink(target) => {
                    assert!(meta.file_type().is_symlink(), "{}", e.path);
                    assert_eq!(std::fs::read_link(&p).unwrap(), Path::new(target));
                }
                EntryKind::CharDev { .. } => unreachable!(),
            }
            // Directory mtimes change as cpio fills them, so only files are compared.
            if meta.is_file() {
                use std::os::unix::fs::MetadataExt;
                assert_eq!(meta.mtime(), 1_700_000_000, "{}", e.path);
            }
        }
    }
}
