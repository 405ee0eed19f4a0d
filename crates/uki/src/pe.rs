//! A bounded reader of PE32/PE32+ images: headers, section table, section contents, the
//! Authenticode digest and the PE checksum.
//!
//! Why: UEFI firmware measures every PE image it loads into PCR 4 as an
//! `EV_EFI_BOOT_SERVICES_APPLICATION` whose digest is the image's Authenticode hash (TCG PC
//! Client Platform Firmware Profile 1.05, 10.4.4 and 3.3.4.5; edk2's `DxeTpm2MeasureBootLib`
//! `Tcg2MeasurePeImage`), so predicting PCR 4 means computing that hash. The rules are
//! Microsoft's "Windows Authenticode Portable Executable Signature Format" (1.0, 2008),
//! "Calculating the PE Image Hash":
//!
//! 1. hash the headers up to `SizeOfHeaders`, leaving out the optional header's `CheckSum`
//!    and the Certificate Table entry of the data directories (entry 4, `IMAGE_DIRECTORY_ENTRY_SECURITY`;
//!    an image with only 4 or fewer data directories has none, and then only the checksum is
//!    left out — edk2 does the same);
//! 2. hash each section with a non-zero `SizeOfRawData`, in ascending order of
//!    `PointerToRawData`, `SizeOfRawData` bytes from `PointerToRawData`;
//! 3. if the file is longer than what was hashed, hash the rest except the certificate table
//!    (its size from the Certificate Table entry; the table is at the end of the file).
//!
//! The PE checksum is the `IMAGEHLP` `CheckSumMappedFile` algorithm: a 16-bit one's-complement
//! style sum of the file's little-endian words with the carries folded back, the `CheckSum`
//! field counted as zero, plus the file's length.
//!
//! Every offset and size read from the file is checked against the file before use; errors are
//! [`PeError`]s, nothing panics on malformed input.

use crate::hash::{HashAlg, Hasher};

/// The PE spec's limit on sections (the Windows loader's; enough for any UKI).
pub const MAX_SECTIONS: usize = 96;

/// [`Section::memory_contents`] refuses to zero-fill more than this beyond a section's raw
/// data (a bound on memory for hostile images; payload sections have none).
pub const MAX_ZERO_FILL: usize = 1 << 20;

/// What is wrong with an image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeError {
    #[error("image too short: {what} needs bytes up to offset {need}, the image has {len}")]
    Truncated {
        what: &'static str,
        need: u64,
        len: usize,
    },
    #[error("not a PE image: no MZ signature")]
    NoMz,
    #[error("not a PE image: no PE\\0\\0 signature at offset {0:#x}")]
    NoPeSignature(u32),
    #[error("unknown optional header magic {0:#06x} (PE32 is 0x10b, PE32+ 0x20b)")]
    BadMagic(u16),
    #[error("optional header of {size} bytes is too small for its {dirs} data directories")]
    OptionalHeaderTooSmall { size: u16, dirs: u32 },
    #[error("{0} sections, more than the limit of {MAX_SECTIONS}")]
    TooManySections(usize),
    #[error("{0} data directories, more than the 16 the format has")]
    TooManyDirectories(u32),
    #[error(
        "SizeOfHeaders {size_of_headers:#x} does not cover the section table ending at {table_end:#x}"
    )]
    HeadersTooSmall {
        size_of_headers: u32,
        table_end: u64,
    },
    #[error(
        "section {name:?}: raw data {offset:#x}+{size:#x} lies outside the image of {len:#x} bytes"
    )]
    SectionOutOfFile {
        name: String,
        offset: u32,
        size: u32,
        len: usize,
    },
    #[error(
        "certificate table of {cert_size:#x} bytes does not fit after the {hashed:#x} bytes of headers and sections in an image of {len:#x}"
    )]
    BadCertificateTable {
        cert_size: u32,
        hashed: u64,
        len: usize,
    },
    #[error(
        "section {name:?}: VirtualSize {virtual_size:#x} exceeds SizeOfRawData {size_of_raw_data:#x} by more than {MAX_ZERO_FILL:#x}"
    )]
    ZeroFillTooLarge {
        name: String,
        virtual_size: u32,
        size_of_raw_data: u32,
    },
    #[error("{what} is zero or not a power of two: {value:#x}")]
    BadAlignment { what: &'static str, value: u32 },
}

/// One entry of the section table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name bytes up to the first NUL (at most 8).
    pub name: String,
    /// The raw 8-byte name field.
    pub raw_name: [u8; 8],
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub size_of_raw_data: u32,
    pub pointer_to_raw_data: u32,
    pub characteristics: u32,
}

/// The fields of a parsed image that the builder and the measurements need. Offsets are file
/// offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeImage {
    /// Offset of the `PE\0\0` signature.
    pub pe_offset: usize,
    /// Offset of the COFF file header.
    pub coff_offset: usize,
    /// Offset of the optional header.
    pub opt_offset: usize,
    /// `SizeOfOptionalHeader`.
    pub opt_size: u16,
    /// True for PE32+ (magic 0x20b).
    pub pe32_plus: bool,
    pub machine: u16,
    pub time_date_stamp: u32,
    pub pointer_to_symbol_table: u32,
    pub number_of_symbols: u32,
    pub section_alignment: u32,
    pub file_alignment: u32,
    pub size_of_image: u32,
    pub size_of_headers: u32,
    pub size_of_initialized_data: u32,
    /// Offset of the `CheckSum` field.
    pub checksum_offset: usize,
    pub checksum: u32,
    pub number_of_rva_and_sizes: u32,
    /// Offset of the data directories.
    pub data_dirs_offset: usize,
    /// Offset of the Certificate Table entry, if the image has one (more than 4 directories).
    pub cert_dir_offset: Option<usize>,
    /// The Certificate Table's file offset and size (0, 0 when none).
    pub cert_table: (u32, u32),
    /// Offset of the section table.
    pub section_table_offset: usize,
    pub sections: Vec<Section>,
    /// The image's length in bytes.
    pub len: usize,
}

fn get<'a>(data: &'a [u8], off: usize, n: usize, what: &'static str) -> Result<&'a [u8], PeError> {
    off.checked_add(n)
        .and_then(|end| data.get(off..end))
        .ok_or(PeError::Truncated {
            what,
            need: off as u64 + n as u64,
            len: data.len(),
        })
}

pub(crate) fn u16_at(data: &[u8], off: usize, what: &'static str) -> Result<u16, PeError> {
    let b = get(data, off, 2, what)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

pub(crate) fn u32_at(data: &[u8], off: usize, what: &'static str) -> Result<u32, PeError> {
    let b = get(data, off, 4, what)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn check_alignment(what: &'static str, value: u32) -> Result<(), PeError> {
    if value == 0 || !value.is_power_of_two() {
        return Err(PeError::BadAlignment { what, value });
    }
    Ok(())
}

impl PeImage {
    /// Parses the headers and the section table of `data`.
    pub fn parse(data: &[u8]) -> Result<PeImage, PeError> {
        if get(data, 0, 2, "DOS header")? != b"MZ" {
            return Err(PeError::NoMz);
        }
        let e_lfanew = u32_at(data, 0x3c, "DOS header e_lfanew")?;
        let pe_offset = e_lfanew as usize;
        if get(data, pe_offset, 4, "PE signature")? != b"PE\0\0" {
            return Err(PeError::NoPeSignature(e_lfanew));
        }
        let coff = pe_offset + 4;
        get(data, coff, 20, "COFF file header")?;
        let machine = u16_at(data, coff, "Machine")?;
        let nsec = u16_at(data, coff + 2, "NumberOfSections")? as usize;
        if nsec > MAX_SECTIONS {
            return Err(PeError::TooManySections(nsec));
        }
        let time_date_stamp = u32_at(data, coff + 4, "TimeDateStamp")?;
        let pointer_to_symbol_table = u32_at(data, coff + 8, "PointerToSymbolTable")?;
        let number_of_symbols = u32_at(data, coff + 12, "NumberOfSymbols")?;
        let opt_size = u16_at(data, coff + 16, "SizeOfOptionalHeader")?;
        let opt = coff + 20;
        get(data, opt, opt_size as usize, "optional header")?;
        let magic = u16_at(data, opt, "optional header magic")?;
        let (pe32_plus, nrva_off, dirs_off) = match magic {
            0x20b => (true, 108, 112),
            0x10b => (false, 92, 96),
            m => return Err(PeError::BadMagic(m)),
        };
        let number_of_rva_and_sizes = u32_at(data, opt + nrva_off, "NumberOfRvaAndSizes")?;
        if number_of_rva_and_sizes > 16 {
            return Err(PeError::TooManyDirectories(number_of_rva_and_sizes));
        }
        if (opt_size as u64) < dirs_off as u64 + 8 * number_of_rva_and_sizes as u64 {
            return Err(PeError::OptionalHeaderTooSmall {
                size: opt_size,
                dirs: number_of_rva_and_sizes,
            });
        }
        let size_of_initialized_data = u32_at(data, opt + 8, "SizeOfInitializedData")?;
        let section_alignment = u32_at(data, opt + 32, "SectionAlignment")?;
        let file_alignment = u32_at(data, opt + 36, "FileAlignment")?;
        check_alignment("SectionAlignment", section_alignment)?;
        check_alignment("FileAlignment", file_alignment)?;
        let size_of_image = u32_at(data, opt + 56, "SizeOfImage")?;
        let size_of_headers = u32_at(data, opt + 60, "SizeOfHeaders")?;
        let checksum_offset = opt + 64;
        let checksum = u32_at(data, checksum_offset, "CheckSum")?;
        let data_dirs_offset = opt + dirs_off;
        let (cert_dir_offset, cert_table) = if number_of_rva_and_sizes > 4 {
            let off = data_dirs_offset + 4 * 8;
            (
                Some(off),
                (
                    u32_at(data, off, "Certificate Table")?,
                    u32_at(data, off + 4, "Certificate Table")?,
                ),
            )
        } else {
            (None, (0, 0))
        };
        let section_table_offset = opt + opt_size as usize;
        let table_end = section_table_offset as u64 + 40 * nsec as u64;
        if (size_of_headers as u64) < table_end {
            return Err(PeError::HeadersTooSmall {
                size_of_headers,
                table_end,
            });
        }
        if size_of_headers as usize > data.len() {
            return Err(PeError::Truncated {
                what: "headers (SizeOfHeaders)",
                need: size_of_headers as u64,
                len: data.len(),
            });
        }
        let mut sections = Vec::with_capacity(nsec);
        for i in 0..nsec {
            let s = section_table_offset + 40 * i;
            let raw = get(data, s, 40, "section table")?;
            let mut raw_name = [0u8; 8];
            raw_name.copy_from_slice(&raw[..8]);
            let name_len = raw_name.iter().position(|&b| b == 0).unwrap_or(8);
            let section = Section {
                name: String::from_utf8_lossy(&raw_name[..name_len]).into_owned(),
                raw_name,
                virtual_size: u32_at(raw, 8, "VirtualSize")?,
                virtual_address: u32_at(raw, 12, "VirtualAddress")?,
                size_of_raw_data: u32_at(raw, 16, "SizeOfRawData")?,
                pointer_to_raw_data: u32_at(raw, 20, "PointerToRawData")?,
                characteristics: u32_at(raw, 36, "Characteristics")?,
            };
            if section.size_of_raw_data != 0 {
                let end = section.pointer_to_raw_data as u64 + section.size_of_raw_data as u64;
                if end > data.len() as u64 {
                    return Err(PeError::SectionOutOfFile {
                        name: section.name.clone(),
                        offset: section.pointer_to_raw_data,
                        size: section.size_of_raw_data,
                        len: data.len(),
                    });
                }
            }
            sections.push(section);
        }
        Ok(PeImage {
            pe_offset,
            coff_offset: coff,
            opt_offset: opt,
            opt_size,
            pe32_plus,
            machine,
            time_date_stamp,
            pointer_to_symbol_table,
            number_of_symbols,
            section_alignment,
            file_alignment,
            size_of_image,
            size_of_headers,
            size_of_initialized_data,
            checksum_offset,
            checksum,
            number_of_rva_and_sizes,
            data_dirs_offset,
            cert_dir_offset,
            cert_table,
            section_table_offset,
            sections,
            len: data.len(),
        })
    }

    /// The first section called `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The end of the section table (where a new entry would go).
    pub fn section_table_end(&self) -> usize {
        self.section_table_offset + 40 * self.sections.len()
    }
}

impl Section {
    /// The section's raw data as stored in the file (`SizeOfRawData` bytes, file-aligned).
    /// `data` must be the image this section was parsed from.
    pub fn raw_data<'a>(&self, data: &'a [u8]) -> Result<&'a [u8], PeError> {
        get(
            data,
            self.pointer_to_raw_data as usize,
            self.size_of_raw_data as usize,
            "section raw data",
        )
    }

    /// The section as a loader maps it: `VirtualSize` bytes, the raw data cut to that size or
    /// padded with zeros. This is what systemd-stub measures and hands on (its `pe.c` takes a
    /// section's size from `VirtualSize`).
    pub fn memory_contents(&self, data: &[u8]) -> Result<Vec<u8>, PeError> {
        let raw = self.raw_data(data)?;
        let n = self.virtual_size as usize;
        if n > raw.len().saturating_add(MAX_ZERO_FILL) {
            return Err(PeError::ZeroFillTooLarge {
                name: self.name.clone(),
                virtual_size: self.virtual_size,
                size_of_raw_data: self.size_of_raw_data,
            });
        }
        let mut v = raw[..raw.len().min(n)].to_vec();
        v.resize(n, 0);
        Ok(v)
    }
}

/// Returns the contents (as mapped, see [`Section::memory_contents`]) of the section `name`,
/// `None` if the image has no such section.
pub fn section_contents(data: &[u8], name: &str) -> Result<Option<Vec<u8>>, PeError> {
    let img = PeImage::parse(data)?;
    match img.section(name) {
        Some(s) => Ok(Some(s.memory_contents(data)?)),
        None => Ok(None),
    }
}

/// The Authenticode digest of the PE image `data` with `alg` (see the module documentation).
pub fn authenticode(data: &[u8], alg: HashAlg) -> Result<Vec<u8>, PeError> {
    let img = PeImage::parse(data)?;
    authenticode_parsed(data, &img, alg)
}

pub(crate) fn authenticode_parsed(
    data: &[u8],
    img: &PeImage,
    alg: HashAlg,
) -> Result<Vec<u8>, PeError> {
    let mut h = Hasher::new(alg);
    let soh = img.size_of_headers as usize;
    let cs = img.checksum_offset;
    h.update(&data[..cs]);
    match img.cert_dir_offset {
        Some(cd) => {
            h.update(&data[cs + 4..cd]);
            h.update(&data[cd + 8..soh]);
        }
        None => h.update(&data[cs + 4..soh]),
    }
    let mut sorted: Vec<&Section> = img
        .sections
        .iter()
        .filter(|s| s.size_of_raw_data != 0)
        .collect();
    sorted.sort_by_key(|s| s.pointer_to_raw_data);
    let mut hashed = soh as u64;
    for s in sorted {
        h.update(s.raw_data(data)?);
        hashed += s.size_of_raw_data as u64;
    }
    let len = data.len() as u64;
    if len > hashed {
        let cert_size = img.cert_table.1 as u64;
        if len < hashed + cert_size {
            return Err(PeError::BadCertificateTable {
                cert_size: img.cert_table.1,
                hashed,
                len: data.len(),
            });
        }
        h.update(&data[hashed as usize..(len - cert_size) as usize]);
    }
    Ok(h.finish())
}

/// The PE checksum of `data` (`CheckSumMappedFile`), with the `CheckSum` field at
/// `checksum_offset` counted as zero.
pub fn pe_checksum(data: &[u8], checksum_offset: usize) -> u32 {
    let mut sum: u64 = 0;
    let mut i = 0;
    while i < data.len() {
        let byte = |j: usize| -> u64 {
            if (checksum_offset..checksum_offset.saturating_add(4)).contains(&j) {
                0
            } else {
                data.get(j).copied().unwrap_or(0) as u64
            }
        };
        sum += byte(i) | (byte(i + 1) << 8);
        sum = (sum & 0xffff) + (sum >> 16);
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    (sum as u32).wrapping_add(data.len() as u32)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal PE32+ image: headers of 0x200 bytes, one section `.a` of 0x200 bytes.
    pub(crate) fn tiny() -> Vec<u8> {
        let mut d = vec![0u8; 0x400];
        d[0..2].copy_from_slice(b"MZ");
        d[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        d[0x40..0x44].copy_from_slice(b"PE\0\0");
        let coff = 0x44;
        d[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
        d[coff + 2..coff + 4].copy_from_slice(&1u16.to_le_bytes());
        d[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
        let opt = coff + 20;
        d[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        d[opt + 32..opt + 36].copy_from_slice(&0x200u32.to_le_bytes());
        d[opt + 36..opt + 40].copy_from_slice(&0x200u32.to_le_bytes());
        d[opt + 56..opt + 60].copy_from_slice(&0x400u32.to_le_bytes());
        d[opt + 60..opt + 64].copy_from_slice(&0x200u32.to_le_bytes());
        d[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        let st = opt + 240;
        d[st..st + 2].copy_from_slice(b".a");
        d[st + 8..st + 12].copy_from_slice(&0x10u32.to_le_bytes());
        d[st + 12..st + 16].copy_from_slice(&0x200u32.to_le_bytes());
        d[st + 16..st + 20].copy_from_slice(&0x200u32.to_le_bytes());
        d[st + 20..st + 24].copy_from_slice(&0x200u32.to_le_bytes());
        for (i, b) in d[0x200..0x210].iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        d
    }

    #[test]
    fn tiny_image_parses_and_hashes_by_the_rules() {
        let d = tiny();
        let img = PeImage::parse(&d).unwrap();
        assert_eq!(img.sections.len(), 1);
        assert_eq!(img.sections[0].name, ".a");
        let c = img.sections[0].memory_contents(&d).unwrap();
        assert_eq!(c, (1..=16).collect::<Vec<u8>>());
        // Authenticode by hand: everything but the checksum and the certificate entry.
        let cs = img.checksum_offset;
        let cd = img.cert_dir_offset.unwrap();
        let mut manual = d[..cs].to_vec();
        manual.extend_from_slice(&d[cs + 4..cd]);
        manual.extend_from_slice(&d[cd + 8..]);
        assert_eq!(
            authenticode(&d, HashAlg::Sha256).unwrap(),
            HashAlg::Sha256.digest(&manual)
        );
        // The checksum field and the certificate entry do not count ...
        let mut d2 = d.clone();
        d2[cs] ^= 0xff;
        d2[cd] ^= 0xff;
        assert_eq!(
            authenticode(&d2, HashAlg::Sha1).unwrap(),
            authenticode(&d, HashAlg::Sha1).unwrap()
        );
        // ... every other byte does.
        let mut d3 = d.clone();
        d3[0x3ff] ^= 1;
        assert_ne!(
            authenticode(&d3, HashAlg::Sha1).unwrap(),
            authenticode(&d, HashAlg::Sha1).unwrap()
        );
    }

    #[test]
    fn trailing_data_is_hashed_and_the_certificate_table_is_not() {
        let mut d = tiny();
        let base = authenticode(&d, HashAlg::Sha256).unwrap();
        d.extend_from_slice(b"trailing");
        let with_trailer = authenticode(&d, HashAlg::Sha256).unwrap();
        assert_ne!(base, with_trailer);
        // Declare the 8 trailing bytes a certificate table: now they are left out.
        let img = PeImage::parse(&d).unwrap();
        let cd = img.cert_dir_offset.unwrap();
        d[cd..cd + 4].copy_from_slice(&0x400u32.to_le_bytes());
        d[cd + 4..cd + 8].copy_from_slice(&8u32.to_le_bytes());
        assert_eq!(authenticode(&d, HashAlg::Sha256).unwrap(), base);
        // A certificate table larger than the rest of the file is an error.
        d[cd + 4..cd + 8].copy_from_slice(&9u32.to_le_bytes());
        assert!(matches!(
            authenticode(&d, HashAlg::Sha256),
            Err(PeError::BadCertificateTable { .. })
        ));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let d = tiny();
        for n in 0..0x210 {
            assert!(
                PeImage::parse(&d[..n]).is_err(),
                "prefix of {n} bytes parsed"
            );
        }
    }

    #[test]
    fn corrupted_fields_never_panic() {
        let d = tiny();
        for i in 0..0x200 {
            for v in [0u8, 0xff, 0x7f, 0x80, 1] {
                let mut x = d.clone();
                x[i] = v;
                if let Ok(img) = PeImage::parse(&x) {
                    for a in HashAlg::ALL {
                        let _ = authenticode_parsed(&x, &img, a);
                    }
                    for s in &img.sections {
                        let _ = s.memory_contents(&x);
                    }
                }
            }
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let mut d = tiny();
        d[0] = b'X';
        assert_eq!(PeImage::parse(&d), Err(PeError::NoMz));
        let mut d = tiny();
        d[0x44 + 20] = 0x0c;
        assert_eq!(
            PeImage::parse(&d).unwrap_err().to_string(),
            "unknown optional header magic 0x020c (PE32 is 0x10b, PE32+ 0x20b)"
        );
    }

    #[test]
    fn checksum_counts_words_and_length() {
        // Two words 0xffff and 0x0001 fold to 0x0001; plus the length 4 = 5.
        assert_eq!(pe_checksum(&[0xff, 0xff, 0x01, 0x00], 100), 5);
        // The checksum field is skipped.
        assert_eq!(pe_checksum(&[0xff, 0xff, 0x01, 0x00], 0), 4);
        // An odd last byte is padded with zero.
        assert_eq!(pe_checksum(&[0x01, 0x02, 0x03], 100), 0x0201 + 3 + 3);
    }
}
