//! Building a Unified Kernel Image: the systemd EFI stub (`linuxx64.efi.stub`, systemd 252 as
//! Debian 12 ships it) with the kernel, initrd, command line and os-release appended as PE
//! sections, written in Rust rather than with `objcopy --add-section`.
//!
//! Why our own writer: the UKI's bytes decide PCR 4 (its Authenticode digest, see [`crate::pe`])
//! and, through its sections, PCR 11 (see [`crate::predict`]), so they must be reproducible
//! from the inputs alone. objcopy sets the COFF timestamp and places sections where the caller
//! says; the UAPI "Unified Kernel Image" specification and systemd-stub(7) only require the
//! named sections. Here:
//!
//! * the stub's headers, section table and section data are kept byte for byte, and so are its
//!   own sections (`.text`, `.data`, `.sbat`, `.sdmagic`, ...);
//! * the new sections follow the stub's in the section table, in the file (each at the next
//!   `FileAlignment` boundary, `SizeOfRawData` rounded up to it, padded with zeros) and in
//!   memory (each at the next `SectionAlignment` boundary after the previous one's end);
//!   `VirtualSize` is the exact input length, which is what systemd-stub measures and hands on;
//!   they are initialized read-only data (`IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ`);
//! * `NumberOfSections`, `SizeOfInitializedData` (plus the new sections' raw sizes) and
//!   `SizeOfImage` (the end of the last section rounded up to `SectionAlignment`) are updated,
//!   `TimeDateStamp` is 0 and `CheckSum` is recomputed ([`crate::pe::pe_checksum`]);
//! * whatever the stub carries after its last section is dropped: its COFF symbol table
//!   (Debian's stub has one; PE images should not, and `PointerToSymbolTable`/`NumberOfSymbols`
//!   are zeroed) and a signature (the Certificate Table entry is zeroed; a signature over the
//!   stub would not cover the UKI anyway — sign the UKI afterwards).
//!
//! The output depends on nothing but the inputs: no clock, no paths, no environment.

use crate::pe::{PeError, PeImage, pe_checksum};

/// `IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ`: what `objcopy --set-section-flags
/// name=data,readonly` and ukify give the payload sections.
pub const PAYLOAD_CHARACTERISTICS: u32 = 0x4000_0040;

/// What went wrong building a UKI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UkiError {
    #[error("stub: {0}")]
    Stub(#[from] PeError),
    #[error("the stub is not an x86-64 PE32+ image (machine {machine:#06x}, PE32+ {pe32_plus})")]
    StubNotX64 { machine: u16, pe32_plus: bool },
    #[error("the stub already has a {0} section")]
    StubHasSection(String),
    #[error(
        "the stub has no room in its headers for {needed} more section table entries (table ends at {table_end:#x}, data starts at {limit:#x})"
    )]
    NoHeaderRoom {
        needed: usize,
        table_end: usize,
        limit: usize,
    },
    #[error("section {0} is empty; leave it out instead (systemd-stub ignores empty sections)")]
    EmptySection(&'static str),
    #[error("the image would exceed the 4 GiB a PE image can address")]
    TooLarge,
}

/// The payloads of a UKI. `linux` is required; the others are optional and left out when
/// `None`. Bytes are taken as they are: systemd-stub hands `.cmdline` to the kernel as it is
/// (a trailing newline included), so give exactly the command line wanted.
#[derive(Debug, Clone, Copy)]
pub struct UkiInputs<'a> {
    /// The systemd EFI stub (`linuxx64.efi.stub`).
    pub stub: &'a [u8],
    /// `.linux`: the kernel's EFI-stub PE image (`vmlinuz`).
    pub linux: &'a [u8],
    /// `.osrel`: an os-release file.
    pub osrel: Option<&'a [u8]>,
    /// `.cmdline`: the kernel command line.
    pub cmdline: Option<&'a [u8]>,
    /// `.initrd`: the initrd (cpio, possibly compressed).
    pub initrd: Option<&'a [u8]>,
    /// `.splash`: a BMP image.
    pub splash: Option<&'a [u8]>,
    /// `.dtb`: a device tree blob.
    pub dtb: Option<&'a [u8]>,
    /// `.pcrpkey`: a PEM public key for signed PCR policies.
    pub pcrpkey: Option<&'a [u8]>,
}

impl<'a> UkiInputs<'a> {
    /// Inputs with only the stub and the kernel.
    pub fn new(stub: &'a [u8], linux: &'a [u8]) -> UkiInputs<'a> {
        UkiInputs {
            stub,
            linux,
            osrel: None,
            cmdline: None,
            initrd: None,
            splash: None,
            dtb: None,
            pcrpkey: None,
        }
    }

    /// The payload sections in the order they are written into the image.
    pub fn sections(&self) -> Vec<(&'static str, &'a [u8])> {
        [
            (".osrel", self.osrel),
            (".cmdline", self.cmdline),
            (".splash", self.splash),
            (".dtb", self.dtb),
            (".pcrpkey", self.pcrpkey),
            (".linux", Some(self.linux)),
            (".initrd", self.initrd),
        ]
        .into_iter()
        .filter_map(|(n, d)| d.map(|d| (n, d)))
        .collect()
    }
}

/// Where a payload section went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedSection {
    pub name: &'static str,
    pub virtual_address: u32,
    pub virtual_size: u32,
    pub pointer_to_raw_data: u32,
    pub size_of_raw_data: u32,
}

/// A built UKI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uki {
    /// The image.
    pub bytes: Vec<u8>,
    /// The payload sections, in table order.
    pub sections: Vec<PlacedSection>,
}

fn align_up(v: u64, a: u32) -> u64 {
    let a = a as u64;
    v.div_ceil(a) * a
}

fn put_u16(d: &mut [u8], off: usize, v: u16) {
    d[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(d: &mut [u8], off: usize, v: u32) {
    d[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

impl Uki {
    /// Builds the UKI of `inputs` (see the module documentation for the layout).
    pub fn build(inputs: &UkiInputs<'_>) -> Result<Uki, UkiError> {
        let stub = inputs.stub;
        let img = PeImage::parse(stub)?;
        if img.machine != 0x8664 || !img.pe32_plus {
            return Err(UkiError::StubNotX64 {
                machine: img.machine,
                pe32_plus: img.pe32_plus,
            });
        }
        let payload = inputs.sections();
        for (name, data) in &payload {
            if img.section(name).is_some() {
                return Err(UkiError::StubHasSection((*name).to_string()));
            }
            if data.is_empty() {
                return Err(UkiError::EmptySection(name));
            }
        }
        // Room for the new section table entries: before SizeOfHeaders and before the first
        // section's raw data.
        let table_end = img.section_table_end();
        let first_raw = img
            .sections
            .iter()
            .filter(|s| s.size_of_raw_data != 0)
            .map(|s| s.pointer_to_raw_data as usize)
            .min()
            .unwrap_or(usize::MAX);
        let limit = (img.size_of_headers as usize).min(first_raw);
        let new_table_end = table_end + 40 * payload.len();
        if new_table_end > limit || img.sections.len() + payload.len() > crate::pe::MAX_SECTIONS {
            return Err(UkiError::NoHeaderRoom {
                needed: payload.len(),
                table_end,
                limit,
            });
        }
        if stub[table_end..new_table_end].iter().any(|&b| b != 0) {
            // Something lives where the new entries would go.
            return Err(UkiError::NoHeaderRoom {
                needed: payload.len(),
                table_end,
                limit: table_end,
            });
        }

        // The stub's extent in the file and in memory.
        let raw_end = img
            .sections
            .iter()
            .map(|s| s.pointer_to_raw_data as u64 + s.size_of_raw_data as u64)
            .max()
            .unwrap_or(0)
            .max(img.size_of_headers as u64);
        let virt_end = img
            .sections
            .iter()
            .map(|s| s.virtual_address as u64 + (s.virtual_size.max(s.size_of_raw_data)) as u64)
            .max()
            .unwrap_or(0)
            .max(img.size_of_headers as u64)
            .max(img.size_of_image as u64);

        let mut file_off = align_up(raw_end, img.file_alignment);
        let mut va = align_up(virt_end, img.section_alignment);
        let mut placed = Vec::with_capacity(payload.len());
        let mut added_init = 0u64;
        for (name, data) in &payload {
            let len = data.len() as u64;
            let raw = align_up(len, img.file_alignment);
            placed.push((
                PlacedSection {
                    name,
                    virtual_address: u32::try_from(va).map_err(|_| UkiError::TooLarge)?,
                    virtual_size: u32::try_from(len).map_err(|_| UkiError::TooLarge)?,
                    pointer_to_raw_data: u32::try_from(file_off).map_err(|_| UkiError::TooLarge)?,
                    size_of_raw_data: u32::try_from(raw).map_err(|_| UkiError::TooLarge)?,
                },
                *data,
            ));
            added_init += raw;
            file_off += raw;
            va = align_up(va + len, img.section_alignment);
        }
        let size_of_image = u32::try_from(va).map_err(|_| UkiError::TooLarge)?;
        let total = usize::try_from(file_off).map_err(|_| UkiError::TooLarge)?;
        u32::try_from(file_off).map_err(|_| UkiError::TooLarge)?;
        let size_of_init = u32::try_from(img.size_of_initialized_data as u64 + added_init)
            .map_err(|_| UkiError::TooLarge)?;

        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&stub[..raw_end as usize]);
        out.resize(total, 0);

        // Headers.
        let coff = img.coff_offset;
        put_u16(
            &mut out,
            coff + 2,
            (img.sections.len() + payload.len()) as u16,
        );
        put_u32(&mut out, coff + 4, 0); // TimeDateStamp
        put_u32(&mut out, coff + 8, 0); // PointerToSymbolTable
        put_u32(&mut out, coff + 12, 0); // NumberOfSymbols
        let opt = img.opt_offset;
        put_u32(&mut out, opt + 8, size_of_init);
        put_u32(&mut out, opt + 56, size_of_image);
        if let Some(cd) = img.cert_dir_offset {
            put_u32(&mut out, cd, 0);
            put_u32(&mut out, cd + 4, 0);
        }
        // Section table entries and data.
        for (i, (p, data)) in placed.iter().enumerate() {
            let e = table_end + 40 * i;
            let mut name = [0u8; 8];
            name[..p.name.len()].copy_from_slice(p.name.as_bytes());
            out[e..e + 8].copy_from_slice(&name);
            put_u32(&mut out, e + 8, p.virtual_size);
            put_u32(&mut out, e + 12, p.virtual_address);
            put_u32(&mut out, e + 16, p.size_of_raw_data);
            put_u32(&mut out, e + 20, p.pointer_to_raw_data);
            // PointerToRelocations, PointerToLinenumbers, counts: zero.
            put_u32(&mut out, e + 36, PAYLOAD_CHARACTERISTICS);
            let start = p.pointer_to_raw_data as usize;
            out[start..start + data.len()].copy_from_slice(data);
        }
        let checksum = pe_checksum(&out, img.checksum_offset);
        put_u32(&mut out, img.checksum_offset, checksum);
        Ok(Uki {
            bytes: out,
            sections: placed.into_iter().map(|(p, _)| p).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::HashAlg;
    use crate::pe::{authenticode, section_contents};

    fn stub() -> Vec<u8> {
        let mut d = crate::pe::tests::tiny();
        // Headers of 0x200 bytes with one section: room for many more entries.
        d.truncate(0x400);
        d
    }

    #[test]
    fn sections_land_after_the_stub_and_read_back() {
        let s = stub();
        let mut inp = UkiInputs::new(&s, b"KERNEL");
        inp.cmdline = Some(b"console=ttyS0");
        inp.initrd = Some(&[7u8; 0x201]);
        let uki = Uki::build(&inp).unwrap();
        let img = PeImage::parse(&uki.bytes).unwrap();
        assert_eq!(img.sections.len(), 4);
        assert_eq!(img.time_date_stamp, 0);
        let names: Vec<_> = img.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [".a", ".cmdline", ".linux", ".initrd"]);
        // The stub's .a: VA 0x200, 0x10 bytes (raw 0x200) → next VA at 0x400.
        assert_eq!(img.sections[1].virtual_address, 0x400);
        assert_eq!(img.sections[1].pointer_to_raw_data, 0x400);
        assert_eq!(img.sections[2].virtual_address, 0x600);
        assert_eq!(img.sections[3].virtual_address, 0x800);
        assert_eq!(img.sections[3].size_of_raw_data, 0x400);
        assert_eq!(img.size_of_image, 0xc00);
        assert_eq!(uki.bytes.len(), 0xc00);
        assert_eq!(
            section_contents(&uki.bytes, ".cmdline").unwrap().unwrap(),
            b"console=ttyS0"
        );
        assert_eq!(
            section_contents(&uki.bytes, ".initrd").unwrap().unwrap(),
            vec![7u8; 0x201]
        );
        assert_eq!(img.checksum, pe_checksum(&uki.bytes, img.checksum_offset));
        authenticode(&uki.bytes, HashAlg::Sha256).unwrap();
    }

    #[test]
    fn refuses_what_it_cannot_build() {
        let s = stub();
        let mut inp = UkiInputs::new(&s, b"K");
        inp.cmdline = Some(b"");
        assert_eq!(Uki::build(&inp), Err(UkiError::EmptySection(".cmdline")));
        let mut s2 = s.clone();
        let st = 0x44 + 20 + 240;
        s2[st..st + 8].copy_from_slice(b".linux\0\0");
        assert_eq!(
            Uki::build(&UkiInputs::new(&s2, b"K")),
            Err(UkiError::StubHasSection(".linux".into()))
        );
        assert!(matches!(
            Uki::build(&UkiInputs::new(b"MZ", b"K")),
            Err(UkiError::Stub(_))
        ));
    }
}
