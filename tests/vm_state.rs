//! VM tests of stage 9: the LUKS2 state disk with its key from the dev KBS — formatted on the
//! first boot, reopened on the next, and never formatted or written when anything is off.
//! The host checks the guest's header with the real cryptsetup.

use cvm_testkit as common;

use common::kbs::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

const KEY_PATH: &str = "default/state/key";
const DISK_MIB: u64 = 64;
const VAR_TYPE: &str = "4d21b016-b534-45c2-a9fb-5c16e091fd2d";

/// launch.toml with the KBS, the state key and a state section for `device`.
fn initdata(device: Option<&str>) -> Vec<u8> {
    initdata_with(device, "")
}

/// The same with more lines in `[state]`.
fn initdata_with(device: Option<&str>, state_extra: &str) -> Vec<u8> {
    let device = device
        .map(|d| format!("device = \"{d}\"\n"))
        .unwrap_or_default()
        + state_extra;
    format!(
        "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"launch.toml\" = '''\n\
         {}timeout = 20\n\n\
         [[secrets]]\nname = \"state-key\"\nuri = \"kbs:///{KEY_PATH}\"\nuse = \"state-key\"\n\n\
         [state]\n{device}mount = \"/var/lib/app\"\n'''\n",
        kbs_section()
    )
    .into_bytes()
}

fn random_key() -> Vec<u8> {
    let mut k = vec![0u8; 32];
    getrandom::fill(&mut k).unwrap();
    k
}

/// A blank disk image; with `dps_var`, a GPT whose one partition has the DPS /var type.
fn blank_disk(dir: &Path, dps_var: bool) -> PathBuf {
    let path = dir.join("state.img");
    new_file(&path, DISK_MIB << 20);
    if dps_var {
        run_ok(
            Command::new("sgdisk")
                .args([
                    "-n",
                    "1:2048:0",
                    "-t",
                    &format!("1:{VAR_TYPE}"),
                    "-c",
                    "1:state",
                ])
                .arg(&path),
        );
    }
    path
}

fn sha256_file(path: &Path) -> String {
    hex(&Sha256::digest(std::fs::read(path).unwrap()))
}

struct Run {
    kbs: Kbs,
    data: Vec<u8>,
}

fn kbs_with_key(key: &[u8], data: Vec<u8>) -> Run {
    let kbs = start_kbs(&Setup {
        policy: strict_policy(&data),
        resources: vec![(KEY_PATH.to_string(), key.to_vec())],
        tls: true,
        ..Default::default()
    });
    Run { kbs, data }
}

fn boot_with_disk(run: &Run, disk: &Path) -> Boot {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("initdata.toml");
    std::fs::write(&file, &run.data).unwrap();
    let (hash, mut extra) = verified_root();
    // The vTPM the KBS provisioned and trusts, kept across this run's boots as a VM keeps its
    // vTPM.
    extra.extend(run.kbs.tpm_args());
    extra.extend([
        "--disk".into(),
        disk.to_str().unwrap().to_string(),
        "--fw-cfg".into(),
        format!("opt/cvm/initdata={}", file.display()),
        "--guestfwd".into(),
        format!("8080:{}", run.kbs.port),
    ]);
    boot(&format!("{hash} cvm.initdata=fw_cfg"), &extra)
}

fn assert_refused_unchanged(b: &Boot, disk: &Path, before: &str, needles: &[&str]) {
    b.assert_one_error("cvm-agent: error: state: ");
    let error = b.errors()[0].to_string();
    for n in needles {
        assert!(
            error.contains(n),
            "error lacks {n:?}: {error}\n{}",
            b.show()
        );
    }
    assert!(!b.has("cvm-agent: result"), "{}", b.show());
    assert!(b.powered_off(), "{}", b.show());
    assert_eq!(
        sha256_file(disk),
        before,
        "the disk was written\n{}",
        b.show()
    );
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn formats_once_reopens_and_never_touches_a_disk_it_cannot_open() {
    let dir = tempfile::tempdir().unwrap();
    // Found by serial (the second disk boot.sh attaches is cvm-disk1), a whole raw disk.
    let disk = blank_disk(dir.path(), false);
    let key = random_key();
    let run = kbs_with_key(&key, initdata(Some("serial:cvm-disk1")));

    let b = boot_with_disk(&run, &disk);
    assert_eq!(b.code, 0, "{}\n--- kbs ---\n{}", b.show(), run.kbs.log());
    assert!(b.has("formatted now, unlock"), "{}", b.show());
    assert!(b.has("boot 1 of this volume"), "{}", b.show());
    assert!(b.result().unwrap()["stages_ms"]["state"].is_u64());
    // The secret never shows; its fingerprint may.
    assert!(!b.console.contains(&hex(&key)));

    // The host's cryptsetup reads the guest's header and accepts the KBS key.
    let keyfile = dir.path().join("key");
    std::fs::write(&keyfile, &key).unwrap();
    let dump = run_ok(Command::new("cryptsetup").arg("luksDump").arg(&disk));
    let dump = String::from_utf8_lossy(&dump).to_string();
    assert!(
        dump.contains("aes-xts-plain64") && dump.contains("sector: 4096"),
        "{dump}"
    );
    let uuid = dump
        .lines()
        .find_map(|l| l.strip_prefix("UUID:"))
        .unwrap()
        .trim()
        .to_string();
    assert!(
        b.has(&format!("LUKS2 {uuid} formatted now")),
        "{}",
        b.show()
    );
    // Exit 0 only when the key opens a keyslot.
    run_ok(
        Command::new("cryptsetup")
            .args(["open", "--test-passphrase", "--key-file"])
            .arg(&keyfile)
            .arg(&disk),
    );

    // Second boot: opened, not formatted; the count in the volume survived.
    let b = boot_with_disk(&run, &disk);
    assert_eq!(b.code, 0, "{}", b.show());
    assert!(b.has(&format!("LUKS2 {uuid} opened")), "{}", b.show());
    assert!(b.has("boot 2 of this volume"), "{}", b.show());
    drop(run);

    // A KBS that hands out another key: refused, the disk is not written.
    let before = sha256_file(&disk);
    let wrong = kbs_with_key(&random_key(), initdata(Some("serial:cvm-disk1")));
    let b = boot_with_disk(&wrong, &disk);
    assert_refused_unchanged(&b, &disk, &before, &["/dev/vdb", "key"]);
    drop(wrong);

    // Flipped bytes in the binary header, the JSON area and the keyslot area: each refused.
    let right = kbs_with_key(&key, initdata(Some("serial:cvm-disk1")));
    let pristine = std::fs::read(&disk).unwrap();
    for (at, what) in [
        (0x48usize, "binary header"),
        (0x1000 + 40, "JSON area"),
        (0x8000 + 100, "keyslot area"),
    ] {
        let mut bytes = pristine.clone();
        bytes[at] ^= 0x01;
        std::fs::write(&disk, &bytes).unwrap();
        let before = sha256_file(&disk);
        let b = boot_with_disk(&right, &disk);
        assert_refused_unchanged(&b, &disk, &before, &["/dev/vdb"]);
        eprintln!("{what}: {}", b.errors()[0]);
    }
    // Restored, it opens again: the refusals changed nothing.
    std::fs::write(&disk, &pristine).unwrap();
    let b = boot_with_disk(&right, &disk);
    assert_eq!(b.code, 0, "{}", b.show());
    assert!(b.has("boot 3 of this volume"), "{}", b.show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn found_by_dps_type_and_never_formats_what_it_did_not_create() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), true);
    let key = random_key();
    let run = kbs_with_key(&key, initdata(None));
    let b = boot_with_disk(&run, &disk);
    assert_eq!(b.code, 0, "{}", b.show());
    assert!(
        b.has("formatted now") && b.has("boot 1 of this volume"),
        "{}",
        b.show()
    );

    // Same VM (same directory, so the same vTPM), new disks in place of the first.
    // An ext4 filesystem (someone's data) on the partition: refused, unchanged.
    let other = tempfile::tempdir().unwrap();
    let part = other.path().join("part.img");
    new_file(&part, (DISK_MIB - 2) << 20);
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&part));
    let disk = disk_with_partition(dir.path(), &part);
    let before = sha256_file(&disk);
    let b = boot_with_disk(&run, &disk);
    assert_refused_unchanged(
        &b,
        &disk,
        &before,
        &["not LUKS2 and not blank", "refusing to format"],
    );

    // A LUKS2 volume that opens with the key but holds no ext4 (as after a power loss between
    // format and mkfs): not formatted again.
    new_file(&part, (DISK_MIB - 2) << 20);
    let keyfile = other.path().join("key");
    std::fs::write(&keyfile, &key).unwrap();
    run_ok(
        Command::new(cvm_testkit::cvmctl())
            .args(["state", "format"])
            .arg(&part)
            .arg("--key-file")
            .arg(&keyfile),
    );
    let disk = disk_with_partition(dir.path(), &part);
    let before = sha256_file(&disk);
    let b = boot_with_disk(&run, &disk);
    assert_refused_unchanged(
        &b,
        &disk,
        &before,
        &["has no ext4 filesystem", "not formatted again"],
    );
}

/// A blank disk with `integrity = true` in launch.toml, its KBS, and the first boot, which must
/// succeed (it formats).
fn first_integrity_boot(dir: &Path) -> (Run, PathBuf, Vec<u8>, Boot) {
    let disk = blank_disk(dir, false);
    let key = random_key();
    let run = kbs_with_key(
        &key,
        initdata_with(Some("serial:cvm-disk1"), "integrity = true\n"),
    );
    let b = boot_with_disk(&run, &disk);
    assert_eq!(b.code, 0, "{}\n--- kbs ---\n{}", b.show(), run.kbs.log());
    (run, disk, key, b)
}

/// `integrity = true`: LUKS2 with hmac(sha256) over dm-integrity, as cryptsetup's
/// `--integrity hmac-sha256`. The first boot formats, lets the kernel format dm-integrity,
/// wipes the volume once through dm-crypt and makes the filesystem; the second reopens. Data
/// changed on the host is an I/O error in the guest, and the volume is never formatted again;
/// a header the host wrote is not initialized by the guest.
#[test]
#[ignore = "boots a VM: run through `make test`"]
fn integrity_formats_wipes_reopens_and_detects_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let (run, disk, key, b) = first_integrity_boot(dir.path());
    assert!(b.has("dm-integrity initialized"), "{}", b.show());
    assert!(
        b.has("(integrity hmac(sha256)) formatted now"),
        "{}",
        b.show()
    );
    assert!(b.has("boot 1 of this volume"), "{}", b.show());
    for l in b.console.lines() {
        if l.contains("integrity") || l.contains("of this volume") {
            eprintln!("boot 1: {l}");
        }
    }

    let keyfile = dir.path().join("key");
    std::fs::write(&keyfile, &key).unwrap();
    let dump = run_ok(Command::new("cryptsetup").arg("luksDump").arg(&disk));
    let dump = String::from_utf8_lossy(&dump).to_string();
    assert!(dump.contains("integrity: hmac(sha256)"), "{dump}");
    run_ok(
        Command::new("cryptsetup")
            .args(["open", "--test-passphrase", "--key-file"])
            .arg(&keyfile)
            .arg(&disk),
    );
    // The kernel formatted dm-integrity at the data offset.
    let bytes = std::fs::read(&disk).unwrap();
    assert_eq!(&bytes[16 << 20..(16 << 20) + 8], b"integrt\0");

    let b = boot_with_disk(&run, &disk);
    assert_eq!(b.code, 0, "{}", b.show());
    assert!(b.has("(integrity hmac(sha256)) opened"), "{}", b.show());
    assert!(!b.has("dm-integrity initialized"), "{}", b.show());
    assert!(b.has("boot 2 of this volume"), "{}", b.show());
    for l in b.console.lines() {
        if l.contains("of this volume") {
            eprintln!("boot 2: {l}");
        }
    }

    drop(run);

    // The same volume under a launch.toml without integrity: refused, not opened as plain
    // aes-xts, nothing written.
    let plain = kbs_with_key(&key, initdata(Some("serial:cvm-disk1")));
    let before = sha256_file(&disk);
    let b = boot_with_disk(&plain, &disk);
    assert_refused_unchanged(&b, &disk, &before, &["integrity = false", "hmac(sha256)"]);
    drop(plain);

    // A header the host wrote (`cvmctl state format --integrity`): the guest finds a zeroed
    // dm-integrity superblock under a LUKS2 header this boot did not write, so it does not
    // initialize, wipe or format it: refused, nothing written.
    let other = tempfile::tempdir().unwrap();
    let host_disk = blank_disk(other.path(), false);
    run_ok(
        Command::new(cvm_testkit::cvmctl())
            .args(["state", "format", "--integrity", "--key-file"])
            .arg(&keyfile)
            .arg(&host_disk),
    );
    let run = kbs_with_key(
        &key,
        initdata_with(Some("serial:cvm-disk1"), "integrity = true\n"),
    );
    let before = sha256_file(&host_disk);
    let b = boot_with_disk(&run, &host_disk);
    assert_refused_unchanged(&b, &host_disk, &before, &["/dev/vdb", "all zeros"]);
    assert!(!b.has("dm-integrity initialized"), "{}", b.show());
    drop(run);

    // The host changes one byte in every 4 KiB block past the dm-integrity superblock and
    // journal (2 MiB into the data area): sectors and tags no longer match, so reading the
    // filesystem fails in the guest. The boot stops; nothing is formatted.
    let mut tampered = bytes.clone();
    let mut at = (16 << 20) + (2 << 20) + 100;
    while at < tampered.len() {
        tampered[at] ^= 0x5a;
        at += 4096;
    }
    std::fs::write(&disk, &tampered).unwrap();
    let run = kbs_with_key(
        &key,
        initdata_with(Some("serial:cvm-disk1"), "integrity = true\n"),
    );
    let b = boot_with_disk(&run, &disk);
    b.assert_one_error("cvm-agent: error: state: ");
    eprintln!("tampered: {}", b.errors()[0]);
    for l in b.console.lines().filter(|l| l.contains("AEAD")).take(3) {
        eprintln!("tampered, kernel: {l}");
    }
    assert!(b.errors()[0].contains("Input/output error"), "{}", b.show());
    // dm-crypt checked the HMAC and refused the sectors.
    assert!(b.has("INTEGRITY AEAD ERROR"), "{}", b.show());
    assert!(!b.has("formatted now"), "{}", b.show());
    assert!(!b.has("cvm-agent: result"), "{}", b.show());
    assert!(b.powered_off(), "{}", b.show());
    // The LUKS2 header is as it was.
    let after = std::fs::read(&disk).unwrap();
    assert_eq!(after[..16 << 20], bytes[..16 << 20]);
}

/// The data segment's offset in bytes, as the host's cryptsetup reads it from the LUKS2
/// header: dm-integrity's superblock sits at the start of the segment.
fn data_offset(disk: &Path) -> usize {
    let dump = run_ok(Command::new("cryptsetup").arg("luksDump").arg(disk));
    let dump = String::from_utf8_lossy(&dump).to_string();
    let segments = dump
        .split("Data segments:")
        .nth(1)
        .expect("no data segments");
    segments
        .lines()
        .find_map(|l| l.trim().strip_prefix("offset:"))
        .and_then(|v| v.trim().split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no segment offset in\n{dump}"))
}

/// The host zeroes the dm-integrity superblock of a volume the guest formatted and used. The
/// LUKS2 header still opens with the key, but the agent must not take the zeroed superblock
/// for a fresh volume (wipe + mkfs under the same measured UUID would silently drop the data):
/// the boot stops in the state stage, naming the device and the cause, and not one byte of
/// the disk changes. The same for a superblock that is not zero but not valid; with the
/// superblock restored the volume opens with its data.
#[test]
#[ignore = "boots a VM: run through `make test`"]
fn a_zeroed_integrity_superblock_is_refused_not_reformatted() {
    let dir = tempfile::tempdir().unwrap();
    let (run, disk, _key, b) = first_integrity_boot(dir.path());
    assert!(b.has("boot 1 of this volume"), "{}", b.show());

    let offset = data_offset(&disk);
    let pristine = std::fs::read(&disk).unwrap();
    let mut bytes = pristine.clone();
    assert_eq!(
        &bytes[offset..offset + 8],
        b"integrt\0",
        "no dm-integrity superblock"
    );
    // The superblock's whole 4 KiB block, as a host that wants a fresh volume would.
    bytes[offset..offset + 4096].fill(0);
    std::fs::write(&disk, &bytes).unwrap();
    let before = sha256_file(&disk);

    let b = boot_with_disk(&run, &disk);
    assert_refused_unchanged(
        &b,
        &disk,
        &before,
        &[
            "/dev/vdb",
            "dm-integrity superblock",
            "all zeros",
            "nothing was written",
        ],
    );
    eprintln!("zeroed superblock: {}", b.errors()[0]);
    assert!(!b.has("dm-integrity initialized"), "{}", b.show());
    assert!(!b.has("formatted now"), "{}", b.show());

    // Not zero but not a superblock either: refused the same way, naming the cause.
    bytes[offset..offset + 8].copy_from_slice(b"garbage!");
    std::fs::write(&disk, &bytes).unwrap();
    let before = sha256_file(&disk);
    let b = boot_with_disk(&run, &disk);
    assert_refused_unchanged(&b, &disk, &before, &["/dev/vdb", "bad magic"]);

    // The superblock put back: the volume and its data were never touched.
    std::fs::write(&disk, &pristine).unwrap();
    let b = boot_with_disk(&run, &disk);
    assert_eq!(b.code, 0, "{}", b.show());
    assert!(b.has("boot 2 of this volume"), "{}", b.show());
}

fn new_file(path: &Path, len: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(len).unwrap();
}

/// A DPS /var GPT disk whose partition (at 1 MiB) starts with `content`'s bytes.
fn disk_with_partition(dir: &Path, content: &Path) -> PathBuf {
    let disk = blank_disk(dir, true);
    let fs = std::fs::read(content).unwrap();
    let mut bytes = std::fs::read(&disk).unwrap();
    bytes[1 << 20..(1 << 20) + fs.len()].copy_from_slice(&fs);
    std::fs::write(&disk, &bytes).unwrap();
    disk
}
