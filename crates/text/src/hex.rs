//! Hex, the one implementation: lower-case encoding, strict decoding (even length, `0-9a-fA-F`
//! only). Used for every digest in measurement logs and predictions (`cvm-measure`) and for the
//! hex fields of KBS evidence JSON (`cvm-tee`).

/// Lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Either case; `None` for odd length or any character that is not a hex digit (no
/// whitespace, no sign, no `0x`).
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(encode(&[0x00, 0xab, 0x0f]), "00ab0f");
        assert_eq!(encode(&[]), "");
        assert_eq!(decode("00AB0f"), Some(vec![0x00, 0xab, 0x0f]));
        assert_eq!(decode(""), Some(vec![]));
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)), Some(all));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["0", "zz", "0g", "é0", " 00", "+0", "0x00"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
