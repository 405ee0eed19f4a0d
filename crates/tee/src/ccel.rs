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

use sha2::{Digest as _, Sha384};

use super::bytes::Reader;

pub const EV_NO_ACTION: u32 = 0x3;
pub const TPM_ALG_SHA1: u16 = 0x0004;
pub const TPM_ALG_SHA256: u16 = 0x000B;
pub const TPM_ALG_SHA384: u16 = 0x000C;
pub const TPM_ALG_SHA512: u16 = 0x000D;
const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
/// Bounds that no real firmware log comes near (the CCEL area is 64 KiB here).
const MAX_EVENTS: usize = 100_000;
const MAX_ALGORITHMS: u32 = 16;

/// Why a log was rejected.
#[derive(Debug, thiserror::Error)]
pub enum CcelError {
    #[error("event log is truncated in {what} at offset {offset}")]
    Truncated { what: &'static str, offset: usize },
    #[error("first event is not a Spec ID Event03 (EV_NO_ACTION with the TCG signature)")]
    NotCryptoAgile,
    #[error("Spec ID event lists {0} algorithms")]
    AlgorithmCount(u32),
    #[error(
        "event at offset {offset} has a digest for algorithm {alg:#06x} the Spec ID event does not list"
    )]
    UnknownAlgorithm { offset: usize, alg: u16 },
    #[error(
        "event at offset {offset} has {count} digests, the Spec ID event lists {listed} algorithms"
    )]
    DigestCount {
        offset: usize,
        count: u32,
        listed: usize,
    },
    #[error("more than {MAX_EVENTS} events")]
    TooManyEvents,
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

fn trunc(what: &'static str, r: &Reader<'_>) -> CcelError {
    CcelError::Truncated {
        what,
        offset: r.pos(),
    }
}

impl EventLog {
    pub fn parse(bytes: &[u8]) -> Result<Self, CcelError> {
        let mut r = Reader::new(bytes);
        // TCG_PCClientPCREvent: index, type, SHA-1 digest (20), size, data.
        let t = |r: &Reader<'_>| trunc("Spec ID event", r);
        let header_index = r.u32_le().ok_or_else(|| t(&r))?;
        let ty = r.u32_le().ok_or_else(|| t(&r))?;
        let _digest: [u8; 20] = r.array().ok_or_else(|| t(&r))?;
        let size = r.u32_le().ok_or_else(|| t(&r))?;
        let data = r.take(size as usize).ok_or_else(|| t(&r))?;
        if ty != EV_NO_ACTION {
            return Err(CcelError::NotCryptoAgile);
        }
        let spec_id = parse_spec_id(data)?;

        let mut events = Vec::new();
        while !at_end(r.rest()) {
            if events.len() >= MAX_EVENTS {
                return Err(CcelError::TooManyEvents);
            }
            events.push(parse_event(&mut r, &spec_id)?);
        }
        Ok(Self {
            header_index,
            spec_id,
            events,
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

/// The unused tail of the CCEL area: nothing left, or a run of 0xFF (erased) or 0x00 to the end.
/// An event header cannot be all-ones (index and type 0xFFFFFFFF are not defined), and an
/// all-zero tail holds no record that could extend anything. Any other short tail is parsed as
/// an event and so reported as truncated.
fn at_end(rest: &[u8]) -> bool {
    rest.iter().all(|&b| b == 0xFF) || rest.iter().all(|&b| b == 0)
}

fn parse_spec_id(data: &[u8]) -> Result<SpecId, CcelError> {
    let mut r = Reader::new(data);
    let sig: [u8; 16] = r.array().ok_or(CcelError::NotCryptoAgile)?;
    if &sig != SPEC_ID_SIGNATURE {
        return Err(CcelError::NotCryptoAgile);
    }
    let t = |r: &Reader<'_>| trunc("Spec ID event data", r);
    let platform_class = r.u32_le().ok_or_else(|| t(&r))?;
    let spec_version_minor = r.u8().ok_or_else(|| t(&r))?;
    let spec_version_major = r.u8().ok_or_else(|| t(&r))?;
    let spec_errata = r.u8().ok_or_else(|| t(&r))?;
    let uintn_size = r.u8().ok_or_else(|| t(&r))?;
    let n = r.u32_le().ok_or_else(|| t(&r))?;
    if n == 0 || n > MAX_ALGORITHMS {
        return Err(CcelError::AlgorithmCount(n));
    }
    let mut algorithms = Vec::with_capacity(n as usize);
    for _ in 0..n {
        algorithms.push(AlgorithmSize {
            alg: r.u16_le().ok_or_else(|| t(&r))?,
            digest_size: r.u16_le().ok_or_else(|| t(&r))?,
        });
    }
    let vlen = r.u8().ok_or_else(|| t(&r))?;
    let vendor_info = r.take(usize::from(vlen)).ok_or_else(|| t(&r))?.to_vec();
    Ok(SpecId {
        platform_class,
        spec_version_major,
        spec_version_minor,
        spec_errata,
        uintn_size,
        algorithms,
        vendor_info,
    })
}

fn parse_event(r: &mut Reader<'_>, spec: &SpecId) -> Result<Event, CcelError> {
    let offset = r.pos();
    let t = |r: &Reader<'_>| trunc("event", r);
    let mr_index = r.u32_le().ok_or_else(|| t(r))?;
    let event_type = r.u32_le().ok_or_else(|| t(r))?;
    let count = r.u32_le().ok_or_else(|| t(r))?;
    // Each algorithm at most once, so the count is bounded by the Spec ID list.
    if count as usize > spec.algorithms.len() {
        return Err(CcelError::DigestCount {
            offset,
            count,
            listed: spec.algorithms.len(),
        });
    }
    let mut digests: Vec<(u16, Vec<u8>)> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let alg = r.u16_le().ok_or_else(|| t(r))?;
        let size = spec
            .algorithms
            .iter()
            .find(|a| a.alg == alg)
            .ok_or(CcelError::UnknownAlgorithm { offset, alg })?
            .digest_size;
        if digests.iter().any(|(a, _)| *a == alg) {
            return Err(CcelError::DigestCount {
                offset,
                count,
                listed: spec.algorithms.len(),
            });
        }
        let d = r.take(usize::from(size)).ok_or_else(|| t(r))?;
        digests.push((alg, d.to_vec()));
    }
    let size = r.u32_le().ok_or_else(|| t(r))?;
    let data = r.take(size as usize).ok_or_else(|| t(r))?.to_vec();
    Ok(Event {
        offset,
        mr_index,
        event_type,
        digests,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal log: Spec ID (SHA-384 only) and the given (index, type, digest, data) events.
    fn log(events: &[(u32, u32, [u8; 48], &[u8])]) -> Vec<u8> {
        let mut spec = Vec::new();
        spec.extend_from_slice(SPEC_ID_SIGNATURE);
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
            Err(CcelError::Truncated { .. })
        ));
        let mut b = log(&[]);
        b[4] = 1;
        assert!(matches!(
            EventLog::parse(&b),
            Err(CcelError::NotCryptoAgile)
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
