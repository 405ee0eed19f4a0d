//! `cvmctl measure` and `cvmctl replay`: the command-line side of [`cvm_measure::predict`].
//! Predicting a boot and replaying a guest's log go through the agent's own measurement code;
//! this module only reads files and flags and prints JSON. With `--uki`, `cvmctl measure` also
//! predicts what comes before the agent — the firmware's and the stubs' PCRs 4, 9, 11 and 12 —
//! through [`cvm_uki::predict`], and lists those events so that a verifier holding a firmware
//! event log against them can name the first one that differs. `cvm-uki` has its own
//! `HashAlg` (it predicts banks the agent's TPM code need not know); banks cross over by TPM
//! algorithm id.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use cvm_initdata::{InitData, Mode, RestartPolicy, read_bounded};
use cvm_measure::predict::{Facts, PRE_ATTEST, predict, workload_facts};
use cvm_measure::rtmr::{self, RTMR_LEN};
use cvm_measure::{Event, EventLog, MeasureError, Pcrs, bank_from_name, image_version};
use cvm_text::hex;
use cvm_tpm::HashAlg;

fn parse_mode(text: &str) -> Result<Mode, String> {
    match text {
        "production" => Ok(Mode::Production),
        "debug" => Ok(Mode::Debug),
        _ => Err("expected production or debug".into()),
    }
}

fn parse_restart(text: &str) -> Result<RestartPolicy, String> {
    RestartPolicy::from_name(text).ok_or_else(|| "expected Never, OnFailure or Always".into())
}

/// The TEE `cvmctl measure --tee` predicts registers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasureTee {
    /// PCRs only (the default).
    Tpm,
    /// PCRs and RTMR2.
    Tdx,
}

fn parse_tee(text: &str) -> Result<MeasureTee, String> {
    match text {
        "tpm" => Ok(MeasureTee::Tpm),
        "tdx" => Ok(MeasureTee::Tdx),
        "snp" => Err(
            "the agent extends nothing on SNP: its MEASUREMENT covers firmware, kernel, \
                      initrd and command line and comes from the launch (e.g. sev-snp-measure)"
                .into(),
        ),
        _ => Err("expected tpm or tdx".into()),
    }
}

fn parse_rtmr(text: &str) -> Result<[u8; RTMR_LEN], String> {
    hex::decode(&text.to_ascii_lowercase())
        .and_then(|b| <[u8; RTMR_LEN]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| format!("expected {} hex digits", 2 * RTMR_LEN))
}

fn parse_bank(text: &str) -> Result<HashAlg, String> {
    bank_from_name(text).ok_or_else(|| "expected sha1, sha256, sha384 or sha512".into())
}

/// The largest UKI `--uki` reads (as `cvmctl disk`: FAT32 holds less than 4 GiB anyway).
const MAX_UKI: u64 = 1 << 30;

/// How the firmware reaches the UKI: it decides where OVMF's ReadyToBoot events fall in PCR 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BootPathArg {
    /// `\EFI\BOOT\BOOTX64.EFI` from the disk's ESP (`cvmctl disk`), as a cloud boots.
    Disk,
    /// QEMU's `-kernel uki.efi`.
    Kernel,
}

impl BootPathArg {
    fn path(self) -> cvm_uki::BootPath {
        match self {
            BootPathArg::Disk => cvm_uki::BootPath::BootOption,
            BootPathArg::Kernel => cvm_uki::BootPath::QemuKernel,
        }
    }

    fn name(self) -> &'static str {
        match self {
            BootPathArg::Disk => "disk",
            BootPathArg::Kernel => "kernel",
        }
    }
}

/// What `cvmctl measure` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum MeasureCommandError {
    #[error(transparent)]
    Measure(#[from] MeasureError),
    #[error("cannot read the UKI {}", path.display())]
    UkiRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the UKI {} is larger than {MAX_UKI} bytes", path.display())]
    UkiTooLarge { path: PathBuf },
    #[error("cannot predict the boot of the UKI {}", path.display())]
    Predict {
        path: PathBuf,
        #[source]
        source: cvm_uki::predict::PredictError,
    },
    #[error("the boot-chain prediction (--uki) has no {0} bank (sha1, sha256, sha384, sha512)")]
    BootBank(&'static str),
    #[error("internal error: the boot events of banks {0} and {1} differ in order")]
    EventsDiffer(&'static str, &'static str),
}

fn read_uki(path: &Path) -> Result<Vec<u8>, MeasureCommandError> {
    let io = |source| MeasureCommandError::UkiRead {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_UKI + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_UKI {
        return Err(MeasureCommandError::UkiTooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// PCRs 4, 9, 11 and 12 of booting `uki` by `path` in every bank of `banks`, added to `pcrs`,
/// and the events behind them as JSON: `{"path", "uki_sha256", "events": [{"pcr", "type",
/// "type_id", "digests": {bank: hex}, "description"}]}` in log order.
fn predict_boot(
    uki_path: &Path,
    path: BootPathArg,
    banks: &[HashAlg],
    pcrs: &mut Pcrs,
) -> Result<Value, MeasureCommandError> {
    let uki = read_uki(uki_path)?;
    let mut per_bank = Vec::with_capacity(banks.len());
    for &bank in banks {
        let alg = bank
            .computable()
            .ok_or(MeasureCommandError::BootBank(bank.name()))?;
        let p = cvm_uki::boot_pcrs(&uki, alg, path.path()).map_err(|source| {
            MeasureCommandError::Predict {
                path: uki_path.to_path_buf(),
                source,
            }
        })?;
        for n in cvm_uki::predict::PREDICTED_PCRS {
            if let Some(value) = p.get(n) {
                pcrs.insert(bank, n, value.to_vec());
            }
        }
        per_bank.push((bank, p.events));
    }
    let mut events = Vec::new();
    if let Some((first_bank, first)) = per_bank.first() {
        for (i, e) in first.iter().enumerate() {
            let mut digests = serde_json::Map::new();
            for (bank, evs) in &per_bank {
                let same = evs
                    .get(i)
                    .filter(|o| o.pcr == e.pcr && o.event_type == e.event_type && o.what == e.what)
                    .ok_or(MeasureCommandError::EventsDiffer(
                        first_bank.name(),
                        bank.name(),
                    ))?;
                digests.insert(bank.name().into(), hex::encode(&same.digest).into());
            }
            events.push(json!({
                "pcr": e.pcr,
                "type": cvm_uki::eventlog::event_type_name(e.event_type),
                "type_id": e.event_type,
                "digests": digests,
                "description": e.what,
            }));
        }
    }
    use sha2::Digest as _;
    Ok(json!({
        "path": path.name(),
        "uki_sha256": hex::encode(&sha2::Sha256::digest(&uki)),
        "events": events,
    }))
}

fn parse_json_strings(flag: &str, text: &str) -> Result<Vec<String>, MeasureError> {
    serde_json::from_str(text)
        .map_err(|_| MeasureError::Usage(format!("{flag}: expected a JSON array of strings")))
}

/// `cvmctl measure`: predict the event log and PCR values of a boot.
#[derive(clap::Args, Debug, Clone)]
pub struct MeasureArgs {
    /// The init-data TOML file the VM gets (measured into PCR 8).
    #[arg(long)]
    pub initdata: Option<PathBuf>,
    /// The dm-verity root hash (hex) on the kernel command line.
    #[arg(long)]
    pub roothash: Option<String>,
    /// cvm.mode of the boot.
    #[arg(long, default_value = "production", value_parser = parse_mode)]
    pub mode: Mode,
    /// The image identity the agent measures: "<IMAGE_ID> <IMAGE_VERSION>".
    #[arg(long, conflicts_with = "os_release")]
    pub image_version: Option<String>,
    /// The image's os-release file, to take --image-version from.
    #[arg(long)]
    pub os_release: Option<PathBuf>,
    /// The state disk identity the agent measures.
    #[arg(long)]
    pub state_disk: Option<String>,
    /// The workload image reference as configured.
    #[arg(long)]
    pub workload_image: Option<String>,
    /// The manifest digest the workload reference resolves to.
    #[arg(long)]
    pub workload_digest: Option<String>,
    /// The restart policy: Never, OnFailure or Always.
    #[arg(long, value_parser = parse_restart)]
    pub restart: Option<RestartPolicy>,
    /// The final argv, as a JSON array of strings.
    #[arg(long)]
    pub args: Option<String>,
    /// The final environment, as a JSON array of "NAME=value" strings.
    #[arg(long)]
    pub env: Option<String>,
    /// The overrides the agent records.
    #[arg(long)]
    pub overrides: Option<String>,
    /// The verified root's tree on the host: the init-data's `oci:` workload image is resolved
    /// inside it and every workload fact (digest, restart policy, final args and env, overrides)
    /// is predicted with the agent's own launch-policy code.
    #[arg(long, conflicts_with_all = ["workload_image", "workload_digest", "restart", "args", "env", "overrides"])]
    pub image_root: Option<PathBuf>,
    /// PCR banks to predict, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "sha256", value_parser = parse_bank)]
    pub banks: Vec<HashAlg>,
    /// Also predict the TEE's registers: `tdx` adds RTMR2, where the agent extends every
    /// PCR 15 event's SHA-384 digest (RTMR_new = SHA384(RTMR_old ‖ digest)), at the end of the
    /// log and at attestation (mode, roothash, image-version). `tpm` (the default): PCRs only.
    /// SNP has no runtime register: pin its MEASUREMENT from the launch instead.
    #[arg(long, value_parser = parse_tee)]
    pub tee: Option<MeasureTee>,
    /// With --tee tdx: RTMR2 before the agent runs (hex), i.e. the replay of the CCEL's RTMR2
    /// events (boot loader, EFI stub: initrd and command line); default all zeros.
    #[arg(long, value_parser = parse_rtmr)]
    pub rtmr2_start: Option<[u8; RTMR_LEN]>,
    /// The UKI the VM boots (`cvmctl uki`): also predict PCRs 4, 9, 11 and 12 (firmware,
    /// systemd-stub, the kernel's EFI stub) in every bank of --banks, and list their events
    /// under "boot".
    #[arg(long)]
    pub uki: Option<PathBuf>,
    /// How the firmware reaches the UKI: `disk` (`\EFI\BOOT\BOOTX64.EFI` on the ESP of
    /// `cvmctl disk`, as a cloud boots) or `kernel` (QEMU's `-kernel uki.efi`).
    #[arg(long, value_enum, default_value_t = BootPathArg::Disk, requires = "uki")]
    pub boot_path: BootPathArg,
}

/// Runs `cvmctl measure`: the prediction as pretty JSON, plus, with `--initdata`, the values
/// a host sets or a verifier expects for it (`digest`, `host_data`, `mrconfigid`, `pcr8`).
pub fn measure_command(args: &MeasureArgs) -> Result<String, MeasureCommandError> {
    let initdata = args
        .initdata
        .as_deref()
        .map(|path| -> Result<InitData, MeasureError> {
            // Parsed strictly: an init-data the agent would refuse has no prediction.
            Ok(InitData::parse(&read_bounded(path)?)?)
        })
        .transpose()?;
    let image_version = match &args.os_release {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| MeasureError::Io {
                path: path.clone(),
                source,
            })?;
            Some(image_version(&text).ok_or_else(|| {
                MeasureError::Usage(format!(
                    "{}: no usable IMAGE_ID (and IMAGE_VERSION)",
                    path.display()
                ))
            })?)
        }
        None => args.image_version.clone(),
    };
    let mut facts = Facts {
        mode: args.mode,
        roothash: args.roothash.clone(),
        image_version,
        initdata: initdata.as_ref().map(|i| i.raw().to_vec()),
        state_disk: args.state_disk.clone(),
        workload_image: args.workload_image.clone(),
        workload_digest: args.workload_digest.clone(),
        restart_policy: args.restart,
        args: args
            .args
            .as_deref()
            .map(|a| parse_json_strings("--args", a))
            .transpose()?,
        env: args
            .env
            .as_deref()
            .map(|e| parse_json_strings("--env", e))
            .transpose()?,
        overrides: args.overrides.clone(),
    };
    if let Some(root) = &args.image_root {
        workload_facts(initdata.as_ref(), root, args.mode, &mut facts)?;
    }
    let mut prediction = predict(&facts, &args.banks)?;
    let boot = args
        .uki
        .as_deref()
        .map(|uki| predict_boot(uki, args.boot_path, &args.banks, &mut prediction.pcrs))
        .transpose()?;
    let mut out = json!({"pcrs": prediction.pcrs.to_json(), "log": prediction.log.to_json()});
    if let Some(boot) = boot {
        out["boot"] = boot;
    }
    match (args.tee, args.rtmr2_start) {
        (Some(MeasureTee::Tdx), start) => {
            let start = start.unwrap_or([0; RTMR_LEN]);
            let events = facts.events()?;
            let attest: Vec<Event> = events
                .iter()
                .filter(|e| PRE_ATTEST.contains(&e.kind()))
                .cloned()
                .collect();
            out["tdx"] = json!({
                "rtmr2_start": hex::encode(&start),
                "rtmr2_attest": hex::encode(&rtmr::predict_rtmr2(&start, &attest)),
                "rtmr2": hex::encode(&rtmr::predict_rtmr2(&start, &events)),
            });
        }
        (_, Some(_)) => {
            return Err(MeasureError::Usage("--rtmr2-start needs --tee tdx".into()).into());
        }
        _ => {}
    }
    if let Some(initdata) = &initdata {
        out["initdata"] = json!({
            "algorithm": initdata.algorithm().name(),
            "digest": hex::encode(&initdata.digest()),
            "host_data": hex::encode(&initdata.host_data()),
            "mrconfigid": hex::encode(&initdata.mrconfigid()),
            "pcr8": hex::encode(&initdata.pcr8_expected()),
            // Trustee's tpm verifier can only match PCR 8 for sha256 init-data.
            "tpm_binding": initdata.check_tpm_binding().is_ok(),
        });
    }
    Ok(to_pretty(&out)?)
}

fn to_pretty(value: &Value) -> Result<String, MeasureError> {
    serde_json::to_string_pretty(value).map_err(|e| MeasureError::Format(e.to_string()))
}

/// `cvmctl replay`: replay an event log, optionally against expected PCR values.
#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// The event log (JSON-SEQ), e.g. a copy of /run/cvm-agent/measure.log.
    pub log: PathBuf,
    /// Expected PCR values: a JSON file like a prediction's "pcrs" (or a whole prediction).
    #[arg(long)]
    pub pcrs: Option<PathBuf>,
    /// Banks to replay, comma-separated (default: every bank the log has digests for).
    #[arg(long, value_delimiter = ',', value_parser = parse_bank)]
    pub banks: Vec<HashAlg>,
}

/// The replay as pretty JSON, and whether every expected PCR value matched (true when none
/// were given). The caller turns `matches == false` into a failing exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOutcome {
    pub json: String,
    pub matches: bool,
}

/// Expected values are compared entry by entry: a PCR the log never touches is expected to be
/// all zeros, a bank the log has no digests for never matches.
pub fn replay_command(args: &ReplayArgs) -> Result<ReplayOutcome, MeasureError> {
    let log = EventLog::read(&args.log)?;
    let banks = if args.banks.is_empty() {
        log.banks()
    } else {
        args.banks.clone()
    };
    if banks.is_empty() {
        return Err(MeasureError::Format(
            "the log has no records to replay".into(),
        ));
    }
    let pcrs = log.replay(&banks)?;
    let expected = args.pcrs.as_deref().map(read_expected).transpose()?;

    let mut mismatches = Vec::new();
    if let Some(expected) = &expected {
        for (alg, pcr, want) in expected.iter() {
            let zero = vec![0u8; alg.digest_len()];
            let got = if banks.contains(&alg) {
                Some(pcrs.get(alg, pcr).unwrap_or(&zero))
            } else {
                None
            };
            if got != Some(want) {
                mismatches.push(json!({
                    "bank": alg.name(),
                    "pcr": pcr,
                    "expected": hex::encode(want),
                    "actual": got.map(hex::encode),
                }));
            }
        }
    }
    let matches = mismatches.is_empty();
    let out = json!({
        "pcrs": pcrs.to_json(),
        "records": log.len(),
        "separator": log.has_separator(),
        "expected": expected.as_ref().map(Pcrs::to_json),
        "mismatches": mismatches,
        "matches": matches,
    });
    Ok(ReplayOutcome {
        json: to_pretty(&out)?,
        matches,
    })
}

/// A `pcrs` object, or a whole prediction (which has one under "pcrs").
fn read_expected(path: &std::path::Path) -> Result<Pcrs, MeasureError> {
    let io = |source| MeasureError::Io {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read(path).map_err(io)?;
    let value: Value = serde_json::from_slice(&text)
        .map_err(|e| MeasureError::Pcrs(format!("{}: not JSON ({e})", path.display())))?;
    Pcrs::from_json(value.get("pcrs").unwrap_or(&value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha384};

    /// The TDX extend rule written out: SHA384(RTMR ‖ SHA384("<event>:<value>")).
    fn by_hand(start: [u8; 48], preimages: &[String]) -> [u8; 48] {
        let mut rtmr = start;
        for p in preimages {
            let digest = Sha384::digest(p.as_bytes());
            rtmr = Sha384::new()
                .chain_update(rtmr)
                .chain_update(digest)
                .finalize()
                .into();
        }
        rtmr
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        measure: MeasureArgs,
    }

    fn measure(args: &[&str]) -> Result<serde_json::Value, String> {
        use clap::Parser as _;
        let cli = Cli::try_parse_from(std::iter::once("measure").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        let out = measure_command(&cli.measure).map_err(|e| e.to_string())?;
        Ok(serde_json::from_str(&out).unwrap())
    }

    #[test]
    fn cvmctl_measure_tee_tdx() {
        let roothash = "ab".repeat(32);
        let out = measure(&[
            "--roothash",
            &roothash,
            "--image-version",
            "cvm-demo 1",
            "--mode",
            "debug",
            "--tee",
            "tdx",
        ])
        .unwrap();
        let attest = [
            "mode:debug".to_string(),
            format!("roothash:{roothash}"),
            "image-version:cvm-demo 1".into(),
        ];
        let mut all = attest.to_vec();
        all.push("separator:".into());
        let tdx = &out["tdx"];
        assert_eq!(tdx["rtmr2_start"], "00".repeat(48));
        assert_eq!(
            tdx["rtmr2_attest"],
            cvm_text::hex::encode(&by_hand([0; 48], &attest))
        );
        assert_eq!(tdx["rtmr2"], cvm_text::hex::encode(&by_hand([0; 48], &all)));

        let start = "11".repeat(48);
        let out = measure(&["--tee", "tdx", "--rtmr2-start", &start]).unwrap();
        assert_eq!(
            out["tdx"]["rtmr2_attest"],
            cvm_text::hex::encode(&by_hand([0x11; 48], &["mode:production".to_string()]))
        );
        // Without --tee: PCRs only.
        assert!(measure(&[]).unwrap().get("tdx").is_none());
        assert!(measure(&["--rtmr2-start", &start]).is_err());
        assert!(
            measure(&["--tee", "snp"])
                .unwrap_err()
                .contains("sev-snp-measure")
        );
        assert!(measure(&["--tee", "tdx", "--rtmr2-start", "00"]).is_err());
    }
}
