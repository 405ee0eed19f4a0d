//! `cvmctl disk` held to the real tools: sgdisk finds no problem and shows the three partitions
//! with the expected types, GUIDs, names and 1 MiB starts; the ESP cut out by its offset is clean
//! for `fsck.fat -n` and `mcopy` gives back the UKI byte for byte; the root partitions are the
//! rootfs image's, byte for byte; rebuilds are byte-identical; one changed byte of the UKI or of
//! the root changes the disk GUID; hostile inputs are refused with a clear error, never a panic.
//! The cloud formats: `qemu-img` reads the `vhd` back (by CHS geometry and by current size alike)
//! to the grown raw disk, whose partitions are the raw disk's byte for byte; GNU tar lists the
//! `gce` archive as one sparse oldgnu member `disk.raw` whose extracted disk is grown to a whole GiB
//! with its GPT laid out for that size. An `#[ignore]`d test boots both grown disks.
//! The `#[ignore]`d tests boot the disk under OVMF + swtpm with qemu/boot.sh `--boot-disk`: a
//! production boot must reach the verified root; a debug boot's PCRs 4, 9, 11 and 12 (all four
//! banks, read in the guest) must be what `cvmctl measure --uki` predicts.
//!
//! Needs: gdisk, dosfstools, mtools, erofs-utils, systemd-boot-efi (the stub), qemu-utils, tar,
//! gzip and the kernel from scripts/setup.sh; for the boot also qemu-system-x86, ovmf, swtpm and `make images`.

use cvm_disk::gpt::{self, Gpt, Guid, NewPartition, Partition};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cvmctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cvmctl"))
}

fn kernel() -> PathBuf {
    let k = std::env::var_os("CVM_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".cache/kernel/vmlinuz"));
    assert!(k.exists(), "{}: run scripts/setup.sh", k.display());
    k
}

fn text(o: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is the tool installed?)"))
}

fn ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(o.status.success(), "{cmd:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `cvmctl rootfs` of a small tree whose os-release says `version`.
fn rootfs(dir: &Path, name: &str, version: &str) -> (PathBuf, String) {
    let tree = dir.join(format!("{name}.tree"));
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(
        tree.join("etc/os-release"),
        format!("ID=test\nIMAGE_ID=cvm-test\nIMAGE_VERSION={version}\n"),
    )
    .unwrap();
    std::fs::write(tree.join("data"), vec![7u8; 200_000]).unwrap();
    let img = dir.join(format!("{name}.img"));
    let out = ok(cvmctl()
        .arg("rootfs")
        .arg(&tree)
        .arg("-o")
        .arg(&img)
        .env("SOURCE_DATE_EPOCH", "0"));
    let hash = out.lines().last().unwrap().trim().to_string();
    assert_eq!(hash.len(), 64, "{out}");
    (img, hash)
}

/// `cvmctl uki` with a small stand-in initrd.
fn make_uki(dir: &Path, name: &str, cmdline: &str) -> PathBuf {
    let initrd = dir.join("initrd.bin");
    if !initrd.exists() {
        std::fs::write(&initrd, b"not really an initrd, but measured all the same").unwrap();
    }
    let out = dir.join(format!("{name}.efi"));
    ok(cvmctl()
        .arg("uki")
        .arg("--kernel")
        .arg(kernel())
        .arg("--initrd")
        .arg(&initrd)
        .arg("--cmdline")
        .arg(cmdline)
        .arg("-o")
        .arg(&out));
    out
}

fn disk(uki: &Path, rootfs: &Path, out: &Path, extra: &[&str]) -> Output {
    run(cvmctl()
        .arg("disk")
        .arg("--uki")
        .arg(uki)
        .arg("--rootfs")
        .arg(rootfs)
        .args(extra)
        .arg("-o")
        .arg(out))
}

fn disk_ok(uki: &Path, rootfs: &Path, out: &Path) -> String {
    let o = disk(uki, rootfs, out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn read_table(path: &Path) -> Gpt {
    let f = std::fs::File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    gpt::read_gpt(|off, buf| f.read_exact_at(buf, off), size).unwrap()
}

fn part_bytes(path: &Path, p: &Partition) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; p.size() as usize];
    f.read_exact_at(&mut buf, p.offset()).unwrap();
    buf
}

fn mtools(cmd: &str) -> Command {
    let mut c = Command::new(cmd);
    // No user configuration and no MTOOLS_SKIP_CHECK: mtools' boot-sector checks apply.
    c.env_remove("MTOOLS_SKIP_CHECK")
        .env("MTOOLSRC", "/dev/null");
    c
}

/// The disk GUID on the first line of `cvmctl disk`'s output.
fn printed_guid(stdout: &str) -> Guid {
    let first = stdout.lines().next().unwrap();
    first
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn disk_passes_sgdisk_fsck_and_mtools_and_keeps_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (root_img, hash) = rootfs(dir, "root", "1");
    let uki = make_uki(
        dir,
        "uki",
        &format!("console=ttyS0 roothash={hash} cvm.mode=debug"),
    );
    let out = dir.join("disk.img");
    let t0 = std::time::Instant::now();
    let stdout = disk_ok(&uki, &root_img, &out);
    eprintln!("cvmctl disk (debug build): {:?}\n{stdout}", t0.elapsed());
    assert!(!stdout.contains("note:"), "{stdout}");
    assert!(stdout.contains(&format!("root hash {hash}")), "{stdout}");

    let table = read_table(&out);
    assert_eq!(printed_guid(&stdout), table.disk_guid);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), table.disk_size);
    assert_eq!(table.disk_size % (1 << 20), 0);
    let [esp, data, hash_p] = &table.partitions[..] else {
        panic!("{table:?}")
    };
    let src = read_table(&root_img);
    let find = |t| src.partitions.iter().find(|p| p.type_guid == t).unwrap();
    let (src_data, src_hash) = (
        find(gpt::types::ROOT_X86_64),
        find(gpt::types::ROOT_X86_64_VERITY),
    );
    // The ESP: first, at 1 MiB, the default 64 MiB for a UKI this small.
    assert_eq!(esp.type_guid, gpt::types::ESP);
    assert_eq!((esp.offset(), esp.size()), (1 << 20, 64 << 20));
    assert_eq!(esp.name, "esp");
    // The root partitions as the rootfs image has them: type, PARTUUID, name, size, bytes.
    for (new, old) in [(data, src_data), (hash_p, src_hash)] {
        assert_eq!(new.type_guid, old.type_guid);
        assert_eq!(new.unique_guid, old.unique_guid);
        assert_eq!(new.name, old.name);
        assert_eq!(new.attributes, old.attributes);
        assert_eq!(new.size(), old.size());
        assert_eq!(new.offset() % (1 << 20), 0);
        assert!(part_bytes(&out, new) == part_bytes(&root_img, old));
    }
    assert_eq!(data.unique_guid.to_string().replace('-', ""), hash[..32]);
    assert_eq!(hash_p.unique_guid.to_string().replace('-', ""), hash[32..]);

    // sgdisk: no problem, and the same partitions.
    let d = out.to_str().unwrap();
    let v = ok(Command::new("sgdisk").args(["-v", d]));
    assert!(v.contains("No problems found"), "{v}");
    let p = ok(Command::new("sgdisk").args(["-p", d]));
    assert!(
        p.contains(&format!(
            "Disk identifier (GUID): {}",
            table.disk_guid.to_string().to_uppercase()
        )),
        "{p}"
    );
    for (n, part) in [(1, esp), (2, data), (3, hash_p)] {
        let i = ok(Command::new("sgdisk").args([&format!("-i{n}"), d])).to_lowercase();
        for want in [
            format!("partition guid code: {}", part.type_guid),
            format!("partition unique guid: {}", part.unique_guid),
            format!("first sector: {} ", part.first_lba),
            format!("last sector: {} ", part.last_lba),
            format!("partition name: '{}'", part.name),
        ] {
            assert!(i.contains(&want), "partition {n}: no {want:?} in\n{i}");
        }
    }
    assert!(
        ok(Command::new("sgdisk").args(["-i1", d])).contains("(EFI system partition)"),
        "sgdisk names the ESP type"
    );

    // The ESP cut out by its offset: fsck.fat clean, the UKI byte for byte.
    let esp_img = dir.join("esp.img");
    std::fs::write(&esp_img, part_bytes(&out, esp)).unwrap();
    let f = run(Command::new("fsck.fat").arg("-n").arg(&esp_img));
    assert!(f.status.success(), "{}", text(&f));
    let got = dir.join("BOOTX64.EFI");
    ok(mtools("mcopy")
        .arg("-n")
        .arg("-i")
        .arg(&esp_img)
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .arg(&got));
    assert!(std::fs::read(&got).unwrap() == std::fs::read(&uki).unwrap());
    let info = ok(mtools("minfo").arg("-i").arg(&esp_img).arg("::"));
    assert!(info.contains("ESP"), "{info}");
    // FAT32, and the hidden-sector count is the partition's first LBA.
    assert!(info.contains("FAT32"), "{info}");
    assert!(info.contains("hidden sectors: 2048"), "{info}");
}

#[test]
fn rebuilds_are_identical_and_one_byte_changes_the_disk_guid() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (root1, _) = rootfs(dir, "root1", "1");
    // A UKI without roothash= accepts any root (with a note), so the root can change alone.
    let uki = make_uki(dir, "uki", "console=ttyS0");
    let (a, b) = (dir.join("a.img"), dir.join("b.img"));
    let out_a = disk_ok(&uki, &root1, &a);
    assert!(out_a.contains("note: the UKI's command line has no roothash="));
    disk_ok(&uki, &root1, &b);
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    let base = read_table(&a);
    assert_eq!(printed_guid(&out_a), base.disk_guid);

    // One byte of the UKI (its last one).
    let mut bytes = std::fs::read(&uki).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    let uki2 = dir.join("uki2.efi");
    std::fs::write(&uki2, &bytes).unwrap();
    let c = dir.join("c.img");
    disk_ok(&uki2, &root1, &c);
    let t = read_table(&c);
    assert_ne!(t.disk_guid, base.disk_guid);
    assert_ne!(t.partitions[0].unique_guid, base.partitions[0].unique_guid);
    assert_eq!(t.partitions[1..], base.partitions[1..]);

    // One byte of the root's tree ("1" → "2" in os-release): another root hash.
    let (root2, _) = rootfs(dir, "root2", "2");
    let e = dir.join("e.img");
    disk_ok(&uki, &root2, &e);
    let t = read_table(&e);
    assert_ne!(t.disk_guid, base.disk_guid);
    assert_ne!(t.partitions[0].unique_guid, base.partitions[0].unique_guid);

    // Another ESP size: another GUID too (the table differs anyway).
    let f = dir.join("f.img");
    let o = disk(&uki, &root1, &f, &["--esp-size-mib", "65"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = read_table(&f);
    assert_eq!(t.partitions[0].size(), 65 << 20);
    assert_ne!(t.disk_guid, base.disk_guid);
}

/// The partitions of `grown` are those of `raw`: same table entries, same bytes; the grown
/// table is valid for its own size (strict reader and sgdisk) with the backup in its last sector.
fn same_partitions(raw: &Path, grown: &Path, grown_size: u64) {
    let a = read_table(raw);
    let b = read_table(grown);
    assert_eq!(b.disk_size, grown_size);
    assert_eq!(a.disk_guid, b.disk_guid);
    assert_eq!(a.partitions, b.partitions);
    for p in &a.partitions {
        assert!(
            part_bytes(raw, p) == part_bytes(grown, p),
            "partition {}",
            p.number
        );
    }
    let f = std::fs::File::open(grown).unwrap();
    let mut last = [0u8; 512];
    f.read_exact_at(&mut last, grown_size - 512).unwrap();
    assert_eq!(
        &last[..8],
        b"EFI PART",
        "no backup header in the last sector"
    );
    assert_eq!(
        u64::from_le_bytes(last[24..32].try_into().unwrap()),
        grown_size / 512 - 1
    );
    let v = ok(Command::new("sgdisk").arg("-v").arg(grown));
    assert!(v.contains("No problems found"), "{v}");
}

fn qemu_img_virtual_size(args: &[&str]) -> (String, u64) {
    let json: serde_json::Value =
        serde_json::from_str(&ok(Command::new("qemu-img").args(args))).unwrap();
    (
        json["format"].as_str().unwrap_or_default().to_string(),
        json["virtual-size"].as_u64().unwrap(),
    )
}

#[test]
fn vhd_reads_back_in_qemu_img_as_the_grown_raw_disk() {
    use sha2::Digest;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (root_img, hash) = rootfs(dir, "root", "1");
    let uki = make_uki(dir, "uki", &format!("console=ttyS0 roothash={hash}"));
    let raw = dir.join("disk.img");
    disk_ok(&uki, &root_img, &raw);
    let vhd = dir.join("disk.vhd");
    let t0 = std::time::Instant::now();
    let o = disk(&uki, &root_img, &vhd, &["--format", "vhd"]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    eprintln!(
        "cvmctl disk --format vhd (debug build): {:?}\n{stdout}",
        t0.elapsed()
    );

    let bytes = std::fs::read(&vhd).unwrap();
    let len = bytes.len() as u64;
    let size = len - 512;
    // Azure: N MiB + 512; N from the CHS-exact rule (the 67 MiB raw disk grows to 155 MiB).
    assert_eq!(size % (1 << 20), 0, "{len}");
    assert!(size >= std::fs::metadata(&raw).unwrap().len());
    assert!(
        stdout.contains(&format!("fixed VHD of {len} bytes")),
        "{stdout}"
    );

    // qemu-img's two ways of sizing a VHD (its default for an unknown creator is the CHS
    // geometry) agree on the whole disk. A fixed VHD has its footer only at the end, which
    // qemu's format probe does not look at, hence `-f vpc`.
    let v = vhd.to_str().unwrap();
    let named = qemu_img_virtual_size(&["info", "--output=json", "-f", "vpc", v]);
    assert_eq!(named, ("vpc".to_string(), size));
    for calc in ["chs", "current_size"] {
        let opts = format!("driver=vpc,force_size_calc={calc},file.filename={v}");
        let (_, s) = qemu_img_virtual_size(&["info", "--output=json", "--image-opts", &opts]);
        assert_eq!(s, size, "force_size_calc={calc}");
    }
    let check = run(Command::new("qemu-img").args(["check", "-f", "vpc", v]));
    // vpc has no consistency checks: "does not support checks" (exit 63) is the best answer.
    assert!(
        check.status.success() || check.status.code() == Some(63),
        "{}",
        text(&check)
    );

    // Converted back: exactly the VHD's data part, which is a valid disk of the grown size
    // holding the raw disk's partitions.
    let back = dir.join("back.raw");
    ok(Command::new("qemu-img")
        .args(["convert", "-f", "vpc", "-O", "raw", v])
        .arg(&back));
    let back_bytes = std::fs::read(&back).unwrap();
    assert_eq!(back_bytes.len() as u64, size);
    assert!(back_bytes[..] == bytes[..size as usize]);
    same_partitions(&raw, &back, size);

    // The footer: fixed disk, sizes, a valid checksum, the id derived from the disk's bytes.
    let f = &bytes[size as usize..];
    assert_eq!(&f[..8], b"conectix");
    assert_eq!(u32::from_be_bytes(f[60..64].try_into().unwrap()), 2);
    assert_eq!(u64::from_be_bytes(f[40..48].try_into().unwrap()), size);
    assert_eq!(u64::from_be_bytes(f[48..56].try_into().unwrap()), size);
    let sum: u32 = f[..64].iter().chain(&f[68..]).map(|&b| u32::from(b)).sum();
    assert_eq!(u32::from_be_bytes(f[64..68].try_into().unwrap()), !sum);
    let digest = sha2::Sha256::digest(&back_bytes);
    let want = Guid::derive(&[&b"cvm-agent vhd unique id v1\0"[..], &digest[..]].concat());
    assert_eq!(&f[68..84], want.as_bytes());
    assert!(stdout.contains(&format!("unique id {want}")), "{stdout}");

    // Reproducible; and another root gives another unique id.
    let again = dir.join("again.vhd");
    let o = disk(&uki, &root_img, &again, &["--format", "vhd"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::read(&again).unwrap() == bytes);
    let uki_any = make_uki(dir, "any", "console=ttyS0");
    let (root2, _) = rootfs(dir, "root2", "2");
    let other = dir.join("other.vhd");
    let o = disk(&uki_any, &root2, &other, &["--format", "vhd"]);
    assert!(o.status.success(), "{}", text(&o));
    let other = std::fs::read(&other).unwrap();
    assert_ne!(
        &other[other.len() - 512 + 68..other.len() - 512 + 84],
        want.as_bytes()
    );
}

#[test]
fn gce_archive_is_one_gnu_member_disk_raw_of_whole_gib() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (root_img, hash) = rootfs(dir, "root", "1");
    let uki = make_uki(dir, "uki", &format!("console=ttyS0 roothash={hash}"));
    let raw = dir.join("disk.img");
    disk_ok(&uki, &root_img, &raw);
    let gz = dir.join("image.tar.gz");
    let t0 = std::time::Instant::now();
    let o = disk(&uki, &root_img, &gz, &["--format", "gce"]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let gz_len = std::fs::metadata(&gz).unwrap().len();
    eprintln!(
        "cvmctl disk --format gce (debug build): {:?}, {gz_len} bytes\n{stdout}",
        t0.elapsed()
    );
    assert!(
        stdout.contains(&format!("GNU tar.gz of {gz_len} bytes")),
        "{stdout}"
    );
    // Only the archive is left next to it.
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".cvmctl-")), "{names:?}");

    // gzip is intact; GNU tar lists exactly one member, disk.raw, a regular file of whole GiB.
    ok(Command::new("gzip").arg("-t").arg(&gz));
    let list = ok(Command::new("tar").arg("-tvzf").arg(&gz));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 1, "{list}");
    let fields: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(fields.last(), Some(&"disk.raw"), "{list}");
    assert!(fields[0].starts_with("-rw-r--r--"), "{list}");
    assert_eq!(fields[1], "0/0", "{list}");
    let size: u64 = fields[2].parse().unwrap();
    assert_eq!(size % (1 << 30), 0, "{list}");
    assert!(size >= std::fs::metadata(&raw).unwrap().len());
    // The GNU header magic ("ustar  \0", shared by oldgnu and gnu; POSIX has "ustar\000").
    let header = run(Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc '{}' | head -c 512", gz.display())));
    assert_eq!(&header.stdout[257..265], b"ustar  \0");
    assert_eq!(&header.stdout[..9], b"disk.raw\0");
    // Stored sparse (typeflag S), as `tar --format=oldgnu -S` does: the archive holds the
    // partitions' data, not the GiB of zeros.
    assert_eq!(header.stdout[156], b'S');
    assert!(gz_len < size / 8, "{gz_len} bytes for a {size}-byte disk");

    // Extracted, it is the raw disk's partitions in a table laid out for the whole GiB.
    let x = dir.join("x");
    std::fs::create_dir(&x).unwrap();
    ok(Command::new("tar").arg("-xzf").arg(&gz).arg("-C").arg(&x));
    let extracted = x.join("disk.raw");
    assert_eq!(std::fs::metadata(&extracted).unwrap().len(), size);
    same_partitions(&raw, &extracted, size);

    // Reproducible to the byte.
    let again = dir.join("again.tar.gz");
    let o = disk(&uki, &root_img, &again, &["--format", "gce"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::read(&again).unwrap() == std::fs::read(&gz).unwrap());
}

#[test]
fn unknown_formats_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("x.img");
    let o = run(cvmctl()
        .arg("disk")
        .args(["--uki", "a", "--rootfs", "b", "--format", "qcow2", "-o"])
        .arg(&out));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("possible values: raw, gce, vhd"));
    assert!(!out.exists());
}

/// `cvmctl disk` fails with one clear error line naming `needle`, no panic, no output left.
fn refused(uki: &Path, rootfs: &Path, out: &Path, extra: &[&str], needle: &str) {
    let o = disk(uki, rootfs, out, extra);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(err.starts_with("cvmctl: error: "), "{}", text(&o));
    assert!(err.contains(needle), "expected {needle:?} in {}", text(&o));
    assert!(!err.contains("panicked"), "{}", text(&o));
    assert!(!out.exists(), "{} was written", out.display());
    let dir = out.parent().unwrap();
    for e in std::fs::read_dir(dir).into_iter().flatten() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".cvmctl-"), "left behind: {name}");
    }
}

#[test]
fn hostile_inputs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (root, hash) = rootfs(dir, "root", "1");
    let uki = make_uki(dir, "uki", &format!("console=ttyS0 roothash={hash}"));
    let out = dir.join("out.img");
    let good = std::fs::read(&root).unwrap();
    let table = read_table(&root);
    let data = table
        .partitions
        .iter()
        .find(|p| p.type_guid == gpt::types::ROOT_X86_64)
        .unwrap()
        .clone();
    let hashp = table
        .partitions
        .iter()
        .find(|p| p.type_guid == gpt::types::ROOT_X86_64_VERITY)
        .unwrap()
        .clone();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };

    // A corrupt primary GPT header (CRC no longer matches).
    let mut bad = good.clone();
    bad[512 + 40] ^= 1;
    let p = write("crc.img", &bad);
    refused(&uki, &p, &out, &[], "bad partition table");
    refused(&uki, &p, &out, &[], "header CRC");

    // No table at all, and an empty file.
    let p = write("zeros.img", &vec![0u8; 1 << 20]);
    refused(&uki, &p, &out, &[], "no protective MBR");
    let p = write("empty.img", &[]);
    refused(&uki, &p, &out, &[], "too small for a GPT");
    refused(&uki, &dir.join("missing.img"), &out, &[], "cannot open");

    // A valid table with only the data partition: no verity partition.
    let lone = |parts: &[(&Partition, Guid)]| {
        let new: Vec<NewPartition> = parts
            .iter()
            .map(|(p, t)| NewPartition {
                type_guid: *t,
                unique_guid: p.unique_guid,
                name: p.name.clone(),
                size: p.size(),
            })
            .collect();
        let g = Gpt::new(Guid::derive(b"test"), &new).unwrap();
        let mut img = vec![0u8; g.disk_size as usize];
        g.write(|off, b| {
            img[off as usize..off as usize + b.len()].copy_from_slice(b);
            Ok(())
        })
        .unwrap();
        for (np, (p, _)) in g.partitions.iter().zip(parts) {
            let src = &good[p.offset() as usize..(p.offset() + p.size()) as usize];
            img[np.offset() as usize..(np.offset() + np.size()) as usize].copy_from_slice(src);
        }
        img
    };
    let p = write("noverity.img", &lone(&[(&data, gpt::types::ROOT_X86_64)]));
    refused(
        &uki,
        &p,
        &out,
        &[],
        "no root-x86-64-verity (hash) partition",
    );
    let p = write(
        "nodata.img",
        &lone(&[(&hashp, gpt::types::ROOT_X86_64_VERITY)]),
    );
    refused(&uki, &p, &out, &[], "no root-x86-64 (data) partition");
    // A third, foreign partition would be dropped silently: refused instead.
    let mut extra = data.clone();
    extra.unique_guid = Guid::derive(b"extra");
    let p = write(
        "extra.img",
        &lone(&[
            (&data, gpt::types::ROOT_X86_64),
            (&hashp, gpt::types::ROOT_X86_64_VERITY),
            (&extra, gpt::types::VAR),
        ]),
    );
    refused(
        &uki,
        &p,
        &out,
        &[],
        "neither root-x86-64 nor root-x86-64-verity",
    );
    // Two verity partitions.
    let mut twin = hashp.clone();
    twin.unique_guid = Guid::derive(b"twin");
    let p = write(
        "twins.img",
        &lone(&[
            (&data, gpt::types::ROOT_X86_64),
            (&hashp, gpt::types::ROOT_X86_64_VERITY),
            (&twin, gpt::types::ROOT_X86_64_VERITY),
        ]),
    );
    refused(&uki, &p, &out, &[], "more than one partition of type");

    // One flipped byte in the data, in the hash tree, in the superblock.
    let mut bad = good.clone();
    bad[(data.offset() + 5000) as usize] ^= 1;
    let p = write("data.img", &bad);
    refused(&uki, &p, &out, &[], "the data hashes to root hash");
    let mut bad = good.clone();
    let last_tree_byte = hashp.offset() + hashp.size() - 1;
    bad[last_tree_byte as usize] ^= 1;
    let p = write("tree.img", &bad);
    refused(
        &uki,
        &p,
        &out,
        &[],
        "the hash partition is not the hash tree of the data partition",
    );
    let mut bad = good.clone();
    bad[hashp.offset() as usize] ^= 1;
    let p = write("sb.img", &bad);
    refused(&uki, &p, &out, &[], "bad verity superblock");

    // The UKI: another root hash on its command line, not a PE, too small an ESP.
    let other = make_uki(
        dir,
        "other",
        &format!("console=ttyS0 roothash={}", "ab".repeat(32)),
    );
    refused(
        &other,
        &root,
        &out,
        &[],
        "but the rootfs image's root hash is",
    );
    let twice = make_uki(
        dir,
        "twice",
        &format!("roothash={hash} console=ttyS0 roothash={hash}"),
    );
    refused(&twice, &root, &out, &[], "roothash= more than once");
    let p = write("notpe.efi", b"MZ but nothing else");
    refused(&p, &root, &out, &[], "not a PE image");
    refused(&uki, &root, &out, &["--esp-size-mib", "2"], "ESP");
    // The kernel alone is a PE without .linux.
    refused(&kernel(), &root, &out, &[], "no .linux section");

    // Output into a directory that does not exist, in every format.
    refused(&uki, &root, &dir.join("nope/out.img"), &[], "cannot create");
    for format in ["gce", "vhd"] {
        let out = dir.join("nope/out");
        refused(&uki, &root, &out, &["--format", format], "cannot create");
    }
    // A bad root is refused before any format's work begins.
    let p = write("crc2.img", &{
        let mut bad = good.clone();
        bad[512 + 40] ^= 1;
        bad
    });
    for format in ["gce", "vhd"] {
        refused(&uki, &p, &out, &["--format", format], "header CRC");
    }
}

/// Boots the disk as a cloud would: OVMF finds \EFI\BOOT\BOOTX64.EFI on the ESP, the stub
/// starts the kernel with the agent's initrd, and the agent finds the root on the same disk by
/// the PARTUUIDs from `roothash=`, sets up dm-verity and switches to it.
#[test]
#[ignore = "boots a VM (OVMF + swtpm under TCG): needs `make images` and a release cvmctl (CVMCTL)"]
fn boots_from_the_disk_and_mounts_the_verified_root() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rootfs = std::env::var_os("CVM_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("out/rootfs.img"));
    let initrd = std::env::var_os("CVM_INITRD")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("out/initrd.img"));
    let mut hash_file = rootfs.clone().into_os_string();
    hash_file.push(".roothash");
    let hash = std::fs::read_to_string(&hash_file)
        .unwrap_or_else(|e| panic!("{hash_file:?}: {e} (run make images)"))
        .trim()
        .to_string();
    let uki = dir.join("uki.efi");
    let t0 = std::time::Instant::now();
    ok(cvmctl()
        .arg("uki")
        .arg("--kernel")
        .arg(kernel())
        .arg("--initrd")
        .arg(&initrd)
        .arg("--os-release")
        .arg(repo().join("rootfs/demo/etc/os-release"))
        .arg("--cmdline")
        .arg(format!("console=ttyS0 panic=-1 loglevel=4 roothash={hash}"))
        .arg("-o")
        .arg(&uki));
    let t_uki = t0.elapsed();
    let disk_img = dir.join("disk.img");
    let t1 = std::time::Instant::now();
    let stdout = disk_ok(&uki, &rootfs, &disk_img);
    eprintln!(
        "cvmctl uki {t_uki:?}, cvmctl disk {:?}\n{stdout}",
        t1.elapsed()
    );

    let console = dir.join("console.log");
    let status = Command::new(repo().join("qemu/boot.sh"))
        .arg("--boot-disk")
        .arg(&disk_img)
        .arg("--console")
        .arg(&console)
        .args(["--timeout", "300", "--quiet", "--no-net"])
        .env(
            "CVMCTL",
            std::env::var_os("CVMCTL").unwrap_or_else(|| env!("CARGO_BIN_EXE_cvmctl").into()),
        )
        .status()
        .expect("run qemu/boot.sh");
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    let show = format!("exit {status}\n--- console ---\n{log}");
    // OVMF started the UKI from the disk, not from anything else.
    assert!(log.contains("BdsDxe: starting Boot"), "{show}");
    assert!(
        log.contains("verity: switched to the verified root (erofs)"),
        "{show}"
    );
    assert!(
        log.contains("verity: image IMAGE_ID=cvm-demo IMAGE_VERSION=0.1.0"),
        "{show}"
    );
    assert!(!log.contains("cvm-agent: error:"), "{show}");
    assert!(log.contains("cvm-agent: result "), "{show}");
    assert_eq!(status.code(), Some(0), "{show}");
}

/// The same disk booted in debug mode: from the agent's debug shell the guest prints PCRs 4, 9,
/// 11 and 12 of every bank its vTPM has, and each must be what `cvmctl measure --uki` (boot
/// path `disk`, the default) predicted for this UKI — for the raw disk and for the grown disks
/// of the `vhd` and `gce` formats alike (their GPT, in PCR 5, differs; these do not). The grown
/// disks boot as the cloud presents them (the VHD's bytes as a plain disk, the footer past the
/// GPT's end; the GCE archive's `disk.raw` as GNU tar extracts it): OVMF finds the ESP through
/// the GPT laid out for the grown size, and the agent finds and verifies the root.
#[test]
#[ignore = "boots a VM (OVMF + swtpm under TCG): needs `make images`"]
fn pcrs_of_a_disk_boot_are_the_predicted_ones() {
    use std::io::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rootfs = repo().join("out/rootfs.img");
    let hash = std::fs::read_to_string(repo().join("out/rootfs.img.roothash"))
        .expect("out/rootfs.img.roothash (run make images)")
        .trim()
        .to_string();
    let uki = dir.join("uki.efi");
    ok(cvmctl()
        .arg("uki")
        .arg("--kernel")
        .arg(kernel())
        .arg("--initrd")
        .arg(repo().join("out/initrd.img"))
        .arg("--cmdline")
        .arg(format!(
            "console=ttyS0 panic=-1 loglevel=4 roothash={hash} cvm.mode=debug"
        ))
        .arg("-o")
        .arg(&uki));
    let disk_img = dir.join("disk.img");
    disk_ok(&uki, &rootfs, &disk_img);
    let predicted: serde_json::Value = serde_json::from_str(&ok(cvmctl()
        .arg("measure")
        .arg("--uki")
        .arg(&uki)
        .args(["--banks", "sha1,sha256,sha384,sha512"])))
    .unwrap();

    // The cloud formats' grown disks: another GPT (PCR 5), the same PCRs 4, 9, 11 and 12.
    let vhd = dir.join("disk.vhd");
    let o = disk(&uki, &rootfs, &vhd, &["--format", "vhd"]);
    assert!(o.status.success(), "{}", text(&o));
    let gz = dir.join("disk.tar.gz");
    let o = disk(&uki, &rootfs, &gz, &["--format", "gce"]);
    assert!(o.status.success(), "{}", text(&o));
    ok(Command::new("tar").arg("-xzf").arg(&gz).arg("-C").arg(dir));
    for (name, disk_img) in [
        ("raw", disk_img),
        ("vhd", vhd),
        ("gce", dir.join("disk.raw")),
    ] {
        let console = dir.join(format!("{name}-console.log"));
        let socket = dir.join(format!("{name}.sock"));
        let mut child = Command::new(repo().join("qemu/boot.sh"))
            .arg("--boot-disk")
            .arg(&disk_img)
            .arg("--console")
            .arg(&console)
            .arg("--serial-socket")
            .arg(&socket)
            .args(["--timeout", "300", "--quiet", "--no-net"])
            .spawn()
            .expect("run qemu/boot.sh");
        let read = || std::fs::read_to_string(&console).unwrap_or_default();
        let wait = |needle: &str, secs: u64| {
            let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
            while std::time::Instant::now() < end {
                if read().contains(needle) {
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            false
        };
        let shell = wait("debug shell on the console", 280);
        let mut serial = shell
            .then(|| std::os::unix::net::UnixStream::connect(&socket).ok())
            .flatten();
        // The socket gets the console output too: drain it, or the guest's writes stall once the
        // socket's buffer is full (the console file still gets everything).
        if let Some(mut reader) = serial.as_ref().and_then(|s| s.try_clone().ok()) {
            std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        }
        // (bank, pcr) → every value printed: the serial line sometimes garbles or cuts a line
        // (busybox's line editor asks the terminal for the cursor position, kernel messages
        // interleave), so the command is typed again until each predicted value was read whole.
        let seen = |log: &str| {
            let mut seen: std::collections::BTreeMap<(String, String), Vec<String>> =
                Default::default();
            for line in log.lines() {
                let w: Vec<&str> = line.split_whitespace().collect();
                if let ["PCRX", bank, n, value] = w[..] {
                    seen.entry((bank.into(), n.into()))
                        .or_default()
                        .push(value.to_lowercase());
                }
            }
            seen
        };
        let missing = |log: &str| {
            let seen = seen(log);
            let mut missing = Vec::new();
            for bank in ["sha1", "sha256", "sha384", "sha512"] {
                for n in ["4", "9", "11", "12"] {
                    let want = predicted["pcrs"][bank][n].as_str().unwrap().to_string();
                    let got = seen.get(&(bank.to_string(), n.to_string()));
                    if !got.is_some_and(|g| g.contains(&want)) {
                        missing.push(format!("{bank} PCR {n}: predicted {want}, read {got:?}"));
                    }
                }
            }
            missing
        };
        let cmd = b"for b in sha1 sha256 sha384 sha512; do for n in 4 9 11 12; do \
                    echo PCRX $b $n $(cat /sys/class/tpm/tpm0/pcr-$b/$n); done; done\n";
        for _ in 0..6 {
            let Some(s) = serial.as_mut() else { break };
            let _ = s.write_all(cmd);
            std::thread::sleep(std::time::Duration::from_secs(8));
            if missing(&read()).is_empty() {
                break;
            }
        }
        for _ in 0..10 {
            let Some(s) = serial.as_mut() else { break };
            let _ = s.write_all(b"poweroff -f\n");
            std::thread::sleep(std::time::Duration::from_secs(3));
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
        }
        if child.try_wait().ok().flatten().is_none() {
            let _ = child.kill();
        }
        let _ = child.wait();
        let log = read();
        let show = format!("{name}: --- console ---\n{log}");
        assert!(shell, "no debug shell\n{show}");
        assert!(
            log.contains("verity: switched to the verified root (erofs)"),
            "{show}"
        );
        let missing = missing(&log);
        assert!(missing.is_empty(), "{}\n{show}", missing.join("\n"));
    }
}
