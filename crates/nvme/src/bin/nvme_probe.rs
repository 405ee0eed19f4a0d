//! The guest of the NVMe VM test (tests/vm_nvme.rs): a static init that sends Identify
//! Namespace to every NVMe namespace the kernel found, prints one line per namespace with what
//! the controller answered next to what the block layer reports, and powers off. The test
//! compares those lines with the disks it gave QEMU's NVMe controller.
#![forbid(unsafe_code)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{MsFlags, mount};

/// QEMU's NVMe controller probes asynchronously after the kernel hands over to init.
const WAIT: Duration = Duration::from_secs(20);

fn main() {
    let mut out = Console::open();
    let _ = std::fs::create_dir_all("/sys");
    let _ = std::fs::create_dir_all("/dev");
    for (fs, at) in [("sysfs", "/sys"), ("devtmpfs", "/dev")] {
        if let Err(e) = mount(Some(fs), at, Some(fs), MsFlags::empty(), None::<&str>) {
            out.line(&format!("nvme-probe: mount {fs} on {at}: {e}"));
        }
    }
    let expected: usize = read("/proc/cmdline")
        .split_whitespace()
        .find_map(|w| w.strip_prefix("nvme_probe.namespaces="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let started = Instant::now();
    let mut names = namespaces();
    while names.len() < expected && started.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(100));
        names = namespaces();
    }
    let mut failed = names.len() < expected;
    for name in &names {
        let (ok, line) = probe(name);
        failed |= !ok;
        out.line(&line);
    }
    out.line(&format!("nvme-probe: done, {} namespaces", names.len()));
    // qemu/boot.sh's protocol: its exit code is the result line's.
    out.line(&format!(
        "cvm-agent: result {{\"exit_code\":{}}}",
        u8::from(failed)
    ));
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn probe(name: &str) -> (bool, String) {
    let block = Path::new("/sys/class/block").join(name);
    let nsid: u32 = read(block.join("nsid")).trim().parse().unwrap_or(0);
    let sectors: u64 = read(block.join("size")).trim().parse().unwrap_or(0);
    match cvm_nvme::identify_namespace(&Path::new("/dev").join(name), nsid) {
        Ok(ns) => {
            let vendor = if ns.vendor_specific.iter().all(|b| *b == 0) {
                "empty"
            } else {
                "set"
            };
            let (ok, size) = match ns.check_size(sectors * 512) {
                Ok(()) => (true, "matches".to_string()),
                Err(e) => (false, e.to_string()),
            };
            let line = format!(
                "nvme-probe: {name} nsid={nsid} blocks={} block_size={} bytes={} size={size} vendor={vendor}",
                ns.blocks,
                ns.block_size,
                sectors * 512
            );
            (ok, line)
        }
        Err(e) => (false, format!("nvme-probe: {name} nsid={nsid} error: {e}")),
    }
}

/// Whole NVMe namespaces (`nvme0n1`, not its partitions `nvme0n1p1`).
fn namespaces() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("nvme") && !n.contains('p'))
        .collect();
    names.sort();
    names
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

struct Console(Option<std::fs::File>);

impl Console {
    fn open() -> Self {
        Console(OpenOptions::new().write(true).open("/dev/console").ok())
    }

    fn line(&mut self, text: &str) {
        if let Some(c) = &mut self.0 {
            let _ = writeln!(c, "{text}");
        }
    }
}
