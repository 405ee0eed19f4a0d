//! Azure's instance metadata service (IMDS, `Metadata: true` on every request, else HTTP 400):
//! the init-data as userData, and the host services the evidence needs — the VCEK with AMD's
//! chain from THIM (SNP) and a TD quote for a TDREPORT (TDX).
//!
//! userData is base64 (decoded by [`cvm_initdata::cloud::Cloud::decode`]). On a first boot IMDS
//! can serve it empty for a while, so an empty answer is retried until the deadline; one that
//! stays empty is "none configured".

use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use x509_cert::der::Decode as _;

use cvm_initdata::cloud::AZURE_MAX;

use super::imds::Http;
use super::{
    CloudError, Failure, Request, Served, http_failure, is_transient_status, refused,
    send_with_retries, with_retries,
};

pub const USER_DATA: &str =
    "/metadata/instance/compute/userData?api-version=2021-01-01&format=text";
pub const THIM_CERTIFICATION: &str = "/metadata/THIM/amd/certification";
pub const TD_QUOTE: &str = "/acc/tdquote";
const METADATA: (&str, &str) = ("Metadata", "true");
/// THIM's answer: a VCEK and two CA certificates in PEM, a few KiB.
const MAX_THIM: usize = 64 * 1024;
/// A TD quote with its certification data is ~5–8 KiB; base64 in JSON.
const MAX_QUOTE_ANSWER: usize = 64 * 1024;
/// AMD's chain is ASK then ARK.
const MAX_CHAIN: usize = 4;
/// A TDREPORT (TDG.MR.REPORT).
pub const TDREPORT_LEN: usize = 1024;
/// A TD quote's header: version (u16 LE), attestation key type, TEE type (u32 LE) …
const QUOTE_HEADER_LEN: usize = 48;
const TEE_TYPE_TDX: u32 = 0x81;

#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    #[error(transparent)]
    Service(#[from] CloudError),
    #[error("{what}: {why}")]
    Invalid { what: &'static str, why: String },
    #[error("a TDREPORT is {TDREPORT_LEN} bytes, not {0}")]
    ReportLength(usize),
}

fn invalid(what: &'static str, why: impl Into<String>) -> AzureError {
    AzureError::Invalid {
        what,
        why: why.into(),
    }
}

pub fn fetch_user_data(http: &Http, deadline: Duration) -> Result<Served, CloudError> {
    let what = format!("GET {}{USER_DATA}", http.base());
    let mut last_was_empty = false;
    let result = with_retries(&what, deadline, |left| {
        last_was_empty = false;
        let reply = http
            .send("GET", USER_DATA, &[METADATA], None, AZURE_MAX, left)
            .map_err(http_failure)?;
        match reply.status {
            200 if reply.body.is_empty() => {
                last_was_empty = true;
                Err(Failure::Transient(
                    "userData is empty (IMDS can take a while to serve it on a first boot)".into(),
                ))
            }
            200 => Ok(Served::Document(reply.body)),
            s if is_transient_status(s) => Err(Failure::Transient(format!("HTTP {s}"))),
            s => Err(refused(&what, format!("HTTP {s}: {}", reply.detail()))),
        }
    });
    match result {
        Err(CloudError::Deadline { deadline, .. }) if last_was_empty => Ok(Served::NotConfigured(
            format!("userData stayed empty for {} s", deadline.as_secs()),
        )),
        other => other,
    }
}

/// A certificate as THIM served it (one PEM block) and its DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cert {
    pub pem: String,
    pub der: Vec<u8>,
}

/// `GET /metadata/THIM/amd/certification`: the VCEK of this VM's chip at its current TCB, AMD's
/// chain for it (ASK, ARK), and the TCB version THIM used (`tcbm`, 16 hex digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmdCertification {
    pub vcek: Cert,
    pub chain: Vec<Cert>,
    pub tcbm: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ThimWire {
    vcek_cert: String,
    certificate_chain: String,
    tcbm: String,
}

/// The VCEK and AMD's chain from THIM: X.509 certificates that parse, nothing else in the PEM.
/// Whether they chain to AMD's root and sign the report is the verifier's check.
pub fn amd_certification(base: &str, deadline: Duration) -> Result<AmdCertification, AzureError> {
    let request = Request {
        method: "GET",
        path: THIM_CERTIFICATION,
        headers: &[METADATA],
        body: None,
        max_body: MAX_THIM,
        accept: 200..=200,
    };
    let body = send_with_retries(&Http::new(base), &request, deadline)?;
    parse_certification(&body)
}

pub fn parse_certification(body: &[u8]) -> Result<AmdCertification, AzureError> {
    let wire: ThimWire = serde_json::from_slice(body)
        .map_err(|e| invalid("THIM's certification answer", e.to_string()))?;
    let mut vcek = pem_certificates(&wire.vcek_cert).map_err(|why| invalid("vcekCert", why))?;
    if vcek.len() != 1 {
        return Err(invalid(
            "vcekCert",
            format!("{} certificates, expected 1", vcek.len()),
        ));
    }
    let chain = pem_certificates(&wire.certificate_chain)
        .map_err(|why| invalid("certificateChain", why))?;
    if chain.is_empty() || chain.len() > MAX_CHAIN {
        return Err(invalid(
            "certificateChain",
            format!("{} certificates, expected 1 to {MAX_CHAIN}", chain.len()),
        ));
    }
    if wire.tcbm.len() != 16 || !wire.tcbm.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("tcbm", "not 16 hex digits"));
    }
    Ok(AmdCertification {
        vcek: vcek.remove(0),
        chain,
        tcbm: wire.tcbm,
    })
}

/// Every `CERTIFICATE` PEM block of `text`, each an X.509 certificate that parses; anything
/// else (another label, text between blocks, bad base64) is an error.
fn pem_certificates(text: &str) -> Result<Vec<Cert>, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    while let Some(line) = lines.next() {
        if line != BEGIN {
            return Err(format!(
                "expected {BEGIN}, found {}",
                super::imds::printable(line.as_bytes())
            ));
        }
        let mut b64 = String::new();
        loop {
            match lines.next() {
                Some(END) => break,
                Some(l) => b64.push_str(l),
                None => return Err(format!("no {END}")),
            }
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(&b64)
            .map_err(|e| format!("certificate {}: not base64: {e}", certs.len() + 1))?;
        x509_cert::Certificate::from_der(&der)
            .map_err(|e| format!("certificate {}: not X.509: {e}", certs.len() + 1))?;
        certs.push(Cert {
            pem: format!("{BEGIN}\n{b64}\n{END}\n"),
            der,
        });
    }
    Ok(certs)
}

#[derive(Deserialize)]
struct QuoteWire {
    quote: String,
}

/// `POST /acc/tdquote` with `{"report": base64url(TDREPORT)}`: the quote IMDS's quoting
/// enclave made for it (`{"quote": base64url}`), checked to be a TDX quote (version 4 or 5, TEE
/// type 0x81). Its signature and chain are the verifier's check.
pub fn td_quote(base: &str, tdreport: &[u8], deadline: Duration) -> Result<Vec<u8>, AzureError> {
    if tdreport.len() != TDREPORT_LEN {
        return Err(AzureError::ReportLength(tdreport.len()));
    }
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let request = serde_json::json!({ "report": b64url.encode(tdreport) }).to_string();
    let post = Request {
        method: "POST",
        path: TD_QUOTE,
        headers: &[("Content-Type", "application/json")],
        body: Some(request.as_bytes()),
        max_body: MAX_QUOTE_ANSWER,
        accept: 200..=200,
    };
    let body = send_with_retries(&Http::new(base), &post, deadline)?;
    parse_quote_answer(&body)
}

pub fn parse_quote_answer(body: &[u8]) -> Result<Vec<u8>, AzureError> {
    let wire: QuoteWire =
        serde_json::from_slice(body).map_err(|e| invalid("the tdquote answer", e.to_string()))?;
    // base64url as IMDS writes it (no padding); padding is tolerated, the alphabet is not.
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let quote = engine
        .decode(wire.quote.as_bytes())
        .map_err(|e| invalid("the tdquote answer's quote", format!("not base64url: {e}")))?;
    if quote.len() < QUOTE_HEADER_LEN {
        return Err(invalid(
            "the TD quote",
            format!("{} bytes, shorter than its header", quote.len()),
        ));
    }
    let version = u16::from_le_bytes([quote[0], quote[1]]);
    let tee = u32::from_le_bytes([quote[4], quote[5], quote[6], quote[7]]);
    if !matches!(version, 4 | 5) || tee != TEE_TYPE_TDX {
        return Err(invalid(
            "the TD quote",
            format!("version {version}, TEE type {tee:#x} (expected 4 or 5, 0x81)"),
        ));
    }
    Ok(quote)
}

/// Azure's host services as the evidence code asks for them (`evidence::AzureHost`): the VCEK
/// from THIM and the TD quote from `/acc/tdquote`, both through the metadata service. What they
/// return is host input that only a verifier can judge: the VCEK must chain to AMD's roots and
/// sign the HCL report's SNP report, the quote must chain to Intel's root.
pub struct HostServices {
    pub base: &'static str,
    pub deadline: Duration,
}

impl crate::evidence::AzureHost for HostServices {
    fn fetch_vcek(&mut self) -> Result<Vec<u8>, String> {
        amd_certification(self.base, self.deadline)
            .map(|c| c.vcek.der)
            .map_err(|e| crate::stage::error_chain(&e))
    }

    fn fetch_td_quote(&mut self, td_report: &[u8]) -> Result<Vec<u8>, String> {
        td_quote(self.base, td_report, self.deadline).map_err(|e| crate::stage::error_chain(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/").to_string() + path)
            .unwrap()
    }

    #[test]
    fn thim_answers() {
        // The fixture holds the VCEK and its chain: the first block is the VCEK.
        let all = String::from_utf8(fixture("az-snp-vtpm/vcek.pem")).unwrap();
        let end = "-----END CERTIFICATE-----\n";
        let vcek = all[..all.find(end).unwrap() + end.len()].to_string();
        let good = serde_json::json!({
            "vcekCert": vcek,
            "certificateChain": format!("{vcek}{vcek}"),
            "tcbm": "DB18000000000004",
            "cacheControl": "86400",
        });
        let parsed = parse_certification(good.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.chain.len(), 2);
        assert_eq!(parsed.tcbm, "DB18000000000004");
        assert!(parsed.vcek.pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert_eq!(parsed.vcek.der, parsed.chain[0].der);
        let with = |key: &str, value: serde_json::Value| {
            let mut v = good.clone();
            v[key] = value;
            parse_certification(v.to_string().as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(with("vcekCert", format!("{vcek}{vcek}").into()).contains("2 certificates"));
        assert!(with("vcekCert", "".into()).contains("0 certificates"));
        let flipped = vcek.replacen("MII", "MIJ", 1);
        assert!(with("vcekCert", flipped.into()).contains("not X.509"));
        let key = vcek.replace("CERTIFICATE", "PRIVATE KEY");
        assert!(with("vcekCert", key.into()).contains("expected -----BEGIN CERTIFICATE-----"));
        let cut = vcek.replace("-----END CERTIFICATE-----", "");
        assert!(with("certificateChain", cut.into()).contains("no -----END"));
        assert!(with("tcbm", "xyz".into()).contains("16 hex digits"));
        assert!(parse_certification(b"{}").is_err());
        assert!(parse_certification(b"not json").is_err());
    }

    #[test]
    fn quote_answers() {
        let quote = fixture("tdx/tdx_quote_4.dat");
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let body = serde_json::json!({ "quote": b64url.encode(&quote) }).to_string();
        assert_eq!(parse_quote_answer(body.as_bytes()).unwrap(), quote);
        let padded = base64::engine::general_purpose::URL_SAFE.encode(&quote);
        let body = serde_json::json!({ "quote": padded }).to_string();
        assert_eq!(parse_quote_answer(body.as_bytes()).unwrap(), quote);
        let std = base64::engine::general_purpose::STANDARD.encode(&quote);
        if std.contains(['+', '/']) {
            let body = serde_json::json!({ "quote": std }).to_string();
            assert!(parse_quote_answer(body.as_bytes()).is_err());
        }
        let snp = fixture("snp/test-report.bin");
        let body = serde_json::json!({ "quote": b64url.encode(&snp) }).to_string();
        assert!(
            parse_quote_answer(body.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("expected 4 or 5, 0x81")
        );
        let body = serde_json::json!({ "quote": b64url.encode([4u8, 0, 2]) }).to_string();
        assert!(parse_quote_answer(body.as_bytes()).is_err());
        assert!(td_quote("http://127.0.0.1:9", &[0; 64], Duration::from_secs(1)).is_err());
    }
}
