//! Running the workload with youki's `libcontainer`: write the bundle, create the container
//! (namespaces, cgroup, mounts, pivot into the unpacked root), start it, forward its output to
//! the console line by line, and wait for it as PID 1 — its exit status becomes the result.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

pub const CONTAINER_ID: &str = "workload";
/// libcontainer's state (one directory per container).
const STATE_ROOT: &str = "/run/cvm-agent/containers";
/// The longest console line a workload gets; the rest of a longer line follows on the next.
const MAX_LINE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot write the bundle {path}")]
    Bundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the output pipe")]
    Pipe(#[source] nix::Error),
    #[error("cannot duplicate the output pipe")]
    Dup(#[source] std::io::Error),
    #[error("cannot open /dev/null for the workload")]
    DevNull(#[source] std::io::Error),
    #[error("cannot create the container")]
    Create(#[source] libcontainer::error::LibcontainerError),
    #[error("cannot start the container")]
    Start(#[source] libcontainer::error::LibcontainerError),
    #[error("the container has no process id after start")]
    NoPid,
    #[error(transparent)]
    Dev(#[from] super::dev::DevError),
}

/// A started workload.
pub struct Running {
    pub pid: Pid,
    container: Container,
    forwarder: Option<JoinHandle<u64>>,
}

/// How the workload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(Signal),
}

impl Exit {
    pub fn from_status(status: WaitStatus) -> Option<Exit> {
        match status {
            WaitStatus::Exited(_, code) => Some(Exit::Code(code)),
            WaitStatus::Signaled(_, sig, _) => Some(Exit::Signal(sig)),
            _ => None,
        }
    }

    /// The result line's `exit_code`: the code, or minus the signal number (boot.sh turns that
    /// into 128+N, the shell's convention).
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => -(s as i32),
        }
    }
}

/// PID 1 blocks the signals it reads from its signalfd, and a blocked mask survives exec; this
/// executor clears it in the container's init right before exec, so the workload gets SIGTERM,
/// SIGCHLD and friends like any process (PID 1 itself never has a window without them).
#[derive(Clone)]
struct UnblockingExecutor;

impl Executor for UnblockingExecutor {
    fn exec(&self, spec: &oci_spec::runtime::Spec) -> Result<(), ExecutorError> {
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
            .map_err(|e| ExecutorError::Other(format!("cannot reset the signal mask: {e}")))?;
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &oci_spec::runtime::Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// Writes `bundle/config.json`, creates and starts the container. With `log_to_console`, its
/// stdout and stderr come to the console as `workload: <line>`; otherwise they go to /dev/null.
pub fn start(
    bundle: &Path,
    spec: &serde_json::Value,
    log_to_console: bool,
) -> Result<Running, RunError> {
    std::fs::create_dir_all(bundle).map_err(|source| RunError::Bundle {
        path: bundle.to_path_buf(),
        source,
    })?;
    let config = bundle.join("config.json");
    std::fs::write(&config, spec.to_string()).map_err(|source| RunError::Bundle {
        path: config.clone(),
        source,
    })?;
    let null_in: OwnedFd = std::fs::File::open("/dev/null")
        .map_err(RunError::DevNull)?
        .into();
    let (reader, out, err): (Option<OwnedFd>, OwnedFd, OwnedFd) = if log_to_console {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(RunError::Pipe)?;
        let w2 = w.try_clone().map_err(RunError::Dup)?;
        (Some(r), w, w2)
    } else {
        let open = || -> Result<OwnedFd, RunError> {
            Ok(std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")
                .map_err(RunError::DevNull)?
                .into())
        };
        (None, open()?, open()?)
    };
    // A container from an earlier attempt of this boot cannot exist: /run is fresh per boot.
    let mut container = ContainerBuilder::new(CONTAINER_ID.to_string(), SyscallType::Linux)
        .with_executor(UnblockingExecutor)
        .with_root_path(STATE_ROOT)
        .map_err(RunError::Create)?
        .with_stdin(null_in)
        .with_stdout(out)
        .with_stderr(err)
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(RunError::Create)?;
    let init = container.pid().ok_or(RunError::NoPid)?;
    if let Err(e) = super::dev::seal_dev(Pid::from_raw(init.as_raw())) {
        // The workload never starts: take its init and cgroup down with it.
        let _ = container.delete(true);
        return Err(e.into());
    }
    container.start().map_err(RunError::Start)?;
    let pid = Pid::from_raw(container.pid().ok_or(RunError::NoPid)?.as_raw());
    // Only now a thread: forking (inside build) in a multi-threaded process is what not to do.
    let forwarder = reader.map(|r| std::thread::spawn(move || forward(r)));
    Ok(Running {
        pid,
        container,
        forwarder,
    })
}

impl Running {
    /// After the workload's exit: let the forwarder print what is still in the pipe, and
    /// remove the container (its cgroup). Returns the lines forwarded.
    pub fn finish(mut self) -> u64 {
        let lines = self
            .forwarder
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or(0);
        if let Err(e) = self.container.delete(true) {
            tracing::debug!("container delete: {e}");
        }
        lines
    }
}

/// Copies the workload's output to the console, one `workload: ` line per line. The workload
/// is not trusted with the console: control characters are escaped, so it can neither erase
/// nor fake agent lines (which start at column 0 with `cvm-agent:`).
fn forward(reader: OwnedFd) -> u64 {
    let mut reader = BufReader::with_capacity(64 * 1024, std::fs::File::from(reader));
    let mut buf = Vec::with_capacity(MAX_LINE);
    let mut lines = 0;
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = console_safe(&buf);
                let mut console = std::io::stderr().lock();
                let _ = writeln!(console, "workload: {text}");
                lines += 1;
            }
        }
    }
    lines
}

/// The line without its newline, non-UTF-8 replaced and control characters (but tab) escaped.
pub fn console_safe(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_are_defanged() {
        assert_eq!(console_safe(b"hello\n"), "hello");
        assert_eq!(console_safe(b"crlf\r\n"), "crlf");
        assert_eq!(console_safe(b"a\tb"), "a\tb");
        assert_eq!(
            console_safe(b"\rcvm-agent: result {}\x1b[2K"),
            "\\rcvm-agent: result {}\\u{1b}[2K"
        );
        assert_eq!(console_safe(b"bad \xff utf8"), "bad \u{fffd} utf8");
    }

    #[test]
    fn exit_codes() {
        let pid = Pid::from_raw(7);
        assert_eq!(
            Exit::from_status(WaitStatus::Exited(pid, 7))
                .unwrap()
                .code(),
            7
        );
        let killed = Exit::from_status(WaitStatus::Signaled(pid, Signal::SIGKILL, false));
        assert_eq!(killed.unwrap().code(), -9);
        assert_eq!(Exit::from_status(WaitStatus::StillAlive), None);
    }
}
