//! A minimal HTTP/1.1 server side: one request at a time from a byte stream (plain TCP or
//! TLS), `Content-Length` bodies only, and the answer written back.
//!
//! Everything a client sends is hostile: the request line and headers together are bounded by
//! [`MAX_HEAD`], the body by [`MAX_BODY`], chunked bodies are refused (411), a missing length on
//! a request with a body is refused (411), and nothing here panics on input.

use std::io::{self, BufRead, Write};

/// Request line plus headers.
pub const MAX_HEAD: usize = 16 << 10;
/// Largest request body (evidence with an event log and certificates is a few tens of KiB).
pub const MAX_BODY: usize = 2 << 20;
/// Most header lines accepted.
const MAX_HEADERS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("the request line and headers exceed {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("a body needs a Content-Length ({0})")]
    LengthRequired(&'static str),
    #[error("the body is {0} bytes, more than {MAX_BODY}")]
    BodyTooLarge(u64),
    #[error("connection: {0}")]
    Io(#[from] io::Error),
}

impl HttpError {
    /// The status to answer with, or `None` when the connection is beyond answering.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::HeadTooLarge => Some(431),
            HttpError::Malformed(_) => Some(400),
            HttpError::LengthRequired(_) => Some(411),
            HttpError::BodyTooLarge(_) => Some(413),
            HttpError::Io(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    /// HTTP/1.1 (true) or HTTP/1.0.
    pub http11: bool,
    /// Names lower-cased, values trimmed, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client wants the connection kept open after the answer.
    pub fn keep_alive(&self) -> bool {
        let conn = self.header("connection").map(str::to_ascii_lowercase);
        match conn.as_deref() {
            Some(c) if c.split(',').any(|t| t.trim() == "close") => false,
            Some(c) if c.split(',').any(|t| t.trim() == "keep-alive") => true,
            _ => self.http11,
        }
    }

    /// The value of cookie `name` from every `Cookie` header.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "cookie")
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.trim())
    }
}

/// Reads one line (ending in LF) of the head, charging it to `budget`.
fn read_line<R: BufRead>(r: &mut R, budget: &mut usize) -> Result<Vec<u8>, HttpError> {
    let mut line = Vec::new();
    // One more byte than the budget allows, so an overlong line is seen as such.
    let n = io::Read::take(&mut *r, *budget as u64 + 1).read_until(b'\n', &mut line)?;
    if n > *budget {
        return Err(HttpError::HeadTooLarge);
    }
    *budget -= n;
    if line.last() != Some(&b'\n') {
        return Err(if n == 0 {
            HttpError::Io(io::ErrorKind::UnexpectedEof.into())
        } else {
            HttpError::Malformed("the connection ended inside the request head".into())
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(line)
}

fn text(line: Vec<u8>) -> Result<String, HttpError> {
    String::from_utf8(line).map_err(|_| HttpError::Malformed("non-UTF-8 bytes in the head".into()))
}

/// Reads the next request. `Ok(None)`: the client closed the connection between requests.
pub fn read_request<R: BufRead>(r: &mut R) -> Result<Option<Request>, HttpError> {
    let mut budget = MAX_HEAD;
    // RFC 9112 §2.2: ignore at least one empty line before the request line.
    let first = loop {
        match read_line(r, &mut budget) {
            Ok(line) if line.is_empty() => continue,
            Ok(line) => break line,
            Err(HttpError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    };
    let line = text(first)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed(format!(
            "bad request line {:?}",
            truncate(&line)
        )));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError::Malformed("bad method".into()));
    }
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(HttpError::Malformed("bad request target".into()));
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(HttpError::Malformed("unsupported HTTP version".into())),
    };
    let mut headers = Vec::new();
    loop {
        let line = text(read_line(r, &mut budget)?)?;
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(HttpError::HeadTooLarge);
        }
        // Obsolete line folding (RFC 9112 §5.2) is refused rather than guessed at.
        if line.starts_with([' ', '\t']) {
            return Err(HttpError::Malformed("folded header line".into()));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::Malformed("header line without a colon".into()));
        };
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(HttpError::Malformed("bad header name".into()));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        target: target.to_string(),
        http11,
        headers,
        body: Vec::new(),
    };
    if req.header("transfer-encoding").is_some() {
        return Err(HttpError::LengthRequired(
            "Transfer-Encoding (chunked) is not supported",
        ));
    }
    let lengths: Vec<&str> = req
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    let length = match lengths.as_slice() {
        [] if matches!(req.method.as_str(), "POST" | "PUT" | "PATCH") => {
            return Err(HttpError::LengthRequired("no Content-Length"));
        }
        [] => 0,
        [one] => parse_length(one)?,
        // Differing or repeated lengths are how requests get smuggled.
        _ => return Err(HttpError::Malformed("more than one Content-Length".into())),
    };
    if length > MAX_BODY as u64 {
        return Err(HttpError::BodyTooLarge(length));
    }
    let mut body = vec![0u8; length as usize];
    r.read_exact(&mut body)?;
    req.body = body;
    Ok(Some(req))
}

fn parse_length(v: &str) -> Result<u64, HttpError> {
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::Malformed(format!(
            "bad Content-Length {:?}",
            truncate(v)
        )));
    }
    v.parse()
        .map_err(|_| HttpError::Malformed("bad Content-Length".into()))
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::new(status, "application/json", value.to_string().into_bytes())
    }

    pub fn with_header(mut self, name: &str, value: String) -> Response {
        self.headers.push((name.into(), value));
        self
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes `resp` with its length and whether the connection stays open.
pub fn write_response<W: Write>(w: &mut W, resp: &Response, keep_alive: bool) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (name, value) in &resp.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    head.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    w.write_all(head.as_bytes())?;
    w.write_all(&resp.body)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn parse(raw: &[u8]) -> Result<Option<Request>, HttpError> {
        read_request(&mut Cursor::new(raw.to_vec()))
    }

    #[test]
    fn parses_a_post_and_keeps_reading() {
        let raw = b"POST /kbs/v0/auth HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nCookie: a=b; kbs-session-id=abc\r\n\r\n{}GET /x HTTP/1.0\r\n\r\n";
        let mut c = Cursor::new(raw.to_vec());
        let r = read_request(&mut c).unwrap().unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, "/kbs/v0/auth");
        assert_eq!(r.body, b"{}");
        assert_eq!(r.cookie("kbs-session-id"), Some("abc"));
        assert_eq!(r.cookie("nope"), None);
        assert!(r.keep_alive());
        let r = read_request(&mut c).unwrap().unwrap();
        assert_eq!(r.target, "/x");
        assert!(!r.keep_alive());
        assert!(read_request(&mut c).unwrap().is_none());
    }

    #[test]
    fn hostile_heads() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        big.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(parse(&big), Err(HttpError::HeadTooLarge)));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            many.extend_from_slice(b"a: b\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&many), Err(HttpError::HeadTooLarge)));
        for bad in [
            &b"GET /\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"GET x HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\na: b\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad name: b\r\n\r\n",
            b"GET / HTTP/1.1\r\n\xff: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x",
        ] {
            assert!(
                matches!(parse(bad), Err(HttpError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn hostile_lengths() {
        let post = |h: &str| format!("POST / HTTP/1.1\r\n{h}\r\n{{}}").into_bytes();
        assert!(matches!(
            parse(&post("")),
            Err(HttpError::LengthRequired(_))
        ));
        assert!(matches!(
            parse(&post("Transfer-Encoding: chunked\r\n")),
            Err(HttpError::LengthRequired(_))
        ));
        assert_eq!(
            parse(&post("Transfer-Encoding: chunked\r\n"))
                .unwrap_err()
                .status(),
            Some(411)
        );
        for bad in ["-1", "+2", "0x2", "2 2", "", "99999999999999999999"] {
            assert!(
                matches!(
                    parse(&post(&format!("Content-Length: {bad}\r\n"))),
                    Err(HttpError::Malformed(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            parse(&post("Content-Length: 2\r\nContent-Length: 2\r\n")),
            Err(HttpError::Malformed(_))
        ));
        let too_big = post(&format!("Content-Length: {}\r\n", MAX_BODY + 1));
        let err = parse(&too_big).unwrap_err();
        assert!(matches!(err, HttpError::BodyTooLarge(_)));
        assert_eq!(err.status(), Some(413));
        // A body shorter than announced is a broken connection, not a request.
        assert!(matches!(
            parse(&post("Content-Length: 5\r\n")),
            Err(HttpError::Io(_))
        ));
    }

    #[test]
    fn response_bytes() {
        let mut out = Vec::new();
        let r = Response::new(404, "application/json", b"{}".to_vec())
            .with_header("Set-Cookie", "a=b".into());
        write_response(&mut out, &r, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nSet-Cookie: a=b\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
    }
}
