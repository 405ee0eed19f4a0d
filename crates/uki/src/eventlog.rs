//! A bounded parser of the firmware's TPM 2.0 event log in the crypto-agile format, as Linux
//! exposes it in `/sys/kernel/security/tpm0/binary_bios_measurements`, and its replay.
//!
//! Why: the predictions of [`crate::predict`] are only useful to a verifier that can hold them
//! against a log and the quoted PCRs, and the tests check them against a real boot's log.
//! Format: TCG PC Client Platform Firmware Profile Specification 1.05, 10.2: a first event in
//! the SHA-1 `TCG_PCClientPCREvent` form whose data is the `TCG_EfiSpecIDEvent` ("Spec ID
//! Event03", listing each algorithm's id and digest size), then `TCG_PCR_EVENT2` records (PCR
//! index, event type, a count of digests each tagged with its `TPM_ALG_ID`, event size, event
//! data). `EV_NO_ACTION` events are not extended; the `StartupLocality` one (10.4.5.3) sets
//! PCR 0's starting value to the locality. The kernel's file ends after the last event; zero
//! padding after it (as some firmware tables have) is accepted.

use crate::hash::{HashAlg, hex};

/// Logs larger than this are refused (OVMF's table is 64 KiB; real machines' up to a few MiB).
pub const MAX_LOG_SIZE: usize = 64 << 20;

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
    #[error("Spec ID event lists {0} algorithms, more than the 16 accepted")]
    TooManyAlgorithms(u32),
    #[error("event {index}: digest of algorithm {alg:#06x}, which the Spec ID event does not list")]
    UnknownAlgorithm { index: usize, alg: u16 },
    #[error("event {index}: {count} digests, more than the {max} algorithms of the log")]
    TooManyDigests {
        index: usize,
        count: u32,
        max: usize,
    },
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
        self.digests
            .iter()
            .find(|(id, _)| *id == alg.tpm_alg_id())
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

/// A parsed log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// The algorithms of the Spec ID event: (TPM_ALG_ID, digest size).
    pub algorithms: Vec<(u16, u16)>,
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
        let _pcr = r.u32("pcrIndex")?;
        let etype = r.u32("eventType")?;
        r.take(20, "digest")?;
        let size = r.u32("eventDataSize")? as usize;
        let spec = r.take(size, "Spec ID event")?;
        if etype != EV_NO_ACTION || spec.len() < 24 || &spec[..16] != b"Spec ID Event03\0" {
            return Err(EventLogError::NoSpecId);
        }
        let mut s = Reader {
            data: spec,
            off: 16,
            index: 0,
        };
        let _platform_class = s.u32("platformClass")?;
        let _minor = s.u8("specVersionMinor")?;
        let _major = s.u8("specVersionMajor")?;
        let _errata = s.u8("specErrata")?;
        let _uintn = s.u8("uintnSize")?;
        let n = s.u32("numberOfAlgorithms")?;
        if n > 16 {
            return Err(EventLogError::TooManyAlgorithms(n));
        }
        let mut algorithms = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let id = s.u16("algorithmId")?;
            let size = s.u16("digestSize")?;
            algorithms.push((id, size));
        }
        let mut events = Vec::new();
        loop {
            if data[r.off..].iter().all(|&b| b == 0) {
                break;
            }
            r.index += 1;
            let index = r.index;
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
            let mut digests = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let alg = r.u16("hashAlg")?;
                let size = algorithms
                    .iter()
                    .find(|(id, _)| *id == alg)
                    .map(|(_, s)| *s as usize)
                    .ok_or(EventLogError::UnknownAlgorithm { index, alg })?;
                digests.push((alg, r.take(size, "digest")?.to_vec()));
            }
            let size = r.u32("eventSize")? as usize;
            let data = r.take(size, "event data")?.to_vec();
            events.push(Event {
                index,
                pcr,
                event_type,
                digests,
                data,
            });
        }
        Ok(EventLog { algorithms, events })
    }

    /// The banks of the log that this crate can replay.
    pub fn banks(&self) -> Vec<HashAlg> {
        self.algorithms
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
pub(crate) mod tests {
    use super::*;

    /// A log with sha1 and sha256 banks holding `events` (pcr, type, data); digests are the
    /// hashes of the data.
    pub(crate) fn make_log(events: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut spec = b"Spec ID Event03\0".to_vec();
        spec.extend_from_slice(&0u32.to_le_bytes());
        spec.extend_from_slice(&[0, 2, 0, 2]);
        spec.extend_from_slice(&2u32.to_le_bytes());
        for a in [HashAlg::Sha1, HashAlg::Sha256] {
            spec.extend_from_slice(&a.tpm_alg_id().to_le_bytes());
            spec.extend_from_slice(&(a.digest_len() as u16).to_le_bytes());
        }
        spec.push(0);
        let mut out = Vec::new();
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        out.extend_from_slice(&[0u8; 20]);
        out.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        out.extend_from_slice(&spec);
        for (pcr, t, data) in events {
            out.extend_from_slice(&pcr.to_le_bytes());
            out.extend_from_slice(&t.to_le_bytes());
            out.extend_from_slice(&2u32.to_le_bytes());
            for a in [HashAlg::Sha1, HashAlg::Sha256] {
                out.extend_from_slice(&a.tpm_alg_id().to_le_bytes());
                out.extend_from_slice(&a.digest(data));
            }
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        out
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
