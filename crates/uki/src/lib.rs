//! Reproducible Unified Kernel Images and predictions of the TPM PCRs that booting one
//! through OVMF extends.
//!
//! * [`pe`]: a bounded PE32/PE32+ reader, the Authenticode digest (what UEFI measures into
//!   PCR 4) and the PE checksum;
//! * [`uki`]: builds a UKI from the systemd-stub 252 and its payload sections, byte for byte
//!   reproducibly;
//! * [`predict`]: PCRs 4, 9, 11 and 12 as OVMF (edk2-stable202211), systemd-stub 252 and the
//!   Linux 6.1 EFI stub extend them, and the list of expected events;
//! * [`eventlog`]: a bounded parser and replayer of the firmware's crypto-agile TPM event log,
//!   so a verifier can hold a log against the prediction ([`predict::first_mismatch`]); it is
//!   `cvm-tcglog`'s, re-exported, the one parser the dev KBS and the CCEL use too ([`hash`]
//!   likewise).
//!
//! Nothing here reads the clock or the environment; all parsing returns errors, never panics.

#![forbid(unsafe_code)]

pub use cvm_tcglog::{eventlog, hash};
pub mod pe;
pub mod predict;
pub mod uki;

pub use hash::HashAlg;
pub use pe::{PeError, authenticode};
pub use predict::{BootPath, BootPcrs, ExpectedEvent, boot_pcrs};
pub use uki::{Uki, UkiError, UkiInputs};
