//! Fake cloud services for tests, speaking the documented protocols exactly, each a small
//! threaded HTTP/1.1 server on 127.0.0.1 (one request per connection, `Connection: close`). The
//! guest reaches them at the real addresses through qemu/boot.sh's `--guestfwd
//! ADDR:80:PORT` (see [`cloud_net_args`]); host tests call them directly.
//!
//! - GCP's metadata server: `Metadata-Flavor: Google` required (403 without it), on every answer
//!   too; requests carrying `X-Forwarded-For` refused (403); the instance attribute
//!   `cvm-initdata`, 404 when unset.
//! - AWS IMDSv2: `PUT /latest/api/token` needs `X-aws-ec2-metadata-token-ttl-seconds` (1–21600,
//!   else 400) and answers the token with that header; `GET /latest/user-data` without a valid
//!   `X-aws-ec2-metadata-token` is 401; 404 when no user data. [`Aws::imdsv1_only`] plays a
//!   service that refuses token requests (403) and answers any GET.
//! - Azure IMDS: `Metadata: true` required (400 with Azure's error JSON without it),
//!   `api-version` required on `/metadata/` paths; userData (base64, `format=text`) served
//!   empty for the first N reads; THIM's AMD certification; `POST /acc/tdquote`.
//! - Azure's WireServer: `x-ms-version: 2012-11-30` required (400 without it); the goal state
//!   XML; health reports recorded.

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;

/// The metadata service's and the WireServer's addresses, as the guest reaches them.
pub const METADATA_ADDR: &str = "169.254.169.254";
pub const WIRESERVER_ADDR: &str = "168.63.129.16";
/// A user network that holds both (boot.sh `--net`); the guest's lease is 168.0.2.15/7.
pub const CLOUD_NET: &str = "168.0.0.0/7";
/// Where a test puts the dev KBS inside that network.
pub const KBS_ADDR: &str = "169.254.0.100";
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 1024 * 1024;

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The value of query parameter `name`.
    pub fn query(&self, name: &str) -> Option<&str> {
        let (_, q) = self.target.split_once('?')?;
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn with(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A running fake: its port and every request it answered, with the status it gave.
pub struct Server {
    pub port: u16,
    seen: Arc<Mutex<Vec<(Request, u16)>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Requests so far, in arrival order, with the status each got.
    pub fn seen(&self) -> Vec<(Request, u16)> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests for `path` were answered with `status`.
    pub fn count(&self, method: &str, path: &str, status: u16) -> usize {
        self.seen()
            .iter()
            .filter(|(r, s)| r.method == method && r.path() == path && *s == status)
            .count()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// boot.sh's `--guestfwd` for this server at `addr:80`.
    pub fn guestfwd(&self, addr: &str) -> [String; 2] {
        ["--guestfwd".into(), format!("{addr}:80:{}", self.port)]
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Serves `handler` on 127.0.0.1:0.
pub fn serve(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let handler = Arc::new(handler);
    let (seen2, stop2) = (seen.clone(), stop.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stop2.load(Ordering::SeqCst) {
                return;
            }
            let Ok(stream) = stream else { continue };
            let (handler, seen) = (handler.clone(), seen2.clone());
            std::thread::spawn(move || {
                let Some(request) = read_request(&stream) else {
                    let _ = write_response(&stream, &Response::new(400, "bad request"));
                    return;
                };
                let response = handler(&request);
                seen.lock().unwrap().push((request, response.status));
                let _ = write_response(&stream, &response);
            });
        }
    });
    Server { port, seen, stop }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .ok()?;
    let mut reader = BufReader::new(stream.take((MAX_HEAD + MAX_BODY) as u64));
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.trim_end().split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return None;
    }
    let mut headers = Vec::new();
    let mut head_len = line.len();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        head_len += h.len();
        if head_len > MAX_HEAD {
            return None;
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut request = Request {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        body: Vec::new(),
    };
    if request.header("Transfer-Encoding").is_some() {
        return None;
    }
    let len: usize = match request.header("Content-Length") {
        Some(v) => v.parse().ok()?,
        None => 0,
    };
    if len > MAX_BODY {
        return None;
    }
    request.body = vec![0; len];
    reader.read_exact(&mut request.body).ok()?;
    Some(request)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Status",
    }
}

fn write_response(mut stream: &TcpStream, r: &Response) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (n, v) in &r.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        r.body.len()
    ));
    stream.write_all(head.as_bytes())?;
    stream.write_all(&r.body)?;
    stream.flush()
}

/// GCP's metadata server with the instance attribute `cvm-initdata` (or none).
pub fn gcp(attribute: Option<Vec<u8>>) -> Server {
    serve(move |req| {
        let flavored = |r: Response| r.with("Metadata-Flavor", "Google");
        if req.header("X-Forwarded-For").is_some() {
            return flavored(Response::new(403, "X-Forwarded-For header is not allowed"));
        }
        if req.header("Metadata-Flavor") != Some("Google") {
            return flavored(Response::new(
                403,
                "Your client does not have permission to get URL from this server. \
                 Missing Metadata-Flavor:Google header.",
            ));
        }
        if req.method != "GET" {
            return flavored(Response::new(405, ""));
        }
        let found = match req.path() {
            "/computeMetadata/v1/instance/attributes/cvm-initdata" => attribute.clone(),
            _ => None,
        };
        match found {
            Some(value) => {
                flavored(Response::new(200, value)).with("Content-Type", "application/text")
            }
            None => flavored(Response::new(404, "Not Found")),
        }
    })
}

/// AWS's instance metadata service.
pub struct Aws;

impl Aws {
    /// IMDSv2 (tokens required) with `user_data` (or none: 404).
    pub fn imdsv2(user_data: Option<Vec<u8>>) -> Server {
        aws(user_data, true)
    }

    /// A service that refuses token requests and answers plain GETs (IMDSv1 only).
    pub fn imdsv1_only(user_data: Option<Vec<u8>>) -> Server {
        aws(user_data, false)
    }
}

fn aws(user_data: Option<Vec<u8>>, v2: bool) -> Server {
    let tokens: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
    serve(move |req| {
        if req.header("X-Forwarded-For").is_some() {
            return Response::new(403, "Forbidden");
        }
        match (req.method.as_str(), req.path()) {
            ("PUT", "/latest/api/token") => {
                if !v2 {
                    return Response::new(403, "Forbidden");
                }
                let ttl = req
                    .header("X-aws-ec2-metadata-token-ttl-seconds")
                    .and_then(|v| v.parse::<u32>().ok())
                    .filter(|t| (1..=21600).contains(t));
                let Some(ttl) = ttl else {
                    return Response::new(400, "Bad Request");
                };
                let mut raw = [0u8; 42];
                getrandom::fill(&mut raw).unwrap();
                let token = base64::engine::general_purpose::URL_SAFE.encode(raw);
                tokens.lock().unwrap().insert(token.clone());
                Response::new(200, token)
                    .with("X-aws-ec2-metadata-token-ttl-seconds", &ttl.to_string())
                    .with("Content-Type", "text/plain")
            }
            ("GET", "/latest/user-data") => {
                if v2 {
                    let ok = req
                        .header("X-aws-ec2-metadata-token")
                        .is_some_and(|t| tokens.lock().unwrap().contains(t));
                    if !ok {
                        return Response::new(401, "Unauthorized");
                    }
                }
                match &user_data {
                    Some(d) => Response::new(200, d.clone())
                        .with("Content-Type", "application/octet-stream"),
                    None => Response::new(404, "Not Found"),
                }
            }
            ("GET", _) => Response::new(404, "Not Found"),
            _ => Response::new(405, "Method Not Allowed"),
        }
    })
}

/// Azure IMDS: what it serves.
#[derive(Default)]
pub struct Azure {
    /// userData as served (base64), after `empty_first` empty answers.
    pub user_data: String,
    pub empty_first: usize,
    /// THIM's `/metadata/THIM/amd/certification` JSON body, if any (else 404).
    pub thim: Option<String>,
    /// The quote `/acc/tdquote` returns for any 1024-byte report, if any (else 404).
    pub td_quote: Option<Vec<u8>>,
}

pub const AZURE_USER_DATA: &str = "/metadata/instance/compute/userData";

pub fn azure(config: Azure) -> Server {
    let reads = AtomicUsize::new(0);
    let error = |status: u16, msg: &str| {
        Response::new(status, serde_json::json!({ "error": msg }).to_string())
            .with("Content-Type", "application/json; charset=utf-8")
    };
    serve(move |req| {
        if req.header("X-Forwarded-For").is_some() {
            return error(400, "Bad request. X-Forwarded-For header is not allowed");
        }
        if req.path() == "/acc/tdquote" {
            return td_quote(req, config.td_quote.as_deref());
        }
        if req.header("Metadata") != Some("true") {
            return error(400, "Bad request. Required metadata header not specified");
        }
        if req.query("api-version").is_none() && req.path() != "/metadata/THIM/amd/certification" {
            return error(
                400,
                "Bad request. api-version was not specified in the request. For more information refer to aka.ms/azureimds",
            );
        }
        if req.method != "GET" {
            return error(405, "Method not allowed");
        }
        match req.path() {
            AZURE_USER_DATA => {
                let n = reads.fetch_add(1, Ordering::SeqCst);
                let body = if n < config.empty_first {
                    String::new()
                } else {
                    config.user_data.clone()
                };
                Response::new(200, body).with("Content-Type", "text/plain; charset=utf-8")
            }
            "/metadata/THIM/amd/certification" => match &config.thim {
                Some(json) => {
                    Response::new(200, json.clone()).with("Content-Type", "application/json")
                }
                None => error(404, "Not found"),
            },
            _ => error(404, "Not found"),
        }
    })
}

fn td_quote(req: &Request, quote: Option<&[u8]>) -> Response {
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let Some(quote) = quote else {
        return Response::new(404, "");
    };
    if req.method != "POST" || req.header("Content-Type") != Some("application/json") {
        return Response::new(400, "");
    }
    let report = serde_json::from_slice::<serde_json::Value>(&req.body)
        .ok()
        .and_then(|v| v["report"].as_str().map(str::to_owned))
        .and_then(|r| b64url.decode(r).ok());
    match report {
        Some(r) if r.len() == 1024 => Response::new(
            200,
            serde_json::json!({ "quote": b64url.encode(quote) }).to_string(),
        )
        .with("Content-Type", "application/json"),
        _ => Response::new(400, ""),
    }
}

/// The identifiers the fake WireServer's goal state carries.
pub const CONTAINER_ID: &str = "4f3c5e1a-9b2d-4e8f-a1c3-5d7e9f0b2c4a";
pub const INSTANCE_ID: &str = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0._cvm-test";
pub const INCARNATION: u64 = 2;

/// Azure's WireServer: the goal state for [`CONTAINER_ID`], [`INSTANCE_ID`], [`INCARNATION`];
/// health reports are in [`Server::seen`].
pub fn wireserver() -> Server {
    let goal = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<GoalState xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="goalstate10.xsd">
  <Version>2012-11-30</Version>
  <Incarnation>{INCARNATION}</Incarnation>
  <Machine>
    <ExpectedState>Started</ExpectedState>
    <StopRolesDeadlineHint>300000</StopRolesDeadlineHint>
    <LBProbePorts>
      <Port>16001</Port>
    </LBProbePorts>
    <ExpectHealthReport>FALSE</ExpectHealthReport>
  </Machine>
  <Container>
    <ContainerId>{CONTAINER_ID}</ContainerId>
    <RoleInstanceList>
      <RoleInstance>
        <InstanceId>{INSTANCE_ID}</InstanceId>
        <State>Started</State>
        <Configuration>
          <HostingEnvironmentConfig>http://168.63.129.16:80/machine/{CONTAINER_ID}/x?comp=config&amp;type=hostingEnvironmentConfig&amp;incarnation={INCARNATION}</HostingEnvironmentConfig>
          <SharedConfig>http://168.63.129.16:80/machine/{CONTAINER_ID}/x?comp=config&amp;type=sharedConfig&amp;incarnation={INCARNATION}</SharedConfig>
          <Certificates/>
        </Configuration>
      </RoleInstance>
    </RoleInstanceList>
  </Container>
</GoalState>
"#
    );
    serve(move |req| {
        if req.header("x-ms-version") != Some("2012-11-30") {
            return Response::new(400, "");
        }
        match (req.method.as_str(), req.target.as_str()) {
            ("GET", "/machine/?comp=goalstate") => {
                Response::new(200, goal.clone()).with("Content-Type", "text/xml; charset=utf-8")
            }
            ("POST", "/machine?comp=health") => {
                if !req
                    .header("Content-Type")
                    .is_some_and(|c| c.starts_with("text/xml"))
                {
                    return Response::new(400, "");
                }
                Response::new(200, "")
            }
            _ => Response::new(404, ""),
        }
    })
}

/// The health reports a WireServer received, as text.
pub fn health_reports(server: &Server) -> Vec<String> {
    server
        .seen()
        .into_iter()
        .filter(|(r, s)| r.method == "POST" && r.target == "/machine?comp=health" && *s == 200)
        .map(|(r, _)| String::from_utf8_lossy(&r.body).into_owned())
        .collect()
}

/// boot.sh arguments for a cloud VM: the network that holds the link-local services, the
/// metadata service (and WireServer) behind it, the SMBIOS vendor.
pub fn cloud_net_args(vendor: &str, metadata: &Server, wireserver: Option<&Server>) -> Vec<String> {
    let mut args = vec![
        "--net".to_string(),
        CLOUD_NET.into(),
        "--smbios-vendor".into(),
        vendor.into(),
    ];
    args.extend(metadata.guestfwd(METADATA_ADDR));
    if let Some(w) = wireserver {
        args.extend(w.guestfwd(WIRESERVER_ADDR));
    }
    args
}
