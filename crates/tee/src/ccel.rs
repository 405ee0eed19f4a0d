//! The CCEL event log of a TD: a TCG2 crypto-agile event log ("TCG PC Client Platform Firmware
//! Profile", section 10) whose index field holds a CC measurement register index instead of a
//! PCR number.
//!
//! Layout: one `TCG_PCClientPCREvent` (SHA-1-format header, event type EV_NO_ACTION, data
//! "Spec ID Event03" listing the digest algorithms and their sizes), then `TCG_PCR_EVENT2`
//! records: index u32 ‖ type u32 ‖ digest count u32 ‖ (alg u16 ‖ digest)* ‖ size u32 ‖ data.
//! The log ends at the end of the buffer or where the firmware's unused area begins (all 0xFF
//! or all zero, as the ACPI CCEL table area is padded).
//!
//! MR index → register (UEFI 2.10, EFI_CC_MEASUREMENT_PROTOCOL, "TDX" mapping): 0 = MRTD,
//! 1 = RTMR0, 2 = RTMR1, 3 = RTMR2, 4 = RTMR3. The firmware maps TPM PCR 0 → MRTD, PCR 1 and 7
//! → RTMR0, PCR 2–6 → RTMR1, PCR 8–15 → RTMR2. The log never contains MRTD (the TDX module
//! builds it at TD creation), so replay covers RTMR0–3 only.
//!
//! The bytes are read by `cvm-tcglog`, the workspace's one parser of this format (also the
//! dev KBS's for a `tpm` guest's firmware log and cvm-uki's); this module maps its records to
//! measurement registers and replays them.

use cvm_tcglog::eventlog::{self as tcg, EventLogError};
use sha2::{Digest as _, Sha384};

pub const EV_NO_ACTION: u32 = 0x3;
pub const TPM_ALG_SHA1: u16 = 0x0004;
pub const TPM_ALG_SHA256: u16 = 0x000B;
pub const TPM_ALG_SHA384: u16 = 0x000C;
pub const TPM_ALG_SHA512: u16 = 0x000D;

/// Why a log was rejected.
#[derive(Debug, thiserror::Error)]
pub enum CcelError {
    #[error("CCEL")]
    Log(#[from] EventLogError),
    #[error("event at offset {offset} extends MR index {index}, which is not an RTMR (1-4)")]
    MrIndex { offset: usize, index: u32 },
    #[error("event at offset {offset} has no SHA-384 digest to replay")]
    NoSha384 { offset: usize },
}

/// One algorithm of the Spec ID event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlgorithmSize {
    pub alg: u16,
    pub digest_size: u16,
}

/// The Spec ID Event03 contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecId {
    pub platform_class: u32,
    pub spec_version_major: u8,
    pub spec_version_minor: u8,
    pub spec_errata: u8,
    pub uintn_size: u8,
    pub algorithms: Vec<AlgorithmSize>,
    pub vendor_info: Vec<u8>,
}

/// One TCG_PCR_EVENT2 record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Offset of the record in the log, for messages.
    pub offset: usize,
    /// CC MR index (1–4 = RTMR0–3).
    pub mr_index: u32,
    pub event_type: u32,
    pub digests: Vec<(u16, Vec<u8>)>,
    pub data: Vec<u8>,
}

impl Event {
    pub fn digest(&self, alg: u16) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, d)| d.as_slice())
    }
}

/// A parsed CCEL log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// MR index of the Spec ID event (not extended anywhere).
    pub header_index: u32,
    pub spec_id: SpecId,
    pub events: Vec<Event>,
}

/// The RTMR index (0–3) an MR index extends, per the UEFI CC measurement mapping.
pub fn rtmr_for_mr_index(mr_index: u32) -> Option<usize> {
    match mr_index {
        1..=4 => Some(mr_index as usize - 1),
        _ => None,
    }
}

impl EventLog {
    pub fn parse(bytes: &[u8]) -> Result<Self, CcelError> {
        let log = tcg::EventLog::parse(bytes)?;
        let spec = log.spec_id;
        Ok(Self {
            header_index: log.header_index,
            spec_id: SpecId {
                platform_class: spec.platform_class,
                spec_version_major: spec.spec_version_major,
                spec_version_minor: spec.spec_version_minor,
                spec_errata: spec.spec_errata,
                uintn_size: spec.uintn_size,
                algorithms: spec
                    .algorithms
                    .into_iter()
                    .map(|(alg, digest_size)| AlgorithmSize { alg, digest_size })
                    .collect(),
                vendor_info: spec.vendor_info,
            },
            events: log
                .events
                .into_iter()
                .map(|e| Event {
                    offset: e.offset,
                    mr_index: e.pcr,
                    event_type: e.event_type,
                    digests: e.digests,
                    data: e.data,
                })
                .collect(),
        })
    }

    /// Replays the SHA-384 digests into RTMR0–3, from zero: RTMR := SHA-384(RTMR ‖ digest).
    /// EV_NO_ACTION events are informational and extend nothing.
    pub fn replay_rtmrs(&self) -> Result<[[u8; 48]; 4], CcelError> {
        let mut rtmr = [[0u8; 48]; 4];
        for ev in &self.events {
            if ev.event_type == EV_NO_ACTION {
                continue;
            }
            let i = rtmr_for_mr_index(ev.mr_index).ok_or(CcelError::MrIndex {
                offset: ev.offset,
                index: ev.mr_index,
            })?;
            let d = ev
                .digest(TPM_ALG_SHA384)
                .ok_or(CcelError::NoSha384 { offset: ev.offset })?;
            let mut h = Sha384::new();
            h.update(rtmr[i]);
            h.update(d);
            rtmr[i].copy_from_slice(&h.finalize());
        }
        Ok(rtmr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal log: Spec ID (SHA-384 only) and the given (index, type, digest, data) events.
    fn log(events: &[(u32, u32, [u8; 48], &[u8])]) -> Vec<u8> {
        let mut spec = Vec::new();
        spec.extend_from_slice(b"Spec ID Event03\0");
        spec.extend_from_slice(&0u32.to_le_bytes());
        spec.extend_from_slice(&[0, 2, 0, 2]);
        spec.extend_from_slice(&1u32.to_le_bytes());
        spec.extend_from_slice(&TPM_ALG_SHA384.to_le_bytes());
        spec.extend_from_slice(&48u16.to_le_bytes());
        spec.push(0);
        let mut b = Vec::new();
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        b.extend_from_slice(&[0; 20]);
        b.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        b.extend_from_slice(&spec);
        for (i, t, d, data) in events {
            b.extend_from_slice(&i.to_le_bytes());
            b.extend_from_slice(&t.to_le_bytes());
            b.extend_from_slice(&1u32.to_le_bytes());
            b.extend_from_slice(&TPM_ALG_SHA384.to_le_bytes());
            b.extend_from_slice(d);
            b.extend_from_slice(&(data.len() as u32).to_le_bytes());
            b.extend_from_slice(data);
        }
        b
    }

    #[test]
    fn replay_by_hand() {
        let d = [7u8; 48];
        let mut b = log(&[(1, 4, d, b"x"), (4, EV_NO_ACTION, d, b""), (4, 6, d, b"")]);
        b.extend_from_slice(&[0xFF; 100]);
        let l = EventLog::parse(&b).unwrap();
        assert_eq!(l.events.len(), 3);
        let r = l.replay_rtmrs().unwrap();
        let mut h = Sha384::new();
        h.update([0u8; 48]);
        h.update(d);
        let one: [u8; 48] = h.finalize().into();
        assert_eq!(r[0], one);
        assert_eq!(r[1], [0; 48]);
        assert_eq!(r[3], one, "EV_NO_ACTION must not extend");
    }

    #[test]
    fn rejects() {
        let d = [0u8; 48];
        let b = log(&[(0, 4, d, b"")]);
        let l = EventLog::parse(&b).unwrap();
        assert!(matches!(
            l.replay_rtmrs(),
            Err(CcelError::MrIndex { index: 0, .. })
        ));
        let b = log(&[(1, 4, d, b"abc")]);
        assert!(matches!(
            EventLog::parse(&b[..b.len() - 1]),
            Err(CcelError::Log(EventLogError::Truncated { .. }))
        ));
        let mut b = log(&[]);
        b[4] = 1;
        assert!(matches!(
            EventLog::parse(&b),
            Err(CcelError::Log(EventLogError::NoSpecId))
        ));
    }

    #[test]
    fn mapping() {
        assert_eq!(rtmr_for_mr_index(0), None);
        assert_eq!(rtmr_for_mr_index(1), Some(0));
        assert_eq!(rtmr_for_mr_index(4), Some(3));
        assert_eq!(rtmr_for_mr_index(5), None);
    }
}
