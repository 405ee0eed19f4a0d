//! The NVMe admin command the agent sends to read GCP's PD-NVMe device names (cvm-nvme),
//! against a real NVMe controller: QEMU's, with two namespaces of different sizes and block
//! sizes. The guest is `nvme_probe`, a static init that runs the same library code on every
//! namespace; the agent cannot be the guest here because it sends the command only to
//! `nvme_card-pd` controllers, and QEMU 7.2's model name is fixed ("QEMU NVMe Ctrl").

use cvm_testkit as common;

use std::process::{Command, Stdio};

/// What the probe printed for `name`, the part after the name.
fn line_for<'a>(console: &'a str, name: &str) -> &'a str {
    let prefix = format!("nvme-probe: {name} ");
    console
        .lines()
        // Firmware escape sequences may precede the first line on the serial console.
        .find_map(|l| {
            let at = l.find(prefix.as_str())?;
            Some(l[at + prefix.len()..].trim_end_matches('\r'))
        })
        .unwrap_or_else(|| panic!("no probe line for {name}\n{console}"))
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn identify_namespace_reads_real_controller_answers() {
    let dir = tempfile::tempdir().unwrap();
    // Namespace 1: 48 MiB of 512-byte blocks; namespace 2: 20 MiB of 4 KiB blocks (QEMU
    // formats it so FLBAS names a 4 KiB format), both with bytes the answer must not echo.
    let ns1 = dir.path().join("ns1.img");
    let ns2 = dir.path().join("ns2.img");
    std::fs::write(&ns1, vec![0xa5; 48 << 20]).unwrap();
    std::fs::write(&ns2, vec![0x5a; 20 << 20]).unwrap();
    let console = dir.path().join("console.log");
    let status = Command::new(common::repo().join("qemu/boot.sh"))
        .arg("--kernel")
        .arg(common::input("CVM_KERNEL", ".cache/kernel/vmlinuz"))
        .arg("--initrd")
        .arg(common::input(
            "CVM_NVME_PROBE_INITRD",
            "out/nvme-probe-initrd.img",
        ))
        .args([
            "--direct",
            "--no-tpm",
            "--no-net",
            "--quiet",
            "--timeout",
            "120",
        ])
        .args(["--append", "nvme_probe.namespaces=2"])
        .arg("--nvme")
        .arg(&ns1)
        .arg("--nvme")
        .arg(format!("{}:4096", ns2.display()))
        .arg("--console")
        .arg(&console)
        .stdin(Stdio::null())
        .status()
        .expect("run qemu/boot.sh");
    let console = std::fs::read_to_string(&console).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{console}");
    for (nsid, bytes, block) in [(1, 48 << 20, 512), (2, 20 << 20, 4096)] {
        assert_eq!(
            line_for(&console, &format!("nvme0n{nsid}")),
            format!(
                "nsid={nsid} blocks={} block_size={block} bytes={bytes} size=matches vendor=empty",
                bytes / block
            ),
            "{console}"
        );
    }
    assert!(
        console.contains("nvme-probe: done, 2 namespaces"),
        "{console}"
    );
}
