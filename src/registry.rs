//! An OCI distribution-spec pull client on ureq, as an image source for [`crate::oci::manifest`]:
//! `GET /v2/<name>/manifests/<tag|digest>` (Accept: OCI index and manifest, Docker manifest
//! list and v2 manifest) and `GET /v2/<name>/blobs/<digest>` (redirects followed, to other
//! hosts too — blob storage is often elsewhere — with TLS verification kept and the
//! `Authorization` header dropped).
//!
//! Names go through our stub resolver (the static agent has no NSS), TLS trust is the KBS's
//! (`net::tls`: PEM anchors, an SPKI pin, or the compiled-in web roots), plain `http://` only
//! with `insecure_http`. Auth: anonymous first; on 401 with `WWW-Authenticate: Basic`, the
//! configured credentials; with `Bearer realm=…,service=…`, a token from the realm (with the
//! credentials as Basic auth if there are any) and the request again with it.
//!
//! Retries as in the KBS client: connect failures, timeouts, 5xx and 429 are retried with
//! capped exponential backoff within `deadline`; other 4xx and TLS failures end at once, with
//! the registry's `errors[].code/message` (bounded) in the message. A blob's body must arrive
//! within what is left of the deadline of its request.
//!
//! Credentials and tokens are `Zeroizing` and appear in no `Debug`, `Display` or error.

use std::io::Read;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::kbs_client::{Resolver, chain, is_tls_failure};
use crate::net::retry::{self, GaveUp};
use crate::net::tls;
use crate::oci::digest::Sha256Digest;
use crate::oci::manifest::{ACCEPT, Document, Fetch, Root};
use crate::oci::reference::{DOCKER_HUB, RegistryRef};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A registry error body, a token answer.
const MAX_ERROR_BODY: usize = 64 << 10;
const MAX_TOKEN_BODY: usize = 256 << 10;
const MAX_TOKEN: usize = 64 << 10;
const MAX_CHALLENGE: usize = 4096;
const MAX_AUTH_FILE: usize = 1 << 20;
const MAX_REDIRECTS: u32 = 5;

/// A user name and password for a registry. Zeroed on drop; never printed.
#[derive(Clone)]
pub struct Credentials {
    username: Zeroizing<String>,
    password: Zeroizing<String>,
}

impl Credentials {
    pub fn new(username: &str, password: &str) -> Credentials {
        Credentials {
            username: Zeroizing::new(username.to_string()),
            password: Zeroizing::new(password.to_string()),
        }
    }

    /// `Basic base64(user:pass)`.
    fn basic(&self) -> Zeroizing<String> {
        let pair = Zeroizing::new(format!("{}:{}", *self.username, *self.password));
        Zeroizing::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
        ))
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// How to reach a registry.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// PEM trust anchors (only these), as for the KBS.
    pub cert_pem: Option<String>,
    /// SHA-256 of the server certificate's SubjectPublicKeyInfo.
    pub pin: Option<[u8; 32]>,
    /// Speak plain `http://` to the registry (and allow it for the token realm and redirects).
    /// Without it nothing goes over http: an http token realm is refused by name. Whether
    /// credentials may go with it is launch.toml's check (`LaunchConfig::check_for_mode`).
    pub insecure_http: bool,
    /// Time for each document or blob, retries included.
    pub deadline: Duration,
    /// DNS servers for registry, realm and redirect host names.
    pub dns: Vec<Ipv4Addr>,
    pub credentials: Option<Credentials>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            cert_pem: None,
            pin: None,
            insecure_http: false,
            deadline: Duration::from_secs(300),
            dns: Vec::new(),
            credentials: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry TLS trust")]
    Tls(#[source] tls::TlsError),
    #[error("{what}: HTTP {status}: {detail}")]
    Status {
        what: String,
        status: u16,
        detail: String,
    },
    #[error("{what}: {detail}")]
    Fatal { what: String, detail: String },
    #[error(
        "{what}: no answer within the {} s deadline ({attempts} attempts; last: {last})",
        .deadline.as_secs()
    )]
    Deadline {
        what: String,
        deadline: Duration,
        attempts: u32,
        last: String,
    },
    #[error("{what}: the registry asks for credentials ({scheme}) and none are configured")]
    NeedsCredentials { what: String, scheme: String },
    #[error("{what}: refused with the configured credentials: {detail}")]
    Unauthorized { what: String, detail: String },
    #[error("{what}: the answer is over the {max}-byte limit")]
    TooLarge { what: String, max: u64 },
    #[error(
        "{what}: the registry is https, but its Bearer realm {realm:?} is plain http: refused \
         (credentials and tokens never leave TLS)"
    )]
    CleartextRealm { what: String, realm: String },
}

#[derive(Debug, thiserror::Error)]
#[error("registry credentials file: {reason}")]
pub struct AuthFileError {
    pub reason: String,
}

type Failure = retry::Failure<RegistryError>;

enum Auth {
    Anonymous,
    Basic,
    Bearer(Zeroizing<String>),
}

/// A pull client for one repository of one registry.
pub struct Registry {
    agent: ureq::Agent,
    base: String,
    reference: RegistryRef,
    options: RegistryOptions,
    auth: Auth,
    /// Requests that got an HTTP answer.
    pub round_trips: u32,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("base", &self.base)
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(
        reference: &RegistryRef,
        options: RegistryOptions,
    ) -> Result<Registry, RegistryError> {
        let mut builder = ureq::AgentBuilder::new()
            .resolver(Resolver {
                dns: options.dns.clone(),
            })
            .timeout_connect(CONNECT_TIMEOUT)
            .redirects(MAX_REDIRECTS)
            .https_only(!options.insecure_http)
            .user_agent(concat!("cvm-agent/", env!("CARGO_PKG_VERSION")));
        builder = builder.tls_config(
            tls::client_config(options.cert_pem.as_deref(), options.pin)
                .map_err(RegistryError::Tls)?,
        );
        let scheme = if options.insecure_http {
            "http"
        } else {
            "https"
        };
        Ok(Registry {
            agent: builder.build(),
            base: format!("{scheme}://{}", reference.api_host()),
            reference: reference.clone(),
            options,
            auth: Auth::Anonymous,
            round_trips: 0,
        })
    }

    fn url(&self, kind: &str, reference: &str) -> String {
        format!(
            "{}/v2/{}/{kind}/{reference}",
            self.base, self.reference.repository
        )
    }

    /// A manifest by tag or digest: its Content-Type and body (at most `max` bytes).
    fn get_manifest(&mut self, reference: &str, max: usize) -> Result<Document, RegistryError> {
        let url = self.url("manifests", reference);
        let what = format!("manifest {reference}");
        let (resp, _) = self.get(&what, &url, Some(ACCEPT))?;
        let media_type = Some(resp.content_type().to_string());
        if let Some(len) = resp
            .header("content-length")
            .and_then(|l| l.parse::<u64>().ok())
            && len > max as u64
        {
            return Err(RegistryError::TooLarge {
                what,
                max: max as u64,
            });
        }
        let bytes = read_bounded(resp, max).map_err(|e| match e {
            None => RegistryError::TooLarge {
                what: what.clone(),
                max: max as u64,
            },
            Some(e) => RegistryError::Fatal {
                what: what.clone(),
                detail: format!("reading: {e}"),
            },
        })?;
        Ok(Document { media_type, bytes })
    }

    /// One GET with retries and auth; a 2xx answer (its body unread) and the time left.
    fn get(
        &mut self,
        what: &str,
        url: &str,
        accept: Option<&str>,
    ) -> Result<(ureq::Response, Duration), RegistryError> {
        let deadline = self.options.deadline;
        let end = Instant::now() + deadline;
        retry::run(what, deadline, |left| {
            self.attempt(what, url, accept, left)
                .map(|resp| (resp, end.saturating_duration_since(Instant::now())))
        })
        .map_err(|gave_up| match gave_up {
            GaveUp::Fatal(e) => e,
            GaveUp::Deadline { attempts, last } => RegistryError::Deadline {
                what: what.to_string(),
                deadline,
                attempts,
                last,
            },
        })
    }

    /// One attempt: the request, and at most one round of auth on a 401.
    fn attempt(
        &mut self,
        what: &str,
        url: &str,
        accept: Option<&str>,
        left: Duration,
    ) -> Result<ureq::Response, Failure> {
        let mut authenticated = false;
        loop {
            if left.is_zero() {
                return Err(Failure::Transient("deadline reached".into()));
            }
            let mut req = self.agent.get(url).timeout(left);
            if let Some(a) = accept {
                req = req.set("Accept", a);
            }
            let header = match (&self.auth, &self.options.credentials) {
                (Auth::Basic, Some(c)) => Some(c.basic()),
                (Auth::Bearer(t), _) => Some(Zeroizing::new(format!("Bearer {}", **t))),
                _ => None,
            };
            if let Some(h) = &header {
                req = req.set("Authorization", h);
            }
            match req.call() {
                Ok(resp) => {
                    self.round_trips += 1;
                    return Ok(resp);
                }
                Err(ureq::Error::Status(401, resp)) if !authenticated => {
                    self.round_trips += 1;
                    let challenges: Vec<String> = resp
                        .all("www-authenticate")
                        .iter()
                        .map(|s| s.to_string())
                        .collect();
                    self.authenticate(what, &challenges, left)?;
                    authenticated = true;
                }
                Err(ureq::Error::Status(status, resp)) => {
                    self.round_trips += 1;
                    let detail = error_detail(resp);
                    return Err(if status == 401 || status == 403 {
                        if self.options.credentials.is_some() {
                            Failure::Fatal(RegistryError::Unauthorized {
                                what: what.to_string(),
                                detail: format!("HTTP {status}: {detail}"),
                            })
                        } else {
                            Failure::Fatal(RegistryError::Status {
                                what: what.to_string(),
                                status,
                                detail: format!("{detail} (no credentials are configured)"),
                            })
                        }
                    } else if status >= 500 || status == 429 {
                        Failure::Transient(format!("HTTP {status}: {detail}"))
                    } else {
                        Failure::Fatal(RegistryError::Status {
                            what: what.to_string(),
                            status,
                            detail,
                        })
                    });
                }
                Err(ureq::Error::Transport(t)) => return Err(transport_failure(what, &t)),
            }
        }
    }

    /// Act on a 401's challenges: Bearer (preferred) gets a token, Basic uses the credentials.
    fn authenticate(
        &mut self,
        what: &str,
        headers: &[String],
        left: Duration,
    ) -> Result<(), Failure> {
        let challenges: Vec<Challenge> = headers
            .iter()
            .filter_map(|h| parse_challenge(h).ok())
            .collect();
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let token = self.token(what, bearer, left)?;
            self.auth = Auth::Bearer(token);
            return Ok(());
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            if self.options.credentials.is_none() {
                return Err(Failure::Fatal(RegistryError::NeedsCredentials {
                    what: what.to_string(),
                    scheme: "Basic".into(),
                }));
            }
            self.auth = Auth::Basic;
            return Ok(());
        }
        Err(Failure::Fatal(RegistryError::Fatal {
            what: what.to_string(),
            detail: format!(
                "HTTP 401 without a usable WWW-Authenticate challenge (got {:?})",
                headers
                    .iter()
                    .map(|h| h.chars().take(100).collect::<String>())
                    .take(4)
                    .collect::<Vec<_>>()
            ),
        }))
    }

    /// A bearer token from the challenge's realm.
    fn token(
        &mut self,
        what: &str,
        c: &Challenge,
        left: Duration,
    ) -> Result<Zeroizing<String>, Failure> {
        let fatal = |detail: String| {
            Failure::Fatal(RegistryError::Fatal {
                what: format!("{what}: token"),
                detail,
            })
        };
        let realm = c
            .param("realm")
            .ok_or_else(|| fatal("the Bearer challenge has no realm".into()))?;
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(fatal(format!(
                "the realm {:?} is not an http(s) URL",
                realm.chars().take(200).collect::<String>()
            )));
        }
        // The realm is the registry's to name, and the credentials go there: an https
        // registry never sends them (or a token request) to an http realm. An http realm of
        // an http registry is what insecure_http asked for; launch.toml's check refuses
        // credentials there in production, so only debug mode sends them.
        if realm.starts_with("http://") && !self.options.insecure_http {
            return Err(Failure::Fatal(RegistryError::CleartextRealm {
                what: format!("{what}: token"),
                realm: realm.chars().take(200).collect(),
            }));
        }
        let mut url = realm.to_string();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if let Some(service) = c.param("service") {
            url.push(sep);
            url.push_str("service=");
            url.push_str(&percent_encode(service));
            sep = '&';
        }
        url.push(sep);
        url.push_str("scope=");
        url.push_str(&percent_encode(&format!(
            "repository:{}:pull",
            self.reference.repository
        )));
        let mut req = self.agent.get(&url).timeout(left);
        if let Some(creds) = &self.options.credentials {
            req = req.set("Authorization", &creds.basic());
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(status, resp)) => {
                let detail = error_detail(resp);
                return Err(if status >= 500 || status == 429 {
                    Failure::Transient(format!("token: HTTP {status}: {detail}"))
                } else if self.options.credentials.is_some() {
                    Failure::Fatal(RegistryError::Unauthorized {
                        what: format!("{what}: token"),
                        detail: format!("HTTP {status}: {detail}"),
                    })
                } else {
                    Failure::Fatal(RegistryError::Status {
                        what: format!("{what}: token"),
                        status,
                        detail: format!("{detail} (no credentials are configured)"),
                    })
                });
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(transport_failure(&format!("{what}: token"), &t));
            }
        };
        self.round_trips += 1;
        let body = Zeroizing::new(read_bounded(resp, MAX_TOKEN_BODY).map_err(|e| match e {
            None => fatal(format!("the answer is over {MAX_TOKEN_BODY} bytes")),
            Some(e) => Failure::Transient(format!("token: reading: {e}")),
        })?);
        parse_token(&body).map_err(|r| fatal(r.to_string()))
    }
}

impl Fetch for Registry {
    type Error = RegistryError;

    fn describe(&self) -> String {
        format!("registry image {:?}", self.reference.to_string())
    }

    fn root(&mut self, max: usize) -> Result<Root, RegistryError> {
        let reference = self.reference.manifest_reference();
        let document = self.get_manifest(&reference, max)?;
        Ok(Root {
            document,
            digest: self.reference.digest,
            size: None,
        })
    }

    fn manifest(&mut self, digest: &Sha256Digest, max: usize) -> Result<Document, RegistryError> {
        self.get_manifest(&digest.to_string(), max)
    }

    fn blob(
        &mut self,
        digest: &Sha256Digest,
        size: u64,
    ) -> Result<Box<dyn Read + '_>, RegistryError> {
        let url = self.url("blobs", &digest.to_string());
        let what = format!("blob {digest}");
        let (resp, _) = self.get(&what, &url, None)?;
        if let Some(len) = resp
            .header("content-length")
            .and_then(|l| l.parse::<u64>().ok())
            && len != size
        {
            return Err(RegistryError::Fatal {
                what,
                detail: format!("Content-Length {len}, the descriptor says {size} bytes"),
            });
        }
        Ok(Box::new(resp.into_reader()))
    }
}

fn transport_failure(what: &str, t: &ureq::Transport) -> Failure {
    let fatal = |detail: String| {
        Failure::Fatal(RegistryError::Fatal {
            what: what.to_string(),
            detail,
        })
    };
    if is_tls_failure(t) {
        fatal(format!("TLS: {}", chain(t)))
    } else if matches!(
        t.kind(),
        ureq::ErrorKind::InvalidUrl
            | ureq::ErrorKind::UnknownScheme
            | ureq::ErrorKind::TooManyRedirects
            | ureq::ErrorKind::InsecureRequestHttpsOnly
    ) {
        fatal(chain(t))
    } else {
        Failure::Transient(chain(t))
    }
}

/// The body, at most `max` bytes: `Err(None)` when longer.
fn read_bounded(resp: ureq::Response, max: usize) -> Result<Vec<u8>, Option<std::io::Error>> {
    let mut body = Vec::new();
    resp.into_reader()
        .take(max as u64 + 1)
        .read_to_end(&mut body)
        .map_err(Some)?;
    if body.len() > max {
        return Err(None);
    }
    Ok(body)
}

fn error_detail(resp: ureq::Response) -> String {
    match read_bounded(resp, MAX_ERROR_BODY) {
        Ok(body) => registry_errors(&body),
        Err(_) => "(unreadable or oversized error body)".into(),
    }
}

/// The distribution-spec error body `{"errors":[{"code","message"}]}`, bounded, or a note.
pub(crate) fn registry_errors(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    let Ok(parsed) = serde_json::from_slice::<Body>(body) else {
        return if body.is_empty() {
            "(no error body)".into()
        } else {
            "(no registry error JSON)".into()
        };
    };
    let mut out: Vec<String> = parsed
        .errors
        .iter()
        .take(4)
        .map(|e| {
            let code: String = e.code.as_deref().unwrap_or("?").chars().take(64).collect();
            let message: String = e
                .message
                .as_deref()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            format!("{code:?} {message:?}")
        })
        .collect();
    if parsed.errors.len() > 4 {
        out.push(format!("{} more", parsed.errors.len() - 4));
    }
    if out.is_empty() {
        "(empty error list)".into()
    } else {
        out.join("; ")
    }
}

/// A parsed `WWW-Authenticate` challenge: lower-case scheme and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// RFC 7235: `scheme [param=value|"quoted" {, param=value}]`. Bounded; strict enough for
/// Basic and Bearer.
pub(crate) fn parse_challenge(header: &str) -> Result<Challenge, &'static str> {
    if header.len() > MAX_CHALLENGE {
        return Err("the challenge is too long");
    }
    let header = header.trim();
    let (scheme, mut rest) = match header.find([' ', '\t']) {
        Some(i) => (&header[..i], &header[i..]),
        None => (header, ""),
    };
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if scheme.is_empty() || !scheme.chars().all(token) {
        return Err("invalid scheme");
    }
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        if params.len() >= 16 {
            return Err("too many parameters");
        }
        let eq = rest.find('=').ok_or("a parameter without '='")?;
        let key = rest[..eq].trim();
        if key.is_empty() || !key.chars().all(token) {
            return Err("invalid parameter name");
        }
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, e)) => v.push(e),
                        None => return Err("unterminated quoted string"),
                    },
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c if c.is_control() => return Err("a control character in a value"),
                    c => v.push(c),
                }
            }
            let end = end.ok_or("unterminated quoted string")?;
            value = v;
            rest = &quoted[end + 1..];
        } else {
            let end = rest.find([',', ' ', '\t']).unwrap_or(rest.len());
            let v = &rest[..end];
            if !v
                .chars()
                .all(|c| token(c) || c == '/' || c == ':' || c == '=')
            {
                return Err("invalid parameter value");
            }
            value = v.to_string();
            rest = &rest[end..];
        }
        params.push((key.to_ascii_lowercase(), value));
    }
    Ok(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

/// The `token` (or `access_token`) of a token answer, checked to be a plain header value.
pub(crate) fn parse_token(body: &[u8]) -> Result<Zeroizing<String>, &'static str> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default, deserialize_with = "secret")]
        token: Option<Zeroizing<String>>,
        #[serde(default, deserialize_with = "secret")]
        access_token: Option<Zeroizing<String>>,
    }
    let answer: Answer =
        serde_json::from_slice(body).map_err(|_| "the token answer is not JSON")?;
    let token = answer
        .token
        .filter(|t| !t.is_empty())
        .or(answer.access_token)
        .ok_or("the token answer has no token")?;
    if token.is_empty() || token.len() > MAX_TOKEN {
        return Err("the token is empty or too long");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token is not printable ASCII");
    }
    Ok(token)
}

/// A secret JSON string, moved straight into a `Zeroizing` (serde_json hands over its
/// `String`, no copy is left behind by us).
fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Zeroizing<String>>, D::Error> {
    Ok(<Option<String> as serde::Deserialize>::deserialize(d)?.map(Zeroizing::new))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The host part of an `auths` key: `https://host/v1/` → `host`, lower-cased.
fn auth_key_host(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// The credentials for `registry` (`host[:port]` as in [`RegistryRef::registry`]) in a
/// containers-auth.json or docker `config.json` document: `{"auths":{"<host>":{"auth":
/// "base64(user:pass)"}}}` or `username`/`password` members. Keys may carry a scheme and a
/// path (`https://index.docker.io/v1/`); Docker Hub answers to its usual names. `Ok(None)`:
/// nothing for this registry. The document's content never appears in errors.
pub fn parse_auth_json(bytes: &[u8], registry: &str) -> Result<Option<Credentials>, AuthFileError> {
    let err = |reason: &str| AuthFileError {
        reason: reason.to_string(),
    };
    if bytes.len() > MAX_AUTH_FILE {
        return Err(err("over 1 MiB"));
    }
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        auths: std::collections::BTreeMap<String, Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default, deserialize_with = "secret")]
        auth: Option<Zeroizing<String>>,
        #[serde(default, deserialize_with = "secret")]
        username: Option<Zeroizing<String>>,
        #[serde(default, deserialize_with = "secret")]
        password: Option<Zeroizing<String>>,
    }
    let file: File = serde_json::from_slice(bytes).map_err(|e| AuthFileError {
        // serde_json's messages name positions and types, not content.
        reason: format!("not an auths document ({})", e.classify_kind()),
    })?;
    let registry = registry.to_ascii_lowercase();
    let hub = ["docker.io", "index.docker.io", "registry-1.docker.io"];
    let matches = |key: &str| {
        let host = auth_key_host(key);
        host == registry || (registry == DOCKER_HUB && hub.contains(&host.as_str()))
    };
    // An exact key first, then the normalised ones.
    let entry = file
        .auths
        .get(&registry)
        .or_else(|| file.auths.iter().find(|(k, _)| matches(k)).map(|(_, e)| e));
    let Some(entry) = entry else {
        return Ok(None);
    };
    if let Some(auth) = entry.auth.as_ref().filter(|a| !a.is_empty()) {
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(auth.trim().as_bytes())
                .map_err(|_| err("an auth value is not base64"))?,
        );
        let text = std::str::from_utf8(&decoded).map_err(|_| err("an auth value is not UTF-8"))?;
        let (user, pass) = text
            .split_once(':')
            .ok_or_else(|| err("an auth value is not user:password"))?;
        if user.is_empty() {
            return Err(err("an auth value has an empty user name"));
        }
        return Ok(Some(Credentials::new(user, pass)));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credentials::new(u, p))),
        _ => Err(err("an entry has neither auth nor username and password")),
    }
}

trait ClassifyKind {
    fn classify_kind(&self) -> &'static str;
}

impl ClassifyKind for serde_json::Error {
    fn classify_kind(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "unexpected structure",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c.param("service"), Some("registry.docker.io"));
        assert_eq!(c.param("scope"), Some("repository:library/busybox:pull"));
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(
            (c.scheme.as_str(), c.param("realm")),
            ("basic", Some("Registry Realm"))
        );
        let c = parse_challenge("Basic").unwrap();
        assert!(c.params.is_empty());
        let c = parse_challenge(r#"Bearer realm=tok, error="a\"b""#).unwrap();
        assert_eq!(c.param("realm"), Some("tok"));
        assert_eq!(c.param("error"), Some("a\"b"));
        for bad in [
            "",
            "Bearer realm",
            "Bearer realm=\"open",
            "Bearer realm=\"a\\",
            "Bearer =x",
            "Bearer realm=a\"b",
            "Bea(rer realm=x",
            "Bearer realm=\"a\nb\"",
            &format!("Bearer realm=\"{}\"", "a".repeat(5000)),
            &format!("Bearer {}", "a=b,".repeat(20)),
        ] {
            assert!(parse_challenge(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tokens() {
        assert_eq!(*parse_token(br#"{"token":"abc"}"#).unwrap(), "abc");
        assert_eq!(
            *parse_token(br#"{"access_token":"xyz","expires_in":300}"#).unwrap(),
            "xyz"
        );
        assert_eq!(
            *parse_token(br#"{"token":"","access_token":"xyz"}"#).unwrap(),
            "xyz"
        );
        for bad in [
            &b""[..],
            b"{}",
            b"{\"token\":\"\"}",
            b"{\"token\":\"a b\"}",
            b"{\"token\":\"a\\r\\nX-Evil: 1\"}",
            b"{\"token\":7}",
            b"[",
        ] {
            assert!(
                parse_token(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("{{\"token\":\"{}\"}}", "a".repeat(MAX_TOKEN + 1));
        assert!(parse_token(long.as_bytes()).is_err());
    }

    #[test]
    fn error_bodies() {
        let e = registry_errors(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#,
        );
        assert_eq!(e, r#""MANIFEST_UNKNOWN" "manifest unknown""#);
        assert_eq!(registry_errors(b""), "(no error body)");
        assert_eq!(registry_errors(b"<html>"), "(no registry error JSON)");
        assert_eq!(registry_errors(br#"{"errors":[]}"#), "(empty error list)");
        let many = format!(
            "{{\"errors\":[{}]}}",
            vec![
                format!(
                    "{{\"code\":\"X\",\"message\":\"{}\"}}",
                    "m\\u001b".repeat(300)
                );
                9
            ]
            .join(",")
        );
        let e = registry_errors(many.as_bytes());
        assert!(
            e.len() < 5000 && e.ends_with("5 more") && !e.contains('\u{1b}'),
            "{e}"
        );
    }

    #[test]
    fn auth_files() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let doc = format!(
            r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{}"}},"https://index.docker.io/v1/":{{"auth":"{}"}},"quay.io":{{"username":"u","password":"p:q"}}}}}}"#,
            b64("user:pa:ss"),
            b64("hub:secret")
        );
        let c = parse_auth_json(doc.as_bytes(), "127.0.0.1:5000")
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("user", "pa:ss")
        );
        let c = parse_auth_json(doc.as_bytes(), "docker.io")
            .unwrap()
            .unwrap();
        assert_eq!(c.username.as_str(), "hub");
        let c = parse_auth_json(doc.as_bytes(), "quay.io").unwrap().unwrap();
        assert_eq!(c.password.as_str(), "p:q");
        assert!(
            parse_auth_json(doc.as_bytes(), "ghcr.io")
                .unwrap()
                .is_none()
        );
        assert!(parse_auth_json(b"{}", "ghcr.io").unwrap().is_none());
        // Never printed.
        assert_eq!(format!("{c:?}"), "Credentials(<redacted>)");
        assert!(!c.basic().is_empty());

        let secret = b64("nocolon");
        for bad in [
            "".to_string(),
            "[".into(),
            r#"{"auths":[]}"#.into(),
            format!(r#"{{"auths":{{"h":{{"auth":"{secret}"}}}}}}"#),
            r#"{"auths":{"h":{"auth":"!!notbase64"}}}"#.into(),
            r#"{"auths":{"h":{}}}"#.into(),
            format!(r#"{{"auths":{{"h":{{"auth":"{}"}}}}}}"#, b64(":p")),
        ] {
            let e = parse_auth_json(bad.as_bytes(), "h")
                .err()
                .unwrap_or_else(|| panic!("{bad}"));
            assert!(!e.to_string().contains("nocolon") && !e.to_string().contains(&secret));
        }
        assert!(parse_auth_json(&vec![b' '; MAX_AUTH_FILE + 1], "h").is_err());
    }

    #[test]
    fn options_debug_hides_credentials() {
        let o = RegistryOptions {
            credentials: Some(Credentials::new("alice", "hunter2")),
            ..Default::default()
        };
        let s = format!("{o:?}");
        assert!(!s.contains("hunter2") && !s.contains("alice"), "{s}");
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(
            percent_encode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
        assert_eq!(percent_encode("r.d-o_c~1"), "r.d-o_c~1");
    }

    #[test]
    fn never_panics_on_arbitrary_input() {
        use proptest::prelude::*;
        proptest!(|(s in ".{0,200}")| {
            let _ = parse_challenge(&s);
            let _ = parse_token(s.as_bytes());
            let _ = registry_errors(s.as_bytes());
            let _ = parse_auth_json(s.as_bytes(), "h");
        });
    }
}
