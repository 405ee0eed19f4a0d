//! The host-side quote verifier against real evidence captured on cloud vTPMs and published by
//! the Trustee project (tests/fixtures/*/PROVENANCE.md): the same code must accept quotes real
//! TPMs made, in the shapes the KBS protocol carries them, and reject them once anything is
//! changed.

use std::path::PathBuf;

use cvm_tpm::rsa_spki_der;
use cvm_tpm::verify::{self, AkPublic, QuoteError};

fn fixture(path: &str) -> Vec<u8> {
    let full = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .join("tests/fixtures")
        .join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn json(path: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(path)).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    cvm_text::hex::decode(s).unwrap_or_else(|| panic!("not hex: {s:?}"))
}

/// Base64, standard or URL-safe alphabet, padding optional.
fn unbase64(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            other => panic!("not base64: {other:#x}"),
        }
    };
    let digits: Vec<u32> = s.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let mut acc = 0u32;
        for (i, d) in chunk.iter().enumerate() {
            acc |= d << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

fn str_field<'a>(value: &'a serde_json::Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key}"))
}

fn pcr_list(value: &serde_json::Value) -> Vec<(u32, Vec<u8>)> {
    value["pcrs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(0u32..)
        .map(|(hex, i)| (i, unhex(hex.as_str().unwrap())))
        .collect()
}

/// The HCLAkPub JWK out of an Azure HCL report's runtime data: (modulus, exponent).
fn hcl_ak(report: &[u8]) -> (Vec<u8>, u32) {
    let start = report
        .windows(8)
        .position(|w| w == b"{\"keys\":")
        .expect("runtime data JSON in the HCL report");
    let runtime: serde_json::Value = serde_json::Deserializer::from_slice(&report[start..])
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    let key = runtime["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == "HCLAkPub")
        .expect("HCLAkPub");
    let exponent = unbase64(str_field(key, "e"))
        .iter()
        .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
    (unbase64(str_field(key, "n")), exponent)
}

/// Everything a verifier could be handed wrongly, each must fail.
fn assert_tampering_fails(
    ak: &AkPublic<'_>,
    message: &[u8],
    signature: &[u8],
    nonce: &[u8],
    pcrs: &[(u32, Vec<u8>)],
) {
    let mut other_nonce = nonce.to_vec();
    other_nonce[0] ^= 1;
    assert!(matches!(
        verify::verify_quote(ak, message, signature, &other_nonce, pcrs),
        Err(QuoteError::NonceMismatch)
    ));
    for i in [0, 8, 23] {
        let mut other = pcrs.to_vec();
        other[i].1[31] ^= 1;
        assert!(matches!(
            verify::verify_quote(ak, message, signature, nonce, &other),
            Err(QuoteError::PcrDigestMismatch)
        ));
    }
    for i in [0, signature.len() / 2, signature.len() - 1] {
        let mut sig = signature.to_vec();
        sig[i] ^= 0x80;
        assert!(matches!(
            verify::verify_quote(ak, message, &sig, nonce, pcrs),
            Err(QuoteError::BadSignature)
        ));
    }
    for i in [0, 5, message.len() - 1] {
        let mut msg = message.to_vec();
        msg[i] ^= 1;
        assert!(matches!(
            verify::verify_quote(ak, &msg, signature, nonce, pcrs),
            Err(QuoteError::BadSignature)
        ));
    }
    assert!(matches!(
        verify::verify_quote(ak, message, &signature[1..], nonce, pcrs),
        Err(QuoteError::SignatureLength { .. })
    ));
}

#[test]
fn coco_tpm_evidence_verifies() {
    // The CoCo `tpm` evidence form: ak_public is a DER SPKI, the signature a TPMT_SIGNATURE.
    let evidence = json("tpm/tpm_evidence.json");
    let spki = unbase64(str_field(&evidence, "ak_public"));
    let quote = &evidence["tpm_quote"];
    let message = unbase64(str_field(quote, "message"));
    let signature = verify::rsassa_signature(&unbase64(str_field(quote, "signature"))).unwrap();
    assert_eq!(signature.len(), 256);
    let pcrs = pcr_list(quote);
    assert_eq!(pcrs.len(), 24);

    let attest = verify::parse_attest(&message).unwrap();
    assert_eq!(attest.pcr_select.len(), 1);
    assert_eq!(attest.pcr_select[0].hash, 0x000B);
    assert_eq!(attest.pcr_select[0].pcrs, (0..24).collect::<Vec<u32>>());
    // The OLD form: this fixture predates Trustee v0.16, when the CoCo attester padded the
    // report data to 64 bytes; today's Trustee wants the first 32 bytes of the digest and
    // refuses this quote's nonce (devkbs::verify tests that). Signature and PCRs still verify.
    assert_eq!(
        attest.extra_data.len(),
        64,
        "the fixture's old 64-byte padded nonce"
    );
    let nonce = attest.extra_data.clone();

    let ak = AkPublic::SpkiDer(&spki);
    let verified = verify::verify_quote(&ak, &message, &signature, &nonce, &pcrs).unwrap();
    assert_eq!(verified, attest);
    assert_tampering_fails(&ak, &message, &signature, &nonce, &pcrs);

    // Our own SPKI encoding of that key is byte for byte what the CoCo attester sends.
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPublicKey::from_public_key_der(&spki).unwrap();
    let exponent = key
        .e()
        .to_bytes_be()
        .iter()
        .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
    assert_eq!(rsa_spki_der(&key.n().to_bytes_be(), exponent), spki);
}

/// An Azure `tpm_quote` (hex fields, raw signature) and the AK of an HCL report.
struct AzureQuote {
    modulus: Vec<u8>,
    exponent: u32,
    message: Vec<u8>,
    signature: Vec<u8>,
    nonce: Vec<u8>,
    pcrs: Vec<(u32, Vec<u8>)>,
}

/// `quote` verifies with the AK from `hcl_report` given as modulus and exponent (the HCL
/// report's JWK), and every tampering fails.
fn verify_azure_quote(quote: &serde_json::Value, hcl_report: &[u8]) -> AzureQuote {
    let (modulus, exponent) = hcl_ak(hcl_report);
    let message = unhex(str_field(quote, "message"));
    let signature = unhex(str_field(quote, "signature"));
    let pcrs = pcr_list(quote);
    let nonce = verify::parse_attest(&message).unwrap().extra_data;
    let ak = AkPublic::Rsa {
        modulus: &modulus,
        exponent,
    };
    verify::verify_quote(&ak, &message, &signature, &nonce, &pcrs).unwrap();
    assert_tampering_fails(&ak, &message, &signature, &nonce, &pcrs);
    AzureQuote {
        modulus,
        exponent,
        message,
        signature,
        nonce,
        pcrs,
    }
}

#[test]
fn azure_snp_vtpm_evidence_verifies() {
    // The KBS `az-snp-vtpm` v2 evidence: AK from the HCL report's JWK, raw signature.
    let evidence = json("az-snp-vtpm/evidence-v2.json");
    let hcl_report = unbase64(str_field(&evidence, "hcl_report"));
    let q = verify_azure_quote(&evidence["tpm_quote"], &hcl_report);
    assert_eq!(q.exponent, 65537);

    // The same key as a DER SPKI.
    let spki = rsa_spki_der(&q.modulus, q.exponent);
    verify::verify_quote(
        &AkPublic::SpkiDer(&spki),
        &q.message,
        &q.signature,
        &q.nonce,
        &q.pcrs,
    )
    .unwrap();
}

#[test]
fn azure_tdx_vtpm_quote_verifies() {
    verify_azure_quote(
        &json("az-tdx-vtpm/tpm-quote-v1.json"),
        &fixture("az-tdx-vtpm/hcl-report.bin"),
    );
}

#[test]
fn azure_tpm_quote_message_parses() {
    let message = fixture("az-snp-vtpm/tpm-quote.msg");
    let signature = fixture("az-snp-vtpm/tpm-quote.sig");
    assert_eq!(signature.len(), 256);
    let attest = verify::parse_attest(&message).unwrap();
    assert_eq!(attest.extra_data, b"challenge");
    assert_eq!(attest.qualified_signer.len(), 34);
    assert_eq!(&attest.qualified_signer[..2], &[0x00, 0x0B]);
    // The Azure vTPM quotes PCRs 0-7 and 14 of the SHA-256 bank.
    assert_eq!(attest.pcr_select.len(), 1);
    assert_eq!(attest.pcr_select[0].hash, 0x000B);
    assert_eq!(attest.pcr_select[0].pcrs, vec![0, 1, 2, 3, 4, 5, 6, 7, 14]);
    assert_eq!(attest.pcr_digest.len(), 32);
    assert!(attest.clock_info.safe);

    // Its AK and PCR values are not part of the fixtures (the HCL report beside it comes from
    // another VM), so only its shape is checked here.
    // Every prefix is an error, not a panic.
    for len in 0..message.len() {
        assert!(verify::parse_attest(&message[..len]).is_err(), "{len}");
    }
}
