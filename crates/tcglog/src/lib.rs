//! The TCG crypto-agile event log, the one parser of it in this workspace.
//!
//! Why one crate: three readers need the same bytes read the same way — `cvm-uki` holds a
//! firmware log against its PCR 4/9/11/12 predictions, the dev KBS replays the log a `tpm`
//! guest sends against the quoted PCRs, and `cvm-tee`'s CCEL (TDX) is the same format with
//! measurement-register indexes in place of PCR numbers. A second parser would be a second
//! place for a bounds bug, and two parsers that disagree on one log are worse than either.
//!
//! * [`eventlog`]: the bounded parser, a writer (for tests and fixtures) and the replay;
//! * [`hash`]: the PCR banks' algorithms, their TPM_ALG_IDs and the extend operation.
//!
//! No I/O, no clock; every malformed input is an error, never a panic.

#![forbid(unsafe_code)]

pub mod eventlog;
pub mod hash;

pub use eventlog::{Event, EventLog, EventLogError, SpecId};
pub use hash::HashAlg;
