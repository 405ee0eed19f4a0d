use super::*;
use sha2::{Digest, Sha256};

const ALL: [HashAlg; 4] = [
    HashAlg::Sha1,
    HashAlg::Sha256,
    HashAlg::Sha384,
    HashAlg::Sha512,
];

fn seq(records: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.push(0x1e);
        out.extend_from_slice(r.as_bytes());
        out.push(b'\n');
    }
    out
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(&Sha256::digest(data))
}

/// A valid agent record for `mode: production` in the sha256 bank.
fn mode_record() -> String {
    format!(
        r#"{{"pcr":15,"digests":[{{"hashAlg":"sha256","digest":"{}"}}],"content_type":"cvm-agent","content":{{"event":"mode","string":"production"}}}}"#,
        sha256_hex(b"mode:production")
    )
}

fn separator_record() -> String {
    format!(
        r#"{{"pcr":15,"digests":[{{"hashAlg":"sha256","digest":"{}"}}],"content_type":"cvm-agent","content":{{"event":"separator","string":""}}}}"#,
        sha256_hex(b"separator:")
    )
}

#[test]
fn hashes_match_known_vectors() {
    assert_eq!(
        hex::encode(&hash(HashAlg::Sha1, b"abc").unwrap()),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
    assert_eq!(
        hex::encode(&hash(HashAlg::Sha256, b"abc").unwrap()),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(hash(HashAlg::Sha384, b"").unwrap().len(), 48);
    assert_eq!(hash(HashAlg::Sha512, b"").unwrap().len(), 64);
    assert!(matches!(
        hash(HashAlg::Sm3_256, b""),
        Err(MeasureError::UnsupportedBank("sm3_256"))
    ));
}

#[test]
fn hex_round_trips_and_rejects_garbage() {
    assert_eq!(hex::encode(&[0x00, 0xab, 0xff]), "00abff");
    assert_eq!(hex::decode("00ABff"), Some(vec![0x00, 0xab, 0xff]));
    for bad in ["0", "0g", "é0", " 00"] {
        assert_eq!(hex::decode(bad), None, "{bad}");
    }
}

#[test]
fn the_digest_rule() {
    let e = Event::mode(Mode::Production);
    assert_eq!(
        e.digest(HashAlg::Sha256).unwrap(),
        Sha256::digest(b"mode:production").to_vec()
    );
    assert_eq!(
        Event::separator().digest(HashAlg::Sha1).unwrap(),
        sha1::Sha1::digest(b"separator:").to_vec()
    );
    let args = Event::args(&["/bin/app".into(), "a b".into(), "\"q\"".into()]).unwrap();
    assert_eq!(args.value(), r#"["/bin/app","a b","\"q\""]"#);
    assert_eq!(
        args.digest(HashAlg::Sha256).unwrap(),
        Sha256::digest(format!("args:{}", args.value()).as_bytes()).to_vec()
    );
    // Init-data: the bank's hash of the raw bytes, not of "initdata:<value>".
    let raw = b"version = \"0.1.0\"";
    let e = Event::initdata(raw);
    assert_eq!(e.pcr(), 8);
    assert_eq!(e.value(), sha256_hex(raw));
    assert_eq!(
        e.digest(HashAlg::Sha256).unwrap(),
        Sha256::digest(raw).to_vec()
    );
    assert_eq!(
        e.digest(HashAlg::Sha384).unwrap(),
        sha2::Sha384::digest(raw).to_vec()
    );
    assert_eq!(Event::roothash("ABCD").unwrap().value(), "abcd");
}

#[test]
fn event_values_are_checked() {
    assert!(Event::roothash("").is_err());
    assert!(Event::roothash("abc").is_err());
    assert!(Event::roothash("zz").is_err());
    assert!(Event::roothash(&"a".repeat(130)).is_err());
    assert!(Event::image_version("").is_err());
    assert!(Event::env(&["NOEQUALS".into()]).is_err());
    assert!(Event::env(&["=v".into()]).is_err());
    assert!(Event::env(&["A=".into(), "B=c=d".into()]).is_ok());
    assert!(Event::args(&["a\0b".into()]).is_err());
    assert!(Event::overrides(&"x".repeat(MAX_VALUE_LEN + 1)).is_err());
    // Secrets must not leak through an error message.
    let err = Event::env(&["A=1".into(), "hunter2".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("entry 1") && !err.contains("hunter2"), "{err}");
    let err = Event::env(&["=hunter2".into()]).unwrap_err().to_string();
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn measurer_records_in_order_and_seals() {
    let mut m = Measurer::new(&[HashAlg::Sha256, HashAlg::Sha1]).unwrap();
    let d = m.record(Event::mode(Mode::Debug)).unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(
        d[0],
        (HashAlg::Sha256, Sha256::digest(b"mode:debug").to_vec())
    );
    m.record(Event::roothash("ab").unwrap()).unwrap();
    assert!(matches!(
        m.record(Event::mode(Mode::Debug)),
        Err(MeasureError::OutOfOrder {
            event: "mode",
            after: "roothash"
        })
    ));
    assert!(matches!(
        m.record(Event::roothash("ab").unwrap()),
        Err(MeasureError::OutOfOrder { .. })
    ));
    m.record(Event::initdata(b"x")).unwrap();
    assert!(!m.is_sealed());
    m.record(Event::separator()).unwrap();
    assert!(m.is_sealed());
    for event in [
        Event::overrides("late").unwrap(),
        Event::separator(),
        Event::mode(Mode::Production),
    ] {
        assert!(matches!(
            m.record(event),
            Err(MeasureError::AfterSeparator(_))
        ));
    }
    assert_eq!(m.log().len(), 4);
    m.log().verify().unwrap();
}

#[test]
fn measurer_checks_banks() {
    assert!(matches!(Measurer::new(&[]), Err(MeasureError::NoBanks)));
    assert!(matches!(
        Measurer::new(&[HashAlg::Sha256, HashAlg::Sha256]),
        Err(MeasureError::DuplicateBank("sha256"))
    ));
    assert!(matches!(
        Measurer::new(&[HashAlg::Sm3_256]),
        Err(MeasureError::UnsupportedBank(_))
    ));
}

#[test]
fn log_round_trips_through_json_seq_and_json() {
    let mut m = Measurer::new(&ALL).unwrap();
    m.record(Event::mode(Mode::Production)).unwrap();
    m.record(Event::initdata(b"raw")).unwrap();
    m.record(Event::env(&["A=1".into()]).unwrap()).unwrap();
    m.record(Event::separator()).unwrap();
    let bytes = m.log().to_json_seq();
    assert_eq!(bytes[0], 0x1e);
    assert!(bytes.ends_with(b"}\n"));
    let parsed = EventLog::parse(&bytes).unwrap();
    assert_eq!(&parsed, m.log());
    assert_eq!(parsed.to_json_seq(), bytes);
    assert_eq!(EventLog::from_json(&m.log().to_json()).unwrap(), parsed);
    assert_eq!(parsed.banks(), ALL.to_vec());
    assert!(parsed.has_separator());
    let first: serde_json::Value =
        serde_json::from_slice(&bytes[1..bytes.iter().position(|&b| b == b'\n').unwrap()]).unwrap();
    assert_eq!(first["recnum"], 0);
    assert_eq!(first["content"]["event"], "mode");
    assert_eq!(first["digests"][1]["hashAlg"], "sha256");
}

#[test]
fn replay_extends_from_zero() {
    let mut m = Measurer::new(&[HashAlg::Sha256]).unwrap();
    m.record(Event::mode(Mode::Production)).unwrap();
    m.record(Event::separator()).unwrap();
    let pcrs = m.log().replay(&[HashAlg::Sha256]).unwrap();
    let mut pcr = [0u8; 32].to_vec();
    for pre in [&b"mode:production"[..], b"separator:"] {
        let mut h = Sha256::new();
        h.update(&pcr);
        h.update(Sha256::digest(pre));
        pcr = h.finalize().to_vec();
    }
    assert_eq!(pcrs.get(HashAlg::Sha256, 15).unwrap(), &pcr[..]);
    assert_eq!(pcrs.get(HashAlg::Sha256, 8), None);
    // A bank the log lacks cannot be replayed.
    assert!(matches!(
        m.log().replay(&[HashAlg::Sha1]),
        Err(MeasureError::MissingDigest {
            index: 0,
            bank: "sha1"
        })
    ));
}

#[test]
fn parse_refuses_malformed_logs() {
    let good = mode_record();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (good.clone().into_bytes(), "no RS"),
        (
            {
                let mut v = vec![0x1e];
                v.extend_from_slice(good.as_bytes());
                v
            },
            "no newline",
        ),
        (seq(&[""]), "empty record"),
        (seq(&["[]"]), "not an object"),
        (seq(&["{"]), "bad JSON"),
        (
            seq(&[&good.replace("\"pcr\":15", "\"pcr\":24")]),
            "pcr range",
        ),
        (
            seq(&[&good.replace("\"pcr\":15", "\"pcr\":-1")]),
            "pcr negative",
        ),
        (
            seq(&[&good.replace("\"pcr\":15", "\"pcr\":\"15\"")]),
            "pcr type",
        ),
        (
            seq(&[&good.replace("\"pcr\":15", "\"rtmr\":2")]),
            "rtmr record",
        ),
        (
            seq(&[&good.replace("\"pcr\":15", "\"pcr\":15,\"extra\":1")]),
            "unknown field",
        ),
        (
            seq(&[&good.replace("\"pcr\":15", "\"pcr\":15,\"recnum\":3")]),
            "recnum",
        ),
        (
            seq(&[&good.replace("sha256\",", "sha257\",")]),
            "unknown alg",
        ),
        (
            seq(&[&good.replace("\"digest\":\"", "\"digest\":\"00")]),
            "digest length",
        ),
        (
            seq(&[&good.replace("\"digest\":\"", "\"digest\":\"zz")]),
            "digest hex",
        ),
        (
            seq(&[&good.replace(
                "\"digests\":[",
                "\"digests\":[{\"hashAlg\":\"sha256\",\"digest\":\"00\"},",
            )]),
            "two digests",
        ),
        (
            seq(&[r#"{"pcr":15,"digests":[],"content_type":"x","content":{}}"#]),
            "no digests",
        ),
        (
            seq(&[&good.replace("\"hashAlg\":\"sha256\",", "\"hashAlg\":\"sha256\",\"x\":1,")]),
            "digest field",
        ),
        (
            seq(&[&good.replace("\"cvm-agent\"", "7")]),
            "content_type type",
        ),
        (
            seq(&[&good
                .replace("{\"event\"", "[{\"event\"")
                .replace("\"production\"}", "\"production\"}]")]),
            "content type",
        ),
        (
            seq(&[&good.replace("\"mode\"", "\"launch\"")]),
            "unknown event",
        ),
        (
            seq(&[&good.replace("\"string\":\"production\"", "\"string\":1")]),
            "string type",
        ),
        (
            seq(&[&good.replace("\"production\"}", "\"production\",\"x\":1}")]),
            "agent content field",
        ),
    ];
    for (bytes, why) in cases {
        assert!(EventLog::parse(&bytes).is_err(), "{why}: accepted");
    }
    assert_eq!(EventLog::parse(b"").unwrap().len(), 0);
}

#[test]
fn parse_bounds_records() {
    let record = mode_record();
    let many: Vec<&str> = std::iter::repeat_n(record.as_str(), MAX_RECORDS + 1).collect();
    assert!(matches!(
        EventLog::parse(&seq(&many)),
        Err(MeasureError::TooManyRecords)
    ));
    let big = record.replace(
        "\"production\"}",
        &format!(
            "\"production\",\"pad\":\"{}\"}}",
            "a".repeat(MAX_RECORD_LEN)
        ),
    );
    assert!(matches!(
        EventLog::parse(&seq(&[&big])),
        Err(MeasureError::RecordTooLarge { .. })
    ));
    // Deep JSON nesting is refused by serde_json's recursion limit, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    assert!(EventLog::parse(&seq(&[&deep])).is_err());
}

#[test]
fn verify_checks_content_against_digests() {
    let good = mode_record();
    EventLog::parse(&seq(&[&good])).unwrap().verify().unwrap();
    let lie = good.replace("\"production\"", "\"debug\"");
    let log = EventLog::parse(&seq(&[&lie])).unwrap();
    assert!(matches!(
        log.verify(),
        Err(MeasureError::Record { index: 0, .. })
    ));
    assert!(log.replay(&[HashAlg::Sha256]).is_err());
    // Right digest, wrong PCR.
    let moved = good.replace("\"pcr\":15", "\"pcr\":8");
    assert!(EventLog::parse(&seq(&[&moved])).unwrap().verify().is_err());
    // Out of order.
    let sep = separator_record();
    assert!(
        EventLog::parse(&seq(&[&sep, &good]))
            .unwrap()
            .verify()
            .is_err()
    );
    // Twice.
    assert!(
        EventLog::parse(&seq(&[&good, &good]))
            .unwrap()
            .verify()
            .is_err()
    );
    // A value the constructors would refuse.
    let bogus = format!(
        r#"{{"pcr":15,"digests":[{{"hashAlg":"sha256","digest":"{}"}}],"content_type":"cvm-agent","content":{{"event":"mode","string":"staging"}}}}"#,
        sha256_hex(b"mode:staging")
    );
    assert!(EventLog::parse(&seq(&[&bogus])).unwrap().verify().is_err());
    // Non-canonical args JSON would give a second spelling of one argv.
    let spaced = format!(
        r#"{{"pcr":15,"digests":[{{"hashAlg":"sha256","digest":"{}"}}],"content_type":"cvm-agent","content":{{"event":"args","string":"[\"a\", \"b\"]"}}}}"#,
        sha256_hex(b"args:[\"a\", \"b\"]")
    );
    assert!(EventLog::parse(&seq(&[&spaced])).unwrap().verify().is_err());
}

#[test]
fn nothing_follows_the_separator_in_pcr_15() {
    let (good, sep) = (mode_record(), separator_record());
    EventLog::parse(&seq(&[&good, &sep]))
        .unwrap()
        .verify()
        .unwrap();
    // A foreign record extending PCR 15 after the separator.
    let forged = format!(
        r#"{{"pcr":15,"digests":[{{"hashAlg":"sha256","digest":"{}"}}],"content_type":"systemd","content":{{"string":"x"}}}}"#,
        sha256_hex(b"x")
    );
    let log = EventLog::parse(&seq(&[&good, &sep, &forged])).unwrap();
    let err = log.verify().unwrap_err();
    assert!(
        err.to_string().contains("after the launch separator"),
        "{err}"
    );
    assert!(log.replay(&[HashAlg::Sha256]).is_err());
    // An agent record after the separator, even in PCR 8.
    let init = format!(
        r#"{{"pcr":8,"digests":[{{"hashAlg":"sha256","digest":"{0}"}}],"content_type":"cvm-agent","content":{{"event":"initdata","string":"{0}"}}}}"#,
        sha256_hex(b"i")
    );
    EventLog::parse(&seq(&[&init])).unwrap().verify().unwrap();
    assert!(
        EventLog::parse(&seq(&[&sep, &init]))
            .unwrap()
            .verify()
            .is_err()
    );
    // Foreign records in other PCRs may follow (systemd keeps measuring its own PCRs).
    let other = forged.replace("\"pcr\":15", "\"pcr\":11");
    EventLog::parse(&seq(&[&good, &sep, &other]))
        .unwrap()
        .verify()
        .unwrap();
}

/// A log taken after launch whose separator is relabelled as a foreign record (same digest, so
/// it still replays to the quoted PCR 15) must not pass as a pre-launch log.
#[test]
fn pcr_15_holds_only_agent_records() {
    let (good, sep) = (mode_record(), separator_record());
    let relabelled = sep
        .replace(
            "\"content_type\":\"cvm-agent\"",
            "\"content_type\":\"systemd\"",
        )
        .replace(
            "{\"event\":\"separator\",\"string\":\"\"}",
            "{\"string\":\"\"}",
        );
    assert_ne!(relabelled, sep);
    let log = EventLog::parse(&seq(&[&good, &relabelled])).unwrap();
    assert!(!log.has_separator(), "the relabel hides the separator");
    let err = log.verify().unwrap_err();
    assert!(
        err.to_string()
            .contains("a \"systemd\" record in PCR 15: only cvm-agent records may extend it"),
        "{err}"
    );
    assert!(log.replay(&[HashAlg::Sha256]).is_err());
    // The same PCR 15 value as the sealed log: only the label differs.
    let sealed = EventLog::parse(&seq(&[&good, &sep])).unwrap();
    assert_eq!(
        sealed.records()[1].digest(HashAlg::Sha256),
        log.records()[1].digest(HashAlg::Sha256)
    );
    // A foreign record inserted before the separator, too.
    let foreign = format!(
        r#"{{"pcr":15,"digests":[{{"hashAlg":"sha256","digest":"{}"}}],"content_type":"x","content":{{}}}}"#,
        sha256_hex(b"x")
    );
    assert!(
        EventLog::parse(&seq(&[&good, &foreign, &sep]))
            .unwrap()
            .verify()
            .is_err()
    );
    // In any other PCR a foreign record is fine.
    EventLog::parse(&seq(&[&foreign.replace("\"pcr\":15", "\"pcr\":9"), &good]))
        .unwrap()
        .verify()
        .unwrap();
}

#[test]
fn replay_refuses_drtm_pcrs() {
    let rec = format!(
        r#"{{"pcr":17,"digests":[{{"hashAlg":"sha256","digest":"{}"}}],"content_type":"x","content":{{}}}}"#,
        sha256_hex(b"")
    );
    let log = EventLog::parse(&seq(&[&rec])).unwrap();
    assert!(log.replay(&[HashAlg::Sha256]).is_err());
}

#[test]
fn pcrs_json_is_strict() {
    let mut pcrs = Pcrs::default();
    pcrs.insert(HashAlg::Sha256, 15, vec![1; 32]);
    pcrs.insert(HashAlg::Sha1, 8, vec![2; 20]);
    let json = pcrs.to_json();
    assert_eq!(json["sha256"]["15"], hex::encode(&[1; 32]));
    assert_eq!(Pcrs::from_json(&json).unwrap(), pcrs);
    for bad in [
        serde_json::json!([]),
        serde_json::json!({"md5": {}}),
        serde_json::json!({"sha256": {"24": hex::encode(&[0; 32])}}),
        serde_json::json!({"sha256": {"08": hex::encode(&[0; 32])}}),
        serde_json::json!({"sha256": {"+8": hex::encode(&[0; 32])}}),
        serde_json::json!({"sha256": {"8": hex::encode(&[0; 20])}}),
        serde_json::json!({"sha256": {"8": 5}}),
    ] {
        assert!(Pcrs::from_json(&bad).is_err(), "{bad}");
    }
}

#[test]
fn write_log_is_atomic_and_read_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("measure.log");
    let mut m = Measurer::new(&[HashAlg::Sha256]).unwrap();
    m.record(Event::mode(Mode::Production)).unwrap();
    m.write_log(&path).unwrap();
    m.record(Event::separator()).unwrap();
    // Rewriting over the read-only file works (rename replaces it).
    m.write_log(&path).unwrap();
    assert_eq!(EventLog::read(&path).unwrap(), *m.log());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o444);
    assert!(!dir.path().join("measure.log.tmp").exists());
}

#[test]
fn event_kinds_round_trip_and_are_ordered() {
    for (i, kind) in EventKind::ALL.into_iter().enumerate() {
        assert_eq!(EventKind::from_name(kind.name()), Some(kind));
        if i > 0 {
            assert!(EventKind::ALL[i - 1] < kind);
        }
    }
    assert_eq!(EventKind::Separator.pcr(), PCR_AGENT);
    assert_eq!(EventKind::InitData.pcr(), PCR_INITDATA);
}

#[test]
fn image_version_from_os_release() {
    let text = "NAME=\"Debian\"\nIMAGE_ID=cvm-demo\nIMAGE_VERSION='1.2.3'\n";
    assert_eq!(image_version(text).as_deref(), Some("cvm-demo 1.2.3"));
    assert_eq!(image_version("IMAGE_ID=\"x\"\n").as_deref(), Some("x"));
    assert_eq!(
        image_version("IMAGE_ID=a\nIMAGE_ID=b\n").as_deref(),
        Some("b")
    );
    assert_eq!(image_version("IMAGE_VERSION=1\n"), None);
    assert_eq!(image_version("IMAGE_ID=a b\n"), None);
    assert_eq!(image_version("IMAGE_ID=a\nIMAGE_VERSION=\"1 2\"\n"), None);
    assert_eq!(image_version("IMAGE_ID=\n"), None);
}

#[test]
fn tpm_pcrs_that_the_log_cannot_explain_are_a_mismatch() {
    let mut m = Measurer::new(&[HashAlg::Sha256]).unwrap();
    m.record(Event::mode(Mode::Production)).unwrap();
    let replayed = m.log().replay(&[HashAlg::Sha256]).unwrap();
    let pcr15 = replayed.get(HashAlg::Sha256, 15).unwrap().to_vec();
    let zero = vec![0u8; 32];
    // What the TPM holds after exactly these extends: no mismatch.
    let good = vec![(8, zero.clone()), (15, pcr15.clone())];
    assert_eq!(replayed.mismatch(HashAlg::Sha256, &good), None);
    // Someone else extended PCR 15 (or the log lost a record).
    let mut other = pcr15.clone();
    other[0] ^= 1;
    let bad15 = vec![(8, zero.clone()), (15, other.clone())];
    assert_eq!(
        replayed.mismatch(HashAlg::Sha256, &bad15),
        Some((15, other, pcr15.clone()))
    );
    // A PCR the log never touched must still be zero.
    let bad8 = vec![(8, vec![7u8; 32]), (15, pcr15)];
    assert_eq!(
        replayed.mismatch(HashAlg::Sha256, &bad8),
        Some((8, vec![7u8; 32], zero))
    );
}
