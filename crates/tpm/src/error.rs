//! The one error type of the TPM client.
//!
//! Display is a single level, as everywhere in the agent: a failed command reads
//! "PCR_Read failed" and the reason is its `source()`, so the stage line prints
//! `tpm: PCR_Read failed (TPM_RC_VALUE, parameter 1)`.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tpm2_protocol::data::{TpmRc, TpmRcIndex};

use super::{HashAlg, MAX_BUFFER};

/// `TPM_RC_INITIALIZE`: TPM2_Startup sent to a TPM that is already started.
pub(crate) const TPM_RC_INITIALIZE: u32 = 0x100;
/// `TPM_RC_HANDLE` (format 1, without its handle/parameter number): the handle names no
/// loaded object, persistent object or NV index. Compare with [`ResponseCode::base`].
pub const TPM_RC_HANDLE: u32 = 0x08B;

/// Everything that can go wrong between the agent and the TPM.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    #[error("cannot open TPM device {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot connect to TPM at {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },

    /// `op` names the direction: "write to TPM" or "read from TPM".
    #[error("{op} failed")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("short write to TPM ({written} of {len} bytes)")]
    ShortWrite { written: usize, len: usize },

    #[error("command of {len} bytes exceeds the {MAX_BUFFER}-byte TPM buffer")]
    CommandTooLarge { len: usize },

    #[error("cannot marshal command: {0}")]
    Marshal(String),

    /// A command failed; `source` says why. Every error out of the public `Tpm`
    /// methods has this shape, so the console line always names the command.
    #[error("{command} failed")]
    Command {
        command: &'static str,
        #[source]
        source: Box<TpmError>,
    },

    /// The TPM answered with a non-success response code.
    #[error("{0}")]
    Response(ResponseCode),

    #[error("response is {len} bytes, shorter than the 10-byte header")]
    Truncated { len: usize },

    #[error("response of {len} bytes exceeds the {MAX_BUFFER}-byte TPM buffer")]
    TooLarge { len: u64 },

    #[error("response header declares {declared} bytes but {actual} were received")]
    SizeMismatch { declared: u32, actual: usize },

    #[error("unexpected response tag {tag:#06x}")]
    UnexpectedTag { tag: u16 },

    #[error("malformed response: {0}")]
    Malformed(String),

    #[error("{alg} PCR {pcr} digest is {len} bytes, expected {expected}")]
    DigestLength {
        alg: HashAlg,
        pcr: u32,
        len: usize,
        expected: usize,
    },

    #[error("PCR {pcr} is out of range (0..=31)")]
    PcrOutOfRange { pcr: u32 },

    #[error("{alg} PCRs {pcrs:?} are not allocated")]
    PcrNotAllocated { alg: HashAlg, pcrs: Vec<u32> },

    #[error("PCR values changed during each of {attempts} read attempts")]
    PcrsChanging { attempts: u32 },

    /// A caller's argument the TPM would reject or that makes no sense; nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("no answer from the TPM within {} s", timeout.as_secs_f64())]
    Timeout { timeout: Duration },

    /// A command timed out earlier and its answer has still not arrived; the device takes
    /// no new command until it does.
    #[error("the TPM is still busy with an earlier command that timed out")]
    Busy,

    /// The persistent handle holds an object that is not the attestation key this client
    /// creates; quoting with it would let whoever planted it speak for the TPM.
    #[error("persistent object {handle:#010x} is not the expected attestation key: {reason}")]
    ForeignKey { handle: u32, reason: String },
}

impl TpmError {
    /// The raw TPM response code behind this error, looking through the
    /// command wrapper, so callers can react to e.g. `TPM_RC_RETRY`.
    pub fn response_code(&self) -> Option<u32> {
        match self {
            TpmError::Response(rc) => Some(rc.0),
            TpmError::Command { source, .. } => source.response_code(),
            _ => None,
        }
    }

    /// [`ResponseCode::base`] of the response code behind this error.
    pub fn response_base(&self) -> Option<u32> {
        self.response_code().map(|rc| ResponseCode(rc).base())
    }

    /// The command this error belongs to, if it came out of a `Tpm` method.
    pub fn command(&self) -> Option<&'static str> {
        match self {
            TpmError::Command { command, .. } => Some(command),
            _ => None,
        }
    }

    pub(crate) fn in_command(self, command: &'static str) -> TpmError {
        TpmError::Command {
            command,
            source: Box::new(self),
        }
    }
}

/// A raw TPM 2.0 response code whose Display is the TCG name plus, for
/// format-1 codes, the parameter, handle or session it refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseCode(pub u32);

impl ResponseCode {
    /// The error itself without the handle, parameter or session number a format-1 code
    /// carries, e.g. `TPM_RC_HANDLE` (0x08B) for "TPM_RC_HANDLE, handle 1" (0x18B).
    pub fn base(&self) -> u32 {
        let raw = self.0;
        if raw >> 16 == 0 && raw & RC_FMT1 != 0 {
            raw & (RC_FMT1 | 0x3F)
        } else {
            raw
        }
    }
}

/// TCG vendor-defined bit of a format-0 code (Part 2, 6.6.2 "T").
const RC_VENDOR: u32 = 0x400;
/// Format-1 selector.
const RC_FMT1: u32 = 0x080;

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let raw = self.0;
        // The crate knows every name the TCG assigns; only codes it rejects (layered
        // software codes, vendor codes, reserved bits) fall through to the hex form.
        match TpmRc::try_from(raw) {
            Ok(TpmRc::Fmt1(fmt1)) => match fmt1.index {
                Some(TpmRcIndex::Parameter(n)) => write!(f, "{}, parameter {n}", fmt1.base),
                Some(TpmRcIndex::Handle(n)) => write!(f, "{}, handle {n}", fmt1.base),
                Some(TpmRcIndex::Session(n)) => write!(f, "{}, session {n}", fmt1.base),
                None => write!(f, "{}", fmt1.base),
            },
            Ok(TpmRc::Fmt0(base) | TpmRc::Warn(base)) => write!(f, "{base}"),
            Err(_) if raw >> 16 != 0 => write!(
                f,
                "response code {raw:#010x} from software layer {}",
                raw >> 16
            ),
            Err(_) if raw & RC_FMT1 == 0 && raw & RC_VENDOR != 0 => {
                write!(f, "vendor-defined response code {raw:#010x}")
            }
            Err(_) => write!(f, "unknown TPM response code {raw:#010x}"),
        }
    }
}
