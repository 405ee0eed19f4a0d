//! The launch policy: what the image's author allows the operator to change, read from image
//! labels with the names Google Confidential Space uses (so images move over unchanged), applied
//! to the overrides in `launch.toml`.
//!
//! | label | value | governs |
//! | --- | --- | --- |
//! | `tee.launch_policy.allow_cmd_override` | `true` / `false` (default) | `[workload] args` |
//! | `tee.launch_policy.allow_env_override` | comma-separated names | `[workload] env` |
//! | `tee.launch_policy.log_redirect` | `Always` / `DebugOnly` (default) / `Never` | console output |
//! | `tee.launch_policy.allow_mount_destinations` | colon-separated paths | `[state] mount` |
//! | `tee.launch_policy.allow_capabilities` | `true` / `false` (default) | `[workload] capabilities` |
//!
//! Production enforces the policy: a violation ends the boot naming the label. Debug reports
//! the violations as warnings and goes on (the mode is measured, so a verifier sees it).

use std::collections::BTreeMap;

use crate::Mode;
use crate::launch::{RestartPolicy, Workload};
use cvm_oci::manifest::RunConfig;

pub const LABEL_CMD: &str = "tee.launch_policy.allow_cmd_override";
pub const LABEL_ENV: &str = "tee.launch_policy.allow_env_override";
pub const LABEL_LOG: &str = "tee.launch_policy.log_redirect";
pub const LABEL_MOUNTS: &str = "tee.launch_policy.allow_mount_destinations";
pub const LABEL_CAPS: &str = "tee.launch_policy.allow_capabilities";

/// A launch policy label whose value we cannot read is as bad as a violation: the image's author
/// meant something we would otherwise guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("image label {label}={value:?}: {expected}")]
    BadLabel {
        label: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("launch policy violation ({label}): {what}")]
    Violation { label: &'static str, what: String },
    #[error("the image has neither Entrypoint nor Cmd, and launch.toml gives no args")]
    NoCommand,
    #[error("image Env entry {0:?} is not NAME=value")]
    BadImageEnv(String),
    #[error("cannot encode the overrides for measurement: {0}")]
    Encode(String),
}

/// What the image's config says about running it (image-spec `config`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=value`, in the image's order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// The image config as the launch policy reads it.
pub fn image_config(config: &RunConfig) -> ImageConfig {
    ImageConfig {
        entrypoint: config.entrypoint.clone().unwrap_or_default(),
        cmd: config.cmd.clone().unwrap_or_default(),
        env: config.env.clone(),
        working_dir: config.working_dir.clone(),
        user: config.user.clone(),
        labels: config.labels.clone(),
    }
}

/// Where log redirection is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogRedirect {
    Always,
    DebugOnly,
    Never,
}

/// The policy as the labels state it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub allow_cmd_override: bool,
    pub allow_env_override: Vec<String>,
    pub log_redirect: LogRedirect,
    pub allow_mount_destinations: Vec<String>,
    pub allow_capabilities: bool,
}

/// Everything the workload is started with, after the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchPlan {
    /// argv: Entrypoint ++ (launch.toml args or the image's Cmd).
    pub args: Vec<String>,
    /// `NAME=value`: the image's Env with launch.toml's values replacing or appended by name.
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: Option<String>,
    pub restart: RestartPolicy,
    /// Whether stdout/stderr go to the console.
    pub log_redirect: bool,
    pub capabilities: Vec<String>,
    /// The state volume's path inside the workload, if there is one.
    pub state_mount: Option<String>,
    /// What the operator changed, as measured (canonical JSON).
    pub overrides: String,
    /// Violations tolerated because the mode is debug.
    pub debug_violations: Vec<PolicyError>,
}

fn parse_bool(labels: &BTreeMap<String, String>, label: &'static str) -> Result<bool, PolicyError> {
    match labels.get(label).map(String::as_str) {
        None => Ok(false),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(PolicyError::BadLabel {
            label,
            value: v.chars().take(100).collect(),
            expected: "expected true or false",
        }),
    }
}

impl Policy {
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Result<Policy, PolicyError> {
        let list = |label: &'static str, sep: char| -> Vec<String> {
            labels
                .get(label)
                .map(|v| {
                    v.split(sep)
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let log_redirect = match labels.get(LABEL_LOG).map(String::as_str) {
            None | Some("DebugOnly") => LogRedirect::DebugOnly,
            Some("Always") => LogRedirect::Always,
            Some("Never") => LogRedirect::Never,
            Some(v) => {
                return Err(PolicyError::BadLabel {
                    label: LABEL_LOG,
                    value: v.chars().take(100).collect(),
                    expected: "expected Always, DebugOnly or Never",
                });
            }
        };
        let mounts = list(LABEL_MOUNTS, ':');
        if let Some(bad) = mounts.iter().find(|m| !m.starts_with('/')) {
            return Err(PolicyError::BadLabel {
                label: LABEL_MOUNTS,
                value: bad.chars().take(100).collect(),
                expected: "expected absolute paths separated by ':'",
            });
        }
        Ok(Policy {
            allow_cmd_override: parse_bool(labels, LABEL_CMD)?,
            allow_env_override: list(LABEL_ENV, ','),
            log_redirect,
            allow_mount_destinations: mounts,
            allow_capabilities: parse_bool(labels, LABEL_CAPS)?,
        })
    }

    fn log_allowed(&self, mode: Mode) -> bool {
        match self.log_redirect {
            LogRedirect::Always => true,
            LogRedirect::DebugOnly => mode == Mode::Debug,
            LogRedirect::Never => false,
        }
    }

    /// `path` equals or lies below an allowed destination (component-wise, not by prefix).
    fn mount_allowed(&self, path: &str) -> bool {
        self.allow_mount_destinations.iter().any(|d| {
            let d = d.trim_end_matches('/');
            d.is_empty() || path == d || path.strip_prefix(d).is_some_and(|r| r.starts_with('/'))
        })
    }
}

/// Applies `workload` (launch.toml) to the image's config under the image's policy.
pub fn plan(
    image: &ImageConfig,
    workload: &Workload,
    state_mount: Option<&str>,
    mode: Mode,
) -> Result<LaunchPlan, PolicyError> {
    let policy = Policy::from_labels(&image.labels)?;
    let mut violations = Vec::new();

    if workload.args.is_some() && !policy.allow_cmd_override {
        violations.push(PolicyError::Violation {
            label: LABEL_CMD,
            what: "launch.toml [workload] args replace the image's Cmd".into(),
        });
    }
    let refused_env: Vec<&str> = workload
        .env
        .keys()
        .filter(|k| !policy.allow_env_override.iter().any(|a| a == *k))
        .map(String::as_str)
        .collect();
    if !refused_env.is_empty() {
        violations.push(PolicyError::Violation {
            label: LABEL_ENV,
            what: format!("launch.toml sets {} (not allowed)", refused_env.join(", ")),
        });
    }
    let log_allowed = policy.log_allowed(mode);
    let log_redirect = match workload.log_redirect {
        None => log_allowed,
        Some(false) => false,
        Some(true) => {
            if !log_allowed {
                violations.push(PolicyError::Violation {
                    label: LABEL_LOG,
                    what: format!(
                        "launch.toml asks for log_redirect, the image allows it {}",
                        match policy.log_redirect {
                            LogRedirect::Never => "never",
                            _ => "only in debug mode",
                        }
                    ),
                });
            }
            true
        }
    };
    if let Some(path) = state_mount
        && !policy.mount_allowed(path)
    {
        violations.push(PolicyError::Violation {
            label: LABEL_MOUNTS,
            what: format!("the state volume at {path} is not an allowed mount destination"),
        });
    }
    if !workload.capabilities.is_empty() && !policy.allow_capabilities {
        violations.push(PolicyError::Violation {
            label: LABEL_CAPS,
            what: format!("launch.toml adds {}", workload.capabilities.join(", ")),
        });
    }
    if mode == Mode::Production
        && let Some(first) = violations.first()
    {
        return Err(first.clone());
    }

    let mut args = image.entrypoint.clone();
    args.extend(workload.args.clone().unwrap_or_else(|| image.cmd.clone()));
    if args.is_empty() {
        return Err(PolicyError::NoCommand);
    }
    let mut env = Vec::with_capacity(image.env.len() + workload.env.len());
    for entry in &image.env {
        let Some((name, _)) = entry.split_once('=') else {
            return Err(PolicyError::BadImageEnv(entry.chars().take(100).collect()));
        };
        if !workload.env.contains_key(name) {
            env.push(entry.clone());
        }
    }
    env.extend(workload.env.iter().map(|(k, v)| format!("{k}={v}")));

    // A struct, not `json!`: the measured text must not depend on whether some crate in the
    // build turned on serde_json's `preserve_order` (a dev-dependency does), so the members
    // are written in this fixed, sorted order.
    #[derive(serde::Serialize)]
    struct Overrides<'a> {
        args: bool,
        capabilities: &'a [String],
        env: Vec<&'a String>,
        log_redirect: bool,
        mounts: Vec<&'a str>,
    }
    let overrides = serde_json::to_string(&Overrides {
        args: workload.args.is_some(),
        capabilities: &workload.capabilities,
        env: workload.env.keys().collect(),
        log_redirect,
        mounts: state_mount.into_iter().collect(),
    })
    .map_err(|e| PolicyError::Encode(e.to_string()))?;

    Ok(LaunchPlan {
        args,
        env,
        working_dir: image
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        user: image.user.clone().filter(|u| !u.is_empty()),
        restart: workload.restart,
        log_redirect,
        capabilities: workload.capabilities.clone(),
        state_mount: state_mount.map(str::to_string),
        overrides,
        debug_violations: violations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(labels: &[(&str, &str)]) -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/bin/app".into()],
            cmd: vec!["--serve".into()],
            env: vec!["PATH=/bin".into(), "LOG=warn".into()],
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..ImageConfig::default()
        }
    }

    fn workload() -> Workload {
        crate::launch::LaunchConfig::parse("[workload]\nimage = \"x\"\n")
            .unwrap()
            .workload
            .unwrap()
    }

    #[test]
    fn no_overrides_runs_the_image_as_built() {
        let p = plan(&image(&[]), &workload(), None, Mode::Production).unwrap();
        assert_eq!(p.args, ["/bin/app", "--serve"]);
        assert_eq!(p.env, ["PATH=/bin", "LOG=warn"]);
        assert_eq!(p.working_dir, "/");
        assert!(
            !p.log_redirect,
            "DebugOnly is the default: no console in production"
        );
        assert_eq!(
            p.overrides,
            r#"{"args":false,"capabilities":[],"env":[],"log_redirect":false,"mounts":[]}"#
        );
        let p = plan(&image(&[]), &workload(), None, Mode::Debug).unwrap();
        assert!(p.log_redirect);
    }

    #[test]
    fn cmd_override_needs_the_label() {
        let mut w = workload();
        w.args = Some(vec!["--once".into()]);
        let e = plan(&image(&[]), &w, None, Mode::Production).unwrap_err();
        assert!(e.to_string().contains(LABEL_CMD), "{e}");
        let p = plan(&image(&[(LABEL_CMD, "true")]), &w, None, Mode::Production).unwrap();
        assert_eq!(
            p.args,
            ["/bin/app", "--once"],
            "args replace Cmd, not Entrypoint"
        );
        // Debug goes on, but keeps the violation to report.
        let p = plan(&image(&[]), &w, None, Mode::Debug).unwrap();
        assert_eq!(p.debug_violations.len(), 1);
        assert_eq!(p.args, ["/bin/app", "--once"]);
    }

    #[test]
    fn env_override_is_per_name() {
        let mut w = workload();
        w.env.insert("LOG".into(), "debug".into());
        w.env.insert("NEW".into(), "1".into());
        let only_log = image(&[(LABEL_ENV, "LOG")]);
        let e = plan(&only_log, &w, None, Mode::Production).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("launch policy violation ({LABEL_ENV}): launch.toml sets NEW (not allowed)")
        );
        let both = image(&[(LABEL_ENV, "LOG, NEW")]);
        let p = plan(&both, &w, None, Mode::Production).unwrap();
        assert_eq!(p.env, ["PATH=/bin", "LOG=debug", "NEW=1"]);
        assert!(
            p.overrides.contains(r#""env":["LOG","NEW"]"#),
            "{}",
            p.overrides
        );
    }

    #[test]
    fn log_redirect_follows_the_label() {
        let mut w = workload();
        w.log_redirect = Some(true);
        assert!(plan(&image(&[]), &w, None, Mode::Production).is_err());
        assert!(
            plan(&image(&[(LABEL_LOG, "Never")]), &w, None, Mode::Debug)
                .unwrap()
                .log_redirect
        );
        let p = plan(&image(&[(LABEL_LOG, "Always")]), &w, None, Mode::Production).unwrap();
        assert!(p.log_redirect);
        w.log_redirect = Some(false);
        let p = plan(&image(&[(LABEL_LOG, "Always")]), &w, None, Mode::Production).unwrap();
        assert!(!p.log_redirect);
        w.log_redirect = None;
        let p = plan(&image(&[(LABEL_LOG, "Always")]), &w, None, Mode::Production).unwrap();
        assert!(p.log_redirect);
        let e = plan(&image(&[(LABEL_LOG, "always")]), &w, None, Mode::Debug).unwrap_err();
        assert!(
            matches!(e, PolicyError::BadLabel { .. }),
            "bad labels fail in debug too"
        );
    }

    #[test]
    fn mounts_are_checked_component_wise() {
        let w = workload();
        let img = image(&[(LABEL_MOUNTS, "/var/lib/app:/data/")]);
        for ok in ["/var/lib/app", "/var/lib/app/db", "/data", "/data/x"] {
            assert!(plan(&img, &w, Some(ok), Mode::Production).is_ok(), "{ok}");
        }
        for bad in ["/var/lib/application", "/var", "/etc"] {
            let e = plan(&img, &w, Some(bad), Mode::Production).unwrap_err();
            assert!(e.to_string().contains(LABEL_MOUNTS), "{bad}: {e}");
        }
        assert!(plan(&image(&[]), &w, Some("/data"), Mode::Production).is_err());
        let e = plan(
            &image(&[(LABEL_MOUNTS, "data")]),
            &w,
            None,
            Mode::Production,
        );
        assert!(matches!(e, Err(PolicyError::BadLabel { .. })));
    }

    #[test]
    fn capabilities_need_the_label() {
        let mut w = workload();
        w.capabilities = vec!["CAP_NET_ADMIN".into()];
        assert!(plan(&image(&[]), &w, None, Mode::Production).is_err());
        assert!(plan(&image(&[(LABEL_CAPS, "yes")]), &w, None, Mode::Production).is_err());
        let p = plan(&image(&[(LABEL_CAPS, "true")]), &w, None, Mode::Production).unwrap();
        assert_eq!(p.capabilities, ["CAP_NET_ADMIN"]);
    }

    #[test]
    fn an_image_without_a_command_needs_args() {
        let mut img = image(&[(LABEL_CMD, "true")]);
        img.entrypoint.clear();
        img.cmd.clear();
        let mut w = workload();
        assert_eq!(
            plan(&img, &w, None, Mode::Production).unwrap_err(),
            PolicyError::NoCommand
        );
        w.args = Some(vec!["/bin/sh".into()]);
        assert_eq!(
            plan(&img, &w, None, Mode::Production).unwrap().args,
            ["/bin/sh"]
        );
        img.env = vec!["NOEQUALS".into()];
        assert!(matches!(
            plan(&img, &w, None, Mode::Production),
            Err(PolicyError::BadImageEnv(_))
        ));
    }
}
