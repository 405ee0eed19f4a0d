//! cvm-agent: the PID 1 of a confidential VM, and the host tool `cvmctl` that builds, predicts and
//! boots what the agent runs in. Modules are named after the stage or format they own; see
//! DESIGN in the README for the stage list.

pub mod agent;
pub mod bench;
pub mod blockdev;
pub mod boot;
pub mod cmdline;
pub mod cpio;
pub mod debug_shell;
pub mod devkbs;
pub mod dm;
pub mod evidence;
pub mod gpt;
pub mod hex;
pub mod initdata;
pub mod initrd;
pub mod kbs;
pub mod kmod;
pub mod logging;
pub mod luks2;
pub mod measure;
pub mod net;
pub mod oci;
pub mod osrelease;
pub mod pid1;
pub mod relay;
pub mod result;
pub mod rootfs;
pub mod secrets;
pub mod stage;
pub mod state;
pub mod switchroot;
pub mod swtpm;
pub mod tee;
pub mod tpm;
pub mod verity;
pub mod verity_root;
pub mod workload;
