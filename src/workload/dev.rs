//! The workload's `/dev` made `nodev` between container creation and start.
//!
//! libcontainer 0.7 makes `/dev/null`, `zero`, `full`, `tty`, `random` and `urandom` with
//! `mknod` on the `/dev` tmpfs after every spec mount, so a tmpfs mounted `nodev` in the spec
//! would leave them unopenable. Instead, once the container exists (its init waits for the
//! start signal, the workload has not run), the agent enters the container's mount namespace
//! on a thread of its own, mounts its own nodes over those six (each a bind mount of the
//! agent's devtmpfs node, so it opens whatever flags `/dev` has) and sets `nodev` on the
//! `/dev` tmpfs. A node the workload could still make there (seccomp and the capability set
//! refuse that already) would not open.

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use nix::errno::Errno;
use nix::libc;
use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::Pid;

/// libcontainer's default devices (`rootfs::utils::default_devices`).
pub const DEFAULT_DEVICES: &[&str] = &["null", "zero", "full", "tty", "random", "urandom"];

// From <linux/mount.h> (Linux 5.2 / 5.12).
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOUNT_ATTR_NODEV: u64 = 4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("cannot clone the agent's /dev/{name} for the workload")]
    Clone {
        name: &'static str,
        #[source]
        source: Errno,
    },
    #[error("cannot open the workload's mount namespace")]
    Namespace(#[source] std::io::Error),
    #[error("cannot enter the workload's mount namespace")]
    Enter(#[source] Errno),
    #[error("cannot mount the agent's /dev/{name} in the workload's /dev")]
    Mount {
        name: &'static str,
        #[source]
        source: Errno,
    },
    #[error("cannot make the workload's /dev nodev")]
    Nodev(#[source] Errno),
    #[error("the thread that seals the workload's /dev panicked")]
    Thread,
}

fn cstr(s: &str) -> CString {
    // The paths are the constants above: no NUL inside.
    CString::new(s).unwrap_or_default()
}

/// A detached copy (a mount of its own) of the agent's `/dev/<name>`.
fn clone_node(name: &'static str) -> Result<OwnedFd, DevError> {
    let path = cstr(&format!("/dev/{name}"));
    // SAFETY: open_tree reads the NUL-terminated path, which outlives the call; the returned
    // descriptor is owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    let fd = Errno::result(fd).map_err(|source| DevError::Clone { name, source })?;
    // SAFETY: a fresh descriptor from open_tree, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Runs in the container's mount namespace: the agent's nodes over libcontainer's, then
/// `nodev` on the tmpfs underneath.
fn seal(mnt_ns: OwnedFd, nodes: Vec<(&'static str, OwnedFd)>) -> Result<(), DevError> {
    // setns into a mount namespace needs a filesystem context this thread does not share.
    unshare(CloneFlags::CLONE_FS).map_err(DevError::Enter)?;
    setns(&mnt_ns, CloneFlags::CLONE_NEWNS).map_err(DevError::Enter)?;
    let empty = cstr("");
    for (name, fd) in &nodes {
        let target = cstr(&format!("/dev/{name}"));
        // SAFETY: both paths are NUL-terminated and outlive the call; fd is a mount from
        // open_tree.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                fd.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        Errno::result(r).map_err(|source| DevError::Mount { name, source })?;
    }
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let dev = cstr("/dev");
    // SAFETY: the path and the attribute struct outlive the call; the size is the struct's.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            dev.as_ptr(),
            0,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(r).map(drop).map_err(DevError::Nodev)
}

/// Seals the `/dev` of the created (not yet started) container whose init is `pid`.
pub fn seal_dev(pid: Pid) -> Result<(), DevError> {
    let nodes = DEFAULT_DEVICES
        .iter()
        .map(|&name| Ok((name, clone_node(name)?)))
        .collect::<Result<Vec<_>, DevError>>()?;
    let mnt_ns: OwnedFd = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
        .map_err(DevError::Namespace)?
        .into();
    // A thread of its own: the namespace switch is per thread and ends with it.
    std::thread::spawn(move || seal(mnt_ns, nodes))
        .join()
        .map_err(|_| DevError::Thread)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::process::{Command, Stdio};

    /// A process in a mount namespace of its own with a fresh tmpfs `/dev` holding plain files
    /// at the device paths (as libcontainer leaves it, but with no device behind them), sealed,
    /// then asked to use `/dev/null` and to open a node it makes.
    #[test]
    fn sealed_dev_is_nodev_and_its_devices_work() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (mount namespaces)");
            return;
        }
        let script = "mount -t tmpfs -o mode=755 tmpfs /dev && \
                      for d in null zero full tty random urandom; do : > /dev/$d; done && \
                      echo ready && read go && \
                      echo x > /dev/null && head -c 4 /dev/urandom | wc -c && \
                      mknod /dev/null2 c 1 3 && (echo y > /dev/null2 && echo opened || echo refused)";
        let mut child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        // The tmpfs is on the shell's /dev; unshare execs sh in place, so the pid is the shell's.
        let pid = Pid::from_raw(child.id() as i32);
        let sealed = seal_dev(pid);
        let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let rest: Vec<String> = out.lines().map(Result::unwrap).collect();
        let _ = child.wait();
        sealed.unwrap();
        let dev = mountinfo
            .lines()
            .rfind(|l| l.split(' ').nth(4) == Some("/dev"))
            .expect("/dev in mountinfo");
        let options = dev.split(' ').nth(5).unwrap();
        assert!(options.split(',').any(|o| o == "nodev"), "{dev}");
        for name in DEFAULT_DEVICES {
            let path = format!("/dev/{name}");
            assert!(
                mountinfo
                    .lines()
                    .any(|l| l.split(' ').nth(4) == Some(&path)),
                "{path} is not a mount\n{mountinfo}"
            );
        }
        assert_eq!(rest, ["4", "refused"]);
    }
}
