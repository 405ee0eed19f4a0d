//! `cvmctl kbs` as a process: loopback-only, the ready file, the stderr lines, and TLS with the
//! self-signed certificate whose SPKI pin it prints, spoken to by a rustls client that trusts
//! only that certificate.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Kbs(Child);

impl Drop for Kbs {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cvmctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cvmctl"))
}

fn wait_for(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.is_empty()
        {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} never appeared", path.display());
}

#[test]
fn refuses_non_loopback_addresses() {
    let out = cvmctl()
        .args(["kbs", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0: the dev KBS binds loopback addresses only"),
        "{err}"
    );
}

#[test]
fn tls_self_signed_with_pin() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let tls = dir.path().join("tls");
    let mut child = cvmctl()
        .args(["kbs", "--listen", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .arg("--tls-self-signed")
        .arg(&tls)
        .arg("--resources")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let kbs = Kbs(child);
    let addr = wait_for(&ready);
    let mut pin = String::new();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        pin.push(byte[0] as char);
    }
    assert_eq!(pin.len(), 64, "{pin:?}");

    // The pin is the SHA-256 of the certificate's SubjectPublicKeyInfo.
    let pem = std::fs::read(tls.join("kbs-cert.pem")).unwrap();
    use rustls::pki_types::pem::PemObject as _;
    let cert = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    assert_eq!(cvm_devkbs::tls::spki_sha256(&cert).unwrap(), pin);
    assert!(tls.join("kbs-key.pem").exists());

    // A client that trusts only this certificate, for the name "localhost".
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    for name in ["localhost", "127.0.0.1"] {
        let conn = rustls::ClientConnection::new(
            Arc::new(config.clone()),
            name.to_string().try_into().unwrap(),
        )
        .unwrap();
        let sock = TcpStream::connect(addr.trim()).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let body = br#"{"version":"0.4.0","tee":"tpm","extra-params":{}}"#;
        write!(
            tls,
            "POST /kbs/v0/auth HTTP/1.1\r\nHost: {name}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        tls.write_all(body).unwrap();
        let mut reply = Vec::new();
        // rustls reports a peer that closes without close_notify as an error after the data.
        let _ = tls.read_to_end(&mut reply);
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("Set-Cookie: kbs-session-id="), "{reply}");
        assert!(reply.contains(r#""extra-params":"""#), "{reply}");
    }
    drop(kbs);

    // A second start reuses the certificate: same pin.
    let ready2 = dir.path().join("ready2");
    let mut child = cvmctl()
        .args(["kbs", "--listen", "127.0.0.1:0", "--ready-file"])
        .arg(&ready2)
        .arg("--tls-self-signed")
        .arg(&tls)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let _kbs = Kbs(child);
    wait_for(&ready2);
    let mut again = String::new();
    while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        again.push(byte[0] as char);
    }
    assert_eq!(again, pin);
}
