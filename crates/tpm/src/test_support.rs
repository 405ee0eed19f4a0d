//! What the canned-response tests (`tests.rs`, `command_tests.rs`) share: a fake transport that
//! replays answers and records commands, response framing, and how errors read.

use std::collections::VecDeque;
use std::error::Error as _;

use super::{HEADER_LEN, Tpm, TpmError, Transport};

/// TPM_ST_NO_SESSIONS.
pub(super) const NO_SESSIONS: u16 = 0x8001;

/// Replays canned responses and records what was sent.
#[derive(Default)]
pub(super) struct Fake {
    pub(super) responses: VecDeque<Vec<u8>>,
    pub(super) sent: Vec<Vec<u8>>,
}

impl Transport for Fake {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TpmError> {
        self.sent.push(command.to_vec());
        self.responses.pop_front().ok_or_else(|| TpmError::Io {
            op: "read from TPM",
            source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        })
    }
}

pub(super) fn tpm_with(responses: Vec<Vec<u8>>) -> Tpm<Fake> {
    Tpm::new(Fake {
        responses: responses.into(),
        sent: Vec::new(),
    })
}

/// A frame: tag, the right size, `rc` (a response code, or a command code), then `body`.
pub(super) fn frame(tag: u16, rc: u32, body: &[u8]) -> Vec<u8> {
    let size = u32::try_from(HEADER_LEN + body.len()).unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(&tag.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&rc.to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub(super) fn success(body: &[u8]) -> Vec<u8> {
    frame(NO_SESSIONS, 0, body)
}

pub(super) fn failure(rc: u32) -> Vec<u8> {
    frame(NO_SESSIONS, rc, &[])
}

/// The reason inside a `TpmError::Command`.
pub(super) fn inner(e: &TpmError) -> &TpmError {
    match e {
        TpmError::Command { source, .. } => source,
        other => panic!("not wrapped in a command: {other:?}"),
    }
}

/// What the console shows: the error and its source chain, as `StageError` prints it.
pub(super) fn console_line(e: &TpmError) -> String {
    let mut line = e.to_string();
    let mut causes = Vec::new();
    let mut source = e.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if !causes.is_empty() {
        line.push_str(&format!(" ({})", causes.join(": ")));
    }
    line
}
