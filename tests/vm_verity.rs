//! VM tests of stage 4: the agent boots only a root whose every block dm-verity checks against
//! the root hash on the command line, and stops — before any later stage — on anything else.

use cvm_testkit as common;

use common::*;
use cvm_agent::gpt::{self, Partition};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// A private copy of the test root disk, to damage.
struct Disk {
    _dir: tempfile::TempDir,
    path: PathBuf,
    data: Partition,
    hash: Partition,
}

impl Disk {
    fn copy() -> Disk {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.img");
        std::fs::copy(rootfs(), &path).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let size = file.metadata().unwrap().len();
        let parts = gpt::parse_gpt(|off, buf| file.read_exact_at(buf, off), size).unwrap();
        let find = |t| parts.iter().find(|p| p.type_guid == t).unwrap().clone();
        Disk {
            data: find(gpt::types::ROOT_X86_64),
            hash: find(gpt::types::ROOT_X86_64_VERITY),
            path,
            _dir: dir,
        }
    }

    fn flip(&self, offset: u64) {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, offset).unwrap();
        b[0] ^= 0x01;
        f.write_all_at(&b, offset).unwrap();
    }

    /// Where `needle` first occurs inside the data partition.
    fn find_in_data(&self, needle: &[u8]) -> u64 {
        let bytes = std::fs::read(&self.path).unwrap();
        let start = self.data.offset() as usize;
        let end = start + self.data.size() as usize;
        let at = bytes[start..end]
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("needle in the data partition");
        (start + at) as u64
    }

    fn disk_arg(&self) -> Vec<String> {
        vec!["--disk".into(), format!("{}:ro", self.path.display())]
    }
}

fn hash_arg() -> String {
    format!("roothash={}", roothash())
}

/// No stage after verity ran: the TPM stage logs its banks first thing.
fn assert_stopped_in_verity(b: &Boot) {
    assert!(!b.has("tpm: active PCR banks"), "{}", b.show());
    assert!(b.result().is_none(), "{}", b.show());
    assert_ne!(b.code, 0, "{}", b.show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn good_image_switches_root_and_reads_its_os_release() {
    let b = boot_verified("");
    assert_eq!(b.code, 0, "{}", b.show());
    assert!(
        b.has("verity: switched to the verified root (erofs)"),
        "{}",
        b.show()
    );
    // os-release exists only in the verified image, not in the initrd.
    assert!(
        b.has("verity: image IMAGE_ID=cvm-demo IMAGE_VERSION=0.1.0"),
        "{}",
        b.show()
    );
    assert!(b.has("on corruption: Panic"), "{}", b.show());
    assert!(b.powered_off(), "{}", b.show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn a_flipped_byte_in_a_file_is_never_served() {
    let disk = Disk::copy();
    disk.flip(disk.find_in_data(b"IMAGE_VERSION=0.1.0") + 14);
    let b = boot(&hash_arg(), &disk.disk_arg());
    assert_stopped_in_verity(&b);
    // The corrupted block was detected (not served): dm-verity's report, then the panic that
    // panic_on_corruption asks for.
    assert!(b.has("verity") && b.has("data block"), "{}", b.show());
    assert!(b.has("Kernel panic"), "{}", b.show());
    assert!(!b.has("IMAGE_VERSION=0.1.0"), "{}", b.show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn a_flipped_byte_in_the_hash_tree_stops_the_boot() {
    let disk = Disk::copy();
    // Block 1 of the hash partition is the top level of the tree: its digest is the root hash.
    disk.flip(disk.hash.offset() + 4096 + 7);
    let b = boot(&hash_arg(), &disk.disk_arg());
    assert_stopped_in_verity(&b);
    assert!(
        b.has("Kernel panic") || !b.errors().is_empty(),
        "{}",
        b.show()
    );
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn a_garbage_superblock_is_refused() {
    let disk = Disk::copy();
    disk.flip(disk.hash.offset());
    let b = boot(&hash_arg(), &disk.disk_arg());
    b.assert_one_error("cvm-agent: error: verity: bad verity superblock on /dev/vda2 (");
    assert_stopped_in_verity(&b);
    assert!(b.powered_off(), "{}", b.show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn a_truncated_hash_partition_is_refused() {
    let disk = Disk::copy();
    // The hash partition as its own disk, cut after the superblock block.
    let short = disk.path.with_file_name("hash-short.img");
    let bytes = std::fs::read(&disk.path).unwrap();
    let start = disk.hash.offset() as usize;
    std::fs::write(&short, &bytes[start..start + 4096]).unwrap();
    let mut extra = disk.disk_arg();
    extra.extend(["--disk".into(), format!("{}:ro", short.display())]);
    let b = boot(
        &format!(
            "{} systemd.verity_root_data=/dev/vda1 systemd.verity_root_hash=/dev/vdb",
            hash_arg()
        ),
        &extra,
    );
    b.assert_one_error(
        "cvm-agent: error: verity: hash partition /dev/vdb is 4096 bytes, the superblock needs",
    );
    assert_stopped_in_verity(&b);
    assert!(b.powered_off(), "{}", b.show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn a_wrong_root_hash_finds_no_partition() {
    let good = roothash();
    // Same length, last digit changed: the derived hash PARTUUID no longer exists.
    let last = if good.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &good[..good.len() - 1]);
    let b = boot(&format!("roothash={wrong}"), &Disk::copy().disk_arg());
    b.assert_one_error("cvm-agent: error: verity: cannot find the verity partitions (no block device matches PARTUUID=");
    assert_stopped_in_verity(&b);
    assert!(b.powered_off(), "{}", b.show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn a_wrong_root_hash_on_the_right_partitions_is_never_served() {
    // Point at the real partitions explicitly: the table loads, but no block verifies.
    let good = roothash();
    let wrong: String = good
        .chars()
        .map(|c| {
            if c == 'a' {
                'b'
            } else if c == 'b' {
                'a'
            } else {
                c
            }
        })
        .collect();
    assert_ne!(wrong, good);
    let b = boot(
        &format!(
            "roothash={wrong} systemd.verity_root_data=/dev/vda1 systemd.verity_root_hash=/dev/vda2"
        ),
        &Disk::copy().disk_arg(),
    );
    assert_stopped_in_verity(&b);
    assert!(
        b.has("Kernel panic") || !b.errors().is_empty(),
        "{}",
        b.show()
    );
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn a_missing_disk_is_a_clear_error() {
    let b = boot(&hash_arg(), &[]);
    b.assert_one_error("cvm-agent: error: verity: cannot find the verity partitions (no block device matches PARTUUID=");
    assert!(b.has("no block devices"), "{}", b.show());
    assert!(b.powered_off(), "{}", b.show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn production_without_a_root_hash_refuses() {
    let b = boot("cvm.mode=production", &[]);
    b.assert_one_error("cvm-agent: error: verity: no roothash= on the kernel command line");
    assert_stopped_in_verity(&b);
    assert!(b.powered_off(), "{}", b.show());
}
