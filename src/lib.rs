//! cvm-agent: the PID 1 of a confidential VM. This crate is what the guest runs: the stages
//! (`agent`) and the PID 1 machinery around them. Formats and protocols the guest shares with
//! the host are library crates of their own, re-exported here under the names the stages use;
//! the host's tools (`cvmctl`, the dev KBS, the image builders) are crates this one does not
//! depend on. `make tcb` lists everything the static agent is built from.

pub mod agent;
pub mod blockdev;
pub mod boot;
pub mod boot_chain;
pub mod cloud;
pub mod cloud_disk;
pub mod cmdline;
pub mod debug_shell;
pub mod dm;
pub mod evidence;
pub mod kbs_client;
pub mod logging;
pub mod net;
pub mod pid1;
pub mod registry;
pub mod result;
pub mod secrets;
pub mod stage;
pub mod state;
pub mod switchroot;
pub mod verity_root;
pub mod workload;

/// GPT, dm-verity and LUKS2 (`cvm-disk`).
pub use cvm_disk::{gpt, luks2, verity};
/// The init-data, launch.toml and the image launch policy (`cvm-initdata`).
pub use cvm_initdata as initdata;
/// The KBS protocol: messages, report data, JWE, the TEE key (`cvm-kbs-protocol`).
pub use cvm_kbs_protocol as kbs;
/// Kernel modules: indexes and the loader (`cvm-kmod`).
pub use cvm_kmod as kmod;
/// Events, the agent's event log, PCR/RTMR replay, os-release (`cvm-measure`).
pub use cvm_measure as measure;
/// OCI references, manifests, layouts and unpacking (`cvm-oci`).
pub use cvm_oci as oci;
/// TEE evidence: SNP, TDX, CCEL, Azure, TPM quotes (`cvm-tee`).
pub use cvm_tee as tee;
/// Lower-case hex (`cvm-text`).
pub use cvm_text::hex;
/// The TPM 2.0 client (`cvm-tpm`).
pub use cvm_tpm as tpm;
