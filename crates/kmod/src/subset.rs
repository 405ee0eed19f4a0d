//! Host side: the part of a kernel's modules directory that goes into the initrd.
//!
//! A whole distribution kernel carries thousands of modules; the initrd only needs the drivers a
//! VM can have plus what the agent always loads. The subset gets its own modules.dep and
//! modules.alias so the guest's index names nothing the initrd lacks (an alias for an absent
//! module would be a load failure at boot), and modules.builtin whole, so the guest knows which
//! names need no loading. The output is a pure function of the input files: same kernel, same
//! carry list, same bytes.

use crate::index::{ALIAS_FILE, BUILTIN_FILE, DEP_FILE, ModuleIndex};
use crate::{KmodError, check_kernel_version, parse_name, read_bounded};
use cvm_cpio::{Entry, EntryKind};
use std::collections::BTreeSet;
use std::path::Path;
use tracing::debug;

/// Far above the largest in-tree module (a few tens of MB with debug info), far below the newc
/// 4 GiB limit; a file this size in a modules directory is a mistake, not a driver.
const MAX_MODULE_FILE: u64 = 256 << 20;
const DIR_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;

/// What [`initrd_subset`] puts into the initrd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSubset {
    /// The base name of the modules directory (`uname -r` of that kernel).
    pub kernel_version: String,
    /// Directories, `.ko` files and index files under `lib/modules/<kernel_version>/`, sorted
    /// by path (so every parent directory precedes its children).
    pub entries: Vec<Entry>,
    /// Normalized names of the modules copied (the carry list's closure), sorted.
    pub modules: Vec<String>,
    /// Carry names (normalized) that are neither in modules.dep nor built in, in carry order.
    pub missing: Vec<String>,
}

/// The dependency closure of `carry` in the depmod'ed `modules_dir`, as initrd entries.
/// Built-in names are neither copied nor missing. Unknown names are reported in `missing`, for
/// the caller to decide; an invalid name or a broken index is an error.
pub fn initrd_subset(modules_dir: &Path, carry: &[String]) -> Result<ModuleSubset, KmodError> {
    let kernel_version = modules_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| KmodError::InvalidKernelVersion {
            version: modules_dir.display().to_string(),
            reason: "the modules directory has no UTF-8 base name",
        })?
        .to_owned();
    check_kernel_version(&kernel_version)?;
    let index = ModuleIndex::read(modules_dir)?;

    let mut keep = BTreeSet::new();
    let mut missing = Vec::new();
    for name in carry {
        let name = parse_name(name)?;
        if index.is_builtin(&name) {
            debug!("{name} is built into kernel {kernel_version}");
        } else if let Some(idx) = index.lookup(&name) {
            keep.extend(index.load_order(idx)?);
        } else if !missing.contains(&name) {
            missing.push(name);
        }
    }

    let base = format!("lib/modules/{kernel_version}");
    let mut dirs = BTreeSet::from(["lib".to_owned(), "lib/modules".to_owned(), base.clone()]);
    let mut entries = Vec::new();
    for &idx in &keep {
        let module = &index.modules[idx];
        let path = format!("{base}/{}", module.path);
        let mut parent = path.as_str();
        while let Some((dir, _)) = parent.rsplit_once('/') {
            if !dirs.insert(dir.to_owned()) {
                break;
            }
            parent = dir;
        }
        let data = read_bounded(&modules_dir.join(&module.path), MAX_MODULE_FILE)?;
        entries.push(file(path, data));
    }
    let names: BTreeSet<&str> = keep
        .iter()
        .map(|&i| index.modules[i].name.as_str())
        .collect();
    entries.push(file(format!("{base}/{DEP_FILE}"), index.render_dep(&keep)));
    entries.push(file(
        format!("{base}/{ALIAS_FILE}"),
        index.render_alias(&names),
    ));
    entries.push(file(
        format!("{base}/{BUILTIN_FILE}"),
        index.builtin_raw.clone(),
    ));
    entries.extend(dirs.into_iter().map(|path| Entry {
        path,
        mode: DIR_MODE,
        kind: EntryKind::Dir,
    }));
    entries.sort_by(|a, b| a.path.cmp(&b.path));

    Ok(ModuleSubset {
        kernel_version,
        entries,
        modules: names.into_iter().map(str::to_owned).collect(),
        missing,
    })
}

fn file(path: String, data: Vec<u8>) -> Entry {
    Entry {
        path,
        mode: FILE_MODE,
        kind: EntryKind::File(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    const KVER: &str = "6.1.0-test";

    /// A small depmod'ed modules directory: virtio bus + drivers, dm-verity with its deps, a
    /// module no one carries, and ext4 built in.
    fn fake_modules_dir(root: &Path) -> PathBuf {
        let dir = root.join("lib/modules").join(KVER);
        let modules = [
            ("kernel/drivers/virtio/virtio_ring.ko", ""),
            (
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_ring.ko",
            ),
            (
                "kernel/drivers/virtio/virtio_pci.ko",
                "kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko",
            ),
            (
                "kernel/drivers/block/virtio_blk.ko",
                "kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko",
            ),
            ("kernel/drivers/md/dm-mod.ko", ""),
            (
                "kernel/drivers/md/dm-bufio.ko",
                "kernel/drivers/md/dm-mod.ko",
            ),
            (
                "kernel/drivers/md/dm-verity.ko",
                "kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko",
            ),
            ("kernel/sound/snd.ko", ""),
        ];
        let mut dep = String::new();
        for (path, deps) in modules {
            let full = dir.join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(&full, format!("ELF {path}")).unwrap();
            dep.push_str(&format!(
                "{path}:{}{deps}\n",
                if deps.is_empty() { "" } else { " " }
            ));
        }
        fs::write(dir.join("modules.dep"), dep).unwrap();
        fs::write(
            dir.join("modules.alias"),
            "# Aliases extracted from modules themselves.\n\
             alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
             alias virtio:d00000002v* virtio_blk\n\
             alias pci:v*d*sv*sd*bc04sc01i* snd\n",
        )
        .unwrap();
        fs::write(
            dir.join("modules.builtin"),
            "kernel/fs/ext4/ext4.ko\nkernel/fs/binfmt_script.ko\n",
        )
        .unwrap();
        dir
    }

    fn carry(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn file_text<'a>(subset: &'a ModuleSubset, path: &str) -> &'a str {
        let entry = subset
            .entries
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no entry {path}"));
        match &entry.kind {
            EntryKind::File(data) => std::str::from_utf8(data).unwrap(),
            other => panic!("{path} is {other:?}"),
        }
    }

    #[test]
    fn closure_copies_deps_and_regenerates_index() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fake_modules_dir(tmp.path());
        let subset = initrd_subset(
            &dir,
            &carry(&[
                "virtio_blk",
                "virtio-pci",
                "dm-verity",
                "ext4",
                "nosuch",
                "nosuch",
            ]),
        )
        .unwrap();
        assert_eq!(subset.kernel_version, KVER);
        assert_eq!(
            subset.modules,
            [
                "dm_bufio",
                "dm_mod",
                "dm_verity",
                "virtio",
                "virtio_blk",
                "virtio_pci",
                "virtio_ring"
            ]
        );
        assert_eq!(subset.missing, ["nosuch"]);

        let paths: Vec<&str> = subset.entries.iter().map(|e| e.path.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
        let base = format!("lib/modules/{KVER}");
        for dir in [
            "lib",
            "lib/modules",
            &base,
            &format!("{base}/kernel/drivers/md"),
        ] {
            let e = subset.entries.iter().find(|e| e.path == dir).unwrap();
            assert_eq!((e.kind.clone(), e.mode), (EntryKind::Dir, 0o755), "{dir}");
        }
        assert!(
            !paths
                .iter()
                .any(|p| p.contains("sound") || p.contains("ext4"))
        );
        assert_eq!(
            file_text(&subset, &format!("{base}/kernel/drivers/md/dm-verity.ko")),
            "ELF kernel/drivers/md/dm-verity.ko"
        );
        assert!(
            subset
                .entries
                .iter()
                .filter(|e| matches!(e.kind, EntryKind::File(_)))
                .all(|e| e.mode == 0o644)
        );

        assert_eq!(
            file_text(&subset, &format!("{base}/modules.dep")),
            "kernel/drivers/virtio/virtio_ring.ko:\n\
             kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/md/dm-mod.ko:\n\
             kernel/drivers/md/dm-bufio.ko: kernel/drivers/md/dm-mod.ko\n\
             kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko\n"
        );
        assert_eq!(
            file_text(&subset, &format!("{base}/modules.alias")),
            "# Aliases extracted from modules themselves.\n\
             alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
             alias virtio:d00000002v* virtio_blk\n"
        );
        assert_eq!(
            file_text(&subset, &format!("{base}/modules.builtin")),
            "kernel/fs/ext4/ext4.ko\nkernel/fs/binfmt_script.ko\n"
        );

        // The archive writer accepts it: parents first, no duplicates.
        let mut out = Vec::new();
        cvm_cpio::write_newc(&subset.entries, 0, &mut out).unwrap();
    }

    #[test]
    fn output_is_deterministic() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fake_modules_dir(tmp.path());
        let list = carry(&["dm_verity", "virtio_blk", "virtio_pci"]);
        let a = initrd_subset(&dir, &list).unwrap();
        let b = initrd_subset(&dir, &list).unwrap();
        assert_eq!(a, b);
        let mut reordered = list.clone();
        reordered.reverse();
        assert_eq!(initrd_subset(&dir, &reordered).unwrap().entries, a.entries);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        cvm_cpio::write_newc(&a.entries, 0, &mut x).unwrap();
        cvm_cpio::write_newc(&b.entries, 0, &mut y).unwrap();
        assert_eq!(x, y);
    }

    #[test]
    fn subset_round_trips_through_the_guest_parser() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fake_modules_dir(tmp.path());
        let subset = initrd_subset(&dir, &carry(&["virtio_blk"])).unwrap();
        let guest = tempfile::tempdir().unwrap();
        for e in &subset.entries {
            let path = guest.path().join(&e.path);
            match &e.kind {
                EntryKind::Dir => fs::create_dir_all(&path).unwrap(),
                EntryKind::File(data) => fs::write(&path, data).unwrap(),
                other => panic!("unexpected {other:?}"),
            }
        }
        let index = ModuleIndex::read(&guest.path().join("lib/modules").join(KVER)).unwrap();
        assert_eq!(index.modules.len(), 3);
        assert!(index.is_builtin("ext4"));
        assert_eq!(
            index
                .modules_for_alias("virtio:d00000002v00001AF4")
                .into_iter()
                .collect::<Vec<_>>(),
            ["virtio_blk"]
        );
    }

    #[test]
    fn errors_are_clear() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fake_modules_dir(tmp.path());
        let err = initrd_subset(&dir, &carry(&["bad/name"])).unwrap_err();
        assert!(err.to_string().starts_with("invalid module name"), "{err}");

        fs::remove_file(dir.join("kernel/drivers/md/dm-mod.ko")).unwrap();
        let err = initrd_subset(&dir, &carry(&["dm_verity"])).unwrap_err();
        assert!(err.to_string().contains("dm-mod.ko"), "{err}");

        fs::write(dir.join("modules.dep"), "kernel/a.ko\n").unwrap();
        let err = initrd_subset(&dir, &carry(&["a"])).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("modules.dep line 1: missing ':' after the module path"),
            "{err}"
        );

        let err = initrd_subset(&tmp.path().join("absent"), &[]).unwrap_err();
        assert!(err.to_string().starts_with("cannot read "), "{err}");
    }

    /// Against the real Debian cloud kernel the VM tests boot (`make test` fetches it into
    /// .cache/kernel; CVM_MODULES overrides).
    #[test]
    #[ignore = "needs the kernel cache: run through `make test`"]
    fn real_debian_kernel_closure() {
        let dir = std::env::var_os("CVM_MODULES")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
                    .join(".cache/kernel/modules")
            });
        let dir = dir
            .canonicalize()
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup.sh)", dir.display()));
        let dir = dir.as_path();
        let kver = dir.file_name().unwrap().to_str().unwrap().to_string();
        let list = carry(&["virtio_blk", "virtio_net", "dm_verity", "erofs"]);
        let subset = initrd_subset(dir, &list).unwrap();
        assert_eq!(subset.kernel_version, kver);
        assert!(subset.missing.is_empty(), "{:?}", subset.missing);
        for name in [
            "virtio_blk",
            "virtio_net",
            "dm_verity",
            "erofs",
            "dm_bufio",
            "dm_mod",
            "virtio",
            "virtio_ring",
            "net_failover",
            "failover",
        ] {
            assert!(
                subset.modules.iter().any(|m| m == name),
                "{name} missing: {:?}",
                subset.modules
            );
        }
        let mut out = Vec::new();
        cvm_cpio::write_newc(&subset.entries, 0, &mut out).unwrap();
        assert_eq!(initrd_subset(dir, &list).unwrap(), subset);
    }
}
