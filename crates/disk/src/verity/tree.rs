//! Building the hash tree: one streaming pass over the data for the bottom level, then the upper
//! levels from memory (they are 1/128 of the data, 1/16384, …).

use super::{BLOCK_SIZE, DIGEST_SIZE, Superblock, VerityError, level_blocks};
use crate::gpt::Guid;
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};

/// Data is read in chunks of this size: large enough that the per-call overhead vanishes.
const READ_CHUNK: usize = 1 << 20;

/// A computed hash tree and what it was computed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashTree {
    root_hash: [u8; DIGEST_SIZE],
    data_blocks: u64,
    salt: Vec<u8>,
    /// Hash blocks 1.. of the hash device: levels top first, each padded to whole blocks.
    tree: Vec<u8>,
}

/// Hashes `data_blocks` blocks of 4096 bytes from `data` (which may hold more; the rest is not
/// read) with `salt`, and lays the tree out as veritysetup does.
pub fn build_hash_tree(
    data: &mut impl Read,
    data_blocks: u64,
    salt: &[u8],
) -> Result<HashTree, VerityError> {
    // Validates the block count and salt length against what a superblock can hold.
    Superblock::new(Guid::ZERO, data_blocks, salt)?;
    let too_large = || VerityError::TooLarge { data_blocks };

    let levels = level_blocks(data_blocks);
    let mut level_blocks_usize = Vec::with_capacity(levels.len());
    for &n in &levels {
        level_blocks_usize.push(usize::try_from(n).map_err(|_| too_large())?);
    }
    // offsets[i]: byte offset of level i (0 = bottom) inside `tree`; higher levels come first.
    let mut offsets = vec![0usize; levels.len()];
    let mut tree_len = 0usize;
    for i in (0..levels.len()).rev() {
        offsets[i] = tree_len;
        tree_len = level_blocks_usize[i]
            .checked_mul(BLOCK_SIZE)
            .and_then(|len| tree_len.checked_add(len))
            .ok_or_else(too_large)?;
    }
    let mut tree = Vec::new();
    tree.try_reserve_exact(tree_len).map_err(|_| too_large())?;
    tree.resize(tree_len, 0);

    let mut salted = Sha256::new();
    salted.update(salt);
    let hash = |block: &[u8]| -> [u8; DIGEST_SIZE] {
        salted.clone().chain_update(block).finalize().into()
    };

    let expected = data_blocks * BLOCK_SIZE as u64;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut root = [0u8; DIGEST_SIZE];
    let mut done = 0u64;
    let mut slot = offsets.first().copied().unwrap_or(0);
    while done < expected {
        let want = usize::try_from(expected - done).map_or(READ_CHUNK, |r| r.min(READ_CHUNK));
        read_full(data, &mut buf[..want], done, expected)?;
        for block in buf[..want].chunks_exact(BLOCK_SIZE) {
            let digest = hash(block);
            if levels.is_empty() {
                root = digest;
            } else {
                tree[slot..slot + DIGEST_SIZE].copy_from_slice(&digest);
                slot += DIGEST_SIZE;
            }
        }
        done += want as u64;
    }

    for i in 1..levels.len() {
        // Level i sits before level i-1 in `tree`, so one split gives both halves.
        let (upper, lower) = tree.split_at_mut(offsets[i - 1]);
        let src = &lower[..level_blocks_usize[i - 1] * BLOCK_SIZE];
        let dst = &mut upper[offsets[i]..];
        for (block, out) in src
            .chunks_exact(BLOCK_SIZE)
            .zip(dst.chunks_exact_mut(DIGEST_SIZE))
        {
            out.copy_from_slice(&hash(block));
        }
    }
    if !levels.is_empty() {
        // The top level is one block, at the start of the tree.
        root = hash(&tree[..BLOCK_SIZE]);
    }

    Ok(HashTree {
        root_hash: root,
        data_blocks,
        salt: salt.to_vec(),
        tree,
    })
}

/// Fills `buf` from `data`, whose next byte is at `offset` of `expected`.
fn read_full(
    data: &mut impl Read,
    buf: &mut [u8],
    offset: u64,
    expected: u64,
) -> Result<(), VerityError> {
    let mut filled = 0;
    while filled < buf.len() {
        match data.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(VerityError::ShortData {
                    got: offset + filled as u64,
                    expected,
                });
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(VerityError::Read {
                    offset: offset + filled as u64,
                    source,
                });
            }
        }
    }
    Ok(())
}

impl HashTree {
    pub fn root_hash(&self) -> &[u8; DIGEST_SIZE] {
        &self.root_hash
    }

    /// The root hash in the `roothash=` form.
    pub fn root_hash_hex(&self) -> String {
        super::to_hex(&self.root_hash)
    }

    pub fn data_blocks(&self) -> u64 {
        self.data_blocks
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// The tree as it follows the superblock block on the hash device.
    pub fn tree(&self) -> &[u8] {
        &self.tree
    }

    /// The superblock UUID `cvmctl` uses: derived from the root hash, so rebuilds agree.
    pub fn default_uuid(&self) -> Guid {
        let mut seed = b"cvm-agent verity uuid v1\0".to_vec();
        seed.extend_from_slice(&self.root_hash);
        Guid::derive(&seed)
    }

    pub fn superblock(&self, uuid: Guid) -> Superblock {
        Superblock::from_validated(uuid, self.data_blocks, self.salt.clone())
    }

    /// Bytes of the whole hash area: superblock block and tree.
    pub fn hash_area_len(&self) -> u64 {
        (BLOCK_SIZE + self.tree.len()) as u64
    }

    /// Writes the hash area (what `veritysetup format` writes to the hash device).
    pub fn write_hash_area(&self, uuid: Guid, w: &mut impl Write) -> Result<(), VerityError> {
        let mut first = [0u8; BLOCK_SIZE];
        first[..super::SUPERBLOCK_SIZE].copy_from_slice(&self.superblock(uuid).to_bytes());
        w.write_all(&first).map_err(VerityError::Write)?;
        w.write_all(&self.tree).map_err(VerityError::Write)
    }

    /// The hash area in memory.
    pub fn hash_area(&self, uuid: Guid) -> Vec<u8> {
        let mut out = Vec::with_capacity(BLOCK_SIZE + self.tree.len());
        // Writing into a Vec cannot fail.
        let _ = self.write_hash_area(uuid, &mut out);
        out
    }
}
