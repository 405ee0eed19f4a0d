use super::*;

/// RFC 7518 Appendix C keys: Alice's is the ephemeral (sender) key, Bob's the recipient's.
pub(crate) const ALICE_X: &str = "gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0";
pub(crate) const ALICE_Y: &str = "SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps";
pub(crate) const BOB_X: &str = "weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ";
pub(crate) const BOB_Y: &str = "e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck";
pub(crate) const BOB_D: &str = "VEmDZpDXXK8p8N0Cndsxs924q6nS1RXFASRl6BfUqdw";
/// Z of RFC 7518 Appendix C.
pub(crate) const Z: [u8; 32] = [
    158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49, 110, 163,
    218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
];

pub(crate) fn bob() -> TeeKeyPair {
    TeeKeyPair::from_p256_scalar(&URL_SAFE_NO_PAD.decode(BOB_D).unwrap()).unwrap()
}

#[test]
fn ec_public_jwk_shape() {
    let key = TeeKeyPair::generate(TeeKeyAlgorithm::EcdhEsA256KwP256).unwrap();
    assert_eq!(key.algorithm(), TeeKeyAlgorithm::EcdhEsA256KwP256);
    let jwk = key.public_jwk();
    let TeePubKey::EC { crv, alg, x, y } = &jwk else {
        panic!("not EC: {jwk:?}")
    };
    assert_eq!(crv, "P-256");
    assert_eq!(alg, "ECDH-ES+A256KW");
    assert_eq!(x.len(), 43);
    assert_eq!(y.len(), 43);
    let json = serde_json::to_string(&jwk).unwrap();
    assert_eq!(
        json,
        format!(r#"{{"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW","x":"{x}","y":"{y}"}}"#)
    );
    // It parses back into the same point.
    assert!(matches!(parse_public_jwk(&jwk), Ok(PeerPublicKey::P256(_))));
}

#[test]
fn rfc7518_appendix_c_public_key_and_shared_secret() {
    let bob = bob();
    let TeePubKey::EC { x, y, .. } = bob.public_jwk() else {
        panic!("not EC")
    };
    assert_eq!(x, BOB_X);
    assert_eq!(y, BOB_Y);
    let alice = p256_public_from_coordinates(ALICE_X, ALICE_Y).unwrap();
    assert_eq!(*bob.p256_shared_secret(&alice).unwrap(), Z);
    // An EC key cannot do RSA.
    assert!(matches!(
        bob.rsa_oaep256_decrypt(&[0; 256]),
        Err(TeeKeyError::WrongKeyType { .. })
    ));
}

#[test]
fn debug_shows_no_private_key() {
    let d = URL_SAFE_NO_PAD.decode(BOB_D).unwrap();
    let shown = format!("{:?}", bob());
    assert!(shown.contains(BOB_X), "{shown}");
    assert!(!shown.contains(BOB_D));
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!shown.contains(&hex));
    let decimal = format!("{:?}", d);
    assert!(!shown.contains(&decimal[1..decimal.len() - 1]));
}

#[test]
fn rsa_public_jwk_shape() {
    let key = TeeKeyPair::generate(TeeKeyAlgorithm::RsaOaep256).unwrap();
    assert_eq!(key.algorithm(), TeeKeyAlgorithm::RsaOaep256);
    let jwk = key.public_jwk();
    let TeePubKey::RSA { alg, k_mod, k_exp } = &jwk else {
        panic!("not RSA: {jwk:?}")
    };
    assert_eq!(alg, "RSA-OAEP-256");
    assert_eq!(k_exp, "AQAB");
    assert_eq!(URL_SAFE_NO_PAD.decode(k_mod).unwrap().len(), 256);
    assert_eq!(
        serde_json::to_string(&jwk).unwrap(),
        format!(r#"{{"kty":"RSA","alg":"RSA-OAEP-256","n":"{k_mod}","e":"AQAB"}}"#)
    );
    assert!(matches!(parse_public_jwk(&jwk), Ok(PeerPublicKey::Rsa(_))));
    assert!(!format!("{key:?}").contains("RsaPrivateKey"));
    let alice = p256_public_from_coordinates(ALICE_X, ALICE_Y).unwrap();
    assert!(matches!(
        key.p256_shared_secret(&alice),
        Err(TeeKeyError::WrongKeyType { .. })
    ));
    assert!(matches!(
        key.rsa_oaep256_decrypt(&[1; 256]),
        Err(TeeKeyError::RsaDecrypt)
    ));
}

#[test]
fn public_jwk_validation() {
    let ec = |crv: &str, alg: &str, x: &str, y: &str| TeePubKey::EC {
        crv: crv.into(),
        alg: alg.into(),
        x: x.into(),
        y: y.into(),
    };
    assert!(parse_public_jwk(&ec("P-256", "ECDH-ES+A256KW", BOB_X, BOB_Y)).is_ok());
    for (jwk, why) in [
        (ec("P-384", "ECDH-ES+A256KW", BOB_X, BOB_Y), "curve"),
        (ec("P-256", "ECDH-ES+A128KW", BOB_X, BOB_Y), "alg"),
        (
            ec("P-256", "ECDH-ES+A256KW", BOB_X, ALICE_Y),
            "off the curve",
        ),
        (
            ec("P-256", "ECDH-ES+A256KW", &BOB_X[..40], BOB_Y),
            "short x",
        ),
        (
            ec("P-256", "ECDH-ES+A256KW", &format!("{BOB_X}="), BOB_Y),
            "padded",
        ),
        (ec("P-256", "ECDH-ES+A256KW", "", ""), "empty"),
        (
            TeePubKey::RSA {
                alg: "RSA1_5".into(),
                k_mod: "AQAB".into(),
                k_exp: "AQAB".into(),
            },
            "RSA1_5",
        ),
        (
            TeePubKey::RSA {
                alg: "RSA-OAEP-256".into(),
                k_mod: URL_SAFE_NO_PAD.encode([0xffu8; 128]),
                k_exp: "AQAB".into(),
            },
            "1024-bit",
        ),
        (
            TeePubKey::AKP {
                alg: "ML-KEM-768+A192KW".into(),
                public_key: "AA".into(),
            },
            "AKP",
        ),
    ] {
        assert!(parse_public_jwk(&jwk).is_err(), "{why}");
    }
}

#[test]
fn algorithm_names() {
    assert_eq!(
        "ECDH-ES+A256KW".parse::<TeeKeyAlgorithm>().unwrap(),
        TeeKeyAlgorithm::EcdhEsA256KwP256
    );
    assert_eq!(
        "ECDH-ES+A256KW-P256".parse::<TeeKeyAlgorithm>().unwrap(),
        TeeKeyAlgorithm::EcdhEsA256KwP256
    );
    assert_eq!(
        "RSA-OAEP-256".parse::<TeeKeyAlgorithm>().unwrap(),
        TeeKeyAlgorithm::RsaOaep256
    );
    assert!("RSA1_5".parse::<TeeKeyAlgorithm>().is_err());
    assert_eq!(TeeKeyAlgorithm::default().to_string(), "ECDH-ES+A256KW");
    assert!(TeeKeyPair::from_p256_scalar(&[0u8; 32]).is_err());
    assert!(TeeKeyPair::from_p256_scalar(&[1u8; 31]).is_err());
}
