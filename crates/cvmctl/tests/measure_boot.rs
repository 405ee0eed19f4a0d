//! `cvmctl measure --uki`: the boot-chain PCRs 4, 9, 11 and 12 and their events, held to
//! - two real OVMF + swtpm boots of cvm-uki's test UKI (`crates/uki/tests/fixtures`, see its
//!   PROVENANCE.md): the same UKI rebuilt with `cvmctl uki` must predict every captured PCR
//!   value of these four PCRs in all four banks, on both boot paths, and its "boot" events must
//!   be the captured log's events, one for one;
//! - `systemd-measure calculate --phase=` (PCR 11, every bank) and `pesign -h` (the Authenticode
//!   digests of the UKI and of its kernel that PCR 4 gets);
//! - the rule that every input counts: one changed byte of the kernel, initrd, command line or
//!   os-release changes exactly the PCRs that measure it.

#[path = "../../uki/tests/common/mod.rs"]
mod uki_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cvm_uki::eventlog::{EV_NO_ACTION, EventLog};
use serde_json::Value;
use sha2::Digest as _;
use uki_common::{TEST_CMDLINE, TEST_OSREL, TestInputs, kernel_path, parse_pcr_lines};

const BANKS: [&str; 4] = ["sha1", "sha256", "sha384", "sha512"];
const BOOT_PCRS: [u32; 4] = [4, 9, 11, 12];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../uki/tests/fixtures")
        .join(name)
}

fn cvmctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cvmctl"))
}

fn ok(cmd: &mut Command) -> String {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is the tool installed?)"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// The files of one UKI's inputs.
struct Inputs {
    kernel: PathBuf,
    initrd: PathBuf,
    osrel: PathBuf,
    cmdline: Vec<u8>,
}

fn build_uki(dir: &Path, name: &str, i: &Inputs) -> PathBuf {
    use std::os::unix::ffi::OsStrExt as _;
    let out = dir.join(format!("{name}.efi"));
    ok(cvmctl()
        .arg("uki")
        .arg("--kernel")
        .arg(&i.kernel)
        .arg("--initrd")
        .arg(&i.initrd)
        .arg("--os-release")
        .arg(&i.osrel)
        .arg("--cmdline")
        .arg(std::ffi::OsStr::from_bytes(&i.cmdline))
        .arg("-o")
        .arg(&out));
    out
}

fn measure(uki: &Path, extra: &[&str]) -> Value {
    let out = ok(cvmctl()
        .arg("measure")
        .arg("--uki")
        .arg(uki)
        .args(["--banks", "sha1,sha256,sha384,sha512"])
        .args(extra));
    serde_json::from_str(&out).unwrap()
}

fn pcr(v: &Value, bank: &str, n: u32) -> String {
    v["pcrs"][bank][n.to_string()]
        .as_str()
        .unwrap_or_else(|| panic!("no {bank} PCR {n} in {v:#}"))
        .to_string()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The test UKI of cvm-uki's fixtures, rebuilt through `cvmctl uki`.
fn test_uki(dir: &Path) -> (PathBuf, TestInputs) {
    let t = TestInputs::load();
    let i = Inputs {
        kernel: kernel_path(),
        initrd: dir.join("initrd.cpio"),
        osrel: dir.join("os-release"),
        cmdline: TEST_CMDLINE.to_vec(),
    };
    std::fs::write(&i.initrd, &t.initrd).unwrap();
    std::fs::write(&i.osrel, TEST_OSREL).unwrap();
    (build_uki(dir, "test", &i), t)
}

#[test]
fn prediction_matches_the_captured_ovmf_boots() {
    let tmp = tempfile::tempdir().unwrap();
    let (uki, _) = test_uki(tmp.path());
    let bytes = std::fs::read(&uki).unwrap();
    let inputs = std::fs::read_to_string(fixture("ovmf-boot-option.inputs.txt")).unwrap();
    let want = inputs
        .lines()
        .find(|l| l.ends_with(" uki"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap();
    assert_eq!(
        hex(&sha2::Sha256::digest(&bytes)),
        want,
        "`cvmctl uki` must rebuild the fixtures' UKI (else the host's stub, kernel or busybox \
         differ from PROVENANCE.md's: re-capture)"
    );
    for (tag, path) in [("ovmf-boot-option", "disk"), ("ovmf-qemu-kernel", "kernel")] {
        let v = measure(&uki, &["--boot-path", path]);
        assert_eq!(v["boot"]["path"], path);
        assert_eq!(v["boot"]["uki_sha256"], want);
        let text = std::fs::read_to_string(fixture(&format!("{tag}.pcrs.txt"))).unwrap();
        let mut checked = 0;
        for (bank, n, value) in parse_pcr_lines(&text) {
            if BOOT_PCRS.contains(&n) {
                assert_eq!(pcr(&v, &bank, n), hex(&value), "{tag} {bank} PCR {n}");
                checked += 1;
            }
        }
        assert_eq!(checked, 16, "{tag}");
        // The agent's own PCRs are still there.
        assert!(v["pcrs"]["sha256"]["15"].is_string());

        // The listed events are the log's, one for one, in every bank.
        let log = EventLog::parse(&std::fs::read(fixture(&format!("{tag}.eventlog.bin"))).unwrap())
            .unwrap();
        let actual: Vec<_> = log
            .events
            .iter()
            .filter(|e| BOOT_PCRS.contains(&e.pcr) && e.event_type != EV_NO_ACTION)
            .collect();
        let events = v["boot"]["events"].as_array().unwrap();
        assert_eq!(events.len(), actual.len(), "{tag}");
        for (i, (want, got)) in events.iter().zip(&actual).enumerate() {
            assert_eq!(want["pcr"], got.pcr, "{tag} event {i}");
            assert_eq!(want["type_id"], got.event_type, "{tag} event {i}");
            assert!(want["type"].as_str().unwrap().starts_with("EV_"));
            assert!(!want["description"].as_str().unwrap().is_empty());
            for bank in BANKS {
                let alg = cvm_uki::HashAlg::from_name(bank).unwrap();
                assert_eq!(
                    want["digests"][bank].as_str().unwrap(),
                    hex(got.digest(alg).unwrap()),
                    "{tag} event {i} {bank}"
                );
            }
        }
    }
}

/// `pesign -h` of a PE file (`hash: <hex>`): its Authenticode SHA-256.
fn pesign(path: &Path) -> String {
    let out = ok(Command::new("pesign")
        .arg("-h")
        .arg("-d")
        .arg("sha256")
        .arg("-i")
        .arg(path));
    out.split_whitespace().last().unwrap().to_lowercase()
}

fn systemd_measure(i: &Inputs, bank: &str) -> String {
    let mut cmd = Command::new("/usr/lib/systemd/systemd-measure");
    let dir = i.initrd.parent().unwrap();
    let cmdline = dir.join("cmdline.txt");
    std::fs::write(&cmdline, &i.cmdline).unwrap();
    cmd.args(["calculate", "--phase="])
        .arg(format!("--bank={bank}"))
        .arg(format!("--linux={}", i.kernel.display()))
        .arg(format!("--osrel={}", i.osrel.display()))
        .arg(format!("--cmdline={}", cmdline.display()))
        .arg(format!("--initrd={}", i.initrd.display()));
    let out = ok(&mut cmd);
    let prefix = format!("11:{bank}=");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string()
}

#[test]
fn prediction_agrees_with_systemd_measure_and_pesign() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let i = Inputs {
        kernel: kernel_path(),
        initrd: dir.join("initrd"),
        osrel: dir.join("os-release"),
        cmdline: b"console=ttyS0 roothash=00 cvm.mode=debug".to_vec(),
    };
    std::fs::write(&i.initrd, b"an initrd of sorts").unwrap();
    std::fs::write(&i.osrel, b"ID=test\nIMAGE_ID=cvm-test\nIMAGE_VERSION=1\n").unwrap();
    let uki = build_uki(dir, "uki", &i);
    let v = measure(&uki, &[]);
    for bank in BANKS {
        assert_eq!(pcr(&v, bank, 11), systemd_measure(&i, bank), "{bank}");
        assert_eq!(pcr(&v, bank, 12), "00".repeat(v_len(bank)), "{bank}");
    }
    let events = v["boot"]["events"].as_array().unwrap();
    let apps: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "EV_EFI_BOOT_SERVICES_APPLICATION")
        .map(|e| e["digests"]["sha256"].as_str().unwrap())
        .collect();
    // The UKI (from the ESP), then the kernel systemd-stub loads from .linux.
    assert_eq!(apps, [pesign(&uki), pesign(&i.kernel)]);
    // The events replay to the PCRs printed, PCR by PCR.
    let mut pcrs: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for e in events {
        let n = e["pcr"].as_u64().unwrap();
        let d = e["digests"]["sha256"].as_str().unwrap();
        let d: Vec<u8> = (0..d.len())
            .step_by(2)
            .map(|k| u8::from_str_radix(&d[k..k + 2], 16).unwrap())
            .collect();
        let old = pcrs.entry(n).or_insert_with(|| vec![0; 32]);
        *old = sha2::Sha256::new()
            .chain_update(&old)
            .chain_update(&d)
            .finalize()
            .to_vec();
    }
    for n in [4u64, 9, 11] {
        assert_eq!(hex(&pcrs[&n]), pcr(&v, "sha256", n as u32), "PCR {n}");
    }
    // PCR 9: the command line as UTF-16 with its NUL, then the initrd.
    let utf16: Vec<u8> = "console=ttyS0 roothash=00 cvm.mode=debug\0"
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let pcr9 = [
        sha2::Sha256::digest(&utf16),
        sha2::Sha256::digest(b"an initrd of sorts"),
    ]
    .iter()
    .fold(vec![0u8; 32], |p, d| {
        sha2::Sha256::new()
            .chain_update(&p)
            .chain_update(d)
            .finalize()
            .to_vec()
    });
    assert_eq!(pcr(&v, "sha256", 9), hex(&pcr9));

    // The two boot paths differ in the order of PCR 4's events alone.
    let k = measure(&uki, &["--boot-path", "kernel"]);
    for bank in BANKS {
        assert_ne!(pcr(&k, bank, 4), pcr(&v, bank, 4));
        for n in [9, 11, 12] {
            assert_eq!(pcr(&k, bank, n), pcr(&v, bank, n));
        }
    }
}

fn v_len(bank: &str) -> usize {
    match bank {
        "sha1" => 20,
        "sha256" => 32,
        "sha384" => 48,
        _ => 64,
    }
}

#[test]
fn one_byte_of_any_input_changes_the_pcrs_that_measure_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base = Inputs {
        kernel: kernel_path(),
        initrd: dir.join("initrd"),
        osrel: dir.join("os-release"),
        cmdline: b"console=ttyS0 roothash=0011".to_vec(),
    };
    std::fs::write(&base.initrd, vec![0x5a; 4096]).unwrap();
    std::fs::write(&base.osrel, b"ID=test\nIMAGE_VERSION=1\n").unwrap();
    let before = measure(&build_uki(dir, "base", &base), &[]);

    let flip = |src: &Path, name: &str, at: fn(usize) -> usize| {
        let mut b = std::fs::read(src).unwrap();
        let k = at(b.len());
        b[k] ^= 0x01;
        let p = dir.join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    let cases: [(&str, Inputs, &[u32]); 4] = [
        (
            // In the middle of the compressed kernel, far from headers and the signature.
            "kernel",
            Inputs {
                kernel: flip(&base.kernel, "vmlinuz", |n| n / 2),
                ..clone(&base)
            },
            &[4, 11],
        ),
        (
            "initrd",
            Inputs {
                initrd: flip(&base.initrd, "initrd2", |n| n - 1),
                ..clone(&base)
            },
            &[4, 9, 11],
        ),
        (
            "cmdline",
            Inputs {
                cmdline: b"console=ttyS0 roothash=0012".to_vec(),
                ..clone(&base)
            },
            &[4, 9, 11],
        ),
        (
            "os-release",
            Inputs {
                osrel: flip(&base.osrel, "os-release2", |n| n - 2),
                ..clone(&base)
            },
            &[4, 11],
        ),
    ];
    for (what, inputs, changed) in cases {
        let after = measure(&build_uki(dir, what, &inputs), &[]);
        for bank in BANKS {
            for n in BOOT_PCRS {
                let differs = pcr(&before, bank, n) != pcr(&after, bank, n);
                assert_eq!(
                    differs,
                    changed.contains(&n),
                    "one byte of the {what}: {bank} PCR {n}"
                );
            }
        }
    }
}

fn clone(i: &Inputs) -> Inputs {
    Inputs {
        kernel: i.kernel.clone(),
        initrd: i.initrd.clone(),
        osrel: i.osrel.clone(),
        cmdline: i.cmdline.clone(),
    }
}

#[test]
fn usage_errors() {
    let run = |args: &[&str]| {
        let o = cvmctl().arg("measure").args(args).output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // --boot-path needs --uki.
    let (ok, err) = run(&["--boot-path", "kernel"]);
    assert!(!ok && err.contains("--uki"), "{err}");
    let (ok, err) = run(&["--uki", "/nonexistent/uki.efi"]);
    assert!(
        !ok && err.contains("cannot read the UKI /nonexistent/uki.efi"),
        "{err}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("x.efi");
    std::fs::write(&p, b"MZ").unwrap();
    let (ok, err) = run(&["--uki", p.to_str().unwrap()]);
    assert!(
        !ok && err.contains("cannot predict the boot of the UKI"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let (ok, err) = run(&["--uki", kernel_path().to_str().unwrap()]);
    assert!(!ok && err.contains("no .linux section"), "{err}");
}
