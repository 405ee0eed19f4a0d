//! Canned-response tests for the commands the attester needs: PCR_Extend, GetRandom,
//! FlushContext, the attestation key (ReadPublic / CreatePrimary / EvictControl), Quote and
//! NV reads, plus the device transport's deadline. Exact command bytes where the wire format
//! is the contract, and hostile answers that must come back as errors naming the command.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::ak::{ak_template_bytes, rsa_spki_der};
use super::test_support::*;
use super::*;

const SESSIONS: u16 = 0x8002;
/// TPM_RC_HANDLE for handle 1.
const RC_HANDLE_1: u32 = 0x18B;
/// The password session as we send it: TPM_RS_PW, empty nonce, continueSession, empty hmac.
const PW_SESSION: [u8; 9] = [0x40, 0x00, 0x00, 0x09, 0x00, 0x00, 0x01, 0x00, 0x00];
/// The TPM's answer to it.
const PW_ANSWER: [u8; 5] = [0x00, 0x00, 0x01, 0x00, 0x00];

/// A success answer to a command sent with one password session.
fn session_success(handles: &[u32], params: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for handle in handles {
        body.extend_from_slice(&handle.to_be_bytes());
    }
    body.extend_from_slice(&u32::try_from(params.len()).unwrap().to_be_bytes());
    body.extend_from_slice(params);
    body.extend_from_slice(&PW_ANSWER);
    frame(SESSIONS, 0, &body)
}

fn tpm2b(data: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(data.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(data);
    out
}

/// Rewrites the header's size field after the frame was cut or extended.
fn fix_size(frame: &mut [u8]) {
    let size = u32::try_from(frame.len()).unwrap().to_be_bytes();
    frame[2..6].copy_from_slice(&size);
}

/// A command frame: header with the right size, then `body`.
fn command(tag: u16, cc: u32, body: &[u8]) -> Vec<u8> {
    frame(tag, cc, body)
}

// ---- PCR_Extend ----------------------------------------------------------------------

#[test]
fn pcr_extend_command_bytes() {
    let mut tpm = tpm_with(vec![session_success(&[], &[])]);
    let sha1 = vec![0x11; 20];
    let sha256 = vec![0x22; 32];
    tpm.pcr_extend(
        15,
        &[
            (HashAlg::Sha1, sha1.clone()),
            (HashAlg::Sha256, sha256.clone()),
        ],
    )
    .unwrap();
    let mut body = vec![0x00, 0x00, 0x00, 0x0F]; // pcrHandle: PCR 15
    body.extend_from_slice(&9u32.to_be_bytes()); // authorizationSize
    body.extend_from_slice(&PW_SESSION);
    body.extend_from_slice(&2u32.to_be_bytes()); // TPML_DIGEST_VALUES.count
    body.extend_from_slice(&[0x00, 0x04]);
    body.extend_from_slice(&sha1);
    body.extend_from_slice(&[0x00, 0x0B]);
    body.extend_from_slice(&sha256);
    assert_eq!(tpm.transport.sent, vec![command(SESSIONS, 0x182, &body)]);
}

#[test]
fn pcr_extend_arguments_are_checked_before_sending() {
    let mut tpm = tpm_with(Vec::new());
    let err = tpm
        .pcr_extend(15, &[(HashAlg::Sha256, vec![0; 20])])
        .unwrap_err();
    assert_eq!(err.command(), Some("PCR_Extend"));
    assert!(
        matches!(
            inner(&err),
            TpmError::DigestLength {
                alg: HashAlg::Sha256,
                pcr: 15,
                len: 20,
                expected: 32
            }
        ),
        "{err:?}"
    );
    let err = tpm
        .pcr_extend(
            15,
            &[
                (HashAlg::Sha256, vec![0; 32]),
                (HashAlg::Sha256, vec![1; 32]),
            ],
        )
        .unwrap_err();
    assert!(
        matches!(inner(&err), TpmError::InvalidArgument(_)),
        "{err:?}"
    );
    let err = tpm.pcr_extend(15, &[]).unwrap_err();
    assert!(
        matches!(inner(&err), TpmError::InvalidArgument(_)),
        "{err:?}"
    );
    let err = tpm
        .pcr_extend(32, &[(HashAlg::Sha256, vec![0; 32])])
        .unwrap_err();
    assert!(
        matches!(inner(&err), TpmError::PcrOutOfRange { pcr: 32 }),
        "{err:?}"
    );
    assert!(tpm.transport.sent.is_empty());
}

#[test]
fn pcr_extend_answer_shape_is_checked() {
    let digests = [(HashAlg::Sha256, vec![0; 32])];
    let with_nonce = {
        let mut body = 0u32.to_be_bytes().to_vec();
        body.extend_from_slice(&[0x00, 0x01, 0xAA, 0x01, 0x00, 0x00]);
        frame(SESSIONS, 0, &body)
    };
    let two_sessions = {
        let mut body = 0u32.to_be_bytes().to_vec();
        body.extend_from_slice(&PW_ANSWER);
        body.extend_from_slice(&PW_ANSWER);
        frame(SESSIONS, 0, &body)
    };
    let cases = [
        ("no session area", frame(SESSIONS, 0, &0u32.to_be_bytes())),
        ("nonce in the session answer", with_nonce),
        ("two session answers", two_sessions),
        ("parameters where none belong", session_success(&[], &[0])),
        ("parameterSize beyond the frame", {
            let mut body = 100u32.to_be_bytes().to_vec();
            body.extend_from_slice(&PW_ANSWER);
            frame(SESSIONS, 0, &body)
        }),
        ("truncated", frame(SESSIONS, 0, &[0, 0])),
    ];
    for (name, response) in cases {
        let err = tpm_with(vec![response])
            .pcr_extend(15, &digests)
            .unwrap_err();
        assert!(
            matches!(inner(&err), TpmError::Malformed(_)),
            "{name}: {err:?}"
        );
    }
    // A success answer without the session area has the wrong tag.
    let err = tpm_with(vec![success(&[])])
        .pcr_extend(15, &digests)
        .unwrap_err();
    assert!(
        matches!(inner(&err), TpmError::UnexpectedTag { tag: 0x8001 }),
        "{err:?}"
    );
    // TPM_RC_LOCALITY: PCR 15 not extendable from here.
    let err = tpm_with(vec![failure(0x907)])
        .pcr_extend(15, &digests)
        .unwrap_err();
    assert_eq!(console_line(&err), "PCR_Extend failed (TPM_RC_LOCALITY)");
}

// ---- GetRandom -----------------------------------------------------------------------

#[test]
fn get_random_loops_until_it_has_enough() {
    let random = |n: usize, byte: u8| success(&tpm2b(&vec![byte; n]));
    let mut tpm = tpm_with(vec![random(64, 1), random(20, 2), random(16, 3)]);
    let bytes = tpm.get_random(100).unwrap();
    assert_eq!(bytes.len(), 100);
    assert_eq!(&bytes[..64], &[1; 64][..]);
    assert_eq!(&bytes[64..84], &[2; 20][..]);
    assert_eq!(&bytes[84..], &[3; 16][..]);
    let requested: Vec<u16> = tpm
        .transport
        .sent
        .iter()
        .map(|c| {
            assert_eq!(&c[..10], &[0x80, 0x01, 0, 0, 0, 0x0C, 0, 0, 0x01, 0x7B]);
            u16::from_be_bytes([c[10], c[11]])
        })
        .collect();
    assert_eq!(requested, vec![64, 36, 16]);
    assert_eq!(tpm.get_random(0).unwrap(), Vec::<u8>::new());
}

#[test]
fn get_random_refuses_empty_or_oversized_answers() {
    let err = tpm_with(vec![success(&tpm2b(&[]))])
        .get_random(8)
        .unwrap_err();
    assert!(matches!(inner(&err), TpmError::Malformed(_)), "{err:?}");
    let err = tpm_with(vec![success(&tpm2b(&[0; 9]))])
        .get_random(8)
        .unwrap_err();
    assert!(matches!(inner(&err), TpmError::Malformed(_)), "{err:?}");
    let err = tpm_with(vec![success(&[0, 8, 1, 2])])
        .get_random(8)
        .unwrap_err();
    assert!(matches!(inner(&err), TpmError::Malformed(_)), "{err:?}");
    let mut tpm = tpm_with(Vec::new());
    let err = tpm.get_random(MAX_RANDOM + 1).unwrap_err();
    assert!(
        matches!(inner(&err), TpmError::InvalidArgument(_)),
        "{err:?}"
    );
    assert!(tpm.transport.sent.is_empty());
}

// ---- FlushContext --------------------------------------------------------------------

#[test]
fn flush_context_command_bytes() {
    let mut tpm = tpm_with(vec![success(&[]), failure(0x18B)]);
    tpm.flush_context(0x8000_0001).unwrap();
    assert_eq!(
        tpm.transport.sent[0],
        vec![
            0x80, 0x01, 0, 0, 0, 0x0E, 0, 0, 0x01, 0x65, 0x80, 0x00, 0x00, 0x01
        ]
    );
    let err = tpm.flush_context(0x8000_0001).unwrap_err();
    assert_eq!(
        console_line(&err),
        "FlushContext failed (TPM_RC_HANDLE, handle 1)"
    );
}

// ---- attestation key -----------------------------------------------------------------

/// A 2048-bit modulus, recognisable.
fn modulus() -> Vec<u8> {
    let mut m: Vec<u8> = (0..=255u8).collect();
    m[0] = 0xC5;
    m
}

/// TPMT_PUBLIC of an AK built from the template with `modulus` as unique.
fn ak_area(template: &[u8], modulus: &[u8]) -> Vec<u8> {
    let mut area = template[..template.len() - 2].to_vec();
    area.extend_from_slice(&tpm2b(modulus));
    area
}

fn name_of(area: &[u8]) -> Vec<u8> {
    let mut name = vec![0x00, 0x0B];
    name.extend_from_slice(&Sha256::digest(area));
    name
}

/// The name of an object with public area `area`: its nameAlg and the hash of the area (a
/// placeholder for SHA-1, which the client does not check).
fn object_name(area: &[u8]) -> Vec<u8> {
    match area[2..4] {
        [0x00, 0x0B] => name_of(area),
        _ => [&area[2..4], &[0x5E; 20][..]].concat(),
    }
}

fn read_public_answer(area: &[u8]) -> Vec<u8> {
    let mut body = tpm2b(area);
    body.extend_from_slice(&tpm2b(&object_name(area)));
    body.extend_from_slice(&tpm2b(&name_of(b"qualified")));
    success(&body)
}

fn create_primary_answer(handle: u32, area: &[u8]) -> Vec<u8> {
    let mut params = tpm2b(area);
    params.extend_from_slice(&tpm2b(&[0xCD; 40])); // creationData
    params.extend_from_slice(&tpm2b(&[0xC4; 32])); // creationHash
    params.extend_from_slice(&[0x80, 0x21, 0x40, 0x00, 0x00, 0x0B]); // ticket tag, hierarchy
    params.extend_from_slice(&tpm2b(&[0x71; 32])); // ticket digest
    params.extend_from_slice(&tpm2b(&name_of(area)));
    session_success(&[handle], &params)
}

#[test]
fn ak_template_bytes_are_the_coco_template() {
    let expected = [
        0x00, 0x01, // TPM_ALG_RSA
        0x00, 0x0B, // nameAlg SHA-256
        0x00, 0x05, 0x00,
        0x72, // fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|sign
        0x00, 0x00, // authPolicy empty
        0x00, 0x10, // symmetric TPM_ALG_NULL
        0x00, 0x14, 0x00, 0x0B, // scheme RSASSA, SHA-256
        0x08, 0x00, // keyBits 2048
        0x00, 0x00, 0x00, 0x00, // exponent default (65537)
        0x00, 0x00, // unique empty
    ];
    assert_eq!(ak_template_bytes().unwrap(), expected);
}

#[test]
fn persistent_ak_with_our_template_is_used() {
    let template = ak_template_bytes().unwrap();
    let area = ak_area(&template, &modulus());
    let mut tpm = tpm_with(vec![read_public_answer(&area)]);
    let ak = tpm.attestation_key().unwrap();
    assert_eq!(
        tpm.transport.sent,
        vec![vec![
            0x80, 0x01, 0, 0, 0, 0x0E, 0, 0, 0x01, 0x73, 0x81, 0x01, 0x00, 0x02
        ]]
    );
    assert_eq!(ak.handle, 0x8101_0002);
    assert_eq!(ak.public, tpm2b(&area));
    assert_eq!(ak.rsa_modulus, modulus());
    assert_eq!(ak.rsa_exponent, 65537);
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPublicKey::from_public_key_der(&ak.spki_der).unwrap();
    assert_eq!(key.n().to_bytes_be(), modulus());
    assert_eq!(key.e().to_bytes_be(), vec![1, 0, 1]);
}

#[test]
fn persistent_key_with_another_template_is_refused() {
    let template = ak_template_bytes().unwrap();
    let good = ak_area(&template, &modulus());
    let with = |offset: usize, bytes: &[u8]| {
        let mut area = good.clone();
        area[offset..offset + bytes.len()].copy_from_slice(bytes);
        area
    };
    let cases = [
        (
            "not restricted",
            with(4, &[0x00, 0x04, 0x00, 0x72]),
            "objectAttributes",
        ),
        (
            "decrypt too",
            with(4, &[0x00, 0x07, 0x00, 0x72]),
            "objectAttributes",
        ),
        (
            "not fixedTPM",
            with(4, &[0x00, 0x05, 0x00, 0x70]),
            "objectAttributes",
        ),
        ("SHA-1 names", with(2, &[0x00, 0x04]), "nameAlg"),
        ("RSAPSS", with(12, &[0x00, 0x16]), "scheme"),
        ("SHA-384 signatures", with(14, &[0x00, 0x0C]), "scheme hash"),
        ("1024 bits", with(16, &[0x04, 0x00]), "keyBits"),
        ("exponent 3", with(18, &[0, 0, 0, 3]), "exponent"),
        ("an ECC key", with(0, &[0x00, 0x23]), "type"),
        (
            "a policy",
            {
                let mut area = good[..8].to_vec();
                area.extend_from_slice(&tpm2b(&[0xAB; 32]));
                area.extend_from_slice(&good[10..]);
                area
            },
            "authPolicy",
        ),
        (
            "a short modulus",
            ak_area(&template, &modulus()[..128]),
            "modulus",
        ),
    ];
    for (name, area, field) in cases {
        let err = tpm_with(vec![read_public_answer(&area)])
            .attestation_key()
            .unwrap_err();
        assert!(
            matches!(
                inner(&err),
                TpmError::ForeignKey {
                    handle: 0x8101_0002,
                    ..
                }
            ),
            "{name}: {err:?}"
        );
        let line = console_line(&err);
        let expected = "ReadPublic failed (persistent object 0x81010002 \
                        is not the expected attestation key: ";
        assert!(
            line.starts_with(expected) && line.contains(field),
            "{name}: {line}"
        );
    }
}

#[test]
fn read_public_answer_with_a_wrong_name_is_malformed() {
    let area = ak_area(&ak_template_bytes().unwrap(), &modulus());
    let mut body = tpm2b(&area);
    body.extend_from_slice(&tpm2b(&name_of(b"something else")));
    body.extend_from_slice(&tpm2b(&[]));
    let err = tpm_with(vec![success(&body)])
        .attestation_key()
        .unwrap_err();
    assert!(matches!(inner(&err), TpmError::Malformed(_)), "{err:?}");
    // Truncated and trailing variants of a good answer.
    let good = read_public_answer(&area);
    let mut truncated = good[..good.len() - 3].to_vec();
    fix_size(&mut truncated);
    let mut trailing = good.clone();
    trailing.push(0);
    fix_size(&mut trailing);
    for response in [truncated, trailing] {
        let err = tpm_with(vec![response]).attestation_key().unwrap_err();
        assert!(matches!(inner(&err), TpmError::Malformed(_)), "{err:?}");
    }
}

#[test]
fn missing_ak_is_created_persisted_and_flushed() {
    let template = ak_template_bytes().unwrap();
    let area = ak_area(&template, &modulus());
    let mut tpm = tpm_with(vec![
        failure(RC_HANDLE_1),
        create_primary_answer(0x8000_0000, &area),
        session_success(&[], &[]),
        success(&[]),
    ]);
    let ak = tpm.attestation_key().unwrap();
    assert_eq!(ak.rsa_modulus, modulus());
    let sent = &tpm.transport.sent;
    assert_eq!(sent.len(), 4);

    let mut create = vec![0x40, 0x00, 0x00, 0x0B]; // TPM_RH_ENDORSEMENT
    create.extend_from_slice(&9u32.to_be_bytes());
    create.extend_from_slice(&PW_SESSION);
    create.extend_from_slice(&[0x00, 0x04, 0x00, 0x00, 0x00, 0x00]); // inSensitive
    create.extend_from_slice(&tpm2b(&template)); // inPublic
    create.extend_from_slice(&[0x00, 0x00]); // outsideInfo
    create.extend_from_slice(&[0x00, 0x00, 0x00, 0x00]); // creationPCR
    assert_eq!(sent[1], command(SESSIONS, 0x131, &create));

    let mut evict = vec![0x40, 0x00, 0x00, 0x01, 0x80, 0x00, 0x00, 0x00]; // owner, object
    evict.extend_from_slice(&9u32.to_be_bytes());
    evict.extend_from_slice(&PW_SESSION);
    evict.extend_from_slice(&[0x81, 0x01, 0x00, 0x02]);
    assert_eq!(sent[2], command(SESSIONS, 0x120, &evict));

    assert_eq!(
        sent[3],
        command(NO_SESSIONS, 0x165, &[0x80, 0x00, 0x00, 0x00])
    );
}

#[test]
fn a_created_key_that_is_not_the_template_is_not_persisted() {
    let template = ak_template_bytes().unwrap();
    let mut area = ak_area(&template, &modulus());
    area[6] = 0x04; // restricted cleared
    let mut tpm = tpm_with(vec![
        failure(RC_HANDLE_1),
        create_primary_answer(0x8000_0000, &area),
        success(&[]),
    ]);
    let err = tpm.attestation_key().unwrap_err();
    assert_eq!(err.command(), Some("CreatePrimary"));
    let sent = &tpm.transport.sent;
    assert_eq!(sent.len(), 3, "no EvictControl, but a FlushContext");
    assert_eq!(&sent[2][6..10], &[0, 0, 0x01, 0x65]);
}

#[test]
fn evict_control_failure_still_flushes() {
    let area = ak_area(&ak_template_bytes().unwrap(), &modulus());
    let mut tpm = tpm_with(vec![
        failure(RC_HANDLE_1),
        create_primary_answer(0x8000_0003, &area),
        failure(0x14C), // TPM_RC_NV_DEFINED
        success(&[]),
    ]);
    let err = tpm.attestation_key().unwrap_err();
    assert_eq!(
        console_line(&err),
        "EvictControl failed (TPM_RC_NV_DEFINED)"
    );
    assert_eq!(
        tpm.transport.sent[3],
        command(NO_SESSIONS, 0x165, &[0x80, 0x00, 0x00, 0x03])
    );
}

#[test]
fn create_primary_answer_shape_is_checked() {
    let area = ak_area(&ak_template_bytes().unwrap(), &modulus());
    // A persistent handle where a transient one belongs.
    let err = tpm_with(vec![
        failure(RC_HANDLE_1),
        create_primary_answer(0x8101_0002, &area),
    ])
    .attestation_key()
    .unwrap_err();
    assert!(matches!(inner(&err), TpmError::Malformed(_)), "{err:?}");
    // A truncated parameter area: the object exists, so it is flushed.
    let good = create_primary_answer(0x8000_0000, &area);
    let mut params = good[18..good.len() - 5].to_vec();
    params.truncate(params.len() - 10);
    let mut tpm = tpm_with(vec![
        failure(RC_HANDLE_1),
        session_success(&[0x8000_0000], &params),
        success(&[]),
    ]);
    let err = tpm.attestation_key().unwrap_err();
    assert_eq!(err.command(), Some("CreatePrimary"));
    assert!(matches!(inner(&err), TpmError::Malformed(_)), "{err:?}");
    assert_eq!(tpm.transport.sent.len(), 3);
}

#[test]
fn read_public_errors_other_than_a_missing_handle_are_not_papered_over() {
    let mut tpm = tpm_with(vec![failure(0x101)]);
    let err = tpm.attestation_key().unwrap_err();
    assert_eq!(console_line(&err), "ReadPublic failed (TPM_RC_FAILURE)");
    assert_eq!(tpm.transport.sent.len(), 1);
}

#[test]
fn spki_der_matches_the_standard_encoding() {
    // Exponent 65537 and a modulus whose top bit is set (needs a leading zero byte).
    let der = rsa_spki_der(&modulus(), 65537);
    assert_eq!(
        &der[..33],
        &[
            0x30, 0x82, 0x01, 0x22, 0x30, 0x0D, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D,
            0x01, 0x01, 0x01, 0x05, 0x00, 0x03, 0x82, 0x01, 0x0F, 0x00, 0x30, 0x82, 0x01, 0x0A,
            0x02, 0x82, 0x01, 0x01, 0x00
        ]
    );
    assert_eq!(&der[der.len() - 5..], &[0x02, 0x03, 0x01, 0x00, 0x01]);
    assert_eq!(der.len(), 294);
    // Leading zeros are dropped and short forms used.
    let small = rsa_spki_der(&[0, 0, 0x7F], 3);
    assert_eq!(
        small,
        [
            0x30, 0x1A, 0x30, 0x0D, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01,
            0x01, 0x05, 0x00, 0x03, 0x09, 0x00, 0x30, 0x06, 0x02, 0x01, 0x7F, 0x02, 0x01, 0x03
        ]
    );
}

// ---- Quote ---------------------------------------------------------------------------

fn test_ak() -> AttestationKey {
    let area = ak_area(&ak_template_bytes().unwrap(), &modulus());
    tpm_with(vec![read_public_answer(&area)])
        .attestation_key()
        .unwrap()
}

/// A TPMS_ATTEST quote with the given extraData and one selection.
fn attest(extra: &[u8], hash: u16, select: &[u8]) -> Vec<u8> {
    let mut a = vec![0xFF, 0x54, 0x43, 0x47, 0x80, 0x18];
    a.extend_from_slice(&tpm2b(&name_of(b"signer")));
    a.extend_from_slice(&tpm2b(extra));
    a.extend_from_slice(&0x1234u64.to_be_bytes()); // clock
    a.extend_from_slice(&7u32.to_be_bytes()); // resetCount
    a.extend_from_slice(&2u32.to_be_bytes()); // restartCount
    a.push(1); // safe
    a.extend_from_slice(&0x2019_1023_0016_3636u64.to_be_bytes());
    a.extend_from_slice(&1u32.to_be_bytes());
    a.extend_from_slice(&hash.to_be_bytes());
    a.push(u8::try_from(select.len()).unwrap());
    a.extend_from_slice(select);
    a.extend_from_slice(&tpm2b(&[0xDD; 32]));
    a
}

fn quote_answer(attest: &[u8], sig_alg: u16, hash: u16, sig_len: usize) -> Vec<u8> {
    let mut params = tpm2b(attest);
    params.extend_from_slice(&sig_alg.to_be_bytes());
    params.extend_from_slice(&hash.to_be_bytes());
    params.extend_from_slice(&tpm2b(&vec![0x5A; sig_len]));
    session_success(&[], &params)
}

#[test]
fn quote_command_bytes_and_answer() {
    let ak = test_ak();
    let nonce = [0x4E; 32];
    let message = attest(&nonce, 0x000B, &[0xFF, 0xFF, 0xFF]);
    let mut tpm = tpm_with(vec![quote_answer(&message, 0x0014, 0x000B, 256)]);
    let all: Vec<u32> = (0..24).collect();
    let quote = tpm.quote(&ak, &nonce, &all).unwrap();

    let mut body = vec![0x81, 0x01, 0x00, 0x02]; // signHandle
    body.extend_from_slice(&9u32.to_be_bytes());
    body.extend_from_slice(&PW_SESSION);
    body.extend_from_slice(&tpm2b(&nonce)); // qualifyingData
    body.extend_from_slice(&[0x00, 0x14, 0x00, 0x0B]); // RSASSA, SHA-256
    body.extend_from_slice(&[0, 0, 0, 1, 0x00, 0x0B, 0x03, 0xFF, 0xFF, 0xFF]); // PCRs 0..=23
    assert_eq!(tpm.transport.sent, vec![command(SESSIONS, 0x158, &body)]);

    assert_eq!(quote.attest, message);
    assert_eq!(quote.signature, vec![0x5A; 256]);
    let mut raw = vec![0x00, 0x14, 0x00, 0x0B, 0x01, 0x00];
    raw.extend_from_slice(&[0x5A; 256]);
    assert_eq!(quote.signature_raw, raw);
    assert_eq!(
        verify::rsassa_signature(&quote.signature_raw).unwrap(),
        quote.signature
    );
}

#[test]
fn quote_answers_that_do_not_match_the_request_are_refused() {
    let ak = test_ak();
    let nonce = [0x4E; 32];
    let pcrs = [0, 7, 15];
    let select = [0x81, 0x80, 0x00];
    let good = attest(&nonce, 0x000B, &select);
    let mut trailing = good.clone();
    trailing.push(0);
    let cases = [
        (
            "other nonce",
            quote_answer(&attest(&[0x4F; 32], 0x000B, &select), 0x14, 0x0B, 256),
        ),
        (
            "other PCRs",
            quote_answer(
                &attest(&nonce, 0x000B, &[0x81, 0x00, 0x00]),
                0x14,
                0x0B,
                256,
            ),
        ),
        (
            "other bank",
            quote_answer(&attest(&nonce, 0x0004, &select), 0x14, 0x0B, 256),
        ),
        ("RSAPSS", quote_answer(&good, 0x16, 0x0B, 256)),
        ("SHA-1 signature", quote_answer(&good, 0x14, 0x04, 256)),
        ("short signature", quote_answer(&good, 0x14, 0x0B, 128)),
        (
            "bytes after TPMS_ATTEST",
            quote_answer(&trailing, 0x14, 0x0B, 256),
        ),
        ("not a quote", {
            let mut certify = good.clone();
            certify[5] = 0x17;
            quote_answer(&certify, 0x14, 0x0B, 256)
        }),
        ("bad magic", {
            let mut fake = good.clone();
            fake[0] = 0;
            quote_answer(&fake, 0x14, 0x0B, 256)
        }),
        ("truncated", {
            let full = quote_answer(&good, 0x14, 0x0B, 256);
            let params = &full[14..full.len() - 5 - 20];
            session_success(&[], params)
        }),
    ];
    for (name, response) in cases {
        let err = tpm_with(vec![response])
            .quote(&ak, &nonce, &pcrs)
            .unwrap_err();
        assert_eq!(err.command(), Some("Quote"), "{name}");
        assert!(
            matches!(inner(&err), TpmError::Malformed(_)),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn quote_arguments_are_checked_before_sending() {
    let ak = test_ak();
    let mut tpm = tpm_with(Vec::new());
    let err = tpm.quote(&ak, &[0; 65], &[0]).unwrap_err();
    assert!(
        matches!(inner(&err), TpmError::InvalidArgument(_)),
        "{err:?}"
    );
    let err = tpm.quote(&ak, &[0; 32], &[]).unwrap_err();
    assert!(
        matches!(inner(&err), TpmError::InvalidArgument(_)),
        "{err:?}"
    );
    let err = tpm.quote(&ak, &[0; 32], &[40]).unwrap_err();
    assert!(
        matches!(inner(&err), TpmError::PcrOutOfRange { pcr: 40 }),
        "{err:?}"
    );
    assert!(tpm.transport.sent.is_empty());
}

#[test]
fn parse_attest_never_panics_on_a_prefix() {
    let message = attest(&[1; 32], 0x000B, &[0xFF, 0xFF, 0xFF]);
    let parsed = verify::parse_attest(&message).unwrap();
    assert_eq!(parsed.extra_data, vec![1; 32]);
    assert_eq!(parsed.clock_info.clock, 0x1234);
    assert_eq!(parsed.clock_info.reset_count, 7);
    assert_eq!(parsed.clock_info.restart_count, 2);
    assert!(parsed.clock_info.safe);
    assert_eq!(parsed.firmware_version, 0x2019_1023_0016_3636);
    assert_eq!(parsed.pcr_select.len(), 1);
    assert_eq!(parsed.pcr_select[0].pcrs, (0..24).collect::<Vec<u32>>());
    assert_eq!(parsed.pcr_digest, vec![0xDD; 32]);
    for len in 0..message.len() {
        assert!(verify::parse_attest(&message[..len]).is_err(), "{len}");
    }
    let mut bad_safe = message.clone();
    bad_safe[6 + 2 + 34 + 2 + 32 + 16] = 2;
    assert!(verify::parse_attest(&bad_safe).is_err());
    let mut huge_count = message.clone();
    huge_count[6 + 2 + 34 + 2 + 32 + 17 + 8..][..4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(verify::parse_attest(&huge_count).is_err());
    // The limits: 4-byte selections (32 PCRs), at most 8 banks.
    assert!(verify::parse_attest(&attest(&[1; 32], 0x000B, &[0xFF; 4])).is_ok());
    let wide = verify::parse_attest(&attest(&[1; 32], 0x000B, &[0xFF; 5])).unwrap_err();
    assert!(
        matches!(&wide, TpmError::Malformed(m) if m.contains("sizeofSelect 5")),
        "{wide:?}"
    );
    let mut nine_banks = message.clone();
    nine_banks[6 + 2 + 34 + 2 + 32 + 17 + 8..][..4].copy_from_slice(&9u32.to_be_bytes());
    let err = verify::parse_attest(&nine_banks).unwrap_err();
    assert!(
        matches!(&err, TpmError::Malformed(m) if m.contains("9 PCR selections")),
        "{err:?}"
    );
}

// ---- NV ------------------------------------------------------------------------------

fn nv_area(index: u32, attributes: u32, size: u16) -> Vec<u8> {
    let mut area = index.to_be_bytes().to_vec();
    area.extend_from_slice(&[0x00, 0x0B]);
    area.extend_from_slice(&attributes.to_be_bytes());
    area.extend_from_slice(&tpm2b(&[]));
    area.extend_from_slice(&size.to_be_bytes());
    area
}

fn nv_public_answer(area: &[u8]) -> Vec<u8> {
    let mut body = tpm2b(area);
    body.extend_from_slice(&tpm2b(&name_of(area)));
    success(&body)
}

fn nv_buffer_max_answer(value: Option<u32>) -> Vec<u8> {
    let mut body = vec![0x01];
    body.extend_from_slice(&6u32.to_be_bytes());
    body.extend_from_slice(&1u32.to_be_bytes());
    match value {
        Some(v) => {
            body.extend_from_slice(&0x12Cu32.to_be_bytes());
            body.extend_from_slice(&v.to_be_bytes());
        }
        // The next property the TPM has.
        None => {
            body.extend_from_slice(&0x12Du32.to_be_bytes());
            body.extend_from_slice(&99u32.to_be_bytes());
        }
    }
    success(&body)
}

fn nv_data_answer(data: &[u8]) -> Vec<u8> {
    session_success(&[], &tpm2b(data))
}

const AUTHREAD_WRITTEN: u32 = 0x2004_0000;
const OWNERREAD_WRITTEN: u32 = 0x2002_0000;

#[test]
fn nv_read_public_parses() {
    let area = nv_area(0x0140_0001, OWNERREAD_WRITTEN, 2600);
    let mut tpm = tpm_with(vec![nv_public_answer(&area)]);
    let public = tpm.nv_read_public(0x0140_0001).unwrap();
    assert_eq!(
        public,
        NvPublic {
            index: 0x0140_0001,
            name_alg: 0x000B,
            attributes: OWNERREAD_WRITTEN,
            auth_policy: Vec::new(),
            data_size: 2600,
            name: name_of(&area),
        }
    );
    assert_eq!(
        tpm.transport.sent,
        vec![command(NO_SESSIONS, 0x169, &[0x01, 0x40, 0x00, 0x01])]
    );
}

#[test]
fn nv_read_in_chunks_with_the_index_as_auth() {
    let index = 0x01C1_0000;
    let data: Vec<u8> = (0..1300u32).map(|i| (i % 251) as u8).collect();
    let mut tpm = tpm_with(vec![
        nv_public_answer(&nv_area(index, AUTHREAD_WRITTEN, 1300)),
        nv_buffer_max_answer(Some(512)),
        nv_data_answer(&data[..512]),
        nv_data_answer(&data[512..1024]),
        nv_data_answer(&data[1024..]),
    ]);
    assert_eq!(tpm.nv_read(index).unwrap(), data);
    let sent = &tpm.transport.sent;
    assert_eq!(
        sent[1],
        command(
            NO_SESSIONS,
            0x17A,
            &[0, 0, 0, 6, 0, 0, 0x01, 0x2C, 0, 0, 0, 1]
        )
    );
    let read = |size: u16, offset: u16| {
        let mut body = index.to_be_bytes().to_vec();
        body.extend_from_slice(&index.to_be_bytes());
        body.extend_from_slice(&9u32.to_be_bytes());
        body.extend_from_slice(&PW_SESSION);
        body.extend_from_slice(&size.to_be_bytes());
        body.extend_from_slice(&offset.to_be_bytes());
        command(SESSIONS, 0x14E, &body)
    };
    assert_eq!(sent[2..], [read(512, 0), read(512, 512), read(276, 1024)]);
}

#[test]
fn nv_read_as_owner_when_only_the_owner_may_read() {
    let index = 0x0140_0001;
    let mut tpm = tpm_with(vec![
        nv_public_answer(&nv_area(index, OWNERREAD_WRITTEN, 10)),
        nv_buffer_max_answer(None),
        nv_data_answer(&[7; 10]),
    ]);
    assert_eq!(tpm.nv_read(index).unwrap(), vec![7; 10]);
    assert_eq!(
        &tpm.transport.sent[2][10..18],
        &[0x40, 0, 0, 0x01, 0x01, 0x40, 0, 0x01]
    );
}

#[test]
fn nv_read_uses_1024_byte_chunks_when_the_tpm_does_not_say() {
    let index = 0x0150_0000;
    let mut tpm = tpm_with(vec![
        nv_public_answer(&nv_area(index, AUTHREAD_WRITTEN, 1500)),
        nv_buffer_max_answer(None),
        nv_data_answer(&[1; 1024]),
        nv_data_answer(&[2; 476]),
    ]);
    let data = tpm.nv_read(index).unwrap();
    assert_eq!(data.len(), 1500);
    let sizes: Vec<u16> = tpm.transport.sent[2..]
        .iter()
        .map(|c| u16::from_be_bytes([c[31], c[32]]))
        .collect();
    assert_eq!(sizes, vec![1024, 476]);
}

#[test]
fn nv_read_of_an_absent_index_is_a_handle_error() {
    let err = tpm_with(vec![failure(RC_HANDLE_1)])
        .nv_read(0x0140_0001)
        .unwrap_err();
    assert_eq!(
        console_line(&err),
        "NV_ReadPublic failed (TPM_RC_HANDLE, handle 1)"
    );
    assert_eq!(err.response_base(), Some(TPM_RC_HANDLE));
}

#[test]
fn nv_answers_are_checked() {
    let index = 0x0140_0001;
    let good = nv_area(index, AUTHREAD_WRITTEN, 8);
    let public_cases = [
        (
            "other index",
            nv_public_answer(&nv_area(0x0140_0002, AUTHREAD_WRITTEN, 8)),
        ),
        ("wrong name", {
            let mut body = tpm2b(&good);
            body.extend_from_slice(&tpm2b(&name_of(b"other")));
            success(&body)
        }),
        ("area longer than its fields", {
            let mut area = good.clone();
            area.push(0);
            nv_public_answer(&area)
        }),
        (
            "area shorter than its fields",
            nv_public_answer(&good[..good.len() - 1]),
        ),
        ("trailing bytes", {
            let mut response = nv_public_answer(&good);
            response.push(0);
            fix_size(&mut response);
            response
        }),
    ];
    for (name, response) in public_cases {
        let err = tpm_with(vec![response]).nv_read(index).unwrap_err();
        assert_eq!(err.command(), Some("NV_ReadPublic"), "{name}");
        assert!(
            matches!(inner(&err), TpmError::Malformed(_)),
            "{name}: {err:?}"
        );
    }
    let data_cases = [
        ("short chunk", nv_data_answer(&[0; 7])),
        ("long chunk", nv_data_answer(&[0; 9])),
        ("truncated", session_success(&[], &[0, 8, 1])),
    ];
    for (name, response) in data_cases {
        let err = tpm_with(vec![
            nv_public_answer(&good),
            nv_buffer_max_answer(Some(1024)),
            response,
        ])
        .nv_read(index)
        .unwrap_err();
        assert_eq!(err.command(), Some("NV_Read"), "{name}");
        assert!(
            matches!(inner(&err), TpmError::Malformed(_)),
            "{name}: {err:?}"
        );
    }
    // Not an NV index at all: refused before sending.
    let mut tpm = tpm_with(Vec::new());
    let err = tpm.nv_read(0x8101_0002).unwrap_err();
    assert!(
        matches!(inner(&err), TpmError::InvalidArgument(_)),
        "{err:?}"
    );
    assert!(tpm.transport.sent.is_empty());
    // An empty index needs no NV_Read.
    let mut tpm = tpm_with(vec![nv_public_answer(&nv_area(index, AUTHREAD_WRITTEN, 0))]);
    assert_eq!(tpm.nv_read(index).unwrap(), Vec::<u8>::new());
    assert_eq!(tpm.transport.sent.len(), 1);
}

// ---- response codes ------------------------------------------------------------------

#[test]
fn response_code_base_strips_the_handle_number() {
    assert_eq!(ResponseCode(0x18B).base(), TPM_RC_HANDLE);
    assert_eq!(ResponseCode(0x28B).base(), TPM_RC_HANDLE);
    assert_eq!(ResponseCode(0x9CB).base(), TPM_RC_HANDLE); // session 1
    assert_eq!(ResponseCode(0x100).base(), 0x100);
    assert_eq!(ResponseCode(0x922).base(), 0x922);
}

// ---- device transport deadline -------------------------------------------------------

fn device_over(stream: UnixStream, timeout: Duration) -> Tpm<DeviceTransport> {
    let fd = std::os::fd::OwnedFd::from(stream);
    let mut transport = DeviceTransport::from_file(std::fs::File::from(fd));
    transport.set_timeouts(timeout, timeout);
    Tpm::new(transport)
}

#[test]
fn device_transport_gives_up_on_a_silent_tpm() {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let mut tpm = device_over(ours, Duration::from_millis(200));
    let started = Instant::now();
    let err = tpm.startup_clear().unwrap_err();
    assert!(matches!(inner(&err), TpmError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        console_line(&err),
        "Startup failed (no answer from the TPM within 0.2 s)"
    );

    // The command did arrive; while its answer is outstanding, nothing else is sent.
    let mut got = [0u8; 12];
    theirs.read_exact(&mut got).unwrap();
    assert_eq!(&got[6..10], &[0, 0, 0x01, 0x44]);
    let err = tpm.startup_clear().unwrap_err();
    assert!(matches!(inner(&err), TpmError::Busy), "{err:?}");

    // Once the stale answer shows up it is discarded, and the next command gets its own.
    theirs.write_all(&frame(NO_SESSIONS, 0x101, &[])).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let peer = std::thread::spawn(move || {
        let mut command = [0u8; 12];
        theirs.read_exact(&mut command).unwrap();
        theirs.write_all(&frame(NO_SESSIONS, 0x100, &[])).unwrap();
        theirs
    });
    tpm.startup_clear().unwrap();
    drop(peer.join().unwrap());
}

#[test]
fn device_transport_returns_a_prompt_answer() {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let mut tpm = device_over(ours, Duration::from_secs(10));
    let peer = std::thread::spawn(move || {
        let mut command = [0u8; 12];
        theirs.read_exact(&mut command).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        theirs.write_all(&success(&[])).unwrap();
        theirs
    });
    tpm.startup_clear().unwrap();
    drop(peer.join().unwrap());
}

// ---- retries -------------------------------------------------------------------------

#[test]
fn retry_warnings_resend_the_same_command() {
    let mut tpm = tpm_with(vec![
        failure(0x922), // TPM_RC_RETRY
        failure(0x908), // TPM_RC_YIELDED
        failure(0x90A), // TPM_RC_TESTING
        success(&[]),
    ]);
    tpm.flush_context(0x8000_0000).unwrap();
    let sent = &tpm.transport.sent;
    assert_eq!(sent.len(), 4);
    assert!(sent.iter().all(|c| c == &sent[0]));
}

#[test]
fn retries_are_bounded() {
    let mut tpm = tpm_with(vec![failure(0x922); 20]);
    let err = tpm.flush_context(0x8000_0000).unwrap_err();
    assert_eq!(console_line(&err), "FlushContext failed (TPM_RC_RETRY)");
    assert_eq!(tpm.transport.sent.len(), 8);
}
