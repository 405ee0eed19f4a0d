//! `cvmctl image build` against the real tools: skopeo reads and copies our layouts, umoci
//! unpacks them to the source tree; two builds are byte-identical; our own unpacker applies our
//! layers (and a layout umoci made). No tool is optional: a skipped check would hide a broken
//! image.

use cvm_image::oci_build::{LayerCompression, read_image};
use cvm_oci::unpack::{Compression, Limits, UnpackError, Usage, apply_layer};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

const EPOCH: &str = "1700000000";

fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn cvmctl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cvmctl"));
    cmd.env("SOURCE_DATE_EPOCH", EPOCH);
    cmd
}

/// `cvmctl image build`; returns the manifest digest (the last line of stdout).
fn build(tree: &Path, layout: &Path, tag: &str, extra: &[&str]) -> String {
    let out = run_ok(
        cvmctl()
            .args(["image", "build"])
            .arg(tree)
            .arg("-o")
            .arg(layout)
            .args(["--tag", tag])
            .args(extra),
    );
    let text = String::from_utf8(out).unwrap();
    let last = text.lines().last().unwrap().to_string();
    assert!(last.starts_with("sha256:") && last.len() == 71, "{text}");
    last
}

fn write(path: &Path, data: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with what images have: modes (setuid, private), symlinks (relative, absolute,
/// dangling, to a directory), a hard link, a long name, an empty file and an empty directory.
fn sample_tree(dir: &Path) {
    write(&dir.join("bin/tool"), b"#!/bin/sh\necho tool\n", 0o755);
    write(&dir.join("bin/su"), b"setuid", 0o4755);
    write(&dir.join("etc/shadow"), b"root:*:1::::::\n", 0o600);
    write(&dir.join("etc/empty"), b"", 0o644);
    write(
        &dir.join("usr/share/big.bin"),
        &pseudo_random(300_000),
        0o644,
    );
    let long = "n".repeat(120);
    write(&dir.join("usr/share").join(&long), b"long name", 0o644);
    fs::create_dir_all(dir.join("var/empty")).unwrap();
    fs::create_dir_all(dir.join("root")).unwrap();
    fs::set_permissions(dir.join("root"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::create_dir_all(dir.join("tmp")).unwrap();
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    symlink("tool", dir.join("bin/relative")).unwrap();
    symlink("/bin/tool", dir.join("bin/absolute")).unwrap();
    symlink("../nowhere", dir.join("bin/dangling")).unwrap();
    symlink("usr/share", dir.join("share")).unwrap();
    fs::hard_link(dir.join("bin/tool"), dir.join("usr/tool-hardlink")).unwrap();
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
    Other,
}

/// Every path under `dir` with its kind, content, mode and owner (symlinks not followed).
fn snapshot(dir: &Path) -> BTreeMap<String, (Node, u32, u32, u32)> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, (Node, u32, u32, u32)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let node = if meta.is_dir() {
                walk(base, &path, out);
                Node::Dir
            } else if meta.is_file() {
                Node::File(fs::read(&path).unwrap())
            } else if meta.file_type().is_symlink() {
                Node::Symlink(fs::read_link(&path).unwrap())
            } else {
                Node::Other
            };
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            out.insert(rel, (node, meta.mode() & 0o7777, meta.uid(), meta.gid()));
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn assert_same_tree(source: &Path, unpacked: &Path) {
    let (a, b) = (snapshot(source), snapshot(unpacked));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "paths differ"
    );
    let root = nix::unistd::geteuid().is_root();
    for (path, (node, mode, _, _)) in &a {
        let (node2, mode2, uid2, gid2) = &b[path];
        assert_eq!(node, node2, "{path}");
        assert_eq!(mode, mode2, "mode of {path}");
        if root {
            assert_eq!((*uid2, *gid2), (0, 0), "owner of {path}");
        }
    }
    let ino = |p: &str| fs::metadata(unpacked.join(p)).unwrap().ino();
    assert_eq!(ino("bin/tool"), ino("usr/tool-hardlink"), "hard link kept");
    let mtime = fs::symlink_metadata(unpacked.join("usr/share/big.bin"))
        .unwrap()
        .mtime();
    assert_eq!(mtime.to_string(), EPOCH);
}

fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) {
    let mut cmd = Command::new("umoci");
    cmd.arg("unpack");
    if !nix::unistd::geteuid().is_root() {
        cmd.arg("--rootless");
    }
    run_ok(
        cmd.arg("--image")
            .arg(format!("{}:{tag}", layout.display()))
            .arg(bundle),
    );
}

fn oci_ref(layout: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", layout.display())
}

fn skopeo_json(args: &[&str], reference: &str) -> serde_json::Value {
    serde_json::from_slice(&run_ok(
        Command::new("skopeo")
            .arg("inspect")
            .args(args)
            .arg(reference),
    ))
    .unwrap()
}

/// Applies every layer of `tag` with our unpacker into a fresh `root`.
fn our_unpack(layout: &Path, tag: &str, root: &Path) -> Result<Usage, UnpackError> {
    fs::create_dir_all(root).unwrap();
    let mut usage = Usage::default();
    for layer in read_image(layout, tag).unwrap() {
        apply_layer(
            root,
            fs::File::open(&layer.path).unwrap(),
            Compression::from_media_type(&layer.media_type)?,
            &layer.digest,
            &layer.diff_id,
            &Limits::default(),
            &mut usage,
        )?;
    }
    Ok(usage)
}

#[test]
fn skopeo_reads_our_config_and_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, layout) = (tmp.path().join("tree"), tmp.path().join("layout"));
    sample_tree(&tree);
    let digest = build(
        &tree,
        &layout,
        "app:v1",
        &[
            "--cmd",
            r#"["/bin/tool","--flag"]"#,
            "--entrypoint",
            r#"["/bin/sh","-c"]"#,
            "--env",
            "PATH=/bin:/usr/bin",
            "--env",
            "MODE=a=b",
            "--label",
            "org.example.b=2",
            "--label",
            "org.example.a=1",
            "--workdir",
            "/var",
            "--user",
            "1000:1000",
        ],
    );
    // A second tag in the same layout, built from the same tree with another Cmd.
    let other = build(&tree, &layout, "app:v2", &["--cmd", r#"["/bin/su"]"#]);
    assert_ne!(digest, other);

    let inspect = skopeo_json(&[], &oci_ref(&layout, "app:v1"));
    assert_eq!(inspect["Digest"], digest.as_str());
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(inspect["Created"], "2023-11-14T22:13:20Z");
    assert_eq!(
        inspect["Env"],
        serde_json::json!(["PATH=/bin:/usr/bin", "MODE=a=b"])
    );
    assert_eq!(
        inspect["Labels"],
        serde_json::json!({"org.example.a": "1", "org.example.b": "2"})
    );
    let config = skopeo_json(&["--config"], &oci_ref(&layout, "app:v1"));
    let c = &config["config"];
    assert_eq!(c["Cmd"], serde_json::json!(["/bin/tool", "--flag"]));
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["WorkingDir"], "/var");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);

    let v2 = skopeo_json(&["--config"], &oci_ref(&layout, "app:v2"));
    assert_eq!(v2["config"]["Cmd"], serde_json::json!(["/bin/su"]));
    assert_eq!(
        skopeo_json(&[], &oci_ref(&layout, "app:v2"))["Digest"],
        other
    );

    // Rebuilding a tag replaces its index entry rather than adding a second one.
    build(&tree, &layout, "app:v2", &["--cmd", r#"["/bin/su"]"#]);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(
        fs::read_to_string(layout.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
}

#[test]
fn skopeo_copies_our_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, layout, copy) = (
        tmp.path().join("tree"),
        tmp.path().join("layout"),
        tmp.path().join("copy"),
    );
    sample_tree(&tree);
    build(&tree, &layout, "t", &["--cmd", r#"["/bin/tool"]"#]);
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(oci_ref(&layout, "t"))
            .arg(oci_ref(&copy, "t")),
    );
    let a = skopeo_json(&[], &oci_ref(&layout, "t"));
    let b = skopeo_json(&[], &oci_ref(&copy, "t"));
    assert_eq!(a["Layers"], b["Layers"]);
    let bundle = tmp.path().join("bundle");
    umoci_unpack(&copy, "t", &bundle);
    assert_same_tree(&tree, &bundle.join("rootfs"));
}

#[test]
fn umoci_unpacks_our_layout_to_the_source_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, layout) = (tmp.path().join("tree"), tmp.path().join("layout"));
    sample_tree(&tree);
    for compression in ["gzip", "none"] {
        build(&tree, &layout, compression, &["--compression", compression]);
        let bundle = tmp.path().join(format!("bundle-{compression}"));
        umoci_unpack(&layout, compression, &bundle);
        assert_same_tree(&tree, &bundle.join("rootfs"));
    }
}

#[test]
fn two_builds_are_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    sample_tree(&tree);
    // The same content made again elsewhere, in another order, with other mtimes and owner.
    let twin = tmp.path().join("twin");
    sample_tree(&twin);
    fs::remove_file(twin.join("etc/shadow")).unwrap();
    write(&twin.join("etc/shadow"), b"root:*:1::::::\n", 0o600);
    nix::unistd::chown(
        &twin.join("etc/empty"),
        Some(nix::unistd::Uid::from_raw(1234)),
        None,
    )
    .ok();
    let old = fs::File::open(twin.join("bin/tool")).unwrap();
    old.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(5))
        .unwrap();

    for compression in ["gzip", "zstd", "none"] {
        let args = ["--compression", compression, "--env", "A=1"];
        let (l1, l2, l3) = (
            tmp.path().join(format!("{compression}-1")),
            tmp.path().join(format!("{compression}-2")),
            tmp.path().join(format!("{compression}-3")),
        );
        let d1 = build(&tree, &l1, "t", &args);
        let d2 = build(&tree, &l2, "t", &args);
        let d3 = build(&twin, &l3, "t", &args);
        assert_eq!(d1, d2, "{compression}");
        assert_eq!(d1, d3, "{compression}: same content elsewhere");
        let listing = |l: &Path| {
            let mut v: Vec<_> = fs::read_dir(l.join("blobs/sha256"))
                .unwrap()
                .map(|e| {
                    let p = e.unwrap().path();
                    (p.file_name().unwrap().to_owned(), fs::read(&p).unwrap())
                })
                .collect();
            v.sort();
            (v, fs::read(l.join("index.json")).unwrap())
        };
        assert_eq!(listing(&l1), listing(&l2), "{compression}");
        assert_eq!(listing(&l1), listing(&l3), "{compression}");
    }
    // Another SOURCE_DATE_EPOCH is another image.
    let out = run_ok(
        cvmctl()
            .env("SOURCE_DATE_EPOCH", "1")
            .args(["image", "build"])
            .arg(&tree)
            .arg("-o")
            .arg(tmp.path().join("epoch1"))
            .args(["--tag", "t", "--env", "A=1"]),
    );
    let d = String::from_utf8(out).unwrap();
    let d1 = build(&tree, &tmp.path().join("again"), "t", &["--env", "A=1"]);
    assert_ne!(d.lines().last().unwrap(), d1);
}

#[test]
fn our_unpacker_applies_our_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, layout) = (tmp.path().join("tree"), tmp.path().join("layout"));
    sample_tree(&tree);
    // A second layer made by GNU tar that deletes a file (a whiteout) and adds one.
    let upper = tmp.path().join("upper");
    write(&upper.join("etc/.wh.empty"), b"", 0o644);
    write(&upper.join("etc/added"), b"added", 0o640);
    let upper_tar = tmp.path().join("upper.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&upper)
            .args(["--sort=name", "--numeric-owner", "--owner=0", "--group=0"])
            .arg("-cf")
            .arg(&upper_tar)
            .arg("."),
    );
    for compression in ["gzip", "zstd", "none"] {
        let args = [
            "--compression",
            compression,
            "--extra-layer",
            upper_tar.to_str().unwrap(),
        ];
        build(&tree, &layout, compression, &args);
        let layers = read_image(&layout, compression).unwrap();
        assert_eq!(layers.len(), 2);
        let media = match compression {
            "gzip" => LayerCompression::Gzip,
            "zstd" => LayerCompression::Zstd,
            _ => LayerCompression::None,
        }
        .media_type();
        assert!(layers.iter().all(|l| l.media_type == media));

        let root = tmp.path().join(format!("root-{compression}"));
        let usage = our_unpack(&layout, compression, &root).unwrap();
        assert!(usage.bytes > 300_000);
        assert_eq!(fs::read(root.join("etc/added")).unwrap(), b"added");
        assert!(!root.join("etc/empty").exists(), "whiteout applied");
        fs::remove_file(root.join("etc/added")).unwrap();
        write(&root.join("etc/empty"), b"", 0o644);
        fs::File::open(root.join("etc/empty"))
            .unwrap()
            .set_modified(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(EPOCH.parse().unwrap()),
            )
            .unwrap();
        assert_same_tree(&tree, &root);
    }
}

/// A raw tar entry, name bytes as given (the `tar` crate refuses `..` in names it builds).
fn raw_entry(name: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    header.set_entry_type(kind);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

#[test]
fn hostile_extra_layers_are_shipped_as_is_and_refused_by_our_unpacker() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, layout) = (tmp.path().join("tree"), tmp.path().join("layout"));
    write(&tree.join("etc/hostname"), b"box\n", 0o644);
    let cases: [(&str, Vec<u8>); 2] = [
        (
            "dotdot",
            raw_entry(b"../escape", tar::EntryType::Regular, b"", b"x"),
        ),
        ("symlink-escape", {
            let mut t = raw_entry(b"out", tar::EntryType::Symlink, b"/tmp", b"");
            t.extend(raw_entry(b"out/escape", tar::EntryType::Regular, b"", b"x"));
            t
        }),
    ];
    for (name, mut tar) in cases {
        tar.extend([0u8; 1024]);
        let file = tmp.path().join(format!("{name}.tar"));
        fs::write(&file, &tar).unwrap();
        build(
            &tree,
            &layout,
            name,
            &["--extra-layer", file.to_str().unwrap()],
        );
        // Shipped byte for byte: the second diff_id is the tar's own digest.
        let layers = read_image(&layout, name).unwrap();
        let digest = cvm_oci::digest::Sha256Digest(
            sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&tar)).into(),
        );
        assert_eq!(layers[1].diff_id, digest.to_string(), "{name}");
        let root = tmp.path().join(format!("root-{name}"));
        let err = our_unpack(&layout, name, &root).unwrap_err();
        assert!(
            matches!(
                err,
                UnpackError::InvalidPath { .. } | UnpackError::NotADirectory { .. }
            ),
            "{name}: {err:?}"
        );
        assert!(!tmp.path().join("escape").exists());
        assert!(!Path::new("/tmp/escape").exists());
    }
}

#[test]
fn our_unpacker_applies_a_umoci_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, layout) = (tmp.path().join("tree"), tmp.path().join("umoci"));
    sample_tree(&tree);
    let image = format!("{}:t", layout.display());
    run_ok(
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout),
    );
    run_ok(Command::new("umoci").args(["new", "--image", &image]));
    let mut insert = Command::new("umoci");
    insert.arg("insert");
    if !nix::unistd::geteuid().is_root() {
        insert.arg("--rootless");
    }
    // Inserted at `/`: umoci writes the root itself as a first entry named `/`.
    run_ok(insert.args(["--image", &image]).arg(&tree).arg("/"));

    // index.json → manifest → config, by hand.
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        layout.join("blobs/sha256").join(hex)
    };
    let json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
    };
    let index = json(layout.join("index.json"));
    let manifest_desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "t")
        .unwrap();
    let manifest = json(blob(manifest_desc["digest"].as_str().unwrap()));
    let config = json(blob(manifest["config"]["digest"].as_str().unwrap()));
    let layers = manifest["layers"].as_array().unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    assert!(!layers.is_empty());

    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let mut usage = Usage::default();
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let digest = layer["digest"].as_str().unwrap();
        apply_layer(
            &root,
            fs::File::open(blob(digest)).unwrap(),
            Compression::from_media_type(layer["mediaType"].as_str().unwrap()).unwrap(),
            digest,
            diff_id.as_str().unwrap(),
            &Limits::default(),
            &mut usage,
        )
        .unwrap();
    }
    // umoci keeps the source's mtimes and owners; compare content, kinds and modes.
    let (a, b) = (snapshot(&tree), snapshot(&root));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (path, (node, mode, _, _)) in &a {
        assert_eq!((node, mode), (&b[path].0, &b[path].1), "{path}");
    }
    let ino = |p: &str| fs::metadata(root.join(p)).unwrap().ino();
    assert_eq!(ino("bin/tool"), ino("usr/tool-hardlink"));
}

#[test]
fn bad_arguments_and_foreign_directories_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    write(&tree.join("f"), b"f", 0o644);
    let fails = |args: &[&str], out: &Path, needle: &str| {
        let o = cvmctl()
            .args(["image", "build"])
            .arg(&tree)
            .arg("-o")
            .arg(out)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    let layout = tmp.path().join("layout");
    fails(&["--tag", "t", "--cmd", "/bin/sh"], &layout, "--cmd");
    fails(&["--tag", "bad tag"], &layout, "--tag");
    fails(&["--tag", "t", "--env", "=x"], &layout, "--env");
    fails(&["--tag", "t", "--owner", "root"], &layout, "--owner");
    fails(
        &["--tag", "t", "--extra-layer", "/nonexistent.tar"],
        &layout,
        "/nonexistent.tar",
    );
    // A directory with something else in it is not turned into a layout.
    let foreign = tmp.path().join("foreign");
    write(&foreign.join("notes.txt"), b"mine", 0o644);
    fails(&["--tag", "t"], &foreign, "oci-layout");
    assert_eq!(fs::read_dir(&foreign).unwrap().count(), 1);
}
