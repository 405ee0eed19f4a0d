//! The test harness (dev-only; never built into anything shipped): boot the real static agent
//! as PID 1 under QEMU (TCG) with swtpm through qemu/boot.sh and look at the console and how
//! the VM ended; start swtpm ([`swtpm`]), a real OCI registry ([`registry`]) and the dev KBS
//! ([`kbs`]) on 127.0.0.1. The VM inputs come from `make` (CVM_KERNEL, CVM_INITRD,
//! CVM_ROOTFS); a bare `cargo test` skips the VM tests.
#![forbid(unsafe_code)]

pub mod kbs;
pub mod metadata;
pub mod registry;
pub mod swtpm;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The workspace root.
pub fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The `cvmctl` binary: `$CVMCTL_BIN` if set, else the one cargo built next to the running test
/// (`target/<profile>/cvmctl`; `cargo test --workspace` builds it because the cvmctl package
/// has integration tests).
pub fn cvmctl() -> PathBuf {
    if let Some(p) = std::env::var_os("CVMCTL_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> -> target/<profile>/cvmctl
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("cvmctl"))
        .expect("the test binary has a target directory");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds cvmctl) or set CVMCTL_BIN",
        bin.display()
    );
    bin
}

pub fn input(var: &str, default: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(default));
    assert!(
        p.exists(),
        "{var}: {} is missing — VM tests need `make test` (it builds the kernel cache and images)",
        p.display()
    );
    p
}

pub fn rootfs() -> PathBuf {
    input("CVM_ROOTFS", "out/rootfs.img")
}

/// The root hash `cvmctl rootfs` wrote next to the image.
pub fn roothash() -> String {
    let mut p = rootfs().into_os_string();
    p.push(".roothash");
    std::fs::read_to_string(&p)
        .expect("read the .roothash next to the rootfs image")
        .trim()
        .to_string()
}

/// `roothash=…` plus the verified root disk, as a production boot needs.
pub fn verified_root() -> (String, Vec<String>) {
    (
        format!("roothash={}", roothash()),
        vec!["--disk".into(), format!("{}:ro", rootfs().display())],
    )
}

pub struct Boot {
    pub code: i32,
    pub console: String,
}

impl Boot {
    pub fn lines(&self, prefix: &str) -> Vec<&str> {
        self.console
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| l.starts_with(prefix))
            .collect()
    }

    pub fn errors(&self) -> Vec<&str> {
        self.lines("cvm-agent: error:")
    }

    pub fn has(&self, needle: &str) -> bool {
        self.console.contains(needle)
    }

    pub fn result(&self) -> Option<serde_json::Value> {
        cvm_agent::result::find_result(&self.console)
    }

    /// The kernel's own last words on an orderly power-off (pr_emerg, shown at any loglevel),
    /// or the agent's power-off request where the guest kernel then hung in its own power-off
    /// path and qemu/boot.sh stopped QEMU and said so. That hang is the kernel's under TCG on
    /// a loaded host (RCU stalls, a kworker soft-locked on the one vCPU, after `reboot(2)`):
    /// the agent had done its part, which is what these tests judge.
    pub fn powered_off(&self) -> bool {
        if self.has("reboot: Power down") {
            return true;
        }
        let requested = self
            .console
            .lines()
            .any(|l| l.starts_with("cvm-agent: [") && l.trim_end().ends_with(": powering off"));
        let hung = self
            .console
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("boot.sh: power-off hung in the guest kernel"));
        requested && hung
    }

    pub fn show(&self) -> String {
        format!("exit code {}\n--- console ---\n{}", self.code, self.console)
    }

    /// Exactly one error line, and it starts with `prefix`; no result line; the boot failed.
    pub fn assert_one_error(&self, prefix: &str) {
        assert_ne!(self.code, 0, "{}", self.show());
        let errors = self.errors();
        assert_eq!(errors.len(), 1, "{}", self.show());
        assert!(
            errors[0].starts_with(prefix),
            "expected an error line starting with {prefix:?}\n{}",
            self.show()
        );
        assert!(self.result().is_none(), "{}", self.show());
    }
}

/// Run a host tool; its stdout, or a panic with its stderr.
pub fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn spawn(append: &str, extra: &[String], console: &Path, timeout: u64) -> Child {
    Command::new(repo().join("qemu/boot.sh"))
        .arg("--kernel")
        .arg(input("CVM_KERNEL", ".cache/kernel/vmlinuz"))
        .arg("--initrd")
        .arg(input("CVM_INITRD", "out/initrd.img"))
        .arg("--append")
        .arg(append)
        .arg("--console")
        .arg(console)
        .args(["--timeout", &timeout.to_string(), "--quiet"])
        .args(extra)
        // The guestfwd relay: this build's cvmctl.
        .env("CVMCTL", cvmctl())
        .stdin(Stdio::null())
        .spawn()
        .expect("run qemu/boot.sh")
}

pub fn boot(append: &str, extra: &[String]) -> Boot {
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console.log");
    let status = spawn(append, extra, &console, 180).wait().unwrap();
    Boot {
        code: status.code().unwrap_or(-1),
        console: std::fs::read_to_string(&console).unwrap_or_default(),
    }
}

/// Waits until `needle` is in the console file.
pub fn wait_for(console: &Path, needle: &str, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if std::fs::read_to_string(console).is_ok_and(|c| c.contains(needle)) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    false
}

/// A debug boot (it stays up): runs until `needle` is on the console, then powers the VM off
/// from the debug shell (`--serial-socket`). `None` in the Boot's code when the needle never
/// came.
pub fn boot_debug_until(append: &str, extra: &[String], needle: &str) -> (bool, Boot) {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console.log");
    let socket = dir.path().join("serial.sock");
    let mut args = extra.to_vec();
    args.extend(["--serial-socket".into(), socket.display().to_string()]);
    let mut child = spawn(append, &args, &console, 180);
    let seen = wait_for(&console, needle, std::time::Duration::from_secs(150));
    let shell = seen
        && wait_for(
            &console,
            "debug shell on the console",
            std::time::Duration::from_secs(30),
        );
    // The connection stays open until QEMU is gone, so the typed line is read. busybox's line
    // editor first asks the terminal for the cursor position and eats what answers it, so the
    // line is typed again until the VM is gone.
    let mut serial = shell
        .then(|| std::os::unix::net::UnixStream::connect(&socket).ok())
        .flatten();
    for _ in 0..10 {
        let Some(s) = serial.as_mut() else { break };
        let _ = s.write_all(b"poweroff -f\n");
        std::thread::sleep(std::time::Duration::from_secs(3));
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
    }
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    (
        seen,
        Boot {
            code: status.code().unwrap_or(-1),
            console: std::fs::read_to_string(&console).unwrap_or_default(),
        },
    )
}

/// A verified boot with extra command-line words.
pub fn boot_verified(extra_append: &str) -> Boot {
    let (hash, disk) = verified_root();
    boot(&format!("{hash} {extra_append}"), &disk)
}

/// What qemu/boot.sh puts before `--append` on a command line it measures into a UKI.
pub const CMDLINE_PREFIX: &str = "console=ttyS0 panic=-1 loglevel=4";

/// A UKI (`cvmctl uki`) at `dir/name` of `kernel` and `initrd` with the command line
/// qemu/boot.sh would give `append`, so a test knows exactly what is measured.
pub fn uki(
    dir: &Path,
    name: &str,
    kernel: &Path,
    initrd: &Path,
    os_release: Option<&Path>,
    append: &str,
) -> PathBuf {
    let out = dir.join(name);
    let mut cmd = Command::new(cvmctl());
    cmd.arg("uki")
        .arg("--kernel")
        .arg(kernel)
        .arg("--initrd")
        .arg(initrd)
        .arg("--cmdline")
        .arg(format!("{CMDLINE_PREFIX} {append}"))
        .arg("-o")
        .arg(&out);
    if let Some(o) = os_release {
        cmd.arg("--os-release").arg(o);
    }
    run_ok(&mut cmd);
    out
}

#[cfg(test)]
mod tests {
    use super::Boot;

    fn boot(console: &str) -> Boot {
        Boot {
            code: 0,
            console: console.into(),
        }
    }

    #[test]
    fn powered_off_takes_the_kernel_or_the_agent_request_plus_boot_sh_marker() {
        let request = "cvm-agent: [   4.384] end: powering off\n";
        let marker = "boot.sh: power-off hung in the guest kernel; QEMU stopped 30s after the agent's request\n";
        assert!(boot(&format!("{request}[    4.5] reboot: Power down\n")).powered_off());
        assert!(boot(&format!("{request}[   25.4] rcu: INFO: stall\n{marker}")).powered_off());
        // The marker without the agent's request, or not last (the guest wrote after it),
        // or a request without the marker: no power-off.
        assert!(!boot(marker).powered_off());
        assert!(!boot(&format!("{request}{marker}cvm-agent: [ 60.0] later\n")).powered_off());
        assert!(!boot(request).powered_off());
        assert!(!boot(&format!("workload: powering off the lights\n{marker}")).powered_off());
    }
}
