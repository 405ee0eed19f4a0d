//! Stage 4: the verified root. The root hash on the measured command line is the only trust
//! anchor: it names the partitions (systemd's PARTUUID convention), the kernel checks every
//! block read against it (dm-verity), and only then is the filesystem mounted and switched to.
//! Everything on the disk — GPT, superblock, filesystem — is host-controlled until then and is
//! parsed strictly.

use crate::blockdev::{self, BlockDev, BlockError};
use crate::cmdline::{DeviceSpec, Mode, RootHash, VerityOption};
use crate::dm::{self, DmError, Mapped, Target};
use crate::gpt::Guid;
use crate::verity::{self, Superblock, VerityError};
use nix::mount::{MsFlags, mount};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum VerityRootError {
    #[error("roothash= has {0} bytes; only SHA-256 (32 bytes) verity roots are supported")]
    HashLength(usize),
    #[error("unsupported verity option '{0}' (the superblock describes the layout)")]
    Option(String),
    #[error("cannot find the verity partitions")]
    Find(#[source] BlockError),
    #[error("cannot read {what} from {dev}")]
    Read {
        what: &'static str,
        dev: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad verity superblock on {dev}")]
    Superblock {
        dev: PathBuf,
        #[source]
        source: VerityError,
    },
    #[error("{what} partition {dev} is {size} bytes, the superblock needs {needed}")]
    TooSmall {
        what: &'static str,
        dev: PathBuf,
        size: u64,
        needed: u64,
    },
    #[error("cannot set up dm-verity")]
    Dm(#[source] DmError),
    #[error("no known filesystem on the verified root {0} (erofs, squashfs or ext4 expected)")]
    UnknownFs(PathBuf),
    #[error("cannot mount the verified root {dev} ({fstype}) on {target}")]
    Mount {
        dev: PathBuf,
        fstype: &'static str,
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// What a corrupted block does. Production never serves one: the kernel panics (the VM stops,
/// or with `panic=-1` reboots and is measured afresh). Debug returns I/O errors so the damage
/// can be looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCorruption {
    Panic,
    Restart,
    IoError,
}

impl OnCorruption {
    fn table_arg(self) -> Option<&'static str> {
        match self {
            OnCorruption::Panic => Some("panic_on_corruption"),
            OnCorruption::Restart => Some("restart_on_corruption"),
            OnCorruption::IoError => None,
        }
    }
}

/// Decide the corruption policy from the mode and `systemd.verity_root_options=`. Options that
/// would change the layout are refused: the superblock we validate is the layout.
pub fn policy(mode: Mode, options: &[VerityOption]) -> Result<OnCorruption, VerityRootError> {
    let mut policy = match mode {
        Mode::Production => OnCorruption::Panic,
        Mode::Debug => OnCorruption::IoError,
    };
    for o in options {
        policy = match o.name.as_str() {
            "panic-on-corruption" => OnCorruption::Panic,
            "restart-on-corruption" => OnCorruption::Restart,
            other => return Err(VerityRootError::Option(other.to_string())),
        };
    }
    Ok(policy)
}

/// The data and hash partition names: explicit on the command line, else systemd's rule —
/// data PARTUUID = first 128 bits of the root hash, hash PARTUUID = last 128 bits.
pub fn partition_specs(
    roothash: &RootHash,
    data: Option<&DeviceSpec>,
    hash: Option<&DeviceSpec>,
) -> Result<(DeviceSpec, DeviceSpec), VerityRootError> {
    let bytes = &roothash.0;
    if bytes.len() != verity::DIGEST_SIZE {
        return Err(VerityRootError::HashLength(bytes.len()));
    }
    let derive = |half: &[u8]| {
        Guid::from_prefix(half)
            .map(|g| DeviceSpec::PartUuid(g.to_string()))
            .ok_or(VerityRootError::HashLength(bytes.len()))
    };
    let data = match data {
        Some(d) => d.clone(),
        None => derive(&bytes[..16])?,
    };
    let hash = match hash {
        Some(h) => h.clone(),
        None => derive(&bytes[bytes.len() - 16..])?,
    };
    Ok((data, hash))
}

/// The verified root device, before it is mounted.
#[derive(Debug)]
pub struct VerityRoot {
    pub data: BlockDev,
    pub hash: BlockDev,
    pub superblock: Superblock,
    pub device: Mapped,
    pub policy: OnCorruption,
}

/// Read the superblock from the hash device and hold it against both partitions' sizes.
pub fn check_layout(data: &BlockDev, hash: &BlockDev) -> Result<Superblock, VerityRootError> {
    let file = File::open(&hash.path).map_err(|source| VerityRootError::Read {
        what: "the verity superblock",
        dev: hash.path.clone(),
        source,
    })?;
    let mut block = [0u8; verity::SUPERBLOCK_SIZE];
    file.read_exact_at(&mut block, 0)
        .map_err(|source| VerityRootError::Read {
            what: "the verity superblock",
            dev: hash.path.clone(),
            source,
        })?;
    let sb = verity::parse(&block).map_err(|source| VerityRootError::Superblock {
        dev: hash.path.clone(),
        source,
    })?;
    if data.size < sb.data_size() {
        return Err(VerityRootError::TooSmall {
            what: "data",
            dev: data.path.clone(),
            size: data.size,
            needed: sb.data_size(),
        });
    }
    if hash.size < sb.hash_area_size() {
        return Err(VerityRootError::TooSmall {
            what: "hash",
            dev: hash.path.clone(),
            size: hash.size,
            needed: sb.hash_area_size(),
        });
    }
    Ok(sb)
}

/// Find the partitions, validate the layout and create the dm-verity device `root`.
pub fn activate(
    roothash: &RootHash,
    data: &DeviceSpec,
    hash: &DeviceSpec,
    policy: OnCorruption,
    timeout: Duration,
) -> Result<VerityRoot, VerityRootError> {
    let found = blockdev::wait_for(Path::new("/sys"), Path::new("/dev"), &[data, hash], timeout)
        .map_err(VerityRootError::Find)?;
    let [data, hash] = <[BlockDev; 2]>::try_from(found)
        .map_err(|_| VerityRootError::Find(BlockError::NotBlock("verity pair".into())))?;
    let sb = check_layout(&data, &hash)?;
    let params = format!(
        "1 {data} {hash} {dbs} {hbs} {blocks} 1 sha256 {root} {salt}{opts}",
        data = data.devno,
        hash = hash.devno,
        dbs = sb.data_block_size(),
        hbs = sb.hash_block_size(),
        blocks = sb.data_blocks(),
        root = roothash.to_hex(),
        salt = if sb.salt().is_empty() {
            "-".to_string()
        } else {
            verity::to_hex(sb.salt())
        },
        opts = policy
            .table_arg()
            .map(|a| format!(" 1 {a}"))
            .unwrap_or_default(),
    );
    let uuid = format!("CVM-VERITY-{}", &roothash.to_hex()[..32]);
    let device = dm::create(
        "root",
        &uuid,
        &Target {
            sectors: sb.data_size() / 512,
            kind: "verity",
            params: zeroize::Zeroizing::new(params),
        },
        true,
        false,
    )
    .map_err(VerityRootError::Dm)?;
    Ok(VerityRoot {
        data,
        hash,
        superblock: sb,
        device,
        policy,
    })
}

/// The filesystem type by its magic, read through the verified device.
pub fn detect_fs(dev: &Path) -> Result<&'static str, VerityRootError> {
    let file = File::open(dev).map_err(|source| VerityRootError::Read {
        what: "the filesystem header",
        dev: dev.to_path_buf(),
        source,
    })?;
    let mut head = [0u8; 2048];
    file.read_exact_at(&mut head, 0)
        .map_err(|source| VerityRootError::Read {
            what: "the filesystem header",
            dev: dev.to_path_buf(),
            source,
        })?;
    fs_by_magic(&head).ok_or_else(|| VerityRootError::UnknownFs(dev.to_path_buf()))
}

pub fn fs_by_magic(head: &[u8; 2048]) -> Option<&'static str> {
    if &head[..4] == b"hsqs" {
        return Some("squashfs");
    }
    if head[1024..1028] == 0xE0F5_E1E2u32.to_le_bytes() {
        return Some("erofs");
    }
    if head[1080..1082] == 0xEF53u16.to_le_bytes() {
        return Some("ext4");
    }
    None
}

pub fn mount_ro(dev: &Path, fstype: &'static str, target: &Path) -> Result<(), VerityRootError> {
    std::fs::create_dir_all(target).map_err(|source| VerityRootError::Read {
        what: "the mount point",
        dev: target.to_path_buf(),
        source,
    })?;
    mount(
        Some(dev),
        target,
        Some(fstype),
        MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|source| VerityRootError::Mount {
        dev: dev.to_path_buf(),
        fstype,
        target: target.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash() -> RootHash {
        RootHash((0u8..32).collect())
    }

    #[test]
    fn partuuids_come_from_the_root_hash_halves() {
        let (d, h) = partition_specs(&hash(), None, None).unwrap();
        assert_eq!(
            d,
            DeviceSpec::PartUuid("00010203-0405-0607-0809-0a0b0c0d0e0f".into())
        );
        assert_eq!(
            h,
            DeviceSpec::PartUuid("10111213-1415-1617-1819-1a1b1c1d1e1f".into())
        );
        let explicit = DeviceSpec::Path("/dev/vdb".into());
        let (d, _) = partition_specs(&hash(), Some(&explicit), None).unwrap();
        assert_eq!(d, explicit);
        assert!(matches!(
            partition_specs(&RootHash(vec![0; 64]), None, None),
            Err(VerityRootError::HashLength(64))
        ));
    }

    #[test]
    fn corruption_policy() {
        assert_eq!(policy(Mode::Production, &[]).unwrap(), OnCorruption::Panic);
        assert_eq!(policy(Mode::Debug, &[]).unwrap(), OnCorruption::IoError);
        let restart = VerityOption {
            name: "restart-on-corruption".into(),
            value: None,
        };
        assert_eq!(
            policy(Mode::Production, &[restart]).unwrap(),
            OnCorruption::Restart
        );
        let salt = VerityOption {
            name: "salt".into(),
            value: Some("00".into()),
        };
        assert!(policy(Mode::Production, &[salt]).is_err());
    }

    #[test]
    fn filesystems_by_magic() {
        let mut head = [0u8; 2048];
        assert_eq!(fs_by_magic(&head), None);
        head[..4].copy_from_slice(b"hsqs");
        assert_eq!(fs_by_magic(&head), Some("squashfs"));
        let mut head = [0u8; 2048];
        head[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        assert_eq!(fs_by_magic(&head), Some("erofs"));
        let mut head = [0u8; 2048];
        head[1080..1082].copy_from_slice(&0xEF53u16.to_le_bytes());
        assert_eq!(fs_by_magic(&head), Some("ext4"));
    }
}
