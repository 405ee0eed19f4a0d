//! `cvmctl kbs`: a KBS for local tests and the demo that speaks the Trustee KBS protocol 0.4.0
//! (RCAR) on the wire exactly as Trustee does, so the guest's real client can talk to it and
//! everything the guest sends is what a real Trustee accepts.
//!
//! - `POST /kbs/v0/auth`: `kbs_types::Request` (version must be 0.4.0, TEE allowed by policy)
//!   → `{"nonce": <32 random bytes, standard padded base64>, "extra-params": ""}` and
//!   `Set-Cookie: kbs-session-id=<32 hex>; Expires=<IMF-fixdate, +5 min>` (Trustee's
//!   actix-web cookie form).
//! - `POST /kbs/v0/attest` (session cookie): `kbs_types::Attestation`; the runtime-data nonce
//!   must be the session's, which is spent by this first attempt whatever its outcome; report
//!   data = SHA-384 of the canonical runtime data, zero-padded ([`cvm_kbs_protocol::protocol`]);
//!   evidence verified per TEE ([`verify`]) and against the policy ([`policy`]) →
//!   `{"token": <JWT ES256>}` ([`token`]).
//! - `GET /kbs/v0/resource/<repo>/<type>/<tag>` (attested session cookie or
//!   `Authorization: Bearer <token>`): the file `<resources>/<repo>/<type>/<tag>` as a flattened
//!   JWE to the attested TEE key ([`cvm_kbs_protocol::jwe::encrypt`]).
//! - Errors: Trustee's `{"type": "https://github.com/confidential-containers/kbs/errors/<Name>",
//!   "detail": …}` with 401 (attestation and authorization), 404 (bad path, missing resource),
//!   400 (malformed JSON), 405/411/413/431 for HTTP-level refusals.
//!
//! The HTTP server ([`http`]) is our own, over `std::net`, optionally in rustls ([`tls`]); it
//! binds loopback addresses only.
#![forbid(unsafe_code)]

pub mod http;
pub mod policy;
pub mod server;
pub mod tls;
pub mod token;
pub mod verify;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use policy::Policy;
pub use server::Kbs;

/// The `iss` of our tokens.
pub const ISSUER: &str = "cvmctl-dev-kbs";
/// Most connections served at once; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// Most requests on one kept-alive connection.
const MAX_REQUESTS_PER_CONNECTION: usize = 1000;
const IO_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DevKbsError {
    #[error("refusing to listen on {0}: the dev KBS binds loopback addresses only")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Policy(#[from] policy::PolicyError),
    #[error("token key: {0}")]
    Token(#[from] token::TokenError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

/// Which JWE member `--tamper-resource` corrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tamper {
    Tag,
    Ciphertext,
    Header,
    Iv,
}

/// `cvmctl kbs`.
#[derive(clap::Args, Debug, Clone)]
pub struct KbsArgs {
    /// Address to listen on (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Policy file (TOML); without it the refusing defaults apply.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Directory of resources: <DIR>/<repo>/<type>/<tag>.
    #[arg(long, default_value = "kbs-resources")]
    pub resources: PathBuf,
    /// The token signing key, a P-256 PKCS#8 PEM (default: a fresh key per run).
    #[arg(long)]
    pub token_key: Option<PathBuf>,
    /// TLS certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve TLS with a self-signed P-256 certificate kept in DIR (made once); prints the
    /// SHA-256 of its SubjectPublicKeyInfo (the guest's pin).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub tls_self_signed: Option<PathBuf>,
    /// Write the bound address to this file once listening.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Test knob: corrupt one part of every JWE sent.
    #[arg(long, value_enum)]
    pub tamper_resource: Option<Tamper>,
}

/// One stderr line per decision.
pub(crate) fn log(line: &str) {
    eprintln!("cvmctl kbs: {line}");
}

/// A bound dev KBS, ready to [`Server::serve`].
pub struct Server {
    listener: TcpListener,
    kbs: Arc<Kbs>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Server {
    pub fn bind(args: &KbsArgs) -> Result<Server, DevKbsError> {
        if !args.listen.ip().is_loopback() {
            return Err(DevKbsError::NotLoopback(args.listen));
        }
        let policy = match &args.policy {
            Some(p) => Policy::load(p)?,
            None => Policy::default(),
        };
        let token_key = match &args.token_key {
            Some(p) => {
                let pem = std::fs::read_to_string(p).map_err(|source| DevKbsError::Io {
                    what: "cannot read the token key",
                    path: p.clone(),
                    source,
                })?;
                token::TokenKey::from_pem(&pem)?
            }
            None => token::TokenKey::generate()?,
        };
        let tls = match (&args.tls_cert, &args.tls_key, &args.tls_self_signed) {
            (Some(cert), Some(key), None) => Some(tls::server_config(cert, key)?),
            (None, None, Some(dir)) => {
                let (cert, key, pin) = tls::self_signed(dir)?;
                log(&format!("TLS self-signed certificate {}", cert.display()));
                println!("{pin}");
                log(&format!("pin (SHA-256 of the SubjectPublicKeyInfo): {pin}"));
                Some(tls::server_config(&cert, &key)?)
            }
            (None, None, None) => None,
            _ => {
                return Err(DevKbsError::Usage(
                    "--tls-cert and --tls-key go together, without --tls-self-signed".into(),
                ));
            }
        };
        let listener = TcpListener::bind(args.listen).map_err(|source| DevKbsError::Bind {
            addr: args.listen,
            source,
        })?;
        let kbs = Kbs::new(
            policy,
            args.resources.clone(),
            token_key,
            args.tamper_resource,
        );
        let server = Server {
            listener,
            kbs: Arc::new(kbs),
            tls: tls.map(Arc::new),
        };
        let addr = server.local_addr()?;
        if let Some(ready) = &args.ready_file {
            std::fs::write(ready, addr.to_string()).map_err(|source| DevKbsError::Io {
                what: "cannot write the ready file",
                path: ready.clone(),
                source,
            })?;
        }
        log(&format!(
            "listening on {}://{addr}",
            if server.tls.is_some() {
                "https"
            } else {
                "http"
            }
        ));
        Ok(server)
    }

    pub fn local_addr(&self) -> Result<SocketAddr, DevKbsError> {
        self.listener
            .local_addr()
            .map_err(|source| DevKbsError::Bind {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                source,
            })
    }

    /// Accepts connections forever, one thread each, at most [`MAX_CONNECTIONS`] at once.
    pub fn serve(self) -> Result<(), DevKbsError> {
        let active = Arc::new(AtomicUsize::new(0));
        for stream in self.listener.incoming() {
            let Ok(stream) = stream else { continue };
            if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                active.fetch_sub(1, Ordering::SeqCst);
                let mut stream = stream;
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                let r = http::Response::new(503, "text/plain", b"too many connections\n".to_vec());
                // Only plain HTTP can be told; a TLS client just sees the close.
                if self.tls.is_none() {
                    let _ = http::write_response(&mut stream, &r, false);
                }
                continue;
            }
            let kbs = Arc::clone(&self.kbs);
            let tls = self.tls.clone();
            let counter = Arc::clone(&active);
            let spawned = std::thread::Builder::new()
                .name("kbs-conn".into())
                .spawn(move || {
                    connection(stream, &kbs, tls);
                    counter.fetch_sub(1, Ordering::SeqCst);
                });
            if spawned.is_err() {
                active.fetch_sub(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }
}

fn connection(stream: TcpStream, kbs: &Kbs, tls: Option<Arc<rustls::ServerConfig>>) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_nodelay(true);
    match tls {
        None => serve_stream(stream, kbs),
        Some(config) => match rustls::ServerConnection::new(config) {
            Ok(conn) => serve_stream(rustls::StreamOwned::new(conn, stream), kbs),
            Err(e) => log(&format!("TLS: {e}")),
        },
    }
}

/// Serves requests on one connection until it closes, errs, or asks to close.
pub fn serve_stream<S: Read + Write>(stream: S, kbs: &Kbs) {
    let mut reader = BufReader::new(stream);
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        let req = match http::read_request(&mut reader) {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(e) => {
                if let Some(status) = e.status() {
                    let name = match status {
                        413 => "PayloadTooLarge",
                        _ => "InvalidRequestPath",
                    };
                    let r = server::KbsRefusal::new(status, name, e.to_string()).response();
                    let _ = http::write_response(reader.get_mut(), &r, false);
                }
                return;
            }
        };
        let keep = req.keep_alive();
        let resp = kbs.handle(&req);
        if http::write_response(reader.get_mut(), &resp, keep).is_err() || !keep {
            return;
        }
    }
}

/// `cvmctl kbs`.
pub fn run(args: &KbsArgs) -> Result<(), DevKbsError> {
    Server::bind(args)?.serve()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        kbs: KbsArgs,
    }

    #[test]
    fn refuses_non_loopback() {
        for addr in ["0.0.0.0:0", "10.0.2.100:0", "[::]:0"] {
            let cli = Cli::try_parse_from(["kbs", "--listen", addr]).unwrap();
            assert!(
                matches!(Server::bind(&cli.kbs), Err(DevKbsError::NotLoopback(_))),
                "{addr}"
            );
        }
    }

    #[test]
    fn binds_and_writes_the_ready_file() {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let cli = Cli::try_parse_from([
            "kbs",
            "--listen",
            "127.0.0.1:0",
            "--ready-file",
            ready.to_str().unwrap(),
        ])
        .unwrap();
        let server = Server::bind(&cli.kbs).unwrap();
        let addr = server.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        assert_eq!(std::fs::read_to_string(&ready).unwrap(), addr.to_string());
    }

    #[test]
    fn http_errors_over_a_stream() {
        let kbs = Kbs::new(
            Policy::default(),
            PathBuf::from("/nonexistent"),
            token::TokenKey::generate().unwrap(),
            None,
        );
        let exchange = |input: &[u8]| {
            let mut s = Duplex {
                input: std::io::Cursor::new(input.to_vec()),
                output: Vec::new(),
            };
            serve_stream(&mut s, &kbs);
            String::from_utf8(s.output).unwrap()
        };
        let out = exchange(b"POST /kbs/v0/auth HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 411 "), "{out}");
        let out = exchange(b"POST /kbs/v0/auth HTTP/1.1\r\nContent-Length: 9999999\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
        assert!(out.contains("/errors/PayloadTooLarge"), "{out}");
        // Two requests on one connection, the second closes.
        let out = exchange(
            b"GET /nope HTTP/1.1\r\n\r\nPOST /kbs/v0/auth HTTP/1.1\r\nContent-Length: 1\r\nConnection: close\r\n\r\n{",
        );
        assert!(out.starts_with("HTTP/1.1 404 "), "{out}");
        // A malformed /auth body is Trustee's 401 RCAR Auth failure.
        assert!(out.contains("HTTP/1.1 401 "), "{out}");
        assert!(
            out.contains("/errors/AttestationError") && out.contains("RCAR handshake Auth failed"),
            "{out}"
        );
        assert!(out.ends_with('}'), "{out}");
        // Version and TEE checks of /auth.
        let auth = |body: &str| {
            exchange(
                format!(
                    "POST /kbs/v0/auth HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
        };
        let out = auth(r#"{"version":"0.3.0","tee":"tpm","extra-params":""}"#);
        assert!(out.starts_with("HTTP/1.1 401 "), "{out}");
        assert!(
            out.contains(
                "KBS Client Protocol Version Mismatch: expect =0.4.0 while the request is 0.3.0"
            ),
            "{out}"
        );
        let out = auth(r#"{"version":"0.4.0","tee":"snp","extra-params":""}"#);
        assert!(out.contains("TEE snp is not allowed by policy"), "{out}");
        let out = auth(r#"{"version":"0.4.0","tee":"tpm","extra-params":""}"#);
        assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
        assert!(out.contains("Set-Cookie: kbs-session-id="), "{out}");
        assert!(out.contains("; Expires="), "{out}");
        // Trustee's member order: nonce, then extra-params.
        assert!(out.contains("\r\n\r\n{\"nonce\":\""), "{out}");
        assert!(out.ends_with("=\",\"extra-params\":\"\"}"), "{out}");
    }

    struct Duplex {
        input: std::io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Duplex {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Duplex {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
