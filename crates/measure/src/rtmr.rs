//! TDX: PCR 15's events also go to RTMR2, per the UEFI/Linux PCR→RTMR map (PCR 8–15 → RTMR2),
//! so a TD without a vTPM carries the same claims in its quote. Linux (6.16+) exposes the
//! runtime measurement registers as `/sys/class/misc/tdx_guest/measurements/rtmr<N>:sha384`;
//! writing a SHA-384 digest there extends the register.
//!
//! The TDX module extends an RTMR as `RTMR_new = SHA384(RTMR_old ‖ digest48)`, the TPM extend
//! rule with SHA-384. The digest of an event is the SHA-384 bank's digest of the module-level
//! digest rule (`SHA384("<event>:<value>")`); only PCR 15 events go to RTMR2 (init-data is
//! bound through MRCONFIGID on TDX, not through a register the host could also extend).
//! [`replay_rtmr2`] is what a verifier and `cvmctl measure --tee tdx` use: the same digests the
//! agent writes, recomputed from the log's content, so a log whose records carry only SHA-256
//! digests (a vTPM without a SHA-384 bank) still replays.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha384};

use super::{CONTENT_TYPE, Content, Event, EventKind, EventLog, MeasureError, PCR_AGENT, preimage};

/// SHA-384 digest and register length.
pub const RTMR_LEN: usize = 48;

#[derive(Debug, thiserror::Error)]
pub enum RtmrError {
    #[error("RTMR digests are SHA-384 (48 bytes), got {0}")]
    Length(usize),
    #[error("cannot extend {path}")]
    Extend {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "event log record {index} is not cvm-agent's (content type {content_type:?}): RTMR2's log holds only the agent's records"
    )]
    ForeignRecord { index: usize, content_type: String },
    #[error("the event log does not verify")]
    Log(#[source] MeasureError),
}

/// `SHA384(rtmr ‖ digest)`, the TDX module's RTMR extend.
pub fn extend_value(rtmr: &[u8; RTMR_LEN], digest: &[u8; RTMR_LEN]) -> [u8; RTMR_LEN] {
    let mut h = Sha384::new();
    h.update(rtmr);
    h.update(digest);
    h.finalize().into()
}

/// The SHA-384 digest the agent extends into RTMR2 for `event`, or `None` when the event does
/// not go there (anything outside PCR 15).
pub fn event_digest(event: &Event) -> Option<[u8; RTMR_LEN]> {
    (event.pcr() == PCR_AGENT).then(|| agent_digest(event.kind(), event.value()))
}

fn agent_digest(kind: EventKind, value: &str) -> [u8; RTMR_LEN] {
    Sha384::digest(preimage(kind, value).as_bytes()).into()
}

/// The digest the launch separator extends: a constant, since the separator has no value. A
/// verifier looks for it among every digest extended into RTMR2 before the agent's records
/// too, so a log cannot hide a separator in the part it does not interpret.
pub fn separator_digest() -> [u8; RTMR_LEN] {
    agent_digest(EventKind::Separator, "")
}

/// RTMR2 after `events` (the agent's, in order), starting from `start`.
pub fn predict_rtmr2(start: &[u8; RTMR_LEN], events: &[Event]) -> [u8; RTMR_LEN] {
    events
        .iter()
        .filter_map(event_digest)
        .fold(*start, |rtmr, digest| extend_value(&rtmr, &digest))
}

/// Replays the agent's log into RTMR2 from `start`. The log must verify ([`EventLog::verify`])
/// and hold only cvm-agent records: PCR 15 records are extended, the PCR 8 init-data record is
/// not (it is in no RTMR). A foreign record would be a digest the agent did not extend.
pub fn replay_rtmr2(start: &[u8; RTMR_LEN], log: &EventLog) -> Result<[u8; RTMR_LEN], RtmrError> {
    log.verify().map_err(RtmrError::Log)?;
    let mut rtmr = *start;
    for (index, record) in log.records().iter().enumerate() {
        let (kind, value) = match &record.content {
            Content::Agent { event, string } if record.content_type == CONTENT_TYPE => {
                (*event, string.as_str())
            }
            _ => {
                return Err(RtmrError::ForeignRecord {
                    index,
                    content_type: record.content_type.clone(),
                });
            }
        };
        // verify() has put each event on its own PCR: the rest is the init-data record.
        if record.pcr == PCR_AGENT {
            rtmr = extend_value(&rtmr, &agent_digest(kind, value));
        }
    }
    Ok(rtmr)
}

/// The RTMR2 extend file under `sys`, if this is a TD whose kernel offers it.
pub fn rtmr2(sys: &Path) -> Option<PathBuf> {
    let path = sys.join("class/misc/tdx_guest/measurements/rtmr2:sha384");
    path.exists().then_some(path)
}

/// Extend the register behind `path` with one SHA-384 digest (one write, as the ABI wants).
pub fn extend(path: &Path, digest: &[u8]) -> Result<(), RtmrError> {
    if digest.len() != 48 {
        return Err(RtmrError::Length(digest.len()));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(digest))
        .map_err(|source| RtmrError::Extend {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_writes_the_register_file() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(rtmr2(tmp.path()).is_none());
        let dir = tmp.path().join("class/misc/tdx_guest/measurements");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rtmr2:sha384"), b"").unwrap();
        let path = rtmr2(tmp.path()).unwrap();
        extend(&path, &[7u8; 48]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 48]);
        assert!(matches!(
            extend(&path, &[0; 32]),
            Err(RtmrError::Length(32))
        ));
    }
}

#[cfg(test)]
mod replay_tests {
    use super::*;
    use crate::predict::{Facts, predict};
    use cvm_initdata::Mode;
    use cvm_tpm::HashAlg;

    /// The TDX extend rule written out: SHA384(RTMR ‖ SHA384("<event>:<value>")).
    fn by_hand(start: [u8; 48], preimages: &[String]) -> [u8; 48] {
        preimages.iter().fold(start, |rtmr, p| {
            Sha384::new()
                .chain_update(rtmr)
                .chain_update(Sha384::digest(p.as_bytes()))
                .finalize()
                .into()
        })
    }

    fn facts(mode: Mode) -> Facts {
        Facts {
            mode,
            roothash: Some("ab".repeat(32)),
            image_version: Some("cvm-demo 1".into()),
            initdata: Some(b"version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n".to_vec()),
            state_disk: Some("luks:1234".into()),
            ..Facts::default()
        }
    }

    #[test]
    fn prediction_replay_and_the_extend_rule_agree() {
        let facts = facts(Mode::Production);
        let events = facts.events().unwrap();
        let preimages: Vec<String> = [
            "mode:production".to_string(),
            format!("roothash:{}", "ab".repeat(32)),
            "image-version:cvm-demo 1".into(),
            "state-disk:luks:1234".into(),
            "separator:".into(),
        ]
        .into();
        let start = [3u8; 48];
        let want = by_hand(start, &preimages);
        assert_eq!(predict_rtmr2(&start, &events), want);
        // The log the agent writes (here with a SHA-256 bank only) replays to the same value.
        let log = predict(&facts, &[HashAlg::Sha256]).unwrap().log;
        assert_eq!(replay_rtmr2(&start, &log).unwrap(), want);
        assert_eq!(
            separator_digest(),
            <[u8; 48]>::from(Sha384::digest(b"separator:"))
        );
        assert_eq!(event_digest(&Event::initdata(b"x")), None);

        // A record that is not the agent's is refused, whatever it extended.
        let mut records = log.to_json().as_array().unwrap().clone();
        records[1]["content_type"] = "systemd".into();
        let relabelled = EventLog::from_json(&serde_json::Value::Array(records)).unwrap();
        // The log check refuses it first (PCR 15 takes only agent records); the replay's own
        // check stays for records of other PCRs.
        let err = replay_rtmr2(&start, &relabelled).unwrap_err();
        assert!(matches!(err, RtmrError::Log(_)), "{err}");
        assert!(
            cvm_text::error_chain(&err).contains("only cvm-agent records may extend it"),
            "{err}"
        );
        let mut records = log.to_json().as_array().unwrap().clone();
        records[0]["content_type"] = "systemd".into();
        records[0]["pcr"] = 9.into();
        let foreign = EventLog::from_json(&serde_json::Value::Array(records)).unwrap();
        assert!(matches!(
            replay_rtmr2(&start, &foreign),
            Err(RtmrError::ForeignRecord { index: 0, .. })
        ));
    }
}
