//! swtpm, the TPM 2.0 simulator, serving a state directory on 127.0.0.1: the host's vTPM that
//! `cvmctl tpm-ak` provisions and the test harness's TPM. Host-only, behind the `swtpm`
//! feature, so the guest agent carries no process launcher it never uses.

use std::fs::File;
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{TcpTransport, Tpm};

/// How long swtpm gets to listen after it started.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Fresh port pairs tried when another process took one first.
const START_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum SwtpmError {
    #[error("cannot run swtpm (install the swtpm package)")]
    Spawn(#[source] std::io::Error),
    #[error("cannot create swtpm's log {path}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("swtpm did not start on {state}: {why}")]
    Start { state: PathBuf, why: String },
}

/// Where swtpm's messages go.
#[derive(Debug, Clone)]
pub enum Output {
    /// stderr into a pipe, read only when swtpm exits early to say why: a one-shot command
    /// leaves nothing behind in the state directory.
    Pipe,
    /// stdout and stderr into this file (made afresh on each start), which a test shows
    /// beside its failure while swtpm still runs.
    File(PathBuf),
}

/// A swtpm serving a state directory on 127.0.0.1, killed when dropped (also when a test
/// panics).
#[derive(Debug)]
pub struct Swtpm {
    child: Child,
    addr: SocketAddr,
    output: Output,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Swtpm {
    /// Starts `bin` (`swtpm`) on the existing directory `state`, with the flags the agent's
    /// vTPM has under QEMU (TPM2_Startup done), and connects to its data channel. Ports are
    /// the kernel's picks; another process can take one before swtpm binds it, so a start
    /// that fails is retried on fresh ones.
    pub fn start(
        bin: &Path,
        state: &Path,
        output: Output,
    ) -> Result<(Swtpm, Tpm<TcpTransport>), SwtpmError> {
        let mut last = String::from("no free port pair");
        for _ in 0..START_ATTEMPTS {
            let (Some(data), Some(ctrl)) = (free_port(), free_port()) else {
                continue;
            };
            if data == ctrl {
                continue;
            }
            let mut swtpm = Swtpm::spawn(bin, state, data, ctrl, output.clone())?;
            let deadline = Instant::now() + START_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(status)) = swtpm.child.try_wait() {
                    last = format!("swtpm exited with {status}: {}", swtpm.said());
                    break;
                }
                if let Ok(transport) = TcpTransport::connect(swtpm.addr) {
                    return Ok((swtpm, Tpm::new(transport)));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if Instant::now() >= deadline {
                last = format!(
                    "nothing listened on {} within {START_TIMEOUT:?}",
                    swtpm.addr
                );
                if let Output::File(_) = swtpm.output {
                    last = format!("{last}: {}", swtpm.said());
                }
            }
        }
        Err(SwtpmError::Start {
            state: state.to_path_buf(),
            why: last,
        })
    }

    /// The data channel, for a test that reconnects.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn spawn(
        bin: &Path,
        state: &Path,
        data: u16,
        ctrl: u16,
        output: Output,
    ) -> Result<Swtpm, SwtpmError> {
        let (stdout, stderr) = match &output {
            Output::Pipe => (Stdio::null(), Stdio::piped()),
            Output::File(path) => {
                let log = |source| SwtpmError::Log {
                    path: path.clone(),
                    source,
                };
                let file = File::create(path).map_err(log)?;
                (file.try_clone().map_err(log)?.into(), file.into())
            }
        };
        let child = Command::new(bin)
            .args(["socket", "--tpm2", "--server"])
            .arg(format!("type=tcp,port={data},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"))
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(SwtpmError::Spawn)?;
        Ok(Swtpm {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, data)),
            output,
        })
    }

    /// What swtpm wrote, trimmed. The pipe is read only after swtpm exited: before, reading
    /// it would wait for swtpm.
    fn said(&mut self) -> String {
        let mut text = String::new();
        match &self.output {
            Output::Pipe => {
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut text);
                }
            }
            Output::File(path) => text = std::fs::read_to_string(path).unwrap_or_default(),
        }
        text.trim().to_string()
    }
}

fn free_port() -> Option<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .ok()
}
