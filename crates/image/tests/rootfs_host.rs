//! `cvmctl rootfs` on the host: the image must be reproducible, and the real tools must accept
//! it as intended — `veritysetup verify` against the printed root hash (and reject a flipped
//! byte), sgdisk showing the DPS types and root-hash PARTUUIDs, fsck.erofs/unsquashfs reading
//! back the tree. No tool is optional here: a silently skipped check would let a broken image
//! through.

use cvm_disk::gpt::{self, Guid, Partition};
use cvm_image::rootfs::{self, FsType, RootfsArgs, RootfsError, RootfsReport};
use std::fs::File;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

const EPOCH: u32 = 1_700_000_000;
const OS_RELEASE: &str = "ID=cvm\nIMAGE_ID=cvm-test\nIMAGE_VERSION=1.2.3\n";

fn tool(name: &str, package: &str, args: &[&str]) -> std::process::Output {
    Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} ({package}) must be installed for this test: {e}"))
}

/// Deterministic filler (xorshift64*).
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn set_mtime(path: &Path, secs: u64) {
    let f = File::open(path).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

/// The same tree twice over: created in opposite orders with different mtimes, so only what
/// the image is meant to capture is the same.
fn make_tree(root: &Path, reverse: bool, mtime: u64) {
    let big = pseudo_random(700 * 1024, 1); // > 128 blocks: a two-level hash tree
    let mut steps: Vec<Box<dyn Fn()>> = vec![
        Box::new(|| std::fs::create_dir_all(root.join("etc")).unwrap()),
        Box::new(|| std::fs::create_dir_all(root.join("usr/bin")).unwrap()),
        Box::new(|| std::fs::create_dir_all(root.join("usr/lib")).unwrap()),
        Box::new(|| std::fs::create_dir_all(root.join("var/empty")).unwrap()),
    ];
    let files: Vec<(&str, Vec<u8>, u32)> = vec![
        ("etc/os-release", OS_RELEASE.as_bytes().to_vec(), 0o644),
        ("usr/bin/hello", b"#!/bin/sh\necho hello\n".to_vec(), 0o755),
        ("usr/lib/blob", big, 0o644),
        ("usr/lib/zero", Vec::new(), 0o600),
    ];
    let mut file_steps: Vec<Box<dyn Fn()>> = files
        .into_iter()
        .map(|(rel, data, mode)| {
            let path = root.join(rel);
            Box::new(move || {
                std::fs::write(&path, &data).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            }) as Box<dyn Fn()>
        })
        .collect();
    if reverse {
        file_steps.reverse();
    }
    steps.append(&mut file_steps);
    steps.push(Box::new(|| {
        std::os::unix::fs::symlink(
            "../usr/lib/os-release-link-target",
            root.join("etc/dangling"),
        )
        .unwrap();
        std::os::unix::fs::symlink("os-release", root.join("etc/initrd-release")).unwrap();
    }));
    std::fs::create_dir_all(root).unwrap();
    for s in &steps {
        s();
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    for rel in [
        "etc/os-release",
        "usr/bin/hello",
        "usr/lib/blob",
        "usr/lib/zero",
        "etc",
        "usr/bin",
        "usr/lib",
        "usr",
        "var/empty",
        "var",
        "",
    ] {
        set_mtime(&root.join(rel), mtime);
    }
}

struct Built {
    report: RootfsReport,
    image: Vec<u8>,
}

fn build(dir: &Path, out: &Path, fs: FsType, salt: Option<&str>) -> Built {
    let args = RootfsArgs {
        dir: dir.to_path_buf(),
        output: out.to_path_buf(),
        fs,
        salt: salt.map(str::to_string),
    };
    let report = rootfs::build(&args, EPOCH).unwrap();
    Built {
        image: std::fs::read(out).unwrap(),
        report,
    }
}

fn partitions(path: &Path) -> Vec<Partition> {
    let f = File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    gpt::parse_gpt(|off, buf| f.read_exact_at(buf, off), size).unwrap()
}

fn extract(image: &[u8], p: &Partition, to: &Path) -> PathBuf {
    let (o, n) = (p.offset() as usize, p.size() as usize);
    std::fs::write(to, &image[o..o + n]).unwrap();
    to.to_path_buf()
}

fn verify(data: &Path, hash: &Path, root_hash: &str) -> bool {
    tool(
        "veritysetup",
        "cryptsetup-bin",
        &[
            "verify",
            data.to_str().unwrap(),
            hash.to_str().unwrap(),
            root_hash,
        ],
    )
    .status
    .success()
}

/// Everything the real tools should say about one image.
fn check_image(work: &Path, built: &Built) {
    let r = &built.report;
    let disk = &r.output;

    // .roothash next to the image; the summary ends with the hash alone.
    assert_eq!(
        std::fs::read_to_string(&r.roothash_file).unwrap(),
        format!("{}\n", r.root_hash)
    );
    assert_eq!(r.to_string().lines().last(), Some(r.root_hash.as_str()));
    assert_eq!(r.root_hash.len(), 64);

    // Our strict reader: the two partitions, where the report says, with the DPS types and the
    // root hash halves as PARTUUIDs.
    let parts = partitions(disk);
    assert_eq!(parts.len(), 2);
    let (data, hash) = (&parts[0], &parts[1]);
    assert_eq!(data.type_guid, gpt::types::ROOT_X86_64);
    assert_eq!(hash.type_guid, gpt::types::ROOT_X86_64_VERITY);
    assert_eq!(data.name, "root-x86-64");
    assert_eq!(hash.name, "root-x86-64-verity");
    let hex = |g: Guid| g.to_string().replace('-', "");
    assert_eq!(hex(data.unique_guid), r.root_hash[..32]);
    assert_eq!(hex(hash.unique_guid), r.root_hash[32..]);
    assert_eq!((data.offset(), data.size()), (r.data_offset, r.data_size));
    assert_eq!((hash.offset(), hash.size()), (r.hash_offset, r.hash_size));
    assert_eq!(data.offset() % (1 << 20), 0);
    assert_eq!(hash.offset() % (1 << 20), 0);

    // The superblock on the hash partition says what the data partition holds.
    let sb_bytes = &built.image[hash.offset() as usize..][..512];
    let sb = cvm_disk::verity::parse(sb_bytes).unwrap();
    assert_eq!(sb.data_size(), data.size());
    assert_eq!(sb.hash_area_size(), hash.size());
    assert_eq!(sb.uuid(), r.verity_uuid);

    // The real veritysetup accepts the partitions with the printed root hash…
    let data_img = extract(&built.image, data, &work.join("data.img"));
    let hash_img = extract(&built.image, hash, &work.join("hash.img"));
    assert!(verify(&data_img, &hash_img, &r.root_hash), "verify failed");
    // …but not with another root hash…
    let mut other = r.root_hash.clone().into_bytes();
    other[63] = if other[63] == b'0' { b'1' } else { b'0' };
    assert!(!verify(
        &data_img,
        &hash_img,
        std::str::from_utf8(&other).unwrap()
    ));
    // …nor after one byte of the data partition flipped, wherever it is.
    for at in [0, data.size() / 2 + 123, data.size() - 1] {
        let mut tampered = built.image.clone();
        tampered[(data.offset() + at) as usize] ^= 0x40;
        let t = extract(&tampered, data, &work.join("tampered.img"));
        assert!(
            !verify(&t, &hash_img, &r.root_hash),
            "flipped byte {at} accepted"
        );
    }

    // sgdisk finds no problem and shows the same partitions.
    let disk_s = disk.to_str().unwrap();
    let v = tool("sgdisk", "gdisk", &["-v", disk_s]);
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(
        v.status.success() && text.contains("No problems found"),
        "{text}"
    );
    let p = tool("sgdisk", "gdisk", &["-p", disk_s]);
    let text = String::from_utf8_lossy(&p.stdout);
    assert!(text.contains("root-x86-64-verity"), "{text}");
    assert!(
        text.contains(&format!(
            "Disk identifier (GUID): {}",
            r.disk_guid.to_string().to_uppercase()
        )),
        "{text}"
    );
    for (n, type_guid, partuuid) in [
        (1, gpt::types::ROOT_X86_64, r.data_partuuid),
        (2, gpt::types::ROOT_X86_64_VERITY, r.hash_partuuid),
    ] {
        let i = tool("sgdisk", "gdisk", &[&format!("-i{n}"), disk_s]);
        let text = String::from_utf8_lossy(&i.stdout).to_lowercase();
        assert!(
            text.contains(&format!("partition guid code: {type_guid}")),
            "{text}"
        );
        assert!(
            text.contains(&format!("partition unique guid: {partuuid}")),
            "{text}"
        );
    }

    // The filesystem holds the tree.
    let tree = work.join("extracted");
    let _ = std::fs::remove_dir_all(&tree);
    let ok = match r.fs {
        FsType::Erofs => tool(
            "fsck.erofs",
            "erofs-utils",
            &[
                &format!("--extract={}", tree.display()),
                data_img.to_str().unwrap(),
            ],
        ),
        FsType::Squashfs => tool(
            "unsquashfs",
            "squashfs-tools",
            &["-d", tree.to_str().unwrap(), data_img.to_str().unwrap()],
        ),
    };
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(
        std::fs::read_to_string(tree.join("etc/os-release")).unwrap(),
        OS_RELEASE
    );
    assert_eq!(
        std::fs::read_link(tree.join("etc/initrd-release")).unwrap(),
        Path::new("os-release")
    );
    assert_eq!(
        std::fs::read(tree.join("usr/lib/blob")).unwrap(),
        pseudo_random(700 * 1024, 1)
    );
    assert!(
        std::fs::read_dir(tree.join("var/empty"))
            .unwrap()
            .next()
            .is_none()
    );
    let hello = std::fs::metadata(tree.join("usr/bin/hello")).unwrap();
    assert_eq!(hello.permissions().mode() & 0o7777, 0o755);
}

fn reproducible(fs: FsType) {
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    make_tree(&a, false, 1_000_000);
    make_tree(&b, true, 2_000_000);
    std::fs::create_dir_all(work.path().join("out1")).unwrap();
    std::fs::create_dir_all(work.path().join("out2")).unwrap();
    let one = build(&a, &work.path().join("out1/disk.img"), fs, None);
    let two = build(&b, &work.path().join("out2/disk.img"), fs, None);
    assert_eq!(one.report.root_hash, two.report.root_hash);
    assert!(one.image == two.image, "{fs}: images differ");
    assert_eq!(one.report.disk_size, one.image.len() as u64);
    // Nothing left behind but the image and its root hash.
    let mut left: Vec<_> = std::fs::read_dir(work.path().join("out1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["disk.img", "disk.img.roothash"]);
    check_image(work.path(), &one);

    // A given salt is used as is, and changes the root hash.
    let salted = build(&a, &work.path().join("out1/salted.img"), fs, Some("00FF"));
    assert_eq!(salted.report.salt, "00ff");
    assert_ne!(salted.report.root_hash, one.report.root_hash);
    check_image(work.path(), &salted);

    // Different content, different root hash.
    std::fs::write(a.join("etc/os-release"), "IMAGE_VERSION=1.2.4\n").unwrap();
    let changed = build(&a, &work.path().join("out1/changed.img"), fs, None);
    assert_ne!(changed.report.root_hash, one.report.root_hash);
}

#[test]
fn erofs_image_is_reproducible_and_verifies() {
    reproducible(FsType::Erofs);
}

#[test]
fn squashfs_image_is_reproducible_and_verifies() {
    reproducible(FsType::Squashfs);
}

#[test]
fn bad_requests() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    let args = |dir: &Path, out: &Path, salt: Option<&str>| RootfsArgs {
        dir: dir.to_path_buf(),
        output: out.to_path_buf(),
        fs: FsType::Erofs,
        salt: salt.map(str::to_string),
    };
    let out = work.path().join("disk.img");
    for bad in ["0", "zz", &"00".repeat(257)] {
        assert!(matches!(
            rootfs::build(&args(&tree, &out, Some(bad)), EPOCH),
            Err(RootfsError::BadSalt { .. })
        ));
    }
    assert!(matches!(
        rootfs::build(&args(&tree.join("etc/nope"), &out, None), EPOCH),
        Err(RootfsError::Stat { .. })
    ));
    std::fs::write(tree.join("file"), b"x").unwrap();
    assert!(matches!(
        rootfs::build(&args(&tree.join("file"), &out, None), EPOCH),
        Err(RootfsError::NotADirectory { .. })
    ));
    assert!(matches!(
        rootfs::build(&args(&tree, &tree.join("etc/disk.img"), None), EPOCH),
        Err(RootfsError::OutputInsideTree { .. })
    ));
    assert!(!out.exists());
    // An empty tree still makes a valid image.
    let empty = work.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let r = rootfs::build(&args(&empty, &out, None), EPOCH).unwrap();
    assert_eq!(partitions(&out).len(), 2);
    assert!(r.data_size >= 4096);
}
