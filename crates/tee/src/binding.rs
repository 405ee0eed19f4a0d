//! The agent's own check of the init-data binding on SNP and TDX (the design's "SNP — compare
//! with HOST_DATA; TDX — compare with MRCONFIGID. A mismatch stops the boot."): the host sets
//! HOST_DATA / MRCONFIGID at launch, and the hardware puts it in every report. An agent that
//! goes on with init-data the register does not name would measure and act on a configuration
//! no KBS can tie to this launch; stopping at the measure stage says so before anything is
//! fetched for it.
//!
//! The comparison is a pure function of the report bytes (configfs-tsm's outblob: the SNP
//! ATTESTATION_REPORT or the TDX quote) and the init-data, so it is tested on real evidence.
//! The report's signature is not checked here: the hardware made it for this guest through the
//! kernel, and the KBS checks it anyway; this is about the agent not running a configuration
//! the launch did not name.

use super::detect::TeeKind;
use super::snp::{AttestationReport, SnpError};
use super::tdx::{Quote, TdxError};
use cvm_initdata::InitData;
use cvm_text::hex;

#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    #[error("the SNP report from configfs-tsm cannot be parsed")]
    Snp(#[source] SnpError),
    #[error("the TDX quote from configfs-tsm cannot be parsed")]
    Tdx(#[source] TdxError),
    #[error(
        "{register} is {got}, but the init-data's digest gives {want}: the VM was launched for another init-data"
    )]
    Mismatch {
        register: &'static str,
        got: String,
        want: String,
    },
    #[error(
        "{register} is {got}, but this boot has no init-data: the VM was launched for an init-data it did not get"
    )]
    NoInitData { register: &'static str, got: String },
}

/// Which register binds init-data on `kind`, if the agent checks one itself (the vTPM kinds
/// bind it through PCR 8, which the agent extends).
pub fn register(kind: TeeKind) -> Option<&'static str> {
    match kind {
        TeeKind::Snp => Some("the SNP HOST_DATA"),
        TeeKind::Tdx => Some("the TDX MRCONFIGID"),
        TeeKind::Tpm | TeeKind::AzSnpVtpm | TeeKind::AzTdxVtpm => None,
    }
}

/// Checks the binding register in `outblob` (a configfs-tsm report of `kind`) against
/// `initdata`. Without init-data the register must be all zeros: a launch that names a
/// configuration the agent did not get is not one to run. Kinds without such a register
/// (see [`register`]) pass.
pub fn check(
    kind: TeeKind,
    outblob: &[u8],
    initdata: Option<&InitData>,
) -> Result<(), BindingError> {
    match launch_register(kind, outblob)? {
        Some((register, got)) => compare(register, &got, initdata.map(|i| want(kind, i))),
        None => Ok(()),
    }
}

/// The same check where SNP or TDX is only the additional evidence (a cloud's vTPM is the
/// primary, and the cloud gives the owner no way to set the register): an all-zero register
/// passes, since init-data is then bound through PCR 8; a set one must name this init-data.
/// Without this, a host that launched the VM for one init-data could make the agent take
/// another simply by claiming a cloud vendor and attaching a vTPM.
pub fn check_additional(
    kind: TeeKind,
    outblob: &[u8],
    initdata: Option<&InitData>,
) -> Result<RegisterState, BindingError> {
    match launch_register(kind, outblob)? {
        Some((register, got)) if got.iter().any(|&b| b != 0) => {
            compare(register, &got, initdata.map(|i| want(kind, i)))?;
            Ok(RegisterState::Matches)
        }
        _ => Ok(RegisterState::Unset),
    }
}

/// What [`check_additional`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterState {
    /// All zeros: the launch named no init-data (the clouds' case).
    Unset,
    /// Set, and equal to this boot's init-data digest.
    Matches,
}

/// The launch-time register of `kind`'s report (its name and value); None for the kinds
/// that bind init-data through PCR 8.
fn launch_register(
    kind: TeeKind,
    outblob: &[u8],
) -> Result<Option<(&'static str, Vec<u8>)>, BindingError> {
    let Some(register) = register(kind) else {
        return Ok(None);
    };
    let value = match kind {
        TeeKind::Snp => AttestationReport::parse(outblob)
            .map_err(BindingError::Snp)?
            .host_data
            .to_vec(),
        _ => Quote::parse(outblob)
            .map_err(BindingError::Tdx)?
            .body
            .mr_config_id
            .to_vec(),
    };
    Ok(Some((register, value)))
}

/// What the register must hold for `initdata`.
fn want(kind: TeeKind, initdata: &InitData) -> Vec<u8> {
    match kind {
        TeeKind::Snp => initdata.host_data().to_vec(),
        _ => initdata.mrconfigid().to_vec(),
    }
}

fn compare(register: &'static str, got: &[u8], want: Option<Vec<u8>>) -> Result<(), BindingError> {
    match want {
        Some(want) if want != got => Err(BindingError::Mismatch {
            register,
            got: hex::encode(got),
            want: hex::encode(&want),
        }),
        Some(_) => Ok(()),
        None if got.iter().any(|&b| b != 0) => Err(BindingError::NoInitData {
            register,
            got: hex::encode(got),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> Vec<u8> {
        let p = format!(
            "{}/tests/fixtures/{path}",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../..")
        );
        std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    fn initdata(text: &str) -> InitData {
        InitData::parse(text.as_bytes()).unwrap()
    }

    /// An init-data with no launch.toml: only its digest matters here.
    fn some_initdata(algorithm: &str) -> InitData {
        initdata(&format!(
            "version = \"0.1.0\"\nalgorithm = \"{algorithm}\"\n[data]\n\"note.txt\" = \"x\"\n"
        ))
    }

    #[test]
    fn snp_host_data_of_the_real_report() {
        let raw = fixture("snp/test-report.bin");
        let report = AttestationReport::parse(&raw).unwrap();
        let other = some_initdata("sha256");
        assert_ne!(report.host_data, other.host_data());
        let err = check(TeeKind::Snp, &raw, Some(&other)).unwrap_err();
        assert!(
            matches!(&err, BindingError::Mismatch { register: "the SNP HOST_DATA", got, want }
                if *got == hex::encode(&report.host_data) && *want == hex::encode(&other.host_data())),
            "{err}"
        );
        // The same report with HOST_DATA set to the init-data's digest (the report is not
        // re-signed: the agent's check is on the register, the KBS checks the signature).
        let mut bound = raw.clone();
        bound[0xC0..0xE0].copy_from_slice(&other.host_data());
        check(TeeKind::Snp, &bound, Some(&other)).unwrap();
        // No init-data: a zero HOST_DATA passes, a set one does not.
        let mut zero = raw.clone();
        zero[0xC0..0xE0].fill(0);
        check(TeeKind::Snp, &zero, None).unwrap();
        assert!(matches!(
            check(TeeKind::Snp, &bound, None),
            Err(BindingError::NoInitData { .. })
        ));
        assert!(matches!(
            check(TeeKind::Snp, &raw[..100], Some(&other)),
            Err(BindingError::Snp(_))
        ));
    }

    #[test]
    fn tdx_mrconfigid_of_the_real_quotes() {
        for name in ["tdx/tdx_quote_4.dat", "tdx/tdx_quote_5.dat"] {
            let raw = fixture(name);
            let quote = Quote::parse(&raw).unwrap();
            for algorithm in ["sha256", "sha384", "sha512"] {
                let other = some_initdata(algorithm);
                let err = check(TeeKind::Tdx, &raw, Some(&other)).unwrap_err();
                assert!(
                    matches!(&err, BindingError::Mismatch { register: "the TDX MRCONFIGID", got, .. }
                        if *got == hex::encode(&quote.body.mr_config_id)),
                    "{name}: {err}"
                );
                let mut bound = raw.clone();
                let at = mrconfigid_offset(&raw, &quote.body.mr_config_id);
                bound[at..at + 48].copy_from_slice(&other.mrconfigid());
                check(TeeKind::Tdx, &bound, Some(&other)).unwrap();
            }
            // The fixtures' MRCONFIGID is all zeros: a launch without init-data.
            if quote.body.mr_config_id == [0; 48] {
                check(TeeKind::Tdx, &raw, None).unwrap();
            } else {
                assert!(check(TeeKind::Tdx, &raw, None).is_err());
            }
            assert!(matches!(
                check(TeeKind::Tdx, &raw[..200], None),
                Err(BindingError::Tdx(_))
            ));
        }
        // The vTPM kinds bind through PCR 8: nothing to compare here.
        check(TeeKind::Tpm, b"anything", None).unwrap();
        assert_eq!(register(TeeKind::AzTdxVtpm), None);
    }

    /// As additional evidence: a zero register passes with or without init-data; a set one
    /// must name this boot's init-data, and with none it refuses.
    #[test]
    fn additional_evidence_register_zero_passes_set_must_match() {
        let raw = fixture("snp/test-report.bin");
        let data = some_initdata("sha256");
        let mut zero = raw.clone();
        zero[0xC0..0xE0].fill(0);
        assert_eq!(
            check_additional(TeeKind::Snp, &zero, Some(&data)).unwrap(),
            RegisterState::Unset
        );
        assert_eq!(
            check_additional(TeeKind::Snp, &zero, None).unwrap(),
            RegisterState::Unset
        );
        let mut bound = raw.clone();
        bound[0xC0..0xE0].copy_from_slice(&data.host_data());
        assert_eq!(
            check_additional(TeeKind::Snp, &bound, Some(&data)).unwrap(),
            RegisterState::Matches
        );
        // Launched for another init-data (the host set HOST_DATA, then fed this one).
        let other = some_initdata("sha384");
        assert!(matches!(
            check_additional(TeeKind::Snp, &bound, Some(&other)),
            Err(BindingError::Mismatch { .. })
        ));
        assert!(matches!(
            check_additional(TeeKind::Snp, &bound, None),
            Err(BindingError::NoInitData { .. })
        ));
        assert!(check_additional(TeeKind::Snp, &raw[..64], None).is_err());
        // TDX: the fixtures' MRCONFIGID is zero; set it and it must match.
        let raw = fixture("tdx/tdx_quote_4.dat");
        let quote = Quote::parse(&raw).unwrap();
        assert_eq!(
            check_additional(TeeKind::Tdx, &raw, Some(&data)).unwrap(),
            RegisterState::Unset
        );
        let at = mrconfigid_offset(&raw, &quote.body.mr_config_id);
        let mut set = raw.clone();
        set[at..at + 48].copy_from_slice(&other.mrconfigid());
        assert!(check_additional(TeeKind::Tdx, &set, Some(&data)).is_err());
        assert_eq!(
            check_additional(TeeKind::Tdx, &set, Some(&other)).unwrap(),
            RegisterState::Matches
        );
    }

    /// MRCONFIGID's offset in a v4/v5 quote: header 48, then (v5) type and size, then the TD
    /// report body, where MRCONFIGID follows TEE_TCB_SVN, MRSEAM, MRSIGNERSEAM,
    /// SEAMATTRIBUTES, TDATTRIBUTES, XFAM and MRTD (16+48+48+8+8+8+48 = 184).
    fn mrconfigid_offset(raw: &[u8], value: &[u8; 48]) -> usize {
        let version = u16::from_le_bytes([raw[0], raw[1]]);
        let at = if version == 5 { 48 + 6 + 184 } else { 48 + 184 };
        assert_eq!(&raw[at..at + 48], value);
        at
    }
}
