//! LUKS2, the on-disk format of the state disk, in pure Rust: create (`format`) and open
//! (`open`) a header compatible with cryptsetup 2.6, so an operator can always recover a state
//! disk with stock `cryptsetup`, while the static agent links no libcryptsetup.
//!
//! ```text
//! 0        primary header   4 KiB binary + 12 KiB JSON   (hdr_size = 16 KiB)
//! 16 KiB   secondary header same, magic "SKUL\xba\xbe"
//! 32 KiB   keyslots area    keyslot 0's AF material (aes-xts-plain64, 512-byte sectors)
//! 16 MiB   data segment     aes-xts-plain64, 4096-byte sectors, to the end of the device
//! ```
//!
//! What we write is one fixed shape: one `luks2` keyslot (AF `luks1`, 4000 stripes, SHA-256;
//! area `raw`, aes-xts-plain64, 512-bit key; KDF PBKDF2-SHA256 or Argon2id), one `crypt`
//! segment and one `pbkdf2` SHA-256 digest over a random 512-bit volume key. With integrity
//! (`FormatOptions::integrity`) the segment also carries cryptsetup's `hmac(sha256)` integrity
//! object and the volume key is 768 bits: the XTS key, then the HMAC-SHA256 key.
//!
//! What we read is that shape as cryptsetup may have left it after an operator's recovery work:
//! several keyslots (PBKDF2-SHA256, Argon2i or Argon2id, up to 32), any ids, tokens, config
//! flags. Anything else — another cipher, another integrity than `hmac(sha256)` without journal
//! crypto, a reencryption in progress (mandatory
//! requirements), unbound keys, several segments — is refused with an error that names it.
//!
//! Why strict: the host writes the disk. The volume key digest check is what makes a key
//! trustworthy; the header checks make sure we never compute with, or hand the kernel, an
//! offset, size or algorithm the host chose to hurt us (a segment overlapping the keyslots or
//! beyond the device, a KDF that runs for hours). Nothing here ever writes to an existing
//! header: no repair, no seqid bump. Recovery is an operator's job, with cryptsetup.
//!
//! KDF cost: the passphrase is the KBS state key, 32+ random bytes. Brute force of the
//! passphrase is impossible at any KDF cost, so the cost only has to satisfy cryptsetup. We
//! write PBKDF2-SHA256 with 1000 iterations (cryptsetup's minimum, `--pbkdf-force-iterations
//! 1000`), or Argon2id at time 4, 32 MiB, 1 lane (cryptsetup's minimum time; modest memory
//! for a small guest). The digest uses 1000 iterations for the same reason: it is over a
//! random 512-bit key.

mod binary;
pub mod crypto;
mod json;

#[cfg(test)]
mod tests;

use crypto::{XTS_KEY_SIZE, Xts};
use json::{IdMap, IdStr, Metadata, U64Str};
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub use binary::HDR_SIZES;

/// Header size we write (binary header + JSON area), cryptsetup's default.
pub const HDR_SIZE: u64 = 16 << 10;
/// Start of the data segment we write, cryptsetup's default (16 MiB).
pub const DATA_OFFSET: u64 = 16 << 20;
/// The data segment's sector size we write.
pub const SECTOR_SIZE: u32 = 4096;
/// The only cipher we accept, for keyslots and the segment.
pub const CIPHER: &str = "aes-xts-plain64";
/// Keyslot area key size, and the volume key size without integrity (AES-256-XTS).
pub const KEY_SIZE: usize = XTS_KEY_SIZE;
/// The only segment integrity we accept (`cryptsetup --integrity hmac-sha256`): dm-crypt
/// authenticates every sector with HMAC-SHA256 and stores the tag through dm-integrity.
pub const INTEGRITY: &str = "hmac(sha256)";
/// HMAC-SHA256 key size: with integrity the volume key is the XTS key followed by this key,
/// the order dm-crypt splits it in (the last `key_mac_size` bytes are the MAC key).
pub const INTEGRITY_KEY_SIZE: usize = 32;
/// Bytes of integrity tag per sector (the HMAC-SHA256; plain64 IVs need no stored IV).
pub const INTEGRITY_TAG_SIZE: u32 = 32;
/// The largest volume key we handle.
pub const MAX_KEY_SIZE: usize = KEY_SIZE + INTEGRITY_KEY_SIZE;
/// A volume key: [`KEY_SIZE`] bytes, or [`MAX_KEY_SIZE`] with integrity.
pub type VolumeKey = Zeroizing<Vec<u8>>;
/// AF stripes; cryptsetup always writes 4000.
pub const STRIPES: u32 = 4000;
/// At most this many keyslots (cryptsetup's `LUKS2_KEYSLOTS_MAX`).
pub const MAX_KEYSLOTS: usize = 32;
/// Iteration bound for PBKDF2 keyslots and digests, against a header that makes us spin:
/// about 30 s of HMAC-SHA256 on a slow vCPU. cryptsetup's 2 s benchmark gives a few million.
pub const MAX_PBKDF2_ITERATIONS: u32 = 1 << 26;
/// The fewest iterations cryptsetup writes.
pub const MIN_PBKDF2_ITERATIONS: u32 = 1000;
/// Argon2 bounds: cryptsetup's maximum memory (4 GiB, in KiB), a generous time, lanes.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 4 << 20;
pub const MAX_ARGON2_TIME: u32 = 1000;
pub const MAX_ARGON2_CPUS: u32 = 16;
/// How much of the data area `format` zeroes for a fresh dm-integrity superblock.
pub const INTEGRITY_SB_WIPE: u64 = 64 << 10;
/// How much `probe` looks at.
pub const PROBE_SIZE: usize = 1 << 20;

/// config.flags cryptsetup knows (persistent activation flags); anything else is refused.
const KNOWN_CONFIG_FLAGS: [&str; 6] = [
    "allow-discards",
    "same-cpu-crypt",
    "submit-from-crypt-cpus",
    "no-journal",
    "no-read-workqueue",
    "no-write-workqueue",
];

/// Which header copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Primary,
    Secondary,
}

impl fmt::Display for Which {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Which::Primary => "primary",
            Which::Secondary => "secondary",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Luks2Error {
    #[error("cannot read the device at byte {offset}")]
    Read {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the device at byte {offset}")]
    Write {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("device of {size} bytes is too small (need {need})")]
    TooSmall { size: u64, need: u64 },
    #[error("device size {0} is not a multiple of 4096 bytes")]
    Unaligned(u64),
    #[error("no LUKS2 {which} header (bad magic)")]
    BadMagic { which: Which },
    #[error("LUKS {which} header version {version} (only 2 is supported)")]
    BadVersion { which: Which, version: u16 },
    #[error("LUKS2 {which} header size {size} is not one cryptsetup uses")]
    BadHeaderSize { which: Which, size: u64 },
    #[error("LUKS2 {which} header checksum mismatch")]
    Checksum { which: Which },
    #[error("LUKS2 {which} header: bad {field} field")]
    BadField { which: Which, field: &'static str },
    #[error("LUKS2 header copies disagree: {0}")]
    HeadersDisagree(String),
    #[error("LUKS2 JSON metadata: {0}")]
    Json(String),
    #[error("LUKS2 header uses something not supported: {0}")]
    Unsupported(String),
    #[error("LUKS2 layout: {0}")]
    Layout(String),
    #[error("LUKS2 key derivation failed: {0}")]
    Kdf(String),
    #[error("the key opens no keyslot of this LUKS2 header")]
    WrongKey,
    #[error("no keyslot of this LUKS2 header can be tried (all have priority ignore)")]
    NoUsableKeyslot,
    #[error("cannot get random bytes: {0}")]
    Random(String),
}

/// KDF of a keyslot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    /// PBKDF2-HMAC-SHA256.
    Pbkdf2 { iterations: u32 },
    /// Argon2id (`id = true`) or Argon2i; `memory` in KiB, `cpus` lanes.
    Argon2 {
        id: bool,
        time: u32,
        memory: u32,
        cpus: u32,
    },
}

impl Kdf {
    /// Argon2id at cryptsetup's minimum time, 32 MiB, one lane (see the module comment).
    pub const ARGON2ID_DEFAULT: Kdf = Kdf::Argon2 {
        id: true,
        time: 4,
        memory: 32 << 10,
        cpus: 1,
    };

    fn name(&self) -> &'static str {
        match self {
            Kdf::Pbkdf2 { .. } => "pbkdf2",
            Kdf::Argon2 { id: true, .. } => "argon2id",
            Kdf::Argon2 { id: false, .. } => "argon2i",
        }
    }

    fn derive(&self, key: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; KEY_SIZE]>, Luks2Error> {
        let mut out = Zeroizing::new([0u8; KEY_SIZE]);
        match *self {
            Kdf::Pbkdf2 { iterations } => {
                crypto::pbkdf2_sha256(key, salt, iterations, &mut out[..]);
            }
            Kdf::Argon2 {
                id,
                time,
                memory,
                cpus,
            } => crypto::argon2(id, key, salt, time, memory, cpus, &mut out[..])
                .map_err(Luks2Error::Kdf)?,
        }
        Ok(out)
    }
}

impl fmt::Display for Kdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kdf::Pbkdf2 { iterations } => write!(f, "pbkdf2-sha256 iterations {iterations}"),
            Kdf::Argon2 {
                time, memory, cpus, ..
            } => write!(
                f,
                "{} time {time} memory {memory} KiB cpus {cpus}",
                self.name()
            ),
        }
    }
}

/// How to format.
#[derive(Debug, Clone)]
pub struct FormatOptions {
    pub kdf: Kdf,
    /// At most 47 bytes, no control characters.
    pub label: String,
    /// Iterations of the volume key digest.
    pub digest_iterations: u32,
    /// Authenticated encryption: segment integrity [`INTEGRITY`], a 96-byte volume key.
    pub integrity: bool,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions {
            kdf: Kdf::Pbkdf2 {
                iterations: MIN_PBKDF2_ITERATIONS,
            },
            label: String::new(),
            digest_iterations: MIN_PBKDF2_ITERATIONS,
            integrity: false,
        }
    }
}

/// The data segment: what dm-crypt needs besides the volume key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Start of the encrypted data, in bytes from the start of the device.
    pub offset: u64,
    /// Length in bytes; `None` for "dynamic" (to the end of the device).
    pub size: Option<u64>,
    /// Encryption sector size in bytes (512 … 4096).
    pub sector_size: u32,
    /// Always [`CIPHER`].
    pub cipher: String,
    /// IV of the first data sector (dm-crypt's `iv_offset`), in 512-byte units.
    pub iv_tweak: u64,
    /// `Some(INTEGRITY)` for authenticated encryption over dm-integrity.
    pub integrity: Option<String>,
}

impl Segment {
    /// Length of the data in bytes on a device of `device_size` bytes (already checked by
    /// `open` to be positive and a multiple of the sector size).
    pub fn data_size(&self, device_size: u64) -> u64 {
        self.size.unwrap_or_else(|| {
            let rest = device_size.saturating_sub(self.offset);
            rest - rest % u64::from(self.sector_size.max(512))
        })
    }

    /// The volume key size this segment needs.
    pub fn key_size(&self) -> usize {
        if self.integrity.is_some() {
            MAX_KEY_SIZE
        } else {
            KEY_SIZE
        }
    }

    /// The dm-integrity table parameters (no key) for this segment on `device`, as cryptsetup
    /// builds them for LUKS2 authenticated encryption: the integrity device starts at the data
    /// offset, keeps [`INTEGRITY_TAG_SIZE`] bytes of tag per sector that dm-crypt supplies
    /// (no internal hash), block size = sector size; journal mode `J` (cryptsetup's default),
    /// or `D` (direct, no journal) for the initial wipe, as cryptsetup wipes.
    /// The target length is the superblock's `provided_data_sectors`.
    pub fn dm_integrity_params(&self, device: &str, journal: bool) -> String {
        format!(
            "{device} {} {INTEGRITY_TAG_SIZE} {} 2 block_size:{} fix_padding",
            self.offset / 512,
            if journal { 'J' } else { 'D' },
            self.sector_size
        )
    }

    /// The dm-crypt table parameters for this segment on `device` (a path or `major:minor`),
    /// as cryptsetup builds them. The target length is `data_size / 512` sectors. With
    /// integrity `device` is the dm-integrity device (see [`Segment::dm_integrity_params`]),
    /// which already starts at the data offset, and the cipher is the kernel crypto API's
    /// authenc; dm-crypt itself packs the key (XTS key ‖ HMAC key) into authenc's format.
    /// Secret.
    pub fn dm_crypt_params(&self, key: &[u8], device: &str) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(320));
        if self.integrity.is_some() {
            s.push_str("capi:authenc(hmac(sha256),xts(aes))-plain64");
        } else {
            s.push_str(&self.cipher);
        }
        s.push(' ');
        // Pushed digit by digit: no temporary String holds key material.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for b in key {
            s.push(char::from(DIGITS[usize::from(b >> 4)]));
            s.push(char::from(DIGITS[usize::from(b & 0xf)]));
        }
        let offset = if self.integrity.is_some() {
            0
        } else {
            self.offset / 512
        };
        s.push_str(&format!(" {} {} {}", self.iv_tweak, device, offset));
        let mut opts = Vec::new();
        if self.integrity.is_some() {
            opts.push(format!("integrity:{INTEGRITY_TAG_SIZE}:aead"));
        }
        if self.sector_size != 512 {
            opts.push(format!("sector_size:{}", self.sector_size));
        }
        if !opts.is_empty() {
            s.push_str(&format!(" {} {}", opts.len(), opts.join(" ")));
        }
        s
    }

    /// Encrypts (or decrypts) `data`, which starts `at` bytes into the segment, as dm-crypt
    /// does for this segment (host tools and tests; the guest leaves this to the kernel).
    /// `at` and `data.len()` must be multiples of the sector size.
    /// Not for integrity segments: their sectors sit between dm-integrity's tags.
    pub fn crypt(
        &self,
        key: &[u8],
        at: u64,
        data: &mut [u8],
        encrypt: bool,
    ) -> Result<(), Luks2Error> {
        if self.integrity.is_some() {
            return Err(unsupported(
                "host-side data access to an integrity segment".into(),
            ));
        }
        let key: &[u8; KEY_SIZE] = key.try_into().map_err(|_| {
            Luks2Error::Layout(format!(
                "volume key of {} bytes (need {KEY_SIZE})",
                key.len()
            ))
        })?;
        let sector = u64::from(self.sector_size);
        if !matches!(self.sector_size, 512 | 1024 | 2048 | 4096)
            || !at.is_multiple_of(sector)
            || !(data.len() as u64).is_multiple_of(sector)
        {
            return Err(Luks2Error::Layout(format!(
                "{} bytes at {at} are not whole {sector}-byte sectors",
                data.len()
            )));
        }
        let xts = Xts::new(key);
        let first_iv = self.iv_tweak.wrapping_add(at / 512);
        xts.crypt_sectors(self.sector_size as usize, first_iv, data, encrypt);
        Ok(())
    }
}

/// A keyslot, as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyslot {
    pub id: u32,
    pub kdf: Kdf,
    /// 0 ignore, 1 normal, 2 high.
    pub priority: u32,
    pub area_offset: u64,
    pub area_size: u64,
    salt: Vec<u8>,
}

/// A validated LUKS2 header (the copy with the highest seqid; both copies intact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    uuid: String,
    label: String,
    subsystem: String,
    seqid: u64,
    hdr_size: u64,
    keyslots_size: u64,
    keyslots: Vec<Keyslot>,
    segment: Segment,
    flags: Vec<String>,
    tokens: usize,
    digest_iterations: u32,
    digest_salt: Vec<u8>,
    digest: Vec<u8>,
}

impl Header {
    /// The LUKS UUID, lowercase text (measured by the agent).
    pub fn uuid(&self) -> &str {
        &self.uuid
    }
    pub fn label(&self) -> &str {
        &self.label
    }
    pub fn subsystem(&self) -> &str {
        &self.subsystem
    }
    pub fn seqid(&self) -> u64 {
        self.seqid
    }
    /// Binary header + JSON area size of one copy.
    pub fn hdr_size(&self) -> u64 {
        self.hdr_size
    }
    pub fn keyslots_size(&self) -> u64 {
        self.keyslots_size
    }
    pub fn keyslots(&self) -> &[Keyslot] {
        &self.keyslots
    }
    pub fn segment(&self) -> &Segment {
        &self.segment
    }
    /// Persistent activation flags (config.flags), e.g. "allow-discards".
    pub fn flags(&self) -> &[String] {
        &self.flags
    }
    /// Number of tokens (ignored otherwise).
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Whether `candidate` is this header's volume key (PBKDF2 digest, constant-time compare).
    pub fn check_volume_key(&self, candidate: &[u8]) -> bool {
        if candidate.len() != self.segment.key_size() {
            return false;
        }
        let mut d = Zeroizing::new(vec![0u8; self.digest.len()]);
        crypto::pbkdf2_sha256(candidate, &self.digest_salt, self.digest_iterations, &mut d);
        bool::from(d.ct_eq(&self.digest))
    }
}

/// What `probe` found at the start of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A LUKS2 primary header magic and version (not yet validated: that is `open`'s job).
    Luks2,
    /// The first MiB (or the whole device, if smaller) is zero: safe to format.
    Zeroed,
    /// Anything else, with what it looks like.
    Foreign(String),
}

/// Looks at the first MiB: LUKS2, blank, or something else (which the guest must not format).
pub fn probe(dev: &mut (impl Read + Seek)) -> Result<Kind, Luks2Error> {
    let size = device_size(dev)?;
    let len = size.min(PROBE_SIZE as u64) as usize;
    let b = read_at(dev, 0, len)?;
    if b.len() >= 8 && &b[..6] == binary::MAGIC_PRIMARY {
        return Ok(match u16::from_be_bytes([b[6], b[7]]) {
            2 => Kind::Luks2,
            1 => Kind::Foreign("a LUKS1 header".into()),
            v => Kind::Foreign(format!("a LUKS header of version {v}")),
        });
    }
    if b.iter().all(|&c| c == 0) {
        return Ok(Kind::Zeroed);
    }
    let at = |off: usize, magic: &[u8]| b.get(off..off + magic.len()) == Some(magic);
    let what = if at(0x4000, binary::MAGIC_SECONDARY) {
        "a LUKS2 secondary header without a primary"
    } else if at(512, b"EFI PART") {
        "a GPT partition table"
    } else if at(1080, &[0x53, 0xef]) {
        "an ext2/3/4 superblock"
    } else if at(0, b"XFSB") {
        "an XFS superblock"
    } else if at(0x10040, b"_BHRfS_M") {
        "a btrfs superblock"
    } else if at(4086, b"SWAPSPACE2") {
        "a swap signature"
    } else if at(510, &[0x55, 0xaa]) {
        "an MBR boot signature"
    } else {
        "non-zero data"
    };
    let first = b.iter().position(|&c| c != 0).unwrap_or(0);
    Ok(Kind::Foreign(format!(
        "{what} (first non-zero byte at {first})"
    )))
}

fn device_size(dev: &mut impl Seek) -> Result<u64, Luks2Error> {
    dev.seek(SeekFrom::End(0))
        .map_err(|source| Luks2Error::Read { offset: 0, source })
}

fn read_at(dev: &mut (impl Read + Seek), offset: u64, len: usize) -> Result<Vec<u8>, Luks2Error> {
    let mut buf = vec![0u8; len];
    dev.seek(SeekFrom::Start(offset))
        .and_then(|_| dev.read_exact(&mut buf))
        .map_err(|source| Luks2Error::Read { offset, source })?;
    Ok(buf)
}

fn write_at(dev: &mut (impl Write + Seek), offset: u64, data: &[u8]) -> Result<(), Luks2Error> {
    dev.seek(SeekFrom::Start(offset))
        .and_then(|_| dev.write_all(data))
        .map_err(|source| Luks2Error::Write { offset, source })
}

fn random(buf: &mut [u8]) -> Result<(), Luks2Error> {
    getrandom::fill(buf).map_err(|e| Luks2Error::Random(e.to_string()))
}

/// Reads and validates both header copies and the metadata, without a key (for `dump`, and the
/// first half of `open`).
///
/// The copy rule: both copies must carry the right magic, version, size, checksum and
/// `hdr_offset`, and the secondary must sit where the primary's `hdr_size` says. With equal
/// seqids, the two must be identical apart from magic, salt, `hdr_offset` and checksum
/// (cryptsetup writes them so); anything else is a disagreement we cannot explain and is
/// refused. With different seqids, the higher one wins: that is what an interrupted metadata
/// update by cryptsetup leaves, and what cryptsetup itself would use. A damaged copy is never
/// skipped: cryptsetup would repair it, but the agent writes nothing to a header it did not just
/// create, and an unexpected damage is for an operator to look at.
pub fn read_header(dev: &mut (impl Read + Seek)) -> Result<Header, Luks2Error> {
    let size = device_size(dev)?;
    let need = 2 * HDR_SIZES[0];
    if size < need {
        return Err(Luks2Error::TooSmall { size, need });
    }
    let first = read_at(dev, 0, binary::BIN_SIZE)?;
    let hdr_size = binary::claimed_size(&first, Which::Primary)?;
    if size < 2 * hdr_size {
        return Err(Luks2Error::TooSmall {
            size,
            need: 2 * hdr_size,
        });
    }
    let primary_area = read_at(dev, 0, hdr_size as usize)?;
    let (bin1, json1) = binary::parse(&primary_area, Which::Primary, 0)?;
    let second = read_at(dev, hdr_size, binary::BIN_SIZE)?;
    let size2 = binary::claimed_size(&second, Which::Secondary)?;
    if size2 != hdr_size {
        return Err(Luks2Error::HeadersDisagree(format!(
            "header sizes {hdr_size} and {size2}"
        )));
    }
    let secondary_area = read_at(dev, hdr_size, hdr_size as usize)?;
    let (bin2, json2) = binary::parse(&secondary_area, Which::Secondary, hdr_size)?;
    let (bin, json) = if bin1.seqid == bin2.seqid {
        if bin1 != bin2 {
            return Err(Luks2Error::HeadersDisagree(format!(
                "same seqid {} but different binary fields",
                bin1.seqid
            )));
        }
        if json1 != json2 {
            return Err(Luks2Error::HeadersDisagree(format!(
                "same seqid {} but different JSON metadata",
                bin1.seqid
            )));
        }
        (bin1, json1)
    } else if bin1.seqid > bin2.seqid {
        (bin1, json1)
    } else {
        (bin2, json2)
    };
    let meta = parse_metadata(&json)?;
    validate(&bin, &meta, size)
}

/// JSON text to the typed schema, with the refusals that deserve a clearer error than serde's
/// looked for first (another keyslot or segment type, a mandatory requirement).
fn parse_metadata(text: &str) -> Result<Metadata, Luks2Error> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Luks2Error::Json(e.to_string()))?;
    if let Some(m) = value
        .pointer("/config/requirements/mandatory")
        .and_then(|v| v.as_array())
        && !m.is_empty()
    {
        return Err(Luks2Error::Unsupported(format!(
            "mandatory requirements {}",
            serde_json::Value::Array(m.clone())
        )));
    }
    for (what, want) in [
        ("keyslots", "luks2"),
        ("segments", "crypt"),
        ("digests", "pbkdf2"),
    ] {
        if let Some(obj) = value.get(what).and_then(|v| v.as_object()) {
            for (id, v) in obj {
                if let Some(t) = v.get("type").and_then(|t| t.as_str())
                    && t != want
                {
                    return Err(Luks2Error::Unsupported(format!(
                        "{what} {id:?} of type {t:?} (only {want:?})"
                    )));
                }
            }
        }
    }
    // From the text, not from `value`: a `Value` has already dropped duplicate keys, which
    // the typed schema refuses.
    serde_json::from_str(text).map_err(|e| Luks2Error::Json(e.to_string()))
}

fn unsupported(what: String) -> Luks2Error {
    Luks2Error::Unsupported(what)
}

fn check_salt(what: &str, salt: &[u8]) -> Result<(), Luks2Error> {
    if !(16..=64).contains(&salt.len()) {
        return Err(Luks2Error::Json(format!(
            "{what} salt of {} bytes (16..=64)",
            salt.len()
        )));
    }
    Ok(())
}

fn check_pbkdf2(
    what: &str,
    hash: Option<&str>,
    iterations: Option<u32>,
) -> Result<u32, Luks2Error> {
    if hash != Some("sha256") {
        return Err(unsupported(format!(
            "{what} hash {hash:?} (only \"sha256\")"
        )));
    }
    let it = iterations.ok_or_else(|| Luks2Error::Json(format!("{what} has no iterations")))?;
    if !(MIN_PBKDF2_ITERATIONS..=MAX_PBKDF2_ITERATIONS).contains(&it) {
        return Err(unsupported(format!(
            "{what} iterations {it} (accepted {MIN_PBKDF2_ITERATIONS}..={MAX_PBKDF2_ITERATIONS})"
        )));
    }
    Ok(it)
}

/// Bytes of AF material of one keyslot for a volume key of `key_size` bytes (a multiple of
/// 512 for both key sizes, so whole sectors are encrypted on disk).
const fn af_size(key_size: usize) -> u64 {
    key_size as u64 * STRIPES as u64
}

/// The checked segment integrity object: exactly cryptsetup's
/// `{"type": "hmac(sha256)", "journal_encryption": "none", "journal_integrity": "none"}`.
fn check_integrity(v: &serde_json::Value) -> Result<String, Luks2Error> {
    let refuse = || {
        unsupported(format!(
            "segment integrity {v} (only {INTEGRITY} without journal crypto)"
        ))
    };
    let o = v.as_object().ok_or_else(refuse)?;
    let field = |k: &str| o.get(k).and_then(|x| x.as_str());
    if o.len() != 3
        || field("type") != Some(INTEGRITY)
        || field("journal_encryption") != Some("none")
        || field("journal_integrity") != Some("none")
    {
        return Err(refuse());
    }
    Ok(INTEGRITY.to_string())
}

/// Checks the metadata's values and layout against the binary header and the device size.
fn validate(
    bin: &binary::BinHeader,
    meta: &Metadata,
    device_size: u64,
) -> Result<Header, Luks2Error> {
    let layout = |s: String| Luks2Error::Layout(s);
    let hdr_size = bin.hdr_size;
    let c = &meta.config;
    if c.json_size.0 != hdr_size - binary::BIN_SIZE as u64 {
        return Err(layout(format!(
            "config.json_size {} does not match the header size {hdr_size}",
            c.json_size.0
        )));
    }
    let keyslots_size = c.keyslots_size.0;
    let ks_start = 2 * hdr_size;
    let ks_end = ks_start
        .checked_add(keyslots_size)
        .filter(|&e| e <= device_size)
        .ok_or_else(|| {
            layout(format!(
                "keyslots area of {keyslots_size} bytes beyond the device"
            ))
        })?;
    if !keyslots_size.is_multiple_of(4096) {
        return Err(layout(format!(
            "keyslots_size {keyslots_size} is not a multiple of 4096"
        )));
    }
    let flags = c.flags.clone().unwrap_or_default();
    if let Some(f) = flags
        .iter()
        .find(|f| !KNOWN_CONFIG_FLAGS.contains(&f.as_str()))
    {
        return Err(unsupported(format!("config flag {f:?}")));
    }
    if let Some(m) = c.requirements.as_ref().and_then(|r| r.mandatory.as_ref())
        && !m.is_empty()
    {
        return Err(unsupported(format!("mandatory requirements {m:?}")));
    }

    // The volume key size follows the segment (validated below; a bad one is refused there).
    let vk_size = match meta.segments.0.values().next() {
        Some(s) if s.integrity.is_some() => MAX_KEY_SIZE,
        _ => KEY_SIZE,
    };
    let af_bytes = af_size(vk_size);

    // Keyslots.
    if meta.keyslots.0.len() > MAX_KEYSLOTS {
        return Err(Luks2Error::Json(format!(
            "{} keyslots (at most {MAX_KEYSLOTS})",
            meta.keyslots.0.len()
        )));
    }
    let mut keyslots = Vec::new();
    for (&id, k) in &meta.keyslots.0 {
        let what = format!("keyslot {id}");
        if id as usize >= MAX_KEYSLOTS {
            return Err(Luks2Error::Json(format!(
                "{what}: id beyond {MAX_KEYSLOTS}"
            )));
        }
        if k.kind != "luks2" {
            return Err(unsupported(format!("{what} type {:?}", k.kind)));
        }
        if k.key_size as usize != vk_size || k.area.key_size as usize != KEY_SIZE {
            return Err(unsupported(format!(
                "{what} key size {}/{} bytes (only {vk_size}/{KEY_SIZE})",
                k.key_size, k.area.key_size
            )));
        }
        if k.af.kind != "luks1" || k.af.stripes != STRIPES || k.af.hash != "sha256" {
            return Err(unsupported(format!(
                "{what} AF {:?} {} stripes {:?} (only luks1, {STRIPES}, sha256)",
                k.af.kind, k.af.stripes, k.af.hash
            )));
        }
        if k.area.kind != "raw" || k.area.encryption != CIPHER {
            return Err(unsupported(format!(
                "{what} area {:?} encryption {:?} (only raw {CIPHER})",
                k.area.kind, k.area.encryption
            )));
        }
        let kdf = match k.kdf.kind.as_str() {
            "pbkdf2" => {
                if k.kdf.time.is_some() || k.kdf.memory.is_some() || k.kdf.cpus.is_some() {
                    return Err(Luks2Error::Json(format!("{what}: argon2 fields in pbkdf2")));
                }
                Kdf::Pbkdf2 {
                    iterations: check_pbkdf2(&what, k.kdf.hash.as_deref(), k.kdf.iterations)?,
                }
            }
            "argon2i" | "argon2id" => {
                if k.kdf.hash.is_some() || k.kdf.iterations.is_some() {
                    return Err(Luks2Error::Json(format!("{what}: pbkdf2 fields in argon2")));
                }
                let (Some(time), Some(memory), Some(cpus)) = (k.kdf.time, k.kdf.memory, k.kdf.cpus)
                else {
                    return Err(Luks2Error::Json(format!(
                        "{what}: argon2 needs time, memory and cpus"
                    )));
                };
                if !(1..=MAX_ARGON2_TIME).contains(&time)
                    || !(1..=MAX_ARGON2_CPUS).contains(&cpus)
                    || memory < 8 * cpus
                    || memory > MAX_ARGON2_MEMORY_KIB
                {
                    return Err(unsupported(format!(
                        "{what} argon2 cost time {time} memory {memory} KiB cpus {cpus}"
                    )));
                }
                Kdf::Argon2 {
                    id: k.kdf.kind == "argon2id",
                    time,
                    memory,
                    cpus,
                }
            }
            other => return Err(unsupported(format!("{what} KDF {other:?}"))),
        };
        check_salt(&what, &k.kdf.salt.0)?;
        let priority = k.priority.unwrap_or(1);
        if priority > 2 {
            return Err(Luks2Error::Json(format!("{what} priority {priority}")));
        }
        let (off, sz) = (k.area.offset.0, k.area.size.0);
        if !off.is_multiple_of(4096) || !sz.is_multiple_of(4096) || sz < af_bytes {
            return Err(layout(format!(
                "{what} area {off}+{sz} unaligned or smaller than its {af_bytes} bytes"
            )));
        }
        if off < ks_start || off.checked_add(sz).is_none_or(|e| e > ks_end) {
            return Err(layout(format!(
                "{what} area {off}+{sz} outside the keyslots area {ks_start}..{ks_end}"
            )));
        }
        keyslots.push(Keyslot {
            id,
            kdf,
            priority,
            area_offset: off,
            area_size: sz,
            salt: k.kdf.salt.0.clone(),
        });
    }
    for (i, a) in keyslots.iter().enumerate() {
        for b in &keyslots[i + 1..] {
            if a.area_offset < b.area_offset + b.area_size
                && b.area_offset < a.area_offset + a.area_size
            {
                return Err(layout(format!(
                    "keyslot {} and keyslot {} areas overlap",
                    a.id, b.id
                )));
            }
        }
    }

    // The segment.
    let mut segs = meta.segments.0.iter();
    let (&seg_id, s) = match (segs.next(), segs.next()) {
        (Some(one), None) => one,
        _ => {
            return Err(unsupported(format!(
                "{} segments (only exactly one)",
                meta.segments.0.len()
            )));
        }
    };
    if s.kind != "crypt" {
        return Err(unsupported(format!("segment type {:?}", s.kind)));
    }
    if s.encryption != CIPHER {
        return Err(unsupported(format!(
            "segment encryption {:?} (only {CIPHER})",
            s.encryption
        )));
    }
    let integrity = s.integrity.as_ref().map(check_integrity).transpose()?;
    if let Some(f) = s.flags.as_ref().filter(|f| !f.is_empty()) {
        return Err(unsupported(format!("segment flags {f:?}")));
    }
    if !matches!(s.sector_size, 512 | 1024 | 2048 | 4096) {
        return Err(unsupported(format!(
            "segment sector size {}",
            s.sector_size
        )));
    }
    let sector = u64::from(s.sector_size);
    let offset = s.offset.0;
    if !offset.is_multiple_of(sector) || offset < ks_end {
        return Err(layout(format!(
            "segment offset {offset} unaligned or inside the metadata (ends at {ks_end})"
        )));
    }
    let seg_size = if s.size == "dynamic" {
        None
    } else {
        Some(
            json::parse_u64(&s.size)
                .ok_or_else(|| Luks2Error::Json(format!("segment size {:?}", s.size)))?,
        )
    };
    // A dynamic segment runs to the end of the device in whole sectors: a partition's size is
    // the partitioner's choice, and the tail of an odd-sized one simply stays unused.
    let data = seg_size.unwrap_or_else(|| {
        let rest = device_size.saturating_sub(offset);
        rest - rest % sector
    });
    if data == 0
        || !data.is_multiple_of(sector)
        || offset.checked_add(data).is_none_or(|e| e > device_size)
    {
        return Err(layout(format!(
            "segment {offset}+{data} empty, unaligned to {sector} or beyond the device of {device_size} bytes"
        )));
    }

    // The digest.
    let mut digs = meta.digests.0.values();
    let d = match (digs.next(), digs.next()) {
        (Some(one), None) => one,
        _ => {
            return Err(unsupported(format!(
                "{} digests (only exactly one)",
                meta.digests.0.len()
            )));
        }
    };
    if d.kind != "pbkdf2" {
        return Err(unsupported(format!("digest type {:?}", d.kind)));
    }
    let digest_iterations = check_pbkdf2("digest", Some(&d.hash), Some(d.iterations))?;
    check_salt("digest", &d.salt.0)?;
    if d.digest.0.len() != 32 {
        return Err(Luks2Error::Json(format!(
            "digest of {} bytes (sha256: 32)",
            d.digest.0.len()
        )));
    }
    if d.segments != [IdStr(seg_id)] {
        return Err(Luks2Error::Json(
            "the digest is not bound to exactly the segment".into(),
        ));
    }
    let mut bound: Vec<u32> = d.keyslots.iter().map(|k| k.0).collect();
    bound.sort_unstable();
    let before = bound.len();
    bound.dedup();
    if bound.len() != before {
        return Err(Luks2Error::Json("the digest lists a keyslot twice".into()));
    }
    let have: Vec<u32> = keyslots.iter().map(|k| k.id).collect();
    if bound != have {
        return Err(Luks2Error::Json(format!(
            "the digest binds keyslots {bound:?} but the header has {have:?}"
        )));
    }
    if have.is_empty() {
        return Err(Luks2Error::Json("no keyslots".into()));
    }

    // Tokens: shape only (cryptsetup's rules), they never influence what we do.
    if meta.tokens.0.len() > MAX_KEYSLOTS {
        return Err(Luks2Error::Json("too many tokens".into()));
    }
    for (id, t) in &meta.tokens.0 {
        let ok = t.get("type").is_some_and(|v| v.is_string())
            && t.get("keyslots")
                .and_then(|v| v.as_array())
                .is_some_and(|a| {
                    a.iter().all(|k| {
                        k.as_str()
                            .and_then(json::parse_id)
                            .is_some_and(|k| have.contains(&k))
                    })
                });
        if !ok {
            return Err(Luks2Error::Json(format!("token {id} malformed")));
        }
    }

    Ok(Header {
        uuid: bin.uuid.clone(),
        label: bin.label.clone(),
        subsystem: bin.subsystem.clone(),
        seqid: bin.seqid,
        hdr_size,
        keyslots_size,
        keyslots,
        segment: Segment {
            offset,
            size: seg_size,
            sector_size: s.sector_size,
            cipher: CIPHER.to_string(),
            iv_tweak: s.iv_tweak.0,
            integrity,
        },
        flags,
        tokens: meta.tokens.0.len(),
        digest_iterations,
        digest_salt: d.salt.0.clone(),
        digest: d.digest.0.clone(),
    })
}

/// Validates the header, then unlocks: every keyslot the digest binds, high priority first,
/// priority "ignore" skipped (as cryptsetup does when no slot is named), until one yields the
/// volume key. A key that opens none is [`Luks2Error::WrongKey`].
pub fn open(dev: &mut (impl Read + Seek), key: &[u8]) -> Result<(Header, VolumeKey), Luks2Error> {
    let header = read_header(dev)?;
    let mut order: Vec<&Keyslot> = header.keyslots.iter().filter(|k| k.priority > 0).collect();
    order.sort_by_key(|k| std::cmp::Reverse(k.priority));
    if order.is_empty() {
        return Err(Luks2Error::NoUsableKeyslot);
    }
    for slot in order {
        let vk = unlock_keyslot(dev, slot, header.segment.key_size(), key)?;
        if header.check_volume_key(&vk) {
            return Ok((header, vk));
        }
    }
    Err(Luks2Error::WrongKey)
}

/// The candidate volume key of one keyslot: KDF, decrypt the AF material, merge.
fn unlock_keyslot(
    dev: &mut (impl Read + Seek),
    slot: &Keyslot,
    vk_size: usize,
    key: &[u8],
) -> Result<VolumeKey, Luks2Error> {
    let area_key = slot.kdf.derive(key, &slot.salt)?;
    let mut material = Zeroizing::new(read_at(dev, slot.area_offset, af_size(vk_size) as usize)?);
    Xts::new(&area_key).crypt_sectors(512, 0, &mut material, false);
    Ok(crypto::af_merge(&material, vk_size, STRIPES as usize))
}

/// Creates a LUKS2 volume on the first `size` bytes of `dev` (see the module comment for the
/// layout), with `key` as keyslot 0's passphrase and a fresh random volume key. Writes both
/// headers and the whole keyslots area (zeros where unused); the data area is left as it is.
pub fn format(
    dev: &mut (impl Write + Seek),
    size: u64,
    key: &[u8],
    opts: &FormatOptions,
) -> Result<Header, Luks2Error> {
    let need = DATA_OFFSET + u64::from(SECTOR_SIZE);
    if size < need {
        return Err(Luks2Error::TooSmall { size, need });
    }
    if !size.is_multiple_of(u64::from(SECTOR_SIZE)) {
        return Err(Luks2Error::Unaligned(size));
    }
    if key.is_empty() {
        return Err(Luks2Error::Kdf("empty key".into()));
    }
    let keyslots_size = DATA_OFFSET - 2 * HDR_SIZE;
    let area_offset = 2 * HDR_SIZE;
    let vk_size = if opts.integrity {
        MAX_KEY_SIZE
    } else {
        KEY_SIZE
    };
    let af_bytes = af_size(vk_size);
    let area_size = af_bytes.div_ceil(4096) * 4096;

    let mut vk = Zeroizing::new(vec![0u8; vk_size]);
    random(&mut vk[..])?;
    let mut uuid = [0u8; 16];
    random(&mut uuid)?;
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    let uuid = crate::gpt::Guid::from_bytes(uuid).to_string();
    let mut kdf_salt = [0u8; 32];
    let mut digest_salt = [0u8; 32];
    let mut salts = [[0u8; 64]; 2];
    random(&mut kdf_salt)?;
    random(&mut digest_salt)?;
    random(&mut salts[0])?;
    random(&mut salts[1])?;

    let area_key = opts.kdf.derive(key, &kdf_salt)?;
    let mut stripes_random = Zeroizing::new(vec![0u8; (af_bytes - vk_size as u64) as usize]);
    random(&mut stripes_random)?;
    let mut material = crypto::af_split(&vk[..], STRIPES as usize, &stripes_random);
    Xts::new(&area_key).crypt_sectors(512, 0, &mut material, true);
    let mut digest = vec![0u8; 32];
    crypto::pbkdf2_sha256(&vk[..], &digest_salt, opts.digest_iterations, &mut digest);

    let kdf = match opts.kdf {
        Kdf::Pbkdf2 { iterations } => json::Kdf {
            kind: "pbkdf2".into(),
            hash: Some("sha256".into()),
            iterations: Some(iterations),
            time: None,
            memory: None,
            cpus: None,
            salt: json::B64(kdf_salt.to_vec()),
        },
        Kdf::Argon2 {
            time, memory, cpus, ..
        } => json::Kdf {
            kind: opts.kdf.name().into(),
            hash: None,
            iterations: None,
            time: Some(time),
            memory: Some(memory),
            cpus: Some(cpus),
            salt: json::B64(kdf_salt.to_vec()),
        },
    };
    let mut meta = Metadata {
        keyslots: IdMap::default(),
        tokens: IdMap::default(),
        segments: IdMap::default(),
        digests: IdMap::default(),
        config: json::Config {
            json_size: U64Str(HDR_SIZE - binary::BIN_SIZE as u64),
            keyslots_size: U64Str(keyslots_size),
            flags: None,
            requirements: None,
        },
    };
    meta.keyslots.0.insert(
        0,
        json::Keyslot {
            kind: "luks2".into(),
            key_size: vk_size as u32,
            af: json::Af {
                kind: "luks1".into(),
                stripes: STRIPES,
                hash: "sha256".into(),
            },
            area: json::Area {
                kind: "raw".into(),
                offset: U64Str(area_offset),
                size: U64Str(area_size),
                encryption: CIPHER.into(),
                key_size: KEY_SIZE as u32,
            },
            kdf,
            priority: None,
        },
    );
    meta.segments.0.insert(
        0,
        json::Segment {
            kind: "crypt".into(),
            offset: U64Str(DATA_OFFSET),
            size: "dynamic".into(),
            iv_tweak: U64Str(0),
            encryption: CIPHER.into(),
            sector_size: SECTOR_SIZE,
            integrity: opts.integrity.then(|| {
                serde_json::json!({
                    "type": INTEGRITY,
                    "journal_encryption": "none",
                    "journal_integrity": "none",
                })
            }),
            flags: None,
        },
    );
    meta.digests.0.insert(
        0,
        json::DigestJson {
            kind: "pbkdf2".into(),
            keyslots: vec![IdStr(0)],
            segments: vec![IdStr(0)],
            hash: "sha256".into(),
            iterations: opts.digest_iterations,
            salt: json::B64(digest_salt.to_vec()),
            digest: json::B64(digest),
        },
    );
    let text = serde_json::to_string(&meta).map_err(|e| Luks2Error::Json(e.to_string()))?;
    let bin = binary::BinHeader {
        hdr_size: HDR_SIZE,
        seqid: 1,
        label: opts.label.clone(),
        uuid,
        subsystem: String::new(),
    };
    if bin.label.len() >= 48 || bin.label.chars().any(char::is_control) {
        return Err(Luks2Error::BadField {
            which: Which::Primary,
            field: "label",
        });
    }
    // What we are about to write must pass our own reader.
    let header = validate(&bin, &meta, size)?;
    if !header.check_volume_key(&vk) {
        return Err(Luks2Error::Kdf("digest self-check failed".into()));
    }
    let primary = binary::build(Which::Primary, &bin, &salts[0], &text)?;
    let secondary = binary::build(Which::Secondary, &bin, &salts[1], &text)?;

    // Keyslots area first, headers last: an interrupted format leaves no valid header.
    let zeros = vec![0u8; 1 << 20];
    let mut at = area_offset;
    while at < DATA_OFFSET {
        let n = (DATA_OFFSET - at).min(zeros.len() as u64) as usize;
        write_at(dev, at, &zeros[..n])?;
        at += n as u64;
    }
    write_at(dev, area_offset, &material)?;
    if opts.integrity {
        // A zeroed dm-integrity superblock: the kernel formats it on first activation (and
        // the guest then wipes the data once through dm-crypt, so every sector has a tag).
        write_at(
            dev,
            DATA_OFFSET,
            &zeros[..INTEGRITY_SB_WIPE.min(size - DATA_OFFSET) as usize],
        )?;
    }
    write_at(dev, HDR_SIZE, &secondary)?;
    write_at(dev, 0, &primary)?;
    dev.flush()
        .map_err(|source| Luks2Error::Write { offset: 0, source })?;
    Ok(header)
}
