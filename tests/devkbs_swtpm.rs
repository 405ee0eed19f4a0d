//! The dev KBS end to end with real `tpm` evidence from swtpm: the guest's side (TEE key,
//! runtime data, evidence over the session's nonce, the agent's measurement log) against the
//! KBS in-process on 127.0.0.1:0, through a std-only HTTP client, so what is checked is the
//! bytes on the wire. Then the refusals, with Trustee's error types: wrong nonce, replayed
//! attest, the old 64-byte quote nonce, PCR 8 mismatch, an AK the policy does not list, debug
//! mode, path traversal, no session, a missing resource, a tampered JWE. And the boot chain:
//! a vTPM extended as a real OVMF firmware log says, quoted, with the log in the evidence and
//! boot PCR pins in the policy.

use cvm_testkit as common;

use common::swtpm::{Swtpm, start};
use cvm_agent::cmdline::Mode;
use cvm_agent::evidence;
use cvm_agent::kbs::jwe;
use cvm_agent::kbs::protocol::{self, Tee};
use cvm_agent::kbs::tee_key::{TeeKeyAlgorithm, TeeKeyPair};
use cvm_agent::measure::{Event, Facts, Measurer};
use cvm_agent::tee::detect::TeeKind;
use cvm_agent::tpm::{HashAlg, TcpTransport, Tpm};
use cvm_devkbs::{KbsArgs, Server, Tamper};
use serde_json::Value;
use sha2::Digest as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

const ROOTHASH: &str = "8d4a3b2f6c1e0a9b7d5c3e1f2a4b6c8d0e2f4a6b8c0d2e4f6a8b0c2d4e6f8a0b";
const IMAGE: &str = "cvm-demo 1";
const SECRET: &[u8] = b"the demo secret \x00\x01\xff";

fn initdata(n: u32) -> String {
    format!(
        "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"note.txt\" = \"init-data number {n}\"\n"
    )
}

struct Kbs {
    addr: SocketAddr,
    /// Kept for the KBS's lifetime.
    _dir: tempfile::TempDir,
}

/// Starts a dev KBS with `policy` (plus a reference log of the standard facts) and the demo
/// resource.
fn kbs(policy: &str, tamper: Option<Tamper>) -> Kbs {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("resources/default/demo");
    std::fs::create_dir_all(&res).unwrap();
    std::fs::write(res.join("secret"), SECRET).unwrap();
    std::fs::write(dir.path().join("outside"), b"not a resource").unwrap();
    let reference =
        cvm_agent::measure::predict(&facts(Mode::Production, 1), &[HashAlg::Sha256]).unwrap();
    std::fs::write(
        dir.path().join("reference.json"),
        serde_json::to_vec(&reference).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    let args = KbsArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        policy: Some(dir.path().join("policy.toml")),
        resources: dir.path().join("resources"),
        token_key: None,
        tls_cert: None,
        tls_key: None,
        tls_self_signed: None,
        ready_file: None,
        tamper_resource: tamper,
    };
    let server = Server::bind(&args).unwrap();
    let addr = server.local_addr().unwrap();
    std::thread::spawn(move || server.serve());
    Kbs { addr, _dir: dir }
}

/// The policy for this guest's AK (the only one trusted: there is no trust on first use), plus
/// `rest`.
fn trusting(g: &Guest, rest: &str) -> String {
    format!("trusted_aks = [\"{}\"]\n{rest}", g.ak)
}

const REFERENCE: &str = "reference = \"reference.json\"\n";

fn facts(mode: Mode, init: u32) -> Facts {
    Facts {
        mode,
        roothash: Some(ROOTHASH.into()),
        image_version: Some(IMAGE.into()),
        initdata: Some(initdata(init).into_bytes()),
        ..Facts::default()
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Trustee's error body: (type name, detail).
    fn error(&self) -> (String, String) {
        let v: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not a JSON error body: {} {}", self.status, self.text()));
        let t = v["type"].as_str().unwrap();
        let name = t
            .strip_prefix("https://github.com/confidential-containers/kbs/errors/")
            .unwrap_or_else(|| panic!("error type {t}"));
        (name.to_string(), v["detail"].as_str().unwrap().to_string())
    }

    /// A refused attestation as Trustee answers it (401 `AttestationError`, "RCAR handshake
    /// Attest failed"), and the cause the dev KBS appends.
    fn cause(&self) -> String {
        assert_eq!(self.status, 401, "{}", self.text());
        let (name, detail) = self.error();
        assert_eq!(name, "AttestationError", "{detail}");
        detail
            .strip_prefix("Attestation error: RCAR handshake Attest failed: ")
            .unwrap_or_else(|| panic!("not Trustee's attest failure: {detail}"))
            .to_string()
    }
}

/// One request on its own connection, raw bytes out, raw bytes parsed back.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no head end");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    let reply = Reply {
        status,
        headers,
        body,
    };
    let len: usize = reply.header("Content-Length").unwrap().parse().unwrap();
    assert_eq!(len, reply.body.len());
    reply
}

/// A guest: swtpm with the agent's measurements for `facts` so far (no separator).
struct Guest {
    _swtpm: Swtpm,
    tpm: Tpm<TcpTransport>,
    log: Measurer,
    key: TeeKeyPair,
    /// SHA-256 hex of the vTPM's AK, as the host provisioned it.
    ak: String,
}

impl Guest {
    /// The agent's composite: `tpm` primary from this guest's vTPM and log, SNP additional
    /// evidence from the configfs-tsm tree at `root`.
    fn tpm_with_snp(
        &mut self,
        root: &Path,
        nonce: &str,
        jwk: &protocol::TeePubKey,
    ) -> evidence::Composite {
        evidence::collect_composite(
            TeeKind::Tpm,
            Some(TeeKind::Snp),
            root,
            Some(&mut self.tpm),
            nonce,
            jwk,
            protocol::RuntimeDataHash::Sha384,
            Some(self.log.log()),
            &mut evidence::CloudInputs::default(),
        )
        .unwrap()
    }
}

fn guest(facts: &Facts) -> Guest {
    let (swtpm, mut tpm) = start();
    let mut log = Measurer::new(&[HashAlg::Sha256]).unwrap();
    for event in facts.events().unwrap() {
        if event.kind() == cvm_agent::measure::EventKind::Separator {
            break;
        }
        let pcr = event.pcr();
        let digests = log.record(event).unwrap();
        tpm.pcr_extend(pcr, &digests).unwrap();
    }
    let ak = tpm.attestation_key().unwrap();
    Guest {
        _swtpm: swtpm,
        tpm,
        log,
        key: TeeKeyPair::generate(TeeKeyAlgorithm::EcdhEsA256KwP256).unwrap(),
        ak: cvm_agent::hex::encode(&sha2::Sha256::digest(&ak.spki_der)),
    }
}

/// `/auth`: the cookie (`kbs-session-id=…`) and the nonce.
fn auth(addr: SocketAddr) -> (String, String) {
    let body = serde_json::to_vec(&protocol::request(Tee::Tpm)).unwrap();
    let r = http(addr, "POST", "/kbs/v0/auth", &[], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let set = r.header("Set-Cookie").unwrap().to_string();
    let cookie = set.split(';').next().unwrap().to_string();
    assert!(cookie.starts_with("kbs-session-id="), "{set}");
    assert!(set.contains("; Expires="), "{set}");
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["extra-params"], "", "Trustee answers an empty string");
    let challenge = protocol::parse_challenge(&r.body).unwrap();
    assert_eq!(
        challenge.nonce.len(),
        44,
        "32 bytes, standard padded base64"
    );
    assert_eq!(
        protocol::hash_algorithm(&challenge).unwrap(),
        protocol::RuntimeDataHash::Sha384
    );
    (cookie, challenge.nonce)
}

/// The attest body for `nonce`, with evidence over that nonce's report data.
fn attest_body(g: &mut Guest, nonce: &str, init: Option<&str>) -> Vec<u8> {
    attest_body_in(g, nonce, init, Path::new("/nonexistent"))
}

/// [`attest_body`] with the guest's file system at `root` (for the firmware log).
fn attest_body_in(g: &mut Guest, nonce: &str, init: Option<&str>, root: &Path) -> Vec<u8> {
    let jwk = g.key.public_jwk();
    let rd = protocol::runtime_data(nonce, &jwk, protocol::NO_ADDITIONAL_EVIDENCE);
    let digest = protocol::runtime_data_digest(protocol::RuntimeDataHash::Sha384, &rd).unwrap();
    let ev = evidence::collect(
        TeeKind::Tpm,
        root,
        Some(&mut g.tpm),
        &digest,
        Some(g.log.log()),
    )
    .unwrap();
    serde_json::to_vec(&protocol::attestation(nonce, &jwk, ev, init)).unwrap()
}

/// The evidence of before Trustee v0.16: the 64-byte zero-padded digest as the quote's nonce.
fn attest_body_old_form(g: &mut Guest, nonce: &str, init: Option<&str>) -> Vec<u8> {
    let jwk = g.key.public_jwk();
    let rd = protocol::runtime_data(nonce, &jwk, protocol::NO_ADDITIONAL_EVIDENCE);
    let mut padded = protocol::runtime_data_digest(protocol::RuntimeDataHash::Sha384, &rd).unwrap();
    padded.resize(64, 0);
    let mut ev = evidence::tpm_evidence(&mut g.tpm, &padded).unwrap();
    ev.cel_eventlog = Some(g.log.log().to_json());
    let ev = serde_json::to_value(ev).unwrap();
    serde_json::to_vec(&protocol::attestation(nonce, &jwk, ev, init)).unwrap()
}

fn attest(addr: SocketAddr, cookie: &str, body: &[u8]) -> Reply {
    http(addr, "POST", "/kbs/v0/attest", &[("Cookie", cookie)], body)
}

fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    http(addr, "GET", path, headers, b"")
}

#[test]
fn full_flow_releases_the_resource_to_the_attested_key() {
    let mut g = guest(&facts(Mode::Production, 1));
    let k = kbs(&trusting(&g, REFERENCE), None);
    let (cookie, nonce) = auth(k.addr);
    let body = attest_body(&mut g, &nonce, Some(&initdata(1)));
    let r = attest(k.addr, &cookie, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let token = protocol::parse_attest_response(&r.body).unwrap();

    // The token: ES256 JWT with the claims read from the evidence.
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    assert_eq!(
        b64.decode(parts[0]).unwrap(),
        br#"{"alg":"ES256","typ":"JWT"}"#
    );
    let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["tee"], "tpm");
    assert_eq!(claims["mode"], "production");
    assert_eq!(claims["roothash"], ROOTHASH);
    assert_eq!(claims["image-version"], IMAGE);
    assert_eq!(claims["debug"], false);
    assert_eq!(claims["ak"], g.ak);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        300
    );
    assert_eq!(
        claims["tee-pubkey"],
        serde_json::to_value(g.key.public_jwk()).unwrap()
    );
    let init = cvm_agent::initdata::InitData::parse(initdata(1).as_bytes()).unwrap();
    assert_eq!(claims["init-data"], cvm_agent::hex::encode(&init.digest()));
    assert_eq!(
        claims["pcrs"]["8"],
        cvm_agent::hex::encode(&init.pcr8_expected())
    );

    // The resource with the session cookie, then with the bearer token alone.
    for headers in [
        vec![("Cookie", cookie.as_str())],
        vec![("Authorization", &*format!("Bearer {token}"))],
    ] {
        let r = get(k.addr, "/kbs/v0/resource/default/demo/secret", &headers);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        let plain = jwe::decrypt(&g.key, &r.body).unwrap();
        assert_eq!(&plain[..], SECRET);
        // Another key cannot open it.
        let other = TeeKeyPair::generate(TeeKeyAlgorithm::EcdhEsA256KwP256).unwrap();
        assert!(jwe::decrypt(&other, &r.body).is_err());
    }

    // Missing resource: as Trustee, 401 PluginInternalError that says nothing more (a
    // missing and a refused resource look alike to the guest).
    let r = get(
        k.addr,
        "/kbs/v0/resource/default/demo/nope",
        &[("Cookie", &cookie)],
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        r.error(),
        ("PluginInternalError".into(), "Plugin internal error".into())
    );

    // Path traversal and odd components: 404, the file outside is never read.
    for path in [
        "/kbs/v0/resource/../outside/x",
        "/kbs/v0/resource/default/../../outside",
        "/kbs/v0/resource/default/demo/..",
        "/kbs/v0/resource/default/demo/%2e%2e%2foutside",
        "/kbs/v0/resource/default/demo",
        "/kbs/v0/resource/default/demo/secret/x",
    ] {
        let r = get(k.addr, path, &[("Cookie", &cookie)]);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert_eq!(r.error().0, "InvalidRequestPath", "{path}");
    }

    // A forged token (claims changed) is refused.
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(br#"{"exp":9999999999}"#),
        parts[2]
    );
    let r = get(
        k.addr,
        "/kbs/v0/resource/default/demo/secret",
        &[("Authorization", &format!("Bearer {forged}"))],
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.error().0, "TokenVerifierError");
}

#[test]
fn nonces_are_single_use_and_bound_to_the_session() {
    let mut g = guest(&facts(Mode::Production, 1));
    let k = kbs(&trusting(&g, REFERENCE), None);

    // Wrong nonce: refused, and it spends the session's nonce.
    let (cookie, nonce) = auth(k.addr);
    let wrong = attest_body(
        &mut g,
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        Some(&initdata(1)),
    );
    let r = attest(k.addr, &cookie, &wrong);
    assert_eq!(
        r.cause(),
        "the runtime-data nonce is not this session's nonce"
    );
    let right = attest_body(&mut g, &nonce, Some(&initdata(1)));
    let r = attest(k.addr, &cookie, &right);
    assert!(r.cause().contains("already used"), "{}", r.cause());

    // A good attest, then the same body replayed: on its session and on a new one.
    let (cookie, nonce) = auth(k.addr);
    let body = attest_body(&mut g, &nonce, Some(&initdata(1)));
    assert_eq!(attest(k.addr, &cookie, &body).status, 200);
    let r = attest(k.addr, &cookie, &body);
    assert!(r.cause().contains("already used"));
    let (cookie2, _) = auth(k.addr);
    let r = attest(k.addr, &cookie2, &body);
    assert_eq!(
        r.cause(),
        "the runtime-data nonce is not this session's nonce"
    );

    // Evidence over another TEE key than the one in runtime-data: the report data differs.
    let (cookie, nonce) = auth(k.addr);
    let mut v: Value =
        serde_json::from_slice(&attest_body(&mut g, &nonce, Some(&initdata(1)))).unwrap();
    let other = TeeKeyPair::generate(TeeKeyAlgorithm::EcdhEsA256KwP256).unwrap();
    v["runtime-data"]["tee-pubkey"] = serde_json::to_value(other.public_jwk()).unwrap();
    let r = attest(k.addr, &cookie, v.to_string().as_bytes());
    assert!(
        r.cause()
            .starts_with("the TPM quote's nonce does not match the report data"),
        "{}",
        r.cause()
    );

    // The quote of before Trustee v0.16 (64-byte padded nonce, as the old fixture has it) over
    // this very session's runtime data: today's Trustee refuses it, and so does the dev KBS.
    let (cookie, nonce) = auth(k.addr);
    let r = attest(
        k.addr,
        &cookie,
        &attest_body_old_form(&mut g, &nonce, Some(&initdata(1))),
    );
    assert!(
        r.cause()
            .starts_with("the TPM quote's nonce is 64 bytes: Trustee (v0.16 and later) expects"),
        "{}",
        r.cause()
    );

    // No session at all.
    let r = attest(k.addr, "kbs-session-id=0123", &body);
    assert_eq!(r.cause(), "unknown or expired session");
    let r = http(k.addr, "POST", "/kbs/v0/attest", &[], &body);
    assert_eq!(r.status, 401);
    let r = get(k.addr, "/kbs/v0/resource/default/demo/secret", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.error().0, "TokenNotFound");
    // A session that never attested.
    let (cookie, _) = auth(k.addr);
    let r = get(
        k.addr,
        "/kbs/v0/resource/default/demo/secret",
        &[("Cookie", &cookie)],
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.error().1, "the session has not attested");
    // Malformed attest body: Trustee's 401 AttestationError (its attest handler fails as a
    // whole), not a 400.
    let (cookie, _) = auth(k.addr);
    let r = attest(k.addr, &cookie, b"{\"nope\":1}");
    assert!(
        r.cause().starts_with("deserialize Attestation"),
        "{}",
        r.cause()
    );
}

#[test]
fn pcr8_must_match_the_init_data() {
    let mut g = guest(&facts(Mode::Production, 1));
    let k = kbs(&trusting(&g, REFERENCE), None);
    let (cookie, nonce) = auth(k.addr);
    let body = attest_body(&mut g, &nonce, Some(&initdata(2)));
    let r = attest(k.addr, &cookie, &body);
    assert_eq!(r.cause(), "PCR 8 does not match the init-data digest");
    // No init-data, which the default policy requires.
    let (cookie, nonce) = auth(k.addr);
    let body = attest_body(&mut g, &nonce, None);
    let r = attest(k.addr, &cookie, &body);
    assert_eq!(
        r.cause(),
        "the policy requires init-data and the request has none"
    );
}

#[test]
fn only_listed_aks_are_trusted() {
    let mut g = guest(&facts(Mode::Production, 1));
    // Another AK listed: refused, naming the AK.
    let k = kbs(&format!("trusted_aks = [\"{}\"]\n", "ab".repeat(32)), None);
    let (cookie, nonce) = auth(k.addr);
    let r = attest(
        k.addr,
        &cookie,
        &attest_body(&mut g, &nonce, Some(&initdata(1))),
    );
    assert_eq!(
        r.cause(),
        format!(
            "the AK (sha256 {}) is not in the policy's trusted_aks",
            g.ak
        )
    );

    // This guest's AK listed: a second vTPM is still refused (no trust on first use).
    let k = kbs(&trusting(&g, ""), None);
    let (cookie, nonce) = auth(k.addr);
    let r = attest(
        k.addr,
        &cookie,
        &attest_body(&mut g, &nonce, Some(&initdata(1))),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut g2 = guest(&facts(Mode::Production, 1));
    let (cookie, nonce) = auth(k.addr);
    let r = attest(
        k.addr,
        &cookie,
        &attest_body(&mut g2, &nonce, Some(&initdata(1))),
    );
    assert!(r.cause().starts_with("the AK (sha256 "), "{}", r.cause());

    // Defaults: no list, nothing trusted, not even the first AK seen.
    let k = kbs("", None);
    for _ in 0..2 {
        let (cookie, nonce) = auth(k.addr);
        let r = attest(
            k.addr,
            &cookie,
            &attest_body(&mut g, &nonce, Some(&initdata(1))),
        );
        assert!(r.cause().starts_with("the AK (sha256 "), "{}", r.cause());
    }
}

#[test]
fn debug_mode_and_reference_values() {
    // Debug mode, forbidden by default (the reference check is off here: it is production).
    let mut g = guest(&facts(Mode::Debug, 1));
    let k = kbs(&trusting(&g, ""), None);
    let (cookie, nonce) = auth(k.addr);
    let r = attest(
        k.addr,
        &cookie,
        &attest_body(&mut g, &nonce, Some(&initdata(1))),
    );
    assert_eq!(r.cause(), "policy forbids debug mode");

    // Production, but the policy wants another image version.
    let mut g = guest(&facts(Mode::Production, 1));
    let k = kbs(&trusting(&g, "image_version = \"cvm-demo 2\"\n"), None);
    let (cookie, nonce) = auth(k.addr);
    let r = attest(
        k.addr,
        &cookie,
        &attest_body(&mut g, &nonce, Some(&initdata(1))),
    );
    assert_eq!(
        r.cause(),
        "image version \"cvm-demo 1\" is not the policy's \"cvm-demo 2\""
    );

    // A log that is not a prefix of the reference (another root hash).
    let mut other = facts(Mode::Production, 1);
    other.roothash = Some("00".repeat(32));
    let mut g = guest(&other);
    let k = kbs(&trusting(&g, REFERENCE), None);
    let (cookie, nonce) = auth(k.addr);
    let r = attest(
        k.addr,
        &cookie,
        &attest_body(&mut g, &nonce, Some(&initdata(1))),
    );
    assert_eq!(
        r.cause(),
        "event log: record 1 (roothash) differs from the reference"
    );

    // A log that does not replay to the quoted PCR 15 (one event more in the TPM).
    let mut g = guest(&facts(Mode::Production, 1));
    let k = kbs(&trusting(&g, ""), None);
    let extra = Event::state_disk("disk").unwrap();
    let digests = extra.digest(HashAlg::Sha256).unwrap();
    g.tpm.pcr_extend(15, &[(HashAlg::Sha256, digests)]).unwrap();
    let (cookie, nonce) = auth(k.addr);
    let r = attest(
        k.addr,
        &cookie,
        &attest_body(&mut g, &nonce, Some(&initdata(1))),
    );
    assert_eq!(
        r.cause(),
        "event log: the replayed log does not give the quoted PCR 15"
    );
}

/// A log taken after launch (the separator is in the TPM) with its separator relabelled as a
/// foreign record of the same digest: it replays to the quoted PCR 15, but PCR 15 takes only
/// the agent's records, so it cannot pass as pre-launch.
#[test]
fn a_relabelled_separator_is_refused() {
    let mut g = guest(&facts(Mode::Production, 1));
    let k = kbs(&trusting(&g, ""), None);
    let digest = Event::separator().digest(HashAlg::Sha256).unwrap();
    g.tpm
        .pcr_extend(15, &[(HashAlg::Sha256, digest.clone())])
        .unwrap();
    let (cookie, nonce) = auth(k.addr);
    let mut v: Value =
        serde_json::from_slice(&attest_body(&mut g, &nonce, Some(&initdata(1)))).unwrap();
    let log = v["tee-evidence"]["primary_evidence"]["cel_eventlog"]
        .as_array_mut()
        .unwrap();
    let recnum = log.len();
    log.push(serde_json::json!({
        "recnum": recnum, "pcr": 15,
        "digests": [{"hashAlg": "sha256", "digest": cvm_agent::hex::encode(&digest)}],
        "content_type": "systemd", "content": {"string": ""},
    }));
    let r = attest(k.addr, &cookie, v.to_string().as_bytes());
    assert!(
        r.cause().contains("only cvm-agent records may extend it"),
        "{}",
        r.cause()
    );
}

#[test]
fn tampered_resources_do_not_decrypt() {
    for t in [Tamper::Tag, Tamper::Ciphertext, Tamper::Header, Tamper::Iv] {
        let mut g = guest(&facts(Mode::Production, 1));
        let k = kbs(&trusting(&g, REFERENCE), Some(t));
        let (cookie, nonce) = auth(k.addr);
        let r = attest(
            k.addr,
            &cookie,
            &attest_body(&mut g, &nonce, Some(&initdata(1))),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let r = get(
            k.addr,
            "/kbs/v0/resource/default/demo/secret",
            &[("Cookie", &cookie)],
        );
        assert_eq!(r.status, 200);
        assert!(jwe::decrypt(&g.key, &r.body).is_err(), "{t:?}");
    }
}

/// A real OVMF + swtpm boot's firmware log (cvm-uki's fixture, see its PROVENANCE.md).
fn fixture_log(tag: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/crates/uki/tests/fixtures/{tag}.eventlog.bin",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A guest file system whose firmware log is `log`.
fn root_with_log(log: &[u8]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sys/kernel/security/tpm0");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("binary_bios_measurements"), log).unwrap();
    root
}

/// The SHA-256 PCRs tpm2_eventlog (tpm2-tools) computes for a log file.
fn tpm2_eventlog_sha256(path: &Path) -> Vec<(u32, String)> {
    let out = std::process::Command::new("tpm2_eventlog")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "tpm2_eventlog: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let pcrs = &text[text.rfind("pcrs:").unwrap()..];
    let mut bank = "";
    let mut values = Vec::new();
    for line in pcrs.lines().skip(1) {
        let t = line.trim();
        if let Some(b) = t.strip_suffix(':') {
            bank = if b == "sha256" { "sha256" } else { "" };
        } else if let (true, Some((n, v))) = (bank == "sha256", t.split_once(':')) {
            values.push((
                n.trim().parse().unwrap(),
                v.trim().trim_start_matches("0x").to_ascii_lowercase(),
            ));
        }
    }
    values
}

/// The boot chain end to end: swtpm extended exactly as a real OVMF log says (before the
/// agent's own measurements), a real quote over it with the log in the evidence. Pins that
/// hold and a log that replays pass; a changed pin, a log that does not replay to the quote
/// and a truncated log are refused with the reason; without a log the pins still hold against
/// the quote. tpm2_eventlog computes the same PCRs from the same log as the vTPM holds.
#[test]
fn firmware_log_and_boot_pcr_pins() {
    use cvm_tcglog::{EventLog as TcgLog, HashAlg as TcgAlg};
    const BOOT: [u32; 11] = [0, 1, 2, 3, 4, 5, 6, 7, 9, 11, 12];
    let raw = fixture_log("ovmf-boot-option");
    let firmware = TcgLog::parse(&raw).unwrap();

    // The guest: the firmware's events first, as OVMF, the stub and the kernel extend them.
    let (swtpm, mut tpm) = start();
    for e in &firmware.events {
        if e.event_type != cvm_tcglog::eventlog::EV_NO_ACTION {
            let d = e.digest(TcgAlg::Sha256).unwrap().to_vec();
            tpm.pcr_extend(e.pcr, &[(HashAlg::Sha256, d)]).unwrap();
        }
    }
    let mut log = Measurer::new(&[HashAlg::Sha256]).unwrap();
    for event in facts(Mode::Production, 1).events().unwrap() {
        if event.kind() == cvm_agent::measure::EventKind::Separator {
            break;
        }
        let pcr = event.pcr();
        let digests = log.record(event).unwrap();
        tpm.pcr_extend(pcr, &digests).unwrap();
    }
    let quoted: Vec<(u32, String)> = tpm
        .pcr_read(HashAlg::Sha256, &BOOT)
        .unwrap()
        .into_iter()
        .map(|(n, v)| (n, cvm_agent::hex::encode(&v)))
        .collect();
    // Our replay, the vTPM and tpm2_eventlog agree on every boot PCR.
    let replayed = firmware.replay(TcgAlg::Sha256).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("log.bin");
    std::fs::write(&file, &raw).unwrap();
    let tools = tpm2_eventlog_sha256(&file);
    for (n, v) in &quoted {
        assert_eq!(
            cvm_agent::hex::encode(&replayed[*n as usize]),
            *v,
            "PCR {n}"
        );
        let tool = tools.iter().find(|(t, _)| t == n).map(|(_, v)| v.as_str());
        // tpm2_eventlog lists only the PCRs the log extends; the others stay zero.
        assert_eq!(tool.unwrap_or(&"00".repeat(32)), v, "tpm2_eventlog PCR {n}");
    }
    assert!(quoted.iter().any(|(n, v)| *n == 4 && *v != "00".repeat(32)));
    let ak = tpm.attestation_key().unwrap();
    let mut g = Guest {
        _swtpm: swtpm,
        tpm,
        log,
        key: TeeKeyPair::generate(TeeKeyAlgorithm::EcdhEsA256KwP256).unwrap(),
        ak: cvm_agent::hex::encode(&sha2::Sha256::digest(&ak.spki_der)),
    };
    let value = |n: u32| quoted.iter().find(|(p, _)| *p == n).unwrap().1.clone();
    let pins = |four: &str| {
        format!(
            "{REFERENCE}pcrs = {{ 4 = \"{four}\", 9 = \"{}\", 11 = \"{}\", 12 = \"{}\" }}\n",
            value(9),
            value(11),
            value(12)
        )
    };
    let try_attest = |g: &mut Guest, k: &Kbs, root: &Path| {
        let (cookie, nonce) = auth(k.addr);
        let body = attest_body_in(g, &nonce, Some(&initdata(1)), root);
        attest(k.addr, &cookie, &body)
    };

    let good = kbs(&trusting(&g, &pins(&value(4))), None);
    let with_log = root_with_log(&raw);
    let r = try_attest(&mut g, &good, with_log.path());
    assert_eq!(r.status, 200, "{}", r.text());
    // The evidence on the wire carried the log, byte for byte.
    let (_, nonce) = auth(good.addr);
    let body: Value =
        serde_json::from_slice(&attest_body_in(&mut g, &nonce, None, with_log.path())).unwrap();
    use base64::Engine as _;
    let sent = base64::engine::general_purpose::STANDARD
        .decode(
            body["tee-evidence"]["primary_evidence"]["eventlog"]
                .as_str()
                .expect("eventlog in the evidence"),
        )
        .unwrap();
    assert_eq!(sent, raw);

    // Without a log (direct kernel boot) the pins hold against the quote alone.
    let r = try_attest(&mut g, &good, Path::new("/nonexistent"));
    assert_eq!(r.status, 200, "{}", r.text());

    // A changed pin: refused, with or without the log, naming PCR, quoted value and pin.
    let wrong = "ab".repeat(32);
    let changed = kbs(&trusting(&g, &pins(&wrong)), None);
    for root in [with_log.path(), Path::new("/nonexistent")] {
        let r = try_attest(&mut g, &changed, root);
        assert_eq!(
            r.cause(),
            format!("PCR 4 is {}, but the policy pins {wrong}", value(4))
        );
    }

    // The other boot's log (QEMU -kernel: another PCR 1 and 4) does not explain this quote.
    let other = root_with_log(&fixture_log("ovmf-qemu-kernel"));
    let r = try_attest(&mut g, &good, other.path());
    assert!(
        r.cause()
            .starts_with("firmware event log (eventlog): the log replays PCR 1 to "),
        "{}",
        r.cause()
    );
    // One event's digest changed (the UKI's Authenticode digest in PCR 4).
    let mut forged = firmware.clone();
    let uki = forged
        .events
        .iter_mut()
        .find(|e| {
            e.pcr == 4 && e.event_type == cvm_tcglog::eventlog::EV_EFI_BOOT_SERVICES_APPLICATION
        })
        .unwrap();
    for (_, d) in &mut uki.digests {
        d[0] ^= 1;
    }
    let forged = root_with_log(&forged.encode());
    let r = try_attest(&mut g, &good, forged.path());
    assert!(
        r.cause()
            .starts_with("firmware event log (eventlog): the log replays PCR 4 to ")
            && r.cause().ends_with(&format!("the quote has {}", value(4))),
        "{}",
        r.cause()
    );
    // Truncated logs: cut inside the last event, and cut before the events that explain
    // PCR 9 (a well-formed prefix: it parses, and replays to other values).
    let truncated = root_with_log(&raw[..firmware.events.last().unwrap().offset + 10]);
    let r = try_attest(&mut g, &good, truncated.path());
    assert!(
        r.cause()
            .starts_with("firmware event log (eventlog): event log truncated in event "),
        "{}",
        r.cause()
    );
    // The first boot PCR the cut-off events would have extended is named (here PCR 5: OVMF's
    // later PCR 5 events come after the kernel's first PCR 9 event).
    let first9 = firmware.events.iter().find(|e| e.pcr == 9).unwrap().offset;
    let short = TcgLog::parse(&raw[..first9])
        .unwrap()
        .replay(TcgAlg::Sha256)
        .unwrap();
    let differs = *BOOT
        .iter()
        .find(|&&n| cvm_agent::hex::encode(&short[n as usize]) != value(n))
        .unwrap();
    assert!(differs <= 9, "{differs}");
    let prefix = root_with_log(&raw[..first9]);
    let r = try_attest(&mut g, &good, prefix.path());
    assert_eq!(
        r.cause(),
        format!(
            "firmware event log (eventlog): the log replays PCR {differs} to {}, the quote has {}",
            cvm_agent::hex::encode(&short[differs as usize]),
            value(differs)
        )
    );
}

/// The SNP fixture's VCEK as the cert table (auxblob) configfs-tsm hands out.
fn snp_cert_table() -> Vec<u8> {
    let vcek = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/snp/test-vcek.der"
    ))
    .unwrap();
    let guid = 0x63da758d_e664_4564_adc5_f4b93be8accdu128.to_be_bytes();
    let mut t = guid.to_vec();
    t.extend_from_slice(&48u32.to_le_bytes());
    t.extend_from_slice(&(vcek.len() as u32).to_le_bytes());
    t.extend_from_slice(&[0; 24]);
    t.extend_from_slice(&vcek);
    t
}

/// A guest root whose configfs-tsm entry (a provider the report-data check does not know)
/// hands out `report` and `auxblob`, as GCP's or AWS's SNP guest driver would.
fn root_with_tsm(report: &[u8], auxblob: &[u8]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let entry = root
        .path()
        .join("sys/kernel/config/tsm/report")
        .join(cvm_agent::tee::tsm::ENTRY_NAME);
    std::fs::create_dir_all(&entry).unwrap();
    std::fs::write(entry.join("provider"), "fixture\n").unwrap();
    std::fs::write(entry.join("generation"), "1\n").unwrap();
    std::fs::write(entry.join("inblob"), "").unwrap();
    std::fs::write(entry.join("outblob"), report).unwrap();
    std::fs::write(entry.join("auxblob"), auxblob).unwrap();
    root
}

fn snp_fixture() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/snp/test-report.bin"
    ))
    .unwrap()
}

/// GCP/AWS SNP: `tpm` primary evidence from swtpm + the real SNP report as additional
/// evidence, composed by the agent's code, verified by the dev KBS's composite check exactly
/// as Trustee splits it. The SNP fixture was signed for a report data we cannot choose, so the
/// additional evidence's digest is given as that report data (what the device runtime data of
/// the session it was made for hashed to); the primary's digest is recomputed on the verifier
/// side from the attestation's own strings. Refused: the additional evidence checked against
/// this session's {nonce, tee-pubkey} (bound to other runtime data), a tampered report data,
/// a tpm quote over runtime data without the additional-evidence string, and an
/// additional-evidence string changed after the quote.
#[test]
fn tpm_primary_with_snp_additional_evidence() {
    use cvm_devkbs::Policy;
    use cvm_devkbs::verify::{self, AkStore, VerifyError};
    let mut g = guest(&facts(Mode::Production, 1));
    let report = snp_fixture();
    let root = root_with_tsm(&report, &snp_cert_table());
    let parsed = cvm_agent::tee::snp::AttestationReport::parse(&report).unwrap();
    let fixture_digest = parsed.report_data[..48].to_vec();
    let nonce = "RKVMrB6ZyIA2qJ1nhh3UHZnNBk1QJv8xdzIEKzKLEYU=";
    let jwk = g.key.public_jwk();
    let composite = g.tpm_with_snp(root.path(), nonce, &jwk);
    // The additional evidence: the map {"snp": …} with the report configfs-tsm gave, bound
    // to SHA-384 of {nonce, tee-pubkey}.
    let additional = protocol::parse_additional_evidence(&composite.additional).unwrap();
    assert_eq!(additional.len(), 1);
    assert_eq!(additional[0].0, Tee::Snp);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(additional[0].1["attestation_report"], b64.encode(&report));
    let device = protocol::runtime_data_digest(
        protocol::RuntimeDataHash::Sha384,
        &protocol::device_runtime_data(nonce, &jwk),
    )
    .unwrap();
    assert_eq!(composite.device_digest.as_deref(), Some(&device[..]));
    // The primary's runtime data holds the additional-evidence string.
    let verifier_digest = |additional: &str| {
        protocol::runtime_data_digest(
            protocol::RuntimeDataHash::Sha384,
            &protocol::runtime_data(nonce, &jwk, additional),
        )
        .unwrap()
    };
    assert_eq!(composite.digest, verifier_digest(&composite.additional));

    let measurement = cvm_agent::hex::encode(&parsed.measurement);
    let trusted = trusting(&g, "");
    let parse = |rest: &str| {
        Policy::parse(
            &format!("{trusted}snp_measurement = \"{measurement}\"\n{rest}"),
            Path::new("/nonexistent"),
        )
        .unwrap()
    };
    // GCP/AWS: tpm primaries only, SNP as additional evidence and required.
    let policy = parse("additional_tee = [\"snp\"]\nrequire_additional = [\"snp\"]\n");
    let aks = AkStore::new(&policy);
    let init = cvm_agent::initdata::InitData::parse(initdata(1).as_bytes()).unwrap();
    let run_with = |policy: &Policy, primary: &Value, additional_str: &str, device: &[u8]| {
        let additional = protocol::parse_additional_evidence(additional_str).unwrap();
        verify::verify_composite(
            Tee::Tpm,
            primary,
            &additional,
            &verifier_digest(additional_str),
            device,
            Some(&init),
            policy,
            &aks,
        )
    };
    let run = |primary: &Value, additional_str: &str, device_digest: &[u8]| {
        run_with(&policy, primary, additional_str, device_digest)
    };
    let v = run(&composite.primary, &composite.additional, &fixture_digest).unwrap();
    assert_eq!(
        v.claims["additional"]["snp"]["measurement"],
        cvm_agent::hex::encode(&parsed.measurement)
    );
    assert_eq!(v.claims["mode"], "production");
    assert_eq!(
        v.claims["pcrs"]["8"],
        cvm_agent::hex::encode(&init.pcr8_expected())
    );

    // Bound to other runtime data: this session's {nonce, tee-pubkey}, not the fixture's.
    let err = run(&composite.primary, &composite.additional, &device).unwrap_err();
    assert_eq!(
        err.to_string(),
        "additional snp evidence: the SNP REPORT_DATA does not match the report data of this \
         session's runtime data (wrong nonce or TEE key)"
    );
    // A report whose REPORT_DATA was changed no longer verifies against the VCEK.
    let mut tampered = report.clone();
    tampered[0x50] ^= 1;
    let mut forged = fixture_digest.clone();
    forged[0] ^= 1;
    let bad = root_with_tsm(&tampered, &snp_cert_table());
    let c = g.tpm_with_snp(bad.path(), nonce, &jwk);
    let err = run(&c.primary, &c.additional, &forged).unwrap_err();
    assert!(
        matches!(&err, VerifyError::Additional { tee, source }
            if tee == "snp" && matches!(**source, VerifyError::Signature { tee: "snp", .. })),
        "{err}"
    );
    // A tpm quote over the runtime data without the additional-evidence string.
    let without = evidence::collect(
        TeeKind::Tpm,
        root.path(),
        Some(&mut g.tpm),
        &verifier_digest(""),
        Some(g.log.log()),
    )
    .unwrap();
    let err = run(&without, &composite.additional, &fixture_digest).unwrap_err();
    assert!(
        matches!(err, VerifyError::ReportData("the TPM quote's nonce")),
        "{err}"
    );

    // The downgrade: the same image booted as a non-confidential VM with a vTPM sends
    // tpm-only evidence (`without`). Refused under require_additional; the same evidence
    // passes a policy that does not require it.
    let err = run(&without, "", &fixture_digest).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the policy requires additional snp evidence beside the tpm evidence \
         (require_additional), and the request has none: a vTPM alone does not show a \
         confidential VM"
    );
    let optional = parse("additional_tee = [\"snp\"]\n");
    let v = run_with(&optional, &without, "", &fixture_digest).unwrap();
    assert!(v.claims.get("additional").is_none());
    run_with(
        &optional,
        &composite.primary,
        &composite.additional,
        &fixture_digest,
    )
    .unwrap();
    // `tee` lists primaries only: "snp" there no longer admits additional SNP evidence (and
    // additional_tee does not admit a primary snp: see the unit tests).
    let old_form = parse("tee = [\"tpm\", \"snp\"]\n");
    let err = run_with(
        &old_form,
        &composite.primary,
        &composite.additional,
        &fixture_digest,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "additional snp evidence: TEE snp is not allowed as additional evidence by policy \
         (additional_tee)"
    );
    // The same evidence under a re-serialized string: the quote covered the other bytes.
    let respaced = composite.additional.replacen(':', ": ", 1);
    assert_eq!(
        protocol::parse_additional_evidence(&respaced).unwrap()[0].1,
        additional[0].1
    );
    let err = run(&composite.primary, &respaced, &fixture_digest).unwrap_err();
    assert!(
        matches!(err, VerifyError::ReportData("the TPM quote's nonce")),
        "{err}"
    );
}

/// Through the wire: the dev KBS parses `additional_evidence`, verifies the primary with it,
/// and holds the additional report to this session's {nonce, tee-pubkey}: the fixture report
/// (made for another session) is refused by name; a malformed map is refused before any
/// evidence is looked at; without the additional evidence the same guest passes.
#[test]
fn the_kbs_checks_additional_evidence_against_the_session() {
    let mut g = guest(&facts(Mode::Production, 1));
    let parsed = cvm_agent::tee::snp::AttestationReport::parse(&snp_fixture()).unwrap();
    let policy = trusting(
        &g,
        &format!(
            "additional_tee = [\"snp\"]\nsnp_measurement = \"{}\"\n",
            cvm_agent::hex::encode(&parsed.measurement)
        ),
    );
    let k = kbs(&policy, None);
    let root = root_with_tsm(&snp_fixture(), &snp_cert_table());
    let (cookie, nonce) = auth(k.addr);
    let jwk = g.key.public_jwk();
    let c = g.tpm_with_snp(root.path(), &nonce, &jwk);
    let body = |primary: Value, additional: &str| {
        serde_json::to_vec(&protocol::composite_attestation(
            &nonce,
            &jwk,
            primary,
            additional,
            Some(&initdata(1)),
        ))
        .unwrap()
    };
    let r = attest(k.addr, &cookie, &body(c.primary.clone(), &c.additional));
    assert_eq!(
        r.cause(),
        "additional snp evidence: the SNP REPORT_DATA does not match the report data of this \
         session's runtime data (wrong nonce or TEE key)"
    );
    let (cookie, nonce2) = auth(k.addr);
    let rd = protocol::runtime_data(&nonce2, &jwk, r#"{"sev":{}}"#);
    let d = protocol::runtime_data_digest(protocol::RuntimeDataHash::Sha384, &rd).unwrap();
    let ev = evidence::collect(
        TeeKind::Tpm,
        root.path(),
        Some(&mut g.tpm),
        &d,
        Some(g.log.log()),
    )
    .unwrap();
    let r = attest(
        k.addr,
        &cookie,
        &serde_json::to_vec(&protocol::composite_attestation(
            &nonce2,
            &jwk,
            ev,
            r#"{"sev":{}}"#,
            Some(&initdata(1)),
        ))
        .unwrap(),
    );
    assert!(
        r.cause().contains("additional evidence") && r.cause().contains("unknown TEE"),
        "{}",
        r.cause()
    );
    let (cookie, nonce3) = auth(k.addr);
    let r = attest(
        k.addr,
        &cookie,
        &attest_body(&mut g, &nonce3, Some(&initdata(1))),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // A KBS whose policy requires the SNP report refuses the same tpm-only evidence.
    let strict = kbs(&format!("{policy}require_additional = [\"snp\"]\n"), None);
    let cause = session_attest(&strict, &mut g, Some(&initdata(1))).cause();
    let want = "the policy requires additional snp evidence beside the tpm evidence";
    assert!(cause.starts_with(want), "{cause}");
}

/// A fresh session on `k` and the guest's tpm-only attestation in it.
fn session_attest(k: &Kbs, g: &mut Guest, init: Option<&str>) -> Reply {
    let (cookie, nonce) = auth(k.addr);
    let body = attest_body(g, &nonce, init);
    attest(k.addr, &cookie, &body)
}

/// Without init-data (and a policy that does not require it) PCR 8 must be all zeros, as the
/// agent leaves it: a guest whose PCR 8 was extended is refused, one that left it alone passes.
#[test]
fn pcr8_must_be_zero_without_init_data() {
    let mut g = guest(&facts(Mode::Production, 1));
    let k = kbs(&trusting(&g, "require_initdata = false\n"), None);
    let r = session_attest(&k, &mut g, None);
    let init = cvm_agent::initdata::InitData::parse(initdata(1).as_bytes()).unwrap();
    assert_eq!(
        r.cause(),
        format!(
            "PCR 8 is {}, but the request has no init-data: without init-data the agent leaves \
             PCR 8 all zeros, so something else extended it",
            cvm_agent::hex::encode(&init.pcr8_expected())
        )
    );
    let mut plain = facts(Mode::Production, 1);
    plain.initdata = None;
    let mut g = guest(&plain);
    let k = kbs(&trusting(&g, "require_initdata = false\n"), None);
    let r = session_attest(&k, &mut g, None);
    assert_eq!(r.status, 200, "{}", r.text());
}
