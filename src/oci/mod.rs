//! OCI images for the workload stage. [`reference`] parses image references (a registry or an
//! OCI layout directory); [`manifest`] resolves one (index → `linux/amd64` manifest → config
//! and layers, every document verified against its digest) from either source — [`registry`]
//! (distribution-spec pull over ureq) or [`layout`] (an image-layout directory) — and streams
//! the layers into [`unpack`], which applies them (tar, gzip or zstd) with the image-spec
//! whiteout rules onto a root directory, refusing hostile layers; [`digest`] holds the
//! `sha256:<hex>` digests everything is verified against; [`build`] writes an image layout
//! from a directory tree on the host (`cvmctl image build`).

pub mod build;
pub mod digest;
pub mod layout;
pub mod manifest;
pub mod reference;
pub mod registry;
mod targuard;
pub mod unpack;
