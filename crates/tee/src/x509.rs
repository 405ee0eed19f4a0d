//! The few X.509 operations the vendor certificate chains need, in pure Rust.
//!
//! AMD signs its ARK/ASK/ASVK/VCEK/VLEK certificates with RSASSA-PSS (SHA-384, MGF1-SHA-384,
//! 48-byte salt); Intel signs the SGX/TDX PCK chain with ECDSA P-256/SHA-256. That is all this
//! module verifies. Signatures are checked over the TBS bytes exactly as they appear in the
//! certificate (not a re-encoding), so a certificate that is not canonical DER fails instead of
//! being "repaired". Validity periods are not checked: there is no trustworthy clock in early
//! boot, and the dev KBS that uses these checks may apply its own time policy.

use std::ops::Range;

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use rsa::pkcs8::DecodePublicKey as _;
use x509_cert::der::{Decode as _, Encode as _};
use x509_cert::spki::ObjectIdentifier;

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate is not valid DER: {0}")]
    Der(String),
    #[error("PEM: {0}")]
    Pem(&'static str),
    #[error("{what} has signature algorithm {found}, expected {expected}")]
    Algorithm {
        what: String,
        found: String,
        expected: &'static str,
    },
    #[error("{0} has an unusable public key")]
    PublicKey(String),
    #[error("{0} has a malformed signature")]
    SignatureEncoding(String),
    #[error("{subject} is not signed by {issuer}")]
    BadSignature { subject: String, issuer: String },
    #[error("{subject} names issuer {named}, but the issuing certificate is {issuer}")]
    IssuerName {
        subject: String,
        named: String,
        issuer: String,
    },
}

pub(crate) const OID_RSASSA_PSS: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
pub(crate) const OID_ECDSA_SHA256: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// A parsed certificate together with its original DER (for the exact TBS bytes).
#[derive(Clone, Debug)]
pub struct Cert {
    der: Vec<u8>,
    tbs: Range<usize>,
    cert: x509_cert::Certificate,
}

impl Cert {
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        let cert =
            x509_cert::Certificate::from_der(der).map_err(|e| CertError::Der(e.to_string()))?;
        let tbs = raw_tbs_range(der)
            .ok_or_else(|| CertError::Der("cannot locate TBSCertificate".into()))?;
        Ok(Self {
            der: der.to_vec(),
            tbs,
            cert,
        })
    }

    /// The DER bytes as given.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn inner(&self) -> &x509_cert::Certificate {
        &self.cert
    }

    /// The subject as an RFC 4514 string, for messages.
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    pub fn issuer(&self) -> String {
        self.cert.tbs_certificate.issuer.to_string()
    }

    /// The value of the subject's CN attribute, if there is exactly one readable one.
    pub fn common_name(&self) -> Option<String> {
        name_cn(&self.cert.tbs_certificate.subject)
    }

    /// The value of the issuer's CN attribute, if there is exactly one readable one.
    pub fn issuer_common_name(&self) -> Option<String> {
        name_cn(&self.cert.tbs_certificate.issuer)
    }

    fn tbs_bytes(&self) -> &[u8] {
        &self.der[self.tbs.clone()]
    }

    fn signature_bytes(&self) -> Result<&[u8], CertError> {
        self.cert
            .signature
            .as_bytes()
            .ok_or_else(|| CertError::SignatureEncoding(self.subject()))
    }

    /// The raw `extnValue` contents of the extension with this OID, if present exactly once.
    pub fn extension(&self, oid: &ObjectIdentifier) -> Option<&[u8]> {
        let exts = self.cert.tbs_certificate.extensions.as_ref()?;
        let mut it = exts.iter().filter(|e| &e.extn_id == oid);
        let first = it.next()?;
        if it.next().is_some() {
            return None;
        }
        Some(first.extn_value.as_bytes())
    }

    /// The DER SubjectPublicKeyInfo of the certified key.
    pub fn spki_der(&self) -> Result<Vec<u8>, CertError> {
        self.cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|_| CertError::PublicKey(self.subject()))
    }

    /// The subject public key, which must be an EC key on the named curve.
    fn ec_point(&self, curve: &ObjectIdentifier) -> Result<&[u8], CertError> {
        let spki = &self.cert.tbs_certificate.subject_public_key_info;
        let param = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        if spki.algorithm.oid != OID_EC_PUBLIC_KEY || param.as_ref() != Some(curve) {
            return Err(CertError::PublicKey(self.subject()));
        }
        spki.subject_public_key
            .as_bytes()
            .ok_or_else(|| CertError::PublicKey(self.subject()))
    }

    pub fn p256_key(&self) -> Result<p256::ecdsa::VerifyingKey, CertError> {
        p256::ecdsa::VerifyingKey::from_sec1_bytes(self.ec_point(&OID_P256)?)
            .map_err(|_| CertError::PublicKey(self.subject()))
    }

    pub fn p384_key(&self) -> Result<p384::ecdsa::VerifyingKey, CertError> {
        p384::ecdsa::VerifyingKey::from_sec1_bytes(self.ec_point(&OID_P384)?)
            .map_err(|_| CertError::PublicKey(self.subject()))
    }

    pub fn rsa_key(&self) -> Result<rsa::RsaPublicKey, CertError> {
        rsa::RsaPublicKey::from_public_key_der(&self.spki_der()?)
            .map_err(|_| CertError::PublicKey(self.subject()))
    }

    fn check_issuer_name(&self, issuer: &Cert) -> Result<(), CertError> {
        if self.cert.tbs_certificate.issuer != issuer.cert.tbs_certificate.subject {
            return Err(CertError::IssuerName {
                subject: self.subject(),
                named: self.issuer(),
                issuer: issuer.subject(),
            });
        }
        Ok(())
    }

    fn check_algorithm(&self, oid: &ObjectIdentifier, name: &'static str) -> Result<(), CertError> {
        // The outer and the signed (TBS) algorithm identifiers must agree (RFC 5280 4.1.1.2).
        let outer = &self.cert.signature_algorithm;
        let inner = &self.cert.tbs_certificate.signature;
        if &outer.oid != oid || outer != inner {
            return Err(CertError::Algorithm {
                what: self.subject(),
                found: outer.oid.to_string(),
                expected: name,
            });
        }
        Ok(())
    }

    /// Checks that `issuer` signed `self` with RSASSA-PSS/SHA-384 (AMD's certificates).
    ///
    /// The PSS parameters in the certificate are not interpreted: the verification itself pins
    /// SHA-384 and MGF1-SHA-384, so a certificate that claims other parameters does not verify.
    pub fn verify_rsa_pss_sha384_by(&self, issuer: &Cert) -> Result<(), CertError> {
        self.check_algorithm(&OID_RSASSA_PSS, "RSASSA-PSS")?;
        self.check_issuer_name(issuer)?;
        let key = rsa::pss::VerifyingKey::<sha2::Sha384>::new(issuer.rsa_key()?);
        let sig = rsa::pss::Signature::try_from(self.signature_bytes()?)
            .map_err(|_| CertError::SignatureEncoding(self.subject()))?;
        key.verify(self.tbs_bytes(), &sig)
            .map_err(|_| CertError::BadSignature {
                subject: self.subject(),
                issuer: issuer.subject(),
            })
    }

    /// Checks that `issuer` signed `self` with the algorithm `self` names, of the two a cloud
    /// CA uses for AK certificates: sha256WithRSAEncryption (RSA issuer) or ecdsa-with-SHA256
    /// (P-256 issuer). Anything else is refused.
    pub fn verify_by(&self, issuer: &Cert) -> Result<(), CertError> {
        if self.cert.signature_algorithm.oid == OID_ECDSA_SHA256 {
            return self.verify_ecdsa_p256_sha256_by(issuer);
        }
        self.check_algorithm(&OID_SHA256_WITH_RSA, "sha256WithRSAEncryption")?;
        self.check_issuer_name(issuer)?;
        let key = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(issuer.rsa_key()?);
        let sig = rsa::pkcs1v15::Signature::try_from(self.signature_bytes()?)
            .map_err(|_| CertError::SignatureEncoding(self.subject()))?;
        key.verify(self.tbs_bytes(), &sig)
            .map_err(|_| CertError::BadSignature {
                subject: self.subject(),
                issuer: issuer.subject(),
            })
    }

    /// Checks that `issuer` signed `self` with ECDSA P-256/SHA-256 (Intel's PCK chain).
    pub fn verify_ecdsa_p256_sha256_by(&self, issuer: &Cert) -> Result<(), CertError> {
        self.check_algorithm(&OID_ECDSA_SHA256, "ecdsa-with-SHA256")?;
        self.check_issuer_name(issuer)?;
        let key = issuer.p256_key()?;
        let sig = p256::ecdsa::Signature::from_der(self.signature_bytes()?)
            .map_err(|_| CertError::SignatureEncoding(self.subject()))?;
        key.verify(self.tbs_bytes(), &sig)
            .map_err(|_| CertError::BadSignature {
                subject: self.subject(),
                issuer: issuer.subject(),
            })
    }
}

fn name_cn(name: &x509_cert::name::Name) -> Option<String> {
    const OID_CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
    let mut found = None;
    for rdn in name.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid == OID_CN {
                if found.is_some() {
                    return None;
                }
                found = Some(directory_string(&atv.value)?);
            }
        }
    }
    found
}

/// Decodes the printable string types CAs use in names.
fn directory_string(any: &x509_cert::der::Any) -> Option<String> {
    use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
    if let Ok(s) = any.decode_as::<Utf8StringRef<'_>>() {
        return Some(s.as_str().to_owned());
    }
    if let Ok(s) = any.decode_as::<PrintableStringRef<'_>>() {
        return Some(s.as_str().to_owned());
    }
    any.decode_as::<Ia5StringRef<'_>>()
        .ok()
        .map(|s| s.as_str().to_owned())
}

/// One DER tag-length header: (tag, header length, content length). Definite lengths only.
fn der_header(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let tag = *buf.first()?;
    let first = *buf.get(1)?;
    if first < 0x80 {
        return Some((tag, 2, usize::from(first)));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for &b in buf.get(2..2 + n)? {
        len = (len << 8) | usize::from(b);
    }
    Some((tag, 2 + n, len))
}

/// The byte range of the TBSCertificate inside a Certificate's DER.
fn raw_tbs_range(der: &[u8]) -> Option<Range<usize>> {
    let (tag, hlen, len) = der_header(der)?;
    if tag != 0x30 || hlen.checked_add(len)? != der.len() {
        return None;
    }
    let (tag, thlen, tlen) = der_header(der.get(hlen..)?)?;
    let end = hlen.checked_add(thlen)?.checked_add(tlen)?;
    if tag != 0x30 || end > der.len() {
        return None;
    }
    Some(hlen..end)
}

/// Every `CERTIFICATE` block of a PEM text, decoded to DER, in order.
///
/// Text outside the blocks is ignored (the TDX PCK chain is followed by a NUL; Azure's VCEK
/// files carry the whole chain). Any other block label, an unterminated block or bad base64 is
/// an error.
pub fn pem_certificates(text: &[u8]) -> Result<Vec<Vec<u8>>, CertError> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----END ";
    const LABEL: &[u8] = b"CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = find(rest, BEGIN) {
        rest = &rest[start + BEGIN.len()..];
        if !rest.starts_with(LABEL) {
            return Err(CertError::Pem("block is not a CERTIFICATE"));
        }
        rest = &rest[LABEL.len()..];
        let end = find(rest, END).ok_or(CertError::Pem("unterminated block"))?;
        let body: Vec<u8> = rest[..end]
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        rest = &rest[end + END.len()..];
        if !rest.starts_with(LABEL) {
            return Err(CertError::Pem("mismatched END label"));
        }
        rest = &rest[LABEL.len()..];
        let der = base64::engine::general_purpose::STANDARD
            .decode(&body)
            .map_err(|_| CertError::Pem("bad base64"))?;
        out.push(der);
    }
    Ok(out)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_header_forms() {
        assert_eq!(der_header(&[0x30, 0x05]), Some((0x30, 2, 5)));
        assert_eq!(der_header(&[0x30, 0x82, 0x01, 0x00]), Some((0x30, 4, 256)));
        assert_eq!(
            der_header(&[0x30, 0x80]),
            None,
            "indefinite length is not DER"
        );
        assert_eq!(der_header(&[0x30, 0x82, 0x01]), None);
        assert_eq!(der_header(&[0x30]), None);
    }

    #[test]
    fn pem_rejects_garbage() {
        assert!(pem_certificates(b"no blocks here").unwrap().is_empty());
        assert!(
            pem_certificates(b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----")
                .is_err()
        );
        assert!(pem_certificates(b"-----BEGIN CERTIFICATE-----\nAA==").is_err());
        assert!(
            pem_certificates(b"-----BEGIN CERTIFICATE-----\n*==\n-----END CERTIFICATE-----")
                .is_err()
        );
        let one =
            pem_certificates(b"-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\0")
                .unwrap();
        assert_eq!(one, vec![vec![0, 1, 2]]);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(Cert::from_der(&[]).is_err());
        assert!(Cert::from_der(&[0x30, 0x03, 0x30, 0x01, 0x00]).is_err());
    }
}
