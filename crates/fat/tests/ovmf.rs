//! The firmware reads our image: a GPT disk whose ESP holds our FAT image with
//! /EFI/BOOT/BOOTX64.EFI = a small UKI, booted by OVMF under QEMU (TCG).
//!
//! Ignored by default (it needs QEMU, OVMF, sgdisk, objcopy, systemd's EFI stub, busybox-static
//! and the kernel in /work/main/.cache or $CVM_FAT_KERNEL, and takes tens of seconds). Run with
//! `cargo test -p cvm-fat --test ovmf -- --include-ignored --nocapture`.
//!
//! The UKI is test scaffolding made with objcopy (systemd-stub(7)'s recipe for systemd 252):
//! systemd's stub + the kernel + an initrd whose /init prints a marker on the serial console and
//! powers off. Seeing the marker proves the firmware found the ESP, read the FAT32 directory
//! chain to \EFI\BOOT\BOOTX64.EFI and loaded all of its clusters (a wrong byte in the kernel or
//! initrd would not get as far).

mod common;

use common::{TempDir, run};
use cvm_fat::{FatImage, FatTime, FatType};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const MARKER: &str = "CVM-FAT-ESP-BOOTED-7f3a";
const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const BUSYBOX: &str = "/bin/busybox";
const TIMEOUT: Duration = Duration::from_secs(300);

fn kernel() -> PathBuf {
    if let Some(k) = std::env::var_os("CVM_FAT_KERNEL") {
        return k.into();
    }
    // crates/fat -> workspace root -> .cache/kernel/vmlinuz (a symlink to the shared cache).
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/kernel/vmlinuz")
}

/// A newc cpio archive (the initramfs format), written here so the test needs no cpio tool.
fn cpio(entries: &[(&str, u32, u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut push = |ino: usize, name: &str, mode: u32, rdev: u32, data: &[u8]| {
        let (major, minor) = (rdev >> 8, rdev & 0xFF);
        let hdr = format!(
            "070701{ino:08X}{mode:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{major:08X}{minor:08X}{:08X}{:08X}",
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            name.len() + 1,
            0
        );
        out.extend_from_slice(hdr.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    for (i, (name, mode, rdev, data)) in entries.iter().enumerate() {
        push(i + 1, name, *mode, *rdev, data);
    }
    push(0, "TRAILER!!!", 0, 0, &[]);
    out
}

fn build_uki(tmp: &TempDir) -> Vec<u8> {
    let init = format!("#!/bin/busybox sh\n/bin/busybox echo {MARKER}\n/bin/busybox poweroff -f\n");
    let busybox = std::fs::read(BUSYBOX).expect("busybox-static");
    let initrd = cpio(&[
        ("bin", 0o040755, 0, b""),
        ("bin/busybox", 0o100755, 0, &busybox),
        ("dev", 0o040755, 0, b""),
        ("dev/console", 0o020600, (5 << 8) | 1, b""),
        ("init", 0o100755, 0, init.as_bytes()),
    ]);
    std::fs::write(tmp.path("initrd"), initrd).unwrap();
    std::fs::write(tmp.path("cmdline"), "console=ttyS0 panic=-1\0").unwrap();
    std::fs::write(tmp.path("osrel"), "ID=cvm-fat-test\nNAME=cvm-fat test\n").unwrap();
    let k = kernel();
    assert!(k.exists(), "no kernel at {}", k.display());
    let out = tmp.path("uki.efi");
    let sec = |name: &str, file: PathBuf, vma: &str| {
        [
            "--add-section".to_string(),
            format!(".{name}={}", file.display()),
            "--change-section-vma".to_string(),
            format!(".{name}={vma}"),
        ]
    };
    let mut c = Command::new("objcopy");
    c.args(sec("osrel", tmp.path("osrel"), "0x20000"))
        .args(sec("cmdline", tmp.path("cmdline"), "0x30000"))
        .args(sec("linux", k, "0x2000000"))
        .args(sec("initrd", tmp.path("initrd"), "0x3000000"))
        .arg(STUB)
        .arg(&out);
    let o = run(&mut c);
    assert!(o.status.success(), "objcopy: {o:?}");
    std::fs::read(out).unwrap()
}

#[test]
#[ignore = "boots QEMU/OVMF under TCG (tens of seconds); run with --include-ignored"]
fn ovmf_boots_uki_from_our_esp() {
    let tmp = TempDir::new("ovmf");
    let uki = build_uki(&tmp);
    eprintln!("UKI: {} bytes", uki.len());

    // The ESP: 64 MiB, FAT32, at LBA 2048 of a GPT disk.
    const ESP_LBA: u64 = 2048;
    const ESP_BYTES: u64 = 64 << 20;
    let t = Instant::now();
    let mut esp = FatImage::new(ESP_BYTES, "ESP", FatTime::MIN).unwrap();
    esp.set_hidden_sectors(ESP_LBA as u32);
    esp.add_file("/EFI/BOOT/BOOTX64.EFI", uki.clone()).unwrap();
    let image = esp.to_vec().unwrap();
    eprintln!(
        "FAT image: {} MiB {:?}, built in {:.0} ms",
        ESP_BYTES >> 20,
        esp.fat_type(),
        t.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(esp.fat_type(), FatType::Fat32);

    let disk = tmp.path("disk.img");
    let f = std::fs::File::create(&disk).unwrap();
    f.set_len(ESP_LBA * 512 + ESP_BYTES + (1 << 20)).unwrap();
    drop(f);
    let o = run(Command::new("sgdisk")
        .arg(format!("--new=1:{ESP_LBA}:+{}K", ESP_BYTES >> 10))
        .arg("--typecode=1:EF00")
        .arg("--change-name=1:ESP")
        .arg(&disk));
    assert!(o.status.success(), "sgdisk: {o:?}");
    let o = run(Command::new("sgdisk").arg("--info=1").arg(&disk));
    let info = String::from_utf8_lossy(&o.stdout);
    assert!(info.contains("EFI system partition"), "{info}");
    assert!(
        info.contains(&format!("First sector: {ESP_LBA} ")),
        "{info}"
    );
    let last = ESP_LBA + ESP_BYTES / 512 - 1;
    assert!(info.contains(&format!("Last sector: {last} ")), "{info}");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.seek(SeekFrom::Start(ESP_LBA * 512)).unwrap();
        f.write_all(&image).unwrap();
    }

    let vars = tmp.path("vars.fd");
    std::fs::copy(OVMF_VARS, &vars).unwrap();
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-machine", "q35", "-accel", "tcg", "-m", "512", "-smp", "1"])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .args(["-nic", "none", "-no-reboot"])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = qemu.spawn().expect("qemu-system-x86_64");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = String::new();
    let mut marker_at = None;
    // OVMF's "BdsDxe: starting Boot000N \"UEFI Misc Device\"" is the virtio disk's removable
    // media path, \EFI\BOOT\BOOTX64.EFI, loaded and started.
    let mut firmware_loaded = None;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if t.elapsed() > TIMEOUT {
            break None;
        }
        while let Ok(line) = rx.try_recv() {
            let clean: String = line.chars().filter(|c| !c.is_control()).collect();
            if clean.contains("BdsDxe: starting") && clean.contains("UEFI Misc Device") {
                firmware_loaded.get_or_insert(t.elapsed());
            }
            if clean.contains(MARKER) && !clean.contains("echo") && marker_at.is_none() {
                marker_at = Some(t.elapsed());
            }
            log.push_str(&clean);
            log.push('\n');
        }
        // Without a loadable boot option OVMF ends in its shell: fail now, not at the timeout.
        if log.contains("Shell>") || log.contains("UEFI Interactive Shell") {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("QEMU did not power off (timeout {TIMEOUT:?} or UEFI shell); console:\n{log}");
    };
    // Drain what is left of the console.
    std::thread::sleep(Duration::from_millis(200));
    while let Ok(line) = rx.try_recv() {
        let clean: String = line.chars().filter(|c| !c.is_control()).collect();
        if clean.contains(MARKER) && marker_at.is_none() {
            marker_at = Some(t.elapsed());
        }
        log.push_str(&clean);
        log.push('\n');
    }
    let total = t.elapsed();
    let tail: String = log
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        status.success(),
        "QEMU exited with {status}; console:\n{tail}"
    );
    let Some(firmware_loaded) = firmware_loaded else {
        panic!("OVMF did not report starting the disk's boot option; console:\n{tail}");
    };
    let Some(marker_at) = marker_at else {
        panic!("no marker on the console; console:\n{tail}");
    };
    eprintln!(
        "OVMF (TCG) booted the UKI from our ESP: firmware started BOOTX64.EFI after {:.1} s, \
         marker after {:.1} s, powered off after {:.1} s",
        firmware_loaded.as_secs_f64(),
        marker_at.as_secs_f64(),
        total.as_secs_f64()
    );
    for l in log.lines().filter(|l| l.contains("BdsDxe")) {
        eprintln!("  {l}");
    }
}
