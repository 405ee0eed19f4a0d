//! Plain HTTP to a cloud's link-local services (the metadata service, Azure's WireServer): one
//! request per call, to an IP literal only (no DNS, no proxy, no redirect, no TLS: these
//! addresses are reached on the host's own link, and what they say is checked, never trusted),
//! a per-request timeout inside the caller's deadline, and a bounded answer.

use std::cell::Cell;
use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The metadata service of GCP, Azure and AWS.
pub const METADATA: &str = "http://169.254.169.254";
/// Azure's WireServer (goal state, health reports).
pub const WIRESERVER: &str = "http://168.63.129.16";
/// One request: the services answer in milliseconds; a stuck one must not eat the deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// What an error answer may show on the console.
const MAX_DETAIL: usize = 160;
/// Headers kept from one answer (the host decides how many it sends).
const MAX_HEADERS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error("{what}: {detail}")]
    Transport { what: String, detail: String },
    #[error("{what}: reading the answer: {source}")]
    Read {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: the answer is larger than {max} bytes")]
    TooLarge { what: String, max: usize },
    #[error("{what}: the deadline was reached")]
    Deadline { what: String },
}

impl ImdsError {
    /// Worth another attempt: the service was not reached or the answer was cut.
    pub fn is_transient(&self) -> bool {
        !matches!(self, ImdsError::TooLarge { .. })
    }
}

/// One answer, whatever its status.
pub struct Reply {
    pub status: u16,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as a short, printable note for an error line (the host wrote it).
    pub fn detail(&self) -> String {
        printable(&self.body)
    }
}

/// `bytes` as one short line: control characters escaped, cut at [`MAX_DETAIL`] characters.
pub fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return "(no body)".into();
    }
    let mut out: String = text
        .chars()
        .take(MAX_DETAIL)
        .flat_map(|c| c.escape_debug())
        .collect();
    if text.chars().count() > MAX_DETAIL {
        out.push('…');
    }
    out
}

/// A client for one service (`base`: `http://<IP literal>[:port]`).
pub struct Http {
    agent: ureq::Agent,
    base: String,
    requests: Cell<u32>,
}

/// IP literals only: a name here would be a DNS lookup the host answers.
struct LiteralOnly;

impl ureq::Resolver for LiteralOnly {
    fn resolve(&self, netloc: &str) -> std::io::Result<Vec<SocketAddr>> {
        let bad = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{netloc:?} is not an IP address and port"),
            )
        };
        let (host, port) = netloc.rsplit_once(':').ok_or_else(bad)?;
        let ip: IpAddr = host.parse().map_err(|_| bad())?;
        Ok(vec![SocketAddr::new(ip, port.parse().map_err(|_| bad())?)])
    }
}

impl Http {
    pub fn new(base: &str) -> Http {
        let agent = ureq::AgentBuilder::new()
            .resolver(LiteralOnly)
            .redirects(0)
            .timeout_connect(REQUEST_TIMEOUT)
            .user_agent(concat!("cvm-agent/", env!("CARGO_PKG_VERSION")))
            .build();
        Http {
            agent,
            base: base.trim_end_matches('/').to_string(),
            requests: Cell::new(0),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Requests sent so far (answered or not).
    pub fn requests(&self) -> u32 {
        self.requests.get()
    }

    /// `METHOD base+path` with `headers` (and `body`), at most `left` (and at most the
    /// per-request timeout); any status is a [`Reply`], a body over `max_body` an error.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        max_body: usize,
        left: Duration,
    ) -> Result<Reply, ImdsError> {
        let url = format!("{}{path}", self.base);
        let what = format!("{method} {url}");
        if left.is_zero() {
            return Err(ImdsError::Deadline { what });
        }
        self.requests.set(self.requests.get() + 1);
        let mut req = self
            .agent
            .request(method, &url)
            .timeout(left.min(REQUEST_TIMEOUT));
        for (name, value) in headers {
            req = req.set(name, value);
        }
        let result = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(resp) | Err(ureq::Error::Status(_, resp)) => resp,
            Err(ureq::Error::Transport(t)) => {
                return Err(ImdsError::Transport {
                    what,
                    detail: crate::kbs_client::chain(&t),
                });
            }
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .take(MAX_HEADERS)
            .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
            .collect();
        let mut body = Vec::new();
        resp.into_reader()
            .take(max_body as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|source| ImdsError::Read {
                what: what.clone(),
                source,
            })?;
        if body.len() > max_body {
            return Err(ImdsError::TooLarge {
                what,
                max: max_body,
            });
        }
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_short_and_printable() {
        assert_eq!(printable(b""), "(no body)");
        assert_eq!(
            printable(b"  bad\r\nX: 1\x1b[2J "),
            "bad\\r\\nX: 1\\u{1b}[2J"
        );
        let long = printable(&[b'a'; 500]);
        assert_eq!(long.chars().count(), MAX_DETAIL + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn names_are_never_resolved() {
        use ureq::Resolver as _;
        assert_eq!(
            LiteralOnly.resolve("169.254.169.254:80").unwrap(),
            vec!["169.254.169.254:80".parse().unwrap()]
        );
        for bad in [
            "metadata.google.internal:80",
            "169.254.169.254",
            "1.2.3.4:x",
        ] {
            assert!(LiteralOnly.resolve(bad).is_err(), "{bad}");
        }
    }
}
