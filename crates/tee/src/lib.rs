//! Hardware evidence: parsing and verification of what a TEE produces.
//!
//! One module per format, each with its own error type. Every parser takes hostile bytes:
//! lengths are checked before use, nothing panics, and parsing alone trusts nothing.
//! Verification needs keys: the vendors' roots are compiled in (`certs/README.md`), the rest
//! (VCEK, PCK chain, AK) comes with the evidence and is checked against those roots.
//!
//! Guest side: [`tsm`] (configfs-tsm reports) and [`detect`]. Host side (the dev KBS and
//! `cvmctl`): the `verify*` functions. All of it is pure Rust, so the static agent links it.
#![forbid(unsafe_code)]

pub mod azure;
pub mod binding;
mod bytes;
pub mod ccel;
pub mod detect;
mod encoding;
pub mod snp;
pub mod tdx;
pub mod tpm;
pub mod tpm_quote;
pub mod tsm;
pub mod x509;

/// The names evidence code and its tests have always used for [`cvm_text::hex`].
pub use cvm_text::hex::{decode as unhex, encode as hex};
pub use detect::{Detection, TeeKind, detect};
pub use tsm::{TsmReport, tsm_report};
