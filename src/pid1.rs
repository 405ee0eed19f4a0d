//! The duties of PID 1: reap every child and orphan, turn SIGTERM/SIGINT/ctrl-alt-del into an
//! orderly power-off, and never return (the kernel panics when init exits).
//!
//! Signals are blocked and read from a signalfd, so they are handled at well-defined points
//! between stages instead of interrupting a stage half-way. Children inherit the blocked mask;
//! whoever starts a child process must reset it there (see [`Pid1::child_sigmask`]).

use nix::sys::reboot::{RebootMode, reboot, set_cad_enabled};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::os::fd::AsFd;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Pid1Error {
    #[error("cannot block signals")]
    Mask(#[source] nix::Error),
    #[error("cannot create signalfd")]
    SignalFd(#[source] nix::Error),
    #[error("cannot disable ctrl-alt-del reboot")]
    Cad(#[source] nix::Error),
}

/// What a signal asks of the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGTERM, SIGINT (ctrl-alt-del once CAD is disabled), SIGPWR.
    PowerOff(Signal),
}

/// What ended a [`Pid1::wait_for`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildEvent {
    Exited(WaitStatus),
    PowerOff(Signal),
}

/// One reaped child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    pub pid: Pid,
    pub status: WaitStatus,
}

pub struct Pid1 {
    sigfd: SignalFd,
    handled: SigSet,
}

impl Pid1 {
    pub fn handled_signals() -> SigSet {
        let mut set = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGPWR,
            Signal::SIGHUP,
        ] {
            set.add(s);
        }
        set
    }

    /// Block the handled signals and read them from a signalfd. Ctrl-alt-del then arrives as
    /// SIGINT instead of an immediate hard reboot.
    pub fn init() -> Result<Self, Pid1Error> {
        let pid1 = Self::signals()?;
        set_cad_enabled(false).map_err(Pid1Error::Cad)?;
        Ok(pid1)
    }

    /// The signal half of [`Pid1::init`], without touching the machine's ctrl-alt-del setting
    /// (so host tests can run it).
    pub fn signals() -> Result<Self, Pid1Error> {
        let handled = Self::handled_signals();
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled), None).map_err(Pid1Error::Mask)?;
        let sigfd = SignalFd::with_flags(&handled, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(Pid1Error::SignalFd)?;
        Ok(Pid1 { sigfd, handled })
    }

    /// The signals a child must unblock before it execs.
    pub fn child_sigmask(&self) -> SigSet {
        self.handled
    }

    /// Reap every exited child without blocking.
    pub fn reap(&self) -> Vec<Reaped> {
        let mut out = Vec::new();
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        out.push(Reaped { pid, status });
                    }
                }
            }
        }
        out
    }

    /// Wait for `child` to end, reaping everything else that ends meanwhile. A power-off
    /// request ends the wait early; the child is still running then.
    pub fn wait_for(&mut self, child: Pid) -> ChildEvent {
        loop {
            let mut request = None;
            while let Ok(Some(info)) = self.sigfd.read_signal() {
                if let Ok(sig @ (Signal::SIGTERM | Signal::SIGINT | Signal::SIGPWR)) =
                    Signal::try_from(info.ssi_signo as i32)
                {
                    request.get_or_insert(sig);
                }
            }
            // Reaped before the request is honoured: a child that ended counts as ended.
            if let Some(done) = self.reap().into_iter().find(|r| r.pid == child) {
                return ChildEvent::Exited(done.status);
            }
            if let Some(sig) = request {
                return ChildEvent::PowerOff(sig);
            }
            let mut fds = [nix::poll::PollFd::new(
                self.sigfd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            // SIGCHLD is process-directed: a thread that does not block it takes it away from
            // the signalfd. PID 1 blocks it before any thread exists, but a periodic reap keeps
            // the wait correct even where that does not hold (host tests).
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16));
        }
    }

    /// Handle pending signals without waiting: reap, and report a power-off request.
    pub fn poll(&mut self) -> Option<Request> {
        self.drain()
    }

    /// Wait up to `timeout` (forever with None) for a signal, reaping as children exit.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Option<Request> {
        let ms: nix::poll::PollTimeout = match timeout {
            None => nix::poll::PollTimeout::NONE,
            Some(d) => nix::poll::PollTimeout::try_from(d).unwrap_or(nix::poll::PollTimeout::MAX),
        };
        let mut fds = [nix::poll::PollFd::new(
            self.sigfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, ms);
        self.drain()
    }

    fn drain(&mut self) -> Option<Request> {
        let mut request = None;
        while let Ok(Some(info)) = self.sigfd.read_signal() {
            if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                match sig {
                    Signal::SIGTERM | Signal::SIGINT | Signal::SIGPWR => {
                        request.get_or_insert(Request::PowerOff(sig));
                    }
                    // SIGCHLD: reaped below. SIGHUP: nothing to reload.
                    _ => {}
                }
            }
        }
        self.reap();
        request
    }
}

/// Flush filesystems and power the machine off. Never returns: if the kernel refuses, there is
/// nothing safe left to do but wait.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let _ = reboot(RebootMode::RB_POWER_OFF);
    halt_forever()
}

/// Flush filesystems and reboot (restart policies: measurements start over on the next boot).
pub fn reboot_now() -> ! {
    nix::unistd::sync();
    let _ = reboot(RebootMode::RB_AUTOBOOT);
    halt_forever()
}

/// Idle forever, still reaping orphans, for when power-off failed or cannot be reached.
pub fn halt_forever() -> ! {
    loop {
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
