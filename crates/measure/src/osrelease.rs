//! os-release(5): what image the verified root says it is. The values are measured, so the
//! parse is strict about what it accepts and lenient only where the format says so (unknown
//! keys and malformed lines are ignored).

use std::path::Path;

/// The fields of os-release(5) the agent reports and measures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub image_id: Option<String>,
    pub image_version: Option<String>,
    pub pretty_name: Option<String>,
}

impl OsRelease {
    /// The measured `image-version` fact: `"<IMAGE_ID> <IMAGE_VERSION>"`, or `"<IMAGE_ID>"`
    /// without a version; None without an IMAGE_ID. Both are tokens (os-release(5) keeps them
    /// to `[A-Za-z0-9._~-]`-like characters), so the space is unambiguous; a value outside
    /// `[A-Za-z0-9._~+-]` gives None rather than a guess.
    pub fn image_version_fact(&self) -> Option<String> {
        let token = |v: &String| {
            !v.is_empty()
                && v.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'+' | b'-')
                })
        };
        let id = self.image_id.clone().filter(token)?;
        match &self.image_version {
            None => Some(id),
            Some(v) if token(v) => Some(format!("{id} {v}")),
            Some(_) => None,
        }
    }
}

/// Parse os-release text: `KEY=value`, values optionally in single or double quotes with
/// backslash escapes. Unknown keys and malformed lines are ignored, as os-release(5) asks.
pub fn parse(text: &str) -> OsRelease {
    let mut out = OsRelease::default();
    for line in text.lines().take(1024) {
        let line = line.trim();
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let value = unquote(raw.trim());
        if value.len() > 256 || value.chars().any(char::is_control) {
            continue;
        }
        match key {
            "IMAGE_ID" => out.image_id = Some(value),
            "IMAGE_VERSION" => out.image_version = Some(value),
            "PRETTY_NAME" => out.pretty_name = Some(value),
            _ => {}
        }
    }
    out
}

fn unquote(raw: &str) -> String {
    let inner = match raw.as_bytes().first() {
        Some(q @ (b'"' | b'\'')) if raw.len() >= 2 && raw.as_bytes()[raw.len() - 1] == *q => {
            &raw[1..raw.len() - 1]
        }
        _ => raw,
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Read /etc/os-release (or /usr/lib/os-release) of the running root, bounded.
pub fn read(root: &Path) -> OsRelease {
    for p in ["etc/os-release", "usr/lib/os-release"] {
        if let Ok(data) = std::fs::read(root.join(p))
            && data.len() <= 64 * 1024
        {
            return parse(&String::from_utf8_lossy(&data));
        }
    }
    OsRelease::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_fields() {
        let r = parse(
            "NAME=x\nIMAGE_ID=\"cvm-demo\"\nIMAGE_VERSION='1.2'\nPRETTY_NAME=\"A \\\"b\\\"\"\nbogus\n",
        );
        assert_eq!(r.image_id.as_deref(), Some("cvm-demo"));
        assert_eq!(r.image_version.as_deref(), Some("1.2"));
        assert_eq!(r.pretty_name.as_deref(), Some("A \"b\""));
        let r = parse("IMAGE_ID=a\u{7}b\n");
        assert_eq!(r.image_id, None);
    }

    #[test]
    fn image_version_fact() {
        let f = |t: &str| parse(t).image_version_fact();
        assert_eq!(
            f("IMAGE_ID=cvm-demo\nIMAGE_VERSION=1.2.3\n").as_deref(),
            Some("cvm-demo 1.2.3")
        );
        assert_eq!(f("IMAGE_ID=\"x\"\n").as_deref(), Some("x"));
        assert_eq!(f("IMAGE_ID=a\nIMAGE_ID=b\n").as_deref(), Some("b"));
        assert_eq!(f("IMAGE_VERSION=1\n"), None);
        assert_eq!(f("IMAGE_ID=a b\n"), None);
        assert_eq!(f("IMAGE_ID=a\nIMAGE_VERSION=\"1 2\"\n"), None);
        assert_eq!(f("IMAGE_ID=\n"), None);
    }
}
