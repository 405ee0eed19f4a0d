//! The TPM client against a real TPM 2.0: swtpm's raw TCP data channel on 127.0.0.1.
//!
//! The unit tests prove the parser against canned bytes; this proves the bytes we send are what
//! a real TPM expects and that its real answers parse. A missing swtpm fails the test on
//! purpose: a silently skipped TPM test would let a broken client through CI.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use cvm_agent::tpm::{HashAlg, TcpTransport, Tpm};

/// A running swtpm, killed when dropped (also when the test panics).
struct Swtpm {
    child: Child,
    state: tempfile::TempDir,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Swtpm {
    fn log(&self) -> String {
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
    Swtpm { child, state }
}

/// Starts swtpm and connects to its data channel.
fn start() -> (Swtpm, Tpm<TcpTransport>) {
    let bin = find_swtpm();
    let mut last_log = String::new();
    for _ in 0..5 {
        let (data_port, ctrl_port) = (free_port(), free_port());
        if data_port == ctrl_port {
            continue;
        }
        let mut swtpm = spawn(&bin, data_port, ctrl_port);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, data_port));
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

#[test]
fn swtpm_pcr_banks_and_pcr_read() {
    let (swtpm, mut tpm) = start();

    // swtpm already ran Startup(CLEAR) itself, so this exercises the TPM_RC_INITIALIZE path.
    tpm.startup_clear()
        .expect("Startup(CLEAR) on a started TPM");
    tpm.startup_clear().expect("Startup(CLEAR) twice");

    let banks = tpm.pcr_banks().expect("GetCapability(TPM_CAP_PCRS)");
    let sha256 = banks
        .iter()
        .find(|bank| bank.alg == HashAlg::Sha256)
        .unwrap_or_else(|| panic!("no sha256 bank in {banks:?}"));
    assert!(sha256.is_active(), "{banks:?}");
    assert_eq!(sha256.pcrs, (0..=23).collect::<Vec<u32>>(), "{banks:?}");

    let all: Vec<u32> = (0..=23).collect();
    let values = tpm
        .pcr_read(HashAlg::Sha256, &all)
        .expect("PCR_Read sha256 0..=23");
    assert_eq!(
        values.iter().map(|(pcr, _)| *pcr).collect::<Vec<_>>(),
        all,
        "PCR indices"
    );
    for (pcr, digest) in &values {
        assert_eq!(digest.len(), 32, "sha256 PCR {pcr}");
    }
    assert_eq!(values[0].1, vec![0u8; 32], "PCR 0 of a fresh TPM");

    // Every active bank reads in full (more than 8 PCRs, so the continuation loop runs
    // against real partial answers), with digests of that bank's length.
    for bank in banks.iter().filter(|bank| bank.is_active()) {
        let values = tpm
            .pcr_read(bank.alg, &bank.pcrs)
            .unwrap_or_else(|e| panic!("PCR_Read {}: {e:?}", bank.alg));
        assert_eq!(values.len(), bank.pcrs.len(), "{}", bank.alg);
        assert!(
            values
                .iter()
                .all(|(_, digest)| digest.len() == bank.alg.digest_len()),
            "{}",
            bank.alg
        );
    }

    // The same values twice in a row: nothing extends behind our back.
    let again = tpm.pcr_read(HashAlg::Sha256, &all).expect("PCR_Read again");
    assert_eq!(again, values);

    drop(tpm);
    drop(swtpm);
}
