//! The host's image builders. None of this runs in the guest; each output is a pure function of
//! its inputs (SOURCE_DATE_EPOCH for every time), because what they write is measured:
//! - [`initrd`]: the agent's initrd (`cvmctl initrd`): the agent as /init, the kernel-module
//!   subset, the spec's files, as a reproducible newc cpio;
//! - [`rootfs`]: a directory tree → the verity-protected GPT root disk (`cvmctl rootfs`);
//! - [`disk`]: a UKI and that root → the bootable GPT disk with an ESP (`cvmctl disk`), raw or
//!   in a cloud's container: [`vhd`] (Azure's fixed VHD footer), [`gce`] (GCP's `disk.raw` tar.gz);
//! - [`oci_build`]: a directory tree → an OCI image layout (`cvmctl image build`).
#![forbid(unsafe_code)]

pub mod disk;
pub mod gce;
pub mod initrd;
pub mod oci_build;
pub mod rootfs;
pub mod vhd;
