//! VM tests of the bootable core: boot the real static agent as PID 1 under QEMU (TCG) with
//! swtpm, and judge the console and how the VM ended.

use cvm_testkit as common;

use common::*;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn boot_smoke_runs_every_stage_and_powers_off() {
    let b = boot_verified("cvm.mode=production");
    assert_eq!(b.code, 0, "{}", b.show());
    let result = b
        .result()
        .unwrap_or_else(|| panic!("no result line\n{}", b.show()));
    assert_eq!(result["exit_code"], 0);
    assert_eq!(result["mode"], "production");
    for stage in ["early", "cmdline", "modules", "verity", "tpm"] {
        assert!(
            result["stages_ms"][stage].is_u64(),
            "stage {stage} missing from {result}"
        );
    }
    assert!(b.has("tpm: active PCR banks:"), "{}", b.show());
    assert!(b.has("sha256(24)"), "{}", b.show());
    // virtio-net is on the PCI bus, so coldplug must have loaded its driver.
    assert!(b.has("virtio_net"), "{}", b.show());
    assert!(b.lines("cvm-agent: error:").is_empty(), "{}", b.show());
    assert!(b.powered_off(), "{}", b.show());
    assert!(!b.has("Kernel panic"), "{}", b.show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn unknown_cvm_key_stops_with_one_error_line() {
    let b = boot("cvm.mode=debug cvm.bogus=1", &[]);
    assert_ne!(b.code, 0, "{}", b.show());
    let errors = b.lines("cvm-agent: error:");
    assert_eq!(
        errors,
        vec!["cvm-agent: error: cmdline: unknown option cvm.bogus (not a cvm-agent option)"],
        "{}",
        b.show()
    );
    assert!(b.result().is_none(), "{}", b.show());
    // A bad command line is not trusted to say debug: it fails closed with a power-off.
    assert!(b.powered_off(), "{}", b.show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn agent_panic_powers_off_instead_of_killing_init() {
    let b = boot("cvm.test_panic=modules", &[]);
    assert_ne!(b.code, 0, "{}", b.show());
    let errors = b.lines("cvm-agent: error:");
    assert_eq!(errors.len(), 1, "{}", b.show());
    assert!(
        errors[0].starts_with("cvm-agent: error: modules: panic: test panic requested"),
        "{}",
        b.show()
    );
    assert!(b.powered_off(), "{}", b.show());
    assert!(!b.has("Attempted to kill init"), "{}", b.show());
    assert!(!b.has("Kernel panic"), "{}", b.show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn production_without_a_tpm_refuses() {
    let (hash, mut extra) = verified_root();
    extra.push("--no-tpm".into());
    let b = boot(&format!("cvm.mode=production {hash}"), &extra);
    assert_ne!(b.code, 0, "{}", b.show());
    let errors = b.lines("cvm-agent: error:");
    assert_eq!(errors.len(), 1, "{}", b.show());
    assert!(
        errors[0].starts_with("cvm-agent: error: tpm: no TPM at /dev/tpmrm0"),
        "{}",
        b.show()
    );
    assert!(b.result().is_none(), "{}", b.show());
    assert!(b.powered_off(), "{}", b.show());
}

/// Debug mode stays up after the end (here: without a TPM, which debug tolerates), and
/// ctrl-alt-delete then reaches PID 1 as SIGINT and powers the VM off in order.
#[test]
#[ignore = "boots a VM: run through `make test`"]
fn debug_mode_stays_up_until_ctrl_alt_delete() {
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console.log");
    let monitor = dir.path().join("monitor.sock");
    let mut child = spawn(
        "cvm.mode=debug",
        &[
            "--no-tpm".into(),
            "--monitor".into(),
            monitor.to_str().unwrap().into(),
        ],
        &console,
        180,
    );
    let read = || std::fs::read_to_string(&console).unwrap_or_default();
    let started = Instant::now();
    while !read().contains("staying up") {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("VM ended ({status}) before staying up:\n{}", read());
        }
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "no 'staying up' line:\n{}",
            read()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // It must really stay up, not be on its way down.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "debug VM exited:\n{}",
        read()
    );
    assert!(!read().contains("reboot: Power down"), "{}", read());
    let mut mon = UnixStream::connect(&monitor).expect("connect to the QEMU monitor");
    mon.write_all(b"sendkey ctrl-alt-delete\n").unwrap();
    let status = child.wait().unwrap();
    let b = Boot {
        code: status.code().unwrap_or(-1),
        console: read(),
    };
    assert_eq!(b.code, 0, "{}", b.show());
    assert!(b.has("SIGINT: powering off"), "{}", b.show());
    assert!(b.has("tpm: warning: no TPM"), "{}", b.show());
    assert!(
        b.has("verity: warning: !!! debug mode without roothash="),
        "{}",
        b.show()
    );
    assert!(b.powered_off(), "{}", b.show());
}
