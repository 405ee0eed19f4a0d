//! `cvmctl bench boot`: boot cost of the agent against a trivial init, measured in one run with
//! the two interleaved so machine noise hits both alike. Prints figures; never fails on them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct BootBench {
    /// Guest kernel.
    #[arg(long, default_value = ".cache/kernel/vmlinuz")]
    pub kernel: PathBuf,
    /// The cvm-agent initrd.
    #[arg(long, default_value = "out/initrd.img")]
    pub initrd: PathBuf,
    /// An initrd whose /init prints a result line and powers off at once.
    #[arg(long, default_value = "out/trivial-initrd.img")]
    pub trivial_initrd: PathBuf,
    /// The verity root disk the agent boots (its root hash is read from `<rootfs>.roothash`).
    #[arg(long, default_value = "out/rootfs.img")]
    pub rootfs: PathBuf,
    /// The static agent binary, for its size.
    #[arg(
        long,
        default_value = "target/x86_64-unknown-linux-gnu/release/cvm-agent"
    )]
    pub agent: PathBuf,
    /// Boots of each kind.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// The boot script.
    #[arg(long, default_value = "qemu/boot.sh")]
    pub boot_script: PathBuf,
}

/// `cvmctl bench rootfs`: the verity root build against the tools run directly.
#[derive(Debug, clap::Args)]
pub struct RootfsBench {
    /// Size of the generated tree in MiB.
    #[arg(long, default_value_t = 100)]
    pub size_mib: u64,
    /// Builds of each kind.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// `cvmctl bench state`: LUKS2 format and open of a sparse disk, ours (the guest's code) against
/// cryptsetup doing the same work (same KDF: PBKDF2-SHA256, 1000 iterations; 4 KiB sectors).
#[derive(clap::Args, Debug, Clone)]
pub struct StateBench {
    /// Disk size in MiB.
    #[arg(long, default_value_t = 1024)]
    pub size_mib: u64,
    /// Rounds of each kind.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

/// `cvmctl bench unpack`: applying an image's layers with the guest's unpacker against
/// `umoci raw unpack` of the same layout (both: layers only, no runtime config).
#[derive(clap::Args, Debug, Clone)]
pub struct UnpackBench {
    /// Size of the generated tree in MiB.
    #[arg(long, default_value_t = 100)]
    pub size_mib: u64,
    /// Unpacks of each kind.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// `cvmctl bench disk`: `cvmctl disk` in each `--format` from the same UKI and root, against
/// the usual tools converting the raw disk (`qemu-img convert -O vpc -o subformat=fixed,force_size`
/// for Azure, `tar --format=oldgnu -Sczf` of a whole-GiB `disk.raw` for GCP).
#[derive(clap::Args, Debug, Clone)]
pub struct DiskBench {
    /// The UKI (`make images` writes out/uki.efi).
    #[arg(long, default_value = "out/uki.efi")]
    pub uki: PathBuf,
    /// The verity root image.
    #[arg(long, default_value = "out/rootfs.img")]
    pub rootfs: PathBuf,
    /// Builds of each kind.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot prepare the benchmark tree")]
    Prepare(#[source] std::io::Error),
    #[error("cvmctl rootfs failed")]
    Rootfs(#[source] cvm_image::rootfs::RootfsError),
    #[error("cvmctl disk failed")]
    Disk(#[source] cvm_image::disk::DiskError),
    #[error("{0} failed")]
    Tool(String),
    #[error("cannot read {0}")]
    Missing(PathBuf, #[source] std::io::Error),
    #[error("cannot run {0}")]
    Spawn(PathBuf, #[source] std::io::Error),
    #[error("LUKS2")]
    Luks(#[source] cvm_disk::luks2::Luks2Error),
    #[error("cvmctl image build failed")]
    Image(#[source] cvm_image::oci_build::BuildError),
    #[error("our unpack failed")]
    Unpack(#[source] cvm_oci::unpack::UnpackError),
    #[error("boot of {initrd} failed with exit status {status}")]
    Boot { initrd: PathBuf, status: i32 },
}

fn boot_once(args: &BootBench, initrd: &Path, root: Option<&str>) -> Result<f64, BenchError> {
    let started = Instant::now();
    let mut cmd = Command::new(&args.boot_script);
    cmd.arg("--kernel")
        .arg(&args.kernel)
        .arg("--initrd")
        .arg(initrd)
        .args(["--quiet", "--timeout", "120"]);
    if let Some(hash) = root {
        cmd.arg("--disk")
            .arg(format!("{}:ro", args.rootfs.display()))
            .arg("--append")
            .arg(format!("roothash={hash}"));
    }
    let status = cmd
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| BenchError::Spawn(args.boot_script.clone(), e))?;
    if !status.success() {
        return Err(BenchError::Boot {
            initrd: initrd.to_path_buf(),
            status: status.code().unwrap_or(-1),
        });
    }
    Ok(started.elapsed().as_secs_f64())
}

pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

fn size(path: &Path) -> Result<u64, BenchError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| BenchError::Missing(path.to_path_buf(), e))
}

pub fn boot(args: &BootBench) -> Result<(), BenchError> {
    let agent_size = size(&args.agent)?;
    let initrd_size = size(&args.initrd)?;
    size(&args.trivial_initrd)?;
    let mut hash_file = args.rootfs.clone().into_os_string();
    hash_file.push(".roothash");
    let hash = std::fs::read_to_string(&hash_file)
        .map_err(|e| BenchError::Missing(PathBuf::from(&hash_file), e))?;
    let hash = hash.trim();
    let mut trivial = Vec::new();
    let mut agent = Vec::new();
    for run in 0..args.runs.max(1) {
        let t = boot_once(args, &args.trivial_initrd, None)?;
        let a = boot_once(args, &args.initrd, Some(hash))?;
        eprintln!("run {}: trivial {t:.2}s agent {a:.2}s", run + 1);
        trivial.push(t);
        agent.push(a);
    }
    let (mt, ma) = (median(&mut trivial), median(&mut agent));
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "boot to power-off (QEMU TCG, swtpm; agent: verity root, TPM, measurements; median of {}):",
        agent.len()
    );
    println!("  trivial static init   {mt:6.2} s");
    println!("  cvm-agent             {ma:6.2} s");
    println!(
        "  ratio                 {:6.2}x   (target <= 1.30x)",
        ma / mt
    );
    println!(
        "  agent binary          {:6.2} MiB stripped (target <= 6 MiB)",
        mib(agent_size)
    );
    println!(
        "  initrd                {:6.2} MiB (target <= 8 MiB)",
        mib(initrd_size)
    );
    Ok(())
}

/// A tree of `size_mib` MiB: files of 4 KiB to 1 MiB with incompressible-ish contents, so
/// neither side gets to skip work.
fn make_tree(dir: &Path, size_mib: u64) -> std::io::Result<()> {
    let mut left = size_mib << 20;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut i = 0u64;
    while left > 0 {
        let sub = dir.join(format!("d{:02}", i % 16));
        std::fs::create_dir_all(&sub)?;
        let len = (4096u64 << (i % 9)).min(left);
        let mut data = vec![0u8; len as usize];
        for chunk in data.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bytes = state.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        std::fs::write(sub.join(format!("f{i:05}")), data)?;
        left -= len;
        i += 1;
    }
    Ok(())
}

fn run_tool(cmd: &mut Command) -> Result<(), BenchError> {
    let status = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| BenchError::Spawn(PathBuf::from(cmd.get_program()), e))?;
    if status.success() {
        Ok(())
    } else {
        Err(BenchError::Tool(
            cmd.get_program().to_string_lossy().into_owned(),
        ))
    }
}

pub fn rootfs(args: &RootfsBench) -> Result<(), BenchError> {
    let tmp = std::env::temp_dir().join(format!("cvm-bench-rootfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let tree = tmp.join("tree");
    make_tree(&tree, args.size_mib).map_err(BenchError::Prepare)?;
    let mut ours = Vec::new();
    let mut tools = Vec::new();
    for run in 0..args.runs.max(1) {
        let out = tmp.join("disk.img");
        let started = Instant::now();
        cvm_image::rootfs::build(
            &cvm_image::rootfs::RootfsArgs {
                dir: tree.clone(),
                output: out.clone(),
                fs: cvm_image::rootfs::FsType::Erofs,
                salt: None,
            },
            0,
        )
        .map_err(BenchError::Rootfs)?;
        let a = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let (fs, hash) = (tmp.join("plain.erofs"), tmp.join("plain.hash"));
        run_tool(Command::new("mkfs.erofs").arg("-T0").arg(&fs).arg(&tree))?;
        run_tool(
            Command::new("veritysetup")
                .arg("format")
                .arg(&fs)
                .arg(&hash),
        )?;
        let b = started.elapsed().as_secs_f64();
        eprintln!(
            "run {}: cvmctl rootfs {a:.2}s, mkfs.erofs + veritysetup format {b:.2}s",
            run + 1
        );
        ours.push(a);
        tools.push(b);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let (mo, mt) = (median(&mut ours), median(&mut tools));
    println!(
        "verity root build of a {} MiB tree (median of {}):",
        args.size_mib,
        ours.len()
    );
    println!("  cvmctl rootfs (erofs + verity + GPT)   {mo:6.2} s");
    println!("  mkfs.erofs + veritysetup format        {mt:6.2} s");
    println!("  ratio                                  {:6.2}x", mo / mt);
    Ok(())
}

pub fn state(args: &StateBench) -> Result<(), BenchError> {
    let tmp = std::env::temp_dir().join(format!("cvm-bench-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(BenchError::Prepare)?;
    let size = args.size_mib << 20;
    let key = [0x5au8; 32];
    let keyfile = tmp.join("key");
    std::fs::write(&keyfile, key).map_err(BenchError::Prepare)?;
    let blank = |name: &str| -> Result<PathBuf, BenchError> {
        let p = tmp.join(name);
        let _ = std::fs::remove_file(&p);
        let f = std::fs::File::create(&p).map_err(BenchError::Prepare)?;
        f.set_len(size).map_err(BenchError::Prepare)?;
        Ok(p)
    };
    let rw = |p: &PathBuf| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .map_err(BenchError::Prepare)
    };
    let (mut of, mut oo, mut cf, mut co) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..args.runs.max(1) {
        // Interleaved, so a noisy neighbour hurts both sides alike.
        let ours = blank("ours.img")?;
        let t = Instant::now();
        let mut f = rw(&ours)?;
        cvm_disk::luks2::format(
            &mut f,
            size,
            &key,
            &cvm_disk::luks2::FormatOptions::default(),
        )
        .map_err(BenchError::Luks)?;
        f.sync_all().map_err(BenchError::Prepare)?;
        of.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut f = rw(&ours)?;
        cvm_disk::luks2::open(&mut f, &key).map_err(BenchError::Luks)?;
        oo.push(t.elapsed().as_secs_f64());

        let theirs = blank("theirs.img")?;
        let t = Instant::now();
        run_tool(
            Command::new("cryptsetup")
                .args([
                    "luksFormat",
                    "--type",
                    "luks2",
                    "--batch-mode",
                    "--pbkdf",
                    "pbkdf2",
                ])
                .args(["--pbkdf-force-iterations", "1000", "--sector-size", "4096"])
                .args([
                    "--cipher",
                    "aes-xts-plain64",
                    "--key-size",
                    "512",
                    "--key-file",
                ])
                .arg(&keyfile)
                .arg(&theirs),
        )?;
        cf.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        run_tool(
            Command::new("cryptsetup")
                .args(["open", "--test-passphrase", "--key-file"])
                .arg(&keyfile)
                .arg(&theirs),
        )?;
        co.push(t.elapsed().as_secs_f64());
        eprintln!(
            "run {}: format ours {:.3}s cryptsetup {:.3}s; open ours {:.3}s cryptsetup {:.3}s",
            run + 1,
            of[run],
            cf[run],
            oo[run],
            co[run]
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let (of, oo, cf, co) = (
        median(&mut of),
        median(&mut oo),
        median(&mut cf),
        median(&mut co),
    );
    println!(
        "LUKS2 on a {} MiB disk, PBKDF2-SHA256 1000 iterations, 4 KiB sectors (median of {}):",
        args.size_mib,
        args.runs.max(1)
    );
    println!("                 ours      cryptsetup   ratio");
    println!("  format      {of:7.3} s   {cf:7.3} s   {:5.2}x", of / cf);
    println!("  open (key)  {oo:7.3} s   {co:7.3} s   {:5.2}x", oo / co);
    Ok(())
}

/// A tree like a distribution image's: a few large files of incompressible-ish data (about
/// 60 % of the bytes), many small files of 256 B to 16 KiB (half of them text-like), a symlink
/// for every eighth small file, 8 levels × 8 directories. Returns the regular-file bytes.
fn make_image_tree(dir: &Path, size_mib: u64) -> std::io::Result<u64> {
    let total = size_mib << 20;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut written = 0u64;
    let large = dir.join("opt/large");
    std::fs::create_dir_all(&large)?;
    let large_total = total * 6 / 10;
    let mut n = 0;
    while written < large_total {
        let len = (large_total - written).min(16 << 20);
        let mut data = vec![0u8; len as usize];
        for chunk in data.chunks_mut(8) {
            let bytes = next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        std::fs::write(large.join(format!("blob{n}.bin")), data)?;
        written += len;
        n += 1;
    }
    let mut i = 0u64;
    while written < total {
        let sub = dir.join(format!("usr/d{}/e{}", i % 8, (i / 8) % 8));
        std::fs::create_dir_all(&sub)?;
        let len = (256 + next() % (16 << 10)).min(total - written);
        let data: Vec<u8> = if i.is_multiple_of(2) {
            (0..len)
                .map(|_| b"abcdefghij klmnop\n"[(next() % 18) as usize])
                .collect()
        } else {
            (0..len).map(|_| next() as u8).collect()
        };
        let name = format!("f{i:06}");
        std::fs::write(sub.join(&name), data)?;
        if i.is_multiple_of(8) {
            std::os::unix::fs::symlink(&name, sub.join(format!("l{i:06}")))?;
        }
        written += len;
        i += 1;
    }
    Ok(written)
}

pub fn unpack(args: &UnpackBench) -> Result<(), BenchError> {
    use cvm_image::oci_build as build;
    use cvm_oci::unpack::{Compression, Limits, Usage, apply_layer};
    let tmp = std::env::temp_dir().join(format!("cvm-bench-unpack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let tree = tmp.join("tree");
    let bytes = make_image_tree(&tree, args.size_mib).map_err(BenchError::Prepare)?;
    let layout = tmp.join("layout");
    let started = Instant::now();
    let report = build::build_image(
        &layout,
        &build::ImageSpec {
            tree: tree.clone(),
            tag: "bench".into(),
            config: build::ExecConfig::default(),
            owner: (0, 0),
            compression: build::LayerCompression::Gzip,
            extra_layers: Vec::new(),
            epoch: 0,
        },
    )
    .map_err(BenchError::Image)?;
    let build_secs = started.elapsed().as_secs_f64();
    let blob_size: u64 = report.layers.iter().map(|l| l.size).sum();
    let layers = build::read_image(&layout, "bench").map_err(BenchError::Image)?;
    let rootless = !nix::unistd::geteuid().is_root();
    let (mut ours, mut umoci) = (Vec::new(), Vec::new());
    for run in 0..args.runs.max(1) {
        // Interleaved, so a noisy neighbour hurts both sides alike.
        let root = tmp.join("ours");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir(&root).map_err(BenchError::Prepare)?;
        let t = Instant::now();
        let mut usage = Usage::default();
        for layer in &layers {
            let blob = std::fs::File::open(&layer.path)
                .map_err(|e| BenchError::Missing(layer.path.clone(), e))?;
            let compression =
                Compression::from_media_type(&layer.media_type).map_err(BenchError::Unpack)?;
            apply_layer(
                &root,
                std::io::BufReader::with_capacity(1 << 20, blob),
                compression,
                &layer.digest,
                &layer.diff_id,
                &Limits::default(),
                &mut usage,
            )
            .map_err(BenchError::Unpack)?;
        }
        let a = t.elapsed().as_secs_f64();

        let theirs = tmp.join("umoci");
        let _ = std::fs::remove_dir_all(&theirs);
        let t = Instant::now();
        let mut cmd = Command::new("umoci");
        cmd.args(["raw", "unpack"]);
        if rootless {
            cmd.arg("--rootless");
        }
        run_tool(
            cmd.arg("--image")
                .arg(format!("{}:bench", layout.display()))
                .arg(&theirs),
        )?;
        let b = t.elapsed().as_secs_f64();
        eprintln!("run {}: ours {a:.2}s, umoci raw unpack {b:.2}s", run + 1);
        ours.push(a);
        umoci.push(b);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let (mo, mu) = (median(&mut ours), median(&mut umoci));
    let mib = bytes as f64 / f64::from(1 << 20);
    println!(
        "unpack of a {mib:.0} MiB image (1 gzip layer, {:.1} MiB blob, built by cvmctl in {build_secs:.2} s; median of {}):",
        blob_size as f64 / f64::from(1 << 20),
        ours.len()
    );
    println!(
        "  ours (apply_layer, digests checked)  {mo:6.2} s  {:6.1} MiB/s",
        mib / mo
    );
    println!(
        "  umoci raw unpack                     {mu:6.2} s  {:6.1} MiB/s",
        mib / mu
    );
    println!("  ratio                                {:6.2}x", mo / mu);
    Ok(())
}

pub fn disk(args: &DiskBench) -> Result<(), BenchError> {
    use cvm_image::disk::{DiskFormat, DiskSpec};
    let tmp = std::env::temp_dir().join(format!("cvm-bench-disk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(BenchError::Prepare)?;
    let formats = [DiskFormat::Raw, DiskFormat::Vhd, DiskFormat::Gce];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); formats.len()];
    let mut sizes = vec![(0u64, 0u64); formats.len()];
    let (mut qemu_img, mut gnu_tar) = (Vec::new(), Vec::new());
    let (mut qemu_img_size, mut gnu_tar_size) = (0, 0);
    let result = (|| {
        for run in 0..args.runs.max(1) {
            for (i, format) in formats.iter().enumerate() {
                let out = tmp.join(format!("disk.{format}"));
                let started = Instant::now();
                let report = cvm_image::disk::build(&DiskSpec {
                    uki: args.uki.clone(),
                    rootfs: args.rootfs.clone(),
                    esp_size: None,
                    format: *format,
                    output: out,
                })
                .map_err(BenchError::Disk)?;
                times[i].push(started.elapsed().as_secs_f64());
                sizes[i] = (report.disk_size, report.image_size);
            }
            // The tools, from the raw disk just built.
            let raw = tmp.join("disk.raw");
            let vhd = tmp.join("tool.vhd");
            let started = Instant::now();
            run_tool(
                Command::new("qemu-img")
                    .args(["convert", "-f", "raw", "-O", "vpc"])
                    .args(["-o", "subformat=fixed,force_size"])
                    .arg(&raw)
                    .arg(&vhd),
            )?;
            qemu_img.push(started.elapsed().as_secs_f64());
            qemu_img_size = size(&vhd)?;
            let gib = tmp.join("gib");
            std::fs::create_dir_all(&gib).map_err(BenchError::Prepare)?;
            let grown = gib.join("disk.raw");
            std::fs::copy(&raw, &grown).map_err(BenchError::Prepare)?;
            let f = std::fs::File::options()
                .write(true)
                .open(&grown)
                .map_err(BenchError::Prepare)?;
            f.set_len(sizes[2].0).map_err(BenchError::Prepare)?;
            drop(f);
            let tgz = tmp.join("tool.tar.gz");
            let started = Instant::now();
            run_tool(
                Command::new("tar")
                    .args(["--format=oldgnu", "-Sczf"])
                    .arg(&tgz)
                    .arg("-C")
                    .arg(&gib)
                    .arg("disk.raw"),
            )?;
            gnu_tar.push(started.elapsed().as_secs_f64());
            gnu_tar_size = size(&tgz)?;
            eprintln!(
                "run {}: raw {:.2}s, vhd {:.2}s, gce {:.2}s; qemu-img {:.2}s, tar -Sczf {:.2}s",
                run + 1,
                times[0][run],
                times[1][run],
                times[2][run],
                qemu_img[run],
                gnu_tar[run]
            );
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result?;
    println!(
        "cvmctl disk per format, {} + {} (median of {}):",
        args.uki.display(),
        args.rootfs.display(),
        times[0].len()
    );
    let raw_time = median(&mut times[0].clone());
    for (i, format) in formats.iter().enumerate() {
        let t = median(&mut times[i]);
        let (disk, image) = sizes[i];
        println!(
            "  {format:<4} {t:6.2} s (+{:5.2} s over raw)  disk {:>6} MiB  file {:>12} bytes",
            t - raw_time,
            disk >> 20,
            image
        );
    }
    println!(
        "  qemu-img convert -O vpc (fixed, force_size) of the raw disk  {:6.2} s  {:>12} bytes",
        median(&mut qemu_img),
        qemu_img_size
    );
    println!(
        "  tar --format=oldgnu -Sczf of a {} MiB disk.raw            {:6.2} s  {:>12} bytes",
        sizes[2].0 >> 20,
        median(&mut gnu_tar),
        gnu_tar_size
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }
}
