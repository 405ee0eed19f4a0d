//! The size rule: FAT type, cluster size and the sizes of the regions, from the volume size.

use crate::Error;

/// Bytes per sector; the only value every FAT implementation and UEFI firmware reads.
pub const SECTOR: u32 = 512;

/// Entries of the fixed FAT12/FAT16 root directory (fatgen103: "for maximum compatibility,
/// FAT16 volumes should use the value 512").
pub const ROOT_ENTRIES: u16 = 512;

/// Smallest volume formatted as FAT32, in sectors: fatgen103's `DskTableFAT32` treats anything
/// up to 66,600 sectors (32.5 MiB) as too small for FAT32.
pub const FAT32_MIN_SECTORS: u64 = 66_600;

/// Smallest volume formatted as FAT16, in sectors: fatgen103's `DskTableFAT16` treats anything
/// up to 8,400 sectors (4.1 MiB) as a FAT12 volume.
pub const FAT16_MIN_SECTORS: u64 = 8_400;

/// Largest FAT32 cluster count: cluster numbers run from 2 to 0x0FFFFFF6 (bad-cluster mark)
/// exclusive.
const FAT32_MAX_CLUSTERS: u64 = 0x0FFF_FFF5;

/// Which FAT the volume is; the type follows from the cluster count alone (fatgen103, "FAT Type
/// Determination": fewer than 4085 clusters is FAT12, fewer than 65525 FAT16, otherwise FAT32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FatType {
    /// 12-bit entries; volumes under 4.1 MiB.
    Fat12,
    /// 16-bit entries; volumes from 4.1 MiB to under 32.5 MiB.
    Fat16,
    /// 28-bit entries in 32-bit words; volumes of 32.5 MiB and more (what UEFI requires of an ESP
    /// on a fixed disk).
    Fat32,
}

impl FatType {
    pub(crate) fn entry_bits(self) -> u64 {
        match self {
            FatType::Fat12 => 12,
            FatType::Fat16 => 16,
            FatType::Fat32 => 32,
        }
    }

    /// End-of-chain mark written for the last cluster of every chain (and FAT[1]).
    pub(crate) fn eoc(self) -> u32 {
        match self {
            FatType::Fat12 => 0xFFF,
            FatType::Fat16 => 0xFFFF,
            FatType::Fat32 => 0x0FFF_FFFF,
        }
    }

    /// FAT[0]: the media byte (0xF8) in the low 8 bits, all other bits set.
    pub(crate) fn fat0(self) -> u32 {
        match self {
            FatType::Fat12 => 0xFF8,
            FatType::Fat16 => 0xFFF8,
            FatType::Fat32 => 0x0FFF_FFF8,
        }
    }

    /// The 8-byte `BS_FilSysType` text (informational only, per fatgen103).
    pub(crate) fn label(self) -> &'static [u8; 8] {
        match self {
            FatType::Fat12 => b"FAT12   ",
            FatType::Fat16 => b"FAT16   ",
            FatType::Fat32 => b"FAT32   ",
        }
    }

    fn cluster_range(self) -> (u64, u64) {
        match self {
            FatType::Fat12 => (1, 4084),
            FatType::Fat16 => (4085, 65_524),
            FatType::Fat32 => (65_525, FAT32_MAX_CLUSTERS),
        }
    }
}

/// The computed layout of a volume, in sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub fat_type: FatType,
    pub total_sectors: u32,
    pub sectors_per_cluster: u32,
    pub reserved_sectors: u32,
    /// Sectors of one FAT (there are two).
    pub fat_sectors: u32,
    /// Entries of the fixed root directory (FAT12/16) or 0 (FAT32).
    pub root_entries: u32,
    pub root_dir_sectors: u32,
    pub first_data_sector: u32,
    pub clusters: u32,
}

impl Geometry {
    pub fn cluster_bytes(&self) -> u64 {
        u64::from(self.sectors_per_cluster) * u64::from(SECTOR)
    }

    /// Computes the layout for a volume of `size` bytes, or says why there is none.
    pub fn for_size(size: u64) -> Result<Self, Error> {
        if !size.is_multiple_of(u64::from(SECTOR)) {
            return Err(Error::InvalidSize {
                size,
                reason: "not a multiple of 512 bytes",
            });
        }
        let sectors = size / u64::from(SECTOR);
        if sectors > u64::from(u32::MAX) {
            return Err(Error::InvalidSize {
                size,
                reason: "larger than 2 TiB - 512 bytes, the most a FAT32 BPB can describe",
            });
        }
        let (fat_type, spc, reserved, root_entries) = if sectors >= FAT32_MIN_SECTORS {
            // fatgen103 DskTableFAT32.
            let spc = match sectors {
                ..=532_480 => 1,
                532_481..=16_777_216 => 8,
                16_777_217..=33_554_432 => 16,
                33_554_433..=67_108_864 => 32,
                _ => 64,
            };
            (FatType::Fat32, spc, 32, 0)
        } else if sectors >= FAT16_MIN_SECTORS {
            // fatgen103 DskTableFAT16 (the rows below 32.5 MiB).
            let spc = if sectors <= 32_680 { 2 } else { 4 };
            (FatType::Fat16, spc, 1, u64::from(ROOT_ENTRIES))
        } else {
            // fatgen103 has no FAT12 table: the smallest of 1, 2, 4 sectors per cluster that keeps
            // the count under 4085 clusters (with a margin of more than 16).
            let spc = match sectors {
                ..=4_000 => 1,
                4_001..=8_100 => 2,
                _ => 4,
            };
            (FatType::Fat12, spc, 1, u64::from(ROOT_ENTRIES))
        };
        let root_dir_sectors = (root_entries * 32).div_ceil(u64::from(SECTOR));
        let too_small = Error::InvalidSize {
            size,
            reason: "too small to hold the boot sector, two FATs, the root directory and one cluster",
        };
        let bits = fat_type.entry_bits();
        // Size of one FAT: the smallest that holds an entry for every cluster that remains
        // beside it (plus the two reserved entries). `demand(f) <= f` is monotone (a larger
        // FAT leaves fewer clusters), so a binary search finds it; what a one-sector FAT would
        // demand is an upper bound.
        let demand = |fat: u64| {
            let meta = reserved + root_dir_sectors + 2 * fat;
            let clusters = sectors.saturating_sub(meta) / spc;
            ((clusters + 2) * bits)
                .div_ceil(8)
                .div_ceil(u64::from(SECTOR))
        };
        let (mut lo, mut hi) = (1u64, demand(1).max(1));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if demand(mid) <= mid {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let fat = lo;
        let mut reserved: u64 = reserved;
        if reserved + root_dir_sectors + 2 * fat >= sectors {
            return Err(too_small);
        }
        if fat_type == FatType::Fat32 {
            // Start the data region on a cluster boundary (as mkfs.fat does), by growing the
            // reserved region; this only removes clusters, so the FAT stays large enough.
            let meta = reserved + 2 * fat;
            reserved += (spc - meta % spc) % spc;
        }
        let first_data = reserved + root_dir_sectors + 2 * fat;
        let clusters = sectors.saturating_sub(first_data) / spc;
        let (lo, hi) = fat_type.cluster_range();
        if clusters < lo || clusters > hi {
            return Err(if clusters < lo && fat_type == FatType::Fat12 {
                too_small
            } else {
                Error::InvalidSize {
                    size,
                    reason: "the cluster count would not match the FAT type",
                }
            });
        }
        let narrow = |v: u64| {
            u32::try_from(v).map_err(|_| Error::InvalidSize {
                size,
                reason: "layout out of range",
            })
        };
        Ok(Geometry {
            fat_type,
            total_sectors: narrow(sectors)?,
            sectors_per_cluster: narrow(spc)?,
            reserved_sectors: narrow(reserved)?,
            fat_sectors: narrow(fat)?,
            root_entries: narrow(root_entries)?,
            root_dir_sectors: narrow(root_dir_sectors)?,
            first_data_sector: narrow(first_data)?,
            clusters: narrow(clusters)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_by_size() {
        let g = |mib: u64| Geometry::for_size(mib << 20).unwrap();
        assert_eq!(g(64).fat_type, FatType::Fat32);
        assert_eq!(g(64).sectors_per_cluster, 1);
        assert_eq!(g(512).sectors_per_cluster, 8);
        assert_eq!(g(16).fat_type, FatType::Fat16);
        assert_eq!(g(1).fat_type, FatType::Fat12);
        assert_eq!(
            Geometry::for_size(FAT32_MIN_SECTORS * 512)
                .unwrap()
                .fat_type,
            FatType::Fat32
        );
        assert_eq!(
            Geometry::for_size((FAT32_MIN_SECTORS - 1) * 512)
                .unwrap()
                .fat_type,
            FatType::Fat16
        );
        assert_eq!(
            Geometry::for_size(FAT16_MIN_SECTORS * 512)
                .unwrap()
                .fat_type,
            FatType::Fat16
        );
        assert_eq!(
            Geometry::for_size((FAT16_MIN_SECTORS - 1) * 512)
                .unwrap()
                .fat_type,
            FatType::Fat12
        );
    }

    #[test]
    fn every_size_is_consistent() {
        // Every sector count up to past the FAT32 threshold, then a sparse sweep to 2 TiB.
        let mut sizes: Vec<u64> = (0..70_000).collect();
        let mut s = 70_000u64;
        while s <= u64::from(u32::MAX) {
            sizes.push(s);
            s = s * 1001 / 1000 + 7;
        }
        sizes.push(u64::from(u32::MAX));
        for sectors in sizes {
            let Ok(g) = Geometry::for_size(sectors * 512) else {
                assert!(sectors < 100, "{sectors} sectors refused");
                continue;
            };
            let (lo, hi) = g.fat_type.cluster_range();
            let c = u64::from(g.clusters);
            assert!((lo..=hi).contains(&c), "{sectors}: {c} clusters");
            // The FAT holds an entry for every cluster plus the two reserved ones.
            assert!(
                u64::from(g.fat_sectors) * 512 * 8 >= (c + 2) * g.fat_type.entry_bits(),
                "{sectors}"
            );
            assert_eq!(
                g.first_data_sector,
                g.reserved_sectors + g.root_dir_sectors + 2 * g.fat_sectors
            );
            assert!(
                u64::from(g.first_data_sector) + c * u64::from(g.sectors_per_cluster) <= sectors
            );
            assert!(g.cluster_bytes() <= 32 * 1024);
            if g.fat_type == FatType::Fat32 {
                assert_eq!(g.first_data_sector % g.sectors_per_cluster, 0);
            }
            // The smallest FAT: one sector less would be too small.
            if g.fat_sectors > 1 {
                let base = if g.fat_type == FatType::Fat32 { 32 } else { 1 };
                let f = u64::from(g.fat_sectors) - 1;
                let meta = base + u64::from(g.root_dir_sectors) + 2 * f;
                let c = (sectors - meta) / u64::from(g.sectors_per_cluster);
                assert!(f * 512 * 8 < (c + 2) * g.fat_type.entry_bits(), "{sectors}");
            }
        }
        assert!(Geometry::for_size(513).is_err());
        assert!(Geometry::for_size((u64::from(u32::MAX) + 1) * 512).is_err());
        assert!(Geometry::for_size(u64::MAX - 511).is_err());
    }
}
