//! TLS for the dev KBS: rustls with the ring provider, from given PEM files or from a
//! self-signed P-256 certificate made once (rcgen) for the names the guest uses:
//! `localhost`, 127.0.0.1 and 10.0.2.100 (QEMU user networking's guestfwd address).

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const CERT_FILE: &str = "kbs-cert.pem";
pub const KEY_FILE: &str = "kbs-key.pem";
const MAX_PEM: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Pem { path: PathBuf, why: String },
    #[error("cannot make the self-signed certificate: {0}")]
    Generate(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read as _;
    let io = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_PEM)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    Ok(bytes)
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let bad = |why: String| TlsError::Pem {
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE in it".into()));
    }
    Ok(certs)
}

/// A rustls server configuration from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let certs = certificates(cert)?;
    let key_der = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| TlsError::Pem {
        path: key.to_path_buf(),
        why: e.to_string(),
    })?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| TlsError::Config(e.to_string()))
}

/// SHA-256 of the SubjectPublicKeyInfo DER of a certificate, in hex (the guest's pin).
pub fn spki_sha256(cert_der: &[u8]) -> Result<String, String> {
    use x509_cert::der::{Decode as _, Encode as _};
    let cert = x509_cert::Certificate::from_der(cert_der).map_err(|e| e.to_string())?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| e.to_string())?;
    Ok(cvm_text::hex::encode(&Sha256::digest(spki)))
}

/// `DIR/kbs-cert.pem` and `DIR/kbs-key.pem`, made on first use and reused after, and the pin.
pub fn self_signed(dir: &Path) -> Result<(PathBuf, PathBuf, String), TlsError> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    if !(cert_path.exists() && key_path.exists()) {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let gen_err = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).map_err(gen_err)?;
        for ip in [[127, 0, 0, 1], [10, 0, 2, 100]] {
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress(std::net::IpAddr::from(ip)));
        }
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cvmctl dev KBS");
        let cert = params.self_signed(&key).map_err(gen_err)?;
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        std::fs::write(&cert_path, cert.pem()).map_err(|source| TlsError::Io {
            path: cert_path.clone(),
            source,
        })?;
    }
    let certs = certificates(&cert_path)?;
    let pin = spki_sha256(&certs[0]).map_err(|why| TlsError::Pem {
        path: cert_path.clone(),
        why,
    })?;
    Ok((cert_path, key_path, pin))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_made_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, pin) = self_signed(dir.path()).unwrap();
        assert_eq!(pin.len(), 64);
        let (_, _, again) = self_signed(dir.path()).unwrap();
        assert_eq!(pin, again, "reused, not regenerated");
        server_config(&cert, &key).unwrap();
        assert!(server_config(&key, &key).is_err());
    }
}
