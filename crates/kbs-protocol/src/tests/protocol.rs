use super::*;
use sha2::{Digest, Sha384};

const NONCE: &str = "RKVMrB6ZyIA2qJ1nhh3UHZnNBk1QJv8xdzIEKzKLEYU=";

fn ec_jwk() -> TeePubKey {
    TeePubKey::EC {
        crv: "P-256".into(),
        alg: "ECDH-ES+A256KW".into(),
        x: "weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ".into(),
        y: "e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck".into(),
    }
}

fn padded(digest: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..digest.len()].copy_from_slice(digest);
    out
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The binding, hand-computed: the canonical string is written out literally, and its SHA-384
/// was also computed outside this code (Python hashlib).
#[test]
fn report_data_binding_ec() {
    let literal = r#"{"additional-evidence":"","nonce":"RKVMrB6ZyIA2qJ1nhh3UHZnNBk1QJv8xdzIEKzKLEYU=","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ","y":"e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck"}}"#;
    let expected = padded(&Sha384::digest(literal.as_bytes()));
    assert_eq!(
        expected[..48],
        unhex(
            "a0f55ad9c612097febdde273d8330c97083efdbeac871d3d7e44a824f994aa6b435934522756d7f0a47a31bd2566f46a"
        )[..]
    );
    assert_eq!(expected[48..], [0u8; 16]);

    let rd = runtime_data(NONCE, &ec_jwk(), NO_ADDITIONAL_EVIDENCE);
    assert_eq!(canon::canonicalize(&rd).unwrap(), literal);
    let digest = runtime_data_digest(RuntimeDataHash::Sha384, &rd).unwrap();
    assert_eq!(digest, expected[..48]);
    // Each TEE's form of it, as Trustee's verifiers compare it.
    assert_eq!(tee_report_data(Tee::Tpm, &digest).unwrap(), expected[..32]);
    for tee in [Tee::Snp, Tee::Tdx] {
        assert_eq!(tee_report_data(tee, &digest).unwrap(), expected, "{tee:?}");
    }
    for tee in [Tee::AzSnpVtpm, Tee::AzTdxVtpm] {
        assert_eq!(tee_report_data(tee, &digest).unwrap(), expected[..48]);
    }
}

/// The `tpm` form is never the old 64-byte padded one, whatever the hash.
#[test]
fn tpm_report_data_is_32_bytes() {
    for len in [32, 48, 64] {
        let digest: Vec<u8> = (1..=len as u8).collect();
        assert_eq!(tee_report_data(Tee::Tpm, &digest).unwrap(), digest[..32]);
        let hw = tee_report_data(Tee::Snp, &digest).unwrap();
        assert_eq!(hw.len(), 64);
        assert_eq!(hw[..len], digest[..]);
        assert!(hw[len..].iter().all(|b| *b == 0));
        assert_eq!(tee_report_data(Tee::AzSnpVtpm, &digest).unwrap(), digest);
    }
    assert!(tee_report_data(Tee::Tpm, &[0u8; 65]).is_err());
}

#[test]
fn report_data_binding_rsa_and_additional_evidence() {
    let jwk = TeePubKey::RSA {
        alg: "RSA-OAEP-256".into(),
        k_mod: "u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw".into(),
        k_exp: "AQAB".into(),
    };
    let additional = r#"{"nvidia":{"evidence":"x"}}"#;
    let literal = r#"{"additional-evidence":"{\"nvidia\":{\"evidence\":\"x\"}}","nonce":"RKVMrB6ZyIA2qJ1nhh3UHZnNBk1QJv8xdzIEKzKLEYU=","tee-pubkey":{"alg":"RSA-OAEP-256","e":"AQAB","kty":"RSA","n":"u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw"}}"#;
    let rd = runtime_data(NONCE, &jwk, additional);
    assert_eq!(canon::canonicalize(&rd).unwrap(), literal);
    assert_eq!(
        runtime_data_digest(RuntimeDataHash::Sha384, &rd).unwrap(),
        Sha384::digest(literal.as_bytes())[..]
    );
    // Other selected hashes.
    assert_eq!(
        runtime_data_digest(RuntimeDataHash::Sha512, &rd).unwrap(),
        sha2::Sha512::digest(literal.as_bytes())[..]
    );
    assert_eq!(
        runtime_data_digest(RuntimeDataHash::Sha256, &rd).unwrap(),
        sha2::Sha256::digest(literal.as_bytes())[..]
    );
}

#[test]
fn request_on_the_wire() {
    assert_eq!(
        serde_json::to_string(&request(Tee::Tpm)).unwrap(),
        r#"{"version":"0.4.0","tee":"tpm","extra-params":{"supported-hash-algorithms":["sha256","sha384","sha512"]}}"#
    );
    for (tee, name) in [
        (Tee::Snp, "snp"),
        (Tee::Tdx, "tdx"),
        (Tee::AzSnpVtpm, "az-snp-vtpm"),
        (Tee::AzTdxVtpm, "az-tdx-vtpm"),
    ] {
        assert_eq!(
            serde_json::to_value(request(tee)).unwrap()["tee"],
            Value::String(name.into())
        );
    }
}

#[test]
fn challenge_and_hash_selection() {
    // Trustee's generic challenge: extra-params is the empty string.
    let c =
        parse_challenge(format!(r#"{{"nonce":"{NONCE}","extra-params":""}}"#).as_bytes()).unwrap();
    assert_eq!(c.nonce, NONCE);
    assert_eq!(hash_algorithm(&c).unwrap(), RuntimeDataHash::Sha384);
    let with = |extra: &str| {
        parse_challenge(format!(r#"{{"nonce":"n","extra-params":{extra}}}"#).as_bytes()).unwrap()
    };
    assert_eq!(
        hash_algorithm(&with("{}")).unwrap(),
        RuntimeDataHash::Sha384
    );
    assert_eq!(
        hash_algorithm(&with(r#"{"selected-hash-algorithm":"sha512"}"#)).unwrap(),
        RuntimeDataHash::Sha512
    );
    assert_eq!(
        hash_algorithm(&with(r#"{"selected-hash-algorithm":"SHA256"}"#)).unwrap(),
        RuntimeDataHash::Sha256
    );
    assert!(matches!(
        hash_algorithm(&with(r#"{"selected-hash-algorithm":"sm3"}"#)),
        Err(KbsError::UnsupportedHash(_))
    ));
    assert!(matches!(
        hash_algorithm(&with(r#"{"selected-hash-algorithm":7}"#)),
        Err(KbsError::BadMessage { .. })
    ));
    for bad in [
        r#"{"nonce":"","extra-params":""}"#,
        r#"{"extra-params":""}"#,
        r#"{"nonce":5,"extra-params":""}"#,
        r#"{"nonce":"n"}"#,
        "not json",
        "",
    ] {
        assert!(parse_challenge(bad.as_bytes()).is_err(), "{bad}");
    }
    let long = format!(
        r#"{{"nonce":"{}","extra-params":""}}"#,
        "a".repeat(MAX_NONCE + 1)
    );
    assert!(matches!(
        parse_challenge(long.as_bytes()),
        Err(KbsError::TooLarge { .. })
    ));
    assert!(matches!(
        parse_challenge(&vec![b' '; MAX_MESSAGE + 1]),
        Err(KbsError::TooLarge { .. })
    ));
}

#[test]
fn attestation_on_the_wire() {
    let att = attestation(NONCE, &ec_jwk(), json!({"quote": "q"}), None);
    let v = serde_json::to_value(&att).unwrap();
    assert_eq!(
        v,
        json!({
            "init-data": null,
            "runtime-data": {
                "nonce": NONCE,
                "tee-pubkey": {
                    "kty": "EC",
                    "crv": "P-256",
                    "alg": "ECDH-ES+A256KW",
                    "x": "weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ",
                    "y": "e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck",
                }
            },
            "tee-evidence": {"primary_evidence": {"quote": "q"}, "additional_evidence": ""}
        })
    );
    let toml = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n";
    let att = attestation(NONCE, &ec_jwk(), json!({}), Some(toml));
    assert_eq!(
        serde_json::to_value(&att).unwrap()["init-data"],
        json!({"format": "toml", "body": toml})
    );

    // What Trustee does with it (kbs/src/attestation/backend.rs `__attest`): parse, rebuild the
    // runtime data from the message, hash. It must be the object the attester bound.
    let wire = serde_json::to_string(&att).unwrap();
    let parsed: Attestation = serde_json::from_str(&wire).unwrap();
    let rebuilt = json!({
        "tee-pubkey": parsed.runtime_data.tee_pubkey,
        "nonce": parsed.runtime_data.nonce,
        "additional-evidence": parsed.tee_evidence.additional_evidence,
    });
    assert_eq!(
        rebuilt,
        runtime_data(NONCE, &ec_jwk(), NO_ADDITIONAL_EVIDENCE)
    );
}

#[test]
fn attest_response() {
    assert_eq!(
        parse_attest_response(br#"{"token":"eyJ.a.b"}"#).unwrap(),
        "eyJ.a.b"
    );
    assert!(parse_attest_response(br#"{"token":""}"#).is_err());
    assert!(parse_attest_response(br#"{"tok":"x"}"#).is_err());
    assert!(parse_attest_response(b"[]").is_err());
}

#[test]
fn kbs_error_bodies() {
    let body = br#"{"type":"https://github.com/confidential-containers/kbs/errors/PolicyDeny","detail":"Access denied by policy"}"#;
    let e = parse_error(403, body);
    assert!(matches!(&e, KbsError::Refused { status: 403, .. }));
    assert_eq!(
        e.to_string(),
        "KBS refused (HTTP 403): https://github.com/confidential-containers/kbs/errors/PolicyDeny: Access denied by policy"
    );
    // Not a KBS error body: the status and the start of the body.
    let e = parse_error(502, b"<html>Bad Gateway</html>");
    assert_eq!(
        e.to_string(),
        "KBS answered HTTP 502 without a KBS error body (<html>Bad Gateway</html>)"
    );
    // Hostile text: control characters escaped, length bounded.
    let e = parse_error(
        401,
        br#"{"type":"t\u001b[2J","detail":"line1\nline2\u202e"}"#,
    );
    let shown = e.to_string();
    assert!(!shown.contains('\n') && !shown.contains('\u{1b}') && !shown.contains('\u{202e}'));
    assert!(shown.contains("line1\\u{a}line2"), "{shown}");
    let long = format!(r#"{{"type":"t","detail":"{}"}}"#, "x".repeat(10_000));
    assert!(parse_error(401, long.as_bytes()).to_string().len() < 700);
    let e = parse_error(500, &vec![0xff; 100_000]);
    assert!(e.to_string().len() < 2000);
}

#[test]
fn resource_paths() {
    let uri = ResourceUri::parse("kbs:///default/state/key").unwrap();
    assert_eq!(resource_path(&uri), "/kbs/v0/resource/default/state/key");
}

/// The additional evidence's runtime data is kbs-types' `RuntimeData` without
/// `additional-evidence`, canonical: written out literally here.
#[test]
fn device_runtime_data_is_nonce_and_key_only() {
    let literal = r#"{"nonce":"RKVMrB6ZyIA2qJ1nhh3UHZnNBk1QJv8xdzIEKzKLEYU=","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ","y":"e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck"}}"#;
    let rd = device_runtime_data(NONCE, &ec_jwk());
    assert_eq!(
        crate::canon::canonicalize_to_vec(&rd).unwrap(),
        literal.as_bytes()
    );
    // What the attester hashes: kbs-types' own RuntimeData, canonical, is the same object.
    let kbs = serde_json::to_value(RuntimeData {
        nonce: NONCE.into(),
        tee_pubkey: ec_jwk(),
    })
    .unwrap();
    assert_eq!(
        crate::canon::canonicalize_to_vec(&kbs).unwrap(),
        literal.as_bytes()
    );
    assert_eq!(
        runtime_data_digest(RuntimeDataHash::Sha384, &rd).unwrap(),
        Sha384::digest(literal.as_bytes()).to_vec()
    );
}

#[test]
fn additional_evidence_string_round_trips_and_is_bounded() {
    assert_eq!(additional_evidence(&[]).unwrap(), "");
    assert!(parse_additional_evidence("").unwrap().is_empty());
    let snp = json!({"attestation_report": "AAAA", "cert_chain": null});
    let s = additional_evidence(&[(Tee::Snp, snp.clone())]).unwrap();
    assert_eq!(
        s,
        r#"{"snp":{"attestation_report":"AAAA","cert_chain":null}}"#
    );
    // Trustee's own parse: HashMap<Tee, Value>.
    let theirs: std::collections::HashMap<Tee, Value> = serde_json::from_str(&s).unwrap();
    assert_eq!(theirs.get(&Tee::Snp), Some(&snp));
    let parsed = parse_additional_evidence(&s).unwrap();
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0].0, Tee::Snp);
    assert_eq!(parsed[0].1, snp);
    // The attestation carries the string byte for byte, and the primary's runtime data holds it.
    let att = composite_attestation(NONCE, &ec_jwk(), json!({"q": 1}), &s, None);
    assert_eq!(att.tee_evidence.additional_evidence, s);
    assert_eq!(
        runtime_data(NONCE, &ec_jwk(), &s)["additional-evidence"],
        Value::String(s.clone())
    );

    assert!(additional_evidence(&[(Tee::Snp, json!(1)), (Tee::Snp, json!(2))]).is_err());
    for bad in [
        r#"{"snp":{},"snp":{}}"#,
        r#"{"sev":{}}"#,
        r#"["snp"]"#,
        r#"{"snp":{},"tdx":{},"tpm":{},"sample":{},"csv":{}}"#,
        "not json",
    ] {
        let err = parse_additional_evidence(bad).unwrap_err();
        assert!(
            matches!(
                err,
                KbsError::BadMessage {
                    what: "additional evidence",
                    ..
                }
            ),
            "{bad}: {err}"
        );
    }
}
