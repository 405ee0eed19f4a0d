//! The kernel command line, parsed strictly into typed options.
//!
//! The command line is measured (UKI / launch digest), so it is the one place the host's choice
//! of configuration becomes verifiable. That only holds if the agent reads it exactly as the
//! kernel does and refuses anything ambiguous: a key given twice, an unknown `cvm.` key, a value
//! that does not parse. Other keys belong to the kernel or other programs and are left alone.

use crate::stage::Stage;
use std::fmt;

/// Longer than any architecture's COMMAND_LINE_SIZE; a longer line is not from a real kernel.
pub const MAX_CMDLINE_LEN: usize = 16 * 1024;
const MAX_TOKENS: usize = 1024;
const MAX_VALUE_LEN: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error("kernel command line is {0} bytes (limit {MAX_CMDLINE_LEN})")]
    TooLong(usize),
    #[error("kernel command line has more than {MAX_TOKENS} parameters")]
    TooManyParams,
    #[error("kernel command line is not valid UTF-8")]
    NotUtf8,
    #[error("unknown option {0} (not a cvm-agent option)")]
    UnknownKey(String),
    #[error("option {0} given more than once (ambiguous)")]
    Duplicate(String),
    #[error("option {0} needs a value")]
    MissingValue(String),
    #[error("option {key}: value is {len} bytes (limit {MAX_VALUE_LEN})")]
    ValueTooLong { key: String, len: usize },
    #[error("option {key}={value}: {why}")]
    BadValue {
        key: String,
        value: String,
        why: String,
    },
    #[error("option {0} is a debug-mode test hook; production refuses it")]
    DebugOnly(&'static str),
}

pub use cvm_initdata::{InitDataSource, Mode};

/// How a block device is named on the command line (systemd's forms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// Lower-case canonical UUID text.
    PartUuid(String),
    PartLabel(String),
    Path(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    #[default]
    Info,
    Debug,
}

/// The dm-verity root hash: hex on the command line, bytes here.
#[derive(Clone, PartialEq, Eq)]
pub struct RootHash(pub Vec<u8>);

impl RootHash {
    pub fn to_hex(&self) -> String {
        crate::hex::encode(&self.0)
    }
}

impl fmt::Debug for RootHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootHash({})", self.to_hex())
    }
}

/// One `systemd.verity_root_options=` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityOption {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cmdline {
    pub mode: Mode,
    pub roothash: Option<RootHash>,
    pub verity_root_data: Option<DeviceSpec>,
    pub verity_root_hash: Option<DeviceSpec>,
    pub verity_root_options: Vec<VerityOption>,
    pub initdata: InitDataSource,
    pub log_level: LogLevel,
    /// Test hook: panic at the start of this stage. A panic only ever ends in a fail-closed
    /// stop, which the host can cause anyway, so this grants nothing; it is measured with the
    /// rest of the command line.
    pub test_panic: Option<Stage>,
    /// Test hook, debug mode only: quote the PCRs with this value as the runtime-data digest at
    /// the end and print the evidence, so a host test can verify a quote taken in the guest.
    /// In production it would hand the host evidence over report data of its choice — a
    /// KBS nonce and TEE key of the host's, relayed to a real KBS — so [`parse`] refuses it
    /// there; a debug boot is refused by every production policy anyway.
    pub test_quote: Option<Vec<u8>>,
    /// What follows `--`: the kernel hands it to init as arguments.
    pub init_args: Vec<String>,
}

/// Kernel parameters as `(key, value)` pairs, and the arguments after `--` for init.
pub type Split = (Vec<(String, Option<String>)>, Vec<String>);

/// Split a command line into `(key, value)` exactly as the kernel's `next_arg()` does: spaces
/// separate parameters except inside double quotes, the first `=` splits key from value, and a
/// value's (or a whole parameter's) enclosing quotes are dropped. `--` ends kernel parameters.
pub fn split(line: &str) -> Result<Split, CmdlineError> {
    if line.len() > MAX_CMDLINE_LEN {
        return Err(CmdlineError::TooLong(line.len()));
    }
    let bytes = line.as_bytes();
    let mut params = Vec::new();
    let mut pos = 0;
    let mut after_dashes = false;
    let mut init_args = Vec::new();
    loop {
        while pos < bytes.len() && is_space(bytes[pos]) {
            pos += 1;
        }
        if pos >= bytes.len() {
            break;
        }
        if params.len() + init_args.len() >= MAX_TOKENS {
            return Err(CmdlineError::TooManyParams);
        }
        let mut start = pos;
        let mut in_quote = false;
        let mut quoted = false;
        if bytes[start] == b'"' {
            start += 1;
            in_quote = true;
            quoted = true;
        }
        let mut i = start;
        let mut equals = None;
        while i < bytes.len() {
            let c = bytes[i];
            if is_space(c) && !in_quote {
                break;
            }
            if equals.is_none() && c == b'=' {
                equals = Some(i);
            }
            if c == b'"' {
                in_quote = !in_quote;
            }
            i += 1;
        }
        let end = i;
        pos = end;
        // `end` may stop at a quote-closing byte; every index below is within start..end.
        let strip_trailing_quote = |from: usize| -> usize {
            if end > from && bytes[end - 1] == b'"' {
                end - 1
            } else {
                end
            }
        };
        let (key, value) = match equals {
            None => {
                let stop = if quoted {
                    strip_trailing_quote(start)
                } else {
                    end
                };
                (&line[start..stop], None)
            }
            Some(eq) => {
                let mut vstart = eq + 1;
                let mut vend = end;
                if vstart < end && bytes[vstart] == b'"' {
                    vstart += 1;
                    vend = strip_trailing_quote(vstart);
                } else if quoted {
                    vend = strip_trailing_quote(vstart);
                }
                (&line[start..eq], Some(&line[vstart..vend.max(vstart)]))
            }
        };
        if after_dashes {
            init_args.push(match value {
                Some(v) => format!("{key}={v}"),
                None => key.to_string(),
            });
            continue;
        }
        if key == "--" && value.is_none() && !quoted {
            after_dashes = true;
            continue;
        }
        params.push((key.to_string(), value.map(str::to_string)));
    }
    Ok((params, init_args))
}

/// The kernel's isspace(): unlike `u8::is_ascii_whitespace` it includes vertical tab.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Parse `/proc/cmdline` bytes into the typed options.
pub fn parse_bytes(raw: &[u8]) -> Result<Cmdline, CmdlineError> {
    if raw.len() > MAX_CMDLINE_LEN {
        return Err(CmdlineError::TooLong(raw.len()));
    }
    let line = std::str::from_utf8(raw).map_err(|_| CmdlineError::NotUtf8)?;
    parse(line)
}

pub fn parse(line: &str) -> Result<Cmdline, CmdlineError> {
    let (params, init_args) = split(line)?;
    let mut out = Cmdline {
        init_args,
        ..Cmdline::default()
    };
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in &params {
        let ours = matches!(
            key.as_str(),
            "roothash"
                | "systemd.verity_root_data"
                | "systemd.verity_root_hash"
                | "systemd.verity_root_options"
        ) || key.starts_with("cvm.");
        if !ours {
            continue;
        }
        if seen.contains(&key.as_str()) {
            return Err(CmdlineError::Duplicate(key.clone()));
        }
        seen.push(key);
        let value = match value {
            Some(v) if !v.is_empty() => v.as_str(),
            _ => return Err(CmdlineError::MissingValue(key.clone())),
        };
        if value.len() > MAX_VALUE_LEN {
            return Err(CmdlineError::ValueTooLong {
                key: key.clone(),
                len: value.len(),
            });
        }
        let bad = |why: &str| CmdlineError::BadValue {
            key: key.clone(),
            value: value.to_string(),
            why: why.to_string(),
        };
        match key.as_str() {
            "roothash" => out.roothash = Some(parse_roothash(value).map_err(&bad)?),
            "systemd.verity_root_data" => {
                out.verity_root_data = Some(parse_device(value).map_err(&bad)?)
            }
            "systemd.verity_root_hash" => {
                out.verity_root_hash = Some(parse_device(value).map_err(&bad)?)
            }
            "systemd.verity_root_options" => {
                out.verity_root_options = parse_verity_options(value).map_err(|w| bad(&w))?
            }
            "cvm.mode" => {
                out.mode = match value {
                    "production" => Mode::Production,
                    "debug" => Mode::Debug,
                    _ => return Err(bad("expected production or debug")),
                }
            }
            "cvm.initdata" => out.initdata = parse_initdata(value).map_err(&bad)?,
            "cvm.log" => {
                out.log_level = match value {
                    "info" => LogLevel::Info,
                    "debug" => LogLevel::Debug,
                    _ => return Err(bad("expected info or debug")),
                }
            }
            "cvm.test_quote" => {
                out.test_quote = Some(
                    crate::hex::decode(value)
                        .filter(|n| (1..=64).contains(&n.len()))
                        .ok_or_else(|| bad("expected 1 to 64 bytes of hex"))?,
                )
            }
            "cvm.test_panic" => {
                out.test_panic = Some(Stage::from_name(value).ok_or_else(|| bad("not a stage"))?)
            }
            _ => return Err(CmdlineError::UnknownKey(key.clone())),
        }
    }
    // After the loop: `cvm.mode=` may come after the hook.
    if out.mode == Mode::Production && out.test_quote.is_some() {
        return Err(CmdlineError::DebugOnly("cvm.test_quote"));
    }
    Ok(out)
}

fn parse_roothash(value: &str) -> Result<RootHash, &'static str> {
    // SHA-256 up to SHA-512 digests; systemd accepts any length, dm-verity at most 64 bytes.
    if !(64..=128).contains(&value.len()) || !value.len().is_multiple_of(2) {
        return Err("expected 64 to 128 hex digits");
    }
    crate::hex::decode(value)
        .map(RootHash)
        .ok_or("expected hex digits only")
}

fn parse_device(value: &str) -> Result<DeviceSpec, &'static str> {
    if let Some(uuid) = value.strip_prefix("PARTUUID=") {
        return parse_uuid(uuid)
            .map(DeviceSpec::PartUuid)
            .ok_or("PARTUUID is not a UUID");
    }
    if let Some(label) = value.strip_prefix("PARTLABEL=") {
        // GPT names hold 36 UTF-16 code units.
        if label.is_empty()
            || label.encode_utf16().count() > 36
            || label.chars().any(char::is_control)
        {
            return Err("PARTLABEL must be 1 to 36 printable characters");
        }
        return Ok(DeviceSpec::PartLabel(label.to_string()));
    }
    if let Some(rest) = value.strip_prefix("/dev/") {
        let ok = !rest.is_empty()
            && value.len() <= 255
            && rest
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..")
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.:+".contains(&b));
        return if ok {
            Ok(DeviceSpec::Path(value.to_string()))
        } else {
            Err("not a plain /dev path")
        };
    }
    Err("expected PARTUUID=, PARTLABEL= or /dev/…")
}

/// Canonical lower-case 8-4-4-4-12 form, or None.
pub fn parse_uuid(s: &str) -> Option<String> {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    if groups.len() != 5
        || groups
            .iter()
            .zip(lens)
            .any(|(g, n)| g.len() != n || !g.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(s.to_ascii_lowercase())
}

fn parse_initdata(value: &str) -> Result<InitDataSource, &'static str> {
    Ok(match value {
        "auto" => InitDataSource::Auto,
        "disk" => InitDataSource::Disk,
        "fw_cfg" => InitDataSource::FwCfg,
        "gcp" => InitDataSource::Gcp,
        "azure" => InitDataSource::Azure,
        "aws" => InitDataSource::Aws,
        other => match other.strip_prefix("file:") {
            Some(path) if path.starts_with('/') && !path.split('/').any(|c| c == "..") => {
                InitDataSource::File(path.to_string())
            }
            Some(_) => return Err("file: needs an absolute path without .."),
            None => return Err("expected auto, file:<path>, disk, fw_cfg, gcp, azure or aws"),
        },
    })
}

/// systemd-veritysetup's option names that make sense for a root; `ignore-corruption` and
/// `ignore-zero-blocks` are refused because a corrupted or unverified block must never be served.
const VERITY_OPTIONS: &[(&str, bool)] = &[
    ("superblock", true),
    ("format", true),
    ("data-block-size", true),
    ("hash-block-size", true),
    ("data-blocks", true),
    ("hash-offset", true),
    ("salt", true),
    ("uuid", true),
    ("hash", true),
    ("panic-on-corruption", false),
    ("restart-on-corruption", false),
    ("check-at-most-once", false),
    ("root-hash-signature", true),
];

fn parse_verity_options(value: &str) -> Result<Vec<VerityOption>, String> {
    let mut out: Vec<VerityOption> = Vec::new();
    for item in value.split(',') {
        let (name, val) = match item.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (item, None),
        };
        let Some(&(_, takes_value)) = VERITY_OPTIONS.iter().find(|(n, _)| *n == name) else {
            return Err(format!("unsupported verity option '{name}'"));
        };
        if takes_value != val.is_some() || val.is_some_and(str::is_empty) {
            return Err(format!(
                "verity option '{name}' has a missing or extra value"
            ));
        }
        if let Some(v) = val
            && !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
        {
            return Err(format!("verity option '{name}' has unexpected characters"));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(format!("verity option '{name}' given twice"));
        }
        out.push(VerityOption {
            name: name.to_string(),
            value: val.map(str::to_string),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn kv(params: &[(String, Option<String>)]) -> Vec<(&str, Option<&str>)> {
        params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect()
    }

    #[test]
    fn splits_like_the_kernel() {
        let (p, init) = split("console=ttyS0  quiet a=\"b c\" \"d=e f\" g=\"\" h\n").unwrap();
        assert_eq!(
            kv(&p),
            vec![
                ("console", Some("ttyS0")),
                ("quiet", None),
                ("a", Some("b c")),
                ("d", Some("e f")),
                ("g", Some("")),
                ("h", None),
            ]
        );
        assert!(init.is_empty());
    }

    #[test]
    fn quotes_inside_a_value_are_kept_like_the_kernel() {
        // next_arg() only strips a quote that opens the value and the one that ends the token.
        let (p, _) = split("x=a\"b c\"d y").unwrap();
        assert_eq!(kv(&p), vec![("x", Some("a\"b c\"d")), ("y", None)]);
    }

    #[test]
    fn unterminated_quote_runs_to_the_end() {
        let (p, _) = split("a=\"b c d").unwrap();
        assert_eq!(kv(&p), vec![("a", Some("b c d"))]);
        let (p, _) = split("\"").unwrap();
        assert_eq!(kv(&p), vec![("", None)]);
        let (p, _) = split("a=\"").unwrap();
        assert_eq!(kv(&p), vec![("a", Some(""))]);
    }

    #[test]
    fn double_dash_passes_the_rest_to_init() {
        let (p, init) = split("quiet -- cvm.bogus=1 foo").unwrap();
        assert_eq!(kv(&p), vec![("quiet", None)]);
        assert_eq!(init, vec!["cvm.bogus=1", "foo"]);
        let c = parse("quiet -- cvm.bogus=1").unwrap();
        assert_eq!(c.init_args, vec!["cvm.bogus=1"]);
    }

    #[test]
    fn parses_the_typed_options() {
        let c = parse(&format!(
            "console=ttyS0 roothash={HASH} cvm.mode=debug cvm.initdata=file:/etc/initdata.toml \
             systemd.verity_root_data=PARTUUID=01234567-89AB-cdef-0123-456789abcdef \
             systemd.verity_root_hash=PARTLABEL=root-verity \
             systemd.verity_root_options=panic-on-corruption,salt=00ff cvm.log=debug"
        ))
        .unwrap();
        assert_eq!(c.mode, Mode::Debug);
        assert_eq!(c.roothash.as_ref().unwrap().to_hex(), HASH);
        assert_eq!(
            c.initdata,
            InitDataSource::File("/etc/initdata.toml".into())
        );
        assert_eq!(
            c.verity_root_data,
            Some(DeviceSpec::PartUuid(
                "01234567-89ab-cdef-0123-456789abcdef".into()
            ))
        );
        assert_eq!(
            c.verity_root_hash,
            Some(DeviceSpec::PartLabel("root-verity".into()))
        );
        assert_eq!(c.verity_root_options.len(), 2);
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.test_panic, None);
    }

    #[test]
    fn defaults_are_production_and_auto() {
        let c = parse("console=ttyS0 quiet").unwrap();
        assert_eq!(c.mode, Mode::Production);
        assert_eq!(c.initdata, InitDataSource::Auto);
        assert!(c.roothash.is_none());
    }

    #[test]
    fn unknown_cvm_key_is_an_error() {
        assert_eq!(
            parse("cvm.mdoe=debug"),
            Err(CmdlineError::UnknownKey("cvm.mdoe".into()))
        );
    }

    #[test]
    fn duplicates_are_refused() {
        assert_eq!(
            parse("cvm.mode=debug cvm.mode=production"),
            Err(CmdlineError::Duplicate("cvm.mode".into()))
        );
        assert!(matches!(
            parse(&format!("roothash={HASH} roothash={HASH}")),
            Err(CmdlineError::Duplicate(_))
        ));
        // Other programs' keys may repeat (console= does, legitimately).
        assert!(parse("console=tty0 console=ttyS0").is_ok());
    }

    #[test]
    fn bad_values_are_refused() {
        for line in [
            "cvm.mode=prod",
            "cvm.mode",
            "cvm.mode=",
            "roothash=xyz",
            "roothash=0123",
            &format!("roothash={}", &HASH[..63]),
            &format!("roothash={}g", &HASH[..63]),
            "cvm.initdata=file:relative",
            "cvm.initdata=file:/a/../b",
            "cvm.initdata=http://x",
            "systemd.verity_root_data=UUID=1234",
            "systemd.verity_root_data=PARTUUID=nope",
            "systemd.verity_root_data=/dev/../etc/passwd",
            "systemd.verity_root_options=ignore-corruption",
            "systemd.verity_root_options=salt",
            "systemd.verity_root_options=panic-on-corruption,panic-on-corruption",
            "cvm.test_panic=nowhere",
            "cvm.mode=debug cvm.test_quote=zz",
            &format!("cvm.mode=debug cvm.test_quote={}", "00".repeat(65)),
            // A production boot (the default) must not quote report data the host chose.
            "cvm.test_quote=00",
            "cvm.test_quote=00 cvm.mode=production",
            "cvm.mode=production cvm.test_quote=00",
        ] {
            assert!(parse(line).is_err(), "accepted: {line}");
        }
    }

    #[test]
    fn test_quote_only_in_debug() {
        let c = parse("cvm.test_quote=0a0b cvm.mode=debug").unwrap();
        assert_eq!(c.test_quote, Some(vec![0x0a, 0x0b]));
        assert_eq!(
            parse("cvm.test_quote=0a0b").unwrap_err().to_string(),
            "option cvm.test_quote is a debug-mode test hook; production refuses it"
        );
    }

    #[test]
    fn hostile_lengths_are_bounded() {
        let long = "a".repeat(MAX_CMDLINE_LEN + 1);
        assert_eq!(
            parse(&long),
            Err(CmdlineError::TooLong(MAX_CMDLINE_LEN + 1))
        );
        let many = "x ".repeat(MAX_TOKENS + 1);
        assert_eq!(parse(&many), Err(CmdlineError::TooManyParams));
        let big_value = format!("cvm.initdata=file:/{}", "a".repeat(MAX_VALUE_LEN));
        assert!(matches!(
            parse(&big_value),
            Err(CmdlineError::ValueTooLong { .. })
        ));
        assert_eq!(parse_bytes(&[0xff, 0xfe]), Err(CmdlineError::NotUtf8));
    }

    #[test]
    fn never_panics_on_arbitrary_quote_and_space_soup() {
        // Every short string over a quote-heavy alphabet: the splitter's index arithmetic must
        // hold on all of them.
        let alphabet = ['"', '=', ' ', 'a', '\t'];
        let mut buf = String::new();
        fn rec(buf: &mut String, alphabet: &[char], depth: usize) {
            let _ = split(buf);
            let _ = parse(buf);
            if depth == 0 {
                return;
            }
            for &c in alphabet {
                buf.push(c);
                rec(buf, alphabet, depth - 1);
                buf.pop();
            }
        }
        rec(&mut buf, &alphabet, 6);
    }

    #[test]
    fn test_panic_names_a_stage() {
        assert_eq!(
            parse("cvm.test_panic=modules").unwrap().test_panic,
            Some(Stage::Modules)
        );
    }
}
