//! A small TPM 2.0 client over /dev/tpmrm0, marshalled with `tpm2-protocol` (pure Rust, so the
//! static PID 1 needs no tpm2-tss libraries).
//!
//! It does only what the agent needs to measure and attest: list the PCR banks, read and extend
//! PCRs, get random bytes, create (or find) the attestation key, use the cloud's AK (Azure's
//! persistent one, GCP's from its NV template), quote, read NV indices (the Azure HCL report,
//! GCP's AK template and certificate) and write one (Azure's report-data index). Defining an
//! index and making a key persistent at a chosen handle are there for tests that play a cloud. The only authorization ever used is a password
//! session with an empty password (`TPM_RS_PW`): PCRs, the endorsement and owner hierarchies of a
//! vTPM, our own AK and the NV indices we read all have empty auth values. Commands that need no
//! authorization go out as `TPM_ST_NO_SESSIONS`.
//!
//! The TPM sits behind a host we do not trust (a vTPM is the host's software; even a discrete
//! TPM's bus is the host's). Every response is therefore parsed as hostile input: its length is
//! checked against the header and the 4096-byte TPM buffer before anything else, each field is
//! read with bounds checks, and anything unexpected is an error that names the command, never a
//! panic. Commands are built with `tpm2-protocol`; responses go through its validating
//! unmarshaller where its types fit, and through a local bounds-checked reader where they do not
//! (a capability answer may list hash algorithms the crate cannot name, which must be skipped).
#![forbid(unsafe_code)]

mod ak;
mod error;
mod nv;
mod platform_ak;
#[cfg(feature = "swtpm")]
pub mod swtpm;
mod transport;
pub mod verify;

#[cfg(test)]
mod command_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

pub use ak::{
    AK_HANDLE, AttestationKey, MAX_QUALIFYING_DATA, Quote, ak_template_bytes, rsa_spki_der,
};
pub use error::{ResponseCode, TPM_RC_HANDLE, TpmError};
pub use nv::NvPublic;
pub use platform_ak::{AZURE_AK_HANDLE, GCE_AK_CERT_NV_INDEX_RSA, GCE_AK_TEMPLATE_NV_INDEX_RSA};
pub use transport::{
    DEFAULT_SLOW_TIMEOUT, DEFAULT_TIMEOUT, DeviceTransport, TcpTransport, Transport,
};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use tpm2_protocol::TpmWriter;
use tpm2_protocol::basic::{TpmBuffer, TpmUint16, TpmUint32};
use tpm2_protocol::data::{
    Tpm2bAuth, Tpm2bNonce, TpmAlgId, TpmCap, TpmSt, TpmSu, TpmaSession, TpmlDigestValues,
    TpmlPcrSelection, TpmsAuthCommand, TpmsPcrSelect, TpmsPcrSelection, TpmtHa, TpmuHa,
};
use tpm2_protocol::frame::{
    TpmFlushContextCommand, TpmFlushContextResponse, TpmFrame, TpmGetCapabilityCommand,
    TpmGetRandomCommand, TpmGetRandomResponse, TpmPcrExtendCommand, TpmPcrReadCommand,
    TpmPcrReadResponse, TpmReadPublicCommand, TpmResponse, TpmStartupCommand, TpmStartupResponse,
    TpmUnmarshalBody, tpm_marshal_command,
};

use error::TPM_RC_INITIALIZE;

/// tag, size, code: the fixed TPM 2.0 frame header.
pub(crate) const HEADER_LEN: usize = 10;
/// The TPM's command/response buffer (Part 2 `MAX_COMMAND_SIZE`/`MAX_RESPONSE_SIZE` on
/// every TPM we target, and the kernel's `TPM_BUFSIZE`).
pub(crate) const MAX_BUFFER: usize = 4096;

/// More banks than there are TCG hash algorithms means the answer is garbage.
const MAX_BANKS: u32 = 16;
/// `tpm2-protocol` carries at most 4 select bytes, i.e. PCRs 0..=31; TPMs have 24.
const MAX_PCR: u32 = 31;
/// The TPM rejects a select shorter than its PCR_SELECT_MIN (3 bytes for 24 PCRs) and one
/// longer than its PCR_SELECT_MAX, so ask with the shortest size that covers the request.
const PCR_SELECT_MIN: usize = 3;
/// A PCR extended between two partial reads invalidates the set; retrying a few times
/// covers a concurrent extend, an endless stream of them is an error.
const PCR_READ_ATTEMPTS: u32 = 4;
/// `TPM_RS_PW`: the password session, authorizing with the entity's auth value in clear.
const TPM_RS_PW: u32 = 0x4000_0009;
/// `TPM_RH_OWNER` and `TPM_RH_ENDORSEMENT`, the hierarchies we authorize with empty auth.
pub(crate) const TPM_RH_OWNER: u32 = 0x4000_0001;
pub(crate) const TPM_RH_ENDORSEMENT: u32 = 0x4000_000B;
/// The largest TPM2B_DIGEST: one GetRandom answer holds at most this many bytes.
const RANDOM_CHUNK: usize = 64;
/// get_random serves seeds and nonces, not bulk data.
pub const MAX_RANDOM: usize = 64 * 1024;
/// `TPM_CAP_TPM_PROPERTIES`.
const TPM_CAP_TPM_PROPERTIES: u32 = 6;
/// TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_TESTING: warnings after which the same command is
/// simply sent again.
const RETRY_CODES: [u32; 3] = [0x922, 0x908, 0x90A];
/// Pauses before a retry: 20 ms doubling up to 1.28 s (about 2.5 s in all), as the kernel's
/// tpm_transmit() does between TPM2_DURATION_SHORT and TPM2_DURATION_LONG.
const RETRY_FIRST_DELAY: Duration = Duration::from_millis(20);
const RETRY_LAST_DELAY: Duration = Duration::from_millis(1280);
/// TPM2B sizes in answers: a TPM2B_NAME is at most a handle or an algorithm id and a digest.
const MAX_NAME: usize = 2 + 64;

/// A TPM hash algorithm that can back a PCR bank: the four the event log knows
/// ([`cvm_tcglog::HashAlg`], the one table of their names and sizes) and SM3, which a TPM may
/// allocate but nothing here can compute, so it has to be named and refused, not hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
    Sm3_256,
}

impl HashAlg {
    pub const ALL: [HashAlg; 5] = [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
        HashAlg::Sm3_256,
    ];

    /// The same algorithm as the event log has it, which can hash and extend; `None` for SM3.
    pub fn computable(self) -> Option<cvm_tcglog::HashAlg> {
        use cvm_tcglog::HashAlg as Log;
        match self {
            HashAlg::Sha1 => Some(Log::Sha1),
            HashAlg::Sha256 => Some(Log::Sha256),
            HashAlg::Sha384 => Some(Log::Sha384),
            HashAlg::Sha512 => Some(Log::Sha512),
            HashAlg::Sm3_256 => None,
        }
    }

    /// The name the event-log and systemd tooling use ("sha256", ...).
    pub fn name(&self) -> &'static str {
        self.computable().map_or("sm3_256", |alg| alg.name())
    }

    pub fn digest_len(&self) -> usize {
        self.computable().map_or(32, |alg| alg.digest_len())
    }

    /// The `TPM_ALG_ID` value.
    pub fn tpm_alg_id(&self) -> u16 {
        self.protocol_id().value()
    }

    pub fn from_tpm_alg_id(id: u16) -> Option<Self> {
        HashAlg::ALL.into_iter().find(|alg| alg.tpm_alg_id() == id)
    }

    fn protocol_id(self) -> TpmAlgId {
        match self {
            HashAlg::Sha1 => TpmAlgId::Sha1,
            HashAlg::Sha256 => TpmAlgId::Sha256,
            HashAlg::Sha384 => TpmAlgId::Sha384,
            HashAlg::Sha512 => TpmAlgId::Sha512,
            HashAlg::Sm3_256 => TpmAlgId::Sm3_256,
        }
    }
}

impl From<cvm_tcglog::HashAlg> for HashAlg {
    fn from(alg: cvm_tcglog::HashAlg) -> Self {
        use cvm_tcglog::HashAlg as Log;
        match alg {
            Log::Sha1 => HashAlg::Sha1,
            Log::Sha256 => HashAlg::Sha256,
            Log::Sha384 => HashAlg::Sha384,
            Log::Sha512 => HashAlg::Sha512,
        }
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One PCR bank as the TPM allocates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrBank {
    pub alg: HashAlg,
    /// PCR indices allocated in this bank, ascending; empty when the bank is inactive.
    pub pcrs: Vec<u32>,
}

impl PcrBank {
    /// A bank is active when it has PCRs: only active banks are extended and quoted.
    pub fn is_active(&self) -> bool {
        !self.pcrs.is_empty()
    }
}

/// A TPM reached through `T`. Holds no state besides the transport, so it can be dropped and
/// reopened at will.
#[derive(Debug)]
pub struct Tpm<T: Transport = DeviceTransport> {
    transport: T,
    stats: TpmStats,
}

/// Commands sent and the time spent waiting for their answers, for the boot figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TpmStats {
    pub commands: u32,
    pub busy: std::time::Duration,
}

impl Tpm<DeviceTransport> {
    /// Opens the TPM character device, normally `/dev/tpmrm0`.
    pub fn open(path: &Path) -> Result<Self, TpmError> {
        Ok(Tpm::new(DeviceTransport::open(path)?))
    }
}

impl<T: Transport> Tpm<T> {
    pub fn new(transport: T) -> Self {
        Tpm {
            transport,
            stats: TpmStats::default(),
        }
    }

    /// The transport, for a test double that wraps one.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    pub fn into_transport(self) -> T {
        self.transport
    }

    pub fn stats(&self) -> TpmStats {
        self.stats
    }

    /// TPM2_GetCapability(TPM_CAP_PCRS): every bank the TPM implements with the PCRs
    /// allocated in it. Banks of hash algorithms this client does not know are left out.
    pub fn pcr_banks(&mut self) -> Result<Vec<PcrBank>, TpmError> {
        self.get_pcr_banks()
            .map_err(|e| e.in_command("GetCapability"))
    }

    /// TPM2_PCR_Read of `pcrs` in the `alg` bank, as `(index, digest)` ascending by index
    /// (duplicates in `pcrs` are read once). Returns all of them or an error: a PCR that is
    /// not allocated is an error, not a missing entry.
    pub fn pcr_read(
        &mut self,
        alg: HashAlg,
        pcrs: &[u32],
    ) -> Result<Vec<(u32, Vec<u8>)>, TpmError> {
        self.read_pcrs(alg, pcrs)
            .map_err(|e| e.in_command("PCR_Read"))
    }

    /// TPM2_Startup(TPM_SU_CLEAR). A TPM that is already started (the normal case under
    /// firmware, or swtpm with `startup-clear`) answers TPM_RC_INITIALIZE, which is fine.
    pub fn startup_clear(&mut self) -> Result<(), TpmError> {
        self.startup().map_err(|e| e.in_command("Startup"))
    }

    /// TPM2_PCR_Extend of PCR `pcr` with one digest per bank, authorized by a password
    /// session with the PCR's (empty) auth value. The caller passes a digest for every
    /// active bank: a bank left out keeps its old value, and a verifier reading that bank
    /// would see a PCR that never changed. Digests of the wrong length, two digests for one
    /// bank or no digest at all are refused before anything is sent.
    pub fn pcr_extend(&mut self, pcr: u32, digests: &[(HashAlg, Vec<u8>)]) -> Result<(), TpmError> {
        self.extend(pcr, digests)
            .map_err(|e| e.in_command("PCR_Extend"))
    }

    /// `n` bytes from TPM2_GetRandom, in as many calls as it takes (one answer holds at most
    /// 64 bytes, often fewer). At most [`MAX_RANDOM`] bytes.
    pub fn get_random(&mut self, n: usize) -> Result<Vec<u8>, TpmError> {
        self.random(n).map_err(|e| e.in_command("GetRandom"))
    }

    /// TPM2_FlushContext: unloads a transient object or session.
    pub fn flush_context(&mut self, handle: u32) -> Result<(), TpmError> {
        self.flush(handle).map_err(|e| e.in_command("FlushContext"))
    }

    fn get_pcr_banks(&mut self) -> Result<Vec<PcrBank>, TpmError> {
        let command = marshal(&TpmGetCapabilityCommand {
            handles: [],
            cap: TpmCap::Pcrs,
            // Both are ignored for TPM_CAP_PCRS: the TPM returns all banks at once.
            property: TpmUint32::new(0),
            property_count: TpmUint32::new(MAX_BANKS),
        })?;
        let frame = self.execute(&command)?;
        parse_pcr_capability(&frame)
    }

    fn read_pcrs(&mut self, alg: HashAlg, pcrs: &[u32]) -> Result<Vec<(u32, Vec<u8>)>, TpmError> {
        if let Some(&pcr) = pcrs.iter().find(|&&pcr| pcr > MAX_PCR) {
            return Err(TpmError::PcrOutOfRange { pcr });
        }
        let wanted: BTreeSet<u32> = pcrs.iter().copied().collect();
        for _ in 0..PCR_READ_ATTEMPTS {
            if let Some(values) = self.read_pcrs_consistently(alg, &wanted)? {
                return Ok(values.into_iter().collect());
            }
        }
        Err(TpmError::PcrsChanging {
            attempts: PCR_READ_ATTEMPTS,
        })
    }

    /// One pass over `wanted`, in as many PCR_Read calls as the TPM needs (it returns at
    /// most 8 digests per call). `None` when pcrUpdateCounter moved between calls: the
    /// values would then mix two PCR states.
    fn read_pcrs_consistently(
        &mut self,
        alg: HashAlg,
        wanted: &BTreeSet<u32>,
    ) -> Result<Option<BTreeMap<u32, Vec<u8>>>, TpmError> {
        let mut remaining = wanted.clone();
        let mut values = BTreeMap::new();
        let mut first_counter = None;
        while !remaining.is_empty() {
            let command = marshal(&TpmPcrReadCommand {
                handles: [],
                pcr_selection_in: pcr_selection(alg, &remaining)?,
            })?;
            let frame = self.execute(&command)?;
            let response: TpmPcrReadResponse = unmarshal(&frame)?;
            let counter = response.pcr_update_counter.value();
            if *first_counter.get_or_insert(counter) != counter {
                return Ok(None);
            }
            let read = selected_pcrs(alg, &response.pcr_selection_out)?;
            if read.is_empty() {
                return Err(TpmError::PcrNotAllocated {
                    alg,
                    pcrs: remaining.into_iter().collect(),
                });
            }
            if let Some(pcr) = read.iter().find(|pcr| !remaining.contains(pcr)) {
                return Err(TpmError::Malformed(format!(
                    "PCR {pcr} returned but not asked for"
                )));
            }
            if read.len() != response.pcr_values.len() {
                return Err(TpmError::Malformed(format!(
                    "{} digests for {} selected PCRs",
                    response.pcr_values.len(),
                    read.len()
                )));
            }
            // Digests come in selection order, i.e. ascending PCR index.
            for (&pcr, digest) in read.iter().zip(response.pcr_values.iter()) {
                if digest.len() != alg.digest_len() {
                    return Err(TpmError::DigestLength {
                        alg,
                        pcr,
                        len: digest.len(),
                        expected: alg.digest_len(),
                    });
                }
                remaining.remove(&pcr);
                values.insert(pcr, digest.to_vec());
            }
        }
        Ok(Some(values))
    }

    fn extend(&mut self, pcr: u32, digests: &[(HashAlg, Vec<u8>)]) -> Result<(), TpmError> {
        if pcr > MAX_PCR {
            return Err(TpmError::PcrOutOfRange { pcr });
        }
        if digests.is_empty() {
            return Err(TpmError::InvalidArgument(format!(
                "no digest to extend PCR {pcr} with"
            )));
        }
        let mut list = TpmlDigestValues::new();
        for (i, (alg, digest)) in digests.iter().enumerate() {
            if digests.iter().take(i).any(|(seen, _)| seen == alg) {
                return Err(TpmError::InvalidArgument(format!(
                    "two {alg} digests for PCR {pcr}"
                )));
            }
            if digest.len() != alg.digest_len() {
                return Err(TpmError::DigestLength {
                    alg: *alg,
                    pcr,
                    len: digest.len(),
                    expected: alg.digest_len(),
                });
            }
            let digest = TpmBuffer::try_from(digest.as_slice())
                .map_err(|e| TpmError::Marshal(describe(e)))?;
            list.try_push(TpmtHa {
                hash_alg: alg.protocol_id(),
                digest: TpmuHa::Digest(digest),
            })
            .map_err(|e| TpmError::Marshal(describe(e)))?;
        }
        let command = marshal_with_password(&TpmPcrExtendCommand {
            handles: [TpmUint32::new(pcr)],
            digests: list,
        })?;
        let frame = self.execute_authorized(&command)?;
        let (_, params) = session_response(&frame, 0)?;
        params.finish()
    }

    fn random(&mut self, n: usize) -> Result<Vec<u8>, TpmError> {
        if n > MAX_RANDOM {
            return Err(TpmError::InvalidArgument(format!(
                "{n} random bytes asked for, at most {MAX_RANDOM}"
            )));
        }
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let want = (n - out.len()).min(RANDOM_CHUNK);
            // `want` is at most 64, so it fits.
            let requested = u16::try_from(want).unwrap_or(u16::MAX);
            let command = marshal(&TpmGetRandomCommand {
                handles: [],
                bytes_requested: TpmUint16::new(requested),
            })?;
            let frame = self.execute(&command)?;
            let response: TpmGetRandomResponse = unmarshal(&frame)?;
            let got = response.random_bytes.as_ref();
            // An empty answer would make this loop endless; a longer one is not an answer
            // to what we asked.
            if got.is_empty() || got.len() > want {
                return Err(TpmError::Malformed(format!(
                    "{} random bytes in the answer to a request for {want}",
                    got.len()
                )));
            }
            out.extend_from_slice(got);
        }
        Ok(out)
    }

    fn flush(&mut self, handle: u32) -> Result<(), TpmError> {
        let command = marshal(&TpmFlushContextCommand {
            handles: [],
            flush_handle: TpmUint32::new(handle),
        })?;
        let frame = self.execute(&command)?;
        unmarshal::<TpmFlushContextResponse>(&frame).map(drop)
    }

    /// TPM2_ReadPublic: the object's TPM2B_PUBLIC as sent (size included), after checking
    /// that the name the TPM reports is the hash of that public area.
    fn read_public(&mut self, handle: u32) -> Result<Vec<u8>, TpmError> {
        let command = marshal(&TpmReadPublicCommand {
            handles: [TpmUint32::new(handle)],
        })?;
        let frame = self.execute(&command)?;
        let mut r = Reader::new(&frame, HEADER_LEN)?;
        let public = r.tpm2b_whole(MAX_BUFFER, "outPublic")?;
        let name = r.tpm2b(MAX_NAME, "name")?;
        let _qualified_name = r.tpm2b(MAX_NAME, "qualifiedName")?;
        r.finish()?;
        ak::check_object_name(public, name)?;
        Ok(public.to_vec())
    }

    /// One TPM_PT_* value from GetCapability(TPM_CAP_TPM_PROPERTIES), `None` when the TPM
    /// does not report that property.
    fn tpm_property(&mut self, property: u32) -> Result<Option<u32>, TpmError> {
        let command = marshal(&TpmGetCapabilityCommand {
            handles: [],
            cap: TpmCap::TpmProperties,
            property: TpmUint32::new(property),
            property_count: TpmUint32::new(1),
        })?;
        let frame = self.execute(&command)?;
        let mut r = Reader::new(&frame, HEADER_LEN)?;
        let more_data = r.u8("moreData")?;
        if more_data > 1 {
            return Err(TpmError::Malformed(format!(
                "moreData is {more_data}, not a TPMI_YES_NO"
            )));
        }
        let capability = r.u32("capability")?;
        if capability != TPM_CAP_TPM_PROPERTIES {
            return Err(TpmError::Malformed(format!(
                "capability {capability:#x} in the answer to TPM_CAP_TPM_PROPERTIES"
            )));
        }
        let count = r.u32("TPML_TAGGED_TPM_PROPERTY.count")?;
        if count > 1 {
            return Err(TpmError::Malformed(format!(
                "{count} properties in the answer to a request for one"
            )));
        }
        let mut value = None;
        if count == 1 {
            let tag = r.u32("TPMS_TAGGED_PROPERTY.property")?;
            let v = r.u32("TPMS_TAGGED_PROPERTY.value")?;
            // The TPM lists properties from the one asked for onwards: a different tag
            // means it has no such property.
            if tag == property {
                value = Some(v);
            }
        }
        r.finish()?;
        Ok(value)
    }

    fn startup(&mut self) -> Result<(), TpmError> {
        let command = marshal(&TpmStartupCommand {
            handles: [],
            startup_type: TpmSu::Clear,
        })?;
        match self.execute(&command) {
            Ok(frame) => unmarshal::<TpmStartupResponse>(&frame).map(drop),
            Err(e) if e.response_code() == Some(TPM_RC_INITIALIZE) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sends `command` (without sessions) and returns the response frame once its envelope
    /// checks out and its response code is success.
    fn execute(&mut self, command: &[u8]) -> Result<Vec<u8>, TpmError> {
        let frame = self.transact(command, false)?;
        check_response(&frame, TpmSt::NoSessions)?;
        Ok(frame)
    }

    /// The same for a command sent with a password session: its success answer carries
    /// the session area, so its tag is `TPM_ST_SESSIONS`.
    fn execute_authorized(&mut self, command: &[u8]) -> Result<Vec<u8>, TpmError> {
        let frame = self.transact(command, false)?;
        check_response(&frame, TpmSt::Sessions)?;
        Ok(frame)
    }

    /// `execute_authorized` for key generation, which may take much longer.
    fn execute_authorized_slow(&mut self, command: &[u8]) -> Result<Vec<u8>, TpmError> {
        let frame = self.transact(command, true)?;
        check_response(&frame, TpmSt::Sessions)?;
        Ok(frame)
    }

    /// One exchange, repeated while the TPM answers "not now" (TPM_RC_RETRY, TPM_RC_YIELDED,
    /// TPM_RC_TESTING: the command was not executed), with doubling pauses as the kernel
    /// does for its own commands. The last answer is returned whatever it is.
    fn transact(&mut self, command: &[u8], slow: bool) -> Result<Vec<u8>, TpmError> {
        let mut delay = RETRY_FIRST_DELAY;
        loop {
            let started = std::time::Instant::now();
            let answer = if slow {
                self.transport.transact_slow(command)
            } else {
                self.transport.transact(command)
            };
            self.stats.commands += 1;
            self.stats.busy += started.elapsed();
            let frame = answer?;
            let rc = frame
                .get(6..HEADER_LEN)
                .and_then(|rc| rc.first_chunk::<4>())
                .map(|rc| u32::from_be_bytes(*rc));
            let again = rc.is_some_and(|rc| RETRY_CODES.contains(&rc));
            if !again || delay > RETRY_LAST_DELAY {
                return Ok(frame);
            }
            tracing::debug!(
                "tpm: answered {:#x}, retrying in {delay:?}",
                rc.unwrap_or(0)
            );
            std::thread::sleep(delay);
            delay *= 2;
        }
    }
}

fn marshal<C: TpmFrame>(command: &C) -> Result<Vec<u8>, TpmError> {
    let mut buf = [0u8; MAX_BUFFER];
    let mut writer = TpmWriter::new(&mut buf);
    tpm_marshal_command(command, TpmSt::NoSessions, &[], &mut writer)
        .map_err(|e| TpmError::Marshal(describe(e)))?;
    Ok(writer.as_bytes().to_vec())
}

/// Marshals `command` with one password session and an empty password, which authorizes
/// the first handle of every command we send that way.
fn marshal_with_password<C: TpmFrame>(command: &C) -> Result<Vec<u8>, TpmError> {
    let session = TpmsAuthCommand {
        session_handle: TpmUint32::new(TPM_RS_PW),
        nonce: Tpm2bNonce::default(),
        // Ignored for a password session (it is never closed), but what TSSes send.
        session_attributes: TpmaSession::CONTINUE_SESSION,
        hmac: Tpm2bAuth::default(),
    };
    let mut buf = [0u8; MAX_BUFFER];
    let mut writer = TpmWriter::new(&mut buf);
    tpm_marshal_command(command, TpmSt::Sessions, &[session], &mut writer)
        .map_err(|e| TpmError::Marshal(describe(e)))?;
    Ok(writer.as_bytes().to_vec())
}

/// Splits a successful answer to a command sent with one password session: the `handles`
/// response handles, then a reader over exactly the parameter area. The session area after
/// it must be the one password-session answer (empty nonce, attributes, empty HMAC) and
/// nothing else.
fn session_response(frame: &[u8], handles: usize) -> Result<(Vec<u32>, Reader<'_>), TpmError> {
    let mut r = Reader::new(frame, HEADER_LEN)?;
    let handles = (0..handles)
        .map(|_| r.u32("response handle"))
        .collect::<Result<Vec<u32>, TpmError>>()?;
    let parameter_size = r.u32("parameterSize")?;
    let parameter_size = usize::try_from(parameter_size)
        .map_err(|_| TpmError::Malformed(format!("parameterSize {parameter_size}")))?;
    let offset = r.offset;
    let parameters = r.take(parameter_size, "parameters")?;
    let nonce = r.tpm2b(MAX_NAME, "nonceTPM")?;
    let _attributes = r.u8("sessionAttributes")?;
    let hmac = r.tpm2b(MAX_NAME, "hmac")?;
    if !nonce.is_empty() || !hmac.is_empty() {
        return Err(TpmError::Malformed(
            "password session answered with a nonce or HMAC".to_string(),
        ));
    }
    r.finish()?;
    Ok((
        handles,
        Reader {
            rest: parameters,
            offset,
        },
    ))
}

/// The crate's validating unmarshaller: checks the frame against `R`'s shape, every list
/// and TPM2B bound, and that nothing trails the last parameter.
fn unmarshal<R: TpmUnmarshalBody>(frame: &[u8]) -> Result<R, TpmError> {
    TpmResponse::cast(frame)
        .and_then(|response| response.unmarshal::<R>())
        .map_err(|e| TpmError::Malformed(describe(e)))
}

fn describe(e: tpm2_protocol::TpmError) -> String {
    format!("{e} at byte {}", e.offset())
}

/// The envelope checks every response gets before any of its body is looked at. `success_tag`
/// is the tag a success answer must carry: `TPM_ST_SESSIONS` exactly when the command had
/// sessions.
fn check_response(frame: &[u8], success_tag: TpmSt) -> Result<(), TpmError> {
    let len = frame.len();
    if len > MAX_BUFFER {
        return Err(TpmError::TooLarge { len: len as u64 });
    }
    let Some((&[t0, t1, s0, s1, s2, s3, r0, r1, r2, r3], _)) =
        frame.split_first_chunk::<HEADER_LEN>()
    else {
        return Err(TpmError::Truncated { len });
    };
    let tag = u16::from_be_bytes([t0, t1]);
    let declared = u32::from_be_bytes([s0, s1, s2, s3]);
    let rc = u32::from_be_bytes([r0, r1, r2, r3]);
    if u64::from(declared) > MAX_BUFFER as u64 {
        return Err(TpmError::TooLarge {
            len: u64::from(declared),
        });
    }
    if usize::try_from(declared) != Ok(len) {
        return Err(TpmError::SizeMismatch {
            declared,
            actual: len,
        });
    }
    let no_sessions = TpmSt::NoSessions.value();
    if rc != 0 {
        // TPM_ST_RSP_COMMAND is how a TPM answers a command it could not even parse
        // (TPM_RC_BAD_TAG); its code is still worth showing.
        if tag != no_sessions && tag != TpmSt::RspCommand.value() {
            return Err(TpmError::UnexpectedTag { tag });
        }
        if len != HEADER_LEN {
            return Err(TpmError::Malformed(format!(
                "error response carries {} bytes after the header",
                len.saturating_sub(HEADER_LEN)
            )));
        }
        return Err(TpmError::Response(ResponseCode(rc)));
    }
    if tag != success_tag.value() {
        return Err(TpmError::UnexpectedTag { tag });
    }
    Ok(())
}

/// TPM2_GetCapability response body: moreData, TPMS_CAPABILITY_DATA{TPM_CAP_PCRS,
/// TPML_PCR_SELECTION}. Parsed by hand because the crate's TPMS_PCR_SELECTION rejects hash
/// algorithms it has no name for, and such banks must be skipped, not fatal.
fn parse_pcr_capability(frame: &[u8]) -> Result<Vec<PcrBank>, TpmError> {
    let mut r = Reader::new(frame, HEADER_LEN)?;
    let more_data = r.u8("moreData")?;
    if more_data > 1 {
        return Err(TpmError::Malformed(format!(
            "moreData is {more_data}, not a TPMI_YES_NO"
        )));
    }
    let capability = r.u32("capability")?;
    if capability != TpmCap::Pcrs.value() {
        return Err(TpmError::Malformed(format!(
            "capability {capability:#x} in the answer to TPM_CAP_PCRS"
        )));
    }
    let count = r.u32("TPML_PCR_SELECTION.count")?;
    if count > MAX_BANKS {
        return Err(TpmError::Malformed(format!(
            "{count} PCR banks (at most {MAX_BANKS})"
        )));
    }
    let mut banks: Vec<PcrBank> = Vec::new();
    for _ in 0..count {
        let alg_id = r.u16("TPMS_PCR_SELECTION.hash")?;
        let size = r.u8("TPMS_PCR_SELECTION.sizeofSelect")?;
        let select = r.take(usize::from(size), "TPMS_PCR_SELECTION.pcrSelect")?;
        let Some(alg) = HashAlg::from_tpm_alg_id(alg_id) else {
            tracing::debug!("tpm: skipping PCR bank of unknown hash algorithm {alg_id:#06x}");
            continue;
        };
        if banks.iter().any(|bank| bank.alg == alg) {
            return Err(TpmError::Malformed(format!("{alg} PCR bank listed twice")));
        }
        banks.push(PcrBank {
            alg,
            pcrs: select_to_indices(select),
        });
    }
    r.finish()?;
    // The TPM has no way to continue a TPM_CAP_PCRS listing; a bank we do not see is
    // a bank we would fail to extend, so an incomplete answer is not usable.
    if more_data == 1 {
        return Err(TpmError::Malformed(
            "TPM reports more PCR banks than one answer holds".to_string(),
        ));
    }
    Ok(banks)
}

/// The PCRs set in a selection bitmap: bit `b` of byte `i` is PCR `8 * i + b`.
fn select_to_indices(select: &[u8]) -> Vec<u32> {
    select
        .iter()
        .zip(0u32..)
        .flat_map(|(&byte, i)| {
            (0u32..8)
                .filter(move |bit| byte & (1 << bit) != 0)
                .map(move |bit| i * 8 + bit)
        })
        .collect()
}

fn pcr_selection(alg: HashAlg, pcrs: &BTreeSet<u32>) -> Result<TpmlPcrSelection, TpmError> {
    let mut bitmap = [0u8; (MAX_PCR as usize + 1) / 8];
    for &pcr in pcrs {
        let byte = bitmap
            .get_mut(pcr as usize / 8)
            .ok_or(TpmError::PcrOutOfRange { pcr })?;
        *byte |= 1 << (pcr % 8);
    }
    let highest = pcrs.last().copied().unwrap_or(0);
    let size = (highest as usize / 8 + 1).max(PCR_SELECT_MIN);
    let select = bitmap.get(..size).unwrap_or(&bitmap);
    let marshal_err = |e| TpmError::Marshal(describe(e));
    let pcr_select = TpmsPcrSelect::try_from(select).map_err(marshal_err)?;
    let mut list = TpmlPcrSelection::new();
    list.try_push(TpmsPcrSelection {
        hash: alg.protocol_id(),
        pcr_select,
    })
    .map_err(marshal_err)?;
    Ok(list)
}

/// The PCRs a PCR_Read answer says it read. We ask for one bank, so the echo holds that
/// bank or nothing.
fn selected_pcrs(alg: HashAlg, selection: &TpmlPcrSelection) -> Result<Vec<u32>, TpmError> {
    match &selection[..] {
        [] => Ok(Vec::new()),
        [one] if one.hash == alg.protocol_id() => Ok(select_to_indices(&one.pcr_select)),
        [one] => Err(TpmError::Malformed(format!(
            "asked for the {alg} bank, got {}",
            one.hash
        ))),
        more => Err(TpmError::Malformed(format!(
            "{} PCR selections in the answer to one",
            more.len()
        ))),
    }
}

/// Bounds-checked big-endian reader over a response body; offsets in its errors count
/// from the start of the frame.
struct Reader<'a> {
    rest: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn new(frame: &'a [u8], start: usize) -> Result<Self, TpmError> {
        let rest = frame
            .get(start..)
            .ok_or(TpmError::Truncated { len: frame.len() })?;
        Ok(Reader {
            rest,
            offset: start,
        })
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], TpmError> {
        let Some((head, tail)) = self.rest.split_at_checked(n) else {
            return Err(TpmError::Malformed(format!(
                "{what} at byte {} needs {n} bytes, {} left",
                self.offset,
                self.rest.len()
            )));
        };
        self.rest = tail;
        self.offset += n;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], TpmError> {
        let bytes = self.take(N, what)?;
        <[u8; N]>::try_from(bytes).map_err(|_| TpmError::Malformed(format!("{what}: short read")))
    }

    fn u8(&mut self, what: &str) -> Result<u8, TpmError> {
        Ok(u8::from_be_bytes(self.array(what)?))
    }

    fn u16(&mut self, what: &str) -> Result<u16, TpmError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32, TpmError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, TpmError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A TPM2B's contents, its size bounded by `max`.
    fn tpm2b(&mut self, max: usize, what: &str) -> Result<&'a [u8], TpmError> {
        let size = usize::from(self.u16(what)?);
        if size > max {
            return Err(TpmError::Malformed(format!(
                "{what} at byte {} is {size} bytes, at most {max}",
                self.offset - 2
            )));
        }
        self.take(size, what)
    }

    /// A TPM2B as marshalled, size field included.
    fn tpm2b_whole(&mut self, max: usize, what: &str) -> Result<&'a [u8], TpmError> {
        let whole = self.rest;
        let start = self.offset;
        self.tpm2b(max, what)?;
        whole
            .get(..self.offset - start)
            .ok_or_else(|| TpmError::Malformed(format!("{what}: short read")))
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn finish(self) -> Result<(), TpmError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(TpmError::Malformed(format!(
                "{} trailing bytes at byte {}",
                self.rest.len(),
                self.offset
            )))
        }
    }
}
