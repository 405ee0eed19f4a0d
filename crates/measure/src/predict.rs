//! Host side: predict the event log and PCR values a boot will produce (`cvmctl measure`), and
//! replay a log a guest produced (`cvmctl replay`).
//!
//! Both go through the same [`Measurer`] and [`EventLog`] code the agent uses, so a
//! prediction is what the agent extends by construction, not by a second implementation.

use serde::Serialize;
use serde_json::json;

use super::{Event, EventKind, EventLog, MeasureError, Measurer, Pcrs};
use cvm_initdata::Mode;
use cvm_initdata::{InitData, RestartPolicy};
use cvm_tpm::HashAlg;

/// Everything the agent measures, as known before boot. `None`: the agent records no event
/// for that fact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub mode: Mode,
    /// dm-verity root hash, hex.
    pub roothash: Option<String>,
    pub image_version: Option<String>,
    /// Raw init-data bytes.
    pub initdata: Option<Vec<u8>>,
    pub state_disk: Option<String>,
    pub workload_image: Option<String>,
    pub workload_digest: Option<String>,
    pub restart_policy: Option<RestartPolicy>,
    /// Final argv.
    pub args: Option<Vec<String>>,
    /// Final environment, `NAME=value`.
    pub env: Option<Vec<String>>,
    pub overrides: Option<String>,
}

impl Facts {
    /// The events in recording order, ending with the separator.
    pub fn events(&self) -> Result<Vec<Event>, MeasureError> {
        let mut events = vec![Event::mode(self.mode)];
        if let Some(v) = &self.roothash {
            events.push(Event::roothash(v)?);
        }
        if let Some(v) = &self.image_version {
            events.push(Event::image_version(v)?);
        }
        if let Some(v) = &self.initdata {
            events.push(Event::initdata(v));
        }
        if let Some(v) = &self.state_disk {
            events.push(Event::state_disk(v)?);
        }
        if let Some(v) = &self.workload_image {
            events.push(Event::workload_image(v)?);
        }
        if let Some(v) = &self.workload_digest {
            events.push(Event::workload_digest(v)?);
        }
        if let Some(v) = self.restart_policy {
            events.push(Event::restart_policy(v));
        }
        if let Some(v) = &self.args {
            events.push(Event::args(v)?);
        }
        if let Some(v) = &self.env {
            events.push(Event::env(v)?);
        }
        if let Some(v) = &self.overrides {
            events.push(Event::overrides(v)?);
        }
        events.push(Event::separator());
        Ok(events)
    }
}

/// A predicted log and the PCR values its replay gives. As JSON:
/// `{"pcrs": {"sha256": {"8": "...", "15": "..."}}, "log": [<records>]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction {
    pub pcrs: Pcrs,
    pub log: EventLog,
}

impl Serialize for Prediction {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        json!({"pcrs": self.pcrs.to_json(), "log": self.log.to_json()}).serialize(serializer)
    }
}

/// Records `facts` as the agent would into `banks`, then replays the log.
pub fn predict(facts: &Facts, banks: &[HashAlg]) -> Result<Prediction, MeasureError> {
    let mut measurer = Measurer::new(banks)?;
    for event in facts.events()? {
        measurer.record(event)?;
    }
    let pcrs = measurer.log().replay(measurer.banks())?;
    Ok(Prediction {
        pcrs,
        log: measurer.log().clone(),
    })
}

/// The workload facts of `initdata`'s launch.toml, with its `oci:` image read from `root`.
pub fn workload_facts(
    initdata: Option<&InitData>,
    root: &std::path::Path,
    mode: Mode,
    facts: &mut Facts,
) -> Result<(), MeasureError> {
    use cvm_initdata::policy;
    use cvm_oci::reference::{ImageRef, LayoutRef};
    let bad = |what: String| MeasureError::Usage(format!("--image-root: {what}"));
    let launch = initdata
        .ok_or_else(|| bad("needs --initdata".into()))?
        .launch()?
        .ok_or_else(|| bad("the init-data has no launch.toml".into()))?;
    let workload = launch
        .workload
        .as_ref()
        .ok_or_else(|| bad("launch.toml has no [workload]".into()))?;
    let reference = ImageRef::parse(&workload.image).map_err(|e| bad(e.to_string()))?;
    let ImageRef::Layout(layout) = reference else {
        return Err(bad(format!(
            "{} is a registry image: give the workload facts with their own flags",
            workload.image
        )));
    };
    let on_host = LayoutRef {
        dir: root.join(layout.dir.strip_prefix("/").unwrap_or(&layout.dir)),
        selector: layout.selector.clone(),
    };
    let mut source =
        cvm_oci::layout::Layout::open(&on_host).map_err(|e| bad(cvm_text::error_chain(&e)))?;
    let resolved =
        cvm_oci::manifest::resolve(&mut source).map_err(|e| bad(cvm_text::error_chain(&e)))?;
    let state_mount = launch.state.as_ref().map(|s| s.mount.as_str());
    let plan = policy::plan(
        &policy::image_config(&resolved.config),
        workload,
        state_mount,
        mode,
    )
    .map_err(|e| bad(e.to_string()))?;
    facts.workload_image = Some(workload.image.clone());
    facts.workload_digest = Some(resolved.digest.to_string());
    facts.restart_policy = Some(plan.restart);
    facts.args = Some(plan.args);
    facts.env = Some(plan.env);
    facts.overrides = Some(plan.overrides);
    Ok(())
}

/// What the agent measures before it attests (stage 5); the rest comes after the secrets.
pub const PRE_ATTEST: [EventKind; 4] = [
    EventKind::Mode,
    EventKind::RootHash,
    EventKind::ImageVersion,
    EventKind::InitData,
];
