//! Disk formats the agent opens and the host writes, each checked against the real tools
//! (`sgdisk`, `veritysetup`, `cryptsetup`) in its tests:
//! - [`gpt`]: GUID partition tables, read fail-closed (a primary and backup that disagree stop
//!   the boot) and written reproducibly;
//! - [`verity`]: the dm-verity superblock and hash tree;
//! - [`luks2`]: LUKS2 headers, keyslots (PBKDF2, Argon2) and the volume key.
#![forbid(unsafe_code)]

pub mod gpt;
pub mod luks2;
pub mod verity;
