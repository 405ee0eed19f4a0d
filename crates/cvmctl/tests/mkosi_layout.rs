//! The mkosi image (`make image`, systemd/repart.d) and `cvmctl disk` make the same disk
//! layout: `cvmctl disk` is given the mkosi image's own UKI and verity root (the image with its
//! ESP deleted by `sgdisk`, which leaves the two root partitions where repart put them) and
//! the two partition tables, as `sfdisk --json` reads them, must agree on the partitions'
//! order, types, names and sizes (the root pair exactly: its PARTUUIDs are the halves of the
//! root hash and its sizes the verity superblock's), on the ESP's size and on the UKI in it.
//! What differs by design: the disk GUID and the ESP's PARTUUID (repart derives them from
//! mkosi's Seed=, `cvmctl disk` from the content) and where the hash partition starts (repart
//! packs it behind the data partition at 4 KiB, `cvmctl disk` starts every partition on a
//! MiB). Needs `make image` (CVM_IMAGE_DIR, default out/image).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ok(cmd: &mut Command) -> Vec<u8> {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is the tool installed?)"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

fn image_dir() -> PathBuf {
    let dir = std::env::var_os("CVM_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("out/image"));
    assert!(
        dir.join("cvm-agent-production.raw").exists(),
        "{}: run `make image`",
        dir.display()
    );
    dir
}

#[derive(Debug, PartialEq)]
struct Part {
    start: u64,
    size: u64,
    kind: String,
    uuid: String,
    name: String,
}

fn table(disk: &Path) -> (String, Vec<Part>) {
    let json: serde_json::Value =
        serde_json::from_slice(&ok(Command::new("sfdisk").arg("--json").arg(disk))).unwrap();
    let t = &json["partitiontable"];
    assert_eq!(t["label"], "gpt");
    assert_eq!(t["sectorsize"], 512);
    let parts = t["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Part {
            start: p["start"].as_u64().unwrap() * 512,
            size: p["size"].as_u64().unwrap() * 512,
            kind: p["type"].as_str().unwrap().to_string(),
            uuid: p["uuid"].as_str().unwrap().to_string(),
            name: p["name"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    (t["id"].as_str().unwrap().to_string(), parts)
}

fn uki_on_esp(disk: &Path, esp: &Part, out: &Path) -> Vec<u8> {
    let esp_file = out.with_extension("esp");
    let f = std::fs::File::open(disk).unwrap();
    let mut bytes = vec![0u8; esp.size as usize];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut bytes, esp.start).unwrap();
    std::fs::write(&esp_file, bytes).unwrap();
    ok(Command::new("mcopy")
        .arg("-n")
        .arg("-i")
        .arg(&esp_file)
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .arg(out));
    std::fs::read(out).unwrap()
}

#[test]
fn cvmctl_disk_lays_out_the_mkosi_image_as_repart_does() {
    let dir = image_dir();
    let mkosi_disk = dir.join("cvm-agent-production.raw");
    let uki = dir.join("cvm-agent-production.efi");
    let roothash = std::fs::read_to_string(dir.join("cvm-agent-production.roothash")).unwrap();
    let work = tempfile::tempdir().unwrap();

    // The mkosi disk without its ESP: a verity root image as `cvmctl rootfs` makes them.
    let rootfs = work.path().join("rootfs.img");
    std::fs::copy(&mkosi_disk, &rootfs).unwrap();
    ok(Command::new("sgdisk").arg("--delete=1").arg(&rootfs));
    let ours = work.path().join("disk.img");
    ok(Command::new(env!("CARGO_BIN_EXE_cvmctl"))
        .arg("disk")
        .arg("--uki")
        .arg(&uki)
        .arg("--rootfs")
        .arg(&rootfs)
        .arg("-o")
        .arg(&ours));

    let (their_id, theirs) = table(&mkosi_disk);
    let (our_id, ours_parts) = table(&ours);
    assert_eq!(theirs.len(), 3, "{theirs:?}");
    assert_eq!(ours_parts.len(), 3, "{ours_parts:?}");
    let names = |p: &[Part]| p.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&theirs),
        ["esp", "root-x86-64", "root-x86-64-verity"],
        "repart's names"
    );
    assert_eq!(names(&ours_parts), names(&theirs));
    for (t, o) in theirs.iter().zip(&ours_parts) {
        assert_eq!(t.kind, o.kind, "{} type", t.name);
        assert_eq!(t.size, o.size, "{} size", t.name);
        // repart's grain and ours: every partition starts on 4 KiB at least.
        assert_eq!(t.start % 4096, 0, "{t:?}");
        assert_eq!(o.start % (1 << 20), 0, "{o:?}");
    }
    // The ESP and the data partition start at the same MiB on both.
    assert_eq!(theirs[0].start, 1 << 20);
    assert_eq!(theirs[0].start, ours_parts[0].start);
    assert_eq!(theirs[1].start, ours_parts[1].start);
    // The ESP: the size the repart definition asks for and `cvmctl disk`'s default rule gives.
    assert_eq!(theirs[0].size, 64 << 20);
    // The root pair: PARTUUIDs are the root hash's halves on both.
    let hash = roothash.trim().to_uppercase();
    for (p, half) in [(&theirs[1], &hash[..32]), (&theirs[2], &hash[32..])] {
        assert_eq!(p.uuid.replace('-', ""), half, "{p:?}");
    }
    assert_eq!(theirs[1].uuid, ours_parts[1].uuid);
    assert_eq!(theirs[2].uuid, ours_parts[2].uuid);
    // What differs by design.
    assert_ne!(their_id, our_id);
    assert_ne!(theirs[0].uuid, ours_parts[0].uuid);
    // The same UKI at the same path on both ESPs.
    let a = uki_on_esp(&mkosi_disk, &theirs[0], &work.path().join("theirs.efi"));
    let b = uki_on_esp(&ours, &ours_parts[0], &work.path().join("ours.efi"));
    assert_eq!(a, std::fs::read(&uki).unwrap());
    assert_eq!(a, b);
    // And the root partitions' bytes.
    let read = |disk: &Path, p: &Part| {
        let f = std::fs::File::open(disk).unwrap();
        let mut bytes = vec![0u8; p.size as usize];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut bytes, p.start).unwrap();
        bytes
    };
    for i in 1..3 {
        assert!(
            read(&mkosi_disk, &theirs[i]) == read(&ours, &ours_parts[i]),
            "{} bytes differ",
            theirs[i].name
        );
    }
}
