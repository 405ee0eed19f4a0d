//! Host side: the AK of a vTPM that swtpm keeps in a state directory, provisioned before the
//! VM's first boot (`cvmctl tpm-ak`).
//!
//! A verifier must know the AK before it trusts a quote: Trustee's `tpm` verifier accepts only
//! the AKs in its `trusted_ak_keys_dir`, and so does the dev KBS (`trusted_aks`). On a cloud the
//! provider publishes the vTPM's AK (GCP's `getShieldedInstanceIdentity`, the EK/AK certificates
//! of Azure and AWS); for QEMU the host plays the provider: it starts swtpm on the state
//! directory the VM will use, creates the AK exactly as the agent does (same template, same
//! persistent handle, [`cvm_tpm::ak`]), and hands its public key to the KBS operator. The
//! agent then finds that AK at the handle and quotes with it.
//!
//! This is trust in whoever runs swtpm: a host that provisions the vTPM can also sign any PCR
//! values with that AK. That is the limit of a host-run vTPM (docs/threat-model.md); a
//! hardware-rooted vTPM (SNP SVSM, Azure's paravisor, a cloud's endorsed vTPM) removes it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use cvm_tpm::TpmError;
use cvm_tpm::swtpm::{Output, Swtpm};

#[derive(Debug, thiserror::Error)]
pub enum SwtpmError {
    #[error("cannot create the TPM state directory {path}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Launch(#[from] cvm_tpm::swtpm::SwtpmError),
    #[error("the vTPM in {state} gives no AK")]
    Ak {
        state: PathBuf,
        #[source]
        source: TpmError,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The AK of a provisioned vTPM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedAk {
    /// DER SubjectPublicKeyInfo: the evidence's `ak_public`.
    pub spki_der: Vec<u8>,
}

impl ProvisionedAk {
    /// Lower-case hex SHA-256 of the DER SPKI: the dev KBS's `trusted_aks` entry and the hash
    /// Trustee computes of each key in its `trusted_ak_keys_dir`.
    pub fn sha256_hex(&self) -> String {
        cvm_text::hex::encode(&Sha256::digest(&self.spki_der))
    }

    /// PEM `PUBLIC KEY`: a file for Trustee's `trusted_ak_keys_dir` (named `*.pub`).
    pub fn pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.spki_der);
        let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push('\n');
        }
        out.push_str("-----END PUBLIC KEY-----\n");
        out
    }
}

/// Starts swtpm on `state` (created if missing), makes sure the AK exists at the agent's
/// persistent handle — found if a previous run made it, created otherwise — and returns it.
pub fn provision_ak(state: &Path) -> Result<ProvisionedAk, SwtpmError> {
    std::fs::create_dir_all(state).map_err(|source| SwtpmError::StateDir {
        path: state.to_path_buf(),
        source,
    })?;
    let (_swtpm, mut tpm) = Swtpm::start(Path::new("swtpm"), state, Output::Pipe)?;
    let ak = tpm.attestation_key().map_err(|source| SwtpmError::Ak {
        state: state.to_path_buf(),
        source,
    })?;
    Ok(ProvisionedAk {
        spki_der: ak.spki_der,
    })
}

/// `cvmctl tpm-ak`.
#[derive(Debug, clap::Args)]
pub struct TpmAkArgs {
    /// swtpm's state directory, as qemu/boot.sh --tpm-state will use it (created if missing).
    #[arg(long)]
    pub tpm_state: PathBuf,
    /// Also write the AK as a PEM public key (for Trustee's trusted_ak_keys_dir: name it *.pub).
    #[arg(long)]
    pub pem: Option<PathBuf>,
}

/// Prints the AK's SHA-256 (hex) on stdout; writes the PEM when asked.
pub fn run(args: &TpmAkArgs) -> Result<(), SwtpmError> {
    let ak = provision_ak(&args.tpm_state)?;
    if let Some(path) = &args.pem {
        std::fs::write(path, ak.pem()).map_err(|source| SwtpmError::Write {
            path: path.clone(),
            source,
        })?;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", ak.sha256_hex());
    Ok(())
}
