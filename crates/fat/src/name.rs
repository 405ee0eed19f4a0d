//! 8.3 short names, volume labels and paths.
//!
//! Only names that are valid *as they are* in a FAT short directory entry are accepted: upper-case
//! letters, digits and the punctuation fatgen103 allows in short names, a base of 1–8 characters
//! and an optional extension of 1–3. Nothing is upper-cased, truncated or given a `~1` tail: a
//! name the caller gave is the name on disk, or an error.

use crate::Error;

/// Longest path accepted, in bytes (Windows' `MAX_PATH` is 260 with the drive and the NUL).
/// It also bounds the depth of the tree to 128 levels.
pub const MAX_PATH_LEN: usize = 255;

/// Device names Windows reserves in every directory; a file of that name cannot be opened there.
const RESERVED: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Characters allowed in a short name besides `A`–`Z` and `0`–`9` (fatgen103, "FAT 32 Byte
/// Directory Entry Structure": the special characters allowed in DIR_Name).
const SPECIAL: &[u8] = b"!#$%&'()-@^_`{}~";

fn short_char_ok(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || SPECIAL.contains(&c)
}

/// One path component in its 11-byte on-disk form (base padded to 8, extension to 3, with
/// spaces). The derived order is the order of entries in a directory.
pub(crate) type ShortName = [u8; 11];

/// Parses one component (`BOOTX64.EFI`) into its on-disk form, or says why it is refused.
pub(crate) fn short_name(component: &str) -> Result<ShortName, &'static str> {
    if component.is_empty() {
        return Err("empty path component");
    }
    if component == "." || component == ".." {
        return Err("`.` and `..` are not allowed");
    }
    let (base, ext) = match component.split_once('.') {
        Some((b, e)) => {
            if e.is_empty() {
                return Err("a name may not end with `.`");
            }
            if e.contains('.') {
                return Err("an 8.3 name has at most one `.`");
            }
            (b, e)
        }
        None => (component, ""),
    };
    if base.is_empty() {
        return Err("an 8.3 name needs 1 to 8 characters before the `.`");
    }
    if base.len() > 8 {
        return Err("more than 8 characters before the `.` (long file names are not supported)");
    }
    if ext.len() > 3 {
        return Err("more than 3 characters after the `.` (long file names are not supported)");
    }
    for &c in base.as_bytes().iter().chain(ext.as_bytes()) {
        if c.is_ascii_lowercase() {
            return Err("lower-case letters need long file name entries; use upper case");
        }
        if !short_char_ok(c) {
            return Err("only A-Z, 0-9 and !#$%&'()-@^_`{}~ are allowed in an 8.3 name");
        }
    }
    if RESERVED.contains(&base) {
        return Err("reserved device name (CON, PRN, AUX, NUL, COM1-9, LPT1-9)");
    }
    let mut out = [b' '; 11];
    out[..base.len()].copy_from_slice(base.as_bytes());
    out[8..8 + ext.len()].copy_from_slice(ext.as_bytes());
    Ok(out)
}

/// Splits a path (`/EFI/BOOT/BOOTX64.EFI` or `EFI/BOOT/BOOTX64.EFI`) into short names.
pub(crate) fn parse_path(path: &str) -> Result<Vec<ShortName>, Error> {
    let bad = |reason: &'static str| Error::InvalidPath {
        path: path.chars().take(MAX_PATH_LEN + 1).collect(),
        reason,
    };
    if path.len() > MAX_PATH_LEN {
        return Err(bad("longer than 255 bytes"));
    }
    let rel = path.strip_prefix('/').unwrap_or(path);
    if rel.is_empty() {
        return Err(bad("the root directory always exists and cannot be added"));
    }
    rel.split('/').map(|c| short_name(c).map_err(bad)).collect()
}

/// The text form of an on-disk name: `BOOTX64.EFI`.
pub(crate) fn display(name: &ShortName) -> String {
    let base = String::from_utf8_lossy(&name[..8]);
    let ext = String::from_utf8_lossy(&name[8..]);
    let (base, ext) = (base.trim_end(), ext.trim_end());
    if ext.is_empty() {
        base.to_string()
    } else {
        format!("{base}.{ext}")
    }
}

/// Parses a volume label: 1–11 characters of the short-name set or spaces, no leading or
/// trailing space (the field is space-padded, so a trailing space would not round-trip).
pub(crate) fn label(text: &str) -> Result<[u8; 11], Error> {
    let bad = |reason: &'static str| Error::InvalidLabel {
        label: text.chars().take(12).collect(),
        reason,
    };
    if text.is_empty() {
        return Err(bad("empty"));
    }
    if text.len() > 11 {
        return Err(bad("longer than 11 characters"));
    }
    if text.starts_with(' ') || text.ends_with(' ') {
        return Err(bad("leading or trailing space"));
    }
    if text == "NO NAME" {
        return Err(bad("`NO NAME` means \"no label\" to FAT drivers"));
    }
    for &c in text.as_bytes() {
        if c.is_ascii_lowercase() {
            return Err(bad("lower-case letters are not allowed in a label"));
        }
        if !(c == b' ' || short_char_ok(c)) {
            return Err(bad(
                "only A-Z, 0-9, space and !#$%&'()-@^_`{}~ are allowed in a label",
            ));
        }
    }
    let mut out = [b' '; 11];
    out[..text.len()].copy_from_slice(text.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_83_names() {
        assert_eq!(&short_name("BOOTX64.EFI").unwrap(), b"BOOTX64 EFI");
        assert_eq!(&short_name("EFI").unwrap(), b"EFI        ");
        assert_eq!(&short_name("A.B").unwrap(), b"A       B  ");
        assert_eq!(&short_name("12345678.123").unwrap(), b"12345678123");
        assert_eq!(&short_name("$~_-{}.@!#").unwrap(), b"$~_-{}  @!#");
        assert_eq!(display(&short_name("BOOTX64.EFI").unwrap()), "BOOTX64.EFI");
        assert_eq!(display(&short_name("EFI").unwrap()), "EFI");
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            ".",
            "..",
            ".EFI",
            "BOOT.",
            "A.B.C",
            "bootx64.efi",
            "Boot",
            "LONGNAME1.EFI",
            "BOOT.EFIX",
            "A B",
            "A+B",
            "A,B",
            "A;B",
            "A=B",
            "A[B",
            "Ä",
            "A\u{0}",
            "A\\B",
            "CON",
            "NUL.TXT",
            "COM1",
            "A*",
            "A?",
        ] {
            assert!(short_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(parse_path("/EFI/BOOT/BOOTX64.EFI").unwrap().len(), 3);
        assert_eq!(parse_path("EFI/BOOT").unwrap().len(), 2);
        for bad in [
            "",
            "/",
            "//EFI",
            "EFI//BOOT",
            "EFI/",
            "EFI/./BOOT",
            "EFI/../X",
        ] {
            assert!(parse_path(bad).is_err(), "{bad:?} accepted");
        }
        let long = "A/".repeat(128) + "A";
        assert!(matches!(parse_path(&long), Err(Error::InvalidPath { .. })));
        assert_eq!(parse_path(&"A/".repeat(127)[..253]).unwrap().len(), 127);
    }

    #[test]
    fn labels() {
        assert_eq!(&label("ESP").unwrap(), b"ESP        ");
        assert_eq!(&label("EFI SYSTEM").unwrap(), b"EFI SYSTEM ");
        for bad in [
            "",
            " ESP",
            "ESP ",
            "esp",
            "TOOLONGLABEL",
            "NO NAME",
            "A.B",
            "A/B",
        ] {
            assert!(label(bad).is_err(), "{bad:?} accepted");
        }
    }
}
