//! The event log: one record per extend, CEL-JSON records in the JSON-SEQ layout of systemd's
//! `/run/log/systemd/tpm2-measure.log`.
//!
//! # File layout
//!
//! Each record is `0x1E` (RS), one JSON object, `\n` (RFC 7464 JSON text sequences), the way
//! systemd writes its userspace measurement log. A record is a TCG Canonical Event Log
//! (CEL-JSON) event:
//!
//! ```json
//! {"recnum":0,"pcr":15,
//!  "digests":[{"hashAlg":"sha256","digest":"<hex>"}],
//!  "content_type":"cvm-agent",
//!  "content":{"event":"mode","string":"production"}}
//! ```
//!
//! `recnum` is CEL's record number (0-based); systemd leaves it out, so it is optional when
//! reading, and checked when present. `content_type` is `"cvm-agent"` for the agent's records,
//! whose `content` is exactly `{"event": <kind>, "string": <value>}` (see [`super`] for kinds,
//! values and the digest rule). Records of other content types (systemd's `"systemd"` records
//! with `{"string", "eventType", "bootId", "timestamp"}` content, say) are kept as they are and
//! replayed by their digests; their content is not interpreted. They may extend any PCR but
//! the agent's: PCR 15 holds only `cvm-agent` records, because a record whose content is not
//! checked is a record whose meaning a host can change — a separator relabelled as a foreign
//! record (same digest) would otherwise turn a log taken after launch into a pre-launch one.
//!
//! # Strictness
//!
//! The log comes from a guest the reader does not trust yet: at most [`MAX_RECORDS`] records of
//! at most [`MAX_RECORD_LEN`] bytes, unknown fields are errors, digests must have their bank's
//! length, PCRs are 0-23, and [`EventLog::verify`] checks each agent record's digests against
//! its content, the event order, that PCR 15 has only agent records, and that nothing follows
//! the separator in PCR 15.

use std::io::{Read, Write};
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    EventKind, MeasureError, PCR_AGENT, Pcrs, bank_from_name, check_banks, check_value, extend,
    hash, hex, preimage,
};
use cvm_tpm::HashAlg;

/// The agent's content type.
pub const CONTENT_TYPE: &str = "cvm-agent";
/// The agent writes about a dozen records; systemd a few dozen.
pub const MAX_RECORDS: usize = 1024;
/// One record (JSON text, without RS and LF).
pub const MAX_RECORD_LEN: usize = 64 * 1024;
/// TPM 2.0 PC Client PCRs are 0-23.
pub const MAX_PCR: u32 = 23;
const RS: u8 = 0x1e;

/// One extend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub pcr: u32,
    /// One digest per bank, in the order given.
    pub digests: Vec<(HashAlg, Vec<u8>)>,
    pub content_type: String,
    pub content: Content,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A cvm-agent record.
    Agent { event: EventKind, string: String },
    /// Any other content type's content object, kept verbatim.
    Other(Map<String, Value>),
}

impl Record {
    pub fn digest(&self, alg: HashAlg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, d)| d.as_slice())
    }

    /// The agent event this record is, if it is one.
    pub fn agent_event(&self) -> Option<(EventKind, &str)> {
        match &self.content {
            Content::Agent { event, string } => Some((*event, string.as_str())),
            Content::Other(_) => None,
        }
    }

    fn to_json(&self, recnum: usize) -> Value {
        #[derive(Serialize)]
        struct Digest {
            #[serde(rename = "hashAlg")]
            hash_alg: &'static str,
            digest: String,
        }
        #[derive(Serialize)]
        struct AgentContent<'a> {
            event: &'static str,
            string: &'a str,
        }
        // Field order as in systemd's and CEL's examples (derive keeps declaration order).
        #[derive(Serialize)]
        struct Wire<'a> {
            recnum: usize,
            pcr: u32,
            digests: Vec<Digest>,
            content_type: &'a str,
            content: Value,
        }
        let content = match &self.content {
            Content::Agent { event, string } => serde_json::to_value(AgentContent {
                event: event.name(),
                string,
            })
            .unwrap_or(Value::Null),
            Content::Other(map) => Value::Object(map.clone()),
        };
        let wire = Wire {
            recnum,
            pcr: self.pcr,
            digests: self
                .digests
                .iter()
                .map(|(alg, d)| Digest {
                    hash_alg: alg.name(),
                    digest: hex::encode(d),
                })
                .collect(),
            content_type: &self.content_type,
            content,
        };
        // Serialising plain strings and numbers into a Value cannot fail.
        serde_json::to_value(wire).unwrap_or(Value::Null)
    }

    /// Strict reading of one record object.
    fn from_json(index: usize, value: &Value) -> Result<Record, MeasureError> {
        let bad = |why: String| MeasureError::Record { index, why };
        let object = value
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        for key in object.keys() {
            if !matches!(
                key.as_str(),
                "recnum" | "pcr" | "digests" | "content_type" | "content"
            ) {
                return Err(bad(format!("unknown field {key:?}")));
            }
        }
        if let Some(recnum) = object.get("recnum")
            && recnum.as_u64() != Some(index as u64)
        {
            return Err(bad(format!("recnum is {recnum}, expected {index}")));
        }
        let pcr = object
            .get("pcr")
            .ok_or_else(|| bad("no pcr (only PCR records are supported)".into()))?
            .as_u64()
            .filter(|&p| p <= u64::from(MAX_PCR))
            .ok_or_else(|| bad("pcr is not an index 0-23".into()))? as u32;
        let digests = object
            .get("digests")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("digests is not an array".into()))?;
        if digests.is_empty() || digests.len() > HashAlg::ALL.len() {
            return Err(bad(format!("{} digests (expected 1-5)", digests.len())));
        }
        let mut parsed: Vec<(HashAlg, Vec<u8>)> = Vec::with_capacity(digests.len());
        for digest in digests {
            let digest = digest
                .as_object()
                .ok_or_else(|| bad("a digest is not an object".into()))?;
            if digest.len() != 2 {
                return Err(bad("a digest must have exactly hashAlg and digest".into()));
            }
            let name = digest
                .get("hashAlg")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("a digest has no hashAlg".into()))?;
            let alg =
                bank_from_name(name).ok_or_else(|| bad(format!("unknown hashAlg {name:?}")))?;
            if parsed.iter().any(|(a, _)| *a == alg) {
                return Err(bad(format!("two {name} digests")));
            }
            let bytes = digest
                .get("digest")
                .and_then(Value::as_str)
                .and_then(hex::decode)
                .filter(|d| d.len() == alg.digest_len())
                .ok_or_else(|| {
                    bad(format!(
                        "{name} digest is not {} hex digits",
                        2 * alg.digest_len()
                    ))
                })?;
            parsed.push((alg, bytes));
        }
        let content_type = object
            .get("content_type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("content_type is not a string".into()))?
            .to_string();
        let content = object
            .get("content")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("content is not an object".into()))?;
        let content = if content_type == CONTENT_TYPE {
            if content.len() != 2 {
                return Err(bad(
                    "cvm-agent content must be exactly {event, string}".into()
                ));
            }
            let event = content
                .get("event")
                .and_then(Value::as_str)
                .and_then(EventKind::from_name)
                .ok_or_else(|| bad("content.event is not a cvm-agent event".into()))?;
            let string = content
                .get("string")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("content.string is not a string".into()))?
                .to_string();
            Content::Agent { event, string }
        } else {
            Content::Other(content.clone())
        };
        Ok(Record {
            pcr,
            digests: parsed,
            content_type,
            content,
        })
    }
}

/// An ordered list of records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventLog {
    records: Vec<Record>,
}

impl EventLog {
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Appends a record, keeping the bounds a reader enforces (a log the agent writes must be
    /// one its verifier accepts).
    pub(crate) fn push(&mut self, record: Record) -> Result<(), MeasureError> {
        if self.records.len() >= MAX_RECORDS {
            return Err(MeasureError::TooManyRecords);
        }
        let index = self.records.len();
        let len = record.to_json(index).to_string().len();
        if len > MAX_RECORD_LEN {
            return Err(MeasureError::RecordTooLarge { index, len });
        }
        self.records.push(record);
        Ok(())
    }

    /// The records as a JSON array (the `log` of a prediction).
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.records
                .iter()
                .enumerate()
                .map(|(i, r)| r.to_json(i))
                .collect(),
        )
    }

    /// The JSON-SEQ file: `RS <json> LF` per record.
    pub fn to_json_seq(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, record) in self.records.iter().enumerate() {
            out.push(RS);
            out.extend_from_slice(record.to_json(i).to_string().as_bytes());
            out.push(b'\n');
        }
        out
    }

    /// Parses a JSON-SEQ log. Empty input is an empty log.
    pub fn parse(bytes: &[u8]) -> Result<EventLog, MeasureError> {
        if bytes.len() > max_file_len() {
            return Err(MeasureError::Format(format!(
                "larger than {} bytes ({MAX_RECORDS} records of at most {MAX_RECORD_LEN} bytes)",
                max_file_len()
            )));
        }
        if bytes.is_empty() {
            return Ok(EventLog::default());
        }
        if bytes[0] != RS {
            return Err(MeasureError::Format(
                "not a JSON-SEQ log (it must start with the 0x1E record separator)".into(),
            ));
        }
        let mut log = EventLog::default();
        // A JSON text cannot contain a raw 0x1E (control characters are escaped in strings
        // and are not whitespace elsewhere), so splitting on it is exact.
        for (index, chunk) in bytes[1..].split(|&b| b == RS).enumerate() {
            if index >= MAX_RECORDS {
                return Err(MeasureError::TooManyRecords);
            }
            let text = chunk
                .strip_suffix(b"\n")
                .ok_or_else(|| MeasureError::Record {
                    index,
                    why: "does not end with a newline".into(),
                })?;
            if text.len() > MAX_RECORD_LEN {
                return Err(MeasureError::RecordTooLarge {
                    index,
                    len: text.len(),
                });
            }
            let value: Value = serde_json::from_slice(text).map_err(|e| MeasureError::Record {
                index,
                why: format!("not JSON ({e})"),
            })?;
            log.records.push(Record::from_json(index, &value)?);
        }
        Ok(log)
    }

    /// Parses the JSON array form (a prediction's `log`).
    pub fn from_json(value: &Value) -> Result<EventLog, MeasureError> {
        let items = value
            .as_array()
            .ok_or_else(|| MeasureError::Format("expected a JSON array of records".into()))?;
        if items.len() > MAX_RECORDS {
            return Err(MeasureError::TooManyRecords);
        }
        let records = items
            .iter()
            .enumerate()
            .map(|(i, v)| Record::from_json(i, v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EventLog { records })
    }

    /// Reads and parses a log file, bounded.
    pub fn read(path: &Path) -> Result<EventLog, MeasureError> {
        let io = |source| MeasureError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::new();
        file.take(max_file_len() as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        EventLog::parse(&bytes)
    }

    /// Writes the JSON-SEQ file atomically (temporary file, fsync, rename) with mode 0444: the
    /// workload may read it, nobody but root may replace it.
    pub fn write(&self, path: &Path) -> Result<(), MeasureError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| MeasureError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp = path.with_file_name(tmp_name);
        // A stale temporary file (read-only, from a crash) would make create_new fail.
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(&self.to_json_seq()).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The banks any record has a digest for, by TPM_ALG_ID.
    pub fn banks(&self) -> Vec<HashAlg> {
        let mut banks: Vec<HashAlg> = Vec::new();
        for (alg, _) in self.records.iter().flat_map(|r| r.digests.iter()) {
            if !banks.contains(alg) {
                banks.push(*alg);
            }
        }
        banks.sort_by_key(|alg| alg.tpm_alg_id());
        banks
    }

    /// Whether the launch separator is in the log.
    pub fn has_separator(&self) -> bool {
        self.records
            .iter()
            .any(|r| matches!(r.agent_event(), Some((EventKind::Separator, _))))
    }

    /// Checks what the digests alone cannot: every agent record's content matches its digests
    /// (so the log tells the truth about what was extended), is on its event's PCR, agent
    /// events are in order, PCR 15 has no record but the agent's, and nothing follows the
    /// separator in PCR 15.
    pub fn verify(&self) -> Result<(), MeasureError> {
        let mut last: Option<EventKind> = None;
        let mut sealed = false;
        for (index, record) in self.records.iter().enumerate() {
            let bad = |why: String| MeasureError::Record { index, why };
            if sealed && record.pcr == PCR_AGENT {
                return Err(bad(format!(
                    "a PCR {PCR_AGENT} record after the launch separator"
                )));
            }
            let Some((event, string)) = record.agent_event() else {
                if record.pcr == PCR_AGENT {
                    return Err(bad(format!(
                        "a {:?} record in PCR {PCR_AGENT}: only cvm-agent records may extend it",
                        record.content_type
                    )));
                }
                continue;
            };
            if sealed {
                return Err(bad(format!(
                    "cvm-agent event {event} after the launch separator"
                )));
            }
            if record.pcr != event.pcr() {
                return Err(bad(format!(
                    "{event} is recorded in PCR {}, not {}",
                    record.pcr,
                    event.pcr()
                )));
            }
            if let Some(last) = last
                && event <= last
            {
                return Err(bad(format!("{event} cannot follow {last}")));
            }
            check_value(event, string).map_err(|e| bad(e.to_string()))?;
            for (alg, digest) in &record.digests {
                let expected = if event == EventKind::InitData {
                    // Only the SHA-256 digest can be checked from the log: the value is the
                    // SHA-256 of the raw init-data, the other banks' digests are of bytes the
                    // log does not carry. They are still bound by the replayed PCR values.
                    if *alg != HashAlg::Sha256 {
                        continue;
                    }
                    hex::decode(string).unwrap_or_default()
                } else {
                    hash(*alg, preimage(event, string).as_bytes())
                        .map_err(|e| bad(e.to_string()))?
                };
                if *digest != expected {
                    return Err(bad(format!(
                        "the {alg} digest does not match the content of {event}"
                    )));
                }
            }
            last = Some(event);
            sealed = event == EventKind::Separator;
        }
        Ok(())
    }

    /// Replays the log into `banks` from all-zero PCRs (after [`EventLog::verify`]). Every
    /// record must carry a digest for every bank replayed. Only PCRs the log touches are in
    /// the result.
    pub fn replay(&self, banks: &[HashAlg]) -> Result<Pcrs, MeasureError> {
        let banks = check_banks(banks)?;
        self.verify()?;
        let mut pcrs = Pcrs::default();
        for (index, record) in self.records.iter().enumerate() {
            // PCRs 17-22 reset to all ones (D-RTM), so a replay from zero would be wrong.
            if (17..=22).contains(&record.pcr) {
                return Err(MeasureError::Record {
                    index,
                    why: format!(
                        "PCR {} is a D-RTM PCR that does not start at zero",
                        record.pcr
                    ),
                });
            }
            for &alg in &banks {
                let digest = record.digest(alg).ok_or(MeasureError::MissingDigest {
                    index,
                    bank: alg.name(),
                })?;
                let zero = vec![0u8; alg.digest_len()];
                let old = pcrs.get(alg, record.pcr).unwrap_or(&zero).to_vec();
                pcrs.insert(alg, record.pcr, extend(alg, &old, digest)?);
            }
        }
        Ok(pcrs)
    }
}

/// The largest file [`EventLog::parse`] reads: every record at its limit, plus RS and LF.
fn max_file_len() -> usize {
    MAX_RECORDS * (MAX_RECORD_LEN + 2)
}
