//! The 512-byte verity superblock (cryptsetup's `struct verity_sb`, all integers little-endian):
//!
//! ```text
//!   0  signature[8]     "verity\0\0"
//!   8  version u32      1
//!  12  hash_type u32    1
//!  16  uuid[16]         RFC 4122 byte order (as the text reads)
//!  32  algorithm[32]    "sha256", NUL-padded
//!  64  data_block_size u32
//!  68  hash_block_size u32
//!  72  data_blocks u64
//!  80  salt_size u16
//!  82  pad1[6]
//!  88  salt[256]        salt_size bytes, then zeros
//! 344  pad2[168]
//! ```

use super::{
    BLOCK_SIZE, DIGEST_SIZE, FANOUT, MAX_DATA_BLOCKS, MAX_SALT_SIZE, MIN_BLOCK_SIZE,
    SUPERBLOCK_SIZE, VerityError,
};
use crate::gpt::Guid;

const MAGIC: &[u8; 8] = b"verity\0\0";
const ALGORITHM: &[u8] = b"sha256";

/// A validated superblock: version 1, hash type 1, SHA-256, blocks of 512 to 4096 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    uuid: Guid,
    data_block_size: u32,
    hash_block_size: u32,
    data_blocks: u64,
    salt: Vec<u8>,
}

/// [`Superblock::parse`].
pub fn parse(bytes: &[u8]) -> Result<Superblock, VerityError> {
    Superblock::parse(bytes)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn check_block_size(which: &'static str, size: u32) -> Result<(), VerityError> {
    let ok = size.is_power_of_two() && (MIN_BLOCK_SIZE..=BLOCK_SIZE).contains(&(size as usize));
    if ok {
        Ok(())
    } else {
        Err(VerityError::BadBlockSize { which, size })
    }
}

fn check_zero(b: &[u8], from: usize, to: usize) -> Result<(), VerityError> {
    match b[from..to].iter().position(|&x| x != 0) {
        Some(i) => Err(VerityError::NonZeroPadding(from + i)),
        None => Ok(()),
    }
}

impl Superblock {
    pub fn new(uuid: Guid, data_blocks: u64, salt: &[u8]) -> Result<Superblock, VerityError> {
        if data_blocks == 0 || data_blocks > MAX_DATA_BLOCKS {
            return Err(VerityError::BadDataBlocks(data_blocks));
        }
        if salt.len() > MAX_SALT_SIZE {
            return Err(VerityError::SaltTooLong(salt.len()));
        }
        Ok(Superblock {
            uuid,
            data_block_size: BLOCK_SIZE as u32,
            hash_block_size: BLOCK_SIZE as u32,
            data_blocks,
            salt: salt.to_vec(),
        })
    }

    /// A superblock with other block sizes than the 4096 bytes we build with (what older
    /// systemd-repart writes), for callers that describe such a disk.
    pub fn with_block_sizes(
        uuid: Guid,
        data_blocks: u64,
        salt: &[u8],
        data_block_size: u32,
        hash_block_size: u32,
    ) -> Result<Superblock, VerityError> {
        check_block_size("data", data_block_size)?;
        check_block_size("hash", hash_block_size)?;
        Ok(Superblock {
            data_block_size,
            hash_block_size,
            ..Superblock::new(uuid, data_blocks, salt)?
        })
    }

    /// For a [`super::HashTree`], whose block count and salt `build_hash_tree` already checked.
    pub(super) fn from_validated(uuid: Guid, data_blocks: u64, salt: Vec<u8>) -> Superblock {
        Superblock {
            uuid,
            data_block_size: BLOCK_SIZE as u32,
            hash_block_size: BLOCK_SIZE as u32,
            data_blocks,
            salt,
        }
    }

    /// Parses the first 512 bytes of `bytes` (the start of the hash device; the rest is ignored).
    /// Strict: every field must hold a value we support, and every reserved or padding byte,
    /// including the salt field beyond `salt_size`, must be zero.
    pub fn parse(bytes: &[u8]) -> Result<Superblock, VerityError> {
        let b = bytes
            .get(..SUPERBLOCK_SIZE)
            .ok_or(VerityError::ShortSuperblock { len: bytes.len() })?;
        if &b[0..8] != MAGIC {
            return Err(VerityError::BadMagic);
        }
        let version = u32_at(b, 8);
        if version != 1 {
            return Err(VerityError::BadVersion(version));
        }
        let hash_type = u32_at(b, 12);
        if hash_type != 1 {
            return Err(VerityError::BadHashType(hash_type));
        }
        let alg = &b[32..64];
        if &alg[..ALGORITHM.len()] != ALGORITHM || alg[ALGORITHM.len()..].iter().any(|&c| c != 0) {
            let name = alg.split(|&c| c == 0).next().unwrap_or_default();
            return Err(VerityError::BadAlgorithm(
                String::from_utf8_lossy(name).into_owned(),
            ));
        }
        let data_block_size = u32_at(b, 64);
        check_block_size("data", data_block_size)?;
        let hash_block_size = u32_at(b, 68);
        check_block_size("hash", hash_block_size)?;
        let mut db = [0u8; 8];
        db.copy_from_slice(&b[72..80]);
        let data_blocks = u64::from_le_bytes(db);
        if data_blocks == 0 || data_blocks > MAX_DATA_BLOCKS {
            return Err(VerityError::BadDataBlocks(data_blocks));
        }
        let salt_size = usize::from(u16::from_le_bytes([b[80], b[81]]));
        if salt_size > MAX_SALT_SIZE {
            return Err(VerityError::SaltTooLong(salt_size));
        }
        check_zero(b, 82, 88)?;
        check_zero(b, 88 + salt_size, SUPERBLOCK_SIZE)?;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[16..32]);
        Ok(Superblock {
            uuid: Guid::from_bytes(uuid),
            data_block_size,
            hash_block_size,
            data_blocks,
            salt: b[88..88 + salt_size].to_vec(),
        })
    }

    pub fn to_bytes(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&1u32.to_le_bytes());
        b[16..32].copy_from_slice(self.uuid.as_bytes());
        b[32..32 + ALGORITHM.len()].copy_from_slice(ALGORITHM);
        b[64..68].copy_from_slice(&self.data_block_size.to_le_bytes());
        b[68..72].copy_from_slice(&self.hash_block_size.to_le_bytes());
        b[72..80].copy_from_slice(&self.data_blocks.to_le_bytes());
        // `new` and `parse` keep the salt within 256 bytes; `min` keeps this total regardless.
        let salt = &self.salt[..self.salt.len().min(MAX_SALT_SIZE)];
        b[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
        b[88..88 + salt.len()].copy_from_slice(salt);
        b
    }

    pub fn uuid(&self) -> Guid {
        self.uuid
    }

    pub fn data_blocks(&self) -> u64 {
        self.data_blocks
    }

    pub fn data_block_size(&self) -> u32 {
        self.data_block_size
    }

    pub fn hash_block_size(&self) -> u32 {
        self.hash_block_size
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// Bytes of data the tree covers; the data device must be at least this big.
    pub fn data_size(&self) -> u64 {
        self.data_blocks * u64::from(self.data_block_size)
    }

    /// Bytes of the hash device in use: the superblock block and the tree. The hash device must
    /// be at least this big.
    pub fn hash_area_size(&self) -> u64 {
        let fanout = u64::from(self.hash_block_size) / DIGEST_SIZE as u64;
        let tree: u64 = super::level_blocks_with(self.data_blocks, fanout)
            .iter()
            .sum();
        (1 + tree) * u64::from(self.hash_block_size)
    }

    /// The device-mapper table line for this superblock (`dmsetup create --table` syntax,
    /// Documentation/admin-guide/device-mapper/verity.rst), the hash tree starting at hash
    /// block 1 behind the superblock. `options` are appended as optional parameters (e.g.
    /// `["panic_on_corruption"]`); the kernel counts words, so one with a value
    /// (`"use_fec_from_device /dev/vdb"`) counts as two.
    pub fn dm_table(
        &self,
        data_dev: &str,
        hash_dev: &str,
        root_hash: &[u8],
        options: &[&str],
    ) -> String {
        let salt = if self.salt.is_empty() {
            "-".to_string()
        } else {
            super::to_hex(&self.salt)
        };
        let mut line = format!(
            "0 {sectors} verity 1 {data_dev} {hash_dev} {dbs} {hbs} {blocks} 1 sha256 {root} {salt}",
            sectors = self.data_size() / 512,
            dbs = self.data_block_size,
            hbs = self.hash_block_size,
            blocks = self.data_blocks,
            root = super::to_hex(root_hash),
        );
        let words: Vec<&str> = options.iter().flat_map(|o| o.split_whitespace()).collect();
        if !words.is_empty() {
            line.push_str(&format!(" {} {}", words.len(), words.join(" ")));
        }
        line
    }
}

// Keep the fan-out assumption visible where the layout is described.
const _: () = assert!(FANOUT == 128);
