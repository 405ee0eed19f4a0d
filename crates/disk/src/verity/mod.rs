//! dm-verity, on-disk format version 1, exactly as `veritysetup format` writes it with its
//! defaults (`--format=1 --hash=sha256 --data-block-size=4096 --hash-block-size=4096`) on a
//! separate hash device:
//!
//! ```text
//! hash device:  block 0      superblock (512 bytes, rest of the block zero)
//!               block 1..    hash tree, top level first, each level padded to whole blocks
//! ```
//!
//! Every tree entry is `sha256(salt ‖ block)` (version 1 puts the salt first; Chrome OS's
//! version 0 puts it last). 128 digests fill a 4096-byte hash block exactly, so blocks need no
//! per-entry padding, only zeros after the last entry of a level. The root hash is the digest of
//! the single top-level block, or, with one data block and hence no tree, of that data block.
//!
//! The host (`cvmctl rootfs`) builds the tree here in Rust so the image does not depend on the
//! host's cryptsetup version; tests hold it byte-for-byte against `veritysetup format`. The
//! guest uses only [`Superblock::parse`]: the kernel checks the data against the tree, and the
//! tree against the root hash from the measured command line.
//!
//! Only SHA-256 is accepted. We write 4096-byte blocks (veritysetup's default); the parser also
//! takes data and hash blocks of 512, 1024 or 2048 bytes, since systemd-repart before v255
//! (mkosi's images on Debian bookworm) formats verity with the disk's 512-byte sector size and
//! the kernel verifies any power of two from 512 to the page size. Anything else is a disk we
//! did not build, so it is refused rather than interpreted.
//!
//! Deterministic choices (a rebuild from the same tree must give the same bytes, and therefore
//! the same root hash in the measured command line):
//! - salt: when none is given, [`derive_salt`] of the SHA-256 of the data — 32 bytes like
//!   veritysetup's random default, different for different data, and reproducible;
//! - superblock UUID: [`HashTree::default_uuid`], derived from the root hash. The superblock is
//!   outside the tree, so this is not circular, and nothing security-relevant reads the UUID.

mod superblock;
mod tree;

#[cfg(test)]
mod tests;

pub use superblock::{Superblock, parse};
pub use tree::{HashTree, build_hash_tree};

use sha2::{Digest, Sha256};

/// Data and hash block size of the trees we build (and the largest the parser takes).
pub const BLOCK_SIZE: usize = 4096;
/// The smallest data or hash block size the parser takes (the kernel's lower bound).
pub const MIN_BLOCK_SIZE: usize = 512;
/// SHA-256.
pub const DIGEST_SIZE: usize = 32;
/// Size of the on-disk superblock (the rest of hash block 0 is zero).
pub const SUPERBLOCK_SIZE: usize = 512;
/// The superblock's salt field.
pub const MAX_SALT_SIZE: usize = 256;
/// Largest data size whose byte length fits in a u64.
pub const MAX_DATA_BLOCKS: u64 = u64::MAX / BLOCK_SIZE as u64;

/// Digests per hash block.
const FANOUT: u64 = (BLOCK_SIZE / DIGEST_SIZE) as u64;

/// Everything that can go wrong with a superblock or while hashing.
#[derive(Debug, thiserror::Error)]
pub enum VerityError {
    #[error("verity superblock is {len} bytes, need {SUPERBLOCK_SIZE}")]
    ShortSuperblock { len: usize },
    #[error("no verity superblock (bad magic)")]
    BadMagic,
    #[error("verity superblock version {0} (only 1 is supported)")]
    BadVersion(u32),
    #[error("verity hash type {0} (only 1, the normal one, is supported)")]
    BadHashType(u32),
    #[error("verity hash algorithm {0:?} (only sha256 is supported)")]
    BadAlgorithm(String),
    #[error(
        "verity {which} block size {size} (need a power of two from {MIN_BLOCK_SIZE} to {BLOCK_SIZE})"
    )]
    BadBlockSize { which: &'static str, size: u32 },
    #[error("verity salt of {0} bytes (at most {MAX_SALT_SIZE})")]
    SaltTooLong(usize),
    #[error("verity superblock: nonzero byte at offset {0} in a reserved or padding field")]
    NonZeroPadding(usize),
    #[error("verity data of {0} blocks (must be 1..={MAX_DATA_BLOCKS})")]
    BadDataBlocks(u64),
    #[error("cannot read verity data at byte {offset}")]
    Read {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("verity data ended at byte {got}, expected {expected} bytes")]
    ShortData { got: u64, expected: u64 },
    #[error("verity hash tree for {data_blocks} blocks does not fit in memory")]
    TooLarge { data_blocks: u64 },
    #[error("cannot write verity hash area")]
    Write(#[source] std::io::Error),
}

/// The salt `cvmctl` uses when none is given: `sha256("cvm-agent verity salt v1\0" ‖ d)`,
/// where `d` is the SHA-256 of the data (all `data_blocks × 4096` bytes).
pub fn derive_salt(data_digest: &[u8; DIGEST_SIZE]) -> [u8; DIGEST_SIZE] {
    let mut h = Sha256::new();
    h.update(b"cvm-agent verity salt v1\0");
    h.update(data_digest);
    h.finalize().into()
}

/// Number of hash blocks in each tree level, bottom (hashes of data blocks) first. Empty for a
/// single data block, whose digest is the root hash itself (as in cryptsetup and the kernel).
fn level_blocks(data_blocks: u64) -> Vec<u64> {
    level_blocks_with(data_blocks, FANOUT)
}

/// [`level_blocks`] for `fanout` digests per hash block.
fn level_blocks_with(data_blocks: u64, fanout: u64) -> Vec<u64> {
    let mut levels = Vec::new();
    let mut n = data_blocks;
    while n > 1 {
        n = n.div_ceil(fanout);
        levels.push(n);
    }
    levels
}

/// Hex of either case, even length; `None` on anything else.
pub use cvm_text::hex::decode as from_hex;
/// Lowercase hex, the form of `roothash=` and of veritysetup's output.
pub use cvm_text::hex::encode as to_hex;
