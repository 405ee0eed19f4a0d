//! GUID Partition Table: a writer for the disks `cvmctl` builds, and a strict reader for the
//! agent, which finds its verity root on a disk the host hands it.
//!
//! Only 512-byte logical sectors are supported (what QEMU, and the clouds' virtio and NVMe disks,
//! present for the boot disk); a 4Kn disk is rejected because no primary header is found at
//! byte 512.
//!
//! The reader fails closed. The host writes the disk, so every field is hostile until checked:
//! the protective MBR, both headers (signature, revision, size, CRC, own LBA, usable range, entry
//! array placement) and both entry arrays (CRC), and every used entry (inside the usable range,
//! no overlap, no duplicate unique GUID, a well-formed name). Firmware and the kernel fall back to
//! the backup header when the primary is corrupt; we do not. A verity root is only ever written
//! by `cvmctl`, so a damaged primary is not wear but tampering, and guessing which copy the host
//! meant us to use gains nothing. For the same reason the backup must be present, valid and
//! identical to the primary. The backup is looked for where the primary says
//! (`alternate_lba`), not necessarily at the end of the disk, so an image copied onto a larger
//! disk still reads.
//!
//! Partition integrity is not the table's job: the verity root hash on the measured command line
//! decides whether a partition's contents are accepted. The table only has to be unambiguous.

use std::fmt;
use std::io;
use std::str::FromStr;

/// Logical sector size; the only one supported.
pub const SECTOR: u64 = 512;
/// Size of one partition entry, the only one accepted.
pub const ENTRY_SIZE: usize = 128;
/// Entries in the arrays we write, and the most we accept when reading.
pub const MAX_ENTRIES: usize = 128;
/// Partition starts are aligned to this (what every partitioning tool does today).
pub const ALIGNMENT: u64 = 1 << 20;
/// Longest partition name in UTF-16 code units.
pub const MAX_NAME_UNITS: usize = 36;

const HEADER_SIZE: usize = 92;
const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION: u32 = 0x0001_0000;
/// Sectors holding a full 128 × 128-byte entry array.
const ENTRY_ARRAY_SECTORS: u64 = (MAX_ENTRIES * ENTRY_SIZE) as u64 / SECTOR;

/// Partition type GUIDs `cvmctl rootfs` and `cvmctl disk` write (the Discoverable Partitions
/// Specification's, and UEFI's for the ESP).
pub mod types {
    use super::Guid;
    /// Root partition, x86-64.
    pub const ROOT_X86_64: Guid = Guid::from_u128(0x4f68bce3_e8cd_4db1_96e7_fbcaf984b709);
    /// dm-verity hash partition of the x86-64 root.
    pub const ROOT_X86_64_VERITY: Guid = Guid::from_u128(0x2c7357ed_ebd2_46d9_aec1_23d437ec2bf5);
    /// `/var` (the state disk).
    pub const VAR: Guid = Guid::from_u128(0x4d21b016_b534_45c2_a9fb_5c16e091fd2d);
    /// EFI System Partition (UEFI 2.10 §5.3.3), where `cvmctl disk` puts the UKI.
    pub const ESP: Guid = Guid::from_u128(0xc12a7328_f81f_11d2_ba4b_00a0c93ec93b);
}

/// A GUID, held in the byte order of its canonical text form ("RFC 4122 order": the text
/// `00112233-4455-…` is the bytes `00 11 22 33 44 55 …`). GPT stores the first three groups
/// little-endian; [`Guid::from_gpt_bytes`] and [`Guid::to_gpt_bytes`] convert.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid([u8; 16]);

impl Guid {
    pub const ZERO: Guid = Guid([0; 16]);

    pub const fn from_bytes(bytes: [u8; 16]) -> Guid {
        Guid(bytes)
    }

    /// The GUID whose canonical text is the 32 hex digits of `value`.
    pub const fn from_u128(value: u128) -> Guid {
        Guid(value.to_be_bytes())
    }

    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Reads GPT's mixed-endian layout.
    pub fn from_gpt_bytes(b: [u8; 16]) -> Guid {
        Guid(swap_mixed(b))
    }

    /// Writes GPT's mixed-endian layout.
    pub fn to_gpt_bytes(&self) -> [u8; 16] {
        swap_mixed(self.0)
    }

    /// The first 16 bytes of `bytes` as a GUID, taken verbatim. This is how systemd turns a
    /// verity root hash into partition UUIDs (`memcpy` into `sd_id128_t`, no version bits
    /// forced), so the data partition of root hash `0011…` has PARTUUID `0011…`.
    pub fn from_prefix(bytes: &[u8]) -> Option<Guid> {
        bytes.get(..16)?.try_into().ok().map(Guid)
    }

    /// A random-looking GUID derived from `seed`: SHA-256 truncated to 128 bits, with the
    /// version (4) and variant bits set so tools that check them see a well-formed UUID.
    pub fn derive(seed: &[u8]) -> Guid {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(seed);
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Guid(b)
    }
}

/// GPT (and Microsoft) store time_low, time_mid and time_hi_and_version little-endian; the
/// operation is its own inverse.
fn swap_mixed(mut b: [u8; 16]) -> [u8; 16] {
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// The text is not `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex digits, either case).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")]
pub struct GuidParseError {
    pub text: String,
}

impl FromStr for Guid {
    type Err = GuidParseError;

    fn from_str(s: &str) -> Result<Guid, GuidParseError> {
        let err = || GuidParseError {
            text: s.chars().take(64).collect(),
        };
        let raw = s.as_bytes();
        if raw.len() != 36 {
            return Err(err());
        }
        let mut out = [0u8; 16];
        let mut nibbles = 0usize;
        for (i, &c) in raw.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return Err(err());
                }
                continue;
            }
            let v = (c as char).to_digit(16).ok_or_else(err)? as u8;
            out[nibbles / 2] |= if nibbles.is_multiple_of(2) { v << 4 } else { v };
            nibbles += 1;
        }
        Ok(Guid(out))
    }
}

/// CRC-32 as GPT uses it (IEEE 802.3, reflected, init and final XOR 0xFFFFFFFF).
pub fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |crc, &b| {
        CRC_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// One used partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based slot in the entry array (the kernel's partition number).
    pub number: u32,
    pub type_guid: Guid,
    /// The PARTUUID.
    pub unique_guid: Guid,
    pub first_lba: u64,
    /// Inclusive, as on disk.
    pub last_lba: u64,
    pub attributes: u64,
    /// The PARTLABEL.
    pub name: String,
}

impl Partition {
    /// Byte offset of the partition on the disk.
    // Saturating: the reader guarantees sane values, but a caller may build a Partition by hand.
    pub fn offset(&self) -> u64 {
        self.first_lba.saturating_mul(SECTOR)
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        (self.last_lba.saturating_sub(self.first_lba))
            .saturating_add(1)
            .saturating_mul(SECTOR)
    }
}

/// A partition to lay out with [`Gpt::new`].
#[derive(Debug, Clone)]
pub struct NewPartition {
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub name: String,
    /// Bytes; a multiple of 512. The partition is exactly this big; only its start is aligned.
    pub size: u64,
}

/// A whole partition table: what [`read_gpt`] returns and what [`Gpt::write`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt {
    pub disk_guid: Guid,
    /// Size of the disk the table describes (the backup header is in its last sector).
    pub disk_size: u64,
    pub partitions: Vec<Partition>,
}

#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("cannot read {what} at byte {offset}")]
    Read {
        what: &'static str,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {what} at byte {offset}")]
    Write {
        what: &'static str,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("disk of {size} bytes is too small for a GPT")]
    DiskTooSmall { size: u64 },
    #[error("no protective MBR (boot signature or 0xEE partition missing)")]
    NoProtectiveMbr,
    #[error("{which} GPT header at LBA {lba}: {problem}")]
    BadHeader {
        which: &'static str,
        lba: u64,
        problem: String,
    },
    #[error(
        "{which} GPT header at LBA {lba}: header CRC {stored:#010x}, computed {computed:#010x}"
    )]
    HeaderCrc {
        which: &'static str,
        lba: u64,
        stored: u32,
        computed: u32,
    },
    #[error("{which} GPT entry array at LBA {lba}: CRC {stored:#010x}, computed {computed:#010x}")]
    EntriesCrc {
        which: &'static str,
        lba: u64,
        stored: u32,
        computed: u32,
    },
    #[error("backup GPT header does not match the primary: {what}")]
    BackupMismatch { what: &'static str },
    #[error(
        "partition {number} (LBA {first}..={last}) is outside the usable range {usable_first}..={usable_last}"
    )]
    PartitionOutOfRange {
        number: u32,
        first: u64,
        last: u64,
        usable_first: u64,
        usable_last: u64,
    },
    #[error("partitions {a} and {b} overlap")]
    Overlap { a: u32, b: u32 },
    #[error("partitions {a} and {b} have the same unique GUID {guid}")]
    DuplicateGuid { a: u32, b: u32, guid: Guid },
    #[error("partition {number} has a name that is not valid UTF-16")]
    BadName { number: u32 },
    #[error("partition name {name:?} is empty, contains NUL or is longer than 36 UTF-16 units")]
    NameInvalid { name: String },
    #[error("partition {name:?}: size {size} is zero or not a multiple of 512")]
    BadSize { name: String, size: u64 },
    #[error("{count} partitions requested, at most {MAX_ENTRIES} fit")]
    TooManyPartitions { count: usize },
    #[error("partition layout does not fit in 64-bit byte offsets")]
    TooLarge,
}

/// Reads and validates a disk's GPT (see the module doc for the rules) and returns its used
/// partitions in entry order. `read_at(offset, buf)` must fill all of `buf` from byte `offset`
/// (`FileExt::read_exact_at` does).
pub fn parse_gpt(
    read_at: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
    disk_size: u64,
) -> Result<Vec<Partition>, GptError> {
    read_gpt(read_at, disk_size).map(|gpt| gpt.partitions)
}

/// [`parse_gpt`], keeping the disk GUID as well.
pub fn read_gpt(
    mut read_at: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
    disk_size: u64,
) -> Result<Gpt, GptError> {
    let lbas = disk_size / SECTOR;
    // MBR, header, one entry sector, one usable sector, then the backup's entry sector and header.
    if lbas < 6 {
        return Err(GptError::DiskTooSmall { size: disk_size });
    }
    let last_lba = lbas - 1;
    let mut read = |what: &'static str, lba: u64, buf: &mut [u8]| {
        let offset = lba * SECTOR;
        read_at(offset, buf).map_err(|source| GptError::Read {
            what,
            offset,
            source,
        })
    };

    let mut mbr = [0u8; 512];
    read("protective MBR", 0, &mut mbr)?;
    check_protective_mbr(&mbr)?;

    let mut sector = [0u8; 512];
    read("primary GPT header", 1, &mut sector)?;
    let primary = Header::parse(&sector, "primary", 1, last_lba)?;
    let mut entries = vec![0u8; primary.entries_len()];
    read("primary GPT entries", primary.entries_lba, &mut entries)?;
    primary.check_entries_crc(&entries)?;

    read("backup GPT header", primary.alternate_lba, &mut sector)?;
    let backup = Header::parse(&sector, "backup", primary.alternate_lba, last_lba)?;
    primary.check_backup(&backup)?;
    let mut backup_entries = vec![0u8; backup.entries_len()];
    read(
        "backup GPT entries",
        backup.entries_lba,
        &mut backup_entries,
    )?;
    backup.check_entries_crc(&backup_entries)?;
    if backup_entries != entries {
        return Err(GptError::BackupMismatch {
            what: "entry array",
        });
    }

    let partitions = parse_entries(&entries, primary.first_usable, primary.last_usable)?;
    Ok(Gpt {
        disk_guid: primary.disk_guid,
        disk_size,
        partitions,
    })
}

fn check_protective_mbr(mbr: &[u8; 512]) -> Result<(), GptError> {
    if mbr[510..512] != [0x55, 0xAA] {
        return Err(GptError::NoProtectiveMbr);
    }
    // Any of the four slots may carry the 0xEE entry (UEFI 2.10 §5.2.3 only asks for one).
    let protective = (0..4).any(|i| mbr[446 + 16 * i + 4] == 0xEE);
    if !protective {
        return Err(GptError::NoProtectiveMbr);
    }
    Ok(())
}

/// The fields of a header that passed the per-header checks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    which: &'static str,
    my_lba: u64,
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Guid,
    entries_lba: u64,
    entry_count: u32,
    entries_crc: u32,
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn guid_at(b: &[u8], at: usize) -> Guid {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Guid::from_gpt_bytes(a)
}

impl Header {
    fn parse(
        sector: &[u8; 512],
        which: &'static str,
        lba: u64,
        last_lba: u64,
    ) -> Result<Header, GptError> {
        let bad = |problem: String| GptError::BadHeader {
            which,
            lba,
            problem,
        };
        if &sector[0..8] != SIGNATURE {
            return Err(bad("no \"EFI PART\" signature".into()));
        }
        let revision = le32(sector, 8);
        if revision != REVISION {
            return Err(bad(format!("revision {revision:#010x}, expected 1.0")));
        }
        let header_size = le32(sector, 12) as usize;
        if !(HEADER_SIZE..=sector.len()).contains(&header_size) {
            return Err(bad(format!("header size {header_size}")));
        }
        let stored = le32(sector, 16);
        let mut copy = *sector;
        copy[16..20].fill(0);
        let computed = crc32(&copy[..header_size]);
        if stored != computed {
            return Err(GptError::HeaderCrc {
                which,
                lba,
                stored,
                computed,
            });
        }
        if le32(sector, 20) != 0 {
            return Err(bad("reserved field is not zero".into()));
        }
        let h = Header {
            which,
            my_lba: le64(sector, 24),
            alternate_lba: le64(sector, 32),
            first_usable: le64(sector, 40),
            last_usable: le64(sector, 48),
            disk_guid: guid_at(sector, 56),
            entries_lba: le64(sector, 72),
            entry_count: le32(sector, 80),
            entries_crc: le32(sector, 88),
        };
        let entry_size = le32(sector, 84);
        if h.my_lba != lba {
            return Err(bad(format!("says it is at LBA {}", h.my_lba)));
        }
        if entry_size as usize != ENTRY_SIZE {
            return Err(bad(format!(
                "entry size {entry_size}, expected {ENTRY_SIZE}"
            )));
        }
        if h.entry_count as usize > MAX_ENTRIES {
            return Err(bad(format!(
                "{} entries, at most {MAX_ENTRIES} accepted",
                h.entry_count
            )));
        }
        if h.alternate_lba == h.my_lba || h.alternate_lba > last_lba || h.alternate_lba == 0 {
            return Err(bad(format!("alternate LBA {}", h.alternate_lba)));
        }
        if h.first_usable > h.last_usable || h.last_usable > last_lba {
            return Err(bad(format!(
                "usable range {}..={}",
                h.first_usable, h.last_usable
            )));
        }
        // Entry array sectors; at least one even with zero entries, to keep the ranges simple.
        let sectors = (h.entries_len() as u64).div_ceil(SECTOR).max(1);
        let (lo, hi) = (h.entries_lba, h.entries_lba.saturating_add(sectors - 1));
        let (header_lo, header_hi) = if h.my_lba < h.alternate_lba {
            // Primary: header, then entries, then the usable area, then the backup.
            (h.my_lba, h.first_usable)
        } else {
            // Backup: usable area, then entries, then this header.
            (h.last_usable, h.my_lba)
        };
        let placed = if h.my_lba < h.alternate_lba {
            lo > header_lo && hi < header_hi && h.last_usable < h.alternate_lba
        } else {
            lo > header_lo && hi < header_hi && h.first_usable > h.alternate_lba
        };
        if !placed {
            return Err(bad(format!(
                "entry array at LBA {lo}..={hi} or usable range {}..={} misplaced",
                h.first_usable, h.last_usable
            )));
        }
        Ok(h)
    }

    fn entries_len(&self) -> usize {
        self.entry_count as usize * ENTRY_SIZE
    }

    fn check_entries_crc(&self, entries: &[u8]) -> Result<(), GptError> {
        let computed = crc32(entries);
        if computed != self.entries_crc {
            return Err(GptError::EntriesCrc {
                which: self.which,
                lba: self.entries_lba,
                stored: self.entries_crc,
                computed,
            });
        }
        Ok(())
    }

    fn check_backup(&self, backup: &Header) -> Result<(), GptError> {
        let mismatch = |what| Err(GptError::BackupMismatch { what });
        if backup.alternate_lba != self.my_lba {
            return mismatch("alternate LBA");
        }
        if backup.disk_guid != self.disk_guid {
            return mismatch("disk GUID");
        }
        if (backup.first_usable, backup.last_usable) != (self.first_usable, self.last_usable) {
            return mismatch("usable range");
        }
        if (backup.entry_count, backup.entries_crc) != (self.entry_count, self.entries_crc) {
            return mismatch("entry count or CRC");
        }
        if backup.my_lba <= self.last_usable {
            return mismatch("backup inside the usable range");
        }
        Ok(())
    }
}

fn parse_entries(
    entries: &[u8],
    usable_first: u64,
    usable_last: u64,
) -> Result<Vec<Partition>, GptError> {
    let mut parts: Vec<Partition> = Vec::new();
    for (i, e) in entries.chunks_exact(ENTRY_SIZE).enumerate() {
        let type_guid = guid_at(e, 0);
        // An unused slot is one with a zero type GUID, whatever else it holds (UEFI 2.10 §5.3.3).
        if type_guid.is_zero() {
            continue;
        }
        let number = i as u32 + 1;
        let first = le64(e, 32);
        let last = le64(e, 40);
        if first > last || first < usable_first || last > usable_last {
            return Err(GptError::PartitionOutOfRange {
                number,
                first,
                last,
                usable_first,
                usable_last,
            });
        }
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let name = String::from_utf16(&units).map_err(|_| GptError::BadName { number })?;
        let p = Partition {
            number,
            type_guid,
            unique_guid: guid_at(e, 16),
            first_lba: first,
            last_lba: last,
            attributes: le64(e, 48),
            name,
        };
        for q in &parts {
            if p.first_lba <= q.last_lba && q.first_lba <= p.last_lba {
                return Err(GptError::Overlap {
                    a: q.number,
                    b: p.number,
                });
            }
            // A PARTUUID names one partition; two answers to one name is ambiguity the host
            // could exploit to pick which one we use.
            if p.unique_guid == q.unique_guid {
                return Err(GptError::DuplicateGuid {
                    a: q.number,
                    b: p.number,
                    guid: p.unique_guid,
                });
            }
        }
        parts.push(p);
    }
    Ok(parts)
}

fn align_up(v: u64, to: u64) -> Option<u64> {
    v.checked_add(to - 1).map(|x| x / to * to)
}

impl Gpt {
    /// Lays `parts` out in order: each starts on a 1 MiB boundary (the first at 1 MiB), has
    /// exactly its requested size, and the disk ends at the next 1 MiB boundary that leaves room
    /// for the backup entry array and header.
    pub fn new(disk_guid: Guid, parts: &[NewPartition]) -> Result<Gpt, GptError> {
        if parts.len() > MAX_ENTRIES {
            return Err(GptError::TooManyPartitions { count: parts.len() });
        }
        let mut cursor = ALIGNMENT;
        let mut partitions = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            let units = p.name.encode_utf16().count();
            if units == 0 || units > MAX_NAME_UNITS || p.name.contains('\0') {
                return Err(GptError::NameInvalid {
                    name: p.name.clone(),
                });
            }
            if p.size == 0 || p.size % SECTOR != 0 {
                return Err(GptError::BadSize {
                    name: p.name.clone(),
                    size: p.size,
                });
            }
            let start = align_up(cursor, ALIGNMENT).ok_or(GptError::TooLarge)?;
            let end = start.checked_add(p.size).ok_or(GptError::TooLarge)?;
            partitions.push(Partition {
                number: i as u32 + 1,
                type_guid: p.type_guid,
                unique_guid: p.unique_guid,
                first_lba: start / SECTOR,
                last_lba: end / SECTOR - 1,
                attributes: 0,
                name: p.name.clone(),
            });
            cursor = end;
        }
        let tail = (ENTRY_ARRAY_SECTORS + 1) * SECTOR;
        let disk_size = cursor
            .checked_add(tail)
            .and_then(|v| align_up(v, ALIGNMENT))
            .ok_or(GptError::TooLarge)?;
        Ok(Gpt {
            disk_guid,
            disk_size,
            partitions,
        })
    }

    fn last_lba(&self) -> u64 {
        self.disk_size / SECTOR - 1
    }

    fn entry_array(&self) -> Vec<u8> {
        let mut arr = vec![0u8; MAX_ENTRIES * ENTRY_SIZE];
        for p in &self.partitions {
            let Some(slot) = (p.number as usize)
                .checked_sub(1)
                .filter(|&i| i < MAX_ENTRIES)
            else {
                continue;
            };
            let e = &mut arr[slot * ENTRY_SIZE..(slot + 1) * ENTRY_SIZE];
            e[0..16].copy_from_slice(&p.type_guid.to_gpt_bytes());
            e[16..32].copy_from_slice(&p.unique_guid.to_gpt_bytes());
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
            for (unit, dst) in p
                .name
                .encode_utf16()
                .take(MAX_NAME_UNITS)
                .zip(e[56..128].chunks_exact_mut(2))
            {
                dst.copy_from_slice(&unit.to_le_bytes());
            }
        }
        arr
    }

    fn header(
        &self,
        my_lba: u64,
        alternate_lba: u64,
        entries_lba: u64,
        entries: &[u8],
    ) -> [u8; 512] {
        let last = self.last_lba();
        let mut h = [0u8; 512];
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&REVISION.to_le_bytes());
        h[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + ENTRY_ARRAY_SECTORS).to_le_bytes());
        h[48..56].copy_from_slice(&(last - ENTRY_ARRAY_SECTORS - 1).to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_gpt_bytes());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(MAX_ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&crc32(entries).to_le_bytes());
        let crc = crc32(&h[..HEADER_SIZE]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// The first 34 sectors of the disk: protective MBR, primary header, primary entry array.
    pub fn primary_bytes(&self) -> Vec<u8> {
        let entries = self.entry_array();
        let mut out = vec![0u8; ((2 + ENTRY_ARRAY_SECTORS) * SECTOR) as usize];
        let mbr = &mut out[..512];
        // One 0xEE partition covering the disk (capped at 32 bits), CHS fields as UEFI prescribes.
        let p = &mut mbr[446..462];
        p[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
        p[4] = 0xEE;
        p[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        p[8..12].copy_from_slice(&1u32.to_le_bytes());
        let size = u32::try_from(self.last_lba()).unwrap_or(u32::MAX);
        p[12..16].copy_from_slice(&size.to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        let header = self.header(1, self.last_lba(), 2, &entries);
        out[512..1024].copy_from_slice(&header);
        out[1024..].copy_from_slice(&entries);
        out
    }

    /// Byte offset of [`Gpt::backup_bytes`]: the last 33 sectors of the disk.
    pub fn backup_offset(&self) -> u64 {
        self.disk_size - (ENTRY_ARRAY_SECTORS + 1) * SECTOR
    }

    /// The last 33 sectors of the disk: backup entry array, then backup header.
    pub fn backup_bytes(&self) -> Vec<u8> {
        let entries = self.entry_array();
        let entries_lba = self.last_lba() - ENTRY_ARRAY_SECTORS;
        let header = self.header(self.last_lba(), 1, entries_lba, &entries);
        let mut out = entries;
        out.extend_from_slice(&header);
        out
    }

    /// Writes both tables through `write_at(offset, bytes)`. The disk must already be
    /// `disk_size` bytes long (or grow on write).
    pub fn write(
        &self,
        mut write_at: impl FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> Result<(), GptError> {
        write_at(0, &self.primary_bytes()).map_err(|source| GptError::Write {
            what: "primary GPT",
            offset: 0,
            source,
        })?;
        let offset = self.backup_offset();
        write_at(offset, &self.backup_bytes()).map_err(|source| GptError::Write {
            what: "backup GPT",
            offset,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Gpt {
        Gpt::new(
            "11111111-2222-3333-4444-555555555555".parse().unwrap(),
            &[
                NewPartition {
                    type_guid: types::ROOT_X86_64,
                    unique_guid: "00112233-4455-6677-8899-aabbccddeeff".parse().unwrap(),
                    name: "root-x86-64".into(),
                    size: 3 * 4096,
                },
                NewPartition {
                    type_guid: types::ROOT_X86_64_VERITY,
                    unique_guid: "ffeeddcc-bbaa-9988-7766-554433221100".parse().unwrap(),
                    name: "root-x86-64-verity".into(),
                    size: ALIGNMENT + 512,
                },
            ],
        )
        .unwrap()
    }

    fn image(gpt: &Gpt) -> Vec<u8> {
        let mut disk = vec![0u8; gpt.disk_size as usize];
        gpt.write(|off, b| {
            disk[off as usize..off as usize + b.len()].copy_from_slice(b);
            Ok(())
        })
        .unwrap();
        disk
    }

    fn parse_mem(disk: &[u8]) -> Result<Gpt, GptError> {
        read_gpt(
            |off, buf| {
                let src = usize::try_from(off)
                    .ok()
                    .and_then(|o| disk.get(o..o.checked_add(buf.len())?))
                    .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
                buf.copy_from_slice(src);
                Ok(())
            },
            disk.len() as u64,
        )
    }

    /// Recomputes both headers' CRCs (entries CRC first) after a test edited the image, so the
    /// hostile value reaches the checks behind the CRC.
    fn fix_crcs(disk: &mut [u8]) {
        let last = disk.len() / 512 - 1;
        for hdr_lba in [1usize, last] {
            let h = hdr_lba * 512;
            let entries_lba = le64(disk, h + 72) as usize;
            let count = (le32(disk, h + 80) as usize).min(MAX_ENTRIES);
            let arr = entries_lba
                .checked_mul(512)
                .and_then(|e| disk.get(e..e + count * ENTRY_SIZE));
            if let Some(arr) = arr {
                let crc = crc32(arr);
                disk[h + 88..h + 92].copy_from_slice(&crc.to_le_bytes());
            }
            disk[h + 16..h + 20].fill(0);
            let size = (le32(disk, h + 12) as usize).min(512);
            let crc = crc32(&disk[h..h + size]);
            disk[h + 16..h + 20].copy_from_slice(&crc.to_le_bytes());
        }
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn guid_text_and_disk_order() {
        let g: Guid = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709".parse().unwrap();
        assert_eq!(g, types::ROOT_X86_64);
        assert_eq!(g.to_string(), "4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
        assert_eq!(
            g.to_gpt_bytes(),
            [
                0xe3, 0xbc, 0x68, 0x4f, 0xcd, 0xe8, 0xb1, 0x4d, 0x96, 0xe7, 0xfb, 0xca, 0xf9, 0x84,
                0xb7, 0x09
            ]
        );
        assert_eq!(Guid::from_gpt_bytes(g.to_gpt_bytes()), g);
        for bad in [
            "",
            "4f68bce3e8cd4db196e7fbcaf984b709",
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b70",
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b7099",
            "4f68bce3-e8cd-4db1-96e7_fbcaf984b709",
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b70g",
            "+f68bce3-e8cd-4db1-96e7-fbcaf984b709",
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b7é",
        ] {
            assert!(bad.parse::<Guid>().is_err(), "{bad:?}");
        }
        assert_eq!(
            Guid::from_prefix(&[0xab; 32]).unwrap().to_string(),
            "abababab-abab-abab-abab-abababababab"
        );
        assert_eq!(Guid::from_prefix(&[0; 15]), None);
        let d = Guid::derive(b"x");
        assert_eq!(d.as_bytes()[6] >> 4, 4);
        assert_eq!(d.as_bytes()[8] >> 6, 2);
    }

    #[test]
    fn layout_is_aligned_and_exact() {
        let gpt = sample();
        let [a, b] = &gpt.partitions[..] else {
            panic!("two partitions")
        };
        assert_eq!((a.offset(), a.size()), (ALIGNMENT, 3 * 4096));
        assert_eq!((b.offset(), b.size()), (2 * ALIGNMENT, ALIGNMENT + 512));
        assert_eq!(gpt.disk_size % ALIGNMENT, 0);
        assert!(gpt.disk_size >= b.offset() + b.size() + 33 * 512);
    }

    #[test]
    fn round_trip() {
        let gpt = sample();
        let disk = image(&gpt);
        assert_eq!(parse_mem(&disk).unwrap(), gpt);
        // An image copied onto a bigger disk: the backup stays where the primary points.
        let mut grown = disk.clone();
        grown.resize(disk.len() + 5 * 512 * 1024, 0);
        let parsed = parse_mem(&grown).unwrap();
        assert_eq!(parsed.partitions, gpt.partitions);
    }

    #[test]
    fn writer_rejects_bad_requests() {
        let p = |name: &str, size| NewPartition {
            type_guid: types::VAR,
            unique_guid: Guid::derive(name.as_bytes()),
            name: name.into(),
            size,
        };
        let g = Guid::ZERO;
        assert!(matches!(
            Gpt::new(g, &[p("a", 0)]),
            Err(GptError::BadSize { .. })
        ));
        assert!(matches!(
            Gpt::new(g, &[p("a", 513)]),
            Err(GptError::BadSize { .. })
        ));
        assert!(matches!(
            Gpt::new(g, &[p(&"x".repeat(37), 512)]),
            Err(GptError::NameInvalid { .. })
        ));
        assert!(matches!(
            Gpt::new(g, &[p("a\0b", 512)]),
            Err(GptError::NameInvalid { .. })
        ));
        assert!(matches!(
            Gpt::new(g, &[p("a", u64::MAX - 511)]),
            Err(GptError::TooLarge)
        ));
        let many: Vec<_> = (0..129).map(|i| p(&i.to_string(), 512)).collect();
        assert!(matches!(
            Gpt::new(g, &many),
            Err(GptError::TooManyPartitions { count: 129 })
        ));
        // 36 units is the limit, counted in UTF-16 (an astral character takes two).
        assert!(Gpt::new(g, &[p(&"x".repeat(36), 512)]).is_ok());
        assert!(Gpt::new(g, &[p(&"😀".repeat(18), 512)]).is_ok());
        assert!(Gpt::new(g, &[p(&"😀".repeat(19), 512)]).is_err());
    }

    fn entry_off(disk: &[u8], primary: bool, n: usize) -> usize {
        let lba = if primary {
            2
        } else {
            disk.len() / 512 - 1 - ENTRY_ARRAY_SECTORS as usize
        };
        lba * 512 + n * ENTRY_SIZE
    }

    /// Applies `edit` to both entry arrays (so they stay equal) and fixes the CRCs.
    fn edit_entries(disk: &mut [u8], edit: impl Fn(&mut [u8])) {
        for primary in [true, false] {
            let off = entry_off(disk, primary, 0);
            edit(&mut disk[off..off + MAX_ENTRIES * ENTRY_SIZE]);
        }
        fix_crcs(disk);
    }

    fn expect_err(disk: &[u8], pred: impl Fn(&GptError) -> bool) {
        match parse_mem(disk) {
            Ok(g) => panic!("accepted: {g:?}"),
            Err(e) => assert!(pred(&e), "wrong error: {e}"),
        }
    }

    #[test]
    fn hostile_tables() {
        let good = image(&sample());
        let last = good.len() / 512 - 1;

        let mut d = good.clone();
        d[512 + 40] ^= 1; // first usable LBA, CRC left stale
        expect_err(&d, |e| matches!(e, GptError::HeaderCrc { lba: 1, .. }));

        let mut d = good.clone();
        d[entry_off(&good, true, 0) + 60] ^= 1; // a name byte
        expect_err(&d, |e| matches!(e, GptError::EntriesCrc { .. }));

        // Corrupt primary, intact backup: still refused.
        let mut d = good.clone();
        d[512..1024].fill(0);
        expect_err(&d, |e| matches!(e, GptError::BadHeader { lba: 1, .. }));

        let mut d = good.clone();
        d[last * 512 + 40] ^= 1;
        expect_err(&d, |e| matches!(e, GptError::HeaderCrc { .. }));

        let mut d = good.clone();
        d[510] = 0;
        expect_err(&d, |e| matches!(e, GptError::NoProtectiveMbr));

        // Huge entry count, CRC fixed so the count itself is judged.
        let mut d = good.clone();
        d[512 + 80..512 + 84].copy_from_slice(&0x10000u32.to_le_bytes());
        fix_crcs(&mut d);
        expect_err(
            &d,
            |e| matches!(e, GptError::BadHeader { problem, .. } if problem.contains("entries")),
        );

        let mut d = good.clone();
        d[512 + 84..512 + 88].copy_from_slice(&256u32.to_le_bytes());
        fix_crcs(&mut d);
        expect_err(
            &d,
            |e| matches!(e, GptError::BadHeader { problem, .. } if problem.contains("entry size")),
        );

        let mut d = good.clone();
        d[512 + 12..512 + 16].copy_from_slice(&600u32.to_le_bytes());
        expect_err(&d, |e| matches!(e, GptError::BadHeader { .. }));

        let mut d = good.clone();
        d[512 + 8] = 1; // revision
        fix_crcs(&mut d);
        expect_err(&d, |e| matches!(e, GptError::BadHeader { .. }));

        let mut d = good.clone();
        d[512 + 24] = 7; // my_lba
        fix_crcs(&mut d);
        expect_err(&d, |e| matches!(e, GptError::BadHeader { .. }));

        // Overlap: the second partition starts inside the first.
        let mut d = good.clone();
        let first = le64(&good, entry_off(&good, true, 0) + 32);
        edit_entries(&mut d, |arr| {
            arr[ENTRY_SIZE + 32..ENTRY_SIZE + 40].copy_from_slice(&(first + 1).to_le_bytes())
        });
        expect_err(&d, |e| matches!(e, GptError::Overlap { a: 1, b: 2 }));

        // Beyond the disk / usable range.
        let mut d = good.clone();
        edit_entries(&mut d, |arr| {
            arr[ENTRY_SIZE + 40..ENTRY_SIZE + 48].copy_from_slice(&(last as u64).to_le_bytes())
        });
        expect_err(&d, |e| {
            matches!(e, GptError::PartitionOutOfRange { number: 2, .. })
        });

        let mut d = good.clone();
        edit_entries(&mut d, |arr| {
            arr[32..40].copy_from_slice(&5u64.to_le_bytes())
        });
        expect_err(&d, |e| {
            matches!(e, GptError::PartitionOutOfRange { number: 1, .. })
        });

        // first > last
        let mut d = good.clone();
        edit_entries(&mut d, |arr| {
            arr[40..48].copy_from_slice(&2047u64.to_le_bytes())
        });
        expect_err(&d, |e| matches!(e, GptError::PartitionOutOfRange { .. }));

        // Same PARTUUID twice.
        let mut d = good.clone();
        edit_entries(&mut d, |arr| {
            let (a, b) = arr.split_at_mut(ENTRY_SIZE);
            b[16..32].copy_from_slice(&a[16..32]);
        });
        expect_err(&d, |e| matches!(e, GptError::DuplicateGuid { .. }));

        // Lone surrogate in a name.
        let mut d = good.clone();
        edit_entries(&mut d, |arr| {
            arr[56..58].copy_from_slice(&0xD800u16.to_le_bytes())
        });
        expect_err(&d, |e| matches!(e, GptError::BadName { number: 1 }));

        // Backup entries differ from the primary's (each CRC valid on its own).
        let mut d = good.clone();
        let off = entry_off(&good, false, 0) + 60;
        d[off] ^= 1;
        fix_crcs(&mut d);
        expect_err(&d, |e| matches!(e, GptError::BackupMismatch { .. }));

        // Backup missing altogether.
        let mut d = good.clone();
        d[last * 512..].fill(0);
        expect_err(&d, |e| {
            matches!(
                e,
                GptError::BadHeader {
                    which: "backup",
                    ..
                }
            )
        });

        // Disk smaller than the table says.
        expect_err(&good[..good.len() - 512 * 1024], |e| {
            matches!(e, GptError::BadHeader { .. })
        });
        expect_err(&good[..1024], |e| {
            matches!(e, GptError::DiskTooSmall { .. })
        });

        // Entry array pointed into the usable area.
        let mut d = good.clone();
        d[512 + 72..512 + 80].copy_from_slice(&2048u64.to_le_bytes());
        fix_crcs(&mut d);
        expect_err(&d, |e| matches!(e, GptError::BadHeader { .. }));
    }

    fn sgdisk(args: &[&str]) -> std::process::Output {
        std::process::Command::new("sgdisk")
            .args(args)
            .output()
            .expect("sgdisk (gdisk) must be installed: these tests hold our tables to it")
    }

    /// sgdisk, told the same GUIDs, names and extents, writes the same table: both headers and
    /// both entry arrays byte for byte, and it finds no problem in ours.
    #[test]
    fn same_bytes_as_sgdisk() {
        let gpt = sample();
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours.img");
        let theirs = dir.path().join("theirs.img");
        std::fs::write(&ours, image(&gpt)).unwrap();
        let f = std::fs::File::create(&theirs).unwrap();
        f.set_len(gpt.disk_size).unwrap();
        drop(f);
        let mut args = vec![format!("--disk-guid={}", gpt.disk_guid)];
        for p in &gpt.partitions {
            let n = p.number;
            args.push(format!("--new={n}:{}:{}", p.first_lba, p.last_lba));
            args.push(format!("--typecode={n}:{}", p.type_guid));
            args.push(format!("--partition-guid={n}:{}", p.unique_guid));
            args.push(format!("--change-name={n}:{}", p.name));
        }
        args.push(theirs.to_str().unwrap().into());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sgdisk(&argv);
        assert!(out.status.success(), "{out:?}");

        let a = std::fs::read(&ours).unwrap();
        let b = std::fs::read(&theirs).unwrap();
        assert_eq!(a.len(), b.len());
        let tail = a.len() - 33 * 512;
        assert!(
            a[512..34 * 512] == b[512..34 * 512],
            "primary header or entries differ"
        );
        assert!(a[tail..] == b[tail..], "backup entries or header differ");
        // The MBR too, except the ending CHS: sgdisk computes one for small disks, we write
        // 0xFFFFFF as libfdisk (sfdisk, systemd-repart) does; UEFI allows both.
        assert!(a[446..451] == b[446..451], "protective MBR differs");
        assert!(a[454..512] == b[454..512], "protective MBR differs");

        let v = sgdisk(&["-v", ours.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&v.stdout);
        assert!(
            v.status.success() && text.contains("No problems found"),
            "{text}"
        );
    }

    #[test]
    fn read_errors_carry_the_offset() {
        let err = read_gpt(|_, _| Err(io::Error::other("boom")), 1 << 20).unwrap_err();
        assert!(matches!(err, GptError::Read { offset: 0, .. }));
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_disks(
            bytes in proptest::collection::vec(any::<u8>(), 0..8192),
            size in any::<u64>(),
        ) {
            let _ = read_gpt(|off, buf| {
                let src = usize::try_from(off).ok()
                    .and_then(|o| bytes.get(o..o.checked_add(buf.len())?))
                    .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
                buf.copy_from_slice(src);
                Ok(())
            }, size);
        }

        #[test]
        fn never_panics_on_mutated_tables(
            edits in proptest::collection::vec((0usize..(34 * 512), any::<u8>()), 1..16),
            in_backup in any::<bool>(),
            fix in any::<bool>(),
        ) {
            let mut d = image(&sample());
            let base = if in_backup { d.len() - 34 * 512 } else { 0 };
            for (at, v) in edits {
                d[base + at] = v;
            }
            if fix {
                fix_crcs(&mut d);
            }
            if let Ok(g) = parse_mem(&d) {
                // Whatever is accepted must still satisfy the invariants.
                for p in &g.partitions {
                    prop_assert!(p.first_lba <= p.last_lba);
                    prop_assert!(p.offset() + p.size() <= d.len() as u64);
                }
            }
        }
    }
}
