//! How this VM was booted, judged from what the firmware and the systemd stub measured, so a
//! production agent never runs from a boot chain that nothing measured.
//!
//! A confidential VM boots UEFI firmware that measures every image it starts into PCR 4 (the
//! UKI, then the kernel the stub loads), the systemd stub measures the UKI's sections (kernel,
//! os-release, command line, initrd) into PCR 11, and measures anything that did not come from
//! the UKI itself into PCR 12: a command line the host passed as load options, credentials,
//! system extensions. So, in the SHA-256 bank:
//! - PCR 11 all zero: no stub measured a UKI. A direct kernel boot (`-kernel/-initrd/-append`)
//!   or a boot loader of the host's choosing: nothing vouches for the kernel, the initrd (this
//!   agent) or the command line (`roothash=`), and a host can wrap the agent in its own initrd.
//! - PCR 12 not zero: the stub measured something the image did not contain. The host replaced
//!   the measured command line, or added credentials or extensions.
//!
//! Production refuses both; debug says so and carries on. The KBS checks the same registers
//! (and replays the firmware's log) against the values `cvmctl measure` predicts; this check
//! is the agent refusing early and saying why, not the security boundary.

use std::fmt;

use crate::cmdline::Mode;
use cvm_text::hex;

/// PCR the systemd stub measures the UKI's sections into.
pub const PCR_UKI: u32 = 11;
/// PCR the systemd stub measures overrides into (command line, credentials, sysexts).
pub const PCR_OVERRIDES: u32 = 12;

/// The firmware's event log, as the kernel exposes it (TCG PC Client crypto-agile format).
pub const FIRMWARE_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BootChainError {
    #[error(
        "PCR 11 is zero: this VM was not booted from a UKI through the systemd stub (a direct \
         kernel boot measures neither the kernel, the initrd nor the command line); production \
         boots only a measured UKI"
    )]
    NotUki,
    #[error(
        "PCR 12 is {0}, not zero: the boot stub measured something the UKI does not contain (a \
         command line the host passed, credentials or a system extension); production boots \
         only the UKI's own command line"
    )]
    Overridden(String),
    #[error("PCR {pcr} is {len} bytes, not a SHA-256 value")]
    BadLength { pcr: u32, len: usize },
}

/// What the boot chain looks like from inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootChain {
    /// A UKI started by measuring firmware; PCR 11 is its section measurements.
    Uki { pcr11: Vec<u8> },
    /// Nothing measured a UKI (PCR 11 is zero).
    Unmeasured,
    /// A UKI whose command line or extras the host overrode (PCR 12 is not zero).
    Overridden { pcr11: Vec<u8>, pcr12: Vec<u8> },
}

impl fmt::Display for BootChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootChain::Uki { pcr11 } => write!(
                f,
                "a UKI through the systemd stub (PCR 11 sha256={}, PCR 12 zero)",
                hex::encode(pcr11)
            ),
            BootChain::Unmeasured => f.write_str(
                "not from a UKI: PCR 11 is zero, nothing measured kernel, initrd or command line",
            ),
            BootChain::Overridden { pcr11, pcr12 } => write!(
                f,
                "a UKI with host overrides (PCR 11 sha256={}, PCR 12 sha256={})",
                hex::encode(pcr11),
                hex::encode(pcr12)
            ),
        }
    }
}

fn check_len(pcr: u32, value: &[u8]) -> Result<(), BootChainError> {
    if value.len() == 32 {
        Ok(())
    } else {
        Err(BootChainError::BadLength {
            pcr,
            len: value.len(),
        })
    }
}

/// Classifies the boot from the SHA-256 values of PCR 11 and PCR 12.
pub fn classify(pcr11: &[u8], pcr12: &[u8]) -> Result<BootChain, BootChainError> {
    check_len(PCR_UKI, pcr11)?;
    check_len(PCR_OVERRIDES, pcr12)?;
    let zero = |v: &[u8]| v.iter().all(|&b| b == 0);
    Ok(if zero(pcr11) {
        BootChain::Unmeasured
    } else if !zero(pcr12) {
        BootChain::Overridden {
            pcr11: pcr11.to_vec(),
            pcr12: pcr12.to_vec(),
        }
    } else {
        BootChain::Uki {
            pcr11: pcr11.to_vec(),
        }
    })
}

/// The production rule: only an unmodified, measured UKI boot goes on.
pub fn require(chain: &BootChain, mode: Mode) -> Result<(), BootChainError> {
    if mode == Mode::Debug {
        return Ok(());
    }
    match chain {
        BootChain::Uki { .. } => Ok(()),
        BootChain::Unmeasured => Err(BootChainError::NotUki),
        BootChain::Overridden { pcr12, .. } => Err(BootChainError::Overridden(hex::encode(pcr12))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_takes_only_an_unmodified_uki() {
        let zero = [0u8; 32];
        let some = [7u8; 32];
        let uki = classify(&some, &zero).unwrap();
        assert_eq!(
            uki,
            BootChain::Uki {
                pcr11: some.to_vec()
            }
        );
        assert_eq!(require(&uki, Mode::Production), Ok(()));

        let direct = classify(&zero, &zero).unwrap();
        assert_eq!(direct, BootChain::Unmeasured);
        assert_eq!(
            require(&direct, Mode::Production),
            Err(BootChainError::NotUki)
        );
        assert_eq!(require(&direct, Mode::Debug), Ok(()));

        let overridden = classify(&some, &[1u8; 32]).unwrap();
        assert!(matches!(overridden, BootChain::Overridden { .. }));
        let err = require(&overridden, Mode::Production).unwrap_err();
        assert!(err.to_string().contains(&"01".repeat(32)), "{err}");
        assert_eq!(require(&overridden, Mode::Debug), Ok(()));

        // An override without a UKI is still "not a UKI": PCR 11 decides first.
        assert_eq!(classify(&zero, &some).unwrap(), BootChain::Unmeasured);
        assert_eq!(
            classify(&some[..20], &zero),
            Err(BootChainError::BadLength { pcr: 11, len: 20 })
        );
    }
}
