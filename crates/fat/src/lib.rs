#![forbid(unsafe_code)]
//! Reproducible FAT images for an EFI System Partition (ESP).
//!
//! [`FatImage`] holds a tree of directories and files in memory and writes the whole volume —
//! boot sector, FSInfo, backup boot sector, both FATs, directories and file data — as one byte
//! stream. The same input always gives the same bytes: `cvmctl disk` builds a GPT disk whose
//! every byte is measured or predicted, and the ESP is one of its partitions.
//!
//! ```
//! use cvm_fat::{FatImage, FatTime};
//! let mut esp = FatImage::new(64 << 20, "ESP", FatTime::MIN)?;
//! esp.add_file("/EFI/BOOT/BOOTX64.EFI", b"MZ...".to_vec())?;
//! let bytes = esp.to_vec()?;
//! assert_eq!(bytes.len(), 64 << 20);
//! # Ok::<(), cvm_fat::Error>(())
//! ```
//!
//! # FAT type and the size rule
//!
//! The UEFI specification (2.10, §13.3 "File System Format") bases the ESP's file system on FAT
//! as Microsoft's FAT specification defines it (fatgen103: "Microsoft Extensible Firmware
//! Initiative FAT32 File System Specification", 1.03) and "encompasses the use of FAT32 for a
//! system partition, and FAT12 or FAT16 for removable media"; firmware (EDK II's FatPkg in OVMF,
//! every vendor's) reads all three. The FAT type is not a choice an implementation may make freely:
//! Microsoft's FAT specification (fatgen103, "FAT Type Determination") fixes it by the cluster
//! count alone — fewer than 4085 clusters is FAT12, fewer than 65525 is FAT16, anything more is
//! FAT32 — and drivers (Linux, mtools, EDK II) compute it the same way. So the volume size
//! decides, with 512-byte sectors:
//!
//! | volume size | type | sectors per cluster |
//! | --- | --- | --- |
//! | under 18 KiB (36 sectors) | refused: no room for one data cluster | |
//! | 18 KiB to under 4.1 MiB (8,400 sectors) | FAT12 | 1 (≤ 4,000 sectors), 2 (≤ 8,100), 4 |
//! | 4.1 MiB to under 32.5 MiB (66,600 sectors) | FAT16 | 2 (≤ 32,680 sectors), 4 |
//! | 32.5 MiB to 260 MiB (532,480 sectors) | FAT32 | 1 |
//! | to 8 GiB / 16 GiB / 32 GiB | FAT32 | 8 / 16 / 32 |
//! | to 2 TiB − 512 bytes (2³² − 1 sectors) | FAT32 | 64 |
//! | larger, or not a multiple of 512 bytes | refused | |
//!
//! The FAT16 and FAT32 rows are fatgen103's `DskTableFAT16`/`DskTableFAT32`, which keep every
//! cluster count well away from the type boundaries; fatgen103 gives no FAT12 table, so FAT12
//! takes the smallest cluster that keeps the count under 4085. Use 32.5 MiB or more for a real
//! ESP (FAT32, as UEFI requires of a fixed disk); the smaller types exist so that small test
//! volumes are valid too, not as a recommendation.
//!
//! Each FAT is the smallest that holds an entry for every cluster; on FAT32 the reserved region
//! (32 sectors: boot sector 0, FSInfo 1, backup boot sector 6, backup FSInfo 7) grows so that the
//! data region starts on a cluster boundary. FAT12/16 volumes have 1 reserved sector and a fixed
//! root directory of 512 entries. There are always two FATs, media byte 0xF8, FAT\[0\] = media
//! byte with all other bits set, FAT\[1\] = end-of-chain (the "clean, no I/O error" bits set),
//! every chain ends with the end-of-chain mark (0xFFF, 0xFFFF, 0x0FFFFFFF).
//!
//! # Names: 8.3 only
//!
//! Paths are `/`-separated components, each a valid short (8.3) name as it is: `A`–`Z`, `0`–`9`
//! and ``!#$%&'()-@^_`{}~``, 1–8 characters, optionally `.` and 1–3 more (fatgen103, "FAT 32
//! Byte Directory Entry Structure"). Lower case, spaces, long names, `.`/`..` and the device names
//! Windows reserves (CON, NUL, …) are refused with an error instead of being mapped. Why:
//!
//! - The ESP needs nothing else: the removable-media boot path is `\EFI\BOOT\BOOTX64.EFI`
//!   (UEFI 2.10 §3.5.1.1 "Removable Media Boot Behavior") and vendor directories are short by
//!   convention. UEFI §13.3.1.2 "File Names": "FAT 8.3 file names are always stored as uppercase
//!   ASCII characters".
//! - Long file names are a second, redundant encoding of every name (UTF-16 entries plus a
//!   generated short alias with a checksum). The alias (`PROGRA~1`) depends on what else is in the
//!   directory and on the order of creation; keeping it reproducible and equal to what other
//!   implementations generate is exactly the kind of detail that makes two "identical" images
//!   differ. Lower case in a short name needs either long entries or the Windows NT case bits
//!   (byte 12), which not every reader honours.
//! - A name that is stored as given is also read back as given by every FAT driver, so the path a
//!   measurement policy names is the path the firmware opens.
//!
//! # Reproducibility
//!
//! Nothing in the image depends on the time, the host, randomness or the order of calls:
//!
//! - **Timestamps.** Every creation, write and access date/time (and the volume label entry's)
//!   is the one [`FatTime`] given to [`FatImage::new`]; [`FatTime::MIN`] (1980-01-01 00:00:00,
//!   the earliest FAT can store) is the natural default, [`FatTime::from_unix`] takes
//!   `SOURCE_DATE_EPOCH`. The 10 ms creation field is 0.
//! - **Order.** Entries of a directory are sorted by their 11-byte on-disk name (bytewise, so
//!   `A.B` = `A       B  ` sorts before `AB`), after the volume label (root) or `.` and `..`.
//!   Clusters are allocated contiguously from cluster 2 in pre-order: a directory, then each of
//!   its entries in that order, each subtree before the next sibling. Every file and directory
//!   is one contiguous run.
//! - **Volume serial** (`BS_VolID`, usually derived from the time of formatting) is the first four
//!   bytes, read little-endian, of a SHA-256 over the input — see [`FatImage::volume_id`] for the
//!   exact encoding. Any change of a file's bytes, a name, the size, label, time or hidden-sector
//!   count changes it.
//! - **Label** is given by the caller and written to the boot sector and as the root directory's
//!   first entry. **OEM name** is `MSWIN4.1` (fatgen103's recommendation), geometry fields are
//!   fixed (63 sectors per track, 255 heads, drive 0x80), `BPB_HiddSec` is what
//!   [`FatImage::set_hidden_sectors`] says (0 by default), the boot code is a fixed 5-byte stub
//!   (`int 18h`: "not bootable, try the next device", then halt) and every other byte is zero.
//! - **FSInfo** holds the exact free-cluster count and, as next-free hint, the first free cluster.
//!
//! # Bounds
//!
//! Nothing panics on any input: sizes, names and contents are checked when they are given, and
//! [`FatImage::add_file`]/[`FatImage::add_dir`] refuse what would not fit in the volume (counting
//! directory growth), a file of 4 GiB or more (the size field is 32 bits), a directory of more
//! than 65,536 entries (fatgen103's limit) or a FAT12/16 root of more than 512.

mod geometry;
mod name;
mod time;

pub use geometry::FatType;
pub use name::MAX_PATH_LEN;
pub use time::FatTime;

use geometry::{Geometry, SECTOR};
use name::ShortName;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The volume size has no valid FAT layout.
    #[error("invalid FAT volume size {size} bytes: {reason}")]
    InvalidSize { size: u64, reason: &'static str },
    /// The volume label is not a valid FAT label.
    #[error("invalid volume label {label:?}: {reason}")]
    InvalidLabel { label: String, reason: &'static str },
    /// The timestamp cannot be stored in FAT.
    #[error("invalid FAT timestamp: {reason}")]
    InvalidTime { reason: &'static str },
    /// The path is not a `/`-separated list of upper-case 8.3 names.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// Something already exists at that path.
    #[error("{path:?} already exists")]
    Duplicate { path: String },
    /// A parent of the path is a file.
    #[error("cannot add {path:?}: {parent:?} is a file, not a directory")]
    NotADirectory { path: String, parent: String },
    /// The file is too large for a FAT directory entry's 32-bit size.
    #[error("file {path:?} is {size} bytes; FAT files are at most 4 GiB - 1 bytes")]
    FileTooLarge { path: String, size: u64 },
    /// The directory would have more entries than FAT allows.
    #[error("cannot add {path:?}: its directory would have more than {max} entries")]
    DirectoryFull { path: String, max: u32 },
    /// The volume has too few free clusters.
    #[error(
        "cannot add {path:?}: needs {needed} more clusters of {cluster_bytes} bytes, {free} are free"
    )]
    NoSpace {
        path: String,
        needed: u64,
        free: u64,
        cluster_bytes: u64,
    },
    /// The image could not be allocated in memory ([`FatImage::to_vec`]).
    #[error("cannot allocate {0} bytes for the image")]
    OutOfMemory(u64),
    /// Writing the image failed.
    #[error("writing the FAT image: {0}")]
    Io(#[from] std::io::Error),
    /// An internal consistency check failed (a bug; reported instead of writing a bad image).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Most entries one directory may have (fatgen103: a directory is at most 65,536 32-byte entries).
const MAX_DIR_ENTRIES: u64 = 65_536;
/// Largest file: `DIR_FileSize` is 32 bits.
const MAX_FILE: u64 = u32::MAX as u64;

const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;

/// Domain separation for the volume serial's hash; the `v1` changes if the encoding does.
const VOLUME_ID_TAG: &[u8] = b"cvm-fat volume-id v1\0";

enum Node {
    Dir(Dir),
    File(Vec<u8>),
}

#[derive(Default)]
struct Dir {
    children: BTreeMap<ShortName, Node>,
}

/// A FAT volume being assembled in memory; see the [crate docs](crate) for the format.
pub struct FatImage {
    geo: Geometry,
    size: u64,
    label: [u8; 11],
    time: FatTime,
    hidden_sectors: u32,
    root: Dir,
    /// Clusters the current tree occupies (kept up to date by `add`).
    used_clusters: u64,
}

impl std::fmt::Debug for FatImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FatImage")
            .field("size", &self.size)
            .field("fat_type", &self.geo.fat_type)
            .field("cluster_bytes", &self.geo.cluster_bytes())
            .field("clusters", &self.geo.clusters)
            .field("used_clusters", &self.used_clusters)
            .finish_non_exhaustive()
    }
}

impl FatImage {
    /// An empty volume of `size_bytes` (a multiple of 512; the FAT type follows from it, see
    /// the crate docs), with volume label `label` (1–11 characters, upper case) and every
    /// timestamp set to `time`.
    pub fn new(size_bytes: u64, label: &str, time: FatTime) -> Result<Self, Error> {
        let geo = Geometry::for_size(size_bytes)?;
        let label = name::label(label)?;
        // The FAT32 root is a cluster chain holding at least the label entry.
        let used_clusters = u64::from(geo.fat_type == FatType::Fat32);
        Ok(Self {
            geo,
            size: size_bytes,
            label,
            time,
            hidden_sectors: 0,
            root: Dir::default(),
            used_clusters,
        })
    }

    /// Sets `BPB_HiddSec`, the number of sectors before the volume on its disk (the partition's
    /// first LBA). Firmware and Linux ignore it; Windows' boot code uses it. Default 0.
    pub fn set_hidden_sectors(&mut self, sectors: u32) {
        self.hidden_sectors = sectors;
    }

    /// The volume size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// FAT12, FAT16 or FAT32, as the size decides.
    pub fn fat_type(&self) -> FatType {
        self.geo.fat_type
    }

    /// Bytes per cluster.
    pub fn cluster_bytes(&self) -> u64 {
        self.geo.cluster_bytes()
    }

    /// Data clusters of the volume.
    pub fn cluster_count(&self) -> u32 {
        self.geo.clusters
    }

    /// Data clusters not used by the files and directories added so far.
    pub fn free_clusters(&self) -> u64 {
        u64::from(self.geo.clusters).saturating_sub(self.used_clusters)
    }

    /// Adds a directory, and any missing parents. Adding an existing directory again is not an
    /// error; a path that is a file is.
    pub fn add_dir(&mut self, path: &str) -> Result<(), Error> {
        self.add(path, Node::Dir(Dir::default()))
    }

    /// Adds a file with the given contents, and any missing parent directories. A path that
    /// already exists (file or directory) is an error.
    pub fn add_file(&mut self, path: &str, data: impl Into<Vec<u8>>) -> Result<(), Error> {
        let data = data.into();
        let size = data.len() as u64;
        if size > MAX_FILE {
            return Err(Error::FileTooLarge {
                path: path.chars().take(MAX_PATH_LEN + 1).collect(),
                size,
            });
        }
        self.add(path, Node::File(data))
    }

    /// Clusters a directory with `entries` entries (including label or `.`/`..`) occupies.
    fn dir_clusters(&self, entries: u64) -> u64 {
        (entries * 32).div_ceil(self.geo.cluster_bytes()).max(1)
    }

    fn fixed_root(&self) -> bool {
        self.geo.fat_type != FatType::Fat32
    }

    fn add(&mut self, path: &str, node: Node) -> Result<(), Error> {
        let names = name::parse_path(path)?;
        let Some((last, parents)) = names.split_last() else {
            return Err(Error::Internal("empty path after parsing"));
        };
        let owned = || path.to_string();
        // Find the deepest existing directory on the way.
        let mut dir = &self.root;
        let mut depth = 0;
        for (i, n) in parents.iter().enumerate() {
            match dir.children.get(n) {
                Some(Node::Dir(d)) => {
                    dir = d;
                    depth = i + 1;
                }
                Some(Node::File(_)) => {
                    let parent = names[..=i]
                        .iter()
                        .map(name::display)
                        .collect::<Vec<_>>()
                        .join("/");
                    return Err(Error::NotADirectory {
                        path: owned(),
                        parent: format!("/{parent}"),
                    });
                }
                None => break,
            }
        }
        if depth == parents.len()
            && let Some(existing) = dir.children.get(last)
        {
            return match (existing, &node) {
                (Node::Dir(_), Node::Dir(_)) => Ok(()),
                _ => Err(Error::Duplicate { path: owned() }),
            };
        }
        // What the addition costs: one more entry in `dir`, one cluster for each new
        // directory (`.`, `..` and one entry always fit in 512 bytes), and the node itself.
        let in_root = depth == 0;
        let entries = dir.children.len() as u64 + if in_root { 1 } else { 2 };
        let max = if in_root && self.fixed_root() {
            u64::from(self.geo.root_entries)
        } else {
            MAX_DIR_ENTRIES
        };
        if entries + 1 > max {
            return Err(Error::DirectoryFull {
                path: owned(),
                max: u32::try_from(max).unwrap_or(u32::MAX),
            });
        }
        let mut needed = 0;
        if !(in_root && self.fixed_root()) {
            needed += self.dir_clusters(entries + 1) - self.dir_clusters(entries);
        }
        needed += (parents.len() - depth) as u64;
        needed += match &node {
            Node::Dir(_) => 1,
            Node::File(data) => (data.len() as u64).div_ceil(self.geo.cluster_bytes()),
        };
        if needed > self.free_clusters() {
            return Err(Error::NoSpace {
                path: owned(),
                needed,
                free: self.free_clusters(),
                cluster_bytes: self.geo.cluster_bytes(),
            });
        }
        let mut dir = &mut self.root;
        for n in parents {
            dir = match dir
                .children
                .entry(*n)
                .or_insert_with(|| Node::Dir(Dir::default()))
            {
                Node::Dir(d) => d,
                Node::File(_) => return Err(Error::Internal("parent turned into a file")),
            };
        }
        dir.children.insert(*last, node);
        self.used_clusters += needed;
        Ok(())
    }

    /// The volume serial number written to `BS_VolID`.
    ///
    /// It is `u32::from_le_bytes(SHA-256(m)[0..4])` where `m` is the concatenation of:
    ///
    /// 1. the 21 bytes `cvm-fat volume-id v1\0`;
    /// 2. the volume size in bytes, u64 little-endian;
    /// 3. the 11-byte space-padded label;
    /// 4. the FAT date and FAT time of the timestamp, each u16 little-endian;
    /// 5. the hidden-sector count, u32 little-endian;
    /// 6. for every directory and file except the root, in allocation order (pre-order, entries
    ///    sorted by on-disk name): one byte `D` (0x44) or `F` (0x46); the path without a leading
    ///    `/` (`EFI/BOOT/BOOTX64.EFI`) as a u16 little-endian length and its bytes; for a file,
    ///    its length as u64 little-endian and its contents.
    ///
    /// So the serial identifies the whole input; the rest of the image is a function of it too.
    pub fn volume_id(&self) -> u32 {
        let mut h = Sha256::new();
        h.update(VOLUME_ID_TAG);
        h.update(self.size.to_le_bytes());
        h.update(self.label);
        h.update(self.time.fat_date().to_le_bytes());
        h.update(self.time.fat_time().to_le_bytes());
        h.update(self.hidden_sectors.to_le_bytes());
        for item in flatten(&self.root) {
            let (tag, data) = match item.kind {
                Kind::Dir(_) => (b'D', None),
                Kind::File(d) => (b'F', Some(d)),
            };
            if item.parent.is_none() {
                continue;
            }
            h.update([tag]);
            // Paths are at most MAX_PATH_LEN (255) bytes.
            h.update((item.path.len() as u16).to_le_bytes());
            h.update(item.path.as_bytes());
            if let Some(d) = data {
                h.update((d.len() as u64).to_le_bytes());
                h.update(d);
            }
        }
        let d = h.finalize();
        u32::from_le_bytes([d[0], d[1], d[2], d[3]])
    }

    /// Writes the whole volume (exactly [`size`](Self::size) bytes) to `w`. `w` should be
    /// buffered or a file; writes are at most one file's contents or 64 KiB at a time.
    pub fn write_to<W: Write>(&self, w: &mut W) -> Result<(), Error> {
        let mut w = Counting { inner: w, count: 0 };
        self.write_counted(&mut w)?;
        w.inner.flush()?;
        if w.count != self.size {
            return Err(Error::Internal("image size differs from the volume size"));
        }
        Ok(())
    }

    /// The whole volume in memory.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let len = usize::try_from(self.size).map_err(|_| Error::OutOfMemory(self.size))?;
        let mut v = Vec::new();
        v.try_reserve_exact(len)
            .map_err(|_| Error::OutOfMemory(self.size))?;
        self.write_to(&mut v)?;
        Ok(v)
    }

    fn write_counted<W: Write>(&self, w: &mut Counting<'_, W>) -> Result<(), Error> {
        let geo = &self.geo;
        let cb = geo.cluster_bytes();
        let mut items = flatten(&self.root);
        // Allocate clusters in pre-order.
        let mut next: u64 = 2;
        for item in &mut items {
            let clusters = match item.kind {
                Kind::Dir(d) => {
                    if item.parent.is_none() && self.fixed_root() {
                        0
                    } else {
                        let extra = if item.parent.is_none() { 1 } else { 2 };
                        self.dir_clusters(d.children.len() as u64 + extra)
                    }
                }
                Kind::File(d) => (d.len() as u64).div_ceil(cb),
            };
            if clusters > 0 {
                item.first = u32::try_from(next).map_err(|_| Error::Internal("cluster"))?;
                next += clusters;
            }
            item.clusters = clusters;
        }
        let used = next - 2;
        if used != self.used_clusters || used > u64::from(geo.clusters) {
            return Err(Error::Internal("cluster accounting"));
        }
        let free = u64::from(geo.clusters) - used;

        // Reserved region.
        let volume_id = self.volume_id();
        let boot = self.boot_sector(volume_id);
        let mut reserved = vec![0u8; geo.reserved_sectors as usize * SECTOR as usize];
        reserved[..512].copy_from_slice(&boot);
        if geo.fat_type == FatType::Fat32 {
            let next_free = if free > 0 { next as u32 } else { u32::MAX };
            let info = fs_info(free as u32, next_free);
            reserved[512..1024].copy_from_slice(&info);
            reserved[6 * 512..7 * 512].copy_from_slice(&boot);
            reserved[7 * 512..8 * 512].copy_from_slice(&info);
        }
        w.write_all(&reserved)?;

        // Two identical FATs.
        let fat = self.fat_bytes(&items, next)?;
        let fat_len = u64::from(geo.fat_sectors) * u64::from(SECTOR);
        let pad = fat_len
            .checked_sub(fat.len() as u64)
            .ok_or(Error::Internal("FAT too long"))?;
        for _ in 0..2 {
            w.write_all(&fat)?;
            write_zeros(w, pad)?;
        }

        // FAT12/16 root directory region.
        if self.fixed_root() {
            let root = self.dir_bytes(&items, 0);
            let len = u64::from(geo.root_dir_sectors) * u64::from(SECTOR);
            let pad = len
                .checked_sub(root.len() as u64)
                .ok_or(Error::Internal("root directory too long"))?;
            w.write_all(&root)?;
            write_zeros(w, pad)?;
        }

        // Data region, in allocation order.
        for (i, item) in items.iter().enumerate() {
            if item.clusters == 0 {
                continue;
            }
            let len = match item.kind {
                Kind::Dir(_) => {
                    let bytes = self.dir_bytes(&items, i);
                    w.write_all(&bytes)?;
                    bytes.len() as u64
                }
                Kind::File(d) => {
                    w.write_all(d)?;
                    d.len() as u64
                }
            };
            let pad = (item.clusters * cb)
                .checked_sub(len)
                .ok_or(Error::Internal("data longer than its clusters"))?;
            write_zeros(w, pad)?;
        }
        let rest = self
            .size
            .checked_sub(w.count)
            .ok_or(Error::Internal("image longer than the volume"))?;
        write_zeros(w, rest)
    }

    fn boot_sector(&self, volume_id: u32) -> [u8; 512] {
        let g = &self.geo;
        let mut b = [0u8; 512];
        let fat32 = g.fat_type == FatType::Fat32;
        // Jump over the BPB to the boot code: jmp short, nop.
        let code_at: usize = if fat32 { 90 } else { 62 };
        b[0] = 0xEB;
        b[1] = (code_at - 2) as u8;
        b[2] = 0x90;
        b[3..11].copy_from_slice(b"MSWIN4.1");
        put16(&mut b, 11, SECTOR as u16);
        b[13] = g.sectors_per_cluster as u8;
        put16(&mut b, 14, g.reserved_sectors as u16);
        b[16] = 2; // BPB_NumFATs
        put16(&mut b, 17, g.root_entries as u16);
        if !fat32 && g.total_sectors < 0x1_0000 {
            put16(&mut b, 19, g.total_sectors as u16);
        } else {
            put32(&mut b, 32, g.total_sectors);
        }
        b[21] = 0xF8; // BPB_Media: fixed disk
        if !fat32 {
            put16(&mut b, 22, g.fat_sectors as u16);
        }
        put16(&mut b, 24, 63); // BPB_SecPerTrk
        put16(&mut b, 26, 255); // BPB_NumHeads
        put32(&mut b, 28, self.hidden_sectors);
        let ext = if fat32 {
            put32(&mut b, 36, g.fat_sectors); // BPB_FATSz32
            put16(&mut b, 40, 0); // BPB_ExtFlags: FAT mirroring on
            put16(&mut b, 42, 0); // BPB_FSVer 0.0
            put32(&mut b, 44, 2); // BPB_RootClus
            put16(&mut b, 48, 1); // BPB_FSInfo
            put16(&mut b, 50, 6); // BPB_BkBootSec
            64
        } else {
            36
        };
        b[ext] = 0x80; // BS_DrvNum
        b[ext + 2] = 0x29; // BS_BootSig: the next three fields are present
        put32(&mut b, ext + 3, volume_id);
        b[ext + 7..ext + 18].copy_from_slice(&self.label);
        b[ext + 18..ext + 26].copy_from_slice(g.fat_type.label());
        // int 18h (no bootable OS: BIOS tries the next device); then hlt; jmp back to hlt.
        b[code_at..code_at + 5].copy_from_slice(&[0xCD, 0x18, 0xF4, 0xEB, 0xFD]);
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    /// FAT entries 0..`next` (everything after is 0, free), serialized.
    fn fat_bytes(&self, items: &[Item<'_>], next: u64) -> Result<Vec<u8>, Error> {
        let t = self.geo.fat_type;
        let n = usize::try_from(next).map_err(|_| Error::Internal("FAT"))?;
        let mut e = vec![0u32; n];
        e[0] = t.fat0();
        e[1] = t.eoc();
        for item in items {
            let (first, count) = (item.first as usize, item.clusters as usize);
            if count == 0 {
                continue;
            }
            let last = first + count - 1;
            if last >= n {
                return Err(Error::Internal("chain beyond the allocation"));
            }
            for (c, v) in (first + 1..).zip(&mut e[first..last]) {
                *v = c as u32;
            }
            e[last] = t.eoc();
        }
        let mut out = Vec::with_capacity((n * t.entry_bits() as usize).div_ceil(8));
        match t {
            FatType::Fat12 => {
                for pair in e.chunks(2) {
                    let a = pair[0];
                    let b = pair.get(1).copied().unwrap_or(0);
                    out.push(a as u8);
                    out.push(((a >> 8) & 0x0F) as u8 | ((b & 0x0F) << 4) as u8);
                    if pair.len() == 2 {
                        out.push((b >> 4) as u8);
                    }
                }
            }
            FatType::Fat16 => e.iter().for_each(|v| out.extend((*v as u16).to_le_bytes())),
            FatType::Fat32 => e.iter().for_each(|v| out.extend(v.to_le_bytes())),
        }
        Ok(out)
    }

    fn entry(&self, name: &[u8; 11], attr: u8, cluster: u32, size: u32) -> [u8; 32] {
        let mut e = [0u8; 32];
        let (date, time) = (self.time.fat_date(), self.time.fat_time());
        e[..11].copy_from_slice(name);
        e[11] = attr;
        // 12: NTRes 0, 13: CrtTimeTenth 0.
        put16(&mut e, 14, time); // DIR_CrtTime
        put16(&mut e, 16, date); // DIR_CrtDate
        put16(&mut e, 18, date); // DIR_LstAccDate
        put16(&mut e, 20, (cluster >> 16) as u16); // DIR_FstClusHI
        put16(&mut e, 22, time); // DIR_WrtTime
        put16(&mut e, 24, date); // DIR_WrtDate
        put16(&mut e, 26, cluster as u16); // DIR_FstClusLO
        put32(&mut e, 28, size);
        e
    }

    /// The entries of directory `items[i]` (not padded).
    fn dir_bytes(&self, items: &[Item<'_>], i: usize) -> Vec<u8> {
        let item = &items[i];
        let mut out = Vec::with_capacity((item.children.len() + 2) * 32);
        match item.parent {
            None => out.extend(self.entry(&self.label, ATTR_VOLUME_ID, 0, 0)),
            Some(p) => {
                out.extend(self.entry(b".          ", ATTR_DIRECTORY, item.first, 0));
                // `..` of a directory in the root points to cluster 0, also on FAT32.
                let up = if items[p].parent.is_none() {
                    0
                } else {
                    items[p].first
                };
                out.extend(self.entry(b"..         ", ATTR_DIRECTORY, up, 0));
            }
        }
        for &c in &item.children {
            let child = &items[c];
            let (attr, size) = match child.kind {
                Kind::Dir(_) => (ATTR_DIRECTORY, 0),
                // File sizes were checked against MAX_FILE when added.
                Kind::File(d) => (ATTR_ARCHIVE, d.len() as u32),
            };
            out.extend(self.entry(&child.name, attr, child.first, size));
        }
        out
    }
}

enum Kind<'a> {
    Dir(&'a Dir),
    File(&'a [u8]),
}

/// One directory or file in allocation order.
struct Item<'a> {
    name: ShortName,
    path: String,
    kind: Kind<'a>,
    parent: Option<usize>,
    children: Vec<usize>,
    first: u32,
    clusters: u64,
}

/// The tree in pre-order, root first; children of each directory in on-disk name order.
fn flatten(root: &Dir) -> Vec<Item<'_>> {
    let mut items = vec![Item {
        name: [b' '; 11],
        path: String::new(),
        kind: Kind::Dir(root),
        parent: None,
        children: Vec::new(),
        first: 0,
        clusters: 0,
    }];
    // Depth is bounded by MAX_PATH_LEN (at most 128 levels).
    fn walk<'a>(dir: &'a Dir, me: usize, items: &mut Vec<Item<'a>>) {
        for (name, node) in &dir.children {
            let idx = items.len();
            let path = if items[me].parent.is_none() {
                name::display(name)
            } else {
                format!("{}/{}", items[me].path, name::display(name))
            };
            items[me].children.push(idx);
            let kind = match node {
                Node::Dir(d) => Kind::Dir(d),
                Node::File(f) => Kind::File(f),
            };
            items.push(Item {
                name: *name,
                path,
                kind,
                parent: Some(me),
                children: Vec::new(),
                first: 0,
                clusters: 0,
            });
            if let Node::Dir(d) = node {
                walk(d, idx, items);
            }
        }
    }
    walk(root, 0, &mut items);
    items
}

fn fs_info(free: u32, next_free: u32) -> [u8; 512] {
    let mut s = [0u8; 512];
    put32(&mut s, 0, 0x4161_5252); // FSI_LeadSig "RRaA"
    put32(&mut s, 484, 0x6141_7272); // FSI_StrucSig "rrAa"
    put32(&mut s, 488, free); // FSI_Free_Count
    put32(&mut s, 492, next_free); // FSI_Nxt_Free
    put32(&mut s, 508, 0xAA55_0000); // FSI_TrailSig
    s
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

struct Counting<'a, W: Write> {
    inner: &'a mut W,
    count: u64,
}

impl<W: Write> Counting<'_, W> {
    fn write_all(&mut self, buf: &[u8]) -> Result<(), Error> {
        self.inner.write_all(buf)?;
        self.count += buf.len() as u64;
        Ok(())
    }
}

fn write_zeros<W: Write>(w: &mut Counting<'_, W>, mut n: u64) -> Result<(), Error> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}
