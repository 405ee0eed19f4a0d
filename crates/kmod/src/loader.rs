//! Guest side: load modules the way modprobe and udev would, without either.
//!
//! Two entry points. [`Loader::load_named`] is the list the image says to always load (device
//! mapper targets, filesystems — nothing asks for them through a modalias): every failure there
//! ends the boot. [`Loader::coldplug`] is udev's coldplug: read every device's `modalias` in
//! sysfs, load every module whose alias matches, best effort, because a matching driver may
//! legitimately refuse a device (ENODEV). It runs in rounds because drivers create devices:
//! virtio_pci only makes the virtio devices that then ask for virtio_blk or virtio_net.
//!
//! The Loader remembers what it loaded, so no module is inserted twice in a boot, and skips what
//! the kernel already has (`/sys/module/<name>`) or has built in (modules.builtin).

use super::index::ModuleIndex;
use super::{KmodError, check_kernel_version, parse_name, read_bounded};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tracing::{debug, warn};

/// A kernel registers a few dozen bus types; the bound only stops a pathological tree.
const MAX_BUSES: usize = 1024;
/// A small VM has a few hundred bus devices.
const MAX_SYSFS_ENTRIES: usize = 1 << 18;
const MAX_MODALIASES: usize = 1 << 14;
/// sysfs attributes are at most a page.
const MAX_MODALIAS_LEN: u64 = 4096;

/// Inserts one module file into the running kernel. The seam that lets the loader be tested
/// without a kernel.
pub trait ModuleInserter {
    /// Insert the module at `path`. A module that is already loaded is a success.
    fn insert(&mut self, path: &Path) -> Result<(), std::io::Error>;

    /// Insert a module image read earlier from `path` (see [`Loader::keep_in_memory`]).
    fn insert_image(&mut self, path: &Path, image: &[u8]) -> Result<(), std::io::Error> {
        let _ = image;
        self.insert(path)
    }
}

/// What [`Loader::keep_in_memory`] may hold: a few dm and crypto modules are a few hundred KiB.
const MAX_KEPT_BYTES: u64 = 16 << 20;

/// The real inserter: `finit_module(2)` on the file, so the kernel reads the module itself
/// (and can check its signature against the file) instead of a copy in our memory.
#[derive(Debug, Default, Clone, Copy)]
pub struct FinitModule;

/// Kernel UAPI flag (not in nix): the file is compressed and the kernel should decompress it
/// (needs CONFIG_MODULE_DECOMPRESS).
const MODULE_INIT_COMPRESSED_FILE: std::ffi::c_uint = 4;

impl ModuleInserter for FinitModule {
    fn insert(&mut self, path: &Path) -> Result<(), std::io::Error> {
        use nix::errno::Errno;
        use nix::kmod::{ModuleInitFlags, finit_module};
        // std opens with O_RDONLY | O_CLOEXEC.
        let file = fs::File::open(path)?;
        let compressed = path
            .extension()
            .is_some_and(|e| e == "xz" || e == "zst" || e == "gz");
        let flags = if compressed {
            ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE)
        } else {
            ModuleInitFlags::empty()
        };
        match finit_module(&file, c"", flags) {
            // Loaded by someone else meanwhile (or by the kernel's own request_module).
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn insert_image(&mut self, _path: &Path, image: &[u8]) -> Result<(), std::io::Error> {
        use nix::errno::Errno;
        // The kernel checks a module signature on an image just as on a file.
        match nix::kmod::init_module(image, c"") {
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// What one [`Loader::coldplug`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Modules inserted, dependencies included, in insertion order.
    pub loaded: Vec<String>,
    /// Modules a device asked for that the kernel already had (loaded or built in).
    pub already: usize,
    /// Modules a device asked for that could not be loaded, with why.
    pub failed: Vec<(String, String)>,
    /// Rounds of scan-and-load run.
    pub rounds: u32,
}

/// Loads modules of one kernel from `<root>/lib/modules/<kernel_version>`.
pub struct Loader<I: ModuleInserter> {
    root: PathBuf,
    modules_dir: PathBuf,
    index: ModuleIndex,
    inserter: I,
    /// Present in the kernel: inserted by us or found in /sys/module.
    loaded: HashSet<String>,
    /// Insert failures of this boot, so a failing module is not retried for every device.
    failed: BTreeMap<String, String>,
    /// Module images read before their files went away (the initramfs is freed at
    /// switch_root), by path.
    kept: BTreeMap<PathBuf, Vec<u8>>,
}

impl<I: ModuleInserter> Loader<I> {
    /// Read the index of `kernel_version` under `root` ("/" in the guest).
    pub fn new(root: &Path, kernel_version: &str, inserter: I) -> Result<Self, KmodError> {
        check_kernel_version(kernel_version)?;
        let modules_dir = root.join("lib/modules").join(kernel_version);
        let index = ModuleIndex::read(&modules_dir)?;
        debug!(
            "module index {}: {} modules, {} aliases",
            modules_dir.display(),
            index.modules.len(),
            index.aliases.len()
        );
        Ok(Loader {
            root: root.to_owned(),
            modules_dir,
            index,
            inserter,
            loaded: HashSet::new(),
            failed: BTreeMap::new(),
            kept: BTreeMap::new(),
        })
    }

    /// Read `names` and their dependencies into memory (those not loaded or built in), so
    /// they can still be loaded after their files are gone. Cheaper than loading them all up
    /// front when only some boots need them (crypto self-tests are slow). Returns the bytes
    /// kept. Compressed modules are not kept (init_module wants the plain image).
    pub fn keep_in_memory(&mut self, names: &[String]) -> Result<u64, KmodError> {
        let mut total: u64 = self.kept.values().map(|v| v.len() as u64).sum();
        for name in names {
            let name = parse_name(name)?;
            if self.index.is_builtin(&name) {
                continue;
            }
            let idx = self
                .index
                .lookup(&name)
                .ok_or_else(|| KmodError::UnknownModule { name: name.clone() })?;
            for i in self.index.load_order(idx)? {
                let module = &self.index.modules[i];
                let path = self.modules_dir.join(&module.path);
                if self.loaded.contains(&module.name)
                    || self.index.is_builtin(&module.name)
                    || self.kept.contains_key(&path)
                    || path.extension().is_some_and(|e| e != "ko")
                {
                    continue;
                }
                let image = super::read_bounded(&path, MAX_KEPT_BYTES - total.min(MAX_KEPT_BYTES))?;
                total += image.len() as u64;
                self.kept.insert(path, image);
            }
        }
        Ok(total)
    }

    pub fn inserter(&self) -> &I {
        &self.inserter
    }

    pub fn into_inserter(self) -> I {
        self.inserter
    }

    /// Load each of `names` with its dependencies first. Built-in and already loaded modules
    /// are skipped; an unknown name or any failed insert is an error. Every name is checked
    /// before anything is loaded. Returns the modules inserted, in order.
    pub fn load_named(&mut self, names: &[String]) -> Result<Vec<String>, KmodError> {
        let mut targets = Vec::new();
        for name in names {
            let name = parse_name(name)?;
            if self.index.is_builtin(&name) {
                debug!("{name} is built in");
            } else if let Some(idx) = self.index.lookup(&name) {
                targets.push(idx);
            } else {
                return Err(KmodError::UnknownModule { name });
            }
        }
        let mut inserted = Vec::new();
        for idx in targets {
            inserted.extend(self.ensure(idx)?);
        }
        Ok(inserted)
    }

    /// Load the modules the devices on `<root>/sys/bus/*` ask for, repeating while a round
    /// loaded something (new drivers make new devices), at most `max_rounds` rounds.
    pub fn coldplug(&mut self, max_rounds: u32) -> LoadReport {
        let mut report = LoadReport::default();
        let mut seen_aliases = BTreeSet::new();
        let mut already = BTreeSet::new();
        let sys = self.root.join("sys");
        while report.rounds < max_rounds {
            report.rounds += 1;
            let fresh: Vec<String> = scan_modaliases(&sys)
                .into_iter()
                .filter(|a| seen_aliases.insert(a.clone()))
                .collect();
            let mut wanted = BTreeSet::new();
            for modalias in &fresh {
                let modules = self.index.modules_for_alias(modalias);
                if !modules.is_empty() {
                    debug!(
                        "{modalias}: {}",
                        modules.iter().copied().collect::<Vec<_>>().join(" ")
                    );
                }
                wanted.extend(modules.into_iter().map(str::to_owned));
            }
            debug!(
                "coldplug round {}: {} new modaliases, {} candidate modules",
                report.rounds,
                fresh.len(),
                wanted.len()
            );
            let before = report.loaded.len();
            for name in wanted {
                if report.loaded.contains(&name) || self.failed.contains_key(&name) {
                    continue;
                }
                if self.index.is_builtin(&name) || self.loaded.contains(&name) {
                    already.insert(name);
                    continue;
                }
                let Some(idx) = self.index.lookup(&name) else {
                    let reason = "matched an alias but is not in modules.dep".to_owned();
                    self.failed.insert(name.clone(), reason.clone());
                    report.failed.push((name, reason));
                    continue;
                };
                match self.ensure(idx) {
                    Ok(inserted) if inserted.is_empty() => {
                        already.insert(name);
                    }
                    Ok(inserted) => report.loaded.extend(inserted),
                    Err(e) => {
                        let reason = match &e {
                            KmodError::Insert {
                                name: failed,
                                errno,
                                source,
                                ..
                            } if *failed == name => format!("{errno}: {source}"),
                            KmodError::Insert {
                                name: failed,
                                errno,
                                source,
                                ..
                            } => format!("needs {failed}, which failed: {errno}: {source}"),
                            other => other.to_string(),
                        };
                        debug!("coldplug: {name} not loaded: {reason}");
                        self.failed.insert(name.clone(), reason.clone());
                        report.failed.push((name, reason));
                    }
                }
            }
            if report.loaded.len() == before {
                break;
            }
        }
        report.already = already.len();
        report
    }

    /// Insert `idx` and whatever it needs that the kernel lacks; returns what was inserted.
    fn ensure(&mut self, idx: usize) -> Result<Vec<String>, KmodError> {
        let mut inserted = Vec::new();
        for i in self.index.load_order(idx)? {
            let module = &self.index.modules[i];
            let name = &module.name;
            if self.loaded.contains(name) || self.index.is_builtin(name) {
                continue;
            }
            if let Some(reason) = self.failed.get(name) {
                return Err(KmodError::FailedEarlier {
                    name: name.clone(),
                    reason: reason.clone(),
                });
            }
            if self.root.join("sys/module").join(name).exists() {
                debug!("{name} is already loaded");
                self.loaded.insert(name.clone());
                continue;
            }
            let path = self.modules_dir.join(&module.path);
            let start = Instant::now();
            let result = match self.kept.remove(&path) {
                Some(image) => self.inserter.insert_image(&path, &image),
                None => self.inserter.insert(&path),
            };
            match result {
                Ok(()) => {
                    debug!("loaded {name} ({:?})", start.elapsed());
                    self.loaded.insert(name.clone());
                    inserted.push(name.clone());
                }
                Err(e) => {
                    let err = KmodError::insert(name, &path, e);
                    if let KmodError::Insert { errno, .. } = &err {
                        self.failed.insert(name.clone(), errno.clone());
                    }
                    return Err(err);
                }
            }
        }
        Ok(inserted)
    }
}

/// A sysfs attribute as text: a regular file (not a symlink), bounded, UTF-8.
fn read_attribute(path: &Path) -> Option<String> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => {}
        _ => return None,
    }
    let data = read_bounded(path, MAX_MODALIAS_LEN).ok()?;
    String::from_utf8(data).ok()
}

/// Every distinct `modalias` of the devices listed under `<sys>/bus/*/devices/`, the way
/// `udevadm trigger` enumerates them. Only devices on a bus carry a modalias, and the bus lists
/// are one short directory each, where walking all of /sys/devices reads thousands of attribute
/// entries (a tenth of a second per round under TCG). The bus entries are symlinks to the
/// device directories and are followed one level; a `modalias` that is itself a symlink is not
/// read. Bounded in count and size; unreadable entries are skipped (devices come and go).
fn scan_modaliases(sys: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut visited = 0usize;
    let Ok(buses) = fs::read_dir(sys.join("bus")) else {
        return found;
    };
    for bus in buses.flatten().take(MAX_BUSES) {
        let Ok(devices) = fs::read_dir(bus.path().join("devices")) else {
            continue;
        };
        for dev in devices.flatten() {
            visited += 1;
            if visited > MAX_SYSFS_ENTRIES || found.len() >= MAX_MODALIASES {
                warn!(
                    "stopped scanning {} after {visited} devices and {} modaliases",
                    sys.display(),
                    found.len()
                );
                return found;
            }
            // Most devices have a `modalias` attribute; CPUs only announce theirs in `uevent`
            // (the attribute lives on the cpu subsystem root), and udev reads it from there.
            let text = read_attribute(&dev.path().join("modalias")).or_else(|| {
                read_attribute(&dev.path().join("uevent")).and_then(|uevent| {
                    uevent
                        .lines()
                        .find_map(|l| l.strip_prefix("MODALIAS="))
                        .map(str::to_owned)
                })
            });
            if let Some(text) = text {
                let text = text.trim();
                if !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic()) {
                    found.insert(text.to_owned());
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    const KVER: &str = "6.1.0-test";

    /// Records inserts; fails the modules named in `fail` with their errno; acts like the
    /// kernel by creating /sys/module/<name>, and for "virtio_pci" creates a virtio block device
    /// the way the real bus driver would.
    struct Recorder {
        root: PathBuf,
        inserted: Vec<String>,
        fail: Vec<(&'static str, i32)>,
        images: Vec<(PathBuf, Vec<u8>)>,
    }

    impl ModuleInserter for Recorder {
        fn insert_image(&mut self, path: &Path, image: &[u8]) -> Result<(), io::Error> {
            // The file may be gone; the image is what was read from it.
            self.images.push((path.to_path_buf(), image.to_vec()));
            let name = path.file_name().unwrap().to_str().unwrap();
            let name = name.trim_end_matches(".ko").replace('-', "_");
            self.inserted.push(name.clone());
            fs::create_dir_all(self.root.join("sys/module").join(&name)).unwrap();
            Ok(())
        }

        fn insert(&mut self, path: &Path) -> Result<(), io::Error> {
            let file = path.file_name().unwrap().to_str().unwrap();
            let name = file.trim_end_matches(".ko").replace('-', "_");
            assert!(path.exists(), "{} does not exist", path.display());
            assert!(
                !self.inserted.contains(&name),
                "{name} inserted twice: {:?}",
                self.inserted
            );
            if let Some((_, errno)) = self.fail.iter().find(|(n, _)| *n == name) {
                return Err(io::Error::from_raw_os_error(*errno));
            }
            self.inserted.push(name.clone());
            fs::create_dir_all(self.root.join("sys/module").join(&name)).unwrap();
            if name == "virtio_pci" {
                device(
                    &self.root,
                    "pci0000:00/0000:00:04.0/virtio1",
                    "virtio:d00000002v00001AF4",
                );
                device(
                    &self.root,
                    "pci0000:00/0000:00:05.0/virtio2",
                    "virtio:d00000001v00001AF4",
                );
            }
            Ok(())
        }
    }

    /// A device as sysfs shows it: its directory under sys/devices and a link from its bus
    /// (named by the modalias prefix, as the kernel's buses are).
    fn device(root: &Path, rel: &str, modalias: &str) {
        let dir = root.join("sys/devices").join(rel);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("modalias"), format!("{modalias}\n")).unwrap();
        let bus = modalias.split(':').next().unwrap();
        let list = root.join("sys/bus").join(bus).join("devices");
        fs::create_dir_all(&list).unwrap();
        std::os::unix::fs::symlink(&dir, list.join(rel.replace('/', "_"))).unwrap();
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// A guest root as the initrd would lay it out: the subset index for a VM with a virtio PCI
    /// device, a sound card whose driver fails with ENODEV, and a PCI device whose driver
    /// (ahci) is built in.
    fn fake_root() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let base = format!("lib/modules/{KVER}");
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
            ("kernel/net/core/failover.ko", ""),
            (
                "kernel/drivers/net/net_failover.ko",
                "kernel/net/core/failover.ko",
            ),
            (
                "kernel/drivers/net/virtio_net.ko",
                "kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko \
                 kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko",
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
            ("kernel/fs/erofs/erofs.ko", ""),
            ("kernel/sound/snd-hda.ko", ""),
        ];
        let mut dep = String::new();
        for (path, deps) in modules {
            write(root, &format!("{base}/{path}"), "ELF");
            dep.push_str(&format!(
                "{path}:{}{deps}\n",
                if deps.is_empty() { "" } else { " " }
            ));
        }
        write(root, &format!("{base}/modules.dep"), &dep);
        write(
            root,
            &format!("{base}/modules.alias"),
            "alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
             alias virtio:d00000002v* virtio_blk\n\
             alias virtio:d00000001v* virtio_net\n\
             alias pci:v*d*sv*sd*bc04sc03i* snd_hda\n\
             alias pci:v*d*sv*sd*bc01sc06i01 ahci\n",
        );
        write(
            root,
            &format!("{base}/modules.builtin"),
            "kernel/drivers/ata/ahci.ko\nkernel/fs/ext4/ext4.ko\n",
        );
        device(
            root,
            "pci0000:00/0000:00:04.0",
            "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00",
        );
        device(
            root,
            "pci0000:00/0000:00:05.0",
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
        );
        device(
            root,
            "pci0000:00/0000:00:06.0",
            "pci:v00008086d00002668sv00001AF4sd00001100bc04sc03i00",
        );
        device(
            root,
            "pci0000:00/0000:00:1f.2",
            "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01",
        );
        device(root, "platform/serial8250", "platform:serial8250");
        tmp
    }

    fn loader(root: &Path, fail: Vec<(&'static str, i32)>) -> Loader<Recorder> {
        let recorder = Recorder {
            root: root.to_owned(),
            inserted: Vec::new(),
            fail,
            images: Vec::new(),
        };
        Loader::new(root, KVER, recorder).unwrap()
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn load_named_inserts_deps_first_and_skips_builtin_and_loaded() {
        let tmp = fake_root();
        let root = tmp.path();
        fs::create_dir_all(root.join("sys/module/dm_mod")).unwrap();
        let mut l = loader(root, vec![]);
        let inserted = l
            .load_named(&strings(&["dm-verity", "ext4", "erofs", "dm_bufio"]))
            .unwrap();
        assert_eq!(inserted, ["dm_bufio", "dm_verity", "erofs"]);
        assert_eq!(l.inserter().inserted, inserted);
        // Nothing is inserted twice, also across calls.
        assert!(
            l.load_named(&strings(&["dm_verity", "erofs"]))
                .unwrap()
                .is_empty()
        );
        let recorder = l.into_inserter();
        assert_eq!(recorder.inserted.len(), 3);
    }

    #[test]
    fn kept_modules_load_from_memory_after_their_files_are_gone() {
        let tmp = fake_root();
        let root = tmp.path();
        let mut l = loader(root, vec![]);
        let kept = l.keep_in_memory(&strings(&["dm_verity", "ext4"])).unwrap();
        assert!(kept > 0);
        // What switch_root does to the initramfs.
        let modules = root.join("lib/modules").join(KVER);
        let files: Vec<_> = [
            "kernel/drivers/md/dm-verity.ko",
            "kernel/drivers/md/dm-bufio.ko",
        ]
        .iter()
        .map(|f| modules.join(f))
        .collect();
        let originals: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
        for f in &files {
            fs::remove_file(f).unwrap();
        }
        let inserted = l.load_named(&strings(&["dm_verity"])).unwrap();
        assert_eq!(inserted, ["dm_mod", "dm_bufio", "dm_verity"]);
        let images = &l.inserter().images;
        for (f, bytes) in files.iter().zip(&originals) {
            assert!(
                images.iter().any(|(p, i)| p == f && i == bytes),
                "{} not loaded from memory: {images:?}",
                f.display()
            );
        }
        // A module not kept still needs its file.
        assert!(l.load_named(&strings(&["erofs"])).is_ok());
    }

    #[test]
    fn load_named_paths_point_into_the_modules_dir() {
        let tmp = fake_root();
        let mut seen = Vec::new();
        struct Paths<'a>(&'a mut Vec<PathBuf>);
        impl ModuleInserter for Paths<'_> {
            fn insert(&mut self, path: &Path) -> Result<(), io::Error> {
                self.0.push(path.to_owned());
                Ok(())
            }
        }
        let mut l = Loader::new(tmp.path(), KVER, Paths(&mut seen)).unwrap();
        l.load_named(&strings(&["virtio_blk"])).unwrap();
        drop(l);
        let base = tmp.path().join("lib/modules").join(KVER);
        assert_eq!(
            seen,
            [
                base.join("kernel/drivers/virtio/virtio_ring.ko"),
                base.join("kernel/drivers/virtio/virtio.ko"),
                base.join("kernel/drivers/block/virtio_blk.ko"),
            ]
        );
    }

    #[test]
    fn load_named_errors() {
        let tmp = fake_root();
        let mut l = loader(tmp.path(), vec![("dm_mod", 19)]);
        let err = l.load_named(&strings(&["erofs", "nosuch"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "module nosuch is neither in modules.dep nor built in"
        );
        assert!(
            l.inserter().inserted.is_empty(),
            "nothing loads before all names are known"
        );
        let err = l.load_named(&strings(&["bad name"])).unwrap_err();
        assert!(matches!(err, KmodError::InvalidName { .. }), "{err}");

        let err = l.load_named(&strings(&["dm_verity"])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("cannot load module dm_mod from "), "{msg}");
        assert!(
            msg.ends_with("kernel/drivers/md/dm-mod.ko: ENODEV"),
            "{msg}"
        );
        assert!(l.inserter().inserted.is_empty());
        let err = l.load_named(&strings(&["dm_bufio"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "module dm_mod failed to load earlier in this boot (ENODEV)"
        );
    }

    #[test]
    fn coldplug_loads_bus_then_drivers_in_rounds() {
        let tmp = fake_root();
        let mut l = loader(tmp.path(), vec![("snd_hda", 19)]);
        let report = l.coldplug(8);
        // Round 1: the PCI devices → virtio_pci (which creates two virtio devices); round 2:
        // their drivers; round 3 finds nothing new.
        assert_eq!(
            report.loaded,
            [
                "virtio_ring",
                "virtio",
                "virtio_pci",
                "virtio_blk",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
        assert_eq!(report.rounds, 3);
        assert_eq!(report.already, 1, "ahci is built in");
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].0, "snd_hda");
        assert!(
            report.failed[0].1.starts_with("ENODEV: "),
            "{:?}",
            report.failed
        );
        assert_eq!(l.inserter().inserted, report.loaded);

        // A second coldplug has nothing left to do and does not retry the failure.
        let again = l.coldplug(8);
        assert_eq!(
            (again.loaded.len(), again.failed.len(), again.rounds),
            (0, 0, 1)
        );
    }

    #[test]
    fn coldplug_respects_max_rounds() {
        let tmp = fake_root();
        let mut l = loader(tmp.path(), vec![]);
        let report = l.coldplug(1);
        assert_eq!(report.rounds, 1);
        assert_eq!(
            report.loaded,
            ["snd_hda", "virtio_ring", "virtio", "virtio_pci"]
        );
        assert!(l.coldplug(0).loaded.is_empty());
        assert_eq!(l.coldplug(0).rounds, 0);
    }

    #[test]
    fn coldplug_skips_loaded_and_reports_dependency_failures() {
        let tmp = fake_root();
        fs::create_dir_all(tmp.path().join("sys/module/snd_hda")).unwrap();
        let mut l = loader(tmp.path(), vec![("failover", 19)]);
        let report = l.coldplug(8);
        assert_eq!(report.already, 2, "ahci built in, snd_hda already loaded");
        assert!(report.loaded.contains(&"virtio_blk".to_owned()));
        assert!(
            !report
                .loaded
                .iter()
                .any(|m| m.contains("failover") || m == "virtio_net")
        );
        assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
        assert_eq!(report.failed[0].0, "virtio_net");
        assert!(
            report.failed[0]
                .1
                .starts_with("needs failover, which failed: ENODEV"),
            "{:?}",
            report.failed
        );
    }

    #[test]
    fn coldplug_after_load_named_does_not_reload() {
        let tmp = fake_root();
        let mut l = loader(tmp.path(), vec![]);
        l.load_named(&strings(&["virtio_pci"])).unwrap();
        let report = l.coldplug(8);
        assert!(!report.loaded.contains(&"virtio_pci".to_owned()));
        assert!(report.loaded.contains(&"virtio_blk".to_owned()));
    }

    #[test]
    fn scan_reads_bus_devices_only_and_rejects_hostile_values() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        device(root, "a/b", "x:1");
        // A device on no bus (a class device) is not coldplugged.
        fs::create_dir_all(root.join("sys/devices/virtual/c")).unwrap();
        fs::write(root.join("sys/devices/virtual/c/modalias"), "class:1\n").unwrap();
        // A modalias that is a symlink is not read.
        let list = root.join("sys/bus/y/devices");
        fs::create_dir_all(root.join("sys/devices/l")).unwrap();
        std::os::unix::fs::symlink(
            root.join("sys/devices/a/b/modalias"),
            root.join("sys/devices/l/modalias"),
        )
        .unwrap();
        fs::create_dir_all(&list).unwrap();
        std::os::unix::fs::symlink(root.join("sys/devices/l"), list.join("l")).unwrap();
        // Hostile contents: empty, binary, oversized.
        device(root, "e", "e:1");
        fs::write(root.join("sys/devices/e/modalias"), "\n").unwrap();
        device(root, "f", "f:1");
        fs::write(root.join("sys/devices/f/modalias"), b"\xff\xfe").unwrap();
        device(root, "g", "g:1");
        fs::write(root.join("sys/devices/g/modalias"), vec![b'a'; 5000]).unwrap();
        assert_eq!(
            scan_modaliases(&root.join("sys"))
                .into_iter()
                .collect::<Vec<_>>(),
            ["x:1"]
        );
        assert!(scan_modaliases(&root.join("absent")).is_empty());
    }

    #[test]
    fn scan_reads_cpu_modalias_from_uevent() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let cpu = root.join("sys/devices/system/cpu/cpu0");
        fs::create_dir_all(&cpu).unwrap();
        fs::write(
            cpu.join("uevent"),
            "DRIVER=processor\nMODALIAS=cpu:type:x86,ven0000fam0006mod003F:feature:,0099\n",
        )
        .unwrap();
        let list = root.join("sys/bus/cpu/devices");
        fs::create_dir_all(&list).unwrap();
        std::os::unix::fs::symlink(&cpu, list.join("cpu0")).unwrap();
        assert_eq!(
            scan_modaliases(&root.join("sys"))
                .into_iter()
                .collect::<Vec<_>>(),
            ["cpu:type:x86,ven0000fam0006mod003F:feature:,0099"]
        );
    }

    #[test]
    fn new_requires_an_index() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Loader::new(tmp.path(), KVER, FinitModule).err().unwrap();
        assert!(err.to_string().starts_with("cannot read "), "{err}");
        assert!(err.to_string().ends_with("modules.dep"), "{err}");
        let err = Loader::new(tmp.path(), "../etc", FinitModule)
            .err()
            .unwrap();
        assert!(
            matches!(err, KmodError::InvalidKernelVersion { .. }),
            "{err}"
        );
    }

    #[test]
    fn finit_module_reports_errors_as_io() {
        let tmp = tempfile::tempdir().unwrap();
        let err = FinitModule
            .insert(&tmp.path().join("absent.ko"))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
