//! Measurements: what the agent extends into the vTPM (or TDX RTMR), the event log that
//! explains it, and the host-side prediction and replay of both.
//!
//! # Events
//!
//! The agent records, in this order and each at most once, one event per extend:
//!
//! | event | PCR | value (`string` in the log) |
//! | --- | --- | --- |
//! | `mode` | 15 | `production` or `debug` |
//! | `roothash` | 15 | dm-verity root hash, lower-case hex |
//! | `image-version` | 15 | `IMAGE_ID` and `IMAGE_VERSION` of os-release, space-separated ([`image_version`]) |
//! | `initdata` | 8 | lower-case hex SHA-256 of the raw init-data |
//! | `state-disk` | 15 | the state disk's identity |
//! | `workload-image` | 15 | the image reference as configured |
//! | `workload-digest` | 15 | the manifest digest the reference resolved to |
//! | `restart-policy` | 15 | `Never`, `OnFailure` or `Always` |
//! | `args` | 15 | final argv, as a compact JSON array of strings |
//! | `env` | 15 | final environment, as a compact JSON array of `NAME=value` strings |
//! | `overrides` | 15 | what the launch configuration overrode, as given by the agent |
//! | `separator` | 15 | empty: the **launch separator** |
//!
//! Events whose fact does not exist (no state disk, say) are left out; the order of those that
//! are recorded is fixed, so a log cannot be reordered into a different story.
//!
//! # The digest rule
//!
//! For every bank `H` (sha1, sha256, sha384, sha512) the digest extended for an event is
//!
//! ```text
//! digest_H = H(utf8("<event>:<value>"))        e.g. H("mode:production"), H("separator:")
//! ```
//!
//! except `initdata`, whose digest is fixed by Trustee's `tpm` verifier (see
//! [`cvm_initdata`]): `digest_H = H(raw init-data bytes)`; in the SHA-256 bank that is the
//! init-data digest for `algorithm = "sha256"`, and PCR 8 ends up as
//! `SHA256(0x00*32 ‖ SHA256(raw))`. The event name prefix keeps events apart: no value of one
//! event hashes like a value of another. A PCR extend is `PCR_new = H(PCR_old ‖ digest_H)`,
//! starting from all zeros (PCRs 8 and 15 are reset to zero and extended by nobody else when
//! the VM boots a UKI directly; a boot loader that measures the kernel command line into
//! PCR 8, like GRUB, breaks the init-data binding).
//!
//! # After the separator
//!
//! Nothing is extended into PCR 15 after the separator, and the workload has no TPM device, so
//! a log in which any PCR 15 record (or any cvm-agent record) follows the separator is refused
//! by [`EventLog::verify`] and [`EventLog::replay`], and [`Measurer::record`] refuses to record
//! after it. A compromised workload therefore cannot add pre-launch claims.
//!
//! # Secrets
//!
//! Event values are public: they are written to a log the workload and the host can read.
//! `env` is the final environment as given, so secrets must reach the workload as files under
//! `/run/secrets`, never through the environment.
#![forbid(unsafe_code)]

pub mod eventlog;
pub mod osrelease;
pub mod predict;
pub mod rtmr;

#[cfg(test)]
mod tests;

pub use eventlog::{CONTENT_TYPE, Content, EventLog, MAX_RECORD_LEN, MAX_RECORDS, Record};
pub use predict::{Facts, Prediction, predict};

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use sha2::Digest;

use cvm_initdata::Mode;
use cvm_initdata::{InitData, InitDataError, RestartPolicy};
use cvm_tpm::HashAlg;

/// The PCR init-data is bound to (Trustee's `INITDATA_PCR`).
pub const PCR_INITDATA: u32 = 8;
/// The PCR of the agent's boot facts (systemd's "system identity" PCR; on TDX it maps to
/// RTMR2 by the UAPI PCR→RTMR table).
pub const PCR_AGENT: u32 = 15;
/// Longest event value: the values are argv/env-sized, and a record must stay below
/// [`MAX_RECORD_LEN`] even after JSON escaping.
pub const MAX_VALUE_LEN: usize = 32 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error("PCR bank {0} is not supported (sha1, sha256, sha384, sha512 are)")]
    UnsupportedBank(&'static str),
    #[error("no PCR bank to measure into")]
    NoBanks,
    #[error("PCR bank {0} given twice")]
    DuplicateBank(&'static str),
    #[error("the launch separator was recorded: refusing to record {0} after it")]
    AfterSeparator(&'static str),
    #[error("event {event} cannot follow {after} (events have a fixed order, each at most once)")]
    OutOfOrder {
        event: &'static str,
        after: &'static str,
    },
    #[error("event {event}: {why}")]
    BadValue { event: &'static str, why: String },
    #[error("the event log has more than {MAX_RECORDS} records")]
    TooManyRecords,
    #[error("event log record {index} is {len} bytes (limit {MAX_RECORD_LEN})")]
    RecordTooLarge { index: usize, len: usize },
    #[error("event log: {0}")]
    Format(String),
    #[error("event log record {index}: {why}")]
    Record { index: usize, why: String },
    #[error("event log record {index} has no {bank} digest")]
    MissingDigest { index: usize, bank: &'static str },
    #[error("PCR values: {0}")]
    Pcrs(String),
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    InitData(#[from] InitDataError),
    #[error("{0}")]
    Usage(String),
}

/// Lower-case hex, used for every digest in logs and predictions (`hex::encode`/`decode`).
pub(crate) use cvm_text::hex;

/// `H(data)` for a PCR bank. SM3 has no pure-Rust implementation in the dependency set, and
/// no CVM we target allocates an SM3 bank, so it is an error rather than a guess.
pub fn hash(alg: HashAlg, data: &[u8]) -> Result<Vec<u8>, MeasureError> {
    Ok(computable(alg)?.digest(data))
}

/// `PCR_new = H(PCR_old ‖ digest)`, TPM2_PCR_Extend.
pub fn extend(alg: HashAlg, pcr: &[u8], digest: &[u8]) -> Result<Vec<u8>, MeasureError> {
    Ok(computable(alg)?.extend(pcr, digest))
}

fn computable(alg: HashAlg) -> Result<cvm_tcglog::HashAlg, MeasureError> {
    alg.computable()
        .ok_or(MeasureError::UnsupportedBank(alg.name()))
}

/// The bank names used in logs and JSON ("sha256", ...).
pub fn bank_from_name(name: &str) -> Option<HashAlg> {
    HashAlg::ALL.into_iter().find(|alg| alg.name() == name)
}

/// A PCR bank as a map key: [`HashAlg`] has no order of its own, so banks sort by TPM_ALG_ID
/// (sha1, sha256, sha384, sha512).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bank(pub HashAlg);

impl Ord for Bank {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.tpm_alg_id().cmp(&other.0.tpm_alg_id())
    }
}

impl PartialOrd for Bank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// PCR values by bank and index. As JSON: `{"sha256": {"8": "<hex>", "15": "<hex>"}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pcrs {
    values: BTreeMap<(Bank, u32), Vec<u8>>,
}

impl Pcrs {
    pub fn get(&self, alg: HashAlg, pcr: u32) -> Option<&[u8]> {
        self.values.get(&(Bank(alg), pcr)).map(Vec::as_slice)
    }

    /// The first PCR the TPM reports (`read`, in one bank) that differs from this replay, as
    /// `(pcr, actual, expected)`. A PCR the log never touched is expected to be all zeros:
    /// anything else is an extend the log cannot explain.
    pub fn mismatch(
        &self,
        alg: HashAlg,
        read: &[(u32, Vec<u8>)],
    ) -> Option<(u32, Vec<u8>, Vec<u8>)> {
        read.iter().find_map(|(pcr, actual)| {
            let expected = self
                .get(alg, *pcr)
                .map(<[u8]>::to_vec)
                .unwrap_or_else(|| vec![0; alg.digest_len()]);
            (*actual != expected).then(|| (*pcr, actual.clone(), expected))
        })
    }

    pub fn insert(&mut self, alg: HashAlg, pcr: u32, value: Vec<u8>) {
        self.values.insert((Bank(alg), pcr), value);
    }

    /// `(bank, pcr, value)` ordered by bank, then PCR.
    pub fn iter(&self) -> impl Iterator<Item = (HashAlg, u32, &[u8])> {
        self.values
            .iter()
            .map(|((bank, pcr), value)| (bank.0, *pcr, value.as_slice()))
    }

    pub fn as_map(&self) -> &BTreeMap<(Bank, u32), Vec<u8>> {
        &self.values
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut banks = serde_json::Map::new();
        for (alg, pcr, value) in self.iter() {
            let bank = banks
                .entry(alg.name())
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            if let serde_json::Value::Object(map) = bank {
                map.insert(pcr.to_string(), hex::encode(value).into());
            }
        }
        serde_json::Value::Object(banks)
    }

    /// Reads the JSON form back, strictly: known banks, PCRs 0-23, digests of the bank's
    /// length.
    pub fn from_json(value: &serde_json::Value) -> Result<Pcrs, MeasureError> {
        let bad = |why: String| MeasureError::Pcrs(why);
        let banks = value
            .as_object()
            .ok_or_else(|| bad("expected an object of banks".into()))?;
        let mut pcrs = Pcrs::default();
        for (name, entries) in banks {
            let alg = bank_from_name(name).ok_or_else(|| bad(format!("unknown bank {name:?}")))?;
            let entries = entries
                .as_object()
                .ok_or_else(|| bad(format!("{name}: expected an object of PCRs")))?;
            for (index, digest) in entries {
                let pcr = parse_pcr_index(index)
                    .ok_or_else(|| bad(format!("{name}: {index:?} is not a PCR index 0-23")))?;
                let digest = digest
                    .as_str()
                    .and_then(hex::decode)
                    .filter(|d| d.len() == alg.digest_len())
                    .ok_or_else(|| {
                        bad(format!(
                            "{name}.{index}: expected {} hex digits",
                            2 * alg.digest_len()
                        ))
                    })?;
                pcrs.insert(alg, pcr, digest);
            }
        }
        Ok(pcrs)
    }
}

impl serde::Serialize for Pcrs {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

/// "0".."23" without sign or leading zeros, so one PCR has one spelling.
fn parse_pcr_index(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 2 || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&pcr| pcr <= eventlog::MAX_PCR)
}

/// The agent's event kinds, in the order they are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    Mode,
    RootHash,
    ImageVersion,
    InitData,
    StateDisk,
    WorkloadImage,
    WorkloadDigest,
    RestartPolicy,
    Args,
    Env,
    Overrides,
    Separator,
}

impl EventKind {
    pub const ALL: [EventKind; 12] = [
        EventKind::Mode,
        EventKind::RootHash,
        EventKind::ImageVersion,
        EventKind::InitData,
        EventKind::StateDisk,
        EventKind::WorkloadImage,
        EventKind::WorkloadDigest,
        EventKind::RestartPolicy,
        EventKind::Args,
        EventKind::Env,
        EventKind::Overrides,
        EventKind::Separator,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Mode => "mode",
            EventKind::RootHash => "roothash",
            EventKind::ImageVersion => "image-version",
            EventKind::InitData => "initdata",
            EventKind::StateDisk => "state-disk",
            EventKind::WorkloadImage => "workload-image",
            EventKind::WorkloadDigest => "workload-digest",
            EventKind::RestartPolicy => "restart-policy",
            EventKind::Args => "args",
            EventKind::Env => "env",
            EventKind::Overrides => "overrides",
            EventKind::Separator => "separator",
        }
    }

    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    pub fn pcr(self) -> u32 {
        match self {
            EventKind::InitData => PCR_INITDATA,
            _ => PCR_AGENT,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One measured fact. Build it with the constructors, which validate the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Event {
    kind: EventKind,
    value: String,
    /// The raw init-data: its digest is the bank's hash of these bytes, not of the value.
    initdata: Option<Vec<u8>>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Event({}: {:?})", self.kind, self.value)
    }
}

impl Event {
    fn new(kind: EventKind, value: String) -> Result<Event, MeasureError> {
        check_value(kind, &value)?;
        Ok(Event {
            kind,
            value,
            initdata: None,
        })
    }

    pub fn mode(mode: Mode) -> Event {
        Event {
            kind: EventKind::Mode,
            value: mode.name().to_string(),
            initdata: None,
        }
    }

    /// The dm-verity root hash as hex (stored lower-case).
    pub fn roothash(hex: &str) -> Result<Event, MeasureError> {
        Event::new(EventKind::RootHash, hex.to_ascii_lowercase())
    }

    pub fn image_version(version: &str) -> Result<Event, MeasureError> {
        Event::new(EventKind::ImageVersion, version.to_string())
    }

    /// The raw init-data bytes, exactly as read (see the digest rule).
    pub fn initdata(raw: &[u8]) -> Event {
        Event {
            kind: EventKind::InitData,
            value: hex::encode(&sha2::Sha256::digest(raw)),
            initdata: Some(raw.to_vec()),
        }
    }

    pub fn from_initdata(initdata: &InitData) -> Event {
        Event::initdata(initdata.raw())
    }

    pub fn state_disk(identity: &str) -> Result<Event, MeasureError> {
        Event::new(EventKind::StateDisk, identity.to_string())
    }

    pub fn workload_image(reference: &str) -> Result<Event, MeasureError> {
        Event::new(EventKind::WorkloadImage, reference.to_string())
    }

    pub fn workload_digest(digest: &str) -> Result<Event, MeasureError> {
        Event::new(EventKind::WorkloadDigest, digest.to_string())
    }

    pub fn restart_policy(policy: RestartPolicy) -> Event {
        Event {
            kind: EventKind::RestartPolicy,
            value: policy.name().to_string(),
            initdata: None,
        }
    }

    /// The final argv.
    pub fn args(args: &[String]) -> Result<Event, MeasureError> {
        Event::new(EventKind::Args, json_strings(args))
    }

    /// The final environment as `NAME=value` strings, in the order the workload gets them.
    pub fn env(env: &[String]) -> Result<Event, MeasureError> {
        Event::new(EventKind::Env, json_strings(env))
    }

    pub fn overrides(overrides: &str) -> Result<Event, MeasureError> {
        Event::new(EventKind::Overrides, overrides.to_string())
    }

    pub fn separator() -> Event {
        Event {
            kind: EventKind::Separator,
            value: String::new(),
            initdata: None,
        }
    }

    pub fn kind(&self) -> EventKind {
        self.kind
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    pub fn pcr(&self) -> u32 {
        self.kind.pcr()
    }

    /// The digest extended into `alg`'s bank (the digest rule in the module docs).
    pub fn digest(&self, alg: HashAlg) -> Result<Vec<u8>, MeasureError> {
        match &self.initdata {
            Some(raw) => hash(alg, raw),
            None => hash(alg, preimage(self.kind, &self.value).as_bytes()),
        }
    }
}

/// `"<event>:<value>"`.
fn preimage(kind: EventKind, value: &str) -> String {
    format!("{}:{value}", kind.name())
}

/// serde_json's compact form of a string array is canonical: no whitespace, fixed escapes.
fn json_strings(items: &[String]) -> String {
    serde_json::Value::from(items.to_vec()).to_string()
}

/// The rules an event value obeys, shared by the constructors and the log verifier (which
/// sees values that came from a file).
fn check_value(kind: EventKind, value: &str) -> Result<(), MeasureError> {
    let bad = |why: String| MeasureError::BadValue {
        event: kind.name(),
        why,
    };
    if value.len() > MAX_VALUE_LEN {
        return Err(bad(format!("value is longer than {MAX_VALUE_LEN} bytes")));
    }
    let is_hex =
        |v: &str| !v.is_empty() && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match kind {
        EventKind::Mode => {
            if value != Mode::Production.name() && value != Mode::Debug.name() {
                return Err(bad(format!("{value:?} is not production or debug")));
            }
        }
        EventKind::RootHash => {
            if !is_hex(value) || !value.len().is_multiple_of(2) || value.len() > 128 {
                return Err(bad(format!("{value:?} is not a hex root hash")));
            }
        }
        EventKind::InitData => {
            if !is_hex(value) || value.len() != 64 {
                return Err(bad(
                    "expected the 64-hex-digit SHA-256 of the init-data".into()
                ));
            }
        }
        EventKind::RestartPolicy => {
            if RestartPolicy::from_name(value).is_none() {
                return Err(bad(format!("{value:?} is not Never, OnFailure or Always")));
            }
        }
        EventKind::Args | EventKind::Env => {
            let items: Vec<String> = serde_json::from_str(value)
                .map_err(|_| bad("expected a JSON array of strings".into()))?;
            // Only the canonical spelling: two spellings of one argv must not give two PCRs.
            if json_strings(&items) != value {
                return Err(bad("not the compact JSON array of strings".into()));
            }
            if items.iter().any(|i| i.contains('\0')) {
                return Err(bad("an entry contains a NUL byte".into()));
            }
            if kind == EventKind::Env
                && let Some(index) = items
                    .iter()
                    .position(|e| e.split_once('=').is_none_or(|(name, _)| name.is_empty()))
            {
                // The position only: the entry itself might be a secret.
                return Err(bad(format!("entry {index} is not NAME=value")));
            }
        }
        EventKind::Separator => {
            if !value.is_empty() {
                return Err(bad("the separator has no value".into()));
            }
        }
        EventKind::ImageVersion
        | EventKind::StateDisk
        | EventKind::WorkloadImage
        | EventKind::WorkloadDigest
        | EventKind::Overrides => {
            if value.is_empty() {
                return Err(bad("empty value".into()));
            }
        }
    }
    Ok(())
}

/// The `image-version` value from an os-release file (see
/// [`crate::osrelease::OsRelease::image_version_fact`]).
pub fn image_version(os_release: &str) -> Option<String> {
    crate::osrelease::parse(os_release).image_version_fact()
}

/// The agent side: records events in order, tells the caller what to extend, keeps the log.
///
/// ```ignore
/// let mut m = Measurer::new(&active_banks)?;
/// let event = Event::mode(mode);
/// let pcr = event.pcr();
/// tpm.pcr_extend(pcr, &m.record(event)?)?;
/// m.write_log(Path::new("/run/cvm-agent/measure.log"))?;
/// ```
///
/// `record` appends to the log before the caller extends: if the extend then fails, the log
/// explains a PCR state the TPM does not have, so the boot must stop (fail closed), which it
/// does on any error anyway.
#[derive(Debug, Clone)]
pub struct Measurer {
    banks: Vec<HashAlg>,
    log: EventLog,
    last: Option<EventKind>,
}

impl Measurer {
    /// `banks`: the active PCR banks (or `[Sha384]` for a TDX RTMR).
    pub fn new(banks: &[HashAlg]) -> Result<Measurer, MeasureError> {
        let banks = check_banks(banks)?;
        Ok(Measurer {
            banks,
            log: EventLog::default(),
            last: None,
        })
    }

    /// Records `event` and returns its digest per bank, for the caller to extend into
    /// `event.pcr()`. Refuses anything after the separator and anything out of order.
    pub fn record(&mut self, event: Event) -> Result<Vec<(HashAlg, Vec<u8>)>, MeasureError> {
        if let Some(last) = self.last {
            if last == EventKind::Separator {
                return Err(MeasureError::AfterSeparator(event.kind.name()));
            }
            if event.kind <= last {
                return Err(MeasureError::OutOfOrder {
                    event: event.kind.name(),
                    after: last.name(),
                });
            }
        }
        let digests = self
            .banks
            .iter()
            .map(|&alg| Ok((alg, event.digest(alg)?)))
            .collect::<Result<Vec<_>, MeasureError>>()?;
        self.log.push(Record {
            pcr: event.pcr(),
            digests: digests.clone(),
            content_type: CONTENT_TYPE.to_string(),
            content: Content::Agent {
                event: event.kind,
                string: event.value,
            },
        })?;
        self.last = Some(event.kind);
        Ok(digests)
    }

    pub fn banks(&self) -> &[HashAlg] {
        &self.banks
    }

    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// Whether the separator has been recorded.
    pub fn is_sealed(&self) -> bool {
        self.last == Some(EventKind::Separator)
    }

    /// Writes the whole log (JSON-SEQ) to `path`, replacing it atomically, read-only.
    pub fn write_log(&self, path: &Path) -> Result<(), MeasureError> {
        self.log.write(path)
    }
}

/// Non-empty, no duplicates, every bank hashable.
pub(crate) fn check_banks(banks: &[HashAlg]) -> Result<Vec<HashAlg>, MeasureError> {
    if banks.is_empty() {
        return Err(MeasureError::NoBanks);
    }
    let mut out: Vec<HashAlg> = Vec::with_capacity(banks.len());
    for &alg in banks {
        if out.contains(&alg) {
            return Err(MeasureError::DuplicateBank(alg.name()));
        }
        hash(alg, b"")?;
        out.push(alg);
    }
    Ok(out)
}
