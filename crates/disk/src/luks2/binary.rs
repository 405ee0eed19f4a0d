//! The 4096-byte binary LUKS2 header (cryptsetup `struct luks2_hdr_disk`, integers big-endian):
//!
//! ```text
//!    0  magic[6]          "LUKS\xba\xbe" (primary) / "SKUL\xba\xbe" (secondary)
//!    6  version u16       2
//!    8  hdr_size u64      binary header + JSON area, 16 KiB … 4 MiB
//!   16  seqid u64         bumped on every metadata update
//!   24  label[48]         NUL-terminated
//!   72  checksum_alg[32]  "sha256"
//!  104  salt[64]          random, different per copy
//!  168  uuid[40]          text form, NUL-terminated
//!  208  subsystem[48]     NUL-terminated
//!  256  hdr_offset u64    where this copy lives
//!  264  padding[184]
//!  448  csum[64]          hash over hdr_size bytes with this field zeroed
//!  512  padding[3584]
//! ```
//!
//! The JSON area follows at byte 4096 and is covered by the same checksum.

use super::{Luks2Error, Which};
use sha2::{Digest, Sha256};

pub const BIN_SIZE: usize = 4096;
pub const MAGIC_PRIMARY: &[u8; 6] = b"LUKS\xba\xbe";
pub const MAGIC_SECONDARY: &[u8; 6] = b"SKUL\xba\xbe";
/// The header sizes cryptsetup accepts (`hdr_size` = 2 × JSON-area metadata size choices).
pub const HDR_SIZES: [u64; 9] = [
    16 << 10,
    32 << 10,
    64 << 10,
    128 << 10,
    256 << 10,
    512 << 10,
    1 << 20,
    2 << 20,
    4 << 20,
];

const CSUM_AT: usize = 448;
const CSUM_LEN: usize = 64;

/// The fields of one binary header copy that survived checking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinHeader {
    pub hdr_size: u64,
    pub seqid: u64,
    pub label: String,
    pub uuid: String,
    pub subsystem: String,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// A NUL-terminated string field: UTF-8 without control characters before the NUL, zeros
/// after it. cryptsetup only needs the NUL; zeros after it are what it writes, and anything
/// else hides data.
fn cstr(
    b: &[u8],
    at: usize,
    len: usize,
    which: Which,
    field: &'static str,
) -> Result<String, Luks2Error> {
    let f = &b[at..at + len];
    let bad = || Luks2Error::BadField { which, field };
    let end = f.iter().position(|&c| c == 0).ok_or_else(bad)?;
    if f[end..].iter().any(|&c| c != 0) {
        return Err(bad());
    }
    let s = std::str::from_utf8(&f[..end]).map_err(|_| bad())?;
    if s.chars().any(char::is_control) {
        return Err(bad());
    }
    Ok(s.to_string())
}

/// The header size claimed by a copy, before anything else is trusted: used to know how much
/// to read. `None` if the magic is wrong.
pub fn claimed_size(b: &[u8], which: Which) -> Result<u64, Luks2Error> {
    let magic = match which {
        Which::Primary => MAGIC_PRIMARY,
        Which::Secondary => MAGIC_SECONDARY,
    };
    if b.len() < BIN_SIZE || &b[..6] != magic {
        return Err(Luks2Error::BadMagic { which });
    }
    let version = u16::from_be_bytes([b[6], b[7]]);
    if version != 2 {
        return Err(Luks2Error::BadVersion { which, version });
    }
    let size = u64_at(b, 8);
    if !HDR_SIZES.contains(&size) {
        return Err(Luks2Error::BadHeaderSize { which, size });
    }
    Ok(size)
}

/// SHA-256 over the whole header area with the checksum field zeroed.
pub fn checksum(area: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(&area[..CSUM_AT]);
    h.update([0u8; CSUM_LEN]);
    h.update(&area[CSUM_AT + CSUM_LEN..]);
    h.finalize().into()
}

/// Checks one copy: `area` is exactly its `hdr_size` bytes (binary header and JSON area) read
/// from `offset`. Returns the binary fields and the JSON text.
pub fn parse(area: &[u8], which: Which, offset: u64) -> Result<(BinHeader, String), Luks2Error> {
    let hdr_size = claimed_size(area, which)?;
    if area.len() as u64 != hdr_size {
        return Err(Luks2Error::BadHeaderSize {
            which,
            size: hdr_size,
        });
    }
    let alg = cstr(area, 72, 32, which, "checksum_alg")?;
    if alg != "sha256" {
        return Err(Luks2Error::Unsupported(format!(
            "{which} header checksum algorithm {alg:?} (only sha256)"
        )));
    }
    let csum = &area[CSUM_AT..CSUM_AT + CSUM_LEN];
    // Checked before any other field: a corrupt header is reported as corrupt, not as
    // whatever its damaged field happens to look like.
    if csum[..32] != checksum(area) || csum[32..].iter().any(|&c| c != 0) {
        return Err(Luks2Error::Checksum { which });
    }
    if u64_at(area, 256) != offset {
        return Err(Luks2Error::BadField {
            which,
            field: "hdr_offset",
        });
    }
    if area[264..CSUM_AT].iter().any(|&c| c != 0) || area[512..BIN_SIZE].iter().any(|&c| c != 0) {
        return Err(Luks2Error::BadField {
            which,
            field: "padding",
        });
    }
    let label = cstr(area, 24, 48, which, "label")?;
    let uuid = cstr(area, 168, 40, which, "uuid")?;
    if uuid.parse::<crate::gpt::Guid>().is_err() {
        return Err(Luks2Error::BadField {
            which,
            field: "uuid",
        });
    }
    let subsystem = cstr(area, 208, 48, which, "subsystem")?;
    // The JSON text is NUL-terminated inside its area; cryptsetup zero-fills the rest, and
    // bytes after the terminator would be data the checksum covers but nobody reads.
    let json_area = &area[BIN_SIZE..];
    let end = json_area
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| Luks2Error::Json(format!("{which} JSON area has no terminating NUL")))?;
    if json_area[end..].iter().any(|&c| c != 0) {
        return Err(Luks2Error::Json(format!(
            "{which} JSON area has bytes after its terminating NUL"
        )));
    }
    let json = std::str::from_utf8(&json_area[..end])
        .map_err(|_| Luks2Error::Json(format!("{which} JSON area is not UTF-8")))?
        .to_string();
    Ok((
        BinHeader {
            hdr_size,
            seqid: u64_at(area, 16),
            label,
            uuid,
            subsystem,
        },
        json,
    ))
}

/// Serialises one copy (binary header + JSON area, `hdr_size` bytes) with its checksum.
pub fn build(
    which: Which,
    hdr: &BinHeader,
    salt: &[u8; 64],
    json: &str,
) -> Result<Vec<u8>, Luks2Error> {
    let size = hdr.hdr_size as usize;
    if json.len() >= size - BIN_SIZE
        || hdr.label.len() >= 48
        || hdr.subsystem.len() >= 48
        || hdr.uuid.len() >= 40
    {
        return Err(Luks2Error::Json("metadata does not fit its fields".into()));
    }
    let mut b = vec![0u8; size];
    b[..6].copy_from_slice(match which {
        Which::Primary => MAGIC_PRIMARY,
        Which::Secondary => MAGIC_SECONDARY,
    });
    b[6..8].copy_from_slice(&2u16.to_be_bytes());
    b[8..16].copy_from_slice(&hdr.hdr_size.to_be_bytes());
    b[16..24].copy_from_slice(&hdr.seqid.to_be_bytes());
    b[24..24 + hdr.label.len()].copy_from_slice(hdr.label.as_bytes());
    b[72..78].copy_from_slice(b"sha256");
    b[104..168].copy_from_slice(salt);
    b[168..168 + hdr.uuid.len()].copy_from_slice(hdr.uuid.as_bytes());
    b[208..208 + hdr.subsystem.len()].copy_from_slice(hdr.subsystem.as_bytes());
    let offset = match which {
        Which::Primary => 0,
        Which::Secondary => hdr.hdr_size,
    };
    b[256..264].copy_from_slice(&offset.to_be_bytes());
    b[BIN_SIZE..BIN_SIZE + json.len()].copy_from_slice(json.as_bytes());
    let c = checksum(&b);
    b[CSUM_AT..CSUM_AT + 32].copy_from_slice(&c);
    Ok(b)
}
