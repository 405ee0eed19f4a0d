//! The reproducible initrd builder behind `cvmctl initrd`.
//!
//! The initrd is part of the launch measurement, so the same inputs must give the same bytes on
//! any host: every member is owned by root with one mtime (SOURCE_DATE_EPOCH), modes are
//! normalised instead of copied from the build checkout, members are sorted by `cpio`, and the
//! gzip wrapper carries no timestamp or file name.

use cvm_cpio::{self as cpio, CpioError, Entry, EntryKind};
use cvm_kmod::{self as kmod, KmodError};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What goes into an initrd.
#[derive(Debug, Clone)]
pub struct InitrdSpec {
    /// The static cvm-agent binary; becomes `/init`.
    pub agent: PathBuf,
    /// The repo's `initrd/` directory: `modules.load`, `modules.carry`, `files/`.
    pub spec_dir: PathBuf,
    /// A kernel's `lib/modules/<kver>` directory, depmod'ed; `None` puts no modules in.
    pub modules_dir: Option<PathBuf>,
    /// Modification time of every member (SOURCE_DATE_EPOCH, or 0).
    pub mtime: u32,
}

/// The built initrd and what went into it.
#[derive(Debug, Clone)]
pub struct InitrdReport {
    /// The gzip-compressed newc archive.
    pub bytes: Vec<u8>,
    pub uncompressed_len: u64,
    /// Number of archive members (without the trailer).
    pub entries: usize,
    /// Modules carried in the initrd: normalized names, dependencies included, sorted.
    pub modules: Vec<String>,
    /// Listed modules this kernel does not have; not an error, the caller reports them.
    pub missing_modules: Vec<String>,
    pub kernel_version: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    #[error("cannot read {what} {}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {} is not {expected}", path.display())]
    WrongType {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("agent binary {} is not an ELF executable", path.display())]
    NotElf { path: PathBuf },
    #[error("{} is neither a regular file, a directory nor a symlink", path.display())]
    UnsupportedFileType { path: PathBuf },
    #[error("{} has a name that is not UTF-8", path.display())]
    NonUtf8 { path: PathBuf },
    #[error("{} is {len} bytes into files/, over the initrd path limit of {max}", path.display(), max = cpio::MAX_PATH_LEN)]
    PathTooLong { path: PathBuf, len: usize },
    #[error("{} is {size} bytes, over the cpio limit of 4 GiB - 1", path.display())]
    TooLarge { path: PathBuf, size: u64 },
    #[error("invalid module list {}", path.display())]
    ModuleList {
        path: PathBuf,
        #[source]
        source: KmodError,
    },
    #[error("initrd path {path:?} from {origin} conflicts with an entry added before it")]
    Conflict { path: String, origin: &'static str },
    #[error("cannot select kernel modules from {}", path.display())]
    Kmod {
        path: PathBuf,
        #[source]
        source: KmodError,
    },
    #[error("cannot build the initrd archive")]
    Cpio(#[from] CpioError),
    #[error("cannot compress the initrd")]
    Compress(#[source] std::io::Error),
    #[error("SOURCE_DATE_EPOCH={value:?} is not a decimal number of seconds in 0..=4294967295")]
    SourceDateEpoch { value: String },
}

/// Directories the agent mounts on or writes to before it has a root filesystem, with their
/// modes; `sysroot` is where the verified root is mounted before switch_root.
const SKELETON_DIRS: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("etc", 0o755),
    ("etc/cvm-agent", 0o755),
    ("lib", 0o755),
    ("proc", 0o755),
    ("root", 0o700),
    ("run", 0o755),
    ("sys", 0o755),
    ("sysroot", 0o755),
    ("tmp", 0o1777),
];

/// Where the agent reads the modules it loads unconditionally.
pub const MODULES_LOAD_PATH: &str = "etc/cvm-agent/modules.load";
/// Where the agent finds the modules to load before it frees the initramfs (for the stages
/// after switch_root, when the verified root carries no module tree of its own).
pub const MODULES_LATE_PATH: &str = "etc/cvm-agent/modules.late";

/// Reads SOURCE_DATE_EPOCH: unset is 0; anything but a plain decimal that fits the 32-bit
/// newc mtime field is an error, because silently falling back would break reproducibility.
pub fn source_date_epoch() -> Result<u32, InitrdError> {
    parse_source_date_epoch(std::env::var_os("SOURCE_DATE_EPOCH").as_deref())
}

/// The parsing half of [`source_date_epoch`], separate so it can be tested without touching
/// the process environment.
pub fn parse_source_date_epoch(value: Option<&OsStr>) -> Result<u32, InitrdError> {
    let Some(value) = value else {
        return Ok(0);
    };
    let bad = || InitrdError::SourceDateEpoch {
        value: value.to_string_lossy().into_owned(),
    };
    let s = value.to_str().ok_or_else(bad)?;
    // u32::from_str alone would also take "+5".
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    s.parse().map_err(|_| bad())
}

/// Builds the initrd described by `spec`.
pub fn build(spec: &InitrdSpec) -> Result<InitrdReport, InitrdError> {
    let spec_meta = std::fs::metadata(&spec.spec_dir).map_err(|source| InitrdError::Read {
        what: "initrd spec directory",
        path: spec.spec_dir.clone(),
        source,
    })?;
    if !spec_meta.is_dir() {
        return Err(InitrdError::WrongType {
            what: "initrd spec directory",
            path: spec.spec_dir.clone(),
            expected: "a directory",
        });
    }

    let mut tree = Tree::default();
    for (path, mode) in SKELETON_DIRS {
        tree.add(dir(path, *mode), "the skeleton")?;
    }
    // The kernel opens /dev/console for init's stdio before anything can mount devtmpfs.
    tree.add(
        Entry {
            path: "dev/console".into(),
            mode: 0o600,
            kind: EntryKind::CharDev { major: 5, minor: 1 },
        },
        "the skeleton",
    )?;
    tree.add(
        Entry {
            path: "init".into(),
            mode: 0o755,
            kind: EntryKind::File(read_agent(&spec.agent)?),
        },
        "the agent",
    )?;

    let carry_path = spec.spec_dir.join("modules.carry");
    let mut wanted = Vec::new();
    // Lists the agent reads at boot: copied verbatim, so it parses the very file the names in
    // the initrd came from.
    for (list, dest) in [
        ("modules.load", MODULES_LOAD_PATH),
        ("modules.late", MODULES_LATE_PATH),
    ] {
        let path = spec.spec_dir.join(list);
        let Some(names) = read_module_list(&path)? else {
            continue;
        };
        wanted.extend(names);
        let text = std::fs::read(&path).map_err(|source| InitrdError::Read {
            what: "module list",
            path: path.clone(),
            source,
        })?;
        tree.add(
            Entry {
                path: dest.into(),
                mode: 0o644,
                kind: EntryKind::File(text),
            },
            list,
        )?;
    }
    if let Some(names) = read_module_list(&carry_path)? {
        wanted.extend(names);
    }
    wanted.sort();
    wanted.dedup();

    let mut modules = Vec::new();
    let mut missing_modules = Vec::new();
    let mut kernel_version = None;
    if let Some(modules_dir) = &spec.modules_dir {
        let subset =
            kmod::initrd_subset(modules_dir, &wanted).map_err(|source| InitrdError::Kmod {
                path: modules_dir.clone(),
                source,
            })?;
        for e in subset.entries {
            tree.add(e, "the kernel modules")?;
        }
        modules = subset.modules;
        missing_modules = subset.missing;
        kernel_version = Some(subset.kernel_version);
    }

    let files = spec.spec_dir.join("files");
    match std::fs::symlink_metadata(&files) {
        Ok(m) if m.is_dir() => add_files(&files, &mut tree)?,
        Ok(_) => {
            return Err(InitrdError::WrongType {
                what: "initrd files",
                path: files,
                expected: "a directory",
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(InitrdError::Read {
                what: "initrd files",
                path: files,
                source,
            });
        }
    }

    let entries: Vec<Entry> = tree.entries.into_values().collect();
    let mut archive = Vec::new();
    let uncompressed_len = cpio::write_newc(&entries, spec.mtime, &mut archive)?;
    Ok(InitrdReport {
        bytes: gzip(&archive).map_err(InitrdError::Compress)?,
        uncompressed_len,
        entries: entries.len(),
        modules,
        missing_modules,
        kernel_version,
    })
}

/// Deterministic gzip: no file name, mtime 0, a fixed OS byte and level, so the bytes depend
/// only on the input (and the pinned miniz_oxide version).
fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::new(9));
    gz.write_all(data)?;
    gz.finish()
}

fn dir(path: &str, mode: u32) -> Entry {
    Entry {
        path: path.into(),
        mode,
        kind: EntryKind::Dir,
    }
}

/// The archive being assembled, keyed by path so that sources can share directories.
#[derive(Default)]
struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    /// Adds `e`; a directory already present is kept as it is (the first source decides its
    /// mode), any other collision is an error rather than a silent override.
    fn add(&mut self, e: Entry, origin: &'static str) -> Result<(), InitrdError> {
        match self.entries.get(&e.path) {
            None => {
                self.entries.insert(e.path.clone(), e);
                Ok(())
            }
            Some(existing) if existing.kind == EntryKind::Dir && e.kind == EntryKind::Dir => Ok(()),
            Some(_) => Err(InitrdError::Conflict {
                path: e.path,
                origin,
            }),
        }
    }
}

fn read_agent(path: &Path) -> Result<Vec<u8>, InitrdError> {
    let meta = std::fs::metadata(path).map_err(|source| InitrdError::Read {
        what: "agent binary",
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(InitrdError::WrongType {
            what: "agent binary",
            path: path.to_owned(),
            expected: "a regular file",
        });
    }
    check_size(path, meta.len())?;
    let data = std::fs::read(path).map_err(|source| InitrdError::Read {
        what: "agent binary",
        path: path.to_owned(),
        source,
    })?;
    // Catches a wrong --agent (a script, a build-script output) before it becomes an initrd
    // that only fails once booted.
    if !data.starts_with(b"\x7fELF") {
        return Err(InitrdError::NotElf {
            path: path.to_owned(),
        });
    }
    Ok(data)
}

fn check_size(path: &Path, size: u64) -> Result<(), InitrdError> {
    if size > cpio::MAX_FILE_SIZE {
        return Err(InitrdError::TooLarge {
            path: path.to_owned(),
            size,
        });
    }
    Ok(())
}

/// Reads a module list with the agent's own parser (`kmod::read_module_list`), so that a list
/// accepted here cannot be rejected at boot; a missing list is an empty one.
fn read_module_list(path: &Path) -> Result<Option<Vec<String>>, InitrdError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(InitrdError::Read {
                what: "module list",
                path: path.to_owned(),
                source,
            });
        }
    }
    kmod::read_module_list(path)
        .map(Some)
        .map_err(|source| InitrdError::ModuleList {
            path: path.to_owned(),
            source,
        })
}

/// Adds everything below `root` at the same relative path. Walks with an explicit stack so a
/// deep tree cannot exhaust the call stack, and stops descending once a path is over the
/// cpio limit.
fn add_files(root: &Path, tree: &mut Tree) -> Result<(), InitrdError> {
    let mut pending: Vec<(PathBuf, String)> = Vec::new();
    push_children(root, "", &mut pending)?;
    while let Some((path, rel)) = pending.pop() {
        if rel.len() > cpio::MAX_PATH_LEN {
            return Err(InitrdError::PathTooLong {
                len: rel.len(),
                path,
            });
        }
        let meta = std::fs::symlink_metadata(&path).map_err(|source| InitrdError::Read {
            what: "initrd file",
            path: path.clone(),
            source,
        })?;
        let ft = meta.file_type();
        let entry = if ft.is_dir() {
            push_children(&path, &rel, &mut pending)?;
            dir(&rel, 0o755)
        } else if ft.is_file() {
            use std::os::unix::fs::PermissionsExt;
            check_size(&path, meta.len())?;
            let data = std::fs::read(&path).map_err(|source| InitrdError::Read {
                what: "initrd file",
                path: path.clone(),
                source,
            })?;
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            Entry {
                path: rel,
                mode,
                kind: EntryKind::File(data),
            }
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|source| InitrdError::Read {
                what: "initrd symlink",
                path: path.clone(),
                source,
            })?;
            let target = target
                .into_os_string()
                .into_string()
                .map_err(|_| InitrdError::NonUtf8 { path: path.clone() })?;
            Entry {
                path: rel,
                mode: 0o777,
                kind: EntryKind::Symlink(target),
            }
        } else {
            return Err(InitrdError::UnsupportedFileType { path });
        };
        tree.add(entry, "files/")?;
    }
    Ok(())
}

fn push_children(
    dir: &Path,
    rel: &str,
    pending: &mut Vec<(PathBuf, String)>,
) -> Result<(), InitrdError> {
    let read_err = |source| InitrdError::Read {
        what: "initrd directory",
        path: dir.to_owned(),
        source,
    };
    for child in std::fs::read_dir(dir).map_err(read_err)? {
        let child = child.map_err(read_err)?;
        let path = child.path();
        let name = child
            .file_name()
            .into_string()
            .map_err(|_| InitrdError::NonUtf8 { path: path.clone() })?;
        let child_rel = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        pending.push((path, child_rel));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    const AGENT: &[u8] = b"\x7fELF\x02\x01\x01fake agent";

    struct Fixture {
        dir: tempfile::TempDir,
        spec: InitrdSpec,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("cvm-agent");
        std::fs::write(&agent, AGENT).unwrap();
        let spec_dir = dir.path().join("initrd");
        std::fs::create_dir(&spec_dir).unwrap();
        std::fs::write(
            spec_dir.join("modules.load"),
            "# always\ndm_verity\n\nerofs\n",
        )
        .unwrap();
        std::fs::write(spec_dir.join("modules.carry"), "virtio_blk\n").unwrap();
        let spec = InitrdSpec {
            agent,
            spec_dir,
            modules_dir: None,
            mtime: 1234,
        };
        Fixture { dir, spec }
    }

    fn unpack(report: &InitrdReport) -> Vec<Entry> {
        let mut cpio_bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&report.bytes[..]),
            &mut cpio_bytes,
        )
        .unwrap();
        assert_eq!(cpio_bytes.len() as u64, report.uncompressed_len);
        cpio::read_newc(&cpio_bytes).unwrap()
    }

    fn find<'a>(entries: &'a [Entry], path: &str) -> &'a Entry {
        entries
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("{path} missing"))
    }

    #[test]
    fn skeleton_agent_and_module_list() {
        let f = fixture();
        let report = build(&f.spec).unwrap();
        let entries = unpack(&report);
        assert_eq!(report.entries, entries.len());
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "dev",
                "dev/console",
                "etc",
                "etc/cvm-agent",
                "etc/cvm-agent/modules.load",
                "init",
                "lib",
                "proc",
                "root",
                "run",
                "sys",
                "sysroot",
                "tmp"
            ]
        );
        assert_eq!(
            find(&entries, "init"),
            &Entry {
                path: "init".into(),
                mode: 0o755,
                kind: EntryKind::File(AGENT.to_vec())
            }
        );
        assert_eq!(
            find(&entries, "dev/console").kind,
            EntryKind::CharDev { major: 5, minor: 1 }
        );
        assert_eq!(find(&entries, "dev/console").mode, 0o600);
        assert_eq!(find(&entries, "tmp").mode, 0o1777);
        assert_eq!(
            find(&entries, MODULES_LOAD_PATH).kind,
            EntryKind::File(b"# always\ndm_verity\n\nerofs\n".to_vec())
        );
        assert!(report.modules.is_empty() && report.missing_modules.is_empty());
        assert_eq!(report.kernel_version, None);
        // gzip header: no FNAME flag, mtime 0, max-compression XFL, OS byte fixed.
        assert_eq!(&report.bytes[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);
    }

    #[test]
    fn files_are_copied_with_normalised_modes() {
        let f = fixture();
        let files = f.spec.spec_dir.join("files");
        std::fs::create_dir_all(files.join("etc/ssl")).unwrap();
        std::fs::create_dir_all(files.join("usr/bin")).unwrap();
        std::fs::write(files.join("etc/ssl/ca.pem"), "pem").unwrap();
        std::fs::set_permissions(
            files.join("etc/ssl/ca.pem"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(files.join("usr/bin/tool"), "#!x").unwrap();
        std::fs::set_permissions(
            files.join("usr/bin/tool"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::fs::set_permissions(files.join("usr"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        symlink("/proc/self/mounts", files.join("etc/mtab")).unwrap();
        // files/tmp merges with the skeleton's tmp, which keeps its sticky mode.
        std::fs::create_dir(files.join("tmp")).unwrap();

        let entries = unpack(&build(&f.spec).unwrap());
        assert_eq!(find(&entries, "etc/ssl").mode, 0o755);
        assert_eq!(find(&entries, "usr").mode, 0o755);
        assert_eq!(find(&entries, "etc/ssl/ca.pem").mode, 0o644);
        assert_eq!(find(&entries, "usr/bin/tool").mode, 0o755);
        assert_eq!(
            find(&entries, "usr/bin/tool").kind,
            EntryKind::File(b"#!x".to_vec())
        );
        assert_eq!(
            find(&entries, "etc/mtab").kind,
            EntryKind::Symlink("/proc/self/mounts".into())
        );
        assert_eq!(find(&entries, "tmp").mode, 0o1777);
        assert_eq!(entries.iter().filter(|e| e.path == "tmp").count(), 1);
    }

    #[test]
    fn files_cannot_replace_the_agent_or_the_module_list() {
        for path in ["init", "etc/cvm-agent/modules.load", "dev/console"] {
            let f = fixture();
            let target = f.spec.spec_dir.join("files").join(path);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(&target, "x").unwrap();
            match build(&f.spec) {
                Err(InitrdError::Conflict { path: p, .. }) => assert_eq!(p, path),
                other => panic!("{path}: {other:?}"),
            }
        }
    }

    #[test]
    fn special_files_and_long_paths_are_rejected() {
        let f = fixture();
        let files = f.spec.spec_dir.join("files");
        std::fs::create_dir(&files).unwrap();
        let sock = files.join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(matches!(
            build(&f.spec),
            Err(InitrdError::UnsupportedFileType { path }) if path == sock
        ));

        // A relative path over the limit means an absolute one over PATH_MAX, which no
        // single mkdir can create: build two halves with short paths, then move one into
        // the other.
        let f = fixture();
        let base = f.spec.spec_dir.join("files");
        let base_len = base.as_os_str().len();
        assert!(
            base_len < 200,
            "temporary directory path too long for this test"
        );
        // The deepest directory's absolute path stays under PATH_MAX so it can be listed;
        // its 250-byte child's relative path is over 4095 bytes.
        let parent_len = 4090 - base_len - 1;
        let mut comps = Vec::new();
        let mut remaining = parent_len;
        while remaining > 0 {
            let n = remaining.min(200);
            comps.push(format!("{:x>n$}", comps.len()));
            remaining = remaining.saturating_sub(n + 1);
        }
        let (first, second) = comps.split_at(comps.len() / 2);
        let outer = base.join(first.join("/"));
        std::fs::create_dir_all(&outer).unwrap();
        let staging = f.dir.path().join("s");
        let leaf = staging.join(second.join("/")).join("l".repeat(250));
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::rename(staging.join(&second[0]), outer.join(&second[0])).unwrap();
        match build(&f.spec) {
            Err(InitrdError::PathTooLong { len, .. }) => assert!(len > 4095),
            other => panic!("{other:?}"),
        }

        // Sparse, so the test costs no disk: the size is checked before reading.
        let f = fixture();
        let files = f.spec.spec_dir.join("files");
        std::fs::create_dir(&files).unwrap();
        let big = std::fs::File::create(files.join("big")).unwrap();
        big.set_len(cpio::MAX_FILE_SIZE + 1).unwrap();
        assert!(matches!(build(&f.spec), Err(InitrdError::TooLarge { .. })));
    }

    #[test]
    fn bad_inputs_name_the_file() {
        let f = fixture();
        let mut spec = f.spec.clone();
        spec.agent = f.dir.path().join("no-such-agent");
        let err = build(&spec).unwrap_err();
        assert!(matches!(err, InitrdError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("no-such-agent"), "{err}");

        let mut spec = f.spec.clone();
        spec.agent = f.spec.spec_dir.clone();
        assert!(matches!(build(&spec), Err(InitrdError::WrongType { .. })));

        let script = f.dir.path().join("script");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let mut spec = f.spec.clone();
        spec.agent = script;
        assert!(matches!(build(&spec), Err(InitrdError::NotElf { .. })));

        let mut spec = f.spec.clone();
        spec.spec_dir = f.dir.path().join("no-spec");
        let err = build(&spec).unwrap_err();
        assert!(err.to_string().contains("no-spec"), "{err}");

        std::fs::write(f.spec.spec_dir.join("modules.carry"), "virtio/blk\n").unwrap();
        match build(&f.spec) {
            Err(InitrdError::ModuleList { path, .. }) => {
                assert!(path.ends_with("modules.carry"), "{path:?}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn source_date_epoch_parsing() {
        let parse = |s: &str| parse_source_date_epoch(Some(OsStr::new(s)));
        assert_eq!(parse_source_date_epoch(None).unwrap(), 0);
        assert_eq!(parse("0").unwrap(), 0);
        assert_eq!(parse("1700000000").unwrap(), 1_700_000_000);
        assert_eq!(parse("4294967295").unwrap(), u32::MAX);
        for bad in [
            "",
            "+5",
            "-1",
            " 5",
            "5 ",
            "1.5",
            "4294967296",
            "0x10",
            "1e9",
        ] {
            assert!(
                matches!(parse(bad), Err(InitrdError::SourceDateEpoch { .. })),
                "{bad:?}"
            );
        }
    }
}
