//! Image references: where the workload image comes from.
//!
//! - Registry references with the Docker grammar (distribution/reference):
//!   `[host[:port]/]path[:tag][@sha256:<64 hex>]`. A first component is a host when it holds
//!   a `.` or a `:` or is `localhost`; otherwise the image is on Docker Hub (`docker.io`, API
//!   host `registry-1.docker.io`), where a one-component path gets `library/`. With neither
//!   tag nor digest the tag is `latest`. An optional `docker://` prefix (skopeo's transport
//!   name) is accepted. Only sha256 digests.
//! - OCI image-layout references with skopeo's syntax: `oci:<absolute dir>[:<ref name>]`
//!   (the ref name is the `org.opencontainers.image.ref.name` annotation in `index.json`) or
//!   `oci:<absolute dir>@sha256:<64 hex>`. As in skopeo the directory ends at its first `:`.
//!
//! Parsing is strict and bounded; the text is printed with `{:?}` in errors.
//!
//! Why ours rather than oci-spec's `distribution::Reference` (the test oracle: the tests compare
//! both on a corpus and on random references): it takes sha384/sha512 and upper-case digests
//! (the agent verifies sha256 only), non-ASCII tags (Unicode `\w`), ports above 65535 and hosts
//! such as `ho_st.com`, and it would keep the `regex` crate in the guest; the deliberate
//! differences are listed in the tests' `Deliberate`.

use std::fmt;
use std::path::PathBuf;

use super::digest::Sha256Digest;

/// Docker's bound on a repository name (host included).
pub const MAX_NAME: usize = 255;
/// Docker's bound on a tag.
pub const MAX_TAG: usize = 128;
/// Bound on a whole reference and on a layout directory path.
pub const MAX_REFERENCE: usize = 4096;

/// The Docker Hub name as written in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host the Docker Hub registry API is served from.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Debug, thiserror::Error)]
#[error("image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: String,
}

/// An image reference of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Registry(RegistryRef),
    Layout(LayoutRef),
}

/// `registry/repository[:tag][@digest]`, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// `host[:port]` as written, `docker.io` for Docker Hub (also for `index.docker.io`).
    pub registry: String,
    /// The repository path, e.g. `library/busybox`.
    pub repository: String,
    /// The tag; `None` only when a digest is given without a tag.
    pub tag: Option<String>,
    pub digest: Option<Sha256Digest>,
}

/// Which manifest of an OCI layout's `index.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutSelector {
    /// The only manifest listed.
    Only,
    /// The one whose `org.opencontainers.image.ref.name` annotation is this.
    Name(String),
    /// The one with this digest.
    Digest(Sha256Digest),
}

/// `oci:<dir>[:<ref name>]` or `oci:<dir>@sha256:…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutRef {
    pub dir: PathBuf,
    pub selector: LayoutSelector,
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef, ReferenceError> {
        let err = |reason: &str| ReferenceError {
            reference: text.chars().take(300).collect(),
            reason: reason.to_string(),
        };
        if text.len() > MAX_REFERENCE {
            return Err(err("too long"));
        }
        if let Some(rest) = text.strip_prefix("oci:") {
            return LayoutRef::parse_rest(rest)
                .map(ImageRef::Layout)
                .map_err(err);
        }
        let rest = text.strip_prefix("docker://").unwrap_or(text);
        RegistryRef::parse(rest)
            .map(ImageRef::Registry)
            .map_err(err)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Registry(r) => r.fmt(f),
            ImageRef::Layout(l) => l.fmt(f),
        }
    }
}

impl RegistryRef {
    /// Parse a registry reference (no `docker://` prefix).
    pub fn parse(text: &str) -> Result<RegistryRef, &'static str> {
        if text.is_empty() {
            return Err("empty");
        }
        if text.len() > MAX_REFERENCE {
            return Err("too long");
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(Sha256Digest::parse(d).map_err(|_| "the digest is not sha256:<64 hex>")?),
            ),
            None => (text, None),
        };
        // A tag is after the last ':' that follows the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(&rest[at + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag {
            valid_tag(tag)?;
        }
        if name.len() > MAX_NAME {
            return Err("the name is over 255 characters");
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                valid_host(first)?;
                (first, path)
            }
            _ => (DOCKER_HUB, name),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB
        } else {
            registry
        };
        valid_path(path)?;
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        let tag = match (tag, digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(RegistryRef {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }

    /// The `host[:port]` the registry API is served from.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What `/v2/<name>/manifests/<reference>` takes: the digest if there is one, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl LayoutRef {
    fn parse_rest(rest: &str) -> Result<LayoutRef, &'static str> {
        let (dir, selector) = if let Some((dir, digest)) = rest.split_once('@') {
            let d = Sha256Digest::parse(digest).map_err(|_| "the digest is not sha256:<64 hex>")?;
            (dir, LayoutSelector::Digest(d))
        } else {
            match rest.split_once(':') {
                Some((dir, name)) => {
                    valid_ref_name(name)?;
                    (dir, LayoutSelector::Name(name.to_string()))
                }
                None => (rest, LayoutSelector::Only),
            }
        };
        if !dir.starts_with('/') {
            return Err("the layout directory is not an absolute path");
        }
        if dir.contains('\0') {
            return Err("the layout directory holds a NUL");
        }
        if dir.contains(':') {
            return Err("the layout directory holds a ':'");
        }
        Ok(LayoutRef {
            dir: PathBuf::from(dir),
            selector,
        })
    }
}

impl fmt::Display for LayoutRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci:{}", self.dir.display())?;
        match &self.selector {
            LayoutSelector::Only => Ok(()),
            LayoutSelector::Name(n) => write!(f, ":{n}"),
            LayoutSelector::Digest(d) => write!(f, "@{d}"),
        }
    }
}

/// `[\w][\w.-]{0,127}`.
fn valid_tag(tag: &str) -> Result<(), &'static str> {
    let b = tag.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    match b.first() {
        None => Err("empty tag"),
        Some(&c) if !word(c) => Err("a tag must start with a letter, digit or '_'"),
        _ if b.len() > MAX_TAG => Err("the tag is over 128 characters"),
        _ if !b.iter().all(|&c| word(c) || c == b'.' || c == b'-') => {
            Err("a tag holds only letters, digits, '_', '.' and '-'")
        }
        _ => Ok(()),
    }
}

/// Host labels `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?` joined by `.`, optional `:port`.
fn valid_host(host: &str) -> Result<(), &'static str> {
    let (name, port) = match host.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()))
    {
        return Err("the registry port is not a number");
    }
    if let Some(p) = port
        && p.parse::<u32>().map_or(true, |p| p == 0 || p > 65535)
    {
        return Err("the registry port is out of range");
    }
    let ok_label = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
            && b.first() != Some(&b'-')
            && b.last() != Some(&b'-')
    };
    if name.is_empty() || !name.split('.').all(ok_label) {
        return Err("invalid registry host");
    }
    Ok(())
}

/// Components `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` joined by `/`.
fn valid_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty repository path");
    }
    for component in path.split('/') {
        let b = component.as_bytes();
        if b.is_empty() {
            return Err("empty path component");
        }
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let mut i = 0;
        let mut need_alnum = true;
        while i < b.len() {
            let c = b[i];
            if alnum(c) {
                need_alnum = false;
                i += 1;
                continue;
            }
            if need_alnum {
                return Err(
                    "a path component holds lower-case letters and digits joined by '.', '_', '__' or '-'",
                );
            }
            // A separator run: '.', '_', '__' or one or more '-'.
            let run = b[i..].iter().take_while(|&&x| x == c).count();
            let ok = match c {
                b'.' => run == 1,
                b'_' => run <= 2,
                b'-' => true,
                _ => false,
            };
            if !ok {
                return Err(
                    "a path component holds lower-case letters and digits joined by '.', '_', '__' or '-'",
                );
            }
            i += run;
            need_alnum = true;
        }
        if need_alnum {
            return Err("a path component ends with a separator");
        }
    }
    Ok(())
}

/// image-spec annotations: `component ("/" component)*`, `component ::= alphanum (separator
/// alphanum)*`, `alphanum ::= [A-Za-z0-9]+`, `separator ::= [-._:@+] | "--"`.
pub(crate) fn valid_ref_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty ref name");
    }
    if name.len() > MAX_REFERENCE {
        return Err("the ref name is too long");
    }
    for component in name.split('/') {
        let b = component.as_bytes();
        let mut prev_alnum = false;
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c.is_ascii_alphanumeric() {
                prev_alnum = true;
                i += 1;
            } else if prev_alnum && b"-._:@+".contains(&c) {
                // "--" is one separator.
                i += if c == b'-' && b.get(i + 1) == Some(&b'-') {
                    2
                } else {
                    1
                };
                prev_alnum = false;
            } else {
                return Err(
                    "invalid ref name: components are alphanumerics joined by one of -._:@+ or --",
                );
            }
        }
        if !prev_alnum {
            return Err("invalid ref name: a component is empty or ends with a separator");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn reg(s: &str) -> RegistryRef {
        match ImageRef::parse(s).unwrap() {
            ImageRef::Registry(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn docker_hub_normalisation() {
        let r = reg("busybox");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(
            reg("docker.io/busybox:1.36").to_string(),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(
            reg("index.docker.io/foo/bar").to_string(),
            "docker.io/foo/bar:latest"
        );
        assert_eq!(
            reg("docker://foo/bar").to_string(),
            "docker.io/foo/bar:latest"
        );
        assert_eq!(reg("foo/bar/baz").repository, "foo/bar/baz");
    }

    #[test]
    fn hosts_ports_tags_digests() {
        let r = reg("127.0.0.1:5000/test/img:t");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "test/img", Some("t"))
        );
        assert_eq!(r.api_host(), "127.0.0.1:5000");
        let r = reg(&format!("localhost/img@{D}"));
        assert_eq!(r.registry, "localhost");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.unwrap().to_string(), D);
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.to_string(), format!("localhost/img@{D}"));
        let r = reg(&format!("quay.io/a/b:v1.2@{D}"));
        assert_eq!(r.tag.as_deref(), Some("v1.2"));
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.to_string(), format!("quay.io/a/b:v1.2@{D}"));
        let r = reg("registry.example:443/a__b/c-d--e/f.g");
        assert_eq!(r.repository, "a__b/c-d--e/f.g");
        assert_eq!(r.manifest_reference(), "latest");
    }

    #[test]
    fn refuses_malformed_registry_refs() {
        let long = "a".repeat(300);
        let long_tag = format!("img:{}", "t".repeat(129));
        for bad in [
            "",
            "UPPER",
            "img:",
            "img:-tag",
            "img:ta/g",
            "img@sha512:00",
            "img@sha256:abc",
            &format!("img@{}", D.to_uppercase()),
            "a//b",
            "/a",
            "a/",
            "a..b",
            "a___b",
            "a_",
            "host.com:x/img",
            "host.com:99999/img",
            "host.com:0/img",
            "-bad.com/img",
            "bad-.com/img",
            "ho_st.com/img",
            "img:t@",
            "img@",
            "@",
            ":",
            &long,
            &long_tag,
            "a\0b",
            "a b",
            "ümlaut",
            "img:t:u",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let e = ImageRef::parse("Bad/Ref").unwrap_err().to_string();
        assert!(e.contains("\"Bad/Ref\""), "{e}");
    }

    #[test]
    fn layout_refs() {
        let l = |s: &str| match ImageRef::parse(s).unwrap() {
            ImageRef::Layout(l) => l,
            other => panic!("{other:?}"),
        };
        let r = l("oci:/var/img");
        assert_eq!(r.dir, PathBuf::from("/var/img"));
        assert_eq!(r.selector, LayoutSelector::Only);
        assert_eq!(r.to_string(), "oci:/var/img");
        let r = l("oci:/var/img:v1.0-rc");
        assert_eq!(r.selector, LayoutSelector::Name("v1.0-rc".into()));
        assert_eq!(r.to_string(), "oci:/var/img:v1.0-rc");
        let r = l("oci:/var/img:a:b");
        assert_eq!(r.selector, LayoutSelector::Name("a:b".into()));
        let r = l(&format!("oci:/var/img@{D}"));
        assert_eq!(
            r.selector,
            LayoutSelector::Digest(Sha256Digest::parse(D).unwrap())
        );
        assert_eq!(r.to_string(), format!("oci:/var/img@{D}"));
        for bad in [
            "oci:",
            "oci:relative/dir",
            "oci:/d:",
            "oci:/d:-x",
            "oci:/d:x-",
            "oci:/d:a//b",
            "oci:/d:a b",
            "oci:/d@sha256:12",
            "oci:/d@",
            "oci:/d\0x",
            &format!("oci:/d:x@{D}"),
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn ref_names() {
        for ok in ["a", "v1.0", "a--b", "a/b:c@d+e", "A.B_c"] {
            assert!(valid_ref_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "a---b", "a/", "/a", "a b", "a\nb"] {
            assert!(valid_ref_name(bad).is_err(), "{bad:?}");
        }
    }

    /// oci-spec's `distribution::Reference` (a port of Docker's distribution/reference) as an
    /// oracle: on a corpus and on random references both parsers agree on the registry, the
    /// repository, the tag and the digest, or disagree for one of the reasons in [`Deliberate`].
    mod distribution_oracle {
        use super::*;
        use oci_spec::distribution::{ParseError, Reference};
        use proptest::prelude::*;

        /// Where we refuse what oci-spec accepts, on purpose.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Deliberate {
            /// Only `sha256:` with 64 lower-case hex digits (image-spec's form for sha256);
            /// oci-spec also takes sha384/sha512 and upper-case hex.
            Sha256Only,
            /// Tags, like everything in a reference, are ASCII: Docker's `\w` is Go's (ASCII);
            /// oci-spec's regex crate `\w` is Unicode, so it takes `img:ümlaut`.
            AsciiOnly,
            /// A port is 1..=65535; oci-spec takes any digit string.
            PortRange,
            /// A host label has at most 63 characters (RFC 1035).
            HostLabel,
            /// `ho_st.com/img`: not a host name (RFC 1123 has no `_`), so oci-spec's regex reads
            /// it as a path component, and its split then takes it as the registry host anyway.
            /// We refuse it.
            HostSyntax,
            /// The 255-character bound: we apply it to the name as written (host included);
            /// oci-spec to the repository without the host but after `library/` is added (Docker
            /// itself to the normalized `host/repository`). Differs both ways near the bound.
            NameLength,
            /// `Bad/ref`: oci-spec takes `Bad` as a Docker Hub namespace and yields an upper-case
            /// repository no registry serves (its own FIXME); Docker takes it as a host. We
            /// refuse it.
            UpperFirstComponent,
        }

        /// Why `s` (accepted by oci-spec, refused by us) is refused on purpose, if it is.
        fn deliberate(s: &str) -> Option<Deliberate> {
            let (rest, digest) = match s.split_once('@') {
                Some((r, d)) => (r, Some(d)),
                None => (s, None),
            };
            if let Some(d) = digest
                && Sha256Digest::parse(d).is_err()
            {
                return Some(Deliberate::Sha256Only);
            }
            if !s.is_ascii() {
                return Some(Deliberate::AsciiOnly);
            }
            let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
            let name = match rest[last_slash..].rfind(':') {
                Some(i) => &rest[..last_slash + i],
                None => rest,
            };
            if name.len() > MAX_NAME {
                return Some(Deliberate::NameLength);
            }
            let first = name.split('/').next().unwrap_or("");
            if name.contains('/') && (first.contains('.') || first.contains(':')) {
                let (host, port) = first.split_once(':').unwrap_or((first, ""));
                if !port.is_empty() && port.parse::<u32>().map_or(true, |p| p == 0 || p > 65535) {
                    return Some(Deliberate::PortRange);
                }
                if host.split('.').any(|l| l.len() > 63) {
                    return Some(Deliberate::HostLabel);
                }
                if host.contains('_') {
                    return Some(Deliberate::HostSyntax);
                }
            }
            if name.contains('/') && first.bytes().any(|c| c.is_ascii_uppercase()) {
                return Some(Deliberate::UpperFirstComponent);
            }
            None
        }

        /// Compare the two parsers on `s`; the disagreement, if any, and why.
        fn compare(s: &str) -> Result<Option<Deliberate>, String> {
            let ours = RegistryRef::parse(s);
            let theirs = Reference::try_from(s);
            match (ours, theirs) {
                (Ok(o), Ok(t)) => {
                    let o_digest = o.digest.as_ref().map(|d| d.to_string());
                    if (o.registry.as_str(), o.repository.as_str(), o.tag.as_deref())
                        != (t.registry(), t.repository(), t.tag())
                        || o_digest.as_deref() != t.digest()
                    {
                        return Err(format!("{s:?}: ours {o:?}, theirs {t:?}"));
                    }
                    Ok(None)
                }
                (Err(_), Err(_)) => Ok(None),
                (Err(why), Ok(t)) => match deliberate(s) {
                    Some(d) => Ok(Some(d)),
                    None => Err(format!("{s:?}: we refuse ({why}), oci-spec takes {t:?}")),
                },
                (Ok(_), Err(ParseError::NameTooLong)) => Ok(Some(Deliberate::NameLength)),
                (Ok(o), Err(e)) => Err(format!("{s:?}: we take {o:?}, oci-spec refuses ({e})")),
            }
        }

        #[test]
        fn corpus() {
            const H: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
            // 259 characters as written, a 250-character repository: we refuse, oci-spec takes.
            let long_name = format!("host.com/{}", "a".repeat(250));
            // 250 as written, "library/" + 250 after normalization: we take, oci-spec refuses.
            let long_hub = "a".repeat(250);
            let long_label = format!("{}.com/img", "h".repeat(64));
            let upper_digest = format!("img@sha256:{}", H.to_uppercase());
            let sha512 = format!("img@sha512:{H}{H}");
            let sha384 = format!("img@sha384:{H}{}", &H[..32]);
            let cases: Vec<(String, Option<Deliberate>)> = [
                // Agreed, accepted.
                ("busybox", None),
                ("busybox:1.36", None),
                ("library/busybox", None),
                ("docker.io/busybox", None),
                ("index.docker.io/foo/bar", None),
                ("foo/bar/baz", None),
                ("localhost/img", None),
                ("localhost:5000/img:t", None),
                ("127.0.0.1:5000/test/img:t", None),
                ("quay.io/coreos/etcd:v3.5.0", None),
                ("ghcr.io/a-b/c_d/e__f/g.h/i--j:tag_1.2-3", None),
                ("test.com:tag", None),
                ("test.com:5000", None),
                ("foo_bar.com:8080", None),
                ("xn--n3h.com/myimage:xn--n3h.com", None),
                ("b.gcr.io/test.example.com/my-app:test.example.com", None),
                ("lowercase:Uppercase", None),
                ("img:_", None),
                // Agreed, refused.
                ("", None),
                ("UPPER", None),
                (":justtag", None),
                ("img:", None),
                ("img:-tag", None),
                ("img:ta/g", None),
                ("a//b", None),
                ("/a", None),
                ("a/", None),
                ("a..b", None),
                ("a___b", None),
                ("a_", None),
                ("host.com:x/img", None),
                ("-bad.com/img", None),
                ("bad-.com/img", None),
                ("img:t@", None),
                ("img@", None),
                ("@", None),
                ("img@sha256:abc", None),
                ("img:t:u", None),
                ("a b", None),
                ("aa/asdf$$^/aa", None),
                ("test:5000/Uppercase/lowercase:tag", None),
                ("[::1]:5000/img", None),
                // Refused on purpose.
                (sha512.as_str(), Some(Deliberate::Sha256Only)),
                (sha384.as_str(), Some(Deliberate::Sha256Only)),
                (upper_digest.as_str(), Some(Deliberate::Sha256Only)),
                ("img:ümlaut", Some(Deliberate::AsciiOnly)),
                ("host.com:99999/img", Some(Deliberate::PortRange)),
                ("host.com:0/img", Some(Deliberate::PortRange)),
                (long_label.as_str(), Some(Deliberate::HostLabel)),
                ("ho_st.com/img", Some(Deliberate::HostSyntax)),
                (long_name.as_str(), Some(Deliberate::NameLength)),
                (long_hub.as_str(), Some(Deliberate::NameLength)),
                (
                    "Uppercase/lowercase:tag",
                    Some(Deliberate::UpperFirstComponent),
                ),
            ]
            .into_iter()
            .map(|(s, d)| (s.to_string(), d))
            .collect();
            let with_digest = [
                format!("img@sha256:{H}"),
                format!("host.com:5000/a/b:t@sha256:{H}"),
                format!("docker.io/img:t@sha256:{H}"),
            ];
            let cases = cases.into_iter().chain(with_digest.map(|s| (s, None)));
            for (s, want) in cases {
                assert_eq!(compare(&s), Ok(want), "{s:?}");
            }
        }

        /// References assembled from pieces that sit at the grammar's edges.
        fn reference() -> impl Strategy<Value = String> {
            let host = prop::sample::select(vec![
                "",
                "docker.io/",
                "index.docker.io/",
                "localhost/",
                "localhost:5000/",
                "a.b/",
                "A.b/",
                "a-b.c:1/",
                "h:65535/",
                "h.com:65536/",
                "_h.com/",
                "h.-c/",
                "Upper/",
            ]);
            let comp = "[a-zA-Z0-9._ü-]{1,6}";
            let path = proptest::collection::vec(comp, 1..4).prop_map(|c| c.join("/"));
            let tag = prop::sample::select(vec!["", ":t", ":T.1-x_", ":-t", ":", ":ü", ":a.b"]);
            let digest = prop::sample::select(vec![
                String::new(),
                "@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
                "@sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855".into(),
                format!("@sha512:{}", "f".repeat(128)),
                "@sha256:ff".into(),
                "@md5:ffffffffffffffffffffffffffffffff".into(),
            ]);
            (host, path, tag, digest).prop_map(|(h, p, t, d)| format!("{h}{p}{t}{d}"))
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

            #[test]
            fn random_references_agree_or_differ_on_purpose(s in reference()) {
                if let Err(e) = compare(&s) {
                    return Err(TestCaseError::fail(e));
                }
            }

            #[test]
            fn random_text_agrees_or_differs_on_purpose(s in "[a-zA-Z0-9:/@._-]{0,40}") {
                if let Err(e) = compare(&s) {
                    return Err(TestCaseError::fail(e));
                }
            }
        }
    }

    #[test]
    fn never_panics_on_arbitrary_text() {
        use proptest::prelude::*;
        proptest!(|(s in ".{0,300}")| {
            let _ = ImageRef::parse(&s);
        });
        proptest!(|(s in "[a-z0-9:/@._-]{0,120}")| {
            if let Ok(r) = ImageRef::parse(&s) {
                // Display is canonical: it parses back to the same reference.
                prop_assert_eq!(ImageRef::parse(&r.to_string()).unwrap(), r);
            }
        });
    }
}
