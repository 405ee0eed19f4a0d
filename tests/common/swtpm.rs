//! A real swtpm on 127.0.0.1 for host tests of the TPM client and the evidence it makes: the
//! agent's own host-side launcher ([`cvm_agent::swtpm::start`], which `cvmctl tpm-ak` uses) on
//! a fresh state directory.

use cvm_agent::tpm::{TcpTransport, Tpm};
use std::net::SocketAddr;

/// A running swtpm, killed when dropped (also when the test panics), and its state.
pub struct Swtpm {
    pub addr: SocketAddr,
    _running: cvm_agent::swtpm::Swtpm,
    _state: tempfile::TempDir,
}

/// Starts swtpm on a fresh state and connects to its data channel.
pub fn start() -> (Swtpm, Tpm<TcpTransport>) {
    let state = tempfile::tempdir().expect("tempdir for swtpm state");
    let (running, tpm) = cvm_agent::swtpm::start(state.path()).unwrap_or_else(|e| {
        panic!(
            "{} (this test needs a real TPM 2.0 simulator: the `swtpm` package, which `make \
             test` installs)",
            cvm_agent::stage::error_chain(&e)
        )
    });
    let swtpm = Swtpm {
        addr: running.addr,
        _running: running,
        _state: state,
    };
    (swtpm, tpm)
}
