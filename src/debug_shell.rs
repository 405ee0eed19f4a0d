//! The debug image's root shell on the console: what a debug VM offers once the workload ended
//! or a stage failed. Only in debug mode, which is measured as the first event, so a verifier
//! (and a KBS) can refuse a VM that has one.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;

use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::unistd::Pid;

/// The shell of the verified root (busybox sh in the test image).
pub const SHELL: &str = "/bin/sh";

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("no {SHELL} in this root")]
    Missing,
    #[error("cannot start {SHELL}")]
    Spawn(#[source] std::io::Error),
}

/// Starts an interactive shell on the console (fds 0-2) in a session of its own, with the
/// signals PID 1 blocks unblocked again.
pub fn spawn(root: &Path) -> Result<Pid, ShellError> {
    let shell = root.join(SHELL.trim_start_matches('/'));
    if !shell.exists() {
        return Err(ShellError::Missing);
    }
    let mut cmd = Command::new(&shell);
    cmd.arg("-i")
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .env("TERM", "vt100")
        .env("PS1", "cvm-debug# ");
    // SAFETY: between fork and exec the child only makes async-signal-safe system calls
    // (setsid, ioctl, sigprocmask) and touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            let _ = nix::unistd::setsid();
            // The console as controlling terminal gives the shell ctrl-c; without it (a
            // console that refuses) the shell still works, without job control.
            let _ = nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0);
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(ShellError::Spawn)?;
    Ok(Pid::from_raw(child.id() as i32))
}
