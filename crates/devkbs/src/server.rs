//! The KBS endpoints over [`super::http`]: sessions, `/auth`, `/attest`, `/resource`, and
//! Trustee's error bodies.

use super::http::{Request, Response};
use super::policy::{Policy, tee_name};
use super::token::TokenKey;
use super::verify::{self, AkStore};
use super::{Tamper, log};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use cvm_kbs_protocol::jwe;
use cvm_kbs_protocol::protocol::{
    self, Attestation, Challenge, INIT_DATA_FORMAT, PROTOCOL_VERSION, RuntimeDataHash,
};
use kbs_types::{ErrorInformation, Tee, TeePubKey};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Trustee's error `type` prefix (`kbs/src/error.rs`).
pub const ERROR_TYPE_PREFIX: &str = "https://github.com/confidential-containers/kbs/errors";
/// Sessions live as long as Trustee's default (5 minutes).
pub const SESSION_LIFETIME: Duration = Duration::from_secs(300);
/// Most sessions kept; the oldest is dropped to make room.
pub const MAX_SESSIONS: usize = 1024;
/// Largest resource served.
pub const MAX_RESOURCE: u64 = 1 << 20;
/// Trustee's detail of a failed attestation (`kbs/src/error.rs` `AttestationError` around
/// `kbs/src/attestation/error.rs` `RcarAttestFailed`).
pub const ATTEST_FAILED: &str = "Attestation error: RCAR handshake Attest failed";
/// Trustee's detail of a resource its plugin could not give: missing, unreadable or refused.
pub const PLUGIN_INTERNAL_ERROR: &str = "Plugin internal error";
/// Longest path component of a resource.
const MAX_COMPONENT: usize = 128;

/// A refusal, as Trustee's `kbs/src/error.rs` names and answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KbsRefusal {
    pub status: u16,
    /// The `Error` variant name Trustee uses (`AttestationError`, `TokenNotFound`, …).
    pub name: &'static str,
    pub detail: String,
}

impl KbsRefusal {
    pub fn new(status: u16, name: &'static str, detail: impl Into<String>) -> KbsRefusal {
        KbsRefusal {
            status,
            name,
            detail: detail.into(),
        }
    }

    /// Trustee's answer to a failed `/attest`: `RcarAttestFailed` inside `AttestationError`.
    /// Trustee's detail stops at "RCAR handshake Attest failed" and logs the cause; the dev
    /// KBS appends the cause so that tests and operators see why.
    pub fn attest_failed(cause: impl std::fmt::Display) -> KbsRefusal {
        KbsRefusal::new(401, "AttestationError", format!("{ATTEST_FAILED}: {cause}"))
    }

    /// Trustee's answer to a failed `/auth`: `RcarAuthFailed` (whose detail has the cause).
    pub fn auth_failed(cause: impl std::fmt::Display) -> KbsRefusal {
        KbsRefusal::new(
            401,
            "AttestationError",
            format!("Attestation error: RCAR handshake Auth failed: {cause}"),
        )
    }

    pub fn response(&self) -> Response {
        let info = ErrorInformation {
            error_type: format!("{ERROR_TYPE_PREFIX}/{}", self.name),
            detail: self.detail.clone(),
        };
        // A struct of two strings always serializes.
        let body = serde_json::to_vec(&info).unwrap_or_default();
        Response::new(self.status, "application/json", body)
    }
}

struct Session {
    created: Instant,
    tee: Tee,
    /// Taken by the first attest attempt: a nonce is good for one attempt only.
    nonce: Option<String>,
    attested: Option<TeePubKey>,
}

pub struct Kbs {
    pub policy: Policy,
    pub resources: PathBuf,
    pub token_key: TokenKey,
    pub tamper: Option<Tamper>,
    pub aks: AkStore,
    sessions: Mutex<HashMap<String, Session>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_bytes<const N: usize>() -> Result<[u8; N], KbsRefusal> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b)
        .map_err(|e| KbsRefusal::new(500, "HTTPFailed", format!("no randomness: {e}")))?;
    Ok(b)
}

/// `Expires=` in the IMF-fixdate form actix (Trustee) writes.
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86400;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Kbs {
    pub fn new(
        policy: Policy,
        resources: PathBuf,
        token_key: TokenKey,
        tamper: Option<Tamper>,
    ) -> Kbs {
        let aks = AkStore::new(&policy);
        Kbs {
            policy,
            resources,
            token_key,
            tamper,
            aks,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Routes one request.
    pub fn handle(&self, req: &Request) -> Response {
        let path = req.target.split('?').next().unwrap_or("");
        let result = match (req.method.as_str(), path) {
            ("POST", "/kbs/v0/auth") => self.auth(req),
            ("POST", "/kbs/v0/attest") => self.attest(req),
            ("GET", p) if p.starts_with("/kbs/v0/resource/") => {
                self.resource(req, &p["/kbs/v0/resource/".len()..])
            }
            (_, "/kbs/v0/auth" | "/kbs/v0/attest") => Err(KbsRefusal::new(
                405,
                "InvalidRequestPath",
                format!("{} is not allowed on {path}", req.method),
            )),
            _ => Err(KbsRefusal::new(
                404,
                "InvalidRequestPath",
                format!("Request path {} is invalid", sanitize(path)),
            )),
        };
        result.unwrap_or_else(|r| r.response())
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock cannot leave a map in a state worse than stale
        // sessions, which expire anyway.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn auth(&self, req: &Request) -> Result<Response, KbsRefusal> {
        let refuse = |detail: String| {
            let r = KbsRefusal::auth_failed(detail);
            log(&format!("auth: refused: {}", r.detail));
            r
        };
        let request: protocol::Request = serde_json::from_slice(&req.body)
            .map_err(|e| refuse(format!("deserialize Request: {e}")))?;
        if request.version != PROTOCOL_VERSION {
            return Err(refuse(format!(
                "KBS Client Protocol Version Mismatch: expect ={PROTOCOL_VERSION} while the \
                 request is {}",
                sanitize(&request.version)
            )));
        }
        if !self.policy.allows_tee(request.tee) {
            return Err(refuse(format!(
                "TEE {} is not allowed by policy",
                tee_name(request.tee)
            )));
        }
        let nonce = STANDARD.encode(random_bytes::<32>()?);
        let id = cvm_text::hex::encode(&random_bytes::<16>()?);
        {
            let mut sessions = self.sessions();
            let now = Instant::now();
            sessions.retain(|_, s| now.duration_since(s.created) < SESSION_LIFETIME);
            while sessions.len() >= MAX_SESSIONS {
                let Some(oldest) = sessions
                    .iter()
                    .min_by_key(|(_, s)| s.created)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                sessions.remove(&oldest);
            }
            sessions.insert(
                id.clone(),
                Session {
                    created: now,
                    tee: request.tee,
                    nonce: Some(nonce.clone()),
                    attested: None,
                },
            );
        }
        let challenge = Challenge {
            nonce,
            extra_params: Value::String(String::new()),
        };
        // Serialized from the struct, so the members keep Trustee's order (nonce first).
        let body = serde_json::to_vec(&challenge).unwrap_or_default();
        log(&format!("auth: session {id} tee={}", tee_name(request.tee)));
        Ok(
            Response::new(200, "application/json", body)
                .with_header("Set-Cookie", self.cookie(&id)),
        )
    }

    fn cookie(&self, id: &str) -> String {
        // Trustee (actix-web): `kbs-session-id=<id>; Expires=<IMF-fixdate>`.
        format!(
            "{}={id}; Expires={}",
            protocol::SESSION_COOKIE,
            http_date(now_secs() + SESSION_LIFETIME.as_secs())
        )
    }

    fn attest(&self, req: &Request) -> Result<Response, KbsRefusal> {
        let refuse = |detail: String| {
            log(&format!("attest: refused: {detail}"));
            KbsRefusal::attest_failed(detail)
        };
        let id = req
            .cookie(protocol::SESSION_COOKIE)
            .ok_or_else(|| refuse("no kbs-session-id cookie: call /kbs/v0/auth first".into()))?
            .to_string();
        // Take the nonce now: whatever happens below, this session's nonce is spent.
        let (tee, nonce) = {
            let mut sessions = self.sessions();
            let session = sessions
                .get_mut(&id)
                .filter(|s| s.created.elapsed() < SESSION_LIFETIME)
                .ok_or_else(|| refuse("unknown or expired session".into()))?;
            let nonce = session.nonce.take().ok_or_else(|| {
                refuse(
                    "this session's nonce was already used: a nonce is good for one attestation"
                        .into(),
                )
            })?;
            (session.tee, nonce)
        };
        let attestation: Attestation = serde_json::from_slice(&req.body)
            .map_err(|e| refuse(format!("deserialize Attestation: {e}")))?;
        if attestation.runtime_data.nonce != nonce {
            return Err(refuse(
                "the runtime-data nonce is not this session's nonce".into(),
            ));
        }
        let tee_pubkey = attestation.runtime_data.tee_pubkey.clone();
        cvm_kbs_protocol::tee_key::parse_public_jwk(&tee_pubkey)
            .map_err(|e| refuse(format!("runtime-data tee-pubkey: {e}")))?;
        let runtime_data = protocol::runtime_data(
            &nonce,
            &tee_pubkey,
            &attestation.tee_evidence.additional_evidence,
        );
        // Trustee hashes with SHA-384 for every TEE it verifies here, whatever was negotiated.
        let digest = protocol::runtime_data_digest(RuntimeDataHash::Sha384, &runtime_data)
            .map_err(|e| refuse(format!("runtime data: {e}")))?;
        let init_data = match &attestation.init_data {
            None => None,
            Some(init) if init.format != INIT_DATA_FORMAT => {
                return Err(refuse(format!(
                    "init-data format {:?} is not supported (only {INIT_DATA_FORMAT:?})",
                    sanitize(&init.format)
                )));
            }
            Some(init) => {
                Some(verify::parse_init_data(&init.body).map_err(|e| refuse(e.to_string()))?)
            }
        };
        let additional =
            protocol::parse_additional_evidence(&attestation.tee_evidence.additional_evidence)
                .map_err(|e| refuse(e.to_string()))?;
        let device_digest = protocol::runtime_data_digest(
            RuntimeDataHash::Sha384,
            &protocol::device_runtime_data(&nonce, &tee_pubkey),
        )
        .map_err(|e| refuse(format!("runtime data: {e}")))?;
        let verified = verify::verify_composite(
            tee,
            &attestation.tee_evidence.primary_evidence,
            &additional,
            &digest,
            &device_digest,
            init_data.as_ref(),
            &self.policy,
            &self.aks,
        )
        .map_err(|e| refuse(e.to_string()))?;

        let mut claims = Map::new();
        claims.insert("tee".into(), json!(tee_name(tee)));
        claims.insert(
            "tee-pubkey".into(),
            serde_json::to_value(&tee_pubkey).unwrap_or(Value::Null),
        );
        for (k, v) in &verified.claims {
            claims.insert(k.clone(), v.clone());
        }
        let token = self.token_key.sign(claims, now_secs());
        {
            let mut sessions = self.sessions();
            // Evicted meanwhile: the token still works as a bearer token.
            if let Some(s) = sessions.get_mut(&id) {
                s.attested = Some(tee_pubkey);
            }
        }
        log(&format!(
            "attest: accepted tee={} session={id} mode={} debug={} init-data={}",
            tee_name(tee),
            verified.mode.as_deref().unwrap_or("-"),
            verified.debug,
            verified.initdata_digest.as_deref().unwrap_or("-"),
        ));
        Ok(Response::json(200, &json!({"token": token}))
            .with_header("Set-Cookie", self.cookie(&id)))
    }

    /// The TEE key of an attested session (cookie) or of a valid bearer token, and who it is.
    fn authorize(&self, req: &Request) -> Result<(TeePubKey, String), KbsRefusal> {
        if let Some(auth) = req.header("authorization") {
            let token = auth.strip_prefix("Bearer ").ok_or_else(|| {
                KbsRefusal::new(
                    401,
                    "TokenNotFound",
                    "the Authorization header is not a Bearer token",
                )
            })?;
            let claims = self
                .token_key
                .verify(token.trim(), now_secs())
                .map_err(|e| KbsRefusal::new(401, "TokenVerifierError", e.to_string()))?;
            let key: TeePubKey = claims
                .get("tee-pubkey")
                .and_then(|k| serde_json::from_value(k.clone()).ok())
                .ok_or_else(|| {
                    KbsRefusal::new(401, "TokenVerifierError", "the token has no tee-pubkey")
                })?;
            return Ok((key, "bearer token".into()));
        }
        let id = req.cookie(protocol::SESSION_COOKIE).ok_or_else(|| {
            KbsRefusal::new(
                401,
                "TokenNotFound",
                "no attested session (kbs-session-id cookie) and no Bearer token",
            )
        })?;
        let sessions = self.sessions();
        let session = sessions
            .get(id)
            .filter(|s| s.created.elapsed() < SESSION_LIFETIME)
            .ok_or_else(|| KbsRefusal::new(401, "TokenNotFound", "unknown or expired session"))?;
        let key = session
            .attested
            .clone()
            .ok_or_else(|| KbsRefusal::new(401, "TokenNotFound", "the session has not attested"))?;
        Ok((key, format!("session {id}")))
    }

    fn resource(&self, req: &Request, rest: &str) -> Result<Response, KbsRefusal> {
        let result = self.resource_inner(req, rest);
        if let Err(r) = &result {
            log(&format!(
                "resource: refused {}: {}",
                sanitize(rest),
                r.detail
            ));
        }
        result
    }

    fn resource_inner(&self, req: &Request, rest: &str) -> Result<Response, KbsRefusal> {
        let (key, who) = self.authorize(req)?;
        let components = resource_components(rest).map_err(|why| {
            KbsRefusal::new(
                404,
                "InvalidRequestPath",
                format!("Request path {} is invalid: {why}", sanitize(rest)),
            )
        })?;
        let path = components
            .iter()
            .fold(self.resources.clone(), |p, c| p.join(c));
        // Trustee's resource plugin answers a missing (or unreadable) resource with 401
        // `PluginInternalError` and no detail, like a denial: the reason stays in our log.
        let bytes = read_resource(&path).map_err(|why| {
            log(&format!(
                "resource: cannot read {}: {why}",
                components.join("/")
            ));
            KbsRefusal::new(401, "PluginInternalError", PLUGIN_INTERNAL_ERROR)
        })?;
        let jwe = jwe::encrypt(&key, &bytes)
            .map_err(|e| KbsRefusal::new(401, "JweError", format!("JWE failed: {e}")))?;
        let mut jwe = jwe;
        if let Some(t) = self.tamper {
            tamper(&mut jwe, t);
        }
        log(&format!(
            "resource: released {} ({} bytes) to {who}{}",
            components.join("/"),
            bytes.len(),
            if self.tamper.is_some() {
                " (tampered, as asked)"
            } else {
                ""
            }
        ));
        Ok(Response::new(
            200,
            "application/json",
            jwe.to_json().into_bytes(),
        ))
    }
}

/// `<repo>/<type>/<tag>`: three components of `[A-Za-z0-9._-]`, none `.` or `..`, none empty,
/// each at most [`MAX_COMPONENT`] bytes.
pub fn resource_components(rest: &str) -> Result<Vec<String>, String> {
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() != 3 {
        return Err("expected <repository>/<type>/<tag>".into());
    }
    for p in &parts {
        if p.is_empty() || *p == "." || *p == ".." {
            return Err("empty, . or .. component".into());
        }
        if p.len() > MAX_COMPONENT {
            return Err(format!("a component is longer than {MAX_COMPONENT} bytes"));
        }
        if !p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err("a component has characters outside [A-Za-z0-9._-]".into());
        }
    }
    Ok(parts.into_iter().map(String::from).collect())
}

/// A regular file (no symlink followed at the last step) of at most [`MAX_RESOURCE`] bytes.
fn read_resource(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.kind().to_string())?;
    if !meta.file_type().is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_RESOURCE {
        return Err(format!("larger than {MAX_RESOURCE} bytes"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(|e| e.kind().to_string())?
        .take(MAX_RESOURCE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.kind().to_string())?;
    if bytes.len() as u64 > MAX_RESOURCE {
        return Err(format!("larger than {MAX_RESOURCE} bytes"));
    }
    Ok(bytes)
}

/// Flips the lowest bit of the first decoded byte of one JWE member (the guest's negative tests).
pub fn tamper(jwe: &mut jwe::FlattenedJwe, what: Tamper) {
    let member = match what {
        Tamper::Tag => &mut jwe.tag,
        Tamper::Ciphertext => &mut jwe.ciphertext,
        Tamper::Header => &mut jwe.protected,
        Tamper::Iv => &mut jwe.iv,
    };
    if let Ok(mut bytes) = URL_SAFE_NO_PAD.decode(member.as_bytes()) {
        if let Some(b) = bytes.first_mut() {
            *b ^= 1;
        }
        *member = URL_SAFE_NO_PAD.encode(bytes);
    }
}

/// Hostile text echoed in a detail: bounded, printable ASCII only.
fn sanitize(s: &str) -> String {
    s.chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_trustees() {
        let r = KbsRefusal::new(
            401,
            "AttestationError",
            "PCR 8 does not match the init-data digest",
        )
        .response();
        assert_eq!(r.status, 401);
        assert_eq!(
            String::from_utf8(r.body.clone()).unwrap(),
            r#"{"type":"https://github.com/confidential-containers/kbs/errors/AttestationError","detail":"PCR 8 does not match the init-data digest"}"#
        );
        // What the guest makes of it.
        match protocol::parse_error(r.status, &r.body) {
            cvm_kbs_protocol::KbsError::Refused {
                status,
                error_type,
                detail,
            } => {
                assert_eq!(status, 401);
                assert!(error_type.ends_with("/AttestationError"));
                assert_eq!(detail, "PCR 8 does not match the init-data digest");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resource_paths() {
        assert_eq!(
            resource_components("default/demo/secret").unwrap(),
            ["default", "demo", "secret"]
        );
        assert!(resource_components("a-b/c_d/e.f").is_ok());
        for bad in [
            "default/demo",
            "default/demo/secret/x",
            "../demo/secret",
            "default/../secret",
            "default/demo/.",
            "default//secret",
            "default/demo/%2e%2e",
            "default/demo/a b",
            "default/demo/\u{e9}",
            "",
        ] {
            assert!(resource_components(bad).is_err(), "{bad}");
        }
        assert!(resource_components(&format!("a/b/{}", "x".repeat(MAX_COMPONENT + 1))).is_err());
    }

    fn post(target: &str, cookie: Option<&str>, body: &str) -> Request {
        let mut headers = Vec::new();
        if let Some(c) = cookie {
            headers.push(("cookie".to_string(), c.to_string()));
        }
        Request {
            method: "POST".into(),
            target: target.into(),
            http11: true,
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn sessions_are_bounded_oldest_first() {
        let kbs = Kbs::new(
            Policy::default(),
            PathBuf::from("/nonexistent"),
            TokenKey::generate().unwrap(),
            None,
        );
        let auth = r#"{"version":"0.4.0","tee":"tpm","extra-params":{}}"#;
        let cookie = |r: &Response| {
            let set = &r.headers.iter().find(|(n, _)| n == "Set-Cookie").unwrap().1;
            set.split(';').next().unwrap().to_string()
        };
        let first = cookie(&kbs.handle(&post("/kbs/v0/auth", None, auth)));
        let second = cookie(&kbs.handle(&post("/kbs/v0/auth", None, auth)));
        assert_ne!(first, second);
        for _ in 2..MAX_SESSIONS {
            kbs.handle(&post("/kbs/v0/auth", None, auth));
        }
        assert_eq!(kbs.sessions().len(), MAX_SESSIONS);
        kbs.handle(&post("/kbs/v0/auth", None, auth));
        assert_eq!(kbs.sessions().len(), MAX_SESSIONS);
        // The oldest is gone, the next one is still there (its nonce is then spent).
        let r = kbs.handle(&post("/kbs/v0/attest", Some(&first), "{}"));
        assert_eq!(r.status, 401);
        assert!(String::from_utf8_lossy(&r.body).contains("unknown or expired session"));
        // A malformed body is Trustee's 401 AttestationError, not a 400.
        let r = kbs.handle(&post("/kbs/v0/attest", Some(&second), "{}"));
        assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
        assert!(
            String::from_utf8_lossy(&r.body)
                .contains("RCAR handshake Attest failed: deserialize Attestation")
        );
        let r = kbs.handle(&post("/kbs/v0/attest", Some(&second), "{}"));
        assert!(String::from_utf8_lossy(&r.body).contains("already used"));
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_445_412_480), "Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn tamper_flips_one_bit() {
        let key = cvm_kbs_protocol::TeeKeyPair::generate(Default::default()).unwrap();
        let jwe = jwe::encrypt(&key.public_jwk(), b"secret").unwrap();
        for t in [Tamper::Tag, Tamper::Ciphertext, Tamper::Header, Tamper::Iv] {
            let mut bad = jwe.clone();
            tamper(&mut bad, t);
            assert_ne!(bad, jwe);
            assert!(jwe::decrypt_jwe(&key, &bad).is_err(), "{t:?}");
        }
        assert_eq!(&jwe::decrypt_jwe(&key, &jwe).unwrap()[..], b"secret");
    }
}
