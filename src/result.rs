//! The result line: what a host, a test or a cloud log scraper reads to learn how the VM ended.

use crate::cmdline::Mode;
use crate::stage::Stage;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

/// Per-stage wall time in milliseconds, in boot order.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StageTimes(pub Vec<(Stage, u64)>);

impl StageTimes {
    pub fn record(&mut self, stage: Stage, ms: u64) {
        self.0.push((stage, ms));
    }
}

impl Serialize for StageTimes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (stage, ms) in &self.0 {
            map.serialize_entry(stage.name(), ms)?;
        }
        map.end()
    }
}

/// The body of `cvm-agent: result {...}`.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub exit_code: i32,
    pub mode: &'static str,
    pub stages_ms: StageTimes,
    pub boot_ms: u64,
    /// The signal that killed the workload, when one did (`exit_code` is then minus its number).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<&'static str>,
    /// The workload's restart policy, when there is a workload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<&'static str>,
    /// What happens next: `power-off`, `reboot` (a restart) or `stay-up` (debug).
    pub next: &'static str,
}

impl RunResult {
    pub fn new(exit_code: i32, mode: Mode, stages_ms: StageTimes, boot_ms: u64) -> Self {
        RunResult {
            exit_code,
            mode: mode.name(),
            stages_ms,
            boot_ms,
            signal: None,
            restart: None,
            next: match mode {
                Mode::Production => "power-off",
                Mode::Debug => "stay-up",
            },
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing plain integers and static strings cannot fail.
        serde_json::to_string(self)
            .unwrap_or_else(|_| format!("{{\"exit_code\":{}}}", self.exit_code))
    }
}

/// Find the result line in a console capture and return its JSON body. Console captures may carry
/// `\r` and kernel lines interleaved; only a line that starts with the prefix counts.
pub fn find_result(console: &str) -> Option<serde_json::Value> {
    console
        .lines()
        .rev()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("cvm-agent: result "))
        .find_map(|json| serde_json::from_str(json).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_keeps_stage_order_and_parses_back() {
        let mut t = StageTimes::default();
        t.record(Stage::Early, 3);
        t.record(Stage::Cmdline, 0);
        t.record(Stage::Modules, 120);
        let json = RunResult::new(7, Mode::Production, t, 900).to_json();
        assert!(json.find("early").unwrap() < json.find("modules").unwrap());
        let console = format!(
            "[ 1.0] kernel noise\r\ncvm-agent: result {json}\r\n[ 2.0] reboot: Power down\n"
        );
        let v = find_result(&console).unwrap();
        assert_eq!(v["exit_code"], 7);
        assert_eq!(v["stages_ms"]["modules"], 120);
        assert_eq!(v["mode"], "production");
    }

    #[test]
    fn no_result_line_is_none() {
        assert!(find_result("cvm-agent: error: cmdline: bad\n").is_none());
        assert!(find_result("xcvm-agent: result {\"exit_code\":0}\n").is_none());
        assert!(find_result("cvm-agent: result {not json\n").is_none());
    }
}
