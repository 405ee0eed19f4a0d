//! cvmctl: the host side of cvm-agent. It builds the initrd and the verity root, predicts and
//! replays measurements, serves the dev KBS, provisions swtpm's attestation key and runs the
//! benchmarks. Each command is thin over a library crate (`cvm-image`, `cvm-measure`,
//! `cvm-devkbs`, …); none of this code runs in the guest.
#![forbid(unsafe_code)]

use cvmctl::{bench, disk, measure, relay, swtpm, uki};

use clap::{Parser, Subcommand};
use cvm_text::error_chain;
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
    Rootfs(cvm_image::rootfs::RootfsArgs),
    /// Predict the event log and the PCR 8 / PCR 15 values a boot with these facts produces
    /// (JSON on stdout): reference values for a verifier.
    Measure(measure::MeasureArgs),
    /// Replay an event log (JSON-SEQ, as /run/cvm-agent/measure.log) to PCR values (JSON on
    /// stdout); with --pcrs, compare and exit non-zero on a mismatch.
    Replay(measure::ReplayArgs),
    /// The host end of a QEMU guestfwd (`guestfwd=tcp:10.0.2.100:PORT-cmd:cvmctl relay PORT`):
    /// joins the guest connection on stdin/stdout to 127.0.0.1:PORT. Prints nothing.
    Relay {
        /// The port on 127.0.0.1.
        port: u16,
    },
    /// Run the dev KBS (Trustee KBS protocol 0.4.0) for local tests and demos, on a loopback
    /// address only.
    Kbs(cvm_devkbs::KbsArgs),
    /// Provision the AK of a swtpm vTPM (its state directory) before the VM's first boot, as a
    /// cloud provisions its vTPMs; prints the AK's SHA-256 (a KBS policy's trusted_aks entry).
    TpmAk(swtpm::TpmAkArgs),
    /// Make (or reuse) the dev KBS's self-signed TLS key in DIR (kbs-cert.pem, kbs-key.pem, as
    /// `kbs --tls-self-signed DIR` does) and print its pin for launch.toml's `[kbs] pin`: the
    /// init-data, and so the policy, need the pin before the KBS starts.
    KbsTls { dir: PathBuf },
    /// A Unified Kernel Image (systemd 252 stub): kernel, the agent's initrd, os-release and the
    /// measured command line, byte-identical for the same inputs.
    Uki(uki::UkiArgs),
    /// The bootable disk: GPT with an ESP holding the UKI as /EFI/BOOT/BOOTX64.EFI, then the
    /// root and root-verity partitions of a `cvmctl rootfs` image, byte-identical on rebuild
    /// (disk GUID and ESP PARTUUID derived from the UKI and the root hash).
    Disk(disk::DiskArgs),
    /// The LUKS2 state disk, with the same library code as the guest.
    State {
        #[command(subcommand)]
        what: State,
    },
    /// OCI images.
    Image {
        #[command(subcommand)]
        what: Image,
    },
    /// Benchmarks that print figures (no pass/fail).
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
}

#[derive(Subcommand)]
enum State {
    /// Create a LUKS2 header (cryptsetup-compatible) on a disk image or device. Refuses a disk
    /// whose first MiB is not all zeros unless --force.
    Format {
        disk: PathBuf,
        /// The passphrase file (the KBS state key), used byte for byte.
        #[arg(long)]
        key_file: PathBuf,
        /// Keyslot KDF: pbkdf2 (sha256, 1000 iterations) or argon2id (time 4, 32 MiB).
        #[arg(long, default_value = "pbkdf2")]
        pbkdf: String,
        #[arg(long, default_value = "")]
        label: String,
        /// Format even if the disk is not blank.
        #[arg(long)]
        force: bool,
        /// Authenticated encryption, as `cryptsetup luksFormat --integrity hmac-sha256`
        /// (launch.toml `[state] integrity = true`). The dm-integrity superblock stays zero,
        /// and the guest initializes it only under a header it wrote itself, so the guest
        /// refuses this disk: for checks with cryptsetup and tests.
        #[arg(long)]
        integrity: bool,
    },
    /// Validate the header and check the key; exit 0 only if both hold.
    Check {
        disk: PathBuf,
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Print the validated header (no key needed, no secret printed).
    Dump { disk: PathBuf },
}

#[derive(Subcommand)]
enum Image {
    /// Write an OCI image layout (oci-layout, index.json, blobs/sha256) from a directory tree,
    /// reproducibly: sorted entries, one owner, mtimes from SOURCE_DATE_EPOCH (or 0). Adds the
    /// manifest to an existing layout under --tag. The manifest digest is the last line of
    /// stdout.
    Build(cvm_image::oci_build::BuildArgs),
}

#[derive(Subcommand)]
enum Bench {
    /// Boot a trivial static init and the cvm-agent initrd several times each and compare.
    Boot(bench::BootBench),
    /// Build a verity root disk from a generated tree, against mkfs.erofs + veritysetup.
    Rootfs(bench::RootfsBench),
    /// LUKS2 format and open of a sparse disk, against cryptsetup doing the same work.
    State(bench::StateBench),
    /// Unpack of an image built by `cvmctl image build`, against `umoci raw unpack`.
    Unpack(bench::UnpackBench),
    /// `cvmctl disk` in each cloud format, against qemu-img and GNU tar converting the raw disk.
    Disk(bench::DiskBench),
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
        Command::Rootfs(args) => cvm_image::rootfs::run(&args)
            .map(|r| println!("{r}"))
            .map_err(|e| error_chain(&e)),
        Command::Measure(args) => measure::measure_command(&args)
            .map(|json| println!("{json}"))
            .map_err(|e| error_chain(&e)),
        Command::Replay(args) => match measure::replay_command(&args) {
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
            return match relay::relay(port) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            };
        }
        Command::Kbs(args) => cvm_devkbs::run(&args).map_err(|e| error_chain(&e)),
        Command::TpmAk(args) => swtpm::run(&args).map_err(|e| error_chain(&e)),
        Command::KbsTls { dir } => cvm_devkbs::tls::self_signed(&dir)
            .map(|(_, _, pin)| println!("{pin}"))
            .map_err(|e| error_chain(&e)),
        Command::Uki(args) => uki::run(&args)
            .map(|r| {
                println!(
                    "{}: {} bytes, sha256 {}, authenticode sha256 {}",
                    args.output.display(),
                    r.size,
                    r.sha256,
                    r.authenticode_sha256
                )
            })
            .map_err(|e| error_chain(&e)),
        Command::Disk(args) => disk::run(&args)
            .map(|r| println!("{r}"))
            .map_err(|e| error_chain(&e)),
        Command::State { what } => state(what),
        Command::Image {
            what: Image::Build(args),
        } => cvm_image::oci_build::run(&args)
            .map(|r| {
                for l in &r.layers {
                    println!(
                        "layer {} {} bytes (diff_id {})",
                        l.digest, l.size, l.diff_id
                    );
                }
                println!("config {}", r.config_digest);
                println!("{}", r.manifest_digest);
            })
            .map_err(|e| error_chain(&e)),
        Command::Bench {
            what: Bench::Boot(args),
        } => bench::boot(&args).map_err(|e| error_chain(&e)),
        Command::Bench {
            what: Bench::Rootfs(args),
        } => bench::rootfs(&args).map_err(|e| error_chain(&e)),
        Command::Bench {
            what: Bench::State(args),
        } => bench::state(&args).map_err(|e| error_chain(&e)),
        Command::Bench {
            what: Bench::Unpack(args),
        } => bench::unpack(&args).map_err(|e| error_chain(&e)),
        Command::Bench {
            what: Bench::Disk(args),
        } => bench::disk(&args).map_err(|e| error_chain(&e)),
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
    use cvm_image::initrd;
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

fn state(what: State) -> Result<(), String> {
    use cvm_disk::luks2;
    use std::fs::OpenOptions;
    let open_disk = |disk: &PathBuf, write: bool| {
        OpenOptions::new()
            .read(true)
            .write(write)
            .open(disk)
            .map_err(|e| format!("cannot open {}: {e}", disk.display()))
    };
    let read_key = |path: &PathBuf| {
        std::fs::read(path)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    match what {
        State::Format {
            disk,
            key_file,
            pbkdf,
            label,
            force,
            integrity,
        } => {
            let kdf = match pbkdf.as_str() {
                "pbkdf2" => luks2::FormatOptions::default().kdf,
                "argon2id" => luks2::Kdf::ARGON2ID_DEFAULT,
                other => return Err(format!("--pbkdf {other}: pbkdf2 or argon2id")),
            };
            let key = read_key(&key_file)?;
            let mut dev = open_disk(&disk, true)?;
            match luks2::probe(&mut dev).map_err(|e| error_chain(&e))? {
                luks2::Kind::Zeroed => {}
                other if force => eprintln!("cvmctl: note: overwriting {other:?} (--force)"),
                other => {
                    return Err(format!(
                        "{} is not blank ({other:?}); use --force to format anyway",
                        disk.display()
                    ));
                }
            }
            let size = std::io::Seek::seek(&mut dev, std::io::SeekFrom::End(0))
                .map_err(|e| format!("cannot size {}: {e}", disk.display()))?;
            let opts = luks2::FormatOptions {
                kdf,
                label,
                integrity,
                ..luks2::FormatOptions::default()
            };
            let h = luks2::format(&mut dev, size, &key, &opts).map_err(|e| error_chain(&e))?;
            dev.sync_all()
                .map_err(|e| format!("cannot sync {}: {e}", disk.display()))?;
            print_header(&h, size);
            Ok(())
        }
        State::Check { disk, key_file } => {
            let key = read_key(&key_file)?;
            let mut dev = open_disk(&disk, false)?;
            let size = std::io::Seek::seek(&mut dev, std::io::SeekFrom::End(0))
                .map_err(|e| format!("cannot size {}: {e}", disk.display()))?;
            let (h, _vk) = luks2::open(&mut dev, &key).map_err(|e| error_chain(&e))?;
            print_header(&h, size);
            println!("key: ok");
            Ok(())
        }
        State::Dump { disk } => {
            let mut dev = open_disk(&disk, false)?;
            let size = std::io::Seek::seek(&mut dev, std::io::SeekFrom::End(0))
                .map_err(|e| format!("cannot size {}: {e}", disk.display()))?;
            let h = luks2::read_header(&mut dev).map_err(|e| error_chain(&e))?;
            print_header(&h, size);
            Ok(())
        }
    }
}

fn print_header(h: &cvm_disk::luks2::Header, device_size: u64) {
    let s = h.segment();
    println!("uuid: {}", h.uuid());
    println!("label: {}", h.label());
    println!("seqid: {}", h.seqid());
    println!("header size: {}", h.hdr_size());
    println!("cipher: {}", s.cipher);
    println!("integrity: {}", s.integrity.as_deref().unwrap_or("none"));
    println!("sector size: {}", s.sector_size);
    println!("data offset: {}", s.offset);
    println!(
        "data size: {}{}",
        s.data_size(device_size),
        if s.size.is_none() { " (dynamic)" } else { "" }
    );
    println!("iv tweak: {}", s.iv_tweak);
    if !h.flags().is_empty() {
        println!("flags: {}", h.flags().join(" "));
    }
    for k in h.keyslots() {
        println!(
            "keyslot {}: {} area {}+{} priority {}",
            k.id, k.kdf, k.area_offset, k.area_size, k.priority
        );
    }
    println!("tokens: {}", h.tokens());
}
