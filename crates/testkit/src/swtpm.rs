//! A real swtpm on 127.0.0.1 for host tests of the TPM client and the evidence it makes: the
//! launcher of `cvm_tpm::swtpm` (the one `cvmctl tpm-ak` uses) on a fresh state directory.

use cvm_tpm::swtpm::Output;
use cvm_tpm::{TcpTransport, Tpm};
use std::net::SocketAddr;
use std::path::PathBuf;

/// A running swtpm, killed when dropped (also when the test panics).
pub struct Swtpm {
    // Held to be dropped, before `state`: swtpm is killed before its state directory goes.
    _process: cvm_tpm::swtpm::Swtpm,
    pub state: tempfile::TempDir,
    pub addr: SocketAddr,
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

/// Starts swtpm and connects to its data channel.
pub fn start() -> (Swtpm, Tpm<TcpTransport>) {
    let bin = find_swtpm();
    let state = tempfile::tempdir().expect("tempdir for swtpm state");
    let log = Output::File(state.path().join("swtpm.log"));
    let (process, tpm) = cvm_tpm::swtpm::Swtpm::start(&bin, state.path(), log)
        .unwrap_or_else(|e| panic!("could not start swtpm: {}", cvm_text::error_chain(&e)));
    let addr = process.addr();
    let swtpm = Swtpm {
        _process: process,
        state,
        addr,
    };
    (swtpm, tpm)
}
