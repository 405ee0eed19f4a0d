//! `tpm` evidence made by our provider from a real TPM (swtpm) is exactly what a Trustee-style
//! verifier accepts: the fixture's JSON shape, a quote signed by the AK over the reported PCRs,
//! with the first 32 bytes of the runtime-data digest as nonce (Trustee v0.16 and later). The
//! fixture `tpm_evidence.json` gives the JSON shape only: its quote carries the old 64-byte
//! padded nonce, which today's Trustee refuses.

use cvm_testkit as common;

use common::swtpm::start;
use cvm_agent::evidence;
use cvm_agent::tee::detect::TeeKind;
use cvm_agent::tee::tpm::TpmEvidence;
use sha2::Digest;

#[test]
fn tpm_evidence_has_the_fixture_shape_and_verifies_independently() {
    let (_swtpm, mut tpm) = start();
    let digest = sha2::Sha384::digest(b"runtime data");
    let root = tempfile::tempdir().unwrap();
    let value =
        evidence::collect(TeeKind::Tpm, root.path(), Some(&mut tpm), &digest, None).unwrap();

    // Same keys as the real evidence from the CoCo attester (tests/fixtures/tpm).
    let fixture: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/tpm/tpm_evidence.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&value), keys(&fixture));
    assert_eq!(keys(&value["tpm_quote"]), keys(&fixture["tpm_quote"]));

    // The verifier side, from the JSON alone.
    let parsed = TpmEvidence::from_json(value.to_string().as_bytes()).unwrap();
    let attest = parsed.verify().unwrap();
    assert_eq!(attest.extra_data, digest[..32]);
    assert_eq!(attest.extra_data.len(), 32, "not the old 64-byte form");

    // Tampering with a reported PCR breaks it.
    let mut bad = value.clone();
    bad["tpm_quote"]["pcrs"][15] = serde_json::Value::from("11".repeat(32));
    assert!(
        TpmEvidence::from_json(bad.to_string().as_bytes())
            .unwrap()
            .verify()
            .is_err()
    );
}

#[test]
fn platform_detection_on_a_plain_vtpm_is_tpm() {
    let (_swtpm, mut tpm) = start();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("dev")).unwrap();
    std::fs::write(root.path().join("dev/tpmrm0"), b"").unwrap();
    let d = evidence::detect_platform(root.path(), Some(&mut tpm));
    assert_eq!(d.kind, Some(TeeKind::Tpm), "{}", d.reason);
    assert!(!d.reason.is_empty());
    // No Azure HCL report in swtpm's NV: not mistaken for an Azure CVM.
}

#[test]
fn azure_forms_without_the_host_services_are_refused_clearly() {
    let (_swtpm, mut tpm) = start();
    let root = tempfile::tempdir().unwrap();
    let err = evidence::collect(
        TeeKind::AzSnpVtpm,
        root.path(),
        Some(&mut tpm),
        &[0; 64],
        None,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "az-snp-vtpm evidence needs Azure's host services (VCEK, TD quote), which this boot has not"
    );
}
