//! OCI images for the workload stage. [`unpack`] applies image layers (tar, gzip or zstd) with
//! the image-spec whiteout rules onto a root directory, refusing hostile layers; [`digest`]
//! holds the `sha256:<hex>` digests layers are verified against; [`build`] writes an image
//! layout from a directory tree on the host (`cvmctl image build`).

pub mod build;
pub mod digest;
mod targuard;
pub mod unpack;
