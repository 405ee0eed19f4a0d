//! The TLS client configuration for the KBS: rustls with the ring provider (pure Rust + asm,
//! links statically), trusting exactly what `launch.toml` says:
//! - `cert`: these PEM certificates are the only trust anchors (the usual for a private KBS);
//! - `pin`: the server's certificate must carry this SubjectPublicKeyInfo (SHA-256 of its DER),
//!   checked on the end-entity certificate; with a pin and no `cert`, the pin alone decides (no
//!   chain, name or validity check: the guest clock is the host's to set, and the pin already
//!   names the one key we accept);
//! - neither: the Mozilla root set compiled in (`webpki-roots`), for a KBS with a public
//!   certificate.
//!
//! With both `cert` and `pin`, both must hold.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest as _, Sha256};

/// Most anchors accepted from one PEM bundle.
const MAX_ANCHORS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("kbs.cert: {0}")]
    BadCert(String),
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The client config for a KBS with these trust settings.
pub fn client_config(
    cert_pem: Option<&str>,
    pin: Option<[u8; 32]>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match cert_pem {
        Some(pem) => Some(anchors(pem)?),
        None if pin.is_none() => {
            let mut store = RootCertStore::empty();
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            Some(store)
        }
        None => None,
    };
    let chain = roots
        .map(|roots| {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsError::Setup(e.to_string()))
        })
        .transpose()?;
    let verifier = Arc::new(KbsVerifier {
        chain,
        pin,
        provider: provider.clone(),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn anchors(pem: &str) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
        if i >= MAX_ANCHORS {
            return Err(TlsError::BadCert(format!(
                "more than {MAX_ANCHORS} certificates"
            )));
        }
        let cert = cert.map_err(|e| TlsError::BadCert(format!("certificate {}: {e}", i + 1)))?;
        store
            .add(cert)
            .map_err(|e| TlsError::BadCert(format!("certificate {}: {e}", i + 1)))?;
    }
    if store.is_empty() {
        return Err(TlsError::BadCert("no certificate in the PEM text".into()));
    }
    Ok(store)
}

/// SHA-256 of the certificate's SubjectPublicKeyInfo DER: what `kbs.pin` holds.
pub fn spki_sha256(cert_der: &[u8]) -> Option<[u8; 32]> {
    use x509_cert::der::{Decode as _, Encode as _};
    let cert = x509_cert::Certificate::from_der(cert_der).ok()?;
    let spki = cert.tbs_certificate.subject_public_key_info.to_der().ok()?;
    Some(Sha256::digest(spki).into())
}

#[derive(Debug)]
struct KbsVerifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for KbsVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(pin) = self.pin {
            let got = spki_sha256(end_entity).ok_or(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            ))?;
            if got != pin {
                return Err(rustls::Error::General(format!(
                    "the KBS key {} is not the pinned key {}",
                    crate::hex::encode(&got),
                    crate::hex::encode(&pin)
                )));
            }
        }
        if let Some(chain) = &self.chain {
            chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_anchor_pem() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            client_config(Some(pem), None),
            Err(TlsError::BadCert(_))
        ));
        assert!(matches!(
            client_config(Some("no pem here"), None),
            Err(TlsError::BadCert(_))
        ));
    }

    #[test]
    fn builds_all_trust_modes() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let pem = cert.cert.pem();
        assert!(client_config(Some(&pem), None).is_ok());
        assert!(client_config(Some(&pem), Some([1; 32])).is_ok());
        assert!(client_config(None, Some([1; 32])).is_ok());
        assert!(client_config(None, None).is_ok());
        let pin = spki_sha256(cert.cert.der()).unwrap();
        use rcgen::PublicKeyData as _;
        let expected: [u8; 32] = Sha256::digest(cert.signing_key.subject_public_key_info()).into();
        assert_eq!(pin, expected);
    }
}
