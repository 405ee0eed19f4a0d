//! The boot stages of the design, their names as they appear on the console, and the error that
//! ends a boot: one stage, one object, one cause.

use std::fmt;

/// The stages in boot order. The console names them by `name()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    Early,
    Cmdline,
    Modules,
    Tpm,
    Verity,
    Measure,
    Network,
    Attest,
    Secrets,
    State,
    Workload,
    End,
}

impl Stage {
    pub const ALL: [Stage; 12] = [
        Stage::Early,
        Stage::Cmdline,
        Stage::Modules,
        Stage::Tpm,
        Stage::Verity,
        Stage::Measure,
        Stage::Network,
        Stage::Attest,
        Stage::Secrets,
        Stage::State,
        Stage::Workload,
        Stage::End,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Early => "early",
            Stage::Cmdline => "cmdline",
            Stage::Modules => "modules",
            Stage::Tpm => "tpm",
            Stage::Verity => "verity",
            Stage::Measure => "measure",
            Stage::Network => "network",
            Stage::Attest => "attest",
            Stage::Secrets => "secrets",
            Stage::State => "state",
            Stage::Workload => "workload",
            Stage::End => "end",
        }
    }

    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a boot stopped. Its Display is the body of the console line
/// `cvm-agent: error: <stage>: <what> (<cause>)`; the cause is the source chain.
#[derive(Debug)]
pub struct StageError {
    pub stage: Stage,
    pub error: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl StageError {
    pub fn new<E>(stage: Stage, error: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        StageError {
            stage,
            error: Box::new(error),
        }
    }
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.stage, error_chain(self.error.as_ref()))
    }
}

/// The one-line form of every console error line (and of cvmctl's and the dev KBS's messages).
pub use cvm_text::error_chain;

impl std::error::Error for StageError {}

/// Attach a stage to any module error at the stage boundary.
pub trait InStage<T> {
    fn in_stage(self, stage: Stage) -> Result<T, StageError>;
}

impl<T, E> InStage<T> for Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn in_stage(self, stage: Stage) -> Result<T, StageError> {
        self.map_err(|e| StageError::new(stage, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open /dev/tpmrm0")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_line_names_stage_object_and_cause() {
        let err = StageError::new(
            Stage::Tpm,
            Outer(std::io::Error::from_raw_os_error(libc_enoent())),
        );
        let line = err.to_string();
        assert!(line.starts_with("tpm: cannot open /dev/tpmrm0 ("), "{line}");
        assert!(line.contains("No such file or directory"), "{line}");
    }

    fn libc_enoent() -> i32 {
        2
    }

    #[test]
    fn stage_names_round_trip() {
        for s in Stage::ALL {
            assert_eq!(Stage::from_name(s.name()), Some(s));
        }
        assert_eq!(Stage::from_name("nope"), None);
    }
}
