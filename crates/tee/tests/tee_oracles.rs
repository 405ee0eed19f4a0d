//! Our SNP and TDX parsers and verifiers against independent implementations, on the real
//! fixtures: virtee's `sev` (features `snp` + `crypto_nossl`: pure-Rust p384/rsa, no OpenSSL)
//! and Phala's `dcap-qvl` (quote parsing; its verification needs Intel PCS collateral, which
//! the fixtures do not include).

use std::path::PathBuf;

use cvm_tee::snp::{self, AttestationReport, EndorsementKey};
use cvm_tee::tdx;
use sev::certs::snp::{Certificate, Chain, Verifiable, builtin, ca};
use sev::parser::ByteParser;

fn fx(p: &str) -> Vec<u8> {
    let path: PathBuf = [
        concat!(env!("CARGO_MANIFEST_DIR"), "/../.."),
        "tests/fixtures",
        p,
    ]
    .iter()
    .collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ours_pem(name: &str) -> Vec<u8> {
    let path: PathBuf = [
        concat!(env!("CARGO_MANIFEST_DIR"), "/../.."),
        "crates/tee/src/certs",
        name,
    ]
    .iter()
    .collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// sev's chain for a VCEK: its own built-in ARK/ASK of whichever product verifies.
fn sev_vcek_chain(vcek_der: &[u8]) -> Option<(&'static str, Chain)> {
    type Load = fn() -> std::io::Result<Certificate>;
    let products: [(&str, Load, Load); 3] = [
        ("Milan", builtin::milan::ark, builtin::milan::ask),
        ("Genoa", builtin::genoa::ark, builtin::genoa::ask),
        ("Turin", builtin::turin::ark, builtin::turin::ask),
    ];
    products.into_iter().find_map(|(name, ark, ask)| {
        let chain = Chain {
            ca: ca::Chain {
                ark: ark().ok()?,
                ask: ask().ok()?,
            },
            vek: Certificate::from_der(vcek_der).ok()?,
        };
        let verified = (&chain).verify().is_ok();
        verified.then_some((name, chain))
    })
}

fn sev_report(raw: &[u8]) -> sev::firmware::guest::AttestationReport {
    sev::firmware::guest::AttestationReport::from_bytes(raw).expect("sev parses the report")
}

fn assert_same_fields(ours: &AttestationReport, theirs: &sev::firmware::guest::AttestationReport) {
    assert_eq!(ours.version, theirs.version);
    assert_eq!(ours.measurement, theirs.measurement);
    assert_eq!(ours.host_data, theirs.host_data);
    assert_eq!(ours.report_data, theirs.report_data);
    assert_eq!(ours.chip_id, theirs.chip_id);
    assert_eq!(ours.vmpl, theirs.vmpl);
    assert_eq!(ours.policy.0, theirs.policy.0);
    assert_eq!(ours.family_id, theirs.family_id);
    assert_eq!(ours.image_id, theirs.image_id);
    assert_eq!(ours.id_key_digest, theirs.id_key_digest);
    assert_eq!(ours.report_id, theirs.report_id);
    assert_eq!(&ours.signature_r, theirs.signature.r());
    assert_eq!(&ours.signature_s, theirs.signature.s());
}

#[test]
fn snp_vcek_report_fields_chain_and_signature_agree_with_sev() {
    let raw = fx("snp/test-report.bin");
    let vcek = fx("snp/test-vcek.der");
    let ours = AttestationReport::parse(&raw).unwrap();
    let theirs = sev_report(&raw);
    assert_same_fields(&ours, &theirs);

    let ours_vek = EndorsementKey::from_der(&vcek).unwrap();
    snp::verify_report_builtin(&ours, &ours_vek).unwrap();
    let (product, chain) = sev_vcek_chain(&vcek).expect("sev verifies the VCEK chain");
    assert_eq!(product, ours_vek.product.name());
    (&chain, &theirs).verify().expect("sev verifies the report");

    // A changed MEASUREMENT: both refuse.
    let mut bad = raw.clone();
    bad[0x90] ^= 1;
    assert!(
        snp::verify_report_builtin(&AttestationReport::parse(&bad).unwrap(), &ours_vek).is_err()
    );
    assert!((&chain, &sev_report(&bad)).verify().is_err());
}

#[test]
fn snp_vlek_report_agrees_with_sev() {
    let raw = fx("snp/test-vlek-report.bin");
    let vlek = fx("snp/test-vlek.der");
    let ours = AttestationReport::parse(&raw).unwrap();
    let theirs = sev_report(&raw);
    assert_same_fields(&ours, &theirs);
    let ours_vek = EndorsementKey::from_der(&vlek).unwrap();
    snp::verify_report_builtin(&ours, &ours_vek).unwrap();
    // sev has no built-in ASVK: give it the one we ship (AMD's, see src/tee/certs/README.md).
    let chain = Chain::from_pem(
        &ours_pem("amd-milan-ark.pem"),
        &ours_pem("amd-milan-asvk.pem"),
        &Certificate::from_der(&vlek).unwrap().to_pem().unwrap(),
    )
    .unwrap();
    (&chain).verify().expect("sev verifies ARK → ASVK → VLEK");
    (&chain, &theirs)
        .verify()
        .expect("sev verifies the VLEK report");
}

/// The SNP signature's R and S are 72-byte little-endian fields of which a P-384 scalar uses
/// the first 48 bytes. `sev` 8.0 reads only those 48 bytes (`take(48)` in its
/// `TryFrom<&Signature> for p384::ecdsa::Signature`) and hashes bytes 0..0x2A0, so a report
/// with a flipped byte in R's unused upper 24 bytes still verifies there: the same signature
/// has many encodings, and anything keyed on the report bytes (a replay cache, a report
/// digest) can be fooled. Ours requires the padding to be zero and refuses.
#[test]
fn snp_signature_padding_regression() {
    let raw = fx("snp/test-report.bin");
    let vcek = fx("snp/test-vcek.der");
    let ours_vek = EndorsementKey::from_der(&vcek).unwrap();
    let (_, chain) = sev_vcek_chain(&vcek).unwrap();
    for offset in [0x2A0 + 48, 0x2A0 + 60, 0x2A0 + 71, 0x2A0 + 72 + 48] {
        let mut flipped = raw.clone();
        flipped[offset] ^= 0x80;
        let ours = AttestationReport::parse(&flipped)
            .and_then(|r| snp::verify_report_builtin(&r, &ours_vek));
        assert!(
            ours.is_err(),
            "ours must refuse a non-zero signature padding byte at {offset:#x}"
        );
        // What sev does (8.0.0, pinned in Cargo.lock): accepts. If a later version refuses,
        // this assertion fails and the doc comment above is to be updated.
        assert!(
            (&chain, &sev_report(&flipped)).verify().is_ok(),
            "sev now refuses padding at {offset:#x}: update the comment"
        );
    }
}

#[test]
fn tdx_quote_fields_agree_with_dcap_qvl() {
    for name in ["tdx/tdx_quote_4.dat", "tdx/tdx_quote_5.dat"] {
        let raw = fx(name);
        let ours = tdx::Quote::parse(&raw).unwrap();
        ours.verify().unwrap();
        let theirs = dcap_qvl::quote::Quote::parse(&raw).expect("dcap-qvl parses the quote");
        assert_eq!(ours.header.version, theirs.header.version, "{name}");
        let td = theirs
            .report
            .as_td10()
            .unwrap_or_else(|| panic!("{name}: not a TD report"));
        let body = &ours.body;
        assert_eq!(body.mr_td, td.mr_td, "{name}: MRTD");
        assert_eq!(body.mr_config_id, td.mr_config_id, "{name}: MRCONFIGID");
        assert_eq!(body.mr_owner, td.mr_owner, "{name}: MROWNER");
        assert_eq!(body.mr_seam, td.mr_seam, "{name}: MRSEAM");
        assert_eq!(body.report_data, td.report_data, "{name}: REPORTDATA");
        for (i, theirs) in [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3]
            .iter()
            .enumerate()
        {
            assert_eq!(&body.rtmr[i], theirs, "{name}: RTMR{i}");
        }
        assert_eq!(body.xfam.to_le_bytes(), td.xfam, "{name}: XFAM");
    }
}
