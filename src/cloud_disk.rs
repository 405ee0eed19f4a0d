//! The names clouds give disks, read from sysfs the way their udev rules read them (the agent
//! is PID 1: there is no udev and no /dev/disk/by-id).
//!
//! - GCP persistent disk on SCSI (virtio-scsi): `google-<device-name>` comes from
//!   `scsi_id`, which takes the unit serial number of VPD page 0x80; the kernel exposes the
//!   raw page as `device/vpd_pg80`. The vendor is "Google". (PD on NVMe keeps the name in the
//!   vendor-specific bytes of Identify Namespace, which sysfs does not expose: not supported.)
//! - AWS EBS on NVMe: the controller's serial number is the volume id without its dash
//!   (`vol0123…`), model "Amazon Elastic Block Store".
//! - Azure data disk on hv_storvsc: the LUN is the last field of the SCSI address
//!   (`device` → `H:C:T:L`), on the VMBus SCSI controller whose `device_id` is
//!   `{f8b3781b-1e82-4818-a1c3-63d806ec15bb}` (Azure's "scsi1", where data disks attach; the
//!   OS disk and the resource disk sit on other controllers). The vendor is "Msft".
//!
//! The host writes every one of these values. They only select which disk the state volume
//! is on; LUKS2 and the KBS-released key decide whether it opens, so a wrong disk fails closed.
//! Values are still read with a size bound, parsed strictly, and a disk that does not parse
//! simply has no cloud identity.

use std::io::Read;
use std::path::{Path, PathBuf};

/// A disk's identity in its cloud's own terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudDisk {
    /// GCP device name.
    Gcp(String),
    /// AWS EBS volume id, with its dash (`vol-0123…`).
    Aws(String),
    /// Azure data-disk LUN.
    AzureLun(u8),
}

impl std::fmt::Display for CloudDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloudDisk::Gcp(n) => write!(f, "gcp:{n}"),
            CloudDisk::Aws(v) => write!(f, "aws:{v}"),
            CloudDisk::AzureLun(l) => write!(f, "azure-lun:{l}"),
        }
    }
}

/// The VMBus instance id of the SCSI controller Azure attaches data disks to.
const AZURE_DATA_CONTROLLER: &str = "{f8b3781b-1e82-4818-a1c3-63d806ec15bb}";
const EBS_MODEL: &str = "Amazon Elastic Block Store";
/// SPC-4 §7.8.15: Unit Serial Number VPD page.
const VPD_UNIT_SERIAL: u8 = 0x80;
/// sysfs attributes are at most a page; the VPD page is at most 4 + 255 bytes on GCP.
const MAX_ATTR: u64 = 4096;
/// Ancestors searched for the controller's `device_id` (disk → target → host → VMBus device).
const MAX_ANCESTORS: usize = 8;

fn read_raw(path: &Path) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_ATTR + 1)
        .read_to_end(&mut data)
        .ok()?;
    (data.len() as u64 <= MAX_ATTR).then_some(data)
}

fn read_text(path: &Path) -> Option<String> {
    let data = read_raw(path)?;
    let text = String::from_utf8(data).ok()?;
    Some(text.trim().to_string())
}

/// The identity of the whole disk `name` under `<sys>/class/block`, if it has one.
pub fn identify(sys: &Path, name: &str) -> Option<CloudDisk> {
    let device = sys.join("class/block").join(name).join("device");
    let vendor = read_text(&device.join("vendor"));
    match vendor.as_deref() {
        Some("Google") => return gcp(&device),
        Some("Msft") => return azure(&device),
        _ => {}
    }
    if read_text(&device.join("model")).as_deref() == Some(EBS_MODEL) {
        return aws(&device);
    }
    None
}

fn gcp(device: &Path) -> Option<CloudDisk> {
    let serial = vpd_unit_serial(&read_raw(&device.join("vpd_pg80"))?)?;
    valid_gcp_name(&serial).then_some(CloudDisk::Gcp(serial))
}

/// The serial number in a raw Unit Serial Number VPD page: a 4-byte header (peripheral byte,
/// page code, 16-bit big-endian page length), then the ASCII serial, space-padded.
pub(crate) fn vpd_unit_serial(page: &[u8]) -> Option<String> {
    let [_, code, hi, lo, rest @ ..] = page else {
        return None;
    };
    if *code != VPD_UNIT_SERIAL {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*hi, *lo]));
    let serial = rest.get(..len)?;
    if !serial.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return None;
    }
    let text = std::str::from_utf8(serial).ok()?.trim_matches(' ');
    (!text.is_empty()).then(|| text.to_string())
}

/// GCP's device-name rule (an RFC 1035 label of at most 63 characters); launch.toml's parser
/// applies the same one, so a disk claiming anything else can never match.
fn valid_gcp_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

fn aws(device: &Path) -> Option<CloudDisk> {
    let serial = read_text(&device.join("serial"))?;
    let hex = serial.strip_prefix("vol")?;
    let ok = matches!(hex.len(), 8 | 17)
        && hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    ok.then(|| CloudDisk::Aws(format!("vol-{hex}")))
}

fn azure(device: &Path) -> Option<CloudDisk> {
    let real = std::fs::canonicalize(device).ok()?;
    let lun = scsi_lun(real.file_name()?.to_str()?)?;
    let on_data_controller = ancestors(&real)
        .any(|dir| read_text(&dir.join("device_id")).as_deref() == Some(AZURE_DATA_CONTROLLER));
    on_data_controller.then_some(CloudDisk::AzureLun(lun))
}

fn ancestors(dir: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    dir.ancestors()
        .skip(1)
        .take(MAX_ANCESTORS)
        .map(Path::to_path_buf)
}

/// The LUN of a SCSI device name `H:C:T:L`; Azure LUNs are 0-63.
pub(crate) fn scsi_lun(name: &str) -> Option<u8> {
    let fields: Vec<&str> = name.split(':').collect();
    let [h, c, t, l] = fields.as_slice() else {
        return None;
    };
    let number = |s: &str| !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit());
    if !(number(h) && number(c) && number(t) && number(l)) {
        return None;
    }
    l.parse::<u8>().ok().filter(|n| *n <= 63)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// A whole disk `name` whose `device` link points at `device_dir` (created), the way
    /// sysfs links a block device to its SCSI or NVMe parent. Returns `device_dir`.
    pub(crate) fn fake_disk(sys: &Path, name: &str, device_dir: &str) -> PathBuf {
        let dev = sys.join("devices").join(device_dir);
        fs::create_dir_all(&dev).unwrap();
        let block = dev.join("block").join(name);
        fs::create_dir_all(&block).unwrap();
        symlink(&dev, block.join("device")).unwrap();
        // What blockdev::scan needs to list it.
        fs::write(block.join("dev"), "8:0\n").unwrap();
        fs::write(block.join("size"), "2097152\n").unwrap();
        fs::create_dir_all(sys.join("class/block")).unwrap();
        symlink(&block, sys.join("class/block").join(name)).unwrap();
        dev
    }

    pub(crate) fn vpd80(serial: &str) -> Vec<u8> {
        let mut page = vec![0, 0x80, 0, serial.len() as u8];
        page.extend(serial.as_bytes());
        page
    }

    /// GCP: virtio-scsi PD, `sdb`, device name in VPD page 0x80.
    pub(crate) fn gcp_disk(sys: &Path, name: &str, device_name: &str) {
        let dev = fake_disk(
            sys,
            name,
            &format!("pci0000:00/0000:00:03.0/virtio0/host0/target0:0:{name}/0:0:1:0"),
        );
        fs::write(dev.join("vendor"), "Google  \n").unwrap();
        fs::write(dev.join("model"), "PersistentDisk  \n").unwrap();
        fs::write(dev.join("vpd_pg80"), vpd80(device_name)).unwrap();
    }

    /// AWS: an EBS NVMe namespace whose controller carries the volume id.
    pub(crate) fn aws_disk(sys: &Path, name: &str, serial: &str) {
        let dev = fake_disk(
            sys,
            name,
            &format!("pci0000:00/0000:00:1f.0/nvme/{name}-ctrl"),
        );
        fs::write(
            dev.join("model"),
            "Amazon Elastic Block Store              \n",
        )
        .unwrap();
        fs::write(dev.join("serial"), format!("{serial}\n")).unwrap();
    }

    /// Azure: a storvsc disk at `H:C:T:L` under the VMBus controller with `controller` id.
    pub(crate) fn azure_disk(sys: &Path, name: &str, controller: &str, hctl: &str) {
        let guid = controller.trim_matches(|c| c == '{' || c == '}');
        let vmbus = format!("LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00/{guid}");
        let host = hctl.split(':').next().unwrap();
        let dev = fake_disk(
            sys,
            name,
            &format!(
                "{vmbus}/host{host}/target{}/{hctl}",
                &hctl[..hctl.len() - 2]
            ),
        );
        fs::write(
            sys.join("devices").join(&vmbus).join("device_id"),
            format!("{controller}\n"),
        )
        .unwrap();
        fs::write(dev.join("vendor"), "Msft    \n").unwrap();
        fs::write(dev.join("model"), "Virtual Disk    \n").unwrap();
    }

    #[test]
    fn each_cloud_identity_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        gcp_disk(sys, "sdb", "cvm-state");
        aws_disk(sys, "nvme1n1", "vol0123456789abcdef0");
        azure_disk(sys, "sdc", AZURE_DATA_CONTROLLER, "1:0:0:3");
        // The Azure OS disk: LUN 0 on another controller.
        azure_disk(
            sys,
            "sda",
            "{00000000-0000-8899-0000-000000000000}",
            "0:0:0:0",
        );
        // A plain virtio disk.
        fake_disk(sys, "vda", "pci0000:00/0000:00:04.0/virtio1");
        assert_eq!(
            identify(sys, "sdb"),
            Some(CloudDisk::Gcp("cvm-state".into()))
        );
        assert_eq!(
            identify(sys, "nvme1n1"),
            Some(CloudDisk::Aws("vol-0123456789abcdef0".into()))
        );
        assert_eq!(identify(sys, "sdc"), Some(CloudDisk::AzureLun(3)));
        assert_eq!(identify(sys, "sda"), None);
        assert_eq!(identify(sys, "vda"), None);
        assert_eq!(identify(sys, "nosuch"), None);
        assert_eq!(
            CloudDisk::Aws("vol-0123456789abcdef0".into()).to_string(),
            "aws:vol-0123456789abcdef0"
        );
    }

    #[test]
    fn hostile_values_give_no_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        gcp_disk(sys, "sdb", "Not_A_Name");
        aws_disk(sys, "nvme1n1", "vol-0123456789abcdef0");
        aws_disk(sys, "nvme2n1", "vol0123");
        // An EBS serial on a disk that is not EBS.
        let dev = fake_disk(sys, "nvme3n1", "pci0000:00/0000:00:1e.0/nvme/x");
        fs::write(dev.join("model"), "QEMU NVMe Ctrl\n").unwrap();
        fs::write(dev.join("serial"), "vol0123456789abcdef0\n").unwrap();
        for name in ["sdb", "nvme1n1", "nvme2n1", "nvme3n1"] {
            assert_eq!(identify(sys, name), None, "{name}");
        }
        // An attribute larger than a page is not read at all.
        let dev = fake_disk(sys, "sdz", "big/0:0:0:1");
        fs::write(dev.join("vendor"), "Google\n").unwrap();
        fs::write(dev.join("vpd_pg80"), vec![b'a'; 5000]).unwrap();
        assert_eq!(identify(sys, "sdz"), None);
    }

    #[test]
    fn vpd_pages_are_parsed_strictly() {
        assert_eq!(vpd_unit_serial(&vpd80("disk-1")).as_deref(), Some("disk-1"));
        let mut padded = vec![0, 0x80, 0, 10];
        padded.extend(b"  disk-1  ");
        assert_eq!(vpd_unit_serial(&padded).as_deref(), Some("disk-1"));
        // Wrong page, length past the data, control bytes, empty, short header.
        let mut wrong_page = vpd80("disk-1");
        wrong_page[1] = 0x83;
        let mut long = vpd80("disk-1");
        long[3] = 200;
        let mut control = vpd80("disk-1");
        control[6] = b'\n';
        for page in [
            wrong_page,
            long,
            control,
            vpd80(""),
            vec![0, 0x80, 0],
            vec![],
        ] {
            assert_eq!(vpd_unit_serial(&page), None, "{page:?}");
        }
        // Bytes past the page length are ignored.
        let mut trailing = vpd80("disk-1");
        trailing.extend(b"xyz");
        assert_eq!(vpd_unit_serial(&trailing).as_deref(), Some("disk-1"));
    }

    #[test]
    fn scsi_addresses() {
        assert_eq!(scsi_lun("1:0:0:3"), Some(3));
        assert_eq!(scsi_lun("3:0:1:63"), Some(63));
        for bad in [
            "1:0:0:64",
            "1:0:0",
            "1:0:0:3:4",
            "1:0:0:+3",
            "a:0:0:1",
            "1::0:1",
            "",
        ] {
            assert_eq!(scsi_lun(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn azure_lun_needs_the_data_controller() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        // Same LUN on the Gen2 OS controller (scsi0, …781a): not a data disk.
        azure_disk(
            sys,
            "sdb",
            "{f8b3781a-1e82-4818-a1c3-63d806ec15bb}",
            "0:0:0:1",
        );
        assert_eq!(identify(sys, "sdb"), None);
    }
}
