//! Attestation keys the cloud provisions, as opposed to the one the agent makes
//! ([`super::AK_HANDLE`]):
//! - Azure: the vTPM's AK at persistent handle 0x81000003; the HCL report's runtime data names
//!   its public key (`HCLAkPub`), so the hardware report vouches for it.
//! - GCP: the AK is a primary key of the endorsement hierarchy made from the template Google
//!   stores in NV 0x01c10001 (RSA; go-tpm-tools `GceAKTemplateNVIndexRSA`), and Google's CA
//!   certifies that key in NV 0x01c10000 (DER; `GceAKCertNVIndexRSA`). The same template on
//!   the same vTPM gives the same key, the one the certificate names.
//!
//! Such a key is the platform's, so its attributes are not ours to fix; what a quote needs is
//! checked: RSA-2048, `restricted` and `sign` (a restricted signing key signs only what the
//! TPM itself made, so nobody can have it sign a forged TPMS_ATTEST), not `decrypt`,
//! `fixedTPM`, and a scheme of RSASSA-SHA256 or none.

use tpm2_protocol::TpmUnmarshal as _;
use tpm2_protocol::data::TpmtPublic;

use super::ak::{AttestationKey, public_area};
use super::{Reader, Tpm, TpmError, Transport, describe};

/// Azure's vTPM AK.
pub const AZURE_AK_HANDLE: u32 = 0x8100_0003;
/// GCP's RSA AK template (a marshalled TPMT_PUBLIC).
pub const GCE_AK_TEMPLATE_NV_INDEX_RSA: u32 = 0x01c1_0001;
/// GCP's RSA AK certificate (DER X.509).
pub const GCE_AK_CERT_NV_INDEX_RSA: u32 = 0x01c1_0000;

const TPM_ALG_RSA: u16 = 0x0001;
const TPM_ALG_SHA256: u16 = 0x000B;
const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ALG_RSASSA: u16 = 0x0014;
const FIXED_TPM: u32 = 0x0000_0002;
const RESTRICTED: u32 = 0x0001_0000;
const DECRYPT: u32 = 0x0002_0000;
const SIGN: u32 = 0x0004_0000;
const RSA_MODULUS_LEN: usize = 256;
/// Largest template accepted from NV (a TPMT_PUBLIC with a 2048-bit unique fits in 400).
const MAX_TEMPLATE: usize = 1024;

impl<T: Transport> Tpm<T> {
    /// The persistent key at `handle` (Azure's AK: [`AZURE_AK_HANDLE`]), checked as a quoting
    /// key (module docs). A missing handle answers TPM_RC_HANDLE.
    pub fn persistent_ak(&mut self, handle: u32) -> Result<AttestationKey, TpmError> {
        let public = self
            .read_public(handle)
            .map_err(|e| e.in_command("ReadPublic"))?;
        platform_key(handle, &public)
            .map_err(|reason| TpmError::ForeignKey { handle, reason }.in_command("ReadPublic"))
    }

    /// A primary key of the endorsement hierarchy made from `template` (GCP's AK template
    /// from [`GCE_AK_TEMPLATE_NV_INDEX_RSA`]: a marshalled TPMT_PUBLIC, as go-tpm-tools
    /// decodes it; a TPM2B_PUBLIC, size first, is taken too). The key is transient: the caller
    /// quotes with it and flushes [`AttestationKey::handle`]. Made keys that are no quoting
    /// key (module docs) are flushed and refused.
    pub fn ak_from_template(&mut self, template: &[u8]) -> Result<AttestationKey, TpmError> {
        let public = parse_template(template)?;
        let (handle, out) = self
            .create_primary(public)
            .map_err(|e| e.in_command("CreatePrimary"))?;
        match platform_key(handle, &out) {
            Ok(key) => Ok(key),
            Err(reason) => {
                let _ = self.flush_context(handle);
                Err(TpmError::ForeignKey { handle, reason }.in_command("CreatePrimary"))
            }
        }
    }
}

/// The template as a TPMT_PUBLIC: the bytes whole, or the contents of a TPM2B_PUBLIC when its
/// size field says so. Nothing may follow.
fn parse_template(template: &[u8]) -> Result<TpmtPublic, TpmError> {
    if template.len() > MAX_TEMPLATE {
        return Err(TpmError::InvalidArgument(format!(
            "AK template of {} bytes, at most {MAX_TEMPLATE}",
            template.len()
        )));
    }
    let inner = match template {
        [hi, lo, rest @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len() => rest,
        whole => whole,
    };
    let (public, rest) = TpmtPublic::unmarshal(inner)
        .map_err(|e| TpmError::InvalidArgument(format!("AK template: {}", describe(e))))?;
    if !rest.is_empty() {
        return Err(TpmError::InvalidArgument(format!(
            "AK template: {} bytes after the TPMT_PUBLIC",
            rest.len()
        )));
    }
    Ok(public)
}

/// A platform key from its marshalled TPM2B_PUBLIC, or why it cannot quote for us.
fn platform_key(handle: u32, public: &[u8]) -> Result<AttestationKey, String> {
    let area = public_area(public)?;
    let mut r = Reader {
        rest: area,
        offset: 0,
    };
    let err = |e: TpmError| e.to_string();
    let kind = r.u16("type").map_err(err)?;
    if kind != TPM_ALG_RSA {
        return Err(format!("type is {kind:#x}, not RSA"));
    }
    let _name_alg = r.u16("nameAlg").map_err(err)?;
    let attributes = r.u32("objectAttributes").map_err(err)?;
    for (bit, name) in [
        (FIXED_TPM, "fixedTPM"),
        (RESTRICTED, "restricted"),
        (SIGN, "sign"),
    ] {
        if attributes & bit == 0 {
            return Err(format!(
                "it is not {name} (objectAttributes {attributes:#x})"
            ));
        }
    }
    if attributes & DECRYPT != 0 {
        return Err(format!(
            "it is a decrypt key (objectAttributes {attributes:#x})"
        ));
    }
    let _policy = r.tpm2b(64, "authPolicy").map_err(err)?;
    let symmetric = r.u16("symmetric").map_err(err)?;
    if symmetric != TPM_ALG_NULL {
        return Err(format!("symmetric is {symmetric:#x}, not NULL"));
    }
    match r.u16("scheme").map_err(err)? {
        TPM_ALG_NULL => {}
        TPM_ALG_RSASSA => {
            let hash = r.u16("scheme hash").map_err(err)?;
            if hash != TPM_ALG_SHA256 {
                return Err(format!("scheme hash is {hash:#x}, not SHA-256"));
            }
        }
        other => return Err(format!("scheme is {other:#x}, not RSASSA or NULL")),
    }
    let bits = r.u16("keyBits").map_err(err)?;
    if usize::from(bits) != RSA_MODULUS_LEN * 8 {
        return Err(format!("keyBits is {bits}, not 2048"));
    }
    let exponent = match r.u32("exponent").map_err(err)? {
        0 | 65537 => 65537,
        other => return Err(format!("exponent is {other}, not 65537")),
    };
    let modulus = r.tpm2b(RSA_MODULUS_LEN, "unique").map_err(err)?;
    r.finish().map_err(err)?;
    if modulus.len() != RSA_MODULUS_LEN || modulus.first().is_none_or(|&b| b & 0x80 == 0) {
        return Err(format!(
            "its modulus is {} bytes, not a 2048-bit number",
            modulus.len()
        ));
    }
    Ok(AttestationKey {
        handle,
        public: public.to_vec(),
        rsa_modulus: modulus.to_vec(),
        rsa_exponent: exponent,
        spki_der: super::rsa_spki_der(modulus, exponent),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TPM2B_PUBLIC of `template` with a 2048-bit modulus in `unique`.
    fn public_of(template: &[u8]) -> Vec<u8> {
        let mut area = template[..template.len() - 2].to_vec();
        area.extend_from_slice(&256u16.to_be_bytes());
        area.extend(std::iter::once(0xC5).chain(std::iter::repeat_n(0x11, 255)));
        let mut out = (area.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&area);
        out
    }

    #[test]
    fn templates_in_both_forms_and_nothing_after() {
        let t = super::super::ak_template_bytes().unwrap();
        let a = parse_template(&t).unwrap();
        let mut sized = (t.len() as u16).to_be_bytes().to_vec();
        sized.extend_from_slice(&t);
        assert_eq!(parse_template(&sized).unwrap(), a);
        let mut trailing = t.clone();
        trailing.push(0);
        assert!(
            parse_template(&trailing)
                .unwrap_err()
                .to_string()
                .contains("after")
        );
        assert!(parse_template(&t[..t.len() - 1]).is_err());
        assert!(parse_template(&vec![0; MAX_TEMPLATE + 1]).is_err());
    }

    #[test]
    fn platform_keys_must_quote_safely() {
        let t = super::super::ak_template_bytes().unwrap();
        let key = platform_key(0x8100_0003, &public_of(&t)).unwrap();
        assert_eq!(key.rsa_exponent, 65537);
        assert_eq!(key.rsa_modulus.len(), 256);
        // objectAttributes at bytes 4..8 of the TPMT_PUBLIC.
        let with = |f: &dyn Fn(u32) -> u32| {
            let mut t = t.clone();
            let a = u32::from_be_bytes(t[4..8].try_into().unwrap());
            t[4..8].copy_from_slice(&f(a).to_be_bytes());
            platform_key(1, &public_of(&t))
        };
        assert!(
            with(&|a| a & !RESTRICTED)
                .unwrap_err()
                .contains("restricted")
        );
        assert!(with(&|a| a & !SIGN).unwrap_err().contains("sign"));
        assert!(with(&|a| a & !FIXED_TPM).unwrap_err().contains("fixedTPM"));
        assert!(with(&|a| a | DECRYPT).unwrap_err().contains("decrypt"));
        // Other attributes are the platform's (noDA here).
        assert!(with(&|a| a | 0x400).is_ok());
        let mut ecc = t.clone();
        ecc[0..2].copy_from_slice(&0x0023u16.to_be_bytes());
        assert!(
            platform_key(1, &public_of(&ecc))
                .unwrap_err()
                .contains("RSA")
        );
        let mut short = public_of(&t);
        short.truncate(short.len() - 1);
        assert!(platform_key(1, &short).is_err());
    }
}
