//! A real swtpm on 127.0.0.1 for host tests of the TPM client and the evidence it makes.

use cvm_tpm::{TcpTransport, Tpm};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// A running swtpm, killed when dropped (also when the test panics).
pub struct Swtpm {
    pub child: Child,
    pub state: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Swtpm {
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("swtpm.log")).unwrap_or_default()
    }
}

fn find_swtpm() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("swtpm"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "swtpm is not installed (not in PATH nor /usr/bin): this test needs a real \
                 TPM 2.0 simulator; install the `swtpm` package (`make test` does)"
            )
        })
}

/// A port the kernel just handed out on 127.0.0.1. Another process could take it before
/// swtpm binds it; `start` retries with fresh ports when swtpm exits early.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

fn spawn(bin: &Path, data_port: u16, ctrl_port: u16) -> Swtpm {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, data_port));
    let state = tempfile::tempdir().expect("tempdir for swtpm state");
    let log = File::create(state.path().join("swtpm.log")).expect("swtpm log file");
    let child = Command::new(bin)
        .arg("socket")
        .arg("--tpm2")
        .arg("--server")
        .arg(format!("type=tcp,port={data_port},bindaddr=127.0.0.1"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={ctrl_port},bindaddr=127.0.0.1"))
        .arg("--tpmstate")
        .arg(format!("dir={}", state.path().display()))
        .arg("--flags")
        .arg("not-need-init,startup-clear")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log fd"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    Swtpm { child, state, addr }
}

/// Starts swtpm and connects to its data channel.
pub fn start() -> (Swtpm, Tpm<TcpTransport>) {
    let bin = find_swtpm();
    let mut last_log = String::new();
    for _ in 0..5 {
        let (data_port, ctrl_port) = (free_port(), free_port());
        if data_port == ctrl_port {
            continue;
        }
        let mut swtpm = spawn(&bin, data_port, ctrl_port);
        let addr = swtpm.addr;
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = swtpm.child.try_wait() {
                last_log = format!("swtpm exited with {status}: {}", swtpm.log());
                break;
            }
            if let Ok(transport) = TcpTransport::connect(addr) {
                return (swtpm, Tpm::new(transport));
            }
            sleep(Duration::from_millis(50));
        }
        if last_log.is_empty() {
            last_log = format!("swtpm did not listen on {addr}: {}", swtpm.log());
        }
    }
    panic!("could not start swtpm: {last_log}");
}
