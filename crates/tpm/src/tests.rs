//! Canned-response tests: every malformed shape a hostile TPM could send must come back as
//! an error naming the command, and well-formed answers must parse exactly.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use super::test_support::*;
use super::*;

const TPM_RC_VALUE_PARAM_1: u32 = 0x1C4;

fn capability_body(more_data: u8, selections: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = vec![more_data];
    body.extend_from_slice(&5u32.to_be_bytes());
    body.extend_from_slice(&u32::try_from(selections.len()).unwrap().to_be_bytes());
    for (alg, select) in selections {
        body.extend_from_slice(&alg.to_be_bytes());
        body.push(u8::try_from(select.len()).unwrap());
        body.extend_from_slice(select);
    }
    body
}

fn pcr_read_body(counter: u32, alg: u16, select: &[u8], digests: &[Vec<u8>]) -> Vec<u8> {
    let mut body = counter.to_be_bytes().to_vec();
    body.extend_from_slice(&1u32.to_be_bytes());
    body.extend_from_slice(&alg.to_be_bytes());
    body.push(u8::try_from(select.len()).unwrap());
    body.extend_from_slice(select);
    body.extend_from_slice(&u32::try_from(digests.len()).unwrap().to_be_bytes());
    for d in digests {
        body.extend_from_slice(&u16::try_from(d.len()).unwrap().to_be_bytes());
        body.extend_from_slice(d);
    }
    body
}

/// A digest recognisable by PCR index.
fn digest(pcr: u32, len: usize) -> Vec<u8> {
    vec![u8::try_from(pcr).unwrap() + 1; len]
}

/// The pcrSelect bytes of a marshalled one-bank PCR_Read command.
fn sent_select(command: &[u8]) -> (u16, Vec<u8>) {
    assert_eq!(&command[6..10], &0x17Eu32.to_be_bytes(), "not PCR_Read");
    assert_eq!(&command[10..14], &1u32.to_be_bytes());
    let alg = u16::from_be_bytes([command[14], command[15]]);
    let size = usize::from(command[16]);
    assert_eq!(command.len(), 17 + size);
    (alg, command[17..].to_vec())
}

// ---- envelope ------------------------------------------------------------------------

#[test]
fn truncated_response_is_an_error() {
    let mut tpm = tpm_with(vec![vec![0x80, 0x01, 0x00, 0x00, 0x00]]);
    let err = tpm.pcr_banks().unwrap_err();
    assert_eq!(err.command(), Some("GetCapability"));
    assert!(
        matches!(inner(&err), TpmError::Truncated { len: 5 }),
        "{err:?}"
    );
    assert_eq!(
        console_line(&err),
        "GetCapability failed (response is 5 bytes, shorter than the 10-byte header)"
    );
}

#[test]
fn empty_response_is_an_error() {
    let mut tpm = tpm_with(vec![Vec::new()]);
    let err = tpm.startup_clear().unwrap_err();
    assert!(
        matches!(inner(&err), TpmError::Truncated { len: 0 }),
        "{err:?}"
    );
}

#[test]
fn size_field_larger_than_data_is_an_error() {
    let mut response = success(&[0; 4]);
    response[2..6].copy_from_slice(&20u32.to_be_bytes());
    let err = tpm_with(vec![response]).pcr_banks().unwrap_err();
    assert!(
        matches!(
            inner(&err),
            TpmError::SizeMismatch {
                declared: 20,
                actual: 14
            }
        ),
        "{err:?}"
    );
}

#[test]
fn size_field_smaller_than_data_is_an_error() {
    let mut response = success(&[0; 4]);
    response[2..6].copy_from_slice(&10u32.to_be_bytes());
    let err = tpm_with(vec![response]).pcr_banks().unwrap_err();
    assert!(
        matches!(
            inner(&err),
            TpmError::SizeMismatch {
                declared: 10,
                actual: 14
            }
        ),
        "{err:?}"
    );
}

#[test]
fn oversized_response_is_an_error() {
    let big = success(&vec![0; 5000]);
    let err = tpm_with(vec![big]).pcr_banks().unwrap_err();
    assert!(
        matches!(inner(&err), TpmError::TooLarge { len: 5010 }),
        "{err:?}"
    );

    // A huge size claim on a short frame is refused as too large, not trusted.
    let mut claim = success(&[]);
    claim[2..6].copy_from_slice(&u32::MAX.to_be_bytes());
    let err = tpm_with(vec![claim]).pcr_banks().unwrap_err();
    assert!(
        matches!(inner(&err), TpmError::TooLarge { len } if *len == u64::from(u32::MAX)),
        "{err:?}"
    );
}

#[test]
fn wrong_tag_is_an_error() {
    let sessions = frame(0x8002, 0, &capability_body(0, &[]));
    let err = tpm_with(vec![sessions]).pcr_banks().unwrap_err();
    assert!(
        matches!(inner(&err), TpmError::UnexpectedTag { tag: 0x8002 }),
        "{err:?}"
    );
    assert_eq!(
        console_line(&err),
        "GetCapability failed (unexpected response tag 0x8002)"
    );

    let garbage = frame(0x1234, TPM_RC_VALUE_PARAM_1, &[]);
    let err = tpm_with(vec![garbage]).pcr_banks().unwrap_err();
    assert!(
        matches!(inner(&err), TpmError::UnexpectedTag { tag: 0x1234 }),
        "{err:?}"
    );
}

#[test]
fn error_code_reads_well_on_the_console() {
    let mut tpm = tpm_with(vec![frame(NO_SESSIONS, TPM_RC_VALUE_PARAM_1, &[])]);
    let err = tpm.pcr_read(HashAlg::Sha256, &[0]).unwrap_err();
    assert_eq!(err.response_code(), Some(TPM_RC_VALUE_PARAM_1));
    assert_eq!(
        console_line(&err),
        "PCR_Read failed (TPM_RC_VALUE, parameter 1)"
    );
}

#[test]
fn error_response_with_a_body_is_malformed() {
    let response = frame(NO_SESSIONS, TPM_RC_VALUE_PARAM_1, &[0, 0]);
    let err = tpm_with(vec![response]).pcr_banks().unwrap_err();
    assert!(matches!(inner(&err), TpmError::Malformed(_)), "{err:?}");
    assert_eq!(err.response_code(), None);
}

#[test]
fn bad_tag_answer_in_tpm12_style_still_shows_its_code() {
    let response = frame(0x00C4, 0x1E, &[]);
    let err = tpm_with(vec![response]).startup_clear().unwrap_err();
    assert_eq!(console_line(&err), "Startup failed (TPM_RC_BAD_TAG)");
}

#[test]
fn response_codes_decode_by_format() {
    let show = |rc| ResponseCode(rc).to_string();
    assert_eq!(show(0x100), "TPM_RC_INITIALIZE");
    assert_eq!(show(0x101), "TPM_RC_FAILURE");
    assert_eq!(show(0x922), "TPM_RC_RETRY");
    assert_eq!(show(0x1C4), "TPM_RC_VALUE, parameter 1");
    assert_eq!(show(0x2C4), "TPM_RC_VALUE, parameter 2");
    assert_eq!(show(0x18B), "TPM_RC_HANDLE, handle 1");
    assert_eq!(show(0x98E), "TPM_RC_AUTH_FAIL, session 1");
    assert_eq!(show(0x084), "TPM_RC_VALUE");
    assert_eq!(show(0x0401), "vendor-defined response code 0x00000401");
    assert_eq!(
        show(0x000B_0005),
        "response code 0x000b0005 from software layer 11"
    );
    assert_eq!(show(0x0000_0abc), "unknown TPM response code 0x00000abc");
}

#[test]
fn transport_errors_name_the_command() {
    let err = tpm_with(Vec::new()).pcr_banks().unwrap_err();
    assert!(
        console_line(&err).starts_with("GetCapability failed (read from TPM failed: "),
        "{}",
        console_line(&err)
    );
}

// ---- GetCapability(TPM_CAP_PCRS) -----------------------------------------------------

#[test]
fn capability_command_bytes() {
    let mut tpm = tpm_with(vec![success(&capability_body(0, &[]))]);
    tpm.pcr_banks().unwrap();
    let expected = [
        0x80, 0x01, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x01, 0x7A, // header
        0x00, 0x00, 0x00, 0x05, // TPM_CAP_PCRS
        0x00, 0x00, 0x00, 0x00, // property
        0x00, 0x00, 0x00, 0x10, // propertyCount
    ];
    assert_eq!(tpm.transport.sent, vec![expected.to_vec()]);
}

#[test]
fn capability_answer_parses_into_banks() {
    let all24: &[u8] = &[0xff, 0xff, 0xff];
    let body = capability_body(
        0,
        &[
            (0x0004, all24),
            (0x000B, all24),
            (0x0027, all24),      // SHA3-256: known to the TPM, not to us: skipped
            (0x7777, &[0xff; 5]), // an unassigned algorithm id: skipped
            (0x000C, &[0x00, 0x00, 0x00]), // allocated nowhere: inactive
            (0x000D, &[0x01, 0x80, 0x00, 0x01]),
        ],
    );
    let banks = tpm_with(vec![success(&body)]).pcr_banks().unwrap();
    let all: Vec<u32> = (0..24).collect();
    assert_eq!(
        banks,
        vec![
            PcrBank {
                alg: HashAlg::Sha1,
                pcrs: all.clone()
            },
            PcrBank {
                alg: HashAlg::Sha256,
                pcrs: all
            },
            PcrBank {
                alg: HashAlg::Sha384,
                pcrs: vec![]
            },
            PcrBank {
                alg: HashAlg::Sha512,
                pcrs: vec![0, 15, 24]
            },
        ]
    );
    assert!(banks[1].is_active());
    assert!(!banks[2].is_active());
}

#[test]
fn malformed_pcr_selection_is_an_error() {
    // sizeofSelect claims 3 bytes, 2 follow.
    let mut body = capability_body(0, &[(0x000B, &[0xff, 0xff, 0xff])]);
    body.pop();
    let err = tpm_with(vec![success(&body)]).pcr_banks().unwrap_err();
    assert!(matches!(inner(&err), TpmError::Malformed(_)), "{err:?}");
    assert!(
        console_line(&err).contains("pcrSelect at byte 22 needs 3 bytes, 2 left"),
        "{}",
        console_line(&err)
    );

    // The same for a bank we would skip: skipping never skips validation.
    let mut body = capability_body(0, &[(0x7777, &[0xff, 0xff, 0xff])]);
    body.pop();
    assert!(tpm_with(vec![success(&body)]).pcr_banks().is_err());

    // Count larger than the entries present.
    let mut body = capability_body(0, &[(0x000B, &[0xff, 0xff, 0xff])]);
    body[5..9].copy_from_slice(&2u32.to_be_bytes());
    assert!(tpm_with(vec![success(&body)]).pcr_banks().is_err());

    // Absurd count.
    let mut body = capability_body(0, &[]);
    body[5..9].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(tpm_with(vec![success(&body)]).pcr_banks().is_err());
}

#[test]
fn capability_answer_shape_is_checked() {
    let sel: &[(u16, &[u8])] = &[(0x000B, &[0xff, 0xff, 0xff])];
    let cases = [
        ("trailing bytes", {
            let mut b = capability_body(0, sel);
            b.push(0);
            b
        }),
        ("bad moreData", capability_body(2, sel)),
        ("more data pending", capability_body(1, sel)),
        ("wrong capability", {
            let mut b = capability_body(0, sel);
            b[1..5].copy_from_slice(&6u32.to_be_bytes());
            b
        }),
        (
            "duplicate bank",
            capability_body(0, &[(0x000B, &[0xff; 3]), (0x000B, &[0xff; 3])]),
        ),
        ("empty body", Vec::new()),
    ];
    for (name, body) in cases {
        let err = tpm_with(vec![success(&body)]).pcr_banks().unwrap_err();
        assert!(
            matches!(inner(&err), TpmError::Malformed(_)),
            "{name}: {err:?}"
        );
    }
}

// ---- PCR_Read ------------------------------------------------------------------------

#[test]
fn pcr_read_command_bytes() {
    let response = success(&pcr_read_body(7, 0x000B, &[0x01, 0, 0], &[digest(0, 32)]));
    let mut tpm = tpm_with(vec![response]);
    tpm.pcr_read(HashAlg::Sha256, &[0]).unwrap();
    let expected = [
        0x80, 0x01, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x01, 0x7E, // header
        0x00, 0x00, 0x00, 0x01, // one selection
        0x00, 0x0B, 0x03, 0x01, 0x00, 0x00, // sha256, PCR 0
    ];
    assert_eq!(tpm.transport.sent, vec![expected.to_vec()]);
}

#[test]
fn pcr_read_answer_parses() {
    let response = success(&pcr_read_body(
        3,
        0x0004,
        &[0b0000_0101, 0, 0x80],
        &[digest(0, 20), digest(2, 20), digest(23, 20)],
    ));
    let values = tpm_with(vec![response])
        .pcr_read(HashAlg::Sha1, &[23, 2, 0, 2])
        .unwrap();
    assert_eq!(
        values,
        vec![(0, digest(0, 20)), (2, digest(2, 20)), (23, digest(23, 20))]
    );
}

#[test]
fn pcr_read_continues_after_a_partial_answer() {
    let select = |pcrs: std::ops::Range<u32>| {
        let mut bits = [0u8; 3];
        for p in pcrs {
            bits[p as usize / 8] |= 1 << (p % 8);
        }
        bits
    };
    let answer = |pcrs: std::ops::Range<u32>| {
        let digests: Vec<Vec<u8>> = pcrs.clone().map(|p| digest(p, 32)).collect();
        success(&pcr_read_body(9, 0x000B, &select(pcrs), &digests))
    };
    let mut tpm = tpm_with(vec![answer(0..8), answer(8..16), answer(16..24)]);
    let all: Vec<u32> = (0..24).collect();
    let values = tpm.pcr_read(HashAlg::Sha256, &all).unwrap();
    assert_eq!(values.len(), 24);
    for (i, (pcr, value)) in values.iter().enumerate() {
        assert_eq!(*pcr, u32::try_from(i).unwrap());
        assert_eq!(*value, digest(*pcr, 32));
    }
    let asked: Vec<(u16, Vec<u8>)> = tpm.transport.sent.iter().map(|c| sent_select(c)).collect();
    assert_eq!(
        asked,
        vec![
            (0x000B, select(0..24).to_vec()),
            (0x000B, select(8..24).to_vec()),
            (0x000B, select(16..24).to_vec()),
        ]
    );
}

#[test]
fn pcr_read_restarts_when_the_update_counter_moves() {
    let first_eight = |counter| {
        let digests: Vec<Vec<u8>> = (0..8).map(|p| digest(p, 32)).collect();
        success(&pcr_read_body(counter, 0x000B, &[0xff, 0, 0], &digests))
    };
    let ninth = |counter| {
        success(&pcr_read_body(
            counter,
            0x000B,
            &[0, 0x01, 0],
            &[digest(8, 32)],
        ))
    };
    // An extend lands between the two halves of the first pass; the second pass is clean.
    let mut tpm = tpm_with(vec![first_eight(1), ninth(2), first_eight(2), ninth(2)]);
    let pcrs: Vec<u32> = (0..9).collect();
    let values = tpm.pcr_read(HashAlg::Sha256, &pcrs).unwrap();
    assert_eq!(values.len(), 9);
    assert_eq!(tpm.transport.sent.len(), 4);
    let restarted = sent_select(&tpm.transport.sent[2]);
    assert_eq!(restarted, (0x000B, vec![0xff, 0x01, 0]));
}

#[test]
fn pcr_read_gives_up_when_pcrs_keep_changing() {
    let mut responses = Vec::new();
    for attempt in 0..PCR_READ_ATTEMPTS {
        let digests: Vec<Vec<u8>> = (0..8).map(|p| digest(p, 32)).collect();
        responses.push(success(&pcr_read_body(
            attempt * 2,
            0x000B,
            &[0xff, 0, 0],
            &digests,
        )));
        responses.push(success(&pcr_read_body(
            attempt * 2 + 1,
            0x000B,
            &[0, 1, 0],
            &[digest(8, 32)],
        )));
    }
    let pcrs: Vec<u32> = (0..9).collect();
    let err = tpm_with(responses)
        .pcr_read(HashAlg::Sha256, &pcrs)
        .unwrap_err();
    assert!(
        matches!(inner(&err), TpmError::PcrsChanging { .. }),
        "{err:?}"
    );
}

#[test]
fn digest_of_wrong_length_is_rejected() {
    let response = success(&pcr_read_body(
        1,
        0x000B,
        &[0x03, 0, 0],
        &[digest(0, 32), digest(1, 20)],
    ));
    let err = tpm_with(vec![response])
        .pcr_read(HashAlg::Sha256, &[0, 1])
        .unwrap_err();
    assert!(
        matches!(
            inner(&err),
            TpmError::DigestLength {
                alg: HashAlg::Sha256,
                pcr: 1,
                len: 20,
                expected: 32
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        console_line(&err),
        "PCR_Read failed (sha256 PCR 1 digest is 20 bytes, expected 32)"
    );
}

#[test]
fn pcr_read_answer_shape_is_checked() {
    let d = |n| (0..n).map(|p| digest(p, 32)).collect::<Vec<_>>();
    let cases = [
        (
            "fewer digests than selected",
            pcr_read_body(1, 0x000B, &[0x03, 0, 0], &d(1)),
        ),
        (
            "more digests than selected",
            pcr_read_body(1, 0x000B, &[0x01, 0, 0], &d(2)),
        ),
        (
            "wrong bank",
            pcr_read_body(1, 0x0004, &[0x01, 0, 0], &[digest(0, 20)]),
        ),
        (
            "unasked PCR",
            pcr_read_body(1, 0x000B, &[0x02, 0, 0], &[digest(1, 32)]),
        ),
        ("trailing bytes", {
            let mut b = pcr_read_body(1, 0x000B, &[0x01, 0, 0], &d(1));
            b.push(0);
            b
        }),
        ("truncated digest", {
            let mut b = pcr_read_body(1, 0x000B, &[0x01, 0, 0], &d(1));
            b.pop();
            b
        }),
        (
            "digest larger than any hash",
            pcr_read_body(1, 0x000B, &[0x01, 0, 0], &[vec![0; 65]]),
        ),
        (
            "select too large",
            pcr_read_body(1, 0x000B, &[0x01, 0, 0, 0, 0], &d(1)),
        ),
    ];
    for (name, body) in cases {
        let err = tpm_with(vec![success(&body)])
            .pcr_read(HashAlg::Sha256, &[0])
            .unwrap_err();
        assert!(
            matches!(inner(&err), TpmError::Malformed(_)),
            "{name}: {err:?}"
        );
        assert_eq!(err.command(), Some("PCR_Read"), "{name}");
    }
}

#[test]
fn unallocated_pcrs_are_an_error() {
    let response = success(&pcr_read_body(1, 0x000C, &[0, 0, 0], &[]));
    let err = tpm_with(vec![response])
        .pcr_read(HashAlg::Sha384, &[4])
        .unwrap_err();
    assert_eq!(
        console_line(&err),
        "PCR_Read failed (sha384 PCRs [4] are not allocated)"
    );

    // An empty selection list says the same.
    let mut body = 1u32.to_be_bytes().to_vec();
    body.extend_from_slice(&0u32.to_be_bytes());
    body.extend_from_slice(&0u32.to_be_bytes());
    let err = tpm_with(vec![success(&body)])
        .pcr_read(HashAlg::Sha384, &[4])
        .unwrap_err();
    assert!(
        matches!(inner(&err), TpmError::PcrNotAllocated { .. }),
        "{err:?}"
    );
}

#[test]
fn pcr_read_arguments_are_checked_before_sending() {
    let mut tpm = tpm_with(Vec::new());
    let err = tpm.pcr_read(HashAlg::Sha256, &[0, 32]).unwrap_err();
    assert!(
        matches!(inner(&err), TpmError::PcrOutOfRange { pcr: 32 }),
        "{err:?}"
    );
    assert_eq!(tpm.pcr_read(HashAlg::Sha256, &[]).unwrap(), Vec::new());
    assert!(tpm.transport.sent.is_empty());
}

#[test]
fn pcr_read_selects_high_pcrs_with_a_longer_select() {
    let response = success(&pcr_read_body(
        1,
        0x000B,
        &[0, 0, 0, 0x80],
        &[digest(31, 32)],
    ));
    let mut tpm = tpm_with(vec![response]);
    tpm.pcr_read(HashAlg::Sha256, &[31]).unwrap();
    assert_eq!(
        sent_select(&tpm.transport.sent[0]),
        (0x000B, vec![0, 0, 0, 0x80])
    );
}

// ---- Startup -------------------------------------------------------------------------

#[test]
fn startup_clear_accepts_success_and_already_initialized() {
    let mut tpm = tpm_with(vec![success(&[]), frame(NO_SESSIONS, 0x100, &[])]);
    tpm.startup_clear().unwrap();
    tpm.startup_clear().unwrap();
    assert_eq!(
        tpm.transport.sent[0],
        vec![0x80, 0x01, 0, 0, 0, 0x0C, 0, 0, 0x01, 0x44, 0, 0]
    );
}

#[test]
fn startup_clear_reports_other_failures() {
    let err = tpm_with(vec![frame(NO_SESSIONS, 0x101, &[])])
        .startup_clear()
        .unwrap_err();
    assert_eq!(console_line(&err), "Startup failed (TPM_RC_FAILURE)");
    let err = tpm_with(vec![success(&[0])]).startup_clear().unwrap_err();
    assert!(matches!(inner(&err), TpmError::Malformed(_)), "{err:?}");
}

// ---- HashAlg -------------------------------------------------------------------------

#[test]
fn hash_alg_ids_names_and_lengths() {
    for alg in HashAlg::ALL {
        assert_eq!(HashAlg::from_tpm_alg_id(alg.tpm_alg_id()), Some(alg));
    }
    assert_eq!(HashAlg::Sha256.tpm_alg_id(), 0x000B);
    assert_eq!(HashAlg::Sm3_256.tpm_alg_id(), 0x0012);
    assert_eq!(HashAlg::Sha384.name(), "sha384");
    assert_eq!(HashAlg::Sha512.digest_len(), 64);
    assert_eq!(HashAlg::from_tpm_alg_id(0x0027), None);
}

/// The TPM's banks and the event log's algorithms are one set but for SM3: same ids, names
/// and sizes both ways.
#[test]
fn hash_alg_agrees_with_the_event_log() {
    for alg in HashAlg::ALL {
        match alg.computable() {
            Some(log) => {
                assert_eq!(HashAlg::from(log), alg);
                assert_eq!(log.tpm_alg_id(), alg.tpm_alg_id());
                assert_eq!(log.name(), alg.name());
                assert_eq!(log.digest_len(), alg.digest_len());
            }
            None => assert_eq!(alg, HashAlg::Sm3_256),
        }
    }
    assert_eq!(HashAlg::Sm3_256.name(), "sm3_256");
    assert_eq!(HashAlg::Sm3_256.digest_len(), 32);
    for log in cvm_tcglog::HashAlg::ALL {
        assert_eq!(HashAlg::from(log).computable(), Some(log));
    }
}

// ---- transports ----------------------------------------------------------------------

#[test]
fn device_open_failure_names_the_path() {
    let err = Tpm::open(Path::new("/nonexistent/tpmrm0")).unwrap_err();
    assert_eq!(
        console_line(&err),
        "cannot open TPM device /nonexistent/tpmrm0 (No such file or directory (os error 2))"
    );
}

#[test]
fn device_transport_with_no_answer() {
    // /dev/null swallows the command and reads back nothing: a TPM that never answers.
    let mut tpm = Tpm::open(Path::new("/dev/null")).unwrap();
    let err = tpm.pcr_banks().unwrap_err();
    assert!(
        matches!(inner(&err), TpmError::Truncated { len: 0 }),
        "{err:?}"
    );
}

/// A one-connection TCP peer that answers the first command with `answer`.
fn tcp_peer(answer: Vec<u8>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut header = [0u8; 10];
        conn.read_exact(&mut header).unwrap();
        let size = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
        let mut rest = vec![0u8; size - 10];
        conn.read_exact(&mut rest).unwrap();
        let _ = conn.write_all(&answer);
    });
    addr
}

#[test]
fn tcp_transport_reads_one_framed_response() {
    let addr = tcp_peer(frame(NO_SESSIONS, 0x100, &[]));
    let mut tpm = Tpm::new(TcpTransport::connect(addr).unwrap());
    tpm.startup_clear().unwrap();
}

#[test]
fn tcp_transport_refuses_an_oversized_claim_before_reading_it() {
    let mut answer = frame(NO_SESSIONS, 0, &[]);
    answer[2..6].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
    let addr = tcp_peer(answer);
    let mut tpm = Tpm::new(TcpTransport::connect(addr).unwrap());
    let err = tpm.pcr_banks().unwrap_err();
    assert!(
        matches!(inner(&err), TpmError::TooLarge { len: 0x7fff_ffff }),
        "{err:?}"
    );
}

#[test]
fn tcp_transport_reports_a_short_stream() {
    let addr = tcp_peer(vec![0x80, 0x01, 0, 0, 0, 0x20, 0, 0]);
    let mut tpm = Tpm::new(TcpTransport::connect(addr).unwrap());
    let err = tpm.pcr_banks().unwrap_err();
    assert!(
        matches!(
            inner(&err),
            TpmError::Io {
                op: "read from TPM",
                ..
            }
        ),
        "{err:?}"
    );
}
