//! Stage 10, the workload: the OCI image (from a registry or an image layout in the verified
//! root) unpacked, the image's launch policy applied to `launch.toml`'s overrides ([`policy`]),
//! the result measured and sealed by the agent, then run under youki's `libcontainer`
//! ([`spec`], [`run`]).
//!
//! Not yet: a seccomp profile. libcontainer applies one only with its `libseccomp` feature,
//! which links libseccomp; the workload runs with namespaces, a cgroup, a reduced capability
//! set and no_new_privs, but without a syscall filter.

pub mod image;
pub mod policy;
pub mod run;
pub mod spec;
