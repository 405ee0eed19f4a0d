//! The OCI runtime spec (`config.json`) the workload runs under: the launch plan plus the fixed
//! shape of a confidential workload — its own mount, PID, IPC and UTS namespaces, the host
//! network, a cgroup with a memory limit, a default capability set, a fresh `/dev` with no host
//! devices (no TPM, no SEV/TDX guest device: the workload cannot extend measurements or ask for
//! evidence on its own behalf), and exactly the agent's mounts: secrets and the event log
//! read-only, the state volume read-write, a tmpfs `/tmp` — and a seccomp filter that refuses
//! the syscalls a confidential workload never needs ([`SECCOMP_DENY`]).

use std::path::Path;

use serde_json::{Value, json};

use super::policy::LaunchPlan;

/// The cgroup (v2, under the agent's root) the workload's processes live in.
pub const CGROUP: &str = "/cvm-workload";

/// Docker's default set less CAP_MKNOD: what ordinary images expect to work (chown, binding
/// low ports, dropping privileges), nothing that reaches the kernel's or the host's
/// administration. CAP_MKNOD is left out because a device node is a way past everything else:
/// a root workload that can make `/dev/tpmrm0`'s or the disk's node quotes with the agent's AK
/// or reads the state volume's header. An image whose policy allows added capabilities can ask
/// for it, and still makes no character or block node ([`MKNOD_DENY`]).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// Kernel interfaces a container must not read or write (runc's and Docker's lists).
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/sys/kernel/security",
    "/sys/kernel/config",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The workload's seccomp profile: **default allow**, with an explicit deny list (EPERM).
///
/// Why not an allowlist like Docker's (~350 syscalls, default `SCMP_ACT_ERRNO`): the reduced
/// capability set and `no_new_privs` already refuse most of what an allowlist guards (modules,
/// reboot, mounts, raw I/O, clock setting all need capabilities the workload does not hold), and
/// an allowlist is a maintenance burden that breaks images whenever libc or a runtime starts
/// using a new syscall. The deny list below is what a confidential workload never needs and what
/// widens the guest kernel's attack surface even *without* capabilities (user namespaces,
/// io_uring, userfaultfd, keyrings, bpf, perf, ptrace); the capability-guarded groups are
/// listed too, as defence in depth, and are left out when the launch plan grants the capability
/// that makes them meaningful (as Docker's profile does), so an allowed `[workload]
/// capabilities` override still works.
///
/// Each group: (capabilities that re-allow it, syscalls). Names the running kernel or
/// libseccomp does not know are skipped by libcontainer (with a warning), not an error.
pub const SECCOMP_DENY: &[(&[&str], &[&str])] = &[
    // Replacing or changing the running kernel.
    (
        &["CAP_SYS_BOOT"],
        &["kexec_load", "kexec_file_load", "reboot"],
    ),
    (
        &["CAP_SYS_MODULE"],
        &["init_module", "finit_module", "delete_module"],
    ),
    // Host administration: swap, process accounting, quotas, the kernel log, the terminal.
    (
        &["CAP_SYS_ADMIN"],
        &["swapon", "swapoff", "acct", "quotactl", "vhangup"],
    ),
    (&["CAP_SYSLOG", "CAP_SYS_ADMIN"], &["syslog"]),
    // Kernel attack surface reachable without capabilities on many kernels: eBPF, perf events,
    // userfaultfd (a classic exploitation primitive), io_uring (a long CVE history; Google and
    // Docker disable it), the keyrings (not namespaced for all key types).
    (
        &["CAP_SYS_ADMIN", "CAP_BPF", "CAP_PERFMON"],
        &["bpf", "perf_event_open"],
    ),
    (
        &["CAP_SYS_ADMIN"],
        &[
            "userfaultfd",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "keyctl",
            "add_key",
            "request_key",
        ],
    ),
    // Reaching other processes' memory and descriptors, and file handles that bypass path
    // permission checks (the "shocker" escape).
    (
        &["CAP_SYS_PTRACE"],
        &["ptrace", "process_vm_readv", "process_vm_writev", "kcmp"],
    ),
    (
        &["CAP_DAC_READ_SEARCH"],
        &["open_by_handle_at", "name_to_handle_at"],
    ),
    (&["CAP_SYS_ADMIN"], &["lookup_dcookie"]),
    // Raw port I/O.
    (&["CAP_SYS_RAWIO"], &["iopl", "ioperm"]),
    // The clock: the guest's time is the platform's (and attestation's) business.
    (
        &["CAP_SYS_TIME"],
        &["settimeofday", "clock_settime", "clock_adjtime", "adjtimex"],
    ),
    // The mount table and namespaces: the agent set them up; the workload changes neither. An
    // unprivileged user namespace (`unshare -U`) is where most container-escape exploits start.
    (
        &["CAP_SYS_ADMIN"],
        &[
            "mount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "fsopen",
            "fsmount",
            "fsconfig",
            "move_mount",
            "open_tree",
            "fspick",
        ],
    ),
];

/// `clone` flags that create namespaces: denied (one rule per flag, so any one set is
/// refused) unless the plan grants CAP_SYS_ADMIN, else `clone` would bypass the `unshare` deny.
/// `clone3` passes its flags in memory, which seccomp cannot inspect: it gets ENOSYS, and libc
/// falls back to `clone` (Docker does the same).
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

/// `mknod`/`mknodat` of these file types (`mode & S_IFMT`) is refused whatever capabilities
/// the workload holds: character and block devices. FIFOs, sockets and regular files stay
/// allowed (they need no capability and reach no driver).
pub const MKNOD_DENY: &[u64] = &[
    0o020000, // S_IFCHR
    0o060000, // S_IFBLK
];
const S_IFMT: u64 = 0o170000;
/// The mode's argument index: `mknod(path, mode, dev)`, `mknodat(dirfd, path, mode, dev)`.
const MKNOD_MODE_ARG: &[(&str, u32)] = &[("mknod", 1), ("mknodat", 2)];

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// The `linux.seccomp` section for a workload holding `caps`.
///
/// `personality` is left alone: Docker restricts it to a few values, but with a default-allow
/// profile that takes a "not one of" comparison libseccomp cannot express in one rule.
pub fn seccomp(caps: &[&str]) -> Value {
    let granted = |group: &[&str]| group.iter().any(|c| caps.contains(c));
    let mut syscalls = Vec::new();
    let names: Vec<&str> = SECCOMP_DENY
        .iter()
        .filter(|(reallow, _)| !granted(reallow))
        .flat_map(|(_, names)| names.iter().copied())
        .collect();
    if !names.is_empty() {
        syscalls.push(json!({"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}));
    }
    if !granted(&["CAP_SYS_ADMIN"]) {
        for flag in CLONE_NAMESPACE_FLAGS {
            syscalls.push(json!({
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": EPERM,
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            }));
        }
        syscalls.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}));
    }
    // libcontainer 0.7 reads SCMP_CMP_MASKED_EQ as `(arg & valueTwo) == value` (the mask in
    // `valueTwo`), the reverse of runc's `(arg & value) == valueTwo`. Written runc's way, each
    // rule would only test that the type's bits are set (libseccomp masks the datum too), which
    // also matches invalid types such as S_IFLNK; the unit test loads the filter and pins the
    // exact reading.
    for (name, index) in MKNOD_MODE_ARG {
        for kind in MKNOD_DENY {
            syscalls.push(json!({
                "names": [name],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": EPERM,
                "args": [{"index": index, "value": kind, "valueTwo": S_IFMT, "op": "SCMP_CMP_MASKED_EQ"}],
            }));
        }
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": syscalls,
    })
}

/// Where the agent's own files come from on the VM side.
#[derive(Debug, Clone)]
pub struct HostPaths<'a> {
    pub rootfs: &'a Path,
    /// `/run/secrets`, when secrets were written.
    pub secrets: Option<&'a Path>,
    /// The sealed event log.
    pub measure_log: Option<&'a Path>,
    /// The state volume's directory for the workload.
    pub state_data: Option<&'a Path>,
}

/// The numeric identity the workload runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("image User {0:?}: no such user in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("image User {0:?}: no such group in the image's /etc/group")]
    UnknownGroup(String),
    #[error("the image's /{file}: a symlink on its path (symlinks are not followed)")]
    AccountSymlink { file: &'static str },
    #[error("the image's /{file} is a {kind}, not a regular file")]
    AccountNotRegular {
        file: &'static str,
        kind: &'static str,
    },
    #[error("the image's /{file} is larger than {MAX_ACCOUNT_FILE} bytes")]
    AccountTooLarge { file: &'static str },
    #[error("cannot read the image's /{file}")]
    AccountRead {
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The most of `/etc/passwd` or `/etc/group` the agent reads.
pub const MAX_ACCOUNT_FILE: u64 = 1 << 20;

/// Resolves the image's `User` (`uid`, `uid:gid`, `name`, `name:group`) against the unpacked
/// root's `/etc/passwd` and `/etc/group`, as a container runtime does.
pub fn identity(user: Option<&str>, rootfs: &Path) -> Result<Identity, SpecError> {
    let Some(user) = user else {
        return Ok(Identity { uid: 0, gid: 0 });
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_account_file(rootfs, "etc/passwd")?;
    let (uid, primary_gid) = match u.parse::<u32>() {
        Ok(uid) => (
            uid,
            lookup(&passwd, |f| f.get(2) == Some(&u)).and_then(|f| f.get(3)?.parse().ok()),
        ),
        Err(_) => {
            let fields = lookup(&passwd, |f| f.first() == Some(&u))
                .ok_or_else(|| SpecError::UnknownUser(user.chars().take(64).collect()))?;
            let uid = fields.get(2).and_then(|v| v.parse().ok());
            let gid = fields.get(3).and_then(|v| v.parse().ok());
            (
                uid.ok_or_else(|| SpecError::UnknownUser(user.chars().take(64).collect()))?,
                gid,
            )
        }
    };
    let gid = match g {
        None => primary_gid.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let group = read_account_file(rootfs, "etc/group")?;
                lookup(&group, |f| f.first() == Some(&g))
                    .and_then(|f| f.get(2)?.parse().ok())
                    .ok_or_else(|| SpecError::UnknownGroup(user.chars().take(64).collect()))?
            }
        },
    };
    Ok(Identity { uid, gid })
}

/// `file` (relative, e.g. `etc/passwd`) from the unpacked image root, which is hostile input:
/// no symlink is followed on any component (a link to `/dev/console` or out of the root would
/// make PID 1 read the agent's own files or block), only a regular file is read, and at most
/// [`MAX_ACCOUNT_FILE`] bytes. A missing file (or `/etc`) is empty, as for any runtime.
pub fn read_account_file(rootfs: &Path, file: &'static str) -> Result<String, SpecError> {
    use nix::errno::Errno;
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    use std::io::Read as _;

    let io = |source: std::io::Error| SpecError::AccountRead { file, source };
    let nix_io = |e: Errno| io(std::io::Error::from(e));
    let root = std::fs::File::open(rootfs).map_err(io)?;
    let resolve = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS;
    let open = |flags: OFlag| {
        openat2(
            &root,
            file,
            OpenHow::new()
                .flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
                .resolve(resolve),
        )
    };
    // O_PATH first: its type is known before anything opens it for reading, so a FIFO or a
    // device never gets an open (which blocks, or reaches a driver). With O_PATH|O_NOFOLLOW a
    // trailing symlink comes back as itself; a symlink before it is ELOOP.
    let path_fd = match open(OFlag::O_PATH) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(String::new()),
        Err(Errno::ELOOP | Errno::EXDEV) => return Err(SpecError::AccountSymlink { file }),
        Err(e) => return Err(nix_io(e)),
    };
    let regular = |fd: &std::os::fd::OwnedFd| -> Result<(u64, u64, u64), SpecError> {
        let st = nix::sys::stat::fstat(fd).map_err(nix_io)?;
        let kind = match st.st_mode & nix::libc::S_IFMT {
            nix::libc::S_IFREG => None,
            nix::libc::S_IFLNK => Some("symlink"),
            nix::libc::S_IFDIR => Some("directory"),
            nix::libc::S_IFIFO => Some("FIFO"),
            nix::libc::S_IFSOCK => Some("socket"),
            nix::libc::S_IFCHR => Some("character device"),
            nix::libc::S_IFBLK => Some("block device"),
            _ => Some("file of unknown type"),
        };
        match kind {
            Some(kind) => Err(SpecError::AccountNotRegular { file, kind }),
            None if st.st_size as u64 > MAX_ACCOUNT_FILE => {
                Err(SpecError::AccountTooLarge { file })
            }
            None => Ok((st.st_dev, st.st_ino, st.st_size as u64)),
        }
    };
    let before = regular(&path_fd)?;
    // O_NONBLOCK as well, in case the entry was swapped for a FIFO in between.
    let fd = open(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).map_err(|e| match e {
        Errno::ELOOP | Errno::EXDEV => SpecError::AccountSymlink { file },
        e => nix_io(e),
    })?;
    let after = regular(&fd)?;
    if (before.0, before.1) != (after.0, after.1) {
        return Err(io(std::io::Error::other("replaced while being opened")));
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_ACCOUNT_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_ACCOUNT_FILE {
        return Err(SpecError::AccountTooLarge { file });
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn lookup<'a>(text: &'a str, pred: impl Fn(&Vec<&'a str>) -> bool) -> Option<Vec<&'a str>> {
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| pred(f))
}

fn bind(source: &Path, destination: &str, options: &[&str]) -> Value {
    json!({
        "destination": destination,
        "type": "bind",
        "source": source,
        "options": options,
    })
}

/// The runtime spec for `plan`.
pub fn build(plan: &LaunchPlan, paths: &HostPaths, who: Identity, memory_limit: u64) -> Value {
    let mut caps: Vec<&str> = DEFAULT_CAPABILITIES.to_vec();
    for extra in &plan.capabilities {
        if !caps.contains(&extra.as_str()) {
            caps.push(extra);
        }
    }
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        // Not `nodev` here: libcontainer makes /dev/null and friends on this tmpfs and opens
        // /dev/null before the workload starts. `dev::seal_dev` sets `nodev` after that.
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "nodev", "mode=1777"]}),
    ];
    if let Some(secrets) = paths.secrets {
        mounts.push(bind(
            secrets,
            "/run/secrets",
            &["rbind", "ro", "nosuid", "nodev", "noexec"],
        ));
    }
    if let Some(log) = paths.measure_log {
        mounts.push(bind(
            log,
            "/run/cvm-agent/measure.log",
            &["bind", "ro", "nosuid", "nodev", "noexec"],
        ));
    }
    if let (Some(data), Some(dest)) = (paths.state_data, plan.state_mount.as_deref()) {
        mounts.push(bind(data, dest, &["rbind", "rw", "nosuid", "nodev"]));
    }
    json!({
        "ociVersion": "1.0.2",
        "root": {"path": paths.rootfs, "readonly": false},
        "hostname": "cvm-workload",
        "process": {
            "terminal": false,
            "user": {"uid": who.uid, "gid": who.gid},
            "args": plan.args,
            "env": plan.env,
            "cwd": plan.working_dir,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1048576u64, "soft": 1048576u64}],
            "noNewPrivileges": true,
        },
        "mounts": mounts,
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"},
            ],
            "cgroupsPath": CGROUP,
            "resources": {
                "memory": {"limit": memory_limit},
                "devices": [{"allow": false, "access": "rwm"}],
            },
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": seccomp(&caps),
        },
    })
}

/// Memory for the workload: what the operator asked for, or everything but the agent's
/// reserve (its own pages, the page cache the state volume needs to make progress).
pub fn memory_limit(requested_mib: Option<u64>, mem_total: u64) -> u64 {
    const RESERVE: u64 = 64 << 20;
    const FLOOR: u64 = 32 << 20;
    match requested_mib {
        Some(mib) => mib << 20,
        None => mem_total.saturating_sub(RESERVE).max(FLOOR),
    }
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initdata::launch::RestartPolicy;

    fn plan() -> LaunchPlan {
        LaunchPlan {
            args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["PATH=/bin".into()],
            working_dir: "/".into(),
            user: None,
            restart: RestartPolicy::Never,
            log_redirect: true,
            capabilities: vec!["CAP_NET_ADMIN".into(), "CAP_CHOWN".into()],
            state_mount: Some("/var/lib/app".into()),
            overrides: "{}".into(),
            debug_violations: vec![],
        }
    }

    #[test]
    fn the_spec_is_a_valid_oci_runtime_spec() {
        let paths = HostPaths {
            rootfs: Path::new("/run/cvm-agent/rootfs"),
            secrets: Some(Path::new("/run/secrets")),
            measure_log: Some(Path::new("/run/cvm-agent/measure.log")),
            state_data: Some(Path::new("/run/cvm-agent/state/data")),
        };
        let value = build(&plan(), &paths, Identity { uid: 0, gid: 0 }, 256 << 20);
        let spec: oci_spec::runtime::Spec = serde_json::from_value(value).unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_ref().unwrap()[2], "echo hi");
        let caps = process.capabilities().as_ref().unwrap();
        let bounding = caps.bounding().as_ref().unwrap();
        assert_eq!(
            bounding.len(),
            DEFAULT_CAPABILITIES.len() + 1,
            "added once, no duplicate"
        );
        let mounts = spec.mounts().as_ref().unwrap();
        let dests: Vec<_> = mounts.iter().map(|m| m.destination().clone()).collect();
        for want in [
            "/run/secrets",
            "/run/cvm-agent/measure.log",
            "/var/lib/app",
            "/tmp",
        ] {
            assert!(dests.iter().any(|d| d == Path::new(want)), "{want}");
        }
        let ns = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap();
        assert_eq!(ns.len(), 4, "no network namespace: host network");
        // No device is passed through: /dev is a fresh tmpfs, and the device cgroup denies
        // all but libcgroups' own defaults (see the libcontainer dependency in Cargo.toml).
        assert!(spec.linux().as_ref().unwrap().devices().is_none());

        use oci_spec::runtime::{Arch, LinuxSeccompAction};
        let seccomp = spec.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert!(
            seccomp
                .architectures()
                .as_ref()
                .unwrap()
                .contains(&Arch::ScmpArchX86_64)
        );
        let rules = seccomp.syscalls().as_ref().unwrap();
        let deny = &rules[0];
        assert_eq!(deny.action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(deny.errno_ret(), Some(1), "EPERM");
        for name in [
            "unshare",
            "io_uring_setup",
            "bpf",
            "ptrace",
            "kexec_load",
            "mount",
        ] {
            assert!(deny.names().iter().any(|n| n == name), "{name}");
        }
        let clone_rules = rules.iter().filter(|r| *r.names() == ["clone"]).count();
        assert_eq!(clone_rules, CLONE_NAMESPACE_FLAGS.len());
        assert!(
            rules
                .iter()
                .any(|r| *r.names() == ["clone3"] && r.errno_ret() == Some(38))
        );
    }

    #[test]
    fn granted_capabilities_lift_their_seccomp_groups() {
        let denied = |caps: &[&str]| -> Vec<String> {
            let v = seccomp(caps);
            v["syscalls"][0]["names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect()
        };
        let base = denied(DEFAULT_CAPABILITIES);
        assert!(base.contains(&"ptrace".to_owned()));
        assert!(base.contains(&"clock_settime".to_owned()));
        let with = denied(&["CAP_SYS_PTRACE", "CAP_SYS_TIME"]);
        assert!(!with.contains(&"ptrace".to_owned()));
        assert!(!with.contains(&"clock_settime".to_owned()));
        assert!(with.contains(&"unshare".to_owned()));
        // CAP_SYS_ADMIN lifts the mount and namespace groups and the clone flag rules.
        let admin = seccomp(&["CAP_SYS_ADMIN"]);
        let rules = admin["syscalls"].as_array().unwrap();
        assert!(rules.iter().all(|r| r["names"] != json!(["clone"])));
        let names = rules[0]["names"].as_array().unwrap();
        assert!(!names.contains(&json!("unshare")));
        assert!(names.contains(&json!("kexec_load")));
        // No name is listed twice.
        let mut all: Vec<&str> = SECCOMP_DENY
            .iter()
            .flat_map(|(_, n)| n.iter().copied())
            .collect();
        let len = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), len);
    }

    #[test]
    fn optional_mounts_are_left_out() {
        let paths = HostPaths {
            rootfs: Path::new("/r"),
            secrets: None,
            measure_log: None,
            state_data: None,
        };
        let value = build(&plan(), &paths, Identity { uid: 0, gid: 0 }, 1 << 30);
        let text = value.to_string();
        assert!(!text.contains("/run/secrets") && !text.contains("/var/lib/app"));
    }

    #[test]
    fn users_resolve_against_the_image() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let id = |u| identity(Some(u), dir.path());
        assert_eq!(
            id("app").unwrap(),
            Identity {
                uid: 1000,
                gid: 1001
            }
        );
        assert_eq!(
            id("1000").unwrap(),
            Identity {
                uid: 1000,
                gid: 1001
            }
        );
        assert_eq!(id("1000:50").unwrap(), Identity { uid: 1000, gid: 50 });
        assert_eq!(id("app:staff").unwrap(), Identity { uid: 1000, gid: 50 });
        assert_eq!(id("4242").unwrap(), Identity { uid: 4242, gid: 0 });
        assert!(matches!(id("nobody"), Err(SpecError::UnknownUser(_))));
        assert!(matches!(id("app:nogroup"), Err(SpecError::UnknownGroup(_))));
        assert_eq!(
            identity(None, dir.path()).unwrap(),
            Identity { uid: 0, gid: 0 }
        );
    }

    #[test]
    fn no_cap_mknod_unless_granted() {
        assert!(!DEFAULT_CAPABILITIES.contains(&"CAP_MKNOD"));
        let paths = HostPaths {
            rootfs: Path::new("/r"),
            secrets: None,
            measure_log: None,
            state_data: None,
        };
        let caps = |plan: &LaunchPlan| {
            let v = build(plan, &paths, Identity { uid: 0, gid: 0 }, 1 << 30);
            ["bounding", "effective", "permitted"].map(|set| {
                v["process"]["capabilities"][set]
                    .as_array()
                    .unwrap()
                    .contains(&json!("CAP_MKNOD"))
            })
        };
        assert_eq!(caps(&plan()), [false; 3]);
        let mut granted = plan();
        granted.capabilities.push("CAP_MKNOD".into());
        assert_eq!(caps(&granted), [true; 3]);
    }

    #[test]
    fn the_mknod_rules_are_in_every_profile() {
        let admin: Vec<&str> = DEFAULT_CAPABILITIES
            .iter()
            .copied()
            .chain(["CAP_MKNOD", "CAP_SYS_ADMIN"])
            .collect();
        for caps in [DEFAULT_CAPABILITIES, &admin[..]] {
            let v = seccomp(caps);
            let rules = v["syscalls"].as_array().unwrap();
            for (name, index) in [("mknod", 1), ("mknodat", 2)] {
                let mut kinds: Vec<u64> = rules
                    .iter()
                    .filter(|r| r["names"] == json!([name]))
                    .map(|r| {
                        assert_eq!(r["action"], "SCMP_ACT_ERRNO");
                        assert_eq!(r["errnoRet"], 1, "EPERM");
                        let arg = &r["args"][0];
                        assert_eq!(arg["index"], index, "{name}'s mode");
                        assert_eq!(arg["op"], "SCMP_CMP_MASKED_EQ");
                        assert_eq!(arg["valueTwo"], 0o170000, "the mask, libcontainer's way");
                        arg["value"].as_u64().unwrap()
                    })
                    .collect();
                kinds.sort_unstable();
                assert_eq!(kinds, [0o020000, 0o060000], "{name}: S_IFCHR, S_IFBLK");
            }
        }
    }

    /// The filter as the kernel runs it: loaded (through libcontainer, as for the workload) on
    /// a thread of this test, with a distinctive errno so the refusal cannot be CAP_MKNOD's
    /// EPERM; device nodes are refused through both syscalls, FIFOs and sockets are made.
    #[test]
    fn the_loaded_filter_refuses_device_nodes_and_allows_fifos() {
        use nix::errno::Errno;
        use nix::sys::stat::{Mode, SFlag, mknodat};
        use std::os::unix::ffi::OsStrExt as _;

        const MARK: i32 = Errno::EOVERFLOW as i32;
        let mut profile = seccomp(DEFAULT_CAPABILITIES);
        for rule in profile["syscalls"].as_array_mut().unwrap() {
            if rule["names"] == json!(["mknod"]) || rule["names"] == json!(["mknodat"]) {
                rule["errnoRet"] = json!(MARK);
            }
        }
        let profile: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(profile).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let results = std::thread::spawn(move || {
            nix::sys::prctl::set_no_new_privs().unwrap();
            libcontainer::seccomp::initialize_seccomp(&profile).unwrap();
            let dirfd = std::fs::File::open(&root).unwrap();
            let at = |name: &str, kind: SFlag| {
                mknodat(&dirfd, name, kind, Mode::from_bits_truncate(0o600), 0)
            };
            // The raw mknod syscall (glibc's mknod() calls mknodat), with garbage in the
            // upper half of the mode register, which the kernel ignores and the mask must too.
            let raw = |name: &str, mode: u64| {
                let path = std::ffi::CString::new(root.join(name).as_os_str().as_bytes()).unwrap();
                // SAFETY: mknod reads the NUL-terminated path, which outlives the call.
                let r =
                    unsafe { nix::libc::syscall(nix::libc::SYS_mknod, path.as_ptr(), mode, 0u64) };
                Errno::result(r).map(drop)
            };
            [
                at("chr", SFlag::S_IFCHR),
                at("blk", SFlag::S_IFBLK),
                raw("chr2", 0o020600),
                raw("blk2", 0x1_0000_0000 | 0o060600),
                at("fifo", SFlag::S_IFIFO),
                at("sock", SFlag::S_IFSOCK),
                raw("fifo2", 0x1_0000_0000 | 0o010600),
                at("reg", SFlag::S_IFREG),
                // Not a type mknod makes: the kernel's EINVAL, so the rule compares all of
                // S_IFMT (S_IFLNK shares S_IFCHR's bit).
                raw("lnk", 0o120600),
            ]
        })
        .join()
        .unwrap();
        let refused = Err(Errno::from_raw(MARK));
        assert_eq!(results[..4], [refused; 4]);
        assert_eq!(results[4..8], [Ok(()); 4]);
        assert_eq!(results[8], Err(Errno::EINVAL));
    }

    /// `read_account_file` on a fresh root with `etc` prepared by `setup`, on a thread so a
    /// blocking open fails the test instead of hanging it.
    fn account(setup: impl FnOnce(&Path)) -> Result<String, SpecError> {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path());
        let root = dir.path().to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(read_account_file(&root, "etc/passwd")));
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("read_account_file blocked")
    }

    fn etc(root: &Path) -> std::path::PathBuf {
        let etc = root.join("etc");
        std::fs::create_dir(&etc).unwrap();
        etc
    }

    #[test]
    fn account_files_are_read_without_following_anything() {
        use std::os::unix::fs::symlink;
        let not_regular = |r: Result<String, SpecError>| match r {
            Err(e @ SpecError::AccountNotRegular { .. }) => e.to_string(),
            other => panic!("{other:?}"),
        };
        // Trailing symlinks, to a device, to a file in the root and out of it.
        for target in ["/dev/console", "/etc/passwd", "group"] {
            let e = not_regular(account(|r| symlink(target, etc(r).join("passwd")).unwrap()));
            assert_eq!(
                e,
                "the image's /etc/passwd is a symlink, not a regular file"
            );
        }
        let e = not_regular(account(|r| {
            nix::unistd::mkfifo(&etc(r).join("passwd"), nix::sys::stat::Mode::S_IRWXU).unwrap()
        }));
        assert_eq!(e, "the image's /etc/passwd is a FIFO, not a regular file");
        let e = not_regular(account(|r| {
            std::fs::create_dir(etc(r).join("passwd")).unwrap()
        }));
        assert_eq!(
            e,
            "the image's /etc/passwd is a directory, not a regular file"
        );
        // A symlinked /etc, even to a good file inside the root.
        let r = account(|r| {
            std::fs::create_dir(r.join("real")).unwrap();
            std::fs::write(r.join("real/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
            symlink("real", r.join("etc")).unwrap();
        });
        assert!(
            matches!(r, Err(SpecError::AccountSymlink { file: "etc/passwd" })),
            "{r:?}"
        );
        assert_eq!(
            r.unwrap_err().to_string(),
            "the image's /etc/passwd: a symlink on its path (symlinks are not followed)"
        );
        // Oversized, by one byte.
        let r = account(|r| {
            let f = std::fs::File::create(etc(r).join("passwd")).unwrap();
            f.set_len(MAX_ACCOUNT_FILE + 1).unwrap();
        });
        assert!(matches!(r, Err(SpecError::AccountTooLarge { .. })), "{r:?}");
        // At the limit is fine; a missing file or /etc is empty.
        let r = account(|r| {
            let f = std::fs::File::create(etc(r).join("passwd")).unwrap();
            f.set_len(MAX_ACCOUNT_FILE).unwrap();
        });
        assert_eq!(r.unwrap().len() as u64, MAX_ACCOUNT_FILE);
        assert_eq!(account(|_| ()).unwrap(), "");
        assert_eq!(account(|r| drop(etc(r))).unwrap(), "");
    }

    #[test]
    fn identity_stops_on_a_hostile_account_file() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/console", etc(dir.path()).join("passwd")).unwrap();
        assert!(matches!(
            identity(Some("app"), dir.path()),
            Err(SpecError::AccountNotRegular { .. })
        ));
        // No User, nothing read.
        assert_eq!(
            identity(None, dir.path()).unwrap(),
            Identity { uid: 0, gid: 0 }
        );
    }

    #[test]
    fn memory_limits() {
        assert_eq!(memory_limit(Some(256), 1 << 30), 256 << 20);
        assert_eq!(memory_limit(None, 512 << 20), 448 << 20);
        assert_eq!(memory_limit(None, 48 << 20), 32 << 20);
        assert_eq!(
            mem_total("MemTotal:        2017260 kB\nMemFree: 1 kB\n"),
            Some(2017260 * 1024)
        );
        assert_eq!(mem_total("garbage"), None);
    }
}
