//! VM tests of stage 5: what the guest measures is what `cvmctl measure` predicts, the guest's
//! event log replays to the PCRs its TPM holds, and a quote taken in the guest with a host
//! nonce verifies on the host (`cvm.test_quote=`, a debug-mode hook that production refuses).

use cvm_testkit as common;

use base64::Engine as _;
use common::*;
use cvm_agent::measure::eventlog::EventLog;
use cvm_agent::tee::tpm::TpmEvidence;
use cvm_agent::tpm::HashAlg;
use cvm_agent::tpm::verify::{AkPublic, rsassa_signature, verify_quote};
use std::process::Command;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn initdata() -> std::path::PathBuf {
    repo().join("tests/fixtures/initdata-measure.toml")
}

fn boot_with_initdata(initdata: &std::path::Path, extra_append: &str) -> Boot {
    let (hash, mut extra) = verified_root();
    extra.extend([
        "--fw-cfg".into(),
        format!("opt/cvm/initdata={}", initdata.display()),
    ]);
    boot(
        &format!("{hash} cvm.initdata=fw_cfg {extra_append}"),
        &extra,
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `cvmctl measure` for the test image and init-data: (PCR 8, PCR 15) in the sha256 bank.
fn predicted() -> (String, String) {
    predicted_for("production")
}

fn predicted_for(mode: &str) -> (String, String) {
    let out = run_ok(
        Command::new(cvm_testkit::cvmctl())
            .arg("measure")
            .arg("--initdata")
            .arg(initdata())
            .args(["--roothash", &roothash(), "--mode", mode])
            .arg("--os-release")
            .arg(repo().join("rootfs/demo/etc/os-release")),
    );
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let pcr = |n: &str| v["pcrs"]["sha256"][n].as_str().unwrap().to_string();
    (pcr("8"), pcr("15"))
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn measurements_match_prediction_replay_and_a_host_verified_quote() {
    // A 48-byte "runtime-data digest": the `tpm` quote carries its first 32 bytes.
    let nonce: Vec<u8> = (0..48)
        .map(|i| (i * 37 + 11) as u8 ^ std::process::id() as u8)
        .collect();
    let (hash, mut extra) = verified_root();
    extra.extend([
        "--fw-cfg".into(),
        format!("opt/cvm/initdata={}", initdata().display()),
    ]);
    let (seen, b) = boot_debug_until(
        &format!(
            "{hash} cvm.initdata=fw_cfg cvm.mode=debug cvm.test_quote={}",
            hex(&nonce)
        ),
        &extra,
        "cvm-agent: test-evidence ",
    );
    assert!(seen, "{}", b.show());
    assert!(b.powered_off(), "{}", b.show());
    let line = b
        .lines("cvm-agent: test-evidence ")
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no evidence line\n{}", b.show()));
    let line: serde_json::Value =
        serde_json::from_str(line.trim_start_matches("cvm-agent: test-evidence ")).unwrap();
    assert_eq!(line["tee"], "tpm");
    let ev = &line["evidence"];
    let pcrs: Vec<Vec<u8>> = ev["tpm_quote"]["pcrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| cvm_agent::hex::decode(p.as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(pcrs.len(), 24);

    // The quote, as a KBS verifier sees it: signed by the AK, over these PCR values, with the
    // first 32 bytes of our digest as qualifying data (Trustee v0.16 and later).
    let parsed = TpmEvidence::from_json(ev.to_string().as_bytes()).unwrap();
    let attest = parsed
        .verify()
        .expect("the guest's quote verifies on the host");
    let padded = nonce[..32].to_vec();
    assert_eq!(attest.extra_data, padded);
    // Independently, through the TPM-side verifier with the raw signature.
    let spki = B64.decode(ev["ak_public"].as_str().unwrap()).unwrap();
    let message = B64
        .decode(ev["tpm_quote"]["message"].as_str().unwrap())
        .unwrap();
    let signature = rsassa_signature(
        &B64.decode(ev["tpm_quote"]["signature"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let values: Vec<(u32, Vec<u8>)> = pcrs
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, v)| (i as u32, v))
        .collect();
    verify_quote(
        &AkPublic::SpkiDer(&spki),
        &message,
        &signature,
        &padded,
        &values,
    )
    .unwrap();
    let mut wrong_nonce = padded.clone();
    wrong_nonce[0] ^= 1;
    assert!(
        verify_quote(
            &AkPublic::SpkiDer(&spki),
            &message,
            &signature,
            &wrong_nonce,
            &values
        )
        .is_err()
    );

    // The guest's event log replays to the quoted PCR 8 and PCR 15, and ends sealed.
    let log = EventLog::parse(&B64.decode(line["eventlog"].as_str().unwrap()).unwrap()).unwrap();
    assert!(log.has_separator());
    let replayed = log.replay(&[HashAlg::Sha256]).unwrap();
    assert_eq!(
        replayed.get(HashAlg::Sha256, 8).unwrap(),
        pcrs[8].as_slice()
    );
    assert_eq!(
        replayed.get(HashAlg::Sha256, 15).unwrap(),
        pcrs[15].as_slice()
    );

    // And `cvmctl measure` predicted both from the image, the mode and the init-data alone.
    let (p8, p15) = predicted_for("debug");
    assert_eq!(hex(&pcrs[8]), p8);
    assert_eq!(hex(&pcrs[15]), p15);
    // The console shows the sealed PCR 15 for comparison from outside.
    assert!(b.has(&format!("end: PCR 15 sha256={p15}")), "{}", b.show());
}

/// A host that adds the hook to a production boot's command line gets no evidence over report
/// data of its choice: the boot stops at the command line.
#[test]
#[ignore = "boots a VM: run through `make test`"]
fn production_refuses_the_test_quote_hook() {
    let b = boot_with_initdata(&initdata(), &format!("cvm.test_quote={}", "ab".repeat(32)));
    b.assert_one_error("cvm-agent: error: cmdline: ");
    assert!(
        b.errors()[0].contains("cvm.test_quote is a debug-mode test hook"),
        "{}",
        b.show()
    );
    assert!(!b.has("test-evidence"), "{}", b.show());
    assert!(b.powered_off(), "{}", b.show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn changed_init_data_changes_pcr8_only_where_expected() {
    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("initdata.toml");
    let text = std::fs::read_to_string(initdata()).unwrap();
    std::fs::write(&changed, text.replace("measure-fixture", "measure-fixturE")).unwrap();
    let b = boot_with_initdata(&changed, "");
    assert_eq!(b.code, 0, "{}", b.show());
    let (p8, _) = predicted();
    assert!(b.has("measure: PCR 8 sha256="), "{}", b.show());
    assert!(!b.has(&format!("PCR 8 sha256={p8}")), "{}", b.show());
}

#[test]
#[ignore = "boots a VM: run through `make test`"]
fn malformed_init_data_stops_the_boot() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("initdata.toml");
    std::fs::write(&bad, "version = \"0.1.0\"\nalgorithm = \"md5\"\n[data]\n").unwrap();
    let b = boot_with_initdata(&bad, "");
    b.assert_one_error("cvm-agent: error: measure: ");
    assert!(b.has("md5"), "{}", b.show());
    assert!(b.powered_off(), "{}", b.show());
}
