//! Helpers for the tests that use dosfstools and mtools as oracles.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh directory under cargo's per-target temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("cvm-fat-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("CVM_FAT_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (is it installed?): {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `fsck.fat -n -v` must exit 0 and report nothing it would change.
pub fn fsck_clean(img: &Path) -> String {
    let o = run(Command::new("fsck.fat").arg("-n").arg("-v").arg(img));
    let t = text(&o);
    assert!(o.status.success(), "fsck.fat failed:\n{t}");
    for bad in [
        "differ",
        "wrong",
        "invalid",
        "Invalid",
        "bad",
        "Bad",
        "lost",
        "Leaving filesystem unchanged",
        "Free cluster summary",
        "Reclaim",
        "Truncating",
        "contains",
        "dirty",
        "Dirty",
    ] {
        assert!(!t.contains(bad), "fsck.fat reported {bad:?}:\n{t}");
    }
    t
}

fn mtools(cmd: &str) -> Command {
    let mut c = Command::new(cmd);
    // No user configuration (MTOOLSRC=/dev/null; Debian's /etc/mtools.conf only names floppy
    // drives) and no MTOOLS_SKIP_CHECK, so mtools' own sanity checks of the boot sector apply.
    c.env_remove("MTOOLS_SKIP_CHECK")
        .env("MTOOLSRC", "/dev/null");
    c
}

/// `mdir -a -i img ::/dir` output (checked for success).
pub fn mdir(img: &Path, dir: &str) -> String {
    let o = run(mtools("mdir")
        .arg("-a")
        .arg("-i")
        .arg(img)
        .arg(format!("::{dir}")));
    let t = text(&o);
    assert!(o.status.success(), "mdir {dir} failed:\n{t}");
    t
}

/// Every path in the volume, as `mdir -/ -b` lists it (directories end with `/`), sorted.
pub fn list_all(img: &Path) -> Vec<String> {
    let o = run(mtools("mdir")
        .arg("-/")
        .arg("-b")
        .arg("-i")
        .arg(img)
        .arg("::/"));
    let t = text(&o);
    // mtools' recursive bare listing of an empty root fails with "not found" (also on volumes
    // made by mkfs.fat); the plain listing then says "No files".
    if !o.status.success() && t.contains("File \"::/\" not found") {
        assert!(mdir(img, "/").contains("No files"), "{t}");
        return Vec::new();
    }
    assert!(o.status.success(), "mdir -/ failed:\n{t}");
    let mut v: Vec<String> = t
        .lines()
        .map(|l| l.trim().trim_start_matches("::").to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

/// Reads one file with `mcopy`.
pub fn mcopy(img: &Path, path: &str, tmp: &TempDir) -> Vec<u8> {
    let out = tmp.path("mcopy.out");
    let _ = std::fs::remove_file(&out);
    let o = run(mtools("mcopy")
        .arg("-n")
        .arg("-i")
        .arg(img)
        .arg(format!("::{path}"))
        .arg(&out));
    assert!(o.status.success(), "mcopy {path} failed:\n{}", text(&o));
    std::fs::read(&out).unwrap()
}

/// `minfo` output.
pub fn minfo(img: &Path) -> String {
    let o = run(mtools("minfo").arg("-i").arg(img).arg("::"));
    let t = text(&o);
    assert!(o.status.success(), "minfo failed:\n{t}");
    t
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no RNG crate.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A minimal, independent FAT reader for the tests: the boot sector fields and every directory
/// entry, found by following cluster chains in FAT #1.
pub struct Parsed {
    pub bits: u32,
    pub sector: Vec<u8>,
    pub spc: u64,
    pub reserved: u64,
    pub fats: u64,
    pub fat_sectors: u64,
    pub root_entries: u64,
    pub total_sectors: u64,
    pub first_data: u64,
    pub clusters: u64,
    /// (path, raw 32-byte entry) for every entry but `.`/`..`, in on-disk order.
    pub entries: Vec<(String, [u8; 32])>,
    /// (path, first cluster, chain) of every file and directory.
    pub chains: Vec<(String, Vec<u64>)>,
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}
fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

pub fn parse(img: &[u8]) -> Parsed {
    let b = &img[..512];
    assert_eq!(le16(b, 11), 512);
    let spc = u64::from(b[13]);
    let reserved = le16(b, 14);
    let fats = u64::from(b[16]);
    let root_entries = le16(b, 17);
    let total_sectors = if le16(b, 19) != 0 {
        le16(b, 19)
    } else {
        le32(b, 32)
    };
    let fat16 = le16(b, 22);
    let fat_sectors = if fat16 != 0 { fat16 } else { le32(b, 36) };
    let root_sectors = (root_entries * 32).div_ceil(512);
    let first_data = reserved + fats * fat_sectors + root_sectors;
    let clusters = (total_sectors - first_data) / spc;
    let bits = if fat16 == 0 {
        32
    } else if clusters < 4085 {
        12
    } else {
        16
    };
    let fat = &img[(reserved * 512) as usize..((reserved + fat_sectors) * 512) as usize];
    let next = |c: u64| -> u64 {
        match bits {
            12 => {
                let o = (c + c / 2) as usize;
                let v = u64::from(u16::from_le_bytes([fat[o], fat[o + 1]]));
                if c.is_multiple_of(2) {
                    v & 0xFFF
                } else {
                    v >> 4
                }
            }
            16 => le16(fat, (c * 2) as usize),
            _ => le32(fat, (c * 4) as usize) & 0x0FFF_FFFF,
        }
    };
    let eoc = match bits {
        12 => 0xFF8,
        16 => 0xFFF8,
        _ => 0x0FFF_FFF8,
    };
    let cb = (spc * 512) as usize;
    let chain = |first: u64| -> Vec<u64> {
        let mut v = vec![];
        let mut c = first;
        while c >= 2 && c < eoc {
            assert!(c < clusters + 2, "cluster {c} out of range");
            assert!(v.len() as u64 <= clusters, "loop in chain");
            v.push(c);
            c = next(c);
        }
        v
    };
    let read = |ch: &[u64]| -> Vec<u8> {
        let mut out = vec![];
        for &c in ch {
            let at = ((first_data + (c - 2) * spc) * 512) as usize;
            out.extend_from_slice(&img[at..at + cb]);
        }
        out
    };
    let mut p = Parsed {
        bits: bits as u32,
        sector: b.to_vec(),
        spc,
        reserved,
        fats,
        fat_sectors,
        root_entries,
        total_sectors,
        first_data,
        clusters,
        entries: vec![],
        chains: vec![],
    };
    let root = if bits == 32 {
        let ch = chain(le32(b, 44));
        p.chains.push(("/".into(), ch.clone()));
        read(&ch)
    } else {
        let at = ((reserved + fats * fat_sectors) * 512) as usize;
        img[at..at + (root_sectors * 512) as usize].to_vec()
    };
    let mut stack = vec![(String::new(), root)];
    while let Some((dir, data)) = stack.pop() {
        for e in data.chunks(32) {
            if e[0] == 0 {
                break;
            }
            let e: [u8; 32] = e.try_into().unwrap();
            if e[0] == b'.' {
                continue;
            }
            let base = String::from_utf8_lossy(&e[..8]).trim_end().to_string();
            let ext = String::from_utf8_lossy(&e[8..11]).trim_end().to_string();
            let name = if ext.is_empty() {
                base
            } else {
                format!("{base}.{ext}")
            };
            let path = format!("{dir}/{name}");
            p.entries.push((path.clone(), e));
            if e[11] & 0x08 != 0 {
                continue;
            }
            let first = (le16(&e, 20) << 16) | le16(&e, 26);
            let ch = chain(first);
            if e[11] & 0x10 != 0 {
                stack.push((path.clone(), read(&ch)));
            }
            p.chains.push((path, ch));
        }
    }
    p
}

/// Copies the whole volume out with `mcopy -s` and returns every file (path → bytes) and every
/// directory (path ending in `/`), paths as in the volume (`/EFI/BOOT/BOOTX64.EFI`).
pub fn mcopy_all(img: &Path, tmp: &TempDir) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    let out = tmp.path("mcopy-all");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let o = run(mtools("mcopy")
        .arg("-s")
        .arg("-n")
        .arg("-i")
        .arg(img)
        .arg("::*")
        .arg(&out));
    let (mut files, mut dirs) = (BTreeMap::new(), Vec::new());
    // As with mdir: nothing to copy from an empty root is an error to mtools.
    if !o.status.success() && text(&o).contains("File \"::*\" not found") {
        assert!(mdir(img, "/").contains("No files"), "{}", text(&o));
        return (files, dirs);
    }
    assert!(o.status.success(), "mcopy -s failed:\n{}", text(&o));
    let mut stack = vec![out.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = format!("/{}", p.strip_prefix(&out).unwrap().display());
            if p.is_dir() {
                dirs.push(format!("{rel}/"));
                stack.push(p);
            } else {
                files.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    dirs.sort();
    (files, dirs)
}
