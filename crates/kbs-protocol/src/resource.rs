//! KBS resource URIs, `kbs:///<repo>/<type>/<tag>`: what launch.toml names and what the agent
//! asks for with `GET /kbs/v0/resource/<repo>/<type>/<tag>`.

use std::fmt;

/// The longest `<repo>`, `<type>` or `<tag>`.
pub const MAX_PART_LEN: usize = 128;

/// A KBS resource `kbs:///<repo>/<type>/<tag>` (no authority: always the configured KBS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceUri {
    pub repo: String,
    pub kind: String,
    pub tag: String,
}

impl ResourceUri {
    pub fn parse(uri: &str) -> Result<ResourceUri, String> {
        let path = uri
            .strip_prefix("kbs:///")
            .ok_or_else(|| format!("{uri:?} is not kbs:///<repo>/<type>/<tag>"))?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            [repo, kind, tag]
                if [repo, kind, tag]
                    .iter()
                    .all(|p| valid_name(p, MAX_PART_LEN)) =>
            {
                Ok(ResourceUri {
                    repo: repo.to_string(),
                    kind: kind.to_string(),
                    tag: tag.to_string(),
                })
            }
            _ => Err(format!(
                "{uri:?} is not kbs:///<repo>/<type>/<tag> (each 1-128 of A-Z a-z 0-9 . _ -)"
            )),
        }
    }

    /// `<repo>/<type>/<tag>`, as in `GET /kbs/v0/resource/<repo>/<type>/<tag>`.
    pub fn path(&self) -> String {
        format!("{}/{}/{}", self.repo, self.kind, self.tag)
    }
}

impl fmt::Display for ResourceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kbs:///{}", self.path())
    }
}

/// A portable file-name-like token: 1..=max of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
