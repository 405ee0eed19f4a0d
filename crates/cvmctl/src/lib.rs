//! The commands of `cvmctl` that are more than a call into a library crate; `main.rs` parses the
//! command line and dispatches. Host only.
#![forbid(unsafe_code)]

pub mod bench;
pub mod measure;
pub mod relay;
pub mod swtpm;
pub mod uki;
