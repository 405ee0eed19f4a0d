//! The KBS client's transport rules against canned HTTP servers on 127.0.0.1: what is retried,
//! what ends the conversation at once, the deadline, bounded answers.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cvm_agent::initdata::launch::Kbs;
use cvm_agent::kbs::protocol::{Attestation, Challenge, Tee};
use cvm_agent::kbs_client::{ClientError, KbsClient};
use cvm_agent::stage::error_chain as chain;

fn kbs(url: String, timeout: Duration) -> Kbs {
    Kbs {
        url,
        cert: None,
        pin: None,
        insecure_http: true,
        timeout,
        tee_key: Default::default(),
    }
}

/// Serves `answers` in order (the last one repeats), one per connection; returns the URL and
/// the request heads seen.
fn serve(answers: Vec<Vec<u8>>) -> (String, Arc<Mutex<Vec<String>>>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let (seen2, count2) = (seen.clone(), count.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            seen2.lock().unwrap().push(head);
            let n = count2.fetch_add(1, Ordering::SeqCst);
            let answer = &answers[n.min(answers.len() - 1)];
            let _ = stream.write_all(answer);
        }
    });
    (url, seen, count)
}

fn response(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[derive(Debug, thiserror::Error)]
#[error("evidence must not be asked for")]
struct NoEvidence;

fn attest(client: &mut KbsClient) -> Result<String, ClientError> {
    client.attest(
        Tee::Tpm,
        |_c: &Challenge| -> Result<Attestation, NoEvidence> { Err(NoEvidence) },
    )
}

#[test]
fn kbs_down_retries_until_the_deadline() {
    // A port nobody listens on: bind, note it, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut client = KbsClient::new(
        &kbs(format!("http://127.0.0.1:{port}"), Duration::from_secs(3)),
        &[],
    )
    .unwrap();
    let started = Instant::now();
    let err = attest(&mut client).unwrap_err();
    let elapsed = started.elapsed();
    match &err {
        ClientError::Deadline { attempts, .. } => assert!(*attempts >= 3, "{err}"),
        other => panic!("expected a deadline error, got {other}"),
    }
    assert!(err.to_string().contains("3 s deadline"), "{err}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(500),
        "{elapsed:?}: no backoff?"
    );
}

#[test]
fn a_refusal_is_final_and_names_the_kbs_reason() {
    let body = br#"{"type":"https://github.com/confidential-containers/kbs/errors/AttestationFailed","detail":"policy forbids debug mode"}"#;
    let (url, seen, count) = serve(vec![response(
        "401 Unauthorized",
        "Content-Type: application/json\r\n",
        body,
    )]);
    let mut client = KbsClient::new(&kbs(url, Duration::from_secs(10)), &[]).unwrap();
    let err = chain(&attest(&mut client).unwrap_err());
    assert!(err.contains("AttestationFailed"), "{err}");
    assert!(err.contains("policy forbids debug mode"), "{err}");
    assert!(err.contains("401"), "{err}");
    assert_eq!(count.load(Ordering::SeqCst), 1, "a 4xx must not be retried");
    let head = seen.lock().unwrap()[0].clone();
    assert!(head.starts_with("POST /kbs/v0/auth HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
}

#[test]
fn server_errors_are_retried() {
    let refusal = response(
        "401 Unauthorized",
        "",
        br#"{"type":"https://github.com/confidential-containers/kbs/errors/InvalidRequest","detail":"x"}"#,
    );
    let (url, _seen, count) = serve(vec![
        response("503 Service Unavailable", "", b"busy"),
        response("500 Internal Server Error", "", b""),
        refusal,
    ]);
    let mut client = KbsClient::new(&kbs(url, Duration::from_secs(20)), &[]).unwrap();
    let err = chain(&attest(&mut client).unwrap_err());
    assert!(err.contains("InvalidRequest"), "{err}");
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[test]
fn a_challenge_without_session_cookie_or_too_large_is_refused() {
    let challenge = br#"{"nonce":"abc","extra-params":""}"#;
    let (url, _s, _c) = serve(vec![response("200 OK", "", challenge)]);
    let mut client = KbsClient::new(&kbs(url, Duration::from_secs(5)), &[]).unwrap();
    let err = chain(&attest(&mut client).unwrap_err());
    assert!(err.contains("no kbs-session-id cookie"), "{err}");

    let huge = format!(r#"{{"nonce":"{}","extra-params":""}}"#, "a".repeat(2 << 20));
    let (url, _s, _c) = serve(vec![response(
        "200 OK",
        "Set-Cookie: kbs-session-id=1\r\n",
        huge.as_bytes(),
    )]);
    let mut client = KbsClient::new(&kbs(url, Duration::from_secs(5)), &[]).unwrap();
    let err = chain(&attest(&mut client).unwrap_err());
    assert!(err.contains("more than"), "{err}");

    // A good challenge reaches the evidence callback, whose failure ends the exchange.
    let (url, _s, count) = serve(vec![response(
        "200 OK",
        "Set-Cookie: kbs-session-id=42; Path=/kbs/v0\r\n",
        challenge,
    )]);
    let mut client = KbsClient::new(&kbs(url, Duration::from_secs(5)), &[]).unwrap();
    let err = chain(&attest(&mut client).unwrap_err());
    assert!(err.contains("evidence must not be asked for"), "{err}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

/// The dev KBS over TLS with its self-signed certificate, from the client's side: trusted as an
/// anchor (`kbs.cert`) or by pin it gets through to the challenge; another anchor, or another
/// pin, is a TLS failure that is not retried.
#[test]
fn tls_trust_by_anchor_and_by_pin() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("addr");
    let mut kbs = std::process::Command::new(cvm_testkit::cvmctl())
        .arg("kbs")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--tls-self-signed")
        .arg(dir.path().join("tls"))
        .arg("--resources")
        .arg(dir.path())
        .arg("--ready-file")
        .arg(&ready)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(&ready)
            && !a.trim().is_empty()
        {
            break a.trim().to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(50));
    };
    let pem = std::fs::read_to_string(dir.path().join("tls/kbs-cert.pem")).unwrap();
    let der: rustls::pki_types::CertificateDer =
        rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap();
    let pin = cvm_agent::net::tls::spki_sha256(&der).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let url = format!("https://{addr}");
    let with = |cert: Option<String>, pin: Option<[u8; 32]>| {
        let mut k = kbs_cfg(url.clone());
        k.cert = cert;
        k.pin = pin;
        let mut client = KbsClient::new(&k, &[]).unwrap();
        chain(&attest(&mut client).unwrap_err())
    };
    // Through TLS and /auth to the evidence callback: trust held.
    for err in [
        with(Some(pem.clone()), None),
        with(None, Some(pin)),
        with(Some(pem.clone()), Some(pin)),
    ] {
        assert!(err.contains("evidence must not be asked for"), "{err}");
    }
    let err = with(Some(other.cert.pem()), None);
    assert!(err.contains("TLS") && !err.contains("deadline"), "{err}");
    let err = with(None, Some([7; 32]));
    assert!(
        err.contains("is not the pinned key") && !err.contains("deadline"),
        "{err}"
    );
    let err = with(Some(pem), Some([7; 32]));
    assert!(err.contains("is not the pinned key"), "{err}");
    let _ = kbs.kill();
    let _ = kbs.wait();
}

fn kbs_cfg(url: String) -> Kbs {
    Kbs {
        url,
        cert: None,
        pin: None,
        insecure_http: false,
        timeout: Duration::from_secs(10),
        tee_key: Default::default(),
    }
}
