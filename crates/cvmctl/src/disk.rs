//! `cvmctl disk`: the bootable GPT disk (ESP with the UKI, then the verity root) from a UKI and
//! a `cvmctl rootfs` image. Thin over [`cvm_image::disk`], which documents the layout, the
//! checks and how every byte is fixed (the firmware measures the GPT into PCR 5).

use std::path::PathBuf;

use cvm_image::disk::{self, DiskError, DiskFormat, DiskReport, DiskSpec};

/// `cvmctl disk`.
#[derive(clap::Args, Debug, Clone)]
pub struct DiskArgs {
    /// The UKI (`cvmctl uki`), written to the ESP as /EFI/BOOT/BOOTX64.EFI.
    #[arg(long)]
    pub uki: PathBuf,
    /// The verity root image (`cvmctl rootfs`); its two partitions are copied byte for byte.
    #[arg(long)]
    pub rootfs: PathBuf,
    /// ESP size in MiB. Default: the smallest whole MiB of at least 64 MiB and at least the
    /// UKI + 25% + 1 MiB.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub esp_size_mib: Option<u64>,
    /// The container: `raw` (QEMU; AWS import-snapshot), `gce` (disk.raw in a GNU tar.gz, grown
    /// to a whole GiB; GCP) or `vhd` (fixed VHD, grown to a whole MiB its CHS geometry covers
    /// exactly; Azure). Each grown disk gets its own GPT for its size. See docs/clouds.md.
    #[arg(long, value_enum, default_value_t = DiskFormat::Raw)]
    pub format: DiskFormat,
    /// Output disk image.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Runs `cvmctl disk`.
pub fn run(args: &DiskArgs) -> Result<DiskReport, DiskError> {
    disk::build(&DiskSpec {
        uki: args.uki.clone(),
        rootfs: args.rootfs.clone(),
        // At most 2^20 MiB (clap's range): no overflow.
        esp_size: args.esp_size_mib.map(|m| m << 20),
        format: args.format,
        output: args.output.clone(),
    })
}
