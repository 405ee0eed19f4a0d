//! cvmctl: the host side of cvm-agent — build the initrd, and (as issues land) the verity root,
//! predictions, replay, the dev KBS and benchmarks.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cvmctl", version, about = "Host tool for cvm-agent images")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the initrd (gzip'd newc cpio) reproducibly: the agent as /init, the kernel module
    /// closure, and the files of the spec directory. Mtimes come from SOURCE_DATE_EPOCH (or 0).
    Initrd {
        /// The static cvm-agent binary.
        #[arg(long)]
        agent: PathBuf,
        /// The initrd spec directory (modules.carry, modules.load, files/).
        #[arg(long, default_value = "initrd")]
        spec: PathBuf,
        /// A kernel's lib/modules/<version> directory, depmod'ed.
        #[arg(long)]
        modules: Option<PathBuf>,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Build a dm-verity protected root disk (GPT: erofs/squashfs data + verity hash partition,
    /// DPS types, PARTUUIDs from the root hash) from a directory, reproducibly. The root hash is
    /// the last line of stdout and is written to <output>.roothash.
    Rootfs(cvm_agent::rootfs::RootfsArgs),
    /// Predict the event log and the PCR 8 / PCR 15 values a boot with these facts produces
    /// (JSON on stdout): reference values for a verifier.
    Measure(cvm_agent::measure::predict::MeasureArgs),
    /// Replay an event log (JSON-SEQ, as /run/cvm-agent/measure.log) to PCR values (JSON on
    /// stdout); with --pcrs, compare and exit non-zero on a mismatch.
    Replay(cvm_agent::measure::predict::ReplayArgs),
    /// The host end of a QEMU guestfwd (`guestfwd=tcp:10.0.2.100:PORT-cmd:cvmctl relay PORT`):
    /// joins the guest connection on stdin/stdout to 127.0.0.1:PORT. Prints nothing.
    Relay {
        /// The port on 127.0.0.1.
        port: u16,
    },
    /// Run the dev KBS (Trustee KBS protocol 0.4.0) for local tests and demos, on a loopback
    /// address only.
    Kbs(cvm_agent::devkbs::KbsArgs),
    /// Benchmarks that print figures (no pass/fail).
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Boot a trivial static init and the cvm-agent initrd several times each and compare.
    Boot(cvm_agent::bench::BootBench),
    /// Build a verity root disk from a generated tree, against mkfs.erofs + veritysetup.
    Rootfs(cvm_agent::bench::RootfsBench),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Initrd {
            agent,
            spec,
            modules,
            output,
        } => initrd(agent, spec, modules, output),
        Command::Rootfs(args) => cvm_agent::rootfs::run(&args)
            .map(|r| println!("{r}"))
            .map_err(|e| error_chain(&e)),
        Command::Measure(args) => cvm_agent::measure::predict::measure_command(&args)
            .map(|json| println!("{json}"))
            .map_err(|e| error_chain(&e)),
        Command::Replay(args) => match cvm_agent::measure::predict::replay_command(&args) {
            Ok(outcome) => {
                println!("{}", outcome.json);
                if outcome.matches {
                    Ok(())
                } else {
                    Err("the replayed PCRs do not match the given values".to_string())
                }
            }
            Err(e) => Err(error_chain(&e)),
        },
        Command::Relay { port } => {
            // stdout/stderr are the guest's connection: exit quietly either way.
            return match cvm_agent::relay::relay(port) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            };
        }
        Command::Kbs(args) => cvm_agent::devkbs::run(&args).map_err(|e| error_chain(&e)),
        Command::Bench {
            what: Bench::Boot(args),
        } => cvm_agent::bench::boot(&args).map_err(|e| error_chain(&e)),
        Command::Bench {
            what: Bench::Rootfs(args),
        } => cvm_agent::bench::rootfs(&args).map_err(|e| error_chain(&e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cvmctl: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn initrd(
    agent: PathBuf,
    spec_dir: PathBuf,
    modules_dir: Option<PathBuf>,
    output: PathBuf,
) -> Result<(), String> {
    use cvm_agent::initrd;
    let mtime = initrd::source_date_epoch().map_err(|e| e.to_string())?;
    let spec = initrd::InitrdSpec {
        agent,
        spec_dir,
        modules_dir,
        mtime,
    };
    let report = initrd::build(&spec).map_err(|e| error_chain(&e))?;
    std::fs::write(&output, &report.bytes)
        .map_err(|e| format!("cannot write {}: {e}", output.display()))?;
    if !report.missing_modules.is_empty() {
        eprintln!(
            "cvmctl: note: not in this kernel (skipped): {}",
            report.missing_modules.join(" ")
        );
    }
    println!(
        "{}: {} entries, {} modules{}, {} bytes ({} uncompressed)",
        output.display(),
        report.entries,
        report.modules.len(),
        report
            .kernel_version
            .as_deref()
            .map(|k| format!(" for {k}"))
            .unwrap_or_default(),
        report.bytes.len(),
        report.uncompressed_len
    );
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(&format!(" ({c})"));
        src = c.source();
    }
    s
}
