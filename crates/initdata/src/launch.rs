//! `launch.toml`: cvm-agent's own document in init-data `[data]`.
//!
//! ```toml
//! [kbs]
//! url = "https://kbs.example:8080"     # http:// only with insecure_http = true, debug mode only
//! cert = """-----BEGIN CERTIFICATE-----..."""   # optional PEM trust anchor
//! pin = "<64 hex>"                     # optional SHA-256 of the server key's SPKI (DER)
//! insecure_http = false
//! timeout = 60                         # seconds for each KBS conversation, retries included
//! tee_key = "ECDH-ES+A256KW"           # or "RSA-OAEP-256": how the KBS wraps resources
//!
//! [workload]
//! image = "registry.example/app@sha256:..."
//! args = ["--port", "8080"]            # optional: replaces the image's Cmd
//! env = { LOG = "info" }               # optional
//! restart = "Never"                    # "Never" | "OnFailure" | "Always"
//! log_redirect = true                  # optional: workload output on the console (image policy)
//! memory_mib = 512                     # optional cgroup memory.max
//! capabilities = ["CAP_NET_ADMIN"]     # optional additions (image policy)
//! [workload.registry]                  # optional, for registry images
//! insecure_http = false                # plain http: no registry-auth in production (check_for_mode)
//! cert = "..."                         # optional PEM anchor; pin = "<64 hex>" optional
//! timeout = 600                        # seconds for each manifest or layer, retries included
//!
//! [[secrets]]
//! name = "db-password"
//! uri = "kbs:///default/db/password"
//! path = "/run/secrets/db/password"    # optional, default /run/secrets/<name>
//! # or: use = "state-key" | "registry-auth"
//!
//! [state]
//! device = "partlabel:cvm-state"       # or "serial:<id>", "type:<uuid>", "gcp:<device-name>",
//!                                      # "aws:<vol-id>", "azure-lun:<n>"; default: DPS /var type
//! mount = "/var/lib/app"
//! integrity = false
//!
//! [network]
//! mode = "static"                      # "dhcp" | "static" | "none"
//! address = "10.0.2.15/24"
//! gateway = "10.0.2.2"
//! dns = ["10.0.2.3"]
//! ```
//!
//! Every section is optional; fields are checked here so later stages get typed, valid values.
//! Unknown keys are errors (`deny_unknown_fields`): a typo must not silently drop a setting
//! the operator believes is in force. The document is visible to the host, so it holds no
//! secret: secrets come from the KBS and reach the workload as files under `/run/secrets`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use serde::Deserialize;

use super::{InitDataError, toml_error};
use crate::Mode;
pub use cvm_kbs_protocol::resource::{ResourceUri, valid_name};
use cvm_oci::reference::ImageRef;
use cvm_text::hex;

const MAX_URL_LEN: usize = 2048;
const MAX_CERT_LEN: usize = 64 * 1024;
const MAX_IMAGE_LEN: usize = 1024;
const MAX_ARGS: usize = 1024;
const MAX_ENV: usize = 1024;
const MAX_ENV_NAME_LEN: usize = 256;
const MAX_SECRETS: usize = 64;
const MAX_NAME_LEN: usize = 128;
const MAX_PATH_LEN: usize = 4096;
const MAX_DNS: usize = 8;
/// A KBS that has not answered within a minute is down or unreachable; a boot that waits longer
/// only hides the failure.
const DEFAULT_KBS_TIMEOUT_SECS: u64 = 60;
const MAX_KBS_TIMEOUT_SECS: u64 = 3600;
/// GPT partition names are 36 UTF-16 code units.
const MAX_PARTLABEL_LEN: usize = 36;
const MAX_SERIAL_LEN: usize = 64;
const MIN_MEMORY_MIB: u64 = 16;
const MAX_MEMORY_MIB: u64 = 1 << 22;
const MAX_CAPS: usize = 41;
/// A large image over a slow link takes minutes; an hour means something is wrong.
const DEFAULT_PULL_TIMEOUT_SECS: u64 = 600;
const MAX_PULL_TIMEOUT_SECS: u64 = 3600;
/// Where secret files go; the workload sees this directory.
pub const SECRETS_DIR: &str = "/run/secrets";

/// The validated launch configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LaunchConfig {
    pub kbs: Option<Kbs>,
    pub workload: Option<Workload>,
    pub secrets: Vec<Secret>,
    pub state: Option<State>,
    pub network: Option<Network>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kbs {
    /// `https://host[:port][/path]`, or `http://` when `insecure_http`.
    pub url: String,
    /// PEM certificate(s) to trust for the KBS instead of the system roots.
    pub cert: Option<String>,
    /// SHA-256 of the KBS certificate's SubjectPublicKeyInfo (DER).
    pub pin: Option<[u8; 32]>,
    pub insecure_http: bool,
    /// Overall deadline of each KBS conversation (attestation, then all resources), retries
    /// included.
    pub timeout: std::time::Duration,
    /// The per-boot TEE key's algorithm (the JWA name the KBS wraps resources with).
    pub tee_key: cvm_kbs_protocol::TeeKeyAlgorithm,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub image: String,
    /// `None`: the image's own Cmd.
    pub args: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub restart: RestartPolicy,
    /// `None`: the workload's output goes to the console when the image's launch policy allows
    /// it; `Some(true)` asks for it (a policy that forbids it is a violation); `Some(false)`
    /// discards it.
    pub log_redirect: Option<bool>,
    /// The workload cgroup's memory.max in MiB; `None`: all memory but the agent's reserve.
    pub memory_mib: Option<u64>,
    /// Capabilities added to the default set (`CAP_…`), allowed only by the image's policy.
    pub capabilities: Vec<String>,
    /// Transport settings for a registry image (ignored for an `oci:` layout).
    pub registry: Registry,
}

/// How the guest reaches the workload image's registry. Content is verified by digest either
/// way; TLS keeps the registry (and a tag's resolution) honest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registry {
    pub insecure_http: bool,
    pub cert: Option<String>,
    pub pin: Option<[u8; 32]>,
    /// Each fetch (a manifest, the config, a layer), retries included: what the registry client
    /// applies per document or blob.
    pub timeout: std::time::Duration,
}

/// A restart reboots the VM, so measurements start fresh each run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum RestartPolicy {
    #[default]
    Never,
    OnFailure,
    Always,
}

impl RestartPolicy {
    pub fn name(self) -> &'static str {
        match self {
            RestartPolicy::Never => "Never",
            RestartPolicy::OnFailure => "OnFailure",
            RestartPolicy::Always => "Always",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "Never" => Some(RestartPolicy::Never),
            "OnFailure" => Some(RestartPolicy::OnFailure),
            "Always" => Some(RestartPolicy::Always),
            _ => None,
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub name: String,
    pub uri: ResourceUri,
    pub target: SecretTarget,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretTarget {
    /// An absolute path under `/run/secrets`.
    File(String),
    /// Consumed by the agent itself, never written out.
    Use(SecretUse),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretUse {
    /// The LUKS2 key of the state disk.
    StateKey,
    /// Credentials for the workload image's registry.
    RegistryAuth,
}

impl SecretUse {
    pub fn name(self) -> &'static str {
        match self {
            SecretUse::StateKey => "state-key",
            SecretUse::RegistryAuth => "registry-auth",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// `None`: the partition with the Discoverable Partitions `/var` type.
    pub device: Option<StateDevice>,
    pub mount: String,
    pub integrity: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateDevice {
    PartLabel(String),
    /// A virtio/NVMe disk serial (`/dev/disk/by-id`).
    Serial(String),
    /// A GPT partition type GUID, lower-case canonical.
    Type(String),
    /// A GCP persistent disk by its device name (`/dev/disk/by-id/google-<name>`).
    Gcp(String),
    /// An AWS EBS volume by its id, `vol-` and 8 or 17 hex digits.
    Aws(String),
    /// An Azure data disk by its LUN on the data-disk SCSI controller
    /// (`/dev/disk/azure/scsi1/lun<n>`).
    AzureLun(u8),
}

/// GCP: "must be 1-63 characters long and match `[a-z]([-a-z0-9]*[a-z0-9])?`" (RFC 1035 label).
const MAX_GCP_DEVICE_NAME_LEN: usize = 63;
/// Azure: a VM has at most 64 data disks, LUNs 0-63.
const MAX_AZURE_LUN: u8 = 63;
const EXPECTED_DEVICE: &str = "expected partlabel:<label>, serial:<id>, type:<uuid>, \
                               gcp:<device-name>, aws:<vol-id> or azure-lun:<n>";

fn valid_gcp_device_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=MAX_GCP_DEVICE_NAME_LEN).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

/// `vol-` and 8 (older volumes) or 17 lower-case hex digits.
fn valid_ebs_volume_id(id: &str) -> bool {
    id.strip_prefix("vol-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17)
            && hex
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    })
}

/// A decimal LUN without sign or leading zeros.
fn parse_lun(text: &str) -> Option<u8> {
    if text.is_empty()
        || text.len() > 2
        || !text.bytes().all(|c| c.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse().ok().filter(|n| *n <= MAX_AZURE_LUN)
}

impl StateDevice {
    pub fn parse(spec: &str) -> Result<StateDevice, String> {
        let (kind, value) = spec
            .split_once(':')
            .ok_or_else(|| format!("{spec:?}: {EXPECTED_DEVICE}"))?;
        match kind {
            "gcp" if valid_gcp_device_name(value) => Ok(StateDevice::Gcp(value.to_string())),
            "gcp" => Err(format!(
                "{spec:?}: a GCP device name is 1-{MAX_GCP_DEVICE_NAME_LEN} of a-z 0-9 -, \
                 starting with a letter and not ending with -"
            )),
            "aws" if valid_ebs_volume_id(value) => Ok(StateDevice::Aws(value.to_string())),
            "aws" => Err(format!(
                "{spec:?}: an EBS volume id is vol- and 8 or 17 lower-case hex digits"
            )),
            "azure-lun" => parse_lun(value).map(StateDevice::AzureLun).ok_or_else(|| {
                format!("{spec:?}: an Azure LUN is a number from 0 to {MAX_AZURE_LUN}")
            }),
            "partlabel" if valid_name(value, MAX_PARTLABEL_LEN) => {
                Ok(StateDevice::PartLabel(value.to_string()))
            }
            "serial" if valid_name(value, MAX_SERIAL_LEN) => {
                Ok(StateDevice::Serial(value.to_string()))
            }
            "type" => canonical_uuid(value)
                .map(StateDevice::Type)
                .ok_or_else(|| format!("{spec:?}: {value:?} is not a UUID")),
            "partlabel" | "serial" => Err(format!(
                "{spec:?}: the {kind} must be 1-{} of A-Z a-z 0-9 . _ -",
                if kind == "partlabel" {
                    MAX_PARTLABEL_LEN
                } else {
                    MAX_SERIAL_LEN
                }
            )),
            _ => Err(format!("{spec:?}: {EXPECTED_DEVICE}")),
        }
    }
}

impl fmt::Display for StateDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateDevice::PartLabel(v) => write!(f, "partlabel:{v}"),
            StateDevice::Serial(v) => write!(f, "serial:{v}"),
            StateDevice::Type(v) => write!(f, "type:{v}"),
            StateDevice::Gcp(v) => write!(f, "gcp:{v}"),
            StateDevice::Aws(v) => write!(f, "aws:{v}"),
            StateDevice::AzureLun(n) => write!(f, "azure-lun:{n}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub mode: NetworkMode,
    /// Address and prefix length (static only).
    pub address: Option<(IpAddr, u8)>,
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    Dhcp,
    Static,
    None,
}

// The wire forms: what TOML holds, before validation turns it into the types above.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireLaunch {
    kbs: Option<WireKbs>,
    workload: Option<WireWorkload>,
    #[serde(default)]
    secrets: Vec<WireSecret>,
    state: Option<WireState>,
    network: Option<WireNetwork>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireKbs {
    url: String,
    cert: Option<String>,
    pin: Option<String>,
    #[serde(default)]
    insecure_http: bool,
    timeout: Option<u64>,
    tee_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireWorkload {
    image: String,
    args: Option<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    restart: RestartPolicy,
    log_redirect: Option<bool>,
    memory_mib: Option<u64>,
    #[serde(default)]
    capabilities: Vec<String>,
    registry: Option<WireRegistry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRegistry {
    #[serde(default)]
    insecure_http: bool,
    cert: Option<String>,
    pin: Option<String>,
    timeout: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSecret {
    name: String,
    uri: String,
    path: Option<String>,
    #[serde(rename = "use")]
    use_: Option<WireSecretUse>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum WireSecretUse {
    StateKey,
    RegistryAuth,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireState {
    device: Option<String>,
    mount: String,
    #[serde(default)]
    integrity: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireNetwork {
    mode: NetworkMode,
    address: Option<String>,
    gateway: Option<String>,
    #[serde(default)]
    dns: Vec<String>,
}

fn err(what: impl Into<String>) -> InitDataError {
    InitDataError::Launch(what.into())
}

impl LaunchConfig {
    /// Parses and validates `launch.toml`.
    pub fn parse(text: &str) -> Result<LaunchConfig, InitDataError> {
        let wire: WireLaunch = toml::from_str(text).map_err(|e| err(toml_error(text, &e)))?;
        let kbs = wire.kbs.map(kbs).transpose()?;
        let workload = wire.workload.map(workload).transpose()?;
        let secrets = secrets(wire.secrets)?;
        let state = wire.state.map(state).transpose()?;
        let network = wire.network.map(network).transpose()?;

        // Cross-section rules: a configuration that cannot work is refused here, at the first
        // stage that reads it, not half-way through the boot.
        if !secrets.is_empty() && kbs.is_none() {
            return Err(err("[[secrets]] need a [kbs] to fetch them from"));
        }
        let uses: BTreeSet<SecretUse> = secrets
            .iter()
            .filter_map(|s| match s.target {
                SecretTarget::Use(u) => Some(u),
                SecretTarget::File(_) => None,
            })
            .collect();
        if state.is_some() && !uses.contains(&SecretUse::StateKey) {
            return Err(err(
                "[state] needs a secret with use = \"state-key\" (the disk key)",
            ));
        }
        if state.is_none() && uses.contains(&SecretUse::StateKey) {
            return Err(err(
                "a secret has use = \"state-key\" but there is no [state]",
            ));
        }
        if workload.is_none() && uses.contains(&SecretUse::RegistryAuth) {
            return Err(err(
                "a secret has use = \"registry-auth\" but there is no [workload]",
            ));
        }
        Ok(LaunchConfig {
            kbs,
            workload,
            secrets,
            state,
            network,
        })
    }

    /// The secret consumed for `usage`, if any.
    pub fn secret_for(&self, usage: SecretUse) -> Option<&Secret> {
        self.secrets
            .iter()
            .find(|s| s.target == SecretTarget::Use(usage))
    }

    /// What a boot in `mode` may do in the clear. The host owns the network, so plain http
    /// gives it everything that travels there:
    /// - the KBS over http: the host can relay the attestation and answer the resource
    ///   requests itself (a state key it knows, its own secrets), so production refuses it;
    /// - registry credentials (a `registry-auth` secret) with `insecure_http`: they go out as
    ///   Basic over http, to the registry and to any http Bearer realm it names, so production
    ///   refuses that too;
    /// - an anonymous pull over http is allowed in production: nothing secret goes out, and
    ///   every manifest, config and layer is checked against its digest. With a digest in the
    ///   reference the host can only withhold the image, not change it; with a tag the host
    ///   chooses which digest the tag names, which is the tag limit (a KBS cannot hold a tag
    ///   to an image) with the host as the chooser, so that case gets a warning.
    ///
    /// Debug mode allows all of it; the returned lines are warnings for the console.
    pub fn check_for_mode(&self, mode: Mode) -> Result<Vec<String>, CleartextError> {
        let mut warnings = Vec::new();
        let mut refuse = |e: CleartextError| match mode {
            Mode::Production => Err(e),
            Mode::Debug => {
                warnings.push(format!("debug mode allows it: {e}"));
                Ok(())
            }
        };
        // The flag alone (with an https URL) is refused too: it says the operator meant http.
        let kbs_http = |k: &&Kbs| k.insecure_http || k.url.starts_with("http://");
        if let Some(kbs) = self.kbs.as_ref().filter(kbs_http) {
            refuse(CleartextError::KbsOverHttp {
                url: kbs.url.clone(),
            })?;
        }
        let Some(workload) = &self.workload else {
            return Ok(warnings);
        };
        let (registry_image, pinned) = match ImageRef::parse(&workload.image) {
            Ok(ImageRef::Registry(r)) => (true, r.digest.is_some()),
            Ok(ImageRef::Layout(_)) => (false, true),
            // The workload stage names the parse error; until then it counts as a registry
            // image by tag, so nothing is allowed that such an image would not be.
            Err(_) => (true, false),
        };
        if !(registry_image && workload.registry.insecure_http) {
            return Ok(warnings);
        }
        if let Some(auth) = self.secret_for(SecretUse::RegistryAuth) {
            refuse(CleartextError::RegistryCredentialsOverHttp {
                secret: auth.name.clone(),
                image: workload.image.clone(),
            })?;
        }
        if !pinned {
            warnings.push(format!(
                "workload image {:?} by tag over plain http: the network decides which image \
                 the tag names (content is still checked against the digests it is given); pin \
                 a digest",
                workload.image
            ));
        }
        Ok(warnings)
    }
}

/// A launch.toml that would put the KBS conversation or registry credentials on plain http in
/// a mode that does not allow it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CleartextError {
    #[error(
        "launch.toml [kbs]: url {url:?} is plain http (insecure_http = true), refused in \
         production: anyone on the path could relay the attestation and hand this VM any \
         resource (a state key it knows); use https with a cert or pin (only cvm.mode=debug \
         allows http)"
    )]
    KbsOverHttp { url: String },
    #[error(
        "launch.toml [workload.registry]: insecure_http = true with the registry-auth secret \
         {secret:?} for {image:?}, refused in production: the credentials would go out as \
         Basic over plain http (also to any http token realm the registry names); use https \
         with a cert or pin, or pull anonymously (only cvm.mode=debug allows credentials over \
         http)"
    )]
    RegistryCredentialsOverHttp { secret: String, image: String },
}

fn kbs(wire: WireKbs) -> Result<Kbs, InitDataError> {
    let is_http =
        validate_url(&wire.url, wire.insecure_http).map_err(|e| err(format!("kbs.url: {e}")))?;
    if let Some(cert) = &wire.cert {
        if cert.len() > MAX_CERT_LEN {
            return Err(err(format!("kbs.cert is longer than {MAX_CERT_LEN} bytes")));
        }
        if !cert.contains("-----BEGIN CERTIFICATE-----")
            || !cert.contains("-----END CERTIFICATE-----")
        {
            return Err(err("kbs.cert is not a PEM certificate"));
        }
    }
    let pin = wire
        .pin
        .as_deref()
        .map(|p| parse_pin("kbs.pin", p))
        .transpose()?;
    if is_http && (wire.cert.is_some() || pin.is_some()) {
        return Err(err(
            "kbs.cert and kbs.pin mean nothing over http://: remove them or use https",
        ));
    }
    let timeout = match wire.timeout {
        None => DEFAULT_KBS_TIMEOUT_SECS,
        Some(t @ 1..=MAX_KBS_TIMEOUT_SECS) => t,
        Some(t) => {
            return Err(err(format!(
                "kbs.timeout = {t}: must be 1 to {MAX_KBS_TIMEOUT_SECS} seconds"
            )));
        }
    };
    let tee_key = match wire.tee_key.as_deref() {
        None => cvm_kbs_protocol::TeeKeyAlgorithm::default(),
        Some(name) => name.parse().map_err(|_| {
            err(format!(
                "kbs.tee_key {name:?}: expected \"ECDH-ES+A256KW\" or \"RSA-OAEP-256\""
            ))
        })?,
    };
    Ok(Kbs {
        url: wire.url,
        cert: wire.cert,
        pin,
        insecure_http: wire.insecure_http,
        timeout: std::time::Duration::from_secs(timeout),
        tee_key,
    })
}

/// Checks `scheme://host[:port][/path]`; returns whether it is plain http.
fn validate_url(url: &str, insecure_http: bool) -> Result<bool, String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("longer than {MAX_URL_LEN} bytes"));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{url:?} contains whitespace or control characters"));
    }
    let (rest, is_http) = if let Some(rest) = url.strip_prefix("https://") {
        (rest, false)
    } else if let Some(rest) = url.strip_prefix("http://") {
        if !insecure_http {
            return Err(format!(
                "{url:?} is plain http: use https, or set insecure_http = true"
            ));
        }
        (rest, true)
    } else {
        return Err(format!("{url:?} must start with https://"));
    };
    if rest.contains(['?', '#']) {
        return Err(format!("{url:?}: a KBS URL has no query or fragment"));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(format!(
            "{url:?}: user information in the URL is not allowed"
        ));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (v6, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unterminated [IPv6] host"))?;
        v6.parse::<Ipv6Addr>()
            .map_err(|_| format!("{url:?}: [{v6}] is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("{url:?}: bad port"))?,
            ),
        };
        (v6, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && (authority.starts_with('[')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
    if !host_ok {
        return Err(format!("{url:?}: bad host {host:?}"));
    }
    if let Some(port) = port
        && (port.is_empty()
            || port.len() > 5
            || !port.bytes().all(|b| b.is_ascii_digit())
            || !(1..=65535).contains(&port.parse::<u32>().unwrap_or(0)))
    {
        return Err(format!("{url:?}: bad port {port:?}"));
    }
    Ok(is_http)
}

fn workload(wire: WireWorkload) -> Result<Workload, InitDataError> {
    let image = wire.image;
    if image.is_empty()
        || image.len() > MAX_IMAGE_LEN
        || image.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(err(format!(
            "workload.image {image:?} must be 1-{MAX_IMAGE_LEN} characters without whitespace"
        )));
    }
    if let Some(args) = &wire.args {
        if args.len() > MAX_ARGS {
            return Err(err(format!(
                "workload.args has more than {MAX_ARGS} entries"
            )));
        }
        // execve() takes NUL-terminated strings: a NUL would silently cut an argument.
        if args.iter().any(|a| a.contains('\0')) {
            return Err(err("workload.args: an argument contains a NUL byte"));
        }
    }
    if wire.env.len() > MAX_ENV {
        return Err(err(format!("workload.env has more than {MAX_ENV} entries")));
    }
    for (name, value) in &wire.env {
        if !valid_env_name(name) {
            return Err(err(format!(
                "workload.env: {name:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"
            )));
        }
        if value.contains('\0') {
            return Err(err(format!(
                "workload.env: the value of {name} contains a NUL byte"
            )));
        }
    }
    if let Some(mib) = wire.memory_mib
        && !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&mib)
    {
        return Err(err(format!(
            "workload.memory_mib = {mib}: must be {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB}"
        )));
    }
    if wire.capabilities.len() > MAX_CAPS {
        return Err(err(format!(
            "workload.capabilities has more than {MAX_CAPS} entries"
        )));
    }
    for cap in &wire.capabilities {
        let ok = cap.len() <= 32
            && cap.strip_prefix("CAP_").is_some_and(|n| {
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            });
        if !ok {
            return Err(err(format!(
                "workload.capabilities: {cap:?} is not a capability name (CAP_…)"
            )));
        }
    }
    let registry = match wire.registry {
        None => Registry {
            timeout: std::time::Duration::from_secs(DEFAULT_PULL_TIMEOUT_SECS),
            ..Registry::default()
        },
        Some(r) => registry(r)?,
    };
    Ok(Workload {
        image,
        args: wire.args,
        env: wire.env,
        restart: wire.restart,
        log_redirect: wire.log_redirect,
        memory_mib: wire.memory_mib,
        capabilities: wire.capabilities,
        registry,
    })
}

fn parse_pin(field: &str, pin: &str) -> Result<[u8; 32], InitDataError> {
    hex::decode(pin)
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| {
            err(format!(
                "{field} must be 64 hex digits (SHA-256 of the key's SPKI)"
            ))
        })
}

fn registry(wire: WireRegistry) -> Result<Registry, InitDataError> {
    if let Some(cert) = &wire.cert
        && (cert.len() > MAX_CERT_LEN
            || !cert.contains("-----BEGIN CERTIFICATE-----")
            || !cert.contains("-----END CERTIFICATE-----"))
    {
        return Err(err("workload.registry.cert is not a PEM certificate"));
    }
    let pin = wire
        .pin
        .as_deref()
        .map(|p| parse_pin("workload.registry.pin", p))
        .transpose()?;
    if wire.insecure_http && (wire.cert.is_some() || pin.is_some()) {
        return Err(err(
            "workload.registry: cert and pin mean nothing with insecure_http = true",
        ));
    }
    let timeout = match wire.timeout {
        None => DEFAULT_PULL_TIMEOUT_SECS,
        Some(t @ 1..=MAX_PULL_TIMEOUT_SECS) => t,
        Some(t) => {
            return Err(err(format!(
                "workload.registry.timeout = {t}: must be 1 to {MAX_PULL_TIMEOUT_SECS} seconds"
            )));
        }
    };
    Ok(Registry {
        insecure_http: wire.insecure_http,
        cert: wire.cert,
        pin,
        timeout: std::time::Duration::from_secs(timeout),
    })
}

fn valid_env_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_ENV_NAME_LEN
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_')
}

fn secrets(wire: Vec<WireSecret>) -> Result<Vec<Secret>, InitDataError> {
    if wire.len() > MAX_SECRETS {
        return Err(err(format!("more than {MAX_SECRETS} [[secrets]]")));
    }
    let mut names = BTreeSet::new();
    let mut paths = BTreeSet::new();
    let mut uses = BTreeSet::new();
    let mut out = Vec::with_capacity(wire.len());
    for secret in wire {
        let name = secret.name;
        if !valid_name(&name, MAX_NAME_LEN) {
            return Err(err(format!(
                "secrets: name {name:?} must be 1-{MAX_NAME_LEN} of A-Z a-z 0-9 . _ -"
            )));
        }
        if !names.insert(name.clone()) {
            return Err(err(format!("secrets: {name} is defined twice")));
        }
        let uri =
            ResourceUri::parse(&secret.uri).map_err(|e| err(format!("secrets.{name}.uri: {e}")))?;
        let target = match (secret.path, secret.use_) {
            (Some(_), Some(_)) => {
                return Err(err(format!("secrets.{name}: path and use are exclusive")));
            }
            (None, Some(usage)) => {
                let usage = match usage {
                    WireSecretUse::StateKey => SecretUse::StateKey,
                    WireSecretUse::RegistryAuth => SecretUse::RegistryAuth,
                };
                if !uses.insert(usage) {
                    return Err(err(format!(
                        "secrets: more than one secret has use = \"{}\"",
                        usage.name()
                    )));
                }
                SecretTarget::Use(usage)
            }
            (path, None) => {
                let path = path.unwrap_or_else(|| format!("{SECRETS_DIR}/{name}"));
                validate_abs_path(&path).map_err(|e| err(format!("secrets.{name}.path: {e}")))?;
                if !path
                    .strip_prefix(SECRETS_DIR)
                    .is_some_and(|rest| rest.starts_with('/'))
                {
                    return Err(err(format!(
                        "secrets.{name}.path: {path:?} is not a file under {SECRETS_DIR}/"
                    )));
                }
                if !paths.insert(path.clone()) {
                    return Err(err(format!("secrets: two secrets are written to {path}")));
                }
                SecretTarget::File(path)
            }
        };
        out.push(Secret { name, uri, target });
    }
    // A file path that is another secret's directory (/run/secrets/a and /run/secrets/a/b)
    // cannot be both a file and a directory.
    for path in &paths {
        let dir = format!("{path}/");
        if paths.iter().any(|other| other.starts_with(&dir)) {
            return Err(err(format!(
                "secrets: {path} is both a file and a directory"
            )));
        }
    }
    Ok(out)
}

fn state(wire: WireState) -> Result<State, InitDataError> {
    let device = wire
        .device
        .as_deref()
        .map(StateDevice::parse)
        .transpose()
        .map_err(|e| err(format!("state.device: {e}")))?;
    validate_abs_path(&wire.mount).map_err(|e| err(format!("state.mount: {e}")))?;
    if wire.mount == "/" {
        return Err(err("state.mount cannot be /"));
    }
    Ok(State {
        device,
        mount: wire.mount,
        integrity: wire.integrity,
    })
}

fn network(wire: WireNetwork) -> Result<Network, InitDataError> {
    let address = wire
        .address
        .as_deref()
        .map(|a| {
            parse_cidr(a).ok_or_else(|| err(format!("network.address {a:?} is not <ip>/<prefix>")))
        })
        .transpose()?;
    let gateway = wire
        .gateway
        .as_deref()
        .map(|g| {
            g.parse::<IpAddr>()
                .map_err(|_| err(format!("network.gateway {g:?} is not an IP address")))
        })
        .transpose()?;
    if wire.dns.len() > MAX_DNS {
        return Err(err(format!("network.dns has more than {MAX_DNS} servers")));
    }
    let dns = wire
        .dns
        .iter()
        .map(|d| {
            d.parse::<IpAddr>()
                .map_err(|_| err(format!("network.dns {d:?} is not an IP address")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    match wire.mode {
        NetworkMode::Static if address.is_none() => {
            return Err(err("network.mode = \"static\" needs an address"));
        }
        NetworkMode::Dhcp if address.is_some() || gateway.is_some() => {
            return Err(err("network.mode = \"dhcp\" takes no address or gateway"));
        }
        NetworkMode::None if address.is_some() || gateway.is_some() || !dns.is_empty() => {
            return Err(err(
                "network.mode = \"none\" takes no address, gateway or dns",
            ));
        }
        _ => {}
    }
    if let (Some((addr, _)), Some(gw)) = (address, gateway)
        && addr.is_ipv4() != gw.is_ipv4()
    {
        return Err(err("network.gateway is not of the address's IP version"));
    }
    Ok(Network {
        mode: wire.mode,
        address,
        gateway,
        dns,
    })
}

fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (ip, prefix) = text.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    // Digits only: u8::from_str would take "+24".
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((ip, prefix))
}

/// An absolute, normalised path: no empty, `.` or `..` component, no control character.
fn validate_abs_path(path: &str) -> Result<(), String> {
    if path.len() > MAX_PATH_LEN {
        return Err(format!("longer than {MAX_PATH_LEN} bytes"));
    }
    if path.chars().any(char::is_control) {
        return Err(format!("{path:?} contains control characters"));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("{path:?} is not absolute"));
    };
    if rest.is_empty() {
        return Ok(());
    }
    if rest
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "{path:?} is not a normalised path (no //, ., .., trailing /)"
        ));
    }
    Ok(())
}

/// `8-4-4-4-12` hex, returned lower-case.
fn canonical_uuid(text: &str) -> Option<String> {
    let groups: Vec<&str> = text.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    (groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit())))
    .then(|| text.to_ascii_lowercase())
}
