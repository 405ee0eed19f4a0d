//! Stage 9: the encrypted state disk — LUKS2 (our own `luks2` module, so cryptsetup can always
//! recover it) over dm-crypt, ext4 inside.
//!
//! The rules that keep data safe:
//! - a disk is formatted only when its first MiB is all zeros (`luks2::probe`): anything else
//!   that is not LUKS2 — a filesystem, a partition table, LUKS1, garbage — stops the boot;
//! - a LUKS2 disk that does not open with the key (wrong key, damaged header, a format we do not
//!   support) stops the boot; it is never "repaired" or reformatted;
//! - with integrity, a zeroed dm-integrity superblock is initialized (and the volume wiped)
//!   only under a LUKS2 header this boot wrote; under an existing header it stops the boot
//!   with nothing written (a host that zeroes 4 KiB must not get a silently reset volume);
//! - `mkfs.ext4` runs only on a volume this boot formatted; an opened volume without ext4
//!   inside (say, power was lost between formatting and mkfs) stops the boot rather than being
//!   formatted again: whether to start over is the operator's decision.
//!
//! The volume is mounted at [`STATE_DIR`] (the verified root is read-only, so `launch.toml`'s
//! `mount` path cannot be a mount point there); the workload stage binds it to that path inside
//! the workload.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{MsFlags, mount};
use zeroize::Zeroizing;

use crate::blockdev::{self, BlockDev};
use crate::cloud_disk::CloudDisk;
use crate::dm;
use crate::initdata::launch::StateDevice;
use crate::luks2::{self, Luks2Error};

/// The Discoverable Partitions Specification's `/var` partition type: the state disk when
/// launch.toml names no device.
pub const VAR_PARTITION_TYPE: &str = "4d21b016-b534-45c2-a9fb-5c16e091fd2d";
/// The dm-crypt device's name.
pub const MAPPER_NAME: &str = "cvm-state";
/// The dm-integrity device under [`MAPPER_NAME`] with integrity (cryptsetup's `_dif` suffix).
pub const INTEGRITY_NAME: &str = "cvm-state_dif";
/// dm-integrity superblock magic.
const INTEGRITY_MAGIC: &[u8; 8] = b"integrt\0";
/// Wipe chunk for a fresh integrity volume.
const WIPE_CHUNK: usize = 1 << 20;
/// Where the opened volume is mounted.
pub const STATE_DIR: &str = "/run/cvm-agent/state";
/// The agent's own bookkeeping inside the volume.
const AGENT_DIR: &str = ".cvm-agent";
const BOOT_COUNT: &str = "boot-count";
const MKFS: &str = "/sbin/mkfs.ext4";
const EXT4_MAGIC: u16 = 0xef53;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("no state disk matches {spec} within {}s{seen}", .waited.as_secs())]
    NotFound {
        spec: String,
        waited: Duration,
        seen: String,
    },
    #[error("{spec} matches more than one device ({}); refusing to guess", .which.join(", "))]
    Ambiguous { spec: String, which: Vec<String> },
    #[error("cannot open {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("LUKS2 volume on {}", .path.display())]
    Luks {
        path: PathBuf,
        #[source]
        source: Luks2Error,
    },
    #[error(
        "{} holds {what}, not LUKS2 and not blank: refusing to format it (nothing was written)",
        .path.display()
    )]
    Foreign { path: PathBuf, what: String },
    #[error(transparent)]
    Dm(#[from] dm::DmError),
    #[error("{MKFS} on {}: {why}", .path.display())]
    Mkfs { path: PathBuf, why: String },
    #[error(
        "the state volume on {} has no ext4 filesystem; it is not formatted again (the operator \
         decides: recover it with cryptsetup, or blank the disk)",
        .path.display()
    )]
    NoFilesystem { path: PathBuf },
    #[error("cannot create {STATE_DIR}")]
    MkDir(#[source] std::io::Error),
    #[error("cannot mount the state volume on {STATE_DIR}: {0}")]
    Mount(nix::errno::Errno),
    #[error("state bookkeeping {}: {why}", .path.display())]
    Bookkeeping { path: PathBuf, why: String },
    #[error(
        "launch.toml asks for integrity = {want} but the LUKS2 volume on {} has {have}; \
         refusing to open it differently from what was asked",
        .path.display()
    )]
    IntegrityMismatch {
        path: PathBuf,
        want: bool,
        have: String,
    },
    #[error(
        "dm-integrity superblock on {} at byte {offset} is all zeros, but this boot did not \
         write the LUKS2 header (an existing volume): it is not initialized, wiped or \
         formatted (nothing was written); restore the superblock, or blank the disk to start \
         over",
        .path.display()
    )]
    IntegrityZeroed { path: PathBuf, offset: u64 },
    #[error("dm-integrity superblock on {} at byte {offset}: {why}", .path.display())]
    IntegritySuperblock {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    #[error("cannot wipe the fresh integrity volume {} at byte {offset}", .path.display())]
    Wipe {
        path: PathBuf,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
}

/// The device to use, waiting up to `wait` for it to appear.
pub fn find(
    sys: &Path,
    dev: &Path,
    spec: Option<&StateDevice>,
    wait: Duration,
) -> Result<BlockDev, StateError> {
    let describe = match spec {
        None => format!("the DPS /var partition type {VAR_PARTITION_TYPE}"),
        Some(spec) => spec.to_string(),
    };
    let started = Instant::now();
    loop {
        let scan = blockdev::scan(sys, dev);
        let found: Vec<&BlockDev> = scan.devices.iter().filter(|d| matches(d, spec)).collect();
        match found.as_slice() {
            [one] => return Ok((*one).clone()),
            [] => {}
            many => {
                return Err(StateError::Ambiguous {
                    spec: describe,
                    which: many.iter().map(|d| d.name.clone()).collect(),
                });
            }
        }
        if started.elapsed() >= wait {
            // With the cloud's name for each disk, so a typo in a device name or LUN shows.
            let mut seen: Vec<String> = scan
                .devices
                .iter()
                .map(|d| match &d.cloud {
                    Some(c) => format!("{} ({c})", d.name),
                    None => d.name.clone(),
                })
                .collect();
            seen.extend(
                scan.gpt_errors
                    .iter()
                    .map(|(disk, e)| format!("{disk}: GPT refused: {e}")),
            );
            seen.extend(
                scan.cloud_errors
                    .iter()
                    .map(|(disk, e)| format!("{disk}: no cloud name: {e}")),
            );
            return Err(StateError::NotFound {
                spec: describe,
                waited: wait,
                seen: if seen.is_empty() {
                    String::new()
                } else {
                    format!(" (seen: {})", seen.join(", "))
                },
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn matches(d: &BlockDev, spec: Option<&StateDevice>) -> bool {
    match spec {
        None => d
            .type_guid
            .is_some_and(|g| g.to_string() == VAR_PARTITION_TYPE),
        Some(StateDevice::Type(t)) => d.type_guid.is_some_and(|g| g.to_string() == *t),
        Some(StateDevice::PartLabel(l)) => d.partlabel.as_deref() == Some(l.as_str()),
        Some(StateDevice::Serial(s)) => !d.is_partition && d.serial.as_deref() == Some(s.as_str()),
        Some(StateDevice::Gcp(n)) => !d.is_partition && d.cloud == Some(CloudDisk::Gcp(n.clone())),
        Some(StateDevice::Aws(v)) => !d.is_partition && d.cloud == Some(CloudDisk::Aws(v.clone())),
        Some(StateDevice::AzureLun(l)) => {
            !d.is_partition && d.cloud == Some(CloudDisk::AzureLun(*l))
        }
    }
}

/// The unlocked volume.
pub struct Unlocked {
    pub header: luks2::Header,
    pub volume_key: luks2::VolumeKey,
    /// This boot created the LUKS2 volume (so mkfs may run).
    pub formatted: bool,
    pub device: BlockDev,
}

/// Open the LUKS2 volume on `device` with `key`, formatting it first when it is blank.
pub fn unlock(device: &BlockDev, key: &[u8], integrity: bool) -> Result<Unlocked, StateError> {
    let path = device.path.clone();
    let luks = |source| StateError::Luks {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_EXCL)
        .open(&path)
        .map_err(|source| StateError::Open {
            path: path.clone(),
            source,
        })?;
    let formatted = match luks2::probe(&mut file).map_err(luks)? {
        luks2::Kind::Luks2 => false,
        luks2::Kind::Foreign(what) => return Err(StateError::Foreign { path, what }),
        luks2::Kind::Zeroed => {
            let size = file
                .seek(SeekFrom::End(0))
                .map_err(|source| StateError::Open {
                    path: path.clone(),
                    source,
                })?;
            // Whole 4 KiB sectors: the tail of an odd-sized disk stays unused.
            let size = size - size % u64::from(luks2::SECTOR_SIZE);
            let opts = luks2::FormatOptions {
                integrity,
                ..luks2::FormatOptions::default()
            };
            luks2::format(&mut file, size, key, &opts).map_err(luks)?;
            file.sync_all().map_err(|source| StateError::Open {
                path: path.clone(),
                source,
            })?;
            true
        }
    };
    // Also right after formatting: what we open is what is on the disk, validated.
    let (header, volume_key) = luks2::open(&mut file, key).map_err(luks)?;
    let have = header.segment().integrity.clone();
    if have.is_some() != integrity {
        return Err(StateError::IntegrityMismatch {
            path,
            want: integrity,
            have: have.unwrap_or_else(|| "no integrity".into()),
        });
    }
    Ok(Unlocked {
        header,
        volume_key,
        formatted,
        device: device.clone(),
    })
}

/// The dm-crypt device for the volume. The table carries the volume key, so it is loaded with
/// DM_SECURE_DATA.
/// The state volume as mapped: the dm-crypt device, the dm-integrity device under it, and
/// what the initialization of a fresh dm-integrity device took.
pub struct Activated {
    pub mapped: dm::Mapped,
    pub integrity: Option<dm::Mapped>,
    pub wiped: Option<Wiped>,
}

/// A fresh dm-integrity device written once through dm-crypt.
pub struct Wiped {
    pub bytes: u64,
    pub ms: u128,
}

/// Maps the volume. With integrity and a zeroed dm-integrity superblock on a volume whose
/// LUKS2 header this boot wrote, the kernel formats dm-integrity, and the volume is first
/// mapped without the journal and written once in full (so every sector has a valid tag: what
/// cryptsetup does at luksFormat), then unmapped and mapped for use, with the journal.
///
/// A zeroed superblock under a header this boot did not write is refused before anything is
/// mapped or written: the host can zero 4 KiB it does not need the key for, and initializing
/// would wipe the volume and make a new filesystem under the same LUKS UUID (the one that is
/// measured), so the data would be gone without any sign a verifier could see.
pub fn activate(unlocked: &Unlocked) -> Result<Activated, StateError> {
    let wiped = if unlocked.header.segment().integrity.is_some() {
        let fresh = integrity_superblock(unlocked)?.is_none();
        if fresh && !unlocked.formatted {
            return Err(StateError::IntegrityZeroed {
                path: unlocked.device.path.clone(),
                offset: unlocked.header.segment().offset,
            });
        }
        if fresh {
            let t = Instant::now();
            let wipe_map = activate_with(unlocked, false)?;
            let bytes = wipe(&wipe_map.mapped.path);
            dm::remove(MAPPER_NAME);
            dm::remove(INTEGRITY_NAME);
            Some(Wiped {
                bytes: bytes?,
                ms: t.elapsed().as_millis(),
            })
        } else {
            None
        }
    } else {
        None
    };
    let mut activated = activate_with(unlocked, true)?;
    activated.wiped = wiped;
    Ok(activated)
}

fn activate_with(unlocked: &Unlocked, journal: bool) -> Result<Activated, StateError> {
    let segment = unlocked.header.segment();
    let hex_uuid = unlocked.header.uuid().replace('-', "");
    // cryptsetup's DM UUID forms, so tools recognise the mappings.
    let uuid = format!("CRYPT-LUKS2-{hex_uuid}-{MAPPER_NAME}");
    let (sectors, lower, integrity) = if segment.integrity.is_some() {
        let (dif, sectors) = activate_integrity(unlocked, &hex_uuid, journal)?;
        (sectors, dif.devno.clone(), Some(dif))
    } else {
        (
            segment.data_size(unlocked.device.size) / 512,
            unlocked.device.devno.clone(),
            None,
        )
    };
    let params = segment.dm_crypt_params(&unlocked.volume_key, &lower);
    let target = dm::Target {
        sectors,
        kind: "crypt",
        params: Zeroizing::new(params.to_string()),
    };
    let mapped = match dm::create(MAPPER_NAME, &uuid, &target, false, true) {
        Ok(m) => m,
        Err(e) => {
            if integrity.is_some() {
                dm::remove(INTEGRITY_NAME);
            }
            return Err(e.into());
        }
    };
    Ok(Activated {
        mapped,
        integrity,
        wiped: None,
    })
}

/// What the dm-integrity superblock at the data offset says: `None` when it is all zeros
/// (the kernel formats it on activation), else `provided_data_sectors`.
fn integrity_superblock(unlocked: &Unlocked) -> Result<Option<u64>, StateError> {
    let path = &unlocked.device.path;
    let offset = unlocked.header.segment().offset;
    let bad = |why: String| StateError::IntegritySuperblock {
        path: path.clone(),
        offset,
        why,
    };
    // O_DIRECT: the page cache may still hold what was there before the kernel formatted it.
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_DIRECT)
        .open(path)
        .map_err(|source| StateError::Open {
            path: path.clone(),
            source,
        })?;
    let mut buf = Box::new(AlignedBlock([0u8; 4096]));
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.read_exact(&mut buf.0))
        .map_err(|e| bad(e.to_string()))?;
    let sb = &buf.0;
    if sb.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    if &sb[..8] != INTEGRITY_MAGIC {
        return Err(bad("bad magic".into()));
    }
    let tag = u16::from_le_bytes([sb[10], sb[11]]);
    let mut provided = [0u8; 8];
    provided.copy_from_slice(&sb[16..24]);
    let provided = u64::from_le_bytes(provided);
    let log2_spb = sb[28];
    let want_spb = (unlocked.header.segment().sector_size / 512).trailing_zeros() as u8;
    if u32::from(tag) != luks2::INTEGRITY_TAG_SIZE || log2_spb != want_spb {
        return Err(bad(format!(
            "tag size {tag}, 2^{log2_spb} sectors per block (want {}, 2^{want_spb})",
            luks2::INTEGRITY_TAG_SIZE
        )));
    }
    let provided = provided - provided % (1u64 << want_spb);
    if provided == 0 || provided > unlocked.device.size / 512 {
        return Err(bad(format!("{provided} provided data sectors")));
    }
    Ok(Some(provided))
}

#[repr(C, align(4096))]
struct AlignedBlock([u8; 4096]);

/// The dm-integrity device under dm-crypt and its length in sectors. A zeroed superblock is
/// formatted by the kernel on a first, one-block activation (as cryptsetup does); the real
/// device then maps the `provided_data_sectors` the superblock records.
fn activate_integrity(
    unlocked: &Unlocked,
    hex_uuid: &str,
    journal: bool,
) -> Result<(dm::Mapped, u64), StateError> {
    let segment = unlocked.header.segment();
    let uuid = format!("CRYPT-SUBDEV-{hex_uuid}-{INTEGRITY_NAME}");
    let params = segment.dm_integrity_params(&unlocked.device.devno, journal);
    let provided = match integrity_superblock(unlocked)? {
        Some(p) => p,
        // activate() checked this already; checked again at the point of writing.
        None if !unlocked.formatted => {
            return Err(StateError::IntegrityZeroed {
                path: unlocked.device.path.clone(),
                offset: segment.offset,
            });
        }
        None => {
            // Formatted with the journal, as cryptsetup formats: the superblock then has
            // journal sections for every later activation with the journal.
            let probe = dm::Target {
                sectors: u64::from(segment.sector_size / 512),
                kind: "integrity",
                params: Zeroizing::new(segment.dm_integrity_params(&unlocked.device.devno, true)),
            };
            dm::create(INTEGRITY_NAME, &uuid, &probe, false, false)?;
            dm::remove(INTEGRITY_NAME);
            integrity_superblock(unlocked)?.ok_or_else(|| StateError::IntegritySuperblock {
                path: unlocked.device.path.clone(),
                offset: segment.offset,
                why: "still zero after the kernel's format".into(),
            })?
        }
    };
    let target = dm::Target {
        sectors: provided,
        kind: "integrity",
        params: Zeroizing::new(params),
    };
    let mapped = dm::create(INTEGRITY_NAME, &uuid, &target, false, false)?;
    Ok((mapped, provided))
}

/// Writes zeros once through dm-crypt over the whole volume, so that every sector of a fresh
/// dm-integrity device carries a valid tag (cryptsetup does the same at format). Logs
/// progress every tenth. Returns the bytes written.
pub fn wipe(dev: &Path) -> Result<u64, StateError> {
    let err = |offset: u64| {
        let path = dev.to_path_buf();
        move |source| StateError::Wipe {
            path,
            offset,
            source,
        }
    };
    let mut f = OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_CLOEXEC)
        .open(dev)
        .map_err(err(0))?;
    let size = f.seek(SeekFrom::End(0)).map_err(err(0))?;
    f.seek(SeekFrom::Start(0)).map_err(err(0))?;
    let zeros = vec![0u8; WIPE_CHUNK];
    let started = Instant::now();
    let mut at = 0u64;
    let step = (size / 10).max(1);
    let mut next_report = step;
    while at < size {
        let n = (size - at).min(WIPE_CHUNK as u64) as usize;
        f.write_all(&zeros[..n]).map_err(err(at))?;
        at += n as u64;
        if at >= next_report && at < size {
            f.sync_data().map_err(err(at))?;
            tracing::info!(
                "wiping the fresh integrity volume: {} of {} MiB ({} s)",
                at >> 20,
                size >> 20,
                started.elapsed().as_secs()
            );
            next_report += step;
        }
    }
    f.sync_all().map_err(err(at))?;
    Ok(size)
}

/// Whether `dev` starts with an ext4 (or ext2/3) superblock.
pub fn has_ext4(dev: &Path) -> Result<bool, StateError> {
    let mut f = File::open(dev).map_err(|source| StateError::Open {
        path: dev.to_path_buf(),
        source,
    })?;
    let mut sb = [0u8; 2048];
    f.read_exact(&mut sb).map_err(|source| StateError::Open {
        path: dev.to_path_buf(),
        source,
    })?;
    Ok(u16::from_le_bytes([sb[1024 + 56], sb[1024 + 57]]) == EXT4_MAGIC)
}

/// `mkfs.ext4` from the verified root on the new volume.
pub fn mkfs(dev: &Path) -> Result<(), StateError> {
    let out = std::process::Command::new(MKFS)
        .args(["-q", "-F", "-m", "0", "-L", MAPPER_NAME, "-E", "nodiscard"])
        .arg(dev)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| StateError::Mkfs {
            path: dev.to_path_buf(),
            why: e.to_string(),
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(StateError::Mkfs {
            path: dev.to_path_buf(),
            why: format!(
                "{} ({})",
                out.status,
                err.trim().chars().take(300).collect::<String>()
            ),
        });
    }
    Ok(())
}

/// Mount the volume's ext4 at [`STATE_DIR`].
pub fn mount_volume(dev: &Path) -> Result<(), StateError> {
    std::fs::create_dir_all(STATE_DIR).map_err(StateError::MkDir)?;
    mount(
        Some(dev),
        STATE_DIR,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("errors=remount-ro"),
    )
    .map_err(StateError::Mount)
}

/// Count this boot in the volume (`.cvm-agent/boot-count`, replaced atomically) and return the
/// new count: 1 on the boot that formatted the volume. A count that does not parse stops the
/// boot: the volume's content is not what this agent wrote.
pub fn count_boot(root: &Path) -> Result<u64, StateError> {
    let dir = root.join(AGENT_DIR);
    let path = dir.join(BOOT_COUNT);
    let bad = |why: String| StateError::Bookkeeping {
        path: path.clone(),
        why,
    };
    std::fs::create_dir_all(&dir).map_err(|e| bad(e.to_string()))?;
    let previous = match std::fs::read(&path) {
        Ok(b) if b.len() <= 32 => std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| bad("not a number".into()))?,
        Ok(_) => return Err(bad("larger than a number".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(bad(e.to_string())),
    };
    let count = previous
        .checked_add(1)
        .ok_or_else(|| bad("overflow".into()))?;
    let tmp = dir.join(format!("{BOOT_COUNT}.new"));
    let mut f = File::create(&tmp).map_err(|e| bad(e.to_string()))?;
    f.write_all(format!("{count}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| bad(e.to_string()))?;
    std::fs::rename(&tmp, &path).map_err(|e| bad(e.to_string()))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| bad(e.to_string()))?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_count_counts_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(count_boot(dir.path()).unwrap(), 1);
        assert_eq!(count_boot(dir.path()).unwrap(), 2);
        std::fs::write(dir.path().join(".cvm-agent/boot-count"), "x").unwrap();
        assert!(count_boot(dir.path()).is_err());
    }

    fn dev(name: &str, part: bool) -> BlockDev {
        BlockDev {
            name: name.into(),
            path: PathBuf::from(format!("/dev/{name}")),
            devno: "254:0".into(),
            size: 1 << 30,
            partuuid: None,
            partlabel: None,
            type_guid: None,
            serial: None,
            cloud: None,
            is_partition: part,
        }
    }

    /// A fake sysfs + /dev with whole disks carrying `serials` (no GPT on them).
    fn fake_disks(serials: &[&str]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (i, serial) in serials.iter().enumerate() {
            let name = format!("vd{}", (b'b' + i as u8) as char);
            let sys = root.path().join("sys/class/block").join(&name);
            std::fs::create_dir_all(&sys).unwrap();
            std::fs::write(sys.join("dev"), format!("254:{i}\n")).unwrap();
            std::fs::write(sys.join("size"), "131072\n").unwrap();
            std::fs::write(sys.join("serial"), format!("{serial}\n")).unwrap();
            std::fs::create_dir_all(root.path().join("dev")).unwrap();
            std::fs::write(root.path().join("dev").join(&name), [0u8; 4096]).unwrap();
        }
        root
    }

    #[test]
    fn find_refuses_twins_and_names_what_it_saw() {
        let spec = StateDevice::Serial("cvm-state".into());
        let one = fake_disks(&["cvm-state", "other"]);
        let (sys, dev) = (one.path().join("sys"), one.path().join("dev"));
        assert_eq!(
            find(&sys, &dev, Some(&spec), Duration::ZERO).unwrap().name,
            "vdb"
        );
        let twins = fake_disks(&["cvm-state", "cvm-state"]);
        let (sys, dev) = (twins.path().join("sys"), twins.path().join("dev"));
        let err = find(&sys, &dev, Some(&spec), Duration::ZERO).unwrap_err();
        assert!(
            matches!(&err, StateError::Ambiguous { which, .. } if which == &["vdb", "vdc"]),
            "{err}"
        );
        let none = fake_disks(&["other"]);
        let (sys, dev) = (none.path().join("sys"), none.path().join("dev"));
        let err = find(&sys, &dev, None, Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DPS /var") && err.contains("seen: vdb"),
            "{err}"
        );
    }

    #[test]
    fn cloud_disks_are_found_by_their_cloud_names() {
        use crate::cloud_disk::tests::{
            aws_disk, azure_disk, azure_nvme_disk, gcp_disk, gcp_nvme_disk,
        };
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path().join("sys");
        let dev = tmp.path().join("dev");
        gcp_disk(&sys, "sda", "boot");
        gcp_disk(&sys, "sdb", "cvm-state");
        aws_disk(&sys, "nvme1n1", "vol0123456789abcdef0");
        azure_disk(
            &sys,
            "sdc",
            "{f8b3781b-1e82-4818-a1c3-63d806ec15bb}",
            "1:0:0:0",
        );
        azure_disk(
            &sys,
            "sdd",
            "{f8b3781b-1e82-4818-a1c3-63d806ec15bb}",
            "1:0:0:2",
        );
        azure_nvme_disk(&sys, "nvme2n7", "7");
        // A PD-NVMe namespace whose device node is not there: the admin command cannot be
        // sent, and the reason is in the error.
        gcp_nvme_disk(&sys, "nvme0n1", 1);
        let find = |spec: &str| {
            let spec = StateDevice::parse(spec).unwrap();
            find(&sys, &dev, Some(&spec), Duration::ZERO)
        };
        assert_eq!(find("azure-lun:5").unwrap().name, "nvme2n7");
        assert_eq!(find("gcp:cvm-state").unwrap().name, "sdb");
        assert_eq!(find("aws:vol-0123456789abcdef0").unwrap().name, "nvme1n1");
        assert_eq!(find("azure-lun:2").unwrap().name, "sdd");
        assert_eq!(find("azure-lun:0").unwrap().name, "sdc");
        let err = find("gcp:cvm-stat").unwrap_err().to_string();
        assert!(err.contains("gcp:cvm-stat"), "{err}");
        assert!(err.contains("sdb (gcp:cvm-state)"), "{err}");
        assert!(err.contains("sdd (azure-lun:2)"), "{err}");
        assert!(
            err.contains("nvme0n1: no cloud name: GCP PD-NVMe: open "),
            "{err}"
        );
        assert!(find("azure-lun:1").is_err());
        assert!(find("aws:vol-0123456789abcdef1").is_err());
        // Two disks claiming one name: refused, not guessed.
        gcp_disk(&sys, "sde", "cvm-state");
        let err = find("gcp:cvm-state").unwrap_err();
        assert!(
            matches!(&err, StateError::Ambiguous { which, .. } if which == &["sdb", "sde"]),
            "{err}"
        );
    }

    #[test]
    fn device_matching() {
        let mut var = dev("vda2", true);
        var.type_guid = Some(VAR_PARTITION_TYPE.parse().unwrap());
        var.partlabel = Some("state".into());
        assert!(matches(&var, None));
        assert!(matches(&var, Some(&StateDevice::PartLabel("state".into()))));
        assert!(!matches(
            &var,
            Some(&StateDevice::PartLabel("other".into()))
        ));
        let mut disk = dev("vdb", false);
        disk.serial = Some("cvm-state".into());
        assert!(!matches(&disk, None));
        assert!(matches(
            &disk,
            Some(&StateDevice::Serial("cvm-state".into()))
        ));
        let mut part = dev("vdb1", true);
        part.serial = Some("cvm-state".into());
        assert!(!matches(
            &part,
            Some(&StateDevice::Serial("cvm-state".into()))
        ));
    }
}
