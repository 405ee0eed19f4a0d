//! OCI images, shared by the agent's workload stage and the host's tools. [`reference`] parses
//! image references (a registry or an OCI layout directory); [`manifest`] resolves one (index →
//! `linux/amd64` manifest → config and layers, every document verified against its digest) from
//! any [`manifest::Fetch`] source — an image-layout directory ([`layout`]) here, the agent's
//! registry client (distribution-spec pull) in the agent — and [`unpack`] applies the layers
//! (tar, gzip or zstd) with the image-spec whiteout rules onto a root directory, refusing
//! hostile layers; [`digest`] holds the `sha256:<hex>` digests everything is verified against.
//! The host's image builder (`cvmctl image build`) is in `cvm-image`.
//!
//! Re-exports [`oci_spec`], whose image and runtime types the API uses.
#![forbid(unsafe_code)]

pub mod digest;
pub mod layout;
pub mod manifest;
pub mod reference;
mod targuard;
pub mod unpack;

pub use oci_spec;
