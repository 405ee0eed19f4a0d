//! The KBS protocol core through its public API: a whole RCAR exchange against the dev KBS's
//! encryption, JWE round trips for both key types, tamper tests on every JWE member, size
//! limits, and property tests that the JWE decryption and the canonicalizer never panic.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cvm_kbs_protocol::canon;
use cvm_kbs_protocol::jwe::{self, FlattenedJwe, JweError};
use cvm_kbs_protocol::protocol::{self, Attestation, Tee, TeePubKey};
use cvm_kbs_protocol::tee_key::{TeeKeyAlgorithm, TeeKeyError, TeeKeyPair};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::OnceLock;

fn ec_key() -> &'static TeeKeyPair {
    static KEY: OnceLock<TeeKeyPair> = OnceLock::new();
    KEY.get_or_init(|| TeeKeyPair::generate(TeeKeyAlgorithm::EcdhEsA256KwP256).unwrap())
}

fn rsa_key() -> &'static TeeKeyPair {
    static KEY: OnceLock<TeeKeyPair> = OnceLock::new();
    KEY.get_or_init(|| TeeKeyPair::generate(TeeKeyAlgorithm::RsaOaep256).unwrap())
}

fn keys() -> [&'static TeeKeyPair; 2] {
    [ec_key(), rsa_key()]
}

/// The agent's side and the dev KBS's side of one session, through the JSON on the wire.
#[test]
fn rcar_exchange() {
    for key in keys() {
        // /auth
        let request = serde_json::to_string(&protocol::request(Tee::Tpm)).unwrap();
        assert!(request.contains(r#""version":"0.4.0""#));
        let challenge = protocol::parse_challenge(
            br#"{"nonce":"0C1tDf2TMDY8kU7Aj6Ji1bwvNXBu+MfHyhaS1AfL2Lk=","extra-params":""}"#,
        )
        .unwrap();
        let hash = protocol::hash_algorithm(&challenge).unwrap();
        // Evidence binding
        let rd = protocol::runtime_data(&challenge.nonce, &key.public_jwk(), "");
        let digest = protocol::runtime_data_digest(hash, &rd).unwrap();
        assert_eq!(digest.len(), 48);
        let report = protocol::tee_report_data(Tee::Snp, &digest).unwrap();
        assert_eq!(report[..48], digest[..]);
        assert_eq!(report[48..], [0u8; 16]);
        // /attest
        let body = serde_json::to_vec(&protocol::attestation(
            &challenge.nonce,
            &key.public_jwk(),
            json!({"report": URL_SAFE_NO_PAD.encode(&report)}),
            Some("version = \"0.1.0\"\n"),
        ))
        .unwrap();

        // The KBS: parse, rebuild the runtime data, check the binding, encrypt a resource to
        // the key in the message.
        let att: Attestation = serde_json::from_slice(&body).unwrap();
        let rebuilt = json!({
            "tee-pubkey": att.runtime_data.tee_pubkey,
            "nonce": att.runtime_data.nonce,
            "additional-evidence": att.tee_evidence.additional_evidence,
        });
        let rebuilt =
            protocol::runtime_data_digest(protocol::RuntimeDataHash::Sha384, &rebuilt).unwrap();
        assert_eq!(
            protocol::tee_report_data(Tee::Snp, &rebuilt).unwrap(),
            report
        );
        assert_eq!(
            att.tee_evidence.primary_evidence["report"],
            URL_SAFE_NO_PAD.encode(report)
        );
        let token = protocol::parse_attest_response(br#"{"token":"h.p.s"}"#).unwrap();
        assert_eq!(token, "h.p.s");
        let resource = jwe::encrypt(&att.runtime_data.tee_pubkey, b"state disk key")
            .unwrap()
            .to_json();

        // Back in the TEE.
        assert_eq!(
            &*jwe::decrypt(key, resource.as_bytes()).unwrap(),
            b"state disk key"
        );
    }
}

#[test]
fn round_trips() {
    for key in keys() {
        for len in [0usize, 1, 15, 16, 17, 1000, 65_536] {
            let plaintext: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let jwe = jwe::encrypt(&key.public_jwk(), &plaintext).unwrap();
            assert_eq!(
                &*jwe::decrypt(key, jwe.to_json().as_bytes()).unwrap(),
                &plaintext[..]
            );
            // Fresh CEK and IV every time.
            let again = jwe::encrypt(&key.public_jwk(), &plaintext).unwrap();
            assert_ne!(again.iv, jwe.iv);
            assert_ne!(again.encrypted_key, jwe.encrypted_key);
        }
    }
}

#[test]
fn largest_resource() {
    let key = ec_key();
    let plaintext = vec![0x5au8; jwe::MAX_PLAINTEXT];
    let body = jwe::encrypt(&key.public_jwk(), &plaintext)
        .unwrap()
        .to_json();
    assert!(body.len() <= jwe::MAX_BODY);
    assert_eq!(
        jwe::decrypt(key, body.as_bytes()).unwrap().len(),
        jwe::MAX_PLAINTEXT
    );
    assert!(matches!(
        jwe::encrypt(&key.public_jwk(), &vec![0u8; jwe::MAX_PLAINTEXT + 1]),
        Err(JweError::TooLarge { .. })
    ));
    // A body over the limit is refused before parsing.
    assert!(matches!(
        jwe::decrypt(key, &vec![b' '; jwe::MAX_BODY + 1]),
        Err(JweError::TooLarge { .. })
    ));
    // A ciphertext over the limit inside a body under it.
    let mut small = jwe::encrypt(&key.public_jwk(), b"x").unwrap();
    small.ciphertext = "A".repeat(jwe::MAX_PLAINTEXT.div_ceil(3) * 4 + 4);
    assert!(matches!(
        jwe::decrypt(key, small.to_json().as_bytes()),
        Err(JweError::TooLarge { .. })
    ));
}

/// Flips one bit of the decoded member and re-encodes it (so the base64url stays valid).
fn flip(member: &str, bit: usize) -> String {
    let mut bytes = URL_SAFE_NO_PAD.decode(member).unwrap();
    let i = (bit / 8) % bytes.len();
    bytes[i] ^= 1 << (bit % 8);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn member_len(member: &str) -> usize {
    URL_SAFE_NO_PAD.decode(member).unwrap().len()
}

/// Bit positions to try in a member of `len` bytes: all of them up to `max_all` bytes, else a
/// spread of `samples` positions including the first and last bit.
fn positions(len: usize, max_all: usize, samples: usize) -> Vec<usize> {
    let bits = len * 8;
    if len <= max_all {
        (0..bits).collect()
    } else {
        let mut v: Vec<usize> = (0..samples).map(|i| i * bits / samples + i % 8).collect();
        v.push(bits - 1);
        v
    }
}

#[test]
fn tampering_with_any_member_fails() {
    // Every bit of the small members and 256 spread bits of the others for EC; RSA decryption is
    // slow in debug builds, so 12 spread bits of each member there.
    for (key, max_all, sample) in [(ec_key(), 40, 256), (rsa_key(), 0, 12)] {
        let original = jwe::encrypt(
            &key.public_jwk(),
            b"a resource of some 40 bytes, give or take",
        )
        .unwrap();
        assert!(jwe::decrypt_jwe(key, &original).is_ok());
        type Field = fn(&mut FlattenedJwe) -> &mut String;
        let fields: [(&str, Field); 5] = [
            ("protected", |j| &mut j.protected),
            ("encrypted_key", |j| &mut j.encrypted_key),
            ("iv", |j| &mut j.iv),
            ("ciphertext", |j| &mut j.ciphertext),
            ("tag", |j| &mut j.tag),
        ];
        for (name, field) in fields {
            let mut probe = original.clone();
            let len = member_len(field(&mut probe));
            let mut tried = 0;
            for bit in positions(len, max_all, sample) {
                let mut t = original.clone();
                let m = field(&mut t);
                *m = flip(m, bit);
                let r = jwe::decrypt_jwe(key, &t);
                assert!(r.is_err(), "{name} bit {bit} ({:?})", key.algorithm());
                tried += 1;
            }
            assert!(tried >= 12, "{name}");
            // Truncating or extending the member fails too.
            let mut t = original.clone();
            let m = field(&mut t);
            let mut bytes = URL_SAFE_NO_PAD.decode(&*m).unwrap();
            bytes.pop();
            *m = URL_SAFE_NO_PAD.encode(&bytes);
            assert!(jwe::decrypt_jwe(key, &t).is_err(), "{name} truncated");
            let mut t = original.clone();
            let m = field(&mut t);
            let mut bytes = URL_SAFE_NO_PAD.decode(&*m).unwrap();
            bytes.push(0);
            *m = URL_SAFE_NO_PAD.encode(&bytes);
            assert!(jwe::decrypt_jwe(key, &t).is_err(), "{name} extended");
        }
        // An `aad` member the sender did not authenticate.
        let mut t = original.clone();
        t.aad = Some("AA".into());
        assert!(matches!(
            jwe::decrypt_jwe(key, &t),
            Err(JweError::Undecryptable)
        ));
        // Members swapped in from another JWE to the same key.
        let other = jwe::encrypt(&key.public_jwk(), b"another resource").unwrap();
        for swap in [
            FlattenedJwe {
                ciphertext: other.ciphertext.clone(),
                ..original.clone()
            },
            FlattenedJwe {
                tag: other.tag.clone(),
                ..original.clone()
            },
            FlattenedJwe {
                iv: other.iv.clone(),
                ..original.clone()
            },
            FlattenedJwe {
                encrypted_key: other.encrypted_key.clone(),
                ..original.clone()
            },
            FlattenedJwe {
                protected: other.protected.clone(),
                ..original.clone()
            },
        ] {
            if swap == original {
                // RSA-OAEP-256 headers are all `{"alg":"RSA-OAEP-256","enc":"A256GCM"}`.
                continue;
            }
            assert!(jwe::decrypt_jwe(key, &swap).is_err());
        }
    }
}

#[test]
fn wrong_keys() {
    let other_ec = TeeKeyPair::generate(TeeKeyAlgorithm::EcdhEsA256KwP256).unwrap();
    let to_ec = jwe::encrypt(&ec_key().public_jwk(), b"secret")
        .unwrap()
        .to_json();
    let to_rsa = jwe::encrypt(&rsa_key().public_jwk(), b"secret")
        .unwrap()
        .to_json();
    assert!(matches!(
        jwe::decrypt(&other_ec, to_ec.as_bytes()),
        Err(JweError::Undecryptable)
    ));
    assert!(matches!(
        jwe::decrypt(rsa_key(), to_ec.as_bytes()),
        Err(JweError::Key(TeeKeyError::WrongKeyType { .. }))
    ));
    assert!(matches!(
        jwe::decrypt(ec_key(), to_rsa.as_bytes()),
        Err(JweError::Key(TeeKeyError::WrongKeyType { .. }))
    ));
    // An error names no secret: its text is the same for every wrong key.
    let e = jwe::decrypt(&other_ec, to_ec.as_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot decrypt the JWE: wrong key, or the message was altered"
    );
}

#[test]
fn encrypt_refuses_bad_recipients() {
    let bad = [
        TeePubKey::EC {
            crv: "P-521".into(),
            alg: "ECDH-ES+A256KW".into(),
            x: "AA".into(),
            y: "AA".into(),
        },
        TeePubKey::RSA {
            alg: "RSA1_5".into(),
            k_mod: "AQAB".into(),
            k_exp: "AQAB".into(),
        },
    ];
    for jwk in bad {
        assert!(matches!(jwe::encrypt(&jwk, b"x"), Err(JweError::Key(_))));
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|u| json!(u)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".*".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((".*", inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Valid base64url of arbitrary bytes, or arbitrary text.
fn arb_member() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
        ".{0,64}",
    ]
}

fn arb_header() -> impl Strategy<Value = String> {
    let alg = prop_oneof![
        Just("ECDH-ES+A256KW".to_string()),
        Just("RSA-OAEP-256".to_string()),
        ".{0,12}",
    ];
    let enc = prop_oneof![Just("A256GCM".to_string()), ".{0,8}"];
    (
        alg,
        enc,
        arb_member(),
        arb_member(),
        any::<bool>(),
        arb_json(),
    )
        .prop_map(|(alg, enc, x, y, with_epk, extra)| {
            let mut h = json!({"alg": alg, "enc": enc, "extra": extra});
            if with_epk {
                h["epk"] = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y});
            }
            URL_SAFE_NO_PAD.encode(h.to_string())
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn decrypt_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = jwe::decrypt(ec_key(), &body);
        let _ = FlattenedJwe::from_json(&body);
    }

    #[test]
    fn decrypt_never_panics_on_jwe_shaped_input(
        protected in prop_oneof![arb_header(), arb_member()],
        encrypted_key in arb_member(),
        iv in arb_member(),
        ciphertext in arb_member(),
        tag in arb_member(),
        aad in proptest::option::of(arb_member()),
    ) {
        let jwe = FlattenedJwe { protected, encrypted_key, aad, iv, ciphertext, tag, unprotected: None, header: None };
        for key in keys() {
            let r = jwe::decrypt(key, jwe.to_json().as_bytes());
            prop_assert!(r.is_err());
        }
    }

    #[test]
    fn decrypt_never_panics_on_mutated_jwe(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let original = jwe::encrypt(&ec_key().public_jwk(), b"resource").unwrap().to_json();
        let mut body = original.clone().into_bytes();
        for (at, byte) in flips {
            let i = at.index(body.len());
            body[i] = byte;
        }
        let r = jwe::decrypt(ec_key(), &body);
        if body != original.as_bytes() {
            // A change that survives parsing (say, in JSON whitespace) may still decrypt; a
            // change to any member must not.
            if let Ok(p) = r {
                prop_assert_eq!(&*p, b"resource");
            }
        }
    }

    #[test]
    fn canonicalizer_never_panics(v in arb_json()) {
        if let Ok(c) = canon::canonicalize(&v) {
            // The output is JSON, and canonical: parsing it back changes nothing that matters.
            let back: Value = serde_json::from_str(&c).unwrap();
            if !has_float(&v) {
                prop_assert_eq!(canon::canonicalize(&back).unwrap(), c);
            }
        }
    }

    #[test]
    fn canonicalizer_never_panics_on_parsed_text(text in ".{0,256}") {
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            let _ = canon::canonicalize(&v);
        }
    }

    #[test]
    fn format_number_round_trips(bits in any::<u64>()) {
        let x = f64::from_bits(bits);
        match canon::format_number(x) {
            Ok(s) => prop_assert_eq!(s.parse::<f64>().unwrap(), if x == 0.0 { 0.0 } else { x }),
            Err(_) => prop_assert!(!x.is_finite()),
        }
    }
}

fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(has_float),
        Value::Object(o) => o.values().any(has_float),
        _ => false,
    }
}
