//! Switching from the initramfs to the verified root, as util-linux's `switch_root` does, but
//! staying the same PID 1 process: move the API mounts into the new root, delete the
//! initramfs's files (its memory cannot be unmounted away; deleting is the only way to give it
//! back), move the new root onto `/` and chroot into it.

use nix::mount::{MsFlags, mount};
use nix::sys::stat::{lstat, stat};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("the new root has no {0} to move the API filesystem onto")]
    MissingMountPoint(PathBuf),
    #[error("cannot move {from} to {to}")]
    Move {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot {what}")]
    Sys {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
}

/// API mounts that follow the agent into the new root (submounts such as /dev/pts move along).
const MOVED: [&str; 5] = ["/dev", "/proc", "/sys", "/run", "/tmp"];

#[derive(Debug, Default)]
pub struct SwitchReport {
    /// Bytes the deleted initramfs files occupied.
    pub freed: u64,
    pub files: u64,
}

/// Remove everything on the initramfs below `dir` without crossing into other filesystems.
fn purge(dir: &Path, root_dev: u64, keep: &Path, report: &mut SwitchReport) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path == keep {
            continue;
        }
        let Ok(st) = lstat(&path) else {
            continue;
        };
        if st.st_dev != root_dev {
            continue;
        }
        let is_dir = st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR;
        if is_dir {
            purge(&path, root_dev, keep, report);
            let _ = std::fs::remove_dir(&path);
        } else {
            report.freed += st.st_blocks as u64 * 512;
            report.files += 1;
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Make `new_root` (already mounted) the root of this process. Runs only as PID 1 on an
/// initramfs; every step is the same as switch_root(8)'s.
pub fn switch_root(new_root: &Path) -> Result<SwitchReport, SwitchError> {
    for m in MOVED {
        let target = new_root.join(&m[1..]);
        if !target.is_dir() {
            return Err(SwitchError::MissingMountPoint(PathBuf::from(m)));
        }
    }
    for m in MOVED {
        let target = new_root.join(&m[1..]);
        mount(
            Some(m),
            &target,
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(|source| SwitchError::Move {
            from: PathBuf::from(m),
            to: target.clone(),
            source,
        })?;
    }
    let sys = |what, source| SwitchError::Sys { what, source };
    let root_dev = stat("/").map_err(|e| sys("stat /", e))?.st_dev;
    let mut report = SwitchReport::default();
    purge(Path::new("/"), root_dev, new_root, &mut report);
    nix::unistd::chdir(new_root).map_err(|e| sys("chdir into the new root", e))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| sys("move the new root onto /", e))?;
    nix::unistd::chroot(".").map_err(|e| sys("chroot into the new root", e))?;
    nix::unistd::chdir("/").map_err(|e| sys("chdir /", e))?;
    Ok(report)
}
