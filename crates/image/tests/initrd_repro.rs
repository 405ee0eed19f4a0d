//! The initrd is part of the launch measurement: the same inputs must give the same bytes, and
//! the result must be an archive that the standard tools (and so the kernel) read as intended.

use cvm_cpio::{self as cpio, Entry, EntryKind};
use cvm_image::initrd::{self, InitrdReport, InitrdSpec};
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const AGENT: &[u8] = b"\x7fELF\x02\x01\x01\0not really an agent, but it starts like one";
const KVER: &str = "6.1.0-99-test-amd64";

struct Inputs {
    _dir: tempfile::TempDir,
    agent: PathBuf,
    spec_dir: PathBuf,
    modules_dir: PathBuf,
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// A fake agent, a spec directory with lists and files, and a tiny depmod'ed module tree,
/// so nothing depends on a downloaded kernel.
fn inputs() -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("cvm-agent");
    write(&agent, AGENT);

    let spec_dir = dir.path().join("initrd");
    write(
        &spec_dir.join("modules.load"),
        b"# always\ndm_verity\next4\nerofs\n",
    );
    write(
        &spec_dir.join("modules.carry"),
        b"# when a device matches\nvirtio_blk\nno_such_driver\n",
    );
    write(&spec_dir.join("files/etc/os-release"), b"ID=cvm\n");
    std::os::unix::fs::symlink("os-release", spec_dir.join("files/etc/initrd-release")).unwrap();

    let modules_dir = dir.path().join("lib/modules").join(KVER);
    for (ko, body) in [
        ("kernel/drivers/md/dm-mod.ko", &b"dm-mod"[..]),
        ("kernel/drivers/md/dm-verity.ko", b"dm-verity"),
        ("kernel/drivers/block/virtio_blk.ko", b"virtio_blk"),
        (
            "kernel/drivers/net/virtio_net.ko",
            b"virtio_net, not asked for",
        ),
    ] {
        write(&modules_dir.join(ko), body);
    }
    write(
        &modules_dir.join("modules.dep"),
        b"kernel/drivers/md/dm-mod.ko:\n\
          kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-mod.ko\n\
          kernel/drivers/block/virtio_blk.ko:\n\
          kernel/drivers/net/virtio_net.ko:\n",
    );
    write(
        &modules_dir.join("modules.alias"),
        b"# Aliases extracted from modules themselves.\n\
          alias virtio:d00000002v* virtio_blk\n\
          alias virtio:d00000001v* virtio_net\n",
    );
    write(
        &modules_dir.join("modules.builtin"),
        b"kernel/fs/ext4/ext4.ko\n",
    );
    write(
        &modules_dir.join("modules.order"),
        b"kernel/drivers/md/dm-mod.ko\n\
          kernel/drivers/md/dm-verity.ko\n\
          kernel/drivers/block/virtio_blk.ko\n\
          kernel/drivers/net/virtio_net.ko\n",
    );
    Inputs {
        _dir: dir,
        agent,
        spec_dir,
        modules_dir,
    }
}

fn spec(inputs: &Inputs, modules: bool, mtime: u32) -> InitrdSpec {
    InitrdSpec {
        agent: inputs.agent.clone(),
        spec_dir: inputs.spec_dir.clone(),
        modules_dir: modules.then(|| inputs.modules_dir.clone()),
        mtime,
    }
}

fn gunzip(report: &InitrdReport) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&report.bytes[..])
        .read_to_end(&mut out)
        .expect("the initrd is valid gzip");
    assert_eq!(out.len() as u64, report.uncompressed_len);
    out
}

fn find<'a>(entries: &'a [Entry], path: &str) -> &'a Entry {
    entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("{path} is not in the initrd"))
}

/// `gzip -dc initrd | cpio -it`, as a person would check an initrd.
fn list_with_gnu_tools(report: &InitrdReport) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("initrd.img");
    std::fs::write(&path, &report.bytes).unwrap();
    let mut gzip = Command::new("gzip")
        .arg("-dc")
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run gzip ({e}); it is part of the project's setup"));
    let out = Command::new("/usr/bin/cpio")
        .args(["-it", "--quiet"])
        .stdin(gzip.stdout.take().unwrap())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run /usr/bin/cpio ({e}); GNU cpio is installed by the project's setup")
        });
    assert!(gzip.wait().unwrap().success(), "gzip -dc failed");
    assert!(
        out.status.success(),
        "cpio -it failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn same_inputs_same_bytes() {
    let inputs = inputs();
    let mtime = initrd::parse_source_date_epoch(Some(OsStr::new("1700000000"))).unwrap();
    for modules in [false, true] {
        let a = initrd::build(&spec(&inputs, modules, mtime)).unwrap();
        let b = initrd::build(&spec(&inputs, modules, mtime)).unwrap();
        assert_eq!(a.bytes, b.bytes, "modules: {modules}");
        assert_eq!(a.entries, b.entries);

        let other = initrd::parse_source_date_epoch(Some(OsStr::new("1700000001"))).unwrap();
        let c = initrd::build(&spec(&inputs, modules, other)).unwrap();
        assert_ne!(a.bytes, c.bytes, "the mtime must reach the archive");
        assert_eq!(a.uncompressed_len, c.uncompressed_len);
    }
}

#[test]
fn host_file_metadata_does_not_leak_in() {
    use std::os::unix::fs::PermissionsExt;
    let inputs = inputs();
    let before = initrd::build(&spec(&inputs, true, 0)).unwrap();
    // What differs between two checkouts of the same commit: timestamps and umask-driven modes.
    let release = inputs.spec_dir.join("files/etc/os-release");
    std::fs::set_permissions(&release, std::fs::Permissions::from_mode(0o664)).unwrap();
    std::fs::set_permissions(
        inputs.spec_dir.join("files/etc"),
        std::fs::Permissions::from_mode(0o775),
    )
    .unwrap();
    let data = std::fs::read(&release).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&release, data).unwrap();
    let after = initrd::build(&spec(&inputs, true, 0)).unwrap();
    assert_eq!(before.bytes, after.bytes);
}

#[test]
fn gnu_tools_list_init_and_console() {
    let inputs = inputs();
    let report = initrd::build(&spec(&inputs, false, 0)).unwrap();
    let names = list_with_gnu_tools(&report);
    for want in ["init", "dev/console", "etc/os-release", "tmp", "sysroot"] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    assert_eq!(names.len(), report.entries);
}

#[test]
fn archive_contents_without_modules() {
    let inputs = inputs();
    let report = initrd::build(&spec(&inputs, false, 7)).unwrap();
    let entries = cpio::read_newc(&gunzip(&report)).unwrap();
    assert_eq!(entries.len(), report.entries);
    assert_eq!(find(&entries, "init").kind, EntryKind::File(AGENT.to_vec()));
    assert_eq!(find(&entries, "init").mode, 0o755);
    assert_eq!(
        find(&entries, "dev/console").kind,
        EntryKind::CharDev { major: 5, minor: 1 }
    );
    assert_eq!(
        find(&entries, initrd::MODULES_LOAD_PATH).kind,
        EntryKind::File(b"# always\ndm_verity\next4\nerofs\n".to_vec())
    );
    assert_eq!(
        find(&entries, "etc/initrd-release").kind,
        EntryKind::Symlink("os-release".into())
    );
    assert_eq!(find(&entries, "etc/os-release").mode, 0o644);
    assert!(!entries.iter().any(|e| e.path.starts_with("lib/modules")));
    assert_eq!(report.kernel_version, None);
}

#[test]
fn archive_contents_with_modules() {
    let inputs = inputs();
    let report = initrd::build(&spec(&inputs, true, 0)).unwrap();
    let entries = cpio::read_newc(&gunzip(&report)).unwrap();
    let base = format!("lib/modules/{KVER}");
    assert_eq!(report.kernel_version.as_deref(), Some(KVER));
    for (ko, body) in [
        ("kernel/drivers/md/dm-mod.ko", &b"dm-mod"[..]),
        ("kernel/drivers/md/dm-verity.ko", b"dm-verity"),
        ("kernel/drivers/block/virtio_blk.ko", b"virtio_blk"),
    ] {
        let e = find(&entries, &format!("{base}/{ko}"));
        assert_eq!(e.kind, EntryKind::File(body.to_vec()), "{ko}");
    }
    assert!(
        !entries.iter().any(|e| e.path.ends_with("virtio_net.ko")),
        "a module nobody asked for was carried"
    );
    find(&entries, &format!("{base}/modules.dep"));
    for m in ["dm_verity", "virtio_blk"] {
        assert!(
            report.modules.iter().any(|n| n == m),
            "{m} not in {:?}",
            report.modules
        );
    }
    for m in ["erofs", "no_such_driver"] {
        assert!(
            report.missing_modules.iter().any(|n| n == m),
            "{m} not in {:?}",
            report.missing_modules
        );
    }
    // Every directory appears once, before its contents, as the kernel needs.
    let dirs: Vec<&str> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Dir)
        .map(|e| e.path.as_str())
        .collect();
    let mut unique = dirs.clone();
    unique.dedup();
    assert_eq!(dirs, unique);
    assert!(dirs.contains(&"lib/modules"));
}

#[test]
fn the_repository_spec_parses_and_builds() {
    let inputs = inputs();
    let spec_dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("initrd");
    let spec = InitrdSpec {
        agent: inputs.agent.clone(),
        spec_dir: spec_dir.clone(),
        modules_dir: None,
        mtime: 0,
    };
    let report = initrd::build(&spec).unwrap();
    let entries = cpio::read_newc(&gunzip(&report)).unwrap();
    let load = std::fs::read(spec_dir.join("modules.load")).unwrap();
    assert_eq!(
        find(&entries, initrd::MODULES_LOAD_PATH).kind,
        EntryKind::File(load.clone())
    );
    let load = cvm_kmod::read_module_list(&spec_dir.join("modules.load")).unwrap();
    assert!(load.iter().any(|n| n == "configfs"));
    // What stages load on demand must at least be carried.
    let carry = cvm_kmod::read_module_list(&spec_dir.join("modules.carry")).unwrap();
    for stage_needs in ["dm_verity", "dm_crypt", "erofs", "xts", "virtio_blk"] {
        assert!(carry.iter().any(|n| n == stage_needs), "{stage_needs}");
    }
}

/// The real Debian cloud kernel the VM tests boot, from the cache `make test` fills
/// (CVM_MODULES overrides); ignored by a bare `cargo test`.
#[test]
#[ignore = "needs the kernel cache: run through `make test`"]
fn real_debian_kernel() {
    let modules_dir = std::env::var_os("CVM_MODULES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join(".cache/kernel/modules")
        });
    let modules_dir = modules_dir
        .canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup.sh)", modules_dir.display()));
    let modules_dir = modules_dir.as_path();
    let inputs = inputs();
    let spec = InitrdSpec {
        agent: inputs.agent.clone(),
        spec_dir: Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("initrd"),
        modules_dir: Some(modules_dir.to_owned()),
        mtime: 0,
    };
    let a = initrd::build(&spec).unwrap();
    let b = initrd::build(&spec).unwrap();
    assert_eq!(a.bytes, b.bytes);
    eprintln!(
        "{} entries, {} bytes ({} uncompressed)\nmodules: {}\nmissing: {}",
        a.entries,
        a.bytes.len(),
        a.uncompressed_len,
        a.modules.join(" "),
        a.missing_modules.join(" ")
    );
    for m in [
        "dm_verity",
        "dm_crypt",
        "erofs",
        "virtio_blk",
        "virtio_pci",
        "hv_vmbus",
    ] {
        assert!(a.modules.iter().any(|n| n == m), "{m}");
    }
    assert_eq!(list_with_gnu_tools(&a).len(), a.entries);
}
