//! The Trustee / Confidential Containers KBS protocol 0.4.0 (RCAR), protocol and crypto core:
//! message types and the runtime-data binding ([`protocol`]), RFC 8785 canonical JSON
//! ([`canon`]), the ephemeral TEE key ([`tee_key`]) and the JWE resources come back in ([`jwe`]).
//! The agent's HTTP client (the agent's `kbs_client`) and the dev KBS (`cvm-devkbs`) build on
//! these. Re-exports [`kbs_types`], the types of Trustee's own messages.
//!
//! A session, as the agent runs it:
//! 1. `key = TeeKeyPair::generate(TeeKeyAlgorithm::default())` (once per boot);
//! 2. `POST /kbs/v0/auth` with [`protocol::request`]; [`protocol::parse_challenge`];
//! 3. `rd = protocol::runtime_data(&challenge.nonce, &key.public_jwk(), "")`,
//!    `digest = protocol::runtime_data_digest(protocol::hash_algorithm(&challenge)?, &rd)?`,
//!    evidence over `protocol::tee_report_data(tee, &digest)?` (each TEE's own form);
//! 4. `POST /kbs/v0/attest` with [`protocol::attestation`]; [`protocol::parse_attest_response`];
//! 5. `GET /kbs/v0/resource/…` ([`protocol::resource_path`]); [`jwe::decrypt`] with `key`.
//!
//! Any non-2xx answer goes through [`protocol::parse_error`].
#![forbid(unsafe_code)]

pub mod canon;
pub mod jwe;
pub mod protocol;
pub mod resource;
pub mod tee_key;

pub use jwe::{FlattenedJwe, JweError};
pub use protocol::KbsError;
pub use resource::ResourceUri;
pub use tee_key::{TeeKeyAlgorithm, TeeKeyError, TeeKeyPair};

pub use kbs_types;
