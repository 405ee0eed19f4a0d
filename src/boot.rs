//! Stage 1, early: the API filesystems a PID 1 needs and the console on fds 0–2.
//!
//! The kernel starts init with almost nothing: no /proc, no /sys, maybe no open console. Every
//! later stage depends on these mounts, so a failure here is fatal; only configfs may be missing
//! (it is a module on some kernels) and is mounted again once modules are loaded.

use nix::mount::{MsFlags, mount};
use nix::sys::stat::Mode;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum EarlyError {
    #[error("cannot create mount point {path}")]
    MkDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount {fstype} on {target}")]
    Mount {
        fstype: &'static str,
        target: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("cannot open /dev/console")]
    Console(#[source] std::io::Error),
    #[error("cannot attach /dev/console to stdin/stdout/stderr")]
    Dup(#[source] nix::Error),
}

struct MountSpec {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
    /// Fails softly: the filesystem may only appear after modules are loaded.
    optional: bool,
}

const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
const NOSUID_NODEV_NOEXEC: MsFlags = NOSUID_NODEV.union(MsFlags::MS_NOEXEC);

fn mounts() -> [MountSpec; 10] {
    [
        MountSpec {
            source: "proc",
            target: "/proc",
            fstype: "proc",
            flags: NOSUID_NODEV_NOEXEC,
            data: None,
            optional: false,
        },
        MountSpec {
            source: "sysfs",
            target: "/sys",
            fstype: "sysfs",
            flags: NOSUID_NODEV_NOEXEC,
            data: None,
            optional: false,
        },
        MountSpec {
            source: "devtmpfs",
            target: "/dev",
            fstype: "devtmpfs",
            flags: MsFlags::MS_NOSUID,
            data: Some("mode=0755"),
            optional: false,
        },
        MountSpec {
            source: "devpts",
            target: "/dev/pts",
            fstype: "devpts",
            flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
            data: Some("mode=0620,ptmxmode=0666"),
            optional: false,
        },
        MountSpec {
            source: "tmpfs",
            target: "/dev/shm",
            fstype: "tmpfs",
            flags: NOSUID_NODEV,
            data: Some("mode=1777"),
            optional: false,
        },
        MountSpec {
            source: "tmpfs",
            target: "/run",
            fstype: "tmpfs",
            flags: NOSUID_NODEV,
            data: Some("mode=0755"),
            optional: false,
        },
        MountSpec {
            source: "tmpfs",
            target: "/tmp",
            fstype: "tmpfs",
            flags: NOSUID_NODEV,
            data: Some("mode=1777"),
            optional: false,
        },
        MountSpec {
            source: "securityfs",
            target: "/sys/kernel/security",
            fstype: "securityfs",
            flags: NOSUID_NODEV_NOEXEC,
            data: None,
            optional: false,
        },
        MountSpec {
            source: "cgroup2",
            target: "/sys/fs/cgroup",
            fstype: "cgroup2",
            flags: NOSUID_NODEV_NOEXEC,
            data: Some("nsdelegate"),
            optional: false,
        },
        MountSpec {
            source: "configfs",
            target: "/sys/kernel/config",
            fstype: "configfs",
            flags: NOSUID_NODEV_NOEXEC,
            data: None,
            optional: true,
        },
    ]
}

/// What early setup did, for the log.
#[derive(Debug, Default)]
pub struct EarlyReport {
    pub mounted: Vec<&'static str>,
    pub already: Vec<&'static str>,
    pub deferred: Vec<&'static str>,
}

fn mount_one(spec: &MountSpec) -> Result<bool, EarlyError> {
    // /sys/kernel/config only exists once configfs is registered; it cannot be created.
    if spec.optional && !Path::new(spec.target).is_dir() {
        return Err(EarlyError::Mount {
            fstype: spec.fstype,
            target: spec.target,
            source: nix::Error::ENODEV,
        });
    }
    std::fs::create_dir_all(spec.target).map_err(|source| EarlyError::MkDir {
        path: spec.target.to_string(),
        source,
    })?;
    match mount(
        Some(spec.source),
        spec.target,
        Some(spec.fstype),
        spec.flags,
        spec.data,
    ) {
        Ok(()) => Ok(true),
        // The kernel may have mounted devtmpfs itself (CONFIG_DEVTMPFS_MOUNT).
        Err(nix::Error::EBUSY) => Ok(false),
        Err(source) => Err(EarlyError::Mount {
            fstype: spec.fstype,
            target: spec.target,
            source,
        }),
    }
}

/// Mount the API filesystems. configfs is deferred when the kernel does not know it yet.
pub fn mount_api_filesystems() -> Result<EarlyReport, EarlyError> {
    let mut report = EarlyReport::default();
    for spec in mounts() {
        match mount_one(&spec) {
            Ok(true) => report.mounted.push(spec.target),
            Ok(false) => report.already.push(spec.target),
            Err(EarlyError::Mount {
                source: nix::Error::ENODEV,
                ..
            }) if spec.optional => report.deferred.push(spec.target),
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// What became of configfs after the modules stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Configfs {
    Mounted,
    AlreadyMounted,
    /// The kernel has no configfs (built in or loaded); configfs-tsm evidence is then unavailable.
    Unavailable,
}

fn is_mount_point(target: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|info| info.lines().any(|l| l.split(' ').nth(4) == Some(target)))
}

/// Mount configfs after the modules stage loaded it.
pub fn mount_configfs() -> Result<Configfs, EarlyError> {
    const TARGET: &str = "/sys/kernel/config";
    if is_mount_point(TARGET) {
        return Ok(Configfs::AlreadyMounted);
    }
    let Some(spec) = mounts().into_iter().find(|m| m.target == TARGET) else {
        return Ok(Configfs::Unavailable);
    };
    match mount_one(&spec) {
        Ok(_) => Ok(Configfs::Mounted),
        Err(EarlyError::Mount {
            source: nix::Error::ENODEV,
            ..
        }) => Ok(Configfs::Unavailable),
        Err(e) => Err(e),
    }
}

/// Point stdin, stdout and stderr at /dev/console. The kernel does this only when the initramfs
/// has a /dev/console node at exec time, so it is redone once devtmpfs is mounted.
pub fn attach_console() -> Result<(), EarlyError> {
    let console = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open("/dev/console")
        .map_err(EarlyError::Console)?;
    nix::unistd::dup2_stdin(&console).map_err(EarlyError::Dup)?;
    nix::unistd::dup2_stdout(&console).map_err(EarlyError::Dup)?;
    nix::unistd::dup2_stderr(&console).map_err(EarlyError::Dup)?;
    Ok(())
}

/// The agent creates files for the workload and for itself; nothing it creates is meant to be
/// group- or world-writable.
pub fn set_umask() {
    nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
}
