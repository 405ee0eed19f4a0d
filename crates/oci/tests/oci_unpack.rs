//! OCI layer unpacking end to end: layers built with GNU tar (and gzip/zstd) applied in order
//! with whiteouts and opaque directories; hostile layers built with the `tar` crate (raw
//! headers where the builder refuses a name) refused without writing outside the root.

use cvm_oci::unpack::{Compression, Limits, UnpackError, Usage, apply_layer};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn sha256(data: &[u8]) -> String {
    let mut out = String::from("sha256:");
    for b in Sha256::digest(data) {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn run(cmd: &mut Command, stdin: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || input.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "{cmd:?} failed");
    out.stdout
}

/// A layer tar of `dir` made by GNU tar the way image builders do (`./` prefix, numeric ids).
fn gnu_tar(dir: &Path, extra: &[&str]) -> Vec<u8> {
    let mut cmd = Command::new("tar");
    cmd.arg("-C")
        .arg(dir)
        .args(["--sort=name", "--numeric-owner"])
        .args(extra)
        .args(["-cf", "-", "."]);
    run(&mut cmd, b"")
}

fn compress(tar: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::None => tar.to_vec(),
        Compression::Gzip => run(Command::new("gzip").arg("-c"), tar),
        Compression::Zstd => run(Command::new("zstd").args(["-q", "-c"]), tar),
    }
}

fn apply(
    root: &Path,
    tar: &[u8],
    compression: Compression,
    limits: &Limits,
    usage: &mut Usage,
) -> Result<(), UnpackError> {
    let blob = compress(tar, compression);
    apply_layer(
        root,
        &blob[..],
        compression,
        &sha256(&blob),
        &sha256(tar),
        limits,
        usage,
    )
    .map(|_| ())
}

fn apply_default(root: &Path, tar: &[u8]) -> Result<(), UnpackError> {
    apply(
        root,
        tar,
        Compression::None,
        &Limits::default(),
        &mut Usage::default(),
    )
}

/// Every path under `dir`, relative, sorted (without following symlinks).
fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            out.insert(path.strip_prefix(base).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn write(path: &Path, data: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap()
}

#[test]
fn three_layers_with_whiteouts_and_opaque_dir() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    fs::create_dir(&root).unwrap();
    let mut usage = Usage::default();
    let limits = Limits::default();

    // Layer 1 (gzip): the base.
    let l1 = work.path().join("l1");
    write(&l1.join("etc/passwd"), "root:x:0:0\n", 0o644);
    write(&l1.join("etc/keep"), "gone later", 0o600);
    write(&l1.join("bin/sh"), "#!shell", 0o755);
    write(&l1.join("bin/su"), "setuid", 0o4755);
    fs::hard_link(l1.join("bin/sh"), l1.join("bin/sh2")).unwrap();
    symlink("sh", l1.join("bin/link")).unwrap();
    symlink("/etc/passwd", l1.join("etc/abs-link")).unwrap();
    write(&l1.join("opt/old/a"), "a", 0o644);
    write(&l1.join("opt/old/sub/b"), "b", 0o644);
    write(&l1.join("var/x"), "x", 0o644);
    fs::set_permissions(l1.join("opt"), fs::Permissions::from_mode(0o750)).unwrap();
    Command::new("mkfifo")
        .arg(l1.join("var/fifo"))
        .status()
        .unwrap();
    let status = Command::new("touch")
        .args(["-h", "-d", "@1000000000"])
        .arg(l1.join("etc/passwd"))
        .arg(l1.join("opt"))
        .status()
        .unwrap();
    assert!(status.success());
    let tar1 = gnu_tar(&l1, &["--owner=1234", "--group=5678"]);
    apply(&root, &tar1, Compression::Gzip, &limits, &mut usage).unwrap();

    assert_eq!(read(&root.join("etc/passwd")), "root:x:0:0\n");
    assert_eq!(mode(&root.join("bin/sh")), 0o755);
    assert_eq!(mode(&root.join("etc/keep")), 0o600);
    assert_eq!(mode(&root.join("opt")), 0o750);
    assert_eq!(mode(&root.join("bin/su")), 0o4755, "setuid is kept");
    assert_eq!(
        fs::read_link(root.join("bin/link")).unwrap(),
        Path::new("sh")
    );
    assert_eq!(
        fs::read_link(root.join("etc/abs-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    let sh = fs::metadata(root.join("bin/sh")).unwrap();
    assert_eq!(sh.ino(), fs::metadata(root.join("bin/sh2")).unwrap().ino());
    assert!(
        fs::symlink_metadata(root.join("var/fifo"))
            .unwrap()
            .file_type()
            .is_fifo_like()
    );
    assert_eq!(
        fs::metadata(root.join("etc/passwd")).unwrap().mtime(),
        1_000_000_000
    );
    // Directory metadata is applied after its children were written.
    assert_eq!(
        fs::metadata(root.join("opt")).unwrap().mtime(),
        1_000_000_000
    );
    if nix::unistd::geteuid().is_root() {
        assert_eq!(sh.uid(), 1234);
        assert_eq!(sh.gid(), 5678);
    }
    let after_l1 = usage;
    assert!(after_l1.bytes > 0 && after_l1.entries > 10);

    // Layer 2 (zstd): whiteout, opaque dir (with new content), replacements.
    let l2 = work.path().join("l2");
    write(&l2.join("etc/.wh.keep"), "", 0o644);
    write(
        &l2.join("etc/passwd"),
        "root:x:0:0\nuser:x:1000:1000\n",
        0o640,
    );
    write(&l2.join("opt/old/.wh..wh..opq"), "", 0o644);
    write(&l2.join("opt/old/new"), "new", 0o644);
    write(&l2.join("var/x/y"), "file replaced by a directory", 0o644);
    let tar2 = gnu_tar(&l2, &[]);
    apply(&root, &tar2, Compression::Zstd, &limits, &mut usage).unwrap();

    assert!(!root.join("etc/keep").exists());
    assert!(
        !root.join("etc/.wh.keep").exists(),
        "markers are not written"
    );
    assert_eq!(
        read(&root.join("etc/passwd")),
        "root:x:0:0\nuser:x:1000:1000\n"
    );
    assert_eq!(mode(&root.join("etc/passwd")), 0o640);
    assert_eq!(read(&root.join("var/x/y")), "file replaced by a directory");
    assert!(usage.bytes > after_l1.bytes);

    // Layer 3 (plain tar, PAX format): whiteouts of a directory and of a symlink; a symlink
    // replaced by a file.
    let l3 = work.path().join("l3");
    write(&l3.join(".wh.var"), "", 0o644);
    write(&l3.join("bin/.wh.sh2"), "", 0o644);
    write(&l3.join("bin/link"), "now a file", 0o644);
    let tar3 = gnu_tar(&l3, &["--format=pax"]);
    apply(&root, &tar3, Compression::None, &limits, &mut usage).unwrap();

    assert_eq!(read(&root.join("bin/link")), "now a file");
    assert_eq!(read(&root.join("bin/sh")), "#!shell");
    assert_eq!(
        tree(&root),
        set(&[
            "bin",
            "bin/link",
            "bin/sh",
            "bin/su",
            "etc",
            "etc/abs-link",
            "etc/passwd",
            "opt",
            "opt/old",
            "opt/old/new",
        ])
    );
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo()
    }
}

/// A tar made with the `tar` crate; `raw` entries get their name written straight into the
/// header (the builder refuses `..` and absolute names).
#[derive(Clone)]
enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    RawFile(&'a str, &'a [u8]),
    RawDir(&'a str),
    RawSymlink(&'a str, &'a str),
    RawHardLink(&'a str, &'a str),
    CharDev(&'a str),
    /// A header declaring `size` bytes, with no data after it.
    Declared(&'a str, u64),
    /// A PAX `path` record overriding the header name.
    PaxPath(&'a str, &'a str),
}

fn build(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(1);
        h.set_uid(0);
        h.set_gid(0);
        match *e {
            E::File(p, data) => {
                h.set_size(data.len() as u64);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, p, data).unwrap();
            }
            E::Dir(p) => {
                h.set_mode(0o755);
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, p, &b""[..]).unwrap();
            }
            E::Symlink(p, t) => {
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, p, t).unwrap();
            }
            E::HardLink(p, t) => {
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Link);
                b.append_link(&mut h, p, t).unwrap();
            }
            E::RawFile(p, data) => {
                raw_name(&mut h, p);
                h.set_size(data.len() as u64);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_cksum();
                b.append(&h, data).unwrap();
            }
            E::RawDir(p) => {
                raw_name(&mut h, p);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Directory);
                h.set_cksum();
                b.append(&h, &b""[..]).unwrap();
            }
            E::RawSymlink(p, t) | E::RawHardLink(p, t) => {
                raw_name(&mut h, p);
                let gnu = h.as_gnu_mut().unwrap();
                gnu.linkname[..t.len()].copy_from_slice(t.as_bytes());
                h.set_size(0);
                h.set_entry_type(if matches!(e, E::RawSymlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_cksum();
                b.append(&h, &b""[..]).unwrap();
            }
            E::CharDev(p) => {
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Char);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                b.append_data(&mut h, p, &b""[..]).unwrap();
            }
            E::Declared(p, size) => {
                raw_name(&mut h, p);
                h.set_size(size);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_cksum();
                b.get_mut().extend_from_slice(h.as_bytes());
            }
            E::PaxPath(header_name, pax_path) => {
                b.append_pax_extensions([("path", pax_path.as_bytes())])
                    .unwrap();
                raw_name(&mut h, header_name);
                h.set_size(1);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_cksum();
                b.append(&h, &b"p"[..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn raw_name(h: &mut tar::Header, name: &str) {
    let gnu = h.as_gnu_mut().unwrap();
    gnu.name = [0; 100];
    gnu.name[..name.len()].copy_from_slice(name.as_bytes());
}

/// A root next to an `outside` directory holding a canary, to see that a hostile layer
/// changed nothing outside the root.
struct Sandbox {
    _dir: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        let root = base.join("root");
        let outside = base.join("outside");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("canary"), "canary").unwrap();
        Sandbox {
            _dir: dir,
            base,
            root,
            outside,
        }
    }

    fn assert_outside_untouched(&self) {
        assert_eq!(tree(&self.outside), set(&["canary"]));
        assert_eq!(read(&self.outside.join("canary")), "canary");
        let top: BTreeSet<String> = fs::read_dir(&self.base)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(top, set(&["outside", "root"]));
    }
}

fn hostile(entries: &[E]) -> (Sandbox, UnpackError) {
    let s = Sandbox::new();
    let tar = build(entries);
    let err = apply_default(&s.root, &tar).expect_err("hostile layer accepted");
    s.assert_outside_untouched();
    (s, err)
}

#[test]
fn refuses_dotdot_and_absolute_paths() {
    for name in [
        "../outside/evil",
        "a/../../outside/evil",
        "/tmp/evil-abs",
        "..",
    ] {
        let (_, err) = hostile(&[E::RawFile(name, b"evil")]);
        assert!(
            matches!(err, UnpackError::InvalidPath { .. }),
            "{name}: {err}"
        );
    }
    let (_, err) = hostile(&[E::RawSymlink("../outside/evil-link", "canary")]);
    assert!(matches!(err, UnpackError::InvalidPath { .. }), "{err}");
    // The same through a PAX path record, with a harmless name in the header.
    let (s, err) = hostile(&[E::PaxPath("harmless", "../outside/evil")]);
    assert!(matches!(err, UnpackError::InvalidPath { .. }), "{err}");
    assert!(!s.root.join("harmless").exists());
}

#[test]
fn never_writes_through_a_symlink() {
    let s = Sandbox::new();
    let outside = s.outside.to_str().unwrap().to_string();
    for (link, target) in [("a", outside.as_str()), ("b", "../outside"), ("c", "..")] {
        let file = format!("{link}/canary");
        let tar = build(&[E::Symlink(link, target), E::RawFile(&file, b"evil")]);
        let err = apply_default(&s.root, &tar).expect_err("write through symlink accepted");
        assert!(matches!(err, UnpackError::NotADirectory { .. }), "{err}");
        s.assert_outside_untouched();
    }
    // A directory entry, a hard link and a whiteout through the symlink are refused too.
    for entries in [
        vec![E::Symlink("d", "../outside"), E::Dir("d/newdir")],
        vec![
            E::Symlink("d", "../outside"),
            E::HardLink("d/x", "d/canary"),
        ],
        vec![
            E::Symlink("d", "../outside"),
            E::RawFile("d/.wh.canary", b""),
        ],
        vec![
            E::Symlink("d", "../outside"),
            E::RawFile("d/.wh..wh..opq", b""),
        ],
    ] {
        let (_, err) = hostile(&entries);
        assert!(matches!(err, UnpackError::NotADirectory { .. }), "{err}");
    }
}

#[test]
fn replaces_a_symlink_instead_of_following_it() {
    let s = Sandbox::new();
    let target = s.outside.join("canary");
    let tar = build(&[
        E::Symlink("passwd", target.to_str().unwrap()),
        E::File("passwd", b"inside"),
    ]);
    apply_default(&s.root, &tar).unwrap();
    assert_eq!(read(&s.root.join("passwd")), "inside");
    assert!(
        !fs::symlink_metadata(s.root.join("passwd"))
            .unwrap()
            .is_symlink()
    );
    s.assert_outside_untouched();
}

#[test]
fn refuses_escaping_hard_links() {
    for target in ["../outside/canary", "/etc/passwd", "missing"] {
        let (_, err) = hostile(&[E::RawHardLink("h", target)]);
        assert!(
            matches!(
                err,
                UnpackError::InvalidLink { .. } | UnpackError::BadHardLink { .. }
            ),
            "{target}: {err}"
        );
    }
    // Through a symlink to outside.
    let (_, err) = hostile(&[
        E::Symlink("s", "../outside"),
        E::RawHardLink("h", "s/canary"),
    ]);
    assert!(matches!(err, UnpackError::NotADirectory { .. }), "{err}");
    // To a directory.
    let (_, err) = hostile(&[E::Dir("d"), E::RawHardLink("h", "d")]);
    assert!(matches!(err, UnpackError::BadHardLink { .. }), "{err}");
}

#[test]
fn hard_link_to_a_symlink_links_the_symlink() {
    let s = Sandbox::new();
    let tar = build(&[
        E::Symlink("s", "../outside/canary"),
        E::RawHardLink("h", "s"),
    ]);
    apply_default(&s.root, &tar).unwrap();
    assert!(fs::symlink_metadata(s.root.join("h")).unwrap().is_symlink());
    s.assert_outside_untouched();
}

#[test]
fn refuses_device_nodes() {
    let (s, err) = hostile(&[E::CharDev("dev/null")]);
    assert!(matches!(err, UnpackError::DeviceNode { .. }), "{err}");
    assert!(!s.root.join("dev/null").exists());
}

#[test]
fn refuses_oversized_files_and_totals() {
    // 5 GiB declared, no data: refused before anything is read or written.
    let (s, err) = hostile(&[E::Declared("big", 5 << 30)]);
    match err {
        UnpackError::FileTooLarge { path, size, .. } => {
            assert_eq!(path, "big");
            assert_eq!(size, 5 << 30);
        }
        other => panic!("{other}"),
    }
    assert!(!s.root.join("big").exists());

    // The total is counted across layers.
    let s = Sandbox::new();
    let limits = Limits {
        max_total: 1000,
        ..Limits::default()
    };
    let mut usage = Usage::default();
    let data = [7u8; 600];
    let tar = build(&[E::File("one", &data)]);
    apply(&s.root, &tar, Compression::None, &limits, &mut usage).unwrap();
    assert_eq!(usage.bytes, 600);
    let tar = build(&[E::File("two", &data)]);
    let err = apply(&s.root, &tar, Compression::Gzip, &limits, &mut usage).unwrap_err();
    match err {
        UnpackError::TotalTooLarge { path, max } => {
            assert_eq!(path, "two");
            assert_eq!(max, 1000);
        }
        other => panic!("{other}"),
    }

    // Entry count.
    let limits = Limits {
        max_entries: 2,
        ..Limits::default()
    };
    let tar = build(&[E::File("a", b"a"), E::File("b", b"b"), E::File("c", b"c")]);
    let err = apply(
        &Sandbox::new().root,
        &tar,
        Compression::None,
        &limits,
        &mut Usage::default(),
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::TooManyEntries { .. }), "{err}");
}

#[test]
fn refuses_bad_whiteouts() {
    for name in ["a/.wh..", "a/.wh...", ".wh."] {
        let (_, err) = hostile(&[E::Dir("a"), E::RawFile(name, b"")]);
        assert!(
            matches!(err, UnpackError::InvalidPath { .. }),
            "{name}: {err}"
        );
    }
    // A whiteout name used as a directory.
    let (_, err) = hostile(&[E::RawFile(".wh.x/file", b"")]);
    assert!(matches!(err, UnpackError::InvalidPath { .. }), "{err}");
}

#[test]
fn whiteouts_apply_only_to_lower_layers() {
    let s = Sandbox::new();
    let lower = build(&[
        E::File("d/lower", b"l"),
        E::File("d/sub/lower", b"l"),
        E::File("e/lower", b"l"),
    ]);
    apply_default(&s.root, &lower).unwrap();
    // The opaque marker after this layer's own entries, and a whiteout of an entry this layer
    // created: both leave this layer's entries alone.
    let upper = build(&[
        E::Dir("d"),
        E::File("d/mine", b"m"),
        E::File("d/sub/mine", b"m"),
        E::File("d/.wh..wh..opq", b""),
        E::File("e/new", b"n"),
        E::File("e/.wh.new", b""),
        E::File("e/.wh.lower", b""),
        E::File(".wh.missing", b""),
    ]);
    apply_default(&s.root, &upper).unwrap();
    assert_eq!(
        tree(&s.root),
        set(&["d", "d/mine", "d/sub", "d/sub/mine", "e", "e/new"])
    );
}

#[test]
fn long_names_from_gnu_and_pax() {
    let long = format!("{}/file", "x".repeat(150));
    for format in ["--format=gnu", "--format=pax"] {
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("src");
        write(&src.join(&long), "long", 0o644);
        symlink(&long, src.join("longlink")).unwrap();
        let root = work.path().join("root");
        fs::create_dir(&root).unwrap();
        apply_default(&root, &gnu_tar(&src, &[format])).unwrap();
        assert_eq!(read(&root.join(&long)), "long");
        assert_eq!(
            fs::read_link(root.join("longlink")).unwrap(),
            Path::new(&long)
        );
    }
}

#[test]
fn digest_mismatches_are_errors() {
    let s = Sandbox::new();
    let tar = build(&[E::File("f", b"data")]);
    let blob = compress(&tar, Compression::Gzip);
    let limits = Limits::default();
    let other = sha256(b"something else");

    let err = apply_layer(
        &s.root,
        &blob[..],
        Compression::Gzip,
        &other,
        &sha256(&tar),
        &limits,
        &mut Usage::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, UnpackError::BlobDigestMismatch { .. }),
        "{err}"
    );

    let err = apply_layer(
        &s.root,
        &blob[..],
        Compression::Gzip,
        &sha256(&blob),
        &other,
        &limits,
        &mut Usage::default(),
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::DiffIdMismatch { .. }), "{err}");

    // The diff_id of the compressed bytes (a classic mix-up) is not the diff_id.
    let err = apply_layer(
        &s.root,
        &blob[..],
        Compression::Gzip,
        &sha256(&blob),
        &sha256(&blob),
        &limits,
        &mut Usage::default(),
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::DiffIdMismatch { .. }), "{err}");

    let err = apply_layer(
        &s.root,
        &blob[..],
        Compression::Gzip,
        "md5:abc",
        &sha256(&tar),
        &limits,
        &mut Usage::default(),
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::Digest(_)), "{err}");

    // Correct digests: accepted, and the report carries them.
    let report = apply_layer(
        &s.root,
        &blob[..],
        Compression::Gzip,
        &sha256(&blob),
        &sha256(&tar),
        &limits,
        &mut Usage::default(),
    )
    .unwrap();
    assert_eq!(report.diff_id.to_string(), sha256(&tar));
    assert_eq!(report.blob_digest.to_string(), sha256(&blob));
    assert_eq!(report.blob_size, blob.len() as u64);
    assert_eq!(report.tar_size, tar.len() as u64);
}

#[test]
fn multi_frame_zstd_and_multi_member_gzip() {
    let a = build(&[E::File("a", b"first")]);
    // A tar split across two compressed frames/members: the concatenation decodes to `a`.
    let (head, tail) = a.split_at(700);
    for compression in [Compression::Gzip, Compression::Zstd] {
        let s = Sandbox::new();
        let mut blob = compress(head, compression);
        blob.extend(compress(tail, compression));
        apply_layer(
            &s.root,
            &blob[..],
            compression,
            &sha256(&blob),
            &sha256(&a),
            &Limits::default(),
            &mut Usage::default(),
        )
        .unwrap();
        assert_eq!(read(&s.root.join("a")), "first");
    }
}

#[test]
fn media_type_detection() {
    assert_eq!(
        Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip").unwrap(),
        Compression::Gzip
    );
    assert!(matches!(
        Compression::from_media_type("application/octet-stream"),
        Err(UnpackError::UnknownMediaType { .. })
    ));
}

mod random {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Random bytes as a layer, raw or behind a valid gzip/zstd wrapper: an error,
        /// never a panic, and nothing outside the root.
        #[test]
        fn random_layers_error(data in proptest::collection::vec(any::<u8>(), 0..4096), kind in 0u8..5) {
            let s = Sandbox::new();
            let (blob, compression) = match kind {
                0 => (data.clone(), Compression::None),
                1 => (data.clone(), Compression::Gzip),
                2 => (data.clone(), Compression::Zstd),
                3 => (compress(&data, Compression::Gzip), Compression::Gzip),
                _ => (compress(&data, Compression::Zstd), Compression::Zstd),
            };
            let zero = format!("sha256:{}", "0".repeat(64));
            let result = apply_layer(
                &s.root, &blob[..], compression, &zero, &zero,
                &Limits::default(), &mut Usage::default(),
            );
            prop_assert!(result.is_err());
            s.assert_outside_untouched();
        }
    }
}

mod random_entries {
    use super::*;
    use proptest::prelude::*;

    const COMPONENTS: &[&str] = &["a", "b", "..", ".", ".wh.a", ".wh..wh..opq", "canary"];
    const TARGETS: &[&str] = &[
        "../outside",
        "..",
        "../../outside/canary",
        "/",
        "a",
        "b/../..",
    ];

    fn name() -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(COMPONENTS), 1..4)
            .prop_map(|parts| parts.join("/"))
    }

    #[derive(Debug, Clone)]
    enum Op {
        File(String),
        Dir(String),
        Symlink(String, &'static str),
        HardLink(String, String),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            name().prop_map(Op::File),
            name().prop_map(Op::Dir),
            (name(), proptest::sample::select(TARGETS)).prop_map(|(n, t)| Op::Symlink(n, t)),
            (name(), name()).prop_map(|(n, t)| Op::HardLink(n, t)),
        ]
    }

    fn to_tar(ops: &[Op]) -> Vec<u8> {
        let entries: Vec<E> = ops
            .iter()
            .map(|op| match op {
                Op::File(n) => E::RawFile(n, b"evil"),
                Op::Dir(n) => E::RawDir(n),
                Op::Symlink(n, t) => E::RawSymlink(n, t),
                Op::HardLink(n, t) => E::RawHardLink(n, t),
            })
            .collect();
        build(&entries)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        /// Layers of random entries with hostile names and link targets, two layers in a row:
        /// accepted or refused, never a panic, and never a change outside the root.
        #[test]
        fn nothing_escapes(first in proptest::collection::vec(op(), 1..8),
                           second in proptest::collection::vec(op(), 1..8)) {
            let s = Sandbox::new();
            let mut usage = Usage::default();
            let limits = Limits::default();
            let _ = apply(&s.root, &to_tar(&first), Compression::None, &limits, &mut usage);
            s.assert_outside_untouched();
            let _ = apply(&s.root, &to_tar(&second), Compression::None, &limits, &mut usage);
            s.assert_outside_untouched();
        }
    }
}

#[test]
fn refuses_huge_extension_headers() {
    // A 2 MiB PAX record (a few KiB behind gzip) is refused before the tar crate buffers it.
    let big = "y".repeat(2 << 20);
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("comment", big.as_bytes())])
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "f", &b"f"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let s = Sandbox::new();
    let err = apply(
        &s.root,
        &tar,
        Compression::Gzip,
        &Limits::default(),
        &mut Usage::default(),
    )
    .unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("extension header"), "{chain}");
    assert!(!s.root.join("f").exists());
    s.assert_outside_untouched();
}
