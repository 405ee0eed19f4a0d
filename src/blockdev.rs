//! Finding block devices the way the command line names them (PARTUUID=, PARTLABEL=, /dev/…),
//! with no udev and no blkid: sysfs lists the disks and partitions, and each disk's GPT is read
//! with our own strict parser.
//!
//! The host chooses which disks exist and what their tables say. A name that matches more than
//! one partition is therefore an error (a planted twin must not be picked by accident), and a
//! disk whose GPT does not parse is remembered so a "not found" error can say why.

use crate::cloud_disk::{self, CloudDisk};
use crate::cmdline::DeviceSpec;
use crate::gpt::{self, Guid};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("no block device matches {spec} within {waited:?}{seen}")]
    NotFound {
        spec: String,
        waited: Duration,
        seen: String,
    },
    #[error("{spec} matches more than one partition ({0}); refusing to guess", .which.join(", "))]
    Ambiguous { spec: String, which: Vec<String> },
    #[error("{0} is not a block device")]
    NotBlock(String),
}

/// One disk or partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDev {
    /// Kernel name: vda, vda1, nvme0n1p2.
    pub name: String,
    /// The devtmpfs node.
    pub path: PathBuf,
    /// "major:minor", as device-mapper tables take it.
    pub devno: String,
    pub size: u64,
    /// From the parent disk's GPT, for partitions.
    pub partuuid: Option<Guid>,
    pub partlabel: Option<String>,
    pub type_guid: Option<Guid>,
    /// The disk's serial (virtio-blk `serial=`, NVMe serial number), for whole disks.
    pub serial: Option<String>,
    /// The cloud's name for a whole disk (GCP device name, EBS volume id, Azure LUN).
    pub cloud: Option<CloudDisk>,
    /// Whether this is a partition (else a whole disk).
    pub is_partition: bool,
}

/// What a scan found, including disks whose GPT was refused.
#[derive(Debug, Default)]
pub struct Scan {
    pub devices: Vec<BlockDev>,
    pub gpt_errors: Vec<(String, String)>,
    /// Disks that look like a cloud's whose name did not read or parse, and why.
    pub cloud_errors: Vec<(String, String)>,
}

/// Device classes that never carry a root or state disk.
fn ignored(name: &str) -> bool {
    ["dm-", "loop", "ram", "zram", "sr", "fd", "md"]
        .iter()
        .any(|p| name.starts_with(p))
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    (text.len() < 4096).then(|| text.trim().to_string())
}

/// Scan `<sys>/class/block` and read the GPT of every whole disk from `<dev>/<name>`.
pub fn scan(sys: &Path, dev: &Path) -> Scan {
    let mut out = Scan::default();
    let Ok(entries) = std::fs::read_dir(sys.join("class/block")) else {
        return out;
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !ignored(n))
        .take(4096)
        .collect();
    names.sort();
    let mut disks = Vec::new();
    for name in &names {
        let base = sys.join("class/block").join(name);
        let Some(devno) = read_trimmed(&base.join("dev")) else {
            continue;
        };
        let sectors: u64 = read_trimmed(&base.join("size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let partition: Option<u32> =
            read_trimmed(&base.join("partition")).and_then(|s| s.parse().ok());
        let serial = if partition.is_none() {
            read_trimmed(&base.join("serial"))
                .or_else(|| read_trimmed(&base.join("device/serial")))
                .filter(|s| !s.is_empty())
        } else {
            None
        };
        let cloud = if partition.is_none() {
            cloud_disk::identify(sys, dev, name).unwrap_or_else(|e| {
                out.cloud_errors.push((name.clone(), e.to_string()));
                None
            })
        } else {
            None
        };
        let bd = BlockDev {
            name: name.clone(),
            path: dev.join(name),
            devno,
            size: sectors.saturating_mul(512),
            partuuid: None,
            partlabel: None,
            type_guid: None,
            serial,
            cloud,
            is_partition: partition.is_some(),
        };
        if partition.is_none() {
            disks.push(bd.clone());
        }
        out.devices.push(bd);
    }
    for disk in disks {
        let Ok(file) = File::open(&disk.path) else {
            continue;
        };
        let parts = match gpt::parse_gpt(|off, buf| file.read_exact_at(buf, off), disk.size) {
            Ok(p) => p,
            Err(e) => {
                out.gpt_errors.push((disk.name.clone(), e.to_string()));
                continue;
            }
        };
        for part in parts {
            // The kernel names the partition after the disk and its number (vda1, nvme0n1p1);
            // sysfs says which child has which number.
            let child = out.devices.iter_mut().find(|d| {
                d.name != disk.name
                    && d.name.starts_with(&disk.name)
                    && read_trimmed(&sys.join("class/block").join(&d.name).join("partition"))
                        .and_then(|s| s.parse::<u32>().ok())
                        == Some(part.number)
                    && sys
                        .join("class/block")
                        .join(&disk.name)
                        .join(&d.name)
                        .exists()
            });
            if let Some(child) = child {
                child.partuuid = Some(part.unique_guid);
                child.partlabel = Some(part.name.clone());
                child.type_guid = Some(part.type_guid);
            }
        }
    }
    out
}

pub fn describe(spec: &DeviceSpec) -> String {
    match spec {
        DeviceSpec::PartUuid(u) => format!("PARTUUID={u}"),
        DeviceSpec::PartLabel(l) => format!("PARTLABEL={l}"),
        DeviceSpec::Path(p) => p.clone(),
    }
}

/// Find the one device `spec` names in a scan. Ok(None) means "not (yet) there".
pub fn resolve(scan: &Scan, spec: &DeviceSpec) -> Result<Option<BlockDev>, BlockError> {
    let matches: Vec<&BlockDev> = match spec {
        DeviceSpec::PartUuid(u) => scan
            .devices
            .iter()
            .filter(|d| d.partuuid.is_some_and(|g| g.to_string() == *u))
            .collect(),
        DeviceSpec::PartLabel(l) => scan
            .devices
            .iter()
            .filter(|d| d.partlabel.as_deref() == Some(l.as_str()))
            .collect(),
        DeviceSpec::Path(p) => scan
            .devices
            .iter()
            .filter(|d| d.path == Path::new(p))
            .collect(),
    };
    match matches.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some((*one).clone())),
        many => Err(BlockError::Ambiguous {
            spec: describe(spec),
            which: many.iter().map(|d| d.name.clone()).collect(),
        }),
    }
}

/// Wait until every spec resolves to exactly one device, or time out. Disks appear while
/// drivers probe, so this rescans every 50 ms.
pub fn wait_for(
    sys: &Path,
    dev: &Path,
    specs: &[&DeviceSpec],
    timeout: Duration,
) -> Result<Vec<BlockDev>, BlockError> {
    let started = Instant::now();
    loop {
        let found = scan(sys, dev);
        let mut out = Vec::new();
        let mut missing = None;
        for spec in specs {
            match resolve(&found, spec)? {
                Some(d) => out.push(d),
                None => {
                    missing = Some(*spec);
                    break;
                }
            }
        }
        let Some(missing) = missing else {
            return Ok(out);
        };
        if started.elapsed() >= timeout {
            let mut seen: Vec<String> = found
                .devices
                .iter()
                .map(|d| match &d.partuuid {
                    Some(u) => format!("{} PARTUUID={u}", d.name),
                    None => d.name.clone(),
                })
                .collect();
            seen.extend(
                found
                    .gpt_errors
                    .iter()
                    .map(|(disk, e)| format!("{disk}: {e}")),
            );
            return Err(BlockError::NotFound {
                spec: describe(missing),
                waited: timeout,
                seen: if seen.is_empty() {
                    "; no block devices".to_string()
                } else {
                    format!("; seen: {}", seen.join(", "))
                },
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpt::{Gpt, NewPartition};

    /// A fake sysfs + dev tree: one disk image file with a GPT, its partitions listed in sysfs.
    fn fake(parts: &[(&str, Guid)]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path().join("sys/class/block");
        let dev = tmp.path().join("dev");
        std::fs::create_dir_all(&dev).unwrap();
        let new: Vec<NewPartition> = parts
            .iter()
            .map(|(name, uuid)| NewPartition {
                type_guid: gpt::types::ROOT_X86_64,
                unique_guid: *uuid,
                name: name.to_string(),
                size: 1 << 20,
            })
            .collect();
        let table = Gpt::new(Guid::from_u128(7), &new).unwrap();
        let mut disk = vec![0u8; table.disk_size as usize];
        table
            .write(|off, data| {
                disk[off as usize..off as usize + data.len()].copy_from_slice(data);
                Ok(())
            })
            .unwrap();
        std::fs::write(dev.join("vda"), &disk).unwrap();
        let d = sys.join("vda");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("dev"), "254:0\n").unwrap();
        std::fs::write(d.join("size"), format!("{}\n", disk.len() / 512)).unwrap();
        for i in 1..=parts.len() {
            let name = format!("vda{i}");
            for dir in [sys.join(&name), d.join(&name)] {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("dev"), format!("254:{i}\n")).unwrap();
                std::fs::write(dir.join("size"), "2048\n").unwrap();
                std::fs::write(dir.join("partition"), format!("{i}\n")).unwrap();
            }
        }
        tmp
    }

    #[test]
    fn finds_partitions_by_partuuid_and_label() {
        let a = Guid::from_u128(0x1111);
        let b = Guid::from_u128(0x2222);
        let tmp = fake(&[("root", a), ("root-verity", b)]);
        let s = scan(&tmp.path().join("sys"), &tmp.path().join("dev"));
        assert!(s.gpt_errors.is_empty(), "{:?}", s.gpt_errors);
        let by_uuid = resolve(&s, &DeviceSpec::PartUuid(b.to_string()))
            .unwrap()
            .unwrap();
        assert_eq!(by_uuid.name, "vda2");
        assert_eq!(by_uuid.devno, "254:2");
        assert_eq!(by_uuid.size, 2048 * 512);
        let by_label = resolve(&s, &DeviceSpec::PartLabel("root".into()))
            .unwrap()
            .unwrap();
        assert_eq!(by_label.name, "vda1");
        assert!(
            resolve(&s, &DeviceSpec::PartUuid(Guid::from_u128(9).to_string()))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn duplicate_labels_are_ambiguous() {
        let tmp = fake(&[("root", Guid::from_u128(1)), ("root", Guid::from_u128(2))]);
        let s = scan(&tmp.path().join("sys"), &tmp.path().join("dev"));
        let err = resolve(&s, &DeviceSpec::PartLabel("root".into())).unwrap_err();
        assert!(err.to_string().contains("vda1, vda2"), "{err}");
    }

    #[test]
    fn timeout_names_what_was_seen_and_bad_tables() {
        let tmp = fake(&[("root", Guid::from_u128(1))]);
        // Corrupt the primary GPT header's CRC.
        let disk = tmp.path().join("dev/vda");
        let mut bytes = std::fs::read(&disk).unwrap();
        bytes[512 + 16] ^= 0xff;
        std::fs::write(&disk, bytes).unwrap();
        let spec = DeviceSpec::PartUuid(Guid::from_u128(1).to_string());
        let err = wait_for(
            &tmp.path().join("sys"),
            &tmp.path().join("dev"),
            &[&spec],
            Duration::from_millis(60),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("no block device matches PARTUUID="),
            "{msg}"
        );
        assert!(msg.contains("vda: "), "{msg}");
    }
}
