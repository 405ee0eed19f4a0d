//! `cvmctl disk`: the bootable disk a cloud or QEMU starts — an EFI System Partition holding the
//! UKI as `\EFI\BOOT\BOOTX64.EFI` (the removable-media path every UEFI firmware tries), then the
//! verity root taken unchanged from a `cvmctl rootfs` image.
//!
//! ```text
//! LBA 0..33     protective MBR, primary GPT
//! 1 MiB         1 esp                 FAT32 (cvm-fat), /EFI/BOOT/BOOTX64.EFI = the UKI
//! next 1 MiB    2 root-x86-64         the rootfs image's data partition, byte for byte
//! next 1 MiB    3 root-x86-64-verity  the rootfs image's hash partition, byte for byte
//! end           backup GPT
//! ```
//!
//! Why every byte is fixed: the firmware measures the GPT (header and used entries) into PCR 5
//! and the UKI into PCR 4, so a disk that differs on rebuild is a disk whose PCRs cannot be
//! published in advance. Nothing here is random or read from the clock:
//! - the ESP is a [`cvm_fat`] image: every FAT timestamp 1980-01-01 00:00:00 (the FAT minimum;
//!   nothing reads them), label `ESP`, sorted entries, volume serial derived from the content;
//! - the disk GUID and the ESP's PARTUUID are derived from the content ([`derive_guids`]):
//!   `Guid::derive(domain ‖ SHA-256(UKI) ‖ root hash ‖ ESP size as u64 LE)` with the domain
//!   strings [`DISK_GUID_DOMAIN`] and [`ESP_GUID_DOMAIN`] (SHA-256 truncated to 128 bits,
//!   UUID version 4 and variant bits set). One changed byte of the UKI or of the root (which
//!   changes its root hash) gives another disk GUID; the two domains keep the two GUIDs apart.
//! - the root partitions keep their bytes, type GUIDs, PARTUUIDs (the two halves of the root
//!   hash), names and attributes: the agent finds its root by type and PARTUUID from
//!   `roothash=` and demands that each partition is exactly as big as the verity superblock
//!   says, so their sizes are kept exactly too (only their starts move, to 1 MiB boundaries).
//!
//! The rootfs image is host input and checked before anything is written: the strict GPT
//! reader of `cvm-disk` (both headers, CRCs, overlaps), exactly one root and one root-verity
//! partition and nothing else, a valid verity superblock whose data and hash sizes equal the
//! partitions', and the hash tree recomputed over the data partition: its root must be the
//! root hash the PARTUUIDs carry, its bytes those of the hash partition. When the UKI's
//! `.cmdline` has `roothash=`, it must be that root hash too — a disk whose command line names
//! another root would only fail at boot.
//!
//! Formats (`--format`): the same partitions in three containers, one per cloud's import path.
//! - `raw` (default; QEMU, and AWS `import-snapshot` with `Format=RAW`): the disk as laid out,
//!   ending at the first 1 MiB boundary after the backup GPT.
//! - `vhd` (Azure): a fixed VHD ([`crate::vhd`]): the raw disk grown to a whole number of MiB
//!   that the VHD's CHS geometry covers exactly (so every VHD reader sees the same size), then
//!   the 512-byte footer, whose unique id is derived from the SHA-256 of the raw disk.
//! - `gce` (GCP): `disk.raw` stored sparse in an old-GNU tar.gz ([`crate::gce`]), the raw disk
//!   grown to a whole GiB, as Compute Engine sizes its disks.
//!
//! A grown disk is not the raw one with zeros appended: the GPT is laid out for the new size,
//! so the backup header sits in the new last sector where firmware and `sgdisk` look for it.
//! That changes the GPT's last-LBA fields and so PCR 5, per format; the partitions, and with
//! them PCRs 4, 9, 11 and 12, stay the same.
//!
//! The ESP size rule (when none is given): the smallest whole number of MiB that is at least
//! [`MIN_ESP_SIZE`] (64 MiB: FAT32 with 512-byte clusters and about 131,000 clusters, far
//! from the FAT16/FAT32 boundary of 65,525 that some drivers get wrong, and what cvm-fat's
//! OVMF test boots) and at least the UKI plus a quarter plus 1 MiB (the two FATs take 1/64 of
//! the volume at this cluster size; the rest is margin).

use crate::{gce, vhd};
use cvm_disk::gpt::{self, Guid, NewPartition, Partition};
use cvm_disk::verity::{self, BLOCK_SIZE, Superblock};
use cvm_fat::{FatImage, FatTime};
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Where the firmware looks for a boot loader on removable media (UEFI 2.10 §3.5.1.1).
pub const UKI_PATH: &str = "/EFI/BOOT/BOOTX64.EFI";
/// The FAT volume label of the ESP.
pub const ESP_LABEL: &str = "ESP";
/// The ESP's GPT partition name (systemd-repart's default for the type).
pub const ESP_PARTITION_NAME: &str = "esp";
/// The smallest ESP the default rule picks.
pub const MIN_ESP_SIZE: u64 = 64 << 20;
/// The largest UKI read: FAT32 holds files below 4 GiB, and a UKI near that is a mistake.
pub const MAX_UKI_SIZE: u64 = 1 << 30;
/// Domain separation of the disk GUID derivation.
pub const DISK_GUID_DOMAIN: &[u8] = b"cvm-agent boot disk guid v1\0";
/// Domain separation of the ESP PARTUUID derivation.
pub const ESP_GUID_DOMAIN: &[u8] = b"cvm-agent boot disk esp guid v1\0";

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Reads of the finished disk (hashing, archiving) go in chunks of this size.
const READ_CHUNK: usize = 1 << 20;

/// Writes of the ESP skip all-zero chunks of this size, so the output stays sparse.
const ZERO_CHUNK: usize = 64 << 10;

/// The container the disk is written in (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DiskFormat {
    /// The raw disk (QEMU; AWS import-snapshot Format=RAW).
    #[default]
    Raw,
    /// `disk.raw`, sparse, in an old-GNU tar.gz, grown to a whole GiB (GCP `images create`).
    Gce,
    /// A fixed VHD, grown to a whole MiB that its CHS geometry covers exactly (Azure).
    Vhd,
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Gce => "gce",
            DiskFormat::Vhd => "vhd",
        })
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct DiskSpec {
    /// The UKI (`cvmctl uki`).
    pub uki: PathBuf,
    /// The verity root image (`cvmctl rootfs`).
    pub rootfs: PathBuf,
    /// ESP size in bytes (a multiple of 1 MiB); `None`: [`default_esp_size`].
    pub esp_size: Option<u64>,
    pub format: DiskFormat,
    pub output: PathBuf,
}

/// One partition of the written disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartReport {
    pub number: u32,
    pub name: String,
    pub type_guid: Guid,
    pub partuuid: Guid,
    pub offset: u64,
    pub size: u64,
}

/// What was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskReport {
    pub output: PathBuf,
    pub format: DiskFormat,
    /// The raw disk's size (for `vhd` and `gce` after growing).
    pub disk_size: u64,
    /// The output file's size: `disk_size`, plus the footer (`vhd`), or the tar.gz (`gce`).
    pub image_size: u64,
    /// The VHD footer's unique id (`vhd` only).
    pub vhd_unique_id: Option<Guid>,
    pub disk_guid: Guid,
    /// ESP, root, root-verity, in table order.
    pub partitions: Vec<PartReport>,
    /// The FAT volume serial of the ESP.
    pub esp_volume_id: u32,
    pub uki_size: u64,
    pub uki_sha256: String,
    /// Lowercase hex, from the root partitions' PARTUUIDs (and recomputed from their bytes).
    pub root_hash: String,
    /// Whether the UKI's `.cmdline` names the root hash (`roothash=`); when false it has no
    /// `roothash=` at all (a different one is an error).
    pub cmdline_has_roothash: bool,
}

/// Summary for the console: the disk GUID on the first line, one line per partition.
impl fmt::Display for DiskReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {}{} bytes, disk GUID {}",
            self.output.display(),
            if self.format == DiskFormat::Raw {
                ""
            } else {
                "a disk of "
            },
            self.disk_size,
            self.disk_guid
        )?;
        match self.format {
            DiskFormat::Raw => {}
            DiskFormat::Gce => writeln!(
                f,
                "format gce: {} in a GNU tar.gz of {} bytes",
                gce::MEMBER,
                self.image_size
            )?,
            DiskFormat::Vhd => writeln!(
                f,
                "format vhd: fixed VHD of {} bytes, unique id {}",
                self.image_size,
                self.vhd_unique_id.unwrap_or(Guid::ZERO)
            )?,
        }
        for p in &self.partitions {
            writeln!(
                f,
                "  {} {:<19} offset {:>12}  size {:>12}  PARTUUID {}",
                p.number, p.name, p.offset, p.size, p.partuuid
            )?;
        }
        writeln!(
            f,
            "ESP: FAT volume id {:08X}, {UKI_PATH} = UKI of {} bytes, sha256 {}",
            self.esp_volume_id, self.uki_size, self.uki_sha256
        )?;
        write!(f, "root hash {}", self.root_hash)?;
        if !self.cmdline_has_roothash {
            write!(
                f,
                "\nnote: the UKI's command line has no roothash=: the agent will not find this root by itself"
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("UKI {}: {size} bytes, more than {MAX_UKI_SIZE}", path.display())]
    UkiTooLarge { path: PathBuf, size: u64 },
    #[error("UKI {}: not a PE image", path.display())]
    UkiNotPe {
        path: PathBuf,
        #[source]
        source: cvm_uki::PeError,
    },
    #[error("UKI {}: no .linux section, so not a unified kernel image", path.display())]
    UkiNoLinux { path: PathBuf },
    #[error(
        "UKI {}: its command line has roothash={cmdline}, but the rootfs image's root hash is {disk}",
        path.display()
    )]
    CmdlineRootHash {
        path: PathBuf,
        cmdline: String,
        disk: String,
    },
    #[error("UKI {}: its command line has roothash= more than once", path.display())]
    CmdlineRootHashTwice { path: PathBuf },
    #[error("rootfs image {}: bad partition table", path.display())]
    RootfsTable {
        path: PathBuf,
        #[source]
        source: gpt::GptError,
    },
    #[error("rootfs image {}: {problem}", path.display())]
    RootfsPartitions { path: PathBuf, problem: String },
    #[error("rootfs image {}: bad verity superblock in partition {number}", path.display())]
    Superblock {
        path: PathBuf,
        number: u32,
        #[source]
        source: verity::VerityError,
    },
    #[error("rootfs image {}: cannot hash the data partition", path.display())]
    Hashing {
        path: PathBuf,
        #[source]
        source: verity::VerityError,
    },
    #[error(
        "rootfs image {}: the data hashes to root hash {computed}, but the PARTUUIDs say {named}",
        path.display()
    )]
    RootHashMismatch {
        path: PathBuf,
        computed: String,
        named: String,
    },
    #[error("rootfs image {}: the hash partition is not the hash tree of the data partition", path.display())]
    HashTreeMismatch { path: PathBuf },
    #[error("ESP size of {size} bytes: not a positive multiple of 1 MiB")]
    BadEspSize { size: u64 },
    #[error("cannot put the UKI {} on a {size}-byte ESP", path.display())]
    Esp {
        path: PathBuf,
        size: u64,
        #[source]
        source: cvm_fat::Error,
    },
    #[error("cannot lay out the partition table of {}", path.display())]
    Gpt {
        path: PathBuf,
        #[source]
        source: gpt::GptError,
    },
    #[error("{}: the written disk does not read back as built", path.display())]
    ReadBack { path: PathBuf },
    #[error("a {size}-byte disk cannot be grown to the {format} format's size")]
    TooLargeForFormat { size: u64, format: DiskFormat },
}

/// The default ESP size for a UKI of `uki_len` bytes (the rule in the module doc).
pub fn default_esp_size(uki_len: u64) -> u64 {
    let mib = u128::from(MIB);
    let need = u128::from(uki_len) * 5 / 4 + mib;
    u64::try_from(need.div_ceil(mib) * mib)
        .unwrap_or(u64::MAX / MIB * MIB)
        .max(MIN_ESP_SIZE)
}

/// The disk GUID and the ESP's PARTUUID (see the module doc).
pub fn derive_guids(uki_sha256: &[u8; 32], root_hash: &[u8; 32], esp_size: u64) -> (Guid, Guid) {
    let mut m = Vec::with_capacity(72);
    m.extend_from_slice(uki_sha256);
    m.extend_from_slice(root_hash);
    m.extend_from_slice(&esp_size.to_le_bytes());
    let derive = |domain: &[u8]| Guid::derive(&[domain, &m].concat());
    (derive(DISK_GUID_DOMAIN), derive(ESP_GUID_DOMAIN))
}

/// The checked root of a `cvmctl rootfs` image.
struct Root {
    file: File,
    data: Partition,
    hash: Partition,
    hash_bytes: Vec<u8>,
    root_hash: [u8; 32],
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DiskError {
    let path = path.to_path_buf();
    move |source| DiskError::Io { what, path, source }
}

fn read_uki(path: &Path) -> Result<Vec<u8>, DiskError> {
    let file = File::open(path).map_err(io_err("cannot open", path))?;
    let size = file.metadata().map_err(io_err("cannot stat", path))?.len();
    if size > MAX_UKI_SIZE {
        return Err(DiskError::UkiTooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    let mut bytes = Vec::new();
    // One byte more than the limit: a file that grew since the stat is still refused.
    file.take(MAX_UKI_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("cannot read", path))?;
    if bytes.len() as u64 > MAX_UKI_SIZE {
        return Err(DiskError::UkiTooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// The `roothash=` of the UKI's `.cmdline`, if any; a UKI without `.linux` is refused.
fn uki_roothash(path: &Path, uki: &[u8]) -> Result<Option<String>, DiskError> {
    let not_pe = |source| DiskError::UkiNotPe {
        path: path.to_path_buf(),
        source,
    };
    let img = cvm_uki::pe::PeImage::parse(uki).map_err(not_pe)?;
    if img.section(".linux").is_none() {
        return Err(DiskError::UkiNoLinux {
            path: path.to_path_buf(),
        });
    }
    let Some(section) = img.section(".cmdline") else {
        return Ok(None);
    };
    let cmdline = section.memory_contents(uki).map_err(not_pe)?;
    let end = cmdline
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(cmdline.len());
    let text = String::from_utf8_lossy(&cmdline[..end]);
    let mut found = text
        .split(|c: char| c.is_ascii_whitespace() || c.is_ascii_control())
        .filter_map(|w| w.strip_prefix("roothash="));
    let first = found.next().map(str::to_string);
    if found.next().is_some() {
        return Err(DiskError::CmdlineRootHashTwice {
            path: path.to_path_buf(),
        });
    }
    Ok(first)
}

/// Reads and checks the root of a `cvmctl rootfs` image (see the module doc).
fn read_root(path: &Path) -> Result<Root, DiskError> {
    let file = File::open(path).map_err(io_err("cannot open", path))?;
    let size = file.metadata().map_err(io_err("cannot stat", path))?.len();
    let table = gpt::read_gpt(|off, buf| file.read_exact_at(buf, off), size).map_err(|source| {
        DiskError::RootfsTable {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let problem = |problem: String| DiskError::RootfsPartitions {
        path: path.to_path_buf(),
        problem,
    };
    let mut data = None;
    let mut hash = None;
    for p in &table.partitions {
        let slot = match p.type_guid {
            t if t == gpt::types::ROOT_X86_64 => &mut data,
            t if t == gpt::types::ROOT_X86_64_VERITY => &mut hash,
            other => {
                return Err(problem(format!(
                    "partition {} has type {other}, neither root-x86-64 nor root-x86-64-verity \
                     (not a `cvmctl rootfs` image)",
                    p.number
                )));
            }
        };
        if slot.replace(p.clone()).is_some() {
            return Err(problem(format!(
                "more than one partition of type {}",
                p.type_guid
            )));
        }
    }
    let data = data.ok_or_else(|| problem("no root-x86-64 (data) partition".into()))?;
    let hash = hash.ok_or_else(|| problem("no root-x86-64-verity (hash) partition".into()))?;
    let mut root_hash = [0u8; 32];
    root_hash[..16].copy_from_slice(data.unique_guid.as_bytes());
    root_hash[16..].copy_from_slice(hash.unique_guid.as_bytes());

    let bad_sb = |source| DiskError::Superblock {
        path: path.to_path_buf(),
        number: hash.number,
        source,
    };
    let mut block = vec![0u8; verity::BLOCK_SIZE];
    let head = usize::try_from(hash.size())
        .unwrap_or(usize::MAX)
        .min(block.len());
    file.read_exact_at(&mut block[..head], hash.offset())
        .map_err(io_err("cannot read the hash partition of", path))?;
    let sb = Superblock::parse(&block[..head]).map_err(bad_sb)?;
    // The tree is recomputed below with the block size `cvmctl rootfs` writes.
    if (sb.data_block_size(), sb.hash_block_size()) != (BLOCK_SIZE as u32, BLOCK_SIZE as u32) {
        return Err(problem(format!(
            "verity blocks of {}/{} bytes (data/hash); cvmctl disk takes cvmctl rootfs images, whose blocks are {BLOCK_SIZE} bytes",
            sb.data_block_size(),
            sb.hash_block_size()
        )));
    }
    if sb.data_size() != data.size() {
        return Err(problem(format!(
            "data partition {} is {} bytes, the verity superblock covers {}",
            data.number,
            data.size(),
            sb.data_size()
        )));
    }
    if sb.hash_area_size() != hash.size() {
        return Err(problem(format!(
            "hash partition {} is {} bytes, the verity superblock needs {}",
            hash.number,
            hash.size(),
            sb.hash_area_size()
        )));
    }
    // Bounded by the partition, which the table bounded by the file; the tree computed below
    // is as large anyway.
    let hash_len = usize::try_from(hash.size()).map_err(|_| {
        problem(format!(
            "hash partition of {} bytes does not fit in memory",
            hash.size()
        ))
    })?;
    let mut hash_bytes = Vec::new();
    hash_bytes.try_reserve_exact(hash_len).map_err(|_| {
        problem(format!(
            "hash partition of {} bytes does not fit in memory",
            hash.size()
        ))
    })?;
    hash_bytes.resize(hash_len, 0);
    file.read_exact_at(&mut hash_bytes, hash.offset())
        .map_err(io_err("cannot read the hash partition of", path))?;

    let mut reader = &file;
    reader
        .seek(SeekFrom::Start(data.offset()))
        .map_err(io_err("cannot seek in", path))?;
    let tree = verity::build_hash_tree(&mut reader.take(data.size()), sb.data_blocks(), sb.salt())
        .map_err(|source| DiskError::Hashing {
            path: path.to_path_buf(),
            source,
        })?;
    if tree.root_hash() != &root_hash {
        return Err(DiskError::RootHashMismatch {
            path: path.to_path_buf(),
            computed: tree.root_hash_hex(),
            named: verity::to_hex(&root_hash),
        });
    }
    if tree.hash_area(sb.uuid()) != hash_bytes {
        return Err(DiskError::HashTreeMismatch {
            path: path.to_path_buf(),
        });
    }
    Ok(Root {
        file,
        data,
        hash,
        hash_bytes,
        root_hash,
    })
}

/// Builds the disk: checks both inputs, writes it under a temporary name next to the output,
/// reads its table back with the strict reader, then renames it into place.
pub fn build(spec: &DiskSpec) -> Result<DiskReport, DiskError> {
    let uki = read_uki(&spec.uki)?;
    let cmdline_roothash = uki_roothash(&spec.uki, &uki)?;
    let root = read_root(&spec.rootfs)?;
    let root_hex = verity::to_hex(&root.root_hash);
    if let Some(named) = &cmdline_roothash
        && !named.eq_ignore_ascii_case(&root_hex)
    {
        return Err(DiskError::CmdlineRootHash {
            path: spec.uki.clone(),
            cmdline: named.chars().take(128).collect(),
            disk: root_hex,
        });
    }
    let esp_size = match spec.esp_size {
        Some(size) if size == 0 || !size.is_multiple_of(MIB) => {
            return Err(DiskError::BadEspSize { size });
        }
        Some(size) => size,
        None => default_esp_size(uki.len() as u64),
    };
    let uki_sha256: [u8; 32] = Sha256::digest(&uki).into();
    let (disk_guid, esp_guid) = derive_guids(&uki_sha256, &root.root_hash, esp_size);

    let copy_of = |p: &Partition| NewPartition {
        type_guid: p.type_guid,
        unique_guid: p.unique_guid,
        name: p.name.clone(),
        size: p.size(),
    };
    let mut layout = gpt::Gpt::new(
        disk_guid,
        &[
            NewPartition {
                type_guid: gpt::types::ESP,
                unique_guid: esp_guid,
                name: ESP_PARTITION_NAME.into(),
                size: esp_size,
            },
            copy_of(&root.data),
            copy_of(&root.hash),
        ],
    )
    .map_err(|source| DiskError::Gpt {
        path: spec.output.clone(),
        source,
    })?;
    let [esp_part, data_part, hash_part] = &mut layout.partitions[..] else {
        return Err(DiskError::ReadBack {
            path: spec.output.clone(),
        });
    };
    data_part.attributes = root.data.attributes;
    hash_part.attributes = root.hash.attributes;
    let (esp_part, data_part, hash_part) = (esp_part.clone(), data_part.clone(), hash_part.clone());
    // Grown before anything is written, so the backup GPT goes to the grown disk's end.
    let laid_out = layout.disk_size;
    layout.disk_size = match spec.format {
        DiskFormat::Raw => Some(laid_out),
        DiskFormat::Vhd => vhd::virtual_size(laid_out),
        DiskFormat::Gce => laid_out.checked_next_multiple_of(GIB),
    }
    .ok_or(DiskError::TooLargeForFormat {
        size: laid_out,
        format: spec.format,
    })?;

    let esp_err = |source| DiskError::Esp {
        path: spec.uki.clone(),
        size: esp_size,
        source,
    };
    let mut esp = FatImage::new(esp_size, ESP_LABEL, FatTime::MIN).map_err(esp_err)?;
    // The partition's first LBA, as formatting tools record it (2048: the ESP comes first).
    esp.set_hidden_sectors(u32::try_from(esp_part.first_lba).unwrap_or(u32::MAX));
    let uki_size = uki.len() as u64;
    esp.add_file(UKI_PATH, uki).map_err(esp_err)?;
    let esp_bytes = esp.to_vec().map_err(esp_err)?;

    let tmp = temp_path(&spec.output);
    let guard = RemoveOnDrop(Some(tmp.clone()));
    let disk = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io_err("cannot create", &tmp))?;
    // Sparse: gaps and the ESP's free space cost nothing.
    disk.set_len(layout.disk_size)
        .map_err(io_err("cannot size", &tmp))?;
    layout
        .write(|offset, bytes| disk.write_all_at(bytes, offset))
        .map_err(|source| DiskError::Gpt {
            path: tmp.clone(),
            source,
        })?;
    for (i, chunk) in esp_bytes.chunks(ZERO_CHUNK).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            disk.write_all_at(chunk, esp_part.offset() + (i * ZERO_CHUNK) as u64)
                .map_err(io_err("cannot write the ESP to", &tmp))?;
        }
    }
    let mut src = &root.file;
    src.seek(SeekFrom::Start(root.data.offset()))
        .map_err(io_err("cannot seek in", &spec.rootfs))?;
    let mut dst = &disk;
    dst.seek(SeekFrom::Start(data_part.offset()))
        .map_err(io_err("cannot seek in", &tmp))?;
    // File to file: std uses copy_file_range, so the kernel copies (or reflinks).
    let copied = io::copy(&mut src.take(root.data.size()), &mut dst)
        .map_err(io_err("cannot copy the root partition to", &tmp))?;
    if copied != root.data.size() {
        return Err(DiskError::ReadBack { path: tmp });
    }
    disk.write_all_at(&root.hash_bytes, hash_part.offset())
        .map_err(io_err("cannot write the hash partition to", &tmp))?;

    let read_back = gpt::read_gpt(|off, buf| disk.read_exact_at(buf, off), layout.disk_size)
        .map_err(|source| DiskError::Gpt {
            path: tmp.clone(),
            source,
        })?;
    if read_back != layout {
        return Err(DiskError::ReadBack { path: tmp });
    }
    let (final_tmp, final_guard, image_size, vhd_unique_id) = match spec.format {
        DiskFormat::Raw => {
            disk.sync_all().map_err(io_err("cannot sync", &tmp))?;
            (tmp.clone(), guard, layout.disk_size, None)
        }
        DiskFormat::Vhd => {
            let sha = sha256_of(&disk, layout.disk_size, &tmp)?;
            let id = vhd::unique_id(&sha);
            disk.write_all_at(&vhd::footer(layout.disk_size, id), layout.disk_size)
                .map_err(io_err("cannot write the VHD footer to", &tmp))?;
            disk.sync_all().map_err(io_err("cannot sync", &tmp))?;
            let size = layout.disk_size + vhd::FOOTER_SIZE as u64;
            (tmp.clone(), guard, size, Some(id))
        }
        DiskFormat::Gce => {
            let archive = temp_path(&spec.output);
            let archive_guard = RemoveOnDrop(Some(archive.clone()));
            let out = File::options()
                .write(true)
                .create_new(true)
                .open(&archive)
                .map_err(io_err("cannot create", &archive))?;
            let size = layout.disk_size;
            let read_at = |offset, buf: &mut [u8]| disk.read_exact_at(buf, offset);
            // Holes read as zeros without the kernel zero-filling a GiB of page cache.
            let next_data = |offset: u64| {
                let at = i64::try_from(offset).unwrap_or(i64::MAX);
                match nix::unistd::lseek(&disk, at, nix::unistd::Whence::SeekData) {
                    Ok(found) => Ok(u64::try_from(found).unwrap_or(offset)),
                    Err(nix::errno::Errno::ENXIO) => Ok(size),
                    Err(e) => Err(io::Error::from(e)),
                }
            };
            let mut out = gce::write_tar_gz(read_at, next_data, size, BufWriter::new(out))
                .map_err(io_err("cannot write the GCE archive", &archive))?;
            out.flush()
                .map_err(io_err("cannot write the GCE archive", &archive))?;
            let out = out.into_inner().map_err(|e| DiskError::Io {
                what: "cannot write the GCE archive",
                path: archive.clone(),
                source: e.into_error(),
            })?;
            let size = out
                .metadata()
                .map_err(io_err("cannot stat", &archive))?
                .len();
            out.sync_all().map_err(io_err("cannot sync", &archive))?;
            // The raw disk was only the archive's source; its guard removes it.
            drop(guard);
            (archive, archive_guard, size, None)
        }
    };
    drop(disk);
    std::fs::rename(&final_tmp, &spec.output)
        .map_err(io_err("cannot move the disk into place at", &spec.output))?;
    final_guard.disarm();

    let partitions = layout
        .partitions
        .iter()
        .map(|p| PartReport {
            number: p.number,
            name: p.name.clone(),
            type_guid: p.type_guid,
            partuuid: p.unique_guid,
            offset: p.offset(),
            size: p.size(),
        })
        .collect();
    Ok(DiskReport {
        output: spec.output.clone(),
        format: spec.format,
        disk_size: layout.disk_size,
        image_size,
        vhd_unique_id,
        disk_guid,
        partitions,
        esp_volume_id: esp.volume_id(),
        uki_size,
        uki_sha256: verity::to_hex(&uki_sha256),
        root_hash: root_hex,
        cmdline_has_roothash: cmdline_roothash.is_some(),
    })
}

/// SHA-256 of the first `size` bytes of `file`, read in bounded chunks.
fn sha256_of(file: &File, size: u64, path: &Path) -> Result<[u8; 32], DiskError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut offset = 0u64;
    while offset < size {
        let n = usize::try_from(size - offset)
            .unwrap_or(READ_CHUNK)
            .min(READ_CHUNK);
        file.read_exact_at(&mut buf[..n], offset)
            .map_err(io_err("cannot read back", path))?;
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(hasher.finalize().into())
}

/// `.<name>.cvmctl-<pid>-<n>` next to `output`: same file system for the rename.
fn temp_path(output: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "disk".into());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    output.with_file_name(format!(".{name}.cvmctl-{}-{n}", std::process::id()))
}

/// Removes a half-written disk however `build` ends, unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esp_size_rule() {
        assert_eq!(default_esp_size(0), MIN_ESP_SIZE);
        assert_eq!(default_esp_size(30 << 20), MIN_ESP_SIZE);
        // 60 MiB + 15 MiB + 1 MiB = 76 MiB.
        assert_eq!(default_esp_size(60 << 20), 76 << 20);
        // Rounded up to whole MiB.
        assert_eq!(default_esp_size((60 << 20) + 1), 77 << 20);
        assert_eq!(default_esp_size(u64::MAX) % MIB, 0);
    }

    #[test]
    fn guids_depend_on_every_input_and_differ_from_each_other() {
        let (d, e) = derive_guids(&[1; 32], &[2; 32], MIN_ESP_SIZE);
        assert_ne!(d, e);
        assert_eq!((d, e), derive_guids(&[1; 32], &[2; 32], MIN_ESP_SIZE));
        let mut u = [1; 32];
        u[31] ^= 1;
        assert_ne!(derive_guids(&u, &[2; 32], MIN_ESP_SIZE).0, d);
        let mut r = [2; 32];
        r[0] ^= 0x80;
        assert_ne!(derive_guids(&[1; 32], &r, MIN_ESP_SIZE).0, d);
        assert_ne!(derive_guids(&[1; 32], &[2; 32], MIN_ESP_SIZE + MIB).0, d);
        // The rule written out.
        let mut m = DISK_GUID_DOMAIN.to_vec();
        m.extend_from_slice(&[1; 32]);
        m.extend_from_slice(&[2; 32]);
        m.extend_from_slice(&MIN_ESP_SIZE.to_le_bytes());
        let h = Sha256::digest(&m);
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        assert_eq!(d, Guid::from_bytes(b));
    }
}
