//! A bounded parser of the TCG crypto-agile event log, its writer and its replay: the firmware
//! log Linux exposes in `/sys/kernel/security/tpm0/binary_bios_measurements`, and TDX's CCEL
//! (the same records, the index field holding a measurement-register index).
//!
//! Format: TCG PC Client Platform Firmware Profile Specification 1.05, 10.2: a first event in
//! the SHA-1 `TCG_PCClientPCREvent` form whose data is the `TCG_EfiSpecIDEvent` ("Spec ID
//! Event03", listing each algorithm's id and digest size), then `TCG_PCR_EVENT2` records (PCR
//! index, event type, a count of digests each tagged with its `TPM_ALG_ID`, event size, event
//! data). `EV_NO_ACTION` events are not extended; the `StartupLocality` one (10.4.5.3) sets
//! PCR 0's starting value to the locality. The log ends at the end of the bytes or where only
//! zeros (the kernel's file, some firmware tables) or only 0xFF (an erased ACPI area, as the
//! CCEL's) follow.
//!
//! Bounds, so hostile bytes cannot make it allocate or loop without limit: [`MAX_LOG_SIZE`]
//! bytes, [`MAX_EVENTS`] records, 16 algorithms, each algorithm at most once per record (so a
//! record's digest count is bounded by the Spec ID event's list).

use crate::hash::{HashAlg, hex};

/// Logs larger than this are refused (OVMF's table is 64 KiB; real machines' up to a few MiB).
pub const MAX_LOG_SIZE: usize = 64 << 20;
/// Records after the Spec ID event; no real firmware log comes near.
pub const MAX_EVENTS: usize = 100_000;
/// Algorithms a Spec ID event may list.
pub const MAX_ALGORITHMS: u32 = 16;
const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";

pub const EV_PREBOOT_CERT: u32 = 0x0;
pub const EV_POST_CODE: u32 = 0x1;
pub const EV_NO_ACTION: u32 = 0x3;
pub const EV_SEPARATOR: u32 = 0x4;
pub const EV_ACTION: u32 = 0x5;
pub const EV_EVENT_TAG: u32 = 0x6;
pub const EV_S_CRTM_CONTENTS: u32 = 0x7;
pub const EV_S_CRTM_VERSION: u32 = 0x8;
pub const EV_IPL: u32 = 0xd;
pub const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
pub const EV_EFI_VARIABLE_BOOT: u32 = 0x8000_0002;
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
pub const EV_EFI_BOOT_SERVICES_DRIVER: u32 = 0x8000_0004;
pub const EV_EFI_RUNTIME_SERVICES_DRIVER: u32 = 0x8000_0005;
pub const EV_EFI_GPT_EVENT: u32 = 0x8000_0006;
pub const EV_EFI_ACTION: u32 = 0x8000_0007;
pub const EV_EFI_PLATFORM_FIRMWARE_BLOB: u32 = 0x8000_0008;
pub const EV_EFI_HANDOFF_TABLES: u32 = 0x8000_0009;
pub const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00e0;

/// The name of an event type as the TCG spec (and tpm2_eventlog) spells it.
pub fn event_type_name(t: u32) -> String {
    match t {
        EV_PREBOOT_CERT => "EV_PREBOOT_CERT".into(),
        EV_POST_CODE => "EV_POST_CODE".into(),
        EV_NO_ACTION => "EV_NO_ACTION".into(),
        EV_SEPARATOR => "EV_SEPARATOR".into(),
        EV_ACTION => "EV_ACTION".into(),
        EV_EVENT_TAG => "EV_EVENT_TAG".into(),
        EV_S_CRTM_CONTENTS => "EV_S_CRTM_CONTENTS".into(),
        EV_S_CRTM_VERSION => "EV_S_CRTM_VERSION".into(),
        EV_IPL => "EV_IPL".into(),
        EV_EFI_VARIABLE_DRIVER_CONFIG => "EV_EFI_VARIABLE_DRIVER_CONFIG".into(),
        EV_EFI_VARIABLE_BOOT => "EV_EFI_VARIABLE_BOOT".into(),
        EV_EFI_BOOT_SERVICES_APPLICATION => "EV_EFI_BOOT_SERVICES_APPLICATION".into(),
        EV_EFI_BOOT_SERVICES_DRIVER => "EV_EFI_BOOT_SERVICES_DRIVER".into(),
        EV_EFI_RUNTIME_SERVICES_DRIVER => "EV_EFI_RUNTIME_SERVICES_DRIVER".into(),
        EV_EFI_GPT_EVENT => "EV_EFI_GPT_EVENT".into(),
        EV_EFI_ACTION => "EV_EFI_ACTION".into(),
        EV_EFI_PLATFORM_FIRMWARE_BLOB => "EV_EFI_PLATFORM_FIRMWARE_BLOB".into(),
        EV_EFI_HANDOFF_TABLES => "EV_EFI_HANDOFF_TABLES".into(),
        EV_EFI_VARIABLE_AUTHORITY => "EV_EFI_VARIABLE_AUTHORITY".into(),
        t => format!("{t:#x}"),
    }
}

/// What is wrong with a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventLogError {
    #[error("event log of {0} bytes is larger than the limit of {MAX_LOG_SIZE}")]
    TooLarge(usize),
    #[error("event log truncated in event {index} ({what}) at offset {offset}")]
    Truncated {
        index: usize,
        what: &'static str,
        offset: usize,
    },
    #[error("the first event is not a Spec ID Event03 (not a crypto-agile log)")]
    NoSpecId,
    #[error("Spec ID event lists {0} algorithms; 1 to {MAX_ALGORITHMS} are accepted")]
    AlgorithmCount(u32),
    #[error("event {index}: digest of algorithm {alg:#06x}, which the Spec ID event does not list")]
    UnknownAlgorithm { index: usize, alg: u16 },
    #[error("event {index}: {count} digests for the {max} algorithms of the log")]
    TooManyDigests {
        index: usize,
        count: u32,
        max: usize,
    },
    #[error("event {index}: two digests of algorithm {alg:#06x}")]
    DuplicateDigest { index: usize, alg: u16 },
    #[error("more than {MAX_EVENTS} events")]
    TooManyEvents,
    #[error("event {index}: no {alg} digest")]
    MissingDigest { index: usize, alg: HashAlg },
    #[error("event {index}: PCR {pcr} is out of range (0-23)")]
    BadPcr { index: usize, pcr: u32 },
}

/// One `TCG_PCR_EVENT2` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the log (0 is the Spec ID event).
    pub index: usize,
    /// Byte offset of the record in the log.
    pub offset: usize,
    /// The PCR (in a CCEL: the measurement-register index).
    pub pcr: u32,
    pub event_type: u32,
    /// The digests, as (TPM_ALG_ID, bytes).
    pub digests: Vec<(u16, Vec<u8>)>,
    /// The event data.
    pub data: Vec<u8>,
}

impl Event {
    /// The digest for `alg`, if the event has one.
    pub fn digest(&self, alg: HashAlg) -> Option<&[u8]> {
        self.digest_by_id(alg.tpm_alg_id())
    }

    /// The digest for the TPM_ALG_ID `alg`, if the event has one.
    pub fn digest_by_id(&self, alg: u16) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(id, _)| *id == alg)
            .map(|(_, d)| d.as_slice())
    }

    /// A one-line description for messages: type, PCR and printable event data.
    pub fn describe(&self) -> String {
        let text = printable(&self.data);
        format!(
            "#{} PCR {} {} {:?}",
            self.index,
            self.pcr,
            event_type_name(self.event_type),
            text
        )
    }
}

/// The event data as text when it is ASCII or UTF-16LE text, else hex (at most 64 bytes).
pub fn printable(data: &[u8]) -> String {
    let trimmed: &[u8] = match data.iter().rposition(|&b| b != 0) {
        Some(p) => &data[..=p],
        None => &[],
    };
    if !trimmed.is_empty() && trimmed.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        return String::from_utf8_lossy(trimmed).into_owned();
    }
    if data.len() >= 2 && data.len().is_multiple_of(2) {
        let units: Vec<u16> = data
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let end = units.iter().rposition(|&u| u != 0).map_or(0, |p| p + 1);
        let units = &units[..end];
        if !units.is_empty() && units.iter().all(|&u| (0x20..0x7f).contains(&u)) {
            return String::from_utf16_lossy(units);
        }
    }
    let shown = &data[..data.len().min(64)];
    format!("0x{}{}", hex(shown), if data.len() > 64 { "…" } else { "" })
}

/// The PCRs' values after TPM2_Startup(CLEAR) without a DRTM launch (TCG PC Client Platform TPM
/// Profile, PCR attributes): PCRs 17–22 all ones, the others zero.
pub fn initial_pcrs(alg: HashAlg) -> Vec<Vec<u8>> {
    (0..24)
        .map(|n| vec![if (17..=22).contains(&n) { 0xff } else { 0 }; alg.digest_len()])
        .collect()
}

/// The `TCG_EfiSpecIDEvent` of the first record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecId {
    pub platform_class: u32,
    pub spec_version_minor: u8,
    pub spec_version_major: u8,
    pub spec_errata: u8,
    pub uintn_size: u8,
    /// The algorithms: (TPM_ALG_ID, digest size).
    pub algorithms: Vec<(u16, u16)>,
    pub vendor_info: Vec<u8>,
}

impl SpecId {
    /// The Spec ID event of a PC Client log (spec 2.0, errata 0, UINTN of 8 bytes) for `banks`.
    pub fn for_banks(banks: &[HashAlg]) -> SpecId {
        SpecId {
            platform_class: 0,
            spec_version_minor: 0,
            spec_version_major: 2,
            spec_errata: 0,
            uintn_size: 2,
            algorithms: banks
                .iter()
                .map(|a| (a.tpm_alg_id(), a.digest_len() as u16))
                .collect(),
            vendor_info: Vec::new(),
        }
    }
}

/// A parsed log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// The index field of the Spec ID record (not extended anywhere).
    pub header_index: u32,
    pub spec_id: SpecId,
    /// Every event after the Spec ID event.
    pub events: Vec<Event>,
}

struct Reader<'a> {
    data: &'a [u8],
    off: usize,
    index: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], EventLogError> {
        let end = self
            .off
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(EventLogError::Truncated {
                index: self.index,
                what,
                offset: self.off,
            })?;
        let s = &self.data[self.off..end];
        self.off = end;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, EventLogError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, EventLogError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, EventLogError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

impl EventLog {
    /// Parses a crypto-agile log.
    pub fn parse(data: &[u8]) -> Result<EventLog, EventLogError> {
        if data.len() > MAX_LOG_SIZE {
            return Err(EventLogError::TooLarge(data.len()));
        }
        let mut r = Reader {
            data,
            off: 0,
            index: 0,
        };
        // TCG_PCClientPCREvent: pcrIndex, eventType, SHA-1 digest, eventDataSize, event.
        let header_index = r.u32("pcrIndex")?;
        let etype = r.u32("eventType")?;
        r.take(20, "digest")?;
        let size = r.u32("eventDataSize")? as usize;
        let spec = r.take(size, "Spec ID event")?;
        if etype != EV_NO_ACTION || spec.len() < 16 || &spec[..16] != SPEC_ID_SIGNATURE {
            return Err(EventLogError::NoSpecId);
        }
        let mut s = Reader {
            data: spec,
            off: 16,
            index: 0,
        };
        let platform_class = s.u32("platformClass")?;
        let spec_version_minor = s.u8("specVersionMinor")?;
        let spec_version_major = s.u8("specVersionMajor")?;
        let spec_errata = s.u8("specErrata")?;
        let uintn_size = s.u8("uintnSize")?;
        let n = s.u32("numberOfAlgorithms")?;
        if n == 0 || n > MAX_ALGORITHMS {
            return Err(EventLogError::AlgorithmCount(n));
        }
        let mut algorithms = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let id = s.u16("algorithmId")?;
            let size = s.u16("digestSize")?;
            algorithms.push((id, size));
        }
        let vendor_len = s.u8("vendorInfoSize")?;
        let vendor_info = s.take(usize::from(vendor_len), "vendorInfo")?.to_vec();
        let mut events = Vec::new();
        loop {
            let rest = &data[r.off..];
            if rest.iter().all(|&b| b == 0) || rest.iter().all(|&b| b == 0xff) {
                break;
            }
            if events.len() >= MAX_EVENTS {
                return Err(EventLogError::TooManyEvents);
            }
            r.index += 1;
            let index = r.index;
            let offset = r.off;
            let pcr = r.u32("pcrIndex")?;
            let event_type = r.u32("eventType")?;
            let count = r.u32("digests.count")?;
            if count as usize > algorithms.len() {
                return Err(EventLogError::TooManyDigests {
                    index,
                    count,
                    max: algorithms.len(),
                });
            }
            let mut digests: Vec<(u16, Vec<u8>)> = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let alg = r.u16("hashAlg")?;
                let size = algorithms
                    .iter()
                    .find(|(id, _)| *id == alg)
                    .map(|(_, s)| *s as usize)
                    .ok_or(EventLogError::UnknownAlgorithm { index, alg })?;
                if digests.iter().any(|(a, _)| *a == alg) {
                    return Err(EventLogError::DuplicateDigest { index, alg });
                }
                digests.push((alg, r.take(size, "digest")?.to_vec()));
            }
            let size = r.u32("eventSize")? as usize;
            let data = r.take(size, "event data")?.to_vec();
            events.push(Event {
                index,
                offset,
                pcr,
                event_type,
                digests,
                data,
            });
        }
        Ok(EventLog {
            header_index,
            spec_id: SpecId {
                platform_class,
                spec_version_minor,
                spec_version_major,
                spec_errata,
                uintn_size,
                algorithms,
                vendor_info,
            },
            events,
        })
    }

    /// A log for `banks` whose events (PCR, type, data) carry the digests of their data in each
    /// bank, as firmware measures most events; indexes and offsets as [`EventLog::parse`] of
    /// its [`encode`](EventLog::encode) gives them.
    pub fn with_events(banks: &[HashAlg], events: &[(u32, u32, &[u8])]) -> EventLog {
        let spec_id = SpecId::for_banks(banks);
        let mut log = EventLog {
            header_index: 0,
            spec_id,
            events: Vec::new(),
        };
        for (pcr, event_type, data) in events {
            log.events.push(Event {
                index: 0,
                offset: 0,
                pcr: *pcr,
                event_type: *event_type,
                digests: banks
                    .iter()
                    .map(|a| (a.tpm_alg_id(), a.digest(data)))
                    .collect(),
                data: data.to_vec(),
            });
        }
        log.renumber();
        log
    }

    /// Sets each event's index and offset to where [`EventLog::encode`] puts it.
    pub fn renumber(&mut self) {
        let mut offset = 32 + self.spec_id_bytes().len();
        for (i, e) in self.events.iter_mut().enumerate() {
            e.index = i + 1;
            e.offset = offset;
            offset += 16 + e.digests.iter().map(|(_, d)| 2 + d.len()).sum::<usize>() + e.data.len();
        }
    }

    fn spec_id_bytes(&self) -> Vec<u8> {
        let s = &self.spec_id;
        let mut out = SPEC_ID_SIGNATURE.to_vec();
        out.extend_from_slice(&s.platform_class.to_le_bytes());
        out.extend_from_slice(&[
            s.spec_version_minor,
            s.spec_version_major,
            s.spec_errata,
            s.uintn_size,
        ]);
        out.extend_from_slice(&(s.algorithms.len() as u32).to_le_bytes());
        for (id, size) in &s.algorithms {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&size.to_le_bytes());
        }
        out.push(s.vendor_info.len() as u8);
        out.extend_from_slice(&s.vendor_info);
        out
    }

    /// The log's bytes: what [`EventLog::parse`] reads back (a real log, unpadded, comes back
    /// byte for byte). For tests and fixtures; nothing checks the digests against the data.
    pub fn encode(&self) -> Vec<u8> {
        let spec = self.spec_id_bytes();
        let mut out = Vec::new();
        out.extend_from_slice(&self.header_index.to_le_bytes());
        out.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        out.extend_from_slice(&[0u8; 20]);
        out.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        out.extend_from_slice(&spec);
        for e in &self.events {
            out.extend_from_slice(&e.pcr.to_le_bytes());
            out.extend_from_slice(&e.event_type.to_le_bytes());
            out.extend_from_slice(&(e.digests.len() as u32).to_le_bytes());
            for (id, d) in &e.digests {
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(d);
            }
            out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            out.extend_from_slice(&e.data);
        }
        out
    }

    /// The banks of the log that this crate can replay.
    pub fn banks(&self) -> Vec<HashAlg> {
        self.spec_id
            .algorithms
            .iter()
            .filter_map(|(id, _)| HashAlg::from_tpm_alg_id(*id))
            .collect()
    }

    /// Replays the log for `alg` from [`initial_pcrs`]: the 24 PCRs' values.
    pub fn replay(&self, alg: HashAlg) -> Result<Vec<Vec<u8>>, EventLogError> {
        let mut pcrs = initial_pcrs(alg);
        for e in &self.events {
            if e.pcr >= 24 {
                return Err(EventLogError::BadPcr {
                    index: e.index,
                    pcr: e.pcr,
                });
            }
            if e.event_type == EV_NO_ACTION {
                if e.pcr == 0 && e.data.len() == 17 && &e.data[..16] == b"StartupLocality\0" {
                    let mut v = vec![0u8; alg.digest_len()];
                    v[alg.digest_len() - 1] = e.data[16];
                    pcrs[0] = v;
                }
                continue;
            }
            let d = e.digest(alg).ok_or(EventLogError::MissingDigest {
                index: e.index,
                alg,
            })?;
            pcrs[e.pcr as usize] = alg.extend(&pcrs[e.pcr as usize], d);
        }
        Ok(pcrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log with sha1 and sha256 banks holding `events` (pcr, type, data); digests are the
    /// hashes of the data.
    fn make_log(events: &[(u32, u32, &[u8])]) -> Vec<u8> {
        EventLog::with_events(&[HashAlg::Sha1, HashAlg::Sha256], events).encode()
    }

    #[test]
    fn parses_and_replays() {
        let log = make_log(&[
            (0, EV_NO_ACTION, b"StartupLocality\0\x03"),
            (
                4,
                EV_EFI_ACTION,
                b"Calling EFI Application from Boot Option",
            ),
            (4, EV_SEPARATOR, &[0, 0, 0, 0]),
        ]);
        let mut padded = log.clone();
        padded.extend_from_slice(&[0u8; 100]);
        let parsed = EventLog::parse(&padded).unwrap();
        assert_eq!(parsed, EventLog::parse(&log).unwrap());
        assert_eq!(parsed.events.len(), 3);
        assert_eq!(parsed.banks(), [HashAlg::Sha1, HashAlg::Sha256]);
        let pcrs = parsed.replay(HashAlg::Sha256).unwrap();
        let a = HashAlg::Sha256;
        let mut want = vec![0u8; 32];
        want = a.extend(
            &want,
            &a.digest(b"Calling EFI Application from Boot Option"),
        );
        want = a.extend(&want, &a.digest(&[0, 0, 0, 0]));
        assert_eq!(pcrs[4], want);
        let mut loc = vec![0u8; 32];
        loc[31] = 3;
        assert_eq!(pcrs[0], loc);
        assert_eq!(
            parsed.events[1].describe(),
            "#2 PCR 4 EV_EFI_ACTION \"Calling EFI Application from Boot Option\""
        );
        assert_eq!(
            parsed.replay(HashAlg::Sha384),
            Err(EventLogError::MissingDigest {
                index: 2,
                alg: HashAlg::Sha384
            })
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let log = make_log(&[(4, EV_SEPARATOR, &[1, 2, 3, 4])]);
        for n in 0..log.len() {
            // A prefix ending where only zeros would follow can be a complete log; all others
            // must fail.
            let _ = EventLog::parse(&log[..n]);
        }
        assert!(EventLog::parse(&log[..log.len() - 1]).is_err());
        assert!(EventLog::parse(&log[..40]).is_err());
        for i in 0..log.len() {
            for v in [0u8, 0xff, 0x10] {
                let mut x = log.clone();
                x[i] = v;
                if let Ok(l) = EventLog::parse(&x) {
                    for a in HashAlg::ALL {
                        let _ = l.replay(a);
                    }
                }
            }
        }
    }

    /// The real OVMF + swtpm logs of cvm-uki's fixtures (see its PROVENANCE.md) come back from
    /// parse → encode byte for byte (up to the trailing zeros), and a 0xFF tail (an erased
    /// CCEL area) ends a log like a zero one.
    #[test]
    fn real_logs_round_trip_and_tails() {
        for tag in ["ovmf-qemu-kernel", "ovmf-boot-option"] {
            let p = format!(
                "{}/../uki/tests/fixtures/{tag}.eventlog.bin",
                env!("CARGO_MANIFEST_DIR")
            );
            let bytes = std::fs::read(&p).unwrap();
            let log = EventLog::parse(&bytes).unwrap();
            let encoded = log.encode();
            assert_eq!(encoded, bytes[..encoded.len()], "{tag}");
            assert!(bytes[encoded.len()..].iter().all(|&b| b == 0), "{tag}");
            let mut renumbered = log.clone();
            renumbered.renumber();
            assert_eq!(
                renumbered, log,
                "{tag}: renumber gives parse's indexes and offsets"
            );
            let mut erased = encoded.clone();
            erased.extend_from_slice(&[0xff; 64]);
            assert_eq!(EventLog::parse(&erased).unwrap(), log, "{tag}");
            // Anything else after the last event is a (truncated) event.
            let mut junk = encoded.clone();
            junk.extend_from_slice(&[0xff, 0]);
            assert!(EventLog::parse(&junk).is_err(), "{tag}");
        }
    }

    #[test]
    fn hostile_counts_and_sizes() {
        let log = make_log(&[(4, EV_SEPARATOR, &[1, 2, 3, 4])]);
        let first = EventLog::parse(&log).unwrap().events[0].offset;
        // The same algorithm twice in one record.
        let mut dup = EventLog::parse(&log).unwrap();
        let d = dup.events[0].digests[1].clone();
        dup.events[0].digests = vec![d.clone(), d];
        assert_eq!(
            EventLog::parse(&dup.encode()),
            Err(EventLogError::DuplicateDigest {
                index: 1,
                alg: HashAlg::Sha256.tpm_alg_id()
            })
        );
        let mut count = log.clone();
        count[first + 8..first + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            EventLog::parse(&count),
            Err(EventLogError::TooManyDigests {
                count: u32::MAX,
                ..
            })
        ));
        let mut size = log.clone();
        let at = log.len() - 8;
        size[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            EventLog::parse(&size),
            Err(EventLogError::Truncated { .. })
        ));
        assert_eq!(
            EventLog::parse(&vec![1u8; MAX_LOG_SIZE + 1]),
            Err(EventLogError::TooLarge(MAX_LOG_SIZE + 1))
        );
        let no_alg = EventLog::with_events(&[], &[]).encode();
        assert_eq!(
            EventLog::parse(&no_alg),
            Err(EventLogError::AlgorithmCount(0))
        );
    }

    #[test]
    fn printable_text() {
        assert_eq!(printable(b".linux\0"), ".linux");
        let utf16: Vec<u8> = ".linux\0"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        assert_eq!(printable(&utf16), ".linux");
        assert_eq!(printable(&[0, 1, 2]), "0x000102");
    }
}
