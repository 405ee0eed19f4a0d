//! The HTTP(S) side of the KBS protocol: one session (cookie `kbs-session-id`), retries with
//! capped exponential backoff inside one overall deadline, bounded answers, and the KBS's own
//! error `type`/`detail` in our errors.
//!
//! What is retried: failures that say nothing about us — no connection, a reset, a timeout, a
//! DNS failure, HTTP 5xx / 429. A KBS that answers 4xx has decided, and TLS failures (a wrong
//! pin, an untrusted certificate) are not going to heal: both end the conversation at once.
//! Attestation is retried as a whole (a fresh `/auth` and fresh evidence), never by replaying an
//! `/attest` body, because its nonce is single use.

use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::initdata::launch::{Kbs, ResourceUri};
use crate::kbs::protocol::{
    self, API_PREFIX, Attestation, Challenge, KbsError, SESSION_COOKIE, Tee,
};
use crate::net::retry::{self, GaveUp};
use crate::net::{dns, tls};

/// Connecting is quick or never: a bounded connect keeps retries coming inside the deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DNS_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_COOKIE: usize = 512;
/// A resource answer: a JWE of at most `jwe::MAX_PLAINTEXT`, base64url, plus headers.
const MAX_RESOURCE_BODY: usize = crate::kbs::jwe::MAX_BODY;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("{what}")]
    Kbs {
        what: String,
        #[source]
        source: KbsError,
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
    #[error("{what}")]
    Evidence {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

type Failure = retry::Failure<ClientError>;

/// An answer with a 2xx status.
struct Answer {
    set_cookie: Vec<String>,
    body: Vec<u8>,
}

pub struct KbsClient {
    agent: ureq::Agent,
    base: String,
    deadline: Duration,
    cookie: Option<String>,
    token: Option<String>,
    /// Round trips that got an HTTP answer, for the stage's figures.
    pub round_trips: u32,
}

/// ureq's resolver: IP literals as they are, names through our stub resolver.
pub(crate) struct Resolver {
    pub(crate) dns: Vec<std::net::Ipv4Addr>,
}

impl ureq::Resolver for Resolver {
    fn resolve(&self, netloc: &str) -> std::io::Result<Vec<SocketAddr>> {
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad host:port");
        let (host, port) = netloc.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let found = dns::resolve_a(host, &self.dns, DNS_TIMEOUT)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()))?;
        Ok(found
            .into_iter()
            .map(|ip| SocketAddr::new(IpAddr::V4(ip), port))
            .collect())
    }
}

impl KbsClient {
    /// A client for the KBS of `launch.toml`; `dns` from DHCP or the static config.
    pub fn new(kbs: &Kbs, dns: &[std::net::Ipv4Addr]) -> Result<KbsClient, ClientError> {
        let mut builder = ureq::AgentBuilder::new()
            .resolver(Resolver { dns: dns.to_vec() })
            .timeout_connect(CONNECT_TIMEOUT)
            .redirects(0)
            .user_agent(concat!("cvm-agent/", env!("CARGO_PKG_VERSION")));
        if !kbs.url.starts_with("http://") {
            builder = builder.tls_config(tls::client_config(kbs.cert.as_deref(), kbs.pin)?);
        }
        Ok(KbsClient {
            agent: builder.build(),
            base: kbs.url.trim_end_matches('/').to_string(),
            deadline: kbs.timeout,
            cookie: None,
            token: None,
            round_trips: 0,
        })
    }

    /// Auth, evidence (from `evidence(challenge)`), attest: the token. The whole exchange is
    /// retried on transient failures until the deadline.
    pub fn attest<E>(
        &mut self,
        tee: Tee,
        mut evidence: impl FnMut(&Challenge) -> Result<Attestation, E>,
    ) -> Result<String, ClientError>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let what = format!("attestation to {}", self.base);
        let request =
            serde_json::to_vec(&protocol::request(tee)).map_err(|e| ClientError::Fatal {
                what: what.clone(),
                detail: e.to_string(),
            })?;
        let auth_url = format!("{}{API_PREFIX}/auth", self.base);
        let attest_url = format!("{}{API_PREFIX}/attest", self.base);
        let token = self.with_retries(&what, |c, left| {
            c.cookie = None;
            let answer = c.call(
                "POST",
                &auth_url,
                Some(&request),
                protocol::MAX_MESSAGE,
                left,
            )?;
            c.cookie =
                session_cookie(&answer.set_cookie).map_err(|d| fatal("the /auth answer", d))?;
            if c.cookie.is_none() {
                return Err(fatal(
                    "the /auth answer",
                    format!("no {SESSION_COOKIE} cookie"),
                ));
            }
            let challenge = protocol::parse_challenge(&answer.body).map_err(|source| {
                Failure::Fatal(ClientError::Kbs {
                    what: "the challenge".into(),
                    source,
                })
            })?;
            let attestation = evidence(&challenge).map_err(|e| {
                Failure::Fatal(ClientError::Evidence {
                    what: "evidence".into(),
                    source: Box::new(e),
                })
            })?;
            let body = serde_json::to_vec(&attestation)
                .map_err(|e| fatal("the attest request", e.to_string()))?;
            let answer = c.call(
                "POST",
                &attest_url,
                Some(&body),
                protocol::MAX_MESSAGE,
                left,
            )?;
            if let Some(cookie) =
                session_cookie(&answer.set_cookie).map_err(|d| fatal("the /attest answer", d))?
            {
                c.cookie = Some(cookie);
            }
            protocol::parse_attest_response(&answer.body).map_err(|source| {
                Failure::Fatal(ClientError::Kbs {
                    what: "the attest answer".into(),
                    source,
                })
            })
        })?;
        self.token = Some(token.clone());
        Ok(token)
    }

    /// A resource's raw answer (a JWE for the session's TEE key), in this attested session.
    pub fn resource(&mut self, uri: &ResourceUri) -> Result<Vec<u8>, ClientError> {
        let what = format!("resource {uri}");
        let url = format!("{}{}", self.base, protocol::resource_path(uri));
        self.with_retries(&what, |c, left| {
            c.call("GET", &url, None, MAX_RESOURCE_BODY, left)
                .map(|a| a.body)
        })
    }

    fn with_retries<T>(
        &mut self,
        what: &str,
        mut attempt: impl FnMut(&mut Self, Duration) -> Result<T, Failure>,
    ) -> Result<T, ClientError> {
        let deadline = self.deadline;
        retry::run(what, deadline, |left| attempt(self, left)).map_err(|gave_up| match gave_up {
            GaveUp::Fatal(ClientError::Kbs { what: w, source }) => ClientError::Kbs {
                what: format!("{what}: {w}"),
                source,
            },
            GaveUp::Fatal(e) => e,
            GaveUp::Deadline { attempts, last } => ClientError::Deadline {
                what: what.to_string(),
                deadline,
                attempts,
                last,
            },
        })
    }

    /// One request; 2xx is an `Answer`, 4xx a fatal KBS error, the rest transient.
    fn call(
        &mut self,
        method: &str,
        url: &str,
        body: Option<&[u8]>,
        max_body: usize,
        left: Duration,
    ) -> Result<Answer, Failure> {
        if left.is_zero() {
            return Err(Failure::Transient("deadline reached".into()));
        }
        let mut req = self.agent.request(method, url).timeout(left);
        if let Some(cookie) = &self.cookie {
            req = req.set("Cookie", cookie);
        }
        if let Some(token) = &self.token {
            req = req.set("Authorization", &format!("Bearer {token}"));
        }
        let result = match body {
            Some(b) => req.set("Content-Type", "application/json").send_bytes(b),
            None => req.call(),
        };
        let path = url.strip_prefix(&self.base).unwrap_or(url).to_string();
        match result {
            Ok(resp) => {
                self.round_trips += 1;
                let set_cookie = resp
                    .all("set-cookie")
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                let body = read_bounded(resp, max_body).map_err(|d| match d {
                    ReadError::TooLarge => Failure::Fatal(ClientError::Kbs {
                        what: path.clone(),
                        source: KbsError::TooLarge {
                            what: "the answer",
                            len: max_body + 1,
                            max: max_body,
                        },
                    }),
                    ReadError::Io(e) => Failure::Transient(format!("{path}: reading: {e}")),
                })?;
                Ok(Answer { set_cookie, body })
            }
            Err(ureq::Error::Status(status, resp)) => {
                self.round_trips += 1;
                let body = read_bounded(resp, protocol::MAX_MESSAGE).unwrap_or_default();
                let err = protocol::parse_error(status, &body);
                if status >= 500 || status == 429 {
                    Err(Failure::Transient(format!("{path}: {err}")))
                } else {
                    Err(Failure::Fatal(ClientError::Kbs {
                        what: path,
                        source: err,
                    }))
                }
            }
            Err(ureq::Error::Transport(t)) => {
                if is_tls_failure(&t) {
                    Err(fatal(&path, format!("TLS: {}", chain(&t))))
                } else if matches!(
                    t.kind(),
                    ureq::ErrorKind::InvalidUrl
                        | ureq::ErrorKind::UnknownScheme
                        | ureq::ErrorKind::TooManyRedirects
                        | ureq::ErrorKind::InsecureRequestHttpsOnly
                ) {
                    Err(fatal(&path, chain(&t)))
                } else {
                    Err(Failure::Transient(format!("{path}: {}", chain(&t))))
                }
            }
        }
    }
}

fn fatal(what: &str, detail: String) -> Failure {
    Failure::Fatal(ClientError::Fatal {
        what: what.to_string(),
        detail,
    })
}

enum ReadError {
    TooLarge,
    Io(std::io::Error),
}

fn read_bounded(resp: ureq::Response, max: usize) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    resp.into_reader()
        .take(max as u64 + 1)
        .read_to_end(&mut body)
        .map_err(ReadError::Io)?;
    if body.len() > max {
        return Err(ReadError::TooLarge);
    }
    Ok(body)
}

/// The `kbs-session-id=<value>` pair of the Set-Cookie headers, validated (RFC 6265
/// cookie-octets, bounded), ready to send back as a `Cookie` header.
fn session_cookie(set_cookie: &[String]) -> Result<Option<String>, String> {
    for header in set_cookie {
        let pair = header.split(';').next().unwrap_or_default().trim();
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        if name.trim() != SESSION_COOKIE {
            continue;
        }
        let value = value.trim().trim_matches('"');
        let ok = !value.is_empty()
            && value.len() <= MAX_COOKIE
            && value
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b',' | b';' | b'\\'));
        if !ok {
            return Err(format!("invalid {SESSION_COOKIE} cookie value"));
        }
        return Ok(Some(format!("{SESSION_COOKIE}={value}")));
    }
    Ok(None)
}

pub(crate) fn is_tls_failure(t: &ureq::Transport) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(t);
    while let Some(e) = source {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        source = e.source();
    }
    false
}

pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(&format!(": {t}"));
        }
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies() {
        let c = |h: &[&str]| session_cookie(&h.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            c(&["kbs-session-id=abc-123; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/"]).unwrap(),
            Some("kbs-session-id=abc-123".into())
        );
        assert_eq!(
            c(&["other=1", "kbs-session-id=\"q\""]).unwrap(),
            Some("kbs-session-id=q".into())
        );
        assert_eq!(c(&["other=1"]).unwrap(), None);
        assert!(c(&["kbs-session-id=a b"]).is_err());
        assert!(c(&["kbs-session-id="]).is_err());
        assert!(c(&[&format!("kbs-session-id={}", "a".repeat(600))]).is_err());
        assert!(c(&["kbs-session-id=a\r\nX-Evil: 1"]).is_err());
    }
}
