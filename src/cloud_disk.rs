//! The names clouds give disks, read the way their udev rules read them (the agent is PID 1:
//! there is no udev and no /dev/disk/by-id).
//!
//! - GCP persistent disk on SCSI (virtio-scsi): `google-<device-name>` comes from
//!   `scsi_id`, which takes the unit serial number of VPD page 0x80; the kernel exposes the
//!   raw page as `device/vpd_pg80`. The vendor is "Google".
//! - GCP persistent disk on NVMe (Confidential VMs, C3, N4 and later): the controller's model
//!   is `nvme_card-pd` and the device name is in a JSON object (`{"device_name":…}`) in the
//!   vendor-specific bytes of Identify Namespace, as `google_nvme_id` reads them; sysfs does
//!   not show them, so the agent sends Identify Namespace itself (cvm-nvme).
//! - AWS EBS on NVMe: the controller's serial number is the volume id without its dash
//!   (`vol0123…`), model "Amazon Elastic Block Store".
//! - Azure data disk on hv_storvsc: the LUN is the last field of the SCSI address
//!   (`device` → `H:C:T:L`), on the VMBus SCSI controller whose `device_id` is
//!   `{f8b3781b-1e82-4818-a1c3-63d806ec15bb}` (Azure's "scsi1", where data disks attach; the
//!   OS disk and the resource disk sit on other controllers). The vendor is "Msft".
//! - Azure data disk on NVMe (v6 sizes): controller model "MSFT NVMe Accelerator v1.0";
//!   namespace 1 is the OS disk and data disk LUN n is namespace n + 2, unless the vendor-specific
//!   bytes of Identify Namespace say otherwise (`type=data,lun=4,name=…`), as azure-vm-utils'
//!   udev rules and `azure-nvme-id` derive it.
//!
//! The host writes every one of these values. They only select which disk the state volume
//! is on; LUKS2 and the KBS-released key decide whether it opens, so a wrong disk fails closed.
//! Values are still read with a size bound and parsed strictly. A disk that does not look like
//! any cloud's has no identity; one that looks like a cloud's but whose name does not parse
//! gives an error that says why, shown when the state disk is not found.

use std::io::Read;
use std::path::{Path, PathBuf};

use cvm_nvme::{self as nvme, IdNamespace, NvmeError};

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
/// The model of GCP's persistent-disk NVMe controller (GCP's `65-gce-disk-naming.rules`).
const GCP_PD_NVME_MODEL: &str = "nvme_card-pd";
/// The model of Azure's remote-disk NVMe controller (azure-vm-utils' `80-azure-disk.rules`).
const AZURE_NVME_MODEL: &str = "MSFT NVMe Accelerator v1.0";
/// Azure NVMe: namespace 1 is the OS disk; data disk LUN n is namespace n + 2.
const AZURE_NVME_LUN_BASE: u32 = 2;
/// Azure's highest data-disk LUN.
const AZURE_MAX_LUN: u8 = 63;
/// SPC-4 §7.8.15: Unit Serial Number VPD page.
const VPD_UNIT_SERIAL: u8 = 0x80;
/// sysfs attributes are at most a page; the VPD page is at most 4 + 255 bytes on GCP.
const MAX_ATTR: u64 = 4096;
/// Ancestors searched for the controller's `device_id` (disk → target → host → VMBus device).
const MAX_ANCESTORS: usize = 8;
/// How much of a host-supplied name an error message repeats.
const SHOWN: usize = 80;

/// Why a disk that looks like a cloud's has no usable name.
#[derive(Debug, thiserror::Error)]
pub enum CloudDiskError {
    #[error("GCP persistent disk without a unit serial number (VPD page 0x80)")]
    GcpNoSerial,
    #[error("GCP PD-NVMe namespace id unreadable")]
    NoNsid,
    #[error("GCP PD-NVMe: {0}")]
    Nvme(#[from] NvmeError),
    #[error("GCP PD-NVMe: no device name in Identify Namespace's vendor-specific bytes ({0})")]
    GcpNoName(String),
    #[error("GCP device name {0:?} is not one GCP allows")]
    GcpName(String),
    #[error("EBS serial {0:?} is not a volume id")]
    AwsSerial(String),
    #[error("Azure NVMe vendor-specific key-values: {0}")]
    AzureVendor(String),
    #[error("Azure NVMe namespace id {0:?} is no data-disk LUN (namespace 2 + LUN 0-63)")]
    AzureNsid(String),
}

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

/// A host-supplied string cut to a length an error line can carry.
fn shown(s: &str) -> String {
    s.chars().take(SHOWN).collect()
}

/// The identity of the whole disk `name` under `<sys>/class/block`, if it has one; `dev` is
/// where its device node is, for the NVMe admin command.
pub fn identify(sys: &Path, dev: &Path, name: &str) -> Result<Option<CloudDisk>, CloudDiskError> {
    let node = dev.join(name);
    identify_with(sys, name, |nsid| nvme::identify_namespace(&node, nsid))
}

/// [`identify`] with the Identify Namespace command given, so tests can stand in for a
/// controller.
pub(crate) fn identify_with(
    sys: &Path,
    name: &str,
    identify_ns: impl FnOnce(u32) -> Result<IdNamespace, NvmeError>,
) -> Result<Option<CloudDisk>, CloudDiskError> {
    let block = sys.join("class/block").join(name);
    let device = block.join("device");
    match read_text(&device.join("vendor")).as_deref() {
        Some("Google") => return gcp(&device).map(Some),
        Some("Msft") => return Ok(azure(&device)),
        _ => {}
    }
    match read_text(&device.join("model")).as_deref() {
        Some(EBS_MODEL) => aws(&device).map(Some),
        Some(GCP_PD_NVME_MODEL) => gcp_nvme(&block, identify_ns).map(Some),
        Some(AZURE_NVME_MODEL) => azure_nvme(&block, identify_ns),
        _ => Ok(None),
    }
}

fn gcp(device: &Path) -> Result<CloudDisk, CloudDiskError> {
    let serial = read_raw(&device.join("vpd_pg80"))
        .and_then(|page| vpd_unit_serial(&page))
        .ok_or(CloudDiskError::GcpNoSerial)?;
    gcp_name(serial)
}

fn gcp_name(name: String) -> Result<CloudDisk, CloudDiskError> {
    if valid_gcp_name(&name) {
        Ok(CloudDisk::Gcp(name))
    } else {
        Err(CloudDiskError::GcpName(shown(&name)))
    }
}

fn nsid(block: &Path) -> Option<u32> {
    read_text(&block.join("nsid"))?
        .parse()
        .ok()
        .filter(|n| *n > 0)
}

fn gcp_nvme(
    block: &Path,
    identify_ns: impl FnOnce(u32) -> Result<IdNamespace, NvmeError>,
) -> Result<CloudDisk, CloudDiskError> {
    let nsid = nsid(block).ok_or(CloudDiskError::NoNsid)?;
    let sectors: u64 = read_text(&block.join("size"))
        .and_then(|s| s.parse().ok())
        .ok_or(CloudDiskError::NoNsid)?;
    let ns = identify_ns(nsid)?;
    ns.check_size(sectors.saturating_mul(512))?;
    gcp_name(gcp_vendor_device_name(&ns.vendor_specific)?)
}

/// What GCP's PD-NVMe controller puts in the vendor-specific bytes: a JSON object, then NULs.
#[derive(serde::Deserialize)]
struct GcpNvmeVendor {
    device_name: String,
}

/// The `device_name` of the JSON object at the start of the vendor-specific bytes.
pub(crate) fn gcp_vendor_device_name(vendor: &[u8]) -> Result<String, CloudDiskError> {
    let end = vendor.iter().position(|b| *b == 0).unwrap_or(vendor.len());
    if end == 0 {
        return Err(CloudDiskError::GcpNoName("empty".into()));
    }
    let info: GcpNvmeVendor = serde_json::from_slice(&vendor[..end])
        .map_err(|e| CloudDiskError::GcpNoName(format!("not the expected JSON: {e}")))?;
    Ok(info.device_name)
}

fn azure_nvme(
    block: &Path,
    identify_ns: impl FnOnce(u32) -> Result<IdNamespace, NvmeError>,
) -> Result<Option<CloudDisk>, CloudDiskError> {
    let raw = read_text(&block.join("nsid")).unwrap_or_default();
    let nsid: u32 = raw
        .parse()
        .map_err(|_| CloudDiskError::AzureNsid(shown(&raw)))?;
    // azure-vm-utils' rules: the vendor-specific key-values, where the controller sends them,
    // override what the namespace id implies; when Identify Namespace fails, or sends none,
    // the namespace id stands.
    let sectors: Option<u64> = read_text(&block.join("size")).and_then(|s| s.parse().ok());
    let vendor = sectors.and_then(|sectors| {
        let ns = identify_ns(nsid).ok()?;
        ns.check_size(sectors.saturating_mul(512)).ok()?;
        Some(ns.vendor_specific)
    });
    if let Some(vs) = vendor
        .as_deref()
        .map(azure_vendor_keys)
        .transpose()?
        .flatten()
    {
        return match (vs.kind.as_str(), vs.lun) {
            ("data", Some(lun)) => Ok(Some(CloudDisk::AzureLun(lun))),
            ("data", None) => azure_nsid_lun(nsid),
            // The OS disk, local (ephemeral) disks, and kinds not known yet.
            _ => Ok(None),
        };
    }
    azure_nsid_lun(nsid)
}

/// Namespace 1 is the OS disk; LUN n is namespace n + 2.
fn azure_nsid_lun(nsid: u32) -> Result<Option<CloudDisk>, CloudDiskError> {
    if nsid < AZURE_NVME_LUN_BASE {
        return Ok(None);
    }
    u8::try_from(nsid - AZURE_NVME_LUN_BASE)
        .ok()
        .filter(|lun| *lun <= AZURE_MAX_LUN)
        .map(|lun| Some(CloudDisk::AzureLun(lun)))
        .ok_or(CloudDiskError::AzureNsid(nsid.to_string()))
}

/// What Azure puts in the vendor-specific bytes: `type=data,lun=4,name=data-db`, then NULs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AzureVendorKeys {
    kind: String,
    lun: Option<u8>,
}

/// The `type` and `lun` of Azure's key-values; None when the controller sent none (the
/// bytes start with NUL) or named no type.
pub(crate) fn azure_vendor_keys(vendor: &[u8]) -> Result<Option<AzureVendorKeys>, CloudDiskError> {
    let end = vendor.iter().position(|b| *b == 0).unwrap_or(vendor.len());
    let text = std::str::from_utf8(&vendor[..end])
        .ok()
        .filter(|t| t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| CloudDiskError::AzureVendor("not printable ASCII".into()))?;
    let (mut kind, mut lun) = (None, None);
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            CloudDiskError::AzureVendor(format!("{:?} is no key=value", shown(pair)))
        })?;
        let repeated = match key {
            "type" => kind.is_some(),
            "lun" => lun.is_some(),
            _ => false,
        };
        if repeated {
            return Err(CloudDiskError::AzureVendor(format!("{key} given twice")));
        }
        match key {
            "type" => kind = Some(value.to_string()),
            "lun" => {
                lun = Some(
                    value
                        .parse::<u8>()
                        .ok()
                        .filter(|l| *l <= AZURE_MAX_LUN)
                        .ok_or_else(|| {
                            CloudDiskError::AzureVendor(format!("lun {:?}", shown(value)))
                        })?,
                )
            }
            _ => {}
        }
    }
    Ok(kind.map(|kind| AzureVendorKeys { kind, lun }))
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

fn aws(device: &Path) -> Result<CloudDisk, CloudDiskError> {
    let serial = read_text(&device.join("serial")).unwrap_or_default();
    let hex = serial.strip_prefix("vol").unwrap_or_default();
    let ok = matches!(hex.len(), 8 | 17)
        && hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    if ok {
        Ok(CloudDisk::Aws(format!("vol-{hex}")))
    } else {
        Err(CloudDiskError::AwsSerial(shown(&serial)))
    }
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

    /// GCP: a PD-NVMe namespace (`nsid`) on the `nvme_card-pd` controller.
    pub(crate) fn gcp_nvme_disk(sys: &Path, name: &str, nsid: u32) {
        let dev = fake_disk(
            sys,
            name,
            &format!("pci0000:00/0000:00:04.0/nvme/{name}-ctrl"),
        );
        fs::write(
            dev.join("model"),
            "nvme_card-pd                            \n",
        )
        .unwrap();
        fs::write(dev.join("serial"), "nvme_card-pd\n").unwrap();
        fs::write(
            dev.join("block").join(name).join("nsid"),
            format!("{nsid}\n"),
        )
        .unwrap();
    }

    /// Azure: a namespace on the remote-disk NVMe controller.
    pub(crate) fn azure_nvme_disk(sys: &Path, name: &str, nsid: &str) {
        let dev = fake_disk(
            sys,
            name,
            &format!("pci0000:00/0000:00:05.0/nvme/{name}-ctrl"),
        );
        fs::write(dev.join("model"), "MSFT NVMe Accelerator v1.0\n").unwrap();
        fs::write(
            dev.join("block").join(name).join("nsid"),
            format!("{nsid}\n"),
        )
        .unwrap();
    }

    /// What GCP's controller answers for a 1 GiB namespace (fake_disk's size) of 4 KiB blocks.
    fn gcp_answer(vendor: &[u8]) -> Result<IdNamespace, NvmeError> {
        Ok(namespace(262144, vendor))
    }

    fn namespace(blocks: u64, vendor: &[u8]) -> IdNamespace {
        let mut vendor_specific = vec![0; nvme::VENDOR_SPECIFIC.len()];
        vendor_specific[..vendor.len()].copy_from_slice(vendor);
        IdNamespace {
            blocks,
            block_size: 4096,
            vendor_specific,
        }
    }

    /// The identity of `name` where Identify Namespace fails (as on a fake sysfs tree).
    fn id(sys: &Path, name: &str) -> Result<Option<CloudDisk>, String> {
        identify_with(sys, name, |_| {
            Err(NvmeError::Malformed("no controller here"))
        })
        .map_err(|e| e.to_string())
    }

    /// The identity of `name`, asserting no NVMe admin command is sent for it.
    fn id_without_command(sys: &Path, name: &str) -> Result<Option<CloudDisk>, String> {
        identify_with(sys, name, |_| panic!("Identify Namespace sent to {name}"))
            .map_err(|e| e.to_string())
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
        azure_nvme_disk(sys, "nvme2n1", "1");
        azure_nvme_disk(sys, "nvme2n3", "3");
        // Only NVMe controllers of GCP's and Azure's models get an admin command.
        for name in ["sdb", "nvme1n1", "sdc", "sda", "vda", "nosuch"] {
            let _ = id_without_command(sys, name);
        }
        assert_eq!(id(sys, "sdb"), Ok(Some(CloudDisk::Gcp("cvm-state".into()))));
        assert_eq!(
            id(sys, "nvme1n1"),
            Ok(Some(CloudDisk::Aws("vol-0123456789abcdef0".into())))
        );
        assert_eq!(id(sys, "sdc"), Ok(Some(CloudDisk::AzureLun(3))));
        // Azure NVMe: namespace 1 is the OS disk, namespace 3 is LUN 1.
        assert_eq!(id(sys, "nvme2n1"), Ok(None));
        assert_eq!(id(sys, "nvme2n3"), Ok(Some(CloudDisk::AzureLun(1))));
        assert_eq!(id(sys, "sda"), Ok(None));
        assert_eq!(id(sys, "vda"), Ok(None));
        assert_eq!(id(sys, "nosuch"), Ok(None));
        assert_eq!(
            CloudDisk::Aws("vol-0123456789abcdef0".into()).to_string(),
            "aws:vol-0123456789abcdef0"
        );
    }

    #[test]
    fn hostile_values_give_no_identity_and_say_why() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        gcp_disk(sys, "sdb", "Not_A_Name");
        aws_disk(sys, "nvme1n1", "vol-0123456789abcdef0");
        aws_disk(sys, "nvme2n1", "vol0123");
        // An EBS serial on a disk that is not EBS.
        let dev = fake_disk(sys, "nvme3n1", "pci0000:00/0000:00:1e.0/nvme/x");
        fs::write(dev.join("model"), "QEMU NVMe Ctrl\n").unwrap();
        fs::write(dev.join("serial"), "vol0123456789abcdef0\n").unwrap();
        let refused = |name: &str, why: &str| {
            let err = id(sys, name).unwrap_err();
            assert!(err.contains(why), "{name}: {err}");
        };
        refused("sdb", "\"Not_A_Name\" is not one GCP allows");
        refused(
            "nvme1n1",
            "EBS serial \"vol-0123456789abcdef0\" is not a volume id",
        );
        refused("nvme2n1", "\"vol0123\"");
        assert_eq!(id(sys, "nvme3n1"), Ok(None));
        // An attribute larger than a page is not read at all.
        let dev = fake_disk(sys, "sdz", "big/0:0:0:1");
        fs::write(dev.join("vendor"), "Google\n").unwrap();
        fs::write(dev.join("vpd_pg80"), vec![b'a'; 5000]).unwrap();
        refused("sdz", "without a unit serial number");
        // Azure NVMe namespaces past LUN 63, or not a number.
        azure_nvme_disk(sys, "nvme4n66", "66");
        azure_nvme_disk(sys, "nvme4n9", "9x");
        refused("nvme4n66", "namespace id \"66\" is no data-disk LUN");
        refused("nvme4n9", "namespace id \"9x\"");
        // A long hostile name is cut in the message.
        let long = format!("{}-", "a".repeat(300));
        let dev = fake_disk(sys, "sdy", "long/0:0:0:2");
        fs::write(dev.join("vendor"), "Google\n").unwrap();
        fs::write(dev.join("vpd_pg80"), vpd80(&long[..250])).unwrap();
        let err = id(sys, "sdy").unwrap_err();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn gcp_pd_nvme_name_comes_from_identify_namespace() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        gcp_nvme_disk(sys, "nvme0n2", 2);
        let vendor = br#"{"device_name":"cvm-state","disk_name":"state-disk-7"}"#;
        let mut asked = None;
        let got = identify_with(sys, "nvme0n2", |nsid| {
            asked = Some(nsid);
            gcp_answer(vendor)
        });
        assert_eq!(got.unwrap(), Some(CloudDisk::Gcp("cvm-state".into())));
        assert_eq!(asked, Some(2), "the namespace's own id is asked for");
        // Whitespace and key order as JSON allows.
        let vendor = br#"{ "disk_name": "d", "device_name": "persistent-disk-1" }"#;
        let got = identify_with(sys, "nvme0n2", |_| gcp_answer(vendor)).unwrap();
        assert_eq!(got, Some(CloudDisk::Gcp("persistent-disk-1".into())));
    }

    #[test]
    fn gcp_pd_nvme_hostile_answers_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        gcp_nvme_disk(sys, "nvme0n1", 1);
        let refused = |answer: Result<IdNamespace, NvmeError>, why: &str| {
            let err = identify_with(sys, "nvme0n1", |_| answer)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{err}");
        };
        refused(
            gcp_answer(b""),
            "no device name in Identify Namespace's vendor-specific bytes (empty)",
        );
        refused(gcp_answer(b"{\"device_name\":"), "not the expected JSON");
        refused(
            gcp_answer(br#"{"disk_name":"x"}"#),
            "missing field `device_name`",
        );
        refused(gcp_answer(br#"{"device_name":7}"#), "not the expected JSON");
        refused(
            gcp_answer(br#"{"device_name":"Bad_Name"}"#),
            "\"Bad_Name\" is not one GCP allows",
        );
        refused(gcp_answer(b"\xff\xfe"), "not the expected JSON");
        // The answer for another (2 GiB) namespace.
        let other = namespace(524288, br#"{"device_name":"cvm-state"}"#);
        refused(Ok(other), "not for this namespace");
        refused(
            Err(NvmeError::Status {
                path: "/dev/nvme0n1".into(),
                nsid: 1,
                status: 0x4002,
            }),
            "NVMe status 0x4002",
        );
        // No namespace id in sysfs: no command at all.
        gcp_nvme_disk(sys, "nvme0n9", 0);
        let err = identify_with(sys, "nvme0n9", |_| panic!("sent")).unwrap_err();
        assert!(err.to_string().contains("namespace id unreadable"), "{err}");
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
        assert_eq!(id(sys, "sdb"), Ok(None));
    }

    #[test]
    fn azure_nvme_vendor_keys_override_the_namespace_rule() {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path();
        azure_nvme_disk(sys, "nvme0n3", "3");
        let with = |vendor: &'static [u8]| {
            identify_with(sys, "nvme0n3", |nsid| {
                assert_eq!(nsid, 3);
                gcp_answer(vendor)
            })
            .map_err(|e| e.to_string())
        };
        // No key-values: namespace 3 is LUN 1.
        assert_eq!(with(b""), Ok(Some(CloudDisk::AzureLun(1))));
        assert_eq!(
            with(b"type=data,lun=4,name=data-db"),
            Ok(Some(CloudDisk::AzureLun(4)))
        );
        assert_eq!(with(b"type=data,name=x"), Ok(Some(CloudDisk::AzureLun(1))));
        assert_eq!(with(b"type=os"), Ok(None));
        assert_eq!(with(b"type=local,index=1,name=nvme-440G-1"), Ok(None));
        for (bad, why) in [
            (&b"type=data,lun=64"[..], "lun \"64\""),
            (b"type=data,lun=-1", "lun \"-1\""),
            (b"type=data,lun", "\"lun\" is no key=value"),
            (b"type=data,lun=1\n", "not printable ASCII"),
            (b"type=data,\xff", "not printable ASCII"),
            (b"type=os,type=data,lun=1", "type given twice"),
            (b"type=data,lun=1,lun=7", "lun given twice"),
        ] {
            let err = with(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        // An answer for another namespace's size is not taken: the namespace rule stands.
        let other = identify_with(sys, "nvme0n3", |_| {
            Ok(namespace(524288, b"type=data,lun=9"))
        });
        assert_eq!(other.unwrap(), Some(CloudDisk::AzureLun(1)));
    }
}
