//! The attestation key (AK) and TPM2_Quote, as the Confidential Containers TPM attester and
//! the Trustee verifier expect them.
//!
//! The AK is the key the CoCo tooling creates with tss-esapi's `create_ak` (RSA-2048,
//! RSASSA-SHA256, nameAlg SHA-256, fixedTPM | fixedParent | sensitiveDataOrigin |
//! userWithAuth | restricted | sign, empty auth policy) and keeps at the persistent handle
//! 0x81010002, where the attester quotes with it and reads its public key for the evidence's
//! `ak_public` (a DER SubjectPublicKeyInfo). We make it a primary key of the endorsement
//! hierarchy with an empty `unique`, so the same vTPM (same endorsement seed) yields the same
//! key on every boot even if the persistent copy is lost.
//!
//! A persistent object found at that handle is used only if its public area is exactly that
//! template. The property that matters is `restricted`: a restricted signing key signs only
//! digests the TPM computed itself, never a caller's data that begins with
//! TPM_GENERATED_VALUE, so nobody can make it sign a fake TPMS_ATTEST. A key planted by the
//! host without it, or with another scheme, another size, a policy or an auth value we do not
//! know, is refused rather than quoted with.

use sha2::{Digest, Sha256, Sha384, Sha512};
use tpm2_protocol::basic::TpmUint32;
use tpm2_protocol::data::{
    Tpm2bData, Tpm2bDigest, Tpm2bPublic, Tpm2bPublicKeyRsa, Tpm2bSensitiveCreate, TpmAlgId,
    TpmaObject, TpmlPcrSelection, TpmsRsaParms, TpmsSchemeHash, TpmtPublic, TpmtRsaScheme,
    TpmtSigScheme, TpmtSymDefObject, TpmuAsymScheme, TpmuPublicId, TpmuPublicParms, TpmuSigScheme,
};
use tpm2_protocol::frame::{TpmCreatePrimaryCommand, TpmEvictControlCommand, TpmQuoteCommand};

use std::collections::BTreeSet;

use super::error::TPM_RC_HANDLE;
use super::verify::{self, AkPublic};
use super::{
    HashAlg, MAX_BUFFER, MAX_NAME, MAX_PCR, Reader, TPM_RH_ENDORSEMENT, TPM_RH_OWNER, Tpm,
    TpmError, Transport, describe, marshal_with_password, pcr_selection, session_response,
};

/// Where the CoCo attester looks for its AK (`TPM_DEFAULT_AK_HANDLE`), in the TCG range for
/// endorsement-hierarchy persistent objects.
pub const AK_HANDLE: u32 = 0x8101_0002;

/// TPM2_Quote's qualifyingData: the evidence's report data, at most 64 bytes.
pub const MAX_QUALIFYING_DATA: usize = 64;

const TPM_ALG_RSA: u16 = 0x0001;
const TPM_ALG_SHA256: u16 = 0x000B;
const TPM_ALG_SHA384: u16 = 0x000C;
const TPM_ALG_SHA512: u16 = 0x000D;
const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ALG_RSASSA: u16 = 0x0014;
const RSA_KEY_BITS: u16 = 2048;
const RSA_MODULUS_LEN: usize = RSA_KEY_BITS as usize / 8;
/// An exponent of 0 in TPMS_RSA_PARMS means the default, 2^16 + 1.
const RSA_DEFAULT_EXPONENT: u32 = 65537;
/// TPM_HT_TRANSIENT, the top byte of a transient object handle.
const HT_TRANSIENT: u32 = 0x80;

/// fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign.
fn ak_attributes() -> TpmaObject {
    TpmaObject::FIXED_TPM
        | TpmaObject::FIXED_PARENT
        | TpmaObject::SENSITIVE_DATA_ORIGIN
        | TpmaObject::USER_WITH_AUTH
        | TpmaObject::RESTRICTED
        | TpmaObject::SIGN_ENCRYPT
}

/// The AK template: what CreatePrimary gets, and what a persistent AK must be.
fn ak_template() -> TpmtPublic {
    TpmtPublic {
        object_type: TpmAlgId::Rsa,
        name_alg: TpmAlgId::Sha256,
        object_attributes: ak_attributes(),
        auth_policy: Tpm2bDigest::default(),
        parameters: TpmuPublicParms::Rsa(TpmsRsaParms {
            symmetric: TpmtSymDefObject::default(),
            scheme: TpmtRsaScheme {
                scheme: TpmAlgId::Rsassa,
                details: TpmuAsymScheme::Hash(TpmsSchemeHash {
                    hash_alg: TpmAlgId::Sha256,
                }),
            },
            key_bits: tpm2_protocol::basic::TpmUint16::new(RSA_KEY_BITS),
            exponent: TpmUint32::new(0),
        }),
        unique: TpmuPublicId::Rsa(Tpm2bPublicKeyRsa::default()),
    }
}

/// The marshalled TPMT_PUBLIC of the agent's AK template (unique empty): what a cloud stores
/// as an AK template (GCP's NV 0x01c10001 holds one of this form), and what tests provision.
pub fn ak_template_bytes() -> Result<Vec<u8>, TpmError> {
    use tpm2_protocol::{TpmMarshal, TpmWriter};
    let mut buf = [0u8; 128];
    let mut writer = TpmWriter::new(&mut buf);
    ak_template()
        .marshal(&mut writer)
        .map_err(|e| TpmError::Marshal(describe(e)))?;
    Ok(writer.as_bytes().to_vec())
}

/// The attestation key as the attester reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationKey {
    /// The persistent handle, [`AK_HANDLE`].
    pub handle: u32,
    /// The marshalled TPM2B_PUBLIC (size field included), as ReadPublic returns it.
    pub public: Vec<u8>,
    /// The RSA modulus, big-endian, 256 bytes.
    pub rsa_modulus: Vec<u8>,
    /// The public exponent (the template's 0 resolved to 65537).
    pub rsa_exponent: u32,
    /// DER SubjectPublicKeyInfo of the RSA key: the CoCo evidence's `ak_public`.
    pub spki_der: Vec<u8>,
}

impl AttestationKey {
    /// From a marshalled TPM2B_PUBLIC, which must be exactly our template plus a 2048-bit
    /// modulus; otherwise the reason it is not.
    fn from_public(handle: u32, public: &[u8]) -> Result<Self, String> {
        let area = public_area(public)?;
        let rsa_modulus = check_ak_public(area)?;
        let spki_der = rsa_spki_der(&rsa_modulus, RSA_DEFAULT_EXPONENT);
        Ok(AttestationKey {
            handle,
            public: public.to_vec(),
            rsa_modulus,
            rsa_exponent: RSA_DEFAULT_EXPONENT,
            spki_der,
        })
    }

    /// The key in the form [`verify::verify_quote`] takes.
    pub fn verifier_key(&self) -> AkPublic<'_> {
        AkPublic::Rsa {
            modulus: &self.rsa_modulus,
            exponent: self.rsa_exponent,
        }
    }
}

/// The TPMT_PUBLIC inside a marshalled TPM2B_PUBLIC, which must hold nothing else; otherwise
/// the reason, as the key checks report it.
pub(crate) fn public_area(public: &[u8]) -> Result<&[u8], String> {
    let mut outer = Reader {
        rest: public,
        offset: 0,
    };
    let area = outer
        .tpm2b(MAX_BUFFER, "TPM2B_PUBLIC")
        .map_err(|e| e.to_string())?;
    outer.finish().map_err(|e| e.to_string())?;
    Ok(area)
}

/// Checks a TPMT_PUBLIC field by field against the AK template and returns its modulus;
/// the error names the first field that differs.
fn check_ak_public(area: &[u8]) -> Result<Vec<u8>, String> {
    let mut r = Reader {
        rest: area,
        offset: 0,
    };
    let expect = |r: &mut Reader<'_>, name: &str, width: u8, expected: u32| {
        let found = match width {
            2 => r.u16(name).map(u32::from),
            _ => r.u32(name),
        }
        .map_err(|e| e.to_string())?;
        if found == expected {
            Ok(())
        } else {
            Err(format!("{name} is {found:#x}, expected {expected:#x}"))
        }
    };
    expect(&mut r, "type", 2, u32::from(TPM_ALG_RSA))?;
    expect(&mut r, "nameAlg", 2, u32::from(TPM_ALG_SHA256))?;
    expect(&mut r, "objectAttributes", 4, ak_attributes().bits())?;
    let policy = r.tpm2b(64, "authPolicy").map_err(|e| e.to_string())?;
    if !policy.is_empty() {
        return Err(format!("it has an authPolicy ({} bytes)", policy.len()));
    }
    expect(&mut r, "symmetric", 2, u32::from(TPM_ALG_NULL))?;
    expect(&mut r, "scheme", 2, u32::from(TPM_ALG_RSASSA))?;
    expect(&mut r, "scheme hash", 2, u32::from(TPM_ALG_SHA256))?;
    expect(&mut r, "keyBits", 2, u32::from(RSA_KEY_BITS))?;
    expect(&mut r, "exponent", 4, 0)?;
    let modulus = r
        .tpm2b(RSA_MODULUS_LEN, "unique")
        .map_err(|e| e.to_string())?;
    r.finish().map_err(|e| e.to_string())?;
    if modulus.len() != RSA_MODULUS_LEN || modulus.first().is_none_or(|&b| b & 0x80 == 0) {
        return Err(format!(
            "its modulus is {} bytes, not a {RSA_KEY_BITS}-bit number",
            modulus.len()
        ));
    }
    Ok(modulus.to_vec())
}

/// Checks that `name` is the TPM name of an object whose marshalled TPMT_PUBLIC (or
/// TPMS_NV_PUBLIC) is `area`: its `name_alg` followed by the hash of the area. Names in
/// algorithms we cannot compute (SHA-1, SM3) are left unchecked.
pub(crate) fn check_name(name_alg: u16, area: &[u8], name: &[u8]) -> Result<(), TpmError> {
    let Some((alg, digest)) = name.split_first_chunk::<2>() else {
        return Err(TpmError::Malformed(format!("name of {} bytes", name.len())));
    };
    if u16::from_be_bytes(*alg) != name_alg {
        return Err(TpmError::Malformed(format!(
            "name algorithm {:#06x} is not the object's nameAlg {name_alg:#06x}",
            u16::from_be_bytes(*alg)
        )));
    }
    let computed = match name_alg {
        TPM_ALG_SHA256 => Sha256::digest(area).to_vec(),
        TPM_ALG_SHA384 => Sha384::digest(area).to_vec(),
        TPM_ALG_SHA512 => Sha512::digest(area).to_vec(),
        _ => return Ok(()),
    };
    if computed != digest {
        return Err(TpmError::Malformed(
            "name is not the hash of the public area".to_string(),
        ));
    }
    Ok(())
}

/// [`check_name`] for a marshalled TPM2B_PUBLIC.
pub(crate) fn check_object_name(public: &[u8], name: &[u8]) -> Result<(), TpmError> {
    let area = public.get(2..).unwrap_or_default();
    let name_alg = area
        .get(2..4)
        .and_then(|b| b.first_chunk::<2>())
        .map(|b| u16::from_be_bytes(*b))
        .ok_or_else(|| TpmError::Malformed("public area without nameAlg".to_string()))?;
    check_name(name_alg, area, name)
}

/// A TPM2_Quote as the CoCo evidence carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// The TPMS_ATTEST bytes (the TPM2B_ATTEST's contents): the signed message.
    pub attest: Vec<u8>,
    /// The raw RSASSA-PKCS1-v1_5 signature over SHA-256(attest), 256 bytes.
    pub signature: Vec<u8>,
    /// The marshalled TPMT_SIGNATURE (sigAlg, hash, TPM2B signature).
    pub signature_raw: Vec<u8>,
}

impl<T: Transport> Tpm<T> {
    /// The attestation key: the persistent object at [`AK_HANDLE`] if it is exactly our
    /// template (anything else there is refused), or else a new one made with CreatePrimary
    /// in the endorsement hierarchy, made persistent at [`AK_HANDLE`] with EvictControl
    /// (empty owner auth) and its transient copy flushed.
    pub fn attestation_key(&mut self) -> Result<AttestationKey, TpmError> {
        match self.read_public(AK_HANDLE) {
            Ok(public) => {
                return AttestationKey::from_public(AK_HANDLE, &public).map_err(|reason| {
                    TpmError::ForeignKey {
                        handle: AK_HANDLE,
                        reason,
                    }
                    .in_command("ReadPublic")
                });
            }
            Err(e) if e.response_base() == Some(TPM_RC_HANDLE) => {}
            Err(e) => return Err(e.in_command("ReadPublic")),
        }
        let (transient, public) = self
            .create_primary(ak_template())
            .map_err(|e| e.in_command("CreatePrimary"))?;
        // Checked before it takes the persistent slot: a TPM that did not follow the
        // template gets no AK.
        let result = AttestationKey::from_public(AK_HANDLE, &public)
            .map_err(|reason| {
                TpmError::Malformed(format!("the new key is not the template: {reason}"))
                    .in_command("CreatePrimary")
            })
            .and_then(|key| {
                self.evict_control(transient, AK_HANDLE)
                    .map_err(|e| e.in_command("EvictControl"))?;
                Ok(key)
            });
        let flushed = self.flush_context(transient);
        let key = result?;
        flushed?;
        Ok(key)
    }

    /// TPM2_Quote of `pcrs` in the SHA-256 bank with `ak`, scheme RSASSA-SHA256, over
    /// `qualifying_data` (at most 64 bytes: the report data the verifier's nonce is bound
    /// into). The answer is checked against the request before it is returned: a quote of
    /// other PCRs or other data, or a signature of another kind or size, is an error.
    pub fn quote(
        &mut self,
        ak: &AttestationKey,
        qualifying_data: &[u8],
        pcrs: &[u32],
    ) -> Result<Quote, TpmError> {
        self.do_quote(ak, qualifying_data, pcrs)
            .map_err(|e| e.in_command("Quote"))
    }

    /// TPM2_CreatePrimary in the endorsement hierarchy from `template`: the transient handle
    /// and the marshalled TPM2B_PUBLIC, whose name the answer must match. Both the agent's AK
    /// and a platform's AK template (platform_ak.rs) are made this way.
    pub(crate) fn create_primary(
        &mut self,
        template: TpmtPublic,
    ) -> Result<(u32, Vec<u8>), TpmError> {
        let command = marshal_with_password(&TpmCreatePrimaryCommand {
            handles: [TpmUint32::new(TPM_RH_ENDORSEMENT)],
            in_sensitive: Tpm2bSensitiveCreate::default(),
            in_public: Tpm2bPublic { inner: template },
            outside_info: Tpm2bData::default(),
            creation_pcr: TpmlPcrSelection::new(),
        })?;
        let frame = self.execute_authorized_slow(&command)?;
        let (handles, mut r) = session_response(&frame, 1)?;
        let handle = handles
            .first()
            .copied()
            .ok_or_else(|| TpmError::Malformed("no object handle".to_string()))?;
        if handle >> 24 != HT_TRANSIENT {
            return Err(TpmError::Malformed(format!(
                "object handle {handle:#010x} is not a transient handle"
            )));
        }
        let public = (|| {
            let public = r.tpm2b_whole(MAX_BUFFER, "outPublic")?;
            let _creation_data = r.tpm2b(MAX_BUFFER, "creationData")?;
            let _creation_hash = r.tpm2b(64, "creationHash")?;
            let _ticket_tag = r.u16("creationTicket.tag")?;
            let _ticket_hierarchy = r.u32("creationTicket.hierarchy")?;
            let _ticket_digest = r.tpm2b(64, "creationTicket.digest")?;
            let name = r.tpm2b(MAX_NAME, "name")?;
            r.finish()?;
            check_object_name(public, name)?;
            Ok(public.to_vec())
        })();
        match public {
            Ok(public) => Ok((handle, public)),
            Err(e) => {
                // Best effort: the object exists even though its answer did not parse.
                let _ = self.flush_context(handle);
                Err(e)
            }
        }
    }

    /// TPM2_EvictControl (owner, empty password): the transient `object` made persistent at
    /// `persistent`. The agent does this only for its own AK; tests use it to play a cloud
    /// that provisions one (Azure's 0x81000003).
    pub fn make_persistent(&mut self, object: u32, persistent: u32) -> Result<(), TpmError> {
        self.evict_control(object, persistent)
            .map_err(|e| e.in_command("EvictControl"))
    }

    fn evict_control(&mut self, object: u32, persistent: u32) -> Result<(), TpmError> {
        let command = marshal_with_password(&TpmEvictControlCommand {
            handles: [TpmUint32::new(TPM_RH_OWNER), TpmUint32::new(object)],
            persistent_handle: TpmUint32::new(persistent),
        })?;
        let frame = self.execute_authorized(&command)?;
        let (_, params) = session_response(&frame, 0)?;
        params.finish()
    }

    fn do_quote(
        &mut self,
        ak: &AttestationKey,
        qualifying_data: &[u8],
        pcrs: &[u32],
    ) -> Result<Quote, TpmError> {
        if qualifying_data.len() > MAX_QUALIFYING_DATA {
            return Err(TpmError::InvalidArgument(format!(
                "qualifying data of {} bytes, at most {MAX_QUALIFYING_DATA}",
                qualifying_data.len()
            )));
        }
        if pcrs.is_empty() {
            return Err(TpmError::InvalidArgument("no PCRs to quote".to_string()));
        }
        if let Some(&pcr) = pcrs.iter().find(|&&pcr| pcr > MAX_PCR) {
            return Err(TpmError::PcrOutOfRange { pcr });
        }
        let wanted: BTreeSet<u32> = pcrs.iter().copied().collect();
        let marshal_err = |e| TpmError::Marshal(describe(e));
        let command = marshal_with_password(&TpmQuoteCommand {
            handles: [TpmUint32::new(ak.handle)],
            qualifying_data: Tpm2bData::try_from(qualifying_data).map_err(marshal_err)?,
            in_scheme: TpmtSigScheme {
                scheme: TpmAlgId::Rsassa,
                details: TpmuSigScheme::Hash(TpmsSchemeHash {
                    hash_alg: TpmAlgId::Sha256,
                }),
            },
            pcr_select: pcr_selection(HashAlg::Sha256, &wanted)?,
        })?;
        let frame = self.execute_authorized(&command)?;
        let (_, mut r) = session_response(&frame, 0)?;
        let attest = r.tpm2b(MAX_BUFFER, "quoted")?;
        let signature_raw = r.rest;
        let signature = verify::read_rsassa_signature(&mut r)?;
        r.finish()?;
        if signature.len() != ak.rsa_modulus.len() {
            return Err(TpmError::Malformed(format!(
                "signature of {} bytes from a {}-byte key",
                signature.len(),
                ak.rsa_modulus.len()
            )));
        }
        let parsed = verify::parse_attest(attest)?;
        if parsed.extra_data != qualifying_data {
            return Err(TpmError::Malformed(
                "the quote carries other extraData than the qualifying data sent".to_string(),
            ));
        }
        let expected = [verify::PcrSelection {
            hash: HashAlg::Sha256.tpm_alg_id(),
            pcrs: wanted.into_iter().collect(),
        }];
        if parsed.pcr_select != expected {
            return Err(TpmError::Malformed(format!(
                "the quote selects {:?}, asked for {:?}",
                parsed.pcr_select, expected
            )));
        }
        Ok(Quote {
            attest: attest.to_vec(),
            signature: signature.to_vec(),
            signature_raw: signature_raw.to_vec(),
        })
    }
}

/// DER SubjectPublicKeyInfo of an RSA public key (RFC 3279 rsaEncryption, NULL parameters,
/// RFC 8017 RSAPublicKey), the form CoCo's `ak_public` and the rsa crate use.
pub fn rsa_spki_der(modulus: &[u8], exponent: u32) -> Vec<u8> {
    /// 1.2.840.113549.1.1.1 rsaEncryption.
    const RSA_ENCRYPTION: [u8; 9] = [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
    let rsa_public_key = der_tlv(
        0x30,
        &[der_uint(modulus), der_uint(&exponent.to_be_bytes())].concat(),
    );
    let algorithm = der_tlv(
        0x30,
        &[der_tlv(0x06, &RSA_ENCRYPTION), der_tlv(0x05, &[])].concat(),
    );
    let mut bits = vec![0u8]; // no unused bits
    bits.extend_from_slice(&rsa_public_key);
    der_tlv(0x30, &[algorithm, der_tlv(0x03, &bits)].concat())
}

/// A DER INTEGER holding the unsigned big-endian `value`: minimal, and with a leading zero
/// byte when the top bit is set so it stays positive.
fn der_uint(value: &[u8]) -> Vec<u8> {
    let start = value.iter().position(|&b| b != 0).unwrap_or(value.len());
    let digits = value.get(start..).unwrap_or_default();
    let mut content = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_none_or(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(digits);
    der_tlv(0x02, &content)
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        let significant = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}
