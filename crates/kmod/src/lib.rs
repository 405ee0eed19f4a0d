//! Kernel modules: the depmod index files (modules.dep, modules.alias, modules.builtin), the
//! closure the host puts into the initrd, and the guest-side loader (modalias coldplug +
//! explicit list, dependencies first, through `finit_module`).
//!
//! The agent is PID 1 of an initrd that has no modprobe and no udev, so it does their job for
//! the one boot it runs: `cvmctl initrd` copies the modules a VM may need (and only those, with
//! an index regenerated for them), and the guest loads what its devices ask for plus an explicit
//! list of modules no device asks for (dm_verity, filesystems). The text index files are parsed
//! rather than the `.bin` tries because the host regenerates them for the subset and the text
//! format is what depmod documents; both sides share one parser so they cannot disagree.
//!
//! The host half (the subset, feature `host`) is left out of the agent's build.
//!
//! The guest reads these files from its own (measured) initrd, but parsing is still strictly
//! bounded: a malformed index must end the boot with a line naming the file and line, never a
//! panic or an unbounded allocation.
#![forbid(unsafe_code)]

mod glob;
mod index;
mod loader;
#[cfg(feature = "host")]
mod subset;

pub use loader::{FinitModule, LoadReport, Loader, ModuleInserter};
#[cfg(feature = "host")]
pub use subset::{ModuleSubset, initrd_subset};

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The kernel's MODULE_NAME_LEN is 56 with the NUL; 64 leaves room and still keeps names short
/// enough to print.
const MAX_NAME_LEN: usize = 64;
/// `struct new_utsname` holds at most 64 bytes of release.
const MAX_KERNEL_VERSION_LEN: usize = 64;
/// A module list is a handful of names; anything bigger is not a module list.
const MAX_MODULE_LIST: u64 = 64 << 10;
const WAIT_POLL: Duration = Duration::from_millis(20);

/// Everything this module can fail with. Display is the "what" of the console line
/// `cvm-agent: error: modules: <what> (<cause>)`; the cause comes from `source()`.
#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is larger than {max} bytes", path.display())]
    TooLarge { path: PathBuf, max: u64 },
    #[error("{file} line {line}: {reason}")]
    Parse {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("invalid module name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid kernel version {version:?}: {reason}")]
    InvalidKernelVersion {
        version: String,
        reason: &'static str,
    },
    #[error("module {name} is neither in modules.dep nor built in")]
    UnknownModule { name: String },
    #[error("modules.dep: dependency cycle through {name}")]
    DependencyCycle { name: String },
    #[error("cannot load module {name} from {}: {errno}", path.display())]
    Insert {
        name: String,
        path: PathBuf,
        /// The symbolic errno (`ENODEV`), so the line reads the same as the kernel's docs.
        errno: String,
        #[source]
        source: std::io::Error,
    },
    #[error("module {name} failed to load earlier in this boot ({reason})")]
    FailedEarlier { name: String, reason: String },
    #[error("cannot read the running kernel's release (uname)")]
    Uname(#[source] nix::Error),
    #[error("{missing} did not appear within {waited:?}")]
    Timeout { missing: String, waited: Duration },
}

impl KmodError {
    fn read(path: &Path, source: std::io::Error) -> Self {
        KmodError::Read {
            path: path.to_owned(),
            source,
        }
    }

    fn parse(file: &str, line: usize, reason: impl Into<String>) -> Self {
        KmodError::Parse {
            file: file.to_owned(),
            line,
            reason: reason.into(),
        }
    }

    fn insert(name: &str, path: &Path, source: std::io::Error) -> Self {
        let errno = source.raw_os_error().map_or_else(
            || "error".to_owned(),
            |code| format!("{:?}", nix::errno::Errno::from_raw(code)),
        );
        KmodError::Insert {
            name: name.to_owned(),
            path: path.to_owned(),
            errno,
            source,
        }
    }
}

/// Module names as the kernel stores them: `-` and `_` are the same character to it
/// (`/sys/module/dm_verity` for `dm-verity.ko`).
pub(crate) fn normalize_name(name: &str) -> String {
    name.replace('-', "_")
}

pub(crate) fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("empty")
    } else if name.len() > MAX_NAME_LEN {
        Err("longer than 64 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Err("only A-Z, a-z, 0-9, '_' and '-' are allowed")
    } else {
        Ok(())
    }
}

/// Validate and normalize a module name given by a person (a list file, the carry list).
pub(crate) fn parse_name(name: &str) -> Result<String, KmodError> {
    check_name(name).map_err(|reason| KmodError::InvalidName {
        name: shown(name),
        reason,
    })?;
    Ok(normalize_name(name))
}

/// The kernel version names a directory under lib/modules, so it must be one path component.
pub(crate) fn check_kernel_version(version: &str) -> Result<(), KmodError> {
    let reason = if version.is_empty() {
        "empty"
    } else if version.len() > MAX_KERNEL_VERSION_LEN {
        "longer than 64 bytes"
    } else if version == "." || version == ".." {
        "not a directory name"
    } else if !version.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        "only printable ASCII without '/' is allowed"
    } else {
        return Ok(());
    };
    Err(KmodError::InvalidKernelVersion {
        version: shown(version),
        reason,
    })
}

/// A hostile token may be long; error messages show only its start.
pub(crate) fn shown(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Read a whole file but never more than `max` bytes: the size in the inode is not trusted
/// (sysfs reports 4096 for everything), the number of bytes actually read is.
pub(crate) fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, KmodError> {
    let file = std::fs::File::open(path).map_err(|e| KmodError::read(path, e))?;
    let mut data = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| KmodError::read(path, e))?;
    if data.len() as u64 > max {
        return Err(KmodError::TooLarge {
            path: path.to_owned(),
            max,
        });
    }
    Ok(data)
}

/// Wait until every path exists (device nodes that a just-loaded driver creates
/// asynchronously), polling every 20 ms. The error names the paths still missing.
pub fn wait_for_paths(paths: &[&Path], timeout: Duration) -> Result<(), KmodError> {
    let start = Instant::now();
    loop {
        let missing: Vec<&Path> = paths.iter().copied().filter(|p| !p.exists()).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Err(KmodError::Timeout {
                missing: missing
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                waited: timeout,
            });
        }
        std::thread::sleep(WAIT_POLL.min(timeout - elapsed));
    }
}

/// The running kernel's release, which names its lib/modules directory.
pub fn running_kernel_version() -> Result<String, KmodError> {
    let uts = nix::sys::utsname::uname().map_err(KmodError::Uname)?;
    let release = uts.release().to_string_lossy().into_owned();
    check_kernel_version(&release)?;
    Ok(release)
}

/// Read a module list: one name per line, `#` starts a comment, blank lines are ignored.
/// Names are returned as written (validated, not normalized) so logs show what the list says.
pub fn read_module_list(path: &Path) -> Result<Vec<String>, KmodError> {
    let data = read_bounded(path, MAX_MODULE_LIST)?;
    let file = path.display().to_string();
    parse_module_list(&data, &file)
}

fn parse_module_list(data: &[u8], file: &str) -> Result<Vec<String>, KmodError> {
    let mut names = Vec::new();
    for (i, raw) in data.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let line = std::str::from_utf8(raw)
            .map_err(|_| KmodError::parse(file, line_no, "not valid UTF-8"))?;
        let line = line
            .split_once('#')
            .map_or(line, |(before, _)| before)
            .trim();
        if line.is_empty() {
            continue;
        }
        if let Err(reason) = check_name(line) {
            return Err(KmodError::parse(
                file,
                line_no,
                format!("invalid module name {:?}: {reason}", shown(line)),
            ));
        }
        names.push(line.to_owned());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_and_validate() {
        assert_eq!(normalize_name("dm-verity"), "dm_verity");
        assert_eq!(parse_name("dm-verity").unwrap(), "dm_verity");
        assert!(parse_name("").is_err());
        assert!(parse_name("a/b").is_err());
        assert!(parse_name("ä").is_err());
        assert!(parse_name(&"a".repeat(65)).is_err());
        assert!(parse_name(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn kernel_version_is_one_component() {
        assert!(check_kernel_version("6.1.0-56-cloud-amd64").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_kernel_version(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn module_list_comments_blank_and_validation() {
        let list = b"# always\n\ndm_verity\n  erofs  # the root fs\nvirtio-blk\n";
        assert_eq!(
            parse_module_list(list, "modules.load").unwrap(),
            ["dm_verity", "erofs", "virtio-blk"]
        );
        let err = parse_module_list(b"ok\nbad name\n", "modules.load").unwrap_err();
        assert_eq!(
            err.to_string(),
            "modules.load line 2: invalid module name \"bad name\": only A-Z, a-z, 0-9, '_' and '-' are allowed"
        );
        let err = parse_module_list(b"ok\n\xff\n", "m").unwrap_err();
        assert_eq!(err.to_string(), "m line 2: not valid UTF-8");
        let long = format!("{}\n", "a".repeat(1000));
        let err = parse_module_list(long.as_bytes(), "m").unwrap_err();
        assert!(err.to_string().contains("longer than 64"), "{err}");
        assert!(err.to_string().len() < 200, "{err}");
    }

    #[test]
    fn module_list_file_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("modules.load");
        std::fs::write(&path, "dm_verity\n").unwrap();
        assert_eq!(read_module_list(&path).unwrap(), ["dm_verity"]);
        std::fs::write(&path, vec![b'a'; MAX_MODULE_LIST as usize + 1]).unwrap();
        let err = read_module_list(&path).unwrap_err();
        assert!(matches!(err, KmodError::TooLarge { .. }), "{err}");
        let err = read_module_list(&dir.path().join("absent")).unwrap_err();
        assert!(err.to_string().starts_with("cannot read "), "{err}");
    }

    #[test]
    fn wait_for_paths_names_the_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let present = dir.path().join("present");
        std::fs::write(&present, "").unwrap();
        let absent = dir.path().join("absent");
        wait_for_paths(&[&present], Duration::from_millis(10)).unwrap();
        let start = Instant::now();
        let err = wait_for_paths(&[&present, &absent], Duration::from_millis(60)).unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(60));
        let msg = err.to_string();
        assert!(msg.contains("absent") && !msg.contains("present,"), "{msg}");
        assert!(msg.ends_with("did not appear within 60ms"), "{msg}");
    }

    #[test]
    fn wait_for_paths_sees_a_late_path() {
        let dir = tempfile::tempdir().unwrap();
        let late = dir.path().join("late");
        let writer = {
            let late = late.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                std::fs::write(late, "").unwrap();
            })
        };
        wait_for_paths(&[&late], Duration::from_secs(5)).unwrap();
        writer.join().unwrap();
    }

    #[test]
    fn running_kernel_version_is_a_release() {
        let v = running_kernel_version().unwrap();
        assert!(!v.is_empty() && !v.contains('/'));
    }

    #[test]
    fn insert_error_names_module_and_errno() {
        let err = KmodError::insert(
            "dm_verity",
            Path::new("/lib/modules/k/dm-verity.ko"),
            std::io::Error::from_raw_os_error(19),
        );
        assert_eq!(
            err.to_string(),
            "cannot load module dm_verity from /lib/modules/k/dm-verity.ko: ENODEV"
        );
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert!(cause.contains("os error 19"), "{cause}");
    }
}
