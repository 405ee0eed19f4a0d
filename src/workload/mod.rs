//! Stage 10, the workload: the OCI image (from a registry or an image layout in the verified
//! root) unpacked, the image's launch policy applied to `launch.toml`'s overrides ([`policy`]),
//! the result measured and sealed by the agent, then run under youki's `libcontainer`
//! ([`spec`], [`run`]).
//!
//! The workload runs with namespaces, a cgroup, a reduced capability set, no_new_privs and a
//! seccomp filter: default allow with a deny list (EPERM) of syscalls a confidential workload
//! never needs ([`spec::SECCOMP_DENY`]). libcontainer applies it through its `libseccomp`
//! feature, with libseccomp linked statically (`.cargo/config.toml`). No device node: CAP_MKNOD
//! is not in the default set, seccomp refuses character and block nodes whatever the
//! capabilities, and `/dev` is `nodev` ([`dev`]).

pub mod dev;
pub mod image;
pub mod run;
pub mod spec;

/// The image launch policy: shared with the host's prediction, so it lives in `cvm-initdata`.
pub use cvm_initdata::policy;
