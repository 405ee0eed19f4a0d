//! `cvmctl rootfs`: a directory tree → a verity-protected GPT disk image the agent boots from.
//!
//! ```text
//! LBA 0..33      protective MBR, primary GPT
//! 1 MiB          root-x86-64         DPS root (x86-64), the filesystem image, PARTUUID = root hash[0..16]
//! next 1 MiB     root-x86-64-verity  DPS root-verity, superblock + hash tree, PARTUUID = root hash[16..32]
//! end            backup GPT
//! ```
//!
//! Partitions start on 1 MiB boundaries and are exactly as big as their contents (so `sgdisk -v`
//! notes that they do not end on one; harmless). The agent can therefore demand that the data
//! partition is exactly the superblock's `data_blocks × 4096` and the hash partition exactly its
//! hash area, leaving the host no slack to play with.
//!
//! The root hash goes on the (measured) kernel command line as `roothash=`; the agent finds the
//! two partitions by type and by these PARTUUIDs, as systemd does (systemd-repart copies the
//! hash bytes into the UUIDs verbatim, without forcing version bits, and
//! systemd-dissect matches them the same way), and the kernel checks every block read against
//! the tree.
//!
//! Reproducible: the same tree (contents, names, modes, symlinks) and SOURCE_DATE_EPOCH give the
//! same bytes, so the root hash can be predicted and published. The filesystem tool gets one
//! timestamp for every inode and for the superblock, root ownership for every file and a fixed
//! filesystem UUID; the verity salt (unless `--salt` is given), the verity UUID, the disk GUID
//! and the PARTUUIDs are all derived from the content. Both mkfs tools sort directory entries,
//! so the host's readdir order does not leak in. Extended attributes of the tree are kept
//! (file capabilities must survive); a build host that labels files (SELinux) would add its
//! labels. The mode of the directory itself becomes the mode of `/`.

use cvm_disk::gpt::{self, Guid, NewPartition};
use cvm_disk::verity::{self, HashTree};
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Partition names, as systemd-repart's defaults for these types.
pub const DATA_PARTITION_NAME: &str = "root-x86-64";
pub const HASH_PARTITION_NAME: &str = "root-x86-64-verity";

/// The filesystem UUID of every image. Nothing mounts by it (the agent mounts the verity
/// device), so one fixed value costs nothing and keeps images reproducible.
pub const FS_UUID: Guid = Guid::from_u128(0x6376_6d2d_726f_4f74_a066_735f_7575_6964);

const IO_CHUNK: usize = 1 << 20;

/// Filesystem of the root partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsType {
    /// EROFS (uncompressed), built with mkfs.erofs (erofs-utils).
    Erofs,
    /// SquashFS (gzip), built with mksquashfs (squashfs-tools).
    Squashfs,
}

impl FsType {
    fn tool(self) -> (&'static str, &'static str) {
        match self {
            FsType::Erofs => ("mkfs.erofs", "erofs-utils"),
            FsType::Squashfs => ("mksquashfs", "squashfs-tools"),
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsType::Erofs => "erofs",
            FsType::Squashfs => "squashfs",
        })
    }
}

/// Build a verity-protected root disk image from a directory tree.
#[derive(Debug, Clone, clap::Args)]
pub struct RootfsArgs {
    /// Directory tree that becomes `/`.
    pub dir: PathBuf,
    /// Output disk image; the root hash is also written to `<output>.roothash`.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Filesystem of the root partition.
    #[arg(long, value_enum, default_value_t = FsType::Erofs)]
    pub fs: FsType,
    /// dm-verity salt in hex (at most 256 bytes); default: derived from the filesystem image.
    #[arg(long)]
    pub salt: Option<String>,
}

/// What was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsReport {
    pub output: PathBuf,
    pub roothash_file: PathBuf,
    pub fs: FsType,
    /// The `roothash=` value: lowercase hex SHA-256.
    pub root_hash: String,
    pub salt: String,
    pub disk_size: u64,
    pub disk_guid: Guid,
    pub data_offset: u64,
    pub data_size: u64,
    pub data_partuuid: Guid,
    pub hash_offset: u64,
    pub hash_size: u64,
    pub hash_partuuid: Guid,
    /// UUID in the verity superblock.
    pub verity_uuid: Guid,
}

/// Summary for the console; the last line is the root hash alone, for scripts (`tail -n1`).
impl fmt::Display for RootfsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} bytes, disk GUID {}",
            self.output.display(),
            self.disk_size,
            self.disk_guid
        )?;
        writeln!(
            f,
            "  1 {DATA_PARTITION_NAME:<19} {}  offset {:>12}  size {:>12}  PARTUUID {}",
            self.fs, self.data_offset, self.data_size, self.data_partuuid
        )?;
        writeln!(
            f,
            "  2 {HASH_PARTITION_NAME:<19} verity  offset {:>12}  size {:>12}  PARTUUID {}",
            self.hash_offset, self.hash_size, self.hash_partuuid
        )?;
        writeln!(f, "verity salt {}", self.salt)?;
        writeln!(f, "root hash written to {}", self.roothash_file.display())?;
        f.write_str(&self.root_hash)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("cannot read {}", path.display())]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid SOURCE_DATE_EPOCH")]
    SourceDateEpoch(#[source] crate::initrd::InitrdError),
    #[error(
        "--salt {text:?} is not hex of at most {} bytes",
        verity::MAX_SALT_SIZE
    )]
    BadSalt { text: String },
    #[error("{tool} not found (install {package})")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },
    #[error("cannot run {tool}")]
    ToolSpawn {
        tool: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{tool} failed ({status}): {stderr}")]
    ToolFailed {
        tool: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{tool} produced an empty image {}", path.display())]
    EmptyImage { tool: &'static str, path: PathBuf },
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot hash {}", path.display())]
    Verity {
        path: PathBuf,
        #[source]
        source: verity::VerityError,
    },
    #[error("cannot lay out the partition table of {}", path.display())]
    Gpt {
        path: PathBuf,
        #[source]
        source: gpt::GptError,
    },
    #[error("{}: the written image does not read back as built", path.display())]
    ReadBack { path: PathBuf },
    #[error("output {} is inside the tree {}", output.display(), dir.display())]
    OutputInsideTree { output: PathBuf, dir: PathBuf },
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Builds the image with SOURCE_DATE_EPOCH (or 0) as every timestamp.
pub fn run(args: &RootfsArgs) -> Result<RootfsReport, RootfsError> {
    let epoch = crate::initrd::source_date_epoch().map_err(RootfsError::SourceDateEpoch)?;
    build(args, epoch)
}

/// Removes the scratch directory however `build` ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds the image with `epoch` as every timestamp inside the filesystem.
pub fn build(args: &RootfsArgs, epoch: u32) -> Result<RootfsReport, RootfsError> {
    let meta = std::fs::metadata(&args.dir).map_err(|source| RootfsError::Stat {
        path: args.dir.clone(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(RootfsError::NotADirectory {
            path: args.dir.clone(),
        });
    }
    let salt = match &args.salt {
        Some(text) => Some(
            verity::from_hex(text)
                .filter(|s| s.len() <= verity::MAX_SALT_SIZE)
                .ok_or_else(|| RootfsError::BadSalt { text: text.clone() })?,
        ),
        None => None,
    };

    // Scratch space next to the output: same filesystem (cheap rename, copy_file_range), and
    // not /tmp, which may be a small tmpfs.
    let file_name = args
        .output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "rootfs".into());
    let parent = match args.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // The scratch directory (and the image) would otherwise end up in the filesystem built
    // from the tree.
    let canon = |p: &Path| {
        std::fs::canonicalize(p).map_err(|source| RootfsError::Stat {
            path: p.to_path_buf(),
            source,
        })
    };
    if canon(&parent)?.starts_with(canon(&args.dir)?) {
        return Err(RootfsError::OutputInsideTree {
            output: args.output.clone(),
            dir: args.dir.clone(),
        });
    }
    let scratch = make_scratch(&parent, &file_name)?;

    let fs_path = scratch.0.join("rootfs.img");
    make_filesystem(args.fs, &args.dir, &fs_path, epoch)?;
    let io_err = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| RootfsError::Io { what, path, source }
    };

    // Whole 4096-byte blocks: dm-verity covers nothing smaller. Both tools already pad to 4 KiB;
    // padding here only guards against a tool that someday does not.
    let mut fs_file = File::options()
        .read(true)
        .write(true)
        .open(&fs_path)
        .map_err(io_err("cannot open", &fs_path))?;
    let fs_len = fs_file
        .metadata()
        .map_err(io_err("cannot stat", &fs_path))?
        .len();
    if fs_len == 0 {
        return Err(RootfsError::EmptyImage {
            tool: args.fs.tool().0,
            path: fs_path,
        });
    }
    let data_size = fs_len.next_multiple_of(verity::BLOCK_SIZE as u64);
    if data_size != fs_len {
        fs_file
            .set_len(data_size)
            .map_err(io_err("cannot pad", &fs_path))?;
    }
    let data_blocks = data_size / verity::BLOCK_SIZE as u64;

    let salt = match salt {
        Some(s) => s,
        None => {
            let digest = sha256_file(&mut fs_file, &fs_path)?;
            verity::derive_salt(&digest).to_vec()
        }
    };
    fs_file
        .seek(SeekFrom::Start(0))
        .map_err(io_err("cannot seek", &fs_path))?;
    let tree = verity::build_hash_tree(&mut fs_file, data_blocks, &salt).map_err(|source| {
        RootfsError::Verity {
            path: fs_path.clone(),
            source,
        }
    })?;

    let report = write_disk(args, &tree, &mut fs_file, &fs_path, &scratch.0)?;
    std::fs::write(&report.roothash_file, format!("{}\n", report.root_hash))
        .map_err(io_err("cannot write", &report.roothash_file))?;
    Ok(report)
}

/// A fresh directory `.<name>.cvmctl-<pid>-<n>` in `parent`. The counter keeps concurrent
/// builds in one process apart; skipping existing names steps over leftovers of a killed run.
fn make_scratch(parent: &Path, file_name: &str) -> Result<Scratch, RootfsError> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!(".{file_name}.cvmctl-{}-{n}", std::process::id()));
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok(Scratch(path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => continue,
            Err(source) => {
                return Err(RootfsError::Io {
                    what: "cannot create scratch directory",
                    path,
                    source,
                });
            }
        }
    }
}

fn make_filesystem(fs: FsType, dir: &Path, out: &Path, epoch: u32) -> Result<(), RootfsError> {
    let (tool, package) = fs.tool();
    let mut cmd = Command::new(tool);
    match fs {
        FsType::Erofs => {
            cmd.arg(format!("-T{epoch}"))
                .arg(format!("-U{FS_UUID}"))
                .arg("--all-root")
                .arg("--quiet")
                .arg(out)
                .arg(dir);
        }
        FsType::Squashfs => {
            let epoch = epoch.to_string();
            cmd.arg(dir)
                .arg(out)
                .args(["-noappend", "-reproducible", "-all-root", "-quiet"])
                .args(["-no-progress", "-mkfs-time", &epoch, "-all-time", &epoch]);
        }
    }
    // Our timestamps are on the command line; mksquashfs refuses to run when SOURCE_DATE_EPOCH
    // is set as well, and newer mkfs.erofs would read it too.
    cmd.env_remove("SOURCE_DATE_EPOCH");
    let out = cmd.output().map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            RootfsError::ToolMissing { tool, package }
        } else {
            RootfsError::ToolSpawn { tool, source }
        }
    })?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.len() > 2000 {
            let cut = stderr.floor_char_boundary(2000);
            stderr.truncate(cut);
            stderr.push('…');
        }
        return Err(RootfsError::ToolFailed {
            tool,
            status: out.status,
            stderr,
        });
    }
    Ok(())
}

fn sha256_file(file: &mut File, path: &Path) -> Result<[u8; 32], RootfsError> {
    let err = |source| RootfsError::Io {
        what: "cannot read",
        path: path.to_path_buf(),
        source,
    };
    file.seek(SeekFrom::Start(0)).map_err(err)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; IO_CHUNK];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(h.finalize().into())
}

/// Lays out and writes the disk under a temporary name, reads its table back with the strict
/// reader the agent uses, then renames it into place.
fn write_disk(
    args: &RootfsArgs,
    tree: &HashTree,
    fs_file: &mut File,
    fs_path: &Path,
    scratch: &Path,
) -> Result<RootfsReport, RootfsError> {
    let out = &args.output;
    let root = tree.root_hash();
    let (first, last) = root.split_at(16);
    let (Some(data_partuuid), Some(hash_partuuid)) =
        (Guid::from_prefix(first), Guid::from_prefix(last))
    else {
        return Err(RootfsError::Internal("root hash shorter than 32 bytes"));
    };
    let mut seed = b"cvm-agent rootfs disk guid v1\0".to_vec();
    seed.extend_from_slice(root);
    let disk_guid = Guid::derive(&seed);
    let verity_uuid = tree.default_uuid();
    let data_size = tree.data_blocks() * verity::BLOCK_SIZE as u64;
    let hash_size = tree.hash_area_len();

    let layout = gpt::Gpt::new(
        disk_guid,
        &[
            NewPartition {
                type_guid: gpt::types::ROOT_X86_64,
                unique_guid: data_partuuid,
                name: DATA_PARTITION_NAME.into(),
                size: data_size,
            },
            NewPartition {
                type_guid: gpt::types::ROOT_X86_64_VERITY,
                unique_guid: hash_partuuid,
                name: HASH_PARTITION_NAME.into(),
                size: hash_size,
            },
        ],
    )
    .map_err(|source| RootfsError::Gpt {
        path: out.clone(),
        source,
    })?;
    let [data_part, hash_part] = &layout.partitions[..] else {
        return Err(RootfsError::Internal("layout lost a partition"));
    };

    let tmp = scratch.join("disk.img");
    let io_err = |what: &'static str| {
        let path = tmp.clone();
        move |source| RootfsError::Io { what, path, source }
    };
    let mut disk = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io_err("cannot create"))?;
    // Sparse: the gaps between partitions cost nothing.
    disk.set_len(layout.disk_size)
        .map_err(io_err("cannot size"))?;
    layout
        .write(|offset, bytes| disk.write_all_at(bytes, offset))
        .map_err(|source| RootfsError::Gpt {
            path: tmp.clone(),
            source,
        })?;

    fs_file
        .seek(SeekFrom::Start(0))
        .map_err(|source| RootfsError::Io {
            what: "cannot seek",
            path: fs_path.to_path_buf(),
            source,
        })?;
    disk.seek(SeekFrom::Start(data_part.offset()))
        .map_err(io_err("cannot seek"))?;
    // File to file: std uses copy_file_range, so the kernel copies (or reflinks).
    let copied =
        io::copy(&mut *fs_file, &mut disk).map_err(io_err("cannot write data partition"))?;
    if copied != data_size {
        return Err(RootfsError::ReadBack { path: out.clone() });
    }
    disk.seek(SeekFrom::Start(hash_part.offset()))
        .map_err(io_err("cannot seek"))?;
    let mut w = io::BufWriter::with_capacity(IO_CHUNK, &mut disk);
    tree.write_hash_area(verity_uuid, &mut w)
        .map_err(|source| RootfsError::Verity {
            path: tmp.clone(),
            source,
        })?;
    io::Write::flush(&mut w).map_err(io_err("cannot write hash partition"))?;
    drop(w);

    let read_back = gpt::read_gpt(|off, buf| disk.read_exact_at(buf, off), layout.disk_size)
        .map_err(|source| RootfsError::Gpt {
            path: tmp.clone(),
            source,
        })?;
    if read_back != layout {
        return Err(RootfsError::ReadBack { path: out.clone() });
    }
    drop(disk);
    std::fs::rename(&tmp, out).map_err(|source| RootfsError::Io {
        what: "cannot move the image into place at",
        path: out.clone(),
        source,
    })?;

    let mut roothash_file = out.clone().into_os_string();
    roothash_file.push(".roothash");
    Ok(RootfsReport {
        output: out.clone(),
        roothash_file: roothash_file.into(),
        fs: args.fs,
        root_hash: tree.root_hash_hex(),
        salt: verity::to_hex(tree.salt()),
        disk_size: layout.disk_size,
        disk_guid,
        data_offset: data_part.offset(),
        data_size,
        data_partuuid,
        hash_offset: hash_part.offset(),
        hash_size,
        hash_partuuid,
        verity_uuid,
    })
}
