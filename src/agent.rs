//! The agent's boot sequence: each stage runs in its own span, is timed, and either succeeds or
//! ends the boot through [`Agent::fatal`] — fail closed, one error line, then power-off in
//! production or an idle VM in debug.

use crate::boot;
use crate::boot_chain;
use crate::cmdline::{self, Cmdline, Mode};
use crate::evidence;
use crate::hex::encode as hex;
use crate::initdata::launch::{
    LaunchConfig, NetworkMode, RestartPolicy, SECRETS_DIR, SecretTarget, SecretUse,
};
use crate::initdata::{self, InitData};
use crate::kbs::{TeeKeyPair, jwe, protocol};
use crate::kbs_client::KbsClient;
use crate::kmod;
use crate::logging::{self, Sink};
use crate::measure::{Event, Measurer};
use crate::net;
use crate::pid1::{self, Pid1, Request};
use crate::result::{RunResult, StageTimes};
use crate::secrets::{self, SecretsError};
use crate::stage::{InStage, Stage, StageError};
use crate::state;
use crate::tee::detect::TeeKind;
use crate::tpm::{HashAlg, Tpm};
use crate::verity_root;
use crate::workload;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

const MODULES_LOAD_LIST: &str = "/etc/cvm-agent/modules.load";
const MODULES_LATE_LIST: &str = "/etc/cvm-agent/modules.late";
const SYSROOT: &str = "/sysroot";
/// Disks show up while their drivers probe; a cloud NVMe disk can take a few seconds.
const ROOT_DEVICE_WAIT: Duration = Duration::from_secs(10);
const TPM_DEVICE: &str = "/dev/tpmrm0";
const MEASURE_LOG: &str = "/run/cvm-agent/measure.log";
const TPM_WAIT: Duration = Duration::from_secs(10);
const COLDPLUG_ROUNDS: u32 = 8;
/// Link, carrier and a DHCP lease; QEMU and cloud DHCP answer in well under a second.
const NETWORK_DEADLINE: Duration = Duration::from_secs(20);
/// The init-data from a cloud's metadata service, retries included (Azure asks clients to retry
/// its 410s for up to 70 s, and serves userData empty for a while on a first boot).
const METADATA_DEADLINE: Duration = Duration::from_secs(60);
/// Azure's VCEK (THIM) or TD quote for one piece of evidence, retries included.
const AZURE_HOST_DEADLINE: Duration = Duration::from_secs(20);
/// Reporting Ready to Azure's WireServer (goal state, then health), retries included.
const REPORT_READY_DEADLINE: Duration = Duration::from_secs(30);
/// A cloud's data disk can take a few seconds to appear, like the root disk.
const STATE_DEVICE_WAIT: Duration = Duration::from_secs(10);
/// The workload's OCI bundle (its config.json); the root it names is elsewhere.
const BUNDLE_DIR: &str = "/run/cvm-agent/bundle";
/// How long a workload gets to exit after SIGTERM when the VM is asked to power off.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The agent's resident set, its peak, and the resident set's anonymous (heap, stacks, written
/// data) and file-backed (the binary's code and read-only data) parts, in KiB (`VmRSS`,
/// `VmHWM`, `RssAnon`, `RssFile` + `RssShmem`: an agent started from the initramfs runs from
/// tmpfs, whose pages count as shmem); zeros when unreadable. The split says whether a smaller
/// binary or fewer allocations would lower it.
fn own_memory() -> (u64, u64, u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (
        field("VmRSS:"),
        field("VmHWM:"),
        field("RssAnon:"),
        field("RssFile:") + field("RssShmem:"),
    )
}

/// From here PID 1 only waits for the workload, for as long as it runs: hand the pages the
/// earlier stages freed (manifests, layer, TLS and JSON buffers) back to the kernel rather
/// than keep them resident in glibc's arenas.
fn release_free_heap() {
    // SAFETY: malloc_trim takes no pointer; it only walks glibc's own arenas, under their locks.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// One line for a configured interface: address, gateway, DNS, lease, time taken.
fn describe_net(up: &net::NetUp) -> String {
    format!(
        "{} {}/{}{}{} ({}) in {} ms",
        up.interface,
        up.address,
        up.prefix,
        up.gateway.map(|g| format!(" via {g}")).unwrap_or_default(),
        if up.dns.is_empty() {
            String::new()
        } else {
            format!(
                ", dns {}",
                up.dns
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        },
        match up.lease_secs {
            Some(s) => format!("DHCP lease {s} s"),
            None => "static".to_string(),
        },
        up.elapsed.as_millis()
    )
}

/// Errors of the agent's own glue between stages.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot read {path}")]
    Read {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("no TPM at {TPM_DEVICE} (production requires a vTPM)")]
    NoTpm(#[source] kmod::KmodError),
    #[error("the TPM has no active SHA-256 PCR bank (active: {0})")]
    NoSha256Bank(String),
    #[error("the boot chain")]
    BootChain(#[source] crate::boot_chain::BootChainError),
    #[error("no roothash= on the kernel command line (production boots only a verified root)")]
    NoRootHash,
    #[error(
        "PCR {pcr} ({bank}) is {actual}, but the event log replays to {expected} (something else extended it)"
    )]
    LogMismatch {
        pcr: u32,
        bank: &'static str,
        actual: String,
        expected: String,
    },
    #[error("cannot create {0}")]
    MkDir(&'static str, #[source] std::io::Error),
    #[error("launch.toml [network]: {0}")]
    NetworkConfig(&'static str),
    #[error("test panic requested by cvm.test_panic={0}")]
    TestPanic(Stage),
    #[error("launch.toml has a [kbs], but no TEE was detected to attest with")]
    NoTee,
    #[error("the init-data is not UTF-8 text, so it cannot be sent in the attest request")]
    InitDataNotText,
    #[error("launch.toml [state] needs a secret with use = \"state-key\", and none was fetched")]
    NoStateKey,
    #[error("bringing up the network (DHCP) to reach the {0} metadata service")]
    CloudNetwork(&'static str, #[source] net::NetError),
    #[error("init-data from the {0} metadata service")]
    CloudFetch(&'static str, #[source] crate::cloud::CloudError),
    #[error("cvm.initdata={cloud}: the metadata service has no init-data: {why}")]
    NoCloudInitData { cloud: &'static str, why: String },
    #[error(
        "launch.toml [network] mode = \"{0}\": the network was brought up with DHCP to read the \
         init-data from the metadata service, so only DHCP applies"
    )]
    CloudNetworkMode(&'static str),
}

/// Why evidence for the KBS could not be produced.
#[derive(Debug, thiserror::Error)]
enum AttestError {
    #[error(transparent)]
    Kbs(protocol::KbsError),
    #[error(transparent)]
    Evidence(evidence::EvidenceError),
}

/// The KBS session of this boot: the client (its cookie and token) and the TEE key the KBS
/// encrypts resources to. Both die with the boot.
struct KbsSession {
    client: KbsClient,
    key: TeeKeyPair,
}

pub struct Agent {
    sink: Arc<Sink>,
    pid1: Pid1,
    mode: Mode,
    cmdline: Cmdline,
    times: StageTimes,
    /// Kept after the modules stage so later stages load what only they need (dm targets,
    /// filesystems, crypto templates) when they need it.
    modules: Option<kmod::Loader<kmod::FinitModule>>,
    /// The verified root's os-release, once switched to it.
    os_release: Option<crate::measure::osrelease::OsRelease>,
    /// None only in debug mode without a TPM.
    tpm: Option<Tpm>,
    measurer: Option<Measurer>,
    initdata: Option<InitData>,
    /// The TEE evidence will come from, once detected.
    tee: Option<TeeKind>,
    /// The hardware report sent beside a cloud's `tpm` primary evidence.
    additional_tee: Option<TeeKind>,
    /// The cloud from SMBIOS, for the cloud's evidence inputs.
    cloud: Option<crate::tee::detect::Cloud>,
    /// launch.toml from the init-data, once measured.
    launch: Option<LaunchConfig>,
    net: Option<net::NetUp>,
    kbs: Option<KbsSession>,
    /// The SMBIOS vendor says Azure: its WireServer must hear "Ready" once the workload runs.
    on_azure: bool,
    /// Secrets for the agent's own use (state key, registry credentials), zeroized on drop.
    kept_secrets: Vec<secrets::Kept>,
    /// Whether the secrets tmpfs exists (the workload gets it read-only).
    secrets_mounted: bool,
    /// Whether the state volume is mounted at [`state::STATE_DIR`].
    state_mounted: bool,
}

/// A workload that is running, with what its end needs.
struct Started {
    running: workload::run::Running,
    restart: RestartPolicy,
    started: Instant,
}

/// How the boot ends: the workload's exit (none without a workload) and its restart policy.
struct Ending {
    exit: Option<workload::run::Exit>,
    restart: Option<RestartPolicy>,
}

/// Install the panic hook for `mode`: a panic is a failed stage like any other, never an exit of
/// PID 1 (which the kernel would turn into "Attempted to kill init").
fn install_panic_hook(sink: Arc<Sink>, mode: Mode) {
    std::panic::set_hook(Box::new(move |info| {
        let stage = logging::current_stage().map_or("agent", Stage::name);
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown payload".to_string());
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        logging::error_line(&sink, &format!("{stage}: panic: {msg} (at {at})"));
        stop_without_pid1(mode)
    }));
}

/// The end of a boot when the signal machinery may not exist (early failures, panics).
fn stop_without_pid1(mode: Mode) -> ! {
    match mode {
        Mode::Production => pid1::power_off(),
        Mode::Debug => pid1::halt_forever(),
    }
}

/// PID 1's entry point. Never returns.
pub fn main() -> ! {
    boot::set_umask();
    let early_started = Instant::now();
    let mounts = boot::mount_api_filesystems();
    // Best effort: the initramfs's /dev/console usually gave us fds 0-2 already.
    let _ = boot::attach_console();
    let sink = Arc::new(Sink::new());
    logging::install(sink.clone());
    // Until the command line says otherwise, everything is production: fail closed.
    install_panic_hook(sink.clone(), Mode::Production);
    let early = logging::stage_span(Stage::Early);
    let report = match mounts {
        Ok(r) => r,
        Err(e) => {
            logging::error_line(&sink, &StageError::new(Stage::Early, e).to_string());
            pid1::power_off()
        }
    };
    let pid1 = match Pid1::init() {
        Ok(p) => p,
        Err(e) => {
            logging::error_line(&sink, &StageError::new(Stage::Early, e).to_string());
            pid1::power_off()
        }
    };
    early.in_scope(|| {
        info!(
            "cvm-agent {} as PID 1; mounted {}{}",
            env!("CARGO_PKG_VERSION"),
            report.mounted.join(" "),
            if report.deferred.is_empty() {
                String::new()
            } else {
                format!("; deferred {}", report.deferred.join(" "))
            }
        )
    });
    let mut agent = Agent {
        sink,
        pid1,
        mode: Mode::Production,
        cmdline: Cmdline::default(),
        times: StageTimes::default(),
        modules: None,
        os_release: None,
        tpm: None,
        measurer: None,
        initdata: None,
        tee: None,
        additional_tee: None,
        cloud: None,
        launch: None,
        net: None,
        kbs: None,
        on_azure: false,
        kept_secrets: Vec::new(),
        secrets_mounted: false,
        state_mounted: false,
    };
    agent
        .times
        .record(Stage::Early, early_started.elapsed().as_millis() as u64);
    agent.run()
}

impl Agent {
    fn run(mut self) -> ! {
        self.stage(Stage::Cmdline, |a| a.cmdline_stage());
        self.stage(Stage::Modules, |a| a.modules_stage());
        self.stage(Stage::Verity, |a| a.verity_stage());
        self.stage(Stage::Tpm, |a| a.tpm_stage());
        self.stage(Stage::Measure, |a| a.measure_stage());
        self.stage(Stage::Network, |a| a.network_stage());
        self.stage(Stage::Attest, |a| a.attest_stage());
        self.stage(Stage::Secrets, |a| a.secrets_stage());
        self.stage(Stage::State, |a| a.state_stage());
        let ending = match self.stage(Stage::Workload, |a| a.workload_stage()) {
            None => Ending {
                exit: None,
                restart: None,
            },
            Some(started) => self.wait_workload(started),
        };
        self.finish(ending)
    }

    /// Run one stage: honour pending power-off requests first, time it, end the boot on error.
    fn stage<T>(&mut self, stage: Stage, f: impl FnOnce(&mut Self) -> Result<T, StageError>) -> T {
        if let Some(Request::PowerOff(sig)) = self.pid1.poll() {
            logging::stage_span(stage)
                .in_scope(|| info!("{sig} received before this stage: powering off"));
            pid1::power_off();
        }
        let span = logging::stage_span(stage);
        let _entered = span.enter();
        if self.cmdline.test_panic == Some(stage) {
            panic!("{}", AgentError::TestPanic(stage));
        }
        let started = Instant::now();
        let out = f(self);
        self.times
            .record(stage, started.elapsed().as_millis() as u64);
        match out {
            Ok(v) => v,
            Err(e) => self.fatal(e),
        }
    }

    fn cmdline_stage(&mut self) -> Result<(), StageError> {
        let raw = std::fs::read("/proc/cmdline")
            .map_err(|source| AgentError::Read {
                path: "/proc/cmdline",
                source,
            })
            .in_stage(Stage::Cmdline)?;
        let cmdline = cmdline::parse_bytes(&raw).in_stage(Stage::Cmdline)?;
        self.mode = cmdline.mode;
        self.sink
            .set_debug_console(cmdline.log_level == cmdline::LogLevel::Debug);
        install_panic_hook(self.sink.clone(), self.mode);
        info!(
            "mode={} roothash={} initdata={:?}",
            cmdline.mode,
            cmdline
                .roothash
                .as_ref()
                .map_or("none".to_string(), |h| h.to_hex()),
            cmdline.initdata
        );
        if cmdline.mode == Mode::Debug {
            warn!("debug mode: the VM stays up after the workload or an error");
        }
        self.cmdline = cmdline;
        // The switch is unknown at this stage's entry, so it fires here, once it is parsed.
        if self.cmdline.test_panic == Some(Stage::Cmdline) {
            panic!("{}", AgentError::TestPanic(Stage::Cmdline));
        }
        Ok(())
    }

    fn modules_stage(&mut self) -> Result<(), StageError> {
        let kver = kmod::running_kernel_version().in_stage(Stage::Modules)?;
        let modules_dir = Path::new("/lib/modules").join(&kver);
        if !modules_dir.join("modules.dep").exists() {
            info!("no module index for kernel {kver}: relying on built-in drivers");
        } else {
            let always = if Path::new(MODULES_LOAD_LIST).exists() {
                kmod::read_module_list(Path::new(MODULES_LOAD_LIST)).in_stage(Stage::Modules)?
            } else {
                Vec::new()
            };
            let mut loader = kmod::Loader::new(Path::new("/"), &kver, kmod::FinitModule)
                .in_stage(Stage::Modules)?;
            let named = loader.load_named(&always).in_stage(Stage::Modules)?;
            let report = loader.coldplug(COLDPLUG_ROUNDS);
            for (name, why) in &report.failed {
                tracing::debug!("coldplug: {name} not loaded ({why})");
            }
            self.modules = Some(loader);
            info!(
                "kernel {kver}: loaded {} listed + {} for present devices ({} rounds){}{}",
                named.len(),
                report.loaded.len(),
                report.rounds,
                if named.is_empty() && report.loaded.is_empty() {
                    ""
                } else {
                    ": "
                },
                named
                    .iter()
                    .chain(report.loaded.iter())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        match boot::mount_configfs().in_stage(Stage::Modules)? {
            boot::Configfs::Mounted => info!("mounted configfs on /sys/kernel/config"),
            boot::Configfs::AlreadyMounted => {}
            boot::Configfs::Unavailable => warn!("no configfs in this kernel (no configfs-tsm)"),
        }
        Ok(())
    }

    fn verity_stage(&mut self) -> Result<(), StageError> {
        let Some(roothash) = self.cmdline.roothash.clone() else {
            if self.mode == Mode::Production {
                return Err(StageError::new(Stage::Verity, AgentError::NoRootHash));
            }
            warn!("!!! debug mode without roothash=: running from the UNVERIFIED initramfs !!!");
            warn!("!!! the mode and the missing root hash are measured; a KBS should refuse !!!");
            return Ok(());
        };
        let started = Instant::now();
        let policy = verity_root::policy(self.mode, &self.cmdline.verity_root_options)
            .in_stage(Stage::Verity)?;
        let (data, hash) = verity_root::partition_specs(
            &roothash,
            self.cmdline.verity_root_data.as_ref(),
            self.cmdline.verity_root_hash.as_ref(),
        )
        .in_stage(Stage::Verity)?;
        self.need_modules(Stage::Verity, &["dm_mod", "dm_verity"])?;
        let root = verity_root::activate(&roothash, &data, &hash, policy, ROOT_DEVICE_WAIT)
            .in_stage(Stage::Verity)?;
        info!(
            "dm-verity {} over {} (data {}, hash {}), {} blocks, on corruption: {:?}",
            root.device.path.display(),
            roothash.to_hex(),
            root.data.name,
            root.hash.name,
            root.superblock.data_blocks(),
            root.policy
        );
        let fstype = verity_root::detect_fs(&root.device.path).in_stage(Stage::Verity)?;
        self.need_modules(Stage::Verity, &[fstype])?;
        verity_root::mount_ro(&root.device.path, fstype, Path::new(SYSROOT))
            .in_stage(Stage::Verity)?;
        let kver = kmod::running_kernel_version().in_stage(Stage::Verity)?;
        let root_has_modules = Path::new(SYSROOT)
            .join("lib/modules")
            .join(&kver)
            .join("modules.dep")
            .exists();
        if !root_has_modules
            && Path::new(MODULES_LATE_LIST).exists()
            && let Some(loader) = self.modules.as_mut()
        {
            // The initramfs and its modules are about to go. Keep what later stages may need
            // in memory rather than loading it now: most boots never need dm-crypt, and its
            // crypto self-tests are slow.
            let late =
                kmod::read_module_list(Path::new(MODULES_LATE_LIST)).in_stage(Stage::Verity)?;
            let kept = loader.keep_in_memory(&late).in_stage(Stage::Verity)?;
            info!(
                "kept {} KiB of modules for later stages: {}",
                kept / 1024,
                late.join(" ")
            );
        }
        let switched =
            crate::switchroot::switch_root(Path::new(SYSROOT)).in_stage(Stage::Verity)?;
        if root_has_modules {
            self.modules = Some(
                kmod::Loader::new(Path::new("/"), &kver, kmod::FinitModule)
                    .in_stage(Stage::Verity)?,
            );
        }
        let os = crate::measure::osrelease::read(Path::new("/"));
        info!(
            "switched to the verified root ({fstype}) in {} ms; freed {} KiB of initramfs ({} files)",
            started.elapsed().as_millis(),
            switched.freed / 1024,
            switched.files
        );
        info!(
            "image IMAGE_ID={} IMAGE_VERSION={}",
            os.image_id.as_deref().unwrap_or("(unset)"),
            os.image_version.as_deref().unwrap_or("(unset)")
        );
        self.os_release = Some(os);
        Ok(())
    }

    /// Load modules a stage needs on demand; without a module index (all built in) there is
    /// nothing to load and the kernel will say so when the feature is used.
    fn need_modules(&mut self, stage: Stage, names: &[&str]) -> Result<(), StageError> {
        if let Some(loader) = self.modules.as_mut() {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let loaded = loader.load_named(&names).in_stage(stage)?;
            if !loaded.is_empty() {
                info!("loaded {}", loaded.join(" "));
            }
        }
        Ok(())
    }

    fn tpm_stage(&mut self) -> Result<(), StageError> {
        let dev = Path::new(TPM_DEVICE);
        if let Err(e) = kmod::wait_for_paths(&[dev], TPM_WAIT) {
            if self.mode == Mode::Debug {
                warn!("no TPM at {TPM_DEVICE} ({e}); debug mode carries on without measurements");
                return Ok(());
            }
            return Err(StageError::new(Stage::Tpm, AgentError::NoTpm(e)));
        }
        let mut tpm = Tpm::open(dev).in_stage(Stage::Tpm)?;
        let banks = tpm.pcr_banks().in_stage(Stage::Tpm)?;
        let active: Vec<String> = banks
            .iter()
            .filter(|b| b.is_active())
            .map(|b| format!("{}({})", b.alg.name(), b.pcrs.len()))
            .collect();
        if !banks
            .iter()
            .any(|b| b.alg == HashAlg::Sha256 && b.is_active())
        {
            return Err(StageError::new(
                Stage::Tpm,
                AgentError::NoSha256Bank(active.join(" ")),
            ));
        }
        let pcrs = tpm
            .pcr_read(HashAlg::Sha256, &[8, 11, 12, 15])
            .in_stage(Stage::Tpm)?;
        info!("active PCR banks: {}", active.join(" "));
        for (index, digest) in &pcrs {
            info!("PCR {index} sha256={}", hex(digest));
        }
        let value = |pcr: u32| {
            pcrs.iter()
                .find(|(i, _)| *i == pcr)
                .map(|(_, d)| d.as_slice())
                .unwrap_or(&[])
        };
        let chain =
            boot_chain::classify(value(boot_chain::PCR_UKI), value(boot_chain::PCR_OVERRIDES))
                .map_err(AgentError::BootChain)
                .in_stage(Stage::Tpm)?;
        if Path::new(boot_chain::FIRMWARE_LOG).exists() {
            info!(
                "booted {chain}; firmware event log at {}",
                boot_chain::FIRMWARE_LOG
            );
        } else {
            info!("booted {chain}; no firmware event log");
        }
        // Judged as production would; debug only warns.
        if let Err(e) = boot_chain::require(&chain, Mode::Production) {
            if self.mode == Mode::Debug {
                warn!("{e}; debug mode carries on");
            } else {
                return Err(StageError::new(Stage::Tpm, AgentError::BootChain(e)));
            }
        }
        let banks: Vec<HashAlg> = banks
            .iter()
            .filter(|b| b.is_active())
            .map(|b| b.alg)
            .collect();
        self.measurer = Some(Measurer::new(&banks).in_stage(Stage::Tpm)?);
        self.tpm = Some(tpm);
        Ok(())
    }

    /// Record one event: log first, then extend every active bank. A failed extend leaves a
    /// log that explains a PCR state the TPM does not have, so it ends the boot.
    fn measure_event(&mut self, stage: Stage, event: Event) -> Result<(), StageError> {
        let measurer = match self.measurer.as_mut() {
            Some(m) => m,
            None => self
                .measurer
                .insert(Measurer::new(&[HashAlg::Sha256]).in_stage(stage)?),
        };
        let pcr = event.pcr();
        let what = format!("{}={}", event.kind().name(), event.value());
        // RTMRs are SHA-384 registers outside the TPM's banks, under the same digest rule;
        // the verifier and `cvmctl measure --tee tdx` replay through the same function.
        let rtmr_digest = crate::measure::rtmr::event_digest(&event);
        let digests = measurer.record(event).in_stage(stage)?;
        if let Some(tpm) = self.tpm.as_mut() {
            tpm.pcr_extend(pcr, &digests).in_stage(stage)?;
        }
        if let Some(rtmr_digest) = rtmr_digest
            && let Some(rtmr2) = crate::measure::rtmr::rtmr2(Path::new("/sys"))
        {
            // The TD's RTMR2 gets the SHA-384 digest of the same event (a TD may have no vTPM
            // at all: then this is where the claims live).
            crate::measure::rtmr::extend(&rtmr2, &rtmr_digest).in_stage(stage)?;
        }
        tracing::debug!("PCR {pcr} += {what}");
        Ok(())
    }

    fn write_measure_log(&self, stage: Stage) -> Result<(), StageError> {
        std::fs::create_dir_all("/run/cvm-agent")
            .map_err(|e| AgentError::MkDir("/run/cvm-agent", e))
            .in_stage(stage)?;
        if let Some(m) = &self.measurer {
            m.write_log(Path::new(MEASURE_LOG)).in_stage(stage)?;
        }
        Ok(())
    }

    /// The PCRs the TPM holds must be exactly what the event log replays to; anything else
    /// means an extend the log cannot explain.
    fn check_pcrs_against_log(&mut self, stage: Stage) -> Result<(), StageError> {
        let (Some(tpm), Some(m)) = (self.tpm.as_mut(), self.measurer.as_ref()) else {
            return Ok(());
        };
        let replayed = m.log().replay(m.banks()).in_stage(stage)?;
        for &alg in m.banks() {
            let read = tpm.pcr_read(alg, &[8, 15]).in_stage(stage)?;
            if let Some((pcr, actual, expected)) = replayed.mismatch(alg, &read) {
                return Err(StageError::new(
                    stage,
                    AgentError::LogMismatch {
                        pcr,
                        bank: alg.name(),
                        actual: hex(&actual),
                        expected: hex(&expected),
                    },
                ));
            }
            if alg == HashAlg::Sha256 {
                for (pcr, value) in &read {
                    info!("PCR {pcr} sha256={}", hex(value));
                }
            }
        }
        Ok(())
    }

    /// The init-data for a cloud source: the network first (DHCP: on a cloud the metadata
    /// service is reached through the NIC's lease), then one document from the metadata
    /// service, bounded and decoded. `None` when the service has none and `auto` allows that
    /// (the image's own file is then used, if it has one).
    fn initdata_from_cloud(
        &mut self,
        cloud: initdata::cloud::Cloud,
        required: bool,
    ) -> Result<Option<Vec<u8>>, StageError> {
        let name = cloud.name();
        let up = net::bring_up(&net::NetConfig::Dhcp, None, NETWORK_DEADLINE)
            .map_err(|e| AgentError::CloudNetwork(name, e))
            .in_stage(Stage::Measure)?;
        if let Some(up) = &up {
            info!(
                "network up for the {name} metadata service: {}",
                describe_net(up)
            );
        }
        self.net = up;
        let fetched =
            crate::cloud::fetch_initdata(cloud, crate::cloud::imds::METADATA, METADATA_DEADLINE)
                .map_err(|e| AgentError::CloudFetch(name, e))
                .in_stage(Stage::Measure)?;
        let (what, raw) = match fetched.served {
            crate::cloud::Served::Document(served) => {
                let raw = cloud.decode(&served).in_stage(Stage::Measure)?;
                (format!("{} bytes served", served.len()), Some(raw))
            }
            crate::cloud::Served::NotConfigured(why) if required => {
                return Err(StageError::new(
                    Stage::Measure,
                    AgentError::NoCloudInitData { cloud: name, why },
                ));
            }
            crate::cloud::Served::NotConfigured(why) => {
                let image = initdata::cloud::image_file(Path::new("/")).in_stage(Stage::Measure)?;
                let then = match image {
                    Some(_) => format!("using the image's {}", initdata::IMAGE_PATH),
                    None => "no init-data".to_string(),
                };
                (format!("none ({why}); {then}"), image)
            }
        };
        info!(
            "{name} metadata: {} from {} in {} ms ({} requests)",
            what,
            fetched.url,
            fetched.elapsed.as_millis(),
            fetched.requests
        );
        Ok(raw)
    }

    fn measure_stage(&mut self) -> Result<(), StageError> {
        match initdata::cloud::sys_vendor(Path::new("/")) {
            Ok(vendor) => {
                self.on_azure = vendor
                    .as_deref()
                    .and_then(initdata::cloud::Cloud::from_sys_vendor)
                    == Some(initdata::cloud::Cloud::Azure);
            }
            Err(e) => warn!("{e}: not treated as any cloud"),
        }
        // Read once: whatever comes back here is what is parsed and measured; nothing is
        // fetched again, whatever it holds.
        let plan = initdata::cloud::plan(&self.cmdline.initdata, Path::new("/"))
            .in_stage(Stage::Measure)?;
        let raw = match plan {
            initdata::cloud::Plan::Local(raw) => Some(raw),
            initdata::cloud::Plan::None => None,
            initdata::cloud::Plan::Cloud { cloud, required } => {
                self.initdata_from_cloud(cloud, required)?
            }
        };
        if let Some(raw) = raw {
            let parsed = InitData::parse(&raw).in_stage(Stage::Measure)?;
            // launch.toml is validated now, before anything is measured or fetched for it.
            let launch = parsed.launch().in_stage(Stage::Measure)?;
            if self.net.is_some()
                && let Some(mode) = launch
                    .as_ref()
                    .and_then(|l| l.network.as_ref())
                    .map(|n| n.mode)
                    .filter(|m| *m != NetworkMode::Dhcp)
            {
                let name = match mode {
                    NetworkMode::Static => "static",
                    _ => "none",
                };
                return Err(StageError::new(
                    Stage::Measure,
                    AgentError::CloudNetworkMode(name),
                ));
            }
            // What may travel in the clear depends on the mode: checked before any network.
            if let Some(l) = &launch {
                for w in l.check_for_mode(self.mode).in_stage(Stage::Measure)? {
                    warn!("{w}");
                }
            }
            info!(
                "init-data from {:?}: {} bytes, {} digest {}, documents: {}{}",
                self.cmdline.initdata,
                raw.len(),
                parsed.algorithm(),
                hex(&parsed.digest()),
                parsed
                    .documents()
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" "),
                if launch.is_some() {
                    ""
                } else {
                    " (no launch.toml)"
                }
            );
            self.initdata = Some(parsed);
            self.launch = launch;
        } else {
            warn!(
                "no init-data ({:?}): PCR 8 stays unbound",
                self.cmdline.initdata
            );
        }
        if self.tpm.is_none() {
            warn!("no TPM: events are logged but not extended");
        }
        let platform = evidence::detect_platform(Path::new("/"), self.tpm.as_mut());
        match (platform.kind, platform.additional) {
            (Some(kind), Some(add)) => info!(
                "TEE {} with {} as additional evidence ({})",
                kind.as_str(),
                add.as_str(),
                platform.reason
            ),
            (Some(kind), None) => info!("TEE {} ({})", kind.as_str(), platform.reason),
            (None, _) => warn!("no TEE: {}", platform.reason),
        }
        self.tee = platform.kind;
        self.additional_tee = platform.additional;
        self.cloud = platform.cloud;
        if let Some(kind) = platform.kind
            && let Some(register) = crate::tee::binding::register(kind)
        {
            // Any report data will do: only the launch-time register is read.
            let report = crate::tee::tsm::tsm_report(&[0; 64]).in_stage(Stage::Measure)?;
            crate::tee::binding::check(kind, &report.outblob, self.initdata.as_ref())
                .in_stage(Stage::Measure)?;
            info!(
                "{register} {}",
                if self.initdata.is_some() {
                    "matches the init-data digest"
                } else {
                    "is all zeros (no init-data)"
                }
            );
        } else if let Some(add) = platform.additional
            && let Some(register) = crate::tee::binding::register(add)
        {
            let report = crate::tee::tsm::tsm_report(&[0; 64]).in_stage(Stage::Measure)?;
            let state =
                crate::tee::binding::check_additional(add, &report.outblob, self.initdata.as_ref())
                    .in_stage(Stage::Measure)?;
            info!(
                "{register} {}",
                match state {
                    crate::tee::binding::RegisterState::Unset =>
                        "is all zeros (the launch named no init-data; PCR 8 binds it)",
                    crate::tee::binding::RegisterState::Matches => "matches the init-data digest",
                }
            );
        }
        self.measure_event(Stage::Measure, Event::mode(self.mode))?;
        if let Some(hash) = self.cmdline.roothash.clone() {
            self.measure_event(
                Stage::Measure,
                Event::roothash(&hash.to_hex()).in_stage(Stage::Measure)?,
            )?;
        }
        if let Some(version) = self
            .os_release
            .as_ref()
            .and_then(|o| o.image_version_fact())
        {
            self.measure_event(
                Stage::Measure,
                Event::image_version(&version).in_stage(Stage::Measure)?,
            )?;
        }
        if let Some(data) = &self.initdata {
            let event = Event::from_initdata(data);
            self.measure_event(Stage::Measure, event)?;
        }
        self.write_measure_log(Stage::Measure)?;
        self.check_pcrs_against_log(Stage::Measure)?;
        let records = self.measurer.as_ref().map_or(0, |m| m.log().len());
        let stats = self.tpm.as_ref().map(Tpm::stats).unwrap_or_default();
        info!(
            "{records} events measured; log at {MEASURE_LOG}; TPM: {} commands, {} ms waiting on it",
            stats.commands,
            stats.busy.as_millis()
        );
        Ok(())
    }

    /// Stage 6: only when something needs it (a KBS, or an explicit [network] section).
    fn network_stage(&mut self) -> Result<(), StageError> {
        if let Some(up) = &self.net {
            info!(
                "already up (for the metadata service): {}",
                describe_net(up)
            );
            return Ok(());
        }
        let Some(launch) = self.launch.as_ref() else {
            info!("not needed (no launch.toml)");
            return Ok(());
        };
        let registry_image = launch.workload.as_ref().is_some_and(|w| {
            matches!(
                crate::oci::reference::ImageRef::parse(&w.image),
                Ok(crate::oci::reference::ImageRef::Registry(_))
            )
        });
        if launch.kbs.is_none() && launch.network.is_none() && !registry_image {
            info!("not needed (no KBS, no registry image and no [network] in launch.toml)");
            return Ok(());
        }
        let v4 = |ip: std::net::IpAddr| match ip {
            std::net::IpAddr::V4(v4) => Ok(v4),
            std::net::IpAddr::V6(_) => Err(StageError::new(
                Stage::Network,
                AgentError::NetworkConfig("IPv6 addresses are not supported yet"),
            )),
        };
        let config = match &launch.network {
            None => net::NetConfig::Dhcp,
            Some(n) => match n.mode {
                NetworkMode::Dhcp => net::NetConfig::Dhcp,
                NetworkMode::None => net::NetConfig::None,
                NetworkMode::Static => {
                    let (address, prefix) = n.address.ok_or_else(|| {
                        StageError::new(
                            Stage::Network,
                            AgentError::NetworkConfig("static mode needs an address"),
                        )
                    })?;
                    net::NetConfig::Static {
                        address: v4(address)?,
                        prefix,
                        gateway: n.gateway.map(v4).transpose()?,
                        dns: n.dns.iter().copied().map(v4).collect::<Result<_, _>>()?,
                    }
                }
            },
        };
        let up = net::bring_up(&config, None, NETWORK_DEADLINE).in_stage(Stage::Network)?;
        match &up {
            Some(up) => info!("{}", describe_net(up)),
            None => info!("disabled by launch.toml (mode = \"none\")"),
        }
        self.net = up;
        Ok(())
    }

    /// Stage 7: evidence bound to a fresh TEE key and the KBS's nonce → a token.
    fn attest_stage(&mut self) -> Result<(), StageError> {
        let Some(kbs) = self.launch.as_ref().and_then(|l| l.kbs.clone()) else {
            info!("not needed (no [kbs] in launch.toml)");
            return Ok(());
        };
        let kind = self
            .tee
            .ok_or_else(|| StageError::new(Stage::Attest, AgentError::NoTee))?;
        let started = Instant::now();
        let key = TeeKeyPair::generate(kbs.tee_key).in_stage(Stage::Attest)?;
        let jwk = key.public_jwk();
        let dns = self.net.as_ref().map(|n| n.dns.clone()).unwrap_or_default();
        let mut client = KbsClient::new(&kbs, &dns).in_stage(Stage::Attest)?;
        let initdata_toml = self
            .initdata
            .as_ref()
            .map(|d| std::str::from_utf8(d.raw()).map(str::to_owned))
            .transpose()
            .map_err(|_| StageError::new(Stage::Attest, AgentError::InitDataNotText))?;
        let additional = self.additional_tee;
        let gcp_ak = self.cloud == Some(crate::tee::detect::Cloud::Google);
        let mut tpm = self.tpm.as_mut();
        let log = self.measurer.as_ref().map(Measurer::log);
        let mut evidence_ms = 0;
        let mut azure_host = crate::cloud::azure::HostServices {
            base: crate::cloud::imds::METADATA,
            deadline: AZURE_HOST_DEADLINE,
        };
        let token = client
            .attest(kind.kbs_tee(), |challenge| {
                let t = Instant::now();
                let hash = protocol::hash_algorithm(challenge).map_err(AttestError::Kbs)?;
                let composite = evidence::collect_composite(
                    kind,
                    additional,
                    Path::new("/"),
                    tpm.as_deref_mut(),
                    &challenge.nonce,
                    &jwk,
                    hash,
                    log,
                    &mut evidence::CloudInputs {
                        gcp_ak,
                        // Azure's VCEK and TD quote, from its host services over the network
                        // the KBS is reached through.
                        azure: Some(&mut azure_host),
                    },
                )
                .map_err(AttestError::Evidence)?;
                let digest = &composite.digest;
                // Public values (a hash of the nonce and the public TEE key), logged so that a
                // refusal can be compared with what the KBS expected.
                if let Ok(bound) = evidence::report_data_for(kind, digest) {
                    info!(
                        "runtime data {}: {}; {} report data ({} bytes): {}",
                        hash.name(),
                        crate::hex::encode(digest),
                        kind.as_str(),
                        bound.len(),
                        crate::hex::encode(&bound)
                    );
                }
                if let (Some(add), Some(d)) = (additional, &composite.device_digest) {
                    info!(
                        "additional {} evidence bound to {} of {{nonce, tee-pubkey}}: {}",
                        add.as_str(),
                        hash.name(),
                        crate::hex::encode(d)
                    );
                }
                evidence_ms += t.elapsed().as_millis();
                Ok::<_, AttestError>(protocol::composite_attestation(
                    &challenge.nonce,
                    &jwk,
                    composite.primary,
                    &composite.additional,
                    initdata_toml.as_deref(),
                ))
            })
            .in_stage(Stage::Attest)?;
        info!(
            "attested ({}) to {} in {} ms: {} HTTP round trips, evidence {} ms, token {} bytes",
            kind.as_str(),
            kbs.url,
            started.elapsed().as_millis(),
            client.round_trips,
            evidence_ms,
            token.len()
        );
        self.kbs = Some(KbsSession { client, key });
        Ok(())
    }

    /// Stage 8: each listed resource, decrypted with this boot's TEE key, to a 0400 file on the
    /// secrets tmpfs or kept in memory for the agent's own use.
    fn secrets_stage(&mut self) -> Result<(), StageError> {
        let list = self
            .launch
            .as_ref()
            .map(|l| l.secrets.clone())
            .unwrap_or_default();
        if list.is_empty() {
            info!("none requested");
            return Ok(());
        }
        let session = self
            .kbs
            .as_mut()
            .ok_or_else(|| StageError::new(Stage::Secrets, SecretsError::NoSession))?;
        let started = Instant::now();
        if list
            .iter()
            .any(|s| matches!(s.target, SecretTarget::File(_)))
        {
            secrets::mount_tmpfs(Path::new(SECRETS_DIR)).in_stage(Stage::Secrets)?;
            self.secrets_mounted = true;
        }
        let rounds_before = session.client.round_trips;
        for secret in &list {
            let body = session
                .client
                .resource(&secret.uri)
                .map_err(|source| {
                    SecretsError::fetch(&secret.name, &secret.uri.to_string(), source)
                })
                .in_stage(Stage::Secrets)?;
            let value = jwe::decrypt(&session.key, &body)
                .map_err(|source| SecretsError::Decrypt {
                    name: secret.name.clone(),
                    uri: secret.uri.to_string(),
                    source,
                })
                .in_stage(Stage::Secrets)?;
            if value.is_empty() {
                return Err(StageError::new(
                    Stage::Secrets,
                    SecretsError::Empty {
                        name: secret.name.clone(),
                    },
                ));
            }
            match &secret.target {
                SecretTarget::File(path) => {
                    let written = secrets::write_file(Path::new("/"), path, &value)
                        .in_stage(Stage::Secrets)?;
                    info!(
                        "{}: {} bytes, written to {path} ({})",
                        secrets::describe(secret),
                        value.len(),
                        secrets::file_facts(&written)
                    );
                }
                SecretTarget::Use(usage) => {
                    info!(
                        "{}: {} bytes, kept in memory as the {}",
                        secrets::describe(secret),
                        value.len(),
                        usage.name()
                    );
                    self.kept_secrets.push(secrets::Kept {
                        usage: *usage,
                        name: secret.name.clone(),
                        value,
                    });
                }
            }
        }
        info!(
            "{} secrets in {} ms ({} HTTP round trips)",
            list.len(),
            started.elapsed().as_millis(),
            session.client.round_trips - rounds_before
        );
        Ok(())
    }

    /// Stage 9: the LUKS2 state disk, opened with the key from the KBS (formatted first when it
    /// is blank), ext4 inside, mounted at the state directory; its LUKS UUID is measured.
    fn state_stage(&mut self) -> Result<(), StageError> {
        let Some(config) = self.launch.as_ref().and_then(|l| l.state.clone()) else {
            info!("not needed (no [state] in launch.toml)");
            return Ok(());
        };
        let at = self
            .kept_secrets
            .iter()
            .position(|k| k.usage == SecretUse::StateKey)
            .ok_or_else(|| StageError::new(Stage::State, AgentError::NoStateKey))?;
        // Taken out: once the volume is open the key is not needed again (dropping zeroizes).
        let key = self.kept_secrets.remove(at);
        self.need_modules(Stage::State, &["dm_mod", "dm_crypt", "ecb", "xts"])?;
        if config.integrity {
            // hmac and sha256 are built into the kernels we know; modprobe deps bring the rest
            // (async_xor, dm-bufio, …).
            self.need_modules(Stage::State, &["dm_integrity", "authenc"])?;
        }
        let started = Instant::now();
        let device = state::find(
            Path::new("/sys"),
            Path::new("/dev"),
            config.device.as_ref(),
            STATE_DEVICE_WAIT,
        )
        .in_stage(Stage::State)?;
        let unlocked =
            state::unlock(&device, &key.value, config.integrity).in_stage(Stage::State)?;
        drop(key);
        let unlock_ms = started.elapsed().as_millis();
        let activated = state::activate(&unlocked).in_stage(Stage::State)?;
        let open_ms = started.elapsed().as_millis();
        let mapped = activated.mapped;
        let uuid = unlocked.header.uuid().to_string();
        // mkfs only on a volume whose LUKS2 header this boot wrote (activate wipes a fresh
        // dm-integrity device only then, and refuses a zeroed superblock otherwise).
        let formatted = unlocked.formatted;
        drop(unlocked);
        let mut wipe_ms = 0;
        if let Some(w) = &activated.wiped {
            wipe_ms = w.ms;
            info!(
                "dm-integrity initialized: {} MiB written through dm-crypt (no journal) in {} ms",
                w.bytes >> 20,
                w.ms
            );
        }
        if let Some(dif) = &activated.integrity {
            info!(
                "dm-integrity {} ({}) under {}, hmac(sha256) tags, journal mode J",
                dif.path.display(),
                dif.name,
                mapped.path.display()
            );
        }
        let mut mkfs_ms = 0;
        if formatted {
            let t = Instant::now();
            state::mkfs(&mapped.path).in_stage(Stage::State)?;
            mkfs_ms = t.elapsed().as_millis();
        } else if !state::has_ext4(&mapped.path).in_stage(Stage::State)? {
            return Err(StageError::new(
                Stage::State,
                state::StateError::NoFilesystem {
                    path: device.path.clone(),
                },
            ));
        }
        state::mount_volume(&mapped.path).in_stage(Stage::State)?;
        self.state_mounted = true;
        let boots = state::count_boot(Path::new(state::STATE_DIR)).in_stage(Stage::State)?;
        self.measure_event(
            Stage::State,
            Event::state_disk(&format!("luks2:{uuid}")).in_stage(Stage::State)?,
        )?;
        self.write_measure_log(Stage::State)?;
        info!(
            "{} ({} MiB): LUKS2 {uuid}{} {}, unlock {unlock_ms} ms, open {open_ms} ms{}{}, {} → {}; boot {boots} of this volume",
            device.path.display(),
            device.size >> 20,
            if config.integrity {
                " (integrity hmac(sha256))"
            } else {
                ""
            },
            if formatted { "formatted now" } else { "opened" },
            if wipe_ms > 0 {
                format!(", wipe {wipe_ms} ms")
            } else {
                String::new()
            },
            if formatted {
                format!(", mkfs.ext4 {mkfs_ms} ms")
            } else {
                String::new()
            },
            mapped.path.display(),
            state::STATE_DIR
        );
        Ok(())
    }

    /// The launch separator: after it nothing is extended into PCR 15, so a verifier rejects
    /// any later record and a workload cannot forge pre-launch claims.
    fn seal_measurements(&mut self, stage: Stage) -> Result<(), StageError> {
        if self.measurer.as_ref().is_some_and(Measurer::is_sealed) {
            return Ok(());
        }
        self.measure_event(stage, Event::separator())?;
        self.write_measure_log(stage)?;
        self.check_pcrs_against_log(stage)?;
        info!("launch separator extended; measurements sealed");
        // The parser already refuses the hook in production; checked again where it acts.
        if let Some(nonce) = self.cmdline.test_quote.clone()
            && self.cmdline.mode == crate::cmdline::Mode::Debug
        {
            self.print_test_evidence(stage, &nonce)?;
        }
        Ok(())
    }

    /// `cvm.test_quote=` (debug only): the evidence the attest stage would send for this value
    /// as the runtime-data digest, printed with the event log so a host test can verify both.
    fn print_test_evidence(&mut self, stage: Stage, nonce: &[u8]) -> Result<(), StageError> {
        use base64::Engine as _;
        let Some(kind) = self.tee else {
            return Ok(());
        };
        let value = evidence::collect(
            kind,
            Path::new("/"),
            self.tpm.as_mut(),
            nonce,
            self.measurer.as_ref().map(Measurer::log),
        )
        .in_stage(stage)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let line = serde_json::json!({
            "tee": kind.as_str(),
            "evidence": value,
            "eventlog": self
                .measurer
                .as_ref()
                .map(|m| b64.encode(m.log().to_json_seq())),
        });
        self.sink
            .line(6, &format!("cvm-agent: test-evidence {line}"), true);
        Ok(())
    }

    /// Stage 10: the image unpacked, the launch policy applied, everything measured and sealed,
    /// then the container started. `None` without a `[workload]`.
    fn workload_stage(&mut self) -> Result<Option<Started>, StageError> {
        let Some(config) = self.launch.as_ref().and_then(|l| l.workload.clone()) else {
            info!("not needed (no [workload] in launch.toml)");
            return Ok(None);
        };
        let started = Instant::now();
        let reference =
            crate::oci::reference::ImageRef::parse(&config.image).in_stage(Stage::Workload)?;
        let state_dir = self.state_mounted.then(|| Path::new(state::STATE_DIR));
        let root = workload::image::prepare_root(state_dir).in_stage(Stage::Workload)?;
        let auth = self
            .kept_secrets
            .iter()
            .position(|k| k.usage == SecretUse::RegistryAuth)
            .map(|at| self.kept_secrets.remove(at));
        let dns = self.net.as_ref().map(|n| n.dns.clone()).unwrap_or_default();
        let transport = workload::image::Transport {
            settings: &config.registry,
            dns: &dns,
            auth_json: auth.as_ref().map(|k| &k.value[..]),
        };
        let pulled = workload::image::pull(
            &reference,
            &transport,
            &root,
            &crate::oci::unpack::Limits::default(),
        )
        .in_stage(Stage::Workload)?;
        drop(auth);
        let s = &pulled.summary;
        let mib = |b: u64| b as f64 / 1048576.0;
        info!(
            "{} → {}: {} layer(s), {:.1} MiB of files ({} entries) from {:.1} MiB of blobs in {} ms ({:.1} MiB/s of files){}",
            pulled.image.source,
            pulled.image.digest,
            s.layers,
            mib(s.bytes),
            s.entries,
            mib(s.blob_bytes),
            s.ms,
            mib(s.bytes) / (s.ms.max(1) as f64 / 1000.0),
            pulled
                .round_trips
                .map(|n| format!(", {n} HTTP round trips"))
                .unwrap_or_default()
        );
        let state_mount = self
            .launch
            .as_ref()
            .and_then(|l| l.state.as_ref())
            .map(|s| s.mount.clone());
        let plan = workload::policy::plan(
            &workload::policy::image_config(&pulled.image.config),
            &config,
            state_mount.as_deref(),
            self.mode,
        )
        .in_stage(Stage::Workload)?;
        for v in &plan.debug_violations {
            warn!("debug mode: allowing {v}");
        }
        for event in [
            Event::workload_image(&config.image),
            Event::workload_digest(&pulled.image.digest.to_string()),
            Ok(Event::restart_policy(plan.restart)),
            Event::args(&plan.args),
            Event::env(&plan.env),
            Event::overrides(&plan.overrides),
        ] {
            let event = event.in_stage(Stage::Workload)?;
            self.measure_event(Stage::Workload, event)?;
        }
        self.seal_measurements(Stage::Workload)?;

        let state_data = match self.state_mounted {
            true => {
                let dir = Path::new(state::STATE_DIR).join("data");
                std::fs::create_dir_all(&dir)
                    .map_err(|e| AgentError::MkDir("the state volume's data directory", e))
                    .in_stage(Stage::Workload)?;
                Some(dir)
            }
            false => None,
        };
        let who =
            workload::spec::identity(plan.user.as_deref(), &root).in_stage(Stage::Workload)?;
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = workload::spec::memory_limit(
            config.memory_mib,
            workload::spec::mem_total(&meminfo).unwrap_or(0),
        );
        let measure_log = Path::new(MEASURE_LOG);
        let spec = workload::spec::build(
            &plan,
            &workload::spec::HostPaths {
                rootfs: &root,
                secrets: self.secrets_mounted.then(|| Path::new(SECRETS_DIR)),
                measure_log: measure_log.exists().then_some(measure_log),
                state_data: state_data.as_deref(),
            },
            who,
            memory,
        );
        info!(
            "launching {:?} as {}:{}, memory.max {} MiB, log to console: {}",
            plan.args,
            who.uid,
            who.gid,
            memory >> 20,
            if plan.log_redirect {
                "yes"
            } else {
                "no (discarded)"
            }
        );
        let running = workload::run::start(Path::new(BUNDLE_DIR), &spec, plan.log_redirect)
            .in_stage(Stage::Workload)?;
        info!(
            "started pid {} in {} ms (since the state stage ended: image, policy, measurements, container)",
            running.pid,
            started.elapsed().as_millis()
        );
        if self.on_azure {
            self.report_ready_to_azure();
        }
        Ok(Some(Started {
            running,
            restart: plan.restart,
            started: Instant::now(),
        }))
    }

    /// Azure reboots a VM whose provisioning never reports Ready. A failure is a warning, not
    /// a stop: nothing is trusted from the WireServer (its identifiers only go back to it), and
    /// the only cost of not reporting is the reboot Azure then does.
    fn report_ready_to_azure(&self) {
        if self.net.is_none() {
            warn!(
                "on Azure without a network: Ready is not reported to the WireServer (Azure will reboot this VM)"
            );
            return;
        }
        let t = Instant::now();
        match crate::cloud::wireserver::report_ready(
            crate::cloud::imds::WIRESERVER,
            REPORT_READY_DEADLINE,
        ) {
            Ok(goal) => info!(
                "reported Ready to the Azure WireServer (incarnation {}, container {}, instance {}) in {} ms",
                goal.incarnation,
                goal.container_id,
                goal.instance_id,
                t.elapsed().as_millis()
            ),
            Err(e) => warn!(
                "reporting Ready to the Azure WireServer failed ({}); Azure will reboot this VM",
                crate::stage::error_chain(&e)
            ),
        }
    }

    /// The workload runs; PID 1 waits for it (reaping everything else). A power-off request
    /// meanwhile stops it: SIGTERM, a grace period, SIGKILL.
    fn wait_workload(&mut self, started: Started) -> Ending {
        let span = logging::stage_span(Stage::Workload);
        let _entered = span.enter();
        let pid = started.running.pid;
        release_free_heap();
        let rss_running = own_memory();
        let status = match self.pid1.wait_for(pid) {
            pid1::ChildEvent::Exited(status) => status,
            pid1::ChildEvent::PowerOff(sig) => {
                info!(
                    "{sig}: stopping the workload (SIGTERM, then SIGKILL after {} s)",
                    STOP_GRACE.as_secs()
                );
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                let deadline = Instant::now() + STOP_GRACE;
                loop {
                    if let Some(r) = self.pid1.reap().into_iter().find(|r| r.pid == pid) {
                        break r.status;
                    }
                    if Instant::now() > deadline {
                        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        let ran = started.started.elapsed();
        let lines = started.running.finish();
        let exit = workload::run::Exit::from_status(status);
        let (rss, peak, anon, file) = rss_running;
        info!(
            "agent memory while the workload ran: RSS {:.1} MiB (anonymous {:.1}, file {:.1}; peak since boot {:.1} MiB)",
            rss as f64 / 1024.0,
            anon as f64 / 1024.0,
            file as f64 / 1024.0,
            peak as f64 / 1024.0
        );
        info!(
            "workload exited: {} after {} ms ({lines} console lines)",
            match exit {
                Some(workload::run::Exit::Code(c)) => format!("exit code {c}"),
                Some(workload::run::Exit::Signal(s)) => format!("killed by {s}"),
                None => format!("{status:?}"),
            },
            ran.as_millis()
        );
        Ending {
            exit,
            restart: Some(started.restart),
        }
    }

    /// The end of a successful boot: the result line, then what the restart policy and the mode
    /// say — reboot (measurements start over), power-off, or (debug) stay up with a shell.
    fn finish(mut self, ending: Ending) -> ! {
        let span = logging::stage_span(Stage::End);
        let _entered = span.enter();
        if let Err(e) = self.seal_measurements(Stage::End) {
            self.fatal(e);
        }
        // Nothing after this point needs them; dropping zeroizes.
        self.kept_secrets.clear();
        self.kbs = None;
        let exit_code = ending.exit.map_or(0, workload::run::Exit::code);
        let reboot = match ending.restart {
            Some(RestartPolicy::Always) => true,
            Some(RestartPolicy::OnFailure) => exit_code != 0,
            Some(RestartPolicy::Never) | None => false,
        };
        let boot_ms = (logging::since_boot() * 1000.0) as u64;
        let mut result = RunResult::new(exit_code, self.mode, self.times.clone(), boot_ms);
        result.restart = ending.restart.map(RestartPolicy::name);
        result.signal = match ending.exit {
            Some(workload::run::Exit::Signal(s)) => Some(s.as_str()),
            _ => None,
        };
        if reboot {
            result.next = "reboot";
        }
        logging::result_line(&self.sink, &result.to_json());
        if reboot {
            info!(
                "restart policy {}: rebooting (the next boot measures everything again)",
                ending.restart.map_or("", RestartPolicy::name)
            );
            pid1::reboot_now();
        }
        self.stop()
    }

    /// The debug root shell on the console, when the root has one.
    fn debug_shell(&self) -> Option<nix::unistd::Pid> {
        match crate::debug_shell::spawn(Path::new("/")) {
            Ok(pid) => {
                warn!("debug shell on the console ({})", crate::debug_shell::SHELL);
                Some(pid)
            }
            Err(e) => {
                warn!("no debug shell: {}", crate::stage::error_chain(&e));
                None
            }
        }
    }

    fn fatal(&mut self, err: StageError) -> ! {
        logging::error_line(&self.sink, &err.to_string());
        self.stop()
    }

    fn stop(&mut self) -> ! {
        match self.mode {
            Mode::Production => {
                info!("powering off");
                pid1::power_off()
            }
            Mode::Debug => {
                warn!("debug mode: staying up (SIGTERM or ctrl-alt-del powers off)");
                let mut shell = self.debug_shell();
                loop {
                    match shell {
                        Some(pid) => match self.pid1.wait_for(pid) {
                            pid1::ChildEvent::PowerOff(sig) => {
                                info!("{sig}: powering off");
                                pid1::power_off();
                            }
                            pid1::ChildEvent::Exited(_) => {
                                // A shell that dies at once must not spin.
                                std::thread::sleep(Duration::from_secs(1));
                                shell = self.debug_shell();
                            }
                        },
                        None => {
                            if let Some(Request::PowerOff(sig)) = self.pid1.wait(None) {
                                info!("{sig}: powering off");
                                pid1::power_off();
                            }
                        }
                    }
                }
            }
        }
    }
}
