//! Compatibility with systemd's userspace measurement log, `/run/log/systemd/tpm2-measure.log`:
//! JSON-SEQ (RS, JSON, LF), CEL-JSON-like records without `recnum`, `content_type "systemd"`,
//! content `{string, bootId, timestamp, eventType}` (systemd `tpm2_userspace_log`). The sample
//! is written by hand from that format: systemd-pcrphase's words into PCR 11, a file system
//! identity into PCR 15, with sha1 and sha256 digests of the measured strings. PCR 15 is the
//! agent's, though (cvm-agent is PID 1; there is no systemd-pcrfs): a foreign record there is
//! refused, so the log reads but does not replay until that record is gone.

use cvm_measure::{Content, EventLog};
use cvm_tpm::HashAlg;
use cvmctl::measure::{ReplayArgs, replay_command};
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn record(pcr: u32, measured: &str, event_type: &str, timestamp: u64) -> String {
    format!(
        "\u{1e}{{\"pcr\":{pcr},\"digests\":[{{\"hashAlg\":\"sha1\",\"digest\":\"{}\"}},{{\"hashAlg\":\"sha256\",\"digest\":\"{}\"}}],\"content_type\":\"systemd\",\"content\":{{\"string\":\"{measured}\",\"bootId\":\"2f8c1c4b9b0e4a5c8d7e6f5a4b3c2d1e\",\"timestamp\":{timestamp},\"eventType\":\"{event_type}\"}}}}\n",
        hex(&sha1::Sha1::digest(measured.as_bytes())),
        hex(&Sha256::digest(measured.as_bytes())),
    )
}

/// The phase words only (PCR 11).
fn sample() -> String {
    let mut records: Vec<String> = full_sample()
        .split_inclusive('\n')
        .map(String::from)
        .collect();
    records.remove(1);
    records.concat()
}

/// With systemd-pcrfs's file system identity in PCR 15.
fn full_sample() -> String {
    [
        record(11, "enter-initrd", "phase", 1_543_210),
        record(
            15,
            "file-system:/:ext4:root:0b6a4a4c-8a3e-4b8e-9f4e-2f4f1e1d7a10",
            "filesystem",
            2_001_337,
        ),
        record(11, "leave-initrd", "phase", 3_100_000),
        record(11, "sysinit", "phase", 3_500_000),
        record(11, "ready", "phase", 6_000_000),
    ]
    .concat()
}

fn extend(pcr: &[u8], measured: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(pcr);
    h.update(Sha256::digest(measured.as_bytes()));
    h.finalize().to_vec()
}

#[test]
fn a_systemd_record_in_pcr_15_is_refused() {
    let log = EventLog::parse(full_sample().as_bytes()).unwrap();
    assert_eq!(log.len(), 5);
    let err = log.replay(&[HashAlg::Sha256]).unwrap_err();
    assert!(
        err.to_string()
            .contains("a \"systemd\" record in PCR 15: only cvm-agent records may extend it"),
        "{err}"
    );
    // And by `cvmctl replay`.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tpm2-measure.log");
    std::fs::write(&path, full_sample()).unwrap();
    assert!(
        replay_command(&ReplayArgs {
            log: path,
            pcrs: None,
            banks: vec![],
        })
        .is_err()
    );
}

#[test]
fn a_systemd_measure_log_parses_and_replays() {
    let log = EventLog::parse(sample().as_bytes()).unwrap();
    assert_eq!(log.len(), 4);
    assert_eq!(log.banks(), vec![HashAlg::Sha1, HashAlg::Sha256]);
    let first = &log.records()[0];
    assert_eq!(first.pcr, 11);
    assert_eq!(first.content_type, "systemd");
    match &first.content {
        Content::Other(map) => {
            assert_eq!(map["string"], "enter-initrd");
            assert_eq!(map["eventType"], "phase");
        }
        other => panic!("unexpected content {other:?}"),
    }

    let pcrs = log.replay(&[HashAlg::Sha256, HashAlg::Sha1]).unwrap();
    let mut pcr11 = vec![0u8; 32];
    for word in ["enter-initrd", "leave-initrd", "sysinit", "ready"] {
        pcr11 = extend(&pcr11, word);
    }
    assert_eq!(pcrs.get(HashAlg::Sha256, 11).unwrap(), &pcr11[..]);
    assert!(pcrs.get(HashAlg::Sha256, 15).is_none());
    assert_eq!(pcrs.get(HashAlg::Sha1, 11).unwrap().len(), 20);

    // Content of foreign records is kept verbatim through a rewrite.
    let again = EventLog::parse(&log.to_json_seq()).unwrap();
    assert_eq!(again, log);
}

#[test]
fn cvmctl_replay_reads_a_systemd_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tpm2-measure.log");
    std::fs::write(&path, sample()).unwrap();
    let expected = dir.path().join("pcrs.json");
    let mut pcr11 = vec![0u8; 32];
    for word in ["enter-initrd", "leave-initrd", "sysinit", "ready"] {
        pcr11 = extend(&pcr11, word);
    }
    std::fs::write(
        &expected,
        format!(
            "{{\"sha256\":{{\"11\":\"{}\",\"9\":\"{}\"}}}}",
            hex(&pcr11),
            "00".repeat(32)
        ),
    )
    .unwrap();
    let outcome = replay_command(&ReplayArgs {
        log: path,
        pcrs: Some(expected),
        banks: vec![],
    })
    .unwrap();
    assert!(outcome.matches, "{}", outcome.json);
    let out: serde_json::Value = serde_json::from_str(&outcome.json).unwrap();
    assert_eq!(out["separator"], false);
    assert_eq!(out["records"], 4);
}
