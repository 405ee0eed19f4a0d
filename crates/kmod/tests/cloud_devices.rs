//! Every device a confidential VM on GCP, Azure or AWS boots with finds its driver in the
//! initrd: the module subset `cvmctl initrd` builds from the repo's `initrd/` lists and the
//! guest kernel (`.cache/kernel/modules`, or `CVM_MODULES`) is unpacked, a sysfs tree with each
//! cloud device's modalias is laid out, and the guest's own coldplug is run over it. What it
//! would insert is recorded instead of calling finit_module (the loader's inserter seam).
//!
//! The modaliases are what the kernel's buses print: `vmbus:` + the 16 bytes of the channel's
//! class GUID in memory order (drivers/hv/vmbus_drv.c), `pci:v…d…sv…sd…bc…sc…i…` with the
//! vendor/device ids and class bytes (drivers/pci/pci-driver.c), `virtio:d…v…`,
//! `acpi:<HID>:`. A driver the kernel has built in cannot be matched through modules.alias
//! (Debian's modules.builtin.modinfo carries no aliases); for those the test checks it is
//! listed in modules.builtin, and says so.
//!
//! Needs the guest kernel (`make setup`), so the tests are ignored by a bare `cargo test` like
//! the other real-kernel tests; `make test` runs them, and there a missing kernel fails them.

use cvm_cpio::EntryKind;
use cvm_kmod::{Loader, ModuleInserter, initrd_subset, read_module_list};
use std::path::{Path, PathBuf};

/// One device of one cloud: the modalias it shows in sysfs and the driver that must bind it.
struct Device {
    cloud: &'static str,
    what: &'static str,
    bus: &'static str,
    modalias: &'static str,
    driver: &'static str,
}

const DEVICES: &[Device] = &[
    // Azure (Hyper-V): the VMBus itself is an ACPI device; its channels carry class GUIDs.
    Device {
        cloud: "Azure",
        what: "VMBus (ACPI VMBUS)",
        bus: "acpi",
        modalias: "acpi:VMBUS:",
        driver: "hv_vmbus",
    },
    Device {
        cloud: "Azure",
        what: "synthetic NIC f8615163-df3e-46c5-913f-f2d2f965ed0e",
        bus: "vmbus",
        modalias: "vmbus:635161f83edfc546913ff2d2f965ed0e",
        driver: "hv_netvsc",
    },
    Device {
        cloud: "Azure",
        what: "synthetic SCSI controller ba6163d9-04a1-4d29-b605-72e2ffb1dc7f",
        bus: "vmbus",
        modalias: "vmbus:d96361baa104294db60572e2ffb1dc7f",
        driver: "hv_storvsc",
    },
    Device {
        cloud: "Azure",
        what: "shutdown integration service 0e0b6b81-5c7e-4f8c-8d34-ca01b8ae8c3d",
        bus: "vmbus",
        modalias: "vmbus:e34bd134e4dec8419ae76b174977c192",
        driver: "hv_utils",
    },
    Device {
        cloud: "Azure",
        what: "PCI pass-through 44c4f61d-4444-4400-9d52-802e27ede19f (accelerated networking)",
        bus: "vmbus",
        modalias: "vmbus:1df6c444444400449d52802e27ede19f",
        driver: "pci_hyperv",
    },
    Device {
        cloud: "Azure",
        what: "MANA VF 1414:00ba",
        bus: "pci",
        modalias: "pci:v00001414d000000BAsv00001414sd000000BAbc02sc00i00",
        driver: "mana",
    },
    Device {
        cloud: "Azure",
        what: "NVMe disk (v6 sizes), class 01/08/02",
        bus: "pci",
        modalias: "pci:v00001414d0000B111sv00001414sd0000B111bc01sc08i02",
        driver: "nvme",
    },
    // GCP
    Device {
        cloud: "GCP",
        what: "gVNIC 1ae0:0042",
        bus: "pci",
        modalias: "pci:v00001AE0d00000042sv00001AE0sd00000058bc02sc00i00",
        driver: "gve",
    },
    Device {
        cloud: "GCP",
        what: "virtio-net (pre-gVNIC machine types) 1af4:1000",
        bus: "pci",
        modalias: "pci:v00001AF4d00001000sv00001AE0sd0000A001bc02sc00i00",
        driver: "virtio_pci",
    },
    Device {
        cloud: "GCP",
        what: "virtio-scsi persistent disk controller (virtio device 8)",
        bus: "virtio",
        modalias: "virtio:d00000008v00001AF4",
        driver: "virtio_scsi",
    },
    Device {
        cloud: "GCP",
        what: "SCSI disk behind virtio-scsi or storvsc (type 0)",
        bus: "scsi",
        modalias: "scsi:t-0x00",
        driver: "sd_mod",
    },
    Device {
        cloud: "GCP",
        what: "NVMe persistent disk 1ae0:001f",
        bus: "pci",
        modalias: "pci:v00001AE0d0000001Fsv00001AE0sd00000001bc01sc08i02",
        driver: "nvme",
    },
    // AWS Nitro
    Device {
        cloud: "AWS",
        what: "ENA 1d0f:ec20",
        bus: "pci",
        modalias: "pci:v00001D0Fd0000EC20sv00001D0Fsd0000EC20bc02sc00i00",
        driver: "ena",
    },
    Device {
        cloud: "AWS",
        what: "EBS NVMe controller 1d0f:8061",
        bus: "pci",
        modalias: "pci:v00001D0Fd00008061sv00001D0Fsd00008061bc01sc08i02",
        driver: "nvme",
    },
    // The vTPM on all three (CRB on Azure, TIS on GCP and AWS Nitro): ACPI MSFT0101.
    Device {
        cloud: "all",
        what: "vTPM (ACPI MSFT0101)",
        bus: "acpi",
        modalias: "acpi:MSFT0101:",
        driver: "tpm_crb",
    },
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The guest kernel's `lib/modules/<version>` directory.
fn kernel_modules() -> PathBuf {
    let dir = std::env::var_os("CVM_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".cache/kernel/modules"));
    std::fs::canonicalize(&dir).unwrap_or_else(|e| {
        panic!(
            "the guest kernel's modules are not at {} ({e}): run `make setup` or set CVM_MODULES",
            dir.display()
        )
    })
}

/// Records what the coldplug would insert.
#[derive(Default)]
struct Recorder(Vec<PathBuf>);

impl ModuleInserter for Recorder {
    fn insert(&mut self, path: &Path) -> Result<(), std::io::Error> {
        self.0.push(path.to_owned());
        Ok(())
    }
}

/// The guest kernel's version and the initrd's module subset for `carry`, unpacked under a
/// temporary root where the guest's loader looks for it.
fn unpacked_initrd(carry: &[String]) -> (String, cvm_kmod::ModuleSubset, tempfile::TempDir) {
    let modules = kernel_modules();
    let version = modules
        .file_name()
        .and_then(|n| n.to_str())
        .expect("kernel version")
        .to_owned();
    let subset = initrd_subset(&modules, carry).expect("initrd module subset");
    let root = tempfile::tempdir().expect("tempdir");
    for entry in &subset.entries {
        let path = root.path().join(&entry.path);
        match &entry.kind {
            EntryKind::Dir => std::fs::create_dir_all(&path).expect("dir"),
            EntryKind::File(data) => std::fs::write(&path, data).expect("file"),
            other => panic!("unexpected entry {other:?} at {}", entry.path),
        }
    }
    (version, subset, root)
}

/// The names the built-in modules of `modules.builtin` have (`kernel/…/nvme-core.ko` →
/// `nvme_core`).
fn builtin_names(modules: &Path) -> Vec<String> {
    std::fs::read_to_string(modules.join("modules.builtin"))
        .expect("modules.builtin")
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .map(|f| f.trim_end_matches(".ko").replace('-', "_"))
        .collect()
}

#[test]
#[ignore = "needs the kernel cache: run through `make test`"]
fn every_cloud_device_finds_its_driver_in_the_initrd() {
    let spec = repo().join("initrd");
    let mut carry = read_module_list(&spec.join("modules.carry")).expect("modules.carry");
    carry.extend(read_module_list(&spec.join("modules.load")).expect("modules.load"));
    let (version, subset, root) = unpacked_initrd(&carry);
    let builtin = builtin_names(&kernel_modules());
    let mut devices = 0;
    for (i, d) in DEVICES.iter().enumerate() {
        if builtin.iter().any(|b| b == d.driver) {
            eprintln!(
                "{} {}: {} is built into kernel {version}, nothing to load",
                d.cloud, d.what, d.driver
            );
            continue;
        }
        let dev = root
            .path()
            .join("sys/bus")
            .join(d.bus)
            .join("devices")
            .join(format!("dev{i}"));
        std::fs::create_dir_all(&dev).expect("device dir");
        std::fs::write(dev.join("modalias"), format!("{}\n", d.modalias)).expect("modalias");
        devices += 1;
    }
    assert!(devices > 0, "every driver is built in: nothing was checked");

    let mut loader = Loader::new(root.path(), &version, Recorder::default()).expect("loader");
    let report = loader.coldplug(4);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let inserted: Vec<String> = loader
        .inserter()
        .0
        .iter()
        .map(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.split('.').next())
                .expect("module file name")
                .replace('-', "_")
        })
        .collect();
    let mut missing = Vec::new();
    for d in DEVICES {
        let found = inserted.iter().any(|m| m == d.driver) || builtin.iter().any(|b| b == d.driver);
        if !found {
            missing.push(format!(
                "{} {} ({}) → {}",
                d.cloud, d.what, d.modalias, d.driver
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "no driver in the initrd for:\n{}\ninserted: {inserted:?}\nnot in kernel {version}: {:?}",
        missing.join("\n"),
        subset.missing
    );
    // Every inserted file really is in the initrd (the loader found it under the unpacked root).
    for p in &loader.inserter().0 {
        assert!(p.starts_with(root.path()) && p.is_file(), "{}", p.display());
    }
}

/// A modalias no initrd driver claims stays unclaimed: the coldplug above is not vacuous.
#[test]
#[ignore = "needs the kernel cache: run through `make test`"]
fn a_foreign_device_loads_nothing() {
    let carry = read_module_list(&repo().join("initrd/modules.carry")).expect("modules.carry");
    let (version, _, root) = unpacked_initrd(&carry);
    // Hyper-V's balloon (dc7450528589e2468057a307dc18a502) is in the kernel, not in the initrd.
    let dev = root.path().join("sys/bus/vmbus/devices/balloon");
    std::fs::create_dir_all(&dev).expect("dir");
    std::fs::write(
        dev.join("modalias"),
        "vmbus:dc7450528589e2468057a307dc18a502\n",
    )
    .expect("modalias");
    let mut loader = Loader::new(root.path(), &version, Recorder::default()).expect("loader");
    loader.coldplug(2);
    assert!(loader.inserter().0.is_empty(), "{:?}", loader.inserter().0);
}
