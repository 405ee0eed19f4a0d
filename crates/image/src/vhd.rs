//! The fixed VHD footer Azure wants after a raw disk (Microsoft "Virtual Hard Disk Image Format
//! Specification", version 1.0, the "Hard Disk Footer Format" and appendix "CHS Calculation").
//!
//! A fixed VHD is the raw disk followed by one 512-byte footer; nothing else. Azure requires
//! the virtual size to be a whole number of MiB (a managed-disk upload is N MiB + 512 bytes).
//! Readers disagree on what the virtual size is: Hyper-V and Azure take the footer's current
//! size, Virtual PC and QEMU (for a creator it does not know as Hyper-V-like) take
//! cylinders × heads × sectors × 512 from the geometry, which the spec's CHS algorithm rounds
//! down. [`virtual_size`] therefore picks a size where the two agree: a whole number of MiB that
//! the geometry covers exactly, so every reader sees the same disk, backup GPT included, and
//! the footer need not pretend to come from another program. Above the largest CHS geometry
//! (65535/16/255, about 127.5 GiB) no size is exact, but readers then use the current size
//! (QEMU does so for the maximal geometry), so there a whole MiB is enough.
//!
//! Every footer field is fixed or derived from the disk: timestamp 0 (2000-01-01 00:00:00 UTC;
//! the spec uses it only to match differencing disks to their parents, which a fixed disk has
//! not, and a clock reading would make rebuilds differ), and a unique id derived from the
//! SHA-256 of the raw disk ([`unique_id`]), so one changed byte of the disk gives another id and
//! the same disk always the same one.

use cvm_disk::gpt::Guid;

/// Size of the footer.
pub const FOOTER_SIZE: usize = 512;
/// The footer's cookie.
pub const COOKIE: &[u8; 8] = b"conectix";
/// "Creator Application": this tool.
pub const CREATOR_APP: &[u8; 4] = b"cvm ";
/// "Creator Version": the footer layout of this module, 1.0.
pub const CREATOR_VERSION: u32 = 0x0001_0000;
/// "Creator Host OS". The spec defines only Windows ("Wi2k") and Macintosh ("Mac "); QEMU
/// writes "Wi2k" on Linux as well, so this is what Azure's pipeline sees from every image built
/// on Linux, and nothing reads the field.
pub const CREATOR_HOST_OS: &[u8; 4] = b"Wi2k";
/// "Disk Type": fixed hard disk.
pub const DISK_TYPE_FIXED: u32 = 2;
/// Domain separation of [`unique_id`].
pub const UNIQUE_ID_DOMAIN: &[u8] = b"cvm-agent vhd unique id v1\0";

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;
/// The largest geometry the spec's algorithm gives, in sectors.
const MAX_CHS_SECTORS: u64 = 65535 * 16 * 255;

/// The spec's CHS calculation for a disk of `total_sectors` 512-byte sectors:
/// (cylinders, heads, sectors per track).
pub fn geometry(total_sectors: u64) -> (u16, u8, u8) {
    let total = total_sectors.min(MAX_CHS_SECTORS);
    let (spt, heads, cyl_times_heads) = if total >= 65535 * 16 * 63 {
        (255, 16, total / 255)
    } else {
        let mut spt = 17;
        let mut cth = total / spt;
        let mut heads = cth.div_ceil(1024).max(4);
        if cth >= heads * 1024 || heads > 16 {
            spt = 31;
            heads = 16;
            cth = total / spt;
        }
        if cth >= heads * 1024 {
            spt = 63;
            heads = 16;
            cth = total / spt;
        }
        (spt, heads, cth)
    };
    // Bounded by the clamp above: cylinders ≤ 65535, heads ≤ 16, sectors ≤ 255.
    let cylinders = u16::try_from(cyl_times_heads / heads).unwrap_or(u16::MAX);
    (cylinders, heads as u8, spt as u8)
}

/// The bytes the geometry of a disk of `size` bytes covers.
pub fn geometry_size(size: u64) -> u64 {
    let (c, h, s) = geometry(size / SECTOR);
    u64::from(c) * u64::from(h) * u64::from(s) * SECTOR
}

/// The smallest size ≥ `min_size` that is a whole number of MiB and, up to the largest CHS
/// geometry, exactly covered by its geometry (see the module doc). `None` on overflow.
pub fn virtual_size(min_size: u64) -> Option<u64> {
    let mut size = min_size.checked_next_multiple_of(MIB)?.max(MIB);
    // Below the CHS maximum an exact size comes at least every 255 MiB (the 16 × 255 geometry);
    // 1024 steps is ample and bounds the loop.
    for _ in 0..1024 {
        if size / SECTOR >= MAX_CHS_SECTORS || geometry_size(size) == size {
            return Some(size);
        }
        size = size.checked_add(MIB)?;
    }
    None
}

/// The footer's unique id: `Guid::derive(UNIQUE_ID_DOMAIN ‖ SHA-256(raw disk))`.
pub fn unique_id(disk_sha256: &[u8; 32]) -> Guid {
    Guid::derive(&[UNIQUE_ID_DOMAIN, disk_sha256].concat())
}

/// The one's complement of the byte sum, over the footer with its checksum field zero.
pub fn checksum(footer: &[u8; FOOTER_SIZE]) -> u32 {
    let sum = footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |acc, (_, &b)| acc.wrapping_add(u32::from(b)));
    !sum
}

/// The footer of a fixed disk of `size` bytes with this unique id.
pub fn footer(size: u64, id: Guid) -> [u8; FOOTER_SIZE] {
    let mut f = [0u8; FOOTER_SIZE];
    f[0..8].copy_from_slice(COOKIE);
    // Features: bit 1 "reserved", which the spec says must always be set.
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    // Data offset: none (a fixed disk has no dynamic header).
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
    // Timestamp 0: see the module doc.
    f[28..32].copy_from_slice(CREATOR_APP);
    f[32..36].copy_from_slice(&CREATOR_VERSION.to_be_bytes());
    f[36..40].copy_from_slice(CREATOR_HOST_OS);
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    let (c, h, s) = geometry(size / SECTOR);
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f[58] = h;
    f[59] = s;
    f[60..64].copy_from_slice(&DISK_TYPE_FIXED.to_be_bytes());
    f[68..84].copy_from_slice(id.as_bytes());
    // Saved state 0, reserved bytes 0.
    let sum = checksum(&f);
    f[64..68].copy_from_slice(&sum.to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_follows_the_spec() {
        // 20 MiB (Azure's smallest upload): 17 sectors per track, 4 heads.
        assert_eq!(geometry(20 * 2048), (602, 4, 17));
        // 155 MiB: the first size past 17 sectors per track, exact with 31 × 16.
        assert_eq!(geometry(155 * 2048), (640, 16, 31));
        // 1 GiB: 63 × 16.
        assert_eq!(geometry(2048 * 1024), (2080, 16, 63));
        // 64 GiB: 255 × 16.
        assert_eq!(geometry(64 << 21), (32896, 16, 255));
        // Anything larger than the maximum gets the maximum.
        assert_eq!(geometry(u64::MAX), (65535, 16, 255));
    }

    #[test]
    fn virtual_sizes_are_whole_mib_and_exact() {
        for min in [
            0,
            1,
            67 << 20,
            (155 << 20) + 1,
            1 << 30,
            40 << 30,
            200 << 30,
        ] {
            let size = virtual_size(min).unwrap();
            assert!(size >= min && size.is_multiple_of(MIB), "{min} -> {size}");
            if size / SECTOR < MAX_CHS_SECTORS {
                assert_eq!(geometry_size(size), size, "{min} -> {size}");
            }
            // The smallest such size.
            let mut smaller = size.saturating_sub(MIB);
            while smaller >= min.max(MIB) {
                assert!(
                    smaller / SECTOR < MAX_CHS_SECTORS && geometry_size(smaller) != smaller,
                    "{min}: {smaller} would do"
                );
                smaller -= MIB;
            }
        }
        assert_eq!(virtual_size(67 << 20), Some(155 << 20));
        assert_eq!(virtual_size(260 << 20), Some(315 << 20));
        assert_eq!(virtual_size(200 << 30), Some(200 << 30));
        assert_eq!(virtual_size(u64::MAX), None);
    }

    #[test]
    fn footer_fields_and_checksum() {
        let id = unique_id(&[7; 32]);
        let f = footer(155 << 20, id);
        assert_eq!(&f[0..8], b"conectix");
        assert_eq!(
            &f[8..24],
            &[
                0, 0, 0, 2, 0, 1, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255
            ]
        );
        assert_eq!(&f[24..28], &[0; 4]);
        assert_eq!(&f[28..40], b"cvm \0\x01\0\0Wi2k");
        assert_eq!(u64::from_be_bytes(f[40..48].try_into().unwrap()), 155 << 20);
        assert_eq!(u64::from_be_bytes(f[48..56].try_into().unwrap()), 155 << 20);
        assert_eq!(&f[56..64], &[0x02, 0x80, 16, 31, 0, 0, 0, 2]);
        assert_eq!(&f[68..84], id.as_bytes());
        assert!(f[84..].iter().all(|&b| b == 0));
        // The checksum written is the one's complement of the byte sum of the rest.
        let stored = u32::from_be_bytes(f[64..68].try_into().unwrap());
        let sum: u32 = f[..64].iter().chain(&f[68..]).map(|&b| u32::from(b)).sum();
        assert_eq!(stored, !sum);
        assert_eq!(checksum(&f), stored);
        // Another disk content, another id.
        assert_ne!(unique_id(&[8; 32]), id);
    }
}
