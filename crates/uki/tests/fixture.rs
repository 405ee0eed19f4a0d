//! The captured boots in `tests/fixtures` (see PROVENANCE.md there) without QEMU: our log
//! parser and replay against the PCRs the guest's TPM reported and against tpm2_eventlog, and
//! the prediction for the rebuilt test UKI against the log, event by event.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use cvm_uki::eventlog::{EV_EFI_ACTION, EV_EFI_BOOT_SERVICES_APPLICATION, EventLog};
use cvm_uki::predict::{self, BootPath, Mismatch, first_mismatch};
use cvm_uki::{HashAlg, Uki, UkiInputs, boot_pcrs};

const BOOTS: [(&str, BootPath); 2] = [
    ("ovmf-qemu-kernel", BootPath::QemuKernel),
    ("ovmf-boot-option", BootPath::BootOption),
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load(tag: &str) -> (EventLog, BTreeMap<HashAlg, Vec<Vec<u8>>>) {
    let log = EventLog::parse(&read(&fixture(&format!("{tag}.eventlog.bin")))).unwrap();
    let text = String::from_utf8(read(&fixture(&format!("{tag}.pcrs.txt")))).unwrap();
    let mut pcrs: BTreeMap<HashAlg, Vec<Vec<u8>>> = BTreeMap::new();
    for (bank, n, v) in parse_pcr_lines(&text) {
        let e = pcrs.entry(HashAlg::from_name(&bank).unwrap()).or_default();
        assert_eq!(e.len(), n as usize);
        e.push(v);
    }
    (log, pcrs)
}

#[test]
fn replay_of_the_captured_logs_gives_the_tpms_pcrs() {
    for (tag, _) in BOOTS {
        let (log, pcrs) = load(tag);
        assert_eq!(
            pcrs.keys().copied().collect::<Vec<_>>(),
            HashAlg::ALL,
            "swtpm 0.7 / libtpms 0.9 gives OVMF all four banks"
        );
        assert_eq!(log.banks(), HashAlg::ALL);
        for (alg, values) in &pcrs {
            let replay = log.replay(*alg).unwrap();
            for (n, v) in values.iter().enumerate() {
                if n != 10 {
                    // PCR 10 is IMA's, from the kernel's own log.
                    assert_eq!(&replay[n], v, "{tag} {alg} PCR {n}");
                }
            }
        }
    }
}

#[test]
fn replay_agrees_with_tpm2_eventlog() {
    for (tag, _) in BOOTS {
        let (log, _) = load(tag);
        let out = run(Command::new("tpm2_eventlog").arg(fixture(&format!("{tag}.eventlog.bin"))));
        let pcrs = &out[out.rfind("pcrs:").unwrap()..];
        let mut bank = None;
        let mut checked = 0;
        for line in pcrs.lines().skip(1) {
            let t = line.trim();
            if let Some(b) = t.strip_suffix(':') {
                bank = HashAlg::from_name(b);
            } else if let (Some(b), Some((n, v))) = (bank, t.split_once(':')) {
                let n: usize = n.trim().parse().unwrap();
                let v = unhex(v.trim().trim_start_matches("0x")).unwrap();
                assert_eq!(log.replay(b).unwrap()[n], v, "{tag} {b} PCR {n}");
                checked += 1;
            }
        }
        assert!(
            checked >= 4 * 10,
            "tpm2_eventlog listed {checked} PCRs:\n{out}"
        );
    }
}

/// The test UKI as it was booted; fails (never skips) when the host's inputs differ from the
/// ones recorded with the fixture.
fn booted_uki(tag: &str) -> (TestInputs, Uki) {
    let t = TestInputs::load();
    let uki = t.build();
    let recorded = String::from_utf8(read(&fixture(&format!("{tag}.inputs.txt")))).unwrap();
    let now = inputs_manifest(&t, &uki.bytes);
    assert_eq!(
        now, recorded,
        "the inputs on this host differ from the ones the fixture was captured with; \
         re-capture it as tests/fixtures/PROVENANCE.md says"
    );
    (t, uki)
}

#[test]
fn prediction_matches_the_captured_logs_event_by_event() {
    for (tag, path) in BOOTS {
        let (log, pcrs) = load(tag);
        let (_, uki) = booted_uki(tag);
        for alg in HashAlg::ALL {
            let p = boot_pcrs(&uki.bytes, alg, path).unwrap();
            assert_eq!(first_mismatch(&p.events, &log, alg), None, "{tag} {alg}");
            for pcr in predict::PREDICTED_PCRS {
                assert_eq!(
                    p.get(pcr).unwrap(),
                    pcrs[&alg][pcr as usize].as_slice(),
                    "{tag} {alg} PCR {pcr}"
                );
            }
        }
    }
}

#[test]
fn a_wrong_prediction_names_the_first_differing_event() {
    let (log, _) = load("ovmf-qemu-kernel");
    let (t, uki) = booted_uki("ovmf-qemu-kernel");
    let bank = HashAlg::Sha256;

    // The other boot path: the first event of PCR 4 differs.
    let other = boot_pcrs(&uki.bytes, bank, BootPath::BootOption).unwrap();
    match first_mismatch(&other.events, &log, bank) {
        Some(Mismatch::Differs {
            position: 0,
            expected,
            actual,
        }) => {
            assert_eq!(expected.event_type, EV_EFI_ACTION);
            assert!(
                actual.contains("EV_EFI_BOOT_SERVICES_APPLICATION"),
                "{actual}"
            );
        }
        m => panic!("unexpected {m:?}"),
    }

    // Another command line: PCRs 4 and 11 differ from the .cmdline content event on; the
    // message names it.
    let changed = Uki::build(&UkiInputs {
        cmdline: Some(b"console=ttyS0 quiet"),
        ..t.inputs()
    })
    .unwrap();
    let p = boot_pcrs(&changed.bytes, bank, BootPath::QemuKernel).unwrap();
    let m = first_mismatch(&p.events, &log, bank).expect("a mismatch");
    match &m {
        Mismatch::Differs {
            position, expected, ..
        } => {
            // The UKI's own Authenticode digest differs first.
            assert_eq!(*position, 0);
            assert_eq!(expected.event_type, EV_EFI_BOOT_SERVICES_APPLICATION);
        }
        m => panic!("unexpected {m:?}"),
    }
    // Past the UKI's own digest, the first PCR 11 difference is the .cmdline content.
    let p11 = predict::pcr11_events(&changed.bytes, bank).unwrap();
    let log11: Vec<_> = log.events.iter().filter(|e| e.pcr == 11).collect();
    let first = p11
        .iter()
        .zip(&log11)
        .position(|(e, l)| l.digest(bank) != Some(e.digest.as_slice()))
        .unwrap();
    assert_eq!(p11[first].what, "section .cmdline (19 bytes)");
    assert!(
        m.to_string()
            .contains("PCR 4 EV_EFI_BOOT_SERVICES_APPLICATION"),
        "{m}"
    );

    // A log that ends early: the missing event is named.
    let mut short = log.clone();
    short.events.retain(|e| e.pcr != 9);
    let p = boot_pcrs(&uki.bytes, bank, BootPath::QemuKernel).unwrap();
    match first_mismatch(&p.events, &short, bank) {
        Some(Mismatch::Missing { expected, .. }) => assert_eq!(expected.pcr, 9),
        m => panic!("unexpected {m:?}"),
    }
}
