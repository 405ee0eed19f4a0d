//! Interoperability with an independent implementation: Debian's python3-jwcrypto (JOSE over
//! pyca/cryptography) must decrypt the JWEs we make and we must decrypt the ones it makes, for
//! both TEE key types; and Python's own canonical JSON of the runtime data must hash to the
//! report data we bind, in each TEE's form. (scripts/setup.sh installs python3-jwcrypto.)

use std::io::Write as _;
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cvm_kbs_protocol::protocol::{self, RuntimeDataHash, Tee, TeePubKey};
use cvm_kbs_protocol::{TeeKeyPair, jwe};
use rsa::traits::{PrivateKeyParts as _, PublicKeyParts as _};

const PYTHON: &str = "/usr/bin/python3";

fn python(script: &str, input: &str) -> String {
    let mut child = Command::new(PYTHON)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run /usr/bin/python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Reads {"jwk": private JWK, "jwe": flattened JSON} and prints the payload in hex.
const DECRYPT: &str = r#"
import json, sys
from jwcrypto import jwk, jwe
req = json.load(sys.stdin)
key = jwk.JWK(**req["jwk"])
token = jwe.JWE()
token.deserialize(req["jwe"], key=key)
print(token.payload.hex())
"#;

/// Reads {"jwk": public JWK, "alg", "payload": hex} and prints a flattened JWE JSON.
const ENCRYPT: &str = r#"
import json, sys
from jwcrypto import jwk, jwe
req = json.load(sys.stdin)
key = jwk.JWK(**req["jwk"])
token = jwe.JWE(bytes.fromhex(req["payload"]),
                protected=json.dumps({"alg": req["alg"], "enc": "A256GCM"}))
token.add_recipient(key)
print(token.serialize(compact=False))
"#;

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn private_jwk_p256(d: &[u8], public: &TeePubKey) -> serde_json::Value {
    let TeePubKey::EC { x, y, .. } = public else {
        panic!("not EC")
    };
    serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "d": b64(d)})
}

fn public_jwk(public: &TeePubKey) -> serde_json::Value {
    match public {
        TeePubKey::EC { x, y, .. } => {
            serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": y})
        }
        TeePubKey::RSA { k_mod, k_exp, .. } => {
            serde_json::json!({"kty": "RSA", "n": k_mod, "e": k_exp})
        }
        other => panic!("not a TEE key type we make: {other:?}"),
    }
}

fn round_trips(key: &TeeKeyPair, private: serde_json::Value, alg: &str) {
    let public = key.public_jwk();
    for len in [1usize, 32, 1000, 70_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        // Ours → jwcrypto.
        let ours = jwe::encrypt(&public, &payload).unwrap().to_json();
        let req = serde_json::json!({"jwk": private, "jwe": ours});
        let got = python(DECRYPT, &req.to_string());
        assert_eq!(
            got,
            hex(&payload),
            "jwcrypto decrypting ours ({alg}, {len} bytes)"
        );
        // jwcrypto → ours.
        let req =
            serde_json::json!({"jwk": public_jwk(&public), "alg": alg, "payload": hex(&payload)});
        let theirs = python(ENCRYPT, &req.to_string());
        let plain = jwe::decrypt(key, theirs.as_bytes())
            .unwrap_or_else(|e| panic!("decrypting jwcrypto's {alg} JWE: {e}\n{theirs}"));
        assert_eq!(&plain[..], &payload[..], "{alg}, {len} bytes");
        // And a flipped tag from them is refused by us.
        let mut v: serde_json::Value = serde_json::from_str(&theirs).unwrap();
        let mut tag = URL_SAFE_NO_PAD.decode(v["tag"].as_str().unwrap()).unwrap();
        tag[0] ^= 1;
        v["tag"] = serde_json::Value::String(b64(&tag));
        assert!(jwe::decrypt(key, v.to_string().as_bytes()).is_err());
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn jwe_p256_ecdh_es_a256kw_both_ways() {
    let mut d = [0u8; 32];
    getrandom::fill(&mut d).unwrap();
    d[0] &= 0x7f; // below the group order
    d[31] |= 1; // non-zero
    let key = TeeKeyPair::from_p256_scalar(&d).unwrap();
    let private = private_jwk_p256(&d, &key.public_jwk());
    round_trips(&key, private, "ECDH-ES+A256KW");
}

#[test]
fn jwe_rsa_oaep_256_both_ways() {
    let rsa = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let primes = rsa.primes();
    let int = |v: &rsa::BigUint| b64(&v.to_bytes_be());
    let p = rsa::BigUint::from_bytes_be(&primes[0].to_bytes_be());
    let q = rsa::BigUint::from_bytes_be(&primes[1].to_bytes_be());
    let one = rsa::BigUint::from(1u8);
    let d = rsa.d().clone();
    let dp = &d % (&p - &one);
    let dq = &d % (&q - &one);
    // q^-1 mod p = q^(p-2) mod p (p is prime).
    let qi = q.modpow(&(&p - rsa::BigUint::from(2u8)), &p);
    let private = serde_json::json!({
        "kty": "RSA", "n": int(rsa.n()), "e": int(rsa.e()), "d": int(&d),
        "p": int(&p), "q": int(&q), "dp": int(&dp), "dq": int(&dq), "qi": int(&qi),
    });
    let key = TeeKeyPair::from_rsa(rsa).unwrap();
    round_trips(&key, private, "RSA-OAEP-256");
}

/// Trustee canonicalizes the runtime data with serde_json_canonicalizer (RFC 8785); for objects
/// of ASCII strings that is Python's `json.dumps(sort_keys=True, separators=(",", ":"))`.
#[test]
fn report_data_matches_an_independent_canonicalization() {
    let mut d = [0x11u8; 32];
    d[0] = 0x22;
    let key = TeeKeyPair::from_p256_scalar(&d).unwrap();
    let jwk = key.public_jwk();
    let nonce = "q2+Wd/dIE/2C3QY+ygAjnCS5bHjR7+YVxnFQvrpfHQo=";
    for additional in ["", "{\"nvidia\":\"x\"}"] {
        let rd = protocol::runtime_data(nonce, &jwk, additional);
        let digest = protocol::runtime_data_digest(RuntimeDataHash::Sha384, &rd).unwrap();
        // Each TEE's form, as Trustee's verifiers compare it: tpm the first 32 bytes (v0.16
        // and later), snp/tdx padded to 64, the Azure vTPM TEEs the digest as it is.
        let ours: Vec<String> = [Tee::Tpm, Tee::Snp, Tee::Tdx, Tee::AzSnpVtpm, Tee::AzTdxVtpm]
            .into_iter()
            .map(|tee| hex(&protocol::tee_report_data(tee, &digest).unwrap()))
            .collect();
        let script = r#"
import json, sys, hashlib
obj = json.load(sys.stdin)
text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
d = hashlib.sha384(text.encode()).digest()
print(" ".join(x.hex() for x in [d[:32], d + bytes(16), d + bytes(16), d, d]))
"#;
        // Python builds the object from the parts itself, as a verifier would.
        let input = serde_json::json!({
            "tee-pubkey": serde_json::to_value(&jwk).unwrap(),
            "nonce": nonce,
            "additional-evidence": additional,
        });
        assert_eq!(
            python(script, &input.to_string()),
            ours.join(" "),
            "{additional:?}"
        );
    }
}
