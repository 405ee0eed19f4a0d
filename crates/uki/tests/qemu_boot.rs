//! Ground truth: boot the test UKI under QEMU (q35, TCG) with OVMF and swtpm, read the
//! firmware's event log and every PCR of every bank from the guest, and hold our predictions
//! against them; tpm2_eventlog replays the same log as the oracle for our parser.
//!
//! `#[ignore]`d: each boot takes a minute or more under TCG. Run with
//! `cargo test -p cvm-uki --test qemu_boot -- --include-ignored --nocapture`.
//! With `CVM_UKI_CAPTURE_DIR=<dir>` the test also writes each boot's serial output, binary
//! log and PCR values there (that is how `tests/fixtures` was made, see PROVENANCE.md).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use cvm_uki::eventlog::EventLog;
use cvm_uki::hash::hex;
use cvm_uki::predict::{self, BootPath, first_mismatch};
use cvm_uki::{HashAlg, boot_pcrs};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);

/// One boot at a time: two TCG guests on a small shared host only slow each other down.
static SERIAL: Mutex<()> = Mutex::new(());

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boots `uki` by `path`; returns the serial output and the time from QEMU's start to its exit.
fn boot(uki: &[u8], path: BootPath, dir: &TempDir) -> (String, Duration) {
    let uki_path = dir.write("uki.efi", uki);
    std::fs::copy(OVMF_VARS, dir.path("vars.fd")).expect("OVMF_VARS_4M.fd (package ovmf)");
    let tpm_dir = dir.path("tpm");
    std::fs::create_dir_all(&tpm_dir).unwrap();
    let sock = dir.path("swtpm.sock");
    let swtpm = Killed(
        Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", tpm_dir.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", sock.display()))
            .arg("--terminate")
            .stdout(Stdio::null())
            .spawn()
            .expect("swtpm (package swtpm)"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "swtpm did not create its socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    let serial = dir.path("serial.log");
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-machine", "q35", "-accel", "tcg", "-m", "512", "-smp", "1"])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            dir.path("vars.fd").display()
        ))
        .arg("-chardev")
        .arg(format!("socket,id=chrtpm,path={}", sock.display()))
        .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
        .args(["-device", "tpm-crb,tpmdev=tpm0"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()));
    match path {
        BootPath::QemuKernel => {
            cmd.arg("-kernel").arg(&uki_path);
        }
        BootPath::BootOption => {
            // A FAT file system without a partition table holding the removable-media path.
            let disk = dir.path("esp.img");
            run(Command::new("mkfs.fat")
                .args(["-C", "-n", "ESP", "-i", "12345678"])
                .arg(&disk)
                .arg((uki.len() / 1024 + 8192).to_string()));
            run(Command::new("mmd")
                .arg("-i")
                .arg(&disk)
                .args(["::/EFI", "::/EFI/BOOT"]));
            run(Command::new("mcopy")
                .arg("-i")
                .arg(&disk)
                .arg(&uki_path)
                .arg("::/EFI/BOOT/BOOTX64.EFI"));
            cmd.arg("-drive")
                .arg(format!("if=none,id=esp,format=raw,file={}", disk.display()))
                .args(["-device", "virtio-blk-pci,drive=esp,bootindex=0"]);
        }
    }
    let start = Instant::now();
    let mut qemu = Killed(
        cmd.stdin(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64 (package qemu-system-x86)"),
    );
    loop {
        if let Some(status) = qemu.0.try_wait().unwrap() {
            assert!(status.success(), "qemu exited with {status}");
            break;
        }
        assert!(
            start.elapsed() < BOOT_TIMEOUT,
            "no power-off within {BOOT_TIMEOUT:?}; serial:\n{}",
            std::fs::read_to_string(&serial).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = start.elapsed();
    drop(swtpm);
    let out = String::from_utf8_lossy(&std::fs::read(&serial).unwrap()).replace('\r', "");
    (out, took)
}

/// The event log from the serial output.
fn decode_log(serial: &str, dir: &TempDir) -> Vec<u8> {
    let b64 = between(serial, EVENTLOG_BEGIN, EVENTLOG_END)
        .unwrap_or_else(|| panic!("no event log in the serial output:\n{serial}"));
    let p = dir.write("log.b64", b64.as_bytes());
    let out = Command::new("base64").arg("-d").arg(&p).output().unwrap();
    assert!(out.status.success(), "base64 -d failed");
    out.stdout
}

/// PCR values by bank from the serial output.
fn guest_pcrs(serial: &str) -> BTreeMap<HashAlg, Vec<Vec<u8>>> {
    let text = between(serial, PCRS_BEGIN, PCRS_END)
        .unwrap_or_else(|| panic!("no PCRs in the serial output:\n{serial}"));
    let mut m: BTreeMap<HashAlg, Vec<Vec<u8>>> = BTreeMap::new();
    for (bank, n, v) in parse_pcr_lines(text) {
        let alg = HashAlg::from_name(&bank).unwrap_or_else(|| panic!("unknown bank {bank}"));
        let e = m.entry(alg).or_default();
        assert_eq!(e.len(), n as usize, "PCR lines out of order");
        assert_eq!(v.len(), alg.digest_len());
        e.push(v);
    }
    for (alg, v) in &m {
        assert_eq!(v.len(), 24, "{alg}: 24 PCRs");
    }
    assert!(!m.is_empty(), "no PCR banks in the guest");
    m
}

/// tpm2_eventlog's replay of the log: bank → PCR → value.
fn tpm2_eventlog_pcrs(log: &Path) -> BTreeMap<HashAlg, BTreeMap<u32, Vec<u8>>> {
    let out = run(Command::new("tpm2_eventlog").arg(log));
    let pcrs = &out[out.rfind("pcrs:").expect("tpm2_eventlog prints pcrs:")..];
    let mut m: BTreeMap<HashAlg, BTreeMap<u32, Vec<u8>>> = BTreeMap::new();
    let mut bank = None;
    for line in pcrs.lines().skip(1) {
        let t = line.trim();
        if let Some(b) = t.strip_suffix(':') {
            bank = HashAlg::from_name(b);
            continue;
        }
        if let (Some(b), Some((n, v))) = (bank, t.split_once(':')) {
            let n: u32 = n.trim().parse().expect("PCR index");
            let v = v.trim().trim_start_matches("0x");
            m.entry(b)
                .or_default()
                .insert(n, unhex(v).expect("hex PCR"));
        }
    }
    assert!(!m.is_empty(), "no pcrs in tpm2_eventlog's output:\n{out}");
    m
}

fn check_boot(path: BootPath, tag: &str) {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = TestInputs::load();
    let start = Instant::now();
    let uki = t.build();
    let build_time = start.elapsed();
    let dir = TempDir::new(tag);
    let (serial, took) = boot(&uki.bytes, path, &dir);
    eprintln!(
        "{tag}: UKI {} bytes built in {build_time:?}; QEMU+OVMF boot to power-off {took:?}",
        uki.bytes.len()
    );
    let log_bytes = decode_log(&serial, &dir);
    let log_path = dir.write("binary_bios_measurements", &log_bytes);
    let guest = guest_pcrs(&serial);
    if let Some(d) = std::env::var_os("CVM_UKI_CAPTURE_DIR") {
        let d = Path::new(&d);
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join(format!("{tag}.eventlog.bin")), &log_bytes).unwrap();
        std::fs::write(d.join(format!("{tag}.serial.txt")), &serial).unwrap();
        let mut pcrs = String::new();
        for (alg, vals) in &guest {
            for (n, v) in vals.iter().enumerate() {
                pcrs.push_str(&format!("PCR {alg} {n} {}\n", hex(v)));
            }
        }
        std::fs::write(d.join(format!("{tag}.pcrs.txt")), pcrs).unwrap();
        std::fs::write(
            d.join(format!("{tag}.inputs.txt")),
            inputs_manifest(&t, &uki.bytes),
        )
        .unwrap();
    }

    let log = EventLog::parse(&log_bytes).expect("the guest's log parses");
    let oracle = tpm2_eventlog_pcrs(&log_path);
    eprintln!(
        "{tag}: banks in the guest {:?}, in the log {:?}",
        guest.keys().collect::<Vec<_>>(),
        log.banks()
    );
    for e in log
        .events
        .iter()
        .filter(|e| predict::PREDICTED_PCRS.contains(&e.pcr))
    {
        eprintln!(
            "{tag}: {} sha256={}",
            e.describe(),
            e.digest(HashAlg::Sha256).map(hex).unwrap_or_default()
        );
    }
    for (alg, values) in &guest {
        // Our replay of the log = tpm2_eventlog's = the TPM's, for every PCR.
        let replay = log.replay(*alg).unwrap();
        for (n, v) in values.iter().enumerate() {
            if n == 10 {
                // IMA's PCR: the kernel's own log, not the firmware's.
                continue;
            }
            assert_eq!(&replay[n], v, "{tag} {alg} PCR {n}: our replay vs the TPM");
            if let Some(o) = oracle.get(alg).and_then(|m| m.get(&(n as u32))) {
                assert_eq!(
                    &replay[n], o,
                    "{tag} {alg} PCR {n}: our replay vs tpm2_eventlog"
                );
            }
        }
        assert!(oracle.contains_key(alg), "tpm2_eventlog has no {alg} bank");
        // The prediction = the TPM, and event for event = the log.
        let p = boot_pcrs(&uki.bytes, *alg, path).unwrap();
        if let Some(m) = first_mismatch(&p.events, &log, *alg) {
            panic!("{tag} {alg}: {m}");
        }
        for pcr in predict::PREDICTED_PCRS {
            assert_eq!(
                p.get(pcr).unwrap(),
                values[pcr as usize].as_slice(),
                "{tag} {alg} PCR {pcr}: prediction vs the TPM"
            );
        }
        assert_eq!(p.pcr12, vec![0u8; alg.digest_len()], "PCR 12 stays zero");
    }
}

#[test]
#[ignore = "boots QEMU (TCG) with OVMF and swtpm: a minute or more"]
fn qemu_kernel_boot_matches_the_prediction() {
    check_boot(BootPath::QemuKernel, "ovmf-qemu-kernel");
}

#[test]
#[ignore = "boots QEMU (TCG) with OVMF and swtpm from a FAT disk: a minute or more"]
fn boot_option_from_disk_matches_the_prediction() {
    check_boot(BootPath::BootOption, "ovmf-boot-option");
}
