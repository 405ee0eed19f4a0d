//! Console and kernel-log output for the agent.
//!
//! Every line starts with `cvm-agent:` so it can be told apart from kernel messages on a shared
//! serial console. Ordinary lines carry the seconds since boot and the stage (the name of the
//! `tracing` span they were logged in); the two lines other programs parse — the error line and
//! the result line — have fixed shapes and are written by [`error_line`] and [`result_line`].
//! /dev/kmsg gets every line as well, so the log survives where only the kernel log is collected
//! (cloud serial logs, `dmesg` in a debug shell).

use crate::stage::Stage;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// Seconds since boot, from CLOCK_BOOTTIME (the clock dmesg uses), as fractional seconds.
pub fn since_boot() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
        .unwrap_or(0.0)
}

/// Where lines go: the console (our stderr, which early setup points at /dev/console) and,
/// when it could be opened, /dev/kmsg.
pub struct Sink {
    kmsg: Mutex<Option<File>>,
    debug_console: AtomicBool,
}

impl Sink {
    pub fn new() -> Self {
        let kmsg = OpenOptions::new().write(true).open("/dev/kmsg").ok();
        Sink {
            kmsg: Mutex::new(kmsg),
            debug_console: AtomicBool::new(false),
        }
    }

    /// A sink that only writes to stderr, for hosts and tests.
    pub fn console_only() -> Self {
        Sink {
            kmsg: Mutex::new(None),
            debug_console: AtomicBool::new(false),
        }
    }

    /// Show debug-level lines on the console too (`cvm.log=debug`); /dev/kmsg always gets them.
    pub fn set_debug_console(&self, on: bool) {
        self.debug_console.store(on, Ordering::Relaxed);
    }

    /// Write one line; `priority` is the syslog level for /dev/kmsg (3 error, 6 info, 7 debug).
    pub fn line(&self, priority: u8, line: &str, to_console: bool) {
        if to_console {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(line.as_bytes());
            let _ = err.write_all(b"\n");
            let _ = err.flush();
        }
        if let Ok(mut guard) = self.kmsg.lock()
            && let Some(kmsg) = guard.as_mut()
        {
            // The kernel echoes records below the console loglevel (4 in our boots) to the
            // console, where this line already is; capping at warning keeps it there once.
            let priority = priority.max(4);
            // One write() is one kmsg record; the kernel caps a record at ~1 KiB.
            let mut rec = format!("<{priority}>{line}");
            rec.truncate(floor_char_boundary(&rec, 976));
            let _ = kmsg.write_all(rec.as_bytes());
        }
    }
}

impl Default for Sink {
    fn default() -> Self {
        Self::new()
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

/// The one error line of a failed boot: `cvm-agent: error: <stage>: <what> (<cause>)`.
pub fn error_line(sink: &Sink, body: &str) {
    sink.line(3, &format!("cvm-agent: error: {body}"), true);
}

/// The machine-readable result line: `cvm-agent: result {json}`.
pub fn result_line(sink: &Sink, json: &str) {
    sink.line(6, &format!("cvm-agent: result {json}"), true);
}

/// The tracing layer that renders events into agent lines.
struct AgentLayer {
    sink: std::sync::Arc<Sink>,
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={:?}", field.name(), value);
        }
    }
}

impl<S> Layer<S> for AgentLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut level = *event.metadata().level();
        // The container runtime's own chatter (cgroup controllers it skips, no seccomp) is
        // debug detail for us; its errors stay errors. It also logs from inside the container
        // before exec, where a console line would land in the workload's output.
        let target = event.metadata().target();
        if (target.starts_with("libcontainer") || target.starts_with("libcgroups"))
            && level != Level::ERROR
        {
            level = Level::DEBUG;
        }
        let stage = ctx
            .event_scope(event)
            .and_then(|scope| scope.from_root().next())
            .map(|span| span.name())
            .unwrap_or("agent");
        let mut fields = Fields::default();
        event.record(&mut fields);
        let tag = match level {
            Level::ERROR => "error: ",
            Level::WARN => "warning: ",
            _ => "",
        };
        let line = format!(
            "cvm-agent: [{:>8.3}] {stage}: {tag}{}{}",
            since_boot(),
            fields.message,
            fields.rest
        );
        let priority = match level {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        let console_level = if self.sink.debug_console.load(Ordering::Relaxed) {
            Level::DEBUG
        } else {
            Level::INFO
        };
        self.sink.line(priority, &line, level <= console_level);
    }
}

/// Install the agent's subscriber. Debug-level events always reach /dev/kmsg; the console gets
/// them only after [`Sink::set_debug_console`].
pub fn install(sink: std::sync::Arc<Sink>) {
    let layer = AgentLayer { sink };
    let subscriber = tracing_subscriber::registry().with(layer);
    // Only the first call can succeed; a second install keeps the first subscriber.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// The span that names a stage on every line logged inside it.
pub fn stage_span(stage: Stage) -> tracing::Span {
    // Span names must be literals for `tracing`'s static metadata.
    match stage {
        Stage::Early => tracing::info_span!("early"),
        Stage::Cmdline => tracing::info_span!("cmdline"),
        Stage::Modules => tracing::info_span!("modules"),
        Stage::Tpm => tracing::info_span!("tpm"),
        Stage::Verity => tracing::info_span!("verity"),
        Stage::Measure => tracing::info_span!("measure"),
        Stage::Network => tracing::info_span!("network"),
        Stage::Attest => tracing::info_span!("attest"),
        Stage::Secrets => tracing::info_span!("secrets"),
        Stage::State => tracing::info_span!("state"),
        Stage::Workload => tracing::info_span!("workload"),
        Stage::End => tracing::info_span!("end"),
    }
}

/// The stage the current thread is in, from the innermost entered stage span.
pub fn current_stage() -> Option<Stage> {
    let span = tracing::Span::current();
    span.metadata().and_then(|m| Stage::from_name(m.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_records_are_cut_on_char_boundaries() {
        let s = "é".repeat(600);
        let cut = floor_char_boundary(&s, 976);
        assert!(cut <= 976 && s.is_char_boundary(cut));
    }
}
