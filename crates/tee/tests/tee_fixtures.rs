//! Real SNP / TDX / Azure / TPM evidence (tests/fixtures, see PROVENANCE.md) through
//! `cvm_tee`.
//!
//! Expected values were read from the files with independent tools (xxd, Python `struct`,
//! Python `cryptography`, `openssl x509`/`verify`) at the offsets the specifications give, not
//! from this crate's parsers. Where a value comes from Trustee's published decoding of the same
//! file (`CCEL_data_ovmf_out.json`) that is said next to it.

use std::path::PathBuf;

use cvm_tee::azure::{AzSnpVtpmEvidence, AzTdxVtpmEvidence, AzureError, HclReport, HwReport};
use cvm_tee::ccel::{self, EventLog};
use cvm_tee::snp::{
    self, AmdRoots, AttestationReport, EndorsementKey, Product, SigningKey, SnpError, VekKind,
};
use cvm_tee::tdx::{self, Quote, TdReport, TdxError};
use cvm_tee::tpm::TpmEvidence;
use cvm_tee::tpm_quote;
use cvm_tee::x509::{Cert, pem_certificates};
use cvm_tee::{TeeKind, hex, unhex};
use cvm_tpm::HashAlg;
use cvm_tpm::verify::{self, QuoteError};
use proptest::prelude::*;

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

fn h(s: &str) -> Vec<u8> {
    unhex(s).expect("test hex")
}

fn arr<const N: usize>(s: &str) -> [u8; N] {
    h(s).try_into().expect("test hex length")
}

// ---------------------------------------------------------------------------------------------
// SEV-SNP

#[test]
fn snp_vcek_report_fields() {
    let r = AttestationReport::parse(&fx("snp/test-report.bin")).unwrap();
    assert_eq!(r.version, 2);
    assert_eq!(r.guest_svn, 4);
    assert_eq!(r.policy.0, 0x3001f);
    assert!(!r.debug_allowed());
    assert!(r.policy.smt_allowed());
    assert_eq!(r.family_id[0], 1);
    assert_eq!(r.image_id[0], 2);
    assert_eq!(r.vmpl, 0);
    assert_eq!(r.signature_algo, 1);
    assert_eq!(r.current_tcb.raw, 0xce08_0000_0000_0003);
    assert_eq!(
        (
            r.current_tcb.bootloader,
            r.current_tcb.tee,
            r.current_tcb.snp,
            r.current_tcb.microcode
        ),
        (3, 0, 8, 0xce)
    );
    assert_eq!(r.platform_info.0, 1);
    assert!(r.platform_info.smt_enabled());
    assert_eq!(r.signing_key, SigningKey::Vcek);
    assert!(!r.author_key_en && !r.mask_chip_key);
    assert_eq!(
        r.report_data[..32],
        h("ec6c52d7533cc2c4f45be7849cf112ab82b2009fe7bd43e71ed08c14400ad7e2")
    );
    assert_eq!(r.report_data[32..], [0; 32]);
    assert_eq!(
        r.measurement,
        arr(
            "a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c23500644e0e692e6be917f9050d3d38c"
        )
    );
    assert_eq!(r.host_data, [0; 32]);
    assert_eq!(
        r.id_key_digest,
        arr(
            "0356215882a825279a85b300b0b742931d113bf7e32dde2e50ffde7ec743ca491ecdd7f336dc28a6e0b2bb57af7a44a3"
        )
    );
    assert_eq!(r.author_key_digest, [0; 48]);
    assert_eq!(
        r.report_id,
        arr("385eba81216de4776548fcb86f8ead03c1ebc92b6207f3210d9ccebb89c99005")
    );
    assert_eq!(r.report_id_ma, [0xff; 32]);
    assert_eq!(r.reported_tcb.raw, 0x7308_0000_0000_0003);
    assert_eq!(r.reported_tcb.microcode, 0x73);
    assert_eq!(r.cpuid, None);
    assert_eq!(
        r.chip_id,
        arr(
            "c38427a30d4c7af9d96f7a15b97269825a64cb76a2352ffd5d18115d89ad473f8e8c0bcd9a5d9286612bad4aadfb4426205a3b9e4fea82301135a170e477524e"
        )
    );
    assert_eq!(r.committed_tcb.raw, 0x7308_0000_0000_0003);
    assert_eq!(r.launch_tcb.raw, 0x7308_0000_0000_0003);
    assert_eq!(
        (
            r.current_version.major,
            r.current_version.minor,
            r.current_version.build
        ),
        (1, 0x34, 4)
    );
    assert_eq!(r.launch_mit_vector, None);
    assert_eq!(
        r.signature_r[..48],
        h(
            "06ebdc4f4e4143cc62fe15b9f2d1ec2d54d4ab17669e51282216165eb31b5f59e16201aadca4fbdcd941f13268390850"
        )
    );
    assert_eq!(r.signature_r[48..], [0; 24]);
    assert_eq!(
        r.signature_s[..48],
        h(
            "406378d41a26623c5bad9ab8ce98d6cd3143902b916bc7a334bcd16a81d6c714a13056a79214b5bc5570f9b5145dcfe4"
        )
    );
    assert_eq!(r.signed_bytes().len(), 0x2A0);
    assert_eq!(r.as_bytes(), fx("snp/test-report.bin").as_slice());
}

#[test]
fn snp_vlek_report_fields() {
    let r = AttestationReport::parse(&fx("snp/test-vlek-report.bin")).unwrap();
    assert_eq!(r.version, 3);
    assert_eq!(r.guest_svn, 0);
    assert_eq!(r.policy.0, 0x30000);
    assert_eq!(r.vmpl, 1);
    assert_eq!(r.signing_key, SigningKey::Vlek);
    assert_eq!(r.platform_info.0, 0x27);
    let c = r.cpuid.unwrap();
    assert_eq!((c.family, c.model, c.stepping), (0x19, 0x01, 0x01));
    assert_eq!(r.product(), Some(Product::Milan));
    assert_eq!(r.reported_tcb.raw, 0xd918_0000_0000_0004);
    assert_eq!(
        (
            r.reported_tcb.bootloader,
            r.reported_tcb.snp,
            r.reported_tcb.microcode
        ),
        (4, 0x18, 0xd9)
    );
    assert_eq!(r.chip_id, [0; 64], "CHIP_ID is masked in VLEK reports");
    assert_eq!(
        r.report_data,
        arr(
            "819770b7e6ea6df8dd8fd4dd146b073c0bf4f3ce5b0977ecac486e3a05ed1bd54e2a7ac1f5d1ca02e7d7d5ef9f73b8574fd9359e3a480d741a4478e8a7bc27ca"
        )
    );
    assert_eq!(
        r.measurement,
        arr(
            "8922ebbdd00ec2c541f36a6e7a82a8773a7accb451ed67bc94e740dbe92c93c4e8c9af857f5ceeb5a493df2a570d7bf0"
        )
    );
}

#[test]
fn snp_endorsement_keys() {
    // Extension values as `openssl x509 -text` / `asn1parse` show them.
    let vcek = EndorsementKey::from_der(&fx("snp/test-vcek.der")).unwrap();
    assert_eq!(vcek.kind, VekKind::Vcek);
    assert_eq!(vcek.product, Product::Milan);
    assert_eq!(
        (
            vcek.tcb.bootloader,
            vcek.tcb.tee,
            vcek.tcb.snp,
            vcek.tcb.microcode
        ),
        (3, 0, 8, 0x73)
    );
    assert_eq!(
        vcek.hw_id.unwrap(),
        arr(
            "c38427a30d4c7af9d96f7a15b97269825a64cb76a2352ffd5d18115d89ad473f8e8c0bcd9a5d9286612bad4aadfb4426205a3b9e4fea82301135a170e477524e"
        )
    );
    let vlek = EndorsementKey::from_der(&fx("snp/test-vlek.der")).unwrap();
    assert_eq!(vlek.kind, VekKind::Vlek);
    assert_eq!(vlek.product, Product::Milan);
    assert_eq!(vlek.hw_id, None);
    assert_eq!(
        (vlek.tcb.bootloader, vlek.tcb.snp, vlek.tcb.microcode),
        (4, 0x18, 0xd9)
    );
}

#[test]
fn snp_reports_verify_with_vcek_and_vlek() {
    let r = AttestationReport::parse(&fx("snp/test-report.bin")).unwrap();
    let vcek = EndorsementKey::from_der(&fx("snp/test-vcek.der")).unwrap();
    r.verify_signature(&vcek).unwrap();
    snp::verify_report_builtin(&r, &vcek).unwrap();

    let r = AttestationReport::parse(&fx("snp/test-vlek-report.bin")).unwrap();
    let vlek = EndorsementKey::from_der(&fx("snp/test-vlek.der")).unwrap();
    r.verify_signature(&vlek).unwrap();
    snp::verify_report_builtin(&r, &vlek).unwrap();
}

#[test]
fn snp_chains_to_milan_roots() {
    let roots = AmdRoots::builtin(Product::Milan);
    roots.verify().unwrap();
    EndorsementKey::from_der(&fx("snp/test-vcek.der"))
        .unwrap()
        .verify_chain(&roots)
        .unwrap();
    EndorsementKey::from_der(&fx("snp/test-vlek.der"))
        .unwrap()
        .verify_chain(&roots)
        .unwrap();
    // Azure's vcek.pem is VCEK, ASK, ARK; its ASK and ARK are the compiled-in ones.
    let ders = pem_certificates(&fx("az-snp-vtpm/vcek.pem")).unwrap();
    assert_eq!(ders.len(), 3);
    assert_eq!(ders[1], roots.ask.der());
    assert_eq!(ders[2], roots.ark.der());
    // Without a VLEK root the VLEK cannot chain.
    let no_asvk = AmdRoots {
        asvk: None,
        ..roots.clone()
    };
    let vlek = EndorsementKey::from_der(&fx("snp/test-vlek.der")).unwrap();
    assert!(matches!(
        vlek.verify_chain(&no_asvk),
        Err(SnpError::NoAsvk(Product::Milan))
    ));
    // A VCEK is not signed by the ASVK, nor a VLEK by the ASK.
    let swapped = AmdRoots {
        ask: roots.asvk.clone().unwrap(),
        asvk: Some(roots.ask.clone()),
        ..roots
    };
    assert!(matches!(
        vlek.verify_chain(&swapped),
        Err(SnpError::Chain(_))
    ));
}

#[test]
fn snp_wrong_key_or_tcb_fails() {
    let r = AttestationReport::parse(&fx("snp/test-report.bin")).unwrap();
    let vlek = EndorsementKey::from_der(&fx("snp/test-vlek.der")).unwrap();
    assert!(matches!(
        r.verify_signature(&vlek),
        Err(SnpError::SignatureMismatch(VekKind::Vlek))
    ));
    assert!(matches!(
        snp::verify_report_builtin(&r, &vlek),
        Err(SnpError::KeyKindMismatch { .. })
    ));
    // The VCEK of the Azure report is for another chip: the chain is fine, the signature not.
    let az_vcek = EndorsementKey::from_pem(&fx("az-snp-vtpm/vcek.pem")).unwrap();
    assert!(snp::verify_report_builtin(&r, &az_vcek).is_err());
}

#[test]
fn snp_flipped_byte_in_signed_area_fails() {
    let vcek = EndorsementKey::from_der(&fx("snp/test-vcek.der")).unwrap();
    let good = fx("snp/test-report.bin");
    for off in [0x04, 0x08, 0x50, 0x90, 0xC0, 0x180, 0x1A0, 0x29F] {
        let mut b = good.clone();
        b[off] ^= 0x01;
        let r = AttestationReport::parse(&b).unwrap();
        assert!(
            matches!(
                r.verify_signature(&vcek),
                Err(SnpError::SignatureMismatch(_))
            ),
            "flip at {off:#x} went unnoticed"
        );
    }
    // And in the signature itself.
    let mut b = good.clone();
    b[0x2A0] ^= 0x01;
    assert!(
        AttestationReport::parse(&b)
            .unwrap()
            .verify_signature(&vcek)
            .is_err()
    );
    // A flipped reported TCB byte can also be caught by the TCB check once re-signed; here the
    // signature check comes first.
    let mut b = good;
    b[0x187] ^= 0x01;
    assert!(snp::verify_report_builtin(&AttestationReport::parse(&b).unwrap(), &vcek).is_err());
}

// ---------------------------------------------------------------------------------------------
// TDX

#[test]
fn tdx_quote_v4_fields_and_verification() {
    let q = Quote::parse(&fx("tdx/tdx_quote_4.dat")).unwrap();
    assert_eq!(q.header.version, 4);
    assert_eq!(q.header.att_key_type, 2);
    assert_eq!(q.header.tee_type, 0x81);
    assert_eq!(
        q.header.qe_vendor_id,
        arr("939a7233f79c4ca9940a0db3957f0607")
    );
    assert_eq!(
        q.header.user_data,
        arr("d099bfec0a477aa85a605dceabf2b10800000000")
    );
    assert_eq!(q.body_type, 2);
    let b = &q.body;
    assert_eq!(b.tee_tcb_svn, arr("03000500000000000000000000000000"));
    assert_eq!(
        b.mr_seam,
        arr(
            "2fd279c16164a93dd5bf373d834328d46008c2b693af9ebb865b08b2ced320c9a89b4869a9fab60fbe9d0c5a5363c656"
        )
    );
    assert_eq!(b.seam_attributes, 0);
    assert_eq!(b.td_attributes.0, 0x1000_0001); // bytes 01 00 00 10 00 00 00 00
    assert!(
        b.td_attributes.debug(),
        "this fixture TD is debuggable (bit 0)"
    );
    assert!(b.td_attributes.sept_ve_disable());
    assert_eq!(b.xfam, 0x0006_42e7);
    assert_eq!(
        b.mr_td,
        arr(
            "705ee9381b8633a9fbe532b52345e8433343d2868959f57889d84ca377c395b689cac1599ccea1b7d420483a9ce5f031"
        )
    );
    assert_eq!(b.mr_config_id, [0; 48]);
    assert_eq!(
        b.rtmr[0],
        arr(
            "e940da7c2712d2790e2961e00484f4fa8e6f9eed71361655ae22699476b14f9e63867eb41edd4b480fef0c59f496b288"
        )
    );
    assert_eq!(
        b.rtmr[1],
        arr(
            "559cfcf42716ed6c40a48a73d5acb7da255435012f0a9f00fbe8c1c57612ede486a5684c4c9ff3ddf52315fcdca3a596"
        )
    );
    assert_eq!(b.rtmr[2], [0; 48]);
    assert_eq!(b.rtmr[3], [0; 48]);
    assert_eq!(
        b.report_data,
        arr(
            "7c71fe2c86eff65a7cf8dbc22b3275689fd0464a267baced1bf94fc1324656aeb755da3d44d098c0c87382f3a5f85b45c8a28fee1d3bdb38342bf96671501429"
        )
    );
    assert_eq!(b.tee_tcb_svn2, None);
    assert_eq!(q.signed_bytes().len(), 632);
    let sd = &q.signature_data;
    assert_eq!(
        sd.attestation_key,
        arr(
            "979d50652a619a77ce3a0ae2b0eafc4d0185b009a1735ed51afc534921355f3fa3eacc1387d64d20edb0d86c81e67d481afc064a6f06e9cf781b76f4b75bad78"
        )
    );
    assert_eq!(sd.qe.qe_auth_data, (0u8..32).collect::<Vec<_>>());
    assert_eq!(sd.qe.cert_type, tdx::CERT_TYPE_PCK_CHAIN);
    assert_eq!(sd.qe.cert_data.len(), 3678);
    assert_eq!(
        sd.qe.qe_report_data().unwrap()[..32],
        h("bd7fa32022b8084eedc77d4963fef55de30b90cf9b6914d35c35598ff0c15e1a")
    );
    q.verify_signature().unwrap();
    q.verify_qe_binding().unwrap();
    q.verify().unwrap();
    let chain = q.pck_chain().unwrap();
    assert_eq!(chain.len(), 3);
    assert_eq!(chain[0].common_name().unwrap(), "Intel SGX PCK Certificate");
    assert_eq!(chain[1].common_name().unwrap(), "Intel SGX PCK Platform CA");
    assert_eq!(chain[2].der(), tdx::intel_sgx_root_ca().der());
}

#[test]
fn tdx_quote_v5_fields_and_verification() {
    let q = Quote::parse(&fx("tdx/tdx_quote_5.dat")).unwrap();
    assert_eq!(q.header.version, 5);
    assert_eq!(q.body_type, 3, "TDX 1.5 body");
    let b = &q.body;
    assert_eq!(b.tee_tcb_svn, arr("05010200000000000000000000000000"));
    assert_eq!(b.td_attributes.0, 0x1000_0000);
    assert!(!b.td_attributes.debug());
    assert_eq!(
        b.mr_td,
        arr(
            "dfba221b48a22af8511542ee796603f37382800840dcd978703909bf8e64d4c8a1e9de86e7c9638bfcba422f3886400a"
        )
    );
    assert_eq!(
        b.rtmr[0],
        arr(
            "9b529f3689e2e8ebb899e9abbbc3dab394d6545e8cdb28a2abb9cc2f377b83a65c01ba56b824cd3ee885df20051f5128"
        )
    );
    assert_eq!(
        b.report_data,
        arr(
            "6d6ab13b046cff606ac0074be13981b07b6325dba10b5facc96febf551c0c3be2b75f92fe1f88f4bb996969ad0174b4b7a70261b7b85c844f4b33a4674fd049f"
        )
    );
    assert_eq!(
        b.tee_tcb_svn2,
        Some(arr("05010200000000000000000000000000"))
    );
    assert_eq!(
        b.mr_service_td,
        Some(arr(
            "383c87d3bbb047b2d171eaca95312ede99f258088dc788f6ae2ccf8b6dd848fe8d47629e08b3f6cbd4a00dd47a5a033d"
        ))
    );
    assert_eq!(
        q.signed_bytes().len(),
        0x2BE,
        "header, body descriptor and body are signed"
    );
    q.verify().unwrap();
}

#[test]
fn tdx_tampering_fails() {
    let good = fx("tdx/tdx_quote_4.dat");
    // Body (RTMR0): the quote signature breaks.
    let mut b = good.clone();
    b[0x178] ^= 1;
    assert!(matches!(
        Quote::parse(&b).unwrap().verify(),
        Err(TdxError::QuoteSignature)
    ));
    // QE report (inside the signature data): the PCK's signature over it breaks.
    let mut b = good.clone();
    b[0x302 + 10] ^= 1;
    assert!(matches!(
        Quote::parse(&b).unwrap().verify(),
        Err(TdxError::QeReportSignature)
    ));
    // QE auth data: the binding of the attestation key breaks.
    let mut b = good.clone();
    b[0x4C4 + 3] ^= 1;
    assert!(matches!(
        Quote::parse(&b).unwrap().verify(),
        Err(TdxError::QeReportBinding)
    ));
    // Attestation key.
    let mut b = good.clone();
    b[0x2C0] ^= 1;
    assert!(Quote::parse(&b).unwrap().verify().is_err());
    // Trailing zero padding is accepted, anything else is not.
    let mut b = good.clone();
    b.extend_from_slice(&[0; 16]);
    Quote::parse(&b).unwrap().verify().unwrap();
    b.push(1);
    assert!(matches!(Quote::parse(&b), Err(TdxError::TrailingBytes(17))));
    // Every truncation is an error.
    for n in (0..good.len()).step_by(7) {
        assert!(
            Quote::parse(&good[..n]).is_err(),
            "prefix of {n} bytes parsed"
        );
    }
}

#[test]
fn tdx_foreign_root_is_rejected() {
    let q = Quote::parse(&fx("tdx/tdx_quote_4.dat")).unwrap();
    let amd = AmdRoots::builtin(Product::Milan).ark;
    assert!(matches!(q.verify_pck(&amd), Err(TdxError::UntrustedRoot)));
}

// ---------------------------------------------------------------------------------------------
// CCEL

#[test]
fn ccel_parses_and_replays() {
    let raw = fx("tdx/CCEL_data_ovmf");
    let log = EventLog::parse(&raw).unwrap();
    // Spec ID Event03: SHA-384 only (bytes 0x38..0x41 of the file).
    assert_eq!(log.header_index, 1);
    assert_eq!(
        (
            log.spec_id.spec_version_major,
            log.spec_id.spec_version_minor
        ),
        (2, 0)
    );
    assert_eq!(log.spec_id.uintn_size, 2);
    assert_eq!(log.spec_id.algorithms.len(), 1);
    assert_eq!(log.spec_id.algorithms[0].alg, ccel::TPM_ALG_SHA384);
    assert_eq!(log.spec_id.algorithms[0].digest_size, 48);
    // 20 events, as in Trustee's CCEL_data_ovmf_out.json; the used area ends at 2120, the
    // rest is 0xFF.
    assert_eq!(log.events.len(), 20);
    let first = &log.events[0];
    assert_eq!((first.mr_index, first.event_type), (1, 0x8000_000B));
    assert_eq!(
        first.digest(ccel::TPM_ALG_SHA384).unwrap(),
        h(
            "0b8772e5b0b41b83e6044a68397e02f49fb47066b4fbe4917ea2c45c64f323fdacbb37948f821ebaf8bc9c938ba8a749"
        )
    );
    assert_eq!(&first.data[1..9], b"TdxTable");
    let kernel = &log.events[11];
    assert_eq!((kernel.mr_index, kernel.event_type), (2, 0x8000_0003));
    let last = log.events.last().unwrap();
    assert_eq!((last.mr_index, last.event_type), (2, 0x8000_0007));
    assert_eq!(last.data, b"Exit Boot Services Returned with Success");
    assert!(log.events.iter().all(|e| (1..=3).contains(&e.mr_index)));

    // Replay, expected values from an independent Python replay of the same file.
    let rtmr = log.replay_rtmrs().unwrap();
    assert_eq!(
        rtmr[0],
        arr(
            "8566f998798db09443b244c62de9a3041fb02e2e6936c4396d784bba2e90177329ec5aba3bb484404f2ab9cc90abe193"
        )
    );
    assert_eq!(
        rtmr[1],
        arr(
            "775b9f6bfe99f8a31396f0d0218e67ffa796d3b96ccf961cbb0deba48c79c00f082cda1a5567c1c16305f1fc210c13c6"
        )
    );
    assert_eq!(
        rtmr[2],
        arr(
            "94eaf7a7bf398ed8d888c91057ae0261802e4f3df084213a76ca7f0b5055ac9d2241de43cd58d9e8b49c503bbf25f34a"
        )
    );
    assert_eq!(rtmr[3], [0; 48]);
    // Deterministic, and only the used area matters.
    assert_eq!(
        EventLog::parse(&raw[..2120])
            .unwrap()
            .replay_rtmrs()
            .unwrap(),
        rtmr
    );

    // The fixture quotes come from other boots: their RTMRs differ from this log's replay.
    for f in ["tdx/tdx_quote_4.dat", "tdx/tdx_quote_5.dat"] {
        let q = Quote::parse(&fx(f)).unwrap();
        assert_ne!(q.body.rtmr, rtmr, "{f}");
    }

    // A changed digest changes the replay; a cut inside an event is an error.
    let mut b = raw.clone();
    b[0x50] ^= 1;
    assert_ne!(
        EventLog::parse(&b).unwrap().replay_rtmrs().unwrap()[0],
        rtmr[0]
    );
    assert!(matches!(
        EventLog::parse(&raw[..2000]),
        Err(ccel::CcelError::Log(
            cvm_tcglog::eventlog::EventLogError::Truncated { .. }
        ))
    ));
}

// ---------------------------------------------------------------------------------------------
// Azure

#[test]
fn azure_snp_hcl_report() {
    let hcl = HclReport::parse(&fx("az-snp-vtpm/hcl-report.bin")).unwrap();
    assert_eq!(
        (hcl.version, hcl.report_size, hcl.request_type, hcl.status),
        (1, 2346, 2, 0)
    );
    assert_eq!(hcl.variable_data.len(), 1110);
    assert_eq!(hcl.tee_kind(), TeeKind::AzSnpVtpm);
    let HwReport::Snp(r) = &hcl.hw_report else {
        panic!("not SNP")
    };
    assert_eq!(r.version, 2);
    assert_eq!(r.guest_svn, 5);
    assert_eq!(
        r.measurement,
        arr(
            "9ac48fcac8a2d88aeeff8d427ad4f2be0e3917c748a18bdf52cc317e7fe20308b459d5ef1a12e0c22944eb386d17c315"
        )
    );
    // report_data[0..32] = SHA-256(runtime data JSON), the rest zero (Python hashlib).
    assert_eq!(
        r.report_data[..32],
        h("b3fbad6514c83caeb0380882145e49f794229ef37c421b91fc47ff93556bafac")
    );
    hcl.verify_report_data_binding().unwrap();

    let ak = hcl.ak_pub().unwrap();
    assert_eq!(ak.modulus.len(), 256);
    assert_eq!(ak.modulus[..8], h("a91ecba800010dcc"));
    assert_eq!(ak.exponent, vec![1, 0, 1]);
    // SHA-256 of the SPKI as Python `cryptography` encodes it.
    assert_eq!(
        hex(&sha256(&ak.spki_der)),
        "d47d5d33abcef6082883a1b3c54b80bc6be7606c6f822eae23822b42edbc8f5f"
    );
    let rt = hcl.runtime_data().unwrap();
    assert_eq!(rt.keys.len(), 2);
    assert_eq!(rt.keys[1].kid, "HCLEkPub");

    // The SNP report is genuine: Azure's VCEK, chained to the compiled-in Milan roots.
    let vcek = EndorsementKey::from_pem(&fx("az-snp-vtpm/vcek.pem")).unwrap();
    snp::verify_report_builtin(r, &vcek).unwrap();

    // quote.bin (the bincode v0 form) is a TPM quote signed by this AK, nonce "challenge".
    let quote = tpm_quote::Quote::from_bincode(&fx("az-snp-vtpm/quote.bin")).unwrap();
    assert_eq!(quote.pcrs.len(), 24);
    assert_eq!(
        quote.pcrs[0],
        arr("f3a7e99a5f819a034386bce753a48a73cfdaa0bea0ecfc124bedbf5a8c4799be")
    );
    let attest = quote.verify(&ak.verifier_key()).unwrap();
    assert_eq!(attest.extra_data, b"challenge");
}

#[test]
fn azure_snp_binding_breaks_when_runtime_data_changes() {
    let mut b = fx("az-snp-vtpm/hcl-report.bin");
    b[0x4D4 + 100] ^= 1; // a byte of the AK modulus in the JSON
    let hcl = HclReport::parse(&b).unwrap();
    assert!(matches!(
        hcl.verify_report_data_binding(),
        Err(AzureError::Binding)
    ));
}

#[test]
fn azure_tpm_quote_msg_and_sig() {
    // tpm-quote.msg is a TPMS_ATTEST quote with nonce "challenge" over SHA-256 PCRs 0–7 and 14
    // (selection bitmap ff 40 00).
    let attest = verify::parse_attest(&fx("az-snp-vtpm/tpm-quote.msg")).unwrap();
    assert_eq!(attest.extra_data, b"challenge");
    assert_eq!(attest.pcr_select.len(), 1);
    assert_eq!(attest.pcr_select[0].hash, HashAlg::Sha256.tpm_alg_id());
    assert_eq!(attest.pcr_select[0].pcrs, vec![0, 1, 2, 3, 4, 5, 6, 7, 14]);
    assert_eq!(
        attest.pcr_digest,
        h("9d608cf40eb5bc7454c6cbc0985c17c2efa45d5e5b28004aa7d77c1285d2fa5d")
    );
    // This message/signature pair was captured on a different vTPM than hcl-report.bin (Python
    // `cryptography` agrees): the HCL AK must reject it.
    let ak = HclReport::parse(&fx("az-snp-vtpm/hcl-report.bin"))
        .unwrap()
        .ak_pub()
        .unwrap();
    assert!(matches!(
        verify::verify_signature(
            &ak.verifier_key(),
            &fx("az-snp-vtpm/tpm-quote.msg"),
            &fx("az-snp-vtpm/tpm-quote.sig")
        ),
        Err(QuoteError::BadSignature)
    ));
}

#[test]
fn azure_snp_evidence_v2() {
    let ev = AzSnpVtpmEvidence::from_json(&fx("az-snp-vtpm/evidence-v2.json")).unwrap();
    assert_eq!(ev.version, 2);
    assert_eq!(ev.hcl_report.len(), 2600);
    assert_eq!(ev.vcek.len(), 1351);
    assert_eq!(ev.tpm_quote.pcrs.len(), 24);
    let v = ev.verify().unwrap();
    // v2: the KBS report data is the TPM nonce and the runtime data's user-data.
    let nonce = h(
        "982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9aa398f647caa2338748cd0fd9f5f819ef",
    );
    assert_eq!(v.attest.extra_data, nonce);
    let user = v.runtime_data.user_data_bytes().unwrap();
    assert_eq!(user[..48], nonce[..]);
    assert_eq!(user[48..], [0; 16]);
    assert_eq!(
        hex(&sha256(&v.ak.spki_der)),
        "21cc573de727d7c6e4dc4dcadb6949c45f49e024e7c66006a020121b6eb09cfe"
    );
    // Round trip through serde keeps every byte.
    let again = AzSnpVtpmEvidence::from_json(&serde_json::to_vec(&ev).unwrap()).unwrap();
    assert_eq!(again, ev);

    // A PCR value that does not match the quote's digest, a foreign VCEK, a wrong version.
    let mut bad = ev.clone();
    bad.tpm_quote.pcrs[3][0] ^= 1;
    assert!(matches!(bad.verify(), Err(AzureError::TpmQuote(_))));
    let mut bad = ev.clone();
    bad.vcek = fx("snp/test-vcek.der");
    assert!(matches!(bad.verify(), Err(AzureError::Snp(_))));
    let mut j: serde_json::Value =
        serde_json::from_slice(&fx("az-snp-vtpm/evidence-v2.json")).unwrap();
    j["version"] = 7.into();
    assert!(matches!(
        AzSnpVtpmEvidence::from_json(&serde_json::to_vec(&j).unwrap()),
        Err(AzureError::EvidenceVersion { version: 7, .. })
    ));
}

#[test]
fn azure_tdx_hcl_and_evidence_v1() {
    let hcl = HclReport::parse(&fx("az-tdx-vtpm/hcl-report.bin")).unwrap();
    assert_eq!((hcl.version, hcl.report_size), (2, 2437));
    assert_eq!(hcl.variable_data.len(), 1201);
    assert_eq!(hcl.tee_kind(), TeeKind::AzTdxVtpm);
    let HwReport::Tdx(td) = &hcl.hw_report else {
        panic!("not TDX")
    };
    assert_eq!(td.report_type, 0x81);
    assert_eq!(td.cpu_svn, arr("0606131503ff00030000000000000000"));
    assert_eq!(td.tee_tcb_svn, arr("02010600000000000000000000000000"));
    assert_eq!(td.xfam, 0x0006_18e7);
    assert_eq!(
        td.mr_td,
        arr(
            "024a32b070383331181619fa387cb4d55d1e38879f989933055ccad5bc2db795d1737b66205949d15469dc8c1ba7ab7b"
        )
    );
    assert_eq!(
        td.report_data[..32],
        h("9734504f161d104c74e3165c15f779b06a9bb40dfa71937817d7eee68e593839")
    );
    hcl.verify_report_data_binding().unwrap();
    assert_eq!(hcl.ak_pub().unwrap().modulus[..8], h("c89b17820000a5e9"));

    let ev = AzTdxVtpmEvidence::from_json(&fx("az-tdx-vtpm/evidence-v1.json")).unwrap();
    assert_eq!(ev.version, 1);
    assert_eq!(ev.hcl_report, fx("az-tdx-vtpm/hcl-report.bin"));
    assert_eq!(ev.td_quote, fx("az-tdx-vtpm/td-quote.bin"));
    let standalone: serde_json::Value =
        serde_json::from_slice(&fx("az-tdx-vtpm/tpm-quote-v1.json")).unwrap();
    assert_eq!(serde_json::to_value(&ev.tpm_quote).unwrap(), standalone);
    let v = ev.verify().unwrap();
    assert_eq!(v.attest.extra_data, b"challenge");

    // The TD quote is the TDREPORT's: same report data, MRTD, RTMRs.
    let q = Quote::parse(&ev.td_quote).unwrap();
    assert!(td.matches_quote(&q.body));
    let other = Quote::parse(&fx("tdx/tdx_quote_4.dat")).unwrap();
    assert!(!td.matches_quote(&other.body));
    let mut bad = ev.clone();
    bad.td_quote = fx("tdx/tdx_quote_4.dat");
    assert!(matches!(bad.verify(), Err(AzureError::TdReportMismatch)));
    // An SNP HCL report in TDX evidence is refused.
    let mut bad = ev;
    bad.hcl_report = fx("az-snp-vtpm/hcl-report.bin");
    assert!(bad.verify().is_err());
}

#[test]
fn td_report_rejects_wrong_sizes() {
    assert!(matches!(
        TdReport::parse(&[0; 1000]),
        Err(TdxError::TdReportLength(1000))
    ));
    assert!(matches!(
        TdReport::parse(&[0; 1024]),
        Err(TdxError::TdReportType(0))
    ));
}

// ---------------------------------------------------------------------------------------------
// tpm

#[test]
fn tpm_evidence() {
    let ev = TpmEvidence::from_json(&fx("tpm/tpm_evidence.json")).unwrap();
    assert_eq!(
        hex(&ev.ak_sha256()),
        "a517f03ffdaee469aef1a19569547e330726335d0461c3ef6383409c6295679e"
    );
    assert_eq!(ev.tpm_quote.pcrs.len(), 24);
    for (i, p) in ev.tpm_quote.pcrs.iter().enumerate() {
        let want = if (17..=22).contains(&i) {
            [0xff; 32]
        } else {
            [0; 32]
        };
        assert_eq!(*p, want, "PCR {i}");
    }
    assert_eq!(ev.tpm_quote.signature[..6], h("0014000b0100"));
    let attest = ev.verify().unwrap();
    // The OLD form (before Trustee v0.16): a 48-byte digest zero-padded to 64 bytes. Today's
    // form is the first 32 bytes of the digest (tests/evidence_swtpm.rs builds it).
    assert_eq!(
        attest.extra_data,
        h(
            "a04182b506878d4f29b91ee606a71a0d3361ccf1b22db20c98adcaa537bea393ef0e41a18b3569ab678f1497fbc5c12000000000000000000000000000000000"
        )
    );
    let again = TpmEvidence::from_json(&serde_json::to_vec(&ev).unwrap()).unwrap();
    assert_eq!(again, ev);
    let mut bad = ev.clone();
    bad.tpm_quote.message[20] ^= 1;
    assert!(bad.verify().is_err());
    let mut bad = ev;
    bad.tpm_quote.pcrs[17][0] = 0;
    assert!(bad.verify().is_err());
}

// ---------------------------------------------------------------------------------------------
// configfs-tsm with real reports in a fake directory

#[test]
fn tsm_fake_snp_and_tdx_providers() {
    use cvm_tee::tsm::{self, TsmError};
    let report = fx("snp/test-report.bin");
    let rd: [u8; 64] = AttestationReport::parse(&report).unwrap().report_data;
    let d = tempfile::tempdir().unwrap();
    let e = d.path().join(tsm::ENTRY_NAME);
    std::fs::create_dir(&e).unwrap();
    for (name, data) in [
        ("provider", &b"sev_guest\n"[..]),
        ("generation", b"1\n"),
        ("inblob", b""),
        ("auxblob", b"certs"),
        ("outblob", &report),
    ] {
        std::fs::write(e.join(name), data).unwrap();
    }
    let r = tsm::tsm_report_in(d.path(), &rd).unwrap();
    assert_eq!(r.provider, "sev_guest");
    assert_eq!(r.outblob, report);
    assert_eq!(r.auxblob.as_deref(), Some(&b"certs"[..]));
    // The outblob must carry the report data we asked for.
    assert!(matches!(
        tsm::tsm_report_in(d.path(), &[0; 64]),
        Err(TsmError::ReportDataMismatch { .. })
    ));
    let quote = fx("tdx/tdx_quote_5.dat");
    std::fs::write(e.join("provider"), "tdx_guest\n").unwrap();
    std::fs::write(e.join("outblob"), &quote).unwrap();
    let rd = Quote::parse(&quote).unwrap().body.report_data;
    assert_eq!(tsm::tsm_report_in(d.path(), &rd).unwrap().outblob, quote);
}

fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(b).into()
}

// ---------------------------------------------------------------------------------------------
// Hostile input: no parser panics, on random bytes or on mutated real evidence.

fn mutate(mut base: Vec<u8>, edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
    for &(i, v) in edits {
        if !base.is_empty() {
            let n = base.len();
            base[i % n] = v;
        }
    }
    base.truncate(cut.min(base.len()));
    base
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn snp_parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..1300),
                              edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8)) {
        let _ = AttestationReport::parse(&b);
        let _ = snp::parse_cert_table(&b);
        let m = mutate(fx("snp/test-report.bin"), &edits, usize::MAX);
        if let Ok(r) = AttestationReport::parse(&m) {
            let _ = r.product();
        }
    }

    #[test]
    fn tdx_parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..1200),
                              edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
                              cut in any::<usize>()) {
        let _ = Quote::parse(&b);
        let _ = TdReport::parse(&b);
        let m = mutate(fx("tdx/tdx_quote_5.dat"), &edits, cut);
        if let Ok(q) = Quote::parse(&m) {
            let _ = q.pck_chain();
            let _ = q.verify_qe_binding();
        }
    }

    #[test]
    fn ccel_parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..600),
                               edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
                               cut in 0usize..2200) {
        let _ = EventLog::parse(&b);
        let m = mutate(fx("tdx/CCEL_data_ovmf"), &edits, cut);
        if let Ok(l) = EventLog::parse(&m) {
            let _ = l.replay_rtmrs();
        }
    }

    #[test]
    fn hcl_parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..1400),
                              edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
                              cut in any::<usize>()) {
        let _ = HclReport::parse(&b);
        for f in ["az-snp-vtpm/hcl-report.bin", "az-tdx-vtpm/hcl-report.bin"] {
            let m = mutate(fx(f), &edits, cut);
            if let Ok(hcl) = HclReport::parse(&m) {
                let _ = hcl.verify_report_data_binding();
                let _ = hcl.ak_pub();
            }
        }
    }

    #[test]
    fn tpm_structures_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400),
                                  edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
                                  cut in any::<usize>()) {
        let _ = verify::parse_attest(&b);
        let _ = verify::rsassa_signature(&b);
        let _ = tpm_quote::Quote::from_bincode(&b);
        let m = mutate(fx("az-snp-vtpm/tpm-quote.msg"), &edits, cut);
        if let Ok(a) = verify::parse_attest(&m) {
            let _ = a.check_pcrs(&(0..24).map(|i| (i, vec![0; 32])).collect::<Vec<_>>());
        }
        let _ = tpm_quote::Quote::from_bincode(&mutate(fx("az-snp-vtpm/quote.bin"), &edits, cut));
    }

    #[test]
    fn certificates_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600),
                                edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
                                cut in any::<usize>()) {
        let _ = Cert::from_der(&b);
        let _ = pem_certificates(&b);
        let _ = EndorsementKey::from_der(&b);
        let _ = EndorsementKey::from_der(&mutate(fx("snp/test-vcek.der"), &edits, cut));
        let _ = EndorsementKey::from_pem(&mutate(fx("az-snp-vtpm/vcek.pem"), &edits, cut));
    }

    #[test]
    fn evidence_json_never_panics(s in ".{0,200}",
                                  edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
                                  cut in any::<usize>()) {
        let _ = TpmEvidence::from_json(s.as_bytes());
        let _ = AzSnpVtpmEvidence::from_json(s.as_bytes());
        let _ = AzTdxVtpmEvidence::from_json(s.as_bytes());
        let _ = TpmEvidence::from_json(&mutate(fx("tpm/tpm_evidence.json"), &edits, cut));
        let _ = AzTdxVtpmEvidence::from_json(&mutate(fx("az-tdx-vtpm/evidence-v1.json"), &edits, cut));
    }
}

proptest! {
    // Each case costs an ECDSA P-384 verification.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn snp_any_flip_in_signed_area_fails(off in 0usize..snp::SIGNED_LEN, bit in 0u8..8) {
        let vcek = EndorsementKey::from_der(&fx("snp/test-vcek.der")).unwrap();
        let mut b = fx("snp/test-report.bin");
        b[off] ^= 1 << bit;
        // Either the report no longer parses (version/algorithm field) or it no longer verifies.
        if let Ok(r) = AttestationReport::parse(&b) {
            prop_assert!(r.verify_signature(&vcek).is_err());
        }
    }

    #[test]
    fn tdx_any_flip_in_signed_area_fails(off in 0usize..632, bit in 0u8..8) {
        let mut b = fx("tdx/tdx_quote_4.dat");
        b[off] ^= 1 << bit;
        if let Ok(q) = Quote::parse(&b) {
            prop_assert!(q.verify_signature().is_err());
        }
    }
}
